/* up conv transposed sparse [1, 2, 2]: 4 tiles, 864 flops */
extern "C" __global__ void __launch_bounds__(256) k0(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int p = (int)blockIdx.x * 256 + (int)threadIdx.x;
    if (p >= 72) return;
    const int o = (int)blockIdx.y, n = (int)blockIdx.z / 2, oz = (int)blockIdx.z % 2;
    const int oy = p / 12, ox = p % 12;
    float acc = 0.0f;
    const int e1 = I[16 + o + 1];
    for (int e = I[16 + o]; e < e1; e++) {
        const int c = I[0 + e];
        const float *wk = W + 0LL + (i64)e * 4;
        for (int a = 0; a < 1; a++) {
            const int tz = oz + 0 - a;
            if (tz < 0 || tz % 1 != 0 || tz / 1 >= 2) continue;
            const float *xp = A + (1056LL + (i64)(n) * 480LL + (i64)(c) * 240LL + (i64)(tz / 1) * 120LL + (i64)(0) * 24 + (0));
            for (int b = 0; b < 2; b++) {
                const int ty = oy + 0 - b;
                if (ty < 0 || ty % 2 != 0 || ty / 2 >= 3) continue;
                for (int q = 0; q < 2; q++) {
                    const int tx = ox + 0 - q;
                    if (tx < 0 || tx % 2 != 0 || tx / 2 >= 6) continue;
                    acc = fmaf(wk[(a * 2 + b) * 2 + q], xp[(i64)(ty / 2) * 24 + tx / 2], acc);
                }
            }
        }

    }
    float v = acc;
    A[(40LL + (i64)(n) * 1024LL + (i64)(o) * 512LL + (i64)(oz) * 256LL + (i64)(oy) * 32 + (ox))] = v;
}

/* up norm stats: 2 tiles, 864 flops */
extern "C" __global__ void __launch_bounds__(256) k0_nstat(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    __shared__ double s1[256], s2[256];
    const int i = (int)blockIdx.x, n = i / 2, c = i % 2;
    const int tid = (int)threadIdx.x;
    double a = 0.0, b = 0.0;
    for (i64 t = tid; t < 144LL; t += 256) {
        const int x = (int)(t % 12), y = (int)((t / 12) % 6), z = (int)(t / 72);
        const double v = (double)A[(40LL + (i64)(n) * 1024LL + (i64)(c) * 512LL + (i64)(z) * 256LL + (i64)(y) * 32 + (x))];
        a += v; b += v * v;
    }
    s1[tid] = a; s2[tid] = b;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if (tid < k) { s1[tid] += s1[tid + k]; s2[tid] += s2[tid + k]; }
        __syncthreads();
    }
    if (tid == 0) {
        const double mean = s1[0] / 144.0;
        double var = s2[0] / 144.0 - mean * mean;
        if (var < 0.0) var = 0.0;
        A[1504 + 2 * i] = (float)mean;
        A[1504 + 2 * i + 1] = (float)((double)W[16 + c] / sqrt(var + (double)1e-5f));
    }
}

/* up norm apply: 2 tiles, 864 flops */
extern "C" __global__ void __launch_bounds__(256) k0_napply(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const i64 t = (i64)blockIdx.x * 256 + threadIdx.x;
    if (t >= 288LL) return;
    const int x = (int)(t % 12); i64 r = t / 12;
    const int y = (int)(r % 6); r /= 6;
    const int z = (int)(r % 2); r /= 2;
    const int c = (int)(r % 2); const int n = (int)(r / 2);
    (void)n; (void)c; (void)z; (void)y; (void)x;
    A[(40LL + (i64)(n) * 1024LL + (i64)(c) * 512LL + (i64)(z) * 256LL + (i64)(y) * 32 + (x))] = ((A[(40LL + (i64)(n) * 1024LL + (i64)(c) * 512LL + (i64)(z) * 256LL + (i64)(y) * 32 + (x))] - A[1504 + 2 * (n * 2 + c)]) * A[1504 + 2 * (n * 2 + c) + 1] + W[32 + c]);
}

