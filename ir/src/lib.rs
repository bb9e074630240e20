//! `e2enc-ir`: the intermediate representation every stage of e2enc shares.
//!
//! - [`types`], [`op`], [`graph`]: a typed graph of tensor ops (petgraph), one result per node;
//! - [`shape`]: shape inference, the single source of truth for result types;
//! - [`verify`]: the verifier, which lists every invariant and reports all violations;
//! - [`text`]: a readable text form whose printer and parser round-trip;
//! - [`e2enet`]: model.json (schema, validation) and the E2ENet graph builder;
//! - [`weights`], [`init`]: safetensors weight stores under the official names, He init, DSFF masks;
//! - [`stats`]: parameter and MAC counts (dense and with pruned kernels skipped);
//! - [`interp`]: the reference interpreter, the oracle for every later stage;
//! - [`autodiff`]: the training graph (forward plus backward) of a forward graph.

pub mod autodiff;
pub mod dot;
pub mod e2enet;
pub mod error;
pub mod files;
pub mod graph;
pub mod init;
pub mod interp;
pub mod op;
pub mod shape;
pub mod stats;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;
pub mod weights;

pub use error::{IrError, Result};
pub use graph::{Graph, Node, NodeId};
pub use op::{
    shift_runs, Arity, ConvAttrs, ConvGradAttrs, FusedConvAttrs, Op, PoolAttrs, ShiftAttrs,
};
pub use tensor::{Tensor, TensorData};
pub use types::{DType, Shape, TensorType};
pub use weights::Weights;
