//! A training step kept on a device ([`super::device::Device`]): the values of the step in one
//! device allocation (the arena), the weights in their own, the CUDA training kernels
//! (`e2enc_codegen::cuda::train`) launched in the executor's order with operand tables and
//! live-kernel lists that live on the device too.
//!
//! The planning is the host executor's ([`super::exec::Executor`], built on the reference
//! backend and never run): the training passes, the backward pass's recomputed copies, the
//! order and every value's last reader. Here that order is played once at construction to give
//! every value an arena offset (first fit over 256-byte aligned blocks: a value's bytes are
//! free again after its last reader, the step's results are never freed), so the pointer
//! arguments of every launch are known before the first step and uploaded once: kernel `k`
//! runs as `NAME(arena + out, tables + k's table, lives + k's live list)`. A step then uploads
//! the weights and the live lists of the DSFF convs (prune and regrow change only those), and
//! plays the order: an input is copied in when the order reaches it (its bytes may have held an
//! earlier value), a compute node is a launch. Three ways to finish a step:
//!
//! - [`DeviceExecutor::step`]: the outputs come back to the host for a loss the caller computes,
//!   its gradients go in when the backward part reaches them, the weight gradients come back;
//! - [`DeviceExecutor::step_on_device`] (`loss.rs`): the loss runs on the device too (the heads'
//!   gradients have their arena bytes from the start of the backward part, so its kernels write
//!   them right after the forward part); only its sums and the weight gradients come back;
//! - [`DeviceExecutor::step_resident`] (`optim.rs`): the optimizer runs there as well, on weights
//!   and momentum the device keeps between steps ([`DeviceExecutor::upload_state`],
//!   [`DeviceExecutor::download_state`]); only the sums and the gradient norm come back.
//!
//! The same kernels on the same device give the same bits as the host executor running them
//! (`Backend::Emulated`): the arena changes where values live, not what is computed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use e2enc_codegen::cuda::train::gather::gather_kernels;
use e2enc_codegen::cuda::train::loss::loss_kernels;
use e2enc_codegen::cuda::train::optim::optimizer_kernels;
use e2enc_codegen::cuda::train::stash::stash_kernels;
use e2enc_codegen::target::Target;
use e2enc_codegen::train::{Live, TrainKernel};
use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::{NodeId, Op, Tensor, Weights};

mod loss;
mod optim;
pub use optim::RankHooks;

use loss::HeadLoss;
use optim::DeviceSgd;

use super::device::{DevPtr, Device};
use super::exec::{check_type, Backend, Executor, LiveMasks, Memory, Saved, StepResult};
use super::memplan::{packed_bytes, value_bytes, ConvMath};
use crate::TrainError;

/// Alignment of every value in the arena.
const ALIGN: usize = 256;

fn err(msg: impl Into<String>) -> TrainError {
    TrainError::Device(msg.into())
}

/// First-fit placement of blocks in a growing region.
#[derive(Default)]
struct FirstFit {
    /// Free ranges by offset: length.
    free: BTreeMap<usize, usize>,
    top: usize,
}

impl FirstFit {
    fn take(&mut self, bytes: usize) -> usize {
        let n = bytes.div_ceil(ALIGN).max(1) * ALIGN;
        if let Some((&at, &len)) = self.free.iter().find(|(_, &len)| len >= n) {
            self.free.remove(&at);
            if len > n {
                self.free.insert(at + n, len - n);
            }
            return at;
        }
        // Extend the region, starting inside a free tail if there is one.
        let at = match self.free.iter().next_back() {
            Some((&a, &l)) if a + l == self.top => {
                self.free.remove(&a);
                a
            }
            _ => self.top,
        };
        self.top = at + n;
        at
    }

    fn give(&mut self, at: usize, bytes: usize) {
        let mut at = at;
        let mut n = bytes.div_ceil(ALIGN).max(1) * ALIGN;
        if let Some((&a, &l)) = self.free.range(..at).next_back() {
            if a + l == at {
                self.free.remove(&a);
                at = a;
                n += l;
            }
        }
        if let Some(&l) = self.free.get(&(at + n)) {
            self.free.remove(&(at + n));
            n += l;
        }
        self.free.insert(at, n);
    }
}

/// A kernel loaded beside the graph's own (the loss's, the optimizer's): no operands, no live
/// list, launched with its own arguments; `node` only labels it.
fn extra_kernel(node: NodeId, name: &str, launch: &e2enc_codegen::emit::Launch) -> TrainKernel {
    TrainKernel {
        node,
        name: name.to_string(),
        tiles: launch.blocks() as usize,
        work: 0,
        live: Live::None,
        mask: None,
        weight: None,
        operands: Vec::new(),
        launch: Some(launch.clone()),
        scratch: 0,
    }
}

/// Views `v` as bytes.
pub(crate) fn bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding; the byte view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

pub(crate) fn bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as in `bytes`; every byte pattern is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

/// Where a value kept in bfloat16 lives on the device.
struct StashSlots {
    packed: DevPtr,
    len: DevPtr,
    unpacked: HashMap<usize, DevPtr>,
}

/// A training graph's step on a device (see the module doc).
pub struct DeviceExecutor {
    plan: Executor,
    dev: Box<dyn Device>,
    /// Compute node → its kernel's index and description.
    kernels: HashMap<NodeId, (usize, TrainKernel)>,
    arena: DevPtr,
    arena_bytes: usize,
    /// Arena byte offset of every value that is not a weight.
    offset: HashMap<NodeId, usize>,
    /// Weight name → (device address, bytes).
    weights: HashMap<String, (DevPtr, usize)>,
    /// Per kernel node: the address of its operand table and of its live list.
    args: HashMap<NodeId, (DevPtr, DevPtr)>,
    /// Which weights may have live masks (all when `None`).
    maskable: Option<HashSet<String>>,
    /// The loss kernels and buffers of every head (empty when the heads cannot have them).
    heads: Vec<HeadLoss>,
    /// Kernel index of the optimizer's first kernel, and its state once made.
    opt_first: usize,
    opt: Option<DeviceSgd>,
    /// Whether the device holds the weights (and the momentum) between steps: then a step does
    /// not upload them, and [`DeviceExecutor::download_state`] gives them back.
    resident: bool,
    /// The masks whose live lists the device holds (uploaded again only when they change).
    uploaded_live: Option<LiveMasks>,
    /// [`Saved::Bf16`]: kernel index of `e2s_round` (then `e2s_pack`, `e2s_unpack`), and per
    /// kept value its packed copy's and element count's addresses, and its unpacked buffers by
    /// the first position of their group.
    stash_first: usize,
    stash: HashMap<NodeId, StashSlots>,
    /// Kernel index of `e2g_gather` (`e2g_scatter` follows), and the packed gradients of a
    /// data-parallel step once made.
    gather_first: usize,
    packed: Option<optim::PackedGrads>,
    /// Wall seconds of the steps' parts ("device forward", "device backward", the copies
    /// included), summed over all steps.
    pub profile: BTreeMap<&'static str, f64>,
    /// What each loaded kernel computes, by kernel index, for [`DeviceExecutor::kernel_profile`].
    labels: Vec<String>,
    /// Device seconds of the launches by what they compute, while timing
    /// ([`DeviceExecutor::time_kernels`]).
    kernel_time: Option<BTreeMap<String, f64>>,
}

impl DeviceExecutor {
    /// Plans `tg`'s step (values kept for the backward pass in `saved` precision), generates its
    /// kernels for the CUDA `target`, loads them on `dev`, and allocates the arena, the weights,
    /// the operand tables and the live lists there.
    pub fn new(
        tg: &TrainGraph,
        target: Target,
        maskable: Option<&HashSet<String>>,
        saved: Saved,
        math: ConvMath,
        mut dev: Box<dyn Device>,
    ) -> Result<DeviceExecutor, TrainError> {
        let plan = Executor::with_saved(
            tg,
            1,
            Backend::Reference,
            maskable,
            Memory::for_saved(saved),
            saved,
        )?;
        let g = &plan.g;
        let run = TrainGraph {
            graph: g.clone(),
            grad_inputs: tg.grad_inputs.clone(),
            weight_grads: tg.weight_grads.clone(),
            input_grads: Vec::new(),
        };
        let gen = e2enc_codegen::render::for_target_in(target, math.precision())
            .training(&run, maskable)
            .map_err(|e| TrainError::CKernels(e.to_string()))?;
        if gen.kernels.iter().any(|k| k.launch.is_none()) {
            return Err(err(format!(
                "{target} is not a GPU target: its kernels have no launches"
            )));
        }
        // The loss kernels of every head (none when a head cannot have them: then only the
        // host's loss is offered).
        let mut source = gen.c_source.clone();
        let mut all = gen.kernels.clone();
        let mut loss_k = Vec::new();
        for (k, (name, id, _)) in plan.outputs.iter().enumerate() {
            let shape: Option<[usize; 5]> = g.node(*id).ty.shape.as_slice().try_into().ok();
            let Some(lk) = shape.and_then(|sh| loss_kernels(&format!("e2l_{k}"), sh).ok()) else {
                loss_k.clear();
                break;
            };
            source.push_str(&format!("\n/* the loss of head `{name}` */\n"));
            source.push_str(&lk.source);
            let first = all.len();
            all.extend(lk.kernels.iter().map(|(n, l)| extra_kernel(*id, n, l)));
            loss_k.push((lk, first));
        }
        let opt_first = all.len();
        let (osrc, okernels) = optimizer_kernels(plan.weight_grads.len());
        source.push_str("\n/* the optimizer */\n");
        source.push_str(&osrc);
        let node0 = plan
            .order
            .first()
            .copied()
            .ok_or_else(|| err("the training graph has no ops"))?;
        all.extend(okernels.iter().map(|(n, l)| extra_kernel(node0, n, l)));
        let stash_first = all.len();
        let (ssrc, skernels) = stash_kernels();
        source.push_str("\n/* bf16 kept values */\n");
        source.push_str(&ssrc);
        all.extend(skernels.iter().map(|(n, l)| extra_kernel(node0, n, l)));
        let gather_first = all.len();
        let (gsrc, gkernels) = gather_kernels();
        source.push_str("\n/* the gradients of a data-parallel step, packed */\n");
        source.push_str(&gsrc);
        all.extend(gkernels.iter().map(|(n, l)| extra_kernel(node0, n, l)));
        dev.load(&source, &all)?;
        let labels: Vec<String> = all
            .iter()
            .enumerate()
            .map(|(i, k)| {
                if i >= gather_first {
                    "gradient packing (data-parallel)".to_string()
                } else if i >= stash_first {
                    "bf16 kept values (round, pack, unpack)".to_string()
                } else if i >= opt_first {
                    "optimizer".to_string()
                } else if i >= gen.kernels.len() {
                    "loss".to_string()
                } else {
                    let op = g.node(k.node).op.mnemonic();
                    match k.live {
                        Live::Table { .. } => format!("{op} (tensor cores)"),
                        _ => op.to_string(),
                    }
                }
            })
            .collect();
        // Arena offsets: the order played as the host executor plays it.
        let mut fit = FirstFit::default();
        let mut offset = HashMap::new();
        let forward_kept = plan.memory == Memory::KeepForward;
        // The heads' gradients get their bytes when the backward part starts, so that the GPU's
        // loss kernels can write them there right after the forward part.
        let graph_inputs = g.inputs();
        let input_id = |name: &str| {
            graph_inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| *id)
        };
        let grad_inputs: Vec<NodeId> = plan
            .outputs
            .iter()
            .filter_map(|(_, _, gi)| input_id(gi))
            .collect();
        // Values kept in bfloat16: the packed copy's offset, and each group's unpacked buffer's
        // by the group's first position (the stash events played as the host executor plays
        // them, `memplan::StashEvents`).
        let ev = &plan.stash_events;
        let mut packed_off: HashMap<NodeId, usize> = HashMap::new();
        let mut unpacked_off: HashMap<(NodeId, usize), usize> = HashMap::new();
        let group_first = |s: NodeId, pos: usize| -> Option<usize> {
            plan.stashes
                .iter()
                .find(|st| st.node == s)
                .and_then(|st| st.groups.iter().find(|g| g.0 <= pos && pos <= g.1))
                .map(|g| g.0)
        };
        for (pos, &id) in plan.order.iter().enumerate() {
            if matches!(g.node(id).op, Op::Weight { .. }) {
                continue;
            }
            if pos == plan.n_forward {
                for &gi in &grad_inputs {
                    offset.insert(gi, fit.take(value_bytes(g, gi)));
                }
            }
            for &s in ev.at(&ev.unpack, pos) {
                unpacked_off.insert((s, pos), fit.take(value_bytes(g, s)));
            }
            for &s in ev.at(&ev.packed_free, pos) {
                fit.give(packed_off[&s], packed_bytes(g, s));
            }
            offset
                .entry(id)
                .or_insert_with(|| fit.take(value_bytes(g, id)));
            let mut done = g.operands(id);
            done.sort();
            done.dedup();
            done.retain(|o| plan.last_use.get(o) == Some(&pos));
            if !plan.last_use.contains_key(&id) {
                done.push(id);
            }
            for o in done {
                let kept = plan.keep.contains(&o) || (forward_kept && plan.forward.contains(&o));
                let stashed = ev.stashed.contains(&o);
                if kept || stashed || matches!(g.node(o).op, Op::Weight { .. }) {
                    continue;
                }
                if let Some(&at) = offset.get(&o) {
                    fit.give(at, value_bytes(g, o));
                }
            }
            for &s in ev.at(&ev.pack, pos) {
                packed_off.insert(s, fit.take(packed_bytes(g, s)));
                fit.give(offset[&s], value_bytes(g, s));
            }
            for &s in ev.at(&ev.unpacked_free, pos) {
                let first = group_first(s, pos).ok_or_else(|| err("a stash group has no start"))?;
                fit.give(unpacked_off[&(s, first)], value_bytes(g, s));
            }
        }
        let arena_bytes = fit.top.max(ALIGN);
        let arena = dev.alloc(arena_bytes, "the training arena")?;
        let mut weights = HashMap::new();
        for id in g.node_ids() {
            if let Op::Weight { name } = &g.node(id).op {
                let b = g.node(id).ty.numel() * 4;
                let p = dev.alloc(b, &format!("weight `{name}`"))?;
                weights.insert(name.clone(), (p, b));
            }
        }
        // One scratch buffer of the largest any kernel needs (zeroed, and each kernel leaves
        // it zero): the kernels run one after another.
        let scratch_bytes = gen.kernels.iter().map(|k| k.scratch).max().unwrap_or(0);
        let scratch = if scratch_bytes > 0 {
            Some(dev.alloc(scratch_bytes, "the kernels' scratch")?)
        } else {
            None
        };
        // Operand tables (device addresses) and live-list slots, one blob each.
        let mut table: Vec<u64> = Vec::new();
        let mut table_at = Vec::new();
        let mut live_len = 1usize; // slot 0: an empty list for kernels without one
        let mut live_at = Vec::new();
        let position: HashMap<NodeId, usize> = plan
            .order
            .iter()
            .enumerate()
            .map(|(p, &n)| (n, p))
            .collect();
        for k in &gen.kernels {
            table_at.push(table.len());
            let at = position.get(&k.node).copied();
            for &o in &k.operands {
                // A backward reader of a value kept in bfloat16 reads its group's unpacked
                // buffer.
                let unpacked = at
                    .filter(|&p| p >= plan.n_forward && ev.stashed.contains(&o))
                    .and_then(|p| group_first(o, p))
                    .and_then(|first| unpacked_off.get(&(o, first)));
                let p = match &g.node(o).op {
                    Op::Weight { name } => weights[name].0,
                    _ if unpacked.is_some() => arena + *unpacked.expect("checked") as u64,
                    _ => {
                        let at = offset.get(&o).ok_or_else(|| {
                            err(format!(
                                "{}: an operand has no arena slot",
                                g.describe(k.node)
                            ))
                        })?;
                        arena + *at as u64
                    }
                };
                table.push(p);
            }
            if k.scratch > 0 {
                table.push(scratch.expect("allocated for the largest"));
            }
            match k.live {
                Live::None => live_at.push(0),
                l => {
                    live_at.push(live_len);
                    live_len += l.capacity();
                }
            }
        }
        let tables = dev.alloc(table.len().max(1) * 8, "the kernels' operand tables")?;
        let tb: Vec<u8> = table.iter().flat_map(|p| p.to_le_bytes()).collect();
        dev.upload(tables, &tb)?;
        let lives = dev.alloc(live_len * 4, "the live-kernel lists")?;
        let mut heads = Vec::new();
        for ((lk, first), (name, id, gi)) in loss_k.into_iter().zip(&plan.outputs) {
            let shape: [usize; 5] = g
                .node(*id)
                .ty
                .shape
                .as_slice()
                .try_into()
                .map_err(|_| err(format!("head `{name}` is not 5-D")))?;
            let gid = input_id(gi).ok_or_else(|| err(format!("no input `{gi}`")))?;
            let at = |id: NodeId| -> Result<DevPtr, TrainError> {
                offset
                    .get(&id)
                    .map(|&o| arena + o as u64)
                    .ok_or_else(|| err(format!("head `{name}` has no arena slot")))
            };
            let (logits, grad) = (at(*id)?, at(gid)?);
            let voxels = shape[0] * shape[2] * shape[3] * shape[4];
            let partials = dev.alloc(lk.partials * 8, "the loss's partial sums")?;
            let sums = dev.alloc(lk.sums * 8, "the loss's sums")?;
            let coefs = dev.alloc(lk.coefs * 8, "the loss's coefficients")?;
            let labels = dev.alloc(voxels * 4, "the labels")?;
            let table = dev.alloc(4 * 8, "the loss kernels' tables")?;
            let t: Vec<u8> = [logits, partials, logits, coefs]
                .iter()
                .flat_map(|p| p.to_le_bytes())
                .collect();
            dev.upload(table, &t)?;
            heads.push(HeadLoss {
                name: name.clone(),
                shape,
                first,
                grad,
                partials,
                sums,
                coefs,
                labels,
                table,
                n_sums: lk.sums,
            });
        }
        // Element counts of the values kept in bfloat16 (the stash kernels' `I`).
        let mut stash = HashMap::new();
        if !plan.stashes.is_empty() {
            let mut lens: Vec<u8> = Vec::new();
            for st in &plan.stashes {
                let n = i32::try_from(g.node(st.node).ty.numel()).map_err(|_| {
                    err(format!(
                        "{}: too many elements for the bf16 stash kernels",
                        g.describe(st.node)
                    ))
                })?;
                lens.extend(n.to_le_bytes());
            }
            let len_base = dev.alloc(lens.len(), "the kept values' lengths")?;
            dev.upload(len_base, &lens)?;
            for (i, st) in plan.stashes.iter().enumerate() {
                let unpacked = st
                    .groups
                    .iter()
                    .map(|&(first, _)| (first, arena + unpacked_off[&(st.node, first)] as u64))
                    .collect();
                stash.insert(
                    st.node,
                    StashSlots {
                        packed: arena + packed_off[&st.node] as u64,
                        len: len_base + 4 * i as u64,
                        unpacked,
                    },
                );
            }
        }
        let mut kernels = HashMap::new();
        let mut args = HashMap::new();
        for (i, k) in gen.kernels.into_iter().enumerate() {
            if !offset.contains_key(&k.node) {
                // Not in the order (nothing the step needs reads it).
                continue;
            }
            args.insert(
                k.node,
                (
                    tables + 8 * table_at[i] as u64,
                    lives + 4 * live_at[i] as u64,
                ),
            );
            kernels.insert(k.node, (i, k));
        }
        Ok(DeviceExecutor {
            plan,
            dev,
            kernels,
            arena,
            arena_bytes,
            offset,
            weights,
            args,
            maskable: maskable.cloned(),
            heads,
            opt_first,
            opt: None,
            resident: false,
            uploaded_live: None,
            stash_first,
            gather_first,
            packed: None,
            stash,
            profile: BTreeMap::new(),
            labels,
            kernel_time: None,
        })
    }

    /// Times every launch on the device from here on (`on`: CUDA events around each on a GPU,
    /// the wall time of each launch on the emulation), for [`DeviceExecutor::kernel_profile`],
    /// or stops.
    pub fn time_kernels(&mut self, on: bool) -> Result<(), TrainError> {
        self.absorb_launch_times()?;
        self.dev.time_launches(on)?;
        if on {
            self.kernel_time.get_or_insert_with(BTreeMap::new);
        }
        Ok(())
    }

    /// Device seconds of the launches timed so far, by what they compute: the op of a graph
    /// kernel (`conv_backward_weight`, `instance_norm`, ..., with ` (tensor cores)` for the
    /// tensor-core convs), `loss`, `optimizer`, the bf16 kept values' passes and the gradients'
    /// packing; `None` when launches were never timed.
    pub fn kernel_profile(&mut self) -> Result<Option<&BTreeMap<String, f64>>, TrainError> {
        self.absorb_launch_times()?;
        Ok(self.kernel_time.as_ref())
    }

    /// Adds the device's launch times since the last call to the kernel profile.
    fn absorb_launch_times(&mut self) -> Result<(), TrainError> {
        let Some(kt) = &mut self.kernel_time else {
            return Ok(());
        };
        for (k, secs) in self.dev.launch_times()? {
            let label = self
                .labels
                .get(k)
                .map_or("(unknown kernel)", String::as_str);
            *kt.entry(label.to_string()).or_default() += secs;
        }
        Ok(())
    }

    /// The executor of `backend` (a [`Backend::Device`]): the host emulation as the device
    /// (`gpu: None`, blocks on `threads` threads) or an NVIDIA GPU.
    pub fn open(
        tg: &TrainGraph,
        backend: Backend,
        threads: usize,
        maskable: Option<&HashSet<String>>,
        saved: Saved,
        math: ConvMath,
    ) -> Result<DeviceExecutor, TrainError> {
        let Backend::Device { target, gpu } = backend else {
            return Err(err(format!("{backend} is not a device")));
        };
        let dev: Box<dyn Device> = match gpu {
            None => Box::new(super::device::Emulated::new(threads, 0x9e37_79b9_7f4a_7c15)),
            Some(n) => super::device::gpu(n, target)?,
        };
        DeviceExecutor::new(tg, target, maskable, saved, math, dev)
    }

    /// Bytes of device memory the executor holds in all: the arena, the weights, the
    /// optimizer's momentum and sums, the operand tables and live lists, the loss's buffers,
    /// the kernels' scratch and a data-parallel step's packed gradients.
    pub fn device_bytes(&self) -> usize {
        self.dev.allocated_bytes()
    }

    /// Bytes of the arena: the step's values at their planned offsets.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// The host executor's memory plan of the same step (its peak is the least an arena can
    /// be).
    pub fn memory_plan(&self) -> &super::exec::MemoryPlan {
        self.plan.memory_plan()
    }

    /// The device, in words.
    pub fn describe(&self) -> String {
        self.dev.describe()
    }

    fn value_ptr(&self, id: NodeId) -> Result<DevPtr, TrainError> {
        self.offset
            .get(&id)
            .map(|&o| self.arena + o as u64)
            .ok_or_else(|| err(format!("{} has no arena slot", self.plan.g.describe(id))))
    }

    /// Uploads the weights (unless the device holds them) and every kernel's live list (unless
    /// the device holds these masks' already).
    fn prepare(&mut self, weights: &Weights, live: &LiveMasks) -> Result<(), TrainError> {
        if !self.resident {
            self.upload_weights(weights)?;
        }
        if let Some(m) = &self.maskable {
            if let Some(w) = live.keys().find(|w| !m.contains(*w)) {
                return Err(err(format!(
                    "weight `{w}` has a live-kernel mask, but its kernels were generated dense \
                     (it was not declared maskable)"
                )));
            }
        }
        if self.uploaded_live.as_ref() == Some(live) {
            // The lists on the device are these masks' (they change at DSFF updates only).
            return Ok(());
        }
        self.uploaded_live = None;
        for (id, (_, k)) in &self.kernels {
            if k.live == Live::None {
                continue;
            }
            let mask = k.mask.as_ref().and_then(|w| live.get(w));
            let csr = k.live.build(mask.map(Vec::as_slice)).ok_or_else(|| {
                err(format!(
                    "live mask of `{}` has the wrong length for {:?}",
                    k.mask.as_deref().unwrap_or("?"),
                    k.live.dims()
                ))
            })?;
            // The kernel reads its CSR where its list pointer says: rows+1 pointers counted
            // from the list's start, then the indices.
            let b: Vec<u8> = csr.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.dev.upload(self.args[id].1, &b)?;
        }
        self.uploaded_live = Some(live.clone());
        Ok(())
    }

    /// Copies every weight of the graph to its device allocation (checked against its type).
    fn upload_weights(&mut self, weights: &Weights) -> Result<(), TrainError> {
        let g = &self.plan.g;
        for id in g.node_ids() {
            if let Op::Weight { name } = &g.node(id).op {
                let t = weights
                    .get(name)
                    .ok_or_else(|| TrainError::Graph(format!("weight `{name}` missing")))?;
                check_type(t, g.node(id), "weight", name)?;
                let data = t
                    .as_f32()
                    .ok_or_else(|| err(format!("weight `{name}` is not f32")))?;
                self.dev.upload(self.weights[name].0, bytes(data))?;
            }
        }
        Ok(())
    }

    /// Plays positions `range` of the order: inputs copied in (`feed` by name), compute nodes
    /// launched.
    fn play(
        &mut self,
        range: std::ops::Range<usize>,
        feed: &mut dyn FnMut(&str) -> Option<Tensor>,
        on_device: &[String],
        stash: bool,
    ) -> Result<(), TrainError> {
        let stash = stash && !self.stash.is_empty();
        for pos in range {
            let id = self.plan.order[pos];
            if stash {
                let ev = &self.plan.stash_events;
                for &s in ev.at(&ev.unpack, pos) {
                    let st = &self.stash[&s];
                    let args = [st.unpacked[&pos], st.packed, st.len];
                    self.dev.launch(self.stash_first + 2, args)?;
                }
            }
            let node = self.plan.g.node(id);
            match &node.op {
                Op::Weight { .. } => {}
                Op::Input { name } if on_device.contains(name) => {}
                Op::Input { name } => {
                    let t = feed(name)
                        .ok_or_else(|| TrainError::Graph(format!("input `{name}` not given")))?;
                    check_type(&t, node, "input", name)?;
                    let data = t
                        .as_f32()
                        .ok_or_else(|| err(format!("input `{name}` is not f32")))?;
                    let p = self.value_ptr(id)?;
                    self.dev.upload(p, bytes(data))?;
                }
                _ => {
                    let (k, _) = self
                        .kernels
                        .get(&id)
                        .ok_or_else(|| err(format!("{}: no kernel", self.plan.g.describe(id))))?;
                    let (table, lives) = self.args[&id];
                    let out = self.value_ptr(id)?;
                    let k = *k;
                    self.dev
                        .launch(k, [out, table, lives])
                        .map_err(|e| err(format!("{}: {e}", self.plan.g.describe(id))))?;
                }
            }
            if stash {
                // Rounded where computed, packed after the last forward reader.
                if let Some(st) = self.stash.get(&id) {
                    let p = self.value_ptr(id)?;
                    self.dev.launch(self.stash_first, [p, p, st.len])?;
                }
                let ev = &self.plan.stash_events;
                for &s in ev.at(&ev.pack, pos) {
                    let st = &self.stash[&s];
                    let args = [st.packed, self.value_ptr(s)?, st.len];
                    self.dev.launch(self.stash_first + 1, args)?;
                }
            }
        }
        Ok(())
    }

    /// Copies value `id` back to the host.
    fn fetch(&mut self, id: NodeId) -> Result<Tensor, TrainError> {
        let shape = self.plan.g.node(id).ty.shape.clone();
        let mut v = vec![0f32; shape.iter().product()];
        let p = self.value_ptr(id)?;
        self.dev.download(p, bytes_mut(&mut v))?;
        Tensor::from_f32(shape, v).map_err(TrainError::from)
    }

    /// Forward outputs only (validation).
    pub fn forward(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Arc<Tensor>>, TrainError> {
        self.forward_with(weights, live, inputs, false)
    }

    /// The forward part, with the stash events of a step when `stash` (as the host executor:
    /// validation computes on f32 values throughout).
    fn forward_with(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        stash: bool,
    ) -> Result<BTreeMap<String, Arc<Tensor>>, TrainError> {
        let t0 = std::time::Instant::now();
        self.prepare(weights, live)?;
        self.play(
            0..self.plan.n_forward,
            &mut |n| inputs.get(n).cloned(),
            &[],
            stash,
        )?;
        self.dev.synchronize()?;
        let outs: Vec<(String, NodeId)> = self
            .plan
            .outputs
            .iter()
            .map(|(n, id, _)| (n.clone(), *id))
            .collect();
        let mut r = BTreeMap::new();
        for (name, id) in outs {
            r.insert(name, Arc::new(self.fetch(id)?));
        }
        *self.profile.entry("device forward").or_default() += t0.elapsed().as_secs_f64();
        self.absorb_launch_times()?;
        Ok(r)
    }

    /// One training step, as [`Executor::step`].
    pub fn step(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        loss: impl FnOnce(
            &BTreeMap<String, Arc<Tensor>>,
        ) -> Result<(f64, BTreeMap<String, Tensor>), TrainError>,
    ) -> Result<StepResult, TrainError> {
        let outputs = self.forward_with(weights, live, inputs, true)?;
        let (value, dout) = loss(&outputs)?;
        let mut grads_in = super::exec::grad_inputs(&self.plan.outputs, dout)?;
        let t0 = std::time::Instant::now();
        let n = self.plan.order.len();
        self.play(
            self.plan.n_forward..n,
            &mut |name| grads_in.remove(name),
            &[],
            true,
        )?;
        self.dev.synchronize()?;
        let wg: Vec<(String, NodeId)> = self.plan.weight_grads.clone();
        let mut grads = Weights::new();
        for (w, id) in wg {
            grads.insert(w, self.fetch(id)?);
        }
        *self.profile.entry("device backward").or_default() += t0.elapsed().as_secs_f64();
        self.absorb_launch_times()?;
        Ok(StepResult {
            loss: value,
            outputs,
            grads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::FirstFit;

    #[test]
    fn first_fit_reuses_freed_blocks_and_merges_neighbours() {
        let mut f = FirstFit::default();
        let a = f.take(100);
        let b = f.take(300);
        let c = f.take(256);
        assert_eq!((a, b, c), (0, 256, 768));
        f.give(b, 300);
        // A smaller block fits where b was; a larger one goes on top.
        assert_eq!(f.take(10), 256);
        assert_eq!(f.take(1000), 1024);
        f.give(a, 100);
        f.give(256, 10);
        // a, the 10-byte block and b's rest merged: 0..768.
        assert_eq!(f.take(700), 0);
        assert_eq!(f.top, 2048);
    }
}
