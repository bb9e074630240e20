//! Times whole training steps (forward, loss gradient, backward) of the MNI demo network
//! (`e2enc demo`: width 8, four 2x2x2 pools, patch 48x64x48, batch 2, DSFF density 0.2, 1 input
//! channel, 3 classes) on the kernels generated for two targets (default `native` and
//! `portable`) in the same process, alternating steps so both see the same machine load. Prints
//! the median and minimum step time of each and their per-op profiles. A tool, not a test.
//!
//! ```text
//! cargo run --release -p e2enc-train --example train_targets_bench -- [STEPS] [THREADS] [A] [B]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use e2enc_codegen::target::Target;
use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, DsffConfig, ModelConfig};
use e2enc_ir::init::noise;
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::Tensor;
use e2enc_train::exec::{Backend, Executor, LiveMasks};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.first().map_or(Ok(7), |s| s.parse())?;
    let threads: usize = args.get(1).map_or(Ok(2), |s| s.parse())?;
    let a: Target = args.get(2).map_or("native", String::as_str).parse()?;
    let b: Target = args.get(3).map_or("portable", String::as_str).parse()?;
    let names = [a.to_string(), b.to_string()];
    let mut cfg = ModelConfig::amos_ct();
    cfg.in_channels = 1;
    cfg.num_classes = 3;
    cfg.base_width = 8;
    cfg.max_width = 64;
    cfg.pool_kernels = vec![[2, 2, 2]; 4];
    cfg.patch_size = [48, 64, 48];
    let net = build(
        &cfg,
        &BuildOptions {
            batch: 2,
            patch: None,
        },
    )?;
    let outs: Vec<String> = (0..=cfg.deep_supervision_heads).map(output_name).collect();
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let tg = training_graph(&net.graph, &refs)?;
    let dsff = DsffConfig {
        density: 0.2,
        level0_density: 0.2,
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

    let t0 = Instant::now();
    let maskable: HashSet<String> = live.keys().cloned().collect();
    let mut c = Executor::with_maskable(&tg, threads, Backend::Generated(a), &maskable)?;
    println!(
        "{a}: generated and compiled in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let mut r = Executor::with_maskable(&tg, threads, Backend::Generated(b), &maskable)?;
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut losses = [0.0; 2];
    for i in 0..=steps {
        for (b, ex) in [&mut c, &mut r].into_iter().enumerate() {
            if i == 1 {
                ex.profile.clear();
                ex.node_profile.clear();
            }
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
            if i > 0 {
                times[b].push(t.elapsed().as_secs_f64());
            }
            losses[b] = res.loss;
        }
    }
    println!("loss: {a} {:.6}, {b} {:.6}", losses[0], losses[1]);
    for (b, name) in names.iter().enumerate() {
        let mut t = times[b].clone();
        t.sort_by(f64::total_cmp);
        println!(
            "{name:>10}: median {:.3} s/step, min {:.3} s over {steps} steps ({threads} threads)",
            t[t.len() / 2],
            t[0]
        );
    }
    for (name, ex) in [(&names[0], &c), (&names[1], &r)] {
        let total: f64 = ex.profile.values().sum();
        let mut rows: Vec<_> = ex.profile.iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(a.1));
        println!("{name} profile (s/step):");
        for (op, s) in rows {
            println!(
                "  {op:<26} {:>7.4} {:>5.1}%",
                s / steps as f64,
                100.0 * s / total
            );
        }
    }
    for (name, ex) in [(&names[0], &c), (&names[1], &r)] {
        println!("{name} slowest nodes (s/step):");
        for (what, s) in ex.hot_nodes(12) {
            println!("  {:>7.4} {what}", s / steps as f64);
        }
    }
    Ok(())
}
