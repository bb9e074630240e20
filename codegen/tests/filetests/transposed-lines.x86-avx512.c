/* fused_conv3d up 2x2x2 3->2: 2 tiles, 6144 flops */
static void k0_w2t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int64_t po, int o, double *restrict st,
    float *restrict cy) {
    (void)W; (void)o; (void)st; (void)cy;
    e2f16 a0_0 = e2f16_zero();
    e2f16 a1_0 = e2f16_zero();
    e2f16 a2_0 = e2f16_zero();
    e2f16 a3_0 = e2f16_zero();
    e2f16 a4_0 = e2f16_zero();
    e2f16 a5_0 = e2f16_zero();
    e2f16 a6_0 = e2f16_zero();
    e2f16 a7_0 = e2f16_zero();
    for (int e = 0; e < ne; e++, w += 8) {
        const float *p = A + pb + (int64_t)ent[e] * 256;
        const e2f16 x0 = e2f16_load(p + 0);
        { const e2f16 w0 = e2f16_bcast(w + 0); a0_0 = e2f16_fma(w0, x0, a0_0); }
        { const e2f16 w1 = e2f16_bcast(w + 1); a1_0 = e2f16_fma(w1, x0, a1_0); }
        { const e2f16 w2 = e2f16_bcast(w + 2); a2_0 = e2f16_fma(w2, x0, a2_0); }
        { const e2f16 w3 = e2f16_bcast(w + 3); a3_0 = e2f16_fma(w3, x0, a3_0); }
        { const e2f16 w4 = e2f16_bcast(w + 4); a4_0 = e2f16_fma(w4, x0, a4_0); }
        { const e2f16 w5 = e2f16_bcast(w + 5); a5_0 = e2f16_fma(w5, x0, a5_0); }
        { const e2f16 w6 = e2f16_bcast(w + 6); a6_0 = e2f16_fma(w6, x0, a6_0); }
        { const e2f16 w7 = e2f16_bcast(w + 7); a7_0 = e2f16_fma(w7, x0, a7_0); }
    }
    const e2f16 vsl = e2f16_set1(0.01f);
    const e2f16 vb = e2f16_bcast(W + 48 + o);
    e2f16 z0_0_0 = e2f16_zip_lo(a0_0, a1_0);
    z0_0_0 = e2f16_add(z0_0_0, vb);
    z0_0_0 = e2f16_lrelu(z0_0_0, vsl);
    e2f16 z0_0_1 = e2f16_zip_hi(a0_0, a1_0);
    z0_0_1 = e2f16_add(z0_0_1, vb);
    z0_0_1 = e2f16_lrelu(z0_0_1, vsl);
    e2f16 z0_1_0 = e2f16_zip_lo(a2_0, a3_0);
    z0_1_0 = e2f16_add(z0_1_0, vb);
    z0_1_0 = e2f16_lrelu(z0_1_0, vsl);
    e2f16 z0_1_1 = e2f16_zip_hi(a2_0, a3_0);
    z0_1_1 = e2f16_add(z0_1_1, vb);
    z0_1_1 = e2f16_lrelu(z0_1_1, vsl);
    e2f16 z1_0_0 = e2f16_zip_lo(a4_0, a5_0);
    z1_0_0 = e2f16_add(z1_0_0, vb);
    z1_0_0 = e2f16_lrelu(z1_0_0, vsl);
    e2f16 z1_0_1 = e2f16_zip_hi(a4_0, a5_0);
    z1_0_1 = e2f16_add(z1_0_1, vb);
    z1_0_1 = e2f16_lrelu(z1_0_1, vsl);
    e2f16 z1_1_0 = e2f16_zip_lo(a6_0, a7_0);
    z1_1_0 = e2f16_add(z1_1_0, vb);
    z1_1_0 = e2f16_lrelu(z1_1_0, vsl);
    e2f16 z1_1_1 = e2f16_zip_hi(a6_0, a7_0);
    z1_1_1 = e2f16_add(z1_1_1, vb);
    z1_1_1 = e2f16_lrelu(z1_1_1, vsl);
    e2f16_store(A + po - 8, e2f16_alignr(z0_0_0, e2f16_bcast8(cy + 0), 8));
    e2f16_store(A + po + 8, e2f16_alignr(z0_0_1, z0_0_0, 8));
    e2f16_store(A + po + 24, e2f16_alignr(e2f16_zero(), z0_0_1, 8));
    e2f16_store(A + po + 40, e2f16_alignr(z0_1_0, e2f16_bcast8(cy + 8), 8));
    e2f16_store(A + po + 56, e2f16_alignr(z0_1_1, z0_1_0, 8));
    e2f16_store(A + po + 72, e2f16_alignr(e2f16_zero(), z0_1_1, 8));
    e2f16_store(A + po + 280, e2f16_alignr(z1_0_0, e2f16_bcast8(cy + 16), 8));
    e2f16_store(A + po + 296, e2f16_alignr(z1_0_1, z1_0_0, 8));
    e2f16_store(A + po + 312, e2f16_alignr(e2f16_zero(), z1_0_1, 8));
    e2f16_store(A + po + 328, e2f16_alignr(z1_1_0, e2f16_bcast8(cy + 24), 8));
    e2f16_store(A + po + 344, e2f16_alignr(z1_1_1, z1_1_0, 8));
    e2f16_store(A + po + 360, e2f16_alignr(e2f16_zero(), z1_1_1, 8));
}
void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 1); const int64_t nz = t / 1;
        const int z = (int)(nz % 2), n = (int)(nz / 2);
        const int y0 = band * 4, y1 = y0 + 4 < 2 ? y0 + 4 : 2;
        const int64_t tn = t + 1 < 2 ? t + 1 : t;
        const int bn = (int)(tn % 1); const int64_t nzn = tn / 1;
        const int yn = bn * 4, rn = (yn + 4 < 2 ? yn + 4 : 2) - yn;
        const float *pf = A + 2304 + (nzn / 2) * 768 + (nzn % 2) * 128 + (int64_t)(yn + 1) * 32;
        double *st = 0;
        float cy[32];
        for (int o = 0; o < 2; o++) {
            const int e0 = I[16 + o], e1 = I[16 + o + 1];
            for (int c = o * 3 / 2; c < (o + 1) * 3 / 2; c++) for (int l = 0; l < rn * 32; l += 16) e2_prefetch2(pf + (int64_t)c * 256 + l);
            for (int yi = y0; yi < y1; yi++) {
                const int64_t pr = 2304 + (int64_t)n * 768 + (int64_t)z * 128 + (int64_t)(yi + 1) * 32 + 8;
                const int64_t qr = 0 + (int64_t)n * 2304 + (int64_t)z * 576 + (int64_t)(2 * yi + 1) * 48 + 8;
                memset(cy, 0, sizeof cy);
                { const int64_t pb = pr + 0, po = qr + (int64_t)o * 1152 + 0; k0_w2t(A, W, I + 0 + e0, W + 0 + (int64_t)e0 * 8, e1 - e0, pb, po, o, st + 4 * o, cy); }
            }
        }
        for (int o = 0; o < 2; o++) for (int a = 0; a < 2; a++) {
            const int oz = z * 2 + a;
            float *pl = A + 0 + (int64_t)n * 2304 + (int64_t)o * 1152 + (int64_t)oz * 288;
            if (band == 0) { for (int q = 0; q < 48; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 0) { for (int q = 0; q < 48; q += 8) e2f8_store((pl + 240) + q, e2f8_zero());
        }
        }
    }
}

