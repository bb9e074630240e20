//! Runs a training graph (`e2enc_ir::autodiff::training_graph`): the forward pass, a loss callback
//! that turns the forward outputs into their gradients, then the backward pass, on the kernels
//! generated for a target and compiled at start ([`super::cgen`]; [`Backend::Generated`]), the
//! only implementation of the training ops besides the reference interpreter, which
//! [`Backend::Reference`] runs as the oracle for tests. Results are bit-identical for any thread
//! count.
//!
//! The graph is split once, at construction: the forward part is every ancestor of a forward
//! output (it cannot depend on the `grad.*` inputs), the backward part is the rest, both in the
//! graph's stable topological order. Forward values stay alive until the backward pass is done
//! (the backward ops read them); backward values are dropped after their last use. Convolutions
//! whose weight is a DSFF-masked parameter get that parameter's live-kernel mask, so dead kernels
//! cost nothing in the forward, data-gradient and weight-gradient kernels; their weight gradient
//! is exactly zero. Both backends run the graph after the training passes
//! (`e2enc_codegen::train::prepare`: depth shifts fused into the convolutions that read them and
//! into the data gradients before their backward), so no shifted copy is ever made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::{Graph, NodeId, Op, Tensor, Weights};

use e2enc_codegen::target::Target;
use e2enc_ir::interp;

use super::cgen::CKernels;
use crate::TrainError;

/// Which kernels run a training graph's ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// C generated from the training graph for this target (one this host runs: `native`, an x86
    /// target the CPU has, or `portable`), compiled with `$CC` at start.
    Generated(Target),
    /// The reference interpreter (`e2enc_ir::interp`) op by op, live masks applied by zeroing the
    /// dead kernels of the weights and of the weight gradients: the oracle the generated kernels
    /// are tested against. Orders of magnitude slower; not offered on the command line.
    Reference,
}

impl Default for Backend {
    fn default() -> Backend {
        Backend::Generated(Target::native())
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Generated(t) => write!(f, "generated C for {t}"),
            Backend::Reference => f.write_str("the reference interpreter"),
        }
    }
}

/// Live-kernel masks by weight name: `[d0 * d1]` flags over the weight's first two dimensions.
pub type LiveMasks = HashMap<String, Vec<bool>>;

/// A training graph prepared for repeated steps.
pub struct Executor {
    g: Graph,
    forward: Vec<NodeId>,
    backward: Vec<NodeId>,
    /// Position in `backward` after which a backward value is no longer read.
    last_use: HashMap<NodeId, usize>,
    /// (forward output name, its node, the `grad.*` input that receives its gradient).
    outputs: Vec<(String, NodeId, String)>,
    /// (weight name, the node computing its gradient).
    weight_grads: Vec<(String, NodeId)>,
    /// Conv-like node → the weight name whose live mask applies to it.
    masked: HashMap<NodeId, String>,
    /// The compiled kernels, or `None` for the reference interpreter.
    c: Option<CKernels>,
    /// Seconds spent per op mnemonic (forward and backward), summed over all steps.
    pub profile: BTreeMap<&'static str, f64>,
    /// Seconds spent per node, summed over all steps (see [`Executor::hot_nodes`]).
    pub node_profile: HashMap<NodeId, f64>,
}

/// What one step returns.
pub struct StepResult {
    pub loss: f64,
    /// The forward outputs by name (logits, ds1, ...).
    pub outputs: BTreeMap<String, Arc<Tensor>>,
    /// The gradient of every weight, by weight name.
    pub grads: Weights,
}

impl Executor {
    /// An executor on the kernels generated for this machine (`native`).
    pub fn new(tg: &TrainGraph, threads: usize) -> Result<Executor, TrainError> {
        Executor::with_backend(tg, threads, Backend::default())
    }

    /// An executor on `backend`: [`Backend::Generated`] generates and compiles its kernels here
    /// (an error names the compiler when that fails). Any weight may get a live mask.
    pub fn with_backend(
        tg: &TrainGraph,
        threads: usize,
        backend: Backend,
    ) -> Result<Executor, TrainError> {
        Executor::build(tg, threads, backend, None)
    }

    /// [`Executor::with_backend`] where only the weights in `maskable` get live masks (the DSFF
    /// weights): the generated kernels of the others are dense and faster. A step whose
    /// `LiveMasks` names another weight is an error.
    pub fn with_maskable(
        tg: &TrainGraph,
        threads: usize,
        backend: Backend,
        maskable: &HashSet<String>,
    ) -> Result<Executor, TrainError> {
        Executor::build(tg, threads, backend, Some(maskable))
    }

    fn build(
        tg: &TrainGraph,
        threads: usize,
        backend: Backend,
        maskable: Option<&HashSet<String>>,
    ) -> Result<Executor, TrainError> {
        // Both backends compute the graph after the training passes (depth shifts fused into
        // the convolutions).
        let prepared =
            e2enc_codegen::train::prepare(tg).map_err(|e| TrainError::Graph(e.to_string()))?;
        let tg = &prepared;
        let c = match backend {
            Backend::Generated(target) => {
                Some(CKernels::build(tg, threads.max(1), maskable, target)?)
            }
            Backend::Reference => None,
        };
        let g = tg.graph.clone();
        let order = g.topo_order()?;
        let grad_of: HashMap<&str, &str> = tg
            .grad_inputs
            .iter()
            .map(|(o, i)| (o.as_str(), i.as_str()))
            .collect();
        let mut outputs = Vec::new();
        for (name, id) in g.outputs() {
            if let Some(gi) = grad_of.get(name.as_str()) {
                outputs.push((name.clone(), *id, gi.to_string()));
            }
        }
        let roots: Vec<NodeId> = outputs.iter().map(|o| o.1).collect();
        let fwd_set: HashSet<NodeId> = g.ancestors(&roots);
        let forward: Vec<NodeId> = order
            .iter()
            .copied()
            .filter(|n| fwd_set.contains(n))
            .collect();
        let backward: Vec<NodeId> = order
            .iter()
            .copied()
            .filter(|n| !fwd_set.contains(n))
            .collect();
        let mut last_use = HashMap::new();
        for (pos, &n) in backward.iter().enumerate() {
            for op in g.operands(n) {
                last_use.insert(op, pos);
            }
        }
        let mut weight_grads = Vec::new();
        for (w, out) in &tg.weight_grads {
            let id = g.output(out).ok_or_else(|| {
                TrainError::Graph(format!("training graph: no output `{out}` for `{w}`"))
            })?;
            weight_grads.push((w.clone(), id));
        }
        // Which weight each conv-like node's live mask comes from.
        let weight_name = |id: NodeId| match &g.node(id).op {
            Op::Weight { name } => Some(name.clone()),
            _ => None,
        };
        let mut masked = HashMap::new();
        for id in g.node_ids() {
            let ops = g.operands(id);
            match &g.node(id).op {
                Op::Conv3d(_)
                | Op::ConvTranspose3d(_)
                | Op::ConvBackwardData(_)
                | Op::FusedConv3d(_) => {
                    if let Some(w) = ops.get(1).and_then(|&w| weight_name(w)) {
                        masked.insert(id, w);
                    }
                }
                _ => {}
            }
        }
        for (w, id) in &weight_grads {
            if matches!(g.node(*id).op, Op::ConvBackwardWeight(_)) {
                masked.insert(*id, w.clone());
            }
        }
        Ok(Executor {
            g,
            forward,
            backward,
            last_use,
            outputs,
            weight_grads,
            masked,
            c,
            profile: BTreeMap::new(),
            node_profile: HashMap::new(),
        })
    }

    /// Forward outputs only (validation): `inputs` holds the graph's forward inputs.
    pub fn forward(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Arc<Tensor>>, TrainError> {
        let mut vals: HashMap<NodeId, Arc<Tensor>> = HashMap::new();
        let order = std::mem::take(&mut self.forward);
        let r = self.eval_list(&order, weights, live, inputs, &mut vals, false);
        self.forward = order;
        r?;
        let out = self
            .outputs
            .iter()
            .map(|(name, id, _)| (name.clone(), vals[id].clone()))
            .collect();
        self.recycle(vals);
        Ok(out)
    }

    /// Hands the buffers of a finished step's values to the C backend for reuse.
    fn recycle(&mut self, vals: HashMap<NodeId, Arc<Tensor>>) {
        if let Some(c) = &mut self.c {
            for (_, v) in vals {
                c.recycle(v);
            }
        }
    }

    /// One training step: forward, `loss(outputs) -> (loss, gradient per output name)`, backward.
    pub fn step(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        loss: impl FnOnce(
            &BTreeMap<String, Arc<Tensor>>,
        ) -> Result<(f64, BTreeMap<String, Tensor>), TrainError>,
    ) -> Result<StepResult, TrainError> {
        let mut vals: HashMap<NodeId, Arc<Tensor>> = HashMap::new();
        let order = std::mem::take(&mut self.forward);
        let r = self.eval_list(&order, weights, live, inputs, &mut vals, false);
        self.forward = order;
        r?;
        let outputs: BTreeMap<String, Arc<Tensor>> = self
            .outputs
            .iter()
            .map(|(name, id, _)| (name.clone(), vals[id].clone()))
            .collect();
        let (value, mut dout) = loss(&outputs)?;
        let mut grad_inputs = BTreeMap::new();
        for (name, _, gi) in &self.outputs {
            let t = dout.remove(name).ok_or_else(|| {
                TrainError::Graph(format!("the loss gave no gradient for output `{name}`"))
            })?;
            grad_inputs.insert(gi.clone(), t);
        }
        let order = std::mem::take(&mut self.backward);
        let r = self.eval_list(&order, weights, live, &grad_inputs, &mut vals, true);
        self.backward = order;
        r?;
        let mut grads = Weights::new();
        for (w, id) in &self.weight_grads {
            let t = vals
                .get(id)
                .ok_or_else(|| TrainError::Graph(format!("gradient of `{w}` was not computed")))?;
            grads.insert(w.clone(), (**t).clone());
        }
        self.recycle(vals);
        Ok(StepResult {
            loss: value,
            outputs,
            grads,
        })
    }

    /// The `n` nodes that took longest (description, seconds), slowest first.
    pub fn hot_nodes(&self, n: usize) -> Vec<(String, f64)> {
        let mut v: Vec<(NodeId, f64)> = self.node_profile.iter().map(|(k, t)| (*k, *t)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.index().cmp(&b.0.index())));
        v.into_iter()
            .take(n)
            .map(|(id, t)| (self.g.describe(id), t))
            .collect()
    }

    /// Bytes of output buffers the generated backend keeps for reuse between steps.
    pub fn spare_bytes(&self) -> usize {
        self.c.as_ref().map_or(0, CKernels::spare_bytes)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match &self.c {
            Some(c) => Backend::Generated(c.target()),
            None => Backend::Reference,
        }
    }

    fn eval_list(
        &mut self,
        order: &[NodeId],
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        vals: &mut HashMap<NodeId, Arc<Tensor>>,
        free_after_last_use: bool,
    ) -> Result<(), TrainError> {
        let keep: HashSet<NodeId> = self.weight_grads.iter().map(|w| w.1).collect();
        for (pos, &id) in order.iter().enumerate() {
            let node = self.g.node(id);
            let val: Arc<Tensor> = match &node.op {
                Op::Input { name } => {
                    let t = inputs
                        .get(name)
                        .ok_or_else(|| TrainError::Graph(format!("input `{name}` not given")))?;
                    check_type(t, node, "input", name)?;
                    Arc::new(t.clone())
                }
                Op::Weight { name } => {
                    let t = weights
                        .get(name)
                        .ok_or_else(|| TrainError::Graph(format!("weight `{name}` missing")))?;
                    check_type(t, node, "weight", name)?;
                    t.clone()
                }
                _ if self.c.is_some() => {
                    let c = self.c.as_mut().expect("checked");
                    let g = &self.g;
                    let t0 = Instant::now();
                    let out = c
                        .run(id, &node.ty.shape, vals, live, |o| {
                            g.node(o).ty.shape.clone()
                        })
                        .map_err(|e| TrainError::Graph(format!("{}: {e}", g.describe(id))))?;
                    let name = c.mnemonic(id).unwrap_or("?");
                    let dt = t0.elapsed().as_secs_f64();
                    *self.profile.entry(name).or_default() += dt;
                    *self.node_profile.entry(id).or_default() += dt;
                    Arc::new(out)
                }
                op => {
                    let args: Vec<Arc<Tensor>> = self
                        .g
                        .operands(id)
                        .iter()
                        .map(|o| vals[o].clone())
                        .collect();
                    let mask = self
                        .masked
                        .get(&id)
                        .and_then(|w| live.get(w))
                        .map(|m| m.as_slice());
                    let t0 = Instant::now();
                    let out = reference_eval(op, &args, mask)
                        .map_err(|e| TrainError::Graph(format!("{}: {e}", self.g.describe(id))))?;
                    let dt = t0.elapsed().as_secs_f64();
                    *self.profile.entry(op.mnemonic()).or_default() += dt;
                    *self.node_profile.entry(id).or_default() += dt;
                    Arc::new(out)
                }
            };
            vals.insert(id, val);
            if free_after_last_use {
                for o in self.g.operands(id) {
                    if self.last_use.get(&o) == Some(&pos) && !keep.contains(&o) {
                        if let (Some(v), Some(c)) = (vals.remove(&o), self.c.as_mut()) {
                            c.recycle(v);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The interpreter's value of `op` on `args`, with the live-kernel mask `live` (flags over the
/// weight's first two dimensions) applied: dead kernels of a convolution's weight (operand 1) are
/// zeroed before, dead kernels of a weight gradient after, so the oracle computes what the
/// generated kernels skip.
fn reference_eval(op: &Op, args: &[Arc<Tensor>], live: Option<&[bool]>) -> Result<Tensor, String> {
    let dead_zeroed = |t: &Tensor, m: &[bool]| -> Result<Tensor, String> {
        let v = t.as_f32().ok_or("a masked weight is not f32")?;
        if m.is_empty() || v.len() % m.len() != 0 {
            return Err(format!(
                "live mask of {} flags for a weight of {}",
                m.len(),
                v.len()
            ));
        }
        let k = v.len() / m.len();
        let mut v = v.to_vec();
        for (kv, &l) in v.chunks_mut(k).zip(m) {
            if !l {
                kv.fill(0.0);
            }
        }
        Tensor::from_f32(t.shape().to_vec(), v).map_err(|e| e.to_string())
    };
    let mut refs: Vec<&Tensor> = args.iter().map(|a| &**a).collect();
    let masked_weight;
    match (op, live) {
        (
            Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::ConvBackwardData(_) | Op::FusedConv3d(_),
            Some(m),
        ) if refs.len() > 1 => {
            masked_weight = dead_zeroed(refs[1], m)?;
            refs[1] = &masked_weight;
        }
        _ => {}
    }
    let out = interp::ops::eval(op, &refs).map_err(|e| e.to_string())?;
    match (op, live) {
        (Op::ConvBackwardWeight(_), Some(m)) => dead_zeroed(&out, m),
        _ => Ok(out),
    }
}

/// Checks that a fed tensor has its node's declared type (the C kernels are specialized to it).
fn check_type(t: &Tensor, node: &e2enc_ir::Node, what: &str, name: &str) -> Result<(), TrainError> {
    if t.shape() != node.ty.shape.as_slice() || t.dtype() != node.ty.dtype {
        return Err(TrainError::Graph(format!(
            "{what} `{name}` is {:?} {:?}, the training graph needs {}",
            t.dtype(),
            t.shape(),
            node.ty
        )));
    }
    Ok(())
}
