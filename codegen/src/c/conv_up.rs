//! Transposed convolutions with a `(kd, 2, 2)` kernel equal to their stride and no padding (the
//! E2ENet upsampling convs), dense or kernel-sparse.
//!
//! Every output voxel gets exactly one tap: output plane `oz` reads input plane `oz / kd` with
//! depth tap `oz % kd`, output row `2y + b` input row `y`, output column `2x + c` input column
//! `x`. Each output channel walks its list of live input channels (`[c]`, weights
//! `[c][kd][2][2]`); every output value is one chain of FMAs over that list in order, then the
//! bias, then the leaky ReLU, whatever the blocking, so both kernels below give the same bits.
//!
//! 8 lanes (AVX2, NEON, portable; and AVX-512 rows of at most 8 input columns): tiles are `(n,
//! oz, band of IB input rows)`, computing every output channel. The micro kernel holds, for one
//! output channel and one input row, the four (b, c) tap planes of `VI` input vectors (12
//! accumulators), and interleaves the c = 0 / c = 1 accumulators into the output columns at the
//! store (`e2f8_zip_lo` / `e2f8_zip_hi`).
//!
//! 16 lanes (AVX-512, [`emit16`]): tiles are `(n, input plane z, band)` and compute both depth
//! taps at once (`kd * 4` tap planes of up to `W16` 16-lane input vectors: 24 accumulators, each
//! input load feeding 24 FMAs), interleaved with `e2f16_zip_lo` / `e2f16_zip_hi`. With long entry
//! lists (dense) the output channels run innermost, so a micro tile's input vectors stay in L1
//! across them; sparse tiles take one output channel at a time and write its rows as streams.
//! Where output rows start 64-byte lines the stores are whole aligned lines (padding included,
//! cut across the interleaved vectors with `e2f16_alignr`, the last half vector of a micro call
//! carried to the next), streamed past the caches for outputs over `STREAM_BYTES`; each tile
//! prefetches the next tile's input band into L2. The instance-norm statistics go to the same
//! `(oz, band)` partial slots as the 8-lane kernel's, summed in the same groups and order.
//!
//! In bundles with bf16 kernels (`--precision bf16`, and int8 storing bf16 activations), a
//! 16-lane kernel reading a bf16 view multiplies **channel pairs** with `vdpbf16ps` instead:
//! each output channel's live inputs two at a time (`conv_up_wide::pair_csr`, weights rounded
//! to bf16), 16 columns of both loaded as 16 pairs (`e2bf_pairs_h`) that feed one instruction
//! per tap. Not the f32 bits then, but the bf16 bundles' rounding; on AMOS-CT (Zen 4, 2
//! threads) the level-1 upsamplings took 0.039-0.040 s against 0.054-0.055 s in f32, the
//! level-0 ones 0.126-0.133 s against 0.134-0.140 s (3 alternating rounds, 2026-12-05).
//!
//! In int8 bundles storing bf16, an upsampling whose input has calibrated ranges multiplies
//! **int8 channel quads** with `vpdpbusd` instead (`conv_up_wide::quads`: four channels' codes
//! in each word, every product useful): AMOS-CT's dense level-0 upsamplings 0.536 -> 0.261 s,
//! the 20%-sparse ones 0.128 -> 0.095 s (2026-12-05).

use std::fmt::Write;

use super::conv::{live_flops, slope_in_conv, ConvSpec, Geom};
use super::conv_up_wide::{emit16, pair_csr, quad_pack_fits, quads, Setup};
use super::dialect::Dialect;
use super::norm::{indent, partial_ptr};
use super::text::{cf, kernel, nvec, zero_row, zero_row_pads};
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::layout::{View, PAD_LEFT, PAD_ROWS};

/// Input rows per tile.
pub(super) const IB: usize = 4;
/// Input vectors per micro tile.
pub(super) const VI: usize = 3;

/// Instance-norm partial slots per sample: one per `(oz, band)` (the 8-lane kernel's tiles; a
/// 16-lane tile fills the `kd` slots of its input plane).
pub fn tiles_per_sample(g: &Geom) -> usize {
    g.y[2] * g.x[3].div_ceil(IB)
}

/// The C expression (int64_t) of output plane index `var` in units of `per` planes: the plane
/// itself, or its slot where the output view is a ring of planes (`NodeCtx::ring`).
pub(super) fn plane_index(ctx: &NodeCtx, var: &str, per: usize) -> String {
    match ctx.ring {
        None => format!("(int64_t){var}"),
        Some(slots) => format!("(int64_t)({var} & {})", slots / per - 1),
    }
}

#[allow(clippy::too_many_arguments)]
fn micro(
    name: &str,
    vi: usize,
    tail_at: Option<usize>,
    ctx: &NodeCtx,
    kv: usize,
    bias: Option<usize>,
    slope: Option<f32>,
    norm: bool,
) -> String {
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let ow = y.shape[4];
    let mut c = String::new();
    let _ = writeln!(
        c,
        "static void {name}(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int64_t po, int o, double *restrict st) {{
    (void)W; (void)o; (void)st;"
    );
    for bc in 0..4 {
        for v in 0..vi {
            let _ = writeln!(c, "    e2f8 a{bc}_{v} = e2f8_zero();");
        }
    }
    c.push_str(&entry_loop_head(x, kv));
    for bc in 0..4 {
        let _ = writeln!(c, "        const e2f8 w{bc} = e2f8_bcast(w + {bc});");
    }
    for v in 0..vi {
        let _ = writeln!(c, "        {{ const e2f8 x = e2f8_load(p + {});", 8 * v);
        for bc in 0..4 {
            let _ = writeln!(c, "          a{bc}_{v} = e2f8_fma(w{bc}, x, a{bc}_{v});");
        }
        let _ = writeln!(c, "        }}");
    }
    let _ = writeln!(c, "    }}");
    if let Some(sl) = slope {
        let _ = writeln!(c, "    const e2f8 vsl = e2f8_set1({});", cf(sl));
    }
    if let Some(boff) = bias {
        let _ = writeln!(c, "    const e2f8 vb = e2f8_bcast(W + {boff} + o);");
    }
    if norm {
        let _ = writeln!(c, "    e2st vs = e2st_zero(), vq = e2st_zero();");
    }
    for b in 0..2 {
        for v in 0..vi {
            let (c0, c1) = (2 * b, 2 * b + 1);
            let _ = writeln!(c, "    {{");
            for h in 0..2 {
                let zip = if h == 0 { "lo" } else { "hi" };
                let _ = writeln!(c, "      {{ e2f8 v = e2f8_zip_{zip}(a{c0}_{v}, a{c1}_{v});");
                if bias.is_some() {
                    let _ = writeln!(c, "        v = e2f8_add(v, vb);");
                }
                if slope.is_some() {
                    let _ = writeln!(c, "        v = e2f8_lrelu(v, vsl);");
                }
                if let Some(xv) = tail_at {
                    let start = 16 * (xv + v) + 8 * h;
                    let valid = ow.saturating_sub(start).min(8);
                    if valid < 8 {
                        let _ = writeln!(c, "        v = e2f8_keep(v, {valid});");
                    }
                }
                let _ = writeln!(
                    c,
                    "        e2f8_store({} + po + {}, v);",
                    y.c_base(),
                    b * y.row + 16 * v + 8 * h
                );
                if norm {
                    let _ = writeln!(c, "        e2f8_stats(&vs, &vq, v);");
                }
                let _ = writeln!(c, "      }}");
            }
            let _ = writeln!(c, "    }}");
        }
    }
    if norm {
        let _ = writeln!(c, "    st[0] += e2st_sum(vs); st[1] += e2st_sum(vq);");
    }
    c.push_str("}\n");
    c
}

/// The kernel of an upsampling conv: 16 lanes where the dialect has them and a row holds two
/// 8-lane input vectors ([`emit16`]), else 8. With `bf16` (a bundle with bf16 kernels) and a
/// bf16 input view, the 16-lane kernel multiplies bf16 channel pairs ([`pair_csr`]); the 8-lane
/// one stays f32.
/// The head of a micro kernel's loop over its entries (one live input channel each, `kv`
/// weights): `p` points at the channel's row at `pb`. Shared by the 8- and 16-lane f32 kernels.
pub(super) fn entry_loop_head(x: &View, kv: usize) -> String {
    format!(
        "    for (int e = 0; e < ne; e++, w += {kv}) {{
        const {xt} *p = {xb} + pb + (int64_t)ent[e] * {cs};\n",
        cs = x.c_stride,
        xt = x.c_type(),
        xb = x.c_base(),
    )
}

pub fn emit(
    ctx: &NodeCtx,
    sp: &ConvSpec,
    consts: &mut Consts,
    bf16: bool,
    int8: bool,
) -> Result<Kernel, EmitError> {
    let g = &sp.g;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let [n, cin, _, h, w] = g.x;
    let [_, co, od, oh, _] = g.y;
    let kd = g.k[0];
    let kv = kd * 4;
    let nvi = nvec(w);
    let nb = h.div_ceil(IB);
    // 16 lanes from two 8-lane input vectors a row (one would leave half of every FMA empty).
    let wide = Dialect::of(ctx.isa).wide == 16 && nvi >= 2;
    let pairs = wide && bf16 && x.is_bf16();
    // int8 bundles storing bf16: upsamplings with calibrated input ranges multiply int8
    // channel quads (dense or DSFF-sparse).
    let quads = match (&ctx.act_ranges, pairs && int8 && ctx.channel_map.is_none()) {
        (Some(r), true) if quad_pack_fits(cin, w) => quads(sp, kv, r, nvi.div_ceil(2), consts),
        _ => None,
    };
    // Per-output CSR of input channels; weights [entry][kd][2][2] (or of channel pairs).
    let (ent_off, rp_off, w_off) = match pairs {
        _ if quads.is_some() => (0, 0, 0),
        true => pair_csr(sp, kv, consts),
        false => {
            let csr = sp.push_csr(kv, consts);
            (csr.ents, csr.rp, csr.w)
        }
    };
    let bias = sp.bias.map(|b| consts.push_f32(b));
    let norm = sp.norm.is_some();
    let slope = slope_in_conv(sp);

    if wide {
        let st = Setup {
            pairs,
            quads,
            kd,
            nvi,
            nb,
            ent_off,
            rp_off,
            w_off,
            bias,
            norm,
            slope,
        };
        return Ok(emit16(ctx, sp, &st));
    }

    let nxb = (nvi - 1) / VI;
    let vt = nvi - nxb * VI;
    let body_name = format!("{}_u{VI}", ctx.prefix);
    let tail_name = format!("{}_u{vt}t", ctx.prefix);
    let mut helpers = String::new();
    if nxb > 0 {
        helpers.push_str(&micro(&body_name, VI, None, ctx, kv, bias, slope, norm));
    }
    helpers.push_str(&micro(
        &tail_name,
        vt,
        Some(nxb * VI),
        ctx,
        kv,
        bias,
        slope,
        norm,
    ));

    let mut b = String::new();
    let _ = writeln!(
        b,
        "const int band = (int)(t % {nb}); const int64_t nz = t / {nb};
const int oz = (int)(nz % {od}), n = (int)(nz / {od});
const int z = oz / {kd}, a = oz % {kd};
const int y0 = band * {IB}, y1 = y0 + {IB} < {h} ? y0 + {IB} : {h};"
    );
    if norm {
        let _ = writeln!(b, "double st[{}]; memset(st, 0, sizeof st);", 2 * co);
    } else {
        let _ = writeln!(b, "double *st = 0;");
    }
    let call = |name: &str| {
        format!(
            "{name}(A, W, I + {ent_off} + e0, W + {w_off} + (int64_t)e0 * {kv} + a * 4, e1 - e0, pb, po, o, st + 2 * o);"
        )
    };
    let _ = write!(
        b,
        "for (int o = 0; o < {co}; o++) {{
    const int e0 = I[{rp_off} + o], e1 = I[{rp_off} + o + 1];
    for (int yi = y0; yi < y1; yi++) {{
        int64_t pb = {xo} + (int64_t)n * {xns} + (int64_t)z * {xds} + (int64_t)(yi + {PAD_ROWS}) * {xrow} + {PAD_LEFT};
        int64_t po = {yo} + (int64_t)n * {yns} + (int64_t)o * {ycs} + {ozp} * {yds} + (int64_t)(2 * yi + {PAD_ROWS}) * {yrow} + {PAD_LEFT};
        for (int xv = 0; xv < {nxbv}; xv += {VI}) {{ {body} pb += {xstep}; po += {ystep}; }}
        {tail}
    }}
}}
",
        xo = x.offset,
        xns = x.n_stride,
        xds = x.d_stride,
        xrow = x.row,
        yo = y.offset,
        yns = y.n_stride,
        ycs = y.c_stride,
        yds = y.d_stride,
        ozp = plane_index(ctx, "oz", 1),
        yrow = y.row,
        nxbv = nxb * VI,
        body = if nxb > 0 { call(&body_name) } else { String::new() },
        tail = call(&tail_name),
        xstep = 8 * VI,
        ystep = 16 * VI,
    );
    let _ = writeln!(
        b,
        "for (int o = 0; o < {co}; o++) {{
    {yt} *pl = {yb} + {yo} + (int64_t)n * {yns} + (int64_t)o * {ycs} + {ozp} * {yds};
    for (int y = 2 * y0; y < 2 * y1; y++) {{
        {yt} *rowp = pl + (y + {PAD_ROWS}) * {yrow} + {PAD_LEFT};
{pads}    }}
    if (band == 0) {{ {top}}}
    if (band == {last}) {{ {bot}}}",
        yo = y.offset,
        yns = y.n_stride,
        ycs = y.c_stride,
        yds = y.d_stride,
        ozp = plane_index(ctx, "oz", 1),
        yrow = y.row,
        pads = indent(&indent(&zero_row_pads(y, "rowp", 16 * nvi))),
        yt = y.c_type(),
        yb = y.c_base(),
        top = zero_row(y, "pl"),
        bot = zero_row(y, &format!("(pl + {})", (oh + 1) * y.row)),
        last = nb - 1,
    );
    if norm {
        let _ = writeln!(
            b,
            "    double *pp = {};\n    pp[0] = st[2 * o]; pp[1] = st[2 * o + 1];",
            partial_ptr(
                ctx.scratch,
                od * nb,
                &format!("n * {co} + o"),
                &format!("oz * {nb} + band")
            )
        );
    }
    b.push_str("}\n");
    let what = format!(
        "{} up{} {}x2x2 {}->{}",
        ctx.label,
        if g.sparse { " sparse" } else { "" },
        kd,
        cin,
        co
    );
    Ok(kernel(
        &ctx.prefix,
        &helpers,
        &b,
        n * od * nb,
        live_flops(sp),
        what,
    ))
}
