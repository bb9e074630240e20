//! Shape inference: one function per op, the single source of truth for result types.
//!
//! `infer` checks everything an op requires of its operands (arity, dtypes, ranks, channel
//! agreement with weights, attribute sanity, non-empty results) and returns the result type, or a
//! message saying what is wrong. The graph builder, the parser-facing verifier and the passes all
//! call it, so a rule lives in exactly one place.

use crate::op::{ConvAttrs, ConvGradAttrs, FusedConvAttrs, Op, PoolAttrs, ShiftAttrs};
use crate::types::{DType, TensorType};

type R = Result<TensorType, String>;

/// Infers the result type of `op` applied to operands of types `xs`.
pub fn infer(op: &Op, xs: &[&TensorType]) -> R {
    if !op.arity().accepts(xs.len()) {
        return Err(format!(
            "{} takes {} operand(s), got {}",
            op.mnemonic(),
            op.arity(),
            xs.len()
        ));
    }
    match op {
        Op::Input { .. } | Op::Weight { .. } => Err(format!(
            "the type of {} is declared, not inferred",
            op.mnemonic()
        )),
        Op::Conv3d(a) => conv3d(a, xs),
        Op::ConvTranspose3d(a) => conv_transpose3d(a, xs),
        Op::DepthShift(a) => depth_shift(a, xs[0]),
        Op::InstanceNorm { eps } => instance_norm(*eps, xs),
        Op::LeakyRelu { slope } => {
            if !slope.is_finite() {
                return Err(format!("slope {slope} is not finite"));
            }
            float("x", xs[0]).map(|_| xs[0].clone())
        }
        Op::MaxPool3d(a) => max_pool3d(a, xs[0]),
        Op::Concat => concat(xs),
        Op::Add => {
            float("a", xs[0])?;
            if xs[0] != xs[1] {
                return Err(format!("operand types differ: {} vs {}", xs[0], xs[1]));
            }
            Ok(xs[0].clone())
        }
        Op::Softmax => {
            float("x", xs[0])?;
            min_rank("x", xs[0], 2)?;
            Ok(xs[0].clone())
        }
        Op::Argmax => {
            float("x", xs[0])?;
            min_rank("x", xs[0], 2)?;
            let mut s = xs[0].shape.clone();
            s.remove(1);
            Ok(TensorType::new(DType::I32, s))
        }
        Op::SelectChannels { axis, ranges } => select(*axis, ranges, xs[0]),
        Op::FusedConv3d(a) => fused_conv3d(a, xs),
        Op::ConvBackwardData(a) => conv_backward_data(a, xs[0], xs[1]),
        Op::ConvBackwardWeight(a) => conv_backward_weight(a, xs[0], xs[1]),
        Op::ChannelSum => {
            volume("dy", xs[0])?;
            Ok(TensorType::f32([xs[0].shape[1]]))
        }
        Op::DepthShiftBackward(a) => depth_shift(a, xs[0]),
        Op::InstanceNormBackward { eps } => {
            instance_norm(*eps, &[xs[0], xs[1], xs[1]])?;
            same("dy", xs[2], "x", xs[0])?;
            Ok(xs[0].clone())
        }
        Op::InstanceNormGammaGrad { eps } => {
            let c = xs[0].shape.get(1).copied().unwrap_or(0);
            let gamma = TensorType::f32([c]);
            instance_norm(*eps, &[xs[0], &gamma, &gamma])?;
            same("dy", xs[1], "x", xs[0])?;
            Ok(gamma)
        }
        Op::LeakyReluBackward { slope } => {
            if !slope.is_finite() {
                return Err(format!("slope {slope} is not finite"));
            }
            float("x", xs[0])?;
            same("dy", xs[1], "x", xs[0])?;
            Ok(xs[0].clone())
        }
        Op::MaxPoolBackward(a) => {
            let y = max_pool3d(a, xs[0])?;
            same("dy", xs[1], "the pooled x", &y)?;
            Ok(xs[0].clone())
        }
    }
}

/// `t` (called `what`) must equal `want` (called `of`).
fn same(what: &str, t: &TensorType, of: &str, want: &TensorType) -> Result<(), String> {
    if t != want {
        return Err(format!("{what} {t} must have the type of {of}, {want}"));
    }
    Ok(())
}

/// Checks that non-empty shift runs cover exactly `cin` channels with no empty run.
fn check_runs(runs: &[(i64, usize)], cin: usize) -> Result<(), String> {
    if runs.is_empty() {
        return Ok(());
    }
    if runs.iter().any(|r| r.1 == 0) {
        return Err("shift runs must not be empty".into());
    }
    let covered = runs.iter().try_fold(0usize, |acc, r| acc.checked_add(r.1));
    if covered != Some(cin) {
        let n = covered.map_or("too many".to_string(), |c| c.to_string());
        return Err(format!(
            "shift runs cover {n} channels; the input has {cin}"
        ));
    }
    Ok(())
}

/// The forward conv of `a` applied to `x` and `w`, and its result type.
fn forward_conv(a: &ConvGradAttrs, x: &TensorType, w: &TensorType) -> R {
    if !a.shifts.is_empty() {
        if a.transposed {
            return Err("a transposed convolution takes no input shifts".into());
        }
        check_runs(&a.shifts, x.shape[1])?;
    }
    if a.transposed {
        conv_transpose3d(&a.conv, &[x, w])
    } else {
        conv3d(&a.conv, &[x, w])
    }
}

/// `(dy, w)`: the forward input's type `[N, I, input..]`, after checking that the forward conv
/// maps it to `dy`'s type.
fn conv_backward_data(a: &ConvGradAttrs, dy: &TensorType, w: &TensorType) -> R {
    volume("dy", dy)?;
    float("weight", w)?;
    positive("input", &a.input)?;
    if w.rank() != 5 {
        return Err(format!("weight must have rank 5, got {w}"));
    }
    let cin = if a.transposed { w.shape[0] } else { w.shape[1] };
    let mut x = vec![dy.shape[0], cin];
    x.extend_from_slice(&a.input);
    let x = TensorType::f32(x);
    let y = forward_conv(a, &x, w)?;
    same("dy", dy, "the forward result", &y)?;
    Ok(x)
}

/// `(x, dy)`: the forward weight's type, after checking that `input` is `x`'s extent and that the
/// forward conv maps `x` to `dy`'s type.
fn conv_backward_weight(a: &ConvGradAttrs, x: &TensorType, dy: &TensorType) -> R {
    volume("input", x)?;
    volume("dy", dy)?;
    if x.shape[2..] != a.input {
        return Err(format!("input extent {:?} does not match x {x}", a.input));
    }
    let (cin, cout) = (x.shape[1], dy.shape[1]);
    let mut w = if a.transposed {
        vec![cin, cout]
    } else {
        vec![cout, cin]
    };
    w.extend_from_slice(&a.conv.kernel);
    let w = TensorType::f32(w);
    let y = forward_conv(a, x, &w)?;
    same("dy", dy, "the forward result", &y)?;
    Ok(w)
}

fn select(axis: usize, ranges: &[(usize, usize)], x: &TensorType) -> R {
    if axis >= x.rank() {
        return Err(format!("axis {axis} is out of range for {x}"));
    }
    if ranges.is_empty() {
        return Err("select needs at least one range".into());
    }
    let mut prev_end = 0;
    let mut n = 0usize;
    for (i, &(start, end)) in ranges.iter().enumerate() {
        if start >= end {
            return Err(format!("range {i} [{start}, {end}) is empty"));
        }
        if i > 0 && start < prev_end {
            return Err(format!(
                "range {i} [{start}, {end}) overlaps or precedes the previous one"
            ));
        }
        if end > x.shape[axis] {
            return Err(format!(
                "range {i} [{start}, {end}) exceeds axis {axis} of {x}"
            ));
        }
        prev_end = end;
        n += end - start;
    }
    let mut s = x.shape.clone();
    s[axis] = n;
    Ok(TensorType::new(x.dtype, s))
}

fn fused_conv3d(a: &FusedConvAttrs, xs: &[&TensorType]) -> R {
    let (x, w) = (xs[0], xs[1]);
    volume("input", x)?;
    float("weight", w)?;
    let cin = x.shape[1];
    let (kidx_at, bias_at, gamma_at) = a.operand_slots();
    // The equivalent dense weight type, so the plain conv rules apply unchanged.
    let dense_w = match a.sparse_out {
        None => w.clone(),
        Some(cout) => {
            if w.rank() != 4 || w.shape[1..] != a.conv.kernel {
                return Err(format!(
                    "packed weight {w} must be [n, {}, {}, {}]",
                    a.conv.kernel[0], a.conv.kernel[1], a.conv.kernel[2]
                ));
            }
            let k = xs[kidx_at.expect("sparse has an index operand")];
            if k.dtype != DType::I32 || k.shape != [w.shape[0], 2] {
                return Err(format!("kernel index {k} must be i32[{}, 2]", w.shape[0]));
            }
            if cout == 0 {
                return Err("sparse_out must be at least 1".into());
            }
            let (d0, d1) = if a.transposed {
                (cin, cout)
            } else {
                (cout, cin)
            };
            let mut s = vec![d0, d1];
            s.extend_from_slice(&a.conv.kernel);
            TensorType::f32(s)
        }
    };
    let mut plain = vec![x, &dense_w];
    if let Some(b) = bias_at {
        plain.push(xs[b]);
    }
    let out = if a.transposed {
        if !a.shifts.is_empty() {
            return Err("a transposed convolution takes no input shifts".into());
        }
        conv_transpose3d(&a.conv, &plain)?
    } else {
        conv3d(&a.conv, &plain)?
    };
    check_runs(&a.shifts, cin)?;
    if let Some(eps) = a.norm_eps {
        let g = gamma_at.expect("norm has gamma and beta");
        instance_norm(eps, &[&out, xs[g], xs[g + 1]])?;
    }
    if let Some(s) = a.slope {
        if !s.is_finite() {
            return Err(format!("slope {s} is not finite"));
        }
    }
    Ok(out)
}

fn float(what: &str, t: &TensorType) -> Result<(), String> {
    if t.dtype != DType::F32 {
        return Err(format!("{what} must be f32, got {t}"));
    }
    Ok(())
}

fn min_rank(what: &str, t: &TensorType, r: usize) -> Result<(), String> {
    if t.rank() < r {
        return Err(format!("{what} must have rank >= {r}, got {t}"));
    }
    Ok(())
}

/// An activation: f32, rank 5 `[N, C, D, H, W]`, no zero extent.
fn volume(what: &str, t: &TensorType) -> Result<(), String> {
    float(what, t)?;
    if t.rank() != 5 {
        return Err(format!("{what} must be [N, C, D, H, W], got {t}"));
    }
    if t.shape.contains(&0) {
        return Err(format!("{what} has an empty extent: {t}"));
    }
    Ok(())
}

fn positive(what: &str, v: &[usize; 3]) -> Result<(), String> {
    if v.contains(&0) {
        return Err(format!("{what} {v:?} must be positive on every axis"));
    }
    Ok(())
}

/// Checks `w` is `[a, b, kd, kh, kw]` with `w[in_axis] == cin`, an optional bias of
/// `[cout]`, and returns `cout`.
fn conv_weights(a: &ConvAttrs, xs: &[&TensorType], in_axis: usize) -> Result<usize, String> {
    let (x, w) = (xs[0], xs[1]);
    volume("input", x)?;
    float("weight", w)?;
    positive("kernel", &a.kernel)?;
    positive("stride", &a.stride)?;
    if w.rank() != 5 {
        return Err(format!("weight must have rank 5, got {w}"));
    }
    if w.shape[2..] != a.kernel {
        return Err(format!("weight {w} does not match kernel {:?}", a.kernel));
    }
    let cin = x.shape[1];
    if w.shape[in_axis] != cin {
        return Err(format!(
            "weight {w} expects {} input channels (dim {in_axis}), input {x} has {cin}",
            w.shape[in_axis]
        ));
    }
    let cout = w.shape[1 - in_axis];
    if cout == 0 {
        return Err(format!("weight {w} has no output channels"));
    }
    if let Some(b) = xs.get(2) {
        float("bias", b)?;
        if b.shape != [cout] {
            return Err(format!("bias {b} must be [{cout}]"));
        }
    }
    Ok(cout)
}

fn conv3d(a: &ConvAttrs, xs: &[&TensorType]) -> R {
    let cout = conv_weights(a, xs, 1)?;
    let x = xs[0];
    let mut out = vec![x.shape[0], cout];
    for ax in 0..3 {
        let padded = a.padding[ax]
            .checked_mul(2)
            .and_then(|p| p.checked_add(x.shape[2 + ax]))
            .ok_or_else(|| format!("axis {ax}: padding {} overflows", a.padding[ax]))?;
        if padded < a.kernel[ax] {
            return Err(format!(
                "axis {ax}: padded extent {padded} is smaller than the kernel {}",
                a.kernel[ax]
            ));
        }
        out.push((padded - a.kernel[ax]) / a.stride[ax] + 1);
    }
    Ok(TensorType::f32(out))
}

fn conv_transpose3d(a: &ConvAttrs, xs: &[&TensorType]) -> R {
    let cout = conv_weights(a, xs, 0)?;
    let x = xs[0];
    let mut out = vec![x.shape[0], cout];
    for ax in 0..3 {
        let full = (x.shape[2 + ax] - 1)
            .checked_mul(a.stride[ax])
            .and_then(|f| f.checked_add(a.kernel[ax]))
            .ok_or_else(|| format!("axis {ax}: output extent overflows"))?;
        if full / 2 < a.padding[ax] || full - a.padding[ax] <= a.padding[ax] {
            return Err(format!(
                "axis {ax}: padding {} leaves no output",
                a.padding[ax]
            ));
        }
        out.push(full - a.padding[ax] - a.padding[ax]);
    }
    Ok(TensorType::f32(out))
}

fn depth_shift(a: &ShiftAttrs, x: &TensorType) -> R {
    volume("input", x)?;
    if a.groups == 0 {
        return Err("depth_shift needs at least one group".into());
    }
    Ok(x.clone())
}

fn instance_norm(eps: f32, xs: &[&TensorType]) -> R {
    let x = xs[0];
    volume("input", x)?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(format!("eps {eps} must be positive and finite"));
    }
    let c = x.shape[1];
    for (what, t) in [("gamma", xs[1]), ("beta", xs[2])] {
        float(what, t)?;
        if t.shape != [c] {
            return Err(format!("{what} {t} must be [{c}]"));
        }
    }
    Ok(x.clone())
}

fn max_pool3d(a: &PoolAttrs, x: &TensorType) -> R {
    volume("input", x)?;
    positive("kernel", &a.kernel)?;
    positive("stride", &a.stride)?;
    let mut out = x.shape[..2].to_vec();
    for ax in 0..3 {
        let n = x.shape[2 + ax];
        if n < a.kernel[ax] {
            return Err(format!(
                "axis {ax}: extent {n} is smaller than the pool kernel {}",
                a.kernel[ax]
            ));
        }
        out.push((n - a.kernel[ax]) / a.stride[ax] + 1);
    }
    Ok(TensorType::f32(out))
}

fn concat(xs: &[&TensorType]) -> R {
    let first = xs[0];
    float("operand 0", first)?;
    min_rank("operand 0", first, 2)?;
    let mut c = 0;
    for (i, x) in xs.iter().enumerate() {
        float(&format!("operand {i}"), x)?;
        let same_rest = x.rank() == first.rank()
            && x.shape[0] == first.shape[0]
            && x.shape[2..] == first.shape[2..];
        if !same_rest {
            return Err(format!(
                "operand {i} {x} does not match operand 0 {first} outside the channel axis"
            ));
        }
        c = x.shape[1]
            .checked_add(c)
            .ok_or_else(|| "channel count overflows".to_string())?;
    }
    let mut s = first.shape.clone();
    s[1] = c;
    Ok(TensorType::f32(s))
}
