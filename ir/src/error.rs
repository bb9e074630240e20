//! The `ir` crate's error type. Every message names the file, tensor or node at fault.

use std::path::PathBuf;

use crate::verify::Violation;

#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("shape error at {node}: {msg}")]
    Shape { node: String, msg: String },

    #[error("the graph has a cycle through {}", nodes.join(", "))]
    Cycle { nodes: Vec<String> },

    #[error("graph verification failed with {} violation(s):\n{}", .0.len(), .0.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n"))]
    Verify(Vec<Violation>),

    #[error("{path}:{line}:{col}: {msg}")]
    Parse {
        path: String,
        line: usize,
        col: usize,
        msg: String,
    },

    #[error("{path}: {msg}")]
    Config { path: String, msg: String },

    #[error("tensor `{tensor}`: {msg}")]
    Tensor { tensor: String, msg: String },

    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("interpreter at {node}: {msg}")]
    Interp { node: String, msg: String },
}

impl IrError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IrError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn tensor(tensor: impl Into<String>, msg: impl Into<String>) -> Self {
        IrError::Tensor {
            tensor: tensor.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = IrError> = std::result::Result<T, E>;
