//! Tensor-core kernels (TF32 or bf16) for the training convolutions E2ENet trains most
//! (`e2enc train --device cuda --tensor-cores tf32|bf16`): stride-1 same-padding convs with a
//! `1x3x3`-style kernel (`kh = kw` in {1, 3}, odd depth kernel), forward (`Conv3d`, a fused shifted conv), data gradient (the
//! plain `ConvBackwardData`, with the depth shift's backward fused) and weight gradient
//! ([`weight_grad`]). An implicit GEMM on `mma.sync.m16n8k8` (TF32) or `m16n8k16` (bf16) like
//! the bundles' (`crate::cuda::mma`, same fragment tables, [`Fmt`]), but the
//! weights change every step, so they are read from the weight operand and rounded in the
//! kernel, and the live kernels come from a run-time table ([`Live::Table`], one int per
//! kernel), so prune and regrow need no recompilation.
//!
//! - M: 16 output channels per warp (the grid's y), N: 32 output positions of one plane per
//!   warp (four 8-wide MMA tiles), K: every (input channel, tap) pair in order, the weight of a
//!   dead kernel loaded as zero. DSFF sparsity is not skipped: at random 20% masks a 16-output
//!   group's union of live inputs is 97% of them (`crate::cuda::groups`), so dense K costs about
//!   3% more and needs no per-step union tables.
//! - Forward: `out[s, q] = bias[s] + Σ_{b, k} w[s, b, k] · big[b, q + k - pad]`, `big` read
//!   through the fused depth shift (its padding is the shifted tensor's).
//! - Data gradient: `dbig[b, t] = Σ_{s, k} w[s, b, k] · dy[s, t - k + pad]`, computed at the
//!   shifted depth `t` and stored at `t - shift(b)` (the grid's depth covers every `t` some
//!   channel's store needs, so each output value is written once; a `t` outside the tensor is a
//!   zero gradient).
//! - Both operands rounded to TF32 (`cvt.rna`, ties away) or bf16 (`cvt.rn`, ties to even), f32
//!   accumulation in a fixed order (K ascending), so repeated steps give the same bits.
//! - Weight gradient: a block per 16 rows x 32 `(b, tap)` entries, whose parallelism alone is
//!   the weight's size (42 tiles for a `48 x 48 x 1x3x3` weight, AMOS-CT's full-resolution
//!   convs, against 2304 blocks for the f32 kernel), so the positions are also split over
//!   blocks (the grid's z, [`wg_splits`]: about 264 blocks, two per SM of an H100 or H200, at
//!   least 256 positions each). Each split's block writes its partial tile to the kernel's
//!   scratch (`TrainKernel::scratch`), and the last block of a tile to finish adds the partial
//!   tiles in split order: deterministic, one launch. Which kernel is faster on a GPU is for the
//!   GPU check to say (`scripts/gpu-check.sh`).

use super::{make_in, Made, THREADS};
use crate::compile::CodegenError;
use crate::cuda::mma::Mma;
use crate::train::conv::Geo;
use crate::train::{err, Ctx, Live};

/// Output positions per warp (four MMA tiles of 8).
const POS_PER_WARP: usize = 32;
/// Warps per block.
const WARPS: usize = 4;

/// Which kernel of this file a conv gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Forward,
    DataGrad,
}

/// The number format of the tensor-core training kernels (`crate::cuda::mma::Mma`), and how a
/// lane's fragments are formed in it: K rows `brow(r)` of this lane (`r < rows`), `halves`
/// values per A register (TF32 one, bf16 two packed), `pack` of two (or one) values.
struct Fmt {
    kstep: usize,
    rows: usize,
    halves: usize,
    brow: &'static str,
    call: &'static str,
}

impl Fmt {
    fn of(mma: Mma) -> Fmt {
        match mma {
            // m16n8k8: A (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4); B rows t, t + 4.
            Mma::Tf32 => Fmt {
                kstep: 8,
                rows: 2,
                halves: 1,
                brow: "(t + 4 * (R))",
                call: "e2_mma_tf32",
            },
            // m16n8k16: A (g, 2t..2t+1), (g + 8, ..), (g, 2t+8..2t+9), (g + 8, ..); B rows 2t,
            // 2t + 1, 2t + 8, 2t + 9.
            Mma::Bf16 => Fmt {
                kstep: 16,
                rows: 4,
                halves: 2,
                brow: "(2 * t + ((R) & 1) + 8 * ((R) >> 1))",
                call: "e2_mma_bf16",
            },
        }
    }

    /// The B fragment from this lane's values `v[..rows]`, then the MMA into `acc[j]`.
    fn mma_b(&self) -> String {
        format!(
            "unsigned b[2]; b[0] = {}; b[1] = {}; {}(acc[j], a, b);",
            self.pack("v", "0"),
            self.pack("v", &self.halves.to_string()),
            self.call
        )
    }

    /// This lane's K row `r` (an expression in `t`).
    /// The four 8-wide B tiles of a warp's K step: for tile `j`, each of this lane's K rows `r`
    /// loaded into `v[r]` by `load` (lines of C, each ending in a newline), then the MMA
    /// ([`Fmt::mma_b`]). Indented for a kernel's K loop.
    fn b_tiles(&self, load: &str) -> String {
        let rows = self.rows;
        let load: String = load.lines().map(|l| format!("            {l}\n")).collect();
        format!(
            "    #pragma unroll\n\
             \x20   for (int j = 0; j < 4; j++) {{\n\
             \x20       float v[{rows}];\n\
             \x20       #pragma unroll\n\
             \x20       for (int r = 0; r < {rows}; r++) {{\n\
             {load}\
             \x20       }}\n\
             \x20       {}\n\
             \x20   }}\n",
            self.mma_b()
        )
    }

    fn row(&self, r: &str) -> String {
        self.brow.replace('R', r)
    }

    /// `dst = ` the register of values `v[i0]`, `v[i0 + 1]` (bf16) or `v[i0]` (TF32).
    fn pack(&self, v: &str, i0: &str) -> String {
        match self.halves {
            1 => format!("e2_tf32({v}[{i0}])"),
            _ => format!("e2_bf16x2({v}[{i0}], {v}[{i0} + 1])"),
        }
    }
}

/// Whether the tensor-core kernels take a conv of this geometry: stride 1, same padding,
/// `kh = kw` in {1, 3}, odd depth kernel.
pub(crate) fn takes(g: &Geo) -> bool {
    let [kd, kh, kw] = g.k;
    g.stride == [1, 1, 1]
        && kh == kw
        && (kh == 1 || kh == 3)
        && kd % 2 == 1
        && g.pad == [kd / 2, kh / 2, kw / 2]
        && g.small == g.big
}

/// The kernel of `kind` for a conv of geometry `g` (checked by [`takes`]).
pub(crate) fn emit(
    ctx: &Ctx,
    g: &Geo,
    bias: bool,
    kind: Kind,
    mma: Mma,
) -> Result<Made, CodegenError> {
    let f = Fmt::of(mma);
    let (kstep, nrows, halves) = (f.kstep, f.rows, f.halves);
    let [d, h, w] = g.small;
    let [kd, kh, kw] = g.k;
    let [pd, ph, pw] = g.pad;
    let kl = g.kl();
    let plane = h * w;
    // Rows (M) are the output's channels, K runs over the source's channels x taps.
    let (rows, srcs) = match kind {
        Kind::Forward => (g.cs, g.cb),
        Kind::DataGrad => (g.cb, g.cs),
    };
    let ktotal = srcs * kl;
    // The weight [cs, cb, k] of (row, source channel).
    let widx = match kind {
        Kind::Forward => format!("((i64)row * {srcs} + ch) * {kl} + tap"),
        Kind::DataGrad => format!("((i64)ch * {rows} + row) * {kl} + tap"),
    };
    let live_idx = match kind {
        Kind::Forward => format!("row * {srcs} + ch"),
        Kind::DataGrad => format!("ch * {rows} + row"),
    };
    // Where source channel `ch`'s tap (a_, b_, q_) of output (oz, p) lies: depth, and the
    // H/W offsets; a forward tap reads the shifted tensor, whose padding is checked before the
    // shift.
    let shift = super::runs_expr("ch", ctx.shift0.as_deref());
    let (zread, dy_, dx_) = match kind {
        Kind::Forward => (
            format!(
                "const int iz = oz + a_ - {pd};\n\
                 \x20       const int jz = (ch < 0 || iz < 0 || iz >= {d}) ? -1 : iz - {shift};"
            ),
            format!("b_ - {ph}"),
            format!("q_ - {pw}"),
        ),
        Kind::DataGrad => (
            format!("const int jz = ch < 0 ? -1 : oz - a_ + {pd};"),
            format!("{ph} - b_"),
            format!("{pw} - q_"),
        ),
    };
    // The depth planes the grid covers: the output's, or for a data gradient with a fused
    // shift every shifted depth some channel stores from.
    let unshift = ctx.out_unshift.as_deref();
    let (z0, z1) = match (kind, unshift) {
        (Kind::DataGrad, Some(u)) => {
            let lo = u.iter().copied().min().unwrap_or(0).min(0);
            let hi = u.iter().copied().max().unwrap_or(0).max(0);
            (lo, d as i64 + hi)
        }
        _ => (0, d as i64),
    };
    let zs = (z1 - z0) as usize;
    let store_z = match (kind, unshift) {
        (Kind::DataGrad, Some(_)) => format!("oz - {}", super::runs_expr("row", unshift)),
        _ => "oz".to_string(),
    };
    let bias_term = if bias { "in[2][row]" } else { "0.0f" };
    let blocks_x = plane.div_ceil(WARPS * POS_PER_WARP);
    let groups = rows.div_ceil(16);
    let body = format!(
        "const float *__restrict__ src = in[0];\n\
         const float *__restrict__ wt = in[1];\n\
         const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5;\n\
         const int g = lane >> 2, t = lane & 3;\n\
         const int G = (int)blockIdx.y, n = (int)blockIdx.z / {zs}, oz = (int)blockIdx.z % {zs} + ({z0});\n\
         const int p0 = ((int)blockIdx.x * {WARPS} + warp) * {POS_PER_WARP};\n\
         int py[4], px[4];\n\
         #pragma unroll\n\
         for (int j = 0; j < 4; j++) {{\n\
         \x20   const int p = p0 + j * 8 + g;\n\
         \x20   py[j] = p < {plane} ? p / {w} : -1000000;\n\
         \x20   px[j] = p < {plane} ? p % {w} : 0;\n\
         }}\n\
         float acc[4][4];\n\
         #pragma unroll\n\
         for (int j = 0; j < 4; j++) {{ acc[j][0] = 0.0f; acc[j][1] = 0.0f; acc[j][2] = 0.0f; acc[j][3] = 0.0f; }}\n\
         // A shifted depth outside the tensor has no gradient: its sums stay zero.\n\
         const int inside = oz >= 0 && oz < {d};\n\
         for (int k = 0; inside && k < {ktotal}; k += {kstep}) {{\n\
         \x20   // A (weights): rows G*16 + g (+8), this lane's K columns; dead kernels read as zero.\n\
         \x20   unsigned a[4];\n\
         \x20   #pragma unroll\n\
         \x20   for (int r = 0; r < 4; r++) {{\n\
         \x20       float av[{halves}];\n\
         \x20       #pragma unroll\n\
         \x20       for (int h = 0; h < {halves}; h++) {{\n\
         \x20           const int row = G * 16 + g + (r & 1) * 8, kk = k + {acol};\n\
         \x20           const int ch = kk / {kl}, tap = kk % {kl};\n\
         \x20           av[h] = (row < {rows} && kk < {ktotal} && live[{live_idx}]) ? wt[{widx}] : 0.0f;\n\
         \x20       }}\n\
         \x20       a[r] = {apack};\n\
         \x20   }}\n\
         \x20   // B (the source): this lane's K rows, one plane each (-1: zeros).\n\
         \x20   i64 xo[{nrows}];\n\
         \x20   int dy[{nrows}], dx[{nrows}];\n\
         \x20   #pragma unroll\n\
         \x20   for (int r = 0; r < {nrows}; r++) {{\n\
         \x20       const int kk = k + {brow};\n\
         \x20       const int ch = kk < {ktotal} ? kk / {kl} : -1, tap = kk % {kl};\n\
         \x20       const int a_ = tap / {khw}, b_ = (tap / {kw}) % {kh}, q_ = tap % {kw};\n\
         \x20       {zread}\n\
         \x20       xo[r] = (jz >= 0 && jz < {d}) ? (((i64)n * {srcs} + ch) * {d} + jz) * {plane} : -1;\n\
         \x20       dy[r] = {dy_};\n\
         \x20       dx[r] = {dx_};\n\
         \x20   }}\n\
         {b_tiles}\
         }}\n\
         #pragma unroll\n\
         for (int j = 0; j < 4; j++) {{\n\
         \x20   #pragma unroll\n\
         \x20   for (int i = 0; i < 4; i++) {{\n\
         \x20       const int row = G * 16 + g + (i >> 1) * 8, p = p0 + j * 8 + 2 * t + (i & 1);\n\
         \x20       const int sz = {store_z};\n\
         \x20       if (row < {rows} && p < {plane} && sz >= 0 && sz < {d})\n\
         \x20           out[(((i64)n * {rows} + row) * {d} + sz) * {plane} + p] = acc[j][i] + {bias_term};\n\
         \x20   }}\n\
         }}\n",
        khw = kh * kw,
        acol = f.row("(r >> 1) * HALVES + h").replace("HALVES", &halves.to_string()),
        brow = f.row("r"),
        apack = f.pack("av", "0"),
        b_tiles = f.b_tiles(&format!(
            "const int iy = py[j] + dy[r], ix = px[j] + dx[r];\n\
             v[r] = (xo[r] >= 0 && iy >= 0 && iy < {h} && ix >= 0 && ix < {w}) ? src[xo[r] + iy * {w} + ix] : 0.0f;\n"
        )),
    );
    let _ = (kd, THREADS);
    let dim = |v: usize, what: &str| {
        u32::try_from(v)
            .ok()
            .filter(|&v| (1..=65535).contains(&v) || what == "x")
            .ok_or_else(|| {
                err(
                    ctx.g,
                    ctx.id,
                    format!("{v} thread blocks along {what} do not fit CUDA's grid"),
                )
            })
    };
    let grid = [dim(blocks_x, "x")?, dim(groups, "y")?, dim(g.n * zs, "z")?];
    // The MACs the MMAs issue (dense K).
    let work = (g.n * d * plane * rows * ktotal) as u64;
    let threads = (WARPS * 32) as u32;
    let live = Live::Table { d0: g.cs, d1: g.cb };
    make_in(ctx, &body, grid, threads, true, work, live, Some(1))
}

/// Warps per block of the weight-gradient kernel (they split the positions).
const WG_WARPS: usize = 8;

/// `ConvBackwardWeight` on TF32 tensor cores, for the geometries [`takes`] accepts:
/// `dw[s, b, k] = Σ_{n, q} small[n, s, q] · big[n, b, q + k - pad]` (big read through the
/// fused shift). M: 16 rows `s` per block (the grid's y), N: 32 of the `(b, tap)` entries per
/// block (four MMA tiles; the grid's x), K: the positions `(n, q)` of the block's split (the
/// grid's z, [`wg_splits`]), 8 per instruction, dealt to the block's 8 warps in turn. Each warp
/// sums its share in order, then the block adds the warps' sums in warp order from shared
/// memory; with several splits the last block of a tile adds the splits' sums in split order
/// ([`wg_finish`]). Each entry is written once: zero for a dead kernel (the live table), so
/// the result does not depend on the thread or block order and dead kernels get exactly zero.
pub(crate) fn weight_grad(ctx: &Ctx, mma: Mma) -> Result<Option<Made>, CodegenError> {
    let f = Fmt::of(mma);
    let (kstep, nrows, halves) = (f.kstep, f.rows, f.halves);
    let crate::train::conv::WeightGrad {
        g,
        small: si,
        big: bi,
        shift,
        ..
    } = crate::train::conv::classify_weight_grad(ctx)?;
    if !takes(&g) {
        return Ok(None);
    }
    let [d, h, w] = g.small;
    let [_, kh, kw] = g.k;
    let [pd, ph, pw] = g.pad;
    let kl = g.kl();
    let plane = h * w;
    let spl = d * plane;
    let positions = g.n * spl;
    let entries = g.cb * kl;
    let threads = WG_WARPS * 32;
    let shift = super::runs_expr("bj", shift.as_deref());
    let step = WG_WARPS * kstep;
    let tiles = entries.div_ceil(32) * g.cs.div_ceil(16);
    let (splits, chunk) = wg_splits(tiles, positions, step);
    // Entry `e` of row `s`, summed into `v`: written once, zero for a dead kernel.
    let store = format!(
        "const int b = e / {kl};\n\
         out[((i64)s * {cbn} + b) * {kl} + e % {kl}] = live[s * {cbn} + b] ? v : 0.0f;\n",
        cbn = g.cb
    );
    let body = format!(
        "const float *__restrict__ sm = in[{si}];\n\
         const float *__restrict__ big = in[{bi}];\n\
         __shared__ float red[{WG_WARPS}][16][32];\n\
         const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5;\n\
         const int g = lane >> 2, t = lane & 3;\n\
         const int G = (int)blockIdx.y, E0 = (int)blockIdx.x * 32;\n\
         // This lane's B columns: entry E0 + 8j + g of each tile j, as (channel, tap offsets).\n\
         int cb[4], oa[4], ob[4], oc[4], sh[4];\n\
         #pragma unroll\n\
         for (int j = 0; j < 4; j++) {{\n\
         \x20   const int e = E0 + j * 8 + g;\n\
         \x20   const int bj = e < {entries} ? e / {kl} : -1, tap = e % {kl};\n\
         \x20   cb[j] = bj;\n\
         \x20   oa[j] = tap / {khw} - {pd};\n\
         \x20   ob[j] = (tap / {kw}) % {kh} - {ph};\n\
         \x20   oc[j] = tap % {kw} - {pw};\n\
         \x20   sh[j] = bj < 0 ? 0 : {shift};\n\
         }}\n\
         float acc[4][4];\n\
         #pragma unroll\n\
         for (int j = 0; j < 4; j++) {{ acc[j][0] = 0.0f; acc[j][1] = 0.0f; acc[j][2] = 0.0f; acc[j][3] = 0.0f; }}\n\
         // This block's share of the positions: split Z of {splits}.\n\
         const int Z = (int)blockIdx.z, lo = Z * {chunk};\n\
         const int hi = lo + {chunk} < {positions} ? lo + {chunk} : {positions};\n\
         for (int p0 = lo + warp * {kstep}; p0 < hi; p0 += {step}) {{\n\
         \x20   // The positions of this lane's K rows.\n\
         \x20   int pn[{nrows}], pz[{nrows}], py[{nrows}], px[{nrows}];\n\
         \x20   i64 so[{nrows}];\n\
         \x20   #pragma unroll\n\
         \x20   for (int r = 0; r < {nrows}; r++) {{\n\
         \x20       const int p = p0 + {brow};\n\
         \x20       const int ok = p < hi;\n\
         \x20       const int n = ok ? p / {spl} : 0, q = ok ? p % {spl} : 0;\n\
         \x20       pn[r] = ok ? n : -1;\n\
         \x20       pz[r] = q / {plane};\n\
         \x20       py[r] = (q / {w}) % {h};\n\
         \x20       px[r] = q % {w};\n\
         \x20       so[r] = (i64)n * {cs} * {spl} + q;\n\
         \x20   }}\n\
         \x20   // A (the small side): rows G*16 + g (+8), columns this lane's positions.\n\
         \x20   unsigned a[4];\n\
         \x20   #pragma unroll\n\
         \x20   for (int r = 0; r < 4; r++) {{\n\
         \x20       const int s = G * 16 + g + (r & 1) * 8;\n\
         \x20       float av[{halves}];\n\
         \x20       #pragma unroll\n\
         \x20       for (int h = 0; h < {halves}; h++) {{\n\
         \x20           const int c = (r >> 1) * {halves} + h;\n\
         \x20           av[h] = (s < {cs} && pn[c] >= 0) ? sm[so[c] + (i64)s * {spl}] : 0.0f;\n\
         \x20       }}\n\
         \x20       a[r] = {apack};\n\
         \x20   }}\n\
         {b_tiles}\
         }}\n\
         #pragma unroll\n\
         for (int j = 0; j < 4; j++) {{\n\
         \x20   #pragma unroll\n\
         \x20   for (int i = 0; i < 4; i++) red[warp][g + (i >> 1) * 8][j * 8 + 2 * t + (i & 1)] = acc[j][i];\n\
         }}\n\
         __syncthreads();\n\
         {finish}",
        khw = kh * kw,
        finish = wg_finish(splits, threads, &store, (g.cs, entries, ctx.ins.len())),
        brow = f.row("r"),
        apack = f.pack("av", "0"),
        b_tiles = f.b_tiles(&format!(
            "// The shifted tensor is what is padded: its depth first, then the shift.\n\
             const int tz = pz[r] + oa[j], ty = py[r] + ob[j], tx = px[r] + oc[j];\n\
             const int uz = tz - sh[j];\n\
             const int in_ = pn[r] >= 0 && cb[j] >= 0 && tz >= 0 && tz < {d} && uz >= 0 && uz < {d}\n\
             \x20   && ty >= 0 && ty < {h} && tx >= 0 && tx < {w};\n\
             v[r] = in_ ? big[(((i64)pn[r] * {cbn} + cb[j]) * {d} + uz) * {plane} + ty * {w} + tx] : 0.0f;\n",
            cbn = g.cb
        )),
        cs = g.cs,
    );
    let dim = |v: usize, what: &str, max: usize| {
        u32::try_from(v)
            .ok()
            .filter(|&v| v >= 1 && v as usize <= max)
            .ok_or_else(|| {
                err(
                    ctx.g,
                    ctx.id,
                    format!("{v} thread blocks along {what} do not fit CUDA's grid"),
                )
            })
    };
    let grid = [
        dim(entries.div_ceil(32), "x", i32::MAX as usize)?,
        dim(g.cs.div_ceil(16), "y", 65535)?,
        dim(splits, "z", 65535)?,
    ];
    let work = (positions * g.cs.div_ceil(16) * 16 * entries) as u64;
    let live = Live::Table { d0: g.cs, d1: g.cb };
    let mut m = make_in(ctx, &body, grid, threads as u32, true, work, live, Some(1))?;
    m.scratch = wg_scratch(tiles, splits);
    Ok(Some(m))
}

/// Blocks a weight gradient's grid aims at: two per SM of an H100 or H200 (132 SMs).
const WG_TARGET_BLOCKS: usize = 264;
/// Fewest positions one block of a split weight gradient sums.
const WG_MIN_SPLIT: usize = 256;
/// Values of one block's tile (16 rows x 32 entries).
const WG_TILE: usize = 16 * 32;

/// How a weight gradient of `tiles` 16 x 32 tiles over `positions` positions splits its
/// positions over blocks (the grid's z): `(splits, chunk)`, each split summing `chunk`
/// positions (a multiple of `step`, the positions a block takes per turn; the last split
/// fewer). Split until the grid has about [`WG_TARGET_BLOCKS`] blocks, with at least
/// [`WG_MIN_SPLIT`] positions each; one split for a weight with tiles enough.
pub(crate) fn wg_splits(tiles: usize, positions: usize, step: usize) -> (usize, usize) {
    let want = WG_TARGET_BLOCKS.div_ceil(tiles.max(1));
    let most = positions / WG_MIN_SPLIT;
    let s = want.min(most).clamp(1, 64);
    let chunk = positions.div_ceil(s).div_ceil(step) * step;
    (positions.div_ceil(chunk).max(1), chunk.max(step))
}

/// Scratch bytes of a weight gradient split `splits` ways: each block's partial tile, and a
/// counter per tile of the blocks done. None for one split.
fn wg_scratch(tiles: usize, splits: usize) -> usize {
    if splits <= 1 {
        0
    } else {
        tiles * splits * WG_TILE * 4 + tiles * 4
    }
}

/// The end of the weight-gradient kernel, after each warp's sums are in `red`: thread `u` sums
/// element `u` (and `u + threads`) of the block's tile over the warps, in order. With one split
/// that is the entry (`store` writes it; `bounds` = (rows, entries, operands): rows and entries
/// past the first two are padding). Split over the positions, each block writes its tile to the
/// scratch (`in[operands]`, after the operands), and the last block of a tile to finish (a
/// counter per tile, counted after a fence) adds the splits' tiles in split order and writes the
/// entries, then sets the partial tiles and the counter back to zero: the scratch is all zero
/// between launches, as the kernels that share it (each with its own layout) need. The sum's
/// order is fixed, so the result does not depend on which block finishes last.
fn wg_finish(splits: usize, threads: usize, store: &str, bounds: (usize, usize, usize)) -> String {
    let (cs, entries, scratch) = bounds;
    let sum_warps = format!(
        "float v = 0.0f;\n\
         for (int k = 0; k < {WG_WARPS}; k++) v += red[k][r][c];\n"
    );
    if splits <= 1 {
        return format!(
            "for (int u = (int)threadIdx.x; u < {WG_TILE}; u += {threads}) {{\n\
             \x20   const int r = u / 32, c = u % 32;\n\
             \x20   const int s = G * 16 + r, e = E0 + c;\n\
             \x20   if (s >= {cs} || e >= {entries}) continue;\n\
             {sum_warps}{store}}}\n"
        );
    }
    format!(
        "float *__restrict__ scratch = (float *)in[{scratch}];\n\
         const int tile = (int)blockIdx.y * (int)gridDim.x + (int)blockIdx.x;\n\
         const int tiles = (int)gridDim.x * (int)gridDim.y;\n\
         float *part = scratch + ((i64)tile * {splits} + Z) * {WG_TILE};\n\
         int *done = (int *)(scratch + (i64)tiles * {splits} * {WG_TILE}) + tile;\n\
         for (int u = (int)threadIdx.x; u < {WG_TILE}; u += {threads}) {{\n\
         \x20   const int r = u / 32, c = u % 32;\n\
         {sum_warps}\x20   part[u] = v;\n\
         }}\n\
         // This block's tile is written before it is counted; the last one reads every split's.\n\
         __threadfence();\n\
         __syncthreads();\n\
         __shared__ int last;\n\
         if (threadIdx.x == 0) last = atomicAdd(done, 1) == {splits} - 1;\n\
         __syncthreads();\n\
         if (!last) return;\n\
         __threadfence();\n\
         // The partial tiles are read and set back to zero (other kernels' counters may lie there).\n\
         volatile float *parts = scratch + (i64)tile * {splits} * {WG_TILE};\n\
         for (int u = (int)threadIdx.x; u < {WG_TILE}; u += {threads}) {{\n\
         \x20   const int r = u / 32, c = u % 32;\n\
         \x20   const int s = G * 16 + r, e = E0 + c;\n\
         \x20   float v = 0.0f;\n\
         \x20   for (int k = 0; k < {splits}; k++) {{\n\
         \x20       v += parts[k * {WG_TILE} + u];\n\
         \x20       parts[k * {WG_TILE} + u] = 0.0f;\n\
         \x20   }}\n\
         \x20   if (s >= {cs} || e >= {entries}) continue;\n\
         {store}}}\n\
         if (threadIdx.x == 0) *done = 0;\n"
    )
}
