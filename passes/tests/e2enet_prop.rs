//! Random small E2ENets through the whole optimizer: the logits do not change (relative 1e-4)
//! and every conv unit is fused (no depth_shift, instance_norm or leaky_relu node remains).
//!
//! Configs vary the pooling (2 to 4 steps of (2,2,2) or (1,2,2)), widths, shift groups (1, 3,
//! 5), convs per stage, deep-supervision heads and the patch (the smallest the pooling allows,
//! doubled on axes where that is 4 or less).
//! Weights are He-initialized (`init_weights`), biases and norm parameters get non-trivial
//! values, DSFF masks come from `init_masks` at random densities, and on top of them whole
//! edges are zeroed explicitly: the down (max-pool) slice of some fusion convs, all or part of
//! the up (transposed-conv) slice of others. A fusion conv whose down edge is dead (and that
//! still reads something) must lose its max pool.

mod common;

use std::collections::BTreeMap;

use e2enc_ir::e2enet::model::apply_masks;
use e2enc_ir::e2enet::{build, BuildOptions, DsffConfig, ModelConfig, ParamRole};
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::stats::live_kernels;
use e2enc_ir::text::print;
use e2enc_ir::{Tensor, Weights};
use e2enc_passes::{optimize, OptimizeOptions};
use proptest::prelude::*;
use proptest::sample::Index;

/// The fusion nodes x(i, j) of an L-level network, column by column.
fn fusion_nodes(l: usize) -> Vec<(usize, usize)> {
    (1..l)
        .flat_map(|j| (0..l - j).map(move |i| (i, j)))
        .collect()
}

/// The weight of the first conv of fusion node x(i, j) (see `e2enet::build`).
fn fusion_weight(l: usize, i: usize, j: usize) -> String {
    format!("loc{}.{}.0.blocks.0.conv.weight", l - 1 - (i + j), j - 1)
}

#[derive(Debug, Clone)]
struct Case {
    cfg: ModelConfig,
    density: f64,
    level0: f64,
    /// Per fusion node: zero its down edge.
    kill_down: Vec<bool>,
    /// Per fusion node: 0 keep, 1 zero part of its up edge, 2 zero all of it.
    kill_up: Vec<u8>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(prop_oneof![Just([2usize, 2, 2]), Just([1, 2, 2])], 2..=4),
        2usize..=6,
        8usize..=16,
        prop_oneof![Just(1usize), Just(3), Just(5)],
        1usize..=3,
        any::<Index>(),
        (1usize..=3, 1usize..=2),
        (0.05f64..=1.0, 0.05f64..=1.0),
        (
            proptest::collection::vec(any::<bool>(), 10),
            proptest::collection::vec(0u8..3, 10),
        ),
        any::<u64>(),
    )
        .prop_map(
            |(pools, base, maxw, groups, convs, heads, (classes, in_ch), (d, d0), kills, seed)| {
                let mut cfg = ModelConfig::amos_ct();
                cfg.name = "e2enet-prop".into();
                let l = pools.len() + 1;
                let prod = |ax: usize| pools.iter().map(|p| p[ax]).product::<usize>();
                // The smallest patch the pooling allows, doubled on axes it leaves small.
                let ext = |ax: usize| {
                    if prod(ax) <= 4 {
                        2 * prod(ax)
                    } else {
                        prod(ax)
                    }
                };
                cfg.patch_size = [ext(0), ext(1), ext(2)];
                cfg.pool_kernels = pools;
                cfg.base_width = base;
                cfg.max_width = maxw;
                cfg.shift_groups = groups;
                cfg.convs_per_stage = convs;
                cfg.deep_supervision_heads = heads.index(l - 1);
                cfg.num_classes = classes;
                cfg.in_channels = in_ch;
                Case {
                    cfg,
                    density: d,
                    level0: d0,
                    kill_down: kills.0,
                    kill_up: kills.1,
                    seed,
                }
            },
        )
        // The builder refuses depth shifts that move every channel of a layer out of the
        // volume (more groups than channels on a shallow patch): no network to test.
        .prop_filter("a network the builder accepts", |c| {
            e2enc_ir::e2enet::build(&c.cfg, &e2enc_ir::e2enet::BuildOptions::default()).is_ok()
        })
}

/// He weights, non-trivial biases and norm parameters, DSFF masks, explicit dead edges.
/// Returns the weights and the fusion nodes whose down edge was zeroed.
fn weights(c: &Case, params: &[e2enc_ir::e2enet::ParamSpec]) -> (Weights, Vec<(usize, usize)>) {
    let mut w = init_weights(params, c.seed);
    for p in params {
        let v: Vec<f32> = (0..p.numel())
            .map(|i| common::nonzero(c.seed, &p.name, i))
            .collect();
        let v = match p.role {
            ParamRole::NormWeight => v.iter().map(|x| 1.0 + 0.25 * x).collect(),
            ParamRole::NormBias | ParamRole::ConvBias => v.iter().map(|x| 0.2 * x).collect(),
            _ => continue,
        };
        w.insert(
            p.name.clone(),
            Tensor::from_f32(p.shape.clone(), v).unwrap(),
        );
    }
    let d = DsffConfig {
        density: c.density,
        level0_density: c.level0,
    };
    apply_masks(&mut w, &init_masks(params, &d, c.seed));
    let l = c.cfg.num_levels();
    let mut dead_down = Vec::new();
    for (f, &(i, j)) in fusion_nodes(l).iter().enumerate() {
        let name = fusion_weight(l, i, j);
        let ci = c.cfg.width(i);
        if i > 0 && c.kill_down[f % c.kill_down.len()] {
            let down = (2 * ci, 2 * ci + c.cfg.width(i - 1));
            common::zero_kernels(&mut w, &name, None, Some(&[down])).unwrap();
            dead_down.push((i, j));
        }
        match c.kill_up[f % c.kill_up.len()] {
            1 => common::zero_kernels(&mut w, &name, None, Some(&[(ci, ci + ci.div_ceil(2))]))
                .unwrap(),
            2 => common::zero_kernels(&mut w, &name, None, Some(&[(ci, 2 * ci)])).unwrap(),
            _ => {}
        }
    }
    (w, dead_down)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
    ))]

    #[test]
    fn small_e2enets_keep_their_logits(c in case()) {
        let net = build(&c.cfg, &BuildOptions::default()).unwrap();
        let (w, dead_down) = weights(&c, &net.params);
        let opt = optimize(&net.graph, &w, &OptimizeOptions::default())
            .map_err(|e| TestCaseError::fail(format!("optimize: {e}")))?;
        let g = &opt.graph;
        let names: Vec<&str> = g.outputs().iter().map(|(n, _)| n.as_str()).collect();
        prop_assert_eq!(names, vec!["logits"]);
        for m in ["depth_shift", "instance_norm", "leaky_relu"] {
            prop_assert_eq!(common::count_ops(g, m), 0, "{} left in\n{}", m, print(g));
        }
        // A dead down edge takes its max pool with it, unless the fusion conv reads nothing
        // at all (then there is no narrower conv to rewrite it to).
        let l = c.cfg.num_levels();
        for (i, j) in dead_down {
            let reads_something = live_kernels(w.get(&fusion_weight(l, i, j)).unwrap()) > 0;
            let label = format!("x{i}_{j}.down");
            let has_pool = g.node_ids().any(|id| g.node(id).label.as_deref() == Some(&label));
            prop_assert!(
                !reads_something || !has_pool,
                "{} survived a dead edge\n{}", label, print(g)
            );
        }
        // (The optimized graph can execute more MACs than the original when a partly dead max
        // pool narrows a conv that is also read elsewhere: see regressions.rs, ignored.)
        let mut inf = net.graph.clone();
        e2enc_passes::pipeline::run(&mut inf, &e2enc_passes::pipeline::inference()).unwrap();

        let inputs: BTreeMap<String, Tensor> = common::seeded_inputs(&net.graph, c.seed ^ 7);
        common::same_outputs(&inf, &w, g, &opt.weights, &inputs)
            .map_err(|e| TestCaseError::fail(format!("{e}\nconfig: {:?}", c.cfg)))?;
    }
}
