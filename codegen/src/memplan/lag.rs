//! Lagged convolutions: a conv whose output may be stored over its own input.
//!
//! A 1x3x3 stride-1 conv (depth-shifted by at most `reach` planes) reads input planes
//! `z - reach ..= z + reach` for output plane `z`. Run in depth order, `group` planes at a time
//! with a barrier between groups (the executor's tile ranges), input plane `p` is dead once the
//! group holding output plane `p + reach` is done. So the output may live over the input shifted
//! down by `lag = group + reach` planes of the same layout (same channel stride): output (c, z)
//! lands on input (c + m, z - lag), which is dead when (c, z) is written. The output's first
//! `lag` planes of each channel would land on the previous channel's last planes, which are read
//! until the end: those tiles write a stash (part of the conv's scratch) instead, copied into
//! place after the last group. In E2ENet the full-resolution chain's concat `[x0_{j-1}, up]`
//! feeds a conv whose output is the next concat's part, so the chain keeps one full-resolution
//! concat alive instead of one and a half (AMOS-CT at 128^3: -115 M floats).
//!
//! The planner sees this as a permission: the output piece may overlap the input buffer at the
//! conv's step when its offset is the input's minus `lag` planes plus whole channels. Whether a
//! conv ended up lagged is read off the placement ([`lagged`]); only then does the code generator
//! emit the stash, the groups and the copy.

use e2enc_runtime::format::Piece;

/// One conv that may write over its input.
#[derive(Clone, Debug)]
pub(crate) struct Lag {
    /// The conv's step.
    pub step: usize,
    /// The buffer (index into the placement) holding the conv's output.
    pub out: usize,
    /// The buffer of its activation input, whose last reader it is.
    pub input: usize,
    /// The lag in elements (`lag` planes of `d_stride` each).
    pub shift: usize,
    /// The channel stride of both views.
    pub cs: usize,
    /// Channels of the input buffer and of the output (bound the candidate search).
    pub in_channels: usize,
    pub out_channels: usize,
}

/// Whether `a - b + shift` is a whole number of channels.
fn aligned(a: usize, b: usize, shift: usize, cs: usize) -> bool {
    ((a as i128 - b as i128 + shift as i128).rem_euclid(cs as i128)) == 0
}

/// Whether piece `q` of buffer `i` placed at `at_i` may overlap piece `p` (absolute) of buffer
/// `j` placed at `at_j`, though both are alive at one step: only as a lagged conv's output over
/// its input, aligned as above.
pub(crate) fn allowed(
    lags: &[Lag],
    (i, at_i, q): (usize, usize, &Piece),
    (j, at_j, p): (usize, usize, &Piece),
) -> bool {
    lags.iter().any(|l| {
        (l.out == i
            && l.input == j
            && q.first == l.step
            && p.last == l.step
            && aligned(at_i + q.offset, at_j, l.shift, l.cs))
            || (l.out == j
                && l.input == i
                && p.first == l.step
                && q.last == l.step
                && aligned(p.offset, at_i, l.shift, l.cs))
    })
}

/// Offsets (aligned to `align`) at which buffer `i` would sit lagged against a placed partner.
pub(crate) fn candidates(
    lags: &[Lag],
    i: usize,
    mine: &[Piece],
    placed: &[(Piece, usize)],
    chosen: &[(usize, usize)],
    is_placed: &[bool],
    out: &mut Vec<usize>,
) {
    let mut push = |v: i128| {
        if v >= 0 && (v as usize).is_multiple_of(super::ALIGN) {
            out.push(v as usize);
        }
    };
    for l in lags {
        let span = -(l.out_channels as i128)..=(l.in_channels as i128);
        if l.out == i && is_placed[l.input] {
            // my output piece at: input base + m channels - shift.
            let base = chosen[l.input].0 as i128;
            for q in mine.iter().filter(|q| q.first == l.step) {
                for m in span.clone() {
                    push(base + m * l.cs as i128 - l.shift as i128 - q.offset as i128);
                }
            }
        }
        if l.input == i && is_placed[l.out] {
            // the placed output piece sits at: my base + m channels - shift.
            for (p, _) in placed
                .iter()
                .filter(|(p, o)| *o == l.out && p.first == l.step)
            {
                for m in span.clone() {
                    push(p.offset as i128 + l.shift as i128 - m * l.cs as i128);
                }
            }
        }
    }
}

/// The lags that the placement used: the output piece overlaps the input buffer.
pub(crate) fn lagged<'a>(
    lags: &'a [Lag],
    pieces: &[Vec<Piece>],
    elems: &[usize],
    offsets: &[usize],
) -> Vec<&'a Lag> {
    lags.iter()
        .filter(|l| {
            let (s, e) = (offsets[l.input], offsets[l.input] + elems[l.input]);
            pieces[l.out]
                .iter()
                .filter(|q| q.first == l.step)
                .any(|q| offsets[l.out] + q.offset < e && s < offsets[l.out] + q.offset + q.elems)
        })
        .collect()
}
