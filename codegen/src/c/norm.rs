//! Instance norm as three kernels, so that no floating-point sum depends on how tiles are split:
//!
//! 1. partial statistics: each tile of a producer (a conv tile, or here one plane) writes the sum
//!    and the sum of squares (doubles) of its values for each channel it covers into its own
//!    scratch slots `partial[n * C + c][p]`;
//! 2. [`reduce`] (tiles = N*C): sums the `P` partials of one `(n, c)` in order, and stores
//!    `mean` and `scale = gamma / sqrt(var + eps)` (biased variance) as two floats;
//! 3. [`apply`] (tiles = N*C*D planes): `y = (x - mean) * scale + beta`, then the leaky ReLU,
//!    written as whole padded planes (interior values, zero padding), in place or not.
//!
//! Scratch layout (f32 slots from the node's scratch offset): `N*C*P` partial pairs of doubles
//! (4 slots each), then `N*C` (mean, scale) float pairs.

use std::fmt::Write;

use super::dialect::Dialect;
use super::text::{cf, kernel, nvec, plane_expr, row_expr, zero_row, zero_row_pads};
use super::{err, expect_operands};
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::layout::View;

/// Scratch elements for `nc` (n, c) pairs with `partials` partial sums each.
pub fn scratch_for(nc: usize, partials: usize) -> usize {
    nc * partials * 4 + nc * 2
}

/// Scratch of a standalone instance norm (one partial per plane).
pub fn standalone_scratch(output: &e2enc_ir::TensorType) -> usize {
    match output.shape.as_slice() {
        [n, c, d, _, _] => scratch_for(n * c, *d),
        _ => 0,
    }
}

/// The per-tile shifts a conv subtracted from the values it stored (`NodeCtx::shift_at`): at
/// arena offset `at`, `tiles` per (sample, channel), tile `z * bands + y / rows` for row `y` of
/// plane `z`.
#[derive(Clone, Copy, Debug)]
pub struct Shift {
    pub at: usize,
    pub tiles: usize,
    pub bands: usize,
    pub rows: usize,
}

/// The statistics a reduction sums.
pub struct Stats {
    /// Number of (n, c) pairs.
    pub nc: usize,
    /// Channels C (to find gamma of pair i: `i % C`).
    pub c: usize,
    pub partials: usize,
    /// Values per (n, c).
    pub count: usize,
}

/// The C expression (a `double *`) of the partial pair `(i, p)`, `i` and `p` C expressions.
pub fn partial_ptr(scratch: usize, partials: usize, i: &str, p: &str) -> String {
    format!("((double *)(A + {scratch}) + ((int64_t)({i}) * {partials} + ({p})) * 2)")
}

/// Kernel 2: reduces the partials of each (n, c) to (mean, scale).
pub fn reduce(ctx: &NodeCtx, consts: &mut Consts, st: Stats, eps: f32, gamma: &[f32]) -> Kernel {
    let goff = consts.push_f32(gamma);
    let out = ctx.scratch + st.nc * st.partials * 4;
    let src = partial_ptr(ctx.scratch, st.partials, "t", "0");
    let body = format!(
        "const double *p = {src};
double s = 0.0, q = 0.0;
for (int i = 0; i < {np}; i++) {{ s += p[2 * i]; q += p[2 * i + 1]; }}
const double mean = s / {cnt}.0;
double var = q / {cnt}.0 - mean * mean;
if (var < 0.0) var = 0.0;
const double inv = 1.0 / sqrt(var + (double){eps});
A[{out} + 2 * t] = (float)mean;
A[{out} + 2 * t + 1] = (float)(inv * (double)W[{goff} + t % {c}]);
",
        np = st.partials,
        cnt = st.count,
        eps = cf(eps),
        c = st.c,
    );
    kernel(
        &format!("{}_nred", ctx.prefix),
        "",
        &body,
        st.nc,
        (st.nc * st.partials * 2) as u64,
        format!("{} norm reduce", ctx.label),
    )
}

/// What [`apply`] does after normalizing, and the shifts its source was stored less.
pub struct After<'a> {
    pub beta: &'a [f32],
    /// The leaky ReLU's slope, if one follows.
    pub slope: Option<f32>,
    pub shift: Option<Shift>,
}

/// Kernel 3: `dst = lrelu((src - mean) * scale + beta)` over whole padded planes; `stats_at`
/// is the slot (after the node's scratch offset) where the (mean, scale) pairs start.
pub fn apply(
    ctx: &NodeCtx,
    consts: &mut Consts,
    src: &View,
    dst: &View,
    stats_at: usize,
    after: After,
) -> Kernel {
    let After { beta, slope, shift } = after;
    let boff = consts.push_f32(beta);
    let [n, c, d, h, w] = dst.shape;
    // The dialect's widest vectors (16 lanes on AVX-512: half the instructions of 8, the same
    // value per element); a row's storage holds whole 16-lane vectors past its values
    // (`row = PAD_LEFT + round_up(w, 8) + 8`), stored as zeros (`keep`).
    let lanes = Dialect::of(ctx.isa).wide;
    let v = format!("e2f{lanes}");
    let nv = w.div_ceil(lanes);
    let st = ctx.scratch + stats_at * 4;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "const int64_t i = t / {d}; const int z = (int)(t % {d});
const int n = (int)(i / {c}), c = (int)(i % {c});
const {v} vm = {v}_set1(A[{st} + 2 * i]), vs = {v}_set1(A[{st} + 2 * i + 1]);
const {v} vb = {v}_set1(W[{boff} + c]);
const {st_} *s = {sb} + {sp};
{dt_} *o = {db} + {dp};",
        sp = plane_expr(src, "n", "c", "z"),
        dp = plane_expr(dst, "n", "c", "z"),
        st_ = src.c_type(),
        dt_ = dst.c_type(),
        sb = src.c_base(),
        db = dst.c_base(),
    );
    if let Some(sl) = slope {
        let _ = writeln!(b, "const {v} vsl = {v}_set1({});", cf(sl));
    }
    // Stored values less their tile's shift: the mean less it, per row.
    let row_mean = match shift {
        Some(s) => format!(
            "const {v} vm = {v}_set1(A[{st} + 2 * i] - A[{} + i * {} + z * {} + y / {}]);\n    ",
            s.at, s.tiles, s.bands, s.rows
        ),
        None => String::new(),
    };
    let act = if slope.is_some() {
        format!("v = {v}_lrelu(v, vsl);\n        ")
    } else {
        String::new()
    };
    let _ = write!(
        b,
        "{top}for (int y = 0; y < {h}; y++) {{
    {row_mean}const {st_} *sr = s + {sr};
    {dt_} *orow = o + {dr};
    for (int x = 0; x < {nv}; x++) {{
        {v} v = {v}_fma({v}_sub({v}_load(sr + {lanes} * x), vm), vs, vb);
        {act}if (x == {last}) v = {v}_keep(v, {valid});
        {v}_store(orow + {lanes} * x, v);
    }}
{pads}}}
{bot}",
        top = zero_row(dst, "o"),
        bot = zero_row(dst, &format!("(o + {})", (h + 1) * dst.row)),
        sr = row_expr(src, "y"),
        dr = row_expr(dst, "y"),
        last = nv - 1,
        valid = w - lanes * (nv - 1),
        pads = indent(&zero_row_pads(dst, "orow", lanes * nv)),
        st_ = src.c_type(),
        dt_ = dst.c_type(),
    );
    kernel(
        &format!("{}_napply", ctx.prefix),
        "",
        &b,
        n * c * d,
        (n * c * d * h * w * 3) as u64,
        format!("{} norm apply", ctx.label),
    )
}

pub fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// A standalone `InstanceNorm`: plane statistics, reduction, apply into the output view.
pub fn emit_standalone(
    ctx: &NodeCtx,
    consts: &mut Consts,
    eps: f32,
) -> Result<Vec<Kernel>, EmitError> {
    expect_operands(ctx, 1, 2)?;
    let x = &ctx.inputs[0];
    if x.shape != ctx.output.shape {
        return Err(err(ctx, "input and output shapes differ"));
    }
    let [n, c, d, h, w] = x.shape;
    let (gamma, beta) = match (ctx.consts[0].as_f32(), ctx.consts[1].as_f32()) {
        (Some(g), Some(b)) if g.len() == c && b.len() == c => (g, b),
        _ => return Err(err(ctx, format!("gamma and beta must be f32[{c}]"))),
    };
    let nv = nvec(w);
    // Kernel 1: one partial per plane (the padding is zero, so whole vectors can be summed).
    let body = format!(
        "const int64_t i = t / {d}; const int z = (int)(t % {d});
const float *s = A + {sp};
e2st vs = e2st_zero(), vq = e2st_zero();
for (int y = 0; y < {h}; y++) {{
    const float *sr = s + {sr};
    for (int x = 0; x < {nv}; x++) e2f8_stats(&vs, &vq, e2f8_load(sr + 8 * x));
}}
double *p = {pp};
p[0] = e2st_sum(vs);
p[1] = e2st_sum(vq);
",
        sp = plane_expr(x, &format!("i / {c}"), &format!("i % {c}"), "z"),
        sr = row_expr(x, "y"),
        pp = partial_ptr(ctx.scratch, d, "i", "z"),
    );
    let stats = kernel(
        &format!("{}_nstat", ctx.prefix),
        "",
        &body,
        n * c * d,
        (n * c * d * h * w * 3) as u64,
        format!("{} norm stats", ctx.label),
    );
    let red = reduce(
        ctx,
        consts,
        Stats {
            nc: n * c,
            c,
            partials: d,
            count: d * h * w,
        },
        eps,
        gamma,
    );
    let after = After {
        beta,
        slope: None,
        shift: None,
    };
    let app = apply(ctx, consts, x, &ctx.output, n * c * d, after);
    Ok(vec![stats, red, app])
}
