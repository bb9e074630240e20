//! Soundness of every rewrite rule: for random small graphs where the rule applies (channel
//! counts 1..6, extents up to 6, batch 1 or 2, strides 1 and 2 where valid, shift groups 3 and 5,
//! kernel sparsity from all-zero through random to fully dense, all-zero DSFF edges), `optimize`
//! with only the rules the case needs fires the target rule and the interpreter gives the same
//! outputs before and after (relative 1e-4, `common::TOL`).
//!
//! Graphs are built with the IR builder (shape inference checks them), weights come from
//! `common::seeded_weights` under a proptest-chosen seed (never zero, so only the masks make
//! kernels dead) and inputs from `common::seeded_inputs`. 32 cases per rule keep the file fast;
//! `PROPTEST_CASES=N` runs N per rule.

mod common;

use e2enc_ir::text::print;
use e2enc_ir::{ConvAttrs, Graph, NodeId, Op, PoolAttrs, ShiftAttrs, TensorType, Weights};
use e2enc_passes::{optimize, OptimizeOptions, Optimized};
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per rule: 32, or `PROPTEST_CASES` when set (for longer hunts).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

// ---- graph building --------------------------------------------------------------------------

/// Per-axis choices of a convolution: kernel 1 or 3, stride 1 or 2, "same" padding or none.
type AxisConv = (usize, usize, bool);

fn axis_conv(max_stride: usize) -> impl Strategy<Value = AxisConv> {
    (
        prop_oneof![Just(1usize), Just(3)],
        1..=max_stride,
        any::<bool>(),
    )
}

/// Conv geometry over input extents `vol`; padding falls back to "same" where the kernel would
/// not fit unpadded.
fn conv_attrs(ax: &[AxisConv; 3], vol: &[usize]) -> ConvAttrs {
    let mut a = ConvAttrs {
        kernel: [1; 3],
        stride: [1; 3],
        padding: [0; 3],
    };
    for i in 0..3 {
        let (k, s, same) = ax[i];
        a.kernel[i] = k;
        a.stride[i] = s;
        a.padding[i] = if same || vol[i] < k { (k - 1) / 2 } else { 0 };
    }
    a
}

/// Per-axis choices of a transposed conv: kernel 1..3, stride 1 or 2, padding 0 or (k-1)/2.
fn axis_convt() -> impl Strategy<Value = AxisConv> {
    (1usize..=3, 1usize..=2, any::<bool>())
}

fn convt_attrs(ax: &[AxisConv; 3]) -> ConvAttrs {
    ConvAttrs {
        kernel: ax.map(|a| a.0),
        stride: ax.map(|a| a.1),
        padding: ax.map(|(k, _, p)| if p { (k - 1) / 2 } else { 0 }),
    }
}

fn vol() -> impl Strategy<Value = [usize; 3]> {
    proptest::array::uniform3(1usize..=6)
}

fn shape(n: usize, c: usize, v: &[usize]) -> TensorType {
    TensorType::f32(vec![n, c, v[0], v[1], v[2]])
}

fn dims(g: &Graph, x: NodeId) -> Vec<usize> {
    g.node(x).ty.shape.clone()
}

fn conv(g: &mut Graph, x: NodeId, cout: usize, a: &ConvAttrs, bias: bool, name: &str) -> NodeId {
    let cin = dims(g, x)[1];
    let mut ws = vec![cout, cin];
    ws.extend(a.kernel);
    let w = g.weight(format!("{name}.weight"), TensorType::f32(ws));
    let mut args = vec![x, w];
    if bias {
        args.push(g.weight(format!("{name}.bias"), TensorType::f32(vec![cout])));
    }
    g.add(Op::Conv3d(a.clone()), &args, Some(format!("{name}.conv")))
        .expect("conv type-checks")
}

fn convt(g: &mut Graph, x: NodeId, cout: usize, a: &ConvAttrs, bias: bool, name: &str) -> NodeId {
    let cin = dims(g, x)[1];
    let mut ws = vec![cin, cout];
    ws.extend(a.kernel);
    let w = g.weight(format!("{name}.weight"), TensorType::f32(ws));
    let mut args = vec![x, w];
    if bias {
        args.push(g.weight(format!("{name}.bias"), TensorType::f32(vec![cout])));
    }
    g.add(
        Op::ConvTranspose3d(a.clone()),
        &args,
        Some(format!("{name}.up")),
    )
    .expect("transposed conv type-checks")
}

fn norm(g: &mut Graph, x: NodeId, eps: f32, name: &str) -> NodeId {
    let c = dims(g, x)[1];
    let gamma = g.weight(format!("{name}.gamma"), TensorType::f32(vec![c]));
    let beta = g.weight(format!("{name}.beta"), TensorType::f32(vec![c]));
    g.add(
        Op::InstanceNorm { eps },
        &[x, gamma, beta],
        Some(format!("{name}.norm")),
    )
    .expect("norm type-checks")
}

fn act(g: &mut Graph, x: NodeId, slope: f32) -> NodeId {
    g.add(Op::LeakyRelu { slope }, &[x], None)
        .expect("act type-checks")
}

fn shift(g: &mut Graph, x: NodeId, groups: usize) -> NodeId {
    g.add(Op::DepthShift(ShiftAttrs { groups }), &[x], None)
        .expect("shift type-checks")
}

fn select(g: &mut Graph, x: NodeId, axis: usize, ranges: Vec<(usize, usize)>) -> NodeId {
    g.add(Op::SelectChannels { axis, ranges }, &[x], None)
        .expect("select type-checks")
}

/// A non-empty subset of `0..n` from random flags (index `pick` forced in when all are off).
fn subset(flags: &[bool], n: usize, pick: &Index) -> Vec<(usize, usize)> {
    let mut f: Vec<bool> = (0..n).map(|i| flags[i % flags.len()]).collect();
    if !f.iter().any(|x| *x) {
        f[pick.index(n)] = true;
    }
    common::runs_of(&f)
}

/// Seeded weights for `g`, then each named rank-5 weight masked at `density`.
fn weights(g: &Graph, seed: u64, masked: &[(&str, f64)]) -> Weights {
    let mut w = common::seeded_weights(g, seed).expect("f32 weights");
    for &(name, density) in masked {
        let s = w.get(name).expect("masked weight").shape().to_vec();
        let live = common::random_mask(seed, name, s[0], s[1], density);
        common::apply_mask(&mut w, name, &live);
    }
    w
}

fn density() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0]
}

fn groups() -> impl Strategy<Value = usize> {
    prop_oneof![Just(3usize), Just(5)]
}

/// Optimizes `g` with `rules`, checks that every `target` fired and that the outputs agree.
fn check(
    g: &Graph,
    w: &Weights,
    rules: &[&str],
    targets: &[&str],
    seed: u64,
) -> Result<Optimized, TestCaseError> {
    e2enc_ir::verify::verify_with_weights(g, w)
        .map_err(|e| fail(format!("the test built a bad graph: {e}\n{}", print(g))))?;
    let opts = OptimizeOptions {
        keep_outputs: None,
        rules: Some(rules.iter().map(|s| s.to_string()).collect()),
        ..OptimizeOptions::default()
    };
    let opt = optimize(g, w, &opts).map_err(|e| fail(format!("optimize: {e}\n{}", print(g))))?;
    for t in targets {
        prop_assert!(
            opt.report.applied.get(*t).copied().unwrap_or(0) > 0,
            "rule `{}` did not fire (fired: {:?})\n{}",
            t,
            opt.report.applied,
            print(g)
        );
    }
    let inputs = common::seeded_inputs(g, seed.wrapping_add(1));
    common::same_outputs(g, w, &opt.graph, &opt.weights, &inputs).map_err(|e| {
        fail(format!(
            "{e}\nbefore:\n{}\nafter:\n{}",
            print(g),
            print(&opt.graph)
        ))
    })?;
    Ok(opt)
}

const FUSE: &[&str] = &[
    "lift-conv",
    "lift-conv-transpose",
    "fuse-shift",
    "fuse-norm",
    "fuse-act",
];

fn with(base: &[&'static str], more: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(more).copied().collect()
}

// ---- one property per rule -------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// lift-conv: conv3d (strided or not, with or without bias) → fused_conv3d; an activation
    /// after it makes the lifted form the cheaper one, so the lifted conv is what runs.
    #[test]
    fn lift_conv_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6, v in vol(),
        ax in proptest::array::uniform3(axis_conv(2)), bias: bool, with_act: bool,
        d in density(), seed: u64,
    ) {
        let mut g = Graph::new("lift-conv");
        let x = g.input("x", shape(n, cin, &v));
        let mut y = conv(&mut g, x, cout, &conv_attrs(&ax, &v), bias, "c");
        if with_act {
            y = act(&mut g, y, 0.1);
        }
        g.set_output("y", y);
        let w = weights(&g, seed, &[("c.weight", d)]);
        let opt = check(&g, &w, &["lift-conv", "fuse-act"], &["lift-conv"], seed)?;
        if with_act {
            prop_assert_eq!(common::count_ops(&opt.graph, "conv3d"), 0);
        }
    }

    /// lift-conv-transpose: conv_transpose3d (any kernel 1..3, stride 1/2, padding) →
    /// fused_conv3d{transposed=true}.
    #[test]
    fn lift_conv_transpose_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6,
        v in proptest::array::uniform3(1usize..=4),
        ax in proptest::array::uniform3(axis_convt()), bias: bool, with_act: bool,
        d in density(), seed: u64,
    ) {
        let mut g = Graph::new("lift-conv-transpose");
        let x = g.input("x", shape(n, cin, &v));
        let mut y = convt(&mut g, x, cout, &convt_attrs(&ax), bias, "u");
        if with_act {
            y = act(&mut g, y, 0.1);
        }
        g.set_output("y", y);
        let w = weights(&g, seed, &[("u.weight", d)]);
        let opt = check(
            &g, &w, &["lift-conv-transpose", "fuse-act"], &["lift-conv-transpose"], seed,
        )?;
        if with_act {
            prop_assert_eq!(common::count_ops(&opt.graph, "conv_transpose3d"), 0);
        }
    }

    /// fuse-shift: depth shift (groups 3 or 5, fewer blocks than groups when channels are few)
    /// into a conv of any stride, dense, sparse or all-zero; no depth_shift node remains.
    #[test]
    fn fuse_shift_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6, v in vol(),
        ax in proptest::array::uniform3(axis_conv(2)), groups in groups(), bias: bool,
        d in density(), seed: u64,
    ) {
        let mut g = Graph::new("fuse-shift");
        let x = g.input("x", shape(n, cin, &v));
        let s = shift(&mut g, x, groups);
        let y = conv(&mut g, s, cout, &conv_attrs(&ax, &v), bias, "c");
        g.set_output("y", y);
        let w = weights(&g, seed, &[("c.weight", d)]);
        let opt = check(
            &g, &w, &["lift-conv", "fuse-shift", "sparsify"], &["fuse-shift"], seed,
        )?;
        prop_assert_eq!(common::count_ops(&opt.graph, "depth_shift"), 0);
    }

    /// fuse-norm: instance norm after a (shifted) conv or a transposed conv, with or without an
    /// activation after it; no instance_norm node remains.
    #[test]
    fn fuse_norm_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6,
        v in proptest::array::uniform3(1usize..=4),
        ax in proptest::array::uniform3(axis_conv(2)),
        axt in proptest::array::uniform3(axis_convt()),
        transposed: bool, shift_groups in prop_oneof![Just(1usize), Just(3), Just(5)],
        bias: bool, with_act: bool, eps in prop_oneof![Just(1e-5f32), Just(1e-3)],
        d in density(), seed: u64,
    ) {
        let mut g = Graph::new("fuse-norm");
        let x = g.input("x", shape(n, cin, &v));
        let y = if transposed {
            convt(&mut g, x, cout, &convt_attrs(&axt), bias, "c")
        } else {
            let s = if shift_groups > 1 { shift(&mut g, x, shift_groups) } else { x };
            conv(&mut g, s, cout, &conv_attrs(&ax, &v), bias, "c")
        };
        let mut y = norm(&mut g, y, eps, "c");
        if with_act {
            y = act(&mut g, y, 0.01);
        }
        g.set_output("y", y);
        let w = weights(&g, seed, &[("c.weight", d)]);
        let opt = check(&g, &w, FUSE, &["fuse-norm"], seed)?;
        prop_assert_eq!(common::count_ops(&opt.graph, "instance_norm"), 0);
    }

    /// fuse-act: leaky ReLU (any slope, negative included) after a conv or transposed conv,
    /// with or without a norm between; no leaky_relu node remains.
    #[test]
    fn fuse_act_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6,
        v in proptest::array::uniform3(1usize..=4),
        ax in proptest::array::uniform3(axis_conv(2)),
        axt in proptest::array::uniform3(axis_convt()),
        transposed: bool, with_norm: bool, bias: bool,
        slope in prop_oneof![Just(0.01f32), Just(0.2), Just(-0.5), Just(0.0)],
        d in density(), seed: u64,
    ) {
        let mut g = Graph::new("fuse-act");
        let x = g.input("x", shape(n, cin, &v));
        let mut y = if transposed {
            convt(&mut g, x, cout, &convt_attrs(&axt), bias, "c")
        } else {
            conv(&mut g, x, cout, &conv_attrs(&ax, &v), bias, "c")
        };
        if with_norm {
            y = norm(&mut g, y, 1e-5, "c");
        }
        let y = act(&mut g, y, slope);
        g.set_output("y", y);
        let w = weights(&g, seed, &[("c.weight", d)]);
        let opt = check(&g, &w, FUSE, &["fuse-act"], seed)?;
        prop_assert_eq!(common::count_ops(&opt.graph, "leaky_relu"), 0);
    }

    /// narrow-conv: a channel select after a fused transposed conv (with bias, norm,
    /// activation) computes only the selected channels.
    #[test]
    fn narrow_conv_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6,
        v in proptest::array::uniform3(1usize..=4),
        ax in proptest::array::uniform3(axis_conv(2)),
        axt in proptest::array::uniform3(axis_convt()),
        bias: bool, with_norm: bool, with_act: bool,
        keep in proptest::collection::vec(any::<bool>(), 6), pick: Index,
        d in density(), seed: u64,
    ) {
        let mut g = Graph::new("narrow-conv");
        let x = g.input("x", shape(n, cin, &v));
        // Only transposed convs are narrowed (see the rule's doc).
        let _ = (&ax, &v);
        let mut y = convt(&mut g, x, cout, &convt_attrs(&axt), bias, "c");
        if with_norm {
            y = norm(&mut g, y, 1e-5, "c");
        }
        if with_act {
            y = act(&mut g, y, 0.01);
        }
        let y = select(&mut g, y, 1, subset(&keep, cout, &pick));
        g.set_output("y", y);
        let w = weights(&g, seed, &[("c.weight", d)]);
        check(&g, &w, &with(FUSE, &["narrow-conv"]), &["narrow-conv"], seed)?;
    }

    /// narrow-maxpool: a channel select after a max pool (any kernel and stride that fit)
    /// moves before it, and then narrows the conv feeding the pool.
    #[test]
    fn narrow_maxpool_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6, v in vol(),
        pk in proptest::array::uniform3(1usize..=2), ps in proptest::array::uniform3(1usize..=2),
        keep in proptest::collection::vec(any::<bool>(), 6), pick: Index,
        d in density(), seed: u64,
    ) {
        let mut g = Graph::new("narrow-maxpool");
        let x = g.input("x", shape(n, cin, &v));
        let a = ConvAttrs { kernel: [1, 3, 3], stride: [1; 3], padding: [0, 1, 1] };
        let y = conv(&mut g, x, cout, &a, true, "c");
        let kernel = [0, 1, 2].map(|i| pk[i].min(v[i]));
        let p = g.add(Op::MaxPool3d(PoolAttrs { kernel, stride: ps }), &[y], None).unwrap();
        let y = select(&mut g, p, 1, subset(&keep, cout, &pick));
        g.set_output("y", y);
        let w = weights(&g, seed, &[("c.weight", d)]);
        check(
            &g, &w, &["lift-conv", "narrow-maxpool", "narrow-conv"], &["narrow-maxpool"], seed,
        )?;
    }

    /// select-select: nested selects on one axis (any axis, batch included) compose into one.
    #[test]
    fn select_select_is_sound(
        n in 1usize..=3, c in 1usize..=6, v in vol(), axis in 0usize..5,
        outer in proptest::collection::vec(any::<bool>(), 6), p1: Index,
        inner in proptest::collection::vec(any::<bool>(), 6), p2: Index, seed: u64,
    ) {
        let mut g = Graph::new("select-select");
        let x = g.input("x", shape(n, c, &v));
        let extent = dims(&g, x)[axis];
        let r1 = subset(&outer, extent, &p1);
        let kept: usize = r1.iter().map(|(a, b)| b - a).sum();
        let s1 = select(&mut g, x, axis, r1);
        let s2 = select(&mut g, s1, axis, subset(&inner, kept, &p2));
        g.set_output("y", s2);
        let w = Weights::new();
        let opt = check(&g, &w, &["select-select"], &["select-select"], seed)?;
        prop_assert!(common::count_ops(&opt.graph, "select") <= 1);
    }

    /// concat-one: a one-operand concat is its operand (also when that operand is a graph
    /// input and the concat is the output).
    #[test]
    fn concat_one_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6, v in vol(), direct: bool,
        seed: u64,
    ) {
        let mut g = Graph::new("concat-one");
        let x = g.input("x", shape(n, cin, &v));
        let y = if direct {
            g.add(Op::Concat, &[x], None).unwrap()
        } else {
            let a = ConvAttrs { kernel: [1; 3], stride: [1; 3], padding: [0; 3] };
            let c = conv(&mut g, x, cout, &a, false, "c");
            let cat = g.add(Op::Concat, &[c], None).unwrap();
            act(&mut g, cat, 0.01)
        };
        g.set_output("y", y);
        let w = weights(&g, seed, &[]);
        let opt = check(&g, &w, &["concat-one"], &["concat-one"], seed)?;
        prop_assert_eq!(common::count_ops(&opt.graph, "concat"), 0);
    }

    /// sparsify: a conv or transposed conv (shifted, normed, activated or not) with at least one
    /// dead and one live kernel carries only its live kernels.
    #[test]
    fn sparsify_is_sound(
        n in 1usize..=2, cin in 1usize..=6, cout in 1usize..=6,
        v in proptest::array::uniform3(1usize..=4),
        ax in proptest::array::uniform3(axis_conv(2)),
        axt in proptest::array::uniform3(axis_convt()),
        transposed: bool, shift_groups in prop_oneof![Just(1usize), Just(3), Just(5)],
        bias: bool, with_norm: bool, with_act: bool,
        d in 0.0f64..1.0, dead: Index, live: Index, seed: u64,
    ) {
        prop_assume!(cin * cout >= 2);
        let mut g = Graph::new("sparsify");
        let x = g.input("x", shape(n, cin, &v));
        let mut y = if transposed {
            convt(&mut g, x, cout, &convt_attrs(&axt), bias, "c")
        } else {
            let s = if shift_groups > 1 { shift(&mut g, x, shift_groups) } else { x };
            conv(&mut g, s, cout, &conv_attrs(&ax, &v), bias, "c")
        };
        if with_norm {
            y = norm(&mut g, y, 1e-5, "c");
        }
        if with_act {
            y = act(&mut g, y, 0.01);
        }
        g.set_output("y", y);
        let mut w = common::seeded_weights(&g, seed).unwrap();
        let s = w.get("c.weight").unwrap().shape().to_vec();
        let mut mask = common::random_mask(seed, "c.weight", s[0], s[1], d);
        let k = mask.len();
        let (i_dead, mut i_live) = (dead.index(k), live.index(k));
        if i_live == i_dead {
            i_live = (i_dead + 1) % k;
        }
        mask[i_dead] = false;
        mask[i_live] = true;
        common::apply_mask(&mut w, "c.weight", &mask);
        let opt = check(&g, &w, &with(FUSE, &["sparsify"]), &["sparsify"], seed)?;
        let sparse = opt.graph.node_ids().any(|id| {
            matches!(&opt.graph.node(id).op, Op::FusedConv3d(a) if a.sparse_out.is_some())
        });
        // Extraction keeps the dense conv where nearly every kernel lives: a live MAC of a sparse
        // conv costs SPARSE_OVERHEAD (5%) more. Below 90% live the sparse one is cheaper.
        let live = mask.iter().filter(|&&m| m).count();
        if (live as f64) < 0.9 * k as f64 {
            prop_assert!(sparse, "no sparse conv ({live} of {k} live):\n{}", print(&opt.graph));
        }
    }
}

// ---- dead-inputs: DSFF-shaped concats --------------------------------------------------------

/// What produces one concat part.
#[derive(Clone, Copy, Debug)]
enum Part {
    /// A graph input (cannot be narrowed).
    Input,
    /// A conv of the main input (cannot be narrowed: it may have other users).
    Conv,
    /// A transposed conv of a low-resolution input (narrowable).
    Up,
    /// A max pool of a conv of a high-resolution input (narrowable).
    Pool,
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        Just(Part::Input),
        Just(Part::Conv),
        Just(Part::Up),
        Just(Part::Pool)
    ]
}

/// Adds one concat part of `c` channels over `v`; `factor[i]` asks for a 2x resolution change
/// on axis `i` where the extent allows it.
#[allow(clippy::too_many_arguments)]
fn add_part(
    g: &mut Graph,
    x: NodeId,
    kind: Part,
    i: usize,
    n: usize,
    c: usize,
    v: &[usize; 3],
    factor: [bool; 3],
) -> NodeId {
    match kind {
        Part::Input => g.input(format!("in{i}"), shape(n, c, v)),
        Part::Conv => {
            let a = ConvAttrs {
                kernel: [1, 3, 3],
                stride: [1; 3],
                padding: [0, 1, 1],
            };
            conv(g, x, c, &a, true, &format!("p{i}"))
        }
        Part::Up => {
            let mut a = ConvAttrs {
                kernel: [1; 3],
                stride: [1; 3],
                padding: [0; 3],
            };
            let mut lo = *v;
            for ax in 0..3 {
                if factor[ax] && v[ax].is_multiple_of(2) {
                    (a.kernel[ax], a.stride[ax], lo[ax]) = (2, 2, v[ax] / 2);
                } else if factor[ax] {
                    (a.kernel[ax], a.padding[ax]) = (3, 1);
                }
            }
            let src = g.input(format!("lo{i}"), shape(n, 3, &lo));
            convt(g, src, c, &a, i.is_multiple_of(2), &format!("p{i}"))
        }
        Part::Pool => {
            let mut hi = *v;
            let mut k = [1; 3];
            for ax in 0..3 {
                if factor[ax] {
                    (k[ax], hi[ax]) = (2, 2 * v[ax]);
                }
            }
            let src = g.input(format!("hi{i}"), shape(n, 2, &hi));
            let a = ConvAttrs {
                kernel: [1; 3],
                stride: [1; 3],
                padding: [0; 3],
            };
            let h = conv(g, src, c, &a, false, &format!("p{i}"));
            g.add(
                Op::MaxPool3d(PoolAttrs {
                    kernel: k,
                    stride: k,
                }),
                &[h],
                None,
            )
            .unwrap()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// dead-inputs: a conv (shifted or not, any stride) or transposed conv reads
    /// concat[x, parts...]; every kernel reading some channels is zero: all of one part (a dead
    /// edge) or, for a narrowable part (transposed conv, max pool), some of its channels, plus
    /// random other dead channels and random kernel sparsity. Channel 0 of `x` stays live.
    /// Either only the rules the rewrite needs run, or all of them (the narrowing chain too).
    #[test]
    fn dead_inputs_is_sound(
        n in 1usize..=2, v in proptest::array::uniform3(1usize..=4), c0 in 1usize..=3,
        parts in proptest::collection::vec((part(), 1usize..=4, any::<[bool; 3]>()), 1..=3),
        target: Index, transposed: bool, cout in 1usize..=4,
        ax in proptest::array::uniform3(axis_conv(2)),
        axt in proptest::array::uniform3(axis_convt()),
        shift_groups in prop_oneof![Just(1usize), Just(3), Just(5)],
        d in 0.2f64..=1.0, all_rules: bool, seed: u64,
    ) {
        let mut g = Graph::new("dead-inputs");
        let x = g.input("x", shape(n, c0, &v));
        let mut ops = vec![x];
        let mut spans = vec![(0, c0)];
        let mut off = c0;
        for (i, &(kind, c, f)) in parts.iter().enumerate() {
            ops.push(add_part(&mut g, x, kind, i + 1, n, c, &v, f));
            spans.push((off, off + c));
            off += c;
        }
        let cin = off;
        let cat = g.add(Op::Concat, &ops, Some("cat".into())).unwrap();
        let y = if transposed {
            convt(&mut g, cat, cout, &convt_attrs(&axt), true, "f")
        } else {
            let s = if shift_groups > 1 { shift(&mut g, cat, shift_groups) } else { cat };
            conv(&mut g, s, cout, &conv_attrs(&ax, &v), true, "f")
        };
        g.set_output("y", y);

        // Dead input channels: the target part (all of it, or some when narrowable), others
        // at random; channel 0 always lives.
        let t = 1 + target.index(parts.len());
        let narrowable = matches!(parts[t - 1].0, Part::Up | Part::Pool);
        let mut dead = vec![false; cin];
        for (c, slot) in dead.iter_mut().enumerate().skip(1) {
            *slot = common::unit(seed, "dead", c) < 0.25;
        }
        let (a, b) = spans[t];
        for (c, slot) in dead.iter_mut().enumerate().take(b).skip(a) {
            *slot = !narrowable || common::unit(seed, "target", c) < 0.5;
        }
        if !dead[a..b].iter().any(|x| *x) {
            dead[a] = true;
        }
        let mut w = common::seeded_weights(&g, seed).unwrap();
        let (d0, d1) = if transposed { (cin, cout) } else { (cout, cin) };
        let mut mask = common::random_mask(seed, "f.weight", d0, d1, d);
        for o in 0..cout {
            for (c, &is_dead) in dead.iter().enumerate() {
                let k = if transposed { c * cout + o } else { o * cin + c };
                if is_dead {
                    mask[k] = false;
                } else if o == 0 && c == 0 {
                    mask[k] = true;
                }
            }
        }
        common::apply_mask(&mut w, "f.weight", &mask);
        let all = [
            "lift-conv", "lift-conv-transpose", "fuse-shift", "fuse-norm", "fuse-act",
            "dead-inputs", "narrow-conv", "narrow-maxpool", "select-select", "concat-one",
            "sparsify",
        ];
        let few = ["lift-conv", "lift-conv-transpose", "fuse-shift", "dead-inputs"];
        let rules: &[&str] = if all_rules { &all } else { &few };
        let opt = check(&g, &w, rules, &["dead-inputs"], seed)?;
        if all_rules && !narrowable {
            // A whole dead part that nothing else reads is gone with its producer.
            let gone = match parts[t - 1].0 {
                Part::Input => !opt.graph.inputs().iter().any(|(nm, _)| *nm == format!("in{t}")),
                _ => !opt.graph.weights().iter().any(|(nm, _)| nm.starts_with(&format!("p{t}."))),
            };
            prop_assert!(gone, "dead part {} survived:\n{}", t, print(&opt.graph));
        }
    }
}
