//! Property: a random small E2ENet, compiled to a bundle and run by the runtime, computes what
//! the reference interpreter computes on the graph as built (unoptimized), within relative 1e-4
//! on every output the bundle has.
//!
//! Configurations vary the pooling (two or three steps of (2,2,2) or (1,2,2)), widths, shift
//! groups, convs per stage, deep-supervision heads, conv kernel, batch and patch, with widths
//! like W = 12, 20 or 24 whose deeper levels are not multiples of 8. Weights are He-initialized,
//! with random conv biases and instance-norm parameters (the defaults 0 and 1 would hide errors)
//! and DSFF masks at a random density. Every case runs the C compiler, so there are few cases,
//! split over two tests so both cores work.

#[path = "bundle_common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use e2enc::TensorEngine;
use e2enc_codegen::compile::{compile, CompileOptions};
use e2enc_codegen::target::Target;
use e2enc_ir::e2enet::model::apply_masks;
use e2enc_ir::e2enet::{build, BuildOptions, DsffConfig, Model, ModelConfig, ParamRole};
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::tensor::relative_error_l2;
use e2enc_ir::{interp, Tensor};
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::exec::Engine;
use proptest::prelude::*;

/// splitmix64: a tiny seeded generator for weights perturbations and inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

#[derive(Clone, Debug)]
struct Case {
    pools: Vec<[usize; 3]>,
    in_channels: usize,
    num_classes: usize,
    base_width: usize,
    max_width: usize,
    shift_groups: usize,
    convs_per_stage: usize,
    heads: usize,
    conv_kernel: [usize; 3],
    /// Multiples of the pooling factor on each axis.
    patch_mult: [usize; 3],
    batch: usize,
    density: f64,
    deep_supervision: bool,
    seed: u64,
}

impl Case {
    fn config(&self) -> ModelConfig {
        let mut c = ModelConfig::amos_ct();
        c.name = "proptest".into();
        c.in_channels = self.in_channels;
        c.num_classes = self.num_classes;
        c.base_width = self.base_width;
        c.max_width = self.max_width;
        c.pool_kernels = self.pools.clone();
        c.conv_kernel = self.conv_kernel;
        c.shift_groups = self.shift_groups;
        c.convs_per_stage = self.convs_per_stage;
        c.deep_supervision_heads = self.heads.min(self.pools.len() - 1);
        for ax in 0..3 {
            let f: usize = self.pools.iter().map(|p| p[ax]).product();
            c.patch_size[ax] = f * self.patch_mult[ax];
        }
        c.dsff = Some(DsffConfig {
            density: self.density,
            level0_density: self.density,
        });
        c
    }

    fn model(&self) -> Model {
        self.model_with(&|_| {})
    }

    /// The model with its DSFF masks changed by `restructure` before they are applied.
    fn model_with(&self, restructure: &dyn Fn(&mut e2enc_ir::Weights)) -> Model {
        let config = self.config();
        let net = build(
            &config,
            &BuildOptions {
                batch: self.batch,
                patch: None,
            },
        )
        .expect("valid config");
        let mut w = init_weights(&net.params, self.seed);
        let mut rng = Rng(self.seed ^ 0xb1a5);
        for p in &net.params {
            let (lo, hi) = match p.role {
                ParamRole::ConvBias | ParamRole::NormBias => (-0.2, 0.2),
                ParamRole::NormWeight => (0.5, 1.5),
                _ => continue,
            };
            let v = (0..p.numel()).map(|_| rng.uniform(lo, hi)).collect();
            w.insert(
                &p.name,
                Tensor::from_f32(p.shape.clone(), v).expect("shape"),
            );
        }
        let mut masks = init_masks(
            &net.params,
            config.dsff.as_ref().expect("dsff set"),
            self.seed,
        );
        restructure(&mut masks);
        apply_masks(&mut w, &masks);
        Model {
            path: "proptest/model.json".into(),
            config,
            net,
            weights: Some(w),
            masks: Some(masks),
        }
    }

    fn input(&self, cfg: &ModelConfig) -> Tensor {
        let [d, h, w] = cfg.patch_size;
        let shape = vec![self.batch, cfg.in_channels, d, h, w];
        let mut rng = Rng(self.seed ^ 0x1234_5678);
        let v = (0..shape.iter().product::<usize>())
            .map(|_| rng.uniform(-2.0, 2.0))
            .collect();
        Tensor::from_f32(shape, v).expect("shape")
    }
}

/// Builds a case; `pool` draws one pooling step.
fn case(pool: impl Strategy<Value = [usize; 3]>) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(pool, 2..=3),
        (1usize..=2, 2usize..=3, 2usize..=6, 8usize..=16),
        (
            prop::sample::select(vec![1usize, 3, 5]),
            1usize..=2,
            0usize..=2,
        ),
        prop::sample::select(vec![[1usize, 3, 3], [1, 3, 3], [3, 3, 3]]),
        (1usize..=2, 1usize..=2, 0usize..3),
        (1usize..=2, 0.1f64..=1.0, any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                pools,
                (cin, k, bw, mw),
                (sg, cps, heads),
                ck,
                (md, mh, wi),
                (batch, density, ds, seed),
            )| {
                // W: 12 or 20 over two (x2) pools, 24 over three; deeper levels are not multiples of 8.
                let mw_mult = if pools.len() == 2 { [3, 5, 3][wi] } else { 3 };
                Case {
                    pools,
                    in_channels: cin,
                    num_classes: k,
                    base_width: bw,
                    max_width: mw,
                    shift_groups: sg,
                    convs_per_stage: cps,
                    heads,
                    conv_kernel: ck,
                    patch_mult: [md, mh, mw_mult],
                    batch,
                    density,
                    deep_supervision: ds,
                    seed,
                }
            },
        )
        // The builder refuses depth shifts that move every channel of a layer out of the
        // volume (more groups than channels on a shallow patch): no network to compare.
        .prop_filter("a network the builder accepts", |c| {
            build(
                &c.config(),
                &BuildOptions {
                    batch: c.batch,
                    patch: None,
                },
            )
            .is_ok()
        })
}

/// Returns how many concats the plan stored reordered.
fn check(c: &Case) -> Result<usize, TestCaseError> {
    check_for(c, Target::native())
}

/// [`check`] with a bundle for `target`.
fn check_for(c: &Case, target: Target) -> Result<usize, TestCaseError> {
    let model = c.model();
    let t = common::tempdir();
    let dir = t.path().join("bundle");
    let opts = CompileOptions {
        deep_supervision: c.deep_supervision,
        isa: target,
        // f32 on every target (CUDA's default, tf32, has its own tolerance: tests/cuda.rs).
        precision: Some(e2enc_codegen::precision::Precision::F32),
        ..CompileOptions::default()
    };
    let report = compile(&model, &dir, &opts)
        .map_err(|e| TestCaseError::fail(format!("compile failed: {e}")))?;
    // CUDA bundles run through the host emulation (kernels.cu compiled as C++ with the shim).
    let load = LoadOptions {
        emulate: target.is_cuda(),
        ..LoadOptions::default()
    };
    let bundle =
        Bundle::load(&dir, &load).map_err(|e| TestCaseError::fail(format!("load failed: {e}")))?;
    let mut engine = Engine::new(bundle, 2);
    let x = c.input(&model.config);
    let feed = BTreeMap::from([("input".to_string(), x)]);
    let got = engine
        .run(&feed)
        .map_err(|e| TestCaseError::fail(format!("run failed: {e}")))?;
    let w = model.weights.as_ref().expect("weights");
    let want = interp::run(&model.net.graph, w, &feed, &[])
        .map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
    let heads = model.config.deep_supervision_heads;
    prop_assert_eq!(
        got.len(),
        if c.deep_supervision { heads + 1 } else { 1 },
        "outputs {:?}",
        got.keys()
    );
    for (name, g) in &got {
        let r = &want[name];
        let e = common::rel(g, r, name);
        let l2 = relative_error_l2(g, r).unwrap_or(f64::NAN);
        // Random small nets include near-degenerate ones (a depth of 2 with most channels
        // shifted out) whose instance norms amplify f32 rounding: the fixed-seed draw has one at
        // rel. L2 1.37e-5 on every target, x86 FMA included. The 1e-5 gates of the released
        // network and of the standalone small nets stay; here L2 < 5e-5.
        prop_assert!(
            e < 1e-4 && l2 < 5e-5,
            "{} [{}]: relative error {:.2e} (L2 {:.2e}) for {:?}",
            name,
            target,
            e,
            l2,
            model.config
        );
    }
    Ok(report.reordered_concats)
}

/// A CUDA bundle of `c` on tensor cores under the host emulation (`mma.sync` emulated from
/// PTX's fragment tables). In bf16 (`m16n8k16`, bf16 inputs, f32 accumulation) against bf16's
/// math simulated on the interpreter (`common::simulated_bf16`: the inputs and weights of exactly
/// the convs the tensor-core path takes rounded to bf16, everything else f32): the logits within
/// rel. L2 1e-4 (measured 6e-9 to 2e-8; the error to f32 is the format's, 5e-3 to 1.4e-2). In
/// TF32 against the f32 interpreter: within 5e-3 (measured about 6e-4). A kernel that rounds
/// anything else, mixes up fragments, mishandles a group's dead kernels or reads a shifted
/// channel into the depth padding lands far off (the last gave 0.5 to 1.06).
fn check_cuda_tensor_cores(
    c: &Case,
    target: Target,
    precision: e2enc_codegen::precision::Precision,
) -> Result<(), TestCaseError> {
    check_cuda_tensor_cores_of(c, &c.model(), target, precision)
}

fn check_cuda_tensor_cores_of(
    c: &Case,
    model: &Model,
    target: Target,
    precision: e2enc_codegen::precision::Precision,
) -> Result<(), TestCaseError> {
    use e2enc_codegen::precision::Precision;
    let t = common::tempdir();
    let dir = t.path().join("bundle");
    let opts = CompileOptions {
        deep_supervision: false,
        isa: target,
        precision: Some(precision),
        ..CompileOptions::default()
    };
    compile(model, &dir, &opts).map_err(|e| TestCaseError::fail(format!("compile failed: {e}")))?;
    let load = LoadOptions {
        emulate: true,
        ..LoadOptions::default()
    };
    let bundle =
        Bundle::load(&dir, &load).map_err(|e| TestCaseError::fail(format!("load failed: {e}")))?;
    let mut engine = Engine::new(bundle, 2);
    let x = c.input(&model.config);
    let feed = BTreeMap::from([("input".to_string(), x.clone())]);
    let got = engine
        .run(&feed)
        .map_err(|e| TestCaseError::fail(format!("run failed: {e}")))?;
    let got = &got["logits"];
    let (want, bound) = if precision == Precision::Bf16 {
        // The CUDA backend's tensor-core convs: stride 1 in H and W, 1x1 or 3x3 same padding.
        let sim = common::simulated_bf16(model, &x, &|a| {
            let ([_, kh, kw], [_, sh, sw], [_, ph, pw]) = (a.kernel, a.stride, a.padding);
            kh == kw && (kh == 1 || kh == 3) && ph == pw && ph == kh / 2 && sh == 1 && sw == 1
        });
        (sim, 1e-4)
    } else {
        let w = model.weights.as_ref().expect("weights");
        let want = interp::run(&model.net.graph, w, &feed, &[])
            .map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
        (want["logits"].clone(), 5e-3)
    };
    let l2 = relative_error_l2(got, &want).unwrap_or(f64::NAN);
    prop_assert!(
        l2 < bound,
        "[{} {}]: rel. L2 {:.2e} (bound {:.0e}) for {:?}",
        target,
        precision,
        l2,
        bound,
        model.config
    );
    Ok(())
}

/// A `3x3x3` conv after a depth shift on tensor cores: the shifted tensor is what is padded, so a
/// tap in the depth padding reads zero even where the shift would bring a channel's plane
/// there. The kernel once read those planes (rel. L2 0.75 from f32 in TF32 and bf16 alike on
/// this net; the released network's convs after a shift are `1x3x3`, without depth padding).
#[test]
fn tensor_core_convs_read_zero_in_the_shifted_tensors_depth_padding() {
    use e2enc_codegen::precision::Precision;
    if !common::nvrtc_or_skip("tensor_core_convs_read_zero_in_the_shifted_tensors_depth_padding") {
        return;
    }
    let c = Case {
        pools: vec![[1, 2, 2], [2, 2, 2]],
        in_channels: 1,
        num_classes: 2,
        base_width: 2,
        max_width: 8,
        shift_groups: 3,
        convs_per_stage: 1,
        heads: 0,
        conv_kernel: [3, 3, 3],
        patch_mult: [1, 1, 3],
        batch: 1,
        density: 1.0,
        deep_supervision: false,
        seed: 7,
    };
    for p in [Precision::Tf32, Precision::Bf16] {
        check_cuda_tensor_cores(&c, Target::CudaSm90, p).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Sparse tensor-core convs whose output channels are regrouped so that a group's 16 outputs
/// share live inputs (`e2enc_codegen::cuda::groups`): the kernels write each value to its real
/// channel (and its norm statistics to that channel's slots), in TF32 and bf16.
#[test]
fn regrouped_output_channels_match_under_emulation() {
    use e2enc_codegen::precision::Precision;
    if !common::nvrtc_or_skip("regrouped_output_channels_match_under_emulation") {
        return;
    }
    let c = Case {
        pools: vec![[1, 2, 2], [2, 2, 2]],
        in_channels: 1,
        num_classes: 2,
        base_width: 16,
        max_width: 64,
        shift_groups: 3,
        convs_per_stage: 1,
        heads: 2,
        conv_kernel: [1, 3, 3],
        patch_mult: [1, 1, 2],
        batch: 1,
        density: 0.15,
        deep_supervision: false,
        seed: 11,
    };
    // Kernel (o, c) live where o and c are equal mod 4 (and it was live at random, for some
    // randomness): consecutive outputs read every input class, regrouped ones a quarter.
    let model = c.model_with(&|masks| {
        let names: Vec<String> = masks.iter().map(|(n, _)| n.clone()).collect();
        for name in names {
            let m = masks.get(&name).expect("listed");
            let [d0, d1] = [m.shape()[0], m.shape()[1]];
            let old = m.as_f32().expect("f32 mask").to_vec();
            let v = (0..d0 * d1)
                .map(|k| {
                    let (o, i) = (k / d1, k % d1);
                    let keep = o % 4 == i % 4 && (old[k] > 0.0 || (o + i) % 3 != 0);
                    f32::from(u8::from(keep))
                })
                .collect();
            masks.insert(name, Tensor::from_f32(vec![d0, d1], v).expect("shape"));
        }
    });
    // The kernels do regroup here (else this test checks nothing new).
    let t = common::tempdir();
    let opts = CompileOptions {
        deep_supervision: false,
        isa: Target::CudaSm90,
        precision: Some(Precision::Tf32),
        ..CompileOptions::default()
    };
    compile(&model, &t.path().join("b"), &opts).expect("compile");
    let cu = std::fs::read_to_string(t.path().join("b/kernels.cu")).expect("kernels.cu");
    let regrouped = cu.matches("+ G * 16 + g + (i >> 1) * 8]").count();
    assert!(regrouped >= 1, "no conv was regrouped");
    for p in [Precision::Tf32, Precision::Bf16] {
        check_cuda_tensor_cores_of(&c, &model, Target::CudaSm80, p)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A batch-1 net with a full-resolution UNet++ chain: the memory plan stores some concats in
/// another channel order (so the fused convs read them through channel maps), and the outputs
/// still match the interpreter.
#[test]
fn reordered_concats_match_the_interpreter() {
    let c = Case {
        pools: vec![[2, 2, 2], [2, 2, 2], [2, 2, 2]],
        in_channels: 1,
        num_classes: 3,
        base_width: 4,
        max_width: 16,
        shift_groups: 3,
        convs_per_stage: 1,
        heads: 2,
        conv_kernel: [1, 3, 3],
        patch_mult: [2, 2, 3],
        batch: 1,
        density: 0.5,
        deep_supervision: true,
        seed: 7,
    };
    let reordered = check(&c).unwrap_or_else(|e| panic!("{e}"));
    assert!(reordered > 0, "the plan reordered no concat");
}

proptest! {
    // A fixed seed (override with PROPTEST_RNG_SEED=N) so CI runs what was run here;
    // exploration is `PROPTEST_RNG_SEED=$RANDOM cargo test --test compiled_vs_interp`.
    #![proptest_config(ProptestConfig {
        cases: 3,
        max_shrink_iters: 16,
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261203),
        ),
        ..ProptestConfig::default()
    })]

    /// Isotropic pooling only: every level halves D, H and W.
    #[test]
    fn compiled_isotropic_nets_match_the_interpreter(c in case(Just([2usize, 2, 2]))) {
        check(&c)?;
    }

    /// Anisotropic pooling mixed in: some levels keep the depth.
    #[test]
    fn compiled_anisotropic_nets_match_the_interpreter(
        c in case(prop::sample::select(vec![[1usize, 2, 2], [2, 2, 2]]))
            .prop_filter("at least one (1,2,2) pool", |c| c.pools.contains(&[1, 2, 2]))
    ) {
        check(&c)?;
    }

    /// The portable target (plain C, no intrinsics) through the same runtime.
    #[test]
    fn compiled_nets_match_the_interpreter_in_portable_c(c in case(prop::sample::select(vec![[1usize, 2, 2], [2, 2, 2]]))) {
        check_for(&c, Target::Portable)?;
    }

    /// CUDA kernels (compiled by NVRTC, run by the host emulation of the runtime).
    #[test]
    fn cuda_nets_match_the_interpreter_under_emulation(c in case(prop::sample::select(vec![[1usize, 2, 2], [2, 2, 2]]))) {
        if common::nvrtc_or_skip("cuda_nets_match_the_interpreter_under_emulation") {
            // Both GPU targets over the cases (the text is the same; NVRTC and its checks differ).
            check_for(&c, if c.seed % 2 == 0 { Target::CudaSm80 } else { Target::CudaSm90 })?;
        }
    }

    /// CUDA kernels on tensor cores (emulated `mma.sync`): bf16 against simulated bf16, TF32
    /// (CUDA's default precision) against f32.
    #[test]
    fn cuda_tensor_core_nets_match_their_precisions_math_under_emulation(c in case(prop::sample::select(vec![[1usize, 2, 2], [2, 2, 2]]))) {
        use e2enc_codegen::precision::Precision;
        if common::nvrtc_or_skip("cuda_tensor_core_nets_match_their_precisions_math_under_emulation") {
            let target = if c.seed % 2 == 0 { Target::CudaSm90 } else { Target::CudaSm80 };
            check_cuda_tensor_cores(&c, target, Precision::Bf16)?;
            check_cuda_tensor_cores(&c, target, Precision::Tf32)?;
        }
    }
}
