//! Passes for training graphs (`e2enc_ir::autodiff::training_graph`): the part of the inference
//! optimizer that stays sound when the weights and the DSFF masks change every step.
//!
//! The egg pipeline's other rewrites do not carry over to training: dropping dead DSFF edges,
//! narrowing channels and packing sparse kernels bake one mask into the graph, while dynamic
//! sparse training regrows kernels every few hundred steps (the generated training kernels take
//! the live-kernel lists at run time instead); fusing instance norm and the activation into the
//! conv would discard the pre-norm and pre-activation values the backward ops read. What does
//! carry over is the depth-shift fusion, in both directions:
//!
//! - `conv3d(depth_shift(x), w[, b])` becomes `fused_conv3d{shifts}(x, w[, b])`, exactly as the
//!   inference rule `fuse-shift` does;
//! - `conv_backward_weight(depth_shift(x), dy)` becomes `conv_backward_weight{shifts}(x, dy)`: the
//!   weight gradient reads `x` through the shift;
//! - `depth_shift_backward(conv_backward_data(dy, w))` becomes
//!   `conv_backward_data{shifts}(dy, w)`: the data gradient is written in the opposite shift.
//!
//! A shift (or a data gradient) that anything else still reads stays; no shifted copy is made
//! when every reader was rewritten.

use e2enc_ir::{shift_runs, FusedConvAttrs, Graph, IrError, NodeId, Op};

use crate::Pass;

/// Fuses the restricted depth shift (and its backward) into the convolutions of a training
/// graph (see the module documentation).
pub struct FuseShiftTraining;

impl Pass for FuseShiftTraining {
    fn name(&self) -> &'static str {
        "fuse-shift-train"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        let ids: Vec<NodeId> = g.node_ids().collect();
        for id in ids {
            if !g.contains(id) {
                continue;
            }
            changed |= match g.node(id).op.clone() {
                Op::DepthShift(a) => fuse_readers(g, id, a.groups)?,
                Op::DepthShiftBackward(a) => fuse_data_grad(g, id, a.groups)?,
                _ => false,
            };
        }
        Ok(changed)
    }
}

fn is_output(g: &Graph, id: NodeId) -> bool {
    g.outputs().iter().any(|o| o.1 == id)
}

/// Replaces `old` by a new node computing `op` on `operands` (same label), then removes `old`.
fn replace(g: &mut Graph, old: NodeId, op: Op, operands: &[NodeId]) -> Result<(), IrError> {
    let label = g.node(old).label.clone();
    let new = g.add(op, operands, label)?;
    g.replace_all_uses(old, new);
    g.remove_node(old);
    Ok(())
}

/// Rewrites the convolutions that read the shift `s` as their input; removes `s` when nothing
/// reads it any more.
fn fuse_readers(g: &mut Graph, s: NodeId, groups: usize) -> Result<bool, IrError> {
    let x = g.operands(s)[0];
    let ty = g.node(s).ty.clone();
    if ty.rank() != 5 {
        return Ok(false);
    }
    let runs = shift_runs(groups, ty.shape[1]);
    let mut changed = false;
    for (user, slot) in g.users(s) {
        if slot != 0 {
            continue;
        }
        let ops = g.operands(user);
        let rewritten = match g.node(user).op.clone() {
            Op::Conv3d(c) => {
                let mut a = FusedConvAttrs::plain(c, false, ops.len() > 2);
                a.shifts = runs.clone();
                Some(Op::FusedConv3d(a))
            }
            Op::ConvBackwardWeight(mut a) if !a.transposed && a.shifts.is_empty() => {
                a.shifts = runs.clone();
                Some(Op::ConvBackwardWeight(a))
            }
            _ => None,
        };
        if let Some(op) = rewritten {
            let mut new_ops = ops;
            new_ops[0] = x;
            replace(g, user, op, &new_ops)?;
            changed = true;
        }
    }
    if changed && g.users(s).is_empty() && !is_output(g, s) {
        g.remove_node(s);
    }
    Ok(changed)
}

/// Fuses the shift backward `t` into the data gradient it reads, when that gradient has no other
/// reader.
fn fuse_data_grad(g: &mut Graph, t: NodeId, groups: usize) -> Result<bool, IrError> {
    let d = g.operands(t)[0];
    let Op::ConvBackwardData(mut a) = g.node(d).op.clone() else {
        return Ok(false);
    };
    let ty = g.node(t).ty.clone();
    if a.transposed || !a.shifts.is_empty() || ty.rank() != 5 {
        return Ok(false);
    }
    if g.users(d).len() != 1 || is_output(g, d) {
        return Ok(false);
    }
    a.shifts = shift_runs(groups, ty.shape[1]);
    let operands = g.operands(d);
    replace(g, t, Op::ConvBackwardData(a), &operands)?;
    g.remove_node(d);
    Ok(true)
}

#[cfg(test)]
mod tests;
