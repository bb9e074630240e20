//! The runtime on its own, without codegen: the thread pool runs a kernel over every tile once
//! whatever the thread count, and verification refuses a hand-made bundle whose files do not
//! match the manifest's checksums or whose manifest does not match `kernels.c`. (Compiled
//! bundles are tested end to end in the top-level `tests/bundle.rs`.)

use std::collections::BTreeMap;
use std::path::Path;

use e2enc_runtime::bundle::verify;
use e2enc_runtime::format::{sha256_hex, Compiler, Manifest, Port, FILES, FORMAT, VERSION};
use e2enc_runtime::layout::View;
use e2enc_runtime::pool::Pool;

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
        dense_macs: 0,
        executed_macs: 0,
        files,
    }
}

/// Writes a bundle whose files are `contents` (checksummed as they are).
fn write_bundle(dir: &Path, contents: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sums = BTreeMap::new();
    for (name, bytes) in contents {
        std::fs::write(dir.join(name), bytes).unwrap();
        sums.insert(name.to_string(), sha256_hex(bytes));
    }
    let m = manifest(sums);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string(&m).unwrap(),
    )
    .unwrap();
}

fn refusal(dir: &Path) -> String {
    verify(dir)
        .expect_err("verify accepted a bad bundle")
        .to_string()
}

#[test]
fn verification_refuses_bundles_that_do_not_match_their_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(&str, &[u8])> = FILES.iter().map(|f| (*f, b"x".as_slice())).collect();

    // Checksums fine, but kernels.c was not generated for this manifest's plan.
    let d = tmp.path().join("plan");
    write_bundle(&d, &files);
    let msg = refusal(&d);
    assert!(
        msg.contains("manifest.json does not match kernels.c"),
        "{msg}"
    );

    // A file changed after the manifest was written.
    let d = tmp.path().join("tampered");
    write_bundle(&d, &files);
    std::fs::write(d.join("kernels.so"), b"y").unwrap();
    let msg = refusal(&d);
    assert!(
        msg.contains("kernels.so does not match its checksum"),
        "{msg}"
    );

    // A missing file.
    let d = tmp.path().join("missing");
    write_bundle(&d, &files[..2]);
    let msg = refusal(&d);
    assert!(
        msg.contains("manifest has no checksum for weights.safetensors"),
        "{msg}"
    );

    // No manifest at all.
    let msg = refusal(&tmp.path().join("nothing"));
    assert!(msg.contains("cannot read manifest.json"), "{msg}");
}
