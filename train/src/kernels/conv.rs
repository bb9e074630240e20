//! The public convolution kernels: Conv3d and ConvTranspose3d forward, their input (data)
//! gradients and their weight gradients, all with an optional kernel-liveness mask.
//!
//! Each is a thin, validated mapping onto a primitive of [`super::direct`]:
//!
//! | kernel                              | primitive | narrow `Y` / wide `X`           |
//! |-------------------------------------|-----------|---------------------------------|
//! | conv forward                        | gather    | output / input                  |
//! | conv backward data, stride 1        | gather    | dx / dy, flipped weights        |
//! | conv backward data, otherwise       | scatter   | dy / dx                         |
//! | conv backward weight                | wgrad     | dy / x                          |
//! | transposed forward                  | scatter   | x / output (weights as `[I, O]`) |
//! | transposed backward data            | gather    | dx / dy                         |
//! | transposed backward weight          | wgrad     | x / dy                          |
//!
//! `live` is indexed like the weight's first two dims (`[O, I]` for a conv, `[I, O]` for a
//! transposed conv); a dead kernel costs nothing in any direction and its gradient is written 0
//! (its weights are ignored, so they need not be zero). All extents must be positive.

use e2enc_ir::ConvAttrs;

use super::direct::{gather, scatter, wgrad, Geom};
use super::simd::use_fma;
use super::{check_len, kerr, numel, Shape5};
use crate::TrainError;

fn check_attrs(op: &'static str, a: &ConvAttrs, ws: Shape5) -> Result<(), TrainError> {
    if a.kernel.contains(&0) || a.stride.contains(&0) {
        return Err(kerr(
            op,
            format!(
                "kernel {:?} and stride {:?} must be positive",
                a.kernel, a.stride
            ),
        ));
    }
    if ws[2..] != a.kernel {
        return Err(kerr(
            op,
            format!("weight {ws:?} does not match kernel {:?}", a.kernel),
        ));
    }
    Ok(())
}

fn check_positive(op: &'static str, what: &str, s: &[usize]) -> Result<(), TrainError> {
    if s.contains(&0) {
        return Err(kerr(op, format!("{what} {s:?} has an empty dimension")));
    }
    Ok(())
}

fn spatial(s: Shape5) -> [usize; 3] {
    [s[2], s[3], s[4]]
}

/// The output shape of `Conv3d` on `x` of shape `xs` with weights `ws` (`[O, I, k..]`).
pub fn conv3d_output_shape(xs: Shape5, ws: Shape5, a: &ConvAttrs) -> Result<Shape5, TrainError> {
    const OP: &str = "conv3d";
    check_attrs(OP, a, ws)?;
    check_positive(OP, "input", &xs)?;
    check_positive(OP, "weight", &ws)?;
    if ws[1] != xs[1] {
        return Err(kerr(
            OP,
            format!(
                "weight {ws:?} expects {} input channels, input {xs:?} has {}",
                ws[1], xs[1]
            ),
        ));
    }
    let mut out = [xs[0], ws[0], 0, 0, 0];
    for ax in 0..3 {
        let padded = a.padding[ax]
            .checked_mul(2)
            .and_then(|p| p.checked_add(xs[2 + ax]))
            .filter(|&p| p >= a.kernel[ax])
            .ok_or_else(|| {
                kerr(
                    OP,
                    format!(
                        "axis {ax}: input {xs:?} with padding {:?} is smaller than the kernel {:?}",
                        a.padding, a.kernel
                    ),
                )
            })?;
        out[2 + ax] = (padded - a.kernel[ax]) / a.stride[ax] + 1;
    }
    // The padded, phased copy of the input has rows of at most `W + 2p + s` elements.
    let row = (xs[4] + 2 * a.padding[2]).checked_add(a.stride[2]);
    padded_fits(OP, [xs[0], xs[1], xs[2], xs[3], row.unwrap_or(usize::MAX)])?;
    Ok(out)
}

/// Checks that a padded, phased copy of shape `s` can be indexed (its size fits a `usize`).
fn padded_fits(op: &'static str, s: Shape5) -> Result<(), TrainError> {
    numel(op, &s).map(|_| ()).map_err(|_| {
        kerr(
            op,
            format!("padding and stride make the padded input {s:?} too large"),
        )
    })
}

/// The output shape of `ConvTranspose3d` on `x` of shape `xs` with weights `ws` (`[I, O, k..]`):
/// extent `(in - 1)·s - 2p + k`.
pub fn conv_transpose3d_output_shape(
    xs: Shape5,
    ws: Shape5,
    a: &ConvAttrs,
) -> Result<Shape5, TrainError> {
    const OP: &str = "conv_transpose3d";
    check_attrs(OP, a, ws)?;
    check_positive(OP, "input", &xs)?;
    check_positive(OP, "weight", &ws)?;
    if ws[0] != xs[1] {
        return Err(kerr(
            OP,
            format!(
                "weight {ws:?} expects {} input channels, input {xs:?} has {}",
                ws[0], xs[1]
            ),
        ));
    }
    let mut out = [xs[0], ws[1], 0, 0, 0];
    for ax in 0..3 {
        let full = (xs[2 + ax] - 1)
            .checked_mul(a.stride[ax])
            .and_then(|f| f.checked_add(a.kernel[ax]))
            .ok_or_else(|| kerr(OP, format!("axis {ax}: output extent overflows")))?;
        let pad2 = a.padding[ax].saturating_mul(2);
        if full <= pad2 {
            return Err(kerr(
                OP,
                format!("axis {ax}: padding {} leaves no output", a.padding[ax]),
            ));
        }
        out[2 + ax] = full - pad2;
    }
    // Backward kernels pad the output: rows of at most `(in - 1)·s + k + s` elements.
    let row = (xs[4] - 1)
        .checked_mul(a.stride[2])
        .and_then(|f| f.checked_add(a.kernel[2]))
        .and_then(|f| f.checked_add(a.stride[2]));
    padded_fits(
        OP,
        [out[0], out[1], out[2], out[3], row.unwrap_or(usize::MAX)],
    )?;
    Ok(out)
}

fn check_live(op: &'static str, live: Option<&[bool]>, ws: Shape5) -> Result<(), TrainError> {
    match live {
        Some(l) if l.len() != ws[0] * ws[1] => Err(kerr(
            op,
            format!(
                "live mask has {} entries, weight {ws:?} needs {}",
                l.len(),
                ws[0] * ws[1]
            ),
        )),
        _ => Ok(()),
    }
}

fn check_bias(op: &'static str, b: Option<&[f32]>, c: usize) -> Result<(), TrainError> {
    match b {
        Some(b) if b.len() != c => Err(kerr(
            op,
            format!("bias has {} elements, expected {c}", b.len()),
        )),
        _ => Ok(()),
    }
}

fn check_same(op: &'static str, what: &str, got: Shape5, want: Shape5) -> Result<(), TrainError> {
    if got != want {
        return Err(kerr(
            op,
            format!("{what} has shape {got:?}, expected {want:?}"),
        ));
    }
    Ok(())
}

/// `Conv3d (x, w[O, I, k..], b[O]?)` into `y` (shape [`conv3d_output_shape`]).
#[allow(clippy::too_many_arguments)]
pub fn conv3d(
    x: &[f32],
    xs: Shape5,
    w: &[f32],
    ws: Shape5,
    b: Option<&[f32]>,
    a: &ConvAttrs,
    live: Option<&[bool]>,
    y: &mut [f32],
    threads: usize,
) -> Result<(), TrainError> {
    const OP: &str = "conv3d";
    let ys = conv3d_output_shape(xs, ws, a)?;
    check_len(OP, "x", x.len(), &xs)?;
    check_len(OP, "w", w.len(), &ws)?;
    check_len(OP, "y", y.len(), &ys)?;
    check_bias(OP, b, ws[0])?;
    check_live(OP, live, ws)?;
    let g = Geom {
        n: xs[0],
        a: ws[0],
        b: xs[1],
        xd: spatial(xs),
        yd: spatial(ys),
        k: a.kernel,
        s: a.stride,
        p: a.padding,
    };
    gather(&g, x, w, b, live, y, threads, use_fma());
    Ok(())
}

/// `ConvTranspose3d (x, w[I, O, k..], b[O]?)` into `y` (shape
/// [`conv_transpose3d_output_shape`]); `live` is over `[I, O]`.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose3d(
    x: &[f32],
    xs: Shape5,
    w: &[f32],
    ws: Shape5,
    b: Option<&[f32]>,
    a: &ConvAttrs,
    live: Option<&[bool]>,
    y: &mut [f32],
    threads: usize,
) -> Result<(), TrainError> {
    const OP: &str = "conv_transpose3d";
    let ys = conv_transpose3d_output_shape(xs, ws, a)?;
    check_len(OP, "x", x.len(), &xs)?;
    check_len(OP, "w", w.len(), &ws)?;
    check_len(OP, "y", y.len(), &ys)?;
    check_bias(OP, b, ws[1])?;
    check_live(OP, live, ws)?;
    let g = Geom {
        n: xs[0],
        a: ws[0],
        b: ws[1],
        xd: spatial(ys),
        yd: spatial(xs),
        k: a.kernel,
        s: a.stride,
        p: a.padding,
    };
    scatter(&g, x, w, live, y, threads, use_fma());
    if let Some(b) = b {
        let plane: usize = spatial(ys).iter().product();
        for (p, chunk) in y.chunks_exact_mut(plane).enumerate() {
            let bv = b[p % ys[1]];
            chunk.iter_mut().for_each(|v| *v += bv);
        }
    }
    Ok(())
}

/// `ConvBackwardData (dy, w)`: the input gradient `dx` of shape `[N, I, input]` of a conv
/// (`transposed = false`, `w [O, I, k..]`) or transposed conv (`w [I, O, k..]`) whose forward
/// input had spatial extent `input` and whose output gradient is `dy`.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_data(
    dy: &[f32],
    dys: Shape5,
    w: &[f32],
    ws: Shape5,
    a: &ConvAttrs,
    transposed: bool,
    input: [usize; 3],
    live: Option<&[bool]>,
    dx: &mut [f32],
    threads: usize,
) -> Result<(), TrainError> {
    const OP: &str = "conv_backward_data";
    let cin = if transposed { ws[0] } else { ws[1] };
    let dxs = [dys[0], cin, input[0], input[1], input[2]];
    let want = if transposed {
        conv_transpose3d_output_shape(dxs, ws, a)?
    } else {
        conv3d_output_shape(dxs, ws, a)?
    };
    check_same(OP, "dy", dys, want)?;
    check_len(OP, "dy", dy.len(), &dys)?;
    check_len(OP, "w", w.len(), &ws)?;
    check_len(OP, "dx", dx.len(), &dxs)?;
    check_live(OP, live, ws)?;
    if transposed {
        let g = Geom {
            n: dys[0],
            a: ws[0],
            b: ws[1],
            xd: spatial(dys),
            yd: input,
            k: a.kernel,
            s: a.stride,
            p: a.padding,
        };
        gather(&g, dy, w, None, live, dx, threads, use_fma());
        return Ok(());
    }
    let (o, i) = (ws[0], ws[1]);
    let flip = a.stride == [1, 1, 1] && (0..3).all(|ax| a.padding[ax] < a.kernel[ax]);
    if flip {
        // Stride 1: the adjoint is a cross-correlation of dy with the flipped, transposed
        // kernels and padding k - 1 - p (the faster gather path).
        let [kd, kh, kw] = a.kernel;
        let ksz = kd * kh * kw;
        let mut wf = vec![0f32; w.len()];
        for oc in 0..o {
            for ic in 0..i {
                let src = &w[(oc * i + ic) * ksz..][..ksz];
                let dst = &mut wf[(ic * o + oc) * ksz..][..ksz];
                for (t, v) in dst.iter_mut().enumerate() {
                    *v = src[ksz - 1 - t];
                }
            }
        }
        let lf: Option<Vec<bool>> =
            live.map(|l| (0..i * o).map(|t| l[(t % o) * i + t / o]).collect());
        let pf = [0, 1, 2].map(|ax| a.kernel[ax] - 1 - a.padding[ax]);
        let g = Geom {
            n: dys[0],
            a: i,
            b: o,
            xd: spatial(dys),
            yd: input,
            k: a.kernel,
            s: [1, 1, 1],
            p: pf,
        };
        gather(&g, dy, &wf, None, lf.as_deref(), dx, threads, use_fma());
    } else {
        let g = Geom {
            n: dys[0],
            a: o,
            b: i,
            xd: input,
            yd: spatial(dys),
            k: a.kernel,
            s: a.stride,
            p: a.padding,
        };
        scatter(&g, dy, w, live, dx, threads, use_fma());
    }
    Ok(())
}

/// `ConvBackwardWeight (x, dy)`: the weight gradient of a conv (`dw [O, I, k..]`, with
/// `O = dy channels`, `I = x channels`) or transposed conv (`dw [I, O, k..]`), where `x` is the
/// forward input and `dy` the output gradient. Dead kernels (per `live`) get 0.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_weight(
    x: &[f32],
    xs: Shape5,
    dy: &[f32],
    dys: Shape5,
    a: &ConvAttrs,
    transposed: bool,
    live: Option<&[bool]>,
    dw: &mut [f32],
    threads: usize,
) -> Result<(), TrainError> {
    const OP: &str = "conv_backward_weight";
    let [kd, kh, kw] = a.kernel;
    let ws = if transposed {
        [xs[1], dys[1], kd, kh, kw]
    } else {
        [dys[1], xs[1], kd, kh, kw]
    };
    let want = if transposed {
        conv_transpose3d_output_shape(xs, ws, a)?
    } else {
        conv3d_output_shape(xs, ws, a)?
    };
    check_same(OP, "dy", dys, want)?;
    check_len(OP, "x", x.len(), &xs)?;
    check_len(OP, "dy", dy.len(), &dys)?;
    check_len(OP, "dw", dw.len(), &ws)?;
    check_live(OP, live, ws)?;
    if transposed {
        let g = Geom {
            n: xs[0],
            a: xs[1],
            b: dys[1],
            xd: spatial(dys),
            yd: spatial(xs),
            k: a.kernel,
            s: a.stride,
            p: a.padding,
        };
        wgrad(&g, x, dy, live, dw, threads, use_fma());
    } else {
        let g = Geom {
            n: xs[0],
            a: dys[1],
            b: xs[1],
            xd: spatial(xs),
            yd: spatial(dys),
            k: a.kernel,
            s: a.stride,
            p: a.padding,
        };
        wgrad(&g, dy, x, live, dw, threads, use_fma());
    }
    Ok(())
}
