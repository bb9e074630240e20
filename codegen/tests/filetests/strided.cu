/* c.conv conv [1, 3, 3]: 4 tiles, 3888 flops */
extern "C" __global__ void __launch_bounds__(256) k0(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int p = (int)blockIdx.x * 256 + (int)threadIdx.x;
    if (p >= 27) return;
    const int o = (int)blockIdx.y, n = (int)blockIdx.z / 2, oz = (int)blockIdx.z % 2;
    const int oy = p / 9, ox = p % 9;
    float acc = 0.0f;
    const int e1 = I[16 + o + 1];
    for (int e = I[16 + o]; e < e1; e++) {
        const int c = I[0 + e];
        const float *wk = W + 0LL + (i64)e * 9;
        const int s = I[32 + c];
        for (int a = 0; a < 1; a++) {
            const int iz = oz * 1 - 0 + a;
            if (iz < 0 || iz >= 2) continue;
            const int jz = iz - s;
            if (jz < 0 || jz >= 2) continue;
            const float *xp = A + (48LL + (i64)(n) * 1280LL + (i64)(c) * 640LL + (i64)(jz) * 320LL + (i64)(0) * 40 + (0));
            for (int b = 0; b < 3; b++) {
                const int iy = oy * 2 - 1 + b;
                if (iy < 0 || iy >= 6) continue;
                for (int q = 0; q < 3; q++) {
                    const int ix = ox * 2 - 1 + q;
                    if (ix < 0 || ix >= 18) continue;
                    acc = fmaf(wk[(a * 3 + b) * 3 + q], xp[(i64)iy * 40 + ix], acc);
                }
            }
        }

    }
    float v = acc + W[48 + o];
    A[(1320LL + (i64)(n) * 640LL + (i64)(o) * 320LL + (i64)(oz) * 160LL + (i64)(oy) * 32 + (ox))] = v;
}

