//! Tests of the augmentation transforms: identities, exact symmetries and hand-computed values.

use super::*;
use rand::SeedableRng;

fn case(shape: [usize; 3]) -> TrainCase {
    let n: usize = shape.iter().product();
    TrainCase {
        channels: vec![
            (0..n).map(|i| ((i * 37) % 101) as f32 * 0.1).collect(),
            (0..n).map(|i| i as f32).collect(),
        ],
        label: (0..n).map(|i| [0u16, 3, 7][(i * 13) % 3]).collect(),
        shape,
    }
}

#[test]
fn no_augmentation_is_the_plain_crop() {
    let c = case([9, 10, 11]);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for origin in [[0, 0, 0], [-2, 3, 4], [5, 6, 7]] {
        let p = augment(&c, origin, [6, 5, 4], &AugmentConfig::none(), &mut rng).unwrap();
        assert_eq!(p, crop_patch(&c, origin, [6, 5, 4]));
    }
}

#[test]
fn zero_rotation_and_unit_scale_is_the_identity() {
    let c = case([9, 10, 11]);
    for origin in [[0i64, 0, 0], [-2, 3, 4], [5, 6, 9]] {
        let patch = [6, 5, 4];
        let centre = std::array::from_fn(|a| origin[a] as f64 + (patch[a] as f64 - 1.0) / 2.0);
        let p = spatial_sample(&c, centre, patch, [0.0; 3], 1.0);
        assert_eq!(p, crop_patch(&c, origin, patch), "origin {origin:?}");
    }
}

#[test]
fn mirroring_twice_is_the_identity() {
    let c = case([4, 5, 6]);
    let orig = crop_patch(&c, [0, 0, 0], c.shape);
    for axis in 0..3 {
        let mut p = orig.clone();
        mirror(&mut p, axis);
        assert_ne!(p, orig);
        mirror(&mut p, axis);
        assert_eq!(p, orig);
    }
    let mut p = orig.clone();
    mirror(&mut p, 2);
    // (0, 0, 0) <- (0, 0, 5)
    assert_eq!(p.channels[1][0], 5.0);
    assert_eq!(p.label[0], orig.label[5]);
}

#[test]
fn half_turn_about_axis_0_flips_axes_1_and_2() {
    let c = case([5, 6, 7]);
    let centre = [2.0, 2.5, 3.0];
    let p = spatial_sample(&c, centre, c.shape, [std::f64::consts::PI, 0.0, 0.0], 1.0);
    let mut want = crop_patch(&c, [0, 0, 0], c.shape);
    mirror(&mut want, 1);
    mirror(&mut want, 2);
    assert_eq!(p.label, want.label);
    for (a, b) in p.channels.iter().zip(&want.channels) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}

#[test]
fn labels_stay_within_their_set_and_outside_reads_zero() {
    let c = case([12, 12, 12]);
    let cfg = AugmentConfig {
        p_rotation: 1.0,
        p_scale: 1.0,
        ..AugmentConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..10 {
        let p = augment(&c, [-3, 2, 4], [10, 10, 10], &cfg, &mut rng).unwrap();
        assert!(p.label.iter().all(|l| [0, 3, 7].contains(l)));
        assert!(p.channels.iter().flatten().all(|v| v.is_finite()));
    }
    // Scaled far out: the patch corners fall outside the case and read 0.
    let p = spatial_sample(&c, [5.5; 3], [8; 3], [0.3, 0.2, 0.1], 4.0);
    assert_eq!(p.label[0], 0);
    assert_eq!(p.channels[1][0], 0.0);
    // Scale 2 without rotation samples every other voxel.
    let p = spatial_sample(&c, [5.0; 3], [3; 3], [0.0; 3], 2.0);
    // Patch voxel (0, 0, 0) reads case (3, 3, 3).
    assert_eq!(p.channels[1][0], ((3 * 12 + 3) * 12 + 3) as f32);
    assert_eq!(p.channels[1][1], ((3 * 12 + 3) * 12 + 5) as f32);
}

#[test]
fn brightness_noise_and_gamma_switches() {
    let c = case([8, 8, 8]);
    let base = crop_patch(&c, [0, 0, 0], c.shape);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let cfg = AugmentConfig {
        p_brightness: 1.0,
        brightness_range: (2.0, 2.0),
        ..AugmentConfig::none()
    };
    let p = augment(&c, [0, 0, 0], c.shape, &cfg, &mut rng).unwrap();
    for (a, b) in p
        .channels
        .iter()
        .flatten()
        .zip(base.channels.iter().flatten())
    {
        assert_eq!(*a, 2.0 * b);
    }
    let cfg = AugmentConfig {
        p_noise: 1.0,
        noise_std_range: (0.5, 0.5),
        ..AugmentConfig::none()
    };
    let p = augment(&c, [0, 0, 0], c.shape, &cfg, &mut rng).unwrap();
    let diff: Vec<f32> = p.channels[0]
        .iter()
        .zip(&base.channels[0])
        .map(|(a, b)| a - b)
        .collect();
    let (m, s) = mean_std(&diff);
    assert!(m.abs() < 0.1 && (s - 0.5).abs() < 0.05, "{m} {s}");
}

#[test]
fn contrast_follows_the_hand_example() {
    // Mean 1.5, factor 2: (x - 1.5) * 2 + 1.5, clipped to [0, 3].
    let mut v = [0.0, 1.0, 2.0, 3.0];
    contrast(&mut v, 2.0);
    assert_eq!(v, [0.0, 0.5, 2.5, 3.0]);
}

#[test]
fn gamma_follows_the_hand_example() {
    // [0, 1, 2], gamma 2: ((x - 0) / 2)^2 * 2 = [0, 0.5, 2], then mean 1 and sd sqrt(2/3)
    // restored: y' = (y - 5/6) / sd_y * sqrt(2/3) + 1 with sd_y = sqrt(0.722...).
    let mut v = [0.0f32, 1.0, 2.0];
    gamma(&mut v, 2.0, false);
    let y = [0.0f64, 0.5, 2.0];
    let my = 2.5 / 3.0;
    let sy = (y.iter().map(|v| (v - my).powi(2)).sum::<f64>() / 3.0).sqrt();
    let sd = (2.0f64 / 3.0).sqrt();
    for (got, y) in v.iter().zip(y) {
        let want = (y - my) / sy * sd + 1.0;
        assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
    }
    // Inverted: the same map on -x, negated back: [0, 1, 2] -> -(gamma of [0, -1, -2]).
    let mut w = [0.0f32, 1.0, 2.0];
    gamma(&mut w, 2.0, true);
    let mut neg = [0.0f32, -1.0, -2.0];
    gamma(&mut neg, 2.0, false);
    for (a, b) in w.iter().zip(neg) {
        assert!((a + b).abs() < 1e-6);
    }
    // Gamma 1 is the identity.
    let mut u = [0.5f32, -1.0, 3.0, 2.0];
    gamma(&mut u, 1.0, false);
    for (a, b) in u.iter().zip([0.5, -1.0, 3.0, 2.0]) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn blur_keeps_constants_and_spreads_a_delta_with_the_gaussian_kernel() {
    let shape = [5, 9, 9];
    let mut c = vec![2.5f32; 405];
    gaussian_blur(&mut c, shape, 0.8);
    assert!(c.iter().all(|v| (v - 2.5).abs() < 1e-5));
    let mut d = vec![0f32; 405];
    d[(2 * 9 + 4) * 9 + 4] = 1.0;
    gaussian_blur(&mut d, shape, 1.0);
    let sum: f32 = d.iter().sum();
    assert!((sum - 1.0).abs() < 1e-5);
    // Separable: value at offset (0, 0, 1) / value at the centre = exp(-1/2).
    let centre = d[(2 * 9 + 4) * 9 + 4];
    let next = d[(2 * 9 + 4) * 9 + 5];
    assert!((next / centre - (-0.5f32).exp()).abs() < 1e-5);
    assert_eq!(d[(2 * 9 + 4) * 9 + 3], next);
    // Reflect border: d c b a | a b c d.
    assert_eq!(
        (0..6).map(|i| reflect(i - 3, 3)).collect::<Vec<_>>(),
        [2, 1, 0, 0, 1, 2]
    );
}

#[test]
fn low_resolution_keeps_constants_and_blocks_detail() {
    let shape = [4, 4, 8];
    let mut c = vec![1.5f32; 128];
    low_resolution(&mut c, shape, 0.5).unwrap();
    assert!(c.iter().all(|&v| v == 1.5));
    // An alternating pattern along the last axis: order 0 down to 4 keeps every other sample
    // (index floor((o + .5) * 2 - .5 + .5) = 2o + 1: all ones), so the result is flat.
    let mut a: Vec<f32> = (0..128).map(|i| (i % 2) as f32).collect();
    low_resolution(&mut a, shape, 0.5).unwrap();
    assert!(a.iter().all(|&v| v == 1.0), "{:?}", &a[..8]);
    let mut z: Vec<f32> = (0..128).map(|i| i as f32).collect();
    let orig = z.clone();
    low_resolution(&mut z, shape, 1.0).unwrap();
    assert_eq!(z, orig);
}

/// Not a timed assertion: prints how long a 64^3 rotated and scaled patch takes.
#[test]
#[ignore]
fn print_spatial_time_64() {
    let c = case([96, 96, 96]);
    let t = std::time::Instant::now();
    let p = spatial_sample(&c, [48.0; 3], [64; 3], [0.3, -0.2, 0.4], 1.2);
    eprintln!(
        "64^3 patch, 2 channels, rotation + scaling: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(p.shape, [64; 3]);
}
