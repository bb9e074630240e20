//! Signed bundles: `e2enc keygen`, `compile --sign`, and the runtime's refusal of bundles without
//! a trusted signature BEFORE any of their code is loaded.
//!
//! "Before any code is loaded" is proved with a foreign library whose constructor (run by dlopen)
//! creates a marker file: put in as kernels.so with its sha256 fixed up in the manifest, it must
//! be refused with no marker; a positive control shows the same library does create the marker
//! when the loader is told to trust an unsigned bundle. The in-process tests use the tests' own
//! local key ([`common::home`]), never the real home's.

#[path = "bundle_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2enc_codegen::keys::{self, PublicKey, SecretKey};
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::format::sha256_hex;
use serde_json::Value;

fn e2enc(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(args)
        .env("E2ENC_HOME", home)
        .env_remove("E2ENC_TRUSTED_KEYS")
        .env_remove("E2ENC_TRUST_UNSIGNED")
        .output()
        .expect("run e2enc")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A copy of the shared (signed) bundle.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let t = common::tempdir();
    let d = t.path().join("bundle");
    common::copy_dir(common::shared_ch1(), &d);
    (t, d)
}

fn flip_byte(path: &Path) {
    let mut b = std::fs::read(path).expect("read");
    let at = b.len() / 2;
    b[at] ^= 0x01;
    std::fs::write(path, b).expect("write");
}

/// The tests' local key (which signs `shared_ch1`).
fn local_public() -> PublicKey {
    common::scratch();
    keys::local_key().expect("the local key").0.public()
}

/// Loads `dir` with `opts`, expecting a refusal that names the bundle and mentions every `want`.
fn refused(dir: &Path, opts: &LoadOptions, want: &[&str], what: &str) -> String {
    let msg = Bundle::load(dir, opts)
        .err()
        .unwrap_or_else(|| panic!("{what}: the bundle loaded"))
        .to_string();
    assert!(
        msg.contains(&dir.display().to_string()),
        "{what}: `{msg}` does not name the bundle"
    );
    for w in want {
        assert!(msg.contains(w), "{what}: `{msg}` does not mention `{w}`");
    }
    msg
}

fn opts(rebuild: bool, trust_unsigned: bool) -> LoadOptions {
    LoadOptions {
        rebuild,
        trust_unsigned,
        ..LoadOptions::default()
    }
}

/// A shared library whose constructor creates `marker` (it has no kernels).
fn evil_library(dir: &Path, marker: &Path) -> Vec<u8> {
    let c = dir.join("evil.c");
    std::fs::write(
        &c,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void evil(void) {{\n  FILE *f = fopen(\"{}\", \"w\");\n  if (f) fclose(f);\n}}\n",
            marker.display()
        ),
    )
    .unwrap();
    let so = dir.join("evil.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(so).unwrap()
}

/// Puts `lib` in as kernels.so of `dir` and fixes its sha256 in the manifest (not re-signed).
fn swap_kernels(dir: &Path, lib: &[u8]) {
    std::fs::write(dir.join("kernels.so"), lib).unwrap();
    let p = dir.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    m["files"]["kernels.so"] = sha256_hex(lib).into();
    std::fs::write(&p, serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
}

#[test]
fn keygen_writes_a_private_key_pair_and_never_overwrites() {
    let t = common::tempdir();
    let home = t.path().join("home");
    let k = t.path().join("team.key");
    let o = e2enc(&home, &["keygen", "-o", k.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secret key file's mode");
    }
    let secret = SecretKey::load(&k).expect("the key file parses");
    let pubtext = std::fs::read_to_string(keys::pub_path(&k)).unwrap();
    assert_eq!(pubtext.lines().count(), 1, "{pubtext}");
    assert!(pubtext.starts_with("e2enc-ed25519 "), "{pubtext}");
    assert_eq!(PublicKey::parse(&pubtext).unwrap(), secret.public());
    assert!(
        text(&o).contains(&secret.public().fingerprint()),
        "{}",
        text(&o)
    );
    assert!(!home.exists(), "keygen made a local key");

    // Again: refused, the key untouched.
    let before = std::fs::read(&k).unwrap();
    let o = e2enc(&home, &["keygen", "-o", k.to_str().unwrap()]);
    assert!(!o.status.success(), "keygen replaced a key");
    assert!(
        text(&o).contains("exists") && text(&o).contains("never replaces"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&k).unwrap(), before, "the key file changed");
    // Only the .pub exists: refused too, and no secret key file is left.
    let k2 = t.path().join("other.key");
    std::fs::write(keys::pub_path(&k2), "mine\n").unwrap();
    let o = e2enc(&home, &["keygen", "-o", k2.to_str().unwrap()]);
    assert!(!o.status.success(), "keygen replaced a .pub");
    assert!(!k2.exists(), "keygen left a secret key without its .pub");
    assert_eq!(
        std::fs::read_to_string(keys::pub_path(&k2)).unwrap(),
        "mine\n"
    );
}

/// Parallel first uses of a key file: exactly one writer wins, everybody sees a whole file.
#[test]
fn key_files_are_created_once_under_races() {
    let t = common::tempdir();
    let path = t.path().join("signing_key");
    let barrier = std::sync::Barrier::new(12);
    let results: Vec<(bool, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..12)
            .map(|i| {
                let (path, barrier) = (&path, &barrier);
                s.spawn(move || {
                    let text = keys::generate().unwrap().file_text(&format!("writer {i}"));
                    barrier.wait();
                    let ok = match keys::create_new(path, &text, 0o600) {
                        Ok(()) => true,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                        Err(e) => panic!("{e}"),
                    };
                    let seen = std::fs::read_to_string(path).unwrap();
                    assert!(
                        SecretKey::parse(&seen).is_ok(),
                        "a half-written key: {seen}"
                    );
                    (ok, text)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&String> = results.iter().filter(|r| r.0).map(|r| &r.1).collect();
    assert_eq!(winners.len(), 1, "writers that created the file");
    assert_eq!(&std::fs::read_to_string(&path).unwrap(), winners[0]);
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "temporary files left behind");
}

#[test]
fn a_signed_bundle_loads_and_names_its_signer() {
    let dir = common::shared_ch1();
    assert!(dir.join("manifest.sig").is_file());
    let b = Bundle::load(dir, &LoadOptions::default()).expect("the signed bundle loads");
    assert_eq!(b.signed_by, Some(local_public()));
}

/// Edited manifest.json, edited manifest.sig, a foreign kernels.so with its checksum fixed up
/// (unsigned, or re-signed by an untrusted key): refused, shipped library or rebuild, and the
/// foreign library's constructor never ran.
#[test]
fn tampered_bundles_are_refused_before_the_library_is_loaded() {
    let t = common::tempdir();
    let marker = t.path().join("constructor-ran");
    let evil = evil_library(t.path(), &marker);

    for rebuild in [false, true] {
        // Even --trust-unsigned does not accept a signature that does not verify.
        for trust_unsigned in [false, true] {
            let o = opts(rebuild, trust_unsigned);
            let what = format!("(rebuild {rebuild}, trust_unsigned {trust_unsigned})");
            let (_t1, d) = copy();
            flip_byte(&d.join("manifest.json"));
            refused(
                &d,
                &o,
                &[
                    "does not verify",
                    "manifest.json or manifest.sig was modified",
                ],
                &format!("one byte of manifest.json {what}"),
            );
            let (_t2, d) = copy();
            flip_byte(&d.join("manifest.sig"));
            refused(
                &d,
                &o,
                &["manifest.sig"],
                &format!("one byte of manifest.sig {what}"),
            );
            let (_t3, d) = copy();
            swap_kernels(&d, &evil);
            refused(
                &d,
                &o,
                &["does not verify"],
                &format!("a foreign kernels.so, checksum fixed {what}"),
            );
            assert!(!marker.exists(), "the foreign library's constructor ran");
        }
        // The attacker signs with their own key: not trusted.
        let (_t4, d) = copy();
        swap_kernels(&d, &evil);
        let attacker = keys::generate().unwrap();
        std::fs::write(
            d.join("manifest.sig"),
            attacker.sign_manifest(&std::fs::read(d.join("manifest.json")).unwrap()),
        )
        .unwrap();
        refused(
            &d,
            &opts(rebuild, false),
            &["not trusted", &attacker.public().fingerprint()],
            "a foreign kernels.so signed by an untrusted key",
        );
        assert!(!marker.exists(), "the foreign library's constructor ran");
    }

    // Positive control: told to trust an unsigned bundle, the loader does load the foreign
    // library (which has no kernels), and its constructor leaves the marker.
    let (_t5, d) = copy();
    swap_kernels(&d, &evil);
    std::fs::remove_file(d.join("manifest.sig")).unwrap();
    let msg = refused(
        &d,
        &opts(false, true),
        &["lacks the kernel"],
        "positive control",
    );
    assert!(
        marker.exists(),
        "the marker check cannot see a constructor run ({msg})"
    );
}

#[test]
fn unsigned_bundles_are_refused_unless_trusted_explicitly() {
    let (_t, d) = copy();
    std::fs::remove_file(d.join("manifest.sig")).unwrap();
    for rebuild in [false, true] {
        refused(
            &d,
            &opts(rebuild, false),
            &["not signed", "--trust-unsigned", "E2ENC_TRUST_UNSIGNED=1"],
            "an unsigned bundle",
        );
    }
    let b = Bundle::load(&d, &opts(false, true)).expect("loads with trust_unsigned");
    assert_eq!(b.signed_by, None);
}

#[test]
fn untrusted_keys_are_refused_by_fingerprint_and_trusted_keys_files_trust_them() {
    let t = common::tempdir();
    let k = t.path().join("team.key");
    let team = keys::write_new(&k, "team").expect("a new key");
    let fp = team.public().fingerprint();
    // compile --sign KEYFILE signs with that key.
    let d = t.path().join("bundle");
    let opts_sign = e2enc_codegen::compile::CompileOptions {
        sign: Some(k.clone()),
        ..e2enc_codegen::compile::CompileOptions::default()
    };
    let r = e2enc_codegen::compile::compile(&common::ch1_model(), &d, &opts_sign)
        .unwrap_or_else(|e| panic!("compile --sign: {e}"));
    assert_eq!(r.signed_by, team.public());
    let msg = refused(
        &d,
        &LoadOptions::default(),
        &["not trusted", &fp, &team.public().line(), "--trusted-keys"],
        "a bundle signed by another key",
    );
    assert!(
        !msg.contains(&local_public().fingerprint()),
        "the message names the wrong key: {msg}"
    );

    // A trusted-keys file (comments, blank lines, the .pub line with its comment) trusts it.
    let list = t.path().join("trusted");
    let line = std::fs::read_to_string(keys::pub_path(&k)).unwrap();
    std::fs::write(&list, format!("# our build machine\n\n{line}")).unwrap();
    let with_list = LoadOptions {
        trusted_keys: Some(list.clone()),
        ..LoadOptions::default()
    };
    let b = Bundle::load(&d, &with_list).expect("loads with the key trusted");
    assert_eq!(b.signed_by, Some(team.public()));
    // ... the local key stays trusted besides it.
    Bundle::load(common::shared_ch1(), &with_list).expect("the local key's bundle loads");

    // A malformed trusted-keys file is an error naming the file and line.
    std::fs::write(&list, "# ok\ne2enc-ed25519 nothex\n").unwrap();
    refused(
        &d,
        &with_list,
        &[&format!("{}:2", list.display())],
        "bad list",
    );
    // A missing one too.
    let gone = LoadOptions {
        trusted_keys: Some(t.path().join("none")),
        ..LoadOptions::default()
    };
    refused(
        &d,
        &gone,
        &["cannot read the trusted-keys file"],
        "missing list",
    );
}

/// The commands that load bundles teach the flags; compile teaches --sign; keygen exists.
#[test]
fn help_teaches_signing() {
    let home = common::tempdir();
    for cmd in ["run", "bench", "segment"] {
        let o = e2enc(home.path(), &[cmd, "--help"]);
        let t = text(&o);
        assert!(
            t.contains("--trusted-keys") && t.contains("--trust-unsigned"),
            "{cmd} --help: {t}"
        );
        assert!(t.contains("E2ENC_TRUST_UNSIGNED"), "{cmd} --help: {t}");
    }
    let t = text(&e2enc(home.path(), &["compile", "--help"]));
    assert!(t.contains("--sign") && t.contains("manifest.sig"), "{t}");
    let t = text(&e2enc(home.path(), &["keygen", "--help"]));
    assert!(
        t.contains("KEYFILE.pub") && t.contains("trusted_keys"),
        "{t}"
    );
    let t = text(&e2enc(home.path(), &["--help"]));
    assert!(t.contains("keygen"), "{t}");
}
