//! `e2enc inspect`: parameter counts, MACs per layer and in total (dense and with pruned kernels
//! skipped), the graph as text or Graphviz.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_ir::weights::write_atomic;

use e2enc_passes::{optimize, OptimizeOptions};

use crate::report::{costed_graph, print_removed, print_summary};
use crate::util::{giga, parse_patch};

/// Show what a model costs: parameters and MACs, per layer and in total
///
/// Counts parameters (dense and non-zero) and MACs per layer and in total at a patch size,
/// dense and with pruned DSFF kernels skipped.
///
/// Without weights (a model.json naming no weights file) only dense counts are shown.
///
/// Example: e2enc inspect amos/model.json --patch 128 --layers --dot amos.dot
#[derive(clap::Args)]
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
    /// Count MACs of the training graph (all deep-supervision heads) instead of inference.
    #[arg(long)]
    deep_supervision: bool,
    /// Also optimize the graph and show what was removed (parameters, MACs, edges, channels);
    /// --layers, --dot and --print-ir then show the optimized graph.
    #[arg(long)]
    optimized: bool,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let path = if a.model.is_dir() {
        a.model.join("model.json")
    } else {
        a.model.clone()
    };
    let opts = BuildOptions {
        batch: 1,
        patch: a.patch,
    };
    let m = Model::load(&path, &opts)?;
    let g = &m.net.graph;

    if !a.optimized {
        if a.print_ir {
            print!("{}", e2enc_ir::text::print(g));
        }
        if let Some(dot) = &a.dot {
            write_atomic(dot, e2enc_ir::dot::to_dot(g).as_bytes())?;
            eprintln!("wrote {}", dot.display());
        }
    }

    println!(
        "model       {} ({})",
        path.display(),
        if m.config.name.is_empty() {
            "unnamed"
        } else {
            &m.config.name
        }
    );
    let mut st = print_summary(&m.config, &m.net, m.weights.as_ref(), a.deep_supervision)?;
    if a.optimized {
        let w = m.require_weights()?;
        let before = costed_graph(&m.net, a.deep_supervision)?;
        let opts = OptimizeOptions {
            keep_outputs: None,
            ..OptimizeOptions::default()
        };
        let o = optimize(&before, w, &opts)?;
        print_removed(&before, w, &o.graph, &o.weights);
        st = e2enc_ir::stats::graph_stats(&o.graph, Some(&o.weights));
        if a.print_ir {
            print!("{}", e2enc_ir::text::print(&o.graph));
        }
        if let Some(dot) = &a.dot {
            write_atomic(dot, e2enc_ir::dot::to_dot(&o.graph).as_bytes())?;
            eprintln!("wrote {}", dot.display());
        }
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
                format!(
                    "{:.0}%",
                    100.0 * l.live_kernels as f64 / l.kernels.max(1) as f64
                ),
                giga(l.dense_macs),
                giga(l.sparse_macs)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
