//! Shared machinery of the kernel benchmarks (`benches/conv.rs`, `benches/kernels.rs`, which
//! include this file with `#[path]`): measured peaks, laying out and emitting one node's
//! kernels, timing each kernel on 1 or more threads, and the closing summary table (and JSON).
//!
//! Peaks are measured in this process (`peaks.rs`).
//!
//! Every kernel is reported either as compute (GFLOP/s from [`Kernel::flops`], % of the FMA
//! peak) or as memory-bound (GB/s from the bytes its shapes make it read and write, % of the
//! bandwidth measured on as many threads), see [`Metric`].

#![allow(dead_code)]

use std::time::Instant;

use e2enc_codegen::c;
use e2enc_codegen::emit::{Consts, Kernel, NodeCtx};
use e2enc_codegen::layout::View;
use e2enc_codegen::precision::Precision;
use e2enc_codegen::target::Target;
use e2enc_ir::{shape, Op, Tensor, TensorType};

use crate::harness::{self, noise, Arena};

mod peaks;
pub use peaks::*;

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
/// `up ...` (a transposed 2x2 conv) -> `conv_up`, `norm apply` -> `norm_apply`, `max_pool` ->
/// `max_pool`).
pub fn kind_of(k: &Kernel, label: &str) -> String {
    let w = k.what.strip_prefix(label).unwrap_or(&k.what).trim();
    let mut words = w.split_whitespace();
    match words.next() {
        Some("norm") => format!("norm_{}", words.next().unwrap_or("")),
        Some("up") if w.ends_with(" bf16") => "conv_up_bf16".into(),
        Some("up") if w.ends_with(" int8") => "conv_up_int8".into(),
        Some("up") => "conv_up".into(),
        Some("conv") if w.ends_with(" bf16") => "conv_bf16".into(),
        Some("conv") if w.ends_with(" int8") => "conv_int8".into(),
        Some(first) => first.to_string(),
        None => "kernel".into(),
    }
}

/// Padded planes (`d_stride` values each) of a view, in bytes.
pub fn plane_bytes(v: &View, planes: usize) -> u64 {
    (planes * v.d_stride * if v.is_bf16() { 2 } else { 4 }) as u64
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

thread_local! {
    /// The convolutions' precision of the variant being emitted (`E2ENC_BENCH_ISA` entries
    /// like `avx512+bf16`), set by [`main_with`] around its `cases` call.
    static PRECISION: std::cell::Cell<Precision> = const { std::cell::Cell::new(Precision::F32) };
    /// Whether the variant stores activations as bf16 (`E2ENC_BENCH_ISA` entries like
    /// `avx512+bf16@bf16`: what bf16 and int8 bundles do), set with [`PRECISION`].
    static STORE_BF16: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lays out `op` on activations of shapes `acts` and constants `cs` in a fresh arena and emits
/// its kernels for `isa` in the current variant's precision (constants into `consts`).
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
    let precision = PRECISION.with(|p| p.get());
    // bf16 views for the ops whose kernels read and write them (as a bundle's memory plan
    // stores them), f32 for the rest.
    let bf16 = STORE_BF16.with(|s| s.get())
        && matches!(
            op,
            Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) | Op::MaxPool3d(_)
        );
    let view = |at: usize, s: [usize; 5]| match bf16 {
        true => View::padded_bf16(at, s),
        false => View::padded(at, s),
    };
    // The arena offset (in floats) past a view, 16-aligned.
    let past = |v: &View| (if bf16 { v.end().div_ceil(2) } else { v.end() }).div_ceil(16) * 16;
    let mut at = 0;
    let inputs: Vec<View> = acts
        .iter()
        .map(|s| {
            let v = view(at, *s);
            at = past(&v);
            v
        })
        .collect();
    let output = view(at, ys);
    let scratch = past(&output);
    let own = c::scratch_elems(&op, &tys, &out_ty).div_ceil(16) * 16;
    // A normalized bf16 output's per-tile shifts follow the kernel's own scratch.
    let shifts = match bf16 {
        true => c::narrow_scratch(&op, &tys[0], &out_ty),
        false => 0,
    };
    let scratch_n = own + shifts;
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
        lag: None,
        ring: None,
        stream: None,
        ring_in: None,
        // int8: ranges of instance-normalized, leaky-ReLU'd activations for every channel.
        shift_at: (shifts > 0).then_some(scratch + own),
        act_ranges: (precision == Precision::Int8)
            .then(|| vec![[-1.0, 4.0]; acts.first().map_or(0, |s| s[1])]),
    };
    let kernels = c::emit_with(&ctx, consts, precision, bf16)
        .unwrap_or_else(|e| panic!("emit {case}: {e}"))
        .into_iter()
        .map(|k| {
            let kind = kind_of(&k, case);
            let metric = if kind.starts_with("conv") {
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
                    let val = xv[c * dd + z];
                    if v.is_bf16() {
                        // Two bf16 values per float of the arena: the upper half of `val`.
                        let halves: &mut [u16] = unsafe {
                            std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), 2 * s.len())
                        };
                        halves[r..r + w].fill((val.to_bits() >> 16) as u16);
                    } else {
                        s[r..r + w].fill(val);
                    }
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
    isa: &str,
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
                Metric::Flops(f) => match peaks.bf16 {
                    // bf16 convs against the vdpbf16ps peak.
                    Some(p16) if kind.ends_with("_bf16") => (
                        f as f64 / secs / 1e9,
                        "GFLOP/s",
                        p16 * threads as f64,
                        "bf16",
                    ),
                    // int8 convs against the vpdpbusd peak.
                    _ if kind.ends_with("_int8") && peaks.vnni.is_some() => (
                        f as f64 / secs / 1e9,
                        "GOP/s",
                        peaks.vnni.unwrap_or(1.0) * threads as f64,
                        "int8",
                    ),
                    _ => (
                        f as f64 / secs / 1e9,
                        "GFLOP/s",
                        fma1 * threads as f64,
                        "fma",
                    ),
                },
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
        "bf16" => format!("{}x bf16 peak", r.threads),
        "int8" => format!("{}x int8 peak", r.threads),
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

/// The driver of a bench binary: without `--bench` (`cargo test --all-targets` runs bench
/// binaries that way) it only emits the cases at depth 2 and checks each kernel counts
/// something, and returns; otherwise it measures the peaks, then for each
/// ISA of `E2ENC_BENCH_ISA` emits the cases `cases(isa, depth, consts, wanted)` returns
/// (`wanted(name)` applies `E2ENC_BENCH_ONLY`), compiles them with the ISA's flags, times every
/// kernel, and prints the summary.
pub fn main_with(
    bench: &str,
    cases: impl Fn(Target, usize, &mut Consts, &dyn Fn(&str) -> bool) -> Vec<Bench>,
) {
    if !std::env::args().any(|a| a == "--bench") {
        // A quick check that every case emits and every kernel gets a kind and a count.
        let mut consts = Consts::default();
        let mut all = cases(Target::X86Avx2, 2, &mut consts, &|_| true);
        // And as an x86-avx512 bf16 bundle storing bf16 activations (`avx512+bf16@bf16`).
        PRECISION.with(|p| p.set(Precision::Bf16));
        STORE_BF16.with(|s| s.set(true));
        all.extend(cases(Target::X86Avx512, 2, &mut consts, &|_| true));
        PRECISION.with(|p| p.set(Precision::F32));
        STORE_BF16.with(|s| s.set(false));
        for b in &all {
            for (k, kind, m) in &b.kernels {
                let n = match m {
                    Metric::Flops(n) | Metric::Bytes(n) => *n,
                };
                assert!(n > 0, "{}: {} ({kind}) counts nothing", b.case, k.name);
            }
        }
        println!(
            "{bench} benchmark: {} cases emit; run it with `cargo bench -p e2enc-codegen \
             --bench {bench}`",
            all.len()
        );
        return;
    }
    println!("{bench} benchmark; load average {}", load());
    let d: usize = env_or("E2ENC_BENCH_D", 32);
    let reps: usize = env_or("E2ENC_BENCH_REPS", 3);
    let only = std::env::var("E2ENC_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());
    let isas = std::env::var("E2ENC_BENCH_ISA")
        .unwrap_or_else(|_| "avx2,avx512,avx512+bf16,avx512+bf16@bf16".into());
    let peaks = Peaks::measure();
    let mut rows = Vec::new();
    let mut fma = Vec::new();
    for name in isas.split(',') {
        let (name, store_bf16) = match name.trim().split_once('@') {
            Some((n, "bf16")) => (n, true),
            Some((_, other)) => panic!("{name}: activations are stored as @bf16, not @{other}"),
            None => (name.trim(), false),
        };
        let (name, precision) = match name.split_once('+') {
            Some((n, p)) => (n, p.parse::<Precision>().unwrap()),
            None => (name, Precision::F32),
        };
        let isa: Target = name.parse().unwrap();
        if !isa.host_supports() {
            println!("skipping {isa}: this host lacks it");
            continue;
        }
        if precision == Precision::Bf16 && peaks.bf16.is_none() {
            println!("skipping {isa}+bf16: this host lacks avx512bf16");
            continue;
        }
        if precision == Precision::Int8 && peaks.vnni.is_none() {
            println!("skipping {isa}+int8: this host lacks avx512vnni");
            continue;
        }
        precision.check(isa).unwrap();
        assert!(
            !store_bf16 || precision.stores_bf16(isa),
            "{isa}+{precision}: only bf16 and int8 bundles on x86-avx512 store bf16 activations"
        );
        PRECISION.with(|p| p.set(precision));
        STORE_BF16.with(|s| s.set(store_bf16));
        let variant = match (precision, store_bf16) {
            (Precision::F32, _) => isa.to_string(),
            (_, false) => format!("{isa}+{precision}"),
            (_, true) => format!("{isa}+{precision}@bf16"),
        };
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
        let lib = harness::compile_with(&ks, &flags, isa, precision, store_bf16).unwrap();
        for b in &benches {
            run_bench(&lib, b, &consts, &variant, fma1, &peaks, reps, &mut rows);
        }
    }
    summary(bench, &rows, &fma, &peaks);
}
