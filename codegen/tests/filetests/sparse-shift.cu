/* c conv sparse [1, 3, 3]: 6 tiles, 6912 flops */
extern "C" __global__ void __launch_bounds__(256) k0(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int p = (int)blockIdx.x * 256 + (int)threadIdx.x;
    if (p >= 64) return;
    const int o = (int)blockIdx.y, n = (int)blockIdx.z / 3, oz = (int)blockIdx.z % 3;
    const int oy = p / 16, ox = p % 16;
    float acc = 0.0f;
    const int e1 = I[16 + o + 1];
    for (int e = I[16 + o]; e < e1; e++) {
        const int c = I[0 + e];
        const float *wk = W + 0LL + (i64)e * 9;
        const int s = I[32 + c];
        for (int a = 0; a < 1; a++) {
            const int iz = oz * 1 - 0 + a;
            if (iz < 0 || iz >= 3) continue;
            const int jz = iz - s;
            if (jz < 0 || jz >= 3) continue;
            const float *xp = A + (40LL + (i64)(n) * 2304LL + (i64)(c) * 576LL + (i64)(jz) * 192LL + (i64)(0) * 32 + (0));
            for (int b = 0; b < 3; b++) {
                const int iy = oy * 1 - 1 + b;
                if (iy < 0 || iy >= 4) continue;
                for (int q = 0; q < 3; q++) {
                    const int ix = ox * 1 - 1 + q;
                    if (ix < 0 || ix >= 16) continue;
                    acc = fmaf(wk[(a * 3 + b) * 3 + q], xp[(i64)iy * 32 + ix], acc);
                }
            }
        }

    }
    float v = acc;
    A[(2344LL + (i64)(n) * 1152LL + (i64)(o) * 576LL + (i64)(oz) * 192LL + (i64)(oy) * 32 + (ox))] = v;
}

