//! The training shift fusion keeps the meaning of whole training graphs (interpreter before vs
//! after, every forward output and every weight gradient) and leaves no shift node behind where
//! each shift feeds one convolution.

use std::collections::BTreeMap;

use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, BuildOptions, ModelConfig};
use e2enc_ir::init::init_weights;
use e2enc_ir::tensor::relative_error_l2;
use e2enc_ir::{interp, Graph, Op, Tensor};
use proptest::prelude::*;

use super::FuseShiftTraining;
use crate::{pipeline, Pass};

/// splitmix64 values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn config(levels: usize, width: usize, groups: usize, iso: bool) -> ModelConfig {
    let mut c = ModelConfig::small(levels, width, groups, iso);
    c.patch_size = [4, 8, 8];
    c
}

fn count(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.node_ids().filter(|&id| f(&g.node(id).op)).count()
}

/// Runs the training graph of `cfg` before and after the pass; returns (shift nodes before,
/// shift nodes after, worst relative L2 error over all outputs).
fn compare(cfg: &ModelConfig, seed: u64) -> (usize, usize, f64) {
    let net = build(cfg, &BuildOptions::default()).expect("valid config");
    let outs: Vec<String> = net.graph.outputs().iter().map(|o| o.0.clone()).collect();
    let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let tg = training_graph(&net.graph, &outs).expect("training graph");
    let w = init_weights(&net.params, seed);
    let mut feed = BTreeMap::new();
    for (k, (name, id)) in tg.graph.inputs().into_iter().enumerate() {
        let shape = tg.graph.node(id).ty.shape.clone();
        let v = noise(
            seed ^ ((k as u64 + 1) * 0x1234_5678),
            shape.iter().product(),
        );
        feed.insert(name, Tensor::from_f32(shape, v).unwrap());
    }
    let shifts = |g: &Graph| {
        count(g, |op| {
            matches!(op, Op::DepthShift(_) | Op::DepthShiftBackward(_))
        })
    };
    let mut fused = tg.graph.clone();
    let changed = pipeline::run(&mut fused, &pipeline::training()).expect("pass and verifier");
    assert_eq!(changed.is_empty(), shifts(&tg.graph) == 0);
    let want = interp::run(&tg.graph, &w, &feed, &[]).expect("interpreter before");
    let got = interp::run(&fused, &w, &feed, &[]).expect("interpreter after");
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    let worst = want
        .iter()
        .map(|(k, v)| relative_error_l2(&got[k], v).expect("same shapes"))
        .fold(0.0, f64::max);
    (shifts(&tg.graph), shifts(&fused), worst)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn training_graphs_keep_their_values_and_lose_their_shifts(
        levels in 2usize..=3,
        width in 3usize..=6,
        groups in prop::sample::select(vec![3usize, 5]),
        iso in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (before, after, err) = compare(&config(levels, width, groups, iso), seed);
        prop_assert!(before > 0, "the config has shifts");
        prop_assert_eq!(after, 0, "a shift or shift backward was left");
        prop_assert!(err < 1e-6, "relative L2 error {:.2e}", err);
    }
}

#[test]
fn every_shifted_conv_and_gradient_is_rewritten() {
    let cfg = config(3, 4, 3, true);
    let net = build(&cfg, &BuildOptions::default()).unwrap();
    let tg = training_graph(&net.graph, &["logits"]).unwrap();
    let mut g = tg.graph.clone();
    let shifts_before = count(&g, |op| matches!(op, Op::DepthShift(_)));
    assert!(FuseShiftTraining.run(&mut g).unwrap());
    let fused = count(
        &g,
        |op| matches!(op, Op::FusedConv3d(a) if !a.shifts.is_empty()),
    );
    let wgrads = count(
        &g,
        |op| matches!(op, Op::ConvBackwardWeight(a) if !a.shifts.is_empty()),
    );
    let dgrads = count(
        &g,
        |op| matches!(op, Op::ConvBackwardData(a) if !a.shifts.is_empty()),
    );
    assert_eq!(fused, shifts_before);
    assert_eq!(wgrads, shifts_before);
    // The first conv's input gradient is not computed (the image needs none).
    assert!(
        dgrads > 0 && dgrads <= shifts_before,
        "{dgrads} of {shifts_before}"
    );
    assert!(
        !FuseShiftTraining.run(&mut g).unwrap(),
        "a second run changes nothing"
    );
}

#[test]
fn a_shift_that_is_an_output_stays() {
    let cfg = config(2, 4, 3, true);
    let net = build(&cfg, &BuildOptions::default()).unwrap();
    let mut g = net.graph.clone();
    let s = g
        .node_ids()
        .find(|&id| matches!(g.node(id).op, Op::DepthShift(_)))
        .expect("a shift");
    g.set_output("shifted", s);
    FuseShiftTraining.run(&mut g).unwrap();
    assert!(g.contains(s), "the output shift was removed");
    assert_eq!(g.output("shifted"), Some(s));
    e2enc_ir::verify::verify(&g).unwrap();
}
