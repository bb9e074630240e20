//! `compile`: model → optimized graph → plan → C kernels → bundle folder.
//!
//! The bundle is assembled in a staging folder next to the destination and renamed into place
//! at the end, so a failed compile never leaves a half-written bundle. The bundle is signed
//! (`manifest.sig`, see [`e2enc_runtime::sign`]) with the given key or the user's local key
//! ([`crate::keys::local_key`]), inside the staging folder, so it appears signed or not at all. `kernels.c` is a pure
//! function of the model and options (same inputs, same bytes); the C compiler is called with
//! explicit flags of the chosen [`Target`] (`-O2 -mavx2 -mfma`, plus `-mavx512f` for AVX-512), not
//! `-march=native`, so a bundle runs on any host with the CPU features its manifest lists.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use e2enc_ir::e2enet::Model;
use e2enc_ir::stats::graph_stats;
use e2enc_ir::{DType, Graph, NodeId, Op, Tensor, Weights};
use e2enc_passes::{optimize, OptimizeOptions, Report};

use crate::artifact::{plan_digest, sha256_hex, Compiler, Manifest, Port, Step, FORMAT, VERSION};
use crate::emit::{Consts, Kernel, NodeCtx};
use crate::keys::{PublicKey, SecretKey};
use crate::layout::View;
use crate::memplan::{plan_with, Narrow, Plan};
use crate::precision::Precision;
use crate::quant::{graph_digest, Calibration};
pub use crate::target::Target;

/// Errors of compilation.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error(transparent)]
    Ir(#[from] e2enc_ir::IrError),
    #[error(transparent)]
    Emit(#[from] crate::emit::EmitError),
    #[error("{0}")]
    Plan(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the C compiler failed ({command}):\n{stderr}")]
    Cc { command: String, stderr: String },
    #[error("{0}")]
    Other(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CodegenError + '_ {
    move |source| CodegenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of one compilation.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Keep the deep-supervision outputs (default: `logits` only).
    pub deep_supervision: bool,
    /// The C compiler command; `None`: [`CompileOptions::compiler`] picks `$CC` or `cc` for a
    /// target of this host's architecture, the target's cross compiler for another.
    pub cc: Option<String>,
    /// Replace an existing bundle folder.
    pub force: bool,
    pub optimize: OptimizeOptions,
    /// Instruction set of the kernels (default: [`Target::native`], the compiling host's widest).
    pub isa: Target,
    /// Also write `standalone/`: a C program of the bundle (see [`crate::standalone`]).
    pub standalone: bool,
    /// The secret key file to sign the bundle with; `None`: the local key
    /// ([`crate::keys::local_key`], created on first use).
    pub sign: Option<PathBuf>,
    /// The kernels' arithmetic; `None`: the target's default
    /// ([`Precision::default_for`]: tf32 on CUDA, f32 on CPUs).
    pub precision: Option<Precision>,
    /// `--precision int8`: the activation ranges measured on this model's optimized graph
    /// ([`crate::quant`]; get them from the [`CompileReport::probes`] of an `observe` bundle).
    pub calibration: Option<Calibration>,
    /// Plan for calibration ([`GenOptions::observe`]).
    pub observe: bool,
    /// Keep activations f32 in the arena (`--activations f32`; [`GenOptions::f32_activations`]).
    pub f32_activations: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            deep_supervision: false,
            cc: None,
            force: false,
            optimize: OptimizeOptions::default(),
            isa: Target::native(),
            standalone: false,
            sign: None,
            precision: None,
            calibration: None,
            observe: false,
            f32_activations: false,
        }
    }
}

/// This host's C compiler: `$CC`, else `cc`.
pub use e2enc_runtime::cc::compiler as host_cc;

impl CompileOptions {
    /// The C compiler that builds `kernels.so`: the one given, else [`host_cc`] for targets this
    /// host's architecture runs, else the target's cross compiler (`aarch64-linux-gnu-gcc`).
    pub fn compiler(&self) -> String {
        if let Some(cc) = &self.cc {
            return cc.clone();
        }
        self.isa
            .cross_compiler()
            .map_or_else(host_cc, str::to_string)
    }
}

/// What a compilation did.
pub struct CompileReport {
    pub manifest: Manifest,
    pub optimize: Report,
    pub kernels: usize,
    /// In-place concats the memory plan stores in another channel order (their readers address
    /// channels through a map), which lets buffers rotate through fewer arena slots.
    pub reordered_concats: usize,
    pub codegen_seconds: f64,
    pub cc_seconds: f64,
    /// The key that signed the bundle, and its secret key file.
    pub signed_by: PublicKey,
    pub key_file: PathBuf,
    /// Where calibration reads each conv's input ([`Probe`]).
    pub probes: Vec<Probe>,
    /// The digest of the optimized graph ([`crate::quant::graph_digest`]).
    pub graph_digest: String,
    /// What the tensor-core convs issue, summed (`None` when none runs on tensor cores).
    pub tensor_cores: Option<crate::emit::MmaWork>,
}

/// Where a conv's input lies in the arena just before the conv's first step runs: what
/// calibration reads (in a bundle planned with [`GenOptions::observe`], every conv's input is
/// whole there then).
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// The conv's node index in the optimized graph.
    pub node: usize,
    pub label: String,
    /// Its first step.
    pub step: usize,
    /// Its activation input.
    pub view: View,
    /// The stored channel of each logical input channel.
    pub channels: Vec<usize>,
}

/// How [`generate_with`] plans and emits beyond the target and precision.
#[derive(Clone, Copy, Debug, Default)]
pub struct GenOptions<'a> {
    /// Plan an f32 bundle for calibration: no lagged convs (their output overwrites their
    /// input) and no streamed upsamplings (part of a conv's input is never whole), so every
    /// conv's input is whole in the arena when its first step starts ([`Probe`]).
    pub observe: bool,
    /// `--precision int8`: the calibrated activation ranges of the graph's convs.
    pub calibration: Option<&'a Calibration>,
    /// Keep activations f32 in the arena where the precision would store them as bf16
    /// ([`Precision::stores_bf16`]): an int8 bundle then needs `avx512_vnni` alone.
    pub f32_activations: bool,
}

impl GenOptions<'_> {
    /// Whether a bundle for `isa` in `precision` planned with these options stores activations
    /// as bf16 (where every kernel touching them can).
    pub fn narrow(&self, isa: Target, precision: Precision) -> bool {
        precision.stores_bf16(isa) && !self.f32_activations && !self.observe
    }
}

/// Generated code for a graph, before it is written anywhere.
pub struct Generated {
    pub graph: Graph,
    pub plan: Plan,
    pub kernels: Vec<Kernel>,
    pub consts: Consts,
    pub source: String,
    /// Every conv's input, for calibration.
    pub probes: Vec<Probe>,
}

/// Largest activation arena a bundle may have: 256 GiB, beyond any machine e2enc targets; a
/// larger one is a mistake (an absurd `--patch`), refused before any kernel is written.
pub const MAX_ARENA_BYTES: u64 = 256 << 30;

/// Plans and emits the kernels of an (optimized) graph for `isa` in its default precision.
pub fn generate(g: &Graph, w: &Weights, isa: Target) -> Result<Generated, CodegenError> {
    generate_in(g, w, isa, Precision::default_for(isa))
}

/// A node's activation views, constant tensors and input channel map.
type Operands<'a> = (Vec<View>, Vec<&'a Tensor>, Option<Vec<usize>>);

/// [`generate`] in `precision`.
pub fn generate_in(
    g: &Graph,
    w: &Weights,
    isa: Target,
    precision: Precision,
) -> Result<Generated, CodegenError> {
    generate_with(g, w, isa, precision, GenOptions::default())
}

/// [`generate_in`] with [`GenOptions`].
pub fn generate_with(
    g: &Graph,
    w: &Weights,
    isa: Target,
    precision: Precision,
    go: GenOptions,
) -> Result<Generated, CodegenError> {
    precision.check(isa).map_err(CodegenError::Other)?;
    let calibration = match (precision, go.calibration) {
        (Precision::Int8, None) => {
            return Err(CodegenError::Other(
                "--precision int8 needs activation ranges: calibrate on a folder of cases \
                 (`e2enc compile --precision int8 --calibrate DIR`)"
                    .into(),
            ))
        }
        (Precision::Int8, Some(c)) => {
            let digest = graph_digest(&e2enc_ir::text::print(g));
            if c.graph != digest {
                return Err(CodegenError::Other(format!(
                    "the calibration was measured on another graph (digest {}, this one {}): \
                     calibrate again with this model and these options",
                    short(&c.graph),
                    short(&digest)
                )));
            }
            Some(c)
        }
        _ => None,
    };
    let renderer = crate::render::for_target_storing(isa, precision, go.narrow(isa, precision));
    let scratch = |id| {
        let tys: Vec<_> = g
            .operands(id)
            .iter()
            .filter(|&&o| !matches!(g.node(o).op, Op::Weight { .. }))
            .map(|&o| g.node(o).ty.clone())
            .collect();
        renderer.scratch_elems(&g.node(id).op, &tys, &g.node(id).ty)
    };
    let one_act = |id: NodeId| crate::memplan::one_activation(g, id);
    let reads_map = |id: NodeId| {
        one_act(id).is_some_and(|x| {
            renderer.reads_channel_map(&g.node(id).op, &g.node(x).ty, &g.node(id).ty)
        })
    };
    let lag = |id: NodeId| {
        if go.observe {
            return None;
        }
        one_act(id).and_then(|x| renderer.lag_planes(&g.node(id).op, &g.node(x).ty, &g.node(id).ty))
    };
    // Upsamplings streamed into the conv reading their concat (CPU kernels only).
    let streams = match renderer.stream_slots() {
        Some(_) if !go.observe => crate::c::conv::stream_candidates(g),
        _ => HashMap::new(),
    };
    let ring_of = |y: NodeId| -> Option<usize> {
        let slots = renderer.stream_slots()?;
        let (&u, _) = streams.iter().find(|(_, &yy)| yy == y)?;
        let shape: [usize; 5] = g.node(u).ty.shape.as_slice().try_into().ok()?;
        let v = View::padded(0, shape);
        Some(v.shape[1] * slots * v.d_stride)
    };
    let own_scratch = |id: NodeId| scratch(id).div_ceil(16) * 16;
    let scratch = |id: NodeId| match ring_of(id) {
        Some(ring) => own_scratch(id) + ring,
        None => scratch(id),
    };
    // bf16 bundles store an activation as bf16 where every kernel touching it can (`X86_NARROW`);
    // not the f32 plans calibration observes.
    let narrow_io = |id: NodeId| {
        !go.observe
            && renderer.narrow_io(
                &g.node(id).op,
                one_act(id).map(|x| &g.node(x).ty),
                &g.node(id).ty,
            )
    };
    // A normalized conv stored as bf16 keeps per-tile shifts after its scratch and ring.
    let narrow_extra = |id: NodeId| match one_act(id) {
        Some(x) => crate::c::narrow_scratch(&g.node(id).op, &g.node(x).ty, &g.node(id).ty),
        None => 0,
    };
    let ring_elems = |id: NodeId| ring_of(id).unwrap_or(0);
    let rules = Narrow {
        writes: &narrow_io,
        reads: &narrow_io,
        scratch: &narrow_extra,
        ring: &ring_elems,
    };
    let plan = plan_with(g, scratch, reads_map, lag, &streams, Some(&rules))
        .map_err(CodegenError::Plan)?;
    let arena_bytes = (plan.arena_elems as u64).saturating_mul(4);
    if arena_bytes > MAX_ARENA_BYTES {
        return Err(CodegenError::Plan(format!(
            "the activation arena would need {:.1} GiB, more than the limit of {} GiB: the patch \
             or batch is far too large for one run (a 128^3 patch of the AMOS-CT network needs \
             about 1 GB)",
            arena_bytes as f64 / (1u64 << 30) as f64,
            MAX_ARENA_BYTES >> 30
        )));
    }
    let mut consts = Consts::default();
    let mut kernels = Vec::new();
    let mut probes = Vec::new();
    let operands = |id: NodeId| -> Result<Operands, CodegenError> {
        let (mut inputs, mut tensors, mut channel_map) = (Vec::new(), Vec::new(), None);
        for o in g.operands(id) {
            if let Some(m) = plan.channel_maps.get(&o) {
                channel_map = Some(m.clone());
            }
            match &g.node(o).op {
                Op::Weight { name } => {
                    tensors.push(w.get(name).map(|t| t.as_ref()).ok_or_else(|| {
                        CodegenError::Other(format!("weight `{name}` is missing"))
                    })?)
                }
                _ => inputs.push(plan.views[&o].clone()),
            }
        }
        Ok((inputs, tensors, channel_map))
    };
    let label = |id: NodeId| {
        let node = g.node(id);
        node.label
            .clone()
            .unwrap_or_else(|| node.op.mnemonic().to_string())
    };
    for (i, &id) in plan.steps.iter().enumerate() {
        // A streamed upsampling runs inside the conv that reads it.
        if plan.in_place.contains(&id) || plan.streamed.contains_key(&id) {
            continue;
        }
        let node = g.node(id);
        let (inputs, tensors, channel_map) = operands(id)?;
        // This conv runs a streamed upsampling: its context writes the ring in our scratch.
        let mut stream = None;
        let mut ring_in = None;
        if let Some((&u, _)) = plan.streamed.iter().find(|(_, &y)| y == id) {
            let slots = renderer.stream_slots().expect("streams need slots");
            let at = plan.scratch[&id] + own_scratch(id);
            let uv = &plan.views[&u];
            let cat = &plan.views[&g.operands(id)[0]];
            // The ring holds values of the concat it stands in for, stored as it is.
            let mut ring = match cat.is_bf16() {
                true => View::padded_bf16(at, uv.shape),
                false => View::padded(at, uv.shape),
            };
            ring.c_stride = slots * ring.d_stride;
            ring.n_stride = uv.shape[1] * ring.c_stride;
            ring_in = Some(crate::emit::RingIn {
                u0: (uv.offset - cat.offset) / cat.c_stride,
                nu: uv.shape[1],
                offset: ring.offset,
                slots,
            });
            let (up_inputs, up_tensors, _) = operands(u)?;
            stream = Some(Box::new(NodeCtx {
                node: u,
                prefix: format!("k{i}u"),
                op: &g.node(u).op,
                label: label(u),
                inputs: up_inputs,
                consts: up_tensors,
                output: ring,
                scratch: 0,
                channel_map: None,
                isa,
                lag: None,
                ring: Some(slots),
                stream: None,
                ring_in: None,
                act_ranges: calibration
                    .and_then(|c| c.convs.get(&u.index()))
                    .map(|c| c.ranges.clone()),
                shift_at: None,
            }));
        }
        let ctx = NodeCtx {
            node: id,
            prefix: format!("k{i}"),
            op: &node.op,
            label: node
                .label
                .clone()
                .unwrap_or_else(|| node.op.mnemonic().to_string()),
            inputs,
            consts: tensors,
            output: plan.views[&id].clone(),
            scratch: plan.scratch.get(&id).copied().unwrap_or(0),
            channel_map,
            isa,
            lag: plan.lagged.get(&id).map(|&planes| crate::emit::Lagged {
                planes,
                group: crate::c::conv::LAG_GROUP,
                stash: plan.stash[&id],
            }),
            ring: None,
            stream,
            ring_in,
            act_ranges: calibration
                .and_then(|c| c.convs.get(&id.index()))
                .map(|c| c.ranges.clone()),
            shift_at: plan.narrow_scratch.get(&id).copied(),
        };
        if matches!(
            node.op,
            Op::Conv3d(_) | Op::FusedConv3d(_) | Op::ConvTranspose3d(_)
        ) && ctx.inputs.len() == 1
        {
            let x = &ctx.inputs[0];
            probes.push(Probe {
                node: id.index(),
                label: ctx.label.clone(),
                step: kernels.len(),
                view: x.clone(),
                channels: ctx
                    .channel_map
                    .clone()
                    .unwrap_or_else(|| (0..x.shape[1]).collect()),
            });
        }
        kernels.extend(renderer.node(&ctx, &mut consts)?);
    }
    let mut source =
        String::from("/* Generated by e2enc: shape-specialized kernels of one E2ENet bundle. */\n");
    source.push_str(&renderer.prelude());
    for k in &kernels {
        source.push('\n');
        source.push_str(&k.source);
    }
    Ok(Generated {
        graph: g.clone(),
        plan,
        kernels,
        consts,
        source,
        probes,
    })
}

/// The first 12 hex digits of a digest, for messages.
fn short(d: &str) -> &str {
    &d[..d.len().min(12)]
}

fn cc_version(cc: &str) -> String {
    Command::new(cc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Compiles `c_file` into `so_file` with the flags of `isa` ([`Target::cflags`]; the runtime's
/// [`e2enc_runtime::cc::compile`], which `--rebuild` uses too).
pub fn run_cc(cc: &str, c_file: &Path, so_file: &Path, isa: Target) -> Result<(), CodegenError> {
    e2enc_runtime::cc::compile(cc, c_file, so_file, isa).map_err(|e| CodegenError::Cc {
        command: e.command,
        stderr: e.stderr,
    })
}

fn port(g: &Graph, plan: &Plan, name: &str, id: e2enc_ir::NodeId) -> Port {
    let ty = &g.node(id).ty;
    Port {
        name: name.to_string(),
        shape: ty.shape.clone(),
        dtype: if ty.dtype == DType::I32 { "i32" } else { "f32" }.into(),
        view: plan.views[&id].clone(),
    }
}

/// Compiles `model` into the bundle folder `out`.
pub fn compile(
    model: &Model,
    out: &Path,
    opts: &CompileOptions,
) -> Result<CompileReport, CodegenError> {
    let weights = model.require_weights()?;
    // The staging folders of killed or crashed earlier compiles of this output go first.
    e2enc_ir::files::clean_stale_temps(out);
    if out.exists() && !opts.force {
        return Err(CodegenError::Other(format!(
            "{} exists; pass --force to replace it",
            out.display()
        )));
    }
    if let Ok(m) = std::fs::symlink_metadata(out) {
        // --force replaces a bundle (or an empty folder), never anything else.
        let replaceable = m.is_dir()
            && (out.join("manifest.json").is_file()
                || std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none()));
        if !replaceable {
            return Err(CodegenError::Other(format!(
                "{} is {}: --force replaces only a bundle folder or an empty one; choose another \
                 -o",
                out.display(),
                if m.is_dir() {
                    "a folder that is not a bundle"
                } else {
                    "a file"
                }
            )));
        }
    }
    let (key, key_file) = match &opts.sign {
        Some(p) => (SecretKey::load(p).map_err(CodegenError::Other)?, p.clone()),
        None => crate::keys::local_key().map_err(CodegenError::Other)?,
    };
    let t0 = Instant::now();
    let mut oo = opts.optimize.clone();
    oo.keep_outputs = (!opts.deep_supervision).then(|| vec!["logits".to_string()]);
    let o = optimize(&model.net.graph, weights, &oo)?;
    let precision = opts
        .precision
        .unwrap_or_else(|| Precision::default_for(opts.isa));
    let go = GenOptions {
        observe: opts.observe,
        calibration: opts.calibration.as_ref(),
        f32_activations: opts.f32_activations,
    };
    let narrow = go.narrow(opts.isa, precision);
    let gen = generate_with(&o.graph, &o.weights, opts.isa, precision, go)?;
    let codegen_seconds = t0.elapsed().as_secs_f64();

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let stage = e2enc_ir::files::temp_path(out);
    std::fs::create_dir_all(&stage).map_err(io(&stage))?;
    let g = &gen.graph;
    let st = graph_stats(g, Some(&o.weights));
    let cuda = opts.isa.is_cuda();
    let toolchain = if cuda {
        if opts.standalone {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(CodegenError::Other(format!(
                "--standalone writes a C program; {} kernels are CUDA (compile for a CPU target \
                 for a standalone build)",
                opts.isa
            )));
        }
        match crate::cuda::Toolchain::load() {
            Ok(t) => Some(t),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&stage);
                return Err(e);
            }
        }
    } else {
        None
    };
    let cc = opts.compiler();
    let mut manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        model: serde_json::to_value(&model.config)
            .map_err(|e| CodegenError::Other(e.to_string()))?,
        graph: e2enc_ir::text::print(g),
        inputs: g
            .inputs()
            .iter()
            .map(|(n, id)| port(g, &gen.plan, n, *id))
            .collect(),
        outputs: g
            .outputs()
            .iter()
            .map(|(n, id)| port(g, &gen.plan, n, *id))
            .collect(),
        arena_elems: gen.plan.arena_elems,
        buffers: gen.plan.buffers.clone(),
        steps: gen
            .kernels
            .iter()
            .map(|k| Step {
                kernel: k.name.clone(),
                tiles: k.tiles,
                first_tile: k.first_tile,
                flops: k.flops,
                what: k.what.clone(),
                launch: k.launch.clone(),
            })
            .collect(),
        consts_f32: gen.consts.f32.len(),
        consts_i32: gen.consts.i32.len(),
        compiler: match &toolchain {
            Some(t) => t.compiler(opts.isa),
            None => Compiler {
                command: cc.clone(),
                version: cc_version(&cc),
                flags: opts.isa.cflags().iter().map(|s| s.to_string()).collect(),
            },
        },
        target: Some(opts.isa.name().to_string()),
        cpu_features: opts
            .isa
            .cpu_features()
            .iter()
            .chain(precision.cpu_features(opts.isa))
            .chain(precision.narrow_features(opts.isa, narrow))
            .map(|s| s.to_string())
            .collect(),
        precision: (!cuda && precision != Precision::F32).then(|| precision.name().to_string()),
        cuda: toolchain.as_ref().map(|t| t.info(opts.isa, precision)),
        dense_macs: st.dense_macs,
        executed_macs: st.sparse_macs,
        files: BTreeMap::new(),
    };
    let source = format!(
        "{}\n/* e2enc-plan: {} */\n",
        gen.source,
        plan_digest(&manifest)
    );
    let result = (|| -> Result<f64, CodegenError> {
        let c_file = stage.join(crate::artifact::source_file(cuda));
        std::fs::write(&c_file, &source).map_err(io(&c_file))?;
        let t1 = Instant::now();
        match &toolchain {
            Some(t) => {
                let dev = t.build(&source, opts.isa, &gen.kernels)?;
                let cubin = stage.join("kernels.cubin");
                std::fs::write(&cubin, &dev.cubin).map_err(io(&cubin))?;
                let ptx = stage.join("kernels.ptx");
                std::fs::write(&ptx, &dev.ptx).map_err(io(&ptx))?;
            }
            None => run_cc(&cc, &c_file, &stage.join("kernels.so"), opts.isa)?,
        }
        let cc_seconds = t1.elapsed().as_secs_f64();
        let mut blobs = Weights::new();
        blobs.insert(
            "W",
            Tensor::from_f32([gen.consts.f32.len()], gen.consts.f32.clone())?,
        );
        blobs.insert(
            "I",
            Tensor::from_i32([gen.consts.i32.len()], gen.consts.i32.clone())?,
        );
        let wbytes = blobs.to_bytes(None).map_err(CodegenError::Other)?;
        let w_file = stage.join("weights.safetensors");
        std::fs::write(&w_file, &wbytes).map_err(io(&w_file))?;
        if opts.standalone {
            let dir = stage.join(crate::standalone::DIR);
            crate::standalone::write(&dir, &manifest, &source, &wbytes, opts.isa)?;
        }
        for &f in crate::artifact::files_of(cuda) {
            let p = stage.join(f);
            manifest.files.insert(
                f.to_string(),
                sha256_hex(&std::fs::read(&p).map_err(io(&p))?),
            );
        }
        let mut text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| CodegenError::Other(e.to_string()))?;
        text.push('\n');
        let m_file = stage.join("manifest.json");
        std::fs::write(&m_file, &text).map_err(io(&m_file))?;
        let s_file = stage.join(e2enc_runtime::sign::SIG_FILE);
        std::fs::write(&s_file, key.sign_manifest(text.as_bytes())).map_err(io(&s_file))?;
        Ok(cc_seconds)
    })();
    let cc_seconds = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
    };
    // The old bundle steps aside (hidden, cleaned by the next compile if this one dies here),
    // the new one takes its place, then the old one goes: `out` is always a whole bundle or
    // briefly absent, never a mixture.
    let aside = e2enc_ir::files::temp_path(out);
    let had_old = out.exists();
    if had_old {
        if let Err(e) = std::fs::rename(out, &aside) {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(io(out)(e));
        }
    }
    if let Err(e) = std::fs::rename(&stage, out) {
        let _ = std::fs::remove_dir_all(&stage);
        if had_old {
            let _ = std::fs::rename(&aside, out);
        }
        return Err(io(out)(e));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&aside);
    }
    let digest = graph_digest(&manifest.graph);
    Ok(CompileReport {
        manifest,
        optimize: o.report,
        kernels: gen.kernels.len(),
        tensor_cores: gen.kernels.iter().filter_map(|k| k.mma).reduce(|mut a, b| {
            a += b;
            a
        }),
        reordered_concats: gen.plan.channel_maps.len(),
        codegen_seconds,
        cc_seconds,
        signed_by: key.public(),
        key_file,
        graph_digest: digest,
        probes: gen.probes,
    })
}
