//! The convolution kernels of a training graph, in the "small / big" picture of the
//! interpreter's gradients (`e2enc_ir::interp::grad`): a conv and a transposed conv both relate
//! a small tensor `s[n, cs, q]` to a big one `b[n, cb, t]` through taps `t = q·stride + k - pad`
//! and a weight laid out `[cs, cb, k..]`. That leaves three kernel families:
//!
//! - gather (`Conv3d`, transposed `ConvBackwardData`): the output is the small side, tile = one
//!   small channel `cs`, `out[cs, q] = Σ_{live cb} Σ_k w[cs, cb, k] · big[cb, t(q, k)]`;
//! - scatter (`ConvTranspose3d`, plain `ConvBackwardData`): the output is the big side, tile =
//!   one big channel `cb`, written as a gather over the output (each output row collects the
//!   small rows whose taps land on it), with one accumulator row per stride phase so that the
//!   inner loops stay contiguous for stride 2;
//! - weight gradient (`ConvBackwardWeight`): tile = one weight row `cs`,
//!   `dw[cs, cb, k] = Σ_{n, q} small[cs, q] · big[cb, t(q, k)]` for live `(cs, cb)` only, the
//!   dead kernels written as zeros.
//!
//! Every inner loop runs over a contiguous W row with compile-time bounds (the in-range span of
//! each kernel column is computed here), so gcc vectorizes them. The order of the sums per output
//! element is fixed by the live list and the kernel taps, never by the tiling.

use std::fmt::Write as _;

use e2enc_ir::{ConvGradAttrs, Op};

use super::{c_list, d5, err, Ctx, Emitted, Live};
use crate::compile::CodegenError;
use crate::target::Target;

/// The shapes of one convolution in the small / big picture.
pub(crate) struct Geo {
    pub n: usize,
    pub cs: usize,
    pub cb: usize,
    pub small: [usize; 3],
    pub big: [usize; 3],
    pub k: [usize; 3],
    pub stride: [usize; 3],
    pub pad: [usize; 3],
}

impl Geo {
    pub fn kl(&self) -> usize {
        self.k.iter().product()
    }
    pub fn spl(&self) -> usize {
        self.small.iter().product()
    }
    pub fn bpl(&self) -> usize {
        self.big.iter().product()
    }
    /// For kernel column `c`: the small columns `[lo, hi)` whose tap `q·s + c - p` is in the big
    /// row, and that tap's offset `c - p`.
    fn span(&self, c: usize) -> (usize, usize, i64) {
        let (s, p) = (self.stride[2] as i64, self.pad[2] as i64);
        let off = c as i64 - p;
        let ok = |q: usize| {
            let t = q as i64 * s + off;
            t >= 0 && t < self.big[2] as i64
        };
        let valid: Vec<usize> = (0..self.small[2]).filter(|&q| ok(q)).collect();
        match (valid.first(), valid.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi + 1, off),
            _ => (0, 0, off),
        }
    }
}

fn sp(s: [usize; 5]) -> [usize; 3] {
    [s[2], s[3], s[4]]
}

fn geo(
    small: [usize; 5],
    big: [usize; 5],
    k: [usize; 3],
    stride: [usize; 3],
    pad: [usize; 3],
) -> Geo {
    Geo {
        n: small[0],
        cs: small[1],
        cb: big[1],
        small: sp(small),
        big: sp(big),
        k,
        stride,
        pad,
    }
}

/// A `static const int64_t NAME[]` table of per-channel depth offsets, or "" when `None`.
fn shift_table(name: &str, v: &Option<Vec<i64>>) -> String {
    match v {
        Some(v) => format!(
            "  static const int64_t {name}[{}] = {{{}}};\n",
            v.len(),
            c_list(v)
        ),
        None => String::new(),
    }
}

/// One kernel column's inner loop: `acc[r + j] += w[c] · src[j · m + d]` for `j` in `lo..hi`.
struct Tap {
    c: usize,
    r: i64,
    lo: i64,
    hi: i64,
    m: usize,
    d: i64,
}

/// The inner loops of the taps of one kernel row: taps that update the same accumulator row
/// (`r`) share one loop over their common range, which keeps the running value in a register,
/// and the edges of each tap get their own loops. Every element still adds its taps in
/// ascending `c`, with `fmaf` (fused, whatever the compiler's contraction), so the result is the
/// same for any emission of the loops.
fn tap_loops(taps: &[Tap], w: &str, src: &str, indent: &str) -> String {
    let mut s = String::new();
    let mut groups: Vec<Vec<&Tap>> = Vec::new();
    for t in taps.iter().filter(|t| t.lo < t.hi) {
        match groups.iter_mut().find(|g| g[0].r == t.r) {
            Some(g) => g.push(t),
            None => groups.push(vec![t]),
        }
    }
    let one = |s: &mut String, t: &Tap, lo: i64, hi: i64| {
        if lo < hi {
            let _ = writeln!(
                s,
                "{indent}for (int64_t j = {lo}; j < {hi}; j++) acc[{r} + j] = fmaf({w}[{c}], \
                 {src}[j * {m} + ({d})], acc[{r} + j]);",
                r = t.r,
                c = t.c,
                m = t.m,
                d = t.d
            );
        }
    };
    for g in groups {
        let clo = g.iter().map(|t| t.lo).max().unwrap_or(0);
        let chi = g.iter().map(|t| t.hi).min().unwrap_or(0);
        if g.len() == 1 || clo >= chi {
            for t in &g {
                one(&mut s, t, t.lo, t.hi);
            }
            continue;
        }
        for t in &g {
            one(&mut s, t, t.lo, t.hi.min(clo));
        }
        let r = g[0].r;
        let _ = write!(
            s,
            "{indent}for (int64_t j = {clo}; j < {chi}; j++) {{\n{indent}  float v = acc[{r} + j];\n"
        );
        for t in &g {
            let _ = writeln!(
                s,
                "{indent}  v = fmaf({w}[{c}], {src}[j * {m} + ({d})], v);",
                c = t.c,
                m = t.m,
                d = t.d
            );
        }
        let _ = writeln!(s, "{indent}  acc[{r} + j] = v;\n{indent}}}");
        for t in &g {
            one(&mut s, t, t.lo.max(chi), t.hi);
        }
    }
    s
}

/// Which side a convolution kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// The output is the small side, gathered from the big one (`in[0]`).
    Gather,
    /// The output is the big side, collected from the small one (`in[0]`).
    Scatter,
}

/// The geometry, bias and family of a forward conv / transposed conv or a data gradient, with
/// the checks every renderer's kernel needs (weight shape, strides, where a fused shift may sit).
pub(crate) fn classify(ctx: &Ctx) -> Result<(Geo, bool, Family), CodegenError> {
    let out = d5(ctx, &ctx.out)?;
    let in0 = d5(ctx, &ctx.ins[0])?;
    let (c, bias, gather) = match ctx.op {
        Op::Conv3d(c) => (c, ctx.ins.len() > 2, true),
        Op::ConvTranspose3d(c) => (c, ctx.ins.len() > 2, false),
        Op::ConvBackwardData(ConvGradAttrs {
            conv, transposed, ..
        }) => (conv, false, *transposed),
        // The passes' depth-shift fusion: a plain conv reading its input through the shift.
        Op::FusedConv3d(f)
            if f.sparse_out.is_none()
                && f.norm_eps.is_none()
                && f.slope.is_none()
                && (!f.transposed || f.shifts.is_empty()) =>
        {
            (&f.conv, f.bias, !f.transposed)
        }
        _ => {
            return Err(err(
                ctx.g,
                ctx.id,
                "no training kernel for this convolution (sparse-packed, norm or activation \
                 epilogue, or a shifted transposed conv)",
            ))
        }
    };
    if ctx.shift0.is_some() && !gather {
        return Err(err(
            ctx.g,
            ctx.id,
            "a depth shift on a transposed conv's input",
        ));
    }
    if ctx.out_unshift.is_some() && gather {
        return Err(err(
            ctx.g,
            ctx.id,
            "a fused depth shift on a transposed data gradient",
        ));
    }
    let g = if gather {
        geo(out, in0, c.kernel, c.stride, c.padding)
    } else {
        geo(in0, out, c.kernel, c.stride, c.padding)
    };
    check_weight(ctx, &g)?;
    let family = if gather {
        Family::Gather
    } else {
        Family::Scatter
    };
    Ok((g, bias, family))
}

/// Emits a forward conv / transposed conv or a data gradient.
pub(crate) fn emit(ctx: &Ctx) -> Result<Emitted, CodegenError> {
    let (g, bias, family) = classify(ctx)?;
    let scatter = family == Family::Scatter;
    if super::conv_flat::applies(&g, scatter) {
        return Ok(super::conv_flat::flat_src(ctx, &g, bias, scatter));
    }
    Ok(match family {
        Family::Gather => gather_src(ctx, &g, bias),
        Family::Scatter => scatter_src(ctx, &g, bias),
    })
}

fn check_weight(ctx: &Ctx, g: &Geo) -> Result<(), CodegenError> {
    let w = &ctx.ins[1];
    let want = [g.cs, g.cb, g.k[0], g.k[1], g.k[2]];
    if w.as_slice() != want {
        return Err(err(
            ctx.g,
            ctx.id,
            format!("weight shape {w:?}, expected {want:?}"),
        ));
    }
    if g.stride.contains(&0) {
        return Err(err(ctx.g, ctx.id, "zero stride"));
    }
    Ok(())
}

fn head(ctx: &Ctx) -> String {
    super::head(ctx)
}

/// Output = small side, gathered from the big side (`in[0]`).
fn gather_src(ctx: &Ctx, g: &Geo, bias: bool) -> Emitted {
    let mut s = head(ctx);
    let (kl, spl, bpl) = (g.kl(), g.spl(), g.bpl());
    let [sd, sh, sw] = g.small;
    let [bd, bh, bw] = g.big;
    let [kd, kh, kw] = g.k;
    s.push_str(&shift_table("SHIFT", &ctx.shift0));
    let _ = write!(
        s,
        "  const float *restrict big = in[0];\n  const float *restrict w = in[1];\n\
         {bdecl}  const int32_t *restrict cols = live + {cs1};\n\
         \x20 float acc[{sw}] __attribute__((aligned(64)));\n\
         \x20 for (int64_t s = lo; s < hi; s++) {{\n\
         \x20   const float b0 = {b0};\n\
         \x20   for (int64_t n = 0; n < {n}; n++) {{\n\
         \x20     float *restrict o = out + (n * {cs} + s) * {spl};\n\
         \x20     for (int64_t qz = 0; qz < {sd}; qz++) for (int64_t qy = 0; qy < {sh}; qy++) {{\n\
         \x20       for (int64_t x = 0; x < {sw}; x++) acc[x] = b0;\n\
         \x20       for (int32_t j = live[s]; j < live[s + 1]; j++) {{\n\
         \x20         const int64_t b = cols[j - {cs1}];\n\
         \x20         const float *restrict wk = w + (s * {cb} + b) * {kl};\n\
         \x20         const float *restrict xb = big + (n * {cb} + b) * {bpl};\n\
         \x20         for (int64_t a = 0; a < {kd}; a++) {{\n\
         \x20           const int64_t tz = qz * {szs} + a - {pd};\n\
         \x20           if (tz < 0 || tz >= {bd}) continue;\n\
         \x20           const int64_t uz = tz{shift};\n\
         \x20           if (uz < 0 || uz >= {bd}) continue;\n\
         \x20           for (int64_t c = 0; c < {kh}; c++) {{\n\
         \x20             const int64_t ty = qy * {shs} + c - {ph};\n\
         \x20             if (ty < 0 || ty >= {bh}) continue;\n\
         \x20             const float *restrict xr = xb + (uz * {bh} + ty) * {bw};\n\
         \x20             const float *restrict wr = wk + (a * {kh} + c) * {kw};\n",
        bdecl = if bias {
            "  const float *restrict bias = in[2];\n"
        } else {
            ""
        },
        b0 = if bias { "bias[s]" } else { "0.0f" },
        cs1 = g.cs + 1,
        n = g.n,
        cs = g.cs,
        cb = g.cb,
        szs = g.stride[0],
        shs = g.stride[1],
        pd = g.pad[0],
        ph = g.pad[1],
        shift = if ctx.shift0.is_some() {
            " - SHIFT[b]"
        } else {
            ""
        },
    );
    let taps: Vec<Tap> = (0..kw)
        .map(|c| {
            let (lo, hi, off) = g.span(c);
            Tap {
                c,
                r: 0,
                lo: lo as i64,
                hi: hi as i64,
                m: g.stride[2],
                d: off,
            }
        })
        .collect();
    s.push_str(&tap_loops(&taps, "wr", "xr", "              "));
    let _ = write!(
        s,
        "            }}\n          }}\n        }}\n\
         \x20       float *restrict orow = o + (qz * {sh} + qy) * {sw};\n\
         \x20       for (int64_t x = 0; x < {sw}; x++) orow[x] = acc[x];\n\
         \x20     }}\n    }}\n  }}\n}}\n"
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

/// Output = big side, collected from the small side (`in[0]`).
fn scatter_src(ctx: &Ctx, g: &Geo, bias: bool) -> Emitted {
    let mut s = head(ctx);
    let (kl, spl, bpl) = (g.kl(), g.spl(), g.bpl());
    let [sd, sh, sw] = g.small;
    let [bd, bh, bw] = g.big;
    let [kd, kh, kw] = g.k;
    let st = g.stride[2];
    let jw = bw.div_ceil(st);
    s.push_str(&shift_table("UNSHIFT", &ctx.out_unshift));
    let cond = |stride: usize, v: &str| {
        if stride == 1 {
            String::new()
        } else {
            format!(" || {v} % {stride} != 0")
        }
    };
    let _ = write!(
        s,
        "  const float *restrict sm = in[0];\n  const float *restrict w = in[1];\n\
         {bdecl}  const int32_t *restrict cols = live + {cb1};\n\
         \x20 float acc[{accn}] __attribute__((aligned(64)));\n\
         \x20 for (int64_t cb = lo; cb < hi; cb++) {{\n\
         \x20   const float b0 = {b0};\n\
         \x20   for (int64_t n = 0; n < {n}; n++) {{\n\
         \x20     float *restrict o = out + (n * {cb} + cb) * {bpl};\n\
         \x20     for (int64_t to = 0; to < {bd}; to++) {{\n\
         \x20       const int64_t tz = to{unshift};\n\
         \x20       if (tz < 0 || tz >= {bd}) {{ memset(o + to * {bhw}, 0, sizeof(float) * {bhw}); continue; }}\n\
         \x20       for (int64_t ty = 0; ty < {bh}; ty++) {{\n\
         \x20         for (int64_t x = 0; x < {accn}; x++) acc[x] = b0;\n\
         \x20         for (int32_t j = live[cb]; j < live[cb + 1]; j++) {{\n\
         \x20           const int64_t s = cols[j - {cb1}];\n\
         \x20           const float *restrict xs = sm + (n * {cs} + s) * {spl};\n\
         \x20           const float *restrict wk = w + (s * {cb} + cb) * {kl};\n\
         \x20           for (int64_t a = 0; a < {kd}; a++) {{\n\
         \x20             const int64_t uz = tz + {pd} - a;\n\
         \x20             if (uz < 0{cz}) continue;\n\
         \x20             const int64_t qz = uz / {szs};\n\
         \x20             if (qz >= {sd}) continue;\n\
         \x20             for (int64_t c = 0; c < {kh}; c++) {{\n\
         \x20               const int64_t uy = ty + {ph} - c;\n\
         \x20               if (uy < 0{cy}) continue;\n\
         \x20               const int64_t qy = uy / {shs};\n\
         \x20               if (qy >= {sh}) continue;\n\
         \x20               const float *restrict sr = xs + (qz * {sh} + qy) * {sw};\n\
         \x20               const float *restrict wr = wk + (a * {kh} + c) * {kw};\n",
        bdecl = if bias {
            "  const float *restrict bias = in[2];\n"
        } else {
            ""
        },
        b0 = if bias { "bias[cb]" } else { "0.0f" },
        accn = st * jw,
        cb1 = g.cb + 1,
        n = g.n,
        cs = g.cs,
        cb = g.cb,
        bhw = bh * bw,
        unshift = if ctx.out_unshift.is_some() {
            " + UNSHIFT[cb]"
        } else {
            ""
        },
        szs = g.stride[0],
        shs = g.stride[1],
        pd = g.pad[0],
        ph = g.pad[1],
        cz = cond(g.stride[0], "uz"),
        cy = cond(g.stride[1], "uy"),
    );
    let taps: Vec<Tap> = (0..kw)
        .map(|c| {
            let (lo, hi, off) = g.span(c);
            // Tap t = q·st + off = (q + j0)·st + r with phase r: accumulator row r, index q + j0.
            let r = off.rem_euclid(st as i64);
            let j0 = (off - r) / st as i64;
            Tap {
                c,
                r: r * jw as i64,
                lo: lo as i64 + j0,
                hi: hi as i64 + j0,
                m: 1,
                d: -j0,
            }
        })
        .collect();
    s.push_str(&tap_loops(&taps, "wr", "sr", "                "));
    let store = if st == 1 {
        format!("for (int64_t x = 0; x < {bw}; x++) orow[x] = acc[x];")
    } else {
        format!(
            "for (int64_t r = 0; r < {st}; r++) for (int64_t j = 0; j * {st} + r < {bw}; j++) \
             orow[j * {st} + r] = acc[r * {jw} + j];"
        )
    };
    let _ = write!(
        s,
        "              }}\n            }}\n          }}\n\
         \x20         float *restrict orow = o + (to * {bh} + ty) * {bw};\n\
         \x20         {store}\n\
         \x20       }}\n      }}\n    }}\n  }}\n}}\n"
    );
    Emitted {
        scratch: 0,
        source: s,
        tiles: g.cb,
        work: (g.n * spl * g.cs * kl) as u64,
        live: Live::Csr {
            d0: g.cs,
            d1: g.cb,
            transposed: true,
        },
    }
}

/// A weight gradient's geometry: the small / big picture, which operand is which (`small`,
/// `big`: indices into `in`) and the depth shift the big side is read through.
pub(crate) struct WeightGrad {
    pub g: Geo,
    pub small: usize,
    pub big: usize,
    pub shift: Option<Vec<i64>>,
    pub transposed: bool,
}

/// Classifies a `ConvBackwardWeight` `(x, dy)` (output in the forward weight's layout), with
/// its checks.
pub(crate) fn classify_weight_grad(ctx: &Ctx) -> Result<WeightGrad, CodegenError> {
    let Op::ConvBackwardWeight(a) = ctx.op else {
        return Err(err(ctx.g, ctx.id, "not a weight gradient"));
    };
    let x = d5(ctx, &ctx.ins[0])?;
    let dy = d5(ctx, &ctx.ins[1])?;
    let c = &a.conv;
    // (small, big) = (dy, x) for a conv, (x, dy) for a transposed conv.
    let (small, big, si, bi) = if a.transposed {
        (x, dy, 0, 1)
    } else {
        (dy, x, 1, 0)
    };
    let g = geo(small, big, c.kernel, c.stride, c.padding);
    let want = [g.cs, g.cb, g.k[0], g.k[1], g.k[2]];
    if ctx.out.as_slice() != want || g.stride.contains(&0) {
        return Err(err(
            ctx.g,
            ctx.id,
            format!("gradient shape {:?}, expected {want:?}", ctx.out),
        ));
    }
    // A fused shift applies to operand 0, which is the big side only for a plain conv.
    let shift = if bi == 0 { ctx.shift0.clone() } else { None };
    if ctx.shift0.is_some() && shift.is_none() {
        return Err(err(ctx.g, ctx.id, "a fused shift on the small side"));
    }
    Ok(WeightGrad {
        g,
        small: si,
        big: bi,
        shift,
        transposed: a.transposed,
    })
}

/// Emits a `ConvBackwardWeight`: `(x, dy)`, output in the forward weight's layout.
pub(crate) fn emit_weight_grad(ctx: &Ctx) -> Result<Emitted, CodegenError> {
    let WeightGrad {
        g,
        small: si,
        big: bi,
        shift,
        transposed,
    } = classify_weight_grad(ctx)?;
    if ctx.isa == Target::X86Avx512 && !transposed && super::wgrad512::applies(&g) {
        return Ok(super::wgrad512::wgrad_src(ctx, &g, &shift));
    }
    let (kl, spl, bpl) = (g.kl(), g.spl(), g.bpl());
    let [sd, sh, sw] = g.small;
    let [bd, bh, bw] = g.big;
    let [kd, kh, kw] = g.k;
    let mut s = head(ctx);
    s.push_str(&shift_table("SHIFT", &shift));
    let _ = write!(
        s,
        "  const float *restrict sm = in[{si}];\n  const float *restrict big = in[{bi}];\n\
         \x20 const int32_t *restrict cols = live + {cs1};\n\
         \x20 float acc[{accn}] __attribute__((aligned(64)));\n\
         \x20 for (int64_t s = lo; s < hi; s++) {{\n\
         \x20   memset(out + s * {row}, 0, sizeof(float) * {row});\n\
         \x20   for (int32_t j = live[s]; j < live[s + 1]; j++) {{\n\
         \x20     const int64_t b = cols[j - {cs1}];\n\
         \x20     for (int64_t x = 0; x < {accn}; x++) acc[x] = 0.0f;\n\
         \x20     for (int64_t n = 0; n < {n}; n++) {{\n\
         \x20       const float *restrict xs = sm + (n * {cs} + s) * {spl};\n\
         \x20       const float *restrict xb = big + (n * {cb} + b) * {bpl};\n\
         \x20       for (int64_t qz = 0; qz < {sd}; qz++) for (int64_t qy = 0; qy < {sh}; qy++) {{\n\
         \x20         const float *restrict sr = xs + (qz * {sh} + qy) * {sw};\n\
         \x20         for (int64_t a = 0; a < {kd}; a++) {{\n\
         \x20           const int64_t tz = qz * {szs} + a - {pd};\n\
         \x20           if (tz < 0 || tz >= {bd}) continue;\n\
         \x20           const int64_t uz = tz{shift};\n\
         \x20           if (uz < 0 || uz >= {bd}) continue;\n\
         \x20           for (int64_t c = 0; c < {kh}; c++) {{\n\
         \x20             const int64_t ty = qy * {shs} + c - {ph};\n\
         \x20             if (ty < 0 || ty >= {bh}) continue;\n\
         \x20             const float *restrict br = xb + (uz * {bh} + ty) * {bw};\n\
         \x20             float *restrict ak = acc + (a * {kh} + c) * {kw} * {sw};\n",
        accn = kl * sw,
        row = g.cb * kl,
        cs1 = g.cs + 1,
        n = g.n,
        cs = g.cs,
        cb = g.cb,
        szs = g.stride[0],
        shs = g.stride[1],
        pd = g.pad[0],
        ph = g.pad[1],
        shift = if shift.is_some() { " - SHIFT[b]" } else { "" },
    );
    for c in 0..kw {
        let (lo, hi, off) = g.span(c);
        if lo >= hi {
            continue;
        }
        let _ = writeln!(
            s,
            "              for (int64_t x = {lo}; x < {hi}; x++) ak[{c} * {sw} + x] = fmaf(sr[x], \
             br[x * {st} + ({off})], ak[{c} * {sw} + x]);",
            st = g.stride[2]
        );
    }
    let _ = write!(
        s,
        "            }}\n          }}\n        }}\n      }}\n\
         \x20     float *restrict dw = out + (s * {cb} + b) * {kl};\n\
         \x20     for (int64_t k = 0; k < {kl}; k++) {{\n\
         \x20       float t = 0.0f;\n\
         \x20       for (int64_t x = 0; x < {sw}; x++) t += acc[k * {sw} + x];\n\
         \x20       dw[k] = t;\n\
         \x20     }}\n    }}\n  }}\n}}\n",
        cb = g.cb,
    );
    Ok(Emitted {
        scratch: 0,
        source: s,
        tiles: g.cs,
        work: (g.n * spl * g.cb * kl) as u64,
        live: Live::Csr {
            d0: g.cs,
            d1: g.cb,
            transposed: false,
        },
    })
}
