//! One module per subcommand.

pub mod bench;
pub mod check;
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

use std::path::PathBuf;

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
        }
    }
}

/// Worker threads when the user names none: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads a command accepts (`--threads`): far more than any machine e2enc runs on
/// has cores, far fewer than would exhaust the process's thread limit.
pub const MAX_THREADS: usize = 1024;

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
