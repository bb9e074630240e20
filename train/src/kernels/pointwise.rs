//! Memory-bound kernels: leaky ReLU and its backward, add, channel concat and selection (and
//! the selection's backward), the restricted depth shift and its backward.
//!
//! These run on the calling thread: each touches every element once, so a second thread buys
//! little on two cores. Channel ranges are half-open `(start, end)` along axis 1.

use e2enc_ir::shift_runs;

use super::{check_len, kerr, Shape5};
use crate::TrainError;

fn check_pair(op: &'static str, a: usize, b: usize) -> Result<(), TrainError> {
    if a != b {
        return Err(kerr(op, format!("operands have {a} and {b} elements")));
    }
    Ok(())
}

/// `LeakyRelu{slope} (x)`: `x` where `x >= 0`, else `slope·x` (NaN stays NaN).
pub fn leaky_relu(x: &[f32], slope: f32, y: &mut [f32]) -> Result<(), TrainError> {
    check_pair("leaky_relu", x.len(), y.len())?;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = if v >= 0.0 { v } else { slope * v };
    }
    Ok(())
}

/// `LeakyReluBackward{slope} (x, dy)`: `dy` where `x > 0`, else `slope·dy` (PyTorch: the slope at 0).
pub fn leaky_relu_backward(
    x: &[f32],
    dy: &[f32],
    slope: f32,
    dx: &mut [f32],
) -> Result<(), TrainError> {
    check_pair("leaky_relu_backward", x.len(), dy.len())?;
    check_pair("leaky_relu_backward", x.len(), dx.len())?;
    for ((o, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
        *o = if v > 0.0 { d } else { slope * d };
    }
    Ok(())
}

/// `Add (a, b)`: the elementwise sum.
pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) -> Result<(), TrainError> {
    check_pair("add", a.len(), b.len())?;
    check_pair("add", a.len(), y.len())?;
    for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
        *o = p + q;
    }
    Ok(())
}

/// `Concat (x0, x1, ...)` along channels: every part `[N, Ci, D, H, W]` with the same N, D, H, W;
/// `y` holds `[N, ΣCi, D, H, W]`.
pub fn concat(parts: &[(&[f32], Shape5)], y: &mut [f32]) -> Result<(), TrainError> {
    const OP: &str = "concat";
    let Some(&(_, first)) = parts.first() else {
        return Err(kerr(OP, "needs at least one operand"));
    };
    let mut c = 0usize;
    for (i, &(v, s)) in parts.iter().enumerate() {
        if s[0] != first[0] || s[2..] != first[2..] {
            return Err(kerr(
                OP,
                format!(
                    "operand {i} {s:?} does not match operand 0 {first:?} outside the channels"
                ),
            ));
        }
        check_len(OP, &format!("operand {i}"), v.len(), &s)?;
        c = c
            .checked_add(s[1])
            .ok_or_else(|| kerr(OP, "channel count overflows"))?;
    }
    let ys = [first[0], c, first[2], first[3], first[4]];
    check_len(OP, "y", y.len(), &ys)?;
    let inner: usize = first[2..].iter().product();
    let mut at = 0;
    for n in 0..first[0] {
        for &(v, s) in parts {
            let per = s[1] * inner;
            y[at..at + per].copy_from_slice(&v[n * per..][..per]);
            at += per;
        }
    }
    Ok(())
}

/// Validates channel `ranges` against `c` channels and returns the selected count.
fn selected(op: &'static str, ranges: &[(usize, usize)], c: usize) -> Result<usize, TrainError> {
    let mut total = 0;
    for &(s, e) in ranges {
        if s >= e || e > c {
            return Err(kerr(
                op,
                format!("range {s}..{e} is empty or outside {c} channels"),
            ));
        }
        total += e - s;
    }
    Ok(total)
}

/// `SelectChannels{axis: 1, ranges} (x)`: the channels of `ranges`, in order.
pub fn select_channels(
    x: &[f32],
    xs: Shape5,
    ranges: &[(usize, usize)],
    y: &mut [f32],
) -> Result<(), TrainError> {
    const OP: &str = "select_channels";
    check_len(OP, "x", x.len(), &xs)?;
    let cy = selected(OP, ranges, xs[1])?;
    check_len(OP, "y", y.len(), &[xs[0], cy, xs[2], xs[3], xs[4]])?;
    let inner: usize = xs[2..].iter().product();
    let mut at = 0;
    for n in 0..xs[0] {
        for &(s, e) in ranges {
            let len = (e - s) * inner;
            y[at..at + len].copy_from_slice(&x[(n * xs[1] + s) * inner..][..len]);
            at += len;
        }
    }
    Ok(())
}

/// The adjoint of [`select_channels`]: `dx` (shape `xs`) is `dy`'s channels put back at
/// `ranges`, zero elsewhere (overlapping ranges add).
pub fn select_channels_backward(
    dy: &[f32],
    xs: Shape5,
    ranges: &[(usize, usize)],
    dx: &mut [f32],
) -> Result<(), TrainError> {
    const OP: &str = "select_channels_backward";
    check_len(OP, "dx", dx.len(), &xs)?;
    let cy = selected(OP, ranges, xs[1])?;
    check_len(OP, "dy", dy.len(), &[xs[0], cy, xs[2], xs[3], xs[4]])?;
    let inner: usize = xs[2..].iter().product();
    dx.fill(0.0);
    let mut at = 0;
    for n in 0..xs[0] {
        for &(s, e) in ranges {
            let len = (e - s) * inner;
            let dst = &mut dx[(n * xs[1] + s) * inner..][..len];
            for (o, &v) in dst.iter_mut().zip(&dy[at..at + len]) {
                *o += v;
            }
            at += len;
        }
    }
    Ok(())
}

/// Moves whole `H·W` slices along depth: `out[n, c, d] = src[n, c, d - sign·shift(c)]`, zero
/// outside.
fn shift(
    op: &'static str,
    src: &[f32],
    s: Shape5,
    groups: usize,
    sign: i64,
    out: &mut [f32],
) -> Result<(), TrainError> {
    if groups == 0 {
        return Err(kerr(op, "needs at least one group"));
    }
    check_len(op, "input", src.len(), &s)?;
    check_len(op, "output", out.len(), &s)?;
    let [n, c, d, h, w] = s;
    let plane = h * w;
    let shifts: Vec<i64> = shift_runs(groups, c)
        .into_iter()
        .flat_map(|(v, k)| std::iter::repeat_n(v, k))
        .collect();
    for ni in 0..n {
        for (ci, &sh) in shifts.iter().enumerate() {
            let base = (ni * c + ci) * d;
            for di in 0..d {
                let to = &mut out[(base + di) * plane..][..plane];
                let from = di as i128 - i128::from(sign) * i128::from(sh);
                if (0..d as i128).contains(&from) {
                    to.copy_from_slice(&src[(base + from as usize) * plane..][..plane]);
                } else {
                    to.fill(0.0);
                }
            }
        }
    }
    Ok(())
}

/// `DepthShift{groups} (x)`: blocks of `ceil(C / groups)` channels, block `g` shifted by
/// `s = g - groups/2`: `y[c, d] = x[c, d - s]`, zero fill.
pub fn depth_shift(x: &[f32], xs: Shape5, groups: usize, y: &mut [f32]) -> Result<(), TrainError> {
    shift("depth_shift", x, xs, groups, 1, y)
}

/// `DepthShiftBackward{groups} (dy)`: `dx[c, d] = dy[c, d + s(c)]`, zero when out of range.
pub fn depth_shift_backward(
    dy: &[f32],
    dys: Shape5,
    groups: usize,
    dx: &mut [f32],
) -> Result<(), TrainError> {
    shift("depth_shift_backward", dy, dys, groups, -1, dx)
}
