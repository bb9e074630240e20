//! The optimizer on the GPU: nnU-Net's SGD (`e2enc_train::optim`: weight decay, Nesterov
//! momentum, the gradient norm clipped at a maximum) and the DSFF masks re-applied, on weights
//! and momentum that stay on the device between steps.
//!
//! - `e2o_sumsq`: one block per gradient tensor sums its squares (double, the block's threads
//!   in order); the host adds the tensors' sums in order, takes the square root and decides the
//!   clipping factor as the CPU does (`coef = max / (norm + 1e-6)`, applied when below 1);
//! - `e2o_sgd`: one launch per weight, element by element in f32 exactly as the CPU's
//!   `Sgd::step` (`d = g·c + wd·w; buf = mu·buf + d; d = d + mu·buf` or `d = buf`; `w = w - lr·d`,
//!   every product and sum rounded on its own: `__fmul_rn`/`__fadd_rn` keep NVRTC from fusing
//!   them), then a dead DSFF kernel's weights and momentum set to zero.
//!
//! - `e2o_l1`: the L1 norm of every kernel of a DSFF weight (double, the kernel's values added in
//!   order from zero, one thread per kernel: the host's `e2enc_train::sparse::kernel_l1` bits),
//!   for prune-and-regrow decided on the host from a few bytes per kernel instead of the weights;
//! - `e2o_zero`: the kernels an update pruned or regrew set to zero in a weight and its momentum
//!   (as the host's `Masks::update` does).
//!
//! Arguments: `sumsq` A = the sums (doubles, one per tensor), W = table of the gradients, I = their
//! lengths; `sgd` A = the weight, W = table `[gradient, momentum, scalars, live]` (scalars: doubles
//! `[lr, momentum, weight decay, clip factor, nesterov]`; live: one int per `(d0, d1)` kernel, or
//! null for a dense weight), I = `[length, kernel volume]`; `l1` A = the norms (doubles), W = the
//! weight, I = `[length, kernel volume]`; `zero` A = the tensor, W = one int per kernel (non-zero:
//! zero it), I = `[length, kernel volume]`.

use super::THREADS;
use crate::emit::Launch;

/// Blocks of an `e2o_sgd` launch (a grid-stride loop covers any length).
pub const SGD_BLOCKS: u32 = 512;

/// Blocks of an `e2o_l1` launch (grid-stride over the kernels).
pub const L1_BLOCKS: u32 = 64;

/// The optimizer kernels for `tensors` gradient tensors: the text (after the training prelude)
/// and `(name, launch)` of `e2o_sumsq`, `e2o_sgd`, `e2o_l1` and `e2o_zero`.
pub fn optimizer_kernels(tensors: usize) -> (String, Vec<(String, Launch)>) {
    let src = format!(
        "#ifdef E2ENC_EMULATE
#define e2o_mul(a, b) ((a) * (b))
#define e2o_add(a, b) ((a) + (b))
#else
#define e2o_mul(a, b) __fmul_rn(a, b)
#define e2o_add(a, b) __fadd_rn(a, b)
#endif
extern \"C\" __global__ void __launch_bounds__({THREADS}) e2o_sumsq(float *__restrict__ A,
    const float *__restrict__ W, const int *__restrict__ I) {{
    __shared__ double red[{THREADS}];
    const float *const *in = (const float *const *)(const void *)W;
    const float *__restrict__ g = in[blockIdx.x];
    const int n = I[blockIdx.x];
    double s = 0.0;
    for (int i = (int)threadIdx.x; i < n; i += {THREADS}) {{ const double v = (double)g[i]; s += v * v; }}
    s = e2g_bsum(s, red);
    if (threadIdx.x == 0) ((double *)(void *)A)[blockIdx.x] = s;
}}
extern \"C\" __global__ void __launch_bounds__({THREADS}) e2o_sgd(float *__restrict__ A,
    const float *__restrict__ W, const int *__restrict__ I) {{
    const float *const *in = (const float *const *)(const void *)W;
    const float *__restrict__ g = in[0];
    float *__restrict__ buf = (float *)(void *)in[1];
    const double *__restrict__ sc = (const double *)(const void *)in[2];
    const int *__restrict__ live = (const int *)(const void *)in[3];
    const int n = I[0], kv = I[1];
    const float lr = (float)sc[0], mu = (float)sc[1], wd = (float)sc[2], c = (float)sc[3];
    const int nesterov = sc[4] != 0.0;
    for (int i = (int)(blockIdx.x * {THREADS} + threadIdx.x); i < n; i += {SGD_BLOCKS} * {THREADS}) {{
        const float w = A[i];
        float d = e2o_add(e2o_mul(g[i], c), e2o_mul(wd, w));
        const float b = e2o_add(e2o_mul(mu, buf[i]), d);
        d = nesterov ? e2o_add(d, e2o_mul(mu, b)) : b;
        float nw = e2o_add(w, -e2o_mul(lr, d));
        float nb = b;
        if (live != 0 && live[i / kv] == 0) {{ nw = 0.0f; nb = 0.0f; }}
        A[i] = nw;
        buf[i] = nb;
    }}
}}
extern \"C\" __global__ void __launch_bounds__({THREADS}) e2o_l1(float *__restrict__ A,
    const float *__restrict__ W, const int *__restrict__ I) {{
    double *__restrict__ out = (double *)(void *)A;
    const int kv = I[1], kernels = I[0] / I[1];
    for (int k = (int)(blockIdx.x * {THREADS} + threadIdx.x); k < kernels; k += {L1_BLOCKS} * {THREADS}) {{
        double s = 0.0;
        for (int j = 0; j < kv; j++) s += (double)fabsf(W[k * kv + j]);
        out[k] = s;
    }}
}}
extern \"C\" __global__ void __launch_bounds__({THREADS}) e2o_zero(float *__restrict__ A,
    const float *__restrict__ W, const int *__restrict__ I) {{
    const int *__restrict__ z = (const int *)(const void *)W;
    const int n = I[0], kv = I[1];
    for (int i = (int)(blockIdx.x * {THREADS} + threadIdx.x); i < n; i += {SGD_BLOCKS} * {THREADS}) {{
        if (z[i / kv] != 0) A[i] = 0.0f;
    }}
}}
"
    );
    let launch = |grid: u32, sync: bool| Launch {
        grid: [grid, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        sync,
    };
    (
        src,
        vec![
            ("e2o_sumsq".into(), launch(tensors.max(1) as u32, true)),
            ("e2o_sgd".into(), launch(SGD_BLOCKS, false)),
            ("e2o_l1".into(), launch(L1_BLOCKS, false)),
            ("e2o_zero".into(), launch(SGD_BLOCKS, false)),
        ],
    )
}
