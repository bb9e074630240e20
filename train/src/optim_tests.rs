//! Tests of SGD, clipping, the poly schedule and the optimizer state file.

use super::*;

fn t(shape: Vec<usize>, v: &[f32]) -> Tensor {
    Tensor::from_f32(shape, v.to_vec()).unwrap()
}

fn one(name: &str, v: &[f32]) -> Weights {
    let mut w = Weights::new();
    w.insert(name, t(vec![v.len()], v));
    w
}

fn f32s<'a>(w: &'a Weights, n: &str) -> &'a [f32] {
    w.get(n).unwrap().as_f32().unwrap()
}

#[test]
fn three_nesterov_steps_by_hand() {
    // lr 0.1, momentum 0.5, weight decay 0.1, w0 = (1, -2). Element 0, step 1 (grad 0.5):
    // g = 0.5 + 0.1·1 = 0.6; buf = 0.6; g = 0.6 + 0.5·0.6 = 0.9; w = 1 − 0.09 = 0.91.
    // Step 2 (grad −1): g = −0.909; buf = 0.3 − 0.909 = −0.609; g = −1.2135; w = 1.03135.
    // Step 3 (grad 0.25): g = 0.353135; buf = 0.048635; g = 0.3774525; w = 0.99360475.
    // Element 1 (grads 0.25, 0.5, 0): w = −2.0075, −2.0536375, −2.0309391875;
    // buf = 0.05, 0.32425, −0.04323875.
    let mut w = one("p", &[1.0, -2.0]);
    let mut sgd = Sgd::new(0.1, 0.5, 0.1, true);
    let want_w = [
        [0.91, -2.0075],
        [1.03135, -2.0536375],
        [0.99360475, -2.0309391875],
    ];
    let want_b = [[0.6, 0.05], [-0.609, 0.32425], [0.048635, -0.04323875]];
    for (s, g) in [[0.5, 0.25], [-1.0, 0.5], [0.25, 0.0]].iter().enumerate() {
        sgd.step(&mut w, &one("p", g), 0.1).unwrap();
        for i in 0..2 {
            assert!(
                (f32s(&w, "p")[i] as f64 - want_w[s][i]).abs() < 1e-6,
                "step {s}"
            );
            let b = f32s(&sgd.momentum_buffers, "p")[i] as f64;
            assert!((b - want_b[s][i]).abs() < 1e-6, "step {s} buffer {b}");
        }
    }
}

#[test]
fn plain_momentum_and_no_momentum() {
    // Momentum 0.5 without Nesterov, no decay: w = 1, grads 1, 1: buf 1 then 1.5; w 0.9, 0.75.
    let mut w = one("p", &[1.0]);
    let mut sgd = Sgd::new(0.1, 0.5, 0.0, false);
    sgd.step(&mut w, &one("p", &[1.0]), 0.1).unwrap();
    sgd.step(&mut w, &one("p", &[1.0]), 0.1).unwrap();
    assert!((f32s(&w, "p")[0] - 0.75).abs() < 1e-7);
    // No momentum keeps no buffer: w = 1 − 0.1·(1 + 0.5·1) = 0.85.
    let mut w = one("p", &[1.0]);
    let mut sgd = Sgd::new(0.1, 0.0, 0.5, false);
    sgd.step(&mut w, &one("p", &[1.0]), 0.1).unwrap();
    assert!((f32s(&w, "p")[0] - 0.85).abs() < 1e-7);
    assert!(sgd.momentum_buffers.is_empty());
}

#[test]
fn parameters_without_gradient_stay_and_bad_gradients_change_nothing() {
    let mut w = one("a", &[1.0, 2.0]);
    w.insert("b", t(vec![1], &[5.0]));
    let mut sgd = Sgd::nnunet();
    sgd.step(&mut w, &one("a", &[1.0, 1.0]), 0.01).unwrap();
    assert_eq!(f32s(&w, "b"), &[5.0]);
    assert!(sgd.momentum_buffers.get("b").is_none());
    let before = w.clone();
    let mut bad = one("a", &[1.0, 1.0]);
    bad.insert("b", t(vec![2], &[1.0, 1.0]));
    assert!(sgd.step(&mut w, &bad, 0.01).is_err());
    assert!(sgd.step(&mut w, &one("zz", &[1.0]), 0.01).is_err());
    assert_eq!(f32s(&w, "a"), f32s(&before, "a"));
}

#[test]
fn clipping_on_and_off() {
    // Norm sqrt(3² + 4² + 12²) = 13.
    let mut g = one("a", &[3.0, 4.0]);
    g.insert("b", t(vec![1, 1], &[12.0]));
    let untouched = g.clone();
    assert_eq!(clip_grad_norm(&mut g, 13.5), 13.0);
    assert_eq!(f32s(&g, "a"), f32s(&untouched, "a"));
    assert_eq!(f32s(&g, "b"), f32s(&untouched, "b"));
    assert_eq!(clip_grad_norm(&mut g, MAX_GRAD_NORM), 13.0);
    // coef = 12 / (13 + 1e-6) = 0.9230768520710114
    let c = 0.923_076_852_071_011_4_f64 as f32;
    assert_eq!(f32s(&g, "a"), &[3.0 * c, 4.0 * c]);
    assert_eq!(f32s(&g, "b"), &[12.0 * c]);
    assert!((clip_grad_norm(&mut g, 100.0) - 12.0).abs() < 1e-5);
}

#[test]
fn poly_schedule_values() {
    assert_eq!(poly_lr(0, 1000, INITIAL_LR), 0.01);
    // 0.01·0.5^0.9 and 0.01·0.001^0.9
    assert!((poly_lr(500, 1000, INITIAL_LR) - 0.005358867312681466).abs() < 1e-15);
    assert!((poly_lr(999, 1000, INITIAL_LR) - 1.995262314968881e-5).abs() < 1e-15);
    assert_eq!(poly_lr(1000, 1000, INITIAL_LR), 0.0);
}

fn grads_at(step: usize) -> Weights {
    let s = step as f32;
    let mut g = one("a", &[0.3 * s - 1.0, 0.7, -0.2 * s]);
    g.insert("b", t(vec![2, 1], &[(s * 1.3).sin(), 0.01 * s]));
    g
}

#[test]
fn state_round_trip_continues_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let start = {
        let mut w = one("a", &[0.5, -0.25, 1.0]);
        w.insert("b", t(vec![2, 1], &[2.0, -3.0]));
        w
    };
    let mut w_ref = start.clone();
    let mut sgd_ref = Sgd::nnunet();
    for s in 0..6 {
        sgd_ref
            .step(&mut w_ref, &grads_at(s), poly_lr(s, 10, 0.01))
            .unwrap();
    }

    let mut w = start;
    let mut sgd = Sgd::nnunet();
    for s in 0..3 {
        sgd.step(&mut w, &grads_at(s), poly_lr(s, 10, 0.01))
            .unwrap();
    }
    sgd.save(&dir.path().join("optim.safetensors")).unwrap();
    w.save(&dir.path().join("w.safetensors")).unwrap();
    drop((sgd, w));
    let mut sgd = Sgd::load(&dir.path().join("optim.safetensors")).unwrap();
    let mut w = Weights::load(&dir.path().join("w.safetensors")).unwrap();
    assert_eq!(
        (sgd.lr, sgd.momentum, sgd.weight_decay, sgd.nesterov),
        (0.01, 0.99, 3e-5, true)
    );
    for s in 3..6 {
        sgd.step(&mut w, &grads_at(s), poly_lr(s, 10, 0.01))
            .unwrap();
    }
    for n in ["a", "b"] {
        let bits = |w: &Weights| f32s(w, n).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&w), bits(&w_ref), "weights `{n}`");
        assert_eq!(bits(&sgd.momentum_buffers), bits(&sgd_ref.momentum_buffers));
        assert_eq!(w.get(n).unwrap().shape(), w_ref.get(n).unwrap().shape());
    }
}

#[test]
fn state_file_errors() {
    assert!(Sgd::from_bytes(b"nonsense").is_err());
    // A plain weights file has no SGD metadata.
    let bytes = one("a", &[1.0]).to_bytes(None).unwrap();
    let e = Sgd::from_bytes(&bytes).unwrap_err();
    assert!(e.contains("not an SGD state"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    assert!(Sgd::load(&dir.path().join("missing.safetensors")).is_err());
}
