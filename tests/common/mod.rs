//! Helpers shared by the end-to-end tests that run the `e2enc` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `$E2ENC_HOME` of the e2enc processes the tests run (their local signing key), shared by
/// the test binaries (the key is created once, by whichever process comes first), never the real
/// home's.
pub fn home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2enc-cli-home")
}

/// `e2enc ARGS` with the tests' [`home`] and no trust settings from the caller's environment.
pub fn e2enc_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_e2enc"));
    c.args(args)
        .env("E2ENC_HOME", home())
        .env_remove("E2ENC_TRUSTED_KEYS")
        .env_remove("E2ENC_TRUST_UNSIGNED");
    c
}

/// Runs `e2enc ARGS` and waits for it.
pub fn e2enc(args: &[&str]) -> Output {
    e2enc_cmd(args).output().expect("the e2enc binary runs")
}

/// Signs the (edited) manifest of `bundle` again with the local key of [`home`], as its maker
/// would: for tests of what the runtime checks after the signature.
pub fn resign(bundle: &Path) {
    let key = e2enc_codegen::keys::SecretKey::load(&home().join("signing_key"))
        .expect("the tests' local key");
    let m = std::fs::read(bundle.join("manifest.json")).expect("read manifest.json");
    std::fs::write(bundle.join("manifest.sig"), key.sign_manifest(&m)).expect("write the sig");
}

/// Standard output and standard error, for assertion messages and content checks.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
