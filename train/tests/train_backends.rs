//! The generated training kernels (the native target and portable C) against the reference
//! interpreter on whole training steps of small random E2ENets with sparse DSFF masks: same loss,
//! outputs and every weight gradient (relative error below 1e-4), dead kernels skipped (their
//! weights are left non-zero here, so a kernel that read them would differ) with exactly zero
//! gradient, and bit-identical results for one and two threads.

use std::collections::BTreeMap;

mod probe;

use e2enc_codegen::target::Target;
use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, ModelConfig};
use e2enc_ir::init::init_weights;
use e2enc_ir::init::noise;
use e2enc_ir::tensor::relative_error;
use e2enc_ir::{Tensor, Weights};
use e2enc_train::exec::{Backend, ConvMath, Executor, LiveMasks, Memory, Saved, StepResult};

fn config(levels: usize, width: usize, groups: usize, iso: bool) -> ModelConfig {
    let mut cfg = ModelConfig::small(levels, width, groups, iso);
    let f = 1 << (levels - 1);
    cfg.patch_size = [if iso { 2 * f } else { 5 }, f * 3, f * 2];
    cfg
}

fn step(
    cfg: &ModelConfig,
    backend: Backend,
    threads: usize,
) -> (StepResult, LiveMasks, Vec<String>) {
    step_n(cfg, backend, threads, 3)
}

/// [`step`] with `repeats` more steps after the first, which must give the same bits.
fn step_n(
    cfg: &ModelConfig,
    backend: Backend,
    threads: usize,
    repeats: usize,
) -> (StepResult, LiveMasks, Vec<String>) {
    let Case {
        tg,
        weights,
        live,
        dsff,
        inputs,
        ..
    } = case(cfg);
    let maskable = live.keys().cloned().collect();
    let mut exec = Executor::with_maskable(&tg, threads, backend, &maskable).unwrap();
    assert_eq!(exec.backend(), backend);
    let run = |exec: &mut Executor| exec.step(&weights, &live, &inputs, probe_loss).unwrap();
    // Repeated steps give the same bits (reused buffers leak no old values), and the pool of
    // reused buffers stops growing after the first step (inputs and loss gradients are recycled
    // too, but only up to what the kernels use).
    let r = run(&mut exec);
    let pooled = exec.spare_bytes();
    for _ in 0..repeats {
        let again = run(&mut exec);
        assert_eq!(again.loss.to_bits(), r.loss.to_bits());
        assert!(same_bits(&again.grads, &r.grads));
    }
    assert_eq!(
        exec.spare_bytes(),
        pooled,
        "the buffer pool grows from step to step"
    );
    assert!(exec.profile.values().sum::<f64>() > 0.0);
    (r, live, dsff)
}

fn same_bits(a: &Weights, b: &Weights) -> bool {
    a.iter().all(|(n, t)| {
        let (x, y) = (t.as_f32().unwrap(), b.get(n).unwrap().as_f32().unwrap());
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
    })
}

/// `c` against the reference `r` of the same step: loss, outputs and every weight gradient
/// within 1e-4 (relative), and dead kernels with exactly zero gradient.
fn check_step(
    cfg: &ModelConfig,
    c: &StepResult,
    r: &StepResult,
    live: &LiveMasks,
    dsff: &[String],
) {
    let rel = (c.loss - r.loss).abs() / r.loss.abs().max(1e-30);
    assert!(rel < 1e-4, "loss {} vs {}", c.loss, r.loss);
    let mut worst_out = 0f64;
    for (name, t) in &r.outputs {
        let e = relative_error(&c.outputs[name], t).unwrap();
        assert!(e < 1e-4, "output {name}: {e:e}");
        worst_out = worst_out.max(e);
    }
    let mut worst_grad = 0f64;
    assert_eq!(c.grads.len(), r.grads.len());
    // Biases in front of an instance norm have a zero gradient up to rounding: their error
    // is measured against the largest gradient of the step instead.
    let amax = |t: &Tensor| t.as_f32().unwrap().iter().fold(0f32, |m, v| m.max(v.abs()));
    let gmax = r.grads.iter().map(|(_, t)| amax(t)).fold(0f32, f32::max) as f64;
    for (name, t) in r.grads.iter() {
        let got = c.grads.get(name).unwrap();
        let e = relative_error(got, t).unwrap() * amax(t) as f64;
        let e = e / (amax(t) as f64).max(1e-2 * gmax);
        assert!(e < 1e-4, "{cfg:?}: grad of {name}: {e:e}");
        worst_grad = worst_grad.max(e);
    }
    eprintln!(
        "largest relative errors: loss {rel:.1e}, outputs {worst_out:.1e}, weight gradients \
         {worst_grad:.1e}"
    );
    // Dead kernels get exactly zero gradient.
    for name in dsff {
        let g = c.grads.get(name).unwrap();
        let m = &live[name];
        let kern = g.numel() / m.len();
        let v = g.as_f32().unwrap();
        for (kv, &l) in v.chunks(kern).zip(m) {
            assert!(l || kv.iter().all(|&x| x.to_bits() == 0), "{name}");
        }
    }
}

#[test]
fn generated_kernels_equal_the_interpreter_on_whole_steps() {
    let targets = [Target::native(), Target::Portable];
    for ((levels, width, groups, iso), target) in
        [(3, 4, 3, false), (4, 5, 5, true)].into_iter().zip(targets)
    {
        let cfg = config(levels, width, groups, iso);
        let (c, live, dsff) = step(&cfg, Backend::Generated(target), 2);
        let (r, _, _) = step(&cfg, Backend::Reference, 1);
        check_step(&cfg, &c, &r, &live, &dsff);
        // One thread, same bits.
        let (c1, _, _) = step(&cfg, Backend::Generated(target), 1);
        assert_eq!(c1.loss.to_bits(), c.loss.to_bits());
        assert!(same_bits(&c1.grads, &c.grads));
    }
}

/// The CUDA training kernels (`e2enc_codegen::cuda::train`), run on the host emulation, on the
/// same whole steps: equal to the interpreter and to the generated C kernels within 1e-4, dead
/// kernels exactly zero, and the same bits for another order of the emulated threads (every
/// phase between barriers reshuffled) and another number of CPU threads, on both CUDA targets.
#[test]
fn cuda_training_kernels_on_the_host_emulation_equal_the_interpreter() {
    for ((levels, width, groups, iso), target) in [(3, 4, 3, false), (4, 5, 5, true)]
        .into_iter()
        .zip(Target::CUDA)
    {
        let cfg = config(levels, width, groups, iso);
        let t0 = std::time::Instant::now();
        let (e, live, dsff) = step_n(&cfg, Backend::Emulated { target, seed: 1 }, 2, 1);
        eprintln!("emulated: {:.1} s", t0.elapsed().as_secs_f64());
        let (r, _, _) = step(&cfg, Backend::Reference, 1);
        check_step(&cfg, &e, &r, &live, &dsff);
        let (c, _, _) = step(&cfg, Backend::Generated(Target::native()), 2);
        check_step(&cfg, &e, &c, &live, &dsff);
        let (e2, _, _) = step_n(&cfg, Backend::Emulated { target, seed: 77 }, 1, 0);
        assert_eq!(e2.loss.to_bits(), e.loss.to_bits());
        assert!(same_bits(&e2.grads, &e.grads));
    }
}

/// The step kept on a device (`DeviceExecutor`: arena, operand tables and live lists on the
/// device, inputs and gradients copied in when the order reaches them) on the emulated device
/// gives the bits of the host executor running the same CUDA kernels, for repeated steps and
/// after the masks change; the arena is the planned peak or a little more.
#[test]
fn device_executor_on_the_emulated_device_equals_the_host_executor() {
    use e2enc_train::device::Emulated;
    use e2enc_train::device_exec::DeviceExecutor;

    let cfg = config(3, 4, 3, false);
    let target = Target::CudaSm90;
    let (e, _, _) = step_n(&cfg, Backend::Emulated { target, seed: 5 }, 2, 0);
    let Case {
        tg,
        weights,
        mut live,
        inputs,
        ..
    } = case(&cfg);
    let maskable = live.keys().cloned().collect();
    let mut dx = DeviceExecutor::new(
        &tg,
        target,
        Some(&maskable),
        Saved::F32,
        ConvMath::F32,
        Box::new(Emulated::new(2, 9)),
    )
    .unwrap();
    let peak = dx.memory_plan().peak_bytes;
    eprintln!("arena {} bytes, planned peak {peak}", dx.arena_bytes());
    assert!(dx.arena_bytes() >= peak / 2 && dx.arena_bytes() <= 2 * peak + (1 << 16));
    for _ in 0..2 {
        let d = dx.step(&weights, &live, &inputs, probe_loss).unwrap();
        assert_eq!(d.loss.to_bits(), e.loss.to_bits());
        for (name, t) in &e.outputs {
            let (a, b) = (t.as_f32().unwrap(), d.outputs[name].as_f32().unwrap());
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}"
            );
        }
        assert!(same_bits(&d.grads, &e.grads));
    }
    // Other masks: the live lists are uploaded every step.
    for m in live.values_mut() {
        for v in m.iter_mut() {
            *v = !*v;
        }
    }
    let d = dx.step(&weights, &live, &inputs, probe_loss).unwrap();
    assert!(!same_bits(&d.grads, &e.grads));
}

/// With the values kept for the backward pass in bfloat16 (`--precision bf16`), the device's
/// step (round, pack and unpack kernels; packed copies and unpacked buffers in the arena, the
/// backward kernels' operand tables pointing at the unpacked buffers) gives the host executor's
/// bits on the same CUDA kernels; its validation forward stays f32; and something was rounded.
#[test]
fn bf16_saved_values_on_the_emulated_device_equal_the_host_executor() {
    use e2enc_train::device::Emulated;
    use e2enc_train::device_exec::DeviceExecutor;

    let cfg = config(3, 4, 3, false);
    let target = Target::CudaSm80;
    let Case {
        tg,
        weights,
        live,
        inputs,
        ..
    } = case(&cfg);
    let maskable = live.keys().cloned().collect();
    let backend = Backend::Emulated { target, seed: 4 };
    let host = |saved: Saved| {
        let mut e =
            Executor::with_saved(&tg, 2, backend, Some(&maskable), Memory::default(), saved)
                .unwrap();
        e.step(&weights, &live, &inputs, probe_loss).unwrap()
    };
    let (h, h32) = (host(Saved::Bf16), host(Saved::F32));
    let mut dx = DeviceExecutor::new(
        &tg,
        target,
        Some(&maskable),
        Saved::Bf16,
        ConvMath::F32,
        Box::new(Emulated::new(2, 7)),
    )
    .unwrap();
    eprintln!(
        "bf16 arena {} bytes, planned peak {}",
        dx.arena_bytes(),
        dx.memory_plan().peak_bytes
    );
    for _ in 0..2 {
        let d = dx.step(&weights, &live, &inputs, probe_loss).unwrap();
        assert_eq!(d.loss.to_bits(), h.loss.to_bits());
        assert!(same_bits(&d.grads, &h.grads));
    }
    assert_ne!(h.loss.to_bits(), h32.loss.to_bits(), "nothing was rounded");
    assert!(!same_bits(&h.grads, &h32.grads));
    // Validation computes on f32 values, on both.
    let f = dx.forward(&weights, &live, &inputs).unwrap();
    for (name, t) in &h32.outputs {
        let (a, b) = (t.as_f32().unwrap(), f[name].as_f32().unwrap());
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}"
        );
    }
}

/// A small E2ENet's training step: its training graph, weights, random DSFF masks (the names
/// of the masked weights in `dsff`), input, and for a loss on the device the labels and weights
/// of every head (0.6 for the full-resolution one, 0.4 for the others).
struct Case {
    tg: e2enc_ir::autodiff::TrainGraph,
    weights: Weights,
    live: LiveMasks,
    dsff: Vec<String>,
    inputs: BTreeMap<String, Tensor>,
    labels: BTreeMap<String, Vec<u16>>,
    wts: BTreeMap<String, f64>,
    outs: Vec<String>,
}

fn case(cfg: &ModelConfig) -> Case {
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
    let weights = init_weights(&net.params, 11);
    let mut live = LiveMasks::new();
    let mut dsff = Vec::new();
    for (k, p) in net.params.iter().filter(|p| p.dsff).enumerate() {
        let m: Vec<bool> = noise(p.shape[0] * p.shape[1], 100 + k as u64)
            .iter()
            .map(|&r| r > -0.3)
            .collect();
        live.insert(p.name.clone(), m);
        dsff.push(p.name.clone());
    }
    let mut inputs = BTreeMap::new();
    for (name, id) in tg.graph.inputs() {
        if name.starts_with("grad.") {
            continue;
        }
        let shape = tg.graph.node(id).ty.shape.clone();
        let n = shape.iter().product();
        inputs.insert(name, Tensor::from_f32(shape, noise(n, 5)).unwrap());
    }
    let mut labels = BTreeMap::new();
    let mut wts = BTreeMap::new();
    for (k, name) in outs.iter().enumerate() {
        let id = tg.graph.output(name).unwrap();
        let sh = tg.graph.node(id).ty.shape.clone();
        let n = sh[0] * sh[2] * sh[3] * sh[4];
        let l: Vec<u16> = noise(n, 40 + k as u64)
            .iter()
            .map(|&r| ((r + 1.0) * 1.5).clamp(0.0, 2.0) as u16)
            .collect();
        labels.insert(name.clone(), l);
        wts.insert(name.clone(), if k == 0 { 0.6 } else { 0.4 });
    }
    Case {
        tg,
        weights,
        live,
        dsff,
        inputs,
        labels,
        wts,
        outs,
    }
}

/// The probing loss of the whole-step tests: `L = Σ_out <out, r_out>` with fixed random `r`.
#[allow(clippy::type_complexity)]
fn probe_loss(
    outs: &BTreeMap<String, std::sync::Arc<Tensor>>,
) -> Result<(f64, BTreeMap<String, Tensor>), e2enc_train::TrainError> {
    probe::probe_loss(outs, 900)
}

fn emulated_executor(c: &Case) -> e2enc_train::device_exec::DeviceExecutor {
    let maskable = c.live.keys().cloned().collect();
    e2enc_train::device_exec::DeviceExecutor::new(
        &c.tg,
        Target::CudaSm80,
        Some(&maskable),
        Saved::F32,
        ConvMath::F32,
        Box::new(e2enc_train::device::Emulated::new(2, 3)),
    )
    .unwrap()
}

/// The loss on the device (`DeviceExecutor::step_on_device`: the heads' Dice + CE sums, the
/// host's loss value from them, the gradients written on the device) against the same step with
/// the host's loss (`e2enc_train::loss`) on the downloaded outputs: the same loss and weight
/// gradients to rounding, and the sums go through the all-reduce hook once per step.
#[test]
fn the_loss_on_the_emulated_device_equals_the_host_loss() {
    use e2enc_train::loss;

    let c = case(&config(3, 4, 3, false));
    let Case {
        weights,
        live,
        inputs,
        labels,
        wts,
        outs,
        ..
    } = &c;
    let mut dx = emulated_executor(&c);
    assert!(dx.has_device_loss());
    let host = dx
        .step(weights, live, inputs, |outs| {
            let mut total = 0.0;
            let mut grads = BTreeMap::new();
            for (name, t) in outs {
                let s = t.shape();
                let sh = [s[0], s[1], s[2], s[3], s[4]];
                let l = loss::dc_and_ce(t.as_f32().unwrap(), sh, &labels[name])?;
                let w = wts[name];
                total += w * l.total;
                let g: Vec<f32> = l.grad.iter().map(|v| (*v as f64 * w) as f32).collect();
                grads.insert(name.clone(), Tensor::from_f32(s.to_vec(), g).unwrap());
            }
            Ok((total, grads))
        })
        .unwrap();
    let mut calls = 0;
    let dev = dx
        .step_on_device(weights, live, inputs, labels, wts, &mut |v| {
            calls += 1;
            assert_eq!(v.len(), outs.len() * (3 * 3 + 2));
            Ok(())
        })
        .unwrap();
    assert_eq!(calls, 1);
    assert!(
        (dev.loss - host.loss).abs() <= 1e-12 * host.loss.abs(),
        "{} vs {}",
        dev.loss,
        host.loss
    );
    for (name, t) in host.grads.iter() {
        let e = relative_error(dev.grads.get(name).unwrap(), t).unwrap();
        assert!(e < 1e-5, "{name}: {e:e}");
    }
    // The hook is where ranks add their sums: doubling them changes the loss (the voxel count
    // doubles with them, so the cross entropy stays and the Dice moves).
    let twice = dx
        .step_on_device(weights, live, inputs, labels, wts, &mut |v| {
            v.iter_mut().for_each(|x| *x *= 2.0);
            Ok(())
        })
        .unwrap();
    assert!((twice.loss - host.loss).abs() > 1e-9);
    // A label past the class count is refused before anything runs.
    let mut bad = labels.clone();
    bad.get_mut(&outs[0]).unwrap()[3] = 3;
    let e = dx
        .step_on_device(weights, live, inputs, &bad, wts, &mut |_| Ok(()))
        .err()
        .unwrap();
    assert!(e.to_string().contains("not below the class count"), "{e}");
}

/// The optimizer on the device (`upload_state`, `step_resident`, `download_state`: the gradient
/// norm, clipping, SGD Nesterov with weight decay and the DSFF masks re-applied, weights and
/// momentum kept on the device) against the host's (`optim::clip_grad_norm`, `Sgd::step`, dead
/// kernels zeroed) over three steps of a learning rate large enough to clip: the same weights
/// and momentum to f32 rounding, dead kernels exactly zero.
#[test]
fn the_optimizer_on_the_emulated_device_equals_the_host_one() {
    use e2enc_train::optim;

    let c = case(&config(3, 4, 3, false));
    let mut host_x = emulated_executor(&c);
    let mut dev_x = emulated_executor(&c);
    let zero_dead = |w: &mut Weights| {
        for (name, m) in &c.live {
            let t = w.get(name).unwrap();
            let (shape, mut v) = (t.shape().to_vec(), t.as_f32().unwrap().to_vec());
            let kv = v.len() / m.len();
            for (k, &l) in m.iter().enumerate() {
                if !l {
                    v[k * kv..(k + 1) * kv].fill(0.0);
                }
            }
            w.insert(name.clone(), Tensor::from_f32(shape, v).unwrap());
        }
    };
    let mut w = c.weights.clone();
    let mut sgd = optim::Sgd::nnunet();
    let lr = 0.5;
    let mut norms = Vec::new();
    for _ in 0..3 {
        let r = host_x
            .step_on_device(&w, &c.live, &c.inputs, &c.labels, &c.wts, &mut |_| Ok(()))
            .unwrap();
        let mut g = r.grads;
        norms.push(optim::clip_grad_norm(&mut g, 0.05));
        sgd.step(&mut w, &g, lr).unwrap();
        zero_dead(&mut w);
        zero_dead(&mut sgd.momentum_buffers);
    }
    let mut dsgd = optim::Sgd::nnunet();
    dev_x
        .upload_state(&c.weights, &dsgd.momentum_buffers)
        .unwrap();
    for (k, want) in norms.iter().enumerate() {
        let (_, norm) = dev_x
            .step_resident(&c.live, &c.inputs, &c.labels, &c.wts, &dsgd, lr, 0.05, None)
            .unwrap();
        assert!(
            (norm - want).abs() <= 1e-6 * want,
            "step {k}: norm {norm} vs {want}"
        );
        assert!(norm > 0.05, "the test must clip");
    }
    // The kernels' L1 norms the device computes for a DSFF update: the host's bits, from the
    // weights it holds (checked against the downloaded weights below).
    let l1 = dev_x.kernel_l1().unwrap();
    assert_eq!(l1.len(), c.live.len());
    let (dw, dm) = dev_x.download_state().unwrap();
    for (name, norms) in &l1 {
        let v = dw.get(name).unwrap().as_f32().unwrap();
        let want = e2enc_train::sparse::kernel_l1(v, v.len() / c.live[name].len());
        assert_eq!(norms.len(), want.len(), "{name}");
        assert!(
            norms
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: device kernel norms differ from the host's"
        );
        assert!(norms.iter().any(|&x| x > 0.0), "{name}");
    }
    assert!(
        dev_x.kernel_l1().is_err(),
        "norms of weights the device no longer holds"
    );
    dsgd.momentum_buffers = dm;
    for (mine, theirs, what) in [
        (&dw, &w, "weight"),
        (&dsgd.momentum_buffers, &sgd.momentum_buffers, "momentum"),
    ] {
        for (name, t) in theirs.iter() {
            let (x, y) = (
                t.as_f32().unwrap(),
                mine.get(name).unwrap().as_f32().unwrap(),
            );
            let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(d <= 1e-5 * scale, "{what} {name}: {d} of {scale}");
        }
    }
    for (name, m) in &c.live {
        let v = dw.get(name).unwrap();
        let v = v.as_f32().unwrap();
        let kv = v.len() / m.len();
        for (k, &l) in m.iter().enumerate() {
            assert!(
                l || v[k * kv..(k + 1) * kv].iter().all(|x| *x == 0.0),
                "{name}"
            );
        }
    }
    // The host holds the state again: a resident step now is an error, not a stale update.
    assert!(dev_x
        .step_resident(&c.live, &c.inputs, &c.labels, &c.wts, &dsgd, lr, 0.05, None)
        .is_err());
}

/// A data-parallel step kept on the device (`step_resident` with `RankHooks`) as one of two identical ranks:
/// the loss sums and the gradients go through hooks that double them (what summing over two
/// ranks holding the same batch does). The loss is then over a global batch of two equal
/// halves, so each rank's gradient is half a lone process's, and the sum of two makes it whole
/// again: the weights after two steps equal a lone process's to rounding. The gradients reach
/// the reducer packed, exactly the live floats (a DSFF weight's live kernels, every other
/// gradient whole): in one bucket, or with one-float buckets one bucket per gradient, each
/// started as soon as the backward pass has finished it (the rest of the pass is launched
/// after it). A table that misplaces a kernel, a sum that is not put back, or a bucket started
/// before its gradients are final (its packed copy would be stale) fails it.
#[test]
fn a_data_parallel_device_step_sums_the_live_gradients_packed() {
    use e2enc_train::device::{DevPtr, Device};
    use e2enc_train::device_exec::RankHooks;
    use e2enc_train::dist::GradientReducer;
    use e2enc_train::optim;

    /// Doubles what it is given; records the floats of each step's starts.
    struct Twice(Vec<Vec<usize>>);
    impl GradientReducer for Twice {
        fn all_reduce(
            &mut self,
            dev: &mut dyn Device,
            bufs: &[(DevPtr, usize)],
        ) -> Result<(), e2enc_train::TrainError> {
            for &(p, n) in bufs {
                let mut b = vec![0u8; n * 4];
                dev.download(p, &mut b)?;
                let v: Vec<u8> = b
                    .chunks_exact(4)
                    .flat_map(|x| (2.0 * f32::from_le_bytes(x.try_into().unwrap())).to_le_bytes())
                    .collect();
                dev.upload(p, &v)?;
            }
            self.0
                .last_mut()
                .expect("a step began")
                .extend(bufs.iter().map(|b| b.1));
            Ok(())
        }
        fn engine(&self) -> String {
            "two identical ranks".into()
        }
    }

    let c = case(&config(3, 4, 3, false));
    let sgd = optim::Sgd::nnunet();
    let lr = 0.05;
    let mut one = emulated_executor(&c);
    one.upload_state(&c.weights, &sgd.momentum_buffers).unwrap();
    for _ in 0..2 {
        one.step_resident(&c.live, &c.inputs, &c.labels, &c.wts, &sgd, lr, 12.0, None)
            .unwrap();
    }
    let (wa, _) = one.download_state().unwrap();
    let live_floats: usize = c
        .weights
        .iter()
        .filter(|(n, _)| c.tg.weight_grads.iter().any(|(w, _)| w == *n))
        .map(|(n, t)| match c.live.get(n) {
            Some(m) => m.iter().filter(|l| **l).count() * (t.numel() / m.len()),
            None => t.numel(),
        })
        .sum();
    let all_floats: usize = c.weights.iter().map(|(_, t)| t.numel()).sum();
    assert!(live_floats < all_floats);
    let with_grads = c.tg.weight_grads.len();

    for bucket in [usize::MAX, 1] {
        let mut two = emulated_executor(&c);
        two.upload_state(&c.weights, &sgd.momentum_buffers).unwrap();
        let mut r = Twice(Vec::new());
        let mut sum_calls = 0;
        for _ in 0..2 {
            r.0.push(Vec::new());
            let mut sums = |s: &mut [f64]| {
                sum_calls += 1;
                s.iter_mut().for_each(|v| *v *= 2.0);
                Ok(())
            };
            two.step_resident(
                &c.live,
                &c.inputs,
                &c.labels,
                &c.wts,
                &sgd,
                lr,
                12.0,
                Some(RankHooks {
                    sums: &mut sums,
                    grads: &mut r,
                    bucket,
                }),
            )
            .unwrap();
        }
        assert_eq!(sum_calls, 2);
        assert_eq!(two.packed_gradient_floats(), live_floats);
        let buckets = two.gradient_buckets();
        assert_eq!(r.0, vec![buckets.clone(); 2]);
        assert_eq!(buckets.iter().sum::<usize>(), live_floats);
        if bucket == usize::MAX {
            assert_eq!(buckets, vec![live_floats]);
        } else {
            // Every gradient has a live float here: one bucket each.
            assert_eq!(buckets.len(), with_grads, "{buckets:?}");
        }
        let (wb, _) = two.download_state().unwrap();
        let mut worst = 0f32;
        for (name, t) in wa.iter() {
            let (x, y) = (t.as_f32().unwrap(), wb.get(name).unwrap().as_f32().unwrap());
            let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            worst = worst.max(d / scale);
        }
        eprintln!(
            "two identical ranks ({} bucket(s)) vs one process after two steps: {worst:.2e}",
            buckets.len()
        );
        assert!(worst <= 1e-5, "{worst}");
    }
}

/// `DeviceExecutor::time_kernels`: with timing on, every launch of a step kept on the device is
/// timed and filed under what it computes (the graph's ops, the loss, the optimizer); nothing is
/// kept before timing is asked for, and the times grow with the steps. The device's memory in
/// all is more than the arena, the weights and the momentum.
#[test]
fn device_launches_are_timed_by_kind() {
    use e2enc_train::optim;

    let c = case(&config(3, 4, 3, false));
    let sgd = optim::Sgd::nnunet();
    let mut x = emulated_executor(&c);
    x.upload_state(&c.weights, &sgd.momentum_buffers).unwrap();
    let step = |x: &mut e2enc_train::device_exec::DeviceExecutor| {
        x.step_resident(
            &c.live, &c.inputs, &c.labels, &c.wts, &sgd, 0.01, 12.0, None,
        )
        .unwrap();
    };
    step(&mut x);
    assert!(x.kernel_profile().unwrap().is_none());
    // The device holds the arena, the weights and their momentum, and more (tables, sums).
    let weights: usize = c.weights.iter().map(|(_, t)| t.numel() * 4).sum();
    assert!(
        x.device_bytes() > x.arena_bytes() + 2 * weights,
        "{} of {} + 2 x {weights}",
        x.device_bytes(),
        x.arena_bytes()
    );
    x.time_kernels(true).unwrap();
    step(&mut x);
    let one = x.kernel_profile().unwrap().unwrap().clone();
    eprintln!("{one:?}");
    for kind in [
        "fused_conv3d",
        "conv_backward_weight",
        "conv_backward_data",
        "instance_norm",
        "instance_norm_backward",
        "loss",
        "optimizer",
    ] {
        assert!(one.get(kind).is_some_and(|&s| s > 0.0), "{kind}: {one:?}");
    }
    // Every label names a kind of kernel this executor loaded.
    assert!(!one.contains_key("(unknown kernel)"), "{one:?}");
    step(&mut x);
    let two = x.kernel_profile().unwrap().unwrap();
    assert_eq!(two.len(), one.len());
    assert!(
        two.iter().all(|(k, s)| *s > one[k]),
        "{two:?} after {one:?}"
    );
}

/// `e2enc train --tensor-cores tf32|bf16`: the device step with the stride-1 `1x3x3` convs'
/// forward passes, data and weight gradients on tensor cores (`mma.sync` under the host
/// emulation, the live kernels from a run-time table). In the emulation's exact-MMA mode the
/// TF32 step equals the f32 step within 1e-4; with the formats' rounding it tracks it to that
/// rounding, gives the same bits for every thread order, ignores the weights of dead kernels
/// (this case leaves them nonzero) and keeps their gradients exactly zero. Widths 8-16: the
/// fusion convs' data gradients have up to 40 output channels (three 16-channel groups, the
/// last partial).
#[test]
fn tensor_core_convs_track_the_f32_step() {
    use e2enc_codegen::precision::Precision;
    use e2enc_codegen::train::Live;
    use e2enc_ir::tensor::relative_error_l2;
    use e2enc_ir::Op;
    use e2enc_train::device::Emulated;
    use e2enc_train::device_exec::DeviceExecutor;

    let cfg = config(3, 8, 3, false);
    let target = Target::CudaSm80;
    let c = case(&cfg);
    let maskable: std::collections::HashSet<String> = c.live.keys().cloned().collect();
    // The tensor-core kernels: forward convs and data gradients, masked ones among them.
    let gen = e2enc_codegen::render::for_target_in(target, Precision::Tf32)
        .training(&c.tg, Some(&maskable))
        .unwrap();
    let tc: Vec<_> = gen
        .kernels
        .iter()
        .filter(|k| matches!(k.live, Live::Table { .. }))
        .collect();
    let grads = tc
        .iter()
        .filter(|k| matches!(c.tg.graph.node(k.node).op, Op::ConvBackwardData(_)))
        .count();
    eprintln!(
        "{} tensor-core kernels ({grads} data gradients, {} masked)",
        tc.len(),
        tc.iter().filter(|k| k.mask.is_some()).count()
    );
    let groups = tc
        .iter()
        .map(|k| k.launch.as_ref().map_or(0, |l| l.grid[1]))
        .max();
    eprintln!("at most {groups:?} 16-channel groups per kernel");
    assert!(grads >= 3 && tc.len() >= grads + 3);
    assert!(groups >= Some(2));
    assert!(tc.iter().any(|k| k.mask.is_some()));

    let run = |math, dev: Emulated| {
        let mut dx = DeviceExecutor::new(
            &c.tg,
            target,
            Some(&maskable),
            Saved::F32,
            math,
            Box::new(dev),
        )
        .unwrap();
        dx.step(&c.weights, &c.live, &c.inputs, probe_loss).unwrap()
    };
    let f = run(ConvMath::F32, Emulated::new(2, 3));
    // Without TF32's rounding the tensor-core kernels are the f32 math summed in another
    // order: the whole step within 1e-4 (every tap, border, shift and dead kernel right).
    let exact = run(ConvMath::Tf32, Emulated::new(2, 5).exact_tf32());
    check_step(&cfg, &exact, &f, &c.live, &c.dsff);
    // Biases in front of an instance norm have a zero gradient up to rounding: errors are
    // measured against the larger of the tensor's norm and 1% of the largest gradient's.
    let norm = |t: &Tensor| {
        let v = t.as_f32().unwrap();
        v.iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    };
    let gmax = f.grads.iter().map(|(_, t)| norm(t)).fold(0f64, f64::max);
    // (format, bound on the outputs, bound on the weight gradients): bf16 rounds 8x coarser.
    for (math, out_bound, grad_bound) in [(ConvMath::Tf32, 1e-2, 0.1), (ConvMath::Bf16, 5e-2, 0.5)]
    {
        let t = run(math, Emulated::new(2, 4));
        let t2 = run(math, Emulated::new(2, 9));
        assert_eq!(t.loss.to_bits(), t2.loss.to_bits());
        assert!(
            same_bits(&t.grads, &t2.grads),
            "{math}: thread order changed a step"
        );
        let mut worst = 0f64;
        let mut moved = false;
        for (name, want) in &f.outputs {
            let e = relative_error_l2(&t.outputs[name], want).unwrap();
            eprintln!("{math}: output {name}: rel. L2 {e:.2e} from f32");
            assert!(e < out_bound, "{math}: output {name}: {e:e}");
            moved |= e > 0.0;
        }
        for (name, want) in f.grads.iter() {
            let got = t.grads.get(name).unwrap();
            let e =
                relative_error_l2(got, want).unwrap() * norm(want) / norm(want).max(1e-2 * gmax);
            worst = worst.max(e);
            assert!(
                e < grad_bound,
                "{math}: grad of {name}: rel. L2 {e:e} from f32"
            );
            if let Some(m) = c.live.get(name) {
                let kv = want.numel() / m.len();
                let g = got.as_f32().unwrap();
                for (k, _) in m.iter().enumerate().filter(|(_, l)| !**l) {
                    assert!(
                        g[k * kv..(k + 1) * kv].iter().all(|&v| v == 0.0),
                        "{math}: {name}: dead kernel {k} has a gradient"
                    );
                }
            }
        }
        eprintln!("{math}: weight gradients: worst rel. L2 {worst:.2e} from f32");
        assert!(
            moved,
            "{math} gave f32's outputs exactly: no conv ran on tensor cores?"
        );
    }
}

/// One shifted conv, `x → depth shift → 1x3x3 conv (+bias) → out`, with every input and the
/// loss's gradient bfloat16 values, so neither TF32 nor bf16 rounds anything and every product
/// is exact in f32: the tensor-core forward pass, data gradient and weight gradient equal the
/// f32 kernels up to the order of their sums, in both formats. 20 inputs and 36 outputs
/// (three 16-channel groups, partial last ones; 180 weight-gradient entries), the depth shift's
/// three groups, dead kernels with nonzero weights (the live table must hide them). The weight
/// gradient's 1920 positions are split over blocks (the last block of a tile adds the splits'
/// partial sums from the scratch); the executor's third step equals its second bit for bit and
/// the f32 kernels, after a first one with other weights (the scratch's counters are left zero
/// for the next launch).
#[test]
fn tensor_core_training_convs_are_exact_on_bf16_values() {
    use e2enc_codegen::train::Live;
    use e2enc_ir::tensor::relative_error_l2;
    use e2enc_ir::{ConvAttrs, Graph, Op, ShiftAttrs, TensorType};
    use e2enc_train::device::Emulated;
    use e2enc_train::device_exec::DeviceExecutor;
    use e2enc_train::memplan::{from_bf16, to_bf16};

    let (n, ci, co, sp) = (2, 20, 36, [4, 12, 20]);
    let mut g = Graph::new("one conv");
    let x = g.weight("x", TensorType::f32(vec![n, ci, sp[0], sp[1], sp[2]]));
    let w = g.weight("w", TensorType::f32(vec![co, ci, 1, 3, 3]));
    let b = g.weight("b", TensorType::f32(vec![co]));
    let s = g
        .add(Op::DepthShift(ShiftAttrs { groups: 3 }), &[x], None)
        .unwrap();
    let conv = ConvAttrs {
        kernel: [1, 3, 3],
        stride: [1, 1, 1],
        padding: [0, 1, 1],
    };
    let y = g.add(Op::Conv3d(conv), &[s, w, b], None).unwrap();
    g.set_output("out", y);
    let tg = training_graph(&g, &["out"]).unwrap();
    let bf = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| from_bf16(to_bf16(x))).collect() };
    let mut weights = Weights::new();
    for (k, (name, id)) in tg.graph.weights().into_iter().enumerate() {
        let shape = tg.graph.node(id).ty.shape.clone();
        let v = bf(noise(shape.iter().product(), 31 + k as u64));
        weights.insert(name, Tensor::from_f32(shape, v).unwrap());
    }
    let mut live = LiveMasks::new();
    live.insert(
        "w".to_string(),
        noise(co * ci, 77).iter().map(|&r| r > -0.2).collect(),
    );
    let maskable: std::collections::HashSet<String> = live.keys().cloned().collect();
    let mut doubled = Weights::new();
    for (name, t) in weights.iter() {
        let v = t.as_f32().unwrap().iter().map(|x| 2.0 * x).collect();
        doubled.insert(
            name.clone(),
            Tensor::from_f32(t.shape().to_vec(), v).unwrap(),
        );
    }
    let loss = |outs: &BTreeMap<String, std::sync::Arc<Tensor>>| {
        let (l, grads) = probe::probe_loss(outs, 5)?;
        let grads = grads
            .into_iter()
            .map(|(k, t)| {
                let v = bf(t.as_f32().unwrap().to_vec());
                (k, Tensor::from_f32(t.shape().to_vec(), v).unwrap())
            })
            .collect();
        Ok((l, grads))
    };
    let run = |math: ConvMath| {
        let gen = e2enc_codegen::render::for_target_in(Target::CudaSm80, math.precision())
            .training(&tg, Some(&maskable))
            .unwrap();
        let tc = gen
            .kernels
            .iter()
            .filter(|k| matches!(k.live, Live::Table { .. }))
            .count();
        // The tensor-core weight gradient's splits of the positions (the grid's z).
        let splits = gen
            .kernels
            .iter()
            .filter(|k| {
                matches!(k.live, Live::Table { .. })
                    && matches!(tg.graph.node(k.node).op, Op::ConvBackwardWeight(_))
            })
            .map(|k| (k.launch.as_ref().unwrap().grid[2], k.scratch))
            .collect::<Vec<_>>();
        let mut dx = DeviceExecutor::new(
            &tg,
            Target::CudaSm80,
            Some(&maskable),
            Saved::F32,
            math,
            Box::new(Emulated::new(2, 6)),
        )
        .unwrap();
        // A step with other weights first: a kernel that left its scratch's counters set
        // would not write the later steps' weight gradient, which would keep this one's.
        dx.step(&doubled, &live, &BTreeMap::new(), loss).unwrap();
        let r = dx.step(&weights, &live, &BTreeMap::new(), loss).unwrap();
        let again = dx.step(&weights, &live, &BTreeMap::new(), loss).unwrap();
        for (name, t) in r.grads.iter() {
            assert_eq!(
                t.as_f32(),
                again.grads.get(name).unwrap().as_f32(),
                "{math}: a second step's gradient of {name}"
            );
        }
        (tc, splits, r)
    };
    let (none, _, f) = run(ConvMath::F32);
    assert_eq!(none, 0);
    for math in [ConvMath::Tf32, ConvMath::Bf16] {
        let (tc, splits, r) = run(math);
        // Forward, data gradient, weight gradient.
        assert_eq!(tc, 3, "{math}: {tc} tensor-core kernels");
        eprintln!("{math}: weight gradient split (ways, scratch bytes): {splits:?}");
        assert!(
            splits.len() == 1 && splits[0].0 > 1 && splits[0].1 > 0,
            "{math}: {splits:?}"
        );
        let e = relative_error_l2(&r.outputs["out"], &f.outputs["out"]).unwrap();
        assert!(e < 1e-6, "{math}: output {e:e}");
        let mut worst = e;
        for (name, want) in f.grads.iter() {
            let got = r.grads.get(name).unwrap();
            let e = relative_error_l2(got, want).unwrap();
            assert!(e < 1e-5, "{math}: grad of {name}: {e:e}");
            worst = worst.max(e);
        }
        let gw = r.grads.get("w").unwrap().as_f32().unwrap();
        for (k, _) in live["w"].iter().enumerate().filter(|(_, l)| !**l) {
            assert!(
                gw[k * 9..(k + 1) * 9].iter().all(|&v| v == 0.0),
                "{math}: dead {k}"
            );
        }
        eprintln!("{math}: largest rel. L2 from the f32 kernels {worst:.1e}");
    }
}
