//! The two convolutions of the reference interpreter, written as direct translations of their
//! defining sums, plus the small helpers that keep those loops fast enough to run a whole E2ENet.
//!
//! Both kernels work one output plane `(n, o)` at a time with f64 accumulators and write each f32
//! result once, so the result does not depend on how planes are spread over threads. The only
//! "optimisation" is hoisting the bounds logic: for each kernel column the range of positions whose
//! tap is in range is computed once ([`Span`]), so the innermost loops are plain zips over rows.
//! Zero weights are *not* skipped: `0 * NaN` must stay NaN in the oracle.

use crate::error::IrError;
use crate::op::{ConvAttrs, Op};
use crate::tensor::Tensor;

use super::ops::{checked, dims5, f32s};

/// Below this many multiply-adds a convolution runs on the calling thread only.
const PARALLEL_WORK: usize = 1 << 18;

/// `o * s + k - p` when it lies in `0..n`: the tap of kernel offset `k` at position `o` for
/// stride `s` and padding `p`, shared by the convolution (output → input) and the transposed
/// convolution (input → output).
fn tap(o: usize, s: usize, k: usize, p: usize, n: usize) -> Option<usize> {
    (o * s + k).checked_sub(p).filter(|&i| i < n)
}

/// The positions `q` in `lo..hi` for which `tap(q, s, k, p, n)` is in range (they are consecutive
/// because the tap is increasing in `q`), and `first = tap(lo)`; position `lo + j` maps to
/// `first + j * s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    lo: usize,
    hi: usize,
    first: usize,
}

/// Scans `0..count` once and returns the [`Span`] of in-range taps (empty: `lo == hi == 0`).
fn span(count: usize, s: usize, k: usize, p: usize, n: usize) -> Span {
    let valid: Vec<usize> = (0..count)
        .filter(|&q| tap(q, s, k, p, n).is_some())
        .collect();
    match (valid.first(), valid.last()) {
        (Some(&lo), Some(&last)) => Span {
            lo,
            hi: last + 1,
            first: tap(lo, s, k, p, n).unwrap_or(0),
        },
        _ => Span {
            lo: 0,
            hi: 0,
            first: 0,
        },
    }
}

/// Runs `f(plane_index, plane)` on every `plane`-sized chunk of `out`, spreading the planes
/// round-robin over the available cores when `work` (multiply-adds) is large enough.
fn for_each_plane(
    out: &mut [f32],
    plane: usize,
    work: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if plane == 0 {
        return;
    }
    let planes = out.len() / plane;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(planes);
    if threads <= 1 || work < PARALLEL_WORK {
        for (i, p) in out.chunks_mut(plane).enumerate() {
            f(i, p);
        }
        return;
    }
    let mut buckets: Vec<Vec<(usize, &mut [f32])>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, p) in out.chunks_mut(plane).enumerate() {
        buckets[i % threads].push((i, p));
    }
    let f = &f;
    std::thread::scope(|scope| {
        for bucket in buckets {
            scope.spawn(move || {
                for (i, p) in bucket {
                    f(i, p);
                }
            });
        }
    });
}

/// `acc[j] += wv * src[j * step]` over `acc`, the body shared by both convolutions' inner loops.
#[inline]
fn axpy_gather(acc: &mut [f64], wv: f64, src: &[f32], step: usize) {
    if step == 1 {
        for (a, &v) in acc.iter_mut().zip(src) {
            *a += wv * v as f64;
        }
    } else {
        for (a, &v) in acc.iter_mut().zip(src.iter().step_by(step)) {
            *a += wv * v as f64;
        }
    }
}

/// `(x, w, b?)`: cross-correlation with zero padding,
/// `out[n,o,z,y,x] = b[o] + Σ_{i,a,b,c} w[o,i,a,b,c] · x[n,i, z·s0-p0+a, y·s1-p1+b, x·s2-p2+c]`,
/// out-of-range reads being 0. `w` is `[O, I, kd, kh, kw]`, `b` is `[O]`.
pub fn conv3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a: &ConvAttrs,
) -> Result<Tensor, IrError> {
    let op = Op::Conv3d(a.clone());
    let mut args = vec![x, w];
    args.extend(b);
    let ty = checked(&op, &args)?;
    let (xs, ws) = (f32s(&op, x)?, f32s(&op, w)?);
    let bs = b.map(|b| f32s(&op, b)).transpose()?;
    let [_, ci, d, h, wd] = dims5(&op, x.shape())?;
    let [_, co, od, oh, ow] = dims5(&op, &ty.shape)?;
    let ([kd, kh, kw], [sd, sh, sw], [pd, ph, pw]) = (a.kernel, a.stride, a.padding);
    // For kernel column c: the output columns whose input column is in range.
    let cols: Vec<Span> = (0..kw).map(|c| span(ow, sw, c, pw, wd)).collect();
    let plane = od * oh * ow;
    let mut out = vec![0f32; ty.numel()];
    let work = ty.numel() * ci * kd * kh * kw;
    for_each_plane(&mut out, plane, work, |p, dst| {
        let (n, o) = (p / co, p % co);
        let bias = bs.map_or(0.0, |b| b[o] as f64);
        let mut acc = vec![0f64; ow];
        for z in 0..od {
            for y in 0..oh {
                acc.fill(0.0);
                for i in 0..ci {
                    for ka in 0..kd {
                        let Some(iz) = tap(z, sd, ka, pd, d) else {
                            continue;
                        };
                        for kb in 0..kh {
                            let Some(iy) = tap(y, sh, kb, ph, h) else {
                                continue;
                            };
                            let xrow = &xs[(((n * ci + i) * d + iz) * h + iy) * wd..][..wd];
                            let wrow = &ws[(((o * ci + i) * kd + ka) * kh + kb) * kw..][..kw];
                            for (&wv, sp) in wrow.iter().zip(&cols) {
                                axpy_gather(
                                    &mut acc[sp.lo..sp.hi],
                                    wv as f64,
                                    &xrow[sp.first..],
                                    sw,
                                );
                            }
                        }
                    }
                }
                let row = &mut dst[(z * oh + y) * ow..][..ow];
                for (r, &v) in row.iter_mut().zip(&acc) {
                    *r = (v + bias) as f32;
                }
            }
        }
    });
    Tensor::from_f32(ty.shape, out)
}

/// `(x, w, b?)`: PyTorch's `ConvTranspose3d`, `w` is `[I, O, kd, kh, kw]`:
/// `out[n,o, z·s0-p0+a, y·s1-p1+b, x·s2-p2+c] += x[n,i,z,y,x] · w[i,o,a,b,c]` (targets outside
/// the output are dropped), plus `b[o]`; output extent `(in-1)·s - 2p + k`.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a: &ConvAttrs,
) -> Result<Tensor, IrError> {
    let op = Op::ConvTranspose3d(a.clone());
    let mut args = vec![x, w];
    args.extend(b);
    let ty = checked(&op, &args)?;
    let (xs, ws) = (f32s(&op, x)?, f32s(&op, w)?);
    let bs = b.map(|b| f32s(&op, b)).transpose()?;
    let [_, ci, d, h, wd] = dims5(&op, x.shape())?;
    let [_, co, od, oh, ow] = dims5(&op, &ty.shape)?;
    let ([kd, kh, kw], [sd, sh, sw], [pd, ph, pw]) = (a.kernel, a.stride, a.padding);
    // For kernel column c: the input columns whose output column is in range.
    let cols: Vec<Span> = (0..kw).map(|c| span(wd, sw, c, pw, ow)).collect();
    let plane = od * oh * ow;
    let mut out = vec![0f32; ty.numel()];
    let work = xs.len() * co * kd * kh * kw;
    for_each_plane(&mut out, plane, work, |p, dst| {
        let (n, o) = (p / co, p % co);
        let bias = bs.map_or(0.0, |b| b[o] as f64);
        let mut acc = vec![0f64; plane];
        for i in 0..ci {
            for z in 0..d {
                for ka in 0..kd {
                    let Some(tz) = tap(z, sd, ka, pd, od) else {
                        continue;
                    };
                    for y in 0..h {
                        for kb in 0..kh {
                            let Some(ty_) = tap(y, sh, kb, ph, oh) else {
                                continue;
                            };
                            let xrow = &xs[(((n * ci + i) * d + z) * h + y) * wd..][..wd];
                            let wrow = &ws[(((i * co + o) * kd + ka) * kh + kb) * kw..][..kw];
                            let arow = &mut acc[(tz * oh + ty_) * ow..][..ow];
                            for (&wv, sp) in wrow.iter().zip(&cols) {
                                let wv = wv as f64;
                                let targets = arow[sp.first..].iter_mut().step_by(sw);
                                for (t, &v) in targets.zip(&xrow[sp.lo..sp.hi]) {
                                    *t += wv * v as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        for (r, &v) in dst.iter_mut().zip(&acc) {
            *r = (v + bias) as f32;
        }
    });
    Tensor::from_f32(ty.shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_and_span() {
        // 5 outputs, stride 2, kernel column 0, padding 1, 5 inputs: taps -1, 1, 3, 5, 7.
        assert_eq!(tap(0, 2, 0, 1, 5), None);
        assert_eq!(tap(1, 2, 0, 1, 5), Some(1));
        assert_eq!(tap(3, 2, 0, 1, 5), None);
        assert_eq!(
            span(5, 2, 0, 1, 5),
            Span {
                lo: 1,
                hi: 3,
                first: 1
            }
        );
        // Nothing in range.
        assert_eq!(
            span(3, 1, 0, 9, 2),
            Span {
                lo: 0,
                hi: 0,
                first: 0
            }
        );
        // Everything in range.
        assert_eq!(
            span(4, 1, 1, 1, 4),
            Span {
                lo: 0,
                hi: 4,
                first: 0
            }
        );
    }

    #[test]
    fn planes_cover_everything_in_parallel() {
        let mut out = vec![0f32; 7 * 3];
        for_each_plane(&mut out, 3, usize::MAX, |i, p| p.fill(i as f32));
        let want: Vec<f32> = (0..7).flat_map(|i| [i as f32; 3]).collect();
        assert_eq!(out, want);
    }

    /// Small deterministic pseudo-random values in [-1, 1).
    fn noise(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    /// The textbook 8-deep loop nests with signed index arithmetic and per-tap bounds checks, to
    /// check the hoisted spans and the threading of the real kernels.
    fn naive(
        x: &Tensor,
        w: &Tensor,
        a: &ConvAttrs,
        transpose: bool,
        out_shape: &[usize],
    ) -> Vec<f32> {
        let (xs, ws) = (x.as_f32().unwrap(), w.as_f32().unwrap());
        let s = x.shape();
        let (n, ci, d, h, wd) = (s[0], s[1], s[2] as i64, s[3] as i64, s[4] as i64);
        let (co, od, oh, ow) = (
            out_shape[1],
            out_shape[2] as i64,
            out_shape[3] as i64,
            out_shape[4] as i64,
        );
        let k = a.kernel.map(|v| v as i64);
        let st = a.stride.map(|v| v as i64);
        let p = a.padding.map(|v| v as i64);
        let mut out = vec![0f64; out_shape.iter().product()];
        let xi = |nn: usize, c: usize, z: i64, y: i64, q: i64| {
            (((nn * ci + c) as i64 * d + z) * h + y) * wd + q
        };
        let oi = |nn: usize, c: usize, z: i64, y: i64, q: i64| {
            (((nn * co + c) as i64 * od + z) * oh + y) * ow + q
        };
        let wi = |o: usize, i: usize, kz: i64, ky: i64, kx: i64| {
            let (first, second) = if transpose { (i, o) } else { (o, i) };
            let second_len = if transpose { co } else { ci };
            ((((first * second_len + second) as i64 * k[0] + kz) * k[1] + ky) * k[2] + kx) as usize
        };
        for nn in 0..n {
            for o in 0..co {
                for i in 0..ci {
                    for kz in 0..k[0] {
                        for ky in 0..k[1] {
                            for kx in 0..k[2] {
                                let wv = ws[wi(o, i, kz, ky, kx)] as f64;
                                // Conv: loop over outputs, read inputs; transpose: loop over inputs, write outputs.
                                let (lz, ly, lx) =
                                    if transpose { (d, h, wd) } else { (od, oh, ow) };
                                for z in 0..lz {
                                    for y in 0..ly {
                                        for q in 0..lx {
                                            let tz = z * st[0] - p[0] + kz;
                                            let ty = y * st[1] - p[1] + ky;
                                            let tq = q * st[2] - p[2] + kx;
                                            if transpose {
                                                if (0..od).contains(&tz)
                                                    && (0..oh).contains(&ty)
                                                    && (0..ow).contains(&tq)
                                                {
                                                    out[oi(nn, o, tz, ty, tq) as usize] +=
                                                        wv * xs[xi(nn, i, z, y, q) as usize] as f64;
                                                }
                                            } else if (0..d).contains(&tz)
                                                && (0..h).contains(&ty)
                                                && (0..wd).contains(&tq)
                                            {
                                                out[oi(nn, o, z, y, q) as usize] +=
                                                    wv * xs[xi(nn, i, tz, ty, tq) as usize] as f64;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    #[test]
    fn kernels_match_naive_loop_nests() {
        let cases: [([usize; 5], usize, ConvAttrs); 5] = [
            (
                [1, 3, 4, 5, 6],
                2,
                ConvAttrs {
                    kernel: [1, 3, 3],
                    stride: [1, 1, 1],
                    padding: [0, 1, 1],
                },
            ),
            (
                [2, 2, 5, 6, 7],
                3,
                ConvAttrs {
                    kernel: [3, 2, 3],
                    stride: [2, 2, 3],
                    padding: [1, 0, 2],
                },
            ),
            (
                [1, 4, 3, 4, 5],
                2,
                ConvAttrs {
                    kernel: [2, 2, 2],
                    stride: [2, 2, 2],
                    padding: [0, 0, 0],
                },
            ),
            (
                [1, 2, 4, 4, 4],
                2,
                ConvAttrs {
                    kernel: [3, 3, 3],
                    stride: [1, 2, 1],
                    padding: [2, 1, 0],
                },
            ),
            // Big enough to take the multi-threaded path.
            (
                [1, 8, 6, 16, 24],
                8,
                ConvAttrs {
                    kernel: [1, 3, 3],
                    stride: [1, 1, 1],
                    padding: [0, 1, 1],
                },
            ),
        ];
        for (seed, (xs, co, a)) in cases.into_iter().enumerate() {
            let x = noise(&xs, seed as u64);
            let w = noise(
                &[co, xs[1], a.kernel[0], a.kernel[1], a.kernel[2]],
                100 + seed as u64,
            );
            let y = conv3d(&x, &w, None, &a).unwrap();
            let want = naive(&x, &w, &a, false, y.shape());
            assert_eq!(y.as_f32().unwrap(), &want[..], "conv3d case {seed}");

            let w = noise(
                &[xs[1], co, a.kernel[0], a.kernel[1], a.kernel[2]],
                200 + seed as u64,
            );
            let y = conv_transpose3d(&x, &w, None, &a).unwrap();
            let want = naive(&x, &w, &a, true, y.shape());
            assert_eq!(
                y.as_f32().unwrap(),
                &want[..],
                "conv_transpose3d case {seed}"
            );
        }
    }
}
