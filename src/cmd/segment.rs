//! `e2enc segment`: CT/MRI volumes in, label maps out, through a compiled bundle. This file owns
//! the command line, file handling (one case or an nnU-Net-named folder, or part K of N of a
//! folder with a JSON summary), geometry checks and progress; the per-case work (preprocess, sliding window, restore) is
//! `e2enc_segment::pipeline::segment_case`, shared with the training demo.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use e2enc::segmenting::{
    channel_files, preprocessing, read_case, scan_cases, segment_volumes, CaseResult, CaseVolumes,
    Net, Prep, Probabilities,
};
use e2enc_runtime::bundle::Bundle;
use e2enc_runtime::bundle::LoadOptions;
use e2enc_runtime::exec::Engine;
use e2enc_segment::nifti::{self, ProbabilityWriter};
use e2enc_segment::window::WindowOptions;
use indicatif::{ProgressBar, ProgressStyle};

use crate::util::thousands;

use super::{identity, same_file};

/// Segment CT or MRI volumes with a compiled bundle into label maps
///
/// One case: give the bundle, one NIfTI file per input channel (in the model's channel order)
/// and -o OUT.nii.gz. A folder: -i IN_DIR -o OUT_DIR, with nnU-Net naming: channel k of case
/// `abc` is IN_DIR/abc_000k.nii.gz and its labels go to OUT_DIR/abc.nii.gz; cases whose output
/// exists are skipped unless --overwrite.
///
/// Many machines, no coordinator: --part K/N (1 <= K <= N) runs a deterministic share of the
/// folder's cases, round-robin over their sorted names: the case at 0-based index i belongs to
/// part (i % N) + 1. Every part sees the same list, whatever is already done, so N jobs with
/// K = 1..N (a Slurm array, a Kubernetes indexed Job, GNU parallel) together cover every case
/// exactly once; each case's files are its own, and a rerun part skips its finished cases.
/// --summary FILE.json reports the run (rewritten after each case, atomically):
///   {"format": "e2enc-segment-summary/1", "bundle", "input_dir", "output_dir",
///    "part": {"k", "n"} or null, "complete": false until the run ends,
///    "cases": [{"case", "status": segmented|skipped|failed|pending, "error" (failed only),
///               "outputs": {"labels", "probabilities", "preview"}, "seconds"}],
///    "totals": {"cases", "segmented", "skipped", "failed", "pending", "seconds"}}
/// "skipped" is a case whose labels existed; an existing FILE is replaced when it is this
/// part's summary from an earlier run, anything else only with --overwrite.
///
/// Each case is preprocessed as nnU-Net v1 does, following the `preprocessing` section of the
/// model.json the bundle was compiled from (transpose, crop to non-zero, resample to the target
/// spacing, normalise), predicted tile by tile (step 0.5 of the patch, Gaussian weighting,
/// --tta: all 8 mirrorings), and taken back to the input's grid. The labels are written as
/// uint8 (uint16 past 255 classes) with the first channel's affine, qform and sform. All
/// channels must share one grid (shape and affine).
///
/// Memory: the bundle's arena, the preprocessed image (4 bytes a voxel of the network grid),
/// the labels (1 byte a voxel), and the window's accumulators up to --accumulator-memory (the
/// rest in an unnamed scratch file in --scratch-dir; the results do not depend on it). The image
/// as read is freed once preprocessed unless --preview draws it.
///
/// Examples:
///   e2enc segment amos-bundle ct.nii.gz -o ct_labels.nii.gz
///   e2enc segment brats-bundle t1.nii.gz t1ce.nii.gz t2.nii.gz flair.nii.gz -o seg.nii.gz --tta
///   e2enc segment amos-bundle -i imagesTs -o predTs --preview previews
///   e2enc segment bundle mr.nii.gz -o seg.nii.gz --probabilities probs.nii.gz --preview seg.png
///   e2enc segment amos-bundle -i imagesTs -o predTs --part 3/8 --summary predTs/part-3.json
///   # Slurm (#SBATCH --array=1-8):
///   e2enc segment amos-bundle -i imagesTs -o predTs --part ${SLURM_ARRAY_TASK_ID}/8
///   # Kubernetes indexed Job (0-based index):
///   e2enc segment amos-bundle -i imagesTs -o predTs --part $((JOB_COMPLETION_INDEX + 1))/8
///   # then, over the merged folder:
///   e2enc evaluate predTs labelsTs --json scores.json
///
/// A bundle compiled from a model.json without `preprocessing` needs --preprocessing FILE.json
/// (the same object, see docs/model-json.md) or --spacing-as-is.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The compiled bundle folder (from `e2enc compile`).
    bundle: PathBuf,
    /// One NIfTI file (.nii or .nii.gz) per input channel, in the model's order.
    images: Vec<PathBuf>,
    /// Output label file (.nii or .nii.gz); with -i, the output folder (created if missing).
    #[arg(short, long)]
    output: PathBuf,
    /// Input folder of nnU-Net-named images (CASE_0000.nii.gz, CASE_0001.nii.gz, ...).
    #[arg(short, long, conflicts_with = "images")]
    input_dir: Option<PathBuf>,
    /// Replace existing outputs (default: a single case refuses, a folder skips them).
    #[arg(long)]
    overwrite: bool,
    /// With -i: run only part K of N (1 <= K <= N <= 100000) of the folder's cases, those whose
    /// 0-based index in name order is K-1 modulo N (round-robin).
    #[arg(long, value_name = "K/N", value_parser = parse_part, allow_hyphen_values = true)]
    part: Option<Part>,
    /// With -i: write a JSON report of this run (cases with status, outputs and seconds; see
    /// above) to this .json file, e.g. one per part.
    #[arg(long, value_name = "FILE.json")]
    summary: Option<PathBuf>,
    /// Test-time augmentation: average over all 8 mirrorings (8x the tiles).
    #[arg(long)]
    tta: bool,
    /// Tile step as a fraction of the patch (nnU-Net: 0.5).
    #[arg(long, default_value_t = 0.5)]
    step: f64,
    /// Also write the class probabilities: one 4-D float32 NIfTI, frame k = class k, on the
    /// input's grid. With -i, a folder (CASE.nii.gz in it). Written while the window runs, not
    /// held in memory; a .nii.gz (or a model whose axis order is not NIfTI's) goes through a
    /// scratch file next to it as large as the uncompressed map.
    #[arg(long)]
    probabilities: Option<PathBuf>,
    /// Write a PNG of three orthogonal slices with the labels over the first channel. With -i,
    /// a folder (CASE.png in it).
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Preprocessing JSON (the model.json `preprocessing` object), replacing the bundle's.
    #[arg(long)]
    preprocessing: Option<PathBuf>,
    /// Without a preprocessing config: keep each image's own spacing (no resampling) and
    /// z-score every channel over the whole image.
    #[arg(long)]
    spacing_as_is: bool,
    /// For 4-D inputs (several volumes, e.g. time points): segment volume K (0-based) of each;
    /// 3-D inputs are read as they are.
    #[arg(long, value_name = "K")]
    frame: Option<u64>,
    /// Memory for the sliding window's probability accumulators (e.g. 256MiB, 1.5GiB, or all):
    /// the running sums of the planes under the current row of tiles, 2 GiB for a 512x512 CT with
    /// 16 classes and a 128^3 patch. Beyond it, blocks that no tile needs now wait in a scratch
    /// file and come back bit for bit (labels and probabilities are the same whatever the size);
    /// the blocks one tile can touch stay in memory whatever it says (200 MiB there).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory, default_value = "256MiB", allow_hyphen_values = true)]
    accumulator_memory: u64,
    /// Folder of the accumulators' scratch file (default: the labels' folder; avoid a tmpfs,
    /// which is memory). The file has no name: nothing is left behind, even after a crash.
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
    /// Threads (0: all cores).
    #[arg(long, value_parser = crate::cmd::parse_threads, default_value_t = 0)]
    threads: usize,
    /// Recompile kernels.c on this host instead of loading kernels.so.
    #[arg(long)]
    rebuild: bool,
    /// For a CUDA bundle (`--target cuda-sm80|cuda-sm90`): run its kernels on this CPU through
    /// the host emulation (kernels.cu compiled as C++ with a CUDA shim; slow, for checking
    /// results without a GPU).
    #[arg(long)]
    emulate: bool,
    /// Where the bundle runs: cpu, or cuda / cuda:N (NVIDIA GPU N; a bundle compiled for a CUDA
    /// target). Tiles go to the device a bundle batch at a time: compile with --batch 2..8 to
    /// keep a GPU busy; the sliding-window accumulation stays on the host.
    #[arg(long, value_name = "cpu|cuda|cuda:N", value_parser = super::parse_device, default_value = "cpu")]
    device: super::DeviceArg,
    #[command(flatten)]
    trust: super::TrustArgs,
}

/// The most parts `--part` accepts.
pub const MAX_PARTS: usize = 100_000;

/// `--part K/N`: part `k` (1-based) of `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    k: usize,
    n: usize,
}

impl Part {
    /// Whether the case at 0-based index `i` of the sorted folder belongs to this part.
    fn owns(self, i: usize) -> bool {
        i % self.n == self.k - 1
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// Parses `K/N` with 1 <= K <= N <= [`MAX_PARTS`].
fn parse_part(s: &str) -> Result<Part, String> {
    let bad = || format!("`{s}` is not K/N (part K of N, 1 <= K <= N, e.g. 1/8)");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let num = |t: &str| -> Result<usize, String> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // Only digits: the one failure left is overflow.
        t.parse()
            .map_err(|_| format!("`{s}`: at most {MAX_PARTS} parts"))
    };
    let (k, n) = (num(k)?, num(n)?);
    if n == 0 || n > MAX_PARTS {
        return Err(format!("`{s}`: N must be 1 to {MAX_PARTS}"));
    }
    if k == 0 || k > n {
        return Err(format!(
            "`{s}`: K must be 1 to {n} (parts count from 1: --part 1/{n} to --part {n}/{n})"
        ));
    }
    Ok(Part { k, n })
}

/// One case: channel files and outputs.
struct Case {
    name: String,
    images: Vec<PathBuf>,
    labels: PathBuf,
    probabilities: Option<PathBuf>,
    preview: Option<PathBuf>,
    /// Folder mode: its labels exist and --overwrite is off, so it is skipped.
    done: bool,
}

pub fn main(a: Args) -> Result<ExitCode> {
    if !(a.step > 0.0 && a.step <= 1.0) {
        bail!("--step {} must be in (0, 1]", a.step);
    }
    if a.input_dir.is_none() {
        if let Some(p) = a.part {
            bail!(
                "--part {p} shards the cases of a folder: give -i IN_DIR -o OUT_DIR (a single \
                 case runs whole)"
            );
        }
        if a.summary.is_some() {
            bail!("--summary reports a folder run: give -i IN_DIR -o OUT_DIR");
        }
    }
    if let Some(p) = &a.summary {
        if !p.to_string_lossy().to_ascii_lowercase().ends_with(".json") {
            bail!("{}: --summary must end in .json", p.display());
        }
    }
    let bundle = Bundle::load(
        &a.bundle,
        &LoadOptions {
            emulate: a.emulate,
            ..a.trust.load_options(a.rebuild)
        },
    )?;
    let net = Net::of(&bundle)?;
    let prep = preprocessing(
        &a.bundle,
        &bundle.manifest.model,
        a.preprocessing.as_deref(),
        a.spacing_as_is,
        net.channels,
    )?;
    if let Prep::AsIs = prep {
        eprintln!(
            "note: no preprocessing config; --spacing-as-is: no resampling, each channel \
             z-scored over the whole image"
        );
    }
    let all = cases(&a, net.channels)?;
    let found = all.len();
    // The part's share is taken from the full sorted list, finished cases included, so that
    // every part (and every rerun) agrees on who owns what.
    let cases: Vec<Case> = match a.part {
        Some(p) => all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| p.owns(*i))
            .map(|(_, c)| c)
            .collect(),
        None => all,
    };
    if let Some(p) = a.part {
        eprintln!(
            "part {p}: {} of the {found} case(s) in {}",
            cases.len(),
            a.input_dir.as_deref().unwrap_or(Path::new("")).display()
        );
    }
    let mut summary = match &a.summary {
        Some(p) => Some(Summary::start(&a, p, &cases)?),
        None => None,
    };
    let skipped = cases.iter().filter(|c| c.done).count();
    let todo: Vec<(usize, &Case)> = cases.iter().enumerate().filter(|(_, c)| !c.done).collect();
    let mut engine = super::engine_on(a.device, bundle, a.threads)?;
    let window = WindowOptions {
        step: a.step,
        tta: a.tta,
        batch: net.batch,
        accumulator_memory: (a.accumulator_memory != u64::MAX).then_some(a.accumulator_memory),
        scratch_dir: a.scratch_dir.clone(),
    };
    let tty = std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let (mut tiles, mut voxels, mut net_secs, mut failed) = (0usize, 0usize, 0.0, Vec::new());
    for (k, (index, case)) in todo.iter().enumerate() {
        let label = format!("[{}/{}] {}", k + 1, todo.len(), case.name);
        let tc = Instant::now();
        let res = run_case(
            &mut engine,
            &net,
            &prep,
            &window,
            case,
            &label,
            tty,
            a.overwrite,
            a.frame,
        );
        let outcome = match &res {
            Ok(_) => Status::Segmented,
            Err(e) => Status::Failed(crate::util::error_text(e)),
        };
        match res {
            Ok((t, v, n)) => {
                tiles += t;
                voxels += v;
                net_secs += n;
                eprintln!("{label}: wrote {}", case.labels.display());
            }
            Err(e) if a.input_dir.is_some() => {
                eprintln!("{label}: error: {}", crate::util::error_text(&e));
                failed.push(case.name.clone());
            }
            Err(e) => return Err(e),
        }
        if let Some(s) = &mut summary {
            s.record(*index, outcome, tc.elapsed().as_secs_f64());
            s.write(false)?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if let Some(s) = &summary {
        s.write(true)?;
    }
    eprintln!(
        "segmented {} case(s){} in {secs:.1} s: {} tiles ({} threads, batch {}{}; network \
         {net_secs:.1} s, {:.2} s per tile), {} voxels/s",
        todo.len() - failed.len(),
        if skipped > 0 {
            format!(" ({skipped} already done, skipped)")
        } else {
            String::new()
        },
        thousands(tiles as u64),
        engine.threads(),
        net.batch,
        if a.tta { ", TTA x8" } else { "" },
        net_secs / tiles.max(1) as f64,
        thousands((voxels as f64 / secs.max(1e-9)) as u64)
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} cases failed: {}",
            failed.len(),
            todo.len(),
            failed.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The version tag of the `--summary` JSON.
const SUMMARY_FORMAT: &str = "e2enc-segment-summary/1";

/// What became of one case of the run.
enum Status {
    Pending,
    Skipped,
    Segmented,
    Failed(String),
}

/// The `--summary` report: the part's cases in order, filled in as they finish.
struct Summary {
    path: PathBuf,
    head: serde_json::Map<String, serde_json::Value>,
    /// (name, outputs, status, seconds) per case of the part.
    cases: Vec<(String, serde_json::Value, Status, f64)>,
    t0: Instant,
}

fn part_json(p: Option<Part>) -> serde_json::Value {
    p.map_or(
        serde_json::Value::Null,
        |p| serde_json::json!({"k": p.k, "n": p.n}),
    )
}

impl Summary {
    /// Checks the summary path (after the output folders exist, since it may lie in one) and
    /// writes the first version, every case pending or skipped.
    fn start(a: &Args, path: &Path, cases: &[Case]) -> Result<Summary> {
        check_parent(path)?;
        let inputs: Vec<&Path> = a.preprocessing.iter().map(PathBuf::as_path).collect();
        super::check_output("--summary", path, true, &inputs)?;
        if let Some(d) = identity(path)?.parent() {
            if same_file(d, &identity(&a.bundle)?) {
                bail!(
                    "{}: --summary must not be written into the bundle {}",
                    path.display(),
                    a.bundle.display()
                );
            }
        }
        if path.exists() {
            if !path.is_file() {
                bail!(
                    "{}: --summary names something that is not a file",
                    path.display()
                );
            }
            if !a.overwrite {
                let prior: Option<serde_json::Value> = e2enc_ir::files::read_text(path)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                match prior {
                    Some(v) if v["format"] == SUMMARY_FORMAT => {
                        if v["part"] != part_json(a.part) {
                            let was = match (v["part"]["k"].as_u64(), v["part"]["n"].as_u64()) {
                                (Some(k), Some(n)) => format!("part {k}/{n}"),
                                _ => "a run of the whole folder".to_string(),
                            };
                            let now = a
                                .part
                                .map_or("the whole folder".into(), |p| format!("part {p}"));
                            bail!(
                                "{} is the summary of {was}, this run is {now}: give each part \
                                 its own --summary file (e.g. part-K.json), or pass --overwrite",
                                path.display()
                            );
                        }
                    }
                    _ => bail!(
                        "{} exists and is not an e2enc segment summary; pass --overwrite to \
                         replace it",
                        path.display()
                    ),
                }
            }
        }
        let text = |p: &Path| serde_json::Value::String(p.display().to_string());
        let opt = |p: &Option<PathBuf>| p.as_deref().map_or(serde_json::Value::Null, text);
        let mut head = serde_json::Map::new();
        head.insert("format".into(), SUMMARY_FORMAT.into());
        head.insert("bundle".into(), text(&a.bundle));
        head.insert("input_dir".into(), opt(&a.input_dir));
        head.insert("output_dir".into(), text(&a.output));
        head.insert("part".into(), part_json(a.part));
        let s = Summary {
            path: path.to_path_buf(),
            head,
            cases: cases
                .iter()
                .map(|c| {
                    let outputs = serde_json::json!({
                        "labels": text(&c.labels),
                        "probabilities": opt(&c.probabilities),
                        "preview": opt(&c.preview),
                    });
                    let status = if c.done {
                        Status::Skipped
                    } else {
                        Status::Pending
                    };
                    (c.name.clone(), outputs, status, 0.0)
                })
                .collect(),
            t0: Instant::now(),
        };
        s.write(false)?;
        Ok(s)
    }

    fn record(&mut self, index: usize, status: Status, seconds: f64) {
        if let Some(c) = self.cases.get_mut(index) {
            c.2 = status;
            c.3 = seconds;
        }
    }

    /// Writes the report atomically; `complete` once the run is over.
    fn write(&self, complete: bool) -> Result<()> {
        let mut counts = BTreeMap::from([
            ("segmented", 0usize),
            ("skipped", 0),
            ("failed", 0),
            ("pending", 0),
        ]);
        let cases: Vec<serde_json::Value> = self
            .cases
            .iter()
            .map(|(name, outputs, status, secs)| {
                let (word, error) = match status {
                    Status::Pending => ("pending", None),
                    Status::Skipped => ("skipped", None),
                    Status::Segmented => ("segmented", None),
                    Status::Failed(m) => ("failed", Some(m)),
                };
                *counts.entry(word).or_default() += 1;
                let mut c = serde_json::json!({
                    "case": name,
                    "status": word,
                    "outputs": outputs,
                    "seconds": (secs * 1000.0).round() / 1000.0,
                });
                if let Some(m) = error {
                    c["error"] = m.as_str().into();
                }
                c
            })
            .collect();
        let mut v = serde_json::Value::Object(self.head.clone());
        v["complete"] = complete.into();
        v["cases"] = cases.into();
        let mut totals = serde_json::json!({ "cases": self.cases.len() });
        for (k, n) in counts {
            totals[k] = n.into();
        }
        totals["seconds"] = ((self.t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0).into();
        v["totals"] = totals;
        let text = serde_json::to_string_pretty(&v)? + "\n";
        e2enc_ir::weights::write_atomic(&self.path, text.as_bytes())
            .with_context(|| format!("writing the summary {}", self.path.display()))
    }
}

fn nifti_name(p: &Path) -> bool {
    let n = p.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

/// The cases: one, or a folder's in name order (byte order, the same on every machine), those
/// whose labels exist marked done unless --overwrite.
fn cases(a: &Args, channels: usize) -> Result<Vec<Case>> {
    let Some(dir) = &a.input_dir else {
        if a.images.len() != channels {
            bail!(
                "the network takes {channels} channel(s) but {} image(s) were given",
                a.images.len()
            );
        }
        if !nifti_name(&a.output) {
            bail!(
                "{}: the output must end in .nii or .nii.gz",
                a.output.display()
            );
        }
        if let Some(p) = &a.probabilities {
            if !nifti_name(p) {
                bail!(
                    "{}: --probabilities must end in .nii or .nii.gz",
                    p.display()
                );
            }
        }
        if let Some(p) = &a.preview {
            if !p.to_string_lossy().to_ascii_lowercase().ends_with(".png") {
                bail!("{}: --preview must end in .png", p.display());
            }
        }
        for p in output_paths(a) {
            check_parent(p)?;
        }
        let case = Case {
            name: a.images[0].display().to_string(),
            images: a.images.clone(),
            labels: a.output.clone(),
            probabilities: a.probabilities.clone(),
            preview: a.preview.clone(),
            done: false,
        };
        check_outputs(&case, a.overwrite)?;
        return Ok(vec![case]);
    };
    for d in output_paths(a) {
        if d.exists() && same_file(&identity(d)?, &identity(dir)?) {
            bail!(
                "{}: an output folder must not be the input folder {} (outputs named like \
                 CASE.nii.gz would read as images of another case next time)",
                d.display(),
                dir.display()
            );
        }
    }
    let found = scan_cases(dir)?;
    for d in output_paths(a) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut out = Vec::new();
    for (name, chans) in found {
        let images = channel_files(&name, chans, channels)?;
        let labels = a.output.join(format!("{name}.nii.gz"));
        out.push(Case {
            done: labels.exists() && !a.overwrite,
            probabilities: a
                .probabilities
                .as_ref()
                .map(|d| d.join(format!("{name}.nii.gz"))),
            preview: a.preview.as_ref().map(|d| d.join(format!("{name}.png"))),
            name,
            images,
            labels,
        });
    }
    Ok(out)
}

/// The output paths given on the command line: -o, --probabilities, --preview (files for one
/// case, folders with -i).
fn output_paths(a: &Args) -> impl Iterator<Item = &PathBuf> {
    [
        Some(&a.output),
        a.probabilities.as_ref(),
        a.preview.as_ref(),
    ]
    .into_iter()
    .flatten()
}

fn check_parent(p: &Path) -> Result<()> {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
            bail!("{}: the folder {} does not exist", p.display(), d.display())
        }
        _ => Ok(()),
    }
}

pub use e2enc_segment::nifti::same_grid;

/// Refuses a case whose outputs would clobber something: an existing output without
/// `--overwrite`, two outputs naming one file, or an output naming one of its inputs (never
/// allowed).
fn check_outputs(case: &Case, overwrite: bool) -> Result<()> {
    let outs: Vec<(&str, &PathBuf)> = [
        Some(("-o", &case.labels)),
        case.probabilities.as_ref().map(|p| ("--probabilities", p)),
        case.preview.as_ref().map(|p| ("--preview", p)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ids: Vec<PathBuf> = outs
        .iter()
        .map(|(_, p)| identity(p))
        .collect::<Result<_>>()?;
    let images: Vec<&Path> = case.images.iter().map(PathBuf::as_path).collect();
    for (i, (flag, p)) in outs.iter().enumerate() {
        for (j, (flag2, _)) in outs.iter().enumerate().skip(i + 1) {
            if same_file(&ids[i], &ids[j]) {
                bail!(
                    "{flag} and {flag2} both name {}: give each output its own file",
                    p.display()
                );
            }
        }
        super::check_output(flag, p, overwrite, &images)?;
    }
    Ok(())
}

/// Runs one case and writes its outputs; returns (tiles, input voxels, seconds in the network).
#[allow(clippy::too_many_arguments)]
fn run_case(
    engine: &mut Engine,
    net: &Net,
    prep: &Prep,
    window: &WindowOptions,
    case: &Case,
    label: &str,
    tty: bool,
    overwrite: bool,
    frame: Option<u64>,
) -> Result<(usize, usize, f64)> {
    // Again right before the work: in folder mode this is the first check of the case's
    // probabilities and preview files.
    check_outputs(case, overwrite)?;
    let mut window = window.clone();
    if window.scratch_dir.is_none() {
        let dir = case.labels.parent().filter(|d| !d.as_os_str().is_empty());
        window.scratch_dir = Some(dir.unwrap_or(Path::new(".")).to_path_buf());
    }
    let window = &window;
    let mut vols = read_case(&case.images, frame)?;
    // The images' voxels move into the pipeline's channels (no copy).
    let mut volumes = CaseVolumes::take(&mut vols);
    let voxels = volumes.shape.iter().product::<usize>();
    let first = &vols[0];
    // Probabilities go to their file plane by plane as the window finishes them.
    let mut probabilities = match &case.probabilities {
        Some(p) => Some(ProbabilityWriter::new(
            p,
            &first.header,
            first.dims,
            net.classes,
        )?),
        None => None,
    };
    let bar = if tty {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tiles {elapsed} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{label}: preprocessing"));
    let res = segment_volumes(
        engine,
        net,
        prep,
        window,
        &mut volumes,
        // The image is freed once preprocessed unless the preview draws it.
        case.preview.is_some(),
        match probabilities.as_mut() {
            Some(w) => Probabilities::Stream(w),
            None => Probabilities::None,
        },
        |s, n| {
            bar.set_length(n as u64);
            bar.set_message(format!("{label}: {}x{}x{}", s[0], s[1], s[2]));
        },
        |done, _| bar.set_position(((done * net.batch) as u64).min(bar.length().unwrap_or(0))),
    );
    bar.finish_and_clear();
    let CaseResult {
        segmentation: seg,
        network_seconds: net_secs,
    } = res?;
    let g = seg.network_shape;
    eprintln!(
        "{label}: network grid {}x{}x{} (after crop and resampling), {} tiles",
        g[0], g[1], g[2], seg.tiles
    );
    let w = seg.window;
    if w.scratch_bytes > 0 {
        eprintln!(
            "{label}: probability accumulators: {} MiB in memory, {:.1} GiB through the scratch \
             file (--accumulator-memory)",
            w.accumulator_bytes >> 20,
            w.scratch_bytes as f64 / (1u64 << 30) as f64
        );
    }
    if let Some(w) = probabilities {
        w.finish()?;
    }
    if let Some(p) = &case.preview {
        e2enc_segment::preview::preview(
            &volumes.channels[0],
            &seg.labels,
            volumes.shape,
            volumes.spacing,
            p,
        )?;
    }
    // The labels last: in folder mode their presence marks the case done.
    nifti::write_labels(&case.labels, &first.header, first.dims, &seg.labels)?;
    Ok((seg.tiles, voxels, net_secs))
}

/// A memory size: bytes, or a number with KiB, MiB, GiB (or K, M, G, KB, MB, GB: all powers of
/// 1024), or `all` (no limit: `u64::MAX`).
fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("all") {
        return Ok(u64::MAX);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{s}`: say a size like 256MiB, 1.5GiB or all")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: say a size like 256MiB, 1.5GiB or all"))?;
    let bytes = v * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is too large (say all for no limit)"));
    }
    Ok(bytes as u64)
}
