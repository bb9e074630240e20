//! The CUDA training kernels other than convolutions: add, leaky ReLU and its gradient (one
//! thread per value), concat, channel selection and the depth shift both ways (one thread per
//! output value, its source found by comparing the channel with the runs of the mapping), max
//! pooling (one thread per output value) and its gradient (one thread per input value, which
//! visits the windows holding it in ascending order and adds `dy` where it is the window's
//! first maximum: the C kernels' sum order, no atomics), instance norm and its gradient (one
//! block per `(n, c)` plane: statistics on the block's tree, then the plane written), channel
//! sums and the norm's gamma gradient (one block per channel, the batch in order).
//!
//! Formulas and rounding steps are the C training kernels' (`crate::train::simple`,
//! `crate::train::pool`): f64 statistics, the same f32 scale and shift, the same take rule for
//! maxima (the first maximum in row-major window order wins; a NaN counts as the maximum).

use e2enc_ir::{shift_runs, Op, PoolAttrs};

use super::{index_type, make, per_value, value_blocks, Made, THREADS};
use crate::compile::CodegenError;
use crate::cuda::text::cf;
use crate::train::{d5, err, Ctx, Live};

pub(crate) fn emit(ctx: &Ctx) -> Result<Made, CodegenError> {
    match ctx.op {
        Op::Add => pointwise(ctx, "a[i] + b[i]"),
        Op::LeakyRelu { slope } => {
            pointwise(ctx, &format!("a[i] >= 0.0f ? a[i] : {} * a[i]", cf(*slope)))
        }
        Op::LeakyReluBackward { slope } => {
            pointwise(ctx, &format!("a[i] > 0.0f ? b[i] : {} * b[i]", cf(*slope)))
        }
        Op::Concat => {
            let mut srcs = Vec::new();
            for (i, s) in ctx.ins.iter().enumerate() {
                let ch = d5(ctx, s)?[1];
                srcs.extend((0..ch).map(|c| (i, c, ch, 0)));
            }
            plane_copy(ctx, &srcs)
        }
        Op::SelectChannels { axis: 1, ranges } => {
            let ch = d5(ctx, &ctx.ins[0])?[1];
            let srcs: Vec<_> = ranges
                .iter()
                .flat_map(|&(a, b)| (a..b).map(move |c| (0, c, ch, 0)))
                .collect();
            plane_copy(ctx, &srcs)
        }
        Op::DepthShift(a) | Op::DepthShiftBackward(a) => {
            let ch = d5(ctx, &ctx.ins[0])?[1];
            let neg = matches!(ctx.op, Op::DepthShiftBackward(_));
            let shifts: Vec<i64> = shift_runs(a.groups, ch)
                .into_iter()
                .flat_map(|(s, k)| std::iter::repeat_n(if neg { -s } else { s }, k))
                .collect();
            let srcs: Vec<_> = (0..ch).map(|c| (0, c, ch, shifts[c])).collect();
            plane_copy(ctx, &srcs)
        }
        Op::InstanceNorm { eps } => norm(ctx, *eps, false),
        Op::InstanceNormBackward { eps } => norm(ctx, *eps, true),
        Op::InstanceNormGammaGrad { eps } => channel_reduce(ctx, Some(*eps)),
        Op::ChannelSum => channel_reduce(ctx, None),
        Op::MaxPool3d(a) => pool(ctx, a, false),
        Op::MaxPoolBackward(a) => pool(ctx, a, true),
        other => Err(err(
            ctx.g,
            ctx.id,
            format!("no CUDA training kernel for `{}`", other.mnemonic()),
        )),
    }
}

/// `out[i] = expr` over `a = in[0]`, `b = in[1]` (or `in[0]` again for one operand).
fn pointwise(ctx: &Ctx, expr: &str) -> Result<Made, CodegenError> {
    let total: usize = ctx.out.iter().product();
    for s in &ctx.ins {
        if s.iter().product::<usize>() != total {
            return Err(err(ctx.g, ctx.id, "operands and output differ in size"));
        }
    }
    let body = format!(
        "{}const float *__restrict__ a = in[0];\nconst float *__restrict__ b = in[{b}];\n(void)b;\nout[i] = {expr};\n",
        per_value(total),
        b = usize::from(ctx.ins.len() > 1),
    );
    make(
        ctx,
        &body,
        value_blocks(total),
        false,
        total as u64,
        Live::None,
    )
}

/// A per-plane copy: output channel `c` takes channel `src_c` of operand `src_i` (which has
/// `src_ch` channels) with its depth shifted by `sh` (`out[z] = src[z - sh]`, zero outside), from
/// `srcs[c] = (src_i, src_c, src_ch, sh)`. Consecutive channels with consecutive sources form
/// runs; the kernel compares its channel with the runs' ends.
fn plane_copy(ctx: &Ctx, srcs: &[(usize, usize, usize, i64)]) -> Result<Made, CodegenError> {
    let [n, c, d, h, w] = d5(ctx, &ctx.out)?;
    if srcs.len() != c {
        return Err(err(ctx.g, ctx.id, "channel mapping and output differ"));
    }
    // (end, operand, first source channel - first output channel, channels, shift)
    let mut runs: Vec<(usize, usize, i64, usize, i64)> = Vec::new();
    for (oc, &(i, sc, ch, sh)) in srcs.iter().enumerate() {
        let delta = sc as i64 - oc as i64;
        match runs.last_mut() {
            Some(r) if r.1 == i && r.2 == delta && r.3 == ch && r.4 == sh => r.0 = oc + 1,
            _ => runs.push((oc + 1, i, delta, ch, sh)),
        }
    }
    let plane = h * w;
    let total = n * c * d * plane;
    let mut body = per_value(total);
    body.push_str(&format!(
        "const {ty} p = i % {plane};\nconst int z = (int)((i / {plane}) % {d});\n\
         const int c = (int)((i / {dp}) % {c});\nconst {ty} n = i / {cdp};\n\
         const float *__restrict__ src; int sc; int sch; int sh;\n",
        ty = index_type(total),
        dp = d * plane,
        cdp = c * d * plane,
    ));
    for (k, &(end, i, delta, ch, sh)) in runs.iter().enumerate() {
        let cond = if runs.len() == 1 {
            String::new()
        } else if k + 1 == runs.len() {
            "else".to_string()
        } else if k == 0 {
            format!("if (c < {end})")
        } else {
            format!("else if (c < {end})")
        };
        body.push_str(&format!(
            "{cond} {{ src = in[{i}]; sc = c + ({delta}); sch = {ch}; sh = {sh}; }}\n"
        ));
    }
    body.push_str(&format!(
        "const int u = z - sh;\n\
         out[i] = (u >= 0 && u < {d}) ? src[((i64)(n * sch + sc) * {d} + u) * {plane}LL + p] : 0.0f;\n"
    ));
    make(
        ctx,
        &body,
        value_blocks(total),
        false,
        total as u64,
        Live::None,
    )
}

/// `InstanceNorm (x, gamma, beta)` or `InstanceNormBackward (x, gamma, dy)`: a block per plane.
fn norm(ctx: &Ctx, eps: f32, backward: bool) -> Result<Made, CodegenError> {
    let [n, c, d, h, w] = d5(ctx, &ctx.ins[0])?;
    let len = d * h * w;
    let mut body = format!(
        "__shared__ double s[{THREADS}];\n\
         const int t = (int)threadIdx.x;\n\
         const i64 pl = (i64)blockIdx.x;\n\
         const int c = (int)(pl % {c});\n\
         const float *__restrict__ xp = in[0] + pl * {len}LL;\n\
         const float *__restrict__ gamma = in[1];\n\
         float *__restrict__ o = out + pl * {len}LL;\n\
         double a = 0.0;\n\
         for (int k = t; k < {len}; k += {THREADS}) a += (double)xp[k];\n\
         const double mean = e2g_bsum(a, s) / {len}.0;\n\
         double q = 0.0;\n\
         for (int k = t; k < {len}; k += {THREADS}) {{ const double v = (double)xp[k] - mean; q += v * v; }}\n\
         const double rstd = 1.0 / sqrt(e2g_bsum(q, s) / {len}.0 + (double){eps});\n",
        eps = cf(eps),
    );
    if backward {
        body.push_str(&format!(
            "const float *__restrict__ dy = in[2] + pl * {len}LL;\n\
             double sy = 0.0, sx = 0.0;\n\
             for (int k = t; k < {len}; k += {THREADS}) {{ sy += (double)dy[k]; sx += (double)dy[k] * ((double)xp[k] - mean); }}\n\
             const double g = (double)gamma[c];\n\
             const double mg = g * e2g_bsum(sy, s) / {len}.0;\n\
             const double mgx = g * e2g_bsum(sx, s) * rstd / {len}.0;\n\
             const float fm = (float)mean, fr = (float)rstd, fg = (float)g;\n\
             const float fa = (float)(rstd * mg), fb = (float)(rstd * rstd * mgx);\n\
             for (int k = t; k < {len}; k += {THREADS}) o[k] = fr * fg * dy[k] - fa - (xp[k] - fm) * fb;\n"
        ));
    } else {
        body.push_str(&format!(
            "const float *__restrict__ beta = in[2];\n\
             const float sc = (float)(rstd * (double)gamma[c]);\n\
             const float sf = (float)((double)beta[c] - mean * rstd * (double)gamma[c]);\n\
             for (int k = t; k < {len}; k += {THREADS}) o[k] = fmaf(xp[k], sc, sf);\n"
        ));
    }
    make(
        ctx,
        &body,
        (n * c) as u64,
        true,
        (n * c * len * 3) as u64,
        Live::None,
    )
}

/// `ChannelSum (dy)` or `InstanceNormGammaGrad (x, dy)`: `[C]`, a block per channel, the batch
/// in order.
fn channel_reduce(ctx: &Ctx, gamma_eps: Option<f32>) -> Result<Made, CodegenError> {
    let [n, c, d, h, w] = d5(ctx, &ctx.ins[0])?;
    let len = d * h * w;
    let mut body = format!(
        "__shared__ double s[{THREADS}];\n\
         const int t = (int)threadIdx.x;\n\
         const int c = (int)blockIdx.x;\n\
         double acc = 0.0;\n\
         for (int n = 0; n < {n}; n++) {{\n\
         \x20   const i64 p = ((i64)n * {c} + c) * {len}LL;\n"
    );
    match gamma_eps {
        None => body.push_str(&format!(
            "    double a = 0.0;\n\
             \x20   for (int k = t; k < {len}; k += {THREADS}) a += (double)in[0][p + k];\n\
             \x20   acc += e2g_bsum(a, s);\n"
        )),
        Some(eps) => body.push_str(&format!(
            "    const float *__restrict__ xp = in[0] + p;\n\
             \x20   const float *__restrict__ dy = in[1] + p;\n\
             \x20   double a = 0.0;\n\
             \x20   for (int k = t; k < {len}; k += {THREADS}) a += (double)xp[k];\n\
             \x20   const double mean = e2g_bsum(a, s) / {len}.0;\n\
             \x20   double q = 0.0;\n\
             \x20   for (int k = t; k < {len}; k += {THREADS}) {{ const double v = (double)xp[k] - mean; q += v * v; }}\n\
             \x20   const double rstd = 1.0 / sqrt(e2g_bsum(q, s) / {len}.0 + (double){eps});\n\
             \x20   double e = 0.0;\n\
             \x20   for (int k = t; k < {len}; k += {THREADS}) e += (double)dy[k] * ((double)xp[k] - mean);\n\
             \x20   acc += e2g_bsum(e, s) * rstd;\n",
            eps = cf(eps)
        )),
    }
    body.push_str("}\nif (t == 0) out[c] = (float)acc;\n");
    make(ctx, &body, c as u64, true, (n * c * len) as u64, Live::None)
}

/// The take rule and window scan of max pooling: leaves `at` (index in the plane `x`, -1 for an
/// empty window) and `m` for the window at output `(oz, oy, ox)`.
fn window_scan(a: &PoolAttrs, h: usize, w: usize) -> String {
    let ([kd, kh, kw], [sd, sh, sw]) = (a.kernel, a.stride);
    format!(
        "int at = -1; float m = 0.0f;\n\
         for (int a = 0; a < {kd}; a++) for (int b = 0; b < {kh}; b++) for (int e = 0; e < {kw}; e++) {{\n\
         \x20   const int j = ((oz * {sd} + a) * {h} + oy * {sh} + b) * {w} + ox * {sw} + e;\n\
         \x20   const float xv = x[j];\n\
         \x20   if (at < 0 || (m == m && (xv > m || xv != xv))) {{ at = j; m = xv; }}\n\
         }}\n"
    )
}

/// `MaxPool3d (x)`: a thread per output value; `MaxPoolBackward (x, dy)`: a thread per input
/// value.
fn pool(ctx: &Ctx, a: &PoolAttrs, backward: bool) -> Result<Made, CodegenError> {
    let [n, c, d, h, w] = d5(ctx, &ctx.ins[0])?;
    let ys = if backward {
        d5(ctx, &ctx.ins[1])?
    } else {
        d5(ctx, &ctx.out)?
    };
    let [od, oh, ow] = [ys[2], ys[3], ys[4]];
    let ([kd, kh, kw], [sd, sh, sw]) = (a.kernel, a.stride);
    if a.stride.contains(&0) || a.kernel.contains(&0) {
        return Err(err(ctx.g, ctx.id, "zero pooling kernel or stride"));
    }
    let plane = d * h * w;
    let opl = od * oh * ow;
    let scan = window_scan(a, h, w);
    let work = (n * c * opl * kd * kh * kw) as u64;
    if !backward {
        let total = n * c * opl;
        let body = format!(
            "{}const int ox = (int)(i % {ow}), oy = (int)((i / {ow}) % {oh}), oz = (int)((i / {ohw}) % {od});\n\
             const {ty} pl = i / {opl};\n\
             const float *__restrict__ x = in[0] + pl * {plane}LL;\n\
             {scan}out[i] = m;\n",
            per_value(total),
            ohw = oh * ow,
            ty = index_type(total),
        );
        return make(ctx, &body, value_blocks(total), false, work, Live::None);
    }
    let total = n * c * plane;
    // Windows holding index v along an axis of kernel k, stride s and n outputs: o from
    // (v >= k ? (v - k) / s + 1 : 0) to min(v / s, n - 1).
    let range = |v: &str, k: usize, s: usize, no: usize, name: &str| {
        format!(
            "const int {name}0 = {v} >= {k} ? ({v} - {k}) / {s} + 1 : 0;\n\
             const int {name}1 = {v} / {s} < {no} - 1 ? {v} / {s} : {no} - 1;\n"
        )
    };
    let windows = if a.kernel == a.stride {
        // Non-overlapping windows: at most one holds the value.
        format!(
            "const int oz = iz / {sd}, oy = iy / {sh}, ox = ix / {sw};\n\
             float g = 0.0f;\n\
             if (oz < {od} && oy < {oh} && ox < {ow}) {{\n\
             {scan}    if (at == me) g = dy[(oz * {oh} + oy) * {ow} + ox];\n\
             }}\n"
        )
    } else {
        format!(
            "{rz}{ry}{rx}float g = 0.0f;\n\
             for (int oz = z0; oz <= z1; oz++) for (int oy = y0; oy <= y1; oy++) for (int ox = x0; ox <= x1; ox++) {{\n\
             {scan}    if (at == me) g += dy[(oz * {oh} + oy) * {ow} + ox];\n\
             }}\n",
            rz = range("iz", kd, sd, od, "z"),
            ry = range("iy", kh, sh, oh, "y"),
            rx = range("ix", kw, sw, ow, "x"),
        )
    };
    let body = format!(
        "{}const int ix = (int)(i % {w}), iy = (int)((i / {w}) % {h}), iz = (int)((i / {hw}) % {d});\n\
         const {ty} pl = i / {plane};\n\
         const int me = (int)(i - pl * {plane});\n\
         const float *__restrict__ x = in[0] + pl * {plane}LL;\n\
         const float *__restrict__ dy = in[1] + pl * {opl}LL;\n\
         {windows}out[i] = g;\n",
        per_value(total),
        hw = h * w,
        ty = index_type(total),
    );
    make(ctx, &body, value_blocks(total), false, work, Live::None)
}
