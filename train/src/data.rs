//! Training data: nnU-Net raw dataset folders ([`RawDataset`]), the nnU-Net v1 planner's
//! preprocessing choices ([`plan`]) and the loading of one preprocessed training case
//! ([`load_case`]).
//!
//! A raw folder holds `dataset.json`, `imagesTr/CASE_XXXX<ending>` (one file per channel),
//! `labelsTr/CASE<ending>` and optionally `imagesTs/` and `labelsTs/`. Both dataset.json forms are
//! read: v1 (`modality`, `labels: {"0": "background"}`, `training: [{image, label}]`, the case id
//! being the image name without its ending) and v2 (`channel_names`, `labels: {"background": 0}`,
//! `file_ending`, cases found by listing `labelsTr/`). Test cases are always found by listing
//! `imagesTs/` for `*_0000<ending>`. Opening checks that every file exists; reading a case
//! ([`RawDataset::read_case`]) checks that the channels share one grid (dims exactly, affine
//! within 1e-3 mm) and that every label value is an integer listed in dataset.json. Errors are
//! `TrainError::Data` messages that name the file at fault.
//!
//! Planning follows nnU-Net v1 `ExperimentPlanner3D_v21` (see [`target_spacing`]); the axis
//! order is `[2, 1, 0]` (NIfTI `x, y, z` to nnU-Net's `z, y, x`). Normalisation per channel: a
//! channel whose name contains "CT" gets [`Normalization::Ct`](e2enc_segment::preprocess::Normalization::Ct) from every 10th foreground
//! (label > 0) voxel of each cropped training image, pooled over cases (nnU-Net v1's
//! `DatasetAnalyzer` samples `image[mask][::10]` the same way; percentiles are numpy's linear
//! ones, the standard deviation the population one). Every other channel gets
//! [`Normalization::ZScore`](e2enc_segment::preprocess::Normalization::ZScore) with `use_nonzero_mask` true when cropping to the non-zero region left
//! less than 3/4 of the voxels, taking the *median* of the per-case size reductions as nnU-Net v1's
//! `determine_whether_to_use_mask_for_norm` does.
//!
//! Labels are brought onto the preprocessed image grid like nnU-Net v1 resamples segmentations
//! (`resize_segmentation` with order 1): each present foreground label's mask is resampled
//! linearly (order 0 along a separately resampled anisotropic axis) and the label is written where
//! its resampled mask reaches 0.5, labels in ascending order so a later one wins. This keeps thin
//! structures' shape better than order 0 and is what the trained networks were fed.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::TrainError;
use e2enc_segment::nifti::{self, Header};
use e2enc_segment::preprocess::{crop, preprocess, transpose, PreprocessingConfig};
use e2enc_segment::resample::{resample, Order, Shape};

/// NIfTI `(x, y, z)` to the network's `(z, y, x)`.
pub const AXIS_ORDER: [usize; 3] = [2, 1, 0];

/// The files of one case.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseFiles {
    pub id: String,
    /// One file per channel, in channel order.
    pub images: Vec<PathBuf>,
    /// The label map (always present for training cases).
    pub label: Option<PathBuf>,
}

/// An nnU-Net raw dataset folder.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDataset {
    pub root: PathBuf,
    pub name: String,
    /// Channel (modality) names, in channel order ("CT", "T1", ...).
    pub channel_names: Vec<String>,
    /// `(value, name)` pairs sorted by value; value 0 is the background.
    pub labels: Vec<(u16, String)>,
    /// File name ending of every image and label (".nii.gz").
    pub file_ending: String,
    pub training: Vec<CaseFiles>,
    pub test: Vec<CaseFiles>,
}

/// A case as read from disk, in *input axes*: NIfTI `(x, y, z)` as a C-order array (z fastest),
/// i.e. the x-fastest NIfTI buffer transposed. This is the input layout that
/// [`PreprocessingConfig`]'s `axis_order` `[2, 1, 0]` refers to; after that transpose the network
/// axes are `(z, y, x)`, x fastest: the NIfTI buffer's own order.
#[derive(Clone, Debug)]
pub struct RawCase {
    pub id: String,
    pub channels: Vec<Vec<f32>>,
    pub label: Option<Vec<u16>>,
    /// NIfTI `(x, y, z)` dims: the shape of every channel.
    pub dims: [usize; 3],
    /// Voxel size along x, y, z in mm.
    pub spacing: [f64; 3],
    /// The first channel's header.
    pub header: Header,
}

/// A preprocessed training case in network axes (C order, last axis fastest).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainCase {
    /// One normalised volume per channel, each of `shape`.
    pub channels: Vec<Vec<f32>>,
    /// Label values (0 = background), of `shape`.
    pub label: Vec<u16>,
    pub shape: [usize; 3],
}

fn input_err(path: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::DataFile {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

fn nifti_err(e: nifti::NiftiError) -> TrainError {
    TrainError::Nifti(e)
}

impl RawDataset {
    /// Reads `dir/dataset.json` (v1 or v2 form) and checks that every case's files exist.
    pub fn open(dir: &Path) -> Result<RawDataset, TrainError> {
        let json_path = dir.join("dataset.json");
        let text = e2enc_ir::files::read_text(&json_path)?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| input_err(&json_path, format!("not valid JSON: {e}")))?;
        let bad = |m: String| input_err(&json_path, m);
        let obj = json
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("dataset")
            .to_string();
        let v2 = obj.contains_key("channel_names");
        let channel_key = if v2 { "channel_names" } else { "modality" };
        let channels = obj
            .get(channel_key)
            .and_then(Value::as_object)
            .ok_or_else(|| bad("has neither `channel_names` (v2) nor `modality` (v1)".into()))?;
        let mut channel_names = vec![None; channels.len()];
        for (k, v) in channels {
            let i: usize = k
                .parse()
                .ok()
                .filter(|&i| i < channels.len())
                .ok_or_else(|| {
                    bad(format!(
                        "`{channel_key}` key \"{k}\" is not a channel index 0..{}",
                        channels.len()
                    ))
                })?;
            let s = v
                .as_str()
                .ok_or_else(|| bad(format!("`{channel_key}`[\"{k}\"] is not a string")))?;
            channel_names[i] = Some(s.to_string());
        }
        let channel_names: Vec<String> = channel_names.into_iter().flatten().collect();
        if channel_names.len() != channels.len() || channel_names.is_empty() {
            return Err(bad(format!(
                "`{channel_key}` must list channels 0..n once each"
            )));
        }
        let labels = parse_labels(obj.get("labels"), v2).map_err(bad)?;
        let (file_ending, training) = if v2 {
            let ending = obj
                .get("file_ending")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("v2 form (channel_names) without `file_ending`".into()))?
                .to_string();
            let ids = list_ids(&dir.join("labelsTr"), &ending, "")?;
            // An image without a label is a mistake in the dataset, not a case to drop quietly.
            for id in list_ids(&dir.join("imagesTr"), &ending, "_0000")? {
                if ids.binary_search(&id).is_err() {
                    return Err(input_err(
                        &dir.join("imagesTr").join(format!("{id}_0000{ending}")),
                        format!(
                            "training image of case `{id}` has no label (expected {})",
                            dir.join("labelsTr").join(format!("{id}{ending}")).display()
                        ),
                    ));
                }
            }
            let cases = ids
                .into_iter()
                .map(|id| {
                    let label = dir.join("labelsTr").join(format!("{id}{ending}"));
                    case_files(
                        dir,
                        "imagesTr",
                        &id,
                        &ending,
                        channel_names.len(),
                        Some(label),
                    )
                })
                .collect();
            (ending, cases)
        } else {
            v1_training(dir, obj, channel_names.len()).map_err(bad)?
        };
        if training.is_empty() {
            return Err(bad("lists no training case".into()));
        }
        let test_dir = dir.join("imagesTs");
        let mut test = Vec::new();
        if test_dir.is_dir() {
            for id in list_ids(&test_dir, &file_ending, "_0000")? {
                let label = dir.join("labelsTs").join(format!("{id}{file_ending}"));
                let label = label.is_file().then_some(label);
                test.push(case_files(
                    dir,
                    "imagesTs",
                    &id,
                    &file_ending,
                    channel_names.len(),
                    label,
                ));
            }
        }
        for case in training.iter().chain(&test) {
            for p in &case.images {
                if !p.is_file() {
                    return Err(input_err(
                        p,
                        format!("channel file of case `{}` is missing", case.id),
                    ));
                }
            }
        }
        for case in &training {
            match &case.label {
                Some(p) if p.is_file() => {}
                Some(p) => {
                    return Err(input_err(
                        p,
                        format!("label file of case `{}` is missing", case.id),
                    ))
                }
                None => return Err(bad(format!("case `{}` has no label", case.id))),
            }
        }
        Ok(RawDataset {
            root: dir.to_path_buf(),
            name,
            channel_names,
            labels,
            file_ending,
            training,
            test,
        })
    }

    /// Reads a case's channels (and label, if it has one), checking their geometry and label values.
    pub fn read_case(&self, case: &CaseFiles) -> Result<RawCase, TrainError> {
        let mut channels = Vec::with_capacity(case.images.len());
        let mut first: Option<nifti::Volume> = None;
        for p in &case.images {
            let v = nifti::read(p).map_err(nifti_err)?;
            if let Some(f) = &first {
                check_same_grid(f, &v, &case.images[0], p)?;
                channels.push(to_input_axes(&v.data, v.dims));
            } else {
                channels.push(Vec::new()); // filled below, after the first volume is kept
                first = Some(v);
            }
        }
        let mut first = first
            .ok_or_else(|| TrainError::Data(format!("case `{}` lists no channel file", case.id)))?;
        channels[0] = to_input_axes(&std::mem::take(&mut first.data), first.dims);
        let label = match &case.label {
            None => None,
            Some(p) => {
                let v = nifti::read(p).map_err(nifti_err)?;
                check_same_grid(&first, &v, &case.images[0], p)?;
                Some(to_input_axes(&self.label_values(p, &v.data)?, v.dims))
            }
        };
        Ok(RawCase {
            id: case.id.clone(),
            channels,
            label,
            dims: first.dims,
            spacing: first.header.spacing(),
            header: first.header,
        })
    }

    /// Converts a label file's values to `u16`, refusing any that dataset.json does not list.
    fn label_values(&self, path: &Path, data: &[f32]) -> Result<Vec<u16>, TrainError> {
        let max = self.labels.last().map_or(0, |l| l.0);
        let mut allowed = vec![false; usize::from(max) + 1];
        for &(v, _) in &self.labels {
            allowed[usize::from(v)] = true;
        }
        data.iter()
            .map(|&v| {
                let r = v.round();
                if (v - r).abs() < 1e-3 && r >= 0.0 && r <= f32::from(max) && allowed[r as usize] {
                    Ok(r as u16)
                } else {
                    Err(input_err(
                        path,
                        format!(
                            "label value {v} is not one of dataset.json's labels {:?}",
                            self.labels.iter().map(|l| l.0).collect::<Vec<_>>()
                        ),
                    ))
                }
            })
            .collect()
    }

    /// Number of classes the network predicts (largest label value + 1).
    pub fn num_classes(&self) -> usize {
        self.labels.last().map_or(1, |l| usize::from(l.0) + 1)
    }
}

/// The x-fastest NIfTI buffer of `dims` as a C-order `(x, y, z)` array.
pub fn to_input_axes<T: Copy>(data: &[T], dims: [usize; 3]) -> Vec<T> {
    transpose(data, [dims[2], dims[1], dims[0]], [2, 1, 0]).0
}

fn parse_labels(v: Option<&Value>, v2: bool) -> Result<Vec<(u16, String)>, String> {
    let obj = v
        .and_then(Value::as_object)
        .ok_or("has no `labels` object")?;
    let mut out = Vec::new();
    for (k, v) in obj {
        let (value, name) = if v2 {
            let n = v.as_u64().ok_or_else(|| {
                format!(
                    "label \"{k}\" is {v}, not a whole number (region-based labels are not supported)"
                )
            })?;
            (n, k.clone())
        } else {
            let n = k
                .parse::<u64>()
                .map_err(|_| format!("v1 `labels` key \"{k}\" is not a whole number"))?;
            let name = v
                .as_str()
                .ok_or_else(|| format!("v1 label \"{k}\" has no name string"))?;
            (n, name.to_string())
        };
        let value =
            u16::try_from(value).map_err(|_| format!("label value {value} is above 65535"))?;
        out.push((value, name));
    }
    out.sort();
    if out.first().map(|l| l.0) != Some(0) {
        return Err("`labels` must include the background, value 0".into());
    }
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("`labels` lists a value twice".into());
    }
    Ok(out)
}

type V1Cases = (String, Vec<CaseFiles>);

fn v1_training(
    dir: &Path,
    obj: &serde_json::Map<String, Value>,
    n_channels: usize,
) -> Result<V1Cases, String> {
    let list = obj
        .get("training")
        .and_then(Value::as_array)
        .ok_or("v1 form (modality) without a `training` list")?;
    let mut ending = String::from(".nii.gz");
    let mut cases = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let get = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("training[{i}] has no `{k}` string"))
        };
        let (image, label) = (get("image")?, get("label")?);
        let base = Path::new(image)
            .file_name()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("training[{i}].image `{image}` has no file name"))?;
        ending = [".nii.gz", ".nii"]
            .into_iter()
            .find(|e| base.ends_with(e))
            .ok_or_else(|| format!("training[{i}].image `{image}` is not a .nii or .nii.gz"))?
            .to_string();
        let id = &base[..base.len() - ending.len()];
        let label = dir.join(label.trim_start_matches("./"));
        cases.push(case_files(
            dir,
            "imagesTr",
            id,
            &ending,
            n_channels,
            Some(label),
        ));
    }
    Ok((ending, cases))
}

fn case_files(
    dir: &Path,
    sub: &str,
    id: &str,
    ending: &str,
    n_channels: usize,
    label: Option<PathBuf>,
) -> CaseFiles {
    CaseFiles {
        id: id.to_string(),
        images: (0..n_channels)
            .map(|c| dir.join(sub).join(format!("{id}_{c:04}{ending}")))
            .collect(),
        label,
    }
}

/// Sorted ids of the files `ID<suffix><ending>` in `dir`.
fn list_ids(dir: &Path, ending: &str, suffix: &str) -> Result<Vec<String>, TrainError> {
    let rd = std::fs::read_dir(dir).map_err(|e| input_err(dir, e))?;
    let tail = format!("{suffix}{ending}");
    let mut ids = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| input_err(dir, e))?;
        let name = entry.file_name();
        if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(tail.as_str())) {
            if !id.is_empty() && !id.starts_with('.') {
                ids.push(id.to_string());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

fn check_same_grid(
    a: &nifti::Volume,
    b: &nifti::Volume,
    pa: &Path,
    pb: &Path,
) -> Result<(), TrainError> {
    nifti::same_grid(a, b)
        .map_err(|m| input_err(pb, format!("not on the grid of {}: {m}", pa.display())))
}

/// Resamples a label map (network axes) like nnU-Net's `resize_segmentation(order=1)` (see the
/// module doc).
pub fn resample_labels(
    label: &[u16],
    shape: Shape,
    new_shape: Shape,
    anisotropic_axis: Option<usize>,
) -> Result<Vec<u16>, TrainError> {
    if shape == new_shape {
        return Ok(label.to_vec());
    }
    let max = label.iter().copied().max().unwrap_or(0);
    let mut present = vec![false; usize::from(max) + 1];
    for &l in label {
        present[usize::from(l)] = true;
    }
    let mut out = vec![0u16; new_shape.iter().product()];
    for c in (1..=max).filter(|&c| present[usize::from(c)]) {
        let m: Vec<f32> = label
            .iter()
            .map(|&l| if l == c { 1.0 } else { 0.0 })
            .collect();
        let r = resample(&m, shape, new_shape, Order::Linear, anisotropic_axis)?;
        for (o, v) in out.iter_mut().zip(r) {
            if v >= 0.5 {
                *o = c;
            }
        }
    }
    Ok(out)
}

/// Reads and preprocesses one case with `cfg`: the image through
/// [`e2enc_segment::preprocess::preprocess`], the label cropped with the same box and resampled
/// with [`resample_labels`] onto the same grid.
pub fn load_case(
    ds: &RawDataset,
    case: &CaseFiles,
    cfg: &PreprocessingConfig,
) -> Result<TrainCase, TrainError> {
    let raw = ds.read_case(case)?;
    let label = raw
        .label
        .as_ref()
        .ok_or_else(|| TrainError::Data(format!("case `{}` has no label file", raw.id)))?;
    let prep = preprocess(&raw.channels, raw.dims, raw.spacing, cfg)?;
    let (net_label, net_shape) = transpose(label, raw.dims, cfg.axis_order);
    let cropped = crop(&net_label, net_shape, &prep.bbox);
    let label = resample_labels(
        &cropped,
        prep.crop_shape,
        prep.resampled_shape,
        prep.anisotropic_axis,
    )?;
    Ok(TrainCase {
        channels: prep.data,
        label,
        shape: prep.resampled_shape,
    })
}

#[path = "data_plan.rs"]
mod planner;
pub use planner::{case_stats, percentile, plan, plan_from_stats, target_spacing, CaseStats};

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
