//! The training loss on the GPU: nnU-Net's Dice + CE of one deep-supervision head
//! (`e2enc_train::loss`: batch Dice over the foreground classes, mean cross entropy), as three
//! kernels, so that the logits never leave the device:
//!
//! - `{p}_sums`: per voxel the softmax over the classes (in double, as the CPU), summed into
//!   each thread's `Σ p·y`, `Σ p`, `Σ y` per class and the cross entropy (kept in shared memory,
//!   64 threads a block: registers would not hold `3C + 1` doubles for 16 classes), then each
//!   block's partials (the threads' sums in thread order) into a scratch buffer;
//! - `{p}_reduce`: one block adds the blocks' partials in block order into the head's batch
//!   sums (`[tp_0..C, Σp_0..C, Σy_0..C, ce, voxels]`, the CPU's `BatchSums` layout), which the
//!   host reads (a few hundred bytes), all-reduces over ranks and turns into the loss value and
//!   the coefficients of the gradient (`dc_c`, `den_c`, the voxel count, the head's weight);
//! - `{p}_grad`: per voxel `∂L/∂z_k = (p_k - y_k)/M + p_k (g_k - Σ_c p_c g_c)` with
//!   `g_k = -(2 y_k - dc_k) / (den_k (C - 1))` for the foreground classes (both values of each,
//!   for `y_k` 1 and 0, computed on the host), rounded to f32 and times the head's weight as the
//!   CPU does, written where the backward pass reads the head's gradient.
//!
//! Arguments (the kernels' `(A, W, I)`): `sums` A = partials (doubles), W = table `[logits]`,
//! I = labels (i32, `[N, D, H, W]`); `reduce` A = batch sums, W = table `[partials]`; `grad` A =
//! the gradient, W = table `[logits, coefficients]`, I = labels. Labels must lie below the class
//! count (the host checks them before uploading).

use super::THREADS;
use crate::compile::CodegenError;
use crate::emit::Launch;

/// The kernels of one head (see the module doc).
#[derive(Clone, Debug)]
pub struct LossKernels {
    /// The CUDA text of the three kernels (after the training prelude).
    pub source: String,
    /// `(name, launch)` of `sums`, `reduce` and `grad`, in that order.
    pub kernels: Vec<(String, Launch)>,
    /// Doubles of the partials buffer (`blocks · (3C + 1)`).
    pub partials: usize,
    /// Doubles of the batch sums (`3C + 2`).
    pub sums: usize,
    /// Doubles of the coefficients buffer: `[g_0..C at the label, g_0..C elsewhere, voxels,
    /// weight]` (`g_0 = 0`; see the module doc).
    pub coefs: usize,
}

/// Blocks of the `sums` kernel at most (each thread takes every `blocks · THREADS`-th voxel).
pub const MAX_BLOCKS: usize = 1024;

fn launch(blocks: usize, sync: bool) -> Launch {
    Launch {
        grid: [blocks as u32, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        sync,
    }
}

/// Threads per block of the `sums` kernel: each keeps its `3C + 1` running sums in shared
/// memory (`(3C + 1) · 64` doubles), not in registers.
pub const SUM_THREADS: usize = 64;

/// The most classes a head may have (its sums fill 48 KiB of shared memory).
pub const MAX_CLASSES: usize = 31;

/// The opening of one voxel's softmax: binds `z` (the voxel's logits, class stride `s`), `mx`
/// and `se = Σ exp(z_k - mx)`; the class probabilities are then `exp(z_k - mx) / se`, computed
/// again where used rather than kept in an array of `C` doubles.
fn softmax_open(c: usize, s: usize) -> String {
    format!(
        "const float *__restrict__ z = lg + (i64)b * {cs}LL + v;\n\
         double mx = (double)z[0];\n\
         for (int k = 1; k < {c}; k++) {{ const double u = (double)z[(i64)k * {s}]; mx = u > mx ? u : mx; }}\n\
         double se = 0.0;\n\
         for (int k = 0; k < {c}; k++) se += exp((double)z[(i64)k * {s}] - mx);\n",
        cs = c * s
    )
}

/// The loss kernels of a head with logits `[N, C, D, H, W]` (`prefix` names them).
pub fn loss_kernels(prefix: &str, shape: [usize; 5]) -> Result<LossKernels, CodegenError> {
    let [n, c, d, h, w] = shape;
    let s = d * h * w;
    let voxels = n * s;
    if c < 2 || voxels == 0 {
        return Err(CodegenError::Other(format!(
            "loss of a head of shape {shape:?}: needs two classes and a voxel"
        )));
    }
    if voxels > i32::MAX as usize / 2 {
        return Err(CodegenError::Other(format!(
            "loss of a head of shape {shape:?}: too many voxels for one launch"
        )));
    }
    if c > MAX_CLASSES {
        return Err(CodegenError::Other(format!(
            "loss of a head of shape {shape:?}: more than {MAX_CLASSES} classes (the GPU loss \
             keeps its sums in shared memory)"
        )));
    }
    let vals = 3 * c + 1;
    let blocks = voxels.div_ceil(SUM_THREADS).clamp(1, MAX_BLOCKS);
    let stride = blocks * SUM_THREADS;
    let sig = |name: &str, threads: usize| {
        format!(
            "extern \"C\" __global__ void __launch_bounds__({threads}) {prefix}_{name}(float *__restrict__ A, \
             const float *__restrict__ W, const int *__restrict__ I) {{\n\
             const float *const *in = (const float *const *)(const void *)W;\n\
             (void)in;\n"
        )
    };
    let mut src = String::new();
    // Kernel 1: per-thread sums in shared memory, then per-block partials.
    src.push_str(&sig("sums", SUM_THREADS));
    src.push_str(&format!(
        "__shared__ double acc[{vals} * {SUM_THREADS}];\n\
         double *__restrict__ part = (double *)(void *)A;\n\
         const float *__restrict__ lg = in[0];\n\
         const int t = (int)threadIdx.x;\n\
         for (int j = 0; j < {vals}; j++) acc[j * {SUM_THREADS} + t] = 0.0;\n\
         for (int i = (int)(blockIdx.x * {SUM_THREADS} + threadIdx.x); i < {voxels}; i += {stride}) {{\n\
         const int b = i / {s}, v = i - b * {s};\n\
         const int l = I[i];\n\
         {sm}\
         acc[{c3} * {SUM_THREADS} + t] += mx + log(se) - (double)z[(i64)l * {s}];\n\
         for (int k = 0; k < {c}; k++) {{\n\
         const double p = exp((double)z[(i64)k * {s}] - mx) / se;\n\
         acc[({c} + k) * {SUM_THREADS} + t] += p;\n\
         if (k == l) {{ acc[k * {SUM_THREADS} + t] += p; acc[({c2} + k) * {SUM_THREADS} + t] += 1.0; }}\n\
         }}\n\
         }}\n\
         __syncthreads();\n\
         for (int j = t; j < {vals}; j += {SUM_THREADS}) {{\n\
         double r = 0.0;\n\
         for (int u = 0; u < {SUM_THREADS}; u++) r += acc[j * {SUM_THREADS} + u];\n\
         part[(i64)blockIdx.x * {vals} + j] = r;\n\
         }}\n\
         }}\n",
        sm = softmax_open(c, s),
        c2 = 2 * c,
        c3 = 3 * c,
    ));
    // Kernel 2: the blocks' partials in block order.
    src.push_str(&sig("reduce", THREADS as usize));
    src.push_str(&format!(
        "double *__restrict__ sums = (double *)(void *)A;\n\
         const double *__restrict__ part = (const double *)(const void *)in[0];\n\
         for (int j = (int)threadIdx.x; j < {vals}; j += {THREADS}) {{\n\
         double t = 0.0;\n\
         for (int k = 0; k < {blocks}; k++) t += part[k * {vals} + j];\n\
         sums[j] = t;\n\
         }}\n\
         if (threadIdx.x == 0) sums[{vals}] = {voxels}.0;\n\
         }}\n"
    ));
    // Kernel 3: the gradient.
    src.push_str(&sig("grad", THREADS as usize));
    src.push_str(&format!(
        "const int i = (int)(blockIdx.x * {THREADS} + threadIdx.x);\n\
         if (i >= {voxels}) return;\n\
         const float *__restrict__ lg = in[0];\n\
         const double *__restrict__ co = (const double *)(const void *)in[1];\n\
         const int b = i / {s}, v = i - b * {s};\n\
         const int l = I[i];\n\
         {sm}\
         const double m = co[{c2}], wt = co[{c2} + 1];\n\
         double dot = 0.0;\n\
         for (int k = 1; k < {c}; k++) {{\n\
         const double p = exp((double)z[(i64)k * {s}] - mx) / se;\n\
         dot += p * (k == l ? co[k] : co[{c} + k]);\n\
         }}\n\
         float *__restrict__ o = A + (i64)b * {cs}LL + v;\n\
         for (int k = 0; k < {c}; k++) {{\n\
         const double p = exp((double)z[(i64)k * {s}] - mx) / se;\n\
         const double y = k == l ? 1.0 : 0.0;\n\
         const double g = k == l ? co[k] : co[{c} + k];\n\
         const float gk = (float)((p - y) / m + p * (g - dot));\n\
         o[(i64)k * {s}] = (float)((double)gk * wt);\n\
         }}\n\
         }}\n",
        sm = softmax_open(c, s),
        c2 = 2 * c,
        cs = c * s,
    ));
    Ok(LossKernels {
        source: src,
        kernels: vec![
            (
                format!("{prefix}_sums"),
                Launch {
                    block: [SUM_THREADS as u32, 1, 1],
                    ..launch(blocks, true)
                },
            ),
            (format!("{prefix}_reduce"), launch(1, false)),
            (
                format!("{prefix}_grad"),
                launch(voxels.div_ceil(THREADS as usize), false),
            ),
        ],
        partials: blocks * vals,
        sums: vals + 1,
        coefs: 2 * c + 2,
    })
}
