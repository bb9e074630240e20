//! The host emulation of CUDA kernels on hand-written kernels: a block reduction across
//! `__syncthreads` is exact for every seed, and the same kernel with one barrier removed gives
//! wrong results that change with the seed (the thread order of every phase is random, so a
//! missing barrier shows); warp shuffles exchange lanes' values as CUDA defines; a barrier in a
//! launch marked without synchronization, and threads that leave a block while others wait at a
//! barrier, are reported as errors instead of computing something.

use std::path::Path;

use e2enc_runtime::emulate::Emulation;
use e2enc_runtime::format::{Launch, Step};

fn step(kernel: &str, grid: u32, block: u32, sync: bool) -> Step {
    Step {
        kernel: kernel.into(),
        tiles: grid as usize,
        first_tile: 0,
        flops: 0,
        what: kernel.into(),
        launch: Some(Launch {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared_bytes: 0,
            sync,
        }),
    }
}

/// Runs kernel `k` of `e` over all blocks of `s` on arena `a`.
fn run(e: &Emulation, k: usize, s: &Step, a: &mut [f32]) {
    let w = [0f32; 1];
    let i = [0i32; 1];
    // SAFETY: the kernels below index only the first values of A that the tests allocate.
    unsafe { (e.kernels[k])(a.as_mut_ptr(), w.as_ptr(), i.as_ptr(), 0, s.tiles as i64) };
}

/// Block sums of 256 values per block into A[1024 + block]: a shared-memory tree. `BARRIER`
/// is the barrier inside the tree loop (removed in the broken variant).
const REDUCE: &str = r#"
typedef long long i64;
extern "C" __global__ void __launch_bounds__(256) reduce(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    __shared__ float s[256];
    const int t = (int)threadIdx.x;
    s[t] = A[blockIdx.x * 256 + t];
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if (t < k) s[t] += s[t + k];
        BARRIER
    }
    if (t == 0) A[1024 + blockIdx.x] = s[0];
}
"#;

fn inputs() -> Vec<f32> {
    let mut a = vec![0f32; 1024 + 4];
    for (i, v) in a.iter_mut().take(1024).enumerate() {
        // Integers: every order of summation gives the same exact sum.
        *v = ((i * 37) % 101) as f32;
    }
    a
}

fn exact_sums(a: &[f32]) -> Vec<f32> {
    (0..4)
        .map(|b| a[b * 256..(b + 1) * 256].iter().sum())
        .collect()
}

#[test]
fn a_block_reduction_is_exact_for_every_seed_and_a_missing_barrier_shows() {
    let dir = Path::new("test");
    let steps = [step("reduce", 4, 256, true)];
    let good = Emulation::build(dir, &REDUCE.replace("BARRIER", "__syncthreads();"), &steps)
        .expect("the emulation builds");
    let broken = Emulation::build(dir, &REDUCE.replace("BARRIER", ""), &steps)
        .expect("the broken kernel builds too");
    let want = exact_sums(&inputs());
    let mut wrong_seeds = Vec::new();
    let mut broken_results = Vec::new();
    for seed in 1..=6u64 {
        let mut a = inputs();
        good.set_seed(seed);
        run(&good, 0, &steps[0], &mut a);
        assert_eq!(good.take_error(), None);
        assert_eq!(a[1024..], want[..], "seed {seed}: the correct kernel");

        let mut b = inputs();
        broken.set_seed(seed);
        run(&broken, 0, &steps[0], &mut b);
        assert_eq!(broken.take_error(), None);
        if b[1024..] != want[..] {
            wrong_seeds.push(seed);
        }
        broken_results.push(b[1024..].to_vec());
    }
    assert!(
        !wrong_seeds.is_empty(),
        "the kernel without its barrier computed the right sums for every seed: the emulation \
         would not catch a missing barrier"
    );
    broken_results.dedup();
    assert!(
        broken_results.len() > 1,
        "the broken kernel's results do not depend on the seed"
    );
}

#[test]
fn warp_shuffles_exchange_lane_values() {
    // Per warp: a shfl_down tree sum to lane 0, a broadcast from lane 3 with __shfl_sync, and a
    // butterfly (xor) sum every lane holds; 64 threads = 2 warps.
    let src = r#"
extern "C" __global__ void __launch_bounds__(64) warp(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int t = (int)threadIdx.x, lane = t % 32, w = t / 32;
    float v = A[t];
    float s = v;
    for (int d = 16; d > 0; d >>= 1) s += __shfl_down_sync(0xffffffffu, s, d);
    const float b = __shfl_sync(0xffffffffu, v, 3);
    float x = v;
    for (int m = 1; m < 32; m <<= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    const float up = __shfl_up_sync(0xffffffffu, v, 1);
    if (lane == 0) A[64 + w] = s;
    A[128 + t] = b;
    A[192 + t] = x;
    A[256 + t] = up;
}
"#;
    let steps = [step("warp", 1, 64, true)];
    let e = Emulation::build(Path::new("test"), src, &steps).expect("builds");
    for seed in [1u64, 2, 3] {
        let mut a = vec![0f32; 320];
        for (i, v) in a.iter_mut().take(64).enumerate() {
            *v = (i * i % 29) as f32;
        }
        let x: Vec<f32> = a[..64].to_vec();
        e.set_seed(seed);
        run(&e, 0, &steps[0], &mut a);
        assert_eq!(e.take_error(), None);
        for w in 0..2 {
            let sum: f32 = x[w * 32..(w + 1) * 32].iter().sum();
            assert_eq!(a[64 + w], sum, "warp {w} shfl_down sum");
            for lane in 0..32 {
                let t = w * 32 + lane;
                assert_eq!(a[128 + t], x[w * 32 + 3], "broadcast, thread {t}");
                assert_eq!(a[192 + t], sum, "xor butterfly, thread {t}");
                let up = if lane == 0 { x[t] } else { x[t - 1] };
                assert_eq!(a[256 + t], up, "shfl_up, thread {t}");
            }
        }
    }
}

#[test]
fn misuse_of_barriers_is_an_error_not_a_result() {
    let src = r#"
extern "C" __global__ void __launch_bounds__(32) k(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    A[threadIdx.x] = 1.0f;
}
"#;
    // Marked without synchronization: the barrier itself is the error.
    let steps = [step("k", 1, 32, false)];
    let e = Emulation::build(Path::new("test"), src, &steps).expect("builds");
    let mut a = vec![0f32; 32];
    run(&e, 0, &steps[0], &mut a);
    let msg = e.take_error().expect("an error");
    assert!(
        msg.contains("sync = 0") && msg.contains("kernel k"),
        "{msg}"
    );
    assert_eq!(e.take_error(), None, "the error is cleared once taken");

    // Marked with synchronization: thread 0 leaves while the others wait at the barrier.
    let steps = [step("k", 1, 32, true)];
    let e = Emulation::build(Path::new("test"), src, &steps).expect("builds");
    run(&e, 0, &steps[0], &mut a);
    let msg = e.take_error().expect("an error");
    assert!(msg.contains("exited while others wait"), "{msg}");
}

#[test]
fn launches_that_cuda_cannot_make_are_refused_before_compiling() {
    let mut s = step("k", 1, 2048, false);
    let e = e2enc_runtime::emulate::source("", std::slice::from_ref(&s)).unwrap_err();
    assert!(e.contains("2048"), "{e}");
    s = step("k; system(\"x\")", 1, 32, false);
    let e = e2enc_runtime::emulate::source("", &[s]).unwrap_err();
    assert!(e.contains("not an identifier"), "{e}");
}

#[test]
fn mma_tf32_computes_a_matrix_product_with_ptx_fragments() {
    // One warp: A 16x8 at A[0..128] (row-major), B 8x8 at A[128..192] (row-major, k x n),
    // C 16x8 at A[192..320]; D written at A[320..448]. Fragments loaded by the PTX table for
    // mma.m16n8k8 .tf32 (g = lane / 4, t = lane % 4).
    let src = r#"
extern "C" __global__ void __launch_bounds__(32) mm(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int lane = (int)threadIdx.x, g = lane >> 2, t = lane & 3;
    unsigned a[4], b[2];
    a[0] = e2_tf32(A[g * 8 + t]);
    a[1] = e2_tf32(A[(g + 8) * 8 + t]);
    a[2] = e2_tf32(A[g * 8 + t + 4]);
    a[3] = e2_tf32(A[(g + 8) * 8 + t + 4]);
    b[0] = e2_tf32(A[128 + t * 8 + g]);
    b[1] = e2_tf32(A[128 + (t + 4) * 8 + g]);
    float d[4];
    d[0] = A[192 + g * 8 + 2 * t];
    d[1] = A[192 + g * 8 + 2 * t + 1];
    d[2] = A[192 + (g + 8) * 8 + 2 * t];
    d[3] = A[192 + (g + 8) * 8 + 2 * t + 1];
    e2_mma_tf32(d, a, b);
    A[320 + g * 8 + 2 * t] = d[0];
    A[320 + g * 8 + 2 * t + 1] = d[1];
    A[320 + (g + 8) * 8 + 2 * t] = d[2];
    A[320 + (g + 8) * 8 + 2 * t + 1] = d[3];
}
"#;
    let steps = [step("mm", 1, 32, true)];
    let e = Emulation::build(Path::new("test"), src, &steps).expect("builds");
    let mut a = vec![0f32; 448];
    // Small integers: exact in TF32 and in every sum, so D must equal A B + C exactly.
    for (i, v) in a.iter_mut().take(320).enumerate() {
        *v = ((i * 7 + 3) % 11) as f32 - 5.0;
    }
    run(&e, 0, &steps[0], &mut a);
    assert_eq!(e.take_error(), None);
    for r in 0..16 {
        for c in 0..8 {
            let want: f32 = a[192 + r * 8 + c]
                + (0..8)
                    .map(|k| a[r * 8 + k] * a[128 + k * 8 + c])
                    .sum::<f32>();
            assert_eq!(a[320 + r * 8 + c], want, "D[{r}][{c}]");
        }
    }
    // A value that TF32 rounds: 1 + 2^-11 rounds up (ties away) to 1 + 2^-10 as an operand.
    let mut b = vec![0f32; 448];
    b[0] = 1.0 + 2f32.powi(-11);
    b[128] = 1.0;
    run(&e, 0, &steps[0], &mut b);
    assert_eq!(
        b[320],
        1.0 + 2f32.powi(-10),
        "cvt.rna.tf32 rounds ties away from zero"
    );
}

#[test]
fn mma_bf16_computes_a_matrix_product_with_ptx_fragments() {
    // One warp: A 16x16 at A[0..256] (row-major), B 16x8 at A[256..384] (k x n), C 16x8 at
    // A[384..512]; D at A[512..640]. bf16 pairs packed low half first, as in PTX's tables for
    // mma.m16n8k16 .bf16.
    let src = r#"
extern "C" __global__ void __launch_bounds__(32) mm(float *__restrict__ A, const float *__restrict__ W, const int *__restrict__ I) {
    const int lane = (int)threadIdx.x, g = lane >> 2, t = lane & 3;
    unsigned a[4], b[2];
    a[0] = e2_bf16x2(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
    a[1] = e2_bf16x2(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
    a[2] = e2_bf16x2(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
    a[3] = e2_bf16x2(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
    b[0] = e2_bf16x2(A[256 + (2 * t) * 8 + g], A[256 + (2 * t + 1) * 8 + g]);
    b[1] = e2_bf16x2(A[256 + (2 * t + 8) * 8 + g], A[256 + (2 * t + 9) * 8 + g]);
    float d[4];
    d[0] = A[384 + g * 8 + 2 * t];
    d[1] = A[384 + g * 8 + 2 * t + 1];
    d[2] = A[384 + (g + 8) * 8 + 2 * t];
    d[3] = A[384 + (g + 8) * 8 + 2 * t + 1];
    e2_mma_bf16(d, a, b);
    A[512 + g * 8 + 2 * t] = d[0];
    A[512 + g * 8 + 2 * t + 1] = d[1];
    A[512 + (g + 8) * 8 + 2 * t] = d[2];
    A[512 + (g + 8) * 8 + 2 * t + 1] = d[3];
}
"#;
    let steps = [step("mm", 1, 32, true)];
    let e = Emulation::build(Path::new("test"), src, &steps).expect("builds");
    let mut a = vec![0f32; 640];
    for (i, v) in a.iter_mut().take(512).enumerate() {
        *v = ((i * 5 + 1) % 13) as f32 - 6.0;
    }
    run(&e, 0, &steps[0], &mut a);
    assert_eq!(e.take_error(), None);
    for r in 0..16 {
        for c in 0..8 {
            let want: f32 = a[384 + r * 8 + c]
                + (0..16)
                    .map(|k| a[r * 16 + k] * a[256 + k * 8 + c])
                    .sum::<f32>();
            assert_eq!(a[512 + r * 8 + c], want, "D[{r}][{c}]");
        }
    }
    // bf16 stores 7 mantissa bits: 1 + 2^-8 is a tie and rounds to even (1), 1 + 3 * 2^-8 up.
    let mut b = vec![0f32; 640];
    b[0] = 1.0 + 2f32.powi(-8);
    b[1] = 1.0 + 3.0 * 2f32.powi(-8);
    b[256] = 1.0;
    b[256 + 8] = 1.0;
    run(&e, 0, &steps[0], &mut b);
    assert_eq!(
        b[512],
        1.0 + (1.0 + 2f32.powi(-6)),
        "cvt.rn.bf16x2 rounds ties to even"
    );
}
