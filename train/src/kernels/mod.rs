//! Fast f32 CPU kernels for a training step: the forward ops of the IR and their backward ops,
//! as plain functions over dense row-major `[N, C, D, H, W]` slices with explicit shapes.
//!
//! The reference interpreter (`e2enc_ir::interp`) defines the semantics; these kernels compute
//! the same values in f32 (norm statistics and channel sums still accumulate in f64) with
//! vectorizable inner loops and `std::thread::scope` threads. Every public function validates its
//! shapes first and returns [`TrainError::Kernel`] on a mismatch (never panics, never writes a
//! partial result on bad shapes); outputs are caller-provided slices that are fully overwritten.
//! Work is split over threads by whole output planes (or whole weight rows), and each output
//! element is computed in the same order whatever the thread count, so `threads = 1` and
//! `threads = 2` give bit-identical results.
//!
//! Layout: [`conv`] holds the public convolution API (forward, transposed, backward data and
//! weight, each with an optional kernel-liveness mask for dynamic sparse training), built on the
//! three direct primitives of [`direct`] (with [`framed`] for the stride-1 gather); [`norm`] the instance norm and channel sums; [`pointwise`]
//! leaky ReLU, add, concat, channel selection and the depth shift; [`pool`] max pooling.

mod conv;
mod direct;
mod framed;
mod norm;
mod pointwise;
mod pool;
mod simd;

pub use conv::{
    conv3d, conv3d_output_shape, conv_backward_data, conv_backward_weight, conv_transpose3d,
    conv_transpose3d_output_shape,
};
pub use norm::{channel_sum, instance_norm, instance_norm_backward, instance_norm_gamma_grad};
pub use pointwise::{
    add, concat, depth_shift, depth_shift_backward, leaky_relu, leaky_relu_backward,
    select_channels, select_channels_backward,
};
pub use pool::{max_pool3d, max_pool3d_backward, max_pool3d_output_shape};

use crate::TrainError;

/// A dense `[N, C, D, H, W]` shape.
pub type Shape5 = [usize; 5];

/// The error of kernel `op`.
pub(crate) fn kerr(op: &'static str, msg: impl Into<String>) -> TrainError {
    TrainError::Kernel {
        op,
        msg: msg.into(),
    }
}

/// The element count of `shape`, or an error when it overflows.
pub(crate) fn numel(op: &'static str, shape: &[usize]) -> Result<usize, TrainError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| kerr(op, format!("shape {shape:?} overflows")))
}

/// Checks that `buf` (named `what`) holds exactly the elements of `shape`.
pub(crate) fn check_len(
    op: &'static str,
    what: &str,
    len: usize,
    shape: &[usize],
) -> Result<(), TrainError> {
    let n = numel(op, shape)?;
    if len != n {
        return Err(kerr(
            op,
            format!("{what} has {len} elements, its shape {shape:?} needs {n}"),
        ));
    }
    Ok(())
}

/// Runs `f(n, c, plane)` on every `plane`-sized chunk of `out` (laid out `[N, C, plane]`), on up
/// to `threads` threads. Channels are dealt to threads greedily by `cost[c]` (largest first,
/// ties by index), so sparse layers balance their live kernels; a channel's planes for every `n`
/// go to the same thread. `unit` is the work (multiply-adds) per unit of cost; below about 64k
/// in all, everything runs on the calling thread. The assignment never changes a plane's value.
#[allow(clippy::too_many_arguments)]
pub(crate) fn par_planes(
    out: &mut [f32],
    channels: usize,
    plane: usize,
    cost: &[usize],
    unit: usize,
    threads: usize,
    f: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    if plane == 0 || channels == 0 {
        return;
    }
    let total: usize = cost.iter().sum::<usize>().max(1);
    let threads = threads.max(1).min(channels);
    // Below ~64k multiply-adds, spawning costs more than it saves.
    if threads == 1 || total.saturating_mul(unit) < 1 << 16 {
        for (p, chunk) in out.chunks_exact_mut(plane).enumerate() {
            f(p / channels, p % channels, chunk);
        }
        return;
    }
    let mut order: Vec<usize> = (0..channels).collect();
    order.sort_by(|&a, &b| cost[b].cmp(&cost[a]).then(a.cmp(&b)));
    let mut load = vec![0usize; threads];
    let mut owner = vec![0usize; channels];
    for c in order {
        let t = (0..threads).min_by_key(|&t| (load[t], t)).unwrap_or(0);
        load[t] += cost[c].max(1);
        owner[c] = t;
    }
    let mut buckets: Vec<Vec<(usize, usize, &mut [f32])>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (p, chunk) in out.chunks_exact_mut(plane).enumerate() {
        let c = p % channels;
        buckets[owner[c]].push((p / channels, c, chunk));
    }
    let f = &f;
    std::thread::scope(|s| {
        for bucket in buckets {
            s.spawn(move || {
                for (n, c, chunk) in bucket {
                    f(n, c, chunk);
                }
            });
        }
    });
}

/// Deterministic test data (see [`e2enc_ir::init::noise`]).
pub use e2enc_ir::init::noise;
