//! Tests of the DSFF masks: application, prune/regrow, the death-rate schedule and mask files.

use super::*;
use proptest::prelude::*;
use rand::SeedableRng;

fn tensor(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape, v).unwrap()
}

fn f32s<'a>(w: &'a Weights, n: &str) -> &'a [f32] {
    w.get(n).unwrap().as_f32().unwrap()
}

/// Layer `a`: weight [2, 3, 2], kernel L1 norms 3, 1, 1, 0.5, 2 and kernel 5 dead (mask 0).
/// Layer `b`: weight [1, 2, 1] = (3, -1), both alive.
fn tiny() -> (Masks, Weights) {
    let mut w = Weights::new();
    w.insert(
        "a",
        tensor(
            vec![2, 3, 2],
            vec![
                1.0, -2.0, 0.5, -0.5, -1.0, 0.0, 0.25, 0.25, 2.0, 0.0, 0.0, 0.0,
            ],
        ),
    );
    w.insert("b", tensor(vec![1, 2, 1], vec![3.0, -1.0]));
    let mut m = Weights::new();
    m.insert("a", tensor(vec![2, 3], vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0]));
    m.insert("b", tensor(vec![1, 2], vec![1.0, 1.0]));
    (Masks::from_weights(&m, &w).unwrap(), w)
}

#[test]
fn prune_regrow_by_hand() {
    let (mut masks, mut w) = tiny();
    let mut mom = Weights::new();
    mom.insert("a", tensor(vec![2, 3, 2], vec![1.0; 12]));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let stats = masks.update(&mut w, &mut mom, 0.3, &mut rng).unwrap();
    // a: n = ceil(0.3·5) = 2: kernel 3 (L1 0.5), then of the tie at L1 1 the lower index, 1.
    let a = &stats.layers[0];
    assert_eq!((a.name.as_str(), a.live), ("a", 5));
    assert_eq!(a.pruned, vec![1, 3]);
    assert_eq!(a.regrown.len(), 2);
    assert!(
        a.regrown.iter().all(|k| [1, 3, 5].contains(k)),
        "{:?}",
        a.regrown
    );
    // b: n = ceil(0.3·2) = 1: kernel 1 dies and, being the only dead kernel, comes back.
    let b = &stats.layers[1];
    assert_eq!((b.pruned.clone(), b.regrown.clone()), (vec![1], vec![1]));
    assert_eq!((stats.pruned, stats.regrown), (3, 3));
    assert_eq!(masks.get("a").unwrap().live(), 5);
    assert_eq!(masks.get("b").unwrap().alive, vec![true, true]);
    // Only kernels 0, 2 and 4 of `a` survive untouched; every other kernel (dead or regrown) is 0
    // in both the weights and the momentum.
    assert_eq!(
        f32s(&w, "a"),
        &[1.0, -2.0, 0., 0., -1.0, 0.0, 0., 0., 2.0, 0.0, 0., 0.]
    );
    assert_eq!(
        f32s(&mom, "a"),
        &[1.0, 1.0, 0., 0., 1.0, 1.0, 0., 0., 1.0, 1.0, 0., 0.]
    );
    assert_eq!(f32s(&w, "b"), &[3.0, 0.0]);
    // The same seed gives the same update.
    let (mut again, w2) = tiny();
    let s2 = again
        .prune_regrow(&w2, 0.3, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    assert_eq!(s2, stats);
    assert_eq!(again, masks);
}

#[test]
fn apply_zeroes_dead_kernels_and_checks_shapes() {
    let (masks, mut w) = tiny();
    masks.apply(&mut w).unwrap();
    assert_eq!(&f32s(&w, "a")[10..], &[0.0, 0.0]);
    assert_eq!(&f32s(&w, "a")[..10], &f32s(&tiny().1, "a")[..10]);
    // Missing tensors (a momentum buffer before its first step) are skipped.
    masks.apply(&mut Weights::new()).unwrap();
    let mut bad = Weights::new();
    bad.insert("a", tensor(vec![3, 2, 2], vec![0.0; 12]));
    assert!(masks.apply(&mut bad).is_err());
}

#[test]
fn bad_rates_and_masks_are_errors() {
    let (mut masks, w) = tiny();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for r in [-0.1, 1.5, f64::NAN] {
        assert!(masks.prune_regrow(&w, r, &mut rng).is_err());
    }
    assert!(masks.prune_regrow(&Weights::new(), 0.1, &mut rng).is_err());
    let mut m = Weights::new();
    m.insert("a", tensor(vec![2, 3], vec![0.5; 6]));
    assert!(Masks::from_weights(&m, &w).is_err());
    let mut m = Weights::new();
    m.insert("a", tensor(vec![3, 2], vec![1.0; 6]));
    assert!(Masks::from_weights(&m, &w).is_err());
    let mut m = Weights::new();
    m.insert("zz", tensor(vec![1, 1], vec![1.0]));
    assert!(Masks::from_weights(&m, &w).is_err());
}

#[test]
fn rate_zero_and_one() {
    let (mut masks, w) = tiny();
    let before = masks.clone();
    let s = masks
        .prune_regrow(&w, 0.0, &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap();
    assert_eq!((s.pruned, masks.clone()), (0, before));
    let s = masks
        .prune_regrow(&w, 1.0, &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap();
    assert_eq!(s.pruned, 7);
    assert_eq!(masks.live(), 7);
}

#[test]
fn death_rate_schedule() {
    let t = 250_000;
    assert_eq!(death_rate(0, t, INITIAL_DEATH_RATE, MIN_DEATH_RATE), 0.5);
    let mid = death_rate(t / 2, t, INITIAL_DEATH_RATE, MIN_DEATH_RATE);
    assert!((mid - 0.2505).abs() < 1e-12, "{mid}");
    let end = death_rate(t, t, INITIAL_DEATH_RATE, MIN_DEATH_RATE);
    assert!((end - 0.001).abs() < 1e-15, "{end}");
    assert_eq!(death_rate(5, 0, 0.5, 0.001), 0.5);
}

#[test]
fn mask_file_round_trip() {
    let (masks, w) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("masks.safetensors");
    masks.save(&p).unwrap();
    let raw = Weights::load(&p).unwrap();
    assert_eq!(raw.get("a").unwrap().shape(), &[2, 3]);
    assert_eq!(f32s(&raw, "a"), &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    assert_eq!(Masks::load(&p, &w).unwrap(), masks);
    assert_eq!(masks.kernels(), 8);
    assert_eq!(masks.live(), 7);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn density_stays_constant(
        layers in proptest::collection::vec((1usize..6, 1usize..6, 1usize..4, any::<u64>()), 1..4),
        seed in any::<u64>(),
        rates in proptest::collection::vec(0.0f64..=1.0, 1..8),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w = Weights::new();
        let mut m = Weights::new();
        for (i, &(d0, d1, kv, s)) in layers.iter().enumerate() {
            let mut r = ChaCha8Rng::seed_from_u64(s);
            let n = d0 * d1;
            let vals = (0..n * kv).map(|_| rand::Rng::random_range(&mut r, -1.0f32..1.0)).collect();
            let alive = (0..n).map(|_| if rand::Rng::random_bool(&mut r, 0.5) { 1.0 } else { 0.0 }).collect();
            w.insert(format!("l{i}"), tensor(vec![d0, d1, kv], vals));
            m.insert(format!("l{i}"), tensor(vec![d0, d1], alive));
        }
        let mut masks = Masks::from_weights(&m, &w).unwrap();
        let live: Vec<usize> = masks.layers().map(|(_, l)| l.live()).collect();
        let mut mom = w.clone();
        masks.apply(&mut w).unwrap();
        for &rate in &rates {
            let stats = masks.update(&mut w, &mut mom, rate, &mut rng).unwrap();
            prop_assert_eq!(stats.pruned, stats.regrown);
            let now: Vec<usize> = masks.layers().map(|(_, l)| l.live()).collect();
            prop_assert_eq!(&now, &live);
            for ((n, l), u) in masks.layers().zip(&stats.layers) {
                let kv = l.kernel_volume;
                for k in 0..l.alive.len() {
                    let zero = !l.alive[k] || u.regrown.contains(&k);
                    if zero {
                        prop_assert!(f32s(&w, n)[k * kv..(k + 1) * kv].iter().all(|&x| x == 0.0));
                        prop_assert!(f32s(&mom, n)[k * kv..(k + 1) * kv].iter().all(|&x| x == 0.0));
                    }
                }
            }
        }
    }
}
