//! The training loss on the GPU: nnU-Net's Dice + CE of one deep-supervision head
//! (`e2enc_train::loss`: batch Dice over the foreground classes, mean cross entropy), as three
//! kernels, so that the logits never leave the device:
//!
//! - `{p}_sums`: per voxel the softmax over the classes (in double, as the CPU), summed into
//!   each thread's `Σ p·y`, `Σ p`, `Σ y` per class and the cross entropy, then each block's
//!   partials (block reductions in thread order) into a scratch buffer;
//! - `{p}_reduce`: one block adds the blocks' partials in block order into the head's batch
//!   sums (`[tp_0..C, Σp_0..C, Σy_0..C, ce, voxels]`, the CPU's `BatchSums` layout), which the
//!   host reads (a few hundred bytes), all-reduces over ranks and turns into the loss value and
//!   the coefficients of the gradient (`dc_c`, `den_c`, the voxel count, the head's weight);
//! - `{p}_grad`: per voxel `∂L/∂z_k = (p_k - y_k)/M + p_k (g_k - Σ_c p_c g_c)` with
//!   `g_k = -(2 y_k - dc_k) / (den_k (C - 1))` for the foreground classes, rounded to f32 and
//!   times the head's weight as the CPU does, written where the backward pass reads the head's
//!   gradient.
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
    /// Doubles of the coefficients buffer: `[dc_0..C, den_0..C, voxels, weight]`.
    pub coefs: usize,
}

/// Blocks of the `sums` kernel at most (each thread takes every `blocks · THREADS`-th voxel).
pub const MAX_BLOCKS: usize = 240;

fn launch(blocks: usize, sync: bool) -> Launch {
    Launch {
        grid: [blocks as u32, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        sync,
    }
}

/// The softmax of voxel `v` of sample `b` into `p[0..C)` (double), and `lse` (log Σ exp).
fn softmax(c: usize, s: usize) -> String {
    let mut t = format!(
        "const float *__restrict__ z = lg + (i64)b * {cs}LL + v;\n\
         double p[{c}];\n\
         double mx = (double)z[0];\n\
         #pragma unroll\n\
         for (int k = 1; k < {c}; k++) {{ const double u = (double)z[(i64)k * {s}]; mx = u > mx ? u : mx; }}\n\
         double se = 0.0;\n\
         #pragma unroll\n\
         for (int k = 0; k < {c}; k++) {{ p[k] = exp((double)z[(i64)k * {s}] - mx); se += p[k]; }}\n\
         #pragma unroll\n\
         for (int k = 0; k < {c}; k++) p[k] /= se;\n",
        cs = c * s
    );
    t.push_str("(void)mx;\n");
    t
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
    let vals = 3 * c + 1;
    let blocks = voxels.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS);
    let stride = blocks * THREADS as usize;
    let sig = |name: &str| {
        format!(
            "extern \"C\" __global__ void __launch_bounds__({THREADS}) {prefix}_{name}(float *__restrict__ A, \
             const float *__restrict__ W, const int *__restrict__ I) {{\n\
             const float *const *in = (const float *const *)(const void *)W;\n\
             (void)in;\n"
        )
    };
    let mut src = String::new();
    // Kernel 1: per-thread sums, then per-block partials.
    src.push_str(&sig("sums"));
    src.push_str(&format!(
        "__shared__ double red[{THREADS}];\n\
         double *__restrict__ part = (double *)(void *)A;\n\
         const float *__restrict__ lg = in[0];\n\
         double tp[{c}], sp[{c}], sy[{c}], ce = 0.0;\n\
         #pragma unroll\n\
         for (int k = 0; k < {c}; k++) {{ tp[k] = 0.0; sp[k] = 0.0; sy[k] = 0.0; }}\n\
         for (int i = (int)(blockIdx.x * {THREADS} + threadIdx.x); i < {voxels}; i += {stride}) {{\n\
         const int b = i / {s}, v = i - b * {s};\n\
         const int l = I[i];\n\
         {sm}\
         ce += mx + log(se) - (double)z[(i64)l * {s}];\n\
         #pragma unroll\n\
         for (int k = 0; k < {c}; k++) {{ sp[k] += p[k]; if (k == l) {{ tp[k] += p[k]; sy[k] += 1.0; }} }}\n\
         }}\n\
         double *__restrict__ out = part + (i64)blockIdx.x * {vals};\n\
         #pragma unroll\n\
         for (int k = 0; k < {c}; k++) {{\n\
         const double a = e2g_bsum(tp[k], red);\n\
         const double q = e2g_bsum(sp[k], red);\n\
         const double r = e2g_bsum(sy[k], red);\n\
         if (threadIdx.x == 0) {{ out[k] = a; out[{c} + k] = q; out[{c2} + k] = r; }}\n\
         }}\n\
         const double e = e2g_bsum(ce, red);\n\
         if (threadIdx.x == 0) out[{c3}] = e;\n\
         }}\n",
        sm = softmax(c, s),
        c2 = 2 * c,
        c3 = 3 * c,
    ));
    // Kernel 2: the blocks' partials in block order.
    src.push_str(&sig("reduce"));
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
    src.push_str(&sig("grad"));
    src.push_str(&format!(
        "const int i = (int)(blockIdx.x * {THREADS} + threadIdx.x);\n\
         if (i >= {voxels}) return;\n\
         const float *__restrict__ lg = in[0];\n\
         const double *__restrict__ co = (const double *)(const void *)in[1];\n\
         const int b = i / {s}, v = i - b * {s};\n\
         const int l = I[i];\n\
         {sm}\
         const double m = co[{c2}], wt = co[{c2} + 1];\n\
         double g[{c}];\n\
         double dot = 0.0;\n\
         g[0] = 0.0;\n\
         #pragma unroll\n\
         for (int k = 1; k < {c}; k++) {{\n\
         const double y = k == l ? 1.0 : 0.0;\n\
         g[k] = -(2.0 * y - co[k]) / (co[{c} + k] * {fg}.0);\n\
         dot += p[k] * g[k];\n\
         }}\n\
         float *__restrict__ o = A + (i64)b * {cs}LL + v;\n\
         #pragma unroll\n\
         for (int k = 0; k < {c}; k++) {{\n\
         const double y = k == l ? 1.0 : 0.0;\n\
         const float gk = (float)((p[k] - y) / m + p[k] * (g[k] - dot));\n\
         o[(i64)k * {s}] = (float)((double)gk * wt);\n\
         }}\n\
         }}\n",
        sm = softmax(c, s),
        c2 = 2 * c,
        cs = c * s,
        fg = c - 1,
    ));
    Ok(LossKernels {
        source: src,
        kernels: vec![
            (format!("{prefix}_sums"), launch(blocks, true)),
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
