//! `e2enc-runtime`: loads something runnable and runs it on named input tensors.
//!
//! Today the executable is a model.json run by the reference interpreter, either as built or
//! after the optimizer (`Session::optimize`); compiled bundles (a folder with `manifest.json`)
//! are recognised and refused with a clear message until the C backend lands. The API
//! (`Session::load`, `Session::run`) is the one bundles will keep.

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
}

/// A loaded model ready to run.
pub struct Session {
    pub model: Model,
    /// The graph that runs (the model's, or its optimized form).
    pub graph: Graph,
    pub weights: Weights,
}

impl Session {
    /// Loads `path`: a model.json (or a folder holding one). `opts` fixes batch and patch.
    pub fn load(path: &Path, opts: &BuildOptions) -> Result<Session, RuntimeError> {
        let file = if path.is_dir() {
            if path.join("manifest.json").exists() {
                return Err(RuntimeError::Unsupported {
                    path: path.to_path_buf(),
                    msg: "this is a compiled bundle; running bundles arrives with the C backend \
                          (for now pass the model.json it was compiled from)"
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
