//! The micro kernel of the fast conv path (`conv_fast.rs`): one register-blocked C function
//! per variant (rows, vectors, right-edge tail, cache-line parity), straight-line code with named
//! accumulators so the C compiler keeps them in registers.
//!
//! For each entry `(c, a)` it walks the tap columns; per tap column it broadcasts the `k * OB`
//! weights, then loads each input row once and adds it into every (output channel, output row)
//! that uses it (rows are shared by up to `k` output rows). The epilogue adds the bias, applies
//! the leaky ReLU (when no norm follows), masks lanes past the row end, stores, and adds the
//! instance-norm partial sums of its values to the tile's (double) statistics.

use std::fmt::Write;

use super::conv::Geom;
use super::conv_fast::Blocking;
use super::text::{cf, nvec};
use crate::emit::NodeCtx;
use crate::layout::PAD_LEFT;

/// Constants of one micro-kernel variant.
pub struct Micro<'a> {
    pub name: String,
    pub rb: usize,
    pub vo: usize,
    pub tail: bool,
    pub g: &'a Geom,
    pub bl: Blocking,
    pub ctx: &'a NodeCtx<'a>,
    pub check_iz: bool,
    pub check_jz: bool,
    pub bias: Option<usize>,
    pub slope: Option<f32>,
    pub norm: bool,
    /// `Some(0)`: the first vector's column x starts a 64-byte line, `Some(1)`: it is mid-line;
    /// the x +- 1 vector that would straddle a line is then built from aligned loads with
    /// shuffles. `None`: plain unaligned loads.
    pub parity: Option<usize>,
}

impl Micro<'_> {
    pub fn source(&self) -> String {
        let (g, x, y) = (self.g, &self.ctx.inputs[0], &self.ctx.output);
        let (k, s, ob) = (g.k[1], g.s[1], self.bl.ob);
        // Stride 2: each accumulator holds 8 real outputs; the tap vectors are deinterleaved
        // (even lanes of two loads) as they are loaded.
        let deint = s == 2;
        let vf = if deint { self.vo } else { self.vo * s };
        let kk = k * k;
        let rows_in = s * (self.rb - 1) + k;
        let ow = g.y[4];
        let nv = nvec(ow);
        let mut c = String::new();
        let _ = writeln!(
            c,
            "static void {}(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st) {{
    (void)W; (void)zb; (void)o0; (void)st;",
            self.name
        );
        for o in 0..ob {
            for r in 0..self.rb {
                for f in 0..vf {
                    let _ = writeln!(c, "    __m256 a{o}_{r}_{f} = _mm256_setzero_ps();");
                }
            }
        }
        let _ = writeln!(
            c,
            "    for (int e = 0; e < ne; e++, ent += 3, w += {}) {{",
            kk * ob
        );
        let d = g.x[2];
        if self.check_iz {
            let _ = writeln!(c, "        if ((unsigned)(zb + ent[1]) >= {d}u) continue;");
        }
        if self.check_jz {
            let _ = writeln!(c, "        if ((unsigned)(zb + ent[2]) >= {d}u) continue;");
        }
        let _ = writeln!(
            c,
            "        const float *p = A + pb + (int64_t)ent[0] * {} + (int64_t)(zb + ent[2]) * {};",
            x.c_stride, x.d_stride
        );
        // Does the last full-resolution vector's last column tap read one float past the row?
        let overrun = self.tail && s == 2 && k == 3 && 16 * nv >= x.row - PAD_LEFT;
        if self.g.sparse && std::env::var("E2ENC_NOPF").is_err() {
            // The next micro tile (same entries, 8 columns right) needs the following lines:
            // the scattered channel rows of a sparse conv defeat the hardware prefetchers.
            let dist = 8 * s * self.vo + 8;
            for rr in 0..rows_in {
                let _ = writeln!(
                    c,
                    "        _mm_prefetch((const char *)(p + {}), _MM_HINT_T0);",
                    rr * x.row + dist
                );
            }
        }
        for cc in 0..k {
            let _ = writeln!(c, "        {{");
            for o in 0..ob {
                for b in 0..k {
                    let _ = writeln!(
                        c,
                        "            const __m256 w{o}_{b} = _mm256_broadcast_ss(w + {});",
                        (cc * k + b) * ob + o
                    );
                }
            }
            for rr in 0..rows_in {
                for f in 0..vf {
                    let off = rr * x.row + 8 * f + cc;
                    // Column x + 8 (q - 1) relative to p (which points at x - 1).
                    let at = |q: usize| (rr * x.row + 8 * q) as isize - 7;
                    let last_over = overrun && f == vf - 1;
                    let load = match self.parity {
                        // Only the vector that would straddle a cache line is shuffled: x - 1
                        // when x starts a 64-byte line, x + 1 when x is mid-line.
                        Some(bp) if k == 3 && cc != 1 && (cc == 0) == ((bp + f) % 2 == 0) => {
                            let cur = format!("_mm256_loadu_ps(p + {})", at(f + 1));
                            if cc == 0 {
                                format!("e2_xm1(_mm256_loadu_ps(p + {}), {cur})", at(f))
                            } else if last_over {
                                format!("e2_xp1({cur}, _mm256_setzero_ps())")
                            } else {
                                format!("e2_xp1({cur}, _mm256_loadu_ps(p + {}))", at(f + 2))
                            }
                        }
                        _ if deint => {
                            let off = rr * x.row + 16 * f + cc;
                            let hi = if last_over && cc == k - 1 {
                                format!(
                                    "_mm256_maskload_ps(p + {}, _mm256_castps_si256(e2_mask(7)))",
                                    off + 8
                                )
                            } else {
                                format!("_mm256_loadu_ps(p + {})", off + 8)
                            };
                            format!("e2_even(_mm256_loadu_ps(p + {off}), {hi})")
                        }
                        _ if last_over && cc == k - 1 => {
                            format!(
                                "_mm256_maskload_ps(p + {off}, _mm256_castps_si256(e2_mask(7)))"
                            )
                        }
                        _ => format!("_mm256_loadu_ps(p + {off})"),
                    };
                    let _ = writeln!(c, "            {{ const __m256 x = {load};");
                    for b in 0..k {
                        if rr < b || (rr - b) % s != 0 || (rr - b) / s >= self.rb {
                            continue;
                        }
                        let r = (rr - b) / s;
                        for o in 0..ob {
                            let _ = writeln!(
                                c,
                                "              a{o}_{r}_{f} = _mm256_fmadd_ps(w{o}_{b}, x, a{o}_{r}_{f});"
                            );
                        }
                    }
                    let _ = writeln!(c, "            }}");
                }
            }
            let _ = writeln!(c, "        }}");
        }
        let _ = writeln!(c, "    }}");
        // Epilogue.
        if let Some(sl) = self.slope {
            let _ = writeln!(c, "    const __m256 vsl = _mm256_set1_ps({});", cf(sl));
        }
        let guard = g.y[1] % ob != 0;
        for o in 0..ob {
            let _ = writeln!(c, "    {{");
            if guard {
                let _ = writeln!(c, "    if (o0 + {o} < {}) {{", g.y[1]);
            }
            if let Some(boff) = self.bias {
                let _ = writeln!(
                    c,
                    "    const __m256 vb = _mm256_broadcast_ss(W + {boff} + o0 + {o});"
                );
            }
            if self.norm {
                let _ = writeln!(
                    c,
                    "    __m256d vs = _mm256_setzero_pd(), vq = _mm256_setzero_pd();"
                );
            }
            for r in 0..self.rb {
                for j in 0..self.vo {
                    let v = if s == 1 || deint {
                        format!("a{o}_{r}_{j}")
                    } else {
                        format!("e2_even(a{o}_{r}_{}, a{o}_{r}_{})", 2 * j, 2 * j + 1)
                    };
                    let _ = writeln!(c, "    {{ __m256 v = {v};");
                    if self.bias.is_some() {
                        let _ = writeln!(c, "      v = _mm256_add_ps(v, vb);");
                    }
                    if self.slope.is_some() {
                        let _ = writeln!(c, "      v = e2_lrelu(v, vsl);");
                    }
                    if self.tail && j == self.vo - 1 && ow % 8 != 0 {
                        let _ = writeln!(c, "      v = _mm256_and_ps(v, e2_mask({}));", ow % 8);
                    }
                    let _ = writeln!(
                        c,
                        "      _mm256_storeu_ps(A + po + {}, v);",
                        o * y.c_stride + r * y.row + 8 * j
                    );
                    if self.norm {
                        let _ = writeln!(c, "      e2_stats(&vs, &vq, v);");
                    }
                    let _ = writeln!(c, "    }}");
                }
            }
            if self.norm {
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
}
