//! The training loop end to end on a tiny synthetic dataset: it learns (the loss falls), the DSFF
//! density stays constant with dead kernels exactly zero in the weights and the momentum, the
//! checkpoint is a loadable model, and a run stopped in the middle of an epoch and resumed ends
//! bit-identical to an uninterrupted one.

use std::path::Path;

use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_ir::Weights;
use e2enc_train::exec::Backend;
use e2enc_train::trainer::{Outcome, TrainOptions, Trainer};

#[path = "synthetic/mod.rs"]
mod synthetic;
use synthetic::{dataset, model};

fn options(epochs: usize) -> TrainOptions {
    TrainOptions {
        epochs,
        iters_per_epoch: 4,
        val_iters: 1,
        batch: 2,
        patch: None,
        density: 0.5,
        update_frequency: 3,
        lr: 0.01,
        seed: 7,
        augment: true,
        kernels: Backend::default(),
        target: None,
        precision: Default::default(),
        conv_math: Default::default(),
    }
}

fn weights_of(out: &Path) -> Weights {
    Weights::load(&out.join("checkpoint/weights.safetensors")).unwrap()
}

#[test]
fn stopped_and_resumed_run_equals_an_uninterrupted_one() {
    let t = tempfile::tempdir().unwrap();
    dataset(&t.path().join("ds"));
    let m = model(t.path());

    let full = t.path().join("full");
    let mut a =
        Trainer::create(&t.path().join("ds"), Some(&m), &full, options(3), 2, |_| {}).unwrap();
    assert_eq!(
        a.train(&mut |_| {}, &mut || false).unwrap(),
        Outcome::Finished
    );

    // Stop after 6 iterations (mid-epoch 1, after a mask update), then resume in a new trainer
    // with another thread count.
    let part = t.path().join("part");
    let mut b =
        Trainer::create(&t.path().join("ds"), Some(&m), &part, options(3), 1, |_| {}).unwrap();
    let mut n = 0;
    let stopped = b
        .train(&mut |_| {}, &mut || {
            n += 1;
            n > 6
        })
        .unwrap();
    assert_eq!(stopped, Outcome::Stopped);
    drop(b);
    // The checkpoint records the target the kernels were generated for; resume reuses it.
    let state = std::fs::read_to_string(
        e2enc_train::checkpoint::find(&part)
            .unwrap()
            .join("state.json"),
    )
    .unwrap();
    let native = e2enc_codegen::target::Target::native().to_string();
    assert!(state.contains(&format!("\"{native}\"")), "{state}");
    let mut c = Trainer::resume(&part, 2).unwrap();
    assert_eq!(
        c.train(&mut |_| {}, &mut || false).unwrap(),
        Outcome::Finished
    );

    let (wa, wc) = (weights_of(&full), weights_of(&part));
    for (name, ta) in wa.iter() {
        let tc = wc.get(name).unwrap();
        assert_eq!(
            ta.as_f32().unwrap(),
            tc.as_f32().unwrap(),
            "{name} differs after resume"
        );
    }
    // Everything but the wall-clock seconds is identical.
    let strip = |h: &[e2enc_train::plot::EpochLog]| {
        h.iter()
            .map(|e| (e.epoch, e.train_loss, e.val_loss, e.val_dice.clone(), e.lr))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(a.history()), strip(c.history()));
}

#[test]
fn trains_keeps_density_and_writes_a_loadable_model() {
    let t = tempfile::tempdir().unwrap();
    dataset(&t.path().join("ds"));
    let m = model(t.path());
    let out = t.path().join("run");
    let mut opts = options(6);
    opts.iters_per_epoch = 6;
    let mut tr = Trainer::create(&t.path().join("ds"), Some(&m), &out, opts, 2, |_| {}).unwrap();
    let mut notes = Vec::new();
    tr.train(
        &mut |e| {
            if let e2enc_train::trainer::Event::Note(s) = e {
                notes.push(s)
            }
        },
        &mut || false,
    )
    .unwrap();
    assert!(notes.iter().any(|n| n.contains("DSFF update")), "{notes:?}");
    let h = tr.history();
    assert_eq!(h.len(), 6);
    assert!(
        h[5].train_loss < h[0].train_loss,
        "the loss does not fall: {:?}",
        h.iter().map(|e| e.train_loss).collect::<Vec<_>>()
    );

    // The checkpoint is a model; its masks keep the initial density and dead kernels are zero.
    let model = Model::load(&out.join("checkpoint/model.json"), &BuildOptions::default()).unwrap();
    let masks = model.masks.as_ref().unwrap();
    let raw = weights_of(&out);
    let momentum = Weights::load(&out.join("checkpoint/optimizer.safetensors")).unwrap();
    for (name, m) in masks.iter() {
        let on = m.as_f32().unwrap();
        let live = on.iter().filter(|&&v| v == 1.0).count();
        assert_eq!(live, (on.len() as f64 * 0.5).round() as usize, "{name}");
        let w = raw.get(name).unwrap();
        let k = w.numel() / on.len();
        let mom = momentum.get(&format!("momentum.{name}")).unwrap();
        for (i, &v) in on.iter().enumerate() {
            if v == 0.0 {
                assert!(w.as_f32().unwrap()[i * k..(i + 1) * k]
                    .iter()
                    .all(|&x| x == 0.0));
                assert!(mom.as_f32().unwrap()[i * k..(i + 1) * k]
                    .iter()
                    .all(|&x| x == 0.0));
            }
        }
    }
    assert!(model.config.preprocessing.is_some());
    assert!(out.join("training.png").is_file() && out.join("training.json").is_file());
    // A second create on the same folder refuses to clobber the run.
    let again = Trainer::create(&t.path().join("ds"), Some(&m), &out, options(1), 1, |_| {});
    assert!(again.is_err());
}

mod thread_ranks;

/// Runs `opts` on `ranks` thread-ranks into `out` (rank 0 writes); returns rank 0's history.
fn train_on_ranks(
    ds: &Path,
    m: &Path,
    out: &Path,
    opts: TrainOptions,
    ranks: usize,
) -> Vec<e2enc_train::plot::EpochLog> {
    let handles: Vec<_> = thread_ranks::world(ranks)
        .into_iter()
        .map(|r| {
            let (ds, m, out, opts) = (
                ds.to_path_buf(),
                m.to_path_buf(),
                out.to_path_buf(),
                opts.clone(),
            );
            std::thread::spawn(move || {
                let rank = r.rank;
                let on_device = matches!(opts.kernels, e2enc_train::exec::Backend::Device { .. });
                let mut t = Trainer::create_on(
                    &ds,
                    Some(&m),
                    &out,
                    opts,
                    1,
                    |_| {},
                    std::sync::Arc::new(r),
                )
                .unwrap();
                assert_eq!(t.rank(), (rank, ranks));
                // Small buckets: the gradients' all-reduce runs beside the backward pass.
                t.set_gradient_bucket(64);
                assert_eq!(
                    t.train(&mut |_| {}, &mut || false).unwrap(),
                    Outcome::Finished
                );
                // On the host the gradients went through the all-reduce beside the backward
                // pass, and so did a device step's.
                // On (emulated) GPUs the weights stayed on the device, and its gradients were
                // summed there by the device reducer, each bucket (at least 64 floats, whole
                // gradients) as soon as the backward pass had finished it; through the host
                // for the emulation, in 64-float pieces.
                if ranks > 1 && on_device {
                    let c = t.communication();
                    assert!(c.on_device && c.steps > 0, "{c:?}");
                    assert!(
                        c.gradient_calls >= (c.gradient_bytes / 4).div_ceil(64),
                        "{c:?}"
                    );
                    assert!(c.gradient_calls > 1, "{c:?}");
                    let p = t.profile();
                    assert!(p.contains_key("device optimizer"), "{p:?}");
                    assert!(
                        p.contains_key("wait for the gradients after the backward pass"),
                        "{p:?}"
                    );
                    assert!(
                        t.gradient_engine().unwrap().contains("through the host"),
                        "{:?}",
                        t.gradient_engine()
                    );
                }
                if ranks > 1 && !on_device {
                    let c = t.communication();
                    assert!(c.steps > 0 && c.gradient_calls > 0, "{c:?}");
                    let p = t.profile();
                    assert!(
                        p.contains_key("wait for the gradients after the backward pass"),
                        "{p:?}"
                    );
                }
                (rank, t.history().to_vec())
            })
        })
        .collect();
    let mut hist = Vec::new();
    for h in handles {
        let (rank, hh) = h.join().unwrap();
        if rank == 0 {
            hist = hh;
        }
    }
    hist
}

#[test]
fn two_ranks_with_batch_one_take_the_steps_of_one_process_with_batch_two() {
    let t = tempfile::tempdir().unwrap();
    let ds = t.path().join("ds");
    dataset(&ds);
    let m = model(t.path());
    let mut opts = options(2);
    opts.update_frequency = 3; // DSFF updates at iterations 3 and 6: decided on rank 0
    let one = t.path().join("one");
    let mut a = Trainer::create(&ds, Some(&m), &one, opts.clone(), 1, |_| {}).unwrap();
    a.train(&mut |_| {}, &mut || false).unwrap();
    let two = t.path().join("two");
    let hist = train_on_ranks(&ds, &m, &two, opts, 2);

    let (wa, wb) = (weights_of(&one), weights_of(&two));
    let mut worst = 0.0f64;
    for (name, ta) in wa.iter() {
        let (x, y) = (
            ta.as_f32().unwrap(),
            wb.get(name).unwrap().as_f32().unwrap(),
        );
        let scale = x.iter().fold(1e-3f32, |a, v| a.max(v.abs())) as f64;
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs() as f64 / scale);
        }
    }
    eprintln!("largest weight difference, relative to each tensor's largest weight: {worst:.2e}");
    assert!(worst < 1e-4, "{worst}");
    let masks = |d: &Path| Weights::load(&d.join("checkpoint/masks.safetensors")).unwrap();
    let (ma, mb) = (masks(&one), masks(&two));
    for (name, t) in ma.iter() {
        assert_eq!(t.as_f32(), mb.get(name).unwrap().as_f32(), "mask {name}");
    }
    for (ea, eb) in a.history().iter().zip(&hist) {
        assert!(
            (ea.train_loss - eb.train_loss).abs() < 1e-5,
            "{ea:?} vs {eb:?}"
        );
        assert!((ea.val_loss - eb.val_loss).abs() < 1e-5, "{ea:?} vs {eb:?}");
        for (da, db) in ea.val_dice.iter().zip(&eb.val_dice) {
            assert!(
                (da - db).abs() < 1e-3 || (da.is_nan() && db.is_nan()),
                "{ea:?} vs {eb:?}"
            );
        }
    }
    assert_eq!(hist.len(), 2);
}

#[test]
fn data_workers_do_not_change_the_batches() {
    let t = tempfile::tempdir().unwrap();
    let ds = t.path().join("ds");
    dataset(&ds);
    let m = model(t.path());
    let mut runs = Vec::new();
    for workers in [0, 3] {
        let out = t.path().join(format!("w{workers}"));
        let mut tr = Trainer::create(&ds, Some(&m), &out, options(1), 1, |_| {}).unwrap();
        tr.set_data_workers(workers);
        tr.train(&mut |_| {}, &mut || false).unwrap();
        assert!(tr.profile().contains_key("data wait"));
        runs.push(weights_of(&out));
    }
    for (name, ta) in runs[0].iter() {
        assert_eq!(ta.as_f32(), runs[1].get(name).unwrap().as_f32(), "{name}");
    }
}

#[test]
fn ranks_refuse_an_uneven_batch_and_disagreeing_options() {
    let t = tempfile::tempdir().unwrap();
    let ds = t.path().join("ds");
    dataset(&ds);
    let m = model(t.path());
    let out = t.path().join("run");
    let mut ranks = thread_ranks::world(2);
    let r1 = ranks.pop().unwrap();
    let mut odd = options(1);
    odd.batch = 3;
    let e = Trainer::create_on(&ds, Some(&m), &out, odd, 1, |_| {}, std::sync::Arc::new(r1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not split over 2 ranks"), "{e}");

    // Rank 1 started with another seed: both ranks refuse, naming the options.
    let handles: Vec<_> = thread_ranks::world(2)
        .into_iter()
        .map(|r| {
            let (ds, m, out) = (ds.clone(), m.clone(), out.clone());
            std::thread::spawn(move || {
                let mut o = options(1);
                o.seed += r.rank as u64;
                Trainer::create_on(&ds, Some(&m), &out, o, 1, |_| {}, std::sync::Arc::new(r))
                    .err()
                    .map(|e| e.to_string())
            })
        })
        .collect();
    for h in handles {
        let e = h.join().unwrap().expect("an error on every rank");
        assert!(e.contains("disagree on the options"), "{e}");
    }
    assert!(!out.join("checkpoint").exists());
}

/// GPU training's path (`e2enc train --emulate`: the CUDA kernels, the step kept in a device
/// arena) on the host emulation: it trains, its losses follow the CPU run's to float rounding,
/// DSFF masks are kept, and a resume without naming a device refuses with the flags to use.
#[test]
fn training_on_the_emulated_gpu_follows_the_cpu_run() {
    let t = tempfile::tempdir().unwrap();
    dataset(&t.path().join("ds"));
    let m = model(t.path());
    let small = |kernels| TrainOptions {
        epochs: 1,
        iters_per_epoch: 2,
        val_iters: 1,
        update_frequency: 1,
        kernels,
        ..options(1)
    };
    let cpu = t.path().join("cpu");
    let mut a = Trainer::create(
        &t.path().join("ds"),
        Some(&m),
        &cpu,
        small(Backend::default()),
        2,
        |_| {},
    )
    .unwrap();
    a.train(&mut |_| {}, &mut || false).unwrap();
    let gpu = t.path().join("gpu");
    let dev = Backend::Device {
        target: e2enc_codegen::target::Target::CudaSm80,
        gpu: None,
    };
    let mut b =
        Trainer::create(&t.path().join("ds"), Some(&m), &gpu, small(dev), 2, |_| {}).unwrap();
    b.train(&mut |_| {}, &mut || false).unwrap();
    let (ha, hb) = (a.history(), b.history());
    assert_eq!(ha.len(), hb.len());
    for (x, y) in ha.iter().zip(hb) {
        let rel = (x.train_loss - y.train_loss).abs() / x.train_loss.abs();
        assert!(
            rel < 1e-4,
            "train loss {} vs {}",
            x.train_loss,
            y.train_loss
        );
        let rel = (x.val_loss - y.val_loss).abs() / x.val_loss.abs();
        assert!(
            rel < 1e-4,
            "validation loss {} vs {}",
            x.val_loss,
            y.val_loss
        );
    }
    assert!(b.profile().contains_key("device forward"));
    // One process on a GPU: the optimizer ran there, with the weights kept on the device.
    assert!(b.profile().contains_key("device optimizer"));
    // The weights after two steps (with a mask update between) agree to rounding.
    let (wa, wb) = (weights_of(&cpu), weights_of(&gpu));
    for (name, ta) in wa.iter() {
        let (x, y) = (
            ta.as_f32().unwrap(),
            wb.get(name).unwrap().as_f32().unwrap(),
        );
        let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(d <= 1e-4 * scale, "{name}: {d} of {scale}");
    }
    // Two ranks (threads) on emulated GPUs with one sample each take the same steps: the loss
    // sums of the device's loss kernels are all-reduced between its sums and its gradient.
    let two = t.path().join("two");
    let hist = train_on_ranks(&t.path().join("ds"), &m, &two, small(dev), 2);
    for (x, y) in ha.iter().zip(&hist) {
        assert!((x.train_loss - y.train_loss).abs() < 1e-5, "{x:?} vs {y:?}");
    }
    let w2 = weights_of(&two);
    for (name, ta) in wa.iter() {
        let (x, y) = (
            ta.as_f32().unwrap(),
            w2.get(name).unwrap().as_f32().unwrap(),
        );
        let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(d <= 1e-4 * scale, "two ranks, {name}: {d} of {scale}");
    }
    drop(b);
    let e = Trainer::resume(&gpu, 1)
        .err()
        .expect("a CUDA run resumed without a device");
    let msg = e.to_string();
    assert!(
        msg.contains("--device cuda") && msg.contains("--emulate"),
        "{msg}"
    );
}
