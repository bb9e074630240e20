//! The training loop: E2ENet's recipe (e2enet.md §3, §5) on the parts of this module.
//!
//! One iteration: sample a batch of patches (1/3 foreground-forced, augmented), run the training
//! graph's forward pass, the deep-supervision Dice + CE loss on labels down-sampled to each head,
//! the backward pass, gradient clipping at 12, SGD Nesterov with the epoch's poly learning rate,
//! then re-apply the DSFF masks to the weights and the momentum. Every `update_frequency`
//! iterations the masks prune their smallest-L1 live kernels (cosine-annealed fraction) and regrow
//! as many at random. Each epoch ends with a validation pass (nnU-Net's online pseudo-Dice: tp, fp
//! and fn summed over validation patches), a line of log, `training.png` / `training.json`, and a
//! checkpoint.
//!
//! Determinism: every patch (its case, origin and augmentation) comes from its own ChaCha8 stream
//! keyed by the seed, the global iteration and its index in the global batch
//! ([`dist::sample_rng`]); initialisation and DSFF regrowth come from one ChaCha8 stream whose
//! state is checkpointed; every kernel gives the same bits whatever the thread count. So
//! `--resume` continues exactly as an uninterrupted run would, and batches are the same for any
//! number of data-loading threads.
//!
//! Data parallel ([`dist`]): with N ranks, `batch` is the global batch and each rank runs
//! `batch / N` of its patches; the loss's batch sums and the weight gradients are summed over the
//! ranks, DSFF updates are decided on rank 0 and broadcast, and only rank 0 writes files. One
//! process with batch 2 and two ranks with batch 1 each take the same steps (to float rounding).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use e2enc_ir::autodiff::training_graph;
use e2enc_ir::e2enet::{build, output_name, BuildOptions, DsffConfig, Model, ModelConfig};
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::{Tensor, Weights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::augment::AugmentConfig;
use super::data::{RawDataset, TrainCase};
use super::device_exec::DeviceExecutor;
use super::dist::{self, Collective, SampleStream, Single};
use super::exec::{Backend, ConvMath, Executor, LiveMasks, Memory, Saved, StepResult};
use super::loader::{MakeBatch, Prefetch};
use super::plot::{write_training_png, EpochLog};
use super::sampler::{ClassLocations, SamplerConfig};
use super::{checkpoint, data, loss, optim, sampler, sparse};
use crate::TrainError;
use e2enc_codegen::target::Target;
use e2enc_segment::preprocess::PreprocessingConfig;
use e2enc_segment::window::argmax;

/// What the user chose (stored in the checkpoint; `--resume` reuses it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub iters_per_epoch: usize,
    pub val_iters: usize,
    /// Patches per step over all ranks (each of N ranks runs `batch / N`).
    pub batch: usize,
    /// Patch size when the model config does not fix one.
    pub patch: Option<[usize; 3]>,
    pub density: f64,
    /// Iterations between mask updates; 0 keeps the masks fixed.
    pub update_frequency: usize,
    pub lr: f64,
    pub seed: u64,
    pub augment: bool,
    /// Which kernels run the steps. Not serialized itself: [`TrainOptions::target`] records the
    /// target, so that `--resume` continues on the same one (targets agree to float rounding,
    /// not bit for bit).
    #[serde(skip)]
    pub kernels: Backend,
    /// The target the run's kernels were generated for (set by [`Trainer::create`]; `None` in
    /// checkpoints written before it was recorded).
    #[serde(default)]
    pub target: Option<String>,
    /// The precision of the values kept for the backward pass (`--precision`; f32 in
    /// checkpoints written before it existed).
    #[serde(default)]
    pub precision: Saved,
    /// What the GPU step's convolutions multiply in (`--tensor-cores`; f32 in checkpoints written
    /// before it existed). Only `--device cuda` and `--emulate` runs use it.
    #[serde(default)]
    pub conv_math: ConvMath,
}

impl TrainOptions {
    /// Most iterations of a run (epochs x iterations per epoch): 10^9, years of training.
    pub const MAX_ITERATIONS: u64 = 1_000_000_000;

    /// Checks the values against their stated limits (so a hand-edited `state.json` cannot ask
    /// for 2^64 - 1 epochs or a batch of a billion); the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let iters = (self.epochs as u64).checked_mul(self.iters_per_epoch as u64);
        if self.epochs == 0 || self.iters_per_epoch == 0 {
            return Err("`epochs` and `iters_per_epoch` must be at least 1".into());
        }
        if iters.is_none_or(|n| n > Self::MAX_ITERATIONS) {
            return Err(format!(
                "`epochs` {} x `iters_per_epoch` {} is more than the limit of {} iterations",
                self.epochs,
                self.iters_per_epoch,
                Self::MAX_ITERATIONS
            ));
        }
        if self.val_iters as u64 > Self::MAX_ITERATIONS {
            return Err(format!("`val_iters` {} is past the limit", self.val_iters));
        }
        if !(1..=1024).contains(&self.batch) {
            return Err(format!("`batch` {} must be in 1..=1024", self.batch));
        }
        if let Some(p) = self.patch {
            if p.iter().any(|&d| d == 0 || d > 1024) {
                return Err(format!("`patch` {p:?}: every axis must be in 1..=1024"));
            }
        }
        if !(self.density > 0.0 && self.density <= 1.0) {
            return Err(format!("`density` {} must be in (0, 1]", self.density));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 10.0) {
            return Err(format!("`lr` {} must be in (0, 10]", self.lr));
        }
        Ok(())
    }
}

/// Removes the temporaries of `training.json` and `training.png` that a killed run left in `out`.
fn clean_run_temps(out: &Path) {
    for f in ["training.json", "training.png"] {
        e2enc_ir::files::clean_stale_temps(&out.join(f));
    }
}

/// Progress reports for the command line.
pub enum Event {
    Iter {
        epoch: usize,
        iter: usize,
        iters: usize,
        loss: f64,
        lr: f64,
    },
    Epoch(String),
    Note(String),
}

/// How [`Trainer::train`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    /// The stop callback asked to stop; a checkpoint was written.
    Stopped,
}

/// The checkpointed scalar state.
#[derive(Serialize, Deserialize)]
struct State {
    format: String,
    dataset: PathBuf,
    options: TrainOptions,
    epoch: usize,
    iter: usize,
    loss_sum: f64,
    rng: ChaCha8Rng,
    history: Vec<EpochLog>,
    mask_updates: usize,
}

const STATE_FORMAT: &str = "e2enc-train-state-1";

/// What runs the steps: the host executor (C kernels, or the reference or emulated ones), or a
/// step kept on a device.
enum Runner {
    Host(Box<Executor>),
    Device(Box<DeviceExecutor>),
}

impl Runner {
    fn step(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
        loss: impl FnOnce(
            &BTreeMap<String, Arc<Tensor>>,
        ) -> Result<(f64, BTreeMap<String, Tensor>), TrainError>,
    ) -> Result<StepResult, TrainError> {
        match self {
            Runner::Host(e) => e.step(weights, live, inputs, loss),
            Runner::Device(d) => d.step(weights, live, inputs, loss),
        }
    }

    fn forward(
        &mut self,
        weights: &Weights,
        live: &LiveMasks,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Arc<Tensor>>, TrainError> {
        match self {
            Runner::Host(e) => e.forward(weights, live, inputs),
            Runner::Device(d) => d.forward(weights, live, inputs),
        }
    }

    fn profile(&self) -> BTreeMap<&'static str, f64> {
        match self {
            Runner::Host(e) => e.profile.clone(),
            Runner::Device(d) => d.profile.clone(),
        }
    }
}

/// A training run.
pub struct Trainer {
    out: PathBuf,
    dataset: PathBuf,
    opts: TrainOptions,
    config: ModelConfig,
    train: Arc<Vec<Case>>,
    val: Arc<Vec<Case>>,
    /// What sums the gradients a device holds over the ranks (NCCL on GPUs); made at the first
    /// step of a data-parallel run on devices. Before `exec`: dropped (an NCCL communicator
    /// destroyed) while the GPU session it runs on is still open.
    reducer: Option<Box<dyn dist::GradientReducer>>,
    exec: Runner,
    /// The device holds the weights and the momentum (a run on GPUs, or on the host emulation):
    /// the host's copies are stale until [`Trainer::sync_host`].
    resident: bool,
    /// The ranks of a data-parallel run ([`Single`] for one process).
    comm: Arc<dyn Collective>,
    /// Threads making batches ahead of the steps (0: the step makes its own).
    data_workers: usize,
    /// Floats per gradient all-reduce bucket of a data-parallel step.
    bucket: usize,
    /// Seconds outside the kernels, by what they were spent on (data wait, all-reduces).
    extra: BTreeMap<&'static str, f64>,
    /// What the gradient all-reduces of this process moved (see [`Trainer::communication`]).
    comm_stats: CommStats,
    weights: Weights,
    masks: sparse::Masks,
    sgd: optim::Sgd,
    rng: ChaCha8Rng,
    epoch: usize,
    iter: usize,
    loss_sum: f64,
    history: Vec<EpochLog>,
    mask_updates: usize,
    /// Pool factor of each output head relative to the full resolution.
    head_factors: Vec<[usize; 3]>,
    augment: AugmentConfig,
    epoch_started: Instant,
}

impl Trainer {
    /// Plans and preprocesses `dataset`, sets up the model (from `model` or a small default) and
    /// the optimizer; nothing is trained yet.
    pub fn create(
        dataset: &Path,
        model: Option<&Path>,
        out: &Path,
        opts: TrainOptions,
        threads: usize,
        note: impl Fn(&str),
    ) -> Result<Trainer, TrainError> {
        Trainer::create_on(dataset, model, out, opts, threads, note, Arc::new(Single))
    }

    /// [`Trainer::create`] as one rank of a data-parallel run over `comm` (every rank calls it
    /// with the same arguments; only rank 0 writes into `out`).
    pub fn create_on(
        dataset: &Path,
        model: Option<&Path>,
        out: &Path,
        opts: TrainOptions,
        threads: usize,
        note: impl Fn(&str),
        comm: Arc<dyn Collective>,
    ) -> Result<Trainer, TrainError> {
        let mut opts = opts;
        opts.validate().map_err(TrainError::Setup)?;
        opts.target = match opts.kernels {
            Backend::Generated(t)
            | Backend::Emulated { target: t, .. }
            | Backend::Device { target: t, .. } => Some(t.name().to_string()),
            Backend::Reference => None,
        };
        check_batch_splits(opts.batch, comm.as_ref())?;
        let ds = RawDataset::open(dataset)?;
        if comm.rank() == 0 {
            checkpoint::clean_partial(out)?;
            clean_run_temps(out);
        }
        if checkpoint::find(out).is_some() {
            return Err(TrainError::Checkpoint(format!(
                "{} already holds a training checkpoint: continue it with --resume or choose \
                 another output folder",
                out.display()
            )));
        }
        let (mut config, weights, masks) = match model {
            Some(p) => {
                let m = Model::load(p, &BuildOptions::default())?;
                (m.config.clone(), m.weights.clone(), m.masks.clone())
            }
            None => (default_config(&ds, opts.patch)?, None, None),
        };
        if let Some(p) = opts.patch {
            config.patch_size = p;
        }
        check_dataset_fits(&config, &ds)?;
        let plan = data::plan(&ds)?;
        config.preprocessing = Some(serde_json::to_value(&plan).map_err(|e| {
            TrainError::Setup(format!("cannot serialise the preprocessing plan: {e}"))
        })?);
        config.dsff = Some(DsffConfig {
            density: opts.density,
            // The released code pins the level-0 fusion convs at 0.2; a model.json that asks
            // for that keeps it, otherwise every DSFF layer gets --density.
            level0_density: config
                .dsff
                .as_ref()
                .map_or(opts.density, |d| d.level0_density),
        });
        config.weights = Some("weights.safetensors".into());
        config.masks = Some("masks.safetensors".into());
        note(&format!(
            "plan: spacing {:?} mm, patch {:?}, {} channel(s), {} classes",
            plan.target_spacing, config.patch_size, config.in_channels, config.num_classes
        ));
        let net = build(&config, &BuildOptions::default())?;
        let dsff = config.dsff.clone().expect("set above");
        let masks = masks.unwrap_or_else(|| init_masks(&net.params, &dsff, opts.seed));
        let mut weights = weights.unwrap_or_else(|| init_weights(&net.params, opts.seed));
        e2enc_ir::e2enet::model::apply_masks(&mut weights, &masks);
        let (train, val) = load_cases(&ds, &plan, &note)?;
        let rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x0074_7261_696e);
        Trainer::assemble(
            out,
            dataset,
            opts,
            config,
            weights,
            masks,
            None,
            (train, val),
            rng,
            threads,
            comm,
        )
    }

    /// Reopens the run in `out` from its checkpoint, on the target it was trained on.
    pub fn resume(out: &Path, threads: usize) -> Result<Trainer, TrainError> {
        Trainer::resume_with(out, threads, None)
    }

    /// [`Trainer::resume`] on `kernels`, or (`None`) on the target the checkpoint records, so
    /// that the resumed run equals an uninterrupted one bit for bit; a checkpoint from before
    /// targets were recorded continues on this machine's native target.
    pub fn resume_with(
        out: &Path,
        threads: usize,
        kernels: Option<Backend>,
    ) -> Result<Trainer, TrainError> {
        Trainer::resume_on(out, threads, kernels, Arc::new(Single))
    }

    /// [`Trainer::resume_with`] as one rank of a data-parallel run over `comm`; the number of
    /// ranks may differ from the run's before (it must divide the batch).
    pub fn resume_on(
        out: &Path,
        threads: usize,
        kernels: Option<Backend>,
        comm: Arc<dyn Collective>,
    ) -> Result<Trainer, TrainError> {
        if comm.rank() == 0 {
            checkpoint::clean_partial(out)?;
            clean_run_temps(out);
        }
        let dir = checkpoint::find(out).ok_or_else(|| {
            TrainError::Checkpoint(format!("{} holds no training checkpoint", out.display()))
        })?;
        let read = |name: &str| {
            e2enc_ir::files::read_bounded(&dir.join(name), e2enc_ir::files::MAX_TENSOR_FILE_BYTES)
                .map_err(TrainError::from)
        };
        let state: State = serde_json::from_slice(&read("state.json")?).map_err(|e| {
            TrainError::Checkpoint(format!("{}: {e}", dir.join("state.json").display()))
        })?;
        if state.format != STATE_FORMAT {
            return Err(TrainError::Checkpoint(format!(
                "{}: unknown state format `{}`",
                dir.display(),
                state.format
            )));
        }
        let model = Model::load(&dir.join("model.json"), &BuildOptions::default())?;
        let weights = model.require_weights()?.clone();
        let masks = model.masks.clone().unwrap_or_default();
        let config = model.config.clone();
        let ds = RawDataset::open(&state.dataset)?;
        let plan = plan_of(&config)?;
        let cases = load_cases(&ds, &plan, &|_: &str| {})?;
        let sgd = optim::Sgd::from_bytes(&read("optimizer.safetensors")?).map_err(|e| {
            TrainError::Checkpoint(format!(
                "{}: {e}",
                dir.join("optimizer.safetensors").display()
            ))
        })?;
        let mut options = state.options;
        options.validate().map_err(|m| {
            TrainError::Checkpoint(format!("{}: {m}", dir.join("state.json").display()))
        })?;
        check_batch_splits(options.batch, comm.as_ref())?;
        options.kernels = match (kernels, &options.target) {
            (Some(k), _) => k,
            (None, None) => Backend::default(),
            (None, Some(name)) => {
                let t: Target = name.parse().map_err(|e: String| {
                    TrainError::Checkpoint(format!("{}: {e}", dir.join("state.json").display()))
                })?;
                if t.is_cuda() {
                    return Err(TrainError::Checkpoint(format!(
                        "the run in {} was trained on CUDA kernels ({name}): continue it with \
                         --device cuda, or --emulate on a machine without a GPU, or pass \
                         --target for the CPU (the result then differs in rounding)",
                        out.display()
                    )));
                } else if !t.host_supports() {
                    return Err(TrainError::Checkpoint(format!(
                        "the run in {} was trained on target `{name}`, which this machine cannot \
                         run; pass --target (e.g. portable) to continue on another target (the \
                         result then differs in rounding from an uninterrupted run)",
                        out.display()
                    )));
                } else {
                    Backend::Generated(t)
                }
            }
        };
        if let Backend::Generated(t)
        | Backend::Emulated { target: t, .. }
        | Backend::Device { target: t, .. } = options.kernels
        {
            options.target = Some(t.name().to_string());
        }
        let mut t = Trainer::assemble(
            out,
            &state.dataset,
            options,
            config,
            weights,
            masks,
            Some(sgd),
            cases,
            state.rng,
            threads,
            comm,
        )?;
        t.epoch = state.epoch;
        t.iter = state.iter;
        t.loss_sum = state.loss_sum;
        t.history = state.history;
        t.mask_updates = state.mask_updates;
        Ok(t)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        out: &Path,
        dataset: &Path,
        opts: TrainOptions,
        config: ModelConfig,
        weights: Weights,
        masks: Weights,
        sgd: Option<optim::Sgd>,
        (train, val): (Vec<Case>, Vec<Case>),
        rng: ChaCha8Rng,
        threads: usize,
        comm: Arc<dyn Collective>,
    ) -> Result<Trainer, TrainError> {
        check_ranks_agree(
            comm.as_ref(),
            &[
                ("model", config.to_json().into_bytes()),
                ("options", serde_json::to_vec(&opts).expect("plain data")),
                ("dataset", cases_digest(&train, &val)),
                ("weights", weights_digest(&weights)),
                ("masks", weights_digest(&masks)),
            ],
        )?;
        let net = build(
            &config,
            &BuildOptions {
                batch: opts.batch / comm.size(),
                patch: None,
            },
        )?;
        let outputs: Vec<String> = (0..=config.deep_supervision_heads)
            .map(output_name)
            .collect();
        let names: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let tg = training_graph(&net.graph, &names)?;
        let maskable: std::collections::HashSet<String> = masks.names().cloned().collect();
        let exec = match opts.kernels {
            Backend::Device { target, gpu } => Runner::Device(Box::new(DeviceExecutor::open(
                &tg,
                // Several ranks on one machine: each its own GPU, counted from the one named.
                Backend::Device {
                    target,
                    gpu: gpu.map(|n| dist::rank_gpu(n, comm.size())),
                },
                threads,
                Some(&maskable),
                opts.precision,
                opts.conv_math,
            )?)),
            k => Runner::Host(Box::new(Executor::with_saved(
                &tg,
                threads,
                k,
                Some(&maskable),
                Memory::for_saved(opts.precision),
                opts.precision,
            )?)),
        };
        if let Runner::Host(e) = &exec {
            // Weights, their gradients and the momentum, beside the step's planned values.
            let state = 3 * weights
                .iter()
                .map(|(_, t)| t.numel() as u64 * 4)
                .sum::<u64>();
            check_host_memory(
                e.memory_plan().peak_bytes as u64,
                state,
                dist::launcher_local_size(),
                e2enc_ir::files::available_memory(),
                opts.precision,
            )?;
        }
        let mut head_factors = vec![[1usize; 3]];
        for s in 1..=config.deep_supervision_heads {
            let prev = head_factors[s - 1];
            let k = config.pool_kernels[s - 1];
            head_factors.push([prev[0] * k[0], prev[1] * k[1], prev[2] * k[2]]);
        }
        let sgd = sgd.unwrap_or_else(|| optim::Sgd {
            lr: opts.lr,
            ..optim::Sgd::nnunet()
        });
        Ok(Trainer {
            out: out.to_path_buf(),
            dataset: dataset.to_path_buf(),
            augment: if opts.augment {
                AugmentConfig::default()
            } else {
                AugmentConfig::none()
            },
            opts,
            config,
            train: Arc::new(train),
            val: Arc::new(val),
            exec,
            resident: false,
            reducer: None,
            comm,
            data_workers: 1,
            bucket: BUCKET,
            extra: BTreeMap::new(),
            comm_stats: CommStats::default(),
            masks: sparse::Masks::from_weights(&masks, &weights)?,
            weights,
            sgd,
            rng,
            epoch: 0,
            iter: 0,
            loss_sum: 0.0,
            history: Vec::new(),
            mask_updates: 0,
            head_factors,
            epoch_started: Instant::now(),
        })
    }

    /// The output folder.
    /// The run's options (from the command line, or the checkpoint it resumed).
    pub fn options(&self) -> &TrainOptions {
        &self.opts
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The per-epoch history so far.
    pub fn history(&self) -> &[EpochLog] {
        &self.history
    }

    /// Seconds spent in each op kind (forward and backward, training and validation) so far in
    /// this process, and outside the kernels: waiting for data, all-reducing loss sums and
    /// gradients (data-parallel runs), deciding and broadcasting DSFF updates.
    pub fn profile(&self) -> BTreeMap<&'static str, f64> {
        let mut p = self.exec.profile();
        p.extend(self.extra.iter().map(|(k, v)| (*k, *v)));
        p
    }

    /// On a GPU (or its emulation): times every kernel launch from here on, for
    /// [`Trainer::device_kernel_profile`] (`e2enc train --profile`). Nothing on the CPU, whose
    /// executor times its ops anyway ([`Trainer::profile`]).
    pub fn time_device_kernels(&mut self) -> Result<(), TrainError> {
        match &mut self.exec {
            Runner::Device(d) => d.time_kernels(true),
            Runner::Host(_) => Ok(()),
        }
    }

    /// Device seconds of the kernels launched since [`Trainer::time_device_kernels`], by what
    /// they compute (see `DeviceExecutor::kernel_profile`); `None` on the CPU or untimed.
    pub fn device_kernel_profile(&mut self) -> Result<Option<BTreeMap<String, f64>>, TrainError> {
        match &mut self.exec {
            Runner::Device(d) => Ok(d.kernel_profile()?.cloned()),
            Runner::Host(_) => Ok(None),
        }
    }

    /// What this process's gradient all-reduces moved so far (zero steps in a one-process run).
    pub fn communication(&self) -> CommStats {
        self.comm_stats
    }

    /// A training step's memory for values (weights and optimizer state excluded), in bytes:
    /// the planned peak ([`crate::memplan`]) and the largest measured in a step so far.
    pub fn step_memory(&self) -> (usize, usize) {
        match &self.exec {
            Runner::Host(e) => (e.memory_plan().peak_bytes, e.peak_live_bytes()),
            Runner::Device(d) => (d.memory_plan().peak_bytes, d.arena_bytes()),
        }
    }

    /// Bytes of device memory a GPU run (or its emulation) holds in all: the arena of
    /// [`Trainer::step_memory`], the weights, the momentum, the tables and the scratch; `None`
    /// on the CPU.
    pub fn device_memory(&self) -> Option<usize> {
        match &self.exec {
            Runner::Device(d) => Some(d.device_bytes()),
            Runner::Host(_) => None,
        }
    }

    /// This process's rank and the number of ranks.
    pub fn rank(&self) -> (usize, usize) {
        (self.comm.rank(), self.comm.size())
    }

    /// What carries the collectives (`one process`, or the MPI library and rank count).
    pub fn engine(&self) -> String {
        self.comm.engine()
    }

    /// What sums the gradients of a data-parallel run on devices (NCCL, with its version), once
    /// a step has run; `None` otherwise.
    pub fn gradient_engine(&self) -> Option<String> {
        self.reducer.as_ref().map(|r| r.engine())
    }

    /// Ends every rank of the run now (see [`Collective::abort`]).
    pub fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    /// Floats per all-reduce bucket of the gradients in a data-parallel step (default 2^22, 16
    /// MiB; at least 1). Several buckets let the all-reduce overlap the backward pass on the
    /// host; the sums do not depend on it.
    pub fn set_gradient_bucket(&mut self, floats: usize) {
        self.bucket = floats.max(1);
    }

    /// Threads that make training and validation batches ahead of the steps (default 1; 0 makes
    /// each batch in the step that needs it). Batches are the same for any count.
    pub fn set_data_workers(&mut self, n: usize) {
        self.data_workers = n;
    }

    fn add_time(&mut self, what: &'static str, since: Instant) {
        *self.extra.entry(what).or_insert(0.0) += since.elapsed().as_secs_f64();
    }

    /// Whether any rank asks to stop (every rank must ask at the same iteration).
    fn agree_to_stop(&mut self, mine: bool) -> Result<bool, TrainError> {
        if self.comm.size() == 1 {
            return Ok(mine);
        }
        let t = Instant::now();
        let mut v = [if mine { 1.0 } else { 0.0 }];
        self.comm.all_reduce_f64(&mut v)?;
        self.add_time("all-reduce: stop flag", t);
        Ok(v[0] > 0.0)
    }

    /// This rank's share `[r·b, (r+1)·b)` of a global batch's sample indices.
    fn share(&self) -> Range<u64> {
        let b = (self.opts.batch / self.comm.size()) as u64;
        let r = self.comm.rank() as u64;
        r * b..(r + 1) * b
    }

    /// Makes this rank's share of batch `step` of `stream` from `cases` (see [`sample_share`]).
    fn batch_maker(
        &self,
        cases: Arc<Vec<Case>>,
        stream: SampleStream,
        aug: AugmentConfig,
        step_of: fn(u64, u64) -> u64,
        key: u64,
    ) -> MakeBatch<(Tensor, Vec<u16>)> {
        let (share, patch, seed) = (self.share(), self.config.patch_size, self.opts.seed);
        Arc::new(move |i| {
            sample_share(
                &cases,
                share.clone(),
                patch,
                &aug,
                seed,
                stream,
                step_of(key, i),
            )
        })
    }

    /// Trains until the last epoch, or until `stop()` says so on any rank (then checkpoints).
    pub fn train(
        &mut self,
        events: &mut dyn FnMut(Event),
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Outcome, TrainError> {
        let iters = self.opts.iters_per_epoch;
        let total = self.opts.epochs * iters;
        self.epoch_started = Instant::now();
        let first = (self.epoch * iters + self.iter) as u64;
        let maker = self.batch_maker(
            self.train.clone(),
            SampleStream::Train,
            self.augment.clone(),
            |_, i| i,
            0,
        );
        let mut data = Prefetch::start(first..total as u64, self.data_workers, 2, maker)?;
        while self.epoch < self.opts.epochs {
            let lr = optim::poly_lr(self.epoch, self.opts.epochs, self.opts.lr);
            while self.iter < iters {
                let asked = stop();
                if self.agree_to_stop(asked)? {
                    self.save()?;
                    return Ok(Outcome::Stopped);
                }
                let global = self.epoch * iters + self.iter + 1;
                let t = Instant::now();
                let (i, batch) = data.next().ok_or_else(|| {
                    TrainError::Data("the batch queue ended before the last iteration".into())
                })?;
                self.add_time("data wait", t);
                debug_assert_eq!(i + 1, global as u64);
                let l = self.step(lr, batch?)?;
                self.loss_sum += l;
                if self.opts.update_frequency > 0
                    && global.is_multiple_of(self.opts.update_frequency)
                    && global < total
                {
                    let rate = sparse::death_rate(global, total, 0.5, 0.001);
                    let regrown = self.update_masks(rate)?;
                    self.mask_updates += 1;
                    events(Event::Note(format!(
                        "  DSFF update {} at iteration {global}: {regrown} kernels pruned and \
                         regrown (rate {rate:.3})",
                        self.mask_updates
                    )));
                }
                events(Event::Iter {
                    epoch: self.epoch,
                    iter: self.iter,
                    iters,
                    loss: l,
                    lr,
                });
                self.iter += 1;
            }
            let (val_loss, dice) = self.validate()?;
            let log = EpochLog {
                epoch: self.epoch,
                train_loss: self.loss_sum / iters as f64,
                val_loss,
                val_dice: dice,
                lr,
                seconds: self.epoch_started.elapsed().as_secs_f64(),
            };
            events(Event::Epoch(format!(
                "epoch {:>3}  train loss {:.4}  val loss {:.4}  val Dice {}  lr {:.5}  {:.1} s",
                log.epoch,
                log.train_loss,
                log.val_loss,
                log.val_dice
                    .iter()
                    .map(|d| format!("{d:.3}"))
                    .collect::<Vec<_>>()
                    .join("/"),
                lr,
                log.seconds
            )));
            self.history.push(log);
            self.epoch += 1;
            self.iter = 0;
            self.loss_sum = 0.0;
            if self.comm.size() > 1 {
                // Every rank took the same steps: a difference here is a bug or a broken rank,
                // caught before rank 0 writes a checkpoint that only it agrees with.
                check_ranks_agree(
                    self.comm.as_ref(),
                    &[
                        ("weights after the epoch", weights_digest(&self.weights)),
                        (
                            "masks after the epoch",
                            weights_digest(&self.masks.to_weights()),
                        ),
                    ],
                )?;
            }
            self.save()?;
            self.epoch_started = Instant::now();
        }
        Ok(Outcome::Finished)
    }

    /// Brings the weights and the momentum back from the device when it holds them (before the
    /// host reads them: DSFF updates, validation, checkpoints).
    fn sync_host(&mut self) -> Result<(), TrainError> {
        if let (true, Runner::Device(d)) = (self.resident, &mut self.exec) {
            let t = Instant::now();
            let (w, m) = d.download_state()?;
            self.weights = w;
            self.sgd.momentum_buffers = m;
            self.resident = false;
            self.add_time("device state to the host", t);
        }
        Ok(())
    }

    fn live_masks(&self) -> LiveMasks {
        self.masks
            .layers()
            .map(|(name, m)| (name.clone(), m.alive.clone()))
            .collect()
    }

    /// One DSFF prune-and-regrow at `rate`, decided on rank 0 and broadcast to the others, which
    /// adopt it; returns the number of kernels regrown.
    fn update_masks(&mut self, rate: f64) -> Result<usize, TrainError> {
        // A device that holds the weights: only the kernels' norms come back (to rank 0, which
        // decides), and the pruned and regrown kernels are zeroed there (as `Masks::update`
        // does here) on every rank.
        if let (true, Runner::Device(d)) = (self.resident, &mut self.exec) {
            let t = Instant::now();
            let mut msg = Vec::new();
            let (regrown, zero) = if self.comm.rank() == 0 {
                let l1 = d.kernel_l1()?;
                let st = self.masks.prune_regrow_by(&l1, rate, &mut self.rng)?;
                if self.comm.size() > 1 {
                    msg = self.masks.encode_update(&st);
                }
                let zero: BTreeMap<String, Vec<usize>> = st
                    .layers
                    .iter()
                    .map(|u| {
                        let mut k: Vec<usize> =
                            u.pruned.iter().chain(&u.regrown).copied().collect();
                        k.sort_unstable();
                        k.dedup();
                        (u.name.clone(), k)
                    })
                    .collect();
                (st.regrown, zero)
            } else {
                (0, BTreeMap::new())
            };
            let (regrown, zero) = if self.comm.size() > 1 {
                self.comm.broadcast(&mut msg)?;
                if self.comm.rank() == 0 {
                    (regrown, zero)
                } else {
                    self.masks.adopt_update_elsewhere(&msg)?
                }
            } else {
                (regrown, zero)
            };
            d.zero_kernels(&zero)?;
            self.add_time("DSFF update", t);
            return Ok(regrown);
        }
        self.sync_host()?;
        let t = Instant::now();
        let mut msg = Vec::new();
        let mut regrown = 0;
        if self.comm.rank() == 0 {
            let st = self.masks.update(
                &mut self.weights,
                &mut self.sgd.momentum_buffers,
                rate,
                &mut self.rng,
            )?;
            regrown = st.regrown;
            if self.comm.size() > 1 {
                msg = self.masks.encode_update(&st);
            }
        }
        if self.comm.size() > 1 {
            self.comm.broadcast(&mut msg)?;
            if self.comm.rank() != 0 {
                regrown = self.masks.adopt_update(
                    &msg,
                    &mut self.weights,
                    &mut self.sgd.momentum_buffers,
                )?;
            }
        }
        self.add_time("DSFF update", t);
        Ok(regrown)
    }

    /// Floats of the gradients that travel in a data-parallel step (live kernels only).
    fn gradient_floats(&self) -> usize {
        self.weights
            .iter()
            .map(|(n, t)| {
                live_runs(&self.masks, n, t.numel())
                    .iter()
                    .map(|r| r.len())
                    .sum::<usize>()
            })
            .sum()
    }

    /// One optimisation step on this rank's share of the batch; returns the global batch loss.
    fn step(&mut self, lr: f64, (input, labels): (Tensor, Vec<u16>)) -> Result<f64, TrainError> {
        let live = self.live_masks();
        let inputs: BTreeMap<String, Tensor> = [("input".to_string(), input)].into();
        let heads = self.head_factors.clone();
        let patch = self.config.patch_size;
        let batch = self.opts.batch / self.comm.size();
        let comm = self.comm.as_ref();
        let mut reduce_secs = 0.0;
        let mut overlapped = None;
        let overlap = self.comm.size() > 1 && self.gradient_floats() > self.bucket;
        if let Runner::Device(d) = &mut self.exec {
            if d.has_device_loss() {
                // On GPUs the weights and the momentum stay there; the ranks of a data-parallel
                // run sum their gradients there too (NCCL), and the loss's sums on the host.
                let (labels, weights) =
                    loss::deep_supervision_targets(&labels, batch, patch, &heads)?;
                if !self.resident {
                    d.upload_state(&self.weights, &self.sgd.momentum_buffers)?;
                    self.resident = true;
                }
                if comm.size() > 1 && self.reducer.is_none() {
                    let t = Instant::now();
                    // NCCL for a CUDA GPU (this makes its context current on this thread);
                    // through the host for the emulation.
                    let r: Box<dyn dist::GradientReducer> = match d.cuda_stream()? {
                        Some(_) => {
                            let r = dist::NcclReducer::join(comm)?;
                            *self.extra.entry("joining NCCL").or_insert(0.0) +=
                                t.elapsed().as_secs_f64();
                            Box::new(r)
                        }
                        None => Box::new(dist::HostStaged {
                            comm: self.comm.clone(),
                            bucket: self.bucket,
                        }),
                    };
                    self.reducer = Some(r);
                }
                let ranks = match &mut self.reducer {
                    Some(r) if comm.size() > 1 => Some(r),
                    _ => None,
                };
                let on_ranks = ranks.is_some();
                let mut sums = |s: &mut [f64]| -> Result<(), TrainError> {
                    let t = Instant::now();
                    comm.all_reduce_f64(s)?;
                    reduce_secs += t.elapsed().as_secs_f64();
                    Ok(())
                };
                let (loss, norm) = d.step_resident(
                    &live,
                    &inputs,
                    &labels,
                    &weights,
                    &self.sgd,
                    lr,
                    optim::MAX_GRAD_NORM,
                    ranks.map(|r| crate::device_exec::RankHooks {
                        sums: &mut sums,
                        grads: r.as_mut(),
                        bucket: self.bucket,
                    }),
                )?;
                if on_ranks {
                    *self.extra.entry("all-reduce: loss sums").or_insert(0.0) += reduce_secs;
                    let floats = d.packed_gradient_floats();
                    self.comm_stats.steps += 1;
                    self.comm_stats.gradient_bytes = floats * 4;
                    self.comm_stats.gradient_calls = self.reducer.as_ref().map_or(0, |r| {
                        d.gradient_buckets().iter().map(|&b| r.calls(b)).sum()
                    });
                    self.comm_stats.on_device = true;
                }
                if !norm.is_finite() {
                    return Err(TrainError::Diverged(format!(
                        "epoch {} iteration {}: the gradient norm is {norm} (training diverged; \
                         try a lower --lr)",
                        self.epoch, self.iter
                    )));
                }
                return Ok(loss);
            }
        }
        let res = match &mut self.exec {
            // On a GPU the loss runs there too: only its sums and the gradients come back.
            Runner::Device(d) if d.has_device_loss() => {
                let (labels, weights) =
                    loss::deep_supervision_targets(&labels, batch, patch, &heads)?;
                d.step_on_device(
                    &self.weights,
                    &live,
                    &inputs,
                    &labels,
                    &weights,
                    &mut |sums: &mut [f64]| {
                        if comm.size() > 1 {
                            let t = Instant::now();
                            comm.all_reduce_f64(sums)?;
                            reduce_secs += t.elapsed().as_secs_f64();
                        }
                        Ok(())
                    },
                )?
            }
            exec => {
                let loss = |outs: &BTreeMap<String, Arc<Tensor>>| {
                    deep_supervision_loss(
                        outs,
                        &labels,
                        batch,
                        patch,
                        &heads,
                        true,
                        comm,
                        &mut reduce_secs,
                    )
                };
                match exec {
                    // Several ranks on the host and more than one bucket of gradients: their
                    // all-reduce overlaps the backward pass (one bucket would only start when
                    // the pass ends).
                    Runner::Host(e) if overlap => {
                        let (r, o) = step_overlapped(
                            e,
                            &self.comm,
                            &self.masks,
                            self.bucket,
                            &self.weights,
                            &live,
                            &inputs,
                            loss,
                        )?;
                        overlapped = Some(o);
                        r
                    }
                    exec => exec.step(&self.weights, &live, &inputs, loss)?,
                }
            }
        };
        if self.comm.size() > 1 {
            *self.extra.entry("all-reduce: loss sums").or_insert(0.0) += reduce_secs;
        }
        let mut grads = res.grads;
        if let Some(o) = overlapped {
            *self.extra.entry("all-reduce: gradients").or_insert(0.0) += o.reducing;
            *self
                .extra
                .entry("wait for the gradients after the backward pass")
                .or_insert(0.0) += o.waiting;
            self.comm_stats.steps += 1;
            self.comm_stats.gradient_bytes = o.floats * 4;
            self.comm_stats.gradient_calls = o.calls;
        } else if self.comm.size() > 1 {
            // A one-number all-reduce first, as a barrier: its time is the wait for the slowest
            // rank's backward pass, so that the gradients' time below is their transfer.
            let t = Instant::now();
            self.comm.all_reduce_f64(&mut [0.0])?;
            self.add_time("wait for the slowest rank", t);
            let t = Instant::now();
            let (floats, calls) =
                all_reduce_weights(self.comm.as_ref(), &mut grads, &self.masks, self.bucket)?;
            self.add_time("all-reduce: gradients", t);
            self.comm_stats.steps += 1;
            self.comm_stats.gradient_bytes = floats * 4;
            self.comm_stats.gradient_calls = calls;
        }
        let norm = optim::clip_grad_norm(&mut grads, optim::MAX_GRAD_NORM);
        if !norm.is_finite() {
            return Err(TrainError::Diverged(format!(
                "epoch {} iteration {}: the gradient norm is {norm} (training diverged; try a \
                 lower --lr)",
                self.epoch, self.iter
            )));
        }
        self.sgd.step(&mut self.weights, &grads, lr)?;
        self.masks.apply(&mut self.weights)?;
        self.masks.apply(&mut self.sgd.momentum_buffers)?;
        Ok(res.loss)
    }

    /// Validation: loss and pseudo-Dice per foreground class over `val_iters` global batches
    /// (each rank runs its share; the sums are added over the ranks).
    fn validate(&mut self) -> Result<(f64, Vec<f64>), TrainError> {
        self.sync_host()?;
        let n = self.opts.val_iters;
        let classes = self.config.num_classes;
        if n == 0 {
            return Ok((f64::NAN, vec![f64::NAN; classes - 1]));
        }
        let live = self.live_masks();
        // Counts as f64: tp, fp, fn per class (exact below 2^53 voxels).
        let mut counts = vec![0.0f64; 3 * classes];
        let mut loss_sum = 0.0;
        let maker = self.batch_maker(
            self.val.clone(),
            SampleStream::Validation,
            AugmentConfig::none(),
            |epoch, i| (epoch << 32) | i,
            self.epoch as u64,
        );
        let mut data = Prefetch::start(0..n as u64, self.data_workers, 2, maker)?;
        let batch = self.opts.batch / self.comm.size();
        let vox: usize = self.config.patch_size.iter().product();
        while let Some((_, b)) = {
            let t = Instant::now();
            let b = data.next();
            self.add_time("data wait", t);
            b
        } {
            let (input, labels) = b?;
            let inputs: BTreeMap<String, Tensor> = [("input".to_string(), input)].into();
            let outs = self.exec.forward(&self.weights, &live, &inputs)?;
            let mut reduce_secs = 0.0;
            let (l, _) = deep_supervision_loss(
                &outs,
                &labels,
                batch,
                self.config.patch_size,
                &self.head_factors,
                false,
                self.comm.as_ref(),
                &mut reduce_secs,
            )?;
            if self.comm.size() > 1 {
                *self.extra.entry("all-reduce: loss sums").or_insert(0.0) += reduce_secs;
            }
            loss_sum += l;
            let logits = outs["logits"].as_f32().expect("f32 logits");
            for b in 0..batch {
                let pred = argmax(&logits[b * classes * vox..(b + 1) * classes * vox], classes);
                for (v, &best) in pred.iter().enumerate() {
                    let best = best as usize;
                    let t = labels[b * vox + v] as usize;
                    if best == t {
                        counts[t] += 1.0;
                    } else {
                        counts[classes + best] += 1.0;
                        counts[2 * classes + t] += 1.0;
                    }
                }
            }
        }
        if self.comm.size() > 1 {
            let t = Instant::now();
            self.comm.all_reduce_f64(&mut counts)?;
            self.add_time("all-reduce: validation counts", t);
        }
        let (tp, fp, fnn) = (
            &counts[..classes],
            &counts[classes..2 * classes],
            &counts[2 * classes..],
        );
        let dice = (1..classes)
            .map(|c| {
                let d = 2.0 * tp[c] + fp[c] + fnn[c];
                if d == 0.0 {
                    f64::NAN
                } else {
                    2.0 * tp[c] / d
                }
            })
            .collect();
        Ok((loss_sum / n as f64, dice))
    }

    /// Writes the checkpoint, training.json and training.png (rank 0 only; the other ranks of a
    /// data-parallel run write nothing).
    pub fn save(&mut self) -> Result<(), TrainError> {
        self.sync_host()?;
        if self.comm.rank() != 0 {
            return Ok(());
        }
        let state = State {
            format: STATE_FORMAT.into(),
            dataset: self.dataset.clone(),
            options: self.opts.clone(),
            epoch: self.epoch,
            iter: self.iter,
            loss_sum: self.loss_sum,
            rng: self.rng.clone(),
            history: self.history.clone(),
            mask_updates: self.mask_updates,
        };
        let json = |v: &dyn erased::Json| v.bytes();
        let weights = self
            .weights
            .to_bytes(None)
            .map_err(TrainError::Checkpoint)?;
        let masks = self
            .masks
            .to_weights()
            .to_bytes(None)
            .map_err(TrainError::Checkpoint)?;
        checkpoint::write(
            &self.out,
            &[
                ("model.json", self.config.to_json().into_bytes()),
                ("weights.safetensors", weights),
                ("masks.safetensors", masks),
                ("optimizer.safetensors", self.sgd.to_bytes()?),
                ("state.json", json(&state)),
            ],
        )?;
        let hist = serde_json::to_vec_pretty(&self.history).expect("plain data");
        e2enc_ir::weights::write_atomic(&self.out.join("training.json"), &hist)?;
        write_training_png(&self.history, &self.out.join("training.png"))?;
        Ok(())
    }
}

mod erased {
    /// Serialises a value to pretty JSON bytes (plain data: cannot fail).
    pub trait Json {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).expect("plain data serialises")
        }
    }
}

/// A preprocessed case with its foreground locations (for oversampling).
#[derive(Clone)]
struct Case {
    data: TrainCase,
    locs: ClassLocations,
}

/// The preprocessing plan a model config carries.
fn plan_of(c: &ModelConfig) -> Result<PreprocessingConfig, TrainError> {
    let v = c.preprocessing.clone().ok_or_else(|| {
        TrainError::Setup("the checkpoint's model.json has no preprocessing plan".into())
    })?;
    serde_json::from_value(v)
        .map_err(|e| TrainError::Setup(format!("the model's preprocessing plan: {e}")))
}

/// Samples `share` of global batch `step` of `stream` (input `[B, C, patch]`, labels
/// `[B, patch]`, B = the share's length): sample j draws its case, origin and augmentation from
/// [`dist::sample_rng`]`(seed, stream, step, j)`.
fn sample_share(
    cases: &[Case],
    share: Range<u64>,
    patch: [usize; 3],
    aug: &AugmentConfig,
    seed: u64,
    stream: SampleStream,
    step: u64,
) -> Result<(Tensor, Vec<u16>), TrainError> {
    let ch = cases[0].data.channels.len();
    let vox: usize = patch.iter().product();
    let batch = (share.end - share.start) as usize;
    let mut x = Vec::with_capacity(batch * ch * vox);
    let mut y = Vec::with_capacity(batch * vox);
    let sampler = SamplerConfig::new(patch);
    for j in share {
        let mut rng = dist::sample_rng(seed, stream, step, j);
        let case = &cases[rng.random_range(0..cases.len())];
        let p = sampler::draw_patch(&case.data, &case.locs, &sampler, aug, &mut rng)?;
        for c in &p.channels {
            x.extend_from_slice(c);
        }
        y.extend_from_slice(&p.label);
    }
    let input = Tensor::from_f32(vec![batch, ch, patch[0], patch[1], patch[2]], x)?;
    Ok((input, y))
}

/// Deep-supervision Dice + CE over the heads (weights 8/15, 4/15, 2/15, 1/15 renormalised over
/// the heads present) and the gradient of every head's logits. The heads' batch sums are added
/// over the ranks of `comm` first (one all-reduce, timed into `reduce_secs`), so the value and the
/// gradients are those of the global batch.
#[allow(clippy::too_many_arguments)]
fn deep_supervision_loss(
    outs: &BTreeMap<String, std::sync::Arc<Tensor>>,
    labels: &[u16],
    batch: usize,
    patch: [usize; 3],
    heads: &[[usize; 3]],
    want_grad: bool,
    comm: &dyn Collective,
    reduce_secs: &mut f64,
) -> Result<(f64, BTreeMap<String, Tensor>), TrainError> {
    let raw: Vec<f64> = (0..heads.len()).map(|s| 0.5f64.powi(s as i32)).collect();
    let norm: f64 = raw.iter().sum();
    let mut parts = Vec::with_capacity(heads.len());
    for (s, f) in heads.iter().enumerate() {
        let name = output_name(s);
        let t = outs
            .get(&name)
            .ok_or_else(|| TrainError::Loss(format!("no output `{name}`")))?;
        let (lbl, shape) =
            loss::downsample_labels(labels, [batch, patch[0], patch[1], patch[2]], *f)?;
        let sh = t.shape();
        if sh[2..] != shape[1..] {
            return Err(TrainError::Loss(format!(
                "head `{name}` has shape {sh:?}, labels {shape:?}"
            )));
        }
        let sh = [sh[0], sh[1], sh[2], sh[3], sh[4]];
        let sums = loss::batch_sums(t.as_f32().expect("f32"), sh, &lbl)?;
        parts.push((name, t, sh, lbl, sums));
    }
    if comm.size() > 1 {
        let t = Instant::now();
        let mut flat: Vec<f64> = Vec::new();
        for p in parts.iter_mut() {
            flat.extend_from_slice(p.4.as_slice_mut());
        }
        comm.all_reduce_f64(&mut flat)?;
        let mut at = 0;
        for p in parts.iter_mut() {
            let v = p.4.as_slice_mut();
            v.copy_from_slice(&flat[at..at + v.len()]);
            at += v.len();
        }
        *reduce_secs += t.elapsed().as_secs_f64();
    }
    let mut total = 0.0;
    let mut grads = BTreeMap::new();
    for (s, (name, t, sh, lbl, sums)) in parts.into_iter().enumerate() {
        let l = loss::from_sums(t.as_f32().expect("f32"), sh, &lbl, &sums, want_grad);
        let w = raw[s] / norm;
        total += w * l.total;
        if want_grad {
            let g: Vec<f32> = l.grad.iter().map(|v| (*v as f64 * w) as f32).collect();
            grads.insert(name, Tensor::from_f32(sh.to_vec(), g)?);
        }
    }
    Ok((total, grads))
}

/// The gradient all-reduces of a data-parallel run, for `--profile` and projections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommStats {
    /// Training steps whose gradients were all-reduced (by this process, since it started).
    pub steps: u64,
    /// Bytes of gradients each rank sends into the all-reduces of one step (f32; of DSFF layers
    /// only the live kernels).
    pub gradient_bytes: usize,
    /// All-reduce calls per step for those gradients (buckets of about 16 MiB; on GPUs one
    /// NCCL call per bucket).
    pub gradient_calls: usize,
    /// The gradients were summed in the devices' memory (GPU ranks; the live floats packed
    /// there in buckets, each summed once the backward pass has finished it), by
    /// [`Trainer::gradient_engine`].
    pub on_device: bool,
}

/// Refuses a run whose steps cannot fit this machine before any step starts (the kernel would
/// end it mid-step, without a word): `values` (the step's planned peak) and `state` (weights,
/// gradients, momentum) for each of the `local` ranks on this machine, against `available`
/// (`MemAvailable`; no check when unknown). The error says what would fit.
fn check_host_memory(
    values: u64,
    state: u64,
    local: usize,
    available: Option<u64>,
    precision: Saved,
) -> Result<(), TrainError> {
    let Some(have) = available else {
        return Ok(());
    };
    let need = (values + state).saturating_mul(local as u64);
    if need <= have {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let ranks = if local > 1 {
        format!(" for each of the {local} ranks on this machine")
    } else {
        String::new()
    };
    let bf16 = match precision {
        Saved::F32 => "--precision bf16 (about 25-30% less), ",
        Saved::Bf16 => "",
    };
    Err(TrainError::Memory(format!(
        "a training step here needs about {:.1} GiB (its planned peak of {:.1} GiB of values and \
         {:.2} GiB of weights, gradients and momentum{ranks}), and this machine has {:.1} GiB \
         available: it would be killed for memory mid-step. Use {bf16}a smaller --batch (about \
         half the values per halving) or a smaller --patch, or free memory",
        gib(need),
        gib(values),
        gib(state),
        gib(have)
    )))
}

/// Floats of one all-reduce bucket by default (16 MiB).
pub const BUCKET: usize = 1 << 22;

/// The runs of floats of gradient `name` (`len` long) that travel: the whole tensor, or each
/// live kernel's of a DSFF-masked one (the ranks hold the same masks, checked every epoch, and
/// a dead kernel's gradient is exactly zero on every rank, so its sum is the zero already there).
fn live_runs(masks: &sparse::Masks, name: &str, len: usize) -> Vec<std::ops::Range<usize>> {
    match masks.get(name) {
        Some(m) => m
            .alive
            .iter()
            .enumerate()
            .filter(|(_, a)| **a)
            .map(|(k, _)| k * m.kernel_volume..(k + 1) * m.kernel_volume)
            .collect(),
        None => std::iter::once(0..len).collect(),
    }
}

/// Gradients packed into all-reduce buckets of about `size` floats in the order they are
/// added (which must be the same on every rank), each handed to `ship` when full; the names
/// each bucket holds, for [`Buckets::unpack`].
struct Buckets<'a> {
    masks: &'a sparse::Masks,
    size: usize,
    cur: Vec<f32>,
    names: Vec<String>,
    layout: Vec<Vec<String>>,
    ship: Box<dyn FnMut(Vec<f32>) -> Result<(), TrainError> + 'a>,
}

impl<'a> Buckets<'a> {
    fn new(
        masks: &'a sparse::Masks,
        size: usize,
        ship: impl FnMut(Vec<f32>) -> Result<(), TrainError> + 'a,
    ) -> Buckets<'a> {
        Buckets {
            masks,
            size,
            cur: Vec::new(),
            names: Vec::new(),
            layout: Vec::new(),
            ship: Box::new(ship),
        }
    }

    fn add(&mut self, name: &str, t: &Tensor) -> Result<(), TrainError> {
        let v = t
            .as_f32()
            .ok_or_else(|| TrainError::Graph(format!("the gradient of `{name}` is not f32")))?;
        let runs = live_runs(self.masks, name, v.len());
        let n: usize = runs.iter().map(|r| r.len()).sum();
        if !self.cur.is_empty() && self.cur.len() + n > self.size {
            self.flush()?;
        }
        for r in runs {
            self.cur.extend_from_slice(&v[r]);
        }
        self.names.push(name.to_string());
        Ok(())
    }

    /// Ships the bucket being filled, if any.
    fn flush(&mut self) -> Result<(), TrainError> {
        if self.names.is_empty() {
            return Ok(());
        }
        self.layout.push(std::mem::take(&mut self.names));
        (self.ship)(std::mem::take(&mut self.cur))
    }

    /// Writes the summed `buckets` (in shipping order) back into `w`; returns the floats.
    fn unpack(
        masks: &sparse::Masks,
        layout: &[Vec<String>],
        buckets: &[Vec<f32>],
        w: &mut Weights,
    ) -> Result<usize, TrainError> {
        if layout.len() != buckets.len() {
            return Err(TrainError::Distributed(format!(
                "{} gradient buckets came back from the all-reduce, {} went",
                buckets.len(),
                layout.len()
            )));
        }
        let mut floats = 0;
        for (names, buf) in layout.iter().zip(buckets) {
            let mut at = 0;
            for n in names {
                optim::with_f32_mut(w, n, |v| {
                    for r in live_runs(masks, n, v.len()) {
                        let len = r.len();
                        v[r].copy_from_slice(&buf[at..at + len]);
                        at += len;
                    }
                });
            }
            floats += buf.len();
        }
        Ok(floats)
    }
}

/// Sums every tensor of `w` over the ranks, in buckets (see [`Buckets`]) packed in name order
/// (the same on every rank); returns the floats moved and the calls made.
fn all_reduce_weights(
    comm: &dyn Collective,
    w: &mut Weights,
    masks: &sparse::Masks,
    bucket: usize,
) -> Result<(usize, usize), TrainError> {
    let mut done: Vec<Vec<f32>> = Vec::new();
    let mut b = Buckets::new(masks, bucket, |mut buf| {
        comm.all_reduce_f32(&mut buf)?;
        done.push(buf);
        Ok(())
    });
    for (n, t) in w.iter() {
        b.add(n, t)?;
    }
    b.flush()?;
    let layout = std::mem::take(&mut b.layout);
    drop(b);
    let floats = Buckets::unpack(masks, &layout, &done, w)?;
    Ok((floats, done.len()))
}

/// What [`step_overlapped`] measured.
struct Overlapped {
    floats: usize,
    calls: usize,
    /// Seconds the communication thread spent in all-reduces.
    reducing: f64,
    /// Seconds the step waited for them after its backward pass.
    waiting: f64,
}

/// A host step of a data-parallel run whose weight gradients are summed over the ranks while
/// its backward pass goes on: each gradient goes into a bucket as soon as it is computed
/// ([`Executor::step_with_grads`]: the backward order, the same on every rank), and a full
/// bucket to a communication thread that all-reduces it; the step waits for the last ones after
/// its backward pass and returns the summed gradients. MPI is initialised with
/// `MPI_THREAD_MULTIPLE`, and no other collective runs meanwhile (the loss's sums are
/// all-reduced before the first gradient exists, and the caller's next collective comes after
/// the wait), so the collectives keep one order on every rank.
#[allow(clippy::type_complexity)]
#[allow(clippy::too_many_arguments)]
fn step_overlapped(
    e: &mut Executor,
    comm: &Arc<dyn Collective>,
    masks: &sparse::Masks,
    bucket: usize,
    weights: &Weights,
    live: &LiveMasks,
    inputs: &BTreeMap<String, Tensor>,
    loss: impl FnOnce(
        &BTreeMap<String, Arc<Tensor>>,
    ) -> Result<(f64, BTreeMap<String, Tensor>), TrainError>,
) -> Result<(StepResult, Overlapped), TrainError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<f32>>();
        let c = comm.clone();
        let worker = scope.spawn(move || -> Result<(Vec<Vec<f32>>, f64), TrainError> {
            let (mut done, mut secs) = (Vec::new(), 0.0);
            for mut b in rx {
                let t = Instant::now();
                c.all_reduce_f32(&mut b)?;
                secs += t.elapsed().as_secs_f64();
                done.push(b);
            }
            Ok((done, secs))
        });
        let mut b = Buckets::new(masks, bucket, move |buf| {
            tx.send(buf).map_err(|_| {
                TrainError::Distributed("the gradient all-reduce thread stopped".into())
            })
        });
        let res = e
            .step_with_grads(weights, live, inputs, loss, &mut |n, t| b.add(n, t))
            .and_then(|r| b.flush().map(|()| r));
        let layout = std::mem::take(&mut b.layout);
        drop(b); // closes the channel: the thread ends after the buckets sent
        let t = Instant::now();
        let joined = worker.join().map_err(|_| {
            TrainError::Distributed("the gradient all-reduce thread panicked".into())
        })?;
        let waiting = t.elapsed().as_secs_f64();
        // A failed all-reduce explains a failed step better than the step's own error.
        let (done, reducing) = joined?;
        let mut res = res?;
        let floats = Buckets::unpack(masks, &layout, &done, &mut res.grads)?;
        Ok((
            res,
            Overlapped {
                floats,
                calls: done.len(),
                reducing,
                waiting,
            },
        ))
    })
}

/// Errors unless `batch` splits evenly over the ranks.
fn check_batch_splits(batch: usize, comm: &dyn Collective) -> Result<(), TrainError> {
    let n = comm.size();
    if !batch.is_multiple_of(n) {
        return Err(TrainError::Distributed(format!(
            "the batch of {batch} does not split over {n} ranks: --batch is the global batch \
             (each rank runs batch / ranks patches), so choose a multiple of {n}"
        )));
    }
    Ok(())
}

/// FNV-1a over `bytes` (a consistency check between ranks, not a security measure).
fn fnv(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A digest of tensors by name (names, shapes and f32 bits).
fn weights_digest(w: &Weights) -> Vec<u8> {
    let mut h = FNV_START;
    for (n, t) in w.iter() {
        h = fnv(n.bytes(), h);
        h = fnv(t.shape().iter().flat_map(|d| (*d as u64).to_le_bytes()), h);
        if let Some(v) = t.as_f32() {
            h = fnv(v.iter().flat_map(|x| x.to_bits().to_le_bytes()), h);
        }
    }
    h.to_le_bytes().to_vec()
}

/// A digest of the preprocessed training and validation cases.
fn cases_digest(train: &[Case], val: &[Case]) -> Vec<u8> {
    let mut h = FNV_START;
    for c in train.iter().chain(val) {
        h = fnv(
            c.data.shape.iter().flat_map(|d| (*d as u64).to_le_bytes()),
            h,
        );
        for ch in &c.data.channels {
            h = fnv(ch.iter().flat_map(|x| x.to_bits().to_le_bytes()), h);
        }
        h = fnv(c.data.label.iter().flat_map(|l| l.to_le_bytes()), h);
    }
    h = fnv((train.len() as u64).to_le_bytes(), h);
    h.to_le_bytes().to_vec()
}

/// Errors on every rank when any rank's `(what, bytes)` differ from rank 0's, naming the first
/// part that differs (every rank must be started on the same model, options and dataset).
fn check_ranks_agree(comm: &dyn Collective, parts: &[(&str, Vec<u8>)]) -> Result<(), TrainError> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mine: Vec<u8> = parts
        .iter()
        .flat_map(|(_, b)| fnv(b.iter().copied(), FNV_START).to_le_bytes())
        .collect();
    let mut root = mine.clone();
    comm.broadcast(&mut root)?;
    // Per part, the number of ranks that differ from rank 0.
    let mut differ: Vec<f64> = (0..parts.len())
        .map(|i| {
            f64::from(u8::from(
                root.get(8 * i..8 * i + 8) != Some(&mine[8 * i..8 * i + 8]),
            ))
        })
        .collect();
    comm.all_reduce_f64(&mut differ)?;
    if let Some(i) = differ.iter().position(|&d| d > 0.0) {
        return Err(TrainError::Distributed(format!(
            "the ranks disagree on the {}: {} of {} rank(s) differ from rank 0 (start every rank \
             with the same command, on the same model, checkpoint and dataset files)",
            parts[i].0,
            differ[i],
            comm.size()
        )));
    }
    Ok(())
}

/// The default model for a dataset: width 8 (max 64), four (2,2,2) pools, 1x3x3 convs, shift 5,
/// three deep-supervision heads, the patch from `patch` (default 48x64x48).
fn default_config(ds: &RawDataset, patch: Option<[usize; 3]>) -> Result<ModelConfig, TrainError> {
    let mut c = ModelConfig::amos_ct();
    c.name = "e2enc-train".into();
    c.in_channels = ds.channel_names.len();
    c.num_classes = ds.num_classes();
    c.base_width = 8;
    c.max_width = 64;
    c.pool_kernels = vec![[2, 2, 2]; 4];
    c.patch_size = patch.unwrap_or([48, 64, 48]);
    c.validate()
        .map_err(|m| TrainError::Setup(format!("default model: {m}")))?;
    Ok(c)
}

fn check_dataset_fits(c: &ModelConfig, ds: &RawDataset) -> Result<(), TrainError> {
    if c.in_channels != ds.channel_names.len() || c.num_classes != ds.num_classes() {
        return Err(TrainError::Setup(format!(
            "the model takes {} channel(s) and {} classes but the dataset has {} channel(s) and {} \
             classes",
            c.in_channels,
            c.num_classes,
            ds.channel_names.len(),
            ds.num_classes()
        )));
    }
    Ok(())
}

/// Loads and preprocesses every training case; splits off a validation set (every fifth case
/// after a fixed shuffle, at least one) when there are at least two cases, else validates on the
/// training case.
fn load_cases(
    ds: &RawDataset,
    plan: &PreprocessingConfig,
    note: &dyn Fn(&str),
) -> Result<(Vec<Case>, Vec<Case>), TrainError> {
    let mut cases = Vec::new();
    for (i, files) in ds.training.iter().enumerate() {
        note(&format!(
            "preprocessing case {}/{}: {}",
            i + 1,
            ds.training.len(),
            files.id
        ));
        let data = data::load_case(ds, files, plan)?;
        let locs = ClassLocations::new(&data);
        cases.push(Case { data, locs });
    }
    if cases.is_empty() {
        return Err(TrainError::Setup(
            "the dataset lists no training case".into(),
        ));
    }
    if cases.len() == 1 {
        note("one training case: validation patches come from it too (a progress signal, not a held-out score)");
        return Ok((cases.clone(), cases));
    }
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(12345);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let n_val = cases.len().div_ceil(5);
    let val_idx: Vec<usize> = order[..n_val].to_vec();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, c) in cases.into_iter().enumerate() {
        if val_idx.contains(&i) {
            val.push(c);
        } else {
            train.push(c);
        }
    }
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_that_cannot_fit_is_refused_before_it_starts_with_what_would_fit() {
        const G: u64 = 1 << 30;
        // Fits, or nothing known about the machine.
        check_host_memory(6 * G, G / 2, 1, Some(8 * G), Saved::F32).unwrap();
        check_host_memory(60 * G, G, 4, None, Saved::F32).unwrap();
        // The AMOS-CT recipe at batch 2 in f32 on a 10 GiB machine.
        let e = check_host_memory(12 * G, G / 4, 1, Some(10 * G), Saved::F32)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("12.2 GiB") && e.contains("10.0 GiB available"),
            "{e}"
        );
        assert!(
            e.contains("--precision bf16") && e.contains("--batch"),
            "{e}"
        );
        // Two ranks on one machine share it; a bf16 run is not told to use bf16.
        let e = check_host_memory(5 * G, 0, 2, Some(8 * G), Saved::Bf16)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("each of the 2 ranks") && !e.contains("--precision"),
            "{e}"
        );
    }
}
