//! `e2enc-passes`: graph-to-graph transformations.
//!
//! A [`Pass`] rewrites a graph in place and says whether it changed anything; a pipeline is a
//! plain list of passes ([`pipeline`]). This issue ships the plain passes every later stage needs
//! (keeping only requested outputs, dead-code elimination); the equality-saturation rewrites of
//! DSFF pruning and shift fusion (egg) arrive with the passes issue and plug in as more `Pass`es.

pub mod dce;

use e2enc_ir::{Graph, IrError};

/// A graph transformation.
pub trait Pass {
    /// Stable name used in reports.
    fn name(&self) -> &'static str;
    /// Rewrites `g`; returns true when it changed something.
    fn run(&self, g: &mut Graph) -> Result<bool, IrError>;
}

/// Named pass lists.
pub mod pipeline {
    use super::*;

    /// What the inference preset keeps: only the full-resolution `logits` output.
    pub fn inference() -> Vec<Box<dyn Pass>> {
        vec![
            Box::new(dce::KeepOutputs(vec!["logits".into()])),
            Box::new(dce::DeadCode),
        ]
    }

    /// Runs `passes` in order, verifying the graph after each one; returns the names of the
    /// passes that changed it.
    pub fn run(g: &mut Graph, passes: &[Box<dyn Pass>]) -> Result<Vec<&'static str>, IrError> {
        let mut changed = Vec::new();
        for p in passes {
            if p.run(g)? {
                changed.push(p.name());
            }
            e2enc_ir::verify::verify(g)?;
        }
        Ok(changed)
    }
}
