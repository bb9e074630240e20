//! `e2enc-passes`: graph-to-graph transformations.
//!
//! A [`Pass`] rewrites a graph in place and says whether it changed anything; a pipeline is a
//! plain list of passes ([`pipeline`]). Plain passes do what needs no rewriting (keeping only the
//! requested outputs, dead-code elimination); [`egraph`] does the rest by equality saturation
//! (egg): dead DSFF edges and channels, kernel-sparse convs, the depth shift fused into the
//! convolution after it, conv + norm + activation fused. [`optimize`] runs the whole pipeline.
//! [`training`] holds what of it stays sound on training graphs (the depth-shift fusion).

pub mod dce;
pub mod egraph;
pub mod training;

pub use egraph::{optimize, OptimizeOptions, Optimized, Report};

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

    /// What training graphs go through before the training code generator: the depth-shift
    /// fusion of both directions (see [`crate::training`]).
    pub fn training() -> Vec<Box<dyn Pass>> {
        vec![Box::new(crate::training::FuseShiftTraining)]
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
