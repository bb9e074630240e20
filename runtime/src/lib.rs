//! `e2enc-runtime`: what a deployment links to run a compiled kernel bundle, and nothing more.
//!
//! [`bundle`] verifies and loads a bundle folder (its signature first, see [`sign`] for the
//! trusted keys and the threat model; the format is defined here: [`format`] for
//! `manifest.json`, [`layout`] for the padded activation layout, [`target`] for the targets the
//! kernels are built for; codegen writes what these read), [`exec`] runs it on a [`device`] (the
//! CPU, whose [`pool`] spreads tiles over threads, or with the `cuda` feature an NVIDIA GPU,
//! [`cuda`]), and [`capi`] exposes it to C and C++
//! (`include/e2enc.h`). [`cc`] is the host C compiler for `--rebuild`. The API is on slices;
//! tensors, the interpreter and segmentation live on the application side (`e2enc`,
//! `e2enc-segment`, `e2enc-train`).

pub mod bundle;
pub mod capi;
pub mod cc;
pub mod cuda;
pub mod device;
pub mod emulate;
pub mod exec;
pub mod format;
pub mod layout;
pub mod pool;
pub mod sign;
pub mod target;

use std::path::PathBuf;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bundle failed verification or could not be loaded.
    #[error("bundle {}: {msg}", path.display())]
    Bundle { path: PathBuf, msg: String },
    #[error("the bundle has no input `{name}`")]
    UnknownInput { name: String },
    #[error("input `{name}` is missing")]
    MissingInput { name: String },
    #[error("input `{name}` has shape {got:?}, the bundle was compiled for {want:?}")]
    ShapeMismatch {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("input `{name}` has {got} values, the bundle was compiled for {want} ({shape:?})")]
    LengthMismatch {
        name: String,
        got: usize,
        want: usize,
        shape: Vec<usize>,
    },
    #[error("the bundle has no output `{name}`")]
    UnknownOutput { name: String },
    #[error("output `{name}` holds {dtype}, not f32")]
    NotF32 { name: String, dtype: String },
    #[error("row ({}, {}, {}, {}) is outside output `{name}` of shape {shape:?}", row[0], row[1], row[2], row[3])]
    RowOutside {
        name: String,
        row: [usize; 4],
        shape: Vec<usize>,
    },
    #[error("output `{name}` has {want} values, the destination {got}")]
    DestinationLength {
        name: String,
        want: usize,
        got: usize,
    },
    /// The device cannot run the bundle (a CUDA bundle on the CPU, no GPU or driver, a GPU of
    /// another architecture, a driver older than the bundle needs, a failed launch).
    #[error("{msg}")]
    Device { msg: String },
    /// The bundle's arena does not fit in this machine's memory.
    #[error("{what} needs {need} bytes ({:.1} GiB) of memory; {have}", *need as f64 / (1u64 << 30) as f64)]
    OutOfMemory {
        what: String,
        need: u64,
        have: String,
    },
}
