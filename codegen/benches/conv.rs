//! Throughput of the generated 1x3x3 convolution kernels (`cargo bench -p e2enc-codegen --bench
//! conv`): a 96 -> 48 conv on `1x96x32x128x128`, dense and at 20% kernel density, stride 1 and 2,
//! on 1 and 2 threads, next to this machine's measured peak (independent 256-bit FMA chains).
//! Reports GFLOP/s (2 per live MAC). The machine is shared: compare ratios, rerun when in doubt.
//!
//! Each ISA (`E2ENC_BENCH_ISA`, default `avx2,avx512`, AVX-512 only where the host has it) is
//! generated and compiled with its own bundle flags (`-O2 -mavx2 -mfma`, plus `-mavx512f`), not
//! `-march=native` (which would let gcc use AVX-512 registers in the AVX2 kernels), and is
//! reported next to the peak of its own vector width.
//!
//! Environment: `E2ENC_BENCH_D` (depth, default 32), `E2ENC_BENCH_CFLAGS` (overrides the ISA's
//! flags), `E2ENC_BENCH_ISA`, `E2ENC_BENCH_ONLY`
//! (substring filter of the case names), `E2ENC_BENCH_REPS` (default 3, the best is kept),
//! `E2ENC_BENCH_DENSITY` (default 0.2).

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::Instant;

use e2enc_codegen::c;
use e2enc_codegen::emit::{Consts, Kernel, NodeCtx};
use e2enc_codegen::layout::View;
use e2enc_codegen::target::Target;
use e2enc_ir::{shape, ConvAttrs, FusedConvAttrs, Op, Tensor, TensorType};
use harness::{compile_for, noise, Arena};

/// Peak kernel: 12 independent FMA chains of `V` (`__m256` / `__m512`, prefix `P`).
fn peak_c(lanes: usize) -> String {
    let (v, p) = if lanes == 16 {
        ("__m512", "_mm512")
    } else {
        ("__m256", "_mm256")
    };
    format!(
        r#"
#include <immintrin.h>
#include <stdint.h>
double e2_peak(int64_t iters) {{
    {v} a[12];
    for (int i = 0; i < 12; i++) a[i] = {p}_set1_ps(0.001f * i);
    const {v} x = {p}_set1_ps(0.9999f), y = {p}_set1_ps(0.0001f);
    for (int64_t k = 0; k < iters; k++) {{
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = {p}_fmadd_ps(a[i], x, y);
    }}
    {v} s = a[0];
    for (int i = 1; i < 12; i++) s = {p}_add_ps(s, a[i]);
    float o[16];
    {p}_storeu_ps(o, s);
    return o[0];
}}
"#
    )
}

struct Bench {
    name: String,
    kernels: Vec<Kernel>,
    arena: usize,
    input: View,
}

/// The geometry of a bench case: (cin, cout, input [d, h, w], kernel, stride, padding, transposed).
type Geo = (
    usize,
    usize,
    [usize; 3],
    [usize; 3],
    [usize; 3],
    [usize; 3],
    bool,
);

fn conv_case(
    name: &str,
    geo: Geo,
    density: Option<f64>,
    consts: &mut Consts,
    isa: Target,
) -> Bench {
    let (cin, cout, [d, h, w], kernel, stride, padding, transposed) = geo;
    let xs = [1, cin, d, h, w];
    let kv: usize = kernel.iter().product();
    let attrs = FusedConvAttrs {
        conv: ConvAttrs {
            kernel,
            stride,
            padding,
        },
        transposed,
        shifts: Vec::new(),
        sparse_out: density.map(|_| cout),
        bias: true,
        norm_eps: None,
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
    let op = Op::FusedConv3d(attrs);
    let mut tys = vec![TensorType::f32(xs.to_vec())];
    tys.extend(ts.iter().map(|t| t.ty()));
    let refs: Vec<&TensorType> = tys.iter().collect();
    let out_ty = shape::infer(&op, &refs).unwrap();
    let ys: [usize; 5] = out_ty.shape.clone().try_into().unwrap();
    let input = View::padded(0, xs);
    let output = View::padded(input.end().div_ceil(16) * 16, ys);
    let scratch = output.end().div_ceil(16) * 16;
    let arena = scratch + c::scratch_elems(&op, &tys, &out_ty);
    let ctx = NodeCtx {
        node: e2enc_ir::NodeId(Default::default()),
        prefix: name.to_string(),
        op: &op,
        label: name.to_string(),
        inputs: vec![input.clone()],
        consts: ts.iter().collect(),
        output,
        scratch,
        channel_map: None,
        isa,
    };
    let kernels = c::emit(&ctx, consts).unwrap();
    Bench {
        name: name.to_string(),
        kernels,
        arena,
        input,
    }
}

/// Runs every kernel of `b` over all tiles on `threads` threads (interleaved chunks of tiles).
fn time_once(lib: &harness::Lib, b: &Bench, a: &mut Arena, consts: &Consts, threads: usize) -> f64 {
    let t = Instant::now();
    for k in &b.kernels {
        let f = lib.get(&k.name);
        let ptr = a.ptr() as usize;
        let tiles = k.tiles as i64;
        let chunk = 4i64;
        std::thread::scope(|s| {
            for th in 0..threads as i64 {
                s.spawn(move || {
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
                });
            }
        });
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("conv benchmark: run it with `cargo bench -p e2enc-codegen --bench conv`");
        return;
    }
    let d: usize = std::env::var("E2ENC_BENCH_D")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let only = std::env::var("E2ENC_BENCH_ONLY").unwrap_or_default();
    let isas = std::env::var("E2ENC_BENCH_ISA").unwrap_or_else(|_| "avx2,avx512".into());
    for name in isas.split(',') {
        let isa: Target = name.trim().parse().unwrap();
        if !isa.host_supports() {
            println!("skipping {isa}: this host lacks it");
            continue;
        }
        run_isa(isa, d, &only);
    }
}

fn run_isa(isa: Target, d: usize, only: &str) {
    let default_flags = format!("-O2 {}", isa.machine_flags().join(" "));
    let flags_s = std::env::var("E2ENC_BENCH_CFLAGS").unwrap_or(default_flags);
    let flags: Vec<&str> = flags_s.split_whitespace().collect();

    // Machine peak: 12 independent FMA chains per core, at the ISA's vector width.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.c"), peak_c(isa.lanes())).unwrap();
    let so = dir.path().join("p.so");
    let ok = std::process::Command::new("cc")
        .args(&flags)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(dir.path().join("p.c"))
        .status()
        .unwrap();
    assert!(ok.success());
    let peak_lib = unsafe { libloading::Library::new(&so) }.unwrap();
    let peak: libloading::Symbol<unsafe extern "C" fn(i64) -> f64> =
        unsafe { peak_lib.get(b"e2_peak") }.unwrap();
    let iters = 100_000_000i64;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        unsafe { peak(iters) };
        best = best.min(t.elapsed().as_secs_f64());
    }
    let peak1 = (iters * 12 * 2 * isa.lanes() as i64) as f64 / best / 1e9;
    println!(
        "[{isa}] machine peak ({}-bit FMA, 1 core): {peak1:.1} GFLOP/s  [flags: {flags_s}]",
        32 * isa.lanes()
    );

    let mut consts = Consts::default();
    let mut benches = Vec::new();
    let dens: f64 = std::env::var("E2ENC_BENCH_DENSITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.2);
    let c33 = |s: usize| {
        (
            96,
            48,
            [d, 128, 128],
            [1, 3, 3],
            [1, s, s],
            [0, 1, 1],
            false,
        )
    };
    let head = (
        48,
        16,
        [d, 128, 128],
        [1, 1, 1],
        [1, 1, 1],
        [0, 0, 0],
        false,
    );
    let up = (
        96,
        48,
        [d / 2, 64, 64],
        [2, 2, 2],
        [2, 2, 2],
        [0, 0, 0],
        true,
    );
    let all: [(&str, Geo, Option<f64>); 7] = [
        ("dense_s1", c33(1), None),
        ("sparse20_s1", c33(1), Some(dens)),
        ("dense_s2", c33(2), None),
        ("sparse20_s2", c33(2), Some(dens)),
        ("head_1x1", head, None),
        ("up_dense", up, None),
        ("up_sparse20", up, Some(dens)),
    ];
    for (name, geo, density) in all {
        if name.contains(only) {
            benches.push(conv_case(name, geo, density, &mut consts, isa));
        }
    }
    let ks: Vec<&Kernel> = benches.iter().flat_map(|b| &b.kernels).collect();
    let lib = compile_for(&ks, &flags, isa).unwrap();
    for b in &benches {
        let mut a = Arena::new(b.arena, 0.0);
        // Input values (padding stays zero).
        let x = noise(&[b.input.shape[1] * b.input.shape[2]], 3);
        let xv = x.as_f32().unwrap();
        {
            let s = a.as_mut_slice();
            let [_, cin, dd, h, w] = b.input.shape;
            for c in 0..cin {
                for z in 0..dd {
                    for y in 0..h {
                        let r = b.input.at(0, c, z, y as isize, 0);
                        s[r..r + w].fill(xv[c * dd + z]);
                    }
                }
            }
        }
        let flops: u64 = b.kernels.iter().map(|k| k.flops).sum();
        for threads in [1, 2] {
            let mut best = f64::MAX;
            let reps: usize = std::env::var("E2ENC_BENCH_REPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3);
            for _ in 0..reps {
                best = best.min(time_once(&lib, b, &mut a, &consts, threads));
            }
            let g = flops as f64 / best / 1e9;
            println!(
                "[{isa}] {:<12} {threads} thread(s): {:8.1} ms  {:6.1} GFLOP/s  ({:.0}% of {threads}x peak)",
                b.name,
                best * 1e3,
                g,
                100.0 * g / (peak1 * threads as f64)
            );
        }
    }
}
