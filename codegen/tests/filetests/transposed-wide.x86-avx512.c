/* fused_conv3d up sparse 2x2x2 2->2: 2 tiles, 5760 flops */
static void k0_w3t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int64_t po, int o, double *restrict st,
    float *restrict cy) {
    (void)W; (void)o; (void)st; (void)cy;
    e2f16 a0_0 = e2f16_zero();
    e2f16 a0_1 = e2f16_zero();
    e2f16 a1_0 = e2f16_zero();
    e2f16 a1_1 = e2f16_zero();
    e2f16 a2_0 = e2f16_zero();
    e2f16 a2_1 = e2f16_zero();
    e2f16 a3_0 = e2f16_zero();
    e2f16 a3_1 = e2f16_zero();
    e2f16 a4_0 = e2f16_zero();
    e2f16 a4_1 = e2f16_zero();
    e2f16 a5_0 = e2f16_zero();
    e2f16 a5_1 = e2f16_zero();
    e2f16 a6_0 = e2f16_zero();
    e2f16 a6_1 = e2f16_zero();
    e2f16 a7_0 = e2f16_zero();
    e2f16 a7_1 = e2f16_zero();
    for (int e = 0; e < ne; e++, w += 8) {
        const float *p = A + pb + (int64_t)ent[e] * 400;
        const e2f16 x0 = e2f16_load(p + 0);
        const e2f16 x1 = e2f16_loadn(p + 16, 8);
        { const e2f16 w0 = e2f16_bcast(w + 0); a0_0 = e2f16_fma(w0, x0, a0_0); a0_1 = e2f16_fma(w0, x1, a0_1); }
        { const e2f16 w1 = e2f16_bcast(w + 1); a1_0 = e2f16_fma(w1, x0, a1_0); a1_1 = e2f16_fma(w1, x1, a1_1); }
        { const e2f16 w2 = e2f16_bcast(w + 2); a2_0 = e2f16_fma(w2, x0, a2_0); a2_1 = e2f16_fma(w2, x1, a2_1); }
        { const e2f16 w3 = e2f16_bcast(w + 3); a3_0 = e2f16_fma(w3, x0, a3_0); a3_1 = e2f16_fma(w3, x1, a3_1); }
        { const e2f16 w4 = e2f16_bcast(w + 4); a4_0 = e2f16_fma(w4, x0, a4_0); a4_1 = e2f16_fma(w4, x1, a4_1); }
        { const e2f16 w5 = e2f16_bcast(w + 5); a5_0 = e2f16_fma(w5, x0, a5_0); a5_1 = e2f16_fma(w5, x1, a5_1); }
        { const e2f16 w6 = e2f16_bcast(w + 6); a6_0 = e2f16_fma(w6, x0, a6_0); a6_1 = e2f16_fma(w6, x1, a6_1); }
        { const e2f16 w7 = e2f16_bcast(w + 7); a7_0 = e2f16_fma(w7, x0, a7_0); a7_1 = e2f16_fma(w7, x1, a7_1); }
    }
    e2f16 z0_0_0 = e2f16_zip_lo(a0_0, a1_0);
    e2f16 z0_0_1 = e2f16_zip_hi(a0_0, a1_0);
    e2f16 z0_0_2 = e2f16_zip_lo(a0_1, a1_1);
    z0_0_2 = e2f16_keep(z0_0_2, 8);
    e2f16 z0_1_0 = e2f16_zip_lo(a2_0, a3_0);
    e2f16 z0_1_1 = e2f16_zip_hi(a2_0, a3_0);
    e2f16 z0_1_2 = e2f16_zip_lo(a2_1, a3_1);
    z0_1_2 = e2f16_keep(z0_1_2, 8);
    e2f16 z1_0_0 = e2f16_zip_lo(a4_0, a5_0);
    e2f16 z1_0_1 = e2f16_zip_hi(a4_0, a5_0);
    e2f16 z1_0_2 = e2f16_zip_lo(a4_1, a5_1);
    z1_0_2 = e2f16_keep(z1_0_2, 8);
    e2f16 z1_1_0 = e2f16_zip_lo(a6_0, a7_0);
    e2f16 z1_1_1 = e2f16_zip_hi(a6_0, a7_0);
    e2f16 z1_1_2 = e2f16_zip_lo(a6_1, a7_1);
    z1_1_2 = e2f16_keep(z1_1_2, 8);
    { e2st vs = e2st_zero(), vq = e2st_zero();
      e2f16_stats(&vs, &vq, z0_0_0);
      e2f16_stats(&vs, &vq, z0_0_1);
      e2f16_stats(&vs, &vq, z0_0_2);
      e2f16_stats(&vs, &vq, z0_1_0);
      e2f16_stats(&vs, &vq, z0_1_1);
      e2f16_stats(&vs, &vq, z0_1_2);
      st[0] += e2st_sum(vs); st[1] += e2st_sum(vq); }
    { e2st vs = e2st_zero(), vq = e2st_zero();
      e2f16_stats(&vs, &vq, z1_0_0);
      e2f16_stats(&vs, &vq, z1_0_1);
      e2f16_stats(&vs, &vq, z1_0_2);
      e2f16_stats(&vs, &vq, z1_1_0);
      e2f16_stats(&vs, &vq, z1_1_1);
      e2f16_stats(&vs, &vq, z1_1_2);
      st[2] += e2st_sum(vs); st[3] += e2st_sum(vq); }
    e2f16_store(A + po + 0, z0_0_0);
    e2f16_store(A + po + 16, z0_0_1);
    e2f16_store(A + po + 32, z0_0_2);
    e2f16_store(A + po + 56, z0_1_0);
    e2f16_store(A + po + 72, z0_1_1);
    e2f16_store(A + po + 88, z0_1_2);
    e2f16_store(A + po + 448, z1_0_0);
    e2f16_store(A + po + 464, z1_0_1);
    e2f16_store(A + po + 480, z1_0_2);
    e2f16_store(A + po + 504, z1_1_0);
    e2f16_store(A + po + 520, z1_1_1);
    e2f16_store(A + po + 536, z1_1_2);
}
void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 1); const int64_t nz = t / 1;
        const int z = (int)(nz % 2), n = (int)(nz / 2);
        const int y0 = band * 4, y1 = y0 + 4 < 3 ? y0 + 4 : 3;
        const int64_t tn = t + 1 < 2 ? t + 1 : t;
        const int bn = (int)(tn % 1); const int64_t nzn = tn / 1;
        const int yn = bn * 4, rn = (yn + 4 < 3 ? yn + 4 : 3) - yn;
        const float *pf = A + 3584 + (nzn / 2) * 800 + (nzn % 2) * 200 + (int64_t)(yn + 1) * 40;
        double st[8]; memset(st, 0, sizeof st);
        float *cy = 0;
        for (int o = 0; o < 2; o++) {
            const int e0 = I[16 + o], e1 = I[16 + o + 1];
            for (int c = o * 2 / 2; c < (o + 1) * 2 / 2; c++) for (int l = 0; l < rn * 40; l += 16) e2_prefetch2(pf + (int64_t)c * 400 + l);
            for (int yi = y0; yi < y1; yi++) {
                const int64_t pr = 3584 + (int64_t)n * 800 + (int64_t)z * 200 + (int64_t)(yi + 1) * 40 + 8;
                const int64_t qr = 0 + (int64_t)n * 3584 + (int64_t)z * 896 + (int64_t)(2 * yi + 1) * 56 + 8;
                { const int64_t pb = pr + 0, po = qr + (int64_t)o * 1792 + 0; k0_w3t(A, W, I + 0 + e0, W + 0 + (int64_t)e0 * 8, e1 - e0, pb, po, o, st + 4 * o, cy); }
            }
        }
        for (int o = 0; o < 2; o++) for (int a = 0; a < 2; a++) {
            const int oz = z * 2 + a;
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
            pp[0] = st[4 * o + 2 * a]; pp[1] = st[4 * o + 2 * a + 1];
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
        const e2f16 vm = e2f16_set1(A[4416 + 2 * i]), vs = e2f16_set1(A[4416 + 2 * i + 1]);
        const e2f16 vb = e2f16_set1(W[48 + c]);
        const float *s = A + ((int64_t)0 + (int64_t)(n) * 3584 + (int64_t)(c) * 1792 + (int64_t)(z) * 448);
        float *o = A + ((int64_t)0 + (int64_t)(n) * 3584 + (int64_t)(c) * 1792 + (int64_t)(z) * 448);
        for (int q = 0; q < 56; q += 8) e2f8_store(o + q, e2f8_zero());
        for (int y = 0; y < 6; y++) {
            const float *sr = s + ((y) + 1) * 56 + 8;
            float *orow = o + ((y) + 1) * 56 + 8;
            for (int x = 0; x < 3; x++) {
                e2f16 v = e2f16_fma(e2f16_sub(e2f16_load(sr + 16 * x), vm), vs, vb);
                if (x == 2) v = e2f16_keep(v, 8);
                e2f16_store(orow + 16 * x, v);
            }
            e2f8_store(orow - 8, e2f8_zero());
        }
        for (int q = 0; q < 56; q += 8) e2f8_store((o + 392) + q, e2f8_zero());
    }
}

