//! `--precision bf16` on x86-avx512: the 3x3 stride-1 convs of the fast path (E2ENet's 1x3x3
//! convs, depth-shifted or not, any depth kernel, dense or DSFF-sparse) and its dense 3x3
//! stride-2 convs (the backbone's down-sampling) multiply pairs of bf16
//! with `vdpbf16ps` (two products added to one f32 lane: 32 multiplies per instruction where
//! `vfmadd231ps` does 16). Inputs and weights are rounded to nearest even; sums, bias, the
//! epilogue and the instance-norm statistics stay f32 / f64. Activations are stored as bf16 in
//! the arena where the memory plan can (`layout::Elem::Bf16`; the packing then reads them as
//! they are stored, and the epilogue stores bf16, a normalized conv's raw values less a per-tile
//! shift: `conv_micro::epilogue`).
//!
//! What is paired depends on the weights (measured in `docs/experiments/bf16-conv` and
//! `benches/conv.rs`). A tile (the same tiles as the f32 kernel, so the norm partials and the
//! memory plan do not change) packs its input rows once, per sub-band of rows and column strip,
//! into bf16 pairs on the stack, each packed row with a 16-column halo on both sides:
//!
//! - **Dense convs: channel pairs.** Input "slots" (channel, depth tap) `2p` and `2p + 1` are
//!   packed as `(in_2p[r][x], in_2p+1[r][x])`; the micro kernel is the f32 one (2 output
//!   channels x 4 rows x 2 vectors) with one `vdpbf16ps` where two FMAs were, the tap columns
//!   loaded unaligned from the packed rows. Weights `[block][pair][tap column][tap row][2]`.
//! - **DSFF-sparse convs: row pairs.** Two channels of a pair are rarely both live for one
//!   output, so each slot's rows are paired instead: `Q_k[x] = (in[2k][x], in[2k + 1][x])`.
//!   Output row `r` reads input rows `r .. r + 2`: from `Q_k` with `(w0c, w1c)` when `r = 2k`,
//!   `(w2c, 0)` when `r = 2k - 2`, `(0, w0c)` when `r = 2k + 1`, `(w1c, w2c)` when `r = 2k - 1`
//!   (12 weight words per kernel); each `Q_k` vector, its column taps cut with `valignd`, feeds
//!   up to 12 `vdpbf16ps` (9 taps in 6 per row: 75% of the products useful, against 56% for
//!   pairs of taps `(x - 1, x)` that an earlier version used, and half their packed bytes).
//!   One output channel per micro kernel, walking its CSR of slots (weights `[entry][12]`).
//!   Each `vdpbf16ps` broadcasts its weight word from memory (`e2bf_dpm`, inline asm: gcc
//!   keeps broadcast weights in registers and spilled accumulators).
//! - **Dense stride-2 convs: channel pairs**, each packed row split into the pairs of the even
//!   input columns and those of the odd ones (`e2bf_eo`: two `vpermt2w` per 32 columns of a
//!   pair), so the three column taps of output `x` (`2x - 1`, `2x`, `2x + 1`) are plain vector
//!   loads (odd set one word left, even set, odd set); 4 output channels x 2 rows x 2 vectors,
//!   as the f32 kernel. Measured 2.1x the f32 kernel in `benches/conv.rs` (1 thread, Zen 4).
//!
//! - **Dense 1x1x1 convs** (the heads): `conv_bf16_1x1.rs`, channel pairs read where they are
//!   stored, no packing.
//!
//! The packed band is kept under [`BUDGET`] by narrowing the column strip, then the sub-band's
//! rows; a conv with so many slots that one row of its vectors would not fit, or so few (the
//! 1-channel first conv) that packing costs more than it saves, stays f32 ([`emit`] returns
//! `None`).
//!
//! The weight pairs are stored as 32-bit words in the `I` constants (bit patterns, no float
//! canonicalization on the way). Slots whose plane lies outside the volume (depth padding, depth
//! shift) are packed as zeros instead of skipped, so every micro kernel walks all its entries.

use std::fmt::Write;

use super::conv::{ConvSpec, Geom};
use super::conv_fast::{blocking, render_packed, Blocking, FastConv, Packed, Slots};
use super::conv_micro::epilogue;
use crate::emit::{Consts, Kernel, NodeCtx};
use crate::layout::PAD_LEFT;
use crate::precision::Precision;
use crate::target::Target;

/// Bytes of packed pairs a tile may hold at once (on its thread's stack: the runtime's pool
/// threads have 4 MiB, `pool::KERNEL_STACK`, the calling thread needs 1 MiB, `e2enc.h`; Zen 4
/// and Zen 5 cores have 1 MiB of L2). 640 KiB holds AMOS-CT's level-1 fusion conv (240 slots,
/// 64 wide: 553 KiB) whole; cut at 512 KiB into strips of 2 vectors, each with its 2 halo
/// vectors, the whole network ran 1.8% slower (3 alternating rounds, Zen 4, 2026-12-05).
pub const BUDGET: usize = 640 * 1024;

/// Whether a bundle for `target` in `precision` gets bf16 conv kernels.
pub fn enabled(target: Target, precision: Precision) -> bool {
    precision == Precision::Bf16 && target == Target::X86Avx512
}

/// Whether a fast-path geometry has a packed (bf16, int8) stride-1 kernel: 3x3 in (H, W),
/// stride 1 there.
pub fn applies(g: &Geom) -> bool {
    !g.transposed && g.k[1] == 3 && g.k[2] == 3 && g.s[1] == 1 && g.s[2] == 1 && g.p[1] == 1
}

/// Whether a fast-path geometry has a bf16 stride-2 kernel: dense 3x3, stride 2 and padding 1
/// in (H, W), rows of more than 8 outputs (narrower ones use 8-lane f32 vectors).
pub fn applies_s2(g: &Geom) -> bool {
    !g.transposed
        && !g.sparse
        && g.k[1] == 3
        && g.k[2] == 3
        && (g.s[1], g.s[2]) == (2, 2)
        && (g.p[1], g.p[2]) == (1, 1)
        && g.y[4] > 8
}

/// How a tile is cut: rows per sub-band, 16-column vectors per strip, and the packing (also the
/// int8 channel quads', `conv_int8_quads.rs`, whose units are packed as the channel pairs are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cut {
    pub sb: usize,
    pub sv: usize,
    /// Row pairs (sparse convs) instead of channel pairs (dense convs).
    pub rows: bool,
    /// Stride 2 (channel pairs): each packed row holds the even input columns' pairs, then the
    /// odd ones' ([`Cut::half_words`] each).
    pub s2: bool,
}

impl Cut {
    /// 32-bit words of one column set of a packed row: the strip's vectors with a 16-word halo
    /// on each side.
    pub fn half_words(self) -> usize {
        self.sv * 16 + 32
    }
    /// 32-bit words of one packed row of a strip (both column sets at stride 2).
    pub fn row_words(self) -> usize {
        self.half_words() * if self.s2 { 2 } else { 1 }
    }
    /// Input rows a sub-band of `sb` output rows reads.
    pub fn in_rows(self) -> usize {
        if self.s2 {
            2 * self.sb + 1
        } else {
            self.sb + 2
        }
    }
    /// 32-bit words of one packed unit: a slot's `(sb + 2) / 2` (rounded up) row pairs, or a
    /// channel pair's input rows.
    pub fn unit_words(self) -> usize {
        if self.rows {
            (self.sb + 2).div_ceil(2) * self.row_words()
        } else {
            self.in_rows() * self.row_words()
        }
    }
}

/// The cut of a tile of `rb` rows and `nv` vectors with `units` packed units and micro blocks
/// of `vo` vectors: the whole band if it fits [`BUDGET`], else narrower strips (multiples of
/// `vo`), then fewer rows; `None` if not even one row of `vo` vectors fits.
fn cut(units: usize, rb: usize, nv: usize, vo: usize, rows: bool, s2: bool) -> Option<Cut> {
    cut_within(BUDGET, units, rb, nv, vo, rows, s2)
}

/// [`cut`] under a `budget` of bytes.
pub(super) fn cut_within(
    budget: usize,
    units: usize,
    rb: usize,
    nv: usize,
    vo: usize,
    rows: bool,
    s2: bool,
) -> Option<Cut> {
    let fits = |c: Cut| units * c.unit_words() * 4 <= budget;
    let mut c = Cut {
        sb: rb,
        sv: nv,
        rows,
        s2,
    };
    while !fits(c) && c.sv > vo {
        c.sv = (c.sv / 2).max(vo).div_ceil(vo) * vo;
    }
    while !fits(c) && c.sb > 1 {
        c.sb -= 1;
    }
    fits(c).then_some(c)
}

/// bf16 RNE of `v` (NaN stays a quiet NaN), widened for packing.
fn bf16_bits(v: f32) -> u32 {
    u32::from(crate::precision::bf16_bits(v))
}

/// A pair of bf16 as one 32-bit word, `lo` in the low half.
pub(super) fn pair(lo: f32, hi: f32) -> i32 {
    (bf16_bits(lo) | (bf16_bits(hi) << 16)) as i32
}

/// The twelve pair words of one 3x3 kernel plane `w(b, cc)` for row pairs `(row 2k, row 2k + 1)`
/// at tap column `c`: `A_c = (w0c, w1c)` for output row `2k`, `B_c = (w2c, 0)` for `2k - 2`,
/// `C_c = (0, w0c)` for `2k + 1`, `D_c = (w1c, w2c)` for `2k - 1`; stored A0 A1 A2 B0 .. D2.
fn row_pair_weights(w: impl Fn(usize, usize) -> f32) -> [i32; 12] {
    let mut o = [0; 12];
    for c in 0..3 {
        o[c] = pair(w(0, c), w(1, c));
        o[3 + c] = pair(w(2, c), 0.0);
        o[6 + c] = pair(0.0, w(0, c));
        o[9 + c] = pair(w(1, c), w(2, c));
    }
    o
}

/// The bf16 kernel of a fast-path conv, or `None` where it has none (see [`applies`]) or its
/// slots would not fit [`BUDGET`].
/// The C expression of the first packed input row `r0` of stored channel `c` (a C term) at
/// input plane `z` (a C expression), sample `n`; channels of a ring (`fc.ring_in`, batch 1) are
/// read from their slot in it.
pub(super) fn row_at(fc: &FastConv, c: &str, z: &str) -> String {
    row_at_row(fc, c, z, "r0")
}

/// [`row_at`] with the first packed row's storage row `r` (a C expression; `r0` at stride 1).
pub(super) fn row_at_row(fc: &FastConv, c: &str, z: &str, r: &str) -> String {
    let x = &fc.x;
    let plain = format!(
        "{} + {} + (int64_t)n * {} + (int64_t){c} * {} + (int64_t)({z}) * {} + (int64_t)({r}) * {} + {PAD_LEFT}",
        x.c_base(), x.offset, x.n_stride, x.c_stride, x.d_stride, x.row
    );
    let base = fc
        .ring_in
        .map(|r| format!("{} + {}", x.c_base(), r.offset))
        .unwrap_or_default();
    let tail = format!(" + (int64_t)({r}) * {} + {PAD_LEFT}", x.row);
    super::conv_fast::ring_or(fc, c, z, &base, &tail, &plain)
}

pub fn emit(ctx: &NodeCtx, sp: &ConvSpec, consts: &mut Consts) -> Option<Kernel> {
    let g = &sp.g;
    if super::conv_bf16_1x1::applies(g) {
        return super::conv_bf16_1x1::emit(ctx, sp, consts);
    }
    if !applies(g) && !applies_s2(g) {
        return None;
    }
    let cin = g.x[1];
    let [co, ow] = [g.y[1], g.y[4]];
    let kd = g.k[0];
    let lanes = 16;
    let nv = ow.div_ceil(lanes);
    let rb = blocking(g).rb;
    let s2 = g.s[1] == 2;
    // Stride 2: 4 outputs x 2 rows x 2 vectors, as the f32 kernel (`blocking_for`): each loaded
    // vector feeds 4 or 8 `vdpbf16ps`.
    let (ob, vo) = if g.sparse {
        (1, 2.min(nv))
    } else if s2 {
        (4.min(co), 2.min(nv))
    } else {
        (2.min(co), 2.min(nv))
    };
    let slots = cin * kd;
    if slots < 4 {
        return None;
    }
    let npairs = slots.div_ceil(2);
    let c = cut(
        if g.sparse { slots } else { npairs },
        rb,
        nv,
        vo,
        g.sparse,
        s2,
    )?;
    let plane =
        |off: usize, a: usize| move |b: usize, cc: usize| sp.wdata[off + (a * 3 + b) * 3 + cc];
    let (w_off, sl_off, rp_off);
    if !g.sparse {
        let nob = co.div_ceil(ob);
        // Weight of output `oo`, slot `sl`, tap (b, cc) (zero past the last output or slot).
        let wt = |oo: usize, sl: usize, b: usize, cc: usize| {
            if oo < co && sl < slots {
                plane(sp.rows[oo][sl / kd].1, sl % kd)(b, cc)
            } else {
                0.0
            }
        };
        let mut w = Vec::with_capacity(nob * npairs * 9 * ob);
        for blk in 0..nob {
            for p in 0..npairs {
                for cc in 0..3 {
                    for b in 0..3 {
                        for o in 0..ob {
                            let oo = blk * ob + o;
                            w.push(pair(wt(oo, 2 * p, b, cc), wt(oo, 2 * p + 1, b, cc)));
                        }
                    }
                }
            }
        }
        w_off = consts.push_i32(&w);
        sl_off = 0;
        rp_off = 0;
    } else {
        let mut rp = vec![0i32];
        let mut sl = Vec::new();
        let mut w = Vec::new();
        for row in &sp.rows {
            for &(ch, off) in row {
                for a in 0..kd {
                    sl.push((ch * kd + a) as i32);
                    w.extend(row_pair_weights(plane(off, a)));
                }
            }
            rp.push(sl.len() as i32);
        }
        sl_off = consts.push_i32(&sl);
        rp_off = consts.push_i32(&rp);
        w_off = consts.push_i32(&w);
    }
    let slots_at = push_slots(sp, consts);
    let bias = sp.push_bias(co.div_ceil(ob) * ob, consts);
    let what = format!(
        "{} conv{} {}x3x3 s{} {}->{} bf16",
        ctx.label,
        if g.sparse { " sparse" } else { "" },
        kd,
        g.s[1],
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
        g.sparse.then_some(rp_off),
        slots,
        bias,
    );
    Some(render(&fc, c, sl_off))
}

/// Writes the kernel: the packing function, the micro kernels, the tile loop
/// ([`render_packed`]).
fn render(fc: &FastConv, c: Cut, sl_off: usize) -> Kernel {
    let (bl, y) = (fc.bl, &fc.y);
    let npairs = fc.ne_dense.div_ceil(2);
    let units = if c.rows { fc.ne_dense } else { npairs };
    let helpers = if c.rows {
        pack_rows_fn(fc, c)
    } else if c.s2 {
        pack_chan2_fn(fc, c)
    } else {
        pack_chan_fn(fc, c)
    };
    let args = if fc.g.sparse {
        format!(
            "A, W, I + {sl_off} + e0, (const uint32_t *)(I + {}) + (int64_t)e0 * 12, e1 - e0, pk + (xv - xs) * 16, po + (int64_t)o * {}, o, st + 2 * o, sh + o",
            fc.w, y.c_stride
        )
    } else {
        format!(
            "A, W, 0, (const uint32_t *)(I + {}) + (int64_t)ob * {}, {npairs}, pk + (xv - xs) * 16, po + (int64_t)ob * {}, ob * {}, st + 2 * ob * {}, sh + ob * {}",
            fc.w,
            npairs * 9 * bl.ob,
            bl.ob * y.c_stride,
            bl.ob,
            bl.ob,
            bl.ob
        )
    };
    let mut micro = |name: &str, r: usize, vo: usize, tail: bool| {
        if c.rows {
            micro_rows(fc, c, name, r, vo, tail)
        } else {
            micro_chan(fc, c, name, r, vo, tail)
        }
    };
    let p = Packed {
        sb: c.sb,
        sv: c.sv,
        pk_words: units * c.unit_words(),
        pack: format!(
            "{}_pack(A, I + {}, pk, n, zb, r0, nr, xs, xe)",
            fc.name, fc.ents
        ),
        args,
        tag: "mb",
        micro: &mut micro,
    };
    render_packed(fc, p, helpers)
}

/// The slots of a packed (bf16, int8) conv, as the f32 kernel's entries: (stored channel,
/// depth tap, shifted tap) per (input channel, depth tap); and whether some slot's plane may lie
/// outside the volume through depth padding (`check_iz`) or a depth shift (`check_jz`).
pub(super) fn slot_entries(sp: &ConvSpec) -> (Vec<i32>, bool, bool) {
    let g = &sp.g;
    let (cin, d, od, kd) = (g.x[1], g.x[2], g.y[2], g.k[0]);
    let (sd, pd) = (g.s[0], g.p[0]);
    let check_iz = (0..od).any(|z| {
        (0..kd).any(|a| {
            let iz = (z * sd + a) as i64 - pd as i64;
            !(0..d as i64).contains(&iz)
        })
    });
    let check_jz = sp.shifts.iter().any(|&v| v != 0);
    let ents = (0..cin)
        .flat_map(|ch| {
            (0..kd).flat_map(move |a| {
                [
                    sp.channels[ch] as i32,
                    a as i32,
                    (a as i64 - sp.shifts[ch]) as i32,
                ]
            })
        })
        .collect();
    (ents, check_iz, check_jz)
}

/// Pushes `sp`'s slot entries ([`slot_entries`]) into `consts`: where a packed kernel finds
/// them, and its depth checks.
pub(super) fn push_slots(sp: &ConvSpec, consts: &mut Consts) -> Slots {
    let (ents, check_iz, check_jz) = slot_entries(sp);
    Slots {
        ents: consts.push_i32(&ents),
        check_iz,
        check_jz,
    }
}

/// The depth checks of a slot whose entry is at `ent` (a C expression of an `int32_t *`): true
/// when its plane lies outside the volume.
pub(super) fn outside(fc: &FastConv, ent: &str) -> Vec<String> {
    let d = fc.g.x[2];
    let mut checks = Vec::new();
    if fc.check_iz {
        checks.push(format!("(unsigned)(zb + {ent}[1]) >= {d}u"));
    }
    if fc.check_jz {
        checks.push(format!("(unsigned)(zb + {ent}[2]) >= {d}u"));
    }
    checks
}

/// The C condition that the slot of entry `ent` lies inside the input's depth (`1` where no
/// entry can lie outside): [`outside`] negated.
pub(super) fn inside(fc: &FastConv, ent: &str) -> String {
    let o = outside(fc, ent);
    if o.is_empty() {
        "1".to_string()
    } else {
        format!("!({})", o.join(" || "))
    }
}

/// The channel-pair packing function of a dense kernel: slot pairs `(2p, 2p + 1)` of sample
/// `n` (a missing or outside second slot as zeros), input rows `r0 - 1 .. r0 + nr`, vectors
/// `xs .. xe` with a 16-column halo each side (only columns `16 xs - 1` and `16 xe` matter;
/// storage outside the row's reads as zero), into `pk` (`[pair][row][halo, columns, halo]`).
fn pack_chan_fn(fc: &FastConv, c: Cut) -> String {
    let x = &fc.x;
    let nv = fc.g.y[4].div_ceil(16);
    let (rw, uw) = (c.row_words(), c.unit_words());
    let slots = fc.ne_dense;
    let right = (x.row - PAD_LEFT).saturating_sub(16 * nv).min(16);
    let ok = |ent: &str| inside(fc, ent);
    let base = |ent: &str| row_at(fc, &format!("{ent}[0]"), &format!("zb + {ent}[2]"));
    format!(
        "E2_BF16 static void {name}_pack(const float *restrict A, const int32_t *restrict ent,
    uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {{
    const unsigned ml = xs == 0 ? 0xff00u : 0xffffu;
    const unsigned mr = xe == {nv} ? {rmask:#x}u : 0xffffu;
    for (int p = 0; p < {npairs}; p++, ent += 6) {{
        uint32_t *pq = pk + (int64_t)p * {uw};
        const int ok0 = {ok0}, ok1 = 2 * p + 1 < {slots} && {ok1};
        const {xt} *p0 = ok0 ? {b0} : 0, *p1 = ok1 ? {b1} : 0;
        for (int rr = 0; rr < nr + 2; rr++) {{
            const {xt} *q0 = p0 ? p0 + (int64_t)rr * {xrow} : 0, *q1 = p1 ? p1 + (int64_t)rr * {xrow} : 0;
            uint32_t *o = pq + (int64_t)rr * {rw} + 16 - 16 * xs;
{body}        }}
    }}
}}
",
        name = fc.name,
        body = chan_pairs(x.is_bf16()),
        npairs = slots.div_ceil(2),
        rmask = (1u32 << right) - 1,
        ok0 = ok("ent"),
        ok1 = ok("(ent + 3)"),
        b0 = base("ent"),
        b1 = base("(ent + 3)"),
        xrow = x.row,
        xt = x.c_type(),
    )
}

/// One packed vector of pairs at column offset `at` (C expressions) from the rows `lo.0` and
/// `hi.0`: a side with a condition `Some(c)` reads as zero where `c` is false (where `c` is the
/// row pointer itself, the row may be null and is not touched); `mask` (a C expression, or empty
/// for a whole vector) limits the columns read. From bf16 storage (`narrow`) the stored values
/// are paired as they are (`e2bf_pairs_h`), from f32 they are rounded (`e2bf_pairs`).
fn pair_vector(
    narrow: bool,
    at: &str,
    mask: &str,
    lo: (&str, Option<&str>),
    hi: (&str, Option<&str>),
) -> String {
    if narrow {
        let mask = if mask.is_empty() { "0xffffu" } else { mask };
        let side = |(q, ok): (&str, Option<&str>)| match ok {
            None => format!("{q} + {at}, {mask}"),
            Some(c) if c == q => format!("{q} ? {q} + {at} : (const e2h *)A, {q} ? {mask} : 0u"),
            Some(c) => format!("{q} + {at}, {c} ? {mask} : 0u"),
        };
        format!(
            "e2bf_store(o + {at}, e2bf_pairs_h({}, {}));",
            side(lo),
            side(hi)
        )
    } else {
        let side = |(q, ok): (&str, Option<&str>)| {
            let ld = match mask {
                "" => format!("e2f16_load({q} + {at})"),
                m => format!("e2f16_loadm({q} + {at}, {m})"),
            };
            match ok {
                None => ld,
                Some(c) => format!("{c} ? {ld} : e2f16_zero()"),
            }
        };
        format!(
            "const e2f16 lo = {}; const e2f16 hi = {}; e2bf_store(o + {at}, e2bf_pairs(lo, hi));",
            side(lo),
            side(hi)
        )
    }
}

/// The statements of a channel-pair packing row (`q0`, `q1`: the pair's rows or null): the left
/// halo vector, the strip's vectors, the right halo vector ([`pair_vector`]).
fn chan_pairs(narrow: bool) -> String {
    let one = |at: &str, mask: &str| {
        pair_vector(narrow, at, mask, ("q0", Some("q0")), ("q1", Some("q1")))
    };
    format!(
        "            {{ {} }}
            for (int j = xs; j < xe; j++) {{ {} }}
            {{ {} }}
",
        one("16 * xs - 16", "ml"),
        one("16 * j", ""),
        one("16 * xe", "mr")
    )
}

/// The statements of a row-pair packing pair (`q0`, `q1 = q0 + row`; `two`: whether `q1` is a
/// row of the sub-band), as [`chan_pairs`]; the strip's loop prefetches the next slot's rows
/// (`n0`).
fn row_pairs(narrow: bool, row: usize) -> String {
    let one =
        |at: &str, mask: &str| pair_vector(narrow, at, mask, ("q0", None), ("q1", Some("two")));
    format!(
        "            {{ {} }}
            for (int j = xs; j < xe; j++) {{
                e2_prefetch2(n0 + 16 * j);
                e2_prefetch2(n0 + {row} + 16 * j);
                {}
            }}
            {{ {} }}
",
        one("16 * xs - 16", "ml"),
        one("16 * j", ""),
        one("16 * xe", "mr")
    )
}

/// The channel-pair packing function of a dense stride-2 kernel: as [`pack_chan_fn`], input
/// rows `2 r0 - 1 .. 2 (r0 + nr) - 1` (storage rows from `2 r0`), each packed row holding the
/// pairs of the even input columns `2 x` and then of the odd ones `2 x + 1` of output vectors
/// `xs .. xe`, each set with a 16-word halo on both sides; only the odd set's left halo is
/// read (its last word: input column `32 xs - 1`, the padding zero at `xs = 0`). Columns past
/// the row's storage read as zero.
fn pack_chan2_fn(fc: &FastConv, c: Cut) -> String {
    let x = &fc.x;
    let (rw, uw, hw) = (c.row_words(), c.unit_words(), c.half_words());
    let slots = fc.ne_dense;
    // Values of a row's storage from column 0 (values and right padding).
    let room = x.row - PAD_LEFT;
    let ok = |ent: &str| inside(fc, ent);
    let base = |ent: &str| {
        row_at_row(
            fc,
            &format!("{ent}[0]"),
            &format!("zb + {ent}[2]"),
            "2 * r0",
        )
    };
    let eo = if x.is_bf16() { "e2bf_eo_h" } else { "e2bf_eo" };
    format!(
        "E2_BF16 static void {name}_pack(const float *restrict A, const int32_t *restrict ent,
    uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {{
    for (int p = 0; p < {npairs}; p++, ent += 6) {{
        uint32_t *pq = pk + (int64_t)p * {uw};
        const int ok0 = {ok0}, ok1 = 2 * p + 1 < {slots} && {ok1};
        const {xt} *p0 = ok0 ? {b0} : 0, *p1 = ok1 ? {b1} : 0;
        for (int rr = 0; rr < 2 * nr + 1; rr++) {{
            const {xt} *q0 = p0 ? p0 + (int64_t)rr * {xrow} : ({xt} *)A;
            const {xt} *q1 = p1 ? p1 + (int64_t)rr * {xrow} : ({xt} *)A;
            uint32_t *oe = pq + (int64_t)rr * {rw} + 16 - 16 * xs, *oo = oe + {hw};
            __m512i ev, od;
            if (xs == 0) e2bf_store(oo - 16, _mm512_setzero_si512());
            for (int j = xs == 0 ? 0 : xs - 1; j < xe; j++) {{
                /* Columns 32 j .. 32 j + 31 inside the row's storage. */
                const int left = {room} - 32 * j;
                const unsigned m = left >= 32 ? 0xffffffffu : left <= 0 ? 0u : (1u << left) - 1u;
                {eo}(q0 + 32 * j, p0 ? m : 0u, q1 + 32 * j, p1 ? m : 0u, &ev, &od);
                if (j >= xs) e2bf_store(oe + 16 * j, ev);
                e2bf_store(oo + 16 * j, od);
            }}
        }}
    }}
}}
",
        name = fc.name,
        npairs = slots.div_ceil(2),
        ok0 = ok("ent"),
        ok1 = ok("(ent + 3)"),
        b0 = base("ent"),
        b1 = base("(ent + 3)"),
        xrow = x.row,
        xt = x.c_type(),
    )
}

/// One channel-pair micro kernel: `rows` output rows x `vo` vectors of `ob` output channels over
/// the slot pairs; per tap column, the `3 ob` pair weights once, then each packed row loaded
/// once (at the tap's column) into every (output channel, row) that uses it: one `vdpbf16ps`
/// per (output, row, vector, pair, tap). Stride 1: output row `r` reads packed rows `r .. r + 2`,
/// tap column `cc` is an unaligned load at `x + cc - 1`. Stride 2 (`c.s2`): output row `r` reads
/// packed rows `2 r .. 2 r + 2`, and output column `x` input columns `2 x - 1, 2 x, 2 x + 1`:
/// the odd set one word left, the even set, the odd set (aligned loads but the first).
fn micro_chan(fc: &FastConv, c: Cut, name: &str, rows: usize, vo: usize, tail: bool) -> String {
    let ob = fc.bl.ob;
    let (rw, uw, hw) = (c.row_words(), c.unit_words(), c.half_words());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "E2_BF16 static void {name}(float *restrict A, const float *restrict W, const int32_t *restrict sl,
    const uint32_t *restrict w, int ne, const uint32_t *restrict pk, int64_t po, int o0, double *restrict st, float *restrict sh) {{
    (void)W; (void)sl; (void)o0; (void)st; (void)sh;"
    );
    let taps = ChanTaps {
        s2: c.s2,
        rw,
        uw,
        hw,
    };
    chan_loop(&mut s, &BF16_PAIRS, taps, ob, rows, vo);
    epilogue(&mut s, fc, rows, vo, tail);
    s.push_str("}\n");
    s
}

/// The vector vocabulary of a channel-set micro kernel's loop ([`chan_loop`]): bf16 channel
/// pairs ([`BF16_PAIRS`]) or int8 channel quads (`conv_int8_quads.rs`).
pub(super) struct ChanOps {
    /// Accumulators: C type, zero, name prefix (`{prefix}{o}_{r}_{f}`).
    pub acc: (&'static str, &'static str, &'static str),
    /// C type of a packed vector and of a broadcast weight word.
    pub vty: &'static str,
    /// The broadcast of weight word `{}` (an index from `w`).
    pub bcast: &'static str,
    /// An aligned and an unaligned load at `pq + {}` (words).
    pub load: (&'static str, &'static str),
    /// The accumulating dot product, `dp(acc, x, w)`.
    pub dp: &'static str,
    /// Stride 1: the centre tap column (aligned) with the aligned load.
    pub aligned_centre: bool,
}

/// [`ChanOps`] of the bf16 channel pairs (`vdpbf16ps`).
pub(super) const BF16_PAIRS: ChanOps = ChanOps {
    acc: ("e2f16", "e2f16_zero()", "a"),
    vty: "e2bf",
    bcast: "e2bf_bcast(w + {})",
    load: ("e2bf_load(pq + {})", "e2bf_loadu(pq + {})"),
    dp: "e2bf_dp",
    aligned_centre: false,
};

/// Where a channel-set micro kernel finds its taps: stride 2 (even and odd column sets), words
/// of a packed row, of a packed unit (channel set) and of one column set.
#[derive(Clone, Copy)]
pub(super) struct ChanTaps {
    pub s2: bool,
    pub rw: usize,
    pub uw: usize,
    pub hw: usize,
}

/// The accumulators and the entry loop of a channel-set micro kernel (`w`, `ne`, `pk` its
/// arguments): `rows` output rows x `vo` vectors of `ob` output channels; per tap column, the
/// `3 ob` weight words once (`w` laid out `[entry][tap column][tap row][output]`), then each
/// packed row loaded once at the tap's column into every (output, row) that uses it. Stride 1:
/// output row `r` reads packed rows `r .. r + 2`, tap column `cc` unaligned at `x + cc - 1`;
/// stride 2: rows `2 r .. 2 r + 2`, output column `x` input columns `2 x - 1, 2 x, 2 x + 1`: the
/// odd set one word left, the even set, the odd set.
pub(super) fn chan_loop(
    s: &mut String,
    ops: &ChanOps,
    t: ChanTaps,
    ob: usize,
    rows: usize,
    vo: usize,
) {
    let (aty, zero, p) = ops.acc;
    let st = if t.s2 { 2 } else { 1 };
    for o in 0..ob {
        for r in 0..rows {
            for f in 0..vo {
                let _ = writeln!(s, "    {aty} {p}{o}_{r}_{f} = {zero};");
            }
        }
    }
    let _ = writeln!(
        s,
        "    for (int e = 0; e < ne; e++, w += {}) {{
        const uint32_t *pq = pk + (int64_t)e * {} + 16;",
        9 * ob,
        t.uw
    );
    for cc in 0..3 {
        let _ = writeln!(s, "        {{");
        for o in 0..ob {
            for b in 0..3 {
                let _ = writeln!(
                    s,
                    "            const {} w{o}_{b} = {};",
                    ops.vty,
                    ops.bcast
                        .replace("{}", &((cc * 3 + b) * ob + o).to_string())
                );
            }
        }
        // (column set, word offset, load) of tap column `cc`.
        let (set, shift, load) = match (t.s2, cc) {
            (false, 1) if ops.aligned_centre => (0, 0, ops.load.0),
            (false, _) => (0, cc as isize - 1, ops.load.1),
            (true, 0) => (t.hw, -1, ops.load.1),
            (true, 1) => (0, 0, ops.load.0),
            (true, _) => (t.hw, 0, ops.load.0),
        };
        for rr in 0..(rows - 1) * st + 3 {
            for f in 0..vo {
                let at = (rr * t.rw + set + 16 * f) as isize + shift;
                let _ = writeln!(
                    s,
                    "            {{ const {} x = {};",
                    ops.vty,
                    load.replace("{}", &at.to_string())
                );
                for b in 0..3 {
                    if rr < b || (rr - b) % st != 0 || (rr - b) / st >= rows {
                        continue;
                    }
                    let r = (rr - b) / st;
                    for o in 0..ob {
                        let a = format!("{p}{o}_{r}_{f}");
                        let _ = writeln!(s, "              {a} = {}({a}, x, w{o}_{b});", ops.dp);
                    }
                }
                let _ = writeln!(s, "            }}");
            }
        }
        let _ = writeln!(s, "        }}");
    }
    let _ = writeln!(s, "    }}");
}

/// The packing function of a row-pair kernel: slots `[0, slots)` of sample `n`, input rows
/// `r0 - 1 .. r0 + nr` (packed rows `0 .. nr + 2`) in pairs `(2k, 2k + 1)` (the row past the
/// last, where `nr` is odd, as zeros), vectors `xs .. xe` plus a 16-column halo each side (only
/// columns `16 xs - 1` and `16 xe` matter; storage outside the row's reads as zero), into `pk`
/// (`[slot][pair row][halo, strip columns, halo]`).
fn pack_rows_fn(fc: &FastConv, c: Cut) -> String {
    let x = &fc.x;
    let nv = fc.g.y[4].div_ceil(16);
    let (rw, slw) = (c.row_words(), c.unit_words());
    // Columns of a row's storage from value 0 (values and right padding).
    let room = x.row - PAD_LEFT;
    let right = room.saturating_sub(16 * nv).min(16);
    let checks = outside(fc, "ent");
    let skip = if checks.is_empty() {
        String::new()
    } else {
        format!(
            "        if ({}) {{ memset(pq, 0, sizeof(uint32_t) * {slw}); continue; }}\n",
            checks.join(" || ")
        )
    };
    format!(
        "E2_BF16 static void {name}_pack(const float *restrict A, const int32_t *restrict ent,
    uint32_t *restrict pk, int n, int zb, int r0, int nr, int xs, int xe) {{
    const unsigned ml = xs == 0 ? 0xff00u : 0xffffu;
    const unsigned mr = xe == {nv} ? {rmask:#x}u : 0xffffu;
    for (int s = 0; s < {slots}; s++, ent += 3) {{
        uint32_t *pq = pk + (int64_t)s * {slw};
{skip}        const {xt} *p = {p_at};
        /* The next slot's rows into L2 (another channel: the hardware prefetchers do not follow). */
        const {xt} *pn = s + 1 < {slots}{next_ok} ? {pn_at} : p;
        for (int k = 0; 2 * k < nr + 2; k++) {{
            const {xt} *q0 = p + (int64_t)(2 * k) * {xrow}, *q1 = q0 + {xrow};
            const {xt} *n0 = pn + (int64_t)(2 * k) * {xrow};
            const int two = 2 * k + 1 < nr + 2;
            uint32_t *o = pq + (int64_t)k * {rw} + 16 - 16 * xs;
{body}        }}
    }}
}}
",
        name = fc.name,
        body = row_pairs(x.is_bf16(), x.row),
        slots = fc.ne_dense,
        rmask = (1u32 << right) - 1,
        next_ok = outside(fc, "(ent + 3)").iter().map(|c| format!(" && !({c})")).collect::<String>(),
        p_at = row_at(fc, "ent[0]", "zb + ent[2]"),
        pn_at = row_at(fc, "ent[3]", "zb + ent[5]"),
        xrow = x.row,
        xt = x.c_type(),
    )
}

/// One row-pair micro kernel (one output channel): `rows` output rows x `vo` vectors over the
/// entries; per pair row and vector, three column taps cut from aligned loads (`valignd`) feed
/// up to 12 `vdpbf16ps` (output rows `2k`, `2k - 2`, `2k + 1`, `2k - 1`).
fn micro_rows(fc: &FastConv, c: Cut, name: &str, rows: usize, vo: usize, tail: bool) -> String {
    let (rw, slw) = (c.row_words(), c.unit_words());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "E2_BF16 static void {name}(float *restrict A, const float *restrict W, const int32_t *restrict sl,
    const uint32_t *restrict w, int ne, const uint32_t *restrict pk, int64_t po, int o0, double *restrict st, float *restrict sh) {{
    (void)W; (void)o0; (void)st; (void)sh;"
    );
    for r in 0..rows {
        for f in 0..vo {
            let _ = writeln!(s, "    e2f16 a0_{r}_{f} = e2f16_zero();");
        }
    }
    let _ = writeln!(
        s,
        "    for (int e = 0; e < ne; e++, w += 12) {{
        const uint32_t *pq = pk + (int64_t)sl[e] * {slw} + 16;"
    );
    let live = |r: isize| (0..rows as isize).contains(&r);
    // The weight words are broadcast from memory by each `vdpbf16ps` (`e2bf_dpm`): held in
    // registers, twelve of them pushed a 10x2 block's accumulators onto the stack (measured:
    // 3-4% slower in `benches/conv.rs`, up to 10% in the AMOS-CT bundle's sparse convs).
    for k in 0..(rows + 2).div_ceil(2) {
        let k2 = 2 * k as isize;
        // (output row, first weight word) of the four uses of pair row k.
        let uses: Vec<(isize, usize)> = [(k2, 0), (k2 - 2, 3), (k2 + 1, 6), (k2 - 1, 9)]
            .into_iter()
            .filter(|&(r, _)| live(r))
            .collect();
        if uses.is_empty() {
            continue;
        }
        // The pair row's vectors (and the ones either side) loaded once, their column taps cut
        // with `valignd`; then tap-major, vectors innermost: 2 x (up to) 4 accumulators' chains
        // interleave (1% faster than vector-major in `benches/conv.rs`).
        let base = k * rw;
        let _ = writeln!(
            s,
            "        {{ const e2bf c_1 = e2bf_load(pq + {});",
            base as isize - 16
        );
        for f in 0..=vo {
            let _ = writeln!(
                s,
                "          const e2bf c{f} = e2bf_load(pq + {});",
                base + 16 * f
            );
        }
        for f in 0..vo {
            let p = if f == 0 {
                "c_1".to_string()
            } else {
                format!("c{}", f - 1)
            };
            let _ = writeln!(
                s,
                "          const e2bf t0_{f} = e2bf_alignr(c{f}, {p}, 15), t2_{f} = e2bf_alignr(c{}, c{f}, 1);",
                f + 1
            );
        }
        for t in 0..3 {
            for &(r, w0) in &uses {
                for f in 0..vo {
                    let tap = match t {
                        0 => format!("t0_{f}"),
                        1 => format!("c{f}"),
                        _ => format!("t2_{f}"),
                    };
                    let _ = writeln!(s, "          e2bf_dpm(a0_{r}_{f}, {tap}, w + {});", w0 + t);
                }
            }
        }
        let _ = writeln!(s, "        }}");
    }
    let _ = writeln!(s, "    }}");
    epilogue(&mut s, fc, rows, vo, tail);
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to even (1 + 2^-6).
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.0), 0xc000);
        assert!(f32::from_bits(bf16_bits(f32::NAN) << 16).is_nan());
        assert_eq!(pair(1.0, -2.0) as u32, 0xc000_3f80);
    }

    #[test]
    fn cuts_fit_the_budget_or_refuse() {
        // AMOS-CT level 0, sparse 96 -> 48, 128 wide, bands of 10 rows: the whole band.
        let c = cut(96, 10, 8, 2, true, false).unwrap();
        assert_eq!((c.sb, c.sv), (10, 8));
        assert_eq!(c.unit_words(), 6 * (128 + 32));
        // Level 1, dense 240 -> 96 (120 channel pairs), 64 wide, bands of 4: the whole band.
        let c = cut(120, 4, 4, 2, false, false).unwrap();
        assert_eq!((c.sb, c.sv), (4, 4));
        // Narrow with many slots: fewer rows, within the budget.
        let c = cut(960, 8, 1, 1, true, false).unwrap();
        assert!(
            960 * c.unit_words() * 4 <= BUDGET && c.sv == 1 && c.sb < 8,
            "{c:?}"
        );
        // Wide with many pairs: narrower strips (multiples of the micro block) first.
        let c = cut(300, 4, 8, 2, false, false).unwrap();
        assert!(
            300 * c.unit_words() * 4 <= BUDGET && c.sv < 8 && c.sv.is_multiple_of(2),
            "{c:?}"
        );
        // Too many for even one row.
        assert!(cut(100_000, 10, 8, 2, true, false).is_none());
    }
}
