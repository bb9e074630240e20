//! The inference preset keeps only `logits` and removes the deep-supervision heads, and the
//! logits do not change.

use std::collections::BTreeMap;

use e2enc_ir::e2enet::{build, BuildOptions, ModelConfig};
use e2enc_ir::init::init_weights;
use e2enc_ir::{interp, Op, Tensor};
use e2enc_passes::pipeline;

#[test]
fn inference_preset_drops_the_heads_and_keeps_the_logits() {
    let mut cfg = ModelConfig::amos_ct();
    cfg.base_width = 2;
    cfg.max_width = 8;
    cfg.num_classes = 3;
    cfg.patch_size = [32, 32, 32];
    let net = build(&cfg, &BuildOptions::default()).unwrap();
    let w = init_weights(&net.params, 0);
    let mut g = net.graph.clone();
    let changed = pipeline::run(&mut g, &pipeline::inference()).unwrap();
    assert_eq!(changed, ["keep-outputs", "dead-code"]);
    let names: Vec<&str> = g.outputs().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["logits"]);
    let heads = |g: &e2enc_ir::Graph| {
        g.weights()
            .iter()
            .filter(|(n, _)| n.starts_with("seg_outputs"))
            .count()
    };
    assert_eq!(heads(&net.graph), 4);
    assert_eq!(heads(&g), 1);
    // The last diagonal x(3,2) → x(2,3) → x(1,4) → x(0,5) feeds the logits through the upward
    // flows, so only the three auxiliary heads and their weights go.
    assert_eq!(net.graph.len() - g.len(), 6);
    assert!(g
        .node_ids()
        .all(|id| !matches!(g.node(id).op, Op::Input { .. }) || g.users(id).len() == 1));

    let n = 32 * 32 * 32;
    let x = Tensor::from_f32(
        [1, 1, 32, 32, 32],
        (0..n).map(|i| (i % 13) as f32 - 6.0).collect(),
    )
    .unwrap();
    let feed: BTreeMap<String, Tensor> = [("input".to_string(), x)].into();
    let full = interp::run(&net.graph, &w, &feed, &["logits"]).unwrap();
    let pruned = interp::run(&g, &w, &feed, &[]).unwrap();
    assert_eq!(full["logits"], pruned["logits"]);

    // A second run changes nothing; an unknown output is an error.
    assert!(pipeline::run(&mut g, &pipeline::inference())
        .unwrap()
        .is_empty());
    let err = pipeline::run(
        &mut g,
        &[Box::new(e2enc_passes::dce::KeepOutputs(vec!["ds9".into()]))],
    )
    .unwrap_err();
    assert!(err.to_string().contains("no output named `ds9`"), "{err}");
}
