/* c conv sparse 1x3x3 s1 4->2 bf16: 3 tiles, 6912 flops */
E2_BF16 static void k0_pack(const float *restrict A, const int32_t *restrict ent,
    uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {
    const unsigned ml = xs == 0 ? 0xff00u : 0xffffu;
    const unsigned mr = xe == 1 ? 0xffu : 0xffffu;
    for (int s = 0; s < 4; s++, ent += 3) {
        uint32_t *pq = pk + (int64_t)s * 144;
        if ((unsigned)(zb + ent[2]) >= 3u) { memset(pq, 0, sizeof(uint32_t) * 144); continue; }
        const float *p = A + 0 + (int64_t)n * 2304 + (int64_t)ent[0] * 576 + (int64_t)(zb + ent[2]) * 192 + (int64_t)(r0) * 32 + 8;
        /* The next slot's rows into L2 (another channel: the hardware prefetchers do not follow). */
        const float *pn = s + 1 < 4 && !((unsigned)(zb + (ent + 3)[2]) >= 3u) ? A + 0 + (int64_t)n * 2304 + (int64_t)ent[3] * 576 + (int64_t)(zb + ent[5]) * 192 + (int64_t)(r0) * 32 + 8 : p;
        for (int k = 0; 2 * k < nr + 2; k++) {
            const float *q0 = p + (int64_t)(2 * k) * 32, *q1 = q0 + 32;
            const float *n0 = pn + (int64_t)(2 * k) * 32;
            const int two = 2 * k + 1 < nr + 2;
            uint32_t *o = pq + (int64_t)k * 48 + 16 - 16 * xs;
            { const e2f16 lo = e2f16_loadm(q0 + 16 * xs - 16, ml); const e2f16 hi = two ? e2f16_loadm(q1 + 16 * xs - 16, ml) : e2f16_zero(); e2bf_store(o + 16 * xs - 16, e2bf_pairs(lo, hi)); }
            for (int j = xs; j < xe; j++) {
                e2_prefetch2(n0 + 16 * j);
                e2_prefetch2(n0 + 32 + 16 * j);
                const e2f16 lo = e2f16_load(q0 + 16 * j); const e2f16 hi = two ? e2f16_load(q1 + 16 * j) : e2f16_zero(); e2bf_store(o + 16 * j, e2bf_pairs(lo, hi));
            }
            { const e2f16 lo = e2f16_loadm(q0 + 16 * xe, mr); const e2f16 hi = two ? e2f16_loadm(q1 + 16 * xe, mr) : e2f16_zero(); e2bf_store(o + 16 * xe, e2bf_pairs(lo, hi)); }
        }
    }
}
E2_BF16 static void k0_mb4x1t(float *restrict A, const float *restrict W, const int32_t *restrict sl,
    const uint32_t *restrict w, int ne, const uint32_t *restrict pk, int64_t po, int o0, double *restrict st, float *restrict sh) {
    (void)W; (void)o0; (void)st; (void)sh;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a0_1_0 = e2f16_zero();
    e2f16 a0_2_0 = e2f16_zero();
    e2f16 a0_3_0 = e2f16_zero();
    for (int e = 0; e < ne; e++, w += 12) {
        const uint32_t *pq = pk + (int64_t)sl[e] * 144 + 16;
        { const e2bf c_1 = e2bf_load(pq + -16);
          const e2bf c0 = e2bf_load(pq + 0);
          const e2bf c1 = e2bf_load(pq + 16);
          const e2bf t0_0 = e2bf_alignr(c0, c_1, 15), t2_0 = e2bf_alignr(c1, c0, 1);
          e2bf_dpm(a0_0_0, t0_0, w + 0);
          e2bf_dpm(a0_1_0, t0_0, w + 6);
          e2bf_dpm(a0_0_0, c0, w + 1);
          e2bf_dpm(a0_1_0, c0, w + 7);
          e2bf_dpm(a0_0_0, t2_0, w + 2);
          e2bf_dpm(a0_1_0, t2_0, w + 8);
        }
        { const e2bf c_1 = e2bf_load(pq + 32);
          const e2bf c0 = e2bf_load(pq + 48);
          const e2bf c1 = e2bf_load(pq + 64);
          const e2bf t0_0 = e2bf_alignr(c0, c_1, 15), t2_0 = e2bf_alignr(c1, c0, 1);
          e2bf_dpm(a0_2_0, t0_0, w + 0);
          e2bf_dpm(a0_0_0, t0_0, w + 3);
          e2bf_dpm(a0_3_0, t0_0, w + 6);
          e2bf_dpm(a0_1_0, t0_0, w + 9);
          e2bf_dpm(a0_2_0, c0, w + 1);
          e2bf_dpm(a0_0_0, c0, w + 4);
          e2bf_dpm(a0_3_0, c0, w + 7);
          e2bf_dpm(a0_1_0, c0, w + 10);
          e2bf_dpm(a0_2_0, t2_0, w + 2);
          e2bf_dpm(a0_0_0, t2_0, w + 5);
          e2bf_dpm(a0_3_0, t2_0, w + 8);
          e2bf_dpm(a0_1_0, t2_0, w + 11);
        }
        { const e2bf c_1 = e2bf_load(pq + 80);
          const e2bf c0 = e2bf_load(pq + 96);
          const e2bf c1 = e2bf_load(pq + 112);
          const e2bf t0_0 = e2bf_alignr(c0, c_1, 15), t2_0 = e2bf_alignr(c1, c0, 1);
          e2bf_dpm(a0_2_0, t0_0, w + 3);
          e2bf_dpm(a0_3_0, t0_0, w + 9);
          e2bf_dpm(a0_2_0, c0, w + 4);
          e2bf_dpm(a0_3_0, c0, w + 10);
          e2bf_dpm(a0_2_0, t2_0, w + 5);
          e2bf_dpm(a0_3_0, t2_0, w + 11);
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
        uint32_t pk[576] __attribute__((aligned(64)));
        for (int r0 = y0; r0 < y1; r0 += 4) {
        const int nr = y1 - r0 < 4 ? y1 - r0 : 4;
        for (int xs = 0; xs < 1; xs += 1) {
        const int xe = xs + 1 < 1 ? xs + 1 : 1;
        k0_pack(A, I + 80, pk, n, zb, r0, nr, xs, xe);
        for (int o = 0; o < 2; o++) { const int e0 = I[16 + o], e1 = I[16 + o + 1];
        if (xe == 1) { const int xv = 0;
        const int64_t po = 2304 + (int64_t)n * 1152 + (int64_t)z * 192 + (int64_t)(1 + r0) * 32 + 8 + xv * 16;
        k0_mb4x1t(A, W, I + 0 + e0, (const uint32_t *)(I + 32) + (int64_t)e0 * 12, e1 - e0, pk + (xv - xs) * 16, po + (int64_t)o * 576, o, st + 2 * o, sh + o);
        }
        }
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

