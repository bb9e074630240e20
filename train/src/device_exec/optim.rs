//! The optimizer on the device (`e2enc_codegen::cuda::train::optim`): the weights and the
//! momentum kept there between steps, the gradient norm from the tensors' sums of squares, the
//! clipping and SGD's update there, and the state brought back when the host needs it.

use std::collections::{BTreeMap, HashMap};

use e2enc_ir::{Op, Tensor, Weights};

use super::{bytes, bytes_mut, err, DeviceExecutor};
use crate::device::DevPtr;
use crate::exec::LiveMasks;
use crate::TrainError;

/// The live floats of the weight gradients packed into one device buffer for the ranks' sum
/// (`e2g_gather` / `e2g_scatter`), for the masks `live`, in the order the backward pass
/// finishes them, cut into buckets that are summed as soon as their gradients are final.
pub(super) struct PackedGrads {
    /// The masks and the bucket size the tables were made for (made again when they change).
    live: LiveMasks,
    bucket: usize,
    /// The whole buffer's table (for the scatter after the sums).
    table: DevPtr,
    pub(super) buf: DevPtr,
    /// Floats packed.
    pub(super) total: usize,
    pub(super) buckets: Vec<GradBucket>,
}

/// A piece of [`PackedGrads`] summed on its own.
#[derive(Clone, Copy, Debug)]
pub(super) struct GradBucket {
    /// The position in the step's order after which every gradient in it is final.
    pub(super) ready: usize,
    /// Its gather table (offsets from its first float).
    pub(super) table: DevPtr,
    /// Its first float in the buffer, and its floats.
    pub(super) at: usize,
    pub(super) floats: usize,
}

/// Sums a few doubles over the ranks, in place.
type SumHook<'a> = &'a mut dyn FnMut(&mut [f64]) -> Result<(), TrainError>;

/// What a data-parallel step kept on the device exchanges with the other ranks
/// ([`DeviceExecutor::step_resident`]).
pub struct RankHooks<'a> {
    /// Sums the loss's batch sums (a few doubles per head) over the ranks, in place.
    pub sums: SumHook<'a>,
    /// Sums the weight gradients over the ranks, in the device's memory where it can.
    pub grads: &'a mut dyn crate::dist::GradientReducer,
    /// Floats per bucket of gradients (at least one gradient each): a bucket's sum starts
    /// ([`crate::dist::GradientReducer::start`]) as soon as the backward pass has finished its
    /// gradients, beside the rest of the pass.
    pub bucket: usize,
}

/// The optimizer's state and buffers on the device (made by the first
/// [`DeviceExecutor::upload_state`]).
pub(super) struct DeviceSgd {
    /// Kernel index of `e2o_sumsq` (`e2o_sgd` follows).
    pub(super) first: usize,
    /// One double per gradient tensor.
    sums: DevPtr,
    /// The gradients' addresses, and their lengths (ints).
    table: DevPtr,
    lens: DevPtr,
    /// `[lr, momentum, weight decay, clip factor, nesterov]` (doubles).
    scalars: DevPtr,
    slots: Vec<SgdSlot>,
}

/// One weight's optimizer state on the device.
pub(super) struct SgdSlot {
    name: String,
    weight: DevPtr,
    len: usize,
    momentum: DevPtr,
    /// Its live-kernel flags (ints, one per `(d0, d1)`), for a maskable weight, and room for
    /// its kernels' L1 norms (doubles).
    live: Option<(DevPtr, usize)>,
    l1: Option<DevPtr>,
    /// `[gradient, momentum, scalars, live]`, and `[length, kernel volume]`.
    table: DevPtr,
    info: DevPtr,
}

impl DeviceExecutor {
    /// Makes the device hold the weights and the optimizer's momentum (`momentum`: buffers by
    /// weight name; a missing one starts at zero) for [`DeviceExecutor::step_resident`], until
    /// [`DeviceExecutor::download_state`].
    pub fn upload_state(
        &mut self,
        weights: &Weights,
        momentum: &Weights,
    ) -> Result<(), TrainError> {
        if self.opt.is_none() {
            self.opt = Some(self.make_sgd()?);
        }
        self.resident = false;
        self.upload_weights(weights)?;
        let opt = self.opt.as_ref().expect("made above");
        for s in &opt.slots {
            let zeros;
            let data: &[f32] = match momentum.get(&s.name) {
                Some(t) => t
                    .as_f32()
                    .filter(|v| v.len() == s.len)
                    .ok_or_else(|| err(format!("momentum of `{}` does not fit it", s.name)))?,
                None => {
                    zeros = vec![0f32; s.len];
                    &zeros
                }
            };
            self.dev.upload(s.momentum, bytes(data))?;
        }
        self.resident = true;
        Ok(())
    }

    /// The weights and the momentum buffers the device holds (every weight that has a
    /// gradient has a buffer); the host holds them again from here on.
    pub fn download_state(&mut self) -> Result<(Weights, Weights), TrainError> {
        if !self.resident {
            return Err(err("the device does not hold the weights"));
        }
        let g = self.plan.g.clone();
        let mut w = Weights::new();
        for id in g.node_ids() {
            if let Op::Weight { name } = &g.node(id).op {
                let shape = g.node(id).ty.shape.clone();
                let mut v = vec![0f32; shape.iter().product()];
                self.dev.download(self.weights[name].0, bytes_mut(&mut v))?;
                w.insert(name.clone(), Tensor::from_f32(shape, v)?);
            }
        }
        let mut m = Weights::new();
        if let Some(opt) = &self.opt {
            for s in &opt.slots {
                let shape = w
                    .get(&s.name)
                    .map(|t| t.shape().to_vec())
                    .ok_or_else(|| err(format!("no weight `{}`", s.name)))?;
                let mut v = vec![0f32; s.len];
                self.dev.download(s.momentum, bytes_mut(&mut v))?;
                m.insert(s.name.clone(), Tensor::from_f32(shape, v)?);
            }
        }
        self.resident = false;
        Ok((w, m))
    }

    /// One training step and the optimizer's update on the device, which holds the weights and
    /// the momentum ([`DeviceExecutor::upload_state`]): the loss on the device as in
    /// [`DeviceExecutor::step_on_device`], the gradient norm (the tensors' sums of squares come
    /// back, a few bytes each), the clipping at `max_norm` and `sgd`'s step with learning rate
    /// `lr` (`Sgd::step`'s arithmetic in f32), dead DSFF kernels of the weights and the momentum
    /// set to zero. Returns the loss and the gradient norm before clipping; a non-finite norm
    /// leaves the weights as they were (the caller stops).
    ///
    /// As one rank of a data-parallel run (`ranks`; `None`: one process), the loss's batch sums
    /// are summed over the ranks between the device's sums and its gradient of the logits, and
    /// the weight gradients (their live floats, packed) between the backward pass and the norm,
    /// so every rank takes the same update. The gradients go in buckets of `bucket` floats,
    /// each summed as soon as the backward pass has finished it, beside the rest of the pass
    /// (on a second CUDA stream on a GPU). `--profile`'s "wait for the gradients after the
    /// backward pass" is the time the step waited for the sums once the pass was done ("all-reduce:
    /// gradients" when they fit one bucket, which starts after the pass's last gradient).
    #[allow(clippy::too_many_arguments)]
    pub fn step_resident(
        &mut self,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        labels: &BTreeMap<String, Vec<u16>>,
        head_weights: &BTreeMap<String, f64>,
        sgd: &crate::optim::Sgd,
        lr: f64,
        max_norm: f64,
        ranks: Option<RankHooks<'_>>,
    ) -> Result<(f64, f64), TrainError> {
        if !self.resident {
            return Err(err(
                "step_resident: upload the weights first (upload_state)",
            ));
        }
        let empty = Weights::new();
        let (sums, grads, bucket): (SumHook<'_>, _, _) = match ranks {
            Some(r) => (r.sums, Some(r.grads), r.bucket),
            None => (&mut |_| Ok(()), None, 0),
        };
        let loss = self.pass_with_device_loss(
            &empty,
            live,
            inputs,
            labels,
            head_weights,
            sums,
            grads.map(|r| (r, bucket)),
        )?;
        let t0 = std::time::Instant::now();
        let opt = self.opt.as_ref().ok_or_else(|| err("no optimizer state"))?;
        // The live flags of the masked weights.
        for s in &opt.slots {
            if let Some((p, n)) = s.live {
                let flags: Vec<u8> = match live.get(&s.name) {
                    Some(m) if m.len() == n => {
                        m.iter().flat_map(|&l| i32::from(l).to_le_bytes()).collect()
                    }
                    Some(m) => {
                        return Err(err(format!(
                            "live mask of `{}` has {} flags, the weight {n} kernels",
                            s.name,
                            m.len()
                        )))
                    }
                    None => std::iter::repeat_n(1i32.to_le_bytes(), n)
                        .flatten()
                        .collect(),
                };
                self.dev.upload(p, &flags)?;
            }
        }
        let t = opt.slots.len();
        self.dev
            .launch(opt.first, [opt.sums, opt.table, opt.lens])?;
        let mut b = vec![0u8; t * 8];
        self.dev.download(opt.sums, &mut b)?;
        let total = b
            .chunks_exact(8)
            .map(|x| f64::from_le_bytes(x.try_into().expect("8 bytes")))
            .sum::<f64>()
            .sqrt();
        if total.is_finite() {
            let coef = max_norm / (total + 1e-6);
            let c = if coef < 1.0 { coef as f32 } else { 1.0 };
            let sc = [
                lr,
                sgd.momentum,
                sgd.weight_decay,
                f64::from(c),
                if sgd.nesterov { 1.0 } else { 0.0 },
            ];
            let sb: Vec<u8> = sc.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.dev.upload(opt.scalars, &sb)?;
            for s in &opt.slots {
                self.dev
                    .launch(opt.first + 1, [s.weight, s.table, s.info])?;
            }
            self.dev.synchronize()?;
        }
        *self.profile.entry("device optimizer").or_default() += t0.elapsed().as_secs_f64();
        self.absorb_launch_times()?;
        Ok((loss, total))
    }

    /// The device's CUDA stream, its context made current on this thread (`None` on the host
    /// emulation): see [`crate::device::Device::cuda_stream`].
    pub fn cuda_stream(&mut self) -> Result<Option<u64>, TrainError> {
        self.dev.cuda_stream()
    }

    /// Floats of the gradients the last data-parallel step sent into the ranks' sum (the live
    /// kernels of DSFF layers, every other gradient whole); 0 before one.
    pub fn packed_gradient_floats(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.total)
    }

    /// The runs `(ready, arena float offset, floats)` of the gradients that travel under
    /// `live`, in the order the backward pass finishes them (`ready`: the position in the
    /// step's order of the node that makes the gradient final): a masked weight's live kernels
    /// (adjacent ones merged), every other gradient whole.
    fn live_gradient_runs(&self, live: &LiveMasks) -> Result<Vec<(usize, u64, usize)>, TrainError> {
        let g = &self.plan.g;
        let at: HashMap<e2enc_ir::NodeId, usize> = self
            .plan
            .order
            .iter()
            .enumerate()
            .map(|(p, &id)| (id, p))
            .collect();
        let mut runs: Vec<(usize, u64, usize)> = Vec::new();
        for (name, id) in &self.plan.weight_grads {
            let ready = *at.get(id).ok_or_else(|| {
                err(format!(
                    "the gradient of `{name}` is not computed by the step"
                ))
            })?;
            let shape = &g.node(*id).ty.shape;
            let n: usize = shape.iter().product();
            let base = (self.value_ptr(*id)? - self.arena) / 4;
            let kernels = if shape.len() >= 3 {
                shape[0] * shape[1]
            } else {
                0
            };
            match live.get(name) {
                Some(m) if kernels > 0 && m.len() == kernels => {
                    let kv = (n / kernels) as u64;
                    let mut k = 0;
                    while k < kernels {
                        if !m[k] {
                            k += 1;
                            continue;
                        }
                        let start = k;
                        while k < kernels && m[k] {
                            k += 1;
                        }
                        runs.push((ready, base + start as u64 * kv, (k - start) * kv as usize));
                    }
                }
                _ => runs.push((ready, base, n)),
            }
        }
        // Stable: a gradient's runs stay in arena order.
        runs.sort_by_key(|r| r.0);
        Ok(runs)
    }

    /// Makes (or keeps) the packing of the gradients for the masks `live` in buckets of about
    /// `bucket` floats: the runs of [`DeviceExecutor::live_gradient_runs`] cut at gradient
    /// boundaries once a bucket holds `bucket` floats (a larger gradient is a bucket of its
    /// own), each bucket's gather table and the whole buffer's, uploaded.
    pub(super) fn pack_gradients(
        &mut self,
        live: &LiveMasks,
        bucket: usize,
    ) -> Result<(), TrainError> {
        let bucket = bucket.max(1);
        if self
            .packed
            .as_ref()
            .is_some_and(|p| &p.live == live && p.bucket == bucket)
        {
            return Ok(());
        }
        let runs = self.live_gradient_runs(live)?;
        let (table, total) = e2enc_codegen::cuda::train::gather::gather_table(
            &runs.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
        );
        // The buckets: runs of the same gradient share its `ready`, so cutting only where
        // `ready` changes keeps each gradient whole.
        let mut cuts: Vec<(usize, Vec<(u64, usize)>)> = Vec::new();
        let mut floats = 0usize;
        for (i, &(ready, src, n)) in runs.iter().enumerate() {
            let new_gradient = i == 0 || runs[i - 1].0 != ready;
            if cuts.is_empty() || (new_gradient && floats >= bucket) {
                cuts.push((ready, Vec::new()));
                floats = 0;
            }
            let last = cuts.last_mut().expect("pushed above");
            last.0 = ready;
            last.1.push((src, n));
            floats += n;
        }
        let (tp, bp) = match &self.packed {
            Some(p) => (p.table, p.buf),
            None => {
                // Room for every kernel a run and every float live, the whole table and one
                // per bucket (at most one bucket per run): made once.
                let g = &self.plan.g;
                let (mut most_runs, mut floats) = (0usize, 0usize);
                for (_, id) in &self.plan.weight_grads {
                    let shape = &g.node(*id).ty.shape;
                    floats += shape.iter().product::<usize>();
                    most_runs += if shape.len() >= 3 {
                        shape[0] * shape[1]
                    } else {
                        1
                    };
                }
                (
                    self.dev.alloc(
                        (3 + 2 * most_runs + 5 * most_runs) * 8,
                        "the packed gradients' tables",
                    )?,
                    self.dev.alloc(floats.max(1) * 4, "the packed gradients")?,
                )
            }
        };
        self.dev.upload(tp, &table)?;
        let mut buckets = Vec::new();
        let (mut at_byte, mut at) = (tp + table.len() as u64, 0usize);
        for (ready, pieces) in cuts {
            let (t, n) = e2enc_codegen::cuda::train::gather::gather_table(&pieces);
            if n == 0 {
                continue;
            }
            self.dev.upload(at_byte, &t)?;
            buckets.push(GradBucket {
                ready,
                table: at_byte,
                at,
                floats: n,
            });
            at_byte += t.len() as u64;
            at += n;
        }
        debug_assert_eq!(at, total);
        self.packed = Some(PackedGrads {
            live: live.clone(),
            bucket,
            table: tp,
            buf: bp,
            total,
            buckets,
        });
        Ok(())
    }

    /// Packs bucket `b`'s gradients (`e2g_gather`) and starts their sum over the ranks with
    /// `r` (beside what is launched next, where the device can).
    pub(super) fn start_bucket(
        &mut self,
        b: GradBucket,
        r: &mut dyn crate::dist::GradientReducer,
    ) -> Result<(), TrainError> {
        let buf = self
            .packed
            .as_ref()
            .ok_or_else(|| err("no packed gradients"))?
            .buf;
        let dst = buf + (b.at * 4) as u64;
        self.dev
            .launch(self.gather_first, [dst, self.arena, b.table])?;
        r.start(self.dev.as_mut(), &[(dst, b.floats)])
    }

    /// Waits for every bucket's sum (`r`'s [`crate::dist::GradientReducer::finish`]) and puts
    /// the sums back in the gradients (`e2g_scatter`). A dead kernel's gradient is exactly zero
    /// on every rank, so it is left where it is.
    pub(super) fn finish_buckets(
        &mut self,
        r: &mut dyn crate::dist::GradientReducer,
    ) -> Result<(), TrainError> {
        r.finish(self.dev.as_mut())?;
        let p = self
            .packed
            .as_ref()
            .ok_or_else(|| err("no packed gradients"))?;
        if p.total == 0 {
            return Ok(());
        }
        let (table, buf) = (p.table, p.buf);
        self.dev
            .launch(self.gather_first + 1, [self.arena, buf, table])
    }

    /// Floats of each gradient bucket of the last data-parallel step, in the order they were
    /// summed; empty before one.
    pub fn gradient_buckets(&self) -> Vec<usize> {
        self.packed
            .as_ref()
            .map_or_else(Vec::new, |p| p.buckets.iter().map(|b| b.floats).collect())
    }

    /// The L1 norm of every kernel of the maskable weights the device holds, by weight name
    /// (`e2o_l1`: the same bits as `sparse::kernel_l1` on the host), for a DSFF update decided
    /// on the host without the weights coming back ([`crate::sparse::Masks::prune_regrow_by`]).
    pub fn kernel_l1(&mut self) -> Result<BTreeMap<String, Vec<f64>>, TrainError> {
        if !self.resident {
            return Err(err("kernel_l1: the device does not hold the weights"));
        }
        let opt = self.opt.as_ref().ok_or_else(|| err("no optimizer state"))?;
        let mut out = BTreeMap::new();
        for s in &opt.slots {
            let (Some((_, n)), Some(p)) = (s.live, s.l1) else {
                continue;
            };
            self.dev.launch(opt.first + 2, [p, s.weight, s.info])?;
            let mut b = vec![0u8; n * 8];
            self.dev.download(p, &mut b)?;
            let v = b
                .chunks_exact(8)
                .map(|x| f64::from_le_bytes(x.try_into().expect("8 bytes")))
                .collect();
            out.insert(s.name.clone(), v);
        }
        Ok(out)
    }

    /// Sets the kernels `which` lists (flat `(d0, d1)` indices, by maskable weight name) to zero
    /// in the weights and the momentum the device holds: what [`crate::sparse::Masks::update`]
    /// does to the pruned and the regrown kernels, after [`DeviceExecutor::kernel_l1`].
    pub fn zero_kernels(&mut self, which: &BTreeMap<String, Vec<usize>>) -> Result<(), TrainError> {
        if !self.resident {
            return Err(err("zero_kernels: the device does not hold the weights"));
        }
        let opt = self.opt.as_ref().ok_or_else(|| err("no optimizer state"))?;
        for (name, ks) in which {
            let s = opt
                .slots
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| err(format!("no maskable weight `{name}` on the device")))?;
            let (Some((_, n)), Some(flags)) = (s.live, s.l1) else {
                return Err(err(format!("`{name}` has no kernel mask on the device")));
            };
            let mut z = vec![0i32; n];
            for &k in ks {
                *z.get_mut(k)
                    .ok_or_else(|| err(format!("kernel {k} of `{name}`: it has {n}")))? = 1;
            }
            // The norms' buffer (n doubles) holds the flags (n ints).
            let b: Vec<u8> = z.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.dev.upload(flags, &b)?;
            for t in [s.weight, s.momentum] {
                self.dev.launch(opt.first + 3, [t, flags, s.info])?;
            }
        }
        self.dev.synchronize()
    }

    /// Allocates the optimizer's buffers and tables.
    fn make_sgd(&mut self) -> Result<DeviceSgd, TrainError> {
        let g = self.plan.g.clone();
        let wg = self.plan.weight_grads.clone();
        let t = wg.len();
        let sums = self.dev.alloc(t.max(1) * 8, "the gradient norm's sums")?;
        let table = self.dev.alloc(t.max(1) * 8, "the gradients' table")?;
        let lens = self.dev.alloc(t.max(1) * 4, "the gradients' lengths")?;
        let scalars = self.dev.alloc(5 * 8, "the optimizer's scalars")?;
        let mut tb = Vec::new();
        let mut lb = Vec::new();
        let mut slots = Vec::new();
        for (name, id) in &wg {
            let grad = self.value_ptr(*id)?;
            let (weight, bytes) = *self
                .weights
                .get(name)
                .ok_or_else(|| err(format!("no weight `{name}` for its gradient")))?;
            let len = bytes / 4;
            let shape = g.node(*id).ty.shape.clone();
            if shape.iter().product::<usize>() != len {
                return Err(err(format!("the gradient of `{name}` does not fit it")));
            }
            let n = i32::try_from(len).map_err(|_| err(format!("`{name}` is too large")))?;
            tb.extend_from_slice(&grad.to_le_bytes());
            lb.extend_from_slice(&n.to_le_bytes());
            let momentum = self
                .dev
                .alloc(bytes, &format!("the momentum of `{name}`"))?;
            let maskable = self.maskable.as_ref().is_none_or(|m| m.contains(name));
            let kernels = if shape.len() >= 3 {
                shape[0] * shape[1]
            } else {
                0
            };
            let live = if maskable && kernels > 0 {
                Some((self.dev.alloc(kernels * 4, "live flags")?, kernels))
            } else {
                None
            };
            let l1 = match live {
                Some(_) => Some(self.dev.alloc(kernels * 8, "kernel norms")?),
                None => None,
            };
            let kv = len.checked_div(kernels).unwrap_or(1);
            let st = self.dev.alloc(4 * 8, "an optimizer table")?;
            let row: Vec<u8> = [grad, momentum, scalars, live.map_or(0, |l| l.0)]
                .iter()
                .flat_map(|p| p.to_le_bytes())
                .collect();
            self.dev.upload(st, &row)?;
            let info = self.dev.alloc(2 * 4, "an optimizer table")?;
            let ib: Vec<u8> = [n, kv as i32]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            self.dev.upload(info, &ib)?;
            slots.push(SgdSlot {
                name: name.clone(),
                weight,
                len,
                momentum,
                live,
                l1,
                table: st,
                info,
            });
        }
        self.dev.upload(table, &tb)?;
        self.dev.upload(lens, &lb)?;
        Ok(DeviceSgd {
            first: self.opt_first,
            sums,
            table,
            lens,
            scalars,
            slots,
        })
    }
}
