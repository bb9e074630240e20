/* fused_conv3d conv transposed sparse [2, 2, 2]: 8 tiles, 5760 flops */
extern "C" __global__ void __launch_bounds__(256) k0(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int p = (int)blockIdx.x * 256 + (int)threadIdx.x;
    if (p >= 240) return;
    const int o = (int)blockIdx.y, n = (int)blockIdx.z / 4, oz = (int)blockIdx.z % 4;
    const int oy = p / 40, ox = p % 40;
    float acc = 0.0f;
    const int e1 = I[16 + o + 1];
    for (int e = I[16 + o]; e < e1; e++) {
        const int c = I[0 + e];
        const float *wk = W + 0LL + (i64)e * 8;
        for (int a = 0; a < 2; a++) {
            const int tz = oz + 0 - a;
            if (tz < 0 || tz % 2 != 0 || tz / 2 >= 2) continue;
            const float *xp = A + (3632LL + (i64)(n) * 800LL + (i64)(c) * 400LL + (i64)(tz / 2) * 200LL + (i64)(0) * 40 + (0));
            for (int b = 0; b < 2; b++) {
                const int ty = oy + 0 - b;
                if (ty < 0 || ty % 2 != 0 || ty / 2 >= 3) continue;
                for (int q = 0; q < 2; q++) {
                    const int tx = ox + 0 - q;
                    if (tx < 0 || tx % 2 != 0 || tx / 2 >= 20) continue;
                    acc = fmaf(wk[(a * 2 + b) * 2 + q], xp[(i64)(ty / 2) * 40 + tx / 2], acc);
                }
            }
        }

    }
    float v = acc;
    A[(64LL + (i64)(n) * 3584LL + (i64)(o) * 1792LL + (i64)(oz) * 448LL + (i64)(oy) * 56 + (ox))] = v;
}

/* fused_conv3d norm stats: 2 tiles, 5760 flops */
extern "C" __global__ void __launch_bounds__(256) k0_nstat(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    __shared__ double s1[256], s2[256];
    const int i = (int)blockIdx.x, n = i / 2, c = i % 2;
    const int tid = (int)threadIdx.x;
    double a = 0.0, b = 0.0;
    for (i64 t = tid; t < 960LL; t += 256) {
        const int x = (int)(t % 40), y = (int)((t / 40) % 6), z = (int)(t / 240);
        const double v = (double)A[(64LL + (i64)(n) * 3584LL + (i64)(c) * 1792LL + (i64)(z) * 448LL + (i64)(y) * 56 + (x))];
        a += v; b += v * v;
    }
    s1[tid] = a; s2[tid] = b;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if (tid < k) { s1[tid] += s1[tid + k]; s2[tid] += s2[tid + k]; }
        __syncthreads();
    }
    if (tid == 0) {
        const double mean = s1[0] / 960.0;
        double var = s2[0] / 960.0 - mean * mean;
        if (var < 0.0) var = 0.0;
        A[4384 + 2 * i] = (float)mean;
        A[4384 + 2 * i + 1] = (float)((double)W[32 + c] / sqrt(var + (double)1e-5f));
    }
}

/* fused_conv3d norm apply: 8 tiles, 5760 flops */
extern "C" __global__ void __launch_bounds__(256) k0_napply(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const i64 t = (i64)blockIdx.x * 256 + threadIdx.x;
    if (t >= 1920LL) return;
    const int x = (int)(t % 40); i64 r = t / 40;
    const int y = (int)(r % 6); r /= 6;
    const int z = (int)(r % 4); r /= 4;
    const int c = (int)(r % 2); const int n = (int)(r / 2);
    (void)n; (void)c; (void)z; (void)y; (void)x;
    A[(64LL + (i64)(n) * 3584LL + (i64)(c) * 1792LL + (i64)(z) * 448LL + (i64)(y) * 56 + (x))] = ((A[(64LL + (i64)(n) * 3584LL + (i64)(c) * 1792LL + (i64)(z) * 448LL + (i64)(y) * 56 + (x))] - A[4384 + 2 * (n * 2 + c)]) * A[4384 + 2 * (n * 2 + c) + 1] + W[48 + c]);
}

