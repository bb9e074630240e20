//! One module per subcommand.

pub mod bench;
pub mod check;
pub mod compare;
pub mod compile;
pub mod demo;
pub mod evaluate;
pub mod init;
pub mod inspect;
pub mod keygen;
pub mod optimize;
pub mod run;
pub mod segment;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use e2enc_runtime::bundle::LoadOptions;

/// Which bundles to trust, for the commands that load one (see README, "Bundle signing").
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// Also trust bundles signed by the keys in FILE: one public key line per key, as in a
    /// KEYFILE.pub from `e2enc keygen` (`e2enc-ed25519 HEX [comment]`), `#` comments. Default:
    /// $E2ENC_TRUSTED_KEYS, else ~/.config/e2enc/trusted_keys ($XDG_CONFIG_HOME, $E2ENC_HOME) if
    /// it exists. Your own local key (the one `e2enc compile` signs with) is always trusted.
    #[arg(long, value_name = "FILE")]
    pub trusted_keys: Option<PathBuf>,
    /// Load the bundle even without a trusted signature: unsigned (made before bundles were
    /// signed) or signed by a key not trusted here. Checksums are still verified, but its
    /// kernels.so is foreign code that runs as you: only for bundles whose maker you trust.
    /// Same as E2ENC_TRUST_UNSIGNED=1. Better: recompile the model, or trust its key.
    #[arg(long)]
    pub trust_unsigned: bool,
}

impl TrustArgs {
    /// The load options of these flags.
    pub fn load_options(&self, rebuild: bool) -> LoadOptions {
        LoadOptions {
            rebuild,
            trusted_keys: self.trusted_keys.clone(),
            trust_unsigned: self.trust_unsigned,
            emulate: false,
        }
    }
}

pub use e2enc::device::{engine_on, parse_device, DeviceArg, MAX_THREADS};

/// Worker threads when the user names none: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses `--threads`: 0 (where allowed: all cores) up to [`MAX_THREADS`].
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of threads"))?;
    if n > MAX_THREADS {
        return Err(format!(
            "{n} threads is more than the limit of {MAX_THREADS} (this machine has {} cores)",
            default_threads()
        ));
    }
    Ok(n)
}

/// Where `p` points: the canonical path of an existing file, else its canonical folder joined
/// with its name (so `a/../b.nii` and a symlink to an input are seen for what they are).
pub fn identity(p: &Path) -> Result<PathBuf> {
    if p.exists() {
        return p
            .canonicalize()
            .with_context(|| format!("resolving {}", p.display()));
    }
    let name = p
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", p.display()))?;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(parent
        .canonicalize()
        .with_context(|| format!("resolving {}", parent.display()))?
        .join(name))
}

/// Whether two resolved paths are one file: the same path, or (hard links) the same inode.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuses to write the output `out` (given as `flag`) when it exists and `overwrite` is off, or
/// when it is one of `inputs` (never allowed).
pub fn check_output(flag: &str, out: &Path, overwrite: bool, inputs: &[&Path]) -> Result<()> {
    let id = identity(out)?;
    for i in inputs {
        if i.exists() && same_file(&id, &identity(i)?) {
            bail!(
                "{flag} {} is the input {}: refusing to overwrite an input",
                out.display(),
                i.display()
            );
        }
    }
    if out.exists() && !overwrite {
        bail!("{} exists; pass --overwrite to replace it", out.display());
    }
    Ok(())
}
