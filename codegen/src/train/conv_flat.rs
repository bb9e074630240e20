//! The fast path of the stride-1 (in H and W) "same" convolutions of a training graph: one
//! output `(n, channel, depth)` plane at a time, accumulated over the whole flattened H·W plane
//! in one stack buffer, so every tap is a single long contiguous loop (`acc[i] += w ·
//! in[i + offset]`) that vectorizes fully, instead of a short loop per row.
//!
//! Each input plane is first copied into a row-padded stack buffer (zero columns left and right
//! of every row, zero margins around the plane), and the accumulator uses the same padded
//! layout, so a tap that falls off a row's edge reads an exact zero instead of the neighbouring
//! row; the padding columns of the accumulator are simply not copied out. Both the gather family
//! (`Conv3d`, transposed data gradients; any depth stride) and the stride-1 scatter family
//! (plain data gradients: correlations with the flipped kernel) use it: for a gather, input row
//! `y + bb - ph` and column `x + c - pw`; for a scatter, `y + ph - bb` and `x + pw - c`. Dense
//! layers (no live mask) compute up to four output channels per tile, so every loaded input
//! value feeds four multiply-adds. Every element's sum runs over the input channels (live list
//! order), then depth, row and column taps, with `fmaf`, whatever the tiling.

use std::fmt::Write as _;

use super::conv::Geo;
use super::{c_list, Ctx, Emitted, Live};

/// Largest accumulator (elements) held on the stack.
const MAX_PLANE: usize = 1 << 16;

/// Whether [`flat_src`] handles this geometry (`scatter`: output = big side).
pub(crate) fn applies(g: &Geo, scatter: bool) -> bool {
    g.stride[1] == 1
        && g.stride[2] == 1
        && g.small[1] == g.big[1]
        && g.small[2] == g.big[2]
        && g.small[1] * (g.small[2] + 2 * g.k[2]) <= MAX_PLANE
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
    let sign = if scatter { -1 } else { 1 };
    let row_off = |bb: usize| sign * (bb as i64 - ph);
    let offs: Vec<i64> = (0..kw).map(|c| sign * (c as i64 - pw)).collect();
    let elo = offs.iter().map(|&o| (-o).max(0)).max().unwrap_or(0) as usize;
    let ehi = offs.iter().map(|&o| o.max(0)).max().unwrap_or(0) as usize;
    // Padded row width and plane, and the zero margin around the padded input plane.
    let wp = w + elo + ehi;
    let plp = h * wp;
    let margin = elo.max(ehi);
    let opl = dout * pl;
    // Output channels per tile: dense layers (no live mask) compute `gs` channels together; a
    // fused opposite shift must be the same for the whole group.
    let uniform = |gs: usize| match &ctx.out_unshift {
        Some(u) => u.chunks(gs).all(|c| c.iter().all(|&v| v == c[0])),
        None => true,
    };
    let gs = if ctx.masked {
        1
    } else {
        [4, 2, 1]
            .into_iter()
            .find(|&gs| cout % gs == 0 && gs * plp <= MAX_PLANE && uniform(gs))
            .unwrap_or(1)
    };
    let widx = |oc: &str| {
        if scatter {
            format!("(ci * {cout} + {oc}) * {kl}")
        } else {
            format!("({oc} * {cin} + ci) * {kl}")
        }
    };
    // The input channels: the tile's live list, or all of them (dense groups).
    let chans = if gs == 1 {
        "for (int32_t j = live[t]; j < live[t + 1]; j++) {\n        const int64_t ci = live[j];"
            .to_string()
    } else {
        format!("for (int64_t ci = 0; ci < {cin}; ci++) {{")
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
    let mut s = super::head(ctx);
    s.push_str("  const float *restrict src = in[0];\n  const float *restrict w = in[1];\n");
    if bias {
        s.push_str("  const float *restrict bias = in[2];\n");
    }
    for (name, v) in [("SHIFT", &ctx.shift0), ("UNSHIFT", &ctx.out_unshift)] {
        if let Some(v) = v {
            let _ = writeln!(
                s,
                "  static const int64_t {name}[{}] = {{{}}};",
                v.len(),
                c_list(v)
            );
        }
    }
    let unshift = if ctx.out_unshift.is_some() {
        format!(
            "      const int64_t zz = z + UNSHIFT[t * {gs}];\n\
             \x20     if (zz < 0 || zz >= {dout}) {{\n\
             \x20       for (int64_t g = 0; g < {gs}; g++) memset(o + g * {opl} + z * {pl}, 0, sizeof(float) * {pl});\n\
             \x20       continue;\n      }}\n"
        )
    } else {
        "      const int64_t zz = z;\n".to_string()
    };
    let bg = if bias {
        format!("bias[t * {gs} + g]")
    } else {
        "0.0f".to_string()
    };
    let _ = write!(
        s,
        "  float acc[{gs} * {plp}] __attribute__((aligned(64)));\n\
         \x20 float xbuf[{xb}] __attribute__((aligned(64)));\n\
         \x20 memset(xbuf, 0, sizeof(xbuf));\n\
         \x20 float *restrict xpad = xbuf + {margin};\n\
         \x20 for (int64_t t = lo; t < hi; t++) {{\n\
         \x20   for (int64_t n = 0; n < {nn}; n++) {{\n\
         \x20   float *restrict o = out + (n * {cout} + t * {gs}) * {opl};\n\
         \x20   for (int64_t z = 0; z < {dout}; z++) {{\n{unshift}\
         \x20     for (int64_t g = 0; g < {gs}; g++) for (int64_t i = 0; i < {plp}; i++) acc[g * {plp} + i] = {bg};\n\
         \x20     {chans}\n",
        xb = plp + 2 * margin,
        nn = g.n,
    );
    for k in 0..gs {
        let _ = writeln!(
            s,
            "        const float *restrict wk{k} = w + {};",
            widx(&format!("(t * {gs} + {k})"))
        );
    }
    let _ = write!(
        s,
        "        const float *restrict xp = src + (n * {cin} + ci) * {ipl};\n\
         \x20       for (int64_t a = 0; a < {kd}; a++) {{\n\
         \x20         {depth}\n\
         \x20         const float *restrict xz = xp + iz * {pl};\n\
         \x20         for (int64_t y = 0; y < {h}; y++) memcpy(xpad + y * {wp} + {elo}, xz + y * {w}, sizeof(float) * {w});\n",
        ipl = din * pl,
    );
    // Each row tap's flat range; the range all of them share runs in one loop over every tap
    // (one load and store of each running sum per element), the rest per row tap.
    let ranges: Vec<(usize, i64, usize, usize)> = (0..kh)
        .filter_map(|bb| {
            let ro = row_off(bb);
            let ylo = (-ro).max(0) as usize;
            let yhi = (h as i64 - ro).min(h as i64).max(0) as usize;
            (ylo < yhi).then_some((bb, ro, ylo * wp, yhi * wp))
        })
        .collect();
    for &(bb, _, _, _) in &ranges {
        for k in 0..gs {
            let _ = writeln!(
                s,
                "          const float *restrict wr{k}_{bb} = wk{k} + (a * {kh} + {bb}) * {kw};"
            );
        }
    }
    let c0 = ranges.iter().map(|r| r.2).max().unwrap_or(0);
    let c1 = ranges.iter().map(|r| r.3).min().unwrap_or(0);
    let body = |s: &mut String, taps: &[(usize, i64, usize, usize)], lo: usize, hi: usize| {
        if lo >= hi {
            return;
        }
        let _ = writeln!(s, "          for (int64_t i = {lo}; i < {hi}; i++) {{");
        for k in 0..gs {
            let _ = writeln!(s, "            float v{k} = acc[{} + i];", k * plp);
        }
        for &(bb, ro, _, _) in taps {
            for (c, off) in offs.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "            {{ const float xv = xpad[i + ({d})];",
                    d = ro * wp as i64 + off
                );
                for k in 0..gs {
                    let _ = writeln!(s, "              v{k} = fmaf(wr{k}_{bb}[{c}], xv, v{k});");
                }
                s.push_str("            }\n");
            }
        }
        for k in 0..gs {
            let _ = writeln!(s, "            acc[{} + i] = v{k};", k * plp);
        }
        s.push_str("          }\n");
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
    let _ = write!(
        s,
        "        }}\n      }}\n\
         \x20     for (int64_t g = 0; g < {gs}; g++) for (int64_t y = 0; y < {h}; y++)\n\
         \x20       memcpy(o + g * {opl} + z * {pl} + y * {w}, acc + g * {plp} + y * {wp} + {elo}, sizeof(float) * {w});\n\
         \x20   }}\n    }}\n  }}\n}}\n"
    );
    Emitted {
        scratch: 0,
        source: s,
        tiles: cout / gs,
        work: (g.n * dout * pl * cin * kl) as u64,
        live: Live::Csr {
            d0: g.cs,
            d1: g.cb,
            transposed: scatter,
        },
    }
}
