//! The runtime on its own, without codegen: the thread pool runs a kernel over every tile once
//! whatever the thread count, and verification refuses a hand-made bundle whose files do not
//! match the manifest's checksums or whose manifest does not match `kernels.c`, and checks
//! signatures first. (Compiled bundles are tested end to end in the top-level `tests/bundle.rs`
//! and `tests/signing.rs`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use e2enc_runtime::bundle::{verify_with, LoadOptions};
use e2enc_runtime::format::{sha256_hex, Compiler, Manifest, Port, FILES, FORMAT, VERSION};
use e2enc_runtime::layout::View;
use e2enc_runtime::pool::Pool;
use e2enc_runtime::sign::{set_config_dir, SecretKey};

/// Adds `t + 1` to `a[t]` for every tile `t` in `[t0, t1)`.
unsafe extern "C" fn count_tiles(a: *mut f32, _w: *const f32, _i: *const i32, t0: i64, t1: i64) {
    for t in t0..t1 {
        // SAFETY: the test passes an arena of at least `tiles` floats.
        unsafe { *a.add(t as usize) += (t + 1) as f32 };
    }
}

#[test]
fn the_pool_runs_every_tile_once_on_any_thread_count() {
    for threads in [1, 2, 3, 8] {
        let mut pool = Pool::new(threads);
        assert_eq!(pool.threads(), threads);
        let mut a = vec![0f32; 100];
        for _ in 0..3 {
            // SAFETY: `count_tiles` writes only `a[t]` for its tiles; `a` holds 100 floats.
            unsafe {
                pool.run(
                    count_tiles,
                    a.as_mut_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                    97,
                )
            };
        }
        for (t, v) in a.iter().enumerate() {
            let want = if t < 97 { 3.0 * (t + 1) as f32 } else { 0.0 };
            assert_eq!(*v, want, "tile {t} on {threads} threads");
        }
    }
}

fn manifest(files: BTreeMap<String, String>) -> Manifest {
    let view = View::padded(0, [1, 1, 1, 2, 2]);
    let port = |name: &str| Port {
        name: name.into(),
        shape: vec![1, 1, 1, 2, 2],
        dtype: "f32".into(),
        view: view.clone(),
    };
    Manifest {
        format: FORMAT.into(),
        version: VERSION,
        model: serde_json::json!({}),
        graph: String::new(),
        inputs: vec![port("input")],
        outputs: vec![port("logits")],
        arena_elems: View::elems(view.shape),
        buffers: vec![],
        steps: vec![],
        consts_f32: 0,
        consts_i32: 0,
        compiler: Compiler {
            command: "cc".into(),
            version: String::new(),
            flags: vec![],
        },
        target: Some("portable".into()),
        cpu_features: vec![],
        precision: None,
        cuda: None,
        dense_macs: 0,
        executed_macs: 0,
        files,
    }
}

/// The key the hand-made bundles are signed with.
fn key() -> SecretKey {
    SecretKey::from_seed([7; 32])
}

/// Load options trusting [`key`] (through a trusted-keys file in `tmp`), with no local key.
fn trusting(tmp: &Path) -> LoadOptions {
    set_config_dir(&tmp.join("no-home"));
    let list: PathBuf = tmp.join("trusted");
    std::fs::write(&list, format!("# test\n{}\n", key().public().line())).unwrap();
    LoadOptions {
        trusted_keys: Some(list),
        ..LoadOptions::default()
    }
}

/// Writes a bundle whose files are `contents` (checksummed as they are), signed by [`key`].
fn write_bundle(dir: &Path, contents: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sums = BTreeMap::new();
    for (name, bytes) in contents {
        std::fs::write(dir.join(name), bytes).unwrap();
        sums.insert(name.to_string(), sha256_hex(bytes));
    }
    let m = serde_json::to_string(&manifest(sums)).unwrap();
    std::fs::write(dir.join("manifest.json"), &m).unwrap();
    std::fs::write(dir.join("manifest.sig"), key().sign_manifest(m.as_bytes())).unwrap();
}

fn refusal(dir: &Path, opts: &LoadOptions) -> String {
    verify_with(dir, opts)
        .expect_err("verify accepted a bad bundle")
        .to_string()
}

#[test]
fn verification_refuses_bundles_that_do_not_match_their_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(&str, &[u8])> = FILES.iter().map(|f| (*f, b"x".as_slice())).collect();
    let opts = trusting(tmp.path());

    // Checksums fine, but kernels.c was not generated for this manifest's plan.
    let d = tmp.path().join("plan");
    write_bundle(&d, &files);
    let msg = refusal(&d, &opts);
    assert!(
        msg.contains("manifest.json does not match kernels.c"),
        "{msg}"
    );

    // A file changed after the manifest was written.
    let d = tmp.path().join("tampered");
    write_bundle(&d, &files);
    std::fs::write(d.join("kernels.so"), b"y").unwrap();
    let msg = refusal(&d, &opts);
    assert!(
        msg.contains("kernels.so does not match its checksum"),
        "{msg}"
    );

    // A missing file.
    let d = tmp.path().join("missing");
    write_bundle(&d, &files[..2]);
    let msg = refusal(&d, &opts);
    assert!(
        msg.contains("manifest has no checksum for weights.safetensors"),
        "{msg}"
    );

    // No manifest at all.
    let msg = refusal(&tmp.path().join("nothing"), &opts);
    assert!(msg.contains("cannot read manifest.json"), "{msg}");
}

#[test]
fn signatures_are_checked_first() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(&str, &[u8])> = FILES.iter().map(|f| (*f, b"x".as_slice())).collect();
    let opts = trusting(tmp.path());
    let d = tmp.path().join("b");
    write_bundle(&d, &files);
    // Signed by the trusted key: on to the plan check.
    let msg = refusal(&d, &opts);
    assert!(msg.contains("does not match kernels.c"), "{msg}");
    // Not trusted without the list; the message names the key's fingerprint.
    let bare = LoadOptions::default();
    let msg = refusal(&d, &bare);
    assert!(
        msg.contains("not trusted") && msg.contains(&key().public().fingerprint()),
        "{msg}"
    );
    // Trusted explicitly: on to the plan check.
    let anyway = LoadOptions {
        trust_unsigned: true,
        ..LoadOptions::default()
    };
    assert!(refusal(&d, &anyway).contains("does not match kernels.c"));
    // A manifest edited after signing: refused, even with trust_unsigned.
    let m = d.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    let mut edited = text.clone().into_bytes();
    let mid = edited.len() / 2;
    edited[mid] ^= 0x01;
    std::fs::write(&m, edited).unwrap();
    for o in [&opts, &anyway] {
        let msg = refusal(&d, o);
        assert!(msg.contains("does not verify"), "{msg}");
    }
    // Unsigned: refused, naming the way out; accepted with trust_unsigned.
    std::fs::write(&m, &text).unwrap();
    std::fs::remove_file(d.join("manifest.sig")).unwrap();
    let msg = refusal(&d, &opts);
    assert!(
        msg.contains("not signed") && msg.contains("--trust-unsigned"),
        "{msg}"
    );
    assert!(refusal(&d, &anyway).contains("does not match kernels.c"));
}
