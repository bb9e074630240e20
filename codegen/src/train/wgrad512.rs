//! The AVX-512 weight gradient of stride-1-in-W convolutions (`ConvBackwardWeight` of a
//! `Conv3d` whose input and output rows have the same width, at most 64): a whole row of the
//! small side sits in at most four `__m512` registers, and each `(kd, kh)` tap keeps its
//! `kw × rows/16` running sums in registers over all rows of a depth slice, so every
//! multiply-add costs one load of the big row (masked at the row's edges and tail: masked-off
//! lanes never fault and read as zero) instead of a load and a store of an accumulator.
//!
//! Per `(cs, cb)` pair the sums run over n, the small side's depth, the depth and row taps and
//! rows, in that order, into a per-tap vector block on the stack; the final horizontal sums are
//! `_mm512_reduce_add_ps` of the block's lane-wise sum: a fixed order, whatever the tiling.

use std::fmt::Write as _;

use super::conv::Geo;
use super::{c_list, Ctx, Emitted, Live};

/// Whether [`wgrad_src`] handles this (non-transposed) weight gradient.
pub(crate) fn applies(g: &Geo) -> bool {
    g.stride[2] == 1 && g.small[2] == g.big[2] && g.small[2] <= 64 && g.k[2] <= 4
}

/// `shift`: per-channel depth offsets of the big side (a fused depth shift).
pub(crate) fn wgrad_src(ctx: &Ctx, g: &Geo, shift: &Option<Vec<i64>>) -> Emitted {
    let w = g.small[2];
    let nv = w.div_ceil(16);
    let [kd, kh, kw] = g.k;
    let kl = g.kl();
    let [sd, sh, _] = g.small;
    let [bd, bh, _] = g.big;
    let (spl, bpl) = (g.spl(), g.bpl());
    let pw = g.pad[2] as i64;
    let lane_mask = |v: usize, ok: &dyn Fn(i64) -> bool| -> u32 {
        (0..16).fold(0u32, |m, l| {
            let x = (16 * v + l) as i64;
            if x < w as i64 && ok(x) {
                m | (1 << l)
            } else {
                m
            }
        })
    };
    let tail: Vec<u32> = (0..nv).map(|v| lane_mask(v, &|_| true)).collect();
    let mut s = super::head(ctx);
    s.push_str("  const float *restrict sm = in[1];\n  const float *restrict big = in[0];\n");
    if let Some(v) = shift {
        let _ = writeln!(
            s,
            "  static const int64_t SHIFT[{}] = {{{}}};",
            v.len(),
            c_list(v)
        );
    }
    let _ = write!(
        s,
        "  __m512 blk[{kl} * {nv}];\n\
         \x20 for (int64_t s = lo; s < hi; s++) {{\n\
         \x20   memset(out + s * {row}, 0, sizeof(float) * {row});\n\
         \x20   for (int32_t j = live[s]; j < live[s + 1]; j++) {{\n\
         \x20     const int64_t b = live[j];\n\
         \x20     for (int64_t i = 0; i < {nb}; i++) blk[i] = _mm512_setzero_ps();\n\
         \x20     for (int64_t n = 0; n < {nn}; n++) for (int64_t qz = 0; qz < {sd}; qz++) {{\n\
         \x20       const float *restrict sp = sm + (n * {cs} + s) * {spl} + qz * {shw};\n\
         \x20       for (int64_t a = 0; a < {kd}; a++) {{\n\
         \x20         const int64_t tz = qz * {szs} + a - {pd};\n\
         \x20         if (tz < 0 || tz >= {bd}) continue;\n\
         \x20         const int64_t uz = tz{shift};\n\
         \x20         if (uz < 0 || uz >= {bd}) continue;\n\
         \x20         const float *restrict bp = big + (n * {cb} + b) * {bpl} + uz * {bhw};\n\
         \x20         for (int64_t bb = 0; bb < {kh}; bb++) {{\n\
         \x20           /* rows y with big row y * {shs} + bb - {ph} inside */\n\
         \x20           int64_t y0 = 0, y1 = {sh};\n\
         \x20           while (y0 < y1 && y0 * {shs} + bb - {ph} < 0) y0++;\n\
         \x20           while (y1 > y0 && (y1 - 1) * {shs} + bb - {ph} >= {bh}) y1--;\n\
         \x20           __m512 *acc = blk + (a * {kh} + bb) * {kw} * {nv};\n",
        row = g.cb * kl,
        nb = kl * nv,
        nn = g.n,
        cs = g.cs,
        cb = g.cb,
        shw = sh * w,
        bhw = bh * w,
        szs = g.stride[0],
        shs = g.stride[1],
        pd = g.pad[0],
        ph = g.pad[1],
        shift = if shift.is_some() { " - SHIFT[b]" } else { "" },
    );
    // Per-tap (c) blocks: blk[(tap * kw + c) * nv + v] holds the lanes of kernel column c.
    for c in 0..kw {
        for v in 0..nv {
            let _ = writeln!(s, "            __m512 r{c}_{v} = acc[{}];", c * nv + v);
        }
    }
    let _ = write!(
        s,
        "            for (int64_t y = y0; y < y1; y++) {{\n\
         \x20             const float *restrict sr = sp + y * {w};\n\
         \x20             const float *restrict br = bp + (y * {shs} + bb - {ph}) * {w};\n",
        shs = g.stride[1],
        ph = g.pad[1],
    );
    for (v, m) in tail.iter().enumerate() {
        let _ = writeln!(
            s,
            "              const __m512 s{v} = _mm512_maskz_loadu_ps((__mmask16)0x{m:x}, sr + {});",
            16 * v
        );
    }
    for c in 0..kw {
        let off = c as i64 - pw;
        for v in 0..nv {
            let m = lane_mask(v, &|x| x + off >= 0 && x + off < w as i64);
            if m == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "              r{c}_{v} = _mm512_fmadd_ps(s{v}, _mm512_maskz_loadu_ps((__mmask16)0x{m:x}, \
                 br + ({})), r{c}_{v});",
                16 * v as i64 + off
            );
        }
    }
    s.push_str("            }\n");
    for c in 0..kw {
        for v in 0..nv {
            let _ = writeln!(s, "            acc[{}] = r{c}_{v};", c * nv + v);
        }
    }
    let _ = write!(
        s,
        "          }}\n        }}\n      }}\n\
         \x20     float *restrict dw = out + (s * {cb} + b) * {kl};\n\
         \x20     for (int64_t t = 0; t < {kl}; t++) {{\n\
         \x20       const int64_t tap = t / {kw}, c = t % {kw};\n\
         \x20       const __m512 *p = blk + (tap * {kw} + c) * {nv};\n\
         \x20       __m512 sum = p[0];\n\
         \x20       for (int64_t v = 1; v < {nv}; v++) sum = _mm512_add_ps(sum, p[v]);\n\
         \x20       dw[t] = _mm512_reduce_add_ps(sum);\n\
         \x20     }}\n    }}\n  }}\n}}\n",
        cb = g.cb,
    );
    Emitted {
        scratch: 0,
        source: s,
        tiles: g.cs,
        work: (g.n * spl * g.cb * kl) as u64,
        live: Live::Csr {
            d0: g.cs,
            d1: g.cb,
            transposed: false,
        },
    }
}
