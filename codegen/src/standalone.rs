//! `compile --standalone`: a dependency-free C program of one bundle, in `standalone/`.
//!
//! This module owns the four files of that folder: `model.c` (the bundle's kernel text, byte for
//! byte what `kernels.c` holds, plus a driver that loads the weights, writes the input into its
//! padded view, calls every step over all its tiles in order, single-threaded, and reads the
//! outputs out of their views), `model.h` (the documented C API), `main.c` (a command-line
//! program over raw little-endian f32 files) and `README.md` (what the files are and the one-line
//! build command of the bundle's target, from [`Target::standalone_build_line`]).
//!
//! Why shaped so: the runtime (`runtime/src/exec.rs`) is the reference for what running a bundle
//! means, so the driver does exactly what it does (arena zero-filled, input planes written with
//! zero padding, steps over their tile ranges, outputs read row by row) with every offset, stride and
//! tile count baked in as a constant, the way the kernels bake theirs: nothing to parse at run
//! time but the weights file. The weights are not compiled into the program (they can be large,
//! and the bundle already holds them): `model.c` reads the bundle's `weights.safetensors`, whose
//! exact layout is known here because codegen wrote it, so the loader checks the file size, the
//! 8-byte header length and the header text itself and reads the `W` and `I` blobs at fixed
//! offsets, returning an error (not crashing) on a short or foreign file. The text is a pure
//! function of the manifest, the kernel text and the weights header (same model, same bytes).

use std::fmt::Write as _;
use std::path::Path;

use crate::artifact::{Manifest, Port};
use crate::compile::CodegenError;
use crate::layout::PAD_LEFT;
use crate::target::Target;

/// The name of the folder inside the bundle.
pub const DIR: &str = "standalone";

/// The files of `standalone/`, in the order [`generate`] returns them.
pub const FILES: [&str; 4] = ["model.h", "model.c", "main.c", "README.md"];

/// Where the `W` and `I` blobs sit in the bundle's `weights.safetensors`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsLayout {
    /// Size of the whole file in bytes.
    pub file_bytes: u64,
    /// The JSON header (the bytes after the 8-byte length), exactly as written.
    pub header: Vec<u8>,
    /// Byte offset in the file and byte length of `W` (f32) and `I` (i32).
    pub w: (u64, u64),
    pub i: (u64, u64),
}

impl WeightsLayout {
    /// Reads the layout from the bytes of a weights file codegen wrote.
    pub fn of(bytes: &[u8]) -> Result<WeightsLayout, CodegenError> {
        let bad = |m: &str| CodegenError::Other(format!("standalone: weights file: {m}"));
        let n = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| bad("shorter than 8 bytes"))?;
        let header = bytes
            .get(8..8 + n as usize)
            .ok_or_else(|| bad("shorter than its header"))?;
        let json: serde_json::Value =
            serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
        let blob = |name: &str, dtype: &str| -> Result<(u64, u64), CodegenError> {
            let t = &json[name];
            if t["dtype"] != dtype {
                return Err(bad(&format!("tensor `{name}` is not {dtype}")));
            }
            let o = &t["data_offsets"];
            let (b, e) = (o[0].as_u64(), o[1].as_u64());
            match (b, e) {
                (Some(b), Some(e)) if b <= e => Ok((8 + n + b, e - b)),
                _ => Err(bad(&format!("tensor `{name}` has no data offsets"))),
            }
        };
        Ok(WeightsLayout {
            file_bytes: bytes.len() as u64,
            header: header.to_vec(),
            w: blob("W", "F32")?,
            i: blob("I", "I32")?,
        })
    }
}

/// The files of `standalone/` (names as in [`FILES`], then their text) for a bundle with this
/// manifest, kernel text (what `kernels.c` holds) and weights file bytes.
pub fn generate(
    m: &Manifest,
    kernels_c: &str,
    weights: &[u8],
    target: Target,
) -> Result<Vec<(&'static str, String)>, CodegenError> {
    let bad = |msg: String| CodegenError::Other(format!("--standalone: {msg}"));
    let input = match m.inputs.as_slice() {
        [p] => p,
        ps => return Err(bad(format!("the graph has {} inputs, not one", ps.len()))),
    };
    for p in m.inputs.iter().chain(&m.outputs) {
        if p.dtype != "f32" {
            return Err(bad(format!("port `{}` holds {}, not f32", p.name, p.dtype)));
        }
    }
    let logits = m
        .outputs
        .iter()
        .position(|p| p.name == "logits")
        .ok_or_else(|| bad("the graph has no `logits` output".into()))?;
    let layout = WeightsLayout::of(weights)?;
    if layout.w.1 != m.consts_f32 as u64 * 4 || layout.i.1 != m.consts_i32 as u64 * 4 {
        return Err(bad("the weights file does not match the manifest".into()));
    }
    let ctx = Ctx {
        m,
        input,
        logits,
        layout,
        target,
    };
    Ok(vec![
        ("model.h", ctx.header()),
        ("model.c", ctx.model_c(kernels_c)),
        ("main.c", ctx.main_c()),
        ("README.md", ctx.readme()),
    ])
}

/// Writes the files of [`generate`] into `dir` (created).
pub fn write(
    dir: &Path,
    m: &Manifest,
    kernels_c: &str,
    weights: &[u8],
    target: Target,
) -> Result<(), CodegenError> {
    let files = generate(m, kernels_c, weights, target)?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CodegenError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    Ok(())
}

struct Ctx<'a> {
    m: &'a Manifest,
    input: &'a Port,
    logits: usize,
    layout: WeightsLayout,
    target: Target,
}

/// Elements of a port (the product of its shape).
fn elems(p: &Port) -> usize {
    p.shape.iter().product()
}

fn shape_list(p: &Port) -> String {
    p.shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn shape_x(p: &Port) -> String {
    p.shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// A C string literal of `bytes` (printable ASCII kept, the rest as 3-digit octal escapes).
fn c_string(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'?' => s.push_str("\\?"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\{b:03o}");
            }
        }
    }
    s.push('"');
    s
}

impl Ctx<'_> {
    fn model_name(&self) -> String {
        self.m.model["name"]
            .as_str()
            .unwrap_or("e2enet")
            .to_string()
    }

    fn header(&self) -> String {
        let m = self.m;
        let inp = self.input;
        let lg = &m.outputs[self.logits];
        let mut h = String::new();
        let _ = write!(
            h,
            r#"/* model.h: the C API of one compiled E2ENet, standalone (generated by e2enc; do not edit).
 *
 * Model `{name}`, target {target}: {steps} kernel calls, batch and patch fixed at compile time.
 * model.c holds the generated kernels (the same text as the bundle's kernels.c) and a driver
 * implementing the API below; it needs only the C standard library (C11: aligned_alloc), no
 * threads, no OpenMP.
 *
 * Weights: not compiled in. e2enc_model_load_weights reads them from the bundle's
 * weights.safetensors (the file `e2enc compile` wrote next to this folder), checking its size
 * ({file_bytes} bytes) and header first: a truncated file, or the weights of another bundle,
 * is refused with an error code and a message, never read.
 *
 * Tensors are dense, row-major NCDHW float32 (W fastest).
 *
 * Use:
 *   e2enc_weights wts;
 *   char err[512];
 *   if (e2enc_model_load_weights("../weights.safetensors", &wts, err, sizeof err) != E2ENC_OK) {{
 *       fprintf(stderr, "%s\n", err);
 *       return 1;
 *   }}
 *   float *ws = e2enc_model_workspace_alloc();          (E2ENC_MODEL_WORKSPACE_BYTES, 64-aligned)
 *   int rc = e2enc_model_run(&wts, ws, input, logits);  (input: E2ENC_MODEL_INPUT_ELEMS floats,
 *                                                        logits: E2ENC_MODEL_LOGITS_ELEMS floats)
 *   e2enc_model_workspace_free(ws);
 *   e2enc_model_free_weights(&wts);
 *
 * One workspace serves one run at a time; runs on separate workspaces may share the weights
 * (they are only read) and run concurrently on different threads.
 */
#ifndef E2ENC_MODEL_H
#define E2ENC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

/* The target the kernels were generated for (see README.md for the build command). */
#define E2ENC_MODEL_TARGET "{target}"

/* Bytes of the workspace (the activation arena) a run needs; it must be 64-byte aligned.
 * Its contents before a run do not matter: e2enc_model_run zero-fills it first (one memset, so
 * the kernels' zero-padding invariant holds whatever the buffer held). */
#define E2ENC_MODEL_WORKSPACE_BYTES ((size_t){ws_bytes}u)
#define E2ENC_MODEL_WORKSPACE_ALIGN 64

/* The input `{in_name}`: dense f32 NCDHW of shape [{in_shape}]. */
#define E2ENC_MODEL_INPUT_RANK {in_rank}
#define E2ENC_MODEL_INPUT_SHAPE {{{in_shape}}}
#define E2ENC_MODEL_INPUT_ELEMS ((size_t){in_elems}u)

/* The output `logits`: dense f32 NCDHW of shape [{lg_shape}] (class scores before softmax). */
#define E2ENC_MODEL_LOGITS_RANK {lg_rank}
#define E2ENC_MODEL_LOGITS_SHAPE {{{lg_shape}}}
#define E2ENC_MODEL_LOGITS_ELEMS ((size_t){lg_elems}u)
/* Its index among the outputs (e2enc_model_run_outputs). */
#define E2ENC_MODEL_LOGITS_INDEX {lg_index}

/* Every output, in the bundle manifest's order: {out_names}. */
#define E2ENC_MODEL_NUM_OUTPUTS {n_out}
"#,
            name = self.model_name(),
            target = self.target.name(),
            steps = m.steps.len(),
            file_bytes = self.layout.file_bytes,
            ws_bytes = m.arena_elems.max(1) * 4,
            in_name = inp.name,
            in_shape = shape_list(inp),
            in_rank = inp.shape.len(),
            in_elems = elems(inp),
            lg_shape = shape_list(lg),
            lg_rank = lg.shape.len(),
            lg_elems = elems(lg),
            lg_index = self.logits,
            out_names = m
                .outputs
                .iter()
                .map(|p| format!("{} [{}]", p.name, shape_list(p)))
                .collect::<Vec<_>>()
                .join(", "),
            n_out = m.outputs.len(),
        );
        h.push_str(
            r#"
/* Error codes of the functions below (0 is success). */
#define E2ENC_OK 0
#define E2ENC_ERR_ARGUMENT 1 /* a NULL pointer, or a workspace that is not 64-byte aligned */
#define E2ENC_ERR_OPEN 2     /* the weights file cannot be opened */
#define E2ENC_ERR_FORMAT 3   /* not this bundle's weights file (size or header differ) */
#define E2ENC_ERR_READ 4     /* reading the weights file failed */
#define E2ENC_ERR_MEMORY 5   /* out of memory */
#define E2ENC_ERR_PLATFORM 6 /* a big-endian host (the files are little-endian), or a CPU
                              * without the instructions the kernels were compiled for */

/* A short English description of an error code. */
const char *e2enc_model_strerror(int code);

/* The constants the kernels read (the bundle's `W` f32 and `I` i32 blobs), 64-byte aligned. */
typedef struct e2enc_weights {
    float *w;
    int32_t *i;
} e2enc_weights;

/* Reads the weights from `path` (the bundle's weights.safetensors) into `out`. On failure returns
 * a non-zero E2ENC_ERR_* code, leaves `out` empty (NULL pointers), and writes a message naming
 * the file and the problem into `err` (at most `err_len` bytes, NUL-terminated; `err` may be
 * NULL). */
int e2enc_model_load_weights(const char *path, e2enc_weights *out, char *err, size_t err_len);

/* Frees what e2enc_model_load_weights allocated (NULL pointers are fine). */
void e2enc_model_free_weights(e2enc_weights *w);

/* The workspace size in bytes (E2ENC_MODEL_WORKSPACE_BYTES). */
size_t e2enc_model_workspace_bytes(void);

/* A 64-byte aligned workspace of E2ENC_MODEL_WORKSPACE_BYTES bytes (NULL if out of memory);
 * free it with e2enc_model_workspace_free (or free()). */
float *e2enc_model_workspace_alloc(void);
void e2enc_model_workspace_free(float *workspace);

/* The shape of the input (`output` = 0) or of output `index` (`output` = 1) into `shape[5]`;
 * returns the rank, or -1 if there is no such port. `name` (if not NULL) gets the port's name. */
int e2enc_model_shape(int output, int index, int64_t shape[5], const char **name);

/* Runs one patch: `input` holds E2ENC_MODEL_INPUT_ELEMS floats (dense NCDHW), `logits` receives
 * E2ENC_MODEL_LOGITS_ELEMS floats (dense NCDHW). Single-threaded; deterministic. Returns E2ENC_OK,
 * or E2ENC_ERR_ARGUMENT for NULL pointers or a misaligned workspace. Kernels keep a tile's working
 * set on the stack (up to 640 KiB in bf16 models): call it from a thread with 1 MiB or more. */
int e2enc_model_run(const e2enc_weights *w, float *workspace, const float *input, float *logits);

/* e2enc_model_run writing every output: `outputs[k]` receives output k (E2ENC_MODEL_NUM_OUTPUTS
 * entries, in manifest order; a NULL entry skips that output). */
int e2enc_model_run_outputs(const e2enc_weights *w, float *workspace, const float *input,
                            float *const *outputs);

#ifdef __cplusplus
}
#endif

#endif /* E2ENC_MODEL_H */
"#,
        );
        h
    }

    /// The body of `e2enc_missing_cpu_feature`: on x86 targets one `__builtin_cpu_supports`
    /// test per CPU feature of the manifest (GCC and clang spell them as `std::arch` does);
    /// elsewhere nothing (aarch64 NEON is baseline, portable C needs none).
    fn cpu_checks(&self) -> String {
        if self.target.arch() != Some("x86_64") {
            return String::new();
        }
        let mut s = String::from(
            "#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
",
        );
        for f in &self.m.cpu_features {
            let _ = writeln!(
                s,
                "    if (!__builtin_cpu_supports(\"{f}\")) return \"{f}\";"
            );
        }
        s.push_str(
            "#endif
",
        );
        s
    }

    fn model_c(&self, kernels_c: &str) -> String {
        let m = self.m;
        let l = &self.layout;
        let mut c = String::new();
        c.push_str(
            "/* model.c: the standalone program of one E2ENet bundle (generated by e2enc; do not \
             edit).\n * First the bundle's kernels (the same text as its kernels.c), then the \
             driver: weights loader\n * and the run function (see model.h). */\n\n",
        );
        c.push_str(kernels_c);
        if !kernels_c.ends_with('\n') {
            c.push('\n');
        }
        let _ = write!(
            c,
            r#"
/* ------------------------------------------------------------------------------------------ */
/* The standalone driver (the C counterpart of the runtime's exec.rs).                          */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* The bundle's weights.safetensors, as codegen wrote it: an 8-byte little-endian header length,
 * the JSON header, then the `W` (f32) and `I` (i32) blobs at these byte offsets. */
#define E2ENC_WEIGHTS_FILE_BYTES {file_bytes}ull
#define E2ENC_WEIGHTS_HEADER_LEN {header_len}ull
#define E2ENC_W_OFFSET {w_off}ull
#define E2ENC_W_BYTES {w_len}ull
#define E2ENC_I_OFFSET {i_off}ull
#define E2ENC_I_BYTES {i_len}ull
static const char e2enc_weights_header[] =
    {header};

/* Zero columns before the values of each padded row (layout.rs PAD_LEFT). */
#define E2ENC_PAD_LEFT {pad_left}

const char *e2enc_model_strerror(int code) {{
    switch (code) {{
    case E2ENC_OK: return "success";
    case E2ENC_ERR_ARGUMENT: return "invalid argument (NULL pointer or misaligned workspace)";
    case E2ENC_ERR_OPEN: return "cannot open the weights file";
    case E2ENC_ERR_FORMAT: return "not this bundle's weights file";
    case E2ENC_ERR_READ: return "cannot read the weights file";
    case E2ENC_ERR_MEMORY: return "out of memory";
    case E2ENC_ERR_PLATFORM: return "this host cannot run the model (big-endian, or without the kernels' CPU instructions)";
    default: return "unknown error";
    }}
}}

static void e2enc_seterr(char *err, size_t len, const char *fmt, ...) {{
    va_list ap;
    if (err == NULL || len == 0) return;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}}

static void *e2enc_alloc64(unsigned long long bytes) {{
    size_t n = (size_t)((bytes + 63u) / 64u * 64u);
    if (n == 0) n = 64;
    return aligned_alloc(64, n);
}}

static int e2enc_little_endian(void) {{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}}

/* The first CPU feature the kernels need that this CPU lacks (NULL: none), so that a model built
 * for another CPU is refused instead of dying on an illegal instruction. */
static const char *e2enc_missing_cpu_feature(void) {{
{cpu_checks}    return NULL;
}}

void e2enc_model_free_weights(e2enc_weights *w) {{
    if (w == NULL) return;
    free(w->w);
    free(w->i);
    w->w = NULL;
    w->i = NULL;
}}

static int e2enc_read_at(FILE *f, unsigned long long off, void *dst, unsigned long long bytes) {{
    if (fseek(f, (long)off, SEEK_SET) != 0) return 0;
    return bytes == 0 || fread(dst, 1, (size_t)bytes, f) == (size_t)bytes;
}}

int e2enc_model_load_weights(const char *path, e2enc_weights *out, char *err, size_t err_len) {{
    FILE *f;
    long size;
    unsigned char len8[8];
    unsigned long long hlen = 0;
    char *header;
    int k, same;
    if (out == NULL || path == NULL) {{
        e2enc_seterr(err, err_len, "e2enc_model_load_weights: NULL argument");
        return E2ENC_ERR_ARGUMENT;
    }}
    out->w = NULL;
    out->i = NULL;
    if (!e2enc_little_endian()) {{
        e2enc_seterr(err, err_len, "%s", e2enc_model_strerror(E2ENC_ERR_PLATFORM));
        return E2ENC_ERR_PLATFORM;
    }}
    if (e2enc_missing_cpu_feature() != NULL) {{
        e2enc_seterr(err, err_len,
                     "this CPU lacks %s, which the kernels of this model (target %s{precision}) "
                     "need; recompile the bundle for this host (e2enc compile --target native)",
                     e2enc_missing_cpu_feature(), E2ENC_MODEL_TARGET);
        return E2ENC_ERR_PLATFORM;
    }}
    f = fopen(path, "rb");
    if (f == NULL) {{
        e2enc_seterr(err, err_len, "cannot open weights file %s: %s", path, strerror(errno));
        return E2ENC_ERR_OPEN;
    }}
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0) {{
        e2enc_seterr(err, err_len, "cannot read weights file %s: it is not seekable", path);
        fclose(f);
        return E2ENC_ERR_READ;
    }}
    if ((unsigned long long)size != E2ENC_WEIGHTS_FILE_BYTES) {{
        e2enc_seterr(err, err_len,
                     "weights file %s has %ld bytes, this bundle's weights.safetensors has %llu "
                     "(truncated, or the weights of another bundle)",
                     path, size, E2ENC_WEIGHTS_FILE_BYTES);
        fclose(f);
        return E2ENC_ERR_FORMAT;
    }}
    if (!e2enc_read_at(f, 0, len8, 8)) {{
        e2enc_seterr(err, err_len, "cannot read weights file %s", path);
        fclose(f);
        return E2ENC_ERR_READ;
    }}
    for (k = 7; k >= 0; k--) hlen = (hlen << 8) | len8[k];
    if (hlen != E2ENC_WEIGHTS_HEADER_LEN) {{
        e2enc_seterr(err, err_len,
                     "weights file %s: header length %llu, expected %llu (not this bundle's "
                     "weights.safetensors)",
                     path, hlen, E2ENC_WEIGHTS_HEADER_LEN);
        fclose(f);
        return E2ENC_ERR_FORMAT;
    }}
    header = (char *)malloc((size_t)E2ENC_WEIGHTS_HEADER_LEN + 1);
    if (header == NULL) {{
        e2enc_seterr(err, err_len, "%s", e2enc_model_strerror(E2ENC_ERR_MEMORY));
        fclose(f);
        return E2ENC_ERR_MEMORY;
    }}
    if (!e2enc_read_at(f, 8, header, E2ENC_WEIGHTS_HEADER_LEN)) {{
        e2enc_seterr(err, err_len, "cannot read weights file %s", path);
        free(header);
        fclose(f);
        return E2ENC_ERR_READ;
    }}
    same = memcmp(header, e2enc_weights_header, (size_t)E2ENC_WEIGHTS_HEADER_LEN) == 0;
    free(header);
    if (!same) {{
        e2enc_seterr(err, err_len,
                     "weights file %s: its header differs from this bundle's (not this bundle's "
                     "weights.safetensors)",
                     path);
        fclose(f);
        return E2ENC_ERR_FORMAT;
    }}
    out->w = (float *)e2enc_alloc64(E2ENC_W_BYTES);
    out->i = (int32_t *)e2enc_alloc64(E2ENC_I_BYTES);
    if (out->w == NULL || out->i == NULL) {{
        e2enc_model_free_weights(out);
        e2enc_seterr(err, err_len, "%s", e2enc_model_strerror(E2ENC_ERR_MEMORY));
        fclose(f);
        return E2ENC_ERR_MEMORY;
    }}
    if (!e2enc_read_at(f, E2ENC_W_OFFSET, out->w, E2ENC_W_BYTES) ||
        !e2enc_read_at(f, E2ENC_I_OFFSET, out->i, E2ENC_I_BYTES)) {{
        e2enc_model_free_weights(out);
        e2enc_seterr(err, err_len, "cannot read weights file %s", path);
        fclose(f);
        return E2ENC_ERR_READ;
    }}
    fclose(f);
    return E2ENC_OK;
}}

size_t e2enc_model_workspace_bytes(void) {{ return E2ENC_MODEL_WORKSPACE_BYTES; }}

float *e2enc_model_workspace_alloc(void) {{
    return (float *)e2enc_alloc64(E2ENC_MODEL_WORKSPACE_BYTES);
}}

void e2enc_model_workspace_free(float *workspace) {{ free(workspace); }}

/* A padded view (layout.rs `View`): element (n, c, z, y, x) of a dense [n, c, d, h, w] tensor
 * lives at off + n*ns + c*cs + z*ds + (y + 1)*row + E2ENC_PAD_LEFT + x. */
typedef struct {{
    int64_t off, n, c, d, h, w, ns, cs, ds, row;
}} e2enc_view;

/* Copies dense `src` into the view; the arena was zero-filled, so the padding is zero. */
static void e2enc_write_view(float *A, const e2enc_view *v, const float *src) {{
    int64_t n, c, z, y;
    for (n = 0; n < v->n; n++)
        for (c = 0; c < v->c; c++)
            for (z = 0; z < v->d; z++)
                for (y = 0; y < v->h; y++) {{
                    float *dst = A + v->off + n * v->ns + c * v->cs + z * v->ds + (y + 1) * v->row +
                                 E2ENC_PAD_LEFT;
                    memcpy(dst, src, (size_t)v->w * sizeof(float));
                    src += v->w;
                }}
}}

/* Copies the view out into dense `dst`. */
static void e2enc_read_view(const float *A, const e2enc_view *v, float *dst) {{
    int64_t n, c, z, y;
    for (n = 0; n < v->n; n++)
        for (c = 0; c < v->c; c++)
            for (z = 0; z < v->d; z++)
                for (y = 0; y < v->h; y++) {{
                    const float *src = A + v->off + n * v->ns + c * v->cs + z * v->ds +
                                       (y + 1) * v->row + E2ENC_PAD_LEFT;
                    memcpy(dst, src, (size_t)v->w * sizeof(float));
                    dst += v->w;
                }}
}}

"#,
            file_bytes = l.file_bytes,
            header_len = l.header.len(),
            w_off = l.w.0,
            w_len = l.w.1,
            i_off = l.i.0,
            i_len = l.i.1,
            header = c_string(&l.header),
            pad_left = PAD_LEFT,
            cpu_checks = self.cpu_checks(),
            precision = m
                .precision
                .as_deref()
                .map(|p| format!(", --precision {p}"))
                .unwrap_or_default(),
        );
        let view = |p: &Port| {
            let v = &p.view;
            let [n, ch, d, h, w] = v.shape;
            format!(
                "{{{}, {n}, {ch}, {d}, {h}, {w}, {}, {}, {}, {}}}",
                v.offset, v.n_stride, v.c_stride, v.d_stride, v.row
            )
        };
        let _ = writeln!(
            c,
            "static const e2enc_view e2enc_input_view = {};",
            view(self.input)
        );
        let _ = writeln!(
            c,
            "static const e2enc_view e2enc_output_views[{}] = {{",
            m.outputs.len()
        );
        for p in &m.outputs {
            let _ = writeln!(c, "    {}, /* {} */", view(p), p.name);
        }
        c.push_str("};\n");
        let shapes = |ps: &[Port]| {
            ps.iter()
                .map(|p| {
                    let mut s = p.shape.clone();
                    s.resize(5, 0);
                    format!(
                        "{{{}}}",
                        s.iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let names = |ps: &[Port]| {
            ps.iter()
                .map(|p| c_string(p.name.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ranks = |ps: &[Port]| {
            ps.iter()
                .map(|p| p.shape.len().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ins = std::slice::from_ref(self.input);
        let _ = write!(
            c,
            r#"static const int64_t e2enc_input_shape[5] = {in_shape};
static const int e2enc_input_rank = {in_rank};
static const char *const e2enc_input_name = {in_name};
static const int64_t e2enc_output_shapes[{n}][5] = {{{out_shapes}}};
static const int e2enc_output_ranks[{n}] = {{{out_ranks}}};
static const char *const e2enc_output_names[{n}] = {{{out_names}}};

int e2enc_model_shape(int output, int index, int64_t shape[5], const char **name) {{
    const int64_t *s;
    int k, rank;
    if (output == 0 && index == 0) {{
        s = e2enc_input_shape;
        rank = e2enc_input_rank;
        if (name != NULL) *name = e2enc_input_name;
    }} else if (output == 1 && index >= 0 && index < E2ENC_MODEL_NUM_OUTPUTS) {{
        s = e2enc_output_shapes[index];
        rank = e2enc_output_ranks[index];
        if (name != NULL) *name = e2enc_output_names[index];
    }} else {{
        return -1;
    }}
    if (shape != NULL)
        for (k = 0; k < 5; k++) shape[k] = s[k];
    return rank;
}}

int e2enc_model_run_outputs(const e2enc_weights *wts, float *workspace, const float *input,
                            float *const *outputs) {{
    float *A = workspace;
    const float *W;
    const int32_t *I;
    int k;
    if (wts == NULL || wts->w == NULL || wts->i == NULL || workspace == NULL || input == NULL ||
        outputs == NULL || ((uintptr_t)workspace % E2ENC_MODEL_WORKSPACE_ALIGN) != 0)
        return E2ENC_ERR_ARGUMENT;
    W = wts->w;
    I = wts->i;
    memset(A, 0, E2ENC_MODEL_WORKSPACE_BYTES);
    e2enc_write_view(A, &e2enc_input_view, input);
"#,
            in_shape = shapes(ins),
            in_rank = ranks(ins),
            in_name = names(ins),
            n = m.outputs.len(),
            out_shapes = shapes(&m.outputs),
            out_ranks = ranks(&m.outputs),
            out_names = names(&m.outputs),
        );
        for s in &m.steps {
            let _ = writeln!(
                c,
                "    {}(A, W, I, {}, {}); /* {} */",
                s.kernel,
                s.first_tile,
                s.first_tile + s.tiles,
                s.what.replace("*/", "* /").replace('\n', " ")
            );
        }
        c.push_str(
            r#"    for (k = 0; k < E2ENC_MODEL_NUM_OUTPUTS; k++)
        if (outputs[k] != NULL) e2enc_read_view(A, &e2enc_output_views[k], outputs[k]);
    return E2ENC_OK;
}

int e2enc_model_run(const e2enc_weights *w, float *workspace, const float *input, float *logits) {
    float *outputs[E2ENC_MODEL_NUM_OUTPUTS] = {0};
    if (logits == NULL) return E2ENC_ERR_ARGUMENT;
    outputs[E2ENC_MODEL_LOGITS_INDEX] = logits;
    return e2enc_model_run_outputs(w, workspace, input, outputs);
}
"#,
        );
        c
    }

    fn main_c(&self) -> String {
        format!(
            r#"/* main.c: run the standalone model on one patch (generated by e2enc; do not edit).
 *
 *   ./model [WEIGHTS] input.bin logits.bin
 *
 * WEIGHTS defaults to ../weights.safetensors, the bundle's weights file as seen from this folder
 * (run the program from standalone/, or name the file). input.bin holds the input, raw
 * little-endian float32 NCDHW of shape [{in_shape}] (exactly {in_bytes} bytes); logits.bin
 * receives the logits the same way, shape [{lg_shape}] ({lg_bytes} bytes). Errors go to stderr
 * with exit status 1 (2 for a wrong command line).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static int read_input(const char *path, float *dst) {{
    const unsigned long long want = (unsigned long long)E2ENC_MODEL_INPUT_ELEMS * sizeof(float);
    long size;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {{
        fprintf(stderr, "error: cannot open input %s: %s\n", path, strerror(errno));
        return 0;
    }}
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {{
        fprintf(stderr, "error: cannot read input %s: it is not seekable\n", path);
        fclose(f);
        return 0;
    }}
    if ((unsigned long long)size != want) {{
        fprintf(stderr,
                "error: input %s has %ld bytes; this model takes exactly %llu "
                "(float32 NCDHW of shape [{in_shape}])\n",
                path, size, want);
        fclose(f);
        return 0;
    }}
    if (fread(dst, sizeof(float), E2ENC_MODEL_INPUT_ELEMS, f) != E2ENC_MODEL_INPUT_ELEMS) {{
        fprintf(stderr, "error: cannot read input %s\n", path);
        fclose(f);
        return 0;
    }}
    fclose(f);
    return 1;
}}

static int write_output(const char *path, const float *src) {{
    FILE *f = fopen(path, "wb");
    int ok;
    if (f == NULL) {{
        fprintf(stderr, "error: cannot create %s: %s\n", path, strerror(errno));
        return 0;
    }}
    ok = fwrite(src, sizeof(float), E2ENC_MODEL_LOGITS_ELEMS, f) == E2ENC_MODEL_LOGITS_ELEMS;
    ok = (fclose(f) == 0) && ok;
    if (!ok) fprintf(stderr, "error: cannot write %s\n", path);
    return ok;
}}

int main(int argc, char **argv) {{
    const char *weights_path = "../weights.safetensors";
    const char *in_path, *out_path;
    e2enc_weights wts;
    char err[1024];
    float *input = NULL, *logits = NULL, *ws = NULL;
    int rc, status = 1;
    if (argc == 3) {{
        in_path = argv[1];
        out_path = argv[2];
    }} else if (argc == 4) {{
        weights_path = argv[1];
        in_path = argv[2];
        out_path = argv[3];
    }} else {{
        fprintf(stderr,
                "usage: %s [WEIGHTS] input.bin logits.bin\n"
                "  WEIGHTS     the bundle's weights.safetensors (default ../weights.safetensors)\n"
                "  input.bin   float32 NCDHW [{in_shape}], little-endian, {in_bytes} bytes\n"
                "  logits.bin  written: float32 NCDHW [{lg_shape}], {lg_bytes} bytes\n",
                argc > 0 ? argv[0] : "model");
        return 2;
    }}
    rc = e2enc_model_load_weights(weights_path, &wts, err, sizeof err);
    if (rc != E2ENC_OK) {{
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }}
    input = (float *)malloc(E2ENC_MODEL_INPUT_ELEMS * sizeof(float) + 1);
    logits = (float *)malloc(E2ENC_MODEL_LOGITS_ELEMS * sizeof(float) + 1);
    ws = e2enc_model_workspace_alloc();
    if (input == NULL || logits == NULL || ws == NULL) {{
        fprintf(stderr, "error: out of memory (workspace %zu bytes)\n",
                e2enc_model_workspace_bytes());
    }} else if (read_input(in_path, input)) {{
        rc = e2enc_model_run(&wts, ws, input, logits);
        if (rc != E2ENC_OK)
            fprintf(stderr, "error: run failed: %s\n", e2enc_model_strerror(rc));
        else if (write_output(out_path, logits))
            status = 0;
    }}
    e2enc_model_workspace_free(ws);
    free(input);
    free(logits);
    e2enc_model_free_weights(&wts);
    return status;
}}
"#,
            in_shape = shape_list(self.input),
            in_bytes = elems(self.input) * 4,
            lg_shape = shape_list(&self.m.outputs[self.logits]),
            lg_bytes = elems(&self.m.outputs[self.logits]) * 4,
        )
    }

    fn readme(&self) -> String {
        let t = self.target;
        let inp = self.input;
        let lg = &self.m.outputs[self.logits];
        let mut r = format!(
            r#"# Standalone C program of this bundle

Generated by `e2enc compile --standalone` for model `{name}`, target `{target}`. It needs only
a C11 compiler and the C standard library (no e2enc runtime, no threads, no OpenMP).

Build (in this folder):

```sh
{build}
```
"#,
            name = self.model_name(),
            target = t.name(),
            build = t.standalone_build_line(),
        );
        match t {
            Target::Aarch64Neon => r.push_str(
                "\nThat cross-compiles a static program for 64-bit Arm (Debian/Ubuntu package\n\
                 `gcc-aarch64-linux-gnu`; run it on an aarch64 host, or under `qemu-aarch64`\n\
                 from `qemu-user`). On an aarch64 host, `cc` without `-static` builds it natively.\n",
            ),
            Target::Portable => {
                let arm = Target::Portable
                    .standalone_build_line()
                    .replacen("cc ", "aarch64-linux-gnu-gcc -static ", 1);
                let _ = write!(
                    r,
                    "\nPortable C builds for any host; for 64-bit Arm from an x86 host:\n\n\
                     ```sh\n{arm}\n```\n"
                );
            }
            _ => {}
        }
        let _ = write!(
            r,
            r#"
Run:

```sh
./model input.bin logits.bin                 # weights from ../weights.safetensors
./model WEIGHTS input.bin logits.bin         # or name the bundle's weights file
```

`input.bin` is raw little-endian float32, dense NCDHW of shape [{in_shape}] (exactly {in_bytes}
bytes); `logits.bin` receives the logits the same way, shape [{lg_shape}]. Errors (a missing,
truncated or foreign weights file, an input of the wrong size) are reported on stderr with a
non-zero exit status.

The weights are not compiled into the program: it reads them from the bundle's
`weights.safetensors` ({file_bytes} bytes), checking the file's size and header before reading.

Files:

- `model.h`: the C API (workspace size, loading the weights, shapes, running one patch);
- `model.c`: the kernels (the same text as the bundle's `kernels.c`) and the driver that runs
  them in order over all their tiles, single-threaded ({steps} kernel calls);
- `main.c`: the command-line program above;
- `README.md`: this file.

The workspace (activation arena) is {ws_bytes} bytes, 64-byte aligned.
"#,
            in_shape = shape_x(inp),
            in_bytes = elems(inp) * 4,
            lg_shape = shape_x(lg),
            file_bytes = self.layout.file_bytes,
            steps = self.m.steps.len(),
            ws_bytes = self.m.arena_elems.max(1) * 4,
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_strings_escape_quotes_and_bytes() {
        assert_eq!(c_string(br#"{"W":1}"#), r#""{\"W\":1}""#);
        assert_eq!(c_string(b"a\\b\n?"), r#""a\\b\012\?""#);
    }

    #[test]
    fn weights_layout_of_a_codegen_file() {
        let mut w = e2enc_ir::Weights::new();
        w.insert(
            "W",
            e2enc_ir::Tensor::from_f32([3], vec![1.0, 2.0, 3.0]).unwrap(),
        );
        w.insert("I", e2enc_ir::Tensor::from_i32([2], vec![7, 9]).unwrap());
        let bytes = w.to_bytes(None).unwrap();
        let l = WeightsLayout::of(&bytes).unwrap();
        assert_eq!(l.file_bytes as usize, bytes.len());
        assert_eq!(l.w.1, 12);
        assert_eq!(l.i.1, 8);
        let at = |o: u64, k: usize| &bytes[o as usize + 4 * k..o as usize + 4 * k + 4];
        assert_eq!(at(l.w.0, 2), 3.0f32.to_le_bytes());
        assert_eq!(at(l.i.0, 1), 9i32.to_le_bytes());
        assert!(WeightsLayout::of(&bytes[..20]).is_err());
        assert!(WeightsLayout::of(b"1234").is_err());
    }
}
