//! `--precision int8` on x86-avx512: the dense 3x3 convs of the fast path, stride 1 (E2ENet's
//! backbone convs) and 2 (its down-sampling convs), [`applies`], multiply **channel quads**: a
//! packed word holds the codes of four (input channel, depth tap) slots at one column, so all
//! four products of a `vpdpbusd` are useful (the column-tap words of `conv_int8.rs`, which the
//! DSFF-sparse convs keep, use three of four, and their byte layout needs a `vpermb` for every
//! loaded vector). The quantization is `conv_int8.rs`'s (activations per input channel with the
//! calibrated scale and zero point, weights per output channel with the activation scales
//! folded in, the zero points' term subtracted from the i32 sums, then the f32 epilogue).
//!
//! A tile (the f32 kernel's, so the norm partials and the memory plan do not change) packs its
//! input rows per quad of slots: each 16 (stride 1) or 32 (stride 2) columns of the four slots
//! quantized (`e2q_codes`) and made words (`e2q_quad`), each packed row with a 16-word halo on
//! both sides. Stride 1: output column `x` reads words `x - 1, x, x + 1`, unaligned loads one
//! word left and right. Stride 2: each row split into the words of the even input columns `2 x`
//! and those of the odd ones `2 x + 1` (two `vpermt2d` per 32 columns, as `conv_bf16.rs`'s
//! stride-2 channel pairs), so the taps `2 x - 1, 2 x, 2 x + 1` are the odd set one word left,
//! the even set, the odd set. The micro kernels are the bf16 channel-pair ones (stride 1: 2
//! output channels x 4 rows x 2 vectors; stride 2: 4 x 2 x 2; the weight words of one tap column
//! in registers), one `vpdpbusd` where those have one `vdpbf16ps`: 64 multiplies an
//! instruction, 9 a quad and output vector.
//!
//! Every slot the conv reads is packed, columns and rows outside the volume (the padding
//! columns, storage past the row's end, slots whose plane lies outside the volume) as the zero
//! point (which is what the zero points' term assumes); the missing slots of the last quad as
//! zero codes with zero weights. Activations stored as f32 or bf16 alike (no `avx512_vbmi`).

use std::fmt::Write;

use super::conv::{ConvSpec, Geom};
use super::conv_bf16::{
    chan_loop, cut_within, inside, push_slots, row_at_row, ChanOps, ChanTaps, Cut,
};
use super::conv_fast::{blocking, render_packed, Blocking, FastConv, Packed};
use super::conv_int8::{fold, Folded, BUDGET};
use super::conv_micro::epilogue;
use crate::emit::{Consts, Kernel, NodeCtx};
use crate::layout::PAD_LEFT;
use crate::quant::{packing_params, ActQuant};

/// The cut of a tile of `rb` rows and `nv` vectors with `quads` packed quads and micro blocks of
/// `vo` vectors under [`BUDGET`] (`conv_bf16.rs`'s cut of channel pairs: a quad's rows take the
/// words a pair's do).
fn cut(quads: usize, rb: usize, nv: usize, vo: usize, s2: bool) -> Option<Cut> {
    cut_within(BUDGET, quads, rb, nv, vo, false, s2)
}

/// The word of four slots' codes of one tap (`None`: a missing slot, a zero byte).
fn quad_word(codes: [Option<i8>; 4]) -> i32 {
    let mut w = 0u32;
    for (k, c) in codes.into_iter().enumerate() {
        w |= u32::from(c.unwrap_or(0) as u8) << (8 * k);
    }
    w as i32
}

/// Whether a fast-path geometry has this kernel: dense 3x3, padding 1 in (H, W), stride 1 or 2
/// there, any width (stride-2 rows of up to 8 outputs, which the f32 and bf16 kernels take in 8
/// lanes, use half of each vector: still 2x the multiplies of the f32 kernel's instruction).
pub fn applies(g: &Geom) -> bool {
    !g.transposed
        && !g.sparse
        && g.k[1] == 3
        && g.k[2] == 3
        && g.s[1] == g.s[2]
        && (g.s[1] == 1 || g.s[1] == 2)
        && (g.p[1], g.p[2]) == (1, 1)
}

/// The int8 kernel of a conv [`applies`] holds for (checked by the caller) whose input
/// channels have the calibrated `ranges`.
pub fn emit(
    ctx: &NodeCtx,
    sp: &ConvSpec,
    consts: &mut Consts,
    ranges: &[[f32; 2]],
) -> Option<Kernel> {
    let g = &sp.g;
    let cin = g.x[1];
    let [co, ow] = [g.y[1], g.y[4]];
    // Dense rows hold every input channel, in order.
    if ranges.len() != cin || g.sparse || sp.rows.iter().any(|r| r.len() != cin) {
        return None;
    }
    let kd = g.k[0];
    let nv = ow.div_ceil(16);
    let rb = blocking(g).rb;
    let s2 = g.s[1] == 2;
    // 16 accumulators: stride 1 2 outputs x 4 rows x 2 vectors (each loaded vector feeds 2 to
    // 6 `vpdpbusd`), stride 2 4 x 2 x 2 (4 or 8), as the bf16 kernels.
    let (ob, vo) = (if s2 { 4 } else { 2 }.min(co), 2.min(nv));
    let slots = cin * kd;
    let nq = slots.div_ceil(4);
    if slots < 4 {
        return None;
    }
    let c = cut(nq, rb, nv, vo, s2)?;
    let aq: Vec<ActQuant> = ranges.iter().map(|r| ActQuant::of(r[0], r[1])).collect();
    // (1 / scale, zero point) of every slot of the quads (missing slots: (0, 0), zero codes).
    let chan = packing_params(&aq);
    let mut qps = vec![0f32; 8 * nq];
    for s in 0..slots {
        qps[2 * s..2 * s + 2].copy_from_slice(&chan[2 * (s / kd)..2 * (s / kd) + 2]);
    }
    let kvol = kd * 9;
    let nob = co.div_ceil(ob);
    let Folded {
        codes,
        oscale,
        comp,
    } = fold(sp, &aq, kvol, nob * ob);
    // Words [block][quad][tap column][tap row][output in block]; past the last output zero.
    let code = |o: usize, s: usize, b: usize, cc: usize| -> Option<i8> {
        let row = codes.get(o)?;
        if s >= slots {
            return None;
        }
        let (ch, a) = (s / kd, s % kd);
        debug_assert_eq!(row[ch].0, ch);
        Some(row[ch].1[a * 9 + b * 3 + cc])
    };
    let mut w = Vec::with_capacity(nob * nq * 9 * ob);
    for blk in 0..nob {
        for q in 0..nq {
            for cc in 0..3 {
                for b in 0..3 {
                    for oo in 0..ob {
                        let o = blk * ob + oo;
                        w.push(quad_word(std::array::from_fn(|k| {
                            code(o, 4 * q + k, b, cc)
                        })));
                    }
                }
            }
        }
    }
    let w_off = consts.push_i32(&w);
    let slots_at = push_slots(sp, consts);
    let qp_off = consts.push_f32(&qps);
    let os_off = consts.push_f32(&oscale);
    let comp_off = consts.push_i32(&comp);
    let bias = sp.push_bias(nob * ob, consts);
    let fc = FastConv::packed(
        ctx,
        sp,
        format!("{} conv {kd}x3x3 s{} {cin}->{co} int8", ctx.label, g.s[1]),
        Blocking { ob, rb, vo },
        slots_at,
        w_off,
        None,
        slots,
        bias,
    );
    let t = Tables {
        qp: qp_off,
        os: os_off,
        comp: comp_off,
    };
    Some(render(&fc, c, &t))
}

/// [`ChanOps`] of the int8 channel quads (`vpdpbusd`).
const INT8_QUADS: ChanOps = ChanOps {
    acc: ("__m512i", "_mm512_setzero_si512()", "i"),
    vty: "__m512i",
    bcast: "_mm512_set1_epi32((int)w[{}])",
    load: (
        "_mm512_load_si512((const void *)(pq + {}))",
        "_mm512_loadu_si512((const void *)(pq + {}))",
    ),
    dp: "_mm512_dpbusd_epi32",
    // Measured: its unaligned form ran the conv bench's dense 96 -> 48 2-3% slower on one core.
    aligned_centre: true,
};

/// Offsets of the kernel's own constants.
struct Tables {
    /// `W`: `(1 / scale, zero point)` of each slot of the quads.
    qp: usize,
    /// `W`: the scale of each output channel.
    os: usize,
    /// `I`: the zero points' term of each output channel.
    comp: usize,
}

/// Writes the kernel: the packing function, the micro kernels, the tile loop
/// ([`render_packed`]).
fn render(fc: &FastConv, c: Cut, t: &Tables) -> Kernel {
    let (bl, y) = (fc.bl, &fc.y);
    let nq = fc.ne_dense.div_ceil(4);
    let args = format!(
        "A, W, I, (const uint32_t *)(I + {}) + (int64_t)ob * {}, {nq}, pk + (xv - xs) * 16, po + (int64_t)ob * {}, ob * {}, st + 2 * ob * {}, sh + ob * {}",
        fc.w,
        nq * 9 * bl.ob,
        bl.ob * y.c_stride,
        bl.ob,
        bl.ob,
        bl.ob
    );
    let mut m = |name: &str, r: usize, vo: usize, tail: bool| micro(fc, c, t, name, r, vo, tail);
    let p = Packed {
        sb: c.sb,
        sv: c.sv,
        pk_words: nq * c.unit_words(),
        pack: format!(
            "{}_pack(A, W, I + {}, pk, n, zb, r0, nr, xs, xe)",
            fc.name, fc.ents
        ),
        args,
        tag: "mq",
        micro: &mut m,
    };
    render_packed(fc, p, pack_fn(fc, c, t))
}

/// The packing function: the quads of slots of sample `n`, the input rows of output rows
/// `r0 .. r0 + nr` (stride 1: from `r0 - 1`, storage row `r0`; stride 2: from `2 r0 - 1`,
/// storage row `2 r0`), the input columns of output vectors `xs .. xe` and a halo vector each
/// side (`[quad][row][halo, columns, halo]`; stride 2: `[quad][row][even set, odd set]`, each
/// set so; of its halos only the odd set's left one is read, its last word input column
/// `32 xs - 1`). Columns outside the row's storage and the padding are the zero points.
fn pack_fn(fc: &FastConv, c: Cut, t: &Tables) -> String {
    let x = &fc.x;
    let slots = fc.ne_dense;
    let nq = slots.div_ceil(4);
    let (rw, uw, hw) = (c.row_words(), c.unit_words(), c.half_words());
    // Values of a row's storage from column 0 (values and right padding).
    let room = x.row - PAD_LEFT;
    let (ty, loadm) = match x.is_bf16() {
        true => ("e2h", "e2h16_loadm"),
        false => ("float", "e2q_loadm"),
    };
    let first_row = if c.s2 { "2 * r0" } else { "r0" };
    let mut rows = String::new();
    // The words of the 16 columns at `q_k + at` of the four slots, columns set in `m`.
    let quad = |at: &str, m: &str| {
        let codes: Vec<String> = (0..4)
            .map(|k| format!("e2q_codes({loadm}(q{k} + {at}, b{k} ? {m} : 0u), i{k}, z{k})"))
            .collect();
        format!(
            "e2q_quad({},\n                    {},\n                    {},\n                    {})",
            codes[0], codes[1], codes[2], codes[3]
        )
    };
    for k in 0..4 {
        let ent = format!("(ent + {})", 3 * k);
        let ok = format!("4 * p + {k} < {slots} && {}", inside(fc, &ent));
        let at = row_at_row(
            fc,
            &format!("{ent}[0]"),
            &format!("zb + {ent}[2]"),
            first_row,
        );
        let _ = writeln!(
            rows,
            "        const {ty} *b{k} = {ok} ? {at} : 0;
        const __m512 i{k} = _mm512_set1_ps(qs[{i}]), z{k} = _mm512_set1_ps(qs[{z}]);",
            i = 2 * k,
            z = 2 * k + 1
        );
    }
    let body = if c.s2 {
        format!(
            "            uint32_t *oe = pq + (int64_t)rr * {rw} + 16 - 16 * xs, *oo = oe + {hw};
            if (xs == 0) _mm512_store_si512((void *)(oo - 16), zq);
            for (int j = xs == 0 ? 0 : xs - 1; j < xe; j++) {{
                /* Columns 32 j .. 32 j + 31 inside the row's storage (the others read as 0.0:
                   the zero point). */
                const int left = {room} - 32 * j;
                const unsigned m = left >= 32 ? 0xffffffffu : left <= 0 ? 0u : (1u << left) - 1u;
                const __m512i lo = {lo};
                const __m512i hi = {hi};
                if (j >= xs) _mm512_store_si512((void *)(oe + 16 * j), _mm512_permutex2var_epi32(lo, ie, hi));
                _mm512_store_si512((void *)(oo + 16 * j), _mm512_permutex2var_epi32(lo, io, hi));
            }}
",
            lo = quad("32 * j", "m & 0xffffu"),
            hi = quad("32 * j + 16", "m >> 16"),
        )
    } else {
        format!(
            "            uint32_t *o = pq + (int64_t)rr * {rw} + 16 - 16 * xs;
            for (int j = xs - 1; j <= xe; j++) {{
                /* Columns 16 j .. 16 j + 15 inside the row's storage (from column -{PAD_LEFT}; the
                   others read as 0.0: the zero point). */
                const int left = {room} - 16 * j;
                const unsigned m = (left >= 16 ? 0xffffu : left <= 0 ? 0u : (1u << left) - 1u)
                    & (j < 0 ? 0xff00u : 0xffffu);
                _mm512_store_si512((void *)(o + 16 * j), {q});
            }}
",
            q = quad("16 * j", "m"),
        )
    };
    format!(
        "E2_I8 static void {name}_pack(const float *restrict A, const float *restrict W,
    const int32_t *restrict ent, uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {{
    /* vpermt2d indices (stride 2): the even and the odd words of 32. */
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    (void)ie; (void)io;
    for (int p = 0; p < {nq}; p++, ent += 12) {{
        uint32_t *pq = pk + (int64_t)p * {uw};
        const float *qs = W + {qp} + 8 * p;
{rows}        /* The zero points' words (the padding column). */
        const __m512i zq = e2q_quad(e2q_codes(_mm512_setzero_ps(), i0, z0), e2q_codes(_mm512_setzero_ps(), i1, z1),
            e2q_codes(_mm512_setzero_ps(), i2, z2), e2q_codes(_mm512_setzero_ps(), i3, z3));
        (void)zq;
        for (int rr = 0; rr < {in_rows}; rr++) {{
            const {ty} *q0 = b0 ? b0 + (int64_t)rr * {xrow} : ({ty} *)A, *q1 = b1 ? b1 + (int64_t)rr * {xrow} : ({ty} *)A;
            const {ty} *q2 = b2 ? b2 + (int64_t)rr * {xrow} : ({ty} *)A, *q3 = b3 ? b3 + (int64_t)rr * {xrow} : ({ty} *)A;
{body}        }}
    }}
}}
",
        name = fc.name,
        qp = t.qp,
        xrow = x.row,
        in_rows = if c.s2 { "2 * nr + 1" } else { "nr + 2" },
    )
}

/// One micro kernel: `rows` output rows x `vo` vectors of `ob` output channels over the quads
/// (the bf16 channel-pair kernel's loop, [`chan_loop`], with `vpdpbusd`), then the i32 sums
/// back to f32 and the epilogue.
#[allow(clippy::too_many_arguments)]
fn micro(
    fc: &FastConv,
    c: Cut,
    t: &Tables,
    name: &str,
    rows: usize,
    vo: usize,
    tail: bool,
) -> String {
    let ob = fc.bl.ob;
    let (rw, uw, hw) = (c.row_words(), c.unit_words(), c.half_words());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "E2_I8 static void {name}(float *restrict A, const float *restrict W, const int32_t *restrict I,
    const uint32_t *restrict w, int ne, const uint32_t *restrict pk, int64_t po, int o0,
    double *restrict st, float *restrict sh) {{
    (void)st; (void)sh;"
    );
    let taps = ChanTaps {
        s2: c.s2,
        rw,
        uw,
        hw,
    };
    chan_loop(&mut s, &INT8_QUADS, taps, ob, rows, vo);
    // Back to f32: (sum - the zero points' term) x the output channel's scale.
    for o in 0..ob {
        let _ = writeln!(
            s,
            "    const __m512i vc{o} = _mm512_set1_epi32(I[{} + o0 + {o}]);
    const __m512 vq{o} = _mm512_set1_ps(W[{} + o0 + {o}]);",
            t.comp, t.os
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
    epilogue(&mut s, fc, rows, vo, tail);
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quad_words_hold_four_slots_codes() {
        assert_eq!(
            quad_word([Some(1), Some(-1), Some(127), Some(-127)]) as u32,
            0x817f_ff01
        );
        assert_eq!(quad_word([Some(5), None, None, None]), 5);
    }

    #[test]
    fn cuts_fit_the_budget_or_refuse() {
        // AMOS-CT's level-0 down-sampling: 48 slots (12 quads), 64 outputs wide, 2 rows.
        let c = cut(12, 2, 4, 2, true).unwrap();
        assert_eq!((c.sb, c.sv), (2, 4));
        // 800 slots: strips of 2 vectors; 1200: one row.
        let s2 = |sb, sv| {
            Some(Cut {
                sb,
                sv,
                rows: false,
                s2: true,
            })
        };
        assert_eq!(cut(200, 2, 8, 2, true), s2(2, 2));
        assert_eq!(cut(300, 2, 8, 2, true), s2(1, 2));
        assert!(cut(100_000, 2, 8, 2, true).is_none());
        // Stride 1: level 0's 48 -> 48 (12 quads, 128 wide, 4 rows) whole; one set of words.
        let c = cut(12, 4, 8, 2, false).unwrap();
        assert_eq!((c.sb, c.sv, c.row_words(), c.in_rows()), (4, 8, 160, 6));
        assert!(cut(100_000, 4, 8, 2, false).is_none());
    }
}
