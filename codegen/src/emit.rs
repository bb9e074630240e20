//! The contract between the planner and the kernel renderers (C here; CUDA kernels, `crate::cuda`,
//! keep the same arena and constants but have their own signature and a [`Launch`]).
//!
//! Every generated CPU kernel, inference and training alike, is a C function with one signature
//! ([`kernel_signature`]; the runtime's `e2enc_runtime::pool::KernelFn`, run by one thread pool),
//!
//! ```c
//! void NAME(float *restrict A, const float *restrict W, const int32_t *restrict I,
//!           int64_t t0, int64_t t1);
//! ```
//!
//! where `A` is the memory the kernel writes, `W` and `I` what it reads besides (f32 and i32),
//! and `[t0, t1)` a range of the kernel's independent tiles. In a bundle `A` is the activation
//! arena and `W`, `I` the constant blobs (weights and indices, re-laid-out by the emitters); in a
//! training step (`crate::train`) `A` is the node's output tensor, `W` the table of its operands'
//! buffers (`const float *const *`, cast) and `I` the live-kernel list of a DSFF weight. The
//! kernel's text binds the names it uses to the arguments in its first lines. The runtime owns the threads: it splits `[0, tiles)` among them, so tiles must write
//! disjoint memory. Every offset (arena views, constants) is baked into the C text as a
//! constant; shapes are too, so each kernel is specialized to its layer. A node may need several
//! kernels run in sequence (a convolution with an instance norm: the convolution writing partial
//! statistics, a reduction, then the normalize + activation pass).

use e2enc_ir::{NodeId, Op, Tensor};

use crate::layout::View;
pub use e2enc_runtime::format::Launch;

/// The C signature line (opening brace included) of kernel `name`: the one CPU kernel ABI.
pub fn kernel_signature(name: &str) -> String {
    format!(
        "void {name}(float *restrict A, const float *restrict W, const int32_t *restrict I, \
         int64_t t0, int64_t t1) {{\n"
    )
}

/// Constants the kernels read: appended by the emitters, stored in the bundle's weights file.
#[derive(Clone, Debug, Default)]
pub struct Consts {
    pub f32: Vec<f32>,
    pub i32: Vec<i32>,
}

impl Consts {
    /// Appends `v` (64-byte aligned) and returns its offset in `W`.
    pub fn push_f32(&mut self, v: &[f32]) -> usize {
        while !self.f32.len().is_multiple_of(16) {
            self.f32.push(0.0);
        }
        let at = self.f32.len();
        self.f32.extend_from_slice(v);
        at
    }

    /// Appends `v` (64-byte aligned) and returns its offset in `I`.
    pub fn push_i32(&mut self, v: &[i32]) -> usize {
        while !self.i32.len().is_multiple_of(16) {
            self.i32.push(0);
        }
        let at = self.i32.len();
        self.i32.extend_from_slice(v);
        at
    }
}

/// One generated C function.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// The C function name (a valid identifier, unique in the bundle).
    pub name: String,
    /// The function's C definition (helpers it needs are `static inline` in its own text or in
    /// the shared prelude).
    pub source: String,
    /// Number of independent tiles (the step runs `first_tile .. first_tile + tiles`).
    pub tiles: usize,
    /// The first tile the step runs. A kernel run in several steps (tile groups with a barrier
    /// between them) appears once per step; only its first appearance carries the `source`.
    pub first_tile: usize,
    /// Floating-point operations it performs (2 per MAC), for profiles.
    pub flops: u64,
    /// What it does, for profiles (e.g. `x0_1.u0 conv sparse`).
    pub what: String,
    /// How a CUDA kernel is launched (grid, block, shared memory); `None` for C kernels, whose
    /// `tiles` the thread pool runs.
    pub launch: Option<Launch>,
    /// For a tensor-core conv: what its MMAs issue (`flops` counts only the live kernels).
    pub mma: Option<MmaWork>,
}

/// The multiply-adds a tensor-core conv issues: every entry of a 16-output group's K list for
/// all 16 outputs (zero weights of dead kernels and padding included), as compiled (`macs`) and
/// with the plain groups of 16 consecutive outputs (`plain_macs`, equal unless
/// `crate::cuda::groups` regrouped them); `live_macs` is what its live kernels need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmaWork {
    pub macs: u64,
    pub plain_macs: u64,
    pub live_macs: u64,
}

impl std::ops::AddAssign for MmaWork {
    fn add_assign(&mut self, o: MmaWork) {
        self.macs += o.macs;
        self.plain_macs += o.plain_macs;
        self.live_macs += o.live_macs;
    }
}

/// How a lagged conv runs (see `memplan/lag.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged {
    /// The lag in output planes: output plane `z` lands where input plane `z - planes` was.
    pub planes: usize,
    /// Output planes per step (a barrier between steps).
    pub group: usize,
    /// Arena offset of the stash: the first `planes` planes of every output channel, written
    /// there by the conv and copied into place after its last group.
    pub stash: usize,
}

/// Everything an emitter needs to know about one node.
pub struct NodeCtx<'a> {
    pub node: NodeId,
    /// A prefix for kernel names, unique per node (e.g. `k12`).
    pub prefix: String,
    pub op: &'a Op,
    /// The label of the node, for profiles.
    pub label: String,
    /// Views of the activation operands, in operand order (weights excluded).
    pub inputs: Vec<View>,
    /// Constant operands (weights, packed weights, kernel indices, bias, norm parameters), in
    /// operand order.
    pub consts: Vec<&'a Tensor>,
    pub output: View,
    /// Arena offset (f32 elements, 64-byte aligned) of this node's scratch, of the size
    /// `scratch_elems` asked for.
    pub scratch: usize,
    /// Where each logical channel of the activation input is stored, when the memory plan keeps
    /// it in another order (only conv kernels of the fast path get one: `conv_reads_channel_map`).
    pub channel_map: Option<Vec<usize>>,
    /// Instruction set to generate for.
    pub isa: crate::target::Target,
    /// The memory plan stored this conv's output over its input (`memplan/lag.rs`): run it in
    /// depth order, a group of planes per step, its first planes through a stash.
    pub lag: Option<Lagged>,
    /// The output view's planes wrap: plane `z` is stored at `z % ring` (a power of two). Set
    /// for a streamed upsampling's kernel, whose output is a ring of planes (see [`Stream`]).
    pub ring: Option<usize>,
    /// This conv runs the upsampling that feeds part of its input concat (its context here,
    /// output into a ring of planes in this conv's scratch: `ring` set), a few planes ahead of
    /// its own: that part is never stored whole.
    pub stream: Option<Box<NodeCtx<'a>>>,
    /// Where this conv reads the part of its input that a ring stands for.
    pub ring_in: Option<RingIn>,
    /// `--precision int8`: the calibrated range `[lo, hi]` of each logical input channel of
    /// this conv (`crate::quant`); a conv without stays f32.
    pub act_ranges: Option<Vec<[f32; 2]>>,
    /// This conv's output is stored as bf16 and instance-normalized: the arena offset (f32
    /// elements, in its scratch) of the per-tile shifts its kernel subtracts before storing
    /// (see `c::conv_micro::epilogue`), one f32 per (sample, channel, tile).
    pub shift_at: Option<usize>,
}

/// Input channels read from a ring of planes instead of the input view (a streamed upsampling's
/// output, see `NodeCtx::stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingIn {
    /// The stored channels of the input view the ring stands for: `u0 .. u0 + nu`.
    pub u0: usize,
    pub nu: usize,
    /// The ring's arena offset (its view: the input's geometry, `slots` planes a channel).
    pub offset: usize,
    /// Planes per channel (a power of two): plane `z` is stored at `z % slots`.
    pub slots: usize,
}

/// Error of an emitter.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate code for {what}: {msg}")]
pub struct EmitError {
    pub what: String,
    pub msg: String,
}
