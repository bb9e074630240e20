//! The measured peaks the kernel benchmarks compare with, each a small C function compiled
//! with `cc` and run in this process.
//!
//! - fp32 FMA (per ISA): 12 independent `vfmadd` chains at the ISA's vector width on one core,
//!   2 FLOP per lane, best of 7 runs of `E2ENC_BENCH_PEAK_ITERS` (default 2e7) iterations; the
//!   `t`-thread peak is `t` times the one-core peak;
//! - memory bandwidth: the better of a streaming copy `b[i] = a[i] * s` (two arrays of
//!   `E2ENC_BENCH_STREAM_MB` MiB, default 128) and an in-place `a[i] *= s` (as the norm apply
//!   runs), bytes read + written (a copy's read for ownership of its destination not counted,
//!   as in the kernels' byte counts), best of 5, on 1 and on 2 threads (halves of the arrays);
//! - bf16 (`_mm512_dpbf16_ps`, 64 FLOP per instruction) and int8 VNNI (`_mm512_dpbusd_epi32`,
//!   128 OP per instruction), 16 independent chains on one core, where the host has
//!   `avx512bf16` / `avx512vnni` (run-time detection): the references of the `--precision bf16`
//!   and `--precision int8` conv kernels.

use std::time::Instant;

use e2enc_codegen::target::Target;

use super::env_or;
use crate::harness::Arena;

/// A compiled C file (kept alive with its directory).
pub struct CLib {
    lib: libloading::Library,
    _dir: tempfile::TempDir,
}

impl CLib {
    /// Compiles `src` with `cc flags -shared -fPIC`; `None` when cc refuses.
    pub fn build(src: &str, flags: &[&str]) -> Option<CLib> {
        let dir = tempfile::tempdir().ok()?;
        std::fs::write(dir.path().join("p.c"), src).ok()?;
        let so = dir.path().join("p.so");
        let out = std::process::Command::new("cc")
            .args(flags)
            .args(["-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(dir.path().join("p.c"))
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "peak kernel did not compile:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let lib = unsafe { libloading::Library::new(&so) }.ok()?;
        Some(CLib { lib, _dir: dir })
    }

    /// The function `name` of type `T` (a C function pointer type).
    pub fn get<T: Copy>(&self, name: &str) -> T {
        unsafe { *self.lib.get::<T>(name.as_bytes()).expect("peak symbol") }
    }
}

/// Best of `reps` timings of `f`, in seconds.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// A C function `double e2_peak(int64_t iters)` running `chains` independent chains of
/// `stmt` (with `a[i]` the accumulator) after `init`; returns a lane of the sum so nothing is
/// dead.
fn chain_c(v: &str, init: &str, stmt: &str, chains: usize, fold: &str) -> String {
    format!(
        r#"
#include <immintrin.h>
#include <stdint.h>
double e2_peak(int64_t iters) {{
    {v} a[{chains}];
    {init}
    for (int64_t k = 0; k < iters; k++) {{
#pragma GCC unroll {chains}
        for (int i = 0; i < {chains}; i++) {stmt};
    }}
    {fold}
}}
"#
    )
}

/// Runs `e2_peak` from `src` (compiled with `flags`) and returns its rate in G-ops/s, given
/// the ops of one loop iteration; `None` when it does not compile.
fn chain_peak(src: &str, flags: &[&str], ops_per_iter: f64) -> Option<f64> {
    let lib = CLib::build(src, flags)?;
    let f: unsafe extern "C" fn(i64) -> f64 = lib.get("e2_peak");
    let iters = env_or("E2ENC_BENCH_PEAK_ITERS", 20_000_000i64);
    let t = best_of(7, || {
        std::hint::black_box(unsafe { f(iters) });
    });
    Some(iters as f64 * ops_per_iter / t / 1e9)
}

/// One core's fp32 FMA peak at the vector width of `isa`, in GFLOP/s.
pub fn fma_peak(isa: Target, flags: &[&str]) -> f64 {
    let (v, p) = if isa.lanes() == 16 {
        ("__m512", "_mm512")
    } else {
        ("__m256", "_mm256")
    };
    let src = chain_c(
        v,
        &format!(
            "for (int i = 0; i < 12; i++) a[i] = {p}_set1_ps(0.001f * i);
    const {v} x = {p}_set1_ps(0.9999f), y = {p}_set1_ps(0.0001f);"
        ),
        &format!("a[i] = {p}_fmadd_ps(a[i], x, y)"),
        12,
        &format!(
            "{v} s = a[0];
    for (int i = 1; i < 12; i++) s = {p}_add_ps(s, a[i]);
    float o[16];
    {p}_storeu_ps(o, s);
    return o[0];"
        ),
    );
    chain_peak(&src, flags, (12 * 2 * isa.lanes()) as f64).expect("the FMA peak compiles")
}

/// Whether this host has an x86 feature (run-time detection; false elsewhere).
pub fn host_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "avx512bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

/// One core's bf16 dot-product peak (`_mm512_dpbf16_ps`: 16 lanes x 2 pairs x 2 FLOP), in
/// GFLOP/s; `None` without `avx512bf16`.
pub fn bf16_peak() -> Option<f64> {
    if !host_has("avx512bf16") {
        return None;
    }
    let src = chain_c(
        "__m512",
        "for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps(0.001f * i);
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x38003800);",
        "a[i] = _mm512_dpbf16_ps(a[i], x, y)",
        16,
        "__m512 s = a[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, a[i]);
    float o[16];
    _mm512_storeu_ps(o, s);
    return o[0];",
    );
    chain_peak(&src, &["-O2", "-mavx512f", "-mavx512bf16"], 16.0 * 64.0)
}

/// One core's int8 VNNI peak (`_mm512_dpbusd_epi32`: 16 lanes x 4 u8*s8 x 2 OP), in GOP/s;
/// `None` without `avx512vnni`.
pub fn vnni_peak() -> Option<f64> {
    if !host_has("avx512vnni") {
        return None;
    }
    let src = chain_c(
        "__m512i",
        "for (int i = 0; i < 16; i++) a[i] = _mm512_set1_epi32(i);
    const __m512i x = _mm512_set1_epi32(0x01020304), y = _mm512_set1_epi32(0x01ff01ff);",
        "a[i] = _mm512_dpbusd_epi32(a[i], x, y)",
        16,
        "__m512i s = a[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_epi32(s, a[i]);
    int32_t o[16];
    _mm512_storeu_si512(o, s);
    return o[0];",
    );
    chain_peak(&src, &["-O2", "-mavx512f", "-mavx512vnni"], 16.0 * 128.0)
}

const STREAM_C: &str = r#"
#include <immintrin.h>
#include <stdint.h>
/* b[i] = a[i] * s: a copy (b's lines are read for ownership before they are written). */
void e2_copy(const float *a, float *b, int64_t n) {
    const __m256 s = _mm256_set1_ps(1.0001f);
    for (int64_t i = 0; i < n; i += 32) {
        __m256 u0 = _mm256_loadu_ps(a + i), u1 = _mm256_loadu_ps(a + i + 8);
        __m256 u2 = _mm256_loadu_ps(a + i + 16), u3 = _mm256_loadu_ps(a + i + 24);
        _mm256_storeu_ps(b + i, _mm256_mul_ps(u0, s));
        _mm256_storeu_ps(b + i + 8, _mm256_mul_ps(u1, s));
        _mm256_storeu_ps(b + i + 16, _mm256_mul_ps(u2, s));
        _mm256_storeu_ps(b + i + 24, _mm256_mul_ps(u3, s));
    }
}
/* a[i] = a[i] * s: in place, as the norm apply runs. */
void e2_inplace(const float *a, float *b, int64_t n) {
    (void)a;
    const __m256 s = _mm256_set1_ps(0.9999f);
    for (int64_t i = 0; i < n; i += 32) {
        __m256 u0 = _mm256_loadu_ps(b + i), u1 = _mm256_loadu_ps(b + i + 8);
        __m256 u2 = _mm256_loadu_ps(b + i + 16), u3 = _mm256_loadu_ps(b + i + 24);
        _mm256_storeu_ps(b + i, _mm256_mul_ps(u0, s));
        _mm256_storeu_ps(b + i + 8, _mm256_mul_ps(u1, s));
        _mm256_storeu_ps(b + i + 16, _mm256_mul_ps(u2, s));
        _mm256_storeu_ps(b + i + 24, _mm256_mul_ps(u3, s));
    }
}
"#;

/// Streaming read + write bandwidth of `e2_copy` (`b = a * s`, two arrays) and `e2_inplace`
/// (`b *= s`) over `E2ENC_BENCH_STREAM_MB` MiB arrays, in GB/s (bytes read + written, the
/// copy's read for ownership not counted), each on 1 and on 2 threads (halves of the arrays),
/// best of 5: `[[copy 1, copy 2], [in place 1, in place 2]]`.
pub fn mem_peak() -> [[f64; 2]; 2] {
    let lib = CLib::build(STREAM_C, &["-O2", "-mavx2", "-mfma"]).expect("the stream compiles");
    let mb: usize = env_or("E2ENC_BENCH_STREAM_MB", 128);
    let n = (mb << 20) / 4 / 64 * 64;
    let mut a = Arena::new(n, 1.0);
    let mut b = Arena::new(n, 0.0);
    let (pa, pb) = (a.ptr() as usize, b.ptr() as usize);
    let mut out = [[0.0; 2]; 2];
    for (j, name) in ["e2_copy", "e2_inplace"].into_iter().enumerate() {
        let f: unsafe extern "C" fn(*const f32, *mut f32, i64) = lib.get(name);
        // Warm-up (faults the pages of `b` in), then 1 and 2 threads.
        for (i, threads) in [(0usize, 2usize), (0, 1), (1, 2)] {
            let part = n / threads;
            let t = best_of(5, || {
                std::thread::scope(|s| {
                    for th in 1..threads {
                        s.spawn(move || unsafe {
                            f(
                                (pa as *const f32).add(th * part),
                                (pb as *mut f32).add(th * part),
                                part as i64,
                            )
                        });
                    }
                    unsafe { f(pa as *const f32, pb as *mut f32, part as i64) };
                });
            });
            out[j][i] = (n * 8) as f64 / t / 1e9;
        }
    }
    out
}

/// The measured peaks the rows are compared with.
pub struct Peaks {
    /// Memory bandwidth on 1 and 2 threads, GB/s.
    pub bw: [f64; 2],
    pub bf16: Option<f64>,
    pub vnni: Option<f64>,
}

impl Peaks {
    /// Measures (and prints) the ISA-independent peaks.
    pub fn measure() -> Peaks {
        let [copy, inplace] = mem_peak();
        let mb: usize = env_or("E2ENC_BENCH_STREAM_MB", 128);
        println!(
            "memory bandwidth (read + written bytes, {mb} MiB arrays, best of 5): copy b = a * s \
             {:.1} GB/s on 1 thread, {:.1} on 2; in place a *= s {:.1} GB/s on 1 thread, {:.1} \
             on 2",
            copy[0], copy[1], inplace[0], inplace[1]
        );
        let bw = [copy[0].max(inplace[0]), copy[1].max(inplace[1])];
        println!(
            "peak memory bandwidth (the better of the two): {:.1} GB/s on 1 thread, {:.1} GB/s \
             on 2 threads",
            bw[0], bw[1]
        );
        let bf16 = bf16_peak();
        match bf16 {
            Some(p) => println!(
                "peak bf16 (_mm512_dpbf16_ps, 64 FLOP each, 1 core): {p:.1} GFLOP/s \
                 (the `avx512+bf16` variant's bf16 convs are held to it)"
            ),
            None => println!("peak bf16: this host lacks avx512bf16; bf16 kernels not run"),
        }
        let vnni = vnni_peak();
        match vnni {
            Some(p) => {
                println!("peak int8 (_mm512_dpbusd_epi32, 128 OP each, 1 core): {p:.1} GOP/s")
            }
            None => println!("peak int8: this host lacks avx512vnni"),
        }
        Peaks { bw, bf16, vnni }
    }

    /// The bandwidth reference for `threads` threads (the 2-thread one beyond 2).
    pub fn bw_for(&self, threads: usize) -> f64 {
        self.bw[threads.clamp(1, 2) - 1]
    }
}
