//! The CUDA device without a GPU: a hand-made CUDA bundle verifies and loads, the CPU engine
//! refuses it, and `Engine::cuda` ends in a clear error, never a panic: "no CUDA driver found"
//! on a host without libcuda (with the `cuda` feature), "no CUDA support" without the feature.
//! On a host with a driver, the placeholder kernels are refused by the driver, by name.

mod fake_cuda;

use e2enc_runtime::bundle::{Bundle, Code, LoadOptions};
use e2enc_runtime::exec::Engine;
use e2enc_runtime::RuntimeError;

fn load(dir: &std::path::Path) -> Bundle {
    let opts = LoadOptions {
        trust_unsigned: true,
        ..LoadOptions::default()
    };
    Bundle::load(dir, &opts).expect("the hand-made CUDA bundle loads")
}

fn has_driver() -> bool {
    // SAFETY: loading the NVIDIA driver library runs its initializers, as any CUDA program does.
    unsafe { libloading::Library::new("libcuda.so.1") }.is_ok()
}

#[test]
fn a_cuda_bundle_loads_and_the_cpu_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("b");
    fake_cuda::write_cuda_bundle(&d);
    let b = load(&d);
    assert!(matches!(b.code, Code::Cuda { .. }));
    assert_eq!(b.w, [0.0, 1.0, 2.0]);
    assert_eq!(b.i, [0, 1]);
    let msg = Engine::try_new(b, 1).err().expect("refused").to_string();
    assert!(
        msg.contains("holds CUDA kernels") && msg.contains("cuda-sm90"),
        "{msg}"
    );
}

#[test]
fn engine_cuda_without_a_gpu_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("b");
    fake_cuda::write_cuda_bundle(&d);
    let e = Engine::cuda(load(&d), 0).err().expect("no engine");
    let RuntimeError::Device { msg } = &e else {
        panic!("not a device error: {e}");
    };
    if !cfg!(feature = "cuda") {
        assert!(
            msg.contains("no CUDA support") && msg.contains("--features cuda"),
            "{msg}"
        );
    } else if !has_driver() {
        assert_eq!(msg, e2enc_runtime::cuda::NO_DRIVER);
        assert!(msg.contains("libcuda.so.1") && msg.contains("--target native"));
    } else {
        // A GPU host: the placeholder CUBIN and PTX cannot load (or the GPU is refused first).
        eprintln!("a CUDA driver is present; the error was: {msg}");
        assert!(!msg.is_empty());
    }
    // A second try is as clear (nothing cached a half-open state).
    let e = Engine::cuda(load(&d), 3).err().expect("no engine");
    assert!(matches!(e, RuntimeError::Device { .. }), "{e}");
}
