//! Using e2enc from Rust: load a model.json (run by the reference interpreter) or a compiled
//! bundle folder (verified, then run by its kernels) through one interface, run it, read the
//! logits.
//!
//! `cargo run --example run_model [path/to/model.json | path/to/bundle]` — without an argument
//! it runs the released-network golden model shipped in tests/data/golden on its stored input.
//! To run the same model compiled:
//!
//! ```sh
//! cargo run --release -- compile tests/data/golden/model.json -o /tmp/golden-bundle --force
//! cargo run --release --example run_model /tmp/golden-bundle
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use e2enc::Runnable;
use e2enc_ir::e2enet::BuildOptions;
use e2enc_ir::{Tensor, Weights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or(golden.join("model.json"));
    // 0 threads: all cores (used by bundles only); no rebuild: load the shipped kernels.so.
    let mut runnable = Runnable::load(&path, &BuildOptions::default(), 0, false)?;
    let (what, shape) = match &runnable {
        Runnable::Model(s) => {
            let c = &s.model.config;
            let [d, h, w] = c.patch_size;
            ("reference interpreter", vec![1, c.in_channels, d, h, w])
        }
        Runnable::Bundle(e) => ("compiled bundle", e.bundle.manifest.inputs[0].shape.clone()),
    };
    // The golden model's stored input where it fits (the golden model, compiled or not), else
    // a deterministic ramp.
    let stored = Weights::load(&golden.join("io.safetensors"))?
        .get("input")
        .map(|t| (**t).clone());
    let input = match stored {
        Some(t) if t.shape() == shape.as_slice() => t,
        _ => {
            let n = shape.iter().product();
            Tensor::from_f32(shape, (0..n).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect())?
        }
    };
    let t0 = Instant::now();
    let outs = runnable.run(&BTreeMap::from([("input".to_string(), input)]), &["logits"])?;
    let logits = &outs["logits"];
    let v = logits.as_f32().ok_or("logits are not f32")?;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
    println!(
        "{} ({what}, {:.3} s): logits {:?}, mean {mean:.4}",
        path.display(),
        t0.elapsed().as_secs_f64(),
        logits.shape()
    );
    Ok(())
}
