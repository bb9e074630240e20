//! The micro kernel of the fast conv path (`conv_fast.rs`): one register-blocked C function
//! per variant (rows, vectors, right-edge tail), straight-line code with named accumulators so
//! the C compiler keeps them in registers. One text for every dialect and both vector widths
//! (`Vf`: 8 lanes everywhere, 16 where the dialect has them).
//!
//! For each entry `(c, a)` it walks the tap columns; per tap column it broadcasts the `k * OB`
//! weights, then loads each input row once and adds it into every (output channel, output row)
//! that uses it (rows are shared by up to `k` output rows); at stride 2 a tap vector is the even
//! lanes of two loads (`e2f8_even`, `e2f16_even`), the last loads of a right-edge variant masked
//! to the input row's storage. A sparse micro kernel (one output channel: only `k` FMAs
//! per load) also prefetches the rows of the next x block, which the hardware prefetchers miss
//! because consecutive entries are scattered channels. The epilogue adds the bias, applies the
//! leaky ReLU (when no norm follows), zeroes lanes past the row end, stores, and adds the
//! instance-norm partial sums of its values to the tile's (double) statistics.
//!
//! Row ends: the planar layout pads rows to a multiple of 8 values plus 8 zero columns, so an
//! 8-lane vector never leaves its row, but a 16-lane vector at the last column block may. The
//! last vector of a right-edge (tail) variant then loads with a lane mask (`e2f16_loadn`: lanes
//! past the last value read nothing and hold zero; only lane `i` of a tap load feeds output lane
//! `i`) and stores with one: values for the real lanes, zeros up to the 8-column boundary the
//! 8-lane kernels also write (the padding pass of `conv_fast.rs` zeroes the rest), nothing beyond.

use std::fmt::Write;

use super::conv_fast::FastConv;
use super::dialect::Vf;
use super::text::cf;
use crate::layout::PAD_LEFT;

/// One micro-kernel variant of a fast-path conv: `rb` rows x `vo` vectors, at the right edge
/// or not.
pub struct Micro<'a> {
    pub name: String,
    pub rb: usize,
    pub vo: usize,
    pub tail: bool,
    pub fc: &'a FastConv,
}

impl Micro<'_> {
    pub fn source(&self) -> String {
        let fc = self.fc;
        let (g, x) = (&fc.g, &fc.x);
        let (k, s, ob) = (g.k[1], g.s[1], fc.bl.ob);
        let v = Vf { lanes: fc.lanes };
        let (ty, lanes) = (v.ty(), fc.lanes);
        // One accumulator per (output channel, row, output vector): at stride 2 too, since the
        // tap vectors are deinterleaved as they are loaded.
        let vf = self.vo;
        let kk = k * k;
        let rows_in = s * (self.rb - 1) + k;
        let ow = g.y[4];
        let nv = ow.div_ceil(lanes);
        // Lanes of the last vector that are values, and that may be stored (values + zero
        // padding up to the 8-column boundary).
        let last_vals = ow - lanes * (nv - 1);
        // Loads of the last vector mask lanes past the row's values (16 lanes only: 8-lane
        // loads stay inside the row's zero padding).
        let masked = |f: usize| self.tail && f == vf - 1 && last_vals < lanes && lanes > 8;
        let mut c = String::new();
        let _ = writeln!(
            c,
            "static void {}(float *restrict A, const float *restrict W, const int32_t *restrict ent,
    const float *restrict w, int ne, int64_t pb, int zb, int64_t po, int o0, double *restrict st,
    float *restrict sh) {{
    (void)W; (void)zb; (void)o0; (void)st; (void)sh;",
            self.name
        );
        for o in 0..ob {
            for r in 0..self.rb {
                for f in 0..vf {
                    let _ = writeln!(c, "    {ty} a{o}_{r}_{f} = {}();", v.op("zero"));
                }
            }
        }
        let _ = writeln!(
            c,
            "    for (int e = 0; e < ne; e++, ent += 3, w += {}) {{",
            kk * ob
        );
        let d = g.x[2];
        if fc.check_iz {
            let _ = writeln!(c, "        if ((unsigned)(zb + ent[1]) >= {d}u) continue;");
        }
        if fc.check_jz {
            let _ = writeln!(c, "        if ((unsigned)(zb + ent[2]) >= {d}u) continue;");
        }
        let _ = writeln!(
            c,
            "        const {} *p = {};",
            x.c_type(),
            super::conv_fast::input_at(fc, "ent[0]", "zb + ent[2]")
        );
        if fc.aligned {
            // Prefetch the next entry's lines (scattered channel rows defeat the hardware
            // prefetchers; the next x block is too far ahead to stay in L1).
            let _ = writeln!(
                c,
                "        if (e + 1 < ne) {{\n            const {} *q = {};",
                x.c_type(),
                super::conv_fast::input_at(fc, "ent[3]", "zb + ent[5]")
            );
            for rr in 0..rows_in {
                for j in 0..=vf {
                    let _ = writeln!(
                        c,
                        "            e2_prefetch(q + {});",
                        rr as isize * x.row as isize + (lanes * j) as isize - 7
                    );
                }
            }
            let _ = writeln!(c, "        }}");
            aligned_body(&mut c, self, rows_in, x.row);
        } else {
            if g.sparse {
                // The next micro tile (same entries, one block right) needs the following lines:
                // the scattered channel rows of a sparse conv defeat the hardware prefetchers.
                let dist = lanes * s * self.vo + lanes;
                for rr in 0..rows_in {
                    let _ = writeln!(c, "        e2_prefetch(p + {});", rr * x.row + dist);
                }
            }
            // Stride 2: floats of the input row's storage from the load at `off` (relative to
            // `p`, column -ph of the tile), where the last vector of a tail variant may reach
            // past the row (the lanes it would read there only feed dropped odd lanes or
            // outputs past the row end).
            let in_row = |off: usize| -> Option<usize> {
                // Column of p + off in the tail block (its first vector is nv - vo; p is
                // column lanes * s * xv - ph).
                let col = (lanes * s * (nv - self.vo)) as isize - g.p[1] as isize + off as isize;
                let room = x.row as isize - PAD_LEFT as isize - col;
                (room < lanes as isize).then_some(room.max(0) as usize)
            };
            for cc in 0..k {
                let _ = writeln!(c, "        {{");
                for o in 0..ob {
                    for b in 0..k {
                        let _ = writeln!(
                            c,
                            "            const {ty} w{o}_{b} = {}(w + {});",
                            v.op("bcast"),
                            (cc * k + b) * ob + o
                        );
                    }
                }
                for rr in 0..rows_in {
                    for f in 0..vf {
                        let load = if s == 2 {
                            // Tap cc of output lane i is input column 2 (x + L f + i) - 1 + cc:
                            // the even lanes of the 2 L columns from 2 (x + L f) - 1 + cc.
                            let half = |o: usize| {
                                let room = if self.tail && f == vf - 1 {
                                    in_row(2 * lanes * f + cc + o)
                                } else {
                                    None
                                };
                                let at = rr * x.row + 2 * lanes * f + cc + o;
                                match room {
                                    Some(n) => format!("{}(p + {at}, {n})", v.op("loadn")),
                                    None => format!("{}(p + {at})", v.op("load")),
                                }
                            };
                            format!("{}({}, {})", v.op("even"), half(0), half(lanes))
                        } else {
                            let off = rr * x.row + lanes * f + cc;
                            if masked(f) {
                                format!("{}(p + {off}, {last_vals})", v.op("loadn"))
                            } else {
                                format!("{}(p + {off})", v.op("load"))
                            }
                        };
                        let _ = writeln!(c, "            {{ const {ty} x = {load};");
                        for b in 0..k {
                            if rr < b || (rr - b) % s != 0 || (rr - b) / s >= self.rb {
                                continue;
                            }
                            let r = (rr - b) / s;
                            for o in 0..ob {
                                let _ = writeln!(
                                    c,
                                    "              a{o}_{r}_{f} = {}(w{o}_{b}, x, a{o}_{r}_{f});",
                                    v.op("fma")
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
        epilogue(&mut c, fc, self.rb, self.vo, self.tail);
        c.push_str("}\n");
        c
    }
}

/// The entry body of a sparse 3x3 variant on 16 lanes with `e2f16_alignr` (one output channel:
/// only 3 FMAs per tap load, so loads bound it): each input row is read as 64-byte aligned
/// vectors starting 8 columns left of each 16-column block (rows of 16k floats start 32 bytes
/// into a line, `PAD_LEFT` = 8), and the three tap vectors are cut from two neighbours with
/// `e2f16_alignr`, instead of three unaligned loads that each split a cache line. All 9 weights
/// stay in registers. In a tail variant the vector past the last block is loaded masked to the
/// row's own storage (past it lies the next row or the end of the buffer).
fn aligned_body(c: &mut String, m: &Micro, rows_in: usize, xrow: usize) {
    debug_assert_eq!(m.fc.lanes, 16);
    let vf = m.vo;
    let ow = m.fc.g.y[4];
    let nv = ow.div_ceil(16);
    // Values (and right padding) of an input row, from value 0.
    let row_vals = xrow - PAD_LEFT;
    for t in 0..9 {
        let _ = writeln!(c, "        const e2f16 w{t} = e2f16_bcast(w + {t});");
    }
    for rr in 0..rows_in {
        let _ = writeln!(c, "        {{");
        for j in 0..=vf {
            // p is column x0 - 1; vector j starts at column x0 + 16 j - 8 = p + 16 j - 7.
            let off = rr as isize * xrow as isize + 16 * j as isize - 7;
            let over = m.tail && j == vf && 16 * nv + 8 > row_vals;
            let load = if over {
                format!("e2f16_loadn(p + {off}, {})", row_vals + 8 - 16 * nv)
            } else {
                format!("e2f16_load(p + {off})")
            };
            let _ = writeln!(c, "            const e2f16 v{j} = {load};");
        }
        for f in 0..vf {
            let _ = writeln!(c, "            {{");
            for cc in 0..3 {
                let _ = writeln!(
                    c,
                    "            const e2f16 x{cc} = e2f16_alignr(v{}, v{f}, {});",
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
                        "            a0_{r}_{f} = e2f16_fma(w{}, x{cc}, a0_{r}_{f});",
                        cc * 3 + b
                    );
                }
            }
            let _ = writeln!(c, "            }}");
        }
        let _ = writeln!(c, "        }}");
    }
}

/// The epilogue of a micro kernel of `rb` rows x `vo` vectors of `fc` (a right-edge variant
/// when `tail`), after its accumulators `a{o}_{r}_{j}`: adds the bias, applies the leaky ReLU
/// (when no norm follows), zeroes lanes past the row end, stores at `A + po`, and adds the
/// instance-norm partial sums of the values to `st`. Shared by the bf16 and int8 kernels.
///
/// A bf16 output that a norm follows (`fc.shift`) is stored less a shift per (tile, output
/// channel): the mean of the tile's first block of that channel (`sh`, NaN until set, saved in
/// scratch at the tile's end). The raw values of a conv can sit far from zero next to their
/// spread (a large mean), and bf16 keeps 8 significant bits of the value, not of its distance
/// from the mean: normalizing bf16-stored raw values lost everything on the released network
/// (logits 9.5e-1 from f32). Less the shift they keep 8 bits of that distance; the statistics
/// come from the f32 values, and the norm (`norm::apply`) adds the shift back by normalizing
/// with the mean less it.
pub(super) fn epilogue(c: &mut String, fc: &FastConv, rb: usize, vo: usize, tail: bool) {
    let (g, y, ob) = (&fc.g, &fc.y, fc.bl.ob);
    let v = Vf { lanes: fc.lanes };
    let (ty, lanes) = (v.ty(), fc.lanes);
    let ow = g.y[4];
    let nv = ow.div_ceil(lanes);
    let last_vals = ow - lanes * (nv - 1);
    let last_store = (ow.div_ceil(8) * 8 - lanes * (nv - 1)).min(lanes);
    if let Some(sl) = fc.slope {
        let _ = writeln!(c, "    const {ty} vsl = {}({});", v.op("set1"), cf(sl));
    }
    let guard = g.y[1] % ob != 0;
    for o in 0..ob {
        let _ = writeln!(c, "    {{");
        if guard {
            let _ = writeln!(c, "    if (o0 + {o} < {}) {{", g.y[1]);
        }
        if let Some(boff) = fc.bias {
            let _ = writeln!(
                c,
                "    const {ty} vb = {}(W + {boff} + o0 + {o});",
                v.op("bcast")
            );
        }
        // Statistics: of the values in f64 (the f32 kernels: every width adds the same doubles),
        // or, with a shift, of the shifted values in f32 lanes (see below).
        let shifted_stats = fc.norm_scratch.is_some() && fc.shift.is_some();
        if shifted_stats {
            let _ = writeln!(c, "    {ty} fs = {z}(), fq = {z}();", z = v.op("zero"));
        } else if fc.norm_scratch.is_some() {
            let _ = writeln!(c, "    e2st vs = e2st_zero(), vq = e2st_zero();");
        }
        // The value of accumulator (r, j) with bias, activation and the row end applied.
        let value = |r: usize, j: usize| {
            let mut s = format!("a{o}_{r}_{j}");
            if fc.bias.is_some() {
                s = format!("{}({s}, vb)", v.op("add"));
            }
            if fc.slope.is_some() {
                s = format!("{}({s}, vsl)", v.op("lrelu"));
            }
            if tail && j == vo - 1 && last_vals < lanes {
                s = format!("{}({s}, {last_vals})", v.op("keep"));
            }
            s
        };
        // Values of this block (lanes past the row end excluded).
        let count = rb
            * (vo * lanes
                - if tail && last_vals < lanes {
                    lanes - last_vals
                } else {
                    0
                });
        if fc.shift.is_some() {
            // A normalized bf16 output: the tile's first block of this channel sets its shift
            // (the block's mean), every block stores its values less it. Normalizing is
            // shift-invariant, and a shifted value keeps the bits a large mean would take.
            let _ = writeln!(
                c,
                "    if (sh[{o}] != sh[{o}]) {{\n      {ty} vt = {}();",
                v.op("zero")
            );
            for r in 0..rb {
                for j in 0..vo {
                    let _ = writeln!(c, "      vt = {}(vt, {});", v.op("add"), value(r, j));
                }
            }
            let _ = writeln!(
                c,
                "      float tt[{lanes}], s = 0.0f; {}(tt, vt);
      for (int l = 0; l < {lanes}; l++) s += tt[l];
      sh[{o}] = s / {count}.0f;
    }}
    const {ty} vsh = {}(-sh[{o}]);",
                v.op("store"),
                v.op("set1")
            );
        }
        for r in 0..rb {
            for j in 0..vo {
                let _ = writeln!(c, "    {{ {ty} v = {};", value(r, j));
                let at = o * y.c_stride + r * y.row + lanes * j;
                let last = tail && j == vo - 1;
                let stored = if fc.shift.is_some() {
                    let mut s = format!("{}(v, vsh)", v.op("add"));
                    if last && last_vals < lanes {
                        s = format!("{}({s}, {last_vals})", v.op("keep"));
                    }
                    s
                } else {
                    "v".to_string()
                };
                let stored = match shifted_stats {
                    true => {
                        let _ = writeln!(c, "      const {ty} d = {stored};");
                        "d".to_string()
                    }
                    false => stored,
                };
                if last && last_store < lanes {
                    let _ = writeln!(
                        c,
                        "      {}({} + po + {at}, {stored}, {last_store});",
                        v.op("storen"),
                        y.c_base()
                    );
                } else {
                    let _ = writeln!(
                        c,
                        "      {}({} + po + {at}, {stored});",
                        v.op("store"),
                        y.c_base()
                    );
                }
                if shifted_stats {
                    let _ = writeln!(
                        c,
                        "      fs = {}(fs, d); fq = {}(d, d, fq);",
                        v.op("add"),
                        v.op("fma")
                    );
                } else if fc.norm_scratch.is_some() {
                    let _ = writeln!(c, "      {}(&vs, &vq, v);", v.op("stats"));
                }
                let _ = writeln!(c, "    }}");
            }
        }
        if shifted_stats {
            // The shifted values d = v - h of a block sit near zero (h is a block mean), so
            // their sums in f32 lanes lose nothing the f64 sums of v would keep (a block is at
            // most 10 rows x 8 vectors a lane); the sums of v and v^2 follow in f64:
            // n h + S and Q + 2 h S + n h^2.
            let _ = writeln!(
                c,
                "    {{ const double h = sh[{o}], s = {sd}(fs), q = {sd}(fq);
      st[{}] += s + {count}.0 * h; st[{}] += q + 2.0 * h * s + {count}.0 * h * h; }}",
                2 * o,
                2 * o + 1,
                sd = v.op("sumd"),
            );
        } else if fc.norm_scratch.is_some() {
            let _ = writeln!(
                c,
                "    st[{}] += e2st_sum(vs); st[{}] += e2st_sum(vq);",
                2 * o,
                2 * o + 1
            );
        }
        if guard {
            let _ = writeln!(c, "    }}");
        }
        let _ = writeln!(c, "    }}");
    }
}
