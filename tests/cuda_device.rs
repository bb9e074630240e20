//! `--device cuda` through the `e2enc` binary on a host without a GPU: a CUDA bundle is refused
//! with a clear message and a non-zero exit (no CUDA driver here, or no CUDA support in this
//! build), never a panic and never an output file; a CPU bundle on `--device cuda` and a CUDA
//! bundle on the CPU are refused naming the way out.

mod common;
#[path = "../runtime/tests/fake_cuda/mod.rs"]
mod fake_cuda;

use common::{e2enc, text};

use e2enc_ir::{Tensor, Weights};

fn has_driver() -> bool {
    std::path::Path::new("/proc/driver/nvidia").exists()
}

fn write_input(path: &std::path::Path) {
    let n: usize = fake_cuda::SHAPE.iter().product();
    let mut w = Weights::new();
    let x = Tensor::from_f32(fake_cuda::SHAPE.to_vec(), vec![0.5; n]).unwrap();
    w.insert("input", x);
    w.save(path).unwrap();
}

/// What `--device cuda` must say on this host and build.
fn assert_no_gpu_message(t: &str) {
    assert!(!t.contains("panicked"), "{t}");
    if cfg!(feature = "cuda") {
        if !has_driver() {
            assert!(
                t.contains("no CUDA driver found (libcuda.so.1)") && t.contains("--emulate"),
                "{t}"
            );
        }
    } else {
        assert!(
            t.contains("no CUDA support") && t.contains("--features cuda"),
            "{t}"
        );
    }
}

#[test]
fn run_and_bench_on_cuda_fail_clearly_without_a_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("b");
    fake_cuda::write_cuda_bundle(&b);
    let x = tmp.path().join("x.safetensors");
    write_input(&x);
    let y = tmp.path().join("y.safetensors");
    let (bs, xs, ys) = (
        b.to_str().unwrap(),
        x.to_str().unwrap(),
        y.to_str().unwrap(),
    );
    for device in ["cuda", "cuda:0"] {
        let o = e2enc(&[
            "run",
            bs,
            "--input",
            xs,
            "--output",
            ys,
            "--device",
            device,
            "--trust-unsigned",
        ]);
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert_no_gpu_message(&t);
        assert!(!y.exists(), "no output is written");
    }
    let o = e2enc(&[
        "bench",
        bs,
        "--runs",
        "1",
        "--device",
        "cuda",
        "--trust-unsigned",
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert_no_gpu_message(&t);

    // The CPU (the default device) refuses the CUDA bundle, naming what to do.
    let o = e2enc(&["run", bs, "--input", xs, "--output", ys, "--trust-unsigned"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("holds CUDA kernels") && t.contains("cuda-sm90"),
        "{t}"
    );

    // A model.json is not a bundle.
    let m = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden/model.json");
    let o = e2enc(&["run", m, "--input", xs, "--output", ys, "--device", "cuda"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("runs compiled bundles") && t.contains("cuda-sm90"),
        "{t}"
    );
}

#[test]
fn device_names_are_checked_and_documented() {
    let o = e2enc(&[
        "run", "b", "--input", "x", "--output", "y", "--device", "gpu",
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("cpu, cuda or cuda:N"), "{t}");
    let o = e2enc(&["bench", "b", "--device", "cuda:x"]);
    assert!(!o.status.success());
    for cmd in ["run", "bench"] {
        let o = e2enc(&[cmd, "--help"]);
        let t = text(&o);
        assert!(t.contains("--device <cpu|cuda|cuda:N>"), "{t}");
    }
}

#[test]
fn a_cpu_bundle_on_cuda_is_refused_naming_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("b");
    let m = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden/model.json");
    let o = e2enc(&[
        "compile",
        m,
        "-o",
        b.to_str().unwrap(),
        "--target",
        "portable",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = e2enc(&[
        "bench",
        b.to_str().unwrap(),
        "--runs",
        "1",
        "--device",
        "cuda",
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("holds CPU kernels") && t.contains("--target cuda-sm90"),
        "{t}"
    );
}
