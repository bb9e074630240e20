/* c conv 1x3x3 s1 2->3 bf16: 4 tiles, 21600 flops */
E2_BF16 static void k0_pack(const float *restrict A, const int32_t *restrict ent,
    uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {
    for (int s = 0; s < 2; s++, ent += 3) {
        uint32_t *ph = pk + (int64_t)s * 384, *pv = ph + 192;
        const float *p = A + 1680 + (int64_t)n * 1120 + (int64_t)ent[0] * 560 + (int64_t)(zb + ent[2]) * 280 + (int64_t)r0 * 40 + 8;
        for (int rr = 0; rr < nr + 2; rr++) {
            const float *q = p + (int64_t)rr * 40;
            for (int j = xs; j < xe; j++) {
                const int x = 16 * j;
            if (j == 1) {
                const e2f16 l = e2f16_loadn(q + x - 1, 16), m = e2f16_loadn(q + x, 16), h = e2f16_loadn(q + x + 1, 15);
                const e2f16 dn = rr + 1 < nr + 2 ? e2f16_loadn(q + x + 40 + 1, 15) : e2f16_zero();
                e2bf_store(ph + rr * 32 + (j - xs) * 16, e2bf_pairs(l, m));
                e2bf_store(pv + rr * 32 + (j - xs) * 16, e2bf_pairs(h, dn));
                continue;
            }
            {
                const e2f16 l = e2f16_load(q + x - 1), m = e2f16_load(q + x), h = e2f16_load(q + x + 1);
                const e2f16 dn = rr + 1 < nr + 2 ? e2f16_load(q + x + 40 + 1) : e2f16_zero();
                e2bf_store(ph + rr * 32 + (j - xs) * 16, e2bf_pairs(l, m));
                e2bf_store(pv + rr * 32 + (j - xs) * 16, e2bf_pairs(h, dn));
            }
            }
        }
    }
}
E2_BF16 static void k0_mb4x2t(float *restrict A, const float *restrict W, const int32_t *restrict sl,
    const uint32_t *restrict w, int ne, const uint32_t *restrict pk, int64_t po, int o0, double *restrict st) {
    (void)W; (void)sl; (void)o0; (void)st;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a0_0_1 = e2f16_zero();
    e2f16 a0_1_0 = e2f16_zero();
    e2f16 a0_1_1 = e2f16_zero();
    e2f16 a0_2_0 = e2f16_zero();
    e2f16 a0_2_1 = e2f16_zero();
    e2f16 a0_3_0 = e2f16_zero();
    e2f16 a0_3_1 = e2f16_zero();
    e2f16 a1_0_0 = e2f16_zero();
    e2f16 a1_0_1 = e2f16_zero();
    e2f16 a1_1_0 = e2f16_zero();
    e2f16 a1_1_1 = e2f16_zero();
    e2f16 a1_2_0 = e2f16_zero();
    e2f16 a1_2_1 = e2f16_zero();
    e2f16 a1_3_0 = e2f16_zero();
    e2f16 a1_3_1 = e2f16_zero();
    for (int e = 0; e < ne; e++, w += 10) {
        const uint32_t *ph = pk + (int64_t)e * 384, *pv = ph + 192;
        const e2bf w0_0 = e2bf_bcast(w + 0);
        const e2bf w0_1 = e2bf_bcast(w + 2);
        const e2bf w0_2 = e2bf_bcast(w + 4);
        const e2bf w0_3 = e2bf_bcast(w + 6);
        const e2bf w0_4 = e2bf_bcast(w + 8);
        const e2bf w1_0 = e2bf_bcast(w + 1);
        const e2bf w1_1 = e2bf_bcast(w + 3);
        const e2bf w1_2 = e2bf_bcast(w + 5);
        const e2bf w1_3 = e2bf_bcast(w + 7);
        const e2bf w1_4 = e2bf_bcast(w + 9);
        { const e2bf h = e2bf_load(ph + 0); const e2bf v = e2bf_load(pv + 0);
          a0_0_0 = e2bf_dp(a0_0_0, w0_0, h);
          a0_0_0 = e2bf_dp(a0_0_0, w0_3, v);
          a1_0_0 = e2bf_dp(a1_0_0, w1_0, h);
          a1_0_0 = e2bf_dp(a1_0_0, w1_3, v);
        }
        { const e2bf h = e2bf_load(ph + 16); const e2bf v = e2bf_load(pv + 16);
          a0_0_1 = e2bf_dp(a0_0_1, w0_0, h);
          a0_0_1 = e2bf_dp(a0_0_1, w0_3, v);
          a1_0_1 = e2bf_dp(a1_0_1, w1_0, h);
          a1_0_1 = e2bf_dp(a1_0_1, w1_3, v);
        }
        { const e2bf h = e2bf_load(ph + 32); const e2bf v = e2bf_load(pv + 32);
          a0_1_0 = e2bf_dp(a0_1_0, w0_0, h);
          a0_1_0 = e2bf_dp(a0_1_0, w0_3, v);
          a1_1_0 = e2bf_dp(a1_1_0, w1_0, h);
          a1_1_0 = e2bf_dp(a1_1_0, w1_3, v);
          a0_0_0 = e2bf_dp(a0_0_0, w0_1, h);
          a1_0_0 = e2bf_dp(a1_0_0, w1_1, h);
        }
        { const e2bf h = e2bf_load(ph + 48); const e2bf v = e2bf_load(pv + 48);
          a0_1_1 = e2bf_dp(a0_1_1, w0_0, h);
          a0_1_1 = e2bf_dp(a0_1_1, w0_3, v);
          a1_1_1 = e2bf_dp(a1_1_1, w1_0, h);
          a1_1_1 = e2bf_dp(a1_1_1, w1_3, v);
          a0_0_1 = e2bf_dp(a0_0_1, w0_1, h);
          a1_0_1 = e2bf_dp(a1_0_1, w1_1, h);
        }
        { const e2bf h = e2bf_load(ph + 64); const e2bf v = e2bf_load(pv + 64);
          a0_2_0 = e2bf_dp(a0_2_0, w0_0, h);
          a0_2_0 = e2bf_dp(a0_2_0, w0_3, v);
          a1_2_0 = e2bf_dp(a1_2_0, w1_0, h);
          a1_2_0 = e2bf_dp(a1_2_0, w1_3, v);
          a0_1_0 = e2bf_dp(a0_1_0, w0_1, h);
          a1_1_0 = e2bf_dp(a1_1_0, w1_1, h);
          a0_0_0 = e2bf_dp(a0_0_0, w0_2, h);
          a0_0_0 = e2bf_dp(a0_0_0, w0_4, v);
          a1_0_0 = e2bf_dp(a1_0_0, w1_2, h);
          a1_0_0 = e2bf_dp(a1_0_0, w1_4, v);
        }
        { const e2bf h = e2bf_load(ph + 80); const e2bf v = e2bf_load(pv + 80);
          a0_2_1 = e2bf_dp(a0_2_1, w0_0, h);
          a0_2_1 = e2bf_dp(a0_2_1, w0_3, v);
          a1_2_1 = e2bf_dp(a1_2_1, w1_0, h);
          a1_2_1 = e2bf_dp(a1_2_1, w1_3, v);
          a0_1_1 = e2bf_dp(a0_1_1, w0_1, h);
          a1_1_1 = e2bf_dp(a1_1_1, w1_1, h);
          a0_0_1 = e2bf_dp(a0_0_1, w0_2, h);
          a0_0_1 = e2bf_dp(a0_0_1, w0_4, v);
          a1_0_1 = e2bf_dp(a1_0_1, w1_2, h);
          a1_0_1 = e2bf_dp(a1_0_1, w1_4, v);
        }
        { const e2bf h = e2bf_load(ph + 96); const e2bf v = e2bf_load(pv + 96);
          a0_3_0 = e2bf_dp(a0_3_0, w0_0, h);
          a0_3_0 = e2bf_dp(a0_3_0, w0_3, v);
          a1_3_0 = e2bf_dp(a1_3_0, w1_0, h);
          a1_3_0 = e2bf_dp(a1_3_0, w1_3, v);
          a0_2_0 = e2bf_dp(a0_2_0, w0_1, h);
          a1_2_0 = e2bf_dp(a1_2_0, w1_1, h);
          a0_1_0 = e2bf_dp(a0_1_0, w0_2, h);
          a0_1_0 = e2bf_dp(a0_1_0, w0_4, v);
          a1_1_0 = e2bf_dp(a1_1_0, w1_2, h);
          a1_1_0 = e2bf_dp(a1_1_0, w1_4, v);
        }
        { const e2bf h = e2bf_load(ph + 112); const e2bf v = e2bf_load(pv + 112);
          a0_3_1 = e2bf_dp(a0_3_1, w0_0, h);
          a0_3_1 = e2bf_dp(a0_3_1, w0_3, v);
          a1_3_1 = e2bf_dp(a1_3_1, w1_0, h);
          a1_3_1 = e2bf_dp(a1_3_1, w1_3, v);
          a0_2_1 = e2bf_dp(a0_2_1, w0_1, h);
          a1_2_1 = e2bf_dp(a1_2_1, w1_1, h);
          a0_1_1 = e2bf_dp(a0_1_1, w0_2, h);
          a0_1_1 = e2bf_dp(a0_1_1, w0_4, v);
          a1_1_1 = e2bf_dp(a1_1_1, w1_2, h);
          a1_1_1 = e2bf_dp(a1_1_1, w1_4, v);
        }
        { const e2bf h = e2bf_load(ph + 128); const e2bf v = e2bf_load(pv + 128);
          a0_3_0 = e2bf_dp(a0_3_0, w0_1, h);
          a1_3_0 = e2bf_dp(a1_3_0, w1_1, h);
          a0_2_0 = e2bf_dp(a0_2_0, w0_2, h);
          a0_2_0 = e2bf_dp(a0_2_0, w0_4, v);
          a1_2_0 = e2bf_dp(a1_2_0, w1_2, h);
          a1_2_0 = e2bf_dp(a1_2_0, w1_4, v);
        }
        { const e2bf h = e2bf_load(ph + 144); const e2bf v = e2bf_load(pv + 144);
          a0_3_1 = e2bf_dp(a0_3_1, w0_1, h);
          a1_3_1 = e2bf_dp(a1_3_1, w1_1, h);
          a0_2_1 = e2bf_dp(a0_2_1, w0_2, h);
          a0_2_1 = e2bf_dp(a0_2_1, w0_4, v);
          a1_2_1 = e2bf_dp(a1_2_1, w1_2, h);
          a1_2_1 = e2bf_dp(a1_2_1, w1_4, v);
        }
        { const e2bf h = e2bf_load(ph + 160); const e2bf v = e2bf_load(pv + 160);
          a0_3_0 = e2bf_dp(a0_3_0, w0_2, h);
          a0_3_0 = e2bf_dp(a0_3_0, w0_4, v);
          a1_3_0 = e2bf_dp(a1_3_0, w1_2, h);
          a1_3_0 = e2bf_dp(a1_3_0, w1_4, v);
        }
        { const e2bf h = e2bf_load(ph + 176); const e2bf v = e2bf_load(pv + 176);
          a0_3_1 = e2bf_dp(a0_3_1, w0_2, h);
          a0_3_1 = e2bf_dp(a0_3_1, w0_4, v);
          a1_3_1 = e2bf_dp(a1_3_1, w1_2, h);
          a1_3_1 = e2bf_dp(a1_3_1, w1_4, v);
        }
    }
    {
    if (o0 + 0 < 3) {
    const e2f16 vb = e2f16_bcast(W + 0 + o0 + 0);
    e2st vs = e2st_zero(), vq = e2st_zero();
    { e2f16 v = a0_0_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 0, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a0_0_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 16, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a0_1_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 40, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a0_1_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 56, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a0_2_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 80, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a0_2_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 96, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a0_3_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 120, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a0_3_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 136, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    st[0] += e2st_sum(vs); st[1] += e2st_sum(vq);
    }
    }
    {
    if (o0 + 1 < 3) {
    const e2f16 vb = e2f16_bcast(W + 0 + o0 + 1);
    e2st vs = e2st_zero(), vq = e2st_zero();
    { e2f16 v = a1_0_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 560, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a1_0_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 576, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a1_1_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 600, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a1_1_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 616, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a1_2_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 640, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a1_2_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 656, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a1_3_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 680, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a1_3_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 696, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    st[2] += e2st_sum(vs); st[3] += e2st_sum(vq);
    }
    }
}
E2_BF16 static void k0_mb1x2t(float *restrict A, const float *restrict W, const int32_t *restrict sl,
    const uint32_t *restrict w, int ne, const uint32_t *restrict pk, int64_t po, int o0, double *restrict st) {
    (void)W; (void)sl; (void)o0; (void)st;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a0_0_1 = e2f16_zero();
    e2f16 a1_0_0 = e2f16_zero();
    e2f16 a1_0_1 = e2f16_zero();
    for (int e = 0; e < ne; e++, w += 10) {
        const uint32_t *ph = pk + (int64_t)e * 384, *pv = ph + 192;
        const e2bf w0_0 = e2bf_bcast(w + 0);
        const e2bf w0_1 = e2bf_bcast(w + 2);
        const e2bf w0_2 = e2bf_bcast(w + 4);
        const e2bf w0_3 = e2bf_bcast(w + 6);
        const e2bf w0_4 = e2bf_bcast(w + 8);
        const e2bf w1_0 = e2bf_bcast(w + 1);
        const e2bf w1_1 = e2bf_bcast(w + 3);
        const e2bf w1_2 = e2bf_bcast(w + 5);
        const e2bf w1_3 = e2bf_bcast(w + 7);
        const e2bf w1_4 = e2bf_bcast(w + 9);
        { const e2bf h = e2bf_load(ph + 0); const e2bf v = e2bf_load(pv + 0);
          a0_0_0 = e2bf_dp(a0_0_0, w0_0, h);
          a0_0_0 = e2bf_dp(a0_0_0, w0_3, v);
          a1_0_0 = e2bf_dp(a1_0_0, w1_0, h);
          a1_0_0 = e2bf_dp(a1_0_0, w1_3, v);
        }
        { const e2bf h = e2bf_load(ph + 16); const e2bf v = e2bf_load(pv + 16);
          a0_0_1 = e2bf_dp(a0_0_1, w0_0, h);
          a0_0_1 = e2bf_dp(a0_0_1, w0_3, v);
          a1_0_1 = e2bf_dp(a1_0_1, w1_0, h);
          a1_0_1 = e2bf_dp(a1_0_1, w1_3, v);
        }
        { const e2bf h = e2bf_load(ph + 32);
          a0_0_0 = e2bf_dp(a0_0_0, w0_1, h);
          a1_0_0 = e2bf_dp(a1_0_0, w1_1, h);
        }
        { const e2bf h = e2bf_load(ph + 48);
          a0_0_1 = e2bf_dp(a0_0_1, w0_1, h);
          a1_0_1 = e2bf_dp(a1_0_1, w1_1, h);
        }
        { const e2bf h = e2bf_load(ph + 64); const e2bf v = e2bf_load(pv + 64);
          a0_0_0 = e2bf_dp(a0_0_0, w0_2, h);
          a0_0_0 = e2bf_dp(a0_0_0, w0_4, v);
          a1_0_0 = e2bf_dp(a1_0_0, w1_2, h);
          a1_0_0 = e2bf_dp(a1_0_0, w1_4, v);
        }
        { const e2bf h = e2bf_load(ph + 80); const e2bf v = e2bf_load(pv + 80);
          a0_0_1 = e2bf_dp(a0_0_1, w0_2, h);
          a0_0_1 = e2bf_dp(a0_0_1, w0_4, v);
          a1_0_1 = e2bf_dp(a1_0_1, w1_2, h);
          a1_0_1 = e2bf_dp(a1_0_1, w1_4, v);
        }
    }
    {
    if (o0 + 0 < 3) {
    const e2f16 vb = e2f16_bcast(W + 0 + o0 + 0);
    e2st vs = e2st_zero(), vq = e2st_zero();
    { e2f16 v = a0_0_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 0, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a0_0_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 16, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    st[0] += e2st_sum(vs); st[1] += e2st_sum(vq);
    }
    }
    {
    if (o0 + 1 < 3) {
    const e2f16 vb = e2f16_bcast(W + 0 + o0 + 1);
    e2st vs = e2st_zero(), vq = e2st_zero();
    { e2f16 v = a1_0_0;
      v = e2f16_add(v, vb);
      e2f16_store(A + po + 560, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = a1_0_1;
      v = e2f16_add(v, vb);
      v = e2f16_keep(v, 4);
      e2f16_storen(A + po + 576, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    st[2] += e2st_sum(vs); st[3] += e2st_sum(vq);
    }
    }
}
void k0(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int band = (int)(t % 2); const int64_t nz = t / 2;
        const int z = (int)(nz % 2), n = (int)(nz / 2);
        const int y0 = band * 4, y1 = y0 + 4 < 5 ? y0 + 4 : 5;
        const int zb = z * 1 - 0;
        (void)y1;
        double st[8]; memset(st, 0, sizeof st);
        uint32_t pk[768] __attribute__((aligned(64)));
        for (int r0 = y0; r0 < y1; r0 += 4) {
        const int nr = y1 - r0 < 4 ? y1 - r0 : 4;
        for (int xs = 0; xs < 2; xs += 2) {
        const int xe = xs + 2 < 2 ? xs + 2 : 2;
        k0_pack(A, I + 48, pk, n, zb, r0, nr, xs, xe);
        for (int ob = 0; ob < 2; ob++) {
        if (xe == 2) { const int xv = 0;
        const int64_t po = 0 + (int64_t)n * 1680 + (int64_t)z * 280 + (int64_t)(1 + r0) * 40 + 8 + xv * 16;
        if (nr == 4) k0_mb4x2t(A, W, 0, (const uint32_t *)(I + 0) + (int64_t)ob * 20, 2, pk + (xv - xs) * 16, po + (int64_t)ob * 1120, ob * 2, st + 2 * ob * 2); else k0_mb1x2t(A, W, 0, (const uint32_t *)(I + 0) + (int64_t)ob * 20, 2, pk + (xv - xs) * 16, po + (int64_t)ob * 1120, ob * 2, st + 2 * ob * 2);
        }
        }
        }
        }
        for (int o = 0; o < 3; o++) {
            float *pl = A + 0 + (int64_t)n * 1680 + (int64_t)o * 560 + (int64_t)z * 280;
            for (int y = y0; y < y1; y++) {
                float *rowp = pl + (y + 1) * 40 + 8;
                e2f8_store(rowp - 8, e2f8_zero());
                e2f8_store(rowp + 24, e2f8_zero());
            }
            if (band == 0) { for (int q = 0; q < 40; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 1) { for (int q = 0; q < 40; q += 8) e2f8_store((pl + 240) + q, e2f8_zero());
        }
            double *pp = ((double *)(A + 2800) + ((int64_t)(n * 3 + o) * 4 + (z * 2 + band)) * 2);
            pp[0] = st[2 * o]; pp[1] = st[2 * o + 1];
        }
    }
}

/* c norm reduce: 3 tiles, 24 flops */
void k0_nred(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const double *p = ((double *)(A + 2800) + ((int64_t)(t) * 4 + (0)) * 2);
        double s = 0.0, q = 0.0;
        for (int i = 0; i < 4; i++) { s += p[2 * i]; q += p[2 * i + 1]; }
        const double mean = s / 200.0;
        double var = q / 200.0 - mean * mean;
        if (var < 0.0) var = 0.0;
        const double inv = 1.0 / sqrt(var + (double)1e-5f);
        A[2848 + 2 * t] = (float)mean;
        A[2848 + 2 * t + 1] = (float)(inv * (double)W[16 + t % 3]);
    }
}

/* c norm apply: 6 tiles, 1800 flops */
void k0_napply(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t i = t / 2; const int z = (int)(t % 2);
        const int n = (int)(i / 3), c = (int)(i % 3);
        const e2f8 vm = e2f8_set1(A[2848 + 2 * i]), vs = e2f8_set1(A[2848 + 2 * i + 1]);
        const e2f8 vb = e2f8_set1(W[32 + c]);
        const float *s = A + ((int64_t)0 + (int64_t)(n) * 1680 + (int64_t)(c) * 560 + (int64_t)(z) * 280);
        float *o = A + ((int64_t)0 + (int64_t)(n) * 1680 + (int64_t)(c) * 560 + (int64_t)(z) * 280);
        const e2f8 vsl = e2f8_set1(0.01f);
        for (int q = 0; q < 40; q += 8) e2f8_store(o + q, e2f8_zero());
        for (int y = 0; y < 5; y++) {
            const float *sr = s + ((y) + 1) * 40 + 8;
            float *orow = o + ((y) + 1) * 40 + 8;
            for (int x = 0; x < 3; x++) {
                e2f8 v = e2f8_fma(e2f8_sub(e2f8_load(sr + 8 * x), vm), vs, vb);
                v = e2f8_lrelu(v, vsl);
                if (x == 2) v = e2f8_keep(v, 4);
                e2f8_store(orow + 8 * x, v);
            }
            e2f8_store(orow - 8, e2f8_zero());
            e2f8_store(orow + 24, e2f8_zero());
        }
        for (int q = 0; q < 40; q += 8) e2f8_store((o + 240) + q, e2f8_zero());
    }
}

