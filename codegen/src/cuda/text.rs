//! The text of CUDA kernels: the header-free prelude, the one kernel signature, launches, and
//! index expressions into the padded arena views.
//!
//! Every CUDA kernel of a bundle is
//!
//! ```c
//! extern "C" __global__ void __launch_bounds__(T) NAME(float *__restrict__ A,
//!     const float *__restrict__ W, const int *__restrict__ I)
//! ```
//!
//! with `A` the activation arena (one device allocation), `W` and `I` the constant blobs, as in
//! the C kernels (`crate::emit`), but without a tile range: the launch ([`Launch`]: grid, block,
//! shared memory) covers the work, and a bundle step's `tiles` is its number of blocks (the
//! host emulation runs blocks as the CPU runs tiles). Kernels read activations only where
//! values are (explicit bounds checks, never the zero padding) and write only values, so the
//! padding of a view, which the CUDA kernels neither read nor keep, does not matter on a GPU.
//! The text is plain CUDA C++ without any `#include` (NVRTC from the PyPI wheel has no headers);
//! the host emulation (`e2enc_runtime::emulate`) compiles the same text as C++ against its shim.

use std::fmt::Write;

use crate::emit::{EmitError, Kernel, Launch, NodeCtx};
use crate::layout::{View, PAD_LEFT, PAD_ROWS};

/// Threads per block of the one-thread-per-value kernels.
pub const THREADS: u32 = 256;

/// The tensor-core helpers (`e2_tf32`, `e2_mma_tf32`, `e2_bf16x2`, `e2_mma_bf16`) as inline
/// PTX, which the host emulation's shim defines itself (`E2ENC_EMULATE`); in front of the
/// bundle kernels and the training kernels alike.
macro_rules! mma_helpers {
    () => {
        r#"#ifndef E2ENC_EMULATE
/* f32 -> tf32, to nearest with ties away (the emulation shim defines both from the PTX spec). */
__device__ __forceinline__ unsigned e2_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
/* d += A * B on tensor cores: m16n8k8, A 16x8 and B 8x8 TF32, d 16x8 f32 (PTX fragments). */
__device__ __forceinline__ void e2_mma_tf32(float *d, const unsigned *a, const unsigned *b) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
/* Two f32 -> one bf16x2 register (lo in the low half), to nearest even. */
__device__ __forceinline__ unsigned e2_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
/* d += A * B on tensor cores: m16n8k16, A 16x16 and B 16x8 bf16, d 16x8 f32 (PTX fragments). */
__device__ __forceinline__ void e2_mma_bf16(float *d, const unsigned *a, const unsigned *b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif
"#
    };
}
pub(crate) use mma_helpers;

/// The text in front of every kernel of a CUDA bundle.
pub const PRELUDE: &str = concat!(
    r#"/* Header-free CUDA C++ (NVRTC ships no headers); the host emulation compiles it too. */
typedef long long i64;
__device__ __forceinline__ float e2_lrelu(float v, float s) { return v >= 0.0f ? v : s * v; }
"#,
    mma_helpers!()
);

/// A kernel with `body` as its text, launched as `grid` blocks of `block` threads.
pub fn kernel(
    name: &str,
    body: &str,
    grid: [u32; 3],
    block: [u32; 3],
    sync: bool,
    flops: u64,
    what: String,
) -> Kernel {
    let threads: u32 = block.iter().product();
    let mut s = format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}) {name}(float *__restrict__ A, \
         const float *__restrict__ W, const int *__restrict__ I) {{\n"
    );
    for line in body.lines() {
        if line.is_empty() {
            s.push('\n');
        } else {
            let _ = writeln!(s, "    {line}");
        }
    }
    s.push_str("}\n");
    let launch = Launch {
        grid,
        block,
        shared_bytes: 0,
        sync,
    };
    Kernel {
        name: name.to_string(),
        source: s,
        tiles: launch.blocks() as usize,
        first_tile: 0,
        flops,
        what,
        launch: Some(launch),
        mma: None,
    }
}

/// `k` (from [`kernel`]) declared to run with at least `blocks` blocks per SM in its launch
/// bounds: without a minimum, ptxas held some tensor-core training kernels to 48 registers
/// and spilled (sm_80); with one it sizes registers for that many blocks.
pub fn min_blocks(mut k: Kernel, blocks: u32) -> Kernel {
    let threads: u32 = k.launch.as_ref().map_or(1, |l| l.block.iter().product());
    k.source = k.source.replacen(
        &format!("__launch_bounds__({threads})"),
        &format!("__launch_bounds__({threads}, {blocks})"),
        1,
    );
    k
}

/// The grid of `blocks` blocks along x, refused past CUDA's limit.
pub fn grid_x(ctx: &NodeCtx, blocks: u64) -> Result<[u32; 3], EmitError> {
    match u32::try_from(blocks) {
        Ok(b) if b <= i32::MAX as u32 => Ok([b.max(1), 1, 1]),
        _ => Err(EmitError {
            what: ctx.label.clone(),
            msg: format!("{blocks} thread blocks exceed CUDA's grid limit"),
        }),
    }
}

/// A CUDA grid dimension y or z (at most 65535).
pub fn grid_yz(ctx: &NodeCtx, n: usize, what: &str) -> Result<u32, EmitError> {
    match u32::try_from(n) {
        Ok(v) if (1..=65535).contains(&v) => Ok(v),
        _ => Err(EmitError {
            what: ctx.label.clone(),
            msg: format!("{what} = {n} does not fit a CUDA grid dimension (1..=65535)"),
        }),
    }
}

/// The arena index (an `i64` expression) of value `(n, c, z, y, x)` of view `v`; the arguments
/// are C expressions.
pub fn at(v: &View, n: &str, c: &str, z: &str, y: &str, x: &str) -> String {
    format!(
        "({}LL + (i64)({n}) * {}LL + (i64)({c}) * {}LL + (i64)({z}) * {}LL + (i64)({y}) * {} + ({x}))",
        v.offset + PAD_ROWS * v.row + PAD_LEFT,
        v.n_stride,
        v.c_stride,
        v.d_stride,
        v.row
    )
}

/// The opening of a one-thread-per-value kernel over the values of `v`: returns past the end,
/// and binds `n`, `c`, `z`, `y`, `x`.
pub fn decode(v: &View) -> String {
    let [n, c, d, h, w] = v.shape;
    format!(
        "const i64 t = (i64)blockIdx.x * {THREADS} + threadIdx.x;
if (t >= {total}LL) return;
const int x = (int)(t % {w}); i64 r = t / {w};
const int y = (int)(r % {h}); r /= {h};
const int z = (int)(r % {d}); r /= {d};
const int c = (int)(r % {c}); const int n = (int)(r / {c});
(void)n; (void)c; (void)z; (void)y; (void)x;
",
        total = n * c * d * h * w,
    )
}

/// Number of values of a view.
pub fn values(v: &View) -> u64 {
    v.shape.iter().map(|&s| s as u64).product()
}

/// A one-thread-per-value kernel over the values of `out`: `body` follows [`decode`].
pub fn per_value(
    ctx: &NodeCtx,
    suffix: &str,
    out: &View,
    body: &str,
    flops: u64,
    what: &str,
) -> Result<Kernel, EmitError> {
    let blocks = values(out).div_ceil(u64::from(THREADS));
    Ok(kernel(
        &format!("{}{suffix}", ctx.prefix),
        &format!("{}{body}", decode(out)),
        grid_x(ctx, blocks)?,
        [THREADS, 1, 1],
        false,
        flops,
        format!("{} {what}", ctx.label),
    ))
}

/// A float literal CUDA and C++ read back exactly (`f` suffix; no `inf`/`nan` spellings exist
/// without headers, so those are bit casts).
pub fn cf(v: f32) -> String {
    if v.is_finite() {
        let s = format!("{v:?}");
        if s.contains(['.', 'e', 'E']) {
            format!("{s}f")
        } else {
            format!("{s}.0f")
        }
    } else {
        format!("__int_as_float({})", v.to_bits() as i32)
    }
}
