//! `e2enc inspect`: parameter counts, MACs per layer and in total (dense and with pruned kernels
//! skipped), the graph as text or Graphviz.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use e2enc_ir::e2enet::{BuildOptions, Model, ParamRole, Part};
use e2enc_ir::stats::graph_stats;
use e2enc_ir::weights::write_atomic;

use crate::util::{giga, parse_patch, thousands};

/// Show what a model costs: parameters (dense and non-zero), MACs per layer and in total at a
/// patch size, dense and with pruned DSFF kernels skipped.
///
/// Without weights (a model.json naming no weights file) only dense counts are shown.
///
/// Example: e2enc inspect amos/model.json --patch 128 --layers --dot amos.dot
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// model.json (or a folder holding one).
    model: PathBuf,
    /// Patch size D,H,W (or N) to count MACs at; default: the model's patch_size.
    #[arg(long, value_parser = parse_patch)]
    patch: Option<[usize; 3]>,
    /// Print one line per convolution.
    #[arg(long)]
    layers: bool,
    /// Write the graph as Graphviz DOT to this file (`dot -Tsvg FILE > graph.svg`).
    #[arg(long)]
    dot: Option<PathBuf>,
    /// Print the graph in the IR text form.
    #[arg(long)]
    print_ir: bool,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let path = if a.model.is_dir() { a.model.join("model.json") } else { a.model.clone() };
    let opts = BuildOptions { batch: 1, patch: a.patch };
    let m = Model::load(&path, &opts)?;
    let g = &m.net.graph;
    let st = graph_stats(g, m.weights.as_ref());

    if a.print_ir {
        print!("{}", e2enc_ir::text::print(g));
    }
    if let Some(dot) = &a.dot {
        write_atomic(dot, e2enc_ir::dot::to_dot(g).as_bytes())?;
        eprintln!("wrote {}", dot.display());
    }

    let cfg = &m.config;
    let [d, h, w] = m.net.graph.node(g.inputs()[0].1).ty.shape[2..] else { unreachable!() };
    println!("model       {} ({})", path.display(), if cfg.name.is_empty() { "unnamed" } else { &cfg.name });
    let widths: Vec<String> = (0..cfg.num_levels()).map(|i| cfg.width(i).to_string()).collect();
    println!(
        "network     {} in -> {} classes, widths {}, {} fusion nodes, shift groups {}, kernel {:?}",
        cfg.in_channels,
        cfg.num_classes,
        widths.join("/"),
        (1..cfg.num_levels()).map(|j| cfg.num_levels() - j).sum::<usize>(),
        cfg.shift_groups,
        cfg.conv_kernel
    );
    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    for id in g.node_ids() {
        *ops.entry(g.node(id).op.mnemonic()).or_default() += 1;
    }
    let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("graph       {} nodes: {}", g.len(), ops.join(", "));

    let maskable: usize = m.net.params.iter().filter(|p| p.dsff).map(|p| p.numel()).sum();
    println!(
        "parameters  {} in {} tensors ({} DSFF-maskable)",
        thousands(st.params),
        st.weight_tensors,
        thousands(maskable as u64)
    );
    match st.nonzero_params {
        Some(nz) => println!(
            "non-zero    {} ({:.1}% of dense)",
            thousands(nz),
            100.0 * nz as f64 / st.params.max(1) as f64
        ),
        None => println!("non-zero    unknown (no weights file)"),
    }
    println!("MACs at {d}x{h}x{w}, batch 1:");
    println!("  dense                       {}", giga(st.dense_macs));
    if st.nonzero_params.is_some() {
        println!(
            "  pruned kernels skipped      {} ({:.1}% of dense)",
            giga(st.sparse_macs),
            100.0 * st.sparse_macs as f64 / st.dense_macs.max(1) as f64
        );
    }
    // By part, through the parameter specs.
    let spec: BTreeMap<&str, (Part, ParamRole)> =
        m.net.params.iter().map(|p| (p.name.as_str(), (p.part, p.role))).collect();
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
    for (name, dense, sparse) in &parts {
        println!("  {name:<27} {:>10} dense, {:>10} skipped", giga(*dense), giga(*sparse));
    }
    if a.layers {
        println!();
        println!(
            "{:<18} {:<17} {:<26} {:>9} {:>12} {:>12}",
            "layer", "op", "output", "live/all", "dense MACs", "sparse MACs"
        );
        for l in &st.layers {
            println!(
                "{:<18} {:<17} {:<26} {:>9} {:>12} {:>12}",
                l.label,
                l.op,
                format!("{:?}", l.out_shape),
                format!("{:.0}%", 100.0 * l.live_kernels as f64 / l.kernels.max(1) as f64),
                giga(l.dense_macs),
                giga(l.sparse_macs)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
