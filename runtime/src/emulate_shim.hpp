// e2enc host emulation of CUDA kernels: this shim, then a bundle's kernels.cu unchanged, then
// one wrapper per kernel (written by emulate.rs), compiled as C++17 into a shared library whose
// wrappers have the CPU kernel ABI: void(float *A, const float *W, const int32_t *I,
// int64_t b0, int64_t b1) runs thread blocks [b0, b1) of one launch.
//
// CUDA's execution model, as the kernels may rely on it:
// - blockIdx/threadIdx/blockDim/gridDim are per-thread values of the running (emulated) thread;
// - a launch marked without synchronization (sync = 0) runs each thread of a block to its end,
//   in a seeded random order;
// - a launch marked with synchronization runs every thread of a block as a fiber (ucontext) with
//   its own stack, so values crossing a barrier stay per thread: all threads run up to the next
//   __syncthreads() (one phase), in a seeded random order that changes every phase, then the next
//   phase starts. A kernel that omits a barrier it needs reads what a random subset of threads
//   wrote and gives different results for different seeds;
// - warp shuffles (__shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync) are a
//   rendezvous of the lanes of one warp: each lane deposits its value and waits until every live
//   lane of its warp has, then reads the source lane's (double-buffered by operation parity);
// - __shared__ variables are per block (static thread_local: a block runs on one OS thread, and
//   blocks are independent, so the CPU thread pool runs blocks like tiles); atomicAdd on ints
//   and __threadfence() are the CPU's atomics and fences, across the pool's threads.
// - mma.sync (e2_mma_tf32: m16n8k8, TF32 in, f32 accumulate) is a rendezvous of the 32 lanes
//   of a warp: each lane deposits its A, B and C fragments, and once all have, each computes
//   its D fragment from the whole matrices rebuilt with PTX's fragment layout (TF32 operands
//   keep their top 19 bits; products are exact in f32 and summed in k order);
//   e2_tf32 is cvt.rna.tf32.f32 (round to nearest, ties away from zero); e2_mma_bf16 is
//   mma.sync m16n8k16 on bf16 pairs (low half first) and e2_bf16x2 cvt.rn.bf16x2.f32.
// Errors (a barrier in a launch marked sync = 0, threads that exit while others wait at a
// barrier, a deadlock) are recorded, reported through e2emu_error(), and stop the launch.

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <ucontext.h>
#include <atomic>
#include <vector>

struct dim3 {
    unsigned int x, y, z;
};

namespace e2emu {

struct Launch {
    unsigned int g[3];
    unsigned int b[3];
    int sync;
};

thread_local dim3 t_block, t_thread, t_bdim, t_gdim;

static std::atomic<int> g_failed{0};
static char g_msg[1024];
static uint64_t g_seed = 0x9e3779b97f4a7c15ULL;

static void fail(const char *kernel, const char *msg) {
    int expect = 0;
    if (g_failed.compare_exchange_strong(expect, 1)) {
        snprintf(g_msg, sizeof g_msg, "kernel %s, block (%u, %u, %u): %s", kernel, t_block.x,
                 t_block.y, t_block.z, msg);
    }
}

static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void shuffle(std::vector<int> &v, uint64_t &rng) {
    for (size_t i = v.size(); i > 1; i--) {
        rng = mix(rng);
        size_t j = (size_t)(rng % i);
        int t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

enum State { READY, AT_BARRIER, AT_WARP, DONE };

struct Fiber {
    ucontext_t ctx;
    int state;
    unsigned int warp_ops;
    dim3 tid;
};

static const size_t STACK = 64 * 1024;

struct Sched {
    std::vector<Fiber> fibers;
    std::vector<char *> stacks;
    ucontext_t main;
    int cur = -1;
    unsigned int nthreads = 0;
    const char *kernel = "";
    void (*body)(void *) = nullptr;
    void *arg = nullptr;
    std::vector<uint32_t> gbuf;
    ~Sched() {
        for (char *s : stacks) free(s);
    }
};

// Non-null while the threads of a synchronizing block run as fibers.
thread_local Sched *t_sched = nullptr;
thread_local const char *t_kernel = "";

static Sched &sched() {
    static thread_local Sched s;
    return s;
}

static void entry() {
    Sched *s = t_sched;
    s->body(s->arg);
    s->fibers[s->cur].state = DONE;
}

static void yield(int state) {
    Sched *s = t_sched;
    Fiber &f = s->fibers[s->cur];
    f.state = state;
    swapcontext(&f.ctx, &s->main);
}

static void barrier() {
    if (!t_sched) {
        fail(t_kernel, "__syncthreads() in a launch marked without synchronization (sync = 0)");
        return;
    }
    yield(AT_BARRIER);
}

static unsigned int linear_tid() {
    return t_thread.x + t_bdim.x * (t_thread.y + t_bdim.y * t_thread.z);
}

// Deposits `n` (at most 16) words of this lane and returns, once every lane of the warp has,
// the words of the warp's lanes in `all` (lane-major; the last warp of a block whose size is
// not a multiple of 32 has fewer lanes: their slots are zero). `full`: the operation needs all
// 32 lanes (mma.sync), an error otherwise.
static bool warp_gather(const uint32_t *mine, int n, uint32_t *all, bool full) {
    Sched *s = t_sched;
    if (!s) {
        fail(t_kernel, "a warp-collective operation in a launch marked without synchronization (sync = 0)");
        return false;
    }
    Fiber &f = s->fibers[s->cur];
    unsigned int lin = linear_tid(), lane = lin % 32, warp = lin / 32;
    unsigned int nwarps = (s->nthreads + 31) / 32;
    if (full && s->nthreads % 32 != 0) {
        fail(t_kernel, "mma.sync in a block that is not whole warps");
        return false;
    }
    unsigned int par = f.warp_ops & 1;
    f.warp_ops++;
    uint32_t *buf = &s->gbuf[(((size_t)par * nwarps + warp) * 32) * 16];
    memcpy(buf + lane * 16, mine, sizeof(uint32_t) * (size_t)n);
    yield(AT_WARP);
    for (unsigned int l = 0; l < 32; l++) {
        if (warp * 32 + l < s->nthreads) {
            memcpy(all + l * n, buf + l * 16, sizeof(uint32_t) * (size_t)n);
        } else {
            memset(all + l * n, 0, sizeof(uint32_t) * (size_t)n);
        }
    }
    return true;
}

// The value `mine` of this lane, exchanged with the other lanes of its warp; returns the value
// of lane `src` of the warp (own value when `src` is outside it or the block).
static uint64_t warp_exchange(uint64_t mine, int src) {
    uint32_t words[2] = {(uint32_t)mine, (uint32_t)(mine >> 32)}, all[64];
    if (!warp_gather(words, 2, all, false)) return mine;
    unsigned int warp = linear_tid() / 32;
    if (src < 0 || src >= 32 || warp * 32 + (unsigned)src >= t_sched->nthreads) return mine;
    return (uint64_t)all[2 * src] | ((uint64_t)all[2 * src + 1] << 32);
}

static void run_sync_block(Sched &s, uint64_t rng) {
    unsigned int n = s.nthreads;
    while (s.fibers.size() < n) {
        s.fibers.emplace_back();
        char *st = (char *)malloc(STACK);
        if (!st) {
            fail(s.kernel, "out of memory for the emulated threads' stacks");
            return;
        }
        s.stacks.push_back(st);
    }
    unsigned int bx = t_bdim.x, by = t_bdim.y;
    for (unsigned int i = 0; i < n; i++) {
        Fiber &f = s.fibers[i];
        f.state = READY;
        f.warp_ops = 0;
        f.tid = dim3{i % bx, (i / bx) % by, i / (bx * by)};
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = s.stacks[i];
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = &s.main;
        makecontext(&f.ctx, entry, 0);
    }
    unsigned int nwarps = (n + 31) / 32;
    s.gbuf.assign((size_t)2 * nwarps * 32 * 16, 0);
    std::vector<int> order(n);
    for (unsigned int i = 0; i < n; i++) order[i] = (int)i;
    for (;;) {
        shuffle(order, rng);
        for (int i : order) {
            if (s.fibers[i].state != READY) continue;
            s.cur = i;
            t_thread = s.fibers[i].tid;
            swapcontext(&s.main, &s.fibers[i].ctx);
            if (g_failed.load(std::memory_order_relaxed)) return;
        }
        unsigned int done = 0, bar = 0;
        for (unsigned int i = 0; i < n; i++) {
            done += s.fibers[i].state == DONE;
            bar += s.fibers[i].state == AT_BARRIER;
        }
        if (done == n) return;
        bool released = false;
        for (unsigned int w = 0; w < nwarps; w++) {
            unsigned int lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
            bool all = true, any = false;
            for (unsigned int i = lo; i < hi; i++) {
                all = all && s.fibers[i].state == AT_WARP;
                any = any || s.fibers[i].state == AT_WARP;
            }
            if (!all) {
                if (any && bar == 0) {
                    bool exited = false;
                    for (unsigned int i = lo; i < hi; i++) exited = exited || s.fibers[i].state == DONE;
                    if (exited) {
                        fail(s.kernel, "a warp shuffle waits for lanes that have exited");
                        return;
                    }
                }
                continue;
            }
            for (unsigned int i = lo + 1; i < hi; i++) {
                if (s.fibers[i].warp_ops != s.fibers[lo].warp_ops) {
                    fail(s.kernel, "the lanes of a warp reached different warp shuffles");
                    return;
                }
            }
            for (unsigned int i = lo; i < hi; i++) s.fibers[i].state = READY;
            released = true;
        }
        if (released) continue;
        if (bar > 0 && bar + done == n) {
            if (done > 0) {
                fail(s.kernel, "threads of a block exited while others wait at __syncthreads()");
                return;
            }
            for (unsigned int i = 0; i < n; i++) s.fibers[i].state = READY;
            continue;
        }
        fail(s.kernel, "deadlock: threads wait at __syncthreads() and at a warp shuffle at once");
        return;
    }
}

static void run(const Launch &L, const char *kernel, uint64_t kid, int64_t b0, int64_t b1,
                void (*body)(void *), void *arg) {
    t_gdim = dim3{L.g[0], L.g[1], L.g[2]};
    t_bdim = dim3{L.b[0], L.b[1], L.b[2]};
    t_kernel = kernel;
    unsigned int n = L.b[0] * L.b[1] * L.b[2];
    std::vector<int> order;
    for (int64_t t = b0; t < b1; t++) {
        if (g_failed.load(std::memory_order_relaxed)) return;
        t_block = dim3{(unsigned)(t % L.g[0]), (unsigned)((t / L.g[0]) % L.g[1]),
                       (unsigned)(t / ((int64_t)L.g[0] * L.g[1]))};
        uint64_t rng = mix(g_seed ^ mix(kid ^ mix((uint64_t)t)));
        if (L.sync) {
            Sched &s = sched();
            s.nthreads = n;
            s.kernel = kernel;
            s.body = body;
            s.arg = arg;
            t_sched = &s;
            run_sync_block(s, rng);
            t_sched = nullptr;
        } else {
            if (order.size() != n) {
                order.resize(n);
                for (unsigned int i = 0; i < n; i++) order[i] = (int)i;
            }
            shuffle(order, rng);
            for (int i : order) {
                unsigned int u = (unsigned)i;
                t_thread = dim3{u % L.b[0], (u / L.b[0]) % L.b[1], u / (L.b[0] * L.b[1])};
                body(arg);
            }
        }
    }
}

template <class T> static uint64_t bits(T v) {
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}

template <class T> static T unbits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}

struct Args {
    float *A;
    const float *W;
    const int *I;
};

}  // namespace e2emu

extern "C" void e2emu_set_seed(uint64_t seed) { e2emu::g_seed = seed; }
// Exact-MMA mode, for tests: e2_tf32 keeps every bit and e2_mma_tf32 multiplies its operands
// unrounded, so a tensor-core kernel's sums equal f32's up to their order: what checks its
// indexing apart from TF32's rounding. Process-wide per loaded library, like the seed.
namespace e2emu { static int g_exact_mma = 0; }
extern "C" void e2emu_set_exact_mma(int on) { e2emu::g_exact_mma = on; }
extern "C" const char *e2emu_error(void) {
    return e2emu::g_failed.load() ? e2emu::g_msg : nullptr;
}
extern "C" void e2emu_clear(void) { e2emu::g_failed.store(0); }

#define blockIdx (e2emu::t_block)
#define threadIdx (e2emu::t_thread)
#define blockDim (e2emu::t_bdim)
#define gridDim (e2emu::t_gdim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __syncthreads() e2emu::barrier()

// Blocks run on several OS threads at once: device-wide atomics and fences are the CPU's.
static inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

static inline float __int_as_float(int v) { return e2emu::unbits<float>((uint32_t)v); }
static inline int __float_as_int(float v) { return (int)(uint32_t)e2emu::bits(v); }
template <class T> static inline T __ldg(const T *p) { return *p; }

template <class T> static inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    int lane = (int)(e2emu::linear_tid() % 32);
    int base = lane & ~(width - 1);
    return e2emu::unbits<T>(e2emu::warp_exchange(e2emu::bits(v), base + (src & (width - 1))));
}
template <class T> static inline T __shfl_down_sync(unsigned, T v, unsigned d, int width = 32) {
    int lane = (int)(e2emu::linear_tid() % 32);
    int base = lane & ~(width - 1), src = lane + (int)d;
    return e2emu::unbits<T>(e2emu::warp_exchange(e2emu::bits(v), src < base + width ? src : lane));
}
template <class T> static inline T __shfl_up_sync(unsigned, T v, unsigned d, int width = 32) {
    int lane = (int)(e2emu::linear_tid() % 32);
    int base = lane & ~(width - 1), src = lane - (int)d;
    return e2emu::unbits<T>(e2emu::warp_exchange(e2emu::bits(v), src >= base ? src : lane));
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int m, int width = 32) {
    int lane = (int)(e2emu::linear_tid() % 32);
    int base = lane & ~(width - 1), src = lane ^ m;
    return e2emu::unbits<T>(
        e2emu::warp_exchange(e2emu::bits(v), src >= base && src < base + width ? src : lane));
}

static inline unsigned __float_as_uint(float v) { return e2emu::bits(v) & 0xffffffffu; }

// cvt.rna.tf32.f32: to nearest, ties away from zero, 10 mantissa bits; NaN and inf unchanged.
static inline unsigned e2_tf32(float x) {
    uint32_t b = (uint32_t)e2emu::bits(x);
    if ((b & 0x7f800000u) == 0x7f800000u || e2emu::g_exact_mma) return b;
    return (b + 0x1000u) & 0xffffe000u;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, fragments as in the PTX ISA.
static inline void e2_mma_tf32(float *d, const unsigned *a, const unsigned *b) {
    uint32_t mine[10], all[32 * 10];
    for (int i = 0; i < 4; i++) mine[i] = a[i];
    mine[4] = b[0];
    mine[5] = b[1];
    for (int i = 0; i < 4; i++) mine[6 + i] = (uint32_t)e2emu::bits(d[i]);
    if (!e2emu::warp_gather(mine, 10, all, true)) return;
    float A[16][8], B[8][8], C[16][8];
    // The hardware reads 19 bits of each TF32 operand (exact-MMA mode: all 32).
    const uint32_t m = e2emu::g_exact_mma ? 0xffffffffu : 0xffffe000u;
    for (int lane = 0; lane < 32; lane++) {
        const uint32_t *r = all + lane * 10;
        int g = lane >> 2, t = lane & 3;
        A[g][t] = e2emu::unbits<float>(r[0] & m);
        A[g + 8][t] = e2emu::unbits<float>(r[1] & m);
        A[g][t + 4] = e2emu::unbits<float>(r[2] & m);
        A[g + 8][t + 4] = e2emu::unbits<float>(r[3] & m);
        B[t][g] = e2emu::unbits<float>(r[4] & m);
        B[t + 4][g] = e2emu::unbits<float>(r[5] & m);
        C[g][2 * t] = e2emu::unbits<float>(r[6]);
        C[g][2 * t + 1] = e2emu::unbits<float>(r[7]);
        C[g + 8][2 * t] = e2emu::unbits<float>(r[8]);
        C[g + 8][2 * t + 1] = e2emu::unbits<float>(r[9]);
    }
    int lane = (int)(e2emu::linear_tid() % 32), g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        int row = g + (i >> 1) * 8, col = 2 * t + (i & 1);
        float acc = C[row][col];
        for (int k = 0; k < 8; k++) acc += A[row][k] * B[k][col];
        d[i] = acc;
    }
}

// f32 -> bf16 bits, to nearest even (cvt.rn); NaN stays NaN (quieted).
static inline uint32_t e2emu_bf16(float x) {
    uint32_t b = (uint32_t)e2emu::bits(x);
    if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x7fffffu)) return (b >> 16) | 0x40u;
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

// cvt.rn.bf16x2.f32 d, hi, lo: `lo` in the low half.
static inline unsigned e2_bf16x2(float lo, float hi) {
    return e2emu_bf16(lo) | (e2emu_bf16(hi) << 16);
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragments as in the PTX ISA.
static inline void e2_mma_bf16(float *d, const unsigned *a, const unsigned *b) {
    uint32_t mine[10], all[32 * 10];
    for (int i = 0; i < 4; i++) mine[i] = a[i];
    mine[4] = b[0];
    mine[5] = b[1];
    for (int i = 0; i < 4; i++) mine[6 + i] = (uint32_t)e2emu::bits(d[i]);
    if (!e2emu::warp_gather(mine, 10, all, true)) return;
    float A[16][16], B[16][8], C[16][8];
    auto lo = [](uint32_t r) { return e2emu::unbits<float>(r << 16); };
    auto hi = [](uint32_t r) { return e2emu::unbits<float>(r & 0xffff0000u); };
    for (int lane = 0; lane < 32; lane++) {
        const uint32_t *r = all + lane * 10;
        int g = lane >> 2, t = lane & 3;
        A[g][2 * t] = lo(r[0]);
        A[g][2 * t + 1] = hi(r[0]);
        A[g + 8][2 * t] = lo(r[1]);
        A[g + 8][2 * t + 1] = hi(r[1]);
        A[g][2 * t + 8] = lo(r[2]);
        A[g][2 * t + 9] = hi(r[2]);
        A[g + 8][2 * t + 8] = lo(r[3]);
        A[g + 8][2 * t + 9] = hi(r[3]);
        B[2 * t][g] = lo(r[4]);
        B[2 * t + 1][g] = hi(r[4]);
        B[2 * t + 8][g] = lo(r[5]);
        B[2 * t + 9][g] = hi(r[5]);
        C[g][2 * t] = e2emu::unbits<float>(r[6]);
        C[g][2 * t + 1] = e2emu::unbits<float>(r[7]);
        C[g + 8][2 * t] = e2emu::unbits<float>(r[8]);
        C[g + 8][2 * t + 1] = e2emu::unbits<float>(r[9]);
    }
    int lane = (int)(e2emu::linear_tid() % 32), g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        int row = g + (i >> 1) * 8, col = 2 * t + (i & 1);
        float acc = C[row][col];
        for (int k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
        d[i] = acc;
    }
}
