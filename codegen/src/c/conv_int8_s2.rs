//! `--precision int8` on x86-avx512: the dense 3x3 stride-2 convs of the fast path (E2ENet's
//! down-sampling convs, [`applies`]) multiply **channel quads**: a packed word holds the
//! codes of four (input channel, depth tap) slots at one column, so all four products of a
//! `vpdpbusd` are useful (the stride-1 kernels' column-tap words use three of four). The
//! quantization is `conv_int8.rs`'s (activations per input channel with the calibrated scale
//! and zero point, weights per output channel with the activation scales folded in, the zero
//! points' term subtracted from the i32 sums, then the f32 epilogue).
//!
//! A tile (the f32 kernel's: 2 output rows, so the norm partials and the memory plan do not
//! change) packs, per quad of slots, input rows `2 r0 - 1 .. 2 (r0 + nr) - 1`, each split into
//! the words of the even input columns `2 x` and those of the odd ones `2 x + 1` (each set with
//! a 16-word halo on both sides, as `conv_bf16.rs`'s stride-2 channel pairs): each 32 columns
//! of the four slots quantized (`e2q_codes`), made words (`e2q_quad`), split with two
//! `vpermt2d`. Output column `x` reads input columns `2 x - 1, 2 x, 2 x + 1`: the odd set one
//! word left, the even set, the odd set, plain vector loads. The micro kernel is the bf16 one's
//! (4 output channels x 2 rows x 2 vectors, the 12 weight words of one tap column in
//! registers), one `vpdpbusd` where that has one `vdpbf16ps`: 64 multiplies an instruction.
//!
//! Every slot the conv reads is packed, columns and rows outside the volume (the padding
//! column -1, storage past the row's end, slots whose plane lies outside the volume) as the
//! zero point (which is what the zero points' term assumes); the missing slots of the last quad
//! as zero codes with zero weights. Activations stored as f32 or bf16 alike (no `avx512_vbmi`).

use std::fmt::Write;

use super::conv::{live_flops, slope_in_conv, ConvSpec, Geom};
use super::conv_bf16::{inside, row_at_row, slot_entries};
use super::conv_fast::{blocking, render_packed, Blocking, FastConv, Packed};
use super::conv_int8::{fold, Folded, BUDGET};
use super::conv_micro::epilogue;
use crate::emit::{Consts, Kernel, NodeCtx};
use crate::layout::PAD_LEFT;
use crate::quant::{packing_params, ActQuant};

/// How a tile is cut: output rows per sub-band and 16-column output vectors per strip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cut {
    sb: usize,
    sv: usize,
}

impl Cut {
    /// Words of one column set of a packed row: the strip's vectors and a 16-word halo each
    /// side.
    fn half_words(self) -> usize {
        self.sv * 16 + 32
    }
    /// Words of one packed row (both column sets).
    fn row_words(self) -> usize {
        2 * self.half_words()
    }
    /// Words of one quad: its `2 sb + 1` input rows.
    fn unit_words(self) -> usize {
        (2 * self.sb + 1) * self.row_words()
    }
}

/// The cut of a tile of `rb` rows and `nv` vectors with `quads` packed quads and micro blocks of
/// `vo` vectors: the whole band if it fits [`BUDGET`], else narrower strips (multiples of
/// `vo`), then fewer rows; `None` if not even one row of `vo` vectors fits.
fn cut(quads: usize, rb: usize, nv: usize, vo: usize) -> Option<Cut> {
    let fits = |c: Cut| quads * c.unit_words() * 4 <= BUDGET;
    let mut c = Cut { sb: rb, sv: nv };
    while !fits(c) && c.sv > vo {
        c.sv = (c.sv / 2).max(vo).div_ceil(vo) * vo;
    }
    while !fits(c) && c.sb > 1 {
        c.sb -= 1;
    }
    fits(c).then_some(c)
}

/// The word of four slots' codes of one tap (`None`: a missing slot, a zero byte).
fn quad_word(codes: [Option<i8>; 4]) -> i32 {
    let mut w = 0u32;
    for (k, c) in codes.into_iter().enumerate() {
        w |= u32::from(c.unwrap_or(0) as u8) << (8 * k);
    }
    w as i32
}

/// Whether a fast-path geometry has this kernel: dense 3x3, stride 2 and padding 1 in (H, W),
/// any width (rows of up to 8 outputs, which the f32 and bf16 kernels take in 8 lanes, use half
/// of each vector: still 2x the multiplies of the f32 kernel's instruction).
pub fn applies(g: &Geom) -> bool {
    !g.transposed
        && !g.sparse
        && g.k[1] == 3
        && g.k[2] == 3
        && (g.s[1], g.s[2]) == (2, 2)
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
    let [n, cin, _, _, _] = g.x;
    let [_, co, od, oh, ow] = g.y;
    // Dense rows hold every input channel, in order.
    if ranges.len() != cin || g.sparse || sp.rows.iter().any(|r| r.len() != cin) {
        return None;
    }
    let kd = g.k[0];
    let nv = ow.div_ceil(16);
    let rb = blocking(g).rb;
    let (ob, vo) = (4.min(co), 2.min(nv));
    let slots = cin * kd;
    let nq = slots.div_ceil(4);
    let c = cut(nq, rb, nv, vo)?;
    let (ents, check_iz, check_jz) = slot_entries(sp);
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
    let ent_off = consts.push_i32(&ents);
    let qp_off = consts.push_f32(&qps);
    let os_off = consts.push_f32(&oscale);
    let comp_off = consts.push_i32(&comp);
    let bias = sp.bias.map(|b| {
        let mut v = b.to_vec();
        v.resize(nob * ob, 0.0);
        consts.push_f32(&v)
    });
    let fc = FastConv {
        name: ctx.prefix.clone(),
        what: format!("{} conv {kd}x3x3 s2 {cin}->{co} int8", ctx.label),
        g: g.clone(),
        x: ctx.inputs[0].clone(),
        y: ctx.output.clone(),
        bl: Blocking { ob, rb, vo },
        lanes: 16,
        aligned: false,
        strip: None,
        check_iz,
        check_jz,
        ents: ent_off,
        w: w_off,
        rp: None,
        ne_dense: slots,
        bias,
        slope: slope_in_conv(sp),
        norm_scratch: sp.norm.is_some().then_some(ctx.scratch),
        tiles: n * od * oh.div_ceil(rb),
        flops: live_flops(sp),
        ring_in: ctx.ring_in,
        shift: ctx.shift_at,
    };
    let t = Tables {
        qp: qp_off,
        os: os_off,
        comp: comp_off,
    };
    Some(render(&fc, c, &t))
}

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

/// The packing function: the quads of slots of sample `n`, input rows from `2 r0 - 1` to
/// `2 (r0 + nr) - 1` (storage rows from `2 r0`), the even and the odd input columns of output
/// vectors `xs .. xe` (`[quad][row][even set, odd set]`, each set `[halo, columns, halo]`); of
/// the halos only the odd set's left one is read (its last word: input column `32 xs - 1`, the
/// padding column at `xs = 0`, stored as the zero points).
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
    let mut rows = String::new();
    let mut lo = Vec::new();
    let mut hi = Vec::new();
    for k in 0..4 {
        let ent = format!("(ent + {})", 3 * k);
        let ok = format!("4 * p + {k} < {slots} && {}", inside(fc, &ent));
        let at = row_at_row(
            fc,
            &format!("{ent}[0]"),
            &format!("zb + {ent}[2]"),
            "2 * r0",
        );
        let _ = writeln!(
            rows,
            "        const {ty} *b{k} = {ok} ? {at} : 0;
        const __m512 i{k} = _mm512_set1_ps(qs[{i}]), z{k} = _mm512_set1_ps(qs[{z}]);",
            i = 2 * k,
            z = 2 * k + 1
        );
        lo.push(format!(
            "e2q_codes({loadm}(q{k} + 32 * j, b{k} ? m & 0xffffu : 0u), i{k}, z{k})"
        ));
        hi.push(format!(
            "e2q_codes({loadm}(q{k} + 32 * j + 16, b{k} ? m >> 16 : 0u), i{k}, z{k})"
        ));
    }
    format!(
        "E2_I8 static void {name}_pack(const float *restrict A, const float *restrict W,
    const int32_t *restrict ent, uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {{
    /* vpermt2d indices: the even and the odd words of 32. */
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (int p = 0; p < {nq}; p++, ent += 12) {{
        uint32_t *pq = pk + (int64_t)p * {uw};
        const float *qs = W + {qp} + 8 * p;
{rows}        /* The zero points' words (the padding column). */
        const __m512i zq = e2q_quad(e2q_codes(_mm512_setzero_ps(), i0, z0), e2q_codes(_mm512_setzero_ps(), i1, z1),
            e2q_codes(_mm512_setzero_ps(), i2, z2), e2q_codes(_mm512_setzero_ps(), i3, z3));
        for (int rr = 0; rr < 2 * nr + 1; rr++) {{
            const {ty} *q0 = b0 ? b0 + (int64_t)rr * {xrow} : ({ty} *)A, *q1 = b1 ? b1 + (int64_t)rr * {xrow} : ({ty} *)A;
            const {ty} *q2 = b2 ? b2 + (int64_t)rr * {xrow} : ({ty} *)A, *q3 = b3 ? b3 + (int64_t)rr * {xrow} : ({ty} *)A;
            uint32_t *oe = pq + (int64_t)rr * {rw} + 16 - 16 * xs, *oo = oe + {hw};
            if (xs == 0) _mm512_store_si512((void *)(oo - 16), zq);
            for (int j = xs == 0 ? 0 : xs - 1; j < xe; j++) {{
                /* Columns 32 j .. 32 j + 31 inside the row's storage (the others read as 0.0:
                   the zero point). */
                const int left = {room} - 32 * j;
                const unsigned m = left >= 32 ? 0xffffffffu : left <= 0 ? 0u : (1u << left) - 1u;
                const __m512i lo = e2q_quad({lo0},
                    {lo1},
                    {lo2},
                    {lo3});
                const __m512i hi = e2q_quad({hi0},
                    {hi1},
                    {hi2},
                    {hi3});
                if (j >= xs) _mm512_store_si512((void *)(oe + 16 * j), _mm512_permutex2var_epi32(lo, ie, hi));
                _mm512_store_si512((void *)(oo + 16 * j), _mm512_permutex2var_epi32(lo, io, hi));
            }}
        }}
    }}
}}
",
        name = fc.name,
        qp = t.qp,
        xrow = x.row,
        lo0 = lo[0],
        lo1 = lo[1],
        lo2 = lo[2],
        lo3 = lo[3],
        hi0 = hi[0],
        hi1 = hi[1],
        hi2 = hi[2],
        hi3 = hi[3],
    )
}

/// One micro kernel: `rows` output rows x `vo` vectors of `ob` output channels over the quads;
/// per tap column, the `3 ob` weight words once, then each packed row loaded once (at the tap's
/// column) into every (output channel, row) that uses it. Output row `r` reads packed rows
/// `2 r .. 2 r + 2`; tap column 0 is the odd set one word left, 1 the even set, 2 the odd set.
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
    for o in 0..ob {
        for r in 0..rows {
            for f in 0..vo {
                let _ = writeln!(s, "    __m512i i{o}_{r}_{f} = _mm512_setzero_si512();");
            }
        }
    }
    let _ = writeln!(
        s,
        "    for (int e = 0; e < ne; e++, w += {}) {{
        const uint32_t *pq = pk + (int64_t)e * {uw} + 16;",
        9 * ob
    );
    for cc in 0..3 {
        let _ = writeln!(s, "        {{");
        for o in 0..ob {
            for b in 0..3 {
                let _ = writeln!(
                    s,
                    "            const __m512i w{o}_{b} = _mm512_set1_epi32((int)w[{}]);",
                    (cc * 3 + b) * ob + o
                );
            }
        }
        // (column set, word offset, load) of tap column `cc`.
        let (set, shift, load) = match cc {
            0 => (hw, -1, "_mm512_loadu_si512"),
            1 => (0, 0, "_mm512_load_si512"),
            _ => (hw, 0, "_mm512_load_si512"),
        };
        for rr in 0..2 * rows + 1 {
            for f in 0..vo {
                let _ = writeln!(
                    s,
                    "            {{ const __m512i x = {load}((const void *)(pq + {}));",
                    (rr * rw + set + 16 * f) as isize + shift
                );
                for b in 0..3 {
                    if rr < b || (rr - b) % 2 != 0 || (rr - b) / 2 >= rows {
                        continue;
                    }
                    let r = (rr - b) / 2;
                    for o in 0..ob {
                        let a = format!("i{o}_{r}_{f}");
                        let _ = writeln!(
                            s,
                            "              {a} = _mm512_dpbusd_epi32({a}, x, w{o}_{b});"
                        );
                    }
                }
                let _ = writeln!(s, "            }}");
            }
        }
        let _ = writeln!(s, "        }}");
    }
    let _ = writeln!(s, "    }}");
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
        let c = cut(12, 2, 4, 2).unwrap();
        assert_eq!((c.sb, c.sv), (2, 4));
        // 800 slots: strips of 2 vectors; 1200: one row.
        assert_eq!(cut(200, 2, 8, 2), Some(Cut { sb: 2, sv: 2 }));
        assert_eq!(cut(300, 2, 8, 2), Some(Cut { sb: 1, sv: 2 }));
        assert!(cut(100_000, 2, 8, 2).is_none());
    }
}
