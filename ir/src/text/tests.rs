//! Unit tests of the text form: a golden round trip, label and float exactness, one test per
//! kind of parse error (with its line), and printing of graphs the parser cannot express.

use super::*;
use crate::op::{ConvAttrs, FusedConvAttrs, ShiftAttrs};
use crate::types::{DType, TensorType};

/// Every op, escapes, a weight with its implied label, one with another label and one with none.
pub(super) const GOLDEN: &str = r#"graph "tiny \"net\"" {
  %0 = input "input" : f32[1,2,4,8,8]
  %1 = weight "conv.weight" : f32[4,2,1,3,3]
  %2 = weight "conv.bias" : f32[4] @"bias of \\conv\\"
  %3 = weight "norm.weight" : f32[4] @none
  %4 = weight "norm.bias" : f32[4]
  %5 = weight "up.weight" : f32[4,2,2,2,2]
  %6 = depth_shift{groups=3}(%0) : f32[1,2,4,8,8] @"x0_0.u0.shift"
  %7 = conv3d{kernel=[1,3,3], stride=[1,1,1], padding=[0,1,1]}(%6, %1, %2) : f32[1,4,4,8,8] @"x0_0.u0.conv"
  %8 = instance_norm{eps=1e-5}(%7, %3, %4) : f32[1,4,4,8,8] @"naïve ☃\tlabel"
  %9 = leaky_relu{slope=0.01}(%8) : f32[1,4,4,8,8]
  %10 = max_pool3d{kernel=[2,2,2], stride=[2,2,2]}(%9) : f32[1,4,2,4,4]
  %11 = conv_transpose3d{kernel=[2,2,2], stride=[2,2,2], padding=[0,0,0]}(%10, %5) : f32[1,2,4,8,8]
  %12 = concat(%11, %0, %11) : f32[1,6,4,8,8]
  %13 = add(%9, %9) : f32[1,4,4,8,8]
  %14 = softmax(%12) : f32[1,6,4,8,8]
  %15 = argmax(%14) : i32[1,4,8,8] @"\u{1}ctl"
  %16 = fused_conv3d{kernel=[1,3,3], stride=[1,1,1], padding=[0,1,1], transposed=false, shifts=[-1x1, 1x1], sparse_out=none, bias=true, eps=1e-5, slope=0.01}(%0, %1, %2, %3, %4) : f32[1,4,4,8,8] @"fused"
  %17 = weight "up.packed" : f32[3,2,2,2]
  %18 = weight "up.kidx" : i32[3,2]
  %19 = fused_conv3d{kernel=[2,2,2], stride=[2,2,2], padding=[0,0,0], transposed=true, shifts=[], sparse_out=2, bias=false, eps=none, slope=none}(%10, %17, %18) : f32[1,2,4,8,8]
  %20 = select{axis=1, ranges=[0..1, 3..6]}(%12) : f32[1,4,4,8,8]
  %21 = select{axis=0, ranges=[0..1]}(%15) : i32[1,4,8,8]
  output "probs" = %14
  output "labels" = %15
  output "feat" = %13
}
"#;

fn parse_err(src: &str) -> (usize, usize, String) {
    match parse(src) {
        Err(IrError::Parse {
            path,
            line,
            col,
            msg,
        }) => {
            assert_eq!(path, "<text>");
            (line, col, msg)
        }
        other => panic!("expected a parse error for {src:?}, got {other:?}"),
    }
}

#[test]
fn golden_text_round_trips_byte_identically() {
    let g = parse(GOLDEN).expect("golden parses");
    assert_eq!(print(&g), GOLDEN);
    assert_eq!(g.name, "tiny \"net\"");
    assert_eq!(g.len(), 22);
    assert_eq!(g.outputs().len(), 3);
    assert!(structurally_equal(&g, &parse(&print(&g)).unwrap()));
}

#[test]
fn golden_text_is_well_typed() {
    // The golden graph was written by hand; its declared types agree with shape inference.
    let g = parse(GOLDEN).unwrap();
    for id in g.topo_order().unwrap() {
        let n = g.node(id);
        if matches!(n.op, Op::Input { .. } | Op::Weight { .. }) {
            continue;
        }
        let ops = g.operands(id);
        let tys: Vec<&TensorType> = ops.iter().map(|&o| &g.node(o).ty).collect();
        assert_eq!(
            crate::shape::infer(&n.op, &tys).unwrap(),
            n.ty,
            "{}",
            g.describe(id)
        );
    }
}

#[test]
fn golden_fused_and_select_attributes_are_read() {
    let g = parse(GOLDEN).unwrap();
    let op = |i: usize| g.node(g.node_ids().nth(i).unwrap()).op.clone();
    let conv = |k: usize, s: usize, p: [usize; 3]| ConvAttrs {
        kernel: if k == 1 { [1, 3, 3] } else { [k; 3] },
        stride: [s; 3],
        padding: p,
    };
    assert_eq!(
        op(16),
        Op::FusedConv3d(FusedConvAttrs {
            conv: conv(1, 1, [0, 1, 1]),
            transposed: false,
            shifts: vec![(-1, 1), (1, 1)],
            sparse_out: None,
            bias: true,
            norm_eps: Some(1e-5),
            slope: Some(0.01),
        })
    );
    assert_eq!(
        op(19),
        Op::FusedConv3d(FusedConvAttrs {
            sparse_out: Some(2),
            ..FusedConvAttrs::plain(conv(2, 2, [0; 3]), true, false)
        })
    );
    assert_eq!(
        op(20),
        Op::SelectChannels {
            axis: 1,
            ranges: vec![(0, 1), (3, 6)]
        }
    );
    let kidx = g.node(g.node_ids().nth(18).unwrap());
    assert_eq!(kidx.ty, TensorType::new(DType::I32, [3, 2]));
    assert_eq!(kidx.label.as_deref(), Some("up.kidx"));
}

#[test]
fn text_fused_attributes_in_any_order_and_extreme_values_round_trip() {
    let src = "graph \"g\" {\n  %0 = input \"x\" : f32[1,2,3,3,3]\n  \
               %1 = weight \"w\" : f32[1,1,1,1]\n  \
               %2 = fused_conv3d{slope=-0.0, eps=NaN, bias=false, sparse_out=99999, \
               shifts=[-9223372036854775808x1, 9223372036854775807x1], transposed=false, \
               padding=[0,0,0], stride=[1,1,1], kernel=[1,1,1]}(%0, %1) : f32[1]\n  \
               %3 = select{ranges=[], axis=7}(%0) : f32[1]\n}\n";
    let g = parse(src).unwrap();
    let text = print(&g);
    assert!(
        text.contains(
            "fused_conv3d{kernel=[1,1,1], stride=[1,1,1], padding=[0,0,0], transposed=false, \
             shifts=[-9223372036854775808x1, 9223372036854775807x1], sparse_out=99999, \
             bias=false, eps=NaN, slope=-0.0}(%0, %1)"
        ),
        "{text}"
    );
    assert!(text.contains("select{axis=7, ranges=[]}(%0)"), "{text}");
    let back = parse(&text).unwrap();
    assert!(structurally_equal(&g, &back));
    assert_eq!(print(&back), text);
    // -0.0 and 0.0 differ bit for bit, so the graphs differ.
    let other = parse(&text.replace("slope=-0.0", "slope=0.0")).unwrap();
    assert!(!structurally_equal(&g, &other));
    // The wrong arity (a sparse conv needs its index operand) is left to the verifier.
    assert_eq!(g.operands(g.node_ids().nth(2).unwrap()).len(), 2);
}

#[test]
fn text_weight_labels_are_restored_exactly() {
    let g = parse(GOLDEN).unwrap();
    let label = |i: usize| g.node(g.node_ids().nth(i).unwrap()).label.clone();
    assert_eq!(label(0), None);
    assert_eq!(label(1).as_deref(), Some("conv.weight"));
    assert_eq!(label(2).as_deref(), Some("bias of \\conv\\"));
    assert_eq!(label(3), None);
    assert_eq!(label(8).as_deref(), Some("naïve ☃\tlabel"));
    assert_eq!(label(15).as_deref(), Some("\u{1}ctl"));
}

#[test]
fn text_comments_whitespace_and_attribute_order_are_free() {
    let src = "; leading comment\n graph \"g\"{%0=input \"x\":f32[1,1,2,2,2] ; trailing\n\
               %1 = weight \"w\" : f32[1,1,1,1,1]\n\
               %2 = conv3d{padding=[0,0,0],kernel=[1,1,1],stride=[1,1,1]}(%0,%1):f32[1,1,2,2,2]\n\
               %3 = concat{}(%2) : f32[1,1,2,2,2]\n output \"y\"=%3 }  ; done\n";
    let g = parse(src).unwrap();
    let canonical = print(&g);
    assert!(canonical.contains(
        "%2 = conv3d{kernel=[1,1,1], stride=[1,1,1], padding=[0,0,0]}(%0, %1) : f32[1,1,2,2,2]\n"
    ));
    assert!(canonical.contains("%3 = concat(%2)"));
    assert_eq!(print(&parse(&canonical).unwrap()), canonical);
}

#[test]
fn text_floats_round_trip_bit_exactly() {
    for x in [
        1e-5f32,
        0.01,
        0.1 + 0.2,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::MAX,
        -0.0,
        1.0 / 3.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        let mut g = Graph::new("f");
        let x0 = g.input("x", TensorType::f32([1, 1, 1, 1, 1]));
        let ty = g.node(x0).ty.clone();
        g.add_typed(Op::LeakyRelu { slope: x }, &[x0], ty, None);
        let back = parse(&print(&g)).unwrap();
        let slope = back
            .node_ids()
            .find_map(|id| match back.node(id).op {
                Op::LeakyRelu { slope } => Some(slope),
                _ => None,
            })
            .unwrap();
        assert_eq!(slope.to_bits(), x.to_bits(), "{x:?}");
    }
}

#[test]
fn text_ill_typed_graphs_parse_with_declared_types() {
    // Wrong result type and wrong arity: the parser keeps both for the verifier.
    let src = "graph \"bad\" {\n  %0 = input \"x\" : f32[1,2,3,3,3]\n  \
               %1 = softmax(%0, %0) : i32[7]\n  %2 = add() : f32[]\n}\n";
    let g = parse(src).unwrap();
    assert_eq!(print(&g), src);
    let ids: Vec<_> = g.node_ids().collect();
    assert_eq!(
        g.node(ids[1]).ty,
        TensorType::new(crate::types::DType::I32, vec![7])
    );
    assert_eq!(g.operands(ids[1]).len(), 2);
    assert!(g.outputs().is_empty());
}

#[test]
fn text_leaf_with_operands_round_trips() {
    let mut g = Graph::new("odd");
    let x = g.input("x", TensorType::f32([1]));
    g.add_typed(
        Op::Input { name: "y".into() },
        &[x],
        TensorType::f32([1]),
        None,
    );
    let text = print(&g);
    assert!(text.contains("%1 = input \"y\"(%0) : f32[1]\n"), "{text}");
    assert_eq!(print(&parse(&text).unwrap()), text);
}

#[test]
fn text_cyclic_graph_prints_in_index_order_without_panicking() {
    let mut g = Graph::new("cyc");
    let ty = TensorType::f32([1, 1, 1, 1, 1]);
    let x = g.input("x", ty.clone());
    let a = g.add_typed(Op::Add, &[x, x], ty.clone(), None);
    let b = g.add_typed(Op::Softmax, &[a], ty.clone(), None);
    // Close a cycle a -> b -> c -> a by hand-building c and redirecting a's second operand.
    let c = g.add_typed(Op::Softmax, &[b], ty, None);
    g.replace_all_uses(x, c);
    let text = print(&g);
    assert!(text.starts_with("; warning: the graph has a cycle"));
    assert!(parse(&text).is_err());
}

#[test]
fn text_structural_equality_sees_differences() {
    let g = parse(GOLDEN).unwrap();
    let mut h = g.clone();
    assert!(structurally_equal(&g, &h));
    h.name = "other".into();
    assert!(!structurally_equal(&g, &h));
    let mut h = g.clone();
    let labelled = h.node_ids().nth(15).unwrap();
    h.node_mut(labelled).label = None;
    assert!(!structurally_equal(&g, &h));
    let mut h = g.clone();
    h.retain_outputs(&["probs", "labels"]);
    assert!(!structurally_equal(&g, &h));
    let mut h = g.clone();
    let shift = h.node_ids().nth(6).unwrap();
    h.node_mut(shift).op = Op::DepthShift(ShiftAttrs { groups: 5 });
    assert!(!structurally_equal(&g, &h));
    let edits: [fn(&mut FusedConvAttrs); 4] = [
        |a| a.shifts[0].0 = 0,
        |a| a.sparse_out = Some(4),
        |a| a.norm_eps = Some(1e-6),
        |a| a.slope = None,
    ];
    for edit in edits {
        let mut h = g.clone();
        let fused = h.node_ids().nth(16).unwrap();
        if let Op::FusedConv3d(a) = &mut h.node_mut(fused).op {
            edit(a);
        }
        assert!(!structurally_equal(&g, &h));
    }
    let mut h = g.clone();
    let select = h.node_ids().nth(20).unwrap();
    h.node_mut(select).op = Op::SelectChannels {
        axis: 1,
        ranges: vec![(0, 1), (3, 5)],
    };
    assert!(!structurally_equal(&g, &h));
}

#[test]
fn text_builder_graph_round_trips() {
    let mut g = Graph::new("built");
    let x = g.input("input", TensorType::f32([1, 1, 4, 6, 6]));
    let w = g.weight("w", TensorType::f32([3, 1, 1, 3, 3]));
    let c = ConvAttrs {
        kernel: [1, 3, 3],
        stride: [1, 2, 2],
        padding: [0, 1, 1],
    };
    let y = g.add(Op::Conv3d(c), &[x, w], Some("c".into())).unwrap();
    g.set_output("y", y);
    let text = print(&g);
    let back = parse(&text).unwrap();
    assert!(structurally_equal(&g, &back));
    assert_eq!(print(&back), text);
}

#[test]
fn text_parse_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.e2e");
    std::fs::write(&path, "graph \"g\" {\n  %0 = nope\n}\n").unwrap();
    let err = parse_file(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:2:8:", path.display())),
        "{err}"
    );
    let missing = parse_file(&dir.path().join("missing.e2e")).unwrap_err();
    assert!(matches!(missing, IrError::Io { .. }));
}

#[test]
fn text_parse_errors_point_at_the_line() {
    let head = "graph \"g\" {\n  %0 = input \"x\" : f32[1,2,4,4,4]\n";
    let cases: &[(&str, usize, &str)] = &[
        (
            "  %1 = frobnicate(%0) : f32[1]\n}",
            3,
            "unknown op `frobnicate`",
        ),
        (
            "  %1 = leaky_relu{slope=0.1, alpha=2}(%0) : f32[1]\n}",
            3,
            "unknown attribute `alpha`",
        ),
        (
            "  %1 = leaky_relu{slope=0.1, slope=0.2}(%0) : f32[1]\n}",
            3,
            "duplicate attribute `slope`",
        ),
        (
            "  %1 = max_pool3d{kernel=[2,2,2]}(%0) : f32[1]\n}",
            3,
            "missing its attribute `stride`",
        ),
        (
            "  %1 = leaky_relu(%0) : f32[1]\n}",
            3,
            "missing its attribute `slope`",
        ),
        (
            "  %1 = softmax{groups=1}(%0) : f32[1]\n}",
            3,
            "unknown attribute",
        ),
        (
            "\n\n  %1 = softmax(%7) : f32[1]\n}",
            5,
            "%7 is never defined",
        ),
        (
            "  %1 = add(%0, %2) : f32[1]\n  %2 = softmax(%0) : f32[1]\n}",
            3,
            "%2 is used before its definition",
        ),
        (
            "  %1 = softmax(%1) : f32[1]\n}",
            3,
            "%1 is used before its definition",
        ),
        (
            "  %0 = softmax(%0) : f32[1]\n}",
            3,
            "%0 is already defined on line 2",
        ),
        (
            "  %1 = softmax(%0) : f64[1]\n}",
            3,
            "unknown element type `f64`",
        ),
        (
            "  %1 = softmax(%0) : f32[1,,2]\n}",
            3,
            "expected a dimension",
        ),
        (
            "  %1 = softmax(%0) : f32[1,-2]\n}",
            3,
            "expected a dimension",
        ),
        ("  %1 = softmax(%0) f32[1]\n}", 3, "expected `:`"),
        ("  %1 = softmax(%0) : f32\n}", 4, "expected `[`"),
        (
            "  %1 = depth_shift{groups=1.5}(%0) : f32[1]\n}",
            3,
            "expected a non-negative integer",
        ),
        (
            "  %1 = conv3d{kernel=[1,1], stride=[1,1,1], padding=[0,0,0]}(%0) : f32[1]\n}",
            3,
            "expected `,`",
        ),
        (
            "  %1 = instance_norm{eps=tiny}(%0) : f32[1]\n}",
            3,
            "expected a number",
        ),
        (
            "  %1 = softmax(%0) : f32[99999999999999999999999]\n}",
            3,
            "too large",
        ),
        (
            "  output \"y\" = %0\n  output \"y\" = %0\n}",
            4,
            "duplicate output \"y\"",
        ),
        ("  output \"y\" = %3\n}", 3, "%3 is never defined"),
        (
            "  %1 = softmax(%0) : f32[1] @ 7\n}",
            3,
            "a label string or `none`",
        ),
        (
            "  %1 = softmax(%0) : f32[1] @\"open\n}",
            3,
            "unterminated string",
        ),
        (
            "  %1 = softmax(%0) : f32[1] @\"\\q\"\n}",
            3,
            "invalid escape",
        ),
        (
            "  %1 = softmax(%0) : f32[1] @\"\\u{d800}\"\n}",
            3,
            "invalid escape",
        ),
        (
            "  %1 = softmax(%0) : f32[1] # x\n}",
            3,
            "unexpected character '#'",
        ),
        (
            "  %1 = softmax(%0) : f32[1]\n",
            4,
            "expected `%N = ...`, `output` or `}`",
        ),
        ("}\ngraph \"again\" {}", 4, "after the graph"),
        ("  junk\n}", 3, "expected `%N = ...`"),
        (
            "  %1 = select{axis=1, ranges=[0..2 3..4]}(%0) : f32[1]\n}",
            3,
            "expected `,` or `]`",
        ),
        (
            "  %1 = select{axis=1, ranges=[0..2, 3.4]}(%0) : f32[1]\n}",
            3,
            "expected a range such as 0..96, found `3.4`",
        ),
        (
            "  %1 = select{axis=1, ranges=[0 .. 2]}(%0) : f32[1]\n}",
            3,
            "expected a range",
        ),
        (
            "  %1 = select{axis=1, ranges=0..2}(%0) : f32[1]\n}",
            3,
            "expected `[`",
        ),
        (
            "  %1 = select{axis=-1, ranges=[]}(%0) : f32[1]\n}",
            3,
            "expected a non-negative integer",
        ),
        (
            "  %1 = select{axis=1, ranges=[0..99999999999999999999999]}(%0) : f32[1]\n}",
            3,
            "too large",
        ),
        (
            "  %1 = select{axis=1}(%0) : f32[1]\n}",
            3,
            "missing its attribute `ranges`",
        ),
        (
            "  %1 = fused_conv3d{kernel=[1,1,1], stride=[1,1,1], padding=[0,0,0], \
             transposed=maybe}(%0) : f32[1]\n}",
            3,
            "expected `true` or `false`, found `maybe`",
        ),
        (
            "  %1 = fused_conv3d{shifts=[+1x2]}(%0) : f32[1]\n}",
            3,
            "expected a shift run such as -2x48",
        ),
        (
            "  %1 = fused_conv3d{shifts=[1x-2]}(%0) : f32[1]\n}",
            3,
            "expected a shift run",
        ),
        (
            "  %1 = fused_conv3d{shifts=[9223372036854775808x2]}(%0) : f32[1]\n}",
            3,
            "does not fit an i64",
        ),
        (
            "  %1 = fused_conv3d{sparse_out=nothing}(%0) : f32[1]\n}",
            3,
            "a non-negative integer or `none`",
        ),
        (
            "  %1 = fused_conv3d{eps=None}(%0) : f32[1]\n}",
            3,
            "a number or `none`",
        ),
        (
            "  %1 = fused_conv3d{eps=none, eps=none}(%0) : f32[1]\n}",
            3,
            "duplicate attribute `eps`",
        ),
        (
            "  %1 = fused_conv3d{kernel=[1,1,1], stride=[1,1,1], padding=[0,0,0], \
             transposed=false, shifts=[], sparse_out=none, bias=true, eps=none}(%0) : f32[1]\n}",
            3,
            "missing its attribute `slope`",
        ),
        (
            "  %1 = fused_conv3d{norm_eps=1e-5}(%0) : f32[1]\n}",
            3,
            "unknown attribute `norm_eps` of `fused_conv3d` (it takes: kernel, stride, padding, \
             transposed, shifts, sparse_out, bias, eps, slope)",
        ),
    ];
    for &(tail, line, needle) in cases {
        let src = format!("{head}{tail}");
        let (l, _, msg) = parse_err(&src);
        assert!(
            msg.contains(needle),
            "{src:?}: message {msg:?} lacks {needle:?}"
        );
        assert_eq!(l, line, "{src:?}: {msg}");
    }
    assert_eq!(
        parse_err(""),
        (1, 1, "expected `graph`, found end of input".into())
    );
    let (l, c, _) = parse_err("graph \"g\" {\n  %0 = input \"x\" : f32[1] @none extra\n}");
    assert_eq!((l, c), (2, 33));
}

#[test]
fn text_empty_graph_is_fine() {
    let g = parse("graph \"\" {}").unwrap();
    assert!(g.is_empty());
    assert_eq!(print(&g), "graph \"\" {\n}\n");
}
