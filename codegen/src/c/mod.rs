//! The C (AVX2 + FMA; AVX-512 for the stride-1 fast convs) kernel emitters: one node in, a short list of specialized C functions out.
//!
//! Every kernel follows the ABI of [`crate::emit`]: `void NAME(float *A, const float *W,
//! const int32_t *I, int64_t t0, int64_t t1)` over tiles `[t0, t1)`. Shapes, strides and arena
//! offsets are constants in the text; constants (weights re-laid-out for the kernel, index lists)
//! are appended to [`Consts`] and their offsets baked in. The text depends only on the node, so
//! the same model gives the same bytes.
//!
//! Contract kept by every kernel here:
//! - a tile writes only its own part of the output view (whole padded rows or planes, the
//!   padding written as zeros, so the layout invariant holds whatever the arena held before) and
//!   its own slots of the node's scratch;
//! - results do not depend on how tiles are split among threads: no tile reads what another
//!   tile of the same kernel writes, and every cross-tile reduction (instance-norm statistics)
//!   is a later kernel that sums per-tile partials in tile order.
//!
//! Files: `conv.rs` normalizes `Conv3d` / `ConvTranspose3d` / `FusedConv3d` and picks a path:
//! `conv_fast.rs` (kh = kw in {1, 3}, stride 1 or 2 in H/W, any depth geometry: the hot path,
//! its micro kernels in `conv_micro.rs`, 16-lane AVX-512 ones in `conv_micro512.rs`),
//! `conv_up.rs` (2x2 transposed, stride 2, the upsampling convs), `conv_generic.rs` (everything
//! else, scalar loops); `norm.rs` the instance-norm statistics and apply kernels; `simple.rs` the
//! elementwise and copy ops and max pooling; `channel.rs` softmax and argmax.
//!
//! `Argmax` writes int32 bit patterns into an f32 arena view of shape `[N, 1, D, H, W]` (the i32
//! result `[N, D, H, W]` with a unit channel axis); the padding stays all-zero bits.

mod channel;
mod conv;
mod conv_fast;
mod conv_generic;
mod conv_micro;
mod conv_micro512;
mod conv_up;
mod norm;
mod simple;
mod text;

use e2enc_ir::{Op, TensorType};

use crate::emit::{Consts, EmitError, Kernel, NodeCtx};

pub use conv::{reads_channel_map as conv_reads_channel_map, ConvPath};

/// The C prelude every AVX2 bundle starts with: includes and the shared `static inline` helpers.
pub fn prelude() -> String {
    PRELUDE.to_string()
}

/// The prelude of a bundle for `isa` (AVX-512 adds its 16-lane helpers).
pub fn prelude_for(isa: crate::target::Target) -> String {
    match isa {
        crate::target::Target::X86Avx512 => format!("{PRELUDE}{PRELUDE512}"),
        _ => prelude(),
    }
}

/// Arena scratch (in f32 elements) that the kernels of a node with this op and these types use.
pub fn scratch_elems(op: &Op, inputs: &[TensorType], output: &TensorType) -> usize {
    match op {
        Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) => {
            conv::scratch_elems(op, inputs, output)
        }
        Op::InstanceNorm { .. } => norm::standalone_scratch(output),
        _ => 0,
    }
}

/// The kernels of one node, to run in the returned order (each over all its tiles).
pub fn emit(ctx: &NodeCtx, consts: &mut Consts) -> Result<Vec<Kernel>, EmitError> {
    match ctx.op {
        Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) => conv::emit(ctx, consts),
        Op::InstanceNorm { eps } => norm::emit_standalone(ctx, consts, *eps),
        Op::LeakyRelu { slope } => simple::leaky_relu(ctx, *slope),
        Op::Add => simple::add(ctx),
        Op::DepthShift(a) => simple::depth_shift(ctx, a.groups),
        Op::SelectChannels { axis, ranges } => simple::select(ctx, *axis, ranges),
        Op::Concat => simple::concat(ctx),
        Op::MaxPool3d(a) => simple::max_pool(ctx, a),
        Op::Softmax => channel::softmax(ctx),
        Op::Argmax => channel::argmax(ctx),
        Op::Input { .. } | Op::Weight { .. } => Err(err(ctx, "inputs and weights have no kernel")),
        Op::ConvBackwardData(_)
        | Op::ConvBackwardWeight(_)
        | Op::ChannelSum
        | Op::DepthShiftBackward(_)
        | Op::InstanceNormBackward { .. }
        | Op::InstanceNormGammaGrad { .. }
        | Op::LeakyReluBackward { .. }
        | Op::MaxPoolBackward(_) => Err(err(
            ctx,
            "not supported by the C code generator: training op",
        )),
    }
}

/// An [`EmitError`] naming the node.
pub(crate) fn err(ctx: &NodeCtx, msg: impl Into<String>) -> EmitError {
    EmitError {
        what: format!("{} ({} {})", ctx.label, ctx.op.mnemonic(), ctx.node),
        msg: msg.into(),
    }
}

/// Checks the number of activation inputs and constants a node came with.
pub(crate) fn expect_operands(
    ctx: &NodeCtx,
    inputs: usize,
    consts: usize,
) -> Result<(), EmitError> {
    if ctx.inputs.len() != inputs || ctx.consts.len() != consts {
        return Err(err(
            ctx,
            format!(
                "expected {inputs} activation input(s) and {consts} constant(s), got {} and {}",
                ctx.inputs.len(),
                ctx.consts.len()
            ),
        ));
    }
    Ok(())
}

const PRELUDE: &str = r#"/* e2enc generated kernels: AVX2 + FMA, planar NCDHW with zero-padded planes. */
#include <immintrin.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

/* Leaky ReLU on 8 lanes: x if x >= 0 else slope * x (NaN stays NaN). */
static inline __m256 e2_lrelu(__m256 v, __m256 slope) {
    __m256 neg = _mm256_mul_ps(v, slope);
    return _mm256_blendv_ps(neg, v, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ));
}

static inline float e2_lrelu1(float v, float slope) { return v >= 0.0f ? v : slope * v; }

/* Lane mask with the first n (0..8) lanes set. */
static inline __m256 e2_mask(int n) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_ps((const float *)(m + 8 - n));
}

/* Adds the lanes of v to s (sum) and their squares to q, in double. */
static inline void e2_stats(__m256d *s, __m256d *q, __m256 v) {
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    *s = _mm256_add_pd(*s, _mm256_add_pd(lo, hi));
    *q = _mm256_fmadd_pd(lo, lo, *q);
    *q = _mm256_fmadd_pd(hi, hi, *q);
}

static inline double e2_hsum_pd(__m256d v) {
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(a) + _mm_cvtsd_f64(_mm_unpackhi_pd(a, a));
}

/* The even lanes of (a, b): [a0 a2 a4 a6 b0 b2 b4 b6]. */
static inline __m256 e2_even(__m256 a, __m256 b) {
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* The odd lanes of (a, b): [a1 a3 a5 a7 b1 b3 b5 b7]. */
static inline __m256 e2_odd(__m256 a, __m256 b) {
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Max that propagates NaN from either operand. */
static inline __m256 e2_nanmax(__m256 a, __m256 b) {
    __m256 m = _mm256_max_ps(a, b); /* b when either is NaN */
    return _mm256_blendv_ps(m, a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}

/* exp on 8 lanes (Cephes-style, relative error about 2e-7; exp(-inf) = 0, NaN in, NaN out). */
static inline __m256 e2_exp(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.0f), lo = _mm256_set1_ps(-87.0f);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    y = _mm256_andnot_ps(under, y);
    return _mm256_blendv_ps(y, x, nan);
}
"#;

const PRELUDE512: &str = r#"
/* AVX-512F helpers. Leaky ReLU on 16 lanes (same results as e2_lrelu, NaN stays NaN). */
static inline __m512 e2_lrelu16(__m512 v, __m512 slope) {
    __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_mul_ps(v, neg, v, slope);
}

/* e2_stats over 16 lanes: the low 8, then the high 8. */
static inline void e2_stats16(__m256d *s, __m256d *q, __m512 v) {
    e2_stats(s, q, _mm512_castps512_ps256(v));
    e2_stats(s, q, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
"#;
