//! bf16 pointwise convs on x86-avx512 (bundles with bf16 kernels: `--precision bf16`, and
//! `--precision int8`'s default, which stores bf16): the dense 1x1x1 convs of the fast path
//! (E2ENet's segmentation heads, 48 -> classes at full resolution) multiply **channel pairs**
//! with `vdpbf16ps`. The f32 kernel ran at 34-42% of the FMA peak on the conv bench's head
//! (Zen 4): each 16 columns of each input channel cost a load, a widening and a shift (bf16
//! storage) for the 6 FMAs of its output block, three times over (blocks of 6 for 16 outputs).
//!
//! Here a tile (the f32 kernel's: one output row) walks its input channels two at a time,
//! pairs 16 columns of both (`e2bf_pairs_h`: two loads and a `vpermt2w`; from f32 storage,
//! rounded by `e2bf_pairs`) and feeds that vector to every output channel of the block (16 at
//! once, each weight pair broadcast from memory by the instruction, `e2bf_dpm`): 16
//! `vdpbf16ps` a pair-vector, each input row read once per block. Weights are rounded to bf16
//! (nearest even), sums, bias, the epilogue and any norm statistics stay f32 / f64. An odd
//! channel count pairs the last channel with zero weights. No packing buffer: the rows are read
//! where they are stored (the next row of each channel prefetched, the tile after this one).

use std::fmt::Write;

use super::conv::{ConvSpec, Geom};
use super::conv_bf16::{pair, push_slots, row_at_row};
use super::conv_fast::{blocking, render_packed, Blocking, FastConv, Packed};
use super::conv_micro::epilogue;
use crate::emit::{Consts, Kernel, NodeCtx};

/// Output channels a micro kernel computes (accumulators; the weights come from memory).
const OB: usize = 16;

/// Whether a fast-path geometry has this kernel: dense 1x1x1, stride 1, no padding, rows of at
/// least 16 outputs.
pub fn applies(g: &Geom) -> bool {
    !g.transposed
        && !g.sparse
        && g.k == [1, 1, 1]
        && g.s == [1, 1, 1]
        && g.p == [0, 0, 0]
        && g.y[4] >= 16
}

/// The kernel of a conv [`applies`] holds for, or `None` (depth-shifted channels, an input
/// read from a ring, fewer than 2 input channels).
pub fn emit(ctx: &NodeCtx, sp: &ConvSpec, consts: &mut Consts) -> Option<Kernel> {
    let g = &sp.g;
    let cin = g.x[1];
    let co = g.y[1];
    if !applies(g)
        || cin < 2
        || ctx.ring_in.is_some()
        || sp.shifts.iter().any(|&s| s != 0)
        || sp.rows.iter().any(|r| r.len() != cin)
    {
        return None;
    }
    let rb = blocking(g).rb;
    let ob = OB.min(co);
    let nob = co.div_ceil(ob);
    let npairs = cin.div_ceil(2);
    // Weight of output `o` from input channel `c` (zero past the last of either).
    let wt = |o: usize, c: usize| -> f32 {
        match (sp.rows.get(o), c < cin) {
            (Some(row), true) => sp.wdata[row[c].1],
            _ => 0.0,
        }
    };
    // Pair words [block][pair][output in block].
    let mut w = Vec::with_capacity(nob * npairs * ob);
    for blk in 0..nob {
        for p in 0..npairs {
            for oo in 0..ob {
                let o = blk * ob + oo;
                w.push(pair(wt(o, 2 * p), wt(o, 2 * p + 1)));
            }
        }
    }
    let w_off = consts.push_i32(&w);
    let slots_at = push_slots(sp, consts);
    let bias = sp.push_bias(nob * ob, consts);
    let fc = FastConv::packed(
        ctx,
        sp,
        format!("{} conv 1x1x1 s1 {cin}->{co} bf16", ctx.label),
        Blocking { ob, rb, vo: 1 },
        slots_at,
        w_off,
        None,
        cin,
        bias,
    );
    Some(render(&fc))
}

/// Writes the kernel: the micro kernels and the tile loop ([`render_packed`], with nothing
/// to pack: the micro kernels read the stored rows).
fn render(fc: &FastConv) -> Kernel {
    let (bl, y) = (fc.bl, &fc.y);
    let npairs = fc.ne_dense.div_ceil(2);
    // The input row of output row r0 (storage row r0 + 1: no padding), stored channel 0, at
    // column 16 xv; the stored channels' offsets come from the entries.
    let xb = row_at_row(fc, "0", "zb", "r0 + 1");
    let args = format!(
        "A, W, I + {}, (const uint32_t *)(I + {}) + (int64_t)ob * {}, {xb} + xv * 16, po + (int64_t)ob * {}, ob * {}, st + 2 * ob * {}, sh + ob * {}",
        fc.ents,
        fc.w,
        npairs * bl.ob,
        bl.ob * y.c_stride,
        bl.ob,
        bl.ob,
        bl.ob
    );
    let mut m = |name: &str, r: usize, vo: usize, tail: bool| micro(fc, name, r, vo, tail);
    let p = Packed {
        sb: 1,
        sv: fc.g.y[4].div_ceil(16),
        pk_words: 16,
        pack: "(void)pk; (void)nr".into(),
        args,
        tag: "mp",
        micro: &mut m,
    };
    render_packed(fc, p, String::new())
}

/// One micro kernel: one output row, one vector (16 columns; `tail`: the row's last, masked to
/// the columns it has) of `ob` output channels.
fn micro(fc: &FastConv, name: &str, rows: usize, vo: usize, tail: bool) -> String {
    debug_assert_eq!((rows, vo), (1, 1));
    let (x, ob, cin) = (&fc.x, fc.bl.ob, fc.ne_dense);
    let ow = fc.g.y[4];
    let valid = if tail {
        ow - 16 * (ow.div_ceil(16) - 1)
    } else {
        16
    };
    let mask = format!("{:#x}u", (1u32 << valid) - 1);
    let ty = x.c_type();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "E2_BF16 static void {name}(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const uint32_t *restrict w, const {ty} *restrict xb, int64_t po, int o0, double *restrict st, float *restrict sh) {{
    (void)st; (void)sh;"
    );
    for o in 0..ob {
        let _ = writeln!(s, "    e2f16 a{o}_0_0 = e2f16_zero();");
    }
    let pairs = |lo: &str, hi: &str, mh: &str| match x.is_bf16() {
        true => format!("e2bf_pairs_h({lo}, {mask}, {hi}, {mh})"),
        false => format!("e2bf_pairs(e2f16_loadm({lo}, {mask}), e2f16_loadm({hi}, {mh}))"),
    };
    let _ = writeln!(
        s,
        "    for (int p = 0; p < {full}; p++, ent += 6, w += {ob}) {{
        const {ty} *q0 = xb + (int64_t)ent[0] * {cs}, *q1 = xb + (int64_t)ent[3] * {cs};
        e2_prefetch(q0 + {row});
        e2_prefetch(q1 + {row});
        const __m512i x = {both};",
        full = cin / 2,
        cs = x.c_stride,
        row = x.row,
        both = pairs("q0", "q1", &mask),
    );
    for o in 0..ob {
        let _ = writeln!(s, "        e2bf_dpm(a{o}_0_0, x, w + {o});");
    }
    s.push_str("    }\n");
    if cin % 2 == 1 {
        // The last channel alone (its pair's second weight is zero).
        let _ = writeln!(
            s,
            "    {{
        const {ty} *q0 = xb + (int64_t)ent[0] * {cs};
        const __m512i x = {one};",
            cs = x.c_stride,
            one = pairs("q0", "q0", "0u"),
        );
        for o in 0..ob {
            let _ = writeln!(s, "        e2bf_dpm(a{o}_0_0, x, w + {o});");
        }
        s.push_str("    }\n");
    }
    epilogue(&mut s, fc, 1, 1, tail);
    s.push_str("}\n");
    s
}
