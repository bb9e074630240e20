//! Dynamic sparse training of the DSFF fusion weights (E2ENet §3): kernel-level masks, their
//! application after every optimizer step, and the periodic prune-and-regrow update.
//!
//! A mask is indexed by a weight's first two dimensions ([out, in] for convs, [in, out] for
//! transposed convs); one entry switches a whole kernel (the product of the trailing dimensions)
//! on or off. Files use the format `e2enc init --density` writes: f32 0/1 tensors `[d0, d1]` under
//! the weight's name, in a safetensors file.
//!
//! [`Masks::prune_regrow`] follows the released `kernel_death` (magnitude) and `kernel_growth`
//! (random): per layer, n = ceil(rate · live) live kernels with the smallest L1 norm die (exactly
//! n: ties broken by the lower flat index `o·d1 + i`, where the released code may remove a few
//! more at a tied threshold), then n kernels chosen uniformly without replacement among all
//! kernels dead after the pruning are re-enabled. A kernel pruned in this update may therefore
//! come straight back; that is what the released code does (it draws among mask == 0 after
//! death), and it keeps the regrowth pool independent of the weights. Density per layer is exactly
//! constant. [`Masks::update`] also zeroes the regrown kernels (normally already zero, as dead
//! kernels are masked every step) and the pruned ones in the weights and the momentum buffers.
//! The death rate follows [`death_rate`], cosine annealing stepped every iteration.

use std::collections::BTreeMap;
use std::path::Path;

use e2enc_ir::{Tensor, TensorData, Weights};
use rand_chacha::ChaCha8Rng;

use super::optim::with_f32_mut;
use crate::TrainError;

/// The released initial death rate (`--death-rate 0.5`).
pub const INITIAL_DEATH_RATE: f64 = 0.5;
/// The released floor of the cosine schedule (`eta_min = 0.001`).
pub const MIN_DEATH_RATE: f64 = 0.001;

/// The prune fraction at iteration `iter` of `total_iters`, like PyTorch's `CosineAnnealingLR`
/// (closed form) stepped every iteration: `min + (initial − min)·(1 + cos(π·iter/T))/2`. Past T
/// it keeps following the cosine, as PyTorch does; T = 0 gives `initial`.
pub fn death_rate(iter: usize, total_iters: usize, initial: f64, min: f64) -> f64 {
    if total_iters == 0 {
        return initial;
    }
    let x = std::f64::consts::PI * iter as f64 / total_iters as f64;
    min + (initial - min) * (1.0 + x.cos()) / 2.0
}

/// The L1 norm of each kernel of `w` (`kv` values each) in f64, each kernel's values added in
/// order from zero (the device's `e2o_l1` adds them the same way, so both give the same bits).
pub fn kernel_l1(w: &[f32], kv: usize) -> Vec<f64> {
    w.chunks(kv.max(1))
        .map(|k| k.iter().fold(0.0f64, |a, x| a + x.abs() as f64))
        .collect()
}

/// One layer's mask.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerMask {
    /// The weight's first two dimensions.
    pub shape: [usize; 2],
    /// Elements per kernel: the product of the weight's trailing dimensions.
    pub kernel_volume: usize,
    /// One flag per kernel, row-major over `shape`.
    pub alive: Vec<bool>,
}

impl LayerMask {
    pub fn live(&self) -> usize {
        self.alive.iter().filter(|&&a| a).count()
    }
}

/// What one layer's update did (kernel indices are flat, `o·d1 + i`, ascending).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerUpdate {
    pub name: String,
    /// Live kernels before and after the update.
    pub live: usize,
    pub pruned: Vec<usize>,
    pub regrown: Vec<usize>,
}

/// Per-layer and total counts of an update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateStats {
    pub layers: Vec<LayerUpdate>,
    pub pruned: usize,
    pub regrown: usize,
}

/// The masks of all sparse layers, by weight name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Masks {
    layers: BTreeMap<String, LayerMask>,
}

impl Masks {
    /// Builds masks from 0/1 tensors `[d0, d1]` named like the weights in `params` they mask.
    pub fn from_weights(masks: &Weights, params: &Weights) -> Result<Masks, TrainError> {
        let err = |n: &str, m: String| Err(TrainError::Mask(format!("mask `{n}`: {m}")));
        let mut layers = BTreeMap::new();
        for (name, m) in masks.iter() {
            let Some(p) = params.get(name) else {
                return err(name, "names no weight".into());
            };
            if p.shape().len() < 2 || p.as_f32().is_none() {
                return err(name, format!("the weight is {:?} {:?}; a masked weight is f32 with at least 2 dimensions", p.dtype(), p.shape()));
            }
            if m.shape() != &p.shape()[..2] {
                return err(
                    name,
                    format!(
                        "shape {:?}, expected {:?} (the weight's first two dimensions)",
                        m.shape(),
                        &p.shape()[..2]
                    ),
                );
            }
            let alive: Vec<bool> = match m.data() {
                TensorData::F32(v) if v.iter().all(|&x| x == 0.0 || x == 1.0) => {
                    v.iter().map(|&x| x == 1.0).collect()
                }
                TensorData::I32(v) if v.iter().all(|&x| x == 0 || x == 1) => {
                    v.iter().map(|&x| x == 1).collect()
                }
                _ => return err(name, "must hold only 0 and 1".into()),
            };
            layers.insert(
                name.clone(),
                LayerMask {
                    shape: [p.shape()[0], p.shape()[1]],
                    kernel_volume: p.shape()[2..].iter().product(),
                    alive,
                },
            );
        }
        Ok(Masks { layers })
    }

    /// Reads a mask file (as `e2enc init --density` writes) for the weights `params`.
    pub fn load(path: &Path, params: &Weights) -> Result<Masks, TrainError> {
        let w = Weights::load(path)?;
        Masks::from_weights(&w, params)
            .map_err(|e| TrainError::Mask(format!("{}: {e}", path.display())))
    }

    /// The masks as f32 0/1 tensors `[d0, d1]` under the weights' names.
    pub fn to_weights(&self) -> Weights {
        let mut w = Weights::new();
        for (n, l) in &self.layers {
            let v = l.alive.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect();
            w.insert(
                n,
                Tensor::from_f32(l.shape.to_vec(), v).expect("shape matches"),
            );
        }
        w
    }

    /// Writes the mask file atomically.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        Ok(self.to_weights().save(path)?)
    }

    pub fn get(&self, name: &str) -> Option<&LayerMask> {
        self.layers.get(name)
    }

    pub fn layers(&self) -> impl Iterator<Item = (&String, &LayerMask)> {
        self.layers.iter()
    }

    /// Live kernels over all layers.
    pub fn live(&self) -> usize {
        self.layers.values().map(LayerMask::live).sum()
    }

    /// Kernels over all layers.
    pub fn kernels(&self) -> usize {
        self.layers.values().map(|l| l.alive.len()).sum()
    }

    /// Zeroes every dead kernel in `w` (the weights, or the momentum buffers). Tensors missing
    /// from `w` are skipped (a buffer exists only after its first step); a tensor whose shape
    /// does not fit its mask is an error and nothing is changed.
    pub fn apply(&self, w: &mut Weights) -> Result<(), TrainError> {
        self.check_fits(w)?;
        for (n, l) in &self.layers {
            zero_kernels(w, n, l.kernel_volume, l.alive.iter().map(|a| !a));
        }
        Ok(())
    }

    fn check_fits(&self, w: &Weights) -> Result<(), TrainError> {
        for (n, l) in &self.layers {
            if let Some(t) = w.get(n) {
                let vol: usize = t.shape().iter().skip(2).product();
                if t.shape().len() < 2
                    || t.shape()[..2] != l.shape
                    || vol != l.kernel_volume
                    || t.as_f32().is_none()
                {
                    return Err(TrainError::Mask(format!(
                        "tensor `{n}` is {:?} {:?}; its mask is {:?} with {} elements per kernel",
                        t.dtype(),
                        t.shape(),
                        l.shape,
                        l.kernel_volume
                    )));
                }
            }
        }
        Ok(())
    }

    /// One topology update of every layer at prune fraction `rate` (see the module doc). Only
    /// the masks change; [`Masks::update`] also fixes the weights and momentum buffers.
    pub fn prune_regrow(
        &mut self,
        weights: &Weights,
        rate: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<UpdateStats, TrainError> {
        for n in self.layers.keys() {
            if weights.get(n).is_none() {
                return Err(TrainError::Mask(format!("masked weight `{n}` is missing")));
            }
        }
        self.check_fits(weights)?;
        let l1: BTreeMap<String, Vec<f64>> = self
            .layers
            .iter()
            .map(|(name, l)| {
                let w = weights.get(name).and_then(|t| t.as_f32()).expect("checked");
                (name.clone(), kernel_l1(w, l.kernel_volume))
            })
            .collect();
        self.prune_regrow_by(&l1, rate, rng)
    }

    /// [`Masks::prune_regrow`] on the kernels' L1 norms computed elsewhere ([`kernel_l1`]'s
    /// sums, by layer name, one per kernel): a GPU that holds the weights computes them there.
    pub fn prune_regrow_by(
        &mut self,
        l1: &BTreeMap<String, Vec<f64>>,
        rate: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<UpdateStats, TrainError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(TrainError::Mask(format!(
                "death rate {rate} is not in [0, 1]"
            )));
        }
        for (n, l) in &self.layers {
            match l1.get(n) {
                Some(v) if v.len() == l.alive.len() => {}
                Some(v) => {
                    return Err(TrainError::Mask(format!(
                        "{} kernel norms for `{n}`, which has {} kernels",
                        v.len(),
                        l.alive.len()
                    )))
                }
                None => return Err(TrainError::Mask(format!("no kernel norms for `{n}`"))),
            }
        }
        let mut stats = UpdateStats::default();
        for (name, l) in self.layers.iter_mut() {
            let norms = &l1[name];
            let live = l.live();
            let n = ((rate * live as f64).ceil() as usize).min(live);
            let mut order: Vec<(f64, usize)> = (0..l.alive.len())
                .filter(|&k| l.alive[k])
                .map(|k| (norms[k], k))
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut pruned: Vec<usize> = order[..n].iter().map(|&(_, k)| k).collect();
            pruned.sort_unstable();
            for &k in &pruned {
                l.alive[k] = false;
            }
            let dead: Vec<usize> = (0..l.alive.len()).filter(|&k| !l.alive[k]).collect();
            let mut regrown: Vec<usize> = rand::seq::index::sample(rng, dead.len(), n)
                .into_iter()
                .map(|i| dead[i])
                .collect();
            regrown.sort_unstable();
            for &k in &regrown {
                l.alive[k] = true;
            }
            stats.pruned += n;
            stats.regrown += n;
            stats.layers.push(LayerUpdate {
                name: name.clone(),
                live,
                pruned,
                regrown,
            });
        }
        Ok(stats)
    }

    /// [`Masks::prune_regrow`], then zeroes the regrown kernels and every dead kernel in the
    /// weights and the momentum buffers, so a regrown kernel restarts from 0 weight and 0
    /// momentum.
    pub fn update(
        &mut self,
        weights: &mut Weights,
        momentum: &mut Weights,
        rate: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<UpdateStats, TrainError> {
        self.check_fits(momentum)?;
        let stats = self.prune_regrow(weights, rate, rng)?;
        for u in &stats.layers {
            let kv = self.layers[&u.name].kernel_volume;
            let total = self.layers[&u.name].alive.len();
            for w in [&mut *weights, &mut *momentum] {
                let regrown = (0..total).map(|k| u.regrown.binary_search(&k).is_ok());
                zero_kernels(w, &u.name, kv, regrown);
            }
        }
        self.apply(weights)?;
        self.apply(momentum)?;
        Ok(stats)
    }
}

impl Masks {
    /// An update as bytes for the other ranks of a data-parallel run ([`Masks::adopt_update`]):
    /// per layer in name order, its kernel count, the alive flags after the update, and the
    /// regrown kernels (little-endian u32 counts and indices).
    pub fn encode_update(&self, stats: &UpdateStats) -> Vec<u8> {
        let mut out = Vec::new();
        let put = |out: &mut Vec<u8>, v: usize| out.extend_from_slice(&(v as u32).to_le_bytes());
        put(&mut out, self.layers.len());
        for (name, l) in &self.layers {
            put(&mut out, l.alive.len());
            out.extend(l.alive.iter().map(|&a| u8::from(a)));
            let regrown = stats
                .layers
                .iter()
                .find(|u| &u.name == name)
                .map_or(&[][..], |u| &u.regrown[..]);
            put(&mut out, regrown.len());
            for &k in regrown {
                put(&mut out, k);
            }
        }
        out
    }

    /// Makes the update rank 0 decided ([`Masks::encode_update`]) here: the same masks, the
    /// regrown kernels zeroed and every dead kernel zeroed in the weights and the momentum, as
    /// [`Masks::update`] did there. Returns the number of kernels regrown. Bytes that do not fit
    /// these masks are an error and nothing is changed.
    pub fn adopt_update(
        &mut self,
        bytes: &[u8],
        weights: &mut Weights,
        momentum: &mut Weights,
    ) -> Result<usize, TrainError> {
        let decided = self.decode_update(bytes)?;
        self.check_fits(weights)?;
        self.check_fits(momentum)?;
        let mut count = 0;
        for ((name, l), (alive, regrown)) in self.layers.iter_mut().zip(decided) {
            l.alive = alive;
            count += regrown.len();
            let mut off = vec![false; l.alive.len()];
            for k in regrown {
                off[k] = true;
            }
            for w in [&mut *weights, &mut *momentum] {
                zero_kernels(w, name, l.kernel_volume, off.iter().copied());
            }
        }
        self.apply(weights)?;
        self.apply(momentum)?;
        Ok(count)
    }
}

impl Masks {
    /// The masks after rank 0's update ([`Masks::encode_update`]) and its regrown kernels,
    /// per layer in name order; bytes that do not fit these masks are an error.
    fn decode_update(&self, bytes: &[u8]) -> Result<Vec<Decided>, TrainError> {
        let bad = |m: &str| TrainError::Mask(format!("the DSFF update from rank 0: {m}"));
        let mut at = 0usize;
        let take = |at: &mut usize, n: usize| -> Result<&[u8], TrainError> {
            let s = bytes.get(*at..*at + n).ok_or_else(|| bad("too short"))?;
            *at += n;
            Ok(s)
        };
        let word = |at: &mut usize| -> Result<usize, TrainError> {
            take(at, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        };
        if word(&mut at)? != self.layers.len() {
            return Err(bad("a different number of sparse layers"));
        }
        let mut decided = Vec::with_capacity(self.layers.len());
        for l in self.layers.values() {
            if word(&mut at)? != l.alive.len() {
                return Err(bad("a layer of a different size"));
            }
            let alive: Vec<bool> = take(&mut at, l.alive.len())?
                .iter()
                .map(|&b| b == 1)
                .collect();
            let n = word(&mut at)?;
            let mut regrown = Vec::with_capacity(n.min(l.alive.len()));
            for _ in 0..n {
                let k = word(&mut at)?;
                if k >= l.alive.len() {
                    return Err(bad("a kernel index past its layer"));
                }
                regrown.push(k);
            }
            decided.push((alive, regrown));
        }
        if at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(decided)
    }

    /// Makes rank 0's update ([`Masks::encode_update`]) here for weights a device holds:
    /// returns the number of kernels regrown and, by layer, the kernels to set to zero in the
    /// weights and the momentum (the pruned and the regrown ones, as rank 0 zeroes them).
    pub fn adopt_update_elsewhere(
        &mut self,
        bytes: &[u8],
    ) -> Result<(usize, BTreeMap<String, Vec<usize>>), TrainError> {
        let decided = self.decode_update(bytes)?;
        let mut count = 0;
        let mut zero = BTreeMap::new();
        for ((name, l), (alive, regrown)) in self.layers.iter_mut().zip(decided) {
            count += regrown.len();
            let mut off: Vec<usize> = (0..alive.len())
                .filter(|&k| l.alive[k] && !alive[k])
                .chain(regrown)
                .collect();
            off.sort_unstable();
            off.dedup();
            l.alive = alive;
            zero.insert(name.clone(), off);
        }
        Ok((count, zero))
    }
}

/// One layer of a decoded DSFF update: its alive flags after it, and its regrown kernels.
type Decided = (Vec<bool>, Vec<usize>);

/// Zeroes the kernels of tensor `name` in `w` for which `off` yields true.
fn zero_kernels(w: &mut Weights, name: &str, kv: usize, off: impl Iterator<Item = bool>) {
    with_f32_mut(w, name, |v| {
        for (k, o) in off.enumerate() {
            if o {
                v[k * kv..(k + 1) * kv].fill(0.0);
            }
        }
    });
}

#[cfg(test)]
#[path = "sparse_tests.rs"]
mod tests;
