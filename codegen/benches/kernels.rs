//! Throughput of the generated kernels other than the plain convs of `benches/conv.rs`, on
//! E2ENet shapes (`cargo bench -p e2enc-codegen --bench kernels`): each kernel of a node is
//! timed on its own and reported under its kind, on 1 and 2 threads, per ISA:
//!
//! - `first_conv`: the network's first conv unit, 1 -> 48 channels, 1x3x3, bias, instance norm
//!   and leaky ReLU on `1x1xDx128x128`: kernels `conv`, `norm_reduce`, `norm_apply`;
//! - `shift_conv48` / `shift_conv96`: a conv unit as the network runs it, the depth shift fused
//!   in (5 groups of ceil(C/5) input channels shifted -2..2), 48 -> 48 (backbone) and 96 -> 48
//!   (fusion, after a concat), 1x3x3, bias, norm, leaky ReLU: `conv`, `norm_reduce`,
//!   `norm_apply`;
//! - `max_pool`: `MaxPool3d` 2x2x2 stride 2 on `1x48xDx128x128`;
//! - `concat`: two `1x48xDx128x128` copied into `1x96xDx128x128` (a plane copy per output
//!   plane; the memory plan elides most concats, the kind stands for the copy kernels).
//!
//! Convs are reported in GFLOP/s (2 per live MAC) and % of the ISA's measured fp32 FMA peak
//! (times the threads); the memory-bound kinds (norm apply and reduce, max pool, copies) in GB/s
//! (bytes read + written, from the shapes: every padded plane read and every one written,
//! counted once each; the norm apply runs in place on the conv's output, so 2x its planes; the
//! norm reduce reads its partial sums) and % of the streaming bandwidth (the better of a copy and
//! an in-place stream) measured in this process on as many threads. The first D slices should
//! not fit in the last-level cache (at D = 32 a 48-channel tensor is 115 MB): with a small
//! `E2ENC_BENCH_D` the memory-bound kinds run from cache and exceed 100%. The bf16 and int8 (VNNI) peaks are measured and printed where the host has the
//! instructions, for the kernels of those precisions to come (none exists yet). A summary
//! table closes the run. See `benches/common/mod.rs` for how the peaks are measured. The
//! machine is shared: compare ratios, rerun when in doubt.
//!
//! Environment (shared with `benches/conv.rs`): `E2ENC_BENCH_ISA` (default
//! `avx2,avx512,avx512+bf16`, the ones the host lacks are skipped; `+bf16` compiles with
//! `--precision bf16`), `E2ENC_BENCH_D` (depth, default 32), `E2ENC_BENCH_ONLY`
//! (substring filter of the case names), `E2ENC_BENCH_REPS` (default 3, the best is kept),
//! `E2ENC_BENCH_CFLAGS` (overrides the ISA's flags), `E2ENC_BENCH_JSON` (write the summary as
//! JSON to this path, `{bench}` replaced by the bench's name), `E2ENC_BENCH_STREAM_MB` (each
//! array of the bandwidth measurement, default 128), `E2ENC_BENCH_PEAK_ITERS` (iterations of
//! the peak loops, default 2e7).

#[path = "../tests/harness/mod.rs"]
mod harness;

#[path = "common/mod.rs"]
mod common;

use e2enc_ir::{shift_runs, Op, PoolAttrs};

use common::{conv_node, emit_case};

fn main() {
    common::main_with("kernels", |isa, d, consts, wanted| {
        let mut out = Vec::new();
        let conv = |cin: usize, cout: usize| {
            (
                cin,
                cout,
                [d, 128, 128],
                [1, 3, 3],
                [1, 1, 1],
                [0, 1, 1],
                false,
            )
        };
        let convs = [
            ("first_conv", conv(1, 48), Vec::new()),
            ("shift_conv48", conv(48, 48), shift_runs(5, 48)),
            ("shift_conv96", conv(96, 48), shift_runs(5, 96)),
        ];
        for (name, geo, shifts) in convs {
            if wanted(name) {
                let (op, xs, ts) = conv_node(geo, None, shifts, true);
                out.push(emit_case(name, op, &[xs], &ts, consts, isa));
            }
        }
        let x48 = [1, 48, d, 128, 128];
        if wanted("max_pool") {
            let op = Op::MaxPool3d(PoolAttrs {
                kernel: [2, 2, 2],
                stride: [2, 2, 2],
            });
            out.push(emit_case("max_pool", op, &[x48], &[], consts, isa));
        }
        if wanted("concat") {
            out.push(emit_case(
                "concat",
                Op::Concat,
                &[x48, x48],
                &[],
                consts,
                isa,
            ));
        }
        out
    });
}
