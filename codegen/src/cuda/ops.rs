//! CUDA kernels of the ops other than convolutions: elementwise ops and copies (one thread per
//! output value), max pooling, softmax and argmax over channels (one thread per voxel), and
//! instance norm as a statistics kernel (one block per `(n, c)`, a tree reduction in shared
//! memory across `__syncthreads`) followed by an elementwise apply.
//!
//! Statistics are sums and sums of squares in double, like the C kernels, so that the mean and
//! the biased variance agree with the interpreter's two-pass f64 values to f32 rounding.

use std::fmt::Write;

use e2enc_ir::PoolAttrs;

use super::text::{at, cf, kernel, per_value, values, THREADS};
use crate::c::{err, expect_operands};
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::layout::View;

fn same_values(ctx: &NodeCtx, a: &View, b: &View) -> Result<(), EmitError> {
    if a.shape != b.shape {
        return Err(err(
            ctx,
            format!("views {:?} and {:?} differ", a.shape, b.shape),
        ));
    }
    Ok(())
}

/// The expression reading value `(n, c, z, y, x)` of `v`.
fn read(v: &View, c: &str, z: &str) -> String {
    format!("A[{}]", at(v, "n", c, z, "y", "x"))
}

/// The statement writing `val` to value `(n, c, z, y, x)` of `v`.
fn write(v: &View, val: &str) -> String {
    format!("A[{}] = {val};\n", at(v, "n", "c", "z", "y", "x"))
}

pub fn leaky_relu(ctx: &NodeCtx, slope: f32) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    same_values(ctx, x, y)?;
    let body = write(
        y,
        &format!("e2_lrelu({}, {})", read(x, "c", "z"), cf(slope)),
    );
    Ok(vec![per_value(ctx, "", y, &body, values(y), "leaky_relu")?])
}

pub fn add(ctx: &NodeCtx) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 2, 0)?;
    let (a, b, y) = (&ctx.inputs[0], &ctx.inputs[1], &ctx.output);
    same_values(ctx, a, y)?;
    same_values(ctx, b, y)?;
    let body = write(y, &format!("{} + {}", read(a, "c", "z"), read(b, "c", "z")));
    Ok(vec![per_value(ctx, "", y, &body, values(y), "add")?])
}

/// `out[c, z] = in[c, z - shift(c)]`, zero outside.
pub fn depth_shift(
    ctx: &NodeCtx,
    consts: &mut Consts,
    groups: usize,
) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    same_values(ctx, x, y)?;
    let shifts: Vec<i32> = e2enc_ir::op::shift_runs(groups, x.shape[1])
        .into_iter()
        .flat_map(|(s, n)| std::iter::repeat_n(s.clamp(-(1 << 30), 1 << 30) as i32, n))
        .collect();
    let sh = consts.push_i32(&shifts);
    let body = format!(
        "const int jz = z - I[{sh} + c];\n{}",
        write(
            y,
            &format!(
                "(jz >= 0 && jz < {d}) ? {} : 0.0f",
                read(x, "c", "jz"),
                d = x.shape[2]
            )
        )
    );
    Ok(vec![per_value(ctx, "", y, &body, 0, "depth_shift")?])
}

pub fn select(
    ctx: &NodeCtx,
    consts: &mut Consts,
    axis: usize,
    ranges: &[(usize, usize)],
) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    if axis != 1 {
        return Err(err(
            ctx,
            format!("only channel selection (axis 1) has a kernel, not axis {axis}"),
        ));
    }
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let map: Vec<i32> = ranges
        .iter()
        .flat_map(|&(a, b)| a..b)
        .map(|c| c as i32)
        .collect();
    let geometry = x.shape[0] == y.shape[0] && x.shape[2..] == y.shape[2..];
    if !geometry || map.len() != y.shape[1] || ranges.iter().any(|r| r.1 > x.shape[1]) {
        return Err(err(ctx, "the ranges do not fit the views"));
    }
    let m = consts.push_i32(&map);
    let body = write(y, &read(x, &format!("I[{m} + c]"), "z"));
    Ok(vec![per_value(ctx, "", y, &body, 0, "select")?])
}

pub fn concat(ctx: &NodeCtx) -> Result<Vec<Kernel>, EmitError> {
    if ctx.inputs.is_empty() || !ctx.consts.is_empty() {
        return Err(err(ctx, "concat takes one or more activations"));
    }
    let y = &ctx.output;
    let mut body = String::new();
    let mut c0 = 0;
    for (i, x) in ctx.inputs.iter().enumerate() {
        if x.shape[0] != y.shape[0] || x.shape[2..] != y.shape[2..] {
            return Err(err(
                ctx,
                "a concat input's geometry differs from the output's",
            ));
        }
        let c1 = c0 + x.shape[1];
        let _ = writeln!(
            body,
            "{}if (c < {c1}) {{ {}}}",
            if i > 0 { "else " } else { "" },
            write(y, &read(x, &format!("c - {c0}"), "z")).trim_end()
        );
        c0 = c1;
    }
    if c0 != y.shape[1] {
        return Err(err(
            ctx,
            format!("inputs hold {c0} channels, the output {}", y.shape[1]),
        ));
    }
    Ok(vec![per_value(ctx, "", y, &body, 0, "concat")?])
}

/// Max over each window, no padding; NaN propagates (the interpreter's rule).
pub fn max_pool(ctx: &NodeCtx, a: &PoolAttrs) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let ([kd, kh, kw], [sd, sh, sw]) = (a.kernel, a.stride);
    if kd * kh * kw == 0 {
        return Err(err(ctx, "an empty pooling window"));
    }
    let first = format!(
        "A[{}]",
        at(
            x,
            "n",
            "c",
            &format!("z * {sd}"),
            &format!("y * {sh}"),
            &format!("x * {sw}")
        )
    );
    let each = format!(
        "A[{}]",
        at(
            x,
            "n",
            "c",
            &format!("z * {sd} + a"),
            &format!("y * {sh} + b"),
            &format!("x * {sw} + q")
        )
    );
    let body = format!(
        "float m = {first};
for (int a = 0; a < {kd}; a++)
    for (int b = 0; b < {kh}; b++)
        for (int q = 0; q < {kw}; q++) {{
            const float v = {each};
            if (v > m || v != v) m = v;
        }}
{}",
        write(y, "m")
    );
    Ok(vec![per_value(ctx, "", y, &body, 0, "max_pool")?])
}

/// `v` with one channel: a one-thread-per-value kernel over it ([`per_value`]) is one thread
/// per voxel, channels looped inside.
fn voxels_of(v: &View) -> View {
    let mut one = v.clone();
    one.shape[1] = 1;
    one
}

/// Softmax over channels, in double like the interpreter.
pub fn softmax(ctx: &NodeCtx) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    same_values(ctx, x, y)?;
    let ch = x.shape[1];
    let vox = voxels_of(y);
    let body = format!(
        "double m = (double){x0};
for (int k = 1; k < {ch}; k++) {{ const double v = (double){xk}; if (v > m) m = v; }}
double s = 0.0;
for (int k = 0; k < {ch}; k++) s += exp((double){xk} - m);
for (int k = 0; k < {ch}; k++) A[{yk}] = (float)(exp((double){xk} - m) / s);
",
        x0 = read(x, "0", "z"),
        xk = read(x, "k", "z"),
        yk = at(y, "n", "k", "z", "y", "x"),
    );
    let flops = values(&vox) * ch as u64 * 3;
    Ok(vec![per_value(ctx, "", &vox, &body, flops, "softmax")?])
}

/// Index of the largest channel, first on ties, NaN larger than any number (first NaN wins);
/// written as the int32 bits of the output view's floats.
pub fn argmax(ctx: &NodeCtx) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let ch = x.shape[1];
    if ch == 0 || y.shape[1] != 1 || x.shape[0] != y.shape[0] || x.shape[2..] != y.shape[2..] {
        return Err(err(ctx, "argmax views do not fit"));
    }
    let vox = voxels_of(y);
    let body = format!(
        "int best = 0; float bv = {x0};
for (int k = 1; k < {ch}; k++) {{
    const float v = {xk};
    if (bv == bv && (v != v || v > bv)) {{ best = k; bv = v; }}
}}
((int *)A)[{y0}] = best;
",
        x0 = read(x, "0", "z"),
        xk = read(x, "k", "z"),
        y0 = at(y, "n", "0", "z", "y", "x"),
    );
    Ok(vec![per_value(ctx, "", &vox, &body, 0, "argmax")?])
}

/// Scratch (f32 slots) of the statistics of `nc` (n, c) pairs: (mean, scale) each.
pub fn norm_scratch(nc: usize) -> usize {
    2 * nc
}

/// Kernel 1 of an instance norm: one block per `(n, c)` of `src` sums the values and their
/// squares (double) with a shared-memory tree across barriers, and stores `mean` and
/// `scale = gamma / sqrt(var + eps)` (biased variance) at scratch slots `2 i`, `2 i + 1`.
pub fn norm_stats(
    ctx: &NodeCtx,
    consts: &mut Consts,
    src: &View,
    eps: f32,
    gamma: &[f32],
) -> Result<Kernel, EmitError> {
    let [n, c, d, h, w] = src.shape;
    if gamma.len() != c {
        return Err(err(
            ctx,
            format!("gamma has {} values for {c} channels", gamma.len()),
        ));
    }
    let g = consts.push_f32(gamma);
    let count = d * h * w;
    let st = ctx.scratch;
    let body = format!(
        "__shared__ double s1[{THREADS}], s2[{THREADS}];
const int i = (int)blockIdx.x, n = i / {c}, c = i % {c};
const int tid = (int)threadIdx.x;
double a = 0.0, b = 0.0;
for (i64 t = tid; t < {count}LL; t += {THREADS}) {{
    const int x = (int)(t % {w}), y = (int)((t / {w}) % {h}), z = (int)(t / {hw});
    const double v = (double){val};
    a += v; b += v * v;
}}
s1[tid] = a; s2[tid] = b;
__syncthreads();
for (int k = {half}; k > 0; k >>= 1) {{
    if (tid < k) {{ s1[tid] += s1[tid + k]; s2[tid] += s2[tid + k]; }}
    __syncthreads();
}}
if (tid == 0) {{
    const double mean = s1[0] / {count}.0;
    double var = s2[0] / {count}.0 - mean * mean;
    if (var < 0.0) var = 0.0;
    A[{st} + 2 * i] = (float)mean;
    A[{st} + 2 * i + 1] = (float)((double)W[{g} + c] / sqrt(var + (double){eps}));
}}
",
        hw = h * w,
        half = THREADS / 2,
        val = read(src, "c", "z"),
        eps = cf(eps),
    );
    Ok(kernel(
        &format!("{}_nstat", ctx.prefix),
        &body,
        super::text::grid_x(ctx, (n * c) as u64)?,
        [THREADS, 1, 1],
        true,
        (n * c * count * 3) as u64,
        format!("{} norm stats", ctx.label),
    ))
}

/// Partial statistics (sum, sum of squares; doubles) written by a producer kernel: `P` per
/// `(n, c)` at `A + at`, pair `(i, p)` at double index `2 (i P + p)`.
pub struct Partials {
    pub at: usize,
    pub per_channel: usize,
    /// Values per `(n, c)`.
    pub count: usize,
}

/// Scratch (f32 slots) of [`Partials`] of `nc` pairs, then their `(mean, scale)` pairs.
pub fn partials_scratch(nc: usize, per_channel: usize) -> usize {
    nc * per_channel * 4 + norm_scratch(nc)
}

/// Kernel 2 of an instance norm whose producer wrote [`Partials`]: one thread per `(n, c)` sums
/// them in order and stores `mean` and `scale = gamma / sqrt(var + eps)` at `stats_at + 2 i`.
#[allow(clippy::too_many_arguments)]
pub fn norm_reduce(
    ctx: &NodeCtx,
    consts: &mut Consts,
    nc: usize,
    channels: usize,
    p: &Partials,
    stats_at: usize,
    eps: f32,
    gamma: &[f32],
) -> Result<Kernel, EmitError> {
    if gamma.len() != channels {
        return Err(err(
            ctx,
            format!("gamma has {} values for {channels} channels", gamma.len()),
        ));
    }
    let g = consts.push_f32(gamma);
    let body = format!(
        "const i64 i = (i64)blockIdx.x * {THREADS} + threadIdx.x;
if (i >= {nc}) return;
const double *pp = (const double *)(A + {at}) + i * {pc} * 2;
double s = 0.0, q = 0.0;
for (int k = 0; k < {pc}; k++) {{ s += pp[2 * k]; q += pp[2 * k + 1]; }}
const double mean = s / {count}.0;
double var = q / {count}.0 - mean * mean;
if (var < 0.0) var = 0.0;
A[{stats_at} + 2 * i] = (float)mean;
A[{stats_at} + 2 * i + 1] = (float)((double)W[{g} + i % {channels}] / sqrt(var + (double){eps}));
",
        at = p.at,
        pc = p.per_channel,
        count = p.count,
        eps = cf(eps),
    );
    Ok(kernel(
        &format!("{}_nred", ctx.prefix),
        &body,
        super::text::grid_x(ctx, (nc as u64).div_ceil(u64::from(THREADS)))?,
        [THREADS, 1, 1],
        false,
        (nc * p.per_channel * 2) as u64,
        format!("{} norm reduce", ctx.label),
    ))
}

/// Kernel 2 (3) of an instance norm: `dst = lrelu((src - mean) * scale + beta)` with the
/// `(mean, scale)` pairs at `stats_at`.
pub fn norm_apply(
    ctx: &NodeCtx,
    consts: &mut Consts,
    src: &View,
    dst: &View,
    stats_at: usize,
    beta: &[f32],
    slope: Option<f32>,
) -> Result<Kernel, EmitError> {
    same_values(ctx, src, dst)?;
    let ch = dst.shape[1];
    let b = consts.push_f32(beta);
    let st = stats_at;
    let mut v = format!(
        "(({} - A[{st} + 2 * (n * {ch} + c)]) * A[{st} + 2 * (n * {ch} + c) + 1] + W[{b} + c])",
        read(src, "c", "z")
    );
    if let Some(s) = slope {
        v = format!("e2_lrelu({v}, {})", cf(s));
    }
    per_value(
        ctx,
        "_napply",
        dst,
        &write(dst, &v),
        values(dst) * 3,
        "norm apply",
    )
}

/// A standalone `InstanceNorm`.
pub fn instance_norm(
    ctx: &NodeCtx,
    consts: &mut Consts,
    eps: f32,
) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 2)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    same_values(ctx, x, y)?;
    let vec_of = |i: usize, what: &str| {
        ctx.consts[i]
            .as_f32()
            .filter(|v| v.len() == x.shape[1])
            .ok_or_else(|| {
                err(
                    ctx,
                    format!("{what} must be f32 with one value per channel"),
                )
            })
    };
    let (gamma, beta) = (vec_of(0, "gamma")?, vec_of(1, "beta")?);
    Ok(vec![
        norm_stats(ctx, consts, x, eps, gamma)?,
        norm_apply(ctx, consts, x, y, ctx.scratch, beta, None)?,
    ])
}
