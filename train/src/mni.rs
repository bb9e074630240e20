//! The README's demo dataset: an nnU-Net raw folder built from the MNI ICBM152 2009a templates
//! (T1 and grey/white matter probability maps, fetched by `scripts/fetch-test-data.sh`).
//!
//! [`build_mni_dataset`] reads the three templates (same grid required), average-pools them by
//! `factor` (blocks of `factor`^3 voxels; a remainder of fewer than `factor` voxels at the far end
//! of an axis is dropped, which on these templates is background), with the affine moved to the
//! block centres (`A * [f, f, f, (f - 1) / 2]`). The probability maps, stored as 0..255 integers,
//! are scaled back to [0, 1] by their common maximum when it exceeds 1. Labels are the argmax of
//! (background = max(0, 1 - gm - wm), gm, wm) on the pooled maps, first class on ties:
//! 0 background, 1 grey matter, 2 white matter. The volume is split at the mid-sagittal plane, the first x index whose
//! world x is >= 0 (from the affine, which must not mix x with y or z): the part with world
//! x < 0 is the left hemisphere (RAS), written as the training case `mni_left`, the other as the
//! test case `mni_right`, each with its affine translated to its first voxel. A v2 dataset.json
//! (channel "T1", labels background / grey matter / white matter) completes the folder. Every file
//! is written to a temporary name and renamed.

use std::path::{Path, PathBuf};

use crate::TrainError;
use e2enc_segment::nifti::{self, Header};

/// What [`build_mni_dataset`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MniDataset {
    pub dir: PathBuf,
    /// Pooled grid `(x, y, z)`.
    pub dims: [usize; 3],
    /// First x index of the right hemisphere (world x >= 0).
    pub split: usize,
    /// Voxels per label (0, 1, 2) in the left (training) and right (test) parts.
    pub left_counts: [usize; 3],
    pub right_counts: [usize; 3],
}

fn err(path: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::DataFile {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Average-pools an x-fastest volume by `f` (remainders dropped).
fn pool(data: &[f32], dims: [usize; 3], f: usize) -> (Vec<f32>, [usize; 3]) {
    let nd: [usize; 3] = std::array::from_fn(|a| dims[a] / f);
    let mut out = vec![0f64; nd.iter().product()];
    for z in 0..nd[2] * f {
        for y in 0..nd[1] * f {
            let row = dims[0] * (y + dims[1] * z);
            let orow = nd[0] * (y / f + nd[1] * (z / f));
            for x in 0..nd[0] * f {
                out[orow + x / f] += f64::from(data[row + x]);
            }
        }
    }
    let n = (f * f * f) as f64;
    (out.into_iter().map(|v| (v / n) as f32).collect(), nd)
}

/// `like` with the affine `m` (sform and qform offsets) and the grid spacing of `m`'s columns.
fn header_with_affine(like: &Header, m: [[f64; 4]; 4]) -> Header {
    let mut h = like.clone();
    h.srow_x = m[0];
    h.srow_y = m[1];
    h.srow_z = m[2];
    for (j, p) in h.pixdim[1..4].iter_mut().enumerate() {
        *p = m[..3].iter().map(|row| row[j] * row[j]).sum::<f64>().sqrt();
    }
    h.qoffset_x = m[0][3];
    h.qoffset_y = m[1][3];
    h.qoffset_z = m[2][3];
    if h.sform_code <= 0 {
        h.sform_code = 2;
    }
    h
}

/// Voxels `x0..x1` of every row of an x-fastest volume.
fn slab<T: Copy>(data: &[T], dims: [usize; 3], x0: usize, x1: usize) -> Vec<T> {
    data.chunks(dims[0])
        .flat_map(|row| row[x0..x1].iter().copied())
        .collect()
}

fn counts(labels: &[u16]) -> [usize; 3] {
    let mut c = [0; 3];
    for &l in labels {
        c[usize::from(l)] += 1;
    }
    c
}

/// Builds the demo dataset in `out_dir` (see the module doc).
pub fn build_mni_dataset(
    t1: &Path,
    gm: &Path,
    wm: &Path,
    out_dir: &Path,
    factor: usize,
) -> Result<MniDataset, TrainError> {
    if factor == 0 {
        return Err(TrainError::Data(
            "build_mni_dataset: factor must be at least 1".into(),
        ));
    }
    let read = |p: &Path| nifti::read(p).map_err(TrainError::Nifti);
    let (t, g, w) = (read(t1)?, read(gm)?, read(wm)?);
    for (v, p) in [(&g, gm), (&w, wm)] {
        if v.dims != t.dims {
            return Err(err(
                p,
                format!("dims {:?} differ from the T1's {:?}", v.dims, t.dims),
            ));
        }
    }
    if t.dims.iter().any(|&d| d < factor * 2) {
        return Err(err(
            t1,
            format!("dims {:?} too small to pool by {factor}", t.dims),
        ));
    }
    let a = t.header.affine();
    let f = factor as f64;
    let mut m = a;
    for row in m.iter_mut().take(3) {
        let t0 = row[3] + (row[0] + row[1] + row[2]) * (f - 1.0) / 2.0;
        row[0] *= f;
        row[1] *= f;
        row[2] *= f;
        row[3] = t0;
    }
    let (img, dims) = pool(&t.data, t.dims, factor);
    let (gp, _) = pool(&g.data, t.dims, factor);
    let (wp, _) = pool(&w.data, t.dims, factor);
    // The templates store probabilities as 0..255 integers: bring maps whose maximum passes 1
    // back to [0, 1] by their common maximum.
    let max = gp
        .iter()
        .chain(&wp)
        .filter(|v| v.is_finite())
        .fold(0f32, |m, &v| m.max(v));
    let unit = if max > 1.0 { 1.0 / max } else { 1.0 };
    let labels: Vec<u16> = gp
        .iter()
        .zip(&wp)
        .map(|(&g, &w)| (g * unit, w * unit))
        .map(|(g, w)| {
            let (g, w) = (
                if g.is_nan() { 0.0 } else { g },
                if w.is_nan() { 0.0 } else { w },
            );
            let bg = (1.0 - g - w).max(0.0);
            let mut best = (0u16, bg);
            for (c, v) in [(1u16, g), (2, w)] {
                if v > best.1 {
                    best = (c, v);
                }
            }
            best.0
        })
        .collect();
    // Mid-sagittal plane: world x = m[0][0] * i + m[0][3] (x must not depend on j, k).
    let scale = m[0][0].abs().max(1e-12);
    if m[0][0].abs() < 1e-6 || m[0][1].abs() / scale > 1e-3 || m[0][2].abs() / scale > 1e-3 {
        return Err(err(
            t1,
            format!(
                "the affine's x row {:?} is not aligned with the voxel x axis",
                m[0]
            ),
        ));
    }
    let x0 = -m[0][3] / m[0][0];
    let split = x0.ceil().clamp(0.0, dims[0] as f64) as usize;
    if split == 0 || split >= dims[0] {
        return Err(err(
            t1,
            format!(
                "world x = 0 falls at voxel x {x0:.2}, outside the pooled grid of {} columns",
                dims[0]
            ),
        ));
    }
    // With m[0][0] > 0 the low-x part has world x < 0: the left hemisphere.
    let low_is_left = m[0][0] > 0.0;
    let parts = [(0, split), (split, dims[0])];
    let (left, right) = if low_is_left {
        (parts[0], parts[1])
    } else {
        (parts[1], parts[0])
    };
    for sub in ["imagesTr", "labelsTr", "imagesTs", "labelsTs"] {
        let d = out_dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| err(&d, e))?;
    }
    let mut written = Vec::new();
    for ((x0, x1), id, img_dir, lab_dir) in [
        (left, "mni_left", "imagesTr", "labelsTr"),
        (right, "mni_right", "imagesTs", "labelsTs"),
    ] {
        let mut mm = m;
        for row in mm.iter_mut().take(3) {
            row[3] += row[0] * x0 as f64;
        }
        let h = header_with_affine(&t.header, mm);
        let d = [x1 - x0, dims[1], dims[2]];
        let lab = slab(&labels, dims, x0, x1);
        let ip = out_dir.join(img_dir).join(format!("{id}_0000.nii.gz"));
        nifti::write_f32(&ip, &h, d, &slab(&img, dims, x0, x1)).map_err(TrainError::Nifti)?;
        let lp = out_dir.join(lab_dir).join(format!("{id}.nii.gz"));
        nifti::write_labels(&lp, &h, d, &lab).map_err(TrainError::Nifti)?;
        written.push(counts(&lab));
    }
    let json = serde_json::json!({
        "name": "MNI152",
        "description": "MNI ICBM152 2009a symmetric templates, pooled; labels from the tissue \
                        probability maps; left hemisphere for training, right for testing",
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "grey matter": 1, "white matter": 2},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    });
    let jp = out_dir.join("dataset.json");
    e2enc_ir::files::clean_stale_temps(&jp);
    let tmp = e2enc_ir::files::temp_path(&jp);
    let text = serde_json::to_string_pretty(&json).map_err(|e| err(&jp, e))?;
    std::fs::write(&tmp, text + "\n").map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &jp).map_err(|e| err(&jp, e))?;
    Ok(MniDataset {
        dir: out_dir.to_path_buf(),
        dims,
        split,
        left_counts: written[0],
        right_counts: written[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_case, plan, RawDataset};

    /// A fetched template; runs the fetch script once when it is missing.
    fn testdata(name: &str) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = root.join("target/testdata").join(name);
        if !p.is_file() {
            let _ = std::process::Command::new("bash")
                .arg(root.join("scripts/fetch-test-data.sh"))
                .status();
        }
        assert!(
            p.is_file(),
            "{} is missing; scripts/fetch-test-data.sh (python3 with pip) provides it",
            p.display()
        );
        p
    }

    fn template(kind: &str) -> PathBuf {
        testdata(&format!(
            "mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
        ))
    }

    #[test]
    fn mni_templates_give_two_complementary_hemispheres_with_three_tissues() {
        let out = tempfile::tempdir().unwrap();
        let ds = build_mni_dataset(
            &template("t1"),
            &template("gm"),
            &template("wm"),
            out.path(),
            4,
        )
        .unwrap();
        // 197 x 233 x 189 pooled by 4; x = 0 at voxel 98 -> pooled (98 - 1.5) / 4 = 24.1.
        assert_eq!(ds.dims, [49, 58, 47]);
        assert_eq!(ds.split, 25);
        // Reference counts from numpy on the same files (maps / 255, 4^3 mean pooling, argmax):
        // left [54349, 8947, 4854], right [52068, 8532, 4824]; allow f32-vs-f64 tie flips.
        let close = |got: [usize; 3], want: [usize; 3]| {
            (0..3).all(|c| got[c].abs_diff(want[c]) <= want[c] / 200)
        };
        assert!(close(ds.left_counts, [54349, 8947, 4854]), "{ds:?}");
        assert!(close(ds.right_counts, [52068, 8532, 4824]), "{ds:?}");
        for c in [ds.left_counts, ds.right_counts] {
            let n: usize = c.iter().sum();
            let (gm, wm) = (c[1] as f64 / n as f64, c[2] as f64 / n as f64);
            // The brain fills a fifth of the template box; more grey matter than white.
            assert!(gm > 0.08 && gm < 0.2, "{c:?}");
            assert!(wm > 0.04 && wm < 0.12, "{c:?}");
            assert!(gm > wm, "{c:?}");
        }
        // Complementary extents: 25 + 24 = 49 columns, the whole pooled grid.
        assert_eq!(
            ds.left_counts.iter().sum::<usize>() + ds.right_counts.iter().sum::<usize>(),
            49 * 58 * 47
        );
        let raw = RawDataset::open(out.path()).unwrap();
        assert_eq!(raw.training.len(), 1);
        assert_eq!(raw.test.len(), 1);
        let l = nifti::read(&raw.training[0].images[0]).unwrap();
        let r = nifti::read(&raw.test[0].images[0]).unwrap();
        assert_eq!(l.dims, [25, 58, 47]);
        assert_eq!(r.dims, [24, 58, 47]);
        let (la, ra) = (l.header.affine(), r.header.affine());
        assert_eq!(la[0][0], 4.0);
        // Left ends just below world x 0, right starts at or above it, 4 mm apart.
        let left_last = la[0][3] + 4.0 * 24.0;
        assert!(left_last < 0.0 && ra[0][3] >= 0.0);
        assert!((ra[0][3] - left_last - 4.0).abs() < 1e-4);
        assert!((la[0][3] - (-98.0 + 1.5)).abs() < 1e-4);
        assert_eq!(la[1], ra[1]);

        // The folder plans and loads as a training dataset.
        let cfg = plan(&raw).unwrap();
        assert_eq!(cfg.target_spacing, [4.0, 4.0, 4.0]);
        let case = load_case(&raw, &raw.training[0], &cfg).unwrap();
        assert_eq!(case.channels.len(), 1);
        assert!(case.label.contains(&2));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let out = tempfile::tempdir().unwrap();
        let t1 = template("t1");
        let e = build_mni_dataset(&t1, &t1, &t1, out.path(), 0).unwrap_err();
        assert!(e.to_string().contains("factor"), "{e}");
        let missing = out.path().join("nope.nii.gz");
        let e = build_mni_dataset(&t1, &missing, &t1, out.path(), 4).unwrap_err();
        assert!(e.to_string().contains("nope.nii.gz"), "{e}");
    }
}
