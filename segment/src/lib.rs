//! `e2enc-segment`: the application side of segmentation. Whole volumes the nnU-Net way:
//! preprocessing ([`preprocess`], [`resample`]) and sliding-window inference ([`window`]), joined
//! for one case ([`pipeline`]); NIfTI-1/2 reading and writing ([`nifti`]), quality metrics
//! ([`metrics`]) and quick-look PNG previews ([`preview`]).
//!
//! The predictor is a closure, so this crate does not link the runtime: `e2enc segment` passes a
//! compiled bundle's engine, the interpreter, or (in training) the current network.

pub mod metrics;
pub mod nifti;
pub mod pipeline;
pub mod preprocess;
pub mod preview;
pub mod resample;
pub mod window;

use resample::Shape;

/// Errors of preprocessing, resampling and whole-case segmentation; each variant names the
/// check that failed (NIfTI, metrics and previews have their own error types).
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The model's preprocessing plan is inconsistent.
    #[error("preprocessing config: {0}")]
    Config(String),
    #[error("{what}: shape {shape:?} has an empty axis")]
    EmptyAxis { what: String, shape: Shape },
    #[error("{what}: shape {shape:?} is too large")]
    TooLarge { what: String, shape: Shape },
    /// A volume holds another number of values than its shape.
    #[error("{what}: {got} values for shape {shape:?} ({want} expected)")]
    Length {
        what: String,
        got: usize,
        shape: Shape,
        want: usize,
    },
    #[error("{what}: channel {channel} has {got} values for shape {shape:?} ({want} expected)")]
    ChannelLength {
        what: String,
        channel: usize,
        got: usize,
        shape: Shape,
        want: usize,
    },
    #[error("resample_channels: {got} values for {channels} channels of shape {shape:?}")]
    ChannelsLength {
        got: usize,
        channels: usize,
        shape: Shape,
    },
    #[error("{what}: no channel")]
    NoChannel { what: String },
    #[error("preprocess: {got} channels but the config normalises {want}")]
    ChannelCount { got: usize, want: usize },
    #[error("preprocess: channel {0} holds an infinite value")]
    Infinite(usize),
    /// Every voxel of a channel is NaN: nothing to segment (NaN reads as 0).
    #[error("preprocess: every voxel of channel {0} is NaN: the image holds no data")]
    AllNan(usize),
    /// Resampling would shrink an axis to almost nothing or grow the case past the limit.
    #[error(
        "preprocess: resampling {shape:?} voxels from spacing {spacing:?} to the target spacing \
         {target:?} gives {new_shape:?}: {why}"
    )]
    Resampling {
        shape: Shape,
        spacing: [f64; 3],
        target: [f64; 3],
        new_shape: Shape,
        why: String,
    },
    #[error("{what} {spacing:?} must be finite and positive")]
    Spacing { what: String, spacing: [f64; 3] },
    #[error(
        "target_shape: axis {axis} would have {voxels} voxels (spacing {spacing:?} to {target:?})"
    )]
    TargetShape {
        axis: usize,
        voxels: f64,
        spacing: [f64; 3],
        target: [f64; 3],
    },
    #[error("resample: anisotropic axis {0} is not one of 0, 1, 2")]
    AnisotropicAxis(usize),
    #[error("box {bbox} is empty or outside shape {shape:?}")]
    BoxOutside { bbox: String, shape: Shape },
    #[error("uncrop: {got} values for a box of shape {shape:?}")]
    UncropLength { got: usize, shape: Shape },
    #[error("restore: {0} classes (1 to 65536 supported)")]
    Classes(usize),
    #[error("segment: the network has no class")]
    NoClass,
    #[error(
        "segment: the predictor returned {got} values for {tiles} tiles, expected {want} \
         ({classes} classes of {patch:?})"
    )]
    PredictorLength {
        got: usize,
        tiles: usize,
        want: usize,
        classes: usize,
        patch: [usize; 3],
    },
    /// The sliding window's settings do not fit the case ([`window::check_tiles`]).
    #[error("sliding window: {0}")]
    Window(String),
    /// The sliding window's accumulators could not go to or come back from their scratch file.
    #[error("sliding window: {0}")]
    Scratch(String),
    #[error("segment: the sliding window returned {got} values, expected {want}")]
    WindowLength { got: usize, want: usize },
}
