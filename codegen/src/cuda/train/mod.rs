//! CUDA kernels of training graphs (`e2enc_ir::autodiff::training_graph`, after
//! `crate::train::prepare`): one `__global__` kernel per compute node, forward and backward, over
//! dense row-major `[N, C, D, H, W]` f32 tensors, the same graph and the same live-kernel lists
//! as the generated C training kernels (`crate::train`), so the training executor runs either
//! through one seam.
//!
//! ABI: the bundle kernels' CUDA signature (`crate::cuda::text`: `NAME(float *A, const float *W,
//! const int *I)`), with `A` the node's output, `W` read as the table of its operands' device
//! pointers (`const float *const *`, operand order) and `I` the live-kernel CSR of a DSFF conv
//! (`crate::train::live_csr`, rebuilt from the masks at every step, so prune and regrow need no
//! recompilation). A kernel's launch (`TrainKernel::launch`) covers its work; its `tiles` are its
//! blocks, which is how the host emulation (`e2enc_runtime::emulate`) runs the same text on a
//! CPU with the thread pool, and how these kernels are checked on machines without a GPU.
//!
//! Determinism: no atomics; every reduction (instance-norm statistics, channel sums, weight
//! gradients) runs in a fixed order (each thread's strided share, then the 256 partials summed
//! in thread order from shared memory), so repeated steps give the same bits, on the GPU and in the emulation for
//! any thread order. Sums of statistics are doubles, like the C kernels.
//!
//! This is the correctness-first generation (`ops.rs`: pointwise, copies, norms, pooling;
//! `conv.rs`: the three convolution families, one thread per output value or one block per live
//! weight kernel), plus `mma.rs`: with `tensor_cores` (`e2enc train --tensor-cores`), the
//! stride-1 `1x3x3`-style convs' forward passes, data gradients and weight gradients on TF32 or
//! bf16 tensor cores.
//! Not built: tiling of the direct kernels, bf16 compute, split-K weight gradients.

mod conv;
pub mod gather;
pub mod loss;
mod mma;
mod ops;
pub mod optim;
pub mod stash;

use std::collections::HashSet;

use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::Op;

use crate::compile::CodegenError;
use crate::emit::Launch;
use crate::target::Target;
use crate::train::conv::Family;
use crate::train::{err, generate_with, Ctx, Emitted, Live, TrainGenerated};

/// Threads per block of every training kernel.
pub const THREADS: u32 = 256;

/// The text in front of a training graph's CUDA kernels.
pub const PRELUDE: &str = r#"/* e2enc: header-free CUDA C++ training kernels of one graph (NVRTC ships no headers; the host emulation compiles the same text). */
typedef long long i64;
/* The sum of v over the block's 256 threads in thread order (deterministic), for every thread;
   s: 256 doubles of shared memory. Every thread of the block must call it. Each thread reads
   all 256 partials (broadcast reads): two barriers instead of a tree's nine. */
__device__ __forceinline__ double e2g_bsum(double v, double *s) {
    s[threadIdx.x] = v;
    __syncthreads();
    double r = 0.0;
    for (int k = 0; k < 256; k++) r += s[k];
    __syncthreads();
    return r;
}
"#;

/// One kernel: its text (the signature, the operand table, `body`) and its launch.
pub(crate) struct Made {
    pub source: String,
    pub launch: Launch,
    pub work: u64,
    pub live: Live,
    /// Bytes of scratch (`crate::train::TrainKernel::scratch`).
    pub scratch: usize,
}

/// `(name, launch)` of each of `names`: a grid-stride kernel of `blocks` blocks of [`THREADS`]
/// threads without barriers (the stash and gather kernels).
pub(crate) fn grid_stride_launches(names: &[&str], blocks: u32) -> Vec<(String, Launch)> {
    let launch = Launch {
        grid: [blocks, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        sync: false,
    };
    names
        .iter()
        .map(|n| (n.to_string(), launch.clone()))
        .collect()
}

/// A kernel of `blocks` blocks of [`THREADS`] threads running `body`; `sync`: it has barriers.
pub(crate) fn make(
    ctx: &Ctx,
    body: &str,
    blocks: u64,
    sync: bool,
    work: u64,
    live: Live,
) -> Result<Made, CodegenError> {
    let grid = match u32::try_from(blocks) {
        Ok(b) if (1..=i32::MAX as u32).contains(&b) => b,
        _ => {
            return Err(err(
                ctx.g,
                ctx.id,
                format!("{blocks} thread blocks do not fit CUDA's grid (1..2^31)"),
            ))
        }
    };
    make_in(ctx, body, [grid, 1, 1], THREADS, sync, work, live, None)
}

/// [`make`] with a 3-D `grid` of `threads`-thread blocks, and at least `min_blocks` blocks per
/// SM in the launch bounds when given ([`crate::cuda::text::min_blocks`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_in(
    ctx: &Ctx,
    body: &str,
    grid: [u32; 3],
    threads: u32,
    sync: bool,
    work: u64,
    live: Live,
    min_blocks: Option<u32>,
) -> Result<Made, CodegenError> {
    let head = "float *__restrict__ out = A;\n\
                const float *const *in = (const float *const *)(const void *)W;\n\
                const int *live = I;\n\
                (void)out; (void)in; (void)live;\n";
    let mut k = crate::cuda::text::kernel(
        &ctx.name,
        &format!("{head}{body}"),
        grid,
        [threads, 1, 1],
        sync,
        work,
        String::new(),
    );
    if let Some(b) = min_blocks {
        k = crate::cuda::text::min_blocks(k, b);
    }
    let launch = k
        .launch
        .ok_or_else(|| err(ctx.g, ctx.id, "kernel without a launch"))?;
    Ok(Made {
        source: k.source,
        launch,
        work,
        live,
        scratch: 0,
    })
}

/// The C type of indices below `total`: `int` where it fits (GPUs divide 32-bit integers far
/// faster than 64-bit ones, and 64-bit index math made ptxas spill), else `i64`. Pointer
/// offsets are widened (`LL` constants) either way.
pub(crate) fn index_type(total: usize) -> &'static str {
    if total + 2 * THREADS as usize <= i32::MAX as usize {
        "int"
    } else {
        "i64"
    }
}

/// The opening of a one-thread-per-value kernel over `total` values: binds `i` (of
/// [`index_type`]), returns past the end.
pub(crate) fn per_value(total: usize) -> String {
    let ty = index_type(total);
    format!(
        "const {ty} i = ({ty})blockIdx.x * {THREADS} + ({ty})threadIdx.x;\nif (i >= {total}) return;\n"
    )
}

/// Blocks of a one-thread-per-value kernel over `total` values.
pub(crate) fn value_blocks(total: usize) -> u64 {
    (total as u64).div_ceil(u64::from(THREADS))
}

/// A C expression for `v[var]` where `v` is per channel: a chain of comparisons over the runs
/// of equal values (the depth shifts come in a few runs), `0` when `v` is `None`.
pub(crate) fn runs_expr(var: &str, v: Option<&[i64]>) -> String {
    let Some(v) = v else {
        return "0".into();
    };
    let mut runs: Vec<(usize, i64)> = Vec::new(); // (end, value)
    for (c, &s) in v.iter().enumerate() {
        match runs.last_mut() {
            Some((end, val)) if *val == s => *end = c + 1,
            _ => runs.push((c + 1, s)),
        }
    }
    let mut e = String::from("(");
    for (k, &(end, val)) in runs.iter().enumerate() {
        if k + 1 == runs.len() {
            e.push_str(&format!("{val}"));
        } else {
            e.push_str(&format!("{var} < {end} ? {val} : "));
        }
    }
    if runs.is_empty() {
        e.push('0');
    }
    e.push(')');
    e
}

/// Generates the CUDA kernels of `tg` (prepared by `crate::train::prepare`) for the CUDA
/// `target`, every weight in `maskable` (all when `None`) possibly kernel-sparse.
pub fn generate(
    tg: &TrainGraph,
    target: Target,
    maskable: Option<&HashSet<String>>,
    tensor_cores: Option<crate::cuda::mma::Mma>,
) -> Result<TrainGenerated, CodegenError> {
    if !target.is_cuda() {
        return Err(CodegenError::Other(format!(
            "{target} is not a CUDA target"
        )));
    }
    let mut source = PRELUDE.to_string();
    if tensor_cores.is_some() {
        source.push_str(crate::cuda::text::mma_helpers!());
    }
    source.push_str(&format!("/* target: {target} */\n"));
    generate_with(tg, target, maskable, source, |ctx| {
        let m = match ctx.op {
            Op::Conv3d(_)
            | Op::ConvTranspose3d(_)
            | Op::ConvBackwardData(_)
            | Op::FusedConv3d(_) => {
                let (g, bias, family) = crate::train::conv::classify(ctx)?;
                // Tensor cores for the forward convs and the plain data gradients they take.
                let kind = match (ctx.op, family) {
                    (Op::ConvBackwardData(_), Family::Scatter) => Some(mma::Kind::DataGrad),
                    (Op::Conv3d(_) | Op::FusedConv3d(_), Family::Gather) => {
                        Some(mma::Kind::Forward)
                    }
                    _ => None,
                };
                match (kind, tensor_cores) {
                    (Some(kind), Some(f)) if mma::takes(&g) => mma::emit(ctx, &g, bias, kind, f)?,
                    _ => conv::emit(ctx)?,
                }
            }
            Op::ConvBackwardWeight(_) => match tensor_cores {
                Some(f) => match mma::weight_grad(ctx, f)? {
                    Some(m) => m,
                    None => conv::weight_grad(ctx)?,
                },
                None => conv::weight_grad(ctx)?,
            },
            _ => ops::emit(ctx)?,
        };
        let tiles = m.launch.blocks() as usize;
        Ok((
            Emitted {
                source: m.source,
                tiles,
                work: m.work,
                live: m.live,
                scratch: m.scratch,
            },
            Some(m.launch),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::runs_expr;

    #[test]
    fn runs_expr_follows_the_runs() {
        assert_eq!(runs_expr("b", None), "0");
        assert_eq!(
            runs_expr("b", Some(&[1, 1, 0, 0, -1])),
            "(b < 2 ? 1 : b < 4 ? 0 : -1)"
        );
        assert_eq!(runs_expr("b", Some(&[3])), "(3)");
    }
}
