//! This host's measured f32 FMA peak, so `e2enc bench` can say how close a bundle runs to the
//! machine's limit (`% of peak`) instead of leaving the reader to look up a datasheet (a VM's
//! clock, the vector unit's width and whether 512-bit FMAs are double-pumped all differ).
//!
//! The measurement is the one a micro-benchmark would make: on each of `threads` threads at
//! once, 12 independent FMA chains of the widest vectors the bundle's target uses (AVX-512 `zmm`,
//! AVX2 `ymm`, NEON `q` registers) for a fixed number of iterations; each thread's FMAs over its
//! own time (2 FLOP per lane), summed over the threads, best of 4 rounds. It takes about a
//! quarter of a second. It is a measurement, as noisy as the machine (on this project's shared
//! VMs the clock itself moves with the neighbours' load), so `bench` prints it beside the
//! bundle's numbers from the same run. Targets without a known vector unit (portable C) and
//! CUDA bundles get none.

use std::time::Instant;

/// The measured f32 FMA peak of `threads` threads at vectors of `target`'s width, in GFLOP/s,
/// or `None` where this host cannot run the target's vectors or the target has none.
pub fn fma_peak_gflops(target: &str, threads: usize) -> Option<f64> {
    Some(best_rate(kernel_for(target)?, threads))
}

/// The measured `vdpbf16ps` peak (bf16 pairs, f32 sums; 2 FLOP per multiply) of `threads`
/// threads, in GFLOP/s: what the bf16 convs of a `--precision bf16` x86-avx512 bundle are held
/// to. `None` where the host lacks `avx512_bf16`.
pub fn bf16_peak_gflops(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let has = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16");
        has.then(|| best_rate(x86::dpbf16, threads))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// The measured `vpdpbusd` peak (u8 x i8 quadruples, i32 sums; 2 operations per multiply) of
/// `threads` threads, in GOP/s: what the int8 convs of a `--precision int8` x86-avx512 bundle
/// are held to. `None` where the host lacks `avx512_vnni`.
pub fn int8_peak_gops(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let has = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni");
        has.then(|| best_rate(x86::dpbusd, threads))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// `kernel`'s rate on `threads` threads in G per second: a short warm-up (clocks ramp), then
/// the best of 4 rounds (a thread started late or preempted for a moment would otherwise lower
/// the figure).
fn best_rate(kernel: Kernel, threads: usize) -> f64 {
    run(kernel, threads.max(1), 2_000_000);
    let best = (0..4)
        .map(|_| run(kernel, threads.max(1), 12_000_000))
        .fold(0.0, f64::max);
    best / 1e9
}

/// One thread's loop: `iters` rounds of 12 FMAs; returns the FLOPs done (and a value the
/// optimizer cannot drop).
type Kernel = fn(u64) -> (f64, f32);

/// FLOP/s of `threads` threads running `kernel` at once: each thread times its own loop, and
/// the rates add up (thread start-up skew does not count against the machine).
fn run(kernel: Kernel, threads: usize, iters: u64) -> f64 {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let t0 = Instant::now();
                    let (f, sink) = kernel(iters);
                    std::hint::black_box(sink);
                    f / t0.elapsed().as_secs_f64().max(1e-9)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}

#[allow(unreachable_code)]
fn kernel_for(target: &str) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::arch::is_x86_feature_detected!("fma");
        return match target {
            "x86-avx512" if std::arch::is_x86_feature_detected!("avx512f") => Some(x86::zmm),
            "x86-avx2" if fma && std::arch::is_x86_feature_detected!("avx2") => Some(x86::ymm),
            _ => None,
        };
    }
    #[cfg(target_arch = "aarch64")]
    {
        return (target == "aarch64-neon").then_some(arm::q as Kernel);
    }
    let _ = target;
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub fn zmm(iters: u64) -> (f64, f32) {
        // SAFETY: chosen only where `avx512f` was detected.
        unsafe { zmm_inner(iters) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn zmm_inner(iters: u64) -> (f64, f32) {
        let x = _mm512_set1_ps(0.999_9);
        let y = _mm512_set1_ps(1e-4);
        let mut a = [_mm512_setzero_ps(); 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = _mm512_set1_ps(i as f32 * 1e-3);
        }
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm512_fmadd_ps(*v, x, y);
            }
        }
        let mut s = a[0];
        for v in &a[1..] {
            s = _mm512_add_ps(s, *v);
        }
        (iters as f64 * 12.0 * 32.0, _mm512_reduce_add_ps(s))
    }

    pub fn dpbf16(iters: u64) -> (f64, f32) {
        // SAFETY: chosen only where `avx512f` and `avx512bf16` were detected.
        unsafe { dpbf16_inner(iters) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dpbf16_inner(iters: u64) -> (f64, f32) {
        let x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
        let y = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(-1e-3));
        let mut a = [_mm512_setzero_ps(); 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = _mm512_set1_ps(i as f32 * 1e-3);
        }
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, x, y);
            }
        }
        let mut s = a[0];
        for v in &a[1..] {
            s = _mm512_add_ps(s, *v);
        }
        // 32 multiplies and 32 adds per instruction.
        (iters as f64 * 12.0 * 64.0, _mm512_reduce_add_ps(s))
    }

    pub fn dpbusd(iters: u64) -> (f64, f32) {
        // SAFETY: chosen only where `avx512f` and `avx512vnni` were detected.
        unsafe { dpbusd_inner(iters) }
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dpbusd_inner(iters: u64) -> (f64, f32) {
        let x = _mm512_set1_epi32(0x0102_0304);
        let y = _mm512_set1_epi32(0x01ff_01ff);
        let mut a = [_mm512_setzero_si512(); 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = _mm512_set1_epi32(i as i32);
        }
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm512_dpbusd_epi32(*v, x, y);
            }
        }
        let mut s = a[0];
        for v in &a[1..] {
            s = _mm512_add_epi32(s, *v);
        }
        // 64 multiplies and 64 adds per instruction.
        (
            iters as f64 * 12.0 * 128.0,
            _mm512_reduce_add_epi32(s) as f32,
        )
    }

    pub fn ymm(iters: u64) -> (f64, f32) {
        // SAFETY: chosen only where `avx2` and `fma` were detected.
        unsafe { ymm_inner(iters) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn ymm_inner(iters: u64) -> (f64, f32) {
        let x = _mm256_set1_ps(0.999_9);
        let y = _mm256_set1_ps(1e-4);
        let mut a = [_mm256_setzero_ps(); 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = _mm256_set1_ps(i as f32 * 1e-3);
        }
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm256_fmadd_ps(*v, x, y);
            }
        }
        let mut s = a[0];
        for v in &a[1..] {
            s = _mm256_add_ps(s, *v);
        }
        let mut o = [0f32; 8];
        _mm256_storeu_ps(o.as_mut_ptr(), s);
        (iters as f64 * 12.0 * 16.0, o.iter().sum())
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    pub fn q(iters: u64) -> (f64, f32) {
        // SAFETY: NEON is part of the aarch64 baseline.
        unsafe {
            let x = vdupq_n_f32(0.999_9);
            let y = vdupq_n_f32(1e-4);
            let mut a = [vdupq_n_f32(0.0); 12];
            for (i, v) in a.iter_mut().enumerate() {
                *v = vdupq_n_f32(i as f32 * 1e-3);
            }
            for _ in 0..iters {
                for v in a.iter_mut() {
                    *v = vfmaq_f32(y, *v, x);
                }
            }
            let mut s = a[0];
            for v in &a[1..] {
                s = vaddq_f32(s, *v);
            }
            (iters as f64 * 12.0 * 8.0, vaddvq_f32(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_peak_without_a_vector_unit() {
        assert!(fma_peak_gflops("portable", 1).is_none());
        assert!(fma_peak_gflops("cuda-sm90", 1).is_none());
    }

    #[test]
    fn int8_peak_is_positive_where_measurable() {
        if let Some(p) = int8_peak_gops(1) {
            assert!(p > 0.0 && p.is_finite(), "{p}");
        }
    }

    #[test]
    fn bf16_peak_is_positive_where_measurable() {
        if let Some(p) = bf16_peak_gflops(1) {
            assert!(p.is_finite() && p > 0.1, "{p}");
        }
    }

    #[test]
    fn host_peak_is_positive_where_measurable() {
        for t in ["x86-avx512", "x86-avx2", "aarch64-neon"] {
            if let Some(p) = fma_peak_gflops(t, 1) {
                assert!(p.is_finite() && p > 0.1, "{t}: {p}");
            }
        }
    }
}
