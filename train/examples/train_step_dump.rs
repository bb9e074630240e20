//! One E2ENet training step through the public training API, dumped for an outside check.
//!
//! This example owns the Rust half of the PyTorch cross-check in `tools/torch_ref/`: it loads a
//! model.json (weights + DSFF masks), builds the training graph with every head, reads an input
//! and integer labels from a safetensors file, runs one forward/backward step with nnU-Net's
//! deep-supervision Dice + CE loss (labels down-sampled by each head's cumulative pool factor,
//! head weights 1, 1/2, 1/4, ... normalised over the heads present, as the trainer does), and
//! writes the loss, the forward outputs and every weight gradient to a safetensors file. A
//! `bench` mode times whole SGD steps (loss, backward, clipping, Nesterov step, mask
//! re-application) for the side-by-side timing with PyTorch, and an `init` mode gives a
//! hand-written model.json He-initialised weights and masks. It is a tool, not part of the
//! library: nothing in the test suite depends on it.
//!
//! ```text
//! train_step_dump init  MODEL_JSON [--seed S] [--density D] [--level0-density D0]
//! train_step_dump step  MODEL_JSON DATA OUT [--threads T] [--interp 1] [--dense-kernels 1]
//!                       [--target T] [--device cpu|cuda|cuda:N|emulate] [--precision f32|bf16]
//!                       [--math f32|tf32|bf16]
//! train_step_dump bench MODEL_JSON DATA [--steps N] [--threads T] [--target T]
//!                       [--device cpu|cuda|cuda:N|emulate] [--precision f32|bf16]
//!                       [--math f32|tf32|bf16]
//! ```
//!
//! `--precision bf16` keeps the values the backward pass reads in bfloat16, as
//! `e2enc train --precision bf16` does (`e2enc_train::memplan::Saved`); `--math tf32|bf16` runs
//! the GPU step's tensor-core convolutions, as `e2enc train --tensor-cores` (`ConvMath`).
//!
//! DATA holds `input` (f32 `[N, C, D, H, W]`) and `labels` (i32 `[N, D, H, W]`). OUT holds
//! `loss` (f32 `[1]`; the f64 value and each head's loss are in the metadata as `loss`,
//! `loss.<head>`), `out.<head>` (logits, ds1, ...) and `grad.<weight>` for every weight. With
//! `--interp 1` the same step also runs on the IR reference interpreter (f64 accumulation, no
//! dead-kernel skipping) and its gradients are added as `igrad.<weight>`, to tell a training-kernel
//! precision problem from a graph problem; `--dense-kernels 1` runs the fast kernels without the
//! live-kernel masks (dead kernels computed as zeros instead of skipped). `--target` picks the
//! target of the generated kernels (default `native`, as `e2enc train`). `--device cuda`
//! runs the step on a GPU as `e2enc train --device cuda` does (the CUDA training kernels, the
//! step kept in a device arena; build the example with `--features cuda`), `--device emulate`
//! the same on the host emulation; `--target` is then `cuda-sm80` (default) or `cuda-sm90`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use e2enc_codegen::target::Target;
use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, DsffConfig, Model, ModelConfig};
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::{Tensor, Weights};
use e2enc_train::device_exec::DeviceExecutor;
use e2enc_train::exec::{Backend, ConvMath, Executor, LiveMasks, Memory, Saved, StepResult};
use e2enc_train::{loss, optim, sparse};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("init") => cmd_init(&args[1..]),
        Some("step") => cmd_step(&args[1..]),
        Some("bench") => cmd_bench(&args[1..]),
        _ => Err("usage: train_step_dump init|step|bench ... (see the file's header)".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train_step_dump: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `args` into positionals and `--flag value` pairs.
fn parse(args: &[String]) -> Result<(Vec<String>, HashMap<String, String>), String> {
    let mut pos = Vec::new();
    let mut flags = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(f) = a.strip_prefix("--") {
            let v = it.next().ok_or_else(|| format!("--{f} needs a value"))?;
            flags.insert(f.to_string(), v.clone());
        } else {
            pos.push(a.clone());
        }
    }
    Ok((pos, flags))
}

fn flag<T: std::str::FromStr>(f: &HashMap<String, String>, name: &str, d: T) -> Result<T, String> {
    match f.get(name) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("--{name}: cannot parse `{v}`")),
        None => Ok(d),
    }
}

/// Writes He-initialised weights (and masks when --density is given) next to MODEL_JSON and
/// names them in it.
fn cmd_init(args: &[String]) -> Result<(), String> {
    let (pos, f) = parse(args)?;
    let [model] = pos.as_slice() else {
        return Err("init MODEL_JSON [--seed S] [--density D] [--level0-density D0]".into());
    };
    let path = Path::new(model);
    let mut cfg = ModelConfig::load(path).map_err(|e| e.to_string())?;
    let seed: u64 = flag(&f, "seed", 0)?;
    let net = build(&cfg, &BuildOptions::default()).map_err(|e| e.to_string())?;
    let mut w = init_weights(&net.params, seed);
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(d) = f.get("density") {
        let density: f64 = d.parse().map_err(|_| format!("--density: `{d}`"))?;
        let dsff = DsffConfig {
            density,
            level0_density: flag(&f, "level0-density", density)?,
        };
        let m = init_masks(&net.params, &dsff, seed);
        e2enc_ir::e2enet::model::apply_masks(&mut w, &m);
        m.save(&dir.join("masks.safetensors"))
            .map_err(|e| e.to_string())?;
        cfg.masks = Some("masks.safetensors".into());
        cfg.dsff = Some(dsff);
    }
    w.save(&dir.join("weights.safetensors"))
        .map_err(|e| e.to_string())?;
    cfg.weights = Some("weights.safetensors".into());
    std::fs::write(path, cfg.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {} weights tensors for {}", w.len(), path.display());
    Ok(())
}

/// The executor of `--device`: the host one, or a step kept on a device.
enum Exec {
    Host(Box<Executor>),
    Device(Box<DeviceExecutor>),
}

type Loss<'a> = dyn FnOnce(
        &BTreeMap<String, Arc<Tensor>>,
    ) -> Result<(f64, BTreeMap<String, Tensor>), e2enc_train::TrainError>
    + 'a;

impl Exec {
    fn step(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        loss: Box<Loss<'_>>,
    ) -> Result<StepResult, e2enc_train::TrainError> {
        match self {
            Exec::Host(e) => e.step(weights, live, inputs, loss),
            Exec::Device(d) => d.step(weights, live, inputs, loss),
        }
    }

    /// The step's memory in words: the planned peak of values, and what holds them (the
    /// device's arena, or the host executor's measured peak).
    fn memory(&self) -> String {
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        match self {
            Exec::Host(e) => format!(
                "planned peak {:.2} GiB of values, measured {:.2} GiB ({} values kept)",
                gib(e.memory_plan().peak_bytes),
                gib(e.peak_live_bytes()),
                e.saved()
            ),
            Exec::Device(d) => format!(
                "planned peak {:.2} GiB of values, device arena {:.2} GiB, {:.2} GiB allocated \
                 on the device in all (weights, momentum, tables, scratch)",
                gib(d.memory_plan().peak_bytes),
                gib(d.arena_bytes()),
                gib(d.device_bytes())
            ),
        }
    }
}

/// The backend of `--target` and `--device`.
fn backend(f: &HashMap<String, String>) -> Result<Backend, String> {
    let device = f.get("device").map(String::as_str).unwrap_or("cpu");
    let gpu = match device {
        "cpu" => return Ok(Backend::Generated(flag(f, "target", Target::native())?)),
        "emulate" => None,
        "cuda" => Some(0),
        d => Some(
            d.strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("--device {d}: cpu, cuda, cuda:N or emulate"))?,
        ),
    };
    let target = flag(f, "target", Target::CudaSm80)?;
    if !target.is_cuda() {
        return Err(format!(
            "--device {device} takes a CUDA --target, not {target}"
        ));
    }
    Ok(Backend::Device { target, gpu })
}

/// The loaded model, its training executor and the step's data.
struct Setup {
    config: ModelConfig,
    forward_graph: e2enc_ir::Graph,
    train_graph: e2enc_ir::autodiff::TrainGraph,
    weights: Weights,
    masks: Option<Weights>,
    live: LiveMasks,
    exec: Exec,
    input: Tensor,
    labels: Vec<u16>,
    batch: usize,
    heads: Vec<[usize; 3]>,
}

fn setup(
    model: &str,
    data: &str,
    threads: usize,
    kernels: Backend,
    saved: Saved,
    math: ConvMath,
) -> Result<Setup, String> {
    let data = Weights::load(Path::new(data)).map_err(|e| e.to_string())?;
    let input = data.get("input").ok_or("DATA has no `input`")?;
    let lab = data.get("labels").ok_or("DATA has no `labels`")?;
    let sh = input.shape().to_vec();
    if sh.len() != 5 || input.as_f32().is_none() {
        return Err(format!("`input` must be f32 [N, C, D, H, W], is {sh:?}"));
    }
    let labels: Vec<u16> = lab
        .as_i32()
        .ok_or("`labels` must be i32")?
        .iter()
        .map(|&v| u16::try_from(v).map_err(|_| format!("label {v} out of range")))
        .collect::<Result<_, _>>()?;
    if lab.shape() != [sh[0], sh[2], sh[3], sh[4]] {
        return Err(format!(
            "`labels` has shape {:?}, the input {sh:?}",
            lab.shape()
        ));
    }
    let opts = BuildOptions {
        batch: sh[0],
        patch: Some([sh[2], sh[3], sh[4]]),
    };
    let m = Model::load(Path::new(model), &opts).map_err(|e| e.to_string())?;
    let weights = m.require_weights().map_err(|e| e.to_string())?.clone();
    let live: LiveMasks = match &m.masks {
        Some(ms) => ms
            .iter()
            .map(|(n, t)| {
                let v = t.as_f32().map(|v| v.iter().map(|x| *x != 0.0).collect());
                v.map(|v| (n.clone(), v))
                    .ok_or_else(|| format!("mask `{n}` is not f32"))
            })
            .collect::<Result<_, String>>()?,
        None => LiveMasks::new(),
    };
    let c = &m.config;
    let outs: Vec<String> = (0..=c.deep_supervision_heads).map(output_name).collect();
    let names: Vec<&str> = outs.iter().map(String::as_str).collect();
    let tg = training_graph(&m.net.graph, &names).map_err(|e| e.to_string())?;
    let maskable = live.keys().cloned().collect();
    let exec = match kernels {
        Backend::Device { .. } => Exec::Device(Box::new(
            DeviceExecutor::open(&tg, kernels, threads, Some(&maskable), saved, math)
                .map_err(|e| e.to_string())?,
        )),
        k => Exec::Host(Box::new(
            Executor::with_saved(
                &tg,
                threads,
                k,
                Some(&maskable),
                Memory::for_saved(saved),
                saved,
            )
            .map_err(|e| e.to_string())?,
        )),
    };
    let mut heads = vec![[1usize; 3]];
    for s in 1..=c.deep_supervision_heads {
        let (p, k) = (heads[s - 1], c.pool_kernels[s - 1]);
        heads.push([p[0] * k[0], p[1] * k[1], p[2] * k[2]]);
    }
    Ok(Setup {
        config: m.config.clone(),
        forward_graph: m.net.graph.clone(),
        train_graph: tg,
        weights,
        masks: m.masks.clone(),
        live,
        exec,
        input: (**input).clone(),
        labels,
        batch: sh[0],
        heads,
    })
}

/// Per-head losses and the weighted total, with the weighted logit gradients.
type HeadLosses = (f64, Vec<f64>, BTreeMap<String, Tensor>);

/// The trainer's deep-supervision loss: weights 2^-s normalised over the heads present.
fn ds_loss(
    outs: &BTreeMap<String, Arc<Tensor>>,
    labels: &[u16],
    batch: usize,
    patch: [usize; 3],
    heads: &[[usize; 3]],
) -> Result<HeadLosses, e2enc_train::TrainError> {
    let raw: Vec<f64> = (0..heads.len()).map(|s| 0.5f64.powi(s as i32)).collect();
    let norm: f64 = raw.iter().sum();
    let (mut total, mut per, mut grads) = (0.0, Vec::new(), BTreeMap::new());
    for (s, f) in heads.iter().enumerate() {
        let name = output_name(s);
        let t = outs
            .get(&name)
            .ok_or_else(|| e2enc_train::TrainError::Loss(format!("no output `{name}`")))?;
        let (lbl, _) = loss::downsample_labels(labels, [batch, patch[0], patch[1], patch[2]], *f)?;
        let sh = t.shape();
        let logits = t
            .as_f32()
            .ok_or_else(|| e2enc_train::TrainError::Loss(format!("output `{name}` is not f32")))?;
        let l = loss::dc_and_ce(logits, [sh[0], sh[1], sh[2], sh[3], sh[4]], &lbl)?;
        let w = raw[s] / norm;
        total += w * l.total;
        per.push(l.total);
        let g: Vec<f32> = l.grad.iter().map(|v| (*v as f64 * w) as f32).collect();
        grads.insert(name, Tensor::from_f32(sh.to_vec(), g)?);
    }
    Ok((total, per, grads))
}

fn cmd_step(args: &[String]) -> Result<(), String> {
    let (pos, f) = parse(args)?;
    let [model, data, out] = pos.as_slice() else {
        return Err(
            "step MODEL_JSON DATA OUT [--threads T] [--interp 1] [--dense-kernels 1]".into(),
        );
    };
    let kernels = backend(&f)?;
    let saved: Saved = flag(&f, "precision", Saved::F32)?;
    let math: ConvMath = flag(&f, "math", ConvMath::F32)?;
    let mut s = setup(model, data, flag(&f, "threads", 2)?, kernels, saved, math)?;
    if flag(&f, "dense-kernels", 0u8)? != 0 {
        // Masked weights stay zero, but the kernels no longer skip dead kernels.
        s.live.clear();
    }
    let inputs: BTreeMap<String, Tensor> = [("input".to_string(), s.input.clone())].into();
    let (batch, patch, heads) = (s.batch, s.config.patch_size, s.heads.clone());
    let labels = s.labels.clone();
    let mut per_head = Vec::new();
    let res = s
        .exec
        .step(
            &s.weights,
            &s.live,
            &inputs,
            Box::new(|outs: &BTreeMap<String, Arc<Tensor>>| {
                let (t, per, g) = ds_loss(outs, &labels, batch, patch, &heads)?;
                per_head = per;
                Ok((t, g))
            }),
        )
        .map_err(|e| e.to_string())?;
    let mut dump = Weights::new();
    let tensor =
        |shape: Vec<usize>, v: Vec<f32>| Tensor::from_f32(shape, v).map_err(|e| e.to_string());
    dump.insert("loss", tensor(vec![1], vec![res.loss as f32])?);
    for (name, t) in &res.outputs {
        dump.insert(format!("out.{name}"), (**t).clone());
    }
    for (name, g) in res.grads.iter() {
        dump.insert(format!("grad.{name}"), (**g).clone());
    }
    let mut meta = BTreeMap::new();
    meta.insert("loss".to_string(), format!("{:.17e}", res.loss));
    for (sidx, l) in per_head.iter().enumerate() {
        meta.insert(format!("loss.{}", output_name(sidx)), format!("{l:.17e}"));
    }
    if flag(&f, "interp", 0u8)? != 0 {
        let (iloss, igrads) = interp_step(&s, &inputs)?;
        meta.insert("interp_loss".to_string(), format!("{iloss:.17e}"));
        for (name, g) in igrads {
            dump.insert(format!("igrad.{name}"), g);
        }
    }
    let bytes = dump.to_bytes(Some(meta))?;
    std::fs::write(out, bytes).map_err(|e| format!("{out}: {e}"))?;
    println!(
        "loss {:.9} ({} heads), {} weight gradients -> {out}",
        res.loss,
        per_head.len(),
        res.grads.len()
    );
    Ok(())
}

/// The same step on the reference interpreter: forward, loss on its outputs, whole training
/// graph; returns the loss and the weight gradients.
fn interp_step(
    s: &Setup,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(f64, Vec<(String, Tensor)>), String> {
    use e2enc_ir::interp;
    let tg = &s.train_graph;
    let outs: Vec<&str> = tg.grad_inputs.iter().map(|(o, _)| o.as_str()).collect();
    let fwd =
        interp::run(&s.forward_graph, &s.weights, inputs, &outs).map_err(|e| e.to_string())?;
    let fwd: BTreeMap<String, Arc<Tensor>> =
        fwd.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    let (loss, _, g) = ds_loss(&fwd, &s.labels, s.batch, s.config.patch_size, &s.heads)
        .map_err(|e| e.to_string())?;
    let mut all = inputs.clone();
    for (o, gi) in &tg.grad_inputs {
        let t = g
            .get(o)
            .ok_or_else(|| format!("no loss gradient for `{o}`"))?;
        all.insert(gi.clone(), t.clone());
    }
    let names: Vec<&str> = tg.weight_grads.iter().map(|(_, o)| o.as_str()).collect();
    let mut res = interp::run(&tg.graph, &s.weights, &all, &names).map_err(|e| e.to_string())?;
    let grads = tg
        .weight_grads
        .iter()
        .filter_map(|(w, o)| res.remove(o).map(|t| (w.clone(), t)))
        .collect();
    Ok((loss, grads))
}

fn cmd_bench(args: &[String]) -> Result<(), String> {
    let (pos, f) = parse(args)?;
    let [model, data] = pos.as_slice() else {
        return Err("bench MODEL_JSON DATA [--steps N] [--threads T]".into());
    };
    let steps: usize = flag(&f, "steps", 5)?;
    let threads: usize = flag(&f, "threads", 2)?;
    let kernels = backend(&f)?;
    let saved: Saved = flag(&f, "precision", Saved::F32)?;
    let math: ConvMath = flag(&f, "math", ConvMath::F32)?;
    let mut s = setup(model, data, threads, kernels, saved, math)?;
    let masks = match &s.masks {
        Some(m) => Some(sparse::Masks::from_weights(m, &s.weights).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut sgd = optim::Sgd::nnunet();
    let inputs: BTreeMap<String, Tensor> = [("input".to_string(), s.input.clone())].into();
    let (batch, patch, heads) = (s.batch, s.config.patch_size, s.heads.clone());
    let labels = s.labels.clone();
    // On a device the loss runs there too (as `e2enc train --device cuda` runs it).
    let (head_labels, head_weights) =
        loss::deep_supervision_targets(&labels, batch, patch, &heads).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    // One warm-up step, then `steps` timed ones.
    let mut resident = false;
    if let Exec::Device(d) = &mut s.exec {
        if d.has_device_loss() {
            resident = true;
            // As `e2enc train --device cuda` in one process: the optimizer on the device too,
            // the weights and the momentum kept there.
            d.upload_state(&s.weights, &sgd.momentum_buffers)
                .map_err(|e| e.to_string())?;
            for i in 0..=steps {
                let t0 = Instant::now();
                let (loss, _) = d
                    .step_resident(
                        &s.live,
                        &inputs,
                        &head_labels,
                        &head_weights,
                        &sgd,
                        sgd.lr,
                        optim::MAX_GRAD_NORM,
                        None,
                    )
                    .map_err(|e| e.to_string())?;
                let dt = t0.elapsed().as_secs_f64();
                println!("step {i}: {dt:.3} s, loss {loss:.6}");
                if i > 0 {
                    times.push(dt);
                } else {
                    // The timed steps' launches, each between two CUDA events on a GPU.
                    d.time_kernels(true).map_err(|e| e.to_string())?;
                }
            }
            if let Some(k) = d.kernel_profile().map_err(|e| e.to_string())? {
                let mut rows: Vec<(&String, &f64)> = k.iter().collect();
                rows.sort_by(|a, b| b.1.total_cmp(a.1));
                let total: f64 = rows.iter().map(|r| *r.1).sum();
                let per = |s: f64| s * 1e3 / steps.max(1) as f64;
                let list: Vec<String> = rows
                    .iter()
                    .map(|(n, s)| {
                        format!(
                            "{n} {:.2} ({:.0}%)",
                            per(**s),
                            100.0 * **s / total.max(1e-12)
                        )
                    })
                    .collect();
                println!(
                    "e2enc train step kernels, ms per step (sum {:.2}): {}",
                    per(total),
                    list.join("; ")
                );
            }
        }
    }
    for i in 0..=steps {
        if resident {
            break;
        }
        let t0 = Instant::now();
        let res = match &mut s.exec {
            Exec::Device(d) if d.has_device_loss() => d.step_on_device(
                &s.weights,
                &s.live,
                &inputs,
                &head_labels,
                &head_weights,
                &mut |_| Ok(()),
            ),
            exec => exec.step(
                &s.weights,
                &s.live,
                &inputs,
                Box::new(|outs: &BTreeMap<String, Arc<Tensor>>| {
                    let (t, _, g) = ds_loss(outs, &labels, batch, patch, &heads)?;
                    Ok((t, g))
                }),
            ),
        }
        .map_err(|e| e.to_string())?;
        let mut grads = res.grads;
        optim::clip_grad_norm(&mut grads, optim::MAX_GRAD_NORM);
        sgd.step(&mut s.weights, &grads, sgd.lr)
            .map_err(|e| e.to_string())?;
        if let Some(m) = &masks {
            m.apply(&mut s.weights).map_err(|e| e.to_string())?;
            m.apply(&mut sgd.momentum_buffers)
                .map_err(|e| e.to_string())?;
        }
        let dt = t0.elapsed().as_secs_f64();
        println!("step {i}: {dt:.3} s, loss {:.6}", res.loss);
        if i > 0 {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let med = if times.is_empty() {
        f64::NAN
    } else {
        times[times.len() / 2]
    };
    let min = times.first().copied().unwrap_or(f64::NAN);
    println!(
        "e2enc train step ({kernels}; convolutions in {math}, saved values in {saved}): batch \
         {batch}, patch {patch:?}, threads {threads}: median {med:.3} s (min {min:.3}) over \
         {steps} steps = {:.3} patches/s (best {:.3})",
        batch as f64 / med,
        batch as f64 / min
    );
    println!("e2enc train step memory: {}", s.exec.memory());
    Ok(())
}
