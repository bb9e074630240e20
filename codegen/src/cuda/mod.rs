//! The CUDA renderer: the same planned nodes as the C renderer ([`crate::emit::NodeCtx`]: arena
//! views, constants, scratch), written as header-free CUDA C++ `__global__` kernels with a
//! launch each ([`crate::emit::Launch`]), for the `cuda-sm80` and `cuda-sm90` targets.
//!
//! Files: `text.rs` the prelude, the kernel signature and index expressions; `conv.rs` the
//! convolutions (shift read through, sparse CSR, bias, activation; norm kernels after);
//! `ops.rs` everything else; [`nvrtc`] turns the text into CUBIN and PTX and checks the
//! ptxas report ([`Toolchain`] is what `compile` calls, with a CUBIN cache); the
//! runtime runs them on a GPU, or the same text on the CPU through its host emulation
//! (`e2enc_runtime::emulate`), which is how the kernels are checked against the interpreter on
//! machines without a GPU.
//!
//! What the kernels are: stride-1 `1x3x3`, `1x1x1` and `3x3x3` same-padding convolutions run as
//! implicit GEMMs on tensor cores (`mma.rs`: TF32 `m16n8k8` or bf16 `m16n8k16`, f32
//! accumulation, instance-norm statistics from their epilogue; DSFF sparsity as the union of a
//! 16-output group's live inputs, the outputs grouped to share inputs by [`groups`], which at
//! random 20% masks still leaves 29% of the issued MACs useful); everything else (strided and
//! transposed convs, `--precision f32`, which skips every dead kernel on CUDA cores) is direct,
//! one thread per output value, with no shared-memory tiling. The runtime captures a bundle's
//! launches in a CUDA graph. Not built: staging live input planes in shared memory, and tiling
//! of the direct kernels.

mod conv;
pub mod groups;
mod mma;
pub use mma::Mma;
pub mod nvrtc;
mod ops;
pub mod ptxas;
pub mod text;
pub mod train;

use std::collections::HashSet;

use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::{Op, TensorType};

use crate::c::err;
use crate::compile::CodegenError;
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::precision::Precision;
use crate::render::Renderer;
use crate::target::Target;
use crate::train::TrainGenerated;

/// The CUDA renderer of one GPU target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaRenderer {
    target: Target,
    precision: Precision,
}

impl CudaRenderer {
    /// The renderer of a CUDA `target` computing in `precision` (`None` for a CPU target).
    pub fn new(target: Target, precision: Precision) -> Option<CudaRenderer> {
        target
            .is_cuda()
            .then_some(CudaRenderer { target, precision })
    }
}

impl Renderer for CudaRenderer {
    fn target(&self) -> Target {
        self.target
    }

    fn prelude(&self) -> String {
        text::PRELUDE.to_string()
    }

    fn scratch_elems(&self, op: &Op, inputs: &[TensorType], output: &TensorType) -> usize {
        let nc = match output.shape.as_slice() {
            [n, c, ..] => n * c,
            _ => return 0,
        };
        match op {
            Op::FusedConv3d(a) if a.norm_eps.is_some() => {
                let dims = |t: &TensorType| <[usize; 5]>::try_from(t.shape.as_slice()).ok();
                let geom = inputs
                    .first()
                    .and_then(dims)
                    .zip(dims(output))
                    .map(|(x, y)| crate::c::conv::Geom::of(a, x, y));
                match geom {
                    Some(g) if self.precision != Precision::F32 && mma::takes(&g) => {
                        ops::partials_scratch(nc, mma::partials_per_channel(&g))
                    }
                    _ => ops::norm_scratch(nc),
                }
            }
            Op::InstanceNorm { .. } => ops::norm_scratch(nc),
            _ => 0,
        }
    }

    fn reads_channel_map(&self, _op: &Op, _input: &TensorType, _output: &TensorType) -> bool {
        false
    }

    fn node(&self, ctx: &NodeCtx, consts: &mut Consts) -> Result<Vec<Kernel>, EmitError> {
        if ctx.isa != self.target {
            return Err(err(
                ctx,
                format!(
                    "node planned for target {}, rendered for {}",
                    ctx.isa, self.target
                ),
            ));
        }
        if ctx.channel_map.is_some() {
            return Err(err(ctx, "CUDA kernels read no channel maps"));
        }
        match ctx.op {
            Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) => {
                conv::emit(ctx, consts, self.precision)
            }
            Op::InstanceNorm { eps } => ops::instance_norm(ctx, consts, *eps),
            Op::LeakyRelu { slope } => ops::leaky_relu(ctx, *slope),
            Op::Add => ops::add(ctx),
            Op::DepthShift(a) => ops::depth_shift(ctx, consts, a.groups),
            Op::SelectChannels { axis, ranges } => ops::select(ctx, consts, *axis, ranges),
            Op::Concat => ops::concat(ctx),
            Op::MaxPool3d(a) => ops::max_pool(ctx, a),
            Op::Softmax => ops::softmax(ctx),
            Op::Argmax => ops::argmax(ctx),
            Op::Input { .. } | Op::Weight { .. } => {
                Err(err(ctx, "inputs and weights have no kernel"))
            }
            _ => Err(err(
                ctx,
                "not supported by the CUDA code generator: training op (GPU training is not built yet)",
            )),
        }
    }

    /// f32 kernels, except with `Precision::Tf32` or `Precision::Bf16`: then the convs
    /// [`train`]'s tensor-core kernels take (forward, data and weight gradients) run on
    /// tensor cores in that format.
    fn training(
        &self,
        tg: &TrainGraph,
        maskable: Option<&HashSet<String>>,
    ) -> Result<TrainGenerated, CodegenError> {
        let tensor_cores = match self.precision {
            Precision::F32 => None,
            Precision::Tf32 => Some(mma::Mma::Tf32),
            Precision::Bf16 => Some(mma::Mma::Bf16),
            p => {
                return Err(CodegenError::Other(format!(
                    "GPU training computes in f32, tf32 or bf16, not {}",
                    p.name()
                )))
            }
        };
        train::generate(tg, self.target, maskable, tensor_cores)
    }
}

/// What builds a CUDA bundle's device code: NVRTC ([`nvrtc`]), loaded at compile time.
pub struct Toolchain {
    nvrtc: nvrtc::Nvrtc,
}

/// The device code of a bundle.
pub struct DeviceCode {
    pub cubin: Vec<u8>,
    pub ptx: String,
    /// The ptxas report of every kernel.
    pub resources: Vec<nvrtc::KernelResources>,
    /// Whether the CUBIN came from the cache (same source, SM and NVRTC).
    pub from_cache: bool,
}

impl Toolchain {
    /// Loads NVRTC ([`nvrtc::load`]: `$E2ENC_NVRTC`, the folder of `scripts/fetch-nvrtc.sh`, or
    /// the system's); the error says how to get it.
    pub fn load() -> Result<Toolchain, CodegenError> {
        nvrtc::load()
            .map(|nvrtc| Toolchain { nvrtc })
            .map_err(|e| CodegenError::Other(format!("CUDA targets need NVRTC: {e}")))
    }

    /// NVRTC's version.
    pub fn version(&self) -> (i32, i32) {
        self.nvrtc.version()
    }

    /// The manifest's description of the GPU build.
    pub fn info(&self, target: Target, precision: Precision) -> crate::artifact::CudaInfo {
        let (a, b) = self.nvrtc.version();
        crate::artifact::CudaInfo {
            sm: target.sm().unwrap_or(0),
            nvrtc: format!("{a}.{b}"),
            min_driver: self.nvrtc.min_driver(),
            precision: precision.name().into(),
        }
    }

    /// The manifest's compiler entry.
    pub fn compiler(&self, target: Target) -> crate::artifact::Compiler {
        let (a, b) = self.nvrtc.version();
        crate::artifact::Compiler {
            command: format!("nvrtc ({})", self.nvrtc.path().display()),
            version: format!("{a}.{b}"),
            flags: nvrtc::options(target.sm().unwrap_or(0)),
        }
    }

    /// Compiles `source` for `target` (through the CUBIN cache) and checks every kernel's
    /// resources (no spills, registers and shared memory within the SM's limits) against the
    /// launches of `kernels`.
    pub fn build(
        &self,
        source: &str,
        target: Target,
        kernels: &[Kernel],
    ) -> Result<DeviceCode, CodegenError> {
        let sm = target
            .sm()
            .ok_or_else(|| CodegenError::Other(format!("{target} is not a CUDA target")))?;
        let c = self
            .nvrtc
            .compile_cached(source, sm, None)
            .map_err(|e| CodegenError::Other(format!("NVRTC: {e}")))?;
        let launches: Vec<(String, crate::emit::Launch)> = kernels
            .iter()
            .filter_map(|k| k.launch.clone().map(|l| (k.name.clone(), l)))
            .collect();
        nvrtc::check_resources(&c.resources, &launches, sm).map_err(|e| {
            CodegenError::Other(format!(
                "the CUDA kernels for {target} do not fit the GPU's resources:\n{e}"
            ))
        })?;
        Ok(DeviceCode {
            cubin: c.cubin,
            ptx: c.ptx,
            resources: c.resources,
            from_cache: c.from_cache,
        })
    }
}
