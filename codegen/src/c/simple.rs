//! Elementwise and copy ops, and max pooling, one tile per output plane `(n, c, z)`.
//!
//! `LeakyRelu` and `Add` run linearly over whole padded planes: the padding of their inputs is
//! zero and both map zeros to zero, so the output padding comes out zero with no masks.
//! `DepthShift`, `SelectChannels` (channel axis) and `Concat` copy whole padded planes
//! (`memcpy`, padding included) or zero them. `MaxPool3d` writes whole rows (masked tail, zero
//! padding columns) and the zero pad rows; a `(.., 2)` window with stride 2 along W is
//! vectorized with even/odd lane extraction (bf16 views: 16 outputs from the 32-bit words of 32
//! stored values, `e2h_pairmax`, no shuffles: the ten pools of AMOS-CT's int8 bundle took
//! 55-56 ms, now 46-47, Zen 4, the rest being the reads), other windows use scalar loops. Max
//! propagates NaN.

use std::fmt::Write;

use e2enc_ir::{shift_runs, PoolAttrs};

use super::text::{cf, kernel, nvec, plane_expr, zero_row, zero_row_pads};
use super::{err, expect_operands};
use crate::emit::{EmitError, Kernel, NodeCtx};
use crate::layout::{View, PAD_LEFT, PAD_ROWS};

/// Decodes plane tile `t` of `view` into `n`, `c`, `z`.
fn decode(v: &View) -> String {
    let [_, c, d, _, _] = v.shape;
    format!(
        "const int z = (int)(t % {d}); const int64_t r_ = t / {d};\nconst int c = (int)(r_ % {c}), n = (int)(r_ / {c});\n"
    )
}

fn planes(v: &View) -> usize {
    v.shape[0] * v.shape[1] * v.shape[2]
}

fn same_geometry(ctx: &NodeCtx, a: &View) -> Result<(), EmitError> {
    let o = &ctx.output;
    if a.shape[0] != o.shape[0]
        || a.shape[2..] != o.shape[2..]
        || a.row != o.row
        || a.d_stride != o.d_stride
    {
        return Err(err(
            ctx,
            format!(
                "input view {:?} does not match the output {:?}",
                a.shape, o.shape
            ),
        ));
    }
    Ok(())
}

pub fn leaky_relu(ctx: &NodeCtx, slope: f32) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let x = &ctx.inputs[0];
    same_geometry(ctx, x)?;
    let y = &ctx.output;
    let body = format!(
        "{dec}const float *s = A + {sp};
float *o = A + {dp};
const e2f8 vsl = e2f8_set1({sl});
for (int i = 0; i < {len}; i += 8) e2f8_store(o + i, e2f8_lrelu(e2f8_load(s + i), vsl));
",
        dec = decode(y),
        sp = plane_expr(x, "n", "c", "z"),
        dp = plane_expr(y, "n", "c", "z"),
        sl = cf(slope),
        len = y.d_stride,
    );
    let vol = (planes(y) * y.shape[3] * y.shape[4]) as u64;
    Ok(vec![kernel(
        &ctx.prefix,
        "",
        &body,
        planes(y),
        vol,
        format!("{} leaky_relu", ctx.label),
    )])
}

pub fn add(ctx: &NodeCtx) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 2, 0)?;
    let (a, b) = (&ctx.inputs[0], &ctx.inputs[1]);
    same_geometry(ctx, a)?;
    same_geometry(ctx, b)?;
    let y = &ctx.output;
    let body = format!(
        "{dec}const float *s = A + {ap};
const float *u = A + {bp};
float *o = A + {dp};
for (int i = 0; i < {len}; i += 8) e2f8_store(o + i, e2f8_add(e2f8_load(s + i), e2f8_load(u + i)));
",
        dec = decode(y),
        ap = plane_expr(a, "n", "c", "z"),
        bp = plane_expr(b, "n", "c", "z"),
        dp = plane_expr(y, "n", "c", "z"),
        len = y.d_stride,
    );
    let vol = (planes(y) * y.shape[3] * y.shape[4]) as u64;
    Ok(vec![kernel(
        &ctx.prefix,
        "",
        &body,
        planes(y),
        vol,
        format!("{} add", ctx.label),
    )])
}

/// Copies plane `(n, src_c, src_z)` of `x` to the tile's output plane, or zeroes it when `ok`
/// (a C condition) is false.
fn copy_plane(x: &View, y: &View, src_c: &str, src_z: &str, ok: &str) -> String {
    format!(
        "float *o = A + {dp};
if ({ok}) memcpy(o, A + {sp}, {bytes});
else memset(o, 0, {bytes});
",
        dp = plane_expr(y, "n", "c", "z"),
        sp = plane_expr(x, "n", src_c, src_z),
        bytes = y.d_stride * 4,
    )
}

pub fn depth_shift(ctx: &NodeCtx, groups: usize) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let x = &ctx.inputs[0];
    same_geometry(ctx, x)?;
    let y = &ctx.output;
    let [_, c, d, _, _] = y.shape;
    let shifts: Vec<String> = shift_runs(groups, c)
        .into_iter()
        .flat_map(|(s, n)| std::iter::repeat_n(s.to_string(), n))
        .collect();
    let body = format!(
        "{dec}static const int S[{c}] = {{{list}}};
const int sz = z - S[c];
{copy}",
        dec = decode(y),
        list = shifts.join(", "),
        copy = copy_plane(x, y, "c", "sz", &format!("sz >= 0 && sz < {d}")),
    );
    Ok(vec![kernel(
        &ctx.prefix,
        "",
        &body,
        planes(y),
        0,
        format!("{} depth_shift", ctx.label),
    )])
}

pub fn select(
    ctx: &NodeCtx,
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
    let x = &ctx.inputs[0];
    same_geometry(ctx, x)?;
    let y = &ctx.output;
    let map: Vec<String> = ranges
        .iter()
        .flat_map(|&(a, b)| a..b)
        .map(|c| c.to_string())
        .collect();
    if map.len() != y.shape[1] || ranges.iter().any(|r| r.1 > x.shape[1]) {
        return Err(err(ctx, "the ranges do not fit the views"));
    }
    let body = format!(
        "{dec}static const int M[{nc}] = {{{list}}};
{copy}",
        dec = decode(y),
        nc = map.len(),
        list = map.join(", "),
        copy = copy_plane(x, y, "M[c]", "z", "1"),
    );
    Ok(vec![kernel(
        &ctx.prefix,
        "",
        &body,
        planes(y),
        0,
        format!("{} select", ctx.label),
    )])
}

pub fn concat(ctx: &NodeCtx) -> Result<Vec<Kernel>, EmitError> {
    if ctx.inputs.is_empty() || !ctx.consts.is_empty() {
        return Err(err(ctx, "concat takes one or more activations"));
    }
    let y = &ctx.output;
    let mut body = decode(y);
    body.push_str(&format!(
        "float *o = A + {};\n",
        plane_expr(y, "n", "c", "z")
    ));
    let mut c0 = 0;
    for (i, x) in ctx.inputs.iter().enumerate() {
        same_geometry(ctx, x)?;
        let c1 = c0 + x.shape[1];
        let _ = writeln!(
            body,
            "{}if (c < {c1}) memcpy(o, A + {}, {});",
            if i > 0 { "else " } else { "" },
            plane_expr(x, "n", &format!("c - {c0}"), "z"),
            y.d_stride * 4
        );
        c0 = c1;
    }
    if c0 != y.shape[1] {
        return Err(err(
            ctx,
            format!("inputs hold {c0} channels, the output {}", y.shape[1]),
        ));
    }
    Ok(vec![kernel(
        &ctx.prefix,
        "",
        &body,
        planes(y),
        0,
        format!("{} concat", ctx.label),
    )])
}

pub fn max_pool(ctx: &NodeCtx, a: &PoolAttrs) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let [kd, kh, kw] = a.kernel;
    let [sd, sh, sw] = a.stride;
    let [_, _, _, oh, ow] = y.shape;
    let nv = nvec(ow);
    if x.shape[..2] != y.shape[..2] {
        return Err(err(ctx, "input and output batch or channels differ"));
    }
    let vector = kw == 2 && sw == 2;
    if !vector && (x.is_bf16() || y.is_bf16()) {
        return Err(err(
            ctx,
            "bf16 views need the 2-wide, stride-2 pooling kernel",
        ));
    }
    let mut b = decode(y);
    let _ = writeln!(
        b,
        "{} *pl = {} + {};\nconst {} *xp = {} + {};",
        y.c_type(),
        y.c_base(),
        plane_expr(y, "n", "c", "z"),
        x.c_type(),
        x.c_base(),
        plane_expr(x, "n", "c", &format!("z * {sd}"))
    );
    b.push_str(&zero_row(y, "pl"));
    b.push_str(&zero_row(y, &format!("(pl + {})", (oh + 1) * y.row)));
    let _ = writeln!(
        b,
        "for (int y = 0; y < {oh}; y++) {{\n    {} *rowp = pl + (y + {PAD_ROWS}) * {} + {PAD_LEFT};",
        y.c_type(),
        y.row
    );
    let src = |a: &str, bb: &str| {
        format!(
            "(xp + (int64_t)({a}) * {} + (y * {sh} + {bb} + {PAD_ROWS}) * {} + {PAD_LEFT})",
            x.d_stride, x.row
        )
    };
    if vector && x.is_bf16() && y.is_bf16() {
        // 16 outputs a vector from 32 stored values a row (`e2h_pairmax`); the last vector
        // reads only the row's values (its lanes past the row's end are the max of zeros) and
        // writes the columns the 8-lane form would (the pads after them are zeroed below).
        let nv16 = ow.div_ceil(16);
        let tail_in = 2 * ow - 32 * (nv16 - 1);
        let tail_mask = if tail_in >= 32 {
            u32::MAX
        } else {
            (1u32 << tail_in) - 1
        };
        let _ = writeln!(
            b,
            "    for (int xv = 0; xv < {nv16}; xv++) {{
        const unsigned lm = xv == {last} ? {tail_mask:#x}u : 0xffffffffu;
        __m512 m = _mm512_setzero_ps();
        for (int a = 0; a < {kd}; a++) for (int bb = 0; bb < {kh}; bb++) {{
            const __m512 q = e2h_pairmax({s} + 32 * xv, lm);
            m = (a == 0 && bb == 0) ? q : e2f16_nanmax(m, q);
        }}
        e2h16_store_exact(rowp + 16 * xv, m, xv == {last} ? {cover} : 16);
    }}",
            s = src("a", "bb"),
            last = nv16 - 1,
            cover = 8 * nv - 16 * (nv16 - 1),
        );
    } else if vector {
        let _ = writeln!(
            b,
            "    for (int xv = 0; xv < {nv}; xv++) {{
        e2f8 m = e2f8_zero();
        for (int a = 0; a < {kd}; a++) for (int bb = 0; bb < {kh}; bb++) {{
            const {xt} *s = {s} + 16 * xv;
            e2f8 u = e2f8_load(s), v = e2f8_load(s + 8);
            e2f8 q = e2f8_nanmax(e2f8_even(u, v), e2f8_odd(u, v));
            m = (a == 0 && bb == 0) ? q : e2f8_nanmax(m, q);
        }}
        if (xv == {last}) m = e2f8_keep(m, {valid});
        e2f8_store(rowp + 8 * xv, m);
    }}",
            s = src("a", "bb"),
            last = nv - 1,
            valid = ow - 8 * (nv - 1),
            xt = x.c_type(),
        );
    } else {
        let _ = writeln!(
            b,
            "    for (int q = 0; q < {ow}; q++) {{
        float m = -__builtin_inff();
        for (int a = 0; a < {kd}; a++) for (int bb = 0; bb < {kh}; bb++) {{
            const float *s = {s} + q * {sw};
            for (int cc = 0; cc < {kw}; cc++) if (s[cc] > m || s[cc] != s[cc]) m = s[cc];
        }}
        rowp[q] = m;
    }}
    for (int q = {ow}; q < {}; q++) rowp[q] = 0.0f;",
            8 * nv,
            s = src("a", "bb"),
        );
    }
    for l in zero_row_pads(y, "rowp", 8 * nv).lines() {
        let _ = writeln!(b, "    {l}");
    }
    b.push_str("}\n");
    let work = (planes(y) * oh * ow * kd * kh * kw) as u64;
    Ok(vec![kernel(
        &ctx.prefix,
        "",
        &b,
        planes(y),
        work,
        format!("{} max_pool", ctx.label),
    )])
}
