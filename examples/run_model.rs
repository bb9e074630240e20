//! Using e2enc from Rust: build (or load) a model, run it, read the logits.
//!
//! `cargo run --example run_model [path/to/model.json]` — without an argument it runs the
//! released-network golden model shipped in tests/data/golden on its stored input.

use std::collections::BTreeMap;
use std::path::PathBuf;

use e2enc_ir::e2enet::BuildOptions;
use e2enc_ir::{Tensor, Weights};
use e2enc_runtime::Session;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let model = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or(golden.join("model.json"));
    let session = Session::load(&model, &BuildOptions::default())?;
    let cfg = &session.model.config;
    let [d, h, w] = cfg.patch_size;
    let input = if model.starts_with(&golden) {
        (**Weights::load(&golden.join("io.safetensors"))?
            .get("input")
            .unwrap())
        .clone()
    } else {
        let n = cfg.in_channels * d * h * w;
        Tensor::from_f32(
            vec![1, cfg.in_channels, d, h, w],
            (0..n).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect(),
        )?
    };
    let outs = session.run(&BTreeMap::from([("input".to_string(), input)]), &["logits"])?;
    let logits = &outs["logits"];
    let v = logits.as_f32().unwrap();
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
    println!(
        "{}: logits {:?}, mean {mean:.4}",
        model.display(),
        logits.shape()
    );
    Ok(())
}
