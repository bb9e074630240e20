//! The nnU-Net v1 planner (`ExperimentPlanner3D_v21` with `DatasetAnalyzer`'s statistics): the
//! target spacing rule, the per-channel normalisation and the axis order that make up a
//! [`PreprocessingConfig`]. Kept apart from the dataset reader in `data.rs` so that the rules can
//! be tested on hand-made statistics ([`plan_from_stats`], [`target_spacing`]) without files; the
//! choices are listed in `data.rs`'s module doc.

use super::{RawCase, RawDataset, AXIS_ORDER};
use crate::TrainError;
use e2enc_segment::preprocess::{
    crop, mask_bbox, nonzero_mask, transpose, Normalization, PreprocessingConfig,
};

/// nnU-Net's anisotropy threshold (`RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD`).
const ANISOTROPY_THRESHOLD: f64 = 3.0;
/// Every how many foreground voxels one is kept for CT intensity statistics.
const FOREGROUND_STRIDE: usize = 10;

/// numpy's `percentile` with linear interpolation; `sorted` must be sorted and non-empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let x = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = x.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo as f64)
}

fn column_percentile<const N: usize>(rows: &[[f64; N]], axis: usize, p: f64) -> f64 {
    let mut v: Vec<f64> = rows.iter().map(|r| r[axis]).collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, p)
}

/// nnU-Net v1 `ExperimentPlanner3D_v21.get_target_spacing`: the per-axis median spacing, except
/// that when the median's coarsest axis is more than 3x coarser than the others *and* the median
/// cropped size along it is more than 3x smaller than the others, that axis takes the 10th
/// percentile of its spacings (raised to just above the other axes' largest spacing,
/// `+ 1e-5`, when it falls below it). `spacings` and `sizes` (cropped shapes) are per case, in
/// network axes.
pub fn target_spacing(spacings: &[[f64; 3]], sizes: &[[usize; 3]]) -> [f64; 3] {
    let mut target: [f64; 3] = std::array::from_fn(|a| column_percentile(spacings, a, 50.0));
    let size_rows: Vec<[f64; 3]> = sizes
        .iter()
        .map(|s| std::array::from_fn(|a| s[a] as f64))
        .collect();
    let target_size: [f64; 3] = std::array::from_fn(|a| column_percentile(&size_rows, a, 50.0));
    // np.argmax: the first maximum.
    let worst = (0..3).fold(0, |b, a| if target[a] > target[b] { a } else { b });
    let others: Vec<usize> = (0..3).filter(|&a| a != worst).collect();
    let max_other_spacing = others.iter().map(|&a| target[a]).fold(f64::MIN, f64::max);
    let min_other_size = others
        .iter()
        .map(|&a| target_size[a])
        .fold(f64::MAX, f64::min);
    let aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max_other_spacing;
    let aniso_voxels = target_size[worst] * ANISOTROPY_THRESHOLD < min_other_size;
    if aniso_spacing && aniso_voxels {
        let mut t = column_percentile(spacings, worst, 10.0);
        if t < max_other_spacing {
            t = t.max(max_other_spacing) + 1e-5;
        }
        target[worst] = t;
    }
    target
}

/// What the planner needs from one training case (network axes).
#[derive(Clone, Debug, PartialEq)]
pub struct CaseStats {
    /// Voxel spacing in network axes.
    pub spacing: [f64; 3],
    /// Shape after cropping to the non-zero region.
    pub cropped_shape: [usize; 3],
    /// Cropped voxels / original voxels.
    pub size_reduction: f64,
    /// Per channel: every 10th foreground voxel of the cropped image (empty for non-CT channels).
    pub foreground: Vec<Vec<f32>>,
}

fn is_ct(name: &str) -> bool {
    name.contains("CT")
}

/// Computes one case's [`CaseStats`] (network axes `AXIS_ORDER`).
pub fn case_stats(raw: &RawCase, channel_names: &[String]) -> Result<CaseStats, TrainError> {
    let label = raw
        .label
        .as_ref()
        .ok_or_else(|| TrainError::Data(format!("case `{}` has no label", raw.id)))?;
    let mut net = Vec::with_capacity(raw.channels.len());
    let mut shape = raw.dims;
    for ch in &raw.channels {
        let clean: Vec<f32> = ch
            .iter()
            .map(|&v| if v.is_nan() { 0.0 } else { v })
            .collect();
        let (t, s) = transpose(&clean, raw.dims, AXIS_ORDER);
        net.push(t);
        shape = s;
    }
    let mask = nonzero_mask(&net, shape)?;
    let bbox = mask_bbox(&mask, shape);
    let cropped_shape = bbox.shape();
    let total: usize = shape.iter().product();
    let size_reduction = cropped_shape.iter().product::<usize>() as f64 / total as f64;
    let lab = crop(&transpose(label, raw.dims, AXIS_ORDER).0, shape, &bbox);
    let foreground = net
        .iter()
        .zip(channel_names)
        .map(|(ch, name)| {
            if !is_ct(name) {
                return Vec::new();
            }
            crop(ch, shape, &bbox)
                .into_iter()
                .zip(&lab)
                .filter(|&(_, &l)| l > 0)
                .step_by(FOREGROUND_STRIDE)
                .map(|(v, _)| v)
                .collect()
        })
        .collect();
    Ok(CaseStats {
        spacing: std::array::from_fn(|k| raw.spacing[AXIS_ORDER[k]]),
        cropped_shape,
        size_reduction,
        foreground,
    })
}

/// The preprocessing plan from per-case statistics (see the module doc).
pub fn plan_from_stats(
    stats: &[CaseStats],
    channel_names: &[String],
) -> Result<PreprocessingConfig, TrainError> {
    if stats.is_empty() {
        return Err(TrainError::Data("plan: no training case".into()));
    }
    let spacings: Vec<[f64; 3]> = stats.iter().map(|s| s.spacing).collect();
    let sizes: Vec<[usize; 3]> = stats.iter().map(|s| s.cropped_shape).collect();
    let mut reductions: Vec<f64> = stats.iter().map(|s| s.size_reduction).collect();
    reductions.sort_by(f64::total_cmp);
    let use_nonzero_mask = percentile(&reductions, 50.0) < 0.75;
    let mut normalization = Vec::with_capacity(channel_names.len());
    for (c, name) in channel_names.iter().enumerate() {
        if !is_ct(name) {
            normalization.push(Normalization::ZScore { use_nonzero_mask });
            continue;
        }
        let mut v: Vec<f64> = stats
            .iter()
            .filter_map(|s| s.foreground.get(c))
            .flatten()
            .map(|&x| f64::from(x))
            .collect();
        if v.is_empty() {
            return Err(TrainError::Data(format!(
                "plan: CT channel {c} ({name}): no training case has foreground (label > 0) voxels"
            )));
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        normalization.push(Normalization::Ct {
            lower: percentile(&v, 0.5),
            upper: percentile(&v, 99.5),
            mean,
            // A constant foreground would divide by zero; nnU-Net adds 1e-8 in the same place.
            std: std.max(1e-8),
        });
    }
    let cfg = PreprocessingConfig {
        axis_order: AXIS_ORDER,
        target_spacing: target_spacing(&spacings, &sizes),
        normalization,
        anisotropy_threshold: ANISOTROPY_THRESHOLD,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Plans preprocessing for `ds` from all its training cases (reads every case once).
pub fn plan(ds: &RawDataset) -> Result<PreprocessingConfig, TrainError> {
    let stats = ds
        .training
        .iter()
        .map(|case| case_stats(&ds.read_case(case)?, &ds.channel_names))
        .collect::<Result<Vec<_>, _>>()?;
    plan_from_stats(&stats, &ds.channel_names)
}
