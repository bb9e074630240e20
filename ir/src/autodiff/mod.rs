//! Reverse-mode autodiff on the IR: [`training_graph`] turns a forward graph into one graph that
//! computes the forward outputs and the gradients of every weight (and optionally of every input).
//!
//! The result is a copy of the forward graph (node ids unchanged, forward outputs kept under
//! their names) plus, per requested output `out`, an input `grad.<out>` of the output's type (the
//! incoming gradient, e.g. of a loss computed outside the graph) and, per f32 weight `w` that
//! receives a gradient, an output `grad.<w>`. So the scalar being differentiated is
//! `L = Σ_out <out, grad.out>`.
//!
//! Nodes are visited in reverse topological order among the ancestors of the requested outputs.
//! A node's gradient is its list of contributions (one per use by a user that propagates into
//! it, plus the `grad.<out>` input when it is a requested output) summed with a chain of `Add`
//! nodes. Only values that depend on a weight (or, with `input_grads`, on an input) get
//! gradients, so e.g. the first conv never computes the gradient of the image. How each op's
//! backward is formed (`x` the forward input, `g` the result's gradient; rules in `rules.rs`):
//!
//! - `Conv3d` / `ConvTranspose3d` `(x, w[, b])`: `dx = ConvBackwardData(g, w)`,
//!   `dw = ConvBackwardWeight(x, g)` (with the forward geometry, `transposed`, and `x`'s extent),
//!   `db = ChannelSum(g)`;
//! - `DepthShift`: `dx = DepthShiftBackward(g)`, the opposite shift (its adjoint);
//! - `InstanceNorm` `(x, gamma, beta)`: `dx = InstanceNormBackward(x, gamma, g)`,
//!   `dgamma = InstanceNormGammaGrad(x, g)`, `dbeta = ChannelSum(g)`;
//! - `LeakyRelu`: `dx = LeakyReluBackward(x, g)`; `MaxPool3d`: `dx = MaxPoolBackward(x, g)`;
//! - `Concat`: operand `k` gets `SelectChannels { axis: 1, ranges: [its channel range] }(g)`
//!   (`g` itself when there is one operand); `Add`: both operands get `g`;
//! - anything else (`Softmax`, `Argmax`, `SelectChannels`, `FusedConv3d`, the training ops) is
//!   an error naming the node, but only when a gradient would have to flow through it.
//!
//! The result passes the verifier (checked before returning).

mod rules;

use std::collections::{HashMap, HashSet};

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::types::DType;
use crate::verify;

/// A forward graph with its backward graph.
#[derive(Clone, Debug)]
pub struct TrainGraph {
    pub graph: Graph,
    /// `(forward output, name of its gradient input)`, in request order.
    pub grad_inputs: Vec<(String, String)>,
    /// `(weight, name of the output holding its gradient)`, in weight index order.
    pub weight_grads: Vec<(String, String)>,
    /// `(input, name of the output holding its gradient)`; empty unless asked for
    /// ([`training_graph_with`]).
    pub input_grads: Vec<(String, String)>,
}

/// The name of the gradient input or output of `name`: `grad.<name>`.
pub fn grad_name(name: &str) -> String {
    format!("grad.{name}")
}

/// The training graph of `fwd` for the forward outputs `outputs` (weight gradients only).
pub fn training_graph(fwd: &Graph, outputs: &[&str]) -> Result<TrainGraph, IrError> {
    training_graph_with(fwd, outputs, false)
}

/// [`training_graph`], also with an output `grad.<input>` for every f32 input that receives a
/// gradient when `input_grads` is set.
pub fn training_graph_with(
    fwd: &Graph,
    outputs: &[&str],
    input_grads: bool,
) -> Result<TrainGraph, IrError> {
    let fail = |msg: String| IrError::Shape {
        node: format!("autodiff of graph `{}`", fwd.name),
        msg,
    };
    if outputs.is_empty() {
        return Err(fail("no outputs to differentiate were requested".into()));
    }
    let mut g = fwd.clone();
    let order = fwd.topo_order()?;
    let taken_inputs: HashSet<String> = fwd.inputs().into_iter().map(|(n, _)| n).collect();
    let mut taken_outputs: HashSet<String> = fwd.outputs().iter().map(|(n, _)| n.clone()).collect();

    // Seed: one gradient input per requested output.
    let mut contrib: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    let mut grad_inputs = Vec::new();
    let mut roots = Vec::new();
    for &out in outputs {
        let id = fwd
            .output(out)
            .ok_or_else(|| fail(format!("graph has no output `{out}`")))?;
        let name = grad_name(out);
        if taken_inputs.contains(&name) || grad_inputs.iter().any(|(_, n)| *n == name) {
            return Err(fail(format!(
                "gradient input `{name}` is already taken (or `{out}` was requested twice)"
            )));
        }
        let ty = fwd.node(id).ty.clone();
        if ty.dtype != DType::F32 {
            return Err(fail(format!("output `{out}` is {ty}, not differentiable")));
        }
        let gin = g.input(name.clone(), ty);
        contrib.entry(id).or_default().push(gin);
        grad_inputs.push((out.to_string(), name));
        roots.push(id);
    }

    // Which values depend on a parameter we differentiate with respect to.
    let needed = fwd.ancestors(&roots);
    let mut live: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let n = fwd.node(id);
        let is_f32 = n.ty.dtype == DType::F32;
        let src = match n.op {
            Op::Weight { .. } => is_f32,
            Op::Input { .. } => is_f32 && input_grads,
            _ => is_f32 && fwd.operands(id).iter().any(|o| live.contains(o)),
        };
        if src {
            live.insert(id);
        }
    }

    let mut grads: HashMap<NodeId, NodeId> = HashMap::new();
    for &id in order.iter().rev() {
        if !needed.contains(&id) || !live.contains(&id) {
            continue;
        }
        let Some(parts) = contrib.remove(&id) else {
            continue;
        };
        let gid = sum(&mut g, fwd, id, &parts)?;
        grads.insert(id, gid);
        let operands = fwd.operands(id);
        let wants: Vec<bool> = operands.iter().map(|o| live.contains(o)).collect();
        if !wants.iter().any(|&w| w) {
            continue;
        }
        for (slot, d) in rules::backward(&mut g, fwd, id, gid, &wants)? {
            contrib.entry(operands[slot]).or_default().push(d);
        }
    }

    let mut weight_grads = Vec::new();
    let mut in_grads = Vec::new();
    for (leaves, list) in [
        (fwd.weights(), &mut weight_grads),
        (fwd.inputs(), &mut in_grads),
    ] {
        for (name, id) in leaves {
            let Some(&gid) = grads.get(&id) else {
                continue;
            };
            let out = grad_name(&name);
            if !taken_outputs.insert(out.clone()) {
                return Err(fail(format!("gradient output `{out}` is already taken")));
            }
            g.set_output(out.clone(), gid);
            list.push((name, out));
        }
    }
    verify::verify(&g)?;
    Ok(TrainGraph {
        graph: g,
        grad_inputs,
        weight_grads,
        input_grads: in_grads,
    })
}

/// The sum of the gradient contributions `parts` of node `id` (a chain of `Add`s).
fn sum(g: &mut Graph, fwd: &Graph, id: NodeId, parts: &[NodeId]) -> Result<NodeId, IrError> {
    let mut acc = parts[0];
    for &p in &parts[1..] {
        acc = g.add(Op::Add, &[acc, p], rules::label(fwd, id, "grad"))?;
    }
    Ok(acc)
}
