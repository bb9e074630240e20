//! Probability maps written while they are computed: [`ProbabilityWriter`] takes the planes of
//! [`crate::pipeline::segment_case_with`] and writes the 4-D float32 file [`super::write_f32_frames`]
//! would write from the whole map, without ever holding it: memory stays at one plane (one class
//! map while transposing, when the model's axis order is not NIfTI's).
//!
//! An uncompressed `.nii` whose network axes are the file's is filled in place: header first, then
//! every plane of every class at its offset. Otherwise (`.nii.gz`, or a transpose to do) the planes
//! go to a scratch file next to the output, in network order, and are compressed or transposed
//! into the output class by class at the end; the scratch file is as large as the uncompressed
//! map. Either way the output appears whole or not at all: both files are temporaries of the
//! target (removed on error, and by the next run if the process was killed) until the rename.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::write::{bad, check_len, header_of};
use super::{Header, NiftiError};
use crate::pipeline::{ProbabilityLayout, ProbabilitySink};
use crate::preprocess::{inverse_permutation, transpose};

/// Streams a probability map into a NIfTI-1 file (see the module doc).
pub struct ProbabilityWriter {
    path: PathBuf,
    header: Vec<u8>,
    dims: [usize; 3],
    classes: usize,
    gz: bool,
    state: Option<Open>,
    /// Temporaries to remove unless the write was committed.
    temps: Vec<PathBuf>,
}

struct Open {
    layout: ProbabilityLayout,
    /// The file the planes go to: the output's temporary (in place) or the scratch file.
    file: File,
    /// Offset of the first value in `file` (the header's length in place, else 0).
    base: u64,
    in_place: bool,
    planes: usize,
    bytes: Vec<u8>,
}

impl ProbabilityWriter {
    /// Checks the target and geometry; nothing is created before the first plane. `dims` are the
    /// file's `(x, y, z)`, `like` the header whose geometry the output copies.
    pub fn new(
        path: &Path,
        like: &Header,
        dims: [usize; 3],
        classes: usize,
    ) -> Result<ProbabilityWriter, NiftiError> {
        if classes == 0 || classes > i16::MAX as usize {
            return Err(bad(
                path,
                format!("{classes} frames: must be in 1..=32767 for NIfTI-1"),
            ));
        }
        let voxels = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        check_len(path, dims, voxels.unwrap_or(0))?;
        let name = path
            .file_name()
            .ok_or_else(|| bad(path, "the path names no file".into()))?
            .to_string_lossy()
            .to_ascii_lowercase();
        Ok(ProbabilityWriter {
            path: path.to_path_buf(),
            header: header_bytes(like, dims, classes),
            dims,
            classes,
            gz: name.ends_with(".gz"),
            state: None,
            temps: Vec::new(),
        })
    }

    fn io(&self, source: io::Error) -> NiftiError {
        NiftiError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn open(&mut self, layout: &ProbabilityLayout) -> Result<(), NiftiError> {
        let [x, y, z] = self.dims;
        if layout.classes != self.classes || layout.shape != [z, y, x] {
            return Err(bad(
                &self.path,
                format!(
                    "{} classes on a {:?} grid do not fit a file of {} frames of {:?} (x, y, z)",
                    layout.classes, layout.shape, self.classes, self.dims
                ),
            ));
        }
        e2enc_ir::files::clean_stale_temps(&self.path);
        let in_place = !self.gz && inverse_permutation(layout.axis_order) == [0, 1, 2];
        let tmp = e2enc_ir::files::temp_path(&self.path);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| self.io(e))?;
        self.temps.push(tmp);
        let base = if in_place {
            file.write_all_at(&self.header, 0).map_err(|e| self.io(e))?;
            self.header.len() as u64
        } else {
            0
        };
        let values = (layout.classes * layout.voxels()) as u64;
        file.set_len(base + 4 * values).map_err(|e| self.io(e))?;
        self.state = Some(Open {
            layout: layout.clone(),
            file,
            base,
            in_place,
            planes: 0,
            bytes: Vec::new(),
        });
        Ok(())
    }

    fn write_plane(&mut self, index: usize, plane: &[f32]) -> Result<(), NiftiError> {
        let Some(s) = self.state.as_mut() else {
            return Err(bad(&self.path, "a plane came before the layout".into()));
        };
        let l = &s.layout;
        let p = l.net_shape[1] * l.net_shape[2];
        if index != s.planes || index >= l.net_shape[0] || plane.len() != l.classes * p {
            return Err(bad(
                &self.path,
                format!(
                    "plane {index} of {} values is out of order or of the wrong size",
                    plane.len()
                ),
            ));
        }
        let n = l.voxels();
        for c in 0..l.classes {
            s.bytes.clear();
            s.bytes
                .extend(plane[c * p..][..p].iter().flat_map(|v| v.to_le_bytes()));
            let at = s.base + 4 * (c * n + index * p) as u64;
            if let Err(e) = s.file.write_all_at(&s.bytes, at) {
                return Err(NiftiError::Io {
                    path: self.path.clone(),
                    source: e,
                });
            }
        }
        s.planes += 1;
        Ok(())
    }

    /// Completes the file and renames it onto the target; an error (or a segmentation that did
    /// not deliver every plane) leaves no output and no temporary.
    pub fn finish(mut self) -> Result<(), NiftiError> {
        let Some(s) = self.state.take() else {
            return Err(bad(&self.path, "no probabilities were computed".into()));
        };
        if s.planes != s.layout.net_shape[0] {
            return Err(bad(
                &self.path,
                format!(
                    "{} of {} planes were computed",
                    s.planes, s.layout.net_shape[0]
                ),
            ));
        }
        let done = if s.in_place {
            s.file.sync_all().map_err(|e| self.io(e))?;
            drop(s.file);
            self.temps[0].clone()
        } else {
            let out = e2enc_ir::files::temp_path(&self.path);
            let file = File::create(&out).map_err(|e| self.io(e))?;
            self.temps.push(out.clone());
            self.assemble(&s, file).map_err(|e| self.io(e))?;
            out
        };
        fs::rename(&done, &self.path).map_err(|e| self.io(e))?;
        self.temps.retain(|t| t != &done);
        Ok(())
    }

    /// Header, then each class map from the scratch file: copied, or transposed to the file's
    /// axes; gzip for `.gz`; synced.
    fn assemble(&self, s: &Open, file: File) -> io::Result<()> {
        let buf = BufWriter::with_capacity(1 << 20, file);
        let buf = if self.gz {
            let mut enc = GzEncoder::new(buf, Compression::new(6));
            self.body(s, &mut enc)?;
            enc.finish()?
        } else {
            let mut buf = buf;
            self.body(s, &mut buf)?;
            buf
        };
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }

    fn body(&self, s: &Open, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.header)?;
        let l = &s.layout;
        let n = l.voxels();
        let inv = inverse_permutation(l.axis_order);
        let mut bytes = vec![
            0u8;
            if inv == [0, 1, 2] {
                (8 << 20).min(4 * n)
            } else {
                4 * n
            }
        ];
        for c in 0..l.classes {
            let start = 4 * (c * n) as u64;
            if inv == [0, 1, 2] {
                let mut at = 0u64;
                while at < 4 * n as u64 {
                    let len = (4 * n as u64 - at).min(bytes.len() as u64) as usize;
                    s.file.read_exact_at(&mut bytes[..len], start + at)?;
                    w.write_all(&bytes[..len])?;
                    at += len as u64;
                }
            } else {
                s.file.read_exact_at(&mut bytes, start)?;
                let values: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let (t, _) = transpose(&values, l.net_shape, inv);
                drop(values);
                for (chunk, v) in bytes.chunks_exact_mut(4).zip(t) {
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
                w.write_all(&bytes)?;
            }
        }
        Ok(())
    }
}

/// The 352 bytes (header and an empty extension flag) of a little-endian NIfTI-1 float32 file
/// of `frames` volumes of `dims`: the fields [`header_of`] chooses (the same the crate's writer
/// gets for whole maps), serialised here because the crate writes headers only together with a
/// whole array.
fn header_bytes(like: &Header, dims: [usize; 3], frames: usize) -> Vec<u8> {
    let mut h = header_of(like, 0, "e2enc probabilities");
    // Dims checked <= i16::MAX by `check_len`, frames by `new`.
    h.dim = [
        if frames > 1 { 4 } else { 3 },
        1,
        1,
        1,
        frames as u16,
        1,
        1,
        1,
    ];
    for (d, &n) in h.dim[1..4].iter_mut().zip(&dims) {
        *d = n as u16;
    }
    let mut b = Vec::with_capacity(352);
    b.extend(h.sizeof_hdr.to_le_bytes());
    b.extend(h.data_type);
    b.extend(h.db_name);
    b.extend(h.extents.to_le_bytes());
    b.extend(h.session_error.to_le_bytes());
    b.extend([h.regular, h.dim_info]);
    h.dim.iter().for_each(|d| b.extend(d.to_le_bytes()));
    [h.intent_p1, h.intent_p2, h.intent_p3]
        .iter()
        .for_each(|v| b.extend(v.to_le_bytes()));
    // intent_code, datatype float32, bitpix 32, slice_start.
    [h.intent_code, 16, 32, h.slice_start]
        .iter()
        .for_each(|v| b.extend(v.to_le_bytes()));
    h.pixdim.iter().for_each(|v| b.extend(v.to_le_bytes()));
    // vox_offset, scl_slope 1, scl_inter 0.
    [352.0f32, 1.0, 0.0]
        .iter()
        .for_each(|v| b.extend(v.to_le_bytes()));
    b.extend(h.slice_end.to_le_bytes());
    b.extend([h.slice_code, h.xyzt_units]);
    [h.cal_max, h.cal_min, h.slice_duration, h.toffset]
        .iter()
        .for_each(|v| b.extend(v.to_le_bytes()));
    b.extend(h.glmax.to_le_bytes());
    b.extend(h.glmin.to_le_bytes());
    let mut descrip = [0u8; 80];
    let n = h.descrip.len().min(80);
    descrip[..n].copy_from_slice(&h.descrip[..n]);
    b.extend(descrip);
    b.extend(h.aux_file);
    b.extend(h.qform_code.to_le_bytes());
    b.extend(h.sform_code.to_le_bytes());
    [
        h.quatern_b,
        h.quatern_c,
        h.quatern_d,
        h.quatern_x,
        h.quatern_y,
        h.quatern_z,
    ]
    .iter()
    .chain(&h.srow_x)
    .chain(&h.srow_y)
    .chain(&h.srow_z)
    .for_each(|v| b.extend(v.to_le_bytes()));
    b.extend(h.intent_name);
    b.extend(*b"n+1\0");
    b.extend([0u8; 4]);
    debug_assert_eq!(b.len(), 352);
    b
}

impl Drop for ProbabilityWriter {
    fn drop(&mut self) {
        self.state = None;
        for t in self.temps.drain(..) {
            let _ = fs::remove_file(t);
        }
    }
}

impl<E: From<NiftiError>> ProbabilitySink<E> for ProbabilityWriter {
    fn begin(&mut self, layout: &ProbabilityLayout) -> Result<(), E> {
        Ok(self.open(layout)?)
    }

    fn plane(&mut self, index: usize, plane: &[f32]) -> Result<(), E> {
        Ok(self.write_plane(index, plane)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nifti::write_f32_frames;

    /// Feeds the planes of a made-up class-major map `[classes, shape]` (input axes) in network
    /// order, as the pipeline does.
    fn feed(w: &mut ProbabilityWriter, probs: &[f32], layout: &ProbabilityLayout, planes: usize) {
        let sink: &mut dyn ProbabilitySink<NiftiError> = w;
        sink.begin(layout).unwrap();
        let n = layout.voxels();
        let net: Vec<Vec<f32>> = (0..layout.classes)
            .map(|c| transpose(&probs[c * n..][..n], layout.shape, layout.axis_order).0)
            .collect();
        let p = layout.net_shape[1] * layout.net_shape[2];
        for i in 0..planes {
            let plane: Vec<f32> = net.iter().flat_map(|m| m[i * p..][..p].to_vec()).collect();
            sink.plane(i, &plane).unwrap();
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn streamed_files_equal_whole_map_files_byte_for_byte() {
        let t = tempfile::tempdir().unwrap();
        let shape = [4, 3, 5]; // z, y, x
        let dims = [5, 3, 4];
        let like = Header::new(dims, [0.8, 0.9, 1.5]);
        let classes = 3;
        let n = 60;
        let probs: Vec<f32> = (0..classes * n).map(|i| (i as f32 * 0.37).sin()).collect();
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let net_shape: [usize; 3] = std::array::from_fn(|k| shape[order[k]]);
            let layout = ProbabilityLayout {
                classes,
                shape,
                net_shape,
                axis_order: order,
            };
            for name in ["p.nii", "p.nii.gz"] {
                let want = t.path().join(format!("want-{name}"));
                write_f32_frames(&want, &like, dims, classes, &probs).unwrap();
                let got = t.path().join(name);
                let mut w = ProbabilityWriter::new(&got, &like, dims, classes).unwrap();
                feed(&mut w, &probs, &layout, net_shape[0]);
                w.finish().unwrap();
                let read = |p: &Path| {
                    let v = crate::nifti::read_frame(p, 2).unwrap();
                    (v.data, v.dims)
                };
                assert_eq!(read(&got), read(&want), "{order:?} {name}");
                if name == "p.nii" {
                    assert_eq!(
                        fs::read(&got).unwrap(),
                        fs::read(&want).unwrap(),
                        "{order:?}"
                    );
                }
                assert!(leftovers(t.path()).is_empty());
            }
        }
    }

    #[test]
    fn an_unfinished_map_leaves_no_file() {
        let t = tempfile::tempdir().unwrap();
        let like = Header::new([2, 2, 2], [1.0; 3]);
        let layout = ProbabilityLayout {
            classes: 2,
            shape: [2, 2, 2],
            net_shape: [2, 2, 2],
            axis_order: [0, 1, 2],
        };
        let probs = vec![0.5f32; 16];
        for name in ["p.nii", "p.nii.gz"] {
            let path = t.path().join(name);
            // One plane of two, then finish: an error, and nothing left.
            let mut w = ProbabilityWriter::new(&path, &like, [2, 2, 2], 2).unwrap();
            feed(&mut w, &probs, &layout, 1);
            let e = w.finish().unwrap_err();
            assert!(e.to_string().contains("1 of 2 planes"), "{e}");
            // Dropped midway (the segmentation failed).
            let mut w = ProbabilityWriter::new(&path, &like, [2, 2, 2], 2).unwrap();
            feed(&mut w, &probs, &layout, 1);
            drop(w);
            assert!(!path.exists());
            assert!(leftovers(t.path()).is_empty());
        }
        // A layout that does not match the file.
        let mut w = ProbabilityWriter::new(&t.path().join("q.nii"), &like, [2, 2, 2], 3).unwrap();
        let sink: &mut dyn ProbabilitySink<NiftiError> = &mut w;
        assert!(sink.begin(&layout).is_err());
    }
}
