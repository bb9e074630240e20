//! What the CUDA backend's reduced-precision tensor-core convs cost in accuracy by their math
//! alone: the reference interpreter on a model.json with the operands of every conv that runs on
//! tensor cores (`--precision tf32|bf16`: stride-1 `1x1`/`3x3` same-padding convs in H and W,
//! not transposed; `codegen/src/cuda/mma.rs`) rounded as the kernels round them — the input
//! activations and the weights, TF32 to nearest with ties away, bf16 to nearest even — and
//! everything else (biases, accumulation, norms, the other convs) in f32/f64. The result is
//! compared with the same interpreter in f32 (relative L2 of the logits, argmax agreement), and
//! with the logits of bundles given as safetensors files (e.g. `e2enc run BUNDLE --emulate
//! --output y.safetensors`), so a bundle far from the simulation points at its kernels, not at
//! the number format.
//!
//! ```sh
//! cargo run --example mma_rounding [model.json] [y-bf16.safetensors ...]
//! ```
//!
//! Without a model it runs the golden network on its stored input (`tests/data/golden`). When
//! the logits do not depend on the input (the golden network's), it also runs the network with
//! the conv where the input stops mattering made dense; `MMA_ROUNDING_SAVE_WEIGHTS=FILE` saves
//! those weights (to compile and emulate that network's bundles too).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use e2enc::session::Session;
use e2enc_ir::e2enet::BuildOptions;
use e2enc_ir::graph::{Graph, NodeId};
use e2enc_ir::interp::ops;
use e2enc_ir::op::{ConvAttrs, Op};
use e2enc_ir::{Tensor, Weights};

type BoxErr = Box<dyn std::error::Error>;
/// A rounding of the conv inputs or of the weights.
type Round<'a> = &'a dyn Fn(f32) -> f32;

/// To bfloat16 (8 significant bits), to nearest with ties to even (`cvt.rn.bf16x2.f32`).
fn round_bf16(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let b = x.to_bits();
    let keep = b & 0xffff_0000;
    let rest = b & 0xffff;
    let up = rest > 0x8000 || (rest == 0x8000 && keep & 0x1_0000 != 0);
    f32::from_bits(if up { keep + 0x1_0000 } else { keep })
}

/// A pseudo-random number in [0, 1] from `v` and `seed`.
fn hash(v: u32, seed: u32) -> f64 {
    let mut h = v ^ seed.wrapping_mul(0x9e37_79b9);
    h = (h ^ (h >> 16)).wrapping_mul(0x85eb_ca6b);
    h = (h ^ (h >> 13)).wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h as f64 / u32::MAX as f64
}

/// To `bits` significant bits, to nearest with ties to even.
fn round_bits(x: f32, bits: u32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let drop = 24 - bits;
    let b = x.to_bits();
    let keep = b >> drop << drop;
    let (rest, half) = (b - keep, 1u32 << (drop - 1));
    let up = rest > half || (rest == half && (keep >> drop) & 1 != 0);
    f32::from_bits(if up { keep + (1 << drop) } else { keep })
}

fn round9(x: f32) -> f32 {
    round_bits(x, 9)
}

fn round10(x: f32) -> f32 {
    round_bits(x, 10)
}

/// To TF32 (11 significant bits), to nearest with ties away from zero (`cvt.rna.tf32.f32`).
fn round_tf32(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let b = x.to_bits();
    let keep = b & 0xffff_e000;
    f32::from_bits(if b & 0x1fff >= 0x1000 {
        keep + 0x2000
    } else {
        keep
    })
}

/// Whether the CUDA backend runs a conv of these attributes on tensor cores (`mma::takes`).
fn on_tensor_cores(c: &ConvAttrs, transposed: bool) -> bool {
    let [_, kh, kw] = c.kernel;
    let [_, sh, sw] = c.stride;
    let [_, ph, pw] = c.padding;
    !transposed
        && kh == kw
        && (kh == 1 || kh == 3)
        && ph == pw
        && ph == (kh - 1) / 2
        && sh == 1
        && sw == 1
}

fn rounded(t: &Tensor, round: &dyn Fn(f32) -> f32) -> Result<Tensor, BoxErr> {
    let v = t.as_f32().ok_or("not f32")?;
    Ok(Tensor::from_f32(
        t.shape().to_vec(),
        v.iter().map(|&x| round(x)).collect(),
    )?)
}

/// Runs `g` on `x` with the operands of the tensor-core convs rounded by `round` (none: f32).
/// (First the input activations', then the weights'.) Returns the logits and how many convs were rounded.
fn run(
    g: &Graph,
    w: &Weights,
    x: &Tensor,
    round: Option<(Round, Round)>,
) -> Result<(Tensor, usize), BoxErr> {
    let mut vals: HashMap<_, Cow<'_, Tensor>> = HashMap::new();
    let mut count = 0;
    for id in g.topo_order()? {
        let node = g.node(id);
        let v = match &node.op {
            Op::Input { .. } => Cow::Borrowed(x),
            Op::Weight { name } => Cow::Borrowed(&**w.get(name).ok_or("missing weight")?),
            op => {
                let args: Vec<&Tensor> = g.operands(id).iter().map(|o| vals[o].as_ref()).collect();
                let conv = match op {
                    Op::Conv3d(c) => Some((c, false)),
                    Op::FusedConv3d(f) => Some((&f.conv, f.transposed)),
                    _ => None,
                };
                match (round, conv) {
                    (Some((rx, rw)), Some((c, tr))) if on_tensor_cores(c, tr) => {
                        count += 1;
                        let (xr, wr) = (rounded(args[0], rx)?, rounded(args[1], rw)?);
                        let mut a = args.clone();
                        a[0] = &xr;
                        a[1] = &wr;
                        Cow::Owned(ops::eval(op, &a)?)
                    }
                    _ => Cow::Owned(ops::eval(op, &args)?),
                }
            }
        };
        vals.insert(id, v);
    }
    let (_, out) = g
        .outputs()
        .iter()
        .find(|(n, _)| n == "logits")
        .ok_or("no output `logits`")?;
    Ok((vals[out].as_ref().clone(), count))
}

/// Relative L2 error of `c` against `r` and the share of voxels with the same argmax over the
/// classes (`[N, C, ...]`).
fn compare(c: &Tensor, r: &Tensor) -> Result<(f64, f64), BoxErr> {
    let (cv, rv) = (c.as_f32().ok_or("f32")?, r.as_f32().ok_or("f32")?);
    if c.shape() != r.shape() {
        return Err(format!("shapes {:?} and {:?}", c.shape(), r.shape()).into());
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&a, &b) in cv.iter().zip(rv) {
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    let (n, k) = (c.shape()[0], c.shape()[1]);
    let vox: usize = c.shape()[2..].iter().product();
    let argmax = |v: &[f32], i: usize, s: usize| {
        (0..k)
            .max_by(|&a, &b| v[(i * k + a) * vox + s].total_cmp(&v[(i * k + b) * vox + s]))
            .unwrap_or(0)
    };
    let mut same = 0usize;
    for i in 0..n {
        for s in 0..vox {
            same += usize::from(argmax(cv, i, s) == argmax(rv, i, s));
        }
    }
    Ok(((num / den).sqrt(), same as f64 / (n * vox) as f64))
}

/// The nodes of `g` whose operands differ between inputs `x1` and `x2` but whose value does not:
/// where the input stops mattering.
fn cuts(g: &Graph, w: &Weights, x1: &Tensor, x2: &Tensor) -> Result<Vec<(NodeId, String)>, BoxErr> {
    let mut v: HashMap<_, (Cow<'_, Tensor>, Cow<'_, Tensor>)> = HashMap::new();
    let mut out = Vec::new();
    for id in g.topo_order()? {
        let pair = match &g.node(id).op {
            Op::Input { .. } => (Cow::Borrowed(x1), Cow::Borrowed(x2)),
            Op::Weight { name } => {
                let t = &**w.get(name).ok_or("missing weight")?;
                (Cow::Borrowed(t), Cow::Borrowed(t))
            }
            op => {
                let a1: Vec<&Tensor> = g.operands(id).iter().map(|o| v[o].0.as_ref()).collect();
                let a2: Vec<&Tensor> = g.operands(id).iter().map(|o| v[o].1.as_ref()).collect();
                let differ = a1.iter().zip(&a2).any(|(p, q)| p.as_f32() != q.as_f32());
                let (r1, r2) = (ops::eval(op, &a1)?, ops::eval(op, &a2)?);
                if differ && r1.as_f32() == r2.as_f32() {
                    out.push((id, g.describe(id)));
                }
                (Cow::Owned(r1), Cow::Owned(r2))
            }
        };
        v.insert(id, pair);
    }
    Ok(out)
}

/// Prints the simulated roundings of `s`'s network on `x` against its f32 run, and the logits
/// in `files` against all three.
fn study(s: &Session, x: &Tensor, files: &[String]) -> Result<(), BoxErr> {
    let raw = &s.graph;
    let raw_w = &s.weights;
    let mut o = Session {
        model: s.model.clone(),
        graph: s.graph.clone(),
        weights: s.weights.clone(),
    };
    o.optimize(&["logits"])?;
    let (reference, _) = run(&o.graph, &o.weights, x, None)?;
    let mut results = vec![("f32 (optimized graph)".to_string(), reference.clone())];
    let mut sims = Vec::new();
    for (name, r) in [("tf32", round_tf32 as fn(f32) -> f32), ("bf16", round_bf16)] {
        let (y, n) = run(&o.graph, &o.weights, x, Some((&r, &r)))?;
        sims.push(y.clone());
        results.push((format!("simulated {name} ({n} convs rounded)"), y));
        let (y, n) = run(raw, raw_w, x, Some((&r, &r)))?;
        results.push((format!("simulated {name}, model graph ({n} convs)"), y));
    }
    let id = |v: f32| v;
    let (y, _) = run(&o.graph, &o.weights, x, Some((&round_bf16, &id)))?;
    results.push(("simulated bf16 activations only".into(), y));
    let (y, _) = run(&o.graph, &o.weights, x, Some((&id, &round_bf16)))?;
    results.push(("simulated bf16 weights only".into(), y));
    // 9 and 10 significant bits (to nearest even): how the error grows between bf16 (8) and
    // TF32 (11).
    for (bits, r) in [(9, round9 as fn(f32) -> f32), (10, round10)] {
        let (y, _) = run(&o.graph, &o.weights, x, Some((&r, &r)))?;
        results.push((format!("simulated {bits} significant bits"), y));
    }
    // Noise of bf16's size instead of its rounding: uniform within half a bf16 ulp, pseudo-random
    // per value and seed: one rounding pattern among others of the same size.
    for seed in 1..=8u32 {
        let noise = move |v: f32| {
            if v == 0.0 || !v.is_finite() {
                return v;
            }
            let u = hash(v.to_bits(), seed) * 2.0 - 1.0;
            let half_ulp = 2f64.powi(v.abs().log2().floor() as i32 - 8);
            (v as f64 + u * half_ulp) as f32
        };
        let (y, _) = run(&o.graph, &o.weights, x, Some((&noise, &noise)))?;
        results.push((format!("bf16-sized noise, seed {seed}"), y));
    }
    for f in files {
        let w = Weights::load(std::path::Path::new(f))?;
        let y = w.get("logits").ok_or("no `logits` in the file")?;
        results.push((f.clone(), (**y).clone()));
    }
    println!(
        "{:48} {:>19} | {:>19} | {:>19}",
        "(rel. L2, argmax agreement) against:", "f32", "simulated tf32", "simulated bf16"
    );
    for (name, y) in &results {
        let mut line = format!("{name:48}");
        for r in [&reference, &sims[0], &sims[1]] {
            let (e, a) = compare(y, r)?;
            line.push_str(&format!(" {e:9.3e} {:8.3}% |", 100.0 * a));
        }
        println!("{}", line.trim_end_matches(" |"));
    }
    Ok(())
}

fn main() -> Result<(), BoxErr> {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, files) = match args.first() {
        Some(m) if m.ends_with(".json") => (PathBuf::from(m), &args[1..]),
        _ => (golden.join("model.json"), &args[..]),
    };
    let mut s = Session::load(&model, &BuildOptions::default())?;
    let io = Weights::load(&golden.join("io.safetensors"))?;
    let x = (**io.get("input").ok_or("no input")?).clone();
    println!("{}", model.display());
    study(&s, &x, files)?;
    // Does the input matter at all? (The golden network's first conv has all its weights zero,
    // masked off: its logits are a function of the weights alone.)
    let other = rounded(&x, &|v| (v * 7.0).sin() * 3.0)?;
    let cut = cuts(&s.graph, &s.weights, &x, &other)?;
    if !cut.is_empty() {
        println!(
            "the logits do not depend on the input: it stops mattering at {}",
            cut.iter()
                .map(|c| c.1.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The same network with that conv's weights dense (He-initialized, seeded): one whose
        // logits depend on the input.
        for (node, _) in &cut {
            if !matches!(s.graph.node(*node).op, Op::Conv3d(_)) {
                return Err("the input stops mattering at a node that is not a conv".into());
            }
            let wid = s.graph.operands(*node)[1];
            let Op::Weight { name } = &s.graph.node(wid).op else {
                return Err("a cut at a conv whose weight is computed".into());
            };
            let t = &**s.weights.get(name).ok_or("missing weight")?;
            let fan_in: usize = t.shape()[1..].iter().product();
            let std = (2.0 / fan_in as f64).sqrt();
            let v: Vec<f32> = (0..t.shape().iter().product::<usize>())
                .map(|i| {
                    // Irwin-Hall approximation of a normal: sum of 12 uniforms minus 6.
                    let z: f64 = (0..12).map(|k| hash(i as u32 * 12 + k, 7)).sum::<f64>() - 6.0;
                    (z * std) as f32
                })
                .collect();
            let name = name.clone();
            s.weights
                .insert(name.clone(), Tensor::from_f32(t.shape().to_vec(), v)?);
            println!("\nwith `{name}` dense (He-initialized):");
        }
        let cut = cuts(&s.graph, &s.weights, &x, &other)?;
        if let Some(p) = std::env::var_os("MMA_ROUNDING_SAVE_WEIGHTS") {
            s.weights.save(std::path::Path::new(&p))?;
        }
        let cut: Vec<String> = cut.into_iter().map(|c| c.1).collect();
        println!("the input stops mattering at: {cut:?}");
        study(&s, &x, &[])?;
    }
    Ok(())
}
