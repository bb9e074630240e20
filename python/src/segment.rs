//! Segmentation of one case with a loaded [`Bundle`]: volumes given as numpy arrays
//! ([`segment_arrays`]) or NIfTI files read as `e2enc segment` reads them ([`segment_files`]),
//! both through `e2enc::segmenting::segment_volumes`, the CLI's own per-case function. The
//! public `e2enc.segment` (python/e2enc/__init__.py) picks one and checks its arguments.
//!
//! Axes: arrays come and go in NIfTI's (x, y, z) indexing, as nibabel gives them; the pipeline's
//! buffers are x fastest, so an F-contiguous (x, y, z) array (what nibabel loads) is exactly its
//! memory: read in place, and the label and probability maps go back as F-ordered views of the
//! pipeline's buffers (probabilities: (x, y, z, class), as nibabel loads the CLI's 4-D file).

use std::path::PathBuf;

use e2enc::segmenting::{
    preprocessing, read_case, segment_volumes, CaseVolumes, Prep, Probabilities,
};
use e2enc::SessionError;
use e2enc_segment::window::WindowOptions;
use numpy::ndarray::{Array3, Array4, ShapeBuilder};
use numpy::{IntoPyArray, PyReadonlyArray3, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::bundle::Bundle;
use crate::to_py;

/// Labels (uint8 when every label is below 256, as the CLI writes them, else uint16), the
/// probabilities (x, y, z, class) when asked for, and the network grid's shape.
type Outputs<'py> = (
    Bound<'py, PyUntypedArray>,
    Option<Bound<'py, PyUntypedArray>>,
    (usize, usize, usize),
);

/// How to segment: the keyword arguments `e2enc.segment` passes on.
struct How {
    tta: bool,
    step: f64,
    probabilities: bool,
    preprocessing: Option<PathBuf>,
    spacing_as_is: bool,
    /// Bytes of window accumulators in memory (`None`: all) and the scratch file's folder.
    accumulator_memory: Option<u64>,
    scratch_dir: Option<PathBuf>,
}

/// Runs one case with the GIL released and converts the results.
fn run<'py>(
    py: Python<'py>,
    b: &Bundle,
    mut case: CaseVolumes,
    how: &How,
    missing: &[&std::path::Path],
) -> PyResult<Outputs<'py>> {
    let res = py.detach(|| -> Result<_, SessionError> {
        let mut engine = b.lock();
        let net = e2enc::segmenting::Net::of(&engine.bundle)?;
        let prep: Prep = preprocessing(
            &b.dir,
            &b.model,
            how.preprocessing.as_deref(),
            how.spacing_as_is,
            net.channels,
        )?;
        let window = WindowOptions {
            step: how.step,
            tta: how.tta,
            batch: net.batch,
            accumulator_memory: how.accumulator_memory,
            scratch_dir: how.scratch_dir.clone(),
        };
        let r = segment_volumes(
            &mut engine,
            &net,
            &prep,
            &window,
            &mut case,
            false,
            if how.probabilities {
                Probabilities::Whole
            } else {
                Probabilities::None
            },
            |_, _| {},
            |_, _| {},
        )?;
        Ok((r.segmentation, net.classes))
    });
    let (seg, classes) = res.map_err(|e| to_py(&e, missing))?;
    let [nz, ny, nx] = case.shape;
    let f = (nx, ny, nz).f();
    let bad = |e: numpy::ndarray::ShapeError| crate::Error::new_err(e.to_string());
    let labels = if seg.labels.iter().all(|&l| l < 256) {
        let v: Vec<u8> = seg.labels.iter().map(|&l| l as u8).collect();
        Array3::from_shape_vec(f, v)
            .map_err(bad)?
            .into_pyarray(py)
            .into_any()
    } else {
        Array3::from_shape_vec(f, seg.labels)
            .map_err(bad)?
            .into_pyarray(py)
            .into_any()
    };
    let probs = match seg.probabilities {
        Some(p) => Some(
            Array4::from_shape_vec((nx, ny, nz, classes).f(), p)
                .map_err(bad)?
                .into_pyarray(py)
                .into_any()
                .cast_into::<PyUntypedArray>()?,
        ),
        None => None,
    };
    let g = seg.network_shape;
    Ok((
        labels.cast_into::<PyUntypedArray>()?,
        probs,
        (g[0], g[1], g[2]),
    ))
}

/// Segments one case given as float32 arrays in (x, y, z) indexing, one per channel, with voxel
/// size `spacing` (x, y, z) in mm. Called by `e2enc.segment`.
#[pyfunction]
#[pyo3(signature = (bundle, channels, spacing, *, tta, step, probabilities, preprocessing, spacing_as_is, accumulator_memory=None, scratch_dir=None))]
#[allow(clippy::too_many_arguments)]
pub fn segment_arrays<'py>(
    py: Python<'py>,
    bundle: &Bundle,
    channels: Vec<PyReadonlyArray3<'py, f32>>,
    spacing: (f64, f64, f64),
    tta: bool,
    step: f64,
    probabilities: bool,
    preprocessing: Option<PathBuf>,
    spacing_as_is: bool,
    accumulator_memory: Option<u64>,
    scratch_dir: Option<PathBuf>,
) -> PyResult<Outputs<'py>> {
    let Some(first) = channels.first() else {
        return Err(PyValueError::new_err("no image given"));
    };
    let dims = first.shape().to_vec();
    let mut data = Vec::with_capacity(channels.len());
    for (k, c) in channels.iter().enumerate() {
        if c.shape() != dims.as_slice() {
            return Err(PyValueError::new_err(format!(
                "channel {k} has shape {:?}, channel 0 has {dims:?}: all channels must share one \
                 grid",
                c.shape()
            )));
        }
        // x fastest: an F-contiguous (x, y, z) array is that memory; others are reordered.
        let v = if c.is_fortran_contiguous() {
            c.as_array()
                .as_slice_memory_order()
                .map(<[f32]>::to_vec)
                .unwrap_or_default()
        } else {
            c.as_array().t().iter().copied().collect()
        };
        data.push(v);
    }
    let (sx, sy, sz) = spacing;
    let case = CaseVolumes {
        channels: data,
        shape: [dims[2], dims[1], dims[0]],
        spacing: [sz, sy, sx],
    };
    let how = How {
        tta,
        step,
        probabilities,
        preprocessing,
        spacing_as_is,
        accumulator_memory,
        scratch_dir,
    };
    let missing: Vec<&std::path::Path> = how.preprocessing.iter().map(PathBuf::as_path).collect();
    run(py, bundle, case, &how, &missing)
}

/// Segments one case given as NIfTI files, one per channel (read, checked and oriented as
/// `e2enc segment` does), returning also the first file's affine. Called by `e2enc.segment`.
#[pyfunction]
#[pyo3(signature = (bundle, paths, *, frame, tta, step, probabilities, preprocessing, spacing_as_is, accumulator_memory=None, scratch_dir=None))]
#[allow(clippy::too_many_arguments)]
pub fn segment_files<'py>(
    py: Python<'py>,
    bundle: &Bundle,
    paths: Vec<PathBuf>,
    frame: Option<u64>,
    tta: bool,
    step: f64,
    probabilities: bool,
    preprocessing: Option<PathBuf>,
    spacing_as_is: bool,
    accumulator_memory: Option<u64>,
    scratch_dir: Option<PathBuf>,
) -> PyResult<(Outputs<'py>, [[f64; 4]; 4])> {
    let mut missing: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
    missing.extend(preprocessing.as_deref());
    let mut vols = py
        .detach(|| read_case(&paths, frame))
        .map_err(|e| to_py(&e, &missing))?;
    let affine = vols[0].header.affine();
    let case = CaseVolumes::take(&mut vols);
    drop(vols);
    let how = How {
        tta,
        step,
        probabilities,
        preprocessing: preprocessing.clone(),
        spacing_as_is,
        accumulator_memory,
        scratch_dir,
    };
    Ok((run(py, bundle, case, &how, &missing)?, affine))
}
