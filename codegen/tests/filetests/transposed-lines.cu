/* fused_conv3d conv transposed [2, 2, 2]: 8 tiles, 6144 flops */
extern "C" __global__ void __launch_bounds__(256) k0(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int p = (int)blockIdx.x * 256 + (int)threadIdx.x;
    if (p >= 128) return;
    const int o = (int)blockIdx.y, n = (int)blockIdx.z / 4, oz = (int)blockIdx.z % 4;
    const int oy = p / 32, ox = p % 32;
    float acc = 0.0f;
    const int e1 = I[16 + o + 1];
    for (int e = I[16 + o]; e < e1; e++) {
        const int c = I[0 + e];
        const float *wk = W + 0LL + (i64)e * 8;
        for (int a = 0; a < 2; a++) {
            const int tz = oz + 0 - a;
            if (tz < 0 || tz % 2 != 0 || tz / 2 >= 2) continue;
            const float *xp = A + (2344LL + (i64)(n) * 768LL + (i64)(c) * 256LL + (i64)(tz / 2) * 128LL + (i64)(0) * 32 + (0));
            for (int b = 0; b < 2; b++) {
                const int ty = oy + 0 - b;
                if (ty < 0 || ty % 2 != 0 || ty / 2 >= 2) continue;
                for (int q = 0; q < 2; q++) {
                    const int tx = ox + 0 - q;
                    if (tx < 0 || tx % 2 != 0 || tx / 2 >= 16) continue;
                    acc = fmaf(wk[(a * 2 + b) * 2 + q], xp[(i64)(ty / 2) * 32 + tx / 2], acc);
                }
            }
        }

    }
    float v = acc + W[48 + o];
    v = e2_lrelu(v, 0.01f);
    A[(56LL + (i64)(n) * 2304LL + (i64)(o) * 1152LL + (i64)(oz) * 288LL + (i64)(oy) * 48 + (ox))] = v;
}

