/* dialect: x86 AVX2 + FMA (8 lanes: __m256) */
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
