//! The host C compiler, for rebuilding a bundle's `kernels.c` at load (`--rebuild`) and for
//! codegen's own compilations: `$CC` or `cc` (never a program a manifest names), called with the
//! flags of the bundle's [`Target`] ([`Target::cflags`]). Also the private scratch folders the
//! compiled libraries are written to before loading.

use std::path::Path;
use std::process::Command;

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

/// A new folder only this process created (never one that already existed), mode 0700, named
/// `e2enc-PID-XXXXXX` in the temporary folder; removed with what it holds when the returned
/// handle is dropped (also on error paths).
pub fn private_dir() -> Result<tempfile::TempDir, std::io::Error> {
    let prefix = format!("e2enc-{}-", std::process::id());
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o700));
    }
    b.tempdir()
}

/// Loads a compiled kernel library, resolving every symbol it uses now (`RTLD_NOW`): a library
/// naming a function nothing defines is refused here, with the name, instead of killing the
/// process at its first call.
///
/// # Safety
/// As [`libloading::Library::new`]: the library's initializers run.
pub unsafe fn load_library(so: &Path) -> Result<libloading::Library, libloading::Error> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        unsafe { Library::open(Some(so), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
    }
    #[cfg(not(unix))]
    {
        unsafe { libloading::Library::new(so) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A library calling a function nothing defines: refused at load with the name (lazy
    /// binding loaded it, and the process died at the call), and bundle flags refuse to build
    /// it in the first place.
    #[test]
    fn undefined_functions_fail_the_build_or_the_load() {
        let dir = private_dir().unwrap();
        let c = dir.path().join("k.c");
        std::fs::write(&c, "void e2_missing(int);\nvoid k(void) { e2_missing(1); }\nvoid j(void) { e2_nowhere(2); }\n").unwrap();
        let so = dir.path().join("k.so");
        let err = compile(&compiler(), &c, &so, Target::Portable).unwrap_err();
        assert!(err.stderr.contains("e2_nowhere"), "{err}");
        // Declared but defined nowhere: builds (a shared library may leave symbols to others).
        std::fs::write(
            &c,
            "void e2_missing(int);\nvoid k(void) { e2_missing(1); }\n",
        )
        .unwrap();
        compile(&compiler(), &c, &so, Target::Portable).unwrap();
        let e =
            unsafe { load_library(&so) }.expect_err("loaded a library with an undefined symbol");
        assert!(e.to_string().contains("e2_missing"), "{e}");
    }
}
