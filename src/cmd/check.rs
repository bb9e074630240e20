//! `e2enc check`: the embedded correctness check. It runs the authors' released E2ENet (small width,
//! DSFF masks at density 0.2; weights, input and outputs shipped in tests/data/golden and compiled
//! into the binary) through e2enc, first with the reference interpreter, then optimized and
//! compiled to a C kernel bundle, and checks all four outputs each time; then it sizes the full
//! AMOS-CT model dense and at DSFF density 0.2.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use e2enc::TensorEngine;
use e2enc_codegen::compile::{compile, CompileOptions};
use e2enc_codegen::target::Target;
use e2enc_ir::e2enet::Model;
use e2enc_ir::e2enet::{
    build, model::apply_masks, model::check_weights, output_name, BuildOptions, DsffConfig,
    ModelConfig,
};
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::tensor::{relative_error, relative_error_l2};
use e2enc_ir::{interp, Weights};
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::exec::Engine;

use crate::report::print_summary;

const MODEL_JSON: &str = include_str!("../../tests/data/golden/model.json");
const WEIGHTS: &[u8] = include_bytes!("../../tests/data/golden/weights.safetensors");
const IO: &[u8] = include_bytes!("../../tests/data/golden/io.safetensors");

/// Check e2enc against the authors' released network (seconds)
///
/// Runs the embedded check: the released network's outputs (shipped in the binary) reproduced
/// by the interpreter and by a compiled C kernel bundle, then AMOS-CT's size (dense and at DSFF
/// density 0.2).
#[derive(clap::Args)]
pub struct Args {
    /// Largest accepted L2-relative error against the released network's outputs (the
    /// max-relative error may reach twice this: this case is ill-conditioned, see
    /// ir/tests/golden.rs).
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// Skip the AMOS-CT sizing (it initializes 23.9M random weights).
    #[arg(long)]
    skip_amos: bool,
    /// Compile the bundle of step 2 for this target (repeat to check several: x86-avx2,
    /// x86-avx512, portable, or native, the default; the host must be able to run it), or for
    /// cuda-sm80 / cuda-sm90: CUDA kernels in f32 (NVRTC needed: scripts/fetch-nvrtc.sh), run on
    /// this CPU by the host emulation.
    #[arg(long = "target", value_parser = parse_target)]
    targets: Vec<Target>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
}

pub fn main(a: Args) -> Result<ExitCode> {
    let cfg = ModelConfig::from_json(MODEL_JSON, "<embedded golden model.json>")?;
    let net = build(&cfg, &BuildOptions::default())?;
    let w = Weights::from_bytes(WEIGHTS).map_err(anyhow::Error::msg)?;
    check_weights(&net.params, &w).map_err(anyhow::Error::msg)?;
    let io = Weights::from_bytes(IO).map_err(anyhow::Error::msg)?;
    let input = io
        .get("input")
        .ok_or_else(|| anyhow::anyhow!("embedded io lacks `input`"))?;

    println!("1. The authors' released E2ENet (width 4, 5 pools, shift 5, DSFF density 0.2),");
    println!(
        "   input {:?}, run by e2enc's reference interpreter:",
        input.shape()
    );
    let feed: BTreeMap<String, _> = [("input".to_string(), (**input).clone())].into();
    let t0 = Instant::now();
    let outs = interp::run(&net.graph, &w, &feed, &[])?;
    let secs = t0.elapsed().as_secs_f64();
    let check = |outs: &BTreeMap<String, e2enc_ir::Tensor>| -> Result<bool> {
        let mut ok = true;
        for s in 0..=cfg.deep_supervision_heads {
            let name = output_name(s);
            let want = io
                .get(&format!("ds{s}"))
                .ok_or_else(|| anyhow::anyhow!("embedded io lacks ds{s}"))?;
            let got = outs
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("no output {name}"))?;
            let l2 = relative_error_l2(got, want).unwrap_or(f64::INFINITY);
            let max = relative_error(got, want).unwrap_or(f64::INFINITY);
            let pass = l2 < a.tolerance && max < 2.0 * a.tolerance;
            ok &= pass;
            println!(
                "   {name:<7} {:<18} vs PyTorch: L2-relative {l2:.1e}, max-relative {max:.1e}  {}",
                format!("{:?}", want.shape()),
                if pass { "ok" } else { "MISMATCH" }
            );
        }
        Ok(ok)
    };
    let mut ok = check(&outs)?;
    println!("   ({secs:.2} s)");

    let model = Model {
        path: "<embedded golden model.json>".into(),
        config: cfg.clone(),
        net: net.clone(),
        weights: Some(w.clone()),
        masks: None,
    };
    let targets = if a.targets.is_empty() {
        vec![Target::native()]
    } else {
        a.targets.clone()
    };
    for target in targets {
        if !target.host_supports() && !target.is_cuda() {
            anyhow::bail!("this host cannot run `--target {target}` bundles (check runs the bundle here); pick one it can: x86-avx2, x86-avx512, portable, native, or cuda-sm80/cuda-sm90 (emulated)");
        }
        ok &= check_compiled(&model, &feed, target, &check)?;
    }

    if !a.skip_amos {
        println!();
        println!("3. The AMOS-CT model (1 channel, 16 classes, widths 48..320, 128^3 patch):");
        let amos = ModelConfig::amos_ct();
        let net = build(&amos, &BuildOptions::default())?;
        let mut w = init_weights(&net.params, 0);
        let d = DsffConfig {
            density: 0.2,
            level0_density: 0.2,
        };
        apply_masks(&mut w, &init_masks(&net.params, &d, 0));
        println!("   with random weights and DSFF masks at density 0.2:");
        print_summary(&amos, &net, Some(&w), false)?;
    }
    if !ok {
        println!("\nFAILED: e2enc does not reproduce the released network");
        return Ok(ExitCode::from(2));
    }
    println!("\nok: e2enc reproduces the released network");
    Ok(ExitCode::SUCCESS)
}

/// Step 2 for one target: the network optimized, compiled for `target`, run by the runtime.
fn check_compiled(
    model: &Model,
    feed: &BTreeMap<String, e2enc_ir::Tensor>,
    target: Target,
    check: &dyn Fn(&BTreeMap<String, e2enc_ir::Tensor>) -> Result<bool>,
) -> Result<bool> {
    println!();
    if target.is_cuda() {
        println!(
            "2. The same network optimized and compiled to CUDA kernels (f32) for {target} (a \
             bundle), run by the runtime's host emulation:"
        );
    } else {
        println!(
            "2. The same network optimized and compiled to C kernels for {target} (a bundle), run by the runtime:"
        );
    }
    // Removed when `dir` goes, on every path out of here.
    let dir = tempfile::Builder::new()
        .prefix(&format!("e2enc-check-{target}-"))
        .tempdir()?;
    let opts = CompileOptions {
        deep_supervision: true,
        force: true,
        isa: target,
        // The released network's tolerance is f32's; TF32/bf16 have theirs (tests/cuda.rs).
        precision: Some(e2enc_codegen::precision::Precision::F32),
        ..CompileOptions::default()
    };

    let compiled = (|| -> Result<(f64, BTreeMap<String, e2enc_ir::Tensor>, f64, usize)> {
        let t0 = Instant::now();
        let r = compile(model, &dir.path().join("bundle"), &opts)?;
        let csecs = t0.elapsed().as_secs_f64();
        let load = LoadOptions {
            emulate: target.is_cuda(),
            ..LoadOptions::default()
        };
        let b = Bundle::load(&dir.path().join("bundle"), &load)?;
        let mut e = Engine::try_new(b, 0)?;
        e.run(feed)?; // warm-up
        let t1 = Instant::now();
        let outs = e.run(feed)?;
        Ok((csecs, outs, t1.elapsed().as_secs_f64(), r.kernels))
    })();
    drop(dir);
    let (csecs, bouts, rsecs, kernels) = compiled?;
    let ok = check(&bouts)?;
    println!(
        "   (compiled {kernels} kernels in {csecs:.2} s; one run {:.1} ms)",
        rsecs * 1e3
    );

    Ok(ok)
}
