//! The closed set of tensor operations of the IR, with their attribute structs.
//!
//! Every node has one result and an ordered list of operands. The operand convention of each op
//! is part of its definition and is documented on the variant; `Op::arity` states it in code so
//! the verifier, the interpreter and (later) autodiff agree. Attributes are plain data so that the
//! text form, the egg language and the code generators can mirror them one to one.

/// Geometry of a 3D convolution (or transposed convolution) over `[N, C, D, H, W]` tensors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    /// Kernel extent along (D, H, W); must equal the weight's trailing three dimensions.
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    /// Zero padding on both sides of each axis.
    pub padding: [usize; 3],
}

/// Restricted depth shift (E2ENet): channel groups of `ceil(C / groups)` channels; group `g` moves
/// by `s = g - groups/2` voxels along depth (`out[d] = in[d - s]`), zero fill, no wrap-around. When
/// `C` is small there are fewer than `groups` blocks and the trailing shifts go unused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShiftAttrs {
    pub groups: usize,
}

/// Max pooling over (D, H, W) without padding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolAttrs {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
}

/// Geometry of a convolution gradient (training): the forward op it differentiates and the
/// forward input's spatial extent, which a strided forward conv does not determine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvGradAttrs {
    /// The forward convolution's geometry.
    pub conv: ConvAttrs,
    /// The forward op is a `ConvTranspose3d` (weight `[I, O, k..]`) rather than a `Conv3d`
    /// (weight `[O, I, k..]`).
    pub transposed: bool,
    /// Spatial extent (D, H, W) of the forward op's input `x`.
    pub input: [usize; 3],
    /// The depth shift fused in (training graphs after `e2enc_passes::training`), as
    /// [`FusedConvAttrs::shifts`] runs over the forward input's channels; empty: none. The forward
    /// conv read channel `c` of `x` as `x[c, d - shift(c)]`, so `conv_backward_weight` reads its
    /// `x` operand through that shift, and `conv_backward_data` returns the gradient of the
    /// *unshifted* input, `dx[c, d] = dxs[c, d + shift(c)]` (the depth shift's backward fused in).
    /// Not for transposed convolutions.
    pub shifts: Vec<(i64, usize)>,
}

impl ConvGradAttrs {
    /// The per-channel shifts of [`ConvGradAttrs::shifts`] expanded, or `None` when empty.
    pub fn channel_shifts(&self) -> Option<Vec<i64>> {
        expand_runs(&self.shifts)
    }
}

/// `(shift, count)` runs expanded to one shift per channel; `None` for no runs.
fn expand_runs(runs: &[(i64, usize)]) -> Option<Vec<i64>> {
    if runs.is_empty() {
        return None;
    }
    Some(
        runs.iter()
            .flat_map(|&(s, n)| std::iter::repeat_n(s, n))
            .collect(),
    )
}

/// A convolution with everything the optimizer fuses into it (see [`Op::FusedConv3d`]).
#[derive(Clone, Debug, PartialEq)]
pub struct FusedConvAttrs {
    pub conv: ConvAttrs,
    /// A transposed convolution (dense weight `[I, O, k..]`) instead of a cross-correlation.
    pub transposed: bool,
    /// Depth offset of every input channel, run-length encoded as `(shift, count)` runs covering
    /// all input channels in order: input channel `c` is read as the restricted depth shift
    /// would have left it, `x[c, d - shift(c)]`, zero outside the volume. Empty: no shift.
    /// This is the depth shift fused into the convolution that follows it (no shifted copy).
    pub shifts: Vec<(i64, usize)>,
    /// `Some(out_channels)`: kernel-sparse weights. The weight operand is then packed as
    /// `[n, kd, kh, kw]` (only the live kernels) and followed by an `i32 [n, 2]` index operand
    /// whose rows are `(out, in)` channel pairs, for both directions.
    pub sparse_out: Option<usize>,
    /// A bias operand `[O]` follows the weights.
    pub bias: bool,
    /// Instance norm epilogue with this eps: `gamma`, `beta` operands `[O]` follow.
    pub norm_eps: Option<f32>,
    /// Leaky-ReLU epilogue (after the norm, if any) with this slope.
    pub slope: Option<f32>,
}

impl FusedConvAttrs {
    /// A plain (unfused, dense, unshifted) convolution's attributes.
    pub fn plain(conv: ConvAttrs, transposed: bool, bias: bool) -> Self {
        FusedConvAttrs {
            conv,
            transposed,
            shifts: Vec::new(),
            sparse_out: None,
            bias,
            norm_eps: None,
            slope: None,
        }
    }

    /// Number of operands: x, w, [kidx], [bias], [gamma, beta].
    pub fn num_operands(&self) -> usize {
        2 + usize::from(self.sparse_out.is_some())
            + usize::from(self.bias)
            + 2 * usize::from(self.norm_eps.is_some())
    }

    /// Positions of the optional operands: (kidx, bias, gamma) slots.
    pub fn operand_slots(&self) -> (Option<usize>, Option<usize>, Option<usize>) {
        let mut next = 2;
        let mut take = |present: bool, n: usize| {
            present.then(|| {
                let at = next;
                next += n;
                at
            })
        };
        let kidx = take(self.sparse_out.is_some(), 1);
        let bias = take(self.bias, 1);
        let gamma = take(self.norm_eps.is_some(), 2);
        (kidx, bias, gamma)
    }

    /// The depth offset of every input channel (expands `shifts`), or `None` when unshifted.
    pub fn channel_shifts(&self) -> Option<Vec<i64>> {
        expand_runs(&self.shifts)
    }
}

/// The `(shift, count)` runs that `DepthShift { groups }` applies to `channels` channels
/// (blocks of `ceil(C / groups)`, block `g` shifted by `g - groups / 2`).
pub fn shift_runs(groups: usize, channels: usize) -> Vec<(i64, usize)> {
    let groups = groups.max(1);
    let block = channels.div_ceil(groups).max(1);
    let mut runs = Vec::new();
    let mut c = 0;
    let mut g = 0;
    while c < channels {
        let n = block.min(channels - c);
        runs.push((g as i64 - (groups / 2) as i64, n));
        c += n;
        g += 1;
    }
    runs
}

/// Operations. Operands are listed as `(a, b, ...)` in the docs.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input fed at run time, by name. No operands.
    Input { name: String },
    /// A reference to a named tensor of the weight store (never inlined). No operands.
    Weight { name: String },
    /// `(x, w[, b])`: cross-correlation, `w` is `[O, I, kd, kh, kw]`, `b` is `[O]`.
    Conv3d(ConvAttrs),
    /// `(x, w[, b])`: transposed convolution, `w` is `[I, O, kd, kh, kw]` (PyTorch layout).
    ConvTranspose3d(ConvAttrs),
    /// `(x)`: the restricted depth shift.
    DepthShift(ShiftAttrs),
    /// `(x, gamma, beta)`: per-sample, per-channel normalisation over (D, H, W) with biased
    /// variance, then the affine `gamma * x̂ + beta` (both `[C]`).
    InstanceNorm { eps: f32 },
    /// `(x)`: `x` if `x >= 0` else `slope * x`.
    LeakyRelu { slope: f32 },
    /// `(x)`
    MaxPool3d(PoolAttrs),
    /// `(x0, x1, ...)`: concatenation along the channel axis (axis 1); at least one operand.
    Concat,
    /// `(a, b)`: elementwise sum of two tensors of the same type.
    Add,
    /// `(x)`: softmax over the channel axis (axis 1).
    Softmax,
    /// `(x)`: index of the largest channel (axis 1), first one on ties; `i32[N, D, H, W]`.
    Argmax,
    /// `(x)`: the elements of the half-open index `ranges` along `axis`, in order (ranges are
    /// non-empty, increasing and disjoint). Used to drop channels and DSFF edges.
    SelectChannels {
        axis: usize,
        ranges: Vec<(usize, usize)>,
    },
    /// `(x, w, [kidx], [b], [gamma, beta])`: a convolution with the fusions of the optimizer:
    /// input depth shift, kernel sparsity, bias, instance norm and leaky ReLU (see
    /// [`FusedConvAttrs`]). Equals shift → conv/transposed conv (+ bias) → norm → activation.
    FusedConv3d(FusedConvAttrs),

    // Training ops: the building blocks of backward graphs (see `crate::autodiff`). Each
    // differentiates one forward op; "x" is always the forward op's INPUT, "dy" the gradient of
    // its result.
    /// `(dy, w)`: the gradient of the forward conv's input, `[N, I, input..]` (`I = w.shape[1]`
    /// for a conv, `w.shape[0]` for a transposed conv).
    ConvBackwardData(ConvGradAttrs),
    /// `(x, dy)`: the gradient of the forward conv's weight, in the forward weight's layout
    /// (`[O, I, k..]` for a conv, `[I, O, k..]` for a transposed conv).
    ConvBackwardWeight(ConvGradAttrs),
    /// `(dy)`: `[C]`, the sum over N, D, H, W (bias and beta gradients).
    ChannelSum,
    /// `(dy)`: the adjoint of `DepthShift`, the opposite shift: channel `c` of shift `s` gets
    /// `dx[c, d] = dy[c, d + s]` when `0 <= d + s < D`, else 0.
    DepthShiftBackward(ShiftAttrs),
    /// `(x, gamma, dy)`: the gradient of `InstanceNorm`'s input (per sample and channel, biased
    /// variance, `rstd = 1/sqrt(var + eps)`):
    /// `dx = rstd · (g - mean(g) - x̂ · mean(g · x̂))` with `g = gamma · dy`.
    InstanceNormBackward { eps: f32 },
    /// `(x, dy)`: `[C]`, the sum over N, D, H, W of `dy · x̂` (the gamma gradient).
    InstanceNormGammaGrad { eps: f32 },
    /// `(x, dy)`: `dy` where `x > 0`, else `slope · dy` (at `x = 0` the slope, as PyTorch does).
    LeakyReluBackward { slope: f32 },
    /// `(x, dy)`: each window's `dy` goes to the window's first maximum of `x` (row-major scan
    /// order within the window; a NaN counts as the maximum, the first one wins), every other
    /// position gets 0; overlapping windows add.
    MaxPoolBackward(PoolAttrs),
}

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    Range(usize, usize),
    AtLeast(usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::Range(lo, hi) => (lo..=hi).contains(&n),
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl std::fmt::Display for Arity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arity::Exactly(k) => write!(f, "{k}"),
            Arity::Range(lo, hi) => write!(f, "{lo} to {hi}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
        }
    }
}

impl Op {
    /// The op's mnemonic in the text form.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::Conv3d(_) => "conv3d",
            Op::ConvTranspose3d(_) => "conv_transpose3d",
            Op::DepthShift(_) => "depth_shift",
            Op::InstanceNorm { .. } => "instance_norm",
            Op::LeakyRelu { .. } => "leaky_relu",
            Op::MaxPool3d(_) => "max_pool3d",
            Op::Concat => "concat",
            Op::Add => "add",
            Op::Softmax => "softmax",
            Op::Argmax => "argmax",
            Op::SelectChannels { .. } => "select",
            Op::FusedConv3d(_) => "fused_conv3d",
            Op::ConvBackwardData(_) => "conv_backward_data",
            Op::ConvBackwardWeight(_) => "conv_backward_weight",
            Op::ChannelSum => "channel_sum",
            Op::DepthShiftBackward(_) => "depth_shift_backward",
            Op::InstanceNormBackward { .. } => "instance_norm_backward",
            Op::InstanceNormGammaGrad { .. } => "instance_norm_gamma_grad",
            Op::LeakyReluBackward { .. } => "leaky_relu_backward",
            Op::MaxPoolBackward(_) => "max_pool_backward",
        }
    }

    pub fn arity(&self) -> Arity {
        match self {
            Op::Input { .. } | Op::Weight { .. } => Arity::Exactly(0),
            Op::Conv3d(_) | Op::ConvTranspose3d(_) => Arity::Range(2, 3),
            Op::InstanceNorm { .. } => Arity::Exactly(3),
            Op::Add => Arity::Exactly(2),
            Op::Concat => Arity::AtLeast(1),
            Op::DepthShift(_)
            | Op::LeakyRelu { .. }
            | Op::MaxPool3d(_)
            | Op::Softmax
            | Op::Argmax
            | Op::SelectChannels { .. } => Arity::Exactly(1),
            Op::FusedConv3d(a) => Arity::Exactly(a.num_operands()),
            Op::InstanceNormBackward { .. } => Arity::Exactly(3),
            Op::ConvBackwardData(_)
            | Op::ConvBackwardWeight(_)
            | Op::InstanceNormGammaGrad { .. }
            | Op::LeakyReluBackward { .. }
            | Op::MaxPoolBackward(_) => Arity::Exactly(2),
            Op::ChannelSum | Op::DepthShiftBackward(_) => Arity::Exactly(1),
        }
    }

    /// True for the training (gradient) ops: the interpreter and `e2enc-train`'s kernels
    /// evaluate them; the optimizer and the C code generator do not take them yet.
    pub fn is_training(&self) -> bool {
        matches!(
            self,
            Op::ConvBackwardData(_)
                | Op::ConvBackwardWeight(_)
                | Op::ChannelSum
                | Op::DepthShiftBackward(_)
                | Op::InstanceNormBackward { .. }
                | Op::InstanceNormGammaGrad { .. }
                | Op::LeakyReluBackward { .. }
                | Op::MaxPoolBackward(_)
        )
    }

    /// True for ops whose value is known before run time (weights).
    pub fn is_const(&self) -> bool {
        matches!(self, Op::Weight { .. })
    }
}
