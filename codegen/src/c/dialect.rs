//! The C renderer's dialect tables: how one kernel text becomes x86 AVX2, x86 AVX-512, aarch64
//! NEON or portable C.
//!
//! Every C emitter writes its kernel once, in a small vector vocabulary, and never names an
//! instruction set: `e2f8` is a vector of 8 floats with `e2f8_load`, `e2f8_store`, `e2f8_set1`,
//! `e2f8_fma(a, b, c)` (= a * b + c), `e2f8_keep(v, n)` (lanes from `n` on set to zero), the
//! stride-2 deinterleave `e2f8_even` / `e2f8_odd`, the upsampling interleave `e2f8_zip_lo` /
//! `e2f8_zip_hi`, `e2f8_lrelu`, `e2f8_nanmax`, `e2f8_exp`, `e2f8_argmax_step`, and double
//! statistics accumulators `e2st` (`e2f8_stats` adds the lanes and their squares, `e2st_sum`
//! reduces in a fixed order). Dialects with wider registers add `e2f16` (16 lanes, with masked
//! loads and stores `e2f16_loadn` / `e2f16_storen`, `e2f16_alignr`, the stride-2 deinterleave
//! `e2f16_even` and the interleave `e2f16_zip_lo` / `e2f16_zip_hi`), which the conv and
//! upsampling micro kernels use where [`Dialect::wide`] says so; the same micro-kernel text
//! serves both widths
//! (`Vf` names the vocabulary of one width).
//!
//! A dialect is a table: its name, its prelude (the definitions of the vocabulary: macros over
//! intrinsics where an intrinsic is the operation, `static inline` functions where it takes a
//! few), and its capabilities. x86's definitions are the intrinsics the kernels used before this
//! table existed, so their machine code is unchanged. NEON holds 8 lanes as two `float32x4_t`
//! (aarch64 has 32 vector registers, so the AVX2 register blocking fits); portable C holds them
//! as a GCC/Clang generic vector (`vector_size(32)`: no intrinsics, lowered to whatever SIMD the
//! host has), or as `float v[8]` with loops for any other C99 compiler.
//!
//! A CUDA renderer (next) plugs in beside this one, not inside it: it takes the same kernel
//! descriptions the planner chooses (today `conv_fast::FastConv` for the hot convolutions:
//! geometry, views, constant offsets, shifted entries, live lists, epilogue; the other kernels
//! still lower and render in one function, `conv::ConvSpec` being their normalized input), maps
//! tiles to thread blocks instead of `[t0, t1)` loops and writes its own text; what it can share
//! from here is the vocabulary idea (a CUDA `e2f8` would be a per-thread register row) and
//! `text.rs`'s exact float literals.

use crate::target::Target;

/// A dialect of the C renderer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    pub target: Target,
    /// Lanes of the widest vectors (`e2f16` when 16), used by the stride-1 conv micro kernels.
    pub wide: usize,
    /// `e2f16_alignr` exists (AVX-512's `valignd`): the sparse 3x3 micro kernel may cut its tap
    /// vectors from aligned loads.
    pub alignr: bool,
}

impl Dialect {
    pub fn of(target: Target) -> Dialect {
        Dialect {
            target,
            wide: target.lanes(),
            alignr: target == Target::X86Avx512,
        }
    }

    /// The C prelude: includes and the vector vocabulary.
    pub fn prelude(&self) -> String {
        let body = match self.target {
            Target::X86Avx2 => X86,
            Target::X86Avx512 => return format!("{X86}{X86_512}"),
            Target::Aarch64Neon => return format!("{NEON}{EXP1}{NEON_EXP}"),
            // CUDA targets have their own renderer (`crate::cuda`); were a C dialect asked of
            // one, portable C is the one that compiles anywhere.
            Target::Portable | Target::CudaSm80 | Target::CudaSm90 => {
                return format!("{PORTABLE}{EXP1}{PORTABLE_EXP}")
            }
        };
        body.to_string()
    }
}

/// The names of the vector vocabulary of one width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vf {
    pub lanes: usize,
}

impl Vf {
    pub const V8: Vf = Vf { lanes: 8 };

    /// The vector type (`e2f8`, `e2f16`).
    pub fn ty(self) -> String {
        format!("e2f{}", self.lanes)
    }

    /// The operation `op` of this width (`e2f8_fma`, `e2f16_fma`, ...).
    pub fn op(self, op: &str) -> String {
        format!("e2f{}_{op}", self.lanes)
    }
}

/// The scalar `exp` of the dialects without a vector one (the same polynomial and roundings as
/// x86's `e2f8_exp`, lane by lane).
const EXP1: &str = r#"
/* exp (Cephes-style polynomial, relative error about 2e-7; exp(-inf) = 0, NaN in, NaN out). */
static inline float e2_exp1(float x) {
    if (x != x) return x;
    if (x < -87.0f) return 0.0f;
    float xc = x > 88.0f ? 88.0f : x;
    float fx = nearbyintf(xc * 1.44269504088896341f);
    float r = fmaf(-fx, 0.693359375f, xc);
    r = fmaf(-fx, -2.12194440e-4f, r);
    float y = 1.9875691500e-4f;
    y = fmaf(y, r, 1.3981999507e-3f);
    y = fmaf(y, r, 8.3334519073e-3f);
    y = fmaf(y, r, 4.1665795894e-2f);
    y = fmaf(y, r, 1.6666665459e-1f);
    y = fmaf(y, r, 5.0000001201e-1f);
    y = fmaf(y, r * r, r + 1.0f);
    union { int32_t i; float f; } e;
    e.i = ((int32_t)fx + 127) << 23;
    return y * e.f;
}
"#;

const X86: &str = r#"/* dialect: x86 AVX2 + FMA (8 lanes: __m256) */
#include <immintrin.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

typedef __m256 e2f8;
typedef __m256d e2st;
#define e2f8_load(p) _mm256_loadu_ps(p)
#define e2f8_store(p, v) _mm256_storeu_ps(p, v)
#define e2f8_set1(x) _mm256_set1_ps(x)
#define e2f8_bcast(p) _mm256_broadcast_ss(p)
#define e2f8_zero() _mm256_setzero_ps()
#define e2f8_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define e2f8_add(a, b) _mm256_add_ps(a, b)
#define e2f8_sub(a, b) _mm256_sub_ps(a, b)
#define e2f8_mul(a, b) _mm256_mul_ps(a, b)
#define e2f8_div(a, b) _mm256_div_ps(a, b)
#define e2f8_max(a, b) _mm256_max_ps(a, b)
#define e2st_zero() _mm256_setzero_pd()
#define e2_prefetch(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

static inline float e2_lrelu1(float v, float slope) { return v >= 0.0f ? v : slope * v; }

/* Leaky ReLU on 8 lanes: x if x >= 0 else slope * x (NaN stays NaN). */
static inline __m256 e2f8_lrelu(__m256 v, __m256 slope) {
    __m256 neg = _mm256_mul_ps(v, slope);
    return _mm256_blendv_ps(neg, v, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ));
}

/* Lane mask with the first n (0..8) lanes set. */
static inline __m256 e2_mask(int n) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_ps((const float *)(m + 8 - n));
}

/* v with lanes n.. set to zero. */
#define e2f8_keep(v, n) _mm256_and_ps(v, e2_mask(n))

/* The first n lanes from p, the others zero (nothing past them is read). */
#define e2f8_loadn(p, n) _mm256_maskload_ps(p, _mm256_castps_si256(e2_mask(n)))

/* Adds the lanes of v to s (sum) and their squares to q, in double. */
static inline void e2f8_stats(__m256d *s, __m256d *q, __m256 v) {
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    *s = _mm256_add_pd(*s, _mm256_add_pd(lo, hi));
    *q = _mm256_fmadd_pd(lo, lo, *q);
    *q = _mm256_fmadd_pd(hi, hi, *q);
}

static inline double e2st_sum(__m256d v) {
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(a) + _mm_cvtsd_f64(_mm_unpackhi_pd(a, a));
}

/* The even lanes of (a, b): [a0 a2 a4 a6 b0 b2 b4 b6]. */
static inline __m256 e2f8_even(__m256 a, __m256 b) {
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* The odd lanes of (a, b): [a1 a3 a5 a7 b1 b3 b5 b7]. */
static inline __m256 e2f8_odd(__m256 a, __m256 b) {
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Interleaved lanes: zip_lo = [a0 b0 a1 b1 a2 b2 a3 b3], zip_hi = [a4 b4 .. a7 b7]. */
static inline __m256 e2f8_zip_lo(__m256 a, __m256 b) {
    return _mm256_permute2f128_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b), 0x20);
}
static inline __m256 e2f8_zip_hi(__m256 a, __m256 b) {
    return _mm256_permute2f128_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b), 0x31);
}

/* Max that propagates NaN from either operand. */
static inline __m256 e2f8_nanmax(__m256 a, __m256 b) {
    __m256 m = _mm256_max_ps(a, b); /* b when either is NaN */
    return _mm256_blendv_ps(m, a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}

/* One channel of a running argmax: where v beats the best bv (NaN beats all; the first NaN
   stays), bv = v and bi = the bits of channel c. */
static inline void e2f8_argmax_step(__m256 *bv, __m256 *bi, __m256 v, int32_t c) {
    const __m256 up = _mm256_andnot_ps(_mm256_cmp_ps(*bv, *bv, _CMP_UNORD_Q),
        _mm256_or_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(v, *bv, _CMP_GT_OQ)));
    *bv = _mm256_blendv_ps(*bv, v, up);
    *bi = _mm256_blendv_ps(*bi, _mm256_castsi256_ps(_mm256_set1_epi32(c)), up);
}

/* exp on 8 lanes (Cephes-style, relative error about 2e-7; exp(-inf) = 0, NaN in, NaN out). */
static inline __m256 e2f8_exp(__m256 x) {
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

const X86_512: &str = r#"
/* dialect: x86 AVX-512F adds 16 lanes (__m512) for the conv and upsampling micro kernels. */
typedef __m512 e2f16;
#define e2f16_load(p) _mm512_loadu_ps(p)
#define e2f16_store(p, v) _mm512_storeu_ps(p, v)
#define e2f16_set1(x) _mm512_set1_ps(x)
#define e2f16_bcast(p) _mm512_set1_ps(*(p))
#define e2f16_zero() _mm512_setzero_ps()
#define e2f16_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define e2f16_add(a, b) _mm512_add_ps(a, b)
#define e2f16_sub(a, b) _mm512_sub_ps(a, b)
/* Lane mask with the first n (0..16) lanes set. */
#define e2f16_mask(n) ((__mmask16)((1u << (n)) - 1u))
#define e2f16_keep(v, n) _mm512_maskz_mov_ps(e2f16_mask(n), v)
#define e2f16_loadn(p, n) _mm512_maskz_loadu_ps(e2f16_mask(n), p)
#define e2f16_storen(p, v, n) _mm512_mask_storeu_ps(p, e2f16_mask(n), v)
/* Lanes k .. k + 15 of the 32-lane concatenation [lo, hi] (k a constant). */
#define e2f16_alignr(hi, lo, k) \
    _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), k))
/* The even lanes of the 32-lane concatenation [a, b] (stride-2 taps): a0 a2 .. a14 b0 .. b14. */
static inline __m512 e2f16_even(__m512 a, __m512 b) {
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(a, idx, b);
}

/* Prefetch into L2 (data wanted by a later tile). */
#define e2_prefetch2(p) _mm_prefetch((const char *)(p), _MM_HINT_T1)
/* The 8 floats at p in both halves. */
#define e2f16_bcast8(p) _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(p))))
/* Lanes 8..15 of v to p. */
#define e2f16_store_hi(p, v) \
    _mm256_storeu_ps(p, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
/* A streaming (non-temporal) store of a 64-byte line (a plain store where p is not 64-byte
   aligned: an arena that is not); e2_sfence orders them before what follows. */
#define e2f16_stream(p, v) \
    do { float *e2_p = (p); \
         if ((uintptr_t)e2_p & 63) _mm512_storeu_ps(e2_p, v); else _mm512_stream_ps(e2_p, v); } while (0)
#define e2_sfence() _mm_sfence()

/* Interleaved lanes: zip_lo = [a0 b0 a1 b1 .. a7 b7], zip_hi = [a8 b8 .. a15 b15]. */
static inline __m512 e2f16_zip_lo(__m512 a, __m512 b) {
    return _mm512_permutex2var_ps(
        a, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), b);
}
static inline __m512 e2f16_zip_hi(__m512 a, __m512 b) {
    return _mm512_permutex2var_ps(
        a, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), b);
}

/* Leaky ReLU on 16 lanes (same results as e2f8_lrelu, NaN stays NaN). */
static inline __m512 e2f16_lrelu(__m512 v, __m512 slope) {
    __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_mul_ps(v, neg, v, slope);
}

/* e2f8_stats over 16 lanes: the low 8, then the high 8. */
static inline void e2f16_stats(__m256d *s, __m256d *q, __m512 v) {
    e2f8_stats(s, q, _mm512_castps512_ps256(v));
    e2f8_stats(s, q, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
"#;

/// The bf16 vocabulary of x86-avx512 bundles compiled with `--precision bf16` (appended to the
/// AVX-512 prelude): functions using it carry `E2_BF16`, which enables `avx512bw` and
/// `avx512bf16` for them alone, so the bundle's compiler flags stay those of the target; the
/// manifest names both features, and hosts without them refuse the bundle before any kernel
/// runs.
pub const X86_BF16: &str = r#"
/* --precision bf16: vdpbf16ps multiplies pairs of bf16 (8 significant bits, rounded to nearest
   even by vcvtne2ps2bf16) and adds both products to an f32 lane. */
#define E2_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))
/* 16 pairs (lo[i], hi[i]) of bf16 as 32-bit words, lo in the low half. */
E2_BF16 static inline __m512i e2bf_pairs(__m512 lo, __m512 hi) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
        24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}
/* acc + a[2i] b[2i] + a[2i+1] b[2i+1] per lane i, a and b pairs of bf16 as 32-bit words. */
#define e2bf_dp(acc, a, b) _mm512_dpbf16_ps(acc, (__m512bh)(a), (__m512bh)(b))
/* acc += a . (the pair at p, broadcast), the pair read by the instruction. */
#define e2bf_dpm(acc, a, p) __asm__("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*(const uint32_t *)(p)))
/* 16 bf16 pairs (32-bit words) in a register; memory is 64-byte aligned. */
typedef __m512i e2bf;
#define e2bf_bcast(p) _mm512_set1_epi32(*(const int32_t *)(p))
#define e2bf_load(p) _mm512_load_si512((const void *)(p))
#define e2bf_loadu(p) _mm512_loadu_si512((const void *)(p))
#define e2bf_store(p, v) _mm512_store_si512((void *)(p), v)
/* Words k .. k + 15 of the 32-word concatenation [lo, hi] (k a constant). */
#define e2bf_alignr(hi, lo, k) _mm512_alignr_epi32(hi, lo, k)
/* Stride-2 packing: of 32 bf16 of row a (va) and of row b (vb), the pairs of the even columns
   (a[2i], b[2i]) in *e and of the odd ones (a[2i + 1], b[2i + 1]) in *o. */
E2_BF16 static inline void e2bf_eo_split(__m512i va, __m512i vb, __m512i *e, __m512i *o) {
    static const uint16_t ie[32] __attribute__((aligned(64))) = {0, 32, 2, 34, 4, 36, 6, 38, 8, 40, 10, 42, 12, 44, 14, 46, 16, 48, 18, 50, 20, 52, 22, 54, 24, 56, 26, 58, 28, 60, 30, 62};
    static const uint16_t io[32] __attribute__((aligned(64))) = {1, 33, 3, 35, 5, 37, 7, 39, 9, 41, 11, 43, 13, 45, 15, 47, 17, 49, 19, 51, 21, 53, 23, 55, 25, 57, 27, 59, 29, 61, 31, 63};
    *e = _mm512_permutex2var_epi16(va, _mm512_load_si512((const void *)ie), vb);
    *o = _mm512_permutex2var_epi16(va, _mm512_load_si512((const void *)io), vb);
}
/* The even and odd column pairs of 32 floats at a and at b (rounded to bf16): columns whose bit
   of ma (of mb) is clear read as zero, and are not read. */
E2_BF16 static inline void e2bf_eo(const float *a, unsigned ma, const float *b, unsigned mb,
    __m512i *e, __m512i *o) {
    const __m512i va = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps((__mmask16)(ma >> 16), a + 16),
        _mm512_maskz_loadu_ps((__mmask16)ma, a));
    const __m512i vb = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps((__mmask16)(mb >> 16), b + 16),
        _mm512_maskz_loadu_ps((__mmask16)mb, b));
    e2bf_eo_split(va, vb, e, o);
}
/* 16 floats at p where bit i of m is set, zero elsewhere (lanes not set are not read). */
#define e2f16_loadm(p, m) _mm512_maskz_loadu_ps((__mmask16)(m), p)
"#;

/// Activations stored as bf16 in x86-avx512 bundles compiled with `--precision bf16` (appended
/// after [`X86_BF16`]): views of [`crate::layout::Elem::Bf16`] are `e2h *` in the kernels, and
/// the load and store vocabulary the kernels already use (`e2f16_load`, `e2f8_store`, ...)
/// becomes generic in the pointer type (C11 `_Generic`): an `e2h *` converts on the way (bf16
/// to f32 is exact, f32 to bf16 rounds to nearest even, as `vcvtne2ps2bf16`), a `float *` is
/// the f32 operation as before. Only AVX-512F instructions: no kernel needs another target.
/// Masked loads read whole 32-bit pairs of values holding a wanted lane (inside the row's
/// storage, which is a multiple of 8 values) and zero the other lanes.
pub const X86_NARROW: &str = r#"
/* bf16 activations: e2h is one stored value (the upper half of an f32). The conversions use
   avx512bw and avx512bf16 (E2_BF16): every function of a node with bf16 views carries it. */
typedef uint16_t e2h;
/* The 16 values at p (lanes set in m; the others zero, not read) as floats. */
E2_BF16 static inline __m512 e2h16_loadm(const e2h *p, unsigned m) {
    const __m512i w = _mm512_maskz_loadu_epi16((__mmask32)m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(w)), 16));
}
E2_BF16 static inline __m512 e2h16_load(const e2h *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
E2_BF16 static inline __m512 e2h16_loadn(const e2h *p, int n) { return e2h16_loadm(p, (1u << n) - 1u); }
/* 16 floats rounded to bf16 (nearest even; NaN stays NaN: vcvtneps2bf16). */
E2_BF16 static inline __m256i e2h16_bits(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }
E2_BF16 static inline void e2h16_store(e2h *p, __m512 v) {
    _mm256_storeu_si256((__m256i *)p, e2h16_bits(v));
}
E2_BF16 static inline void e2h16_storen(e2h *p, __m512 v, int n) {
    _mm512_mask_storeu_epi16(p, (__mmask32)((1u << n) - 1u), _mm512_castsi256_si512(e2h16_bits(v)));
}
E2_BF16 static inline __m256 e2h8_load(const e2h *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
E2_BF16 static inline __m256 e2h8_loadn(const e2h *p, int n) {
    return _mm512_castps512_ps256(e2h16_loadm(p, (1u << n) - 1u));
}
E2_BF16 static inline void e2h8_store(e2h *p, __m256 v) {
    _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(e2h16_bits(_mm512_castps256_ps512(v))));
}
E2_BF16 static inline void e2h8_storen(e2h *p, __m256 v, int n) {
    e2h16_storen(p, _mm512_castps256_ps512(v), n);
}
/* The f32 operations as functions, for the generic forms below. */
static inline __m512 e2f16_loadf(const float *p) { return _mm512_loadu_ps(p); }
static inline void e2f16_storef(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline __m512 e2f16_loadnf(const float *p, int n) { return _mm512_maskz_loadu_ps(e2f16_mask(n), p); }
static inline void e2f16_storenf(float *p, __m512 v, int n) { _mm512_mask_storeu_ps(p, e2f16_mask(n), v); }
static inline __m512 e2f16_loadmf(const float *p, unsigned m) { return _mm512_maskz_loadu_ps((__mmask16)m, p); }
static inline void e2f16_streamf(float *p, __m512 v) {
    if ((uintptr_t)p & 63) _mm512_storeu_ps(p, v); else _mm512_stream_ps(p, v);
}
static inline __m256 e2f8_loadf(const float *p) { return _mm256_loadu_ps(p); }
static inline void e2f8_storef(float *p, __m256 v) { _mm256_storeu_ps(p, v); }
static inline __m256 e2f8_loadnf(const float *p, int n) {
    return _mm256_maskload_ps(p, _mm256_castps_si256(e2_mask(n)));
}
static inline void e2f8_storenf(float *p, __m256 v, int n) {
    _mm256_maskstore_ps(p, _mm256_castps_si256(e2_mask(n)), v);
}
/* 16 bf16 pairs (lo[i], hi[i]) straight from stored values (the packing of conv_bf16.rs from
   bf16 storage, as e2bf_pairs from floats): lanes set in ml read from lo, in mh from hi, the
   others zero (a zero mask reads nothing). */
E2_BF16 static inline __m512i e2bf_pairs_h(const e2h *lo, unsigned ml, const e2h *hi, unsigned mh) {
    const __m512i idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9,
        40, 8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    return _mm512_permutex2var_epi16(_mm512_maskz_loadu_epi16((__mmask32)ml, lo), idx,
        _mm512_maskz_loadu_epi16((__mmask32)mh, hi));
}
/* e2bf_eo from bf16 storage. */
E2_BF16 static inline void e2bf_eo_h(const e2h *a, unsigned ma, const e2h *b, unsigned mb,
    __m512i *e, __m512i *o) {
    e2bf_eo_split(_mm512_maskz_loadu_epi16((__mmask32)ma, a), _mm512_maskz_loadu_epi16((__mmask32)mb, b), e, o);
}
/* Max that propagates NaN from either operand (a's when a is NaN). */
static inline __m512 e2f16_nanmax(__m512 a, __m512 b) {
    return _mm512_mask_mov_ps(_mm512_max_ps(a, b), _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), a);
}
/* 2-wide max pooling along a bf16 row: of the 32 values at p (lanes set in m; the others zero,
   not read), the larger of columns 2i and 2i + 1 as float lane i (NaN when either is). A 32-bit
   word holds both columns, so no shuffles: the even one is the word shifted up, the odd one the
   word with its lower half cleared. */
E2_BF16 static inline __m512 e2h_pairmax(const e2h *p, unsigned m) {
    const __m512i w = _mm512_maskz_loadu_epi16((__mmask32)m, p);
    return e2f16_nanmax(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16)),
        _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xffff0000u))));
}
/* Lanes below n of 16 floats that hold bf16 values exactly (maxima of stored values), stored
   as bf16: their upper halves, no rounding. */
E2_BF16 static inline void e2h16_store_exact(e2h *p, __m512 v, int n) {
    _mm512_mask_storeu_epi16(p, (__mmask32)((1u << n) - 1u),
        _mm512_castsi256_si512(_mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16))));
}
/* The lanes' sum in f64 (each lane converted exactly, then added as doubles). */
static inline double e2f16_sumd(__m512 v) {
    return _mm512_reduce_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)))
        + _mm512_reduce_add_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
static inline double e2f8_sumd(__m256 v) {
    return _mm512_reduce_add_pd(_mm512_cvtps_pd(v));
}
#define E2_BY_PTR(p, h, f) _Generic((p), e2h *: h, const e2h *: h, default: f)
#undef e2f16_load
#undef e2f16_store
#undef e2f16_loadn
#undef e2f16_storen
#undef e2f16_loadm
#undef e2f16_stream
#undef e2f8_load
#undef e2f8_store
#undef e2f8_loadn
#define e2f16_load(p) E2_BY_PTR(p, e2h16_load, e2f16_loadf)(p)
#define e2f16_store(p, v) E2_BY_PTR(p, e2h16_store, e2f16_storef)(p, v)
#define e2f16_loadn(p, n) E2_BY_PTR(p, e2h16_loadn, e2f16_loadnf)(p, n)
#define e2f16_storen(p, v, n) E2_BY_PTR(p, e2h16_storen, e2f16_storenf)(p, v, n)
#define e2f16_loadm(p, m) E2_BY_PTR(p, e2h16_loadm, e2f16_loadmf)(p, m)
#define e2f16_stream(p, v) E2_BY_PTR(p, e2h16_store, e2f16_streamf)(p, v)
#define e2f8_load(p) E2_BY_PTR(p, e2h8_load, e2f8_loadf)(p)
#define e2f8_store(p, v) E2_BY_PTR(p, e2h8_store, e2f8_storef)(p, v)
#define e2f8_loadn(p, n) E2_BY_PTR(p, e2h8_loadn, e2f8_loadnf)(p, n)
#define e2f8_storen(p, v, n) E2_BY_PTR(p, e2h8_storen, e2f8_storenf)(p, v, n)
"#;

/// The int8 vocabulary of x86-avx512 bundles compiled with `--precision int8` (appended to the
/// AVX-512 prelude; see `conv_int8.rs`): functions using it carry `E2_I8`, which enables
/// `avx512bw` and `avx512vnni` for them alone; the manifest names both, and hosts without them
/// refuse the bundle.
pub const X86_INT8: &str = r#"
/* --precision int8: vpdpbusd adds four products of u8 activations and i8 weights to an i32
   lane; a packed word holds the codes of columns (x - 1, x, x + 1) and a zero byte. */
#ifndef E2_I8
#define E2_I8 __attribute__((target("avx512f,avx512bw,avx512vnni")))
#endif
/* The u8 codes of 16 floats as 32-bit lanes: round(v / s + z) clamped to [0, 255]
   (inv = 1 / s, zp = z). */
E2_I8 static inline __m512i e2q_codes(__m512 v, __m512 inv, __m512 zp) {
    __m512 t = _mm512_fmadd_ps(v, inv, zp);
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    return _mm512_cvtps_epi32(t);
}
/* Column-tap words of 16 columns from the codes of the columns before (prev), at (cur) and
   after (next) them: lane i = code[x - 1] | code[x] << 8 | code[x + 1] << 16. */
E2_I8 static inline __m512i e2q_taps(__m512i prev, __m512i cur, __m512i next) {
    const __m512i l = _mm512_alignr_epi32(cur, prev, 15), r = _mm512_alignr_epi32(next, cur, 1);
    return _mm512_ternarylogic_epi32(l, _mm512_slli_epi32(cur, 8), _mm512_slli_epi32(r, 16), 0xfe);
}
/* 16 floats at p where bit i of m is set, zero elsewhere (lanes not set are not read). */
#define e2q_loadm(p, m) _mm512_maskz_loadu_ps((__mmask16)(m), p)
/* acc += the dot products of the u8 quads of x with the i8 quad at p, broadcast (`vpdpbusd`
   with a memory operand, as e2bf_dpm). */
#define e2q_dpm(acc, x, p) __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*(const uint32_t *)(p)))
/* Words of the codes of four channels (32-bit lanes, as e2q_codes gives them): byte j of each
   word from channel j. */
#define e2q_quad(c0, c1, c2, c3) _mm512_ternarylogic_epi32(_mm512_or_si512(c0, _mm512_slli_epi32(c1, 8)), \
    _mm512_slli_epi32(c2, 16), _mm512_slli_epi32(c3, 24), 0xfe)
#ifdef E2_I8_BYTES
/* Packed codes (bf16-storing bundles, which need avx512_vbmi too): 16 codes as bytes at p. */
#define e2q_store8(p, codes) _mm_storeu_si128((__m128i *)(p), _mm512_cvtepi32_epi8(codes))
/* The `vpermb` index of e2q_taps8: lane i takes bytes i, i + 1, i + 2. */
#define E2Q_TAPS8 _mm512_set_epi32(0x0011100f, 0x00100f0e, 0x000f0e0d, 0x000e0d0c, 0x000d0c0b, \
    0x000c0b0a, 0x000b0a09, 0x000a0908, 0x00090807, 0x00080706, 0x00070605, 0x00060504, \
    0x00050403, 0x00040302, 0x00030201, 0x00020100)
/* Column-tap words of the 16 columns after the code at p (p[0] is column x - 1 of lane 0):
   lane i = p[i] | p[i + 1] << 8 | p[i + 2] << 16, the fourth byte zero. */
#define e2q_taps8(p, idx) _mm512_maskz_permutexvar_epi8(0x7777777777777777ull, idx, \
    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p))))
/* The `vpermb` index of e2q_gather4: byte j of lane i from byte i of the j-th 16 bytes. */
#define E2Q_GATHER4 _mm512_set_epi32((int)0x3f2f1f0f, (int)0x3e2e1e0e, (int)0x3d2d1d0d, (int)0x3c2c1c0c, (int)0x3b2b1b0b, (int)0x3a2a1a0a, (int)0x39291909, (int)0x38281808, (int)0x37271707, (int)0x36261606, (int)0x35251505, (int)0x34241404, (int)0x33231303, (int)0x32221202, (int)0x31211101, (int)0x30201000)
/* Words of the codes of four channels' 16 columns (16 code bytes at each of p0 .. p3): byte j
   of word i is column i of channel j. */
#define e2q_gather4(p0, p1, p2, p3, idx) _mm512_permutexvar_epi8(idx, _mm512_inserti32x4( \
    _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512( \
    _mm_loadu_si128((const __m128i *)(p0))), _mm_loadu_si128((const __m128i *)(p1)), 1), \
    _mm_loadu_si128((const __m128i *)(p2)), 2), _mm_loadu_si128((const __m128i *)(p3)), 3))
#endif
"#;

/// Before [`X86_INT8`] in int8 bundles that store activations as bf16 (after [`X86_NARROW`]):
/// the int8 functions read and write bf16 views, so they may use the bf16 conversions too, and
/// pack codes as bytes, made column-tap words with `vpermb` (`avx512_vbmi`: every CPU with
/// `avx512_bf16` and `avx512_vnni` but Cooper Lake has it; see `conv_int8.rs`).
pub const X86_INT8_NARROW: &str = r#"
#define E2_I8 __attribute__((target("avx512f,avx512bw,avx512vnni,avx512bf16,avx512vbmi")))
#define E2_I8_BYTES 1
"#;

const NEON: &str = r#"/* dialect: aarch64 NEON (8 lanes as two float32x4_t) */
#include <arm_neon.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

typedef struct { float32x4_t lo, hi; } e2f8;
typedef struct { float64x2_t lo, hi; } e2st;

static inline e2f8 e2f8_load(const float *p) { e2f8 r = {vld1q_f32(p), vld1q_f32(p + 4)}; return r; }
static inline void e2f8_store(float *p, e2f8 v) { vst1q_f32(p, v.lo); vst1q_f32(p + 4, v.hi); }
static inline e2f8 e2f8_set1(float x) { e2f8 r = {vdupq_n_f32(x), vdupq_n_f32(x)}; return r; }
static inline e2f8 e2f8_bcast(const float *p) { return e2f8_set1(*p); }
static inline e2f8 e2f8_zero(void) { return e2f8_set1(0.0f); }
/* a * b + c, fused. */
static inline e2f8 e2f8_fma(e2f8 a, e2f8 b, e2f8 c) {
    e2f8 r = {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; return r;
}
#define E2_NEON_BIN(name, op) \
    static inline e2f8 name(e2f8 a, e2f8 b) { e2f8 r = {op(a.lo, b.lo), op(a.hi, b.hi)}; return r; }
E2_NEON_BIN(e2f8_add, vaddq_f32)
E2_NEON_BIN(e2f8_sub, vsubq_f32)
E2_NEON_BIN(e2f8_mul, vmulq_f32)
E2_NEON_BIN(e2f8_div, vdivq_f32)
/* a > b ? a : b per lane (b when either is NaN, as x86's max). */
static inline float32x4_t e2_max4(float32x4_t a, float32x4_t b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
E2_NEON_BIN(e2f8_max, e2_max4)
#define e2_prefetch(p) __builtin_prefetch(p)

static inline float e2_lrelu1(float v, float slope) { return v >= 0.0f ? v : slope * v; }

static inline float32x4_t e2_lrelu4(float32x4_t v, float32x4_t s) {
    return vbslq_f32(vcgeq_f32(v, vdupq_n_f32(0.0f)), v, vmulq_f32(v, s));
}
static inline e2f8 e2f8_lrelu(e2f8 v, e2f8 s) { e2f8 r = {e2_lrelu4(v.lo, s.lo), e2_lrelu4(v.hi, s.hi)}; return r; }

static inline uint32x4_t e2_mask4(int n) {
    static const uint32_t m[12] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
                                   0, 0, 0, 0, 0, 0, 0, 0};
    return vld1q_u32(m + 4 - (n < 0 ? 0 : n > 4 ? 4 : n));
}
/* v with lanes n.. set to zero. */
static inline e2f8 e2f8_keep(e2f8 v, int n) {
    e2f8 r = {vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v.lo), e2_mask4(n))),
              vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v.hi), e2_mask4(n - 4)))};
    return r;
}
/* The first n lanes from p, the others zero (nothing past them is read). */
static inline e2f8 e2f8_loadn(const float *p, int n) {
    float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < n; i++) t[i] = p[i];
    return e2f8_load(t);
}

static inline e2st e2st_zero(void) { e2st r = {vdupq_n_f64(0.0), vdupq_n_f64(0.0)}; return r; }
/* Adds the lanes of v to s and their squares to q, in double (lanes i and i + 4 share a slot). */
static inline void e2f8_stats(e2st *s, e2st *q, e2f8 v) {
    float64x2_t a0 = vcvt_f64_f32(vget_low_f32(v.lo)), a1 = vcvt_high_f64_f32(v.lo);
    float64x2_t b0 = vcvt_f64_f32(vget_low_f32(v.hi)), b1 = vcvt_high_f64_f32(v.hi);
    s->lo = vaddq_f64(s->lo, vaddq_f64(a0, b0));
    s->hi = vaddq_f64(s->hi, vaddq_f64(a1, b1));
    q->lo = vfmaq_f64(q->lo, a0, a0); q->hi = vfmaq_f64(q->hi, a1, a1);
    q->lo = vfmaq_f64(q->lo, b0, b0); q->hi = vfmaq_f64(q->hi, b1, b1);
}
static inline double e2st_sum(e2st v) {
    float64x2_t a = vaddq_f64(v.lo, v.hi);
    return vgetq_lane_f64(a, 0) + vgetq_lane_f64(a, 1);
}

static inline e2f8 e2f8_even(e2f8 a, e2f8 b) { e2f8 r = {vuzp1q_f32(a.lo, a.hi), vuzp1q_f32(b.lo, b.hi)}; return r; }
static inline e2f8 e2f8_odd(e2f8 a, e2f8 b) { e2f8 r = {vuzp2q_f32(a.lo, a.hi), vuzp2q_f32(b.lo, b.hi)}; return r; }
static inline e2f8 e2f8_zip_lo(e2f8 a, e2f8 b) { e2f8 r = {vzip1q_f32(a.lo, b.lo), vzip2q_f32(a.lo, b.lo)}; return r; }
static inline e2f8 e2f8_zip_hi(e2f8 a, e2f8 b) { e2f8 r = {vzip1q_f32(a.hi, b.hi), vzip2q_f32(a.hi, b.hi)}; return r; }

/* Max that propagates NaN from either operand. */
static inline float32x4_t e2_nanmax4(float32x4_t a, float32x4_t b) {
    float32x4_t m = e2_max4(a, b);
    return vbslq_f32(vceqq_f32(a, a), m, a);
}
static inline e2f8 e2f8_nanmax(e2f8 a, e2f8 b) { e2f8 r = {e2_nanmax4(a.lo, b.lo), e2_nanmax4(a.hi, b.hi)}; return r; }

static inline void e2_argmax4(float32x4_t *bv, float32x4_t *bi, float32x4_t v, int32_t c) {
    uint32x4_t bnan = vmvnq_u32(vceqq_f32(*bv, *bv));
    uint32x4_t vnan = vmvnq_u32(vceqq_f32(v, v));
    uint32x4_t up = vbicq_u32(vorrq_u32(vnan, vcgtq_f32(v, *bv)), bnan);
    *bv = vbslq_f32(up, v, *bv);
    *bi = vbslq_f32(up, vreinterpretq_f32_s32(vdupq_n_s32(c)), *bi);
}
/* One channel of a running argmax: where v beats the best bv (NaN beats all; the first NaN
   stays), bv = v and bi = the bits of channel c. */
static inline void e2f8_argmax_step(e2f8 *bv, e2f8 *bi, e2f8 v, int32_t c) {
    e2_argmax4(&bv->lo, &bi->lo, v.lo, c);
    e2_argmax4(&bv->hi, &bi->hi, v.hi, c);
}
"#;

const PORTABLE: &str = r#"/* dialect: portable C (8 lanes; no intrinsics). With GCC or Clang the lanes are a generic
   vector (vector_size), which the compiler lowers to whatever SIMD the host has; any other C99
   compiler gets float[8] and loops. Multiply-adds are not fused (a * b + c, two roundings). */
#include <stdint.h>
#include <math.h>
#include <string.h>

#if defined(__GNUC__)
typedef float e2f8 __attribute__((vector_size(32)));
typedef int32_t e2i8 __attribute__((vector_size(32)));
typedef double e2st __attribute__((vector_size(32)));
#define E2_LANE(v, i) ((v)[i])
static inline e2f8 e2f8_load(const float *p) { e2f8 r; memcpy(&r, p, sizeof r); return r; }
static inline void e2f8_store(float *p, e2f8 v) { memcpy(p, &v, sizeof v); }
static inline e2f8 e2f8_set1(float x) { e2f8 r = {x, x, x, x, x, x, x, x}; return r; }
static inline e2f8 e2f8_fma(e2f8 a, e2f8 b, e2f8 c) { return a * b + c; }
static inline e2f8 e2f8_add(e2f8 a, e2f8 b) { return a + b; }
static inline e2f8 e2f8_sub(e2f8 a, e2f8 b) { return a - b; }
static inline e2f8 e2f8_mul(e2f8 a, e2f8 b) { return a * b; }
static inline e2f8 e2f8_div(e2f8 a, e2f8 b) { return a / b; }
/* Lanes of a where m is set, else of b. */
static inline e2f8 e2_sel(e2i8 m, e2f8 a, e2f8 b) { return (e2f8)((m & (e2i8)a) | (~m & (e2i8)b)); }
/* a > b ? a : b per lane (b when either is NaN, as x86's max). */
static inline e2f8 e2f8_max(e2f8 a, e2f8 b) { return e2_sel(a > b, a, b); }
static inline e2f8 e2f8_lrelu(e2f8 v, e2f8 s) { return e2_sel(v >= e2f8_set1(0.0f), v, v * s); }
/* v with lanes n.. set to zero. */
static inline e2f8 e2f8_keep(e2f8 v, int n) {
    const e2i8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    e2i8 nn = {n, n, n, n, n, n, n, n};
    return (e2f8)((e2i8)v & (lane < nn));
}
/* Max that propagates NaN from either operand. */
static inline e2f8 e2f8_nanmax(e2f8 a, e2f8 b) { return e2_sel(a != a, a, e2f8_max(a, b)); }
/* One channel of a running argmax: where v beats the best bv (NaN beats all; the first NaN
   stays), bv = v and bi = the bits of channel c. */
static inline void e2f8_argmax_step(e2f8 *bv, e2f8 *bi, e2f8 v, int32_t c) {
    e2i8 up = (*bv == *bv) & ((v != v) | (v > *bv));
    e2i8 cc = {c, c, c, c, c, c, c, c};
    *bv = e2_sel(up, v, *bv);
    *bi = e2_sel(up, (e2f8)cc, *bi);
}
static inline e2st e2st_zero(void) { e2st r = {0.0, 0.0, 0.0, 0.0}; return r; }
/* Adds the lanes of v to s and their squares to q, in double (lanes i and i + 4 share a slot). */
static inline void e2f8_stats(e2st *s, e2st *q, e2f8 v) {
    e2st a = {v[0], v[1], v[2], v[3]}, b = {v[4], v[5], v[6], v[7]};
    *s += a + b;
    *q += a * a;
    *q += b * b;
}
#else
typedef struct { float v[8]; } e2f8;
typedef struct { double v[4]; } e2st;
#define E2_LANE(x, i) ((x).v[i])
#define E2_L8 for (int i = 0; i < 8; i++)
static inline e2f8 e2f8_load(const float *p) { e2f8 r; E2_L8 r.v[i] = p[i]; return r; }
static inline void e2f8_store(float *p, e2f8 v) { E2_L8 p[i] = v.v[i]; }
static inline e2f8 e2f8_set1(float x) { e2f8 r; E2_L8 r.v[i] = x; return r; }
static inline e2f8 e2f8_fma(e2f8 a, e2f8 b, e2f8 c) { e2f8 r; E2_L8 r.v[i] = a.v[i] * b.v[i] + c.v[i]; return r; }
static inline e2f8 e2f8_add(e2f8 a, e2f8 b) { e2f8 r; E2_L8 r.v[i] = a.v[i] + b.v[i]; return r; }
static inline e2f8 e2f8_sub(e2f8 a, e2f8 b) { e2f8 r; E2_L8 r.v[i] = a.v[i] - b.v[i]; return r; }
static inline e2f8 e2f8_mul(e2f8 a, e2f8 b) { e2f8 r; E2_L8 r.v[i] = a.v[i] * b.v[i]; return r; }
static inline e2f8 e2f8_div(e2f8 a, e2f8 b) { e2f8 r; E2_L8 r.v[i] = a.v[i] / b.v[i]; return r; }
static inline e2f8 e2f8_max(e2f8 a, e2f8 b) { e2f8 r; E2_L8 r.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i]; return r; }
static inline e2f8 e2f8_lrelu(e2f8 v, e2f8 s) { e2f8 r; E2_L8 r.v[i] = v.v[i] >= 0.0f ? v.v[i] : v.v[i] * s.v[i]; return r; }
static inline e2f8 e2f8_keep(e2f8 v, int n) { E2_L8 if (i >= n) v.v[i] = 0.0f; return v; }
static inline e2f8 e2f8_nanmax(e2f8 a, e2f8 b) {
    e2f8 r; E2_L8 r.v[i] = a.v[i] != a.v[i] ? a.v[i] : (a.v[i] > b.v[i] ? a.v[i] : b.v[i]); return r;
}
static inline void e2f8_argmax_step(e2f8 *bv, e2f8 *bi, e2f8 v, int32_t c) {
    E2_L8 {
        float b = bv->v[i], x = v.v[i];
        if (b == b && (x != x || x > b)) {
            bv->v[i] = x;
            memcpy(&bi->v[i], &c, sizeof c);
        }
    }
}
static inline e2st e2st_zero(void) { e2st r; for (int i = 0; i < 4; i++) r.v[i] = 0.0; return r; }
static inline void e2f8_stats(e2st *s, e2st *q, e2f8 v) {
    for (int i = 0; i < 4; i++) {
        double a = (double)v.v[i], b = (double)v.v[i + 4];
        s->v[i] += a + b;
        q->v[i] += a * a;
        q->v[i] += b * b;
    }
}
#endif

#if defined(__GNUC__)
#define e2_prefetch(p) __builtin_prefetch(p)
#else
#define e2_prefetch(p) ((void)(p))
#endif
static inline e2f8 e2f8_bcast(const float *p) { return e2f8_set1(*p); }
static inline e2f8 e2f8_zero(void) { return e2f8_set1(0.0f); }
static inline float e2_lrelu1(float v, float slope) { return v >= 0.0f ? v : slope * v; }
/* The first n lanes from p, the others zero (nothing past them is read). */
static inline e2f8 e2f8_loadn(const float *p, int n) {
    float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < n; i++) t[i] = p[i];
    return e2f8_load(t);
}
static inline double e2st_sum(e2st v) {
    return (E2_LANE(v, 0) + E2_LANE(v, 2)) + (E2_LANE(v, 1) + E2_LANE(v, 3));
}
static inline e2f8 e2_lanes(float a, float b, float c, float d, float e, float f, float g, float h) {
    float t[8];
    t[0] = a; t[1] = b; t[2] = c; t[3] = d; t[4] = e; t[5] = f; t[6] = g; t[7] = h;
    return e2f8_load(t);
}
#define E2_L(v, i) E2_LANE(v, i)
static inline e2f8 e2f8_even(e2f8 a, e2f8 b) {
    return e2_lanes(E2_L(a, 0), E2_L(a, 2), E2_L(a, 4), E2_L(a, 6), E2_L(b, 0), E2_L(b, 2), E2_L(b, 4), E2_L(b, 6));
}
static inline e2f8 e2f8_odd(e2f8 a, e2f8 b) {
    return e2_lanes(E2_L(a, 1), E2_L(a, 3), E2_L(a, 5), E2_L(a, 7), E2_L(b, 1), E2_L(b, 3), E2_L(b, 5), E2_L(b, 7));
}
static inline e2f8 e2f8_zip_lo(e2f8 a, e2f8 b) {
    return e2_lanes(E2_L(a, 0), E2_L(b, 0), E2_L(a, 1), E2_L(b, 1), E2_L(a, 2), E2_L(b, 2), E2_L(a, 3), E2_L(b, 3));
}
static inline e2f8 e2f8_zip_hi(e2f8 a, e2f8 b) {
    return e2_lanes(E2_L(a, 4), E2_L(b, 4), E2_L(a, 5), E2_L(b, 5), E2_L(a, 6), E2_L(b, 6), E2_L(a, 7), E2_L(b, 7));
}
"#;

/// The portable prelude's `exp`: per lane, the same polynomial as x86's.
const PORTABLE_EXP: &str = r#"
static inline e2f8 e2f8_exp(e2f8 x) {
    float t[8];
    e2f8_store(t, x);
    for (int i = 0; i < 8; i++) t[i] = e2_exp1(t[i]);
    return e2f8_load(t);
}
"#;

/// NEON's `exp`: per lane (softmax only; not a hot kernel).
const NEON_EXP: &str = r#"
static inline e2f8 e2f8_exp(e2f8 x) {
    float t[8];
    e2f8_store(t, x);
    for (int i = 0; i < 8; i++) t[i] = e2_exp1(t[i]);
    return e2f8_load(t);
}
"#;
