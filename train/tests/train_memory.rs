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

use std::collections::BTreeMap;

use e2enc_codegen::target::Target;
use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, ModelConfig};
use e2enc_ir::init::init_weights;
use e2enc_ir::init::noise;
use e2enc_ir::{Tensor, Weights};
use e2enc_train::exec::{Backend, Executor, LiveMasks, Memory, StepResult};
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
    let mut exec = Executor::with_memory(&tg, 2, backend, Some(&maskable), memory).unwrap();
    assert_eq!(exec.memory(), memory);
    let step = |exec: &mut Executor| {
        exec.step(&weights, &live, &inputs, |outs| {
            // L = Σ_out <out, r_out> with fixed random r.
            let mut loss = 0.0;
            let mut grads = BTreeMap::new();
            for (k, (name, t)) in outs.iter().enumerate() {
                let r = noise(t.numel(), 700 + k as u64);
                let v = t.as_f32().unwrap();
                loss += v
                    .iter()
                    .zip(&r)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>();
                grads.insert(
                    name.clone(),
                    Tensor::from_f32(t.shape().to_vec(), r).unwrap(),
                );
            }
            Ok((loss, grads))
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
