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
use crate::quant::{folded_codes, packing_params, ActQuant};

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
    let x = &ctx.inputs[0];
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
    epilogue16(&mut c, ctx, kd, nv8, tail_at, ep, last);
    c
}

/// The part of a 16-lane micro kernel after its accumulators `a{k}_{v}` (f32, tap `k = 4a + 2b
/// + c`, 16-lane input vector `v`) are summed: bias, leaky ReLU, the taps interleaved into the
/// output rows, statistics and stores (see [`micro16`]); closes the function.
fn epilogue16(
    c: &mut String,
    ctx: &NodeCtx,
    kd: usize,
    nv8: usize,
    tail_at: Option<usize>,
    ep: &Epi,
    last: bool,
) {
    let y = &ctx.output;
    let ow = y.shape[4];
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
}

/// The int8 form of [`micro16`] (an upsampling in an int8 bundle, [`Quads`]): each entry is
/// four input channels, `pk` points at the tile's packing ([`pack_quads`]) at this micro tile's
/// row and first column, `w` at the entries' weight words (the four channels' `i8` codes of
/// each tap). Dense: entry `e`'s words are quad `e`'s; sparse: `ent` lists the entries'
/// channels, whose code bytes are gathered into words (`e2q_gather4`). `vpdpbusd` sums them in
/// i32 lanes, which less the zero points' term times the output channel's scale are the f32
/// accumulators [`epilogue16`] takes.
#[allow(clippy::too_many_arguments)]
fn micro16_q(
    name: &str,
    nv8: usize,
    tail_at: Option<usize>,
    ctx: &NodeCtx,
    kd: usize,
    ep: &Epi,
    last: bool,
    q: &Quads,
) -> String {
    let kv = 4 * kd;
    let nw = nv8.div_ceil(2);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "E2_I8 static void {name}(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const uint32_t *restrict w, int ne, int64_t pb, int64_t po, int o, double *restrict st,
    float *restrict cy, const uint8_t *restrict pk) {{
    (void)W; (void)o; (void)st; (void)cy; (void)pb; (void)ent;"
    );
    if q.sparse {
        let _ = writeln!(c, "    const __m512i gidx = E2Q_GATHER4;");
    }
    for k in 0..kv {
        for v in 0..nw {
            let _ = writeln!(c, "    __m512i i{k}_{v} = _mm512_setzero_si512();");
        }
    }
    let _ = writeln!(c, "    for (int e = 0; e < ne; e++, w += {kv}) {{");
    let u = q.unit_bytes;
    if q.sparse {
        for j in 0..4 {
            let _ = writeln!(
                c,
                "        const uint8_t *p{j} = pk + (int64_t)ent[4 * e + {j}] * {u};"
            );
        }
        for v in 0..nw {
            let _ = writeln!(
                c,
                "        const __m512i x{v} = e2q_gather4(p0 + {o}, p1 + {o}, p2 + {o}, p3 + {o}, gidx);",
                o = 16 * v
            );
        }
    } else {
        let _ = writeln!(c, "        const uint8_t *px = pk + (int64_t)e * {u};");
        for v in 0..nw {
            let _ = writeln!(
                c,
                "        const __m512i x{v} = _mm512_load_si512((const void *)(px + {}));",
                64 * v
            );
        }
    }
    for k in 0..kv {
        let _ = write!(c, "       ");
        for v in 0..nw {
            let _ = write!(c, " e2q_dpm(i{k}_{v}, x{v}, w + {k});");
        }
        let _ = writeln!(c);
    }
    let _ = writeln!(
        c,
        "    }}
    const __m512 vq = _mm512_set1_ps(W[{os} + o]);",
        os = q.os
    );
    for k in 0..kv {
        let _ = writeln!(
            c,
            "    const __m512 vc{k} = _mm512_set1_ps(W[{cf} + o * {kv} + {k}]);",
            cf = q.comp
        );
        for v in 0..nw {
            let _ = writeln!(
                c,
                "    e2f16 a{k}_{v} = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(i{k}_{v}), vc{k}), vq);"
            );
        }
    }
    epilogue16(&mut c, ctx, kd, nv8, tail_at, ep, last);
    c
}

/// The int8 tables of an upsampling in an int8 bundle storing bf16 ([`Setup::quads`]): input
/// channels in quads, quantized per channel with the calibrated scale and zero point, weights
/// per output channel (activation scales folded in, symmetric). Dense: quads `4q .. 4q + 4`,
/// packed once per tile as words of the four channels' codes; DSFF-sparse: each output
/// channel's live channels four at a time (an incomplete last quad repeats its last channel
/// with zero weights), packed per channel as bytes and gathered into words per use.
pub(super) struct Quads {
    pub(super) sparse: bool,
    /// Quads of input channels (dense: `cin / 4`).
    pub(super) nq: usize,
    /// Sparse: `I` `[entry][4]` channels and the entries of each output channel (`rp`).
    pub(super) ents: usize,
    pub(super) rp: usize,
    /// `W`: `(1 / scale, zero point)` per input channel.
    pub(super) qp: usize,
    /// `I` words `[entry][kv]` (dense: `[o][q][kv]`): the four channels' codes of each tap.
    pub(super) w: usize,
    /// `W`: the zero points' term of each output channel and tap `[o][kv]` (exact integers).
    pub(super) comp: usize,
    /// `W`: the scale of each output channel.
    pub(super) os: usize,
    /// Bytes of one channel's (sparse) or quad's (dense) packed rows in a tile: `IB` rows of
    /// `16 nw` columns, one byte or word each.
    pub(super) unit_bytes: usize,
    /// Bytes of one packed row of a channel or quad.
    pub(super) row_bytes: usize,
}

/// The int8 tables of a transposed conv with activation `ranges` per input channel (see
/// [`Quads`]); `None` where its sums could leave f32's exact integers.
pub(super) fn quads(
    sp: &ConvSpec,
    kv: usize,
    ranges: &[[f32; 2]],
    nw: usize,
    consts: &mut Consts,
) -> Option<Quads> {
    let cin = sp.g.x[1];
    // The sums and the zero points' term stay integers f32 holds exactly (|code| <= 127 x 255
    // per channel and tap).
    let exact = 127 * 255 * cin < 1 << 24;
    let sparse = !(cin.is_multiple_of(4) && sp.rows.iter().all(|r| r.len() == cin));
    if ranges.len() != cin || !exact || sp.rows.iter().all(|r| r.is_empty()) {
        return None;
    }
    let aq: Vec<ActQuant> = ranges.iter().map(|r| ActQuant::of(r[0], r[1])).collect();
    let qp = packing_params(&aq);
    let (mut words, mut comp, mut os) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ents, mut rp) = (Vec::new(), vec![0i32]);
    for row in &sp.rows {
        let (codes, t) = folded_codes(row, sp.wdata, kv, &aq);
        os.push(t);
        // Entry i of the row (its channel `row[i].0`).
        let code = |i: usize, k: usize| codes[i * kv + k];
        for k in 0..kv {
            let z: i64 = row
                .iter()
                .enumerate()
                .map(|(i, &(ch, _))| i64::from(code(i, k)) * i64::from(aq[ch].zero))
                .sum();
            comp.push(z as f32);
        }
        // Dense rows are sorted by channel and complete: quad q is channels 4q .. 4q + 4.
        for q0 in (0..row.len()).step_by(4) {
            for j in 0..4 {
                ents.push(row[(q0 + j).min(row.len() - 1)].0 as i32);
            }
            for k in 0..kv {
                let b = |j: usize| match q0 + j < row.len() {
                    true => u32::from(code(q0 + j, k) as u8),
                    false => 0,
                };
                words.push((b(0) | (b(1) << 8) | (b(2) << 16) | (b(3) << 24)) as i32);
            }
        }
        rp.push((ents.len() / 4) as i32);
    }
    let row_bytes = 16 * nw * if sparse { 1 } else { 4 };
    Some(Quads {
        sparse,
        nq: cin / 4,
        ents: if sparse { consts.push_i32(&ents) } else { 0 },
        rp: if sparse { consts.push_i32(&rp) } else { 0 },
        qp: consts.push_f32(&qp),
        w: consts.push_i32(&words),
        comp: consts.push_f32(&comp),
        os: consts.push_f32(&os),
        unit_bytes: IB * row_bytes,
        row_bytes,
    })
}

/// The tile's packing of a quads upsampling (tile `(n, z, band)`, rows `y0 .. y1`), into `pk`
/// on the stack ([`quad_pack_fits`]): dense, each quad of input channels' rows as words of the
/// four channels' codes (`e2q_quad`, `[quad][row][16 nw columns]`); sparse, each channel's rows
/// as code bytes (`[channel][row][16 nw columns]`).
fn pack_quads(ctx: &NodeCtx, q: &Quads, nw: usize) -> String {
    let x = &ctx.inputs[0];
    let cin = x.shape[1];
    let row = format!(
        "{xb} + {xo} + (int64_t)n * {xns} + (int64_t)z * {xds} + (int64_t)(yi + {PAD_ROWS}) * {xrow} + {PAD_LEFT}",
        xb = x.c_base(),
        xo = x.offset,
        xns = x.n_stride,
        xds = x.d_stride,
        xrow = x.row,
    );
    let (rb, ub, cs) = (q.row_bytes, q.unit_bytes, x.c_stride);
    if q.sparse {
        return format!(
            "uint8_t pk[{}] __attribute__((aligned(64)));
for (int c = 0; c < {cin}; c++) {{
    const __m512 iv = _mm512_set1_ps(W[{qp} + 2 * c]), zp = _mm512_set1_ps(W[{qp} + 2 * c + 1]);
    for (int yi = y0; yi < y1; yi++) {{
        const e2h *r = {row} + (int64_t)c * {cs};
        uint8_t *pw = pk + (int64_t)c * {ub} + (int64_t)(yi - y0) * {rb};
        for (int v = 0; v < {nw}; v++) e2q_store8(pw + 16 * v, e2q_codes(e2h16_load(r + 16 * v), iv, zp));
    }}
}}
",
            cin * ub,
            qp = q.qp,
        );
    }
    let mut b = format!(
        "uint8_t pk[{}] __attribute__((aligned(64)));
for (int qd = 0; qd < {nq}; qd++) {{
    const float *qs = W + {qp} + 8 * qd;
",
        q.nq * ub,
        nq = q.nq,
        qp = q.qp,
    );
    for j in 0..4 {
        let _ = writeln!(
            b,
            "    const __m512 iv{j} = _mm512_set1_ps(qs[{}]), zp{j} = _mm512_set1_ps(qs[{}]);",
            2 * j,
            2 * j + 1
        );
    }
    let _ = writeln!(
        b,
        "    for (int yi = y0; yi < y1; yi++) {{
        const e2h *r = {row} + (int64_t)(4 * qd) * {cs};
        uint8_t *pw = pk + (int64_t)qd * {ub} + (int64_t)(yi - y0) * {rb};
        for (int v = 0; v < {nw}; v++)
            _mm512_store_si512((void *)(pw + 64 * v), e2q_quad(
                e2q_codes(e2h16_load(r + 16 * v), iv0, zp0),
                e2q_codes(e2h16_load(r + {cs} + 16 * v), iv1, zp1),
                e2q_codes(e2h16_load(r + {c2} + 16 * v), iv2, zp2),
                e2q_codes(e2h16_load(r + {c3} + 16 * v), iv3, zp3)));
    }}
}}",
        c2 = 2 * cs,
        c3 = 3 * cs,
    );
    b
}

/// Whether a quads tile's packed words (`cin` channels, input width `w`) fit the stack budget.
pub(super) fn quad_pack_fits(cin: usize, w: usize) -> bool {
    cin * IB * 16 * w.div_ceil(16) <= 256 * 1024
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
    /// Multiply int8 channel quads instead (`vpdpbusd`; [`Quads`]: dense or DSFF-sparse).
    pub(super) quads: Option<Quads>,
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
    let micro = |name: &str, nv8: usize, tail_at: Option<usize>, last: bool| match &s.quads {
        Some(q) => micro16_q(name, nv8, tail_at, ctx, kd, &ep, last, q),
        None => micro16(name, nv8, tail_at, ctx, kd, &ep, last, s.pairs),
    };
    if nxb > 0 {
        helpers.push_str(&micro(&body_name, body_v8, None, false));
    }
    helpers.push_str(&micro(&tail_name, vt, Some(nxb * body_v8), true));

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
    if let Some(q) = &s.quads {
        b.push_str(&pack_quads(ctx, q, nvi.div_ceil(2)));
    }
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
    // Quads: the tile's packing at this row and the micro tile's first column (`pb - pr`).
    let pk_at = match &s.quads {
        Some(q) => format!(
            ", pk + (int64_t)(yi - y0) * {} + (pb - pr){}",
            q.row_bytes,
            if q.sparse { "" } else { " * 4" }
        ),
        None => String::new(),
    };
    let (ents_at, w_at) = match s.pairs {
        _ if s.quads.is_some() => {
            let q = s.quads.as_ref().unwrap();
            (
                match q.sparse {
                    true => format!("I + {} + 4 * e0", q.ents),
                    false => "I".to_string(),
                },
                format!("(const uint32_t *)(I + {}) + (int64_t)e0 * {kv}", q.w),
            )
        }
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
            "{name}(A, W, {ents_at}, {w_at}, e1 - e0, pb, po, o, st + {} * o, cy{}{pk_at});",
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
    let ents_o = match &s.quads {
        Some(q) if !q.sparse => format!("const int e0 = o * {nq}, e1 = e0 + {nq};", nq = q.nq),
        Some(q) => format!(
            "const int e0 = I[{rp} + o], e1 = I[{rp} + o + 1];",
            rp = q.rp
        ),
        None => format!("const int e0 = I[{rp_off} + o], e1 = I[{rp_off} + o + 1];"),
    };
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
        match (&s.quads, s.pairs) {
            (Some(_), _) => " int8",
            (None, true) => " bf16",
            (None, false) => "",
        }
    );
    kernel(&ctx.prefix, &helpers, &b, n * d * nb, live_flops(sp), what)
}
