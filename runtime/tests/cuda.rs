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

/// The smoke case of `scripts/gpu-check.sh` (written to `$E2ENC_GPU_SMOKE_DIR` when set, by
/// `--prepare`): its bundle loads (placeholder CUBIN and PTX, which the GPU machine builds), and
/// its kernels, run here by hand over the arena, give its reference.
#[test]
fn the_gpu_smoke_case() {
    let tmp = tempfile::tempdir().unwrap();
    let case = std::env::var_os("E2ENC_GPU_SMOKE_DIR")
        .map_or_else(|| tmp.path().join("smoke"), std::path::PathBuf::from);
    let _ = std::fs::remove_dir_all(&case);
    fake_cuda::write_smoke_case(&case);
    let b = load(&case.join("cuda"));
    let m = &b.manifest;
    let e = fake_cuda::elems();
    assert_eq!(m.arena_elems, 3 * e);
    assert_eq!(
        (b.w.as_slice(), b.i.as_slice()),
        ([2.0f32].as_slice(), [3].as_slice())
    );
    let source = match &b.code {
        Code::Cuda { source, .. } => source,
        _ => panic!("not a CUDA bundle"),
    };
    assert!(source.contains(&format!("#define E {e}")), "{source}");
    for s in &m.steps {
        let l = s.launch.as_ref().unwrap();
        assert!(
            l.blocks() * l.threads() >= e as u64,
            "{} covers the arena",
            s.kernel
        );
    }

    // The kernels by hand: input at 0, scratch at E, output at 2E.
    let tensor = |f: &str, name: &str| -> Vec<f32> {
        let bytes = std::fs::read(case.join(f)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let [a, z] = [0, 1].map(|k| h[name]["data_offsets"][k].as_u64().unwrap() as usize);
        bytes[8 + n + a..8 + n + z]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let x = tensor("input.safetensors", "input");
    let want = tensor("reference.safetensors", "logits");
    let mut arena = vec![0f32; 3 * e];
    let (vi, vo) = (&m.inputs[0].view, &m.outputs[0].view);
    let [_, _, _, h, w] = vi.shape;
    for y in 0..h {
        for xx in 0..w {
            arena[vi.at(0, 0, 0, y as isize, xx as isize)] = x[y * w + xx];
        }
    }
    for u in 0..e {
        arena[e + u] = arena[u] * b.w[0];
    }
    for t in 0..e {
        arena[2 * e + t] = arena[e + t] * b.i[0] as f32;
    }
    let mut got = Vec::new();
    for y in 0..h {
        for xx in 0..w {
            got.push(arena[vo.at(0, 0, 0, y as isize, xx as isize)]);
        }
    }
    assert_eq!(got, want);
    assert!(
        arena[2 * e..].iter().filter(|v| **v != 0.0).count() <= h * w,
        "zero padding"
    );

    // Without a GPU, the same clear refusal as any CUDA bundle.
    if cfg!(feature = "cuda") && !has_driver() {
        let msg = Engine::cuda(b, 0).err().expect("no GPU").to_string();
        assert_eq!(msg, e2enc_runtime::cuda::NO_DRIVER);
    }
}

/// An engine moves between threads on either device (the CUDA device makes its context current
/// on whichever thread runs it).
#[test]
fn engines_are_send() {
    fn send<T: Send>() {}
    send::<Engine>();
}
