//! CUDA bundles without a GPU: the numpy-reference fixture compiled for `cuda-sm80` and
//! `cuda-sm90` (NVRTC builds CUBIN and PTX), run by the host emulation, matches the float64
//! reference and the interpreter within 1e-5 in f32, bit-identically for any thread order seed
//! and thread count, and within the TF32 and bf16 tolerances on tensor cores (`mma.sync` emulated from
//! PTX's fragment tables); the CPU engine refuses a CUDA bundle and `--emulate` refuses a CPU
//! bundle, both naming the fix; tampered device code is refused before anything runs; the
//! kernels of the golden network and AMOS-CT compile for both SMs without spills; the golden
//! network's bf16 bundle is bf16's math (within 5e-3 of the interpreter with the kernels'
//! rounding simulated, while 4.7e-2 from f32).

#[path = "common/mod.rs"]
mod cli_common;
#[path = "bundle_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{feed, rel};
use e2enc::{Session, TensorEngine};
use e2enc_codegen::compile::{compile, CompileOptions};
use e2enc_codegen::precision::Precision;
use e2enc_codegen::target::Target;
use e2enc_ir::e2enet::BuildOptions;
use e2enc_runtime::bundle::{Bundle, Code, LoadOptions};
use e2enc_runtime::exec::Engine;

fn compile_ch1(target: Target, precision: Precision) -> (tempfile::TempDir, PathBuf) {
    let t = common::tempdir();
    let dir = t.path().join(target.name());
    let opts = CompileOptions {
        deep_supervision: true,
        isa: target,
        precision: Some(precision),
        ..CompileOptions::default()
    };
    compile(&common::ch1_model(), &dir, &opts)
        .unwrap_or_else(|e| panic!("compiling ch1 for {target} failed: {e}"));
    (t, dir)
}

fn emulated(dir: &Path, threads: usize) -> Engine {
    let b = Bundle::load(
        dir,
        &LoadOptions {
            emulate: true,
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {} emulated: {e}", dir.display()));
    Engine::try_new(b, threads).expect("engine")
}

fn set_seed(e: &Engine, seed: u64) {
    match &e.bundle.code {
        Code::Emulated(em) => em.set_seed(seed),
        _ => panic!("not an emulated bundle"),
    }
}

#[test]
fn fixture_on_cuda_targets_matches_reference_and_interpreter_under_emulation() {
    if !common::nvrtc_or_skip("fixture_on_cuda_targets") {
        return;
    }
    let io = common::ch1_io();
    let x = io.get("input").expect("io has `input`");
    let mut s = Session::load(&common::ch1_dir(), &BuildOptions::default()).expect("session");
    s.optimize(&[]).expect("optimize");
    let yi = s.run(&feed(x), &[]).expect("interpreter");
    for target in Target::CUDA {
        let (_t, dir) = compile_ch1(target, Precision::F32);
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["target"], target.name());
        assert_eq!(m["cuda"]["sm"], target.sm().unwrap());
        assert_eq!(m["cuda"]["precision"], "f32");
        for f in [
            "kernels.cu",
            "kernels.cubin",
            "kernels.ptx",
            "weights.safetensors",
        ] {
            assert!(m["files"][f].is_string(), "manifest lists {f}");
        }
        let mut e1 = emulated(&dir, 1);
        let y1 = e1.run(&feed(x)).expect("emulated run");
        for (name, got) in &y1 {
            let want_name = if name == "logits" { "ds0" } else { name };
            let e = rel(got, io.get(want_name).expect("reference"), name);
            assert!(
                e < 1e-5,
                "{target} {name}: {e:.2e} against the float64 reference"
            );
            let e = rel(got, &yi[name], name);
            assert!(e < 1e-5, "{target} {name}: {e:.2e} against the interpreter");
        }
        // The kernels do not depend on the order of threads or on how blocks are split.
        let mut e2 = emulated(&dir, 2);
        set_seed(&e2, 0xdead_beef);
        let y2 = e2
            .run(&feed(x))
            .expect("emulated run, 2 threads, another seed");
        common::assert_same_outputs(&y1, &y2, "seed and thread count");
    }
}

/// Tensor cores, TF32 (the CUDA default) and bf16: the fixture's outputs within rel. L2 1e-2
/// (TF32) and 3e-2 (bf16) of the float64 reference with the same argmax on at least 99.9% (TF32)
/// and 98% (bf16) of voxels, and only near-ties flipping, and bit-identical
/// across thread-order seeds (each mma is a warp rendezvous in the emulation, so a kernel that
/// let lanes diverge around it would fail here).
#[test]
fn fixture_on_tensor_cores_is_within_the_tf32_tolerance() {
    on_tensor_cores(Target::CudaSm80, Precision::Tf32);
}

#[test]
fn fixture_on_tensor_cores_is_within_the_bf16_tolerance() {
    on_tensor_cores(Target::CudaSm90, Precision::Bf16);
}

fn on_tensor_cores(target: Target, precision: Precision) {
    use e2enc_ir::tensor::relative_error_l2;
    if !common::nvrtc_or_skip("fixture_on_tensor_cores") {
        return;
    }
    let io = common::ch1_io();
    let x = io.get("input").expect("io has `input`");
    let (_t, dir) = compile_ch1(target, precision);
    let man = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    assert!(
        man.contains(&format!("{precision}-mma")),
        "no tensor-core kernel in the bundle"
    );
    assert!(man.contains(&format!("\"precision\": \"{precision}\"")));
    let mut e = emulated(&dir, 2);
    let y = e.run(&feed(x)).expect("emulated run");
    for (name, got) in &y {
        let want = io
            .get(if name == "logits" { "ds0" } else { name })
            .expect("reference");
        let l2 = relative_error_l2(got, want).unwrap();
        // bf16 keeps 8 significant bits to TF32's 11: 8x the rounding, and 8x TF32's error here
        // (1.1e-2 to 1.9e-2 on this fixture: more than the 1e-2 the CUDA issue asked for).
        let gate = if precision == Precision::Bf16 {
            3e-2
        } else {
            1e-2
        };
        assert!(l2 < gate, "{name}: rel. L2 {l2:.2e} in {precision}");
        assert!(
            l2 > 0.0,
            "{name}: {precision} equal to f32 bit for bit: were tensor cores used?"
        );
        let (g, w) = (got.as_f32().unwrap(), want.as_f32().unwrap());
        let [_, c, d, h, wd] = <[usize; 5]>::try_from(got.shape()).unwrap();
        let vox = d * h * wd;
        let argmax = |v: &[f32], i: usize| {
            (0..c)
                .max_by(|&a, &b| v[a * vox + i].total_cmp(&v[b * vox + i]))
                .unwrap()
        };
        let same = (0..vox).filter(|&i| argmax(g, i) == argmax(w, i)).count();
        // Random weights leave many near-ties between the classes: bf16 flips 0.5-1.2% of this
        // fixture's voxels (a trained network's margins are larger; not measured yet). Every
        // flip must be a near-tie of the reference: top-2 margin under 0.1 x its RMS.
        let agree = if precision == Precision::Bf16 {
            0.98
        } else {
            0.999
        };
        assert!(
            same as f64 >= agree * vox as f64,
            "{name}: argmax agrees on {same} of {vox} voxels"
        );
        let rms = (w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        for i in (0..vox).filter(|&i| argmax(g, i) != argmax(w, i)) {
            let mut top: Vec<f32> = (0..c).map(|k| w[k * vox + i]).collect();
            top.sort_by(|a, b| b.total_cmp(a));
            let margin = (top[0] - top[1]) as f64;
            assert!(
                margin < 0.1 * rms,
                "{name}: voxel {i} flips with a reference margin of {margin:.3e} (RMS {rms:.3e})"
            );
        }
        eprintln!("{name}: {precision} rel. L2 {l2:.2e}, argmax agreement {same}/{vox}");
    }
    set_seed(&e, 12345);
    let y2 = e.run(&feed(x)).expect("another seed");
    common::assert_same_outputs(&y, &y2, "thread-order seed");
}

#[test]
fn cuda_bundles_and_cpu_engines_refuse_each_other_clearly() {
    if !common::nvrtc_or_skip("cuda_bundles_and_cpu_engines_refuse_each_other_clearly") {
        return;
    }
    let (_t, dir) = compile_ch1(Target::CudaSm90, Precision::Tf32);
    let b = Bundle::load(&dir, &LoadOptions::default()).expect("a CUDA bundle verifies");
    let e = Engine::try_new(b, 1)
        .err()
        .expect("the CPU engine refuses CUDA kernels");
    let msg = e.to_string();
    assert!(
        msg.contains("--emulate") && msg.contains("cuda-sm90"),
        "{msg}"
    );

    // The library signed with the test process's key, which the CLI's home does not know.
    let bench = |d: &Path, more: &[&str]| {
        let mut a = vec![
            "bench",
            d.to_str().unwrap(),
            "--runs",
            "1",
            "--trust-unsigned",
        ];
        a.extend(more);
        cli_common::e2enc(&a)
    };
    let o = bench(&dir, &[]);
    let t = cli_common::text(&o);
    assert!(!o.status.success() && t.contains("--emulate"), "{t}");
    let o = bench(&dir, &["--emulate"]);
    assert!(o.status.success(), "{}", cli_common::text(&o));

    let cpu = common::shared_ch1();
    let o = bench(cpu, &["--emulate"]);
    let t = cli_common::text(&o);
    assert!(
        !o.status.success() && t.contains("without --emulate"),
        "{t}"
    );

    // Tampered device code: refused by its checksum before anything is compiled or run.
    for f in ["kernels.cubin", "kernels.ptx", "kernels.cu"] {
        let t2 = common::tempdir();
        let copy = t2.path().join("b");
        common::copy_dir(&dir, &copy);
        let mut bytes = std::fs::read(copy.join(f)).unwrap();
        bytes.push(b'\n');
        std::fs::write(copy.join(f), &bytes).unwrap();
        let e = Bundle::load(&copy, &LoadOptions::default())
            .err()
            .unwrap_or_else(|| panic!("tampered {f} loaded"));
        assert!(e.to_string().contains(f), "{e}");
    }
}

/// The kernels of the released network (golden fixture) and of AMOS-CT (128^3, density 0.2 and
/// dense) compile with NVRTC for sm_80 and sm_90 to CUBIN and PTX, and ptxas reports no spills
/// and registers and shared memory within the SM's limits (`compile` refuses otherwise; here the
/// report is checked directly too).
#[test]
fn golden_and_amos_ct_kernels_compile_for_both_sms_without_spills() {
    use e2enc_codegen::compile::generate;
    use e2enc_codegen::cuda::Toolchain;
    use e2enc_ir::e2enet::{build, model::apply_masks, DsffConfig, Model, ModelConfig};
    use e2enc_ir::init::{init_masks, init_weights};
    use e2enc_passes::{optimize, OptimizeOptions};

    if !common::nvrtc_or_skip("golden_and_amos_ct_kernels_compile_for_both_sms") {
        return;
    }
    let tc = Toolchain::load().expect("NVRTC");
    let golden = Model::load(
        &common::repo().join("tests/data/golden/model.json"),
        &BuildOptions::default(),
    )
    .expect("golden model");
    let amos = |density: f64| {
        let mut cfg = ModelConfig::amos_ct();
        cfg.dsff = Some(DsffConfig {
            density,
            level0_density: density,
        });
        let net = build(&cfg, &BuildOptions::default()).expect("AMOS-CT builds");
        let mut w = init_weights(&net.params, 7);
        let masks = init_masks(&net.params, cfg.dsff.as_ref().unwrap(), 7);
        apply_masks(&mut w, &masks);
        Model {
            path: "amos/model.json".into(),
            config: cfg,
            net,
            weights: Some(w),
            masks: Some(masks),
        }
    };
    for (what, m) in [
        ("golden", golden),
        ("AMOS-CT d=0.2", amos(0.2)),
        ("AMOS-CT dense", amos(1.0)),
    ] {
        let o = optimize(
            &m.net.graph,
            m.weights.as_ref().unwrap(),
            &OptimizeOptions {
                keep_outputs: Some(vec!["logits".into()]),
                ..OptimizeOptions::default()
            },
        )
        .expect("optimize");
        for target in Target::CUDA {
            let gen = generate(&o.graph, &o.weights, target).expect("generate");
            let dev = tc
                .build(&gen.source, target, &gen.kernels)
                .unwrap_or_else(|e| panic!("{what} for {target}: {e}"));
            assert_eq!(&dev.cubin[..4], b"\x7fELF", "{what} {target}: a CUBIN");
            assert!(dev
                .ptx
                .contains(&format!(".target sm_{}", target.sm().unwrap())));
            let entries: Vec<_> = dev.resources.iter().filter(|r| r.entry).collect();
            assert_eq!(
                entries.len(),
                gen.kernels.len(),
                "{what} {target}: every kernel reported"
            );
            let spills: Vec<_> = entries
                .iter()
                .filter(|r| r.spill_stores + r.spill_loads > 0)
                .map(|r| r.name.as_str())
                .collect();
            assert!(spills.is_empty(), "{what} {target}: spills in {spills:?}");
            let regs = entries.iter().map(|r| r.registers).max().unwrap_or(0);
            let smem = entries.iter().map(|r| r.shared_bytes).max().unwrap_or(0);
            eprintln!(
                "{what} {target}: {} kernels, at most {regs} registers and {smem} B shared memory per block",
                entries.len()
            );
        }
    }
}

/// `e2enc check --target cuda-sm80`: the released network compiled to CUDA (f32) and run by the
/// host emulation reproduces the PyTorch outputs within the check's tolerance.
#[test]
fn check_reproduces_the_released_network_on_a_cuda_target() {
    if !common::nvrtc_or_skip("check_reproduces_the_released_network_on_a_cuda_target") {
        return;
    }
    let o = cli_common::e2enc(&["check", "--skip-amos", "--target", "cuda-sm80"]);
    let t = cli_common::text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("host emulation") && !t.contains("MISMATCH"),
        "{t}"
    );
}

/// The golden network's bf16 bundle under emulation computes bf16's math: its logits are 4.7e-2
/// (rel. L2) from f32 (README, `e2enc compare`), but within 5e-3 of the simulated bf16 rounding
/// (7.3e-4 measured: f32 summation order moving a few roundings), so that error is the number
/// format's, and a kernel that rounds anything else, or not at all, or mixes up the fragments,
/// fails here.
#[test]
fn golden_bf16_bundle_matches_simulated_bf16_rounding() {
    use e2enc_ir::tensor::relative_error_l2;
    if !common::nvrtc_or_skip("golden_bf16_bundle_matches_simulated_bf16_rounding") {
        return;
    }
    let golden = common::repo().join("tests/data/golden");
    let model = e2enc_ir::e2enet::Model::load(&golden.join("model.json"), &BuildOptions::default())
        .expect("golden model");
    let io = e2enc_ir::Weights::load(&golden.join("io.safetensors")).expect("golden io");
    let x = io.get("input").expect("io has `input`");
    let t = common::tempdir();
    let dir = t.path().join("golden-bf16");
    let opts = CompileOptions {
        isa: Target::CudaSm90,
        precision: Some(Precision::Bf16),
        ..CompileOptions::default()
    };
    compile(&model, &dir, &opts).expect("compiling the golden network in bf16");
    let mut e = emulated(&dir, 2);
    let y = e.run(&feed(x)).expect("emulated run");
    let got = &y["logits"];
    // The CUDA backend's tensor-core convs: stride 1 in H and W, 1x1 or 3x3 same padding.
    let sim = common::simulated_bf16(&model, x, &|c| {
        let ([_, kh, kw], [_, sh, sw], [_, ph, pw]) = (c.kernel, c.stride, c.padding);
        kh == kw && (kh == 1 || kh == 3) && ph == pw && ph == kh / 2 && sh == 1 && sw == 1
    });
    let f32_ref = &io.get("ds0").expect("io has `ds0`");
    let to_sim = relative_error_l2(got, &sim).unwrap();
    let to_f32 = relative_error_l2(got, f32_ref).unwrap();
    let sim_to_f32 = relative_error_l2(&sim, f32_ref).unwrap();
    eprintln!("bf16 bundle: {to_sim:.2e} from simulated bf16, {to_f32:.2e} from f32 (simulated: {sim_to_f32:.2e})");
    assert!(
        to_sim < 5e-3,
        "rel. L2 {to_sim:.2e} from the simulated bf16 rounding"
    );
    assert!(
        sim_to_f32 > 1e-2,
        "the simulation rounded nothing? {sim_to_f32:.2e}"
    );
}
