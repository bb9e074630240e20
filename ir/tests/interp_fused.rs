//! Tests of the interpreter's `select` and `fused_conv3d`: hand-computed small cases (expected
//! numbers worked out in the comments, never re-derived with the code under test), malformed
//! kernel indices as errors, a graph run through the driver with an i32 weight, and property
//! tests that `fused_conv3d` equals the composition of the separate ops, bit for bit.
//! Tests sit in a `mod interp` so `cargo test interp` selects them.

mod interp {
    use std::collections::BTreeMap;

    use e2enc_ir::interp::{self, ops};
    use e2enc_ir::{
        shift_runs, ConvAttrs, DType, FusedConvAttrs, Graph, IrError, Op, ShiftAttrs, Tensor,
        TensorType, Weights,
    };
    use proptest::prelude::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn ti(shape: &[usize], data: &[i32]) -> Tensor {
        Tensor::from_i32(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn close(got: &Tensor, shape: &[usize], want: &[f32], tol: f32) {
        assert_eq!(got.shape(), shape, "shape");
        let g = got.as_f32().expect("f32 result");
        assert_eq!(g.len(), want.len());
        for (i, (a, b)) in g.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= tol,
                "element {i}: got {a}, want {b} (all: {g:?})"
            );
        }
    }

    fn interp_err(r: Result<Tensor, IrError>, needle: &str) {
        match r {
            Err(IrError::Interp { msg, .. }) => {
                assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}")
            }
            other => panic!("expected an interpreter error, got {other:?}"),
        }
    }

    fn geom(kernel: [usize; 3], stride: [usize; 3], padding: [usize; 3]) -> ConvAttrs {
        ConvAttrs {
            kernel,
            stride,
            padding,
        }
    }

    const K1: [usize; 3] = [1, 1, 1];
    const P0: [usize; 3] = [0, 0, 0];

    // ---- select ---------------------------------------------------------------------------

    #[test]
    fn select_axis_0_rows() {
        // x = [[1,2],[3,4],[5,6]]; rows 0 and 2 -> [[1,2],[5,6]].
        let x = t(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
        let y = ops::select(&x, 0, &[(0, 1), (2, 3)]).unwrap();
        close(&y, &[2, 2], &[1., 2., 5., 6.], 0.0);
    }

    #[test]
    fn select_axis_1_several_ranges_per_sample() {
        // C=5, D=H=1, W=2, channel c = [10c, 10c+1]; channels 0,1 and 3,4 (channel 2 dropped).
        let v: Vec<f32> = (0..5)
            .flat_map(|c| [10. * c as f32, 10. * c as f32 + 1.])
            .collect();
        let x = t(&[1, 5, 1, 1, 2], &v);
        let y = ops::select(&x, 1, &[(0, 2), (3, 5)]).unwrap();
        close(
            &y,
            &[1, 4, 1, 1, 2],
            &[0., 1., 10., 11., 30., 31., 40., 41.],
            0.0,
        );
        // N=2, C=3: channels 1..3 of each sample: [1,2,3 | 4,5,6] -> [2,3 | 5,6].
        let x = t(&[2, 3, 1, 1, 1], &[1., 2., 3., 4., 5., 6.]);
        let y = ops::select(&x, 1, &[(1, 3)]).unwrap();
        close(&y, &[2, 2, 1, 1, 1], &[2., 3., 5., 6.], 0.0);
        // The whole axis is the identity.
        assert_eq!(ops::select(&x, 1, &[(0, 3)]).unwrap(), x);
    }

    #[test]
    fn select_i32_along_the_last_axis() {
        // [[[1,2,3],[4,5,6]]] keeping columns 0 and 2 -> [[[1,3],[4,6]]].
        let x = ti(&[1, 2, 3], &[1, 2, 3, 4, 5, 6]);
        let y = ops::select(&x, 2, &[(0, 1), (2, 3)]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 2]);
        assert_eq!(y.as_i32().unwrap(), &[1, 3, 4, 6]);
        // Through `eval` too.
        let op = Op::SelectChannels {
            axis: 1,
            ranges: vec![(1, 2)],
        };
        let y = ops::eval(&op, &[&x]).unwrap();
        assert_eq!(y.as_i32().unwrap(), &[4, 5, 6]);
    }

    #[test]
    fn select_rejects_bad_ranges() {
        let x = t(&[1, 4, 1, 1, 1], &[1., 2., 3., 4.]);
        interp_err(ops::select(&x, 5, &[(0, 1)]), "axis 5 is out of range");
        interp_err(ops::select(&x, 1, &[]), "at least one range");
        interp_err(ops::select(&x, 1, &[(2, 2)]), "is empty");
        interp_err(ops::select(&x, 1, &[(3, 1)]), "is empty");
        interp_err(ops::select(&x, 1, &[(0, 2), (1, 3)]), "overlaps");
        interp_err(ops::select(&x, 1, &[(2, 3), (0, 1)]), "precedes");
        interp_err(ops::select(&x, 1, &[(3, 5)]), "exceeds axis 1");
        interp_err(
            ops::select(&x, 1, &[(usize::MAX - 1, usize::MAX)]),
            "exceeds",
        );
        interp_err(ops::select(&ti(&[], &[7]), 0, &[(0, 1)]), "out of range");
    }

    // ---- fused_conv3d: hand-computed --------------------------------------------------------

    fn fused(a: &FusedConvAttrs, args: &[&Tensor]) -> Result<Tensor, IrError> {
        let direct = ops::fused_conv3d(args, a);
        let via_eval = ops::eval(&Op::FusedConv3d(a.clone()), args);
        match (&direct, &via_eval) {
            (Ok(d), Ok(e)) => assert_eq!(d, e, "eval dispatches to fused_conv3d"),
            (Err(_), Err(_)) => {}
            _ => panic!("fused_conv3d gave {direct:?}, eval gave {via_eval:?}"),
        }
        direct
    }

    #[test]
    fn fused_shift_by_one_at_the_volume_ends_with_bias() {
        // D=3: ch0 = [1,2,3] shifted -1 -> [2,3,0]; ch1 = [4,5,6] shifted +1 -> [0,4,5].
        // w = [1, 10], bias 0.5: [2 + 0 + .5, 3 + 40 + .5, 0 + 50 + .5] = [2.5, 43.5, 50.5].
        let x = t(&[1, 2, 3, 1, 1], &[1., 2., 3., 4., 5., 6.]);
        let w = t(&[1, 2, 1, 1, 1], &[1., 10.]);
        let b = t(&[1], &[0.5]);
        let a = FusedConvAttrs {
            shifts: vec![(-1, 1), (1, 1)],
            ..FusedConvAttrs::plain(geom(K1, K1, P0), false, true)
        };
        let y = fused(&a, &[&x, &w, &b]).unwrap();
        close(&y, &[1, 1, 3, 1, 1], &[2.5, 43.5, 50.5], 0.0);
    }

    #[test]
    fn fused_shift_by_two_and_beyond_the_volume() {
        // D=3: ch0 shifted +2 -> [0,0,1]; ch1 = [4,5,6] shifted -2 -> [6,0,0];
        // w = [1, 10]: [60, 0, 1]. Shifts of ±3 or more leave nothing: all zero.
        let x = t(&[1, 2, 3, 1, 1], &[1., 2., 3., 4., 5., 6.]);
        let w = t(&[1, 2, 1, 1, 1], &[1., 10.]);
        let plain = FusedConvAttrs::plain(geom(K1, K1, P0), false, false);
        let a = FusedConvAttrs {
            shifts: vec![(2, 1), (-2, 1)],
            ..plain.clone()
        };
        close(
            &fused(&a, &[&x, &w]).unwrap(),
            &[1, 1, 3, 1, 1],
            &[60., 0., 1.],
            0.0,
        );
        let a = FusedConvAttrs {
            shifts: vec![(3, 1), (i64::MIN, 1)],
            ..plain.clone()
        };
        close(
            &fused(&a, &[&x, &w]).unwrap(),
            &[1, 1, 3, 1, 1],
            &[0., 0., 0.],
            0.0,
        );
        let a = FusedConvAttrs {
            shifts: vec![(i64::MAX, 2)],
            ..plain
        };
        close(
            &fused(&a, &[&x, &w]).unwrap(),
            &[1, 1, 3, 1, 1],
            &[0., 0., 0.],
            0.0,
        );
    }

    #[test]
    fn fused_shift_comes_before_the_depth_padding() {
        // x = [1,2,3] shifted +1 -> [0,1,2]; depth kernel [1,10,100], padding 1:
        // out[0] = 1*0 (pad) + 10*0 + 100*1 = 100; out[1] = 1*0 + 10*1 + 100*2 = 210;
        // out[2] = 1*1 + 10*2 + 100*0 (pad) = 21. (Unshifted it would start with 210.)
        let x = t(&[1, 1, 3, 1, 1], &[1., 2., 3.]);
        let w = t(&[1, 1, 3, 1, 1], &[1., 10., 100.]);
        let a = FusedConvAttrs {
            shifts: vec![(1, 1)],
            ..FusedConvAttrs::plain(geom([3, 1, 1], K1, [1, 0, 0]), false, false)
        };
        let y = fused(&a, &[&x, &w]).unwrap();
        close(&y, &[1, 1, 3, 1, 1], &[100., 210., 21.], 0.0);
    }

    #[test]
    fn fused_shift_norm_and_leaky_relu() {
        // x = [7,-1,0,1] shifted -1 -> [-1,0,1,0]; w = 1: mean 0, biased var 2/4 = 0.5,
        // x̂ = [-√2, 0, √2, 0] (eps 1e-5 moves it by ~1e-5); gamma 2, beta 1:
        // [1 - 2.828427, 1, 3.828427, 1]; leaky 0.1: [-0.1828427, 1, 3.828427, 1].
        let x = t(&[1, 1, 4, 1, 1], &[7., -1., 0., 1.]);
        let w = t(&[1, 1, 1, 1, 1], &[1.]);
        let (g, b) = (t(&[1], &[2.]), t(&[1], &[1.]));
        let a = FusedConvAttrs {
            shifts: vec![(-1, 1)],
            norm_eps: Some(1e-5),
            slope: Some(0.1),
            ..FusedConvAttrs::plain(geom(K1, K1, P0), false, false)
        };
        let y = fused(&a, &[&x, &w, &g, &b]).unwrap();
        close(&y, &[1, 1, 4, 1, 1], &[-0.1828427, 1., 3.828427, 1.], 1e-4);
    }

    /// x: C=2 along W = 2: ch0 = [1,2], ch1 = [10,20].
    fn two_channels() -> Tensor {
        t(&[1, 2, 1, 1, 2], &[1., 2., 10., 20.])
    }

    fn sparse(cout: usize, transposed: bool, bias: bool, c: ConvAttrs) -> FusedConvAttrs {
        FusedConvAttrs {
            sparse_out: Some(cout),
            ..FusedConvAttrs::plain(c, transposed, bias)
        }
    }

    #[test]
    fn fused_sparse_conv_scatters_out_in_rows() {
        // O=3, I=2, 1x1x1: packed [2, -3] at (out 2, in 0) and (out 0, in 1):
        // out0 = -3*ch1 = [-30,-60]; out1 = 0; out2 = 2*ch0 = [2,4]; bias [1,2,3]:
        // [-29,-59 | 2,2 | 5,7].
        let packed = t(&[2, 1, 1, 1], &[2., -3.]);
        let kidx = ti(&[2, 2], &[2, 0, 0, 1]);
        let b = t(&[3], &[1., 2., 3.]);
        let a = sparse(3, false, true, geom(K1, K1, P0));
        let y = fused(&a, &[&two_channels(), &packed, &kidx, &b]).unwrap();
        close(&y, &[1, 3, 1, 1, 2], &[-29., -59., 2., 2., 5., 7.], 0.0);
        // No live kernel at all: just the bias.
        let none = fused(
            &a,
            &[
                &two_channels(),
                &t(&[0, 1, 1, 1], &[]),
                &ti(&[0, 2], &[]),
                &b,
            ],
        )
        .unwrap();
        close(&none, &[1, 3, 1, 1, 2], &[1., 1., 2., 2., 3., 3.], 0.0);
    }

    #[test]
    fn fused_sparse_transposed_conv_uses_the_in_out_layout() {
        // I=2 (x: ch0 = [1], ch1 = [10]), O=3, kernel [1,1,2], stride [1,1,2]: output W = 2.
        // Kernel [5,7] at (out 2, in 0): out2 = 1 * [5,7]; out0 = out1 = 0.
        let x = t(&[1, 2, 1, 1, 1], &[1., 10.]);
        let packed = t(&[1, 1, 1, 2], &[5., 7.]);
        let a = sparse(3, true, false, geom([1, 1, 2], [1, 1, 2], P0));
        let y = fused(&a, &[&x, &packed, &ti(&[1, 2], &[2, 0])]).unwrap();
        close(&y, &[1, 3, 1, 1, 2], &[0., 0., 0., 0., 5., 7.], 0.0);
        // (out 1, in 1): out1 = 10 * [5,7].
        let y = fused(&a, &[&x, &packed, &ti(&[1, 2], &[1, 1])]).unwrap();
        close(&y, &[1, 3, 1, 1, 2], &[0., 0., 50., 70., 0., 0.], 0.0);
        // (out 2, in 1) would be out of range with the roles swapped; here it is fine.
        let y = fused(&a, &[&x, &packed, &ti(&[1, 2], &[2, 1])]).unwrap();
        close(&y, &[1, 3, 1, 1, 2], &[0., 0., 0., 0., 50., 70.], 0.0);
    }

    #[test]
    fn fused_bad_kernel_indices_are_errors() {
        let x = two_channels();
        let a = sparse(3, false, false, geom(K1, K1, P0));
        let packed = t(&[2, 1, 1, 1], &[1., 1.]);
        let bad = |rows: &[i32], needle: &str| {
            let kidx = ti(&[rows.len() / 2, 2], rows);
            interp_err(fused(&a, &[&x, &packed, &kidx]), needle);
        };
        bad(
            &[0, 0, 3, 0],
            "row 1 is (3, 0), outside 3 output x 2 input channels",
        );
        bad(&[0, 2, 1, 1], "row 0 is (0, 2), outside");
        bad(&[-1, 0, 1, 1], "row 0 is (-1, 0), outside");
        bad(&[0, -1, 1, 1], "outside");
        bad(&[i32::MAX, 0, 1, 1], "outside");
        bad(&[0, i32::MIN, 1, 1], "outside");
        bad(&[1, 1, 1, 1], "rows 0 and 1 both name (out 1, in 1)");
        // The same pair in the transposed direction.
        let t_attrs = sparse(3, true, false, geom(K1, K1, P0));
        interp_err(
            fused(&t_attrs, &[&x, &packed, &ti(&[2, 2], &[2, 1, 2, 1])]),
            "both name (out 2, in 1)",
        );
        interp_err(
            fused(&t_attrs, &[&x, &packed, &ti(&[2, 2], &[0, 0, 0, 2])]),
            "outside",
        );
        // Type faults come from shape inference.
        interp_err(
            fused(&a, &[&x, &packed, &t(&[2, 2], &[0., 0., 1., 1.])]),
            "kernel index",
        );
        interp_err(
            fused(&a, &[&x, &packed, &ti(&[3, 2], &[0; 6])]),
            "kernel index",
        );
        interp_err(fused(&a, &[&x, &packed]), "operand");
        let dense = FusedConvAttrs::plain(geom(K1, K1, P0), false, false);
        interp_err(fused(&dense, &[&x, &packed]), "weight");
        let shifted = FusedConvAttrs {
            shifts: vec![(0, 1)],
            ..dense
        };
        let w = t(&[1, 2, 1, 1, 1], &[1., 1.]);
        interp_err(fused(&shifted, &[&x, &w]), "shift runs");
        // A huge sparse_out is refused before any allocation.
        let huge = sparse(usize::MAX / 2, false, false, geom(K1, K1, P0));
        let r = fused(&huge, &[&x, &packed, &ti(&[2, 2], &[0, 0, 1, 1])]);
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn fused_graph_runs_through_the_driver_with_an_i32_weight() {
        let mut g = Graph::new("sparse");
        let x = g.input("x", TensorType::f32([1, 2, 1, 1, 2]));
        let a = sparse(3, false, true, geom(K1, K1, P0));
        let p = g.weight("c.packed", TensorType::f32([2, 1, 1, 1]));
        let k = g.weight("c.kidx", TensorType::new(DType::I32, [2, 2]));
        let b = g.weight("c.bias", TensorType::f32([3]));
        let y = g.add(Op::FusedConv3d(a), &[x, p, k, b], None).unwrap();
        let sel = Op::SelectChannels {
            axis: 1,
            ranges: vec![(0, 1), (2, 3)],
        };
        let s = g.add(sel, &[y], None).unwrap();
        g.set_output("y", s);
        let mut w = Weights::new();
        w.insert("c.packed", t(&[2, 1, 1, 1], &[2., -3.]));
        w.insert("c.kidx", ti(&[2, 2], &[2, 0, 0, 1]));
        w.insert("c.bias", t(&[3], &[1., 2., 3.]));
        e2enc_ir::verify::verify_with_weights(&g, &w).unwrap();
        let feed: BTreeMap<String, Tensor> = [("x".to_string(), two_channels())].into();
        let out = interp::run(&g, &w, &feed, &[]).unwrap();
        // Channels 0 and 2 of [-29,-59 | 2,2 | 5,7].
        close(&out["y"], &[1, 2, 1, 1, 2], &[-29., -59., 5., 7.], 0.0);
        // A duplicate index in the store is an error at the node, not a panic.
        w.insert("c.kidx", ti(&[2, 2], &[0, 1, 0, 1]));
        let e = interp::run(&g, &w, &feed, &[]).unwrap_err().to_string();
        assert!(e.contains("fused_conv3d") && e.contains("both name"), "{e}");
    }

    // ---- fused_conv3d == the composition of the separate ops -------------------------------

    fn noise(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    /// A random dense weight (`[d0, d1, k..]`) with each kernel zeroed with probability
    /// `1 - live`, and its live kernels packed in a random order with their `(out, in)` rows.
    fn sparse_weight(
        rng: &mut ChaCha8Rng,
        (d0, d1): (usize, usize),
        k: [usize; 3],
        live: f64,
        transposed: bool,
    ) -> (Tensor, Tensor, Tensor) {
        let kvol = k.iter().product::<usize>();
        let mut dense = noise(rng, &[d0, d1, k[0], k[1], k[2]]);
        let data = dense.as_f32_mut().unwrap();
        let mut kept = Vec::new();
        for a in 0..d0 {
            for b in 0..d1 {
                let at = (a * d1 + b) * kvol;
                if rng.random_bool(live) {
                    // Layout [O, I] for conv, [I, O] when transposed; rows are (out, in).
                    let (o, i) = if transposed { (b, a) } else { (a, b) };
                    kept.push((o, i, data[at..at + kvol].to_vec()));
                } else {
                    data[at..at + kvol].fill(0.0);
                }
            }
        }
        kept.shuffle(rng);
        let n = kept.len();
        let packed: Vec<f32> = kept.iter().flat_map(|(_, _, v)| v.clone()).collect();
        let rows: Vec<i32> = kept
            .iter()
            .flat_map(|&(o, i, _)| [o as i32, i as i32])
            .collect();
        let packed = Tensor::from_f32(vec![n, k[0], k[1], k[2]], packed).unwrap();
        let kidx = Tensor::from_i32(vec![n, 2], rows).unwrap();
        (dense, packed, kidx)
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Everything one random case needs.
    #[derive(Debug, Clone)]
    struct Case {
        x: [usize; 5],
        cout: usize,
        conv: ConvAttrs,
        transposed: bool,
        groups: Option<usize>,
        sparse: bool,
        live: f64,
        bias: bool,
        norm: bool,
        slope: Option<f32>,
        seed: u64,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            (
                1usize..3,
                1usize..5,
                1usize..6,
                1usize..5,
                1usize..5,
                1usize..5,
            ),
            (
                prop::array::uniform3(1usize..4),
                prop::array::uniform3(1usize..3),
                prop::array::uniform3(0usize..2),
            ),
            (
                any::<bool>(),
                prop::option::of(1usize..8),
                any::<bool>(),
                0.0f64..=1.0,
            ),
            (
                any::<bool>(),
                any::<bool>(),
                prop::option::of(-1.0f32..1.0),
                any::<u64>(),
            ),
        )
            .prop_map(
                |(
                    (n, c, d, h, w, cout),
                    (kernel, stride, padding),
                    (tr, groups, sp, live),
                    (bias, norm, slope, seed),
                )| Case {
                    x: [n, c, d, h, w],
                    cout,
                    conv: ConvAttrs {
                        kernel,
                        stride,
                        padding,
                    },
                    transposed: tr,
                    groups: if tr { None } else { groups },
                    sparse: sp,
                    live,
                    bias,
                    norm,
                    slope,
                    seed,
                },
            )
    }

    /// The fused result and the reference (separate ops through `eval`), or `None` when the
    /// random geometry is not a valid convolution.
    fn both(c: &Case) -> Option<(Tensor, Tensor)> {
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
        let cin = c.x[1];
        let x = noise(&mut rng, &c.x);
        let dims = if c.transposed {
            (cin, c.cout)
        } else {
            (c.cout, cin)
        };
        let (dense, packed, kidx) =
            sparse_weight(&mut rng, dims, c.conv.kernel, c.live, c.transposed);
        let b = noise(&mut rng, &[c.cout]);
        let gamma = noise(&mut rng, &[c.cout]);
        let beta = noise(&mut rng, &[c.cout]);

        // Reference: DepthShift → Conv3d / ConvTranspose3d (+ bias) → InstanceNorm → LeakyRelu.
        let mut y = x.clone();
        if let Some(groups) = c.groups {
            y = ops::eval(&Op::DepthShift(ShiftAttrs { groups }), &[&y]).unwrap();
        }
        let conv_op = if c.transposed {
            Op::ConvTranspose3d(c.conv.clone())
        } else {
            Op::Conv3d(c.conv.clone())
        };
        let mut args = vec![&y, &dense];
        if c.bias {
            args.push(&b);
        }
        let mut want = ops::eval(&conv_op, &args).ok()?;
        if c.norm {
            want = ops::eval(&Op::InstanceNorm { eps: 1e-5 }, &[&want, &gamma, &beta]).unwrap();
        }
        if let Some(slope) = c.slope {
            want = ops::eval(&Op::LeakyRelu { slope }, &[&want]).unwrap();
        }

        let a = FusedConvAttrs {
            conv: c.conv.clone(),
            transposed: c.transposed,
            shifts: c.groups.map_or_else(Vec::new, |g| shift_runs(g, cin)),
            sparse_out: c.sparse.then_some(c.cout),
            bias: c.bias,
            norm_eps: c.norm.then_some(1e-5),
            slope: c.slope,
        };
        let mut args = vec![&x];
        if c.sparse {
            args.extend([&packed, &kidx]);
        } else {
            args.push(&dense);
        }
        if c.bias {
            args.push(&b);
        }
        if c.norm {
            args.extend([&gamma, &beta]);
        }
        assert_eq!(args.len(), a.num_operands());
        let got = ops::eval(&Op::FusedConv3d(a), &args).unwrap();
        Some((got, want))
    }

    /// The per-channel shift written out naively, for runs `DepthShift` cannot express.
    fn naive_shift(x: &Tensor, per_channel: &[i64]) -> Tensor {
        let s = x.shape();
        let (c, d, plane) = (s[1], s[2], s[3] * s[4]);
        let xs = x.as_f32().unwrap();
        let mut out = vec![0f32; xs.len()];
        for (i, o) in out.iter_mut().enumerate() {
            let (n, ci, di, r) = (
                i / (c * d * plane),
                i / (d * plane) % c,
                i / plane % d,
                i % plane,
            );
            let src = di as i64 - per_channel[ci];
            if (0..d as i64).contains(&src) {
                *o = xs[((n * c + ci) * d + src as usize) * plane + r];
            }
        }
        Tensor::from_f32(s.to_vec(), out).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(192))]

        #[test]
        fn fused_conv3d_equals_the_composition(c in case()) {
            let r = both(&c);
            prop_assume!(r.is_some());
            let (got, want) = r.unwrap();
            prop_assert_eq!(got.shape(), want.shape());
            prop_assert_eq!(bits(&got), bits(&want), "{:?}", c);
        }

        #[test]
        fn fused_conv3d_arbitrary_shift_runs(
            x in (1usize..3, 1usize..6, 1usize..6, 1usize..4, 1usize..4),
            cout in 1usize..4,
            runs in prop::collection::vec((-6i64..7, 1usize..3), 1..6),
            seed in any::<u64>(),
        ) {
            // Cut the runs to cover exactly C channels.
            let cin = x.1;
            let mut shifts = Vec::new();
            let mut left = cin;
            for (s, n) in runs.iter().cycle().take(cin) {
                if left == 0 {
                    break;
                }
                let n = (*n).min(left);
                shifts.push((*s, n));
                left -= n;
            }
            let per_channel: Vec<i64> =
                shifts.iter().flat_map(|&(s, n)| std::iter::repeat_n(s, n)).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let xt = noise(&mut rng, &[x.0, cin, x.2, x.3, x.4]);
            let w = noise(&mut rng, &[cout, cin, 3, 1, 3]);
            let c = geom([3, 1, 3], K1, [1, 0, 1]);
            let want = ops::conv3d(&naive_shift(&xt, &per_channel), &w, None, &c).unwrap();
            let a = FusedConvAttrs { shifts, ..FusedConvAttrs::plain(c, false, false) };
            let got = ops::fused_conv3d(&[&xt, &w], &a).unwrap();
            prop_assert_eq!(bits(&got), bits(&want));
        }

        #[test]
        fn fused_conv3d_random_indices_never_panic(
            rows in prop::collection::vec((-2i32..5, -2i32..4), 0..8),
            transposed in any::<bool>(),
        ) {
            // cin 2, cout 3: whatever the rows, a result or an error, never a panic; a result
            // exactly when every row is in range and no pair repeats.
            let x = two_channels();
            let n = rows.len();
            let packed = t(&[n, 1, 1, 1], &vec![1.0; n]);
            let flat: Vec<i32> = rows.iter().flat_map(|&(o, i)| [o, i]).collect();
            let kidx = ti(&[n, 2], &flat);
            let a = sparse(3, transposed, false, geom(K1, K1, P0));
            let r = ops::fused_conv3d(&[&x, &packed, &kidx], &a);
            let mut seen = std::collections::HashSet::new();
            let valid = rows
                .iter()
                .all(|&(o, i)| (0..3).contains(&o) && (0..2).contains(&i) && seen.insert((o, i)));
            prop_assert_eq!(r.is_ok(), valid, "{:?}", r);
        }
    }

    #[test]
    fn composition_cases_are_mostly_valid() {
        // Guard against the property test silently rejecting everything.
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let mut valid = [0usize; 4];
        for _ in 0..200 {
            let c = case().new_tree(&mut runner).unwrap().current();
            if both(&c).is_some() {
                valid[0] += 1;
                valid[1] += usize::from(c.sparse);
                valid[2] += usize::from(c.transposed);
                valid[3] += usize::from(c.groups.is_some());
            }
        }
        assert!(
            valid[0] > 100 && valid[1..].iter().all(|&n| n > 20),
            "{valid:?}"
        );
    }
}
