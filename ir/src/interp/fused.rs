//! The fused convolution of the reference interpreter, written as the obviously correct
//! composition of the unfused kernels: per-channel depth shift → (scatter of the packed sparse
//! weight into the dense one) → `conv3d` / `conv_transpose3d` with the bias → `instance_norm` →
//! `leaky_relu`.
//!
//! Nothing is fused for speed here: the oracle must equal the graph it replaces bit for bit, so it
//! runs the very same kernels in the very same order. The only new logic is the sparse scatter,
//! which checks every index row (in range, no `(out, in)` pair twice) and reports a bad one as an
//! error naming the row, never a panic.

use std::collections::HashMap;

use crate::error::IrError;
use crate::op::{FusedConvAttrs, Op};
use crate::tensor::Tensor;

use super::conv::{conv3d, conv_transpose3d};
use super::ops::{checked, dims5, err, f32s, instance_norm, leaky_relu, shift_channels};

/// `(x, w, [kidx], [b], [gamma, beta])`: see [`Op::FusedConv3d`]. Equals
/// `leaky_relu(instance_norm(conv(shift(x), dense(w, kidx), b), gamma, beta))`, each stage present
/// only when its attribute asks for it; `dense` is the identity for dense weights.
pub fn fused_conv3d(args: &[&Tensor], a: &FusedConvAttrs) -> Result<Tensor, IrError> {
    let op = Op::FusedConv3d(a.clone());
    let ty = checked(&op, args)?;
    // The type checks passed: the arity matches `operand_slots`, and every size below is that of
    // a tensor in memory or of the result type, except the dense weight, counted with care.
    let (kidx_at, bias_at, gamma_at) = a.operand_slots();
    let x = args[0];
    let shifted;
    let x = match a.channel_shifts() {
        None => x,
        Some(shifts) => {
            let dims = dims5(&op, x.shape())?;
            shifted = Tensor::from_f32(
                x.shape().to_vec(),
                shift_channels(f32s(&op, x)?, dims, &shifts),
            )?;
            &shifted
        }
    };
    let dense;
    let w = match (a.sparse_out, kidx_at) {
        (Some(cout), Some(k)) => {
            dense = scatter(&op, a, x.shape()[1], cout, args[1], args[k])?;
            &dense
        }
        _ => args[1],
    };
    let bias = bias_at.map(|b| args[b]);
    let mut y = if a.transposed {
        conv_transpose3d(x, w, bias, &a.conv)?
    } else {
        conv3d(x, w, bias, &a.conv)?
    };
    if let (Some(eps), Some(g)) = (a.norm_eps, gamma_at) {
        y = instance_norm(&y, args[g], args[g + 1], eps)?;
    }
    if let Some(slope) = a.slope {
        y = leaky_relu(&y, slope)?;
    }
    if y.ty() != ty {
        return Err(err(&op, format!("computed {} but inferred {ty}", y.ty())));
    }
    Ok(y)
}

/// The dense weight (`[O, I, k..]`, or `[I, O, k..]` when transposed) holding packed kernel `r`
/// at the `(out, in)` pair of index row `r` and zeros elsewhere.
fn scatter(
    op: &Op,
    a: &FusedConvAttrs,
    cin: usize,
    cout: usize,
    packed: &Tensor,
    kidx: &Tensor,
) -> Result<Tensor, IrError> {
    let ws = f32s(op, packed)?;
    let idx = kidx
        .as_i32()
        .ok_or_else(|| err(op, format!("kernel index must be i32, got {}", kidx.ty())))?;
    let kvol: usize = a.conv.kernel.iter().product();
    let total = [cout, cin, kvol]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 4)
        .ok_or_else(|| {
            err(
                op,
                format!("the dense weight of {cout} x {cin} kernels of {kvol} is too large"),
            )
        })?;
    let mut dense = vec![0f32; total];
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    for (r, (row, kernel)) in idx
        .chunks_exact(2)
        .zip(ws.chunks_exact(kvol.max(1)))
        .enumerate()
    {
        let (o, i) = (row[0], row[1]);
        let pair = usize::try_from(o)
            .ok()
            .zip(usize::try_from(i).ok())
            .filter(|&(o, i)| o < cout && i < cin);
        let Some((o, i)) = pair else {
            return Err(err(
                op,
                format!(
                    "kernel index row {r} is ({o}, {i}), outside {cout} output x {cin} input channels"
                ),
            ));
        };
        if let Some(first) = seen.insert((o, i), r) {
            return Err(err(
                op,
                format!("kernel index rows {first} and {r} both name (out {o}, in {i})"),
            ));
        }
        let k = if a.transposed {
            i * cout + o
        } else {
            o * cin + i
        };
        dense[k * kvol..(k + 1) * kvol].copy_from_slice(kernel);
    }
    let (d0, d1) = if a.transposed {
        (cin, cout)
    } else {
        (cout, cin)
    };
    let mut shape = vec![d0, d1];
    shape.extend_from_slice(&a.conv.kernel);
    Tensor::from_f32(shape, dense)
}
