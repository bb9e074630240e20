//! Segmenting whole volumes the nnU-Net way: preprocessing ([`preprocess`], [`resample`]) and
//! sliding-window inference ([`window`]).

pub mod preprocess;
pub mod resample;
pub mod window;
