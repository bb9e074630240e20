//! Shared machinery of the kernel benchmarks (`benches/conv.rs`, `benches/kernels.rs`, which
//! include this file with `#[path]`): measured peaks, laying out and emitting one node's
//! kernels, timing each kernel on 1 or more threads, and the closing summary table (and JSON).
//!
//! Peaks, all measured in this process by small C functions compiled with `cc`:
//! - fp32 FMA (per ISA): 12 independent `vfmadd` chains at the ISA's vector width on one core,
//!   2 FLOP per lane, best of 7 runs of `E2ENC_BENCH_PEAK_ITERS` (default 2e7) iterations; the
//!   `t`-thread peak is `t` times the one-core peak;
//! - memory bandwidth: the better of a streaming copy `b[i] = a[i] * s` (two arrays of
//!   `E2ENC_BENCH_STREAM_MB` MiB, default 128) and an in-place `a[i] *= s` (as the norm apply
//!   runs), bytes read + written (a copy's read for ownership of its destination not counted,
//!   as in the kernels' byte counts), best of 5, on 1 and on 2 threads (halves of the arrays);
//! - bf16 (`_mm512_dpbf16_ps`, 64 FLOP per instruction) and int8 VNNI (`_mm512_dpbusd_epi32`,
//!   128 OP per instruction), 16 independent chains on one core, where the host has
//!   `avx512bf16` / `avx512vnni` (run-time detection). They are references for kernels of those
//!   precisions; none exist yet.
//!
//! Every kernel is reported either as compute (GFLOP/s from [`Kernel::flops`], % of the FMA
//! peak) or as memory-bound (GB/s from the bytes its shapes make it read and write, % of the
//! bandwidth measured on as many threads), see [`Metric`].

#![allow(dead_code)]

use std::time::Instant;

use e2enc_codegen::c;
use e2enc_codegen::emit::{Consts, Kernel, NodeCtx};
use e2enc_codegen::layout::View;
use e2enc_codegen::target::Target;
use e2enc_ir::{shape, Op, Tensor, TensorType};

use crate::harness::{self, noise, Arena};

/// An environment knob parsed as `T`, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The host's load averages (`/proc/loadavg`, first three fields), for the record.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

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
                "peak bf16 (_mm512_dpbf16_ps, 64 FLOP each, 1 core): {p:.1} GFLOP/s; \
                 no bf16 kernels exist yet"
            ),
            None => println!("peak bf16: this host lacks avx512bf16; no bf16 kernels exist yet"),
        }
        let vnni = vnni_peak();
        match vnni {
            Some(p) => println!(
                "peak int8 (_mm512_dpbusd_epi32, 128 OP each, 1 core): {p:.1} GOP/s; \
                 no int8 kernels exist yet"
            ),
            None => println!("peak int8: this host lacks avx512vnni; no int8 kernels exist yet"),
        }
        Peaks { bw, bf16, vnni }
    }

    /// The bandwidth reference for `threads` threads (the 2-thread one beyond 2).
    pub fn bw_for(&self, threads: usize) -> f64 {
        self.bw[threads.clamp(1, 2) - 1]
    }
}

/// How a kernel's rate is counted.
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    /// Floating-point operations (2 per MAC): GFLOP/s against the FMA peak.
    Flops(u64),
    /// Bytes read + written: GB/s against the measured bandwidth.
    Bytes(u64),
}

/// One node's kernels, laid out in an arena of `arena` floats.
pub struct Bench {
    pub case: String,
    /// Each kernel with its kind (`conv`, `norm_reduce`, `norm_apply`, `max_pool`, ...) and
    /// how its rate is counted.
    pub kernels: Vec<(Kernel, String, Metric)>,
    pub arena: usize,
    pub inputs: Vec<View>,
    pub output: View,
}

/// The kind of a kernel: what its `what` says after the node's label (`conv ...` -> `conv`,
/// `norm apply` -> `norm_apply`, `max_pool` -> `max_pool`).
pub fn kind_of(k: &Kernel, label: &str) -> String {
    let w = k.what.strip_prefix(label).unwrap_or(&k.what).trim();
    let mut words = w.split_whitespace();
    match words.next() {
        Some("norm") => format!("norm_{}", words.next().unwrap_or("")),
        Some(first) => first.to_string(),
        None => "kernel".into(),
    }
}

/// Padded planes (`d_stride` floats each) of a view, in bytes.
pub fn plane_bytes(v: &View, planes: usize) -> u64 {
    (planes * v.d_stride * 4) as u64
}

/// Bytes a memory-bound kernel of `kind` moves, from the shapes: every padded plane it reads
/// and every one it writes, counted once each (the padding columns share the rows' cache lines;
/// the norm reduce reads its partial sums and writes a (mean, scale) pair per channel).
pub fn bytes_of(kind: &str, op: &Op, inputs: &[View], y: &View, scratch_elems: usize) -> u64 {
    let [n, c, d, _, _] = y.shape;
    let out = plane_bytes(y, n * c * d);
    match (kind, op) {
        ("norm_reduce", _) => {
            let nc = n * c;
            (scratch_elems - 2 * nc) as u64 * 4 + (nc * 8) as u64
        }
        ("max_pool", Op::MaxPool3d(a)) => {
            plane_bytes(&inputs[0], n * c * d * a.kernel[0].min(a.stride[0])) + out
        }
        // In place (the conv's output): each plane read and written once.
        ("norm_apply", _) => 2 * out,
        // Copies and elementwise ops: one plane read per input, one written.
        _ => {
            inputs
                .iter()
                .map(|x| plane_bytes(x, n * x.shape[1] * d))
                .sum::<u64>()
                + out
        }
    }
}

/// Lays out `op` on activations of shapes `acts` and constants `cs` in a fresh arena and emits
/// its kernels for `isa` (constants into `consts`).
pub fn emit_case(
    case: &str,
    op: Op,
    acts: &[[usize; 5]],
    cs: &[Tensor],
    consts: &mut Consts,
    isa: Target,
) -> Bench {
    let mut tys: Vec<TensorType> = acts.iter().map(|s| TensorType::f32(s.to_vec())).collect();
    tys.extend(cs.iter().map(|t| t.ty()));
    let refs: Vec<&TensorType> = tys.iter().collect();
    let out_ty = shape::infer(&op, &refs).unwrap();
    let ys: [usize; 5] = out_ty.shape.clone().try_into().unwrap();
    let mut at = 0;
    let inputs: Vec<View> = acts
        .iter()
        .map(|s| {
            let v = View::padded(at, *s);
            at = v.end().div_ceil(16) * 16;
            v
        })
        .collect();
    let output = View::padded(at, ys);
    let scratch = output.end().div_ceil(16) * 16;
    let scratch_n = c::scratch_elems(&op, &tys, &out_ty);
    let ctx = NodeCtx {
        node: e2enc_ir::NodeId(Default::default()),
        prefix: case.to_string(),
        op: &op,
        label: case.to_string(),
        inputs: inputs.clone(),
        consts: cs.iter().collect(),
        output: output.clone(),
        scratch,
        channel_map: None,
        isa,
    };
    let kernels = c::emit(&ctx, consts)
        .unwrap_or_else(|e| panic!("emit {case}: {e}"))
        .into_iter()
        .map(|k| {
            let kind = kind_of(&k, case);
            let metric = if kind == "conv" {
                Metric::Flops(k.flops)
            } else {
                Metric::Bytes(bytes_of(&kind, &op, &inputs, &output, scratch_n))
            };
            (k, kind, metric)
        })
        .collect();
    Bench {
        case: case.to_string(),
        kernels,
        arena: scratch + scratch_n,
        inputs,
        output,
    }
}

/// A fresh arena for `b`: input planes hold pseudo-random values (one per plane, padding zero).
pub fn arena_for(b: &Bench) -> Arena {
    let mut a = Arena::new(b.arena, 0.0);
    let s = a.as_mut_slice();
    for (i, v) in b.inputs.iter().enumerate() {
        let [_, cin, dd, h, w] = v.shape;
        let x = noise(&[cin * dd], 3 + i as u64);
        let xv = x.as_f32().unwrap();
        for c in 0..cin {
            for z in 0..dd {
                for y in 0..h {
                    let r = v.at(0, c, z, y as isize, 0);
                    s[r..r + w].fill(xv[c * dd + z]);
                }
            }
        }
    }
    a
}

/// Runs kernel `f` over its `tiles` on `threads` threads (interleaved chunks of 4 tiles; one
/// thread is the caller) and returns the seconds from the release of a barrier all threads wait
/// at to the last thread's end, so that spawning and joining threads (tens of microseconds, as
/// much as a small kernel takes) are not counted, as in the runtime's pool.
pub fn time_kernel(
    f: harness::KernelFn,
    tiles: usize,
    a: &mut Arena,
    consts: &Consts,
    threads: usize,
) -> f64 {
    let ptr = a.ptr() as usize;
    let tiles = tiles as i64;
    let chunk = 4i64;
    let work = move |th: i64| {
        let mut t0 = th * chunk;
        while t0 < tiles {
            let t1 = (t0 + chunk).min(tiles);
            unsafe {
                f(
                    ptr as *mut f32,
                    consts.f32.as_ptr(),
                    consts.i32.as_ptr(),
                    t0,
                    t1,
                )
            };
            t0 += chunk * threads as i64;
        }
        Instant::now()
    };
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let others: Vec<_> = (1..threads as i64)
            .map(|th| {
                let b = &barrier;
                s.spawn(move || {
                    b.wait();
                    work(th)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut end = work(0);
        for h in others {
            end = end.max(h.join().unwrap());
        }
        (end - start).as_secs_f64()
    })
}

/// One measured kernel.
#[derive(Clone, Debug)]
pub struct Row {
    pub case: String,
    pub kind: String,
    pub isa: String,
    pub threads: usize,
    pub secs: f64,
    /// GFLOP/s or GB/s.
    pub rate: f64,
    pub unit: &'static str,
    /// Percent of `peak` (GFLOP/s or GB/s).
    pub pct: f64,
    pub peak: f64,
    /// Which peak: `fma` or `bw`.
    pub of: &'static str,
}

/// Times every kernel of `b` (run in order, each on its own clock, best of `reps`) on each
/// thread count, prints one line per (kernel, threads) and appends the rows.
#[allow(clippy::too_many_arguments)]
pub fn run_bench(
    lib: &harness::Lib,
    b: &Bench,
    consts: &Consts,
    isa: Target,
    fma1: f64,
    peaks: &Peaks,
    reps: usize,
    rows: &mut Vec<Row>,
) {
    let mut a = arena_for(b);
    // Warm-up: the first pass faults the output and scratch pages in.
    for (k, _, _) in &b.kernels {
        time_kernel(lib.get(&k.name), k.tiles, &mut a, consts, 2);
    }
    for threads in [1, 2] {
        let mut best = vec![f64::MAX; b.kernels.len()];
        for _ in 0..reps {
            for (i, (k, _, _)) in b.kernels.iter().enumerate() {
                let t = time_kernel(lib.get(&k.name), k.tiles, &mut a, consts, threads);
                best[i] = best[i].min(t);
            }
        }
        for ((_, kind, metric), secs) in b.kernels.iter().zip(best) {
            let (rate, unit, peak, of) = match *metric {
                Metric::Flops(f) => (
                    f as f64 / secs / 1e9,
                    "GFLOP/s",
                    fma1 * threads as f64,
                    "fma",
                ),
                Metric::Bytes(by) => (by as f64 / secs / 1e9, "GB/s", peaks.bw_for(threads), "bw"),
            };
            let row = Row {
                case: b.case.clone(),
                kind: kind.clone(),
                isa: isa.to_string(),
                threads,
                secs,
                rate,
                unit,
                pct: 100.0 * rate / peak,
                peak,
                of,
            };
            println!(
                "[{isa}] {:<14} {:<12} {threads} thread(s): {:9.2} ms {:8.1} {:<7} ({:.0}% of {})",
                row.case,
                row.kind,
                secs * 1e3,
                rate,
                unit,
                row.pct,
                peak_name(&row)
            );
            rows.push(row);
        }
    }
}

fn peak_name(r: &Row) -> String {
    match r.of {
        "fma" => format!("{}x FMA peak", r.threads),
        _ => format!("{}-thread bandwidth", r.threads),
    }
}

/// Prints the summary table of `rows` and, when `E2ENC_BENCH_JSON` is set, writes them there
/// as JSON (`{bench}` in the path is replaced by the bench's name).
pub fn summary(bench: &str, rows: &[Row], fma: &[(String, f64)], peaks: &Peaks) {
    println!("\nsummary ({bench}; load average {}):", load());
    println!(
        "{:<14} {:<12} {:<11} {:>3} {:>10} {:>9} {:<7} {:>6}  of",
        "case", "kind", "isa", "thr", "ms", "rate", "unit", "%peak"
    );
    for r in rows {
        println!(
            "{:<14} {:<12} {:<11} {:>3} {:>10.2} {:>9.1} {:<7} {:>5.0}%  {}",
            r.case,
            r.kind,
            r.isa,
            r.threads,
            r.secs * 1e3,
            r.rate,
            r.unit,
            r.pct,
            peak_name(r)
        );
    }
    let Ok(path) = std::env::var("E2ENC_BENCH_JSON") else {
        return;
    };
    let path = path.replace("{bench}", bench);
    let json = serde_json::json!({
        "bench": bench,
        "load": load(),
        "peaks": {
            "fma_gflops_1core": fma.iter().map(|(i, p)| (i.clone(), serde_json::json!(p)))
                .collect::<serde_json::Map<_, _>>(),
            "bandwidth_gbs": peaks.bw,
            "bf16_gflops_1core": peaks.bf16,
            "int8_gops_1core": peaks.vnni,
        },
        "rows": rows.iter().map(|r| serde_json::json!({
            "case": r.case, "kind": r.kind, "isa": r.isa, "threads": r.threads,
            "ms": r.secs * 1e3, "rate": r.rate, "unit": r.unit,
            "pct_of_peak": r.pct, "peak": r.peak, "peak_kind": r.of,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap() + "\n")
        .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    println!("wrote {path}");
}

/// The geometry of a conv case: (cin, cout, input [d, h, w], kernel, stride, padding,
/// transposed).
pub type Geo = (
    usize,
    usize,
    [usize; 3],
    [usize; 3],
    [usize; 3],
    [usize; 3],
    bool,
);

/// A `FusedConv3d` (bias, leaky ReLU 0.01) of geometry `geo` and its constants: dense weights,
/// or kernel-sparse at `density` (a fixed pseudo-random choice of live (out, in) kernels); the
/// input depth `shifts` runs; an instance norm (eps 1e-5) when `norm`.
pub fn conv_node(
    geo: Geo,
    density: Option<f64>,
    shifts: Vec<(i64, usize)>,
    norm: bool,
) -> (Op, [usize; 5], Vec<Tensor>) {
    let (cin, cout, [d, h, w], kernel, stride, padding, transposed) = geo;
    let kv: usize = kernel.iter().product();
    let attrs = e2enc_ir::FusedConvAttrs {
        conv: e2enc_ir::ConvAttrs {
            kernel,
            stride,
            padding,
        },
        transposed,
        shifts,
        sparse_out: density.map(|_| cout),
        bias: true,
        norm_eps: norm.then_some(1e-5),
        slope: Some(0.01),
    };
    let wshape = if transposed {
        [cin, cout, kernel[0], kernel[1], kernel[2]]
    } else {
        [cout, cin, kernel[0], kernel[1], kernel[2]]
    };
    let dense = noise(&wshape, 7);
    let mut ts: Vec<Tensor> = Vec::new();
    match density {
        None => ts.push(dense),
        Some(p) => {
            let dv = dense.as_f32().unwrap();
            let (mut rows, mut packed) = (Vec::new(), Vec::new());
            let mut s = 12345u64;
            for o in 0..cout {
                for i in 0..cin {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if ((s >> 33) as f64 / (1u64 << 31) as f64) < p {
                        rows.extend([o as i32, i as i32]);
                        let k = if transposed {
                            i * cout + o
                        } else {
                            o * cin + i
                        };
                        packed.extend_from_slice(&dv[k * kv..][..kv]);
                    }
                }
            }
            let n = rows.len() / 2;
            ts.push(Tensor::from_f32(vec![n, kernel[0], kernel[1], kernel[2]], packed).unwrap());
            ts.push(Tensor::from_i32(vec![n, 2], rows).unwrap());
        }
    }
    ts.push(noise(&[cout], 8));
    if norm {
        let gamma: Vec<f32> = (0..cout).map(|i| 1.0 + 0.01 * i as f32).collect();
        ts.push(Tensor::from_f32(vec![cout], gamma).unwrap());
        ts.push(noise(&[cout], 9));
    }
    (Op::FusedConv3d(attrs), [1, cin, d, h, w], ts)
}

/// The driver of a bench binary: returns at once without `--bench` (`cargo test
/// --all-targets` runs bench binaries that way); otherwise measures the peaks, then for each
/// ISA of `E2ENC_BENCH_ISA` emits the cases `cases(isa, depth, consts, wanted)` returns
/// (`wanted(name)` applies `E2ENC_BENCH_ONLY`), compiles them with the ISA's flags, times every
/// kernel, and prints the summary.
pub fn main_with(
    bench: &str,
    cases: impl Fn(Target, usize, &mut Consts, &dyn Fn(&str) -> bool) -> Vec<Bench>,
) {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{bench} benchmark: run it with `cargo bench -p e2enc-codegen --bench {bench}`");
        return;
    }
    println!("{bench} benchmark; load average {}", load());
    let d: usize = env_or("E2ENC_BENCH_D", 32);
    let reps: usize = env_or("E2ENC_BENCH_REPS", 3);
    let only = std::env::var("E2ENC_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());
    let isas = std::env::var("E2ENC_BENCH_ISA").unwrap_or_else(|_| "avx2,avx512".into());
    let peaks = Peaks::measure();
    let mut rows = Vec::new();
    let mut fma = Vec::new();
    for name in isas.split(',') {
        let isa: Target = name.trim().parse().unwrap();
        if !isa.host_supports() {
            println!("skipping {isa}: this host lacks it");
            continue;
        }
        let default_flags = format!("-O2 {}", isa.machine_flags().join(" "));
        let flags_s = std::env::var("E2ENC_BENCH_CFLAGS").unwrap_or(default_flags);
        let flags: Vec<&str> = flags_s.split_whitespace().collect();
        let fma1 = fma_peak(isa, &flags);
        fma.push((isa.to_string(), fma1));
        println!(
            "[{isa}] peak fp32 ({}-bit FMA, 1 core): {fma1:.1} GFLOP/s  [flags: {flags_s}]",
            32 * isa.lanes()
        );
        let mut consts = Consts::default();
        let benches = cases(isa, d, &mut consts, &wanted);
        let ks: Vec<&Kernel> = benches
            .iter()
            .flat_map(|b| b.kernels.iter().map(|k| &k.0))
            .collect();
        let lib = harness::compile_for(&ks, &flags, isa).unwrap();
        for b in &benches {
            run_bench(&lib, b, &consts, isa, fma1, &peaks, reps, &mut rows);
        }
    }
    summary(bench, &rows, &fma, &peaks);
}
