//! The C renderer: one node in, a short list of specialized C functions out, for every C
//! dialect (x86 AVX2, x86 AVX-512, aarch64 NEON, portable C99: `dialect.rs`). The emitters write
//! each kernel once in the dialects' shared vector vocabulary; only the prelude differs.
//!
//! Every kernel follows the ABI of [`crate::emit`]: `void NAME(float *A, const float *W,
//! const int32_t *I, int64_t t0, int64_t t1)` over tiles `[t0, t1)`. Shapes, strides and arena
//! offsets are constants in the text; constants (weights re-laid-out for the kernel, index lists)
//! are appended to [`Consts`] and their offsets baked in. The text depends only on the node, so
//! the same model gives the same bytes.
//!
//! Contract kept by every kernel here:
//! - a tile writes only its own part of the output view (whole padded rows or planes, the
//!   padding written as zeros, so the layout invariant holds whatever the arena held before) and
//!   its own slots of the node's scratch;
//! - results do not depend on how tiles are split among threads: no tile reads what another
//!   tile of the same kernel writes, and every cross-tile reduction (instance-norm statistics)
//!   is a later kernel that sums per-tile partials in tile order.
//!
//! Files: `conv.rs` normalizes `Conv3d` / `ConvTranspose3d` / `FusedConv3d` and picks a path:
//! `conv_fast.rs` (kh = kw in {1, 3}, stride 1 or 2 in H/W, any depth geometry: the hot path,
//! its micro kernels, 8 or 16 lanes, in `conv_micro.rs`),
//! `conv_up.rs` (2x2 transposed, stride 2, the upsampling convs; their 16-lane kernel in
//! `conv_up_wide.rs`), `conv_generic.rs` (everything
//! else, scalar loops); `norm.rs` the instance-norm statistics and apply kernels; `simple.rs` the
//! elementwise and copy ops and max pooling; `channel.rs` softmax and argmax.
//!
//! `Argmax` writes int32 bit patterns into an f32 arena view of shape `[N, 1, D, H, W]` (the i32
//! result `[N, D, H, W]` with a unit channel axis); the padding stays all-zero bits.

mod channel;
pub(crate) mod conv;
mod conv_bf16;
mod conv_bf16_1x1;
mod conv_fast;
mod conv_generic;
mod conv_int8;
mod conv_int8_quads;
mod conv_micro;
mod conv_up;
mod conv_up_wide;
pub mod dialect;
mod norm;
mod simple;
mod text;

use e2enc_ir::{Op, TensorType};

use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::precision::Precision;

pub use conv::{reads_channel_map as conv_reads_channel_map, ConvPath};
pub use conv_bf16::enabled as conv_bf16_enabled;

/// The prelude of a bundle for `target`: its dialect's includes and vector vocabulary.
pub fn prelude_for(target: crate::target::Target) -> String {
    dialect::Dialect::of(target).prelude()
}

/// The prelude of a bundle for `target` computing in `precision`, activations stored as the
/// precision does by default ([`Precision::stores_bf16`]).
pub fn prelude_in(target: crate::target::Target, precision: Precision) -> String {
    prelude_with(target, precision, precision.stores_bf16(target))
}

/// The prelude of a bundle for `target` computing in `precision`, storing activations as bf16
/// where `narrow` (bf16 adds the pair packing and dot products of `conv_bf16.rs` and the bf16
/// storage vocabulary, int8 the quantization of `conv_int8.rs`; int8 with bf16 storage both,
/// its int8 functions then allowed the bf16 conversions too).
pub fn prelude_with(target: crate::target::Target, precision: Precision, narrow: bool) -> String {
    let mut s = prelude_for(target);
    let int8 = conv_int8::enabled(target, precision);
    let bf16 = conv_bf16::enabled(target, precision) || (int8 && narrow);
    if bf16 {
        s.push_str(dialect::X86_BF16);
        s.push_str(dialect::X86_NARROW);
    }
    if int8 {
        if bf16 {
            s.push_str(dialect::X86_INT8_NARROW);
        }
        s.push_str(dialect::X86_INT8);
    }
    s
}

/// Whether the kernels of a node with this op (reading `input`, its activation operand where it
/// has exactly one, into `output`) read and write bf16 activation views (`X86_NARROW`): the
/// fast-path convs (f32 and bf16 kernels, their fused norm included), the transposed 2x2x2
/// upsamplings and max pooling. Asked only for bf16 bundles (`Renderer::narrow_io`).
pub fn narrow_io(op: &Op, input: Option<&TensorType>, output: &TensorType) -> bool {
    match op {
        Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) => {
            input.is_some_and(|x| conv::narrow_io(op, x, output))
        }
        Op::MaxPool3d(a) => a.kernel[2] == 2 && a.stride[2] == 2,
        _ => false,
    }
}

/// Scratch (f32 elements) a node needs beyond [`scratch_elems`] when its output is stored as
/// bf16 (a normalized conv's per-tile shifts: `NodeCtx::shift_at`).
pub fn narrow_scratch(op: &Op, input: &TensorType, output: &TensorType) -> usize {
    match op {
        Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) => {
            conv::shift_elems(op, input, output)
        }
        _ => 0,
    }
}

/// Arena scratch (in f32 elements) that the kernels of a node with this op and these types use.
pub fn scratch_elems(op: &Op, inputs: &[TensorType], output: &TensorType) -> usize {
    match op {
        Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) => {
            conv::scratch_elems(op, inputs, output)
        }
        Op::InstanceNorm { .. } => norm::standalone_scratch(output),
        _ => 0,
    }
}

/// The kernels of one node, to run in the returned order (each over all its tiles), with the
/// convolutions' multiplications in `precision` where the target has kernels for it.
pub fn emit(
    ctx: &NodeCtx,
    consts: &mut Consts,
    precision: Precision,
) -> Result<Vec<Kernel>, EmitError> {
    emit_with(ctx, consts, precision, precision.stores_bf16(ctx.isa))
}

/// [`emit`] for a bundle that stores activations as bf16 where `narrow` (an int8 bundle's convs
/// without int8 kernels then multiply in bf16 where they have bf16 kernels).
pub fn emit_with(
    ctx: &NodeCtx,
    consts: &mut Consts,
    precision: Precision,
    narrow: bool,
) -> Result<Vec<Kernel>, EmitError> {
    let bf16 = ctx.inputs.iter().chain([&ctx.output]).any(|v| v.is_bf16());
    if bf16
        && !matches!(
            ctx.op,
            Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) | Op::MaxPool3d(_)
        )
    {
        return Err(err(
            ctx,
            "bf16 activations where this op's kernels have no bf16 form",
        ));
    }
    let mut ks = emit_op(ctx, consts, precision, narrow)?;
    if bf16 {
        // Its functions convert bf16 with the instructions the bundle requires anyway
        // (`X86_NARROW`'s conversions carry `E2_BF16`, and inline only into functions that do).
        for k in &mut ks {
            k.source = with_bf16_target(&k.source);
        }
    }
    Ok(ks)
}

/// `source` with every function definition at the start of a line that lacks a target
/// attribute given `E2_BF16`.
fn with_bf16_target(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 256);
    for line in source.split_inclusive('\n') {
        if line.starts_with("static void ") || line.starts_with("void ") {
            out.push_str("E2_BF16 ");
        }
        out.push_str(line);
    }
    out
}

fn emit_op(
    ctx: &NodeCtx,
    consts: &mut Consts,
    precision: Precision,
    narrow: bool,
) -> Result<Vec<Kernel>, EmitError> {
    match ctx.op {
        Op::Conv3d(_) | Op::ConvTranspose3d(_) | Op::FusedConv3d(_) => {
            conv::emit(ctx, consts, conv::Narrow::of(ctx.isa, precision, narrow))
        }
        Op::InstanceNorm { eps } => norm::emit_standalone(ctx, consts, *eps),
        Op::LeakyRelu { slope } => simple::leaky_relu(ctx, *slope),
        Op::Add => simple::add(ctx),
        Op::DepthShift(a) => simple::depth_shift(ctx, a.groups),
        Op::SelectChannels { axis, ranges } => simple::select(ctx, *axis, ranges),
        Op::Concat => simple::concat(ctx),
        Op::MaxPool3d(a) => simple::max_pool(ctx, a),
        Op::Softmax => channel::softmax(ctx),
        Op::Argmax => channel::argmax(ctx),
        Op::Input { .. } | Op::Weight { .. } => Err(err(ctx, "inputs and weights have no kernel")),
        Op::ConvBackwardData(_)
        | Op::ConvBackwardWeight(_)
        | Op::ChannelSum
        | Op::DepthShiftBackward(_)
        | Op::InstanceNormBackward { .. }
        | Op::InstanceNormGammaGrad { .. }
        | Op::LeakyReluBackward { .. }
        | Op::MaxPoolBackward(_) => Err(err(
            ctx,
            "not supported by the C code generator: training op",
        )),
    }
}

/// An [`EmitError`] naming the node.
pub(crate) fn err(ctx: &NodeCtx, msg: impl Into<String>) -> EmitError {
    EmitError {
        what: format!("{} ({} {})", ctx.label, ctx.op.mnemonic(), ctx.node),
        msg: msg.into(),
    }
}

/// Checks the number of activation inputs and constants a node came with.
pub(crate) fn expect_operands(
    ctx: &NodeCtx,
    inputs: usize,
    consts: usize,
) -> Result<(), EmitError> {
    if ctx.inputs.len() != inputs || ctx.consts.len() != consts {
        return Err(err(
            ctx,
            format!(
                "expected {inputs} activation input(s) and {consts} constant(s), got {} and {}",
                ctx.inputs.len(),
                ctx.consts.len()
            ),
        ));
    }
    Ok(())
}
