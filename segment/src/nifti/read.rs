//! Reading NIfTI-1 and NIfTI-2 single files (`.nii`, `.nii.gz`) into a [`Volume`].
//!
//! The file is a stream: gzip is recognised by its magic bytes (not the extension), the byte order
//! and version by `sizeof_hdr` (348 or 540, either endian). The header is parsed and checked in
//! full before the data is touched, so an absurd header costs no allocation; a plain file is
//! also checked against its length first. Only the requested volume is read and converted.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::{DataType, Header, NiftiError, Volume, MAX_VOXELS};

/// Reads the 3-D volume of a `.nii` or `.nii.gz` file (NIfTI-1 or -2, either endian).
///
/// A file with more than one volume (`dim[4..]` multiplying to more than 1) is refused with
/// [`NiftiError::MultiVolume`]; use [`read_frame`] for those.
pub fn read(path: &Path) -> Result<Volume, NiftiError> {
    read_impl(path, None)
}

/// Reads volume `frame` (0-based) of a 4-D file; frame 0 of a 3-D file is the file itself.
pub fn read_frame(path: &Path, frame: u64) -> Result<Volume, NiftiError> {
    read_impl(path, Some(frame))
}

/// A byte source and its parsing helpers, with the path for error messages.
struct Source {
    path: PathBuf,
    reader: Box<dyn Read>,
    /// Bytes in the file when it is not compressed (known up front).
    plain_len: Option<u64>,
    /// Bytes consumed so far (decompressed).
    pos: u64,
}

impl Source {
    fn open(path: &Path) -> Result<Source, NiftiError> {
        let io_err = |source| NiftiError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Checked before opening: opening a FIFO for reading blocks until a writer comes.
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if let Some(kind) = super::file_kind(&meta) {
            return Err(NiftiError::NotAFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if let Some(kind) = super::file_kind(&meta) {
            return Err(NiftiError::NotAFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        let len = meta.len();
        let mut buf = BufReader::with_capacity(1 << 16, file);
        let head = buf.fill_buf().map_err(io_err)?;
        let gz = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
        let (reader, plain_len): (Box<dyn Read>, _) = if gz {
            (Box::new(MultiGzDecoder::new(buf)), None)
        } else {
            (Box::new(buf), Some(len))
        };
        Ok(Source {
            path: path.to_path_buf(),
            reader,
            plain_len,
            pos: 0,
        })
    }

    fn err_io(&self, source: io::Error) -> NiftiError {
        if self.plain_len.is_none() {
            NiftiError::Gzip {
                path: self.path.clone(),
                source,
            }
        } else {
            NiftiError::Io {
                path: self.path.clone(),
                source,
            }
        }
    }

    /// Reads up to `n` bytes into `out` (growing it only as data arrives); returns how many came.
    fn read_up_to(&mut self, n: u64, out: &mut Vec<u8>) -> Result<u64, NiftiError> {
        let got = (&mut self.reader)
            .take(n)
            .read_to_end(out)
            .map_err(|e| self.err_io(e))? as u64;
        self.pos += got;
        Ok(got)
    }

    /// Reads exactly `n` bytes for `what`, or fails with [`NiftiError::Truncated`].
    fn read_exact_vec(&mut self, n: u64, what: &str) -> Result<Vec<u8>, NiftiError> {
        let mut out = Vec::new();
        let got = self.read_up_to(n, &mut out)?;
        if got < n {
            return Err(self.truncated(what, n, got));
        }
        Ok(out)
    }

    /// Skips `n` bytes (header extensions, earlier frames) without keeping them.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), NiftiError> {
        let got = io::copy(&mut (&mut self.reader).take(n), &mut io::sink())
            .map_err(|e| self.err_io(e))?;
        self.pos += got;
        if got < n {
            return Err(self.truncated(what, n, got));
        }
        Ok(())
    }

    /// For a gzip stream: reads what is left, at most `expected` bytes plus 1 MiB (so a stream
    /// with a huge tail costs nothing), which makes the decoder check every member's CRC32 and
    /// ISIZE: a corrupted `.nii.gz` whose data inflates fine is refused here. A plain file has
    /// no checksum; nothing is read.
    fn finish(&mut self, expected: u64) -> Result<(), NiftiError> {
        if self.plain_len.is_some() {
            return Ok(());
        }
        let limit = expected.saturating_add(1 << 20);
        let got = io::copy(&mut (&mut self.reader).take(limit + 1), &mut io::sink())
            .map_err(|e| self.err_io(e))?;
        if got > limit {
            return Err(NiftiError::Gzip {
                path: self.path.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more than {limit} bytes follow the image data the header describes \
                         (a gzip bomb or a wrong header)"
                    ),
                ),
            });
        }
        Ok(())
    }

    fn truncated(&self, what: &str, needed: u64, got: u64) -> NiftiError {
        NiftiError::Truncated {
            path: self.path.clone(),
            what: what.to_string(),
            needed,
            got,
        }
    }
}

/// Little- or big-endian field access into a header buffer.
struct Fields<'a> {
    b: &'a [u8],
    big: bool,
}

impl Fields<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[off..off + N]);
        if self.big {
            a.reverse();
        }
        a
    }
    fn i16(&self, off: usize) -> i16 {
        i16::from_le_bytes(self.arr(off))
    }
    fn i32(&self, off: usize) -> i32 {
        i32::from_le_bytes(self.arr(off))
    }
    fn i64(&self, off: usize) -> i64 {
        i64::from_le_bytes(self.arr(off))
    }
    fn f32(&self, off: usize) -> f64 {
        f32::from_le_bytes(self.arr(off)) as f64
    }
    fn f64(&self, off: usize) -> f64 {
        f64::from_le_bytes(self.arr(off))
    }
    fn text(&self, off: usize, len: usize) -> String {
        let s = &self.b[off..off + len];
        let end = s.iter().position(|&c| c == 0).unwrap_or(len);
        String::from_utf8_lossy(&s[..end]).trim_end().to_string()
    }
}

/// Parses the header bytes (all `sizeof_hdr` of them) of a NIfTI-1 file.
fn parse_v1(f: &Fields) -> Header {
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for i in 0..8 {
        dim[i] = f.i16(40 + 2 * i) as i64;
        pixdim[i] = f.f32(76 + 4 * i);
    }
    let row = |off: usize| [f.f32(off), f.f32(off + 4), f.f32(off + 8), f.f32(off + 12)];
    Header {
        version: 1,
        big_endian: f.big,
        dim,
        pixdim,
        datatype: f.i16(70),
        bitpix: f.i16(72),
        vox_offset: 0, // set by the caller after checking f.f32(108)
        scl_slope: f.f32(112),
        scl_inter: f.f32(116),
        cal_max: f.f32(124),
        cal_min: f.f32(128),
        dim_info: f.b[39],
        intent_code: f.i16(68) as i32,
        intent_p: [f.f32(56), f.f32(60), f.f32(64)],
        intent_name: f.text(328, 16),
        qform_code: f.i16(252),
        sform_code: f.i16(254),
        quatern_b: f.f32(256),
        quatern_c: f.f32(260),
        quatern_d: f.f32(264),
        qoffset_x: f.f32(268),
        qoffset_y: f.f32(272),
        qoffset_z: f.f32(276),
        srow_x: row(280),
        srow_y: row(296),
        srow_z: row(312),
        xyzt_units: f.b[123],
        descrip: f.text(148, 80),
    }
}

/// Parses the header bytes of a NIfTI-2 file.
fn parse_v2(f: &Fields) -> Header {
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for i in 0..8 {
        dim[i] = f.i64(16 + 8 * i);
        pixdim[i] = f.f64(104 + 8 * i);
    }
    let row = |off: usize| [f.f64(off), f.f64(off + 8), f.f64(off + 16), f.f64(off + 24)];
    let code = |off: usize| f.i32(off).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
    Header {
        version: 2,
        big_endian: f.big,
        dim,
        pixdim,
        datatype: f.i16(12),
        bitpix: f.i16(14),
        vox_offset: 0, // set by the caller after checking f.i64(168)
        scl_slope: f.f64(176),
        scl_inter: f.f64(184),
        cal_max: f.f64(192),
        cal_min: f.f64(200),
        dim_info: f.b[524],
        intent_code: f.i32(504),
        intent_p: [f.f64(80), f.f64(88), f.f64(96)],
        intent_name: f.text(508, 16),
        qform_code: code(344),
        sform_code: code(348),
        quatern_b: f.f64(352),
        quatern_c: f.f64(360),
        quatern_d: f.f64(368),
        qoffset_x: f.f64(376),
        qoffset_y: f.f64(384),
        qoffset_z: f.f64(392),
        srow_x: row(400),
        srow_y: row(432),
        srow_z: row(464),
        xyzt_units: f.i32(500).clamp(0, 255) as u8,
        descrip: f.text(240, 80),
    }
}

/// Reads and checks the header; returns it with the raw vox_offset.
fn read_header(src: &mut Source) -> Result<Header, NiftiError> {
    let path = src.path.clone();
    let not_nifti = |msg: String| NiftiError::NotNifti {
        path: path.clone(),
        msg,
    };
    let first = src.read_exact_vec(4, "the header")?;
    let raw = [first[0], first[1], first[2], first[3]];
    let (version, big, size) = match (i32::from_le_bytes(raw), i32::from_be_bytes(raw)) {
        (348, _) => (1u8, false, 348usize),
        (_, 348) => (1, true, 348),
        (540, _) => (2, false, 540),
        (_, 540) => (2, true, 540),
        (le, _) => {
            return Err(not_nifti(format!(
                "sizeof_hdr is {le} (bytes {raw:02x?}), neither 348 (NIfTI-1) nor 540 (NIfTI-2) in either byte order"
            )))
        }
    };
    let mut bytes = first;
    let got = src.read_up_to(size as u64 - 4, &mut bytes)?;
    if got < size as u64 - 4 {
        return Err(src.truncated("the header", size as u64, 4 + got));
    }
    let f = Fields { b: &bytes, big };
    let (mut h, magic, raw_offset) = if version == 1 {
        let off = f.f32(108);
        (parse_v1(&f), &bytes[344..348], off)
    } else {
        (parse_v2(&f), &bytes[4..8], f.i64(168) as f64)
    };
    let want: &[u8] = if version == 1 { b"n+1\0" } else { b"n+2\0" };
    if magic != want {
        let pair: &[u8] = if version == 1 { b"ni1\0" } else { b"ni2\0" };
        let msg = if magic == pair {
            "a NIfTI pair header (.hdr/.img); only single files (.nii, .nii.gz) are read"
                .to_string()
        } else {
            format!(
                "magic is {:?}, expected {:?} (an Analyze 7.5 file?)",
                String::from_utf8_lossy(magic),
                String::from_utf8_lossy(&want[..3])
            )
        };
        return Err(not_nifti(msg));
    }
    let min_offset = size as u64 + 4;
    if !raw_offset.is_finite() || raw_offset < 0.0 || raw_offset.fract() != 0.0 || raw_offset > 1e15
    {
        return Err(NiftiError::BadHeader {
            path,
            msg: format!("vox_offset {raw_offset} is not a byte offset"),
        });
    }
    // A single file cannot have its data inside the header; nibabel moves such offsets (often 0)
    // to the minimum, and so does this reader.
    h.vox_offset = (raw_offset as u64).max(min_offset);
    Ok(h)
}

/// The checked shape of a header: spatial dims and number of volumes.
struct Shape {
    dims: [usize; 3],
    voxels: u64,
    volumes: u64,
}

fn check_shape(path: &Path, h: &Header) -> Result<Shape, NiftiError> {
    let bad = |msg: String| NiftiError::BadHeader {
        path: path.to_path_buf(),
        msg,
    };
    let nd = h.dim[0];
    if !(1..=7).contains(&nd) {
        return Err(bad(format!(
            "dim[0] is {nd}, not a number of dimensions in 1..=7 (dim = {:?})",
            h.dim
        )));
    }
    let nd = nd as usize;
    let d = |i: usize| if i <= nd { h.dim[i] } else { 1 };
    for i in 1..=nd {
        if h.dim[i] < 1 {
            return Err(bad(format!("dim[{i}] is {} (dim = {:?})", h.dim[i], h.dim)));
        }
    }
    if (5..=7).any(|i| d(i) > 1) {
        return Err(bad(format!(
            "dimensions 5 to 7 are {:?}: vector, matrix or CIFTI data is not an image volume",
            &h.dim[5..]
        )));
    }
    let voxels = (1..=3)
        .try_fold(1u64, |acc, i| acc.checked_mul(d(i) as u64))
        .filter(|&v| v <= MAX_VOXELS)
        .ok_or_else(|| {
            bad(format!(
                "{} x {} x {} voxels is more than the {MAX_VOXELS} this reader accepts",
                d(1),
                d(2),
                d(3)
            ))
        })?;
    Ok(Shape {
        dims: [d(1) as usize, d(2) as usize, d(3) as usize],
        voxels,
        volumes: d(4) as u64,
    })
}

fn read_impl(path: &Path, frame: Option<u64>) -> Result<Volume, NiftiError> {
    let mut src = Source::open(path)?;
    let header = read_header(&mut src)?;
    let dt =
        DataType::from_code(header.datatype).map_err(|name| NiftiError::UnsupportedDatatype {
            path: path.to_path_buf(),
            code: header.datatype,
            name,
        })?;
    let shape = check_shape(path, &header)?;
    header
        .check_geometry()
        .map_err(|msg| NiftiError::BadHeader {
            path: path.to_path_buf(),
            msg,
        })?;
    let index = match frame {
        None if shape.volumes > 1 => {
            return Err(NiftiError::MultiVolume {
                path: path.to_path_buf(),
                volumes: shape.volumes,
                dims: header.dim[4..=header.dim[0].clamp(4, 7) as usize].to_vec(),
            })
        }
        None => 0,
        Some(t) if t >= shape.volumes => {
            return Err(NiftiError::NoSuchFrame {
                path: path.to_path_buf(),
                frame: t,
                volumes: shape.volumes,
            })
        }
        Some(t) => t,
    };
    // voxels <= 2^31 and size <= 8, so frame_bytes cannot overflow; the frame's offset can (a
    // NIfTI-2 dim[4] up to 2^63, found by fuzzing), and then no file holds it.
    let frame_bytes = shape.voxels * dt.size() as u64;
    let Some((start, end)) = index
        .checked_mul(frame_bytes)
        .and_then(|o| o.checked_add(header.vox_offset))
        .and_then(|start| Some((start, start.checked_add(frame_bytes)?)))
    else {
        return Err(NiftiError::BadHeader {
            path: path.to_path_buf(),
            msg: format!(
                "volume {index} of {} would start past byte 2^64 (dim = {:?})",
                shape.volumes, header.dim
            ),
        });
    };
    if let Some(len) = src.plain_len {
        if len < end {
            let what = format!(
                "volume {index} ({} x {} x {} voxels of datatype {} from byte {start})",
                shape.dims[0], shape.dims[1], shape.dims[2], header.datatype
            );
            return Err(src.truncated(&what, end, len));
        }
    }
    // The raw frame and its f32 copy must fit in memory: a small .nii.gz can claim (and inflate
    // to) 2^31 voxels, so the header's size is checked before anything is read.
    let need = frame_bytes.saturating_add(shape.voxels.saturating_mul(4));
    if let Some(have) = e2enc_ir::files::available_memory() {
        if need > have {
            return Err(NiftiError::BadHeader {
                path: path.to_path_buf(),
                msg: format!(
                    "{} x {} x {} voxels of datatype {} need {:.1} GiB of memory to read, more \
                     than the {:.1} GiB available",
                    shape.dims[0],
                    shape.dims[1],
                    shape.dims[2],
                    header.datatype,
                    need as f64 / (1u64 << 30) as f64,
                    have as f64 / (1u64 << 30) as f64
                ),
            });
        }
    }
    let to_skip = start - src.pos;
    src.skip(to_skip, "the bytes before the data (vox_offset)")?;
    let mut bytes = Vec::new();
    let got = src.read_up_to(frame_bytes, &mut bytes)?;
    if got < frame_bytes {
        let what = format!("the data of volume {index} (from byte {start})");
        return Err(src.truncated(&what, frame_bytes, got));
    }
    // The later frames, then the gzip trailers.
    src.finish((shape.volumes - index - 1).saturating_mul(frame_bytes))?;
    let data = convert(&bytes, dt, header.big_endian, &header);
    Ok(Volume {
        header,
        data,
        dims: shape.dims,
    })
}

/// Decodes raw voxels to `f32`, applying the header's scaling.
fn convert(bytes: &[u8], dt: DataType, big: bool, h: &Header) -> Vec<f32> {
    let scale = h.scl_slope.is_finite() && h.scl_slope != 0.0;
    let (slope, inter) = if scale {
        (
            h.scl_slope,
            if h.scl_inter.is_finite() {
                h.scl_inter
            } else {
                0.0
            },
        )
    } else {
        (1.0, 0.0)
    };
    let identity = slope == 1.0 && inter == 0.0;
    macro_rules! decode {
        ($t:ty, $n:expr) => {
            bytes
                .chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    let v = if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    };
                    if identity {
                        v as f32
                    } else {
                        (v as f64 * slope + inter) as f32
                    }
                })
                .collect()
        };
    }
    match dt {
        DataType::U8 => decode!(u8, 1),
        DataType::I8 => decode!(i8, 1),
        DataType::I16 => decode!(i16, 2),
        DataType::U16 => decode!(u16, 2),
        DataType::I32 => decode!(i32, 4),
        DataType::U32 => decode!(u32, 4),
        DataType::I64 => decode!(i64, 8),
        DataType::U64 => decode!(u64, 8),
        DataType::F32 => decode!(f32, 4),
        DataType::F64 => decode!(f64, 8),
    }
}
