//! `e2enc-train`: training E2ENet. Loss, optimizer, dynamic sparse DSFF masks, data loading and
//! augmentation, the MNI demo dataset, and the executor that runs a training step's forward and
//! backward ops on kernels generated for the machine's target ([`exec`], [`cgen`]; the reference
//! interpreter is the oracle they are tested against).
//!
//! Each part is a plain module with its own tests; `e2enc train` (src/cmd/train.rs) ties them
//! together. Gradients are derived on the IR (`e2enc_ir::autodiff`) and checked there against
//! finite differences with the reference interpreter.

pub mod augment;
pub mod cgen;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod device_exec;
pub mod dist;
pub mod exec;
pub mod loader;
pub mod loss;
pub mod memplan;
pub mod mni;
pub mod nccl;
pub mod optim;
pub mod plot;
pub mod sampler;
pub mod sparse;
pub mod trainer;

/// Errors of training; each variant names the part that failed (its message says how).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Ir(#[from] e2enc_ir::IrError),
    #[error(transparent)]
    Segment(#[from] e2enc_segment::SegmentError),
    #[error(transparent)]
    Nifti(#[from] e2enc_segment::nifti::NiftiError),
    /// Writing the training curve (`training.png`).
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// The training graph or the executor running it ([`exec`]).
    #[error("{0}")]
    Graph(String),
    /// Generating, compiling or calling the generated-C training kernels ([`cgen`]).
    #[error("{0}")]
    CKernels(String),
    /// A device running training kernels, or the executor keeping a step on it ([`device`],
    /// [`device_exec`]).
    #[error("{0}")]
    Device(String),
    /// The loss and the network heads it reads ([`loss`]).
    #[error("{0}")]
    Loss(String),
    /// The optimizer and its state ([`optim`]).
    #[error("{0}")]
    Optimizer(String),
    /// The dynamic sparse masks ([`sparse`]).
    #[error("{0}")]
    Mask(String),
    /// Data-parallel training: the launcher, MPI, or ranks that disagree ([`dist`]).
    #[error("{0}")]
    Distributed(String),
    /// The dataset: its listing, cases, plan and sampling ([`data`], [`sampler`], [`mni`]).
    #[error("{0}")]
    Data(String),
    /// A dataset file (its listing, a case's volume, the MNI demo's output) is not as expected.
    #[error("{}: {msg}", path.display())]
    DataFile {
        path: std::path::PathBuf,
        msg: String,
    },
    /// Reading or writing a file of a run (checkpoint files, the resumed state).
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing or resuming a checkpoint ([`checkpoint`]).
    #[error("{0}")]
    Checkpoint(String),
    /// Setting up a run: the model, its preprocessing plan and the dataset it must fit.
    #[error("{0}")]
    Setup(String),
    /// The gradient stopped being finite.
    #[error("{0}")]
    Diverged(String),
    /// A training step would not fit this machine's memory.
    #[error("{0}")]
    Memory(String),
}
