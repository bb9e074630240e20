/* fused_conv3d up 2x2x2 3->2: 4 tiles, 6144 flops */
static void k0_u2t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int64_t po, int o, double *restrict st) {
    (void)W; (void)o; (void)st;
    e2f8 a0_0 = e2f8_zero();
    e2f8 a0_1 = e2f8_zero();
    e2f8 a1_0 = e2f8_zero();
    e2f8 a1_1 = e2f8_zero();
    e2f8 a2_0 = e2f8_zero();
    e2f8 a2_1 = e2f8_zero();
    e2f8 a3_0 = e2f8_zero();
    e2f8 a3_1 = e2f8_zero();
    for (int e = 0; e < ne; e++, w += 8) {
        const float *p = A + pb + (int64_t)ent[e] * 256;
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
    }
    const e2f8 vsl = e2f8_set1(0.01f);
    const e2f8 vb = e2f8_bcast(W + 48 + o);
    {
      { e2f8 v = e2f8_zip_lo(a0_0, a1_0);
        v = e2f8_add(v, vb);
        v = e2f8_lrelu(v, vsl);
        e2f8_store(A + po + 0, v);
      }
      { e2f8 v = e2f8_zip_hi(a0_0, a1_0);
        v = e2f8_add(v, vb);
        v = e2f8_lrelu(v, vsl);
        e2f8_store(A + po + 8, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a0_1, a1_1);
        v = e2f8_add(v, vb);
        v = e2f8_lrelu(v, vsl);
        e2f8_store(A + po + 16, v);
      }
      { e2f8 v = e2f8_zip_hi(a0_1, a1_1);
        v = e2f8_add(v, vb);
        v = e2f8_lrelu(v, vsl);
        e2f8_store(A + po + 24, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a2_0, a3_0);
        v = e2f8_add(v, vb);
        v = e2f8_lrelu(v, vsl);
        e2f8_store(A + po + 48, v);
      }
      { e2f8 v = e2f8_zip_hi(a2_0, a3_0);
        v = e2f8_add(v, vb);
        v = e2f8_lrelu(v, vsl);
        e2f8_store(A + po + 56, v);
      }
    }
    {
      { e2f8 v = e2f8_zip_lo(a2_1, a3_1);
        v = e2f8_add(v, vb);
        v = e2f8_lrelu(v, vsl);
        e2f8_store(A + po + 64, v);
      }
      { e2f8 v = e2f8_zip_hi(a2_1, a3_1);
        v = e2f8_add(v, vb);
        v = e2f8_lrelu(v, vsl);
        e2f8_store(A + po + 72, v);
      }
    }
}
void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 1); const int64_t nz = t / 1;
        const int oz = (int)(nz % 4), n = (int)(nz / 4);
        const int z = oz / 2, a = oz % 2;
        const int y0 = band * 4, y1 = y0 + 4 < 2 ? y0 + 4 : 2;
        double *st = 0;
        for (int o = 0; o < 2; o++) {
            const int e0 = I[16 + o], e1 = I[16 + o + 1];
            for (int yi = y0; yi < y1; yi++) {
                int64_t pb = 2304 + (int64_t)n * 768 + (int64_t)z * 128 + (int64_t)(yi + 1) * 32 + 8;
                int64_t po = 0 + (int64_t)n * 2304 + (int64_t)o * 1152 + (int64_t)oz * 288 + (int64_t)(2 * yi + 1) * 48 + 8;
                for (int xv = 0; xv < 0; xv += 3) {  pb += 24; po += 48; }
                k0_u2t(A, W, I + 0 + e0, W + 0 + (int64_t)e0 * 8 + a * 4, e1 - e0, pb, po, o, st + 2 * o);
            }
        }
        for (int o = 0; o < 2; o++) {
            float *pl = A + 0 + (int64_t)n * 2304 + (int64_t)o * 1152 + (int64_t)oz * 288;
            for (int y = 2 * y0; y < 2 * y1; y++) {
                float *rowp = pl + (y + 1) * 48 + 8;
                e2f8_store(rowp - 8, e2f8_zero());
                e2f8_store(rowp + 32, e2f8_zero());
            }
            if (band == 0) { for (int q = 0; q < 48; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 0) { for (int q = 0; q < 48; q += 8) e2f8_store((pl + 240) + q, e2f8_zero());
        }
        }
    }
}

