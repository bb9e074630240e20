//! Training: loss, optimizer, dynamic sparse DSFF masks, data loading and augmentation, the MNI
//! demo dataset, and the f32 kernels that run a training step's forward and backward ops on the
//! CPU.
//!
//! Each part is a plain module with its own tests; `e2enc train` (src/cmd/train.rs) ties them
//! together. Gradients are derived on the IR (`e2enc_ir::autodiff`) and checked there against
//! finite differences with the reference interpreter.

pub mod augment;
pub mod cgen;
pub mod checkpoint;
pub mod data;
pub mod dispatch;
pub mod exec;
pub mod kernels;
pub mod loss;
pub mod mni;
pub mod optim;
pub mod plot;
pub mod sampler;
pub mod sparse;
pub mod trainer;
