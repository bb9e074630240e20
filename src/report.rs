//! The size-and-cost summary printed by `inspect` and `demo`: parameters (dense and with pruned
//! kernels removed) over the whole model, MACs of the inference graph (or of the training graph
//! with all deep-supervision heads), dense and with pruned kernels skipped, split by part.

use std::collections::BTreeMap;

use anyhow::Result;
use e2enc_ir::e2enet::{E2ENet, ModelConfig, ParamRole, Part};
use e2enc_ir::stats::{graph_stats, GraphStats};
use e2enc_ir::{Graph, Weights};

use crate::util::{giga, thousands};

/// The graph MACs are counted on: only `logits` at inference, every head with `deep_supervision`.
pub fn costed_graph(net: &E2ENet, deep_supervision: bool) -> Result<Graph> {
    let mut g = net.graph.clone();
    if !deep_supervision {
        e2enc_passes::pipeline::run(&mut g, &e2enc_passes::pipeline::inference())?;
    }
    Ok(g)
}

/// Prints the summary and returns the MAC statistics of the costed graph.
pub fn print_summary(
    cfg: &ModelConfig,
    net: &E2ENet,
    weights: Option<&Weights>,
    deep_supervision: bool,
) -> Result<GraphStats> {
    let full = graph_stats(&net.graph, weights);
    let g = costed_graph(net, deep_supervision)?;
    let st = graph_stats(&g, weights);
    let widths: Vec<String> = (0..cfg.num_levels())
        .map(|i| cfg.width(i).to_string())
        .collect();
    let fusion_nodes: usize = (1..cfg.num_levels()).map(|j| cfg.num_levels() - j).sum();
    println!(
        "network     {} in -> {} classes, widths {}, {fusion_nodes} fusion nodes, shift groups {}, kernel {:?}",
        cfg.in_channels,
        cfg.num_classes,
        widths.join("/"),
        cfg.shift_groups,
        cfg.conv_kernel
    );
    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    for id in net.graph.node_ids() {
        *ops.entry(net.graph.node(id).op.mnemonic()).or_default() += 1;
    }
    let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("graph       {} nodes: {}", net.graph.len(), ops.join(", "));
    let maskable: usize = net
        .params
        .iter()
        .filter(|p| p.dsff)
        .map(|p| p.numel())
        .sum();
    println!(
        "parameters  {} in {} tensors ({} DSFF-maskable)",
        thousands(full.params),
        full.weight_tensors,
        thousands(maskable as u64)
    );
    match full.live_params {
        Some(live) => println!(
            "            {} with pruned kernels removed ({:.1}%)",
            thousands(live),
            100.0 * live as f64 / full.params.max(1) as f64
        ),
        None => println!("            (no weights file: sparse counts unavailable)"),
    }
    let input = &g.node(g.inputs()[0].1).ty.shape;
    println!(
        "MACs        at {}x{}x{}, batch {}, {}:",
        input[2],
        input[3],
        input[4],
        input[0],
        if deep_supervision {
            "all heads (training graph)"
        } else {
            "logits only (inference graph)"
        }
    );
    let spec: BTreeMap<&str, (Part, ParamRole)> = net
        .params
        .iter()
        .map(|p| (p.name.as_str(), (p.part, p.role)))
        .collect();
    let mut parts: Vec<(&str, u64, u64)> = vec![
        ("backbone convs", 0, 0),
        ("fusion convs", 0, 0),
        ("transposed convs", 0, 0),
        ("heads", 0, 0),
    ];
    for l in &st.layers {
        let idx = match spec.get(l.weight.as_str()) {
            Some((_, ParamRole::UpWeight)) => 2,
            Some((Part::Fusion, _)) => 1,
            Some((Part::Head, _)) => 3,
            _ => 0,
        };
        parts[idx].1 += l.dense_macs;
        parts[idx].2 += l.sparse_macs;
    }
    let sparse_known = st.live_params.is_some();
    let line = |name: &str, dense: u64, sparse: u64| {
        if sparse_known {
            println!(
                "  {name:<18} {:>10} dense {:>10} with pruned kernels skipped",
                giga(dense),
                giga(sparse)
            );
        } else {
            println!("  {name:<18} {:>10} dense", giga(dense));
        }
    };
    line("total", st.dense_macs, st.sparse_macs);
    for (name, dense, sparse) in &parts {
        line(name, *dense, *sparse);
    }
    Ok(st)
}

/// Prints what optimization removed: parameters stored, MACs executed, DSFF edges and concat
/// channels, and nodes by op.
pub fn print_removed(before: &Graph, before_w: &Weights, after: &Graph, after_w: &Weights) {
    let b = graph_stats(before, Some(before_w));
    let a = graph_stats(after, Some(after_w));
    let concat = |g: &Graph| -> (usize, usize) {
        g.node_ids()
            .filter(|&id| g.node(id).op == e2enc_ir::Op::Concat)
            .fold((0, 0), |(e, c), id| {
                (e + g.operands(id).len(), c + g.node(id).ty.shape[1])
            })
    };
    let count = |g: &Graph, m: &str| {
        g.node_ids()
            .filter(|&id| g.node(id).op.mnemonic() == m)
            .count()
    };
    let (eb, cb) = concat(before);
    let (ea, ca) = concat(after);
    println!("optimized (what the compiled model stores and executes):");
    println!(
        "  parameters stored   {} -> {} ({} removed)",
        thousands(b.params),
        thousands(a.params),
        thousands(b.params.saturating_sub(a.params))
    );
    println!(
        "  MACs executed       {} -> {} ({:.1}% of dense)",
        giga(b.dense_macs),
        giga(a.sparse_macs),
        100.0 * a.sparse_macs as f64 / b.dense_macs.max(1) as f64
    );
    println!(
        "  DSFF concat edges   {eb} -> {ea} ({} dead edges dropped)",
        eb.saturating_sub(ea)
    );
    println!(
        "  concat channels     {cb} -> {ca} ({} channels no live kernel reads removed)",
        cb.saturating_sub(ca)
    );
    let mut line = Vec::new();
    for m in [
        "depth_shift",
        "conv3d",
        "conv_transpose3d",
        "instance_norm",
        "leaky_relu",
        "max_pool3d",
        "fused_conv3d",
    ] {
        let (x, y) = (count(before, m), count(after, m));
        if x != y {
            line.push(format!("{m} {x} -> {y}"));
        }
    }
    println!("  nodes               {}", line.join(", "));
}
