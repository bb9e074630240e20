//! NIfTI-1 and NIfTI-2 volumes: the header fields that carry geometry, the voxel data as `f32`,
//! and the errors of reading and writing them.
//!
//! NIfTI-1 goes through the [`nifti`](https://docs.rs/nifti) crate: it parses the headers, reads
//! the voxel data (single files, `.nii` and `.nii.gz`, and `.hdr`/`.img` pairs) and writes the
//! results. Our own code is what the crate lacks:
//!
//! - **NIfTI-2** (540-byte headers, 64-bit dims), which the crate cannot read: parsed and decoded
//!   in `read.rs`.
//! - **Guards**, so that a hostile file is a clear [`NiftiError`], never a panic or a huge
//!   allocation: the whole header is checked before the crate reads any data (magic, byte order,
//!   `vox_offset`, datatype, dims and voxel count, geometry, the frame, a plain file's length,
//!   available memory), and the crate only ever gets a header of one checked 3-D frame. The crate
//!   guesses the byte order from `dim[0]`; `sizeof_hdr` decides here. Its writer's output is
//!   checked for length and synced before it is renamed into place.
//! - **Policy**: which volume to read, nibabel's scaling rule, the affine, which geometry fields
//!   an output copies; gzip by magic bytes, and each gzip member's CRC32 checked.
//!
//! The shape of this module follows what segmentation needs: [`read`] gives one 3-D volume as
//! scaled `f32` (x fastest, NIfTI order), and [`write_labels`] / [`write_f32`] write a result on
//! the grid of the input, copying its geometry. Choices, in one place:
//!
//! - **NaN**: kept as NaN in [`Volume::data`]; [`Volume::nan_count`] counts them and the caller
//!   decides what to replace them with (a network input usually wants 0 or the minimum).
//! - **4-D**: a file whose dimensions 4 and up multiply to 1 is read as 3-D. With several
//!   volumes (time points), [`read`] refuses with [`NiftiError::MultiVolume`] naming the count, and
//!   [`read_frame`] reads one of them (the others are skipped, not kept). Dimensions 5 to 7 above
//!   1 (vector or CIFTI data) are refused.
//! - **Scaling**: `scl_slope`/`scl_inter` are applied in `f64` then rounded to `f32`, as nibabel
//!   does: a slope of 0 or not finite means no scaling; an intercept not finite counts as 0.
//! - **Affine**: [`Header::affine`] follows nibabel's order (sform when `sform_code > 0`, else
//!   qform when `qform_code > 0`), but the last resort is NIfTI's "method 1", a plain `pixdim`
//!   scaling with origin 0, where nibabel would centre the grid and flip x.
//! - **Sizes**: a header whose voxel count is not positive, overflows, or passes 2^31 voxels per
//!   volume is refused before any data is allocated, and so is a plain file shorter than its header
//!   says; a gzip stream is read only as far as it goes, and a short one is an error. The data is
//!   read a plane (or a row) at a time into the `f32` result, so the peak memory is the result
//!   plus one plane.
//! - **Pairs**: a `.hdr` with NIfTI's pair magic (`ni1`, `ni2`) reads its data from the `.img`
//!   (or `.img.gz`) beside it, from byte `vox_offset`; naming the `.img` reads its `.hdr`. Analyze
//!   7.5 headers (no NIfTI magic) are refused.
//! - `bitpix` is not checked against `datatype` (nibabel does not either); the datatype decides.

mod frames;
mod read;
mod write;

use std::path::PathBuf;

pub use frames::ProbabilityWriter;
pub use read::{read, read_frame};
pub use write::{write_f32, write_f32_frames, write_labels};

/// Most voxels one volume may hold (2^31), so that indices fit an `i32` and absurd headers fail
/// fast.
pub const MAX_VOXELS: u64 = 1 << 31;

/// Errors of NIfTI reading and writing; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a NIfTI file: {msg}", path.display())]
    NotNifti { path: PathBuf, msg: String },
    #[error("{}: truncated: {what} needs {needed} bytes but only {got} are there", path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        got: u64,
    },
    #[error("{}: bad gzip stream: {source}", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: datatype {code} ({name}) is not supported (supported: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64)", path.display())]
    UnsupportedDatatype {
        path: PathBuf,
        code: i16,
        name: &'static str,
    },
    #[error("{}: bad header: {msg}", path.display())]
    BadHeader { path: PathBuf, msg: String },
    #[error("{}: holds {volumes} volumes (dim[4..] = {dims:?}), not one 3-D image: split it (e.g. fslsplit) or read one with nifti::read_frame", path.display())]
    MultiVolume {
        path: PathBuf,
        volumes: u64,
        dims: Vec<i64>,
    },
    #[error("{}: frame {frame} asked for, but the file holds {volumes} volumes", path.display())]
    NoSuchFrame {
        path: PathBuf,
        frame: u64,
        volumes: u64,
    },
    #[error("{}: cannot write: {msg}", path.display())]
    BadOutput { path: PathBuf, msg: String },
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{}: a NIfTI pair header (.hdr) whose image file is missing (looked for {})", path.display(), tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MissingImage { path: PathBuf, tried: Vec<PathBuf> },
}

/// Whether two volumes lie on one grid: same dims, affines equal within 1e-4 relative (float32
/// header rounding), and the same voxel size (the spacing metrics use); a value that is not
/// finite never matches. Returns the difference found.
pub fn same_grid(a: &Volume, b: &Volume) -> Result<(), String> {
    if a.dims != b.dims {
        return Err(format!("shapes differ: {:?} vs {:?}", a.dims, b.dims));
    }
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * (1.0 + x.abs().max(y.abs()));
    let (fa, fb) = (a.header.affine(), b.header.affine());
    for r in 0..3 {
        if !(0..4).all(|c| close(fa[r][c], fb[r][c])) {
            return Err(format!(
                "affines differ (row {r}: {:?} vs {:?})",
                fa[r], fb[r]
            ));
        }
    }
    let (sa, sb) = (a.header.spacing(), b.header.spacing());
    if !(0..3).all(|i| close(sa[i], sb[i])) {
        return Err(format!("voxel sizes differ: {sa:?} vs {sb:?} (pixdim)"));
    }
    Ok(())
}

/// What kind of non-regular file `m` describes, for [`NiftiError::NotAFile`].
pub(crate) fn file_kind(m: &std::fs::Metadata) -> Option<&'static str> {
    e2enc_ir::files::non_regular_kind(m)
}

/// The header fields this crate reads and writes (NIfTI-2 widths; NIfTI-1 values widened).
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// Whether the file was big-endian.
    pub big_endian: bool,
    /// `dim[0]` is the number of dimensions, `dim[1..=3]` the spatial ones, as stored.
    pub dim: [i64; 8],
    /// `pixdim[0]` is qfac (±1), `pixdim[1..=3]` the voxel size, `pixdim[4]` the time step.
    pub pixdim: [f64; 8],
    pub datatype: i16,
    pub bitpix: i16,
    /// Byte offset of the data in the file, as the reader used it.
    pub vox_offset: u64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub cal_max: f64,
    pub cal_min: f64,
    pub dim_info: u8,
    pub intent_code: i32,
    pub intent_p: [f64; 3],
    pub intent_name: String,
    pub qform_code: i16,
    pub sform_code: i16,
    pub quatern_b: f64,
    pub quatern_c: f64,
    pub quatern_d: f64,
    pub qoffset_x: f64,
    pub qoffset_y: f64,
    pub qoffset_z: f64,
    pub srow_x: [f64; 4],
    pub srow_y: [f64; 4],
    pub srow_z: [f64; 4],
    pub xyzt_units: u8,
    pub descrip: String,
}

impl Header {
    /// A NIfTI-1 header for a `dims` grid with voxel size `spacing` (mm), no qform, and an sform
    /// (code 2, aligned) of plain scaling: a starting point for data with no source image.
    pub fn new(dims: [usize; 3], spacing: [f64; 3]) -> Header {
        let d = |i: usize| dims[i] as i64;
        Header {
            version: 1,
            big_endian: false,
            dim: [3, d(0), d(1), d(2), 1, 1, 1, 1],
            pixdim: [1.0, spacing[0], spacing[1], spacing[2], 1.0, 1.0, 1.0, 1.0],
            datatype: 16,
            bitpix: 32,
            vox_offset: 352,
            scl_slope: 1.0,
            scl_inter: 0.0,
            cal_max: 0.0,
            cal_min: 0.0,
            dim_info: 0,
            intent_code: 0,
            intent_p: [0.0; 3],
            intent_name: String::new(),
            qform_code: 0,
            sform_code: 2,
            quatern_b: 0.0,
            quatern_c: 0.0,
            quatern_d: 0.0,
            qoffset_x: 0.0,
            qoffset_y: 0.0,
            qoffset_z: 0.0,
            srow_x: [spacing[0], 0.0, 0.0, 0.0],
            srow_y: [0.0, spacing[1], 0.0, 0.0],
            srow_z: [0.0, 0.0, spacing[2], 0.0],
            xyzt_units: 2, // mm
            descrip: String::new(),
        }
    }

    /// Voxel size along x, y, z in the header's units: `pixdim[1..=3]`, what nibabel's
    /// `header.get_zooms()` and SimpleITK's `GetSpacing()` report for a consistent header. A
    /// header [`read`] returns has passed [`Header::check_geometry`] (finite, positive, and
    /// agreeing with a valid sform); for any other header, a negative value reads as its
    /// magnitude and 0 or a value that is not finite as 1.0.
    pub fn spacing(&self) -> [f64; 3] {
        let s = |v: f64| {
            if v.is_finite() && v != 0.0 {
                v.abs()
            } else {
                1.0
            }
        };
        [s(self.pixdim[1]), s(self.pixdim[2]), s(self.pixdim[3])]
    }

    /// Checks that the geometry can be trusted, naming the field that cannot: `pixdim[1..=3]`
    /// finite and positive (for the axes the image has; a missing axis's 0 reads as 1), the
    /// sform (when `sform_code > 0`) finite and invertible with column lengths within 1% of
    /// `pixdim` (else nibabel's zooms and the affine disagree on the voxel size), the qform
    /// (when `qform_code > 0`) finite. Returns the reason on failure.
    pub fn check_geometry(&self) -> Result<(), String> {
        let nd = self.dim[0].clamp(0, 7) as usize;
        for i in 1..=3 {
            let v = self.pixdim[i];
            if i > nd && (v == 0.0 || !v.is_finite()) {
                continue;
            }
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "pixdim[{i}] (the voxel size along {}) is {v}: it must be a finite positive \
                     number",
                    ["x", "y", "z"][i - 1]
                ));
            }
        }
        if self.qform_code > 0 {
            let q = [
                ("quatern_b", self.quatern_b),
                ("quatern_c", self.quatern_c),
                ("quatern_d", self.quatern_d),
                ("qoffset_x", self.qoffset_x),
                ("qoffset_y", self.qoffset_y),
                ("qoffset_z", self.qoffset_z),
                ("pixdim[0] (qfac)", self.pixdim[0]),
            ];
            if let Some((name, v)) = q.iter().find(|(_, v)| !v.is_finite()) {
                return Err(format!(
                    "{name} is {v} while qform_code is {}",
                    self.qform_code
                ));
            }
        }
        if self.sform_code > 0 {
            for (name, row) in [
                ("srow_x", self.srow_x),
                ("srow_y", self.srow_y),
                ("srow_z", self.srow_z),
            ] {
                if row.iter().any(|v| !v.is_finite()) {
                    return Err(format!(
                        "{name} is {row:?} while sform_code is {}: not a finite affine",
                        self.sform_code
                    ));
                }
            }
            let m = [self.srow_x, self.srow_y, self.srow_z];
            let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
            if det == 0.0 || !det.is_finite() {
                return Err(format!(
                    "the sform (srow_x/y/z) is singular (determinant {det}): voxels have no \
                     place in space"
                ));
            }
            let sp = self.spacing();
            for c in 0..3 {
                let len = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
                if (c < nd || self.pixdim[c + 1] > 0.0)
                    && (len - sp[c]).abs() > 0.01 * sp[c].max(len)
                {
                    return Err(format!(
                        "the sform says voxels are {len:.6} along {} but pixdim[{}] says {}: \
                         the header contradicts itself (tools would disagree on the spacing); \
                         fix the header",
                        ["x", "y", "z"][c],
                        c + 1,
                        sp[c]
                    ));
                }
            }
        }
        Ok(())
    }

    /// The voxel-to-world affine: the sform when `sform_code > 0`, else the qform when
    /// `qform_code > 0` (nibabel's order), else `diag(pixdim[1..=3])` (NIfTI's method 1).
    pub fn affine(&self) -> [[f64; 4]; 4] {
        if self.sform_code > 0 {
            self.sform_affine()
        } else if self.qform_code > 0 {
            self.qform_affine()
        } else {
            let [x, y, z] = self.spacing();
            [
                [x, 0.0, 0.0, 0.0],
                [0.0, y, 0.0, 0.0],
                [0.0, 0.0, z, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ]
        }
    }

    /// The affine of the sform rows, whatever `sform_code` says.
    pub fn sform_affine(&self) -> [[f64; 4]; 4] {
        [self.srow_x, self.srow_y, self.srow_z, [0.0, 0.0, 0.0, 1.0]]
    }

    /// The affine of the quaternion, offsets and `pixdim` (as `nifti_quatern_to_mat44` of the
    /// NIfTI C library), whatever `qform_code` says.
    pub fn qform_affine(&self) -> [[f64; 4]; 4] {
        let (mut b, mut c, mut d) = (self.quatern_b, self.quatern_c, self.quatern_d);
        let mut a = 1.0 - (b * b + c * c + d * d);
        if a < 1e-7 {
            // Not a unit quaternion's tail: normalise (b, c, d) and take a 180° rotation.
            let n = (b * b + c * c + d * d).sqrt();
            if n > 0.0 {
                b /= n;
                c /= n;
                d /= n;
            }
            a = 0.0;
        } else {
            a = a.sqrt();
        }
        let pos = |v: f64| if v > 0.0 && v.is_finite() { v } else { 1.0 };
        let (dx, dy) = (pos(self.pixdim[1]), pos(self.pixdim[2]));
        let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let dz = pos(self.pixdim[3]) * qfac;
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let off = [self.qoffset_x, self.qoffset_y, self.qoffset_z];
        let mut m = [[0.0; 4]; 4];
        for i in 0..3 {
            m[i] = [r[i][0] * dx, r[i][1] * dy, r[i][2] * dz, off[i]];
        }
        m[3] = [0.0, 0.0, 0.0, 1.0];
        m
    }
}

/// One 3-D volume: its header and its voxels, scaled, as `f32`, x fastest (NIfTI order).
#[derive(Debug, Clone)]
pub struct Volume {
    pub header: Header,
    /// `dims[0] * dims[1] * dims[2]` values; index `x + nx * (y + ny * z)`. NaNs are kept.
    pub data: Vec<f32>,
    /// The spatial shape `dim[1..=3]` (1 for dimensions the file does not have).
    pub dims: [usize; 3],
}

impl Volume {
    /// How many voxels are NaN (left for the caller to replace).
    pub fn nan_count(&self) -> usize {
        self.data.iter().filter(|v| v.is_nan()).count()
    }

    /// The value at voxel `(x, y, z)`, or `None` outside the grid.
    pub fn get(&self, x: usize, y: usize, z: usize) -> Option<f32> {
        let [nx, ny, nz] = self.dims;
        (x < nx && y < ny && z < nz).then(|| self.data[x + nx * (y + ny * z)])
    }
}

/// The NIfTI datatypes this module reads, with their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl DataType {
    /// The datatype of a NIfTI code, or the name of an unsupported one.
    pub(crate) fn from_code(code: i16) -> Result<DataType, &'static str> {
        Ok(match code {
            2 => DataType::U8,
            256 => DataType::I8,
            4 => DataType::I16,
            512 => DataType::U16,
            8 => DataType::I32,
            768 => DataType::U32,
            1024 => DataType::I64,
            1280 => DataType::U64,
            16 => DataType::F32,
            64 => DataType::F64,
            0 => return Err("unknown"),
            1 => return Err("binary"),
            32 => return Err("complex64"),
            128 => return Err("rgb24"),
            1536 => return Err("float128"),
            1792 => return Err("complex128"),
            2048 => return Err("complex256"),
            2304 => return Err("rgba32"),
            _ => return Err("not a NIfTI datatype code"),
        })
    }

    /// Bytes per voxel.
    pub(crate) fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }
}
