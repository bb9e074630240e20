//! Accuracy gates: how far a candidate bundle's results move from a reference bundle's (a bf16 or
//! TF32 CUDA bundle against the f32 one, retrained weights against the old ones), as numbers a
//! gate can be set on. `e2enc compare` runs the two bundles and prints these; they live here,
//! free of files and engines, so that they can be tested on hand-made arrays.
//!
//! - On raw outputs ([`tensor_diff`]): relative L2 error, largest absolute error, and how many
//!   voxels keep their argmax over the class axis (axis 1 of `[N, C, ...]`, first maximum on
//!   ties, as the segmentation's argmax).
//! - On label maps: the voxels on which two maps agree ([`agreement`]), and per-class Dice drops
//!   against ground truth ([`dice_drops`]): reference Dice minus candidate Dice, averaged over
//!   cases. A Dice that is undefined (the class absent from both the labels and the prediction)
//!   counts as 1 in the drop, so a candidate that invents a class the reference rightly left out
//!   shows as a drop of 1, and one that rightly leaves it out as none.
//! - [`Gate`]: a limit on one number; NaN never passes.

use e2enc_segment::metrics::{nan_mean, ClassScore};

/// How a candidate's output tensor differs from the reference's.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDiff {
    /// `||cand - ref||_2 / ||ref||_2` (0 when both are all zero; infinite when a difference is
    /// NaN or the reference is all zero and the candidate is not).
    pub rel_l2: f64,
    /// Largest `|cand - ref|` (infinite where one is NaN).
    pub max_abs_err: f64,
    /// Largest `|ref|`, to read `max_abs_err` against.
    pub max_abs_ref: f64,
    /// Voxels (batch and spatial positions) whose argmax over axis 1 is the same in both.
    pub argmax_same: usize,
    /// Voxels compared for the argmax (0 for tensors of rank below 2).
    pub argmax_voxels: usize,
}

impl TensorDiff {
    /// The share of voxels whose argmax agrees (1 when there are none).
    pub fn argmax_agreement(&self) -> f64 {
        if self.argmax_voxels == 0 {
            1.0
        } else {
            self.argmax_same as f64 / self.argmax_voxels as f64
        }
    }
}

/// Compares `cand` with `reference`, both dense row-major tensors of `shape`.
pub fn tensor_diff(cand: &[f32], reference: &[f32], shape: &[usize]) -> Result<TensorDiff, String> {
    let n: usize = shape.iter().product();
    if cand.len() != n || reference.len() != n {
        return Err(format!(
            "shape {shape:?} holds {n} values, got {} (candidate) and {} (reference)",
            cand.len(),
            reference.len()
        ));
    }
    let (mut num, mut den, mut max_err, mut max_ref) = (0f64, 0f64, 0f64, 0f64);
    for (&c, &r) in cand.iter().zip(reference) {
        let d = c as f64 - r as f64;
        num += d * d;
        den += (r as f64) * (r as f64);
        let a = d.abs();
        max_err = max_err.max(if a.is_nan() { f64::INFINITY } else { a });
        max_ref = max_ref.max((r as f64).abs());
    }
    let rel_l2 = if num.is_nan() {
        f64::INFINITY
    } else if num == 0.0 {
        0.0
    } else if den == 0.0 {
        f64::INFINITY
    } else {
        (num / den).sqrt()
    };
    let (mut same, mut voxels) = (0, 0);
    if shape.len() >= 2 && n > 0 {
        let classes = shape[1];
        let vox: usize = shape[2..].iter().product();
        let first_max = |v: &[f32], base: usize, i: usize| {
            let mut best = 0;
            for k in 1..classes {
                if v[base + k * vox + i] > v[base + best * vox + i] {
                    best = k;
                }
            }
            best
        };
        for b in 0..shape[0] {
            let base = b * classes * vox;
            for i in 0..vox {
                if first_max(cand, base, i) == first_max(reference, base, i) {
                    same += 1;
                }
            }
            voxels += vox;
        }
    }
    Ok(TensorDiff {
        rel_l2,
        max_abs_err: max_err,
        max_abs_ref: max_ref,
        argmax_same: same,
        argmax_voxels: voxels,
    })
}

/// The voxels on which two label maps of one grid agree.
pub fn agreement(a: &[u16], b: &[u16]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

/// One class's Dice against ground truth, reference and candidate, over all cases.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassDrop {
    pub class: u16,
    /// Mean Dice of the reference over the cases where it is defined (NaN if none).
    pub reference: f64,
    /// Mean Dice of the candidate over the cases where it is defined (NaN if none).
    pub candidate: f64,
    /// Mean over cases of reference Dice minus candidate Dice, an undefined Dice counting as 1.
    /// Positive: the candidate is worse.
    pub drop: f64,
    /// The largest per-case drop.
    pub worst_case_drop: f64,
}

/// Per-class Dice drops over cases: each case gives the reference's and the candidate's
/// scores against the same labels (as `metrics::evaluate` returns them, one entry per class).
/// A class missing from one side of a case counts as undefined there.
pub fn dice_drops(cases: &[(&[ClassScore], &[ClassScore])]) -> Vec<ClassDrop> {
    let mut classes: Vec<u16> = cases
        .iter()
        .flat_map(|(r, c)| r.iter().chain(c.iter()).map(|s| s.class))
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let dice = |v: &[ClassScore], class: u16| {
        v.iter()
            .find(|s| s.class == class)
            .map_or(f64::NAN, |s| s.dice)
    };
    let defined = |d: f64| if d.is_nan() { 1.0 } else { d };
    classes
        .into_iter()
        .map(|class| {
            let pairs: Vec<(f64, f64)> = cases
                .iter()
                .map(|(r, c)| (dice(r, class), dice(c, class)))
                .collect();
            let drops: Vec<f64> = pairs
                .iter()
                .map(|&(r, c)| defined(r) - defined(c))
                .collect();
            ClassDrop {
                class,
                reference: nan_mean(pairs.iter().map(|p| p.0)),
                candidate: nan_mean(pairs.iter().map(|p| p.1)),
                drop: drops.iter().sum::<f64>() / drops.len().max(1) as f64,
                worst_case_drop: drops.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect()
}

/// A limit on one measured number: `value <= limit` (an upper gate) or `value >= limit` (a
/// lower gate). NaN never passes.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    /// The option that set the limit (`--max-dice-drop`).
    pub flag: &'static str,
    pub limit: f64,
    /// The measured number the limit applies to (the worst one, where there are several).
    pub value: f64,
    /// What `value` is (`class 2 Dice drop (0.8731 -> 0.8612)`).
    pub what: String,
    pub upper: bool,
}

impl Gate {
    /// A gate `value <= limit`.
    pub fn at_most(flag: &'static str, limit: f64, value: f64, what: String) -> Gate {
        Gate {
            flag,
            limit,
            value,
            what,
            upper: true,
        }
    }

    /// A gate `value >= limit`.
    pub fn at_least(flag: &'static str, limit: f64, value: f64, what: String) -> Gate {
        Gate {
            flag,
            limit,
            value,
            what,
            upper: false,
        }
    }

    pub fn pass(&self) -> bool {
        if self.upper {
            self.value <= self.limit
        } else {
            self.value >= self.limit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(class: u16, dice: f64) -> ClassScore {
        ClassScore {
            class,
            dice,
            hd95: 0.0,
            pred_voxels: 0,
            gt_voxels: 0,
        }
    }

    #[test]
    fn identical_tensors_differ_by_nothing_and_agree_everywhere() {
        let v: Vec<f32> = (0..2 * 3 * 4).map(|i| (i as f32 * 0.37).sin()).collect();
        let d = tensor_diff(&v, &v, &[2, 3, 4]).unwrap();
        assert_eq!((d.rel_l2, d.max_abs_err), (0.0, 0.0));
        assert_eq!((d.argmax_same, d.argmax_voxels), (8, 8));
        assert_eq!(d.argmax_agreement(), 1.0);
    }

    #[test]
    fn a_perturbed_tensor_shows_its_error_and_flipped_voxels() {
        // [1, 2, 4]: class 1 wins at voxels 0 and 1, class 0 at 2 and 3.
        let r = [0.0f32, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];
        let mut c = r;
        c[0] = 2.0; // voxel 0 flips to class 0
        let d = tensor_diff(&c, &r, &[1, 2, 4]).unwrap();
        assert_eq!(d.max_abs_err, 2.0);
        assert_eq!(d.max_abs_ref, 1.0);
        assert!((d.rel_l2 - (4.0f64 / 4.0).sqrt()).abs() < 1e-12);
        assert_eq!((d.argmax_same, d.argmax_voxels), (3, 4));
        // A NaN is an infinite error, never a small one.
        c[5] = f32::NAN;
        let d = tensor_diff(&c, &r, &[1, 2, 4]).unwrap();
        assert!(d.rel_l2.is_infinite() && d.max_abs_err.is_infinite());
        assert!(tensor_diff(&c, &r, &[1, 2, 3]).is_err());
    }

    #[test]
    fn ties_take_the_first_class_on_both_sides() {
        let r = [1.0f32, 1.0];
        let d = tensor_diff(&r, &r, &[1, 2, 1]).unwrap();
        assert_eq!(d.argmax_same, 1);
        let c = [1.0f32, 1.0 + f32::EPSILON];
        let d = tensor_diff(&c, &r, &[1, 2, 1]).unwrap();
        assert_eq!(d.argmax_same, 0);
    }

    #[test]
    fn dice_drops_average_over_cases_and_count_undefined_as_perfect() {
        let r1 = [score(1, 0.9), score(2, f64::NAN)];
        let c1 = [score(1, 0.8), score(2, 0.0)];
        let r2 = [score(1, 0.7), score(2, f64::NAN)];
        let c2 = [score(1, 0.8), score(2, f64::NAN)];
        let d = dice_drops(&[(&r1, &c1), (&r2, &c2)]);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].class, 1);
        assert!((d[0].reference - 0.8).abs() < 1e-12);
        assert!((d[0].candidate - 0.8).abs() < 1e-12);
        assert!(d[0].drop.abs() < 1e-12);
        assert!((d[0].worst_case_drop - 0.1).abs() < 1e-12);
        // Class 2: absent from the labels; the candidate invents it in case 1.
        assert!(d[1].reference.is_nan());
        assert_eq!(d[1].candidate, 0.0);
        assert!((d[1].drop - 0.5).abs() < 1e-12);
        assert_eq!(d[1].worst_case_drop, 1.0);
    }

    #[test]
    fn gates_hold_their_limits_and_nan_fails_both_ways() {
        assert!(Gate::at_most("--max-rel-l2", 0.1, 0.1, String::new()).pass());
        assert!(!Gate::at_most("--max-rel-l2", 0.1, 0.11, String::new()).pass());
        assert!(!Gate::at_most("--max-rel-l2", 0.1, f64::NAN, String::new()).pass());
        assert!(Gate::at_least("--min-argmax-agreement", 0.99, 1.0, String::new()).pass());
        assert!(!Gate::at_least("--min-argmax-agreement", 0.99, 0.98, String::new()).pass());
        assert!(!Gate::at_least("--min-argmax-agreement", 0.99, f64::NAN, String::new()).pass());
        assert_eq!(agreement(&[0, 1, 2], &[0, 2, 2]), 2);
    }
}
