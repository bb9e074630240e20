/* c conv sparse 1x3x3 s1 4->2: 3 tiles, 6912 flops */
static void k0_mk4x1(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;
    e2f8 a0_0_0 = e2f8_zero();
    e2f8 a0_1_0 = e2f8_zero();
    e2f8 a0_2_0 = e2f8_zero();
    e2f8 a0_3_0 = e2f8_zero();
    for (int e = 0; e < ne; e++, ent += 3, w += 9) {
        if ((unsigned)(zb + ent[2]) >= 3u) continue;
        const float *p = A + pb + (int64_t)ent[0] * 576 + (int64_t)(zb + ent[2]) * 192;
        e2_prefetch(p + 16);
        e2_prefetch(p + 48);
        e2_prefetch(p + 80);
        e2_prefetch(p + 112);
        e2_prefetch(p + 144);
        e2_prefetch(p + 176);
        {
            const e2f8 w0_0 = e2f8_bcast(w + 0);
            const e2f8 w0_1 = e2f8_bcast(w + 1);
            const e2f8 w0_2 = e2f8_bcast(w + 2);
            { const e2f8 x = e2f8_load(p + 0);
              a0_0_0 = e2f8_fma(w0_0, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 32);
              a0_1_0 = e2f8_fma(w0_0, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_1, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 64);
              a0_2_0 = e2f8_fma(w0_0, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_1, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_2, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 96);
              a0_3_0 = e2f8_fma(w0_0, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_1, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_2, x, a0_1_0);
            }
            { const e2f8 x = e2f8_load(p + 128);
              a0_3_0 = e2f8_fma(w0_1, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_2, x, a0_2_0);
            }
            { const e2f8 x = e2f8_load(p + 160);
              a0_3_0 = e2f8_fma(w0_2, x, a0_3_0);
            }
        }
        {
            const e2f8 w0_0 = e2f8_bcast(w + 3);
            const e2f8 w0_1 = e2f8_bcast(w + 4);
            const e2f8 w0_2 = e2f8_bcast(w + 5);
            { const e2f8 x = e2f8_load(p + 1);
              a0_0_0 = e2f8_fma(w0_0, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 33);
              a0_1_0 = e2f8_fma(w0_0, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_1, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 65);
              a0_2_0 = e2f8_fma(w0_0, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_1, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_2, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 97);
              a0_3_0 = e2f8_fma(w0_0, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_1, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_2, x, a0_1_0);
            }
            { const e2f8 x = e2f8_load(p + 129);
              a0_3_0 = e2f8_fma(w0_1, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_2, x, a0_2_0);
            }
            { const e2f8 x = e2f8_load(p + 161);
              a0_3_0 = e2f8_fma(w0_2, x, a0_3_0);
            }
        }
        {
            const e2f8 w0_0 = e2f8_bcast(w + 6);
            const e2f8 w0_1 = e2f8_bcast(w + 7);
            const e2f8 w0_2 = e2f8_bcast(w + 8);
            { const e2f8 x = e2f8_load(p + 2);
              a0_0_0 = e2f8_fma(w0_0, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 34);
              a0_1_0 = e2f8_fma(w0_0, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_1, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 66);
              a0_2_0 = e2f8_fma(w0_0, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_1, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_2, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 98);
              a0_3_0 = e2f8_fma(w0_0, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_1, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_2, x, a0_1_0);
            }
            { const e2f8 x = e2f8_load(p + 130);
              a0_3_0 = e2f8_fma(w0_1, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_2, x, a0_2_0);
            }
            { const e2f8 x = e2f8_load(p + 162);
              a0_3_0 = e2f8_fma(w0_2, x, a0_3_0);
            }
        }
    }
    {
    { e2f8 v = a0_0_0;
      e2f8_store(A + po + 0, v);
    }
    { e2f8 v = a0_1_0;
      e2f8_store(A + po + 32, v);
    }
    { e2f8 v = a0_2_0;
      e2f8_store(A + po + 64, v);
    }
    { e2f8 v = a0_3_0;
      e2f8_store(A + po + 96, v);
    }
    }
}
static void k0_mk4x1t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;
    e2f8 a0_0_0 = e2f8_zero();
    e2f8 a0_1_0 = e2f8_zero();
    e2f8 a0_2_0 = e2f8_zero();
    e2f8 a0_3_0 = e2f8_zero();
    for (int e = 0; e < ne; e++, ent += 3, w += 9) {
        if ((unsigned)(zb + ent[2]) >= 3u) continue;
        const float *p = A + pb + (int64_t)ent[0] * 576 + (int64_t)(zb + ent[2]) * 192;
        e2_prefetch(p + 16);
        e2_prefetch(p + 48);
        e2_prefetch(p + 80);
        e2_prefetch(p + 112);
        e2_prefetch(p + 144);
        e2_prefetch(p + 176);
        {
            const e2f8 w0_0 = e2f8_bcast(w + 0);
            const e2f8 w0_1 = e2f8_bcast(w + 1);
            const e2f8 w0_2 = e2f8_bcast(w + 2);
            { const e2f8 x = e2f8_load(p + 0);
              a0_0_0 = e2f8_fma(w0_0, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 32);
              a0_1_0 = e2f8_fma(w0_0, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_1, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 64);
              a0_2_0 = e2f8_fma(w0_0, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_1, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_2, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 96);
              a0_3_0 = e2f8_fma(w0_0, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_1, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_2, x, a0_1_0);
            }
            { const e2f8 x = e2f8_load(p + 128);
              a0_3_0 = e2f8_fma(w0_1, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_2, x, a0_2_0);
            }
            { const e2f8 x = e2f8_load(p + 160);
              a0_3_0 = e2f8_fma(w0_2, x, a0_3_0);
            }
        }
        {
            const e2f8 w0_0 = e2f8_bcast(w + 3);
            const e2f8 w0_1 = e2f8_bcast(w + 4);
            const e2f8 w0_2 = e2f8_bcast(w + 5);
            { const e2f8 x = e2f8_load(p + 1);
              a0_0_0 = e2f8_fma(w0_0, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 33);
              a0_1_0 = e2f8_fma(w0_0, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_1, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 65);
              a0_2_0 = e2f8_fma(w0_0, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_1, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_2, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 97);
              a0_3_0 = e2f8_fma(w0_0, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_1, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_2, x, a0_1_0);
            }
            { const e2f8 x = e2f8_load(p + 129);
              a0_3_0 = e2f8_fma(w0_1, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_2, x, a0_2_0);
            }
            { const e2f8 x = e2f8_load(p + 161);
              a0_3_0 = e2f8_fma(w0_2, x, a0_3_0);
            }
        }
        {
            const e2f8 w0_0 = e2f8_bcast(w + 6);
            const e2f8 w0_1 = e2f8_bcast(w + 7);
            const e2f8 w0_2 = e2f8_bcast(w + 8);
            { const e2f8 x = e2f8_load(p + 2);
              a0_0_0 = e2f8_fma(w0_0, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 34);
              a0_1_0 = e2f8_fma(w0_0, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_1, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 66);
              a0_2_0 = e2f8_fma(w0_0, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_1, x, a0_1_0);
              a0_0_0 = e2f8_fma(w0_2, x, a0_0_0);
            }
            { const e2f8 x = e2f8_load(p + 98);
              a0_3_0 = e2f8_fma(w0_0, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_1, x, a0_2_0);
              a0_1_0 = e2f8_fma(w0_2, x, a0_1_0);
            }
            { const e2f8 x = e2f8_load(p + 130);
              a0_3_0 = e2f8_fma(w0_1, x, a0_3_0);
              a0_2_0 = e2f8_fma(w0_2, x, a0_2_0);
            }
            { const e2f8 x = e2f8_load(p + 162);
              a0_3_0 = e2f8_fma(w0_2, x, a0_3_0);
            }
        }
    }
    {
    { e2f8 v = a0_0_0;
      e2f8_store(A + po + 0, v);
    }
    { e2f8 v = a0_1_0;
      e2f8_store(A + po + 32, v);
    }
    { e2f8 v = a0_2_0;
      e2f8_store(A + po + 64, v);
    }
    { e2f8 v = a0_3_0;
      e2f8_store(A + po + 96, v);
    }
    }
}
void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 1); const int64_t nz = t / 1;
        const int z = (int)(nz % 3), n = (int)(nz / 3);
        const int y0 = band * 4, y1 = y0 + 4 < 4 ? y0 + 4 : 4;
        const int zb = z * 1 - 0;
        (void)y1;
        double *st = 0;
        float *sh = 0;
        for (int o = 0; o < 2; o++) { const int e0 = I[16 + o], e1 = I[16 + o + 1];
        for (int xv = 0; xv < 1; xv += 1) {
        const int64_t pb = 0 + (int64_t)n * 2304 + (int64_t)(1 + y0 * 1 - 1) * 32 + 8 + xv * 8 - 1;
        const int64_t po = 2304 + (int64_t)n * 1152 + (int64_t)z * 192 + (int64_t)(1 + y0) * 32 + 8 + xv * 8;
        k0_mk4x1(A, W, I + 0 + 3 * e0, W + 0 + (int64_t)e0 * 9, e1 - e0, pb, zb, po + (int64_t)o * 576, o, st + 2 * o, sh + o);
        }
        { const int xv = 1;
        const int64_t pb = 0 + (int64_t)n * 2304 + (int64_t)(1 + y0 * 1 - 1) * 32 + 8 + xv * 8 - 1;
        const int64_t po = 2304 + (int64_t)n * 1152 + (int64_t)z * 192 + (int64_t)(1 + y0) * 32 + 8 + xv * 8;
        k0_mk4x1t(A, W, I + 0 + 3 * e0, W + 0 + (int64_t)e0 * 9, e1 - e0, pb, zb, po + (int64_t)o * 576, o, st + 2 * o, sh + o);
        }
        }
        for (int o = 0; o < 2; o++) {
            float *pl = A + 2304 + (int64_t)n * 1152 + (int64_t)o * 576 + (int64_t)z * 192;
            for (int y = y0; y < y1; y++) {
                float *rowp = pl + (y + 1) * 32 + 8;
                e2f8_store(rowp - 8, e2f8_zero());
                e2f8_store(rowp + 16, e2f8_zero());
            }
            if (band == 0) { for (int q = 0; q < 32; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 0) { for (int q = 0; q < 32; q += 8) e2f8_store((pl + 160) + q, e2f8_zero());
        }
        }
    }
}

