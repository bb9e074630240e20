//! Throughput of the generated training convolution kernels on E2ENet's hot shapes (`cargo bench
//! -p e2enc-train --bench train_kernels [-- TARGET]`, default `native`): GFLOP/s (2 flops per
//! executed multiply-add) of the forward, backward-data and backward-weight kernels at 1 and 2
//! threads, dense and at density 0.2. Each shape is a one-conv training graph run by the training
//! executor, so the kernels timed are the ones `e2enc train` runs; the time of each op is the best
//! of several steps. A plain `Instant` loop; nothing here asserts a time.

use std::collections::{BTreeMap, HashSet};

use e2enc_codegen::target::Target;
use e2enc_ir::autodiff::training_graph;
use e2enc_ir::init::noise;
use e2enc_ir::{ConvAttrs, Graph, Op, Tensor, TensorType, Weights};
use e2enc_train::exec::{Backend, Executor, LiveMasks};

fn f32t(s: &[usize]) -> TensorType {
    TensorType::f32(s.to_vec())
}

fn case(
    target: Target,
    name: &str,
    xs: [usize; 5],
    co: usize,
    a: ConvAttrs,
    transposed: bool,
    density: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let ws = if transposed {
        [xs[1], co, a.kernel[0], a.kernel[1], a.kernel[2]]
    } else {
        [co, xs[1], a.kernel[0], a.kernel[1], a.kernel[2]]
    };
    // `x` is a weight so that the data gradient is formed too.
    let mut g = Graph::new("bench");
    let x = g.weight("x", f32t(&xs));
    let w = g.weight("w", f32t(&ws));
    let op = if transposed {
        Op::ConvTranspose3d(a.clone())
    } else {
        Op::Conv3d(a.clone())
    };
    let y = g.add(op, &[x, w], None)?;
    g.set_output("out", y);
    let ys = g.node(y).ty.shape.clone();
    let tg = training_graph(&g, &["out"])?;
    let pairs = ws[0] * ws[1];
    let live: Vec<bool> = (0..pairs)
        .map(|i| ((i * 7919) % 1000) as f64 / 1000.0 < density)
        .collect();
    let nlive = if density < 1.0 {
        live.iter().filter(|&&b| b).count()
    } else {
        pairs
    };
    let mut masks = LiveMasks::new();
    let mut maskable = HashSet::new();
    if density < 1.0 {
        masks.insert("w".to_string(), live);
        maskable.insert("w".to_string());
    }
    let mut weights = Weights::new();
    weights.insert(
        "x",
        Tensor::from_f32(xs.to_vec(), noise(xs.iter().product(), 1))?,
    );
    weights.insert(
        "w",
        Tensor::from_f32(ws.to_vec(), noise(ws.iter().product(), 2))?,
    );
    let dy = Tensor::from_f32(ys.clone(), noise(ys.iter().product(), 3))?;
    let narrow: &[usize] = if transposed { &xs } else { &ys };
    let macs =
        narrow[0] * narrow[2] * narrow[3] * narrow[4] * nlive * a.kernel.iter().product::<usize>();
    let gf = |t: f64| 2.0 * macs as f64 / t / 1e9;
    for threads in [1, 2] {
        let mut ex = Executor::with_maskable(&tg, threads, Backend::Generated(target), &maskable)?;
        let mut best: BTreeMap<&'static str, f64> = BTreeMap::new();
        for rep in 0..6 {
            ex.profile.clear();
            ex.step(&weights, &masks, &BTreeMap::new(), |_| {
                Ok((0.0, [("out".to_string(), dy.clone())].into()))
            })?;
            if rep > 0 {
                for (op, t) in &ex.profile {
                    let b = best.entry(op).or_insert(f64::INFINITY);
                    *b = b.min(*t);
                }
            }
        }
        let row: Vec<String> = best
            .iter()
            .filter(|(op, _)| op.contains("conv"))
            .map(|(op, t)| format!("{op} {:6.2} ms {:5.1} GF/s", t * 1e3, gf(*t)))
            .collect();
        println!(
            "{name:<36} density {density:.1} threads {threads}: {}",
            row.join(" | ")
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; the first other argument names the target.
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let target: Target = arg.as_deref().unwrap_or("native").parse()?;
    println!("target {target}");
    let c133 = |s: usize| ConvAttrs {
        kernel: [1, 3, 3],
        stride: [s, s, s],
        padding: [0, 1, 1],
    };
    let t2 = ConvAttrs {
        kernel: [2, 2, 2],
        stride: [2, 2, 2],
        padding: [0, 0, 0],
    };
    let h1 = ConvAttrs {
        kernel: [1, 1, 1],
        stride: [1, 1, 1],
        padding: [0, 0, 0],
    };
    let cases = [
        (
            "conv 1x3x3 16->16 32^3",
            [1, 16, 32, 32, 32],
            16,
            c133(1),
            false,
            1.0,
        ),
        (
            "conv 1x3x3 16->16 32^3",
            [1, 16, 32, 32, 32],
            16,
            c133(1),
            false,
            0.2,
        ),
        (
            "conv 1x3x3 32->32 16^3 batch 2",
            [2, 32, 16, 16, 16],
            32,
            c133(1),
            false,
            1.0,
        ),
        (
            "conv 1x3x3 s2 16->32 32^3",
            [1, 16, 32, 32, 32],
            32,
            c133(2),
            false,
            1.0,
        ),
        (
            "conv 1x3x3 4->16 64^3",
            [1, 4, 64, 64, 64],
            16,
            c133(1),
            false,
            1.0,
        ),
        (
            "conv_transpose 2x2x2 s2 32->16 16^3",
            [1, 32, 16, 16, 16],
            16,
            t2,
            true,
            1.0,
        ),
        (
            "head 1x1x1 16->4 32^3",
            [1, 16, 32, 32, 32],
            4,
            h1,
            false,
            1.0,
        ),
    ];
    for (name, xs, co, a, transposed, density) in cases {
        case(target, name, xs, co, a, transposed, density)?;
    }
    Ok(())
}
