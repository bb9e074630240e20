//! Runs a training graph (`e2enc_ir::autodiff::training_graph`): the forward pass, a loss callback
//! that turns the forward outputs into their gradients, then the backward pass, on the kernels
//! generated for a target and compiled at start ([`super::cgen`]; [`Backend::Generated`]), the
//! only implementation of the training ops besides the reference interpreter, which
//! [`Backend::Reference`] runs as the oracle for tests. Results are bit-identical for any thread
//! count.
//!
//! The graph is split once, at construction: the forward part is every ancestor of a forward
//! output (it cannot depend on the `grad.*` inputs), the backward part is the rest, both in the
//! graph's stable topological order. What the step keeps is planned there too
//! ([`super::memplan`], [`Memory`]): by default the backward pass recomputes the cheap forward
//! ops (instance norm, leaky ReLU, concatenation, max pooling, the fusion grid's 2x2x2
//! transposed convolutions) from the kept convolution outputs instead of keeping theirs, and
//! every value is dropped after its last use in forward-then-backward order;
//! [`Executor::memory_plan`] gives the bytes live at each op and the peak, and the generated
//! backend's pool of reused buffers never holds more than the plan's peak together with the
//! live values. Convolutions whose weight is a DSFF-masked parameter get that parameter's
//! live-kernel mask, so dead kernels cost nothing in the forward, data-gradient and
//! weight-gradient kernels; their weight gradient is exactly zero. Both backends run the graph
//! after the training passes (`e2enc_codegen::train::prepare`: depth shifts fused into the
//! convolutions that read them and into the data gradients before their backward), so no
//! shifted copy is ever made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::{Graph, NodeId, Op, Tensor, Weights};

use e2enc_codegen::target::Target;
use e2enc_ir::interp;

use super::cgen::CKernels;
use super::memplan::{
    add_recompute, from_bf16, last_uses, packed_bytes, plan, schedule, stashes, to_bf16,
    value_bytes, StashEvents, STASH_WINDOW,
};
pub use super::memplan::{ConvMath, Memory, MemoryPlan, Saved, Stash};
use crate::TrainError;

/// Which kernels run a training graph's ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// C generated from the training graph for this target (one this host runs: `native`, an x86
    /// target the CPU has, or `portable`), compiled with `$CC` at start.
    Generated(Target),
    /// The CUDA kernels of a CUDA target (`e2enc_codegen::cuda::train`) on the host emulation
    /// (`e2enc_runtime::emulate`): what checks GPU training kernels without a GPU. Slow.
    /// `seed` orders the threads of every emulated block; results must not depend on it.
    Emulated { target: Target, seed: u64 },
    /// The step kept on a device ([`super::device_exec::DeviceExecutor`]; the trainer builds it,
    /// [`Executor`] refuses it): the CUDA kernels of `target` on GPU `gpu`, or on the host
    /// emulation as the device when `gpu` is `None` (`e2enc train --emulate`).
    Device { target: Target, gpu: Option<usize> },
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
            Backend::Emulated { target, .. } => {
                write!(f, "CUDA kernels for {target} on the host emulation")
            }
            Backend::Device { target, gpu: None } => write!(
                f,
                "CUDA kernels for {target}, the step on the host emulation of a GPU"
            ),
            Backend::Device {
                target,
                gpu: Some(n),
            } => write!(f, "CUDA kernels for {target} on GPU cuda:{n}"),
            Backend::Reference => f.write_str("the reference interpreter"),
        }
    }
}

/// Live-kernel masks by weight name: `[d0 * d1]` flags over the weight's first two dimensions.
pub type LiveMasks = HashMap<String, Vec<bool>>;

/// A training graph prepared for repeated steps.
pub struct Executor {
    pub(crate) g: Graph,
    /// Forward ops, then backward ops ([`super::memplan::schedule`]).
    pub(crate) order: Vec<NodeId>,
    /// How many ops of `order` are the forward part.
    pub(crate) n_forward: usize,
    /// Position in `order` of each value's last reader.
    pub(crate) last_use: HashMap<NodeId, usize>,
    /// The same within the forward part alone (for [`Executor::forward`]).
    forward_last_use: HashMap<NodeId, usize>,
    /// The ops of the forward part.
    pub(crate) forward: HashSet<NodeId>,
    /// Values a step returns (forward outputs, weight gradients): never dropped early.
    pub(crate) keep: HashSet<NodeId>,
    pub(crate) memory: Memory,
    /// The precision of the values kept for the backward pass, and which those are.
    saved: Saved,
    pub(crate) stashes: Vec<Stash>,
    pub(crate) stash_events: StashEvents,
    /// The packed copies of the step running now.
    packed: HashMap<NodeId, Vec<u16>>,
    threads: usize,
    plan: MemoryPlan,
    /// Bytes of values (not weights) held now, and the most held at once so far.
    live_bytes: usize,
    peak_live_bytes: usize,
    /// (forward output name, its node, the `grad.*` input that receives its gradient).
    pub(crate) outputs: Vec<(String, NodeId, String)>,
    /// (weight name, the node computing its gradient).
    pub(crate) weight_grads: Vec<(String, NodeId)>,
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
        Executor::build(tg, threads, backend, None, Memory::default(), Saved::F32)
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
        Executor::build(
            tg,
            threads,
            backend,
            Some(maskable),
            Memory::default(),
            Saved::F32,
        )
    }

    /// [`Executor::with_maskable`] (every weight maskable when `maskable` is `None`) with the
    /// memory policy `memory` instead of the default [`Memory::Recompute`]; all policies give
    /// the same bits.
    pub fn with_memory(
        tg: &TrainGraph,
        threads: usize,
        backend: Backend,
        maskable: Option<&HashSet<String>>,
        memory: Memory,
    ) -> Result<Executor, TrainError> {
        Executor::build(tg, threads, backend, maskable, memory, Saved::F32)
    }

    /// [`Executor::with_memory`] keeping the values the backward pass reads in `saved`
    /// precision ([`Saved::Bf16`]: packed between the passes, see [`super::memplan`]). Unlike
    /// the memory policies, `Bf16` changes the gradients (by the rounding of those values).
    pub fn with_saved(
        tg: &TrainGraph,
        threads: usize,
        backend: Backend,
        maskable: Option<&HashSet<String>>,
        memory: Memory,
        saved: Saved,
    ) -> Result<Executor, TrainError> {
        Executor::build(tg, threads, backend, maskable, memory, saved)
    }

    fn build(
        tg: &TrainGraph,
        threads: usize,
        backend: Backend,
        maskable: Option<&HashSet<String>>,
        memory: Memory,
        saved: Saved,
    ) -> Result<Executor, TrainError> {
        // Both backends compute the graph after the training passes (depth shifts fused into
        // the convolutions).
        let mut prepared =
            e2enc_codegen::train::prepare(tg).map_err(|e| TrainError::Graph(e.to_string()))?;
        let grad_of: HashMap<&str, &str> = tg
            .grad_inputs
            .iter()
            .map(|(o, i)| (o.as_str(), i.as_str()))
            .collect();
        let roots: Vec<NodeId> = prepared
            .graph
            .outputs()
            .iter()
            .filter(|(name, _)| grad_of.contains_key(name.as_str()))
            .map(|o| o.1)
            .collect();
        let fwd_set: HashSet<NodeId> = prepared.graph.ancestors(&roots);
        let (late, backward) = if let Memory::Recompute { window } = memory {
            add_recompute(&mut prepared.graph, &fwd_set, window)?
        } else {
            let order = prepared.graph.topo_order()?;
            let backward = order.into_iter().filter(|n| !fwd_set.contains(n)).collect();
            (HashSet::new(), backward)
        };
        let tg = &prepared;
        let c = match backend {
            Backend::Generated(target) => {
                Some(CKernels::build(tg, threads.max(1), maskable, target)?)
            }
            Backend::Emulated { target, seed } => Some(CKernels::build_emulated(
                tg,
                threads.max(1),
                maskable,
                target,
                seed,
            )?),
            Backend::Reference => None,
            Backend::Device { .. } => {
                return Err(TrainError::Device(
                    "a step kept on a device runs in a DeviceExecutor, not an Executor".into(),
                ))
            }
        };
        let g = tg.graph.clone();
        let mut outputs = Vec::new();
        for (name, id) in g.outputs() {
            if let Some(gi) = grad_of.get(name.as_str()) {
                outputs.push((name.clone(), *id, gi.to_string()));
            }
        }
        let (order, n_forward) = schedule(&g, &fwd_set, &backward, &late)?;
        let last_use = last_uses(&g, &order);
        let forward_last_use = last_uses(&g, &order[..n_forward]);
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
        let keep: HashSet<NodeId> = weight_grads
            .iter()
            .map(|w| w.1)
            .chain(outputs.iter().map(|o| o.1))
            .collect();
        let stashed =
            match (saved, memory) {
                (Saved::F32, _) => Vec::new(),
                // Kept forward values stay until the end anyway: nothing to gain.
                (Saved::Bf16, Memory::KeepForward) => return Err(TrainError::Graph(
                    "bf16 saved values need a policy that frees forward values (not KeepForward)"
                        .into(),
                )),
                (Saved::Bf16, Memory::Recompute { window }) => {
                    stashes(&g, &order, n_forward, &keep, STASH_WINDOW.min(window))
                }
                (Saved::Bf16, Memory::FreeAfterLastUse) => {
                    stashes(&g, &order, n_forward, &keep, STASH_WINDOW)
                }
            };
        let plan = plan(
            &g,
            &order,
            n_forward,
            &keep,
            memory == Memory::KeepForward,
            &stashed,
        );
        let stash_events = StashEvents::new(&stashed);
        let mut c = c;
        if let Some(c) = &mut c {
            c.set_budget(plan.peak_bytes);
        }
        Ok(Executor {
            g,
            order,
            forward: fwd_set,
            n_forward,
            last_use,
            forward_last_use,
            keep,
            memory,
            saved,
            stashes: stashed,
            stash_events,
            packed: HashMap::new(),
            threads: threads.max(1),
            plan,
            live_bytes: 0,
            peak_live_bytes: 0,
            outputs,
            weight_grads,
            masked,
            c,
            profile: BTreeMap::new(),
            node_profile: HashMap::new(),
        })
    }

    /// Forward outputs only (validation): `inputs` holds the graph's forward inputs. Values
    /// are dropped after their last use in the forward part.
    pub fn forward(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Arc<Tensor>>, TrainError> {
        let mut vals: HashMap<NodeId, Arc<Tensor>> = HashMap::new();
        let last = std::mem::take(&mut self.forward_last_use);
        let r = self.run_ops(
            0..self.n_forward,
            &last,
            weights,
            live,
            Feed::Borrowed(inputs),
            &mut vals,
            false,
            &mut |_, _| Ok(()),
        );
        self.forward_last_use = last;
        r?;
        let out = self
            .outputs
            .iter()
            .map(|(name, id, _)| (name.clone(), vals[id].clone()))
            .collect();
        self.recycle_all(vals);
        Ok(out)
    }

    /// Drops the packed copies a failed step left (a finished one has none).
    fn drop_packed(&mut self) {
        for (id, _) in std::mem::take(&mut self.packed) {
            self.live_bytes -= packed_bytes(&self.g, id);
        }
    }

    /// The precision of the values kept for the backward pass.
    pub fn saved(&self) -> Saved {
        self.saved
    }

    /// Hands the buffers of a finished step's values to the C backend for reuse.
    fn recycle_all(&mut self, vals: HashMap<NodeId, Arc<Tensor>>) {
        let mut vals: Vec<(NodeId, Arc<Tensor>)> = vals.into_iter().collect();
        vals.sort_by_key(|v| v.0);
        for (id, v) in vals {
            self.release(id, v);
        }
    }

    /// Drops value `id` (its buffer goes to the C backend's pool when that has room).
    fn release(&mut self, id: NodeId, v: Arc<Tensor>) {
        self.live_bytes -= value_bytes(&self.g, id);
        if let Some(c) = &mut self.c {
            c.recycle(v, self.live_bytes);
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
        self.step_with_grads(weights, live, inputs, loss, &mut |_, _| Ok(()))
    }

    /// [`Executor::step`] that shows every weight's gradient to `on_grad` (weight name,
    /// gradient) as soon as the backward pass has computed it, in the order it does (the same
    /// on every rank): what overlaps the data-parallel all-reduce with the rest of the backward
    /// pass. The step still returns every gradient.
    pub fn step_with_grads(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        loss: impl FnOnce(
            &BTreeMap<String, Arc<Tensor>>,
        ) -> Result<(f64, BTreeMap<String, Tensor>), TrainError>,
        on_grad: &mut dyn FnMut(&str, &Tensor) -> Result<(), TrainError>,
    ) -> Result<StepResult, TrainError> {
        let grad_of: HashMap<NodeId, String> = self
            .weight_grads
            .iter()
            .map(|(w, id)| (*id, w.clone()))
            .collect();
        let mut on_value = |id: NodeId, t: &Tensor| match grad_of.get(&id) {
            Some(w) => on_grad(w, t),
            None => Ok(()),
        };
        let mut vals: HashMap<NodeId, Arc<Tensor>> = HashMap::new();
        let last = std::mem::take(&mut self.last_use);
        let r = self.run_ops(
            0..self.n_forward,
            &last,
            weights,
            live,
            Feed::Borrowed(inputs),
            &mut vals,
            true,
            &mut on_value,
        );
        if let Err(e) = r {
            self.last_use = last;
            self.drop_packed();
            return Err(e);
        }
        let outputs: BTreeMap<String, Arc<Tensor>> = self
            .outputs
            .iter()
            .map(|(name, id, _)| (name.clone(), vals[id].clone()))
            .collect();
        let grad_inputs: Result<(f64, BTreeMap<String, Tensor>), TrainError> = (|| {
            let (value, dout) = loss(&outputs)?;
            Ok((value, grad_inputs(&self.outputs, dout)?))
        })();
        let r = grad_inputs.and_then(|(value, grad_inputs)| {
            let all = self.n_forward..self.order.len();
            self.run_ops(
                all,
                &last,
                weights,
                live,
                Feed::Owned(grad_inputs),
                &mut vals,
                true,
                &mut on_value,
            )?;
            Ok(value)
        });
        self.last_use = last;
        self.drop_packed();
        let value = r?;
        let mut grads = Weights::new();
        for (w, id) in &self.weight_grads {
            let t = vals
                .remove(id)
                .ok_or_else(|| TrainError::Graph(format!("gradient of `{w}` was not computed")))?;
            self.live_bytes -= value_bytes(&self.g, *id);
            grads.insert(w.clone(), Arc::unwrap_or_clone(t));
        }
        self.recycle_all(vals);
        Ok(StepResult {
            loss: value,
            outputs,
            grads,
        })
    }

    /// The memory plan of a step under this executor's policy: bytes of values live after
    /// each op, the peak and what is live there. The generated backend's buffer pool holds at
    /// most the peak minus what is live.
    pub fn memory_plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// The training graph the executor runs (after the training passes and, with
    /// [`Memory::Recompute`], with the backward pass's copies of the cheap forward ops), and its
    /// order: forward part first.
    pub fn graph(&self) -> (&Graph, &[NodeId]) {
        (&self.g, &self.order)
    }

    /// The memory policy in use.
    pub fn memory(&self) -> Memory {
        self.memory
    }

    /// The most bytes of values (weights excluded) the executor has held at once, over all
    /// steps so far: the plan's peak once a step has run, when the plan is right.
    pub fn peak_live_bytes(&self) -> usize {
        self.peak_live_bytes
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
            Some(c) => match c.emulation_seed() {
                Some(seed) => Backend::Emulated {
                    target: c.target(),
                    seed,
                },
                None => Backend::Generated(c.target()),
            },
            None => Backend::Reference,
        }
    }

    /// Runs the ops at `range` of the order, dropping each value after its last reader by
    /// `last_use` unless the step keeps it (or, with [`Memory::KeepForward`], it is a forward
    /// value).
    #[allow(clippy::too_many_arguments)]
    fn run_ops(
        &mut self,
        range: std::ops::Range<usize>,
        last_use: &HashMap<NodeId, usize>,
        weights: &Weights,
        live: &LiveMasks,
        mut inputs: Feed<'_>,
        vals: &mut HashMap<NodeId, Arc<Tensor>>,
        stash: bool,
        on_value: &mut dyn FnMut(NodeId, &Tensor) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let order = std::mem::take(&mut self.order);
        let events = std::mem::take(&mut self.stash_events);
        let ev = stash.then_some(&events);
        let r = self.run_ops_in(
            &order,
            range,
            last_use,
            weights,
            live,
            &mut inputs,
            vals,
            ev,
            on_value,
        );
        self.order = order;
        self.stash_events = events;
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn run_ops_in(
        &mut self,
        order: &[NodeId],
        range: std::ops::Range<usize>,
        last_use: &HashMap<NodeId, usize>,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &mut Feed<'_>,
        vals: &mut HashMap<NodeId, Arc<Tensor>>,
        ev: Option<&StashEvents>,
        on_value: &mut dyn FnMut(NodeId, &Tensor) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        for pos in range {
            let id = order[pos];
            if let Some(ev) = ev {
                for &s in ev.at(&ev.unpack, pos) {
                    let p = self.packed.get(&s).ok_or_else(|| {
                        TrainError::Graph(format!("{}: no packed copy", self.g.describe(s)))
                    })?;
                    let shape = self.g.node(s).ty.shape.clone();
                    // From the C backend's pool, which keeps spare buffers and values within
                    // the planned peak.
                    let mut buf = match &mut self.c {
                        Some(c) => c.buffer(p.len(), self.live_bytes),
                        None => vec![0f32; p.len()],
                    };
                    let t0 = Instant::now();
                    unpack(p, &mut buf, self.threads);
                    *self.profile.entry("bf16 unpack").or_default() += t0.elapsed().as_secs_f64();
                    let t = Tensor::from_f32(shape, buf)?;
                    vals.insert(s, Arc::new(t));
                    self.live_bytes += value_bytes(&self.g, s);
                }
                for &s in ev.at(&ev.packed_free, pos) {
                    if self.packed.remove(&s).is_some() {
                        self.live_bytes -= packed_bytes(&self.g, s);
                    }
                }
            }
            let node = self.g.node(id);
            let val: Arc<Tensor> = match &node.op {
                Op::Input { name } => {
                    let t = inputs
                        .take(name)
                        .ok_or_else(|| TrainError::Graph(format!("input `{name}` not given")))?;
                    check_type(&t, node, "input", name)?;
                    Arc::new(t)
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
                        .run(id, &node.ty.shape, vals, live, self.live_bytes, |o| {
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
            // A value kept in bfloat16 for the backward pass is rounded as it is made, so that
            // its forward readers read what the backward pass will (the packing is exact).
            let val = match ev {
                Some(ev) if ev.stashed.contains(&id) => {
                    let mut t = Arc::unwrap_or_clone(val);
                    let x = t.as_f32_mut().ok_or_else(|| {
                        TrainError::Graph(format!("{}: rounding a non-f32", self.g.describe(id)))
                    })?;
                    let t0 = Instant::now();
                    round_bf16(x, self.threads);
                    *self.profile.entry("bf16 round").or_default() += t0.elapsed().as_secs_f64();
                    Arc::new(t)
                }
                _ => val,
            };
            on_value(id, &val)?;
            vals.insert(id, val);
            self.live_bytes += value_bytes(&self.g, id);
            self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes);
            // Drop what is read for the last time here, and this value when nothing reads it.
            let mut done = self.g.operands(id);
            done.sort();
            done.dedup();
            done.retain(|o| last_use.get(o) == Some(&pos));
            if !last_use.contains_key(&id) {
                done.push(id);
            }
            for o in done {
                let forward_kept = self.memory == Memory::KeepForward && self.forward.contains(&o);
                let stashed = ev.is_some_and(|e| e.stashed.contains(&o));
                if self.keep.contains(&o) || forward_kept || stashed {
                    continue;
                }
                if let Some(v) = vals.remove(&o) {
                    self.release(o, v);
                }
            }
            let Some(ev) = ev else { continue };
            for &s in ev.at(&ev.pack, pos) {
                let v = vals.remove(&s).ok_or_else(|| {
                    TrainError::Graph(format!("{}: nothing to pack", self.g.describe(s)))
                })?;
                let data = v.as_f32().ok_or_else(|| {
                    TrainError::Graph(format!("{}: packing a non-f32", self.g.describe(s)))
                })?;
                if let Some(c) = &mut self.c {
                    c.make_room(self.live_bytes, packed_bytes(&self.g, s));
                }
                let t0 = Instant::now();
                self.packed.insert(s, pack(data, self.threads));
                *self.profile.entry("bf16 pack").or_default() += t0.elapsed().as_secs_f64();
                self.live_bytes += packed_bytes(&self.g, s);
                self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes);
                self.release(s, v);
            }
            for &s in ev.at(&ev.unpacked_free, pos) {
                if let Some(v) = vals.remove(&s) {
                    self.release(s, v);
                }
            }
        }
        Ok(())
    }
}

/// Splits `n` items into at most `threads` contiguous chunks of at least 64 Ki items.
fn chunk_len(n: usize, threads: usize) -> usize {
    n.div_ceil(threads.max(1)).max(1 << 16)
}

/// Rounds `x` to bfloat16 values in place ([`to_bf16`]), on up to `threads` threads.
fn round_bf16(x: &mut [f32], threads: usize) {
    let c = chunk_len(x.len(), threads);
    std::thread::scope(|s| {
        for x in x.chunks_mut(c) {
            s.spawn(move || {
                for v in x {
                    *v = from_bf16(to_bf16(*v));
                }
            });
        }
    });
}

/// `x` as bfloat16 bits ([`to_bf16`]), on up to `threads` threads.
pub(crate) fn pack(x: &[f32], threads: usize) -> Vec<u16> {
    let mut out = vec![0u16; x.len()];
    let c = chunk_len(x.len(), threads);
    std::thread::scope(|s| {
        for (o, i) in out.chunks_mut(c).zip(x.chunks(c)) {
            s.spawn(move || {
                for (o, &v) in o.iter_mut().zip(i) {
                    *o = to_bf16(v);
                }
            });
        }
    });
    out
}

/// Bfloat16 bits as f32 ([`from_bf16`]) into `out` (as long), on up to `threads` threads.
pub(crate) fn unpack(h: &[u16], out: &mut [f32], threads: usize) {
    let c = chunk_len(h.len(), threads);
    std::thread::scope(|s| {
        for (o, i) in out.chunks_mut(c).zip(h.chunks(c)) {
            s.spawn(move || {
                for (o, &v) in o.iter_mut().zip(i) {
                    *o = from_bf16(v);
                }
            });
        }
    });
}

/// The loss's gradients by output name (`dout`) as the `grad.*` inputs that receive them
/// (`outputs`: forward output, its node, its gradient input); every output must have one.
pub(crate) fn grad_inputs(
    outputs: &[(String, NodeId, String)],
    mut dout: BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>, TrainError> {
    let mut g = BTreeMap::new();
    for (name, _, gi) in outputs {
        let t = dout.remove(name).ok_or_else(|| {
            TrainError::Graph(format!("the loss gave no gradient for output `{name}`"))
        })?;
        g.insert(gi.clone(), t);
    }
    Ok(g)
}

/// The step's inputs: the caller's (copied as they are read) or the loss gradients (moved).
enum Feed<'a> {
    Borrowed(&'a BTreeMap<String, Tensor>),
    Owned(BTreeMap<String, Tensor>),
}

impl Feed<'_> {
    fn take(&mut self, name: &str) -> Option<Tensor> {
        match self {
            Feed::Borrowed(m) => m.get(name).cloned(),
            Feed::Owned(m) => m.remove(name),
        }
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
pub(crate) fn check_type(
    t: &Tensor,
    node: &e2enc_ir::Node,
    what: &str,
    name: &str,
) -> Result<(), TrainError> {
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
