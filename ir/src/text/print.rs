//! The printer: one line per node in topological order, dense `%i` numbering, attributes by
//! name in a fixed order, so equal graphs print to equal bytes (golden tests rely on it).
//!
//! The printer never fails: a graph with a cycle is printed in index order under a warning
//! comment (the parser then rejects its forward references, which is the honest outcome).

use std::collections::HashMap;
use std::fmt::Write;

use crate::graph::{Graph, Node, NodeId};
use crate::op::{ConvAttrs, Op, PoolAttrs};
use crate::types::TensorType;

/// Prints `g` in the text form (see the module doc of [`crate::text`]).
pub fn print(g: &Graph) -> String {
    let (order, acyclic) = super::print_order(g);
    let num: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let value = |id: &NodeId| match num.get(id) {
        Some(i) => format!("%{i}"),
        None => "%?".to_string(),
    };
    let mut out = String::new();
    if !acyclic {
        out.push_str("; warning: the graph has a cycle; nodes are listed in index order\n");
    }
    let _ = writeln!(out, "graph {} {{", quote(&g.name));
    for (i, &id) in order.iter().enumerate() {
        let node = g.node(id);
        let operands: Vec<String> = g.operands(id).iter().map(value).collect();
        let _ = write!(out, "  %{i} = ");
        write_rhs(&mut out, &node.op, &operands);
        let _ = write!(out, " : {}", type_text(&node.ty));
        write_label(&mut out, node);
        out.push('\n');
    }
    for (name, id) in g.outputs() {
        match num.get(id) {
            Some(i) => {
                let _ = writeln!(out, "  output {} = %{i}", quote(name));
            }
            None => {
                let _ = writeln!(out, "  ; output {} names a removed node {id}", quote(name));
            }
        }
    }
    out.push_str("}\n");
    out
}

/// The op, its attributes and its operands: `conv3d{kernel=[1,3,3], ...}(%3, %1)`.
fn write_rhs(out: &mut String, op: &Op, operands: &[String]) {
    match op {
        Op::Input { name } | Op::Weight { name } => {
            // Leaves have no operands by construction; a malformed one still shows them (the
            // parser accepts them so the verifier can report it).
            let _ = write!(out, "{} {}", op.mnemonic(), quote(name));
            if !operands.is_empty() {
                let _ = write!(out, "({})", operands.join(", "));
            }
            return;
        }
        _ => out.push_str(op.mnemonic()),
    }
    let attrs = attrs_text(op);
    if !attrs.is_empty() {
        let _ = write!(out, "{{{}}}", attrs.join(", "));
    }
    let _ = write!(out, "({})", operands.join(", "));
}

/// `shifts=[s1xn1, s2xn2, ...]`.
fn runs_text(runs: &[(i64, usize)]) -> String {
    let r: Vec<String> = runs.iter().map(|(s, n)| format!("{s}x{n}")).collect();
    format!("shifts=[{}]", r.join(", "))
}

/// `name=value` for every attribute of `op`, in declaration order.
pub(super) fn attrs_text(op: &Op) -> Vec<String> {
    let triple = |v: &[usize; 3]| format!("[{},{},{}]", v[0], v[1], v[2]);
    let conv = |a: &ConvAttrs| {
        vec![
            format!("kernel={}", triple(&a.kernel)),
            format!("stride={}", triple(&a.stride)),
            format!("padding={}", triple(&a.padding)),
        ]
    };
    let pool = |a: &PoolAttrs| {
        vec![
            format!("kernel={}", triple(&a.kernel)),
            format!("stride={}", triple(&a.stride)),
        ]
    };
    let opt_float = |v: Option<f32>| v.map_or_else(|| "none".to_string(), float_text);
    match op {
        Op::Conv3d(a) | Op::ConvTranspose3d(a) => conv(a),
        Op::FusedConv3d(a) => {
            let mut v = conv(&a.conv);
            v.push(format!("transposed={}", a.transposed));
            v.push(runs_text(&a.shifts));
            v.push(format!(
                "sparse_out={}",
                a.sparse_out
                    .map_or_else(|| "none".to_string(), |n| n.to_string())
            ));
            v.push(format!("bias={}", a.bias));
            v.push(format!("eps={}", opt_float(a.norm_eps)));
            v.push(format!("slope={}", opt_float(a.slope)));
            v
        }
        Op::SelectChannels { axis, ranges } => {
            let r: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}..{b}")).collect();
            vec![format!("axis={axis}"), format!("ranges=[{}]", r.join(", "))]
        }
        Op::ConvBackwardData(a) | Op::ConvBackwardWeight(a) => {
            let mut v = conv(&a.conv);
            v.push(format!("transposed={}", a.transposed));
            v.push(format!("input={}", triple(&a.input)));
            v.push(runs_text(&a.shifts));
            v
        }
        Op::MaxPool3d(a) | Op::MaxPoolBackward(a) => pool(a),
        Op::DepthShift(a) | Op::DepthShiftBackward(a) => vec![format!("groups={}", a.groups)],
        Op::InstanceNorm { eps }
        | Op::InstanceNormBackward { eps }
        | Op::InstanceNormGammaGrad { eps } => vec![format!("eps={}", float_text(*eps))],
        Op::LeakyRelu { slope } | Op::LeakyReluBackward { slope } => {
            vec![format!("slope={}", float_text(*slope))]
        }
        Op::Input { .. }
        | Op::Weight { .. }
        | Op::Concat
        | Op::Add
        | Op::Softmax
        | Op::Argmax
        | Op::ChannelSum => Vec::new(),
    }
}

/// ` @"label"`; weights omit a label equal to their name and say ` @none` when they have none.
fn write_label(out: &mut String, node: &Node) {
    let implied = match &node.op {
        Op::Weight { name } => Some(name),
        _ => None,
    };
    match (&node.label, implied) {
        (Some(l), Some(name)) if l == name => {}
        (Some(l), _) => {
            let _ = write!(out, " @{}", quote(l));
        }
        (None, Some(_)) => out.push_str(" @none"),
        (None, None) => {}
    }
}

/// `f32[1,4,32,32,64]`
pub(super) fn type_text(t: &TensorType) -> String {
    t.to_string()
}

/// Shortest spelling that parses back to the same `f32` (`1e-5`, `0.01`, `-0.0`, `inf`, `NaN`).
pub(super) fn float_text(x: f32) -> String {
    format!("{x:?}")
}

/// A double-quoted string with `"`, `\` and control characters escaped.
pub(super) fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            '\0' => q.push_str("\\0"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{{{:x}}}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
