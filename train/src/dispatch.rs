//! Picks the kernel that evaluates one op of a training graph: the fast f32 kernels of
//! [`super::kernels`] for every op E2ENet's training graph holds, the reference interpreter's for
//! anything else (which a training graph built from `e2enet::build` never reaches).
//!
//! The output buffer is allocated from the node's declared type, so each kernel also checks that
//! the shapes it derives agree with the IR's shape inference.

use std::sync::Arc;

use e2enc_ir::{interp, Op, Tensor, TensorType};

use super::kernels as k;
use crate::TrainError;

fn shape5(t: &Tensor) -> Option<[usize; 5]> {
    t.shape().try_into().ok()
}

/// Evaluates `op` on `args`; `live` is the live-kernel mask of the conv's DSFF weight, if any.
pub fn eval(
    op: &Op,
    args: &[Arc<Tensor>],
    ty: &TensorType,
    live: Option<&[bool]>,
    threads: usize,
) -> Result<Tensor, String> {
    let f = |i: usize| args[i].as_f32();
    let all_f32 = args.iter().all(|a| a.as_f32().is_some()) && ty.dtype == e2enc_ir::DType::F32;
    let s = |i: usize| shape5(&args[i]);
    // Fused depth shifts (training graphs after `e2enc_passes::training`) are the generated-C
    // backend's business; these kernels take the graph as autodiff made it.
    let shifted =
        matches!(op, Op::ConvBackwardData(g) | Op::ConvBackwardWeight(g) if !g.shifts.is_empty());
    let fast = all_f32
        && !shifted
        && args
            .iter()
            .all(|a| a.shape().len() == 5 || a.shape().len() == 1);
    if !fast {
        return fallback(op, args);
    }
    let mut y = vec![0f32; ty.numel()];
    let r: Result<(), TrainError> = (|| {
        let (x, xs) = (f(0).expect("f32"), s(0));
        match op {
            Op::Conv3d(a) => k::conv3d(
                x,
                xs.ok_or_else(rank)?,
                f(1).expect("f32"),
                s(1).ok_or_else(rank)?,
                args.get(2).and_then(|b| b.as_f32()),
                a,
                live,
                &mut y,
                threads,
            ),
            Op::ConvTranspose3d(a) => k::conv_transpose3d(
                x,
                xs.ok_or_else(rank)?,
                f(1).expect("f32"),
                s(1).ok_or_else(rank)?,
                args.get(2).and_then(|b| b.as_f32()),
                a,
                live,
                &mut y,
                threads,
            ),
            Op::ConvBackwardData(g) => k::conv_backward_data(
                x,
                xs.ok_or_else(rank)?,
                f(1).expect("f32"),
                s(1).ok_or_else(rank)?,
                &g.conv,
                g.transposed,
                g.input,
                live,
                &mut y,
                threads,
            ),
            Op::ConvBackwardWeight(g) => k::conv_backward_weight(
                x,
                xs.ok_or_else(rank)?,
                f(1).expect("f32"),
                s(1).ok_or_else(rank)?,
                &g.conv,
                g.transposed,
                live,
                &mut y,
                threads,
            ),
            Op::ChannelSum => k::channel_sum(x, xs.ok_or_else(rank)?, &mut y),
            Op::DepthShift(a) => k::depth_shift(x, xs.ok_or_else(rank)?, a.groups, &mut y),
            Op::DepthShiftBackward(a) => {
                k::depth_shift_backward(x, xs.ok_or_else(rank)?, a.groups, &mut y)
            }
            Op::InstanceNorm { eps } => k::instance_norm(
                x,
                xs.ok_or_else(rank)?,
                f(1).expect("f32"),
                f(2).expect("f32"),
                *eps,
                &mut y,
                threads,
            ),
            Op::InstanceNormBackward { eps } => k::instance_norm_backward(
                x,
                xs.ok_or_else(rank)?,
                f(1).expect("f32"),
                f(2).expect("f32"),
                *eps,
                &mut y,
                threads,
            ),
            Op::InstanceNormGammaGrad { eps } => k::instance_norm_gamma_grad(
                x,
                xs.ok_or_else(rank)?,
                f(1).expect("f32"),
                *eps,
                &mut y,
                threads,
            ),
            Op::LeakyRelu { slope } => k::leaky_relu(x, *slope, &mut y),
            Op::LeakyReluBackward { slope } => {
                k::leaky_relu_backward(x, f(1).expect("f32"), *slope, &mut y)
            }
            Op::MaxPool3d(a) => k::max_pool3d(x, xs.ok_or_else(rank)?, a, &mut y),
            Op::MaxPoolBackward(a) => {
                k::max_pool3d_backward(x, xs.ok_or_else(rank)?, f(1).expect("f32"), a, &mut y)
            }
            Op::Add => k::add(x, f(1).expect("f32"), &mut y),
            Op::Concat => {
                let parts: Vec<(&[f32], [usize; 5])> = (0..args.len())
                    .map(|i| Ok((f(i).expect("f32"), s(i).ok_or_else(rank)?)))
                    .collect::<Result<_, TrainError>>()?;
                k::concat(&parts, &mut y)
            }
            Op::SelectChannels { axis: 1, ranges } => {
                k::select_channels(x, xs.ok_or_else(rank)?, ranges, &mut y)
            }
            _ => Err(TrainError::NoFastKernel),
        }
    })();
    match r {
        Ok(()) => Tensor::from_f32(ty.shape.clone(), y).map_err(|e| e.to_string()),
        Err(TrainError::NoFastKernel) => fallback(op, args),
        Err(e) => Err(e.to_string()),
    }
}

fn rank() -> TrainError {
    TrainError::Rank
}

fn fallback(op: &Op, args: &[Arc<Tensor>]) -> Result<Tensor, String> {
    let refs: Vec<&Tensor> = args.iter().map(|a| &**a).collect();
    interp::ops::eval(op, &refs).map_err(|e| e.to_string())
}
