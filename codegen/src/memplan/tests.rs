//! The memory plan on small graphs: concat parts placed in their concat, no two buffers alive
//! at once overlapping.
use super::*;
use e2enc_ir::{ConvAttrs, PoolAttrs, TensorType};

/// A 1x3x3 conv of `x` with weights `w`, same padding in (H, W).
fn conv3(g: &mut Graph, x: NodeId, w: NodeId) -> NodeId {
    g.add(
        Op::Conv3d(ConvAttrs {
            kernel: [1, 3, 3],
            stride: [1; 3],
            padding: [0, 1, 1],
        }),
        &[x, w],
        None,
    )
    .unwrap()
}

/// A 1x1x1 max pool of `x` (a copy the plan can place in a concat).
fn pool1(g: &mut Graph, x: NodeId) -> NodeId {
    g.add(
        Op::MaxPool3d(PoolAttrs {
            kernel: [1, 1, 1],
            stride: [1, 1, 1],
        }),
        &[x],
        None,
    )
    .unwrap()
}

#[test]
fn concat_parts_live_in_the_concat_and_buffers_do_not_overlap_in_time() {
    let mut g = Graph::new("t");
    let x = g.input("input", TensorType::f32([1, 2, 4, 4, 4]));
    let w = g.weight("w", TensorType::f32([3, 2, 1, 3, 3]));
    let conv = |g: &mut Graph, x| conv3(g, x, w);
    let a = conv(&mut g, x);
    let p = pool1(&mut g, x);
    let c = g.add(Op::Concat, &[a, p], None).unwrap();
    let w2 = g.weight("w2", TensorType::f32([2, 5, 1, 3, 3]));
    let y = conv3(&mut g, c, w2);
    g.set_output("logits", y);
    let p2 = plan(&g, |_| 0, |_| false, |_| None, &HashMap::new()).unwrap();
    assert_eq!(p2.in_place, vec![c]);
    assert_eq!(p2.views[&a].offset, p2.views[&c].offset);
    assert_eq!(
        p2.views[&p].offset,
        p2.views[&c].offset + 3 * p2.views[&c].c_stride
    );
    let overlaps = clashes(&p2);
    assert!(overlaps.is_empty(), "{overlaps:?}");
    // The input is dead once the concat is written; the output buffer may reuse its space.
    assert!(p2.arena_elems < p2.buffers.iter().map(|b| b.elems).sum::<usize>());
}

/// UNet++'s full-resolution chain of [previous node, upsampled] concats: with the parts free to
/// be stored in either order the plan needs less arena, every concat part still lies inside its
/// concat, and a reordered concat's map is a permutation.
#[test]
fn reordered_concats_shrink_the_unetpp_chain() {
    use e2enc_ir::e2enet::{build, BuildOptions, ModelConfig};
    let mut c = ModelConfig::amos_ct();
    c.base_width = 8;
    c.max_width = 32;
    c.pool_kernels = vec![[2, 2, 2]; 4];
    c.patch_size = [32, 32, 32];
    let g = build(&c, &BuildOptions::default()).unwrap().graph;
    let fixed = plan(&g, |_| 0, |_| false, |_| None, &HashMap::new()).unwrap();
    let free = plan(&g, |_| 0, |_| true, |_| None, &HashMap::new()).unwrap();
    assert!(fixed.channel_maps.is_empty());
    assert!(!free.channel_maps.is_empty());
    assert!(
        free.arena_elems < fixed.arena_elems,
        "{} vs {}",
        free.arena_elems,
        fixed.arena_elems
    );
    for (cat, map) in &free.channel_maps {
        let mut sorted = map.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..map.len()).collect::<Vec<_>>());
        let host = &free.views[cat];
        for part in g.operands(*cat) {
            let v = &free.views[&part];
            assert!(v.offset >= host.offset && v.end() <= host.end());
        }
    }
}

/// Lagged convs (`memplan/lag.rs`) on the UNet++ chain: the plan stores some convs' outputs over
/// their inputs, saving arena, and every two pieces alive at one step that overlap are such a
/// conv's output and its input at that conv's step, shifted by the lag plus whole channels.
#[test]
fn lagged_convs_overlap_only_their_own_input_and_shrink_the_arena() {
    let g = small_unetpp_optimized();
    let lag = |id: NodeId| {
        let x = *g.operands(id).first()?;
        crate::c::conv::lag_planes(&g.node(id).op, &g.node(x).ty, &g.node(id).ty)
    };
    let plain = plan(&g, |_| 0, |_| true, |_| None, &HashMap::new()).unwrap();
    let lagged = plan(&g, |_| 0, |_| true, lag, &HashMap::new()).unwrap();
    assert!(plain.lagged.is_empty());
    assert!(lagged.lagged.len() >= 3, "{:?}", lagged.lagged);
    assert!(
        lagged.arena_elems < plain.arena_elems,
        "{} vs {}",
        lagged.arena_elems,
        plain.arena_elems
    );
    let step_of = step_index(&lagged);
    let inside = |v: &View, p: &Piece| v.offset >= p.offset && v.end() <= p.offset + p.elems;
    let excused = |a: &Piece, b: &Piece| {
        lagged.lagged.iter().any(|(&id, &planes)| {
            let s = step_of[&id];
            let (out, x) = (&lagged.views[&id], &lagged.views[&g.operands(id)[0]]);
            let shift = (out.offset + planes * out.d_stride) as i64 - x.offset as i64;
            a.first == s
                && b.last == s
                && inside(out, a)
                && b.offset >= x.offset
                && b.offset + b.elems <= x.end()
                && out.c_stride == x.c_stride
                && shift.rem_euclid(x.c_stride as i64) == 0
        })
    };
    let overlaps = clashes(&lagged);
    for (b1, b2) in &overlaps {
        assert!(excused(b1, b2) || excused(b2, b1), "{b1:?} {b2:?}");
    }
    assert!(overlaps.len() >= lagged.lagged.len());
    // Each stash lies in its conv's scratch.
    for (id, &at) in &lagged.stash {
        let v = &lagged.views[id];
        let s = lagged.scratch[id];
        let elems = v.shape[1] * lagged.lagged[id] * v.d_stride;
        let b = lagged
            .buffers
            .iter()
            .find(|b| b.what == format!("scratch of {}", g.describe(*id)))
            .expect("the scratch buffer");
        assert_eq!(b.offset, s);
        assert!(at >= s && at + elems <= s + b.elems, "{b:?} {at} {elems}");
    }
}

/// Streamed upsamplings (`NodeCtx::stream`): their slice of the concat holds nothing, their input
/// lives until the conv that runs them, and the arena shrinks further.
#[test]
fn streamed_upsamplings_free_their_concat_slice() {
    let g = small_unetpp_optimized();
    let streams = crate::c::conv::stream_candidates(&g);
    assert!(streams.len() >= 4, "{streams:?}");
    let plain = plan(&g, |_| 0, |_| true, |_| None, &HashMap::new()).unwrap();
    let streamed = plan(&g, |_| 0, |_| true, |_| None, &streams).unwrap();
    assert_eq!(streamed.streamed, streams);
    assert!(
        streamed.arena_elems < plain.arena_elems,
        "{} vs {}",
        streamed.arena_elems,
        plain.arena_elems
    );
    let step_of = step_index(&streamed);
    for (&u, &y) in &streams {
        // The upsampling's input is alive when the conv runs it.
        let x = streamed.views[&g.operands(u)[0]].clone();
        let holder = streamed
            .buffers
            .iter()
            .find(|b| {
                let at = step_of[&u];
                b.offset <= x.offset
                    && x.end() <= b.offset + b.elems
                    && (b.first..=b.last).contains(&at)
            })
            .expect("the upsampling's input buffer");
        assert!(holder.last >= step_of[&y], "{holder:?}");
        // Its slice of the concat is a piece of no size.
        let cat = g.operands(y)[0];
        let cv = &streamed.views[&cat];
        let b = streamed
            .buffers
            .iter()
            .find(|b| b.offset == cv.offset && b.pieces.len() >= 2)
            .expect("the concat buffer");
        assert!(b.pieces.iter().any(|p| p.elems == 0), "{b:?}");
    }
    // Nothing alive at once overlaps.
    let overlaps = clashes(&streamed);
    assert!(overlaps.is_empty(), "{overlaps:?}");
}

/// A small AMOS-CT-shaped E2ENet (widths 8..32, 32^3 patch), optimized as `e2enc compile` does.
fn small_unetpp_optimized() -> Graph {
    use e2enc_ir::e2enet::{build, BuildOptions, ModelConfig};
    let mut c = ModelConfig::amos_ct();
    c.base_width = 8;
    c.max_width = 32;
    c.pool_kernels = vec![[2, 2, 2]; 4];
    c.patch_size = [32, 32, 32];
    let net = build(&c, &BuildOptions::default()).unwrap();
    let w = e2enc_ir::init::init_weights(&net.params, 7);
    e2enc_passes::optimize(&net.graph, &w, &Default::default())
        .unwrap()
        .graph
}

/// Pieces of two different buffers of `p` alive at one step that overlap.
/// Each running node's step.
fn step_index(p: &Plan) -> HashMap<NodeId, usize> {
    p.steps.iter().enumerate().map(|(i, &id)| (id, i)).collect()
}

fn clashes(p: &Plan) -> Vec<(Piece, Piece)> {
    let pieces: Vec<(usize, Piece)> = p
        .buffers
        .iter()
        .enumerate()
        .flat_map(|(i, b)| b.abs_pieces().into_iter().map(move |q| (i, q)))
        .collect();
    let mut out = Vec::new();
    for (k, (i1, b1)) in pieces.iter().enumerate() {
        for (i2, b2) in &pieces[k + 1..] {
            let time = b1.first <= b2.last && b2.first <= b1.last;
            let space = b1.offset < b2.offset + b2.elems && b2.offset < b1.offset + b1.elems;
            if i1 != i2 && time && space {
                out.push((b1.clone(), b2.clone()));
            }
        }
    }
    out
}

#[test]
fn bf16_buffers_where_every_writer_and_reader_can() {
    // input -> a (conv) -> concat [a, p (pool of input)] -> y (conv, output); plus b (conv of a)
    // read by a node that cannot take bf16 (an add).
    let mut g = Graph::new("t");
    let x = g.input("input", TensorType::f32([1, 2, 4, 6, 20]));
    let w = g.weight("w", TensorType::f32([3, 2, 1, 3, 3]));
    let a = conv3(&mut g, x, w);
    let p = pool1(&mut g, x);
    let c = g.add(Op::Concat, &[a, p], None).unwrap();
    let w2 = g.weight("w2", TensorType::f32([2, 5, 1, 3, 3]));
    let y = conv3(&mut g, c, w2);
    let w3 = g.weight("w3", TensorType::f32([2, 2, 1, 3, 3]));
    let b = conv3(&mut g, y, w3);
    let s = g.add(Op::Add, &[b, b], None).unwrap();
    g.set_output("logits", s);
    let able = |id: NodeId| !matches!(g.node(id).op, Op::Add);
    let rules = Narrow {
        writes: &able,
        reads: &able,
        scratch: &|_| 0,
        ring: &|_| 0,
    };
    let f32_plan = plan(&g, |_| 0, |_| false, |_| None, &HashMap::new()).unwrap();
    // The plan of `g` without scratch, lags or rings, narrowed by `rules`.
    let narrowed = |rules: &Narrow| {
        plan_with(&g, |_| 0, |_| false, |_| None, &HashMap::new(), Some(rules)).unwrap()
    };
    let p2 = narrowed(&rules);
    // The concat (a and p written into it) and y: bf16, half the elements; the graph's input,
    // b (read by the add) and the output: f32.
    for v in [a, p, c, y] {
        assert!(p2.views[&v].is_bf16(), "{v:?}");
    }
    for v in [x, b, s] {
        assert!(!p2.views[&v].is_bf16(), "{v:?}");
    }
    let cv = &p2.views[&c];
    assert_eq!(cv.offset % 2, 0);
    let buf = p2
        .buffers
        .iter()
        .find(|bb| 2 * bb.offset == cv.offset)
        .unwrap();
    assert_eq!(buf.elems, View::elems(cv.shape).div_ceil(2));
    assert_eq!(p2.views[&p].offset, cv.offset + 3 * cv.c_stride);
    assert!(clashes(&p2).is_empty(), "{:?}", clashes(&p2));
    assert!(p2.arena_elems < f32_plan.arena_elems);
    // A reader that cannot keeps its input f32: here the pool reads the graph input, and a
    // concat whose part's writer cannot stays f32 whole.
    let no_pool = |id: NodeId| !matches!(g.node(id).op, Op::Add | Op::MaxPool3d(_));
    let rules = Narrow {
        writes: &no_pool,
        reads: &no_pool,
        scratch: &|_| 0,
        ring: &|_| 0,
    };
    let p3 = narrowed(&rules);
    assert!(!p3.views[&c].is_bf16() && !p3.views[&a].is_bf16());
    assert!(p3.views[&y].is_bf16());
    // A ring of 64 f32 elements in y's scratch, after its own 16, holds values of y's input:
    // half of it is not needed where that input (the concat) is bf16, all of it where it is
    // f32 (whatever y's output is).
    let ring = |id: NodeId| if id == y { 64 } else { 0 };
    let with_ring = |writes: &dyn Fn(NodeId) -> bool| {
        let r = Narrow {
            writes,
            reads: writes,
            scratch: &|_| 0,
            ring: &ring,
        };
        let own = |id: NodeId| if id == y { 16 + 64 } else { 0 };
        let p = plan_with(&g, own, |_| false, |_| None, &HashMap::new(), Some(&r)).unwrap();
        let sb = p
            .buffers
            .iter()
            .find(|b| b.what == format!("scratch of {}", g.describe(y)))
            .expect("y's scratch")
            .elems;
        (p.ring_saved.get(&y).copied(), sb, p.views[&c].is_bf16())
    };
    assert_eq!(with_ring(&able), (Some(32), 48, true));
    assert_eq!(with_ring(&no_pool), (None, 80, false));
}
