//! Resampling of dense 3-D volumes the way nnU-Net v1 does it (`resample_data_or_seg`), in our own
//! code so that no image library sits between the network and the numbers it was trained on.
//!
//! Volumes are `Vec<f32>` in C order (last axis fastest) with a shape `[d0, d1, d2]`. The
//! semantics are those of `skimage.transform.resize(x, new_shape, order, mode="edge",
//! anti_aliasing=False)` (which is `scipy.ndimage.zoom(..., mode="nearest", grid_mode=True)`
//! followed by clipping to the input's range):
//!
//! - output sample `o` reads the input at `x = (o + 0.5) * n_in / n_out - 0.5` (pixel centres);
//! - [`Order::Nearest`] takes index `floor(x + 0.5)` clamped to the axis; [`Order::Linear`]
//!   interpolates between the two neighbours of `x` clamped to `[0, n - 1]`;
//! - [`Order::CubicBSpline`] pads every line with 12 copies of its edge values (scipy's
//!   `_prepad_for_spline_filter`), prefilters it with the cubic B-spline pole `sqrt(3) - 2` and
//!   scipy's half-sample-symmetric initialisation, and evaluates the cubic B-spline at `x`;
//!   the result is clipped to the input's `[min, max]` as skimage does (`clip=True`).
//!
//! The tensor-product spline is separable, so each axis is resampled on its own (exactly the same
//! numbers as the n-D evaluation, up to rounding), with the inner axes processed in tiles of
//! columns so that memory stays near the size of the volume. Axes whose length does not change
//! are skipped (resampling at the same size is the identity), and a volume whose shape does not
//! change is returned as is, as nnU-Net does.
//!
//! The anisotropic rule (`do_separate_z`): with `anisotropic_axis = Some(a)`, the two other axes
//! are resampled with the requested order slice by slice (each slice clipped to its own range, as
//! nnU-Net calls `resize` per 2-D slice) and axis `a` with order 0 (`map_coordinates(order=0,
//! mode="nearest")` on the same pixel-centre grid). [`separate_z_axis`] decides it like
//! nnU-Net's `resample_patient`.
//!
//! Probability maps come back to the original grid with [`resample_channels`] and
//! [`Order::Linear`], as nnU-Net v1's `save_segmentation_nifti_from_softmax` does (order 1, order
//! 0 along the anisotropic axis), before the argmax.

use serde::{Deserialize, Serialize};

use crate::SegmentError;

/// A volume's shape, `[d0, d1, d2]`, last axis fastest.
pub type Shape = [usize; 3];

/// Interpolation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Order 0: the nearest input sample (round half up, clamped to the axis).
    Nearest,
    /// Order 1: linear between the two neighbours (edge values beyond the ends).
    Linear,
    /// Order 3: interpolating cubic B-spline with edge padding, clipped to the input range.
    CubicBSpline,
}

/// The cubic B-spline's pole, `sqrt(3) - 2`.
const POLE: f64 = -0.267_949_192_431_122_7;
/// Edge values added on each side of a line before the prefilter (scipy's prepadding).
const PAD: usize = 12;
/// Columns of the inner axes processed together.
const TILE: usize = 64;

/// Number of voxels of `shape`; an error names `what` if an axis is empty or the count overflows.
pub fn numel(what: &str, shape: Shape) -> Result<usize, SegmentError> {
    if shape.contains(&0) {
        return Err(SegmentError::EmptyAxis {
            what: what.into(),
            shape,
        });
    }
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| SegmentError::TooLarge {
            what: what.into(),
            shape,
        })
}

/// Checks that `data` holds `shape` and returns the voxel count.
fn check_data(what: &str, data: &[f32], shape: Shape) -> Result<usize, SegmentError> {
    let n = numel(what, shape)?;
    if data.len() != n {
        return Err(SegmentError::Length {
            what: what.into(),
            got: data.len(),
            shape,
            want: n,
        });
    }
    Ok(n)
}

/// The shape after resampling from `spacing` to `target_spacing`: `round(spacing / target *
/// shape)` per axis (round half to even, like `np.round` in nnU-Net's `resample_patient`), at
/// least 1.
pub fn target_shape(
    shape: Shape,
    spacing: [f64; 3],
    target_spacing: [f64; 3],
) -> Result<Shape, SegmentError> {
    numel("target_shape", shape)?;
    check_spacing("spacing", spacing)?;
    check_spacing("target spacing", target_spacing)?;
    let mut out = [0; 3];
    for a in 0..3 {
        let v = (spacing[a] / target_spacing[a] * shape[a] as f64).round_ties_even();
        if !v.is_finite() || v >= usize::MAX as f64 / 2.0 {
            return Err(SegmentError::TargetShape {
                axis: a,
                voxels: v,
                spacing,
                target: target_spacing,
            });
        }
        out[a] = (v as usize).max(1);
    }
    Ok(out)
}

/// Errors unless all three spacings are finite and positive.
pub fn check_spacing(what: &str, spacing: [f64; 3]) -> Result<(), SegmentError> {
    if spacing.iter().all(|s| s.is_finite() && *s > 0.0) {
        Ok(())
    } else {
        Err(SegmentError::Spacing {
            what: what.into(),
            spacing,
        })
    }
}

/// nnU-Net v1's choice of the axis resampled separately with order 0: if the original spacing's
/// max/min ratio exceeds `threshold` (3 in nnU-Net), its coarsest axis; otherwise if the target
/// spacing's does, the target's coarsest axis; `None` when neither is anisotropic or when the
/// coarsest spacing is shared by several axes (`get_do_separate_z` / `get_lowres_axis`).
pub fn separate_z_axis(
    spacing: [f64; 3],
    target_spacing: [f64; 3],
    threshold: f64,
) -> Option<usize> {
    let anisotropic = |s: &[f64; 3]| {
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let min = s.iter().cloned().fold(f64::MAX, f64::min);
        max / min > threshold
    };
    let lowres = |s: &[f64; 3]| {
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let axes: Vec<usize> = (0..3).filter(|&a| s[a] == max).collect();
        (axes.len() == 1).then(|| axes[0])
    };
    if anisotropic(&spacing) {
        lowres(&spacing)
    } else if anisotropic(&target_spacing) {
        lowres(&target_spacing)
    } else {
        None
    }
}

/// Resamples `data` of `shape` to `new_shape` (see the module doc for the exact semantics).
/// With `anisotropic_axis = Some(a)`, axis `a` uses order 0 and the others `order`, slice by slice.
pub fn resample(
    data: &[f32],
    shape: Shape,
    new_shape: Shape,
    order: Order,
    anisotropic_axis: Option<usize>,
) -> Result<Vec<f32>, SegmentError> {
    check_data("resample input", data, shape)?;
    numel("resample output", new_shape)?;
    if let Some(a) = anisotropic_axis {
        if a > 2 {
            return Err(SegmentError::AnisotropicAxis(a));
        }
    }
    if shape == new_shape {
        return Ok(data.to_vec());
    }
    let Some(z) = anisotropic_axis else {
        let mut cur = data.to_vec();
        let mut cur_shape = shape;
        for axis in 0..3 {
            if cur_shape[axis] != new_shape[axis] {
                cur = resample_axis(&cur, cur_shape, axis, new_shape[axis], order);
                cur_shape[axis] = new_shape[axis];
            }
        }
        if order == Order::CubicBSpline {
            let (lo, hi) = range(data);
            cur.iter_mut().for_each(|v| *v = clip(*v, lo, hi));
        }
        return Ok(cur);
    };
    // Order 0 along `z` only selects slices, so it commutes with the in-plane work: do it first
    // when it shrinks the volume, last otherwise.
    let z_first = new_shape[z] < shape[z];
    let (mut cur, mut cur_shape) = if z_first && shape[z] != new_shape[z] {
        let mut s = shape;
        s[z] = new_shape[z];
        (
            resample_axis(data, shape, z, new_shape[z], Order::Nearest),
            s,
        )
    } else {
        (data.to_vec(), shape)
    };
    let ranges = (order == Order::CubicBSpline).then(|| slice_ranges(&cur, cur_shape, z));
    for axis in (0..3).filter(|&a| a != z) {
        if cur_shape[axis] != new_shape[axis] {
            cur = resample_axis(&cur, cur_shape, axis, new_shape[axis], order);
            cur_shape[axis] = new_shape[axis];
        }
    }
    if let Some(ranges) = ranges {
        clip_slices(&mut cur, cur_shape, z, &ranges);
    }
    if cur_shape[z] != new_shape[z] {
        cur = resample_axis(&cur, cur_shape, z, new_shape[z], Order::Nearest);
    }
    Ok(cur)
}

/// Resamples a binary mask like [`resample`] with [`Order::Linear`] (order 0 along
/// `anisotropic_axis`) and keeps the voxels whose interpolated value is at least 0.5, computing
/// each output voxel's value in f64 from its (up to) eight source voxels, as nnU-Net does in
/// float64. Thresholding the f32 result of [`resample`] instead keeps voxels whose f64 value is
/// just below 0.5.
pub fn resample_mask(
    mask: &[bool],
    shape: Shape,
    new_shape: Shape,
    anisotropic_axis: Option<usize>,
) -> Result<Vec<bool>, SegmentError> {
    let n = numel("resample_mask input", shape)?;
    if mask.len() != n {
        return Err(SegmentError::Length {
            what: "resample_mask input".into(),
            got: mask.len(),
            shape,
            want: n,
        });
    }
    let total = numel("resample_mask output", new_shape)?;
    if let Some(a) = anisotropic_axis {
        if a > 2 {
            return Err(SegmentError::AnisotropicAxis(a));
        }
    }
    if shape == new_shape {
        return Ok(mask.to_vec());
    }
    // Per axis and output index: the two source indices and the weight of the second.
    let taps: Vec<Vec<(usize, usize, f64)>> = (0..3)
        .map(|axis| {
            let (len, new_len) = (shape[axis], new_shape[axis]);
            let scale = len as f64 / new_len as f64;
            (0..new_len)
                .map(|o| {
                    if len == new_len {
                        (o, o, 0.0)
                    } else if anisotropic_axis == Some(axis) {
                        let i = nearest_index(source_coord(o, scale), len);
                        (i, i, 0.0)
                    } else {
                        let x = source_coord(o, scale).clamp(0.0, (len - 1) as f64);
                        let i0 = (x.floor() as usize).min(len - 1);
                        (i0, (i0 + 1).min(len - 1), x - i0 as f64)
                    }
                })
                .collect()
        })
        .collect();
    let at = |a: usize, b: usize, c: usize| mask[(a * shape[1] + b) * shape[2] + c] as u8 as f64;
    let mut out = Vec::with_capacity(total);
    for &(a0, a1, ta) in &taps[0] {
        for &(b0, b1, tb) in &taps[1] {
            for &(c0, c1, tc) in &taps[2] {
                let row = |a: usize| {
                    let r0 = (1.0 - tc) * at(a, b0, c0) + tc * at(a, b0, c1);
                    let r1 = (1.0 - tc) * at(a, b1, c0) + tc * at(a, b1, c1);
                    (1.0 - tb) * r0 + tb * r1
                };
                let v = (1.0 - ta) * row(a0) + ta * row(a1);
                out.push(v >= 0.5);
            }
        }
    }
    Ok(out)
}

/// Resamples each of the `channels` volumes stored one after the other in `data` (channel-major,
/// `[C, d0, d1, d2]`), in parallel over channels. nnU-Net brings softmax probabilities back to the
/// original grid this way with [`Order::Linear`] (order 0 along the anisotropic axis).
pub fn resample_channels(
    data: &[f32],
    channels: usize,
    shape: Shape,
    new_shape: Shape,
    order: Order,
    anisotropic_axis: Option<usize>,
) -> Result<Vec<f32>, SegmentError> {
    let n = numel("resample_channels input", shape)?;
    if channels == 0 || data.len() != channels.saturating_mul(n) {
        return Err(SegmentError::ChannelsLength {
            got: data.len(),
            channels,
            shape,
        });
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(channels);
    let per = channels.div_ceil(threads);
    let parts: Vec<Result<Vec<f32>, SegmentError>> = std::thread::scope(|s| {
        let handles: Vec<_> = data
            .chunks(per * n)
            .map(|chunk| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for c in chunk.chunks(n) {
                        out.extend(resample(c, shape, new_shape, order, anisotropic_axis)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("resampling thread panicked"))
            .collect()
    });
    // One part (one thread) is the whole result: no second copy.
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or(Ok(Vec::new()));
    }
    let mut out = Vec::with_capacity(channels * numel("resample_channels output", new_shape)?);
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// [`resample_channels`] along the first axis one plane at a time, for volumes too large to hold
/// twice: input planes go in with [`PlaneResampler::push`] in order, output planes come out as soon
/// as the planes they read are in, and only the (at most two) input planes still needed are kept.
/// Orders 0 and 1 only (order 3 clips to the whole volume's range, so it cannot stream).
///
/// The numbers equal [`resample_channels`]'s bit for bit: the first axis is interpolated first,
/// as [`resample`] does, then the other two in order; order 0 along the anisotropic axis only
/// selects samples, so where it happens in the sequence does not change any value.
pub struct PlaneResampler {
    channels: usize,
    shape: Shape,
    new_shape: Shape,
    order: Order,
    anisotropic_axis: Option<usize>,
    /// Per output plane: the input planes it reads and the weight of the second.
    taps: Vec<(usize, usize, Option<f64>)>,
    /// Input planes from `held_first` on.
    held: std::collections::VecDeque<Vec<f32>>,
    held_first: usize,
    next_in: usize,
    next_out: usize,
}

impl PlaneResampler {
    pub fn new(
        channels: usize,
        shape: Shape,
        new_shape: Shape,
        order: Order,
        anisotropic_axis: Option<usize>,
    ) -> Result<PlaneResampler, SegmentError> {
        numel("plane resampler input", shape)?;
        numel("plane resampler output", new_shape)?;
        if channels == 0 {
            return Err(SegmentError::ChannelsLength {
                got: 0,
                channels,
                shape,
            });
        }
        if let Some(a) = anisotropic_axis.filter(|&a| a > 2) {
            return Err(SegmentError::AnisotropicAxis(a));
        }
        if order == Order::CubicBSpline {
            return Err(SegmentError::Config(
                "order 3 resampling cannot run plane by plane".into(),
            ));
        }
        let (n, m) = (shape[0], new_shape[0]);
        let scale = n as f64 / m as f64;
        let taps = (0..m)
            .map(|o| {
                if n == m {
                    (o, o, None)
                } else if order == Order::Nearest || anisotropic_axis == Some(0) {
                    let i = nearest_index(source_coord(o, scale), n);
                    (i, i, None)
                } else {
                    let x = source_coord(o, scale).clamp(0.0, (n - 1) as f64);
                    let i0 = (x.floor() as usize).min(n - 1);
                    (i0, (i0 + 1).min(n - 1), Some(x - i0 as f64))
                }
            })
            .collect();
        Ok(PlaneResampler {
            channels,
            shape,
            new_shape,
            order,
            anisotropic_axis,
            taps,
            held: Default::default(),
            held_first: 0,
            next_in: 0,
            next_out: 0,
        })
    }

    /// Takes input plane `next` (`[channels, shape[1], shape[2]]`) and calls `emit(o, plane)` for
    /// every output plane `o` (`[channels, new_shape[1], new_shape[2]]`) it completes, in order.
    pub fn push<E: From<SegmentError>>(
        &mut self,
        plane: &[f32],
        mut emit: impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let [_, h, w] = self.shape;
        let want = self.channels * h * w;
        if plane.len() != want || self.next_in >= self.shape[0] {
            return Err(SegmentError::Length {
                what: format!("plane {} of the plane resampler", self.next_in),
                got: plane.len(),
                shape: self.shape,
                want,
            }
            .into());
        }
        self.held.push_back(plane.to_vec());
        self.next_in += 1;
        while let Some(&(i0, i1, t)) = self.taps.get(self.next_out) {
            if i1.max(i0) >= self.next_in {
                break;
            }
            let out = self.plane_out(i0, i1, t);
            emit(self.next_out, &out)?;
            self.next_out += 1;
        }
        // Input planes no later output plane reads.
        let keep_from = self.taps.get(self.next_out).map_or(self.next_in, |t| t.0);
        while self.held_first < keep_from && !self.held.is_empty() {
            self.held.pop_front();
            self.held_first += 1;
        }
        Ok(())
    }

    /// Whether every input plane went in and every output plane came out.
    pub fn is_done(&self) -> bool {
        self.next_in == self.shape[0] && self.next_out == self.new_shape[0]
    }

    fn plane_out(&self, i0: usize, i1: usize, t: Option<f64>) -> Vec<f32> {
        let a = &self.held[i0 - self.held_first];
        let mut cur = match t {
            None => a.clone(),
            Some(t) => {
                let b = &self.held[i1 - self.held_first];
                a.iter()
                    .zip(b)
                    .map(|(&a, &c)| ((1.0 - t) * a as f64 + t * c as f64) as f32)
                    .collect()
            }
        };
        let mut cur_shape = [self.channels, self.shape[1], self.shape[2]];
        for axis in 1..3 {
            if cur_shape[axis] != self.new_shape[axis] {
                let order = if self.anisotropic_axis == Some(axis) {
                    Order::Nearest
                } else {
                    self.order
                };
                cur = resample_axis(&cur, cur_shape, axis, self.new_shape[axis], order);
                cur_shape[axis] = self.new_shape[axis];
            }
        }
        cur
    }
}

/// Source coordinate of output sample `o` on the pixel-centre grid.
fn source_coord(o: usize, scale: f64) -> f64 {
    (o as f64 + 0.5) * scale - 0.5
}

/// Order-0 source index (`floor(x + 0.5)`, clamped).
fn nearest_index(x: f64, n: usize) -> usize {
    ((x + 0.5).floor().max(0.0) as usize).min(n - 1)
}

/// `(min, max)` ignoring NaN.
fn range(data: &[f32]) -> (f32, f32) {
    data.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Clamps to `[lo, hi]`, keeping NaN (like `np.clip`).
fn clip(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// `(outer, n, inner)` of `shape` around `axis`.
fn split(shape: Shape, axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Range of every slice along `axis`.
fn slice_ranges(data: &[f32], shape: Shape, axis: usize) -> Vec<(f32, f32)> {
    let (outer, n, inner) = split(shape, axis);
    let mut r = vec![(f32::INFINITY, f32::NEG_INFINITY); n];
    for b in 0..outer {
        for (i, ri) in r.iter_mut().enumerate() {
            let (lo, hi) = range(&data[(b * n + i) * inner..][..inner]);
            *ri = (ri.0.min(lo), ri.1.max(hi));
        }
    }
    r
}

/// Clips every slice along `axis` to its own range.
fn clip_slices(data: &mut [f32], shape: Shape, axis: usize, ranges: &[(f32, f32)]) {
    let (outer, n, inner) = split(shape, axis);
    for b in 0..outer {
        for (i, &(lo, hi)) in ranges.iter().enumerate() {
            data[(b * n + i) * inner..][..inner]
                .iter_mut()
                .for_each(|v| *v = clip(*v, lo, hi));
        }
    }
}

/// Resamples one axis of a validated volume to `new_len` samples.
pub(crate) fn resample_axis(
    data: &[f32],
    shape: Shape,
    axis: usize,
    new_len: usize,
    order: Order,
) -> Vec<f32> {
    let (outer, n, inner) = split(shape, axis);
    let scale = n as f64 / new_len as f64;
    let mut out = vec![0f32; outer * new_len * inner];
    match order {
        Order::Nearest => {
            let idx: Vec<usize> = (0..new_len)
                .map(|o| nearest_index(source_coord(o, scale), n))
                .collect();
            for b in 0..outer {
                for (o, &i) in idx.iter().enumerate() {
                    out[(b * new_len + o) * inner..][..inner]
                        .copy_from_slice(&data[(b * n + i) * inner..][..inner]);
                }
            }
        }
        Order::Linear => {
            let taps: Vec<(usize, usize, f64)> = (0..new_len)
                .map(|o| {
                    let x = source_coord(o, scale).clamp(0.0, (n - 1) as f64);
                    let i0 = (x.floor() as usize).min(n - 1);
                    (i0, (i0 + 1).min(n - 1), x - i0 as f64)
                })
                .collect();
            for b in 0..outer {
                for (o, &(i0, i1, t)) in taps.iter().enumerate() {
                    let a = &data[(b * n + i0) * inner..][..inner];
                    let c = &data[(b * n + i1) * inner..][..inner];
                    let dst = &mut out[(b * new_len + o) * inner..][..inner];
                    for ((d, &a), &c) in dst.iter_mut().zip(a).zip(c) {
                        *d = ((1.0 - t) * a as f64 + t * c as f64) as f32;
                    }
                }
            }
        }
        Order::CubicBSpline => cubic_axis(data, (outer, n, inner), new_len, scale, &mut out),
    }
    out
}

/// Order-3 B-spline resampling of one axis (see the module doc).
fn cubic_axis(
    data: &[f32],
    (outer, n, inner): (usize, usize, usize),
    new_len: usize,
    scale: f64,
    out: &mut [f32],
) {
    let plen = n + 2 * PAD;
    let taps: Vec<([usize; 4], [f64; 4])> = (0..new_len)
        .map(|o| {
            let x = source_coord(o, scale) + PAD as f64;
            let s = x.floor();
            let t = x - s;
            let start = s as isize - 1;
            let idx =
                std::array::from_fn(|k| (start + k as isize).clamp(0, plen as isize - 1) as usize);
            let u = 1.0 - t;
            let w = [
                u * u * u / 6.0,
                (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0,
                (1.0 + 3.0 * t + 3.0 * t * t - 3.0 * t * t * t) / 6.0,
                t * t * t / 6.0,
            ];
            (idx, w)
        })
        .collect();
    let gain = (1.0 - POLE) * (1.0 - 1.0 / POLE);
    let mut tile = vec![0f64; plen * TILE.min(inner)];
    let mut acc = vec![0f64; TILE.min(inner)];
    for b in 0..outer {
        for j0 in (0..inner).step_by(TILE) {
            let cw = TILE.min(inner - j0);
            let tile = &mut tile[..plen * cw];
            for r in 0..plen {
                let sr = r.saturating_sub(PAD).min(n - 1);
                let src = &data[(b * n + sr) * inner + j0..][..cw];
                for (d, &s) in tile[r * cw..][..cw].iter_mut().zip(src) {
                    *d = s as f64 * gain;
                }
            }
            prefilter(tile, plen, cw);
            for (o, (idx, w)) in taps.iter().enumerate() {
                let acc = &mut acc[..cw];
                acc.fill(0.0);
                for k in 0..4 {
                    let row = &tile[idx[k] * cw..][..cw];
                    for (a, &c) in acc.iter_mut().zip(row) {
                        *a += w[k] * c;
                    }
                }
                for (d, &a) in out[(b * new_len + o) * inner + j0..][..cw]
                    .iter_mut()
                    .zip(acc.iter())
                {
                    *d = a as f32;
                }
            }
        }
    }
}

/// The cubic B-spline prefilter along the rows of a `[len, cw]` tile (already multiplied by the
/// gain), with scipy's half-sample-symmetric ("reflect") initial conditions.
fn prefilter(c: &mut [f64], len: usize, cw: usize) {
    let z = POLE;
    let z_n = z.powi(len as i32);
    for j in 0..cw {
        let c0 = c[j];
        let mut acc = c[j] + z_n * c[(len - 1) * cw + j];
        let mut z_i = z;
        for i in 1..len {
            acc += z_i * (c[i * cw + j] + z_n * c[(len - 1 - i) * cw + j]);
            z_i *= z;
        }
        c[j] = acc * z / (1.0 - z_n * z_n) + c0;
    }
    for i in 1..len {
        let (prev, cur) = c[(i - 1) * cw..(i + 1) * cw].split_at_mut(cw);
        for (x, &p) in cur.iter_mut().zip(prev.iter()) {
            *x += z * p;
        }
    }
    for x in &mut c[(len - 1) * cw..] {
        *x *= z / (z - 1.0);
    }
    for i in (0..len - 1).rev() {
        let (cur, next) = c[i * cw..(i + 2) * cw].split_at_mut(cw);
        for (x, &nx) in cur.iter_mut().zip(next.iter()) {
            *x = z * (nx - *x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One linear (or, `nearest`, order-0) pass along `axis` in f64.
    fn pass_f64(d: &[f64], shape: Shape, axis: usize, new_len: usize, nearest: bool) -> Vec<f64> {
        let (outer, n, inner) = split(shape, axis);
        let scale = n as f64 / new_len as f64;
        let mut out = vec![0f64; outer * new_len * inner];
        for b in 0..outer {
            for o in 0..new_len {
                for j in 0..inner {
                    let v = if n == new_len {
                        d[(b * n + o) * inner + j]
                    } else if nearest {
                        d[(b * n + nearest_index(source_coord(o, scale), n)) * inner + j]
                    } else {
                        let x = source_coord(o, scale).clamp(0.0, (n - 1) as f64);
                        let i0 = (x.floor() as usize).min(n - 1);
                        let i1 = (i0 + 1).min(n - 1);
                        let t = x - i0 as f64;
                        (1.0 - t) * d[(b * n + i0) * inner + j] + t * d[(b * n + i1) * inner + j]
                    };
                    out[(b * new_len + o) * inner + j] = v;
                }
            }
        }
        out
    }

    #[test]
    fn masks_are_thresholded_in_f64() {
        // Axis by axis in f64 (last axis first), thresholded at 0.5: the reference.
        let reference = |m: &[bool], shape: Shape, new: Shape, aniso: Option<usize>| {
            let mut d: Vec<f64> = m.iter().map(|&b| b as u8 as f64).collect();
            let mut s = shape;
            for axis in [2, 1, 0] {
                d = pass_f64(&d, s, axis, new[axis], aniso == Some(axis));
                s[axis] = new[axis];
            }
            d.into_iter().map(|v| v >= 0.5).collect::<Vec<bool>>()
        };
        let mut f32_differs = 0;
        for n in 2..40 {
            for new in 2..40 {
                let m: Vec<bool> = (0..n).map(|i| (i * 7 / 3) % 2 == 0).collect();
                let (shape, new_shape) = ([1, 1, n], [1, 1, new]);
                let got = resample_mask(&m, shape, new_shape, None).unwrap();
                assert_eq!(got, reference(&m, shape, new_shape, None), "{n} -> {new}");
                let f: Vec<f32> = m.iter().map(|&b| b as u8 as f32).collect();
                let r = resample(&f, shape, new_shape, Order::Linear, None).unwrap();
                f32_differs += r
                    .iter()
                    .zip(&got)
                    .filter(|(v, g)| (**v >= 0.5) != **g)
                    .count();
            }
        }
        // Values within f32 rounding of 0.5 exist, so the f64 threshold matters.
        assert!(f32_differs > 0);
        // 3-D, with and without an anisotropic axis.
        let shape = [5, 7, 6];
        let m: Vec<bool> = (0..210).map(|i| (i * 37 + i / 11) % 5 < 2).collect();
        for (new, aniso) in [([9, 4, 11], None), ([3, 10, 8], Some(0)), ([5, 7, 6], None)] {
            let got = resample_mask(&m, shape, new, aniso).unwrap();
            assert_eq!(got, reference(&m, shape, new, aniso), "{new:?} {aniso:?}");
        }
        assert!(resample_mask(&m[1..], shape, [2, 2, 2], None).is_err());
    }

    #[test]
    fn nearest_and_linear_use_pixel_centres() {
        // 4 -> 2: x = (o + 0.5) * 2 - 0.5 = 0.5, 2.5.
        let d = [0.0, 1.0, 2.0, 3.0];
        let lin = resample(&d, [1, 1, 4], [1, 1, 2], Order::Linear, None).unwrap();
        assert_eq!(lin, vec![0.5, 2.5]);
        let near = resample(&d, [1, 1, 4], [1, 1, 2], Order::Nearest, None).unwrap();
        assert_eq!(near, vec![1.0, 3.0]); // floor(x + 0.5): half rounds up
                                          // 2 -> 4: x = -0.25, 0.25, 0.75, 1.25 (clamped at the ends).
        let d = [0.0, 4.0];
        let lin = resample(&d, [2, 1, 1], [4, 1, 1], Order::Linear, None).unwrap();
        assert_eq!(lin, vec![0.0, 1.0, 3.0, 4.0]);
        let near = resample(&d, [2, 1, 1], [4, 1, 1], Order::Nearest, None).unwrap();
        assert_eq!(near, vec![0.0, 0.0, 4.0, 4.0]);
    }

    #[test]
    fn prefilter_then_evaluation_interpolates() {
        // The spline through the coefficients reproduces the samples at the knots.
        let d: Vec<f32> = (0..9).map(|i| ((i * 7) % 5) as f32).collect();
        let mut out = vec![0f32; 9];
        cubic_axis(&d, (1, 9, 1), 9, 1.0, &mut out);
        for (a, b) in out.iter().zip(&d) {
            assert!((a - b).abs() < 1e-5, "{out:?} vs {d:?}");
        }
    }

    #[test]
    fn separate_z_follows_nnunet() {
        assert_eq!(separate_z_axis([5.0, 0.7, 0.7], [1.0; 3], 3.0), Some(0));
        assert_eq!(separate_z_axis([1.0; 3], [0.7, 0.7, 3.0], 3.0), Some(2));
        assert_eq!(separate_z_axis([5.0, 5.0, 0.7], [1.0; 3], 3.0), None);
        assert_eq!(separate_z_axis([2.0, 0.7, 0.7], [2.0, 0.7, 0.7], 3.0), None);
    }

    #[test]
    fn plane_by_plane_resampling_equals_the_whole_volume_bit_for_bit() {
        let shapes: [(Shape, Shape); 6] = [
            ([5, 6, 7], [9, 4, 7]),
            ([8, 5, 5], [3, 5, 9]),
            ([4, 4, 4], [4, 4, 4]),
            ([1, 3, 2], [3, 3, 5]),
            ([7, 2, 6], [7, 5, 3]),
            ([6, 9, 4], [2, 2, 2]),
        ];
        for (shape, new_shape) in shapes {
            for channels in [1, 3] {
                for order in [Order::Linear, Order::Nearest] {
                    for aniso in [None, Some(0), Some(1), Some(2)] {
                        let n: usize = shape.iter().product();
                        let data: Vec<f32> = (0..channels * n)
                            .map(|i| ((i * 7919) % 97) as f32 / 7.0 - 5.0)
                            .collect();
                        let want =
                            resample_channels(&data, channels, shape, new_shape, order, aniso)
                                .unwrap();
                        let mut r =
                            PlaneResampler::new(channels, shape, new_shape, order, aniso).unwrap();
                        let (pl, npl) = (shape[1] * shape[2], new_shape[1] * new_shape[2]);
                        let mut got = vec![f32::NAN; want.len()];
                        let mut next = 0;
                        for z in 0..shape[0] {
                            let plane: Vec<f32> = (0..channels)
                                .flat_map(|c| data[c * n + z * pl..][..pl].to_vec())
                                .collect();
                            r.push::<SegmentError>(&plane, |o, p| {
                                assert_eq!(o, next, "planes out of order");
                                next += 1;
                                let m: usize = new_shape.iter().product();
                                for c in 0..channels {
                                    got[c * m + o * npl..][..npl]
                                        .copy_from_slice(&p[c * npl..][..npl]);
                                }
                                Ok(())
                            })
                            .unwrap();
                            assert!(r.held.len() <= 2, "held {} planes", r.held.len());
                        }
                        assert!(r.is_done());
                        let same = want
                            .iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{shape:?} -> {new_shape:?} {order:?} {aniso:?} x{channels}"
                        );
                    }
                }
            }
        }
        assert!(PlaneResampler::new(1, [2; 3], [3; 3], Order::CubicBSpline, None).is_err());
        let mut r = PlaneResampler::new(1, [2; 3], [3; 3], Order::Linear, None).unwrap();
        assert!(r.push::<SegmentError>(&[0.0; 3], |_, _| Ok(())).is_err());
    }
}
