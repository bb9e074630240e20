/* c conv [1, 3, 3]: 6 tiles, 21600 flops */
extern "C" __global__ void __launch_bounds__(256) k0(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int p = (int)blockIdx.x * 256 + (int)threadIdx.x;
    if (p >= 100) return;
    const int o = (int)blockIdx.y, n = (int)blockIdx.z / 2, oz = (int)blockIdx.z % 2;
    const int oy = p / 20, ox = p % 20;
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
            const float *xp = A + (1728LL + (i64)(n) * 1120LL + (i64)(c) * 560LL + (i64)(jz) * 280LL + (i64)(0) * 40 + (0));
            for (int b = 0; b < 3; b++) {
                const int iy = oy * 1 - 1 + b;
                if (iy < 0 || iy >= 5) continue;
                for (int q = 0; q < 3; q++) {
                    const int ix = ox * 1 - 1 + q;
                    if (ix < 0 || ix >= 20) continue;
                    acc = fmaf(wk[(a * 3 + b) * 3 + q], xp[(i64)iy * 40 + ix], acc);
                }
            }
        }

    }
    float v = acc + W[64 + o];
    A[(48LL + (i64)(n) * 1680LL + (i64)(o) * 560LL + (i64)(oz) * 280LL + (i64)(oy) * 40 + (ox))] = v;
}

/* c norm stats: 3 tiles, 1800 flops */
extern "C" __global__ void __launch_bounds__(256) k0_nstat(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    __shared__ double s1[256], s2[256];
    const int i = (int)blockIdx.x, n = i / 3, c = i % 3;
    const int tid = (int)threadIdx.x;
    double a = 0.0, b = 0.0;
    for (i64 t = tid; t < 200LL; t += 256) {
        const int x = (int)(t % 20), y = (int)((t / 20) % 5), z = (int)(t / 100);
        const double v = (double)A[(48LL + (i64)(n) * 1680LL + (i64)(c) * 560LL + (i64)(z) * 280LL + (i64)(y) * 40 + (x))];
        a += v; b += v * v;
    }
    s1[tid] = a; s2[tid] = b;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if (tid < k) { s1[tid] += s1[tid + k]; s2[tid] += s2[tid + k]; }
        __syncthreads();
    }
    if (tid == 0) {
        const double mean = s1[0] / 200.0;
        double var = s2[0] / 200.0 - mean * mean;
        if (var < 0.0) var = 0.0;
        A[2800 + 2 * i] = (float)mean;
        A[2800 + 2 * i + 1] = (float)((double)W[80 + c] / sqrt(var + (double)1e-5f));
    }
}

/* c norm apply: 3 tiles, 1800 flops */
extern "C" __global__ void __launch_bounds__(256) k0_napply(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const i64 t = (i64)blockIdx.x * 256 + threadIdx.x;
    if (t >= 600LL) return;
    const int x = (int)(t % 20); i64 r = t / 20;
    const int y = (int)(r % 5); r /= 5;
    const int z = (int)(r % 2); r /= 2;
    const int c = (int)(r % 3); const int n = (int)(r / 3);
    (void)n; (void)c; (void)z; (void)y; (void)x;
    A[(48LL + (i64)(n) * 1680LL + (i64)(c) * 560LL + (i64)(z) * 280LL + (i64)(y) * 40 + (x))] = e2_lrelu(((A[(48LL + (i64)(n) * 1680LL + (i64)(c) * 560LL + (i64)(z) * 280LL + (i64)(y) * 40 + (x))] - A[2800 + 2 * (n * 3 + c)]) * A[2800 + 2 * (n * 3 + c) + 1] + W[96 + c]), 0.01f);
}

