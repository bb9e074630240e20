//! nnU-Net v1-style training patch sampling (`DataLoader3D`) from a preprocessed [`TrainCase`].
//!
//! A patch is placed by its lower corner `origin` (case voxel coordinates, network axes, possibly
//! negative). Along each axis the corner is drawn uniformly from `[lb, ub]` with `lb = -pad / 2`
//! and `ub = shape + pad / 2 + pad % 2 - patch`, where `pad = max(0, patch - shape)`: a case
//! smaller than the patch is centred in it and padded with zeros (label 0), as nnU-Net does.
//! With foreground forcing, a present foreground class is chosen uniformly, then one of its
//! voxels ([`ClassLocations`], at most 10,000 per class, evenly strided as nnU-Net keeps a
//! 10,000-voxel subset), and the corner becomes `voxel - patch / 2` clamped to `[lb, ub]`, so the
//! voxel lies inside the patch. A case without foreground falls back to a random corner.
//!
//! Oversampling: nnU-Net v1 forces foreground for the last `round(B * 0.33)` items of a batch,
//! which never happens at batch size 1. Here every item is forced independently with probability
//! [`SamplerConfig::foreground_probability`] (1/3), the same expected share at any batch size.
//!
//! All randomness comes from the `ChaCha8Rng` passed in (serializable with serde), so a resumed
//! run draws the same patches. [`draw_patch`] combines sampling with [`super::augment`].

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::augment::{augment, AugmentConfig};
use super::data::TrainCase;
use crate::TrainError;

/// nnU-Net keeps at most this many locations per class.
const MAX_PER_CLASS: usize = 10_000;

/// How patches are placed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    /// Patch shape in network axes.
    pub patch: [usize; 3],
    /// Probability that an item is centred on a foreground voxel (nnU-Net: 0.33).
    pub foreground_probability: f64,
}

impl SamplerConfig {
    /// nnU-Net's oversampling share, 1/3, for `patch`.
    pub fn new(patch: [usize; 3]) -> SamplerConfig {
        SamplerConfig {
            patch,
            foreground_probability: 1.0 / 3.0,
        }
    }
}

/// Some voxel indices (flat, C order) of each foreground class present in a case.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassLocations {
    /// `(class, voxels)` for each class > 0 that occurs, in ascending class order.
    pub classes: Vec<(u16, Vec<usize>)>,
}

impl ClassLocations {
    /// Collects up to 10,000 evenly strided voxels of every foreground class of `case`.
    pub fn new(case: &TrainCase) -> ClassLocations {
        let max = case.label.iter().copied().max().unwrap_or(0);
        let mut counts = vec![0usize; usize::from(max) + 1];
        for &l in &case.label {
            counts[usize::from(l)] += 1;
        }
        let mut classes = Vec::new();
        for c in 1..=max {
            let n = counts[usize::from(c)];
            if n == 0 {
                continue;
            }
            let stride = n.div_ceil(MAX_PER_CLASS);
            let v: Vec<usize> = case
                .label
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l == c)
                .map(|(i, _)| i)
                .step_by(stride)
                .collect();
            classes.push((c, v));
        }
        ClassLocations { classes }
    }
}

/// A training patch: image channels and labels of `shape` (network axes, C order).
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub channels: Vec<Vec<f32>>,
    pub label: Vec<u16>,
    pub shape: [usize; 3],
}

fn bounds(shape: [usize; 3], patch: [usize; 3], a: usize) -> (i64, i64) {
    let (s, p) = (shape[a] as i64, patch[a] as i64);
    let pad = (p - s).max(0);
    (-(pad / 2), s + pad / 2 + pad % 2 - p)
}

/// Draws a patch corner (see the module doc); `foreground` forces a foreground voxel inside.
pub fn choose_origin(
    shape: [usize; 3],
    patch: [usize; 3],
    foreground: Option<&ClassLocations>,
    rng: &mut ChaCha8Rng,
) -> [i64; 3] {
    let voxel = foreground.and_then(|locs| {
        if locs.classes.is_empty() {
            return None;
        }
        let (_, v) = &locs.classes[rng.random_range(0..locs.classes.len())];
        let i = v[rng.random_range(0..v.len())];
        Some([
            i / (shape[1] * shape[2]),
            (i / shape[2]) % shape[1],
            i % shape[2],
        ])
    });
    std::array::from_fn(|a| {
        let (lb, ub) = bounds(shape, patch, a);
        match voxel {
            Some(v) => (v[a] as i64 - (patch[a] / 2) as i64).clamp(lb, ub),
            None => rng.random_range(lb..=ub),
        }
    })
}

/// Draws a corner for one batch item: foreground-forced with the configured probability.
pub fn sample_origin(
    cfg: &SamplerConfig,
    shape: [usize; 3],
    locs: &ClassLocations,
    rng: &mut ChaCha8Rng,
) -> [i64; 3] {
    let force = rng.random::<f64>() < cfg.foreground_probability;
    choose_origin(shape, cfg.patch, force.then_some(locs), rng)
}

/// The part of `case` at `origin` of shape `patch`, zeros (label 0) outside the case.
pub fn crop_patch(case: &TrainCase, origin: [i64; 3], patch: [usize; 3]) -> Patch {
    let s = case.shape;
    let n: usize = patch.iter().product();
    let mut channels = vec![vec![0f32; n]; case.channels.len()];
    let mut label = vec![0u16; n];
    // Overlap of the patch with the case along the last axis.
    let k0 = (-origin[2]).clamp(0, patch[2] as i64) as usize;
    let k1 = (s[2] as i64 - origin[2]).clamp(0, patch[2] as i64) as usize;
    for i in 0..patch[0] {
        let ci = origin[0] + i as i64;
        if ci < 0 || ci >= s[0] as i64 {
            continue;
        }
        for j in 0..patch[1] {
            let cj = origin[1] + j as i64;
            if cj < 0 || cj >= s[1] as i64 || k0 >= k1 {
                continue;
            }
            let row = (ci as usize * s[1] + cj as usize) * s[2];
            let (a, b) = (
                row + (origin[2] + k0 as i64) as usize,
                row + (origin[2] + k1 as i64) as usize,
            );
            let dst = (i * patch[1] + j) * patch[2];
            for (out, ch) in channels.iter_mut().zip(&case.channels) {
                out[dst + k0..dst + k1].copy_from_slice(&ch[a..b]);
            }
            label[dst + k0..dst + k1].copy_from_slice(&case.label[a..b]);
        }
    }
    Patch {
        channels,
        label,
        shape: patch,
    }
}

/// One augmented training patch from `case`: [`sample_origin`], then [`augment`].
pub fn draw_patch(
    case: &TrainCase,
    locs: &ClassLocations,
    sampler: &SamplerConfig,
    aug: &AugmentConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Patch, TrainError> {
    let n: usize = case.shape.iter().product();
    if n == 0 || case.label.len() != n || case.channels.iter().any(|c| c.len() != n) {
        return Err(TrainError::Data(format!(
            "draw_patch: case of shape {:?} holds {} label values and channel sizes {:?}",
            case.shape,
            case.label.len(),
            case.channels.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    if sampler.patch.contains(&0) {
        return Err(TrainError::Data(format!(
            "draw_patch: patch {:?} has an empty axis",
            sampler.patch
        )));
    }
    let origin = sample_origin(sampler, case.shape, locs, rng);
    augment(case, origin, sampler.patch, aug, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn case(shape: [usize; 3], fg: &[usize]) -> TrainCase {
        let n = shape.iter().product();
        let mut label = vec![0u16; n];
        for (i, &v) in fg.iter().enumerate() {
            label[v] = 1 + (i % 2) as u16;
        }
        TrainCase {
            channels: vec![(0..n).map(|i| i as f32 + 1.0).collect()],
            label,
            shape,
        }
    }

    #[test]
    fn foreground_forcing_puts_a_foreground_voxel_in_the_patch() {
        // Two foreground voxels in a 40^3 case, 8^3 patches.
        let c = case([40, 40, 40], &[(3 * 40 + 37) * 40 + 20, 39 * 40 * 40 + 39]);
        let locs = ClassLocations::new(&c);
        assert_eq!(locs.classes.len(), 2);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let o = choose_origin(c.shape, [8; 3], Some(&locs), &mut rng);
            let p = crop_patch(&c, o, [8; 3]);
            assert!(p.label.iter().any(|&l| l > 0), "origin {o:?}");
            assert!(o.iter().all(|&x| (0..=32).contains(&x)), "{o:?}");
        }
        // Without forcing, most random 8^3 patches miss both voxels.
        let misses = (0..50)
            .filter(|_| {
                let o = choose_origin(c.shape, [8; 3], None, &mut rng);
                crop_patch(&c, o, [8; 3]).label.iter().all(|&l| l == 0)
            })
            .count();
        assert!(misses > 40, "{misses}");
    }

    #[test]
    fn small_cases_are_centred_and_zero_padded() {
        let c = case([2, 3, 4], &[0]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let o = choose_origin(c.shape, [6, 3, 4], None, &mut rng);
        assert_eq!(o, [-2, 0, 0]);
        let p = crop_patch(&c, o, [6, 3, 4]);
        assert_eq!(p.shape, [6, 3, 4]);
        assert!(p.channels[0][..24].iter().all(|&v| v == 0.0));
        assert_eq!(&p.channels[0][24..48], &c.channels[0][..]);
        assert!(p.channels[0][48..].iter().all(|&v| v == 0.0));
        assert_eq!(p.label[24], 1);
        // Odd padding: 3 -> 6 along the last axis puts 1 voxel before and 2 after.
        let c = case([1, 1, 3], &[]);
        assert_eq!(
            choose_origin(c.shape, [1, 1, 6], None, &mut rng),
            [0, 0, -1]
        );
        let p = crop_patch(&c, [0, 0, -1], [1, 1, 6]);
        assert_eq!(p.channels[0], [0.0, 1.0, 2.0, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn same_seed_same_patch_and_the_rng_state_serializes() {
        let c = case([20, 30, 25], &[5000, 6000, 7000]);
        let locs = ClassLocations::new(&c);
        let s = SamplerConfig::new([8, 16, 8]);
        let aug = AugmentConfig::default();
        let mut a = ChaCha8Rng::seed_from_u64(42);
        let mut b = ChaCha8Rng::seed_from_u64(42);
        for _ in 0..5 {
            let pa = draw_patch(&c, &locs, &s, &aug, &mut a).unwrap();
            let pb = draw_patch(&c, &locs, &s, &aug, &mut b).unwrap();
            assert_eq!(pa, pb);
        }
        // A resumed run: serialize the state, restore it, draw the same next patch.
        let saved = serde_json::to_string(&a).unwrap();
        let mut restored: ChaCha8Rng = serde_json::from_str(&saved).unwrap();
        let pa = draw_patch(&c, &locs, &s, &aug, &mut a).unwrap();
        let pr = draw_patch(&c, &locs, &s, &aug, &mut restored).unwrap();
        assert_eq!(pa, pr);
        let mut other = ChaCha8Rng::seed_from_u64(43);
        let po = draw_patch(&c, &locs, &s, &aug, &mut other).unwrap();
        assert_ne!(po, pa);
    }

    #[test]
    fn oversampling_share_is_about_a_third() {
        let c = case([64, 4, 4], &[0]);
        let locs = ClassLocations::new(&c);
        let s = SamplerConfig::new([4, 4, 4]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let hits = (0..3000)
            .filter(|_| sample_origin(&s, c.shape, &locs, &mut rng)[0] == 0)
            .count();
        // Forced: origin 0 (always); random: 1 in 61. Expected about 1000 + 2000 / 61 = 1033.
        assert!((900..1170).contains(&hits), "{hits}");
    }

    #[test]
    fn malformed_cases_are_refused() {
        let mut c = case([4, 4, 4], &[]);
        c.label.pop();
        let locs = ClassLocations { classes: vec![] };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let s = SamplerConfig::new([4; 3]);
        assert!(draw_patch(&c, &locs, &s, &AugmentConfig::none(), &mut rng).is_err());
    }
}
