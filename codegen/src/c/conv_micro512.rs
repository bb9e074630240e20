//! The AVX-512 micro kernel of the fast conv path at stride 1: the same walk as `conv_micro.rs`
//! (entries, tap columns, `k * OB` broadcast weights, each input row loaded once and added into
//! every (output channel, output row) using it) on 16-lane `__m512` vectors, with 32 registers
//! for a larger block (see `conv_fast::blocking_for`).
//!
//! Row ends: the planar layout pads rows to a multiple of 8 values plus 8 zero columns, so a
//! 16-lane vector at the last column block may reach past the row. The last vector of a
//! right-edge (tail) variant therefore loads with a lane mask (`_mm512_maskz_loadu_ps`: lanes
//! past the last value read nothing and hold zero; only lane `i` of a tap load feeds output lane
//! `i`) and stores with one: values for the real lanes, zeros up to the 8-column boundary the
//! AVX2 kernels also write (the padding pass of `conv_fast.rs` zeroes the rest), nothing beyond.

use std::fmt::Write;

use super::conv_micro::Micro;
use super::text::cf;

/// Mask literal with the first `n` (0..=16) lanes set.
fn mask(n: usize) -> String {
    format!("(__mmask16)0x{:04x}", ((1u32 << n) - 1) as u16)
}

/// The C source of a 16-lane, stride-1 micro-kernel variant.
pub fn source(m: &Micro) -> String {
    let (g, x, y) = (m.g, &m.ctx.inputs[0], &m.ctx.output);
    let (k, ob) = (g.k[1], m.bl.ob);
    debug_assert_eq!(g.s[1], 1, "the AVX-512 micro kernel is stride 1 only");
    let vf = m.vo;
    let kk = k * k;
    let rows_in = m.rb - 1 + k;
    let ow = g.y[4];
    let nv = ow.div_ceil(16);
    // Lanes of the last vector that are values, and that may be stored (values + zero padding
    // up to the 8-column boundary).
    let last_vals = ow - 16 * (nv - 1);
    let last_store = (ow.div_ceil(8) * 8 - 16 * (nv - 1)).min(16);
    let masked = |f: usize| m.tail && f == vf - 1 && last_vals < 16;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "static void {}(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st) {{
    (void)W; (void)zb; (void)o0; (void)st;",
        m.name
    );
    for o in 0..ob {
        for r in 0..m.rb {
            for f in 0..vf {
                let _ = writeln!(c, "    __m512 a{o}_{r}_{f} = _mm512_setzero_ps();");
            }
        }
    }
    let _ = writeln!(
        c,
        "    for (int e = 0; e < ne; e++, ent += 3, w += {}) {{",
        kk * ob
    );
    let d = g.x[2];
    if m.check_iz {
        let _ = writeln!(c, "        if ((unsigned)(zb + ent[1]) >= {d}u) continue;");
    }
    if m.check_jz {
        let _ = writeln!(c, "        if ((unsigned)(zb + ent[2]) >= {d}u) continue;");
    }
    let _ = writeln!(
        c,
        "        const float *p = A + pb + (int64_t)ent[0] * {} + (int64_t)(zb + ent[2]) * {};",
        x.c_stride, x.d_stride
    );
    let aligned = g.sparse && k == 3 && ob == 1;
    if aligned {
        // Prefetch the next entry's lines (scattered channel rows defeat the hardware
        // prefetchers; the next x block is too far ahead to stay in L1).
        let _ = writeln!(
            c,
            "        if (e + 1 < ne) {{\n            const float *q = A + pb + (int64_t)ent[3] * {} + (int64_t)(zb + ent[5]) * {};",
            x.c_stride, x.d_stride
        );
        for rr in 0..rows_in {
            for j in 0..=vf {
                let _ = writeln!(
                    c,
                    "            _mm_prefetch((const char *)(q + {}), _MM_HINT_T0);",
                    rr as isize * x.row as isize + 16 * j as isize - 7
                );
            }
        }
        let _ = writeln!(c, "        }}");
    } else if g.sparse {
        // Prefetch the next micro tile's lines (scattered channel rows defeat the prefetchers).
        let dist = 16 * vf + 16;
        for rr in 0..rows_in {
            let _ = writeln!(
                c,
                "        _mm_prefetch((const char *)(p + {}), _MM_HINT_T0);",
                rr * x.row + dist
            );
        }
    }
    if aligned {
        aligned_body(&mut c, m, rows_in, x.row);
    } else {
        for cc in 0..k {
            let _ = writeln!(c, "        {{");
            for o in 0..ob {
                for b in 0..k {
                    let _ = writeln!(
                        c,
                        "            const __m512 w{o}_{b} = _mm512_set1_ps(w[{}]);",
                        (cc * k + b) * ob + o
                    );
                }
            }
            for rr in 0..rows_in {
                for f in 0..vf {
                    let off = rr * x.row + 16 * f + cc;
                    let load = if masked(f) {
                        format!("_mm512_maskz_loadu_ps({}, p + {off})", mask(last_vals))
                    } else {
                        format!("_mm512_loadu_ps(p + {off})")
                    };
                    let _ = writeln!(c, "            {{ const __m512 x = {load};");
                    for b in 0..k {
                        if rr < b || rr - b >= m.rb {
                            continue;
                        }
                        let r = rr - b;
                        for o in 0..ob {
                            let _ = writeln!(
                                c,
                                "              a{o}_{r}_{f} = _mm512_fmadd_ps(w{o}_{b}, x, a{o}_{r}_{f});"
                            );
                        }
                    }
                    let _ = writeln!(c, "            }}");
                }
            }
            let _ = writeln!(c, "        }}");
        }
    }
    let _ = writeln!(c, "    }}");
    // Epilogue.
    if let Some(sl) = m.slope {
        let _ = writeln!(c, "    const __m512 vsl = _mm512_set1_ps({});", cf(sl));
    }
    let guard = g.y[1] % ob != 0;
    for o in 0..ob {
        let _ = writeln!(c, "    {{");
        if guard {
            let _ = writeln!(c, "    if (o0 + {o} < {}) {{", g.y[1]);
        }
        if let Some(boff) = m.bias {
            let _ = writeln!(
                c,
                "    const __m512 vb = _mm512_set1_ps(W[{boff} + o0 + {o}]);"
            );
        }
        if m.norm {
            let _ = writeln!(
                c,
                "    __m256d vs = _mm256_setzero_pd(), vq = _mm256_setzero_pd();"
            );
        }
        for r in 0..m.rb {
            for j in 0..vf {
                let _ = writeln!(c, "    {{ __m512 v = a{o}_{r}_{j};");
                if m.bias.is_some() {
                    let _ = writeln!(c, "      v = _mm512_add_ps(v, vb);");
                }
                if m.slope.is_some() {
                    let _ = writeln!(c, "      v = e2_lrelu16(v, vsl);");
                }
                let at = o * y.c_stride + r * y.row + 16 * j;
                if masked(j) {
                    let _ = writeln!(
                        c,
                        "      v = _mm512_maskz_mov_ps({}, v);\n      _mm512_mask_storeu_ps(A + po + {at}, {}, v);",
                        mask(last_vals),
                        mask(last_store)
                    );
                } else {
                    let _ = writeln!(c, "      _mm512_storeu_ps(A + po + {at}, v);");
                }
                if m.norm {
                    let _ = writeln!(c, "      e2_stats16(&vs, &vq, v);");
                }
                let _ = writeln!(c, "    }}");
            }
        }
        if m.norm {
            let _ = writeln!(
                c,
                "    st[{}] += e2_hsum_pd(vs); st[{}] += e2_hsum_pd(vq);",
                2 * o,
                2 * o + 1
            );
        }
        if guard {
            let _ = writeln!(c, "    }}");
        }
        let _ = writeln!(c, "    }}");
    }
    c.push_str("}\n");
    c
}

/// The entry body of a sparse 3x3 variant (one output channel: only 3 FMAs per tap load, so
/// loads bound it): each input row is read as 64-byte aligned vectors starting 8 columns left of
/// each 16-column block (rows of 16k floats start 32 bytes into a line, `PAD_LEFT` = 8), and the
/// three tap vectors are cut from two neighbours with `valignd`, instead of three unaligned
/// loads that each split a cache line. All 9 weights stay in registers. In a tail variant the
/// vector past the last block is loaded masked to the row's own storage (past it lies the next
/// row or the end of the buffer).
fn aligned_body(c: &mut String, m: &Micro, rows_in: usize, xrow: usize) {
    let vf = m.vo;
    let ow = m.g.y[4];
    let nv = ow.div_ceil(16);
    // Values (and right padding) of an input row, from value 0.
    let row_vals = xrow - crate::layout::PAD_LEFT;
    for t in 0..9 {
        let _ = writeln!(c, "        const __m512 w{t} = _mm512_set1_ps(w[{t}]);");
    }
    for rr in 0..rows_in {
        let _ = writeln!(c, "        {{");
        for j in 0..=vf {
            // p is column x0 - 1; vector j starts at column x0 + 16 j - 8 = p + 16 j - 7.
            let off = rr as isize * xrow as isize + 16 * j as isize - 7;
            let over = m.tail && j == vf && 16 * nv + 8 > row_vals;
            let load = if over {
                format!(
                    "_mm512_maskz_loadu_ps({}, p + {off})",
                    mask(row_vals + 8 - 16 * nv)
                )
            } else {
                format!("_mm512_loadu_ps(p + {off})")
            };
            let _ = writeln!(
                c,
                "            const __m512i v{j} = _mm512_castps_si512({load});"
            );
        }
        for f in 0..vf {
            let _ = writeln!(c, "            {{");
            for cc in 0..3 {
                let _ = writeln!(
                    c,
                    "            const __m512 x{cc} = _mm512_castsi512_ps(_mm512_alignr_epi32(v{}, v{f}, {}));",
                    f + 1,
                    7 + cc
                );
            }
            for b in 0..3 {
                if rr < b || rr - b >= m.rb {
                    continue;
                }
                let r = rr - b;
                for cc in 0..3 {
                    let _ = writeln!(
                        c,
                        "            a0_{r}_{f} = _mm512_fmadd_ps(w{}, x{cc}, a0_{r}_{f});",
                        cc * 3 + b
                    );
                }
            }
            let _ = writeln!(c, "            }}");
        }
        let _ = writeln!(c, "        }}");
    }
}
