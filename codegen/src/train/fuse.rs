//! The depth-shift fusion of training graphs, as a rewrite plan applied at emission:
//! [`fuse_depth_shifts`] decides which `DepthShift` values are never materialized (every user
//! is a convolution kernel that can read the unshifted tensor at each input channel's depth
//! offset, zero outside) and which `ConvBackwardData` results are written directly in the
//! opposite shift of the `DepthShiftBackward` that is their only user.
//!
//! It is a plan rather than a new graph because the IR has no op for "weight gradient of a conv
//! whose input is shifted"; the emitters take the plan's per-channel offsets as an extra
//! parameter, and the graph (and so the interpreter, the oracle) stays as autodiff made it.

use std::collections::{HashMap, HashSet};

use e2enc_ir::{shift_runs, Graph, NodeId, Op};

/// What [`fuse_depth_shifts`] decided.
#[derive(Clone, Debug, Default)]
pub struct FusedShifts {
    /// Conv-like node → (the shift's operand it reads instead of operand 0, that shift's
    /// per-channel depth offsets).
    pub read_through: HashMap<NodeId, (NodeId, Vec<i64>)>,
    /// `DepthShiftBackward` node → the per-channel forward offsets `s` its kernel applies to the
    /// `ConvBackwardData` it absorbs (`out[c, d] = value[c, d + s[c]]`).
    pub unshift_out: HashMap<NodeId, Vec<i64>>,
    /// `DepthShiftBackward` node → the absorbed `ConvBackwardData` node (whose op and operands
    /// the fused kernel computes).
    pub absorbed: HashMap<NodeId, NodeId>,
    /// Nodes no kernel computes: fused shifts and absorbed data gradients.
    pub skipped: HashSet<NodeId>,
}

fn offsets(groups: usize, channels: usize) -> Vec<i64> {
    shift_runs(groups, channels)
        .into_iter()
        .flat_map(|(s, n)| std::iter::repeat_n(s, n))
        .collect()
}

/// Plans the depth-shift fusion of a training graph `g`:
/// - a `DepthShift` that is no graph output and whose every use is operand 0 of a `Conv3d` or of
///   a non-transposed `ConvBackwardWeight` (both read it as the "big", gathered side) is
///   skipped, and those users read its operand through the shift;
/// - a non-transposed `ConvBackwardData` whose only use is a `DepthShiftBackward` (and which is
///   no graph output) is computed by one kernel at the `DepthShiftBackward` node, writing the
///   opposite shift.
pub fn fuse_depth_shifts(g: &Graph) -> FusedShifts {
    let mut f = FusedShifts::default();
    let outputs: HashSet<NodeId> = g.outputs().iter().map(|o| o.1).collect();
    for id in g.node_ids() {
        let node = g.node(id);
        match &node.op {
            Op::DepthShift(a) if !outputs.contains(&id) => {
                let users = g.users(id);
                let ok = !users.is_empty()
                    && users.iter().all(|&(u, slot)| {
                        slot == 0
                            && match &g.node(u).op {
                                Op::Conv3d(_) => true,
                                Op::ConvBackwardWeight(c) => !c.transposed,
                                _ => false,
                            }
                    });
                let src = g.operands(id)[0];
                if ok && node.ty.shape.len() == 5 {
                    let sh = offsets(a.groups, node.ty.shape[1]);
                    for (u, _) in users {
                        f.read_through.insert(u, (src, sh.clone()));
                    }
                    f.skipped.insert(id);
                }
            }
            Op::DepthShiftBackward(a) => {
                let src = g.operands(id)[0];
                let absorb = matches!(&g.node(src).op, Op::ConvBackwardData(c) if !c.transposed)
                    && !outputs.contains(&src)
                    && g.users(src).len() == 1
                    && node.ty.shape.len() == 5;
                if absorb {
                    f.unshift_out
                        .insert(id, offsets(a.groups, node.ty.shape[1]));
                    f.absorbed.insert(id, src);
                    f.skipped.insert(src);
                }
            }
            _ => {}
        }
    }
    f
}
