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
) -> MemoryPlan {
    let last = last_uses(g, order);
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
    for (pos, &n) in order.iter().enumerate() {
        let b = value_bytes(g, n);
        bytes += b;
        live_set.insert(n);
        // A value nothing reads dies right after its op, like one read only by that op.
        let d = dies(n).max(pos);
        free_at.entry(d).or_default().push(n);
        p.live.push(bytes);
        if bytes > p.peak_bytes {
            p.peak_bytes = bytes;
            p.peak_at = pos;
            p.peak_op = g.describe(n);
            p.peak_in_backward = pos >= n_forward;
            let mut v: Vec<(String, usize)> = live_set
                .iter()
                .map(|&m| (g.describe(m), value_bytes(g, m)))
                .filter(|v| v.1 > 0)
                .collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            p.peak_values = v;
        }
        if let Some(dead) = free_at.remove(&pos) {
            for m in dead {
                bytes -= value_bytes(g, m);
                live_set.remove(&m);
            }
        }
        if pos + 1 == n_forward {
            p.kept_forward_bytes = bytes;
        }
    }
    p
}
