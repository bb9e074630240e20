//! Segmenting whole volumes the nnU-Net way: preprocessing ([`preprocess`], [`resample`]) and
//! sliding-window inference ([`window`]), and the two joined for one case ([`pipeline`]).

pub mod pipeline;
pub mod preprocess;
pub mod resample;
pub mod window;
