//! Tensors in, tensors out: the application-side convenience over the runtime's slice API.
//!
//! [`Runnable`] puts a compiled bundle (the runtime's [`Engine`]) and a model.json run by the
//! reference interpreter ([`Session`], as built or optimized) behind one `run` on named
//! [`Tensor`]s. [`TensorEngine`] and [`TensorOutput`] add the same tensor maps to an [`Engine`]
//! and its outputs, for code that wants them over the runtime's `set_input`/`execute`/`output`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_ir::{interp, Graph, IrError, Tensor, Weights};
use e2enc_passes::{optimize, OptimizeOptions, Report};
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::exec::{Engine, OutputRef, StepTime};
use e2enc_runtime::RuntimeError;

/// Errors of loading and running a [`Runnable`] or [`Session`].
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Compiling a bundle (int8 calibration compiles one of its own).
    #[error(transparent)]
    Codegen(#[from] e2enc_codegen::compile::CodegenError),
    /// The path holds something else than what was asked for.
    #[error("{}: {msg}", path.display())]
    Unsupported { path: PathBuf, msg: String },
    /// An output was asked for that the bundle does not compute.
    #[error("the bundle has no output `{name}` (compile with --deep-supervision for ds1..ds3)")]
    NoOutput { name: String },
    /// A bundle input given as a tensor of another dtype.
    #[error("input `{name}` must be f32")]
    NotF32 { name: String },
    #[error(transparent)]
    Segment(#[from] e2enc_segment::SegmentError),
    #[error(transparent)]
    Nifti(#[from] e2enc_segment::nifti::NiftiError),
    /// Input that the segmentation refuses (the message says why and what would work).
    #[error("{msg}")]
    Invalid { msg: String },
}

/// A loaded model ready to run.
pub struct Session {
    pub model: Model,
    /// The graph that runs (the model's, or its optimized form).
    pub graph: Graph,
    pub weights: Weights,
}

/// A compiled bundle or an interpreted model behind one interface.
pub enum Runnable {
    Bundle(Engine),
    Model(Session),
}

impl Runnable {
    /// Loads a bundle folder (one holding manifest.json) or a model.json (or a folder holding
    /// one, built with `opts`).
    pub fn load(
        path: &Path,
        opts: &BuildOptions,
        threads: usize,
        rebuild: bool,
    ) -> Result<Runnable, SessionError> {
        let load = LoadOptions {
            rebuild,
            ..LoadOptions::default()
        };
        Runnable::load_with(path, opts, threads, &load)
    }

    /// [`Runnable::load`] with the bundle's load options (rebuild, trusted keys).
    pub fn load_with(
        path: &Path,
        opts: &BuildOptions,
        threads: usize,
        load: &LoadOptions,
    ) -> Result<Runnable, SessionError> {
        if path.is_dir() && path.join("manifest.json").exists() {
            let b = Bundle::load(path, load)?;
            return Ok(Runnable::Bundle(Engine::try_new(b, threads)?));
        }
        Ok(Runnable::Model(Session::load(path, opts)?))
    }

    /// Runs and returns the requested outputs (all when empty).
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, SessionError> {
        match self {
            Runnable::Model(s) => s.run(inputs, outputs),
            Runnable::Bundle(e) => {
                let mut all = e.run(inputs)?;
                if outputs.is_empty() {
                    return Ok(all);
                }
                outputs
                    .iter()
                    .map(|&n| {
                        all.remove(n)
                            .map(|t| (n.to_string(), t))
                            .ok_or_else(|| SessionError::NoOutput { name: n.into() })
                    })
                    .collect()
            }
        }
    }
}

impl Session {
    /// Loads `path`: a model.json (or a folder holding one). `opts` fixes batch and patch.
    pub fn load(path: &Path, opts: &BuildOptions) -> Result<Session, SessionError> {
        let file = if path.is_dir() {
            if path.join("manifest.json").exists() {
                return Err(SessionError::Unsupported {
                    path: path.to_path_buf(),
                    msg:
                        "this is a compiled bundle, not a model.json (load it with Runnable::load)"
                            .into(),
                });
            }
            path.join("model.json")
        } else {
            path.to_path_buf()
        };
        let model = Model::load(&file, opts)?;
        let weights = model.require_weights()?.clone();
        let graph = model.net.graph.clone();
        Ok(Session {
            model,
            graph,
            weights,
        })
    }

    /// Replaces the graph by its optimized form (keeping `outputs`, all when empty).
    pub fn optimize(&mut self, outputs: &[&str]) -> Result<Report, SessionError> {
        let opts = OptimizeOptions {
            keep_outputs: (!outputs.is_empty())
                .then(|| outputs.iter().map(|s| s.to_string()).collect()),
            ..OptimizeOptions::default()
        };
        let o = optimize(&self.graph, &self.weights, &opts)?;
        self.graph = o.graph;
        self.weights = o.weights;
        Ok(o.report)
    }

    /// Runs the network on `inputs` and returns the requested outputs (all when empty).
    pub fn run(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, SessionError> {
        Ok(interp::run(&self.graph, &self.weights, inputs, outputs)?)
    }
}

/// Named tensors in and out of an [`Engine`].
pub trait TensorEngine {
    /// Sets every input from `inputs` (by port name; all of them, each of its compiled shape, f32)
    /// and runs, leaving the outputs in the arena ([`Engine::output`] reads them in place).
    fn execute_tensors(&mut self, inputs: &BTreeMap<String, Tensor>) -> Result<(), SessionError>;
    /// Runs on `inputs` and returns every output (copied out of the arena).
    fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, SessionError>;
    /// [`TensorEngine::run`], also timing every step.
    #[allow(clippy::type_complexity)]
    fn run_profiled(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<(BTreeMap<String, Tensor>, Vec<StepTime>), SessionError>;
}

fn set_inputs(e: &mut Engine, inputs: &BTreeMap<String, Tensor>) -> Result<(), SessionError> {
    for name in inputs.keys() {
        if !e.bundle.manifest.inputs.iter().any(|p| &p.name == name) {
            return Err(RuntimeError::UnknownInput { name: name.clone() }.into());
        }
    }
    for p in e.bundle.manifest.inputs.clone() {
        let t = inputs
            .get(&p.name)
            .ok_or_else(|| RuntimeError::MissingInput {
                name: p.name.clone(),
            })?;
        if t.shape() != p.shape.as_slice() {
            return Err(RuntimeError::ShapeMismatch {
                name: p.name.clone(),
                got: t.shape().to_vec(),
                want: p.shape.clone(),
            }
            .into());
        }
        let v = t.as_f32().ok_or_else(|| SessionError::NotF32 {
            name: p.name.clone(),
        })?;
        e.set_input(&p.name, v)?;
    }
    Ok(())
}

fn read_outputs(e: &Engine) -> Result<BTreeMap<String, Tensor>, SessionError> {
    let mut out = BTreeMap::new();
    for p in &e.bundle.manifest.outputs {
        out.insert(p.name.clone(), e.output(&p.name)?.to_tensor()?);
    }
    Ok(out)
}

impl TensorEngine for Engine {
    fn execute_tensors(&mut self, inputs: &BTreeMap<String, Tensor>) -> Result<(), SessionError> {
        set_inputs(self, inputs)?;
        Ok(self.execute()?)
    }

    fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, SessionError> {
        self.execute_tensors(inputs)?;
        read_outputs(self)
    }

    fn run_profiled(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<(BTreeMap<String, Tensor>, Vec<StepTime>), SessionError> {
        set_inputs(self, inputs)?;
        let times = self.execute_profiled()?;
        Ok((read_outputs(self)?, times))
    }
}

/// An engine output as a dense [`Tensor`].
pub trait TensorOutput {
    /// The output as a dense tensor (a copy; `i32` outputs, stored as bits, as `i32`).
    fn to_tensor(&self) -> Result<Tensor, SessionError>;
}

impl TensorOutput for OutputRef<'_> {
    fn to_tensor(&self) -> Result<Tensor, SessionError> {
        let v = self.to_vec();
        let t = if self.dtype() == "i32" {
            Tensor::from_i32(
                self.shape().to_vec(),
                v.iter().map(|x| x.to_bits() as i32).collect(),
            )
        } else {
            Tensor::from_f32(self.shape().to_vec(), v)
        };
        Ok(t?)
    }
}
