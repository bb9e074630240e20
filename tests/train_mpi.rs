//! Data-parallel `e2enc train` under a real `mpirun` (Open MPI on localhost, the `mpi` feature):
//! two ranks with one sample each end with the weights of one process with a batch of two and the
//! same seed (to float rounding; the gradients all-reduced in small buckets beside the backward
//! pass) and the same DSFF masks (every rank checks after each epoch that
//! its weights and masks equal rank 0's, so a finished two-rank run also shows that the ranks
//! agreed); only rank 0 speaks; a rank killed from outside ends the whole job with a message and
//! leaves a checkpoint that one process resumes, and two ranks resume that one's.

#![cfg(feature = "mpi")]

mod common;
use common::text;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2enc_ir::Weights;

#[path = "../train/tests/synthetic/mod.rs"]
mod synthetic;

/// `mpirun -n RANKS e2enc ARGS` on this machine, whatever its core count, as root too (CI), and
/// without the single-copy shared-memory transport that containers often forbid.
fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--oversubscribe",
        "--bind-to",
        "none",
        "-n",
        &ranks.to_string(),
    ])
    .arg(env!("CARGO_BIN_EXE_e2enc"))
    .args(args)
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    c
}

fn train_args<'a>(ds: &'a str, model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        ds,
        "-o",
        out,
        "--model",
        model,
        "--batch",
        "2",
        "--density",
        "0.5",
        "--update-frequency",
        "3",
        "--val-iters",
        "1",
        "--threads",
        "1",
        "--seed",
        "11",
    ];
    v.extend_from_slice(extra);
    v
}

fn weights(run: &Path, file: &str) -> Weights {
    Weights::load(&run.join("checkpoint").join(file)).unwrap()
}

/// Makes the synthetic dataset and model in `dir` and trains one process on them (batch 2) into
/// `dir/one` with the `extra` options; returns the dataset's and the model's paths and the run.
fn one_process_run(dir: &Path, extra: &[&str]) -> (String, String, std::path::PathBuf) {
    let ds = dir.join("ds");
    synthetic::dataset(&ds);
    let m = synthetic::model(dir);
    let (ds, m) = (
        ds.to_str().unwrap().to_string(),
        m.to_str().unwrap().to_string(),
    );
    let one = dir.join("one");
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(train_args(&ds, &m, one.to_str().unwrap(), extra))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    (ds, m, one)
}

/// Runs `one` and `two` ended with the same weights (to float rounding) and the same masks.
fn same_training(one: &Path, two: &Path) {
    let (wa, wb) = (
        weights(one, "weights.safetensors"),
        weights(two, "weights.safetensors"),
    );
    let mut worst = 0.0f64;
    for (name, ta) in wa.iter() {
        let x = ta.as_f32().unwrap();
        let y = wb.get(name).unwrap().as_f32().unwrap();
        // On the tensor's own scale, but at least 0.01: the conv biases before an instance norm
        // have a gradient that is zero but for rounding, so they hold ~1e-10 of noise that the
        // summation order changes and momentum carries.
        let scale = x.iter().fold(1e-2f32, |a, v| a.max(v.abs())) as f64;
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs() as f64 / scale);
        }
    }
    eprintln!("mpirun -n 2 vs one process: largest weight difference {worst:.2e} (relative)");
    assert!(worst < 1e-4, "{worst}");
    let (ma, mb) = (
        weights(one, "masks.safetensors"),
        weights(two, "masks.safetensors"),
    );
    assert_eq!(ma.len(), mb.len());
    for (name, t) in ma.iter() {
        assert_eq!(t.as_f32(), mb.get(name).unwrap().as_f32(), "mask {name}");
    }
}

/// GPU ranks' path on the host emulation (`--emulate`), under a real `mpirun`: each rank keeps
/// its weights and optimizer on its (emulated) device, the gradients are summed there by the
/// device reducer (NCCL on GPUs; through MPI and the host for the emulation) in 2 KiB buckets,
/// each as soon as the backward pass has finished it, DSFF updates are
/// decided on rank 0 from the device's kernel norms and zeroed on every rank's device; the run
/// ends where one emulated process with batch 2 ends. On this GPU-less machine `--device cuda`
/// ranks refuse with the reason, and the job ends.
#[test]
fn two_mpi_ranks_on_emulated_gpus_keep_the_weights_on_their_devices() {
    let t = tempfile::tempdir().unwrap();
    // One DSFF update, at iteration 3 (--update-frequency 3).
    let short = ["--epochs", "1", "--iters", "4", "--emulate"];
    let (ds, m, one) = one_process_run(t.path(), &short);
    let (ds, m) = (ds.as_str(), m.as_str());
    let two = t.path().join("two");
    let mut args = short.to_vec();
    // Buckets of 2 KiB: each is summed as soon as the backward pass has finished it.
    args.extend(["--profile", "--bucket-mib", "0.002"]);
    let o = mpirun(2, &train_args(ds, m, two.to_str().unwrap(), &args))
        .output()
        .unwrap();
    let s = text(&o);
    assert!(o.status.success(), "{s}");
    assert!(
        s.contains("summed in the devices' memory")
            && s.contains("through the host")
            && s.contains("beside the rest of the pass"),
        "{s}"
    );
    same_training(&one, &two);

    if std::path::Path::new("/dev/nvidia0").exists() {
        return;
    }
    let gpu = t.path().join("gpu");
    let mut args = short.to_vec();
    args.retain(|a| *a != "--emulate");
    args.extend(["--device", "cuda"]);
    let o = mpirun(2, &train_args(ds, m, gpu.to_str().unwrap(), &args))
        .output()
        .unwrap();
    let s = text(&o);
    assert!(!o.status.success(), "{s}");
    assert!(
        s.contains("no CUDA driver") && !s.contains("panicked"),
        "{s}"
    );
    assert!(s.contains("no checkpoint was written"), "{s}");
}

#[test]
fn two_mpi_ranks_train_like_one_process_and_a_killed_rank_ends_the_job_resumably() {
    let t = tempfile::tempdir().unwrap();
    let short = ["--epochs", "2", "--iters", "4"];
    // One process, batch 2.
    let (ds, m, one) = one_process_run(t.path(), &short);
    let (ds, m) = (ds.as_str(), m.as_str());

    // Two ranks, one sample each; buckets of 2 KiB, so that the gradients' all-reduce runs in
    // several buckets on a thread beside the backward pass (the killed run below all-reduces its
    // one bucket after it).
    let two = t.path().join("two");
    let mut small = short.to_vec();
    small.extend(["--bucket-mib", "0.002", "--profile"]);
    let o = mpirun(2, &train_args(ds, m, two.to_str().unwrap(), &small))
        .output()
        .unwrap();
    let s = text(&o);
    assert!(o.status.success(), "{s}");
    assert!(s.contains("2 ranks"), "the run names its engine: {s}");
    assert_eq!(s.matches("epoch   1").count(), 1, "only rank 0 logs: {s}");
    assert!(s.contains("on a thread beside the backward pass"), "{s}");

    same_training(&one, &two);

    // A long two-rank run; rank 1 is killed after the first checkpoint.
    let long = t.path().join("long");
    let child = mpirun(
        2,
        &train_args(
            ds,
            m,
            long.to_str().unwrap(),
            &["--epochs", "1000", "--iters", "2"],
        ),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let state = long.join("checkpoint/state.json");
    let t0 = Instant::now();
    while !state.is_file() {
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rank1 = rank_pid(child.id(), 1).expect("rank 1's process");
    // SAFETY: killing a process this test started (through mpirun).
    unsafe {
        libc::kill(rank1, libc::SIGKILL);
    }
    let t1 = Instant::now();
    let o = child.wait_with_output().unwrap();
    let s = text(&o);
    assert!(!o.status.success(), "{s}");
    assert!(
        t1.elapsed() < Duration::from_secs(120),
        "the job did not end: {s}"
    );
    assert!(s.contains("signal 9") || s.contains("Killed"), "{s}");
    assert!(
        s.contains("rank 0 ended from outside") && s.contains("--resume"),
        "{s}"
    );

    // One process resumes the two-rank run's checkpoint (the batch stays 2).
    let before = std::fs::read_to_string(&state).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args([
            "train",
            ds,
            "-o",
            long.to_str().unwrap(),
            "--resume",
            "--time-limit",
            "0.05",
        ])
        .output()
        .unwrap();
    let s = text(&o);
    assert!(o.status.success(), "{s}");
    assert_ne!(before, std::fs::read_to_string(&state).unwrap(), "{s}");

    // And two ranks resume that one process's checkpoint; a time limit on one rank's clock stops
    // both at the same iteration, with a checkpoint.
    let before = std::fs::read_to_string(&state).unwrap();
    let o = mpirun(
        2,
        &[
            "train",
            ds,
            "-o",
            long.to_str().unwrap(),
            "--resume",
            "--time-limit",
            "0.05",
        ],
    )
    .output()
    .unwrap();
    let s = text(&o);
    assert!(o.status.success(), "{s}");
    assert!(s.contains("time limit reached"), "{s}");
    assert_ne!(before, std::fs::read_to_string(&state).unwrap(), "{s}");
}

/// The pid of the process of MPI rank `rank` under the launcher `launcher` (a descendant whose
/// environment says `OMPI_COMM_WORLD_RANK=rank`).
fn rank_pid(launcher: u32, rank: usize) -> Option<libc::pid_t> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
                continue;
            };
            if !descends_from(pid, launcher) {
                continue;
            }
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn descends_from(mut pid: libc::pid_t, ancestor: u32) -> bool {
    for _ in 0..8 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            return false;
        };
        if ppid as u32 == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}
