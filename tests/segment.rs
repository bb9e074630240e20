//! End to end through the `e2enc` binary: `segment` (one case, a folder, bad input, a CUDA bundle
//! through the host emulation) and `evaluate`, on a tiny two-channel bundle compiled once and
//! small synthetic NIfTI volumes.

mod common;
use common::{e2enc, text};
#[path = "bundle_common/mod.rs"]
mod bundle_common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use e2enc_segment::nifti::{self, Header, NiftiError};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny 2-channel, 2-class model with a preprocessing section (target 1.5 mm), compiled once
/// for all tests of this file.
fn bundle() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let m = dir.join("m");
        let o = e2enc(&[
            "init",
            "-o",
            s(&m),
            "--preset",
            "tiny",
            "--patch",
            "32",
            "--max-width",
            "16",
            "--in-channels",
            "2",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let path = m.join("model.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["preprocessing"] = serde_json::json!({
            "axis_order": [2, 1, 0],
            "target_spacing": [1.5, 1.5, 1.5],
            "normalization": [
                {"scheme": "z_score", "use_nonzero_mask": false},
                {"scheme": "ct", "lower": -100.0, "upper": 300.0, "mean": 50.0, "std": 80.0}
            ]
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let b = dir.join("bundle");
        let o = e2enc(&["compile", s(&m), "-o", s(&b)]);
        assert!(o.status.success(), "{}", text(&o));
        b
    })
}

/// A header with a rotated, shifted geometry (sform and qform both set).
fn header(dims: [usize; 3]) -> Header {
    let mut h = Header::new(dims, [1.2, 1.2, 1.2]);
    h.srow_x = [0.0, -1.2, 0.0, 30.0];
    h.srow_y = [1.2, 0.0, 0.0, -12.5];
    h.srow_z = [0.0, 0.0, 1.2, 7.0];
    h.qform_code = 1;
    h.quatern_d = std::f64::consts::FRAC_1_SQRT_2;
    h.qoffset_x = 30.0;
    h.qoffset_y = -12.5;
    h.qoffset_z = 7.0;
    h
}

const DIMS: [usize; 3] = [40, 36, 24];

/// Writes a synthetic image (a bright ball in a noisy background) with `header(dims)`.
fn image(path: &Path, dims: [usize; 3], h: &Header, seed: usize) {
    nifti::write_f32(path, h, dims, &ball(dims, seed)).unwrap();
}

/// The voxels of [`image`].
fn ball(dims: [usize; 3], seed: usize) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let mut v = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let r2 = (x as f64 - 20.0).powi(2)
                    + (y as f64 - 18.0).powi(2)
                    + (z as f64 - 12.0).powi(2);
                let noise = ((x * 31 + y * 17 + z * 7 + seed * 13) % 23) as f32;
                v.push(if r2 < 64.0 { 200.0 } else { 20.0 } + noise);
            }
        }
    }
    v
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn segment_writes_labels_probabilities_and_a_preview_on_the_input_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let h = header(DIMS);
    let (a, b) = (tmp.path().join("t1.nii.gz"), tmp.path().join("ct.nii"));
    image(&a, DIMS, &h, 0);
    image(&b, DIMS, &h, 1);
    let (out, probs, png) = (
        tmp.path().join("seg.nii.gz"),
        tmp.path().join("probs.nii.gz"),
        tmp.path().join("seg.png"),
    );
    // Temporaries a killed earlier run left (a process that no longer exists) are cleaned.
    let dead = (400_000u32..4_000_000)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let stale = [
        tmp.path().join(format!(".seg.nii.gz.{dead}-0.tmp")),
        tmp.path().join(format!(".seg.nii.gz.e2enc-{dead}-3.tmp")),
        tmp.path().join(format!(".seg.png.tmp{dead}")),
    ];
    for p in &stale {
        std::fs::write(p, b"half written").unwrap();
    }
    let o = e2enc(&[
        "segment",
        s(bundle()),
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--tta",
        "--probabilities",
        s(&probs),
        "--preview",
        s(&png),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // Network grid 32x29x19 (1.2 -> 1.5 mm) padded to one 32^3 patch; TTA: 8 tiles.
    assert!(
        t.contains("segmented 1 case(s)") && t.contains(" 8 tiles"),
        "{t}"
    );

    let seg = nifti::read(&out).unwrap();
    assert_eq!(seg.dims, DIMS);
    assert_eq!(seg.header.datatype, 2, "uint8 labels");
    let input = nifti::read(&a).unwrap().header;
    assert_eq!(seg.header.affine(), input.affine());
    assert_eq!(seg.header.qform_affine(), input.qform_affine());
    assert_eq!((seg.header.sform_code, seg.header.qform_code), (2, 1));
    assert!(seg.data.iter().all(|&l| l == 0.0 || l == 1.0));

    // A 4-D file, one frame per class, summing to 1 and agreeing with the labels.
    assert!(matches!(
        nifti::read(&probs),
        Err(NiftiError::MultiVolume { volumes: 2, .. })
    ));
    let p0 = nifti::read_frame(&probs, 0).unwrap();
    let p1 = nifti::read_frame(&probs, 1).unwrap();
    assert_eq!(p1.dims, DIMS);
    for i in 0..seg.data.len() {
        assert!((p0.data[i] + p1.data[i] - 1.0).abs() < 1e-3, "voxel {i}");
        if seg.data[i] == 1.0 {
            assert!(p1.data[i] >= p0.data[i], "voxel {i}");
        }
    }

    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    for p in &stale {
        assert!(!p.exists(), "{} left behind", p.display());
    }

    // A second run refuses to overwrite; --overwrite replaces.
    let o = e2enc(&["segment", s(bundle()), s(&a), s(&b), "-o", s(&out)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--overwrite"), "{}", text(&o));
}

#[test]
fn accumulators_through_a_scratch_file_give_the_same_files() {
    // 96x84x56 at 1.2 mm: a 77x67x45 grid, 3x3x2 tiles of 32^3 with mirroring.
    let tmp = tempfile::tempdir().unwrap();
    let dims = [96, 84, 56];
    let h = header(dims);
    let (a, b) = (tmp.path().join("t1.nii.gz"), tmp.path().join("ct.nii"));
    image(&a, dims, &h, 0);
    image(&b, dims, &h, 1);
    let run = |name: &str, extra: &[&str]| {
        let (out, probs) = (
            tmp.path().join(format!("{name}.nii.gz")),
            tmp.path().join(format!("{name}-p.nii")),
        );
        let mut args = vec![
            "segment",
            s(bundle()),
            s(&a),
            s(&b),
            "-o",
            s(&out),
            "--probabilities",
            s(&probs),
            "--tta",
        ];
        args.extend_from_slice(extra);
        let o = e2enc(&args);
        assert!(o.status.success(), "{}", text(&o));
        (std::fs::read(&out).unwrap(), std::fs::read(&probs).unwrap())
    };
    let all = run("all", &["--accumulator-memory", "all"]);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    for (name, size) in [("zero", "0"), ("some", "200KiB")] {
        let got = run(
            name,
            &["--accumulator-memory", size, "--scratch-dir", s(&scratch)],
        );
        assert!(got.0 == all.0, "{size}: the labels differ");
        assert!(got.1 == all.1, "{size}: the probabilities differ");
    }
    assert!(files_in(&scratch).is_empty(), "{:?}", files_in(&scratch));

    // A size that is not one, and a scratch folder that is not there: refused, nothing written.
    let out = tmp.path().join("never.nii.gz");
    for (size, dir, needle) in [
        ("lots", None, "say a size like 256MiB"),
        ("-1", None, "say a size like"),
        ("0", Some("missing-dir"), "scratch file in"),
    ] {
        let mut args = vec!["segment", s(bundle()), s(&a), s(&b), "-o", s(&out)];
        args.extend(["--accumulator-memory", size]);
        let d = dir.map(|d| tmp.path().join(d));
        if let Some(d) = &d {
            args.extend(["--scratch-dir", s(d)]);
        }
        let o = e2enc(&args);
        assert!(!o.status.success(), "{size}");
        assert!(text(&o).contains(needle), "{size}: {}", text(&o));
        assert!(!out.exists(), "{size}: an output was written");
    }
}

#[test]
fn folder_mode_skips_finished_cases_and_overwrite_redoes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (inp, out) = (tmp.path().join("imagesTs"), tmp.path().join("predTs"));
    std::fs::create_dir(&inp).unwrap();
    let h = header(DIMS);
    for case in ["a", "b"] {
        for ch in 0..2 {
            image(&inp.join(format!("{case}_000{ch}.nii.gz")), DIMS, &h, ch);
        }
    }
    std::fs::write(inp.join("notes.txt"), "not an image").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["segment", s(bundle()), "-i", s(&inp), "-o", s(&out)];
        args.extend_from_slice(extra);
        let o = e2enc(&args);
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let t = run(&[]);
    assert!(t.contains("segmented 2 case(s)"), "{t}");
    assert_eq!(files_in(&out), ["a.nii.gz", "b.nii.gz"]);

    // Mark a's output so we can tell whether it was redone.
    let marker = b"not redone";
    std::fs::write(out.join("a.nii.gz"), marker).unwrap();
    let t = run(&[]);
    assert!(t.contains("2 already done, skipped"), "{t}");
    assert_eq!(std::fs::read(out.join("a.nii.gz")).unwrap(), marker);

    let t = run(&["--overwrite"]);
    assert!(t.contains("segmented 2 case(s)"), "{t}");
    assert_eq!(nifti::read(&out.join("a.nii.gz")).unwrap().dims, DIMS);
    assert_eq!(files_in(&out), ["a.nii.gz", "b.nii.gz"]);
}

/// Runs a segment that must fail: non-zero exit, a message holding every `needles`, and an
/// output folder left empty.
fn fails(images: &[&Path], needles: &[&str]) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("seg.nii.gz");
    let mut args = vec!["segment", s(bundle())];
    args.extend(images.iter().map(|p| s(p)));
    args.extend(["-o", s(&out)]);
    let o = e2enc(&args);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.starts_with("error: ") || t.contains("\nerror: "), "{t}");
    for n in needles {
        assert!(t.contains(n), "`{n}` missing from: {t}");
    }
    assert!(!t.contains("panicked"), "{t}");
    assert!(files_in(out_dir.path()).is_empty(), "{t}");
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let h = header(DIMS);
    let good = tmp.path().join("good.nii.gz");
    image(&good, DIMS, &h, 0);

    // Same shape, shifted origin.
    let mut moved = h.clone();
    moved.srow_x[3] += 5.0;
    let shifted = tmp.path().join("shifted.nii.gz");
    image(&shifted, DIMS, &moved, 1);
    fails(
        &[&good, &shifted],
        &["good.nii.gz", "shifted.nii.gz", "not on one grid"],
    );

    // Different shape.
    let small = tmp.path().join("small.nii.gz");
    image(&small, [40, 36, 20], &header([40, 36, 20]), 1);
    fails(
        &[&good, &small],
        &["good.nii.gz", "small.nii.gz", "shapes differ"],
    );

    // Missing file.
    let missing = tmp.path().join("missing.nii.gz");
    fails(&[&good, &missing], &["missing.nii.gz"]);

    // Truncated file.
    let full = tmp.path().join("full.nii");
    image(&full, DIMS, &h, 1);
    let bytes = std::fs::read(&full).unwrap();
    let cut = tmp.path().join("cut.nii");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails(&[&good, &cut], &["cut.nii", "truncated"]);

    // Wrong number of channels.
    fails(&[&good], &["2 channel(s)", "1 image(s)"]);
}

#[test]
fn a_4d_input_needs_frame_which_picks_that_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let h = header(DIMS);
    let good = tmp.path().join("good.nii.gz");
    image(&good, DIMS, &h, 1);
    // Frame 0 is something else entirely; frame 1 is the image `one` holds as a 3-D file.
    let one = tmp.path().join("one.nii.gz");
    image(&one, DIMS, &h, 0);
    let mut frames: Vec<f32> = (0..DIMS.iter().product::<usize>())
        .map(|i| (i % 97) as f32)
        .collect();
    frames.extend(ball(DIMS, 0));
    let four = tmp.path().join("four.nii.gz");
    nifti::write_f32_frames(&four, &h, DIMS, 2, &frames).unwrap();

    // Without --frame: the count and both ways out.
    fails(
        &[&four, &good],
        &[
            "four.nii.gz: this file has 2 volumes",
            "--frame K (0..1)",
            "fslsplit",
        ],
    );

    let run = |images: &[&Path], out: &Path, probs: &Path, frame: Option<&str>| {
        let mut args = vec!["segment", s(bundle())];
        args.extend(images.iter().map(|p| s(p)));
        args.extend(["-o", s(out), "--probabilities", s(probs), "--threads", "1"]);
        if let Some(k) = frame {
            args.extend(["--frame", k]);
        }
        e2enc(&args)
    };
    // A frame past the last: refused, nothing written.
    let out = tmp.path().join("past.nii.gz");
    let o = run(&[&four, &good], &out, &tmp.path().join("pp.nii"), Some("2"));
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("--frame 2 is past the last volume") && t.contains("2 volumes (0..1)"),
        "{t}"
    );
    assert!(!out.exists(), "{t}");

    // --frame 1 of the 4-D channel (the 3-D channel read as it is) gives what the 3-D file does.
    let (seg4, probs4) = (tmp.path().join("seg4.nii.gz"), tmp.path().join("p4.nii"));
    let o = run(&[&four, &good], &seg4, &probs4, Some("1"));
    assert!(o.status.success(), "{}", text(&o));
    let (seg3, probs3) = (tmp.path().join("seg3.nii.gz"), tmp.path().join("p3.nii"));
    let o = run(&[&one, &good], &seg3, &probs3, None);
    assert!(o.status.success(), "{}", text(&o));
    let (l4, l3) = (nifti::read(&seg4).unwrap(), nifti::read(&seg3).unwrap());
    assert_eq!(l4.dims, DIMS);
    assert_eq!(l4.data, l3.data);
    for k in 0..2 {
        let a = nifti::read_frame(&probs4, k).unwrap().data;
        let b = nifti::read_frame(&probs3, k).unwrap().data;
        assert_eq!(a, b, "class {k}");
    }
}

#[test]
fn evaluate_scores_identical_labels_perfectly_and_refuses_other_grids() {
    let tmp = tempfile::tempdir().unwrap();
    let dims = [12, 10, 8];
    let h = header(dims);
    let labels: Vec<u16> = (0..12 * 10 * 8)
        .map(|i| {
            let (x, y) = (i % 12, (i / 12) % 10);
            u16::from(x > 3 && x < 9 && y > 2) + u16::from(y > 7)
        })
        .collect();
    let (pred, gt) = (tmp.path().join("p"), tmp.path().join("g"));
    std::fs::create_dir(&pred).unwrap();
    std::fs::create_dir(&gt).unwrap();
    for d in [&pred, &gt] {
        for c in ["c1.nii.gz", "c2.nii.gz"] {
            nifti::write_labels(&d.join(c), &h, dims, &labels).unwrap();
        }
    }
    let json = tmp.path().join("scores.json");
    let (p1, g1) = (pred.join("c1.nii.gz"), gt.join("c1.nii.gz"));
    let o = e2enc(&["evaluate", s(&p1), s(&g1), "--json", s(&json)]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("1.0000") && t.contains("0.00"), "{t}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["mean_dice"], 1.0, "{r}");
    assert_eq!(r["mean_hd95"], 0.0, "{r}");
    assert_eq!(r["classes"].as_array().unwrap().len(), 2, "{r}");

    // Folders, matched by name; the existing report is replaced only with --overwrite.
    let o = e2enc(&["evaluate", s(&pred), s(&gt), "--json", s(&json)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--overwrite"), "{}", text(&o));
    let o = e2enc(&[
        "evaluate",
        s(&pred),
        s(&gt),
        "--json",
        s(&json),
        "--overwrite",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["mean"]["mean_dice"], 1.0, "{r}");
    assert!(r["cases"]["c2.nii.gz"].is_object(), "{r}");

    // Another grid: a clear error naming both files.
    let mut moved = h.clone();
    moved.srow_z[3] = 99.0;
    let other = tmp.path().join("other.nii.gz");
    nifti::write_labels(&other, &moved, dims, &labels).unwrap();
    let o = e2enc(&["evaluate", s(&p1), s(&other)]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("c1.nii.gz") && t.contains("other.nii.gz") && t.contains("affines differ"),
        "{t}"
    );

    // A prediction without ground truth.
    std::fs::copy(&p1, pred.join("c3.nii.gz")).unwrap();
    let o = e2enc(&["evaluate", s(&pred), s(&gt)]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no ground truth for: c3.nii.gz"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_bundle_without_preprocessing_is_refused_with_the_ways_out() {
    let tmp = tempfile::tempdir().unwrap();
    // A bundle (signed by its maker) whose manifest has no preprocessing.
    let b = tmp.path().join("bundle");
    std::fs::create_dir(&b).unwrap();
    for f in std::fs::read_dir(bundle()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, b.join(f.file_name().unwrap())).unwrap();
    }
    let man = b.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&man).unwrap()).unwrap();
    let prep = m["model"]["preprocessing"].take();
    assert!(prep.is_object());
    std::fs::write(&man, m.to_string()).unwrap();
    common::resign(&b);

    let h = header(DIMS);
    let (a, c) = (tmp.path().join("a.nii.gz"), tmp.path().join("c.nii.gz"));
    image(&a, DIMS, &h, 0);
    image(&c, DIMS, &h, 1);
    let out = tmp.path().join("seg.nii.gz");
    let seg = |extra: &[&str]| {
        let mut args = vec!["segment", s(&b), s(&a), s(&c), "-o", s(&out), "--overwrite"];
        args.extend_from_slice(extra);
        e2enc(&args)
    };
    let o = seg(&[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("carries no preprocessing config") && t.contains("\"preprocessing\": {"),
        "{t}"
    );
    assert!(!out.exists());

    // No resampling: the (z, y, x) grid 24x36x40 pads to 32x36x40, 1x2x2 tiles of 32^3.
    let o = seg(&["--spacing-as-is"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("--spacing-as-is: no resampling"), "{t}");
    assert!(t.contains(" 4 tiles"), "{t}");

    let pf = tmp.path().join("prep.json");
    std::fs::write(&pf, prep.to_string()).unwrap();
    let o = seg(&["--preprocessing", s(&pf)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(" 1 tiles"), "{}", text(&o));

    // A config for the wrong number of channels is refused by name.
    let mut one = prep.clone();
    one["normalization"].as_array_mut().unwrap().pop();
    std::fs::write(&pf, one.to_string()).unwrap();
    let o = seg(&["--preprocessing", s(&pf)]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("normalises 1 channels but the network takes 2"),
        "{}",
        text(&o)
    );
}

#[test]
fn no_output_clobbers_an_input_another_output_or_an_existing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let h = header(DIMS);
    let (a, b) = (tmp.path().join("a.nii.gz"), tmp.path().join("b.nii.gz"));
    image(&a, DIMS, &h, 0);
    image(&b, DIMS, &h, 1);
    let before = |p: &Path| std::fs::read(p).unwrap();
    let (a0, b0) = (before(&a), before(&b));
    let out = tmp.path().join("seg.nii.gz");
    let refused = |extra: &[&str], needles: &[&str]| {
        let mut args = vec!["segment", s(bundle()), s(&a), s(&b)];
        args.extend_from_slice(extra);
        let o = e2enc(&args);
        let t = text(&o);
        assert!(!o.status.success(), "{extra:?}: {t}");
        for n in needles {
            assert!(t.contains(n), "{extra:?}: `{n}` missing from: {t}");
        }
        assert!(!t.contains("panicked"), "{t}");
    };
    // An output naming an input, even with --overwrite, also through `..` or a hard link.
    refused(
        &["-o", s(&out), "--probabilities", s(&a), "--overwrite"],
        &["input"],
    );
    let dotted = tmp.path().join("x").join("..").join("b.nii.gz");
    std::fs::create_dir(tmp.path().join("x")).unwrap();
    refused(&["-o", s(&dotted), "--overwrite"], &["input"]);
    let link = tmp.path().join("link.nii.gz");
    std::fs::hard_link(&a, &link).unwrap();
    refused(&["-o", s(&link), "--overwrite"], &["input"]);
    // Two outputs naming one file.
    refused(
        &["-o", s(&out), "--probabilities", s(&out)],
        &["-o", "--probabilities", "seg.nii.gz"],
    );
    // Existing probabilities or preview files without --overwrite.
    let probs = tmp.path().join("probs.nii.gz");
    let png = tmp.path().join("seg.png");
    std::fs::write(&probs, b"keep me").unwrap();
    std::fs::write(&png, b"keep me too").unwrap();
    refused(
        &["-o", s(&out), "--probabilities", s(&probs)],
        &["probs.nii.gz", "--overwrite"],
    );
    refused(
        &["-o", s(&out), "--preview", s(&png)],
        &["seg.png", "--overwrite"],
    );
    // Wrong extensions.
    refused(
        &["-o", s(&out), "--preview", s(&tmp.path().join("p.nii"))],
        &[".png"],
    );
    assert_eq!(before(&probs), b"keep me");
    assert_eq!(before(&png), b"keep me too");
    assert_eq!((before(&a), before(&b)), (a0, b0));
    assert!(!out.exists());
    // Folder mode: the output folder may not be the input folder.
    let inp = tmp.path().join("in");
    std::fs::create_dir(&inp).unwrap();
    image(&inp.join("c_0000.nii.gz"), DIMS, &h, 0);
    image(&inp.join("c_0001.nii.gz"), DIMS, &h, 1);
    let o = e2enc(&["segment", s(bundle()), "-i", s(&inp), "-o", s(&inp)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("input folder"), "{}", text(&o));
    assert_eq!(files_in(&inp), ["c_0000.nii.gz", "c_0001.nii.gz"]);
}

/// The sliding window on a CUDA bundle (f32, batch 4: tiles go to the device four at a time),
/// run by the host emulation: labels identical to the CPU bundle's, probabilities equal to
/// rounding, with TTA.
#[test]
fn segment_on_a_cuda_bundle_equals_the_cpu_bundle() {
    if !bundle_common::nvrtc_or_skip("segment_on_a_cuda_bundle_equals_the_cpu_bundle") {
        return;
    }
    let model = bundle().parent().unwrap().join("m");
    let tmp = tempfile::tempdir().unwrap();
    let gpu = tmp.path().join("gpu");
    let o = e2enc(&[
        "compile",
        s(&model),
        "-o",
        s(&gpu),
        "--target",
        "cuda-sm90",
        "--precision",
        "f32",
        "--batch",
        "4",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let h = header(DIMS);
    let (a, b) = (tmp.path().join("t1.nii.gz"), tmp.path().join("ct.nii"));
    image(&a, DIMS, &h, 2);
    image(&b, DIMS, &h, 3);
    let mut outs = Vec::new();
    for (name, bundle, more) in [
        ("cpu", bundle().to_path_buf(), vec![]),
        ("gpu", gpu.clone(), vec!["--emulate"]),
    ] {
        let (seg, probs) = (
            tmp.path().join(format!("{name}.nii.gz")),
            tmp.path().join(format!("{name}-p.nii.gz")),
        );
        let mut args = vec![
            "segment",
            s(&bundle),
            s(&a),
            s(&b),
            "-o",
            s(&seg),
            "--tta",
            "--probabilities",
            s(&probs),
        ];
        args.extend(more);
        let o = e2enc(&args);
        assert!(o.status.success(), "{name}: {}", text(&o));
        outs.push((
            nifti::read(&seg).unwrap(),
            nifti::read_frame(&probs, 1).unwrap(),
        ));
    }
    let ((cs, cp), (gs, gp)) = (&outs[0], &outs[1]);
    assert_eq!(
        cs.data, gs.data,
        "labels differ between the CPU and the CUDA bundle"
    );
    let worst = cp
        .data
        .iter()
        .zip(&gp.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "probabilities differ by {worst}");
}

/// Runs `segment` on a folder with `extra` arguments; returns (success, output text).
fn segment_folder(inp: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["segment", s(bundle()), "-i", s(inp), "-o", s(out)];
    args.extend_from_slice(extra);
    let o = e2enc(&args);
    (o.status.success(), text(&o))
}

/// Reads a `--summary` file: (case, status) in order, and the whole value.
fn summary(p: &Path) -> (Vec<(String, String)>, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let cases = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["case"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (cases, v)
}

#[test]
fn parts_cover_a_folder_exactly_once_and_rerun_skips_with_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let (inp, out) = (tmp.path().join("imagesTs"), tmp.path().join("predTs"));
    std::fs::create_dir(&inp).unwrap();
    let h = header(DIMS);
    let names = ["c1", "c2", "c3", "c4", "c5"];
    for case in names {
        for ch in 0..2 {
            image(&inp.join(format!("{case}_000{ch}.nii.gz")), DIMS, &h, ch);
        }
    }
    let sum = |k: usize| out.join(format!("part-{k}.json"));
    let pngs = tmp.path().join("png");

    // Part 1 of 2: the cases at even indices of the sorted list.
    let (ok, t) = segment_folder(
        &inp,
        &out,
        &[
            "--part",
            "1/2",
            "--summary",
            s(&sum(1)),
            "--preview",
            s(&pngs),
        ],
    );
    assert!(ok, "{t}");
    assert!(
        t.contains("part 1/2: 3 of the 5 case(s)") && t.contains("segmented 3 case(s)"),
        "{t}"
    );
    assert_eq!(
        files_in(&out),
        ["c1.nii.gz", "c3.nii.gz", "c5.nii.gz", "part-1.json"]
    );
    assert_eq!(files_in(&pngs), ["c1.png", "c3.png", "c5.png"]);
    let (cases, v) = summary(&sum(1));
    let want = |names: &[&str], status: &str| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), status.to_string()))
            .collect()
    };
    assert_eq!(cases, want(&["c1", "c3", "c5"], "segmented"), "{v}");
    assert_eq!(v["format"], "e2enc-segment-summary/1", "{v}");
    assert_eq!(v["part"], serde_json::json!({"k": 1, "n": 2}), "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["bundle"], s(bundle()), "{v}");
    assert_eq!(v["totals"]["cases"], 3, "{v}");
    assert_eq!(v["totals"]["segmented"], 3, "{v}");
    assert_eq!(v["totals"]["skipped"], 0, "{v}");
    assert_eq!(v["totals"]["failed"], 0, "{v}");
    let c3 = &v["cases"][1];
    assert_eq!(c3["outputs"]["labels"], s(&out.join("c3.nii.gz")), "{v}");
    assert_eq!(c3["outputs"]["preview"], s(&pngs.join("c3.png")), "{v}");
    assert!(c3["outputs"]["probabilities"].is_null(), "{v}");
    assert!(c3["seconds"].as_f64().unwrap() > 0.0, "{v}");

    // Part 2 of 2: the others; the union is every case, once.
    let (ok, t) = segment_folder(&inp, &out, &["--part", "2/2", "--summary", s(&sum(2))]);
    assert!(ok, "{t}");
    assert!(t.contains("segmented 2 case(s)"), "{t}");
    let (cases, _) = summary(&sum(2));
    assert_eq!(cases, want(&["c2", "c4"], "segmented"));
    assert_eq!(
        files_in(&out),
        [
            "c1.nii.gz",
            "c2.nii.gz",
            "c3.nii.gz",
            "c4.nii.gz",
            "c5.nii.gz",
            "part-1.json",
            "part-2.json"
        ]
    );
    for n in names {
        assert_eq!(
            nifti::read(&out.join(format!("{n}.nii.gz"))).unwrap().dims,
            DIMS
        );
    }

    // Rerunning part 1 skips its finished cases (left untouched) and says so; its own summary
    // is replaced without --overwrite.
    let marker = b"not redone";
    std::fs::write(out.join("c3.nii.gz"), marker).unwrap();
    let (ok, t) = segment_folder(&inp, &out, &["--part", "1/2", "--summary", s(&sum(1))]);
    assert!(ok, "{t}");
    assert!(
        t.contains("segmented 0 case(s) (3 already done, skipped)"),
        "{t}"
    );
    assert_eq!(std::fs::read(out.join("c3.nii.gz")).unwrap(), marker);
    let (cases, v) = summary(&sum(1));
    assert_eq!(cases, want(&["c1", "c3", "c5"], "skipped"), "{v}");
    assert_eq!(v["totals"]["skipped"], 3, "{v}");
    assert_eq!(v["totals"]["segmented"], 0, "{v}");

    // A failed case is reported in the summary with its message; the others go on.
    std::fs::remove_file(out.join("c3.nii.gz")).unwrap();
    std::fs::remove_file(out.join("c5.nii.gz")).unwrap();
    std::fs::write(inp.join("c5_0001.nii.gz"), b"not a volume").unwrap();
    let (ok, t) = segment_folder(&inp, &out, &["--part", "1/2", "--summary", s(&sum(1))]);
    assert!(!ok, "{t}");
    assert!(t.contains("1 of 2 cases failed: c5"), "{t}");
    let (cases, v) = summary(&sum(1));
    assert_eq!(
        cases,
        [
            ("c1".to_string(), "skipped".to_string()),
            ("c3".into(), "segmented".into()),
            ("c5".into(), "failed".into())
        ],
        "{v}"
    );
    assert!(
        v["cases"][2]["error"]
            .as_str()
            .unwrap()
            .contains("c5_0001.nii.gz"),
        "{v}"
    );
    assert_eq!(v["totals"]["failed"], 1, "{v}");
    assert!(!out.join("c5.nii.gz").exists());

    // Another part's summary, or any other file, is not replaced without --overwrite.
    let (ok, t) = segment_folder(&inp, &out, &["--part", "2/2", "--summary", s(&sum(1))]);
    assert!(!ok, "{t}");
    assert!(
        t.contains("is the summary of part 1/2, this run is part 2/2"),
        "{t}"
    );
    let notes = tmp.path().join("notes.json");
    std::fs::write(&notes, b"{}").unwrap();
    let (ok, t) = segment_folder(&inp, &out, &["--part", "2/2", "--summary", s(&notes)]);
    assert!(!ok, "{t}");
    assert!(t.contains("not an e2enc segment summary"), "{t}");
    assert_eq!(std::fs::read(&notes).unwrap(), b"{}");

    // `evaluate` takes the merged folder (the .json summaries are not label maps).
    image(&inp.join("c5_0001.nii.gz"), DIMS, &h, 1);
    let (ok, t) = segment_folder(&inp, &out, &["--part", "1/2"]);
    assert!(ok, "{t}");
    let o = e2enc(&["evaluate", s(&out), s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("mean over 5 cases"), "{}", text(&o));
}

#[test]
fn bad_part_values_fail_clearly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    std::fs::create_dir(&inp).unwrap();
    let h = header(DIMS);
    for ch in 0..2 {
        image(&inp.join(format!("c_000{ch}.nii.gz")), DIMS, &h, ch);
    }
    let out = tmp.path().join("out");
    let sum = tmp.path().join("sum.json");
    for (part, needle) in [
        ("3/2", "K must be 1 to 2"),
        ("0/2", "K must be 1 to 2"),
        ("1/0", "N must be 1 to 100000"),
        ("1/100001", "N must be 1 to 100000"),
        ("x", "is not K/N"),
        ("1/2/3", "is not K/N"),
        ("-1/2", "is not K/N"),
        ("+1/2", "is not K/N"),
        ("1/", "is not K/N"),
        ("99999999999999999999999/2", "at most 100000 parts"),
    ] {
        let (ok, t) = segment_folder(&inp, &out, &["--part", part, "--summary", s(&sum)]);
        assert!(!ok, "{part}: {t}");
        assert!(t.contains(needle), "{part}: `{needle}` missing from: {t}");
        assert!(t.contains("--part"), "{part}: {t}");
        assert!(!t.contains("panicked"), "{part}: {t}");
    }
    // `--help` teaches it.
    let o = e2enc(&["segment", "--help"]);
    let t = text(&o);
    for n in [
        "--part <K/N>",
        "i % N",
        "SLURM_ARRAY_TASK_ID",
        "--summary",
        "\"status\"",
    ] {
        assert!(t.contains(n), "`{n}` missing from --help: {t}");
    }

    // Without -i there is no folder to shard.
    let a = inp.join("c_0000.nii.gz");
    let b = inp.join("c_0001.nii.gz");
    let seg = tmp.path().join("seg.nii.gz");
    let o = e2enc(&[
        "segment",
        s(bundle()),
        s(&a),
        s(&b),
        "-o",
        s(&seg),
        "--part",
        "1/2",
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("shards the cases of a folder") && t.contains("-i"),
        "{t}"
    );
    let o = e2enc(&[
        "segment",
        s(bundle()),
        s(&a),
        s(&b),
        "-o",
        s(&seg),
        "--summary",
        s(&sum),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--summary reports a folder run"),
        "{}",
        text(&o)
    );
    let (ok, t) = segment_folder(&inp, &out, &["--summary", s(&tmp.path().join("sum.txt"))]);
    assert!(!ok, "{t}");
    assert!(t.contains("must end in .json"), "{t}");
    assert_eq!(files_in(tmp.path()), ["in"]);
    assert_eq!(files_in(&inp), ["c_0000.nii.gz", "c_0001.nii.gz"]);

    // More parts than cases: the empty parts succeed and do nothing.
    let (ok, t) = segment_folder(&inp, &out, &["--part", "2/3", "--summary", s(&sum)]);
    assert!(ok, "{t}");
    assert!(t.contains("part 2/3: 0 of the 1 case(s)"), "{t}");
    assert_eq!(files_in(&out), Vec::<String>::new());
    let (cases, v) = summary(&sum);
    assert!(cases.is_empty(), "{v}");
    assert_eq!(v["totals"]["cases"], 0, "{v}");
}

/// A channel given as a NIfTI-1 `.hdr`/`.img` pair (named by either half) segments exactly as
/// the same image in one `.nii`.
#[test]
fn a_hdr_img_pair_segments_as_the_single_file_does() {
    let tmp = tempfile::tempdir().unwrap();
    let h = header(DIMS);
    let (a, b) = (tmp.path().join("a.nii"), tmp.path().join("b.nii.gz"));
    image(&a, DIMS, &h, 2);
    image(&b, DIMS, &h, 3);
    // The pair: the header with the pair magic and vox_offset 0, the voxels in the .img.
    let bytes = std::fs::read(&a).unwrap();
    let mut hdr = bytes[..348].to_vec();
    hdr[344..348].copy_from_slice(b"ni1\0");
    hdr[108..112].copy_from_slice(&0f32.to_le_bytes());
    std::fs::write(tmp.path().join("a.hdr"), &hdr).unwrap();
    std::fs::write(tmp.path().join("a.img"), &bytes[352..]).unwrap();

    let seg = |first: &Path, out: &str| {
        let out = tmp.path().join(out);
        let o = e2enc(&[
            "segment",
            s(bundle()),
            s(first),
            s(&b),
            "-o",
            s(&out),
            "--threads",
            "1",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        nifti::read(&out).unwrap()
    };
    let single = seg(&a, "single.nii.gz");
    for half in ["a.hdr", "a.img"] {
        let v = seg(&tmp.path().join(half), &format!("from_{half}.nii.gz"));
        assert_eq!(v.data, single.data, "{half}");
        assert!(nifti::same_grid(&v, &single).is_ok(), "{half}");
    }
}
