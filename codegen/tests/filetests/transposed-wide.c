/* fused_conv3d up sparse 2x2x2 2->2: 4 tiles, 5760 flops */
static void k0_u3t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int64_t po, int o, double *restrict st) {
    (void)W; (void)o; (void)st;
    e2f8 a0_0 = e2f8_zero();
    e2f8 a0_1 = e2f8_zero();
    e2f8 a0_2 = e2f8_zero();
    e2f8 a1_0 = e2f8_zero();
    e2f8 a1_1 = e2f8_zero();
    e2f8 a1_2 = e2f8_zero();
    e2f8 a2_0 = e2f8_zero();
    e2f8 a2_1 = e2f8_zero();
    e2f8 a2_2 = e2f8_zero();
    e2f8 a3_0 = e2f8_zero();
    e2f8 a3_1 = e2f8_zero();
    e2f8 a3_2 = e2f8_zero();
    for (int e = 0; e < ne; e++, w += 8) {
        const float *p = A + pb + (int64_t)ent[e] * 400;
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
        { const e2f8 x = e2f8_load(p + 8);
          a0_1 = e2f8_fma(w0, x, a0_1);
          a1_1 = e2f8_fma(w1, x, a1_1);
          a2_1 = e2f8_fma(w2, x, a2_1);
          a3_1 = e2f8_fma(w3, x, a3_1);
        }
        { const e2f8 x = e2f8_load(p + 16);
          a0_2 = e2f8_fma(w0, x, a0_2);
          a1_2 = e2f8_fma(w1, x, a1_2);
          a2_2 = e2f8_fma(w2, x, a2_2);
          a3_2 = e2f8_fma(w3, x, a3_2);
        }
    }
    e2st vs = e2st_zero(), vq = e2st_zero();
    {
      { e2f8 v = e2f8_zip_lo(a0_0, a1_0);
        e2f8_store(A + po + 0, v);
        e2f8_stats(&vs, &vq, v);
      }
      { e2f8 v = e2f8_zip_hi(a0_0, a1_0);
        e2f8_store(A + po + 8, v);
        e2f8_stats(&vs, &vq, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a0_1, a1_1);
        e2f8_store(A + po + 16, v);
        e2f8_stats(&vs, &vq, v);
      }
      { e2f8 v = e2f8_zip_hi(a0_1, a1_1);
        e2f8_store(A + po + 24, v);
        e2f8_stats(&vs, &vq, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a0_2, a1_2);
        e2f8_store(A + po + 32, v);
        e2f8_stats(&vs, &vq, v);
      }
      { e2f8 v = e2f8_zip_hi(a0_2, a1_2);
        v = e2f8_keep(v, 0);
        e2f8_store(A + po + 40, v);
        e2f8_stats(&vs, &vq, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a2_0, a3_0);
        e2f8_store(A + po + 56, v);
        e2f8_stats(&vs, &vq, v);
      }
      { e2f8 v = e2f8_zip_hi(a2_0, a3_0);
        e2f8_store(A + po + 64, v);
        e2f8_stats(&vs, &vq, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a2_1, a3_1);
        e2f8_store(A + po + 72, v);
        e2f8_stats(&vs, &vq, v);
      }
      { e2f8 v = e2f8_zip_hi(a2_1, a3_1);
        e2f8_store(A + po + 80, v);
        e2f8_stats(&vs, &vq, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a2_2, a3_2);
        e2f8_store(A + po + 88, v);
        e2f8_stats(&vs, &vq, v);
      }
      { e2f8 v = e2f8_zip_hi(a2_2, a3_2);
        v = e2f8_keep(v, 0);
        e2f8_store(A + po + 96, v);
        e2f8_stats(&vs, &vq, v);
      }
    }
    st[0] += e2st_sum(vs); st[1] += e2st_sum(vq);
}
void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 1); const int64_t nz = t / 1;
        const int oz = (int)(nz % 4), n = (int)(nz / 4);
        const int z = oz / 2, a = oz % 2;
        const int y0 = band * 4, y1 = y0 + 4 < 3 ? y0 + 4 : 3;
        double st[4]; memset(st, 0, sizeof st);
        for (int o = 0; o < 2; o++) {
            const int e0 = I[16 + o], e1 = I[16 + o + 1];
            for (int yi = y0; yi < y1; yi++) {
                int64_t pb = 3584 + (int64_t)n * 800 + (int64_t)z * 200 + (int64_t)(yi + 1) * 40 + 8;
                int64_t po = 0 + (int64_t)n * 3584 + (int64_t)o * 1792 + (int64_t)oz * 448 + (int64_t)(2 * yi + 1) * 56 + 8;
                for (int xv = 0; xv < 0; xv += 3) {  pb += 24; po += 48; }
                k0_u3t(A, W, I + 0 + e0, W + 0 + (int64_t)e0 * 8 + a * 4, e1 - e0, pb, po, o, st + 2 * o);
            }
        }
        for (int o = 0; o < 2; o++) {
            float *pl = A + 0 + (int64_t)n * 3584 + (int64_t)o * 1792 + (int64_t)oz * 448;
            for (int y = 2 * y0; y < 2 * y1; y++) {
                float *rowp = pl + (y + 1) * 56 + 8;
                e2f8_store(rowp - 8, e2f8_zero());
            }
            if (band == 0) { for (int q = 0; q < 56; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 0) { for (int q = 0; q < 56; q += 8) e2f8_store((pl + 392) + q, e2f8_zero());
        }
            double *pp = ((double *)(A + 4384) + ((int64_t)(n * 2 + o) * 4 + (oz * 1 + band)) * 2);
            pp[0] = st[2 * o]; pp[1] = st[2 * o + 1];
        }
    }
}

/* fused_conv3d norm reduce: 2 tiles, 16 flops */
void k0_nred(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const double *p = ((double *)(A + 4384) + ((int64_t)(t) * 4 + (0)) * 2);
        double s = 0.0, q = 0.0;
        for (int i = 0; i < 4; i++) { s += p[2 * i]; q += p[2 * i + 1]; }
        const double mean = s / 960.0;
        double var = q / 960.0 - mean * mean;
        if (var < 0.0) var = 0.0;
        const double inv = 1.0 / sqrt(var + (double)1e-5f);
        A[4416 + 2 * t] = (float)mean;
        A[4416 + 2 * t + 1] = (float)(inv * (double)W[32 + t % 2]);
    }
}

/* fused_conv3d norm apply: 8 tiles, 5760 flops */
void k0_napply(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t i = t / 4; const int z = (int)(t % 4);
        const int n = (int)(i / 2), c = (int)(i % 2);
        const e2f8 vm = e2f8_set1(A[4416 + 2 * i]), vs = e2f8_set1(A[4416 + 2 * i + 1]);
        const e2f8 vb = e2f8_set1(W[48 + c]);
        const float *s = A + ((int64_t)0 + (int64_t)(n) * 3584 + (int64_t)(c) * 1792 + (int64_t)(z) * 448);
        float *o = A + ((int64_t)0 + (int64_t)(n) * 3584 + (int64_t)(c) * 1792 + (int64_t)(z) * 448);
        for (int q = 0; q < 56; q += 8) e2f8_store(o + q, e2f8_zero());
        for (int y = 0; y < 6; y++) {
            const float *sr = s + ((y) + 1) * 56 + 8;
            float *orow = o + ((y) + 1) * 56 + 8;
            for (int x = 0; x < 5; x++) {
                e2f8 v = e2f8_fma(e2f8_sub(e2f8_load(sr + 8 * x), vm), vs, vb);
                if (x == 4) v = e2f8_keep(v, 8);
                e2f8_store(orow + 8 * x, v);
            }
            e2f8_store(orow - 8, e2f8_zero());
            e2f8_store(orow + 40, e2f8_zero());
        }
        for (int q = 0; q < 56; q += 8) e2f8_store((o + 392) + q, e2f8_zero());
    }
}

