//! The micro kernel of the fast conv path (`conv_fast.rs`): one register-blocked C function
//! per variant (rows, vectors, right-edge tail), straight-line code with named
//! accumulators so the C compiler keeps them in registers.
//!
//! For each entry `(c, a)` it walks the tap columns; per tap column it broadcasts the `k * OB`
//! weights, then loads each input row once and adds it into every (output channel, output row)
//! that uses it (rows are shared by up to `k` output rows); at stride 2 a tap vector is the even
//! lanes of two loads (`e2_even`). A sparse micro kernel (one output channel: only `k` FMAs per
//! load) also prefetches the rows of the next x block, which the hardware prefetchers miss
//! because consecutive entries are scattered channels. The epilogue adds the bias, applies
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
    /// Vector lanes: 8 (AVX2, this file) or 16 (AVX-512, stride 1: `conv_micro512.rs`).
    pub lanes: usize,
}

impl Micro<'_> {
    pub fn source(&self) -> String {
        if self.lanes == 16 {
            return super::conv_micro512::source(self);
        }
        let (g, x, y) = (self.g, &self.ctx.inputs[0], &self.ctx.output);
        let (k, s, ob) = (g.k[1], g.s[1], self.bl.ob);
        // One accumulator per (output channel, row, output vector): at stride 2 too, since the
        // tap vectors are deinterleaved as they are loaded.
        let vf = self.vo;
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
        if self.g.sparse {
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
                    let load = if s == 2 {
                        // Tap cc of output lane i is input column 2 (x + 8f + i) - 1 + cc: the
                        // even lanes of the 16 columns from 2 (x + 8f) - 1 + cc.
                        let off = rr * x.row + 16 * f + cc;
                        let hi = if overrun && f == vf - 1 && cc == k - 1 {
                            // Its last lane (an odd column, dropped) is one past the row.
                            format!(
                                "_mm256_maskload_ps(p + {}, _mm256_castps_si256(e2_mask(7)))",
                                off + 8
                            )
                        } else {
                            format!("_mm256_loadu_ps(p + {})", off + 8)
                        };
                        format!("e2_even(_mm256_loadu_ps(p + {off}), {hi})")
                    } else {
                        format!("_mm256_loadu_ps(p + {})", rr * x.row + 8 * f + cc)
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
                    let _ = writeln!(c, "    {{ __m256 v = a{o}_{r}_{j};");
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
