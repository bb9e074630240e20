//! Renderers: the seam between what a kernel computes and the code of one target.
//!
//! What a node's kernels compute is fixed before any text is written: the memory plan
//! ([`crate::memplan`]) gives every node its geometry, arena views, scratch, channel map and
//! constants ([`NodeCtx`]); kernel choice and tiling that do not depend on an instruction set are
//! typed values next to the emitters (the convolution's path, [`crate::c::ConvPath`], and the hot
//! path's blocking, strips, layouts and epilogue, `c::conv_fast::FastConv`). A [`Renderer`] turns
//! those into the source of one target, for bundles ([`Renderer::node`], [`Renderer::prelude`])
//! and for training graphs ([`Renderer::training`]), with one kernel ABI for both
//! ([`crate::emit::kernel_signature`]).
//!
//! Today there is one renderer, [`CRenderer`]: C in four vector dialects (x86 AVX2, x86 AVX-512,
//! aarch64 NEON, portable C; [`crate::c::dialect`]), every kernel written once in the dialects'
//! shared vocabulary. [`for_target`] picks the renderer of a [`Target`]; `compile` and the
//! training executor go only through this trait.
//!
//! # Adding the CUDA renderer
//!
//! 1. The target table (`e2enc_runtime::target`, re-exported as [`crate::target`]) gets
//!    `cuda-sm80` / `cuda-sm90` entries (no host architecture; the "features" are the SM
//!    version), so `--target`, the manifest and the runtime's refusal messages work unchanged.
//! 2. A `cuda/` folder next to `c/` holds `CudaRenderer: Renderer`, and [`for_target`] returns
//!    it for those targets. `prelude` is header-free CUDA (NVRTC has no headers: bf16 conversions
//!    and `mma.sync` as inline PTX); `node` reads the same [`NodeCtx`] (views are offsets into the
//!    arena, which becomes one device allocation) and the same typed choices (`ConvPath`,
//!    `FastConv`'s blocking, which a CUDA renderer maps to thread blocks), and writes
//!    `__global__` kernels; [`Kernel`] grows a launch description (grid, block, shared memory)
//!    that the C renderer leaves empty; `scratch_elems` says what its kernels need in the arena.
//!    `training` writes the training graph's CUDA kernels (`crate::cuda::train`), each with
//!    its launch in `TrainKernel::launch`.
//! 3. `compile` builds the source with NVRTC (`cudarc::nvrtc`) instead of the C compiler and
//!    records the launch table in the manifest; the runtime's device seam
//!    (`e2enc_runtime::device`) gets a CUDA device that loads the module and runs the launches.
//!
//! Nothing in the planner or the IR changes for a new renderer.

use std::collections::HashSet;

use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::{Op, TensorType};

use crate::compile::CodegenError;
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::precision::Precision;
use crate::target::Target;
use crate::train::TrainGenerated;

/// Renders kernels for one target.
pub trait Renderer {
    /// The target it renders for.
    fn target(&self) -> Target;

    /// The text in front of every kernel of a bundle (includes, the dialect's vocabulary).
    fn prelude(&self) -> String;

    /// Arena scratch (f32 elements) the kernels of a node with this op and these activation
    /// input and output types need; the memory plan reserves it.
    fn scratch_elems(&self, op: &Op, inputs: &[TensorType], output: &TensorType) -> usize;

    /// Whether the node's kernels can read their activation input through a channel map (the
    /// memory plan may then store an in-place concat in another channel order).
    fn reads_channel_map(&self, op: &Op, input: &TensorType, output: &TensorType) -> bool;

    /// Whether the node's kernels can run lagged, their output stored over their input (see
    /// `memplan/lag.rs`), and with how many planes of lag. None by default (a GPU runs a kernel's
    /// blocks in no order).
    fn lag_planes(&self, _op: &Op, _input: &TensorType, _output: &TensorType) -> Option<usize> {
        None
    }

    /// Whether the node's kernels read their activation inputs and write their output as bf16
    /// where the memory plan stores them so (`Elem::Bf16` views). None by default.
    fn narrow_io(&self, _op: &Op, _input: Option<&TensorType>, _output: &TensorType) -> bool {
        false
    }

    /// Planes of the ring a conv streams an upsampled concat part through (see
    /// `NodeCtx::stream`); None where the renderer does not stream.
    fn stream_slots(&self) -> Option<usize> {
        None
    }

    /// The kernels of one planned node, to run in the returned order; constants they read are
    /// appended to `consts`.
    fn node(&self, ctx: &NodeCtx, consts: &mut Consts) -> Result<Vec<Kernel>, EmitError>;

    /// The kernels of a training graph (prepared by [`crate::train::prepare`]), forward and
    /// backward; only the weights in `maskable` (all when `None`) may get live-kernel masks.
    fn training(
        &self,
        tg: &TrainGraph,
        maskable: Option<&HashSet<String>>,
    ) -> Result<TrainGenerated, CodegenError>;
}

/// The C renderer: one kernel text in the vector vocabulary, the target's dialect as prelude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CRenderer {
    target: Target,
    precision: Precision,
    /// Activations stored as bf16 where every kernel touching them can (`X86_NARROW`).
    narrow: bool,
}

impl CRenderer {
    /// The C renderer of `target` (every CPU target has a C dialect) in `precision` (checked by
    /// the caller, [`Precision::check`]: f32, or bf16 on x86-avx512).
    pub fn new(target: Target, precision: Precision) -> CRenderer {
        CRenderer::storing(target, precision, precision.stores_bf16(target))
    }

    /// [`CRenderer::new`], storing activations as bf16 where `narrow` (bf16 and int8 on
    /// x86-avx512 only: elsewhere there are no bf16 kernels, and `narrow` is ignored).
    pub fn storing(target: Target, precision: Precision, narrow: bool) -> CRenderer {
        CRenderer {
            target,
            precision,
            narrow: narrow && precision.stores_bf16(target),
        }
    }
}

impl Renderer for CRenderer {
    fn target(&self) -> Target {
        self.target
    }

    fn prelude(&self) -> String {
        crate::c::prelude_with(self.target, self.precision, self.narrow)
    }

    fn scratch_elems(&self, op: &Op, inputs: &[TensorType], output: &TensorType) -> usize {
        crate::c::scratch_elems(op, inputs, output)
    }

    fn reads_channel_map(&self, op: &Op, input: &TensorType, output: &TensorType) -> bool {
        crate::c::conv_reads_channel_map(op, input, output)
    }

    fn lag_planes(&self, op: &Op, input: &TensorType, output: &TensorType) -> Option<usize> {
        crate::c::conv::lag_planes(op, input, output)
    }

    fn stream_slots(&self) -> Option<usize> {
        Some(crate::c::conv::STREAM_SLOTS)
    }

    fn narrow_io(&self, op: &Op, input: Option<&TensorType>, output: &TensorType) -> bool {
        self.narrow && crate::c::narrow_io(op, input, output)
    }

    fn node(&self, ctx: &NodeCtx, consts: &mut Consts) -> Result<Vec<Kernel>, EmitError> {
        if ctx.isa != self.target {
            return Err(EmitError {
                what: ctx.label.clone(),
                msg: format!(
                    "node planned for target {}, rendered for {}",
                    ctx.isa, self.target
                ),
            });
        }
        crate::c::emit_with(ctx, consts, self.precision, self.narrow)
    }

    fn training(
        &self,
        tg: &TrainGraph,
        maskable: Option<&HashSet<String>>,
    ) -> Result<TrainGenerated, CodegenError> {
        crate::train::generate_train_masked(tg, self.target, maskable)
    }
}

/// The renderer of `target` in its default precision
/// ([`crate::precision::Precision::default_for`]).
pub fn for_target(target: Target) -> Box<dyn Renderer> {
    for_target_in(target, crate::precision::Precision::default_for(target))
}

/// The renderer of `target` computing in `precision` (checked by the caller,
/// [`crate::precision::Precision::check`]): [`crate::cuda::CudaRenderer`] for CUDA targets,
/// else C (f32, or bf16 on x86-avx512).
pub fn for_target_in(target: Target, precision: Precision) -> Box<dyn Renderer> {
    for_target_storing(target, precision, precision.stores_bf16(target))
}

/// [`for_target_in`], storing activations as bf16 where `narrow` allows
/// ([`CRenderer::storing`]; `--activations f32` passes `false`).
pub fn for_target_storing(target: Target, precision: Precision, narrow: bool) -> Box<dyn Renderer> {
    match crate::cuda::CudaRenderer::new(target, precision) {
        Some(r) => Box::new(r),
        None => Box::new(CRenderer::storing(target, precision, narrow)),
    }
}
