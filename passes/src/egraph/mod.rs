//! Equality saturation over E2ENet graphs: the graph goes into an e-graph ([`convert`]), the
//! rule tables ([`rules`]) run under explicit limits, the cheapest equivalent graph is extracted
//! with a DAG-aware cost ([`cost`], [`extract`]) and converted back, with derived weights
//! (narrowed, packed) materialized. [`optimize`] is the entry point; its [`Report`] says why the
//! runner stopped, how big the e-graph got, which rules fired and how long it took.

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod rules;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2enc_ir::{verify, Graph, IrError, Weights};
use egg::Runner;

use crate::dce::{DeadCode, KeepOutputs};
use crate::Pass;

/// Limits and rule selection of one optimization.
#[derive(Clone, Debug)]
pub struct OptimizeOptions {
    /// Keep only these outputs first (`None`: keep all). Inference keeps `logits`.
    pub keep_outputs: Option<Vec<String>>,
    /// Run only these rules (`None`: all of them).
    pub rules: Option<Vec<String>>,
    pub iter_limit: usize,
    pub node_limit: usize,
    pub time_limit: Duration,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            keep_outputs: Some(vec!["logits".into()]),
            rules: None,
            iter_limit: 40,
            node_limit: 200_000,
            time_limit: Duration::from_secs(20),
        }
    }
}

/// What one optimization did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub stop_reason: String,
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// Rule name → number of times it was newly applied.
    pub applied: BTreeMap<String, usize>,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Extraction cost (FLOP-equivalents) of the input and of the result.
    pub cost_before: f64,
    pub cost_after: f64,
    pub seconds: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "stop reason   {}", self.stop_reason)?;
        writeln!(
            f,
            "e-graph       {} iterations, {} e-nodes in {} e-classes",
            self.iterations, self.egraph_nodes, self.egraph_classes
        )?;
        writeln!(
            f,
            "graph         {} nodes -> {} nodes",
            self.nodes_before, self.nodes_after
        )?;
        writeln!(
            f,
            "cost          {:.4e} -> {:.4e} ({:.1}%)",
            self.cost_before,
            self.cost_after,
            100.0 * self.cost_after / self.cost_before.max(1.0)
        )?;
        writeln!(f, "time          {:.3} s", self.seconds)?;
        writeln!(f, "rewrites fired:")?;
        for (k, v) in &self.applied {
            writeln!(f, "  {k:<22} {v}")?;
        }
        Ok(())
    }
}

/// The optimized graph, the weights it references (pruned and re-laid-out), and the report.
pub struct Optimized {
    pub graph: Graph,
    pub weights: Weights,
    pub report: Report,
}

/// Optimizes `g` over the weights `w`.
pub fn optimize(g: &Graph, w: &Weights, opts: &OptimizeOptions) -> Result<Optimized, IrError> {
    let t0 = Instant::now();
    let mut g = g.clone();
    if let Some(keep) = &opts.keep_outputs {
        KeepOutputs(keep.clone()).run(&mut g)?;
        DeadCode.run(&mut g)?;
    }
    verify::verify_with_weights(&g, w)?;
    let rules = match &opts.rules {
        None => rules::all(),
        Some(names) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            rules::by_name(&names).map_err(|msg| IrError::Config {
                path: "optimizer".into(),
                msg,
            })?
        }
    };
    let built = convert::to_egraph(&g, Arc::new(w.clone()))?;
    let cost_before = extract::extract(&built.eg, built.root).map_or(f64::NAN, |c| c.total);
    let runner = Runner::default()
        .with_egraph(built.eg.clone())
        .with_iter_limit(opts.iter_limit)
        .with_node_limit(opts.node_limit)
        .with_time_limit(opts.time_limit)
        .run(&rules);
    let mut report = Report {
        stop_reason: match &runner.stop_reason {
            Some(egg::StopReason::Saturated) => "saturated".into(),
            Some(other) => format!("{other:?}"),
            None => "unknown".into(),
        },
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        nodes_before: g.len(),
        cost_before,
        ..Report::default()
    };
    for it in &runner.iterations {
        for (k, v) in &it.applied {
            *report.applied.entry(k.to_string()).or_default() += v;
        }
    }
    let choice = extract::extract(&runner.egraph, built.root).ok_or_else(|| IrError::Interp {
        node: "optimizer".into(),
        msg: "extraction found no acyclic graph".into(),
    })?;
    report.cost_after = choice.total;
    let (mut out, weights) = convert::from_choice(&built, &runner.egraph, &choice, &g.name, w)?;
    DeadCode.run(&mut out)?;
    verify::verify_with_weights(&out, &weights)?;
    report.nodes_after = out.len();
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(Optimized {
        graph: out,
        weights,
        report,
    })
}
