//! Host emulation of a CUDA bundle: its `kernels.cu`, unchanged, compiled as C++ against a shim
//! (`emulate_shim.hpp`: CUDA's thread indices, `__syncthreads` as phases of fibers, warp
//! shuffles as lane rendezvous, `__shared__` per block) with one wrapper per kernel that has
//! the CPU kernel ABI over a range of thread blocks. The CPU thread pool then runs the blocks of
//! each launch as it runs the tiles of a C kernel, so a CUDA bundle runs on any host
//! (`e2enc run B --emulate`), slowly, and its results can be compared with the interpreter's
//! on machines without a GPU.
//!
//! Threads of a block run in a seeded random order, reshuffled every phase between barriers:
//! a kernel that depends on an order CUDA does not promise (a missing `__syncthreads`) gives
//! results that change with the seed ([`set_seed`]). The emulation says nothing about speed,
//! memory coalescing or resource limits (NVRTC's ptxas report checks those).
//!
//! The C++ compiler is this host's (`$CXX`, else `c++`), never one a manifest names.

use std::ffi::{c_char, CStr};
use std::path::Path;

use crate::format::Step;
use crate::pool::KernelFn;
use crate::RuntimeError;

/// The shim compiled in front of the kernels.
pub const SHIM: &str = include_str!("emulate_shim.hpp");

/// The C++ compiler: `$CXX`, or `c++`.
pub fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// Flags of the emulation library. No fast math, no contraction beyond the kernels' explicit
/// `fmaf`: the emulation should compute what the GPU computes up to rounding.
pub const FLAGS: [&str; 6] = [
    "-O2",
    "-std=c++17",
    "-fPIC",
    "-shared",
    "-fno-strict-aliasing",
    "-ffp-contract=off",
];

/// A CUDA bundle's kernels, compiled for this CPU.
pub struct Emulation {
    /// One function per step, with the CPU kernel ABI over thread blocks.
    pub kernels: Vec<KernelFn>,
    set_seed: unsafe extern "C" fn(u64),
    set_exact_mma: unsafe extern "C" fn(i32),
    error: unsafe extern "C" fn() -> *const c_char,
    clear: unsafe extern "C" fn(),
    _lib: libloading::Library,
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// The C++ text of the emulation of `kernels_cu` with launches `steps`.
pub fn source(kernels_cu: &str, steps: &[Step]) -> Result<String, String> {
    let mut s = String::with_capacity(SHIM.len() + kernels_cu.len() + steps.len() * 400);
    s.push_str(SHIM);
    s.push_str("\n#define E2ENC_EMULATE 1\n#line 1 \"kernels.cu\"\n");
    s.push_str(kernels_cu);
    s.push_str("\n/* Emulation wrappers: one per launch. */\n");
    for (k, st) in steps.iter().enumerate() {
        let l = st
            .launch
            .as_ref()
            .ok_or_else(|| format!("step {k} (`{}`) has no launch", st.kernel))?;
        if !is_ident(&st.kernel) {
            return Err(format!("kernel name `{}` is not an identifier", st.kernel));
        }
        if l.threads() == 0 || l.threads() > 1024 || l.blocks() == 0 {
            return Err(format!(
                "kernel `{}`: a launch of {:?} blocks of {:?} threads is not one CUDA can make",
                st.kernel, l.grid, l.block
            ));
        }
        if l.blocks() != st.tiles as u64 {
            return Err(format!(
                "kernel `{}`: {} tiles for {} blocks",
                st.kernel,
                st.tiles,
                l.blocks()
            ));
        }
        let name = &st.kernel;
        s.push_str(&format!(
            "static void e2emu_body_{k}(void *p) {{
    e2emu::Args *a = (e2emu::Args *)p;
    {name}(a->A, a->W, a->I);
}}
extern \"C\" void e2emu_k{k}(float *A, const float *W, const int32_t *I, int64_t b0, int64_t b1) {{
    static const e2emu::Launch L = {{{{{}, {}, {}}}, {{{}, {}, {}}}, {}}};
    e2emu::Args a = {{A, W, I}};
    e2emu::run(L, \"{name}\", {k}ULL, b0, b1, e2emu_body_{k}, &a);
}}
",
            l.grid[0],
            l.grid[1],
            l.grid[2],
            l.block[0],
            l.block[1],
            l.block[2],
            i32::from(l.sync)
        ));
    }
    Ok(s)
}

fn err(dir: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Bundle {
        path: dir.to_path_buf(),
        msg: msg.into(),
    }
}

impl Emulation {
    /// Compiles the emulation of `kernels_cu` with launches `steps` (`dir`: the bundle, for
    /// messages) and loads it.
    pub fn build(dir: &Path, kernels_cu: &str, steps: &[Step]) -> Result<Emulation, RuntimeError> {
        let text = source(kernels_cu, steps).map_err(|e| err(dir, format!("emulation: {e}")))?;
        let tmp = crate::cc::private_dir()
            .map_err(|e| err(dir, format!("cannot create a private folder: {e}")))?;
        let result = (|| {
            let cpp = tmp.path().join("emulate.cpp");
            let so = tmp.path().join("emulate.so");
            std::fs::write(&cpp, &text).map_err(|e| err(dir, e.to_string()))?;
            let cxx = compiler();
            let out = std::process::Command::new(&cxx)
                .args(FLAGS)
                .arg("-o")
                .arg(&so)
                .arg(&cpp)
                .arg("-lm")
                .output()
                .map_err(|e| {
                    err(
                        dir,
                        if e.kind() == std::io::ErrorKind::NotFound {
                            format!("the emulation needs a C++ compiler: `{cxx}` was not found (install g++, or set $CXX)")
                        } else {
                            format!("cannot run `{cxx}`: {e}")
                        },
                    )
                })?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let head: Vec<&str> = stderr.lines().take(40).collect();
                return Err(err(
                    dir,
                    format!(
                        "compiling the emulation of kernels.cu failed ({cxx} {}):\n{}",
                        FLAGS.join(" "),
                        head.join("\n")
                    ),
                ));
            }
            // SAFETY: a library compiled here from the verified kernels and our shim.
            let lib = unsafe { crate::cc::load_library(&so) }
                .map_err(|e| err(dir, format!("cannot load the emulation: {e}")))?;
            Ok(lib)
        })();
        drop(tmp);
        let lib = result?;
        let sym = |name: &str| -> Result<*const (), RuntimeError> {
            let n = format!("{name}\0");
            // SAFETY: symbols of the library just built; their types are the shim's.
            unsafe { lib.get::<*const ()>(n.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| err(dir, format!("the emulation lacks `{name}`")))
        };
        let mut kernels = Vec::with_capacity(steps.len());
        for k in 0..steps.len() {
            let p = sym(&format!("e2emu_k{k}"))?;
            // SAFETY: every wrapper has the KernelFn signature (see `source`).
            kernels.push(unsafe { std::mem::transmute::<*const (), KernelFn>(p) });
        }
        // SAFETY: the shim's exported functions with these signatures.
        let (set_seed, set_exact_mma, error, clear) = unsafe {
            (
                std::mem::transmute::<*const (), unsafe extern "C" fn(u64)>(sym("e2emu_set_seed")?),
                std::mem::transmute::<*const (), unsafe extern "C" fn(i32)>(sym(
                    "e2emu_set_exact_mma",
                )?),
                std::mem::transmute::<*const (), unsafe extern "C" fn() -> *const c_char>(sym(
                    "e2emu_error",
                )?),
                std::mem::transmute::<*const (), unsafe extern "C" fn()>(sym("e2emu_clear")?),
            )
        };
        Ok(Emulation {
            kernels,
            set_seed,
            set_exact_mma,
            error,
            clear,
            _lib: lib,
        })
    }

    /// Seeds the order in which the threads of every block run (the default is fixed).
    pub fn set_seed(&self, seed: u64) {
        // SAFETY: the shim's function; it only stores the seed.
        unsafe { (self.set_seed)(seed) }
    }

    /// Test mode: TF32 conversions and MMAs keep every bit of their operands, so a TF32
    /// tensor-core kernel equals the f32 math up to the order of its sums (what checks its
    /// indexing apart from TF32's rounding). Process-wide for this library, like the seed.
    pub fn set_exact_mma(&self, on: bool) {
        // SAFETY: the shim's function; it only stores the flag.
        unsafe { (self.set_exact_mma)(i32::from(on)) }
    }

    /// The error an emulated launch recorded (a barrier in a launch marked without one, a
    /// deadlock), clearing it.
    pub fn take_error(&self) -> Option<String> {
        // SAFETY: the shim returns null or its static, NUL-terminated message buffer.
        let p = unsafe { (self.error)() };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null: the shim's NUL-terminated buffer, copied before clearing.
        let msg = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        // SAFETY: the shim's function; resets the error flag.
        unsafe { (self.clear)() };
        Some(msg)
    }
}

/// Sets the seed of the thread orders of `e` (see [`Emulation::set_seed`]).
pub fn set_seed(e: &Emulation, seed: u64) {
    e.set_seed(seed)
}
