//! `compile --standalone`: the bundle's `standalone/` C program, built with the command its
//! README names and run on a raw input file, computes what the reference interpreter computes
//! (relative L2 < 1e-5; the released network against its PyTorch outputs < 1e-4, as
//! ir/tests/golden.rs) and what the runtime computes on the same bundle (< 1e-6: the same kernel
//! text, so in practice bit for bit). The aarch64 test cross-compiles `aarch64-neon` and
//! `portable` bundles with `aarch64-linux-gnu-gcc -static` and runs them under `qemu-aarch64`;
//! without those tools it fails naming the Debian packages (CI installs them), unless
//! `E2ENC_SKIP_AARCH64=1` is set. A truncated or foreign weights file and a wrong-size input give
//! an error message and a non-zero exit status, not a crash.

#[path = "bundle_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use e2enc::TensorEngine;
use e2enc_codegen::artifact::Manifest;
use e2enc_codegen::compile::{compile, CompileOptions, Target};
use e2enc_ir::e2enet::model::apply_masks;
use e2enc_ir::e2enet::{build, BuildOptions, DsffConfig, Model, ModelConfig, ParamRole};
use e2enc_ir::init::{init_masks, init_weights, noise};
use e2enc_ir::tensor::relative_error_l2;
use e2enc_ir::{interp, Tensor, Weights};
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::exec::Engine;

/// A small E2ENet with He weights, random conv biases and norm parameters (the defaults 0 and 1
/// would hide errors) and DSFF masks at `density`.
fn small_model(cfg: ModelConfig, density: f64, seed: u64) -> Model {
    let mut config = cfg;
    config.dsff = Some(DsffConfig {
        density,
        level0_density: density,
    });
    let net = build(&config, &BuildOptions::default()).expect("valid config");
    let mut w = init_weights(&net.params, seed);
    for (k, p) in net.params.iter().enumerate() {
        let (lo, hi) = match p.role {
            ParamRole::ConvBias | ParamRole::NormBias => (-0.2f32, 0.2),
            ParamRole::NormWeight => (0.5, 1.5),
            _ => continue,
        };
        let v = noise(p.numel(), seed ^ (k as u64 + 1))
            .into_iter()
            .map(|u| lo + (hi - lo) * (u + 1.0) / 2.0)
            .collect();
        w.insert(
            &p.name,
            Tensor::from_f32(p.shape.clone(), v).expect("shape"),
        );
    }
    let masks = init_masks(&net.params, config.dsff.as_ref().expect("set"), seed);
    apply_masks(&mut w, &masks);
    Model {
        path: "standalone-test/model.json".into(),
        config,
        net,
        weights: Some(w),
        masks: Some(masks),
    }
}

/// The input of `model`: noise in [-2, 2).
fn input_of(model: &Model, seed: u64) -> Tensor {
    let [d, h, w] = model.config.patch_size;
    let shape = vec![1, model.config.in_channels, d, h, w];
    let v = noise(shape.iter().product(), seed)
        .into_iter()
        .map(|u| 2.0 * u)
        .collect();
    Tensor::from_f32(shape, v).expect("shape")
}

/// Compiles `model` with `--standalone` for `target` into `out`.
fn compile_standalone(model: &Model, out: &Path, target: Target, deep_supervision: bool) {
    let opts = CompileOptions {
        isa: target,
        standalone: true,
        deep_supervision,
        force: true,
        ..CompileOptions::default()
    };
    compile(model, out, &opts)
        .unwrap_or_else(|e| panic!("compile --standalone --target {target} failed: {e}"));
    let sa = out.join("standalone");
    for f in e2enc_codegen::standalone::FILES {
        assert!(sa.join(f).is_file(), "standalone/{f} is missing");
    }
    // The files are a pure function of the bundle: regenerated from it, they are the same bytes.
    let read = |f: &str| std::fs::read(out.join(f)).expect("read a bundle file");
    let manifest: Manifest =
        serde_json::from_slice(&read("manifest.json")).expect("manifest parses");
    let kernels = String::from_utf8(read("kernels.c")).expect("utf-8");
    let again = e2enc_codegen::standalone::generate(
        &manifest,
        &kernels,
        &read("weights.safetensors"),
        target,
    )
    .expect("regenerate");
    for (name, text) in again {
        assert!(
            read(&format!("standalone/{name}")) == text.as_bytes(),
            "standalone/{name} differs when generated again"
        );
    }
    let model_c = String::from_utf8(read("standalone/model.c")).expect("utf-8");
    assert!(
        model_c.contains(&kernels),
        "model.c lacks the kernels.c text"
    );
    for omp in ["#pragma omp", "<omp.h>", "omp_get"] {
        assert!(!model_c.contains(omp), "model.c uses OpenMP ({omp})");
    }
}

fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds `standalone/model` with the command line `line` (split at spaces), in that folder.
fn build_standalone(sa: &Path, line: &str) {
    let mut words = line.split_whitespace();
    let cc = words.next().expect("a compiler");
    run_checked(
        Command::new(cc).args(words).current_dir(sa),
        &format!("building the standalone program ({line})"),
    );
    assert!(sa.join("model").is_file());
}

/// Writes `x` as raw little-endian f32.
fn write_raw(path: &Path, x: &Tensor) {
    let v = x.as_f32().expect("f32");
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write the input");
}

/// Reads raw little-endian f32 of `shape`.
fn read_raw(path: &Path, shape: &[usize]) -> Tensor {
    let b = std::fs::read(path).expect("read the logits");
    assert_eq!(
        b.len(),
        shape.iter().product::<usize>() * 4,
        "{} has the wrong size for {shape:?}",
        path.display()
    );
    let v = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Tensor::from_f32(shape.to_vec(), v).expect("shape")
}

/// Runs the standalone program in `sa` (`runner`: e.g. `qemu-aarch64`) on `x` with the default
/// weights path (../weights.safetensors) and returns its logits.
fn run_standalone(sa: &Path, runner: Option<&str>, x: &Tensor, logits_shape: &[usize]) -> Tensor {
    write_raw(&sa.join("input.bin"), x);
    let _ = std::fs::remove_file(sa.join("logits.bin"));
    let mut cmd = match runner {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg("./model");
            c
        }
        None => Command::new(sa.join("model")),
    };
    cmd.args(["input.bin", "logits.bin"]).current_dir(sa);
    run_checked(&mut cmd, "the standalone program");
    read_raw(&sa.join("logits.bin"), logits_shape)
}

/// The logits the runtime computes with the bundle in `dir`.
fn runtime_logits(dir: &Path, x: &Tensor) -> Tensor {
    let bundle = Bundle::load(dir, &LoadOptions::default()).expect("the bundle loads");
    let mut engine = Engine::new(bundle, 2);
    let out = engine
        .run(&BTreeMap::from([("input".to_string(), x.clone())]))
        .expect("the runtime runs");
    out["logits"].clone()
}

fn interp_logits(model: &Model, x: &Tensor) -> Tensor {
    let feed = BTreeMap::from([("input".to_string(), x.clone())]);
    let w = model.weights.as_ref().expect("weights");
    interp::run(&model.net.graph, w, &feed, &[]).expect("the interpreter runs")["logits"].clone()
}

fn l2(got: &Tensor, want: &Tensor, what: &str) -> f64 {
    relative_error_l2(got, want)
        .unwrap_or_else(|| panic!("{what}: shape {:?} vs {:?}", got.shape(), want.shape()))
}

/// The small nets of the host test: (name, config, density, deep supervision).
fn small_cases() -> Vec<(&'static str, ModelConfig, f64, bool)> {
    let a = ModelConfig::small(3, 4, 1, true);
    let mut b = ModelConfig::small(3, 6, 3, false);
    // W = 12: deeper levels are not multiples of 8; logits are not the only output.
    b.patch_size = [2, 8, 12];
    vec![("iso-w4", a, 0.5, false), ("aniso-w6-ds", b, 0.3, true)]
}

/// The first small case compiled once for the host (shared by the bad-input test).
fn shared_small() -> &'static (Model, PathBuf) {
    static B: OnceLock<(Model, PathBuf)> = OnceLock::new();
    B.get_or_init(|| {
        let (_, cfg, density, ds) = small_cases().remove(0);
        let model = small_model(cfg, density, 11);
        let out = common::scratch().join("standalone-small");
        compile_standalone(&model, &out, Target::native(), ds);
        build_standalone(
            &out.join("standalone"),
            &Target::native().standalone_build_line(),
        );
        (model, out)
    })
}

#[test]
fn host_standalone_small_nets_match_interpreter_and_runtime() {
    let target = Target::native();
    let line = target.standalone_build_line();
    for (k, (name, cfg, density, ds)) in small_cases().into_iter().enumerate() {
        let seed = 11 + 10 * k as u64;
        let owned;
        let (model, dir): (&Model, PathBuf) = if k == 0 {
            let (m, d) = shared_small();
            (m, d.clone())
        } else {
            owned = small_model(cfg, density, seed);
            let t = common::scratch().join(format!("standalone-{name}"));
            compile_standalone(&owned, &t, target, ds);
            build_standalone(&t.join("standalone"), &line);
            (&owned, t)
        };
        let sa = dir.join("standalone");
        let readme = std::fs::read_to_string(sa.join("README.md")).expect("README.md");
        assert!(
            readme.contains(&line),
            "README.md lacks `{line}`:\n{readme}"
        );
        let x = input_of(model, seed ^ 0x55);
        let want = interp_logits(model, &x);
        let got = run_standalone(&sa, None, &x, want.shape());
        let e_interp = l2(&got, &want, name);
        let e_runtime = l2(&got, &runtime_logits(&dir, &x), name);
        eprintln!(
            "{name} ({target}): standalone vs interpreter L2-relative {e_interp:.2e}, vs runtime {e_runtime:.2e}"
        );
        assert!(e_interp < 1e-5, "{name}: vs interpreter {e_interp:e}");
        assert!(e_runtime < 1e-6, "{name}: vs runtime {e_runtime:e}");
    }
}

/// The released-network golden model and its stored input and outputs.
fn golden() -> (Model, Weights) {
    let dir = common::repo().join("tests/data/golden");
    let model =
        Model::load(&dir.join("model.json"), &BuildOptions::default()).expect("golden loads");
    let io = Weights::load(&dir.join("io.safetensors")).expect("io.safetensors");
    (model, io)
}

#[test]
fn host_standalone_golden_matches_pytorch_and_runtime() {
    let (model, io) = golden();
    let x = (**io.get("input").expect("input")).clone();
    let want = (**io.get("ds0").expect("ds0")).clone();
    let out = common::scratch().join("standalone-golden");
    let target = Target::native();
    compile_standalone(&model, &out, target, false);
    let sa = out.join("standalone");
    build_standalone(&sa, &target.standalone_build_line());
    let got = run_standalone(&sa, None, &x, want.shape());
    let e_torch = l2(&got, &want, "golden");
    let e_runtime = l2(&got, &runtime_logits(&out, &x), "golden");
    eprintln!(
        "golden ({target}): standalone vs PyTorch L2-relative {e_torch:.2e}, vs runtime {e_runtime:.2e}"
    );
    assert!(e_torch < 1e-4, "golden vs PyTorch: {e_torch:e}");
    assert!(e_runtime < 1e-6, "golden vs runtime: {e_runtime:e}");
}

#[test]
fn host_standalone_bf16_golden_matches_runtime_or_is_refused() {
    // A `--precision bf16` x86-avx512 program: on a CPU with avx512_bf16 it computes what the
    // runtime computes with the same bundle; on one without, it refuses before running any
    // kernel, naming the missing feature (no illegal instruction).
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("note: not an x86_64 host: the bf16 standalone program is not checked");
        return;
    }
    let (model, io) = golden();
    let x = (**io.get("input").expect("input")).clone();
    let shape = io.get("ds0").expect("ds0").shape().to_vec();
    let out = common::scratch().join("standalone-golden-bf16");
    let opts = CompileOptions {
        isa: Target::X86Avx512,
        precision: Some(e2enc_codegen::precision::Precision::Bf16),
        standalone: true,
        force: true,
        ..CompileOptions::default()
    };
    compile(&model, &out, &opts).expect("compile --precision bf16 --standalone");
    let sa = out.join("standalone");
    build_standalone(&sa, &Target::X86Avx512.standalone_build_line());
    let bf16 = ["avx512f", "avx512bw", "avx512bf16"]
        .iter()
        .all(|f| e2enc_codegen::target::host_has(f) == Some(true));
    if bf16 {
        let got = run_standalone(&sa, None, &x, &shape);
        let e = l2(&got, &runtime_logits(&out, &x), "golden bf16");
        eprintln!("golden bf16: standalone vs runtime L2-relative {e:.2e}");
        assert!(e < 1e-6, "golden bf16 vs runtime: {e:e}");
    } else {
        write_raw(&sa.join("input.bin"), &x);
        let (code, err) = run_bad(&sa, &["input.bin", "logits.bin"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("this CPU lacks avx512"), "{err}");
    }
}

/// Runs the shared small program with `args` in its folder; returns (exit code, stderr).
fn run_bad(sa: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(sa.join("model"))
        .args(args)
        .current_dir(sa)
        .output()
        .expect("start the standalone program");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn standalone_rejects_bad_weights_and_inputs() {
    let (model, dir) = shared_small();
    let sa = dir.join("standalone");
    let t = common::tempdir();
    let x = input_of(model, 3);
    let good_in = t.path().join("in.bin");
    write_raw(&good_in, &x);
    let good_in = good_in.to_str().expect("utf-8 path");
    let logits = t.path().join("logits.bin");
    let logits = logits.to_str().expect("utf-8 path");
    let weights = std::fs::read(dir.join("weights.safetensors")).expect("weights");
    let expect_error = |args: &[&str], needle: &str, what: &str| {
        let (code, stderr) = run_bad(&sa, args);
        assert_eq!(
            code,
            Some(1),
            "{what}: exit status {code:?} (a crash has none), stderr:\n{stderr}"
        );
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{what}: stderr lacks `{needle}`:\n{stderr}"
        );
    };

    // The good case, with the weights named explicitly.
    let wpath = dir.join("weights.safetensors");
    let (code, stderr) = run_bad(&sa, &[wpath.to_str().expect("utf-8"), good_in, logits]);
    assert_eq!(code, Some(0), "{stderr}");

    // Truncated weights: half the file, and all but one byte.
    for keep in [weights.len() / 2, weights.len() - 1, 5] {
        let p = t.path().join(format!("trunc{keep}.safetensors"));
        std::fs::write(&p, &weights[..keep]).expect("write");
        expect_error(
            &[p.to_str().expect("utf-8"), good_in, logits],
            "truncated",
            &format!("weights truncated to {keep} bytes"),
        );
    }
    // A foreign file of exactly the right size: another header length, then another header.
    let mut foreign = weights.clone();
    foreign[0] ^= 8;
    let p = t.path().join("foreign1.safetensors");
    std::fs::write(&p, &foreign).expect("write");
    expect_error(
        &[p.to_str().expect("utf-8"), good_in, logits],
        "header length",
        "a foreign header length",
    );
    let mut foreign = weights.clone();
    foreign[12] ^= 1;
    let p = t.path().join("foreign2.safetensors");
    std::fs::write(&p, &foreign).expect("write");
    expect_error(
        &[p.to_str().expect("utf-8"), good_in, logits],
        "header differs",
        "a foreign header",
    );
    expect_error(
        &["/nonexistent/weights.safetensors", good_in, logits],
        "cannot open weights file",
        "missing weights",
    );

    // Inputs one float short, one byte long, empty (weights from ../weights.safetensors).
    let raw = std::fs::read(good_in).expect("read");
    for (len, what) in [
        (raw.len() - 4, "one float short"),
        (raw.len() + 1, "one byte long"),
        (0, "empty"),
    ] {
        let p = t.path().join(format!("in{len}.bin"));
        let mut b = raw.clone();
        b.resize(len, 0);
        std::fs::write(&p, &b).expect("write");
        expect_error(
            &[p.to_str().expect("utf-8"), logits],
            "this model takes exactly",
            &format!("input {what}"),
        );
    }
    expect_error(
        &["/nonexistent/in.bin", logits],
        "cannot open input",
        "missing input",
    );
    let (code, stderr) = run_bad(&sa, &[]);
    assert_eq!(code, Some(2), "no arguments: {stderr}");
    assert!(stderr.contains("usage:"), "{stderr}");
}

/// Whether `tool --version` runs.
fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const CC: &str = "aarch64-linux-gnu-gcc";
const QEMU: &str = "qemu-aarch64";

/// Whether the aarch64 cross compiler and qemu are here; panics naming the Debian packages when
/// they are not, unless `E2ENC_SKIP_AARCH64=1` (then false: skip).
fn aarch64_tools() -> bool {
    let missing: Vec<&str> = [(CC, "gcc-aarch64-linux-gnu"), (QEMU, "qemu-user")]
        .into_iter()
        .filter(|(tool, _)| !have(tool))
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "the aarch64 standalone tests need `{CC}` and `{QEMU}`: install the Debian packages {} \
         (apt-get install {}), or set E2ENC_SKIP_AARCH64=1 to skip these tests locally",
        missing.join(" and "),
        missing.join(" ")
    );
    if std::env::var("E2ENC_SKIP_AARCH64").is_ok_and(|v| v == "1") {
        eprintln!("skipped: {msg}");
        return false;
    }
    panic!("{msg}");
}

/// The released network compiled for aarch64-neon, built with the standalone README's line and
/// run under qemu-aarch64, reproduces the released PyTorch outputs.
#[test]
fn aarch64_golden_under_qemu_matches_pytorch() {
    if !aarch64_tools() {
        return;
    }
    let (model, io) = golden();
    let x = (**io.get("input").expect("input")).clone();
    let want = (**io.get("ds0").expect("ds0")).clone();
    let out = common::scratch().join("standalone-golden-neon");
    let target = Target::Aarch64Neon;
    compile_standalone(&model, &out, target, false);
    let sa = out.join("standalone");
    build_standalone(&sa, &target.standalone_build_line());
    let got = run_standalone(&sa, Some(QEMU), &x, want.shape());
    let e_torch = l2(&got, &want, "golden");
    eprintln!("golden ({target}, qemu-aarch64): standalone vs PyTorch L2-relative {e_torch:.2e}");
    assert!(e_torch < 1e-4, "golden on aarch64 vs PyTorch: {e_torch:e}");
}

#[test]
fn aarch64_standalone_under_qemu_matches_interpreter() {
    if !aarch64_tools() {
        return;
    }
    let mut cfg = ModelConfig::small(3, 4, 3, false);
    cfg.patch_size = [2, 4, 12];
    let model = small_model(cfg, 0.5, 23);
    let x = input_of(&model, 29);
    let want = interp_logits(&model, &x);
    // The portable bundle also runs on this host: the runtime's logits of it are the reference
    // for both cross-compiled programs.
    let mut runtime: Option<Tensor> = None;
    for target in [Target::Portable, Target::Aarch64Neon] {
        let out = common::scratch().join(format!("standalone-{target}"));
        compile_standalone(&model, &out, target, false);
        let sa = out.join("standalone");
        let line = match target {
            Target::Aarch64Neon => target.standalone_build_line(),
            _ => format!(
                "{CC} -static {} model.c main.c -o model -lm",
                target.standalone_cflags().join(" ")
            ),
        };
        let readme = std::fs::read_to_string(sa.join("README.md")).expect("README.md");
        assert!(
            readme.contains(&line),
            "README.md lacks `{line}`:\n{readme}"
        );
        build_standalone(&sa, &line);
        let got = run_standalone(&sa, Some(QEMU), &x, want.shape());
        if target.host_supports() {
            runtime = Some(runtime_logits(&out, &x));
        }
        let e_interp = l2(&got, &want, target.name());
        let e_runtime = l2(
            &got,
            runtime.as_ref().expect("portable ran first"),
            "runtime",
        );
        eprintln!(
            "{target} on qemu-aarch64: standalone vs interpreter L2-relative {e_interp:.2e}, vs runtime (portable, host) {e_runtime:.2e}"
        );
        assert!(e_interp < 1e-5, "{target}: vs interpreter {e_interp:e}");
        assert!(e_runtime < 1e-5, "{target}: vs runtime {e_runtime:e}");
    }
}
