//! One public function per op of the IR, on plain [`Tensor`]s, so tests (and later backends'
//! tests) can call a kernel without building a graph; [`eval`] dispatches an [`Op`] to them.
//!
//! Every function first runs shape inference ([`crate::shape::infer`]) on its operands' types, so
//! a bad operand (wrong rank, dtype, channel count, attribute) is an `IrError::Interp` naming the
//! op, never a panic, and all indexing afterwards is within bounds by construction. Storage is
//! f32; every sum (convolutions, norm statistics, softmax denominators) accumulates in f64.
//!
//! Semantic choices where PyTorch leaves room: `leaky_relu` maps NaN to NaN; `max_pool3d`
//! propagates NaN (a window holding a NaN yields NaN, like PyTorch); `argmax` takes the first
//! index on ties and treats NaN as larger than everything (the first NaN wins, like
//! `torch.argmax`/`numpy.argmax`); `softmax` subtracts the channel maximum and is otherwise plain
//! (NaN in, NaN out). `select` gathers f32 and i32 tensors alike; `fused_conv3d` (in
//! `fused.rs`) is the composition of the unfused kernels, sharing the per-channel depth shift
//! with `depth_shift`. The training ops (gradients) live in `grad.rs`.

use crate::error::IrError;
use crate::op::{shift_runs, Op, PoolAttrs, ShiftAttrs};
use crate::shape;
use crate::tensor::{Tensor, TensorData};
use crate::types::TensorType;

pub use super::conv::{conv3d, conv_transpose3d};
pub use super::fused::fused_conv3d;
pub use super::grad::{
    channel_sum, conv_backward_data, conv_backward_weight, depth_shift_backward,
    instance_norm_backward, instance_norm_gamma_grad, leaky_relu_backward, max_pool_backward,
};

use super::grad;

/// An interpreter error located at the op (the driver replaces this with the node's name).
pub(crate) fn err(op: &Op, msg: impl Into<String>) -> IrError {
    IrError::Interp {
        node: op.mnemonic().to_string(),
        msg: msg.into(),
    }
}

/// Runs shape inference for `op` on the operands' types: the result type, or why they are wrong.
pub(crate) fn checked(op: &Op, args: &[&Tensor]) -> Result<TensorType, IrError> {
    let tys: Vec<TensorType> = args.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = tys.iter().collect();
    shape::infer(op, &refs).map_err(|msg| err(op, msg))
}

pub(crate) fn f32s<'a>(op: &Op, t: &'a Tensor) -> Result<&'a [f32], IrError> {
    t.as_f32()
        .ok_or_else(|| err(op, format!("expected an f32 operand, got {}", t.ty())))
}

pub(crate) fn dims5(op: &Op, s: &[usize]) -> Result<[usize; 5], IrError> {
    s.try_into().map_err(|_| {
        err(
            op,
            format!("expected a rank-5 [N, C, D, H, W] shape, got {s:?}"),
        )
    })
}

/// `(N, C, inner)` for a rank >= 2 shape, `inner` being the product of the trailing extents.
fn dims_nc(op: &Op, s: &[usize]) -> Result<(usize, usize, usize), IrError> {
    match s {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => Err(err(op, format!("expected rank >= 2, got {s:?}"))),
    }
}

/// Evaluates `op` on its operands (in the operand order documented on [`Op`]). Inputs and weights
/// are looked up by the driver and are an error here.
pub fn eval(op: &Op, args: &[&Tensor]) -> Result<Tensor, IrError> {
    if !op.arity().accepts(args.len()) {
        return Err(err(
            op,
            format!("takes {} operand(s), got {}", op.arity(), args.len()),
        ));
    }
    match op {
        Op::Input { .. } | Op::Weight { .. } => Err(err(
            op,
            "inputs and weights are supplied by the driver, not evaluated",
        )),
        Op::Conv3d(a) => conv3d(args[0], args[1], args.get(2).copied(), a),
        Op::ConvTranspose3d(a) => conv_transpose3d(args[0], args[1], args.get(2).copied(), a),
        Op::DepthShift(a) => depth_shift(args[0], a),
        Op::InstanceNorm { eps } => instance_norm(args[0], args[1], args[2], *eps),
        Op::LeakyRelu { slope } => leaky_relu(args[0], *slope),
        Op::MaxPool3d(a) => max_pool3d(args[0], a),
        Op::Concat => concat(args),
        Op::Add => add(args[0], args[1]),
        Op::Softmax => softmax(args[0]),
        Op::Argmax => argmax(args[0]),
        Op::SelectChannels { axis, ranges } => select(args[0], *axis, ranges),
        Op::FusedConv3d(a) => fused_conv3d(args, a),
        Op::ConvBackwardData(a) => grad::conv_backward_data(args[0], args[1], a),
        Op::ConvBackwardWeight(a) => grad::conv_backward_weight(args[0], args[1], a),
        Op::ChannelSum => grad::channel_sum(args[0]),
        Op::DepthShiftBackward(a) => grad::depth_shift_backward(args[0], a),
        Op::InstanceNormBackward { eps } => {
            grad::instance_norm_backward(args[0], args[1], args[2], *eps)
        }
        Op::InstanceNormGammaGrad { eps } => grad::instance_norm_gamma_grad(args[0], args[1], *eps),
        Op::LeakyReluBackward { slope } => grad::leaky_relu_backward(args[0], args[1], *slope),
        Op::MaxPoolBackward(a) => grad::max_pool_backward(args[0], args[1], a),
    }
}

/// `(x)`: the elements of the half-open index `ranges` along `axis`, in order (a gather along
/// any axis of an f32 or i32 tensor of any rank >= 1).
pub fn select(x: &Tensor, axis: usize, ranges: &[(usize, usize)]) -> Result<Tensor, IrError> {
    let op = Op::SelectChannels {
        axis,
        ranges: ranges.to_vec(),
    };
    let ty = checked(&op, &[x])?;
    // Shape inference guarantees `axis < rank` and `start < end <= shape[axis]` for every range.
    let s = x.shape();
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis + 1..].iter().product();
    let n = s[axis];
    fn gather<T: Copy>(
        v: &[T],
        outer: usize,
        n: usize,
        inner: usize,
        r: &[(usize, usize)],
    ) -> Vec<T> {
        let mut out = Vec::new();
        for o in 0..outer {
            for &(start, end) in r {
                out.extend_from_slice(&v[(o * n + start) * inner..(o * n + end) * inner]);
            }
        }
        out
    }
    match x.data() {
        TensorData::F32(v) => Tensor::from_f32(ty.shape, gather(v, outer, n, inner, ranges)),
        TensorData::I32(v) => Tensor::from_i32(ty.shape, gather(v, outer, n, inner, ranges)),
    }
}

/// Per-channel depth shift of a `[N, C, D, H, W]` buffer: `out[n, c, d] = xs[n, c, d - shifts[c]]`
/// when `0 <= d - shifts[c] < D`, else 0 (whole `H·W` slices move). `shifts.len()` must be `C`
/// (callers check it through shape inference). Shared by `depth_shift` and `fused_conv3d`.
pub(crate) fn shift_channels(xs: &[f32], dims: [usize; 5], shifts: &[i64]) -> Vec<f32> {
    let [n, c, d, h, w] = dims;
    let plane = h * w;
    let mut out = vec![0f32; xs.len()];
    for ni in 0..n {
        for (ci, &s) in shifts.iter().enumerate().take(c) {
            let base = (ni * c + ci) * d;
            for di in 0..d {
                // i128: no shift, however large, can overflow the subtraction.
                let src = di as i128 - i128::from(s);
                if src < 0 || src >= d as i128 {
                    continue; // zero fill
                }
                let to = (base + di) * plane;
                let from = (base + src as usize) * plane;
                out[to..to + plane].copy_from_slice(&xs[from..from + plane]);
            }
        }
    }
    out
}

/// `(x)`: channels split into consecutive blocks of `ceil(C / groups)` (torch.chunk: the last
/// block may be smaller, and small `C` gives fewer blocks); block `g` shifts by
/// `s = g - groups/2`: `out[:, c, d] = in[:, c, d - s]` when `0 <= d - s < D`, else 0. This is
/// the per-channel shift of [`shift_runs`]`(groups, C)`, the one `fused_conv3d` applies too.
pub fn depth_shift(x: &Tensor, a: &ShiftAttrs) -> Result<Tensor, IrError> {
    let op = Op::DepthShift(a.clone());
    let ty = checked(&op, &[x])?;
    let xs = f32s(&op, x)?;
    let dims = dims5(&op, x.shape())?;
    let shifts: Vec<i64> = shift_runs(a.groups, dims[1])
        .into_iter()
        .flat_map(|(s, n)| std::iter::repeat_n(s, n))
        .collect();
    Tensor::from_f32(ty.shape, shift_channels(xs, dims, &shifts))
}

/// `(x, gamma, beta)`: for each `(n, c)`, mean and biased variance over `D·H·W` (two passes in
/// f64), `y = (x - mean) / sqrt(var + eps) · gamma[c] + beta[c]`.
pub fn instance_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor, IrError> {
    let op = Op::InstanceNorm { eps };
    let ty = checked(&op, &[x, gamma, beta])?;
    let (xs, gs, bs) = (f32s(&op, x)?, f32s(&op, gamma)?, f32s(&op, beta)?);
    let (_, c, inner) = dims_nc(&op, x.shape())?;
    let mut out = vec![0f32; xs.len()];
    for (p, (src, dst)) in xs.chunks(inner).zip(out.chunks_mut(inner)).enumerate() {
        let ch = p % c;
        let len = src.len() as f64;
        let mean = src.iter().map(|&v| v as f64).sum::<f64>() / len;
        let var = src.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len;
        let inv = 1.0 / (var + eps as f64).sqrt();
        let (g, b) = (gs[ch] as f64, bs[ch] as f64);
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = ((v as f64 - mean) * inv * g + b) as f32;
        }
    }
    Tensor::from_f32(ty.shape, out)
}

/// `(x)`: `x` if `x >= 0` else `slope · x` (NaN stays NaN).
pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor, IrError> {
    let op = Op::LeakyRelu { slope };
    let ty = checked(&op, &[x])?;
    let xs = f32s(&op, x)?;
    let out = xs
        .iter()
        .map(|&v| if v >= 0.0 { v } else { slope * v })
        .collect();
    Tensor::from_f32(ty.shape, out)
}

/// `(x)`: max over each `kernel` window at multiples of `stride`, no padding; NaN propagates.
pub fn max_pool3d(x: &Tensor, a: &PoolAttrs) -> Result<Tensor, IrError> {
    let op = Op::MaxPool3d(a.clone());
    let ty = checked(&op, &[x])?;
    let xs = f32s(&op, x)?;
    let [n, c, d, h, w] = dims5(&op, x.shape())?;
    let [_, _, od, oh, ow] = dims5(&op, &ty.shape)?;
    let ([kd, kh, kw], [sd, sh, sw]) = (a.kernel, a.stride);
    let mut out = Vec::with_capacity(ty.numel());
    for p in 0..n * c {
        for z in 0..od {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for a in 0..kd {
                        for b in 0..kh {
                            let row = ((p * d + z * sd + a) * h + y * sh + b) * w + xo * sw;
                            for &v in &xs[row..row + kw] {
                                if v > m || v.is_nan() {
                                    m = v;
                                }
                            }
                        }
                    }
                    out.push(m);
                }
            }
        }
    }
    Tensor::from_f32(ty.shape, out)
}

/// `(x0, x1, ...)`: concatenation along axis 1, operands in order.
pub fn concat(xs: &[&Tensor]) -> Result<Tensor, IrError> {
    let op = Op::Concat;
    let ty = checked(&op, xs)?;
    let (n, _, _) = dims_nc(&op, &ty.shape)?;
    let mut out = Vec::with_capacity(ty.numel());
    for ni in 0..n {
        for x in xs {
            let data = f32s(&op, x)?;
            let (_, c, inner) = dims_nc(&op, x.shape())?;
            let per = c * inner;
            out.extend_from_slice(&data[ni * per..(ni + 1) * per]);
        }
    }
    Tensor::from_f32(ty.shape, out)
}

/// `(a, b)`: elementwise sum of two tensors of the same type.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor, IrError> {
    let op = Op::Add;
    let ty = checked(&op, &[a, b])?;
    let (xa, xb) = (f32s(&op, a)?, f32s(&op, b)?);
    Tensor::from_f32(ty.shape, xa.iter().zip(xb).map(|(p, q)| p + q).collect())
}

/// `(x)`: softmax over axis 1, `exp(x - max) / Σ exp(x - max)` computed in f64.
pub fn softmax(x: &Tensor) -> Result<Tensor, IrError> {
    let op = Op::Softmax;
    let ty = checked(&op, &[x])?;
    let xs = f32s(&op, x)?;
    let (n, c, inner) = dims_nc(&op, x.shape())?;
    let mut out = vec![0f32; xs.len()];
    let at = |ni: usize, ci: usize, r: usize| (ni * c + ci) * inner + r;
    let mut e = vec![0f64; c];
    for ni in 0..n {
        for r in 0..inner {
            let m = (0..c)
                .map(|ci| xs[at(ni, ci, r)] as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            for (ci, ev) in e.iter_mut().enumerate() {
                *ev = (xs[at(ni, ci, r)] as f64 - m).exp();
            }
            let sum: f64 = e.iter().sum();
            for (ci, ev) in e.iter().enumerate() {
                out[at(ni, ci, r)] = (ev / sum) as f32;
            }
        }
    }
    Tensor::from_f32(ty.shape, out)
}

/// `(x)`: index of the largest value along axis 1 as i32 `[N, rest...]`; the first index wins
/// ties, and NaN counts as larger than any number (so the first NaN wins).
pub fn argmax(x: &Tensor) -> Result<Tensor, IrError> {
    let op = Op::Argmax;
    let ty = checked(&op, &[x])?;
    let xs = f32s(&op, x)?;
    let (n, c, inner) = dims_nc(&op, x.shape())?;
    if c == 0 {
        return Err(err(
            &op,
            format!("no channels to choose from in {}", x.ty()),
        ));
    }
    if i32::try_from(c).is_err() {
        return Err(err(&op, format!("{c} channels do not fit an i32 index")));
    }
    let mut out = Vec::with_capacity(n * inner);
    for ni in 0..n {
        for r in 0..inner {
            let mut best = 0;
            let mut bv = xs[ni * c * inner + r];
            for ci in 1..c {
                let v = xs[(ni * c + ci) * inner + r];
                if !bv.is_nan() && (v.is_nan() || v > bv) {
                    best = ci;
                    bv = v;
                }
            }
            out.push(best as i32);
        }
    }
    Tensor::from_i32(ty.shape, out)
}
