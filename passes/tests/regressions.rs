//! Known optimizer problems, each as a minimal graph. A test that still fails is `#[ignore]`d
//! with the reason; run them with `cargo test -p e2enc-passes --test regressions -- --ignored`.

mod common;

use e2enc_ir::stats::graph_stats;
use e2enc_ir::text::{parse, print};
use e2enc_ir::{Graph, Weights};
use e2enc_passes::{optimize, OptimizeOptions, Optimized};

fn run(src: &str, zero: &[(&str, (usize, usize))]) -> (Graph, Weights, Optimized) {
    let g = parse(src).unwrap();
    let mut w = common::seeded_weights(&g, 3).unwrap();
    for &(name, d1) in zero {
        common::zero_kernels(&mut w, name, None, Some(&[d1])).unwrap();
    }
    let opts = OptimizeOptions {
        keep_outputs: None,
        ..OptimizeOptions::default()
    };
    let opt = optimize(&g, &w, &opts).unwrap();
    let inputs = common::seeded_inputs(&g, 4);
    common::same_outputs(&g, &w, &opt.graph, &opt.weights, &inputs).unwrap();
    (g, w, opt)
}

/// Conv `a` feeds a conv directly and, through a max pool, a conv that reads only 3 of its 5
/// channels (a DSFF node whose down edge is partly dead). dead-inputs narrows the pool's
/// channels, narrow-maxpool and narrow-conv push the select into `a`, and extraction, which
/// picks each class's cheapest node without knowing that the full `a` is needed anyway, keeps
/// the narrowed copy: `a` is computed twice (5 channels, then 3 of them again) and the optimized
/// graph executes more MACs than the original. In a random small E2ENet (3 pools of (2,2,2),
/// base width 5, density 0.15) this raised the MACs from 723 K to 847 K. The same greedy choice
/// recomputes a conv when both its raw value and its normalized value are graph outputs.
#[test]

fn narrowing_a_shared_conv_does_not_recompute_it() {
    let src = r#"graph "recompute" {
  %0 = input "x" : f32[1,2,8,8,8]
  %1 = weight "a.weight" : f32[5,2,1,3,3]
  %2 = weight "fwd.weight" : f32[2,5,1,3,3]
  %3 = weight "f.weight" : f32[3,5,1,3,3]
  %4 = conv3d{kernel=[1,3,3], stride=[1,1,1], padding=[0,1,1]}(%0, %1) : f32[1,5,8,8,8] @"a"
  %5 = conv3d{kernel=[1,3,3], stride=[1,1,1], padding=[0,1,1]}(%4, %2) : f32[1,2,8,8,8] @"fwd"
  %6 = max_pool3d{kernel=[2,2,2], stride=[2,2,2]}(%4) : f32[1,5,4,4,4] @"down"
  %7 = conv3d{kernel=[1,3,3], stride=[1,1,1], padding=[0,1,1]}(%6, %3) : f32[1,3,4,4,4] @"f"
  output "y1" = %5
  output "y2" = %7
}"#;
    let (g, w, opt) = run(src, &[("f.weight", (0, 2))]);
    let reads_a = opt
        .graph
        .weights()
        .iter()
        .filter(|(n, _)| n.starts_with("a.weight"))
        .count();
    assert_eq!(
        reads_a,
        1,
        "conv `a` is computed twice:\n{}",
        print(&opt.graph)
    );
    let (before, after) = (
        graph_stats(&g, Some(&w)),
        graph_stats(&opt.graph, Some(&opt.weights)),
    );
    assert!(after.sparse_macs <= before.sparse_macs);
}
