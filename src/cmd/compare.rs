//! `e2enc compare`: accuracy gates. A candidate bundle (a bf16 or TF32 CUDA bundle, new weights)
//! and a reference bundle (the f32 one) run on the same inputs: the cases of an nnU-Net image
//! folder, segmented as `e2enc segment` does (per-class Dice of each against labels, the drop,
//! how far the two label maps agree), and one input tensor (relative L2, largest absolute
//! error and argmax agreement of every output). Each bundle runs on its own device. A gate the
//! candidate misses is named and the exit status is [`GATE_FAILED`]. The numbers are
//! `e2enc::gates`; this file loads, runs, prints and writes the JSON report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use e2enc::gates::{agreement, dice_drops, tensor_diff, ClassDrop, Gate, TensorDiff};
use e2enc::segmenting::{
    preprocessing, read_case, segment_volumes, CaseVolumes, Net, Prep, Probabilities,
};
use e2enc_runtime::bundle::Bundle;
use e2enc_runtime::exec::Engine;
use e2enc_segment::metrics::{evaluate, fmt_score, ClassScore, Report};
use e2enc_segment::nifti;
use e2enc_segment::window::WindowOptions;
use serde_json::{json, Value};

use super::DeviceArg;
use crate::util::{read_tensors, thousands};

/// The exit status when the candidate misses a gate (1 is an error, 2 a usage error).
pub const GATE_FAILED: u8 = 3;

/// The default of --max-dice-drop.
const DEFAULT_MAX_DICE_DROP: f64 = 0.005;

/// Hold a candidate bundle to a reference bundle: accuracy gates
///
/// Runs CANDIDATE (e.g. a bf16 or tf32 CUDA bundle, or new weights) and REFERENCE (e.g. the
/// f32 bundle of the same model) on the same inputs, prints how far the candidate moves from
/// the reference, and fails when it moves further than a gate allows.
///
/// -i DIR [--labels DIR]: every case of an nnU-Net-named image folder (CASE_0000.nii.gz, ...)
///   is segmented by both bundles as `e2enc segment` does (each bundle's own preprocessing,
///   --step, --tta). Printed per case: with labels (DIR/CASE.nii.gz), the Dice of each bundle
///   against them per class and the drop (reference minus candidate; positive: the candidate
///   is worse); always, the Dice of the candidate's labels against the reference's per class,
///   and the voxels where the two label maps agree. Gate --max-dice-drop (with --labels;
///   default 0.005): every class's drop, averaged over the cases, at most D. A Dice left
///   undefined (the class absent from the labels and from a prediction) counts as 1 in drops.
///
/// --input FILE: both bundles run on the tensor `input` of a safetensors file (as `e2enc run`;
///   both bundles must take its shape). Printed per output: relative L2 error
///   ||cand - ref|| / ||ref||, largest absolute error (and largest |ref|), and the voxels whose
///   argmax over the classes agrees. Gates (off unless given): --max-rel-l2 and
///   --min-argmax-agreement, for every output.
///
/// Devices: CPU bundles run on the CPU. With --emulate, every CUDA bundle of the two runs on
/// this CPU through the host emulation (slow: seconds to minutes per tile); without it, a
/// CUDA bundle runs on --device (candidate) or --reference-device, e.g. cuda:0.
///
/// Exit status: 0 when every gate passes, 3 when one fails (each failed gate is named), 1 on
/// an error (bundles of different channels or classes, tensor shapes that differ, a case
/// without labels, ...). --json FILE writes the whole report.
///
/// Examples:
///   e2enc compare gpu-bf16 cpu-f32 --emulate -i imagesTs --labels labelsTs
///   e2enc compare gpu-bf16 cpu-f32 --emulate --input x.safetensors --max-rel-l2 0.03
///   e2enc compare gpu-tf32 gpu-f32 --device cuda --reference-device cuda -i imagesTs
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle under test.
    candidate: PathBuf,
    /// The bundle it is held to.
    reference: PathBuf,
    /// Folder of nnU-Net-named images: channel k of case CASE is CASE_000k.nii.gz (or .nii).
    #[arg(short, long, value_name = "DIR")]
    input_dir: Option<PathBuf>,
    /// Ground truth for -i: DIR/CASE.nii.gz (or .nii) for every case, on its images' grid.
    #[arg(long, value_name = "DIR", requires = "input_dir")]
    labels: Option<PathBuf>,
    /// A safetensors file holding `input` [N, C, D, H, W] of both bundles' input shape.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Gate: the largest allowed drop of each class's Dice (mean over cases); needs --labels.
    /// Default 0.005.
    #[arg(long, value_name = "D", value_parser = parse_limit, requires = "labels")]
    max_dice_drop: Option<f64>,
    /// Gate: the largest allowed relative L2 error of each output on --input.
    #[arg(long, value_name = "E", value_parser = parse_limit, requires = "input")]
    max_rel_l2: Option<f64>,
    /// Gate: the smallest allowed share (0 to 1) of voxels whose argmax agrees, each output on
    /// --input.
    #[arg(long, value_name = "F", value_parser = parse_limit, requires = "input")]
    min_argmax_agreement: Option<f64>,
    /// Also write the report as JSON (an existing file only with --overwrite).
    #[arg(long, value_name = "FILE.json")]
    json: Option<PathBuf>,
    /// Replace an existing --json file.
    #[arg(long)]
    overwrite: bool,
    /// Tile step as a fraction of the patch (nnU-Net: 0.5).
    #[arg(long, default_value_t = 0.5)]
    step: f64,
    /// Test-time augmentation: average over all 8 mirrorings (8x the tiles).
    #[arg(long)]
    tta: bool,
    /// Preprocessing JSON (the model.json `preprocessing` object), replacing both bundles'.
    #[arg(long, value_name = "FILE.json")]
    preprocessing: Option<PathBuf>,
    /// Without a preprocessing config: keep each image's own spacing and z-score each channel.
    #[arg(long)]
    spacing_as_is: bool,
    /// Threads of each bundle on the CPU (0: all cores).
    #[arg(long, value_parser = crate::cmd::parse_threads, default_value_t = 0)]
    threads: usize,
    /// Run every CUDA bundle of the two on this CPU through the host emulation.
    #[arg(long)]
    emulate: bool,
    /// Where the candidate runs: cpu, or cuda / cuda:N (a CUDA bundle on NVIDIA GPU N).
    #[arg(long, value_name = "cpu|cuda|cuda:N", value_parser = super::parse_device, default_value = "cpu")]
    device: DeviceArg,
    /// Where the reference runs: cpu, or cuda / cuda:N.
    #[arg(long, value_name = "cpu|cuda|cuda:N", value_parser = super::parse_device, default_value = "cpu")]
    reference_device: DeviceArg,
    #[command(flatten)]
    trust: super::TrustArgs,
}

/// A gate's limit: a finite number.
fn parse_limit(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a finite number")),
    }
}

/// One of the two bundles, loaded on its device.
struct Side {
    role: &'static str,
    dir: PathBuf,
    engine: Engine,
    net: Net,
    /// `target, precision, where it runs`.
    about: String,
}

impl Side {
    fn load(a: &Args, role: &'static str, dir: &Path, device: DeviceArg) -> Result<Side> {
        let b = Bundle::load(dir, &a.trust.load_options(false))
            .with_context(|| format!("loading the {role} bundle {}", dir.display()))?;
        let net = Net::of(&b).with_context(|| format!("the {role} bundle"))?;
        let m = &b.manifest;
        let target = m.target.clone().unwrap_or_else(|| "x86-avx2".into());
        let precision = match (&m.cuda, &m.precision) {
            (Some(c), _) => c.precision.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => "f32".to_string(),
        };
        let cuda = m.cuda.is_some();
        let (engine, place) = match (cuda && a.emulate, device) {
            (true, DeviceArg::Cpu) => {
                let e = Engine::try_new(b.emulated()?, a.threads)?;
                let t = e.threads();
                (e, format!("host emulation, {t} threads"))
            }
            (true, gpu) => bail!(
                "--emulate runs the CUDA bundle {} on this CPU, but {} {gpu} asks for a GPU: \
                 drop one of the two",
                dir.display(),
                if role == "candidate" {
                    "--device"
                } else {
                    "--reference-device"
                }
            ),
            (false, dev) => {
                let e = super::engine_on(dev, b, a.threads)
                    .with_context(|| format!("the {role} bundle {}", dir.display()))?;
                let d = e.device().describe();
                (e, d)
            }
        };
        Ok(Side {
            role,
            dir: dir.to_path_buf(),
            engine,
            net,
            about: format!("{target}, {precision}, {place}"),
        })
    }

    fn json(&self) -> Value {
        json!({ "bundle": self.dir.display().to_string(), "about": self.about })
    }
}

pub fn main(a: Args) -> Result<ExitCode> {
    if a.input_dir.is_none() && a.input.is_none() {
        bail!(
            "nothing to compare on: give -i IMAGES_DIR (with --labels LABELS_DIR for the Dice \
             gate) and/or --input FILE.safetensors"
        );
    }
    if !(a.step > 0.0 && a.step <= 1.0) {
        bail!("--step {} must be in (0, 1]", a.step);
    }
    if let Some(f) = a.min_argmax_agreement {
        if !(0.0..=1.0).contains(&f) {
            bail!("--min-argmax-agreement {f} must be a share from 0 to 1");
        }
    }
    if let Some(j) = &a.json {
        let mut inputs = vec![a.candidate.as_path(), a.reference.as_path()];
        inputs.extend(a.input.as_deref());
        super::check_output("--json", j, a.overwrite, &inputs)?;
    }
    let mut cand = Side::load(&a, "candidate", &a.candidate, a.device)?;
    let mut refr = Side::load(&a, "reference", &a.reference, a.reference_device)?;
    if a.emulate && !(is_emulated(&cand) || is_emulated(&refr)) {
        bail!(
            "--emulate runs CUDA bundles, and neither {} nor {} is one (run without --emulate)",
            a.candidate.display(),
            a.reference.display()
        );
    }
    for (what, c, r) in [
        ("input channels", cand.net.channels, refr.net.channels),
        ("classes", cand.net.classes, refr.net.classes),
    ] {
        if c != r {
            bail!(
                "the bundles are not of one task: the candidate {} has {c} {what}, the \
                 reference {} has {r}",
                a.candidate.display(),
                a.reference.display()
            );
        }
    }
    println!("candidate  {} ({})", cand.dir.display(), cand.about);
    println!("reference  {} ({})", refr.dir.display(), refr.about);

    let mut gates = Vec::new();
    let mut report = serde_json::Map::new();
    report.insert("candidate".into(), cand.json());
    report.insert("reference".into(), refr.json());
    if let Some(x) = &a.input {
        let diffs = compare_tensors(&mut cand, &mut refr, x)?;
        for (name, d) in &diffs {
            if let Some(limit) = a.max_rel_l2 {
                gates.push(Gate::at_most(
                    "--max-rel-l2",
                    limit,
                    d.rel_l2,
                    format!("{name} rel. L2 {}", sci(d.rel_l2)),
                ));
            }
            if let Some(limit) = a.min_argmax_agreement {
                gates.push(Gate::at_least(
                    "--min-argmax-agreement",
                    limit,
                    d.argmax_agreement(),
                    format!(
                        "{name} argmax agreement {} of {} voxels",
                        d.argmax_same, d.argmax_voxels
                    ),
                ));
            }
        }
        report.insert(
            "tensors".into(),
            diffs
                .iter()
                .map(|(name, d)| {
                    json!({
                        "output": name,
                        "rel_l2": num(d.rel_l2),
                        "max_abs_err": num(d.max_abs_err),
                        "max_abs_ref": num(d.max_abs_ref),
                        "argmax_same": d.argmax_same,
                        "argmax_voxels": d.argmax_voxels,
                        "argmax_agreement": num(d.argmax_agreement()),
                    })
                })
                .collect(),
        );
    }
    if let Some(dir) = &a.input_dir {
        let (cases, drops) = compare_folder(&a, &mut cand, &mut refr, dir)?;
        if let Some(drops) = &drops {
            let limit = a.max_dice_drop.unwrap_or(DEFAULT_MAX_DICE_DROP);
            if let Some(w) = drops
                .iter()
                .max_by(|x, y| x.drop.total_cmp(&y.drop))
                .cloned()
            {
                gates.push(Gate::at_most(
                    "--max-dice-drop",
                    limit,
                    w.drop,
                    format!(
                        "class {} Dice drop {:.4} ({} -> {}, over {} case(s))",
                        w.class,
                        w.drop,
                        fmt_score(w.reference, 4),
                        fmt_score(w.candidate, 4),
                        cases.len()
                    ),
                ));
            }
            report.insert(
                "dice".into(),
                drops
                    .iter()
                    .map(|d| {
                        json!({
                            "class": d.class,
                            "reference": num(d.reference),
                            "candidate": num(d.candidate),
                            "drop": num(d.drop),
                            "worst_case_drop": num(d.worst_case_drop),
                        })
                    })
                    .collect(),
            );
        }
        report.insert("cases".into(), cases.into());
    }

    let failed: Vec<&Gate> = gates.iter().filter(|g| !g.pass()).collect();
    for g in &gates {
        println!(
            "gate {} {}: {}: {}",
            g.flag,
            g.limit,
            g.what,
            if g.pass() { "pass" } else { "FAILED" }
        );
    }
    report.insert(
        "gates".into(),
        gates
            .iter()
            .map(|g| {
                json!({
                    "gate": g.flag,
                    "limit": g.limit,
                    "value": num(g.value),
                    "what": g.what,
                    "pass": g.pass(),
                })
            })
            .collect(),
    );
    report.insert("pass".into(), failed.is_empty().into());
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&Value::Object(report))? + "\n";
        e2enc_ir::weights::write_atomic(p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<String> = failed
        .iter()
        .map(|g| {
            format!(
                "{} {} ({}: {})",
                g.flag,
                g.limit,
                g.what,
                if g.upper { "above" } else { "below" }
            )
        })
        .collect();
    eprintln!(
        "error: the candidate {} failed {} gate(s): {}",
        a.candidate.display(),
        failed.len(),
        list.join("; ")
    );
    Ok(ExitCode::from(GATE_FAILED))
}

fn is_emulated(s: &Side) -> bool {
    matches!(
        s.engine.bundle.code,
        e2enc_runtime::bundle::Code::Emulated(_)
    )
}

/// A number for the JSON report: non-finite ones as the strings `n/a`, `inf`, `-inf`.
fn num(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::String(fmt_score(v, 0))
    }
}

fn sci(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2e}")
    } else {
        fmt_score(v, 0)
    }
}

/// A bundle's f32 outputs: name, shape, values.
type Outputs = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Runs one bundle on `x` (its input port's shape): every f32 output, and the seconds it took.
fn run_tensor(s: &mut Side, x: &[f32]) -> Result<(Outputs, f64)> {
    let t0 = Instant::now();
    let input = s.net.input.clone();
    s.engine.set_input(&input, x)?;
    s.engine.execute()?;
    let secs = t0.elapsed().as_secs_f64();
    let mut outs = Vec::new();
    for p in s.engine.bundle.manifest.outputs.clone() {
        let o = s.engine.output(&p.name)?;
        if o.dtype() != "f32" {
            continue;
        }
        let mut v = vec![0f32; o.shape().iter().product()];
        o.copy_to(&mut v)?;
        outs.push((p.name.clone(), o.shape().to_vec(), v));
    }
    Ok((outs, secs))
}

/// Both bundles on the tensor `input` of `file`: one [`TensorDiff`] per output both have.
fn compare_tensors(
    cand: &mut Side,
    refr: &mut Side,
    file: &Path,
) -> Result<Vec<(String, TensorDiff)>> {
    let tensors = read_tensors(file)?;
    let Some(x) = tensors.get("input") else {
        let names: Vec<&String> = tensors.keys().collect();
        bail!(
            "{} has no tensor named `input` (it has: {names:?})",
            file.display()
        );
    };
    let values = x
        .as_f32()
        .ok_or_else(|| anyhow!("{}: `input` must be f32", file.display()))?;
    for s in [&*cand, &*refr] {
        let want = &s.engine.bundle.manifest.inputs[0].shape;
        if x.shape() != want.as_slice() {
            bail!(
                "{}: `input` is {:?}, but the {} bundle {} takes {want:?} (compile both bundles \
                 for one --batch and --patch, and give an input of that shape)",
                file.display(),
                x.shape(),
                s.role,
                s.dir.display()
            );
        }
    }
    let (co, cs) = run_tensor(cand, values)?;
    let (ro, rs) = run_tensor(refr, values)?;
    eprintln!(
        "ran {}: candidate {cs:.2} s, reference {rs:.2} s",
        file.display()
    );
    println!(
        "\non {} `input` {:?}:\n{:<8} {:>20} {:>10} {:>12} {:>12} {:>24}",
        file.display(),
        x.shape(),
        "output",
        "shape",
        "rel_l2",
        "max_abs_err",
        "max_abs_ref",
        "argmax_agreement"
    );
    let mut diffs = Vec::new();
    for (name, shape, c) in &co {
        let Some((_, rshape, r)) = ro.iter().find(|o| &o.0 == name) else {
            eprintln!("note: the reference has no output `{name}`; not compared");
            continue;
        };
        if shape != rshape {
            bail!("output `{name}` is {shape:?} in the candidate and {rshape:?} in the reference");
        }
        let d = tensor_diff(c, r, shape).map_err(|m| anyhow!("output `{name}`: {m}"))?;
        println!(
            "{:<8} {:>20} {:>10} {:>12} {:>12} {:>24}",
            name,
            format!("{shape:?}"),
            sci(d.rel_l2),
            sci(d.max_abs_err),
            sci(d.max_abs_ref),
            format!(
                "{:.4}% ({}/{})",
                100.0 * d.argmax_agreement(),
                d.argmax_same,
                d.argmax_voxels
            )
        );
        diffs.push((name.clone(), d));
    }
    for (name, _, _) in &ro {
        if !co.iter().any(|o| &o.0 == name) {
            eprintln!("note: the candidate has no output `{name}`; not compared");
        }
    }
    if diffs.is_empty() {
        bail!("the two bundles have no output name in common");
    }
    Ok(diffs)
}

/// The labels file of `case` in `dir`: CASE.nii.gz or CASE.nii.
fn label_file(dir: &Path, case: &str) -> Result<PathBuf> {
    for ext in ["nii.gz", "nii"] {
        let p = dir.join(format!("{case}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{}: no labels for case {case} (looked for {case}.nii.gz and {case}.nii)",
        dir.display()
    )
}

/// Segments one case with one bundle: labels and seconds in the network.
fn segment_with(
    s: &mut Side,
    prep: &Prep,
    window: &WindowOptions,
    case: &mut CaseVolumes,
    label: &str,
) -> Result<(Vec<u16>, f64)> {
    let role = s.role;
    let r = segment_volumes(
        &mut s.engine,
        &s.net,
        prep,
        window,
        case,
        true,
        Probabilities::None,
        |g, n| {
            eprintln!(
                "{label}: {role}: {n} tiles on a {}x{}x{} grid",
                g[0], g[1], g[2]
            )
        },
        |_, _| {},
    )
    .with_context(|| format!("{label}: the {role} bundle"))?;
    Ok((r.segmentation.labels, r.network_seconds))
}

/// Both bundles on every case of `dir`: the per-case JSON records and, with labels, the
/// per-class Dice drops over all cases.
#[allow(clippy::type_complexity)]
fn compare_folder(
    a: &Args,
    cand: &mut Side,
    refr: &mut Side,
    dir: &Path,
) -> Result<(Vec<Value>, Option<Vec<ClassDrop>>)> {
    let found = e2enc::segmenting::scan_cases(dir)?;
    let channels = cand.net.channels;
    let classes = cand.net.classes;
    let mut cases = Vec::new();
    for (name, chans) in found {
        let images = e2enc::segmenting::channel_files(&name, chans, channels)?;
        let labels = match &a.labels {
            Some(d) => Some(label_file(d, &name)?),
            None => None,
        };
        cases.push((name, images, labels));
    }
    let prep_of = |s: &Side| {
        preprocessing(
            &s.dir,
            &s.engine.bundle.manifest.model,
            a.preprocessing.as_deref(),
            a.spacing_as_is,
            channels,
        )
        .with_context(|| format!("the {} bundle", s.role))
    };
    let (cprep, rprep) = (prep_of(cand)?, prep_of(refr)?);
    if a.preprocessing.is_none()
        && cand.engine.bundle.manifest.model.get("preprocessing")
            != refr.engine.bundle.manifest.model.get("preprocessing")
    {
        eprintln!("note: the two bundles carry different preprocessing configs");
    }
    if cand.net.patch != refr.net.patch {
        eprintln!(
            "note: the candidate's patch {:?} is not the reference's {:?}",
            cand.net.patch, refr.net.patch
        );
    }
    let window = |s: &Side| WindowOptions {
        step: a.step,
        tta: a.tta,
        batch: s.net.batch,
        ..Default::default()
    };
    let (cwin, rwin) = (window(cand), window(refr));
    let mut records = Vec::new();
    let mut scored: Vec<(Vec<ClassScore>, Vec<ClassScore>)> = Vec::new();
    let n = cases.len();
    for (k, (name, images, labels)) in cases.iter().enumerate() {
        let label = format!("[{}/{n}] {name}", k + 1);
        let mut vols = read_case(images, None)?;
        let mut volumes = CaseVolumes::take(&mut vols);
        let gt = match labels {
            Some(p) => {
                let g = nifti::read(p)?;
                nifti::same_grid(&vols[0], &g).map_err(|m| {
                    anyhow!(
                        "{} and {} are not on one grid: {m}",
                        p.display(),
                        images[0].display()
                    )
                })?;
                Some((super::evaluate::labels(&g, p)?, p))
            }
            None => None,
        };
        let (rl, rs) = segment_with(refr, &rprep, &rwin, &mut volumes, &label)?;
        let (cl, cs) = segment_with(cand, &cprep, &cwin, &mut volumes, &label)?;
        eprintln!("{label}: network time: candidate {cs:.1} s, reference {rs:.1} s");
        let (shape, spacing) = (volumes.shape, volumes.spacing);
        let vs_ref = evaluate(&cl, &rl, shape, spacing, Some(classes))
            .context("scoring the candidate's labels against the reference's")?;
        let same = agreement(&cl, &rl);
        let mut rec = json!({
            "case": name,
            "voxels": cl.len(),
            "voxels_agree": same,
            "candidate_vs_reference": Report::new(vs_ref.clone()),
            "network_seconds": {"candidate": cs, "reference": rs},
        });
        println!("\n{name}");
        if let Some((g, p)) = &gt {
            let score = |pred: &[u16]| {
                evaluate(pred, g, shape, spacing, Some(classes))
                    .with_context(|| format!("scoring against {}", p.display()))
            };
            let (r, c) = (score(&rl)?, score(&cl)?);
            let drops = dice_drops(&[(&r, &c)]);
            println!(
                "{:>6}  {:>8}  {:>9}  {:>8}  {:>11}",
                "class", "dice_ref", "dice_cand", "drop", "dice_vs_ref"
            );
            for (d, v) in drops.iter().zip(&vs_ref) {
                println!(
                    "{:>6}  {:>8}  {:>9}  {:>8.4}  {:>11}",
                    d.class,
                    fmt_score(d.reference, 4),
                    fmt_score(d.candidate, 4),
                    d.drop,
                    fmt_score(v.dice, 4)
                );
            }
            rec["reference"] = serde_json::to_value(Report::new(r.clone()))?;
            rec["candidate"] = serde_json::to_value(Report::new(c.clone()))?;
            scored.push((r, c));
        } else {
            println!(
                "{:>6}  {:>11}  {:>13}  {:>13}",
                "class", "dice_vs_ref", "cand_voxels", "ref_voxels"
            );
            for v in &vs_ref {
                println!(
                    "{:>6}  {:>11}  {:>13}  {:>13}",
                    v.class,
                    fmt_score(v.dice, 4),
                    v.pred_voxels,
                    v.gt_voxels
                );
            }
        }
        println!(
            "labels agree on {:.4}% of {} voxels ({} differ)",
            100.0 * same as f64 / cl.len().max(1) as f64,
            thousands(cl.len() as u64),
            thousands((cl.len() - same) as u64)
        );
        records.push(rec);
    }
    if a.labels.is_none() {
        println!("\nno --labels: Dice against ground truth and its gate not checked");
        return Ok((records, None));
    }
    let pairs: Vec<(&[ClassScore], &[ClassScore])> = scored
        .iter()
        .map(|(r, c)| (r.as_slice(), c.as_slice()))
        .collect();
    let drops = dice_drops(&pairs);
    if n > 1 {
        println!(
            "\nmean over {n} cases\n{:>6}  {:>8}  {:>9}  {:>8}  {:>15}",
            "class", "dice_ref", "dice_cand", "drop", "worst_case_drop"
        );
        for d in &drops {
            println!(
                "{:>6}  {:>8}  {:>9}  {:>8.4}  {:>15.4}",
                d.class,
                fmt_score(d.reference, 4),
                fmt_score(d.candidate, 4),
                d.drop,
                d.worst_case_drop
            );
        }
    }
    Ok((records, Some(drops)))
}
