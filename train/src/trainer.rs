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
//! Determinism: every random choice comes from one ChaCha8 stream whose state is checkpointed
//! (validation uses its own stream seeded by the epoch), and every kernel gives the same bits
//! whatever the thread count, so `--resume` continues exactly as an uninterrupted run would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
use super::exec::{Backend, Executor, LiveMasks};
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

/// A training run.
pub struct Trainer {
    out: PathBuf,
    dataset: PathBuf,
    opts: TrainOptions,
    config: ModelConfig,
    train: Vec<Case>,
    val: Vec<Case>,
    exec: Executor,
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
        let mut opts = opts;
        opts.validate().map_err(TrainError::Setup)?;
        opts.target = match opts.kernels {
            Backend::Generated(t) => Some(t.name().to_string()),
            Backend::Reference => None,
        };
        let ds = RawDataset::open(dataset)?;
        checkpoint::clean_partial(out)?;
        clean_run_temps(out);
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
        checkpoint::clean_partial(out)?;
        clean_run_temps(out);
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
        options.kernels = match (kernels, &options.target) {
            (Some(k), _) => k,
            (None, None) => Backend::default(),
            (None, Some(name)) => {
                let t: Target = name.parse().map_err(|e: String| {
                    TrainError::Checkpoint(format!("{}: {e}", dir.join("state.json").display()))
                })?;
                if !t.host_supports() {
                    return Err(TrainError::Checkpoint(format!(
                        "the run in {} was trained on target `{name}`, which this machine cannot \
                         run; pass --target (e.g. portable) to continue on another target (the \
                         result then differs in rounding from an uninterrupted run)",
                        out.display()
                    )));
                }
                Backend::Generated(t)
            }
        };
        if let Backend::Generated(t) = options.kernels {
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
    ) -> Result<Trainer, TrainError> {
        let net = build(
            &config,
            &BuildOptions {
                batch: opts.batch,
                patch: None,
            },
        )?;
        let outputs: Vec<String> = (0..=config.deep_supervision_heads)
            .map(output_name)
            .collect();
        let names: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let tg = training_graph(&net.graph, &names)?;
        let maskable: std::collections::HashSet<String> = masks.names().cloned().collect();
        let exec = Executor::with_maskable(&tg, threads, opts.kernels, &maskable)?;
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
            train,
            val,
            exec,
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
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The per-epoch history so far.
    pub fn history(&self) -> &[EpochLog] {
        &self.history
    }

    /// Seconds spent in each op kind (forward and backward, training and validation) so far in
    /// this process.
    pub fn profile(&self) -> &BTreeMap<&'static str, f64> {
        &self.exec.profile
    }

    /// Trains until the last epoch, or until `stop()` says so (then checkpoints).
    pub fn train(
        &mut self,
        events: &mut dyn FnMut(Event),
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Outcome, TrainError> {
        let iters = self.opts.iters_per_epoch;
        let total = self.opts.epochs * iters;
        self.epoch_started = Instant::now();
        while self.epoch < self.opts.epochs {
            let lr = optim::poly_lr(self.epoch, self.opts.epochs, self.opts.lr);
            while self.iter < iters {
                if stop() {
                    self.save()?;
                    return Ok(Outcome::Stopped);
                }
                let l = self.step(lr)?;
                self.loss_sum += l;
                let global = self.epoch * iters + self.iter + 1;
                if self.opts.update_frequency > 0
                    && global.is_multiple_of(self.opts.update_frequency)
                    && global < total
                {
                    let rate = sparse::death_rate(global, total, 0.5, 0.001);
                    let st = self.masks.update(
                        &mut self.weights,
                        &mut self.sgd.momentum_buffers,
                        rate,
                        &mut self.rng,
                    )?;
                    self.mask_updates += 1;
                    events(Event::Note(format!(
                        "  DSFF update {} at iteration {global}: {} kernels pruned and regrown \
                         (rate {rate:.3})",
                        self.mask_updates, st.regrown
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
            self.save()?;
            self.epoch_started = Instant::now();
        }
        Ok(Outcome::Finished)
    }

    fn live_masks(&self) -> LiveMasks {
        self.masks
            .layers()
            .map(|(name, m)| (name.clone(), m.alive.clone()))
            .collect()
    }

    /// One optimisation step; returns the batch loss.
    fn step(&mut self, lr: f64) -> Result<f64, TrainError> {
        let (input, labels) = self.train_batch()?;
        let live = self.live_masks();
        let inputs: BTreeMap<String, Tensor> = [("input".to_string(), input)].into();
        let heads = self.head_factors.clone();
        let patch = self.config.patch_size;
        let batch = self.opts.batch;
        let res = self.exec.step(&self.weights, &live, &inputs, |outs| {
            deep_supervision_loss(outs, &labels, batch, patch, &heads, true)
        })?;
        let mut grads = res.grads;
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

    /// Validation: loss and pseudo-Dice per foreground class over `val_iters` batches.
    fn validate(&mut self) -> Result<(f64, Vec<f64>), TrainError> {
        let n = self.opts.val_iters;
        let classes = self.config.num_classes;
        if n == 0 {
            return Ok((f64::NAN, vec![f64::NAN; classes - 1]));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.opts.seed ^ (self.epoch as u64 + 1) << 20);
        let live = self.live_masks();
        let (mut tp, mut fp, mut fnn) = (
            vec![0u64; classes],
            vec![0u64; classes],
            vec![0u64; classes],
        );
        let mut loss_sum = 0.0;
        for _ in 0..n {
            let (input, labels) = sample_batch(
                &self.val,
                self.opts.batch,
                self.config.patch_size,
                &AugmentConfig::none(),
                &mut rng,
            )?;
            let inputs: BTreeMap<String, Tensor> = [("input".to_string(), input)].into();
            let outs = self.exec.forward(&self.weights, &live, &inputs)?;
            let (l, _) = deep_supervision_loss(
                &outs,
                &labels,
                self.opts.batch,
                self.config.patch_size,
                &self.head_factors,
                false,
            )?;
            loss_sum += l;
            let logits = outs["logits"].as_f32().expect("f32 logits");
            let vox: usize = self.config.patch_size.iter().product();
            for b in 0..self.opts.batch {
                let pred = argmax(&logits[b * classes * vox..(b + 1) * classes * vox], classes);
                for (v, &best) in pred.iter().enumerate() {
                    let best = best as usize;
                    let t = labels[b * vox + v] as usize;
                    if best == t {
                        tp[t] += 1;
                    } else {
                        fp[best] += 1;
                        fnn[t] += 1;
                    }
                }
            }
        }
        let dice = (1..classes)
            .map(|c| {
                let d = 2 * tp[c] + fp[c] + fnn[c];
                if d == 0 {
                    f64::NAN
                } else {
                    2.0 * tp[c] as f64 / d as f64
                }
            })
            .collect();
        Ok((loss_sum / n as f64, dice))
    }

    fn train_batch(&mut self) -> Result<(Tensor, Vec<u16>), TrainError> {
        sample_batch(
            &self.train,
            self.opts.batch,
            self.config.patch_size,
            &self.augment,
            &mut self.rng,
        )
    }

    /// Writes the checkpoint, training.json and training.png.
    pub fn save(&self) -> Result<(), TrainError> {
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

/// `batch` patches (input `[B, C, patch]`, labels `[B, patch]`) from random cases.
fn sample_batch(
    cases: &[Case],
    batch: usize,
    patch: [usize; 3],
    aug: &AugmentConfig,
    rng: &mut ChaCha8Rng,
) -> Result<(Tensor, Vec<u16>), TrainError> {
    let ch = cases[0].data.channels.len();
    let vox: usize = patch.iter().product();
    let mut x = Vec::with_capacity(batch * ch * vox);
    let mut y = Vec::with_capacity(batch * vox);
    let sampler = SamplerConfig::new(patch);
    for _ in 0..batch {
        let case = &cases[rng.random_range(0..cases.len())];
        let p = sampler::draw_patch(&case.data, &case.locs, &sampler, aug, rng)?;
        for c in &p.channels {
            x.extend_from_slice(c);
        }
        y.extend_from_slice(&p.label);
    }
    let input = Tensor::from_f32(vec![batch, ch, patch[0], patch[1], patch[2]], x)?;
    Ok((input, y))
}

/// Deep-supervision Dice + CE over the heads (weights 8/15, 4/15, 2/15, 1/15 renormalised over
/// the heads present) and the gradient of every head's logits.
fn deep_supervision_loss(
    outs: &BTreeMap<String, std::sync::Arc<Tensor>>,
    labels: &[u16],
    batch: usize,
    patch: [usize; 3],
    heads: &[[usize; 3]],
    want_grad: bool,
) -> Result<(f64, BTreeMap<String, Tensor>), TrainError> {
    let raw: Vec<f64> = (0..heads.len()).map(|s| 0.5f64.powi(s as i32)).collect();
    let norm: f64 = raw.iter().sum();
    let mut total = 0.0;
    let mut grads = BTreeMap::new();
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
        let l = loss::dc_and_ce(
            t.as_f32().expect("f32"),
            [sh[0], sh[1], sh[2], sh[3], sh[4]],
            &lbl,
        )?;
        let w = raw[s] / norm;
        total += w * l.total;
        if want_grad {
            let g: Vec<f32> = l.grad.iter().map(|v| (*v as f64 * w) as f32).collect();
            grads.insert(name, Tensor::from_f32(sh.to_vec(), g)?);
        }
    }
    Ok((total, grads))
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
