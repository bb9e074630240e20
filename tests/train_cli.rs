//! `e2enc demo` and `e2enc train` through the binary, on the real MNI templates at 4 mm and a
//! tiny budget: the demo's five steps all run and leave their files; `train` refuses to clobber a
//! run, resumes a finished one at once, stops cleanly on Ctrl-C with a checkpoint (exit 130),
//! explains bad input (a missing C compiler included) and trains on the portable target on
//! request (a foreign target and the retired Rust kernels are refused); --profile shows where the
//! time went and the step's peak memory; `--precision bf16` trains and stays with its run.

mod common;
use common::{e2enc, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The MNI templates, fetched through PyPI by scripts/fetch-test-data.sh when missing.
fn templates() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/testdata");
    let t1 = dir.join("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz");
    if !t1.is_file() {
        let _ = Command::new("bash")
            .arg(root.join("scripts/fetch-test-data.sh"))
            .status();
    }
    assert!(
        t1.is_file(),
        "scripts/fetch-test-data.sh could not fetch the MNI templates"
    );
    dir
}

#[test]
fn demo_and_train_end_to_end_on_a_tiny_budget() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("demo");
    let data = templates();
    let o = e2enc(&[
        "demo",
        "-o",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--factor",
        "4",
        "--epochs",
        "1",
        "--iters",
        "3",
    ]);
    let s = text(&o);
    // A 3-iteration model is not expected to reach the targets: exit 0 or 2, never a failure.
    assert!(matches!(o.status.code(), Some(0) | Some(2)), "{s}");
    assert!(
        s.contains("held-out right hemisphere: grey matter Dice"),
        "{s}"
    );
    for f in [
        "dataset/dataset.json",
        "run/checkpoint/model.json",
        "run/training.png",
        "bundle/manifest.json",
        "mni_right_pred.nii.gz",
        "preview.png",
        "scores.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing; {s}");
    }

    // e2enc train on the dataset the demo built (default small model, a small patch).
    let ds = out.join("dataset");
    let run = t.path().join("run");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", ds.to_str().unwrap(), "-o", run.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let small = [
        "--patch",
        "16,32,16",
        "--epochs",
        "2",
        "--iters",
        "2",
        "--val-iters",
        "1",
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(args(&small))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("epoch   1"), "{}", text(&o));
    assert!(run.join("checkpoint/state.json").is_file());

    // Again without --resume: refused, nothing changed.
    let before = std::fs::read(run.join("checkpoint/weights.safetensors")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(args(&small))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--resume"), "{}", text(&o));
    // --resume of a finished run ends at once and leaves the weights as they were.
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(args(&["--resume"]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        before,
        std::fs::read(run.join("checkpoint/weights.safetensors")).unwrap()
    );

    // Ctrl-C: a checkpoint and exit status 130.
    let run2 = t.path().join("run2");
    let child = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args([
            "train",
            ds.to_str().unwrap(),
            "-o",
            run2.to_str().unwrap(),
            "--patch",
            "16,32,16",
            "--epochs",
            "1000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let t0 = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(text(&o).contains("--resume"), "{}", text(&o));
    assert!(run2.join("checkpoint/state.json").is_file());

    // Bad input.
    let o = e2enc(&[
        "train",
        "/nonexistent/ds",
        "-o",
        t.path().join("y").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/ds"), "{}", text(&o));
    let o = e2enc(&[
        "train",
        ds.to_str().unwrap(),
        "-o",
        t.path().join("x").to_str().unwrap(),
        "--density",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--density"), "{}", text(&o));

    // The C kernels need a C compiler: a missing one is named, with the way out.
    let tiny = [
        "--patch",
        "16,32,16",
        "--epochs",
        "1",
        "--iters",
        "1",
        "--val-iters",
        "1",
    ];
    let run3 = t.path().join("run3");
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .env("CC", "/nonexistent/cc")
        .args(["train", ds.to_str().unwrap(), "-o", run3.to_str().unwrap()])
        .args(tiny)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let s = text(&o);
    assert!(
        s.contains("/nonexistent/cc") && s.contains("install a C compiler"),
        "{s}"
    );
    // The retired Rust kernels are refused with the way forward, and so is a target this machine
    // cannot run.
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(["train", ds.to_str().unwrap(), "-o", run3.to_str().unwrap()])
        .args(tiny)
        .args(["--kernels", "rust"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--target"), "{}", text(&o));
    let foreign = if cfg!(target_arch = "aarch64") {
        "x86-avx2"
    } else {
        "aarch64-neon"
    };
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(["train", ds.to_str().unwrap(), "-o", run3.to_str().unwrap()])
        .args(tiny)
        .args(["--target", foreign])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let s = text(&o);
    assert!(
        s.contains(foreign) && s.contains("--target portable"),
        "{s}"
    );
    // GPU training: a CUDA target needs a device named; a GPU and the emulation are one or the
    // other; on a machine without a GPU (or driver) `--device cuda` stops with the reason and no
    // checkpoint, never a panic.
    // `e2enc train DATASET -o DIR` on the tiny budget with `extra`.
    let train_in = |dir: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_e2enc"))
            .args(["train", ds.to_str().unwrap(), "-o", dir.to_str().unwrap()])
            .args(tiny)
            .args(extra)
            .output()
            .unwrap()
    };
    let gpu_run = |extra: &[&str]| train_in(&run3, extra);
    let o = gpu_run(&["--target", "cuda-sm90"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--device cuda") && text(&o).contains("--emulate"),
        "{}",
        text(&o)
    );
    let o = gpu_run(&["--device", "cuda", "--emulate"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("pick one"), "{}", text(&o));
    let o = gpu_run(&["--device", "cuda:3"]);
    let s = text(&o);
    assert!(!s.contains("panicked"), "{s}");
    if !o.status.success() {
        assert!(s.contains("CUDA") || s.contains("NVRTC"), "{s}");
        assert!(e2enc_train::checkpoint::find(&run3).is_none());
    }
    // Portable C trains too; --profile prints the per-op table.
    let run4 = t.path().join("run4");
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(["train", ds.to_str().unwrap(), "-o", run4.to_str().unwrap()])
        .args(tiny)
        .args(["--target", "portable", "--profile"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("conv3d"), "{}", text(&o));
    assert!(
        text(&o).contains("memory: a step's values peak at"),
        "{}",
        text(&o)
    );

    // --precision bf16 trains, says so in --profile and in the checkpoint; a resumed run keeps
    // it and refuses another; an unknown precision is refused with the choices.
    let run5 = t.path().join("run5");
    let bf16 = |extra: &[&str]| train_in(&run5, extra);
    let o = bf16(&["--precision", "bf16", "--profile"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("backward pass in bf16"), "{}", text(&o));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run5.join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["options"]["precision"], "bf16", "{state}");
    let o = bf16(&["--resume", "--precision", "f32"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("trained with --precision bf16"),
        "{}",
        text(&o)
    );
    let o = bf16(&["--resume", "--precision", "bf16"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = bf16(&["--precision", "fp16"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("f32 or bf16"), "{}", text(&o));

    // --tensor-cores is GPU training's (refused on the CPU path, and on resuming an f32 run);
    // on the emulated GPU it trains, says so in --profile and in the checkpoint.
    let o = bf16(&["--resume", "--tensor-cores", "tf32"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("trained with f32 convolutions"),
        "{}",
        text(&o)
    );
    let run6 = t.path().join("run6");
    let tf32 = |extra: &[&str]| train_in(&run6, extra);
    let o = tf32(&["--tensor-cores", "tf32"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--device cuda"), "{}", text(&o));
    assert!(!run6.exists(), "a refused run wrote {}", run6.display());
    let o = tf32(&["--tensor-cores", "fp8", "--emulate"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("f32, tf32 or bf16"), "{}", text(&o));
    let o = tf32(&["--tensor-cores", "tf32", "--emulate", "--profile"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("convolutions in tf32"), "{}", text(&o));
    // --profile on the GPU path: the device time of each kind of kernel, the tensor-core convs
    // apart.
    for row in [
        "device time per kind of kernel",
        "conv_backward_weight (tensor cores)",
        "instance_norm",
        "optimizer",
        "loss",
        "the device holds",
    ] {
        assert!(text(&o).contains(row), "no `{row}`: {}", text(&o));
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run6.join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["options"]["conv_math"], "tf32", "{state}");
}
