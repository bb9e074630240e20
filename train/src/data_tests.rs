//! Tests of the raw dataset reader, the planner and case loading, on tiny NIfTI files written
//! into temporary folders.

use super::*;
use e2enc_segment::nifti::{write_f32, write_labels, Header};
use e2enc_segment::preprocess::Normalization;

fn write_img(path: &Path, dims: [usize; 3], spacing: [f64; 3], data: &[f32]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_f32(path, &Header::new(dims, spacing), dims, data).unwrap();
}

fn write_lab(path: &Path, dims: [usize; 3], spacing: [f64; 3], data: &[u16]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_labels(path, &Header::new(dims, spacing), dims, data).unwrap();
}

const DIMS: [usize; 3] = [4, 3, 2];
const SP: [f64; 3] = [1.0, 1.0, 2.0];

fn image() -> Vec<f32> {
    (0..24).map(|i| i as f32 + 1.0).collect()
}

fn label() -> Vec<u16> {
    (0..24).map(|i| (i % 3) as u16).collect()
}

/// A v1 dataset with two channels and one training case.
fn v1_dataset(dir: &Path) {
    std::fs::write(
        dir.join("dataset.json"),
        r#"{"name": "Tiny", "modality": {"0": "CT", "1": "MRI"},
            "labels": {"0": "background", "1": "a", "2": "b"},
            "numTraining": 1,
            "training": [{"image": "./imagesTr/c1.nii.gz", "label": "./labelsTr/c1.nii.gz"}],
            "test": []}"#,
    )
    .unwrap();
    write_img(&dir.join("imagesTr/c1_0000.nii.gz"), DIMS, SP, &image());
    write_img(&dir.join("imagesTr/c1_0001.nii.gz"), DIMS, SP, &image());
    write_lab(&dir.join("labelsTr/c1.nii.gz"), DIMS, SP, &label());
}

fn v2_dataset(dir: &Path) {
    std::fs::write(
        dir.join("dataset.json"),
        r#"{"channel_names": {"0": "T1"}, "labels": {"background": 0, "gm": 1, "wm": 2},
            "numTraining": 2, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    for id in ["b", "a"] {
        write_img(
            &dir.join(format!("imagesTr/{id}_0000.nii.gz")),
            DIMS,
            SP,
            &image(),
        );
        write_lab(
            &dir.join(format!("labelsTr/{id}.nii.gz")),
            DIMS,
            SP,
            &label(),
        );
    }
    write_img(&dir.join("imagesTs/t_0000.nii.gz"), DIMS, SP, &image());
    write_lab(&dir.join("labelsTs/t.nii.gz"), DIMS, SP, &label());
}

fn err(r: Result<impl std::fmt::Debug, TrainError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn v1_dataset_json_is_read() {
    let t = tempfile::tempdir().unwrap();
    v1_dataset(t.path());
    let ds = RawDataset::open(t.path()).unwrap();
    assert_eq!(ds.name, "Tiny");
    assert_eq!(ds.channel_names, ["CT", "MRI"]);
    assert_eq!(ds.labels.iter().map(|l| l.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(ds.file_ending, ".nii.gz");
    assert_eq!(ds.training.len(), 1);
    assert_eq!(ds.training[0].id, "c1");
    assert!(ds.training[0].images[1].ends_with("imagesTr/c1_0001.nii.gz"));
    assert!(ds.test.is_empty());
    let raw = ds.read_case(&ds.training[0]).unwrap();
    assert_eq!(raw.dims, DIMS);
    assert_eq!(raw.spacing, SP);
    // Input axes (x, y, z), z fastest: the x-fastest NIfTI buffer transposed.
    let xyz = |v: &[f32]| transpose(v, [2, 3, 4], [2, 1, 0]).0;
    assert_eq!(raw.channels[0], xyz(&image()));
    assert_eq!(raw.channels[0][1], 1.0 + 4.0 * 3.0); // (x 0, y 0, z 1)
    let l: Vec<f32> = label().iter().map(|&v| f32::from(v)).collect();
    let got: Vec<f32> = raw.label.unwrap().iter().map(|&v| f32::from(v)).collect();
    assert_eq!(got, xyz(&l));
    assert_eq!(ds.num_classes(), 3);
}

#[test]
fn v2_dataset_json_lists_cases_sorted_and_test_cases() {
    let t = tempfile::tempdir().unwrap();
    v2_dataset(t.path());
    let ds = RawDataset::open(t.path()).unwrap();
    assert_eq!(ds.channel_names, ["T1"]);
    let ids: Vec<_> = ds.training.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(ds.test.len(), 1);
    assert_eq!(ds.test[0].id, "t");
    assert!(ds.test[0]
        .label
        .as_ref()
        .unwrap()
        .ends_with("labelsTs/t.nii.gz"));
    assert_eq!(ds.labels[2], (2, "wm".to_string()));
}

#[test]
fn missing_files_are_named() {
    let t = tempfile::tempdir().unwrap();
    v1_dataset(t.path());
    std::fs::remove_file(t.path().join("imagesTr/c1_0001.nii.gz")).unwrap();
    let e = err(RawDataset::open(t.path()));
    assert!(e.contains("c1_0001.nii.gz") && e.contains("missing"), "{e}");

    let t = tempfile::tempdir().unwrap();
    v1_dataset(t.path());
    std::fs::remove_file(t.path().join("labelsTr/c1.nii.gz")).unwrap();
    let e = err(RawDataset::open(t.path()));
    assert!(
        e.contains("labelsTr/c1.nii.gz") && e.contains("label file"),
        "{e}"
    );

    // v2: an image without a label is named, not dropped.
    let t = tempfile::tempdir().unwrap();
    v2_dataset(t.path());
    std::fs::remove_file(t.path().join("labelsTr/b.nii.gz")).unwrap();
    let e = err(RawDataset::open(t.path()));
    assert!(
        e.contains("imagesTr/b_0000.nii.gz") && e.contains("no label"),
        "{e}"
    );

    let t = tempfile::tempdir().unwrap();
    let e = err(RawDataset::open(t.path()));
    assert!(e.contains("dataset.json"), "{e}");
}

#[test]
fn bad_dataset_json_is_refused_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    v2_dataset(t.path());
    let cases = [
        (r#"{"labels": {"background": 0}}"#, "channel_names"),
        (
            r#"{"channel_names": {"0": "T1"}, "labels": {"background": 0}}"#,
            "file_ending",
        ),
        (
            r#"{"channel_names": {"0": "T1"}, "labels": {"gm": 1}, "file_ending": ".nii.gz"}"#,
            "background",
        ),
        (
            r#"{"channel_names": {"0": "T1"}, "labels": {"background": 0, "tumour": [1, 2]}, "file_ending": ".nii.gz"}"#,
            "region-based",
        ),
        (
            r#"{"channel_names": {"1": "T1"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}"#,
            "channel index",
        ),
        ("[1, 2]", "not a JSON object"),
    ];
    for (json, want) in cases {
        std::fs::write(t.path().join("dataset.json"), json).unwrap();
        let e = err(RawDataset::open(t.path()));
        assert!(
            e.contains("dataset.json") && e.contains(want),
            "{json}: {e}"
        );
    }
}

#[test]
fn label_values_outside_the_list_and_grid_mismatches_are_refused() {
    let t = tempfile::tempdir().unwrap();
    v1_dataset(t.path());
    let mut l = label();
    l[5] = 7;
    write_lab(&t.path().join("labelsTr/c1.nii.gz"), DIMS, SP, &l);
    let ds = RawDataset::open(t.path()).unwrap();
    let e = err(ds.read_case(&ds.training[0]));
    assert!(
        e.contains("labelsTr/c1.nii.gz") && e.contains("label value 7"),
        "{e}"
    );

    let t = tempfile::tempdir().unwrap();
    v1_dataset(t.path());
    write_img(
        &t.path().join("imagesTr/c1_0001.nii.gz"),
        [4, 2, 3],
        SP,
        &image(),
    );
    let ds = RawDataset::open(t.path()).unwrap();
    let e = err(ds.read_case(&ds.training[0]));
    assert!(
        e.contains("c1_0001.nii.gz") && e.contains("shapes differ"),
        "{e}"
    );

    let t = tempfile::tempdir().unwrap();
    v1_dataset(t.path());
    write_lab(
        &t.path().join("labelsTr/c1.nii.gz"),
        DIMS,
        [1.0, 1.0, 3.0],
        &label(),
    );
    let ds = RawDataset::open(t.path()).unwrap();
    let e = err(ds.read_case(&ds.training[0]));
    assert!(
        e.contains("labelsTr/c1.nii.gz") && e.contains("affine"),
        "{e}"
    );
}

#[test]
fn target_spacing_is_the_median_when_isotropic_enough() {
    let sp = [[1.0, 0.8, 0.8], [2.0, 0.7, 0.7], [3.0, 0.9, 0.9]];
    let sz = [[100, 200, 200]; 3];
    assert_eq!(target_spacing(&sp, &sz), [2.0, 0.8, 0.8]);
}

#[test]
fn anisotropic_axis_takes_the_tenth_percentile() {
    // Median z spacing 5 > 3 * 0.8 and median z size 40 * 3 < 200: anisotropic.
    let sp = [
        [3.0, 0.8, 0.8],
        [4.0, 0.8, 0.8],
        [5.0, 0.8, 0.8],
        [6.0, 0.8, 0.8],
        [7.0, 0.8, 0.8],
    ];
    let sz = [[40, 200, 200]; 5];
    let t = target_spacing(&sp, &sz);
    // np.percentile([3, 4, 5, 6, 7], 10) = 3.4
    assert!((t[0] - 3.4).abs() < 1e-12, "{t:?}");
    assert_eq!(&t[1..], &[0.8, 0.8]);
    // Not enough voxel anisotropy (size 100 * 3 >= 200): the median stays.
    let sz = [[100, 200, 200]; 5];
    assert_eq!(target_spacing(&sp, &sz), [5.0, 0.8, 0.8]);
    // A 10th percentile below the other axes is raised to just above them.
    let sp = [
        [0.5, 1.0, 1.0],
        [0.6, 1.0, 1.0],
        [5.0, 1.0, 1.0],
        [6.0, 1.0, 1.0],
        [7.0, 1.0, 1.0],
    ];
    let sz = [[40, 200, 200]; 5];
    let t = target_spacing(&sp, &sz);
    assert!((t[0] - (1.0 + 1e-5)).abs() < 1e-12, "{t:?}");
}

fn stats(reduction: f64, fg: Vec<f32>) -> CaseStats {
    CaseStats {
        spacing: [1.0; 3],
        cropped_shape: [10; 3],
        size_reduction: reduction,
        foreground: vec![fg, Vec::new()],
    }
}

#[test]
fn normalisation_follows_nnunet_v1() {
    let names = ["CT".to_string(), "T2".to_string()];
    let fg: Vec<f32> = (0..=200).map(|i| i as f32).collect();
    let s = [
        stats(0.5, fg.clone()),
        stats(0.6, Vec::new()),
        stats(1.0, fg),
    ];
    let cfg = plan_from_stats(&s, &names).unwrap();
    assert_eq!(cfg.axis_order, [2, 1, 0]);
    let Normalization::Ct {
        lower,
        upper,
        mean,
        std,
    } = cfg.normalization[0]
    else {
        panic!("{:?}", cfg.normalization[0]);
    };
    // 402 pooled values 0,0,1,1,...,200,200: np.percentile(.., 0.5) = 1.0 (index 2.005),
    // 99.5 -> 199.0; mean 100; population sd = sqrt((200 * 202) / 12) = 58.02...
    assert!((lower - 1.0).abs() < 1e-9, "{lower}");
    assert!((upper - 199.0).abs() < 1e-9, "{upper}");
    assert!((mean - 100.0).abs() < 1e-9);
    assert!(
        (std - (200.0f64 * 202.0 / 12.0).sqrt()).abs() < 1e-9,
        "{std}"
    );
    // Median size reduction 0.6 < 0.75: the non-CT channel uses the non-zero mask.
    assert_eq!(
        cfg.normalization[1],
        Normalization::ZScore {
            use_nonzero_mask: true
        }
    );
    let s = [
        stats(0.5, vec![1.0, 2.0]),
        stats(0.8, vec![]),
        stats(0.9, vec![]),
    ];
    let cfg = plan_from_stats(&s, &names).unwrap();
    assert_eq!(
        cfg.normalization[1],
        Normalization::ZScore {
            use_nonzero_mask: false
        }
    );
    let e = err(plan_from_stats(&[stats(1.0, vec![])], &names));
    assert!(e.contains("foreground"), "{e}");
}

#[test]
fn plan_serializes_to_what_preprocess_reads() {
    let t = tempfile::tempdir().unwrap();
    v1_dataset(t.path());
    let ds = RawDataset::open(t.path()).unwrap();
    let cfg = plan(&ds).unwrap();
    // Spacing in network axes (z, y, x).
    assert_eq!(cfg.target_spacing, [2.0, 1.0, 1.0]);
    let json = serde_json::to_value(&cfg).unwrap();
    let back: PreprocessingConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, cfg);
    let case = load_case(&ds, &ds.training[0], &cfg).unwrap();
    // No zero voxel: no crop; spacing already the target: no resampling; axes reversed.
    assert_eq!(case.shape, [2, 3, 4]);
    assert_eq!(case.channels.len(), 2);
    // Network axes (z, y, x), x fastest: the NIfTI buffer itself.
    assert_eq!(case.label, label());
}

#[test]
fn labels_follow_the_crop_and_resampling() {
    let t = tempfile::tempdir().unwrap();
    v2_dataset(t.path());
    // Image 8x4x4 (x, y, z) at 1 mm, zero for x < 2; label 1 for x >= 4.
    let dims = [8, 4, 4];
    let img: Vec<f32> = (0..128)
        .map(|i| if i % 8 < 2 { 0.0 } else { 1.0 + i as f32 })
        .collect();
    let lab: Vec<u16> = (0..128).map(|i| u16::from(i % 8 >= 4)).collect();
    for id in ["a", "b"] {
        write_img(
            &t.path().join(format!("imagesTr/{id}_0000.nii.gz")),
            dims,
            [1.0; 3],
            &img,
        );
        write_lab(
            &t.path().join(format!("labelsTr/{id}.nii.gz")),
            dims,
            [1.0; 3],
            &lab,
        );
    }
    let ds = RawDataset::open(t.path()).unwrap();
    let cfg = PreprocessingConfig {
        axis_order: AXIS_ORDER,
        target_spacing: [1.0, 1.0, 0.5],
        normalization: vec![Normalization::ZScore {
            use_nonzero_mask: false,
        }],
        anisotropy_threshold: 3.0,
    };
    let case = load_case(&ds, &ds.training[0], &cfg).unwrap();
    // Cropped x: 6 voxels (2..8), resampled to 12.
    assert_eq!(case.shape, [4, 4, 12]);
    let row: Vec<u16> = case.label[..12].to_vec();
    // Label 1 on old x 4..8 = cropped 2..6; at 0.5 mm the boundary sits between new 3 and 4
    // (linear masks reach exactly 0.5 at new index 4's lower neighbour: 3 -> 0.25, 4 -> 0.75).
    assert_eq!(row, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert!(case.label.chunks(12).all(|r| r == row));
}

#[test]
fn label_resampling_writes_later_labels_over_earlier_ones() {
    // 1-D along the last axis: [1, 2] to 4 samples: masks 1 -> [1, .75, .25, 0],
    // 2 -> [0, .25, .75, 1].
    let out = resample_labels(&[1, 2], [1, 1, 2], [1, 1, 4], None).unwrap();
    assert_eq!(out, [1, 1, 2, 2]);
    let out = resample_labels(&[0, 3, 0], [1, 1, 3], [1, 1, 6], None).unwrap();
    // mask 3 at x = (o + .5) / 2 - .5: o=1 -> .25 (0.25), o=2 -> .75 (0.75), ...
    assert_eq!(out, [0, 0, 3, 3, 0, 0]);
}
