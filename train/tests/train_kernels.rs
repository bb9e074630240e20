//! The training convolution kernels against the reference interpreter (forward) and against
//! exact adjoint identities evaluated in f64 (backward): `<conv(x), dy> = <x, dx(dy)>` for the
//! data gradient and `<conv(x; w), dy> = <w, dw(x, dy)>` (a conv is linear in its weights) for
//! the weight gradient. Random small shapes cover odd extents, depth 1, channel counts that are
//! not multiples of 8, strides 1-2, paddings up to the kernel size and random liveness masks.
//! Masked kernels must contribute nothing and get exactly 0 gradient, and one and two threads
//! must agree bit for bit.

use e2enc_ir::interp::ops;
use e2enc_ir::{ConvAttrs, Tensor};
use e2enc_train::kernels as k;
use proptest::prelude::*;

use k::noise;

fn tensor(shape: [usize; 5], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum()
}

fn absdot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&p, &q)| (p as f64 * q as f64).abs())
        .sum()
}

/// `|got - want| <= 1e-5 · max(1, max |want|)` elementwise.
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * scale,
            "{what}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}

/// One random convolution problem.
#[derive(Debug, Clone)]
struct Case {
    xs: [usize; 5],
    co: usize,
    a: ConvAttrs,
    transposed: bool,
    mask: Option<Vec<bool>>,
    seed: u64,
}

impl Case {
    fn ws(&self) -> [usize; 5] {
        let [kd, kh, kw] = self.a.kernel;
        if self.transposed {
            [self.xs[1], self.co, kd, kh, kw]
        } else {
            [self.co, self.xs[1], kd, kh, kw]
        }
    }
    fn ys(&self) -> [usize; 5] {
        if self.transposed {
            k::conv_transpose3d_output_shape(self.xs, self.ws(), &self.a).unwrap()
        } else {
            k::conv3d_output_shape(self.xs, self.ws(), &self.a).unwrap()
        }
    }
    /// `w` with dead kernels zeroed.
    fn masked(&self, w: &[f32]) -> Vec<f32> {
        let ksz: usize = self.a.kernel.iter().product();
        let mut w = w.to_vec();
        if let Some(m) = &self.mask {
            for (kernel, &live) in w.chunks_mut(ksz).zip(m) {
                if !live {
                    kernel.fill(0.0);
                }
            }
        }
        w
    }
    /// The interpreter's forward result.
    fn reference(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let (xt, wt) = (tensor(self.xs, x), tensor(self.ws(), w));
        let bt = b.map(|b| Tensor::from_f32(vec![b.len()], b.to_vec()).unwrap());
        let y = if self.transposed {
            ops::conv_transpose3d(&xt, &wt, bt.as_ref(), &self.a)
        } else {
            ops::conv3d(&xt, &wt, bt.as_ref(), &self.a)
        };
        y.unwrap().as_f32().unwrap().to_vec()
    }
    fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, threads: usize) -> Vec<f32> {
        let mut y = vec![0f32; self.ys().iter().product()];
        let m = self.mask.as_deref();
        if self.transposed {
            k::conv_transpose3d(x, self.xs, w, self.ws(), b, &self.a, m, &mut y, threads).unwrap();
        } else {
            k::conv3d(x, self.xs, w, self.ws(), b, &self.a, m, &mut y, threads).unwrap();
        }
        y
    }
    fn data(&self, dy: &[f32], w: &[f32], mask: Option<&[bool]>, threads: usize) -> Vec<f32> {
        let mut dx = vec![0f32; self.xs.iter().product()];
        let input = [self.xs[2], self.xs[3], self.xs[4]];
        k::conv_backward_data(
            dy,
            self.ys(),
            w,
            self.ws(),
            &self.a,
            self.transposed,
            input,
            mask,
            &mut dx,
            threads,
        )
        .unwrap();
        dx
    }
    fn weight(&self, x: &[f32], dy: &[f32], mask: Option<&[bool]>, threads: usize) -> Vec<f32> {
        let mut dw = vec![0f32; self.ws().iter().product()];
        k::conv_backward_weight(
            x,
            self.xs,
            dy,
            self.ys(),
            &self.a,
            self.transposed,
            mask,
            &mut dw,
            threads,
        )
        .unwrap();
        dw
    }
}

/// Stride 1 twice as likely as 2, so the stride-1 paths get their share of cases.
fn stride() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 1, 2])
}

fn case_strategy(transposed: bool) -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=5, 1usize..=5),
        (1usize..=4, 1usize..=7, 1usize..=9),
        (1usize..=3, 1usize..=3, 1usize..=3),
        (stride(), stride(), stride()),
        (0usize..=3, 0usize..=3, 0usize..=3),
        (any::<bool>(), any::<u64>()),
    )
        .prop_filter_map(
            "geometry",
            move |((n, ci, co), (d, h, w), kern, st, pad, (masked, seed))| {
                let kernel = [kern.0, kern.1, kern.2];
                let stride = [st.0, st.1, st.2];
                let padding = [
                    pad.0.min(kernel[0]),
                    pad.1.min(kernel[1]),
                    pad.2.min(kernel[2]),
                ];
                let c = Case {
                    xs: [n, ci, d, h, w],
                    co,
                    a: ConvAttrs {
                        kernel,
                        stride,
                        padding,
                    },
                    transposed,
                    mask: None,
                    seed,
                };
                let ok = if transposed {
                    k::conv_transpose3d_output_shape(c.xs, c.ws(), &c.a).is_ok()
                } else {
                    k::conv3d_output_shape(c.xs, c.ws(), &c.a).is_ok()
                };
                let pairs = ci * co;
                let mask =
                    masked.then(|| noise(pairs, seed ^ 7).iter().map(|&v| v > -0.2).collect());
                ok.then_some(Case { mask, ..c })
            },
        )
}

fn check_case(c: &Case) {
    let ws = c.ws();
    let x = noise(c.xs.iter().product(), c.seed);
    let w = noise(ws.iter().product(), c.seed + 1);
    let dy = noise(c.ys().iter().product(), c.seed + 2);
    let co = if c.transposed { ws[1] } else { ws[0] };
    let b = noise(co, c.seed + 3);
    let wm = c.masked(&w);
    let m = c.mask.as_deref();

    // Forward: equals the interpreter with dead kernels zeroed.
    let y = c.forward(&x, &w, Some(&b), 1);
    assert_close(&y, &c.reference(&x, &wm, Some(&b)), "forward");

    // Data gradient: the adjoint of the (masked) forward; dead kernels contribute nothing.
    let dx = c.data(&dy, &w, m, 1);
    let yref = c.reference(&x, &wm, None);
    let (lhs, rhs) = (dot(&yref, &dy), dot(&x, &dx));
    let tol = 1e-5 * (absdot(&yref, &dy) + absdot(&x, &dx)) + 1e-9;
    assert!(
        (lhs - rhs).abs() <= tol,
        "data adjoint {lhs} vs {rhs} ({c:?})"
    );
    if m.is_some() {
        assert_eq!(dx, c.data(&dy, &wm, None, 1), "masked data gradient");
    }

    // Weight gradient: conv is linear in w, so <conv(x; w), dy> = <w, dw>.
    let dw = c.weight(&x, &dy, None, 1);
    let yw = c.reference(&x, &w, None);
    let (lhs, rhs) = (dot(&yw, &dy), dot(&w, &dw));
    let tol = 1e-5 * (absdot(&yw, &dy) + absdot(&w, &dw)) + 1e-9;
    assert!(
        (lhs - rhs).abs() <= tol,
        "weight adjoint {lhs} vs {rhs} ({c:?})"
    );
    if let Some(mask) = m {
        let dwm = c.weight(&x, &dy, m, 1);
        let ksz: usize = c.a.kernel.iter().product();
        for ((got, full), &live) in dwm.chunks(ksz).zip(dw.chunks(ksz)).zip(mask) {
            if live {
                assert_eq!(got, full, "live kernel gradient");
            } else {
                assert!(got.iter().all(|&v| v == 0.0), "dead kernel gradient");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn conv3d_matches_interpreter_and_adjoints(c in case_strategy(false)) {
        check_case(&c);
    }

    #[test]
    fn conv_transpose3d_matches_interpreter_and_adjoints(c in case_strategy(true)) {
        check_case(&c);
    }
}

/// E2ENet's hot shapes, large enough to take the threaded path: threads 1 and 2 agree exactly,
/// and the results still match the interpreter / adjoints.
#[test]
fn hot_shapes_threads_agree() {
    let c133 = |s: usize| ConvAttrs {
        kernel: [1, 3, 3],
        stride: [s, s, s],
        padding: [0, 1, 1],
    };
    let t2 = ConvAttrs {
        kernel: [2, 2, 2],
        stride: [2, 2, 2],
        padding: [0, 0, 0],
    };
    let h1 = ConvAttrs {
        kernel: [1, 1, 1],
        stride: [1, 1, 1],
        padding: [0, 0, 0],
    };
    let cases = [
        Case {
            xs: [1, 12, 6, 20, 21],
            co: 10,
            a: c133(1),
            transposed: false,
            mask: None,
            seed: 1,
        },
        Case {
            xs: [2, 9, 5, 17, 16],
            co: 12,
            a: c133(2),
            transposed: false,
            mask: None,
            seed: 2,
        },
        Case {
            xs: [1, 12, 4, 9, 10],
            co: 10,
            a: t2,
            transposed: true,
            mask: None,
            seed: 3,
        },
        Case {
            xs: [1, 16, 8, 16, 16],
            co: 3,
            a: h1,
            transposed: false,
            mask: None,
            seed: 4,
        },
        Case {
            xs: [1, 16, 4, 24, 24],
            co: 16,
            a: c133(1),
            transposed: false,
            mask: Some(noise(256, 9).iter().map(|&v| v > 0.6).collect()),
            seed: 5,
        },
    ];
    for c in &cases {
        check_case(c);
        let ws = c.ws();
        let x = noise(c.xs.iter().product(), 11);
        let w = noise(ws.iter().product(), 12);
        let dy = noise(c.ys().iter().product(), 13);
        let m = c.mask.as_deref();
        assert_eq!(
            c.forward(&x, &w, None, 1),
            c.forward(&x, &w, None, 2),
            "forward {c:?}"
        );
        assert_eq!(c.data(&dy, &w, m, 1), c.data(&dy, &w, m, 2), "data {c:?}");
        assert_eq!(
            c.weight(&x, &dy, m, 1),
            c.weight(&x, &dy, m, 2),
            "weight {c:?}"
        );
    }
}

#[test]
fn bad_shapes_are_errors() {
    let a = ConvAttrs {
        kernel: [1, 3, 3],
        stride: [1, 1, 1],
        padding: [0, 1, 1],
    };
    let x = vec![0f32; 2 * 4 * 4 * 4];
    let w = vec![0f32; 3 * 2 * 9];
    let mut y = vec![0f32; 3 * 64];
    let xs = [1, 2, 4, 4, 4];
    let ws = [3, 2, 1, 3, 3];
    assert!(k::conv3d(&x, xs, &w, ws, None, &a, None, &mut y, 1).is_ok());
    // Wrong input channels, short weights, short output, bad mask, bad bias, kernel mismatch.
    assert!(k::conv3d(&x, [1, 1, 8, 4, 4], &w, ws, None, &a, None, &mut y, 1).is_err());
    assert!(k::conv3d(&x, xs, &w[1..], ws, None, &a, None, &mut y, 1).is_err());
    assert!(k::conv3d(&x, xs, &w, ws, None, &a, None, &mut y[1..], 1).is_err());
    assert!(k::conv3d(&x, xs, &w, ws, None, &a, Some(&[true; 5]), &mut y, 1).is_err());
    assert!(k::conv3d(&x, xs, &w, ws, Some(&[0.0; 2]), &a, None, &mut y, 1).is_err());
    assert!(k::conv3d(&x, xs, &w, [3, 2, 1, 1, 9], None, &a, None, &mut y, 1).is_err());
    // Zero stride, empty extent, kernel larger than the padded input.
    let s0 = ConvAttrs {
        stride: [1, 0, 1],
        ..a.clone()
    };
    assert!(k::conv3d(&x, xs, &w, ws, None, &s0, None, &mut y, 1).is_err());
    assert!(k::conv3d(&[], [1, 2, 0, 4, 4], &w, ws, None, &a, None, &mut [], 1).is_err());
    let big = ConvAttrs {
        kernel: [3, 3, 3],
        stride: [1, 1, 1],
        padding: [0, 0, 0],
    };
    assert!(k::conv3d_output_shape([1, 2, 2, 4, 4], [3, 2, 3, 3, 3], &big).is_err());
    // Backward data with an input extent that does not produce dy; weight grad with a bad dy.
    let mut dx = vec![0f32; x.len()];
    assert!(k::conv_backward_data(
        &y,
        [1, 3, 4, 4, 4],
        &w,
        ws,
        &a,
        false,
        [4, 4, 5],
        None,
        &mut dx,
        1
    )
    .is_err());
    assert!(k::conv_backward_data(
        &y,
        [1, 3, 4, 4, 4],
        &w,
        ws,
        &a,
        false,
        [4, 4, 4],
        None,
        &mut dx,
        1
    )
    .is_ok());
    let mut dw = vec![0f32; w.len()];
    assert!(
        k::conv_backward_weight(&x, xs, &y, [1, 3, 4, 4, 3], &a, false, None, &mut dw, 1).is_err()
    );
    assert!(
        k::conv_backward_weight(&x, xs, &y, [1, 3, 4, 4, 4], &a, false, None, &mut dw, 1).is_ok()
    );
    // Transposed: padding that leaves no output.
    let tp = ConvAttrs {
        kernel: [2, 2, 2],
        stride: [2, 2, 2],
        padding: [0, 2, 0],
    };
    assert!(k::conv_transpose3d_output_shape([1, 2, 1, 1, 1], [2, 3, 2, 2, 2], &tp).is_err());
}
