//! The fast path of the stride-1 (in H and W) "same" convolutions of a training graph: one
//! output `(n, channel, depth)` plane at a time, accumulated over the whole flattened H·W plane
//! in one stack buffer, so every tap is a single long contiguous loop (`acc[i] += w ·
//! in[i + offset]`) that vectorizes fully, instead of a short loop per row.
//!
//! A flat loop lets taps that fall off the left or right edge of a row wrap into the
//! neighbouring row; those edge columns (at most `kw - 1` of them) are then recomputed exactly,
//! one element at a time, and overwrite the wrapped values. Both the gather family (`Conv3d`,
//! transposed data gradients; any depth stride) and the stride-1 scatter family (plain data
//! gradients, which are correlations with the flipped kernel) use it: for a gather, input row
//! `y + bb - ph` and column `x + c - pw`; for a scatter, `y + ph - bb` and `x + pw - c`. Every
//! element's sum runs over live input channels, then depth, row and column taps, in that order.

use std::fmt::Write as _;

use super::conv::Geo;
use super::{Ctx, Emitted, Live};

/// Largest plane (elements) held on the stack.
const MAX_PLANE: usize = 1 << 16;

/// Whether [`flat_src`] handles this geometry (`scatter`: output = big side).
pub(crate) fn applies(g: &Geo, scatter: bool) -> bool {
    g.stride[1] == 1
        && g.stride[2] == 1
        && g.small[1] == g.big[1]
        && g.small[2] == g.big[2]
        && g.small[1] * g.small[2] <= MAX_PLANE
        && (!scatter || g.stride[0] == 1)
}

pub(crate) fn flat_src(ctx: &Ctx, g: &Geo, bias: bool, scatter: bool) -> Emitted {
    let (h, w) = (g.small[1], g.small[2]);
    let pl = h * w;
    let [kd, kh, kw] = g.k;
    let kl = g.kl();
    let (ph, pw, pd) = (g.pad[1] as i64, g.pad[2] as i64, g.pad[0] as i64);
    // (output channels, input channels, output depth, input depth)
    let (cout, cin, dout, din) = if scatter {
        (g.cb, g.cs, g.big[0], g.small[0])
    } else {
        (g.cs, g.cb, g.small[0], g.big[0])
    };
    let row_off = |bb: usize| {
        if scatter {
            ph - bb as i64
        } else {
            bb as i64 - ph
        }
    };
    let col_off = |c: usize| {
        if scatter {
            pw - c as i64
        } else {
            c as i64 - pw
        }
    };
    let offs: Vec<i64> = (0..kw).map(col_off).collect();
    let elo = offs.iter().map(|&o| (-o).max(0)).max().unwrap_or(0) as usize;
    let ehi = offs.iter().map(|&o| o.max(0)).max().unwrap_or(0) as usize;
    let edge: Vec<usize> = (0..w).filter(|&x| x < elo || x + ehi >= w).collect();
    let widx = if scatter {
        format!("(ci * {cout} + t) * {kl}")
    } else {
        format!("(t * {cin} + ci) * {kl}")
    };
    // The input depth `iz` of output depth `zz` and depth tap `a` (`continue` when outside).
    let depth = if scatter {
        let div = if g.stride[0] == 1 {
            String::new()
        } else {
            format!(" || u % {} != 0", g.stride[0])
        };
        format!(
            "const int64_t u = zz + {pd} - a; if (u < 0{div}) continue; \
             const int64_t iz = u / {sd}; if (iz >= {din}) continue;",
            sd = g.stride[0]
        )
    } else {
        let shift = if ctx.shift0.is_some() {
            format!(" const int64_t iz = tz - SHIFT[ci]; if (iz < 0 || iz >= {din}) continue;")
        } else {
            " const int64_t iz = tz;".to_string()
        };
        format!(
            "const int64_t tz = zz * {sd} + a - {pd}; if (tz < 0 || tz >= {din}) continue;{shift}",
            sd = g.stride[0]
        )
    };
    let mut s = format!(
        "void {}(float *restrict out, const void *inv, const int32_t *restrict live, int64_t lo, \
         int64_t hi) {{\n  const float *const *in = (const float *const *)inv;\n\
         \x20 const float *restrict src = in[0];\n  const float *restrict w = in[1];\n",
        ctx.name
    );
    if bias {
        s.push_str("  const float *restrict bias = in[2];\n");
    }
    let table = |name: &str, v: &Option<Vec<i64>>| match v {
        Some(v) => format!(
            "  static const int64_t {name}[{}] = {{{}}};\n",
            v.len(),
            super::c_list(v)
        ),
        None => String::new(),
    };
    s.push_str(&table("SHIFT", &ctx.shift0));
    s.push_str(&table("UNSHIFT", &ctx.out_unshift));
    let unshift = if ctx.out_unshift.is_some() {
        format!(
            "      const int64_t zz = z + UNSHIFT[t];\n\
             \x20     if (zz < 0 || zz >= {dout}) {{ memset(o + z * {pl}, 0, sizeof(float) * {pl}); continue; }}\n"
        )
    } else {
        "      const int64_t zz = z;\n".to_string()
    };
    let _ = write!(
        s,
        "  float acc[{pl}] __attribute__((aligned(64)));\n\
         \x20 for (int64_t t = lo; t < hi; t++) {{\n\
         \x20   const float b0 = {b0};\n\
         \x20   for (int64_t n = 0; n < {nn}; n++) {{\n\
         \x20   float *restrict o = out + (n * {cout} + t) * {opl};\n\
         \x20   for (int64_t z = 0; z < {dout}; z++) {{\n{unshift}\
         \x20     for (int64_t i = 0; i < {pl}; i++) acc[i] = b0;\n\
         \x20     for (int32_t j = live[t]; j < live[t + 1]; j++) {{\n\
         \x20       const int64_t ci = live[j];\n\
         \x20       const float *restrict wk = w + {widx};\n\
         \x20       const float *restrict xp = src + (n * {cin} + ci) * {ipl};\n\
         \x20       for (int64_t a = 0; a < {kd}; a++) {{\n\
         \x20         {depth}\n\
         \x20         const float *restrict xz = xp + iz * {pl};\n",
        b0 = if bias { "bias[t]" } else { "0.0f" },
        nn = g.n,
        opl = dout * pl,
        ipl = din * pl,
    );
    // Each row tap's flat range; the range all of them share runs in one loop over every tap
    // (one load and store of the running sum per element), the rest per row tap.
    let ranges: Vec<(usize, i64, usize, usize)> = (0..kh)
        .filter_map(|bb| {
            let ro = row_off(bb);
            let ylo = (-ro).max(0) as usize;
            let yhi = (h as i64 - ro).min(h as i64).max(0) as usize;
            let (i0, i1) = (ylo * w + elo, (yhi * w).saturating_sub(ehi));
            (ylo < yhi && i0 < i1).then_some((bb, ro, i0, i1))
        })
        .collect();
    for &(bb, _, _, _) in &ranges {
        let _ = writeln!(
            s,
            "          const float *restrict wr{bb} = wk + (a * {kh} + {bb}) * {kw};"
        );
    }
    let c0 = ranges.iter().map(|r| r.2).max().unwrap_or(0);
    let c1 = ranges.iter().map(|r| r.3).min().unwrap_or(0);
    let body = |s: &mut String, taps: &[(usize, i64, usize, usize)], lo: usize, hi: usize| {
        if lo >= hi {
            return;
        }
        let _ = writeln!(
            s,
            "          for (int64_t i = {lo}; i < {hi}; i++) {{\n            float v = acc[i];"
        );
        for &(bb, ro, _, _) in taps {
            for (c, off) in offs.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "            v = fmaf(wr{bb}[{c}], xz[i + ({d})], v);",
                    d = ro * w as i64 + off
                );
            }
        }
        s.push_str("            acc[i] = v;\n          }\n");
    };
    if c0 < c1 && ranges.len() > 1 {
        for r in &ranges {
            body(&mut s, std::slice::from_ref(r), r.2, r.3.min(c0));
        }
        body(&mut s, &ranges, c0, c1);
        for r in &ranges {
            body(&mut s, std::slice::from_ref(r), r.2.max(c1), r.3);
        }
    } else {
        for r in &ranges {
            body(&mut s, std::slice::from_ref(r), r.2, r.3);
        }
    }
    s.push_str("        }\n      }\n");
    if !edge.is_empty() {
        let ro: Vec<i64> = (0..kh).map(row_off).collect();
        let _ = write!(
            s,
            "      static const int64_t EX[{ne}] = {{{ex}}};\n\
             \x20     static const int64_t RO[{kh}] = {{{ro}}};\n\
             \x20     static const int64_t CO[{kw}] = {{{co}}};\n\
             \x20     for (int64_t y = 0; y < {h}; y++) for (int64_t e = 0; e < {ne}; e++) {{\n\
             \x20       const int64_t x = EX[e];\n\
             \x20       float v = b0;\n\
             \x20       for (int32_t j = live[t]; j < live[t + 1]; j++) {{\n\
             \x20         const int64_t ci = live[j];\n\
             \x20         const float *restrict wk = w + {widx};\n\
             \x20         const float *restrict xp = src + (n * {cin} + ci) * {ipl};\n\
             \x20         for (int64_t a = 0; a < {kd}; a++) {{\n\
             \x20           {depth}\n\
             \x20           for (int64_t bb = 0; bb < {kh}; bb++) {{\n\
             \x20             const int64_t ty = y + RO[bb];\n\
             \x20             if (ty < 0 || ty >= {h}) continue;\n\
             \x20             for (int64_t c = 0; c < {kw}; c++) {{\n\
             \x20               const int64_t tx = x + CO[c];\n\
             \x20               if (tx < 0 || tx >= {w}) continue;\n\
             \x20               v = fmaf(wk[(a * {kh} + bb) * {kw} + c], xp[(iz * {h} + ty) * {w} + tx], v);\n\
             \x20             }}\n            }}\n          }}\n        }}\n\
             \x20       acc[y * {w} + x] = v;\n      }}\n",
            ne = edge.len(),
            ex = super::c_list(&edge),
            ro = super::c_list(&ro),
            co = super::c_list(&offs),
            ipl = din * pl,
        );
    }
    let _ = write!(
        s,
        "      memcpy(o + z * {pl}, acc, sizeof(float) * {pl});\n    }}\n    }}\n  }}\n}}\n"
    );
    Emitted {
        source: s,
        tiles: cout,
        work: (g.n * dout * pl * cin * kl) as u64,
        live: Live::Csr {
            d0: g.cs,
            d1: g.cb,
            transposed: scatter,
        },
    }
}
