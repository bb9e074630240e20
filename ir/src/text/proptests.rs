//! Property tests of the text form: random well-typed graphs (built with `Graph::add`, with
//! labels and names drawn from all of Unicode) print, parse and print again to the same bytes
//! and to a structurally equal graph; random and mutated texts never make the parser panic, and
//! whatever it accepts prints stably.

use proptest::prelude::*;

use super::*;
use crate::op::{shift_runs, ConvAttrs, ConvGradAttrs, FusedConvAttrs, PoolAttrs, ShiftAttrs};
use crate::types::{DType, TensorType};

/// One construction step: an op kind, small integer parameters, a float, operand picks, a label.
type Step = (u8, [u8; 16], f32, [usize; 3], Option<String>);

fn float_attr() -> impl Strategy<Value = f32> {
    use proptest::num::f32 as f;
    prop_oneof![
        -1.0f32..1.0,
        1e-8f32..1e-3,
        f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
    ]
}

fn label() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        "[a-z0-9_.]{1,12}",
        "[\"\\\\a-z;%@{}() \t\n]{0,8}",
        any::<String>(),
    ])
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..20,
        any::<[u8; 16]>(),
        float_attr(),
        any::<[usize; 3]>(),
        label(),
    )
}

/// A weight of type `ty`, labelled the way `Graph::weight` does or otherwise (`how`).
fn weight(g: &mut Graph, name: String, ty: TensorType, how: u8, label: &Option<String>) -> NodeId {
    match how % 3 {
        0 => g.weight(name, ty),
        1 => g.add_typed(Op::Weight { name }, &[], ty, None),
        _ => g.add_typed(Op::Weight { name }, &[], ty, label.clone()),
    }
}

/// Builds a well-typed graph from `steps`, skipping steps that shape inference rejects.
fn build(name: &str, input: [u8; 4], steps: &[Step], outs: &[(String, usize)]) -> Graph {
    let mut g = Graph::new(name);
    let dims = |b: u8, hi: u8| usize::from(1 + b % hi);
    let shape = [
        1,
        dims(input[0], 3),
        dims(input[1], 5),
        dims(input[2], 6),
        dims(input[3], 6),
    ];
    let x = g.input(name.to_string(), TensorType::f32(shape));
    let mut acts = vec![x];
    let mut all = vec![x];
    for (i, (kind, p, f, picks, label)) in steps.iter().enumerate() {
        let pick = |k: usize| acts[picks[k] % acts.len()];
        let a = pick(0);
        let cin = g.node(a).ty.shape[1];
        let triple =
            |o: usize, hi: u8, base: usize| [0, 1, 2].map(|j| base + usize::from(p[o + j] % hi));
        let conv = || ConvAttrs {
            kernel: triple(0, 3, 1),
            stride: triple(3, 2, 1),
            padding: triple(6, 2, 0),
        };
        let cout = 1 + usize::from(p[9] % 4);
        let wname = format!("layer{i}.{}", label.as_deref().unwrap_or("w"));
        let (op, operands) = match kind {
            0 => (
                Op::DepthShift(ShiftAttrs {
                    groups: 1 + usize::from(p[0] % 7),
                }),
                vec![a],
            ),
            1 | 2 => {
                let c = conv();
                let wshape = if *kind == 1 { [cout, cin] } else { [cin, cout] };
                let wt =
                    TensorType::f32([wshape[0], wshape[1], c.kernel[0], c.kernel[1], c.kernel[2]]);
                let w = weight(&mut g, format!("{wname}.weight"), wt, p[8], label);
                let mut ops = vec![a, w];
                if p[9] & 0x80 != 0 {
                    ops.push(weight(
                        &mut g,
                        format!("{wname}.bias"),
                        TensorType::f32([cout]),
                        p[7],
                        label,
                    ));
                }
                let op = if *kind == 1 {
                    Op::Conv3d(c)
                } else {
                    Op::ConvTranspose3d(c)
                };
                (op, ops)
            }
            3 => {
                let gamma = weight(
                    &mut g,
                    format!("{wname}.weight"),
                    TensorType::f32([cin]),
                    p[0],
                    label,
                );
                let beta = weight(
                    &mut g,
                    format!("{wname}.bias"),
                    TensorType::f32([cin]),
                    p[1],
                    label,
                );
                (Op::InstanceNorm { eps: f.abs() }, vec![a, gamma, beta])
            }
            4 => (Op::LeakyRelu { slope: *f }, vec![a]),
            5 => (
                Op::MaxPool3d(PoolAttrs {
                    kernel: triple(0, 2, 1),
                    stride: triple(3, 2, 1),
                }),
                vec![a],
            ),
            6 => (
                Op::Concat,
                (0..1 + usize::from(p[0] % 3)).map(pick).collect(),
            ),
            7 => (Op::Add, vec![a, pick(1)]),
            8 => (Op::Softmax, vec![a]),
            9 => (Op::Argmax, vec![a]),
            10 => {
                // Any node (rank 4 i32 argmax results included), any axis, up to three ranges.
                let x = all[picks[1] % all.len()];
                let shape = g.node(x).ty.shape.clone();
                let axis = usize::from(p[0]) % shape.len().max(1);
                let n = shape.get(axis).copied().unwrap_or(1).max(1);
                let mut ranges = Vec::new();
                let mut at = usize::from(p[1]) % n;
                for k in 0..3 {
                    if at >= n {
                        break;
                    }
                    let end = at + 1 + usize::from(p[2 + k]) % (n - at);
                    ranges.push((at, end));
                    at = end + usize::from(p[5 + k] % 3);
                }
                (Op::SelectChannels { axis, ranges }, vec![x])
            }
            12 | 13 => {
                // A forward conv first, then its data or weight gradient.
                let c = conv();
                let transposed = p[10] & 1 != 0;
                let k = c.kernel;
                let wshape = if transposed { [cin, cout] } else { [cout, cin] };
                let wt = TensorType::f32([wshape[0], wshape[1], k[0], k[1], k[2]]);
                let w = weight(&mut g, format!("{wname}.weight"), wt, p[8], label);
                let fwd = if transposed {
                    Op::ConvTranspose3d(c.clone())
                } else {
                    Op::Conv3d(c.clone())
                };
                let Ok(y) = g.add(fwd, &[a, w], None) else {
                    continue;
                };
                let xs = &g.node(a).ty.shape;
                let ga = ConvGradAttrs {
                    conv: c,
                    transposed,
                    input: [xs[2], xs[3], xs[4]],
                    shifts: if !transposed && p[10] & 2 != 0 {
                        shift_runs(1 + usize::from(p[11] % 7), cin)
                    } else {
                        Vec::new()
                    },
                };
                if *kind == 12 {
                    (Op::ConvBackwardData(ga), vec![y, w])
                } else {
                    (Op::ConvBackwardWeight(ga), vec![a, y])
                }
            }
            14 => (Op::ChannelSum, vec![a]),
            15 => (
                Op::DepthShiftBackward(ShiftAttrs {
                    groups: 1 + usize::from(p[0] % 7),
                }),
                vec![a],
            ),
            16 => {
                let t = TensorType::f32([cin]);
                let gamma = weight(&mut g, format!("{wname}.weight"), t, p[0], label);
                (Op::InstanceNormBackward { eps: f.abs() }, vec![a, gamma, a])
            }
            17 => (Op::InstanceNormGammaGrad { eps: f.abs() }, vec![a, a]),
            18 => (Op::LeakyReluBackward { slope: *f }, vec![a, a]),
            19 => {
                let pool = PoolAttrs {
                    kernel: triple(0, 2, 1),
                    stride: triple(3, 2, 1),
                };
                let Ok(y) = g.add(Op::MaxPool3d(pool.clone()), &[a], None) else {
                    continue;
                };
                (Op::MaxPoolBackward(pool), vec![a, y])
            }
            _ => {
                let mut attrs = FusedConvAttrs::plain(conv(), p[10] & 1 != 0, p[9] & 0x80 != 0);
                let (d0, d1) = if attrs.transposed {
                    (cin, cout)
                } else {
                    (cout, cin)
                };
                let k = attrs.conv.kernel;
                if !attrs.transposed && p[10] & 2 != 0 {
                    attrs.shifts = if p[11] & 1 == 0 {
                        shift_runs(1 + usize::from(p[11] % 7), cin)
                    } else {
                        // Hand-made runs, extreme shifts included.
                        let mut runs = Vec::new();
                        let mut left = cin;
                        let mut j = 0;
                        while left > 0 {
                            let n = (1 + usize::from(p[12 + j % 2] % 3)).min(left);
                            let s = match p[14].wrapping_add(j as u8) % 8 {
                                0 => i64::MIN,
                                1 => i64::MAX,
                                r => i64::from(r) - 4,
                            };
                            runs.push((s, n));
                            left -= n;
                            j += 1;
                        }
                        runs
                    };
                }
                let mut ops = vec![a];
                if p[10] & 4 != 0 {
                    // Kernel-sparse: n live kernels packed as [n, k..] with an i32 [n, 2] index.
                    attrs.sparse_out = Some(cout);
                    let n = 1 + usize::from(p[13]) % (d0 * d1);
                    let wt = TensorType::f32([n, k[0], k[1], k[2]]);
                    ops.push(weight(&mut g, format!("{wname}.packed"), wt, p[8], label));
                    let kt = TensorType::new(DType::I32, [n, 2]);
                    ops.push(weight(&mut g, format!("{wname}.kidx"), kt, p[7], label));
                } else {
                    let wt = TensorType::f32([d0, d1, k[0], k[1], k[2]]);
                    ops.push(weight(&mut g, format!("{wname}.weight"), wt, p[8], label));
                }
                if attrs.bias {
                    let bt = TensorType::f32([cout]);
                    ops.push(weight(&mut g, format!("{wname}.bias"), bt, p[7], label));
                }
                if p[15] & 1 != 0 {
                    attrs.norm_eps = Some(f.abs());
                    for (what, how) in [("gamma", p[0]), ("beta", p[1])] {
                        let t = TensorType::f32([cout]);
                        ops.push(weight(&mut g, format!("{wname}.{what}"), t, how, label));
                    }
                }
                if p[15] & 2 != 0 {
                    attrs.slope = Some(if p[15] & 4 != 0 { -*f } else { *f });
                }
                (Op::FusedConv3d(attrs), ops)
            }
        };
        let Ok(id) = g.add(op, &operands, label.clone()) else {
            continue;
        };
        if g.node(id).ty.rank() == 5 {
            acts.push(id);
        }
        all.push(id);
    }
    for (name, k) in outs {
        g.set_output(name.clone(), all[k % all.len()]);
    }
    g
}

fn graph() -> impl Strategy<Value = Graph> {
    (
        any::<String>(),
        any::<[u8; 4]>(),
        prop::collection::vec(step(), 0..14),
        prop::collection::vec((any::<String>(), any::<usize>()), 0..4),
    )
        .prop_map(|(name, input, steps, outs)| build(&name, input, &steps, &outs))
}

/// Edits that keep much of a valid text's structure.
#[derive(Clone, Debug)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Token(usize, &'static str),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

const VOCAB: &[&str] = &[
    "%",
    "%0",
    "%99",
    "=",
    ":",
    ",",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "@",
    "@none",
    "\"",
    "\"s\"",
    "\\",
    ";",
    "\n",
    "output",
    "graph",
    "conv3d",
    "softmax",
    "input",
    "weight",
    "f32[1]",
    "i32",
    "eps=",
    "1e-5",
    "-1",
    "NaN",
    "inf",
    "99999999999999999999999",
    "\"\\u{",
    "kernel=[1,1,1]",
    "fused_conv3d",
    "select",
    "none",
    "true",
    "false",
    "0..3",
    "-2x4",
    "x",
    "..",
    "shifts=[]",
    "ranges=[0..1]",
    "sparse_out=",
    "i32[3,2]",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..12).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), any::<String>()).prop_map(|(a, s)| Edit::Insert(a, s)),
        (any::<usize>(), prop::sample::select(VOCAB)).prop_map(|(a, t)| Edit::Token(a, t)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// The char boundary at or before `at % (len + 1)`.
fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, e: &Edit) -> String {
    let mut s = text.to_string();
    match e {
        Edit::Delete(a, n) => {
            let i = boundary(&s, *a);
            let j = boundary(&s, (i + n).min(s.len()));
            s.replace_range(i..j.max(i), "");
        }
        Edit::Insert(a, t) => s.insert_str(boundary(&s, *a), t),
        Edit::Token(a, t) => s.insert_str(boundary(&s, *a), t),
        Edit::DuplicateLine(a) | Edit::SwapLines(a, _) => {
            let mut lines: Vec<&str> = text.lines().collect();
            let i = a % lines.len().max(1);
            match e {
                Edit::SwapLines(_, b) if !lines.is_empty() => {
                    let j = b % lines.len();
                    lines.swap(i, j);
                }
                _ if !lines.is_empty() => lines.insert(i, lines[i]),
                _ => {}
            }
            s = lines.join("\n");
        }
    }
    s
}

/// Whatever the parser accepts prints to a text that parses back to the same printout.
fn check_stable(src: &str) -> Result<(), TestCaseError> {
    if let Ok(g) = parse(src) {
        let t = print(&g);
        let h = parse(&t).map_err(|e| TestCaseError::fail(format!("{e}\n{t}")))?;
        prop_assert_eq!(print(&h), t);
        prop_assert!(structurally_equal(&g, &h));
    }
    Ok(())
}

fn seed_text() -> String {
    print(&parse(super::tests::GOLDEN).expect("golden parses"))
}

proptest! {
    #[test]
    fn text_random_graphs_round_trip(g in graph()) {
        let t = print(&g);
        let h = parse(&t).map_err(|e| TestCaseError::fail(format!("{e}\n{t}")))?;
        prop_assert_eq!(print(&h), t.clone());
        prop_assert!(structurally_equal(&g, &h), "not structurally equal:\n{}", t);
        prop_assert_eq!(h.len(), g.len());
        let h2 = parse(&print(&h)).unwrap();
        prop_assert!(structurally_equal(&h, &h2));
    }

    #[test]
    fn text_parser_never_panics_on_random_input(s in any::<String>()) {
        let _ = parse(&s);
        check_stable(&s)?;
    }

    #[test]
    fn text_parser_never_panics_on_ascii_soup(s in "[ -~\n]{0,200}") {
        check_stable(&format!("graph \"g\" {{\n{s}\n}}"))?;
        check_stable(&s)?;
    }

    #[test]
    fn text_parser_never_panics_on_mutated_text(edits in prop::collection::vec(edit(), 1..6)) {
        let mut s = seed_text();
        for e in &edits {
            s = apply(&s, e);
        }
        check_stable(&s)?;
    }

    #[test]
    fn text_parser_never_panics_on_mutated_random_graphs(
        g in graph(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut s = print(&g);
        for e in &edits {
            s = apply(&s, e);
        }
        check_stable(&s)?;
    }
}

/// The generator really produces every flavour of the newer ops (they are easy to lose to shape
/// inference rejecting every attempt).
#[test]
fn text_random_graphs_cover_fused_select_and_training_ops() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = [0usize; 15];
    for _ in 0..300 {
        let g = graph().new_tree(&mut runner).unwrap().current();
        for id in g.node_ids() {
            match &g.node(id).op {
                Op::SelectChannels { .. } => {
                    seen[0] += 1;
                    let x = g.operands(id)[0];
                    seen[1] += usize::from(g.node(x).ty.dtype == DType::I32);
                }
                op if op.is_training() => {
                    let k = match op {
                        Op::ConvBackwardData(_) => 7,
                        Op::ConvBackwardWeight(_) => 8,
                        Op::ChannelSum => 9,
                        Op::DepthShiftBackward(_) => 10,
                        Op::InstanceNormBackward { .. } => 11,
                        Op::InstanceNormGammaGrad { .. } => 12,
                        Op::LeakyReluBackward { .. } => 13,
                        _ => 14,
                    };
                    seen[k] += 1;
                }
                Op::FusedConv3d(a) => {
                    seen[2] += 1;
                    seen[3] += usize::from(a.sparse_out.is_some());
                    seen[4] += usize::from(!a.shifts.is_empty());
                    seen[5] += usize::from(a.transposed);
                    seen[6] += usize::from(a.norm_eps.is_some() && a.slope.is_some());
                }
                _ => {}
            }
        }
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "select, on i32, fused, sparse, shifted, transposed, normed, then the eight training \
         ops: {seen:?}"
    );
}
