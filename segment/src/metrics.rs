//! Segmentation quality metrics: per-class Dice and 95% Hausdorff distance (HD95) between a
//! predicted and a ground-truth label volume, computed the way MedPy's `hd95` (used by nnU-Net
//! and BraTS-style evaluations) computes them, so numbers can be compared with published ones.
//!
//! Volumes are C-ordered `[d0, d1, d2]` (`d2` fastest, as everywhere in this crate) and
//! `spacing` gives the voxel size in mm along the same three axes.
//!
//! Definitions, for each class `c` in `1..num_classes` (0 is background and is not scored):
//! - Dice = 2|P∩G| / (|P|+|G|). When both P and G are empty Dice is undefined: it is NaN,
//!   shown as `n/a`, and left out of [`mean`]. One empty and the other not gives 0.
//! - HD95: the surface of a mask is its voxels with at least one of the 6 face neighbours
//!   outside the mask (a neighbour outside the volume counts as outside, so the volume's border
//!   voxels are surface, like scipy's `binary_erosion` with its default border). Each surface
//!   voxel of P gets its Euclidean distance in mm to the nearest surface voxel of G and each
//!   surface voxel of G its distance to the surface of P; HD95 is the 95th percentile of the
//!   union of both sets, with numpy's default linear interpolation. Both empty: NaN (`n/a`, left
//!   out of the mean); exactly one empty: +inf (`inf`, and the mean becomes inf: a missed or
//!   hallucinated structure should not be averaged away).
//!
//! The distances come from an exact Euclidean distance transform with anisotropic spacing (the
//! separable lower-envelope-of-parabolas algorithm of Felzenszwalb and Huttenlocher), run on the
//! bounding box of P ∪ G only. Cropping is exact: every surface voxel of either mask lies in that
//! box, and a neighbour outside the box is outside both masks, just like one outside the volume.
//!
//! Non-finite scores serialize to JSON as the strings `"n/a"` and `"inf"` (JSON has no NaN).

use serde::{Deserialize, Serialize};

/// Errors of metric evaluation.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{what} has {got} voxels but the shape {shape:?} holds {want}")]
    Length {
        what: &'static str,
        got: usize,
        shape: [usize; 3],
        want: usize,
    },
    #[error("the spacing {0:?} must be finite and positive on every axis")]
    Spacing([f64; 3]),
    #[error("{what} holds label {label}, outside the {num_classes} classes asked for")]
    Label {
        what: &'static str,
        label: u16,
        num_classes: usize,
    },
}

/// The scores of one foreground class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: u16,
    /// NaN when both volumes lack the class.
    #[serde(with = "score_f64")]
    pub dice: f64,
    /// In mm. NaN when both volumes lack the class, +inf when exactly one does.
    #[serde(with = "score_f64")]
    pub hd95: f64,
    pub pred_voxels: u64,
    pub gt_voxels: u64,
}

/// A JSON-ready evaluation report: the per-class scores and their means (see [`mean`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub classes: Vec<ClassScore>,
    #[serde(with = "score_f64")]
    pub mean_dice: f64,
    #[serde(with = "score_f64")]
    pub mean_hd95: f64,
}

impl Report {
    pub fn new(classes: Vec<ClassScore>) -> Report {
        let (mean_dice, mean_hd95) = mean(&classes);
        Report {
            classes,
            mean_dice,
            mean_hd95,
        }
    }
}

/// Formats a score for a table: `n/a` for NaN, `inf` for infinity, else `decimals` digits.
pub fn fmt_score(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{v:.decimals$}")
    }
}

/// Mean Dice and mean HD95 over the classes, leaving out NaN (undefined) entries; an infinite
/// HD95 makes the HD95 mean infinite. NaN when no class has a defined score.
pub fn mean(scores: &[ClassScore]) -> (f64, f64) {
    (
        nan_mean(scores.iter().map(|s| s.dice)),
        nan_mean(scores.iter().map(|s| s.hd95)),
    )
}

/// The mean of the values that are not NaN (an infinity keeps the mean infinite); NaN when none.
pub fn nan_mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v
        .filter(|x| !x.is_nan())
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// Scores `pred` against `gt` for every class in `1..num_classes` (by default one more than the
/// largest label in either volume). A label at or past an explicit `num_classes` is an error.
pub fn evaluate(
    pred: &[u16],
    gt: &[u16],
    shape: [usize; 3],
    spacing: [f64; 3],
    num_classes: Option<usize>,
) -> Result<Vec<ClassScore>, MetricsError> {
    let want = shape[0]
        .checked_mul(shape[1])
        .and_then(|v| v.checked_mul(shape[2]))
        .unwrap_or(usize::MAX);
    for (what, v) in [("the prediction", pred), ("the ground truth", gt)] {
        if v.len() != want {
            return Err(MetricsError::Length {
                what,
                got: v.len(),
                shape,
                want,
            });
        }
    }
    if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(MetricsError::Spacing(spacing));
    }
    let max_of = |v: &[u16]| v.iter().copied().max().unwrap_or(0);
    let (pmax, gmax) = (max_of(pred), max_of(gt));
    let k = match num_classes {
        Some(k) => {
            for (what, m) in [("the prediction", pmax), ("the ground truth", gmax)] {
                if m as usize >= k {
                    return Err(MetricsError::Label {
                        what,
                        label: m,
                        num_classes: k,
                    });
                }
            }
            // u16 labels: no class past 65535 can be present.
            k.min(u16::MAX as usize + 1)
        }
        None => pmax.max(gmax) as usize + 1,
    };

    let stats = class_stats(pred, gt, shape, k);
    let mut out = Vec::with_capacity(k.saturating_sub(1));
    for (c, st) in stats.iter().enumerate().skip(1) {
        let (dice, hd95) = match (st.pred, st.gt) {
            (0, 0) => (f64::NAN, f64::NAN),
            (0, _) | (_, 0) => (0.0, f64::INFINITY),
            (p, g) => (
                2.0 * st.inter as f64 / (p + g) as f64,
                hd95_in_box(pred, gt, shape, spacing, c as u16, st.lo, st.hi),
            ),
        };
        out.push(ClassScore {
            class: c as u16,
            dice,
            hd95,
            pred_voxels: st.pred,
            gt_voxels: st.gt,
        });
    }
    Ok(out)
}

/// Voxel counts and the bounding box (`lo..hi` per axis) of P ∪ G of one class.
#[derive(Clone)]
struct Stats {
    pred: u64,
    gt: u64,
    inter: u64,
    lo: [usize; 3],
    hi: [usize; 3],
}

fn class_stats(pred: &[u16], gt: &[u16], shape: [usize; 3], k: usize) -> Vec<Stats> {
    let empty = Stats {
        pred: 0,
        gt: 0,
        inter: 0,
        lo: [usize::MAX; 3],
        hi: [0; 3],
    };
    let mut stats = vec![empty; k];
    let grow = |s: &mut Stats, at: [usize; 3]| {
        for (a, &v) in at.iter().enumerate() {
            s.lo[a] = s.lo[a].min(v);
            s.hi[a] = s.hi[a].max(v + 1);
        }
    };
    let mut i = 0;
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            for x in 0..shape[2] {
                let (p, g) = (pred[i] as usize, gt[i] as usize);
                i += 1;
                if p != 0 {
                    stats[p].pred += 1;
                    grow(&mut stats[p], [z, y, x]);
                }
                if g != 0 {
                    stats[g].gt += 1;
                    stats[g].inter += (p == g) as u64;
                    if p != g {
                        grow(&mut stats[g], [z, y, x]);
                    }
                }
            }
        }
    }
    stats
}

/// HD95 of class `c`, working on the box `lo..hi` that holds every voxel of P ∪ G.
fn hd95_in_box(
    pred: &[u16],
    gt: &[u16],
    shape: [usize; 3],
    spacing: [f64; 3],
    c: u16,
    lo: [usize; 3],
    hi: [usize; 3],
) -> f64 {
    let e = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let m = e[0] * e[1] * e[2];
    let (mut pm, mut gm) = (vec![false; m], vec![false; m]);
    let mut j = 0;
    for z in lo[0]..hi[0] {
        for y in lo[1]..hi[1] {
            let row = (z * shape[1] + y) * shape[2];
            for x in lo[2]..hi[2] {
                pm[j] = pred[row + x] == c;
                gm[j] = gt[row + x] == c;
                j += 1;
            }
        }
    }
    let (ps, gs) = (surface(&pm, e), surface(&gm, e));
    let mut dist = Vec::new();
    let mut dt = Vec::new();
    for (from, to) in [(&ps, &gs), (&gs, &ps)] {
        edt_squared(to, e, spacing, &mut dt);
        dist.extend(
            from.iter()
                .zip(&dt)
                .filter(|(s, _)| **s)
                .map(|(_, d)| d.sqrt()),
        );
    }
    percentile(&mut dist, 95.0)
}

/// The voxels of `mask` (shape `e`) with a face neighbour outside it or outside the box.
fn surface(mask: &[bool], e: [usize; 3]) -> Vec<bool> {
    let st = [e[1] * e[2], e[2], 1];
    let mut out = vec![false; mask.len()];
    let mut i = 0;
    for z in 0..e[0] {
        for y in 0..e[1] {
            for x in 0..e[2] {
                if mask[i] {
                    let at = [z, y, x];
                    out[i] = (0..3).any(|a| {
                        at[a] == 0 || at[a] + 1 == e[a] || !mask[i - st[a]] || !mask[i + st[a]]
                    });
                }
                i += 1;
            }
        }
    }
    out
}

/// Squared Euclidean distance (mm²) from every voxel of the box `e` to the nearest `feature`
/// voxel (+inf when there is none), by three separable 1-D passes.
fn edt_squared(feature: &[bool], e: [usize; 3], spacing: [f64; 3], d: &mut Vec<f64>) {
    d.clear();
    d.extend(feature.iter().map(|&f| if f { 0.0 } else { f64::INFINITY }));
    let st = [e[1] * e[2], e[2], 1];
    let n = e[0].max(e[1]).max(e[2]);
    let (mut f, mut out, mut v, mut zs) = (
        vec![0.0; n],
        vec![0.0; n],
        vec![0usize; n],
        vec![0.0; n + 1],
    );
    for axis in [2, 1, 0] {
        let (o1, o2) = match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        let len = e[axis];
        let s2 = spacing[axis] * spacing[axis];
        for i in 0..e[o1] {
            for j in 0..e[o2] {
                let base = i * st[o1] + j * st[o2];
                let mut any = false;
                for q in 0..len {
                    f[q] = d[base + q * st[axis]];
                    any |= f[q].is_finite();
                }
                if !any {
                    continue;
                }
                lower_envelope(&f[..len], s2, &mut out, &mut v, &mut zs);
                for q in 0..len {
                    d[base + q * st[axis]] = out[q];
                }
            }
        }
    }
}

/// 1-D squared distance transform of `f` with sample spacing² `s2`: out[q] = min_r
/// s2·(q−r)² + f[r] over the finite f[r] (at least one must be finite). `v` and `z` are scratch.
fn lower_envelope(f: &[f64], s2: f64, out: &mut [f64], v: &mut [usize], z: &mut [f64]) {
    let meet = |q: usize, r: usize| {
        let (qf, rf) = (q as f64, r as f64);
        ((f[q] + s2 * qf * qf) - (f[r] + s2 * rf * rf)) / (2.0 * s2 * (qf - rf))
    };
    // k = number of parabolas in the envelope; v[..k] their sites, z[..=k] their boundaries.
    let mut k = 0usize;
    for (q, fq) in f.iter().enumerate() {
        if !fq.is_finite() {
            continue;
        }
        let mut s = f64::NEG_INFINITY;
        while k > 0 {
            s = meet(q, v[k - 1]);
            if s <= z[k - 1] {
                k -= 1;
                s = f64::NEG_INFINITY;
            } else {
                break;
            }
        }
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
        k += 1;
    }
    let mut j = 0;
    for (q, o) in out.iter_mut().enumerate().take(f.len()) {
        while z[j + 1] < q as f64 {
            j += 1;
        }
        let dq = q as f64 - v[j] as f64;
        *o = s2 * dq * dq + f[v[j]];
    }
}

/// The `q`-th percentile (0..=100) of `v` with numpy's default linear interpolation; NaN when
/// `v` is empty. Reorders `v`.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let h = q / 100.0 * (v.len() - 1) as f64;
    let lo = h.floor() as usize;
    let t = h - lo as f64;
    let (_, a, rest) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    if t == 0.0 || rest.is_empty() {
        return a;
    }
    let b = rest.iter().copied().fold(f64::INFINITY, f64::min);
    // numpy's _lerp: exact at both ends.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Serde for scores: finite numbers as numbers, NaN as `"n/a"`, infinities as `"inf"`/`"-inf"`.
mod score_f64 {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&super::fmt_score(*v, 0))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(f64),
            Str(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Str(s) => match s.as_str() {
                "n/a" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(D::Error::custom(format!(
                    "expected a number, \"n/a\" or \"inf\", found \"{other}\""
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Independent brute force: full-volume surfaces, all pairs, sort-based percentile.
    fn brute_hd95(pred: &[u16], gt: &[u16], shape: [usize; 3], sp: [f64; 3], c: u16) -> f64 {
        let at = |z: isize, y: isize, x: isize, v: &[u16]| {
            let inside = [z, y, x]
                .iter()
                .zip(shape)
                .all(|(&i, n)| i >= 0 && (i as usize) < n);
            inside && v[((z as usize) * shape[1] + y as usize) * shape[2] + x as usize] == c
        };
        let surf = |v: &[u16]| {
            let mut s = Vec::new();
            for z in 0..shape[0] as isize {
                for y in 0..shape[1] as isize {
                    for x in 0..shape[2] as isize {
                        let nb = [
                            (z - 1, y, x),
                            (z + 1, y, x),
                            (z, y - 1, x),
                            (z, y + 1, x),
                            (z, y, x - 1),
                            (z, y, x + 1),
                        ];
                        if at(z, y, x, v) && nb.iter().any(|&(a, b, c)| !at(a, b, c, v)) {
                            s.push([z as f64 * sp[0], y as f64 * sp[1], x as f64 * sp[2]]);
                        }
                    }
                }
            }
            s
        };
        let (ps, gs) = (surf(pred), surf(gt));
        let directed = |a: &[[f64; 3]], b: &[[f64; 3]]| -> Vec<f64> {
            a.iter()
                .map(|p| {
                    b.iter()
                        .map(|q| (0..3).map(|i| (p[i] - q[i]).powi(2)).sum::<f64>().sqrt())
                        .fold(f64::INFINITY, f64::min)
                })
                .collect()
        };
        let mut d = directed(&ps, &gs);
        d.extend(directed(&gs, &ps));
        d.sort_by(f64::total_cmp);
        let h = 0.95 * (d.len() - 1) as f64;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(d.len() - 1);
        d[lo] + (d[hi] - d[lo]) * (h - lo as f64)
    }

    fn cube(shape: [usize; 3], lo: [usize; 3], side: usize, label: u16) -> Vec<u16> {
        let mut v = vec![0u16; shape.iter().product()];
        for z in lo[0]..lo[0] + side {
            for y in lo[1]..lo[1] + side {
                for x in lo[2]..lo[2] + side {
                    v[(z * shape[1] + y) * shape[2] + x] = label;
                }
            }
        }
        v
    }

    #[test]
    fn dice_by_hand() {
        let pred = [0, 1, 1, 1, 0, 2, 2, 0, 0, 0];
        let gt = [0, 1, 1, 0, 0, 2, 0, 0, 0, 3];
        let s = evaluate(&pred, &gt, [1, 2, 5], [1.0; 3], Some(5)).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].class, s[0].pred_voxels, s[0].gt_voxels), (1, 3, 2));
        assert!((s[0].dice - 0.8).abs() < 1e-12);
        assert!((s[1].dice - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((s[2].dice, s[2].hd95), (0.0, f64::INFINITY));
        assert!(s[3].dice.is_nan() && s[3].hd95.is_nan());
        let (md, mh) = mean(&s);
        assert!((md - (0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(mh, f64::INFINITY);
        // Default class count: one more than the largest label present.
        assert_eq!(
            evaluate(&pred, &gt, [1, 2, 5], [1.0; 3], None)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn identical_volumes_score_perfectly() {
        let v = cube([8, 9, 10], [2, 3, 1], 4, 1);
        let s = evaluate(&v, &v, [8, 9, 10], [0.7, 1.1, 2.0], None).unwrap();
        assert_eq!((s[0].dice, s[0].hd95), (1.0, 0.0));
    }

    #[test]
    fn shifted_cube_hd95_known_answer() {
        // A 5-cube shifted by 2 voxels along axis 0 (1.5 mm): P's bottom face is 3 mm from G's,
        // and those faces are a quarter of both surfaces, well past the 5% tail.
        let shape = [12, 9, 9];
        let sp = [1.5, 0.8, 1.0];
        let p = cube(shape, [2, 2, 2], 5, 1);
        let g = cube(shape, [4, 2, 2], 5, 1);
        let s = evaluate(&p, &g, shape, sp, None).unwrap();
        assert!((s[0].hd95 - 3.0).abs() < 1e-12, "{}", s[0].hd95);
        assert!((brute_hd95(&p, &g, shape, sp, 1) - 3.0).abs() < 1e-12);
        assert!((s[0].dice - 0.6).abs() < 1e-12);
    }

    #[test]
    fn diagonal_shift_matches_brute_force() {
        let shape = [10, 11, 12];
        let sp = [2.5, 0.9, 1.3];
        let p = cube(shape, [1, 2, 3], 6, 1);
        let g = cube(shape, [3, 1, 5], 5, 1);
        let s = evaluate(&p, &g, shape, sp, None).unwrap();
        let b = brute_hd95(&p, &g, shape, sp, 1);
        assert!((s[0].hd95 - b).abs() < 1e-9, "{} vs {b}", s[0].hd95);
        assert!(b > 0.0);
    }

    #[test]
    fn percentile_matches_numpy() {
        // np.percentile(np.arange(1, 11), 95) == 9.55; np.percentile([0, 3], 95) == 2.85
        let mut v: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert!((percentile(&mut v, 95.0) - 9.55).abs() < 1e-12);
        assert!((percentile(&mut [3.0, 0.0], 95.0) - 2.85).abs() < 1e-12);
        assert_eq!(percentile(&mut [4.0], 95.0), 4.0);
        assert!(percentile(&mut [], 95.0).is_nan());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let v = vec![0u16; 24];
        let e = evaluate(&v, &v[..20], [2, 3, 4], [1.0; 3], None).unwrap_err();
        assert!(e.to_string().contains("ground truth has 20 voxels"), "{e}");
        assert!(matches!(
            evaluate(&v, &v, [2, 3, 4], [1.0, 0.0, 1.0], None),
            Err(MetricsError::Spacing(_))
        ));
        let mut p = v.clone();
        p[3] = 4;
        let e = evaluate(&p, &v, [2, 3, 4], [1.0; 3], Some(4)).unwrap_err();
        assert!(e.to_string().contains("prediction holds label 4"), "{e}");
    }

    #[test]
    fn json_report_writes_non_finite_scores_as_strings() {
        let pred = [1, 1, 0, 0];
        let gt = [1, 0, 0, 3];
        let r = Report::new(evaluate(&pred, &gt, [1, 1, 4], [1.0; 3], None).unwrap());
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains(r#""dice":"n/a""#), "{j}");
        assert!(j.contains(r#""hd95":"inf""#), "{j}");
        assert!(j.contains(r#""mean_hd95":"inf""#), "{j}");
        let back: Report = serde_json::from_str(&j).unwrap();
        assert_eq!(back.classes[0], r.classes[0]);
        assert!(back.classes[1].dice.is_nan());
        assert_eq!(back.classes[2].hd95, f64::INFINITY);
        assert_eq!(fmt_score(0.12345, 3), "0.123");
    }

    fn volumes() -> impl Strategy<Value = ([usize; 3], Vec<u16>, Vec<u16>, [f64; 3])> {
        (
            1usize..7,
            1usize..7,
            1usize..7,
            [0.3f64..3.0, 0.3..3.0, 0.3..3.0],
        )
            .prop_flat_map(|(a, b, c, sp)| {
                let n = a * b * c;
                let lab = prop_oneof![3 => Just(0u16), 2 => Just(1u16), 1 => Just(2u16)];
                (
                    Just([a, b, c]),
                    proptest::collection::vec(lab.clone(), n),
                    proptest::collection::vec(lab, n),
                    Just(sp),
                )
            })
    }

    proptest! {
        #[test]
        fn boxes_hd95_equals_brute_force((shape, p, g, sp) in boxes()) {
            let s = evaluate(&p, &g, shape, sp, Some(2)).unwrap();
            if s[0].pred_voxels > 0 && s[0].gt_voxels > 0 {
                let b = brute_hd95(&p, &g, shape, sp, 1);
                prop_assert!((s[0].hd95 - b).abs() <= 1e-9 * b.max(1.0), "{} vs {}", s[0].hd95, b);
            }
        }

        #[test]
        fn edt_hd95_equals_brute_force((shape, p, g, sp) in volumes()) {
            let s = evaluate(&p, &g, shape, sp, Some(3)).unwrap();
            for cs in &s {
                let c = cs.class;
                let (np, ng) = (
                    p.iter().filter(|&&v| v == c).count() as u64,
                    g.iter().filter(|&&v| v == c).count() as u64,
                );
                let inter = p.iter().zip(&g).filter(|(a, b)| **a == c && **b == c).count();
                prop_assert_eq!((cs.pred_voxels, cs.gt_voxels), (np, ng));
                if np > 0 && ng > 0 {
                    let dice = 2.0 * inter as f64 / (np + ng) as f64;
                    prop_assert!((cs.dice - dice).abs() < 1e-12);
                    let b = brute_hd95(&p, &g, shape, sp, c);
                    prop_assert!((cs.hd95 - b).abs() <= 1e-9 * b.max(1.0), "{} vs {}", cs.hd95, b);
                }
            }
        }
    }

    /// Two random boxes (with a few stray voxels) in a volume up to 10³: larger distances and
    /// interpolated percentiles than the noise volumes give.
    fn boxes() -> impl Strategy<Value = ([usize; 3], Vec<u16>, Vec<u16>, [f64; 3])> {
        let bx = || {
            [
                (0usize..10, 1usize..8),
                (0usize..10, 1usize..8),
                (0usize..10, 1usize..8),
            ]
        };
        (
            [2usize..11, 2usize..11, 2usize..11],
            bx(),
            bx(),
            proptest::collection::vec(0usize..1000, 0..4),
            [0.3f64..3.0, 0.3..3.0, 0.3..3.0],
        )
            .prop_map(|(shape, pb, gb, stray, sp)| {
                let fill = |b: [(usize, usize); 3]| {
                    let mut v = vec![0u16; shape.iter().product()];
                    for z in b[0].0..(b[0].0 + b[0].1).min(shape[0]) {
                        for y in b[1].0..(b[1].0 + b[1].1).min(shape[1]) {
                            for x in b[2].0..(b[2].0 + b[2].1).min(shape[2]) {
                                v[(z * shape[1] + y) * shape[2] + x] = 1;
                            }
                        }
                    }
                    v
                };
                let (mut p, g) = (fill(pb), fill(gb));
                let n = p.len();
                for s in stray {
                    p[s % n] = 1;
                }
                (shape, p, g, sp)
            })
    }

    /// Not a timed test: prints how long one brain-sized evaluation takes
    /// (`cargo test -p e2enc-segment --release metrics -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn brain_sized_volume() {
        let shape = [189, 233, 197];
        let ball = |cz: f64, r: f64, label: u16, v: &mut [u16]| {
            for z in 0..shape[0] {
                for y in 0..shape[1] {
                    for x in 0..shape[2] {
                        let d = ((z as f64 - cz).powi(2)
                            + (y as f64 - 116.0).powi(2)
                            + (x as f64 - 98.0).powi(2))
                        .sqrt();
                        if d < r {
                            v[(z * shape[1] + y) * shape[2] + x] = label;
                        }
                    }
                }
            }
        };
        let n = shape.iter().product();
        let (mut p, mut g) = (vec![0u16; n], vec![0u16; n]);
        ball(94.0, 70.0, 1, &mut p);
        ball(94.0, 25.0, 2, &mut p);
        ball(97.0, 72.0, 1, &mut g);
        ball(92.0, 24.0, 2, &mut g);
        let t = std::time::Instant::now();
        let s = evaluate(&p, &g, shape, [1.0; 3], None).unwrap();
        println!("{s:?} in {:?}", t.elapsed());
    }
}
