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
