//! The training memory policies (`e2enc_train::memplan`) on whole training steps of small random
//! E2ENets with sparse DSFF masks: every policy gives the bits of keeping every forward value
//! (loss, forward outputs, every weight gradient), the executor holds exactly the bytes its plan
//! says, and the policies that drop or recompute values plan less than the ones that keep them.
//!
//! How these tests fail when a policy is wrong:
//! - a value dropped before its last reader (a `last_uses` that misses a reader, a recomputed
//!   copy scheduled after the op that reads it) leaves that reader without its operand: the step
//!   returns an error ("an operand was not computed") and `unwrap` panics;
//! - a copy that reads the wrong operands, or a reused buffer that still holds another value's
//!   data where a kernel does not write its whole output, changes bits of some gradient, which
//!   `same_bits` compares against `Memory::KeepForward`;
//! - a plan that does not follow the executor (a value freed in one and not the other) shows
//!   as a planned peak different from the executor's measured one;
//! - a recompute policy that silently recomputes nothing shows as no `.recompute` copies and no
//!   saving in the plan.
//!
//! `Saved::Bf16` (values kept for the backward pass rounded to bfloat16 and packed) changes the
//! step by design; its test checks that every recompute window gives the same bits in bf16 too
//! (a copy unpacked from the wrong value or from a reused buffer does not), that the loss moves
//! by about bfloat16's rounding (and moves at all: a pack that keeps f32 does not), that the
//! generated kernels agree with the interpreter, and that the plan halves the kept bytes and
//! matches the executor.

use std::collections::BTreeMap;

mod probe;

use e2enc_codegen::target::Target;
use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, ModelConfig};
use e2enc_ir::init::init_weights;
use e2enc_ir::init::noise;
use e2enc_ir::{Tensor, Weights};
use e2enc_train::exec::{Backend, Executor, LiveMasks, Memory, Saved, StepResult};
use e2enc_train::memplan::DEFAULT_WINDOW;

fn config(levels: usize, width: usize, groups: usize, iso: bool) -> ModelConfig {
    let mut cfg = ModelConfig::small(levels, width, groups, iso);
    let f = 1 << (levels - 1);
    cfg.patch_size = [if iso { 2 * f } else { 5 }, f * 3, f * 2];
    cfg
}

/// Every policy, from most to least memory kept.
fn policies() -> Vec<Memory> {
    vec![
        Memory::KeepForward,
        Memory::FreeAfterLastUse,
        Memory::Recompute { window: 0 },
        Memory::Recompute { window: 3 },
        Memory::Recompute {
            window: DEFAULT_WINDOW,
        },
        Memory::Recompute { window: usize::MAX },
    ]
}

struct Run {
    first: StepResult,
    planned_peak: usize,
    measured_peak: usize,
    kept_forward: usize,
    copies: usize,
}

/// Two steps of `cfg` (batch 2) on `backend` under `memory`; the second must repeat the first's
/// bits.
fn run(cfg: &ModelConfig, backend: Backend, memory: Memory) -> Run {
    run_saved(cfg, backend, memory, Saved::F32)
}

/// `cfg` at batch 2 and its training graph with every head.
fn net_and_graph(cfg: &ModelConfig) -> (e2enc_ir::e2enet::E2ENet, e2enc_ir::autodiff::TrainGraph) {
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
    (net, tg)
}

fn run_saved(cfg: &ModelConfig, backend: Backend, memory: Memory, saved: Saved) -> Run {
    let (net, tg) = net_and_graph(cfg);
    let weights = init_weights(&net.params, 13);
    let mut live = LiveMasks::new();
    for (k, p) in net.params.iter().filter(|p| p.dsff).enumerate() {
        let m: Vec<bool> = noise(p.shape[0] * p.shape[1], 200 + k as u64)
            .iter()
            .map(|&r| r > -0.3)
            .collect();
        live.insert(p.name.clone(), m);
    }
    let mut inputs = BTreeMap::new();
    for (name, id) in tg.graph.inputs() {
        if name.starts_with("grad.") {
            continue;
        }
        let shape = tg.graph.node(id).ty.shape.clone();
        let n = shape.iter().product();
        inputs.insert(name, Tensor::from_f32(shape, noise(n, 7)).unwrap());
    }
    let maskable = live.keys().cloned().collect();
    let mut exec = Executor::with_saved(&tg, 2, backend, Some(&maskable), memory, saved).unwrap();
    assert_eq!((exec.memory(), exec.saved()), (memory, saved));
    let step = |exec: &mut Executor| {
        // L = Σ_out <out, r_out> with fixed random r.
        exec.step(&weights, &live, &inputs, |outs| {
            probe::probe_loss(outs, 700)
        })
        .unwrap_or_else(|e| panic!("{memory:?}: {e}"))
    };
    let first = step(&mut exec);
    let again = step(&mut exec);
    assert_eq!(again.loss.to_bits(), first.loss.to_bits(), "{memory:?}");
    assert!(same_bits(&again.grads, &first.grads), "{memory:?}");
    let plan = exec.memory_plan();
    // The pool of reused buffers stays within the planned peak.
    assert!(
        exec.spare_bytes() <= plan.peak_bytes,
        "{memory:?}: pool {} > planned peak {}",
        exec.spare_bytes(),
        plan.peak_bytes
    );
    let (g, order) = exec.graph();
    assert_eq!(order.len(), g.len());
    let copies = order
        .iter()
        .filter(|&&n| {
            g.node(n)
                .label
                .as_deref()
                .is_some_and(|l| l.ends_with(".recompute"))
        })
        .count();
    Run {
        planned_peak: plan.peak_bytes,
        kept_forward: plan.kept_forward_bytes,
        measured_peak: exec.peak_live_bytes(),
        copies,
        first,
    }
}

fn same_bits(a: &Weights, b: &Weights) -> bool {
    a.len() == b.len()
        && a.iter().all(|(n, t)| {
            let Some(u) = b.get(n) else { return false };
            let (x, y) = (t.as_f32().unwrap(), u.as_f32().unwrap());
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

fn same_outputs(a: &StepResult, b: &StepResult) -> bool {
    a.outputs.len() == b.outputs.len()
        && a.outputs.iter().all(|(n, t)| {
            let (x, y) = (t.as_f32().unwrap(), b.outputs[n].as_f32().unwrap());
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// Checks every policy against `Memory::KeepForward` on `cfg` and `backend`.
fn check_policies(cfg: &ModelConfig, backend: Backend) {
    let runs: Vec<(Memory, Run)> = policies()
        .into_iter()
        .map(|m| (m, run(cfg, backend, m)))
        .collect();
    let keep = &runs[0].1;
    for (memory, r) in &runs {
        assert_eq!(
            r.first.loss.to_bits(),
            keep.first.loss.to_bits(),
            "{memory:?}: loss"
        );
        assert!(
            same_outputs(&r.first, &keep.first),
            "{memory:?}: forward outputs differ"
        );
        assert!(
            same_bits(&r.first.grads, &keep.first.grads),
            "{memory:?}: gradients differ from KeepForward's"
        );
        // The plan is what the executor does, value for value.
        assert_eq!(
            r.measured_peak, r.planned_peak,
            "{memory:?}: measured peak vs planned"
        );
        let recomputes = matches!(memory, Memory::Recompute { .. });
        assert_eq!(r.copies > 0, recomputes, "{memory:?}: {} copies", r.copies);
    }
    let peak = |m: Memory| runs.iter().find(|r| r.0 == m).unwrap().1.planned_peak;
    let kept = |m: Memory| runs.iter().find(|r| r.0 == m).unwrap().1.kept_forward;
    let free = Memory::FreeAfterLastUse;
    let default = Memory::default();
    assert!(peak(free) < peak(Memory::KeepForward), "{cfg:?}");
    assert!(peak(default) < peak(free), "{cfg:?}");
    assert!(kept(default) < kept(free), "{cfg:?}");
    // A smaller window makes more copies and holds them shorter.
    let copies = |w: usize| {
        runs.iter()
            .find(|r| r.0 == Memory::Recompute { window: w })
            .unwrap()
            .1
            .copies
    };
    assert!(copies(0) >= copies(DEFAULT_WINDOW));
    assert!(copies(DEFAULT_WINDOW) >= copies(usize::MAX));
}

#[test]
fn every_memory_policy_gives_the_same_bits_on_the_generated_kernels() {
    for (levels, width, groups, iso) in [(3, 4, 3, false), (4, 5, 5, true)] {
        let cfg = config(levels, width, groups, iso);
        check_policies(&cfg, Backend::Generated(Target::native()));
    }
}

#[test]
fn every_memory_policy_gives_the_same_bits_on_the_interpreter() {
    check_policies(&config(3, 4, 3, false), Backend::Reference);
}

#[test]
fn the_default_policy_recomputes() {
    assert_eq!(
        Memory::default(),
        Memory::Recompute {
            window: DEFAULT_WINDOW
        }
    );
}

/// The size of `a - b` relative to `b`, over all weight gradients together and over the
/// worst tensor (both as L2 norms; a tensor whose gradient is zero in exact arithmetic, like a
/// bias before an instance norm, holds only rounding noise and is left out of the second).
fn rel_l2(a: &Weights, b: &Weights) -> (f64, f64) {
    let (mut d_all, mut n_all, mut worst) = (0f64, 0f64, 0f64);
    let mut tensors = Vec::new();
    for (n, t) in a.iter() {
        let (x, y) = (t.as_f32().unwrap(), b.get(n).unwrap().as_f32().unwrap());
        let d: f64 = x
            .iter()
            .zip(y)
            .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
            .sum();
        let m: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum();
        d_all += d;
        n_all += m;
        tensors.push((d, m));
    }
    for (d, m) in tensors {
        if m > 1e-6 * n_all {
            worst = worst.max((d / m).sqrt());
        }
    }
    ((d_all / n_all).sqrt(), worst)
}

#[test]
fn bf16_saved_values_halve_the_kept_bytes_and_give_the_same_bits_under_every_window() {
    let cfg = config(3, 4, 3, false);
    for backend in [Backend::Generated(Target::native()), Backend::Reference] {
        let f32_run = run(&cfg, backend, Memory::default());
        let windows = [0, 3, DEFAULT_WINDOW, usize::MAX];
        let runs: Vec<Run> = windows
            .iter()
            .map(|&window| run_saved(&cfg, backend, Memory::Recompute { window }, Saved::Bf16))
            .collect();
        let b = &runs[2];
        // Every window packs, unpacks and recomputes differently, and gives the same bits:
        // a copy unpacked from the wrong value, or one read after its buffer was reused, does not.
        for (w, r) in windows.iter().zip(&runs) {
            assert_eq!(r.first.loss.to_bits(), b.first.loss.to_bits(), "window {w}");
            assert!(same_outputs(&r.first, &b.first), "window {w}");
            assert!(same_bits(&r.first.grads, &b.first.grads), "window {w}");
            assert_eq!(
                r.measured_peak, r.planned_peak,
                "window {w}: measured vs planned"
            );
        }
        // The kept values are rounded: the step moves, by about bfloat16's rounding.
        let dl = (b.first.loss - f32_run.first.loss).abs() / f32_run.first.loss.abs();
        let (all, worst) = rel_l2(&b.first.grads, &f32_run.first.grads);
        eprintln!(
            "{backend:?}: bf16 saved values move the loss by {dl:.2e}, the gradients by {all:.2e} \
             (relative L2; the worst tensor {worst:.2e})"
        );
        assert!(dl > 0.0 && all > 0.0, "{backend:?}: nothing was rounded");
        // The gradients of these tiny random nets move by more than the rounding (about 9%
        // relative L2): a leaky ReLU or max pooling decision that flips changes a voxel's
        // gradient outright, and planes of a few dozen voxels have few voxels to average it.
        // The gate catches a step that is broken, not a loss of accuracy.
        assert!(dl < 1e-2, "{backend:?}: loss moved by {dl}");
        assert!(
            all < 0.2,
            "{backend:?}: gradients moved by {all} (worst tensor {worst})"
        );
        assert!(b.planned_peak < f32_run.planned_peak, "{backend:?}");
        assert!(
            b.kept_forward * 10 <= f32_run.kept_forward * 6,
            "{backend:?}: kept {} vs {} in f32",
            b.kept_forward,
            f32_run.kept_forward
        );
        // Without recomputation more values are kept, and packed the same way.
        let free = run_saved(&cfg, backend, Memory::FreeAfterLastUse, Saved::Bf16);
        let f32_free = run(&cfg, backend, Memory::FreeAfterLastUse);
        assert_eq!(
            free.measured_peak, free.planned_peak,
            "{backend:?}: FreeAfterLastUse"
        );
        assert!(free.kept_forward * 10 <= f32_free.kept_forward * 6);
        let (all, _) = rel_l2(&free.first.grads, &f32_free.first.grads);
        assert!(
            all > 0.0 && all < 0.2,
            "{backend:?}: FreeAfterLastUse moved by {all}"
        );
    }
    // The generated kernels and the interpreter agree on the bf16 step as they do in f32.
    let c = run_saved(
        &cfg,
        Backend::Generated(Target::native()),
        Memory::default(),
        Saved::Bf16,
    );
    let r = run_saved(&cfg, Backend::Reference, Memory::default(), Saved::Bf16);
    let (all, worst) = rel_l2(&c.first.grads, &r.first.grads);
    eprintln!("generated vs interpreter, bf16 saved values: {all:.2e}, worst tensor {worst:.2e}");
    assert!(
        all < 1e-5 && worst < 1e-4,
        "generated vs interpreter, bf16 saved values: {all}, {worst}"
    );
}

#[test]
fn bf16_saved_values_need_a_policy_that_frees_forward_values() {
    let (_, tg) = net_and_graph(&config(3, 4, 3, false));
    let e = Executor::with_saved(
        &tg,
        1,
        Backend::Reference,
        None,
        Memory::KeepForward,
        Saved::Bf16,
    )
    .err()
    .expect("refused");
    assert!(e.to_string().contains("KeepForward"), "{e}");
}
