//! Writing results (label maps, probability maps) as NIfTI-1 single files on the grid of an input.
//!
//! Output is always NIfTI-1, little-endian, `vox_offset` 352, no extensions, gzip (level 6) when
//! the path ends in `.gz`: the form every tool reads. The geometry (qform, sform, pixdim, units)
//! comes from the header of the image the result belongs to; which fields are copied is decided
//! here, and the `nifti` crate's writer (`WriterOptions`) writes the header and the voxels.
//!
//! A file appears whole or not at all: the crate writes into a private temporary folder in the
//! destination folder (named like the temporaries of `e2enc_ir::files`, so that one a killed run
//! left is removed by the next write); the file is then checked for length (the crate drops its
//! buffered writer without reporting a failed flush), synced and renamed over the target. On any
//! error the folder and what it holds are removed.

use std::fs::File;
use std::path::Path;

use flate2::Compression;
use ndarray::{ArrayView, IxDyn, ShapeBuilder};
use nifti::writer::WriterOptions;
use nifti::{Endianness, NiftiHeader};

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
    let hdr = header_of(like, INTENT_LABEL, "e2enc labels");
    if max < 256 {
        let bytes: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
        write_atomic(path, &hdr, &dims, Data::U8(&bytes))
    } else {
        write_atomic(path, &hdr, &dims, Data::U16(labels))
    }
}

/// Writes `f32` voxels (probability maps, logits) with the geometry of `like`.
pub fn write_f32(
    path: &Path,
    like: &Header,
    dims: [usize; 3],
    data: &[f32],
) -> Result<(), NiftiError> {
    check_len(path, dims, data.len())?;
    write_atomic(path, &header_of(like, 0, "e2enc"), &dims, Data::F32(data))
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
    let hdr = header_of(like, 0, "e2enc probabilities");
    if frames == 1 {
        write_atomic(path, &hdr, &dims, Data::F32(data))
    } else {
        let shape = [dims[0], dims[1], dims[2], frames];
        write_atomic(path, &hdr, &shape, Data::F32(data))
    }
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

/// The header fields of an output: the geometry of `like` (`dim_info`, `pixdim` with qfac ±1 and
/// the checked voxel size, units, qform and sform), the intent and description given, every other
/// field 0. The crate's writer sets the dims, datatype, `bitpix`, `vox_offset`, scaling (1, 0) and
/// magic.
pub(super) fn header_of(like: &Header, intent_code: i32, descrip: &str) -> NiftiHeader {
    let f = |v: f64| v as f32;
    let mut pixdim = like.pixdim;
    pixdim[0] = if like.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    pixdim[1..4].copy_from_slice(&like.spacing());
    let pixdim = pixdim.map(|p| if p.is_finite() { p as f32 } else { 0.0 });
    let mut text = vec![0u8; 80];
    let n = descrip.len().min(79);
    text[..n].copy_from_slice(&descrip.as_bytes()[..n]);
    let mut intent_name = [0u8; 16];
    if intent_code == INTENT_LABEL {
        intent_name[..6].copy_from_slice(b"labels");
    }
    NiftiHeader {
        sizeof_hdr: 348,
        data_type: [0; 10],
        db_name: [0; 18],
        extents: 0,
        session_error: 0,
        regular: b'r',
        dim_info: like.dim_info,
        dim: [0; 8],
        intent_p1: 0.0,
        intent_p2: 0.0,
        intent_p3: 0.0,
        intent_code: intent_code as i16,
        datatype: 0,
        bitpix: 0,
        slice_start: 0,
        pixdim,
        vox_offset: 352.0,
        scl_slope: 1.0,
        scl_inter: 0.0,
        slice_end: 0,
        slice_code: 0,
        xyzt_units: like.xyzt_units,
        cal_max: 0.0,
        cal_min: 0.0,
        slice_duration: 0.0,
        toffset: 0.0,
        glmax: 0,
        glmin: 0,
        descrip: text,
        aux_file: [0; 24],
        qform_code: like.qform_code,
        sform_code: like.sform_code,
        quatern_b: f(like.quatern_b),
        quatern_c: f(like.quatern_c),
        quatern_d: f(like.quatern_d),
        quatern_x: f(like.qoffset_x),
        quatern_y: f(like.qoffset_y),
        quatern_z: f(like.qoffset_z),
        srow_x: like.srow_x.map(f),
        srow_y: like.srow_y.map(f),
        srow_z: like.srow_z.map(f),
        intent_name,
        magic: *b"n+1\0",
        endianness: Endianness::Little,
    }
}

/// The voxels of an output, in one of the types written.
enum Data<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    F32(&'a [f32]),
}

impl Data<'_> {
    fn bytes(&self) -> u64 {
        (match self {
            Data::U8(d) => d.len(),
            Data::U16(d) => d.len() * 2,
            Data::F32(d) => d.len() * 4,
        }) as u64
    }
}

fn write_atomic(
    path: &Path,
    header: &NiftiHeader,
    shape: &[usize],
    data: Data,
) -> Result<(), NiftiError> {
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
    let temp = e2enc_ir::files::temp_path(path);
    let folder = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = tempfile::Builder::new()
        .prefix(temp.file_name().unwrap_or_default())
        .rand_bytes(0)
        .tempdir_in(folder)
        .map_err(io_err)?;
    // The crate derives the file's name (and whether to gzip) from the path it is given.
    let file = dir.path().join(if gz { "data.nii.gz" } else { "data.nii" });
    let options = WriterOptions::new(&file).reference_header(header);
    let options = if gz {
        options.compression_level(Compression::new(6))
    } else {
        options.compress(false)
    };
    let crate_err = |e: nifti::NiftiError| match e {
        nifti::NiftiError::Io(source) => io_err(source),
        e => bad(path, format!("the nifti crate could not write it: {e}")),
    };
    let want = 352 + data.bytes();
    let shape = IxDyn(shape).f();
    let view_err = |e: ndarray::ShapeError| bad(path, format!("shape {shape:?}: {e}"));
    match data {
        Data::U8(d) => {
            options.write_nifti(&ArrayView::from_shape(shape.clone(), d).map_err(view_err)?)
        }
        Data::U16(d) => {
            options.write_nifti(&ArrayView::from_shape(shape.clone(), d).map_err(view_err)?)
        }
        Data::F32(d) => {
            options.write_nifti(&ArrayView::from_shape(shape.clone(), d).map_err(view_err)?)
        }
    }
    .map_err(crate_err)?;
    let written = File::open(&file).map_err(io_err)?;
    let len = written.metadata().map_err(io_err)?.len();
    if !gz && len != want {
        return Err(bad(
            path,
            format!("wrote {len} bytes where {want} were due (a full disk?)"),
        ));
    }
    written.sync_all().map_err(io_err)?;
    drop(written);
    std::fs::rename(&file, path).map_err(io_err)?;
    dir.close().map_err(io_err)
}
