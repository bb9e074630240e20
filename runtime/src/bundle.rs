//! Loading a kernel bundle: verify first, load code last.
//!
//! Order of checks: the manifest parses, has the right format and version and names exactly the
//! bundle's files by plain names (nothing outside the folder); every file's sha256 matches; the
//! host has the CPU features the kernels need; the constant blobs have the sizes the manifest
//! says. Only then is `kernels.so` loaded, and from a private copy of the very bytes that were
//! hashed, so the library cannot change between verification and loading. `rebuild` recompiles
//! the (verified) `kernels.c` with this host's compiler (`$CC` or `cc`, never a program the
//! manifest names) and the bundle flags instead of loading the shipped library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use e2enc_codegen::artifact::{
    is_plain_file_name, plan_digest, sha256_hex, Manifest, FILES, FORMAT, VERSION,
};
use e2enc_ir::{Tensor, Weights};

use e2enc_codegen::target::Target;

use crate::pool::KernelFn;
use crate::RuntimeError;

/// How to load a bundle.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Recompile kernels.c on this host instead of loading the shipped kernels.so.
    pub rebuild: bool,
}

/// A verified, loaded bundle.
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The constant blobs (moved into the engine's aligned storage by `Engine::new`).
    pub w: Vec<f32>,
    pub i: Vec<i32>,
    pub kernels: Vec<KernelFn>,
    _lib: libloading::Library,
}

fn bad(dir: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Bundle {
        path: dir.to_path_buf(),
        msg: msg.into(),
    }
}

pub use e2enc_codegen::target::host_has;

/// Reads and checks the manifest and every file it names; returns the files' bytes.
pub fn verify(dir: &Path) -> Result<(Manifest, BTreeMap<String, Vec<u8>>), RuntimeError> {
    let mpath = dir.join("manifest.json");
    let text = std::fs::read_to_string(&mpath)
        .map_err(|e| bad(dir, format!("cannot read manifest.json: {e}")))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| bad(dir, format!("manifest.json is not a valid manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(
            dir,
            format!(
                "manifest format is `{}`, expected `{FORMAT}`",
                manifest.format
            ),
        ));
    }
    if manifest.version != VERSION {
        return Err(bad(
            dir,
            format!("bundle format version {} is not supported (this build reads {VERSION}); recompile the model", manifest.version),
        ));
    }
    for name in manifest.files.keys() {
        if !is_plain_file_name(name) {
            return Err(bad(
                dir,
                format!("manifest names `{name}`, which is not a file inside the bundle"),
            ));
        }
        if !FILES.contains(&name.as_str()) {
            return Err(bad(
                dir,
                format!("manifest names an unexpected file `{name}`"),
            ));
        }
    }
    let mut bytes = BTreeMap::new();
    for f in FILES {
        let want = manifest
            .files
            .get(f)
            .ok_or_else(|| bad(dir, format!("manifest has no checksum for {f}")))?;
        let path = dir.join(f);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(bad(dir, format!("{f} is not a regular file"))),
            Err(e) => return Err(bad(dir, format!("cannot read {f}: {e}"))),
        }
        let b = std::fs::read(&path).map_err(|e| bad(dir, format!("cannot read {f}: {e}")))?;
        let got = sha256_hex(&b);
        if &got != want {
            return Err(bad(dir, format!("{f} does not match its checksum (modified or corrupted); refusing to load the bundle")));
        }
        bytes.insert(f.to_string(), b);
    }
    // The manifest's plan (arena size, kernels and tiles, port views, blob sizes) must be the one
    // the (checksummed) kernels were generated for: kernels.c carries its digest.
    let digest = plan_digest(&manifest);
    let marker = format!("/* e2enc-plan: {digest} */");
    if !String::from_utf8_lossy(&bytes["kernels.c"]).contains(&marker) {
        return Err(bad(dir, "manifest.json does not match kernels.c (its plan was modified); refusing to load the bundle"));
    }
    for p in manifest.inputs.iter().chain(&manifest.outputs) {
        if p.view.end() > manifest.arena_elems || p.shape.iter().product::<usize>() == 0 {
            return Err(bad(
                dir,
                format!("the view of `{}` lies outside the arena", p.name),
            ));
        }
    }
    let target = Target::from_manifest(manifest.target.as_deref(), &manifest.cpu_features)
        .map_err(|e| bad(dir, format!("manifest.json: {e}")))?;
    let recompile = format!(
        "recompile the model for this host with `e2enc compile --target native` (or `--target portable`, which runs anywhere); --rebuild cannot help, the kernel code itself is written for {target}"
    );
    if let Some(arch) = target.arch() {
        if arch != std::env::consts::ARCH {
            return Err(bad(
                dir,
                format!(
                    "the bundle was compiled for `--target {target}` ({arch}), this host is {}; {recompile}",
                    std::env::consts::ARCH
                ),
            ));
        }
    }
    for feat in &manifest.cpu_features {
        match host_has(feat) {
            Some(true) => {}
            Some(false) => {
                return Err(bad(dir, format!("this CPU lacks `{feat}`, which the kernels of `--target {target}` need; {recompile}")))
            }
            None => return Err(bad(dir, format!("the bundle needs an unknown CPU feature `{feat}`"))),
        }
    }
    Ok((manifest, bytes))
}

/// The target a verified manifest names.
fn target_of(m: &Manifest) -> Result<Target, String> {
    Target::from_manifest(m.target.as_deref(), &m.cpu_features)
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A new folder only this process created (never one that already existed), mode 0700.
pub(crate) fn private_dir() -> Result<PathBuf, std::io::Error> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for _ in 0..64 {
        let d = std::env::temp_dir().join(format!(
            "e2enc-{}-{}-{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        ));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        match b.create(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not create a private folder"))
}

impl Bundle {
    /// Verifies and loads the bundle in `dir`.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Bundle, RuntimeError> {
        let (manifest, files) = verify(dir)?;
        let blobs = Weights::from_bytes(&files["weights.safetensors"])
            .map_err(|m| bad(dir, format!("weights.safetensors: {m}")))?;
        let w = blob(dir, &blobs, "W", manifest.consts_f32, Tensor::as_f32)?;
        let i = blob(dir, &blobs, "I", manifest.consts_i32, Tensor::as_i32)?;

        let tmp =
            private_dir().map_err(|e| bad(dir, format!("cannot create a private folder: {e}")))?;
        let so = tmp.join("kernels.so");
        let loaded = (|| {
            if opts.rebuild {
                let c = tmp.join("kernels.c");
                std::fs::write(&c, &files["kernels.c"]).map_err(|e| bad(dir, e.to_string()))?;
                // This host's compiler ($CC or cc), never the manifest's `compiler.command`: no
                // checksum covers the manifest, so running a program it names would run anything.
                let cc = e2enc_codegen::compile::host_cc();
                let isa = target_of(&manifest).map_err(|e| bad(dir, e))?;
                e2enc_codegen::compile::run_cc(&cc, &c, &so, isa)
                    .map_err(|e| bad(dir, format!("rebuilding kernels.c failed: {e}")))?;
            } else {
                std::fs::write(&so, &files["kernels.so"]).map_err(|e| bad(dir, e.to_string()))?;
            }
            // SAFETY: the library's bytes were verified against the manifest's checksum (or
            // compiled here from verified C), and its initializers are the C compiler's own.
            unsafe { libloading::Library::new(&so) }
                .map_err(|e| bad(dir, format!("cannot load kernels.so: {e}")))
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        let lib = loaded?;
        let mut kernels = Vec::with_capacity(manifest.steps.len());
        for s in &manifest.steps {
            let sym = format!("{}\0", s.kernel);
            // SAFETY: every kernel of a bundle has the `KernelFn` signature (see codegen::emit).
            let f: libloading::Symbol<'_, KernelFn> = unsafe { lib.get(sym.as_bytes()) }
                .map_err(|_| bad(dir, format!("kernels.so lacks the kernel `{}`", s.kernel)))?;
            kernels.push(*f);
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            w,
            i,
            kernels,
            _lib: lib,
        })
    }
}

fn blob<T: Copy>(
    dir: &Path,
    blobs: &Weights,
    name: &str,
    len: usize,
    get: impl Fn(&Tensor) -> Option<&[T]>,
) -> Result<Vec<T>, RuntimeError> {
    let t = blobs
        .get(name)
        .ok_or_else(|| bad(dir, format!("weights.safetensors lacks `{name}`")))?;
    let v = get(t).ok_or_else(|| bad(dir, format!("`{name}` has the wrong dtype")))?;
    if v.len() != len {
        return Err(bad(
            dir,
            format!("`{name}` holds {} values, the manifest says {len}", v.len()),
        ));
    }
    Ok(v.to_vec())
}
