//! `e2enc demo`: the README's main job, end to end on real data in one command.
//!
//! 1. fetch the MNI ICBM152 2009a templates (T1, grey- and white-matter probability maps) from the
//!    nilearn wheel on PyPI (the embedded scripts/fetch-test-data.sh; cached in OUT/data);
//! 2. build an nnU-Net raw dataset: 2 mm voxels, labels background / grey / white matter by argmax
//!    of the probability maps, the left hemisphere for training, the right one held out;
//! 3. train a small E2ENet (width 8, four pools, DSFF density 0.2 with prune/regrow) on the left
//!    hemisphere (`e2enc train`; Ctrl-C stops with a checkpoint, a rerun resumes);
//! 4. compile the checkpoint into a kernel bundle (`e2enc compile`);
//! 5. segment the right hemisphere with it (`e2enc segment`, sliding window, preview PNG) and
//!    score it against its labels (`e2enc evaluate`): Dice and HD95 per class.
//!
//! Every step is the public subcommand's code, so the demo exercises what a user runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use e2enc_codegen::compile::{compile, CompileOptions};
use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_train::mni::build_mni_dataset;
use e2enc_train::trainer::{TrainOptions, Trainer};

use super::{evaluate, segment, train};

const FETCH_SCRIPT: &str = include_str!("../../scripts/fetch-test-data.sh");
const T1: &str = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz";
const GM: &str = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz";
const WM: &str = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz";

/// Train, compile and run E2ENet on a real brain MRI, in one command
///
/// The MRI is the MNI ICBM152 template. The demo fetches it through PyPI (the nilearn wheel;
/// needs python3 with pip the first time), builds grey/white-matter labels, trains a small
/// E2ENet with dynamic sparse DSFF on the left hemisphere, compiles it to C kernels, segments the
/// right hemisphere and prints its Dice per class. The default run took 2 min 22 s on 2 cores
/// (release build, download included; see README); everything lands in OUT.
///
/// Rerunning continues an interrupted training (Ctrl-C saves a checkpoint) and reuses a
/// finished one; --fresh starts over. `e2enc check` is the quick correctness check against the
/// authors' released network.
#[derive(clap::Args)]
pub struct Args {
    /// Output folder.
    #[arg(short, long, default_value = "e2enc-demo")]
    out: PathBuf,
    /// Folder holding the three MNI template files already (skips the download).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Iterations (batches of 2 patches) per epoch.
    #[arg(long, default_value_t = 25)]
    iters: usize,
    /// Down-sampling of the 1 mm template (2: 2 mm voxels).
    #[arg(long, default_value_t = 2)]
    factor: usize,
    /// DSFF density.
    #[arg(long, default_value_t = 0.2)]
    density: f64,
    /// Stop training after this many minutes (with a checkpoint), whatever the epoch.
    #[arg(long, default_value_t = 11.0)]
    time_limit: f64,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = crate::cmd::parse_threads)]
    threads: Option<usize>,
    /// Delete OUT's earlier run first.
    #[arg(long)]
    fresh: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let t0 = Instant::now();
    let threads = a.threads.unwrap_or_else(super::default_threads);
    if a.fresh {
        for sub in [
            "dataset",
            "run",
            "bundle",
            "mni_right_pred.nii.gz",
            "preview.png",
        ] {
            let p = a.out.join(sub);
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;

    println!("1. MNI ICBM152 2009a templates (nilearn wheel, PyPI)");
    let data = match &a.data {
        Some(d) => d.clone(),
        None => fetch(&a.out.join("data"))?,
    };
    for f in [T1, GM, WM] {
        if !data.join(f).is_file() {
            bail!("{} is missing in {}", f, data.display());
        }
    }

    println!(
        "2. Dataset: {} mm voxels, left hemisphere for training, right held out",
        a.factor
    );
    let ds_dir = a.out.join("dataset");
    if !ds_dir.join("dataset.json").is_file() {
        let ds = build_mni_dataset(
            &data.join(T1),
            &data.join(GM),
            &data.join(WM),
            &ds_dir,
            a.factor,
        )?;
        println!(
            "   grid {:?}, split at x = {}; left voxels (bg/GM/WM) {:?}, right {:?}",
            ds.dims, ds.split, ds.left_counts, ds.right_counts
        );
    } else {
        println!("   reusing {}", ds_dir.display());
    }

    println!(
        "3. Training a small E2ENet (width 8, 4 pools, DSFF density {})",
        a.density
    );
    let run = a.out.join("run");
    let mut trainer = if e2enc_train::checkpoint::find(&run).is_some() {
        println!("   continuing the run in {}", run.display());
        Trainer::resume(&run, threads)?
    } else {
        let opts = TrainOptions {
            epochs: a.epochs,
            iters_per_epoch: a.iters,
            val_iters: 4,
            batch: 2,
            patch: Some([48, 64, 48]),
            density: a.density,
            update_frequency: 100,
            lr: 0.01,
            seed: a.seed,
            augment: true,
            kernels: Default::default(),
            target: None,
            precision: Default::default(),
            conv_math: Default::default(),
        };
        Trainer::create(&ds_dir, None, &run, opts, threads, |m| println!("   {m}"))?
    };
    train::install_sigint();
    let limit = Duration::from_secs_f64(a.time_limit * 60.0);
    let code = train::run(&mut trainer, Some(limit))?;
    if train::stop_requested() {
        return Ok(code);
    }
    let train_secs = trainer.history().iter().map(|h| h.seconds).sum::<f64>();
    println!(
        "   {} epochs, {:.0} s of training; curves in {}",
        trainer.history().len(),
        train_secs,
        run.join("training.png").display()
    );

    println!("4. Compiling the checkpoint to C kernels");
    let model_json = run.join("checkpoint/model.json");
    let model = Model::load(&model_json, &BuildOptions::default())?;
    let bundle = a.out.join("bundle");
    let tc = Instant::now();
    let rep = compile(
        &model,
        &bundle,
        &CompileOptions {
            force: true,
            ..CompileOptions::default()
        },
    )?;
    println!(
        "   {} kernels in {:.1} s -> {}",
        rep.kernels,
        tc.elapsed().as_secs_f64(),
        bundle.display()
    );

    println!("5. Segmenting the held-out right hemisphere");
    let image = ds_dir.join("imagesTs/mni_right_0000.nii.gz");
    let truth = ds_dir.join("labelsTs/mni_right.nii.gz");
    let pred = a.out.join("mni_right_pred.nii.gz");
    let preview = a.out.join("preview.png");
    let threads_s = threads.to_string();
    let seg = SegmentCli::try_parse_from([
        "segment".as_ref(),
        bundle.as_os_str(),
        image.as_os_str(),
        "-o".as_ref(),
        pred.as_os_str(),
        "--preview".as_ref(),
        preview.as_os_str(),
        "--overwrite".as_ref(),
        "--threads".as_ref(),
        threads_s.as_ref(),
    ])?;
    let c = segment::main(seg.a)?;
    if c != ExitCode::SUCCESS {
        bail!("segmentation failed");
    }
    let json = a.out.join("scores.json");
    let ev = EvaluateCli::try_parse_from([
        "evaluate".as_ref(),
        pred.as_os_str(),
        truth.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
        "--overwrite".as_ref(),
    ])?;
    evaluate::main(ev.a)?;
    let dice = read_dice(&json)?;
    println!(
        "\nheld-out right hemisphere: grey matter Dice {:.3} (target 0.75), white matter Dice \
         {:.3} (target 0.85); total {:.1} min",
        dice[0],
        dice[1],
        t0.elapsed().as_secs_f64() / 60.0
    );
    println!("preview: {}", preview.display());
    if dice[0] >= 0.75 && dice[1] >= 0.85 {
        println!("ok: both targets reached");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("below target: train longer (--epochs, --time-limit) and rerun");
        Ok(ExitCode::from(2))
    }
}

#[derive(Parser)]
struct SegmentCli {
    #[command(flatten)]
    a: segment::Args,
}

#[derive(Parser)]
struct EvaluateCli {
    #[command(flatten)]
    a: evaluate::Args,
}

/// Dice of classes 1 and 2 from `e2enc evaluate --json`.
fn read_dice(path: &Path) -> Result<[f64; 2]> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let classes = v["classes"]
        .as_array()
        .context("scores.json has no classes")?;
    let dice = |label: u64| {
        classes
            .iter()
            .find(|c| c["class"].as_u64() == Some(label))
            .and_then(|c| c["dice"].as_f64())
            .unwrap_or(f64::NAN)
    };
    Ok([dice(1), dice(2)])
}

/// Runs the embedded fetch script into `dir` (idempotent) and returns `dir`.
fn fetch(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(FETCH_SCRIPT)
        .env("E2ENC_DATA_DIR", dir)
        .status()
        .context("running bash for the template download")?;
    if !status.success() {
        bail!(
            "downloading the MNI templates failed (needs python3 with pip and access to PyPI); \
             or pass --data with a folder holding {T1}, {GM} and {WM}"
        );
    }
    Ok(dir.to_path_buf())
}
