//! Helpers shared by the bundle tests (bundles compiled by codegen, run by the runtime): fixture
//! paths, scratch folders under cargo's `CARGO_TARGET_TMPDIR`, compiling the ch1-shift5 fixture,
//! and tensor comparisons.
//!
//! Compiling runs the C compiler (seconds), so each test binary compiles the fixture once
//! ([`shared_ch1`]) and tests that alter a bundle work on copies. The shared bundle lives as long
//! as the process (statics are never dropped), so its folder is named after the process id and
//! folders of processes that are gone are removed when the next run starts.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use e2enc_codegen::compile::{compile, CompileOptions, CompileReport};
use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_ir::tensor::relative_error;
use e2enc_ir::{Tensor, Weights};

/// The workspace root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The numpy-reference fixture with one input channel and five shift groups.
pub fn ch1_dir() -> PathBuf {
    repo().join("tests/data/numpy-ref/ch1-shift5")
}

/// The fixture's `io.safetensors`: `input` and the expected `ds0..ds3`.
pub fn ch1_io() -> Weights {
    Weights::load(&ch1_dir().join("io.safetensors")).expect("io.safetensors loads")
}

/// The fixture's model (batch 1, its own 32^3 patch).
pub fn ch1_model() -> Model {
    Model::load(&ch1_dir().join("model.json"), &BuildOptions::default()).expect("ch1 model loads")
}

/// `{"input": t}`.
pub fn feed(t: &Tensor) -> BTreeMap<String, Tensor> {
    BTreeMap::from([("input".to_string(), t.clone())])
}

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// This binary's scratch folder (created on first use; stale ones of dead processes removed).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2enc-runtime-tests");
        std::fs::create_dir_all(&root).expect("create the scratch root");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.rsplit('-').next() {
                    if pid.chars().all(|c| c.is_ascii_digit()) && !pid_alive(pid) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let exe = std::env::current_exe().ok();
        let stem = exe
            .as_deref()
            .and_then(|p| p.file_stem())
            .map(|s| {
                s.to_string_lossy()
                    .split('-')
                    .next()
                    .unwrap_or("test")
                    .to_string()
            })
            .unwrap_or_else(|| "test".into());
        // The local signing key of these tests (shared by the test binaries; see `home`).
        e2enc_runtime::sign::set_config_dir(&home());
        let dir = root.join(format!("{stem}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        dir
    })
}

/// The config folder (local signing key) of the bundle tests, set for this process by
/// [`scratch`] (as `$E2ENC_HOME` would; child processes get `E2ENC_HOME`): never the real home's.
pub fn home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2enc-test-home")
}

/// Signs the manifest of `dir` again with the tests' local key, as its maker would after
/// editing it (to test what the runtime checks besides the signature).
pub fn resign(dir: &Path) {
    scratch();
    let (key, _) = e2enc_codegen::keys::local_key().expect("the tests' local key");
    let m = std::fs::read(dir.join("manifest.json")).expect("read manifest.json");
    std::fs::write(dir.join("manifest.sig"), key.sign_manifest(&m)).expect("write manifest.sig");
}

/// A fresh temporary folder inside [`scratch`], removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("t")
        .tempdir_in(scratch())
        .expect("create a temporary folder")
}

/// Compiles the ch1 fixture with deep supervision into `out` (replacing it).
pub fn compile_ch1(out: &Path) -> CompileReport {
    let opts = CompileOptions {
        deep_supervision: true,
        force: true,
        ..CompileOptions::default()
    };
    compile(&ch1_model(), out, &opts).unwrap_or_else(|e| panic!("compiling ch1 failed: {e}"))
}

/// The ch1 fixture compiled once per test binary, with deep supervision. Do not modify it.
pub fn shared_ch1() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let out = scratch().join("ch1");
        compile_ch1(&out);
        out
    })
}

/// Copies the regular files of `src` into a new folder `dst`.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create the copy");
    for e in std::fs::read_dir(src).expect("read the bundle") {
        let e = e.expect("entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy a file");
        }
    }
}

/// [`relative_error`] (max |diff| / max |want|), panicking on a shape or dtype mismatch.
pub fn rel(got: &Tensor, want: &Tensor, what: &str) -> f64 {
    relative_error(got, want).unwrap_or_else(|| {
        panic!(
            "{what}: shape {:?} vs expected {:?}",
            got.shape(),
            want.shape()
        )
    })
}

/// Whether two tensors are equal bit for bit (same shape, dtype and every value's bits).
pub fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.shape() == b.shape()
        && match (a.as_f32(), b.as_f32()) {
            (Some(x), Some(y)) => x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            (None, None) => a.as_i32() == b.as_i32(),
            _ => false,
        }
}

/// Asserts that two output maps hold the same names and bit-identical tensors.
pub fn assert_same_outputs(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: output names"
    );
    for (k, t) in a {
        assert!(same_bits(t, &b[k]), "{what}: output `{k}` differs");
    }
}

/// The deterministic input the C example feeds: `((i * 37) % 101) / 50 - 1`, in f32.
pub fn demo_input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0f32 - 1.0f32)
        .collect();
    Tensor::from_f32(shape.to_vec(), v).expect("shape matches")
}

/// The checksums the C example prints for an output: the sum in f64 (in order) and the
/// FNV-1a 64 hash of the values' little-endian bytes.
pub fn demo_checksum(v: &[f32]) -> (f64, u64) {
    let sum = v.iter().fold(0.0f64, |s, x| s + *x as f64);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in v {
        for b in x.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (sum, h)
}

/// Whether NVRTC (which CUDA bundles need) can be loaded; without it a test prints SKIP and
/// returns false, unless `E2ENC_REQUIRE_NVRTC=1` (CI sets it after fetching NVRTC), where it
/// fails.
pub fn nvrtc_or_skip(test: &str) -> bool {
    match e2enc_codegen::cuda::Toolchain::load() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var("E2ENC_REQUIRE_NVRTC").as_deref() != Ok("1"),
                "{test}: E2ENC_REQUIRE_NVRTC=1 but NVRTC is not available: {e}"
            );
            eprintln!("SKIP {test}: {e}");
            false
        }
    }
}

/// bf16's math, simulated: the interpreter on `model` with the input activations and weights of
/// every conv that `bf16_conv` says its bf16 kernels compute (the CUDA backend's tensor-core
/// convs, the CPU's 3x3 stride-1 convs) rounded to bf16 to nearest even, everything else in
/// f32/f64, as the bf16 kernels are documented to compute (`examples/mma_rounding.rs` prints
/// more). The logits.
pub fn simulated_bf16(
    model: &Model,
    x: &Tensor,
    bf16_conv: &dyn Fn(&e2enc_ir::op::ConvAttrs) -> bool,
) -> Tensor {
    simulated_bf16_with(model, x, bf16_conv, false)
}

/// [`simulated_bf16`], with `stored`: activations stored as bf16 too (a CPU bf16 bundle's
/// arena), i.e. the outputs of every leaky ReLU (the normalized activations), max pooling and
/// transposed conv (the upsamplings) rounded, the graph's outputs not. (The raw conv outputs
/// a bundle stores less a per-tile shift before normalizing them are not modelled: their
/// rounding is that of values near their tile's mean.)
pub fn simulated_bf16_with(
    model: &Model,
    x: &Tensor,
    bf16_conv: &dyn Fn(&e2enc_ir::op::ConvAttrs) -> bool,
    stored: bool,
) -> Tensor {
    use e2enc_ir::interp::ops;
    use e2enc_ir::op::Op;
    use std::borrow::Cow;
    use std::collections::HashMap;
    let bf16 = |v: f32| {
        let b = v.to_bits();
        let (keep, rest) = (b & 0xffff_0000, b & 0xffff);
        let up = rest > 0x8000 || (rest == 0x8000 && keep & 0x1_0000 != 0);
        f32::from_bits(if up { keep + 0x1_0000 } else { keep })
    };
    let round = |t: &Tensor| {
        Tensor::from_f32(
            t.shape().to_vec(),
            t.as_f32().unwrap().iter().map(|&v| bf16(v)).collect(),
        )
        .unwrap()
    };
    let (g, w) = (&model.net.graph, model.require_weights().unwrap());
    let mut vals: HashMap<_, Cow<'_, Tensor>> = HashMap::new();
    let mut rounded = 0;
    for id in g.topo_order().unwrap() {
        let v = match &g.node(id).op {
            Op::Input { .. } => Cow::Borrowed(x),
            Op::Weight { name } => Cow::Borrowed(&**w.get(name).unwrap()),
            op => {
                let mut args: Vec<&Tensor> =
                    g.operands(id).iter().map(|o| vals[o].as_ref()).collect();
                let (xr, wr);
                if matches!(op, Op::Conv3d(c) if bf16_conv(c)) {
                    rounded += 1;
                    (xr, wr) = (round(args[0]), round(args[1]));
                    args[0] = &xr;
                    args[1] = &wr;
                }
                let y = ops::eval(op, &args).unwrap();
                let kept = matches!(
                    op,
                    Op::LeakyRelu { .. } | Op::MaxPool3d(_) | Op::ConvTranspose3d(_)
                );
                if stored && kept && !g.outputs().iter().any(|(_, o)| *o == id) {
                    Cow::Owned(round(&y))
                } else {
                    Cow::Owned(y)
                }
            }
        };
        vals.insert(id, v);
    }
    assert!(rounded > 0, "no conv computes in bf16");
    let (_, out) = g.outputs().iter().find(|(n, _)| n == "logits").unwrap();
    vals[out].as_ref().clone()
}

/// The fraction of voxels whose argmax over classes (axis 1 of `[n, c, ...]`) agrees.
pub fn argmax_agreement(a: &Tensor, b: &Tensor) -> f64 {
    let s = a.shape();
    let (n, c, vox) = (s[0], s[1], s[2..].iter().product::<usize>());
    let (av, bv) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    let am = |v: &[f32], nn: usize, i: usize| {
        (0..c)
            .max_by(|&p, &q| v[(nn * c + p) * vox + i].total_cmp(&v[(nn * c + q) * vox + i]))
            .unwrap()
    };
    let mut same = 0;
    for nn in 0..n {
        same += (0..vox).filter(|&i| am(av, nn, i) == am(bv, nn, i)).count();
    }
    same as f64 / (n * vox) as f64
}
