//! Tests of the interpreter's training ops: hand-computed tiny cases (expected numbers worked out
//! in the comments, not re-derived with the code under test), shape-rule refusals, and property
//! tests of the adjoint identities `<conv(x; w), dy> == <x, dx(dy, w)> == <w, dw(x, dy)>` for
//! convs and transposed convs over random small geometries.

use e2enc_ir::interp::ops;
use e2enc_ir::{ConvAttrs, ConvGradAttrs, PoolAttrs, ShiftAttrs, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
}

fn close(got: &Tensor, shape: &[usize], want: &[f32]) {
    assert_eq!(got.shape(), shape, "shape");
    let g = got.as_f32().unwrap();
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "[{i}]: {a} vs {b}");
    }
}

/// A 1-D conv geometry along W (kernel 3, stride 2, padding 1).
fn geom_w() -> ConvAttrs {
    ConvAttrs {
        kernel: [1, 1, 3],
        stride: [1, 1, 2],
        padding: [0, 0, 1],
    }
}

#[test]
fn grad_strided_conv_backward_data_odd_extent() {
    // x extent 5, out = (5 + 2 - 3) / 2 + 1 = 3, tap t = 2q + k - 1.
    // dx[t] = Σ dy[q] w[k]: q0 → t0 (w1), t1 (w2); q1 → t1, t2, t3; q2 → t3, t4 (t5 dropped).
    // dy = [1, 10, 100], w = [1, 2, 3]: dx = [2, 3 + 10, 20, 30 + 100, 200].
    let w = t(&[1, 1, 1, 1, 3], &[1.0, 2.0, 3.0]);
    let dy = t(&[1, 1, 1, 1, 3], &[1.0, 10.0, 100.0]);
    let mut a = ConvGradAttrs {
        conv: geom_w(),
        transposed: false,
        input: [1, 1, 5],
        shifts: Vec::new(),
    };
    let dx = ops::conv_backward_data(&dy, &w, &a).unwrap();
    close(&dx, &[1, 1, 1, 1, 5], &[2.0, 13.0, 20.0, 130.0, 200.0]);
    // Extent 6 gives the same output extent, and q2's last tap t5 is now inside: 100·3.
    a.input = [1, 1, 6];
    let dx = ops::conv_backward_data(&dy, &w, &a).unwrap();
    close(
        &dx,
        &[1, 1, 1, 1, 6],
        &[2.0, 13.0, 20.0, 130.0, 200.0, 300.0],
    );
    // Extent 4 with kernel 2: out = (4 + 2 - 2) / 2 + 1 = 3, taps t = 2q + k - 1:
    // q0 → t0 (w1); q1 → t1 (w0), t2 (w1); q2 → t3 (w0), t4 dropped. w = [1, 2], dy = [1, 10, 100]:
    // dx = [2, 10, 20, 100].
    let w2 = t(&[1, 1, 1, 1, 2], &[1.0, 2.0]);
    let a2 = ConvGradAttrs {
        conv: ConvAttrs {
            kernel: [1, 1, 2],
            ..geom_w()
        },
        transposed: false,
        input: [1, 1, 4],
        shifts: Vec::new(),
    };
    let dx = ops::conv_backward_data(&dy, &w2, &a2).unwrap();
    close(&dx, &[1, 1, 1, 1, 4], &[2.0, 10.0, 20.0, 100.0]);
    // Extent 7 would give 4 outputs: dy's type does not fit.
    a.input = [1, 1, 7];
    let e = ops::conv_backward_data(&dy, &w, &a)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dy"), "{e}");
}

#[test]
fn grad_strided_conv_backward_weight_odd_extent() {
    // dw[k] = Σ_q dy[q] x[2q + k - 1], x = [1..5], dy = [1, 10, 100]:
    // k0: 10·x1 + 100·x3 = 20 + 400; k1: x0 + 10·x2 + 100·x4 = 1 + 30 + 500; k2: x1 + 10·x3 = 42.
    let x = t(&[1, 1, 1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let dy = t(&[1, 1, 1, 1, 3], &[1.0, 10.0, 100.0]);
    let a = ConvGradAttrs {
        conv: geom_w(),
        transposed: false,
        input: [1, 1, 5],
        shifts: Vec::new(),
    };
    let dw = ops::conv_backward_weight(&x, &dy, &a).unwrap();
    close(&dw, &[1, 1, 1, 1, 3], &[420.0, 531.0, 42.0]);
    let bad = ConvGradAttrs {
        input: [1, 1, 6],
        shifts: Vec::new(),
        ..a
    };
    assert!(ops::conv_backward_weight(&x, &dy, &bad).is_err());
}

#[test]
fn grad_transposed_conv_backward_data_and_weight() {
    // Transposed: y[2q + k - 1] += x[q] w[k]; x extent 3 → y extent (3-1)·2 - 2 + 3 = 5.
    // dx[q] = Σ_k dy[2q + k - 1] w[k], dy = [1..5], w = [1, 2, 3]:
    // q0: dy0·2 + dy1·3 = 8; q1: dy1·1 + dy2·2 + dy3·3 = 20; q2: dy3·1 + dy4·2 = 14.
    let w = t(&[1, 1, 1, 1, 3], &[1.0, 2.0, 3.0]);
    let dy = t(&[1, 1, 1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let a = ConvGradAttrs {
        conv: geom_w(),
        transposed: true,
        input: [1, 1, 3],
        shifts: Vec::new(),
    };
    let dx = ops::conv_backward_data(&dy, &w, &a).unwrap();
    close(&dx, &[1, 1, 1, 1, 3], &[8.0, 20.0, 14.0]);
    // dw[k] = Σ_q x[q] dy[2q + k - 1], x = [1, 10, 100]:
    // k0: 10·dy1 + 100·dy3 = 420; k1: dy0 + 10·dy2 + 100·dy4 = 531; k2: dy1 + 10·dy3 = 42.
    let x = t(&[1, 1, 1, 1, 3], &[1.0, 10.0, 100.0]);
    let dw = ops::conv_backward_weight(&x, &dy, &a).unwrap();
    close(&dw, &[1, 1, 1, 1, 3], &[420.0, 531.0, 42.0]);
}

#[test]
fn grad_transposed_weight_layout_is_in_out() {
    // I = 2 input channels, O = 1: w is [2, 1, 1, 1, 1]; 1x1x1 kernel, so dw[i, 0] = Σ x_i · dy.
    // x = [[1, 2], [3, 4]] (two channels, W = 2), dy = [10, 100]: dw = [210, 430].
    let x = t(&[1, 2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let dy = t(&[1, 1, 1, 1, 2], &[10.0, 100.0]);
    let a = ConvGradAttrs {
        conv: ConvAttrs {
            kernel: [1, 1, 1],
            stride: [1, 1, 1],
            padding: [0, 0, 0],
        },
        transposed: true,
        input: [1, 1, 2],
        shifts: Vec::new(),
    };
    let dw = ops::conv_backward_weight(&x, &dy, &a).unwrap();
    close(&dw, &[2, 1, 1, 1, 1], &[210.0, 430.0]);
    // dx[i] = w[i, 0] · dy with w = [2, 3]: [[20, 200], [30, 300]].
    let w = t(&[2, 1, 1, 1, 1], &[2.0, 3.0]);
    let dx = ops::conv_backward_data(&dy, &w, &a).unwrap();
    close(&dx, &[1, 2, 1, 1, 2], &[20.0, 200.0, 30.0, 300.0]);
}

#[test]
fn grad_channel_sum() {
    // [N=2, C=2, 1, 1, 2], values 1..8: c0 = 1+2+5+6 = 14, c1 = 3+4+7+8 = 22.
    let dy = t(&[2, 2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    close(&ops::channel_sum(&dy).unwrap(), &[2], &[14.0, 22.0]);
}

#[test]
fn grad_depth_shift_backward_at_the_volume_ends() {
    // groups 3, C 3: shifts -1, 0, +1. dx[c, d] = dy[c, d + s]:
    // c0 (s -1): [0, 1, 2]; c1: [4, 5, 6]; c2 (s +1): [8, 9, 0].
    let dy = t(
        &[1, 3, 3, 1, 1],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    );
    let dx = ops::depth_shift_backward(&dy, &ShiftAttrs { groups: 3 }).unwrap();
    close(
        &dx,
        &[1, 3, 3, 1, 1],
        &[0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0, 0.0],
    );
}

#[test]
fn grad_depth_shift_backward_with_fewer_channels_than_groups() {
    // groups 5, C 2: blocks of 1, shifts -2 and -1 (the others unused). D = 3, H = 1, W = 2:
    // c0 (s -2): dx[d] = dy[d - 2] → [0, 0, dy0]; c1 (s -1): [0, dy0, dy1].
    let dy = t(
        &[1, 2, 3, 1, 2],
        &[
            1.0, 2.0, 3.0, 4.0, 5.0, 6.0, // c0: d0 = [1, 2], d1 = [3, 4], d2 = [5, 6]
            7.0, 8.0, 9.0, 10.0, 11.0, 12.0, // c1
        ],
    );
    let dx = ops::depth_shift_backward(&dy, &ShiftAttrs { groups: 5 }).unwrap();
    close(
        &dx,
        &[1, 2, 3, 1, 2],
        &[
            0.0, 0.0, 0.0, 0.0, 1.0, 2.0, //
            0.0, 0.0, 7.0, 8.0, 9.0, 10.0,
        ],
    );
}

#[test]
fn grad_max_pool_backward_ties_and_overlaps() {
    // A 2x2 window of equal values: the first (row-major) gets it all.
    let x = t(&[1, 1, 1, 2, 2], &[1.0, 1.0, 1.0, 1.0]);
    let dy = t(&[1, 1, 1, 1, 1], &[5.0]);
    let pool = PoolAttrs {
        kernel: [1, 2, 2],
        stride: [1, 2, 2],
    };
    close(
        &ops::max_pool_backward(&x, &dy, &pool).unwrap(),
        &[1, 1, 1, 2, 2],
        &[5.0, 0.0, 0.0, 0.0],
    );
    // The tie rule agrees with the forward: a later equal value does not win.
    let x = t(&[1, 1, 1, 2, 2], &[0.0, 3.0, 1.0, 3.0]);
    close(
        &ops::max_pool_backward(&x, &dy, &pool).unwrap(),
        &[1, 1, 1, 2, 2],
        &[0.0, 5.0, 0.0, 0.0],
    );
    // Overlapping windows (kernel 2, stride 1) along W on [1, 3, 2]: both pick index 1.
    let x = t(&[1, 1, 1, 1, 3], &[1.0, 3.0, 2.0]);
    let dy = t(&[1, 1, 1, 1, 2], &[10.0, 100.0]);
    let pool = PoolAttrs {
        kernel: [1, 1, 2],
        stride: [1, 1, 1],
    };
    close(
        &ops::max_pool_backward(&x, &dy, &pool).unwrap(),
        &[1, 1, 1, 1, 3],
        &[0.0, 110.0, 0.0],
    );
    // dy must have the pooled shape.
    assert!(ops::max_pool_backward(&x, &x, &pool).is_err());
}

#[test]
fn grad_instance_norm_backward_and_gamma() {
    // One plane x = [1, 3], eps = 1: mean 2, var 1, rstd r = 1/sqrt(2), x̂ = [-r, r].
    // dy = [1, 0], gamma 2: g = [2, 0], mean(g) = 1, mean(g·x̂) = -r.
    // dx = r · (g - 1 - x̂ · (-r)) = r · ([1, -1] + [-r², r²]) = r · [0.5, -0.5].
    let x = t(&[1, 1, 1, 1, 2], &[1.0, 3.0]);
    let dy = t(&[1, 1, 1, 1, 2], &[1.0, 0.0]);
    let gamma = t(&[1], &[2.0]);
    let r = std::f32::consts::FRAC_1_SQRT_2;
    let dx = ops::instance_norm_backward(&x, &gamma, &dy, 1.0).unwrap();
    close(&dx, &[1, 1, 1, 1, 2], &[0.5 * r, -0.5 * r]);
    // dgamma = Σ dy · x̂ = -r.
    let dg = ops::instance_norm_gamma_grad(&x, &dy, 1.0).unwrap();
    close(&dg, &[1], &[-r]);
}

#[test]
fn grad_leaky_relu_backward() {
    let x = t(&[1, 1, 1, 1, 3], &[-1.0, 0.0, 2.0]);
    let dy = t(&[1, 1, 1, 1, 3], &[10.0, 10.0, 10.0]);
    close(
        &ops::leaky_relu_backward(&x, &dy, 0.1).unwrap(),
        &[1, 1, 1, 1, 3],
        &[1.0, 1.0, 10.0], // x = 0 takes the slope, as in PyTorch
    );
}

fn rand_tensor(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    t(
        shape,
        &(0..n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>(),
    )
}

/// `<a, b>` in f64 and `Σ |a·b|` (the scale of its rounding error).
fn dot(a: &Tensor, b: &Tensor) -> (f64, f64) {
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        let p = x as f64 * y as f64;
        (s + p, m + p.abs())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `<conv(x; w), dy> == <x, ConvBackwardData(dy, w)> == <w, ConvBackwardWeight(x, dy)>`,
    /// for convs and transposed convs, 1x3x3 / 3x3x3 / 2x2x2 kernels, strides 1 and 2, paddings.
    #[test]
    fn grad_conv_adjoint_identities(
        seed in any::<u64>(),
        kind in 0usize..3,
        stride in prop::array::uniform3(1usize..3),
        pad in prop::array::uniform3(0usize..2),
        ext in prop::array::uniform3(1usize..6),
        (n, ci, co) in (1usize..3, 1usize..4, 1usize..4),
        transposed in any::<bool>(),
    ) {
        let kernel = [[1, 3, 3], [3, 3, 3], [2, 2, 2]][kind];
        let conv = ConvAttrs { kernel, stride, padding: pad };
        let a = ConvGradAttrs { conv: conv.clone(), transposed, input: ext, shifts: Vec::new() };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = rand_tensor(&mut rng, &[n, ci, ext[0], ext[1], ext[2]]);
        let wshape = if transposed { [ci, co] } else { [co, ci] };
        let w = rand_tensor(&mut rng, &[wshape[0], wshape[1], kernel[0], kernel[1], kernel[2]]);
        let y = if transposed {
            ops::conv_transpose3d(&x, &w, None, &conv)
        } else {
            ops::conv3d(&x, &w, None, &conv)
        };
        // Geometries with no output are refused by the forward op; skip them.
        let Ok(y) = y else { return Ok(()); };
        let dy = rand_tensor(&mut rng, y.shape());
        let dx = ops::conv_backward_data(&dy, &w, &a).unwrap();
        let dw = ops::conv_backward_weight(&x, &dy, &a).unwrap();
        prop_assert_eq!(dx.shape(), x.shape());
        prop_assert_eq!(dw.shape(), w.shape());
        let (lhs, s0) = dot(&y, &dy);
        let (mid, s1) = dot(&x, &dx);
        let (rhs, s2) = dot(&w, &dw);
        // Results are stored as f32: each term carries a relative error of about 2^-24.
        let tol = 1e-6 * (s0 + s1 + s2) + 1e-9;
        prop_assert!((lhs - mid).abs() <= tol, "data: {} vs {} (tol {})", lhs, mid, tol);
        prop_assert!((lhs - rhs).abs() <= tol, "weight: {} vs {} (tol {})", lhs, rhs, tol);
    }

    /// `<depth_shift(x), dy> == <x, depth_shift_backward(dy)>` for any groups and channels.
    #[test]
    fn grad_depth_shift_adjoint(
        seed in any::<u64>(),
        groups in 1usize..7,
        c in 1usize..8,
        d in 1usize..6,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = rand_tensor(&mut rng, &[1, c, d, 2, 1]);
        let dy = rand_tensor(&mut rng, &[1, c, d, 2, 1]);
        let a = ShiftAttrs { groups };
        let y = ops::depth_shift(&x, &a).unwrap();
        let dx = ops::depth_shift_backward(&dy, &a).unwrap();
        let ((l, _), (r, _)) = (dot(&y, &dy), dot(&x, &dx));
        prop_assert!((l - r).abs() <= 1e-9, "{} vs {}", l, r);
    }
}
