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

/// `weights.safetensors` with `W` (f32) and `I` (i32) of the manifest's sizes, written by hand
/// (the format is an 8-byte header length, a JSON header, the data).
pub fn blobs(m: &Manifest) -> Vec<u8> {
    let mut data: Vec<u8> = (0..m.consts_f32)
        .flat_map(|k| (k as f32).to_le_bytes())
        .collect();
    let w_end = data.len();
    data.extend((0..m.consts_i32).flat_map(|k| (k as i32).to_le_bytes()));
    let mut header = serde_json::json!({
        "W": {"dtype": "F32", "shape": [m.consts_f32], "data_offsets": [0, w_end]},
        "I": {"dtype": "I32", "shape": [m.consts_i32], "data_offsets": [w_end, data.len()]},
    })
    .to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
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
        ("weights.safetensors", blobs(&m)),
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
