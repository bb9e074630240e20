//! Throughput of the generated convolution kernels (`cargo bench -p e2enc-codegen --bench
//! conv`): a 96 -> 48 1x3x3 conv on `1x96xDx128x128`, dense and at 20% kernel density, stride 1
//! and 2 (kind `conv`); the 48 -> 16 1x1 head (`conv`); the 96 -> 48 2x2x2 transposed "up" conv,
//! dense and sparse (`conv_up`); on 1 and 2 threads, in GFLOP/s (2 per live MAC) next to this
//! machine's measured fp32 FMA peak (12 independent FMA chains at the ISA's width, times the
//! threads). The other kernel kinds
//! (norm, max pool, copies, the shifted and first convs) are in `benches/kernels.rs`; peaks,
//! timing and the closing summary table are shared (`benches/common/mod.rs`). The machine is
//! shared: compare ratios, rerun when in doubt.
//!
//! Each ISA (`E2ENC_BENCH_ISA`, default `avx2,avx512,avx512+bf16,avx512+bf16@bf16`, AVX-512 only where the host
//! has it, `+bf16` where it has `avx512_bf16`: the bundle's `--precision bf16` kernels) is
//! generated and compiled with its own bundle flags (`-O2 -mavx2 -mfma`, plus `-mavx512f`), not
//! `-march=native` (which would let gcc use AVX-512 registers in the AVX2 kernels), and is
//! reported next to the peak of its own vector width (bf16 convs: the `vdpbf16ps` peak). A
//! `@bf16` suffix (`avx512+bf16@bf16`, `avx512+int8@bf16`) stores the activations as bf16, as
//! those bundles do (without it they are f32, as with `--activations f32`): then the upsamplings
//! multiply bf16 channel pairs too (kind `conv_up_bf16`), or with `+int8` int8 channel quads
//! (kind `conv_up_int8`, held to the `vpdpbusd` peak).
//!
//! Environment: `E2ENC_BENCH_D` (depth, default 32), `E2ENC_BENCH_CFLAGS` (overrides the ISA's
//! flags), `E2ENC_BENCH_ISA`, `E2ENC_BENCH_ONLY` (substring filter of the case names),
//! `E2ENC_BENCH_REPS` (default 3, the best is kept), `E2ENC_BENCH_DENSITY` (default 0.2),
//! `E2ENC_BENCH_JSON` (write the summary as JSON to this path, `{bench}` replaced by `conv`),
//! `E2ENC_BENCH_STREAM_MB`, `E2ENC_BENCH_PEAK_ITERS` (see `benches/kernels.rs`).

#[path = "../tests/harness/mod.rs"]
mod harness;

#[path = "common/mod.rs"]
mod common;

use common::{conv_node, emit_case, env_or, Geo};

fn main() {
    common::main_with("conv", |isa, d, consts, wanted| {
        let dens: f64 = env_or("E2ENC_BENCH_DENSITY", 0.2);
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
        all.into_iter()
            .filter(|c| wanted(c.0))
            .map(|(name, geo, density)| {
                let (op, xs, ts) = conv_node(geo, density, Vec::new(), false);
                emit_case(name, op, &[xs], &ts, consts, isa)
            })
            .collect()
    });
}
