//! Loading a kernel bundle: verify first, load code last.
//!
//! Order of checks: the bundle's signature (`manifest.sig`) verifies over the exact bytes of
//! `manifest.json` and its key is trusted ([`crate::sign`], which also states the threat model),
//! unless the caller opts in to unsigned bundles ([`LoadOptions::trust_unsigned`]); the manifest
//! parses, has the right format and version and names exactly the
//! bundle's files by plain names (nothing outside the folder); every file's sha256 matches; the
//! host has the CPU features the kernels need; the constant blobs have the sizes the manifest
//! says. Only then is `kernels.so` loaded, and from a private copy of the very bytes that were
//! hashed, so the library cannot change between verification and loading. `rebuild` recompiles
//! the (verified) `kernels.c` with this host's compiler (`$CC` or `cc`, never a program the
//! manifest names) and the bundle flags instead of loading the shipped library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::cc::private_dir;
use crate::format::{
    files_of, is_plain_file_name, plan_digest, sha256_hex, source_file, Manifest, FORMAT, VERSION,
};
use crate::pool::KernelFn;
use crate::sign::PublicKey;
use crate::target::Target;
use crate::RuntimeError;

/// How to load a bundle. The default verifies signatures against the keys the environment
/// trusts (see [`crate::sign`]).
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Recompile kernels.c on this host instead of loading the shipped kernels.so.
    pub rebuild: bool,
    /// The trusted-keys file (default: `$E2ENC_TRUSTED_KEYS`, else `trusted_keys` in the
    /// [`crate::sign::config_dir`]); the local key is trusted besides.
    pub trusted_keys: Option<PathBuf>,
    /// Load a bundle without a trusted signature (unsigned, or signed by an unknown key); also set
    /// by `E2ENC_TRUST_UNSIGNED=1`. Checksums are still verified; a signature that does not verify
    /// is still refused.
    pub trust_unsigned: bool,
    /// Compile a CUDA bundle's kernels for this CPU's host emulation ([`Bundle::emulated`]).
    pub emulate: bool,
}

/// A verified, loaded bundle.
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The constant blobs (moved into the engine's aligned storage by `Engine::new`).
    pub w: Vec<f32>,
    pub i: Vec<i32>,
    /// The kernels: loaded C functions, or the CUDA files a GPU device (or the emulation) loads.
    pub code: Code,
    /// The key that signed the bundle (`None`: unsigned, loaded with `trust_unsigned`).
    pub signed_by: Option<PublicKey>,
}

/// The verified kernels of a bundle.
pub enum Code {
    /// C kernels of `kernels.so`, one per step.
    Cpu {
        kernels: Vec<KernelFn>,
        _lib: libloading::Library,
    },
    /// CUDA kernels (verified against the manifest's checksums; nothing is loaded until a
    /// device takes them).
    Cuda {
        /// `kernels.cu`, the source of both and of the host emulation.
        source: String,
        /// `kernels.cubin`, for the manifest's `cuda.sm`.
        cubin: Vec<u8>,
        /// `kernels.ptx`, which newer GPUs compile at load.
        ptx: String,
    },
    /// CUDA kernels compiled for this CPU by the host emulation ([`Bundle::emulated`]).
    Emulated(crate::emulate::Emulation),
}

fn bad(dir: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Bundle {
        path: dir.to_path_buf(),
        msg: msg.into(),
    }
}

pub use crate::target::host_has;

/// [`verify_with`] the default [`LoadOptions`] (the environment's trusted keys).
pub fn verify(dir: &Path) -> Result<(Manifest, BTreeMap<String, Vec<u8>>), RuntimeError> {
    verify_with(dir, &LoadOptions::default()).map(|(m, f, _)| (m, f))
}

/// The files of a verified bundle by name.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Checks the signature, the manifest and every file it names; returns the manifest, the files'
/// bytes and the signing key.
pub fn verify_with(
    dir: &Path,
    opts: &LoadOptions,
) -> Result<(Manifest, Files, Option<PublicKey>), RuntimeError> {
    let mpath = dir.join("manifest.json");
    let text = crate::format::read_bounded(&mpath, crate::format::MAX_MANIFEST_BYTES)
        .map_err(|e| bad(dir, format!("cannot read manifest.json: {e}")))?;
    let signed_by = crate::sign::check(
        dir,
        &text,
        opts.trusted_keys.as_deref(),
        opts.trust_unsigned || crate::sign::trust_unsigned_from_env(),
    )
    .map_err(|e| bad(dir, e))?;
    let manifest: Manifest = serde_json::from_slice(&text)
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
    let cuda = manifest.cuda.is_some();
    let files = files_of(cuda);
    for name in manifest.files.keys() {
        if !is_plain_file_name(name) {
            return Err(bad(
                dir,
                format!("manifest names `{name}`, which is not a file inside the bundle"),
            ));
        }
        if !files.contains(&name.as_str()) {
            return Err(bad(
                dir,
                format!("manifest names an unexpected file `{name}`"),
            ));
        }
    }
    let mut bytes = BTreeMap::new();
    for &f in files {
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
    // the (checksummed) kernels were generated for: kernels.c (.cu) carries its digest.
    let digest = plan_digest(&manifest);
    let marker = format!("/* e2enc-plan: {digest} */");
    let src = source_file(cuda);
    if !String::from_utf8_lossy(&bytes[src]).contains(&marker) {
        return Err(bad(dir, format!("manifest.json does not match {src} (its plan was modified); refusing to load the bundle")));
    }
    // Checked arithmetic: these numbers come from the file (found by fuzzing: a shape whose
    // product overflowed panicked here).
    for p in manifest.inputs.iter().chain(&manifest.outputs) {
        if !p.view.elem.is_f32() {
            return Err(bad(
                dir,
                format!(
                    "the view of `{}` is not f32 (inputs and outputs are)",
                    p.name
                ),
            ));
        }
        if p.view
            .checked_end()
            .is_none_or(|e| e > manifest.arena_elems)
        {
            return Err(bad(
                dir,
                format!("the view of `{}` lies outside the arena", p.name),
            ));
        }
        let elems = p.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if elems.is_none_or(|n| n == 0) {
            return Err(bad(
                dir,
                format!(
                    "the shape {:?} of `{}` is empty or too large",
                    p.shape, p.name
                ),
            ));
        }
    }
    let target = Target::from_manifest(manifest.target.as_deref(), &manifest.cpu_features)
        .map_err(|e| bad(dir, format!("manifest.json: {e}")))?;
    if target.is_cuda() != cuda {
        return Err(bad(
            dir,
            format!(
                "manifest.json: target {target} {} a `cuda` section",
                if cuda { "has" } else { "lacks" }
            ),
        ));
    }
    if let Some(c) = &manifest.cuda {
        if target.sm() != Some(c.sm) {
            return Err(bad(
                dir,
                format!(
                    "manifest.json: target {target} with kernels for sm_{}",
                    c.sm
                ),
            ));
        }
        if manifest.steps.iter().any(|s| s.launch.is_none()) {
            return Err(bad(dir, "manifest.json: a CUDA kernel step has no launch"));
        }
        // The GPU itself (driver, architecture, memory) is checked by the device that loads it.
        return Ok((manifest, bytes, signed_by));
    }
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
            Some(false) if !target.cpu_features().contains(&feat.as_str()) => {
                let p = manifest.precision.as_deref().unwrap_or("f32");
                if p == "int8" && (feat == "avx512bf16" || feat == "avx512vbmi") {
                    return Err(bad(dir, format!("this CPU lacks `{feat}`, which an int8 bundle storing its activations as bf16 needs (`--precision int8`'s default); recompile with `e2enc compile --target {target} --precision int8 --activations f32` (int8 convs with f32 activations need avx512_vnni alone), or `--precision f32`")));
                }
                return Err(bad(dir, format!("this CPU lacks `{feat}`, which the kernels of `--precision {p}` need (they were compiled for CPUs with it); recompile without it: `e2enc compile --target {target} --precision f32`, or `--target native`")));
            }
            Some(false) => {
                return Err(bad(dir, format!("this CPU lacks `{feat}`, which the kernels of `--target {target}` need; {recompile}")))
            }
            None => return Err(bad(dir, format!("the bundle needs an unknown CPU feature `{feat}`"))),
        }
    }
    Ok((manifest, bytes, signed_by))
}

/// The target a verified manifest names.
fn target_of(m: &Manifest) -> Result<Target, String> {
    Target::from_manifest(m.target.as_deref(), &m.cpu_features)
}

impl Bundle {
    /// Verifies and loads the bundle in `dir`.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Bundle, RuntimeError> {
        let (manifest, mut files, signed_by) = verify_with(dir, opts)?;
        let blobs = SafeTensors::deserialize(&files["weights.safetensors"]).map_err(|e| {
            bad(
                dir,
                format!("weights.safetensors: not a valid safetensors file: {e}"),
            )
        })?;
        let w = blob(
            dir,
            &blobs,
            "W",
            manifest.consts_f32,
            Dtype::F32,
            f32::from_le_bytes,
        )?;
        let i = blob(
            dir,
            &blobs,
            "I",
            manifest.consts_i32,
            Dtype::I32,
            i32::from_le_bytes,
        )?;

        if manifest.cuda.is_none() && opts.emulate {
            return Err(not_cuda(dir, &manifest));
        }
        if manifest.cuda.is_some() {
            let text = |f: &str, b: Vec<u8>| {
                String::from_utf8(b).map_err(|_| bad(dir, format!("{f} is not UTF-8 text")))
            };
            let source = text("kernels.cu", files.remove("kernels.cu").unwrap_or_default())?;
            let ptx = text(
                "kernels.ptx",
                files.remove("kernels.ptx").unwrap_or_default(),
            )?;
            let cubin = files.remove("kernels.cubin").unwrap_or_default();
            let b = Bundle {
                dir: dir.to_path_buf(),
                manifest,
                w,
                i,
                code: Code::Cuda { source, cubin, ptx },
                signed_by,
            };
            return if opts.emulate { b.emulated() } else { Ok(b) };
        }
        let tmp =
            private_dir().map_err(|e| bad(dir, format!("cannot create a private folder: {e}")))?;
        let so = tmp.path().join("kernels.so");
        let loaded = (|| {
            if opts.rebuild {
                let c = tmp.path().join("kernels.c");
                std::fs::write(&c, &files["kernels.c"]).map_err(|e| bad(dir, e.to_string()))?;
                // This host's compiler ($CC or cc), never the manifest's `compiler.command`: a
                // signer vouches for the kernels, not for running a program named on its host.
                let isa = target_of(&manifest).map_err(|e| bad(dir, e))?;
                crate::cc::compile(&crate::cc::compiler(), &c, &so, isa)
                    .map_err(|e| bad(dir, format!("rebuilding kernels.c failed: {e}")))?;
            } else {
                std::fs::write(&so, &files["kernels.so"]).map_err(|e| bad(dir, e.to_string()))?;
            }
            // SAFETY: the library's bytes were verified against the manifest's checksum (or
            // compiled here from verified C), and its initializers are the C compiler's own.
            unsafe { crate::cc::load_library(&so) }
                .map_err(|e| bad(dir, format!("cannot load kernels.so: {e}")))
        })();
        drop(tmp);
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
            code: Code::Cpu { kernels, _lib: lib },
            signed_by,
        })
    }
}

impl Bundle {
    /// This CUDA bundle with its kernels compiled for the host emulation
    /// ([`crate::emulate`]): the CPU engine then runs it block by block. A CPU bundle is
    /// refused.
    pub fn emulated(mut self) -> Result<Bundle, RuntimeError> {
        let source = match &self.code {
            Code::Cuda { source, .. } => source,
            Code::Emulated(_) => return Ok(self),
            Code::Cpu { .. } => return Err(not_cuda(&self.dir, &self.manifest)),
        };
        let emu = crate::emulate::Emulation::build(&self.dir, source, &self.manifest.steps)?;
        self.code = Code::Emulated(emu);
        Ok(self)
    }
}

/// The refusal of `--emulate` for a CPU bundle.
fn not_cuda(dir: &Path, m: &Manifest) -> RuntimeError {
    bad(
        dir,
        format!(
            "--emulate runs CUDA bundles; this one is for the CPU target {} (run it without \
             --emulate)",
            m.target.as_deref().unwrap_or("x86-avx2")
        ),
    )
}

fn blob<T>(
    dir: &Path,
    blobs: &SafeTensors<'_>,
    name: &str,
    len: usize,
    dtype: Dtype,
    decode: fn([u8; 4]) -> T,
) -> Result<Vec<T>, RuntimeError> {
    let t = blobs
        .tensor(name)
        .map_err(|_| bad(dir, format!("weights.safetensors lacks `{name}`")))?;
    if t.dtype() != dtype {
        return Err(bad(dir, format!("`{name}` has the wrong dtype")));
    }
    let bytes = t.data();
    if bytes.len() != len * 4 {
        return Err(bad(
            dir,
            format!(
                "`{name}` holds {} values, the manifest says {len}",
                bytes.len() / 4
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| decode([b[0], b[1], b[2], b[3]]))
        .collect())
}
