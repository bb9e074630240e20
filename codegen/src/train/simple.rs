//! The non-convolution kernels of a training graph: instance norm and its two gradients, channel
//! sums, leaky ReLU and its gradient, add, concat, channel
//! selection and the depth shift in both directions.
//!
//! Max pooling lives in `pool.rs`.
//!
//! Statistics and channel sums accumulate in f64 through the prelude's lane-blocked sums (fixed
//! order, vectorizable without reassociation); a reduction over the batch (channel sums, the
//! gamma gradient) is one tile per channel, so its order never depends on the tiling. Pointwise
//! ops tile by blocks of [`BLOCK`] elements, copies and pooling by `(n, c)` planes.

use std::fmt::Write as _;

use e2enc_ir::{shift_runs, Op};

use super::{c_list, d5, err, Ctx, Emitted, Live};
use crate::compile::CodegenError;

/// Elements per tile of the pointwise kernels.
pub const BLOCK: usize = 16384;

pub(crate) fn head(ctx: &Ctx) -> String {
    super::head(ctx)
}

pub(crate) fn done(source: String, tiles: usize, work: usize) -> Emitted {
    Emitted {
        scratch: 0,
        source,
        tiles,
        work: work as u64,
        live: Live::None,
    }
}

/// A pointwise kernel: `body` computes `out[i]` from `a = in[0]`, `b = in[1]`.
fn pointwise(ctx: &Ctx, body: &str) -> Emitted {
    let total: usize = ctx.out.iter().product();
    let mut s = head(ctx);
    let _ = write!(
        s,
        "  const float *restrict a = in[0];\n  const float *restrict b = in[{b}];\n  (void)b;\n\
         \x20 for (int64_t t = lo; t < hi; t++) {{\n\
         \x20   const int64_t i0 = t * {BLOCK}, i1 = i0 + {BLOCK} < {total} ? i0 + {BLOCK} : {total};\n\
         \x20   for (int64_t i = i0; i < i1; i++) out[i] = {body};\n  }}\n}}\n",
        b = if ctx.ins.len() > 1 { 1 } else { 0 },
    );
    done(s, total.div_ceil(BLOCK), total)
}

/// A per-`(n, c)`-plane copy: output channel `c` of sample `n` takes plane `SRC_C[c]` of
/// operand `SRC_I[c]` (with `SRC_CH[c]` channels), depth-shifted by `SH[c]`
/// (`out[d] = src[d - SH[c]]`, zero outside).
fn plane_copy(
    ctx: &Ctx,
    srcs: &[(usize, usize, usize)],
    shifts: Option<&[i64]>,
) -> Result<Emitted, CodegenError> {
    let [n, c, d, h, w] = d5(ctx, &ctx.out)?;
    let plane = h * w;
    let mut s = head(ctx);
    let (si, (sc, sch)): (Vec<usize>, (Vec<usize>, Vec<usize>)) =
        srcs.iter().map(|&(i, c, ch)| (i, (c, ch))).unzip();
    let _ = writeln!(
        s,
        "  static const int32_t SRC_I[{c}] = {{{}}};",
        c_list(&si)
    );
    let _ = writeln!(
        s,
        "  static const int64_t SRC_C[{c}] = {{{}}};",
        c_list(&sc)
    );
    let _ = writeln!(
        s,
        "  static const int64_t SRC_CH[{c}] = {{{}}};",
        c_list(&sch)
    );
    let sh = shifts.map(|v| v.to_vec()).unwrap_or_else(|| vec![0; c]);
    let _ = writeln!(s, "  static const int64_t SH[{c}] = {{{}}};", c_list(&sh));
    let _ = write!(
        s,
        "  for (int64_t t = lo; t < hi; t++) {{\n\
         \x20   const int64_t n = t / {c}, c = t % {c};\n\
         \x20   const float *restrict src = in[SRC_I[c]] + (n * SRC_CH[c] + SRC_C[c]) * {dp};\n\
         \x20   float *restrict dst = out + t * {dp};\n\
         \x20   for (int64_t z = 0; z < {d}; z++) {{\n\
         \x20     const int64_t u = z - SH[c];\n\
         \x20     if (u < 0 || u >= {d}) memset(dst + z * {plane}, 0, sizeof(float) * {plane});\n\
         \x20     else memcpy(dst + z * {plane}, src + u * {plane}, sizeof(float) * {plane});\n\
         \x20   }}\n  }}\n}}\n",
        dp = d * plane,
    );
    Ok(done(s, n * c, n * c * d * plane))
}

fn offsets(groups: usize, channels: usize, negate: bool) -> Vec<i64> {
    shift_runs(groups, channels)
        .into_iter()
        .flat_map(|(s, k)| std::iter::repeat_n(if negate { -s } else { s }, k))
        .collect()
}

pub(crate) fn emit(ctx: &Ctx) -> Result<Emitted, CodegenError> {
    match ctx.op {
        Op::Add => Ok(pointwise(ctx, "a[i] + b[i]")),
        Op::LeakyRelu { slope } => Ok(pointwise(
            ctx,
            &format!("a[i] >= 0.0f ? a[i] : {slope:?}f * a[i]"),
        )),
        Op::LeakyReluBackward { slope } => Ok(pointwise(
            ctx,
            &format!("a[i] > 0.0f ? b[i] : {slope:?}f * b[i]"),
        )),
        Op::Concat => {
            let mut srcs = Vec::new();
            for (i, s) in ctx.ins.iter().enumerate() {
                let ch = d5(ctx, s)?[1];
                srcs.extend((0..ch).map(|c| (i, c, ch)));
            }
            plane_copy(ctx, &srcs, None)
        }
        Op::SelectChannels { axis: 1, ranges } => {
            let ch = d5(ctx, &ctx.ins[0])?[1];
            let srcs: Vec<_> = ranges
                .iter()
                .flat_map(|&(a, b)| (a..b).map(move |c| (0, c, ch)))
                .collect();
            plane_copy(ctx, &srcs, None)
        }
        Op::DepthShift(a) | Op::DepthShiftBackward(a) => {
            let ch = d5(ctx, &ctx.ins[0])?[1];
            let srcs: Vec<_> = (0..ch).map(|c| (0, c, ch)).collect();
            let neg = matches!(ctx.op, Op::DepthShiftBackward(_));
            plane_copy(ctx, &srcs, Some(&offsets(a.groups, ch, neg)))
        }
        Op::InstanceNorm { eps } => norm(ctx, *eps, false),
        Op::InstanceNormBackward { eps } => norm(ctx, *eps, true),
        Op::InstanceNormGammaGrad { eps } => channel_reduce(ctx, Some(*eps)),
        Op::ChannelSum => channel_reduce(ctx, None),
        Op::MaxPool3d(_) | Op::MaxPoolBackward(_) => super::pool::emit(ctx),
        other => Err(err(
            ctx.g,
            ctx.id,
            format!("no training kernel for `{}`", other.mnemonic()),
        )),
    }
}

/// `InstanceNorm (x, gamma, beta)` or `InstanceNormBackward (x, gamma, dy)`: tile = plane.
fn norm(ctx: &Ctx, eps: f32, backward: bool) -> Result<Emitted, CodegenError> {
    let [n, c, d, h, w] = d5(ctx, &ctx.ins[0])?;
    let len = d * h * w;
    let mut s = head(ctx);
    let _ = write!(
        s,
        "  const float *restrict x = in[0];\n  const float *restrict gamma = in[1];\n\
         \x20 for (int64_t t = lo; t < hi; t++) {{\n\
         \x20   const int64_t c = t % {c};\n\
         \x20   const float *restrict xp = x + t * {len};\n\
         \x20   float *restrict o = out + t * {len};\n\
         \x20   double mean, rstd;\n\
         \x20   e2t_stats(xp, {len}, {eps:?}f, &mean, &rstd);\n"
    );
    if backward {
        let _ = write!(
            s,
            "    const float *restrict dy = in[2] + t * {len};\n\
             \x20   const double g = (double)gamma[c];\n\
             \x20   const double mg = g * e2t_sum(dy, {len}) / {len}.0;\n\
             \x20   const double mgx = g * e2t_dotc(dy, xp, {len}, mean) * rstd / {len}.0;\n\
             \x20   const float fm = (float)mean, fr = (float)rstd, fg = (float)g;\n\
             \x20   const float fa = (float)(rstd * mg), fb = (float)(rstd * rstd * mgx);\n\
             \x20   for (int64_t i = 0; i < {len}; i++) o[i] = fr * fg * dy[i] - fa - (xp[i] - fm) * fb;\n\
             \x20 }}\n}}\n"
        );
    } else {
        let _ = write!(
            s,
            "    const float *restrict beta = in[2];\n\
             \x20   const float sc = (float)(rstd * (double)gamma[c]);\n\
             \x20   const float sh = (float)((double)beta[c] - mean * rstd * (double)gamma[c]);\n\
             \x20   for (int64_t i = 0; i < {len}; i++) o[i] = xp[i] * sc + sh;\n  }}\n}}\n"
        );
    }
    Ok(done(s, n * c, n * c * len * 3))
}

/// `ChannelSum (dy)` or `InstanceNormGammaGrad (x, dy)`: `[C]`, tile = channel.
fn channel_reduce(ctx: &Ctx, gamma_eps: Option<f32>) -> Result<Emitted, CodegenError> {
    let [n, c, d, h, w] = d5(ctx, &ctx.ins[0])?;
    let len = d * h * w;
    let mut s = head(ctx);
    let _ = write!(
        s,
        "  for (int64_t c = lo; c < hi; c++) {{\n    double acc = 0.0;\n\
         \x20   for (int64_t n = 0; n < {n}; n++) {{\n\
         \x20     const int64_t p = (n * {c} + c) * {len};\n"
    );
    match gamma_eps {
        None => {
            let _ = writeln!(s, "      acc += e2t_sum(in[0] + p, {len});");
        }
        Some(eps) => {
            let _ = write!(
                s,
                "      double mean, rstd;\n\
                 \x20     e2t_stats(in[0] + p, {len}, {eps:?}f, &mean, &rstd);\n\
                 \x20     acc += e2t_dotc(in[1] + p, in[0] + p, {len}, mean) * rstd;\n"
            );
        }
    }
    s.push_str("    }\n    out[c] = (float)acc;\n  }\n}\n");
    Ok(done(s, c, n * c * len))
}
