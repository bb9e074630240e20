//! The attribute table of the text form: which attributes each op mnemonic takes (in printing
//! order) and of what kind, how the one-word values (ranges `a..b`, shift runs `SxN`) are read,
//! and how a complete attribute list becomes an [`Op`].
//!
//! Kept apart from the token-level parser so that adding an op means editing one table here and
//! one arm of the printer, and the parser proper only knows value *kinds*.

use crate::op::{ConvAttrs, ConvGradAttrs, FusedConvAttrs, Op, PoolAttrs, ShiftAttrs};

/// The kind of value an attribute takes.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    /// `INT`
    Int,
    /// `FLOAT`
    Float,
    /// `[INT, INT, INT]`
    Triple,
    /// `true` | `false`
    Bool,
    /// `INT` | `none`
    OptInt,
    /// `FLOAT` | `none`
    OptFloat,
    /// `[RANGE, ...]`, possibly empty
    Ranges,
    /// `[RUN, ...]`, possibly empty
    Runs,
}

impl Kind {
    /// What the parser says it expected.
    pub(super) fn expected(self) -> &'static str {
        match self {
            Kind::Int => "a non-negative integer",
            Kind::Float => "a number",
            Kind::Triple => "`[a,b,c]`",
            Kind::Bool => "`true` or `false`",
            Kind::OptInt => "a non-negative integer or `none`",
            Kind::OptFloat => "a number or `none`",
            Kind::Ranges => "a range such as 0..96",
            Kind::Runs => "a shift run such as -2x48",
        }
    }
}

/// A parsed attribute value.
#[derive(Clone, Debug)]
pub(super) enum Val {
    Int(usize),
    Float(f32),
    Triple([usize; 3]),
    Bool(bool),
    OptInt(Option<usize>),
    OptFloat(Option<f32>),
    Ranges(Vec<(usize, usize)>),
    Runs(Vec<(i64, usize)>),
}

/// The attributes of each op mnemonic, in printing order; `None` for an unknown op.
pub(super) fn spec(mnemonic: &str) -> Option<&'static [(&'static str, Kind)]> {
    const CONV: &[(&str, Kind)] = &[
        ("kernel", Kind::Triple),
        ("stride", Kind::Triple),
        ("padding", Kind::Triple),
    ];
    const FUSED: &[(&str, Kind)] = &[
        ("kernel", Kind::Triple),
        ("stride", Kind::Triple),
        ("padding", Kind::Triple),
        ("transposed", Kind::Bool),
        ("shifts", Kind::Runs),
        ("sparse_out", Kind::OptInt),
        ("bias", Kind::Bool),
        ("eps", Kind::OptFloat),
        ("slope", Kind::OptFloat),
    ];
    const CONV_GRAD: &[(&str, Kind)] = &[
        ("kernel", Kind::Triple),
        ("stride", Kind::Triple),
        ("padding", Kind::Triple),
        ("transposed", Kind::Bool),
        ("input", Kind::Triple),
        ("shifts", Kind::Runs),
    ];
    const POOL: &[(&str, Kind)] = &[("kernel", Kind::Triple), ("stride", Kind::Triple)];
    Some(match mnemonic {
        "conv3d" | "conv_transpose3d" => CONV,
        "conv_backward_data" | "conv_backward_weight" => CONV_GRAD,
        "channel_sum" => &[],
        "depth_shift_backward" => &[("groups", Kind::Int)],
        "instance_norm_backward" | "instance_norm_gamma_grad" => &[("eps", Kind::Float)],
        "leaky_relu_backward" => &[("slope", Kind::Float)],
        "max_pool_backward" => POOL,
        "fused_conv3d" => FUSED,
        "max_pool3d" => POOL,
        "depth_shift" => &[("groups", Kind::Int)],
        "instance_norm" => &[("eps", Kind::Float)],
        "leaky_relu" => &[("slope", Kind::Float)],
        "select" => &[("axis", Kind::Int), ("ranges", Kind::Ranges)],
        "concat" | "add" | "softmax" | "argmax" => &[],
        _ => return None,
    })
}

/// Builds the op from its mnemonic and its complete attribute list (in `spec` order).
pub(super) fn build_op(mnemonic: &str, vals: &[Val]) -> Option<Op> {
    let int = |i: usize| match vals.get(i) {
        Some(Val::Int(v)) => Some(*v),
        _ => None,
    };
    let float = |i: usize| match vals.get(i) {
        Some(Val::Float(v)) => Some(*v),
        _ => None,
    };
    let triple = |i: usize| match vals.get(i) {
        Some(Val::Triple(v)) => Some(*v),
        _ => None,
    };
    let boolean = |i: usize| match vals.get(i) {
        Some(Val::Bool(v)) => Some(*v),
        _ => None,
    };
    let opt_int = |i: usize| match vals.get(i) {
        Some(Val::OptInt(v)) => Some(*v),
        _ => None,
    };
    let opt_float = |i: usize| match vals.get(i) {
        Some(Val::OptFloat(v)) => Some(*v),
        _ => None,
    };
    let conv = || {
        Some(ConvAttrs {
            kernel: triple(0)?,
            stride: triple(1)?,
            padding: triple(2)?,
        })
    };
    let conv_grad = || {
        Some(ConvGradAttrs {
            conv: conv()?,
            transposed: boolean(3)?,
            input: triple(4)?,
            shifts: match vals.get(5) {
                Some(Val::Runs(v)) => v.clone(),
                _ => return None,
            },
        })
    };
    let pool = || {
        Some(PoolAttrs {
            kernel: triple(0)?,
            stride: triple(1)?,
        })
    };
    Some(match mnemonic {
        "conv3d" => Op::Conv3d(conv()?),
        "conv_backward_data" => Op::ConvBackwardData(conv_grad()?),
        "conv_backward_weight" => Op::ConvBackwardWeight(conv_grad()?),
        "channel_sum" => Op::ChannelSum,
        "depth_shift_backward" => Op::DepthShiftBackward(ShiftAttrs { groups: int(0)? }),
        "instance_norm_backward" => Op::InstanceNormBackward { eps: float(0)? },
        "instance_norm_gamma_grad" => Op::InstanceNormGammaGrad { eps: float(0)? },
        "leaky_relu_backward" => Op::LeakyReluBackward { slope: float(0)? },
        "max_pool_backward" => Op::MaxPoolBackward(pool()?),
        "conv_transpose3d" => Op::ConvTranspose3d(conv()?),
        "fused_conv3d" => Op::FusedConv3d(FusedConvAttrs {
            conv: conv()?,
            transposed: boolean(3)?,
            shifts: match vals.get(4) {
                Some(Val::Runs(v)) => v.clone(),
                _ => return None,
            },
            sparse_out: opt_int(5)?,
            bias: boolean(6)?,
            norm_eps: opt_float(7)?,
            slope: opt_float(8)?,
        }),
        "max_pool3d" => Op::MaxPool3d(pool()?),
        "depth_shift" => Op::DepthShift(ShiftAttrs { groups: int(0)? }),
        "instance_norm" => Op::InstanceNorm { eps: float(0)? },
        "leaky_relu" => Op::LeakyRelu { slope: float(0)? },
        "select" => Op::SelectChannels {
            axis: int(0)?,
            ranges: match vals.get(1) {
                Some(Val::Ranges(v)) => v.clone(),
                _ => return None,
            },
        },
        "concat" => Op::Concat,
        "add" => Op::Add,
        "softmax" => Op::Softmax,
        "argmax" => Op::Argmax,
        _ => return None,
    })
}

/// A non-negative decimal integer spelled with digits only: `None` when it is not one,
/// `Some(Err)` when it does not fit a `usize`.
pub(super) fn digits(w: &str) -> Option<Result<usize, String>> {
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        w.parse::<usize>()
            .map_err(|_| format!("integer `{w}` is too large")),
    )
}

/// `a..b` (one word): the half-open range `[a, b)`.
pub(super) fn range(w: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected {}, found `{w}`", Kind::Ranges.expected());
    let (a, b) = w.split_once("..").ok_or_else(bad)?;
    let a = digits(a).ok_or_else(bad)??;
    let b = digits(b).ok_or_else(bad)??;
    Ok((a, b))
}

/// `SxN` (one word, `S` possibly negative): `N` channels shifted by `S`.
pub(super) fn run(w: &str) -> Result<(i64, usize), String> {
    let bad = || format!("expected {}, found `{w}`", Kind::Runs.expected());
    let (s, n) = w.split_once('x').ok_or_else(bad)?;
    let magnitude = s.strip_prefix('-').unwrap_or(s);
    if magnitude.is_empty() || !magnitude.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let s = s
        .parse::<i64>()
        .map_err(|_| format!("shift `{s}` does not fit an i64"))?;
    let n = digits(n).ok_or_else(bad)??;
    Ok((s, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_ranges_and_runs() {
        assert_eq!(range("0..96"), Ok((0, 96)));
        assert_eq!(range("144..240"), Ok((144, 240)));
        assert_eq!(
            range("5..5"),
            Ok((5, 5)),
            "emptiness is the verifier's business"
        );
        for bad in [
            "0.96", "..3", "3..", "-1..2", "1...2", "a..b", "1..2..3", "1.5..3",
        ] {
            assert!(range(bad).is_err(), "{bad}");
        }
        assert!(range("0..99999999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(run("-2x48"), Ok((-2, 48)));
        assert_eq!(run("0x48"), Ok((0, 48)));
        assert_eq!(run("17x1"), Ok((17, 1)));
        assert_eq!(run("-9223372036854775808x1"), Ok((i64::MIN, 1)));
        assert!(run("9223372036854775808x1").unwrap_err().contains("i64"));
        for bad in [
            "x3", "-x3", "2x", "+2x3", "2x-3", "--2x3", "2y3", "2x3x4", "1.5x2", "",
        ] {
            assert!(run(bad).is_err(), "{bad}");
        }
    }
}
