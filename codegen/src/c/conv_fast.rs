//! The hot path: cross-correlations with `kh = kw = k` in {1, 3}, padding `(k - 1) / 2` and
//! stride `s` in {1, 2} in H and W; any kernel depth, depth stride and depth padding, with
//! per-input-channel depth shifts, dense or kernel-sparse weights.
//!
//! Tiles are `(n, z, band)`: one output plane depth and a band of `RB` output rows, computing
//! every output channel of the band, so the band's input rows (all input channels) stay in cache
//! while all output channels reuse them. Inside a tile, for each output block and each `x` block,
//! a register-blocked micro kernel keeps `OB` output channels x `RB` rows x `VF` vectors
//! of 8 columns in accumulators. It walks a list of *entries* `(c, a)` (input channel, depth
//! tap): for each column tap it broadcasts the `k * OB` weights of that tap column once, then
//! loads each input row once (`_mm256_loadu_ps` at `x - 1`, `x`, `x + 1`: the zero padding makes
//! this safe) and adds it into every (output channel, output row) that uses it. Entries whose
//! input plane is outside the volume at this depth (depth padding, depth shift) are skipped.
//!
//! Dense weights: one entry list for all outputs, weights packed per output block as
//! `[block][entry][tap column][tap row][OB]` (the last block zero-filled). Sparse weights
//! (`OB = 1`): a per-output CSR of entries, weights `[entry][tap column][tap row]`.
//!
//! Stride 2: output rows are addressed directly (input rows `2y - 1 .. 2y + 1`), and each tap
//! vector is deinterleaved as it is loaded, so the accumulators hold only real outputs. A sparse
//! tile whose band (all input channels) would not fit L2 walks column strips. The micro kernels
//! (`conv_micro.rs`) add the bias, apply the leaky ReLU when no norm follows, zero the lanes past
//! the row end, store, and accumulate the instance-norm partial sums of the tile (in double, in
//! a fixed order).
//!
//! Where the dialect has 16-lane vectors (x86-avx512), the kernels use them at both strides
//! (`lanes`, `blocking_for`; a stride-2 tap vector is the even lanes of 32 loaded columns,
//! `e2f16_even`); the rows per band, hence the tiles and the norm scratch, are the same for
//! every width, so the memory plan does not depend on the target.

//! [`lower`] makes the kernel's description, [`FastConv`] (blocking, width, strips, entry and
//! weight layouts, depth checks, epilogue), once; [`render`] only writes it out. The golden
//! kernel texts (`tests/filetests`) pin the rendering per target.

use std::fmt::Write;

use super::conv::{live_flops, slope_in_conv, ConvSpec, Geom};
use super::conv_micro::Micro;
use super::dialect::Dialect;
use super::norm::partial_ptr;
use super::text::{kernel, nvec, zero_row, zero_row_pads};
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::layout::{View, PAD_LEFT, PAD_ROWS};
use crate::target::Target;

/// Register blocking of one geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Output channels per micro tile.
    pub ob: usize,
    /// Output rows per micro tile (and per tile band).
    pub rb: usize,
    /// Output vectors (8 columns) per micro tile.
    pub vo: usize,
}

/// Vector lanes of the fast-path kernel of `g` for `target`: the dialect's widest (16 for
/// AVX-512, at stride 1 and 2; 8 for stride-2 rows of at most 8 outputs), else 8.
pub fn lanes(g: &Geom, target: Target) -> usize {
    // A stride-2 16-lane tap vector costs two loads and a permute: where 8 lanes hold a whole
    // output row, the wide one would be half padding.
    if g.s[1] == 2 && g.y[4] <= 8 {
        8
    } else {
        Dialect::of(target).wide
    }
}

/// The blocking used for a geometry with vectors of `lanes` floats. The rows per tile (and so
/// the tiles and the instance-norm scratch) do not depend on the lanes.
pub fn blocking_for(g: &Geom, lanes: usize) -> Blocking {
    if lanes == 8 {
        return blocking(g);
    }
    let k = g.k[1];
    // AVX-512: 32 zmm registers. Dense 3x3: 2 outputs x 4 rows x 2 vectors (16 accumulators,
    // 6 weights, the load): on 96 -> 48, 128^2, one thread of a Zen 4 (512-bit FMAs
    // double-pumped), 91-96% of the FMA peak, where 4 x 4 x 1 (the choice on the Zen 5 machine
    // this was first tuned on: 86-100% there) ran at 75%; 3 x 4 x 2: 87%, 6 x 4 x 1: 64%.
    // Sparse 3x3 is bound by moving input rows from L2 (scattered channels, 3 FMAs per loaded
    // vector): the widest block measured fastest on Zen 5 (vo 1 / 2 / 4 / 8: 88 / 105 / 113 /
    // 122 GFLOP/s at density 0.2; on Zen 4: 52 / 60 / 60 / 61% of one core's peak), even though
    // gcc keeps most of its 80 accumulators on the stack, since each row line is fetched once
    // per entry instead of once per 16 columns.
    //
    // Stride 2 (rows per band as on AVX2: 2 dense, 10 sparse): each tap vector costs two loads
    // and a lane permute (`e2f16_even`), so it should feed as many FMAs as registers allow:
    // four output channels x 2 rows x 2 vectors (16 accumulators, 12 weights).
    let s = g.s[1];
    let (ob, rb, vo) = match (g.sparse, k, s) {
        (false, 3, 1) => (2, 4, 2),
        (true, 3, 1) => (1, 10, 8),
        (false, 3, _) => (4, 2, 2),
        (true, 3, _) => (1, 10, 2),
        (false, _, _) => (6, 1, 4),
        (true, _, _) => (1, 1, 8),
    };
    Blocking {
        ob: ob.min(g.y[1]),
        rb: rb.min(g.y[3]),
        vo: vo.min(g.y[4].div_ceil(lanes)),
    }
}

/// The AVX2 blocking of a geometry (a function of the geometry only).
pub fn blocking(g: &Geom) -> Blocking {
    let k = g.k[1];
    let s = g.s[1];
    // Tuned for AVX2 code generation (16 ymm registers: accumulators + the broadcast weights
    // of one tap column + the loaded input must fit) on 1x96x32x128x128, 96 -> 48 (see
    // benches/conv.rs): (2, 4, 1) keeps 8 accumulators and 6 weights live.
    let (ob, rb, vo) = match (g.sparse, k, s) {
        (false, 3, 1) => (2, 4, 1),
        (false, 3, _) => (3, 2, 1),
        (true, 3, _) => (1, 10, 1),
        (false, _, _) => (3, 1, 4),
        (true, _, _) => (1, 1, 8),
    };
    Blocking {
        ob: ob.min(g.y[1]),
        rb: rb.min(g.y[3]),
        vo: vo.min(nvec(g.y[4])),
    }
}

/// Tiles per sample: output depth x row bands (the same for every target).
pub fn tiles_per_sample(g: &Geom) -> usize {
    g.y[2] * g.y[3].div_ceil(blocking(g).rb)
}

/// Bytes of a tile's input band a sparse tile may touch before it walks column strips (the
/// target's L2 is 512 KiB per core).
const BAND_BUDGET: usize = 448 * 1024;

/// Output vectors (of `lanes` floats) per column strip of a sparse tile (`None`: the whole
/// band fits the budget).
fn strip_vectors(g: &Geom, bl: Blocking, lanes: usize) -> Option<usize> {
    let (s, k) = (g.s[1], g.k[1]);
    let rows_in = s * (bl.rb - 1) + k;
    let band = |cols: usize| g.x[1] * g.k[0] * rows_in * (cols + 16) * 4;
    let nv = g.y[4].div_ceil(lanes);
    if !g.sparse || band(lanes * s * nv) <= BAND_BUDGET {
        return None;
    }
    let mut v = nv.next_power_of_two() / 2;
    while v > bl.vo && band(lanes * s * v) > BAND_BUDGET {
        v /= 2;
    }
    Some(v.max(bl.vo).div_ceil(bl.vo) * bl.vo)
}

/// The description of one fast-path conv kernel, chosen and laid out before any text is written:
/// the geometry and arena views, the register blocking, vector width and column strips, the
/// constants it reads (entry lists, re-laid-out weights, bias) by offset, the depth checks it
/// needs and its epilogue. Only the width and `aligned` come from the target's table (what its
/// registers hold); everything else is the same for every target, tiles included.
#[derive(Clone, Debug)]
pub struct FastConv {
    /// C function name (the node's prefix; micro kernels add suffixes).
    pub name: String,
    /// What it does, for profiles.
    pub what: String,
    pub g: Geom,
    pub x: View,
    pub y: View,
    pub bl: Blocking,
    /// Vector lanes (8, or 16 at stride 1 where the dialect has them).
    pub lanes: usize,
    /// Sparse 3x3 taps cut from aligned loads (`e2f16_alignr`).
    pub aligned: bool,
    /// Output vectors per column strip of a sparse tile whose whole band would not fit L2.
    pub strip: Option<usize>,
    /// Some output depth reads taps outside the volume (depth padding).
    pub check_iz: bool,
    /// Some channel is depth-shifted (its taps may leave the volume).
    pub check_jz: bool,
    /// Offset in `I` of the entries `(stored channel, depth tap, shifted tap)`.
    pub ents: usize,
    /// Offset in `W` of the re-laid-out weights.
    pub w: usize,
    /// Sparse: offset in `I` of the per-output row pointers into the entries.
    pub rp: Option<usize>,
    /// Dense: entries per output block.
    pub ne_dense: usize,
    /// Offset in `W` of the bias (padded to whole output blocks).
    pub bias: Option<usize>,
    /// Leaky ReLU slope applied by this kernel (none when a norm follows).
    pub slope: Option<f32>,
    /// Scratch offset of the instance-norm partial sums this kernel writes, one per tile.
    pub norm_scratch: Option<usize>,
    pub tiles: usize,
    pub flops: u64,
    /// Input channels read from a ring of planes (a streamed upsampling's output).
    pub ring_in: Option<crate::emit::RingIn>,
    /// A normalized output stored as bf16: scratch offset of the per-tile shifts
    /// (`NodeCtx::shift_at`; see `conv_micro::epilogue`).
    pub shift: Option<usize>,
}

/// Where a packed kernel's slot entries are (`I` offset) and whether some slot's plane may lie
/// outside the volume through depth padding or a depth shift (`conv_bf16::slot_entries`).
#[derive(Clone, Copy)]
pub(super) struct Slots {
    pub ents: usize,
    pub check_iz: bool,
    pub check_jz: bool,
}

impl FastConv {
    /// A 16-lane kernel whose tiles pack their input (the bf16 and int8 kernels, [`render_packed`])
    /// for `ctx`'s conv `sp`: the f32 kernel's tiles (`bl.rb` rows), `ne_dense` slots or channels
    /// (dense), weights at `w`, a CSR's row pointers at `rp` (sparse), the bias at `bias`. (The
    /// f32 kernel sets its own lanes, aligned taps and strips on it.)
    #[allow(clippy::too_many_arguments)]
    pub(super) fn packed(
        ctx: &NodeCtx,
        sp: &ConvSpec,
        what: String,
        bl: Blocking,
        slots: Slots,
        w: usize,
        rp: Option<usize>,
        ne_dense: usize,
        bias: Option<usize>,
    ) -> FastConv {
        let g = &sp.g;
        let [n, _, od, oh, _] = g.y;
        FastConv {
            name: ctx.prefix.clone(),
            what,
            g: g.clone(),
            x: ctx.inputs[0].clone(),
            y: ctx.output.clone(),
            bl,
            lanes: 16,
            aligned: false,
            strip: None,
            check_iz: slots.check_iz,
            check_jz: slots.check_jz,
            ents: slots.ents,
            w,
            rp,
            ne_dense,
            bias,
            slope: slope_in_conv(sp),
            norm_scratch: sp.norm.is_some().then_some(ctx.scratch),
            tiles: n * od * oh.div_ceil(bl.rb),
            flops: live_flops(sp),
            ring_in: ctx.ring_in,
            shift: ctx.shift_at,
        }
    }
}

/// The C expression of an input row pointer: stored channel `c` (a C term) and input plane `z`
/// (a C expression), relative to `pb` (the input view's position of the micro tile); channels of a
/// ring (`fc.ring_in`) are read from their slot in it.
pub(super) fn input_at(fc: &FastConv, c: &str, z: &str) -> String {
    let x = &fc.x;
    let base = x.c_base();
    let plain = format!(
        "{base} + pb + (int64_t){c} * {} + (int64_t)({z}) * {}",
        x.c_stride, x.d_stride
    );
    let delta = |r: crate::emit::RingIn| r.offset as i64 - x.offset as i64;
    match fc.ring_in {
        None => plain,
        Some(r) => ring_or(
            fc,
            c,
            z,
            &format!("{base} + pb + ({})", delta(r)),
            "",
            &plain,
        ),
    }
}

/// `plain` (a pointer expression), or for a channel `c` of the ring (`fc.ring_in`) the pointer
/// `base` + its channel and slot of plane `z` + `tail`.
pub(super) fn ring_or(
    fc: &FastConv,
    c: &str,
    z: &str,
    base: &str,
    tail: &str,
    plain: &str,
) -> String {
    let Some(r) = fc.ring_in else {
        return plain.to_string();
    };
    let ds = fc.x.d_stride;
    format!(
        "((unsigned)(({c}) - {u0}) < {nu}u ? {base} + (int64_t)(({c}) - {u0}) * {rcs} + (int64_t)(({z}) & {mask}) * {ds}{tail} : {plain})",
        u0 = r.u0,
        nu = r.nu,
        rcs = r.slots * ds,
        mask = r.slots - 1,
    )
}

/// Emits the conv kernel of the fast path.
pub fn emit(ctx: &NodeCtx, sp: &ConvSpec, consts: &mut Consts) -> Result<Kernel, EmitError> {
    Ok(render(&lower(ctx, sp, consts)))
}

/// Chooses the kernel of a fast-path conv and lays out its constants.
pub fn lower(ctx: &NodeCtx, sp: &ConvSpec, consts: &mut Consts) -> FastConv {
    let g = &sp.g;
    let lanes = lanes(g, ctx.isa);
    let bl = blocking_for(g, lanes);
    debug_assert_eq!(bl.rb, blocking(g).rb, "tiles must not depend on the ISA");
    let [_, cin, d, _, _] = g.x;
    let [_, co, od, _, ow] = g.y;
    let [kd, k, _] = g.k;
    let (sd, s, pd) = (g.s[0], g.s[1], g.p[0]);
    let kk = k * k;
    // Sparse 3x3 on 16 lanes cuts its tap vectors from aligned loads where the dialect can.
    let aligned =
        lanes == 16 && s == 1 && Dialect::of(ctx.isa).alignr && g.sparse && k == 3 && bl.ob == 1;
    let kernel_w = |off: usize, a: usize, b: usize, cc: usize| sp.wdata[off + (a * k + b) * k + cc];

    // Depth checks needed at all?
    let check_iz = (0..od).any(|z| {
        (0..kd).any(|a| {
            let iz = (z * sd + a) as i64 - pd as i64;
            !(0..d as i64).contains(&iz)
        })
    });
    let check_jz = sp.shifts.iter().any(|&v| v != 0);

    // Entries and weights.
    // Entries address the channel where the plan stored it; shifts and weights stay logical.
    let entry = |c: usize, a: usize| {
        [
            sp.channels[c] as i32,
            a as i32,
            (a as i64 - sp.shifts[c]) as i32,
        ]
    };
    let (ent_off, w_off, rp_off, ne_dense);
    if !g.sparse {
        let ents: Vec<i32> = (0..cin)
            .flat_map(|c| (0..kd).flat_map(move |a| entry(c, a)))
            .collect();
        ne_dense = cin * kd;
        let nob = co.div_ceil(bl.ob);
        let mut w = Vec::with_capacity(nob * ne_dense * kk * bl.ob);
        for blk in 0..nob {
            for c in 0..cin {
                for a in 0..kd {
                    for cc in 0..k {
                        for b in 0..k {
                            for o in 0..bl.ob {
                                let oo = blk * bl.ob + o;
                                w.push(if oo < co {
                                    kernel_w(sp.rows[oo][c].1, a, b, cc)
                                } else {
                                    0.0
                                });
                            }
                        }
                    }
                }
            }
        }
        ent_off = consts.push_i32(&ents);
        w_off = consts.push_f32(&w);
        rp_off = 0;
    } else {
        ne_dense = 0;
        let mut rp = vec![0i32];
        let mut ents = Vec::new();
        let mut w = Vec::new();
        for row in &sp.rows {
            for &(c, off) in row {
                for a in 0..kd {
                    ents.extend(entry(c, a));
                    for cc in 0..k {
                        for b in 0..k {
                            w.push(kernel_w(off, a, b, cc));
                        }
                    }
                }
            }
            rp.push((ents.len() / 3) as i32);
        }
        ent_off = consts.push_i32(&ents);
        rp_off = consts.push_i32(&rp);
        w_off = consts.push_f32(&w);
    }
    let bias = sp.push_bias(co.div_ceil(bl.ob) * bl.ob, consts);
    // Full x blocks before the right-edge block: strips only pay where there are several.
    let nxb = (ow.div_ceil(lanes) - 1) / bl.vo;
    let strip = strip_vectors(g, bl, lanes).filter(|&v| nxb * bl.vo > v);
    let what = format!(
        "{} conv{} {}x{}x{} s{} {}->{}",
        ctx.label,
        if g.sparse { " sparse" } else { "" },
        kd,
        k,
        k,
        s,
        cin,
        co
    );
    let slots = Slots {
        ents: ent_off,
        check_iz,
        check_jz,
    };
    let rp = g.sparse.then_some(rp_off);
    FastConv {
        lanes,
        aligned,
        strip,
        ..FastConv::packed(ctx, sp, what, bl, slots, w_off, rp, ne_dense, bias)
    }
}

/// Writes the C text of a fast-path conv kernel (and its micro kernels) in the dialects'
/// shared vocabulary.
pub fn render(fc: &FastConv) -> Kernel {
    let (g, bl, lanes) = (&fc.g, fc.bl, fc.lanes);
    let (x, y) = (&fc.x, &fc.y);
    let [n, _, _, _, _] = g.x;
    let [_, co, od, oh, ow] = g.y;
    let [_, k, _] = g.k;
    let (s, ph) = (g.s[1], g.p[1]);
    let kk = k * k;
    let nv = ow.div_ceil(lanes);
    let nb = oh.div_ceil(bl.rb);
    let (ent_off, w_off, rp_off, ne_dense) = (fc.ents, fc.w, fc.rp.unwrap_or(0), fc.ne_dense);

    // Micro-kernel variants: (rows, vectors, tail).
    let nxb = (nv - 1) / bl.vo; // full body x blocks
    let vt = nv - nxb * bl.vo; // vectors of the tail block
    let rrem = oh - (nb - 1) * bl.rb; // rows of the last band
    let mut helpers = String::new();
    let mut mname = |rb: usize, vo: usize, tail: bool| -> String {
        let name = format!("{}_mk{}x{}{}", fc.name, rb, vo, if tail { "t" } else { "" });
        let m = Micro {
            name: name.clone(),
            rb,
            vo,
            tail,
            fc,
        };
        if !helpers.contains(&format!("static void {name}(")) {
            helpers.push_str(&m.source());
        }
        name
    };
    // One micro call for output block `ob` (dense) or channel `o` (sparse) at (y0, xv).
    let mut call = |vo: usize, tail: bool| -> String {
        let args = if g.sparse {
            format!(
                "A, W, I + {ent_off} + 3 * e0, W + {w_off} + (int64_t)e0 * {kk}, e1 - e0, pb, zb, po + (int64_t)o * {}, o, st + 2 * o, sh + o",
                y.c_stride
            )
        } else {
            format!(
                "A, W, I + {ent_off}, W + {w_off} + (int64_t)ob * {}, {ne_dense}, pb, zb, po + (int64_t)ob * {}, ob * {}, st + 2 * ob * {}, sh + ob * {}",
                ne_dense * kk * bl.ob,
                bl.ob * y.c_stride,
                bl.ob,
                bl.ob,
                bl.ob
            )
        };
        let full = mname(bl.rb, vo, tail);
        if rrem != bl.rb {
            let rem = mname(rrem, vo, tail);
            format!(
                "if (y1 - y0 == {}) {full}({args}); else {rem}({args});",
                bl.rb
            )
        } else {
            format!("{full}({args});")
        }
    };
    // (AVX-512 skips the body variant when no full x block exists: its whole-row sparse blocks
    // are large, and an unused variant is C compiler time for nothing.)
    let skip_body = lanes == 16 && nxb == 0;
    let body_call = if skip_body {
        String::new()
    } else {
        call(bl.vo, false)
    };
    let tail_call = call(vt, true);
    // Input and output positions of the micro tile at column vector `xv`.
    let pos = format!(
        "const int64_t pb = {xo} + (int64_t)n * {xns} + (int64_t)({PAD_ROWS} + y0 * {s} - {ph}) * {xrow} + {PAD_LEFT} + xv * {xs} - {ph};
const int64_t po = {yo} + (int64_t)n * {yns} + (int64_t)z * {yds} + (int64_t)({PAD_ROWS} + y0) * {yrow} + {PAD_LEFT} + xv * {lanes};",
        xo = x.offset,
        xns = x.n_stride,
        xrow = x.row,
        xs = lanes * s,
        yo = y.offset,
        yns = y.n_stride,
        yds = y.d_stride,
        yrow = y.row,
    );
    let ohead = if g.sparse {
        format!("for (int o = 0; o < {co}; o++) {{ const int e0 = I[{rp_off} + o], e1 = I[{rp_off} + o + 1];\n")
    } else {
        format!("for (int ob = 0; ob < {}; ob++) {{\n", co.div_ceil(bl.ob))
    };
    let xtail = format!("{{ const int xv = {};\n{pos}\n", nxb * bl.vo);
    let loops = if let Some(strip) = fc.strip {
        // Column strips outer, then output channels, then x blocks: the working set is the
        // strip of the band (all input channels), which fits L2 even where the whole band
        // would not, and one output's channel rows of the strip stay in L1.
        format!(
            "for (int xs = 0; xs < {nb}; xs += {strip}) {{
const int xe = xs + {strip} < {nb} ? xs + {strip} : {nb};
{ohead}for (int xv = xs; xv < xe; xv += {vo}) {{
{pos}
{body_call}
}}
}}
}}
{ohead}{xtail}{tail_call}
}}
}}
",
            nb = nxb * bl.vo,
            vo = bl.vo,
        )
    } else {
        // Output blocks outer, x inner: the band stays in L2 across output blocks.
        let xhead = format!(
            "for (int xv = 0; xv < {}; xv += {}) {{\n{pos}\n",
            nxb * bl.vo,
            bl.vo
        );
        if skip_body {
            format!("{ohead}{xtail}{tail_call}\n}}\n}}\n")
        } else {
            format!("{ohead}{xhead}{body_call}\n}}\n{xtail}{tail_call}\n}}\n}}\n")
        }
    };
    let mut b = tile_head(fc, nb);
    b.push_str(&loops);
    b.push_str(&finish_tile(fc, nb));
    debug_assert_eq!(fc.tiles, n * od * nb);
    kernel(&fc.name, &helpers, &b, fc.tiles, fc.flops, fc.what.clone())
}

/// The end of a fast-path tile (`nb` bands per plane): the padding of its output rows (and of
/// the plane's top and bottom rows in the first and last band), and its instance-norm partial
/// sums `st` moved to the node's scratch. Shared by the bf16 kernels (`conv_bf16.rs`).
pub(super) fn finish_tile(fc: &FastConv, nb: usize) -> String {
    let y = &fc.y;
    let [_, co, od, oh, ow] = fc.g.y;
    let mut b = String::new();
    // Padding of the rows and planes of this band.
    let _ = writeln!(
        b,
        "for (int o = 0; o < {co}; o++) {{
    {yt} *pl = {yb} + {yo} + (int64_t)n * {yns} + (int64_t)o * {ycs} + (int64_t)z * {yds};
    for (int y = y0; y < y1; y++) {{
        {yt} *rowp = pl + (y + {PAD_ROWS}) * {yrow} + {PAD_LEFT};
{pads}    }}
    if (band == 0) {{ {top}}}
    if (band == {last}) {{ {bot}}}",
        yo = y.offset,
        yns = y.n_stride,
        ycs = y.c_stride,
        yds = y.d_stride,
        yrow = y.row,
        yt = y.c_type(),
        yb = y.c_base(),
        pads = super::norm::indent(&super::norm::indent(&zero_row_pads(
            y,
            "rowp",
            8 * nvec(ow)
        ))),
        top = zero_row(y, "pl"),
        bot = zero_row(y, &format!("(pl + {})", (oh + 1) * y.row)),
        last = nb - 1,
    );
    if let Some(scratch) = fc.norm_scratch {
        let _ = writeln!(
            b,
            "    double *pp = {};\n    pp[0] = st[2 * o]; pp[1] = st[2 * o + 1];",
            partial_ptr(scratch, od * nb, &format!("n * {co} + o"), "z * NB + band")
                .replace("NB", &nb.to_string())
        );
    }
    if let Some(at) = fc.shift {
        let _ = writeln!(
            b,
            "    A[{at} + ((int64_t)n * {co} + o) * {} + z * {nb} + band] = sh[o];",
            od * nb
        );
    }
    b.push_str("}\n");
    b
}

/// The start of a fast-path tile (`nb` bands per plane): its band, depth and sample, rows
/// `y0 .. y1`, first input depth `zb`, and the instance-norm statistics `st` (zeroed) or a
/// null `st`. Shared by the bf16 kernels (`conv_bf16.rs`).
pub(super) fn tile_head(fc: &FastConv, nb: usize) -> String {
    let (g, bl) = (&fc.g, fc.bl);
    let [_, co, od, oh, _] = g.y;
    let (sd, pd) = (g.s[0], g.p[0]);
    let norm = fc.norm_scratch.is_some();
    let mut b = String::new();
    let _ = writeln!(
        b,
        "const int band = (int)(t % {nb}); const int64_t nz = t / {nb};
const int z = (int)(nz % {od}), n = (int)(nz / {od});
const int y0 = band * {rb}, y1 = y0 + {rb} < {oh} ? y0 + {rb} : {oh};
const int zb = z * {sd} - {pd};
(void)y1;",
        rb = bl.rb
    );
    if norm {
        let _ = writeln!(
            b,
            "double st[{}]; memset(st, 0, sizeof st);",
            2 * co.div_ceil(bl.ob) * bl.ob
        );
    } else {
        let _ = writeln!(b, "double *st = 0;");
    }
    if fc.shift.is_some() {
        // Per output channel, the tile's shift: unset (NaN) until its first block sets it.
        let _ = writeln!(
            b,
            "float sh[{0}]; for (int o = 0; o < {0}; o++) sh[o] = __builtin_nanf(\"\");",
            co.div_ceil(bl.ob) * bl.ob
        );
    } else {
        let _ = writeln!(b, "float *sh = 0;");
    }
    b
}

/// A fast-path kernel whose tiles pack their input first (the bf16 and int8 kernels): per
/// sub-band of `sb` rows and column strip of `sv` vectors, `pack` (a C call) fills `pk`
/// (`pk_words` 32-bit words, 64-byte aligned, on the stack), then every output channel (sparse:
/// `o`, with its CSR entries `e0 .. e1`) or block of `fc.bl.ob` (dense: `ob`) runs micro kernels
/// over the strip's vectors, `args` (a C argument list) naming them; `micro(name, rows, vectors,
/// tail)` writes the micro kernel `name` (`tail`: the right-edge variant).
pub(super) struct Packed<'a> {
    pub sb: usize,
    pub sv: usize,
    pub pk_words: usize,
    pub pack: String,
    pub args: String,
    /// Infix of the micro kernels' names (`mb`, `mq`).
    pub tag: &'a str,
    pub micro: &'a mut dyn FnMut(&str, usize, usize, bool) -> String,
}

/// The kernel of a [`Packed`] tile loop; `helpers` (the packing function) precede the micro
/// kernels it generates.
pub(super) fn render_packed(fc: &FastConv, p: Packed, mut helpers: String) -> Kernel {
    let (g, bl, y) = (&fc.g, fc.bl, &fc.y);
    let [_, co, _, oh, ow] = g.y;
    let nv = ow.div_ceil(16);
    let nb = oh.div_ceil(bl.rb);
    // Micro variants: rows of a sub-band (full, the band's and the last band's remainders).
    let rrem = oh - (nb - 1) * bl.rb;
    let mut rows: Vec<usize> = Vec::new();
    for m in [bl.rb, rrem] {
        for r in [p.sb.min(m), m % p.sb] {
            if r > 0 && !rows.contains(&r) {
                rows.push(r);
            }
        }
    }
    rows.sort_unstable_by(|a, b| b.cmp(a));
    let nxb = (nv - 1) / bl.vo;
    let vt = nv - nxb * bl.vo;
    let mut call = |vo: usize, tail: bool| -> String {
        let mut s = String::new();
        for (i, &r) in rows.iter().enumerate() {
            let name = format!(
                "{}_{}{r}x{vo}{}",
                fc.name,
                p.tag,
                if tail { "t" } else { "" }
            );
            if !helpers.contains(&format!("static void {name}(")) {
                helpers.push_str(&(p.micro)(&name, r, vo, tail));
            }
            if i + 1 < rows.len() {
                let _ = write!(s, "if (nr == {r}) {name}({}); else ", p.args);
            } else {
                let _ = write!(s, "{name}({});", p.args);
            }
        }
        s
    };
    let pos = format!(
        "const int64_t po = {} + (int64_t)n * {} + (int64_t)z * {} + (int64_t)({PAD_ROWS} + r0) * {} + {PAD_LEFT} + xv * 16;",
        y.offset, y.n_stride, y.d_stride, y.row
    );
    // Full blocks of the strip, then the right-edge block in the last strip.
    let body = if nxb > 0 {
        format!(
            "for (int xv = xs; xv < xe && xv < {}; xv += {}) {{\n{pos}\n{}\n}}\n",
            nxb * bl.vo,
            bl.vo,
            call(bl.vo, false)
        )
    } else {
        String::new()
    };
    let tail_call = call(vt, true);
    let ohead = if g.sparse {
        format!(
            "for (int o = 0; o < {co}; o++) {{ const int e0 = I[{} + o], e1 = I[{} + o + 1];\n",
            fc.rp.unwrap_or(0),
            fc.rp.unwrap_or(0)
        )
    } else {
        format!("for (int ob = 0; ob < {}; ob++) {{\n", co.div_ceil(bl.ob))
    };
    let mut b = tile_head(fc, nb);
    let _ = writeln!(
        b,
        "uint32_t pk[{}] __attribute__((aligned(64)));
for (int r0 = y0; r0 < y1; r0 += {sb}) {{
const int nr = y1 - r0 < {sb} ? y1 - r0 : {sb};
for (int xs = 0; xs < {nv}; xs += {sv}) {{
const int xe = xs + {sv} < {nv} ? xs + {sv} : {nv};
{pack};
{ohead}{body}if (xe == {nv}) {{ const int xv = {body_end};
{pos}
{tail_call}
}}
}}
}}
}}",
        p.pk_words,
        sb = p.sb,
        sv = p.sv,
        pack = p.pack,
        body_end = nxb * bl.vo,
    );
    b.push_str(&finish_tile(fc, nb));
    kernel(&fc.name, &helpers, &b, fc.tiles, fc.flops, fc.what.clone())
}
