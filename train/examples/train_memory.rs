//! Prints the memory plan of a training step (`e2enc_train::memplan`) of the AMOS-CT E2ENet at
//! a given width, cubic patch and batch under each memory policy: the planned peak of live
//! values, where it is, and the largest values live there, and what the recomputation costs
//! (`Recompute` for each of the comma-separated windows WINDOWS). Builds no kernels (the plan needs
//! only the graph), so it runs in seconds at any size.
//!
//! ```text
//! cargo run --release -p e2enc-train --example train_memory -- WIDTH PATCH BATCH [LARGEST] [WINDOWS] [SAVED]
//! ```
//!
//! SAVED is `f32` (the default) or `bf16` (`e2enc train --precision bf16`: the values kept for
//! the backward pass packed to bfloat16).

use std::collections::BTreeMap;

use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, ModelConfig};
use e2enc_train::exec::{Backend, Executor, Memory, Saved};
use e2enc_train::memplan::DEFAULT_WINDOW;

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
    let saved: Saved = arg(5, "f32").parse()?;
    let windows: Vec<usize> = match args.get(4) {
        Some(w) => w.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![0, DEFAULT_WINDOW, usize::MAX],
    };
    let first = match saved {
        Saved::F32 => vec![Memory::KeepForward, Memory::FreeAfterLastUse],
        // KeepForward keeps every forward value: nothing to pack.
        Saved::Bf16 => vec![Memory::FreeAfterLastUse],
    };
    let policies = first.into_iter().chain(
        windows
            .into_iter()
            .map(|window| Memory::Recompute { window }),
    );
    for memory in policies {
        let ex = Executor::with_saved(&tg, 1, Backend::Reference, None, memory, saved)?;
        println!(
            "{memory:?}, saved {saved}: {}",
            ex.memory_plan().summary(largest)
        );
        // What the copies cost: ops and bytes written, by kind, next to the forward pass's.
        let (g, order) = ex.graph();
        let mut kinds: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
        for &n in order {
            let node = g.node(n);
            let copy = node
                .label
                .as_deref()
                .is_some_and(|l| l.ends_with(".recompute"));
            let e = kinds.entry(node.op.mnemonic()).or_default();
            let at = if copy { 2 } else { 0 };
            e[at] += 1;
            e[at + 1] += node.ty.size_bytes();
        }
        for (k, [n, b, cn, cb]) in kinds {
            if cn > 0 {
                println!(
                    "  recomputed {k}: {cn} ops, {:.2} GiB written (the graph's own: {n} ops, {:.2} GiB)",
                    cb as f64 / (1u64 << 30) as f64,
                    b as f64 / (1u64 << 30) as f64
                );
            }
        }
    }
    Ok(())
}
