//! Small helpers shared by the emitters for writing C text: exact float literals, the kernel
//! function frame with its tile decoding, and the zeroing of row and plane padding.
//!
//! Everything here is a pure function of its arguments, so generated text is deterministic.

use std::fmt::Write;

use crate::emit::Kernel;
use crate::layout::{View, PAD_LEFT, PAD_ROWS};

/// A C float literal that parses back to exactly `v` (non-finite values spelled as builtins).
pub fn cf(v: f32) -> String {
    if v.is_nan() {
        "__builtin_nanf(\"\")".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "__builtin_inff()".into()
        } else {
            "(-__builtin_inff())".into()
        }
    } else {
        // Debug prints the shortest decimal that round-trips, always with a `.` or an exponent.
        format!("{v:?}f")
    }
}

/// The kernel signature line (opening brace included): [`crate::emit::kernel_signature`].
pub fn signature(name: &str) -> String {
    crate::emit::kernel_signature(name)
}

/// Assembles a kernel: helpers (static functions) first, then the entry point whose body runs
/// `body` for each tile `t` of `[t0, t1)`.
pub fn kernel(
    name: &str,
    helpers: &str,
    body: &str,
    tiles: usize,
    flops: u64,
    what: String,
) -> Kernel {
    let mut s = String::new();
    s.push_str(helpers);
    s.push_str(&signature(name));
    s.push_str("    (void)A; (void)W; (void)I;\n");
    s.push_str("    for (int64_t t = t0; t < t1; t++) {\n");
    for line in body.lines() {
        if line.is_empty() {
            s.push('\n');
        } else {
            let _ = writeln!(s, "        {line}");
        }
    }
    s.push_str("    }\n}\n");
    Kernel {
        name: name.to_string(),
        source: s,
        tiles,
        first_tile: 0,
        flops,
        what,
        launch: None,
        mma: None,
    }
}

/// Number of 8-wide vectors covering a row of `w` values.
pub fn nvec(w: usize) -> usize {
    w.div_ceil(8)
}

/// Arena index of the padded storage start of plane `(n, c, z)` as a C expression; `n`, `c`,
/// `z` are C expressions.
pub fn plane_expr(v: &View, n: &str, c: &str, z: &str) -> String {
    format!(
        "((int64_t){} + (int64_t)({n}) * {} + (int64_t)({c}) * {} + (int64_t)({z}) * {})",
        v.offset, v.n_stride, v.c_stride, v.d_stride
    )
}

/// Offset (from a plane start) of the first value of row `y` (a C expression).
pub fn row_expr(v: &View, y: &str) -> String {
    format!("(({y}) + {PAD_ROWS}) * {} + {PAD_LEFT}", v.row)
}

/// C statements zeroing the padding columns of the row whose value 0 is at `rowp` (a `float *`
/// expression), given that vector stores covered values `[0, covered)` (a multiple of 8).
pub fn zero_row_pads(v: &View, rowp: &str, covered: usize) -> String {
    let mut s = format!("e2f8_store({rowp} - {PAD_LEFT}, e2f8_zero());\n");
    let end = v.row - PAD_LEFT;
    let mut x = covered;
    while x < end {
        let _ = writeln!(s, "e2f8_store({rowp} + {x}, e2f8_zero());");
        x += 8;
    }
    s
}

/// C statements zeroing a whole padded row starting at `rowstart` (a `float *` expression
/// pointing at the row's first padding column).
pub fn zero_row(v: &View, rowstart: &str) -> String {
    format!(
        "for (int q = 0; q < {}; q += 8) e2f8_store({rowstart} + q, e2f8_zero());\n",
        v.row
    )
}
