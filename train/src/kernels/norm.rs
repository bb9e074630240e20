//! Instance norm forward and backward, its gamma gradient, and the per-channel sum (bias and
//! beta gradients).
//!
//! Statistics are per `(n, c)` plane over `D·H·W` with the biased variance, accumulated in f64
//! (two passes, like the interpreter); the elementwise parts run in f32. With `x̂ = (x - μ)·r`,
//! `r = 1 / sqrt(var + eps)` and `M = D·H·W`, the input gradient of `y = γ·x̂ + β` is
//! `dx = γ·r·(dy - mean(dy) - x̂·mean(dy·x̂))`. Planes are spread over threads; channel sums are
//! computed per channel in a fixed order, so results do not depend on the thread count.

use super::{check_len, kerr, par_planes, Shape5};
use crate::TrainError;

/// `(mean, 1 / sqrt(var + eps))` of one plane, in f64.
fn stats(x: &[f32], eps: f32) -> (f64, f64) {
    let len = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / len;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len;
    (mean, 1.0 / (var + eps as f64).sqrt())
}

fn check_eps(op: &'static str, eps: f32) -> Result<(), TrainError> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(kerr(op, format!("eps {eps} must be positive and finite")));
    }
    Ok(())
}

fn check_channels(op: &'static str, what: &str, v: &[f32], c: usize) -> Result<(), TrainError> {
    if v.len() != c {
        return Err(kerr(
            op,
            format!("{what} has {} elements, expected {c}", v.len()),
        ));
    }
    Ok(())
}

/// `InstanceNorm{eps} (x, gamma, beta)` into `y` (same shape as `x`).
#[allow(clippy::too_many_arguments)]
pub fn instance_norm(
    x: &[f32],
    xs: Shape5,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    threads: usize,
) -> Result<(), TrainError> {
    const OP: &str = "instance_norm";
    check_eps(OP, eps)?;
    check_len(OP, "x", x.len(), &xs)?;
    check_len(OP, "y", y.len(), &xs)?;
    check_channels(OP, "gamma", gamma, xs[1])?;
    check_channels(OP, "beta", beta, xs[1])?;
    let plane: usize = xs[2..].iter().product();
    let cost = vec![1; xs[1]];
    par_planes(
        y,
        xs[1],
        plane,
        &cost,
        xs[0] * plane,
        threads,
        |n, c, out| {
            let src = &x[(n * xs[1] + c) * plane..][..plane];
            let (mean, r) = stats(src, eps);
            let (m, scale, b) = (mean as f32, (r * gamma[c] as f64) as f32, beta[c]);
            for (o, &v) in out.iter_mut().zip(src) {
                *o = (v - m) * scale + b;
            }
        },
    );
    Ok(())
}

/// `InstanceNormBackward{eps} (x, gamma, dy)` → `dx`, `x` being the norm's forward input.
#[allow(clippy::too_many_arguments)]
pub fn instance_norm_backward(
    x: &[f32],
    xs: Shape5,
    gamma: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
    threads: usize,
) -> Result<(), TrainError> {
    const OP: &str = "instance_norm_backward";
    check_eps(OP, eps)?;
    check_len(OP, "x", x.len(), &xs)?;
    check_len(OP, "dy", dy.len(), &xs)?;
    check_len(OP, "dx", dx.len(), &xs)?;
    check_channels(OP, "gamma", gamma, xs[1])?;
    let plane: usize = xs[2..].iter().product();
    let cost = vec![1; xs[1]];
    par_planes(
        dx,
        xs[1],
        plane,
        &cost,
        xs[0] * plane,
        threads,
        |n, c, out| {
            let at = (n * xs[1] + c) * plane;
            let (src, g) = (&x[at..][..plane], &dy[at..][..plane]);
            let (mean, r) = stats(src, eps);
            let (mut sd, mut sdx) = (0f64, 0f64);
            for (&v, &d) in src.iter().zip(g) {
                sd += d as f64;
                sdx += d as f64 * (v as f64 - mean) * r;
            }
            let len = plane as f64;
            let k = (gamma[c] as f64 * r) as f32;
            let (md, mdx) = ((sd / len) as f32, (sdx / len) as f32);
            let (m, rf) = (mean as f32, r as f32);
            for ((o, &v), &d) in out.iter_mut().zip(src).zip(g) {
                let xh = (v - m) * rf;
                *o = k * (d - md - xh * mdx);
            }
        },
    );
    Ok(())
}

/// `InstanceNormGammaGrad{eps} (x, dy)` → `[C]`: `Σ_{n, d, h, w} dy · x̂`.
pub fn instance_norm_gamma_grad(
    x: &[f32],
    xs: Shape5,
    dy: &[f32],
    eps: f32,
    dgamma: &mut [f32],
    threads: usize,
) -> Result<(), TrainError> {
    const OP: &str = "instance_norm_gamma_grad";
    check_eps(OP, eps)?;
    check_len(OP, "x", x.len(), &xs)?;
    check_len(OP, "dy", dy.len(), &xs)?;
    check_channels(OP, "dgamma", dgamma, xs[1])?;
    let plane: usize = xs[2..].iter().product();
    let c = xs[1];
    let cost = vec![xs[0]; c];
    par_planes(dgamma, c, 1, &cost, plane, threads, |_, ch, out| {
        let mut total = 0f64;
        for n in 0..xs[0] {
            let at = (n * c + ch) * plane;
            let (src, g) = (&x[at..][..plane], &dy[at..][..plane]);
            let (mean, r) = stats(src, eps);
            total += src
                .iter()
                .zip(g)
                .map(|(&v, &d)| d as f64 * (v as f64 - mean) * r)
                .sum::<f64>();
        }
        out[0] = total as f32;
    });
    Ok(())
}

/// `ChannelSum (dy)` → `[C]`: the sum over N, D, H, W (bias and beta gradients).
pub fn channel_sum(dy: &[f32], dys: Shape5, out: &mut [f32]) -> Result<(), TrainError> {
    const OP: &str = "channel_sum";
    check_len(OP, "dy", dy.len(), &dys)?;
    check_channels(OP, "out", out, dys[1])?;
    let plane: usize = dys[2..].iter().product();
    for (ch, o) in out.iter_mut().enumerate() {
        let mut total = 0f64;
        for n in 0..dys[0] {
            total += dy[(n * dys[1] + ch) * plane..][..plane]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>();
        }
        *o = total as f32;
    }
    Ok(())
}
