//! Max pooling and its gradient. Windows that tile the volume (kernel = stride, E2ENet's
//! down-sampling) get a branch-free kernel: the window is unrolled at generation time, the
//! running maximum is a select (`take` when the maximum so far is not NaN and the value is
//! larger or NaN: the first maximum in row-major window order wins, a NaN counts as the maximum),
//! and the gradient writes every window element once (`dy` at the winner, 0 elsewhere), so the
//! loops over output columns vectorize. Overlapping windows take the generic kernel, which adds
//! each window's `dy` at its winner. Tile = one `(n, c)` plane.

use std::fmt::Write as _;

use e2enc_ir::{Op, PoolAttrs};

use super::simple::{done, head};
use super::{d5, err, Ctx, Emitted};
use crate::compile::CodegenError;
use crate::target::Target;

pub(crate) fn emit(ctx: &Ctx) -> Result<Emitted, CodegenError> {
    let (Op::MaxPool3d(a) | Op::MaxPoolBackward(a)) = ctx.op else {
        return Err(err(ctx.g, ctx.id, "not a pooling op"));
    };
    if a.kernel == a.stride && a.kernel[2] == 2 && ctx.isa == Target::X86Avx512 {
        tiled512(ctx)
    } else if a.kernel == a.stride {
        tiled(ctx)
    } else {
        generic(ctx)
    }
}

/// What every pooling kernel starts from: the attributes, the direction, the input `x` and the
/// pooled extent.
struct PoolGeom<'a> {
    a: &'a PoolAttrs,
    backward: bool,
    x: [usize; 5],
    out: [usize; 3],
}

fn pool_geom<'a>(ctx: &Ctx<'a>) -> Result<PoolGeom<'a>, CodegenError> {
    let (Op::MaxPool3d(a) | Op::MaxPoolBackward(a)) = ctx.op else {
        return Err(err(ctx.g, ctx.id, "not a pooling op"));
    };
    let backward = matches!(ctx.op, Op::MaxPoolBackward(_));
    let x = d5(ctx, &ctx.ins[0])?;
    let ys = if backward {
        d5(ctx, &ctx.ins[1])?
    } else {
        d5(ctx, &ctx.out)?
    };
    Ok(PoolGeom {
        a,
        backward,
        x,
        out: [ys[2], ys[3], ys[4]],
    })
}

/// Non-overlapping windows two columns wide, sixteen output columns at a time in AVX-512
/// registers: each window row's 32 input columns are split into even and odd columns, the
/// window is scanned in row-major order with mask selects (the same `take` rule), and the
/// gradient is merged back into 32 columns per window row.
fn tiled512(ctx: &Ctx) -> Result<Emitted, CodegenError> {
    let PoolGeom {
        a,
        backward,
        x: [n, c, d, h, w],
        out: [od, oh, ow],
    } = pool_geom(ctx)?;
    let [kd, kh, _] = a.kernel;
    let plane = d * h * w;
    let opl = od * oh * ow;
    let rows = kd * kh;
    let mut s = head(ctx);
    let _ = write!(
        s,
        "  const __m512i EV = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);\n\
         \x20 const __m512i OD = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);\n\
         \x20 const __m512i LO = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);\n\
         \x20 const __m512i HI = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);\n"
    );
    tile_open(&mut s, plane, opl, backward);
    let _ = write!(
        s,
        "    for (int64_t z = 0; z < {od}; z++) for (int64_t y = 0; y < {oh}; y++) \
         for (int64_t v = 0; v < {ow}; v += 16) {{\n\
         \x20     const int64_t left = {ow} - v < 16 ? {ow} - v : 16;\n\
         \x20     const __mmask16 mo = (__mmask16)((1u << left) - 1u);\n\
         \x20     const __mmask16 m0 = (__mmask16)((1u << (2 * left < 16 ? 2 * left : 16)) - 1u);\n\
         \x20     const __mmask16 m1 = (__mmask16)(2 * left > 16 ? (1u << (2 * left - 16)) - 1u : 0u);\n\
         \x20     __m512 m = _mm512_setzero_ps();\n\
         \x20     __m512i at = _mm512_setzero_si512();\n"
    );
    for ka in 0..kd {
        for kb in 0..kh {
            let r = ka * kh + kb;
            let _ = write!(
                s,
                "      {{\n\
                 \x20       const float *p = x + ((z * {kd} + {ka}) * {h} + y * {kh} + {kb}) * {w} + 2 * v;\n\
                 \x20       const __m512 u0 = _mm512_maskz_loadu_ps(m0, p), u1 = _mm512_maskz_loadu_ps(m1, p + 16);\n\
                 \x20       const __m512 e0 = _mm512_permutex2var_ps(u0, EV, u1), e1 = _mm512_permutex2var_ps(u0, OD, u1);\n"
            );
            for (e, name) in ["e0", "e1"].iter().enumerate() {
                let pos = 2 * r + e;
                if pos == 0 {
                    let _ = writeln!(s, "        m = e0;");
                    continue;
                }
                let _ = write!(
                    s,
                    "        {{ const __mmask16 take = _mm512_cmp_ps_mask(m, m, _CMP_ORD_Q) & \
                     (_mm512_cmp_ps_mask({name}, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask({name}, {name}, _CMP_UNORD_Q));\n\
                     \x20         m = _mm512_mask_blend_ps(take, m, {name}); \
                     at = _mm512_mask_blend_epi32(take, at, _mm512_set1_epi32({pos})); }}\n"
                );
            }
            s.push_str("      }\n");
        }
    }
    if backward {
        let _ = writeln!(
            s,
            "      const __m512 g = _mm512_maskz_loadu_ps(mo, dy + (z * {oh} + y) * {ow} + v);"
        );
        for ka in 0..kd {
            for kb in 0..kh {
                let r = ka * kh + kb;
                let _ = write!(
                    s,
                    "      {{\n\
                     \x20       float *q = o + ((z * {kd} + {ka}) * {h} + y * {kh} + {kb}) * {w} + 2 * v;\n\
                     \x20       const __m512 g0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32({p0})), g);\n\
                     \x20       const __m512 g1 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32({p1})), g);\n\
                     \x20       _mm512_mask_storeu_ps(q, m0, _mm512_permutex2var_ps(g0, LO, g1));\n\
                     \x20       _mm512_mask_storeu_ps(q + 16, m1, _mm512_permutex2var_ps(g0, HI, g1));\n\
                     \x20     }}\n",
                    p0 = 2 * r,
                    p1 = 2 * r + 1
                );
            }
        }
    } else {
        let _ = writeln!(
            s,
            "      _mm512_mask_storeu_ps(o + (z * {oh} + y) * {ow} + v, mo, m);"
        );
    }
    let _ = rows;
    s.push_str("    }\n  }\n}\n");
    Ok(done(s, n * c, n * c * opl * kd * kh * 2))
}

/// The kernel's head and the opening of its loop over `(n, c)` planes: `x` (the input plane,
/// `plane` values), `o` (the output plane) and, `backward`, `dy` (`opl` values; `o` is then the
/// input gradient, zeroed).
fn tile_head(ctx: &Ctx, plane: usize, opl: usize, backward: bool) -> String {
    let mut s = head(ctx);
    tile_open(&mut s, plane, opl, backward);
    s
}

/// Opens the loop over `(n, c)` planes (see [`tile_head`]).
fn tile_open(s: &mut String, plane: usize, opl: usize, backward: bool) {
    let _ = write!(
        s,
        "  for (int64_t t = lo; t < hi; t++) {{\n\
         \x20   const float *restrict x = in[0] + t * {plane};\n"
    );
    if backward {
        let _ = write!(
            s,
            "    const float *restrict dy = in[1] + t * {opl};\n\
             \x20   float *restrict o = out + t * {plane};\n\
             \x20   memset(o, 0, sizeof(float) * {plane});\n"
        );
    } else {
        let _ = writeln!(s, "    float *restrict o = out + t * {opl};");
    }
}

/// Non-overlapping windows.
fn tiled(ctx: &Ctx) -> Result<Emitted, CodegenError> {
    let PoolGeom {
        a,
        backward,
        x: [n, c, d, h, w],
        out: [od, oh, ow],
    } = pool_geom(ctx)?;
    let [kd, kh, kw] = a.kernel;
    let plane = d * h * w;
    let opl = od * oh * ow;
    // Window elements in row-major order: (row pointer index, column offset).
    let mut elems = Vec::new();
    for ka in 0..kd {
        for kb in 0..kh {
            for e in 0..kw {
                elems.push((ka * kh + kb, e));
            }
        }
    }
    let mut s = tile_head(ctx, plane, opl, backward);
    let _ = writeln!(
        s,
        "    for (int64_t z = 0; z < {od}; z++) for (int64_t y = 0; y < {oh}; y++) {{"
    );
    for ka in 0..kd {
        for kb in 0..kh {
            let r = ka * kh + kb;
            let _ = writeln!(
                s,
                "      const float *restrict r{r} = x + ((z * {kd} + {ka}) * {h} + y * {kh} + {kb}) * {w};"
            );
            if backward {
                let _ = writeln!(
                    s,
                    "      float *restrict q{r} = o + ((z * {kd} + {ka}) * {h} + y * {kh} + {kb}) * {w};"
                );
            }
        }
    }
    let _ = writeln!(s, "      for (int64_t v = 0; v < {ow}; v++) {{");
    let (r0, e0) = elems[0];
    let _ = writeln!(
        s,
        "        float m = r{r0}[v * {kw} + {e0}];\n        int at = 0;"
    );
    for (p, &(r, e)) in elems.iter().enumerate().skip(1) {
        let _ = writeln!(
            s,
            "        {{ const float xv = r{r}[v * {kw} + {e}]; const int take = m == m && (xv > m || xv != xv); \
             m = take ? xv : m; at = take ? {p} : at; }}"
        );
    }
    if backward {
        s.push_str(&format!(
            "        const float g = dy[(z * {oh} + y) * {ow} + v];\n"
        ));
        for (p, &(r, e)) in elems.iter().enumerate() {
            let _ = writeln!(s, "        q{r}[v * {kw} + {e}] = at == {p} ? g : 0.0f;");
        }
    } else {
        let _ = writeln!(s, "        o[(z * {oh} + y) * {ow} + v] = m;");
    }
    s.push_str("      }\n    }\n  }\n}\n");
    Ok(done(s, n * c, n * c * opl * kd * kh * kw))
}

/// `MaxPool3d (x)` or `MaxPoolBackward (x, dy)`: tile = plane; the first maximum in row-major
/// window order wins (a NaN counts as the maximum, the first one wins).
fn generic(ctx: &Ctx) -> Result<Emitted, CodegenError> {
    let PoolGeom {
        a,
        backward,
        x: [n, c, d, h, w],
        out: [od, oh, ow],
    } = pool_geom(ctx)?;
    let ([kd, kh, kw], [sd, sh, sw]) = (a.kernel, a.stride);
    let plane = d * h * w;
    let opl = od * oh * ow;
    let mut s = tile_head(ctx, plane, opl, backward);
    let _ = write!(
        s,
        "    for (int64_t z = 0; z < {od}; z++) for (int64_t y = 0; y < {oh}; y++) \
         for (int64_t v = 0; v < {ow}; v++) {{\n\
         \x20     int64_t at = -1; float m = 0.0f;\n\
         \x20     for (int64_t a = 0; a < {kd}; a++) for (int64_t b = 0; b < {kh}; b++) \
         for (int64_t e = 0; e < {kw}; e++) {{\n\
         \x20       const int64_t i = ((z * {sd} + a) * {h} + y * {sh} + b) * {w} + v * {sw} + e;\n\
         \x20       const float xv = x[i];\n\
         \x20       if (at < 0 || (m == m && (xv > m || xv != xv))) {{ at = i; m = xv; }}\n\
         \x20     }}\n"
    );
    if backward {
        s.push_str("      o[at] += dy[(z * ");
        let _ = writeln!(s, "{oh} + y) * {ow} + v];");
    } else {
        let _ = writeln!(s, "      o[(z * {oh} + y) * {ow} + v] = m;");
    }
    s.push_str("    }\n  }\n}\n");
    Ok(done(s, n * c, n * c * opl * kd * kh * kw))
}
