//! Test harness for the C kernel emitters: single-node graphs are emitted, compiled with the
//! system C compiler into one shared object per batch, loaded with libloading, run on a private
//! arena and compared with the reference interpreter.
//!
//! Each case's arena holds its input views (`View::padded`, zero padding), its output buffer
//! (optionally a channel slice of a wider buffer, the other channels holding a sentinel), its
//! scratch, and sentinel guard gaps between them. Output and scratch start as NaN garbage, so a
//! kernel that reads before writing, or forgets padding, shows. Every case runs twice: all tiles
//! in order, then split into uneven chunks run in reverse order; the outputs must be identical.
//!
//! [`check_batch`] checks every batch for each ISA: AVX2 always, AVX-512 when the host has it;
//! otherwise it says so once on stderr (uncaptured), and fails instead when
//! `E2ENC_REQUIRE_AVX512` is set.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use e2enc_codegen::c;
use e2enc_codegen::emit::{Consts, Kernel, NodeCtx};
use e2enc_codegen::layout::View;
use e2enc_codegen::precision::Precision;
use e2enc_codegen::target::Target;
use e2enc_ir::{DType, Graph, Op, Tensor, TensorType, Weights};

pub const SENTINEL: f32 = 3.25e7;

/// One single-node test case: activations first, then constants, in operand order.
#[derive(Clone, Debug)]
pub struct Case {
    pub op: Op,
    pub acts: Vec<Tensor>,
    pub consts: Vec<Tensor>,
    /// Place the output as channels `[c0, c0 + C)` of a buffer with `extra` more channels.
    pub out_slice: Option<(usize, usize)>,
    /// Place input 0 the same way (the other channels hold NaN garbage the kernel must not use).
    pub in_slice: Option<(usize, usize)>,
    /// int8: the calibrated range of each input channel (`NodeCtx::act_ranges`).
    pub ranges: Option<Vec<[f32; 2]>>,
}

impl Case {
    pub fn new(op: Op, acts: Vec<Tensor>, consts: Vec<Tensor>) -> Case {
        Case {
            op,
            acts,
            consts,
            out_slice: None,
            in_slice: None,
            ranges: None,
        }
    }
}

/// One 64-byte line of an [`Arena`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A 64-byte aligned f32 buffer (as the runtime's arena).
pub struct Arena {
    buf: Vec<Line>,
    len: usize,
}

impl Arena {
    pub fn new(len: usize, fill: f32) -> Arena {
        Arena {
            buf: vec![Line([fill; 16]); len.div_ceil(16)],
            len,
        }
    }
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is 16 f32s without padding; `len` is within the lines.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const f32, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut f32, self.len) }
    }
    pub fn ptr(&mut self) -> *mut f32 {
        self.buf.as_mut_ptr() as *mut f32
    }
}

/// A case laid out in an arena, with its kernels emitted.
pub struct Prepared {
    pub case: Case,
    pub inputs: Vec<View>,
    /// The whole buffers of the inputs (wider than the views for slices).
    pub in_bufs: Vec<View>,
    pub output: View,
    /// The whole output buffer (wider than `output` for slices).
    pub out_buf: View,
    pub scratch: (usize, usize),
    pub arena_len: usize,
    pub kernels: Vec<Kernel>,
    pub want: Tensor,
    pub out_ty: TensorType,
}

/// The rows of `t` (laid out as view `v`) with the view index of each row's first value.
fn value_rows<'a>(v: &'a View, t: &'a Tensor) -> impl Iterator<Item = (usize, &'a [f32])> + 'a {
    let [n, c, d, h, w] = v.shape;
    let data = t.as_f32().unwrap();
    (0..n * c * d * h).map(move |i| {
        let (y, z, cc, nn) = (i % h, i / h % d, i / (h * d) % c, i / (h * d * c));
        (v.at(nn, cc, z, y as isize, 0), &data[i * w..(i + 1) * w])
    })
}

fn align16(x: usize) -> usize {
    x.div_ceil(16) * 16
}

fn dims5(t: &[usize]) -> [usize; 5] {
    t.try_into().expect("rank-5 activation")
}

/// Runs the interpreter on the single-node graph of `case`.
pub fn reference(case: &Case) -> (Tensor, TensorType) {
    let mut g = Graph::new("case");
    let mut w = Weights::new();
    let mut inputs = BTreeMap::new();
    let mut ids = Vec::new();
    for (i, t) in case.acts.iter().enumerate() {
        let name = format!("x{i}");
        ids.push(g.input(&name, t.ty()));
        inputs.insert(name, t.clone());
    }
    for (i, t) in case.consts.iter().enumerate() {
        let name = format!("w{i}");
        ids.push(g.weight(&name, t.ty()));
        w.insert(name, t.clone());
    }
    let node = g
        .add(case.op.clone(), &ids, Some("node".into()))
        .expect("valid case");
    g.set_output("y", node);
    let ty = g.node(node).ty.clone();
    let mut out = e2enc_ir::interp::run(&g, &w, &inputs, &[]).expect("interpreter runs");
    (out.remove("y").expect("output"), ty)
}

/// Lays out `case` and emits its AVX2 kernels (names prefixed `prefix`).
pub fn prepare(case: &Case, prefix: &str, consts: &mut Consts) -> Prepared {
    prepare_for(case, prefix, consts, Target::X86Avx2)
}

/// Lays out `case` and emits its kernels for `isa` (names prefixed `prefix`).
pub fn prepare_for(case: &Case, prefix: &str, consts: &mut Consts, isa: Target) -> Prepared {
    prepare_in(case, prefix, consts, isa, Precision::F32)
}

/// [`prepare_for`] with the convolutions in `precision`.
pub fn prepare_in(
    case: &Case,
    prefix: &str,
    consts: &mut Consts,
    isa: Target,
    precision: Precision,
) -> Prepared {
    prepare_with(
        case,
        prefix,
        consts,
        isa,
        precision,
        precision.stores_bf16(isa),
    )
}

/// [`prepare_in`] for a bundle storing activations as bf16 where `narrow` (the views stay
/// f32 here: `narrow` picks the kernels, e.g. the int8 packing's layout).
pub fn prepare_with(
    case: &Case,
    prefix: &str,
    consts: &mut Consts,
    isa: Target,
    precision: Precision,
    narrow: bool,
) -> Prepared {
    let (want, out_ty) = reference(case);
    let mut at = 64;
    let mut inputs = Vec::new();
    let mut in_bufs = Vec::new();
    for (i, t) in case.acts.iter().enumerate() {
        let mut s = dims5(t.shape());
        let c = s[1];
        let slice = case.in_slice.filter(|_| i == 0);
        if let Some((_, extra)) = slice {
            s[1] += extra;
        }
        let b = View::padded(at, s);
        at = align16(b.end()) + 64;
        inputs.push(b.channels(slice.map_or(0, |x| x.0), c));
        in_bufs.push(b);
    }
    let out_shape: [usize; 5] = if matches!(case.op, Op::Argmax) {
        let s = &out_ty.shape;
        [s[0], 1, s[1], s[2], s[3]]
    } else {
        dims5(&out_ty.shape)
    };
    let (out_buf, output) = match case.out_slice {
        Some((c0, extra)) => {
            let mut s = out_shape;
            s[1] += extra;
            let b = View::padded(at, s);
            let o = b.channels(c0, out_shape[1]);
            (b, o)
        }
        None => {
            let b = View::padded(at, out_shape);
            (b.clone(), b)
        }
    };
    at = align16(out_buf.end()) + 64;
    let in_tys: Vec<TensorType> = case
        .acts
        .iter()
        .chain(&case.consts)
        .map(|t| t.ty())
        .collect();
    let scratch_n = c::scratch_elems(&case.op, &in_tys, &out_ty);
    let scratch = (at, scratch_n);
    at = align16(at + scratch_n) + 64;
    let const_refs: Vec<&Tensor> = case.consts.iter().collect();
    let ctx = NodeCtx {
        node: e2enc_ir::NodeId(Default::default()),
        prefix: prefix.to_string(),
        op: &case.op,
        label: prefix.to_string(),
        inputs: inputs.clone(),
        consts: const_refs,
        output: output.clone(),
        scratch: scratch.0,
        channel_map: None,
        isa,
        lag: None,
        ring: None,
        stream: None,
        ring_in: None,
        act_ranges: case.ranges.clone(),
        shift_at: None,
    };
    let kernels = c::emit_with(&ctx, consts, precision, narrow)
        .unwrap_or_else(|e| panic!("emit {prefix}: {e}"));
    Prepared {
        case: case.clone(),
        inputs,
        in_bufs,
        output,
        out_buf,
        scratch,
        arena_len: at,
        kernels,
        want,
        out_ty,
    }
}

impl Prepared {
    /// A fresh arena: inputs placed, output/scratch NaN, everything else the sentinel.
    pub fn arena(&self) -> Arena {
        let mut a = Arena::new(self.arena_len, SENTINEL);
        let s = a.as_mut_slice();
        for ((v, b), t) in self.inputs.iter().zip(&self.in_bufs).zip(&self.case.acts) {
            s[b.offset..b.end()].fill(f32::NAN);
            for nn in 0..v.shape[0] {
                let st = v.offset + nn * v.n_stride;
                s[st..st + v.shape[1] * v.c_stride].fill(0.0);
            }
            for (r, vals) in value_rows(v, t) {
                s[r..r + vals.len()].copy_from_slice(vals);
            }
        }
        s[self.output.offset..self.output.end()].fill(f32::NAN);
        if let Some((c0, _)) = self.case.out_slice {
            // Only the sliced channels may be written: keep the others at the sentinel.
            let b = &self.out_buf;
            for n in 0..b.shape[0] {
                for c in 0..b.shape[1] {
                    let inside = c >= c0 && c < c0 + self.output.shape[1];
                    let start = b.offset + n * b.n_stride + c * b.c_stride;
                    let fill = if inside { f32::NAN } else { SENTINEL };
                    s[start..start + b.c_stride].fill(fill);
                }
            }
        }
        s[self.scratch.0..self.scratch.0 + self.scratch.1].fill(f32::NAN);
        a
    }

    /// Checks padding, untouched memory and the values; returns the output values (bits).
    pub fn check(&self, a: &Arena, what: &str) -> Result<Vec<u32>, String> {
        let s = a.as_slice();
        let o = &self.output;
        let [n, c, d, h, w] = o.shape;
        let mut vals = Vec::with_capacity(n * c * d * h * w);
        for nn in 0..n {
            for cc in 0..c {
                for z in 0..d {
                    let start = o.at(nn, cc, z, -1, -8);
                    for (i, v) in s[start..start + o.d_stride].iter().enumerate() {
                        let (row, col) = (i / o.row, i % o.row);
                        let interior = row >= 1 && row <= h && col >= 8 && col < 8 + w;
                        if interior {
                            vals.push(v.to_bits());
                        } else if v.to_bits() != 0 && *v != 0.0 {
                            return Err(format!(
                                "{what}: padding of plane ({nn},{cc},{z}) at row {} col {} is {v}",
                                row as isize - 1,
                                col as isize - 8
                            ));
                        }
                    }
                }
            }
        }
        // Nothing outside the output planes and the scratch changed.
        let mut owned = vec![false; s.len()];
        for nn in 0..n {
            for cc in 0..c {
                let st = o.offset + nn * o.n_stride + cc * o.c_stride;
                owned[st..st + o.c_stride]
                    .iter_mut()
                    .for_each(|x| *x = true);
            }
        }
        owned[self.scratch.0..self.scratch.0 + self.scratch.1]
            .iter_mut()
            .for_each(|x| *x = true);
        for v in &self.in_bufs {
            owned[v.offset..v.end()].iter_mut().for_each(|x| *x = true);
        }
        for (i, v) in s.iter().enumerate() {
            if !owned[i] && v.to_bits() != SENTINEL.to_bits() {
                return Err(format!(
                    "{what}: wrote outside its output at arena index {i}"
                ));
            }
        }
        // Inputs unchanged (no kernel writes its inputs).
        let fresh = self.arena();
        for v in &self.in_bufs {
            let (a, b) = (&s[v.offset..v.end()], &fresh.as_slice()[v.offset..v.end()]);
            if a.iter().zip(b).any(|(x, y)| x.to_bits() != y.to_bits()) {
                return Err(format!("{what}: an input view changed"));
            }
        }
        let got = if self.out_ty.dtype == DType::I32 {
            Tensor::from_i32(
                self.out_ty.shape.clone(),
                vals.iter().map(|&b| b as i32).collect(),
            )
        } else {
            Tensor::from_f32(
                self.out_ty.shape.clone(),
                vals.iter().map(|&b| f32::from_bits(b)).collect(),
            )
        }
        .unwrap();
        let err = e2enc_ir::tensor::relative_error(&got, &self.want).unwrap();
        if err.is_nan() || err >= 1e-4 {
            return Err(format!(
                "{what}: relative error {err:e} against the interpreter"
            ));
        }
        Ok(vals)
    }
}

/// A compiled batch of kernels.
pub struct Lib {
    pub lib: libloading::Library,
    _dir: tempfile::TempDir,
}

pub type KernelFn = unsafe extern "C" fn(*mut f32, *const f32, *const i32, i64, i64);

/// Writes the AVX2 prelude and `kernels` to a C file and compiles it into a shared object.
pub fn compile(kernels: &[&Kernel], flags: &[&str]) -> Result<Lib, String> {
    compile_for(kernels, flags, Target::X86Avx2)
}

/// [`compile`] with the prelude of `isa`.
pub fn compile_for(kernels: &[&Kernel], flags: &[&str], isa: Target) -> Result<Lib, String> {
    compile_in(kernels, flags, isa, Precision::F32)
}

/// [`compile_for`] with the prelude of `isa` in `precision`.
pub fn compile_in(
    kernels: &[&Kernel],
    flags: &[&str],
    isa: Target,
    precision: Precision,
) -> Result<Lib, String> {
    compile_with(kernels, flags, isa, precision, precision.stores_bf16(isa))
}

/// [`compile_in`] with the prelude of a bundle storing activations as bf16 where `narrow`.
pub fn compile_with(
    kernels: &[&Kernel],
    flags: &[&str],
    isa: Target,
    precision: Precision,
    narrow: bool,
) -> Result<Lib, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut src = c::prelude_with(isa, precision, narrow);
    for k in kernels {
        src.push_str(&k.source);
        src.push('\n');
    }
    let cpath = dir.path().join("k.c");
    std::fs::write(&cpath, &src).map_err(|e| e.to_string())?;
    if let Ok(keep) = std::env::var("E2ENC_KEEP_C") {
        let _ = std::fs::write(Path::new(&keep), &src);
    }
    // `E2ENC_KEEP_SO`: build the library there instead (it outlives the run, so `perf report`
    // can name the kernels' functions).
    let so = std::env::var_os("E2ENC_KEEP_SO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("k.so"));
    let out = Command::new("cc")
        .args(flags)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&cpath)
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cc failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let lib = unsafe { e2enc_runtime::cc::load_library(&so) }.map_err(|e| e.to_string())?;
    Ok(Lib { lib, _dir: dir })
}

impl Lib {
    pub fn get(&self, name: &str) -> KernelFn {
        unsafe {
            *self
                .lib
                .get::<KernelFn>(name.as_bytes())
                .expect("kernel symbol")
        }
    }
}

/// Runs the kernels of `p` on `a`, each over its tiles split at the given fractions (in
/// reverse chunk order when `reverse`).
pub fn run(lib: &Lib, p: &Prepared, a: &mut Arena, consts: &Consts, cuts: &[f64], reverse: bool) {
    run_kernels(lib, &p.kernels, a, consts, cuts, reverse);
}

/// Runs `kernels` on `a` as [`run`] does.
fn run_kernels(
    lib: &Lib,
    kernels: &[Kernel],
    a: &mut Arena,
    consts: &Consts,
    cuts: &[f64],
    reverse: bool,
) {
    for k in kernels {
        let f = lib.get(&k.name);
        let t = k.tiles as i64;
        let mut bounds: Vec<i64> = cuts.iter().map(|c| (c * t as f64) as i64).collect();
        bounds.push(0);
        bounds.push(t);
        bounds.sort();
        bounds.dedup();
        let mut chunks: Vec<(i64, i64)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        if reverse {
            chunks.reverse();
        }
        for (t0, t1) in chunks {
            unsafe { f(a.ptr(), consts.f32.as_ptr(), consts.i32.as_ptr(), t0, t1) };
        }
    }
}

/// The targets this host can run kernels of: portable C, AVX2, and AVX-512 when present.
/// Without AVX-512 it says so (once, on the uncaptured stderr, so `cargo test` shows it), or
/// panics when `E2ENC_REQUIRE_AVX512` is set.
pub fn test_isas() -> Vec<Target> {
    static NOTE: std::sync::Once = std::sync::Once::new();
    if Target::X86Avx512.host_supports() {
        return vec![Target::X86Avx2, Target::X86Avx512, Target::Portable];
    }
    if std::env::var_os("E2ENC_REQUIRE_AVX512").is_some() {
        panic!("E2ENC_REQUIRE_AVX512 is set but this host lacks avx512f");
    }
    NOTE.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: this host lacks avx512f: the AVX-512 kernels are compiled but NOT run; \
             only the AVX2 kernels are checked against the interpreter"
        );
    });
    vec![Target::X86Avx2, Target::Portable]
}

/// Emits, compiles and checks a batch of cases for every ISA of [`test_isas`].
pub fn check_batch(cases: &[Case]) -> Result<(), String> {
    for isa in test_isas() {
        check_batch_for(cases, isa)?;
    }
    Ok(())
}

/// Emits, compiles (with the ISA's `-m` flags) and checks a batch of cases for `isa`.
pub fn check_batch_for(cases: &[Case], isa: Target) -> Result<(), String> {
    check_batch_in(cases, isa, Precision::F32)
}

/// [`check_batch_for`] with the convolutions in `precision` (the interpreter stays f32: cases
/// of other precisions choose inputs their arithmetic computes exactly to f32 rounding).
pub fn check_batch_in(cases: &[Case], isa: Target, precision: Precision) -> Result<(), String> {
    check_batch_with(cases, isa, precision, precision.stores_bf16(isa))
}

/// [`check_batch_in`] with the kernels (f32 views) of a bundle storing bf16 where `narrow`.
pub fn check_batch_with(
    cases: &[Case],
    isa: Target,
    precision: Precision,
    narrow: bool,
) -> Result<(), String> {
    let mut consts = Consts::default();
    let prepared: Vec<Prepared> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| prepare_with(c, &format!("c{i}"), &mut consts, isa, precision, narrow))
        .collect();
    let ks: Vec<&Kernel> = prepared.iter().flat_map(|p| &p.kernels).collect();
    let lib = compile_with(&ks, &isa.cflags(), isa, precision, narrow)?;
    for (i, p) in prepared.iter().enumerate() {
        let what = format!("[{isa}] case {i} ({:?})", p.case.op);
        let mut a = p.arena();
        run(&lib, p, &mut a, &consts, &[], false);
        let first = p.check(&a, &what)?;
        let mut b = p.arena();
        run(&lib, p, &mut b, &consts, &[0.13, 0.5, 0.61, 0.9], true);
        let second = p.check(&b, &format!("{what}, split tiles"))?;
        if first != second {
            return Err(format!("{what}: results depend on the tile split"));
        }
    }
    Ok(())
}

/// Deterministic pseudo-random f32 values in [-1, 1).
pub fn noise(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), v).unwrap()
}

/// bf16 activation storage (`--precision bf16` on x86-avx512, `layout::Elem::Bf16`): each case
/// runs with every activation input and its output as bf16 views (inputs must hold bf16 values,
/// so the kernels see what the interpreter sees), a normalized conv with its per-tile shifts
/// in scratch. Checks the values against the interpreter within `tol` (the output's own
/// rounding and the shifted raw values' are the only differences), zero padding, nothing
/// written outside the output and scratch (in 16-bit units), and results independent of the
/// tile split.
pub fn check_narrow(cases: &[Case], tol: f64) -> Result<(), String> {
    check_narrow_in(cases, tol, Precision::Bf16).map(|_| ())
}

/// [`check_narrow`] for the kernels of a bundle in `precision` (bf16, or int8 with cases'
/// calibrated ranges) that stores activations as bf16; returns what the kernels of each case
/// are (`Kernel::what`).
pub fn check_narrow_in(
    cases: &[Case],
    tol: f64,
    precision: Precision,
) -> Result<Vec<Vec<String>>, String> {
    const FILL: u32 = 0x7fc1_7fc1; // a bf16 NaN in both halves (and an f32 NaN)
    let isa = Target::X86Avx512;
    let mut consts = Consts::default();
    struct Laid {
        inputs: Vec<View>,
        output: View,
        scratch: (usize, usize),
        len: usize,
        kernels: Vec<Kernel>,
        want: Tensor,
        out_ty: TensorType,
    }
    let mut laid = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (want, out_ty) = reference(case);
        let mut at = 64;
        let mut inputs = Vec::new();
        for t in &case.acts {
            let v = View::padded_bf16(at, dims5(t.shape()));
            at = align16(v.end().div_ceil(2)) + 64;
            inputs.push(v);
        }
        let output = View::padded_bf16(at, dims5(&out_ty.shape));
        at = align16(output.end().div_ceil(2)) + 64;
        let in_tys: Vec<TensorType> = case
            .acts
            .iter()
            .chain(&case.consts)
            .map(|t| t.ty())
            .collect();
        let own = align16(c::scratch_elems(&case.op, &in_tys, &out_ty));
        let shifts = c::narrow_scratch(&case.op, &in_tys[0], &out_ty);
        let scratch = (at, own + shifts);
        let ctx = NodeCtx {
            node: e2enc_ir::NodeId(Default::default()),
            prefix: format!("n{i}"),
            op: &case.op,
            label: format!("n{i}"),
            inputs: inputs.clone(),
            consts: case.consts.iter().collect(),
            output: output.clone(),
            scratch: at,
            channel_map: None,
            isa,
            lag: None,
            ring: None,
            stream: None,
            ring_in: None,
            act_ranges: case.ranges.clone(),
            shift_at: (shifts > 0).then_some(at + own),
        };
        let kernels = c::emit_with(&ctx, &mut consts, precision, true)
            .map_err(|e| format!("case {i}: {e}"))?;
        at = align16(at + own + shifts) + 64;
        laid.push(Laid {
            inputs,
            output,
            scratch,
            len: at,
            kernels,
            want,
            out_ty,
        });
    }
    let ks: Vec<&Kernel> = laid.iter().flat_map(|l| &l.kernels).collect();
    let lib = compile_in(&ks, &isa.cflags(), isa, precision)?;
    let halves = |a: &mut Arena| -> &mut [u16] {
        let n = a.len * 2;
        // SAFETY: the arena's lines hold `len` f32s, i.e. `2 len` u16s.
        unsafe { std::slice::from_raw_parts_mut(a.ptr() as *mut u16, n) }
    };
    for (i, (l, case)) in laid.iter().zip(cases).enumerate() {
        let what = format!("[{precision} bf16 storage] case {i} ({:?})", case.op);
        let fresh = || {
            let mut a = Arena::new(l.len, f32::from_bits(FILL));
            let h = halves(&mut a);
            for (v, t) in l.inputs.iter().zip(&case.acts) {
                h[v.offset..v.end()].fill(0);
                for (r, vals) in value_rows(v, t) {
                    for (x, f) in vals.iter().enumerate() {
                        h[r + x] = (f.to_bits() >> 16) as u16;
                    }
                }
            }
            a
        };
        let mut outs = Vec::new();
        for (cuts, reverse) in [(&[][..], false), (&[0.13, 0.5, 0.61, 0.9][..], true)] {
            let mut a = fresh();
            let before: Vec<u16> = halves(&mut a).to_vec();
            run_kernels(&lib, &l.kernels, &mut a, &consts, cuts, reverse);
            let h = halves(&mut a);
            let o = &l.output;
            let [n, c, d, hh, w] = o.shape;
            let mut vals = Vec::new();
            for nn in 0..n {
                for cc in 0..c {
                    for z in 0..d {
                        let start = o.at(nn, cc, z, -1, -8);
                        for (k, &u) in h[start..start + o.d_stride].iter().enumerate() {
                            let (row, col) = (k / o.row, k % o.row);
                            if row >= 1 && row <= hh && col >= 8 && col < 8 + w {
                                vals.push(u);
                            } else if u & 0x7fff != 0 {
                                return Err(format!(
                                    "{what}: padding of plane ({nn},{cc},{z}) at row {} col {} is {u:#06x}",
                                    row as isize - 1,
                                    col as isize - 8
                                ));
                            }
                        }
                    }
                }
            }
            let (s0, s1) = (l.scratch.0 * 2, (l.scratch.0 + l.scratch.1) * 2);
            for (k, (&x, &y)) in h.iter().zip(&before).enumerate() {
                let mine = (o.offset..o.end()).contains(&k) || (s0..s1).contains(&k);
                if !mine && x != y {
                    return Err(format!(
                        "{what}: wrote outside its output at 16-bit index {k}"
                    ));
                }
            }
            outs.push(vals);
        }
        if outs[0] != outs[1] {
            return Err(format!("{what}: results depend on the tile split"));
        }
        let got = Tensor::from_f32(
            l.out_ty.shape.clone(),
            outs[0]
                .iter()
                .map(|&u| f32::from_bits(u32::from(u) << 16))
                .collect(),
        )
        .unwrap();
        let err = e2enc_ir::tensor::relative_error(&got, &l.want).unwrap();
        if err.is_nan() || err >= tol {
            return Err(format!(
                "{what}: relative error {err:e} against the interpreter (tolerance {tol:e})"
            ));
        }
        eprintln!("{what}: relative error {err:.2e}");
    }
    Ok(laid
        .iter()
        .map(|l| l.kernels.iter().map(|k| k.what.clone()).collect())
        .collect())
}
