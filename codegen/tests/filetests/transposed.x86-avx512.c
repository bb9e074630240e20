/* up up sparse 1x2x2 2->2: 2 tiles, 864 flops */
static void k0_u1t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int64_t po, int o, double *restrict st) {
    (void)W; (void)o; (void)st;
    e2f8 a0_0 = e2f8_zero();
    e2f8 a1_0 = e2f8_zero();
    e2f8 a2_0 = e2f8_zero();
    e2f8 a3_0 = e2f8_zero();
    for (int e = 0; e < ne; e++, w += 4) {
        const float *p = A + pb + (int64_t)ent[e] * 240;
        const e2f8 w0 = e2f8_bcast(w + 0);
        const e2f8 w1 = e2f8_bcast(w + 1);
        const e2f8 w2 = e2f8_bcast(w + 2);
        const e2f8 w3 = e2f8_bcast(w + 3);
        { const e2f8 x = e2f8_load(p + 0);
          a0_0 = e2f8_fma(w0, x, a0_0);
          a1_0 = e2f8_fma(w1, x, a1_0);
          a2_0 = e2f8_fma(w2, x, a2_0);
          a3_0 = e2f8_fma(w3, x, a3_0);
        }
    }
    e2st vs = e2st_zero(), vq = e2st_zero();
    {
      { e2f8 v = e2f8_zip_lo(a0_0, a1_0);
        e2f8_store(A + po + 0, v);
        e2f8_stats(&vs, &vq, v);
      }
      { e2f8 v = e2f8_zip_hi(a0_0, a1_0);
        v = e2f8_keep(v, 4);
        e2f8_store(A + po + 8, v);
        e2f8_stats(&vs, &vq, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a2_0, a3_0);
        e2f8_store(A + po + 32, v);
        e2f8_stats(&vs, &vq, v);
      }
      { e2f8 v = e2f8_zip_hi(a2_0, a3_0);
        v = e2f8_keep(v, 4);
        e2f8_store(A + po + 40, v);
        e2f8_stats(&vs, &vq, v);
      }
    }
    st[0] += e2st_sum(vs); st[1] += e2st_sum(vq);
}
void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 1); const int64_t nz = t / 1;
        const int oz = (int)(nz % 2), n = (int)(nz / 2);
        const int z = oz / 1, a = oz % 1;
        const int y0 = band * 4, y1 = y0 + 4 < 3 ? y0 + 4 : 3;
        double st[4]; memset(st, 0, sizeof st);
        for (int o = 0; o < 2; o++) {
            const int e0 = I[16 + o], e1 = I[16 + o + 1];
            for (int yi = y0; yi < y1; yi++) {
                int64_t pb = 1024 + (int64_t)n * 480 + (int64_t)z * 120 + (int64_t)(yi + 1) * 24 + 8;
                int64_t po = 0 + (int64_t)n * 1024 + (int64_t)o * 512 + (int64_t)oz * 256 + (int64_t)(2 * yi + 1) * 32 + 8;
                for (int xv = 0; xv < 0; xv += 3) {  pb += 24; po += 48; }
                k0_u1t(A, W, I + 0 + e0, W + 0 + (int64_t)e0 * 4 + a * 4, e1 - e0, pb, po, o, st + 2 * o);
            }
        }
        for (int o = 0; o < 2; o++) {
            float *pl = A + 0 + (int64_t)n * 1024 + (int64_t)o * 512 + (int64_t)oz * 256;
            for (int y = 2 * y0; y < 2 * y1; y++) {
                float *rowp = pl + (y + 1) * 32 + 8;
                e2f8_store(rowp - 8, e2f8_zero());
                e2f8_store(rowp + 16, e2f8_zero());
            }
            if (band == 0) { for (int q = 0; q < 32; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 0) { for (int q = 0; q < 32; q += 8) e2f8_store((pl + 224) + q, e2f8_zero());
        }
            double *pp = ((double *)(A + 1504) + ((int64_t)(n * 2 + o) * 2 + (oz * 1 + band)) * 2);
            pp[0] = st[2 * o]; pp[1] = st[2 * o + 1];
        }
    }
}

/* up norm reduce: 2 tiles, 8 flops */
void k0_nred(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const double *p = ((double *)(A + 1504) + ((int64_t)(t) * 2 + (0)) * 2);
        double s = 0.0, q = 0.0;
        for (int i = 0; i < 2; i++) { s += p[2 * i]; q += p[2 * i + 1]; }
        const double mean = s / 144.0;
        double var = q / 144.0 - mean * mean;
        if (var < 0.0) var = 0.0;
        const double inv = 1.0 / sqrt(var + (double)1e-5f);
        A[1520 + 2 * t] = (float)mean;
        A[1520 + 2 * t + 1] = (float)(inv * (double)W[16 + t % 2]);
    }
}

/* up norm apply: 4 tiles, 864 flops */
void k0_napply(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t i = t / 2; const int z = (int)(t % 2);
        const int n = (int)(i / 2), c = (int)(i % 2);
        const e2f16 vm = e2f16_set1(A[1520 + 2 * i]), vs = e2f16_set1(A[1520 + 2 * i + 1]);
        const e2f16 vb = e2f16_set1(W[32 + c]);
        const float *s = A + ((int64_t)0 + (int64_t)(n) * 1024 + (int64_t)(c) * 512 + (int64_t)(z) * 256);
        float *o = A + ((int64_t)0 + (int64_t)(n) * 1024 + (int64_t)(c) * 512 + (int64_t)(z) * 256);
        for (int q = 0; q < 32; q += 8) e2f8_store(o + q, e2f8_zero());
        for (int y = 0; y < 6; y++) {
            const float *sr = s + ((y) + 1) * 32 + 8;
            float *orow = o + ((y) + 1) * 32 + 8;
            for (int x = 0; x < 1; x++) {
                e2f16 v = e2f16_fma(e2f16_sub(e2f16_load(sr + 16 * x), vm), vs, vb);
                if (x == 0) v = e2f16_keep(v, 12);
                e2f16_store(orow + 16 * x, v);
            }
            e2f8_store(orow - 8, e2f8_zero());
            e2f8_store(orow + 16, e2f8_zero());
        }
        for (int q = 0; q < 32; q += 8) e2f8_store((o + 224) + q, e2f8_zero());
    }
}

