//! `--precision int8` on x86-avx512: the DSFF-sparse 3x3 stride-1 convs of the fast path
//! (E2ENet's 1x3x3 fusion convs, depth-shifted or not, any depth kernel; the dense convs, stride
//! 1 and 2, are `conv_int8_quads.rs`'s, which [`emit`] hands them to) multiply `u8`
//! activations by `i8` weights with `vpdpbusd` (four products added to one i32 lane: 64
//! multiplies per instruction where `vfmadd231ps` does 16). The quantization ([`crate::quant`]):
//! activations per input channel with the calibrated scale and zero point, weights per output
//! channel with the activation scales folded in; the i32 sums, less the zero points' term, times
//! the output channel's scale are the f32 conv, to which the bias and the f32 epilogue (leaky
//! ReLU or the instance-norm partial sums) apply as in the f32 kernel. Activations stay f32 in
//! the arena.
//!
//! What four bytes of a word hold: **column taps**. A tile (the f32 kernel's tiles, so the norm
//! partials and the memory plan do not change) packs, per slot (input channel, depth tap), sub-band
//! of rows and column strip, each input row `r` as words `P[r][x] = (q[x - 1], q[x], q[x + 1], 0)`
//! (each 16 columns quantized once, then shifted against their neighbours: no byte shuffles,
//! no store-to-load round trip). Output row
//! `y` of one output channel is `sum over slots, tap rows b: P[y + b] . (w(b, 0), w(b, 1),
//! w(b, 2), 0)`: three `vpdpbusd` per slot, row and vector, every packed vector (aligned) used by
//! the three output rows it touches. Three of four products are useful (48 multiplies per
//! instruction): a slot is packed once whichever outputs read it, and each output channel (one
//! per micro kernel) walks a CSR of its live slots. (Dense convs used these words too, two
//! output channels at a time, until the channel quads, whose products are all useful, replaced
//! them: 62-63% -> 84% of the `vpdpbusd` peak on the conv bench.)
//!
//! In bundles storing activations as bf16 (`--precision int8`'s default) slots are packed as
//! **codes**, one byte a column ([`Cut::bytes`]), and the micro kernel makes each vector's tap
//! words as it loads them: 32 bytes from the column before the vector, `vpermb` (`e2q_taps8`;
//! `avx512_vbmi`, which those bundles then need). The pack then does no shuffles, the band is
//! a quarter of the words' (the whole row's width fits the budget) and a 64-byte line of codes
//! serves four vectors: on the conv bench (Zen 4, 2026-12-05, 96 -> 48 at 128^2, 3 alternating
//! rounds) the 20%-sparse kernel took 43.6-44.4 ms against 48.9-50.8 ms on one core (22.0-24.6
//! against 25.3-27.6 ms on two), dense ones the same (the words' pack is shared by every output
//! there). Tried on the way: with the pack's shuffles gone but the words kept, 10% (so the
//! pack's own work is not the whole cost: a sparse output channel reads ~3 packed vectors per
//! 9 products, from L2); `vpermd` + `vpshufb` in place of `vpermb` (AVX512BW alone) was slower
//! than the words; accumulators through inline asm (gcc copies them between registers around
//! the intrinsic: free, no change), L1 prefetches of the next entry's rows and 10-row passes,
//! no change. `--activations f32` bundles (`avx512_vnni` alone) keep the words.
//!
//! The packed band is kept under [`BUDGET`] by narrowing the column strip, then the sub-band's
//! rows; a conv with too many slots for one row, or fewer than four (the 1-channel first conv),
//! stays f32 ([`emit`] returns `None`), as does a conv the calibration has no ranges for.
//! Slots whose plane lies outside the volume (depth padding, depth shift) are packed as the zero
//! point, which is what the zero points' term assumes of every slot.

use std::fmt::Write;

use super::conv::ConvSpec;
use super::conv_bf16::{applies, outside, push_slots, row_at};
use super::conv_fast::{blocking, render_packed, Blocking, FastConv, Packed};
use super::conv_int8_quads;
use super::conv_micro::epilogue;
use crate::emit::{Consts, Kernel, NodeCtx};
use crate::layout::PAD_LEFT;
use crate::precision::Precision;
use crate::quant::{folded_codes, packing_params, ActQuant};
use crate::target::Target;

/// Bytes of packed words a tile may hold at once (on its thread's stack, as the bf16 kernels).
pub const BUDGET: usize = 512 * 1024;

/// Whether a bundle for `target` in `precision` gets int8 conv kernels.
pub fn enabled(target: Target, precision: Precision) -> bool {
    precision == Precision::Int8 && target == Target::X86Avx512
}

/// How a tile is cut: rows per sub-band and 16-column vectors per strip, and how its slots are
/// packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cut {
    sb: usize,
    sv: usize,
    /// Packed as codes (bytes) that the micro kernels make column-tap words (`e2q_taps8`), else
    /// as the words themselves.
    bytes: bool,
}

impl Cut {
    /// Bytes of one packed row of a strip: its words; or its codes from the vector before the
    /// strip to the one after it, and room for the last vector's 32-byte load (64-byte lines).
    fn row_bytes(self) -> usize {
        match self.bytes {
            false => self.sv * 64,
            true => (16 * (self.sv + 3)).div_ceil(64) * 64,
        }
    }
    /// 32-bit words of one slot: its `sb + 2` rows (whole 64-byte lines).
    fn unit_words(self) -> usize {
        (self.sb + 2) * self.row_bytes() / 4
    }
}

/// The cut of a tile of `rb` rows and `nv` vectors with `slots` packed slots and micro blocks of
/// `vo` vectors: the whole band if it fits [`BUDGET`], else narrower strips (multiples of `vo`),
/// then fewer rows; `None` if not even one row of `vo` vectors fits.
fn cut(slots: usize, rb: usize, nv: usize, vo: usize, bytes: bool) -> Option<Cut> {
    let fits = |c: Cut| slots * c.unit_words() * 4 <= BUDGET;
    let mut c = Cut {
        sb: rb,
        sv: nv,
        bytes,
    };
    while !fits(c) && c.sv > vo {
        c.sv = (c.sv / 2).max(vo).div_ceil(vo) * vo;
    }
    while !fits(c) && c.sb > 1 {
        c.sb -= 1;
    }
    fits(c).then_some(c)
}

/// The word of tap row `b` of one 3x3 kernel plane: bytes `(w(b, 0), w(b, 1), w(b, 2), 0)`.
fn tap_word(q: &[i8], b: usize) -> i32 {
    let byte = |c: usize| u32::from(q[b * 3 + c] as u8);
    (byte(0) | (byte(1) << 8) | (byte(2) << 16)) as i32
}

/// The int8 kernel of a fast-path conv, or `None` where it has none (see the module doc); with
/// `bytes` (bundles storing bf16, whose prelude has `E2_I8_BYTES`) slots are packed as codes.
pub fn emit(ctx: &NodeCtx, sp: &ConvSpec, consts: &mut Consts, bytes: bool) -> Option<Kernel> {
    let g = &sp.g;
    let ranges = ctx.act_ranges.as_deref()?;
    if conv_int8_quads::applies(g) {
        if let Some(k) = conv_int8_quads::emit(ctx, sp, consts, ranges) {
            return Some(k);
        }
    }
    if !applies(g) || !g.sparse {
        return None;
    }
    let cin = g.x[1];
    let [co, ow] = [g.y[1], g.y[4]];
    if ranges.len() != cin {
        return None;
    }
    let kd = g.k[0];
    let lanes = 16;
    let nv = ow.div_ceil(lanes);
    let rb = blocking(g).rb;
    let (ob, vo) = (1, 2.min(nv));
    let slots = cin * kd;
    if slots < 4 {
        return None;
    }
    let c = cut(slots, rb, nv, vo, bytes)?;
    let aq: Vec<ActQuant> = ranges.iter().map(|r| ActQuant::of(r[0], r[1])).collect();
    // Per logical channel: 1 / scale and the zero point, as the packing reads them.
    let qp = packing_params(&aq);
    // Per output channel: the codes of its live kernels (scales folded in), its scale, and the
    // zero points' term.
    let kvol = kd * 9;
    let nob = co.div_ceil(ob);
    let Folded {
        codes,
        oscale,
        comp,
    } = fold(sp, &aq, kvol, nob * ob);
    // Per output channel, its CSR entries: slot and three tap-row words each.
    let mut rp = vec![0i32];
    let mut sl = Vec::new();
    let mut w = Vec::new();
    for row in &codes {
        for (ch, qk) in row {
            for a in 0..kd {
                sl.push((ch * kd + a) as i32);
                w.extend((0..3).map(|b| tap_word(&qk[a * 9..], b)));
            }
        }
        rp.push(sl.len() as i32);
    }
    let sl_off = consts.push_i32(&sl);
    let rp_off = consts.push_i32(&rp);
    let w_off = consts.push_i32(&w);
    let slots_at = push_slots(sp, consts);
    let qp_off = consts.push_f32(&qp);
    let os_off = consts.push_f32(&oscale);
    let comp_off = consts.push_i32(&comp);
    let bias = sp.push_bias(nob * ob, consts);
    let what = format!(
        "{} conv{} {}x3x3 s1 {}->{} int8",
        ctx.label,
        if g.sparse { " sparse" } else { "" },
        kd,
        cin,
        co
    );
    let fc = FastConv::packed(
        ctx,
        sp,
        what,
        Blocking { ob, rb, vo },
        slots_at,
        w_off,
        Some(rp_off),
        slots,
        bias,
    );
    let q = Tables {
        sl: sl_off,
        qp: qp_off,
        os: os_off,
        comp: comp_off,
        kd,
    };
    Some(render(&fc, c, &q))
}

/// A conv's weights as int8: per output channel the codes of its live kernels `(input channel,
/// kvol codes)` with the activation scales folded in, its scale, and the zero points' term
/// (`sum of its codes x the zero point of their channel`); scales and terms padded with zeros
/// to whole output blocks.
pub(super) struct Folded {
    pub codes: Vec<Vec<(usize, Vec<i8>)>>,
    pub oscale: Vec<f32>,
    pub comp: Vec<i32>,
}

/// [`Folded`] of `sp`'s weights (`kvol` taps a kernel) for activations quantized as `aq`, the
/// tables padded to `padded` output channels.
pub(super) fn fold(sp: &ConvSpec, aq: &[ActQuant], kvol: usize, padded: usize) -> Folded {
    let mut codes = Vec::with_capacity(sp.rows.len());
    let mut oscale = vec![0f32; padded];
    let mut comp = vec![0i32; padded];
    for (o, row) in sp.rows.iter().enumerate() {
        let (q, t) = folded_codes(row, sp.wdata, kvol, aq);
        oscale[o] = t;
        let mut k = Vec::with_capacity(row.len());
        for (i, &(ch, _)) in row.iter().enumerate() {
            let qk = q[i * kvol..(i + 1) * kvol].to_vec();
            comp[o] += qk.iter().map(|&v| i32::from(v)).sum::<i32>() * i32::from(aq[ch].zero);
            k.push((ch, qk));
        }
        codes.push(k);
    }
    Folded {
        codes,
        oscale,
        comp,
    }
}

/// Offsets of the int8 kernel's own constants.
struct Tables {
    /// `I`: the CSR's slot of each entry (sparse).
    sl: usize,
    /// `W`: `(1 / scale, zero point)` per logical input channel.
    qp: usize,
    /// `W`: the scale of each output channel.
    os: usize,
    /// `I`: the zero points' term of each output channel.
    comp: usize,
    /// Depth taps (slots per input channel).
    kd: usize,
}

/// Writes the kernel: the packing function, the micro kernels, the tile loop
/// ([`render_packed`]).
fn render(fc: &FastConv, c: Cut, q: &Tables) -> Kernel {
    let y = &fc.y;
    let slots = fc.ne_dense;
    // Bytes from one 16-column vector of a packed row to the next.
    let vb = if c.bytes { 16 } else { 64 };
    let args = format!(
        "A, W, I, I + {} + e0, (const uint32_t *)(I + {}) + (int64_t)e0 * 3, e1 - e0, (const uint8_t *)pk + (xv - xs) * {vb}, po + (int64_t)o * {}, o, st + 2 * o, sh + o",
        q.sl, fc.w, y.c_stride
    );
    let mut m = |name: &str, r: usize, vo: usize, tail: bool| micro(fc, c, q, name, r, vo, tail);
    let p = Packed {
        sb: c.sb,
        sv: c.sv,
        pk_words: slots * c.unit_words(),
        pack: format!(
            "{}_pack(A, W, I + {}, pk, n, zb, r0, nr, xs, xe)",
            fc.name, fc.ents
        ),
        args,
        tag: "mq",
        micro: &mut m,
    };
    render_packed(fc, p, pack_fn(fc, c, q))
}

/// The packing function: slots `[0, slots)` of sample `n`, input rows `r0 - 1 .. r0 + nr`
/// (packed rows `0 .. nr + 2`), vectors `xs .. xe`, each vector of a row quantized once into
/// 32-bit codes (the vectors before `xs` and at `xe` too, where only columns `16 xs - 1` and
/// `16 xe` matter and storage outside the row reads as zero, i.e. the zero point), into `pk`
/// (`[slot][row][strip columns]`): made column-tap words with their neighbours (`valignd`), or
/// with [`Cut::bytes`] stored as bytes, vector `xs - 1` first.
fn pack_fn(fc: &FastConv, c: Cut, q: &Tables) -> String {
    let x = &fc.x;
    let nv = fc.g.y[4].div_ceil(16);
    let (rb, slw) = (c.row_bytes(), c.unit_words());
    let room = x.row - PAD_LEFT;
    let right = room.saturating_sub(16 * nv).min(16);
    let checks = outside(fc, "ent");
    // bf16 storage: rows of `e2h`, widened to f32 as they load (then quantized alike).
    let (ty, load, loadm) = match x.is_bf16() {
        true => ("e2h", "e2h16_load", "e2h16_loadm"),
        false => ("float", "_mm512_loadu_ps", "e2q_loadm"),
    };
    let skip = if checks.is_empty() {
        String::new()
    } else {
        format!(
            "        if ({}) {{ const __m512i zz = _mm512_set1_epi32((int)((uint32_t)qs[1] * 0x01010101u)); for (int k = 0; k < {slw}; k += 16) _mm512_store_si512((void *)(pq + k), zz); continue; }}\n",
            checks.join(" || ")
        )
    };
    let rows = match c.bytes {
        false => format!(
            "        for (int rr = 0; rr < nr + 2; rr++) {{
            const {ty} *qr = p + (int64_t)rr * {xrow}, *qn = pn + (int64_t)rr * {xrow};
            uint32_t *o = pq + (int64_t)rr * {rw} - 16 * xs;
            __m512i prev = e2q_codes({loadm}(qr + 16 * xs - 16, ml), inv, zp);
            __m512i cur = e2q_codes({load}(qr + 16 * xs), inv, zp);
            for (int j = xs; j < xe - 1; j++) {{
                e2_prefetch2(qn + 16 * j);
                const __m512i next = e2q_codes({load}(qr + 16 * j + 16), inv, zp);
                _mm512_store_si512((void *)(o + 16 * j), e2q_taps(prev, cur, next));
                prev = cur;
                cur = next;
            }}
            e2_prefetch2(qn + 16 * (xe - 1));
            _mm512_store_si512((void *)(o + 16 * (xe - 1)),
                e2q_taps(prev, cur, e2q_codes({loadm}(qr + 16 * xe, mr), inv, zp)));
        }}
",
            rw = rb / 4,
            xrow = x.row,
        ),
        // Vector j of the row at byte 16 (j - xs + 1).
        true => format!(
            "        for (int rr = 0; rr < nr + 2; rr++) {{
            const {ty} *qr = p + (int64_t)rr * {xrow}, *qn = pn + (int64_t)rr * {xrow};
            uint8_t *o = (uint8_t *)pq + (int64_t)rr * {rb} - 16 * xs + 16;
            e2q_store8(o + 16 * xs - 16, e2q_codes({loadm}(qr + 16 * xs - 16, ml), inv, zp));
            for (int j = xs; j < xe; j++) {{
                e2_prefetch2(qn + 16 * j);
                e2q_store8(o + 16 * j, e2q_codes({load}(qr + 16 * j), inv, zp));
            }}
            e2q_store8(o + 16 * xe, e2q_codes({loadm}(qr + 16 * xe, mr), inv, zp));
        }}
",
            xrow = x.row,
        ),
    };
    format!(
        "E2_I8 static void {name}_pack(const float *restrict A, const float *restrict W,
    const int32_t *restrict ent, uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {{
    const unsigned ml = xs == 0 ? 0xff00u : 0xffffu;
    const unsigned mr = xe == {nv} ? {rmask:#x}u : 0xffffu;
    for (int s = 0; s < {slots}; s++, ent += 3) {{
        uint32_t *pq = pk + (int64_t)s * {slw};
        const float *qs = W + {qp} + 2 * (s / {kd});
        const __m512 inv = _mm512_set1_ps(qs[0]), zp = _mm512_set1_ps(qs[1]);
{skip}        const {ty} *p = {p_at};
        /* The next slot's rows into L2 (another channel: the hardware prefetchers do not follow). */
        const {ty} *pn = s + 1 < {slots}{next_ok} ? {pn_at} : p;
{rows}    }}
}}
",
        name = fc.name,
        slots = fc.ne_dense,
        rmask = (1u32 << right) - 1,
        qp = q.qp,
        kd = q.kd,
        p_at = row_at(fc, "ent[0]", "zb + ent[2]"),
        pn_at = row_at(fc, "ent[3]", "zb + ent[5]"),
        next_ok = outside(fc, "(ent + 3)")
            .iter()
            .map(|c| format!(" && !({c})"))
            .collect::<String>(),
    )
}

/// Rows of one pass of a sparse micro kernel: a band of 10 rows runs as two passes of 5 over
/// the same packed rows (each its own entry walk), so the accumulators (`rows x vo`) and the
/// three weight words stay in registers; 20 at once made gcc spill accumulators and shuffle
/// registers on every entry.
const SPARSE_PASS_ROWS: usize = 5;

/// One micro kernel: `rows` output rows x `vo` vectors of one output channel over its CSR of
/// slots, in passes of rows ([`SPARSE_PASS_ROWS`]); per slot, the three tap-row words once,
/// then each packed vector loaded once into every row that uses it.
#[allow(clippy::too_many_arguments)]
fn micro(
    fc: &FastConv,
    c: Cut,
    q: &Tables,
    name: &str,
    rows: usize,
    vo: usize,
    tail: bool,
) -> String {
    let ob = fc.bl.ob;
    let (rb, slot_bytes) = (c.row_bytes(), 4 * c.unit_words());
    let row = fc.y.row;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "E2_I8 static void {name}(float *restrict A, const float *restrict W, const int32_t *restrict I,
    const int32_t *restrict sl, const uint32_t *restrict w0, int ne, const uint8_t *restrict pk,
    int64_t po0, int o0, double *restrict st, float *restrict sh) {{
    (void)sl; (void)st; (void)sh;"
    );
    if c.bytes {
        let _ = writeln!(s, "    const __m512i qidx = E2Q_TAPS8;");
    }
    let pass = match rows > SPARSE_PASS_ROWS + 1 {
        true => rows.div_ceil(rows.div_ceil(SPARSE_PASS_ROWS)),
        false => rows,
    };
    let mut k0 = 0;
    while k0 < rows {
        let rows = pass.min(rows - k0);
        let _ = writeln!(s, "  {{ const uint32_t *restrict w = w0;");
        for o in 0..ob {
            for r in 0..rows {
                for f in 0..vo {
                    let _ = writeln!(s, "    __m512i i{o}_{r}_{f} = _mm512_setzero_si512();");
                }
            }
        }
        let pq = format!("pk + (int64_t)sl[e] * {slot_bytes}");
        let _ = writeln!(
            s,
            "    for (int e = 0; e < ne; e++, w += {}) {{
        const uint8_t *pq = {pq};",
            3 * ob
        );
        for o in 0..ob {
            for b in 0..3 {
                if (0..rows + 2).any(|rr| rr >= b && rr - b < rows) {
                    let _ = writeln!(
                        s,
                        "        const __m512i w{o}_{b} = _mm512_set1_epi32((int)w[{}]);",
                        o * 3 + b
                    );
                }
            }
        }
        for rr in 0..rows + 2 {
            for f in 0..vo {
                // Words: vector f of the row; bytes: its codes from the column before it.
                let x = match c.bytes {
                    false => format!(
                        "_mm512_load_si512((const void *)(pq + {}))",
                        (k0 + rr) * rb + 64 * f
                    ),
                    true => format!("e2q_taps8(pq + {}, qidx)", (k0 + rr) * rb + 16 * f + 15),
                };
                let _ = writeln!(s, "        {{ const __m512i x = {x};");
                for b in 0..3 {
                    if rr < b || rr - b >= rows {
                        continue;
                    }
                    let r = rr - b;
                    for o in 0..ob {
                        let a = format!("i{o}_{r}_{f}");
                        let _ =
                            writeln!(s, "          {a} = _mm512_dpbusd_epi32({a}, x, w{o}_{b});");
                    }
                }
                let _ = writeln!(s, "        }}");
            }
        }
        let _ = writeln!(s, "    }}");
        // Back to f32: (sum - the zero points' term) x the output channel's scale.
        for o in 0..ob {
            let _ = writeln!(
                s,
                "    const __m512i vc{o} = _mm512_set1_epi32(I[{} + o0 + {o}]);
    const __m512 vq{o} = _mm512_set1_ps(W[{} + o0 + {o}]);",
                q.comp, q.os
            );
            for r in 0..rows {
                for f in 0..vo {
                    let _ = writeln!(
                        s,
                        "    const e2f16 a{o}_{r}_{f} = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(i{o}_{r}_{f}, vc{o})), vq{o});"
                    );
                }
            }
        }
        let _ = writeln!(s, "    const int64_t po = po0 + {};", k0 * row);
        epilogue(&mut s, fc, rows, vo, tail);
        s.push_str("  }\n");
        k0 += rows;
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_words_hold_three_codes_and_a_zero() {
        let q: Vec<i8> = vec![1, -1, 127, -127, 0, 5, 0, 0, 0];
        assert_eq!(tap_word(&q, 0) as u32, 0x007f_ff01);
        assert_eq!(tap_word(&q, 1) as u32, 0x0005_0081);
        assert_eq!(tap_word(&q, 2), 0);
    }

    #[test]
    fn cuts_fit_the_budget_or_refuse() {
        // AMOS-CT level 0, sparse 96 slots, 128 wide, bands of 10 rows: the whole band.
        for bytes in [false, true] {
            let c = cut(96, 10, 8, 2, bytes).unwrap();
            assert!(96 * c.unit_words() * 4 <= BUDGET, "{c:?}");
            // Many slots: narrower strips, then fewer rows.
            let c = cut(960, 8, 8, 2, bytes).unwrap();
            assert!(
                960 * c.unit_words() * 4 <= BUDGET && c.sv.is_multiple_of(2),
                "{c:?}"
            );
            assert!(cut(100_000, 10, 8, 2, bytes).is_none());
        }
        // Bytes: a quarter of the words and 3 vectors' room per row; whole 64-byte lines.
        let c = cut(96, 10, 8, 2, true).unwrap();
        assert_eq!((c.sb, c.sv, c.row_bytes()), (10, 8, 192));
        assert_eq!(cut(96, 10, 8, 2, false).unwrap().sv, 4);
    }
}
