//! Schedule and memory plan: the order kernels run in, and where every activation lives.
//!
//! The schedule is the graph's stable topological order (inputs and weights excluded). Concat
//! operands are placed *in* the concat's buffer, as channel slices, when that is safe (the operand
//! is produced by a kernel, is a graph output of no one, and is an operand of no other concat), so
//! producers write their slice directly and the concat costs nothing; otherwise the concat copies.
//! Buffers get lifetimes (first write to last read, in steps; inputs from the start, outputs to
//! the end) and are packed into one arena, largest first, each at the lowest 64-byte aligned
//! offset that no buffer alive at the same time overlaps. Scratch is a buffer alive for one step.

use std::collections::HashMap;

use e2enc_ir::{Graph, NodeId, Op};
use serde::{Deserialize, Serialize};

use crate::layout::View;

/// One region of the arena.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    /// What it holds (a node's label, `scratch`, ...).
    pub what: String,
    pub offset: usize,
    pub elems: usize,
    /// First and last step (inclusive) it is alive in; step `usize::MAX` means the end.
    pub first: usize,
    pub last: usize,
}

/// The plan of one graph.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The nodes that run, in order (one step each).
    pub steps: Vec<NodeId>,
    /// Where each activation (input and op node) lives.
    pub views: HashMap<NodeId, View>,
    /// Concats whose operands were written in place (they run no kernel).
    pub in_place: Vec<NodeId>,
    /// Scratch offset of each step's node (0 when it needs none).
    pub scratch: HashMap<NodeId, usize>,
    pub buffers: Vec<Buffer>,
    /// Arena size in f32 elements.
    pub arena_elems: usize,
}

fn shape5(g: &Graph, id: NodeId) -> [usize; 5] {
    let s = &g.node(id).ty.shape;
    let mut out = [1usize; 5];
    // Rank-4 values (argmax results) get a channel axis of 1.
    match s.len() {
        5 => out.copy_from_slice(s),
        4 => {
            out[0] = s[0];
            out[2..].copy_from_slice(&s[1..]);
        }
        _ => {}
    }
    out
}

const ALIGN: usize = 16;

/// Plans `g`. `scratch_elems(node)` says how much scratch each op node needs.
pub fn plan(g: &Graph, scratch_elems: impl Fn(NodeId) -> usize) -> Result<Plan, String> {
    let order = g.topo_order().map_err(|e| e.to_string())?;
    let steps: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| !matches!(g.node(id).op, Op::Input { .. } | Op::Weight { .. }))
        .collect();
    let step_of: HashMap<NodeId, usize> = steps.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let outputs: Vec<NodeId> = g.outputs().iter().map(|o| o.1).collect();

    // Which concat (and channel offset) each value lives in.
    let mut concat_uses: HashMap<NodeId, usize> = HashMap::new();
    for &id in &steps {
        if g.node(id).op == Op::Concat {
            for o in g.operands(id) {
                *concat_uses.entry(o).or_default() += 1;
            }
        }
    }
    let mut host: HashMap<NodeId, (NodeId, usize)> = HashMap::new();
    let mut in_place = Vec::new();
    for &id in &steps {
        if g.node(id).op != Op::Concat {
            continue;
        }
        let parts = g.operands(id);
        let ok = parts.iter().all(|&p| {
            let n = g.node(p);
            !matches!(n.op, Op::Input { .. } | Op::Weight { .. } | Op::Concat)
                && concat_uses.get(&p) == Some(&1)
                && !outputs.contains(&p)
                && n.ty.dtype == e2enc_ir::DType::F32
        });
        if ok {
            let mut c0 = 0;
            for p in parts {
                host.insert(p, (id, c0));
                c0 += g.node(p).ty.shape[1];
            }
            in_place.push(id);
        }
    }

    // Storage groups: each root value and the values placed inside it.
    let root_of = |id: NodeId| host.get(&id).map_or(id, |h| h.0);
    let mut first: HashMap<NodeId, usize> = HashMap::new();
    let mut last: HashMap<NodeId, usize> = HashMap::new();
    let touch = |m: &mut HashMap<NodeId, usize>, r: NodeId, s: usize, min: bool| {
        let e = m.entry(r).or_insert(s);
        *e = if min { (*e).min(s) } else { (*e).max(s) };
    };
    for (name, id) in g.inputs() {
        let _ = name;
        touch(&mut first, id, 0, true);
        touch(&mut last, id, 0, false);
    }
    for (i, &id) in steps.iter().enumerate() {
        let r = root_of(id);
        touch(&mut first, r, i, true);
        touch(&mut last, r, i, false);
        for o in g.operands(id) {
            if matches!(g.node(o).op, Op::Weight { .. }) {
                continue;
            }
            touch(&mut last, root_of(o), i, false);
        }
    }
    for &o in &outputs {
        touch(&mut last, root_of(o), usize::MAX, false);
    }

    let mut roots: Vec<NodeId> = first.keys().copied().collect();
    roots.sort();
    let mut buffers: Vec<(NodeId, Buffer)> = roots
        .iter()
        .map(|&r| {
            let what = g.node(r).label.clone().unwrap_or_else(|| g.describe(r));
            (r, Buffer { what, offset: 0, elems: View::elems(shape5(g, r)), first: first[&r], last: last[&r] })
        })
        .collect();
    let mut scratch_buf: Vec<(NodeId, Buffer)> = Vec::new();
    for &id in &steps {
        let n = scratch_elems(id);
        if n > 0 {
            let s = step_of[&id];
            scratch_buf.push((id, Buffer { what: format!("scratch of {}", g.describe(id)), offset: 0, elems: n, first: s, last: s }));
        }
    }
    let mut all: Vec<(Option<NodeId>, Option<NodeId>, Buffer)> = buffers
        .drain(..)
        .map(|(r, b)| (Some(r), None, b))
        .chain(scratch_buf.into_iter().map(|(id, b)| (None, Some(id), b)))
        .collect();
    // Largest first; ties by first use for determinism.
    let mut idx: Vec<usize> = (0..all.len()).collect();
    idx.sort_by_key(|&i| (std::cmp::Reverse(all[i].2.elems), all[i].2.first, all[i].2.what.clone()));
    let mut placed: Vec<usize> = Vec::new();
    for i in idx {
        let (f, l, n) = (all[i].2.first, all[i].2.last, all[i].2.elems);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .map(|&j| &all[j].2)
            .filter(|b| b.first <= l && f <= b.last)
            .map(|b| (b.offset, b.offset + b.elems))
            .collect();
        busy.sort();
        let mut at = 0;
        for (s, e) in busy {
            if at + n <= s {
                break;
            }
            at = at.max(e.div_ceil(ALIGN) * ALIGN);
        }
        all[i].2.offset = at;
        placed.push(i);
    }
    let arena_elems = all.iter().map(|(_, _, b)| b.offset + b.elems).max().unwrap_or(0).div_ceil(ALIGN) * ALIGN;

    let mut views: HashMap<NodeId, View> = HashMap::new();
    let mut scratch = HashMap::new();
    for (root, sid, b) in &all {
        if let Some(r) = root {
            views.insert(*r, View::padded(b.offset, shape5(g, *r)));
        }
        if let Some(id) = sid {
            scratch.insert(*id, b.offset);
        }
    }
    for (&v, &(c, c0)) in &host {
        let hv = views[&c].clone();
        views.insert(v, hv.channels(c0, g.node(v).ty.shape[1]));
    }
    let mut buffers: Vec<Buffer> = all.into_iter().map(|(_, _, b)| b).collect();
    buffers.sort_by_key(|b| (b.offset, b.first));
    Ok(Plan { steps, views, in_place, scratch, buffers, arena_elems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2enc_ir::{ConvAttrs, PoolAttrs, TensorType};

    #[test]
    fn concat_parts_live_in_the_concat_and_buffers_do_not_overlap_in_time() {
        let mut g = Graph::new("t");
        let x = g.input("input", TensorType::f32([1, 2, 4, 4, 4]));
        let w = g.weight("w", TensorType::f32([3, 2, 1, 3, 3]));
        let conv = |g: &mut Graph, x| {
            g.add(Op::Conv3d(ConvAttrs { kernel: [1, 3, 3], stride: [1; 3], padding: [0, 1, 1] }), &[x, w], None).unwrap()
        };
        let a = conv(&mut g, x);
        let p = g.add(Op::MaxPool3d(PoolAttrs { kernel: [1, 1, 1], stride: [1, 1, 1] }), &[x], None).unwrap();
        let c = g.add(Op::Concat, &[a, p], None).unwrap();
        let w2 = g.weight("w2", TensorType::f32([2, 5, 1, 3, 3]));
        let y = g.add(Op::Conv3d(ConvAttrs { kernel: [1, 3, 3], stride: [1; 3], padding: [0, 1, 1] }), &[c, w2], None).unwrap();
        g.set_output("logits", y);
        let p2 = plan(&g, |_| 0).unwrap();
        assert_eq!(p2.in_place, vec![c]);
        assert_eq!(p2.views[&a].offset, p2.views[&c].offset);
        assert_eq!(p2.views[&p].offset, p2.views[&c].offset + 3 * p2.views[&c].c_stride);
        for (i, b1) in p2.buffers.iter().enumerate() {
            for b2 in &p2.buffers[i + 1..] {
                let time = b1.first <= b2.last && b2.first <= b1.last;
                let space = b1.offset < b2.offset + b2.elems && b2.offset < b1.offset + b1.elems;
                assert!(!(time && space), "{b1:?} {b2:?}");
            }
        }
        // The input is dead once the concat is written; the output buffer may reuse its space.
        assert!(p2.arena_elems < p2.buffers.iter().map(|b| b.elems).sum::<usize>());
    }
}
