//! Generated C kernels for training graphs (`e2enc_ir::autodiff::training_graph`): one
//! shape-specialized C function per compute node, forward and backward alike, over dense
//! row-major `[N, C, D, H, W]` f32 tensors (the layout of `Tensor`, so the runtime passes its
//! buffers as they are, with no arena and no padding).
//!
//! ABI of every kernel: the bundle kernels' ([`crate::emit::kernel_signature`]: `void NAME(float
//! *A, const float *W, const int32_t *I, int64_t t0, int64_t t1)`, so the runtime's thread pool
//! runs both), written by [`head`], which binds `out = A` (the node's output), `in` = `W` read as
//! the `const float *const *` table of the node's operands in operand order, `live = I` and
//! `[lo, hi) = [t0, t1)`, the output tiles to compute ([`TrainKernel::tiles`] in all). A tile is
//! an output channel (convolutions), a weight row (weight gradients), an `(n, c)` plane (norms,
//! pooling, copies), a channel (channel sums) or a fixed block of elements (pointwise ops); no
//! reduction is split across tiles and the order of the work inside a tile is fixed, so results are
//! bit-identical for any thread count. Kernels allocate nothing and touch no globals; their
//! scratch lives on the stack (a row, a padded plane or one weight's taps, at most ~0.5 MiB).
//!
//! Kernel sparsity (DSFF) is not baked into the code: every convolution kernel of a maskable
//! weight reads a live-kernel list at run time (`live`, built by [`live_csr`] from the weight's
//! mask each step), so dead kernels cost nothing and get exactly zero weight gradient; weights
//! declared dense ([`generate_train_masked`]) get kernels that compute several output channels
//! per tile. Shapes are baked in: a training run has fixed batch and patch sizes. The ISA only
//! adds AVX-512 intrinsic kernels (weight gradients, pooling) where it is `Avx512`; everything
//! else is portable C that gcc vectorizes (`fmaf` for the convolutions' multiply-adds, so
//! contraction never depends on the compiler's choices).
//!
//! Files: `conv.rs` (the three convolution families: gather, scatter, weight gradient),
//! `conv_flat.rs` (their stride-1 fast path over whole planes), `wgrad512.rs` (the AVX-512
//! weight gradient of stride-1 convs), `pool.rs` (max pooling), `simple.rs` (norms, pointwise and
//! copy ops), `tests.rs` (against the interpreter).
//!
//! The graph goes through the passes first ([`prepare`]: `e2enc_passes::pipeline::training`),
//! which fuse the depth shift into the convolutions that read it (`fused_conv3d` with shifts, a
//! weight gradient reading its input through the shift) and the shift's backward into the data
//! gradient before it (`conv_backward_data` with shifts); the emitters read those attributes, so
//! no shifted copy is made in either direction.

pub(crate) mod conv;
mod conv_flat;
mod pool;
mod simple;
mod wgrad512;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::{Graph, NodeId, Op};

use crate::compile::CodegenError;
use crate::emit::Launch;
use crate::target::Target;

/// How a kernel reads its `live` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Not read (pass any pointer, e.g. null).
    None,
    /// A CSR ([`live_csr`]) of the weight `[d0, d1, k..]`'s live kernels, one row per `d0` index
    /// (`transposed = false`) or per `d1` index (`transposed = true`).
    Csr {
        d0: usize,
        d1: usize,
        transposed: bool,
    },
    /// One int per kernel of the weight `[d0, d1, k..]`, row-major: 1 when live, else 0 (what
    /// the tensor-core kernels read, masking each weight they load).
    Table { d0: usize, d1: usize },
}

impl Live {
    /// The ints of the list for `mask` (`None`: every kernel live); `None` when the mask has
    /// the wrong length.
    pub fn build(&self, mask: Option<&[bool]>) -> Option<Vec<i32>> {
        match *self {
            Live::None => Some(vec![0]),
            Live::Csr { d0, d1, transposed } => live_csr(mask, d0, d1, transposed),
            Live::Table { d0, d1 } => match mask {
                None => Some(vec![1; d0 * d1]),
                Some(m) if m.len() == d0 * d1 => Some(m.iter().map(|&l| i32::from(l)).collect()),
                Some(_) => None,
            },
        }
    }

    /// The most ints [`Live::build`] returns for any mask.
    pub fn capacity(&self) -> usize {
        match *self {
            Live::None => 1,
            Live::Csr { d0, d1, transposed } => (if transposed { d1 } else { d0 }) + 1 + d0 * d1,
            Live::Table { d0, d1 } => d0 * d1,
        }
    }

    /// The weight's `[d0, d1]` this list covers (`None` for [`Live::None`]).
    pub fn dims(&self) -> Option<(usize, usize)> {
        match *self {
            Live::None => None,
            Live::Csr { d0, d1, .. } | Live::Table { d0, d1 } => Some((d0, d1)),
        }
    }
}

/// One generated kernel.
#[derive(Clone, Debug)]
pub struct TrainKernel {
    /// The training-graph node it computes.
    pub node: NodeId,
    /// The C function's name.
    pub name: String,
    /// Tiles in all: call with `[lo, hi)` covering `0..tiles`.
    pub tiles: usize,
    /// Relative work of each tile in multiply-adds (for profiling and splitting), all tiles.
    pub work: u64,
    pub live: Live,
    /// The weight (by name) whose live-kernel mask builds `live`; `None` for a dense kernel.
    pub mask: Option<String>,
    /// The convolution's weight (by name), masked or not.
    pub weight: Option<String>,
    /// Operand nodes, in the order of the `in` array.
    pub operands: Vec<NodeId>,
    /// How a CUDA kernel is launched (`tiles` = its blocks); `None` for a C kernel.
    pub launch: Option<Launch>,
    /// Bytes of device scratch the kernel needs, zero on entry and left zero on exit, whose
    /// address follows the operands' in its `in` table (`in[operands.len()]`); 0 for none.
    /// One buffer of the largest serves every kernel of a step (they run one after another).
    pub scratch: usize,
}

/// The text of a training graph's kernels and their descriptions.
#[derive(Clone, Debug)]
pub struct TrainGenerated {
    /// C for a CPU target; header-free CUDA C++ for a CUDA target (`crate::cuda::train`).
    pub c_source: String,
    pub kernels: Vec<TrainKernel>,
}

/// Everything an emitter needs about one node.
pub(crate) struct Ctx<'a> {
    pub g: &'a Graph,
    pub id: NodeId,
    pub name: String,
    pub op: &'a Op,
    /// Operand shapes.
    pub ins: Vec<Vec<usize>>,
    pub out: Vec<usize>,
    /// Per-channel depth offset operand 0 is read through (a `fused_conv3d`'s or a weight
    /// gradient's shifts).
    pub shift0: Option<Vec<i64>>,
    /// A `conv_backward_data`'s shifts: per-channel offsets applied to the output
    /// (`out[c, d] = value[c, d + s]`, the depth shift's backward).
    pub out_unshift: Option<Vec<i64>>,
    pub isa: Target,
    /// A live-kernel mask may apply (a DSFF weight): the kernel must follow `live`.
    pub masked: bool,
}

/// What an emitter returns.
pub(crate) struct Emitted {
    pub source: String,
    pub tiles: usize,
    pub work: u64,
    pub live: Live,
    /// See [`TrainKernel::scratch`].
    pub scratch: usize,
}

pub(crate) fn err(g: &Graph, id: NodeId, msg: impl Into<String>) -> CodegenError {
    CodegenError::Other(format!(
        "training kernel for {}: {}",
        g.describe(id),
        msg.into()
    ))
}

/// The shared prelude: includes and lane-blocked f64 sums (vectorizable without reassociation).
fn prelude(target: Target) -> String {
    let mut s = String::new();
    s.push_str("/* Generated by e2enc: shape-specialized kernels of one training graph. */\n");
    s.push_str("#pragma GCC optimize(\"O3\")\n");
    s.push_str("#include <stdint.h>\n#include <string.h>\n#include <math.h>\n");
    if target == Target::X86Avx512 {
        // Only the AVX-512 kernels (weight gradients, pooling) use intrinsics.
        s.push_str("#include <immintrin.h>\n");
    }
    s.push('\n');
    s.push_str(
        "/* Sum of x[0..n) in f64, eight lanes then lane order: a fixed order. */\n\
static double e2t_sum(const float *restrict x, int64_t n) {\n\
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};\n\
  int64_t i = 0;\n\
  for (; i + 8 <= n; i += 8)\n\
    for (int k = 0; k < 8; k++) l[k] += (double)x[i + k];\n\
  for (; i < n; i++) l[i & 7] += (double)x[i];\n\
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));\n\
}\n\n\
/* Sum of (x - m)^2 in f64. */\n\
static double e2t_sumsq(const float *restrict x, int64_t n, double m) {\n\
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};\n\
  int64_t i = 0;\n\
  for (; i + 8 <= n; i += 8)\n\
    for (int k = 0; k < 8; k++) { double d = (double)x[i + k] - m; l[k] += d * d; }\n\
  for (; i < n; i++) { double d = (double)x[i] - m; l[i & 7] += d * d; }\n\
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));\n\
}\n\n\
/* Sum of y * (x - m) in f64. */\n\
static double e2t_dotc(const float *restrict y, const float *restrict x, int64_t n, double m) {\n\
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};\n\
  int64_t i = 0;\n\
  for (; i + 8 <= n; i += 8)\n\
    for (int k = 0; k < 8; k++) l[k] += (double)y[i + k] * ((double)x[i + k] - m);\n\
  for (; i < n; i++) l[i & 7] += (double)y[i] * ((double)x[i] - m);\n\
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));\n\
}\n\n\
/* Mean and 1/sqrt(var + eps) of one plane (biased variance, two passes). */\n\
static void e2t_stats(const float *restrict x, int64_t n, float eps, double *mean, double *rstd) {\n\
  double m = e2t_sum(x, n) / (double)n;\n\
  double v = e2t_sumsq(x, n, m) / (double)n;\n\
  *mean = m;\n\
  *rstd = 1.0 / sqrt(v + (double)eps);\n\
}\n",
    );
    s
}

/// The CSR of live kernels of a `[d0, d1, ..]` weight: `[ptr(rows + 1) | indices]` with rows
/// over `d0` (indices in `d1`) or, `transposed`, over `d1` (indices in `d0`), ascending. `None`
/// mask: every kernel is live. Returns `None` when the mask has the wrong length.
pub fn live_csr(mask: Option<&[bool]>, d0: usize, d1: usize, transposed: bool) -> Option<Vec<i32>> {
    if let Some(m) = mask {
        if m.len() != d0 * d1 {
            return None;
        }
    }
    let is_live = |a: usize, b: usize| mask.is_none_or(|m| m[a * d1 + b]);
    let (rows, cols) = if transposed { (d1, d0) } else { (d0, d1) };
    let mut ptr = Vec::with_capacity(rows + 1);
    let mut idx = Vec::new();
    ptr.push(0i32);
    for r in 0..rows {
        for c in 0..cols {
            let live = if transposed {
                is_live(c, r)
            } else {
                is_live(r, c)
            };
            if live {
                idx.push(c as i32);
            }
        }
        ptr.push(idx.len() as i32);
    }
    let off = (rows + 1) as i32;
    let mut out: Vec<i32> = ptr.into_iter().map(|p| p + off).collect();
    out.extend(idx);
    Some(out)
}

/// The training graph as the generated kernels compute it: `tg` after the training passes
/// (`e2enc_passes::pipeline::training`, verified). Node ids differ from `tg`'s; output names and
/// the gradient bookkeeping stay.
pub fn prepare(tg: &TrainGraph) -> Result<TrainGraph, CodegenError> {
    let mut out = tg.clone();
    e2enc_passes::pipeline::run(&mut out.graph, &e2enc_passes::pipeline::training())?;
    Ok(out)
}

/// Generates the C kernels of `tg` (prepared by [`prepare`]; an unprepared graph works too, its
/// depth shifts then run as copies) for `isa`, every weight possibly kernel-sparse.
pub fn generate_train(tg: &TrainGraph, isa: Target) -> Result<TrainGenerated, CodegenError> {
    generate_train_masked(tg, isa, None)
}

/// [`generate_train`] where only the weights in `maskable` (all when `None`) can have a
/// live-kernel mask: the convolutions of the others are dense and may compute several output
/// channels per tile.
pub fn generate_train_masked(
    tg: &TrainGraph,
    isa: Target,
    maskable: Option<&HashSet<String>>,
) -> Result<TrainGenerated, CodegenError> {
    // The kernels are plain C: the ISA only picks the compiler's vector flags (`run_cc`).
    let mut source = prelude(isa);
    let _ = writeln!(source, "/* isa: {isa} */");
    generate_with(tg, isa, maskable, source, |ctx| {
        let e = match ctx.op {
            Op::Conv3d(_)
            | Op::ConvTranspose3d(_)
            | Op::ConvBackwardData(_)
            | Op::FusedConv3d(_) => conv::emit(ctx)?,
            Op::ConvBackwardWeight(_) => conv::emit_weight_grad(ctx)?,
            _ => simple::emit(ctx)?,
        };
        Ok((e, None))
    })
}

/// The kernels of `tg`'s compute nodes in topological order, each written by `emit` after
/// `prelude`: what every renderer's training kernels share (which weight's mask applies to a
/// node, the fused depth shifts, the kernel names `e2t_<k>`, the comment in front of each).
/// `emit` returns the kernel and, for a CUDA kernel, its launch.
pub(crate) fn generate_with(
    tg: &TrainGraph,
    isa: Target,
    maskable: Option<&HashSet<String>>,
    prelude: String,
    mut emit: impl FnMut(&Ctx) -> Result<(Emitted, Option<Launch>), CodegenError>,
) -> Result<TrainGenerated, CodegenError> {
    let g = &tg.graph;
    let order = g.topo_order()?;
    // Which weight's mask applies to each conv-like node.
    let weight_of = |id: NodeId| match &g.node(id).op {
        Op::Weight { name } => Some(name.clone()),
        _ => None,
    };
    let mut grad_of: HashMap<NodeId, String> = HashMap::new();
    for (w, out) in &tg.weight_grads {
        if let Some(id) = g.output(out) {
            grad_of.insert(id, w.clone());
        }
    }
    let mut source = prelude;
    let mut kernels = Vec::new();
    for id in order {
        let node = g.node(id);
        if matches!(node.op, Op::Input { .. } | Op::Weight { .. }) {
            continue;
        }
        let op = &node.op;
        let operands = g.operands(id);
        // Shifts the passes (`e2enc_passes::training`) fused into the graph.
        let (shift0, out_unshift) = match op {
            Op::FusedConv3d(f) => (f.channel_shifts(), None),
            Op::ConvBackwardWeight(a) => (a.channel_shifts(), None),
            Op::ConvBackwardData(a) => (None, a.channel_shifts()),
            _ => (None, None),
        };
        let name = format!("e2t_{}", kernels.len());
        let weight = match op {
            Op::Conv3d(_)
            | Op::ConvTranspose3d(_)
            | Op::ConvBackwardData(_)
            | Op::FusedConv3d(_) => operands.get(1).and_then(|&w| weight_of(w)),
            Op::ConvBackwardWeight(_) => grad_of.get(&id).cloned(),
            _ => None,
        };
        let mask = weight
            .clone()
            .filter(|w| maskable.is_none_or(|m| m.contains(w)));
        let ctx = Ctx {
            g,
            id,
            name: name.clone(),
            op,
            ins: operands
                .iter()
                .map(|&o| g.node(o).ty.shape.clone())
                .collect(),
            out: node.ty.shape.clone(),
            shift0,
            out_unshift,
            isa,
            masked: mask.is_some(),
        };
        let (e, launch) = emit(&ctx)?;
        let label = node
            .label
            .clone()
            .unwrap_or_else(|| node.op.mnemonic().to_string())
            .replace("*/", "*_/");
        let _ = write!(
            source,
            "\n/* {name}: {} {label} -> {:?} */\n",
            op.mnemonic(),
            node.ty.shape
        );
        source.push_str(&e.source);
        kernels.push(TrainKernel {
            node: id,
            name,
            tiles: e.tiles,
            work: e.work,
            live: e.live,
            mask,
            weight,
            operands,
            launch,
            scratch: e.scratch,
        });
    }
    Ok(TrainGenerated {
        c_source: source,
        kernels,
    })
}

/// The signature of `ctx`'s kernel and the names the training emitters use for its arguments.
pub(crate) fn head(ctx: &Ctx) -> String {
    let mut s = crate::emit::kernel_signature(&ctx.name);
    s.push_str(
        "  float *restrict out = A;\n\
         \x20 const float *const *in = (const float *const *)(const void *)W;\n\
         \x20 const int32_t *restrict live = I;\n\
         \x20 int64_t lo = t0, hi = t1;\n\
         \x20 (void)out; (void)in; (void)live; (void)lo; (void)hi;\n",
    );
    s
}

/// The five dims of a rank-5 shape.
pub(crate) fn d5(ctx: &Ctx, s: &[usize]) -> Result<[usize; 5], CodegenError> {
    s.try_into()
        .map_err(|_| err(ctx.g, ctx.id, format!("expected a 5-D shape, got {s:?}")))
}

/// A C initializer list of integers.
pub(crate) fn c_list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
