//! The verifier: checks every invariant of a [`Graph`] and reports all violations at once, each
//! tagged with a stable rule name and located at a node as [`Graph::describe`] spells it.
//!
//! The parser, the model builder and every pass may produce a malformed graph; this is the one
//! place that says so. It never panics, however broken the graph (a node with broken operands is
//! reported, never indexed), provided [`shape::infer`] does not: result types are re-derived
//! through it, the single source of type truth, never re-implemented here. Each check is
//! local to one node, so one fault yields one violation where it lies. The rules, in the order
//! their violations are reported (nodes in index order, outputs in output order, within each):
//!
//! 1. `cycle`: the graph is acyclic. One violation per cycle (strongly connected component of
//!    more than one node, or a node that is its own operand), at its lowest node, listing them all.
//! 2. `operand-slots`: the slots of a node's `n` operand edges are exactly `0..n`, no gap and no
//!    duplicate.
//! 3. `arity`: a node's operand count (its number of operand edges) is accepted by `Op::arity`;
//!    this also makes inputs and weights leaves.
//! 4. `type`: a non-leaf node's stored type equals `shape::infer(op, operand types)`; the message
//!    carries the inference error, or the inferred and the stored type. Checked only where
//!    `operand-slots` and `arity` hold, so that one fault is reported once (and so that
//!    inference, which indexes operands by position, e.g. `FusedConvAttrs::operand_slots`,
//!    only ever sees as many operands as the op's attributes call for).
//! 5. `leaf-type`: input and weight shapes have no zero extent. Weights may be `f32` or `i32`
//!    (the kernel indices of kernel-sparse `fused_conv3d` nodes); whether a use accepts the
//!    dtype is the `type` rule's business (shape inference wants f32 data and i32 indices).
//! 6. `size`: every node's type holds at most `isize::MAX` bytes, so element counts and buffer
//!    sizes computed downstream (interpreter, memory plan) never overflow.
//! 7. `name`: input, weight and output names are non-empty.
//! 8. `duplicate-input`, `duplicate-weight`, `duplicate-output`: one input node per input name,
//!    one weight node per weight name (users share it), one output per output name; reported at
//!    every occurrence after the first.
//! 9. `dangling-output`: every output names a node of the graph.
//! 10. `no-outputs`: the graph has at least one output (graph-level, no node).
//!
//! With a weight store ([`violations_with_weights`]), after all of the above:
//!
//! 11. `missing-weight`: every weight node's name is in the store.
//! 12. `weight-type`: the stored tensor's dtype and shape equal the weight node's declared type.
//!
//! Deliberately not invariants: nodes no output depends on (dead code is legal until a pass
//! prunes it), unused inputs, and store tensors no node references (a store may hold more than
//! one graph needs, e.g. the weights of dropped heads).

use std::collections::HashMap;
use std::fmt;

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::shape;
use crate::weights::Weights;

/// One broken invariant, located at a node when it concerns one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The node at fault as `Graph::describe` spells it, or `None` for graph-level rules.
    pub node: Option<String>,
    /// Short stable name of the invariant (see the module doc).
    pub rule: &'static str,
    pub msg: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "[{}] {n}: {}", self.rule, self.msg),
            None => write!(f, "[{}] {}", self.rule, self.msg),
        }
    }
}

/// Every violation of the structural rules (1 to 10 of the module doc), in a deterministic order.
pub fn violations(g: &Graph) -> Vec<Violation> {
    let mut out = Vec::new();
    cycles(g, &mut out);
    operand_slots(g, &mut out);
    arity(g, &mut out);
    types(g, &mut out);
    leaf_types(g, &mut out);
    sizes(g, &mut out);
    names(g, &mut out);
    duplicates(g, &mut out);
    outputs(g, &mut out);
    out
}

/// `Ok` when [`violations`] finds nothing, else `IrError::Verify` with all of them.
pub fn verify(g: &Graph) -> Result<(), IrError> {
    into_result(violations(g))
}

/// [`violations`] followed by the weight-store rules (`missing-weight`, `weight-type`).
pub fn violations_with_weights(g: &Graph, w: &Weights) -> Vec<Violation> {
    let mut out = violations(g);
    for (name, id) in g.weights() {
        let declared = &g.node(id).ty;
        match w.get(&name) {
            None => out.push(at(
                g,
                id,
                "missing-weight",
                format!("weight `{name}` is not in the weight store"),
            )),
            Some(t) if t.ty() != *declared => out.push(at(
                g,
                id,
                "weight-type",
                format!(
                    "the store holds `{name}` as {}, the node declares {declared}",
                    t.ty()
                ),
            )),
            Some(_) => {}
        }
    }
    out
}

/// `Ok` when [`violations_with_weights`] finds nothing, else `IrError::Verify` with all of them.
pub fn verify_with_weights(g: &Graph, w: &Weights) -> Result<(), IrError> {
    into_result(violations_with_weights(g, w))
}

fn into_result(v: Vec<Violation>) -> Result<(), IrError> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(IrError::Verify(v))
    }
}

fn at(g: &Graph, id: NodeId, rule: &'static str, msg: String) -> Violation {
    Violation {
        node: Some(g.describe(id)),
        rule,
        msg,
    }
}

fn is_leaf(op: &Op) -> bool {
    matches!(op, Op::Input { .. } | Op::Weight { .. })
}

/// The operands of `id` when its slots are exactly `0..n`, else `None`.
fn wellformed_operands(g: &Graph, id: NodeId) -> Option<Vec<NodeId>> {
    let slots = g.operand_slots(id);
    let ok = slots
        .iter()
        .enumerate()
        .all(|(i, &(s, _))| usize::try_from(s).is_ok_and(|s| s == i));
    ok.then(|| slots.into_iter().map(|(_, o)| o).collect())
}

/// Rule `cycle`. Kosaraju's algorithm is iterative, so a deep graph cannot overflow the stack.
fn cycles(g: &Graph, out: &mut Vec<Violation>) {
    let mut sccs: Vec<Vec<NodeId>> = petgraph::algo::kosaraju_scc(g.petgraph())
        .into_iter()
        .map(|c| {
            let mut c: Vec<NodeId> = c.into_iter().map(NodeId).collect();
            c.sort();
            c
        })
        .filter(|c| match c.as_slice() {
            [] => false,
            [only] => g.operand_slots(*only).iter().any(|&(_, o)| o == *only),
            _ => true,
        })
        .collect();
    sccs.sort();
    for c in sccs {
        if let Some(&first) = c.first() {
            let list: Vec<String> = c.iter().map(|&id| g.describe(id)).collect();
            let msg = format!("on a cycle through {}", list.join(", "));
            out.push(at(g, first, "cycle", msg));
        }
    }
}

/// Rule `operand-slots`: names every duplicated and every missing slot.
fn operand_slots(g: &Graph, out: &mut Vec<Violation>) {
    for id in g.node_ids() {
        if wellformed_operands(g, id).is_some() {
            continue;
        }
        let slots = g.operand_slots(id);
        let n = slots.len();
        let mut by_slot: std::collections::BTreeMap<u32, Vec<NodeId>> = Default::default();
        for &(s, o) in &slots {
            by_slot.entry(s).or_default().push(o);
        }
        let mut faults = Vec::new();
        for (s, ops) in &by_slot {
            if ops.len() > 1 {
                let names: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
                faults.push(format!(
                    "slot {s} is taken {} times ({})",
                    ops.len(),
                    names.join(", ")
                ));
            }
        }
        for s in 0..n {
            if !u32::try_from(s).is_ok_and(|s| by_slot.contains_key(&s)) {
                faults.push(format!("slot {s} is missing"));
            }
        }
        let seen: Vec<u32> = slots.iter().map(|&(s, _)| s).collect();
        let msg = format!(
            "operand slots {seen:?} are not 0..{n}: {}",
            faults.join("; ")
        );
        out.push(at(g, id, "operand-slots", msg));
    }
}

/// Rule `arity`.
fn arity(g: &Graph, out: &mut Vec<Violation>) {
    for id in g.node_ids() {
        let op = &g.node(id).op;
        let n = g.operand_slots(id).len();
        if !op.arity().accepts(n) {
            let msg = format!("{} takes {} operand(s), has {n}", op.mnemonic(), op.arity());
            out.push(at(g, id, "arity", msg));
        }
    }
}

/// Rule `type`: only where the operand list is well formed and of an accepted length.
fn types(g: &Graph, out: &mut Vec<Violation>) {
    for id in g.node_ids() {
        let node = g.node(id);
        if is_leaf(&node.op) {
            continue;
        }
        let Some(ops) = wellformed_operands(g, id) else {
            continue;
        };
        if !node.op.arity().accepts(ops.len()) {
            continue;
        }
        let tys: Vec<_> = ops.iter().map(|&o| &g.node(o).ty).collect();
        match shape::infer(&node.op, &tys) {
            Err(e) => out.push(at(g, id, "type", format!("shape inference fails: {e}"))),
            Ok(t) if t != node.ty => out.push(at(
                g,
                id,
                "type",
                format!("stored type {} differs from the inferred {t}", node.ty),
            )),
            Ok(_) => {}
        }
    }
}

/// Rule `leaf-type`.
fn leaf_types(g: &Graph, out: &mut Vec<Violation>) {
    for id in g.node_ids() {
        let node = g.node(id);
        let kind = match node.op {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            _ => continue,
        };
        let ty = &node.ty;
        if ty.shape.contains(&0) {
            out.push(at(
                g,
                id,
                "leaf-type",
                format!("{kind} type {ty} has a zero extent"),
            ));
        }
    }
}

/// Rule `size`.
fn sizes(g: &Graph, out: &mut Vec<Violation>) {
    for id in g.node_ids() {
        let ty = &g.node(id).ty;
        let bytes = ty
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(ty.dtype.size_bytes()));
        let fits = matches!(bytes, Some(b) if b <= isize::MAX as usize);
        if !fits {
            let msg = format!("type {ty} holds more than isize::MAX bytes");
            out.push(at(g, id, "size", msg));
        }
    }
}

/// Rule `name`: inputs and weights in index order, then outputs.
fn names(g: &Graph, out: &mut Vec<Violation>) {
    for id in g.node_ids() {
        match &g.node(id).op {
            Op::Input { name } if name.is_empty() => {
                out.push(at(g, id, "name", "input has an empty name".into()))
            }
            Op::Weight { name } if name.is_empty() => {
                out.push(at(g, id, "name", "weight has an empty name".into()))
            }
            _ => {}
        }
    }
    for (name, id) in g.outputs() {
        if name.is_empty() {
            out.push(at(g, *id, "name", "an output has an empty name".into()));
        }
    }
}

/// Rules `duplicate-input`, `duplicate-weight`, `duplicate-output`.
fn duplicates(g: &Graph, out: &mut Vec<Violation>) {
    for (rule, kind, leaves) in [
        ("duplicate-input", "input", g.inputs()),
        ("duplicate-weight", "weight", g.weights()),
    ] {
        let mut first: HashMap<&str, NodeId> = HashMap::new();
        for (name, id) in &leaves {
            match first.get(name.as_str()) {
                Some(&f) => {
                    let msg = format!("{kind} name `{name}` is already taken by {}", g.describe(f));
                    out.push(at(g, *id, rule, msg));
                }
                None => {
                    first.insert(name, *id);
                }
            }
        }
    }
    let mut first: HashMap<&str, NodeId> = HashMap::new();
    for (name, id) in g.outputs() {
        match first.get(name.as_str()) {
            Some(&f) => {
                let msg = format!(
                    "output name `{name}` is already taken by an earlier output (naming {})",
                    g.describe(f)
                );
                out.push(at(g, *id, "duplicate-output", msg));
            }
            None => {
                first.insert(name, *id);
            }
        }
    }
}

/// Rules `dangling-output` and `no-outputs`.
fn outputs(g: &Graph, out: &mut Vec<Violation>) {
    for (name, id) in g.outputs() {
        if !g.contains(*id) {
            let msg = format!("output `{name}` names a node that is not in the graph");
            out.push(at(g, *id, "dangling-output", msg));
        }
    }
    if g.outputs().is_empty() {
        out.push(Violation {
            node: None,
            rule: "no-outputs",
            msg: format!("graph `{}` has no outputs", g.name),
        });
    }
}
