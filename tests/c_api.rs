//! The C ABI from C: builds `examples/c_api/main.c` against the `libe2enc_runtime.so` cargo
//! built for this test run, runs it on the compiled ch1 fixture and checks that the shapes it
//! prints are the manifest's and that its checksums of the logits equal those of the Rust API on
//! the same input; a tampered or missing bundle makes it fail with the loader's message.

#[path = "bundle_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use e2enc::TensorEngine;
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::exec::Engine;

/// The folder holding the cdylib built with this test: `target/<profile>/deps` (next to this
/// executable) or `target/<profile>`; the newer one wins.
fn cdylib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("deps folder").to_path_buf();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = [
        deps.clone(),
        deps.parent().expect("profile folder").to_path_buf(),
    ]
    .into_iter()
    .filter_map(|d| {
        let t = std::fs::metadata(d.join("libe2enc_runtime.so"))
            .and_then(|m| m.modified())
            .ok()?;
        Some((t, d))
    })
    .collect();
    found.sort();
    found
        .pop()
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("no libe2enc_runtime.so in {} or its parent", deps.display()))
}

/// The demo, compiled once into this binary's scratch folder.
fn demo() -> &'static (PathBuf, PathBuf) {
    static DEMO: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DEMO.get_or_init(|| {
        let lib = cdylib_dir();
        let out = common::scratch().join("demo");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let repo = common::repo();
        let o = Command::new(&cc)
            .args(["-std=c11", "-O2", "-Wall", "-Wextra"])
            .arg(repo.join("examples/c_api/main.c"))
            .arg("-I")
            .arg(repo.join("runtime/include"))
            .arg("-L")
            .arg(&lib)
            .arg("-le2enc_runtime")
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
        assert!(
            o.status.success(),
            "building the C example failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        (out, lib)
    })
}

fn run_demo(bundle: &Path, threads: &str) -> Output {
    run_demo_env(bundle, threads, &[])
}

/// The demo with the tests' local key (`E2ENC_HOME`) and the environment `env` added.
fn run_demo_env(bundle: &Path, threads: &str, env: &[(&str, &Path)]) -> Output {
    let (exe, lib) = demo();
    Command::new(exe)
        .arg(bundle)
        .arg(threads)
        .env("LD_LIBRARY_PATH", lib)
        .env("E2ENC_HOME", common::home())
        .env_remove("E2ENC_TRUSTED_KEYS")
        .env_remove("E2ENC_TRUST_UNSIGNED")
        .envs(env.iter().copied())
        .output()
        .expect("run the demo")
}

#[test]
fn c_example_prints_the_rust_apis_shapes_and_checksums() {
    let bundle = common::shared_ch1();
    let b = Bundle::load(bundle, &LoadOptions::default()).expect("load the bundle");
    let m = b.manifest.clone();
    let mut e = Engine::new(b, 1);
    let x = common::demo_input(&m.inputs[0].shape);
    let y = e.run(&common::feed(&x)).expect("run via the Rust API");
    let (sum, fnv) = common::demo_checksum(y[&m.outputs[0].name].as_f32().expect("f32 logits"));

    let mut want = Vec::new();
    for (kind, ports) in [("input", &m.inputs), ("output", &m.outputs)] {
        for (i, p) in ports.iter().enumerate() {
            let dims: Vec<String> = p.shape.iter().map(|d| d.to_string()).collect();
            want.push(format!("{kind} {i}: [{}]", dims.join(", ")));
        }
    }
    for threads in ["1", "2"] {
        let o = run_demo(bundle, threads);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "demo failed ({:?}):\n{stdout}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[..want.len()], want[..], "shapes printed by the demo");
        let field = |key: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(key).map(str::trim))
                .unwrap_or_else(|| panic!("the demo printed no `{key}` line:\n{stdout}"))
        };
        let c_sum: f64 = field("sum ").parse().expect("sum is a number");
        assert_eq!(
            c_sum.to_bits(),
            sum.to_bits(),
            "sum of the logits: C {c_sum} vs Rust {sum} ({threads} threads)"
        );
        assert_eq!(
            field("fnv1a "),
            format!("{fnv:016x}"),
            "hash of the logits ({threads} threads)"
        );
    }
}

#[test]
fn c_example_reports_load_errors() {
    let t = common::tempdir();
    let tampered = t.path().join("bundle");
    common::copy_dir(common::shared_ch1(), &tampered);
    let so = tampered.join("kernels.so");
    let mut bytes = std::fs::read(&so).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    std::fs::write(&so, bytes).unwrap();
    for (dir, want) in [
        (tampered, "kernels.so does not match its checksum"),
        (t.path().join("missing"), "cannot read manifest.json"),
    ] {
        let o = run_demo(&dir, "0");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(1),
            "demo on {}: {stderr}",
            dir.display()
        );
        assert!(
            stderr.contains(want),
            "demo on {}: `{stderr}` does not mention `{want}`",
            dir.display()
        );
        assert!(
            o.stdout.is_empty(),
            "the demo printed results for a bad bundle"
        );
    }
}

/// The C ABI checks signatures as the command line does, from the environment (see e2enc.h): a
/// bundle signed by a key not trusted there is refused naming the key, until $E2ENC_TRUSTED_KEYS
/// lists it; an edited manifest is refused even with E2ENC_TRUST_UNSIGNED=1; an unsigned bundle
/// loads only with it.
#[test]
fn c_abi_refuses_bundles_without_a_trusted_signature() {
    let t = common::tempdir();
    let good = common::shared_ch1();
    let (key, _) = e2enc_codegen::keys::local_key().expect("the tests' local key");
    let fp = key.public().fingerprint();
    let one = Path::new("1");
    let expect = |o: &Output, ok: bool, want: &str, what: &str| {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), ok, "{what}: {stderr}");
        assert!(stderr.contains(want), "{what}: `{stderr}` lacks `{want}`");
    };
    expect(&run_demo_env(good, "1", &[]), true, "", "the signed bundle");

    // Another user's home: no local key, no trusted keys.
    let other = t.path().join("other-home");
    let o = run_demo_env(good, "1", &[("E2ENC_HOME", &other)]);
    expect(&o, false, &fp, "another user");
    expect(&o, false, "not trusted", "another user");
    let list = t.path().join("trusted");
    std::fs::write(&list, format!("# the tests\n{}\n", key.public().line())).unwrap();
    let o = run_demo_env(
        good,
        "1",
        &[("E2ENC_HOME", &other), ("E2ENC_TRUSTED_KEYS", &list)],
    );
    expect(&o, true, "", "another user trusting the key");

    let edited = t.path().join("edited");
    common::copy_dir(good, &edited);
    let m = edited.join("manifest.json");
    let mut bytes = std::fs::read(&m).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&m, bytes).unwrap();
    let o = run_demo_env(&edited, "1", &[("E2ENC_TRUST_UNSIGNED", one)]);
    expect(&o, false, "does not verify", "an edited manifest");

    let unsigned = t.path().join("unsigned");
    common::copy_dir(good, &unsigned);
    std::fs::remove_file(unsigned.join("manifest.sig")).unwrap();
    let o = run_demo_env(&unsigned, "1", &[]);
    expect(&o, false, "E2ENC_TRUST_UNSIGNED=1", "an unsigned bundle");
    let o = run_demo_env(&unsigned, "1", &[("E2ENC_TRUST_UNSIGNED", one)]);
    expect(&o, true, "", "an unsigned bundle, trusted explicitly");
}

/// A CUDA bundle through the C ABI: `e2enc_load` refuses it naming `--emulate`, and
/// `e2enc_load_on(dir, "emulate", ...)` runs it on the host emulation with the Rust API's exact
/// checksums; `"cuda:0"` without a GPU is a clear error, not a crash.
#[test]
fn c_abi_loads_cuda_bundles_on_a_device() {
    if !common::nvrtc_or_skip("c_abi_loads_cuda_bundles_on_a_device") {
        return;
    }
    let t = common::tempdir();
    let dir = t.path().join("cuda");
    let opts = e2enc_codegen::compile::CompileOptions {
        isa: e2enc_codegen::target::Target::CudaSm90,
        precision: Some(e2enc_codegen::precision::Precision::F32),
        ..Default::default()
    };
    e2enc_codegen::compile::compile(&common::ch1_model(), &dir, &opts).expect("compile");
    let emulate = LoadOptions {
        emulate: true,
        ..LoadOptions::default()
    };
    let b = Bundle::load(&dir, &emulate).expect("load emulated");
    let m = b.manifest.clone();
    let mut e = Engine::try_new(b, 1).expect("engine");
    let x = common::demo_input(&m.inputs[0].shape);
    let y = e.run(&common::feed(&x)).expect("run via the Rust API");
    let (_, fnv) = common::demo_checksum(y[&m.outputs[0].name].as_f32().expect("f32 logits"));

    let o = run_demo(&dir, "1");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("--emulate"),
        "{stderr}"
    );

    let o = run_demo_env(&dir, "2", &[("E2ENC_DEVICE", Path::new("emulate"))]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains(&format!("fnv1a {fnv:016x}")), "{stdout}");

    let o = run_demo_env(&dir, "1", &[("E2ENC_DEVICE", Path::new("cuda:0"))]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !Path::new("/proc/driver/nvidia").exists() {
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("CUDA"), "{stderr}");
    }
    let o = run_demo_env(&dir, "1", &[("E2ENC_DEVICE", Path::new("tpu"))]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown device"));
}
