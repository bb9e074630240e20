//! Graph ⇄ e-graph. Going in, every IR node becomes one e-node (weights by name, never
//! inlined) and a root `outputs` node lists the graph outputs. Coming out, the extracted choice is
//! rebuilt as an IR graph in dependency order: constant classes (weights and the `select`,
//! `pack`, `kidx` transforms over them) are materialized into new named weights, every other node
//! is re-added through `Graph::add`, so shape inference re-checks the result.

use std::collections::HashMap;
use std::sync::Arc;

use e2enc_ir::interp::ops::eval;
use e2enc_ir::{Graph, IrError, NodeId, Op, Tensor, Weights};
use egg::{Id, Symbol};

use super::analysis::{ir_op, Ctx, EG};
use super::extract::Choice;
use super::lang::{enc_f32, enc_fused, enc_geom, enc_pool, enc_select, sym, Lang};

/// An e-graph built from a graph.
pub struct Built {
    pub eg: EG,
    pub root: Id,
    pub outputs: Vec<String>,
    /// The label of the IR node each class came from.
    pub labels: HashMap<Id, String>,
    /// The position in the input graph's topological order of the node each class came from.
    pub positions: HashMap<Id, usize>,
}

fn err(msg: impl Into<String>) -> IrError {
    IrError::Interp {
        node: "optimizer".into(),
        msg: msg.into(),
    }
}

/// Builds the e-graph of `g` over the weight store `w`.
pub fn to_egraph(g: &Graph, w: Arc<Weights>) -> Result<Built, IrError> {
    let inputs = g
        .inputs()
        .into_iter()
        .map(|(n, id)| (Symbol::from(n.as_str()), g.node(id).ty.clone()))
        .collect();
    let mut eg = EG::new(Ctx { weights: w, inputs });
    let mut ids: HashMap<NodeId, Id> = HashMap::new();
    let mut labels = HashMap::new();
    let mut positions = HashMap::new();
    for (pos, id) in g.topo_order()?.into_iter().enumerate() {
        let node = g.node(id);
        let args: Vec<Id> = g.operands(id).iter().map(|o| ids[o]).collect();
        let none = eg.add(Lang::None);
        let opt = |i: usize| args.get(i).copied().unwrap_or(none);
        let e = match &node.op {
            Op::Input { name } => {
                let s = eg.add(sym(name));
                Lang::Input([s])
            }
            Op::Weight { name } => {
                let s = eg.add(sym(name));
                Lang::Weight([s])
            }
            Op::Conv3d(a) => Lang::Conv([eg.add(sym(enc_geom(a))), args[0], args[1], opt(2)]),
            Op::ConvTranspose3d(a) => {
                Lang::ConvT([eg.add(sym(enc_geom(a))), args[0], args[1], opt(2)])
            }
            Op::DepthShift(a) => Lang::Shift([eg.add(Lang::Num(a.groups as i64)), args[0]]),
            Op::InstanceNorm { eps } => {
                Lang::INorm([eg.add(sym(enc_f32(*eps))), args[0], args[1], args[2]])
            }
            Op::LeakyRelu { slope } => Lang::LRelu([eg.add(sym(enc_f32(*slope))), args[0]]),
            Op::MaxPool3d(p) => Lang::MaxPool([eg.add(sym(enc_pool(p))), args[0]]),
            Op::Concat => Lang::Concat(args.clone().into()),
            Op::Add => Lang::Add([args[0], args[1]]),
            Op::Softmax => Lang::Softmax([args[0]]),
            Op::Argmax => Lang::Argmax([args[0]]),
            Op::SelectChannels { axis, ranges } => {
                Lang::Select([eg.add(sym(enc_select(*axis, ranges))), args[0]])
            }
            Op::FusedConv3d(a) => {
                let (k, b, gm) = a.operand_slots();
                let pick = |slot: Option<usize>, off: usize| slot.map_or(none, |i| args[i + off]);
                let attrs = eg.add(sym(enc_fused(a)));
                Lang::FConv([
                    attrs,
                    args[0],
                    args[1],
                    pick(k, 0),
                    pick(b, 0),
                    pick(gm, 0),
                    pick(gm, 1),
                ])
            }
            op @ (Op::ConvBackwardData(_)
            | Op::ConvBackwardWeight(_)
            | Op::ChannelSum
            | Op::DepthShiftBackward(_)
            | Op::InstanceNormBackward { .. }
            | Op::InstanceNormGammaGrad { .. }
            | Op::LeakyReluBackward { .. }
            | Op::MaxPoolBackward(_)) => {
                return Err(err(format!(
                    "{}: not supported by the optimizer: training op `{}`",
                    g.describe(id),
                    op.mnemonic()
                )))
            }
        };
        let cid = eg.add(e);
        if eg[cid].data.ty.as_ref() != Some(&node.ty) {
            return Err(err(format!(
                "{} did not type-check in the e-graph",
                g.describe(id)
            )));
        }
        if let Some(l) = &node.label {
            labels.entry(cid).or_insert_with(|| l.clone());
        }
        positions.entry(cid).or_insert(pos);
        ids.insert(id, cid);
    }
    let outs: Vec<Id> = g.outputs().iter().map(|(_, id)| ids[id]).collect();
    let root = eg.add(Lang::Outputs(outs.into()));
    eg.rebuild();
    Ok(Built {
        eg,
        root,
        outputs: g.outputs().iter().map(|(n, _)| n.clone()).collect(),
        labels,
        positions,
    })
}

/// Rebuilds an IR graph (and the weights it references, materialized) from an extraction.
pub fn from_choice(
    b: &Built,
    eg: &EG,
    c: &Choice,
    name: &str,
    weights: &Weights,
) -> Result<(Graph, Weights), IrError> {
    let mut g = Graph::new(name);
    let mut out_w = Weights::new();
    let mut node_of: HashMap<Id, NodeId> = HashMap::new();
    let mut consts: HashMap<Id, (String, Arc<Tensor>)> = HashMap::new();
    let mut derived: HashMap<String, usize> = HashMap::new();
    // Each canonical class takes the label of its earliest original node (deterministic).
    let mut originals: Vec<(&Id, &String)> = b.labels.iter().collect();
    originals.sort();
    let mut labels: HashMap<Id, &String> = HashMap::new();
    for (k, v) in originals {
        labels.entry(eg.find(*k)).or_insert(v);
    }
    let label = |cid: Id, n: &Lang| -> Option<String> {
        let l = (*labels.get(&cid)?).clone();
        if matches!(n, Lang::FConv(_)) {
            for suffix in [".act", ".norm", ".conv", ".shift"] {
                if let Some(stem) = l.strip_suffix(suffix) {
                    return Some(stem.to_string());
                }
            }
        }
        Some(l)
    };
    for cid in creation_order(b, eg, c) {
        let n = &c.best[&cid];
        let konst = eg[cid].data.konst;
        match n {
            Lang::None | Lang::Num(_) | Lang::Sym(_) | Lang::Outputs(_) => continue,
            Lang::Input([s]) => {
                let nm = eg[*s].data.sym.ok_or_else(|| err("input without a name"))?;
                let ty = eg[cid]
                    .data
                    .ty
                    .clone()
                    .ok_or_else(|| err("untyped input"))?;
                node_of.insert(cid, g.input(nm.as_str(), ty));
                continue;
            }
            _ if konst => {
                let (mut nm, t) = materialize(eg, n, &consts, weights, &mut derived)?;
                // Two different constants can derive the same name (one weight packed for a
                // conv and for a transposed conv): the later one gets a fresh name.
                if out_w.get(&nm).is_some_and(|old| **old != *t) {
                    let base = nm.clone();
                    nm = (2..)
                        .map(|k| format!("{base}{k}"))
                        .find(|c| out_w.get(c).is_none())
                        .expect("a free name");
                }
                let id = match g.weights().iter().find(|(w, _)| *w == nm) {
                    Some((_, id)) => *id,
                    None => g.weight(nm.clone(), t.ty()),
                };
                out_w.insert(nm.clone(), (*t).clone());
                node_of.insert(cid, id);
                consts.insert(cid, (nm, t));
                continue;
            }
            _ => {}
        }
        let (op, args) =
            ir_op(eg, n).ok_or_else(|| err(format!("cannot convert {n:?} back to the IR")))?;
        let args: Vec<NodeId> = args
            .iter()
            .map(|a| {
                node_of
                    .get(&eg.find(*a))
                    .copied()
                    .ok_or_else(|| err("operand extracted after its user"))
            })
            .collect::<Result<_, _>>()?;
        let id = g.add(op, &args, label(cid, n))?;
        node_of.insert(cid, id);
    }
    let root = eg.find(b.root);
    let Some(Lang::Outputs(outs)) = c.best.get(&root) else {
        return Err(err("the root was not extracted"));
    };
    for (name, o) in b.outputs.iter().zip(outs.iter()) {
        let id = node_of
            .get(&eg.find(*o))
            .ok_or_else(|| err(format!("output `{name}` was not extracted")))?;
        g.set_output(name.clone(), *id);
    }
    Ok((g, out_w))
}

/// The chosen classes in dependency order, following the input graph's order where they came
/// from it (a rewritten class takes its original node's place; a new class goes right after its
/// latest operand), so the output graph's node order (its default schedule) stays the builder's.
fn creation_order(b: &Built, eg: &EG, c: &Choice) -> Vec<Id> {
    use egg::Language;
    let mut pos: HashMap<Id, usize> = HashMap::new();
    for (k, p) in &b.positions {
        let e = pos.entry(eg.find(*k)).or_insert(*p);
        *e = (*e).min(*p);
    }
    let mut key: HashMap<Id, (usize, Id)> = HashMap::new();
    let mut missing: HashMap<Id, usize> = HashMap::new();
    let mut users: HashMap<Id, Vec<Id>> = HashMap::new();
    for &cid in &c.order {
        let kids: Vec<Id> = c.best[&cid]
            .children()
            .iter()
            .map(|&k| eg.find(k))
            .collect();
        let latest = kids
            .iter()
            .filter_map(|k| key.get(k))
            .map(|k| k.0)
            .max()
            .unwrap_or(0);
        key.insert(cid, (pos.get(&cid).copied().unwrap_or(latest), cid));
        let mut uniq = kids.clone();
        uniq.sort();
        uniq.dedup();
        missing.insert(cid, uniq.len());
        for k in uniq {
            users.entry(k).or_default().push(cid);
        }
    }
    let mut ready: std::collections::BTreeSet<(usize, Id)> = c
        .order
        .iter()
        .filter(|id| missing[id] == 0)
        .map(|id| key[id])
        .collect();
    let mut out = Vec::with_capacity(c.order.len());
    while let Some((_, id)) = ready.pop_first() {
        out.push(id);
        for u in users.get(&id).into_iter().flatten() {
            let m = missing.get_mut(u).expect("chosen");
            *m -= 1;
            if *m == 0 {
                ready.insert(key[u]);
            }
        }
    }
    out
}

type Const = (String, Arc<Tensor>);

/// The value of a constant class: an original weight, or a transform of a materialized one.
fn materialize(
    eg: &EG,
    n: &Lang,
    consts: &HashMap<Id, Const>,
    weights: &Weights,
    derived: &mut HashMap<String, usize>,
) -> Result<Const, IrError> {
    let child = |id: Id| {
        consts
            .get(&eg.find(id))
            .cloned()
            .ok_or_else(|| err("constant operand missing"))
    };
    let mut fresh = |base: &str, tag: &str| {
        let k = derived.entry(base.to_string()).or_default();
        *k += 1;
        format!("{base}~{tag}{k}")
    };
    match n {
        Lang::Weight([s]) => {
            let nm = eg[*s]
                .data
                .sym
                .ok_or_else(|| err("weight without a name"))?;
            let t = weights
                .get(nm.as_str())
                .ok_or_else(|| IrError::tensor(nm.as_str(), "not in the weight store"))?;
            Ok((nm.as_str().to_string(), t.clone()))
        }
        Lang::Select(_) => {
            let (op, args) = ir_op(eg, n).ok_or_else(|| err("bad select"))?;
            let (base, t) = child(args[0])?;
            let out = eval(&op, &[&t])?;
            Ok((fresh(&base, "s"), Arc::new(out)))
        }
        Lang::Pack([tr, w]) | Lang::KIdx([tr, w]) => {
            let transposed = eg[*tr].data.num == Some(1);
            let (base, t) = child(*w)?;
            let (packed, idx) = pack(&t, transposed).ok_or_else(|| {
                IrError::tensor(&base, "cannot pack a non-float or low-rank tensor")
            })?;
            Ok(if matches!(n, Lang::Pack(_)) {
                (format!("{base}~packed"), Arc::new(packed))
            } else {
                (format!("{base}~kidx"), Arc::new(idx))
            })
        }
        other => Err(err(format!("{other:?} is not a constant transform"))),
    }
}

/// The live kernels of a dense weight in `(out, in)` order, and their index pairs.
pub fn pack(t: &Tensor, transposed: bool) -> Option<(Tensor, Tensor)> {
    let s = t.shape();
    let v = t.as_f32()?;
    if s.len() < 3 {
        return None;
    }
    let kvol: usize = s[2..].iter().product();
    let (d0, d1) = (s[0], s[1]);
    let (outs, ins) = if transposed { (d1, d0) } else { (d0, d1) };
    let mut data = Vec::new();
    let mut idx = Vec::new();
    for o in 0..outs {
        for i in 0..ins {
            let k = if transposed { i * d1 + o } else { o * d1 + i };
            let kern = &v[k * kvol..(k + 1) * kvol];
            if kern.iter().any(|x| *x != 0.0) {
                data.extend_from_slice(kern);
                idx.extend([o as i32, i as i32]);
            }
        }
    }
    let n = idx.len() / 2;
    let mut ps = vec![n];
    ps.extend_from_slice(&s[2..]);
    Some((
        Tensor::from_f32(ps, data).ok()?,
        Tensor::from_i32(vec![n, 2], idx).ok()?,
    ))
}
