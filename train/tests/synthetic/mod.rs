//! A tiny synthetic nnU-Net dataset and model for training tests (also used by the e2enc
//! crate's MPI test through `#[path]`).
#![allow(dead_code)]

use std::path::Path;

use e2enc_segment::nifti::{write_f32, write_labels, Header};

const DIMS: [usize; 3] = [20, 20, 12];

/// Two cases: a bright box (label 1) and a dimmer ball (label 2) on a noisy background.
pub fn dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("imagesTr")).unwrap();
    std::fs::create_dir_all(dir.join("labelsTr")).unwrap();
    std::fs::write(
        dir.join("dataset.json"),
        r#"{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "box": 1, "ball": 2},
            "numTraining": 2, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    for (case, shift) in [("a", 0usize), ("b", 3)] {
        let n: usize = DIMS.iter().product();
        let mut img = vec![0f32; n];
        let mut lab = vec![0u16; n];
        for z in 0..DIMS[2] {
            for y in 0..DIMS[1] {
                for x in 0..DIMS[0] {
                    let i = x + DIMS[0] * (y + DIMS[1] * z);
                    let noise = ((i * 7919 + shift * 31) % 97) as f32 / 97.0 * 0.3;
                    img[i] = 1.0 + noise;
                    if (3 + shift..9 + shift).contains(&x) && (4..10).contains(&y) && z >= 3 {
                        img[i] = 3.0 + noise;
                        lab[i] = 1;
                    }
                    let d2 =
                        (x as i64 - 14).pow(2) + (y as i64 - 14).pow(2) + (z as i64 - 6).pow(2);
                    if d2 <= 9 {
                        img[i] = 2.0 + noise;
                        lab[i] = 2;
                    }
                }
            }
        }
        let h = Header::new(DIMS, [1.0, 1.0, 1.5]);
        write_f32(
            &dir.join(format!("imagesTr/{case}_0000.nii.gz")),
            &h,
            DIMS,
            &img,
        )
        .unwrap();
        write_labels(&dir.join(format!("labelsTr/{case}.nii.gz")), &h, DIMS, &lab).unwrap();
    }
}

pub fn model(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("model.json");
    std::fs::write(
        &p,
        r#"{"format": "e2enc-model", "version": 1, "in_channels": 1, "num_classes": 3,
            "base_width": 4, "max_width": 8, "pool_kernels": [[1, 2, 2], [2, 2, 2]],
            "patch_size": [8, 16, 16], "deep_supervision_heads": 1, "shift_groups": 3}"#,
    )
    .unwrap();
    p
}
