//! The probing loss of the whole-step tests (`train_backends.rs`, `train_memory.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use e2enc_ir::init::noise;
use e2enc_ir::Tensor;

/// `L = Σ_out <out, r_out>` with fixed random `r_out` (`noise` seeded `seed + k` for the k-th
/// output in name order): the loss and its gradient per output, `r_out` itself.
#[allow(clippy::type_complexity)]
pub fn probe_loss(
    outs: &BTreeMap<String, Arc<Tensor>>,
    seed: u64,
) -> Result<(f64, BTreeMap<String, Tensor>), e2enc_train::TrainError> {
    let mut loss = 0.0;
    let mut grads = BTreeMap::new();
    for (k, (name, t)) in outs.iter().enumerate() {
        let r = noise(t.numel(), seed + k as u64);
        let v = t.as_f32().unwrap();
        loss += v
            .iter()
            .zip(&r)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum::<f64>();
        grads.insert(
            name.clone(),
            Tensor::from_f32(t.shape().to_vec(), r).unwrap(),
        );
    }
    Ok((loss, grads))
}
