//! Tests of the verifier: a valid small E2ENet-shaped graph passes; each rule is then broken alone
//! (so exactly that rule fires, at the right node); several faults are all reported; the weight
//! store rules; and random malformed graphs never make the verifier panic.

use e2enc_ir::graph::{Graph, NodeId};
use e2enc_ir::op::{shift_runs, ConvAttrs, FusedConvAttrs, Op, PoolAttrs, ShiftAttrs};
use e2enc_ir::types::{DType, TensorType};
use e2enc_ir::verify::{
    verify, verify_with_weights, violations, violations_with_weights, Violation,
};
use e2enc_ir::{IrError, Tensor, Weights};
use proptest::prelude::*;

/// The ids of the valid graph's nodes that the tests break.
struct Ids {
    x: NodeId,
    conv: NodeId,
    gamma: NodeId,
    norm: NodeId,
    act: NodeId,
    pool_x: NodeId,
    cat: NodeId,
    up: NodeId,
}

fn geom(k: usize, s: usize, p: usize) -> ConvAttrs {
    ConvAttrs {
        kernel: [k; 3],
        stride: [s; 3],
        padding: [p; 3],
    }
}

fn pool() -> Op {
    Op::MaxPool3d(PoolAttrs {
        kernel: [2; 3],
        stride: [2; 3],
    })
}

/// input → depth_shift → conv3d(w, b) → instance_norm → leaky_relu → max_pool3d, concatenated
/// with a max_pool3d of the input, → conv_transpose3d → softmax / argmax outputs.
fn valid() -> (Graph, Ids) {
    let mut g = Graph::new("small");
    let x = g.input("x", TensorType::f32([1, 4, 8, 8, 8]));
    let shift = g
        .add(Op::DepthShift(ShiftAttrs { groups: 3 }), &[x], None)
        .unwrap();
    let w = g.weight("conv.weight", TensorType::f32([8, 4, 3, 3, 3]));
    let b = g.weight("conv.bias", TensorType::f32([8]));
    let conv = g
        .add(
            Op::Conv3d(geom(3, 1, 1)),
            &[shift, w, b],
            Some("u0.conv".into()),
        )
        .unwrap();
    let gamma = g.weight("norm.weight", TensorType::f32([8]));
    let beta = g.weight("norm.bias", TensorType::f32([8]));
    let norm = g
        .add(Op::InstanceNorm { eps: 1e-5 }, &[conv, gamma, beta], None)
        .unwrap();
    let act = g.add(Op::LeakyRelu { slope: 0.01 }, &[norm], None).unwrap();
    let pool_a = g.add(pool(), &[act], None).unwrap();
    let pool_x = g.add(pool(), &[x], None).unwrap();
    let cat = g.add(Op::Concat, &[pool_a, pool_x], None).unwrap();
    let uw = g.weight("up.weight", TensorType::f32([12, 6, 2, 2, 2]));
    let up = g
        .add(Op::ConvTranspose3d(geom(2, 2, 0)), &[cat, uw], None)
        .unwrap();
    let probs = g.add(Op::Softmax, &[up], None).unwrap();
    let labels = g.add(Op::Argmax, &[up], None).unwrap();
    g.set_output("probs", probs);
    g.set_output("labels", labels);
    let ids = Ids {
        x,
        conv,
        gamma,
        norm,
        act,
        pool_x,
        cat,
        up,
    };
    (g, ids)
}

/// A store holding every weight of `g` with its declared type.
fn store(g: &Graph) -> Weights {
    let mut w = Weights::new();
    for (name, id) in g.weights() {
        w.insert(name, Tensor::zeros(&g.node(id).ty));
    }
    w
}

/// Asserts `v` holds exactly one violation, of `rule`, at `node`, and returns it.
fn only(v: Vec<Violation>, rule: &str, node: Option<String>) -> Violation {
    assert_eq!(v.len(), 1, "expected only [{rule}], got {v:#?}");
    let v = v.into_iter().next().unwrap();
    assert_eq!(v.rule, rule, "{v}");
    assert_eq!(v.node, node, "{v}");
    v
}

fn at(g: &Graph, id: NodeId) -> Option<String> {
    Some(g.describe(id))
}

#[test]
fn valid_graph_passes() {
    let (g, _) = valid();
    assert_eq!(violations(&g), vec![]);
    verify(&g).unwrap();
    verify_with_weights(&g, &store(&g)).unwrap();
}

#[test]
fn dead_code_unused_inputs_and_extra_store_tensors_are_legal() {
    let (mut g, ids) = valid();
    g.input("unused", TensorType::new(DType::I32, [1, 8, 8, 8]));
    g.add(Op::LeakyRelu { slope: 0.2 }, &[ids.act], None)
        .unwrap();
    let mut w = store(&g);
    w.insert("head.weight", Tensor::zeros(&TensorType::f32([2])));
    verify_with_weights(&g, &w).unwrap();
}

#[test]
fn cycle_lists_exactly_the_nodes_on_it() {
    let (mut g, ids) = valid();
    // norm's operand becomes act = leaky_relu(norm): a two-node cycle, types unchanged.
    g.replace_all_uses(ids.conv, ids.act);
    let v = only(violations(&g), "cycle", at(&g, ids.norm));
    let want = format!("{}, {}", g.describe(ids.norm), g.describe(ids.act));
    assert!(v.msg.ends_with(&want), "{v}");
    // Nodes downstream of the cycle are not on it.
    assert!(!v.msg.contains(&g.describe(ids.cat)), "{v}");
    assert!(matches!(g.topo_order(), Err(IrError::Cycle { .. })));
}

#[test]
fn self_loop_is_a_cycle() {
    let (mut g, ids) = valid();
    g.replace_all_uses(ids.norm, ids.act);
    only(violations(&g), "cycle", at(&g, ids.act));
}

#[test]
fn operand_slot_gap() {
    let (mut g, ids) = valid();
    assert!(g.add_operand_edge(ids.x, ids.cat, 5));
    let v = only(violations(&g), "operand-slots", at(&g, ids.cat));
    assert!(v.msg.contains("slot 2 is missing"), "{v}");
}

#[test]
fn operand_slot_duplicate() {
    let (mut g, ids) = valid();
    assert!(g.add_operand_edge(ids.x, ids.cat, 1));
    let v = only(violations(&g), "operand-slots", at(&g, ids.cat));
    assert!(v.msg.contains("slot 1 is taken 2 times"), "{v}");
    assert!(v.msg.contains("slot 2 is missing"), "{v}");
}

#[test]
fn operand_edge_to_a_missing_node_is_refused() {
    let (mut g, ids) = valid();
    let ghost = g.add(Op::Softmax, &[ids.up], None).unwrap();
    g.remove_node(ghost);
    assert!(!g.add_operand_edge(ghost, ids.cat, 2));
    assert!(!g.add_operand_edge(ids.x, ghost, 0));
    verify(&g).unwrap();
}

#[test]
fn removing_an_operand_leaves_a_gap() {
    let (mut g, ids) = valid();
    g.remove_node(ids.gamma);
    let v = violations(&g);
    let rules: Vec<_> = v.iter().map(|v| v.rule).collect();
    assert_eq!(rules, ["operand-slots", "arity"], "{v:#?}");
    assert!(v.iter().all(|v| v.node == at(&g, ids.norm)));
}

#[test]
fn arity() {
    let (mut g, ids) = valid();
    let ty = g.node(ids.act).ty.clone();
    let bad = g.add_typed(Op::Add, &[ids.act], ty, None);
    let v = only(violations(&g), "arity", at(&g, bad));
    assert!(v.msg.contains("add takes 2 operand(s), has 1"), "{v}");
}

#[test]
fn leaves_take_no_operands() {
    let (mut g, ids) = valid();
    let ty = TensorType::f32([3]);
    let bad = g.add_typed(Op::Input { name: "z".into() }, &[ids.x], ty, None);
    only(violations(&g), "arity", at(&g, bad));
}

#[test]
fn type_differs_from_inferred() {
    let (mut g, ids) = valid();
    let ty = TensorType::f32([1, 8, 8, 8, 4]);
    let bad = g.add_typed(Op::LeakyRelu { slope: 0.1 }, &[ids.norm], ty, None);
    let v = only(violations(&g), "type", at(&g, bad));
    assert!(
        v.msg.contains("f32[1,8,8,8,4]") && v.msg.contains("f32[1,8,8,8,8]"),
        "{v}"
    );
}

#[test]
fn type_inference_fails() {
    let (mut g, ids) = valid();
    let ty = g.node(ids.act).ty.clone();
    let bad = g.add_typed(Op::Add, &[ids.act, ids.pool_x], ty, None);
    let v = only(violations(&g), "type", at(&g, bad));
    assert!(v.msg.contains("operand types differ"), "{v}");
}

#[test]
fn stale_type_after_an_operand_changes() {
    let (mut g, ids) = valid();
    g.node_mut(ids.x).ty = TensorType::f32([1, 4, 8, 8, 6]);
    // Checks are local: exactly the direct users of `x` are reported, not everything downstream.
    let v = violations(&g);
    let got: Vec<_> = v.iter().map(|v| (v.rule, v.node.clone())).collect();
    let want: Vec<_> = g
        .users(ids.x)
        .into_iter()
        .map(|(u, _)| ("type", at(&g, u)))
        .collect();
    assert_eq!(got, want, "{v:#?}");
    assert!(want.contains(&("type", at(&g, ids.pool_x))));
}

#[test]
fn i32_weights_are_legal_leaves() {
    // Kernel indices of sparse convolutions are i32 weights: no `leaf-type` violation.
    let (mut g, _) = valid();
    g.weight("extra.kidx", TensorType::new(DType::I32, [3, 2]));
    assert_eq!(violations(&g), vec![]);
    verify_with_weights(&g, &store(&g)).unwrap();
}

#[test]
fn i32_weight_where_data_is_wanted_is_a_type_violation() {
    let (mut g, ids) = valid();
    let w = g.weight("int.weight", TensorType::new(DType::I32, [8, 8, 1, 1, 1]));
    let ty = g.node(ids.act).ty.clone();
    let bad = g.add_typed(Op::Conv3d(geom(1, 1, 0)), &[ids.act, w], ty, None);
    let v = only(violations(&g), "type", at(&g, bad));
    assert!(v.msg.contains("weight must be f32"), "{v}");
}

/// `x [1,4,8,8,8]` → fused(shift, dense conv, bias, norm, act) → `[1,8,8,8,8]` → fused sparse
/// transposed conv → `[1,4,16,16,16]` → select of channels 0 and 2..4; returns the graph and
/// the two fused nodes.
fn fused_graph() -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new("fused");
    let x = g.input("x", TensorType::f32([1, 4, 8, 8, 8]));
    let a = FusedConvAttrs {
        shifts: shift_runs(3, 4),
        norm_eps: Some(1e-5),
        slope: Some(0.01),
        ..FusedConvAttrs::plain(geom(3, 1, 1), false, true)
    };
    let w = g.weight("c.weight", TensorType::f32([8, 4, 3, 3, 3]));
    let b = g.weight("c.bias", TensorType::f32([8]));
    let gamma = g.weight("n.weight", TensorType::f32([8]));
    let beta = g.weight("n.bias", TensorType::f32([8]));
    let f1 = g
        .add(Op::FusedConv3d(a), &[x, w, b, gamma, beta], None)
        .unwrap();
    let t = FusedConvAttrs {
        sparse_out: Some(4),
        ..FusedConvAttrs::plain(geom(2, 2, 0), true, false)
    };
    let packed = g.weight("up.packed", TensorType::f32([5, 2, 2, 2]));
    let kidx = g.weight("up.kidx", TensorType::new(DType::I32, [5, 2]));
    let f2 = g
        .add(Op::FusedConv3d(t), &[f1, packed, kidx], None)
        .unwrap();
    let sel = Op::SelectChannels {
        axis: 1,
        ranges: vec![(0, 1), (2, 4)],
    };
    let s = g.add(sel, &[f2], None).unwrap();
    assert_eq!(g.node(s).ty, TensorType::f32([1, 3, 16, 16, 16]));
    g.set_output("y", s);
    (g, f1, f2)
}

#[test]
fn fused_and_select_graph_passes() {
    let (g, _, _) = fused_graph();
    assert_eq!(violations(&g), vec![]);
    verify_with_weights(&g, &store(&g)).unwrap();
}

#[test]
fn fused_conv_with_broken_operand_lists_is_reported_never_panics() {
    // Too few operands for the attributes (the bias, norm and index slots are missing).
    let (mut g, f1, f2) = fused_graph();
    let x = g.operands(f1)[0];
    let ty = g.node(f1).ty.clone();
    let bad = g.add_typed(g.node(f1).op.clone(), &[x, x], ty.clone(), None);
    let v = only(violations(&g), "arity", at(&g, bad));
    assert!(
        v.msg.contains("fused_conv3d takes 5 operand(s), has 2"),
        "{v}"
    );
    let ty2 = g.node(f2).ty.clone();
    let bad2 = g.add_typed(g.node(f2).op.clone(), &[f1], ty2, None);
    let bad3 = g.add_typed(g.node(f1).op.clone(), &[], ty.clone(), None);
    let got: Vec<_> = violations(&g)
        .into_iter()
        .map(|v| (v.rule, v.node))
        .collect();
    assert_eq!(
        got,
        [
            ("arity", at(&g, bad)),
            ("arity", at(&g, bad2)),
            ("arity", at(&g, bad3))
        ]
    );

    // A missing operand leaves a gap; an extra slot is too many.
    let (mut g, f1, f2) = fused_graph();
    let gamma = g.operands(f1)[3];
    g.remove_node(gamma);
    assert!(g.add_operand_edge(f1, f2, 3));
    let got: Vec<_> = violations(&g)
        .into_iter()
        .map(|v| (v.rule, v.node))
        .collect();
    assert_eq!(
        got,
        [
            ("operand-slots", at(&g, f1)),
            ("arity", at(&g, f1)),
            ("arity", at(&g, f2))
        ]
    );

    // Right count, wrong kinds: the index where the packed weight goes and vice versa.
    let (mut g, _, f2) = fused_graph();
    let ops = g.operands(f2);
    let op = g.node(f2).op.clone();
    let ty = g.node(f2).ty.clone();
    let swapped = g.add_typed(op, &[ops[0], ops[2], ops[1]], ty, None);
    let v = only(violations(&g), "type", at(&g, swapped));
    assert!(v.msg.contains("weight must be f32"), "{v}");
}

#[test]
fn fused_conv_attribute_faults_are_type_violations() {
    let (g0, f1, f2) = fused_graph();
    type Edit = fn(&mut FusedConvAttrs);
    let cases: Vec<(NodeId, Edit, &str)> = vec![
        (
            f1,
            |a| a.shifts = vec![(0, 3)],
            "shift runs cover 3 channels; the input has 4",
        ),
        (f1, |a| a.shifts = vec![(0, 4), (1, 0)], "must not be empty"),
        (
            f1,
            |a| a.shifts = vec![(0, usize::MAX), (1, 2)],
            "cover too many channels",
        ),
        (f1, |a| a.slope = Some(f32::NAN), "slope NaN is not finite"),
        (f1, |a| a.norm_eps = Some(0.0), "eps 0 must be positive"),
        (f2, |a| a.sparse_out = Some(5), "stored type"),
        (f2, |a| a.conv.kernel = [1, 2, 2], "packed weight"),
        (
            f2,
            |a| a.shifts = vec![(1, 8)],
            "transposed convolution takes no input shifts",
        ),
    ];
    for (id, edit, needle) in cases {
        let mut g = g0.clone();
        if let Op::FusedConv3d(a) = &mut g.node_mut(id).op {
            edit(a);
        }
        let v = only(violations(&g), "type", at(&g, id));
        assert!(v.msg.contains(needle), "{needle:?}: {v}");
    }
}

#[test]
fn leaves_have_no_zero_extent() {
    let (mut g, _) = valid();
    let bad = g.input("empty", TensorType::f32([1, 0, 4, 4, 4]));
    let v = only(violations(&g), "leaf-type", at(&g, bad));
    assert!(v.msg.contains("zero extent"), "{v}");
}

#[test]
fn size_overflow() {
    let (mut g, _) = valid();
    let bad = g.input("huge", TensorType::f32([1 << 40, 1 << 40, 1 << 40]));
    only(violations(&g), "size", at(&g, bad));
    let big = g.input("big", TensorType::f32([1 << 31, 1 << 31]));
    assert_eq!(violations(&g).len(), 2);
    assert_eq!(violations(&g)[1].node, at(&g, big));
}

#[test]
fn empty_names() {
    let (mut g, ids) = valid();
    let i = g.input("", TensorType::f32([2]));
    let w = g.weight("", TensorType::f32([2]));
    g.set_output("", ids.act);
    let v = violations(&g);
    assert!(v.iter().all(|v| v.rule == "name"), "{v:#?}");
    let nodes: Vec<_> = v.into_iter().map(|v| v.node).collect();
    assert_eq!(nodes, [at(&g, i), at(&g, w), at(&g, ids.act)]);
}

#[test]
fn duplicate_input() {
    let (mut g, ids) = valid();
    let bad = g.input("x", TensorType::f32([1, 4, 8, 8, 8]));
    let v = only(violations(&g), "duplicate-input", at(&g, bad));
    assert!(v.msg.contains(&g.describe(ids.x)), "{v}");
}

#[test]
fn duplicate_weight() {
    let (mut g, _) = valid();
    let bad = g.weight("norm.bias", TensorType::f32([8]));
    only(violations(&g), "duplicate-weight", at(&g, bad));
}

#[test]
fn an_input_and_a_weight_may_share_a_name() {
    let (mut g, _) = valid();
    g.input("conv.bias", TensorType::f32([8]));
    verify(&g).unwrap();
}

#[test]
fn duplicate_output() {
    let (mut g, ids) = valid();
    g.push_output_unchecked("probs", ids.act);
    only(violations(&g), "duplicate-output", at(&g, ids.act));
}

#[test]
fn dangling_output() {
    let (mut g, ids) = valid();
    let gone = g.add(Op::Softmax, &[ids.up], None).unwrap();
    g.remove_node(gone);
    g.set_output("stale", gone);
    let v = only(violations(&g), "dangling-output", at(&g, gone));
    assert!(v.node.as_deref().unwrap().contains("removed"), "{v}");
    g.push_output_unchecked("foreign", NodeId(petgraph::graph::NodeIndex::new(9999)));
    let v = violations(&g);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert_eq!(v[1].rule, "dangling-output");
}

#[test]
fn no_outputs() {
    let mut g = Graph::new("headless");
    let x = g.input("x", TensorType::f32([1, 2, 4, 4, 4]));
    g.add(Op::Softmax, &[x], None).unwrap();
    only(violations(&g), "no-outputs", None);
    only(violations(&Graph::new("empty")), "no-outputs", None);
}

#[test]
fn several_problems_are_all_reported_in_rule_order() {
    let (mut g, ids) = valid();
    let ty = g.node(ids.act).ty.clone();
    let arity = g.add_typed(Op::Add, &[ids.act], ty, None);
    let wrong = g.add_typed(Op::Softmax, &[ids.up], TensorType::f32([1]), None);
    let leaf = g.weight("extra", TensorType::f32([3, 0]));
    g.push_output_unchecked("labels", wrong);
    g.remove_node(arity);
    g.set_output("stale", arity);
    g.push_output_unchecked("", ids.up);

    let v = violations(&g);
    let got: Vec<(&str, Option<String>)> = v.iter().map(|v| (v.rule, v.node.clone())).collect();
    let want = vec![
        ("type", at(&g, wrong)),
        ("leaf-type", at(&g, leaf)),
        ("name", at(&g, ids.up)),
        ("duplicate-output", at(&g, wrong)),
        ("dangling-output", at(&g, arity)),
    ];
    assert_eq!(got, want, "{v:#?}");
    assert_eq!(violations(&g), v, "the order is deterministic");
    match verify(&g) {
        Err(IrError::Verify(all)) => assert_eq!(all, v),
        other => panic!("expected IrError::Verify, got {other:?}"),
    }
    let text = verify(&g).unwrap_err().to_string();
    assert!(
        text.contains("5 violation(s)") && text.contains("[dangling-output]"),
        "{text}"
    );
}

#[test]
fn missing_weight() {
    let (g, ids) = valid();
    let mut w = store(&g);
    w.remove("norm.weight");
    let v = only(
        violations_with_weights(&g, &w),
        "missing-weight",
        at(&g, ids.gamma),
    );
    assert!(v.msg.contains("`norm.weight`"), "{v}");
    assert!(matches!(
        verify_with_weights(&g, &w),
        Err(IrError::Verify(_))
    ));
    verify(&g).unwrap();
}

#[test]
fn weight_type_shape_and_dtype() {
    let (g, ids) = valid();
    let mut w = store(&g);
    w.insert("norm.weight", Tensor::zeros(&TensorType::f32([9])));
    let v = only(
        violations_with_weights(&g, &w),
        "weight-type",
        at(&g, ids.gamma),
    );
    assert!(v.msg.contains("f32[9]") && v.msg.contains("f32[8]"), "{v}");
    w.insert("norm.weight", Tensor::from_i32([8], vec![0; 8]).unwrap());
    let v = only(
        violations_with_weights(&g, &w),
        "weight-type",
        at(&g, ids.gamma),
    );
    assert!(v.msg.contains("i32[8]"), "{v}");
}

#[test]
fn weight_rules_come_after_the_structural_ones() {
    let (mut g, _) = valid();
    let extra = g.weight("extra", TensorType::f32([3, 0]));
    let v = violations_with_weights(&g, &store(&g));
    let rules: Vec<_> = v.iter().map(|v| v.rule).collect();
    assert_eq!(
        rules,
        ["leaf-type"],
        "a store that matches the declaration is fine: {v:#?}"
    );
    let v = violations_with_weights(&g, &Weights::new());
    assert_eq!(v[0].rule, "leaf-type");
    assert!(v[1..].iter().all(|v| v.rule == "missing-weight"), "{v:#?}");
    assert_eq!(v.last().unwrap().node, at(&g, extra));
}

/// One random node: an op (small attributes), a declared type, operand picks and raw edges.
#[derive(Debug, Clone)]
struct RandNode {
    op: u8,
    shape: Vec<usize>,
    int: bool,
    operands: Vec<usize>,
    raw: Option<(usize, u32)>,
}

fn rand_node() -> impl Strategy<Value = RandNode> {
    (
        0u8..18,
        prop::collection::vec(0usize..5, 0..6),
        any::<bool>(),
        prop::collection::vec(any::<usize>(), 0..7),
        prop::option::of((any::<usize>(), 0u32..5)),
    )
        .prop_map(|(op, shape, int, operands, raw)| RandNode {
            op,
            shape,
            int,
            operands,
            raw,
        })
}

fn rand_op(k: u8) -> Op {
    let c = ConvAttrs {
        kernel: [k as usize % 3; 3],
        stride: [1 + k as usize % 2; 3],
        padding: [k as usize % 2; 3],
    };
    match k {
        0 => Op::Input { name: "in".into() },
        1 => Op::Weight {
            name: String::new(),
        },
        2 => Op::Conv3d(c),
        3 => Op::ConvTranspose3d(c),
        4 => Op::DepthShift(ShiftAttrs { groups: 0 }),
        5 => Op::InstanceNorm { eps: f32::NAN },
        6 => Op::LeakyRelu { slope: 0.1 },
        7 => Op::MaxPool3d(PoolAttrs {
            kernel: [2; 3],
            stride: [1; 3],
        }),
        8 => Op::Concat,
        9 => Op::Add,
        10 => Op::Softmax,
        11 => Op::Argmax,
        12 => Op::SelectChannels {
            axis: 1,
            ranges: vec![(0, 1), (2, 4)],
        },
        13 => Op::SelectChannels {
            axis: 9,
            ranges: vec![(3, 1)],
        },
        // Fused convolutions of every operand count from 2 to 6, with odd attributes too.
        14 => Op::FusedConv3d(FusedConvAttrs::plain(c, false, false)),
        15 => Op::FusedConv3d(FusedConvAttrs {
            sparse_out: Some(2),
            shifts: vec![(i64::MIN, 1), (i64::MAX, usize::MAX)],
            ..FusedConvAttrs::plain(c, true, true)
        }),
        16 => Op::FusedConv3d(FusedConvAttrs {
            sparse_out: Some(0),
            norm_eps: Some(1e-5),
            slope: Some(f32::INFINITY),
            ..FusedConvAttrs::plain(c, false, true)
        }),
        _ => Op::FusedConv3d(FusedConvAttrs {
            shifts: shift_runs(5, 4),
            norm_eps: Some(-1.0),
            ..FusedConvAttrs::plain(c, false, false)
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// However malformed, a graph gets a deterministic list of violations, never a panic, and
    /// `verify` agrees with `violations`.
    #[test]
    fn random_malformed_graphs_never_panic(
        nodes in prop::collection::vec(rand_node(), 0..12),
        outs in prop::collection::vec((0usize..3, any::<usize>()), 0..4),
        removes in prop::collection::vec(any::<usize>(), 0..3),
    ) {
        let mut g = Graph::new("random");
        let mut ids: Vec<NodeId> = Vec::new();
        for n in &nodes {
            let dtype = if n.int { DType::I32 } else { DType::F32 };
            let ty = TensorType::new(dtype, n.shape.clone());
            let ops: Vec<NodeId> = if ids.is_empty() {
                vec![]
            } else {
                n.operands.iter().map(|&i| ids[i % ids.len()]).collect()
            };
            let id = g.add_typed(rand_op(n.op), &ops, ty, None);
            ids.push(id);
            if let Some((from, slot)) = n.raw {
                g.add_operand_edge(ids[from % ids.len()], id, slot);
            }
        }
        for (kind, i) in &outs {
            let id = if ids.is_empty() { NodeId(petgraph::graph::NodeIndex::new(*i % 7)) }
                     else { ids[i % ids.len()] };
            match kind {
                0 => g.set_output(format!("o{}", i % 3), id),
                1 => g.push_output_unchecked(format!("o{}", i % 3), id),
                _ => g.push_output_unchecked("", id),
            }
        }
        for r in &removes {
            if !ids.is_empty() {
                g.remove_node(ids[r % ids.len()]);
            }
        }
        let v = violations(&g);
        prop_assert_eq!(&violations(&g), &v);
        prop_assert_eq!(verify(&g).is_ok(), v.is_empty());
        for x in &v {
            prop_assert_eq!(x.node.is_none(), x.rule == "no-outputs", "{}", x);
        }
        let vw = violations_with_weights(&g, &Weights::new());
        prop_assert_eq!(&vw[..v.len()], &v[..]);
    }
}

/// Huge conv attributes, as a parsed text file may hold, are reported (shape inference uses
/// checked arithmetic), never an overflow panic.
#[test]
fn huge_conv_attributes_are_reported_not_panicked_on() {
    let (mut g, ids) = valid();
    let w = g.weight("w1", TensorType::f32([8, 4, 1, 1, 1]));
    let pad = ConvAttrs {
        kernel: [1; 3],
        stride: [1; 3],
        padding: [usize::MAX; 3],
    };
    let a = g.add_typed(Op::Conv3d(pad), &[ids.x, w], TensorType::f32([1]), None);
    let wt = g.weight("w2", TensorType::f32([4, 8, 1, 1, 1]));
    let stride = ConvAttrs {
        kernel: [1; 3],
        stride: [usize::MAX; 3],
        padding: [0; 3],
    };
    let b = g.add_typed(
        Op::ConvTranspose3d(stride),
        &[ids.x, wt],
        TensorType::f32([1]),
        None,
    );
    let v = violations(&g);
    let got: Vec<_> = v.iter().map(|v| (v.rule, v.node.clone())).collect();
    assert_eq!(got, [("type", at(&g, a)), ("type", at(&g, b))], "{v:#?}");
}
