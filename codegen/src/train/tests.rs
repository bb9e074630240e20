//! Tests of the training kernels against the interpreter (the oracle): every kernel of a
//! training graph is run on the interpreter's values of its operands and compared with the
//! interpreter's value of its node (relative error below 1e-4), on random small single-op graphs
//! (proptest: odd sizes, batch 2, strides, transposed convs, sparse masks, shifted inputs) and on
//! whole small E2ENets; tiling must not change a bit.

use std::collections::{BTreeMap, HashMap};

use e2enc_ir::autodiff::{training_graph, TrainGraph};
use e2enc_ir::e2enet::{build, output_name, BuildOptions, ModelConfig};
use e2enc_ir::tensor::relative_error;
use e2enc_ir::{
    interp, ConvAttrs, DType, Graph, NodeId, Op, PoolAttrs, ShiftAttrs, Tensor, TensorType, Weights,
};
use proptest::prelude::*;

use super::*;

type KernelFn = unsafe extern "C" fn(*mut f32, *const f32, *const i32, i64, i64);

use e2enc_ir::init::noise;

/// A random case: weights (dead kernels zeroed by `masks`), inputs and `grad.*` inputs.
struct Case {
    tg: TrainGraph,
    weights: Weights,
    inputs: BTreeMap<String, Tensor>,
    masks: HashMap<String, Vec<bool>>,
}

/// A case on `tg` after the training passes ([`prepare`]), as the runtime runs it.
fn case(tg: TrainGraph, masked: &[&str], seed: u64) -> Case {
    case_unprepared(prepare(&tg).expect("training passes"), masked, seed)
}

/// A case on `tg` as given (depth shifts not fused: they run as copies).
fn case_unprepared(tg: TrainGraph, masked: &[&str], seed: u64) -> Case {
    let g = &tg.graph;
    let mut weights = Weights::new();
    let mut masks = HashMap::new();
    for (k, (name, id)) in g.weights().into_iter().enumerate() {
        let shape = g.node(id).ty.shape.clone();
        let n: usize = shape.iter().product();
        let mut v = noise(n, seed ^ ((k as u64 + 1) * 7919));
        if masked.contains(&name.as_str()) && shape.len() == 5 {
            let kern: usize = shape[2..].iter().product();
            let m: Vec<bool> = noise(shape[0] * shape[1], seed ^ 0xabc ^ k as u64)
                .iter()
                .map(|&r| r > -0.2)
                .collect();
            for (kv, &live) in v.chunks_mut(kern).zip(&m) {
                if !live {
                    kv.fill(0.0);
                }
            }
            masks.insert(name.clone(), m);
        }
        weights.insert(name, Tensor::from_f32(shape, v).unwrap());
    }
    let mut inputs = BTreeMap::new();
    for (k, (name, id)) in g.inputs().into_iter().enumerate() {
        let shape = g.node(id).ty.shape.clone();
        let n: usize = shape.iter().product();
        let v = noise(n, seed ^ ((k as u64 + 101) * 104_729));
        inputs.insert(name, Tensor::from_f32(shape, v).unwrap());
    }
    Case {
        tg,
        weights,
        inputs,
        masks,
    }
}

/// Every node's interpreter value.
fn all_values(c: &Case) -> HashMap<NodeId, Tensor> {
    let mut g = c.tg.graph.clone();
    let ids: Vec<NodeId> = g.node_ids().collect();
    for id in &ids {
        g.set_output(format!("__v{}", id.index()), *id);
    }
    let names: Vec<String> = ids.iter().map(|id| format!("__v{}", id.index())).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut out = interp::run(&g, &c.weights, &c.inputs, &refs).unwrap();
    ids.iter()
        .zip(&names)
        .map(|(id, n)| (*id, out.remove(n).unwrap()))
        .collect()
}

/// Compiles the case's kernels, runs each on the oracle's operand values and compares; returns
/// the number of kernels checked.
fn check(c: &Case) -> Result<usize, String> {
    check_isa(c, Target::native())
}

/// [`check`] with kernels generated for `isa`.
fn check_isa(c: &Case, isa: Target) -> Result<usize, String> {
    // Only the masked weights are maskable: the others get the dense, grouped kernels.
    let maskable: std::collections::HashSet<String> = c.masks.keys().cloned().collect();
    let gen = generate_train_masked(&c.tg, isa, Some(&maskable)).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (cf, so) = (dir.path().join("t.c"), dir.path().join("t.so"));
    std::fs::write(&cf, &gen.c_source).map_err(|e| e.to_string())?;
    crate::compile::run_cc("cc", &cf, &so, isa).map_err(|e| e.to_string())?;
    let lib = unsafe { e2enc_runtime::cc::load_library(&so) }.map_err(|e| e.to_string())?;
    let vals = all_values(c);
    let g = &c.tg.graph;
    for k in &gen.kernels {
        let f: libloading::Symbol<'_, KernelFn> =
            unsafe { lib.get(k.name.as_bytes()) }.map_err(|e| e.to_string())?;
        let ins: Vec<&[f32]> = k
            .operands
            .iter()
            .map(|o| vals[o].as_f32().unwrap())
            .collect();
        let ptrs: Vec<*const f32> = ins.iter().map(|s| s.as_ptr()).collect();
        let mask = k.mask.as_ref().and_then(|w| c.masks.get(w));
        let live = k.live.build(mask.map(|m| m.as_slice())).unwrap();
        let want_t = &vals[&k.node];
        let n = want_t.numel();
        let run = |split: &[usize]| {
            let mut out = vec![f32::NAN; n];
            for w in split.windows(2) {
                unsafe {
                    f(
                        out.as_mut_ptr(),
                        ptrs.as_ptr() as *const f32,
                        live.as_ptr(),
                        w[0] as i64,
                        w[1] as i64,
                    )
                };
            }
            out
        };
        let whole = run(&[0, k.tiles]);
        let each: Vec<usize> = (0..=k.tiles).collect();
        if whole
            .iter()
            .zip(run(&each))
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(format!("{}: tiling changed the result", g.describe(k.node)));
        }
        let mut want = want_t.clone();
        if let (Op::ConvBackwardWeight(_), Some(m)) = (&g.node(k.node).op, mask) {
            let v = want.as_f32_mut().unwrap();
            let kern = n / m.len();
            for (kv, &live) in v.chunks_mut(kern).zip(m) {
                if !live {
                    kv.fill(0.0);
                }
            }
        }
        let got = Tensor::from_f32(want.shape().to_vec(), whole).unwrap();
        let e = relative_error(&got, &want).unwrap_or(f64::INFINITY);
        if e.is_nan() || e >= 1e-4 {
            return Err(format!(
                "{} ({}): relative error {e:e}",
                g.describe(k.node),
                k.name
            ));
        }
    }
    Ok(gen.kernels.len())
}

fn f32t(s: &[usize]) -> TensorType {
    TensorType::f32(s.to_vec())
}

/// A graph `x → [shift] → conv/transposed conv (+bias) → leaky ReLU → out` with `x` a weight
/// (so the data gradient is formed too).
#[allow(clippy::too_many_arguments)]
fn conv_case(
    n: usize,
    ci: usize,
    co: usize,
    sp: [usize; 3],
    k: [usize; 3],
    stride: [usize; 3],
    transposed: bool,
    shift: bool,
    seed: u64,
) -> Option<Case> {
    let mut g = Graph::new("conv");
    let x = g.weight("x", f32t(&[n, ci, sp[0], sp[1], sp[2]]));
    let pad = if transposed {
        [0; 3]
    } else {
        [k[0] / 2, k[1] / 2, k[2] / 2]
    };
    let a = ConvAttrs {
        kernel: k,
        stride,
        padding: pad,
    };
    let (op, ws) = if transposed {
        (Op::ConvTranspose3d(a), [ci, co, k[0], k[1], k[2]])
    } else {
        (Op::Conv3d(a), [co, ci, k[0], k[1], k[2]])
    };
    let w = g.weight("w", f32t(&ws));
    let b = g.weight("b", f32t(&[co]));
    let src = if shift {
        g.add(Op::DepthShift(ShiftAttrs { groups: 3 }), &[x], None)
            .ok()?
    } else {
        x
    };
    let y = g.add(op, &[src, w, b], None).ok()?;
    let r = g.add(Op::LeakyRelu { slope: 0.1 }, &[y], None).ok()?;
    g.set_output("out", r);
    let tg = training_graph(&g, &["out"]).ok()?;
    // A third of the cases dense (no mask).
    let masked: &[&str] = if seed.is_multiple_of(3) { &[] } else { &["w"] };
    Some(case(tg, masked, seed))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn conv_kernels_match_the_interpreter(
        n in 1usize..3, ci in 1usize..6, co in 1usize..6,
        d in 2usize..6, h in 2usize..7, w in 2usize..9,
        kind in 0usize..4, s2 in any::<bool>(), transposed in any::<bool>(),
        shift in any::<bool>(), seed in any::<u64>(),
    ) {
        let k = [[1, 3, 3], [3, 3, 3], [1, 1, 1], [2, 2, 2]][kind];
        let transposed = transposed || kind == 3;
        let stride = if transposed {
            [k[0], k[1], k[2]]
        } else if s2 {
            [1, 2, 2]
        } else {
            [1, 1, 1]
        };
        let kind_k = if transposed && kind != 3 { [1, 2, 2] } else { k };
        let stride = if transposed { kind_k } else { stride };
        let shift = shift && !transposed;
        if let Some(c) = conv_case(n, ci, co, [d, h, w], kind_k, stride, transposed, shift, seed) {
            // Half the cases on the AVX2 kernels (the generic weight gradient).
            let isa = if seed % 2 == 0 { Target::X86Avx2 } else { Target::native() };
            let checked = check_isa(&c, isa).map_err(TestCaseError::fail)?;
            prop_assert!(checked >= 4);
        }
    }

    #[test]
    fn norm_pool_and_copy_kernels_match_the_interpreter(
        n in 1usize..3, c in 1usize..7, d in 2usize..5, h in 2usize..7, w in 2usize..21,
        groups in 1usize..5, seed in any::<u64>(),
    ) {
        let (d, h, w) = (2 * d, 2 * h, 2 * w);
        let mut g = Graph::new("misc");
        let x = g.weight("x", f32t(&[n, c, d, h, w]));
        let gm = g.weight("gamma", f32t(&[c]));
        let bt = g.weight("beta", f32t(&[c]));
        let s = g.add(Op::DepthShift(ShiftAttrs { groups }), &[x], None).unwrap();
        let nm = g.add(Op::InstanceNorm { eps: 1e-5 }, &[s, gm, bt], None).unwrap();
        let r = g.add(Op::LeakyRelu { slope: 0.01 }, &[nm], None).unwrap();
        let p = g.add(Op::MaxPool3d(PoolAttrs { kernel: [1, 2, 2], stride: [1, 2, 2] }), &[r], None).unwrap();
        let q = g.add(Op::MaxPool3d(PoolAttrs { kernel: [1, 2, 2], stride: [1, 2, 2] }), &[x], None).unwrap();
        let iso = g.add(Op::MaxPool3d(PoolAttrs { kernel: [2, 2, 2], stride: [2, 2, 2] }), &[r], None).unwrap();
        let cat = g.add(Op::Concat, &[p, q, p], None).unwrap();
        let sum = g.add(Op::Add, &[r, x], None).unwrap();
        g.set_output("cat", cat);
        g.set_output("sum", sum);
        g.set_output("iso", iso);
        // Windows that leave a remainder (kernel = stride 3) and overlapping ones.
        let rem = g.add(Op::MaxPool3d(PoolAttrs { kernel: [1, 3, 3], stride: [1, 3, 3] }), &[r], None).unwrap();
        let ovl = g.add(Op::MaxPool3d(PoolAttrs { kernel: [1, 3, 3], stride: [1, 2, 2] }), &[r], None).unwrap();
        g.set_output("rem", rem);
        g.set_output("ovl", ovl);
        let tg = training_graph(&g, &["cat", "sum", "iso", "rem", "ovl"]).unwrap();
        let checked = check(&case(tg, &[], seed)).map_err(TestCaseError::fail)?;
        prop_assert!(checked >= 14);
    }
}

fn small_config(levels: usize, width: usize, groups: usize, iso: bool) -> ModelConfig {
    let mut cfg = ModelConfig::small(levels, width, groups, iso);
    let f = 1 << (levels - 1);
    cfg.patch_size = [if iso { f } else { 3 }, f * 3, f * 2];
    cfg
}

fn network(cfg: &ModelConfig, seed: u64) -> Case {
    let net = build(
        cfg,
        &BuildOptions {
            batch: 2,
            patch: None,
        },
    )
    .unwrap();
    let outs: Vec<String> = (0..=cfg.deep_supervision_heads).map(output_name).collect();
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let tg = training_graph(&net.graph, &refs).unwrap();
    let dsff: Vec<&str> = net
        .params
        .iter()
        .filter(|p| p.dsff)
        .map(|p| p.name.as_str())
        .collect();
    case(tg, &dsff, seed)
}

#[test]
fn every_op_of_small_e2enets_has_a_kernel_that_matches() {
    for (levels, width, groups, iso) in [(3, 4, 3, false), (4, 3, 5, true), (3, 5, 1, true)] {
        let cfg = small_config(levels, width, groups, iso);
        let c = network(&cfg, levels as u64 * 31 + width as u64);
        let g = &c.tg.graph;
        let n = check(&c).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
        let compute = g
            .node_ids()
            .filter(|&id| !matches!(g.node(id).op, Op::Input { .. } | Op::Weight { .. }))
            .count();
        assert_eq!(n, compute);
        assert!(g.node_ids().all(|id| g.node(id).ty.dtype == DType::F32));
    }
}

#[test]
fn unprepared_graphs_have_kernels_that_match_too() {
    // Without the training passes the depth shifts and their backward run as copies.
    let cfg = small_config(3, 4, 3, false);
    let net = build(&cfg, &BuildOptions::default()).unwrap();
    let outs: Vec<String> = net.graph.outputs().iter().map(|o| o.0.clone()).collect();
    let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let tg = training_graph(&net.graph, &outs).unwrap();
    let c = case_unprepared(tg, &[], 91);
    let g = &c.tg.graph;
    assert!(g
        .node_ids()
        .any(|id| matches!(g.node(id).op, Op::DepthShift(_))));
    check(&c).unwrap();
}

#[test]
fn depth_shifts_before_convs_are_fused() {
    let c = conv_case(2, 4, 3, [4, 5, 6], [1, 3, 3], [1, 1, 1], false, true, 5).unwrap();
    let g = &c.tg.graph;
    // After the passes no shift is left: the conv and its weight gradient read the input
    // through it, and the data gradient is written in the opposite shift.
    let has = |f: &dyn Fn(&Op) -> bool| g.node_ids().filter(|&id| f(&g.node(id).op)).count();
    assert_eq!(
        has(&|op| matches!(op, Op::DepthShift(_) | Op::DepthShiftBackward(_))),
        0
    );
    assert_eq!(
        has(&|op| matches!(op, Op::FusedConv3d(a) if !a.shifts.is_empty())),
        1
    );
    assert_eq!(
        has(&|op| matches!(op, Op::ConvBackwardWeight(a) if !a.shifts.is_empty())),
        1
    );
    assert_eq!(
        has(&|op| matches!(op, Op::ConvBackwardData(a) if !a.shifts.is_empty())),
        1
    );
    let gen = generate_train(&c.tg, Target::X86Avx2).unwrap();
    assert_eq!(
        gen.c_source,
        generate_train(&c.tg, Target::X86Avx2).unwrap().c_source
    );
    check(&c).unwrap();
}

#[test]
fn live_lists_are_csr_rows() {
    let m = [true, false, true, false, false, true];
    assert_eq!(live_csr(Some(&m), 2, 3, false).unwrap(), [3, 5, 6, 0, 2, 2]);
    assert_eq!(
        live_csr(Some(&m), 2, 3, true).unwrap(),
        [4, 5, 5, 7, 0, 0, 1]
    );
    assert_eq!(live_csr(None, 1, 2, false).unwrap(), [2, 4, 0, 1]);
    assert!(live_csr(Some(&m), 2, 2, false).is_none());
}

#[test]
fn max_pool_ties_go_to_the_first_maximum_in_window_order() {
    for (k, w) in [([2, 2, 2], 38), ([1, 2, 2], 6), ([1, 3, 3], 9)] {
        let mut g = Graph::new("ties");
        let x = g.weight("x", f32t(&[2, 3, 4, 6, w]));
        let a = PoolAttrs {
            kernel: k,
            stride: k,
        };
        let p = g.add(Op::MaxPool3d(a), &[x], None).unwrap();
        g.set_output("out", p);
        let tg = training_graph(&g, &["out"]).unwrap();
        let mut c = case(tg, &[], 9);
        // Values in {-1, -0.5, 0, 0.5}: most windows hold ties.
        let t = c.weights.get("x").unwrap();
        let v: Vec<f32> = t
            .as_f32()
            .unwrap()
            .iter()
            .map(|v| (v * 2.0).floor() / 2.0)
            .collect();
        c.weights
            .insert("x", Tensor::from_f32(t.shape().to_vec(), v).unwrap());
        for isa in [Target::X86Avx2, Target::native()] {
            check_isa(&c, isa).unwrap_or_else(|e| panic!("{k:?} {isa}: {e}"));
        }
    }
}
