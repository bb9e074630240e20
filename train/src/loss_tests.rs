//! Tests of the Dice + CE loss, deep supervision and the target down-sampling.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn two_classes_two_voxels_by_hand() {
    // Voxel 0: logits (0, 1), label 1; voxel 1: logits (0, 0), label 0.
    // p1 = sigmoid(1) = 0.7310585786300049 and 0.5.
    // ce = (-ln 0.7310585786300049 + ln 2) / 2 = 0.503204434039084
    // dc1 = (2·0.73105857863 + 1e-5) / (1.23105857863 + 1 + 1e-5 + 1e-8) = 0.6553483674645045
    // dc0 = (2·0.5 + 1e-5) / (0.76894142137 + 1 + 1e-5 + 1e-8) = 0.565312298724632
    let logits = [0.0f32, 0.0, 1.0, 0.0];
    let l = dc_and_ce(&logits, [1, 2, 1, 1, 2], &[1, 0]).unwrap();
    assert!(close(l.ce, 0.503204434039084, 1e-12), "{}", l.ce);
    assert!(close(l.dice, -0.6553483674645045, 1e-12), "{}", l.dice);
    assert!(close(l.total, -0.15214393342542054, 1e-12), "{}", l.total);
    assert!(close(l.dice_per_class[0], 0.565312298724632, 1e-12));
    // Softmax gradients sum to zero over the classes at every voxel.
    assert!((l.grad[0] + l.grad[2]).abs() < 1e-7);
    assert!((l.grad[1] + l.grad[3]).abs() < 1e-7);
    // Raising the true class's logit at voxel 0 lowers the loss.
    assert!(l.grad[2] < 0.0);
}

fn random_case(rng: &mut ChaCha8Rng, shape: [usize; 5]) -> (Vec<f64>, Vec<u16>) {
    let [n, c, d, h, w] = shape;
    let logits = (0..n * c * d * h * w)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let labels = (0..n * d * h * w)
        .map(|_| rng.random_range(0..c as u16))
        .collect();
    (logits, labels)
}

#[test]
fn gradient_matches_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for shape in [[2, 3, 1, 2, 3], [1, 2, 2, 1, 2], [3, 4, 1, 1, 2]] {
        let (mut z, y) = random_case(&mut rng, shape);
        let an = dc_and_ce_any(&z, shape, &y).unwrap();
        let eps = 1e-6;
        for i in 0..z.len() {
            let z0 = z[i];
            z[i] = z0 + eps;
            let up = dc_and_ce_any(&z, shape, &y).unwrap().total;
            z[i] = z0 - eps;
            let down = dc_and_ce_any(&z, shape, &y).unwrap().total;
            z[i] = z0;
            let fd = (up - down) / (2.0 * eps);
            let g = an.grad[i] as f64;
            assert!(
                (g - fd).abs() <= 1e-6 + 1e-4 * fd.abs(),
                "shape {shape:?} element {i}: analytic {g}, finite difference {fd}"
            );
        }
    }
}

#[test]
fn background_is_excluded_from_dice() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let shape = [1, 3, 1, 2, 2];
    let (z, y) = random_case(&mut rng, shape);
    let l = dc_and_ce_any(&z, shape, &y).unwrap();
    let dc = &l.dice_per_class;
    assert!(close(l.dice, -(dc[1] + dc[2]) / 2.0, 1e-14));
    assert!(!close(l.dice, -(dc[0] + dc[1] + dc[2]) / 3.0, 1e-6));
    // An all-background target with a confident background prediction: the dice term only sees
    // the (empty) foreground classes, whose dc is smooth / (Σp + smooth) ≈ 4e-4 here.
    let mut z = vec![0.0f32; 3 * 4];
    z[..4].fill(5.0);
    let l = dc_and_ce(&z, shape, &[0; 4]).unwrap();
    assert!(l.dice > -0.5, "{}", l.dice);
    assert!(l.dice_per_class[0] > 0.99);
}

#[test]
fn batch_dice_sums_over_the_batch() {
    // Two samples of 3 voxels give the same loss as one sample holding all 6 voxels.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (z, y) = random_case(&mut rng, [2, 3, 1, 1, 3]);
    let a = dc_and_ce_any(&z, [2, 3, 1, 1, 3], &y).unwrap();
    let mut joined = vec![0.0; 18];
    for b in 0..2 {
        for c in 0..3 {
            for v in 0..3 {
                joined[c * 6 + b * 3 + v] = z[(b * 3 + c) * 3 + v];
            }
        }
    }
    let b = dc_and_ce_any(&joined, [1, 3, 1, 1, 6], &y).unwrap();
    assert!(close(a.total, b.total, 1e-14), "{} vs {}", a.total, b.total);
    // It is not the mean of the per-sample losses.
    let s0 = dc_and_ce_any(&z[..9], [1, 3, 1, 1, 3], &y[..3]).unwrap();
    let s1 = dc_and_ce_any(&z[9..], [1, 3, 1, 1, 3], &y[3..]).unwrap();
    assert!(!close(a.dice, (s0.dice + s1.dice) / 2.0, 1e-6));
}

#[test]
fn perfect_prediction_gives_dice_minus_one() {
    let labels = [0u16, 1, 2, 1, 2, 0];
    let mut z = vec![0.0f32; 3 * 6];
    for (v, &l) in labels.iter().enumerate() {
        z[l as usize * 6 + v] = 40.0;
    }
    let l = dc_and_ce(&z, [1, 3, 1, 2, 3], &labels).unwrap();
    assert!((l.dice + 1.0).abs() < 1e-6, "{}", l.dice);
    assert!(l.ce < 1e-12);
    assert!((l.total + 1.0).abs() < 1e-6);
}

#[test]
fn bad_inputs_are_errors() {
    let e = dc_and_ce(&[0.0; 4], [1, 2, 1, 1, 2], &[0, 2]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("label 2") && msg.contains("(0, 0, 1)"),
        "{msg}"
    );
    assert!(dc_and_ce(&[0.0; 3], [1, 2, 1, 1, 2], &[0, 1]).is_err());
    assert!(dc_and_ce(&[0.0; 4], [1, 2, 1, 1, 2], &[0]).is_err());
    assert!(dc_and_ce(&[0.0; 2], [1, 1, 1, 1, 2], &[0, 0]).is_err());
}

#[test]
fn deep_supervision_weights_values_and_gradients() {
    assert!((DS_WEIGHTS.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    assert!((DS_WEIGHTS[0] - 0.5333333).abs() < 1e-6 && (DS_WEIGHTS[3] - 0.0666667).abs() < 1e-6);
    let head = |t: f64| Loss {
        total: t,
        ce: t,
        dice: 0.0,
        dice_per_class: vec![],
        grad: vec![1.5],
    };
    let ds = combine_deep_supervision(vec![head(1.0), head(2.0), head(3.0), head(4.0)]).unwrap();
    // (8·1 + 4·2 + 2·3 + 1·4) / 15 = 26/15
    assert!(close(ds.total, 26.0 / 15.0, 1e-15));
    assert_eq!(ds.heads[1].grad[0], 1.5 * (4.0f64 / 15.0) as f32);
    assert_eq!(ds.heads[1].total, 2.0);
    assert!(combine_deep_supervision(vec![head(0.0); 5]).is_err());
    assert!(combine_deep_supervision(vec![]).is_err());
}

#[test]
fn downsampling_picks_the_documented_voxels() {
    // Labels hold their own flat index (mod 65536), so the picks are visible.
    let idx = |n: usize| (0..n).map(|i| i as u16).collect::<Vec<_>>();
    // [1, 2, 4, 5] by (1, 2, 2): depth keeps 0,1; height 4 -> 2 picks 1,3; width 5 -> round(2.5)
    // = 2 (half to even), zoom 2.5: cc = 0.75 -> 1, 3.25 -> 3.
    let (o, s) = downsample_labels(&idx(40), [1, 2, 4, 5], [1, 2, 2]).unwrap();
    assert_eq!(s, [1, 2, 2, 2]);
    assert_eq!(o, vec![6, 8, 16, 18, 26, 28, 36, 38]);
    // Width 7 -> round(3.5) = 4, zoom 1.75: picks 0, 2, 4, 6.
    let (o, s) = downsample_labels(&idx(7), [1, 1, 1, 7], [1, 1, 2]).unwrap();
    assert_eq!((o, s), (vec![0, 2, 4, 6], [1, 1, 1, 4]));
    // Factor 4 on 8 picks 2, 6; factor 8 on 16 picks 4, 12; two samples stay apart.
    let (o, _) = downsample_labels(&idx(16), [2, 1, 1, 8], [1, 1, 4]).unwrap();
    assert_eq!(o, vec![2, 6, 10, 14]);
    let (o, _) = downsample_labels(&idx(16), [1, 1, 1, 16], [1, 1, 8]).unwrap();
    assert_eq!(o, vec![4, 12]);
    assert!(downsample_labels(&idx(2), [1, 1, 1, 2], [1, 1, 8]).is_err());
    assert!(downsample_labels(&idx(3), [1, 1, 1, 2], [1, 1, 1]).is_err());
}
