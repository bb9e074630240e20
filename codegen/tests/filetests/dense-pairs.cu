/* c conv tf32-mma [1, 3, 3]: 2 tiles, 54000 flops */
extern "C" __global__ void __launch_bounds__(128) k0(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int G = (int)blockIdx.y, n = (int)blockIdx.z / 2, oz = (int)blockIdx.z % 2;
    const int p0 = ((int)blockIdx.x * 4 + warp) * 32;
    int py[4], px[4];
    #pragma unroll
    for (int j = 0; j < 4; j++) {
        const int p = p0 + j * 8 + g;
        py[j] = p < 100 ? p / 20 : -1000000;
        px[j] = p < 100 ? p % 20 : 0;
    }
    float acc[4][4];
    #pragma unroll
    for (int j = 0; j < 4; j++) { acc[j][0] = 0.0f; acc[j][1] = 0.0f; acc[j][2] = 0.0f; acc[j][3] = 0.0f; }
    const int k0 = I[0 + G], k1 = I[0 + G + 1];
    for (int k = k0; k < k1; k += 8) {
        const float *wk = W + 0LL + (i64)k * 16;
        unsigned a[4];
        a[0] = (unsigned)__float_as_int(wk[t * 16 + g]);
        a[1] = (unsigned)__float_as_int(wk[t * 16 + g + 8]);
        a[2] = (unsigned)__float_as_int(wk[(t + 4) * 16 + g]);
        a[3] = (unsigned)__float_as_int(wk[(t + 4) * 16 + g + 8]);
        const float *xr[2];
        int dy[2], dx[2];
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            const int kr = k + t + 4 * r;
            const int c = I[16 + kr], tap = I[64 + kr];
            const int a_ = tap / 9, b_ = (tap / 3) % 3, q_ = tap % 3;
            // The shifted tensor is zero-padded: a tap in its padding reads zero whatever the
            // shift would bring there.
            const int iz = oz * 1 - 0 + a_;
            const int jz = (c < 0 || iz < 0 || iz >= 2) ? -1 : iz - I[112 + c];
            xr[r] = (jz >= 0 && jz < 2) ? A + (48LL + (i64)(n) * 2800LL + (i64)(c) * 560LL + (i64)(jz) * 280LL + (i64)(0) * 40 + (0)) : (const float *)0;
            dy[r] = b_ - 1;
            dx[r] = q_ - 1;
        }
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            float v[2];
            #pragma unroll
            for (int r = 0; r < 2; r++) {
                const int iy = py[j] + dy[r], ix = px[j] + dx[r];
                v[r] = (xr[r] && iy >= 0 && iy < 5 && ix >= 0 && ix < 20) ? xr[r][(i64)iy * 40 + ix] : 0.0f;
            }
            unsigned b[2];
            b[0] = e2_tf32(v[0]);
            b[1] = e2_tf32(v[1]);
            e2_mma_tf32(acc[j], a, b);
        }
    }
    double st[4] = {0.0, 0.0, 0.0, 0.0};
    #pragma unroll
    for (int j = 0; j < 4; j++) {
        #pragma unroll
        for (int i = 0; i < 4; i++) {
            const int o = G * 16 + g + (i >> 1) * 8, p = p0 + j * 8 + 2 * t + (i & 1);
            if (o < 3 && p < 100) {
                const int oy = p / 20, ox = p % 20;
                float v = acc[j][i] + W[768 + o]; v = e2_lrelu(v, 0.01f);
                A[(2848LL + (i64)(n) * 1680LL + (i64)(o) * 560LL + (i64)(oz) * 280LL + (i64)(oy) * 40 + (ox))] = v;
                st[(i >> 1) * 2] += (double)v;
                st[(i >> 1) * 2 + 1] += (double)v * (double)v;
            }
        }
    }
    (void)st;
}

