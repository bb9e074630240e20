//! `e2enc.compile`: a model.json to a signed kernel bundle, as `e2enc compile` does (the same
//! library call, the same options), with the GIL released while it optimizes, generates and
//! compiles.

use std::path::PathBuf;

use e2enc::calibrate::{calibrate_folder, Sources};
use e2enc_codegen::compile::{compile as compile_model, CompileOptions, Target};
use e2enc_codegen::precision::Precision;
use e2enc_ir::e2enet::{BuildOptions, Model};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{to_py, Error};

/// Compiles a model into a kernel bundle folder and returns a summary dict.
///
/// compile(model_json, out, *, target="native", batch=1, patch=None, deep_supervision=False,
///         force=False, precision=None, standalone=False, cc=None, sign=None, calibrate=None,
///         calibration_tiles=8, preprocessing=None, spacing_as_is=False, activations=None)
///
/// `model_json`: a model.json (or a folder holding one) naming its weights file. `out`: the
/// bundle folder to write (written to a temporary folder and renamed into place; an existing one
/// only with `force=True`). `target`: "native" (this host's widest), "x86-avx2", "x86-avx512",
/// "aarch64-neon", "portable", "cuda-sm80" or "cuda-sm90". `batch` and `patch` (D, H, W; default
/// the model's patch_size) fix the shapes the bundle runs. `deep_supervision` keeps ds1..ds3.
/// `precision`: "f32" (CPU default), "tf32" (CUDA) or "bf16" (CUDA, and x86-avx512 for CPUs with
/// avx512_bf16) or "int8" (x86-avx512 for CPUs with avx512_vnni), which needs `calibrate`: a
/// folder of cases (nnU-Net naming, CASE_0000.nii.gz, ...) whose values set the activation
/// ranges, `calibration_tiles` of each (as `e2enc compile --calibrate DIR --calibration-tiles
/// N`), preprocessed as the model says, or as the config file `preprocessing` says, or each
/// image on its own grid with `spacing_as_is=True`. bf16 and int8 bundles for x86-avx512 store
/// activations as bf16 (int8 then also needs avx512_bf16); `activations="f32"` keeps them f32
/// (as `--activations f32`: for CPUs with avx512_vnni alone). `standalone` also writes a C program. `cc`: the C compiler command. `sign`: a
/// secret key file (default: your local key).
///
/// The dict holds "path", "target", "kernels", "arena_bytes", "executed_macs", "dense_macs",
/// "signed_by" (the key's fingerprint), "key_file" and "precision". Raises ValueError for a bad target,
/// precision or shape, FileNotFoundError for a missing model, e2enc.Error otherwise (the CLI's
/// message).
#[pyfunction]
#[pyo3(signature = (model_json, out, *, target="native", batch=1, patch=None, deep_supervision=false, force=false, precision=None, standalone=false, cc=None, sign=None, calibrate=None, calibration_tiles=8, preprocessing=None, spacing_as_is=false, activations=None))]
#[allow(clippy::too_many_arguments)]
pub fn compile<'py>(
    py: Python<'py>,
    model_json: PathBuf,
    out: PathBuf,
    target: &str,
    batch: usize,
    patch: Option<(usize, usize, usize)>,
    deep_supervision: bool,
    force: bool,
    precision: Option<&str>,
    standalone: bool,
    cc: Option<String>,
    sign: Option<PathBuf>,
    calibrate: Option<PathBuf>,
    calibration_tiles: usize,
    preprocessing: Option<PathBuf>,
    spacing_as_is: bool,
    activations: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let isa: Target = target.parse().map_err(PyValueError::new_err)?;
    let precision: Option<Precision> = precision
        .map(str::parse)
        .transpose()
        .map_err(PyValueError::new_err)?;
    let f32_activations = Precision::f32_activations(precision, isa, activations).map_err(|e| {
        PyValueError::new_err(format!(
            "activations={:?}: {e}",
            activations.unwrap_or_default()
        ))
    })?;
    let int8 = precision == Some(Precision::Int8);
    if int8 {
        Precision::Int8.check(isa).map_err(PyValueError::new_err)?;
        if calibrate.is_none() {
            return Err(PyValueError::new_err(
                "precision='int8' needs calibrate=DIR: a folder of cases (CASE_0000.nii.gz, ...) \
                 like those the bundle will segment, whose values set the activation ranges",
            ));
        }
        if calibration_tiles == 0 {
            return Err(PyValueError::new_err(
                "calibration_tiles must be at least 1",
            ));
        }
    } else if calibrate.is_some() {
        return Err(PyValueError::new_err(
            "calibrate sets activation ranges for precision='int8' only",
        ));
    }
    if batch == 0 {
        return Err(PyValueError::new_err("batch must be at least 1"));
    }
    let path = if model_json.is_dir() {
        model_json.join("model.json")
    } else {
        model_json.clone()
    };
    let mut opts = CompileOptions {
        deep_supervision,
        force,
        isa,
        standalone,
        cc,
        sign: sign.clone(),
        precision,
        f32_activations,
        ..CompileOptions::default()
    };
    let build = BuildOptions {
        batch,
        patch: patch.map(|(d, h, w)| [d, h, w]),
    };
    let model = py
        .detach(|| Model::load(&path, &build))
        .map_err(|e| to_py(&e, &[&path]))?;
    let mut missing = Vec::new();
    missing.extend(sign.as_deref());
    if let Some(dir) = &calibrate {
        if out.exists() && !force {
            return Err(Error::new_err(format!(
                "{} exists; pass force=True to replace it",
                out.display()
            )));
        }
        let src = Sources {
            dir,
            tiles: calibration_tiles,
            preprocessing: preprocessing.as_deref(),
            spacing_as_is,
        };
        let mut need: Vec<&std::path::Path> = vec![dir.as_path()];
        need.extend(preprocessing.as_deref());
        let c = py
            .detach(|| calibrate_folder(&model, &opts, &src, &mut |_| {}))
            .map_err(|e| to_py(&e, &need))?;
        opts.calibration = Some(c.calibration);
    }
    let r = py
        .detach(|| compile_model(&model, &out, &opts))
        .map_err(|e| to_py(&e, &missing))?;
    let d = PyDict::new(py);
    let m = &r.manifest;
    d.set_item("path", &out)?;
    d.set_item("target", isa.to_string())?;
    d.set_item("kernels", r.kernels)?;
    d.set_item("arena_bytes", m.arena_elems as u64 * 4)?;
    d.set_item("executed_macs", m.executed_macs)?;
    d.set_item("dense_macs", m.dense_macs)?;
    d.set_item("signed_by", r.signed_by.fingerprint())?;
    d.set_item("key_file", &r.key_file)?;
    d.set_item(
        "precision",
        m.precision.clone().unwrap_or_else(|| "f32".into()),
    )?;
    Ok(d)
}
