//! `e2enc train`: trains an E2ENet on an nnU-Net raw dataset folder with dynamic sparse DSFF.
//!
//! Argument handling, the progress bar and Ctrl-C live here; the training itself is
//! `e2enc_train::trainer`. Ctrl-C sets a flag that the trainer polls between
//! iterations: it then writes a checkpoint and the command exits with status 130, so
//! `--resume` continues where it stopped.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use e2enc_codegen::target::Target;
use e2enc_train::exec::{Backend, ConvMath};
use e2enc_train::trainer::{Outcome, TrainOptions, Trainer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::util::parse_patch;

/// Train an E2ENet with dynamic sparse DSFF on an nnU-Net raw dataset
///
/// DATASET is an nnU-Net raw folder: dataset.json, imagesTr/CASE_0000.nii.gz (one file per
/// channel: _0000, _0001, ...), labelsTr/CASE.nii.gz. The command plans the preprocessing (target
/// spacing, normalisation), preprocesses every case, and trains with the E2ENet recipe: Dice + CE
/// with deep supervision, SGD Nesterov (momentum 0.99, weight decay 3e-5, poly lr), gradient
/// clipping at 12, nnU-Net augmentation, and DSFF masks pruned and regrown every
/// --update-frequency iterations at constant density.
///
/// Every epoch OUT/checkpoint/ is replaced atomically (model.json, weights, masks, optimizer and
/// RNG state) and OUT/training.png / training.json are updated. OUT/checkpoint/model.json is a
/// model: compile it with `e2enc compile OUT/checkpoint/model.json -o bundle` and segment with
/// `e2enc segment bundle image.nii.gz -o labels.nii.gz`.
///
/// Data parallel: start one process per rank with MPI (an e2enc built with `--features mpi`).
/// --batch is the global batch, split evenly over the ranks; each rank draws its own patches,
/// gradients are summed over the ranks, and only rank 0 writes OUT. Every rank needs the dataset
/// and OUT at the same path (a shared file system across machines). `kill -USR1` to mpirun (or
/// Slurm's --signal=USR1@120) stops all ranks at the same iteration with a checkpoint; a rank
/// that fails or is killed ends the job, and --resume continues from the last checkpoint with any
/// number of ranks that divides the batch. With --device cuda every rank runs on its own GPU
/// (local rank r on cuda:N uses GPU N + r, or the only GPU CUDA_VISIBLE_DEVICES shows it) and
/// NCCL sums the gradients in the GPUs' memory: `pip install nvidia-nccl-cu12` (or set
/// E2ENC_NCCL to a libnccl.so.2).
///
/// Examples:
///   e2enc train data/Task04_Hippocampus -o runs/hippo --epochs 100
///   e2enc train data/mine -o runs/mine --model my.json --density 0.1 --batch 2
///   e2enc train data/mine -o runs/mine --resume        (after Ctrl-C or a crash)
///   mpirun -n 4 e2enc train data/mine -o runs/mine --batch 8 --threads 8
///   mpirun -n 2 e2enc train data/mine -o runs/mine --batch 4 --device cuda   (2 GPUs, NCCL)
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// nnU-Net raw dataset folder.
    pub dataset: PathBuf,
    /// Output folder (checkpoint/, training.png, training.json).
    #[arg(short, long)]
    pub out: PathBuf,
    /// A model.json to start from (its widths, pools, patch; its weights and masks when it names
    /// them). Default: a small E2ENet sized for the dataset (width 8, 4 pools, patch from --patch).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Continue the run in OUT from its checkpoint (same options are taken from the checkpoint).
    #[arg(long)]
    pub resume: bool,
    /// Epochs (the poly learning-rate schedule spans them).
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Training iterations (batches) per epoch.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Validation batches per epoch (pseudo-Dice over patches, as nnU-Net reports it).
    #[arg(long, default_value_t = 5)]
    pub val_iters: usize,
    /// Patches per batch (over all ranks of a data-parallel run).
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Patch size D,H,W (network axes) when no --model gives one.
    #[arg(long, value_parser = parse_patch)]
    pub patch: Option<[usize; 3]>,
    /// DSFF density of the fusion convs and transposed convs.
    #[arg(long, default_value_t = 0.2)]
    pub density: f64,
    /// Prune and regrow DSFF kernels every this many iterations (0: static masks).
    #[arg(long, default_value_t = 100)]
    pub update_frequency: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Seed of every random choice (init, masks, sampling, augmentation, regrowth).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores; under an MPI launcher, the cores this rank is bound
    /// to, or all cores shared among the ranks on this machine when they are not bound).
    #[arg(long, value_parser = crate::cmd::parse_threads)]
    pub threads: Option<usize>,
    /// Turn data augmentation off.
    #[arg(long)]
    pub no_augment: bool,
    /// Stop (with a checkpoint) after this many minutes, whatever the epoch.
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// Threads that sample and augment batches ahead of the step (0: the step makes its own).
    /// Batches are the same for any count; `--profile` shows how long steps waited for data.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub data_workers: usize,
    /// MiB per all-reduce bucket of the gradients in a data-parallel run (default 16). With
    /// more gradients than one bucket, each bucket is all-reduced as soon as the backward pass
    /// has finished its gradients, while the pass goes on: on CPU ranks on a thread, on GPU
    /// ranks by NCCL on a second CUDA stream (a bucket holds whole gradients, so a larger
    /// gradient is a bucket of its own). The sums do not depend on the size.
    #[arg(long, value_name = "MIB", default_value_t = 16.0)]
    pub bucket_mib: f64,
    /// Print at the end the time spent per op kind (forward and backward kernels), waiting for
    /// data and in all-reduces; on a GPU also the device time per kind of kernel (CUDA events
    /// around every launch); a step's peak memory (planned and measured) and the process's
    /// peak resident memory; with several ranks, the communication per step.
    #[arg(long)]
    pub profile: bool,
    /// Target of the training kernels, generated from the training graph and compiled with $CC
    /// (default cc) at start: `native` (the widest this CPU runs), `x86-avx2`, `x86-avx512`, or
    /// `portable` (plain C, no intrinsics). Training runs here, so the target must be one this
    /// machine runs. With --device cuda or --emulate: `cuda-sm80` (the default) or `cuda-sm90`.
    /// A resumed run continues on the target it was trained on unless this is given.
    #[arg(long, value_name = "T")]
    pub target: Option<Target>,
    /// Where the steps run: `cpu`, or an NVIDIA GPU (`cuda` = `cuda:0`, `cuda:N`): the CUDA
    /// training kernels, compiled with NVRTC for the GPU at start, a step's values in one
    /// device allocation planned like the CPU's memory, the loss and the optimizer there too
    /// (the weights stay on the GPU; DSFF prune-and-regrow is decided on the host from the
    /// kernels' norms, which come back). Several MPI ranks: one GPU each, gradients summed by
    /// NCCL on the GPUs.
    /// Needs a build with the `cuda` feature (the default) and NVRTC.
    #[arg(long, value_name = "cpu|cuda|cuda:N", value_parser = super::parse_device, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Run the GPU path (--device cuda's kernels and step) on this CPU's host emulation of a
    /// GPU instead: very slow; for checking GPU training on a machine without one, on a small
    /// model and patch.
    #[arg(long)]
    pub emulate: bool,
    /// GPU training only (--device cuda or --emulate): run the stride-1 1x3x3 convolutions
    /// (forward pass, data and weight gradients) on tensor cores instead of f32 CUDA cores,
    /// with f32 sums: `tf32` rounds their inputs to 10-bit mantissas (PyTorch's default for
    /// cuDNN convs; outputs about 1e-3 from f32), `bf16` to 7-bit ones (twice TF32's rate).
    /// Weights, gradients, norms, the loss and the optimizer stay f32 (f32 master weights;
    /// bf16 keeps f32's exponent range, so no loss scaling). With --precision bf16 as well,
    /// that is bf16 mixed precision. A resumed run keeps the math it started with.
    #[arg(long, value_name = "tf32|bf16")]
    pub tensor_cores: Option<ConvMath>,
    /// Precision of the values the backward pass reads back from the forward pass (mostly
    /// the convolutions' outputs): `f32` (the default), or `bf16`: rounded to bfloat16 when
    /// computed (the forward pass reads them rounded too) and stored packed until the backward
    /// pass, which about halves what a step keeps (the AMOS-CT recipe at batch 2: a planned
    /// 8.9 GiB instead of 12.1; recomputed values are shared over 5 backward ops, not 20). Every
    /// op still computes in f32; weights, gradients and momentum stay f32. A resumed run keeps
    /// the precision it was started with.
    #[arg(long, value_name = "f32|bf16")]
    pub precision: Option<e2enc_train::exec::Saved>,
    /// Retired: the built-in Rust kernels are gone (`c` is still accepted); see --target.
    #[arg(long, hide = true, value_name = "c")]
    pub kernels: Option<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the Ctrl-C handler (a second Ctrl-C kills the process as usual).
pub fn install_sigint() {
    extern "C" fn second(_: libc::c_int) {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
    }
    extern "C" fn first(s: libc::c_int) {
        on_sigint(s);
        // SAFETY: re-registering a handler is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, second as *const () as libc::sighandler_t);
        }
    }
    // SAFETY: installing handlers that only store to an atomic (and re-register).
    unsafe {
        libc::signal(libc::SIGINT, first as *const () as libc::sighandler_t);
        // mpirun forwards SIGUSR1 to every rank (and Slurm's --signal sends it): a clean stop.
        libc::signal(libc::SIGUSR1, on_sigint as *const () as libc::sighandler_t);
    }
}

/// The default --threads of a rank: the cores this process may run on, shared with the other
/// ranks on this machine when the launcher did not bind the ranks to their own cores (every rank
/// sees every core: `mpirun --bind-to none`), so that ranks do not oversubscribe the machine.
fn rank_threads(size: usize) -> usize {
    let mine = crate::cmd::default_threads();
    if size < 2 {
        return mine;
    }
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let local = e2enc_train::dist::launcher_local_size();
    if online > 0 && mine == online as usize {
        (mine / local).max(1)
    } else {
        mine
    }
}

/// Rank 0 of a job of several ranks: SIGTERM, which is how mpirun (or Slurm) ends the ranks when
/// one of them failed or the job was cancelled, prints where the last checkpoint is before the
/// signal ends the process. (The checkpoint is replaced atomically, so a rank ended while
/// writing it leaves the previous one.)
fn install_sigterm_note(out: &std::path::Path) {
    // (note with a checkpoint, note without one, the checkpoint's state file as a C path)
    static NOTE: std::sync::OnceLock<(Vec<u8>, Vec<u8>, std::ffi::CString)> =
        std::sync::OnceLock::new();
    let state = out.join(e2enc_train::checkpoint::DIR).join("state.json");
    let Ok(state) = std::ffi::CString::new(state.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let _ = NOTE.set((
        format!(
            "e2enc train: rank 0 ended from outside (another rank failed, or the job was \
             cancelled); the last checkpoint in {} resumes with --resume, with any number of \
             ranks that divides --batch\n",
            out.display()
        )
        .into_bytes(),
        b"e2enc train: rank 0 ended from outside (another rank failed, or the job was \
          cancelled) before the first checkpoint\n"
            .to_vec(),
        state,
    ));
    extern "C" fn on_term(_: libc::c_int) {
        // SAFETY: async-signal-safe calls only (access, write, signal, raise); NOTE was set
        // before the handler was installed and is never changed.
        unsafe {
            if let Some((with, without, state)) = NOTE.get() {
                let m = if libc::access(state.as_ptr(), libc::F_OK) == 0 {
                    with
                } else {
                    without
                };
                libc::write(2, m.as_ptr().cast(), m.len());
            }
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::raise(libc::SIGTERM);
        }
    }
    // SAFETY: installing a handler that makes only async-signal-safe calls.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
}

/// Whether Ctrl-C was pressed.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The backend of `--target` (and the retired `--kernels`); `None` when not given.
fn backend(a: &Args) -> Result<Option<Backend>> {
    match a.kernels.as_deref() {
        None | Some("c") => {}
        Some("rust") => bail!(
            "--kernels rust: the built-in Rust training kernels were retired; training runs on \
             kernels generated for --target (`portable` needs no SIMD instructions, only a C \
             compiler)"
        ),
        Some(k) => bail!("--kernels {k}: unknown (the option is retired; see --target)"),
    }
    let gpu = match a.device {
        super::DeviceArg::Cuda(n) if a.emulate => bail!(
            "--device cuda:{n} and --emulate: pick one (--emulate runs the GPU path on this CPU)"
        ),
        super::DeviceArg::Cuda(n) => Some(Some(n)),
        super::DeviceArg::Cpu if a.emulate => Some(None),
        super::DeviceArg::Cpu => None,
    };
    if let Some(gpu) = gpu {
        let target = match a.target {
            None => Target::CudaSm80,
            Some(t) if t.is_cuda() => t,
            Some(t) => bail!(
                "--target {t} is a CPU target; GPU training takes cuda-sm80 (the default) or \
                 cuda-sm90"
            ),
        };
        return Ok(Some(Backend::Device { target, gpu }));
    }
    let Some(t) = a.target else {
        return Ok(None);
    };
    if t.is_cuda() {
        bail!(
            "--target {t}: CUDA kernels run on a GPU: add --device cuda (or --emulate to run \
             them on this CPU's host emulation)"
        );
    }
    if !t.host_supports() {
        bail!(
            "--target {t}: training runs on this machine, which cannot run that target; pass \
             --target native (here: {}) or --target portable",
            Target::native()
        );
    }
    Ok(Some(Backend::Generated(t)))
}

/// `--tensor-cores`' math, refused off the GPU path.
fn conv_math(a: &Args) -> Result<ConvMath> {
    let Some(m) = a.tensor_cores else {
        return Ok(ConvMath::F32);
    };
    if m == ConvMath::F32 {
        bail!("--tensor-cores takes tf32 or bf16 (leave it out for f32 convolutions)");
    }
    if !matches!(backend(a)?, Some(Backend::Device { .. })) {
        bail!(
            "--tensor-cores {m} is for GPU training: add --device cuda, or --emulate to check \
             it on this CPU"
        );
    }
    Ok(m)
}

pub fn options(a: &Args) -> Result<TrainOptions> {
    if a.batch == 0 || a.iters == 0 || a.epochs == 0 {
        bail!("--batch, --iters and --epochs must be at least 1");
    }
    if !(a.density > 0.0 && a.density <= 1.0) {
        bail!("--density must be in (0, 1], got {}", a.density);
    }
    Ok(TrainOptions {
        epochs: a.epochs,
        iters_per_epoch: a.iters,
        val_iters: a.val_iters,
        batch: a.batch,
        patch: a.patch,
        density: a.density,
        update_frequency: a.update_frequency,
        lr: a.lr,
        seed: a.seed,
        augment: !a.no_augment,
        kernels: backend(a)?.unwrap_or_default(),
        target: None,
        precision: a.precision.unwrap_or_default(),
        conv_math: conv_math(a)?,
    })
}

/// A progress bar on a terminal, nothing otherwise.
pub fn bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

pub fn main(a: Args) -> Result<ExitCode> {
    install_sigint();
    let comm = e2enc_train::dist::from_environment()?;
    let (rank, size) = (comm.rank(), comm.size());
    let threads = a.threads.unwrap_or_else(|| rank_threads(size));
    if size == 1 {
        return train(&a, threads, comm);
    }
    // Several ranks: a rank that fails must take the others down with it (they would wait in
    // their next collective forever), so errors and panics end in MPI_Abort.
    let c = comm.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        eprintln!("e2enc train: rank {rank} of {size} panicked; ending every rank");
        c.abort(101);
    }));
    if rank == 0 {
        install_sigterm_note(&a.out);
        eprintln!(
            "data parallel: {} (global batch {}, {} per rank; {threads} thread(s) on rank 0)",
            comm.engine(),
            a.batch,
            a.batch / size.max(1)
        );
    }
    match train(&a, threads, comm.clone()) {
        Ok(code) => {
            // The hook's handle goes with it, so that dropping `comm` (the last handle; the
            // trainer's went with it) finalizes MPI: a rank that exits without MPI_Finalize
            // counts as failed for mpirun.
            drop(std::panic::take_hook());
            drop(comm);
            Ok(code)
        }
        Err(e) => {
            eprintln!("error: rank {rank} of {size}: {e:#}");
            let state = a.out.join(e2enc_train::checkpoint::DIR).join("state.json");
            if state.is_file() {
                eprintln!(
                    "e2enc train: ending every rank (the last checkpoint in {} resumes with \
                     --resume)",
                    a.out.display()
                );
            } else {
                eprintln!("e2enc train: ending every rank (no checkpoint was written)");
            }
            comm.abort(1)
        }
    }
}

fn train(
    a: &Args,
    threads: usize,
    comm: std::sync::Arc<dyn e2enc_train::dist::Collective>,
) -> Result<ExitCode> {
    let rank = comm.rank();
    if !(a.bucket_mib.is_finite() && a.bucket_mib > 0.0 && a.bucket_mib <= 4096.0) {
        bail!("--bucket-mib {} must be in (0, 4096]", a.bucket_mib);
    }
    let mut trainer = if a.resume {
        let t = Trainer::resume_on(&a.out, threads, backend(a)?, comm)
            .with_context(|| format!("resuming from {}", a.out.display()))?;
        let was = t.options().precision;
        if let Some(p) = a.precision.filter(|&p| p != was) {
            bail!(
                "--precision {p}: the run in {} was trained with --precision {was} and continues \
                 with it (leave --precision out; start a new run to change it)",
                a.out.display()
            );
        }
        let math = t.options().conv_math;
        if let Some(m) = a.tensor_cores.filter(|&m| m != math) {
            bail!(
                "--tensor-cores {m}: the run in {} was trained with {math} convolutions and \
                 continues with them (leave --tensor-cores out; start a new run to change it)",
                a.out.display()
            );
        }
        t
    } else {
        let opts = options(a)?;
        Trainer::create_on(
            &a.dataset,
            a.model.as_deref(),
            &a.out,
            opts,
            threads,
            |msg| {
                if rank == 0 {
                    eprintln!("{msg}")
                }
            },
            comm,
        )?
    };
    trainer.set_data_workers(a.data_workers);
    trainer.set_gradient_bucket((a.bucket_mib * (1u64 << 18) as f64) as usize);
    if a.profile {
        // On a GPU: each launch between two CUDA events, so the table below says where the
        // device's time goes.
        trainer.time_device_kernels()?;
    }
    let code = run(
        &mut trainer,
        a.time_limit.map(|m| Duration::from_secs_f64(m * 60.0)),
    )?;
    if a.profile && rank == 0 {
        print_profile(&trainer.profile());
        if let Some(k) = trainer.device_kernel_profile()? {
            eprintln!(
                "device time per kind of kernel ({}; launches run one after another, so the \
                 total is the steps' kernel time):",
                if a.emulate {
                    "the host emulation's wall time per launch"
                } else {
                    "CUDA events around each launch"
                }
            );
            print_table("kernel", k.iter().map(|(n, s)| (n.as_str(), *s)));
        }
        print_memory(&trainer);
        print_communication(&trainer);
    }
    Ok(code)
}

/// The per-op time table of `--profile`, largest first.
pub fn print_profile(p: &std::collections::BTreeMap<&'static str, f64>) {
    print_table("op", p.iter().map(|(op, s)| (*op, *s)));
}

/// A table of `(what, seconds)` rows under the heading `what`, largest first, with each row's
/// share and the total.
fn print_table<'a>(what: &str, rows: impl Iterator<Item = (&'a str, f64)>) {
    let mut rows: Vec<(&str, f64)> = rows.collect();
    let total: f64 = rows.iter().map(|r| r.1).sum();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let w = rows
        .iter()
        .map(|(op, _)| op.len())
        .max()
        .unwrap_or(0)
        .max(26);
    eprintln!("{what:<w$} {:>9} {:>7}", "seconds", "share");
    for (op, s) in rows {
        eprintln!("{op:<w$} {s:>9.2} {:>6.1}%", 100.0 * s / total.max(1e-12));
    }
    eprintln!("{:<w$} {total:>9.2}", "total");
}

/// The training step's planned and measured peak of values, and the process's peak resident
/// memory (Linux's VmHWM), for `--profile`.
fn print_memory(trainer: &Trainer) {
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    let (planned, measured) = trainer.step_memory();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map(|kb| format!("; process peak resident {:.2} GiB", gib(kb * 1024)))
        .unwrap_or_default();
    let math = match trainer.options().kernels {
        Backend::Device { .. } => format!("; convolutions in {}", trainer.options().conv_math),
        _ => String::new(),
    };
    let device = trainer
        .device_memory()
        .map(|b| {
            format!(
                "; the device holds {:.3} GiB in all (values, weights, momentum, tables, scratch)",
                gib(b)
            )
        })
        .unwrap_or_default();
    eprintln!(
        "memory: a step's values peak at {:.3} GiB (planned {:.3} GiB; values kept for the \
         backward pass in {}{math}){device}{hwm}",
        gib(measured),
        gib(planned),
        trainer.options().precision
    );
}

/// The per-step communication of a data-parallel run, for `--profile` (nothing for one process).
fn print_communication(trainer: &Trainer) {
    let c = trainer.communication();
    let (_, size) = trainer.rank();
    if size < 2 || c.steps == 0 {
        return;
    }
    let p = trainer.profile();
    let secs = |k: &str| p.get(k).copied().unwrap_or(0.0) / c.steps as f64;
    // With more than one bucket the gradients' all-reduce runs beside the backward pass (on
    // the host a thread, on GPUs a second stream): the wait after it is what it cost.
    let overlap = p.contains_key("wait for the gradients after the backward pass");
    let mut grad_secs = secs("all-reduce: gradients");
    let wait = if c.on_device && overlap {
        grad_secs = secs("wait for the gradients after the backward pass");
        format!(
            "summed in the devices' memory by {}, each bucket as soon as the backward pass had \
             finished it, beside the rest of the pass: the time is the step's wait for the sums \
             after the pass, the slowest rank included",
            trainer.gradient_engine().unwrap_or_default()
        )
    } else if c.on_device {
        format!(
            "summed in the devices' memory after the backward pass by {} (one bucket), the \
             wait for the slowest rank included",
            trainer.gradient_engine().unwrap_or_default()
        )
    } else if overlap {
        format!(
            "on a thread beside the backward pass, which then waited {:.4} s for them",
            secs("wait for the gradients after the backward pass")
        )
    } else {
        format!(
            "after the backward pass and a wait for the slowest rank of {:.4} s",
            secs("wait for the slowest rank")
        )
    };
    eprintln!(
        "communication per step ({} steps, {}): gradients {:.2} MB in {} all-reduce(s), {:.4} s \
         ({wait}); loss sums {:.4} s; stop flag {:.4} s",
        c.steps,
        trainer.engine(),
        c.gradient_bytes as f64 / 1e6,
        c.gradient_calls,
        grad_secs,
        secs("all-reduce: loss sums"),
        secs("all-reduce: stop flag"),
    );
}

/// Runs `trainer` to the end (or the time limit, or Ctrl-C) with a progress bar per epoch.
pub fn run(trainer: &mut Trainer, limit: Option<Duration>) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut pb: Option<(usize, ProgressBar)> = None;
    // Only rank 0 of a data-parallel run reports.
    let quiet = trainer.rank().0 != 0;
    let outcome = trainer.train(
        &mut |ev| {
            use e2enc_train::trainer::Event;
            if quiet {
                return;
            }
            match ev {
                Event::Iter {
                    epoch,
                    iter,
                    iters,
                    loss,
                    lr,
                } => {
                    if pb.as_ref().map(|p| p.0) != Some(epoch) {
                        if let Some((_, old)) = pb.take() {
                            old.finish_and_clear();
                        }
                        let b = bar(iters as u64);
                        b.set_prefix(format!("epoch {epoch}"));
                        pb = Some((epoch, b));
                    }
                    if let Some((_, b)) = &pb {
                        b.set_position(iter as u64 + 1);
                        b.set_message(format!("loss {loss:.4} lr {lr:.5}"));
                    }
                }
                Event::Epoch(line) => {
                    if let Some((_, b)) = pb.take() {
                        b.finish_and_clear();
                    }
                    eprintln!("{line}");
                }
                Event::Note(line) => eprintln!("{line}"),
            }
        },
        &mut || stop_requested() || limit.is_some_and(|l| started.elapsed() >= l),
    )?;
    if let Some((_, b)) = pb.take() {
        b.finish_and_clear();
    }
    match outcome {
        Outcome::Finished => Ok(ExitCode::SUCCESS),
        Outcome::Stopped if quiet => Ok(ExitCode::SUCCESS),
        Outcome::Stopped if stop_requested() => {
            eprintln!(
                "interrupted: checkpoint saved in {}; continue with --resume",
                trainer.out().display()
            );
            Ok(ExitCode::from(130))
        }
        Outcome::Stopped => {
            eprintln!(
                "time limit reached: checkpoint saved in {}; continue with --resume",
                trainer.out().display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
