//! Data augmentation of training patches: nnU-Net v1 "moreDA" (`get_moreDA_augmentation`) with
//! the `nnUNetTrainerV2` settings, in the same order: spatial (rotation, scaling), Gaussian noise,
//! Gaussian blur, multiplicative brightness, contrast, simulated low resolution, inverted gamma,
//! gamma, mirroring.
//!
//! Spatial: with probability 0.2 all three angles are drawn from U(-30°, 30°) (rotation about
//! axes 0, 1, 2 composed in that order), with probability 0.2 one scale factor (batchgenerators'
//! rule: half the time U(0.7, 1) when the range reaches below 1, else U(1, 1.4)). Patch voxel `q`
//! then reads the case at `c + R (s (q - (P - 1) / 2))`, `c` being the patch centre in the case:
//! sampled directly from the whole case, so a rotated patch has no empty border where the case
//! continues. Images are interpolated trilinearly, labels by nearest neighbour (round half up),
//! and anything outside the case reads 0. Departures: nnU-Net interpolates images with order 3
//! and labels with order 1 on one-hot maps; "dummy 2D" augmentation for anisotropic patches is not
//! done. Without rotation or scaling the patch is a plain crop.
//!
//! Intensity, per batchgenerators: noise adds N(0, σ²) with σ ~ U(0, 0.1) to every channel
//! (batchgenerators names it "variance" but passes it as the standard deviation); blur picks per
//! channel (p 0.5) a σ ~ U(0.5, 1) for all axes, kernel truncated at 4σ, mirror ("reflect")
//! borders; brightness multiplies each channel by U(0.75, 1.25); contrast scales each channel
//! about its mean by a factor drawn like the scale above from (0.75, 1.25) and clips to the old
//! range; low resolution (p 0.5 per channel) resamples to `round(shape * zoom)`, zoom ~ U(0.5, 1),
//! with order 0 and back with order 1 (nnU-Net: order 3); gamma maps each channel to
//! `((x - min) / (range + 1e-7))^γ * range + min`, γ drawn like the scale from (0.7, 1.5), and then
//! restores the channel's mean and standard deviation (`retain_stats`), the inverted variant doing
//! all this on `-x`. Mirroring flips each axis with probability 0.5.
//!
//! [`AugmentConfig::none`] switches everything off (validation, tests); every draw comes from the
//! `ChaCha8Rng` passed in.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::data::TrainCase;
use super::sampler::{crop_patch, Patch};
use crate::TrainError;
use e2enc_segment::resample::{resample, Order};

/// Probabilities and ranges of every transform; [`Default`] is nnU-Net v1 moreDA with the V2
/// settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    pub p_rotation: f64,
    /// Largest rotation angle per axis, radians.
    pub max_rotation: f64,
    pub p_scale: f64,
    pub scale_range: (f64, f64),
    /// Probability of flipping each axis (0 switches mirroring off).
    pub p_mirror: f64,
    pub p_noise: f64,
    /// Range of the noise's standard deviation.
    pub noise_std_range: (f64, f64),
    pub p_blur: f64,
    pub p_blur_per_channel: f64,
    pub blur_sigma_range: (f64, f64),
    pub p_brightness: f64,
    pub brightness_range: (f64, f64),
    pub p_contrast: f64,
    pub contrast_range: (f64, f64),
    pub p_low_res: f64,
    pub p_low_res_per_channel: f64,
    pub low_res_zoom_range: (f64, f64),
    pub p_gamma_inverted: f64,
    pub p_gamma: f64,
    pub gamma_range: (f64, f64),
}

impl Default for AugmentConfig {
    fn default() -> AugmentConfig {
        AugmentConfig {
            p_rotation: 0.2,
            max_rotation: 30f64.to_radians(),
            p_scale: 0.2,
            scale_range: (0.7, 1.4),
            p_mirror: 0.5,
            p_noise: 0.1,
            noise_std_range: (0.0, 0.1),
            p_blur: 0.2,
            p_blur_per_channel: 0.5,
            blur_sigma_range: (0.5, 1.0),
            p_brightness: 0.15,
            brightness_range: (0.75, 1.25),
            p_contrast: 0.15,
            contrast_range: (0.75, 1.25),
            p_low_res: 0.25,
            p_low_res_per_channel: 0.5,
            low_res_zoom_range: (0.5, 1.0),
            p_gamma_inverted: 0.1,
            p_gamma: 0.3,
            gamma_range: (0.7, 1.5),
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all: [`augment`] returns the plain crop.
    pub fn none() -> AugmentConfig {
        AugmentConfig {
            p_rotation: 0.0,
            p_scale: 0.0,
            p_mirror: 0.0,
            p_noise: 0.0,
            p_blur: 0.0,
            p_brightness: 0.0,
            p_contrast: 0.0,
            p_low_res: 0.0,
            p_gamma_inverted: 0.0,
            p_gamma: 0.0,
            ..AugmentConfig::default()
        }
    }
}

fn hit(rng: &mut ChaCha8Rng, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

fn uniform(rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// batchgenerators' factor draw: half the time below 1 when the range allows it, else above.
fn factor(rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)) -> f64 {
    if rng.random::<f64>() < 0.5 && lo < 1.0 {
        uniform(rng, (lo, 1.0))
    } else {
        uniform(rng, (lo.max(1.0), hi))
    }
}

/// Augments the patch of shape `patch` whose lower corner sits at `origin` in `case` (see the
/// module doc for the transforms and their order).
pub fn augment(
    case: &TrainCase,
    origin: [i64; 3],
    patch: [usize; 3],
    cfg: &AugmentConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Patch, TrainError> {
    let rotate = hit(rng, cfg.p_rotation);
    let angles: [f64; 3] = if rotate {
        std::array::from_fn(|_| uniform(rng, (-cfg.max_rotation, cfg.max_rotation)))
    } else {
        [0.0; 3]
    };
    let scaled = hit(rng, cfg.p_scale);
    let scale = if scaled {
        factor(rng, cfg.scale_range)
    } else {
        1.0
    };
    let mut p = if rotate || scaled {
        let centre = std::array::from_fn(|a| origin[a] as f64 + (patch[a] as f64 - 1.0) / 2.0);
        spatial_sample(case, centre, patch, angles, scale)
    } else {
        crop_patch(case, origin, patch)
    };
    let shape = p.shape;
    if hit(rng, cfg.p_noise) {
        let std = uniform(rng, cfg.noise_std_range) as f32;
        for ch in &mut p.channels {
            for v in ch.iter_mut() {
                *v += std * rng.sample::<f32, _>(StandardNormal);
            }
        }
    }
    if hit(rng, cfg.p_blur) {
        for ch in &mut p.channels {
            if hit(rng, cfg.p_blur_per_channel) {
                let sigma = uniform(rng, cfg.blur_sigma_range);
                gaussian_blur(ch, shape, sigma);
            }
        }
    }
    if hit(rng, cfg.p_brightness) {
        for ch in &mut p.channels {
            let m = uniform(rng, cfg.brightness_range) as f32;
            ch.iter_mut().for_each(|v| *v *= m);
        }
    }
    if hit(rng, cfg.p_contrast) {
        for ch in &mut p.channels {
            let f = factor(rng, cfg.contrast_range);
            contrast(ch, f);
        }
    }
    if hit(rng, cfg.p_low_res) {
        for ch in &mut p.channels {
            if hit(rng, cfg.p_low_res_per_channel) {
                let zoom = uniform(rng, cfg.low_res_zoom_range);
                low_resolution(ch, shape, zoom)?;
            }
        }
    }
    for (p_gamma, invert) in [(cfg.p_gamma_inverted, true), (cfg.p_gamma, false)] {
        if hit(rng, p_gamma) {
            for ch in &mut p.channels {
                let g = factor(rng, cfg.gamma_range);
                gamma(ch, g, invert);
            }
        }
    }
    for axis in 0..3 {
        if hit(rng, cfg.p_mirror) {
            mirror(&mut p, axis);
        }
    }
    Ok(p)
}

/// Rotation about axis 0, then 1, then 2 (angles in radians), as a row-major 3x3 matrix.
fn rotation([a0, a1, a2]: [f64; 3]) -> [[f64; 3]; 3] {
    let (s0, c0) = a0.sin_cos();
    let (s1, c1) = a1.sin_cos();
    let (s2, c2) = a2.sin_cos();
    let r0 = [[1.0, 0.0, 0.0], [0.0, c0, -s0], [0.0, s0, c0]];
    let r1 = [[c1, 0.0, s1], [0.0, 1.0, 0.0], [-s1, 0.0, c1]];
    let r2 = [[c2, -s2, 0.0], [s2, c2, 0.0], [0.0, 0.0, 1.0]];
    let mul = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| -> [[f64; 3]; 3] {
        std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
    };
    mul(mul(r0, r1), r2)
}

/// Samples a `patch`-shaped grid centred at `centre` (case voxel coordinates), rotated by
/// `angles` and scaled by `scale`: trilinear for images, nearest for labels, 0 outside the case.
pub fn spatial_sample(
    case: &TrainCase,
    centre: [f64; 3],
    patch: [usize; 3],
    angles: [f64; 3],
    scale: f64,
) -> Patch {
    let r = rotation(angles);
    let m: [[f64; 3]; 3] = std::array::from_fn(|i| std::array::from_fn(|j| r[i][j] * scale));
    let s = case.shape;
    let n: usize = patch.iter().product();
    let mut channels = vec![vec![0f32; n]; case.channels.len()];
    let mut label = vec![0u16; n];
    let half: [f64; 3] = std::array::from_fn(|a| (patch[a] as f64 - 1.0) / 2.0);
    let lim: [f64; 3] = std::array::from_fn(|a| s[a] as f64);
    let mut out = 0;
    for i in 0..patch[0] {
        for j in 0..patch[1] {
            let (di, dj) = (i as f64 - half[0], j as f64 - half[1]);
            for k in 0..patch[2] {
                let dk = k as f64 - half[2];
                let x: [f64; 3] =
                    std::array::from_fn(|a| centre[a] + m[a][0] * di + m[a][1] * dj + m[a][2] * dk);
                // Nearest label.
                if (0..3).all(|a| x[a] > -0.5 && x[a] < lim[a] - 0.5) {
                    let v: [usize; 3] = std::array::from_fn(|a| (x[a] + 0.5).floor() as usize);
                    label[out] = case.label[(v[0] * s[1] + v[1]) * s[2] + v[2]];
                }
                // Trilinear image, zero outside.
                if (0..3).all(|a| x[a] > -1.0 && x[a] < lim[a]) {
                    let f: [f64; 3] = std::array::from_fn(|a| x[a].floor());
                    let w: [f64; 3] = std::array::from_fn(|a| x[a] - f[a]);
                    let b: [i64; 3] = std::array::from_fn(|a| f[a] as i64);
                    // Corner weights and indices; corners outside the case get weight 0.
                    let mut cw = [0f32; 8];
                    let mut ci = [0usize; 8];
                    for corner in 0..8 {
                        let o = [(corner >> 2) & 1, (corner >> 1) & 1, corner & 1];
                        let mut weight = 1.0;
                        let mut inside = true;
                        let mut idx = 0usize;
                        for a in 0..3 {
                            let c = b[a] + o[a] as i64;
                            weight *= if o[a] == 1 { w[a] } else { 1.0 - w[a] };
                            inside &= c >= 0 && c < s[a] as i64;
                            idx = idx * s[a] + c.max(0) as usize;
                        }
                        if inside {
                            cw[corner] = weight as f32;
                            ci[corner] = idx;
                        }
                    }
                    for (dst, ch) in channels.iter_mut().zip(&case.channels) {
                        let mut acc = 0f32;
                        for c in 0..8 {
                            if cw[c] != 0.0 {
                                acc += cw[c] * ch[ci[c]];
                            }
                        }
                        dst[out] = acc;
                    }
                }
                out += 1;
            }
        }
    }
    Patch {
        channels,
        label,
        shape: patch,
    }
}

/// Flips `p` (all channels and the label) along `axis`.
pub fn mirror(p: &mut Patch, axis: usize) {
    let s = p.shape;
    let flip = |i: usize| -> usize {
        let (a, b, c) = (i / (s[1] * s[2]), (i / s[2]) % s[1], i % s[2]);
        let mut v = [a, b, c];
        v[axis] = s[axis] - 1 - v[axis];
        (v[0] * s[1] + v[1]) * s[2] + v[2]
    };
    let n = p.label.len();
    for i in 0..n {
        let j = flip(i);
        if i < j {
            p.label.swap(i, j);
            for ch in &mut p.channels {
                ch.swap(i, j);
            }
        }
    }
}

/// scipy's "reflect" border: `d c b a | a b c d | d c b a`.
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    let m = i.rem_euclid(2 * n);
    (if m >= n { 2 * n - 1 - m } else { m }) as usize
}

/// `scipy.ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=4)` on a C-order volume.
pub fn gaussian_blur(data: &mut [f32], shape: [usize; 3], sigma: f64) {
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut kernel: Vec<f64> = (-radius..=radius)
        .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let mut line = Vec::new();
    for axis in 0..3 {
        let n = shape[axis];
        let stride: usize = shape[axis + 1..].iter().product();
        let outer: usize = shape[..axis].iter().product();
        for o in 0..outer {
            for inner in 0..stride {
                let start = o * n * stride + inner;
                line.clear();
                line.extend(
                    (-radius..n as i64 + radius)
                        .map(|t| f64::from(data[start + reflect(t, n) * stride])),
                );
                for t in 0..n {
                    let v: f64 = kernel.iter().zip(&line[t..]).map(|(k, x)| k * x).sum();
                    data[start + t * stride] = v as f32;
                }
            }
        }
    }
}

fn mean_std(data: &[f32]) -> (f64, f64) {
    let n = data.len().max(1) as f64;
    let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = data
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

fn min_max(data: &[f32]) -> (f32, f32) {
    data.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// batchgenerators `augment_contrast` with `preserve_range`: scale about the mean by `f`, clip
/// to the old `[min, max]`.
pub fn contrast(data: &mut [f32], f: f64) {
    let (mean, _) = mean_std(data);
    let (lo, hi) = min_max(data);
    for v in data.iter_mut() {
        *v = (((f64::from(*v) - mean) * f + mean) as f32).clamp(lo, hi);
    }
}

/// batchgenerators `augment_gamma` with `retain_stats` (on `-x` when `invert`).
pub fn gamma(data: &mut [f32], g: f64, invert: bool) {
    let sign = if invert { -1.0 } else { 1.0 };
    let x: Vec<f64> = data.iter().map(|&v| sign * f64::from(v)).collect();
    let n = x.len().max(1) as f64;
    let stats = |x: &[f64]| {
        let m = x.iter().sum::<f64>() / n;
        (
            m,
            (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt(),
        )
    };
    let (mean, sd) = stats(&x);
    let lo = x.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let range = hi - lo;
    let y: Vec<f64> = x
        .iter()
        .map(|v| ((v - lo) / (range + 1e-7)).powf(g) * range + lo)
        .collect();
    let (my, sy) = stats(&y);
    for (d, v) in data.iter_mut().zip(y) {
        *d = (sign * ((v - my) / (sy + 1e-8) * sd + mean)) as f32;
    }
}

/// Simulated low resolution: order-0 down to `round(shape * zoom)`, order-1 back up.
pub fn low_resolution(data: &mut [f32], shape: [usize; 3], zoom: f64) -> Result<(), TrainError> {
    let low: [usize; 3] =
        std::array::from_fn(|a| ((shape[a] as f64 * zoom).round_ties_even() as usize).max(1));
    let down = resample(data, shape, low, Order::Nearest, None)?;
    let up = resample(&down, low, shape, Order::Linear, None)?;
    data.copy_from_slice(&up);
    Ok(())
}

#[cfg(test)]
#[path = "augment_tests.rs"]
mod tests;
