//! Ops across the channel axis: softmax and argmax. One tile per `(n, z)`: every channel of
//! that depth, row by row, 8 columns at a time.
//!
//! Softmax subtracts the channel maximum, exponentiates with the prelude's `e2_exp` (relative
//! error about 2e-7) and scales by the reciprocal of the f32 sum. Argmax keeps the first index on
//! ties and treats NaN as larger than everything (the first NaN wins), like the interpreter; it
//! writes int32 bit patterns into an f32 arena view of shape `[N, 1, D, H, W]`.

use super::text::{kernel, nvec, plane_expr, row_expr, zero_row, zero_row_pads};
use super::{err, expect_operands};
use crate::emit::{EmitError, Kernel, NodeCtx};
use crate::layout::View;

fn frame(x: &View, y: &View, ys: &str) -> String {
    let [_, _, d, _, _] = x.shape;
    format!(
        "const int z = (int)(t % {d}), n = (int)(t / {d});
const float *xp = A + {xp};
float *yp = A + {yp};
",
        xp = plane_expr(x, "n", "0", "z"),
        yp = plane_expr(y, "n", "0", "z"),
    ) + ys
}

pub fn softmax(ctx: &NodeCtx) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    if x.shape != y.shape || x.row != y.row {
        return Err(err(ctx, "input and output shapes differ"));
    }
    let [n, c, d, h, w] = x.shape;
    let nv = nvec(w);
    let pads = zero_row_pads(y, "orow", 8 * nv)
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect::<String>();
    let body = frame(
        x,
        y,
        &format!(
            "for (int c = 0; c < {c}; c++) {{
    {top}    {bot}}}
for (int y = 0; y < {h}; y++) {{
    const float *xr = xp + {xr};
    float *yr = yp + {yr};
    for (int xv = 0; xv < {nv}; xv++) {{
        e2f8 m = e2f8_load(xr + 8 * xv);
        for (int c = 1; c < {c}; c++) m = e2f8_max(m, e2f8_load(xr + (int64_t)c * {xcs} + 8 * xv));
        e2f8 s = e2f8_zero();
        for (int c = 0; c < {c}; c++) {{
            const e2f8 e = e2f8_exp(e2f8_sub(e2f8_load(xr + (int64_t)c * {xcs} + 8 * xv), m));
            s = e2f8_add(s, e);
            e2f8_store(yr + (int64_t)c * {ycs} + 8 * xv, e);
        }}
        e2f8 inv = e2f8_div(e2f8_set1(1.0f), s);
        if (xv == {last}) inv = e2f8_keep(inv, {valid});
        for (int c = 0; c < {c}; c++) {{
            float *o = yr + (int64_t)c * {ycs} + 8 * xv;
            e2f8_store(o, e2f8_mul(e2f8_load(o), inv));
        }}
    }}
    for (int c = 0; c < {c}; c++) {{
        float *orow = yr + (int64_t)c * {ycs};
{pads}    }}
}}
",
            top = zero_row(y, &format!("(yp + (int64_t)c * {})", y.c_stride)),
            bot = zero_row(
                y,
                &format!("(yp + (int64_t)c * {} + {})", y.c_stride, (h + 1) * y.row)
            ),
            xr = row_expr(x, "y"),
            yr = row_expr(y, "y"),
            xcs = x.c_stride,
            ycs = y.c_stride,
            last = nv - 1,
            valid = w - 8 * (nv - 1),
        ),
    );
    let flops = (n * c * d * h * w * 20) as u64;
    Ok(vec![kernel(
        &ctx.prefix,
        "",
        &body,
        n * d,
        flops,
        format!("{} softmax", ctx.label),
    )])
}

pub fn argmax(ctx: &NodeCtx) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 0)?;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let [n, c, d, h, w] = x.shape;
    if y.shape != [n, 1, d, h, w] || x.row != y.row {
        return Err(err(
            ctx,
            format!(
                "the output view must be [N, 1, D, H, W] = {:?}, got {:?}",
                [n, 1, d, h, w],
                y.shape
            ),
        ));
    }
    let nv = nvec(w);
    let pads = zero_row_pads(y, "yr", 8 * nv)
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>();
    let body = frame(
        x,
        y,
        &format!(
            "{top}{bot}for (int y = 0; y < {h}; y++) {{
    const float *xr = xp + {xr};
    float *yr = yp + {yr};
    for (int xv = 0; xv < {nv}; xv++) {{
        e2f8 bv = e2f8_load(xr + 8 * xv);
        e2f8 bi = e2f8_zero();
        for (int c = 1; c < {c}; c++) {{
            const e2f8 v = e2f8_load(xr + (int64_t)c * {xcs} + 8 * xv);
            e2f8_argmax_step(&bv, &bi, v, c);
        }}
        if (xv == {last}) bi = e2f8_keep(bi, {valid});
        e2f8_store(yr + 8 * xv, bi);
    }}
{pads}}}
",
            top = zero_row(y, "yp"),
            bot = zero_row(y, &format!("(yp + {})", (h + 1) * y.row)),
            xr = row_expr(x, "y"),
            yr = row_expr(y, "y"),
            xcs = x.c_stride,
            last = nv - 1,
            valid = w - 8 * (nv - 1),
        ),
    );
    let flops = (n * c * d * h * w) as u64;
    Ok(vec![kernel(
        &ctx.prefix,
        "",
        &body,
        n * d,
        flops,
        format!("{} argmax", ctx.label),
    )])
}
