//! A hand-made CUDA bundle (target `cuda-sm90`, one step with a launch, files with correct
//! checksums, `kernels.cu` carrying the plan digest, unsigned): it verifies and loads with
//! `trust_unsigned`, but its CUBIN and PTX are placeholders no GPU loads. Shared by the runtime's
//! tests and the CLI tests (`tests/cuda.rs` includes this file by path).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use e2enc_runtime::format::{
    plan_digest, sha256_hex, Compiler, CudaInfo, Launch, Manifest, Port, Step, FORMAT, VERSION,
};
use e2enc_runtime::layout::View;

/// The input's shape.
pub const SHAPE: [usize; 5] = [1, 1, 1, 2, 2];

/// The manifest of the bundle (files not yet filled in).
pub fn cuda_manifest() -> Manifest {
    let view = View::padded(0, SHAPE);
    let port = |name: &str| Port {
        name: name.into(),
        shape: SHAPE.to_vec(),
        dtype: "f32".into(),
        view: view.clone(),
    };
    Manifest {
        format: FORMAT.into(),
        version: VERSION,
        model: serde_json::json!({}),
        graph: String::new(),
        inputs: vec![port("input")],
        outputs: vec![port("logits")],
        arena_elems: View::elems(SHAPE),
        buffers: vec![],
        steps: vec![Step {
            kernel: "k0_copy".into(),
            tiles: 1,
            first_tile: 0,
            flops: 4,
            what: "0 copy".into(),
            launch: Some(Launch {
                grid: [1, 1, 1],
                block: [32, 1, 1],
                shared_bytes: 0,
                sync: false,
            }),
        }],
        consts_f32: 3,
        consts_i32: 2,
        compiler: Compiler {
            command: "nvrtc".into(),
            version: "12.9".into(),
            flags: vec!["--gpu-architecture=sm_90".into()],
        },
        target: Some("cuda-sm90".into()),
        cpu_features: vec![],
        precision: None,
        cuda: Some(CudaInfo {
            sm: 90,
            nvrtc: "12.9".into(),
            min_driver: 12090,
            precision: "f32".into(),
        }),
        dense_macs: 0,
        executed_macs: 0,
        files: BTreeMap::new(),
    }
}

/// A safetensors file of `(name, dtype, shape, little-endian data)`, written by hand (the
/// format is an 8-byte header length, a JSON header, the data).
pub fn safetensors_bytes(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let at = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, data.len()]}),
        );
    }
    let mut header = serde_json::Value::Object(header).to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `weights.safetensors` with `W` (f32: 0, 1, 2, ...) and `I` (i32: 0, 1, ...) of the manifest's
/// sizes, unless given.
pub fn blobs(m: &Manifest, w: Option<&[f32]>, i: Option<&[i32]>) -> Vec<u8> {
    let w: Vec<f32> = w.map_or_else(
        || (0..m.consts_f32).map(|k| k as f32).collect(),
        <[f32]>::to_vec,
    );
    let i: Vec<i32> = i.map_or_else(
        || (0..m.consts_i32).map(|k| k as i32).collect(),
        <[i32]>::to_vec,
    );
    safetensors_bytes(&[
        ("W", "F32", vec![w.len()], f32_bytes(&w)),
        (
            "I",
            "I32",
            vec![i.len()],
            i.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    ])
}

/// Writes the bundle into `dir` (created), unsigned.
pub fn write_cuda_bundle(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut m = cuda_manifest();
    let source = format!(
        "extern \"C\" __global__ void k0_copy(float *A, const float *W, const int *I) {{}}\n\
         /* e2enc-plan: {} */\n",
        plan_digest(&m)
    );
    let files: [(&str, Vec<u8>); 4] = [
        ("kernels.cu", source.into_bytes()),
        ("kernels.cubin", b"\x7fELF not a real cubin".to_vec()),
        ("kernels.ptx", b"// not real PTX\n".to_vec()),
        ("weights.safetensors", blobs(&m, None, None)),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
        m.files.insert(name.to_string(), sha256_hex(bytes));
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
}

/// Elements of one padded activation of [`SHAPE`].
pub fn elems() -> usize {
    View::elems(SHAPE)
}

/// The GPU smoke bundle: real CUDA kernels whose CUBIN and PTX are built on the GPU machine
/// (`scripts/gpu-check.sh` runs nvcc on `kernels.cu` and writes their checksums into the
/// manifest; here they are placeholders). Input at offset 0, a scratch copy at `E`, the output
/// at `2E` (`E` = [`elems`]); step 0 (`k0_scale`, 64 threads a block, 256 bytes of dynamic
/// shared memory, `__syncthreads`) writes `x * W[0]` to the scratch, step 1 (`k1_times`, 32
/// threads a block) the scratch times `I[0]` to the output: with `W = [2]`, `I = [3]` the output
/// is `6 x`, padding zero. Returns the manifest.
pub fn write_smoke_bundle(dir: &Path) -> Manifest {
    std::fs::create_dir_all(dir).unwrap();
    let e = elems();
    let mut m = cuda_manifest();
    m.inputs[0].view = View::padded(0, SHAPE);
    m.outputs[0].view = View::padded(2 * e, SHAPE);
    m.arena_elems = 3 * e;
    m.consts_f32 = 1;
    m.consts_i32 = 1;
    let blocks = |b: usize| e.div_ceil(b) as u32;
    m.steps = vec![
        Step {
            kernel: "k0_scale".into(),
            tiles: 1,
            first_tile: 0,
            flops: e as u64,
            what: "0 scale by W[0] through shared memory".into(),
            launch: Some(Launch {
                grid: [blocks(64), 1, 1],
                block: [64, 1, 1],
                shared_bytes: 64 * 4,
                sync: true,
            }),
        },
        Step {
            kernel: "k1_times".into(),
            tiles: 1,
            first_tile: 0,
            flops: e as u64,
            what: "1 times I[0]".into(),
            launch: Some(Launch {
                grid: [blocks(32), 1, 1],
                block: [32, 1, 1],
                shared_bytes: 0,
                sync: false,
            }),
        },
    ];
    let source = format!(
        r#"// The GPU smoke bundle of e2enc's runtime tests (runtime/tests/fake_cuda/mod.rs).
#define E {e}
extern "C" __global__ void k0_scale(float *A, const float *W, const int *I) {{
    extern __shared__ float s[];
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = t < E ? A[t] * W[0] : 0.0f;
    __syncthreads();
    int r = blockDim.x - 1 - threadIdx.x;
    int u = blockIdx.x * blockDim.x + r;
    if (u < E) A[E + u] = s[r];
}}
extern "C" __global__ void k1_times(float *A, const float *W, const int *I) {{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < E) A[2 * E + t] = A[E + t] * (float)I[0];
}}
/* e2enc-plan: {} */
"#,
        plan_digest(&m)
    );
    let files: [(&str, Vec<u8>); 4] = [
        ("kernels.cu", source.into_bytes()),
        ("kernels.cubin", b"built on the GPU machine".to_vec()),
        ("kernels.ptx", b"// built on the GPU machine\n".to_vec()),
        ("weights.safetensors", blobs(&m, Some(&[2.0]), Some(&[3]))),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
        m.files.insert(name.to_string(), sha256_hex(bytes));
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
    m
}

/// Writes the smoke case for `scripts/gpu-check.sh` into `case`: `cuda/` (the smoke bundle),
/// `input.safetensors`, `reference.safetensors` (`6 x`) and the markers `build-on-gpu` and
/// `small`.
pub fn write_smoke_case(case: &Path) {
    write_smoke_bundle(&case.join("cuda"));
    let n: usize = SHAPE.iter().product();
    let x: Vec<f32> = (0..n).map(|k| k as f32 * 0.25 - 0.5).collect();
    let y: Vec<f32> = x.iter().map(|v| v * 6.0).collect();
    let file =
        |name: &str, v: &[f32]| safetensors_bytes(&[(name, "F32", SHAPE.to_vec(), f32_bytes(v))]);
    std::fs::write(case.join("input.safetensors"), file("input", &x)).unwrap();
    std::fs::write(case.join("reference.safetensors"), file("logits", &y)).unwrap();
    std::fs::write(
        case.join("build-on-gpu"),
        "nvcc builds kernels.cubin and kernels.ptx\n",
    )
    .unwrap();
    std::fs::write(case.join("small"), "").unwrap();
}
