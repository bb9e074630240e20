//! Output selection and dead-code elimination: after `KeepOutputs`, `DeadCode` removes every node
//! no remaining output depends on (e.g. the three deep-supervision heads and the weights they
//! read at inference).

use e2enc_ir::{Graph, IrError};

use crate::Pass;

/// Keeps only the named outputs (an unknown name is an error: it is always a typo).
pub struct KeepOutputs(pub Vec<String>);

impl Pass for KeepOutputs {
    fn name(&self) -> &'static str {
        "keep-outputs"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        for n in &self.0 {
            if g.output(n).is_none() {
                let have: Vec<&str> = g.outputs().iter().map(|(n, _)| n.as_str()).collect();
                return Err(IrError::Config {
                    path: g.name.clone(),
                    msg: format!("no output named `{n}` (outputs: {})", have.join(", ")),
                });
            }
        }
        let before = g.outputs().len();
        let keep: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        g.retain_outputs(&keep);
        Ok(g.outputs().len() != before)
    }
}

/// Removes nodes that no output depends on.
pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let roots: Vec<_> = g.outputs().iter().map(|&(_, id)| id).collect();
        let live = g.ancestors(&roots);
        let dead: Vec<_> = g.node_ids().filter(|id| !live.contains(id)).collect();
        for &id in &dead {
            g.remove_node(id);
        }
        Ok(!dead.is_empty())
    }
}
