//! The multiply-add flavour the hot loops are compiled with, and the run-time CPU check.
//!
//! Hot loop bodies are generic over [`Madd`] and `#[inline(always)]`, and each is instantiated
//! twice: with [`Plain`] (`a * b + c`, the portable path, SSE2 on x86-64) and with [`Fused`]
//! (`mul_add`) inside a `#[target_feature(enable = "avx2,fma")]` wrapper, which LLVM vectorizes
//! with 8-wide FMAs. [`use_fma`] picks the wrapper once per process.

use std::sync::OnceLock;

/// `a * b + c`, fused or not.
pub(crate) trait Madd {
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

/// Separate multiply and add (portable).
pub(crate) struct Plain;

impl Madd for Plain {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// One fused multiply-add; only used inside functions compiled with the `fma` feature (elsewhere
/// `mul_add` would be a slow library call).
pub(crate) struct Fused;

impl Madd for Fused {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Whether this CPU runs the AVX2 + FMA instantiations (checked once).
pub(crate) fn use_fma() -> bool {
    static FMA: OnceLock<bool> = OnceLock::new();
    *FMA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `acc[j] += w * x[j]` over `acc` (`x` at least as long).
#[inline(always)]
pub(crate) fn axpy<M: Madd>(acc: &mut [f32], w: f32, x: &[f32]) {
    let x = &x[..acc.len()];
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = M::madd(w, v, *a);
    }
}

/// `acc[j] += w0 * x0[j] + w1 * x1[j] + w2 * x2[j]`: three taps in one pass over `acc`.
#[inline(always)]
pub(crate) fn axpy3<M: Madd>(acc: &mut [f32], w: [f32; 3], x0: &[f32], x1: &[f32], x2: &[f32]) {
    let n = acc.len();
    let (x0, x1, x2) = (&x0[..n], &x1[..n], &x2[..n]);
    for j in 0..n {
        acc[j] = M::madd(
            w[2],
            x2[j],
            M::madd(w[1], x1[j], M::madd(w[0], x0[j], acc[j])),
        );
    }
}

/// `acc[j] += d[j] * x[j]` over `acc` (elementwise products kept apart for a later reduction).
#[inline(always)]
pub(crate) fn mul_acc<M: Madd>(acc: &mut [f32], d: &[f32], x: &[f32]) {
    let n = acc.len();
    let (d, x) = (&d[..n], &x[..n]);
    for j in 0..n {
        acc[j] = M::madd(d[j], x[j], acc[j]);
    }
}

/// Three [`mul_acc`]s sharing one pass over `d`: `aK[j] += d[j] * xK[j]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn mul_acc3<M: Madd>(
    a0: &mut [f32],
    a1: &mut [f32],
    a2: &mut [f32],
    d: &[f32],
    x0: &[f32],
    x1: &[f32],
    x2: &[f32],
) {
    let n = a0.len();
    let (a1, a2, d) = (&mut a1[..n], &mut a2[..n], &d[..n]);
    let (x0, x1, x2) = (&x0[..n], &x1[..n], &x2[..n]);
    for j in 0..n {
        let dj = d[j];
        a0[j] = M::madd(dj, x0[j], a0[j]);
        a1[j] = M::madd(dj, x1[j], a1[j]);
        a2[j] = M::madd(dj, x2[j], a2[j]);
    }
}
