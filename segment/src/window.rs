//! Sliding-window inference as nnU-Net v1 does it (`predict_3D` with `use_sliding_window`):
//! tiles of the patch size at step 0.5, positions from `_compute_steps_for_sliding_window`
//! (evenly spread, rounded half to even like `np.round`), the image padded to at least one patch
//! (evenly on both sides), softmax of every tile weighted by a Gaussian importance map
//! (sigma = patch / 8, normalised to max 1, zeros replaced by the smallest non-zero value),
//! optional mirroring test-time augmentation over all 8 flip combinations, and the weighted sum
//! divided by the summed weights. [`sliding_window_planes`] holds the accumulators of the planes
//! under the current row of tiles only ([`band_planes`]); [`sliding_window`] gathers its planes
//! into `[classes, D, H, W]`.

mod band;

use crate::SegmentError;
pub use band::tile_blocks_bytes;
use band::Band;

/// Tile start positions along one axis (`image >= patch`).
pub fn axis_steps(image: usize, patch: usize, step: f64) -> Vec<usize> {
    let n = axis_step_count(image, patch, step);
    let max_step = (image - patch) as f64;
    let actual = if n > 1 {
        max_step / (n - 1) as f64
    } else {
        0.0
    };
    (0..n)
        .map(|i| round_half_even(actual * i as f64) as usize)
        .collect()
}

/// How many tile positions [`axis_steps`] makes: `ceil((image - patch) / (patch * step)) + 1`,
/// at most one per voxel of room (`image - patch + 1`; a smaller step only repeats positions,
/// and [`check_tiles`] refuses it).
pub fn axis_step_count(image: usize, patch: usize, step: f64) -> usize {
    let room = image.saturating_sub(patch);
    let n = (room as f64 / (patch as f64 * step)).ceil();
    if n.is_finite() && n >= 0.0 && n <= room as f64 {
        n as usize + 1
    } else {
        room + 1
    }
}

/// Most tiles (mirrorings included) one case may take.
pub const MAX_TILES: usize = 1_000_000;

/// Checks the window before any work: the step is in (0, 1] and not finer than one voxel where
/// the image is larger than the patch, and the tiles (times 8 with `tta`) are at most
/// [`MAX_TILES`]. `image` is the padded shape. Returns the number of tiles.
pub fn check_tiles(
    image: [usize; 3],
    patch: [usize; 3],
    step: f64,
    tta: bool,
) -> Result<usize, crate::SegmentError> {
    let bad = |msg: String| crate::SegmentError::Window(msg);
    if !(step > 0.0 && step <= 1.0) {
        return Err(bad(format!("the step {step} must be in (0, 1]")));
    }
    let mut total = if tta { 8usize } else { 1 };
    for a in 0..3 {
        let room = image[a].saturating_sub(patch[a]);
        let n = (room as f64 / (patch[a] as f64 * step)).ceil();
        if room > 0 && (n.is_nan() || n > room as f64) {
            return Err(bad(format!(
                "the step {step} is less than one voxel of the patch ({} along axis {a}): at \
                 least {} is needed",
                patch[a],
                1.0 / patch[a] as f64
            )));
        }
        total = total.saturating_mul(axis_step_count(image[a], patch[a], step));
    }
    if total > MAX_TILES {
        return Err(bad(format!(
            "{total} tiles (step {step}{}) is more than the limit of {MAX_TILES}; use a larger \
             step",
            if tta { ", TTA x8" } else { "" }
        )));
    }
    Ok(total)
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// Every tile's start `[d, h, w]`, in raster order.
pub fn tiles(image: [usize; 3], patch: [usize; 3], step: f64) -> Vec<[usize; 3]> {
    let s: Vec<Vec<usize>> = (0..3)
        .map(|a| axis_steps(image[a], patch[a], step))
        .collect();
    let mut out = Vec::new();
    for &z in &s[0] {
        for &y in &s[1] {
            for &x in &s[2] {
                out.push([z, y, x]);
            }
        }
    }
    out
}

/// nnU-Net v1's Gaussian importance map for a patch (scipy `gaussian_filter` of a centred delta,
/// truncate 4.0, normalised to max 1, zeros replaced by the smallest non-zero value).
pub fn gaussian(patch: [usize; 3], sigma_scale: f64) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let c = (n / 2) as f64;
        let sigma = n as f64 * sigma_scale;
        let radius = (4.0 * sigma + 0.5).floor();
        (0..n)
            .map(|i| {
                let t = i as f64 - c;
                if t.abs() <= radius && sigma > 0.0 {
                    (-t * t / (2.0 * sigma * sigma)).exp()
                } else if sigma == 0.0 && t == 0.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    };
    let (a, b, c) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut g: Vec<f32> = Vec::with_capacity(patch.iter().product());
    for &x in &a {
        for &y in &b {
            for &z in &c {
                g.push((x * y * z) as f32);
            }
        }
    }
    let max = g.iter().cloned().fold(0.0f32, f32::max);
    if max > 0.0 {
        g.iter_mut().for_each(|v| *v /= max);
    }
    let min_nz = g
        .iter()
        .cloned()
        .filter(|v| *v > 0.0)
        .fold(f32::INFINITY, f32::min);
    if min_nz.is_finite() {
        g.iter_mut()
            .filter(|v| **v == 0.0)
            .for_each(|v| *v = min_nz);
    }
    g
}

/// How a volume was padded to fit at least one patch: `(before, after)` per axis.
pub fn padding(shape: [usize; 3], patch: [usize; 3]) -> [(usize, usize); 3] {
    let mut p = [(0, 0); 3];
    for a in 0..3 {
        let diff = patch[a].saturating_sub(shape[a]);
        p[a] = (diff / 2, diff / 2 + diff % 2);
    }
    p
}

/// Options of one sliding-window prediction.
#[derive(Clone, Debug)]
pub struct WindowOptions {
    pub step: f64,
    pub tta: bool,
    /// Tiles per call of the predictor (the bundle's batch size).
    pub batch: usize,
    /// Bytes of probability accumulators to hold in memory (raised to what one tile needs,
    /// [`tile_blocks_bytes`]); the rest waits in an unnamed scratch file in `scratch_dir`.
    /// `None`: all in memory ([`band_planes`] planes), no file.
    pub accumulator_memory: Option<u64>,
    /// Where the scratch file goes (the system's temporary folder if `None`).
    pub scratch_dir: Option<std::path::PathBuf>,
}

impl Default for WindowOptions {
    /// nnU-Net's: step 0.5, no mirroring, one tile per call, accumulators in memory.
    fn default() -> Self {
        WindowOptions {
            step: 0.5,
            tta: false,
            batch: 1,
            accumulator_memory: None,
            scratch_dir: None,
        }
    }
}

/// Predicts class probabilities `[classes, D, H, W]` of a `[channels, D, H, W]` volume.
///
/// `predict(batch)` receives `batch.len()` tiles of `[channels, patch]` values (row-major,
/// concatenated) and returns their logits `[classes, patch]` (concatenated in the same order).
/// `progress(done, total)` is called after every predictor call. The whole-volume form of
/// [`sliding_window_planes`], with the same numbers.
#[allow(clippy::too_many_arguments)]
pub fn sliding_window<E: From<SegmentError>>(
    volume: &[f32],
    channels: usize,
    shape: [usize; 3],
    patch: [usize; 3],
    classes: usize,
    opts: &WindowOptions,
    predict: impl FnMut(&[f32], usize) -> Result<Vec<f32>, E>,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<f32>, E> {
    let vox: usize = shape.iter().product();
    let plane = shape[1] * shape[2];
    let views: Vec<&[f32]> = volume.chunks(vox.max(1)).take(channels).collect();
    let mut out = vec![0f32; classes * vox];
    sliding_window_planes(
        &views,
        shape,
        patch,
        classes,
        opts,
        predict,
        progress,
        |z, p| {
            for c in 0..classes {
                out[c * vox + z * plane..][..plane].copy_from_slice(&p[c * plane..][..plane]);
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Sliding-window prediction that hands over the class probabilities plane by plane along the
/// first axis, each as soon as no later tile touches it, so memory holds only the planes under
/// the current tiles: at most `patch[0]` planes plus one step (with a batch spanning two rows of
/// tiles) of `classes` floats per voxel of a plane, whatever the image's depth. The summed
/// Gaussian weights are not stored: each finished plane adds them up again, tile by tile in the
/// same order, which gives the same floats. With [`WindowOptions::accumulator_memory`] even those
/// planes need not all be in memory: they are held in square blocks, and the blocks no tile needs
/// now wait in a scratch file beyond that budget (the planes under a row of tiles of an
/// AMOS-sized CT are 2 GiB; the blocks one 128^3 tile can touch 200 MiB).
///
/// `volume` holds one `[D, H, W]` slice per input channel. `emit(z, plane)` receives plane `z`
/// (`0..D`, in order) as `[classes, H, W]`. The numbers equal [`sliding_window`]'s bit for bit:
/// tiles run in the same order, so every voxel sums the same contributions in the same order.
#[allow(clippy::too_many_arguments)]
pub fn sliding_window_planes<E: From<SegmentError>>(
    volume: &[&[f32]],
    shape: [usize; 3],
    patch: [usize; 3],
    classes: usize,
    opts: &WindowOptions,
    mut predict: impl FnMut(&[f32], usize) -> Result<Vec<f32>, E>,
    mut progress: impl FnMut(usize, usize),
    mut emit: impl FnMut(usize, &[f32]) -> Result<(), E>,
) -> Result<WindowStats, E> {
    let channels = volume.len();
    let pad = padding(shape, patch);
    let ps = [0, 1, 2].map(|a| shape[a] + pad[a].0 + pad[a].1);
    let src = Source {
        volume,
        shape,
        before: [pad[0].0, pad[1].0, pad[2].0],
    };
    let g = gaussian(patch, 1.0 / 8.0);
    let tvox: usize = patch.iter().product();
    let starts = tiles(ps, patch, opts.step);
    let flips: Vec<[bool; 3]> = if opts.tta {
        (0..8)
            .map(|m| [m & 1 != 0, m & 2 != 0, m & 4 != 0])
            .collect()
    } else {
        vec![[false; 3]]
    };
    let batch = opts.batch.max(1);
    let jobs: Vec<([usize; 3], [bool; 3])> = starts
        .iter()
        .flat_map(|&s| flips.iter().map(move |&f| (s, f)))
        .collect();
    let total = jobs.len().div_ceil(batch);
    let mut band = Band::new(
        classes,
        ps,
        patch,
        band_planes(shape, patch, opts),
        opts.accumulator_memory,
        opts.scratch_dir.clone(),
    );
    let mut finished = Vec::new();
    let mut out = vec![0f32; classes * shape[1] * shape[2]];
    let mut weight = vec![0f32; ps[1] * ps[2]];
    let scale = 1.0 / flips.len() as f32;
    let mut tile_in = vec![0f32; batch * channels * tvox];
    for (k, chunk) in jobs.chunks(batch).enumerate() {
        for (b, (s, f)) in chunk.iter().enumerate() {
            let dst = &mut tile_in[b * channels * tvox..(b + 1) * channels * tvox];
            src.extract(*s, patch, *f, dst);
        }
        // Pad a short last batch by repeating its first tile (results discarded).
        for b in chunk.len()..batch {
            let (head, tail) = tile_in.split_at_mut(b * channels * tvox);
            tail[..channels * tvox].copy_from_slice(&head[..channels * tvox]);
        }
        let logits = predict(&tile_in, batch)?;
        for (b, (s, f)) in chunk.iter().enumerate() {
            let l = &logits[b * classes * tvox..(b + 1) * classes * tvox];
            band.accumulate(l, patch, *s, *f, &g, scale)?;
        }
        progress(k + 1, total);
        // Tiles run in raster order, so planes above the next tile's first plane are final.
        let done = jobs.get((k + 1) * batch).map_or(ps[0], |j| j.0[0]);
        while band.first < done {
            let z = band.first;
            band.pop(&mut finished)?;
            if (pad[0].0..pad[0].0 + shape[0]).contains(&z) {
                plane_weights(&jobs, z, patch, ps, &g, scale, &mut weight);
                normalise(&finished, &weight, classes, ps, shape, pad, &mut out);
                emit(z - pad[0].0, &out)?;
            }
        }
    }
    // The memory bound the pipeline checks before starting holds (tested on every window).
    debug_assert_eq!(band.peak, band_planes(shape, patch, opts));
    Ok(WindowStats {
        planes: band.peak,
        accumulator_bytes: band.peak_bytes(),
        scratch_blocks: band.spilled,
        scratch_bytes: band.spilled * band.block_bytes() as u64,
    })
}

/// What one [`sliding_window_planes`] held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// The most planes under the tiles at once ([`band_planes`]).
    pub planes: usize,
    /// The most bytes of accumulator blocks in memory at once.
    pub accumulator_bytes: u64,
    /// Blocks written to or read from the scratch file.
    pub scratch_blocks: u64,
    /// Their bytes.
    pub scratch_bytes: u64,
}

/// The most planes [`sliding_window_planes`] holds at once for a volume of `shape` (the
/// accumulators are this many planes of the padded `H x W`, `classes` floats per voxel).
pub fn band_planes(shape: [usize; 3], patch: [usize; 3], opts: &WindowOptions) -> usize {
    let pad = padding(shape, patch);
    let ps = [0, 1, 2].map(|a| shape[a] + pad[a].0 + pad[a].1);
    let per_start = if opts.tta { 8 } else { 1 };
    // Tile rows along depth, each with `row` jobs, in raster order.
    let depths = axis_steps(ps[0], patch[0], opts.step);
    let row = per_start
        * axis_step_count(ps[1], patch[1], opts.step)
        * axis_step_count(ps[2], patch[2], opts.step);
    let batch = opts.batch.max(1);
    let jobs = depths.len() * row;
    let (mut first, mut end, mut most) = (0usize, 0usize, 0usize);
    for k in 0..jobs.div_ceil(batch) {
        let last = ((k + 1) * batch).min(jobs) - 1;
        end = end.max(depths[last / row] + patch[0]);
        most = most.max(end - first);
        let done = if last + 1 < jobs {
            depths[(last + 1) / row]
        } else {
            ps[0]
        };
        first = first.max(done);
    }
    most
}

/// The most bytes of accumulators [`sliding_window_planes`] holds for a volume of `shape`: the
/// blocks of [`band_planes`] planes, or with [`WindowOptions::accumulator_memory`] that budget
/// (raised to one tile's blocks, [`tile_blocks_bytes`]) where it is less; plus the one whole plane
/// it hands over.
pub fn accumulator_bytes(
    shape: [usize; 3],
    patch: [usize; 3],
    classes: usize,
    opts: &WindowOptions,
) -> u64 {
    let pad = padding(shape, patch);
    let ps = [0, 1, 2].map(|a| (shape[a] + pad[a].0 + pad[a].1) as u64);
    let side = 1u64 << band::block_shift(patch);
    let blocks = ps[1].div_ceil(side) * ps[2].div_ceil(side);
    let all = band_planes(shape, patch, opts) as u64 * blocks * classes as u64 * side * side * 4;
    let held = match opts.accumulator_memory {
        Some(b) => all.min(b.max(tile_blocks_bytes(classes, patch))),
        None => all,
    };
    held + classes as u64 * ps[1] * ps[2] * 4
}

/// The input without a padded copy: voxels outside the image read as 0.
struct Source<'a> {
    volume: &'a [&'a [f32]],
    shape: [usize; 3],
    /// Padding before the image on each axis.
    before: [usize; 3],
}

impl Source<'_> {
    /// Index along axis `a` of the image for padded coordinate `p`, if inside.
    fn inside(&self, a: usize, p: usize) -> Option<usize> {
        p.checked_sub(self.before[a]).filter(|&i| i < self.shape[a])
    }

    /// Copies one tile (optionally mirrored) starting at padded position `s`.
    fn extract(&self, s: [usize; 3], patch: [usize; 3], f: [bool; 3], dst: &mut [f32]) {
        let [_, h, w] = self.shape;
        for (c, vol) in self.volume.iter().enumerate() {
            for z in 0..patch[0] {
                let iz = self.inside(0, s[0] + if f[0] { patch[0] - 1 - z } else { z });
                for y in 0..patch[1] {
                    let iy = self.inside(1, s[1] + if f[1] { patch[1] - 1 - y } else { y });
                    let d = &mut dst[((c * patch[0] + z) * patch[1] + y) * patch[2]..][..patch[2]];
                    let (Some(iz), Some(iy)) = (iz, iy) else {
                        d.fill(0.0);
                        continue;
                    };
                    let row = &vol[(iz * h + iy) * w..][..w];
                    let first = self.inside(2, s[2]);
                    if !f[2] && first.is_some_and(|x| x + patch[2] <= w) {
                        let x = first.unwrap_or(0);
                        d.copy_from_slice(&row[x..x + patch[2]]);
                        continue;
                    }
                    for (x, v) in d.iter_mut().enumerate() {
                        let px = s[2] + if f[2] { patch[2] - 1 - x } else { x };
                        *v = self.inside(2, px).map_or(0.0, |i| row[i]);
                    }
                }
            }
        }
    }
}

/// The summed weights of padded plane `z`: `scale * gaussian` of every job covering it, added in
/// job order as the accumulation went (a mirrored tile's weight at a voxel is the map's value at
/// the voxel's place in the tile, whatever the flips).
fn plane_weights(
    jobs: &[([usize; 3], [bool; 3])],
    z: usize,
    patch: [usize; 3],
    ps: [usize; 3],
    g: &[f32],
    scale: f32,
    weight: &mut [f32],
) {
    weight.fill(0.0);
    for (s, _) in jobs {
        if !(s[0]..s[0] + patch[0]).contains(&z) {
            continue;
        }
        let gz = &g[(z - s[0]) * patch[1] * patch[2]..][..patch[1] * patch[2]];
        for y in 0..patch[1] {
            let row = &mut weight[(s[1] + y) * ps[2] + s[2]..][..patch[2]];
            for (w, &gv) in row.iter_mut().zip(&gz[y * patch[2]..][..patch[2]]) {
                *w += scale * gv;
            }
        }
    }
}

/// Divides one finished padded plane by its `weight` and crops the padding: `out` is
/// `[classes, H, W]` of the image.
fn normalise(
    plane: &[f32],
    weight: &[f32],
    classes: usize,
    ps: [usize; 3],
    shape: [usize; 3],
    pad: [(usize, usize); 3],
    out: &mut [f32],
) {
    let pvox = ps[1] * ps[2];
    for c in 0..classes {
        for y in 0..shape[1] {
            for x in 0..shape[2] {
                let p = (y + pad[1].0) * ps[2] + x + pad[2].0;
                out[(c * shape[1] + y) * shape[2] + x] = plane[c * pvox + p] / weight[p];
            }
        }
    }
}
/// Index of the largest value per voxel of `[classes, vox]` (first on ties).
pub fn argmax(probs: &[f32], classes: usize) -> Vec<u16> {
    let vox = probs.len() / classes.max(1);
    (0..vox)
        .map(|v| {
            let mut best = 0;
            for c in 1..classes {
                if probs[c * vox + v] > probs[best * vox + v] {
                    best = c;
                }
            }
            best as u16
        })
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn absurd_steps_are_refused_before_any_work() {
        let (img, patch) = ([300, 300, 300], [128, 128, 128]);
        assert_eq!(check_tiles(img, patch, 0.5, false).unwrap(), 64);
        assert_eq!(check_tiles(img, patch, 0.5, true).unwrap(), 512);
        for step in [1e-9, 0.0, -1.0, f64::NAN, 1.5, f64::MIN_POSITIVE] {
            assert!(check_tiles(img, patch, step, false).is_err(), "{step}");
        }
        // One voxel of the patch is the finest step; it still makes far too many tiles here.
        let e = check_tiles(img, patch, 1.0 / 128.0, false).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        // An image no larger than the patch has one position whatever the step.
        assert_eq!(check_tiles(patch, patch, 1e-9, false).unwrap(), 1);
        assert_eq!(axis_step_count(300, 128, 1e-300), 173);
    }

    use super::*;

    #[test]
    fn tile_positions_follow_nnunet() {
        // nnU-Net: image 197, patch 128, step 0.5 -> ceil(69/64)+1 = 3 steps of 34.5 -> 0, 34 (round
        // half to even of 34.5), 69.
        assert_eq!(axis_steps(197, 128, 0.5), vec![0, 34, 69]);
        assert_eq!(axis_steps(128, 128, 0.5), vec![0]);
        assert_eq!(axis_steps(233, 128, 0.5), vec![0, 52, 105]);
        assert_eq!(axis_steps(189, 128, 0.5), vec![0, 61]);
        assert_eq!(tiles([197, 233, 189], [128; 3], 0.5).len(), 18);
        assert_eq!(
            padding([100, 128, 131], [128; 3]),
            [(14, 14), (0, 0), (0, 0)]
        );
        assert_eq!(padding([5, 1, 2], [8, 4, 4]), [(1, 2), (1, 2), (1, 1)]);
    }

    #[test]
    fn gaussian_is_normalised_and_positive() {
        let g = gaussian([8, 8, 8], 1.0 / 8.0);
        // Centre (4,4,4) is the maximum 1; sigma 1: one step away exp(-1/2).
        assert_eq!(g[(4 * 8 + 4) * 8 + 4], 1.0);
        assert!((g[(4 * 8 + 4) * 8 + 5] - (-0.5f32).exp()).abs() < 1e-6);
        // Radius int(4*1+0.5) = 4: offset -4 (index 0) is still inside.
        assert!((g[(4 * 8 + 4) * 8] - (-8.0f32).exp()).abs() < 1e-9);
        assert!(g.iter().all(|v| *v > 0.0));
    }

    #[test]
    fn an_identity_like_model_reproduces_its_input() {
        // Two classes whose logits are (0, v): softmax(class 1) = sigmoid(v), the same for every
        // tile, so any weighting and any flip must give sigmoid(v) back exactly (up to rounding).
        let shape = [6, 9, 7];
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 / 5.0 - 2.0).collect();
        for tta in [false, true] {
            let opts = WindowOptions {
                step: 0.5,
                tta,
                batch: 3,
                ..Default::default()
            };
            let mut calls = 0;
            let probs = sliding_window::<SegmentError>(
                &v,
                1,
                shape,
                [4, 4, 4],
                2,
                &opts,
                |x, b| {
                    calls += 1;
                    let t = x.len() / b;
                    let mut out = vec![0f32; 2 * x.len()];
                    for k in 0..b {
                        out[(2 * k + 1) * t..(2 * k + 2) * t]
                            .copy_from_slice(&x[k * t..(k + 1) * t]);
                    }
                    Ok(out)
                },
                |_, _| {},
            )
            .unwrap();
            assert!(calls > 0);
            for (i, x) in v.iter().enumerate() {
                let want = 1.0 / (1.0 + (-x).exp());
                assert!((probs[n + i] - want).abs() < 1e-5, "tta {tta} voxel {i}");
                assert!((probs[i] + probs[n + i] - 1.0).abs() < 1e-5);
            }
        }
    }

    // The whole-volume sliding window as it was before planes were streamed: the oracle that
    // [`sliding_window_planes`] must match bit for bit (same tiles, same order of additions).
    #[allow(clippy::too_many_arguments)]
    fn reference<E>(
        volume: &[f32],
        channels: usize,
        shape: [usize; 3],
        patch: [usize; 3],
        classes: usize,
        opts: &WindowOptions,
        mut predict: impl FnMut(&[f32], usize) -> Result<Vec<f32>, E>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<f32>, E> {
        let pad = padding(shape, patch);
        let ps = [0, 1, 2].map(|a| shape[a] + pad[a].0 + pad[a].1);
        let pvox: usize = ps.iter().product();
        // The padded input.
        let mut vol = vec![0f32; channels * pvox];
        for c in 0..channels {
            for z in 0..shape[0] {
                for y in 0..shape[1] {
                    let src = &volume[((c * shape[0] + z) * shape[1] + y) * shape[2]..][..shape[2]];
                    let at = ((c * ps[0] + z + pad[0].0) * ps[1] + y + pad[1].0) * ps[2] + pad[2].0;
                    vol[at..at + shape[2]].copy_from_slice(src);
                }
            }
        }
        let g = gaussian(patch, 1.0 / 8.0);
        let tvox: usize = patch.iter().product();
        let starts = tiles(ps, patch, opts.step);
        let flips: Vec<[bool; 3]> = if opts.tta {
            (0..8)
                .map(|m| [m & 1 != 0, m & 2 != 0, m & 4 != 0])
                .collect()
        } else {
            vec![[false; 3]]
        };
        let mut acc = vec![0f32; classes * pvox];
        let mut weight = vec![0f32; pvox];
        let batch = opts.batch.max(1);
        let jobs: Vec<([usize; 3], [bool; 3])> = starts
            .iter()
            .flat_map(|&s| flips.iter().map(move |&f| (s, f)))
            .collect();
        let total = jobs.len().div_ceil(batch);
        let mut tile_in = vec![0f32; batch * channels * tvox];
        for (k, chunk) in jobs.chunks(batch).enumerate() {
            for (b, (s, f)) in chunk.iter().enumerate() {
                let dst = &mut tile_in[b * channels * tvox..(b + 1) * channels * tvox];
                ref_extract(&vol, channels, ps, *s, patch, *f, dst);
            }
            // Pad a short last batch by repeating its first tile (results discarded).
            for b in chunk.len()..batch {
                let (head, tail) = tile_in.split_at_mut(b * channels * tvox);
                tail[..channels * tvox].copy_from_slice(&head[..channels * tvox]);
            }
            let logits = predict(&tile_in, batch)?;
            for (b, (s, f)) in chunk.iter().enumerate() {
                let l = &logits[b * classes * tvox..(b + 1) * classes * tvox];
                ref_accumulate(
                    l,
                    classes,
                    patch,
                    *s,
                    *f,
                    &g,
                    ps,
                    &mut acc,
                    &mut weight,
                    1.0 / flips.len() as f32,
                );
            }
            progress(k + 1, total);
        }
        // Normalise and crop the padding away.
        let vox: usize = shape.iter().product();
        let mut out = vec![0f32; classes * vox];
        for c in 0..classes {
            for z in 0..shape[0] {
                for y in 0..shape[1] {
                    for x in 0..shape[2] {
                        let p = ((z + pad[0].0) * ps[1] + y + pad[1].0) * ps[2] + x + pad[2].0;
                        out[((c * shape[0] + z) * shape[1] + y) * shape[2] + x] =
                            acc[c * pvox + p] / weight[p];
                    }
                }
            }
        }
        Ok(out)
    }

    /// Copies one tile (optionally mirrored) out of the padded volume.
    fn ref_extract(
        vol: &[f32],
        channels: usize,
        ps: [usize; 3],
        s: [usize; 3],
        patch: [usize; 3],
        f: [bool; 3],
        dst: &mut [f32],
    ) {
        let pvox: usize = ps.iter().product();
        for c in 0..channels {
            for z in 0..patch[0] {
                let sz = s[0] + if f[0] { patch[0] - 1 - z } else { z };
                for y in 0..patch[1] {
                    let sy = s[1] + if f[1] { patch[1] - 1 - y } else { y };
                    let row = c * pvox + (sz * ps[1] + sy) * ps[2] + s[2];
                    let d = &mut dst[((c * patch[0] + z) * patch[1] + y) * patch[2]..][..patch[2]];
                    if f[2] {
                        for (x, v) in d.iter_mut().enumerate() {
                            *v = vol[row + patch[2] - 1 - x];
                        }
                    } else {
                        d.copy_from_slice(&vol[row..row + patch[2]]);
                    }
                }
            }
        }
    }

    /// Adds `scale * softmax(logits) * gaussian` of one (mirrored) tile to the accumulators.
    #[allow(clippy::too_many_arguments)]
    fn ref_accumulate(
        logits: &[f32],
        classes: usize,
        patch: [usize; 3],
        s: [usize; 3],
        f: [bool; 3],
        g: &[f32],
        ps: [usize; 3],
        acc: &mut [f32],
        weight: &mut [f32],
        scale: f32,
    ) {
        let tvox: usize = patch.iter().product();
        let pvox: usize = ps.iter().product();
        let mut prob = vec![0f32; classes];
        for z in 0..patch[0] {
            for y in 0..patch[1] {
                for x in 0..patch[2] {
                    let t = (z * patch[1] + y) * patch[2] + x;
                    let m = (0..classes)
                        .map(|c| logits[c * tvox + t])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for (c, p) in prob.iter_mut().enumerate() {
                        *p = (logits[c * tvox + t] - m).exp();
                        sum += *p;
                    }
                    // The voxel this tile position maps back to (the tile was mirrored on input).
                    let oz = s[0] + if f[0] { patch[0] - 1 - z } else { z };
                    let oy = s[1] + if f[1] { patch[1] - 1 - y } else { y };
                    let ox = s[2] + if f[2] { patch[2] - 1 - x } else { x };
                    let o = (oz * ps[1] + oy) * ps[2] + ox;
                    let w = g[(if f[0] { patch[0] - 1 - z } else { z } * patch[1]
                        + if f[1] { patch[1] - 1 - y } else { y })
                        * patch[2]
                        + if f[2] { patch[2] - 1 - x } else { x }];
                    for (c, p) in prob.iter().enumerate() {
                        acc[c * pvox + o] += scale * w * p / sum;
                    }
                    weight[o] += scale * w;
                }
            }
        }
    }

    /// A predictor whose logits depend on every input value and on the class, so a tile read
    /// from the wrong place or mirrored the wrong way changes the result.
    fn wobbly(
        channels: usize,
        classes: usize,
    ) -> impl FnMut(&[f32], usize) -> Result<Vec<f32>, SegmentError> {
        move |x: &[f32], b: usize| {
            let t = x.len() / b / channels;
            let mut out = vec![0f32; b * classes * t];
            for k in 0..b {
                for c in 0..classes {
                    for i in 0..t {
                        let mut v = c as f32 * 0.3;
                        for ch in 0..channels {
                            v += (x[(k * channels + ch) * t + i] * (c + ch + 1) as f32).sin();
                        }
                        out[(k * classes + c) * t + i] = v;
                    }
                }
            }
            Ok(out)
        }
    }

    #[test]
    fn streamed_planes_equal_the_whole_volume_window_bit_for_bit() {
        // (shape, patch, channels, classes, tta, batch, step)
        type Case = ([usize; 3], [usize; 3], usize, usize, bool, usize, f64);
        let cases: [Case; 6] = [
            ([9, 7, 10], [4, 4, 4], 1, 3, false, 1, 0.5),
            ([9, 7, 10], [4, 4, 4], 2, 2, true, 3, 0.5),
            ([3, 5, 2], [4, 4, 4], 1, 4, true, 2, 0.5), // smaller than the patch: padding
            ([12, 6, 6], [4, 6, 2], 1, 2, false, 4, 0.5),
            ([11, 8, 9], [5, 4, 4], 2, 3, false, 2, 0.25),
            ([7, 9, 5], [6, 3, 5], 1, 1, true, 5, 1.0),
        ];
        for (shape, patch, channels, classes, tta, batch, step) in cases {
            let n: usize = shape.iter().product();
            let vol: Vec<f32> = (0..channels * n)
                .map(|i| ((i * 7919) % 101) as f32 / 13.0 - 3.0)
                .collect();
            let opts = WindowOptions {
                step,
                tta,
                batch,
                ..Default::default()
            };
            let want = reference(
                &vol,
                channels,
                shape,
                patch,
                classes,
                &opts,
                wobbly(channels, classes),
                |_, _| {},
            )
            .unwrap();
            let got = sliding_window(
                &vol,
                channels,
                shape,
                patch,
                classes,
                &opts,
                wobbly(channels, classes),
                |_, _| {},
            )
            .unwrap();
            assert_eq!(want.len(), got.len());
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{shape:?} {patch:?} tta {tta} batch {batch}: the streamed window differs"
            );
        }
    }

    #[test]
    fn accumulators_through_a_scratch_file_give_the_same_bits() {
        // (shape, patch, classes, tta, batch, step): blocks of 1, 2 and 4 voxels.
        type Case = ([usize; 3], [usize; 3], usize, bool, usize, f64);
        let cases: [Case; 4] = [
            ([9, 7, 10], [4, 4, 4], 3, false, 1, 0.5),
            ([13, 19, 17], [5, 8, 9], 2, true, 3, 0.5),
            ([11, 40, 37], [6, 16, 16], 3, false, 2, 0.3),
            ([3, 5, 2], [4, 4, 4], 4, true, 2, 0.5),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (k, (shape, patch, classes, tta, batch, step)) in cases.into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let vol: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 101) as f32 / 13.0 - 3.0)
                .collect();
            let mut spilled = 0;
            let run = |memory: Option<u64>| {
                let opts = WindowOptions {
                    step,
                    tta,
                    batch,
                    accumulator_memory: memory,
                    scratch_dir: Some(dir.path().to_path_buf()),
                };
                let mut out = vec![0f32; classes * n];
                let plane = shape[1] * shape[2];
                let stats = sliding_window_planes::<SegmentError>(
                    &[&vol[..]],
                    shape,
                    patch,
                    classes,
                    &opts,
                    wobbly(1, classes),
                    |_, _| {},
                    |z, p| {
                        for c in 0..classes {
                            out[c * n + z * plane..][..plane]
                                .copy_from_slice(&p[c * plane..][..plane]);
                        }
                        Ok(())
                    },
                )
                .unwrap();
                (out, stats)
            };
            let (want, all) = run(None);
            assert_eq!(all.scratch_blocks, 0);
            let tile = tile_blocks_bytes(classes, patch);
            for memory in [0, tile, tile + tile / 3, all.accumulator_bytes / 2] {
                let (got, stats) = run(Some(memory));
                let same = want
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{shape:?} {patch:?} budget {memory}: the sums differ");
                if memory.max(tile) < all.accumulator_bytes {
                    assert!(
                        stats.scratch_blocks > 0,
                        "{shape:?} budget {memory}: nothing spilled"
                    );
                }
                spilled += stats.scratch_blocks;
                // In memory: the budget, or one tile's blocks where that is more.
                assert!(
                    stats.accumulator_bytes <= memory.max(tile),
                    "{shape:?} budget {memory}: {} bytes held (one tile {tile})",
                    stats.accumulator_bytes
                );
            }
            // The last case is one tile's worth: nothing to spill.
            assert_eq!(spilled > 0, k < 3, "{shape:?}: {spilled} blocks spilled");
        }
        // Nothing is left behind in the folder (the file has no name).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_scratch_folder_that_cannot_be_written_is_an_error() {
        let shape = [9, 7, 10];
        let vol: Vec<f32> = (0..630).map(|i| i as f32 / 100.0).collect();
        let opts = WindowOptions {
            accumulator_memory: Some(0),
            scratch_dir: Some("/nonexistent/e2enc-scratch".into()),
            ..Default::default()
        };
        let e = sliding_window_planes::<SegmentError>(
            &[&vol[..]],
            shape,
            [4, 4, 4],
            2,
            &opts,
            wobbly(1, 2),
            |_, _| {},
            |_, _| Ok(()),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("scratch file in /nonexistent/e2enc-scratch"),
            "{text}"
        );
    }

    #[test]
    fn planes_come_out_in_order_before_the_last_tile() {
        let shape = [20, 5, 5];
        let patch = [4, 5, 5];
        let vol: Vec<f32> = (0..500).map(|i| i as f32 / 100.0).collect();
        let opts = WindowOptions {
            step: 0.5,
            tta: false,
            batch: 1,
            ..Default::default()
        };
        let calls = std::cell::Cell::new(0usize);
        let mut seen = Vec::new();
        let mut calls_at_first = None;
        let mut predict = wobbly(1, 2);
        sliding_window_planes::<SegmentError>(
            &[&vol[..]],
            shape,
            patch,
            2,
            &opts,
            |x, b| {
                calls.set(calls.get() + 1);
                predict(x, b)
            },
            |_, _| {},
            |z, p| {
                assert_eq!(p.len(), 2 * 25);
                calls_at_first.get_or_insert(calls.get());
                seen.push(z);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        // 9 tiles along depth (starts 0, 2, .., 16); planes 0 and 1 are final after the first.
        assert_eq!(calls.get(), 9);
        assert_eq!(calls_at_first, Some(1));
    }
}
