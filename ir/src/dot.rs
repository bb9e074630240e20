//! Graphviz output of a graph: one box per op (weights folded into their users' labels to keep
//! the picture readable), edges from operands to users, outputs as double octagons.

use std::fmt::Write;

use crate::graph::Graph;
use crate::op::Op;

/// Renders `g` in the DOT language.
pub fn to_dot(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", esc(&g.name));
    let _ = writeln!(
        s,
        "  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];"
    );
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids().collect());
    for &id in &order {
        let n = g.node(id);
        if matches!(n.op, Op::Weight { .. }) {
            continue;
        }
        let title = match (&n.op, &n.label) {
            (Op::Input { name }, _) => format!("input {name}"),
            (_, Some(l)) => format!("{}\\n{}", n.op.mnemonic(), esc(l)),
            (_, None) => n.op.mnemonic().to_string(),
        };
        let shape = if matches!(n.op, Op::Input { .. }) {
            ", shape=ellipse"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  n{} [label=\"{}\\n{}\"{}];",
            id.index(),
            title,
            n.ty,
            shape
        );
        for o in g.operands(id) {
            if !matches!(g.node(o).op, Op::Weight { .. }) {
                let _ = writeln!(s, "  n{} -> n{};", o.index(), id.index());
            }
        }
    }
    for (name, id) in g.outputs() {
        let _ = writeln!(
            s,
            "  \"out:{0}\" [label=\"{0}\", shape=doubleoctagon];",
            esc(name)
        );
        let _ = writeln!(s, "  n{} -> \"out:{}\";", id.index(), esc(name));
    }
    s.push_str("}\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
