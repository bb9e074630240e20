//! The released AMOS-CT configuration (6 levels, widths 48..320, 128^3) at DSFF density 0.2
//! (He weights and random masks, seed 0, as `e2enc init --density 0.2`): the optimizer leaves
//! no depth shift, and the optimized graph executes exactly the MACs of the original inference
//! graph with pruned kernels skipped (1011.8 G dense, 284.0 G with pruned kernels skipped; the
//! README quotes these numbers). A variant where node x1_1 reads nothing from its down edge loses
//! that max pool and that concat slice. Only statistics here: the interpreter would take far too
//! long on this model.

use std::sync::OnceLock;

use e2enc_ir::e2enet::model::apply_masks;
use e2enc_ir::e2enet::{build, BuildOptions, DsffConfig, E2ENet, ModelConfig};
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::stats::graph_stats;
use e2enc_ir::{Graph, Op, Weights};
use e2enc_passes::{optimize, pipeline, OptimizeOptions};

/// The network and its masked weights, built once for both tests.
fn amos() -> &'static (E2ENet, Weights) {
    static CELL: OnceLock<(E2ENet, Weights)> = OnceLock::new();
    CELL.get_or_init(|| {
        let net = build(&ModelConfig::amos_ct(), &BuildOptions::default()).unwrap();
        let mut w = init_weights(&net.params, 0);
        let d = DsffConfig {
            density: 0.2,
            level0_density: 0.2,
        };
        apply_masks(&mut w, &init_masks(&net.params, &d, 0));
        (net, w)
    })
}

fn count(g: &Graph, mnemonic: &str) -> usize {
    g.node_ids()
        .filter(|&id| g.node(id).op.mnemonic() == mnemonic)
        .count()
}

fn giga(x: u64) -> f64 {
    x as f64 / 1e9
}

#[test]
fn amos_ct_at_density_0_2_executes_only_live_kernels() {
    let (net, w) = amos();
    let mut inf = net.graph.clone();
    pipeline::run(&mut inf, &pipeline::inference()).unwrap();
    let before = graph_stats(&inf, Some(w));
    assert!(
        (giga(before.dense_macs) - 1011.8).abs() < 0.05,
        "{}",
        giga(before.dense_macs)
    );
    assert!(
        (giga(before.sparse_macs) - 284.0).abs() < 0.05,
        "{}",
        giga(before.sparse_macs)
    );

    let opt = optimize(&net.graph, w, &OptimizeOptions::default()).unwrap();
    assert_eq!(opt.report.stop_reason, "saturated", "{}", opt.report);
    assert_eq!(count(&opt.graph, "depth_shift"), 0);
    assert_eq!(count(&opt.graph, "instance_norm"), 0);
    assert_eq!(count(&opt.graph, "leaky_relu"), 0);
    let after = graph_stats(&opt.graph, Some(&opt.weights));
    assert_eq!(after.sparse_macs, before.sparse_macs, "{}", opt.report);
    // Sparse convs store only live kernels.
    assert_eq!(after.live_params, before.live_params);
}

#[test]
fn a_dead_down_edge_loses_its_max_pool_and_concat_slice() {
    let (net, w) = amos();
    // x1_1 = conv(shift(concat[x1_0 (96), up (96), maxpool(x0_0) (48)])): its first conv is
    // loc3.0.0 (z = 6 - 1 - 2, k = 0); input channels 192..240 read the down edge.
    let name = "loc3.0.0.blocks.0.conv.weight";
    let mut w2 = w.clone();
    let mut t = (**w2.get(name).unwrap()).clone();
    assert_eq!(t.shape(), &[96, 240, 1, 3, 3]);
    let data = t.as_f32_mut().unwrap();
    for o in 0..96 {
        for i in 192..240 {
            let k = (o * 240 + i) * 9;
            data[k..k + 9].fill(0.0);
        }
    }
    w2.insert(name, t);

    let base = optimize(&net.graph, w, &OptimizeOptions::default()).unwrap();
    let opt = optimize(&net.graph, &w2, &OptimizeOptions::default()).unwrap();
    let g = &opt.graph;
    let has_label = |g: &Graph, l: &str| {
        g.node_ids()
            .any(|id| g.node(id).label.as_deref() == Some(l))
    };
    assert!(has_label(&base.graph, "x1_1.down"));
    assert!(!has_label(g, "x1_1.down"));
    assert_eq!(count(g, "max_pool3d") + 1, count(&base.graph, "max_pool3d"));
    assert_eq!(count(g, "depth_shift"), 0);

    // The fused conv of x1_1 reads a concat of the forward and up edges only.
    let x11 = g
        .node_ids()
        .find(|&id| g.node(id).label.as_deref() == Some("x1_1.u0"))
        .expect("x1_1's first conv");
    assert!(matches!(g.node(x11).op, Op::FusedConv3d(_)));
    let cat = g.operands(x11)[0];
    assert_eq!(g.node(cat).op, Op::Concat);
    assert_eq!(g.node(cat).ty.shape[1], 192);
    assert_eq!(g.operands(cat).len(), 2);
    let mut inf = net.graph.clone();
    pipeline::run(&mut inf, &pipeline::inference()).unwrap();
    assert_eq!(
        graph_stats(g, Some(&opt.weights)).sparse_macs,
        graph_stats(&inf, Some(&w2)).sparse_macs
    );
}
