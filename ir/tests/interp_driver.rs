//! Tests of the interpreter driver (`interp::run`): only requested outputs are computed,
//! intermediates are freed after their last use, and every caller mistake is a clear error.
//! Tests sit in a `mod interp` so `cargo test interp` selects them.

mod interp {
    use std::collections::BTreeMap;

    use e2enc_ir::interp::{self, ops, RunStats};
    use e2enc_ir::{
        ConvAttrs, Graph, IrError, NodeId, Op, ShiftAttrs, Tensor, TensorType, Weights,
    };

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
    }

    /// Deterministic, non-trivial values.
    fn ramp(shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
            .collect::<Vec<_>>();
        t(shape, &v)
    }

    fn inputs(list: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    }

    const X: [usize; 5] = [1, 2, 3, 4, 4];

    /// x -> shift -> conv(w, b) -> norm(g, beta) -> leaky  = output "a"
    ///                                   └-> conv1x1(head) = output "b" (needs weight "head")
    fn two_headed() -> (Graph, Weights) {
        let mut g = Graph::new("two_headed");
        let x = g.input("x", TensorType::f32(X));
        let s = g
            .add(Op::DepthShift(ShiftAttrs { groups: 5 }), &[x], None)
            .unwrap();
        let w = g.weight("w", TensorType::f32([3, 2, 1, 3, 3]));
        let b = g.weight("b", TensorType::f32([3]));
        let conv = ConvAttrs {
            kernel: [1, 3, 3],
            stride: [1, 1, 1],
            padding: [0, 1, 1],
        };
        let c = g
            .add(Op::Conv3d(conv), &[s, w, b], Some("conv".into()))
            .unwrap();
        let gamma = g.weight("gamma", TensorType::f32([3]));
        let beta = g.weight("beta", TensorType::f32([3]));
        let n = g
            .add(Op::InstanceNorm { eps: 1e-5 }, &[c, gamma, beta], None)
            .unwrap();
        let a = g.add(Op::LeakyRelu { slope: 0.01 }, &[n], None).unwrap();
        g.set_output("a", a);
        let hw = g.weight("head", TensorType::f32([2, 3, 1, 1, 1]));
        let head = ConvAttrs {
            kernel: [1, 1, 1],
            stride: [1, 1, 1],
            padding: [0, 0, 0],
        };
        let h = g
            .add(Op::Conv3d(head), &[c, hw], Some("head".into()))
            .unwrap();
        g.set_output("b", h);
        let mut ws = Weights::new();
        ws.insert("w", ramp(&[3, 2, 1, 3, 3], 0.1));
        ws.insert("b", t(&[3], &[0.5, -0.25, 0.]));
        ws.insert("gamma", t(&[3], &[1., 2., 0.5]));
        ws.insert("beta", t(&[3], &[0., 1., -1.]));
        ws.insert("head", ramp(&[2, 3, 1, 1, 1], 1.0));
        (g, ws)
    }

    fn interp_err(r: Result<BTreeMap<String, Tensor>, IrError>, node: &str, needles: &[&str]) {
        match r {
            Err(IrError::Interp { node: n, msg }) => {
                assert!(n.contains(node), "node {n:?} lacks {node:?}");
                for s in needles {
                    assert!(msg.contains(s), "message {msg:?} lacks {s:?}");
                }
            }
            other => panic!("expected an interpreter error, got {other:?}"),
        }
    }

    #[test]
    fn run_matches_the_kernels_called_by_hand() {
        let (g, ws) = two_headed();
        let x = ramp(&X, 1.0);
        let out = interp::run(&g, &ws, &inputs(&[("x", x.clone())]), &[]).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["a", "b"]);

        let w = |n: &str| ws.get(n).unwrap().as_ref();
        let s = ops::depth_shift(&x, &ShiftAttrs { groups: 5 }).unwrap();
        let conv = ConvAttrs {
            kernel: [1, 3, 3],
            stride: [1, 1, 1],
            padding: [0, 1, 1],
        };
        let c = ops::conv3d(&s, w("w"), Some(w("b")), &conv).unwrap();
        let n = ops::instance_norm(&c, w("gamma"), w("beta"), 1e-5).unwrap();
        let a = ops::leaky_relu(&n, 0.01).unwrap();
        let head = ConvAttrs {
            kernel: [1, 1, 1],
            stride: [1, 1, 1],
            padding: [0, 0, 0],
        };
        let b = ops::conv3d(&c, w("head"), None, &head).unwrap();
        assert_eq!(out["a"], a);
        assert_eq!(out["b"], b);
    }

    #[test]
    fn run_computes_only_requested_outputs() {
        let (g, mut ws) = two_headed();
        // The head's weight is only needed for "b": without it, "a" alone still runs.
        ws.remove("head");
        let ins = inputs(&[("x", ramp(&X, 1.0))]);
        let (out, stats) = interp::run_with_stats(&g, &ws, &ins, &["a"]).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["a"]);
        // x, shift, w, b, conv, gamma, beta, norm, leaky: 9 of the 11 nodes.
        assert_eq!(stats.evaluated, 9);
        // Asking for everything needs the missing weight.
        match interp::run(&g, &ws, &ins, &[]) {
            Err(IrError::Tensor { tensor, msg }) => {
                assert_eq!(tensor, "head");
                assert!(msg.contains("not in the weight store"), "{msg}");
            }
            other => panic!("expected a missing-weight error, got {other:?}"),
        }
    }

    #[test]
    fn run_frees_intermediates_on_a_chain() {
        // x -> 60 × (leaky, add(prev, prev)): without freeing, 120 values would be alive.
        let mut g = Graph::new("chain");
        let ty = TensorType::f32([1, 1, 2, 2, 2]);
        let mut v = g.input("x", ty.clone());
        for _ in 0..60 {
            let l = g.add(Op::LeakyRelu { slope: 0.5 }, &[v], None).unwrap();
            v = g.add(Op::Add, &[l, l], None).unwrap();
        }
        g.set_output("y", v);
        let x = t(&[1, 1, 2, 2, 2], &[1., -1., 2., -2., 0., 3., -3., 0.5]);
        let (out, stats) =
            interp::run_with_stats(&g, &Weights::new(), &inputs(&[("x", x)]), &[]).unwrap();
        // One step maps v >= 0 to 2v and v < 0 to 2 * 0.5 v = v: after 60 steps the
        // non-negative values are multiplied by 2^60 (exact in f32), the negative ones unchanged.
        let p = 2f32.powi(60);
        let want = [p, -1., 2. * p, -2., 0., 3. * p, -3., 0.5 * p];
        assert_eq!(out["y"].as_f32().unwrap(), &want);
        assert_eq!(
            stats,
            RunStats {
                evaluated: 121,
                peak_live: 2,
                peak_live_bytes: 2 * ty.size_bytes(),
            }
        );
    }

    #[test]
    fn run_keeps_values_used_later_and_outputs_used_as_operands() {
        // x -> l = leaky(x); m = add(l, x); out "l" and "m" (l is an output and an operand).
        let mut g = Graph::new("diamond");
        let x = g.input("x", TensorType::f32([1, 2]));
        let l = g.add(Op::LeakyRelu { slope: 0.5 }, &[x], None).unwrap();
        let m = g.add(Op::Add, &[l, x], None).unwrap();
        let n = g.add(Op::Add, &[m, l], None).unwrap();
        g.set_output("l", l);
        g.set_output("n", n);
        g.set_output("also_n", n);
        g.set_output("x_itself", x);
        let out = interp::run(
            &g,
            &Weights::new(),
            &inputs(&[("x", t(&[1, 2], &[-2., 4.]))]),
            &[],
        )
        .unwrap();
        // l = [-1, 4]; m = l + x = [-3, 8]; n = m + l = [-4, 12]
        assert_eq!(out["l"].as_f32().unwrap(), &[-1., 4.]);
        assert_eq!(out["n"].as_f32().unwrap(), &[-4., 12.]);
        assert_eq!(out["also_n"].as_f32().unwrap(), &[-4., 12.]);
        assert_eq!(out["x_itself"].as_f32().unwrap(), &[-2., 4.]);
    }

    #[test]
    fn run_rejects_bad_inputs() {
        let (g, ws) = two_headed();
        // wrong shape
        let r = interp::run(&g, &ws, &inputs(&[("x", ramp(&[1, 2, 3, 4, 5], 1.0))]), &[]);
        interp_err(
            r,
            "input `x`",
            &["expected f32[1,2,3,4,4]", "got f32[1,2,3,4,5]"],
        );
        // wrong dtype
        let xi = Tensor::from_i32(X.to_vec(), vec![0; 96]).unwrap();
        let r = interp::run(&g, &ws, &inputs(&[("x", xi)]), &[]);
        interp_err(
            r,
            "input `x`",
            &["expected f32[1,2,3,4,4]", "got i32[1,2,3,4,4]"],
        );
        // missing
        let r = interp::run(&g, &ws, &BTreeMap::new(), &[]);
        interp_err(r, "input `x`", &["missing", "f32[1,2,3,4,4]"]);
        // extra
        let r = interp::run(
            &g,
            &ws,
            &inputs(&[("x", ramp(&X, 1.0)), ("y", ramp(&[1], 1.0))]),
            &[],
        );
        interp_err(r, "input `y`", &["not an input", "`x`"]);
    }

    #[test]
    fn run_rejects_unknown_outputs() {
        let (g, ws) = two_headed();
        let r = interp::run(&g, &ws, &inputs(&[("x", ramp(&X, 1.0))]), &["a", "logits"]);
        interp_err(r, "output `logits`", &["no such output", "`a`", "`b`"]);
    }

    #[test]
    fn run_rejects_weights_of_the_wrong_type() {
        let (g, mut ws) = two_headed();
        ws.insert("gamma", t(&[4], &[1., 1., 1., 1.]));
        match interp::run(&g, &ws, &inputs(&[("x", ramp(&X, 1.0))]), &["a"]) {
            Err(IrError::Tensor { tensor, msg }) => {
                assert_eq!(tensor, "gamma");
                assert!(msg.contains("f32[3]") && msg.contains("f32[4]"), "{msg}");
            }
            other => panic!("expected a weight type error, got {other:?}"),
        }
    }

    #[test]
    fn run_rejects_a_declared_type_the_op_does_not_produce() {
        let mut g = Graph::new("lying");
        let x = g.input("x", TensorType::f32([1, 2]));
        let y = g.add_typed(
            Op::LeakyRelu { slope: 0.1 },
            &[x],
            TensorType::f32([2, 1]),
            Some("liar".into()),
        );
        g.set_output("y", y);
        let r = interp::run(
            &g,
            &Weights::new(),
            &inputs(&[("x", t(&[1, 2], &[1., 2.]))]),
            &[],
        );
        interp_err(r, "liar", &["computed f32[1,2]", "declares f32[2,1]"]);
    }

    #[test]
    fn run_reports_bad_operands_at_the_node() {
        // A malformed node (add with one operand, as the parser could produce) is an error
        // naming the node, not a panic.
        let mut g = Graph::new("malformed");
        let x = g.input("x", TensorType::f32([1, 2]));
        let y: NodeId = g.add_typed(
            Op::Add,
            &[x],
            TensorType::f32([1, 2]),
            Some("half_add".into()),
        );
        g.set_output("y", y);
        let r = interp::run(
            &g,
            &Weights::new(),
            &inputs(&[("x", t(&[1, 2], &[1., 2.]))]),
            &[],
        );
        interp_err(r, "half_add", &["operand"]);
    }
}
