//! Quantization of `--precision int8` bundles: what calibration measures, how activation and
//! weight scales are chosen from it, and the record a bundle keeps of it.
//!
//! **Activations** are quantized per input channel of each int8 conv, asymmetric, to `u8`:
//! `q = clamp(round(x / s + z), 0, 255)` with the range `[lo, hi]` (widened to hold 0, so the
//! zero padding of the layout is exactly `z`) cut into 255 steps: `s = (hi - lo) / 255`,
//! `z = round(-lo / s)`. The range comes from calibration: [`Histogram`]s of the values each conv
//! reads in an f32 run of the same graph, cut at the [`LOW_PERCENTILE`] and
//! [`HIGH_PERCENTILE`] (a few outliers clip instead of costing every other value its
//! resolution). E2ENet's convs read instance-normalized, leaky-ReLU'd activations (or the
//! z-scored image), whose per-channel ranges vary little from case to case, which is what lets
//! static ranges work; the instance norm after each conv re-derives its own statistics in f32
//! from the dequantized conv output, so nothing of the norm is quantized.
//!
//! **Weights** are quantized per output channel, symmetric, to `i8` in `[-127, 127]`, after the
//! activation scales are folded in: `w'[o][c] = w[o][c] s_c`, `t_o = max |w'[o]| / 127`,
//! `q_w = round(w' / t_o)`. Then `sum_c w x = t_o (sum q_w q_x - sum q_w z_c)`: one i32 dot
//! product (`vpdpbusd`), one constant per output channel (the zero points' term) and one scale.
//!
//! A [`Calibration`] is keyed by the node index of each conv in the optimized graph, with the
//! graph's digest: a calibration applies to exactly the graph it was measured on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The low cut of an activation range: the 0.001th percentile of the calibration values.
pub const LOW_PERCENTILE: f64 = 0.001;
/// The high cut: the 99.999th percentile. (Cuts at 0.01 / 99.99 moved the golden network's
/// int8 logits 1.21e-1 from f32 against 1.01e-1 for these, 0.1 / 99.9 2.52e-1, min / max
/// 1.02e-1: E2ENet's large activations carry signal; `tests/int8_cpu.rs` prints the figure.)
pub const HIGH_PERCENTILE: f64 = 99.999;

/// The measured activation ranges of one graph's int8 convs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// sha256 of the optimized graph's text ([`graph_digest`]).
    pub graph: String,
    /// Percentiles the ranges were cut at.
    pub percentiles: [f64; 2],
    /// What was run (case names and tile counts), for the record.
    pub sources: Vec<String>,
    /// Per conv (node index in the graph): its label and the `[lo, hi]` range of each logical
    /// input channel.
    pub convs: BTreeMap<usize, ConvRanges>,
}

/// The ranges of one conv's input channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvRanges {
    pub label: String,
    pub ranges: Vec<[f32; 2]>,
}

/// The digest of a graph's text form, which a [`Calibration`] is tied to.
pub fn graph_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `u8` quantization of one activation channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    /// Value of one step.
    pub scale: f32,
    /// The code of 0.0.
    pub zero: u8,
}

impl ActQuant {
    /// The quantization of values in `[lo, hi]` (widened to hold 0; a range of nothing but 0
    /// gets scale 1).
    pub fn of(lo: f32, hi: f32) -> ActQuant {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let span = hi - lo;
        if !(span.is_finite() && span > 1e-20) {
            return ActQuant {
                scale: 1.0,
                zero: 0,
            };
        }
        let scale = span / 255.0;
        let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        ActQuant { scale, zero }
    }

    /// The code of `x`, as the kernels compute it (`x * (1 / s) + z`, rounded to nearest even,
    /// clamped).
    pub fn code(self, x: f32) -> u8 {
        let t = x.mul_add(1.0 / self.scale, f32::from(self.zero));
        t.clamp(0.0, 255.0).round_ties_even() as u8
    }

    /// The value of `code`.
    pub fn value(self, code: u8) -> f32 {
        (f32::from(code) - f32::from(self.zero)) * self.scale
    }
}

/// `w` (one output channel's weights, any order) quantized symmetric to `[-127, 127]`: the codes
/// and the scale (1 for all-zero weights).
pub fn weight_codes(w: &[f32]) -> (Vec<i8>, f32) {
    let m = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let t = if m > 0.0 && m.is_finite() {
        m / 127.0
    } else {
        1.0
    };
    let q = w
        .iter()
        .map(|v| (v / t).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, t)
}

/// `(1 / scale, zero point)` of each channel, as the int8 kernels' packing reads them.
pub fn packing_params(aq: &[ActQuant]) -> Vec<f32> {
    aq.iter()
        .flat_map(|q| [1.0 / q.scale, f32::from(q.zero)])
        .collect()
}

/// The codes of one output channel's live kernels (`(input channel, offset of its `kvol`
/// weights in `wdata`)`, in order) with each input channel's activation scale folded in
/// (`w s_c`), and the output channel's scale: [`weight_codes`] of the folded weights.
pub fn folded_codes(
    row: &[(usize, usize)],
    wdata: &[f32],
    kvol: usize,
    aq: &[ActQuant],
) -> (Vec<i8>, f32) {
    let folded: Vec<f32> = row
        .iter()
        .flat_map(|&(ch, off)| {
            let s = aq[ch].scale;
            wdata[off..off + kvol].iter().map(move |w| w * s)
        })
        .collect();
    weight_codes(&folded)
}

/// A histogram of one channel's values in floating-point bins: [`PER_OCTAVE`] equal bins per
/// power of two for each sign between `2^-16` and `2^16` (the exponent and the top five mantissa
/// bits of the value; smaller magnitudes count as zero, larger as the last bin), so a percentile
/// is found to within 3.2% of its magnitude whatever the range and whatever order the values
/// come in, in 16 KiB a channel (the AMOS-CT network's convs read 11,969 channels: 192 MiB).
/// The true minimum and maximum are kept, so no percentile goes past them.
#[derive(Clone, Debug)]
pub struct Histogram {
    pos: Vec<u64>,
    neg: Vec<u64>,
    zero: u64,
    count: u64,
    min: f32,
    max: f32,
}

/// Bins per power of two of a [`Histogram`] (the top `log2(PER_OCTAVE)` mantissa bits).
pub const PER_OCTAVE: usize = 32;
const MANTISSA_BITS: u32 = PER_OCTAVE.trailing_zeros();
const OCTAVES: usize = 32;
const LOW_EXP: i32 = -16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            pos: vec![0; OCTAVES * PER_OCTAVE],
            neg: vec![0; OCTAVES * PER_OCTAVE],
            zero: 0,
            count: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
}

impl Histogram {
    /// Adds `values` (NaN and infinities are skipped).
    pub fn add(&mut self, values: &[f32]) {
        let n = OCTAVES * PER_OCTAVE;
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            self.count += 1;
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            let bits = v.abs().to_bits();
            let e = (bits >> 23) as i32 - 127 - LOW_EXP;
            if e < 0 {
                self.zero += 1;
                continue;
            }
            let m = (bits >> (23 - MANTISSA_BITS)) as usize & (PER_OCTAVE - 1);
            let b = (e as usize * PER_OCTAVE + m).min(n - 1);
            if v > 0.0 {
                self.pos[b] += 1;
            } else {
                self.neg[b] += 1;
            }
        }
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The magnitude at fraction `f` (0..1) through bin `b`.
    fn magnitude(b: usize, f: f64) -> f64 {
        let (e, m) = (b / PER_OCTAVE, b % PER_OCTAVE);
        2f64.powi(e as i32 + LOW_EXP) * (1.0 + (m as f64 + f) / PER_OCTAVE as f64)
    }

    /// The `p`th percentile (0..100), interpolated within a bin, within the true minimum and
    /// maximum; 0 for an empty histogram.
    pub fn percentile(&self, p: f64) -> f32 {
        if self.count == 0 {
            return 0.0;
        }
        let target = (p / 100.0).clamp(0.0, 1.0) * self.count as f64;
        let mut seen = 0f64;
        let mut found = None;
        // Most negative first.
        for (b, &c) in self.neg.iter().enumerate().rev() {
            let c = c as f64;
            if c > 0.0 && seen + c >= target {
                let f = ((target - seen) / c).clamp(0.0, 1.0);
                found = Some(-Self::magnitude(b, 1.0 - f));
                break;
            }
            seen += c;
        }
        if found.is_none() {
            let z = self.zero as f64;
            if z > 0.0 && seen + z >= target {
                found = Some(0.0);
            }
            seen += z;
        }
        if found.is_none() {
            for (b, &c) in self.pos.iter().enumerate() {
                let c = c as f64;
                if c > 0.0 && seen + c >= target {
                    let f = ((target - seen) / c).clamp(0.0, 1.0);
                    found = Some(Self::magnitude(b, f));
                    break;
                }
                seen += c;
            }
        }
        (found.unwrap_or(f64::from(self.max)) as f32).clamp(self.min, self.max)
    }

    /// The range `[lo, hi]` at [`LOW_PERCENTILE`] and [`HIGH_PERCENTILE`].
    pub fn range(&self) -> [f32; 2] {
        [
            self.percentile(LOW_PERCENTILE),
            self.percentile(HIGH_PERCENTILE),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_codes_round_trip_on_the_grid() {
        let q = ActQuant::of(-1.0, 3.0);
        assert_eq!(q.zero, 64);
        assert_eq!(q.code(0.0), q.zero);
        for c in [0u8, 1, 63, 64, 200, 255] {
            assert_eq!(q.code(q.value(c)), c);
        }
        assert_eq!(q.code(100.0), 255);
        assert_eq!(q.code(-100.0), 0);
        // Ranges are widened to hold zero; an empty one is harmless.
        assert_eq!(ActQuant::of(2.0, 5.0).zero, 0);
        assert_eq!(ActQuant::of(-5.0, -2.0).zero, 255);
        assert_eq!(
            ActQuant::of(0.0, 0.0),
            ActQuant {
                scale: 1.0,
                zero: 0
            }
        );
    }

    #[test]
    fn weight_codes_are_symmetric_and_span_127() {
        let (q, t) = weight_codes(&[0.5, -1.0, 0.25, 0.0]);
        assert_eq!(q, vec![64, -127, 32, 0]);
        assert!((t - 1.0 / 127.0).abs() < 1e-9);
        assert_eq!(weight_codes(&[0.0, 0.0]), (vec![0, 0], 1.0));
    }

    #[test]
    fn percentiles_cut_outliers_and_stay_within_the_values() {
        let mut h = Histogram::default();
        // One outlier in 400,001 values lies past the 99.999th percentile.
        let v: Vec<f32> = (0..400_000).map(|i| i as f32 / 400_000.0).collect();
        h.add(&v);
        h.add(&[1000.0]);
        let [lo, hi] = h.range();
        assert!((0.0..0.001).contains(&lo), "{lo}");
        assert!((0.98..1.01).contains(&hi), "{hi}");
        assert!((h.percentile(50.0) - 0.5).abs() < 0.01);
        assert_eq!(h.percentile(100.0), 1000.0);
        // Values of another scale later keep their resolution.
        let mut w = Histogram::default();
        w.add(&(0..1000).map(|i| i as f32 / 1000.0).collect::<Vec<_>>());
        w.add(
            &(0..1000)
                .map(|i| 10.0 + i as f32 / 100.0)
                .collect::<Vec<_>>(),
        );
        assert!(
            (w.percentile(75.0) - 15.0).abs() < 0.2,
            "{}",
            w.percentile(75.0)
        );
        assert!(
            (w.percentile(25.0) - 0.5).abs() < 0.02,
            "{}",
            w.percentile(25.0)
        );
        // Negative values, in order.
        let mut n = Histogram::default();
        n.add(&(0..1000).map(|i| -(i as f32) / 100.0).collect::<Vec<_>>());
        assert!(
            (n.percentile(10.0) + 9.0).abs() < 0.1,
            "{}",
            n.percentile(10.0)
        );
        assert_eq!(n.percentile(0.0), -9.99);
        // Zeros first, then values: the zeros still count.
        let mut z = Histogram::default();
        z.add(&[0.0; 100]);
        z.add(&[1.0]);
        assert_eq!(z.count(), 101);
        assert!(z.percentile(50.0).abs() < 0.01);
        assert_eq!(Histogram::default().range(), [0.0, 0.0]);
    }
}
