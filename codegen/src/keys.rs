//! Signing keys: new key pairs (`e2enc keygen`) and the local key `compile` signs with when given
//! no key. The formats, the trusted keys and the threat model are the runtime's
//! ([`e2enc_runtime::sign`]); this side makes keys, from the operating system's randomness.
//!
//! Key files are never replaced: a new file is written under a temporary name in the same folder
//! (mode 0600) and hard-linked to its name, which fails if the name exists. So the local key is
//! created once even when parallel processes or threads compile at the same time: the first link
//! wins, the others read the winner's key, and nobody sees a half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use e2enc_runtime::sign::{local_key_path, PublicKey, SecretKey};

/// A fresh key from the operating system's random source.
pub fn generate() -> Result<SecretKey, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(SecretKey::from_seed(seed))
}

/// Writes `contents` to the new file `path` with `mode`; fails with `AlreadyExists` if `path`
/// exists. The file appears whole or not at all.
pub fn create_new(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "key".to_string(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{name}.tmp{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    let written = (|| {
        let mut f = o.open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    written
}

/// Writes a new key pair: the secret key to `path` (mode 0600) and the public key line to
/// `path.pub`. Refuses to replace either file.
pub fn write_new(path: &Path, comment: &str) -> Result<SecretKey, String> {
    let pubp = pub_path(path);
    for p in [path, pubp.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(format!(
                "{} exists; e2enc keygen never replaces a key file (choose another name, or remove it yourself)",
                p.display()
            ));
        }
    }
    let key = generate()?;
    create_new(path, &key.file_text(comment), 0o600).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "{} exists; e2enc keygen never replaces a key file",
            path.display()
        ),
        _ => format!("cannot write {}: {e}", path.display()),
    })?;
    let line = format!("{} {comment}\n", key.public().line());
    if let Err(e) = create_new(&pubp, &line, 0o644) {
        let _ = std::fs::remove_file(path);
        return Err(format!("cannot write {}: {e}", pubp.display()));
    }
    Ok(key)
}

/// `KEYFILE.pub`.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// The local key (`signing_key` in the runtime's config folder, `$E2ENC_HOME` or
/// `~/.config/e2enc`), created on first use; returns it and its path.
pub fn local_key() -> Result<(SecretKey, PathBuf), String> {
    let path = local_key_path().ok_or(
        "no folder for the local signing key: set $E2ENC_HOME (or $HOME), or pass --sign KEYFILE",
    )?;
    if path.exists() {
        return Ok((SecretKey::load(&path)?, path));
    }
    if let Some(dir) = path.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let key = generate()?;
    let user = std::env::var("USER").unwrap_or_else(|_| "this user".into());
    let comment = format!("e2enc local key of {user}");
    match create_new(&path, &key.file_text(&comment), 0o600) {
        Ok(()) => {
            // A copy of the public key to hand out; the runtime trusts the key file itself.
            let line = format!("{} {comment}\n", key.public().line());
            let _ = create_new(&pub_path(&path), &line, 0o644);
            Ok((key, path))
        }
        // Another process or thread made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((SecretKey::load(&path)?, path))
        }
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}
