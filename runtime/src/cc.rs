//! The host C compiler, for rebuilding a bundle's `kernels.c` at load (`--rebuild`) and for
//! codegen's own compilations: `$CC` or `cc` (never a program a manifest names), called with the
//! flags of the bundle's [`Target`] ([`Target::cflags`]). Also the private scratch folders the
//! compiled libraries are written to before loading.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::target::Target;

/// The C compiler command: `$CC`, or `cc`.
pub fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// A failed C compilation: the command line and the first 40 lines of its diagnostics.
#[derive(Debug, thiserror::Error)]
#[error("the C compiler failed ({command}):\n{stderr}")]
pub struct CcError {
    pub command: String,
    pub stderr: String,
}

/// Compiles `c_file` into the shared library `so_file` with `cc` and the flags of `target`.
pub fn compile(cc: &str, c_file: &Path, so_file: &Path, target: Target) -> Result<(), CcError> {
    let flags = target.cflags();
    let mut cmd = Command::new(cc);
    cmd.args(&flags)
        .arg("-o")
        .arg(so_file)
        .arg(c_file)
        .arg("-lm");
    let shown = format!(
        "{cc} {} -o {} {}",
        flags.join(" "),
        so_file.display(),
        c_file.display()
    );
    let out = cmd.output().map_err(|e| CcError {
        command: shown.clone(),
        stderr: if e.kind() == std::io::ErrorKind::NotFound {
            match target.cross_compiler() {
                Some(x) if x == cc => format!(
                    "`{cc}` is not installed: building kernels for {target} on this host needs a C cross compiler (Debian: apt-get install gcc-{}-linux-gnu), or name one with --cc",
                    target.arch().unwrap_or("?")
                ),
                _ => format!("`{cc}` was not found: install a C compiler, or set $CC or --cc"),
            }
        } else {
            e.to_string()
        },
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().take(40).collect();
        return Err(CcError {
            command: shown,
            stderr: tail.join("\n"),
        });
    }
    Ok(())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A new folder only this process created (never one that already existed), mode 0700.
pub fn private_dir() -> Result<PathBuf, std::io::Error> {
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
