//! NCCL, the collectives of GPU ranks: the gradients of a data-parallel step on GPUs are summed
//! by `ncclAllReduce` in the devices' memory, bucket by bucket on a second CUDA stream beside
//! the backward pass, with no copy through the host (see [`crate::dist::GradientReducer`]). The ranks are still started and kept in step
//! by MPI (`mpirun`, `srun`): MPI carries rank 0's NCCL id to the others and the few host-side
//! numbers of a step (the loss's batch sums, DSFF mask decisions, the agreement checks).
//!
//! NCCL is opened here, not through cudarc's `nccl` feature: cudarc 0.19 opens it only by the
//! names `libnccl.so`, `libnccl.so.{9..12}` and `libnccl.so.1` (and panics when none loads),
//! while NCCL's PyPI wheels (`nvidia-nccl-cu12`, `nvidia-nccl-cu13`, the ones PyTorch installs)
//! and NVIDIA's Debian package ship `libnccl.so.2` and nothing else; no `LD_LIBRARY_PATH`
//! setting can make a file answer to another name. The handful of NCCL calls a run needs are
//! declared below from NCCL's C API (`nccl.h`, stable since NCCL 2.0) and looked up in the
//! library [`locate`] finds:
//!
//! 1. `$E2ENC_NCCL`: the library file, or a folder holding `libnccl.so.2` (when set, nothing
//!    else is tried);
//! 2. the folder `scripts/fetch-nccl.sh` fills (`$E2ENC_NCCL_DIR`, default
//!    `~/.cache/e2enc/nccl`);
//! 3. a Python environment's `nvidia/nccl/lib/libnccl.so.2` (`pip install nvidia-nccl-cu12`, or
//!    PyPI's PyTorch, which depends on it): the active virtualenv or conda environment, the
//!    user's and the system's site-packages;
//! 4. the system's `libnccl.so.2` by name (Debian/Ubuntu `libnccl2` from NVIDIA's CUDA
//!    repository, or `LD_LIBRARY_PATH`).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::TrainError;

/// Names the NCCL library file or its folder; when set, the only place looked at.
pub const ENV_NCCL: &str = "E2ENC_NCCL";
/// Where `scripts/fetch-nccl.sh` puts NCCL (default `~/.cache/e2enc/nccl`).
pub const ENV_NCCL_DIR: &str = "E2ENC_NCCL_DIR";

/// What to do when NCCL is missing (ends every "not found" error).
pub const INSTALL_HINT: &str = "GPU ranks sum their gradients with NVIDIA's NCCL: install it \
     with `pip install nvidia-nccl-cu12` (into the Python environment active when e2enc runs; \
     PyTorch from PyPI brings it too), or run scripts/fetch-nccl.sh (into ~/.cache/e2enc/nccl), \
     or `apt install libnccl2` from NVIDIA's CUDA repository, or set E2ENC_NCCL to a \
     libnccl.so.2";

fn err(msg: impl Into<String>) -> TrainError {
    TrainError::Distributed(msg.into())
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The NCCL library in `p`: `p` itself when it is a file, else `libnccl.so.2` or `libnccl.so`
/// in the folder `p`.
fn library_in(p: &Path) -> Option<PathBuf> {
    if p.is_file() {
        return Some(p.to_path_buf());
    }
    ["libnccl.so.2", "libnccl.so"]
        .iter()
        .map(|n| p.join(n))
        .find(|f| f.is_file())
}

/// The fetch script's folder: `$E2ENC_NCCL_DIR`, else `$HOME/.cache/e2enc/nccl`.
pub fn fetch_dir() -> Option<PathBuf> {
    if let Some(d) = env_nonempty(ENV_NCCL_DIR) {
        return Some(PathBuf::from(d));
    }
    env_nonempty("HOME").map(|h| PathBuf::from(h).join(".cache/e2enc/nccl"))
}

/// The `site-packages` (and Debian's `dist-packages`) folders of the Python environments a user
/// may have installed NCCL's wheel into, the active ones first.
fn python_package_dirs() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(|v| env_nonempty(v))
        .map(PathBuf::from)
        .collect();
    if let Some(h) = env_nonempty("HOME") {
        prefixes.push(PathBuf::from(h).join(".local"));
    }
    prefixes.extend(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));
    package_dirs_under(&prefixes)
}

/// `PREFIX/lib/python3*/{site,dist}-packages` for each of `prefixes`, newest Python first.
fn package_dirs_under(prefixes: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for prefix in prefixes {
        let Ok(rd) = std::fs::read_dir(prefix.join("lib")) else {
            continue;
        };
        let mut pythons: Vec<(usize, String, PathBuf)> = rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let minor = name.strip_prefix("python3")?;
                let minor = minor
                    .strip_prefix('.')
                    .map_or(Some(0), |m| m.parse().ok())?;
                Some((minor, name, e.path()))
            })
            .collect();
        pythons.sort_by(|a, b| b.cmp(a));
        for (_, _, py) in pythons {
            for sub in ["site-packages", "dist-packages"] {
                out.push(py.join(sub));
            }
        }
    }
    out
}

/// Where NCCL was found (see the module doc for the order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A file (from `$E2ENC_NCCL`, the fetch folder or a Python environment).
    File(PathBuf),
    /// A name for the system's loader (`libnccl.so.2`).
    System(&'static str),
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::File(p) => write!(f, "{}", p.display()),
            Found::System(n) => write!(f, "{n} (the system's loader path)"),
        }
    }
}

/// Finds NCCL (see the module doc); the error says where it looked and how to install it.
pub fn locate() -> Result<Found, TrainError> {
    if let Some(v) = env_nonempty(ENV_NCCL) {
        let p = PathBuf::from(&v);
        return library_in(&p).map(Found::File).ok_or_else(|| {
            err(format!(
                "{ENV_NCCL}={v}: {} ({INSTALL_HINT})",
                if p.exists() {
                    "no libnccl.so.2 in that folder"
                } else {
                    "no such file or folder"
                }
            ))
        });
    }
    let fetched = fetch_dir();
    if let Some(f) = fetched.as_deref().and_then(library_in) {
        return Ok(Found::File(f));
    }
    for d in python_package_dirs() {
        let f = d.join("nvidia/nccl/lib/libnccl.so.2");
        if f.is_file() {
            return Ok(Found::File(f));
        }
    }
    for name in ["libnccl.so.2", "libnccl.so"] {
        // SAFETY: loading NCCL runs only its initialisers, which set nothing up before its
        // first call; the handle is closed again at once.
        if unsafe { libloading::Library::new(name) }.is_ok() {
            return Ok(Found::System(name));
        }
    }
    Err(err(format!(
        "NCCL not found: {ENV_NCCL} unset, no libnccl.so.2 in {}, none in a Python \
         environment's nvidia/nccl/lib, none on the system's loader path. {INSTALL_HINT}",
        fetched.map_or("~/.cache/e2enc/nccl (HOME unset)".into(), |d| d
            .display()
            .to_string())
    )))
}

/// An NCCL unique id (`ncclUniqueId`): made by rank 0, carried to the others, names the
/// communicator they join.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [c_char; 128],
}

impl UniqueId {
    /// Its 128 bytes, to send to the other ranks.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.internal.iter().map(|&c| c as u8).collect()
    }

    /// An id from [`UniqueId::to_bytes`]'s bytes.
    pub fn from_bytes(b: &[u8]) -> Result<UniqueId, TrainError> {
        if b.len() != 128 {
            return Err(err(format!(
                "an NCCL id is 128 bytes; rank 0 sent {}",
                b.len()
            )));
        }
        let mut id = UniqueId { internal: [0; 128] };
        for (d, &s) in id.internal.iter_mut().zip(b) {
            *d = s as c_char;
        }
        Ok(id)
    }
}

type NcclComm = *mut c_void;
/// `ncclResult_t`.
type Status = c_int;
const SUCCESS: Status = 0;
/// `ncclInProgress`: a non-blocking call still running (only with non-blocking communicators,
/// which are not made here).
const IN_PROGRESS: Status = 7;
/// `ncclFloat32`, `ncclSum`.
const FLOAT32: c_int = 7;
const SUM: c_int = 0;

type GetVersion = unsafe extern "C" fn(*mut c_int) -> Status;
type GetUniqueId = unsafe extern "C" fn(*mut UniqueId) -> Status;
type CommInitRank = unsafe extern "C" fn(*mut NcclComm, c_int, UniqueId, c_int) -> Status;
type AllReduce = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    NcclComm,
    *mut c_void,
) -> Status;
type Group = unsafe extern "C" fn() -> Status;
type CommFree = unsafe extern "C" fn(NcclComm) -> Status;
type CommAsyncError = unsafe extern "C" fn(NcclComm, *mut Status) -> Status;
type ErrorString = unsafe extern "C" fn(Status) -> *const c_char;
type LastError = unsafe extern "C" fn(NcclComm) -> *const c_char;

/// The NCCL library, loaded, with the calls e2enc makes.
pub struct Nccl {
    found: Found,
    version: c_int,
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    all_reduce: AllReduce,
    group_start: Group,
    group_end: Group,
    comm_destroy: CommFree,
    comm_abort: CommFree,
    comm_async_error: CommAsyncError,
    error_string: ErrorString,
    last_error: Option<LastError>,
    // Last: the function pointers above live in it.
    _lib: libloading::Library,
}

impl Nccl {
    /// Locates ([`locate`]) and loads NCCL.
    pub fn load() -> Result<Arc<Nccl>, TrainError> {
        Nccl::load_from(locate()?)
    }

    /// Loads the NCCL library at `found` and checks it has every call e2enc makes.
    pub fn load_from(found: Found) -> Result<Arc<Nccl>, TrainError> {
        let fail = |why: String| err(format!("NCCL at {found}: {why}"));
        // SAFETY: loading a library runs its initialisers; NCCL's set nothing up before its
        // first call.
        let lib = unsafe {
            match &found {
                Found::File(p) => libloading::Library::new(p),
                Found::System(n) => libloading::Library::new(n),
            }
        }
        .map_err(|e| fail(format!("cannot load it: {e}")))?;
        /// A symbol's address as a function pointer of type `T` (checked present).
        unsafe fn sym<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, String> {
            // SAFETY (caller): `T` is the C signature of `name` in nccl.h.
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| format!("it has no {name}: not NCCL 2"))
        }
        // SAFETY: every type is the signature nccl.h declares for that name.
        let n = unsafe {
            Nccl {
                version: 0,
                get_unique_id: sym(&lib, "ncclGetUniqueId").map_err(fail)?,
                comm_init_rank: sym(&lib, "ncclCommInitRank").map_err(fail)?,
                all_reduce: sym(&lib, "ncclAllReduce").map_err(fail)?,
                group_start: sym(&lib, "ncclGroupStart").map_err(fail)?,
                group_end: sym(&lib, "ncclGroupEnd").map_err(fail)?,
                comm_destroy: sym(&lib, "ncclCommDestroy").map_err(fail)?,
                comm_abort: sym(&lib, "ncclCommAbort").map_err(fail)?,
                comm_async_error: sym(&lib, "ncclCommGetAsyncError").map_err(fail)?,
                error_string: sym(&lib, "ncclGetErrorString").map_err(fail)?,
                // NCCL 2.13 and later.
                last_error: sym(&lib, "ncclGetLastError").ok(),
                found: found.clone(),
                _lib: lib,
            }
        };
        // SAFETY: as above; a valid out-pointer.
        let get_version: GetVersion = unsafe { sym(&n._lib, "ncclGetVersion").map_err(fail)? };
        let mut v: c_int = 0;
        n.check("ncclGetVersion", unsafe { get_version(&mut v) }, None)?;
        if v < 2_09_00 {
            return Err(fail(format!(
                "version code {v} is older than NCCL 2.9, which e2enc needs"
            )));
        }
        Ok(Arc::new(Nccl { version: v, ..n }))
    }

    /// Where it was loaded from.
    pub fn found(&self) -> &Found {
        &self.found
    }

    /// `2.32.3`.
    pub fn version(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    }

    /// `ncclResult_t` `r` of `call` as an error with NCCL's words (and its last error's, when
    /// it has them).
    fn check(&self, call: &str, r: Status, comm: Option<NcclComm>) -> Result<(), TrainError> {
        if r == SUCCESS {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static string for any code.
        let what = unsafe { CStr::from_ptr((self.error_string)(r)) }
            .to_string_lossy()
            .into_owned();
        let last = self
            .last_error
            // SAFETY: ncclGetLastError takes a communicator or null and returns a string
            // NCCL owns (empty when there is nothing to add).
            .map(|f| unsafe { f(comm.unwrap_or(std::ptr::null_mut())) })
            .filter(|p| !p.is_null())
            // SAFETY: a NUL-terminated string from NCCL.
            .map(|p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        Err(err(format!(
            "NCCL {} ({}): {call} failed: {what}{last}",
            self.version(),
            self.found
        )))
    }

    /// A new unique id (rank 0 makes it; it needs no GPU).
    pub fn unique_id(&self) -> Result<UniqueId, TrainError> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: a valid out-pointer to a 128-byte ncclUniqueId.
        self.check(
            "ncclGetUniqueId",
            unsafe { (self.get_unique_id)(&mut id) },
            None,
        )?;
        Ok(id)
    }
}

/// One rank's NCCL communicator.
pub struct Comm {
    nccl: Arc<Nccl>,
    comm: NcclComm,
    rank: usize,
    size: usize,
    /// An error was seen: dropping aborts the communicator rather than destroying it (which
    /// would wait for the other ranks).
    failed: std::cell::Cell<bool>,
}

// SAFETY: an NCCL communicator may be used from any thread (one at a time: `Comm` is not
// `Sync`), with the CUDA context of its GPU current.
unsafe impl Send for Comm {}

impl Comm {
    /// Joins the communicator `id` of `size` ranks as `rank`, on the GPU whose CUDA context is
    /// current on this thread; returns when every rank has joined.
    ///
    /// # Safety
    /// The CUDA context of this rank's GPU must be current on the calling thread, and no other
    /// rank of the same communicator may use the same GPU.
    pub unsafe fn init(
        nccl: Arc<Nccl>,
        id: &UniqueId,
        size: usize,
        rank: usize,
    ) -> Result<Comm, TrainError> {
        let (n, r) = (
            c_int::try_from(size).map_err(|_| err("too many ranks for NCCL"))?,
            c_int::try_from(rank).map_err(|_| err("too many ranks for NCCL"))?,
        );
        if rank >= size {
            return Err(err(format!("rank {rank} of {size}")));
        }
        let mut comm: NcclComm = std::ptr::null_mut();
        // SAFETY: a valid out-pointer; the id is passed by value as nccl.h declares.
        nccl.check(
            "ncclCommInitRank",
            unsafe { (nccl.comm_init_rank)(&mut comm, n, *id, r) },
            None,
        )?;
        Ok(Comm {
            nccl,
            comm,
            rank,
            size,
            failed: std::cell::Cell::new(false),
        })
    }

    /// This rank, and the number of ranks.
    pub fn rank(&self) -> (usize, usize) {
        (self.rank, self.size)
    }

    /// The library it runs on.
    pub fn nccl(&self) -> &Nccl {
        &self.nccl
    }

    fn checked(&self, call: &str, r: Status) -> Result<(), TrainError> {
        let res = self.nccl.check(call, r, Some(self.comm));
        if res.is_err() {
            self.failed.set(true);
        }
        res
    }

    /// Sums every `(address, floats)` buffer of f32 over the ranks, in place, on CUDA stream
    /// `stream` (as one NCCL group: one launch for all of them), ordered after the work already
    /// issued on that stream and before the work issued after; returns once issued.
    ///
    /// # Safety
    /// Every buffer must be device memory of this rank's GPU holding `floats` f32 values, alive
    /// until the stream has run the reduction, `stream` a stream of that GPU, and its CUDA
    /// context current on the calling thread. Every rank must issue the same buffer lengths in
    /// the same order.
    pub unsafe fn all_reduce_sum_f32(
        &self,
        bufs: &[(u64, usize)],
        stream: u64,
    ) -> Result<(), TrainError> {
        // SAFETY: group calls take no arguments.
        self.checked("ncclGroupStart", unsafe { (self.nccl.group_start)() })?;
        let mut first = Ok(());
        for &(p, n) in bufs {
            if n == 0 {
                continue;
            }
            let ptr = p as usize as *mut c_void;
            // SAFETY: the caller's promise: device buffers of `n` floats, in place.
            let r = unsafe {
                (self.nccl.all_reduce)(
                    ptr,
                    ptr,
                    n,
                    FLOAT32,
                    SUM,
                    self.comm,
                    stream as usize as *mut c_void,
                )
            };
            if let Err(e) = self.checked("ncclAllReduce", r) {
                first = Err(e);
                break;
            }
        }
        // The group is ended even after an error (NCCL requires the pairing).
        // SAFETY: as above.
        let end = self.checked("ncclGroupEnd", unsafe { (self.nccl.group_end)() });
        first?;
        end?;
        self.async_error()
    }

    /// An error NCCL met asynchronously (a rank that went away, a network failure).
    pub fn async_error(&self) -> Result<(), TrainError> {
        let mut st: Status = SUCCESS;
        // SAFETY: a valid communicator and out-pointer.
        self.checked("ncclCommGetAsyncError", unsafe {
            (self.nccl.comm_async_error)(self.comm, &mut st)
        })?;
        if st != SUCCESS && st != IN_PROGRESS {
            return self.checked("an earlier collective (ncclCommGetAsyncError)", st);
        }
        Ok(())
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        // SAFETY: the communicator this made; not used after this.
        unsafe {
            if self.failed.get() {
                (self.nccl.comm_abort)(self.comm);
            } else {
                (self.nccl.comm_destroy)(self.comm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_round_trip_through_bytes_and_refuse_other_lengths() {
        let mut id = UniqueId { internal: [0; 128] };
        for (i, c) in id.internal.iter_mut().enumerate() {
            *c = (i as u8).wrapping_mul(37) as c_char;
        }
        let b = id.to_bytes();
        assert_eq!(b.len(), 128);
        assert_eq!(UniqueId::from_bytes(&b).unwrap().internal, id.internal);
        let e = UniqueId::from_bytes(&b[..100]).err().unwrap().to_string();
        assert!(e.contains("128 bytes") && e.contains("100"), "{e}");
    }

    #[test]
    fn a_python_environments_wheel_is_found_in_its_site_packages() {
        let t = tempfile::tempdir().unwrap();
        let lib = t
            .path()
            .join("lib/python3.11/site-packages/nvidia/nccl/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libnccl.so.2"), b"not a library").unwrap();
        std::fs::create_dir_all(t.path().join("lib/python3.9/site-packages")).unwrap();
        std::fs::create_dir_all(t.path().join("lib/pythonista")).unwrap();
        let dirs = package_dirs_under(&[t.path().join("none"), t.path().to_path_buf()]);
        assert_eq!(dirs.len(), 4, "{dirs:?}");
        assert_eq!(
            dirs.first().map(|d| d.join("nvidia/nccl/lib/libnccl.so.2")),
            Some(lib.join("libnccl.so.2"))
        );
        // A file that is not NCCL: a clear error, not a crash.
        let e = Nccl::load_from(Found::File(lib.join("libnccl.so.2")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot load it"), "{e}");
    }
}
