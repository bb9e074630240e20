/* dialect: portable C (8 lanes; no intrinsics). With GCC or Clang the lanes are a generic
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
