//! The training loop end to end on a tiny synthetic dataset: it learns (the loss falls), the DSFF
//! density stays constant with dead kernels exactly zero in the weights and the momentum, the
//! checkpoint is a loadable model, and a run stopped in the middle of an epoch and resumed ends
//! bit-identical to an uninterrupted one.

use std::path::Path;

use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_ir::Weights;
use e2enc_segment::nifti::{write_f32, write_labels, Header};
use e2enc_train::exec::Backend;
use e2enc_train::trainer::{Outcome, TrainOptions, Trainer};

const DIMS: [usize; 3] = [20, 20, 12];

/// Two cases: a bright box (label 1) and a dimmer ball (label 2) on a noisy background.
fn dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("imagesTr")).unwrap();
    std::fs::create_dir_all(dir.join("labelsTr")).unwrap();
    std::fs::write(
        dir.join("dataset.json"),
        r#"{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "box": 1, "ball": 2},
            "numTraining": 2, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    for (case, shift) in [("a", 0usize), ("b", 3)] {
        let n: usize = DIMS.iter().product();
        let mut img = vec![0f32; n];
        let mut lab = vec![0u16; n];
        for z in 0..DIMS[2] {
            for y in 0..DIMS[1] {
                for x in 0..DIMS[0] {
                    let i = x + DIMS[0] * (y + DIMS[1] * z);
                    let noise = ((i * 7919 + shift * 31) % 97) as f32 / 97.0 * 0.3;
                    img[i] = 1.0 + noise;
                    if (3 + shift..9 + shift).contains(&x) && (4..10).contains(&y) && z >= 3 {
                        img[i] = 3.0 + noise;
                        lab[i] = 1;
                    }
                    let d2 =
                        (x as i64 - 14).pow(2) + (y as i64 - 14).pow(2) + (z as i64 - 6).pow(2);
                    if d2 <= 9 {
                        img[i] = 2.0 + noise;
                        lab[i] = 2;
                    }
                }
            }
        }
        let h = Header::new(DIMS, [1.0, 1.0, 1.5]);
        write_f32(
            &dir.join(format!("imagesTr/{case}_0000.nii.gz")),
            &h,
            DIMS,
            &img,
        )
        .unwrap();
        write_labels(&dir.join(format!("labelsTr/{case}.nii.gz")), &h, DIMS, &lab).unwrap();
    }
}

fn model(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("model.json");
    std::fs::write(
        &p,
        r#"{"format": "e2enc-model", "version": 1, "in_channels": 1, "num_classes": 3,
            "base_width": 4, "max_width": 8, "pool_kernels": [[1, 2, 2], [2, 2, 2]],
            "patch_size": [8, 16, 16], "deep_supervision_heads": 1, "shift_groups": 3}"#,
    )
    .unwrap();
    p
}

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
