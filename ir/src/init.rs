//! Random initialisation as the released code does it, and kernel-level DSFF masks.
//!
//! Weights: `kaiming_normal_(a = 0.01)` (fan-in mode, PyTorch's fan-in rule `shape[1] * kernel
//! volume`, which for transposed convs is their *output* channels, as in PyTorch) for every conv,
//! transposed conv and head; biases 0; instance-norm weight 1 and bias 0. Masks: each DSFF tensor
//! keeps `round(d0 * d1 * density)` of its [d0, d1] kernels, chosen uniformly at random; level-0
//! fusion convs use `level0_density` (the released code hard-codes 0.2 for them). Everything is
//! seeded (ChaCha8), so the same seed gives the same files.

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::e2enet::{DsffConfig, ParamRole, ParamSpec};
use crate::tensor::Tensor;
use crate::weights::Weights;

/// The negative slope `a` of the He initialisation (`InitWeights_He(1e-2)`).
pub const HE_NEG_SLOPE: f64 = 0.01;

/// He-initialized weights for `params`.
pub fn init_weights(params: &[ParamSpec], seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = Weights::new();
    for p in params {
        let n = p.numel();
        let data = match p.role {
            ParamRole::ConvWeight | ParamRole::UpWeight | ParamRole::HeadWeight => {
                let fan_in: usize = p.shape[1] * p.shape[2..].iter().product::<usize>();
                let gain = (2.0 / (1.0 + HE_NEG_SLOPE * HE_NEG_SLOPE)).sqrt();
                let std = gain / (fan_in as f64).sqrt();
                let normal = Normal::new(0.0, std).expect("finite std");
                (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
            }
            ParamRole::ConvBias | ParamRole::NormBias => vec![0.0; n],
            ParamRole::NormWeight => vec![1.0; n],
        };
        w.insert(
            &p.name,
            Tensor::from_f32(p.shape.clone(), data).expect("shape matches"),
        );
    }
    w
}

/// The density a DSFF tensor is initialised at.
pub fn layer_density(p: &ParamSpec, d: &DsffConfig) -> f64 {
    if p.role == ParamRole::ConvWeight && p.level == 0 {
        d.level0_density
    } else {
        d.density
    }
}

/// Kernel-level masks (f32 0/1 of shape `[d0, d1]`) for every DSFF tensor.
pub fn init_masks(params: &[ParamSpec], d: &DsffConfig, seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d61_736b);
    let mut m = Weights::new();
    for p in params.iter().filter(|p| p.dsff) {
        let kernels = p.shape[0] * p.shape[1];
        let keep = ((kernels as f64) * layer_density(p, d)).round() as usize;
        let keep = keep.min(kernels);
        let mut data = vec![0.0f32; kernels];
        for i in sample(&mut rng, kernels, keep) {
            data[i] = 1.0;
        }
        m.insert(
            &p.name,
            Tensor::from_f32(vec![p.shape[0], p.shape[1]], data).expect("shape"),
        );
    }
    m
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift64 seeded by `seed`): reproducible
/// data for tests and benchmarks across the crates, with no RNG dependency.
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
