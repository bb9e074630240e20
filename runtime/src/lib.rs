//! `e2enc-runtime`: loads something runnable and runs it on named input tensors.
//!
//! Two engines sit behind one API ([`Session`]): a compiled kernel bundle ([`bundle`] verifies and
//! loads it, [`exec`] runs it on the thread pool of [`pool`]), or a model.json run by the
//! reference interpreter, as built or optimized. [`capi`] exposes bundles to C and C++.

pub mod bundle;
pub mod capi;
pub mod exec;
pub mod pool;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_ir::{interp, Graph, IrError, Tensor, Weights};
use e2enc_passes::{optimize, OptimizeOptions, Report};

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error("{}: {msg}", path.display())]
    Unsupported { path: PathBuf, msg: String },
    #[error("bundle {}: {msg}", path.display())]
    Bundle { path: PathBuf, msg: String },
    #[error("{0}")]
    Input(String),
    /// A training kernel was called with inconsistent shapes or attributes.
    #[error("kernel {op}: {msg}")]
    Kernel { op: &'static str, msg: String },
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
    Bundle(exec::Engine),
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
    ) -> Result<Runnable, RuntimeError> {
        if path.is_dir() && path.join("manifest.json").exists() {
            let b = bundle::Bundle::load(path, &bundle::LoadOptions { rebuild })?;
            return Ok(Runnable::Bundle(exec::Engine::new(b, threads)));
        }
        Ok(Runnable::Model(Session::load(path, opts)?))
    }

    /// Runs and returns the requested outputs (all when empty).
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
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
                            .ok_or_else(|| RuntimeError::Input(format!("the bundle has no output `{n}` (compile with --deep-supervision for ds1..ds3)")))
                    })
                    .collect()
            }
        }
    }
}

impl Session {
    /// Loads `path`: a model.json (or a folder holding one). `opts` fixes batch and patch.
    pub fn load(path: &Path, opts: &BuildOptions) -> Result<Session, RuntimeError> {
        let file = if path.is_dir() {
            if path.join("manifest.json").exists() {
                return Err(RuntimeError::Unsupported {
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
    pub fn optimize(&mut self, outputs: &[&str]) -> Result<Report, RuntimeError> {
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
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        Ok(interp::run(&self.graph, &self.weights, inputs, outputs)?)
    }
}
