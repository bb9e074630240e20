//! The backward rule of each forward op: given a node and the gradient of its result, the nodes
//! that compute the gradients of the operands that want one (see the module doc of
//! [`crate::autodiff`] for the table). Rules build nodes with `Graph::add`, so shape inference
//! checks every one of them as it is made.

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::{ConvGradAttrs, Op};

/// A label for a backward node of `id`: `<forward label or mnemonic>.<what>`.
pub(super) fn label(fwd: &Graph, id: NodeId, what: &str) -> Option<String> {
    let n = fwd.node(id);
    let base = n
        .label
        .clone()
        .unwrap_or_else(|| n.op.mnemonic().to_string());
    Some(format!("{base}.{what}"))
}

/// `(operand slot, gradient node)` for every operand slot with `wants[slot]` set.
pub(super) fn backward(
    g: &mut Graph,
    fwd: &Graph,
    id: NodeId,
    dy: NodeId,
    wants: &[bool],
) -> Result<Vec<(usize, NodeId)>, IrError> {
    let ops = fwd.operands(id);
    let op = fwd.node(id).op.clone();
    let lbl = |what: &str| label(fwd, id, what);
    let mut out = Vec::new();
    let mut push = |slot: usize, made: Result<NodeId, IrError>| -> Result<(), IrError> {
        if wants[slot] {
            out.push((slot, made?));
        }
        Ok(())
    };
    match &op {
        Op::Conv3d(c) | Op::ConvTranspose3d(c) => {
            let xs = &fwd.node(ops[0]).ty.shape;
            let a = ConvGradAttrs {
                conv: c.clone(),
                transposed: matches!(op, Op::ConvTranspose3d(_)),
                input: [xs[2], xs[3], xs[4]],
                shifts: Vec::new(),
            };
            if wants[0] {
                push(
                    0,
                    g.add(Op::ConvBackwardData(a.clone()), &[dy, ops[1]], lbl("dx")),
                )?;
            }
            if wants[1] {
                push(
                    1,
                    g.add(Op::ConvBackwardWeight(a), &[ops[0], dy], lbl("dw")),
                )?;
            }
            if ops.len() > 2 && wants[2] {
                push(2, g.add(Op::ChannelSum, &[dy], lbl("db")))?;
            }
        }
        Op::DepthShift(a) => {
            push(
                0,
                g.add(Op::DepthShiftBackward(a.clone()), &[dy], lbl("dx")),
            )?;
        }
        Op::InstanceNorm { eps } => {
            let eps = *eps;
            if wants[0] {
                let made = g.add(
                    Op::InstanceNormBackward { eps },
                    &[ops[0], ops[1], dy],
                    lbl("dx"),
                );
                push(0, made)?;
            }
            if wants[1] {
                let made = g.add(
                    Op::InstanceNormGammaGrad { eps },
                    &[ops[0], dy],
                    lbl("dgamma"),
                );
                push(1, made)?;
            }
            if wants[2] {
                push(2, g.add(Op::ChannelSum, &[dy], lbl("dbeta")))?;
            }
        }
        Op::LeakyRelu { slope } => {
            let made = g.add(
                Op::LeakyReluBackward { slope: *slope },
                &[ops[0], dy],
                lbl("dx"),
            );
            push(0, made)?;
        }
        Op::MaxPool3d(a) => {
            let made = g.add(Op::MaxPoolBackward(a.clone()), &[ops[0], dy], lbl("dx"));
            push(0, made)?;
        }
        Op::Concat => {
            let mut at = 0;
            for (slot, &o) in ops.iter().enumerate() {
                let c = fwd.node(o).ty.shape[1];
                if wants[slot] {
                    let made = if ops.len() == 1 {
                        Ok(dy)
                    } else {
                        let sel = Op::SelectChannels {
                            axis: 1,
                            ranges: vec![(at, at + c)],
                        };
                        g.add(sel, &[dy], lbl(&format!("d{slot}")))
                    };
                    push(slot, made)?;
                }
                at += c;
            }
        }
        Op::Add => {
            push(0, Ok(dy))?;
            push(1, Ok(dy))?;
        }
        other => {
            return Err(IrError::Shape {
                node: fwd.describe(id),
                msg: format!(
                    "autodiff does not support `{}`: a gradient would have to flow through it",
                    other.mnemonic()
                ),
            })
        }
    }
    Ok(out)
}
