//! Max pooling (no padding) and its backward.
//!
//! The window's argument is chosen exactly as the interpreter chooses its value: scanning the
//! window in (d, h, w) order, a value replaces the current best when it is larger or NaN, so the
//! first maximum wins ties (a NaN window selects its last NaN). The backward adds `dy` to that
//! position; overlapping windows accumulate.

use e2enc_ir::PoolAttrs;

use super::{check_len, kerr, Shape5};
use crate::TrainError;

/// The output shape of `MaxPool3d` on `xs`.
pub fn max_pool3d_output_shape(xs: Shape5, a: &PoolAttrs) -> Result<Shape5, TrainError> {
    const OP: &str = "max_pool3d";
    if a.kernel.contains(&0) || a.stride.contains(&0) {
        return Err(kerr(
            OP,
            format!(
                "kernel {:?} and stride {:?} must be positive",
                a.kernel, a.stride
            ),
        ));
    }
    let mut out = xs;
    for ax in 0..3 {
        if xs[2 + ax] < a.kernel[ax] {
            return Err(kerr(
                OP,
                format!(
                    "axis {ax}: extent {} is smaller than the kernel {}",
                    xs[2 + ax],
                    a.kernel[ax]
                ),
            ));
        }
        out[2 + ax] = (xs[2 + ax] - a.kernel[ax]) / a.stride[ax] + 1;
    }
    Ok(out)
}

/// Calls `f(output index, argmax input index, max)` for every window.
fn windows(x: &[f32], xs: Shape5, ys: Shape5, a: &PoolAttrs, mut f: impl FnMut(usize, usize, f32)) {
    let [_, _, d, h, w] = xs;
    let [n, c, od, oh, ow] = ys;
    let ([kd, kh, kw], [sd, sh, sw]) = (a.kernel, a.stride);
    let mut at = 0;
    for p in 0..n * c {
        for z in 0..od {
            for y in 0..oh {
                for q in 0..ow {
                    let first = ((p * d + z * sd) * h + y * sh) * w + q * sw;
                    let (mut best, mut m) = (first, f32::NEG_INFINITY);
                    for ka in 0..kd {
                        for kb in 0..kh {
                            let row = first + (ka * h + kb) * w;
                            for (j, &v) in x[row..row + kw].iter().enumerate() {
                                if v > m || v.is_nan() {
                                    m = v;
                                    best = row + j;
                                }
                            }
                        }
                    }
                    f(at, best, m);
                    at += 1;
                }
            }
        }
    }
}

/// `MaxPool3d (x)` into `y` (shape [`max_pool3d_output_shape`]).
pub fn max_pool3d(x: &[f32], xs: Shape5, a: &PoolAttrs, y: &mut [f32]) -> Result<(), TrainError> {
    let ys = max_pool3d_output_shape(xs, a)?;
    check_len("max_pool3d", "x", x.len(), &xs)?;
    check_len("max_pool3d", "y", y.len(), &ys)?;
    windows(x, xs, ys, a, |o, _, m| y[o] = m);
    Ok(())
}

/// `MaxPoolBackward (x, dy)` → `dx` (shape `xs`): each window's `dy` goes to its first maximum.
pub fn max_pool3d_backward(
    x: &[f32],
    xs: Shape5,
    dy: &[f32],
    a: &PoolAttrs,
    dx: &mut [f32],
) -> Result<(), TrainError> {
    const OP: &str = "max_pool3d_backward";
    let ys = max_pool3d_output_shape(xs, a)?;
    check_len(OP, "x", x.len(), &xs)?;
    check_len(OP, "dy", dy.len(), &ys)?;
    check_len(OP, "dx", dx.len(), &xs)?;
    dx.fill(0.0);
    windows(x, xs, ys, a, |o, i, _| dx[i] += dy[o]);
    Ok(())
}
