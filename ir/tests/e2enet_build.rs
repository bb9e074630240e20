//! The E2ENet builder and model.json: official names and shapes, the published parameter and
//! MAC counts, DSFF masks, He init, and the errors bad configs and checkpoints get.

use std::collections::BTreeMap;

use e2enc_ir::e2enet::model::{apply_masks, check_masks, check_weights};
use e2enc_ir::e2enet::{build, BuildOptions, DsffConfig, ModelConfig, ParamRole, Part};
use e2enc_ir::init::{init_masks, init_weights, layer_density};
use e2enc_ir::stats::{graph_stats, live_kernels};
use e2enc_ir::{verify, Op, Tensor};

fn amos() -> e2enc_ir::e2enet::E2ENet {
    build(&ModelConfig::amos_ct(), &BuildOptions::default()).unwrap()
}

#[test]
fn amos_parameters_have_the_official_names_and_shapes() {
    let official: BTreeMap<String, Vec<usize>> = include_str!("data/amos_official_params.txt")
        .lines()
        .map(|l| {
            let (name, shape) = l.split_once(' ').unwrap();
            let shape = shape
                .trim_matches(['[', ']'])
                .split(", ")
                .map(|d| d.parse().unwrap())
                .collect();
            (name.to_string(), shape)
        })
        .collect();
    assert_eq!(official.len(), 147);
    let net = amos();
    let ours: BTreeMap<String, Vec<usize>> = net
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    assert_eq!(ours.len(), net.params.len(), "parameter names are unique");
    assert_eq!(ours, official);
}

#[test]
fn amos_counts_match_the_published_figures() {
    let net = amos();
    verify::verify(&net.graph).unwrap();
    let dense = graph_stats(&net.graph, None);
    assert_eq!(dense.params, 23_899_088);
    let maskable: usize = net
        .params
        .iter()
        .filter(|p| p.dsff)
        .map(|p| p.numel())
        .sum();
    assert_eq!(maskable, 18_067_200);
    let fusion_conv: usize = net
        .params
        .iter()
        .filter(|p| p.dsff && p.role == ParamRole::ConvWeight)
        .map(|p| p.numel())
        .sum();
    assert_eq!(fusion_conv, 13_360_896);

    // MACs of the inference graph (logits head only): 1011.8 G.
    let mut g = net.graph.clone();
    g.retain_outputs(&["logits"]);
    let roots: Vec<_> = g.outputs().iter().map(|o| o.1).collect();
    let live = g.ancestors(&roots);
    for id in g.node_ids().collect::<Vec<_>>() {
        if !live.contains(&id) {
            g.remove_node(id);
        }
    }
    let inf = graph_stats(&g, None);
    assert_eq!((inf.dense_macs as f64 / 1e8).round() / 10.0, 1011.8);
    // All four heads: about 0.5 G more.
    let extra = dense.dense_macs - inf.dense_macs;
    assert!((0.4e9..0.6e9).contains(&(extra as f64)), "{extra}");

    // Density 0.2: 9.45M parameters with pruned kernels removed, about 284 G MACs.
    let mut w = init_weights(&net.params, 7);
    let d = DsffConfig {
        density: 0.2,
        level0_density: 0.2,
    };
    apply_masks(&mut w, &init_masks(&net.params, &d, 7));
    let sparse = graph_stats(&g, Some(&w));
    let live_params = graph_stats(&net.graph, Some(&w)).live_params.unwrap();
    assert_eq!((live_params as f64 / 1e4).round() / 100.0, 9.45);
    assert_eq!((sparse.sparse_macs as f64 / 1e9).round(), 284.0);
}

#[test]
fn amos_graph_has_the_published_topology() {
    let net = amos();
    let g = &net.graph;
    let count = |m: &str| {
        g.node_ids()
            .filter(|&id| g.node(id).op.mnemonic() == m)
            .count()
    };
    assert_eq!(count("concat"), 15, "15 fusion nodes");
    assert_eq!(count("conv_transpose3d"), 15);
    assert_eq!(
        count("max_pool3d"),
        10,
        "nodes above level 0 have a downward flow"
    );
    // 12 backbone + 15 fusion + 5 second units on the last diagonal = 32 conv units.
    assert_eq!(count("depth_shift"), 32);
    assert_eq!(count("conv3d"), 32 + 4);
    let outs: Vec<(&str, Vec<usize>)> = g
        .outputs()
        .iter()
        .map(|(n, id)| (n.as_str(), g.node(*id).ty.shape.clone()))
        .collect();
    assert_eq!(
        outs,
        vec![
            ("logits", vec![1, 16, 128, 128, 128]),
            ("ds1", vec![1, 16, 64, 64, 64]),
            ("ds2", vec![1, 16, 32, 32, 32]),
            ("ds3", vec![1, 16, 16, 16, 16]),
        ]
    );
    // Every concat is [forward, up, down] in that order.
    for id in g.node_ids() {
        if g.node(id).op == Op::Concat {
            let ops = g.operands(id);
            assert!(matches!(g.node(ops[1]).op, Op::ConvTranspose3d(_)));
            if ops.len() == 3 {
                assert!(matches!(g.node(ops[2]).op, Op::MaxPool3d(_)));
            }
        }
    }
}

#[test]
fn other_configs_build_and_verify() {
    let mut cfg = ModelConfig::amos_ct();
    cfg.base_width = 2;
    cfg.max_width = 8;
    for (pools, shift, units, heads, patch) in [
        (vec![[2, 2, 2]; 2], 3, 1, 0, [8, 8, 8]),
        (vec![[1, 2, 2], [2, 2, 2], [2, 2, 2]], 5, 3, 2, [4, 16, 24]),
        (vec![[2, 2, 2]; 5], 1, 2, 4, [32, 32, 32]),
    ] {
        cfg.pool_kernels = pools;
        cfg.shift_groups = shift;
        cfg.convs_per_stage = units;
        cfg.deep_supervision_heads = heads;
        cfg.patch_size = patch;
        let net = build(
            &cfg,
            &BuildOptions {
                batch: 2,
                patch: None,
            },
        )
        .unwrap();
        verify::verify(&net.graph).unwrap();
        assert_eq!(net.graph.outputs().len(), heads + 1);
        let shifts = net
            .graph
            .node_ids()
            .filter(|&id| matches!(net.graph.node(id).op, Op::DepthShift(_)))
            .count();
        if shift == 1 {
            assert_eq!(shifts, 0, "shift_groups 1 means no shift");
        }
        let names: std::collections::HashSet<_> = net.params.iter().map(|p| &p.name).collect();
        assert_eq!(names.len(), net.params.len());
    }
}

#[test]
fn config_errors_name_the_field() {
    let base = ModelConfig::amos_ct().to_json();
    let cases: Vec<(String, &str)> = vec![
        (
            base.replace("\"in_channels\": 1", "\"in_channels\": 1, \"colour\": 3"),
            "unknown field `colour`",
        ),
        (
            base.replace("\"in_channels\": 1", "\"in_channels\": \"one\""),
            "invalid type",
        ),
        (
            base.replace("\"version\": 1", "\"version\": 9"),
            "`version` 9",
        ),
        (
            base.replace("\"format\": \"e2enc-model\"", "\"format\": \"onnx\""),
            "`format`",
        ),
        (
            base.replace("128,\n    128,\n    128", "128,\n    100,\n    128"),
            "`patch_size`",
        ),
        (
            base.replace("\"shift_groups\": 5", "\"shift_groups\": 0"),
            "`shift_groups`",
        ),
        (
            base.replace(
                "\"deep_supervision_heads\": 3",
                "\"deep_supervision_heads\": 5",
            ),
            "`deep_supervision_heads`",
        ),
        (
            base.replace("\"max_width\": 320", "\"max_width\": 8"),
            "`max_width`",
        ),
        (
            base.replace("\"num_classes\": 16", "\"num_classes\": 0"),
            "`num_classes`",
        ),
        (
            base.replace("1,\n    3,\n    3", "1,\n    2,\n    3"),
            "`conv_kernel`",
        ),
        (
            base.replace("\"in_channels\": 1,", ""),
            "missing field `in_channels`",
        ),
        ("{".to_string(), "EOF"),
    ];
    for (text, want) in cases {
        assert_ne!(text, base, "case for {want} did not change the config");
        let err = ModelConfig::from_json(&text, "m.json")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m.json: "), "{err}");
        assert!(err.contains(want), "expected `{want}` in: {err}");
    }
    assert_eq!(
        ModelConfig::from_json(&base, "m.json").unwrap(),
        ModelConfig::amos_ct()
    );
}

#[test]
fn weight_problems_name_the_tensor() {
    let mut cfg = ModelConfig::amos_ct();
    cfg.base_width = 2;
    cfg.max_width = 4;
    let net = build(&cfg, &BuildOptions::default()).unwrap();
    let w = init_weights(&net.params, 1);
    check_weights(&net.params, &w).unwrap();

    let mut missing = w.clone();
    missing.remove("up2.1.weight");
    let e = check_weights(&net.params, &missing).unwrap_err();
    assert!(e.contains("missing tensor `up2.1.weight`"), "{e}");

    let mut wrong = w.clone();
    wrong.insert(
        "seg_outputs.0.weight",
        Tensor::from_f32([3, 2, 1, 1, 1], vec![0.0; 6]).unwrap(),
    );
    let e = check_weights(&net.params, &wrong).unwrap_err();
    assert!(
        e.contains(
            "`seg_outputs.0.weight` has shape [3, 2, 1, 1, 1], the config implies [16, 2, 1, 1, 1]"
        ),
        "{e}"
    );

    let mut extra = w.clone();
    extra.insert("module.extra", Tensor::from_f32([1], vec![0.0]).unwrap());
    let e = check_weights(&net.params, &extra).unwrap_err();
    assert!(e.contains("module.extra"), "{e}");
}

#[test]
fn masks_keep_the_density_and_zero_whole_kernels() {
    let mut cfg = ModelConfig::amos_ct();
    cfg.base_width = 8;
    cfg.max_width = 32;
    let net = build(&cfg, &BuildOptions::default()).unwrap();
    let d = DsffConfig {
        density: 0.3,
        level0_density: 0.2,
    };
    let masks = init_masks(&net.params, &d, 3);
    check_masks(&net.params, &masks).unwrap();
    let mut w = init_weights(&net.params, 3);
    apply_masks(&mut w, &masks);
    for p in &net.params {
        let t = w.get(&p.name).unwrap();
        if p.dsff {
            let kernels = p.shape[0] * p.shape[1];
            let want = (kernels as f64 * layer_density(p, &d)).round() as usize;
            assert_eq!(live_kernels(t), want, "{}", p.name);
            let m = masks.get(&p.name).unwrap();
            assert_eq!(
                m.as_f32().unwrap().iter().filter(|v| **v == 1.0).count(),
                want
            );
            if p.level == 0 && p.role == ParamRole::ConvWeight {
                assert_eq!(layer_density(p, &d), 0.2);
            }
        } else {
            assert!(masks.get(&p.name).is_none());
            if p.role == ParamRole::ConvWeight || p.role == ParamRole::HeadWeight {
                assert_eq!(
                    live_kernels(t),
                    p.shape[0] * p.shape[1],
                    "{} stays dense",
                    p.name
                );
            }
        }
    }
    // Same seed, same masks; another seed, other masks.
    let again = init_masks(&net.params, &d, 3);
    let other = init_masks(&net.params, &d, 4);
    let same = |a: &e2enc_ir::Weights, b: &e2enc_ir::Weights| {
        a.iter().all(|(k, v)| b.get(k).unwrap() == v)
    };
    assert!(same(&masks, &again));
    assert!(!same(&masks, &other));

    // A mask on a backbone conv is refused.
    let mut bad = masks.clone();
    bad.insert(
        "conv_blocks_context.0.blocks.0.conv.weight",
        Tensor::from_f32([8, 1], vec![1.0; 8]).unwrap(),
    );
    assert!(check_masks(&net.params, &bad)
        .unwrap_err()
        .contains("only DSFF"));
}

#[test]
fn he_init_has_the_released_statistics() {
    let net = amos();
    let w = init_weights(&net.params, 11);
    for p in &net.params {
        let t = w.get(&p.name).unwrap().as_f32().unwrap().to_vec();
        match p.role {
            ParamRole::ConvBias | ParamRole::NormBias => assert!(t.iter().all(|v| *v == 0.0)),
            ParamRole::NormWeight => assert!(t.iter().all(|v| *v == 1.0)),
            _ if t.len() > 100_000 => {
                let fan_in = (p.shape[1] * p.shape[2..].iter().product::<usize>()) as f64;
                let want = (2.0 / (1.0 + 1e-4) / fan_in).sqrt();
                let n = t.len() as f64;
                let mean = t.iter().map(|v| *v as f64).sum::<f64>() / n;
                let std = (t.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
                assert!(
                    (std / want - 1.0).abs() < 0.01,
                    "{}: std {std} vs {want}",
                    p.name
                );
                assert!(mean.abs() < 0.01 * want, "{}", p.name);
            }
            _ => {}
        }
        assert!(p.part != Part::Head || p.role == ParamRole::HeadWeight);
    }
}

#[test]
fn shift_groups_that_zero_every_channel_are_refused() {
    let mut cfg = ModelConfig::amos_ct();
    cfg.base_width = 4;
    cfg.max_width = 8;
    cfg.pool_kernels = vec![[2, 2, 2]; 2];
    cfg.deep_supervision_heads = 0;
    cfg.patch_size = [8, 8, 8];
    let opts = BuildOptions {
        batch: 1,
        patch: None,
    };
    // More groups than channels: every channel moves by 8 slices or more, out of the volume.
    cfg.shift_groups = 24;
    let err = match build(&cfg, &opts) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("24 shift groups on 4 channels built"),
    };
    assert!(
        err.contains("shift_groups") && err.contains("only zeros"),
        "{err}"
    );
    // Some channels out, others kept: a legal (if wasteful) network.
    cfg.shift_groups = 5;
    assert!(build(&cfg, &opts).is_ok());
}
