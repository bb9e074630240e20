/* c conv 1x3x3 s1 5->3 bf16: 4 tiles, 54000 flops */
E2_BF16 static void k0_pack(const float *restrict A, const int32_t *restrict ent,
    uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {
    const unsigned ml = xs == 0 ? 0xff00u : 0xffffu;
    const unsigned mr = xe == 2 ? 0x0u : 0xffffu;
    for (int p = 0; p < 3; p++, ent += 6) {
        uint32_t *pq = pk + (int64_t)p * 384;
        const int ok0 = 1, ok1 = 2 * p + 1 < 5 && 1;
        const float *p0 = ok0 ? A + 0 + (int64_t)n * 2800 + (int64_t)ent[0] * 560 + (int64_t)(zb + ent[2]) * 280 + (int64_t)(r0) * 40 + 8 : 0, *p1 = ok1 ? A + 0 + (int64_t)n * 2800 + (int64_t)(ent + 3)[0] * 560 + (int64_t)(zb + (ent + 3)[2]) * 280 + (int64_t)(r0) * 40 + 8 : 0;
        for (int rr = 0; rr < nr + 2; rr++) {
            const float *q0 = p0 ? p0 + (int64_t)rr * 40 : 0, *q1 = p1 ? p1 + (int64_t)rr * 40 : 0;
            uint32_t *o = pq + (int64_t)rr * 64 + 16 - 16 * xs;
            { const e2f16 lo = q0 ? e2f16_loadm(q0 + 16 * xs - 16, ml) : e2f16_zero(); const e2f16 hi = q1 ? e2f16_loadm(q1 + 16 * xs - 16, ml) : e2f16_zero(); e2bf_store(o + 16 * xs - 16, e2bf_pairs(lo, hi)); }
            for (int j = xs; j < xe; j++) { const e2f16 lo = q0 ? e2f16_load(q0 + 16 * j) : e2f16_zero(); const e2f16 hi = q1 ? e2f16_load(q1 + 16 * j) : e2f16_zero(); e2bf_store(o + 16 * j, e2bf_pairs(lo, hi)); }
            { const e2f16 lo = q0 ? e2f16_loadm(q0 + 16 * xe, mr) : e2f16_zero(); const e2f16 hi = q1 ? e2f16_loadm(q1 + 16 * xe, mr) : e2f16_zero(); e2bf_store(o + 16 * xe, e2bf_pairs(lo, hi)); }
        }
    }
}
E2_BF16 static void k0_mb4x2t(float *restrict A, const float *restrict W, const int32_t *restrict sl,
    const uint32_t *restrict w, int ne, const uint32_t *restrict pk, int64_t po, int o0, double *restrict st, float *restrict sh) {
    (void)W; (void)sl; (void)o0; (void)st; (void)sh;
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
    for (int e = 0; e < ne; e++, w += 18) {
        const uint32_t *pq = pk + (int64_t)e * 384 + 16;
        {
            const e2bf w0_0 = e2bf_bcast(w + 0);
            const e2bf w0_1 = e2bf_bcast(w + 2);
            const e2bf w0_2 = e2bf_bcast(w + 4);
            const e2bf w1_0 = e2bf_bcast(w + 1);
            const e2bf w1_1 = e2bf_bcast(w + 3);
            const e2bf w1_2 = e2bf_bcast(w + 5);
            { const e2bf x = e2bf_loadu(pq + -1);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_0);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 15);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_0);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 63);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_0);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_0);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_1);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 79);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_0);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_0);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_1);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 127);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_0);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_0);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_1);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_1);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_2);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 143);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_0);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_0);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_1);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_1);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_2);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 191);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_0);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_0);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_1);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_1);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_2);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 207);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_0);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_0);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_1);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_1);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_2);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 255);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_1);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_1);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_2);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 271);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_1);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_1);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_2);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 319);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_2);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 335);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_2);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_2);
            }
        }
        {
            const e2bf w0_0 = e2bf_bcast(w + 6);
            const e2bf w0_1 = e2bf_bcast(w + 8);
            const e2bf w0_2 = e2bf_bcast(w + 10);
            const e2bf w1_0 = e2bf_bcast(w + 7);
            const e2bf w1_1 = e2bf_bcast(w + 9);
            const e2bf w1_2 = e2bf_bcast(w + 11);
            { const e2bf x = e2bf_loadu(pq + 0);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_0);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 16);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_0);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 64);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_0);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_0);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_1);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 80);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_0);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_0);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_1);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 128);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_0);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_0);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_1);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_1);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_2);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 144);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_0);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_0);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_1);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_1);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_2);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 192);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_0);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_0);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_1);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_1);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_2);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 208);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_0);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_0);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_1);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_1);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_2);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 256);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_1);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_1);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_2);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 272);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_1);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_1);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_2);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 320);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_2);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 336);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_2);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_2);
            }
        }
        {
            const e2bf w0_0 = e2bf_bcast(w + 12);
            const e2bf w0_1 = e2bf_bcast(w + 14);
            const e2bf w0_2 = e2bf_bcast(w + 16);
            const e2bf w1_0 = e2bf_bcast(w + 13);
            const e2bf w1_1 = e2bf_bcast(w + 15);
            const e2bf w1_2 = e2bf_bcast(w + 17);
            { const e2bf x = e2bf_loadu(pq + 1);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_0);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 17);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_0);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 65);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_0);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_0);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_1);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 81);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_0);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_0);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_1);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 129);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_0);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_0);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_1);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_1);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_2);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 145);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_0);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_0);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_1);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_1);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_2);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 193);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_0);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_0);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_1);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_1);
              a0_1_0 = e2bf_dp(a0_1_0, x, w0_2);
              a1_1_0 = e2bf_dp(a1_1_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 209);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_0);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_0);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_1);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_1);
              a0_1_1 = e2bf_dp(a0_1_1, x, w0_2);
              a1_1_1 = e2bf_dp(a1_1_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 257);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_1);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_1);
              a0_2_0 = e2bf_dp(a0_2_0, x, w0_2);
              a1_2_0 = e2bf_dp(a1_2_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 273);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_1);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_1);
              a0_2_1 = e2bf_dp(a0_2_1, x, w0_2);
              a1_2_1 = e2bf_dp(a1_2_1, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 321);
              a0_3_0 = e2bf_dp(a0_3_0, x, w0_2);
              a1_3_0 = e2bf_dp(a1_3_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 337);
              a0_3_1 = e2bf_dp(a0_3_1, x, w0_2);
              a1_3_1 = e2bf_dp(a1_3_1, x, w1_2);
            }
        }
    }
    const e2f16 vsl = e2f16_set1(0.01f);
    {
    if (o0 + 0 < 3) {
    const e2f16 vb = e2f16_bcast(W + 0 + o0 + 0);
    { e2f16 v = e2f16_lrelu(e2f16_add(a0_0_0, vb), vsl);
      e2f16_store(A + po + 0, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a0_0_1, vb), vsl), 4);
      e2f16_storen(A + po + 16, v, 8);
    }
    { e2f16 v = e2f16_lrelu(e2f16_add(a0_1_0, vb), vsl);
      e2f16_store(A + po + 40, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a0_1_1, vb), vsl), 4);
      e2f16_storen(A + po + 56, v, 8);
    }
    { e2f16 v = e2f16_lrelu(e2f16_add(a0_2_0, vb), vsl);
      e2f16_store(A + po + 80, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a0_2_1, vb), vsl), 4);
      e2f16_storen(A + po + 96, v, 8);
    }
    { e2f16 v = e2f16_lrelu(e2f16_add(a0_3_0, vb), vsl);
      e2f16_store(A + po + 120, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a0_3_1, vb), vsl), 4);
      e2f16_storen(A + po + 136, v, 8);
    }
    }
    }
    {
    if (o0 + 1 < 3) {
    const e2f16 vb = e2f16_bcast(W + 0 + o0 + 1);
    { e2f16 v = e2f16_lrelu(e2f16_add(a1_0_0, vb), vsl);
      e2f16_store(A + po + 560, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a1_0_1, vb), vsl), 4);
      e2f16_storen(A + po + 576, v, 8);
    }
    { e2f16 v = e2f16_lrelu(e2f16_add(a1_1_0, vb), vsl);
      e2f16_store(A + po + 600, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a1_1_1, vb), vsl), 4);
      e2f16_storen(A + po + 616, v, 8);
    }
    { e2f16 v = e2f16_lrelu(e2f16_add(a1_2_0, vb), vsl);
      e2f16_store(A + po + 640, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a1_2_1, vb), vsl), 4);
      e2f16_storen(A + po + 656, v, 8);
    }
    { e2f16 v = e2f16_lrelu(e2f16_add(a1_3_0, vb), vsl);
      e2f16_store(A + po + 680, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a1_3_1, vb), vsl), 4);
      e2f16_storen(A + po + 696, v, 8);
    }
    }
    }
}
E2_BF16 static void k0_mb1x2t(float *restrict A, const float *restrict W, const int32_t *restrict sl,
    const uint32_t *restrict w, int ne, const uint32_t *restrict pk, int64_t po, int o0, double *restrict st, float *restrict sh) {
    (void)W; (void)sl; (void)o0; (void)st; (void)sh;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a0_0_1 = e2f16_zero();
    e2f16 a1_0_0 = e2f16_zero();
    e2f16 a1_0_1 = e2f16_zero();
    for (int e = 0; e < ne; e++, w += 18) {
        const uint32_t *pq = pk + (int64_t)e * 384 + 16;
        {
            const e2bf w0_0 = e2bf_bcast(w + 0);
            const e2bf w0_1 = e2bf_bcast(w + 2);
            const e2bf w0_2 = e2bf_bcast(w + 4);
            const e2bf w1_0 = e2bf_bcast(w + 1);
            const e2bf w1_1 = e2bf_bcast(w + 3);
            const e2bf w1_2 = e2bf_bcast(w + 5);
            { const e2bf x = e2bf_loadu(pq + -1);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_0);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 15);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_0);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 63);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_1);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 79);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_1);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 127);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_2);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 143);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_2);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_2);
            }
        }
        {
            const e2bf w0_0 = e2bf_bcast(w + 6);
            const e2bf w0_1 = e2bf_bcast(w + 8);
            const e2bf w0_2 = e2bf_bcast(w + 10);
            const e2bf w1_0 = e2bf_bcast(w + 7);
            const e2bf w1_1 = e2bf_bcast(w + 9);
            const e2bf w1_2 = e2bf_bcast(w + 11);
            { const e2bf x = e2bf_loadu(pq + 0);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_0);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 16);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_0);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 64);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_1);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 80);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_1);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 128);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_2);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 144);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_2);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_2);
            }
        }
        {
            const e2bf w0_0 = e2bf_bcast(w + 12);
            const e2bf w0_1 = e2bf_bcast(w + 14);
            const e2bf w0_2 = e2bf_bcast(w + 16);
            const e2bf w1_0 = e2bf_bcast(w + 13);
            const e2bf w1_1 = e2bf_bcast(w + 15);
            const e2bf w1_2 = e2bf_bcast(w + 17);
            { const e2bf x = e2bf_loadu(pq + 1);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_0);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 17);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_0);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_0);
            }
            { const e2bf x = e2bf_loadu(pq + 65);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_1);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 81);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_1);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_1);
            }
            { const e2bf x = e2bf_loadu(pq + 129);
              a0_0_0 = e2bf_dp(a0_0_0, x, w0_2);
              a1_0_0 = e2bf_dp(a1_0_0, x, w1_2);
            }
            { const e2bf x = e2bf_loadu(pq + 145);
              a0_0_1 = e2bf_dp(a0_0_1, x, w0_2);
              a1_0_1 = e2bf_dp(a1_0_1, x, w1_2);
            }
        }
    }
    const e2f16 vsl = e2f16_set1(0.01f);
    {
    if (o0 + 0 < 3) {
    const e2f16 vb = e2f16_bcast(W + 0 + o0 + 0);
    { e2f16 v = e2f16_lrelu(e2f16_add(a0_0_0, vb), vsl);
      e2f16_store(A + po + 0, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a0_0_1, vb), vsl), 4);
      e2f16_storen(A + po + 16, v, 8);
    }
    }
    }
    {
    if (o0 + 1 < 3) {
    const e2f16 vb = e2f16_bcast(W + 0 + o0 + 1);
    { e2f16 v = e2f16_lrelu(e2f16_add(a1_0_0, vb), vsl);
      e2f16_store(A + po + 560, v);
    }
    { e2f16 v = e2f16_keep(e2f16_lrelu(e2f16_add(a1_0_1, vb), vsl), 4);
      e2f16_storen(A + po + 576, v, 8);
    }
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
        double *st = 0;
        float *sh = 0;
        uint32_t pk[1152] __attribute__((aligned(64)));
        for (int r0 = y0; r0 < y1; r0 += 4) {
        const int nr = y1 - r0 < 4 ? y1 - r0 : 4;
        for (int xs = 0; xs < 2; xs += 2) {
        const int xe = xs + 2 < 2 ? xs + 2 : 2;
        k0_pack(A, I + 112, pk, n, zb, r0, nr, xs, xe);
        for (int ob = 0; ob < 2; ob++) {
        if (xe == 2) { const int xv = 0;
        const int64_t po = 2800 + (int64_t)n * 1680 + (int64_t)z * 280 + (int64_t)(1 + r0) * 40 + 8 + xv * 16;
        if (nr == 4) k0_mb4x2t(A, W, 0, (const uint32_t *)(I + 0) + (int64_t)ob * 54, 3, pk + (xv - xs) * 16, po + (int64_t)ob * 1120, ob * 2, st + 2 * ob * 2, sh + ob * 2); else k0_mb1x2t(A, W, 0, (const uint32_t *)(I + 0) + (int64_t)ob * 54, 3, pk + (xv - xs) * 16, po + (int64_t)ob * 1120, ob * 2, st + 2 * ob * 2, sh + ob * 2);
        }
        }
        }
        }
        for (int o = 0; o < 3; o++) {
            float *pl = A + 2800 + (int64_t)n * 1680 + (int64_t)o * 560 + (int64_t)z * 280;
            for (int y = y0; y < y1; y++) {
                float *rowp = pl + (y + 1) * 40 + 8;
                e2f8_store(rowp - 8, e2f8_zero());
                e2f8_store(rowp + 24, e2f8_zero());
            }
            if (band == 0) { for (int q = 0; q < 40; q += 8) e2f8_store(pl + q, e2f8_zero());
        }
            if (band == 1) { for (int q = 0; q < 40; q += 8) e2f8_store((pl + 240) + q, e2f8_zero());
        }
        }
    }
}

