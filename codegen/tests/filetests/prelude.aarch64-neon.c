/* dialect: aarch64 NEON (8 lanes as two float32x4_t) */
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

static inline e2f8 e2f8_exp(e2f8 x) {
    float t[8];
    e2f8_store(t, x);
    for (int i = 0; i < 8; i++) t[i] = e2_exp1(t[i]);
    return e2f8_load(t);
}
