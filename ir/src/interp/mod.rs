//! The reference interpreter: the oracle every optimized graph and every backend is compared to.
//!
//! [`run`] evaluates only the ancestors of the requested outputs, in the graph's stable
//! topological order, with the naive kernels of [`ops`] (f32 storage, f64 accumulation). Each
//! computed value is dropped right after its last use, because E2ENet activations are large and a
//! whole-graph evaluation would otherwise hold every one of them at once; inputs and weights are
//! borrowed, never copied. Everything a caller can get wrong is checked up front or at the node
//! concerned and reported as an error naming the input, output, tensor or node:
//!
//! - every input the graph declares must be given with exactly its declared dtype and shape, and
//!   no other input may be given (checked even for inputs the requested outputs do not need: the
//!   inputs are the graph's interface);
//! - every requested output name must exist (an empty list means all graph outputs);
//! - every weight that is needed must exist in the store with exactly its declared type (weights
//!   only reachable from outputs that were not requested are not looked up);
//! - each computed value must have the type its node declares.

mod conv;
mod fused;
mod grad;
pub mod ops;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::weights::Weights;

/// What one evaluation did, for tests and diagnostics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Nodes evaluated, leaves (inputs and weights) included.
    pub evaluated: usize,
    /// Largest number of computed (owned) values alive at once, the one being produced included.
    pub peak_live: usize,
    /// Largest number of bytes held by computed values at once (inputs and weights excluded).
    pub peak_live_bytes: usize,
}

/// Evaluates the graph outputs named in `outputs` (all of them when empty) on `inputs` and the
/// weights `w`, returning them by name.
pub fn run(
    g: &Graph,
    w: &Weights,
    inputs: &BTreeMap<String, Tensor>,
    outputs: &[&str],
) -> Result<BTreeMap<String, Tensor>, IrError> {
    run_with_stats(g, w, inputs, outputs).map(|(out, _)| out)
}

/// [`run`], also reporting what was evaluated and the peak of live intermediate values.
pub fn run_with_stats(
    g: &Graph,
    w: &Weights,
    inputs: &BTreeMap<String, Tensor>,
    outputs: &[&str],
) -> Result<(BTreeMap<String, Tensor>, RunStats), IrError> {
    let wanted = resolve_outputs(g, outputs)?;
    check_inputs(g, inputs)?;

    let roots: Vec<NodeId> = wanted.iter().map(|(_, id)| *id).collect();
    let needed = g.ancestors(&roots);
    let order: Vec<NodeId> = g
        .topo_order()?
        .into_iter()
        .filter(|id| needed.contains(id))
        .collect();
    // How many operand slots of needed nodes still read each value.
    let mut uses: HashMap<NodeId, usize> = HashMap::new();
    for &id in &order {
        for o in g.operands(id) {
            *uses.entry(o).or_default() += 1;
        }
    }
    let pinned: HashSet<NodeId> = roots.iter().copied().collect();

    let mut live: HashMap<NodeId, Cow<'_, Tensor>> = HashMap::new();
    let mut stats = RunStats::default();
    let (mut owned, mut owned_bytes) = (0usize, 0usize);
    for id in order {
        let value = eval_node(g, w, inputs, &live, id)?;
        stats.evaluated += 1;
        if let Cow::Owned(t) = &value {
            owned += 1;
            owned_bytes += t.ty().size_bytes();
            stats.peak_live = stats.peak_live.max(owned);
            stats.peak_live_bytes = stats.peak_live_bytes.max(owned_bytes);
        }
        for o in g.operands(id) {
            let left = uses.get_mut(&o).map(|u| {
                *u -= 1;
                *u
            });
            if left == Some(0) && !pinned.contains(&o) {
                if let Some(Cow::Owned(t)) = live.remove(&o) {
                    owned -= 1;
                    owned_bytes -= t.ty().size_bytes();
                }
            }
        }
        live.insert(id, value);
    }

    // Move each result out, cloning only when one node is requested under several names.
    let mut remaining: HashMap<NodeId, usize> = HashMap::new();
    for (_, id) in &wanted {
        *remaining.entry(*id).or_default() += 1;
    }
    let mut out = BTreeMap::new();
    for (name, id) in wanted {
        let count = remaining.entry(id).or_default();
        *count -= 1;
        let value = if *count == 0 {
            live.remove(&id).map(Cow::into_owned)
        } else {
            live.get(&id).map(|v| v.as_ref().clone())
        };
        let value = value.ok_or_else(|| IrError::Interp {
            node: g.describe(id),
            msg: format!("the value of output `{name}` was not computed"),
        })?;
        out.insert(name, value);
    }
    Ok((out, stats))
}

/// The requested `(name, node)` pairs, in request order (graph order for an empty request).
fn resolve_outputs(g: &Graph, outputs: &[&str]) -> Result<Vec<(String, NodeId)>, IrError> {
    let wanted: Vec<(String, NodeId)> = if outputs.is_empty() {
        g.outputs().to_vec()
    } else {
        let mut v = Vec::with_capacity(outputs.len());
        for &name in outputs {
            let id = g.output(name).ok_or_else(|| IrError::Interp {
                node: format!("output `{name}`"),
                msg: format!(
                    "graph `{}` has no such output (its outputs: {})",
                    g.name,
                    list(g.outputs().iter().map(|(n, _)| n.as_str()))
                ),
            })?;
            v.push((name.to_string(), id));
        }
        v
    };
    for (name, id) in &wanted {
        if !g.contains(*id) {
            return Err(IrError::Interp {
                node: format!("output `{name}`"),
                msg: format!("refers to {id}, which is not in the graph"),
            });
        }
    }
    Ok(wanted)
}

/// Every declared input is given with exactly its declared type, and nothing else is given.
fn check_inputs(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Result<(), IrError> {
    let declared = g.inputs();
    let input_err = |name: &str, msg: String| IrError::Interp {
        node: format!("input `{name}`"),
        msg,
    };
    for (name, id) in &declared {
        let want = &g.node(*id).ty;
        match inputs.get(name) {
            None => {
                return Err(input_err(
                    name,
                    format!("missing: graph `{}` declares it as {want}", g.name),
                ))
            }
            Some(t) if t.ty() != *want => {
                return Err(input_err(name, format!("expected {want}, got {}", t.ty())))
            }
            Some(_) => {}
        }
    }
    for name in inputs.keys() {
        if !declared.iter().any(|(n, _)| n == name) {
            return Err(input_err(
                name,
                format!(
                    "not an input of graph `{}` (its inputs: {})",
                    g.name,
                    list(declared.iter().map(|(n, _)| n.as_str()))
                ),
            ));
        }
    }
    Ok(())
}

/// The value of node `id`: a borrowed input or weight, or a freshly computed tensor.
fn eval_node<'a>(
    g: &Graph,
    w: &'a Weights,
    inputs: &'a BTreeMap<String, Tensor>,
    live: &HashMap<NodeId, Cow<'a, Tensor>>,
    id: NodeId,
) -> Result<Cow<'a, Tensor>, IrError> {
    let node = g.node(id);
    let at = |msg: String| IrError::Interp {
        node: g.describe(id),
        msg,
    };
    match &node.op {
        Op::Input { name } => inputs
            .get(name)
            .map(Cow::Borrowed)
            .ok_or_else(|| at(format!("input `{name}` was not provided"))),
        Op::Weight { name } => {
            let t = w.get(name).ok_or_else(|| {
                IrError::tensor(
                    name,
                    format!("not in the weight store (used by {})", g.describe(id)),
                )
            })?;
            if t.ty() != node.ty {
                return Err(IrError::tensor(
                    name,
                    format!(
                        "the graph declares {}, the weight store holds {}",
                        node.ty,
                        t.ty()
                    ),
                ));
            }
            Ok(Cow::Borrowed(&**t))
        }
        op => {
            let operands = g.operands(id);
            let mut args = Vec::with_capacity(operands.len());
            for o in &operands {
                let v = live
                    .get(o)
                    .ok_or_else(|| at(format!("operand {} has no value", g.describe(*o))))?;
                args.push(v.as_ref());
            }
            let t = ops::eval(op, &args).map_err(|e| match e {
                IrError::Interp { msg, .. } => at(msg),
                other => other,
            })?;
            if t.ty() != node.ty {
                return Err(at(format!(
                    "computed {} but the node declares {}",
                    t.ty(),
                    node.ty
                )));
            }
            Ok(Cow::Owned(t))
        }
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
