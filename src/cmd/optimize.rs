//! `e2enc optimize`: runs the optimization pipeline on a model and prints the optimized graph in
//! the IR text form (and, with --report, what the optimizer did).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_passes::{optimize, OptimizeOptions};

use crate::util::parse_patch;

/// Optimize a model and print the optimized graph as IR text
///
/// Drops dead DSFF edges and channels, makes kernel-sparse convolutions, fuses the depth shift
/// into the convolutions after it and norm + activation into the convolutions before them
/// (equality saturation with egg), then prints the optimized graph as IR text.
///
/// The inference graph keeps only `logits`; --deep-supervision keeps every head.
///
/// Example: e2enc optimize amos/model.json --report > amos.opt.e2ir
#[derive(clap::Args)]
pub struct Args {
    /// model.json (or a folder holding one); it must name a weights file.
    model: PathBuf,
    /// Patch size D,H,W (or N) to build the graph for; default: the model's patch_size.
    #[arg(long, value_parser = parse_patch)]
    patch: Option<[usize; 3]>,
    /// Keep the deep-supervision outputs (the training graph).
    #[arg(long)]
    deep_supervision: bool,
    /// Print the optimizer's report (stop reason, e-graph size, rewrites fired, time) to stderr.
    #[arg(long)]
    report: bool,
    /// Run only these rules (comma-separated), e.g. fuse-shift,lift-conv.
    #[arg(long, value_delimiter = ',')]
    rules: Option<Vec<String>>,
    /// Equality-saturation iteration limit.
    #[arg(long, default_value_t = 40)]
    iter_limit: usize,
    /// E-graph node limit.
    #[arg(long, default_value_t = 200_000)]
    node_limit: usize,
    /// Time limit in seconds.
    #[arg(long, default_value_t = 20.0)]
    time_limit: f64,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let path = if a.model.is_dir() {
        a.model.join("model.json")
    } else {
        a.model.clone()
    };
    let m = Model::load(
        &path,
        &BuildOptions {
            batch: 1,
            patch: a.patch,
        },
    )?;
    let w = m.require_weights()?;
    let opts = OptimizeOptions {
        keep_outputs: (!a.deep_supervision).then(|| vec!["logits".to_string()]),
        rules: a.rules.clone(),
        iter_limit: a.iter_limit,
        node_limit: a.node_limit,
        time_limit: std::time::Duration::from_secs_f64(a.time_limit.max(0.0)),
    };
    let o = optimize(&m.net.graph, w, &opts)?;
    print!("{}", e2enc_ir::text::print(&o.graph));
    if a.report {
        eprint!("{}", o.report);
    }
    Ok(ExitCode::SUCCESS)
}
