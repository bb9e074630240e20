//! CUDA convolutions: every `Conv3d`, `ConvTranspose3d` and `FusedConv3d`, normalized by the C
//! renderer's [`crate::c::conv::spec`] (geometry, per-channel depth shifts, per-output-channel
//! lists of live kernels, bias, norm and activation). With `--precision tf32|bf16` the convs
//! `super::mma` takes (stride 1 in H and W, `1x3x3`-style) run on tensor cores, and their
//! epilogue also writes the norm's partial statistics. Every other conv (and every conv in f32)
//! is one direct kernel: a block of
//! [`THREADS`] threads covers [`THREADS`] output positions of one plane `(n, o, z)` (grid x:
//! positions, y: output channels, z: `n * D`), each thread summing its live kernels.
//!
//! The depth shift is read through (channel `c` is read at depth `z - shift(c)`, zero outside),
//! so no shifted copy exists; DSFF sparsity is the CSR of live kernels per output channel
//! (only live kernels are read or multiplied); bias and a leaky ReLU without norm are applied
//! before the one store; with an instance norm, the statistics and apply kernels of
//! [`super::ops`] follow. It is the simple, f32-exact kernel: no shared-memory tiling.

use super::ops::{norm_apply, norm_stats};
use super::text::{at, cf, grid_yz, kernel, THREADS};
use crate::c::conv::{live_flops, slope_in_conv, spec};
use crate::c::err;
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::precision::Precision;

pub fn emit(
    ctx: &NodeCtx,
    consts: &mut Consts,
    precision: Precision,
) -> Result<Vec<Kernel>, EmitError> {
    let sp = spec(ctx)?;
    let mma = match precision {
        Precision::Tf32 => Some(super::mma::Mma::Tf32),
        Precision::Bf16 => Some(super::mma::Mma::Bf16),
        // int8 is refused for CUDA targets before any kernel (`Precision::check`).
        Precision::F32 | Precision::Int8 => None,
    };
    if let Some(mma) = mma.filter(|_| super::mma::takes(&sp.g)) {
        // The tensor-core kernel writes the norm's partial statistics itself.
        return super::mma::emit(ctx, &sp, consts, mma);
    }
    let g = &sp.g;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let [n, _, d, h, w] = g.x;
    let [_, co, od, oh, ow] = g.y;
    let [kd, kh, kw] = g.k;
    let [sd, sh, sw] = g.s;
    let [pd, ph, pw] = g.p;
    let kvol = g.kvol();
    if y.shape != g.y || x.shape != g.x {
        return Err(err(ctx, "views and geometry differ"));
    }
    let csr = sp.push_csr(kvol, consts);
    let shifts: Vec<i32> = sp
        .shifts
        .iter()
        .map(|&s| s.clamp(-(1 << 30), 1 << 30) as i32)
        .collect();
    let sh_off = consts.push_i32(&shifts);
    let bias = sp.bias.map(|b| consts.push_f32(b));
    let xrow = |z: &str| at(x, "n", "c", z, "0", "0");
    let taps = if g.transposed {
        format!(
            "for (int a = 0; a < {kd}; a++) {{
    const int tz = oz + {pd} - a;
    if (tz < 0 || tz % {sd} != 0 || tz / {sd} >= {d}) continue;
    const float *xp = A + {xp};
    for (int b = 0; b < {kh}; b++) {{
        const int ty = oy + {ph} - b;
        if (ty < 0 || ty % {sh} != 0 || ty / {sh} >= {h}) continue;
        for (int q = 0; q < {kw}; q++) {{
            const int tx = ox + {pw} - q;
            if (tx < 0 || tx % {sw} != 0 || tx / {sw} >= {w}) continue;
            acc = fmaf(wk[(a * {kh} + b) * {kw} + q], xp[(i64)(ty / {sh}) * {row} + tx / {sw}], acc);
        }}
    }}
}}",
            xp = xrow(&format!("tz / {sd}")),
            row = x.row,
        )
    } else {
        format!(
            "const int s = I[{sh_off} + c];
for (int a = 0; a < {kd}; a++) {{
    const int iz = oz * {sd} - {pd} + a;
    if (iz < 0 || iz >= {d}) continue;
    const int jz = iz - s;
    if (jz < 0 || jz >= {d}) continue;
    const float *xp = A + {xp};
    for (int b = 0; b < {kh}; b++) {{
        const int iy = oy * {sh} - {ph} + b;
        if (iy < 0 || iy >= {h}) continue;
        for (int q = 0; q < {kw}; q++) {{
            const int ix = ox * {sw} - {pw} + q;
            if (ix < 0 || ix >= {w}) continue;
            acc = fmaf(wk[(a * {kh} + b) * {kw} + q], xp[(i64)iy * {row} + ix], acc);
        }}
    }}
}}",
            xp = xrow("jz"),
            row = x.row,
        )
    };
    let mut epilogue = String::from("float v = acc");
    if let Some(b) = bias {
        epilogue.push_str(&format!(" + W[{b} + o]"));
    }
    epilogue.push_str(";\n");
    if let Some(s) = slope_in_conv(&sp) {
        epilogue.push_str(&format!("v = e2_lrelu(v, {});\n", cf(s)));
    }
    let body = format!(
        "const int p = (int)blockIdx.x * {THREADS} + (int)threadIdx.x;
if (p >= {plane}) return;
const int o = (int)blockIdx.y, n = (int)blockIdx.z / {od}, oz = (int)blockIdx.z % {od};
const int oy = p / {ow}, ox = p % {ow};
float acc = 0.0f;
const int e1 = I[{rp} + o + 1];
for (int e = I[{rp} + o]; e < e1; e++) {{
    const int c = I[{ents} + e];
    const float *wk = W + {wo}LL + (i64)e * {kvol};
{taps}
}}
{epilogue}A[{out}] = v;
",
        plane = oh * ow,
        rp = csr.rp,
        ents = csr.ents,
        wo = csr.w,
        taps = indent(&taps),
        out = at(y, "n", "o", "oz", "oy", "ox"),
    );
    let blocks_x = (oh * ow).div_ceil(THREADS as usize);
    let grid = [
        grid_yz(ctx, blocks_x, "output plane blocks")?,
        grid_yz(ctx, co, "output channels")?,
        grid_yz(ctx, n * od, "batch x output depth")?,
    ];
    let what = format!(
        "{} conv{}{} {:?}",
        ctx.label,
        if g.transposed { " transposed" } else { "" },
        if g.sparse { " sparse" } else { "" },
        g.k
    );
    let mut ks = vec![kernel(
        &ctx.prefix,
        &body,
        grid,
        [THREADS, 1, 1],
        false,
        live_flops(&sp),
        what,
    )];
    if let Some((eps, gamma, beta)) = sp.norm {
        ks.push(norm_stats(ctx, consts, y, eps, gamma)?);
        ks.push(norm_apply(ctx, consts, y, y, ctx.scratch, beta, sp.slope)?);
    }
    Ok(ks)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}
