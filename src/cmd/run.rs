//! `e2enc run`: runs a model on a tensor file (reference interpreter for now) and writes the
//! outputs; optionally compares them with reference outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use e2enc::Runnable;
use e2enc_ir::e2enet::{output_name, BuildOptions};
use e2enc_ir::tensor::{relative_error, relative_error_l2};
use e2enc_runtime::bundle::LoadOptions;

use crate::util::{read_tensors, write_tensors};

/// Run a model or a compiled bundle on one input tensor file
///
/// Runs a model (model.json, interpreted) or a compiled bundle on one input tensor file and
/// writes its outputs.
///
/// The input file is safetensors with a tensor `input` of shape [N, C, D, H, W]; the network is
/// built for that batch and patch. The output file holds `logits` (and `ds1`..`ds3`, the
/// deep-supervision outputs at 1/2, 1/4, 1/8 resolution, with --deep-supervision).
///
/// --reference FILE compares the outputs with tensors of the same names in FILE (`ds0` is
/// accepted for `logits`) and fails if the relative error exceeds --tolerance.
///
/// Example: e2enc run model.json --input x.safetensors --output y.safetensors
#[derive(clap::Args)]
pub struct Args {
    /// model.json (or a folder holding one).
    model: PathBuf,
    /// safetensors file holding `input` [N, C, D, H, W].
    #[arg(long)]
    input: PathBuf,
    /// Where to write the outputs (safetensors; written atomically; an existing file only with
    /// --overwrite, never one of the inputs).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Replace an existing --output file.
    #[arg(long)]
    overwrite: bool,
    /// Also write the deep-supervision outputs ds1..ds3.
    #[arg(long)]
    deep_supervision: bool,
    /// Compare with reference outputs in this safetensors file.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Threads for a compiled bundle (0: all cores).
    #[arg(long, value_parser = crate::cmd::parse_threads, default_value_t = 0)]
    threads: usize,
    /// For a bundle: recompile kernels.c on this host instead of loading kernels.so.
    #[arg(long)]
    rebuild: bool,
    /// For a CUDA bundle (`--target cuda-sm80|cuda-sm90`): run its kernels on this CPU through
    /// the host emulation (kernels.cu compiled as C++ with a CUDA shim; slow, for checking
    /// results without a GPU).
    #[arg(long)]
    emulate: bool,
    /// Where a compiled bundle runs: cpu, or cuda / cuda:N (NVIDIA GPU N; a bundle compiled
    /// for a CUDA target, on a build with CUDA support).
    #[arg(long, value_name = "cpu|cuda|cuda:N", value_parser = super::parse_device, default_value = "cpu")]
    device: super::DeviceArg,
    #[command(flatten)]
    trust: super::TrustArgs,
    /// Run the optimized graph (dead DSFF edges dropped, sparse and fused convolutions) instead
    /// of the graph as built.
    #[arg(long)]
    optimized: bool,
    /// Largest accepted relative error (max |diff| / max |reference|) for --reference.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
}

pub fn main(a: Args) -> Result<ExitCode> {
    if a.output.is_none() && a.reference.is_none() {
        bail!("nothing to do: pass --output FILE and/or --reference FILE");
    }
    if let Some(o) = &a.output {
        let mut inputs = vec![a.input.as_path(), a.model.as_path()];
        inputs.extend(a.reference.as_deref());
        super::check_output("--output", o, a.overwrite, &inputs)?;
    }
    let inputs = read_tensors(&a.input)?;
    let Some(x) = inputs.get("input") else {
        let names: Vec<&String> = inputs.keys().collect();
        bail!(
            "{} has no tensor named `input` (it has: {names:?})",
            a.input.display()
        );
    };
    let s = x.shape();
    if s.len() != 5 {
        bail!("`input` must be [N, C, D, H, W], got {s:?}");
    }
    let opts = BuildOptions {
        batch: s[0],
        patch: Some([s[2], s[3], s[4]]),
    };
    let load = LoadOptions {
        emulate: a.emulate,
        ..a.trust.load_options(a.rebuild)
    };
    let mut runnable = match a.device {
        super::DeviceArg::Cpu => Runnable::load_with(&a.model, &opts, a.threads, &load)?,
        gpu => {
            if !a.model.join("manifest.json").is_file() {
                bail!(
                    "--device {gpu} runs compiled bundles; {} is not one (compile the model \
                     for a CUDA target first: `e2enc compile --target cuda-sm90`)",
                    a.model.display()
                );
            }
            let b = e2enc_runtime::bundle::Bundle::load(&a.model, &load)?;
            Runnable::Bundle(super::engine_on(gpu, b, a.threads)?)
        }
    };
    let (in_channels, ds_heads, engine) = match &runnable {
        Runnable::Model(sess) => (
            sess.model.config.in_channels,
            sess.model.config.deep_supervision_heads,
            "reference interpreter",
        ),
        Runnable::Bundle(e) => {
            let m = &e.bundle.manifest;
            (
                m.inputs.first().map_or(0, |p| p.shape[1]),
                m.outputs.len().saturating_sub(1),
                "compiled bundle",
            )
        }
    };
    if s[1] != in_channels {
        bail!(
            "`input` has {} channels, the model expects {in_channels}",
            s[1]
        );
    }
    let mut want = vec![output_name(0)];
    if a.deep_supervision || a.reference.is_some() {
        want.extend((1..=ds_heads).map(output_name));
    }
    let feed: BTreeMap<_, _> = [("input".to_string(), x.clone())].into();
    let refs: Vec<&str> = want.iter().map(String::as_str).collect();
    if a.optimized {
        let Runnable::Model(session) = &mut runnable else {
            bail!("--optimized applies to a model.json; a bundle is already optimized");
        };
        let r = session.optimize(&refs)?;
        eprintln!(
            "optimized: {} -> {} nodes in {:.2} s",
            r.nodes_before, r.nodes_after, r.seconds
        );
    }
    let t0 = Instant::now();
    let mut outs = runnable.run(&feed, &refs)?;
    eprintln!(
        "ran {} in {:.2} s ({engine})",
        a.model.display(),
        t0.elapsed().as_secs_f64()
    );

    let mut ok = true;
    if let Some(rp) = &a.reference {
        let reference = read_tensors(rp)?;
        for (name, got) in &outs {
            let alt = if name == "logits" {
                "ds0"
            } else {
                name.as_str()
            };
            let Some(r) = reference.get(name.as_str()).or_else(|| reference.get(alt)) else {
                eprintln!("  {name:<7} no reference tensor");
                continue;
            };
            match (relative_error(got, r), relative_error_l2(got, r)) {
                (Some(e), Some(l2)) => {
                    let pass = e <= a.tolerance;
                    ok &= pass;
                    eprintln!(
                        "  {name:<7} relative error {e:.2e} (L2-relative {l2:.2e}) {}",
                        if pass { "ok" } else { "TOO LARGE" }
                    );
                }
                _ => {
                    ok = false;
                    eprintln!(
                        "  {name:<7} shape {:?} differs from the reference {:?}",
                        got.shape(),
                        r.shape()
                    );
                }
            }
        }
    }
    if let Some(op) = &a.output {
        if !a.deep_supervision {
            outs.retain(|k, _| k == "logits");
        }
        write_tensors(op, &outs).with_context(|| "writing the outputs")?;
        eprintln!(
            "wrote {} ({})",
            op.display(),
            outs.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
