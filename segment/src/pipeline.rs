//! One case from raw channels to a label map: nnU-Net v1 preprocessing ([`super::preprocess`]),
//! sliding-window prediction ([`super::window`]) with any predictor (a compiled bundle's engine,
//! the interpreter, or a training loop's current network, passed as a closure), and restoration
//! to the input's grid. The CLI's `e2enc segment` and the training demo share it, so file
//! handling stays out of here.
//!
//! Axis convention: the volume arrives C-ordered, `[d0, d1, d2]` with `d2` fastest, which for a
//! NIfTI file read by [`crate::nifti::read`] is `[z, y, x]` (its data is x fastest), with
//! `spacing` in the same order. The config's `axis_order` is written, as its doc says, against
//! NIfTI-style `(x, y, z)` indexing (nnU-Net's usual `[2, 1, 0]`), so [`case_axis_order`] maps it
//! onto the `[z, y, x]` array: `[2, 1, 0]` becomes the identity and costs no transpose.

use super::preprocess::{
    inverse_permutation, preprocess, restore, transpose, uncrop, Preprocessed, PreprocessingConfig,
};
use super::resample::{resample_channels, Order, Shape};
use super::window::{check_tiles, padding, sliding_window, WindowOptions};
use crate::SegmentError;

/// What the predictor is and how to run it.
#[derive(Clone, Debug)]
pub struct CaseOptions {
    /// Patch `[d, h, w]` of the network, in network axes.
    pub patch: [usize; 3],
    /// Output classes, background included.
    pub classes: usize,
    /// Step, mirroring TTA and batch of the sliding window.
    pub window: WindowOptions,
    /// Also return the class probabilities on the input's grid.
    pub probabilities: bool,
}

/// The result of one case.
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// Labels on the input's grid and axes (C order, as the input).
    pub labels: Vec<u16>,
    /// With [`CaseOptions::probabilities`]: `classes` maps of the input's grid, class-major;
    /// outside the non-zero crop box background is 1 and every other class 0.
    pub probabilities: Option<Vec<f32>>,
    /// Network-input shape after preprocessing (network axes).
    pub network_shape: Shape,
    /// Tiles evaluated (positions times mirrorings).
    pub tiles: usize,
}

/// Maps a config's `axis_order`, written against `(x, y, z)` indexing, onto a C-ordered
/// `[z, y, x]` array (see the module doc).
pub fn case_axis_order(cfg_order: [usize; 3]) -> [usize; 3] {
    cfg_order.map(|a| 2 - a.min(2))
}

/// How many tiles [`segment_case`] will evaluate on a network-axes volume of `shape`.
pub fn tile_count(
    shape: Shape,
    patch: [usize; 3],
    window: &WindowOptions,
) -> Result<usize, SegmentError> {
    let pad = padding(shape, patch);
    let ps = [0, 1, 2].map(|a| shape[a] + pad[a].0 + pad[a].1);
    check_tiles(ps, patch, window.step, window.tta)
}

/// Refuses a case whose sliding window (the padded input, the per-class accumulators and their
/// weights, then the restored probabilities) would not fit in the machine's available memory.
fn check_window_memory(
    shape: Shape,
    opts: &CaseOptions,
    channels: usize,
) -> Result<(), SegmentError> {
    let pad = padding(shape, opts.patch);
    let padded: u64 = (0..3)
        .map(|a| (shape[a] + pad[a].0 + pad[a].1) as u64)
        .product();
    let planes = (channels + opts.classes + 1) as u64
        + if opts.probabilities {
            opts.classes as u64
        } else {
            0
        };
    let need = padded.saturating_mul(planes).saturating_mul(4);
    if let Some(have) = e2enc_ir::files::available_memory() {
        if need > have {
            return Err(SegmentError::Window(format!(
                "the {:?} grid with {} classes needs about {:.1} GiB of memory, more than the \
                 {:.1} GiB available",
                shape,
                opts.classes,
                need as f64 / (1u64 << 30) as f64,
                have as f64 / (1u64 << 30) as f64
            )));
        }
    }
    Ok(())
}

/// Segments one case.
///
/// `channels` are C-ordered `[z, y, x]` volumes of `shape` with voxel `spacing` (mm, same axes);
/// `cfg` is the model's preprocessing, its `axis_order` against `(x, y, z)` as in model.json.
/// `predict(tiles, n)` gets `n` tiles `[channels, patch]` and returns their logits
/// `[classes, patch]`, both concatenated; `progress(done, total)` counts predictor calls.
/// `on_preprocessed` is told the network-input shape and the tile count before prediction
/// starts (for a progress bar's length).
#[allow(clippy::too_many_arguments)]
pub fn segment_case<E: From<SegmentError>>(
    channels: &[Vec<f32>],
    shape: Shape,
    spacing: [f64; 3],
    cfg: &PreprocessingConfig,
    opts: &CaseOptions,
    mut predict: impl FnMut(&[f32], usize) -> Result<Vec<f32>, E>,
    on_preprocessed: impl FnOnce(Shape, usize),
    progress: impl FnMut(usize, usize),
) -> Result<Segmentation, E> {
    if opts.classes == 0 {
        return Err(SegmentError::NoClass.into());
    }
    let mut cfg = cfg.clone();
    cfg.axis_order = case_axis_order(cfg.axis_order);
    let prep = preprocess(channels, shape, spacing, &cfg)?;
    let n = tile_count(prep.resampled_shape, opts.patch, &opts.window)?;
    check_window_memory(prep.resampled_shape, opts, channels.len())?;
    on_preprocessed(prep.resampled_shape, n);
    let volume: Vec<f32> = prep.data.concat();
    let per_tile = opts.classes * opts.patch.iter().product::<usize>();
    // The window slices the logits by tile: a predictor returning too few values is an error.
    let checked = |t: &[f32], n: usize| -> Result<Vec<f32>, E> {
        let out = predict(t, n)?;
        if out.len() != n * per_tile {
            return Err(SegmentError::PredictorLength {
                got: out.len(),
                tiles: n,
                want: n * per_tile,
                classes: opts.classes,
                patch: opts.patch,
            }
            .into());
        }
        Ok(out)
    };
    let probs = sliding_window(
        &volume,
        channels.len(),
        prep.resampled_shape,
        opts.patch,
        opts.classes,
        &opts.window,
        checked,
        progress,
    )?;
    drop(volume);
    let expected = opts.classes * prep.resampled_shape.iter().product::<usize>();
    if probs.len() != expected {
        return Err(SegmentError::WindowLength {
            got: probs.len(),
            want: expected,
        }
        .into());
    }
    let labels = restore(&probs, opts.classes, &prep)?;
    let probabilities = if opts.probabilities {
        Some(restore_probabilities(&probs, opts.classes, &prep)?)
    } else {
        None
    };
    Ok(Segmentation {
        labels,
        probabilities,
        network_shape: prep.resampled_shape,
        tiles: n,
    })
}

/// The class probabilities back on the input's grid, as [`restore`] takes the labels back:
/// linear resampling to the crop (order 0 along the anisotropic axis), pasted into the crop box
/// (outside it background is 1, other classes 0), inverse transpose. Class-major.
pub fn restore_probabilities(
    probs: &[f32],
    classes: usize,
    prep: &Preprocessed,
) -> Result<Vec<f32>, SegmentError> {
    let back = resample_channels(
        probs,
        classes,
        prep.resampled_shape,
        prep.crop_shape,
        Order::Linear,
        prep.anisotropic_axis,
    )?;
    let net_shape: Shape = std::array::from_fn(|k| prep.shape[prep.axis_order[k]]);
    let inv = inverse_permutation(prep.axis_order);
    let vox: usize = prep.crop_shape.iter().product();
    let mut out = Vec::with_capacity(classes * prep.shape.iter().product::<usize>());
    for c in 0..classes {
        let mut full = uncrop(&back[c * vox..(c + 1) * vox], &prep.bbox, net_shape)?;
        if c == 0 {
            // Outside the box the labels are background: say so with certainty.
            let inside = uncrop(&vec![true; vox], &prep.bbox, net_shape)?;
            for (v, i) in full.iter_mut().zip(inside) {
                if !i {
                    *v = 1.0;
                }
            }
        }
        out.extend(transpose(&full, net_shape, inv).0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::Normalization;

    fn cfg() -> PreprocessingConfig {
        PreprocessingConfig {
            axis_order: [2, 1, 0],
            target_spacing: [1.0; 3],
            normalization: vec![Normalization::ZScore {
                use_nonzero_mask: false,
            }],
            anisotropy_threshold: 3.0,
        }
    }

    #[test]
    fn nifti_axis_order_maps_onto_zyx_arrays() {
        assert_eq!(case_axis_order([2, 1, 0]), [0, 1, 2]);
        assert_eq!(case_axis_order([0, 1, 2]), [2, 1, 0]);
        assert_eq!(case_axis_order([1, 2, 0]), [1, 0, 2]);
    }

    /// A "network" that calls a voxel class 1 where its input is above the mean: the labels
    /// must come back as the bright block, on the input's grid, with the expected tile count.
    #[test]
    fn a_thresholding_predictor_finds_the_bright_block() {
        let shape = [10, 12, 14];
        let mut v = vec![1.0f32; 10 * 12 * 14];
        let inside = |z: usize, y: usize, x: usize| (3..7).contains(&z) && y < 5 && x >= 9;
        for z in 0..10 {
            for y in 0..12 {
                for x in 0..14 {
                    if inside(z, y, x) {
                        v[(z * 12 + y) * 14 + x] = 5.0;
                    }
                }
            }
        }
        let opts = CaseOptions {
            patch: [8, 8, 8],
            classes: 2,
            window: WindowOptions {
                step: 0.5,
                tta: true,
                batch: 2,
            },
            probabilities: true,
        };
        let mut calls = 0;
        let mut announced = 0;
        let seg = segment_case::<SegmentError>(
            &[v],
            shape,
            [1.0; 3],
            &cfg(),
            &opts,
            |t, n| {
                calls += 1;
                assert_eq!(t.len(), n * 512);
                Ok(t.iter().map(|&x| -x).chain(t.iter().copied()).collect())
            },
            |s, n| {
                assert_eq!(s, shape);
                announced = n;
            },
            |_, _| {},
        )
        .unwrap();
        // Positions: [0, 2] x [0, 4] x [0, 3, 6], times 8 mirrorings.
        assert_eq!(seg.tiles, 2 * 2 * 3 * 8);
        assert_eq!(announced, seg.tiles);
        assert_eq!(calls, seg.tiles / 2);
        for z in 0..10 {
            for y in 0..12 {
                for x in 0..14 {
                    let want = u16::from(inside(z, y, x));
                    assert_eq!(seg.labels[(z * 12 + y) * 14 + x], want, "{z} {y} {x}");
                }
            }
        }
        let p = seg.probabilities.unwrap();
        let vox = 10 * 12 * 14;
        assert_eq!(p.len(), 2 * vox);
        for i in 0..vox {
            assert!((p[i] + p[vox + i] - 1.0).abs() < 1e-4);
            assert_eq!(p[vox + i] > 0.5, seg.labels[i] == 1);
        }
    }

    /// Zero border (cropped away) and 2 mm slices resampled to 1 mm: a predictor that always
    /// says class 1 labels exactly the crop box, and outside it background is certain.
    #[test]
    fn the_crop_box_and_resampling_are_undone() {
        let shape = [6, 8, 10];
        let inside = |z: usize, y: usize, x: usize| {
            (1..5).contains(&z) && (1..7).contains(&y) && (1..9).contains(&x)
        };
        let mut v = vec![0f32; 480];
        for z in 0..6 {
            for y in 0..8 {
                for x in 0..10 {
                    if inside(z, y, x) {
                        v[(z * 8 + y) * 10 + x] = 1.0 + ((z + y + x) % 3) as f32;
                    }
                }
            }
        }
        let opts = CaseOptions {
            patch: [4, 4, 4],
            classes: 2,
            window: WindowOptions {
                step: 0.5,
                tta: false,
                batch: 1,
            },
            probabilities: true,
        };
        let seg = segment_case::<SegmentError>(
            &[v],
            shape,
            [2.0, 1.0, 1.0],
            &cfg(),
            &opts,
            |_, n| Ok([vec![0.0; 64], vec![3.0; 64]].concat().repeat(n)),
            |_, _| {},
            |_, _| {},
        )
        .unwrap();
        // The 4x6x8 crop at 2 mm in z becomes 8x6x8 at 1 mm.
        assert_eq!(seg.network_shape, [8, 6, 8]);
        let p = seg.probabilities.unwrap();
        for z in 0..6 {
            for y in 0..8 {
                for x in 0..10 {
                    let i = (z * 8 + y) * 10 + x;
                    let want = inside(z, y, x);
                    assert_eq!(seg.labels[i], u16::from(want), "{z} {y} {x}");
                    assert_eq!(p[i] == 1.0, !want, "{z} {y} {x}");
                    assert!((p[i] + p[480 + i] - 1.0).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn a_wrong_sized_predictor_output_is_an_error_not_a_panic() {
        let opts = CaseOptions {
            patch: [4, 4, 4],
            classes: 2,
            window: WindowOptions {
                step: 0.5,
                tta: false,
                batch: 1,
            },
            probabilities: false,
        };
        let v: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let r = segment_case::<SegmentError>(
            &[v],
            [4, 4, 4],
            [1.0; 3],
            &cfg(),
            &opts,
            |_, _| Ok(vec![0.0; 3]),
            |_, _| {},
            |_, _| {},
        );
        assert!(r.is_err());
    }
}
