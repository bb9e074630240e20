//! Runs whole training steps (forward, a fixed random loss gradient, backward) of the AMOS-CT
//! E2ENet (1 input channel, 16 classes, five 2x2x2 pools) at a given width, cubic patch, batch
//! and DSFF density on the generated kernels, and prints each step's time and the process's
//! peak resident memory (VmHWM) after it. A measuring tool, not a test: run one configuration
//! per process, alone on the machine.
//!
//! ```text
//! cargo run --release -p e2enc-train --example train_step_rss -- WIDTH PATCH BATCH [STEPS] [DENSITY] [THREADS] [keep|free|WINDOW] [f32|bf16]
//! ```
//!
//! The last argument is the precision of the values kept for the backward pass
//! (`e2enc train --precision`).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, DsffConfig, ModelConfig};
use e2enc_ir::init::noise;
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::Tensor;
use e2enc_train::exec::{Executor, LiveMasks, Memory, Saved};

/// A `/proc/self/status` field in kB, as GiB.
fn status_gib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1048576.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let width: usize = arg(0, "48").parse()?;
    let patch: usize = arg(1, "128").parse()?;
    let batch: usize = arg(2, "1").parse()?;
    let steps: usize = arg(3, "2").parse()?;
    let density: f64 = arg(4, "0.2").parse()?;
    let threads: usize = arg(5, "2").parse()?;
    // keep | free | W (recompute with window W)
    let saved: Saved = arg(7, "f32").parse()?;
    let memory = match arg(6, "default").as_str() {
        "keep" => Memory::KeepForward,
        "free" => Memory::FreeAfterLastUse,
        // What `e2enc train --precision` uses.
        "default" => Memory::for_saved(saved),
        w => Memory::Recompute { window: w.parse()? },
    };
    let mut cfg = ModelConfig::amos_ct();
    cfg.base_width = width;
    cfg.patch_size = [patch; 3];
    let net = build(&cfg, &BuildOptions { batch, patch: None })?;
    let outs: Vec<String> = (0..=cfg.deep_supervision_heads).map(output_name).collect();
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let tg = training_graph(&net.graph, &refs)?;
    let dsff = DsffConfig {
        density,
        level0_density: density,
    };
    let mut weights = init_weights(&net.params, 1);
    let masks = init_masks(&net.params, &dsff, 1);
    let mut live = LiveMasks::new();
    for (name, m) in masks.iter() {
        let m: Vec<bool> = m
            .as_f32()
            .ok_or("mask")?
            .iter()
            .map(|&v| v != 0.0)
            .collect();
        let w = weights.get(name).ok_or("weight")?;
        let kern = w.numel() / m.len();
        let mut v = w.as_f32().ok_or("f32")?.to_vec();
        for (kv, &l) in v.chunks_mut(kern).zip(&m) {
            if !l {
                kv.fill(0.0);
            }
        }
        weights.insert(name.clone(), Tensor::from_f32(w.shape().to_vec(), v)?);
        live.insert(name.clone(), m);
    }
    let x = net.graph.inputs()[0].clone();
    let shape = net.graph.node(x.1).ty.shape.clone();
    let n = shape.iter().product();
    let inputs: BTreeMap<String, Tensor> = [(x.0, Tensor::from_f32(shape, noise(n, 3))?)].into();
    let maskable: HashSet<String> = live.keys().cloned().collect();
    let t0 = Instant::now();
    let mut ex = Executor::with_saved(
        &tg,
        threads,
        Default::default(),
        Some(&maskable),
        memory,
        saved,
    )?;
    println!(
        "width {width}, patch {patch}^3, batch {batch}, density {density}, {threads} threads, \
         {memory:?}, {saved} kept values: built in {:.1} s, VmHWM {:.2} GiB",
        t0.elapsed().as_secs_f64(),
        status_gib("VmHWM:")
    );
    for i in 0..steps {
        let t = Instant::now();
        let res = ex.step(&weights, &live, &inputs, |o| {
            let mut loss = 0.0;
            let mut g = BTreeMap::new();
            for (k, (name, t)) in o.iter().enumerate() {
                let rv = noise(t.numel(), 50 + k as u64);
                let v = t.as_f32().unwrap_or(&[]);
                loss += v.iter().zip(&rv).map(|(a, b)| (a * b) as f64).sum::<f64>();
                g.insert(name.clone(), Tensor::from_f32(t.shape().to_vec(), rv)?);
            }
            Ok((loss, g))
        })?;
        // A fingerprint of every gradient's bits (FNV-1a over the names and values, in order).
        let mut h: u64 = 0xcbf29ce484222325;
        for (name, t) in res.grads.iter() {
            let bytes = name.bytes().chain(
                t.as_f32()
                    .unwrap_or(&[])
                    .iter()
                    .flat_map(|v| v.to_bits().to_le_bytes()),
            );
            for b in bytes {
                h = (h ^ b as u64).wrapping_mul(0x100000001b3);
            }
        }
        println!(
            "step {i}: {:.1} s, loss {:.6e}, gradient bits {h:016x}, VmHWM {:.2} GiB, VmRSS {:.2} GiB, \
             pool {:.2} GiB",
            t.elapsed().as_secs_f64(),
            res.loss,
            status_gib("VmHWM:"),
            status_gib("VmRSS:"),
            ex.spare_bytes() as f64 / (1u64 << 30) as f64
        );
    }
    let mut rows: Vec<_> = ex.profile.iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(a.1));
    let total: f64 = rows.iter().map(|r| r.1).sum();
    println!("op time over {steps} steps ({total:.1} s in ops):");
    for (op, t) in rows.iter().take(12) {
        println!("  {op:<24} {t:>7.2} s");
    }
    Ok(())
}
