//! Convolutions: `Conv3d`, `ConvTranspose3d` and `FusedConv3d` are normalized to one
//! [`ConvSpec`] (geometry, per-input-channel depth shifts, per-output-channel lists of live
//! kernels, bias, norm and activation epilogues) and handed to one of three code paths:
//!
//! - [`ConvPath::Fast`]: a cross-correlation with `kh = kw` in {1, 3}, `ph = pw = (k - 1) / 2`,
//!   `sh = sw` in {1, 2}, any depth kernel, stride and padding (the E2ENet 1x3x3 convs, the 1x1x1
//!   heads, 3x3x3 ablations): register-blocked AVX2 (AVX-512 at stride 1), see `conv_fast.rs`;
//! - [`ConvPath::Up`]: a transposed conv with a `(kd, 2, 2)` kernel equal to its stride and no
//!   padding (the upsampling convs), see `conv_up.rs`;
//! - [`ConvPath::Generic`]: anything else, simple loops with bounds checks (`conv_generic.rs`).
//!
//! The path, the tiling and therefore the scratch size depend only on the op's attributes and
//! the shapes, never on weight values, so [`scratch_elems`] and [`emit`] always agree. With an
//! instance norm, the conv kernel writes per-(tile, channel) partial sums into scratch and
//! `norm.rs` adds the reduction and the in-place normalize + activation kernels.
//!
//! A conv the memory plan lagged (its output over its input) or that runs a streamed upsampling
//! (`NodeCtx::stream`) is emitted as steps over groups of output planes in depth order
//! (`grouped`): the lag's first planes into a stash, the upsampled planes each group reads
//! into the ring just before it.

use std::collections::HashMap;

use e2enc_ir::{FusedConvAttrs, Graph, NodeId, Op, Tensor, TensorType};

use super::{conv_bf16, conv_fast, conv_generic, conv_int8, conv_up, err, norm};
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};

/// Which code path a convolution takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    Fast,
    Up,
    Generic,
}

/// Geometry of a convolution node: input and output `[N, C, D, H, W]`, kernel, stride, padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geom {
    pub x: [usize; 5],
    pub y: [usize; 5],
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
    pub transposed: bool,
    pub sparse: bool,
}

impl Geom {
    /// The geometry of a conv with attributes `a` from `x` to `y`.
    pub fn of(a: &FusedConvAttrs, x: [usize; 5], y: [usize; 5]) -> Geom {
        Geom {
            x,
            y,
            k: a.conv.kernel,
            s: a.conv.stride,
            p: a.conv.padding,
            transposed: a.transposed,
            sparse: a.sparse_out.is_some(),
        }
    }

    pub fn kvol(&self) -> usize {
        self.k.iter().product()
    }
}

/// A normalized convolution.
pub struct ConvSpec<'a> {
    pub g: Geom,
    /// Where each input channel is stored in the input view (the identity unless the memory
    /// plan reordered a concat; only the fast path reads it).
    pub channels: Vec<usize>,
    /// Depth shift of each input channel (all zero when unshifted).
    pub shifts: Vec<i64>,
    /// Per output channel: its live kernels as (input channel, offset of the `kvol` weights in
    /// `wdata`), sorted by input channel.
    pub rows: Vec<Vec<(usize, usize)>>,
    pub wdata: &'a [f32],
    pub bias: Option<&'a [f32]>,
    /// (eps, gamma, beta).
    pub norm: Option<(f32, &'a [f32], &'a [f32])>,
    pub slope: Option<f32>,
}

/// Offsets in `W`/`I` of a per-output-channel CSR of the live kernels.
pub struct Csr {
    /// Input channel of each entry.
    pub ents: usize,
    /// Row pointers: entries of output channel `o` are `rp[o]..rp[o + 1]`.
    pub rp: usize,
    /// `kvol` weights per entry, in entry order.
    pub w: usize,
}

impl ConvSpec<'_> {
    /// Pushes the bias (if any) into `consts`, padded with zeros to `outputs` channels (whole
    /// output blocks); its offset.
    pub fn push_bias(&self, outputs: usize, consts: &mut crate::emit::Consts) -> Option<usize> {
        self.bias.map(|b| {
            let mut v = b.to_vec();
            v.resize(outputs.max(b.len()), 0.0);
            consts.push_f32(&v)
        })
    }

    /// Pushes the CSR of the live kernels (each kernel's first `kvol` weights) into `consts`.
    pub fn push_csr(&self, kvol: usize, consts: &mut crate::emit::Consts) -> Csr {
        let mut rp = vec![0i32];
        let mut ents = Vec::new();
        let mut wv = Vec::new();
        for row in &self.rows {
            for &(c, off) in row {
                ents.push(c as i32);
                wv.extend_from_slice(&self.wdata[off..off + kvol]);
            }
            rp.push(ents.len() as i32);
        }
        Csr {
            ents: consts.push_i32(&ents),
            rp: consts.push_i32(&rp),
            w: consts.push_f32(&wv),
        }
    }
}

/// The fused attributes equivalent to a plain or fused conv op.
fn attrs(op: &Op, n_consts: usize) -> Option<FusedConvAttrs> {
    match op {
        Op::Conv3d(a) => Some(FusedConvAttrs::plain(a.clone(), false, n_consts > 1)),
        Op::ConvTranspose3d(a) => Some(FusedConvAttrs::plain(a.clone(), true, n_consts > 1)),
        Op::FusedConv3d(a) => Some(a.clone()),
        _ => None,
    }
}

fn dims5(s: &[usize]) -> Option<[usize; 5]> {
    s.try_into().ok()
}

/// The path a geometry takes.
pub fn path(g: &Geom) -> ConvPath {
    let [kd, kh, kw] = g.k;
    let [sd, sh, sw] = g.s;
    let [pd, ph, pw] = g.p;
    if g.transposed {
        if kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && kd == sd && pd == 0 {
            return ConvPath::Up;
        }
        return ConvPath::Generic;
    }
    if kh == kw && (kh == 1 || kh == 3) && ph == pw && ph == (kh - 1) / 2 && sh == sw && sh <= 2 {
        return ConvPath::Fast;
    }
    ConvPath::Generic
}

/// Partial statistics per (n, c) the conv kernel of this geometry writes (its tiles per n).
fn partials(g: &Geom) -> usize {
    match path(g) {
        ConvPath::Fast => conv_fast::tiles_per_sample(g),
        ConvPath::Up => conv_up::tiles_per_sample(g),
        ConvPath::Generic => g.y[2],
    }
}

/// Scratch of a conv node (only an instance-norm epilogue needs any).
pub fn scratch_elems(op: &Op, inputs: &[TensorType], output: &TensorType) -> usize {
    let n_consts = inputs.len().saturating_sub(1);
    let Some(a) = attrs(op, n_consts) else {
        return 0;
    };
    if a.norm_eps.is_none() {
        return 0;
    }
    let (Some(x), Some(y)) = (
        inputs.first().and_then(|t| dims5(&t.shape)),
        dims5(&output.shape),
    ) else {
        return 0;
    };
    let g = Geom::of(&a, x, y);
    norm::scratch_for(y[0] * y[1], partials(&g))
}

/// Whether the kernels of a conv-like `op` reading `input` into `output` read and write bf16
/// views (see `c::narrow_io`).
pub fn narrow_io(op: &Op, input: &TensorType, output: &TensorType) -> bool {
    let Some(a) = attrs(op, 1) else {
        return false;
    };
    let (Some(x), Some(y)) = (dims5(&input.shape), dims5(&output.shape)) else {
        return false;
    };
    // (The per-tile shifts of a normalized bf16 output are the fast path's: see `shift_elems`.)
    match path(&Geom::of(&a, x, y)) {
        ConvPath::Fast => true,
        ConvPath::Up => a.norm_eps.is_none(),
        ConvPath::Generic => false,
    }
}

/// Scratch (f32 elements) a conv needs when its output is stored as bf16: a normalized one
/// keeps one shift per (sample, channel, tile) (`NodeCtx::shift_at`); others none.
pub fn shift_elems(op: &Op, input: &TensorType, output: &TensorType) -> usize {
    let Some(a) = attrs(op, 1) else {
        return 0;
    };
    let (Some(x), Some(y)) = (dims5(&input.shape), dims5(&output.shape)) else {
        return 0;
    };
    let g = Geom::of(&a, x, y);
    match (a.norm_eps.is_some(), path(&g)) {
        (true, ConvPath::Fast) => y[0] * y[1] * partials(&g),
        _ => 0,
    }
}

/// Whether the kernel of a conv-like `op` reading `input` into `output` addresses its input
/// channels through a table (the fast path's entry lists), so the memory plan may store a concat
/// feeding it in another channel order.
pub fn reads_channel_map(op: &Op, input: &TensorType, output: &TensorType) -> bool {
    let Some(a) = attrs(op, 1) else {
        return false;
    };
    let (Some(x), Some(y)) = (dims5(&input.shape), dims5(&output.shape)) else {
        return false;
    };
    let g = Geom::of(&a, x, y);
    path(&g) == ConvPath::Fast
}

fn f32s<'a>(ctx: &NodeCtx, t: &'a Tensor, what: &str) -> Result<&'a [f32], EmitError> {
    t.as_f32()
        .ok_or_else(|| err(ctx, format!("{what} must be f32, got {}", t.ty())))
}

/// Builds the [`ConvSpec`] of a conv node, checking the constants against the geometry.
pub fn spec<'a>(ctx: &NodeCtx<'a>) -> Result<ConvSpec<'a>, EmitError> {
    let a = attrs(ctx.op, ctx.consts.len()).ok_or_else(|| err(ctx, "not a convolution"))?;
    if ctx.inputs.len() != 1 || ctx.consts.len() + 1 != a.num_operands() {
        return Err(err(
            ctx,
            format!(
                "expected 1 activation and {} constant operand(s), got {} and {}",
                a.num_operands() - 1,
                ctx.inputs.len(),
                ctx.consts.len()
            ),
        ));
    }
    let x = ctx.inputs[0].shape;
    let y = ctx.output.shape;
    let g = Geom::of(&a, x, y);
    let (cin, cout, kvol) = (x[1], y[1], g.kvol());
    // Constant operand i of the op is ctx.consts[i - 1].
    let c = |slot: usize| ctx.consts[slot - 1];
    let (kidx_at, bias_at, gamma_at) = a.operand_slots();
    let w = c(1);
    let wdata = f32s(ctx, w, "the weight")?;
    let mut rows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); cout];
    match (a.sparse_out, kidx_at) {
        (Some(co), Some(k)) => {
            if co != cout || w.shape().len() != 4 || w.shape()[1..] != a.conv.kernel {
                return Err(err(ctx, format!("packed weight {} does not fit", w.ty())));
            }
            let idx = c(k)
                .as_i32()
                .ok_or_else(|| err(ctx, "the kernel index must be i32"))?;
            let n = w.shape()[0];
            if idx.len() != 2 * n {
                return Err(err(
                    ctx,
                    format!("kernel index has {} rows, not {n}", idx.len() / 2),
                ));
            }
            for r in 0..n {
                let (o, i) = (idx[2 * r], idx[2 * r + 1]);
                let ok = o >= 0 && (o as usize) < cout && i >= 0 && (i as usize) < cin;
                if !ok {
                    return Err(err(
                        ctx,
                        format!("kernel index row {r} ({o}, {i}) is out of range"),
                    ));
                }
                rows[o as usize].push((i as usize, r * kvol));
            }
            for (o, row) in rows.iter_mut().enumerate() {
                row.sort_by_key(|e| e.0);
                if row.windows(2).any(|p| p[0].0 == p[1].0) {
                    return Err(err(
                        ctx,
                        format!("output channel {o} lists an input channel twice"),
                    ));
                }
            }
        }
        _ => {
            let want: Vec<usize> = if a.transposed {
                [cin, cout].iter().chain(&a.conv.kernel).copied().collect()
            } else {
                [cout, cin].iter().chain(&a.conv.kernel).copied().collect()
            };
            if w.shape() != want.as_slice() {
                return Err(err(ctx, format!("weight {} is not {want:?}", w.ty())));
            }
            for (o, row) in rows.iter_mut().enumerate() {
                for i in 0..cin {
                    let k = if a.transposed {
                        i * cout + o
                    } else {
                        o * cin + i
                    };
                    row.push((i, k * kvol));
                }
            }
        }
    }
    let vec_of = |slot: usize, what: &str| -> Result<&'a [f32], EmitError> {
        let t = c(slot);
        let v = f32s(ctx, t, what)?;
        if v.len() != cout {
            return Err(err(
                ctx,
                format!("{what} {} must have {cout} values", t.ty()),
            ));
        }
        Ok(v)
    };
    let bias = bias_at.map(|b| vec_of(b, "bias")).transpose()?;
    let norm = match (a.norm_eps, gamma_at) {
        (Some(eps), Some(gi)) => Some((eps, vec_of(gi, "gamma")?, vec_of(gi + 1, "beta")?)),
        _ => None,
    };
    let channels = match &ctx.channel_map {
        None => (0..cin).collect(),
        Some(m) => {
            let mut seen = vec![false; cin];
            let ok = m.len() == cin
                && m.iter()
                    .all(|&c| c < cin && !std::mem::replace(&mut seen[c], true));
            if !ok || path(&g) != ConvPath::Fast {
                return Err(err(
                    ctx,
                    "the input's channel map is not a permutation this path reads",
                ));
            }
            m.clone()
        }
    };
    let shifts = a.channel_shifts().unwrap_or_else(|| vec![0; cin]);
    if shifts.len() != cin {
        return Err(err(
            ctx,
            format!("shift runs cover {} of {cin} channels", shifts.len()),
        ));
    }
    if a.transposed && shifts.iter().any(|&s| s != 0) {
        return Err(err(ctx, "a transposed convolution takes no input shifts"));
    }
    if ctx.output.shape[0] != x[0] {
        return Err(err(ctx, "input and output batch sizes differ"));
    }
    Ok(ConvSpec {
        g,
        channels,
        shifts,
        rows,
        wdata,
        bias,
        norm,
        slope: a.slope,
    })
}

/// The narrow arithmetic the fast-path convs of a bundle get where they have kernels for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Narrow {
    None,
    /// `conv_bf16.rs`.
    Bf16,
    /// `conv_int8.rs` (convs with calibrated ranges).
    Int8,
    /// `conv_int8.rs`, else `conv_bf16.rs`: an int8 bundle that stores activations as bf16 (and
    /// so needs the bf16 instructions anyway).
    Int8Bf16,
}

impl Narrow {
    /// What a bundle for `isa` in `precision` gets, storing activations as bf16 where `narrow`.
    pub fn of(
        isa: crate::target::Target,
        precision: crate::precision::Precision,
        narrow: bool,
    ) -> Narrow {
        if conv_bf16::enabled(isa, precision) {
            Narrow::Bf16
        } else if conv_int8::enabled(isa, precision) {
            match narrow {
                true => Narrow::Int8Bf16,
                false => Narrow::Int8,
            }
        } else {
            Narrow::None
        }
    }

    /// Whether the bundle has bf16 kernels (the upsamplings' 16-lane kernels then multiply bf16
    /// inputs in pairs).
    fn bf16(self) -> bool {
        matches!(self, Narrow::Bf16 | Narrow::Int8Bf16)
    }

    /// Whether upsamplings with calibrated input ranges multiply int8 channel quads (int8
    /// bundles storing bf16: `conv_up_wide::quads`).
    fn int8_up(self) -> bool {
        self == Narrow::Int8Bf16
    }

    /// The narrow kernel of a fast-path conv, `None` where it has none.
    fn kernel(self, ctx: &NodeCtx, sp: &ConvSpec, consts: &mut Consts) -> Option<Kernel> {
        match self {
            Narrow::None => None,
            Narrow::Bf16 => conv_bf16::emit(ctx, sp, consts),
            Narrow::Int8 => conv_int8::emit(ctx, sp, consts, false),
            Narrow::Int8Bf16 => {
                conv_int8::emit(ctx, sp, consts, true).or_else(|| conv_bf16::emit(ctx, sp, consts))
            }
        }
    }
}

/// The kernels of a conv node; with `narrow`, the convs that have kernels for it multiply in
/// bf16 or int8 (the rest in f32).
pub fn emit(ctx: &NodeCtx, consts: &mut Consts, narrow: Narrow) -> Result<Vec<Kernel>, EmitError> {
    let sp = spec(ctx)?;
    let path = path(&sp.g);
    let bf16 = ctx.inputs.iter().chain([&ctx.output]).any(|v| v.is_bf16());
    if ctx.shift_at.is_some()
        != (bf16 && ctx.output.is_bf16() && sp.norm.is_some() && path == ConvPath::Fast)
    {
        return Err(err(
            ctx,
            "a normalized bf16 output needs its tile shifts (and only it)",
        ));
    }
    if bf16 && path == ConvPath::Generic {
        return Err(err(
            ctx,
            "bf16 activations on the generic conv path (the memory plan should not store them so)",
        ));
    }
    if ctx.lag.is_some() && ctx.inputs[0].elem != ctx.output.elem {
        return Err(err(
            ctx,
            "a lagged conv's input and output are stored alike",
        ));
    }
    let mark = (consts.f32.len(), consts.i32.len());
    let conv = match path {
        // Narrow where there is a kernel for the geometry, else f32.
        ConvPath::Fast => match narrow.kernel(ctx, &sp, consts) {
            Some(k) => k,
            None => conv_fast::emit(ctx, &sp, consts)?,
        },
        ConvPath::Up => conv_up::emit(ctx, &sp, consts, narrow.bf16(), narrow.int8_up())?,
        ConvPath::Generic => conv_generic::emit(ctx, &sp, consts)?,
    };
    let mut ks = match ctx.lag.is_some() || ctx.stream.is_some() {
        false => vec![conv],
        true => grouped(ctx, &sp, consts, mark, narrow, conv)?,
    };
    if let Some((eps, gamma, beta)) = sp.norm {
        let [n, c, d, h, w] = sp.g.y;
        let p = partials(&sp.g);
        ks.push(norm::reduce(
            ctx,
            consts,
            norm::Stats {
                nc: n * c,
                c,
                partials: p,
                count: d * h * w,
            },
            eps,
            gamma,
        ));
        ks.push(norm::apply(
            ctx,
            consts,
            &ctx.output,
            &ctx.output,
            n * c * p,
            norm::After {
                beta,
                slope: sp.slope,
                shift: ctx.shift_at.map(|at| {
                    let rows = conv_fast::blocking(&sp.g).rb;
                    norm::Shift {
                        at,
                        tiles: p,
                        bands: sp.g.y[3].div_ceil(rows),
                        rows,
                    }
                }),
            },
        ));
    }
    Ok(ks)
}

/// Output planes per step of a lagged conv: its lag is this plus the largest depth shift, and
/// every step ends in a barrier (AMOS-CT at 128^3: 32 steps of 128 tiles).
pub const LAG_GROUP: usize = 4;

/// The lag (in planes) with which a conv `op` reading `input` into `output` can run lagged
/// (`memplan/lag.rs`): a fast-path conv of kernel depth 1 and stride 1, unpadded in depth, the
/// output as large as the input, batch 1, deeper than the lag.
pub fn lag_planes(op: &Op, input: &TensorType, output: &TensorType) -> Option<usize> {
    let a = attrs(op, 1)?;
    let (x, y) = (dims5(&input.shape)?, dims5(&output.shape)?);
    let g = Geom::of(&a, x, y);
    let simple = path(&g) == ConvPath::Fast
        && g.k[0] == 1
        && g.s == [1, 1, 1]
        && g.p[0] == 0
        && x[0] == 1
        && x[2..] == y[2..];
    let reach = a
        .channel_shifts()
        .map_or(0, |s| s.into_iter().max().unwrap_or(0).max(0) as usize);
    // Even, so that the groups after it start on the pairs of planes an upsampling makes.
    let planes = (LAG_GROUP + reach).div_ceil(2) * 2;
    (simple && y[2] > planes).then_some(planes)
}

/// Planes per channel of the ring a streamed upsampling writes (`NodeCtx::stream`): a group of
/// output planes `z0 .. z1` reads ring planes `z0 - 2 .. z1 + 2` (the lag's first group 0 .. 8).
pub const STREAM_SLOTS: usize = 8;

/// Upsamplings to stream into the conv that reads their concat, `U -> Y`: `U` a 2x2x2 stride-2
/// transposed conv without norm whose one reader is a concat, read only by `Y`, a conv that can
/// run in groups of planes (`lag_planes`) with depth shifts within +-2, at least 8 planes deep.
pub fn stream_candidates(g: &Graph) -> HashMap<NodeId, NodeId> {
    let mut out = HashMap::new();
    for u in g.node_ids() {
        let n_consts = g.operands(u).len().saturating_sub(1);
        let Some(a) = attrs(&g.node(u).op, n_consts) else {
            continue;
        };
        let up = a.transposed
            && a.conv.kernel == [2, 2, 2]
            && a.conv.stride == [2, 2, 2]
            && a.conv.padding == [0, 0, 0]
            && a.norm_eps.is_none();
        let users = g.users(u);
        let (true, [(c, _)]) = (up, users.as_slice()) else {
            continue;
        };
        let c_users = g.users(*c);
        let (Op::Concat, [(y, 0)]) = (&g.node(*c).op, c_users.as_slice()) else {
            continue;
        };
        let Op::FusedConv3d(ya) = &g.node(*y).op else {
            continue;
        };
        let shifts_ok = ya
            .channel_shifts()
            .is_none_or(|s| s.iter().all(|v| v.abs() <= 2));
        let d = g.node(*y).ty.shape.get(2).copied().unwrap_or(0);
        if shifts_ok
            && d >= STREAM_SLOTS
            && d % 2 == 0
            && g.operands(*c).iter().filter(|&&p| p == u).count() == 1
            && lag_planes(&g.node(*y).op, &g.node(*c).ty, &g.node(*y).ty).is_some()
        {
            out.insert(u, *y);
        }
    }
    // One ring per conv: a concat with two upsampled parts streams neither.
    let mut per_conv: HashMap<NodeId, usize> = HashMap::new();
    for y in out.values() {
        *per_conv.entry(*y).or_default() += 1;
    }
    out.retain(|_, y| per_conv[y] == 1);
    out
}

/// Splits `total` flops over ranges of `units` in proportion (the last takes the remainder).
fn share(total: u64, part: usize, of: usize, last: bool, given: &mut u64) -> u64 {
    let f = if last {
        total - *given
    } else {
        (total as u128 * part as u128 / of as u128) as u64
    };
    *given += f;
    f
}

/// The kernels of a conv run in groups of output planes, in depth order, each group a step:
/// lagged (`memplan/lag.rs`: its first `planes` planes go to the stash, copied into place after
/// the last group) and/or running a streamed upsampling (`NodeCtx::stream`: before each group,
/// the upsampled planes it will read are computed into the ring).
fn grouped(
    ctx: &NodeCtx,
    sp: &ConvSpec,
    consts: &mut Consts,
    mark: (usize, usize),
    narrow: Narrow,
    conv: Kernel,
) -> Result<Vec<Kernel>, EmitError> {
    let y = &ctx.output;
    let [_, co, d, _, _] = y.shape;
    let per_plane = conv.tiles / d;
    if !conv.tiles.is_multiple_of(d) || conv.first_tile != 0 {
        return Err(err(ctx, "a conv run in groups needs depth-major tiles"));
    }
    // Output plane ranges in order: the lag's stashed planes first.
    let mut ranges = Vec::new();
    let mut z = 0;
    if let Some(l) = ctx.lag {
        if l.planes >= d || l.group == 0 {
            return Err(err(ctx, "the lag leaves no group"));
        }
        ranges.push((0, l.planes));
        z = l.planes;
    }
    while z < d {
        ranges.push((z, (z + LAG_GROUP).min(d)));
        z += LAG_GROUP;
    }
    let stashed = match ctx.lag {
        Some(l) => Some(stash_kernel(ctx, sp, consts, mark, narrow, &conv, l)?),
        None => None,
    };
    // The streamed upsampling: its kernel over the ring, tiles per pair of output planes.
    let up = match &ctx.stream {
        None => None,
        Some(u) => {
            let usp = spec(u)?;
            if path(&usp.g) != ConvPath::Up || usp.g.k[0] != 2 || usp.norm.is_some() {
                return Err(err(ctx, "only a 2x2x2 upsampling without norm streams"));
            }
            let k = conv_up::emit(u, &usp, consts, narrow.bf16(), narrow.int8_up())?;
            if !k.tiles.is_multiple_of(d / 2) {
                return Err(err(ctx, "the streamed upsampling needs depth-major tiles"));
            }
            let slots = u.ring.unwrap_or(0);
            Some((k, slots))
        }
    };
    let mut ks = Vec::new();
    let mut sourced: Vec<String> = Vec::new();
    let mut step = |base: &Kernel, first: usize, tiles: usize, flops: u64, what: String| {
        let source = if sourced.contains(&base.name) {
            String::new()
        } else {
            sourced.push(base.name.clone());
            base.source.clone()
        };
        ks.push(Kernel {
            name: base.name.clone(),
            source,
            tiles,
            first_tile: first,
            flops,
            what,
            launch: None,
            mma: None,
        });
    };
    // The planes go with the node's label (the first word): profiles group by the rest.
    let tagged = |what: &str, z0: usize, z1: usize| match what.split_once(' ') {
        Some((label, kind)) => format!("{label}[z{z0}..{z1}] {kind}"),
        None => format!("{what}[z{z0}..{z1}]"),
    };
    let (mut given, mut up_given, mut have) = (0u64, 0u64, 0usize);
    for (k, &(z0, z1)) in ranges.iter().enumerate() {
        if let Some((uk, slots)) = &up {
            let need = ((z1 + 2).min(d)).div_ceil(2) * 2;
            if need > have {
                // The planes computed now overwrite those `slots` below them: none still read.
                if need.saturating_sub(*slots) > z0.saturating_sub(2) {
                    return Err(err(ctx, "the ring is too small for a group"));
                }
                let tp = uk.tiles / (d / 2);
                let flops = share(uk.flops, need - have, d, need == d, &mut up_given);
                step(
                    uk,
                    have / 2 * tp,
                    (need - have) / 2 * tp,
                    flops,
                    tagged(&uk.what, have, need),
                );
                have = need;
            }
        }
        let base = match (k, &stashed) {
            (0, Some(s)) => s,
            _ => &conv,
        };
        let flops = share(conv.flops, z1 - z0, d, k + 1 == ranges.len(), &mut given);
        step(
            base,
            z0 * per_plane,
            (z1 - z0) * per_plane,
            flops,
            tagged(&base.what, z0, z1),
        );
    }
    if let Some(l) = ctx.lag {
        // The copy: channel c's stashed planes are contiguous, and so are its first planes.
        let bytes = l.planes * y.d_stride * if y.is_bf16() { 2 } else { 4 };
        let body = format!(
            "memcpy({b} + {} + t * {}, {b} + {} + t * {}, {bytes});",
            y.offset,
            y.c_stride,
            stash_offset(y, l),
            l.planes * y.d_stride,
            b = y.c_base(),
        );
        ks.push(super::text::kernel(
            &format!("{}_unstash", ctx.prefix),
            "",
            &body,
            co,
            0,
            format!("{} unstash", ctx.label),
        ));
    }
    Ok(ks)
}

/// The stash's offset in the units of `y`'s view (`l.stash` counts arena f32 elements).
fn stash_offset(y: &crate::layout::View, l: crate::emit::Lagged) -> usize {
    match y.is_bf16() {
        true => 2 * l.stash,
        false => l.stash,
    }
}

/// The conv kernel of a lagged conv writing the stash: the output view moved to the stash (the
/// first `l.planes` planes of each channel, contiguous). It reads the very constants `conv`
/// pushed: emitted from the same mark, it pushes them again at the same offsets, which must
/// come out equal.
fn stash_kernel(
    ctx: &NodeCtx,
    sp: &ConvSpec,
    consts: &mut Consts,
    mark: (usize, usize),
    narrow: Narrow,
    conv: &Kernel,
    l: crate::emit::Lagged,
) -> Result<Kernel, EmitError> {
    let y = &ctx.output;
    let mut stash_view = y.clone();
    stash_view.offset = stash_offset(y, l);
    stash_view.c_stride = l.planes * y.d_stride;
    stash_view.n_stride = y.shape[1] * stash_view.c_stride;
    let stash_ctx = NodeCtx {
        node: ctx.node,
        prefix: format!("{}s", ctx.prefix),
        op: ctx.op,
        label: ctx.label.clone(),
        inputs: ctx.inputs.clone(),
        consts: ctx.consts.clone(),
        output: stash_view,
        scratch: ctx.scratch,
        channel_map: ctx.channel_map.clone(),
        isa: ctx.isa,
        lag: None,
        ring: None,
        stream: None,
        ring_in: ctx.ring_in,
        act_ranges: ctx.act_ranges.clone(),
        shift_at: ctx.shift_at,
    };
    let pushed = consts.clone();
    consts.f32.truncate(mark.0);
    consts.i32.truncate(mark.1);
    let stashed = narrow.kernel(&stash_ctx, sp, consts);
    let stashed = match stashed {
        Some(k) => k,
        None => conv_fast::emit(&stash_ctx, sp, consts)?,
    };
    if stashed.tiles != conv.tiles || consts.f32 != pushed.f32 || consts.i32 != pushed.i32 {
        return Err(err(
            ctx,
            "the stash kernel differs from the conv in tiles or constants",
        ));
    }
    Ok(stashed)
}

/// Whether the epilogue of the conv kernel itself applies the leaky ReLU (no norm in between).
pub fn slope_in_conv(sp: &ConvSpec) -> Option<f32> {
    if sp.norm.is_some() {
        None
    } else {
        sp.slope
    }
}

/// Live MACs of a conv per output voxel row... counted exactly: for each output depth, the kernels
/// whose input plane exists, times the taps in H and W and the output plane size.
pub fn live_flops(sp: &ConvSpec) -> u64 {
    let g = &sp.g;
    let [n, _, od, oh, ow] = g.y;
    let [kd, kh, kw] = g.k;
    let d = g.x[2] as i64;
    let mut macs: u64 = 0;
    if g.transposed {
        let live: usize = sp.rows.iter().map(|r| r.len()).sum();
        let [_, _, xd, xh, xw] = g.x;
        return 2 * (n * live * xd * xh * xw * g.kvol()) as u64;
    }
    for z in 0..od {
        for row in &sp.rows {
            for &(c, _) in row {
                for a in 0..kd {
                    let iz = (z * g.s[0]) as i64 - g.p[0] as i64 + a as i64;
                    let jz = iz - sp.shifts[c];
                    if (0..d).contains(&iz) && (0..d).contains(&jz) {
                        macs += (kh * kw * oh * ow) as u64;
                    }
                }
            }
        }
    }
    2 * macs * n as u64
}
