//! The training loss: nnU-Net v1's `DC_and_CE_loss` with deep supervision, value and gradient.
//!
//! [`dc_and_ce`] is `SoftDiceLoss(apply_nonlin=softmax, batch_dice=True, do_bg=False,
//! smooth=1e-5)` plus cross entropy (mean over voxels and samples), weights 1 and 1, summed. With
//! p = softmax over the class axis, y the one-hot label and sums over the batch and all voxels:
//!
//! ```text
//! tp_c = Σ p·y    fp_c = Σ p(1-y)    fn_c = Σ (1-p)y
//! dc_c = (2 tp_c + smooth) / (2 tp_c + fp_c + fn_c + smooth + 1e-8)
//! dice = -mean_{c>=1} dc_c          ce = mean_voxels(-log p_label)       total = ce + dice
//! ```
//!
//! The `+ 1e-8` is in nnU-Net v1's `SoftDiceLoss.forward` and is kept so values match it. The
//! dice term lies in [-1, 0], so the total can be negative (a perfect prediction gives about -1).
//! The gradient with respect to the logits is analytic: with 2tp+fp+fn = Σp + Σy = den - smooth -
//! 1e-8, ∂dc_c/∂p = (2y - dc_c)/den_c, pushed through the softmax Jacobian
//! (∂L/∂z_k = p_k (g_k - Σ_c p_c g_c)); CE contributes (p - y)/M. Every sum is accumulated in f64
//! and the softmax is evaluated in f64; the gradient is returned as f32 in the logits' layout.
//!
//! Deep supervision follows nnU-Net's `MultipleOutputLoss2` with the weights the released network
//! actually gets ([`DS_WEIGHTS`]); targets for the coarse heads come from [`downsample_labels`],
//! which reproduces the order-0 resize of `DownsampleSegForDSTransform2` voxel for voxel.
//! Labels are `u16` class indices.

use std::collections::BTreeMap;

use crate::TrainError;

/// nnU-Net's soft Dice smoothing term.
pub const SMOOTH: f64 = 1e-5;

/// Deep-supervision weights of the four heads (full resolution first): nnU-Net's
/// (1, 1/2, 1/4, 1/8, 0) normalised over the first four entries, i.e. (8, 4, 2, 1)/15.
pub const DS_WEIGHTS: [f64; 4] = [8.0 / 15.0, 4.0 / 15.0, 2.0 / 15.0, 1.0 / 15.0];

/// Down-sampling factors of the deep-supervision targets for five (2,2,2) pooling steps.
pub const DS_FACTORS: [[usize; 3]; 4] = [[1, 1, 1], [2, 2, 2], [4, 4, 4], [8, 8, 8]];

/// One head's loss: the value, its parts, and the gradient with respect to the logits.
#[derive(Clone, Debug)]
pub struct Loss {
    /// `ce + dice` (may be negative).
    pub total: f64,
    /// Mean cross entropy.
    pub ce: f64,
    /// The dice term, `-mean_{c>=1} dc_c`, in [-1, 0].
    pub dice: f64,
    /// `dc_c` for every class, background (c = 0, not in the loss) included.
    pub dice_per_class: Vec<f64>,
    /// ∂total/∂logits, same layout `[N, C, D, H, W]` as the logits.
    pub grad: Vec<f32>,
}

/// The deep-supervision loss: weighted sum of the heads' totals; each head's `grad` has been
/// multiplied by its weight, so it is ∂total/∂(that head's logits).
#[derive(Clone, Debug)]
pub struct DsLoss {
    pub total: f64,
    pub heads: Vec<Loss>,
}

/// Dice + CE loss and its gradient for `logits` of shape `[N, C, D, H, W]` and `labels` of shape
/// `[N, D, H, W]`. Errors on mismatched lengths, fewer than 2 classes, an empty tensor, or a label
/// `>= C`.
pub fn dc_and_ce(logits: &[f32], shape: [usize; 5], labels: &[u16]) -> Result<Loss, TrainError> {
    dc_and_ce_any(logits, shape, labels)
}

/// [`dc_and_ce`] for f32 or f64 logits (f64 lets the tests take exact finite differences).
pub(crate) fn dc_and_ce_any<T: Copy + Into<f64>>(
    logits: &[T],
    shape: [usize; 5],
    labels: &[u16],
) -> Result<Loss, TrainError> {
    let sums = batch_sums(logits, shape, labels)?;
    Ok(from_sums(logits, shape, labels, &sums, true))
}

/// The batch sums one head's loss is made of. Data-parallel training adds them up over the ranks
/// ([`BatchSums::as_slice_mut`] is what gets all-reduced) before [`from_sums`], so the loss and
/// its gradient are those of the global batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSums {
    /// `[tp_0..tp_C, Σp_0..Σp_C, Σy_0..Σy_C, Σ CE, voxels]`.
    v: Vec<f64>,
    classes: usize,
}

impl BatchSums {
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// Every sum in one flat slice (for an all-reduce).
    pub fn as_slice_mut(&mut self) -> &mut [f64] {
        &mut self.v
    }
    fn tp(&self) -> &[f64] {
        &self.v[..self.classes]
    }
    fn sum_p(&self) -> &[f64] {
        &self.v[self.classes..2 * self.classes]
    }
    fn sum_y(&self) -> &[f64] {
        &self.v[2 * self.classes..3 * self.classes]
    }
    fn ce(&self) -> f64 {
        self.v[3 * self.classes]
    }
    fn voxels(&self) -> f64 {
        self.v[3 * self.classes + 1]
    }
}

/// Checks the arguments (see [`dc_and_ce`]) and takes the softmax statistics of this batch.
pub fn batch_sums<T: Copy + Into<f64>>(
    logits: &[T],
    shape: [usize; 5],
    labels: &[u16],
) -> Result<BatchSums, TrainError> {
    let [n, c, d, h, w] = shape;
    let s = d * h * w;
    let err = |m: String| Err(TrainError::Loss(format!("loss: {m}")));
    if c < 2 {
        return err(format!(
            "{c} class(es); the dice term needs background plus at least one class"
        ));
    }
    if n * s == 0 {
        return err(format!("empty logits of shape {shape:?}"));
    }
    if logits.len() != n * c * s {
        return err(format!(
            "logits hold {} values, shape {shape:?} needs {}",
            logits.len(),
            n * c * s
        ));
    }
    if labels.len() != n * s {
        return err(format!(
            "labels hold {} values, shape [{n}, {d}, {h}, {w}] needs {}",
            labels.len(),
            n * s
        ));
    }
    if let Some(i) = labels.iter().position(|&l| l as usize >= c) {
        let (b, v) = (i / s, i % s);
        let (z, y, x) = (v / (h * w), (v / w) % h, v % w);
        return err(format!(
            "label {} at sample {b}, voxel ({z}, {y}, {x}) is not below the class count {c}",
            labels[i]
        ));
    }
    let mut tp = vec![0.0f64; c];
    let mut sum_p = vec![0.0f64; c];
    let mut sum_y = vec![0.0f64; c];
    let mut ce = 0.0f64;
    let mut p = vec![0.0f64; c];
    for b in 0..n {
        let base = b * c * s;
        for v in 0..s {
            let lse = softmax_at(logits, base, s, v, &mut p);
            let l = labels[b * s + v] as usize;
            ce += lse - Into::<f64>::into(logits[base + l * s + v]);
            tp[l] += p[l];
            sum_y[l] += 1.0;
            for k in 0..c {
                sum_p[k] += p[k];
            }
        }
    }
    let mut v = tp;
    v.extend(sum_p);
    v.extend(sum_y);
    v.push(ce);
    v.push((n * s) as f64);
    Ok(BatchSums { v, classes: c })
}

impl BatchSums {
    /// Sums read back from somewhere else (a GPU's loss kernels): `v` in the layout of
    /// [`BatchSums::as_slice_mut`] for `classes` classes; `None` when the length is wrong.
    pub fn from_vec(v: Vec<f64>, classes: usize) -> Option<BatchSums> {
        (classes >= 2 && v.len() == 3 * classes + 2).then_some(BatchSums { v, classes })
    }
}

/// What the gradient of the loss needs besides the logits and the labels, computed as
/// [`from_sums`] computes it, for the GPU's gradient kernel: `[g_0..C where the label is the
/// class, g_0..C elsewhere, voxels]` with `g_k = -(2 y - dc_k) / (den_k (C - 1))` for
/// `k >= 1` and `g_0 = 0`.
pub fn grad_coefficients(sums: &BatchSums) -> Vec<f64> {
    let c = sums.classes;
    let (tp, sum_p, sum_y) = (sums.tp(), sums.sum_p(), sums.sum_y());
    let fg = (c - 1) as f64;
    let mut at_label = vec![0.0f64; c];
    let mut elsewhere = vec![0.0f64; c];
    for k in 1..c {
        let den = sum_p[k] + sum_y[k] + SMOOTH + 1e-8;
        let dc = (2.0 * tp[k] + SMOOTH) / den;
        at_label[k] = -(2.0 * 1.0 - dc) / (den * fg);
        elsewhere[k] = -(2.0 * 0.0 - dc) / (den * fg);
    }
    at_label.extend(elsewhere);
    at_label.push(sums.voxels());
    at_label
}

/// The loss from `sums` (this batch's [`batch_sums`], or the global batch's after an all-reduce)
/// and, when `want_grad`, its gradient with respect to these `logits` (already checked by
/// [`batch_sums`] against `shape` and `labels`); without it `grad` is empty.
pub fn from_sums<T: Copy + Into<f64>>(
    logits: &[T],
    shape: [usize; 5],
    labels: &[u16],
    sums: &BatchSums,
    want_grad: bool,
) -> Loss {
    let [n, c, d, h, w] = shape;
    let s = d * h * w;
    let (tp, sum_p, sum_y) = (sums.tp(), sums.sum_p(), sums.sum_y());
    let m = sums.voxels();
    let den: Vec<f64> = (0..c)
        .map(|k| sum_p[k] + sum_y[k] + SMOOTH + 1e-8)
        .collect();
    let dc: Vec<f64> = (0..c).map(|k| (2.0 * tp[k] + SMOOTH) / den[k]).collect();
    let fg = (c - 1) as f64;
    let dice = -dc[1..].iter().sum::<f64>() / fg;
    let ce = sums.ce() / m;

    // Pass 2: gradient. g_k = ∂dice/∂p_k = -(2 y_k - dc_k) / (den_k (C-1)) for k >= 1.
    let mut grad = Vec::new();
    if want_grad {
        grad = vec![0.0f32; logits.len()];
        let mut g = vec![0.0f64; c];
        let mut p = vec![0.0f64; c];
        for b in 0..n {
            let base = b * c * s;
            for v in 0..s {
                softmax_at(logits, base, s, v, &mut p);
                let l = labels[b * s + v] as usize;
                let mut dot = 0.0;
                for k in 1..c {
                    let y = if k == l { 1.0 } else { 0.0 };
                    g[k] = -(2.0 * y - dc[k]) / (den[k] * fg);
                    dot += p[k] * g[k];
                }
                for k in 0..c {
                    let y = if k == l { 1.0 } else { 0.0 };
                    let gk = if k == 0 { 0.0 } else { g[k] };
                    grad[base + k * s + v] = ((p[k] - y) / m + p[k] * (gk - dot)) as f32;
                }
            }
        }
    }
    Loss {
        total: ce + dice,
        ce,
        dice,
        dice_per_class: dc,
        grad,
    }
}

/// Softmax over classes of voxel `v` (f64) into `p`; returns log Σ exp(z).
fn softmax_at<T: Copy + Into<f64>>(
    logits: &[T],
    base: usize,
    s: usize,
    v: usize,
    p: &mut [f64],
) -> f64 {
    let c = p.len();
    let mut mx = f64::NEG_INFINITY;
    for k in 0..c {
        mx = mx.max(logits[base + k * s + v].into());
    }
    let mut sum = 0.0;
    for (k, pk) in p.iter_mut().enumerate() {
        *pk = (Into::<f64>::into(logits[base + k * s + v]) - mx).exp();
        sum += *pk;
    }
    for pk in p.iter_mut() {
        *pk /= sum;
    }
    mx + sum.ln()
}

/// Combines up to four heads' losses (full resolution first) with [`DS_WEIGHTS`]: the total is
/// Σ w_i · total_i and each head's gradient is multiplied by w_i (as f32).
pub fn combine_deep_supervision(mut heads: Vec<Loss>) -> Result<DsLoss, TrainError> {
    if heads.is_empty() || heads.len() > DS_WEIGHTS.len() {
        return Err(TrainError::Loss(format!(
            "deep supervision: {} head(s), expected 1 to {}",
            heads.len(),
            DS_WEIGHTS.len()
        )));
    }
    let mut total = 0.0;
    for (head, &wt) in heads.iter_mut().zip(DS_WEIGHTS.iter()) {
        total += wt * head.total;
        let wf = wt as f32;
        head.grad.iter_mut().for_each(|g| *g *= wf);
    }
    Ok(DsLoss { total, heads })
}

/// Every deep-supervision head's labels (at its resolution: [`downsample_labels`] by the head's
/// cumulative pooling factor `heads[s]`) and loss weight (`2^-s` normalised over the heads, as
/// the trainer weighs them), by output name (`logits`, `ds1`, ...), for labels `[batch, patch]`.
#[allow(clippy::type_complexity)]
pub fn deep_supervision_targets(
    labels: &[u16],
    batch: usize,
    patch: [usize; 3],
    heads: &[[usize; 3]],
) -> Result<(BTreeMap<String, Vec<u16>>, BTreeMap<String, f64>), TrainError> {
    let raw: Vec<f64> = (0..heads.len()).map(|s| 0.5f64.powi(s as i32)).collect();
    let norm: f64 = raw.iter().sum();
    let (mut l, mut w) = (BTreeMap::new(), BTreeMap::new());
    for (s, f) in heads.iter().enumerate() {
        let name = e2enc_ir::e2enet::output_name(s);
        let (lbl, _) = downsample_labels(labels, [batch, patch[0], patch[1], patch[2]], *f)?;
        l.insert(name.clone(), lbl);
        w.insert(name, raw[s] / norm);
    }
    Ok((l, w))
}

/// Down-samples a label map `[N, D, H, W]` by integer `factor` per spatial axis, like nnU-Net v1's
/// `DownsampleSegForDSTransform2` (batchgenerators `resize_segmentation` with order 0, i.e.
/// skimage `resize(order=0, mode="edge")`, i.e. `scipy.ndimage.zoom(grid_mode=True)`).
///
/// The output size is `round(size / factor)` with numpy's round-half-to-even (for example 5 / 2
/// gives 2, 7 / 2 gives 4). Output index `i` reads the input coordinate
/// `cc = (i + 0.5)·zoom - 0.5` with `zoom = size_in / size_out`, and scipy's order-0 spline takes
/// the voxel `floor(cc + 0.5)` (a tie rounds up), clamped to the last voxel ("edge"). For an exact
/// factor f that is input `f·i + f/2` (integer division): f = 2 picks 2i+1, f = 4 picks 4i+2,
/// f = 8 picks 8i+4, f = 1 is the identity.
pub fn downsample_labels(
    labels: &[u16],
    shape: [usize; 4],
    factor: [usize; 3],
) -> Result<(Vec<u16>, [usize; 4]), TrainError> {
    let [n, d, h, w] = shape;
    if labels.len() != n * d * h * w {
        return Err(TrainError::Loss(format!(
            "downsample_labels: {} labels for shape {shape:?}",
            labels.len()
        )));
    }
    let mut out_shape = [n, 0, 0, 0];
    let mut maps: Vec<Vec<usize>> = Vec::with_capacity(3);
    for a in 0..3 {
        let (size, f) = (shape[a + 1], factor[a]);
        if f == 0 {
            return Err(TrainError::Loss("downsample_labels: a factor of 0".into()));
        }
        let out = (size as f64 / f as f64).round_ties_even() as usize;
        if out == 0 {
            return Err(TrainError::Loss(format!(
                "downsample_labels: axis {a} of size {size} vanishes at factor {f}"
            )));
        }
        out_shape[a + 1] = out;
        let zoom = size as f64 / out as f64;
        maps.push(
            (0..out)
                .map(|i| {
                    let cc = (i as f64 + 0.5) * zoom - 0.5;
                    ((cc + 0.5).floor().max(0.0) as usize).min(size - 1)
                })
                .collect(),
        );
    }
    let [_, od, oh, ow] = out_shape;
    let mut out = Vec::with_capacity(n * od * oh * ow);
    for b in 0..n {
        for &z in &maps[0] {
            for &y in &maps[1] {
                for &x in &maps[2] {
                    out.push(labels[((b * d + z) * h + y) * w + x]);
                }
            }
        }
    }
    Ok((out, out_shape))
}

#[cfg(test)]
#[path = "loss_tests.rs"]
mod tests;
