//! The gather primitive (see [`super::direct`]) for stride 1 along H and W, working on whole
//! depth slices instead of rows, so small extents still get long vector loops.
//!
//! The wide tensor is copied into a zero frame (`Hp = H + 2ph`, `Wp = W + 2pw`), and an output
//! slice is computed on the frame's grid: output `(y, q)` sits at `t = y·Wp + q`, and kernel tap
//! `(kb, kc)` reads the framed slice at `t + kb·Wp + kc`. Every tap is therefore one contiguous
//! axpy of length `(OH - 1)·Wp + OW` over the whole slice; the `Wp - OW` columns between rows are
//! computed and thrown away (a small waste that buys loops 10-30x longer at 4..16 voxels).
//! The sum per output element runs over `(b, ka, kb, kc)` in the same order as the row version.

use super::direct::Geom;
use super::par_planes;
use super::simd::{axpy, axpy3, Fused, Madd, Plain};

/// `x` (`[N, B, D, H, W]`) in a zero frame of `ph` rows and `pw` columns: `[N, B, D, Hp, Wp]`.
fn frame(x: &[f32], xd: [usize; 3], ph: usize, pw: usize) -> Vec<f32> {
    let [_, h, w] = xd;
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    let slices = x.len().checked_div(h * w).unwrap_or(0);
    let mut out = vec![0f32; slices * hp * wp];
    for (src, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(hp * wp)) {
        for (r, row) in src.chunks_exact(w).enumerate() {
            dst[(r + ph) * wp + pw..][..w].copy_from_slice(row);
        }
    }
    out
}

/// `Y = conv(X, w) (+ bias)` for `g.s[1] == g.s[2] == 1`, overwriting `y`.
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
    let xf = frame(x, g.xd, g.p[1], g.p[2]);
    let plane = g.yd.iter().product();
    let cost: Vec<usize> = (0..g.a)
        .map(|a| (0..g.b).filter(|&b| g.live(live, a, b)).count())
        .collect();
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
                // SAFETY: the caller passes `fma` only when the CPU has AVX2 and FMA.
                unsafe { plane_fma(g, &xf, w, bv, &bs, n, a, out) };
                return;
            }
            let _ = fma;
            plane_of::<Plain>(g, &xf, w, bv, &bs, n, a, out);
        },
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn plane_fma(
    g: &Geom,
    xf: &[f32],
    w: &[f32],
    bias: f32,
    bs: &[usize],
    n: usize,
    a: usize,
    out: &mut [f32],
) {
    plane_of::<Fused>(g, xf, w, bias, bs, n, a, out)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn plane_of<M: Madd>(
    g: &Geom,
    xf: &[f32],
    w: &[f32],
    bias: f32,
    bs: &[usize],
    n: usize,
    a: usize,
    out: &mut [f32],
) {
    let [od, oh, ow] = g.yd;
    let [d, h, wd] = g.xd;
    let [kd, kh, kw] = g.k;
    let (hp, wp) = (h + 2 * g.p[1], wd + 2 * g.p[2]);
    let slice = hp * wp;
    let len = (oh - 1) * wp + ow;
    let ksz = g.ksz();
    let mut acc = vec![0f32; len];
    for z in 0..od {
        acc.fill(0.0);
        for &b in bs {
            let wk = &w[(a * g.b + b) * ksz..][..ksz];
            for ka in 0..kd {
                let Some(iz) = (z * g.s[0] + ka).checked_sub(g.p[0]).filter(|&i| i < d) else {
                    continue;
                };
                let xs = &xf[((n * g.b + b) * d + iz) * slice..][..slice];
                for kb in 0..kh {
                    let wr = &wk[(ka * kh + kb) * kw..][..kw];
                    let xr = &xs[kb * wp..];
                    if kw == 3 {
                        axpy3::<M>(&mut acc, [wr[0], wr[1], wr[2]], xr, &xr[1..], &xr[2..]);
                    } else {
                        for (c, &wv) in wr.iter().enumerate() {
                            axpy::<M>(&mut acc, wv, &xr[c..]);
                        }
                    }
                }
            }
        }
        let dst = &mut out[z * oh * ow..][..oh * ow];
        for (yy, row) in dst.chunks_exact_mut(ow).enumerate() {
            for (o, &v) in row.iter_mut().zip(&acc[yy * wp..][..ow]) {
                *o = v + bias;
            }
        }
    }
}
