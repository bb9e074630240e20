//! The C kernels against the reference interpreter: every op, every fused-conv variant (dense /
//! sparse, shifted or not, stride 1 / 2, bias / norm / slope), the upsampling transposed convs,
//! the generic fallbacks and the edge cases (depth 1, odd sizes, few rows, channel counts that
//! are not multiples of 8, sparse outputs with no live kernel, batch 2, outputs that are channel
//! slices of a wider buffer). Random cases are batched into one compiled file per proptest case.

mod harness;

use e2enc_codegen::target::Target;
use e2enc_ir::{shift_runs, ConvAttrs, FusedConvAttrs, Op, PoolAttrs, ShiftAttrs, Tensor};
use harness::{check_batch, noise, Case};
use proptest::prelude::*;

/// A convolution test configuration.
#[derive(Clone, Debug)]
struct ConvCfg {
    n: usize,
    cin: usize,
    cout: usize,
    dhw: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    transposed: bool,
    /// Kernel density of a sparse conv (`None`: dense weights).
    density: Option<f64>,
    shift_groups: usize,
    bias: bool,
    norm: bool,
    slope: bool,
    slice: bool,
    seed: u64,
}

impl ConvCfg {
    fn plain(n: usize, cin: usize, cout: usize, dhw: [usize; 3], k: usize, s: usize) -> Self {
        ConvCfg {
            n,
            cin,
            cout,
            dhw,
            kernel: [1, k, k],
            stride: [1, s, s],
            padding: [0, (k - 1) / 2, (k - 1) / 2],
            transposed: false,
            density: None,
            shift_groups: 1,
            bias: false,
            norm: false,
            slope: false,
            slice: false,
            seed: 1,
        }
    }

    fn case(&self) -> Case {
        let [d, h, w] = self.dhw;
        let x = noise(&[self.n, self.cin, d, h, w], self.seed);
        let kvol: usize = self.kernel.iter().product();
        let [kd, kh, kw] = self.kernel;
        let mut consts = Vec::new();
        let wshape = if self.transposed {
            vec![self.cin, self.cout, kd, kh, kw]
        } else {
            vec![self.cout, self.cin, kd, kh, kw]
        };
        let dense = noise(&wshape, self.seed + 1);
        match self.density {
            None => consts.push(dense),
            Some(p) => {
                let dv = dense.as_f32().unwrap();
                let mut rows = Vec::new();
                let mut packed = Vec::new();
                let mut state = self.seed.wrapping_mul(31) + 7;
                for o in 0..self.cout {
                    for i in 0..self.cin {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let u = (state >> 33) as f64 / (1u64 << 31) as f64;
                        // Output channel 0 has no live kernel (when there are others).
                        if u >= p || (o == 0 && self.cout > 1) {
                            continue;
                        }
                        rows.extend([o as i32, i as i32]);
                        let k = if self.transposed {
                            i * self.cout + o
                        } else {
                            o * self.cin + i
                        };
                        packed.extend_from_slice(&dv[k * kvol..(k + 1) * kvol]);
                    }
                }
                let nr = rows.len() / 2;
                consts.push(Tensor::from_f32(vec![nr, kd, kh, kw], packed).unwrap());
                consts.push(Tensor::from_i32(vec![nr, 2], rows).unwrap());
            }
        }
        if self.bias {
            consts.push(noise(&[self.cout], self.seed + 2));
        }
        if self.norm {
            consts.push(noise(&[self.cout], self.seed + 3));
            consts.push(noise(&[self.cout], self.seed + 4));
        }
        let shifts = if self.shift_groups > 1 {
            shift_runs(self.shift_groups, self.cin)
        } else {
            Vec::new()
        };
        let op = Op::FusedConv3d(FusedConvAttrs {
            conv: ConvAttrs {
                kernel: self.kernel,
                stride: self.stride,
                padding: self.padding,
            },
            transposed: self.transposed,
            shifts,
            sparse_out: self.density.map(|_| self.cout),
            bias: self.bias,
            norm_eps: self.norm.then_some(1e-5),
            slope: self.slope.then_some(0.01),
        });
        Case {
            op,
            acts: vec![x],
            consts,
            out_slice: self.slice.then_some((1, 2)),
            in_slice: (self.seed % 3 == 1).then_some((2, 3)),
            ranges: None,
        }
    }
}

fn check(cases: Vec<Case>) {
    if let Err(e) = check_batch(&cases) {
        panic!("{e}");
    }
}

fn fused_strategy() -> impl Strategy<Value = ConvCfg> {
    (
        (1usize..=2, 1usize..=19, 1usize..=13),
        (1usize..=4, 1usize..=11, 1usize..=21),
        (prop::bool::ANY, 1usize..=2, prop::bool::ANY),
        (prop::option::of(0.1f64..0.7), 1usize..=5),
        (
            prop::bool::ANY,
            prop::bool::ANY,
            prop::bool::ANY,
            prop::bool::ANY,
        ),
        (0u64..1_000_000, 0usize..4),
    )
        .prop_map(
            |(
                (n, cin, cout),
                (d, h, w),
                (k3, s, sd2),
                (density, groups),
                (bias, norm, slope, slice),
                (seed, depth),
            )| {
                let k = if k3 { 3 } else { 1 };
                // Depth geometry: 1 (E2ENet), stride 2, or a 3-deep kernel with padding 1.
                let (kd, sd, pd) = match depth {
                    1 if sd2 => (1, 2, 0),
                    2 => (3, 1, 1),
                    3 if d >= 2 => (2, 2, 0),
                    _ => (1, 1, 0),
                };
                ConvCfg {
                    n: if n == 2 && seed % 3 == 0 { 2 } else { 1 },
                    cin,
                    cout,
                    dhw: [d, h, w],
                    kernel: [kd, k, k],
                    stride: [sd, s, s],
                    padding: [pd, (k - 1) / 2, (k - 1) / 2],
                    transposed: false,
                    density,
                    shift_groups: groups,
                    bias,
                    norm,
                    slope,
                    slice,
                    seed,
                }
            },
        )
}

fn up_strategy() -> impl Strategy<Value = ConvCfg> {
    (
        (1usize..=2, 1usize..=17, 1usize..=11),
        (1usize..=3, 1usize..=9, 1usize..=29),
        (prop::option::of(0.1f64..0.7), 1usize..=2),
        (prop::bool::ANY, prop::bool::ANY, prop::bool::ANY),
        0u64..1_000_000,
    )
        .prop_map(
            |((n, cin, cout), (d, h, w), (density, kd), (bias, norm, slope), seed)| ConvCfg {
                n,
                cin,
                cout,
                dhw: [d, h, w],
                kernel: [kd, 2, 2],
                stride: [kd, 2, 2],
                padding: [0; 3],
                transposed: true,
                density,
                shift_groups: 1,
                bias,
                norm,
                slope,
                slice: seed % 4 == 0,
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn fused_convs_match_the_interpreter(cfgs in prop::collection::vec(fused_strategy(), 6)) {
        let cases: Vec<Case> = cfgs.iter().map(|c| c.case()).collect();
        let res = check_batch(&cases);
        prop_assert!(res.is_ok(), "{}\n{:#?}", res.unwrap_err(), cfgs);
    }

    #[test]
    fn upsampling_convs_match_the_interpreter(cfgs in prop::collection::vec(up_strategy(), 5)) {
        let cases: Vec<Case> = cfgs.iter().map(|c| c.case()).collect();
        let res = check_batch(&cases);
        prop_assert!(res.is_ok(), "{}\n{:#?}", res.unwrap_err(), cfgs);
    }
}

#[test]
fn fused_conv_edge_cases() {
    let mut v = Vec::new();
    // Depth 1, one row, W not a multiple of 8, channels not multiples of 8.
    for (i, (dhw, k, s)) in [
        ([1, 1, 5], 3, 1),
        ([1, 2, 9], 3, 2),
        ([2, 3, 17], 3, 2),
        ([1, 3, 24], 3, 2),
        ([3, 7, 33], 3, 1),
        ([2, 5, 8], 1, 1),
        ([2, 5, 19], 1, 2),
        ([1, 9, 16], 3, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = ConvCfg::plain(1 + i % 2, 3 + i, 5 + 2 * i, dhw, k, s);
        c.seed = 100 + i as u64;
        c.bias = i % 2 == 0;
        c.norm = i % 3 == 0;
        c.slope = i % 3 != 1;
        c.shift_groups = 1 + i % 4;
        c.density = (i % 2 == 1).then_some(0.3);
        v.push(c.case());
    }
    check(v);
}

#[test]
fn e2enet_shaped_convs() {
    let mut v = Vec::new();
    // Backbone conv (dense, shift, norm, slope), its stride-2 form, a sparse fusion conv, a head.
    let mut c = ConvCfg::plain(1, 16, 16, [4, 16, 16], 3, 1);
    c.bias = true;
    c.norm = true;
    c.slope = true;
    c.shift_groups = 5;
    v.push(c.case());
    let mut c = ConvCfg::plain(1, 16, 24, [4, 16, 16], 3, 2);
    c.stride = [2, 2, 2];
    c.bias = true;
    c.norm = true;
    c.slope = true;
    c.shift_groups = 5;
    v.push(c.case());
    let mut c = ConvCfg::plain(2, 40, 16, [3, 8, 12], 3, 1);
    c.density = Some(0.2);
    c.bias = true;
    c.norm = true;
    c.slope = true;
    c.shift_groups = 5;
    c.slice = true;
    v.push(c.case());
    // Wide sparse planes: the column-strip loop order (several strips and a tail).
    let mut c = ConvCfg::plain(1, 120, 4, [2, 7, 113], 3, 1);
    c.density = Some(0.3);
    c.norm = true;
    c.shift_groups = 3;
    v.push(c.case());
    let mut c = ConvCfg::plain(1, 24, 7, [2, 6, 20], 1, 1);
    c.bias = false;
    v.push(c.case());
    check(v);
}

#[test]
fn plain_and_generic_convs() {
    let x = noise(&[1, 3, 5, 6, 7], 1);
    let x2 = noise(&[2, 2, 3, 4, 9], 2);
    let conv = |k: [usize; 3], s: [usize; 3], p: [usize; 3]| ConvAttrs {
        kernel: k,
        stride: s,
        padding: p,
    };
    let cases = vec![
        // Conv3d with and without bias (fast path and generic path).
        Case {
            op: Op::Conv3d(conv([3, 3, 3], [1, 1, 1], [1, 1, 1])),
            acts: vec![x.clone()],
            consts: vec![noise(&[4, 3, 3, 3, 3], 3), noise(&[4], 4)],
            out_slice: None,
            in_slice: None,
            ranges: None,
        },
        Case {
            op: Op::Conv3d(conv([2, 3, 2], [2, 2, 3], [1, 0, 2])),
            acts: vec![x.clone()],
            consts: vec![noise(&[2, 3, 2, 3, 2], 5)],
            out_slice: None,
            in_slice: Some((1, 2)),
            ranges: None,
        },
        Case {
            op: Op::Conv3d(conv([1, 5, 5], [1, 1, 1], [0, 2, 2])),
            acts: vec![x2.clone()],
            consts: vec![noise(&[3, 2, 1, 5, 5], 6), noise(&[3], 7)],
            out_slice: Some((0, 1)),
            in_slice: None,
            ranges: None,
        },
        // ConvTranspose3d: the upsampling path and generic ones.
        Case {
            op: Op::ConvTranspose3d(conv([2, 2, 2], [2, 2, 2], [0, 0, 0])),
            acts: vec![x.clone()],
            consts: vec![noise(&[3, 5, 2, 2, 2], 8), noise(&[5], 9)],
            out_slice: None,
            in_slice: Some((1, 2)),
            ranges: None,
        },
        Case {
            op: Op::ConvTranspose3d(conv([3, 3, 2], [2, 1, 2], [1, 1, 0])),
            acts: vec![x2.clone()],
            consts: vec![noise(&[2, 3, 3, 3, 2], 10)],
            out_slice: None,
            in_slice: None,
            ranges: None,
        },
        Case {
            op: Op::ConvTranspose3d(conv([1, 2, 2], [1, 2, 2], [0, 0, 0])),
            acts: vec![x2],
            consts: vec![noise(&[2, 4, 1, 2, 2], 11)],
            out_slice: None,
            in_slice: None,
            ranges: None,
        },
    ];
    check(cases);
}

#[test]
fn generic_fused_variants() {
    // Sparse + shift + norm on the generic path (5x5 kernel), and a generic sparse transposed conv.
    let mut c = ConvCfg::plain(2, 6, 5, [3, 6, 10], 3, 1);
    c.kernel = [1, 5, 5];
    c.padding = [0, 2, 2];
    c.density = Some(0.4);
    c.shift_groups = 3;
    c.bias = true;
    c.norm = true;
    c.slope = true;
    let mut t = ConvCfg::plain(1, 4, 3, [2, 3, 5], 3, 1);
    t.transposed = true;
    t.kernel = [2, 3, 3];
    t.stride = [1, 2, 2];
    t.padding = [0, 1, 1];
    t.density = Some(0.5);
    t.norm = true;
    check(vec![c.case(), t.case()]);
}

#[test]
fn elementwise_and_copy_ops() {
    let a = noise(&[2, 3, 4, 5, 11], 20);
    let b = noise(&[2, 3, 4, 5, 11], 21);
    let c = noise(&[2, 2, 4, 5, 11], 22);
    let pool_in = noise(&[1, 3, 6, 9, 17], 23);
    let cases = vec![
        Case {
            op: Op::LeakyRelu { slope: 0.01 },
            acts: vec![a.clone()],
            consts: vec![],
            out_slice: None,
            in_slice: Some((1, 2)),
            ranges: None,
        },
        Case {
            op: Op::Add,
            acts: vec![a.clone(), b.clone()],
            consts: vec![],
            out_slice: Some((2, 3)),
            in_slice: None,
            ranges: None,
        },
        Case {
            op: Op::DepthShift(ShiftAttrs { groups: 3 }),
            acts: vec![a.clone()],
            consts: vec![],
            out_slice: None,
            in_slice: Some((1, 2)),
            ranges: None,
        },
        Case {
            op: Op::DepthShift(ShiftAttrs { groups: 5 }),
            acts: vec![c.clone()],
            consts: vec![],
            out_slice: None,
            in_slice: None,
            ranges: None,
        },
        Case {
            op: Op::SelectChannels {
                axis: 1,
                ranges: vec![(0, 1), (2, 3)],
            },
            acts: vec![a.clone()],
            consts: vec![],
            out_slice: None,
            in_slice: Some((1, 2)),
            ranges: None,
        },
        Case {
            op: Op::Concat,
            acts: vec![a.clone(), c.clone(), b.clone()],
            consts: vec![],
            out_slice: Some((1, 1)),
            in_slice: None,
            ranges: None,
        },
        Case {
            op: Op::MaxPool3d(PoolAttrs {
                kernel: [2, 2, 2],
                stride: [2, 2, 2],
            }),
            acts: vec![pool_in.clone()],
            consts: vec![],
            out_slice: None,
            in_slice: Some((1, 2)),
            ranges: None,
        },
        Case {
            op: Op::MaxPool3d(PoolAttrs {
                kernel: [1, 3, 2],
                stride: [1, 2, 3],
            }),
            acts: vec![pool_in],
            consts: vec![],
            out_slice: None,
            in_slice: None,
            ranges: None,
        },
        Case {
            op: Op::InstanceNorm { eps: 1e-5 },
            acts: vec![a.clone()],
            consts: vec![noise(&[3], 24), noise(&[3], 25)],
            out_slice: Some((0, 2)),
            in_slice: Some((1, 2)),
            ranges: None,
        },
        Case {
            op: Op::Softmax,
            acts: vec![noise(&[2, 5, 3, 4, 13], 26)],
            consts: vec![],
            out_slice: None,
            in_slice: None,
            ranges: None,
        },
        Case {
            op: Op::Argmax,
            acts: vec![noise(&[2, 7, 3, 4, 13], 27)],
            consts: vec![],
            out_slice: None,
            in_slice: Some((1, 2)),
            ranges: None,
        },
        Case {
            op: Op::Softmax,
            acts: vec![noise(&[1, 16, 1, 1, 3], 28)],
            consts: vec![],
            out_slice: None,
            in_slice: None,
            ranges: None,
        },
    ];
    check(cases);
}

#[test]
fn argmax_ties_take_the_first_channel() {
    let mut v = noise(&[1, 4, 1, 2, 9], 30).as_f32().unwrap().to_vec();
    // Channels 1 and 3 tie at the maximum on the first row.
    for x in 0..9 {
        v[18 + x] = 2.0;
        v[3 * 18 + x] = 2.0;
    }
    let t = Tensor::from_f32(vec![1, 4, 1, 2, 9], v).unwrap();
    check(vec![Case {
        op: Op::Argmax,
        acts: vec![t],
        consts: vec![],
        out_slice: None,
        in_slice: None,
        ranges: None,
    }]);
}

#[test]
fn kernels_compile_for_plain_avx2() {
    // The target machines have AVX2 + FMA and no AVX-512: the generated text must not need more.
    let mut consts = e2enc_codegen::emit::Consts::default();
    let mut cfgs = Vec::new();
    let mut c = ConvCfg::plain(1, 5, 6, [2, 5, 13], 3, 2);
    c.norm = true;
    c.density = Some(0.5);
    cfgs.push(c);
    let mut c = ConvCfg::plain(1, 5, 7, [2, 9, 60], 3, 1);
    c.density = Some(0.5);
    c.shift_groups = 3;
    c.slope = true;
    cfgs.push(c);
    let mut c = ConvCfg::plain(1, 5, 7, [2, 9, 40], 3, 2);
    c.bias = true;
    cfgs.push(c);
    cfgs.push(ConvCfg::plain(1, 5, 7, [2, 9, 40], 1, 1));
    let mut u = ConvCfg::plain(1, 4, 3, [2, 3, 5], 2, 2);
    u.transposed = true;
    u.kernel = [2, 2, 2];
    u.stride = [2, 2, 2];
    u.padding = [0; 3];
    u.norm = true;
    cfgs.push(u);
    let mut cases: Vec<Case> = cfgs.iter().map(|c| c.case()).collect();
    cases.push(Case::new(
        Op::Softmax,
        vec![noise(&[1, 3, 1, 2, 9], 1)],
        vec![],
    ));
    cases.push(Case::new(
        Op::Argmax,
        vec![noise(&[1, 3, 1, 2, 9], 1)],
        vec![],
    ));
    cases.push(Case::new(
        Op::MaxPool3d(PoolAttrs {
            kernel: [2, 2, 2],
            stride: [2, 2, 2],
        }),
        vec![noise(&[1, 3, 2, 4, 9], 1)],
        vec![],
    ));
    cases.push(Case::new(
        Op::InstanceNorm { eps: 1e-5 },
        vec![noise(&[1, 3, 2, 4, 9], 1)],
        vec![noise(&[3], 2), noise(&[3], 3)],
    ));
    let ps: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| harness::prepare(c, &format!("p{i}"), &mut consts))
        .collect();
    let ks: Vec<_> = ps.iter().flat_map(|p| &p.kernels).collect();
    harness::compile(
        &ks,
        &["-O2", "-mavx2", "-mfma", "-mno-avx512f", "-Wall", "-Werror"],
    )
    .unwrap();
}

#[test]
fn kernels_compile_for_avx512_without_warnings() {
    // Compile-only (any host): the AVX-512 text of stride-1 fast convs (dense and sparse, k 1
    // and 3, masked tails, norm, slope, bias) builds with the bundle's flags and -Werror.
    let mut consts = e2enc_codegen::emit::Consts::default();
    let mut cfgs = Vec::new();
    let mut c = ConvCfg::plain(1, 5, 7, [2, 9, 37], 3, 1);
    c.norm = true;
    c.density = Some(0.5);
    c.shift_groups = 3;
    cfgs.push(c);
    let mut c = ConvCfg::plain(1, 5, 6, [2, 5, 40], 3, 1);
    c.slope = true;
    c.bias = true;
    cfgs.push(c);
    cfgs.push(ConvCfg::plain(1, 5, 7, [2, 9, 40], 1, 1));
    cfgs.push(ConvCfg::plain(1, 5, 7, [2, 9, 40], 3, 2));
    let ps: Vec<_> = cfgs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            harness::prepare_for(&c.case(), &format!("q{i}"), &mut consts, Target::X86Avx512)
        })
        .collect();
    let src: String = ps
        .iter()
        .flat_map(|p| &p.kernels)
        .map(|k| k.source.as_str())
        .collect();
    assert!(src.contains("e2f16_fma("), "no 16-lane FMAs emitted");
    assert!(
        src.contains("e2f16_storen("),
        "no masked tail store emitted"
    );
    assert!(
        src.contains("e2f16_alignr("),
        "no aligned sparse taps emitted"
    );
    let ks: Vec<_> = ps.iter().flat_map(|p| &p.kernels).collect();
    let mut flags = vec!["-O2", "-Wall", "-Werror"];
    flags.extend_from_slice(Target::X86Avx512.machine_flags());
    harness::compile_for(&ks, &flags, Target::X86Avx512).unwrap();
}

#[test]
fn avx512_runs_odd_widths_and_tails() {
    // Widths around the 16-lane boundaries (1, 8, 15, 16, 17, 24, 31, 33) and channel counts
    // that are not multiples of the output block, both ISAs (AVX-512 where the host has it).
    let mut cases = Vec::new();
    for (i, w) in [1, 8, 15, 16, 17, 24, 31, 33].into_iter().enumerate() {
        let mut c = ConvCfg::plain(
            1,
            3,
            5 + i % 3,
            [2, 5, w],
            if i % 4 == 3 { 1 } else { 3 },
            1,
        );
        c.seed = 40 + i as u64;
        c.norm = i % 2 == 0;
        c.slope = true;
        c.bias = i % 3 == 0;
        if i % 2 == 1 {
            c.density = Some(0.6);
        }
        c.slice = i == 5;
        cases.push(c.case());
    }
    check(cases);
}

#[test]
fn avx512_stride_2_runs_odd_widths_and_tails() {
    // Stride-2 kernels read two 16-lane vectors per tap (32 input columns) and keep the even
    // lanes: input widths around the 32-column boundaries, where the last loads are masked to
    // the row's storage, odd output-channel counts (blocks of 4), dense and sparse, 1x1 too.
    let mut cases = Vec::new();
    for (i, w) in [1, 2, 15, 16, 17, 31, 32, 33, 34, 47, 63, 65, 66]
        .into_iter()
        .enumerate()
    {
        let mut c = ConvCfg::plain(
            1,
            2 + i % 3,
            3 + i % 4,
            [3, 2 + i % 5, w],
            if i % 5 == 4 { 1 } else { 3 },
            2,
        );
        c.seed = 70 + i as u64;
        c.norm = i % 2 == 0;
        c.slope = true;
        c.bias = i % 3 != 1;
        if i % 3 == 2 {
            c.density = Some(0.5);
        }
        c.slice = i == 6;
        cases.push(c.case());
    }
    check(cases);
}

#[test]
fn generated_text_is_deterministic_for_avx512() {
    let mut c = ConvCfg::plain(1, 7, 5, [2, 6, 21], 3, 1);
    c.density = Some(0.4);
    c.norm = true;
    let case = c.case();
    let mut k1 = e2enc_codegen::emit::Consts::default();
    let mut k2 = e2enc_codegen::emit::Consts::default();
    let a = harness::prepare_for(&case, "k", &mut k1, Target::X86Avx512);
    let b = harness::prepare_for(&case, "k", &mut k2, Target::X86Avx512);
    assert_eq!(a.kernels, b.kernels);
    assert_eq!(k1.f32, k2.f32);
    let c2 = harness::prepare(&case, "k", &mut e2enc_codegen::emit::Consts::default());
    assert_ne!(a.kernels, c2.kernels, "the ISAs emit the same text");
}

#[test]
fn generated_text_is_deterministic() {
    let mut c = ConvCfg::plain(1, 7, 5, [2, 6, 10], 3, 1);
    c.density = Some(0.4);
    c.norm = true;
    c.shift_groups = 3;
    let case = c.case();
    let mut k1 = e2enc_codegen::emit::Consts::default();
    let mut k2 = e2enc_codegen::emit::Consts::default();
    let a = harness::prepare(&case, "k", &mut k1);
    let b = harness::prepare(&case, "k", &mut k2);
    assert_eq!(a.kernels, b.kernels);
    assert_eq!(k1.f32, k2.f32);
    assert_eq!(k1.i32, k2.i32);
}

#[test]
fn avx512_upsampling_is_bit_identical_to_avx2() {
    // The 16-lane upsampling kernel (both depth taps per tile, output channels innermost when
    // dense) sums every value in the 8-lane kernel's order and its norm statistics in the same
    // groups: the two ISAs give the same bits, across widths around the 16- and 48-column
    // blocks, odd 8-lane counts, kd 1 and 2, dense and sparse, norm / bias / slope.
    if !Target::X86Avx512.host_supports() {
        eprintln!(
            "note: no avx512f on this host: the bit-identity check of the up kernels is skipped"
        );
        return;
    }
    let mut cfgs = Vec::new();
    let widths = [1, 3, 8, 9, 16, 23, 24, 25, 40, 47, 48, 49, 64, 70];
    for (i, w) in widths.into_iter().enumerate() {
        let kd = 1 + i % 2;
        cfgs.push(ConvCfg {
            n: 1 + i % 2,
            cin: 5 + i % 7,
            cout: 3 + i % 4,
            dhw: [1 + i % 3, 1 + (i * 3) % 7, w],
            kernel: [kd, 2, 2],
            stride: [kd, 2, 2],
            padding: [0; 3],
            transposed: true,
            density: (i % 3 == 0).then_some(0.5),
            shift_groups: 1,
            bias: i % 3 != 1,
            norm: i % 2 == 0 || i == 7,
            slope: i % 4 != 2,
            slice: i == 5,
            seed: 70 + i as u64,
        });
    }
    // Long entry lists: the output-channel-innermost loop order.
    for (i, (cin, kd, w, norm)) in [(48, 2, 37, true), (90, 1, 64, false), (50, 2, 16, false)]
        .into_iter()
        .enumerate()
    {
        cfgs.push(ConvCfg {
            n: 1,
            cin,
            cout: 3 + i,
            dhw: [2, 3, w],
            kernel: [kd, 2, 2],
            stride: [kd, 2, 2],
            padding: [0; 3],
            transposed: true,
            density: None,
            shift_groups: 1,
            bias: true,
            norm,
            slope: !norm,
            slice: i == 2,
            seed: 90 + i as u64,
        });
    }
    // An output past 32 MiB: its lines are streamed.
    cfgs.push(ConvCfg {
        n: 1,
        cin: 2,
        cout: 4,
        dhw: [16, 64, 256],
        kernel: [2, 2, 2],
        stride: [2, 2, 2],
        padding: [0; 3],
        transposed: true,
        density: None,
        shift_groups: 1,
        bias: true,
        norm: true,
        slope: false,
        slice: false,
        seed: 99,
    });
    let cases: Vec<Case> = cfgs.iter().map(|c| c.case()).collect();
    let mut outs = Vec::new();
    for isa in [Target::X86Avx2, Target::X86Avx512] {
        let mut consts = e2enc_codegen::emit::Consts::default();
        let ps: Vec<_> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| harness::prepare_for(c, &format!("b{i}"), &mut consts, isa))
            .collect();
        let ks: Vec<_> = ps.iter().flat_map(|p| &p.kernels).collect();
        let lib = harness::compile_for(&ks, &isa.cflags(), isa).unwrap();
        // The output values, then the scratch (the norm's partial sums, in double).
        let vals: Vec<Vec<u32>> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut a = p.arena();
                harness::run(&lib, p, &mut a, &consts, &[], false);
                let mut v = p.check(&a, &format!("[{isa}] case {i}")).unwrap();
                let (at, len) = p.scratch;
                v.extend(a.as_slice()[at..at + len].iter().map(|x| x.to_bits()));
                v
            })
            .collect();
        outs.push(vals);
    }
    for (i, (a, b)) in outs[0].iter().zip(&outs[1]).enumerate() {
        assert!(
            a == b,
            "case {i} differs between avx2 and avx512: {:?}",
            cfgs[i]
        );
    }
    let avx512 = harness::prepare_for(&cases[12], "w", &mut Default::default(), Target::X86Avx512);
    let src: String = avx512.kernels.iter().map(|k| k.source.as_str()).collect();
    assert!(
        src.contains("e2f16_zip_hi("),
        "the up kernel did not use 16 lanes"
    );
    assert!(
        src.contains("e2f16_alignr("),
        "no aligned output lines (width 64)"
    );
    let big = harness::prepare_for(
        cases.last().unwrap(),
        "s",
        &mut Default::default(),
        Target::X86Avx512,
    );
    let src: String = big.kernels.iter().map(|k| k.source.as_str()).collect();
    assert!(src.contains("e2f16_stream("), "no streamed output lines");
}

/// `t` with every value rounded to bf16 (nearest even), so bf16 products of it are exact.
fn bf16_exact(t: &Tensor) -> Tensor {
    let v: Vec<f32> = t
        .as_f32()
        .unwrap()
        .iter()
        .map(|x| {
            let u = x.to_bits();
            f32::from_bits((u.wrapping_add(0x7fff + ((u >> 16) & 1))) & 0xffff_0000)
        })
        .collect();
    Tensor::from_f32(t.shape().to_vec(), v).unwrap()
}

/// The 3x3 stride-1 convs that get bf16 (and int8) kernels under `--precision bf16` on
/// x86-avx512: widths
/// around the 16-column vectors and the masked last loads, heights around the bands (4 dense,
/// 10 sparse rows) and sub-bands, depth shifts and depth padding (packed as zero slots), dense
/// blocks of 2 with an odd output count, sparse outputs without live kernels, slices, batch 2,
/// and enough channels that the packed band is cut into strips and sub-bands.
fn bf16_cases() -> Vec<ConvCfg> {
    let mut cfgs = Vec::new();
    for (i, w) in [1, 8, 15, 16, 17, 24, 31, 33, 40, 70]
        .into_iter()
        .enumerate()
    {
        let mut c = ConvCfg::plain(
            1 + i / 8,
            4 + i % 4,
            3 + i % 3,
            [2 + i % 3, 3 + 4 * (i % 4), w],
            3,
            1,
        );
        c.seed = 300 + i as u64;
        c.norm = i % 2 == 0;
        c.slope = i % 3 != 1;
        c.bias = i % 3 == 0;
        c.density = (i % 2 == 1).then_some(0.5);
        c.shift_groups = if i % 4 == 2 { 2 } else { 1 };
        c.slice = i == 5;
        if i == 6 {
            c.kernel = [3, 3, 3];
            c.padding = [1, 1, 1];
        }
        cfgs.push(c);
    }
    // One and two rows (micro variants that use only some of the 12 row-pair weight words).
    for (i, h) in [1, 2].into_iter().enumerate() {
        let mut c = ConvCfg::plain(1, 6, 3, [2, h, 20], 3, 1);
        c.density = Some(0.6);
        c.seed = 330 + i as u64;
        cfgs.push(c);
    }
    // 300 input channels, 70 wide: strips of 2 vectors and sub-bands of fewer rows.
    let mut c = ConvCfg::plain(1, 300, 3, [2, 13, 70], 3, 1);
    c.density = Some(0.05);
    c.norm = true;
    c.seed = 320;
    cfgs.push(c);
    let mut c = ConvCfg::plain(1, 260, 5, [1, 9, 40], 3, 1);
    c.bias = true;
    c.slope = true;
    c.seed = 321;
    cfgs.push(c);
    cfgs
}

/// [`bf16_cases`] and the dense 3x3 stride-2 convs that get bf16 kernels too.
fn bf16_all_cases() -> Vec<ConvCfg> {
    let mut cfgs = bf16_cases();
    // Dense stride 2 (rows of more than 8 outputs): even and odd input widths and heights
    // (the last 32 input columns cut by the row's storage, the bottom padding row), an odd
    // channel count (the last pair half zero), output counts around the blocks of 4, a depth
    // shift, a 3x3x3 kernel with depth padding, batch 2, a slice, and 300 channels (strips).
    for (i, (cin, cout, dhw)) in [
        (5, 6, [2, 7, 18]),
        (4, 9, [2, 8, 33]),
        (6, 4, [2, 6, 64]),
        (7, 5, [2, 5, 70]),
        (300, 5, [1, 5, 70]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = ConvCfg::plain(1 + i / 3 % 2, cin, cout, dhw, 3, 2);
        c.seed = 340 + i as u64;
        c.norm = i % 2 == 0;
        c.slope = i != 1;
        c.bias = i % 2 == 1;
        c.shift_groups = if i == 1 { 2 } else { 1 };
        c.slice = i == 3;
        if i == 2 {
            c.kernel = [3, 3, 3];
            c.padding = [1, 1, 1];
        }
        cfgs.push(c);
    }
    cfgs
}

/// Dense 1x1x1 convs (`conv_bf16_1x1.rs`, the heads): 48 -> 16 on 128 columns as AMOS-CT's,
/// an odd channel count (the last channel alone), rows with a partial last vector, more than 16
/// outputs (two blocks, the second guarded), batch 2, a norm, sliced input and output.
fn bf16_1x1_cases() -> Vec<ConvCfg> {
    let mut cfgs = Vec::new();
    for (i, (n, cin, cout, dhw)) in [
        (1, 48, 16, [2, 2, 128]),
        (1, 7, 5, [2, 4, 20]),
        (2, 6, 20, [1, 3, 40]),
        (1, 5, 3, [3, 2, 16]),
        (1, 9, 18, [2, 3, 33]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = ConvCfg::plain(n, cin, cout, dhw, 1, 1);
        c.seed = 360 + i as u64;
        c.bias = i != 1;
        c.norm = i % 2 == 1;
        c.slope = i % 3 == 1;
        c.slice = i == 4;
        cfgs.push(c);
    }
    cfgs
}

#[test]
fn bf16_convs_compile_without_warnings() {
    // Any x86 host: the bf16 text builds with the bundle's flags and -Werror.
    use e2enc_codegen::precision::Precision;
    let mut consts = e2enc_codegen::emit::Consts::default();
    let ps: Vec<_> = bf16_all_cases()
        .iter()
        .chain(&bf16_1x1_cases())
        .enumerate()
        .map(|(i, c)| {
            harness::prepare_in(
                &c.case(),
                &format!("b{i}"),
                &mut consts,
                Target::X86Avx512,
                Precision::Bf16,
            )
        })
        .collect();
    let ks: Vec<_> = ps.iter().flat_map(|p| &p.kernels).collect();
    let f32_convs: Vec<_> = ks
        .iter()
        .filter(|k| k.what.contains("conv") && !k.what.ends_with(" bf16"))
        .map(|k| &k.what)
        .collect();
    assert!(f32_convs.is_empty(), "{f32_convs:?}");
    // A conv of fewer than 4 input (channel, depth tap) slots (the first conv) stays f32.
    let c = ConvCfg::plain(1, 1, 8, [2, 9, 40], 3, 1);
    let p = harness::prepare_in(
        &c.case(),
        "f",
        &mut consts,
        Target::X86Avx512,
        Precision::Bf16,
    );
    assert!(p.kernels.iter().all(|k| !k.what.ends_with(" bf16")));
    let src: String = ks.iter().map(|k| k.source.as_str()).collect();
    for want in ["e2bf_dp(", "e2f16_loadm(", "e2bf_loadu(", "e2bf_alignr("] {
        assert!(src.contains(want), "no {want} emitted");
    }
    let mut flags = vec!["-O2", "-Wall", "-Werror"];
    flags.extend_from_slice(Target::X86Avx512.machine_flags());
    harness::compile_in(&ks, &flags, Target::X86Avx512, Precision::Bf16).unwrap();
}

/// Whether this host runs bf16 kernels; without, says so (or fails under
/// `E2ENC_REQUIRE_AVX512_BF16`).
fn host_bf16() -> bool {
    if e2enc_codegen::target::host_has("avx512bf16") == Some(true)
        && e2enc_codegen::target::host_has("avx512bw") == Some(true)
    {
        return true;
    }
    assert!(
        std::env::var_os("E2ENC_REQUIRE_AVX512_BF16").is_none(),
        "E2ENC_REQUIRE_AVX512_BF16 is set but this host lacks avx512bf16"
    );
    eprintln!("note: this host lacks avx512bf16: the bf16 kernels are compiled but NOT run");
    false
}

#[test]
fn bf16_convs_match_the_interpreter_on_bf16_exact_values() {
    // With inputs and weights that are bf16 values, vdpbf16ps's products are exact and only the
    // f32 sums round: the kernels must then match the f32 interpreter (1e-4, as every kernel)
    // and be independent of the tile split. A wrong tap, row, slot or weight pair is O(1).
    use e2enc_codegen::precision::Precision;
    if !host_bf16() {
        return;
    }
    let cases: Vec<Case> = bf16_all_cases()
        .iter()
        .chain(&bf16_1x1_cases())
        .map(|c| {
            let mut k = c.case();
            k.acts[0] = bf16_exact(&k.acts[0]);
            k.consts[0] = bf16_exact(&k.consts[0]);
            k
        })
        .collect();
    if let Err(e) = harness::check_batch_in(&cases, Target::X86Avx512, Precision::Bf16) {
        panic!("{e}");
    }
}

#[test]
fn bf16_convs_round_their_inputs() {
    // On values that are not bf16, the kernels differ from f32 by bf16's rounding (8
    // significant bits: ~1e-3 relative on these sums), neither by more (a bug) nor by nothing
    // (an f32 kernel in disguise).
    use e2enc_codegen::precision::Precision;
    if !host_bf16() {
        return;
    }
    let mut c = ConvCfg::plain(1, 24, 6, [2, 11, 37], 3, 1);
    c.density = Some(0.5);
    let mut d = ConvCfg::plain(1, 24, 6, [2, 11, 37], 3, 1);
    d.seed = 5;
    let mut e = ConvCfg::plain(1, 24, 6, [2, 11, 37], 3, 2);
    e.seed = 6;
    for cfg in [c, d, e] {
        let case = cfg.case();
        let mut consts = e2enc_codegen::emit::Consts::default();
        let p = harness::prepare_in(&case, "r", &mut consts, Target::X86Avx512, Precision::Bf16);
        let ks: Vec<_> = p.kernels.iter().collect();
        let lib = harness::compile_in(
            &ks,
            &Target::X86Avx512.cflags(),
            Target::X86Avx512,
            Precision::Bf16,
        )
        .unwrap();
        let mut a = p.arena();
        harness::run(&lib, &p, &mut a, &consts, &[], false);
        let err = e2enc_ir::tensor::relative_error(&output_of(&p, &a), &p.want).unwrap();
        assert!(
            err > 1e-4 && err < 1e-2,
            "bf16 relative error {err:e} (density {:?})",
            cfg.density
        );
    }
}

/// Whether this host runs int8 kernels; without, says so (or fails under
/// `E2ENC_REQUIRE_AVX512_VNNI`).
fn host_int8() -> bool {
    let has = |f| e2enc_codegen::target::host_has(f) == Some(true);
    if has("avx512bw") && has("avx512vnni") && has("avx512vbmi") {
        return true;
    }
    assert!(
        std::env::var_os("E2ENC_REQUIRE_AVX512_VNNI").is_none(),
        "E2ENC_REQUIRE_AVX512_VNNI is set but this host lacks avx512vnni or avx512vbmi"
    );
    eprintln!(
        "note: this host lacks avx512vnni or avx512vbmi: the int8 kernels are compiled but NOT run"
    );
    false
}

/// A hash of `i` and `seed` in `0..m`.
fn pick(i: usize, seed: u64, m: u64) -> u64 {
    let mut s = (i as u64).wrapping_add(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    s ^= s >> 31;
    s = s.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    s ^= s >> 29;
    (s >> 11) % m
}

/// `cfg`'s conv made int8-exact: input channel `c` holds values `(q - z_c) s_c` of a `u8`
/// grid whose range is the case's calibration (`s_c` a power of two, zero points all over
/// 0..255), and the weights of output `o` are `k 2^-7 / s_c` with codes `k` in [-127, 127]
/// (one of them 127): the folded weights quantize to exactly `k`, so the kernels' products are
/// exact and only f32 sums and the final scaling round.
fn int8_exact(cfg: &ConvCfg) -> Case {
    let mut k = cfg.case();
    let cin = cfg.cin;
    let scale = |c: usize| 2f32.powi(-(4 + (c % 4) as i32));
    let zero = |c: usize| ((37 * c + 11 + cfg.seed as usize) % 256) as f32;
    k.ranges = Some(
        (0..cin)
            .map(|c| [-zero(c) * scale(c), (255.0 - zero(c)) * scale(c)])
            .collect(),
    );
    let [_, _, d, h, w] = <[usize; 5]>::try_from(k.acts[0].shape()).unwrap();
    let plane = d * h * w;
    let x: Vec<f32> = (0..k.acts[0].numel())
        .map(|i| {
            let c = (i / plane) % cin;
            (pick(i, cfg.seed, 256) as f32 - zero(c)) * scale(c)
        })
        .collect();
    k.acts[0] = Tensor::from_f32(k.acts[0].shape().to_vec(), x).unwrap();
    // (output, input channel) of each kernel of consts[0].
    let owners: Vec<(usize, usize)> = match cfg.density {
        // Transposed weights are [cin][cout][..].
        None if cfg.transposed => (0..cin)
            .flat_map(|c| (0..cfg.cout).map(move |o| (o, c)))
            .collect(),
        None => (0..cfg.cout)
            .flat_map(|o| (0..cin).map(move |c| (o, c)))
            .collect(),
        Some(_) => k.consts[1]
            .as_i32()
            .unwrap()
            .chunks(2)
            .map(|r| (r[0] as usize, r[1] as usize))
            .collect(),
    };
    let kvol: usize = cfg.kernel.iter().product();
    let mut seen = vec![false; cfg.cout];
    let mut wv = vec![0f32; owners.len() * kvol];
    for (kk, &(o, c)) in owners.iter().enumerate() {
        for t in 0..kvol {
            let i = kk * kvol + t;
            let mut code = pick(i, cfg.seed + 17, 255) as f32 - 127.0;
            if !seen[o] {
                seen[o] = true;
                code = 127.0;
            }
            wv[i] = code * 2f32.powi(-7) / scale(c);
        }
    }
    k.consts[0] = Tensor::from_f32(k.consts[0].shape().to_vec(), wv).unwrap();
    k
}

#[test]
fn int8_convs_compile_without_warnings() {
    // Any x86 host: the int8 text builds with the bundle's flags and -Werror; every 3x3 conv
    // with ranges is int8, one without ranges or with fewer than 4 slots stays f32.
    // Both packings: tap words (`--activations f32`) and codes as bytes (bf16 storage).
    for narrow in [false, true] {
        int8_text_builds(narrow);
    }
}

fn int8_text_builds(narrow: bool) {
    use e2enc_codegen::precision::Precision;
    let mut consts = e2enc_codegen::emit::Consts::default();
    let ps: Vec<_> = bf16_all_cases()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            harness::prepare_with(
                &int8_exact(c),
                &format!("q{i}"),
                &mut consts,
                Target::X86Avx512,
                Precision::Int8,
                narrow,
            )
        })
        .collect();
    let ks: Vec<_> = ps.iter().flat_map(|p| &p.kernels).collect();
    assert!(ks
        .iter()
        .all(|k| k.what.ends_with(" int8") || !k.what.contains("conv")));
    for (cfg, name) in [
        (ConvCfg::plain(1, 1, 8, [2, 9, 40], 3, 1), "f"),
        (ConvCfg::plain(1, 6, 8, [2, 9, 40], 3, 1), "g"),
    ] {
        let mut case = int8_exact(&cfg);
        if name == "g" {
            case.ranges = None;
        }
        let p = harness::prepare_with(
            &case,
            name,
            &mut consts,
            Target::X86Avx512,
            Precision::Int8,
            narrow,
        );
        assert!(
            p.kernels.iter().all(|k| !k.what.ends_with(" int8")),
            "{name}"
        );
    }
    let src: String = ks.iter().map(|k| k.source.as_str()).collect();
    let (taps, other) = match narrow {
        false => ("e2q_taps(", "e2q_taps8("),
        true => ("e2q_taps8(", "e2q_taps("),
    };
    for want in [
        "_mm512_dpbusd_epi32(",
        taps,
        "e2q_codes(",
        "e2q_loadm(",
        "e2q_quad(",
    ] {
        assert!(src.contains(want), "no {want} emitted (narrow {narrow})");
    }
    assert!(!src.contains(other), "{other} emitted (narrow {narrow})");
    let mut flags = vec!["-O2", "-Wall", "-Werror"];
    flags.extend_from_slice(Target::X86Avx512.machine_flags());
    harness::compile_with(&ks, &flags, Target::X86Avx512, Precision::Int8, narrow).unwrap();
}

#[test]
fn int8_convs_match_the_interpreter_on_int8_exact_values() {
    // On values of the calibrated grids and weights whose folded codes are exact, vpdpbusd's
    // sums are exact: the kernels must match the f32 interpreter (1e-4, as every kernel) and
    // not depend on the tile split. A wrong tap, row, slot, zero point or scale is O(1).
    use e2enc_codegen::precision::Precision;
    if !host_int8() {
        return;
    }
    let mut cfgs = bf16_all_cases();
    // Stride 2 to rows of at most 8 outputs (half a vector), 13 channels (the last quad short).
    for (i, (cin, dhw)) in [(13, [2, 6, 14]), (8, [1, 16, 16])].into_iter().enumerate() {
        let mut c = ConvCfg::plain(1, cin, 6, dhw, 3, 2);
        c.norm = i == 0;
        c.bias = true;
        c.seed = 350 + i as u64;
        cfgs.push(c);
    }
    let cases: Vec<Case> = cfgs.iter().map(int8_exact).collect();
    // Both packings: tap words (`--activations f32`) and codes as bytes (bf16 storage).
    for narrow in [false, true] {
        if let Err(e) =
            harness::check_batch_with(&cases, Target::X86Avx512, Precision::Int8, narrow)
        {
            panic!("narrow {narrow}: {e}");
        }
    }
}

#[test]
fn int8_convs_quantize_their_inputs() {
    // On values off the grid (ranges: each channel's min and max), the kernels differ from f32
    // by 8-bit quantization (~1e-2 relative on these sums), neither by more (a bug) nor by
    // nothing (an f32 kernel in disguise).
    use e2enc_codegen::precision::Precision;
    if !host_int8() {
        return;
    }
    let mut c = ConvCfg::plain(1, 24, 6, [2, 11, 37], 3, 1);
    c.density = Some(0.5);
    let mut d = ConvCfg::plain(1, 24, 6, [2, 11, 37], 3, 1);
    d.seed = 5;
    for cfg in [c, d] {
        let mut case = cfg.case();
        let x = case.acts[0].as_f32().unwrap();
        let plane = 2 * 11 * 37;
        case.ranges = Some(
            (0..24)
                .map(|ch| {
                    let v = &x[ch * plane..(ch + 1) * plane];
                    let lo = v.iter().fold(f32::INFINITY, |m, &a| m.min(a));
                    let hi = v.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
                    [lo, hi]
                })
                .collect(),
        );
        let mut consts = e2enc_codegen::emit::Consts::default();
        let p = harness::prepare_in(&case, "r", &mut consts, Target::X86Avx512, Precision::Int8);
        assert!(p.kernels.iter().any(|k| k.what.ends_with(" int8")));
        let ks: Vec<_> = p.kernels.iter().collect();
        let lib = harness::compile_in(
            &ks,
            &Target::X86Avx512.cflags(),
            Target::X86Avx512,
            Precision::Int8,
        )
        .unwrap();
        let mut a = p.arena();
        harness::run(&lib, &p, &mut a, &consts, &[], false);
        let err = e2enc_ir::tensor::relative_error(&output_of(&p, &a), &p.want).unwrap();
        assert!(
            err > 1e-4 && err < 3e-2,
            "int8 relative error {err:e} (density {:?})",
            cfg.density
        );
    }
}

/// int8 bundles store activations as bf16 too (`--activations f32` aside): the int8 convs read
/// bf16 rows, quantizing them while packing, and store bf16 outputs (normalized ones less their
/// tile's shift); the convs without int8 kernels (stride 2) take the bf16 ones. On int8-exact
/// values (which bf16 holds exactly) they match the interpreter within the output's bf16
/// rounding; reading the rows as f32 (a wrong pointer type) or a lost shift is O(1).
#[test]
fn int8_convs_on_bf16_storage_match_the_interpreter() {
    use e2enc_codegen::precision::Precision;
    if !host_int8() || !host_bf16() {
        return;
    }
    let mut cfgs = bf16_all_cases();
    // Upsamplings multiply int8 channel quads: dense (8 and 12 channels, 40 and 24 columns: a
    // half vector at the end, one micro call or two) and sparse (each output channel's live
    // channels four at a time, the last quad padded).
    for (i, (cin, cout, dhw, density)) in [
        (8, 5, [2, 3, 40], None),
        (12, 3, [1, 4, 24], None),
        (8, 4, [2, 5, 20], Some(0.6)),
        (13, 5, [1, 3, 40], Some(0.5)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = ConvCfg::plain(1, cin, cout, dhw, 2, 2);
        c.kernel = [2, 2, 2];
        c.stride = [2, 2, 2];
        c.padding = [0, 0, 0];
        c.transposed = true;
        c.density = density;
        c.bias = i != 1;
        c.slope = i == 0;
        c.seed = 760 + i as u64;
        cfgs.push(c);
    }
    // Stride 2 to 7 columns: the int8 kernel in half a vector, normalized (shifted statistics).
    let mut c = ConvCfg::plain(1, 5, 6, [3, 8, 14], 3, 2);
    c.norm = true;
    c.seed = 770;
    cfgs.push(c);
    let cases: Vec<Case> = cfgs
        .iter()
        .map(|c| {
            let mut k = int8_exact(c);
            k.out_slice = None;
            k.in_slice = None;
            k
        })
        .collect();
    let whats = match harness::check_narrow_in(&cases, 8e-3, Precision::Int8) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    for (cfg, w) in cfgs.iter().zip(&whats) {
        let want = " int8";
        assert!(
            w.iter().any(|k| k.ends_with(want)),
            "{cfg:?}: kernels {w:?}, none{want}"
        );
    }
}

/// The output of a prepared case from its arena, unpadded.
fn output_of(p: &harness::Prepared, a: &harness::Arena) -> Tensor {
    let [n, ch, dd, h, w] = p.output.shape;
    let mut got = Vec::new();
    for nn in 0..n {
        for cc in 0..ch {
            for z in 0..dd {
                for y in 0..h {
                    let r = p.output.at(nn, cc, z, y as isize, 0);
                    got.extend_from_slice(&a.as_slice()[r..r + w]);
                }
            }
        }
    }
    Tensor::from_f32(p.want.shape().to_vec(), got).unwrap()
}

/// The kernels that read and write bf16 activation views (`--precision bf16` stores
/// activations so): the bf16 convs of [`bf16_cases`], stride-2 and 1x1 convs and the first
/// conv (f32 kernels), the upsamplings (8 and 16 lanes) and max pooling, with bf16 inputs and
/// weights. The interpreter computes in f32 from the same values: what differs is the output's
/// bf16 rounding (2^-9 relative) and, for normalized outputs, that of the raw values less their
/// tile's shift; a wrong address, width or shift is O(1).
#[test]
fn bf16_storage_kernels_match_the_interpreter() {
    if !host_bf16() {
        return;
    }
    let mut cfgs = bf16_all_cases();
    cfgs.extend(bf16_1x1_cases());
    for (i, (cin, cout, dhw, k, s, norm)) in [
        (6, 8, [3, 9, 20], 3, 2, true),
        (5, 7, [2, 12, 40], 3, 2, false),
        (8, 5, [2, 6, 20], 1, 1, false),
        (1, 4, [4, 8, 24], 3, 1, true),
        (4, 4, [5, 3, 7], 3, 1, true),
        // Stride 2 to 7 columns: the f32 kernel in 8 lanes, normalized (its shifted statistics).
        (5, 6, [3, 8, 14], 3, 2, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = ConvCfg::plain(1, cin, cout, dhw, k, s);
        c.norm = norm;
        c.slope = norm || i % 2 == 0;
        c.bias = true;
        c.density = (i % 2 == 1).then_some(0.5);
        c.shift_groups = if i == 3 { 1 } else { 2 };
        c.seed = 700 + i as u64;
        cfgs.push(c);
    }
    for (i, dhw) in [[2, 5, 12], [2, 4, 40], [1, 3, 17]].into_iter().enumerate() {
        let mut c = ConvCfg::plain(1, 6, 4, dhw, 2, 2);
        c.kernel = [2, 2, 2];
        c.stride = [2, 2, 2];
        c.padding = [0, 0, 0];
        c.transposed = true;
        c.density = (i != 1).then_some(0.6);
        c.bias = i == 2;
        c.seed = 720 + i as u64;
        cfgs.push(c);
    }
    // Dense with a long entry list: the output channels run innermost (`o_inner`), 45 inputs
    // (an odd count: the last pair's second channel has zero weights).
    let mut c = ConvCfg::plain(1, 45, 4, [2, 3, 24], 2, 2);
    c.kernel = [2, 2, 2];
    c.stride = [2, 2, 2];
    c.padding = [0, 0, 0];
    c.transposed = true;
    c.bias = true;
    c.seed = 730;
    cfgs.push(c);
    let mut cases: Vec<Case> = cfgs
        .iter()
        .map(|c| {
            let mut k = c.case();
            k.out_slice = None;
            k.in_slice = None;
            k.acts[0] = bf16_exact(&k.acts[0]);
            k.consts[0] = bf16_exact(&k.consts[0]);
            k
        })
        .collect();
    for (i, dhw) in [[4, 6, 36], [2, 5, 9], [2, 4, 64], [3, 3, 30]]
        .into_iter()
        .enumerate()
    {
        let [d, h, w] = dhw;
        cases.push(Case::new(
            Op::MaxPool3d(PoolAttrs {
                kernel: [2, 2, 2],
                stride: [2, 2, 2],
            }),
            vec![bf16_exact(&noise(&[1, 3, d, h, w], 740 + i as u64))],
            vec![],
        ));
    }
    let whats =
        match harness::check_narrow_in(&cases, 8e-3, e2enc_codegen::precision::Precision::Bf16) {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        };
    // The upsamplings of more than 8 input columns multiply bf16 channel pairs.
    let ups: Vec<&String> = whats
        .iter()
        .flatten()
        .filter(|w| w.contains(" up"))
        .collect();
    assert_eq!(ups.len(), 4, "{whats:?}");
    assert!(ups.iter().all(|w| w.ends_with(" bf16")), "{ups:?}");
}
