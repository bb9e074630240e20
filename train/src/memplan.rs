//! How the training executor ([`super::exec`]) keeps its values: which forward values the
//! backward pass recomputes instead of keeping ([`add_recompute`]), the order the ops run in
//! ([`schedule`]), and the bytes live at every point of that order ([`plan`]), so the peak is
//! known before a step runs and `e2enc train --profile` can print it.
//!
//! The policies ([`Memory`]), from most to least memory:
//!
//! - [`Memory::KeepForward`]: every forward value stays until the backward pass ends (what the
//!   executor did first);
//! - [`Memory::FreeAfterLastUse`]: every value, forward ones too, is dropped after its last use
//!   in forward-then-backward order;
//! - [`Memory::Recompute`] (the default): as `FreeAfterLastUse`, and the outputs of the cheap
//!   forward ops (instance norm, leaky ReLU, concatenation, max pooling, and the transposed
//!   convolutions of the fusion grid's upward flow, which are 2x2x2 stride-2 and DSFF-sparse)
//!   are not kept for the backward pass: the graph gets copies of such ops, reading the copies
//!   of their cheap operands and the kept values of the others (the stride-1 and strided
//!   convolutions' outputs, the inputs), and every backward op reads copies. A copy runs in the
//!   backward pass right before its first reader and serves later readers while they come
//!   within `window` backward ops of each other (a larger window recomputes less and keeps
//!   copies longer). What stays from the forward pass is the convolutions' outputs. The kernels
//!   are deterministic, so a copy computes the same bits as its original and the step's
//!   results do not change.
//!
//! Independently of the policy, [`Saved::Bf16`] (`e2enc train --precision bf16`) keeps the
//! forward values the backward pass reads (with `Recompute`: the convolutions' outputs) in
//! bfloat16 ([`stashes`]). Such a value is rounded to bfloat16 (to nearest, ties to even) as soon
//! as its op has computed it, so its forward readers and the backward pass read the same values;
//! after its last forward reader it is packed (exact now; half the bytes) and its f32 buffer
//! freed; before a backward reader it is unpacked into a fresh f32 buffer that serves the
//! readers within [`STASH_WINDOW`] backward ops of each other, like a recomputed copy; the packed
//! copy dies when the last such buffer is made. Every op still computes in f32; the step is the
//! exact f32 step of the network whose kept values are rounded, and so its gradient is that
//! network's (recomputed copies give the forward pass's bits, as in f32). Weights, their
//! gradients, the momentum and every value not kept stay f32 (relative error of a rounding: at
//! most 2^-8).

use std::collections::{HashMap, HashSet};

use e2enc_ir::{Graph, IrError, NodeId, Op};

/// Which values the executor keeps (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    KeepForward,
    FreeAfterLastUse,
    /// A copy serves later readers at most `window` backward ops apart ([`add_recompute`]).
    Recompute {
        window: usize,
    },
}

impl Default for Memory {
    fn default() -> Memory {
        Memory::Recompute {
            window: DEFAULT_WINDOW,
        }
    }
}

/// The default [`Memory::Recompute`] window.
pub const DEFAULT_WINDOW: usize = 20;

/// The [`Memory::Recompute`] window of a training run that keeps its values in bfloat16 (the
/// run that asked for less memory): shorter, so that fewer recomputed norms and activations wait
/// for far-apart readers. At the AMOS-CT recipe's batch 2 (width 48, 128^3) the plan's peak is
/// 8.92 GiB with 3 or 5, 9.11 GiB with 8 and 9.29 GiB with 12 or 20; at batch 1 window 5 cost
/// 1-1.5 s of a 50 s step in norms, activations and unpacking (2026-12-05, Zen 4, 2 threads).
pub const BF16_WINDOW: usize = 5;

impl Memory {
    /// What a training run keeping its values in `saved` precision uses: recomputation with
    /// [`DEFAULT_WINDOW`] in f32, [`BF16_WINDOW`] in bf16.
    pub fn for_saved(saved: Saved) -> Memory {
        Memory::Recompute {
            window: match saved {
                Saved::F32 => DEFAULT_WINDOW,
                Saved::Bf16 => BF16_WINDOW,
            },
        }
    }
}

/// The backward ops within which readers of a [`Saved::Bf16`] value share its unpacked buffer
/// (at most the [`Memory::Recompute`] window). Small, because unpacking is a cheap pass over the
/// value and an unpacked buffer held long costs twice its packed copy: at the AMOS-CT recipe's
/// batch 2 (width 48, 128^3) and a recompute window of 20 the plan's peak is 9.29 GiB with 0
/// to 5, 9.67 GiB with 10 and 9.76 GiB with 20.
pub const STASH_WINDOW: usize = 5;

/// The precision of the forward values kept for the backward pass (module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Saved {
    /// Kept as computed.
    #[default]
    F32,
    /// Packed to bfloat16 between the forward and the backward pass.
    Bf16,
}

impl std::fmt::Display for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Saved::F32 => "f32",
            Saved::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Saved {
    type Err = String;
    fn from_str(s: &str) -> Result<Saved, String> {
        match s {
            "f32" => Ok(Saved::F32),
            "bf16" => Ok(Saved::Bf16),
            _ => Err(format!("unknown training precision `{s}` (f32 or bf16)")),
        }
    }
}

/// What the GPU training step's convolutions multiply in (`e2enc train --tensor-cores`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvMath {
    /// f32 on CUDA cores, every conv (the CPU's math to float rounding).
    #[default]
    F32,
    /// The stride-1 `1x3x3`-style convs (forward, data and weight gradients) on TF32 tensor
    /// cores (10-bit mantissas in, f32 sums: PyTorch's default for cuDNN convs); the rest f32.
    Tf32,
    /// The same convs on bf16 tensor cores (7-bit mantissas in, f32 sums; bf16's exponent range
    /// is f32's, so no loss scaling); the rest f32.
    Bf16,
}

impl ConvMath {
    /// The code generator's precision for it.
    pub fn precision(self) -> e2enc_codegen::precision::Precision {
        match self {
            ConvMath::F32 => e2enc_codegen::precision::Precision::F32,
            ConvMath::Tf32 => e2enc_codegen::precision::Precision::Tf32,
            ConvMath::Bf16 => e2enc_codegen::precision::Precision::Bf16,
        }
    }
}

impl std::str::FromStr for ConvMath {
    type Err = String;
    fn from_str(s: &str) -> Result<ConvMath, String> {
        match s {
            "f32" => Ok(ConvMath::F32),
            "tf32" => Ok(ConvMath::Tf32),
            "bf16" => Ok(ConvMath::Bf16),
            _ => Err(format!(
                "unknown convolution math `{s}` (f32, tf32 or bf16)"
            )),
        }
    }
}

impl std::fmt::Display for ConvMath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvMath::F32 => "f32",
            ConvMath::Tf32 => "tf32",
            ConvMath::Bf16 => "bf16",
        })
    }
}

/// `x` as bfloat16 bits, rounded to nearest even (`e2enc_codegen::precision::bf16_bits`); the
/// CUDA pack kernel (`e2enc_codegen::cuda::train::stash`) computes the same bits.
pub use e2enc_codegen::precision::bf16_bits as to_bf16;

/// The f32 value of bfloat16 bits (exact).
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// A forward value kept in bfloat16 for the backward pass ([`Saved::Bf16`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stash {
    pub node: NodeId,
    /// Position in the order after which it is packed and its f32 buffer freed (its last
    /// forward reader, or itself when only the backward pass reads it).
    pub pack_after: usize,
    /// Its backward readers in groups, as (first, last) positions: unpacked before the first,
    /// the f32 buffer freed after the last; the packed copy dies once the last group has its
    /// unpacked buffer.
    pub groups: Vec<(usize, usize)>,
}

/// The forward values of `order` (forward part: the first `n_forward` ops) that
/// [`Saved::Bf16`] packs: every f32 value computed in the forward pass (not an input, not a
/// weight, not one `keep` holds) that a backward op reads. Backward readers closer than
/// `window` ops after the previous one share an unpacked buffer.
pub fn stashes(
    g: &Graph,
    order: &[NodeId],
    n_forward: usize,
    keep: &HashSet<NodeId>,
    window: usize,
) -> Vec<Stash> {
    let mut readers: HashMap<NodeId, Vec<usize>> = HashMap::new();
    for (pos, &n) in order.iter().enumerate() {
        let mut ops = g.operands(n);
        ops.sort();
        ops.dedup();
        for o in ops {
            readers.entry(o).or_default().push(pos);
        }
    }
    let mut out = Vec::new();
    for (pos, &n) in order[..n_forward].iter().enumerate() {
        let node = g.node(n);
        if keep.contains(&n)
            || matches!(node.op, Op::Input { .. } | Op::Weight { .. })
            || node.ty.dtype != e2enc_ir::DType::F32
        {
            continue;
        }
        let Some(r) = readers.get(&n) else { continue };
        let pack_after = r
            .iter()
            .copied()
            .filter(|&p| p < n_forward)
            .max()
            .unwrap_or(pos);
        let mut groups: Vec<(usize, usize)> = Vec::new();
        for &p in r.iter().filter(|&&p| p >= n_forward) {
            match groups.last_mut() {
                Some(g) if p - g.1 <= window => g.1 = p,
                _ => groups.push((p, p)),
            }
        }
        if !groups.is_empty() {
            out.push(Stash {
                node: n,
                pack_after,
                groups,
            });
        }
    }
    out
}

/// The [`Stash`]es' events by position in the order, as the executors and [`plan`] play them:
/// before an op, the unpacks it needs (`unpack`), each followed by the free of its packed copy
/// when that was its last group (`packed_free`); after the op, the frees of the values it read
/// last, then the packs (`pack`: the packed copy is made while the f32 buffer is still there,
/// which is then freed), then the unpacked buffers that are done (`unpacked_free`).
#[derive(Clone, Debug, Default)]
pub struct StashEvents {
    pub unpack: HashMap<usize, Vec<NodeId>>,
    pub pack: HashMap<usize, Vec<NodeId>>,
    pub unpacked_free: HashMap<usize, Vec<NodeId>>,
    pub packed_free: HashMap<usize, Vec<NodeId>>,
    /// Every stashed value.
    pub stashed: HashSet<NodeId>,
}

impl StashEvents {
    pub fn new(stashes: &[Stash]) -> StashEvents {
        let mut e = StashEvents::default();
        for s in stashes {
            e.stashed.insert(s.node);
            e.pack.entry(s.pack_after).or_default().push(s.node);
            for &(a, b) in &s.groups {
                e.unpack.entry(a).or_default().push(s.node);
                e.unpacked_free.entry(b).or_default().push(s.node);
            }
            if let Some(&(a, _)) = s.groups.last() {
                e.packed_free.entry(a).or_default().push(s.node);
            }
        }
        e
    }

    /// The values of `events` at `pos` (none when absent).
    pub fn at<'a>(&self, events: &'a HashMap<usize, Vec<NodeId>>, pos: usize) -> &'a [NodeId] {
        events.get(&pos).map_or(&[], Vec::as_slice)
    }
}

/// Bytes of a value packed to bfloat16.
pub fn packed_bytes(g: &Graph, n: NodeId) -> usize {
    g.node(n).ty.numel() * 2
}

/// Whether the backward pass recomputes `op` rather than reading its kept output.
fn cheap(op: &Op) -> bool {
    matches!(
        op,
        Op::InstanceNorm { .. }
            | Op::LeakyRelu { .. }
            | Op::Concat
            | Op::MaxPool3d(_)
            | Op::ConvTranspose3d(_)
    )
}

/// Rewrites `g` so that no op outside `fwd` (the forward part: the ancestors of the forward
/// outputs) reads the output of a cheap forward op; it reads a copy instead (module docs).
/// Backward ops are visited in `g`'s topological order; a copy made for one reader is reused
/// by a later reader at most `window` backward ops after the previous one, else that reader
/// gets a fresh copy (0: every reader its own). Returns the copies and the backward ops in
/// that order (rewired ones under their new ids), for [`schedule`].
pub fn add_recompute(
    g: &mut Graph,
    fwd: &HashSet<NodeId>,
    window: usize,
) -> Result<(HashSet<NodeId>, Vec<NodeId>), IrError> {
    let outputs: HashSet<NodeId> = g.outputs().iter().map(|o| o.1).collect();
    let is_cheap =
        |g: &Graph, n: NodeId| fwd.contains(&n) && !outputs.contains(&n) && cheap(&g.node(n).op);
    let mut backward: Vec<NodeId> = g
        .topo_order()?
        .into_iter()
        .filter(|n| !fwd.contains(n))
        .collect();
    struct Copies<'a> {
        /// Original -> (copy, position of its last reader so far).
        memo: HashMap<NodeId, (NodeId, usize)>,
        made: HashSet<NodeId>,
        window: usize,
        is_cheap: &'a dyn Fn(&Graph, NodeId) -> bool,
    }
    impl Copies<'_> {
        fn copy_of(&mut self, g: &mut Graph, n: NodeId, pos: usize) -> Result<NodeId, IrError> {
            if let Some((c, last)) = self.memo.get_mut(&n) {
                if pos - *last <= self.window {
                    *last = pos;
                    return Ok(*c);
                }
            }
            let ops = self.operands(g, n, pos)?;
            let node = g.node(n);
            let (op, label) = (node.op.clone(), node.label.clone());
            let c = g.add(op, &ops, label.map(|l| format!("{l}.recompute")))?;
            self.memo.insert(n, (c, pos));
            self.made.insert(c);
            Ok(c)
        }

        /// `n`'s operands with each cheap forward value replaced by its copy.
        fn operands(
            &mut self,
            g: &mut Graph,
            n: NodeId,
            pos: usize,
        ) -> Result<Vec<NodeId>, IrError> {
            let mut ops = g.operands(n);
            for o in ops.iter_mut() {
                if (self.is_cheap)(g, *o) {
                    *o = self.copy_of(g, *o, pos)?;
                }
            }
            Ok(ops)
        }
    }
    let mut copies = Copies {
        memo: HashMap::new(),
        made: HashSet::new(),
        window,
        is_cheap: &is_cheap,
    };
    for (pos, u) in backward.iter_mut().enumerate() {
        if !g.operands(*u).iter().any(|&o| is_cheap(g, o)) {
            continue;
        }
        let ops = copies.operands(g, *u, pos)?;
        let node = g.node(*u);
        let (op, label) = (node.op.clone(), node.label.clone());
        let new = g.add(op, &ops, label)?;
        g.replace_all_uses(*u, new);
        g.remove_node(*u);
        *u = new;
    }
    Ok((copies.made, backward))
}

/// The executor's order: the forward part (`fwd`) in `g`'s stable topological order, then the
/// `backward` ops in their order, each recomputed copy (`late`) placed right before the first
/// op that reads it. Returns the order and the length of its forward part.
pub fn schedule(
    g: &Graph,
    fwd: &HashSet<NodeId>,
    backward: &[NodeId],
    late: &HashSet<NodeId>,
) -> Result<(Vec<NodeId>, usize), IrError> {
    let order = g.topo_order()?;
    let mut out: Vec<NodeId> = order.iter().copied().filter(|n| fwd.contains(n)).collect();
    let n_forward = out.len();
    let mut placed: HashSet<NodeId> = HashSet::new();
    fn place(
        g: &Graph,
        n: NodeId,
        late: &HashSet<NodeId>,
        placed: &mut HashSet<NodeId>,
        out: &mut Vec<NodeId>,
    ) {
        for o in g.operands(n) {
            if late.contains(&o) && !placed.contains(&o) {
                place(g, o, late, placed, out);
            }
        }
        placed.insert(n);
        out.push(n);
    }
    for &n in backward {
        place(g, n, late, &mut placed, &mut out);
    }
    if out.len() != g.len() {
        return Err(IrError::Shape {
            node: g.name.clone(),
            msg: format!(
                "the training schedule has {} ops, the graph {}",
                out.len(),
                g.len()
            ),
        });
    }
    Ok((out, n_forward))
}

/// The position in `order` of each value's last reader (values nothing reads are absent).
pub fn last_uses(g: &Graph, order: &[NodeId]) -> HashMap<NodeId, usize> {
    let mut last = HashMap::new();
    for (pos, &n) in order.iter().enumerate() {
        for o in g.operands(n) {
            last.insert(o, pos);
        }
    }
    last
}

/// Bytes of node `n`'s value that the executor holds (weights are the caller's: 0).
pub fn value_bytes(g: &Graph, n: NodeId) -> usize {
    let node = g.node(n);
    if matches!(node.op, Op::Weight { .. }) {
        return 0;
    }
    node.ty.size_bytes()
}

/// The bytes a step holds over its order (see [`plan`]).
#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    /// The most bytes of values live at once (an op's operands and its output count together).
    pub peak_bytes: usize,
    /// Position in the order, and the op, where the peak is reached.
    pub peak_at: usize,
    pub peak_op: String,
    /// Whether the peak is in the backward part.
    pub peak_in_backward: bool,
    /// The values live at the peak, largest first: (description, bytes).
    pub peak_values: Vec<(String, usize)>,
    /// Bytes of forward values still live when the backward part starts.
    pub kept_forward_bytes: usize,
    /// Bytes live after each op of the order (before the frees that follow it).
    pub live: Vec<usize>,
}

impl MemoryPlan {
    /// A few lines for `--profile` and the tools: the peak, where, and its largest values.
    pub fn summary(&self, largest: usize) -> String {
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        let mut s = format!(
            "planned peak {:.2} GiB of values at op {} ({}, {} pass); {:.2} GiB of forward values \
             kept for the backward pass",
            gib(self.peak_bytes),
            self.peak_at,
            self.peak_op,
            if self.peak_in_backward {
                "backward"
            } else {
                "forward"
            },
            gib(self.kept_forward_bytes)
        );
        for (what, b) in self.peak_values.iter().take(largest) {
            s.push_str(&format!("\n  {:>8.1} MiB  {what}", *b as f64 / 1048576.0));
        }
        s
    }
}

/// Simulates the executor on `order` (forward part: the first `n_forward` ops): each op's value
/// is allocated when it runs and, unless `keep` holds it, dropped after its last reader (or
/// right away when nothing reads it); with `keep_forward`, forward values instead stay until
/// the end. The step's inputs count with their nodes; the loss's own temporaries and the
/// caller's weights are outside the plan.
pub fn plan(
    g: &Graph,
    order: &[NodeId],
    n_forward: usize,
    keep: &HashSet<NodeId>,
    keep_forward: bool,
    stashed: &[Stash],
) -> MemoryPlan {
    let mut last = last_uses(g, order);
    // A stashed value's f32 buffer dies when it is packed; the rest are the stash's events.
    let ev = StashEvents::new(stashed);
    for s in stashed {
        last.insert(s.node, usize::MAX);
    }
    let mut packed_set: HashSet<NodeId> = HashSet::new();
    let forward: HashSet<NodeId> = order[..n_forward].iter().copied().collect();
    let end = order.len();
    let dies = |n: NodeId| -> usize {
        if keep.contains(&n) || (keep_forward && forward.contains(&n)) {
            end
        } else {
            last.get(&n).copied().unwrap_or(0)
        }
    };
    let mut free_at: HashMap<usize, Vec<NodeId>> = HashMap::new();
    let mut live_set: HashSet<NodeId> = HashSet::new();
    let mut bytes = 0usize;
    let mut p = MemoryPlan::default();
    let record = |p: &mut MemoryPlan,
                  bytes: usize,
                  pos: usize,
                  n: NodeId,
                  live_set: &HashSet<NodeId>,
                  packed_set: &HashSet<NodeId>| {
        if bytes > p.peak_bytes {
            p.peak_bytes = bytes;
            p.peak_at = pos;
            p.peak_op = g.describe(n);
            p.peak_in_backward = pos >= n_forward;
            let mut v: Vec<(String, usize)> = live_set
                .iter()
                .map(|&m| (g.describe(m), value_bytes(g, m)))
                .chain(
                    packed_set
                        .iter()
                        .map(|&m| (format!("{} (bf16)", g.describe(m)), packed_bytes(g, m))),
                )
                .filter(|v| v.1 > 0)
                .collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            p.peak_values = v;
        }
    };
    for (pos, &n) in order.iter().enumerate() {
        for &m in ev.at(&ev.unpack, pos) {
            bytes += value_bytes(g, m);
            live_set.insert(m);
        }
        for &m in ev.at(&ev.packed_free, pos) {
            bytes -= packed_bytes(g, m);
            packed_set.remove(&m);
        }
        let b = value_bytes(g, n);
        bytes += b;
        live_set.insert(n);
        // A value nothing reads dies right after its op, like one read only by that op.
        let d = dies(n).max(pos);
        if d != usize::MAX {
            free_at.entry(d).or_default().push(n);
        }
        p.live.push(bytes);
        record(&mut p, bytes, pos, n, &live_set, &packed_set);
        if let Some(dead) = free_at.remove(&pos) {
            for m in dead {
                bytes -= value_bytes(g, m);
                live_set.remove(&m);
            }
        }
        for &m in ev.at(&ev.pack, pos) {
            bytes += packed_bytes(g, m);
            packed_set.insert(m);
            record(&mut p, bytes, pos, n, &live_set, &packed_set);
            bytes -= value_bytes(g, m);
            live_set.remove(&m);
        }
        for &m in ev.at(&ev.unpacked_free, pos) {
            bytes -= value_bytes(g, m);
            live_set.remove(&m);
        }
        if pos + 1 == n_forward {
            p.kept_forward_bytes = bytes;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::{from_bf16, to_bf16, Saved};

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_specials() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1); a hair above goes up.
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), to_bf16(1.0));
        assert_eq!(
            from_bf16(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
            1.0 + 2f32.powi(-7)
        );
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
        assert_eq!(
            from_bf16(to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert_eq!(to_bf16(0.0), 0);
        assert_eq!(to_bf16(-0.0), 0x8000);
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::NEG_INFINITY)), f32::NEG_INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        // A NaN whose payload sits in the low half only must not become an infinity.
        assert!(from_bf16(to_bf16(f32::from_bits(0x7f80_0001))).is_nan());
        // Relative error at most 2^-8 over a sweep of normal values (none of them a tie), and
        // the nearest bfloat16 (adding half an ulp and truncating, right away from ties).
        let mut x = 1.234e-30f32;
        while x < 1e30 {
            for v in [x, -x] {
                let r = from_bf16(to_bf16(v));
                assert!(((r - v) / v).abs() <= 2f32.powi(-8), "{v} -> {r}");
                assert_eq!(
                    r,
                    f32::from_bits((v.to_bits() + 0x8000) & 0xffff_0000),
                    "{v}"
                );
            }
            x *= 1.0137;
        }
        assert_eq!("bf16".parse::<Saved>(), Ok(Saved::Bf16));
        assert!("fp16".parse::<Saved>().unwrap_err().contains("f32 or bf16"));
    }
}
