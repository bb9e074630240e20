/* Header-free CUDA C++ (NVRTC ships no headers); the host emulation compiles it too. */
typedef long long i64;
__device__ __forceinline__ float e2_lrelu(float v, float s) { return v >= 0.0f ? v : s * v; }
#ifndef E2ENC_EMULATE
/* f32 -> tf32, to nearest with ties away (the emulation shim defines both from the PTX spec). */
__device__ __forceinline__ unsigned e2_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
/* d += A * B on tensor cores: m16n8k8, A 16x8 and B 8x8 TF32, d 16x8 f32 (PTX fragments). */
__device__ __forceinline__ void e2_mma_tf32(float *d, const unsigned *a, const unsigned *b) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
/* Two f32 -> one bf16x2 register (lo in the low half), to nearest even. */
__device__ __forceinline__ unsigned e2_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
/* d += A * B on tensor cores: m16n8k16, A 16x16 and B 16x8 bf16, d 16x8 f32 (PTX fragments). */
__device__ __forceinline__ void e2_mma_bf16(float *d, const unsigned *a, const unsigned *b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif
