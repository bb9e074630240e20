//! The kernels that pack a data-parallel step's gradients before they are summed over the ranks
//! (`e2enc_train::dist::GradientReducer`) and unpack them after: of a DSFF-masked weight only
//! the live kernels travel (a dead kernel's gradient is exactly zero on every rank), so the
//! ranks exchange the live floats, not the whole tensors.
//!
//! - `e2g_gather`: `A[i] = W[src(i)]`: the runs of the arena `W` into the packed buffer `A`;
//! - `e2g_scatter`: `A[src(i)] = W[i]`: the packed buffer `W` back into the runs of the arena
//!   `A`.
//!
//! `I` is a table of 64-bit integers: `[runs, total, off[0..=runs], src[0..runs]]`: run `r`
//! is packed floats `off[r]..off[r + 1]` (`off[0] = 0`, `off[runs] = total`), taken from
//! arena float `src[r]` onwards. Each thread finds its run by binary search; a grid-stride loop
//! over [`BLOCKS`] blocks; copies only, so the GPU and the host emulation give the same bits.

use super::THREADS;
use crate::emit::Launch;

/// Blocks of every gather launch.
pub const BLOCKS: u32 = 512;

/// The kernels' text and `(name, launch)` of `e2g_gather`, `e2g_scatter`.
pub fn gather_kernels() -> (String, Vec<(String, Launch)>) {
    let body = |name: &str, copy: &str| {
        format!(
            "extern \"C\" __global__ void __launch_bounds__({THREADS}) {name}(float *__restrict__ A,
    const float *__restrict__ W, const int *__restrict__ I) {{
    const long long *t = (const long long *)(const void *)I;
    const long long runs = t[0], total = t[1];
    const long long *off = t + 2;
    const long long *src = off + runs + 1;
    for (long long i = (long long)blockIdx.x * {THREADS} + (long long)threadIdx.x; i < total;
         i += (long long){BLOCKS} * {THREADS}) {{
        long long lo = 0, hi = runs - 1;
        while (lo < hi) {{
            const long long mid = (lo + hi + 1) >> 1;
            if (off[mid] <= i) lo = mid; else hi = mid - 1;
        }}
        {copy};
    }}
}}
"
        )
    };
    let src = body("e2g_gather", "A[i] = W[src[lo] + (i - off[lo])]")
        + &body("e2g_scatter", "A[src[lo] + (i - off[lo])] = W[i]");
    (
        src,
        super::grid_stride_launches(&["e2g_gather", "e2g_scatter"], BLOCKS),
    )
}

/// The table `I` of [`gather_kernels`] for `runs` (arena float offset, floats) in packed order,
/// as bytes; empty runs are left out. Returns it and the total.
pub fn gather_table(runs: &[(u64, usize)]) -> (Vec<u8>, usize) {
    let runs: Vec<(u64, usize)> = runs.iter().copied().filter(|r| r.1 > 0).collect();
    let total: usize = runs.iter().map(|r| r.1).sum();
    let mut t: Vec<i64> = Vec::with_capacity(3 + 2 * runs.len());
    t.push(runs.len() as i64);
    t.push(total as i64);
    let mut at = 0i64;
    t.push(0);
    for r in &runs {
        at += r.1 as i64;
        t.push(at);
    }
    t.extend(runs.iter().map(|r| r.0 as i64));
    (t.iter().flat_map(|v| v.to_le_bytes()).collect(), total)
}
