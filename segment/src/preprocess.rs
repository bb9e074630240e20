//! nnU-Net v1 preprocessing of a volume for inference (`GenericPreprocessor.preprocess_test_case`)
//! and its inverse for the network's output, configured by a [`PreprocessingConfig`] (the
//! `preprocessing` field of model.json, whose schema lives here).
//!
//! [`preprocess`] runs, in nnU-Net's order: NaN to 0; transpose to the network's axis order;
//! crop to the bounding box of the non-zero mask; resample to the target spacing (cubic
//! B-spline, order 0 along a separately resampled anisotropic axis, see [`super::resample`]);
//! normalise each channel. [`restore`] takes the network's `[C, resampled shape]` probabilities
//! back: linear resampling to the cropped shape, argmax, paste into the bounding box
//! (background 0 outside), transpose back to the input's axes.
//!
//! Departures from nnU-Net, all deliberate: NaN becomes 0 *before* the non-zero mask is taken
//! (nnU-Net does it after cropping, so a NaN border would widen its box); infinities are an error;
//! an all-zero volume is not cropped (nnU-Net fails on it); z-score statistics are computed in
//! f64.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::resample::{
    check_spacing, numel, resample_channels, resample_mask, separate_z_axis, target_shape, Order,
    Shape,
};
use crate::SegmentError;

/// Intensity normalisation of one input channel (nnU-Net v1 `normalization_schemes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalization {
    /// "CT": clip to `[lower, upper]` (the 0.5 and 99.5 percentiles of the training foreground),
    /// then `(x - mean) / std` with the training foreground's mean and standard deviation.
    Ct {
        lower: f64,
        upper: f64,
        mean: f64,
        std: f64,
    },
    /// Anything else ("nonCT", MRI): per-image z-score `(x - mean) / (std + 1e-8)`; with
    /// `use_nonzero_mask` the statistics are taken inside the (resampled) non-zero mask and
    /// voxels outside it are set to 0.
    ZScore { use_nonzero_mask: bool },
}

/// How a raw volume becomes network input (nnU-Net v1 plans, one stage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessingConfig {
    /// Network axis `k` is input axis `axis_order[k]` (numpy's `transpose(axis_order)`). For an
    /// input indexed NIfTI-style `(x, y, z)`, nnU-Net's `(z, y, x)` (SimpleITK order, with the
    /// plans' usual identity `transpose_forward`) is `[2, 1, 0]`.
    pub axis_order: [usize; 3],
    /// Target voxel spacing in mm, in *network* axis order (as in the plans' `current_spacing`).
    pub target_spacing: [f64; 3],
    /// One entry per input channel (modality).
    pub normalization: Vec<Normalization>,
    /// Spacing ratio above which an axis is resampled separately with order 0 (nnU-Net: 3).
    #[serde(default = "default_threshold")]
    pub anisotropy_threshold: f64,
}

fn default_threshold() -> f64 {
    3.0
}

impl PreprocessingConfig {
    /// Checks the permutation, spacings and normalisation constants.
    pub fn validate(&self) -> Result<(), SegmentError> {
        let bad = |m: String| Err(SegmentError::Config(m));
        let mut seen = [false; 3];
        for &a in &self.axis_order {
            if a > 2 || std::mem::replace(&mut seen[a], true) {
                return bad(format!(
                    "axis_order {:?} is not a permutation of 0, 1, 2",
                    self.axis_order
                ));
            }
        }
        check_spacing("preprocessing config: target_spacing", self.target_spacing)?;
        if !(self.anisotropy_threshold.is_finite() && self.anisotropy_threshold > 0.0) {
            return bad(format!(
                "anisotropy_threshold {} must be positive",
                self.anisotropy_threshold
            ));
        }
        if self.normalization.is_empty() {
            return bad("normalization lists no channel".into());
        }
        for (c, n) in self.normalization.iter().enumerate() {
            if let Normalization::Ct {
                lower,
                upper,
                mean,
                std,
            } = *n
            {
                let finite = [lower, upper, mean, std].iter().all(|v| v.is_finite());
                if !finite || lower > upper || std <= 0.0 {
                    return bad(format!(
                        "channel {c}: CT normalisation needs finite lower <= upper and std > 0 \
                         (got lower {lower}, upper {upper}, mean {mean}, std {std})"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Half-open bounding box `[start, end)` per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BBox {
    pub start: [usize; 3],
    pub end: [usize; 3],
}

impl BBox {
    /// The box's shape.
    pub fn shape(&self) -> Shape {
        std::array::from_fn(|a| self.end[a] - self.start[a])
    }
}

/// A preprocessed volume and what [`restore`] needs to undo it.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessed {
    /// Normalised channels, each of `resampled_shape` (network axes).
    pub data: Vec<Vec<f32>>,
    /// The input's shape (input axes).
    pub shape: Shape,
    /// Input axis of each network axis (the config's `axis_order`).
    pub axis_order: [usize; 3],
    /// Crop box in network axes (within the transposed input).
    pub bbox: BBox,
    /// Shape after cropping (network axes).
    pub crop_shape: Shape,
    /// Shape after resampling (network axes): the shape of `data` and of the network output.
    pub resampled_shape: Shape,
    /// Axis resampled separately with order 0, if any (network axes).
    pub anisotropic_axis: Option<usize>,
}

/// Reorders the axes of `data`: output axis `k` is input axis `perm[k]` (numpy `transpose`).
pub fn transpose<T: Copy>(data: &[T], shape: Shape, perm: [usize; 3]) -> (Vec<T>, Shape) {
    let new_shape: Shape = std::array::from_fn(|k| shape[perm[k]]);
    if perm == [0, 1, 2] {
        return (data.to_vec(), new_shape);
    }
    let strides = [shape[1] * shape[2], shape[2], 1];
    let s: [usize; 3] = std::array::from_fn(|k| strides[perm[k]]);
    let mut out = Vec::with_capacity(data.len());
    for i in 0..new_shape[0] {
        for j in 0..new_shape[1] {
            let base = i * s[0] + j * s[1];
            out.extend((0..new_shape[2]).map(|k| data[base + k * s[2]]));
        }
    }
    (out, new_shape)
}

/// The inverse permutation of `perm`.
pub fn inverse_permutation(perm: [usize; 3]) -> [usize; 3] {
    let mut inv = [0; 3];
    for (k, &p) in perm.iter().enumerate() {
        inv[p] = k;
    }
    inv
}

/// nnU-Net's `create_nonzero_mask`: voxels non-zero in any channel, with enclosed holes filled
/// (`binary_fill_holes`: background not 6-connected to the volume's border becomes foreground).
pub fn nonzero_mask(channels: &[Vec<f32>], shape: Shape) -> Result<Vec<bool>, SegmentError> {
    let n = check_channels("nonzero_mask", channels, shape)?;
    let mut mask = vec![false; n];
    for ch in channels {
        for (m, &v) in mask.iter_mut().zip(ch) {
            *m |= v != 0.0;
        }
    }
    fill_holes(&mut mask, shape);
    Ok(mask)
}

/// Fills background regions that do not touch the border (6-connectivity).
fn fill_holes(mask: &mut [bool], [d0, d1, d2]: Shape) {
    let idx = |i: usize, j: usize, k: usize| (i * d1 + j) * d2 + k;
    let mut outside = vec![false; mask.len()];
    let mut stack = Vec::new();
    for i in 0..d0 {
        for j in 0..d1 {
            for k in 0..d2 {
                let border =
                    i == 0 || j == 0 || k == 0 || i + 1 == d0 || j + 1 == d1 || k + 1 == d2;
                let v = idx(i, j, k);
                if border && !mask[v] && !outside[v] {
                    outside[v] = true;
                    stack.push((i, j, k));
                }
            }
        }
    }
    while let Some((i, j, k)) = stack.pop() {
        let mut visit = |i: usize, j: usize, k: usize| {
            let v = idx(i, j, k);
            if !mask[v] && !outside[v] {
                outside[v] = true;
                stack.push((i, j, k));
            }
        };
        if i > 0 {
            visit(i - 1, j, k);
        }
        if i + 1 < d0 {
            visit(i + 1, j, k);
        }
        if j > 0 {
            visit(i, j - 1, k);
        }
        if j + 1 < d1 {
            visit(i, j + 1, k);
        }
        if k > 0 {
            visit(i, j, k - 1);
        }
        if k + 1 < d2 {
            visit(i, j, k + 1);
        }
    }
    for (m, o) in mask.iter_mut().zip(outside) {
        *m = !o;
    }
}

/// Bounding box of the `true` voxels; the whole volume when there are none.
pub fn mask_bbox(mask: &[bool], shape: Shape) -> BBox {
    let mut start = shape;
    let mut end = [0; 3];
    let mut v = 0;
    for i in 0..shape[0] {
        for j in 0..shape[1] {
            for k in 0..shape[2] {
                if mask[v] {
                    for (a, x) in [i, j, k].into_iter().enumerate() {
                        start[a] = start[a].min(x);
                        end[a] = end[a].max(x + 1);
                    }
                }
                v += 1;
            }
        }
    }
    if end.contains(&0) {
        BBox {
            start: [0; 3],
            end: shape,
        }
    } else {
        BBox { start, end }
    }
}

/// The part of `data` (of `shape`) inside `bbox`.
pub fn crop<T: Copy>(data: &[T], shape: Shape, bbox: &BBox) -> Vec<T> {
    let mut out = Vec::with_capacity(bbox.shape().iter().product());
    for i in bbox.start[0]..bbox.end[0] {
        for j in bbox.start[1]..bbox.end[1] {
            let row = (i * shape[1] + j) * shape[2];
            out.extend_from_slice(&data[row + bbox.start[2]..row + bbox.end[2]]);
        }
    }
    out
}

/// Crops every channel to the bounding box of the non-zero mask (union over channels, holes
/// filled; the whole volume when it is all zero). Returns the crops and the box.
pub fn crop_to_nonzero(
    channels: &[Vec<f32>],
    shape: Shape,
) -> Result<(Vec<Vec<f32>>, BBox), SegmentError> {
    let mask = nonzero_mask(channels, shape)?;
    let bbox = mask_bbox(&mask, shape);
    Ok((
        channels.iter().map(|c| crop(c, shape, &bbox)).collect(),
        bbox,
    ))
}

/// Pastes `cropped` (of `bbox`'s shape) into a volume of `shape` filled with `T::default()`.
pub fn uncrop<T: Copy + Default>(
    cropped: &[T],
    bbox: &BBox,
    shape: Shape,
) -> Result<Vec<T>, SegmentError> {
    let n = numel("uncrop", shape)?;
    let bs = bbox.shape_checked(shape)?;
    if cropped.len() != bs.iter().product::<usize>() {
        return Err(SegmentError::UncropLength {
            got: cropped.len(),
            shape: bs,
        });
    }
    let mut out = vec![T::default(); n];
    let mut rows = cropped.chunks(bs[2].max(1));
    for i in bbox.start[0]..bbox.end[0] {
        for j in bbox.start[1]..bbox.end[1] {
            let row = (i * shape[1] + j) * shape[2];
            if let Some(src) = rows.next() {
                out[row + bbox.start[2]..row + bbox.end[2]].copy_from_slice(src);
            }
        }
    }
    Ok(out)
}

impl BBox {
    /// The box's shape, or an error if it is empty or does not fit in `shape`.
    fn shape_checked(&self, shape: Shape) -> Result<Shape, SegmentError> {
        if (0..3).any(|a| self.start[a] >= self.end[a] || self.end[a] > shape[a]) {
            return Err(SegmentError::BoxOutside {
                bbox: format!("{self:?}"),
                shape,
            });
        }
        Ok(self.shape())
    }
}

fn check_channels(what: &str, channels: &[Vec<f32>], shape: Shape) -> Result<usize, SegmentError> {
    let n = numel(what, shape)?;
    if channels.is_empty() {
        return Err(SegmentError::NoChannel { what: what.into() });
    }
    for (c, ch) in channels.iter().enumerate() {
        if ch.len() != n {
            return Err(SegmentError::ChannelLength {
                what: what.into(),
                channel: c,
                got: ch.len(),
                shape,
                want: n,
            });
        }
    }
    Ok(n)
}

/// Normalises one channel in place; `mask` is the resampled non-zero mask when the scheme asks.
pub fn normalize(data: &mut [f32], scheme: &Normalization, mask: Option<&[bool]>) {
    match *scheme {
        Normalization::Ct {
            lower,
            upper,
            mean,
            std,
        } => {
            for v in data.iter_mut() {
                *v = ((f64::from(*v).clamp(lower, upper) - mean) / std) as f32;
            }
        }
        Normalization::ZScore { use_nonzero_mask } => {
            let inside = |i: usize| !use_nonzero_mask || mask.is_none_or(|m| m[i]);
            let (mut n, mut sum) = (0usize, 0f64);
            for (i, &v) in data.iter().enumerate() {
                if inside(i) {
                    n += 1;
                    sum += f64::from(v);
                }
            }
            let mean = if n > 0 { sum / n as f64 } else { 0.0 };
            let var = data
                .iter()
                .enumerate()
                .filter(|&(i, _)| inside(i))
                .map(|(_, &v)| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n.max(1) as f64;
            let std = var.sqrt() + 1e-8;
            for (i, v) in data.iter_mut().enumerate() {
                *v = if inside(i) {
                    ((f64::from(*v) - mean) / std) as f32
                } else {
                    0.0
                };
            }
        }
    }
}

/// Most voxels a resampled case may have (per channel): 2^31, the NIfTI reader's own limit.
pub const MAX_RESAMPLED_VOXELS: usize = 1 << 31;

/// Most a resampling may enlarge the voxel grid along one axis: 20x (thick-slice MRI to a fine
/// target is about 5-10x).
pub const MAX_UPSAMPLING: f64 = 20.0;

/// Refuses resamplings that cannot be right or cannot fit: an axis upsampled more than
/// [`MAX_UPSAMPLING`] times, an axis of 8 or more voxels shrunk to 1 (a target spacing far
/// coarser than the image: the network would see a single slice), or a case past
/// [`MAX_RESAMPLED_VOXELS`] per channel or the machine's available memory.
pub fn check_resampling(
    shape: Shape,
    spacing: [f64; 3],
    target: [f64; 3],
    new_shape: Shape,
    channels: usize,
) -> Result<(), SegmentError> {
    let err = |why: String| SegmentError::Resampling {
        shape,
        spacing,
        target,
        new_shape,
        why,
    };
    if let Some(a) = (0..3).find(|&a| shape[a] >= 8 && new_shape[a] <= 1) {
        return Err(err(format!(
            "axis {a} collapses from {} voxels to {}; the target spacing does not fit this image \
             (check the model's preprocessing and the image's pixdim)",
            shape[a], new_shape[a]
        )));
    }
    if let Some(a) = (0..3).find(|&a| spacing[a] > MAX_UPSAMPLING * target[a]) {
        return Err(err(format!(
            "axis {a}'s voxels ({} mm) are more than {MAX_UPSAMPLING} times the target spacing \
             ({} mm): a header with a wrong voxel size or unit? (refused rather than \
             interpolating {}x)",
            spacing[a],
            target[a],
            (spacing[a] / target[a]).round()
        )));
    }
    let voxels = new_shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .unwrap_or(usize::MAX);
    if voxels > MAX_RESAMPLED_VOXELS {
        return Err(err(format!(
            "{voxels} voxels per channel ({channels} channels) is more than the limit of \
             {MAX_RESAMPLED_VOXELS}; the target spacing is far finer than the image's"
        )));
    }
    // The resampled channels live next to their source and one working copy.
    let need = (voxels as u64).saturating_mul(channels.max(1) as u64 * 4 * 3);
    if let Some(have) = e2enc_ir::files::available_memory() {
        if need > have {
            return Err(err(format!(
                "about {:.1} GiB of memory is needed and {:.1} GiB is available; the target \
                 spacing is far finer than the image's",
                need as f64 / (1u64 << 30) as f64,
                have as f64 / (1u64 << 30) as f64
            )));
        }
    }
    Ok(())
}

/// Preprocesses `channels` (each of `shape`, input axes, voxel `spacing` in mm per input axis)
/// as nnU-Net v1 does for inference (see the module doc).
pub fn preprocess(
    channels: &[Vec<f32>],
    shape: Shape,
    spacing: [f64; 3],
    cfg: &PreprocessingConfig,
) -> Result<Preprocessed, SegmentError> {
    preprocess_cow(Cow::Borrowed(channels), shape, spacing, cfg)
}

/// [`preprocess`] of channels handed over: steps that leave a channel as it is (the identity
/// transpose, a crop box that is the whole volume, the target spacing already met) move it
/// instead of copying, and the rest works in place where it can, so a case needs little more than
/// one copy of itself. The same numbers.
pub fn preprocess_owned(
    channels: Vec<Vec<f32>>,
    shape: Shape,
    spacing: [f64; 3],
    cfg: &PreprocessingConfig,
) -> Result<Preprocessed, SegmentError> {
    preprocess_cow(Cow::Owned(channels), shape, spacing, cfg)
}

fn preprocess_cow(
    mut channels: Cow<'_, [Vec<f32>]>,
    shape: Shape,
    spacing: [f64; 3],
    cfg: &PreprocessingConfig,
) -> Result<Preprocessed, SegmentError> {
    cfg.validate()?;
    check_channels("preprocess", &channels, shape)?;
    check_spacing("preprocess: spacing", spacing)?;
    let n_ch = channels.len();
    if n_ch != cfg.normalization.len() {
        return Err(SegmentError::ChannelCount {
            got: n_ch,
            want: cfg.normalization.len(),
        });
    }
    let mut net = Vec::with_capacity(n_ch);
    let mut net_shape = shape;
    for c in 0..n_ch {
        let ch = &channels[c];
        if ch.iter().any(|v| v.is_infinite()) {
            return Err(SegmentError::Infinite(c));
        }
        if !ch.is_empty() && ch.iter().all(|v| v.is_nan()) {
            return Err(SegmentError::AllNan(c));
        }
        let mut clean = match &mut channels {
            Cow::Owned(v) => std::mem::take(&mut v[c]),
            Cow::Borrowed(v) => v[c].clone(),
        };
        for v in clean.iter_mut() {
            if v.is_nan() {
                *v = 0.0;
            }
        }
        let (t, s) = if cfg.axis_order == [0, 1, 2] {
            (clean, shape)
        } else {
            transpose(&clean, shape, cfg.axis_order)
        };
        net.push(t);
        net_shape = s;
    }
    drop(channels);
    let net_spacing: [f64; 3] = std::array::from_fn(|k| spacing[cfg.axis_order[k]]);
    let mask = nonzero_mask(&net, net_shape)?;
    let bbox = mask_bbox(&mask, net_shape);
    let crop_shape = bbox.shape();
    let new_shape = target_shape(crop_shape, net_spacing, cfg.target_spacing)?;
    check_resampling(crop_shape, net_spacing, cfg.target_spacing, new_shape, n_ch)?;
    let aniso = separate_z_axis(net_spacing, cfg.target_spacing, cfg.anisotropy_threshold);
    let needs_mask = cfg.normalization.iter().any(|n| {
        matches!(
            n,
            Normalization::ZScore {
                use_nonzero_mask: true
            }
        )
    });
    let resampled_mask = if needs_mask {
        // nnU-Net resamples the crop's {-1 outside, 0 inside} map with order 1 (one-hot,
        // >= 0.5, in float64): the same as thresholding the linearly resampled mask at 0.5,
        // computed in f64 so that values just below 0.5 stay out.
        let m = crop(&mask, net_shape, &bbox);
        Some(resample_mask(&m, crop_shape, new_shape, aniso)?)
    } else {
        None
    };
    drop(mask);
    let whole = crop_shape == net_shape;
    let cropped: Vec<f32> = if whole && n_ch == 1 {
        net.pop().unwrap_or_default()
    } else {
        net.iter().flat_map(|c| crop(c, net_shape, &bbox)).collect()
    };
    drop(net);
    let per = numel("preprocess: resampled shape", new_shape)?;
    // The same shape resamples to a copy of itself.
    let mut resampled = if crop_shape == new_shape {
        cropped
    } else {
        resample_channels(
            &cropped,
            n_ch,
            crop_shape,
            new_shape,
            Order::CubicBSpline,
            aniso,
        )?
    };
    let mut data = Vec::with_capacity(n_ch);
    if n_ch == 1 {
        data.push(std::mem::take(&mut resampled));
    } else {
        data.extend(resampled.chunks(per).map(<[f32]>::to_vec));
    }
    drop(resampled);
    for (c, scheme) in data.iter_mut().zip(&cfg.normalization) {
        normalize(c, scheme, resampled_mask.as_deref());
    }
    Ok(Preprocessed {
        data,
        shape,
        axis_order: cfg.axis_order,
        bbox,
        crop_shape,
        resampled_shape: new_shape,
        anisotropic_axis: aniso,
    })
}

/// Takes the network's probabilities (`classes` channels of `prep.resampled_shape`,
/// channel-major) back to a label map of the input's shape and axes: linear resampling to the
/// cropped shape (order 0 along the anisotropic axis), argmax (first class on ties), 0 outside
/// the crop box, inverse transpose.
pub fn restore(
    probs: &[f32],
    classes: usize,
    prep: &Preprocessed,
) -> Result<Vec<u16>, SegmentError> {
    if classes == 0 || classes > usize::from(u16::MAX) + 1 {
        return Err(SegmentError::Classes(classes));
    }
    let back = resample_channels(
        probs,
        classes,
        prep.resampled_shape,
        prep.crop_shape,
        Order::Linear,
        prep.anisotropic_axis,
    )?;
    let vox = prep.crop_shape.iter().product::<usize>();
    let labels: Vec<u16> = (0..vox)
        .map(|v| {
            let mut best = 0;
            for c in 1..classes {
                if back[c * vox + v] > back[best * vox + v] {
                    best = c;
                }
            }
            best as u16
        })
        .collect();
    let net_shape: Shape = std::array::from_fn(|k| prep.shape[prep.axis_order[k]]);
    let full = uncrop(&labels, &prep.bbox, net_shape)?;
    Ok(transpose(&full, net_shape, inverse_permutation(prep.axis_order)).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_filled_but_the_outside_is_not() {
        // A 5x5x5 hollow cube shell inside a 7x7x7 volume.
        let s = [7, 7, 7];
        let mut v = vec![0f32; 343];
        for i in 1..6 {
            for j in 1..6 {
                for k in 1..6 {
                    if [i, j, k].iter().any(|&x| x == 1 || x == 5) {
                        v[(i * 7 + j) * 7 + k] = 1.0;
                    }
                }
            }
        }
        let m = nonzero_mask(&[v], s).unwrap();
        assert!(m[(3 * 7 + 3) * 7 + 3]);
        assert!(!m[0]);
        assert_eq!(m.iter().filter(|&&b| b).count(), 125);
        assert_eq!(
            mask_bbox(&m, s),
            BBox {
                start: [1; 3],
                end: [6; 3]
            }
        );
    }

    #[test]
    fn transpose_round_trips() {
        let d: Vec<u32> = (0..24).collect();
        let (t, s) = transpose(&d, [2, 3, 4], [2, 0, 1]);
        assert_eq!(s, [4, 2, 3]);
        // t[k][i][j] = d[i][j][k]
        assert_eq!(t[(3 * 2 + 1) * 3 + 2], d[(3 + 2) * 4 + 3]);
        let (b, s2) = transpose(&t, s, inverse_permutation([2, 0, 1]));
        assert_eq!((b, s2), (d, [2, 3, 4]));
    }
}
