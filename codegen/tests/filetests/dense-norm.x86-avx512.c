/* c conv 1x3x3 s1 2->3: 4 tiles, 21600 flops */
static void k0_mk4x2t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;
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
    for (int e = 0; e < ne; e++, ent += 3, w += 18) {
        const float *p = A + pb + (int64_t)ent[0] * 560 + (int64_t)(zb + ent[2]) * 280;
        {
            const e2f16 w0_0 = e2f16_bcast(w + 0);
            const e2f16 w0_1 = e2f16_bcast(w + 2);
            const e2f16 w0_2 = e2f16_bcast(w + 4);
            const e2f16 w1_0 = e2f16_bcast(w + 1);
            const e2f16 w1_1 = e2f16_bcast(w + 3);
            const e2f16 w1_2 = e2f16_bcast(w + 5);
            { const e2f16 x = e2f16_load(p + 0);
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 16, 4);
              a0_0_1 = e2f16_fma(w0_0, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_0, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 40);
              a0_1_0 = e2f16_fma(w0_0, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_0, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 56, 4);
              a0_1_1 = e2f16_fma(w0_0, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_0, x, a1_1_1);
              a0_0_1 = e2f16_fma(w0_1, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_1, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 80);
              a0_2_0 = e2f16_fma(w0_0, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_0, x, a1_2_0);
              a0_1_0 = e2f16_fma(w0_1, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_1, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 96, 4);
              a0_2_1 = e2f16_fma(w0_0, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_0, x, a1_2_1);
              a0_1_1 = e2f16_fma(w0_1, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_1, x, a1_1_1);
              a0_0_1 = e2f16_fma(w0_2, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_2, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 120);
              a0_3_0 = e2f16_fma(w0_0, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_0, x, a1_3_0);
              a0_2_0 = e2f16_fma(w0_1, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_1, x, a1_2_0);
              a0_1_0 = e2f16_fma(w0_2, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_2, x, a1_1_0);
            }
            { const e2f16 x = e2f16_loadn(p + 136, 4);
              a0_3_1 = e2f16_fma(w0_0, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_0, x, a1_3_1);
              a0_2_1 = e2f16_fma(w0_1, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_1, x, a1_2_1);
              a0_1_1 = e2f16_fma(w0_2, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_2, x, a1_1_1);
            }
            { const e2f16 x = e2f16_load(p + 160);
              a0_3_0 = e2f16_fma(w0_1, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_1, x, a1_3_0);
              a0_2_0 = e2f16_fma(w0_2, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_2, x, a1_2_0);
            }
            { const e2f16 x = e2f16_loadn(p + 176, 4);
              a0_3_1 = e2f16_fma(w0_1, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_1, x, a1_3_1);
              a0_2_1 = e2f16_fma(w0_2, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_2, x, a1_2_1);
            }
            { const e2f16 x = e2f16_load(p + 200);
              a0_3_0 = e2f16_fma(w0_2, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_2, x, a1_3_0);
            }
            { const e2f16 x = e2f16_loadn(p + 216, 4);
              a0_3_1 = e2f16_fma(w0_2, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_2, x, a1_3_1);
            }
        }
        {
            const e2f16 w0_0 = e2f16_bcast(w + 6);
            const e2f16 w0_1 = e2f16_bcast(w + 8);
            const e2f16 w0_2 = e2f16_bcast(w + 10);
            const e2f16 w1_0 = e2f16_bcast(w + 7);
            const e2f16 w1_1 = e2f16_bcast(w + 9);
            const e2f16 w1_2 = e2f16_bcast(w + 11);
            { const e2f16 x = e2f16_load(p + 1);
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 17, 4);
              a0_0_1 = e2f16_fma(w0_0, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_0, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 41);
              a0_1_0 = e2f16_fma(w0_0, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_0, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 57, 4);
              a0_1_1 = e2f16_fma(w0_0, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_0, x, a1_1_1);
              a0_0_1 = e2f16_fma(w0_1, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_1, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 81);
              a0_2_0 = e2f16_fma(w0_0, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_0, x, a1_2_0);
              a0_1_0 = e2f16_fma(w0_1, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_1, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 97, 4);
              a0_2_1 = e2f16_fma(w0_0, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_0, x, a1_2_1);
              a0_1_1 = e2f16_fma(w0_1, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_1, x, a1_1_1);
              a0_0_1 = e2f16_fma(w0_2, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_2, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 121);
              a0_3_0 = e2f16_fma(w0_0, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_0, x, a1_3_0);
              a0_2_0 = e2f16_fma(w0_1, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_1, x, a1_2_0);
              a0_1_0 = e2f16_fma(w0_2, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_2, x, a1_1_0);
            }
            { const e2f16 x = e2f16_loadn(p + 137, 4);
              a0_3_1 = e2f16_fma(w0_0, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_0, x, a1_3_1);
              a0_2_1 = e2f16_fma(w0_1, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_1, x, a1_2_1);
              a0_1_1 = e2f16_fma(w0_2, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_2, x, a1_1_1);
            }
            { const e2f16 x = e2f16_load(p + 161);
              a0_3_0 = e2f16_fma(w0_1, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_1, x, a1_3_0);
              a0_2_0 = e2f16_fma(w0_2, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_2, x, a1_2_0);
            }
            { const e2f16 x = e2f16_loadn(p + 177, 4);
              a0_3_1 = e2f16_fma(w0_1, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_1, x, a1_3_1);
              a0_2_1 = e2f16_fma(w0_2, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_2, x, a1_2_1);
            }
            { const e2f16 x = e2f16_load(p + 201);
              a0_3_0 = e2f16_fma(w0_2, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_2, x, a1_3_0);
            }
            { const e2f16 x = e2f16_loadn(p + 217, 4);
              a0_3_1 = e2f16_fma(w0_2, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_2, x, a1_3_1);
            }
        }
        {
            const e2f16 w0_0 = e2f16_bcast(w + 12);
            const e2f16 w0_1 = e2f16_bcast(w + 14);
            const e2f16 w0_2 = e2f16_bcast(w + 16);
            const e2f16 w1_0 = e2f16_bcast(w + 13);
            const e2f16 w1_1 = e2f16_bcast(w + 15);
            const e2f16 w1_2 = e2f16_bcast(w + 17);
            { const e2f16 x = e2f16_load(p + 2);
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 18, 4);
              a0_0_1 = e2f16_fma(w0_0, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_0, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 42);
              a0_1_0 = e2f16_fma(w0_0, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_0, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 58, 4);
              a0_1_1 = e2f16_fma(w0_0, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_0, x, a1_1_1);
              a0_0_1 = e2f16_fma(w0_1, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_1, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 82);
              a0_2_0 = e2f16_fma(w0_0, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_0, x, a1_2_0);
              a0_1_0 = e2f16_fma(w0_1, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_1, x, a1_1_0);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 98, 4);
              a0_2_1 = e2f16_fma(w0_0, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_0, x, a1_2_1);
              a0_1_1 = e2f16_fma(w0_1, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_1, x, a1_1_1);
              a0_0_1 = e2f16_fma(w0_2, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_2, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 122);
              a0_3_0 = e2f16_fma(w0_0, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_0, x, a1_3_0);
              a0_2_0 = e2f16_fma(w0_1, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_1, x, a1_2_0);
              a0_1_0 = e2f16_fma(w0_2, x, a0_1_0);
              a1_1_0 = e2f16_fma(w1_2, x, a1_1_0);
            }
            { const e2f16 x = e2f16_loadn(p + 138, 4);
              a0_3_1 = e2f16_fma(w0_0, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_0, x, a1_3_1);
              a0_2_1 = e2f16_fma(w0_1, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_1, x, a1_2_1);
              a0_1_1 = e2f16_fma(w0_2, x, a0_1_1);
              a1_1_1 = e2f16_fma(w1_2, x, a1_1_1);
            }
            { const e2f16 x = e2f16_load(p + 162);
              a0_3_0 = e2f16_fma(w0_1, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_1, x, a1_3_0);
              a0_2_0 = e2f16_fma(w0_2, x, a0_2_0);
              a1_2_0 = e2f16_fma(w1_2, x, a1_2_0);
            }
            { const e2f16 x = e2f16_loadn(p + 178, 4);
              a0_3_1 = e2f16_fma(w0_1, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_1, x, a1_3_1);
              a0_2_1 = e2f16_fma(w0_2, x, a0_2_1);
              a1_2_1 = e2f16_fma(w1_2, x, a1_2_1);
            }
            { const e2f16 x = e2f16_load(p + 202);
              a0_3_0 = e2f16_fma(w0_2, x, a0_3_0);
              a1_3_0 = e2f16_fma(w1_2, x, a1_3_0);
            }
            { const e2f16 x = e2f16_loadn(p + 218, 4);
              a0_3_1 = e2f16_fma(w0_2, x, a0_3_1);
              a1_3_1 = e2f16_fma(w1_2, x, a1_3_1);
            }
        }
    }
    {
    if (o0 + 0 < 3) {
    const e2f16 vb = e2f16_bcast(W + 80 + o0 + 0);
    e2st vs = e2st_zero(), vq = e2st_zero();
    { e2f16 v = e2f16_add(a0_0_0, vb);
      e2f16_store(A + po + 0, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a0_0_1, vb), 4);
      e2f16_storen(A + po + 16, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_add(a0_1_0, vb);
      e2f16_store(A + po + 40, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a0_1_1, vb), 4);
      e2f16_storen(A + po + 56, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_add(a0_2_0, vb);
      e2f16_store(A + po + 80, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a0_2_1, vb), 4);
      e2f16_storen(A + po + 96, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_add(a0_3_0, vb);
      e2f16_store(A + po + 120, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a0_3_1, vb), 4);
      e2f16_storen(A + po + 136, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    st[0] += e2st_sum(vs); st[1] += e2st_sum(vq);
    }
    }
    {
    if (o0 + 1 < 3) {
    const e2f16 vb = e2f16_bcast(W + 80 + o0 + 1);
    e2st vs = e2st_zero(), vq = e2st_zero();
    { e2f16 v = e2f16_add(a1_0_0, vb);
      e2f16_store(A + po + 560, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a1_0_1, vb), 4);
      e2f16_storen(A + po + 576, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_add(a1_1_0, vb);
      e2f16_store(A + po + 600, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a1_1_1, vb), 4);
      e2f16_storen(A + po + 616, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_add(a1_2_0, vb);
      e2f16_store(A + po + 640, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a1_2_1, vb), 4);
      e2f16_storen(A + po + 656, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_add(a1_3_0, vb);
      e2f16_store(A + po + 680, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a1_3_1, vb), 4);
      e2f16_storen(A + po + 696, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    st[2] += e2st_sum(vs); st[3] += e2st_sum(vq);
    }
    }
}
static void k0_mk1x2t(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;
    e2f16 a0_0_0 = e2f16_zero();
    e2f16 a0_0_1 = e2f16_zero();
    e2f16 a1_0_0 = e2f16_zero();
    e2f16 a1_0_1 = e2f16_zero();
    for (int e = 0; e < ne; e++, ent += 3, w += 18) {
        const float *p = A + pb + (int64_t)ent[0] * 560 + (int64_t)(zb + ent[2]) * 280;
        {
            const e2f16 w0_0 = e2f16_bcast(w + 0);
            const e2f16 w0_1 = e2f16_bcast(w + 2);
            const e2f16 w0_2 = e2f16_bcast(w + 4);
            const e2f16 w1_0 = e2f16_bcast(w + 1);
            const e2f16 w1_1 = e2f16_bcast(w + 3);
            const e2f16 w1_2 = e2f16_bcast(w + 5);
            { const e2f16 x = e2f16_load(p + 0);
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 16, 4);
              a0_0_1 = e2f16_fma(w0_0, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_0, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 40);
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 56, 4);
              a0_0_1 = e2f16_fma(w0_1, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_1, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 80);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 96, 4);
              a0_0_1 = e2f16_fma(w0_2, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_2, x, a1_0_1);
            }
        }
        {
            const e2f16 w0_0 = e2f16_bcast(w + 6);
            const e2f16 w0_1 = e2f16_bcast(w + 8);
            const e2f16 w0_2 = e2f16_bcast(w + 10);
            const e2f16 w1_0 = e2f16_bcast(w + 7);
            const e2f16 w1_1 = e2f16_bcast(w + 9);
            const e2f16 w1_2 = e2f16_bcast(w + 11);
            { const e2f16 x = e2f16_load(p + 1);
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 17, 4);
              a0_0_1 = e2f16_fma(w0_0, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_0, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 41);
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 57, 4);
              a0_0_1 = e2f16_fma(w0_1, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_1, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 81);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 97, 4);
              a0_0_1 = e2f16_fma(w0_2, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_2, x, a1_0_1);
            }
        }
        {
            const e2f16 w0_0 = e2f16_bcast(w + 12);
            const e2f16 w0_1 = e2f16_bcast(w + 14);
            const e2f16 w0_2 = e2f16_bcast(w + 16);
            const e2f16 w1_0 = e2f16_bcast(w + 13);
            const e2f16 w1_1 = e2f16_bcast(w + 15);
            const e2f16 w1_2 = e2f16_bcast(w + 17);
            { const e2f16 x = e2f16_load(p + 2);
              a0_0_0 = e2f16_fma(w0_0, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_0, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 18, 4);
              a0_0_1 = e2f16_fma(w0_0, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_0, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 42);
              a0_0_0 = e2f16_fma(w0_1, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_1, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 58, 4);
              a0_0_1 = e2f16_fma(w0_1, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_1, x, a1_0_1);
            }
            { const e2f16 x = e2f16_load(p + 82);
              a0_0_0 = e2f16_fma(w0_2, x, a0_0_0);
              a1_0_0 = e2f16_fma(w1_2, x, a1_0_0);
            }
            { const e2f16 x = e2f16_loadn(p + 98, 4);
              a0_0_1 = e2f16_fma(w0_2, x, a0_0_1);
              a1_0_1 = e2f16_fma(w1_2, x, a1_0_1);
            }
        }
    }
    {
    if (o0 + 0 < 3) {
    const e2f16 vb = e2f16_bcast(W + 80 + o0 + 0);
    e2st vs = e2st_zero(), vq = e2st_zero();
    { e2f16 v = e2f16_add(a0_0_0, vb);
      e2f16_store(A + po + 0, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a0_0_1, vb), 4);
      e2f16_storen(A + po + 16, v, 8);
      e2f16_stats(&vs, &vq, v);
    }
    st[0] += e2st_sum(vs); st[1] += e2st_sum(vq);
    }
    }
    {
    if (o0 + 1 < 3) {
    const e2f16 vb = e2f16_bcast(W + 80 + o0 + 1);
    e2st vs = e2st_zero(), vq = e2st_zero();
    { e2f16 v = e2f16_add(a1_0_0, vb);
      e2f16_store(A + po + 560, v);
      e2f16_stats(&vs, &vq, v);
    }
    { e2f16 v = e2f16_keep(e2f16_add(a1_0_1, vb), 4);
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
        float *sh = 0;
        for (int ob = 0; ob < 2; ob++) {
        { const int xv = 0;
        const int64_t pb = 1680 + (int64_t)n * 1120 + (int64_t)(1 + y0 * 1 - 1) * 40 + 8 + xv * 16 - 1;
        const int64_t po = 0 + (int64_t)n * 1680 + (int64_t)z * 280 + (int64_t)(1 + y0) * 40 + 8 + xv * 16;
        if (y1 - y0 == 4) k0_mk4x2t(A, W, I + 0, W + 0 + (int64_t)ob * 36, 2, pb, zb, po + (int64_t)ob * 1120, ob * 2, st + 2 * ob * 2, sh + ob * 2); else k0_mk1x2t(A, W, I + 0, W + 0 + (int64_t)ob * 36, 2, pb, zb, po + (int64_t)ob * 1120, ob * 2, st + 2 * ob * 2, sh + ob * 2);
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
        A[2848 + 2 * t + 1] = (float)(inv * (double)W[96 + t % 3]);
    }
}

/* c norm apply: 6 tiles, 1800 flops */
void k0_napply(float *restrict A, const float *restrict W, const int32_t *restrict I, int64_t t0, int64_t t1) {
    (void)A; (void)W; (void)I;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t i = t / 2; const int z = (int)(t % 2);
        const int n = (int)(i / 3), c = (int)(i % 3);
        const e2f16 vm = e2f16_set1(A[2848 + 2 * i]), vs = e2f16_set1(A[2848 + 2 * i + 1]);
        const e2f16 vb = e2f16_set1(W[112 + c]);
        const float *s = A + ((int64_t)0 + (int64_t)(n) * 1680 + (int64_t)(c) * 560 + (int64_t)(z) * 280);
        float *o = A + ((int64_t)0 + (int64_t)(n) * 1680 + (int64_t)(c) * 560 + (int64_t)(z) * 280);
        const e2f16 vsl = e2f16_set1(0.01f);
        for (int q = 0; q < 40; q += 8) e2f8_store(o + q, e2f8_zero());
        for (int y = 0; y < 5; y++) {
            const float *sr = s + ((y) + 1) * 40 + 8;
            float *orow = o + ((y) + 1) * 40 + 8;
            for (int x = 0; x < 2; x++) {
                e2f16 v = e2f16_fma(e2f16_sub(e2f16_load(sr + 16 * x), vm), vs, vb);
                v = e2f16_lrelu(v, vsl);
                if (x == 1) v = e2f16_keep(v, 4);
                e2f16_store(orow + 16 * x, v);
            }
            e2f8_store(orow - 8, e2f8_zero());
        }
        for (int q = 0; q < 40; q += 8) e2f8_store((o + 240) + q, e2f8_zero());
    }
}

