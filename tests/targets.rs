//! Targets end to end through the `e2enc` binary: the released network compiled for every target
//! this host runs matches the released PyTorch outputs (`e2enc check --target`), and a bundle
//! for a target the host cannot run is refused before any of its code loads, naming `--target`.
//! (aarch64 bundles are run for real by the standalone build under qemu-aarch64.)

mod common;
use common::{e2enc, text};

use e2enc_codegen::target::Target;

#[test]
fn released_network_on_every_host_target() {
    let mut args = vec!["check", "--skip-amos", "--target", "portable"];
    for t in [Target::X86Avx2, Target::X86Avx512] {
        if t.host_supports() {
            args.extend(["--target", t.name()]);
        } else {
            eprintln!("note: this host cannot run {t}: not checked here");
        }
    }
    let o = e2enc(&args);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("for portable (a bundle)"), "{t}");
    assert!(!t.contains("MISMATCH"), "{t}");
}

#[test]
fn a_bundle_for_another_architecture_is_refused_naming_the_target() {
    let foreign = if std::env::consts::ARCH == "aarch64" {
        Target::X86Avx2
    } else {
        Target::Aarch64Neon
    };
    let cc = foreign
        .cross_compiler()
        .expect("a foreign target needs a cross compiler");
    let have_cc = std::process::Command::new(cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_cc {
        assert!(
            std::env::var_os("E2ENC_SKIP_AARCH64").is_some(),
            "`{cc}` is missing (Debian: apt-get install gcc-aarch64-linux-gnu; .ci/run installs it)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("b");
    let m = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden/model.json");
    let o = e2enc(&[
        "compile",
        m,
        "-o",
        b.to_str().unwrap(),
        "--target",
        foreign.name(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let man = std::fs::read_to_string(b.join("manifest.json")).unwrap();
    assert!(man.contains(&format!("\"target\": \"{foreign}\"")), "{man}");
    let o = e2enc(&["bench", b.to_str().unwrap(), "--runs", "1"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("--target") && t.contains(foreign.name()), "{t}");

    // A compiler that does not exist is named, with what to install.
    let o = e2enc(&[
        "compile",
        m,
        "-o",
        tmp.path().join("c").to_str().unwrap(),
        "--target",
        "portable",
        "--cc",
        "no-such-cc-e2enc",
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("no-such-cc-e2enc"), "{t}");
    assert!(!tmp.path().join("c").exists(), "no half bundle");
}

#[test]
fn unknown_targets_list_the_choices() {
    let o = e2enc(&["compile", "x.json", "-o", "y", "--target", "sse"]);
    let t = text(&o);
    assert!(!o.status.success());
    for name in [
        "x86-avx2",
        "x86-avx512",
        "aarch64-neon",
        "portable",
        "native",
    ] {
        assert!(t.contains(name), "{t}");
    }
}
