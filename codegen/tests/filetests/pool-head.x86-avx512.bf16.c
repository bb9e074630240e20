/* pool max_pool: 4 tiles, 320 flops */
E2_BF16 void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int z = (int)(t % 2); const int64_t r_ = t / 2;
        const int c = (int)(r_ % 2), n = (int)(r_ / 2);
        e2h *pl = ((e2h *)A) + ((int64_t)1920 + (int64_t)(n) * 512 + (int64_t)(c) * 256 + (int64_t)(z) * 128);
        const float *xp = A + ((int64_t)0 + (int64_t)(n) * 960 + (int64_t)(c) * 480 + (int64_t)(z * 1) * 240);
        for (int q = 0; q < 32; q += 8) e2f8_store(pl + q, e2f8_zero());
        for (int q = 0; q < 32; q += 8) e2f8_store((pl + 96) + q, e2f8_zero());
        for (int y = 0; y < 2; y++) {
            e2h *rowp = pl + (y + 1) * 32 + 8;
            for (int xv = 0; xv < 2; xv++) {
                e2f8 m = e2f8_zero();
                for (int a = 0; a < 1; a++) for (int bb = 0; bb < 2; bb++) {
                    const float *s = (xp + (int64_t)(a) * 240 + (y * 2 + bb + 1) * 40 + 8) + 16 * xv;
                    e2f8 u = e2f8_load(s), v = e2f8_load(s + 8);
                    e2f8 q = e2f8_nanmax(e2f8_even(u, v), e2f8_odd(u, v));
                    m = (a == 0 && bb == 0) ? q : e2f8_nanmax(m, q);
                }
                if (xv == 1) m = e2f8_keep(m, 2);
                e2f8_store(rowp + 8 * xv, m);
            }
            e2f8_store(rowp - 8, e2f8_zero());
            e2f8_store(rowp + 16, e2f8_zero());
        }
    }
}

/* head conv 1x1x1 s1 2->3: 4 tiles, 480 flops */
E2_BF16 static void k1_mk1x1t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a1_0_0 = e2f16_zero();
    e2f16 a2_0_0 = e2f16_zero();
    for (int e = 0; e < ne; e++, ent += 3, w += 3) {
        const e2h *p = ((e2h *)A) + pb + (int64_t)ent[0] * 256 + (int64_t)(zb + ent[2]) * 128;
        {
            const e2f16 w0_0 = e2f16_bcast(w + 0);
            const e2f16 w1_0 = e2f16_bcast(w + 1);
            const e2f16 w2_0 = e2f16_bcast(w + 2);
            { const e2f16 x = e2f16_loadn(p + 0, 10);
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
              a2_0_0 = e2f16_fma(w2_0, x, a2_0_0);
            }
        }
    }
    {
    const e2f16 vb = e2f16_bcast(W + 16 + o0 + 0);
    { e2f16 v = e2f16_keep(e2f16_add(a0_0_0, vb), 10);
      e2f16_store(A + po + 0, v);
    }
    }
    {
    const e2f16 vb = e2f16_bcast(W + 16 + o0 + 1);
    { e2f16 v = e2f16_keep(e2f16_add(a1_0_0, vb), 10);
      e2f16_store(A + po + 256, v);
    }
    }
    {
    const e2f16 vb = e2f16_bcast(W + 16 + o0 + 2);
    { e2f16 v = e2f16_keep(e2f16_add(a2_0_0, vb), 10);
      e2f16_store(A + po + 512, v);
    }
    }
}
E2_BF16 void k1(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 2); const int64_t nz = t / 2;
        const int z = (int)(nz % 2), n = (int)(nz / 2);
        const int y0 = band * 1, y1 = y0 + 1 < 2 ? y0 + 1 : 2;
        const int zb = z * 1 - 0;
        (void)y1;
        double *st = 0;
        float *sh = 0;
        for (int ob = 0; ob < 1; ob++) {
        { const int xv = 0;
        const int64_t pb = 1920 + (int64_t)n * 512 + (int64_t)(1 + y0 * 1 - 0) * 32 + 8 + xv * 16 - 0;
        const int64_t po = 0 + (int64_t)n * 768 + (int64_t)z * 128 + (int64_t)(1 + y0) * 32 + 8 + xv * 16;
        k1_mk1x1t(A, W, I + 0, W + 0 + (int64_t)ob * 6, 2, pb, zb, po + (int64_t)ob * 768, ob * 3, st + 2 * ob * 3, sh + ob * 3);
        }
        }
        for (int o = 0; o < 3; o++) {
            float *pl = A + 0 + (int64_t)n * 768 + (int64_t)o * 256 + (int64_t)z * 128;
            for (int y = y0; y < y1; y++) {
                float *rowp = pl + (y + 1) * 32 + 8;
                e2f8_store(rowp - 8, e2f8_zero());
                e2f8_store(rowp + 16, e2f8_zero());
            }
            if (band == 0) { for (int q = 0; q < 32; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 1) { for (int q = 0; q < 32; q += 8) e2f8_store((pl + 96) + q, e2f8_zero());
        }
        }
    }
}

/* labels argmax: 2 tiles, 120 flops */
void k2(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int z = (int)(t % 2), n = (int)(t / 2);
        const float *xp = A + ((int64_t)0 + (int64_t)(n) * 768 + (int64_t)(0) * 256 + (int64_t)(z) * 128);
        float *yp = A + ((int64_t)768 + (int64_t)(n) * 256 + (int64_t)(0) * 256 + (int64_t)(z) * 128);
        for (int q = 0; q < 32; q += 8) e2f8_store(yp + q, e2f8_zero());
        for (int q = 0; q < 32; q += 8) e2f8_store((yp + 96) + q, e2f8_zero());
        for (int y = 0; y < 2; y++) {
            const float *xr = xp + ((y) + 1) * 32 + 8;
            float *yr = yp + ((y) + 1) * 32 + 8;
            for (int xv = 0; xv < 2; xv++) {
                e2f8 bv = e2f8_load(xr + 8 * xv);
                e2f8 bi = e2f8_zero();
                for (int c = 1; c < 3; c++) {
                    const e2f8 v = e2f8_load(xr + (int64_t)c * 256 + 8 * xv);
                    e2f8_argmax_step(&bv, &bi, v, c);
                }
                if (xv == 1) bi = e2f8_keep(bi, 2);
                e2f8_store(yr + 8 * xv, bi);
            }
            e2f8_store(yr - 8, e2f8_zero());
            e2f8_store(yr + 16, e2f8_zero());
        }
    }
}

