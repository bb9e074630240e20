//! The CUDA convolution kernels of training graphs, in the small / big picture of
//! `crate::train::conv` (a conv and a transposed conv relate `s[n, cs, q]` and `b[n, cb, t]`
//! through taps `t = q·stride + k - pad`, weight `[cs, cb, k..]`):
//!
//! - gather (`Conv3d`, a fused shifted conv, transposed `ConvBackwardData`): a thread per output
//!   value of the small side, `Σ_{live cb} Σ_k w · big` in live-list then tap order, the big
//!   side read through the fused depth shift;
//! - scatter (`ConvTranspose3d`, plain `ConvBackwardData`): a thread per output value of the big
//!   side, collecting the small values whose taps land on it (live list transposed), the output
//!   depth-unshifted for a data gradient with a fused shift;
//! - weight gradient (`ConvBackwardWeight`): a block per weight kernel `(cs, cb)`; a dead kernel
//!   (not in the live list) writes exact zeros, a live one sums `small · big` over the batch
//!   and the small side's positions, each thread a strided share with one accumulator per tap,
//!   then thread `k` sums tap `k`'s 256 partials in thread order from shared memory (at most
//!   [`TAPS`] taps per pass).
//!
//! Each output value's sum runs in the order the C kernels use (`fmaf`, live list, then taps in
//! row-major order), and nothing depends on the thread order.

use super::{index_type, make, per_value, runs_expr, value_blocks, Made, THREADS};
use crate::compile::CodegenError;
use crate::train::conv::{classify, classify_weight_grad, Family, Geo, WeightGrad};
use crate::train::{Ctx, Live};

/// Taps one pass of a weight-gradient block accumulates (its partials take `TAPS · THREADS`
/// floats of shared memory: 32 KiB).
pub const TAPS: usize = 32;

/// `(z, y, x)` of the linear index `r` (`i64`) over `sp`, declared as ints named `{p}z` etc.
fn decode3(p: &str, r: &str, sp: [usize; 3]) -> String {
    let [d, h, w] = sp;
    format!(
        "const int {p}x = (int)({r} % {w}), {p}y = (int)(({r} / {w}) % {h}), {p}z = (int)(({r} / {hw}) % {d});\n",
        hw = h * w
    )
}

pub(crate) fn emit(ctx: &Ctx) -> Result<Made, CodegenError> {
    let (g, bias, family) = classify(ctx)?;
    match family {
        Family::Gather => gather(ctx, &g, bias),
        Family::Scatter => scatter(ctx, &g, bias),
    }
}

fn gather(ctx: &Ctx, g: &Geo, bias: bool) -> Result<Made, CodegenError> {
    let (kl, spl, bpl) = (g.kl(), g.spl(), g.bpl());
    let [bd, bh, bw] = g.big;
    let [kd, kh, kw] = g.k;
    let [sz, sy, sx] = g.stride;
    let [pd, ph, pw] = g.pad;
    let total = g.n * g.cs * spl;
    let body = format!(
        "{open}{dec}const {ty} r = i / {spl};\n\
         const int s = (int)(r % {cs});\n\
         const {ty} n = r / {cs};\n\
         const float *__restrict__ big = in[0];\n\
         const float *__restrict__ w = in[1];\n\
         float acc = {b0};\n\
         for (int j = live[s]; j < live[s + 1]; j++) {{\n\
         \x20   const int b = live[j];\n\
         \x20   const int sh = {shift};\n\
         \x20   const float *__restrict__ wk = w + ((i64)s * {cb} + b) * {kl};\n\
         \x20   const float *__restrict__ xb = big + (n * {cb} + b) * {bpl}LL;\n\
         \x20   for (int a = 0; a < {kd}; a++) {{\n\
         \x20       const int tz = qz * {sz} + a - {pd};\n\
         \x20       if (tz < 0 || tz >= {bd}) continue;\n\
         \x20       const int uz = tz - sh;\n\
         \x20       if (uz < 0 || uz >= {bd}) continue;\n\
         \x20       for (int c = 0; c < {kh}; c++) {{\n\
         \x20           const int ty = qy * {sy} + c - {ph};\n\
         \x20           if (ty < 0 || ty >= {bh}) continue;\n\
         \x20           for (int e = 0; e < {kw}; e++) {{\n\
         \x20               const int tx = qx * {sx} + e - {pw};\n\
         \x20               if (tx < 0 || tx >= {bw}) continue;\n\
         \x20               acc = fmaf(wk[(a * {kh} + c) * {kw} + e], xb[((i64)uz * {bh} + ty) * {bw} + tx], acc);\n\
         \x20           }}\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n\
         out[i] = acc;\n",
        open = per_value(total),
        ty = index_type(total),
        dec = decode3("q", "i", g.small),
        cs = g.cs,
        cb = g.cb,
        b0 = if bias { "in[2][s]" } else { "0.0f" },
        shift = runs_expr("b", ctx.shift0.as_deref()),
    );
    make(
        ctx,
        &body,
        value_blocks(total),
        false,
        (g.n * spl * g.cb * kl) as u64,
        Live::Csr {
            d0: g.cs,
            d1: g.cb,
            transposed: false,
        },
    )
}

fn scatter(ctx: &Ctx, g: &Geo, bias: bool) -> Result<Made, CodegenError> {
    let (kl, spl, bpl) = (g.kl(), g.spl(), g.bpl());
    let [sd, sh, sw] = g.small;
    let [bd, ..] = g.big;
    let [kd, kh, kw] = g.k;
    let [szs, sys, sxs] = g.stride;
    let [pd, ph, pw] = g.pad;
    let total = g.n * g.cb * bpl;
    // One axis of the taps landing on big index `t`: small index `q` with `q·s + k - p = t`.
    let axis = |u: &str, t: &str, p: usize, k: &str, s: usize, q: &str, n: usize| {
        let cond = if s == 1 {
            String::new()
        } else {
            format!(" || {u} % {s} != 0")
        };
        format!(
            "const int {u} = {t} + {p} - {k};\n\
             if ({u} < 0{cond}) continue;\n\
             const int {q} = {u} / {s};\n\
             if ({q} >= {n}) continue;\n"
        )
    };
    let indent =
        |s: String, by: &str| -> String { s.lines().map(|l| format!("{by}{l}\n")).collect() };
    let body = format!(
        "{open}{dec}const {ty} r = i / {bpl};\n\
         const int cb = (int)(r % {cb});\n\
         const {ty} n = r / {cb};\n\
         const int tz = oz + {unshift};\n\
         if (tz < 0 || tz >= {bd}) {{ out[i] = 0.0f; return; }}\n\
         const float *__restrict__ sm = in[0];\n\
         const float *__restrict__ w = in[1];\n\
         float acc = {b0};\n\
         for (int j = live[cb]; j < live[cb + 1]; j++) {{\n\
         \x20   const int s = live[j];\n\
         \x20   const float *__restrict__ xs = sm + (n * {cs} + s) * {spl}LL;\n\
         \x20   const float *__restrict__ wk = w + ((i64)s * {cb} + cb) * {kl};\n\
         \x20   for (int a = 0; a < {kd}; a++) {{\n\
         {az}\
         \x20       for (int c = 0; c < {kh}; c++) {{\n\
         {ay}\
         \x20           for (int e = 0; e < {kw}; e++) {{\n\
         {ax}\
         \x20               acc = fmaf(wk[(a * {kh} + c) * {kw} + e], xs[((i64)qz * {sh} + qy) * {sw} + qx], acc);\n\
         \x20           }}\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n\
         out[i] = acc;\n",
        open = per_value(total),
        ty = index_type(total),
        dec = decode3("o", "i", g.big),
        cs = g.cs,
        cb = g.cb,
        b0 = if bias { "in[2][cb]" } else { "0.0f" },
        unshift = runs_expr("cb", ctx.out_unshift.as_deref()),
        az = indent(axis("uz", "tz", pd, "a", szs, "qz", sd), "        "),
        ay = indent(axis("uy", "oy", ph, "c", sys, "qy", sh), "            "),
        ax = indent(axis("ux", "ox", pw, "e", sxs, "qx", sw), "                "),
    );
    make(
        ctx,
        &body,
        value_blocks(total),
        false,
        (g.n * spl * g.cs * kl) as u64,
        Live::Csr {
            d0: g.cs,
            d1: g.cb,
            transposed: true,
        },
    )
}

/// `ConvBackwardWeight (x, dy)`: a block per weight kernel.
pub(crate) fn weight_grad(ctx: &Ctx) -> Result<Made, CodegenError> {
    let WeightGrad {
        g,
        small: si,
        big: bi,
        shift,
        ..
    } = classify_weight_grad(ctx)?;
    let (kl, spl, bpl) = (g.kl(), g.spl(), g.bpl());
    let [bd, bh, bw] = g.big;
    let [_, kh, kw] = g.k;
    let [szs, sys, sxs] = g.stride;
    let [pd, ph, pw] = g.pad;
    let positions = g.n * spl;
    let mut body = format!(
        "__shared__ float red[{TAPS} * {THREADS}];\n\
         const int t = (int)threadIdx.x;\n\
         const int s = (int)(blockIdx.x / {cb}), b = (int)(blockIdx.x % {cb});\n\
         float *__restrict__ dw = out + ((i64)s * {cb} + b) * {kl};\n\
         int on = 0;\n\
         for (int j = live[s]; j < live[s + 1]; j++) if (live[j] == b) {{ on = 1; break; }}\n\
         if (!on) {{ for (int k = t; k < {kl}; k += {THREADS}) dw[k] = 0.0f; return; }}\n\
         const float *__restrict__ sm = in[{si}];\n\
         const float *__restrict__ big = in[{bi}];\n\
         const int sh = {shift};\n",
        cb = g.cb,
        shift = runs_expr("b", shift.as_deref()),
    );
    for k0 in (0..kl).step_by(TAPS) {
        let k1 = (k0 + TAPS).min(kl);
        let nk = k1 - k0;
        body.push_str(&format!(
            "{{\n\
             \x20   float acc[{nk}];\n\
             #pragma unroll\n\
             \x20   for (int k = 0; k < {nk}; k++) acc[k] = 0.0f;\n\
             \x20   for ({ty} p = t; p < {positions}; p += {THREADS}) {{\n\
             \x20       const {ty} n = p / {spl};\n\
             \x20       const {ty} q = p - n * {spl};\n\
             \x20       {dec}\
             \x20       const float sv = sm[(n * {cs} + s) * {spl}LL + q];\n\
             \x20       const float *__restrict__ xb = big + (n * {cb} + b) * {bpl}LL;\n\
             #pragma unroll\n\
             \x20       for (int k = {k0}; k < {k1}; k++) {{\n\
             \x20           const int a = k / {khw}, c = (k / {kw}) % {kh}, e = k % {kw};\n\
             \x20           const int tz = qz * {szs} + a - {pd};\n\
             \x20           if (tz < 0 || tz >= {bd}) continue;\n\
             \x20           const int uz = tz - sh;\n\
             \x20           if (uz < 0 || uz >= {bd}) continue;\n\
             \x20           const int ty = qy * {sys} + c - {ph};\n\
             \x20           if (ty < 0 || ty >= {bh}) continue;\n\
             \x20           const int tx = qx * {sxs} + e - {pw};\n\
             \x20           if (tx < 0 || tx >= {bw}) continue;\n\
             \x20           acc[k - {k0}] = fmaf(sv, xb[((i64)uz * {bh} + ty) * {bw} + tx], acc[k - {k0}]);\n\
             \x20       }}\n\
             \x20   }}\n\
             #pragma unroll\n\
             \x20   for (int k = 0; k < {nk}; k++) red[k * {THREADS} + t] = acc[k];\n\
             \x20   __syncthreads();\n\
             \x20   if (t < {nk}) {{\n\
             \x20       float v = 0.0f;\n\
             \x20       for (int u = 0; u < {THREADS}; u++) v += red[t * {THREADS} + u];\n\
             \x20       dw[{k0} + t] = v;\n\
             \x20   }}\n\
             {last}\
             }}\n",
            dec = decode3("q", "q", g.small),
            ty = index_type(positions),
            cs = g.cs,
            cb = g.cb,
            khw = kh * kw,
            // The next pass overwrites `red`.
            last = if k1 < kl { "    __syncthreads();\n" } else { "" },
        ));
    }
    make(
        ctx,
        &body,
        (g.cs * g.cb) as u64,
        true,
        (g.n * spl * g.cb * kl) as u64,
        Live::Csr {
            d0: g.cs,
            d1: g.cb,
            transposed: false,
        },
    )
}
