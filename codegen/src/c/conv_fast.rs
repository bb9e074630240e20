//! The hot path: cross-correlations with `kh = kw = k` in {1, 3}, padding `(k - 1) / 2` and
//! stride `s` in {1, 2} in H and W; any kernel depth, depth stride and depth padding, with
//! per-input-channel depth shifts, dense or kernel-sparse weights.
//!
//! Tiles are `(n, z, band)`: one output plane depth and a band of `RB` output rows, computing
//! every output channel of the band, so the band's input rows (all input channels) stay in cache
//! while all output channels reuse them. Inside a tile, for each `x` block (outer) and each output
//! block, a register-blocked micro kernel keeps `OB` output channels x `RB` rows x `VF` vectors
//! of 8 columns in accumulators. It walks a list of *entries* `(c, a)` (input channel, depth
//! tap): for each column tap it broadcasts the `k * OB` weights of that tap column once, then
//! loads each input row once (`_mm256_loadu_ps` at `x - 1`, `x`, `x + 1`: the zero padding makes
//! this safe) and adds it into every (output channel, output row) that uses it. Entries whose
//! input plane is outside the volume at this depth (depth padding, depth shift) are skipped.
//!
//! Dense weights: one entry list for all outputs, weights packed per output block as
//! `[block][entry][tap column][tap row][OB]` (the last block zero-filled). Sparse weights
//! (`OB = 1`): a per-output CSR of entries, weights `[entry][tap column][tap row]`.
//!
//! Stride 2 computes the even output rows directly (rows are addressed by pointer) and every
//! input column (full resolution), keeping the even columns at the store (`e2_even`): twice the
//! arithmetic along W but the same inner loop. The epilogue adds the bias, applies the leaky
//! ReLU when no norm follows, zeroes lanes past the row end, stores, and accumulates the
//! instance-norm partial sums of the tile (in double, in a fixed order).

use std::fmt::Write;

use super::conv::{live_flops, slope_in_conv, ConvSpec, Geom};
use super::norm::partial_ptr;
use super::text::{cf, kernel, nvec, zero_row, zero_row_pads};
use crate::emit::{Consts, EmitError, Kernel, NodeCtx};
use crate::layout::{PAD_LEFT, PAD_ROWS};

/// Register blocking of one geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Output channels per micro tile.
    pub ob: usize,
    /// Output rows per micro tile (and per tile band).
    pub rb: usize,
    /// Output vectors (8 columns) per micro tile.
    pub vo: usize,
}

/// The blocking used for a geometry (a function of the geometry only).
pub fn blocking(g: &Geom) -> Blocking {
    let k = g.k[1];
    let s = g.s[1];
    let (ob, rb, vo) = match (g.sparse, k, s) {
        (false, 3, 1) => (2, 4, 1),
        (false, 3, _) => (2, 2, 1),
        (true, 3, 1) => (1, 8, 1),
        (true, 3, _) => (1, 4, 1),
        (false, _, 1) => (4, 1, 3),
        (false, _, _) => (4, 1, 1),
        (true, _, 1) => (1, 1, 8),
        (true, _, _) => (1, 1, 4),
    };
    let (ob, rb, vo) = match std::env::var("E2ENC_BLOCK") {
        Ok(v) => {
            let p: Vec<usize> = v.split(',').map(|x| x.parse().unwrap()).collect();
            if g.sparse { (p[3], p[4], p[5]) } else { (p[0], p[1], p[2]) }
        }
        Err(_) => (ob, rb, vo),
    };
    Blocking {
        ob: ob.min(g.y[1]),
        rb: rb.min(g.y[3]),
        vo: vo.min(nvec(g.y[4])),
    }
}

/// Tiles per sample: output depth x row bands.
pub fn tiles_per_sample(g: &Geom) -> usize {
    g.y[2] * g.y[3].div_ceil(blocking(g).rb)
}

/// Constants of one micro-kernel variant.
struct Micro<'a> {
    name: String,
    rb: usize,
    vo: usize,
    tail: bool,
    g: &'a Geom,
    bl: Blocking,
    ctx: &'a NodeCtx<'a>,
    check_iz: bool,
    check_jz: bool,
    bias: Option<usize>,
    slope: Option<f32>,
    norm: bool,
    /// `Some(0)`: the first vector's column x starts a 64-byte line, `Some(1)`: it is mid-line;
    /// the x +- 1 vector that would straddle a line is then built from aligned loads with
    /// shuffles. `None`: plain unaligned loads.
    parity: Option<usize>,
}

impl Micro<'_> {
    fn source(&self) -> String {
        let (g, x, y) = (self.g, &self.ctx.inputs[0], &self.ctx.output);
        let (k, s, ob) = (g.k[1], g.s[1], self.bl.ob);
        let vf = self.vo * s;
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
        let _ = writeln!(c, "    for (int e = 0; e < ne; e++, ent += 3, w += {}) {{", kk * ob);
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
                            // The one float from the neighbouring line, broadcast.
                            let edge = |col: usize| format!("_mm256_broadcast_ss(p + {})", rr * x.row + 8 * f + col);
                            let blend = std::env::var("E2ENC_EDGE").is_ok_and(|v| v == "b");
                            if !blend {
                                if cc == 0 {
                                    format!("e2_xm1(_mm256_loadu_ps(p + {}), {cur})", at(f))
                                } else if last_over {
                                    format!("e2_xp1({cur}, _mm256_setzero_ps())")
                                } else {
                                    format!("e2_xp1({cur}, _mm256_loadu_ps(p + {}))", at(f + 2))
                                }
                            } else if cc == 0 {
                                format!("e2_xm1b({cur}, {})", edge(0))
                            } else if last_over {
                                format!("e2_xp1b({cur}, _mm256_setzero_ps())")
                            } else {
                                format!("e2_xp1b({cur}, {})", edge(9))
                            }
                        }
                        _ if last_over && cc == k - 1 => {
                            format!("_mm256_maskload_ps(p + {off}, _mm256_castps_si256(e2_mask(7)))")
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
                let _ = writeln!(c, "    const __m256 vb = _mm256_broadcast_ss(W + {boff} + o0 + {o});");
            }
            if self.norm {
                let _ = writeln!(
                    c,
                    "    __m256d vs = _mm256_setzero_pd(), vq = _mm256_setzero_pd();"
                );
            }
            for r in 0..self.rb {
                for j in 0..self.vo {
                    let v = if s == 1 {
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

/// Emits the conv kernel of the fast path.
pub fn emit(ctx: &NodeCtx, sp: &ConvSpec, consts: &mut Consts) -> Result<Kernel, EmitError> {
    let g = &sp.g;
    let bl = blocking(g);
    let (x, y) = (&ctx.inputs[0], &ctx.output);
    let [n, cin, d, _, _] = g.x;
    let [_, co, od, oh, ow] = g.y;
    let [kd, k, _] = g.k;
    let (sd, s, pd, ph) = (g.s[0], g.s[1], g.p[0], g.p[1]);
    let kk = k * k;
    let nv = nvec(ow);
    let nb = oh.div_ceil(bl.rb);
    let kernel_w = |off: usize, a: usize, b: usize, cc: usize| sp.wdata[off + (a * k + b) * k + cc];

    // Depth checks needed at all?
    let check_iz = (0..od).any(|z| {
        (0..kd).any(|a| {
            let iz = (z * sd + a) as i64 - pd as i64;
            !(0..d as i64).contains(&iz)
        })
    });
    let check_jz = sp.shifts.iter().any(|&v| v != 0);

    // Entries and weights.
    let entry = |c: usize, a: usize| [c as i32, a as i32, (a as i64 - sp.shifts[c]) as i32];
    let (ent_off, w_off, rp_off, ne_dense);
    if !g.sparse {
        let ents: Vec<i32> = (0..cin).flat_map(|c| (0..kd).flat_map(move |a| entry(c, a))).collect();
        ne_dense = cin * kd;
        let nob = co.div_ceil(bl.ob);
        let mut w = Vec::with_capacity(nob * ne_dense * kk * bl.ob);
        for blk in 0..nob {
            for c in 0..cin {
                for a in 0..kd {
                    for cc in 0..k {
                        for b in 0..k {
                            for o in 0..bl.ob {
                                let oo = blk * bl.ob + o;
                                w.push(if oo < co {
                                    kernel_w(sp.rows[oo][c].1, a, b, cc)
                                } else {
                                    0.0
                                });
                            }
                        }
                    }
                }
            }
        }
        ent_off = consts.push_i32(&ents);
        w_off = consts.push_f32(&w);
        rp_off = 0;
    } else {
        ne_dense = 0;
        let mut rp = vec![0i32];
        let mut ents = Vec::new();
        let mut w = Vec::new();
        for row in &sp.rows {
            for &(c, off) in row {
                for a in 0..kd {
                    ents.extend(entry(c, a));
                    for cc in 0..k {
                        for b in 0..k {
                            w.push(kernel_w(off, a, b, cc));
                        }
                    }
                }
            }
            rp.push((ents.len() / 3) as i32);
        }
        ent_off = consts.push_i32(&ents);
        rp_off = consts.push_i32(&rp);
        w_off = consts.push_f32(&w);
    }
    let bias = sp.bias.map(|b| {
        let mut v = b.to_vec();
        v.resize(co.div_ceil(bl.ob) * bl.ob, 0.0);
        consts.push_f32(&v)
    });

    // Micro-kernel variants: (rows, vectors, tail).
    let nxb = (nv - 1) / bl.vo; // full body x blocks
    let vt = nv - nxb * bl.vo; // vectors of the tail block
    let rrem = oh - (nb - 1) * bl.rb; // rows of the last band
    let mut helpers = String::new();
    let use_parity = k == 3
        && match std::env::var("E2ENC_SHUF") {
            Ok(v) => v == "1" || (v == "s" && g.sparse),
            Err(_) => g.sparse,
        };
    let mut mname = |rb: usize, vo: usize, tail: bool, parity: Option<usize>| -> String {
        let name = format!(
            "{}_mk{}x{}{}{}",
            ctx.prefix,
            rb,
            vo,
            if tail { "t" } else { "" },
            parity.map_or(String::new(), |p| format!("p{p}"))
        );
        let m = Micro {
            name: name.clone(),
            rb,
            vo,
            tail,
            g,
            bl,
            ctx,
            check_iz,
            check_jz,
            bias,
            slope: slope_in_conv(sp),
            norm: sp.norm.is_some(),
            parity,
        };
        if !helpers.contains(&format!("static void {name}(")) {
            helpers.push_str(&m.source());
        }
        name
    };
    // One micro call for output block `ob` (dense) or channel `o` (sparse) at (y0, xv).
    let mut call = |vo: usize, tail: bool| -> String {
        let args = if g.sparse {
            format!(
                "A, W, I + {ent_off} + 3 * e0, W + {w_off} + (int64_t)e0 * {kk}, e1 - e0, pb, zb, po + (int64_t)o * {}, o, st + 2 * o",
                y.c_stride
            )
        } else {
            format!(
                "A, W, I + {ent_off}, W + {w_off} + (int64_t)ob * {}, {ne_dense}, pb, zb, po + (int64_t)ob * {}, ob * {}, st + 2 * ob * {}",
                ne_dense * kk * bl.ob,
                bl.ob * y.c_stride,
                bl.ob,
                bl.ob
            )
        };
        let mut by_rows = |parity: Option<usize>| {
            let full = mname(bl.rb, vo, tail, parity);
            if rrem != bl.rb {
                let rem = mname(rrem, vo, tail, parity);
                format!("if (y1 - y0 == {}) {full}({args}); else {rem}({args});", bl.rb)
            } else {
                format!("{full}({args});")
            }
        };
        if use_parity {
            // Column x of the micro tile: at a 64-byte line start or mid-line?
            let p0 = by_rows(Some(0));
            let p1 = by_rows(Some(1));
            format!(
                "if ((((uintptr_t)(A + pb + {pw})) & 32) == 0) {{ {p0} }} else {{ {p1} }}",
                pw = g.p[2]
            )
        } else {
            by_rows(None)
        }
    };
    let body_call = call(bl.vo, false);
    let tail_call = call(vt, true);
    // Input and output positions of the micro tile at column vector `xv`.
    let pos = format!(
        "const int64_t pb = {xo} + (int64_t)n * {xns} + (int64_t)({PAD_ROWS} + y0 * {s} - {ph}) * {xrow} + {PAD_LEFT} + xv * {xs} - {ph};
const int64_t po = {yo} + (int64_t)n * {yns} + (int64_t)z * {yds} + (int64_t)({PAD_ROWS} + y0) * {yrow} + {PAD_LEFT} + xv * 8;",
        xo = x.offset,
        xns = x.n_stride,
        xrow = x.row,
        xs = 8 * s,
        yo = y.offset,
        yns = y.n_stride,
        yds = y.d_stride,
        yrow = y.row,
    );
    let ohead = if g.sparse {
        format!("for (int o = 0; o < {co}; o++) {{ const int e0 = I[{rp_off} + o], e1 = I[{rp_off} + o + 1];\n")
    } else {
        format!("for (int ob = 0; ob < {}; ob++) {{\n", co.div_ceil(bl.ob))
    };
    let xhead = format!("for (int xv = 0; xv < {}; xv += {}) {{\n{pos}\n", nxb * bl.vo, bl.vo);
    let xtail = format!("{{ const int xv = {};\n{pos}\n", nxb * bl.vo);
    let x_outer = std::env::var("E2ENC_ORDER").map_or(true, |v| v != "o");
    let loops = if x_outer {
        format!("{xhead}{ohead}{body_call}\n}}\n}}\n{xtail}{ohead}{tail_call}\n}}\n}}\n")
    } else {
        format!("{ohead}{xhead}{body_call}\n}}\n{xtail}{tail_call}\n}}\n}}\n")
    };
    let norm = sp.norm.is_some();
    let mut b = String::new();
    let _ = writeln!(
        b,
        "const int band = (int)(t % {nb}); const int64_t nz = t / {nb};
const int z = (int)(nz % {od}), n = (int)(nz / {od});
const int y0 = band * {rb}, y1 = y0 + {rb} < {oh} ? y0 + {rb} : {oh};
const int zb = z * {sd} - {pd};
(void)y1;",
        rb = bl.rb
    );
    if norm {
        let _ = writeln!(b, "double st[{}]; memset(st, 0, sizeof st);", 2 * co.div_ceil(bl.ob) * bl.ob);
    } else {
        let _ = writeln!(b, "double *st = 0;");
    }
    b.push_str(&loops);
    // Padding of the rows and planes of this band.
    let _ = writeln!(
        b,
        "for (int o = 0; o < {co}; o++) {{
    float *pl = A + {yo} + (int64_t)n * {yns} + (int64_t)o * {ycs} + (int64_t)z * {yds};
    for (int y = y0; y < y1; y++) {{
        float *rowp = pl + (y + {PAD_ROWS}) * {yrow} + {PAD_LEFT};
{pads}    }}
    if (band == 0) {{ {top}}}
    if (band == {last}) {{ {bot}}}",
        yo = y.offset,
        yns = y.n_stride,
        ycs = y.c_stride,
        yds = y.d_stride,
        yrow = y.row,
        pads = super::norm::indent(&super::norm::indent(&zero_row_pads(y, "rowp", 8 * nv))),
        top = zero_row(y, "pl"),
        bot = zero_row(y, &format!("(pl + {})", (oh + 1) * y.row)),
        last = nb - 1,
    );
    if norm {
        let _ = writeln!(
            b,
            "    double *pp = {};\n    pp[0] = st[2 * o]; pp[1] = st[2 * o + 1];",
            partial_ptr(ctx.scratch, od * nb, &format!("n * {co} + o"), "z * NB + band")
                .replace("NB", &nb.to_string())
        );
    }
    b.push_str("}\n");
    let what = format!(
        "{} conv{} {}x{}x{} s{} {}->{}",
        ctx.label,
        if g.sparse { " sparse" } else { "" },
        kd,
        k,
        k,
        s,
        cin,
        co
    );
    Ok(kernel(&ctx.prefix, &helpers, &b, n * od * nb, live_flops(sp), what))
}
