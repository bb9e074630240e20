//! Tensor-core convolutions (`--precision tf32|bf16`): the stride-1 `1x3x3`/`1x1x1`-style convs
//! (`kh = kw` in {1, 3}, same padding, any depth kernel, stride and shift) as an implicit GEMM
//! on `mma.sync.m16n8k8` with TF32 inputs or `mma.sync.m16n8k16` with bfloat16 inputs, f32
//! accumulation in both.
//!
//! - M: 16 output channels per warp (a *group*; the grid's y), N: 32 output positions of one
//!   plane per warp (four 8-wide MMA tiles), K: the group's (input channel, tap) pairs.
//! - DSFF sparsity: a group's K lists only the input channels that are live for at least one of
//!   its 16 outputs (the union), with zero weights for the dead (output, input) pairs in it, so
//!   fully dead inputs of a group cost nothing. A sparse conv's outputs are grouped so that they
//!   share live inputs where that reads fewer entries (`super::groups`; the group's slots then
//!   name their output channels in a table, `-1` for an empty slot). With random 20% masks a
//!   group's union is still most of the inputs (1 - 0.8^16 = 97%): AMOS-CT at density 0.2
//!   issues 29% useful MACs, 6% fewer than with outputs in channel order. [`MmaWork`] counts it.
//! - Weights are packed per group as `[K][16]` floats, rounded when compiled as the kernel rounds
//!   the activations (TF32: `cvt.rna`, to nearest, ties away; bf16: `cvt.rn`, ties to even).
//! - The depth shift is read through: entry `(c, tap)` reads channel `c` at depth
//!   `iz - shift(c)` with `iz = z * sd - pd + a`, zero when `iz` is in the padding (the shifted
//!   tensor is what is padded) or `iz - shift(c)` is outside; H and W borders are bounds checks.
//!
//! Fragment layouts are PTX's, with `g = lane / 4`, `t = lane % 4`: for `.m16n8k8` `.tf32`, A
//! row-major `a0 (g, t)`, `a1 (g + 8, t)`, `a2 (g, t + 4)`, `a3 (g + 8, t + 4)`, B `b0 (t, g)`,
//! `b1 (t + 4, g)`; for `.m16n8k16` `.bf16` (two per 32-bit register, low half first), A
//! `(g, 2t..2t+1)`, `(g + 8, 2t..2t+1)`, `(g, 2t+8..2t+9)`, `(g + 8, 2t+8..2t+9)`, B
//! `(2t..2t+1, g)`, `(2t+8..2t+9, g)`; C/D for both `c0 (g, 2t)`, `c1 (g, 2t + 1)`,
//! `c2 (g + 8, 2t)`, `c3 (g + 8, 2t + 1)`. The host emulation implements the instructions from
//! the same tables.

use super::groups::{self, GROUP};
use super::ops::{norm_apply, norm_reduce, Partials};
use super::text::{at, cf, grid_yz, kernel};
use crate::c::conv::{live_flops, path, slope_in_conv, ConvPath, ConvSpec, Geom};
use crate::c::err;
use crate::emit::{Consts, EmitError, Kernel, MmaWork, NodeCtx};

/// Output positions per warp (four MMA tiles of 8).
const POS_PER_WARP: usize = 32;
/// Warps per block.
const WARPS: usize = 4;

/// Whether the tensor-core kernel takes a conv of this geometry.
pub fn takes(g: &Geom) -> bool {
    !g.transposed && path(g) == ConvPath::Fast && g.s[1] == 1 && g.s[2] == 1
}

/// Blocks of the kernel along one output plane (its grid's x).
fn plane_blocks(g: &Geom) -> usize {
    (g.y[3] * g.y[4]).div_ceil(WARPS * POS_PER_WARP)
}

/// Partial statistics per `(n, c)` the kernel writes with an instance norm: one per block of
/// each output plane.
pub fn partials_per_channel(g: &Geom) -> usize {
    plane_blocks(g) * g.y[2]
}

/// `x` rounded to TF32 (10 mantissa bits), to nearest with ties away from zero, as
/// `cvt.rna.tf32.f32`; NaN and infinities pass unchanged.
pub fn round_tf32(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    f32::from_bits(x.to_bits().wrapping_add(0x1000) & 0xffff_e000)
}

/// `x` rounded to bfloat16 (8 mantissa bits), to nearest with ties to even, as
/// `cvt.rn.bf16x2.f32`; NaN and infinities pass unchanged.
pub fn round_bf16(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let b = x.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

/// The tensor-core number format of [`emit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mma {
    /// `mma.sync.m16n8k8` on TF32 operands.
    Tf32,
    /// `mma.sync.m16n8k16` on bfloat16 operands.
    Bf16,
}

impl Mma {
    /// K of one instruction.
    fn k(self) -> usize {
        match self {
            Mma::Tf32 => 8,
            Mma::Bf16 => 16,
        }
    }

    fn round(self, x: f32) -> f32 {
        match self {
            Mma::Tf32 => round_tf32(x),
            Mma::Bf16 => round_bf16(x),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mma::Tf32 => "tf32",
            Mma::Bf16 => "bf16",
        }
    }
}

/// The kernels of a conv on tensor cores: the conv (with an instance norm: writing partial
/// statistics of its block's 16 channels x 128 positions, reduced across the 4 lanes of a group
/// by warp shuffles and across the block's warps in shared memory, in a fixed order), then the
/// norm's reduction and apply.
pub fn emit(
    ctx: &NodeCtx,
    sp: &ConvSpec,
    consts: &mut Consts,
    mma: Mma,
) -> Result<Vec<Kernel>, EmitError> {
    let g = &sp.g;
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let [n, cin, d, h, w] = g.x;
    let [_, co, od, oh, ow] = g.y;
    let [kd, kh, kw] = g.k;
    let [sd, _, _] = g.s;
    let [pd, ph, pw] = g.p;
    let kvol = g.kvol();
    // The output channels of each group: reordered so that they share live inputs where that
    // reads fewer (`super::groups`), else 16 consecutive ones.
    let reordered = if g.sparse {
        let live: Vec<Vec<usize>> = sp
            .rows
            .iter()
            .map(|r| r.iter().map(|&(c, _)| c).collect())
            .collect();
        groups::reorder(&live, cin)
    } else {
        None
    };
    let plain = groups::plain(co);
    // The K entries of groups: each group's union of live inputs times the taps, padded to
    // whole instructions.
    let k_entries = |order: &[[Option<usize>; GROUP]]| -> u64 {
        order
            .iter()
            .map(|outs| {
                let mut cs: Vec<usize> = outs
                    .iter()
                    .flatten()
                    .flat_map(|&o| sp.rows[o].iter().map(|&(c, _)| c))
                    .collect();
                cs.sort_unstable();
                cs.dedup();
                (cs.len() * kvol).next_multiple_of(mma.k()) as u64
            })
            .sum()
    };
    let order = reordered.as_ref().unwrap_or(&plain);
    let positions = (n * od * oh * ow) as u64;
    let work = MmaWork {
        macs: k_entries(order) * GROUP as u64 * positions,
        plain_macs: k_entries(&plain) * GROUP as u64 * positions,
        live_macs: live_flops(sp) / 2,
    };
    let groups = order.len();
    // Per group: the union of live inputs, then the (channel, tap) entries and [K][16] weights.
    let mut gk = vec![0i32];
    let (mut kc, mut kt, mut wv) = (Vec::new(), Vec::new(), Vec::new());
    for outs in order {
        let mut live = vec![None; 16 * cin];
        for (r, o) in outs.iter().enumerate() {
            for &(c, off) in o.map_or(&[][..], |o| &sp.rows[o]) {
                live[r * cin + c] = Some(off);
            }
        }
        let used: Vec<usize> = (0..cin)
            .filter(|&c| (0..16).any(|r| live[r * cin + c].is_some()))
            .collect();
        let mut entries = 0usize;
        for &c in &used {
            for tap in 0..kvol {
                kc.push(c as i32);
                kt.push(tap as i32);
                for r in 0..16 {
                    let v = live[r * cin + c].map_or(0.0, |off| sp.wdata[off + tap]);
                    wv.push(mma.round(v));
                }
                entries += 1;
            }
        }
        while !entries.is_multiple_of(mma.k()) {
            kc.push(-1);
            kt.push(0);
            wv.extend_from_slice(&[0.0; 16]);
            entries += 1;
        }
        gk.push(gk.last().copied().unwrap_or(0) + entries as i32);
    }
    if gk.last().is_some_and(|&k| k < 0) || kc.len() > i32::MAX as usize {
        return Err(err(
            ctx,
            "too many reduction entries for the tensor-core kernel",
        ));
    }
    let gk_off = consts.push_i32(&gk);
    let kc_off = consts.push_i32(&kc);
    let kt_off = consts.push_i32(&kt);
    let w_off = consts.push_f32(&wv);
    let sh_off = consts.push_i32(
        &sp.shifts
            .iter()
            .map(|&s| s.clamp(-(1 << 30), 1 << 30) as i32)
            .collect::<Vec<_>>(),
    );
    // The output channel of slot `r` of group `G` (`-1` for an empty slot of a reordered
    // group), and the test that it is one.
    let perm = reordered.as_ref().map(|ord| {
        consts.push_i32(
            &ord.iter()
                .flatten()
                .map(|o| o.map_or(-1, |o| o as i32))
                .collect::<Vec<_>>(),
        )
    });
    let chan = |r: &str| match perm {
        None => format!("G * 16 + {r}"),
        Some(p) => format!("I[{p} + G * 16 + {r}]"),
    };
    let ok = |o: &str| match perm {
        None => format!("{o} < {co}"),
        Some(_) => format!("{o} >= 0"),
    };
    let bias = sp.bias.map(|b| consts.push_f32(b));
    let plane = oh * ow;
    let khw = kh * kw;
    let xplane = at(x, "n", "c", "jz", "0", "0");
    let mut epi = String::from("float v = acc[j][i]");
    if let Some(b) = bias {
        epi.push_str(&format!(" + W[{b} + o]"));
    }
    epi.push(';');
    if let Some(s) = slope_in_conv(sp) {
        epi.push_str(&format!(" v = e2_lrelu(v, {});", cf(s)));
    }
    // Per instruction: the A fragment (weights, [K][16] floats already rounded), the B rows this
    // lane loads (PTX's tables: TF32 rows t, t + 4; bf16 rows 2t, 2t + 1, 2t + 8, 2t + 9) and
    // their packing.
    let (kstep, rows, a_load, b_pack, call) = match mma {
        Mma::Tf32 => (
            8,
            "t + 4 * r",
            "a[0] = (unsigned)__float_as_int(wk[t * 16 + g]);
    a[1] = (unsigned)__float_as_int(wk[t * 16 + g + 8]);
    a[2] = (unsigned)__float_as_int(wk[(t + 4) * 16 + g]);
    a[3] = (unsigned)__float_as_int(wk[(t + 4) * 16 + g + 8]);",
            "unsigned b[2];
        b[0] = e2_tf32(v[0]);
        b[1] = e2_tf32(v[1]);",
            "e2_mma_tf32",
        ),
        Mma::Bf16 => (
            16,
            "2 * t + (r & 1) + 8 * (r >> 1)",
            "a[0] = e2_bf16x2(wk[(2 * t) * 16 + g], wk[(2 * t + 1) * 16 + g]);
    a[1] = e2_bf16x2(wk[(2 * t) * 16 + g + 8], wk[(2 * t + 1) * 16 + g + 8]);
    a[2] = e2_bf16x2(wk[(2 * t + 8) * 16 + g], wk[(2 * t + 9) * 16 + g]);
    a[3] = e2_bf16x2(wk[(2 * t + 8) * 16 + g + 8], wk[(2 * t + 9) * 16 + g + 8]);",
            "unsigned b[2];
        b[0] = e2_bf16x2(v[0], v[1]);
        b[1] = e2_bf16x2(v[2], v[3]);",
            "e2_mma_bf16",
        ),
    };
    let nrows = kstep / 4;
    let mainloop = format!(
        "for (int k = k0; k < k1; k += {kstep}) {{
    const float *wk = W + {w_off}LL + (i64)k * 16;
    unsigned a[4];
    {a_load}
    const float *xr[{nrows}];
    int dy[{nrows}], dx[{nrows}];
    #pragma unroll
    for (int r = 0; r < {nrows}; r++) {{
        const int kr = k + {rows};
        const int c = I[{kc_off} + kr], tap = I[{kt_off} + kr];
        const int a_ = tap / {khw}, b_ = (tap / {kw}) % {kh}, q_ = tap % {kw};
        // The shifted tensor is zero-padded: a tap in its padding reads zero whatever the
        // shift would bring there.
        const int iz = oz * {sd} - {pd} + a_;
        const int jz = (c < 0 || iz < 0 || iz >= {d}) ? -1 : iz - I[{sh_off} + c];
        xr[r] = (jz >= 0 && jz < {d}) ? A + {xplane} : (const float *)0;
        dy[r] = b_ - {ph};
        dx[r] = q_ - {pw};
    }}
    #pragma unroll
    for (int j = 0; j < 4; j++) {{
        float v[{nrows}];
        #pragma unroll
        for (int r = 0; r < {nrows}; r++) {{
            const int iy = py[j] + dy[r], ix = px[j] + dx[r];
            v[r] = (xr[r] && iy >= 0 && iy < {h} && ix >= 0 && ix < {w}) ? xr[r][(i64)iy * {row} + ix] : 0.0f;
        }}
        {b_pack}
        {call}(acc[j], a, b);
    }}
}}
",
        row = x.row,
    );
    let partials = sp.norm.map(|_| Partials {
        at: ctx.scratch,
        per_channel: partials_per_channel(g),
        count: od * plane,
    });
    let stats = match &partials {
        None => String::new(),
        Some(pt) => format!(
            "#pragma unroll
for (int m = 1; m < 4; m <<= 1) {{
    #pragma unroll
    for (int r = 0; r < 4; r++) st[r] += __shfl_xor_sync(0xffffffffu, st[r], m);
}}
__shared__ double red[{WARPS}][16][2];
if (t == 0) {{
    red[warp][g][0] = st[0]; red[warp][g][1] = st[1];
    red[warp][g + 8][0] = st[2]; red[warp][g + 8][1] = st[3];
}}
__syncthreads();
if (threadIdx.x < 16 && {stat_ok}) {{
    double a = 0.0, b = 0.0;
    #pragma unroll
    for (int w = 0; w < {WARPS}; w++) {{ a += red[w][threadIdx.x][0]; b += red[w][threadIdx.x][1]; }}
    double *pp = (double *)(A + {at}) + ((i64)(n * {co} + {stat_ch}) * {pc} + oz * {blocks_x} + (int)blockIdx.x) * 2;
    pp[0] = a; pp[1] = b;
}}
",
            at = pt.at,
            pc = pt.per_channel,
            blocks_x = plane_blocks(g),
            stat_ch = chan("(int)threadIdx.x"),
            stat_ok = ok(&chan("(int)threadIdx.x")),
        ),
    };
    let body = format!(
        "const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5;
const int g = lane >> 2, t = lane & 3;
const int G = (int)blockIdx.y, n = (int)blockIdx.z / {od}, oz = (int)blockIdx.z % {od};
const int p0 = ((int)blockIdx.x * {WARPS} + warp) * {POS_PER_WARP};
int py[4], px[4];
#pragma unroll
for (int j = 0; j < 4; j++) {{
    const int p = p0 + j * 8 + g;
    py[j] = p < {plane} ? p / {ow} : -1000000;
    px[j] = p < {plane} ? p % {ow} : 0;
}}
float acc[4][4];
#pragma unroll
for (int j = 0; j < 4; j++) {{ acc[j][0] = 0.0f; acc[j][1] = 0.0f; acc[j][2] = 0.0f; acc[j][3] = 0.0f; }}
const int k0 = I[{gk_off} + G], k1 = I[{gk_off} + G + 1];
{mainloop}double st[4] = {{0.0, 0.0, 0.0, 0.0}};
#pragma unroll
for (int j = 0; j < 4; j++) {{
    #pragma unroll
    for (int i = 0; i < 4; i++) {{
        const int o = {epi_ch}, p = p0 + j * 8 + 2 * t + (i & 1);
        if ({epi_ok} && p < {plane}) {{
            const int oy = p / {ow}, ox = p % {ow};
            {epi}
            A[{out}] = v;
            st[(i >> 1) * 2] += (double)v;
            st[(i >> 1) * 2 + 1] += (double)v * (double)v;
        }}
    }}
}}
(void)st;
{stats}",
        out = at(y, "n", "o", "oz", "oy", "ox"),
        epi_ch = chan("g + (i >> 1) * 8"),
        epi_ok = ok("o"),
    );
    let _ = kd;
    let blocks_x = plane_blocks(g);
    let grid = [
        grid_yz(ctx, blocks_x, "output plane blocks")?,
        grid_yz(ctx, groups, "output channel groups")?,
        grid_yz(ctx, n * od, "batch x output depth")?,
    ];
    let what = format!(
        "{} conv {}-mma{} {:?}",
        ctx.label,
        mma.name(),
        if g.sparse { " sparse" } else { "" },
        g.k
    );
    let mut main = kernel(
        &ctx.prefix,
        &body,
        grid,
        [(WARPS * 32) as u32, 1, 1],
        true,
        live_flops(sp),
        what,
    );
    main.mma = Some(work);
    let mut ks = vec![main];
    if let (Some((eps, gamma, beta)), Some(pt)) = (sp.norm, &partials) {
        let nc = n * co;
        let stats_at = pt.at + nc * pt.per_channel * 4;
        ks.push(norm_reduce(ctx, consts, nc, co, pt, stats_at, eps, gamma)?);
        ks.push(norm_apply(ctx, consts, y, y, stats_at, beta, sp.slope)?);
    }
    Ok(ks)
}

#[cfg(test)]
mod tests {
    use super::round_tf32;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        use super::round_bf16;
        assert_eq!(round_bf16(1.0), 1.0);
        // Half a bf16 ulp above 1 (even below): stays; above 1 + ulp (odd below): goes up.
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(
            round_bf16(-1.0 - 2f32.powi(-8) - 2f32.powi(-20)),
            -1.0 - 2f32.powi(-7)
        );
        assert!(round_bf16(f32::NAN).is_nan());
    }

    #[test]
    fn tf32_rounding_is_to_nearest_ties_away() {
        assert_eq!(round_tf32(1.0), 1.0);
        // 1 + 2^-11 is half a TF32 ulp above 1: ties go away from zero.
        assert_eq!(round_tf32(1.0 + 2f32.powi(-11)), 1.0 + 2f32.powi(-10));
        assert_eq!(round_tf32(-(1.0 + 2f32.powi(-11))), -(1.0 + 2f32.powi(-10)));
        assert_eq!(round_tf32(1.0 + 2f32.powi(-12)), 1.0);
        assert_eq!(round_tf32(f32::INFINITY), f32::INFINITY);
        assert!(round_tf32(f32::NAN).is_nan());
        assert_eq!(round_tf32(3.0).to_bits() & 0x1fff, 0);
    }
}
