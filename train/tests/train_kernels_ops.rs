//! The non-convolution training kernels: forward ops against the reference interpreter, backward
//! ops against hand-computed cases, exact adjoint identities and f64 finite differences.

use e2enc_ir::interp::ops;
use e2enc_ir::{PoolAttrs, ShiftAttrs, Tensor};
use e2enc_train::kernels as k;
use proptest::prelude::*;

use k::noise;

fn tensor(shape: [usize; 5], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
}

fn vec1(v: &[f32]) -> Tensor {
    Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: {g} vs {w}");
    }
}

/// `Σ dy · instance_norm(x)` in f64, per the definition (for finite differences).
fn norm_loss(x: &[f64], xs: [usize; 5], gamma: &[f64], dy: &[f32], eps: f64) -> f64 {
    let plane: usize = xs[2..].iter().product();
    let mut total = 0.0;
    for (p, src) in x.chunks(plane).enumerate() {
        let c = p % xs[1];
        let mean = src.iter().sum::<f64>() / plane as f64;
        let var = src.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / plane as f64;
        let r = 1.0 / (var + eps).sqrt();
        for (j, v) in src.iter().enumerate() {
            total += dy[p * plane + j] as f64 * (v - mean) * r * gamma[c];
        }
    }
    total
}

fn shape_strategy() -> impl Strategy<Value = ([usize; 5], u64)> {
    (
        (1usize..=2, 1usize..=5, 1usize..=4, 1usize..=6, 1usize..=7),
        any::<u64>(),
    )
        .prop_map(|((n, c, d, h, w), seed)| ([n, c, d, h, w], seed))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn instance_norm_forward_and_backward((xs, seed) in shape_strategy()) {
        let n: usize = xs.iter().product();
        let x: Vec<f32> = noise(n, seed).iter().map(|v| 3.0 * v + 0.5).collect();
        let (g, b, dy) = (noise(xs[1], seed + 1), noise(xs[1], seed + 2), noise(n, seed + 3));
        let eps = 1e-5;
        let mut y = vec![0f32; n];
        k::instance_norm(&x, xs, &g, &b, eps, &mut y, 2).unwrap();
        let want = ops::instance_norm(&tensor(xs, &x), &vec1(&g), &vec1(&b), eps).unwrap();
        assert_close(&y, want.as_f32().unwrap(), 1e-5, "instance_norm");

        // dx against central differences of the f64 definition (skip single-voxel planes, whose
        // output is constant in x).
        let mut dx = vec![0f32; n];
        k::instance_norm_backward(&x, xs, &g, &dy, eps, &mut dx, 2).unwrap();
        let mut dx1 = vec![0f32; n];
        k::instance_norm_backward(&x, xs, &g, &dy, eps, &mut dx1, 1).unwrap();
        prop_assert_eq!(&dx, &dx1);
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let h = 1e-5;
        for i in (0..n).step_by(n.div_ceil(12)) {
            let (mut p, mut m) = (x64.clone(), x64.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (norm_loss(&p, xs, &g64, &dy, eps as f64) - norm_loss(&m, xs, &g64, &dy, eps as f64)) / (2.0 * h);
            prop_assert!((fd - dx[i] as f64).abs() <= 1e-3 * (1.0 + fd.abs()), "dx[{}]: {} vs {}", i, dx[i], fd);
        }

        // Gamma gradient: the loss is linear in gamma.
        let mut dg = vec![0f32; xs[1]];
        k::instance_norm_gamma_grad(&x, xs, &dy, eps, &mut dg, 2).unwrap();
        for c in 0..xs[1] {
            let mut e = vec![0f64; xs[1]];
            e[c] = 1.0;
            let want = norm_loss(&x64, xs, &e, &dy, eps as f64);
            prop_assert!((want - dg[c] as f64).abs() <= 1e-4 * (1.0 + want.abs()), "dgamma[{}]", c);
        }
    }

    #[test]
    fn depth_shift_matches_interpreter_and_adjoint((xs, seed) in shape_strategy(), groups in 1usize..=5) {
        let n: usize = xs.iter().product();
        let (x, dy) = (noise(n, seed), noise(n, seed + 1));
        let mut y = vec![0f32; n];
        k::depth_shift(&x, xs, groups, &mut y).unwrap();
        let want = ops::depth_shift(&tensor(xs, &x), &ShiftAttrs { groups }).unwrap();
        prop_assert_eq!(&y[..], want.as_f32().unwrap());
        let mut dx = vec![0f32; n];
        k::depth_shift_backward(&dy, xs, groups, &mut dx).unwrap();
        let (l, r) = (dot(&y, &dy), dot(&x, &dx));
        prop_assert!((l - r).abs() <= 1e-12 * (1.0 + l.abs()), "{} vs {}", l, r);
    }

    #[test]
    fn max_pool_matches_interpreter((xs, seed) in shape_strategy(), kern in (1usize..=2, 1usize..=2, 1usize..=3), st in (1usize..=2, 1usize..=2, 1usize..=2)) {
        let a = PoolAttrs { kernel: [kern.0, kern.1, kern.2], stride: [st.0, st.1, st.2] };
        prop_assume!(k::max_pool3d_output_shape(xs, &a).is_ok());
        let ys = k::max_pool3d_output_shape(xs, &a).unwrap();
        // Quantized values make ties common.
        let x: Vec<f32> = noise(xs.iter().product(), seed).iter().map(|v| (v * 3.0).round()).collect();
        let mut y = vec![0f32; ys.iter().product()];
        k::max_pool3d(&x, xs, &a, &mut y).unwrap();
        let want = ops::max_pool3d(&tensor(xs, &x), &a).unwrap();
        prop_assert_eq!(&y[..], want.as_f32().unwrap());
        // Backward: the total is preserved and every gradient lands on a window maximum.
        let dy = vec![1f32; y.len()];
        let mut dx = vec![0f32; x.len()];
        k::max_pool3d_backward(&x, xs, &dy, &a, &mut dx).unwrap();
        prop_assert_eq!(dx.iter().sum::<f32>(), y.len() as f32);
    }

    #[test]
    fn select_and_concat_match_interpreter((xs, seed) in shape_strategy(), cut in 0usize..5) {
        let n: usize = xs.iter().product();
        let x = noise(n, seed);
        let c = xs[1];
        let ranges: Vec<(usize, usize)> = if c >= 3 { vec![(0, 1), (cut % (c - 2) + 2, c)] } else { vec![(0, c)] };
        let cy: usize = ranges.iter().map(|(s, e)| e - s).sum();
        let ys = [xs[0], cy, xs[2], xs[3], xs[4]];
        let mut y = vec![0f32; ys.iter().product()];
        k::select_channels(&x, xs, &ranges, &mut y).unwrap();
        let want = ops::select(&tensor(xs, &x), 1, &ranges).unwrap();
        prop_assert_eq!(&y[..], want.as_f32().unwrap());
        let dy = noise(y.len(), seed + 1);
        let mut dx = vec![0f32; n];
        k::select_channels_backward(&dy, xs, &ranges, &mut dx).unwrap();
        prop_assert_eq!(dot(&y, &dy), dot(&x, &dx));

        let mut cat = vec![0f32; n + y.len()];
        k::concat(&[(&x, xs), (&y, ys)], &mut cat).unwrap();
        let want = ops::concat(&[&tensor(xs, &x), &tensor(ys, &y)]).unwrap();
        prop_assert_eq!(&cat[..], want.as_f32().unwrap());
    }
}

#[test]
fn max_pool_backward_by_hand() {
    // One row of 5: windows of 2 at stride 1 overlap; ties go to the first maximum.
    let xs = [1, 1, 1, 1, 5];
    let x = [1.0, 3.0, 3.0, 2.0, 2.0];
    let a = PoolAttrs {
        kernel: [1, 1, 2],
        stride: [1, 1, 1],
    };
    let mut y = [0f32; 4];
    k::max_pool3d(&x, xs, &a, &mut y).unwrap();
    assert_eq!(y, [3.0, 3.0, 3.0, 2.0]);
    let mut dx = [0f32; 5];
    k::max_pool3d_backward(&x, xs, &[1.0, 10.0, 100.0, 1000.0], &a, &mut dx).unwrap();
    assert_eq!(dx, [0.0, 11.0, 100.0, 1000.0, 0.0]);
}

#[test]
fn leaky_relu_and_sums_by_hand() {
    let x = [-2.0, -0.0, 0.0, 3.0];
    let mut y = [0f32; 4];
    k::leaky_relu(&x, 0.1, &mut y).unwrap();
    assert_eq!(y, [-0.2, 0.0, 0.0, 3.0]);
    let mut dx = [0f32; 4];
    k::leaky_relu_backward(&x, &[1.0, 2.0, 3.0, 4.0], 0.1, &mut dx).unwrap();
    assert_eq!(dx, [0.1, 0.2, 0.3, 4.0]); // at x = ±0 the slope, as in PyTorch
    let mut s = [0f32; 4];
    k::add(&x, &[1.0; 4], &mut s).unwrap();
    assert_eq!(s, [-1.0, 1.0, 1.0, 4.0]);
    // [N=2, C=2, 1, 1, 2]: channel 0 holds 1, 2, 5, 6; channel 1 holds 3, 4, 7, 8.
    let dy: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    let mut cs = [0f32; 2];
    k::channel_sum(&dy, [2, 2, 1, 1, 2], &mut cs).unwrap();
    assert_eq!(cs, [14.0, 22.0]);
}

#[test]
fn bad_shapes_are_errors() {
    let x = [0f32; 8];
    let mut y = [0f32; 8];
    let s = [1, 2, 1, 2, 2];
    assert!(k::instance_norm(&x, s, &[1.0; 2], &[0.0; 2], 0.0, &mut y, 1).is_err());
    assert!(k::instance_norm(&x, s, &[1.0; 3], &[0.0; 2], 1e-5, &mut y, 1).is_err());
    assert!(k::instance_norm(&x, [1, 2, 1, 2, 3], &[1.0; 2], &[0.0; 2], 1e-5, &mut y, 1).is_err());
    assert!(k::leaky_relu(&x, 0.1, &mut y[1..]).is_err());
    assert!(k::depth_shift(&x, s, 0, &mut y).is_err());
    assert!(k::select_channels(&x, s, &[(1, 3)], &mut y[..4]).is_err());
    assert!(k::concat(&[(&x, s), (&x, [2, 1, 1, 2, 2])], &mut [0f32; 16]).is_err());
    let a = PoolAttrs {
        kernel: [2, 2, 2],
        stride: [1, 1, 1],
    };
    assert!(k::max_pool3d(&x, s, &a, &mut y).is_err());
    assert!(k::channel_sum(&x, s, &mut [0f32; 3]).is_err());
}
