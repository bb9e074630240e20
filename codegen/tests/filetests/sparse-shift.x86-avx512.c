/* c conv sparse 1x3x3 s1 4->2: 3 tiles, 6912 flops */
static void k0_mk4x1t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a0_1_0 = e2f16_zero();
    e2f16 a0_2_0 = e2f16_zero();
    e2f16 a0_3_0 = e2f16_zero();
    for (int e = 0; e < ne; e++, ent += 3, w += 9) {
        if ((unsigned)(zb + ent[2]) >= 3u) continue;
        const float *p = A + pb + (int64_t)ent[0] * 576 + (int64_t)(zb + ent[2]) * 192;
        if (e + 1 < ne) {
            const float *q = A + pb + (int64_t)ent[3] * 576 + (int64_t)(zb + ent[5]) * 192;
            e2_prefetch(q + -7);
            e2_prefetch(q + 9);
            e2_prefetch(q + 25);
            e2_prefetch(q + 41);
            e2_prefetch(q + 57);
            e2_prefetch(q + 73);
            e2_prefetch(q + 89);
            e2_prefetch(q + 105);
            e2_prefetch(q + 121);
            e2_prefetch(q + 137);
            e2_prefetch(q + 153);
            e2_prefetch(q + 169);
        }
        const e2f16 w0 = e2f16_bcast(w + 0);
        const e2f16 w1 = e2f16_bcast(w + 1);
        const e2f16 w2 = e2f16_bcast(w + 2);
        const e2f16 w3 = e2f16_bcast(w + 3);
        const e2f16 w4 = e2f16_bcast(w + 4);
        const e2f16 w5 = e2f16_bcast(w + 5);
        const e2f16 w6 = e2f16_bcast(w + 6);
        const e2f16 w7 = e2f16_bcast(w + 7);
        const e2f16 w8 = e2f16_bcast(w + 8);
        {
            const e2f16 v0 = e2f16_load(p + -7);
            const e2f16 v1 = e2f16_load(p + 9);
            {
            const e2f16 x0 = e2f16_alignr(v1, v0, 7);
            const e2f16 x1 = e2f16_alignr(v1, v0, 8);
            const e2f16 x2 = e2f16_alignr(v1, v0, 9);
            a0_0_0 = e2f16_fma(w0, x0, a0_0_0);
            a0_0_0 = e2f16_fma(w3, x1, a0_0_0);
            a0_0_0 = e2f16_fma(w6, x2, a0_0_0);
            }
        }
        {
            const e2f16 v0 = e2f16_load(p + 25);
            const e2f16 v1 = e2f16_load(p + 41);
            {
            const e2f16 x0 = e2f16_alignr(v1, v0, 7);
            const e2f16 x1 = e2f16_alignr(v1, v0, 8);
            const e2f16 x2 = e2f16_alignr(v1, v0, 9);
            a0_1_0 = e2f16_fma(w0, x0, a0_1_0);
            a0_1_0 = e2f16_fma(w3, x1, a0_1_0);
            a0_1_0 = e2f16_fma(w6, x2, a0_1_0);
            a0_0_0 = e2f16_fma(w1, x0, a0_0_0);
            a0_0_0 = e2f16_fma(w4, x1, a0_0_0);
            a0_0_0 = e2f16_fma(w7, x2, a0_0_0);
            }
        }
        {
            const e2f16 v0 = e2f16_load(p + 57);
            const e2f16 v1 = e2f16_load(p + 73);
            {
            const e2f16 x0 = e2f16_alignr(v1, v0, 7);
            const e2f16 x1 = e2f16_alignr(v1, v0, 8);
            const e2f16 x2 = e2f16_alignr(v1, v0, 9);
            a0_2_0 = e2f16_fma(w0, x0, a0_2_0);
            a0_2_0 = e2f16_fma(w3, x1, a0_2_0);
            a0_2_0 = e2f16_fma(w6, x2, a0_2_0);
            a0_1_0 = e2f16_fma(w1, x0, a0_1_0);
            a0_1_0 = e2f16_fma(w4, x1, a0_1_0);
            a0_1_0 = e2f16_fma(w7, x2, a0_1_0);
            a0_0_0 = e2f16_fma(w2, x0, a0_0_0);
            a0_0_0 = e2f16_fma(w5, x1, a0_0_0);
            a0_0_0 = e2f16_fma(w8, x2, a0_0_0);
            }
        }
        {
            const e2f16 v0 = e2f16_load(p + 89);
            const e2f16 v1 = e2f16_load(p + 105);
            {
            const e2f16 x0 = e2f16_alignr(v1, v0, 7);
            const e2f16 x1 = e2f16_alignr(v1, v0, 8);
            const e2f16 x2 = e2f16_alignr(v1, v0, 9);
            a0_3_0 = e2f16_fma(w0, x0, a0_3_0);
            a0_3_0 = e2f16_fma(w3, x1, a0_3_0);
            a0_3_0 = e2f16_fma(w6, x2, a0_3_0);
            a0_2_0 = e2f16_fma(w1, x0, a0_2_0);
            a0_2_0 = e2f16_fma(w4, x1, a0_2_0);
            a0_2_0 = e2f16_fma(w7, x2, a0_2_0);
            a0_1_0 = e2f16_fma(w2, x0, a0_1_0);
            a0_1_0 = e2f16_fma(w5, x1, a0_1_0);
            a0_1_0 = e2f16_fma(w8, x2, a0_1_0);
            }
        }
        {
            const e2f16 v0 = e2f16_load(p + 121);
            const e2f16 v1 = e2f16_load(p + 137);
            {
            const e2f16 x0 = e2f16_alignr(v1, v0, 7);
            const e2f16 x1 = e2f16_alignr(v1, v0, 8);
            const e2f16 x2 = e2f16_alignr(v1, v0, 9);
            a0_3_0 = e2f16_fma(w1, x0, a0_3_0);
            a0_3_0 = e2f16_fma(w4, x1, a0_3_0);
            a0_3_0 = e2f16_fma(w7, x2, a0_3_0);
            a0_2_0 = e2f16_fma(w2, x0, a0_2_0);
            a0_2_0 = e2f16_fma(w5, x1, a0_2_0);
            a0_2_0 = e2f16_fma(w8, x2, a0_2_0);
            }
        }
        {
            const e2f16 v0 = e2f16_load(p + 153);
            const e2f16 v1 = e2f16_load(p + 169);
            {
            const e2f16 x0 = e2f16_alignr(v1, v0, 7);
            const e2f16 x1 = e2f16_alignr(v1, v0, 8);
            const e2f16 x2 = e2f16_alignr(v1, v0, 9);
            a0_3_0 = e2f16_fma(w2, x0, a0_3_0);
            a0_3_0 = e2f16_fma(w5, x1, a0_3_0);
            a0_3_0 = e2f16_fma(w8, x2, a0_3_0);
            }
        }
    }
    {
    { e2f16 v = a0_0_0;
      e2f16_store(A + po + 0, v);
    }
    { e2f16 v = a0_1_0;
      e2f16_store(A + po + 32, v);
    }
    { e2f16 v = a0_2_0;
      e2f16_store(A + po + 64, v);
    }
    { e2f16 v = a0_3_0;
      e2f16_store(A + po + 96, v);
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
        { const int xv = 0;
        const int64_t pb = 0 + (int64_t)n * 2304 + (int64_t)(1 + y0 * 1 - 1) * 32 + 8 + xv * 16 - 1;
        const int64_t po = 2304 + (int64_t)n * 1152 + (int64_t)z * 192 + (int64_t)(1 + y0) * 32 + 8 + xv * 16;
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

