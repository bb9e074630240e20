//! Writing results (label maps, probability maps) as NIfTI-1 single files on the grid of an input.
//!
//! Output is always NIfTI-1, little-endian, `vox_offset` 352, no extensions, gzip when the path
//! ends in `.gz`: the form every tool reads. The geometry (qform, sform, pixdim, units) comes from
//! the header of the image the result belongs to. A file appears whole or not at all: bytes go to
//! a temporary file in the destination folder, which is synced and then renamed over the target;
//! on any error the temporary file is removed.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::{Header, NiftiError};

/// NIfTI's intent code for a label map (`NIFTI_INTENT_LABEL`).
const INTENT_LABEL: i32 = 1002;

/// Writes a label map: uint8 when every label is below 256, else uint16; `scl_slope` 1 and
/// `scl_inter` 0; intent "label"; the geometry of `like`.
pub fn write_labels(
    path: &Path,
    like: &Header,
    dims: [usize; 3],
    labels: &[u16],
) -> Result<(), NiftiError> {
    check_len(path, dims, labels.len())?;
    let max = labels.iter().copied().max().unwrap_or(0);
    let (datatype, bitpix, data): (i16, i16, Vec<u8>) = if max < 256 {
        (2, 8, labels.iter().map(|&l| l as u8).collect())
    } else {
        (
            512,
            16,
            labels.iter().flat_map(|l| l.to_le_bytes()).collect(),
        )
    };
    let hdr = header_bytes(
        like,
        dims,
        1,
        datatype,
        bitpix,
        INTENT_LABEL,
        "e2enc labels",
    );
    write_atomic(path, &hdr, &data)
}

/// Writes `f32` voxels (probability maps, logits) with the geometry of `like`.
pub fn write_f32(
    path: &Path,
    like: &Header,
    dims: [usize; 3],
    data: &[f32],
) -> Result<(), NiftiError> {
    check_len(path, dims, data.len())?;
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let hdr = header_bytes(like, dims, 1, 16, 32, 0, "e2enc");
    write_atomic(path, &hdr, &bytes)
}

/// Writes `frames` `f32` volumes (one per class of a probability map) as one 4-D file
/// (`dim[4] = frames`, frame-major: all of frame 0, then frame 1, ...) with the geometry of
/// `like`. One frame gives a plain 3-D file, as [`write_f32`].
pub fn write_f32_frames(
    path: &Path,
    like: &Header,
    dims: [usize; 3],
    frames: usize,
    data: &[f32],
) -> Result<(), NiftiError> {
    if frames == 0 || frames > i16::MAX as usize {
        return Err(bad(
            path,
            format!("{frames} frames: must be in 1..=32767 for NIfTI-1"),
        ));
    }
    if !data.len().is_multiple_of(frames) {
        return Err(bad(
            path,
            format!("{} values do not split into {frames} frames", data.len()),
        ));
    }
    check_len(path, dims, data.len() / frames)?;
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let hdr = header_bytes(like, dims, frames, 16, 32, 0, "e2enc probabilities");
    write_atomic(path, &hdr, &bytes)
}

pub(super) fn bad(path: &Path, msg: String) -> NiftiError {
    NiftiError::BadOutput {
        path: path.to_path_buf(),
        msg,
    }
}

pub(super) fn check_len(path: &Path, dims: [usize; 3], len: usize) -> Result<(), NiftiError> {
    if dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(bad(
            path,
            format!("dims {dims:?}: each must be in 1..=32767 for NIfTI-1"),
        ));
    }
    let n = dims[0] * dims[1] * dims[2]; // each <= 32767: no overflow on 64-bit
    if n != len {
        return Err(bad(
            path,
            format!("dims {dims:?} hold {n} voxels but {len} values were given"),
        ));
    }
    Ok(())
}

/// The 352 bytes (348 of header and 4 of empty extension flag) of a NIfTI-1 file.
pub(super) fn header_bytes(
    like: &Header,
    dims: [usize; 3],
    frames: usize,
    datatype: i16,
    bitpix: i16,
    intent_code: i32,
    descrip: &str,
) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    let put = |b: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        b[off..off + bytes.len()].copy_from_slice(bytes);
    };
    let f = |v: f64| (v as f32).to_le_bytes();
    put(&mut b, 0, &348i32.to_le_bytes());
    put(&mut b, 38, b"r"); // regular
    put(&mut b, 39, &[like.dim_info]);
    let mut dim = [1i16; 8];
    dim[0] = if frames > 1 { 4 } else { 3 };
    for i in 0..3 {
        dim[i + 1] = dims[i] as i16; // checked <= i16::MAX by check_len
    }
    dim[4] = frames as i16; // checked <= i16::MAX by the caller
    for (i, d) in dim.iter().enumerate() {
        put(&mut b, 40 + 2 * i, &d.to_le_bytes());
    }
    put(&mut b, 68, &(intent_code as i16).to_le_bytes());
    put(&mut b, 70, &datatype.to_le_bytes());
    put(&mut b, 72, &bitpix.to_le_bytes());
    let mut pixdim = like.pixdim;
    pixdim[0] = if like.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let spacing = like.spacing();
    pixdim[1..4].copy_from_slice(&spacing);
    for (i, p) in pixdim.iter().enumerate() {
        let p = if p.is_finite() { *p } else { 0.0 };
        put(&mut b, 76 + 4 * i, &f(p));
    }
    put(&mut b, 108, &f(352.0)); // vox_offset
    put(&mut b, 112, &f(1.0)); // scl_slope
    put(&mut b, 116, &f(0.0)); // scl_inter
    put(&mut b, 123, &[like.xyzt_units]);
    let text = |b: &mut Vec<u8>, off: usize, len: usize, s: &str| {
        let s = s.as_bytes();
        let n = s.len().min(len - 1);
        b[off..off + n].copy_from_slice(&s[..n]);
    };
    text(&mut b, 148, 80, descrip);
    put(&mut b, 252, &like.qform_code.to_le_bytes());
    put(&mut b, 254, &like.sform_code.to_le_bytes());
    let q = [
        like.quatern_b,
        like.quatern_c,
        like.quatern_d,
        like.qoffset_x,
        like.qoffset_y,
        like.qoffset_z,
    ];
    for (i, v) in q.iter().enumerate() {
        put(&mut b, 256 + 4 * i, &f(*v));
    }
    for (r, row) in [like.srow_x, like.srow_y, like.srow_z].iter().enumerate() {
        for (i, v) in row.iter().enumerate() {
            put(&mut b, 280 + 16 * r + 4 * i, &f(*v));
        }
    }
    if intent_code == INTENT_LABEL {
        text(&mut b, 328, 16, "labels");
    }
    put(&mut b, 344, b"n+1\0");
    b
}

/// Removes the temporary file unless the write was committed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn write_atomic(path: &Path, header: &[u8], data: &[u8]) -> Result<(), NiftiError> {
    let io_err = |source| NiftiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| bad(path, "the path names no file".into()))?
        .to_string_lossy();
    let gz = name.to_ascii_lowercase().ends_with(".gz");
    // What a killed or crashed earlier run left next to this output goes first.
    e2enc_ir::files::clean_stale_temps(path);
    let tmp = e2enc_ir::files::temp_path(path);
    let file = File::create(&tmp).map_err(io_err)?;
    let mut guard = TempGuard(Some(tmp.clone()));
    let write = |file: File| -> io::Result<File> {
        let buf = BufWriter::with_capacity(1 << 20, file);
        let buf = if gz {
            let mut enc = GzEncoder::new(buf, Compression::new(6));
            enc.write_all(header)?;
            enc.write_all(data)?;
            enc.finish()?
        } else {
            let mut buf = buf;
            buf.write_all(header)?;
            buf.write_all(data)?;
            buf
        };
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file)
    };
    drop(write(file).map_err(io_err)?);
    fs::rename(&tmp, path).map_err(io_err)?;
    guard.0 = None;
    Ok(())
}
