//! `e2enc.Bundle`: a verified, loaded bundle and its engine (the runtime's `Engine`), run on
//! numpy arrays. The engine sits behind a mutex taken with the GIL released, so a run never
//! blocks other Python threads and two threads sharing a bundle take turns.
//!
//! Copies: a C-contiguous float32 input is read in place (the runtime copies it once into its
//! padded arena, as every run does); any other layout is copied into C order first. Each output
//! is copied once out of the arena into a `Vec` that numpy then owns (no further copy).

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use e2enc::device::{engine_on, parse_device};
use e2enc::segmenting::Net;
use e2enc_runtime::bundle::{Bundle as RtBundle, LoadOptions};
use e2enc_runtime::exec::Engine;
use e2enc_runtime::format::Port;
use e2enc_runtime::RuntimeError;
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{
    dtype, IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::to_py;

/// A compiled e2enc bundle (a folder from `e2enc compile` or `e2enc.compile`), loaded and ready
/// to run.
///
/// Bundle(path, *, threads=0, device="cpu", trusted_keys=None, trust_unsigned=False,
///        rebuild=False, emulate=False)
///
/// Loading verifies the bundle as `e2enc run` does: every file's checksum, and its signature
/// against your local key and the trusted keys (`trusted_keys`: a file of public key lines, else
/// $E2ENC_TRUSTED_KEYS or ~/.config/e2enc/trusted_keys). `trust_unsigned=True` loads a bundle
/// without a trusted signature (its kernels.so is code that runs as you). `threads`: CPU worker
/// threads (0: all cores). `device`: "cpu", "cuda" or "cuda:N" (a bundle compiled for a CUDA
/// target). `rebuild`: recompile kernels.c on this host. `emulate`: run a CUDA bundle's kernels
/// on this CPU through the host emulation (slow; for checking results without a GPU).
///
/// Raises FileNotFoundError when `path` does not exist, e2enc.Error when the bundle is refused
/// (the message is the CLI's).
///
/// Example:
///     b = e2enc.Bundle("my-bundle")
///     y = b.run(np.zeros(b.inputs[0][1], np.float32))["logits"]
#[pyclass(module = "e2enc", name = "Bundle")]
pub struct Bundle {
    pub(crate) engine: Mutex<Engine>,
    pub(crate) dir: PathBuf,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    target: Option<String>,
    device: String,
    threads: usize,
    pub(crate) model: serde_json::Value,
}

impl Bundle {
    /// The engine, taken with the GIL released (a poisoned lock is still usable: a failed run
    /// leaves nothing half-done that the next `set_input` + `execute` would read).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The network's shapes for segmentation.
    pub(crate) fn net(&self) -> PyResult<Net> {
        Net::of(&self.lock().bundle).map_err(|e| to_py(&e, &[]))
    }
}

/// One output copied out of the arena: f32 values, or i32 labels.
enum Values {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

/// A numpy array of `shape` (C order) owning `v` (moved in, not copied).
fn owned_array<'py, T: numpy::Element>(
    py: Python<'py>,
    shape: &[usize],
    v: Vec<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), v)
        .map_err(|e| crate::Error::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any())
}

/// A port as Python sees it: (name, shape tuple).
type PortTuple<'py> = (String, Bound<'py, PyTuple>);

fn port_tuples<'py>(py: Python<'py>, ports: &[Port]) -> PyResult<Vec<PortTuple<'py>>> {
    ports
        .iter()
        .map(|p| Ok((p.name.clone(), PyTuple::new(py, &p.shape)?)))
        .collect()
}

#[pymethods]
impl Bundle {
    #[new]
    #[pyo3(signature = (path, *, threads=0, device="cpu", trusted_keys=None, trust_unsigned=false, rebuild=false, emulate=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        threads: usize,
        device: &str,
        trusted_keys: Option<PathBuf>,
        trust_unsigned: bool,
        rebuild: bool,
        emulate: bool,
    ) -> PyResult<Bundle> {
        let device = parse_device(device).map_err(PyValueError::new_err)?;
        if threads > e2enc::device::MAX_THREADS {
            return Err(PyValueError::new_err(format!(
                "{threads} threads is more than the limit of {}",
                e2enc::device::MAX_THREADS
            )));
        }
        let opts = LoadOptions {
            rebuild,
            trusted_keys,
            trust_unsigned,
            emulate,
        };
        let loaded: Result<Engine, RuntimeError> = py.detach(|| {
            let b = RtBundle::load(&path, &opts)?;
            engine_on(device, b, threads)
        });
        let engine = loaded.map_err(|e| to_py(&e, &[&path]))?;
        let m = &engine.bundle.manifest;
        Ok(Bundle {
            inputs: m.inputs.clone(),
            outputs: m.outputs.clone(),
            target: m.target.clone(),
            model: m.model.clone(),
            device: engine.device().describe(),
            threads: engine.threads(),
            dir: path,
            engine: Mutex::new(engine),
        })
    }

    /// Runs the bundle on one input and returns every output: a dict name -> numpy array.
    ///
    /// `x` is a numpy float32 array of exactly the bundle's input shape [N, C, D, H, W]
    /// (`Bundle.inputs[0][1]`; a bundle is compiled for one batch and patch). A C-contiguous
    /// array is read in place, any other layout is copied first; another dtype raises TypeError
    /// and another shape ValueError. The outputs (`logits`, and `ds1`..`ds3` for a bundle
    /// compiled with deep supervision) are new float32 arrays (int32 for a labels output) that
    /// own memory filled once from the engine. The GIL is released while the kernels run.
    #[pyo3(signature = (x, /))]
    fn run<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let [port] = self.inputs.as_slice() else {
            return Err(crate::Error::new_err(format!(
                "bundle {} has {} inputs; Bundle.run feeds one",
                self.dir.display(),
                self.inputs.len()
            )));
        };
        let want = &port.shape;
        let arr = x.cast::<PyUntypedArray>().map_err(|_| {
            PyTypeError::new_err(format!(
                "input `{}` must be a numpy.ndarray of float32 with shape {want:?}, got {}",
                port.name,
                x.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })?;
        if !arr.dtype().is_equiv_to(&dtype::<f32>(py)) {
            return Err(PyTypeError::new_err(format!(
                "input `{}` must be float32 (native byte order), got {}: convert it with \
                 x.astype(numpy.float32)",
                port.name,
                arr.dtype()
            )));
        }
        if arr.shape() != want.as_slice() {
            return Err(PyValueError::new_err(format!(
                "input `{}` has shape {:?}, the bundle takes {want:?} (it is compiled for one \
                 batch and patch)",
                port.name,
                arr.shape()
            )));
        }
        let arr = arr.cast::<PyArrayDyn<f32>>()?.readonly();
        let copied: Vec<f32>;
        // `as_slice` also accepts F-contiguous memory, which is not [N, C, D, H, W] order.
        let values: &[f32] = match arr.as_slice() {
            Ok(s) if arr.is_c_contiguous() => s,
            _ => {
                copied = arr.as_array().iter().copied().collect();
                &copied
            }
        };
        let outs: Result<Vec<(String, Vec<usize>, Values)>, RuntimeError> = py.detach(|| {
            let mut e = self.lock();
            e.set_input(&port.name, values)?;
            e.execute()?;
            let mut outs = Vec::new();
            for p in &self.outputs {
                let o = e.output(&p.name)?;
                let v = if o.dtype() == "f32" {
                    let mut v = vec![0f32; p.shape.iter().product()];
                    o.copy_to(&mut v)?;
                    Values::F32(v)
                } else {
                    Values::I32(o.to_vec().iter().map(|x| x.to_bits() as i32).collect())
                };
                outs.push((p.name.clone(), p.shape.clone(), v));
            }
            Ok(outs)
        });
        let outs = outs.map_err(|e| to_py(&e, &[]))?;
        let d = PyDict::new(py);
        for (name, shape, v) in outs {
            let a = match v {
                Values::F32(v) => owned_array(py, &shape, v)?,
                Values::I32(v) => owned_array(py, &shape, v)?,
            };
            d.set_item(name, a)?;
        }
        Ok(d)
    }

    /// The bundle folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The inputs: a list of (name, shape) with shape a tuple [N, C, D, H, W].
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<PortTuple<'py>>> {
        port_tuples(py, &self.inputs)
    }

    /// The outputs: a list of (name, shape), `logits` first.
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<PortTuple<'py>>> {
        port_tuples(py, &self.outputs)
    }

    /// What the kernels were generated for (e.g. "x86-avx512", "cuda-sm90"), if recorded.
    #[getter]
    fn target(&self) -> Option<String> {
        self.target.clone()
    }

    /// Where the bundle runs, e.g. "cpu (2 threads)".
    #[getter]
    fn device(&self) -> String {
        self.device.clone()
    }

    /// Worker threads of the engine.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    /// Tiles per run (the input's N).
    #[getter]
    fn batch(&self) -> PyResult<usize> {
        Ok(self.net()?.batch)
    }

    /// Input channels (the input's C).
    #[getter]
    fn channels(&self) -> PyResult<usize> {
        Ok(self.net()?.channels)
    }

    /// Output classes, background included.
    #[getter]
    fn classes(&self) -> PyResult<usize> {
        Ok(self.net()?.classes)
    }

    /// The patch (D, H, W) the bundle is compiled for.
    #[getter]
    fn patch(&self) -> PyResult<(usize, usize, usize)> {
        let [d, h, w] = self.net()?.patch;
        Ok((d, h, w))
    }

    fn __repr__(&self) -> String {
        let shape = self
            .inputs
            .first()
            .map(|p| p.shape.clone())
            .unwrap_or_default();
        format!(
            "Bundle({:?}, input {shape:?}, target {}, {})",
            self.dir.display().to_string(),
            self.target.as_deref().unwrap_or("?"),
            self.device
        )
    }
}
