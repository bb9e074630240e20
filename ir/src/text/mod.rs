//! The IR's readable text form: a printer and a parser that round-trip exactly.
//!
//! The form is line-friendly but not line-sensitive; `;` starts a comment that runs to the end of
//! the line. Grammar (whitespace and comments between any two tokens):
//!
//! ```text
//! file    := 'graph' STRING '{' stmt* '}'
//! stmt    := node | output
//! node    := VALUE '=' rhs ':' type label?
//! rhs     := ('input' | 'weight') STRING args? | MNEMONIC attrs? args
//! args    := '(' (VALUE (',' VALUE)*)? ')'            ; leaves print no args
//! attrs   := '{' (IDENT '=' attr (',' IDENT '=' attr)*)? '}'
//! attr    := INT | FLOAT | BOOL | 'none' | '[' INT ',' INT ',' INT ']'
//!          | '[' (RANGE (',' RANGE)*)? ']' | '[' (RUN (',' RUN)*)? ']'
//! BOOL    := 'true' | 'false'
//! RANGE   := INT '..' INT                             ; one word: 0..96 is [0, 96)
//! RUN     := '-'? INT 'x' INT                         ; one word: -2x48 is 48 channels shifted -2
//! type    := DTYPE '[' (INT (',' INT)*)? ']'           ; f32[1,4,32,32,64], i32[], ...
//! label   := '@' STRING | '@' 'none'
//! output  := 'output' STRING '=' VALUE
//! VALUE   := '%' INT                                  ; defined once, before any use
//! STRING  := '"' (char | '\"' | '\\' | '\n' | '\r' | '\t' | '\0' | '\u{HEX}')* '"'
//! ```
//!
//! ```text
//! graph "tiny" {
//!   %0 = input "input" : f32[1,1,8,8,8]
//!   %1 = weight "conv.weight" : f32[4,1,1,3,3]
//!   %2 = depth_shift{groups=5}(%0) : f32[1,1,8,8,8] @"x0_0.u0.shift"
//!   %3 = conv3d{kernel=[1,3,3], stride=[1,1,1], padding=[0,1,1]}(%2, %1) : f32[1,4,8,8,8]
//!   %4 = leaky_relu{slope=0.01}(%3) : f32[1,4,8,8,8]
//!   %5 = select{axis=1, ranges=[0..1, 3..4]}(%4) : f32[1,2,8,8,8]
//!   output "logits" = %5
//! }
//! ```
//!
//! Which attributes an op takes and of which kind is one table (`attrs.rs`). An optional value
//! (`sparse_out`, and `eps` and `slope` of `fused_conv3d`) is written `none` when absent; an empty
//! `shifts=[]` means no input shift. A sparse `fused_conv3d` reads its kernel index from an `i32`
//! weight, declared like any other: `%7 = weight "conv.kidx" : i32[320,2]`:
//!
//! ```text
//! fused_conv3d{kernel=[1,3,3], stride=[1,1,1], padding=[0,1,1], transposed=false,
//!              shifts=[-2x48, -1x48, 0x48, 1x48, 2x48], sparse_out=none, bias=true, eps=1e-5,
//!              slope=0.01}(%2, %3, %4, %5, %6)    ; x, w, bias, gamma, beta
//! ```
//!
//! The printer numbers nodes `%0..%n-1` in `Graph::topo_order` (index order, with a warning
//! comment, if the graph has a cycle), prints every attribute by name in a fixed order, floats
//! with Rust's shortest round-trip spelling (bit-exact, NaN payloads aside), and a label as
//! `@"..."`. A `weight` node whose label equals its tensor name (what `Graph::weight` builds)
//! omits it, and one without a label says `@none`, so the parser restores labels exactly.
//!
//! The parser accepts attributes in any order and value numbers that are not dense. It builds
//! nodes with `Graph::add_typed`: declared types are stored as written, not re-inferred, and
//! operand counts are not checked, so an ill-typed graph still parses and the verifier reports
//! it. Parse errors carry `line:col`; the parser never panics.

mod attrs;
mod lex;
mod parse;
mod print;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;

pub use parse::parse_named;
pub use print::print;

/// Parses the text form; errors name the path `<text>`.
pub fn parse(src: &str) -> Result<Graph, IrError> {
    parse_named(src, "<text>")
}

/// Reads and parses a text-form file; errors name the file.
pub fn parse_file(path: &Path) -> Result<Graph, IrError> {
    let src = crate::files::read_text(path)?;
    parse_named(&src, &path.display().to_string())
}

/// The order the printer lists nodes in: topological, or index order if the graph has a cycle.
pub(crate) fn print_order(g: &Graph) -> (Vec<NodeId>, bool) {
    match g.topo_order() {
        Ok(order) => (order, true),
        Err(_) => (g.node_ids().collect(), false),
    }
}

/// True when `a` and `b` have the same name, the same nodes in printing order (same ops and
/// attributes, with floats compared bit for bit, same types, labels and operands by position)
/// and the same outputs in order. Node ids themselves do not matter, so a graph equals its
/// parsed printout.
pub fn structurally_equal(a: &Graph, b: &Graph) -> bool {
    if a.name != b.name || a.len() != b.len() || a.outputs().len() != b.outputs().len() {
        return false;
    }
    let (oa, _) = print_order(a);
    let (ob, _) = print_order(b);
    let pos = |order: &[NodeId]| -> HashMap<NodeId, usize> {
        order.iter().enumerate().map(|(i, &id)| (id, i)).collect()
    };
    let (pa, pb) = (pos(&oa), pos(&ob));
    let operands = |g: &Graph, p: &HashMap<NodeId, usize>, id: NodeId| -> Vec<Option<usize>> {
        g.operands(id).iter().map(|o| p.get(o).copied()).collect()
    };
    let nodes_equal = oa.iter().zip(&ob).all(|(&x, &y)| {
        let (nx, ny) = (a.node(x), b.node(y));
        op_equal(&nx.op, &ny.op)
            && nx.ty == ny.ty
            && nx.label == ny.label
            && operands(a, &pa, x) == operands(b, &pb, y)
    });
    nodes_equal
        && a.outputs()
            .iter()
            .zip(b.outputs())
            .all(|((na, ia), (nb, ib))| na == nb && pa.contains_key(ia) && pa.get(ia) == pb.get(ib))
}

/// `Op` equality with float attributes compared by bits (so a NaN equals itself and `-0.0`
/// differs from `0.0`).
fn op_equal(a: &Op, b: &Op) -> bool {
    match (a, b) {
        (Op::InstanceNorm { eps: x }, Op::InstanceNorm { eps: y }) => x.to_bits() == y.to_bits(),
        (Op::LeakyRelu { slope: x }, Op::LeakyRelu { slope: y }) => x.to_bits() == y.to_bits(),
        (Op::FusedConv3d(x), Op::FusedConv3d(y)) => {
            let bits = |v: Option<f32>| v.map(f32::to_bits);
            x.conv == y.conv
                && x.transposed == y.transposed
                && x.shifts == y.shifts
                && x.sparse_out == y.sparse_out
                && x.bias == y.bias
                && bits(x.norm_eps) == bits(y.norm_eps)
                && bits(x.slope) == bits(y.slope)
        }
        _ => a == b,
    }
}
