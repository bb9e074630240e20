//! The training (gradient) ops of the reference interpreter: straightforward loops over the
//! defining sums, f32 storage and f64 accumulation, like the forward kernels they differentiate.
//!
//! The two convolution gradients share one picture. A conv and a transposed conv both relate a
//! "small" tensor `s[n, cs, q]` and a "big" one `b[n, cb, t]` through taps `t = q·stride + k -
//! pad` (only those inside `b`) and a weight laid out `[cs, cb, k..]`: for a conv the small side
//! is the output (`w[O, I, k..]`), for a transposed conv it is the input (`w[I, O, k..]`). Every
//! forward and backward sum is then `Σ b[n, cb, t(q, k)] · s[n, cs, q] · w[cs, cb, k]` with one
//! factor left out, which [`for_each_tap`] enumerates once for all four cases. Like the forward
//! oracle, zero weights are never skipped.

use crate::error::IrError;
use crate::op::{shift_runs, ConvGradAttrs, Op, PoolAttrs, ShiftAttrs};
use crate::tensor::Tensor;

use super::ops::{checked, dims5, err, f32s, shift_channels};

/// Spatial bookkeeping of a conv gradient: the small and big extents and the taps per axis.
struct Taps {
    small: [usize; 3],
    big: [usize; 3],
    kernel: [usize; 3],
    /// `taps[ax][q * kernel[ax] + k]`: the big position of small position `q` and offset `k`.
    taps: [Vec<Option<usize>>; 3],
}

impl Taps {
    fn new(small: [usize; 3], big: [usize; 3], a: &ConvGradAttrs) -> Taps {
        let c = &a.conv;
        let taps = [0, 1, 2].map(|ax| {
            let mut v = Vec::with_capacity(small[ax] * c.kernel[ax]);
            for q in 0..small[ax] {
                for k in 0..c.kernel[ax] {
                    let t = (q * c.stride[ax] + k)
                        .checked_sub(c.padding[ax])
                        .filter(|&t| t < big[ax]);
                    v.push(t);
                }
            }
            v
        });
        Taps {
            small,
            big,
            kernel: c.kernel,
            taps,
        }
    }

    fn small_len(&self) -> usize {
        self.small.iter().product()
    }

    fn big_len(&self) -> usize {
        self.big.iter().product()
    }

    fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Calls `f(q, t, k)` (flat small, big and kernel indices) for every in-range tap, in
    /// row-major order of `(q, k)`.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [sd, sh, sw] = self.small;
        let [_, bh, bw] = self.big;
        let [kd, kh, kw] = self.kernel;
        for qz in 0..sd {
            for qy in 0..sh {
                for qx in 0..sw {
                    let q = (qz * sh + qy) * sw + qx;
                    for a in 0..kd {
                        let Some(tz) = self.taps[0][qz * kd + a] else {
                            continue;
                        };
                        for b in 0..kh {
                            let Some(ty) = self.taps[1][qy * kh + b] else {
                                continue;
                            };
                            for c in 0..kw {
                                let Some(tx) = self.taps[2][qx * kw + c] else {
                                    continue;
                                };
                                f(q, (tz * bh + ty) * bw + tx, (a * kh + b) * kw + c);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn spatial(s: [usize; 5]) -> [usize; 3] {
    [s[2], s[3], s[4]]
}

fn to_f32(acc: Vec<f64>) -> Vec<f32> {
    acc.into_iter().map(|v| v as f32).collect()
}

/// `(dy, w)`: the gradient of the forward conv's input `x` (`[N, I, input..]`); with fused
/// shifts (see [`ConvGradAttrs::shifts`]) the gradient of the unshifted input. For a conv,
/// `dx[n,i,t] = Σ_{o,q,k: t(q,k)=t} dy[n,o,q] · w[o,i,k]`; for a transposed conv,
/// `dx[n,i,q] = Σ_{o,k} dy[n,o,t(q,k)] · w[i,o,k]`.
pub fn conv_backward_data(dy: &Tensor, w: &Tensor, a: &ConvGradAttrs) -> Result<Tensor, IrError> {
    let op = Op::ConvBackwardData(a.clone());
    let ty = checked(&op, &[dy, w])?;
    let (dys, ws) = (f32s(&op, dy)?, f32s(&op, w)?);
    let dyd = dims5(&op, dy.shape())?;
    let xd = dims5(&op, &ty.shape)?;
    let n = xd[0];
    let mut acc = vec![0f64; ty.numel()];
    if a.transposed {
        // x is the small side (channels cs = I), dy the big side (cb = O).
        let (cs, cb) = (xd[1], dyd[1]);
        let taps = Taps::new(spatial(xd), spatial(dyd), a);
        let (sl, bl, kl) = (taps.small_len(), taps.big_len(), taps.kernel_len());
        for ni in 0..n {
            for s in 0..cs {
                let dst = &mut acc[(ni * cs + s) * sl..][..sl];
                for b in 0..cb {
                    let src = &dys[(ni * cb + b) * bl..][..bl];
                    let wk = &ws[(s * cb + b) * kl..][..kl];
                    taps.for_each_tap(|q, t, k| dst[q] += src[t] as f64 * wk[k] as f64);
                }
            }
        }
    } else {
        // dy is the small side (cs = O), x the big side (cb = I).
        let (cs, cb) = (dyd[1], xd[1]);
        let taps = Taps::new(spatial(dyd), spatial(xd), a);
        let (sl, bl, kl) = (taps.small_len(), taps.big_len(), taps.kernel_len());
        for ni in 0..n {
            for b in 0..cb {
                let dst = &mut acc[(ni * cb + b) * bl..][..bl];
                for s in 0..cs {
                    let src = &dys[(ni * cs + s) * sl..][..sl];
                    let wk = &ws[(s * cb + b) * kl..][..kl];
                    taps.for_each_tap(|q, t, k| dst[t] += src[q] as f64 * wk[k] as f64);
                }
            }
        }
    }
    let dx = to_f32(acc);
    match a.channel_shifts() {
        // The fused depth-shift backward: dx[c, d] = dxs[c, d + shift(c)].
        Some(s) => {
            let neg: Vec<i64> = s
                .iter()
                .map(|v| v.checked_neg().unwrap_or(i64::MAX))
                .collect();
            Tensor::from_f32(ty.shape, shift_channels(&dx, xd, &neg))
        }
        None => Tensor::from_f32(ty.shape, dx),
    }
}

/// `(x, dy)`: the gradient of the forward conv's weight (with fused shifts, of the conv that read
/// `x` through them), in its layout:
/// `dw[cs,cb,k] = Σ_{n,q} small[n,cs,q] · big[n,cb,t(q,k)]` where (small, big) is (dy, x) for a
/// conv (`dw[o,i,k]`) and (x, dy) for a transposed conv (`dw[i,o,k]`).
pub fn conv_backward_weight(x: &Tensor, dy: &Tensor, a: &ConvGradAttrs) -> Result<Tensor, IrError> {
    let op = Op::ConvBackwardWeight(a.clone());
    let ty = checked(&op, &[x, dy])?;
    let (xs, dys) = (f32s(&op, x)?, f32s(&op, dy)?);
    let xd = dims5(&op, x.shape())?;
    let dyd = dims5(&op, dy.shape())?;
    // The fused shift: x is read as the forward conv read it.
    let shifted = a.channel_shifts().map(|s| shift_channels(xs, xd, &s));
    let xs = shifted.as_deref().unwrap_or(xs);
    let ((small, sd), (big, bd)) = if a.transposed {
        ((xs, xd), (dys, dyd))
    } else {
        ((dys, dyd), (xs, xd))
    };
    let taps = Taps::new(spatial(sd), spatial(bd), a);
    let (sl, bl, kl) = (taps.small_len(), taps.big_len(), taps.kernel_len());
    let (cs, cb) = (sd[1], bd[1]);
    let mut acc = vec![0f64; ty.numel()];
    for s in 0..cs {
        for b in 0..cb {
            let dst = &mut acc[(s * cb + b) * kl..][..kl];
            for ni in 0..sd[0] {
                let sv = &small[(ni * cs + s) * sl..][..sl];
                let bv = &big[(ni * cb + b) * bl..][..bl];
                taps.for_each_tap(|q, t, k| dst[k] += sv[q] as f64 * bv[t] as f64);
            }
        }
    }
    Tensor::from_f32(ty.shape, to_f32(acc))
}

/// `(dy)`: `[C]`, the per-channel sum over N, D, H, W.
pub fn channel_sum(dy: &Tensor) -> Result<Tensor, IrError> {
    let op = Op::ChannelSum;
    let ty = checked(&op, &[dy])?;
    let dys = f32s(&op, dy)?;
    let [_, c, d, h, w] = dims5(&op, dy.shape())?;
    let inner = d * h * w;
    let mut acc = vec![0f64; c];
    for (p, chunk) in dys.chunks(inner).enumerate() {
        acc[p % c] += chunk.iter().map(|&v| v as f64).sum::<f64>();
    }
    Tensor::from_f32(ty.shape, to_f32(acc))
}

/// `(dy)`: the adjoint of `depth_shift`: channel `c` with shift `s` gets `dx[c, d] = dy[c, d + s]`
/// when `0 <= d + s < D`, else 0.
pub fn depth_shift_backward(dy: &Tensor, a: &ShiftAttrs) -> Result<Tensor, IrError> {
    let op = Op::DepthShiftBackward(a.clone());
    let ty = checked(&op, &[dy])?;
    let dys = f32s(&op, dy)?;
    let dims = dims5(&op, dy.shape())?;
    let mut shifts = Vec::with_capacity(dims[1]);
    for (s, n) in shift_runs(a.groups, dims[1]) {
        let neg = s
            .checked_neg()
            .ok_or_else(|| err(&op, format!("shift {s} cannot be negated")))?;
        shifts.extend(std::iter::repeat_n(neg, n));
    }
    Tensor::from_f32(ty.shape, shift_channels(dys, dims, &shifts))
}

/// Per `(n, c)` plane of `x`: `(mean, rstd)` in f64 (biased variance, two passes).
fn plane_stats(src: &[f32], eps: f32) -> (f64, f64) {
    let len = src.len() as f64;
    let mean = src.iter().map(|&v| v as f64).sum::<f64>() / len;
    let var = src.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len;
    (mean, 1.0 / (var + eps as f64).sqrt())
}

/// `(x, gamma, dy)`: per `(n, c)` with `x̂ = (x - mean) · rstd` and `g = gamma[c] · dy`,
/// `dx = rstd · (g - mean(g) - x̂ · mean(g · x̂))`.
pub fn instance_norm_backward(
    x: &Tensor,
    gamma: &Tensor,
    dy: &Tensor,
    eps: f32,
) -> Result<Tensor, IrError> {
    let op = Op::InstanceNormBackward { eps };
    let ty = checked(&op, &[x, gamma, dy])?;
    let (xs, gs, dys) = (f32s(&op, x)?, f32s(&op, gamma)?, f32s(&op, dy)?);
    let [_, c, d, h, w] = dims5(&op, x.shape())?;
    let inner = d * h * w;
    let mut out = vec![0f32; xs.len()];
    for (p, dst) in out.chunks_mut(inner).enumerate() {
        let src = &xs[p * inner..][..inner];
        let dsrc = &dys[p * inner..][..inner];
        let (mean, rstd) = plane_stats(src, eps);
        let g = gs[p % c] as f64;
        let len = inner as f64;
        let (mut mg, mut mgx) = (0f64, 0f64);
        for (&v, &dv) in src.iter().zip(dsrc) {
            let xh = (v as f64 - mean) * rstd;
            mg += g * dv as f64;
            mgx += g * dv as f64 * xh;
        }
        let (mg, mgx) = (mg / len, mgx / len);
        for ((o, &v), &dv) in dst.iter_mut().zip(src).zip(dsrc) {
            let xh = (v as f64 - mean) * rstd;
            *o = (rstd * (g * dv as f64 - mg - xh * mgx)) as f32;
        }
    }
    Tensor::from_f32(ty.shape, out)
}

/// `(x, dy)`: `[C]`, `Σ_{n,d,h,w} dy · x̂` with `x̂` the normalised `x` (the gamma gradient).
pub fn instance_norm_gamma_grad(x: &Tensor, dy: &Tensor, eps: f32) -> Result<Tensor, IrError> {
    let op = Op::InstanceNormGammaGrad { eps };
    let ty = checked(&op, &[x, dy])?;
    let (xs, dys) = (f32s(&op, x)?, f32s(&op, dy)?);
    let [_, c, d, h, w] = dims5(&op, x.shape())?;
    let inner = d * h * w;
    let mut acc = vec![0f64; c];
    for (p, src) in xs.chunks(inner).enumerate() {
        let (mean, rstd) = plane_stats(src, eps);
        let dsrc = &dys[p * inner..][..inner];
        acc[p % c] += src
            .iter()
            .zip(dsrc)
            .map(|(&v, &dv)| (v as f64 - mean) * rstd * dv as f64)
            .sum::<f64>();
    }
    Tensor::from_f32(ty.shape, to_f32(acc))
}

/// `(x, dy)`: `dy` where `x > 0`, else `slope · dy` (PyTorch's convention: at `x = 0` the slope; a NaN `x`
/// takes the slope too).
pub fn leaky_relu_backward(x: &Tensor, dy: &Tensor, slope: f32) -> Result<Tensor, IrError> {
    let op = Op::LeakyReluBackward { slope };
    let ty = checked(&op, &[x, dy])?;
    let (xs, dys) = (f32s(&op, x)?, f32s(&op, dy)?);
    let out = xs
        .iter()
        .zip(dys)
        .map(|(&v, &g)| if v > 0.0 { g } else { slope * g })
        .collect();
    Tensor::from_f32(ty.shape, out)
}

/// `(x, dy)`: each window's `dy` is added at the window's first maximum of `x` in row-major scan
/// order (the first NaN when the window holds one; the forward `max_pool3d` then yields NaN),
/// every other position gets 0. Sums run in f64.
pub fn max_pool_backward(x: &Tensor, dy: &Tensor, a: &PoolAttrs) -> Result<Tensor, IrError> {
    let op = Op::MaxPoolBackward(a.clone());
    let ty = checked(&op, &[x, dy])?;
    let (xs, dys) = (f32s(&op, x)?, f32s(&op, dy)?);
    let [n, c, d, h, w] = dims5(&op, x.shape())?;
    let [_, _, od, oh, ow] = dims5(&op, dy.shape())?;
    let ([kd, kh, kw], [sd, sh, sw]) = (a.kernel, a.stride);
    let mut acc = vec![0f64; xs.len()];
    let mut g = dys.iter();
    for p in 0..n * c {
        for z in 0..od {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut best: Option<(usize, f32)> = None;
                    for ka in 0..kd {
                        for kb in 0..kh {
                            let row = ((p * d + z * sd + ka) * h + y * sh + kb) * w + xo * sw;
                            for (j, &v) in xs[row..row + kw].iter().enumerate() {
                                let take = match best {
                                    None => true,
                                    Some((_, m)) => !m.is_nan() && (v > m || v.is_nan()),
                                };
                                if take {
                                    best = Some((row + j, v));
                                }
                            }
                        }
                    }
                    let gv = g.next().copied().unwrap_or(0.0);
                    if let Some((at, _)) = best {
                        acc[at] += gv as f64;
                    }
                }
            }
        }
    }
    Tensor::from_f32(ty.shape, to_f32(acc))
}
