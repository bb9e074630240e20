//! The three direct-convolution primitives every convolution kernel is built from.
//!
//! A cross-correlation links a *wide* tensor `X [N, B, D, H, W]` (its input) and a *narrow* tensor
//! `Y [N, A, OD, OH, OW]` (its output) through weights `[A, B, kd, kh, kw]`:
//! `Y[a, z, y, q] = Σ w[a, b, ka, kb, kc] · X[b, z·sd - pd + ka, y·sh - ph + kb, q·sw - pw + kc]`.
//! [`gather`] computes `Y` (conv forward, transposed-conv backward data), [`scatter`] its adjoint
//! `X = Σ w · Y` (conv backward data, transposed-conv forward) and [`wgrad`] the weight gradient
//! `<Y[a], shifted X[b]>` (both weight gradients). The caller guarantees the geometry
//! (`OD = (D + 2pd - kd) / sd + 1`, likewise for H and W) and slice lengths.
//!
//! Bounds along D and H are handled per row; along W the wide tensor is copied once into a
//! zero-padded, stride-phased row layout ([`Phased`]) in which every kernel column's taps form one
//! contiguous slice, so the innermost loops are plain axpys over rows with no edge cases. A
//! `live` mask over `[A, B]` skips dead kernels entirely (their weight gradients are written 0).

use super::par_planes;
use super::simd::{axpy, axpy3, mul_acc, mul_acc3, Fused, Madd, Plain};

/// Geometry of one direct convolution (see the module doc).
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub n: usize,
    pub a: usize,
    pub b: usize,
    pub xd: [usize; 3],
    pub yd: [usize; 3],
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
}

impl Geom {
    pub(super) fn ksz(&self) -> usize {
        self.k[0] * self.k[1] * self.k[2]
    }
    pub(super) fn live(&self, live: Option<&[bool]>, a: usize, b: usize) -> bool {
        live.is_none_or(|l| l[a * self.b + b])
    }
    /// Offsets of kernel column `c` in a phased row.
    fn offsets(&self, l: usize) -> Vec<usize> {
        let s = self.s[2];
        (0..self.k[2]).map(|c| (c % s) * l + c / s).collect()
    }
}

/// `o·s + k - p` when it lies in `0..n`.
#[inline(always)]
fn tap(o: usize, s: usize, k: usize, p: usize, n: usize) -> Option<usize> {
    (o * s + k).checked_sub(p).filter(|&i| i < n)
}

/// The wide tensor with every W row zero-padded by `pw` on both sides and split into `sw`
/// phases of length `l`: padded column `t` sits at `(t % sw)·l + t / sw`, so the taps of kernel
/// column `c` for outputs `0..OW` are the contiguous slice at `(c % sw)·l + c / sw`.
pub(super) struct Phased {
    data: Vec<f32>,
    l: usize,
    row: usize,
}

/// Builds the [`Phased`] copy of `x` (rows of `w` elements).
pub(super) fn phase_pad(x: &[f32], w: usize, p: usize, s: usize) -> Phased {
    let l = (w + 2 * p).div_ceil(s).max(1);
    let row = s * l;
    let rows = x.len().checked_div(w).unwrap_or(0);
    let mut data = vec![0f32; rows * row];
    if w > 0 {
        for (src, dst) in x.chunks_exact(w).zip(data.chunks_exact_mut(row)) {
            if s == 1 {
                dst[p..p + w].copy_from_slice(src);
            } else {
                for (j, &v) in src.iter().enumerate() {
                    let t = j + p;
                    dst[(t % s) * l + t / s] = v;
                }
            }
        }
    }
    Phased { data, l, row }
}

/// Live counts per narrow channel `a` (cost for thread balancing).
fn live_rows(g: &Geom, live: Option<&[bool]>) -> Vec<usize> {
    (0..g.a)
        .map(|a| (0..g.b).filter(|&b| g.live(live, a, b)).count())
        .collect()
}

/// `Y = conv(X, w) (+ bias)`, overwriting `y` (`[N, A, OD, OH, OW]`). Stride 1 along H and W goes
/// to [`super::framed`]. `fma`: run the AVX2 + FMA instantiation (only pass `true` when [`super::simd::use_fma`] says so), as in all three.
#[allow(clippy::too_many_arguments)]
pub(super) fn gather(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    live: Option<&[bool]>,
    y: &mut [f32],
    threads: usize,
    fma: bool,
) {
    if g.s[1] == 1 && g.s[2] == 1 {
        return super::framed::gather(g, x, w, bias, live, y, threads, fma);
    }
    let xp = &phase_pad(x, g.xd[2], g.p[2], g.s[2]);
    let plane = g.yd.iter().product();
    let cost = live_rows(g, live);
    par_planes(
        y,
        g.a,
        plane,
        &cost,
        g.n * plane * g.ksz(),
        threads,
        |n, a, out| {
            let bs: Vec<usize> = (0..g.b).filter(|&b| g.live(live, a, b)).collect();
            let bv = bias.map_or(0.0, |b| b[a]);
            #[cfg(target_arch = "x86_64")]
            if fma {
                // SAFETY: `use_fma` checked that the CPU has AVX2 and FMA.
                unsafe { gather_plane_fma(g, xp, w, bv, &bs, n, a, out) };
                return;
            }
            let _ = fma;
            gather_plane::<Plain>(g, xp, w, bv, &bs, n, a, out);
        },
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gather_plane_fma(
    g: &Geom,
    xp: &Phased,
    w: &[f32],
    bias: f32,
    bs: &[usize],
    n: usize,
    a: usize,
    out: &mut [f32],
) {
    gather_plane::<Fused>(g, xp, w, bias, bs, n, a, out)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gather_plane<M: Madd>(
    g: &Geom,
    xp: &Phased,
    w: &[f32],
    bias: f32,
    bs: &[usize],
    n: usize,
    a: usize,
    out: &mut [f32],
) {
    let [od, oh, ow] = g.yd;
    let [d, h, _] = g.xd;
    let [kd, kh, kw] = g.k;
    let [sd, sh, _] = g.s;
    let [pd, ph, _] = g.p;
    let ksz = g.ksz();
    let offs = g.offsets(xp.l);
    let xplane = d * h * xp.row;
    for z in 0..od {
        for yy in 0..oh {
            let acc = &mut out[(z * oh + yy) * ow..][..ow];
            acc.fill(bias);
            for &b in bs {
                let wk = &w[(a * g.b + b) * ksz..][..ksz];
                let xpl = &xp.data[(n * g.b + b) * xplane..][..xplane];
                for ka in 0..kd {
                    let Some(iz) = tap(z, sd, ka, pd, d) else {
                        continue;
                    };
                    for kb in 0..kh {
                        let Some(iy) = tap(yy, sh, kb, ph, h) else {
                            continue;
                        };
                        let xr = &xpl[(iz * h + iy) * xp.row..][..xp.row];
                        let wr = &wk[(ka * kh + kb) * kw..][..kw];
                        if kw == 3 {
                            axpy3::<M>(
                                acc,
                                [wr[0], wr[1], wr[2]],
                                &xr[offs[0]..],
                                &xr[offs[1]..],
                                &xr[offs[2]..],
                            );
                        } else {
                            for (&wv, &o) in wr.iter().zip(&offs) {
                                axpy::<M>(acc, wv, &xr[o..]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `X = Σ_a w[a, b] ⋆ᵀ Y[a]`, the adjoint of [`gather`] without bias, overwriting `x`
/// (`[N, B, D, H, W]`).
pub(super) fn scatter(
    g: &Geom,
    yv: &[f32],
    w: &[f32],
    live: Option<&[bool]>,
    x: &mut [f32],
    threads: usize,
    fma: bool,
) {
    let plane = g.xd.iter().product();
    let cost: Vec<usize> = (0..g.b)
        .map(|b| (0..g.a).filter(|&a| g.live(live, a, b)).count())
        .collect();
    par_planes(
        x,
        g.b,
        plane,
        &cost,
        g.n * g.yd.iter().product::<usize>() * g.ksz(),
        threads,
        |n, b, out| {
            let as_: Vec<usize> = (0..g.a).filter(|&a| g.live(live, a, b)).collect();
            #[cfg(target_arch = "x86_64")]
            if fma {
                // SAFETY: `use_fma` checked that the CPU has AVX2 and FMA.
                unsafe { scatter_plane_fma(g, yv, w, &as_, n, b, out) };
                return;
            }
            let _ = fma;
            scatter_plane::<Plain>(g, yv, w, &as_, n, b, out);
        },
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scatter_plane_fma(
    g: &Geom,
    yv: &[f32],
    w: &[f32],
    as_: &[usize],
    n: usize,
    b: usize,
    out: &mut [f32],
) {
    scatter_plane::<Fused>(g, yv, w, as_, n, b, out)
}

#[inline(always)]
fn scatter_plane<M: Madd>(
    g: &Geom,
    yv: &[f32],
    w: &[f32],
    as_: &[usize],
    n: usize,
    b: usize,
    out: &mut [f32],
) {
    let [od, oh, ow] = g.yd;
    let [d, h, wd] = g.xd;
    let [kd, kh, kw] = g.k;
    let [sd, sh, sw] = g.s;
    let [pd, ph, pw] = g.p;
    let ksz = g.ksz();
    let l = (wd + 2 * pw).div_ceil(sw).max(1);
    let row = sw * l;
    let offs = g.offsets(l);
    let mut buf = vec![0f32; d * h * row];
    let yplane = od * oh * ow;
    for &a in as_ {
        let wk = &w[(a * g.b + b) * ksz..][..ksz];
        let ypl = &yv[(n * g.a + a) * yplane..][..yplane];
        for z in 0..od {
            for ka in 0..kd {
                let Some(iz) = tap(z, sd, ka, pd, d) else {
                    continue;
                };
                for yy in 0..oh {
                    let src = &ypl[(z * oh + yy) * ow..][..ow];
                    for kb in 0..kh {
                        let Some(iy) = tap(yy, sh, kb, ph, h) else {
                            continue;
                        };
                        let dst = &mut buf[(iz * h + iy) * row..][..row];
                        let wr = &wk[(ka * kh + kb) * kw..][..kw];
                        for (&wv, &o) in wr.iter().zip(&offs) {
                            axpy::<M>(&mut dst[o..o + ow], wv, src);
                        }
                    }
                }
            }
        }
    }
    // Back from the phased, padded rows to dense rows.
    for (dst, src) in out.chunks_exact_mut(wd).zip(buf.chunks_exact(row)) {
        if sw == 1 {
            dst.copy_from_slice(&src[pw..pw + wd]);
        } else {
            for (j, v) in dst.iter_mut().enumerate() {
                let t = j + pw;
                *v = src[(t % sw) * l + t / sw];
            }
        }
    }
}

/// `dw[a, b, ka, kb, kc] = Σ_{n, z, y, q} Y[a, z, y, q] · X[b, tap(z), tap(y), tap(q)]`,
/// overwriting `dw` (`[A, B, kd, kh, kw]`); dead kernels get 0.
pub(super) fn wgrad(
    g: &Geom,
    yv: &[f32],
    x: &[f32],
    live: Option<&[bool]>,
    dw: &mut [f32],
    threads: usize,
    fma: bool,
) {
    let xp = &phase_pad(x, g.xd[2], g.p[2], g.s[2]);
    let plane = g.b * g.ksz();
    let cost = live_rows(g, live);
    par_planes(
        dw,
        g.a,
        plane,
        &cost,
        g.n * g.yd.iter().product::<usize>() * g.ksz(),
        threads,
        |_, a, out| {
            let bs: Vec<usize> = (0..g.b).filter(|&b| g.live(live, a, b)).collect();
            let ksz = g.ksz();
            let ow = g.yd[2];
            let mut acc = vec![0f32; bs.len() * ksz * ow];
            #[cfg(target_arch = "x86_64")]
            if fma {
                // SAFETY: `use_fma` checked that the CPU has AVX2 and FMA.
                unsafe { wgrad_rows_fma(g, yv, xp, &bs, a, &mut acc) };
            } else {
                wgrad_rows::<Plain>(g, yv, xp, &bs, a, &mut acc);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = fma;
                wgrad_rows::<Plain>(g, yv, xp, &bs, a, &mut acc);
            }
            out.fill(0.0);
            for (j, &b) in bs.iter().enumerate() {
                let dst = &mut out[b * ksz..][..ksz];
                let src = &acc[j * ksz * ow..][..ksz * ow];
                for (v, lanes) in dst.iter_mut().zip(src.chunks_exact(ow.max(1))) {
                    *v = lanes.iter().map(|&t| t as f64).sum::<f64>() as f32;
                }
            }
        },
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wgrad_rows_fma(
    g: &Geom,
    yv: &[f32],
    xp: &Phased,
    bs: &[usize],
    a: usize,
    acc: &mut [f32],
) {
    wgrad_rows::<Fused>(g, yv, xp, bs, a, acc)
}

/// Accumulates, for every live `b` (in `bs` order) and tap, the lane-wise products over all rows
/// into `acc` (`[bs.len(), ksz, OW]`).
#[inline(always)]
fn wgrad_rows<M: Madd>(g: &Geom, yv: &[f32], xp: &Phased, bs: &[usize], a: usize, acc: &mut [f32]) {
    let [od, oh, ow] = g.yd;
    let [d, h, _] = g.xd;
    let [kd, kh, kw] = g.k;
    let [sd, sh, _] = g.s;
    let [pd, ph, _] = g.p;
    let ksz = g.ksz();
    let offs = g.offsets(xp.l);
    let xplane = d * h * xp.row;
    let yplane = od * oh * ow;
    for n in 0..g.n {
        let ypl = &yv[(n * g.a + a) * yplane..][..yplane];
        for z in 0..od {
            for yy in 0..oh {
                let drow = &ypl[(z * oh + yy) * ow..][..ow];
                for (j, &b) in bs.iter().enumerate() {
                    let xpl = &xp.data[(n * g.b + b) * xplane..][..xplane];
                    let accb = &mut acc[j * ksz * ow..][..ksz * ow];
                    for ka in 0..kd {
                        let Some(iz) = tap(z, sd, ka, pd, d) else {
                            continue;
                        };
                        for kb in 0..kh {
                            let Some(iy) = tap(yy, sh, kb, ph, h) else {
                                continue;
                            };
                            let xr = &xpl[(iz * h + iy) * xp.row..][..xp.row];
                            let at = &mut accb[(ka * kh + kb) * kw * ow..][..kw * ow];
                            if kw == 3 {
                                let (l0, rest) = at.split_at_mut(ow);
                                let (l1, l2) = rest.split_at_mut(ow);
                                mul_acc3::<M>(
                                    l0,
                                    l1,
                                    l2,
                                    drow,
                                    &xr[offs[0]..],
                                    &xr[offs[1]..],
                                    &xr[offs[2]..],
                                );
                            } else {
                                for (lane, &o) in at.chunks_exact_mut(ow).zip(&offs) {
                                    mul_acc::<M>(lane, drow, &xr[o..]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::use_fma;
    use super::*;

    use super::super::noise;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(b) {
            assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }

    /// The portable instantiation agrees with the AVX2 + FMA one (where the CPU has it), for
    /// kernel widths 3 (fused taps) and 2, strides 1 and 2.
    #[test]
    fn portable_path_matches_fma_path() {
        for (k, s, p) in [
            ([1, 3, 3], [1, 1, 1], [0, 1, 1]),
            ([2, 2, 2], [2, 2, 2], [0, 0, 1]),
        ] {
            let xd = [4, 7, 9];
            let yd = [0, 1, 2].map(|ax| (xd[ax] + 2 * p[ax] - k[ax]) / s[ax] + 1);
            let g = Geom {
                n: 2,
                a: 3,
                b: 5,
                xd,
                yd,
                k,
                s,
                p,
            };
            let x = noise(g.n * g.b * xd.iter().product::<usize>(), 1);
            let yv = noise(g.n * g.a * yd.iter().product::<usize>(), 2);
            let w = noise(g.a * g.b * g.ksz(), 3);
            let live: Vec<bool> = (0..g.a * g.b).map(|i| i % 4 != 1).collect();
            let run = |fma: bool| {
                let mut y = vec![0f32; yv.len()];
                gather(&g, &x, &w, None, Some(&live), &mut y, 1, fma);
                let mut xo = vec![0f32; x.len()];
                scatter(&g, &yv, &w, Some(&live), &mut xo, 1, fma);
                let mut dw = vec![0f32; w.len()];
                wgrad(&g, &yv, &x, Some(&live), &mut dw, 1, fma);
                (y, xo, dw)
            };
            let (a, b) = (run(false), run(use_fma()));
            close(&a.0, &b.0);
            close(&a.1, &b.1);
            close(&a.2, &b.2);
        }
    }
}
