//! The loss on the device (`e2enc_codegen::cuda::train::loss`): each head's Dice + CE sums
//! there, the loss value and the gradient's coefficients on the host (after the ranks'
//! all-reduce), each head's gradient written on the device where the backward pass reads it.

use std::collections::BTreeMap;

use e2enc_ir::{NodeId, Tensor, Weights};

use super::{err, DeviceExecutor};
use crate::device::DevPtr;
use crate::exec::{LiveMasks, StepResult};
use crate::TrainError;

/// One head's loss on the device (`e2enc_codegen::cuda::train::loss`).
pub(super) struct HeadLoss {
    pub(super) name: String,
    pub(super) shape: [usize; 5],
    /// Index of its `sums` kernel (`reduce`, `grad` follow).
    pub(super) first: usize,
    /// Where the backward pass reads the head's gradient (an arena slot).
    pub(super) grad: DevPtr,
    pub(super) partials: DevPtr,
    pub(super) sums: DevPtr,
    pub(super) coefs: DevPtr,
    pub(super) labels: DevPtr,
    /// Four pointers: `[logits]` (sums), `[partials]` (reduce), `[logits, coefs]` (grad).
    pub(super) table: DevPtr,
    pub(super) n_sums: usize,
}

impl DeviceExecutor {
    /// Whether the loss can run on the device ([`DeviceExecutor::step_on_device`]).
    pub fn has_device_loss(&self) -> bool {
        !self.heads.is_empty()
    }

    /// One training step with the loss on the device: nnU-Net's Dice + CE of every head
    /// (`crate::loss`) against `labels` (by output name, at the head's resolution), weighted by
    /// `head_weights`; the logits stay on the device and the heads' gradients are written
    /// where the backward pass reads them. Between the loss's sums and its gradient, `reduce`
    /// gets every head's batch sums in one slice (the data-parallel all-reduce; a no-op for one
    /// process). The result has the loss and the weight gradients, no outputs.
    pub fn step_on_device(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        labels: &BTreeMap<String, Vec<u16>>,
        head_weights: &BTreeMap<String, f64>,
        reduce: &mut dyn FnMut(&mut [f64]) -> Result<(), TrainError>,
    ) -> Result<StepResult, TrainError> {
        self.pass_with_device_loss(weights, live, inputs, labels, head_weights, reduce, None)
            .and_then(|loss| {
                let t0 = std::time::Instant::now();
                let wg: Vec<(String, NodeId)> = self.plan.weight_grads.clone();
                let mut grads = Weights::new();
                for (w, id) in wg {
                    grads.insert(w, self.fetch(id)?);
                }
                *self.profile.entry("device backward").or_default() += t0.elapsed().as_secs_f64();
                Ok(StepResult {
                    loss,
                    outputs: BTreeMap::new(),
                    grads,
                })
            })
    }

    /// Forward, the loss on the device and backward (see [`DeviceExecutor::step_on_device`]),
    /// finished on the device when this returns; gives the loss. With `grads` (a reducer and
    /// the bucket size) the gradients are also summed over the ranks, each bucket started as
    /// soon as the pass has finished it (see [`DeviceExecutor::step_resident`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pass_with_device_loss(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        labels: &BTreeMap<String, Vec<u16>>,
        head_weights: &BTreeMap<String, f64>,
        reduce: &mut dyn FnMut(&mut [f64]) -> Result<(), TrainError>,
        mut grads: Option<(&mut dyn crate::dist::GradientReducer, usize)>,
    ) -> Result<f64, TrainError> {
        if self.heads.is_empty() {
            return Err(err("the heads of this network have no loss kernels"));
        }
        let t0 = std::time::Instant::now();
        self.prepare(weights, live)?;
        self.play(
            0..self.plan.n_forward,
            &mut |n| inputs.get(n).cloned(),
            &[],
            true,
        )?;
        // The batch sums of every head.
        let mut flat: Vec<f64> = Vec::new();
        for h in &self.heads {
            let [n, c, d, hh, w] = h.shape;
            let lbl = labels
                .get(&h.name)
                .ok_or_else(|| TrainError::Loss(format!("no labels for head `{}`", h.name)))?;
            if lbl.len() != n * d * hh * w {
                return Err(TrainError::Loss(format!(
                    "head `{}`: {} labels for [{n}, {d}, {hh}, {w}]",
                    h.name,
                    lbl.len()
                )));
            }
            if let Some(&l) = lbl.iter().find(|&&l| l as usize >= c) {
                return Err(TrainError::Loss(format!(
                    "head `{}`: label {l} is not below the class count {c}",
                    h.name
                )));
            }
            let li: Vec<u8> = lbl
                .iter()
                .flat_map(|&l| i32::from(l).to_le_bytes())
                .collect();
            self.dev.upload(h.labels, &li)?;
            self.dev.launch(h.first, [h.partials, h.table, h.labels])?;
            self.dev.launch(h.first + 1, [h.sums, h.table + 8, 0])?;
            let mut b = vec![0u8; h.n_sums * 8];
            self.dev.download(h.sums, &mut b)?;
            flat.extend(
                b.chunks_exact(8)
                    .map(|x| f64::from_le_bytes(x.try_into().expect("8 bytes"))),
            );
        }
        reduce(&mut flat)?;
        // The loss value on the host (the CPU's formula), the gradients on the device.
        let mut total = 0.0;
        let mut at = 0;
        for h in &self.heads {
            let sums =
                crate::loss::BatchSums::from_vec(flat[at..at + h.n_sums].to_vec(), h.shape[1])
                    .ok_or_else(|| err("the loss sums have the wrong length"))?;
            at += h.n_sums;
            let l = crate::loss::from_sums::<f32>(&[], h.shape, &[], &sums, false);
            let wt = *head_weights
                .get(&h.name)
                .ok_or_else(|| TrainError::Loss(format!("no weight for head `{}`", h.name)))?;
            total += wt * l.total;
            let mut co = crate::loss::grad_coefficients(&sums);
            co.push(wt);
            let cb: Vec<u8> = co.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.dev.upload(h.coefs, &cb)?;
            self.dev
                .launch(h.first + 2, [h.grad, h.table + 16, h.labels])?;
        }
        *self.profile.entry("device forward").or_default() += t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        let n = self.plan.order.len();
        let on_device: Vec<String> = self.plan.outputs.iter().map(|o| o.2.clone()).collect();
        let mut from = self.plan.n_forward;
        let mut buckets = 0;
        if let Some((r, bucket)) = grads.as_mut() {
            // The backward pass in pieces: after the node that finishes a bucket's last
            // gradient, that bucket is packed and its sum started, beside the rest of the pass.
            self.pack_gradients(live, *bucket)?;
            let bs = self.packed.as_ref().expect("packed above").buckets.clone();
            buckets = bs.len();
            for b in bs {
                let upto = (b.ready + 1).clamp(from, n);
                self.play(from..upto, &mut |_| None, &on_device, true)?;
                from = upto;
                self.start_bucket(b, &mut **r)?;
            }
        }
        self.play(from..n, &mut |_| None, &on_device, true)?;
        self.dev.synchronize()?;
        *self.profile.entry("device backward").or_default() += t0.elapsed().as_secs_f64();
        if let Some((r, _)) = grads {
            let t = std::time::Instant::now();
            self.finish_buckets(r)?;
            self.dev.synchronize()?;
            let what = if buckets > 1 {
                "wait for the gradients after the backward pass"
            } else {
                "all-reduce: gradients"
            };
            *self.profile.entry(what).or_default() += t.elapsed().as_secs_f64();
        }
        self.absorb_launch_times()?;
        Ok(total)
    }
}
