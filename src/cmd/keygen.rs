//! `e2enc keygen`: a new ed25519 key pair to sign bundles with.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use e2enc_codegen::keys;

/// Make a key pair to sign bundles with: KEYFILE and KEYFILE.pub
///
/// KEYFILE is the secret key (mode 0600), KEYFILE.pub the public one.
/// `e2enc compile --sign KEYFILE` signs a bundle with it; a machine that should run such bundles
/// trusts the key by listing KEYFILE.pub's line in its trusted-keys file
/// (~/.config/e2enc/trusted_keys, or a file named by --trusted-keys or $E2ENC_TRUSTED_KEYS).
/// Without a key of your own, `e2enc compile` signs with your local key, which only this
/// machine trusts. An existing file is never replaced.
///
/// Example: e2enc keygen -o team.key && cat team.key.pub >> ~/.config/e2enc/trusted_keys
#[derive(clap::Args)]
pub struct Args {
    /// The secret key file to create (the public key goes to KEYFILE.pub).
    #[arg(short, long, value_name = "KEYFILE")]
    out: PathBuf,
    /// A comment for the public key line (default: the key file's name).
    #[arg(long)]
    comment: Option<String>,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let comment = a.comment.clone().unwrap_or_else(|| {
        a.out
            .file_name()
            .map_or_else(|| "e2enc key".into(), |n| n.to_string_lossy().into_owned())
    });
    if comment.contains(['\n', '\r']) {
        return Err(anyhow!("the comment must be one line"));
    }
    let key = keys::write_new(&a.out, &comment).map_err(|e| anyhow!(e))?;
    let pubp = keys::pub_path(&a.out);
    eprintln!(
        "wrote {} (secret, keep it private) and {} (public key {})",
        a.out.display(),
        pubp.display(),
        key.public().fingerprint()
    );
    eprintln!(
        "sign with: e2enc compile MODEL -o BUNDLE --sign {}",
        a.out.display()
    );
    eprintln!(
        "trust it where bundles run: cat {} >> ~/.config/e2enc/trusted_keys",
        pubp.display()
    );
    Ok(ExitCode::SUCCESS)
}
