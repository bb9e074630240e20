//! Schedule and memory plan: the order kernels run in, and where every activation lives.
//!
//! The schedule ([`schedule`]) is the stable topological order with max pools hoisted. Concat
//! operands are placed *in* the concat's buffer, as channel slices, when that is safe (the operand
//! is produced by a kernel, is a graph output of no one, and is an operand of no other concat), so
//! producers write their slice directly and the concat costs nothing; otherwise the concat copies.
//! Buffers get lifetimes (first write to last read, in steps; inputs from the start, outputs to
//! the end) and are packed into one arena, each at the lowest 64-byte aligned offset that no
//! buffer alive at the same time overlaps, in a few greedy orders and then a seeded local search
//! over the order (same graph, same plan). A concat whose readers all address input channels
//! through a table (the fast conv path) may store its parts in any order, which the placement
//! picks: UNet++'s full-resolution chain then rotates through three buffer slots instead of
//! drifting through four. Scratch is a buffer alive for one step.
//!
//! A conv that reads its input for the last time may store its output over that input, shifted
//! down a few planes, when its kernel can run in depth order (`lag_planes`; `memplan/lag.rs`
//! says why that is safe): the full-resolution chain then needs the space of one concat instead
//! of one and a half. Plans are made with and without that, and the smaller arena is kept.
//! A streamed upsampling (the code generator picks them: `c::conv::stream_candidates`) runs
//! inside the conv reading its concat, into a ring in that conv's scratch: its slice of the
//! concat is a piece of no size, and its input lives until that conv's step.
//!
//! bf16 bundles ([`plan_with`] and [`Narrow`]) store a buffer as bf16 when every node writing a
//! value in it and every node reading one can: the buffer then takes half the arena elements
//! (its views count 16-bit elements, `View::padded_bf16`), a streamed upsampling's ring takes
//! its concat's type, and a conv lags only over an input stored like its output.

use std::collections::{HashMap, HashSet};

use e2enc_ir::{Graph, NodeId, Op};

use crate::layout::View;
pub use e2enc_runtime::format::{Buffer, Piece};

mod lag;
use lag::Lag;

/// The plan of one graph.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The nodes that run, in order (one step each).
    pub steps: Vec<NodeId>,
    /// Where each activation (input and op node) lives.
    pub views: HashMap<NodeId, View>,
    /// Concats whose operands were written in place (they run no kernel).
    pub in_place: Vec<NodeId>,
    /// In-place concats stored in another channel order: logical channel -> stored channel. Their
    /// readers (see `reads_channel_map` of [`plan`]) address input channels through it.
    pub channel_maps: HashMap<NodeId, Vec<usize>>,
    /// Scratch offset of each step's node (0 when it needs none).
    pub scratch: HashMap<NodeId, usize>,
    /// Convs whose output overlaps their input (see `memplan/lag.rs`): they must run in depth
    /// order, groups of planes at a time, their first planes through a stash. Node -> lag planes.
    pub lagged: HashMap<NodeId, usize>,
    /// Arena offset of each lagged conv's stash (inside its scratch, after what the kernels
    /// asked for): the conv's first `lagged` planes of every output channel.
    pub stash: HashMap<NodeId, usize>,
    /// Arena offset of the extra scratch of each node stored as bf16 that asked for some
    /// (`Narrow::scratch`: a normalized conv's tile shifts), after everything else in its scratch.
    pub narrow_scratch: HashMap<NodeId, usize>,
    /// Streamed upsamplings -> the conv that runs them (into a ring in its scratch): they run no
    /// kernel at their own step, and their slice of the concat holds nothing.
    pub streamed: HashMap<NodeId, NodeId>,
    /// Scratch elements a node's ring does not take because it holds bf16 (`Narrow::ring`): the
    /// ring is stored as the concat it stands in for, half the f32 size asked for.
    pub ring_saved: HashMap<NodeId, usize>,
    pub buffers: Vec<Buffer>,
    /// Arena size in f32 elements.
    pub arena_elems: usize,
}

/// The activation operand of a node with exactly one (its other operands weights).
pub(crate) fn one_activation(g: &Graph, id: NodeId) -> Option<NodeId> {
    match g
        .operands(id)
        .into_iter()
        .filter(|&o| !matches!(g.node(o).op, Op::Weight { .. }))
        .collect::<Vec<_>>()
        .as_slice()
    {
        [x] => Some(*x),
        _ => None,
    }
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

/// Another storage order of an in-place concat's parts.
struct Reordered {
    /// The pieces in that order (relative to the buffer, sorted by offset).
    pieces: Vec<Piece>,
    /// Each part and the channel it starts at in storage.
    stored: Vec<(NodeId, usize)>,
}

/// The most elements alive at once (whatever the layout): no placement needs less.
fn live_bound(layouts: &[Vec<Vec<Piece>>]) -> usize {
    let mut events: Vec<(usize, bool, usize)> = Vec::new();
    for p in layouts.iter().flat_map(|l| &l[0]) {
        events.push((p.first, true, p.elems));
        events.push((p.last.saturating_add(1), false, p.elems));
    }
    // Ends sort before starts at the same step: `last` is inclusive, so end+1 frees first.
    events.sort_by_key(|e| (e.0, e.1));
    let (mut now, mut most) = (0usize, 0usize);
    for (_, start, elems) in events {
        if start {
            now += elems;
            most = most.max(now);
        } else {
            now -= elems;
        }
    }
    most
}

/// Every order of `0..n`, the identity first (lexicographic).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut p = vec![first];
            p.extend(rest.into_iter().map(|k| if k >= first { k + 1 } else { k }));
            out.push(p);
        }
    }
    out
}

/// A sort key for the order buffers are placed in.
type OrderKey = fn(&Buffer) -> (i64, i64);

/// The order kernels run in: the graph's stable topological order (the E2ENet builder creates
/// nodes in UNet++ order: each backbone level, then the fusion diagonal it completes), except
/// that a max pool runs as soon as its input exists. The pools are cheap and their outputs small,
/// so each full-resolution value dies as soon as the grid allows.
pub fn schedule(g: &Graph) -> Result<Vec<NodeId>, String> {
    g.topo_order().map_err(|e| e.to_string())?; // rejects cycles
    let is_leaf = |id: NodeId| matches!(g.node(id).op, Op::Input { .. } | Op::Weight { .. });
    let mut missing: HashMap<NodeId, usize> = HashMap::new();
    for id in g.node_ids().filter(|&id| !is_leaf(id)) {
        missing.insert(
            id,
            g.operands(id).into_iter().filter(|&o| !is_leaf(o)).count(),
        );
    }
    let key = |id: NodeId| (!matches!(g.node(id).op, Op::MaxPool3d(_)), id);
    let mut ready: std::collections::BTreeSet<(bool, NodeId)> = missing
        .iter()
        .filter(|(_, &m)| m == 0)
        .map(|(&id, _)| key(id))
        .collect();
    let mut order = Vec::with_capacity(missing.len());
    while let Some((_, id)) = ready.pop_first() {
        order.push(id);
        for (user, _) in g.users(id) {
            if let Some(m) = missing.get_mut(&user) {
                *m -= 1;
                if *m == 0 {
                    ready.insert(key(user));
                }
            }
        }
    }
    Ok(order)
}

/// Offsets for buffers placed in the order `idx` (first fit over pieces). `layouts[i]` lists
/// the piece layouts buffer `i` may take (relative to its start); each buffer gets the lowest
/// offset any of its layouts fits at, the earlier layout on a tie. Returns (offset, layout).
fn place(layouts: &[Vec<Vec<Piece>>], lags: &[Lag], idx: &[usize]) -> Vec<(usize, usize)> {
    let mut chosen = vec![(0, 0); layouts.len()];
    let mut is_placed = vec![false; layouts.len()];
    // Placed pieces (absolute) and the buffer each belongs to.
    let mut placed: Vec<(Piece, usize)> = Vec::new();
    for &i in idx {
        let mut best: Option<(usize, usize)> = None;
        for (li, mine) in layouts[i].iter().enumerate() {
            let clash = |at: usize| {
                mine.iter().any(|q| {
                    let (qs, qe) = (at + q.offset, at + q.offset + q.elems);
                    placed.iter().any(|(p, owner)| {
                        p.first <= q.last
                            && q.first <= p.last
                            && qs < p.offset + p.elems
                            && p.offset < qe
                            && !lag::allowed(lags, (i, at, q), (*owner, chosen[*owner].0, p))
                    })
                })
            };
            let mut candidates: Vec<usize> = vec![0];
            for (p, _) in &placed {
                for q in mine {
                    let end = (p.offset + p.elems).div_ceil(ALIGN) * ALIGN;
                    if end >= q.offset {
                        candidates.push((end - q.offset).div_ceil(ALIGN) * ALIGN);
                    }
                }
            }
            lag::candidates(lags, i, mine, &placed, &chosen, &is_placed, &mut candidates);
            candidates.sort_unstable();
            candidates.dedup();
            let at = candidates
                .into_iter()
                .find(|&c| !clash(c))
                .expect("past every placed piece nothing clashes");
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, li));
            }
        }
        let (at, li) = best.expect("every buffer has a layout");
        chosen[i] = (at, li);
        is_placed[i] = true;
        placed.extend(layouts[i][li].iter().map(|q| {
            (
                Piece {
                    offset: at + q.offset,
                    ..q.clone()
                },
                i,
            )
        }));
    }
    chosen
}

/// Plans `g`. `scratch_elems(node)` says how much scratch each op node needs;
/// `reads_channel_map(node)` says whether `node`'s kernel can read its activation input through a
/// channel map (so the parts of a concat feeding only such nodes may be stored in another order);
/// `lag_planes(node)` says whether the node's kernel can run lagged (its output over its input,
/// see `memplan/lag.rs`) and with how many planes of lag.
pub fn plan(
    g: &Graph,
    scratch_elems: impl Fn(NodeId) -> usize,
    reads_channel_map: impl Fn(NodeId) -> bool,
    lag_planes: impl Fn(NodeId) -> Option<usize>,
    streamed: &HashMap<NodeId, NodeId>,
) -> Result<Plan, String> {
    plan_with(
        g,
        scratch_elems,
        reads_channel_map,
        lag_planes,
        streamed,
        None,
    )
}

/// What the kernels of a bundle can do with bf16 activations (`--precision bf16`): whether a
/// node's kernels can write its output as bf16, and whether a node's kernels can read any of
/// their activation inputs as bf16 (each on its own).
pub struct Narrow<'a> {
    pub writes: &'a dyn Fn(NodeId) -> bool,
    pub reads: &'a dyn Fn(NodeId) -> bool,
    /// Scratch elements a node needs beyond `scratch_elems` when its output is stored as bf16.
    pub scratch: &'a dyn Fn(NodeId) -> usize,
    /// Elements of a node's `scratch_elems` (right after its own, aligned) that hold a ring of
    /// its activation input's values (a streamed upsampling's): half of them are not needed
    /// when that input is stored as bf16 ([`Plan::ring_saved`]).
    pub ring: &'a dyn Fn(NodeId) -> usize,
}

/// [`plan`], storing as bf16 every buffer that `narrow` allows (see [`narrow_roots`]).
pub fn plan_with(
    g: &Graph,
    scratch_elems: impl Fn(NodeId) -> usize,
    reads_channel_map: impl Fn(NodeId) -> bool,
    lag_planes: impl Fn(NodeId) -> Option<usize>,
    streamed: &HashMap<NodeId, NodeId>,
    narrow: Option<&Narrow>,
) -> Result<Plan, String> {
    // First without stashes, to learn which convs the placement lags; then again with a stash
    // in the scratch of each (only those may lag). The stashes cost memory too: where lagging
    // saves none, the plan without it wins (ties included).
    let plain = plan_pass(
        g,
        &scratch_elems,
        &reads_channel_map,
        &|_| None,
        streamed,
        narrow,
    )?;
    let first = plan_pass(
        g,
        &scratch_elems,
        &reads_channel_map,
        &lag_planes,
        streamed,
        narrow,
    )?;
    if first.lagged.is_empty() {
        return Ok(plain);
    }
    let stash_elems = |id: NodeId| {
        first.lagged.get(&id).map(|&planes| {
            let v = View::padded(0, shape5(g, id));
            let n = v.shape[1] * planes * v.d_stride;
            match first.views[&id].is_bf16() {
                true => n.div_ceil(2),
                false => n,
            }
        })
    };
    let own = |id: NodeId| scratch_elems(id).div_ceil(ALIGN) * ALIGN;
    let scratch2 = |id: NodeId| own(id) + stash_elems(id).unwrap_or(0);
    let lag2 = |id: NodeId| first.lagged.get(&id).and_then(|_| lag_planes(id));
    let mut second = plan_pass(g, &scratch2, &reads_channel_map, &lag2, streamed, narrow)?;
    let saved = |id: NodeId| second.ring_saved.get(&id).copied().unwrap_or(0);
    second.stash = second
        .lagged
        .keys()
        .map(|&id| (id, second.scratch[&id] + own(id) - saved(id)))
        .collect();
    Ok(if second.arena_elems < plain.arena_elems {
        second
    } else {
        plain
    })
}

fn plan_pass(
    g: &Graph,
    scratch_elems: &dyn Fn(NodeId) -> usize,
    reads_channel_map: &dyn Fn(NodeId) -> bool,
    lag_planes: &dyn Fn(NodeId) -> Option<usize>,
    streamed: &HashMap<NodeId, NodeId>,
    narrow: Option<&Narrow>,
) -> Result<Plan, String> {
    let steps = schedule(g)?;
    let step_of: HashMap<NodeId, usize> =
        steps.iter().enumerate().map(|(i, &id)| (id, i)).collect();
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

    // Streamed upsamplings (their consumer runs them plane by plane into a ring in its scratch)
    // need their concat in place: their slice of it then never holds anything.
    let streamed: HashMap<NodeId, NodeId> = streamed
        .iter()
        .filter(|(u, _)| host.contains_key(u))
        .map(|(&u, &y)| (u, y))
        .collect();
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
        // A streamed upsampling reads its input when its consumer runs.
        let reads_at = streamed.get(&id).map_or(i, |y| step_of[y]);
        for o in g.operands(id) {
            if matches!(g.node(o).op, Op::Weight { .. }) {
                continue;
            }
            touch(&mut last, root_of(o), reads_at, false);
        }
    }
    for &o in &outputs {
        touch(&mut last, root_of(o), usize::MAX, false);
    }

    // Channels a part occupies in its concat (none for a streamed one).
    let held = |v: NodeId| match streamed.contains_key(&v) {
        true => 0,
        false => g.node(v).ty.shape[1],
    };
    let mut roots: Vec<NodeId> = first.keys().copied().collect();
    roots.sort();
    let narrowed: HashSet<NodeId> = match narrow {
        Some(rules) => narrow_roots(g, &roots, &host, &outputs, rules),
        None => HashSet::new(),
    };
    // Elements (in f32 elements of the arena) of `n` elements of root `r`'s storage.
    let units = |r: NodeId, n: usize| match narrowed.contains(&r) {
        true => n.div_ceil(2),
        false => n,
    };
    // Concat parts written in place (batch 1: each part is one contiguous slice) become pieces
    // alive from their own producer on, so a part produced late does not reserve its slice early.
    let mut parts_of: HashMap<NodeId, Vec<(NodeId, usize)>> = HashMap::new();
    for (&v, &(c, c0)) in &host {
        parts_of.entry(c).or_default().push((v, c0));
    }
    let mut buffers: Vec<(NodeId, Buffer)> = roots
        .iter()
        .map(|&r| {
            let what = g.node(r).label.clone().unwrap_or_else(|| g.describe(r));
            let shape = shape5(g, r);
            let mut b = Buffer {
                what,
                offset: 0,
                elems: units(r, View::elems(shape)),
                first: first[&r],
                last: last[&r],
                pieces: vec![],
            };
            if let (Some(parts), 1) = (parts_of.get(&r), shape[0]) {
                let cs = View::padded(0, shape).c_stride;
                let mut ps: Vec<Piece> = parts
                    .iter()
                    .map(|&(v, c0)| Piece {
                        offset: units(r, c0 * cs),
                        elems: units(r, held(v) * cs),
                        first: step_of[&v],
                        last: b.last,
                    })
                    .collect();
                ps.sort_by_key(|p| p.offset);
                b.pieces = ps;
            }
            (r, b)
        })
        .collect();
    // A concat whose every reader takes a channel map may store its parts in any order: in
    // UNet++'s full-resolution chain each concat is [previous node, upsampled], and storing every
    // other one as [upsampled, previous node] lets three buffer slots rotate instead of the chain
    // drifting through four. The placement below picks the order (up to 4 parts: 24 orders).
    let mut reorders: HashMap<NodeId, Vec<Reordered>> = HashMap::new();
    for (r, b) in &buffers {
        let Some(parts) = parts_of.get(r) else {
            continue;
        };
        let readers: Vec<NodeId> = g.users(*r).into_iter().map(|u| u.0).collect();
        if !(2..=4).contains(&b.pieces.len())
            || readers.is_empty()
            || !readers.iter().all(|&u| reads_channel_map(u))
        {
            continue;
        }
        let cs = View::padded(0, shape5(g, *r)).c_stride;
        let mut by_c0 = parts.clone();
        by_c0.sort_by_key(|p| p.1);
        let mut alts = Vec::new();
        for order in permutations(by_c0.len()).into_iter().skip(1) {
            let (mut pieces, mut stored, mut at) = (Vec::new(), Vec::new(), 0);
            for &k in &order {
                let v = by_c0[k].0;
                let c = g.node(v).ty.shape[1];
                pieces.push(Piece {
                    offset: units(*r, at * cs),
                    elems: units(*r, held(v) * cs),
                    first: step_of[&v],
                    last: b.last,
                });
                stored.push((v, at));
                at += c;
            }
            pieces.sort_by_key(|p| p.offset);
            alts.push(Reordered { pieces, stored });
        }
        reorders.insert(*r, alts);
    }
    let mut scratch_buf: Vec<(NodeId, Buffer)> = Vec::new();
    let mut extra_at: HashMap<NodeId, usize> = HashMap::new();
    let mut ring_saved: HashMap<NodeId, usize> = HashMap::new();
    for &id in &steps {
        let mut n = scratch_elems(id);
        if let Some(rules) = narrow {
            let ring = (rules.ring)(id);
            if let (Some(x), true) = (one_activation(g, id), ring > 0) {
                if narrowed.contains(&root_of(x)) {
                    let cut = ring / 2;
                    n -= cut;
                    ring_saved.insert(id, cut);
                }
            }
        }
        if let (Some(rules), true) = (narrow, narrowed.contains(&root_of(id))) {
            let extra = (rules.scratch)(id);
            if extra > 0 {
                n = n.div_ceil(ALIGN) * ALIGN;
                extra_at.insert(id, n);
                n += extra;
            }
        }
        if n > 0 {
            let s = step_of[&id];
            scratch_buf.push((
                id,
                Buffer {
                    what: format!("scratch of {}", g.describe(id)),
                    offset: 0,
                    elems: n,
                    first: s,
                    last: s,
                    pieces: vec![],
                },
            ));
        }
    }
    let mut all: Vec<(Option<NodeId>, Option<NodeId>, Buffer)> = buffers
        .drain(..)
        .map(|(r, b)| (Some(r), None, b))
        .chain(scratch_buf.into_iter().map(|(id, b)| (None, Some(id), b)))
        .collect();
    // Each buffer goes to the lowest aligned offset where none of its pieces meets a placed piece
    // alive at the same time. The order buffers are placed in matters (fragmentation), so a few
    // orders are tried and the smallest arena kept; ties keep the first (deterministic).
    let orders: [OrderKey; 4] = [
        |b| (-(b.elems as i64), b.first as i64),
        |b| (b.first as i64, -(b.elems as i64)),
        |b| {
            (
                -((b.elems as f64) * (b.last.min(1 << 20) - b.first + 1) as f64) as i64,
                b.first as i64,
            )
        },
        |b| (-((b.last.min(1 << 20) - b.first) as i64), -(b.elems as i64)),
    ];
    // Convs that may store their output over their input (which they read last).
    let index_of: HashMap<NodeId, usize> = all
        .iter()
        .enumerate()
        .filter_map(|(k, t)| t.0.map(|r| (r, k)))
        .collect();
    let mut lags: Vec<(NodeId, usize, Lag)> = Vec::new();
    for (s, &id) in steps.iter().enumerate() {
        let Some(planes) = lag_planes(id) else {
            continue;
        };
        let Some(input) = one_activation(g, id) else {
            continue;
        };
        let (ri, ro) = (root_of(input), root_of(id));
        let (si, so) = (shape5(g, ri), shape5(g, ro));
        // Input and output stored alike (the lag's geometry counts arena elements: half a
        // value's for bf16).
        let narrow_lag = narrowed.contains(&ri);
        if narrow_lag != narrowed.contains(&ro) {
            continue;
        }
        if ri == ro || last[&ri] != s || si[0] != 1 || so[0] != 1 || si[2..] != so[2..] {
            continue;
        }
        let v = View::padded(0, si);
        lags.push((
            id,
            planes,
            Lag {
                step: s,
                out: index_of[&ro],
                input: index_of[&ri],
                shift: units(ri, planes * v.d_stride),
                cs: units(ri, v.c_stride),
                in_channels: si[1],
                out_channels: so[1],
            },
        ));
    }
    let lag_rules: Vec<Lag> = lags.iter().map(|l| l.2.clone()).collect();
    let layouts: Vec<Vec<Vec<Piece>>> = all
        .iter()
        .map(|(r, _, b)| {
            let mut ls = vec![b.abs_pieces()];
            if let Some(alts) = r.and_then(|r| reorders.get(&r)) {
                ls.extend(alts.iter().map(|a| a.pieces.clone()));
            }
            ls
        })
        .collect();
    let size_of = |offsets: &[(usize, usize)]| {
        all.iter()
            .zip(offsets)
            .map(|(t, o)| o.0 + t.2.elems)
            .max()
            .unwrap_or(0)
    };
    // (arena size, placement order, (offset, layout) per buffer)
    type Placed = (usize, Vec<usize>, Vec<(usize, usize)>);
    let mut best: Option<Placed> = None;
    for key in orders {
        let mut idx: Vec<usize> = (0..all.len()).collect();
        idx.sort_by(|&x, &y| {
            key(&all[x].2)
                .cmp(&key(&all[y].2))
                .then_with(|| all[x].2.what.cmp(&all[y].2.what))
        });
        let offsets = place(&layouts, &lag_rules, &idx);
        let size = size_of(&offsets);
        if best.as_ref().is_none_or(|(s, _, _)| size < *s) {
            best = Some((size, idx, offsets));
        }
    }
    // Local search from the best greedy order: move one buffer elsewhere in the placement order
    // and keep the change when the arena does not grow; stop at the live-size bound or after
    // `STALL` moves without a gain. A fixed-seed generator: same graph, same plan.
    const STALL: usize = 1500;
    const ROUNDS: usize = 6000;
    let bound = live_bound(&layouts);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    if let Some((mut bsize, mut bidx, mut boff)) = best.take() {
        let (mut round, mut stall) = (0, 0);
        while bidx.len() > 1 && bsize > bound && round < ROUNDS && stall < STALL {
            round += 1;
            let mut idx = bidx.clone();
            let b = idx.remove(next(idx.len()));
            idx.insert(next(idx.len() + 1), b);
            let offsets = place(&layouts, &lag_rules, &idx);
            let size = size_of(&offsets);
            stall = if size < bsize { 0 } else { stall + 1 };
            if size <= bsize {
                (bsize, bidx, boff) = (size, idx, offsets);
            }
        }
        best = Some((bsize, bidx, boff));
    }
    let best = best.map(|(s, _, o)| (s, o));
    let mut lagged = HashMap::new();
    if let Some((_, offsets)) = &best {
        let pieces: Vec<Vec<Piece>> = offsets
            .iter()
            .zip(&layouts)
            .map(|(o, ls)| ls[o.1].clone())
            .collect();
        let elems: Vec<usize> = all.iter().map(|t| t.2.elems).collect();
        let at: Vec<usize> = offsets.iter().map(|o| o.0).collect();
        for l in lag::lagged(&lag_rules, &pieces, &elems, &at) {
            let (id, planes, _) = lags.iter().find(|x| x.2.step == l.step).expect("a rule");
            lagged.insert(*id, *planes);
        }
    }
    let mut channel_maps: HashMap<NodeId, Vec<usize>> = HashMap::new();
    if let Some((_, offsets)) = best {
        for (t, (o, layout)) in all.iter_mut().zip(offsets) {
            t.2.offset = o;
            if layout == 0 {
                continue;
            }
            let r = t.0.expect("only concat buffers have other layouts");
            let alt = &reorders[&r][layout - 1];
            t.2.pieces = alt.pieces.clone();
            let mut map = vec![0; g.node(r).ty.shape[1]];
            for &(v, phys) in &alt.stored {
                let logical = host[&v].1;
                for j in 0..g.node(v).ty.shape[1] {
                    map[logical + j] = phys + j;
                }
                host.insert(v, (r, phys));
            }
            channel_maps.insert(r, map);
        }
    }
    let arena_elems = all
        .iter()
        .map(|(_, _, b)| b.offset + b.elems)
        .max()
        .unwrap_or(0)
        .div_ceil(ALIGN)
        * ALIGN;

    let mut views: HashMap<NodeId, View> = HashMap::new();
    let mut scratch = HashMap::new();
    let mut narrow_scratch = HashMap::new();
    for (root, sid, b) in &all {
        if let Some(r) = root {
            let v = match narrowed.contains(r) {
                true => View::padded_bf16(b.offset, shape5(g, *r)),
                false => View::padded(b.offset, shape5(g, *r)),
            };
            views.insert(*r, v);
        }
        if let Some(id) = sid {
            scratch.insert(*id, b.offset);
            if let Some(at) = extra_at.get(id) {
                narrow_scratch.insert(*id, b.offset + at);
            }
        }
    }
    for (&v, &(c, c0)) in &host {
        let hv = views[&c].clone();
        views.insert(v, hv.channels(c0, g.node(v).ty.shape[1]));
    }
    let mut buffers: Vec<Buffer> = all.into_iter().map(|(_, _, b)| b).collect();
    buffers.sort_by_key(|b| (b.offset, b.first));
    Ok(Plan {
        steps,
        views,
        channel_maps,
        in_place,
        scratch,
        lagged,
        stash: HashMap::new(),
        narrow_scratch,
        streamed,
        ring_saved,
        buffers,
        arena_elems,
    })
}

/// The roots (buffers) that may be stored as bf16: not a graph input or output, f32, every
/// value stored in it written by a node whose kernels can write bf16 (a streamed upsampling
/// writes its consumer's ring, which takes the buffer's type), and every node reading a value
/// stored in it able to read bf16. An in-place concat runs no kernel: its parts' producers
/// and its readers decide.
fn narrow_roots(
    g: &Graph,
    roots: &[NodeId],
    host: &HashMap<NodeId, (NodeId, usize)>,
    outputs: &[NodeId],
    rules: &Narrow,
) -> HashSet<NodeId> {
    let mut members: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for (&v, &(c, _)) in host {
        members.entry(c).or_default().push(v);
    }
    roots
        .iter()
        .copied()
        .filter(|&r| {
            let node = g.node(r);
            if matches!(node.op, Op::Input { .. } | Op::Weight { .. })
                || node.ty.dtype != e2enc_ir::DType::F32
                || outputs.contains(&r)
            {
                return false;
            }
            let parts = members.get(&r).cloned().unwrap_or_else(|| vec![r]);
            if parts
                .iter()
                .any(|&m| outputs.contains(&m) || !(rules.writes)(m))
            {
                return false;
            }
            let in_place = members.contains_key(&r);
            parts
                .iter()
                .chain(in_place.then_some(&r))
                .flat_map(|&v| g.users(v))
                .map(|(u, _)| u)
                .filter(|&u| !(in_place && u == r))
                .all(|u| (rules.reads)(u))
        })
        .collect()
}

#[cfg(test)]
mod tests;
