//! Bundle signatures: who made a bundle, checked before any of its code is loaded.
//!
//! `manifest.json` holds the sha256 of every other file of a bundle, so a signature over its exact
//! bytes covers the whole bundle. `e2enc compile` writes `manifest.sig` next to it: an ed25519
//! signature of `CONTEXT || manifest.json` and the public key that made it. Before a bundle's
//! `kernels.so` is loaded (or its `kernels.c` rebuilt), [`check`] requires that signature to verify
//! and its key to be trusted.
//!
//! Trusted keys: the user's local key (`signing_key` in the [`config_dir`], which `e2enc compile`
//! creates on first use and signs with when given no `--sign KEYFILE`), plus the public key lines
//! of one trusted-keys file: the one named by `--trusted-keys FILE` ([`crate::bundle::LoadOptions`]),
//! else `$E2ENC_TRUSTED_KEYS`, else `trusted_keys` in the config folder, if it exists. A bundle
//! without a signature or signed by another key is refused unless the caller opts in
//! (`--trust-unsigned`, or `E2ENC_TRUST_UNSIGNED=1`, which the C ABI reads too); a signature that
//! does not verify is refused always.
//!
//! Threat model. Protected: a bundle changed after it was signed (any file: the manifest holds
//! their checksums) and a bundle made or re-signed by someone whose key the user does not trust
//! (a bundle from the internet whose kernels.so carries a library constructor, which would run at
//! dlopen). Not protected: an attacker who can write the user's config folder (the local key, the
//! trusted-keys file) or the environment of the process, or who controls the process itself; a
//! trusted signer who signs a malicious bundle; replaying an older bundle signed by a trusted key.
//!
//! Formats (text, one item a line, `#` comments in key files):
//! - public key: `e2enc-ed25519 HEX [comment]`, HEX the 32 key bytes; fingerprint
//!   `SHA256:` and the first 32 hex digits of the key bytes' sha256 ([`PublicKey::fingerprint`]);
//! - secret key file (mode 0600): `e2enc-ed25519-secret HEX` (the 32-byte seed) and the public
//!   key line;
//! - `manifest.sig`: `e2enc-signature-v1`, `key e2enc-ed25519 HEX`, `signature HEX` (64 bytes).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::format::{read_bounded, sha256_hex, MAX_KEY_FILE_BYTES};

/// The signature file of a bundle.
pub const SIG_FILE: &str = "manifest.sig";
/// The local key's file name in the config folder.
pub const LOCAL_KEY: &str = "signing_key";
/// The default trusted-keys file's name in the config folder.
pub const TRUSTED_KEYS: &str = "trusted_keys";
/// What is signed: this prefix, then the exact bytes of manifest.json.
pub const CONTEXT: &[u8] = b"e2enc bundle manifest v1\0";
const KEY_TAG: &str = "e2enc-ed25519";
const SECRET_TAG: &str = "e2enc-ed25519-secret";
const SIG_TAG: &str = "e2enc-signature-v1";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, p) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok()?;
    }
    Some(out)
}

/// An ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses `e2enc-ed25519 HEX [comment]`.
    pub fn parse(line: &str) -> Result<PublicKey, String> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next().and_then(unhex::<32>)) {
            (Some(KEY_TAG), Some(k)) => Ok(PublicKey(k)),
            _ => Err(format!(
                "not a public key line (`{KEY_TAG}` and 64 hex digits): `{}`",
                line.trim()
            )),
        }
    }

    /// `e2enc-ed25519 HEX`.
    pub fn line(&self) -> String {
        format!("{KEY_TAG} {}", hex(&self.0))
    }

    /// `SHA256:` and the first 32 hex digits of the sha256 of the key bytes.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", &sha256_hex(&self.0)[..32])
    }
}

/// An ed25519 secret key (the 32-byte seed).
pub struct SecretKey(SigningKey);

impl SecretKey {
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The text of a secret key file: the secret line, then the public key line with `comment`.
    pub fn file_text(&self, comment: &str) -> String {
        format!(
            "# e2enc signing key (ed25519): keep it secret; share the .pub file instead\n{SECRET_TAG} {}\n{} {comment}\n",
            hex(self.0.as_bytes()),
            self.public().line()
        )
    }

    /// Parses a secret key file's text.
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next() == Some(SECRET_TAG) {
                return w
                    .next()
                    .and_then(unhex::<32>)
                    .map(SecretKey::from_seed)
                    .ok_or_else(|| format!("a malformed `{SECRET_TAG}` line"));
            }
        }
        Err(format!("no `{SECRET_TAG}` line: not a secret key file (the .pub file holds only the public key)"))
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<SecretKey, String> {
        let text = read_key_text(path)
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
        SecretKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The text of `manifest.sig` for a manifest.json of these bytes.
    pub fn sign_manifest(&self, manifest: &[u8]) -> String {
        let sig = self.0.sign(&[CONTEXT, manifest].concat());
        format!(
            "{SIG_TAG}\nkey {}\nsignature {}\n",
            self.public().line(),
            hex(&sig.to_bytes())
        )
    }
}

static CONFIG_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sets the config folder for this process, as `$E2ENC_HOME` would (for embedders and tests, which
/// should not change the environment of a running process). The first call wins; returns the
/// folder in use.
pub fn set_config_dir(dir: &Path) -> &'static Path {
    CONFIG_DIR.get_or_init(|| dir.to_path_buf())
}

/// e2enc's per-user folder for keys: [`set_config_dir`], else `$E2ENC_HOME`, else
/// `$XDG_CONFIG_HOME/e2enc`, else `~/.config/e2enc`; `None` when none of these is set.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(d) = CONFIG_DIR.get() {
        return Some(d.clone());
    }
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("E2ENC_HOME")
        .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("e2enc")))
        .or_else(|| var("HOME").map(|d| d.join(".config/e2enc")))
}

/// Where the local key lives (`signing_key` in the [`config_dir`]).
pub fn local_key_path() -> Option<PathBuf> {
    config_dir().map(|d| d.join(LOCAL_KEY))
}

/// Whether `E2ENC_TRUST_UNSIGNED=1` is set.
pub fn trust_unsigned_from_env() -> bool {
    std::env::var("E2ENC_TRUST_UNSIGNED").is_ok_and(|v| v == "1")
}

/// A key file's text, bounded as [`read_bounded`] (a FIFO or `/dev/zero` named as a key file is
/// refused, not read forever).
fn read_key_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, MAX_KEY_FILE_BYTES)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads a trusted-keys file: one public key line per key; blank lines and `#` comments skipped.
pub fn read_trusted_keys(path: &Path) -> Result<Vec<PublicKey>, String> {
    let text = read_key_text(path)
        .map_err(|e| format!("cannot read the trusted-keys file {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| PublicKey::parse(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}

/// The keys trusted here, and a description of where they came from (for messages).
pub fn trusted_keys(explicit: Option<&Path>) -> Result<(Vec<PublicKey>, String), String> {
    let mut keys = Vec::new();
    let mut from = Vec::new();
    if let Some(p) = local_key_path().filter(|p| p.exists()) {
        keys.push(SecretKey::load(&p)?.public());
        from.push(format!("the local key {}", p.display()));
    }
    let file = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => match std::env::var_os("E2ENC_TRUSTED_KEYS").filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => config_dir()
                .map(|d| d.join(TRUSTED_KEYS))
                .filter(|p| p.exists()),
        },
    };
    if let Some(f) = file {
        keys.extend(read_trusted_keys(&f)?);
        from.push(format!("the keys in {}", f.display()));
    }
    let from = if from.is_empty() {
        "none".to_string()
    } else {
        from.join(", ")
    };
    Ok((keys, from))
}

/// Parses `manifest.sig`.
fn parse_sig(text: &str) -> Option<(PublicKey, [u8; 64])> {
    let mut lines = text.lines();
    if lines.next()? != SIG_TAG {
        return None;
    }
    let key = PublicKey::parse(lines.next()?.strip_prefix("key ")?).ok()?;
    let sig = unhex::<64>(lines.next()?.strip_prefix("signature ")?)?;
    lines.all(|l| l.trim().is_empty()).then_some((key, sig))
}

/// Checks the signature of the bundle in `dir` whose manifest.json holds `manifest`: it must
/// verify, and its key be trusted (keys of [`trusted_keys`]`(trusted_file)`) unless
/// `trust_unsigned`. Returns the signing key (`None`: unsigned, accepted by `trust_unsigned`).
pub fn check(
    dir: &Path,
    manifest: &[u8],
    trusted_file: Option<&Path>,
    trust_unsigned: bool,
) -> Result<Option<PublicKey>, String> {
    let way_out = "pass --trust-unsigned (E2ENC_TRUST_UNSIGNED=1 for the C ABI and scripts) to load it anyway, only if you trust whoever made it";
    let text = match read_bounded(&dir.join(SIG_FILE), MAX_KEY_FILE_BYTES) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if trust_unsigned {
                return Ok(None);
            }
            return Err(format!(
                "it is not signed (no {SIG_FILE}: made before bundles were signed, or by someone who did not sign it), so nothing says who made its kernels; recompile the model with `e2enc compile` (which signs it), or {way_out}"
            ));
        }
        Err(e) => return Err(format!("cannot read {SIG_FILE}: {e}")),
    };
    let (key, sig) = std::str::from_utf8(&text)
        .ok()
        .and_then(parse_sig)
        .ok_or_else(|| format!("{SIG_FILE} is malformed; refusing to load the bundle"))?;
    let ok = VerifyingKey::from_bytes(&key.0).is_ok_and(|vk| {
        vk.verify_strict(&[CONTEXT, manifest].concat(), &Signature::from_bytes(&sig))
            .is_ok()
    });
    if !ok {
        return Err(format!(
            "the signature in {SIG_FILE} (key {}) does not verify: manifest.json or {SIG_FILE} was modified after signing; refusing to load the bundle",
            key.fingerprint()
        ));
    }
    let (trusted, from) = trusted_keys(trusted_file)?;
    if trusted.contains(&key) || trust_unsigned {
        return Ok(Some(key));
    }
    let file = config_dir().map_or_else(
        || "a trusted-keys file".to_string(),
        |d| d.join(TRUSTED_KEYS).display().to_string(),
    );
    Err(format!(
        "signed by key {}, which is not trusted here (trusted: {from}); if you trust whoever made this bundle, add its key line `{}` to {file} (or to a file named by --trusted-keys FILE or $E2ENC_TRUSTED_KEYS), or recompile the model on this machine, or {way_out}",
        key.fingerprint(),
        key.line()
    ))
}
