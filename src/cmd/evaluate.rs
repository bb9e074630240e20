//! `e2enc evaluate`: Dice and HD95 of predicted label maps against ground truth, for two files or
//! two folders matched by file name. The scoring is `e2enc_segment::metrics`; this file reads
//! the volumes, checks that they share a grid, and prints or writes the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use e2enc_segment::metrics::{evaluate, fmt_score, nan_mean, ClassScore, Report};
use e2enc_segment::nifti::{self, Volume};

use super::segment::same_grid;

/// Score label maps against ground truth: Dice and HD95 per class
///
/// Prints per-class Dice and HD95 (mm) of predicted label maps, and their mean.
/// PRED and GT are two NIfTI label files, or two folders whose .nii/.nii.gz files are matched by
/// name (every prediction needs its ground truth; extra ground-truth files are listed and
/// ignored). Each pair must share one grid (shape and affine). Class 0 is background and is not
/// scored. Dice of a class absent from both is n/a; HD95 is n/a when both lack the class and inf
/// when only one has it (see e2enc_segment::metrics). For folders, the per-class numbers are the
/// means over cases (n/a left out), after one table per case.
///
/// To hold one bundle to another on a folder of cases (a bf16 bundle to the f32 one, say), see
/// `e2enc compare`.
///
/// Examples:
///   e2enc evaluate pred.nii.gz labels.nii.gz
///   e2enc evaluate predTs labelsTs --classes 16 --json scores.json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Predicted labels: a NIfTI file or a folder of them.
    pred: PathBuf,
    /// Ground truth: a NIfTI file or a folder with the same file names.
    gt: PathBuf,
    /// Number of classes including background (default: one more than the largest label seen in
    /// each pair). A label at or past it is an error.
    #[arg(long)]
    classes: Option<usize>,
    /// Also write the report as JSON (n/a and inf as strings; an existing file only with
    /// --overwrite).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Replace an existing --json file.
    #[arg(long)]
    overwrite: bool,
}

pub fn main(a: Args) -> Result<ExitCode> {
    if let Some(j) = &a.json {
        super::check_output("--json", j, a.overwrite, &[&a.pred, &a.gt])?;
    }
    let pairs = pairs(&a.pred, &a.gt)?;
    let mut reports = BTreeMap::new();
    for (name, p, g) in &pairs {
        let r = score(p, g, a.classes)?;
        if pairs.len() > 1 {
            println!("{name}");
        }
        print_table(&r);
        reports.insert(name.clone(), r);
    }
    let json = if pairs.len() == 1 {
        serde_json::to_value(reports.values().next())?
    } else {
        let mean = mean_over_cases(&reports);
        println!("mean over {} cases", reports.len());
        print_table(&mean);
        serde_json::json!({ "cases": reports, "mean": mean })
    };
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&json)? + "\n";
        e2enc_ir::weights::write_atomic(p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn is_nifti(p: &Path) -> bool {
    let n = p.to_string_lossy().to_ascii_lowercase();
    p.is_file() && (n.ends_with(".nii") || n.ends_with(".nii.gz"))
}

/// (name, prediction, ground truth) for two files or two folders.
fn pairs(pred: &Path, gt: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    match (pred.is_dir(), gt.is_dir()) {
        (false, false) => {
            let name = pred.file_name().unwrap_or_default().to_string_lossy();
            Ok(vec![(name.to_string(), pred.into(), gt.into())])
        }
        (true, true) => {
            let list = |d: &Path| -> Result<BTreeMap<String, PathBuf>> {
                let mut m = BTreeMap::new();
                for e in std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
                    let p = e?.path();
                    if is_nifti(&p) {
                        m.insert(p.file_name().unwrap().to_string_lossy().to_string(), p);
                    }
                }
                Ok(m)
            };
            let (mut ps, mut gs) = (list(pred)?, list(gt)?);
            if ps.is_empty() {
                bail!("{}: no .nii or .nii.gz files", pred.display());
            }
            let missing: Vec<&String> = ps.keys().filter(|k| !gs.contains_key(*k)).collect();
            if !missing.is_empty() {
                bail!(
                    "{} has no ground truth for: {}",
                    gt.display(),
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let extra: Vec<&String> = gs.keys().filter(|k| !ps.contains_key(*k)).collect();
            if !extra.is_empty() {
                eprintln!(
                    "note: {} ground-truth file(s) without a prediction, ignored: {}",
                    extra.len(),
                    extra
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(std::mem::take(&mut ps)
                .into_iter()
                .map(|(k, p)| {
                    let g = gs.remove(&k).expect("checked above");
                    (k, p, g)
                })
                .collect())
        }
        _ => bail!(
            "{} and {} must both be files or both be folders",
            pred.display(),
            gt.display()
        ),
    }
}

/// The voxels of a label file as `u16`, refusing values that are not labels.
pub(super) fn labels(v: &Volume, path: &Path) -> Result<Vec<u16>> {
    v.data
        .iter()
        .map(|&x| {
            if x.is_finite() && x >= 0.0 && x <= f32::from(u16::MAX) && x.fract() == 0.0 {
                Ok(x as u16)
            } else {
                Err(anyhow!(
                    "{}: voxel value {x} is not a label (whole number 0..65535)",
                    path.display()
                ))
            }
        })
        .collect()
}

fn score(pred: &Path, gt: &Path, classes: Option<usize>) -> Result<Report> {
    let p = nifti::read(pred)?;
    let g = nifti::read(gt)?;
    same_grid(&p, &g).map_err(|m| {
        anyhow!(
            "{} and {} are not on one grid: {m}",
            pred.display(),
            gt.display()
        )
    })?;
    let (pl, gl) = (labels(&p, pred)?, labels(&g, gt)?);
    let [nx, ny, nz] = p.dims;
    // The grid check compared both voxel sizes; the metric uses the same one.
    let [sx, sy, sz] = g.header.spacing();
    let scores = evaluate(&pl, &gl, [nz, ny, nx], [sz, sy, sx], classes)
        .with_context(|| format!("scoring {} against {}", pred.display(), gt.display()))?;
    Ok(Report::new(scores))
}

/// Per-class means over cases (NaN left out; an infinite HD95 stays infinite), voxel counts
/// summed.
fn mean_over_cases(reports: &BTreeMap<String, Report>) -> Report {
    let mut by_class: BTreeMap<u16, Vec<&ClassScore>> = BTreeMap::new();
    for r in reports.values() {
        for c in &r.classes {
            by_class.entry(c.class).or_default().push(c);
        }
    }
    Report::new(
        by_class
            .into_iter()
            .map(|(class, v)| ClassScore {
                class,
                dice: nan_mean(v.iter().map(|c| c.dice)),
                hd95: nan_mean(v.iter().map(|c| c.hd95)),
                pred_voxels: v.iter().map(|c| c.pred_voxels).sum(),
                gt_voxels: v.iter().map(|c| c.gt_voxels).sum(),
            })
            .collect(),
    )
}

fn print_table(r: &Report) {
    println!(
        "{:>6}  {:>7}  {:>9}  {:>12}  {:>12}",
        "class", "dice", "hd95_mm", "pred_voxels", "gt_voxels"
    );
    for c in &r.classes {
        println!(
            "{:>6}  {:>7}  {:>9}  {:>12}  {:>12}",
            c.class,
            fmt_score(c.dice, 4),
            fmt_score(c.hd95, 2),
            c.pred_voxels,
            c.gt_voxels
        );
    }
    println!(
        "{:>6}  {:>7}  {:>9}",
        "mean",
        fmt_score(r.mean_dice, 4),
        fmt_score(r.mean_hd95, 2)
    );
}
