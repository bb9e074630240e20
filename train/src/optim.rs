//! The optimizer of nnU-Net v1 / E2ENet: SGD with Nesterov momentum, gradient-norm clipping and
//! the poly learning-rate schedule, with a state file that makes a resumed run bit-identical.
//!
//! [`Sgd::step`] follows `torch.optim.SGD(momentum, nesterov, weight_decay, dampening=0)` element
//! by element in f32: `g = grad + wd·w; buf = μ·buf + g; g = g + μ·buf` (Nesterov; plain momentum
//! uses `g = buf`); `w = w − lr·g`. Buffers start at zero, which equals PyTorch's first-step
//! `clone(g)`. Hyper-parameters are kept in f64 and rounded to f32 at use, as PyTorch rounds a
//! Python float `alpha` to the tensor's dtype. Parameters without a gradient are left alone, like
//! PyTorch's `grad is None`. [`clip_grad_norm`] is `clip_grad_norm_(params, max_norm)` with the
//! norm accumulated in f64. The state (momentum buffers named `momentum.<param>` plus the
//! hyper-parameters as safetensors metadata, f64 printed in Rust's shortest round-trip form) is
//! written atomically through `e2enc_ir::weights::write_atomic`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use e2enc_ir::weights::write_atomic;
use e2enc_ir::{IrError, Tensor, Weights};

use crate::TrainError;

/// nnU-Net's initial learning rate.
pub const INITIAL_LR: f64 = 0.01;
/// nnU-Net's gradient-norm clip.
pub const MAX_GRAD_NORM: f64 = 12.0;
/// Prefix of the momentum buffers' names in the state file.
pub const MOMENTUM_PREFIX: &str = "momentum.";
const FORMAT: &str = "e2enc-sgd-1";

/// The poly schedule of nnU-Net v1: `initial_lr · (1 − epoch/max_epochs)^0.9` (0 from
/// `max_epochs` on). nnU-Net trains epoch e with `poly_lr(e)` (set at the start of training and
/// after each epoch for the next one).
pub fn poly_lr(epoch: usize, max_epochs: usize, initial_lr: f64) -> f64 {
    if max_epochs == 0 || epoch >= max_epochs {
        return 0.0;
    }
    initial_lr * (1.0 - epoch as f64 / max_epochs as f64).powf(0.9)
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`, like PyTorch's
/// `clip_grad_norm_`: total = sqrt(Σ g²) over every tensor (f64), coef = max_norm/(total + 1e-6),
/// and every gradient is multiplied by coef (as f32) only when coef < 1. Returns the norm before
/// clipping. A non-finite norm clips nothing and is returned as is (the caller should skip the
/// step). Non-f32 tensors are ignored.
pub fn clip_grad_norm(grads: &mut Weights, max_norm: f64) -> f64 {
    let total = grads
        .iter()
        .filter_map(|(_, t)| t.as_f32())
        .flat_map(|v| v.iter())
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        let c = coef as f32;
        let names: Vec<String> = grads.names().cloned().collect();
        for n in names {
            with_f32_mut(grads, &n, |v| v.iter_mut().for_each(|g| *g *= c));
        }
    }
    total
}

/// Runs `f` on the f32 data of tensor `name` in place (copying only if the tensor is shared).
/// Does nothing when the tensor is missing or not f32.
pub(crate) fn with_f32_mut(w: &mut Weights, name: &str, f: impl FnOnce(&mut [f32])) {
    let Some(arc) = w.remove(name) else { return };
    let mut t = Arc::unwrap_or_clone(arc);
    if let Some(v) = t.as_f32_mut() {
        f(v);
    }
    w.insert(name, t);
}

/// SGD with (Nesterov) momentum and L2 weight decay, dampening 0.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// The initial learning rate (the schedule's base; [`Sgd::step`] takes the current one).
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// One buffer per parameter that has had a gradient, under the parameter's name.
    pub momentum_buffers: Weights,
}

impl Sgd {
    pub fn new(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Sgd {
        Sgd {
            lr,
            momentum,
            weight_decay,
            nesterov,
            momentum_buffers: Weights::new(),
        }
    }

    /// nnU-Net v1's settings: lr 0.01, momentum 0.99, Nesterov, weight decay 3e-5.
    pub fn nnunet() -> Sgd {
        Sgd::new(INITIAL_LR, 0.99, 3e-5, true)
    }

    /// One step with learning rate `lr` on every parameter that has a gradient in `grads`. All
    /// gradients are checked (name known, f32, same shape) before anything changes.
    pub fn step(
        &mut self,
        weights: &mut Weights,
        grads: &Weights,
        lr: f64,
    ) -> Result<(), TrainError> {
        for (name, g) in grads.iter() {
            let w = weights.get(name).ok_or_else(|| {
                TrainError::Optimizer(format!("sgd: gradient `{name}` names no parameter"))
            })?;
            if g.shape() != w.shape() || g.as_f32().is_none() || w.as_f32().is_none() {
                return Err(TrainError::Optimizer(format!(
                    "sgd: gradient `{name}` is {:?} {:?}, the parameter {:?} {:?} (both must be f32 of one shape)",
                    g.dtype(), g.shape(), w.dtype(), w.shape()
                )));
            }
            if let Some(b) = self.momentum_buffers.get(name) {
                if b.shape() != w.shape() || b.as_f32().is_none() {
                    return Err(TrainError::Optimizer(format!(
                        "sgd: momentum buffer `{name}` has shape {:?}, the parameter {:?}",
                        b.shape(),
                        w.shape()
                    )));
                }
            }
        }
        let (lr, mu, wd) = (lr as f32, self.momentum as f32, self.weight_decay as f32);
        let use_buf = self.momentum != 0.0;
        for (name, g) in grads.iter() {
            let shape = g.shape().to_vec();
            let g = g.as_f32().expect("checked");
            let mut buf = if use_buf {
                Some(match self.momentum_buffers.remove(name) {
                    Some(b) => Arc::unwrap_or_clone(b),
                    None => Tensor::from_f32(shape, vec![0.0; g.len()])?,
                })
            } else {
                None
            };
            let nesterov = self.nesterov;
            with_f32_mut(weights, name, |w| {
                let mut b = buf.as_mut().and_then(|b| b.as_f32_mut());
                for i in 0..w.len() {
                    let mut d = g[i] + wd * w[i];
                    if let Some(b) = b.as_deref_mut() {
                        b[i] = mu * b[i] + d;
                        d = if nesterov { d + mu * b[i] } else { b[i] };
                    }
                    w[i] -= lr * d;
                }
            });
            if let Some(b) = buf {
                self.momentum_buffers.insert(name.clone(), b);
            }
        }
        Ok(())
    }

    /// The state as safetensors bytes: `momentum.<param>` tensors and the hyper-parameters as
    /// metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let mut w = Weights::new();
        for (n, t) in self.momentum_buffers.iter() {
            w.insert(format!("{MOMENTUM_PREFIX}{n}"), (**t).clone());
        }
        let md = BTreeMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("lr".to_string(), self.lr.to_string()),
            ("momentum".to_string(), self.momentum.to_string()),
            ("weight_decay".to_string(), self.weight_decay.to_string()),
            ("nesterov".to_string(), self.nesterov.to_string()),
        ]);
        w.to_bytes(Some(md)).map_err(TrainError::Optimizer)
    }

    /// Parses [`Sgd::to_bytes`]' output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sgd, String> {
        let md = safetensors_metadata(bytes)?;
        if md.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format!(
                "not an SGD state (metadata `format` is not `{FORMAT}`)"
            ));
        }
        let num = |k: &str| -> Result<f64, String> {
            md.get(k)
                .ok_or_else(|| format!("metadata `{k}` is missing"))?
                .parse::<f64>()
                .map_err(|e| format!("metadata `{k}`: {e}"))
        };
        let nesterov = match md.get("nesterov").map(String::as_str) {
            Some("true") => true,
            Some("false") => false,
            _ => return Err("metadata `nesterov` must be `true` or `false`".into()),
        };
        let mut sgd = Sgd::new(num("lr")?, num("momentum")?, num("weight_decay")?, nesterov);
        for (n, t) in Weights::from_bytes(bytes)?.iter() {
            let p = n.strip_prefix(MOMENTUM_PREFIX).ok_or_else(|| {
                format!("tensor `{n}` is not a momentum buffer (`{MOMENTUM_PREFIX}<param>`)")
            })?;
            if t.as_f32().is_none() {
                return Err(format!("tensor `{n}` must be f32"));
            }
            sgd.momentum_buffers.insert(p, (**t).clone());
        }
        Ok(sgd)
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        Ok(write_atomic(path, &self.to_bytes()?)?)
    }

    /// Reads a state written by [`Sgd::save`].
    pub fn load(path: &Path) -> Result<Sgd, TrainError> {
        let bytes = e2enc_ir::files::read_bounded(path, e2enc_ir::files::MAX_TENSOR_FILE_BYTES)?;
        Sgd::from_bytes(&bytes).map_err(|msg| {
            TrainError::Ir(IrError::File {
                path: path.to_path_buf(),
                msg,
            })
        })
    }
}

/// The `__metadata__` map of a safetensors buffer (empty when absent).
fn safetensors_metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let bad = || "not a valid safetensors file".to_string();
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .ok_or_else(bad)?;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..end).ok_or_else(bad)?)
        .map_err(|e| format!("header: {e}"))?;
    let mut out = BTreeMap::new();
    if let Some(m) = header.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in m {
            let v = v
                .as_str()
                .ok_or_else(|| format!("metadata `{k}` is not a string"))?;
            out.insert(k.clone(), v.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "optim_tests.rs"]
mod tests;
