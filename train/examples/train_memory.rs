//! Prints the memory plan of a training step (`e2enc_train::memplan`) of the AMOS-CT E2ENet at
//! a given width, cubic patch and batch under each memory policy: the planned peak of live
//! values, where it is, and the largest values live there. Builds no kernels (the plan needs
//! only the graph), so it runs in seconds at any size.
//!
//! ```text
//! cargo run --release -p e2enc-train --example train_memory -- WIDTH PATCH BATCH [LARGEST]
//! ```

use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, ModelConfig};
use e2enc_train::exec::{Backend, Executor, Memory};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let width: usize = arg(0, "48").parse()?;
    let patch: usize = arg(1, "128").parse()?;
    let batch: usize = arg(2, "1").parse()?;
    let largest: usize = arg(3, "12").parse()?;
    let mut cfg = ModelConfig::amos_ct();
    cfg.base_width = width;
    cfg.patch_size = [patch; 3];
    let net = build(&cfg, &BuildOptions { batch, patch: None })?;
    let outs: Vec<String> = (0..=cfg.deep_supervision_heads).map(output_name).collect();
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let tg = training_graph(&net.graph, &refs)?;
    println!("width {width}, patch {patch}^3, batch {batch}");
    for memory in [
        Memory::KeepForward,
        Memory::FreeAfterLastUse,
        Memory::Recompute,
    ] {
        let ex = Executor::with_memory(&tg, 1, Backend::Reference, None, memory)?;
        println!("{memory:?}: {}", ex.memory_plan().summary(largest));
    }
    Ok(())
}
