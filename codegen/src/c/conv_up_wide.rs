//! The 16-lane (x86-avx512) kernel of the transposed convolutions of `conv_up.rs` (whose module
//! doc describes both widths and why they give the same bits): tiles `(n, input plane z, band)`
//! computing both depth taps at once, output channels innermost when dense, whole aligned output
//! lines (streamed past the caches for large outputs), the instance-norm statistics summed in the
//! 8-lane kernel's groups and order. [`emit16`] is called by `conv_up::emit` with its [`Setup`].

use std::fmt::Write;

use super::conv::{live_flops, ConvSpec};
use super::conv_bf16::pair;
use super::conv_up::{entry_loop_head, IB, VI};
use super::norm::{indent, partial_ptr};
use super::text::{cf, kernel, zero_row, zero_row_pads};
use crate::emit::{Consts, Kernel, NodeCtx};
use crate::layout::{PAD_LEFT, PAD_ROWS};

/// 8-lane vectors per statistics group: each group's statistics are reduced (`e2st_sum`) into
/// the tile's sums on their own, as one 8-lane micro call of `VI` vectors does, so that both
/// widths add the same doubles in the same order.
const SG: usize = VI;
/// Live entries times taps times 8-lane vectors per output channel (the FMAs of one micro call,
/// in 8-lane units) from which the wide kernel loops over output channels innermost.
const O_INNER_WORK: usize = 2048;
/// Output bytes from which the aligned output lines are streamed past the caches (an output that
/// large does not stay in this class of machine's L3 for its consumer anyway, and streaming saves
/// reading each line before writing it).
const STREAM_BYTES: usize = 32 << 20;
/// 16-lane input vectors per wide micro tile (`2 * W16` 8-lane vectors, two statistics groups).
const W16: usize = 3;

/// The 16-lane micro kernel (x86-avx512): for one output channel and one input row, `nv8`
/// 8-lane input vectors (held as `nv8.div_ceil(2)` 16-lane vectors, the last one half-loaded when
/// `nv8` is odd) and every tap `(a, b, c)` of the kernel (both depth taps when `kd = 2`: each
/// input load feeds `4 * kd` FMAs per vector). The output of depth tap `a` is plane `po + a *
/// d_stride`, its statistics `st[2a]`, `st[2a + 1]`.
///
/// With `pairs` (a bf16 input, [`pair_csr`]'s lists), each entry is two channels: 16 columns
/// of both as 16 bf16 pairs, one `vdpbf16ps` per tap and pair vector, into the same
/// accumulators; `w` then points at the entries' weight-pair words.
///
/// Stores: with `aligned` (64-byte aligned rows), each output row is written as whole aligned
/// lines, padding columns included: line `j` is the high half of output vector `j - 1` and the
/// low half of vector `j` (`e2f16_alignr`), the high half of a call's last vector waits in the
/// carry `cy[8 * (2a + b)]` for the next call of the row (zero at the row start), and the `last`
/// call of a row writes the final line with the zero right padding. Otherwise each output vector
/// is stored where it lies.
#[allow(clippy::too_many_arguments)]
fn micro16(
    name: &str,
    nv8: usize,
    tail_at: Option<usize>,
    ctx: &NodeCtx,
    kd: usize,
    ep: &Epi,
    last: bool,
    pairs: bool,
) -> String {
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let ow = y.shape[4];
    let kv = 4 * kd;
    let nw = nv8.div_ceil(2);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "static void {name}(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const {wt} *restrict w, int ne, int64_t pb, int64_t po, int o, double *restrict st,
    float *restrict cy) {{
    (void)W; (void)o; (void)st; (void)cy;",
        wt = if pairs { "uint32_t" } else { "float" },
    );
    for k in 0..kv {
        for v in 0..nw {
            let _ = writeln!(c, "    e2f16 a{k}_{v} = e2f16_zero();");
        }
    }
    if pairs {
        // Entries are channel pairs: 16 columns of both as 16 bf16 pairs, each pair vector
        // feeding one `vdpbf16ps` per tap (the tap's weight pair broadcast from memory).
        let _ = writeln!(
            c,
            "    for (int e = 0; e < ne; e++, w += {kv}) {{
        const e2h *p0 = {xb} + pb + (int64_t)ent[2 * e] * {cs};
        const e2h *p1 = {xb} + pb + (int64_t)ent[2 * e + 1] * {cs};",
            cs = x.c_stride,
            xb = x.c_base(),
        );
        for v in 0..nw {
            let m = if 2 * v + 1 < nv8 { "0xffffu" } else { "0xffu" };
            let _ = writeln!(
                c,
                "        const e2bf x{v} = e2bf_pairs_h(p0 + {o}, {m}, p1 + {o}, {m});",
                o = 16 * v
            );
        }
        for k in 0..kv {
            let _ = write!(c, "       ");
            for v in 0..nw {
                let _ = write!(c, " e2bf_dpm(a{k}_{v}, x{v}, w + {k});");
            }
            let _ = writeln!(c);
        }
    } else {
        c.push_str(&entry_loop_head(x, kv));
        for v in 0..nw {
            if 2 * v + 1 < nv8 {
                let _ = writeln!(c, "        const e2f16 x{v} = e2f16_load(p + {});", 16 * v);
            } else {
                let _ = writeln!(
                    c,
                    "        const e2f16 x{v} = e2f16_loadn(p + {}, 8);",
                    16 * v
                );
            }
        }
        for k in 0..kv {
            let _ = write!(c, "        {{ const e2f16 w{k} = e2f16_bcast(w + {k});");
            for v in 0..nw {
                let _ = write!(c, " a{k}_{v} = e2f16_fma(w{k}, x{v}, a{k}_{v});");
            }
            let _ = writeln!(c, " }}");
        }
    }
    let _ = writeln!(c, "    }}");
    if let Some(sl) = ep.slope {
        let _ = writeln!(c, "    const e2f16 vsl = e2f16_set1({});", cf(sl));
    }
    if let Some(boff) = ep.bias {
        let _ = writeln!(c, "    const e2f16 vb = e2f16_bcast(W + {boff} + o);");
    }
    // The output vectors: z{a}_{b}_{v8} covers columns 16 v8 .. 16 v8 + 15 of row b of plane a.
    for a in 0..kd {
        for b in 0..2 {
            let (k0, k1) = (4 * a + 2 * b, 4 * a + 2 * b + 1);
            for v8 in 0..nv8 {
                let (v, zip) = (v8 / 2, if v8 % 2 == 0 { "lo" } else { "hi" });
                let z = format!("z{a}_{b}_{v8}");
                let _ = writeln!(c, "    e2f16 {z} = e2f16_zip_{zip}(a{k0}_{v}, a{k1}_{v});");
                if ep.bias.is_some() {
                    let _ = writeln!(c, "    {z} = e2f16_add({z}, vb);");
                }
                if ep.slope.is_some() {
                    let _ = writeln!(c, "    {z} = e2f16_lrelu({z}, vsl);");
                }
                if let Some(xv) = tail_at {
                    let valid = ow.saturating_sub(16 * (xv + v8)).min(16);
                    if valid < 16 {
                        let _ = writeln!(c, "    {z} = e2f16_keep({z}, {valid});");
                    }
                }
            }
        }
    }
    if ep.norm {
        // Statistics in the 8-lane kernel's groups and order.
        for a in 0..kd {
            for g0 in (0..nv8).step_by(SG) {
                let _ = writeln!(c, "    {{ e2st vs = e2st_zero(), vq = e2st_zero();");
                for b in 0..2 {
                    for v8 in g0..(g0 + SG).min(nv8) {
                        let _ = writeln!(c, "      e2f16_stats(&vs, &vq, z{a}_{b}_{v8});");
                    }
                }
                let _ = writeln!(
                    c,
                    "      st[{}] += e2st_sum(vs); st[{}] += e2st_sum(vq); }}",
                    2 * a,
                    2 * a + 1
                );
            }
        }
    }
    for a in 0..kd {
        for b in 0..2 {
            let row = a * y.d_stride + b * y.row;
            if !ep.aligned {
                for v8 in 0..nv8 {
                    let _ = writeln!(
                        c,
                        "    e2f16_store({yb} + po + {}, z{a}_{b}_{v8});",
                        row + 16 * v8,
                        yb = y.c_base()
                    );
                }
                continue;
            }
            let cyo = 8 * (2 * a + b);
            let first = match row {
                0 => "po - 8".to_string(),
                r => format!("po + {}", r - 8),
            };
            let _ = writeln!(
                c,
                "    {st}({yb} + {first}, e2f16_alignr(z{a}_{b}_0, e2f16_bcast8(cy + {cyo}), 8));",
                st = ep.store,
                yb = y.c_base(),
            );
            for v8 in 1..nv8 {
                let _ = writeln!(
                    c,
                    "    {st}({yb} + po + {}, e2f16_alignr(z{a}_{b}_{v8}, z{a}_{b}_{}, 8));",
                    row + 16 * v8 - 8,
                    v8 - 1,
                    st = ep.store,
                    yb = y.c_base(),
                );
            }
            if last {
                let _ = writeln!(
                    c,
                    "    {st}({yb} + po + {}, e2f16_alignr(e2f16_zero(), z{a}_{b}_{}, 8));",
                    row + 16 * nv8 - 8,
                    nv8 - 1,
                    st = ep.store,
                    yb = y.c_base(),
                );
            } else {
                let _ = writeln!(c, "    e2f16_store_hi(cy + {cyo}, z{a}_{b}_{});", nv8 - 1);
            }
        }
    }
    c.push_str("}\n");
    c
}

/// The epilogue of the 16-lane micro kernels.
struct Epi {
    bias: Option<usize>,
    slope: Option<f32>,
    norm: bool,
    /// Whole aligned output lines (see [`micro16`]).
    aligned: bool,
    /// The store of an aligned line (`e2f16_store`, or the streaming `e2f16_stream`).
    store: &'static str,
}

/// What [`emit`] worked out, for [`emit16`].
pub(super) struct Setup {
    pub(super) kd: usize,
    pub(super) nvi: usize,
    pub(super) nb: usize,
    pub(super) ent_off: usize,
    pub(super) rp_off: usize,
    pub(super) w_off: usize,
    pub(super) bias: Option<usize>,
    pub(super) norm: bool,
    pub(super) slope: Option<f32>,
    /// Multiply bf16 channel pairs (`vdpbf16ps`): `ent_off`, `rp_off` and `w_off` are then
    /// those of [`pair_csr`]'s lists (`I` words).
    pub(super) pairs: bool,
}

/// The bf16 form of a transposed conv's CSR for the 16-lane kernel with `pairs`: each output
/// channel's live input channels two at a time (an odd list's last pair repeats its channel
/// with zero weights), `I` constants `[pair][2]` channels, the pairs per output channel's
/// offsets, and `[pair][kv]` weight words (`(w(c0), w(c1))` rounded to bf16, `c0` in the low
/// half); returns their offsets `(ents, rp, w)`.
pub(super) fn pair_csr(sp: &ConvSpec, kv: usize, consts: &mut Consts) -> (usize, usize, usize) {
    let mut rp = vec![0i32];
    let (mut ents, mut w) = (Vec::new(), Vec::new());
    for row in &sp.rows {
        for two in row.chunks(2) {
            let (c0, o0) = two[0];
            let (c1, o1) = two
                .get(1)
                .copied()
                .map_or((c0, None), |(c, o)| (c, Some(o)));
            ents.extend([c0 as i32, c1 as i32]);
            w.extend((0..kv).map(|k| {
                let hi = o1.map_or(0.0, |o| sp.wdata[o + k]);
                pair(sp.wdata[o0 + k], hi)
            }));
        }
        rp.push((ents.len() / 2) as i32);
    }
    (
        consts.push_i32(&ents),
        consts.push_i32(&rp),
        consts.push_i32(&w),
    )
}

/// The 16-lane kernel: tiles `(n, input plane z, band)`, each computing the `kd` output planes
/// `z * kd + a` of the band (their statistics go to the same partial slots as the 8-lane
/// kernel's `(oz, band)` tiles).
pub(super) fn emit16(ctx: &NodeCtx, sp: &ConvSpec, s: &Setup) -> Kernel {
    let g = &sp.g;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let [n, cin, d, h, _] = g.x;
    let [_, co, od, oh, _] = g.y;
    let (kd, nvi, nb) = (s.kd, s.nvi, s.nb);
    let kv = 4 * kd;
    let body_v8 = 2 * W16;
    let nxb = (nvi - 1) / body_v8;
    let vt = nvi - nxb * body_v8;
    let body_name = format!("{}_w{body_v8}", ctx.prefix);
    let tail_name = format!("{}_w{vt}t", ctx.prefix);
    // Whole aligned output lines where every output row starts a 64-byte line (padded rows of a
    // multiple of 16 floats whose values fill whole vectors).
    let aligned = y.offset % 16 == 0 && y.row % 16 == 0 && y.shape[4] == 16 * nvi;
    let ep = Epi {
        bias: s.bias,
        slope: s.slope,
        norm: s.norm,
        aligned,
        store: if aligned && 4 * n * y.n_stride >= STREAM_BYTES && ctx.ring.is_none() {
            "e2f16_stream"
        } else {
            "e2f16_store"
        },
    };
    let mut helpers = String::new();
    if nxb > 0 {
        helpers.push_str(&micro16(
            &body_name, body_v8, None, ctx, kd, &ep, false, s.pairs,
        ));
    }
    helpers.push_str(&micro16(
        &tail_name,
        vt,
        Some(nxb * body_v8),
        ctx,
        kd,
        &ep,
        true,
        s.pairs,
    ));

    let mut b = String::new();
    let _ = writeln!(
        b,
        "const int band = (int)(t % {nb}); const int64_t nz = t / {nb};
const int z = (int)(nz % {d}), n = (int)(nz / {d});
const int y0 = band * {IB}, y1 = y0 + {IB} < {h} ? y0 + {IB} : {h};"
    );
    // The next tile's input band, prefetched into L2 a few channels per output channel (its
    // first touch would otherwise wait on memory while the channels' lists first reach it).
    let tiles = n * d * nb;
    let _ = writeln!(
        b,
        "const int64_t tn = t + 1 < {tiles} ? t + 1 : t;
const int bn = (int)(tn % {nb}); const int64_t nzn = tn / {nb};
const int yn = bn * {IB}, rn = (yn + {IB} < {h} ? yn + {IB} : {h}) - yn;
const {xt} *pf = {xb} + {xo} + (nzn / {d}) * {xns} + (nzn % {d}) * {xds} + (int64_t)(yn + {PAD_ROWS}) * {xrow};",
        xt = x.c_type(),
        xb = x.c_base(),
        xo = x.offset,
        xns = x.n_stride,
        xds = x.d_stride,
        xrow = x.row,
    );
    let prefetch = format!(
        "for (int c = o * {cin} / {co}; c < (o + 1) * {cin} / {co}; c++) for (int l = 0; l < rn * {xrow}; l += 16) e2_prefetch2(pf + (int64_t)c * {cs} + l);",
        xrow = x.row,
        cs = x.c_stride,
    );
    if s.norm {
        let _ = writeln!(b, "double st[{}]; memset(st, 0, sizeof st);", 2 * co * kd);
    } else {
        let _ = writeln!(b, "double *st = 0;");
    }
    let ents: usize = sp.rows.iter().map(|r| r.len()).sum();
    let o_inner = ents * kv * body_v8 >= co * O_INNER_WORK;
    // The carries of the aligned stores (per output channel when the channels run innermost),
    // zeroed at each row start.
    let ncy = if o_inner { co * 16 * kd } else { 16 * kd };
    if aligned {
        let _ = writeln!(b, "float cy[{ncy}];");
    } else {
        let _ = writeln!(b, "float *cy = 0;");
    }
    let zcy = if aligned {
        "\nmemset(cy, 0, sizeof cy);"
    } else {
        ""
    };
    let (eo, wo) = (s.ent_off, s.w_off);
    let (ents_at, w_at) = match s.pairs {
        true => (
            format!("I + {eo} + 2 * e0"),
            format!("(const uint32_t *)(I + {wo}) + (int64_t)e0 * {kv}"),
        ),
        false => (
            format!("I + {eo} + e0"),
            format!("W + {wo} + (int64_t)e0 * {kv}"),
        ),
    };
    let call = |name: &str| {
        format!(
            "{name}(A, W, {ents_at}, {w_at}, e1 - e0, pb, po, o, st + {} * o, cy{});",
            2 * kd,
            if o_inner {
                format!(" + {} * o", 16 * kd)
            } else {
                String::new()
            },
        )
    };
    // Dense enough (a long entry list per micro call): the output channel loop runs inside the
    // column loop, so the input vectors of a micro tile stay in L1 for every output channel.
    // Sparse: one output channel at a time, its rows written as streams.
    let (rp_off, ycs) = (s.rp_off, y.c_stride);
    let row = format!(
        "const int64_t pr = {xo} + (int64_t)n * {xns} + (int64_t)z * {xds} + (int64_t)(yi + {PAD_ROWS}) * {xrow} + {PAD_LEFT};
const int64_t qr = {yo} + (int64_t)n * {yns} + {zp} * {zds} + (int64_t)(2 * yi + {PAD_ROWS}) * {yrow} + {PAD_LEFT};",
        xo = x.offset,
        xns = x.n_stride,
        xds = x.d_stride,
        xrow = x.row,
        yo = y.offset,
        yns = y.n_stride,
        zds = kd * y.d_stride,
        zp = super::conv_up::plane_index(ctx, "z", kd),
        yrow = y.row,
    );
    let row = format!("{row}{zcy}");
    let ents_o = format!("const int e0 = I[{rp_off} + o], e1 = I[{rp_off} + o + 1];");
    let tail = format!(
        "{{ const int64_t pb = pr + {tx}, po = qr + (int64_t)o * {ycs} + {ty}; {call} }}",
        tx = 8 * nxb * body_v8,
        ty = 16 * nxb * body_v8,
        call = call(&tail_name),
    );
    let body = if nxb == 0 {
        None
    } else {
        Some(format!(
            "const int64_t pb = pr + (int64_t)xv * 8, po = qr + (int64_t)o * {ycs} + (int64_t)xv * 16; {call}",
            call = call(&body_name),
        ))
    };
    let nxbv = nxb * body_v8;
    if o_inner {
        let _ = writeln!(
            b,
            "for (int yi = y0; yi < y1; yi++) {{
{}",
            indent(&row).trim_end()
        );
        if let Some(body) = &body {
            let _ = writeln!(
                b,
                "    for (int xv = 0; xv < {nxbv}; xv += {body_v8}) for (int o = 0; o < {co}; o++) {{
        {ents_o}
        {body}
    }}"
            );
        }
        let _ = writeln!(
            b,
            "    for (int o = 0; o < {co}; o++) {{
        {ents_o}
        {tail}
        if (yi == y0) {prefetch}
    }}
}}"
        );
    } else {
        let _ = writeln!(
            b,
            "for (int o = 0; o < {co}; o++) {{
    {ents_o}
    {prefetch}
    for (int yi = y0; yi < y1; yi++) {{
{}",
            indent(&indent(&row)).trim_end()
        );
        if let Some(body) = &body {
            let _ = writeln!(
                b,
                "        for (int xv = 0; xv < {nxbv}; xv += {body_v8}) {{ {body} }}"
            );
        }
        let _ = writeln!(
            b,
            "        {tail}
    }}
}}"
        );
    }
    let _ = writeln!(
        b,
        "for (int o = 0; o < {co}; o++) for (int a = 0; a < {kd}; a++) {{
    const int oz = z * {kd} + a;
    {yt} *pl = {yb} + {yo} + (int64_t)n * {yns} + (int64_t)o * {ycs} + {ozp} * {yds};
{pads}    if (band == 0) {{ {top}}}
    if (band == {last}) {{ {bot}}}",
        yt = y.c_type(),
        yb = y.c_base(),
        yo = y.offset,
        yns = y.n_stride,
        ycs = y.c_stride,
        yds = y.d_stride,
        ozp = super::conv_up::plane_index(ctx, "oz", 1),
        // Aligned rows were written whole, padding included.
        pads = if aligned {
            String::new()
        } else {
            format!(
                "    for (int y = 2 * y0; y < 2 * y1; y++) {{
        {yt} *rowp = pl + (y + {PAD_ROWS}) * {yrow} + {PAD_LEFT};
{}    }}
",
                indent(&indent(&zero_row_pads(y, "rowp", 16 * nvi))),
                yrow = y.row,
                yt = y.c_type(),
            )
        },
        top = zero_row(y, "pl"),
        bot = zero_row(y, &format!("(pl + {})", (oh + 1) * y.row)),
        last = nb - 1,
    );
    if s.norm {
        let _ = writeln!(
            b,
            "    double *pp = {};\n    pp[0] = st[{kd2} * o + 2 * a]; pp[1] = st[{kd2} * o + 2 * a + 1];",
            partial_ptr(
                ctx.scratch,
                od * nb,
                &format!("n * {co} + o"),
                &format!("oz * {nb} + band")
            ),
            kd2 = 2 * kd,
        );
    }
    b.push_str("}\n");
    if ep.store == "e2f16_stream" {
        b.push_str("e2_sfence();\n");
    }
    let what = format!(
        "{} up{} {}x2x2 {}->{}{}",
        ctx.label,
        if g.sparse { " sparse" } else { "" },
        kd,
        cin,
        co,
        if s.pairs { " bf16" } else { "" }
    );
    kernel(&ctx.prefix, &helpers, &b, n * d * nb, live_flops(sp), what)
}
