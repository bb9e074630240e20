//! `e2enc.compile`: a model.json to a signed kernel bundle, as `e2enc compile` does (the same
//! library call, the same options), with the GIL released while it optimizes, generates and
//! compiles.

use std::path::PathBuf;

use e2enc_codegen::compile::{compile as compile_model, CompileOptions, Target};
use e2enc_codegen::precision::Precision;
use e2enc_ir::e2enet::{BuildOptions, Model};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::to_py;

/// Compiles a model into a kernel bundle folder and returns a summary dict.
///
/// compile(model_json, out, *, target="native", batch=1, patch=None, deep_supervision=False,
///         force=False, precision=None, standalone=False, cc=None, sign=None)
///
/// `model_json`: a model.json (or a folder holding one) naming its weights file. `out`: the
/// bundle folder to write (written to a temporary folder and renamed into place; an existing one
/// only with `force=True`). `target`: "native" (this host's widest), "x86-avx2", "x86-avx512",
/// "aarch64-neon", "portable", "cuda-sm80" or "cuda-sm90". `batch` and `patch` (D, H, W; default
/// the model's patch_size) fix the shapes the bundle runs. `deep_supervision` keeps ds1..ds3.
/// `precision`: "f32" (CPU default), "tf32" (CUDA) or "bf16" (CUDA, and x86-avx512 for CPUs with
/// avx512_bf16); "int8" needs a calibration on a folder of cases, which only the command line
/// does for now (`e2enc compile --precision int8 --calibrate DIR`): ValueError here. `standalone` also writes a C program. `cc`: the C compiler command. `sign`: a
/// secret key file (default: your local key).
///
/// The dict holds "path", "target", "kernels", "arena_bytes", "executed_macs", "dense_macs",
/// "signed_by" (the key's fingerprint) and "key_file". Raises ValueError for a bad target,
/// precision or shape, FileNotFoundError for a missing model, e2enc.Error otherwise (the CLI's
/// message).
#[pyfunction]
#[pyo3(signature = (model_json, out, *, target="native", batch=1, patch=None, deep_supervision=false, force=false, precision=None, standalone=false, cc=None, sign=None))]
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
) -> PyResult<Bound<'py, PyDict>> {
    let isa: Target = target.parse().map_err(PyValueError::new_err)?;
    let precision: Option<Precision> = precision
        .map(str::parse)
        .transpose()
        .map_err(PyValueError::new_err)?;
    if precision == Some(Precision::Int8) {
        return Err(PyValueError::new_err(
            "precision='int8' needs a calibration on a folder of cases: compile it with the \
             command line, `e2enc compile MODEL -o OUT --target x86-avx512 --precision int8 \
             --calibrate DIR`, and load the bundle here",
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
    let opts = CompileOptions {
        deep_supervision,
        force,
        isa,
        standalone,
        cc,
        sign: sign.clone(),
        precision,
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
    Ok(d)
}
