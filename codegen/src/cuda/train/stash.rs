//! The kernels of `e2enc train --precision bf16` (`e2enc_train::memplan::Saved::Bf16`): values
//! kept for the backward pass are rounded to bfloat16 where they are computed, packed to 16-bit
//! words after their last forward reader, and unpacked to f32 before their backward readers.
//!
//! - `e2s_round`: `A[i]` rounded to bfloat16 in place (to nearest, ties to even; a NaN stays a
//!   NaN, quieted; the same bits as the host's `e2enc_codegen::precision::bf16_bits`);
//! - `e2s_pack`: `A` as 16-bit words (the high halves of the already rounded `W`);
//! - `e2s_unpack`: the 16-bit words at `W` widened to f32 in `A`.
//!
//! `I[0]` is the element count; each kernel is a grid-stride loop over [`BLOCKS`] blocks, and
//! integer arithmetic only, so the GPU and the host emulation give the same bits.

use super::THREADS;
use crate::emit::Launch;

/// Blocks of every stash launch.
pub const BLOCKS: u32 = 512;

/// The stash kernels' text and `(name, launch)` of `e2s_round`, `e2s_pack`, `e2s_unpack`.
pub fn stash_kernels() -> (String, Vec<(String, Launch)>) {
    let lp = format!(
        "for (int i = (int)(blockIdx.x * {THREADS} + threadIdx.x); i < n; i += {BLOCKS} * {THREADS})"
    );
    let src = format!(
        "__device__ __forceinline__ unsigned e2s_bf16(float x) {{
    const unsigned u = (unsigned)__float_as_int(x);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu) != 0u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}}
extern \"C\" __global__ void __launch_bounds__({THREADS}) e2s_round(float *__restrict__ A,
    const float *__restrict__ W, const int *__restrict__ I) {{
    const int n = I[0];
    {lp} A[i] = __int_as_float((int)(e2s_bf16(A[i]) << 16));
}}
extern \"C\" __global__ void __launch_bounds__({THREADS}) e2s_pack(float *__restrict__ A,
    const float *__restrict__ W, const int *__restrict__ I) {{
    unsigned short *__restrict__ h = (unsigned short *)(void *)A;
    const int n = I[0];
    {lp} h[i] = (unsigned short)((unsigned)__float_as_int(W[i]) >> 16);
}}
extern \"C\" __global__ void __launch_bounds__({THREADS}) e2s_unpack(float *__restrict__ A,
    const float *__restrict__ W, const int *__restrict__ I) {{
    const unsigned short *__restrict__ h = (const unsigned short *)(const void *)W;
    const int n = I[0];
    {lp} A[i] = __int_as_float((int)((unsigned)h[i] << 16));
}}
"
    );
    (
        src,
        super::grid_stride_launches(&["e2s_round", "e2s_pack", "e2s_unpack"], BLOCKS),
    )
}
