/* Header-free CUDA C++ (NVRTC ships no headers); the host emulation compiles it too. */
typedef long long i64;
__device__ __forceinline__ float e2_lrelu(float v, float s) { return v >= 0.0f ? v : s * v; }
