/* c.conv conv 1x3x3 s2 2->2: 4 tiles, 3888 flops */
static void k0_mk2x1t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a0_1_0 = e2f16_zero();
    e2f16 a1_0_0 = e2f16_zero();
    e2f16 a1_1_0 = e2f16_zero();
    for (int e = 0; e < ne; e++, ent += 3, w += 18) {
        const float *p = A + pb + (int64_t)ent[0] * 640 + (int64_t)(zb + ent[2]) * 320;
        {
            const e2f16 w0_0 = e2f16_bcast(w + 0);
            const e2f16 w0_1 = e2f16_bcast(w + 2);
            const e2f16 w0_2 = e2f16_bcast(w + 4);
            const e2f16 w1_0 = e2f16_bcast(w + 1);
            const e2f16 w1_1 = e2f16_bcast(w + 3);
            const e2f16 w1_2 = e2f16_bcast(w + 5);
            { const e2f16 x = e2f16_even(e2f16_load(p + 0), e2f16_load(p + 16));
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 40), e2f16_load(p + 56));
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 80), e2f16_load(p + 96));
              a0_1_0 = e2f16_fma(w0_0, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_0, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 120), e2f16_load(p + 136));
              a0_1_0 = e2f16_fma(w0_1, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_1, x, a1_1_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 160), e2f16_load(p + 176));
              a0_1_0 = e2f16_fma(w0_2, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_2, x, a1_1_0);
            }
        }
        {
            const e2f16 w0_0 = e2f16_bcast(w + 6);
            const e2f16 w0_1 = e2f16_bcast(w + 8);
            const e2f16 w0_2 = e2f16_bcast(w + 10);
            const e2f16 w1_0 = e2f16_bcast(w + 7);
            const e2f16 w1_1 = e2f16_bcast(w + 9);
            const e2f16 w1_2 = e2f16_bcast(w + 11);
            { const e2f16 x = e2f16_even(e2f16_load(p + 1), e2f16_load(p + 17));
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 41), e2f16_load(p + 57));
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 81), e2f16_load(p + 97));
              a0_1_0 = e2f16_fma(w0_0, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_0, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 121), e2f16_load(p + 137));
              a0_1_0 = e2f16_fma(w0_1, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_1, x, a1_1_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 161), e2f16_load(p + 177));
              a0_1_0 = e2f16_fma(w0_2, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_2, x, a1_1_0);
            }
        }
        {
            const e2f16 w0_0 = e2f16_bcast(w + 12);
            const e2f16 w0_1 = e2f16_bcast(w + 14);
            const e2f16 w0_2 = e2f16_bcast(w + 16);
            const e2f16 w1_0 = e2f16_bcast(w + 13);
            const e2f16 w1_1 = e2f16_bcast(w + 15);
            const e2f16 w1_2 = e2f16_bcast(w + 17);
            { const e2f16 x = e2f16_even(e2f16_load(p + 2), e2f16_loadn(p + 18, 15));
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 42), e2f16_loadn(p + 58, 15));
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 82), e2f16_loadn(p + 98, 15));
              a0_1_0 = e2f16_fma(w0_0, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_0, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 122), e2f16_loadn(p + 138, 15));
              a0_1_0 = e2f16_fma(w0_1, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_1, x, a1_1_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 162), e2f16_loadn(p + 178, 15));
              a0_1_0 = e2f16_fma(w0_2, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_2, x, a1_1_0);
            }
        }
    }
    {
    const e2f16 vb = e2f16_bcast(W + 48 + o0 + 0);
    { e2f16 v = e2f16_keep(e2f16_add(a0_0_0, vb), 9);
      e2f16_store(A + po + 0, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a0_1_0, vb), 9);
      e2f16_store(A + po + 32, v);
    }
    }
    {
    const e2f16 vb = e2f16_bcast(W + 48 + o0 + 1);
    { e2f16 v = e2f16_keep(e2f16_add(a1_0_0, vb), 9);
      e2f16_store(A + po + 320, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a1_1_0, vb), 9);
      e2f16_store(A + po + 352, v);
    }
    }
}
static void k0_mk1x1t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a1_0_0 = e2f16_zero();
    for (int e = 0; e < ne; e++, ent += 3, w += 18) {
        const float *p = A + pb + (int64_t)ent[0] * 640 + (int64_t)(zb + ent[2]) * 320;
        {
            const e2f16 w0_0 = e2f16_bcast(w + 0);
            const e2f16 w0_1 = e2f16_bcast(w + 2);
            const e2f16 w0_2 = e2f16_bcast(w + 4);
            const e2f16 w1_0 = e2f16_bcast(w + 1);
            const e2f16 w1_1 = e2f16_bcast(w + 3);
            const e2f16 w1_2 = e2f16_bcast(w + 5);
            { const e2f16 x = e2f16_even(e2f16_load(p + 0), e2f16_load(p + 16));
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 40), e2f16_load(p + 56));
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 80), e2f16_load(p + 96));
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
        }
        {
            const e2f16 w0_0 = e2f16_bcast(w + 6);
            const e2f16 w0_1 = e2f16_bcast(w + 8);
            const e2f16 w0_2 = e2f16_bcast(w + 10);
            const e2f16 w1_0 = e2f16_bcast(w + 7);
            const e2f16 w1_1 = e2f16_bcast(w + 9);
            const e2f16 w1_2 = e2f16_bcast(w + 11);
            { const e2f16 x = e2f16_even(e2f16_load(p + 1), e2f16_load(p + 17));
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 41), e2f16_load(p + 57));
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 81), e2f16_load(p + 97));
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
        }
        {
            const e2f16 w0_0 = e2f16_bcast(w + 12);
            const e2f16 w0_1 = e2f16_bcast(w + 14);
            const e2f16 w0_2 = e2f16_bcast(w + 16);
            const e2f16 w1_0 = e2f16_bcast(w + 13);
            const e2f16 w1_1 = e2f16_bcast(w + 15);
            const e2f16 w1_2 = e2f16_bcast(w + 17);
            { const e2f16 x = e2f16_even(e2f16_load(p + 2), e2f16_loadn(p + 18, 15));
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 42), e2f16_loadn(p + 58, 15));
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_even(e2f16_load(p + 82), e2f16_loadn(p + 98, 15));
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
        }
    }
    {
    const e2f16 vb = e2f16_bcast(W + 48 + o0 + 0);
    { e2f16 v = e2f16_keep(e2f16_add(a0_0_0, vb), 9);
      e2f16_store(A + po + 0, v);
    }
    }
    {
    const e2f16 vb = e2f16_bcast(W + 48 + o0 + 1);
    { e2f16 v = e2f16_keep(e2f16_add(a1_0_0, vb), 9);
      e2f16_store(A + po + 320, v);
    }
    }
}
void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 2); const int64_t nz = t / 2;
        const int z = (int)(nz % 2), n = (int)(nz / 2);
        const int y0 = band * 2, y1 = y0 + 2 < 3 ? y0 + 2 : 3;
        const int zb = z * 1 - 0;
        (void)y1;
        double *st = 0;
        float *sh = 0;
        for (int ob = 0; ob < 1; ob++) {
        { const int xv = 0;
        const int64_t pb = 0 + (int64_t)n * 1280 + (int64_t)(1 + y0 * 2 - 1) * 40 + 8 + xv * 32 - 1;
        const int64_t po = 1280 + (int64_t)n * 640 + (int64_t)z * 160 + (int64_t)(1 + y0) * 32 + 8 + xv * 16;
        if (y1 - y0 == 2) k0_mk2x1t(A, W, I + 0, W + 0 + (int64_t)ob * 36, 2, pb, zb, po + (int64_t)ob * 640, ob * 2, st + 2 * ob * 2, sh + ob * 2); else k0_mk1x1t(A, W, I + 0, W + 0 + (int64_t)ob * 36, 2, pb, zb, po + (int64_t)ob * 640, ob * 2, st + 2 * ob * 2, sh + ob * 2);
        }
        }
        for (int o = 0; o < 2; o++) {
            float *pl = A + 1280 + (int64_t)n * 640 + (int64_t)o * 320 + (int64_t)z * 160;
            for (int y = y0; y < y1; y++) {
                float *rowp = pl + (y + 1) * 32 + 8;
                e2f8_store(rowp - 8, e2f8_zero());
                e2f8_store(rowp + 16, e2f8_zero());
            }
            if (band == 0) { for (int q = 0; q < 32; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 1) { for (int q = 0; q < 32; q += 8) e2f8_store((pl + 128) + q, e2f8_zero());
        }
        }
    }
}

