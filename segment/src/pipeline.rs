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

use std::borrow::Cow;

use super::preprocess::{
    inverse_permutation, preprocess, preprocess_owned, transpose, uncrop, BBox, Preprocessed,
    PreprocessingConfig,
};
use super::resample::{resample_channels, Order, PlaneResampler, Shape};
use super::window::{
    accumulator_bytes, argmax, check_tiles, padding, sliding_window_planes, WindowOptions,
    WindowStats,
};
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
    /// What the sliding window held in memory and moved through its scratch file.
    pub window: WindowStats,
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

/// Bytes [`segment_case_with`] holds beyond the preprocessed input: the window's accumulators
/// ([`accumulator_bytes`]: the band of planes, or the budget of
/// [`WindowOptions::accumulator_memory`]) and one plane of summed weights, the crop's labels and
/// the full label map (twice, for the transpose), a few planes of restoring, and with
/// `whole_probabilities` the class maps of the input's grid (twice, for the transpose).
pub fn window_memory(prep: &Preprocessed, opts: &CaseOptions, whole_probabilities: bool) -> u64 {
    let shape = prep.resampled_shape;
    let pad = padding(shape, opts.patch);
    let ps: [u64; 3] = std::array::from_fn(|a| (shape[a] + pad[a].0 + pad[a].1) as u64);
    let classes = opts.classes as u64;
    let band = accumulator_bytes(shape, opts.patch, opts.classes, &opts.window) + ps[1] * ps[2] * 4;
    let crop: u64 = prep.crop_shape.iter().map(|&v| v as u64).product();
    let full: u64 = prep.shape.iter().map(|&v| v as u64).product();
    let plane_max = [prep.crop_shape, shape, prep.shape]
        .iter()
        .map(|s| (s[1] * s[2]) as u64)
        .max()
        .unwrap_or(0);
    let restoring = 4 * classes * plane_max * 4;
    let probs = if whole_probabilities {
        2 * 4 * classes * full
    } else {
        0
    };
    let label_bytes = if opts.classes <= 256 { 1 } else { 2 };
    band + label_bytes * crop + 2 * 2 * full + restoring + probs
}

/// Refuses a case whose segmentation ([`window_memory`]) would not fit in the machine's
/// available memory.
fn check_window_memory(
    prep: &Preprocessed,
    opts: &CaseOptions,
    whole_probabilities: bool,
) -> Result<(), SegmentError> {
    let need = window_memory(prep, opts, whole_probabilities);
    if let Some(have) = e2enc_ir::files::available_memory() {
        if need > have {
            return Err(SegmentError::Window(format!(
                "the {:?} grid with {} classes needs about {:.1} GiB of memory, more than the \
                 {:.1} GiB available",
                prep.resampled_shape,
                opts.classes,
                need as f64 / (1u64 << 30) as f64,
                have as f64 / (1u64 << 30) as f64
            )));
        }
    }
    Ok(())
}

/// Where the class probabilities go when they should not be held whole: plane by plane along
/// network axis 0 of the full (uncropped) network-axes grid.
pub trait ProbabilitySink<E> {
    /// Called once, before the first plane, with the layout the planes come in.
    fn begin(&mut self, layout: &ProbabilityLayout) -> Result<(), E>;
    /// Plane `index` (`0..layout.net_shape[0]`, in order) as `[classes, net_shape[1],
    /// net_shape[2]]`; outside the crop box background is 1 and every other class 0.
    fn plane(&mut self, index: usize, plane: &[f32]) -> Result<(), E>;
}

/// How a [`ProbabilitySink`]'s planes map onto the input: network axis `k` is input axis
/// `axis_order[k]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbabilityLayout {
    pub classes: usize,
    /// The input's shape (input axes, C order).
    pub shape: Shape,
    /// The transposed input's shape (network axes): the planes' grid.
    pub net_shape: Shape,
    pub axis_order: [usize; 3],
}

impl ProbabilityLayout {
    /// Voxels of one class map.
    pub fn voxels(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Collects a sink's planes into [`Segmentation::probabilities`]' layout (class-major, input
/// axes).
#[derive(Default)]
struct Collect {
    layout: Option<ProbabilityLayout>,
    data: Vec<f32>,
}

impl<E> ProbabilitySink<E> for Collect {
    fn begin(&mut self, layout: &ProbabilityLayout) -> Result<(), E> {
        self.data = vec![0f32; layout.classes * layout.voxels()];
        self.layout = Some(layout.clone());
        Ok(())
    }

    fn plane(&mut self, index: usize, plane: &[f32]) -> Result<(), E> {
        if let Some(l) = &self.layout {
            let (n, p) = (l.voxels(), l.net_shape[1] * l.net_shape[2]);
            for c in 0..l.classes {
                self.data[c * n + index * p..][..p].copy_from_slice(&plane[c * p..][..p]);
            }
        }
        Ok(())
    }
}

impl Collect {
    fn finish(self) -> Vec<f32> {
        let Some(l) = self.layout else {
            return self.data;
        };
        let inv = inverse_permutation(l.axis_order);
        if inv == [0, 1, 2] {
            return self.data;
        }
        let n = l.voxels();
        let mut out = Vec::with_capacity(self.data.len());
        for c in 0..l.classes {
            out.extend(transpose(&self.data[c * n..][..n], l.net_shape, inv).0);
        }
        out
    }
}

/// Segments one case.
///
/// `channels` are C-ordered `[z, y, x]` volumes of `shape` with voxel `spacing` (mm, same axes);
/// `cfg` is the model's preprocessing, its `axis_order` against `(x, y, z)` as in model.json.
/// `predict(tiles, n)` gets `n` tiles `[channels, patch]` and returns their logits
/// `[classes, patch]`, both concatenated; `progress(done, total)` counts predictor calls.
/// `on_preprocessed` is told the network-input shape and the tile count before prediction
/// starts (for a progress bar's length). With [`CaseOptions::probabilities`] the probabilities
/// come back whole in [`Segmentation::probabilities`]; [`segment_case_with`] streams them instead.
#[allow(clippy::too_many_arguments)]
pub fn segment_case<E: From<SegmentError>>(
    channels: &[Vec<f32>],
    shape: Shape,
    spacing: [f64; 3],
    cfg: &PreprocessingConfig,
    opts: &CaseOptions,
    predict: impl FnMut(&[f32], usize) -> Result<Vec<f32>, E>,
    on_preprocessed: impl FnOnce(Shape, usize),
    progress: impl FnMut(usize, usize),
) -> Result<Segmentation, E> {
    segment_case_with(
        channels,
        shape,
        spacing,
        cfg,
        opts,
        predict,
        on_preprocessed,
        progress,
        None,
    )
}

/// [`segment_case`] with the probabilities streamed: the sliding window hands over finished
/// planes of the network grid ([`sliding_window_planes`]), which are resampled back to the crop
/// plane by plane ([`PlaneResampler`]), turned into labels at once and, with a `sink`, passed on
/// as restored probability planes, so no whole-volume probability map exists (with no sink,
/// [`CaseOptions::probabilities`] collects them whole, as [`segment_case`]). The labels and
/// probabilities equal the whole-volume path's ([`sliding_window`],
/// [`restore`](super::preprocess::restore), [`restore_probabilities`]) bit for bit.
///
/// Channels handed over by value (`Vec<Vec<f32>>`) become their preprocessed copy where a step
/// leaves them as they are and are freed once preprocessed ([`preprocess_owned`]), so the image
/// does not stay in memory beside that copy while the tiles run.
///
/// [`sliding_window`]: super::window::sliding_window
#[allow(clippy::too_many_arguments)]
pub fn segment_case_with<'a, E: From<SegmentError>>(
    channels: impl Into<Cow<'a, [Vec<f32>]>>,
    shape: Shape,
    spacing: [f64; 3],
    cfg: &PreprocessingConfig,
    opts: &CaseOptions,
    predict: impl FnMut(&[f32], usize) -> Result<Vec<f32>, E>,
    on_preprocessed: impl FnOnce(Shape, usize),
    progress: impl FnMut(usize, usize),
    sink: Option<&mut dyn ProbabilitySink<E>>,
) -> Result<Segmentation, E> {
    let channels = channels.into();
    if sink.is_some() || !opts.probabilities {
        let opts = CaseOptions {
            probabilities: false,
            ..opts.clone()
        };
        return streamed(
            channels,
            shape,
            spacing,
            cfg,
            &opts,
            predict,
            on_preprocessed,
            progress,
            sink,
        );
    }
    let mut collect = Collect::default();
    let mut seg = streamed(
        channels,
        shape,
        spacing,
        cfg,
        opts,
        predict,
        on_preprocessed,
        progress,
        Some(&mut collect),
    )?;
    seg.probabilities = Some(collect.finish());
    Ok(seg)
}

/// Both forms of [`segment_case`]; `opts.probabilities` says whether the sink collects the whole
/// map (for the memory check).
#[allow(clippy::too_many_arguments)]
fn streamed<E: From<SegmentError>>(
    channels: Cow<'_, [Vec<f32>]>,
    shape: Shape,
    spacing: [f64; 3],
    cfg: &PreprocessingConfig,
    opts: &CaseOptions,
    mut predict: impl FnMut(&[f32], usize) -> Result<Vec<f32>, E>,
    on_preprocessed: impl FnOnce(Shape, usize),
    progress: impl FnMut(usize, usize),
    mut sink: Option<&mut dyn ProbabilitySink<E>>,
) -> Result<Segmentation, E> {
    let classes = opts.classes;
    if classes == 0 {
        return Err(SegmentError::NoClass.into());
    }
    if classes > usize::from(u16::MAX) + 1 {
        return Err(SegmentError::Classes(classes).into());
    }
    let mut cfg = cfg.clone();
    cfg.axis_order = case_axis_order(cfg.axis_order);
    // Channels handed over (not borrowed) become the preprocessed copy where they can.
    let mut prep = match channels {
        Cow::Owned(v) => preprocess_owned(v, shape, spacing, &cfg)?,
        Cow::Borrowed(v) => preprocess(v, shape, spacing, &cfg)?,
    };
    let n = tile_count(prep.resampled_shape, opts.patch, &opts.window)?;
    check_window_memory(&prep, opts, opts.probabilities)?;
    on_preprocessed(prep.resampled_shape, n);
    let per_tile = classes * opts.patch.iter().product::<usize>();
    // The window slices the logits by tile: a predictor returning too few values is an error.
    let checked = |t: &[f32], n: usize| -> Result<Vec<f32>, E> {
        let out = predict(t, n)?;
        if out.len() != n * per_tile {
            return Err(SegmentError::PredictorLength {
                got: out.len(),
                tiles: n,
                want: n * per_tile,
                classes,
                patch: opts.patch,
            }
            .into());
        }
        Ok(out)
    };
    let net_shape: Shape = std::array::from_fn(|k| prep.shape[prep.axis_order[k]]);
    let bbox = &prep.bbox;
    let crop = prep.crop_shape;
    let crop_plane = crop[1] * crop[2];
    let net_plane = net_shape[1] * net_shape[2];
    // Labels of the crop, a byte each while they fit (half the memory beside the window).
    let mut crop_labels = CropLabels::new(classes, crop[0] * crop_plane);
    let mut resampler = PlaneResampler::new(
        classes,
        prep.resampled_shape,
        crop,
        Order::Linear,
        prep.anisotropic_axis,
    )?;
    // The sink's plane; outside the crop box (along axis 0) background for certain.
    let mut full = Vec::new();
    if let Some(s) = sink.as_deref_mut() {
        full = vec![0f32; classes * net_plane];
        full[..net_plane].fill(1.0);
        s.begin(&ProbabilityLayout {
            classes,
            shape: prep.shape,
            net_shape,
            axis_order: prep.axis_order,
        })?;
        for i in 0..bbox.start[0] {
            s.plane(i, &full)?;
        }
    }
    let views: Vec<&[f32]> = prep.data.iter().map(|v| v.as_slice()).collect();
    let window = sliding_window_planes(
        &views,
        prep.resampled_shape,
        opts.patch,
        classes,
        &opts.window,
        checked,
        progress,
        |_, plane| {
            resampler.push(plane, |o, back| -> Result<(), E> {
                crop_labels.set(o * crop_plane, &argmax(back, classes));
                if let Some(s) = sink.as_deref_mut() {
                    for c in 0..classes {
                        let dst = &mut full[c * net_plane..][..net_plane];
                        dst.fill(if c == 0 { 1.0 } else { 0.0 });
                        for y in 0..crop[1] {
                            let row = (bbox.start[1] + y) * net_shape[2] + bbox.start[2];
                            dst[row..row + crop[2]]
                                .copy_from_slice(&back[c * crop_plane + y * crop[2]..][..crop[2]]);
                        }
                    }
                    s.plane(bbox.start[0] + o, &full)?;
                }
                Ok(())
            })
        },
    )?;
    // The preprocessed input is not needed for restoring the labels.
    drop(views);
    prep.data = Vec::new();
    if !resampler.is_done() {
        return Err(SegmentError::WindowLength {
            got: 0,
            want: classes * prep.resampled_shape.iter().product::<usize>(),
        }
        .into());
    }
    if let Some(s) = sink {
        for c in 0..classes {
            full[c * net_plane..][..net_plane].fill(if c == 0 { 1.0 } else { 0.0 });
        }
        for i in bbox.end[0]..net_shape[0] {
            s.plane(i, &full)?;
        }
    }
    // Into the crop box of the full grid, then back to the input's axes.
    let inv = inverse_permutation(prep.axis_order);
    let labels = match crop_labels {
        CropLabels::Byte(l) => restore_labels(l, bbox, net_shape, inv)?
            .into_iter()
            .map(u16::from)
            .collect(),
        CropLabels::Wide(l) => restore_labels(l, bbox, net_shape, inv)?,
    };
    Ok(Segmentation {
        labels,
        probabilities: None,
        network_shape: prep.resampled_shape,
        tiles: n,
        window,
    })
}

/// Crop labels pasted into the full network grid and transposed to the input's axes, each
/// intermediate freed as soon as the next exists.
fn restore_labels<T: Copy + Default>(
    crop: Vec<T>,
    bbox: &BBox,
    net_shape: Shape,
    inv: [usize; 3],
) -> Result<Vec<T>, SegmentError> {
    let net = uncrop(&crop, bbox, net_shape)?;
    drop(crop);
    Ok(transpose(&net, net_shape, inv).0)
}

/// The labels of the crop box as they are found: bytes for up to 256 classes.
enum CropLabels {
    Byte(Vec<u8>),
    Wide(Vec<u16>),
}

impl CropLabels {
    fn new(classes: usize, voxels: usize) -> CropLabels {
        if classes <= 256 {
            CropLabels::Byte(vec![0; voxels])
        } else {
            CropLabels::Wide(vec![0; voxels])
        }
    }

    /// Labels from voxel `at` on.
    fn set(&mut self, at: usize, labels: &[u16]) {
        match self {
            // Every label is below `classes` <= 256.
            CropLabels::Byte(l) => {
                for (d, &v) in l[at..][..labels.len()].iter_mut().zip(labels) {
                    *d = v as u8;
                }
            }
            CropLabels::Wide(l) => l[at..][..labels.len()].copy_from_slice(labels),
        }
    }
}

/// The class probabilities back on the input's grid, as [`restore`](super::preprocess::restore) takes the labels back:
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
                ..Default::default()
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
                ..Default::default()
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
                ..Default::default()
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

    /// The streamed case against the whole-volume path it replaced (window over the whole grid,
    /// then [`crate::preprocess::restore`] and [`restore_probabilities`]): equal bit for bit with
    /// cropping, up- and downsampling, the anisotropic rule, a transpose, padding and TTA.
    #[test]
    fn streamed_segmentation_equals_the_whole_volume_path_bit_for_bit() {
        use crate::preprocess::{preprocess, restore};
        use crate::window::sliding_window;
        struct Case {
            shape: Shape,
            spacing: [f64; 3],
            target: [f64; 3],
            order: [usize; 3],
            patch: [usize; 3],
            tta: bool,
        }
        let cases = [
            Case {
                shape: [7, 9, 11],
                spacing: [2.0, 1.0, 1.0],
                target: [1.0; 3],
                order: [2, 1, 0],
                patch: [4, 4, 4],
                tta: false,
            },
            Case {
                shape: [12, 8, 10],
                spacing: [1.0, 0.7, 0.7],
                target: [1.5, 1.0, 1.0],
                order: [2, 1, 0],
                patch: [4, 6, 4],
                tta: true,
            },
            Case {
                shape: [6, 10, 9],
                spacing: [4.0, 1.0, 1.0],
                target: [4.0, 0.8, 1.2],
                order: [2, 1, 0],
                patch: [3, 4, 4],
                tta: false,
            },
            Case {
                shape: [9, 7, 8],
                spacing: [1.0, 1.2, 0.9],
                target: [1.1, 1.0, 0.8],
                order: [0, 2, 1],
                patch: [4, 4, 5],
                tta: false,
            },
            Case {
                shape: [3, 5, 4],
                spacing: [1.0; 3],
                target: [1.0; 3],
                order: [1, 2, 0],
                patch: [8, 8, 8],
                tta: false,
            },
        ];
        for (k, c) in cases.iter().enumerate() {
            let n: usize = c.shape.iter().product();
            // A zero border on two sides, so the crop box is not the whole volume.
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    let (z, y) = (i / (c.shape[1] * c.shape[2]), (i / c.shape[2]) % c.shape[1]);
                    if z == 0 || y + 1 == c.shape[1] {
                        0.0
                    } else {
                        ((i * 7919) % 89) as f32 / 11.0 + 0.5
                    }
                })
                .collect();
            let mut cfg = cfg();
            cfg.target_spacing = c.target;
            cfg.axis_order = c.order;
            let opts = CaseOptions {
                patch: c.patch,
                classes: 3,
                window: WindowOptions {
                    step: 0.5,
                    tta: c.tta,
                    batch: 2,
                    ..Default::default()
                },
                probabilities: true,
            };
            let predict = |x: &[f32], b: usize| -> Result<Vec<f32>, SegmentError> {
                let t = x.len() / b;
                Ok((0..b)
                    .flat_map(|j| {
                        (0..3).flat_map(move |cl| {
                            x[j * t..(j + 1) * t]
                                .iter()
                                .map(move |&v| (v * (cl + 1) as f32).sin() * 2.0)
                        })
                    })
                    .collect())
            };
            let seg = segment_case(
                std::slice::from_ref(&v),
                c.shape,
                c.spacing,
                &cfg,
                &opts,
                predict,
                |_, _| {},
                |_, _| {},
            )
            .unwrap();
            // The whole-volume path.
            let mut pc = cfg.clone();
            pc.axis_order = case_axis_order(pc.axis_order);
            let prep = preprocess(&[v], c.shape, c.spacing, &pc).unwrap();
            let probs = sliding_window(
                &prep.data.concat(),
                1,
                prep.resampled_shape,
                c.patch,
                3,
                &opts.window,
                predict,
                |_, _| {},
            )
            .unwrap();
            let labels = restore(&probs, 3, &prep).unwrap();
            let whole = restore_probabilities(&probs, 3, &prep).unwrap();
            assert_eq!(seg.labels, labels, "case {k}: labels differ");
            let p = seg.probabilities.unwrap();
            let same = p.len() == whole.len()
                && p.iter()
                    .zip(&whole)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "case {k}: probabilities differ");
            assert!(
                labels.iter().any(|&l| l > 0) && labels.contains(&0),
                "case {k}: trivial labels"
            );
        }
    }
}
