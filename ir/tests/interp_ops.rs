//! Hand-computed checks of every kernel of the reference interpreter (`interp::ops`).
//!
//! Expected numbers are written out by hand in the comments next to them, never re-derived with
//! the formula under test. Tests sit in a `mod interp` so `cargo test interp` selects them.

mod interp {
    use e2enc_ir::interp::ops;
    use e2enc_ir::{ConvAttrs, IrError, PoolAttrs, ShiftAttrs, Tensor};

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
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

    fn conv(kernel: [usize; 3], stride: [usize; 3], padding: [usize; 3]) -> ConvAttrs {
        ConvAttrs {
            kernel,
            stride,
            padding,
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

    // ---- conv3d ---------------------------------------------------------------------------

    #[test]
    fn conv3d_1x3x3_padding_and_bias() {
        // x = [[1,2],[3,4]], w = [[1,2,3],[4,5,6],[7,8,9]], padding (0,1,1), bias 0.5.
        // out[0,0] = 5*1 + 6*2 + 8*3 + 9*4 = 77     out[0,1] = 4*1 + 5*2 + 7*3 + 8*4 = 67
        // out[1,0] = 2*1 + 3*2 + 5*3 + 6*4 = 47     out[1,1] = 1*1 + 2*2 + 4*3 + 5*4 = 37
        let x = t(&[1, 1, 1, 2, 2], &[1., 2., 3., 4.]);
        let w = t(&[1, 1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        let b = t(&[1], &[0.5]);
        let y = ops::conv3d(&x, &w, Some(&b), &conv([1, 3, 3], [1, 1, 1], [0, 1, 1])).unwrap();
        close(&y, &[1, 1, 1, 2, 2], &[77.5, 67.5, 47.5, 37.5], 0.0);
    }

    #[test]
    fn conv3d_channels_batch_and_bias() {
        // 1x1x1 kernel, w[o][i] = [[1, 2], [3, -1]], bias [0, 1].
        // n0: c0 = [1,2,3], c1 = [10,20,30] -> o0 = c0 + 2 c1 = [21,42,63]; o1 = 3 c0 - c1 + 1 = [-6,-13,-20]
        // n1: c0 = [1,0,0], c1 = [0,1,0]    -> o0 = [1,2,0];                 o1 = [4,0,1]
        let x = t(
            &[2, 2, 1, 1, 3],
            &[1., 2., 3., 10., 20., 30., 1., 0., 0., 0., 1., 0.],
        );
        let w = t(&[2, 2, 1, 1, 1], &[1., 2., 3., -1.]);
        let b = t(&[2], &[0., 1.]);
        let y = ops::conv3d(&x, &w, Some(&b), &conv([1, 1, 1], [1, 1, 1], [0, 0, 0])).unwrap();
        close(
            &y,
            &[2, 2, 1, 1, 3],
            &[21., 42., 63., -6., -13., -20., 1., 2., 0., 4., 0., 1.],
            0.0,
        );
    }

    #[test]
    fn conv3d_stride_2_with_padding() {
        // x = [1,2,3,4,5] along W, w = [1,10,100], stride 2, padding 1: out extent (5+2-3)/2+1 = 3.
        // out[0] = taps -1,0,1  -> 10*1 + 100*2         = 210
        // out[1] = taps 1,2,3   -> 1*2 + 10*3 + 100*4   = 432
        // out[2] = taps 3,4,5   -> 1*4 + 10*5           = 54
        let x = t(&[1, 1, 1, 1, 5], &[1., 2., 3., 4., 5.]);
        let w = t(&[1, 1, 1, 1, 3], &[1., 10., 100.]);
        let y = ops::conv3d(&x, &w, None, &conv([1, 1, 3], [1, 1, 2], [0, 0, 1])).unwrap();
        close(&y, &[1, 1, 1, 1, 3], &[210., 432., 54.], 0.0);
    }

    #[test]
    fn conv3d_stride_2_on_every_axis() {
        // E2ENet's down-sampling: 1x3x3 kernel, stride 2 on all axes, padding (0,1,1).
        // x: D=2, H=2, W=2 with x[d][h][w] = 1 + 4d + 2h + w (values 1..8); all-ones weights.
        // Output extent: D (2-1)/2+1 = 1, H (2+2-3)/2+1 = 1, W 1. Only depth 0 is read, and the
        // 3x3 window at (0,0) covers rows/cols -1..1, i.e. the whole 2x2 slice: 1+2+3+4 = 10.
        let x = t(&[1, 1, 2, 2, 2], &[1., 2., 3., 4., 5., 6., 7., 8.]);
        let w = t(&[1, 1, 1, 3, 3], &[1.; 9]);
        let y = ops::conv3d(&x, &w, None, &conv([1, 3, 3], [2, 2, 2], [0, 1, 1])).unwrap();
        close(&y, &[1, 1, 1, 1, 1], &[10.], 0.0);
    }

    #[test]
    fn conv3d_depth_kernel_with_padding() {
        // Along D: x = [1,2,3], w = [1,10,100], padding 1.
        // out[0] = 10*1 + 100*2 = 210; out[1] = 1 + 20 + 300 = 321; out[2] = 2 + 30 = 32.
        let x = t(&[1, 1, 3, 1, 1], &[1., 2., 3.]);
        let w = t(&[1, 1, 3, 1, 1], &[1., 10., 100.]);
        let y = ops::conv3d(&x, &w, None, &conv([3, 1, 1], [1, 1, 1], [1, 0, 0])).unwrap();
        close(&y, &[1, 1, 3, 1, 1], &[210., 321., 32.], 0.0);
    }

    #[test]
    fn conv3d_rejects_channel_mismatch() {
        let x = t(&[1, 2, 1, 1, 1], &[1., 2.]);
        let w = t(&[1, 3, 1, 1, 1], &[1., 1., 1.]);
        interp_err(
            ops::conv3d(&x, &w, None, &conv([1, 1, 1], [1, 1, 1], [0, 0, 0])),
            "input channels",
        );
        // A weight that does not match the kernel attribute.
        let w = t(&[1, 2, 1, 1, 1], &[1., 1.]);
        interp_err(
            ops::conv3d(&x, &w, None, &conv([1, 3, 3], [1, 1, 1], [0, 1, 1])),
            "kernel",
        );
    }

    // ---- conv_transpose3d -----------------------------------------------------------------

    #[test]
    fn conv_transpose3d_stride2_kernel2_upsampling() {
        // x along H = [1, 2] (D = W = 1); w[a][b][c] = 1..8 (index 4a + 2b + c); kernel = stride = 2.
        // out[a, 2y+b, c] = x[y] * w[a,b,c]; output [1,1,2,4,2]:
        //   a=0: h0 [1,2]  h1 [3,4]  h2 2*[1,2]=[2,4]    h3 2*[3,4]=[6,8]
        //   a=1: h0 [5,6]  h1 [7,8]  h2 2*[5,6]=[10,12]  h3 2*[7,8]=[14,16]
        let x = t(&[1, 1, 1, 2, 1], &[1., 2.]);
        let w = t(&[1, 1, 2, 2, 2], &[1., 2., 3., 4., 5., 6., 7., 8.]);
        let y =
            ops::conv_transpose3d(&x, &w, None, &conv([2, 2, 2], [2, 2, 2], [0, 0, 0])).unwrap();
        close(
            &y,
            &[1, 1, 2, 4, 2],
            &[
                1., 2., 3., 4., 2., 4., 6., 8., 5., 6., 7., 8., 10., 12., 14., 16.,
            ],
            0.0,
        );
    }

    #[test]
    fn conv_transpose3d_weight_layout_is_in_out() {
        // w is [I, O, ...]: w[0,0] = [1,2], w[0,1] = [3,4], w[1,0] = [10,20], w[1,1] = [30,40];
        // x: c0 = 1, c1 = 2; kernel = stride = 2 along W; bias [0, -1].
        // o0 = 1*[1,2] + 2*[10,20] = [21,42];  o1 = 1*[3,4] + 2*[30,40] - 1 = [62,83]
        let x = t(&[1, 2, 1, 1, 1], &[1., 2.]);
        let w = t(&[2, 2, 1, 1, 2], &[1., 2., 3., 4., 10., 20., 30., 40.]);
        let b = t(&[2], &[0., -1.]);
        let y = ops::conv_transpose3d(&x, &w, Some(&b), &conv([1, 1, 2], [1, 1, 2], [0, 0, 0]))
            .unwrap();
        close(&y, &[1, 2, 1, 1, 2], &[21., 42., 62., 83.], 0.0);
    }

    #[test]
    fn conv_transpose3d_stride1_kernel3_padding1() {
        // x = [1,2,3], w = [1,10,100]; full (unpadded) output j = x + c:
        //   j0: 1   j1: 10 + 2 = 12   j2: 100 + 20 + 3 = 123   j3: 200 + 30 = 230   j4: 300
        // padding 1 crops one on each side: extent (3-1) - 2 + 3 = 3 -> [12, 123, 230].
        let x = t(&[1, 1, 1, 1, 3], &[1., 2., 3.]);
        let w = t(&[1, 1, 1, 1, 3], &[1., 10., 100.]);
        let y =
            ops::conv_transpose3d(&x, &w, None, &conv([1, 1, 3], [1, 1, 1], [0, 0, 1])).unwrap();
        close(&y, &[1, 1, 1, 1, 3], &[12., 123., 230.], 0.0);
    }

    #[test]
    fn conv_transpose3d_stride2_kernel3_overlap() {
        // x = [1,2,3], w = [1,10,100], stride 2: full j = 2x + c (7 positions):
        //   [1, 10, 100+2, 20, 200+3, 30, 300] = [1,10,102,20,203,30,300]
        // padding 1: extent (3-1)*2 - 2 + 3 = 5 -> [10, 102, 20, 203, 30].
        let x = t(&[1, 1, 1, 1, 3], &[1., 2., 3.]);
        let w = t(&[1, 1, 1, 1, 3], &[1., 10., 100.]);
        let y =
            ops::conv_transpose3d(&x, &w, None, &conv([1, 1, 3], [1, 1, 2], [0, 0, 1])).unwrap();
        close(&y, &[1, 1, 1, 1, 5], &[10., 102., 20., 203., 30.], 0.0);
    }

    // ---- depth_shift ----------------------------------------------------------------------

    /// C channels, depth D, H = W = 1, channel c holding [10c+1, 10c+2, ...].
    fn ramp(c: usize, d: usize) -> Tensor {
        let v: Vec<f32> = (0..c)
            .flat_map(|ci| (0..d).map(move |di| (10 * ci + di + 1) as f32))
            .collect();
        t(&[1, c, d, 1, 1], &v)
    }

    fn shift(x: &Tensor, groups: usize) -> Tensor {
        ops::depth_shift(x, &ShiftAttrs { groups }).unwrap()
    }

    #[test]
    fn depth_shift_single_channel_gets_minus_two() {
        // C=1, G=5: one block, shift -2: out[d] = in[d+2], the last two slices zero.
        close(
            &shift(&ramp(1, 4), 5),
            &[1, 1, 4, 1, 1],
            &[3., 4., 0., 0.],
            0.0,
        );
        close(&shift(&ramp(1, 3), 5), &[1, 1, 3, 1, 1], &[3., 0., 0.], 0.0);
    }

    #[test]
    fn depth_shift_five_groups_at_volume_ends() {
        // C=5, G=5, D=3: shifts -2,-1,0,+1,+2, one channel each.
        let want = [
            3., 0., 0., // s=-2: in[d+2]
            12., 13., 0., // s=-1
            21., 22., 23., // s=0
            0., 31., 32., // s=+1: in[d-1]
            0., 0., 41., // s=+2
        ];
        close(&shift(&ramp(5, 3), 5), &[1, 5, 3, 1, 1], &want, 0.0);
        // D=2: shifts of ±2 fall entirely outside the volume.
        let want = [0., 0., 12., 0., 21., 22., 0., 31., 0., 0.];
        close(&shift(&ramp(5, 2), 5), &[1, 5, 2, 1, 1], &want, 0.0);
    }

    #[test]
    fn depth_shift_fewer_channels_than_groups() {
        // C=4, G=5: blocks of ceil(4/5) = 1 -> four blocks with shifts -2,-1,0,+1 (+2 unused).
        let want = [3., 0., 0., 12., 13., 0., 21., 22., 23., 0., 31., 32.];
        close(&shift(&ramp(4, 3), 5), &[1, 4, 3, 1, 1], &want, 0.0);
    }

    #[test]
    fn depth_shift_uneven_last_block() {
        // C=7, G=3: blocks of ceil(7/3) = 3 -> 3,3,1 with shifts -1, 0, +1.
        let want = [
            2., 3., 0., 12., 13., 0., 22., 23., 0., // shift -1
            31., 32., 33., 41., 42., 43., 51., 52., 53., // shift 0
            0., 61., 62., // shift +1
        ];
        close(&shift(&ramp(7, 3), 3), &[1, 7, 3, 1, 1], &want, 0.0);
    }

    #[test]
    fn depth_shift_three_versus_five_groups() {
        // C=6, G=3: blocks 2,2,2 with shifts -1,0,+1.
        let want3 = [
            2., 3., 0., 12., 13., 0., // -1
            21., 22., 23., 31., 32., 33., // 0
            0., 41., 42., 0., 51., 52., // +1
        ];
        close(&shift(&ramp(6, 3), 3), &[1, 6, 3, 1, 1], &want3, 0.0);
        // C=6, G=5: blocks of ceil(6/5) = 2 -> only three blocks, shifts -2,-1,0.
        let want5 = [
            3., 0., 0., 13., 0., 0., // -2
            22., 23., 0., 32., 33., 0., // -1
            41., 42., 43., 51., 52., 53., // 0
        ];
        close(&shift(&ramp(6, 3), 5), &[1, 6, 3, 1, 1], &want5, 0.0);
    }

    #[test]
    fn depth_shift_48_channels_blocks_10_10_10_10_8() {
        // x[c, d] = d + 1 with D = 5, so out[c, 2] = in[c, 2 - s] = 3 - s tells each shift.
        let x: Vec<f32> = (0..48).flat_map(|_| [1., 2., 3., 4., 5.]).collect();
        let y = shift(&t(&[1, 48, 5, 1, 1], &x), 5);
        let y = y.as_f32().unwrap();
        let blocks: [(std::ops::Range<usize>, f32); 5] = [
            (0..10, 5.),  // s = -2
            (10..20, 4.), // s = -1
            (20..30, 3.), // s = 0
            (30..40, 2.), // s = +1
            (40..48, 1.), // s = +2
        ];
        for (range, want) in blocks {
            for c in range {
                assert_eq!(y[c * 5 + 2], want, "channel {c}");
            }
        }
    }

    #[test]
    fn depth_shift_moves_whole_slices_per_sample() {
        // N=2, C=1, D=3, H=1, W=2, G=3: shift -1 for the single block: out[d] = in[d+1].
        let x = t(
            &[2, 1, 3, 1, 2],
            &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.],
        );
        let want = [3., 4., 5., 6., 0., 0., 9., 10., 11., 12., 0., 0.];
        close(&shift(&x, 3), &[2, 1, 3, 1, 2], &want, 0.0);
    }

    // ---- instance_norm --------------------------------------------------------------------

    #[test]
    fn instance_norm_affine_per_sample_and_channel() {
        // eps = 2.75; gamma = [2, 0.5], beta = [1, -3]. Shape [2, 2, 1, 2, 2].
        // n0 c0 [1,2,3,4]: mean 2.5, var 1.25, sqrt(1.25+2.75) = 2 -> x̂ = [-.75,-.25,.25,.75]
        //        -> 2 x̂ + 1 = [-0.5, 0.5, 1.5, 2.5]
        // n0 c1 [5,5,5,5]: var 0 -> x̂ = 0 -> beta = -3
        // n1 c0 [7.5,12.5,12.5,7.5]: mean 10, var 6.25, sqrt(9) = 3 -> x̂ = ±2.5/3
        //        -> 1 ∓ 5/3 = [-2/3, 8/3, 8/3, -2/3]
        // n1 c1 [1,2,3,4]: x̂ as n0 c0 -> 0.5 x̂ - 3 = [-3.375, -3.125, -2.875, -2.625]
        let x = t(
            &[2, 2, 1, 2, 2],
            &[
                1., 2., 3., 4., 5., 5., 5., 5., 7.5, 12.5, 12.5, 7.5, 1., 2., 3., 4.,
            ],
        );
        let g = t(&[2], &[2., 0.5]);
        let b = t(&[2], &[1., -3.]);
        let y = ops::instance_norm(&x, &g, &b, 2.75).unwrap();
        let want = [
            -0.5,
            0.5,
            1.5,
            2.5,
            -3.,
            -3.,
            -3.,
            -3.,
            -2. / 3.,
            8. / 3.,
            8. / 3.,
            -2. / 3.,
            -3.375,
            -3.125,
            -2.875,
            -2.625,
        ];
        close(&y, &[2, 2, 1, 2, 2], &want, 1e-6);
    }

    #[test]
    fn instance_norm_default_eps() {
        // [1, 3]: mean 2, var 1 -> ±1/sqrt(1 + 1e-5) = ±0.99999500004
        let x = t(&[1, 1, 1, 1, 2], &[1., 3.]);
        let y = ops::instance_norm(&x, &t(&[1], &[1.]), &t(&[1], &[0.]), 1e-5).unwrap();
        close(&y, &[1, 1, 1, 1, 2], &[-0.999_995, 0.999_995], 1e-7);
    }

    // ---- pointwise ------------------------------------------------------------------------

    #[test]
    fn leaky_relu_and_add() {
        let x = t(&[4], &[-2., -0.5, 0., 3.]);
        close(
            &ops::leaky_relu(&x, 0.01).unwrap(),
            &[4],
            &[-0.02, -0.005, 0., 3.],
            1e-9,
        );
        let y = ops::add(&t(&[2], &[1., 2.]), &t(&[2], &[3., -5.])).unwrap();
        close(&y, &[2], &[4., -3.], 0.0);
        interp_err(
            ops::add(&t(&[2], &[1., 2.]), &t(&[1, 2], &[1., 2.])),
            "differ",
        );
        let i = Tensor::from_i32(vec![1], vec![1]).unwrap();
        interp_err(ops::leaky_relu(&i, 0.01), "f32");
    }

    // ---- max_pool3d -----------------------------------------------------------------------

    fn pool(kernel: [usize; 3], stride: [usize; 3]) -> PoolAttrs {
        PoolAttrs { kernel, stride }
    }

    #[test]
    fn max_pool3d_2x2x2() {
        // d0: h0 [1,5,2,0]   h1 [3,-1,9,4]
        // d1: h0 [0,2,7,8]   h1 [-5,6,1,1]
        // block w0-1: {1,5,3,-1,0,2,-5,6} -> 6;  block w2-3: {2,0,9,4,7,8,1,1} -> 9
        let x = t(
            &[1, 1, 2, 2, 4],
            &[
                1., 5., 2., 0., 3., -1., 9., 4., 0., 2., 7., 8., -5., 6., 1., 1.,
            ],
        );
        let y = ops::max_pool3d(&x, &pool([2, 2, 2], [2, 2, 2])).unwrap();
        close(&y, &[1, 1, 1, 1, 2], &[6., 9.], 0.0);
    }

    #[test]
    fn max_pool3d_overlap_leftover_negative_nan() {
        // kernel 2 stride 1 on [1,3,2,5,4] -> [3,3,5,5]
        let x = t(&[1, 1, 1, 1, 5], &[1., 3., 2., 5., 4.]);
        close(
            &ops::max_pool3d(&x, &pool([1, 1, 2], [1, 1, 1])).unwrap(),
            &[1, 1, 1, 1, 4],
            &[3., 3., 5., 5.],
            0.0,
        );
        // kernel 3 stride 2 on 7 values: windows 0..3, 2..5, 4..7 -> [3, 5, 9]
        let x = t(&[1, 1, 1, 1, 7], &[1., 3., 2., 5., 4., 0., 9.]);
        close(
            &ops::max_pool3d(&x, &pool([1, 1, 3], [1, 1, 2])).unwrap(),
            &[1, 1, 1, 1, 3],
            &[3., 5., 9.],
            0.0,
        );
        // all negative: the maximum is -1, not 0
        let x = t(&[1, 1, 1, 1, 3], &[-3., -1., -2.]);
        close(
            &ops::max_pool3d(&x, &pool([1, 1, 3], [1, 1, 1])).unwrap(),
            &[1, 1, 1, 1, 1],
            &[-1.],
            0.0,
        );
        // NaN propagates, wherever it sits in the window
        let x = t(&[1, 1, 1, 1, 4], &[f32::NAN, 1., 2., f32::NAN]);
        let y = ops::max_pool3d(&x, &pool([1, 1, 2], [1, 1, 2])).unwrap();
        assert!(y.as_f32().unwrap().iter().all(|v| v.is_nan()));
    }

    // ---- concat ---------------------------------------------------------------------------

    #[test]
    fn concat_keeps_operand_order_per_sample() {
        // a: n0 [1,2], n1 [7,8] (C=1); b: n0 [3,4 | 5,6], n1 [9,10 | 11,12] (C=2)
        let a = t(&[2, 1, 1, 1, 2], &[1., 2., 7., 8.]);
        let b = t(&[2, 2, 1, 1, 2], &[3., 4., 5., 6., 9., 10., 11., 12.]);
        let ab = ops::concat(&[&a, &b]).unwrap();
        let want_ab = [1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.];
        close(&ab, &[2, 3, 1, 1, 2], &want_ab, 0.0);
        let ba = ops::concat(&[&b, &a]).unwrap();
        let want_ba = [3., 4., 5., 6., 1., 2., 9., 10., 11., 12., 7., 8.];
        close(&ba, &[2, 3, 1, 1, 2], &want_ba, 0.0);
        interp_err(ops::concat(&[]), "operand");
    }

    // ---- softmax / argmax -----------------------------------------------------------------

    #[test]
    fn softmax_over_channels() {
        // position 0: [1,2,3] -> [0.09003057, 0.24472847, 0.66524096]
        // position 1: [1000,1000,1000] -> 1/3 each (overflows without the max subtraction)
        let x = t(&[1, 3, 1, 1, 2], &[1., 1000., 2., 1000., 3., 1000.]);
        let y = ops::softmax(&x).unwrap();
        let third = 1. / 3.;
        let want = [
            0.090_030_57,
            third,
            0.244_728_47,
            third,
            0.665_240_96,
            third,
        ];
        close(&y, &[1, 3, 1, 1, 2], &want, 1e-7);
        let v = y.as_f32().unwrap();
        for p in 0..2 {
            let s: f32 = (0..3).map(|c| v[c * 2 + p]).sum();
            assert!((s - 1.0).abs() < 1e-6, "position {p} sums to {s}");
        }
        // rank 2: [0, 0, ln 2] -> [1/4, 1/4, 1/2]
        let y = ops::softmax(&t(&[1, 3], &[0., 0., std::f32::consts::LN_2])).unwrap();
        close(&y, &[1, 3], &[0.25, 0.25, 0.5], 1e-7);
    }

    #[test]
    fn argmax_ties_and_nan() {
        // columns (channels 0..3) at the four positions:
        //   p0 [1,1,1] tie -> 0   p1 [0,5,5] tie -> 1   p2 [-1,-3,-2] -> 0   p3 [2,NaN,3] -> 1
        let x = t(
            &[1, 3, 1, 1, 4],
            &[1., 0., -1., 2., 1., 5., -3., f32::NAN, 1., 5., -2., 3.],
        );
        let y = ops::argmax(&x).unwrap();
        assert_eq!(y.shape(), &[1, 1, 1, 4]);
        assert_eq!(y.as_i32().unwrap(), &[0, 1, 0, 1]);
        // two NaNs: the first wins; NaN beats +inf
        let x = t(&[1, 4], &[f32::INFINITY, f32::NAN, 9., f32::NAN]);
        assert_eq!(ops::argmax(&x).unwrap().as_i32().unwrap(), &[1]);
        let x = t(&[2, 2], &[f32::NAN, 1., 0., -1.]);
        assert_eq!(ops::argmax(&x).unwrap().as_i32().unwrap(), &[0, 0]);
    }

    #[test]
    fn eval_checks_arity() {
        let x = t(&[1, 1, 1, 1, 1], &[1.]);
        interp_err(ops::eval(&e2enc_ir::Op::Add, &[&x]), "operand");
        interp_err(
            ops::eval(&e2enc_ir::Op::Input { name: "x".into() }, &[]),
            "driver",
        );
    }
}
