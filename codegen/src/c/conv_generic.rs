//! The fallback for every convolution the fast paths do not take (other kernels, paddings and
//! strides in H/W, generic transposed convs): plain loops with bounds checks, one tile per
//! output plane `(n, o, oz)`, one row accumulator at a time. Correct first; gcc vectorizes the
//! stride-1 inner loops. Depth shifts, sparse per-output lists, bias, the norm partials (one per
//! plane) and the activation work as on the fast path.

use std::fmt::Write;

use super::conv::{live_flops, slope_in_conv, ConvSpec};
use super::norm::partial_ptr;
use super::text::{cf, kernel, nvec, zero_row, zero_row_pads};
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::layout::{PAD_LEFT, PAD_ROWS};

pub fn emit(ctx: &NodeCtx, sp: &ConvSpec, consts: &mut Consts) -> Result<Kernel, EmitError> {
    let g = &sp.g;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let [n, _, d, h, w] = g.x;
    let [_, co, od, oh, ow] = g.y;
    let [kd, kh, kw] = g.k;
    let [sd, sh, sw] = g.s;
    let [pd, ph, pw] = g.p;
    let kvol = g.kvol();
    let nv = nvec(ow);
    let csr = sp.push_csr(kvol, consts);
    let (ent_off, rp_off, w_off) = (csr.ents, csr.rp, csr.w);
    let sh_off = consts.push_i32(&sp.shifts.iter().map(|&s| s as i32).collect::<Vec<_>>());
    let bias = sp.bias.map(|b| consts.push_f32(b));
    let norm = sp.norm.is_some();

    let mut b = String::new();
    let _ = writeln!(
        b,
        "const int oz = (int)(t % {od}); const int64_t r = t / {od};
const int o = (int)(r % {co}), n = (int)(r / {co});
float *pl = A + {yo} + (int64_t)n * {yns} + (int64_t)o * {ycs} + (int64_t)oz * {yds};
const int e0 = I[{rp_off} + o], e1 = I[{rp_off} + o + 1];
double ss = 0.0, sq = 0.0; (void)ss; (void)sq;
{top}{bot}for (int y = 0; y < {oh}; y++) {{
    float acc[{accn}];
    for (int q = 0; q < {accn}; q++) acc[q] = 0.0f;
    for (int e = e0; e < e1; e++) {{
        const int c = I[{ent_off} + e];
        const float *wk = W + {w_off} + (int64_t)e * {kvol};
        for (int a = 0; a < {kd}; a++) {{",
        yo = y.offset,
        yns = y.n_stride,
        ycs = y.c_stride,
        yds = y.d_stride,
        top = zero_row(y, "pl"),
        bot = zero_row(y, &format!("(pl + {})", (oh + 1) * y.row)),
        accn = 8 * nv,
    );
    let xrow = |iz: &str, iy: &str| {
        format!(
            "const float *xr = A + {} + (int64_t)n * {} + (int64_t)c * {} + (int64_t)({iz}) * {} + ({iy} + {PAD_ROWS}) * {} + {PAD_LEFT};",
            x.offset, x.n_stride, x.c_stride, x.d_stride, x.row
        )
    };
    if g.transposed {
        let _ = write!(
            b,
            "            const int tz = oz + {pd} - a;
            if (tz < 0 || tz % {sd} != 0 || tz / {sd} >= {d}) continue;
            const int iz = tz / {sd};
            for (int bb = 0; bb < {kh}; bb++) {{
                const int ty = y + {ph} - bb;
                if (ty < 0 || ty % {sh} != 0 || ty / {sh} >= {h}) continue;
                const int iy = ty / {sh};
                {xr}
                for (int cc = 0; cc < {kw}; cc++) {{
                    const float wt = wk[(a * {kh} + bb) * {kw} + cc];
                    for (int q = 0; q < {ow}; q++) {{
                        const int tx = q + {pw} - cc;
                        if (tx >= 0 && tx % {sw} == 0 && tx / {sw} < {w}) acc[q] += wt * xr[tx / {sw}];
                    }}
                }}
            }}
",
            xr = xrow("iz", "iy"),
        );
    } else {
        // Output column range whose input column is inside the row, per kernel column.
        let range = |cc: usize| {
            let ok: Vec<usize> = (0..ow)
                .filter(|&q| {
                    let ix = (q * sw + cc) as i64 - pw as i64;
                    (0..w as i64).contains(&ix)
                })
                .collect();
            (
                ok.first().copied().unwrap_or(0),
                ok.last().map_or(0, |l| l + 1),
            )
        };
        let (lo, hi): (Vec<String>, Vec<String>) = (0..kw)
            .map(|cc| {
                let (l, h) = range(cc);
                (l.to_string(), h.to_string())
            })
            .unzip();
        let _ = write!(
            b,
            "            static const int XLO[{kw}] = {{{lo}}}, XHI[{kw}] = {{{hi}}};
            const int iz = oz * {sd} - {pd} + a;
            if (iz < 0 || iz >= {d}) continue;
            const int jz = iz - I[{sh_off} + c];
            if (jz < 0 || jz >= {d}) continue;
            for (int bb = 0; bb < {kh}; bb++) {{
                const int iy = y * {sh} - {ph} + bb;
                if (iy < 0 || iy >= {h}) continue;
                {xr}
                for (int cc = 0; cc < {kw}; cc++) {{
                    const float wt = wk[(a * {kh} + bb) * {kw} + cc];
                    const float *xs = xr + cc - {pw};
                    for (int q = XLO[cc]; q < XHI[cc]; q++) acc[q] += wt * xs[q * {sw}];
                }}
            }}
",
            lo = lo.join(", "),
            hi = hi.join(", "),
            xr = xrow("jz", "iy"),
        );
    }
    let _ = writeln!(b, "        }}\n    }}");
    let _ = writeln!(
        b,
        "    float *rowp = pl + (y + {PAD_ROWS}) * {} + {PAD_LEFT};",
        y.row
    );
    let _ = writeln!(b, "    for (int q = 0; q < {ow}; q++) {{");
    let _ = writeln!(
        b,
        "        float v = acc[q]{};",
        bias.map_or(String::new(), |bo| format!(" + W[{bo} + o]"))
    );
    if let Some(sl) = slope_in_conv(sp) {
        let _ = writeln!(b, "        v = e2_lrelu1(v, {});", cf(sl));
    }
    if norm {
        let _ = writeln!(b, "        ss += (double)v; sq += (double)v * (double)v;");
    }
    let _ = writeln!(b, "        rowp[q] = v;\n    }}");
    let _ = writeln!(
        b,
        "    for (int q = {ow}; q < {}; q++) rowp[q] = 0.0f;",
        8 * nv
    );
    for l in zero_row_pads(y, "rowp", 8 * nv).lines() {
        let _ = writeln!(b, "    {l}");
    }
    b.push_str("}\n");
    if norm {
        let _ = writeln!(
            b,
            "{{ double *pp = {}; pp[0] = ss; pp[1] = sq; }}",
            partial_ptr(ctx.scratch, od, &format!("n * {co} + o"), "oz")
        );
    }
    let what = format!("{} conv generic {:?}", ctx.label, g.k);
    Ok(kernel(
        &ctx.prefix,
        "",
        &b,
        n * co * od,
        live_flops(sp),
        what,
    ))
}
