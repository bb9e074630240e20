//! Ops across the channel axis: softmax and argmax. One tile per `(n, z)`: every channel of
//! that depth, row by row, 8 columns at a time.
//!
//! Softmax subtracts the channel maximum, exponentiates with the prelude's `e2_exp` (relative
//! error about 2e-7) and scales by the reciprocal of the f32 sum. Argmax keeps the first index on
//! ties and treats NaN as larger than everything (the first NaN wins), like the interpreter; it
//! writes int32 bit patterns into an f32 arena view of shape `[N, 1, D, H, W]`.

use super::text::{kernel, mask_expr, nvec, plane_expr, row_expr, zero_row, zero_row_pads};
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
        __m256 m = _mm256_loadu_ps(xr + 8 * xv);
        for (int c = 1; c < {c}; c++) m = _mm256_max_ps(m, _mm256_loadu_ps(xr + (int64_t)c * {xcs} + 8 * xv));
        __m256 s = _mm256_setzero_ps();
        for (int c = 0; c < {c}; c++) {{
            const __m256 e = e2_exp(_mm256_sub_ps(_mm256_loadu_ps(xr + (int64_t)c * {xcs} + 8 * xv), m));
            s = _mm256_add_ps(s, e);
            _mm256_storeu_ps(yr + (int64_t)c * {ycs} + 8 * xv, e);
        }}
        __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
        if (xv == {last}) inv = _mm256_and_ps(inv, {mask});
        for (int c = 0; c < {c}; c++) {{
            float *o = yr + (int64_t)c * {ycs} + 8 * xv;
            _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_loadu_ps(o), inv));
        }}
    }}
    for (int c = 0; c < {c}; c++) {{
        float *orow = yr + (int64_t)c * {ycs};
{pads}    }}
}}
",
            top = zero_row(y, &format!("(yp + (int64_t)c * {})", y.c_stride)),
            bot = zero_row(y, &format!("(yp + (int64_t)c * {} + {})", y.c_stride, (h + 1) * y.row)),
            xr = row_expr(x, "y"),
            yr = row_expr(y, "y"),
            xcs = x.c_stride,
            ycs = y.c_stride,
            last = nv - 1,
            mask = mask_expr(w - 8 * (nv - 1)),
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
        __m256 bv = _mm256_loadu_ps(xr + 8 * xv);
        __m256 bi = _mm256_setzero_ps();
        for (int c = 1; c < {c}; c++) {{
            const __m256 v = _mm256_loadu_ps(xr + (int64_t)c * {xcs} + 8 * xv);
            const __m256 up = _mm256_andnot_ps(_mm256_cmp_ps(bv, bv, _CMP_UNORD_Q),
                _mm256_or_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(v, bv, _CMP_GT_OQ)));
            bv = _mm256_blendv_ps(bv, v, up);
            bi = _mm256_blendv_ps(bi, _mm256_castsi256_ps(_mm256_set1_epi32(c)), up);
        }}
        if (xv == {last}) bi = _mm256_and_ps(bi, {mask});
        _mm256_storeu_ps(yr + 8 * xv, bi);
    }}
{pads}}}
",
            top = zero_row(y, "yp"),
            bot = zero_row(y, &format!("(yp + {})", (h + 1) * y.row)),
            xr = row_expr(x, "y"),
            yr = row_expr(y, "y"),
            xcs = x.c_stride,
            last = nv - 1,
            mask = mask_expr(w - 8 * (nv - 1)),
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
