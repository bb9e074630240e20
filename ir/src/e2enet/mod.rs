//! E2ENet: the model.json schema ([`config`]), the graph builder ([`build`]) and model loading
//! with weight and mask checks ([`model`]).

pub mod build;
pub mod config;
pub mod model;

pub use build::{build, output_name, BuildOptions, E2ENet, ParamRole, ParamSpec, Part};
pub use config::{DsffConfig, ModelConfig};
pub use model::Model;
