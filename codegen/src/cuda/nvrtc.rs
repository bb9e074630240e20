//! NVRTC: CUDA C source to CUBIN and PTX, with ptxas's resource report parsed and checked, on a
//! machine with no GPU, no driver and no CUDA toolkit.
//!
//! This file owns finding and loading the NVRTC library ([`locate`], [`load`]), compiling a kernel
//! text ([`Nvrtc::compile`]) with a CUBIN cache ([`Nvrtc::compile_cached`]); the ptxas report
//! it returns is read and checked against the launches and the SM's limits by [`super::ptxas`]
//! (re-exported here). It is shaped by where NVRTC comes from and what it must not do:
//!
//! - NVRTC is the PyPI wheel `nvidia-cuda-nvrtc-cu12==12.9.86` (`scripts/fetch-nvrtc.sh` keeps
//!   `libnvrtc.so.12` and `libnvrtc-builtins.so.12.9` in `~/.cache/e2enc/nvrtc-12.9`); the wheel
//!   has no CUDA headers, so kernel texts include nothing. 12.9 is pinned on purpose: its CUBINs
//!   (and PTX ISA 8.8) load on drivers >= 12.9 ([`min_driver`]); PTX from NVRTC 13.x does not
//!   load on the 13.0 driver of the GPU machine we use.
//! - The calls go through `cudarc::nvrtc` (`result`/`sys` level), which opens the library *by
//!   name* on first use (`cudarc::get_lib_name_candidates("nvrtc")`: `libnvrtc.so`,
//!   `libnvrtc.so.12`, ...; no path, no environment variable of its own) and panics if it finds
//!   none or a symbol is missing. glibc reads `LD_LIBRARY_PATH` only at process start, so
//!   [`load`] instead `dlopen`s the located file by absolute path first and checks every symbol it
//!   needs; a later `dlopen` by a name equal to a loaded library's soname (`libnvrtc.so.12`)
//!   returns that library, so cudarc binds to the very file we checked. [`load`] then verifies
//!   that (same address of `nvrtcVersion` in both handles) before any cudarc call: nothing here
//!   panics. libnvrtc finds `libnvrtc-builtins.so.12.9` in its own folder by itself.
//! - One compile gives both outputs: with `--gpu-architecture=sm_XX`, NVRTC runs ptxas (CUBIN,
//!   [`nvrtcGetCUBIN`]) and still returns the PTX, whose `.target sm_XX` is the same text a
//!   `compute_XX` compile gives. The driver JIT-compiles `.target sm_XX` PTX for any device of
//!   compute capability >= XX (newer GPUs than the CUBIN's), so no second `compute_XX` compile
//!   is needed for the fallback.
//! - Arithmetic must match a CPU reference to 1e-5: no `--use_fast_math`; IEEE division and
//!   square root, no flush-to-zero, spelled out in [`options`]. `--fmad=true` (NVRTC's default)
//!   lets `a*b+c` become one FMA, which is as accurate as the C kernels' FMAs.
//!
//! [`nvrtcGetCUBIN`]: cudarc::nvrtc::sys::nvrtcGetCUBIN

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cudarc::nvrtc::{result as nv, sys};
use sha2::{Digest, Sha256};

pub use super::ptxas::{check_resources, parse_ptxas_report, sm_limits, KernelResources, SmLimits};

/// A folder holding `libnvrtc.so*`, or the library file itself; wins over every other place.
pub const ENV_NVRTC: &str = "E2ENC_NVRTC";
/// Where `scripts/fetch-nvrtc.sh` puts NVRTC (default `~/.cache/e2enc/nvrtc-12.9`).
pub const ENV_NVRTC_DIR: &str = "E2ENC_NVRTC_DIR";

const HOW_TO_GET: &str = "get NVRTC 12.9 with `bash scripts/fetch-nvrtc.sh` (from PyPI into \
     ~/.cache/e2enc/nvrtc-12.9), or set E2ENC_NVRTC to a folder holding libnvrtc.so.12 or to the \
     library file";

/// Lines of a failed compile's log kept in [`NvrtcError::Compile`].
const LOG_LINES: usize = 40;

/// Every NVRTC function this module calls (directly or through cudarc); [`load`] checks each is
/// in the library before cudarc, which would panic on a missing one, is used.
const REQUIRED_SYMBOLS: [&str; 13] = [
    "nvrtcVersion",
    "nvrtcGetErrorString",
    "nvrtcGetNumSupportedArchs",
    "nvrtcGetSupportedArchs",
    "nvrtcCreateProgram",
    "nvrtcCompileProgram",
    "nvrtcDestroyProgram",
    "nvrtcGetProgramLogSize",
    "nvrtcGetProgramLog",
    "nvrtcGetPTXSize",
    "nvrtcGetPTX",
    "nvrtcGetCUBINSize",
    "nvrtcGetCUBIN",
];

/// What went wrong finding, loading or running NVRTC, or compiling with it.
#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    /// No NVRTC library where [`locate`] looked.
    #[error("NVRTC not found ({looked}); {how}", how = HOW_TO_GET)]
    NotFound { looked: String },
    /// The library is there but cannot be used.
    #[error("cannot use NVRTC at {}: {reason}; {how}", path.display(), how = HOW_TO_GET)]
    Load { path: PathBuf, reason: String },
    /// This NVRTC does not know the requested SM.
    #[error(
        "NVRTC {}.{} cannot compile for sm_{sm}; it supports sm_{{{supported}}}: \
         pick one of those or use another NVRTC",
        version.0, version.1
    )]
    UnsupportedArch {
        sm: u32,
        version: (i32, i32),
        supported: String,
    },
    /// NVRTC takes the source as a C string.
    #[error(
        "the CUDA source has a NUL byte at offset {offset}; NVRTC takes a C string: remove it"
    )]
    NulInSource { offset: usize },
    /// An NVRTC call failed for a reason other than the source.
    #[error(
        "{call} failed: {message} (nvrtcResult {code}); not a source error: check free memory \
         and the NVRTC installation"
    )]
    Api {
        call: &'static str,
        code: i32,
        message: String,
    },
    /// The source does not compile; `log` holds the first 40 lines of NVRTC's log.
    #[error("NVRTC could not compile the CUDA source for sm_{sm} (options: {options}); fix the source. Log:\n{log}")]
    Compile {
        sm: u32,
        options: String,
        log: String,
    },
    /// The CUBIN cache could not be written.
    #[error(
        "CUBIN cache {}: {source}; make that folder writable, or set XDG_CACHE_HOME or pass \
         another cache folder",
        path.display()
    )]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A loaded, checked NVRTC.
#[derive(Clone, Debug)]
pub struct Nvrtc {
    path: PathBuf,
    version: (i32, i32),
    archs: Vec<u32>,
}

/// The output of one compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// The SM the CUBIN is for.
    pub sm: u32,
    /// The ELF CUBIN for `sm`.
    pub cubin: Vec<u8>,
    /// The PTX (`.target sm_XX`), the JIT fallback for newer GPUs.
    pub ptx: String,
    /// NVRTC's log: warnings and the ptxas verbose report.
    pub log: String,
    /// The report, parsed.
    pub resources: Vec<KernelResources>,
    /// Read from the CUBIN cache rather than compiled.
    pub from_cache: bool,
}

/// The CUDA driver API version (as `cuDriverGetVersion` reports it: 12090 for 12.9) a driver
/// needs to load what an NVRTC of `version` makes: that NVRTC's own CUDA version.
pub fn min_driver(version: (i32, i32)) -> u32 {
    let (major, minor) = (version.0.max(0) as u32, version.1.max(0) as u32);
    major * 1000 + minor * 10
}

/// The options of every compile for `sm` (they are part of the cache key).
pub fn options(sm: u32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=sm_{sm}"),
        "--ptxas-options=--verbose".into(),
        "--std=c++17".into(),
        "--fmad=true".into(),
        "--ftz=false".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
    ]
}

fn env_nonempty(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Where `scripts/fetch-nvrtc.sh` puts NVRTC: `$E2ENC_NVRTC_DIR`, else
/// `$HOME/.cache/e2enc/nvrtc-12.9`.
pub fn fetch_dir() -> Option<PathBuf> {
    if let Some(d) = env_nonempty(ENV_NVRTC_DIR) {
        return Some(PathBuf::from(d));
    }
    env_nonempty("HOME").map(|h| PathBuf::from(h).join(".cache/e2enc/nvrtc-12.9"))
}

/// The library in `p`: `p` itself if it is a file, else `libnvrtc.so.12`, `libnvrtc.so` or
/// another `libnvrtc.so.*` in the folder `p`.
fn library_in(p: &Path) -> Option<PathBuf> {
    if p.is_file() {
        return Some(p.to_path_buf());
    }
    if !p.is_dir() {
        return None;
    }
    for name in ["libnvrtc.so.12", "libnvrtc.so"] {
        let f = p.join(name);
        if f.is_file() {
            return Some(f);
        }
    }
    let mut others: Vec<PathBuf> = fs::read_dir(p)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc.so.") && !n.ends_with(".part"))
                && f.is_file()
        })
        .collect();
    others.sort();
    others.pop()
}

fn dlerror_string() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message owned by libc.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dlopen error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// NVRTC as the system's loader finds it by name (the names cudarc tries), as a path when the
/// loader can tell it.
fn system_library() -> Option<PathBuf> {
    for name in cudarc::get_lib_name_candidates("nvrtc") {
        let Ok(c) = CString::new(name.as_str()) else {
            continue;
        };
        // SAFETY: dlopen/dlsym/dladdr/dlclose on a handle we own; NVRTC has no constructors that
        // need anything from us.
        unsafe {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
            if h.is_null() {
                continue;
            }
            let sym = libc::dlsym(h, c"nvrtcVersion".as_ptr());
            let mut info: libc::Dl_info = std::mem::zeroed();
            let path = if !sym.is_null()
                && libc::dladdr(sym as *const c_void, &mut info) != 0
                && !info.dli_fname.is_null()
            {
                PathBuf::from(std::ffi::OsStr::from_bytes(
                    CStr::from_ptr(info.dli_fname).to_bytes(),
                ))
            } else {
                PathBuf::from(name)
            };
            libc::dlclose(h);
            return Some(path);
        }
    }
    None
}

/// Finds NVRTC: `$E2ENC_NVRTC` (a folder holding `libnvrtc.so*`, or the library file; when set,
/// nothing else is tried), else the fetch script's folder ([`fetch_dir`]), else the system's
/// library by name.
pub fn locate() -> Result<PathBuf, NvrtcError> {
    if let Some(v) = env_nonempty(ENV_NVRTC) {
        let p = PathBuf::from(v);
        return library_in(&p).ok_or_else(|| NvrtcError::NotFound {
            looked: format!(
                "{ENV_NVRTC}={}: {}",
                p.display(),
                if p.exists() {
                    "no libnvrtc.so* in that folder"
                } else {
                    "no such file or folder"
                }
            ),
        });
    }
    let dir = fetch_dir();
    if let Some(f) = dir.as_deref().and_then(library_in) {
        return Ok(f);
    }
    if let Some(f) = system_library() {
        return Ok(f);
    }
    Err(NvrtcError::NotFound {
        looked: format!(
            "{ENV_NVRTC} unset, no libnvrtc.so* in {}, none on the system library path",
            dir.map_or("$HOME/.cache/e2enc/nvrtc-12.9 (HOME unset)".into(), |d| d
                .display()
                .to_string())
        ),
    })
}

/// Locates ([`locate`]) and loads NVRTC.
pub fn load() -> Result<Nvrtc, NvrtcError> {
    load_from(&locate()?)
}

/// Loads the NVRTC library at `path` and checks that cudarc will call into that same library.
pub fn load_from(path: &Path) -> Result<Nvrtc, NvrtcError> {
    let fail = |reason: String| NvrtcError::Load {
        path: path.to_path_buf(),
        reason,
    };
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| fail("the path has a NUL byte".into()))?;
    // SAFETY: dlopen of a library file; the handle is kept open for the life of the process
    // (cudarc holds the library forever too).
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        return Err(fail(dlerror_string()));
    }
    let mut ours = std::ptr::null_mut();
    for name in REQUIRED_SYMBOLS {
        let Ok(c) = CString::new(name) else { continue };
        // SAFETY: dlsym on a valid handle.
        let sym = unsafe { libc::dlsym(handle, c.as_ptr()) };
        if sym.is_null() {
            return Err(fail(format!(
                "it has no {name}: not NVRTC, or older than CUDA 11.2"
            )));
        }
        if name == "nvrtcVersion" {
            ours = sym;
        }
    }
    // SAFETY: is_culib_present only tries to dlopen the candidate names.
    if !unsafe { sys::is_culib_present() } {
        return Err(fail(format!(
            "cudarc opens NVRTC by name ({:?}) and none of these names resolves to it; its \
             soname should be libnvrtc.so.12 (NVRTC 12.x)",
            cudarc::get_lib_name_candidates("nvrtc")
        )));
    }
    // SAFETY: culib opens the first candidate that loads, which is_culib_present just found, so
    // it does not panic; get only looks a symbol up.
    let theirs = unsafe { sys::culib().get::<*mut c_void>(b"nvrtcVersion\0") }
        .map(|s| *s)
        .unwrap_or(std::ptr::null_mut());
    if theirs != ours {
        return Err(fail(
            "cudarc bound to another libnvrtc, found first by name (libnvrtc.so on the loader's \
             path, or an NVRTC loaded earlier in this process); remove it from LD_LIBRARY_PATH \
             or point E2ENC_NVRTC at the library cudarc finds"
                .into(),
        ));
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the symbol is present (checked above) in the library cudarc uses.
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check("nvrtcVersion", r)?;
    let mut n: c_int = 0;
    // SAFETY: as above.
    check("nvrtcGetNumSupportedArchs", unsafe {
        sys::nvrtcGetNumSupportedArchs(&mut n)
    })?;
    let mut archs: Vec<c_int> = vec![0; n.max(0) as usize];
    // SAFETY: `archs` holds the `n` entries NVRTC writes.
    check("nvrtcGetSupportedArchs", unsafe {
        sys::nvrtcGetSupportedArchs(archs.as_mut_ptr())
    })?;
    Ok(Nvrtc {
        path: path.to_path_buf(),
        version: (major, minor),
        archs: archs
            .into_iter()
            .filter_map(|a| u32::try_from(a).ok())
            .collect(),
    })
}

fn describe(r: sys::nvrtcResult) -> String {
    // SAFETY: nvrtcGetErrorString (present, checked in load_from) returns a static string.
    let s = unsafe { sys::nvrtcGetErrorString(r) };
    if s.is_null() {
        format!("{r:?}")
    } else {
        // SAFETY: non-null static NUL-terminated string.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }
}

fn api_error(call: &'static str, r: sys::nvrtcResult) -> NvrtcError {
    NvrtcError::Api {
        call,
        code: r as i32,
        message: describe(r),
    }
}

fn check(call: &'static str, r: sys::nvrtcResult) -> Result<(), NvrtcError> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(api_error(call, r))
    }
}

/// NVRTC's C text (with its trailing NUL) as a string.
fn c_text(v: Vec<c_char>) -> String {
    let bytes: Vec<u8> = v
        .into_iter()
        .map(|c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Destroys the program on every path out of [`Nvrtc::compile`].
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by create_program, destroyed once, here.
        let _ = unsafe { nv::destroy_program(self.0) };
    }
}

fn head_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines.iter().take(n).copied().collect::<Vec<_>>().join("\n");
    if lines.len() > n {
        let _ = write!(out, "\n... ({} more lines)", lines.len() - n);
    }
    out
}

impl Nvrtc {
    /// NVRTC's CUDA version, `(12, 9)`.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// The library file loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SM versions this NVRTC compiles for (`80` for `sm_80`).
    pub fn supported_archs(&self) -> &[u32] {
        &self.archs
    }

    /// [`min_driver`] of this NVRTC.
    pub fn min_driver(&self) -> u32 {
        min_driver(self.version)
    }

    /// Compiles `source` (header-free CUDA C) for `sm` with [`options`]: CUBIN, PTX, the log and
    /// the parsed ptxas report.
    pub fn compile(&self, source: &str, sm: u32) -> Result<Compiled, NvrtcError> {
        if !self.archs.contains(&sm) {
            return Err(NvrtcError::UnsupportedArch {
                sm,
                version: self.version,
                supported: self
                    .archs
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        let src = CString::new(source).map_err(|e| NvrtcError::NulInSource {
            offset: e.nul_position(),
        })?;
        let prog = Program(
            nv::create_program(&src, Some(c"kernels.cu"))
                .map_err(|e| api_error("nvrtcCreateProgram", e.0))?,
        );
        let opts = options(sm);
        // SAFETY: `prog` is live until dropped at the end of this function.
        let status = unsafe { nv::compile_program(prog.0, &opts) };
        // SAFETY: as above.
        let log = c_text(
            unsafe { nv::get_program_log(prog.0) }
                .map_err(|e| api_error("nvrtcGetProgramLog", e.0))?,
        );
        match status {
            Ok(()) => {}
            Err(e) if e.0 == sys::nvrtcResult::NVRTC_ERROR_COMPILATION => {
                return Err(NvrtcError::Compile {
                    sm,
                    options: opts.join(" "),
                    log: head_lines(&log, LOG_LINES),
                });
            }
            Err(e) => return Err(api_error("nvrtcCompileProgram", e.0)),
        }
        // SAFETY: as above.
        let ptx =
            c_text(unsafe { nv::get_ptx(prog.0) }.map_err(|e| api_error("nvrtcGetPTX", e.0))?);
        let mut size = 0usize;
        // SAFETY: as above; `cubin` holds the `size` bytes NVRTC writes.
        check("nvrtcGetCUBINSize", unsafe {
            sys::nvrtcGetCUBINSize(prog.0, &mut size)
        })?;
        let mut cubin = vec![0u8; size];
        check("nvrtcGetCUBIN", unsafe {
            sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut c_char)
        })?;
        let resources = parse_ptxas_report(&log);
        Ok(Compiled {
            sm,
            cubin,
            ptx,
            log,
            resources,
            from_cache: false,
        })
    }

    /// The cache key of `source` for `sm`: sha256 of the source, SM, NVRTC version and options.
    pub fn cache_key(&self, source: &str, sm: u32) -> String {
        let mut h = Sha256::new();
        h.update(b"e2enc cubin cache v1\0");
        h.update(source.as_bytes());
        h.update(format!(
            "\0sm_{sm}\0nvrtc {}.{}\0",
            self.version.0, self.version.1
        ));
        for o in options(sm) {
            h.update(o.as_bytes());
            h.update(b"\0");
        }
        hex(&h.finalize())
    }

    /// [`Nvrtc::compile`] through a cache of compiled outputs in `cache_dir` (default
    /// [`default_cache_dir`]; no cache when neither that nor `HOME` is known). A missing, short or
    /// corrupt entry (checked by its own sha256) is recompiled and rewritten; entries are written
    /// to a temporary file and renamed, so readers never see a partial one. Compile errors are not
    /// cached.
    pub fn compile_cached(
        &self,
        source: &str,
        sm: u32,
        cache_dir: Option<&Path>,
    ) -> Result<Compiled, NvrtcError> {
        let Some(dir) = cache_dir.map(Path::to_path_buf).or_else(default_cache_dir) else {
            return self.compile(source, sm);
        };
        let file = dir.join(format!("{}.cubin", self.cache_key(source, sm)));
        if let Some((cubin, ptx, log)) = fs::read(&file).ok().and_then(|b| decode_entry(&b)) {
            let resources = parse_ptxas_report(&log);
            return Ok(Compiled {
                sm,
                cubin,
                ptx,
                log,
                resources,
                from_cache: true,
            });
        }
        let compiled = self.compile(source, sm)?;
        write_atomic(&dir, &file, &encode_entry(&compiled)).map_err(|source| {
            NvrtcError::Cache {
                path: file.clone(),
                source,
            }
        })?;
        Ok(compiled)
    }
}

/// `$XDG_CACHE_HOME/e2enc/cubin`, else `$HOME/.cache/e2enc/cubin`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(x) = env_nonempty("XDG_CACHE_HOME").map(PathBuf::from) {
        if x.is_absolute() {
            return Some(x.join("e2enc/cubin"));
        }
    }
    env_nonempty("HOME").map(|h| PathBuf::from(h).join(".cache/e2enc/cubin"))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

const ENTRY_MAGIC: &[u8; 8] = b"E2CUBIN1";

/// A cache entry: magic, the three lengths (u64 LE), CUBIN, PTX, log, then the sha256 of all
/// that.
fn encode_entry(c: &Compiled) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + c.cubin.len() + c.ptx.len() + c.log.len());
    out.extend_from_slice(ENTRY_MAGIC);
    for len in [c.cubin.len(), c.ptx.len(), c.log.len()] {
        out.extend_from_slice(&(len as u64).to_le_bytes());
    }
    out.extend_from_slice(&c.cubin);
    out.extend_from_slice(c.ptx.as_bytes());
    out.extend_from_slice(c.log.as_bytes());
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

fn decode_entry(b: &[u8]) -> Option<(Vec<u8>, String, String)> {
    let body_len = b.len().checked_sub(32)?;
    let (body, digest) = b.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest || body.get(..8)? != ENTRY_MAGIC {
        return None;
    }
    let len = |i: usize| -> Option<usize> {
        let s: [u8; 8] = body.get(8 + 8 * i..16 + 8 * i)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(s)).ok()
    };
    let (nc, np, nl) = (len(0)?, len(1)?, len(2)?);
    let rest = body.get(32..)?;
    if nc.checked_add(np)?.checked_add(nl)? != rest.len() {
        return None;
    }
    let (cubin, rest) = rest.split_at(nc);
    let (ptx, log) = rest.split_at(np);
    Some((
        cubin.to_vec(),
        String::from_utf8(ptx.to_vec()).ok()?,
        String::from_utf8(log.to_vec()).ok()?,
    ))
}

fn write_atomic(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entries_round_trip_and_reject_damage() {
        let c = Compiled {
            sm: 90,
            cubin: b"\x7fELF....".to_vec(),
            ptx: ".version 8.8".into(),
            log: "ptxas info    : Used 40 registers".into(),
            resources: vec![],
            from_cache: false,
        };
        let e = encode_entry(&c);
        assert_eq!(
            decode_entry(&e),
            Some((c.cubin.clone(), c.ptx.clone(), c.log.clone()))
        );
        for cut in [0, 8, 31, e.len() - 1] {
            assert_eq!(decode_entry(&e[..cut]), None);
        }
        let mut flipped = e.clone();
        flipped[40] ^= 1;
        assert_eq!(decode_entry(&flipped), None);
    }

    #[test]
    fn min_driver_is_the_cuda_version() {
        assert_eq!(min_driver((12, 9)), 12090);
        assert_eq!(min_driver((13, 0)), 13000);
    }
}
