//! Compiled bundles end to end, on the ch1-shift5 numpy-reference fixture compiled once (with
//! deep supervision): outputs against the fixture's float64 reference and the interpreter on the
//! optimized graph, bit-identical results across thread counts and repeated runs, tampered
//! bundles refused before any code is loaded, `rebuild`, deterministic compilation, inputs of
//! the wrong shape refused; and the golden released-network model compiled once more (logits
//! only) against the interpreter.
//!
//! "No code loaded" is checked from the outside: the set of `kernels.so` files mapped into this
//! process (`/proc/self/maps`) must not change across a refused load, and a positive control
//! shows the check sees a successful load. Tests that load bundles hold [`LOCK`] so that no other
//! test maps a library meanwhile.

#[path = "bundle_common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use common::{assert_same_outputs, feed, rel, same_bits};
use e2enc::{Runnable, Session, TensorEngine, TensorOutput};
use e2enc_ir::e2enet::BuildOptions;
use e2enc_ir::Tensor;
use e2enc_runtime::bundle::{verify, Bundle, LoadOptions};
use e2enc_runtime::exec::Engine;
use serde_json::Value;

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The distinct `kernels.so` files mapped into this process.
fn mapped_kernels() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .filter(|l| l.contains("kernels.so"))
        .filter_map(|l| l.find('/').map(|i| l[i..].to_string()))
        .collect()
}

/// Private folders the loader made for this process and left behind.
fn private_dirs() -> Vec<String> {
    let prefix = format!("e2enc-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn load(dir: &Path, threads: usize) -> Engine {
    let b = Bundle::load(dir, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    Engine::new(b, threads)
}

fn reference_name(output: &str) -> &str {
    if output == "logits" {
        "ds0"
    } else {
        output
    }
}

#[test]
fn outputs_match_reference_and_interpreter_for_any_threads_and_runs() {
    let dir = common::shared_ch1();
    let _g = lock();
    let io = common::ch1_io();
    let x = io.get("input").expect("io has `input`");

    let mut e1 = load(dir, 1);
    let mut e2 = load(dir, 2);
    assert_eq!((e1.threads(), e2.threads()), (1, 2));
    let y1 = e1.run(&feed(x)).expect("run on 1 thread");
    assert_eq!(
        y1.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ds1", "ds2", "ds3", "logits"]
    );
    for (name, got) in &y1 {
        let want = io.get(reference_name(name)).expect("reference output");
        let e = rel(got, want, name);
        assert!(
            e < 1e-5,
            "{name}: relative error {e:.2e} against the float64 reference"
        );
    }

    // The interpreter on the optimized graph: the same graph the manifest records.
    let mut s = Session::load(&common::ch1_dir(), &BuildOptions::default()).expect("session");
    s.optimize(&[]).expect("optimize keeping every output");
    assert!(
        e1.bundle.manifest.graph == e2enc_ir::text::print(&s.graph),
        "the manifest's graph is not the optimized graph (is optimization deterministic?)"
    );
    let yi = s.run(&feed(x), &[]).expect("interpreter");
    for (name, got) in &y1 {
        let e = rel(got, &yi[name], name);
        assert!(
            e < 1e-5,
            "{name}: relative error {e:.2e} against the interpreter on the optimized graph"
        );
    }

    // Thread count and repeated runs (the arena is reused, with another input in between).
    let y2 = e2.run(&feed(x)).expect("run on 2 threads");
    assert_same_outputs(&y1, &y2, "1 vs 2 threads");
    let other = common::demo_input(x.shape());
    let yo = e1.run(&feed(&other)).expect("run on another input");
    assert!(
        !same_bits(&yo["logits"], &y1["logits"]),
        "another input gave the same logits"
    );
    assert_same_outputs(
        &y1,
        &e1.run(&feed(x)).expect("second run"),
        "first vs second run, 1 thread",
    );
    assert_same_outputs(
        &y2,
        &e2.run(&feed(x)).expect("second run"),
        "first vs second run, 2 threads",
    );
}

/// Copies the shared bundle into a fresh folder.
fn copy() -> (tempfile::TempDir, std::path::PathBuf) {
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

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("manifest.json");
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("parse");
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).expect("print")).expect("write");
    // Signed again, as by a trusted maker: these tests are about the checks after the signature
    // (tests/signing.rs shows an edited manifest is refused).
    common::resign(dir);
}

/// Applies `tamper` to a copy of the bundle and checks that verification and loading (shipped
/// library and rebuild) fail with a message holding `want`, that no library was mapped and that
/// no private folder was left.
fn assert_refused(what: &str, tamper: impl FnOnce(&Path), want: &str) {
    let (_t, dir) = copy();
    tamper(&dir);
    let before = mapped_kernels();
    let v = verify(&dir)
        .err()
        .unwrap_or_else(|| panic!("{what}: verify accepted the bundle"));
    let msg = v.to_string();
    assert!(
        msg.contains(want),
        "{what}: verify said `{msg}`, expected it to mention `{want}`"
    );
    assert!(
        msg.contains(&dir.display().to_string()),
        "{what}: the message `{msg}` does not name the bundle"
    );
    for rebuild in [false, true] {
        let e = Bundle::load(
            &dir,
            &LoadOptions {
                rebuild,
                ..LoadOptions::default()
            },
        )
        .err();
        let msg = e
            .unwrap_or_else(|| panic!("{what}: loaded (rebuild {rebuild})"))
            .to_string();
        assert!(
            msg.contains(want),
            "{what} (rebuild {rebuild}): `{msg}` does not mention `{want}`"
        );
    }
    assert_eq!(mapped_kernels(), before, "{what}: a kernels.so was mapped");
    assert_eq!(
        private_dirs(),
        Vec::<String>::new(),
        "{what}: private folders left behind"
    );
}

#[test]
fn tampered_bundles_are_refused_before_any_code_loads() {
    common::shared_ch1();
    let _g = lock();

    // Positive control: a good load is visible in the maps, and goes away with the bundle.
    let base = mapped_kernels();
    let good = Bundle::load(common::shared_ch1(), &LoadOptions::default())
        .expect("the untouched bundle loads");
    assert_eq!(
        mapped_kernels().len(),
        base.len() + 1,
        "the maps check does not see a loaded kernels.so"
    );
    drop(good);
    assert_eq!(
        mapped_kernels(),
        base,
        "kernels.so still mapped after the bundle was dropped"
    );
    assert_eq!(
        private_dirs(),
        Vec::<String>::new(),
        "private folders left behind by a good load"
    );

    for f in ["kernels.so", "weights.safetensors", "kernels.c"] {
        assert_refused(
            &format!("one byte of {f} changed"),
            |d| flip_byte(&d.join(f)),
            &format!("{f} does not match its checksum"),
        );
        assert_refused(
            &format!("{f} missing"),
            |d| std::fs::remove_file(d.join(f)).unwrap(),
            &format!("cannot read {f}"),
        );
    }
    assert_refused(
        "manifest.json missing",
        |d| std::fs::remove_file(d.join("manifest.json")).unwrap(),
        "cannot read manifest.json",
    );
    assert_refused(
        "wrong format version",
        |d| edit_manifest(d, |m| m["version"] = 2.into()),
        "bundle format version 2 is not supported",
    );
    assert_refused(
        "wrong format name",
        |d| edit_manifest(d, |m| m["format"] = "e2enc-model".into()),
        "manifest format is `e2enc-model`, expected `e2enc-bundle`",
    );
    for outside in [
        "../kernels.so",
        "/etc/passwd",
        "sub/kernels.so",
        ".hidden",
        "..",
    ] {
        assert_refused(
            &format!("manifest names {outside}"),
            |d| {
                edit_manifest(d, |m| {
                    let sum = m["files"]["kernels.so"].clone();
                    m["files"][outside] = sum;
                })
            },
            &format!("manifest names `{outside}`, which is not a file inside the bundle"),
        );
    }
    assert_refused(
        "manifest renames kernels.so to ../kernels.so",
        |d| {
            edit_manifest(d, |m| {
                let files = m["files"].as_object_mut().unwrap();
                let sum = files.remove("kernels.so").unwrap();
                files.insert("../kernels.so".into(), sum);
            })
        },
        "which is not a file inside the bundle",
    );
    assert_refused(
        "manifest names an extra file",
        |d| {
            edit_manifest(d, |m| {
                m["files"]["libextra.so"] = m["files"]["kernels.so"].clone()
            })
        },
        "manifest names an unexpected file `libextra.so`",
    );
    assert_refused(
        "a checksum changed",
        |d| {
            edit_manifest(d, |m| {
                let s = m["files"]["kernels.so"].as_str().unwrap().to_string();
                let last = if s.ends_with('0') { '1' } else { '0' };
                m["files"]["kernels.so"] = format!("{}{last}", &s[..s.len() - 1]).into();
            })
        },
        "kernels.so does not match its checksum",
    );
    assert_refused(
        "a checksum missing",
        |d| {
            edit_manifest(d, |m| {
                drop(m["files"].as_object_mut().unwrap().remove("kernels.c"))
            })
        },
        "manifest has no checksum for kernels.c",
    );
    assert_refused(
        "garbage JSON",
        |d| {
            std::fs::write(
                d.join("manifest.json"),
                "{ \"format\": \"e2enc-bundle\", garbage",
            )
            .unwrap();
            common::resign(d);
        },
        "manifest.json is not a valid manifest",
    );
    assert_refused(
        "an unknown manifest field",
        |d| edit_manifest(d, |m| m["entry_point"] = "system".into()),
        "unknown field `entry_point`",
    );
    // The plan fields of the manifest are tied to kernels.c by a digest: editing any of them
    // alone is refused at verification, before any code is loaded.
    type Edit = Box<dyn Fn(&mut Value)>;
    let plan_edits: Vec<(&str, Edit)> = vec![
        (
            "an unknown CPU feature",
            Box::new(|m| {
                m["cpu_features"]
                    .as_array_mut()
                    .unwrap()
                    .push("quantum".into())
            }),
        ),
        (
            "a smaller arena",
            Box::new(|m| m["arena_elems"] = 16.into()),
        ),
        (
            "more tiles",
            Box::new(|m| {
                m["steps"][0]["tiles"] = (m["steps"][0]["tiles"].as_u64().unwrap() * 50).into()
            }),
        ),
        (
            "a wrong blob size",
            Box::new(|m| m["consts_f32"] = (m["consts_f32"].as_u64().unwrap() + 1).into()),
        ),
        (
            "another kernel name",
            Box::new(|m| m["steps"][0]["kernel"] = "no_such_kernel".into()),
        ),
        (
            "a moved output view",
            Box::new(|m| m["outputs"][0]["view"]["offset"] = 1.into()),
        ),
    ];
    for (what, edit) in plan_edits {
        assert_refused(
            what,
            |d| edit_manifest(d, |m| edit(m)),
            "does not match kernels.c",
        );
    }
    assert_eq!(
        private_dirs(),
        Vec::<String>::new(),
        "private folders left behind"
    );
}

#[test]
fn rebuild_gives_identical_outputs_and_runs_no_program_named_by_the_manifest() {
    let dir = common::shared_ch1();
    let (t, copy) = copy();
    // The signer vouches for the kernels, not for running a program named in the manifest.
    let marker = t.path().join("marker");
    let script = t.path().join("evil-cc");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    edit_manifest(&copy, |m| {
        m["compiler"]["command"] = script.display().to_string().into()
    });

    let x = common::ch1_io().get("input").unwrap().as_ref().clone();
    let _g = lock();
    let rebuild = LoadOptions {
        rebuild: true,
        ..LoadOptions::default()
    };
    let rebuilt = Bundle::load(&copy, &rebuild).unwrap_or_else(|e| panic!("rebuild failed: {e}"));
    assert!(
        !marker.exists(),
        "rebuild ran the compiler command named in the (unverified) manifest"
    );
    let mut er = Engine::new(rebuilt, 2);
    let mut es = load(dir, 2);
    let yr = er.run(&feed(&x)).expect("run the rebuilt bundle");
    let ys = es.run(&feed(&x)).expect("run the shipped bundle");
    assert_same_outputs(&ys, &yr, "shipped vs rebuilt kernels");
}

#[test]
fn compiling_twice_gives_identical_bundles() {
    let first = common::shared_ch1();
    let t = common::tempdir();
    let second = t.path().join("ch1");
    common::compile_ch1(&second);
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    for f in ["kernels.c", "weights.safetensors"] {
        assert!(
            read(first, f) == read(&second, f),
            "{f} differs between two compilations"
        );
    }
    let so_same = read(first, "kernels.so") == read(&second, "kernels.so");
    let m1: Value = serde_json::from_slice(&read(first, "manifest.json")).unwrap();
    let m2: Value = serde_json::from_slice(&read(&second, "manifest.json")).unwrap();
    let differing: Vec<&String> = m1
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| m2.get(k.as_str()) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    if so_same {
        assert!(
            differing.is_empty(),
            "manifest fields differ: {differing:?}"
        );
        assert!(
            read(first, "manifest.json") == read(&second, "manifest.json"),
            "manifest.json bytes differ"
        );
    } else {
        // The C compiler itself may not be reproducible; then only its checksum may differ.
        assert_eq!(
            differing,
            ["files"],
            "manifest fields differ beyond kernels.so's checksum"
        );
        let (f1, f2) = (&m1["files"], &m2["files"]);
        assert_eq!(f1["kernels.c"], f2["kernels.c"]);
        assert_eq!(f1["weights.safetensors"], f2["weights.safetensors"]);
        eprintln!("note: kernels.so differs between two compilations of the same kernels.c");
    }
}

#[test]
fn wrong_inputs_are_refused_with_clear_errors() {
    let dir = common::shared_ch1();
    let _g = lock();
    let mut e = load(dir, 2);
    let x = common::ch1_io().get("input").unwrap().as_ref().clone();
    let want = e.run(&feed(&x)).expect("good run");

    let refuse = |e: &mut Engine, inputs: std::collections::BTreeMap<String, Tensor>, msg: &str| {
        let got = e
            .run(&inputs)
            .err()
            .unwrap_or_else(|| panic!("accepted inputs that should give `{msg}`"));
        assert!(
            got.to_string().contains(msg),
            "`{got}` does not mention `{msg}`"
        );
    };
    let short = common::demo_input(&[1, 1, 32, 32, 16]);
    refuse(&mut e, feed(&short), "input `input` has shape [1, 1, 32, 32, 16], the bundle was compiled for [1, 1, 32, 32, 32]");
    refuse(
        &mut e,
        feed(&common::demo_input(&[2, 1, 32, 32, 32])),
        "has shape [2, 1, 32, 32, 32]",
    );
    refuse(
        &mut e,
        feed(&common::demo_input(&[1, 32, 32, 32])),
        "has shape [1, 32, 32, 32]",
    );
    let ints = Tensor::from_i32(vec![1, 1, 32, 32, 32], vec![0; 32 * 32 * 32]).unwrap();
    refuse(&mut e, feed(&ints), "input `input` must be f32");
    refuse(&mut e, Default::default(), "input `input` is missing");
    let mut extra = feed(&x);
    extra.insert("mask".into(), x.clone());
    refuse(&mut e, extra, "the bundle has no input `mask`");

    // The engine is still good after the refusals.
    assert_same_outputs(
        &want,
        &e.run(&feed(&x)).expect("run after refusals"),
        "before vs after refusals",
    );
}

#[test]
fn outputs_read_in_place_equal_the_copied_ones() {
    let dir = common::shared_ch1();
    let _g = lock();
    let x = common::ch1_io().get("input").unwrap().as_ref().clone();
    let mut e = load(dir, 2);
    let copied = e.run(&feed(&x)).expect("run");
    e.execute_tensors(&feed(&x)).expect("execute");
    for (name, want) in &copied {
        let o = e.output(name).expect("output by name");
        assert_eq!(o.shape(), want.shape());
        assert!(
            same_bits(&o.to_tensor().expect("to_tensor"), want),
            "{name}"
        );
        let s = want.shape();
        let (c, z, y) = (s[1] - 1, s[2] / 2, s[3] - 1);
        let w = s[4];
        let at = ((c * s[2] + z) * s[3] + y) * w;
        let row = o.row(0, c, z, y).expect("a row inside the output");
        assert_eq!(row, &want.as_f32().unwrap()[at..at + w], "{name} row");
        let msg = o
            .row(0, s[1], 0, 0)
            .expect_err("row past the channels")
            .to_string();
        assert!(msg.contains("is outside output"), "{msg}");
    }
    let msg = e.output("ds9").err().expect("unknown output").to_string();
    assert!(msg.contains("the bundle has no output `ds9`"), "{msg}");
}

#[test]
fn runnable_runs_a_bundle_and_selects_outputs() {
    let dir = common::shared_ch1();
    let _g = lock();
    let x = common::ch1_io().get("input").unwrap().as_ref().clone();
    let mut r = Runnable::load(dir, &BuildOptions::default(), 2, false)
        .expect("load the bundle as a Runnable");
    assert!(
        matches!(r, Runnable::Bundle(_)),
        "a bundle folder must load as a bundle"
    );
    let all = r.run(&feed(&x), &[]).expect("all outputs");
    assert_eq!(all.len(), 4);
    let logits = r.run(&feed(&x), &["logits"]).expect("logits only");
    assert_eq!(logits.keys().collect::<Vec<_>>(), ["logits"]);
    assert!(same_bits(&logits["logits"], &all["logits"]));
    let msg = r
        .run(&feed(&x), &["ds9"])
        .expect_err("an unknown output is refused")
        .to_string();
    assert!(msg.contains("the bundle has no output `ds9`"), "{msg}");
    let msg = Session::load(dir, &BuildOptions::default())
        .err()
        .expect("a bundle is not a model")
        .to_string();
    assert!(msg.contains("this is a compiled bundle"), "{msg}");
}

/// The released-network golden model (PyTorch weights, 32x32x64 patch, widths up to 128):
/// a second, differently shaped network, against the interpreter and the stored PyTorch output.
#[test]
fn golden_model_bundle_matches_the_interpreter() {
    let golden = common::repo().join("tests/data/golden");
    let model = e2enc_ir::e2enet::Model::load(&golden.join("model.json"), &BuildOptions::default())
        .expect("golden model loads");
    let t = common::tempdir();
    let dir = t.path().join("golden");
    let opts = e2enc_codegen::compile::CompileOptions::default();
    e2enc_codegen::compile::compile(&model, &dir, &opts).unwrap_or_else(|e| panic!("compile: {e}"));
    let io = e2enc_ir::Weights::load(&golden.join("io.safetensors")).expect("golden io");
    let x = io.get("input").expect("input");
    let _g = lock();
    // The plan stores convs' outputs over their inputs (memplan/lag.rs): their groups of planes
    // must run in order, or the numbers below go wrong (seen: 1.57 relative error with the
    // groups run in reverse).
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    assert!(
        manifest.matches("unstash").count() >= 5,
        "the golden plan lags convs"
    );
    // ... and streams upsamplings into the fusion convs (steps of planes of an upsampling).
    assert!(
        manifest.matches("] up sparse").count() >= 10,
        "the golden plan streams upsamplings"
    );
    let y = load(&dir, 2).run(&feed(x)).expect("run the golden bundle");
    assert_eq!(
        y.keys().collect::<Vec<_>>(),
        ["logits"],
        "logits only without deep supervision"
    );
    let w = model.require_weights().expect("weights");
    let yi =
        e2enc_ir::interp::run(&model.net.graph, w, &feed(x), &["logits"]).expect("interpreter");
    let e = rel(&y["logits"], &yi["logits"], "logits");
    assert!(e < 1e-4, "relative error {e:.2e} against the interpreter");
    // The interpreter itself is about 1e-4 from PyTorch's float32 result here.
    let e = rel(&y["logits"], io.get("ds0").expect("ds0"), "logits");
    assert!(
        e < 3e-4,
        "relative error {e:.2e} against the stored PyTorch output"
    );
}
