//! Segmenting volumes with a compiled bundle, without the files: the network's shapes read from
//! a bundle's manifest ([`Net`]), where the preprocessing comes from ([`Prep`], [`preprocessing`]),
//! reading one input image ([`read_image`]) and running one case through an [`Engine`]
//! ([`segment_volumes`]). `e2enc segment` adds file handling, folders and progress on top; the
//! Python package calls the same functions on numpy arrays, so both give the same labels and
//! the same error text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use e2enc_runtime::bundle::Bundle;
use e2enc_runtime::exec::Engine;
use e2enc_segment::nifti::{self, Volume};
use std::borrow::Cow;

use e2enc_segment::pipeline::{segment_case_with, CaseOptions, ProbabilitySink, Segmentation};
use e2enc_segment::preprocess::{Normalization, PreprocessingConfig};
use e2enc_segment::resample::Shape;
use e2enc_segment::window::WindowOptions;

use crate::SessionError;

fn invalid(msg: String) -> SessionError {
    SessionError::Invalid { msg }
}

/// The network's fixed shapes, read from a bundle's manifest.
#[derive(Clone, Debug)]
pub struct Net {
    /// The input port's name.
    pub input: String,
    /// The output port segmented from (`logits`, else the first).
    pub output: String,
    /// Tiles per run.
    pub batch: usize,
    /// Input channels.
    pub channels: usize,
    /// Output classes, background included.
    pub classes: usize,
    /// Patch `[d, h, w]`.
    pub patch: [usize; 3],
}

impl Net {
    /// The shapes of `b`: one `[N, C, D, H, W]` input and an output of the same patch.
    pub fn of(b: &Bundle) -> Result<Net, SessionError> {
        let m = &b.manifest;
        let (Some(i), Some(o)) = (m.inputs.first(), m.outputs.first()) else {
            return Err(invalid(format!(
                "bundle {}: no input or output port",
                b.dir.display()
            )));
        };
        let out = m.outputs.iter().find(|p| p.name == "logits").unwrap_or(o);
        if i.shape.len() != 5 || out.shape.len() != 5 || i.shape[2..] != out.shape[2..] {
            return Err(invalid(format!(
                "bundle {}: input {:?} and output {:?} are not [N, C, D, H, W] of one patch",
                b.dir.display(),
                i.shape,
                out.shape
            )));
        }
        Ok(Net {
            input: i.name.clone(),
            output: out.name.clone(),
            batch: i.shape[0],
            channels: i.shape[1],
            classes: out.shape[1],
            patch: [i.shape[2], i.shape[3], i.shape[4]],
        })
    }
}

/// Where the preprocessing comes from.
#[derive(Clone, Debug)]
pub enum Prep {
    Fixed(PreprocessingConfig),
    /// No resampling, whole-image z-score: the config depends on each case's spacing.
    AsIs,
}

impl Prep {
    /// The config for a case of `spacing` (array axes) and `channels` channels.
    pub fn config(&self, spacing: [f64; 3], channels: usize) -> PreprocessingConfig {
        match self {
            Prep::Fixed(c) => c.clone(),
            Prep::AsIs => PreprocessingConfig {
                axis_order: [2, 1, 0],
                target_spacing: spacing,
                normalization: vec![
                    Normalization::ZScore {
                        use_nonzero_mask: false
                    };
                    channels
                ],
                anisotropy_threshold: 3.0,
            },
        }
    }
}

/// An example `preprocessing` object, quoted in errors.
pub const PREP_EXAMPLE: &str = r#""preprocessing": {"axis_order": [2, 1, 0], "target_spacing": [1.0, 1.0, 1.0], "normalization": [{"scheme": "z_score", "use_nonzero_mask": false}]}"#;

/// The preprocessing of a bundle made from `model` (its manifest's model.json) for a network of
/// `channels` channels: the config in `override_file` (the object, or a model.json-like object
/// holding it) when given, else the model's, else [`Prep::AsIs`] when `spacing_as_is`, else an
/// error naming the ways out. `bundle` names the bundle in messages.
pub fn preprocessing(
    bundle: &Path,
    model: &serde_json::Value,
    override_file: Option<&Path>,
    spacing_as_is: bool,
    channels: usize,
) -> Result<Prep, SessionError> {
    let (value, from) = if let Some(p) = override_file {
        let text = e2enc_ir::files::read_text(p)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("parsing {}: {e}", p.display())))?;
        let v = v.get("preprocessing").cloned().unwrap_or(v);
        (v, p.display().to_string())
    } else {
        match model.get("preprocessing") {
            Some(v) if !v.is_null() => (v.clone(), format!("bundle {}", bundle.display())),
            _ if spacing_as_is => return Ok(Prep::AsIs),
            _ => {
                return Err(invalid(format!(
                    "bundle {} carries no preprocessing config. Add one to model.json and \
                     recompile, e.g.\n  {PREP_EXAMPLE}\n(one normalization entry per channel; \
                     schemes `ct` with lower/upper/mean/std, or `z_score`), or pass \
                     --preprocessing FILE.json, or --spacing-as-is to segment on each image's \
                     own grid with per-image z-score",
                    bundle.display()
                )))
            }
        }
    };
    let cfg: PreprocessingConfig = serde_json::from_value(value).map_err(|e| {
        invalid(format!(
            "{from}: bad preprocessing config (expected {PREP_EXAMPLE}): {e}"
        ))
    })?;
    cfg.validate()
        .map_err(|e| invalid(format!("{from}: {e}")))?;
    if cfg.normalization.len() != channels {
        return Err(invalid(format!(
            "{from}: the preprocessing normalises {} channels but the network takes {channels}",
            cfg.normalization.len()
        )));
    }
    Ok(Prep::Fixed(cfg))
}

/// One input image: a 3-D file as it is, volume `frame` of a 4-D one; a 4-D file without
/// `frame`, or with one past its last volume, is refused with the ways out.
pub fn read_image(p: &Path, frame: Option<u64>) -> Result<Volume, SessionError> {
    match (nifti::read(p), frame) {
        (Err(nifti::NiftiError::MultiVolume { volumes, .. }), Some(k)) if k < volumes => {
            Ok(nifti::read_frame(p, k)?)
        }
        (Err(nifti::NiftiError::MultiVolume { volumes, .. }), Some(k)) => Err(invalid(format!(
            "{}: --frame {k} is past the last volume: this file has {volumes} volumes (0..{})",
            p.display(),
            volumes - 1
        ))),
        (Err(nifti::NiftiError::MultiVolume { volumes, .. }), None) => Err(invalid(format!(
            "{}: this file has {volumes} volumes; pick one with --frame K (0..{}) or split it \
             (e.g. fslsplit)",
            p.display(),
            volumes - 1
        ))),
        (r, _) => Ok(r?),
    }
}

/// The images of one case, one per channel ([`read_image`]), checked to lie on one grid.
pub fn read_case(
    images: &[impl AsRef<Path>],
    frame: Option<u64>,
) -> Result<Vec<Volume>, SessionError> {
    let vols: Vec<Volume> = images
        .iter()
        .map(|p| read_image(p.as_ref(), frame))
        .collect::<Result<_, _>>()?;
    for (v, p) in vols.iter().zip(images).skip(1) {
        nifti::same_grid(&vols[0], v).map_err(|m| {
            invalid(format!(
                "{} and {} are not on one grid: {m}",
                images[0].as_ref().display(),
                p.as_ref().display()
            ))
        })?;
    }
    if vols.is_empty() {
        return Err(invalid("no image given".into()));
    }
    Ok(vols)
}

/// One case's volumes in the pipeline's axes: C-ordered `[z, y, x]` (a NIfTI file's data as
/// read, x fastest), one buffer per channel, with the voxel size in the same order.
pub struct CaseVolumes {
    pub channels: Vec<Vec<f32>>,
    /// `[nz, ny, nx]`.
    pub shape: Shape,
    /// `[sz, sy, sx]`.
    pub spacing: [f64; 3],
}

impl CaseVolumes {
    /// The channels of one case read from NIfTI files on one grid (that of `vols[0]`), moved
    /// out of the volumes (their `data` is left empty; headers and dims stay).
    pub fn take(vols: &mut [Volume]) -> CaseVolumes {
        let [nx, ny, nz] = vols[0].dims;
        let [sx, sy, sz] = vols[0].header.spacing();
        CaseVolumes {
            channels: vols
                .iter_mut()
                .map(|v| std::mem::take(&mut v.data))
                .collect(),
            shape: [nz, ny, nx],
            spacing: [sz, sy, sx],
        }
    }
}

/// What becomes of a case's class probabilities.
pub enum Probabilities<'a> {
    /// Only the labels.
    None,
    /// Returned whole in [`Segmentation::probabilities`] (the input's grid, class-major).
    Whole,
    /// Handed plane by plane to a sink (e.g. [`e2enc_segment::nifti::ProbabilityWriter`]) as the
    /// sliding window finishes them, never held whole.
    Stream(&'a mut dyn ProbabilitySink<SessionError>),
}

/// A segmentation and the seconds spent in the network.
pub struct CaseResult {
    pub segmentation: Segmentation,
    pub network_seconds: f64,
}

/// Segments one case with `engine` (a bundle of shapes `net`): preprocessing as `prep` says,
/// the sliding window of `window`, labels (and the class maps as `probabilities` says) on the
/// input's grid. `on_preprocessed(network shape, tiles)` and `progress(done batches, batches)`
/// report progress. Without `keep_image` the case's channels move into the pipeline, which frees
/// them once preprocessed (`case.channels` is left empty); with it they stay for the caller (a
/// preview, a second bundle).
#[allow(clippy::too_many_arguments)]
pub fn segment_volumes(
    engine: &mut Engine,
    net: &Net,
    prep: &Prep,
    window: &WindowOptions,
    case: &mut CaseVolumes,
    keep_image: bool,
    probabilities: Probabilities<'_>,
    on_preprocessed: impl FnOnce(Shape, usize),
    progress: impl FnMut(usize, usize),
) -> Result<CaseResult, SessionError> {
    if case.channels.len() != net.channels {
        return Err(invalid(format!(
            "the network takes {} channel(s) but {} image(s) were given",
            net.channels,
            case.channels.len()
        )));
    }
    let cfg = prep.config(case.spacing, net.channels);
    let opts = CaseOptions {
        patch: net.patch,
        classes: net.classes,
        window: window.clone(),
        probabilities: matches!(probabilities, Probabilities::Whole),
    };
    let sink = match probabilities {
        Probabilities::Stream(s) => Some(s),
        _ => None,
    };
    let mut network_seconds = 0.0;
    let channels: Cow<'_, [Vec<f32>]> = if keep_image {
        Cow::Borrowed(&case.channels)
    } else {
        Cow::Owned(std::mem::take(&mut case.channels))
    };
    let segmentation = segment_case_with(
        channels,
        case.shape,
        case.spacing,
        &cfg,
        &opts,
        |tiles: &[f32], _n: usize| -> Result<Vec<f32>, SessionError> {
            let t0 = Instant::now();
            engine.set_input(&net.input, tiles)?;
            engine.execute()?;
            network_seconds += t0.elapsed().as_secs_f64();
            // One copy of the logits, straight from the arena.
            let y = engine.output(&net.output)?;
            let mut v = vec![0f32; y.shape().iter().product()];
            y.copy_to(&mut v)?;
            Ok(v)
        },
        on_preprocessed,
        progress,
        sink,
    )?;
    Ok(CaseResult {
        segmentation,
        network_seconds,
    })
}

/// The error and its causes joined by ": ", as anyhow's `{:#}` does, without repeats: many
/// errors print their source in their own message (`"{path}: {source}"`) and also return it as
/// `source()`, which `{:#}` would print twice ("Is a directory (os error 21): Is a directory (os
/// error 21)"). A cause whose text the one before it already shows is left out, and a context
/// that its cause's text begins with (`"{path}"` over `"{path}: ..."`) gives way to the cause.
/// The text `e2enc` prints after `error: `, and the message of the Python package's exceptions.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let t = c.to_string();
        match parts.last_mut() {
            Some(prev) if prev.contains(&t) => {}
            Some(prev) if !prev.is_empty() && t.starts_with(prev.as_str()) => *prev = t,
            _ => parts.push(t),
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// The cases of an nnU-Net-named image folder: channel k of case `abc` is `abc_000k.nii.gz` (or
/// `.nii`); case name -> channel -> file, in name order. An empty folder is an error.
pub fn scan_cases(dir: &Path) -> Result<BTreeMap<String, BTreeMap<usize, PathBuf>>, SessionError> {
    let reading = |e: std::io::Error| invalid(format!("reading {}: {e}", dir.display()));
    let mut found: BTreeMap<String, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).map_err(reading)? {
        let p = e.map_err(reading)?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let stem = name
            .strip_suffix(".nii.gz")
            .or_else(|| name.strip_suffix(".nii"));
        let Some((case, ch)) = stem.and_then(|s| s.rsplit_once('_')) else {
            continue;
        };
        if ch.len() != 4 || !ch.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let ch: usize = ch
            .parse()
            .map_err(|_| invalid(format!("{name}: bad channel")))?;
        if let Some(old) = found.entry(case.to_string()).or_default().insert(ch, p) {
            return Err(invalid(format!(
                "case {case}: channel {ch} appears twice ({})",
                old.display()
            )));
        }
    }
    if found.is_empty() {
        return Err(invalid(format!(
            "{}: no images named CASE_0000.nii.gz (nnU-Net naming: channel k is CASE_000k)",
            dir.display()
        )));
    }
    Ok(found)
}

/// A scanned case's files in channel order, checked to be channels 0..`channels`.
pub fn channel_files(
    name: &str,
    chans: BTreeMap<usize, PathBuf>,
    channels: usize,
) -> Result<Vec<PathBuf>, SessionError> {
    let want: Vec<usize> = (0..channels).collect();
    if chans.keys().copied().collect::<Vec<_>>() != want {
        return Err(invalid(format!(
            "case {name}: found channels {:?}, the network takes {channels} (_0000 to _{:04})",
            chans.keys().collect::<Vec<_>>(),
            channels.saturating_sub(1)
        )));
    }
    Ok(chans.into_values().collect())
}
