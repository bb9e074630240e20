//! Reading NIfTI-1 and NIfTI-2 volumes into a [`Volume`]: single files (`.nii`, `.nii.gz`) and
//! header/image pairs (`.hdr` + `.img`, either of them gzipped).
//!
//! Who does what:
//!
//! - **The `nifti` crate** parses NIfTI-1 headers (`NiftiHeader::from_reader`, which also finds
//!   the byte order) and reads NIfTI-1 voxel data (`StreamedNiftiVolume`, a plane or a row at a
//!   time, each decoded to the file's type and byte-swapped by `into_nifti_typed_data`).
//! - **This module** opens the files (gzip recognised by its magic bytes, not the extension;
//!   FIFOs and devices refused), finds a pair's other half, and checks the header in full before
//!   the crate sees the data: version and magic, `vox_offset`, datatype, dims and voxel count,
//!   geometry, the frame asked for, a plain file's length, the memory the result needs. It skips
//!   header extensions and earlier frames without parsing them, scales to `f32` as nibabel does,
//!   and reads a gzip stream to its end so that every member's CRC32 and ISIZE are checked.
//! - **NIfTI-2** (which the crate cannot read) is parsed and decoded here.
//!
//! The crate is handed a header of one 3-D frame (the checked dims, `bitpix` from the datatype)
//! and a reader positioned at that frame, so its own size arithmetic only ever sees checked
//! values; its rescaling is not used (it scales in `f32` and does not ignore a NaN slope).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nifti::{Endianness, NiftiHeader, StreamedNiftiVolume};

use super::{DataType, Header, NiftiError, Volume, MAX_VOXELS};

/// Reads the 3-D volume of a NIfTI file: `.nii`, `.nii.gz`, or a `.hdr`/`.img` pair named by
/// either half (NIfTI-1 or -2, either endian).
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

/// Most bytes of one piece of voxel data read at a time (a plane, else a row, for NIfTI-1).
const CHUNK_BYTES: u64 = 1 << 22;

/// A byte source and its parsing helpers, with the path for error messages.
struct Source {
    path: PathBuf,
    reader: Box<dyn Read>,
    /// Bytes in the file when it is not compressed (known up front).
    plain_len: Option<u64>,
    /// Bytes consumed so far (decompressed).
    pos: u64,
    /// The first error of the underlying reader met through [`Read`] (what the crate reads
    /// through): a bad gzip stream or an I/O error, told apart from a file that is just short.
    failed: Option<io::Error>,
}

/// What the `nifti` crate reads through: counts the bytes and keeps the first real error.
impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reader.read(buf) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed.get_or_insert(e);
                Err(copy)
            }
        }
    }
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
            failed: None,
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

/// Little- or big-endian field access into a header buffer (NIfTI-2, and the raw fields of
/// NIfTI-1 that decide how the crate is called).
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
    fn f64(&self, off: usize) -> f64 {
        f64::from_le_bytes(self.arr(off))
    }
}

/// A fixed-width text field: up to its first NUL, invalid UTF-8 replaced, trailing blanks cut.
fn text(s: &[u8]) -> String {
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).trim_end().to_string()
}

/// Our [`Header`] of the `nifti` crate's NIfTI-1 header (fields widened; dims as the signed
/// 16-bit values the format stores).
fn from_crate(h: &NiftiHeader, big: bool) -> Header {
    let f = |v: f32| v as f64;
    Header {
        version: 1,
        big_endian: big,
        dim: h.dim.map(|d| d as i16 as i64),
        pixdim: h.pixdim.map(f),
        datatype: h.datatype,
        bitpix: h.bitpix,
        vox_offset: 0, // set by the caller after checking h.vox_offset
        scl_slope: f(h.scl_slope),
        scl_inter: f(h.scl_inter),
        cal_max: f(h.cal_max),
        cal_min: f(h.cal_min),
        dim_info: h.dim_info,
        intent_code: h.intent_code as i32,
        intent_p: [f(h.intent_p1), f(h.intent_p2), f(h.intent_p3)],
        intent_name: text(&h.intent_name),
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        quatern_b: f(h.quatern_b),
        quatern_c: f(h.quatern_c),
        quatern_d: f(h.quatern_d),
        qoffset_x: f(h.quatern_x),
        qoffset_y: f(h.quatern_y),
        qoffset_z: f(h.quatern_z),
        srow_x: h.srow_x.map(f),
        srow_y: h.srow_y.map(f),
        srow_z: h.srow_z.map(f),
        xyzt_units: h.xyzt_units,
        descrip: text(&h.descrip),
    }
}

/// Parses the header bytes of a NIfTI-2 file (the crate reads NIfTI-1 only).
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
        intent_name: text(&f.b[508..524]),
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
        descrip: text(&f.b[240..320]),
    }
}

/// A NIfTI-1 header as the crate parses it, in the byte order `sizeof_hdr` gives.
///
/// The crate guesses the byte order from `dim[0]` alone (swapping when it is above 7); for a
/// header whose `dim[0]` is out of range in its own order that guess is wrong, so such a header
/// is parsed with `dim[0]` set to 1 and its own value put back (our shape check then refuses it,
/// naming the value the file holds).
fn parse_v1(bytes: &[u8], big: bool, path: &Path) -> Result<NiftiHeader, NiftiError> {
    let parse = |b: &[u8]| {
        NiftiHeader::from_reader(b).map_err(|e| NiftiError::NotNifti {
            path: path.to_path_buf(),
            msg: format!("the nifti crate cannot parse the header: {e}"),
        })
    };
    let file_order = if big {
        Endianness::Big
    } else {
        Endianness::Little
    };
    let h = parse(bytes)?;
    if h.endianness == file_order {
        return Ok(h);
    }
    let dim0 = Fields { b: bytes, big }.i16(40);
    let mut fixed = bytes.to_vec();
    fixed[40..42].copy_from_slice(&if big { [0, 1] } else { [1, 0] });
    let mut h = parse(&fixed)?;
    if h.endianness != file_order {
        return Err(NiftiError::NotNifti {
            path: path.to_path_buf(),
            msg: "the nifti crate reads the header in the wrong byte order".into(),
        });
    }
    h.dim[0] = dim0 as u16;
    Ok(h)
}

/// A header as read: ours, the crate's (NIfTI-1), and whether the data lies in a separate
/// image file (a `.hdr`/`.img` pair).
struct Parsed {
    header: Header,
    v1: Option<NiftiHeader>,
    pair: bool,
}

/// Reads and checks the header: version, byte order, magic, and `vox_offset` (set to where the
/// data starts: at least right after the header in a single file).
fn read_header(src: &mut Source) -> Result<Parsed, NiftiError> {
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
    let magic = if version == 1 {
        &bytes[344..348]
    } else {
        &bytes[4..8]
    };
    let (single, pair): (&[u8], &[u8]) = if version == 1 {
        (b"n+1\0", b"ni1\0")
    } else {
        (b"n+2\0", b"ni2\0")
    };
    let is_pair = magic == pair;
    if magic != single && !is_pair {
        return Err(not_nifti(format!(
            "magic is {:?}, expected {:?} or {:?} (an Analyze 7.5 file?)",
            String::from_utf8_lossy(magic),
            String::from_utf8_lossy(&single[..3]),
            String::from_utf8_lossy(&pair[..3])
        )));
    }
    let (mut header, v1, raw_offset) = if version == 1 {
        let h = parse_v1(&bytes, big, &path)?;
        let off = h.vox_offset as f64;
        (from_crate(&h, big), Some(h), off)
    } else {
        let f = Fields { b: &bytes, big };
        (parse_v2(&f), None, f.i64(168) as f64)
    };
    if !raw_offset.is_finite() || raw_offset < 0.0 || raw_offset.fract() != 0.0 || raw_offset > 1e15
    {
        return Err(NiftiError::BadHeader {
            path,
            msg: format!("vox_offset {raw_offset} is not a byte offset"),
        });
    }
    // A single file cannot have its data inside the header; nibabel moves such offsets (often 0)
    // to the minimum, and so does this reader. In a pair, the offset is into the image file.
    header.vox_offset = if is_pair {
        raw_offset as u64
    } else {
        (raw_offset as u64).max(size as u64 + 4)
    };
    Ok(Parsed {
        header,
        v1,
        pair: is_pair,
    })
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

/// Lower-case name of `p`'s last component.
fn lower_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// `p` with its name's ending `from` (matched case-insensitively, already checked) replaced by
/// each of `to`.
fn swap_ending(p: &Path, from: &str, to: &[&str]) -> Vec<PathBuf> {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    let stem = &name[..name.len() - from.len()];
    to.iter()
        .map(|t| p.with_file_name(format!("{stem}{t}")))
        .collect()
}

/// The first of `candidates` that exists.
fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|c| std::fs::symlink_metadata(c).is_ok())
        .cloned()
}

/// The header file to read for `path`: its `.hdr` (or `.hdr.gz`) when `path` names the image
/// half of a pair (`.img`, `.img.gz`) and the header is there, else `path` itself.
fn header_of(path: &Path) -> PathBuf {
    let name = lower_name(path);
    for (img, hdrs) in [
        (".img.gz", [".hdr.gz", ".hdr"]),
        (".img", [".hdr", ".hdr.gz"]),
    ] {
        if name.ends_with(img) && name.len() > img.len() {
            if let Some(h) = first_existing(&swap_ending(path, img, &hdrs)) {
                return h;
            }
        }
    }
    path.to_path_buf()
}

/// The image file of a pair whose header is `hdr` (`given`: the image half, when the caller named
/// it): the header's name with `.img` or `.img.gz` for its ending.
fn image_of(hdr: &Path, given: &Path) -> Result<PathBuf, NiftiError> {
    if given != hdr {
        return Ok(given.to_path_buf());
    }
    let name = lower_name(hdr);
    let ending = [".hdr.gz", ".hdr", ".nii.gz", ".nii"]
        .into_iter()
        .find(|e| name.ends_with(e) && name.len() > e.len())
        .unwrap_or("");
    let cands = swap_ending(hdr, ending, &[".img", ".img.gz"]);
    first_existing(&cands).ok_or_else(|| NiftiError::MissingImage {
        path: hdr.to_path_buf(),
        tried: cands,
    })
}

/// How raw voxel values become the `f32` of a [`Volume`]: nibabel's scaling rule.
struct Scale {
    slope: f64,
    inter: f64,
    identity: bool,
}

impl Scale {
    /// A slope of 0 or not finite means no scaling; an intercept not finite counts as 0.
    fn of(h: &Header) -> Scale {
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
        Scale {
            slope,
            inter,
            identity: slope == 1.0 && inter == 0.0,
        }
    }

    /// Appends `vals`, scaled in `f64` then rounded to `f32` (unscaled: converted directly).
    fn push<T: Voxel>(&self, out: &mut Vec<f32>, vals: &[T]) {
        if self.identity {
            out.extend(vals.iter().map(|v| v.to_f32()));
        } else {
            out.extend(
                vals.iter()
                    .map(|v| (v.to_f64() * self.slope + self.inter) as f32),
            );
        }
    }
}

/// A voxel type, converted as `as` does.
trait Voxel: Copy {
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
}

macro_rules! voxel {
    ($($t:ty),*) => {$(
        impl Voxel for $t {
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
voxel!(u8, i8, i16, u16, i32, u32, i64, u64, f32, f64);

/// The output of one frame, grown as data arrives: reserved whole for a plain file (whose length
/// was checked), doubled as needed for a gzip stream, so that a small `.nii.gz` claiming a huge
/// volume costs memory only for what it really inflates to.
struct Out {
    data: Vec<f32>,
    total: usize,
}

impl Out {
    fn new(total: usize, plain: bool, path: &Path) -> Result<Out, NiftiError> {
        let mut out = Out {
            data: Vec::new(),
            total,
        };
        if plain {
            out.reserve_to(total, path)?;
        }
        Ok(out)
    }

    fn reserve_to(&mut self, cap: usize, path: &Path) -> Result<(), NiftiError> {
        let add = cap.saturating_sub(self.data.len());
        self.data
            .try_reserve_exact(add)
            .map_err(|e| NiftiError::BadHeader {
                path: path.to_path_buf(),
                msg: format!("cannot allocate {cap} voxels: {e}"),
            })
    }

    /// Makes room for `n` more values.
    fn room(&mut self, n: usize, path: &Path) -> Result<(), NiftiError> {
        let need = self.data.len() + n;
        if need > self.data.capacity() {
            let cap = need.max(self.data.len() * 2).max(1 << 16).min(self.total);
            self.reserve_to(cap.max(need), path)?;
        }
        Ok(())
    }
}

/// Why reading NIfTI-1 data failed: in the crate (a short or broken stream) or here.
enum V1Error {
    Crate(nifti::NiftiError),
    Ours(NiftiError),
}

impl From<nifti::NiftiError> for V1Error {
    fn from(e: nifti::NiftiError) -> V1Error {
        V1Error::Crate(e)
    }
}

/// Reads one checked frame of a NIfTI-1 file through the `nifti` crate's streamed reader: planes
/// (or rows, when a plane is over [`CHUNK_BYTES`]) decoded to the file's type by the crate, then
/// scaled here. `src` stands at the frame's first byte.
fn read_frame_v1(
    src: &mut Source,
    crate_header: &NiftiHeader,
    dims: [usize; 3],
    dt: DataType,
    scale: &Scale,
    out: &mut Out,
) -> Result<(), V1Error> {
    let mut h = crate_header.clone();
    // Checked: each of dims is in 1..=32767 (a positive i16), and dt is a supported type.
    h.dim = [
        3,
        dims[0] as u16,
        dims[1] as u16,
        dims[2] as u16,
        1,
        1,
        1,
        1,
    ];
    h.bitpix = (dt.size() * 8) as i16;
    let plane = (dims[0] * dims[1] * dt.size()) as u64;
    let rank = if plane <= CHUNK_BYTES { 2 } else { 1 };
    let path = src.path.clone();
    let volume = StreamedNiftiVolume::from_reader_rank(src, &h, rank)?;
    for piece in volume {
        let piece = piece?;
        macro_rules! push {
            ($t:ty) => {{
                let vals = piece.into_nifti_typed_data::<$t>()?;
                out.room(vals.len(), &path).map_err(V1Error::Ours)?;
                scale.push(&mut out.data, &vals);
            }};
        }
        match dt {
            DataType::U8 => push!(u8),
            DataType::I8 => push!(i8),
            DataType::I16 => push!(i16),
            DataType::U16 => push!(u16),
            DataType::I32 => push!(i32),
            DataType::U32 => push!(u32),
            DataType::I64 => push!(i64),
            DataType::U64 => push!(u64),
            DataType::F32 => push!(f32),
            DataType::F64 => push!(f64),
        }
    }
    Ok(())
}

/// Reads `voxels` values of a NIfTI-2 file in pieces of at most [`CHUNK_BYTES`], decoding and
/// scaling each (the crate does not read NIfTI-2). Returns the bytes read when short.
fn read_frame_v2(
    src: &mut Source,
    voxels: u64,
    dt: DataType,
    big: bool,
    scale: &Scale,
    out: &mut Out,
) -> Result<Result<(), u64>, NiftiError> {
    let size = dt.size() as u64;
    let per = CHUNK_BYTES / size;
    let mut bytes = Vec::new();
    let mut done = 0u64;
    while done < voxels {
        let n = per.min(voxels - done);
        bytes.clear();
        let got = src.read_up_to(n * size, &mut bytes)?;
        if got < n * size {
            return Ok(Err(done * size + got));
        }
        out.room(n as usize, &src.path.clone())?;
        macro_rules! decode {
            ($t:ty, $n:expr) => {{
                let vals: Vec<$t> = bytes
                    .chunks_exact($n)
                    .map(|c| {
                        let mut a = [0u8; $n];
                        a.copy_from_slice(c);
                        if big {
                            <$t>::from_be_bytes(a)
                        } else {
                            <$t>::from_le_bytes(a)
                        }
                    })
                    .collect();
                scale.push(&mut out.data, &vals);
            }};
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
        done += n;
    }
    Ok(Ok(()))
}

fn read_impl(path: &Path, frame: Option<u64>) -> Result<Volume, NiftiError> {
    let hdr_path = header_of(path);
    let mut src = Source::open(&hdr_path)?;
    let Parsed { header, v1, pair } = read_header(&mut src)?;
    if !pair && hdr_path != path {
        return Err(NiftiError::NotNifti {
            path: path.to_path_buf(),
            msg: format!(
                "named as the image of a pair, but {} is a single-file NIfTI",
                hdr_path.display()
            ),
        });
    }
    let dt =
        DataType::from_code(header.datatype).map_err(|name| NiftiError::UnsupportedDatatype {
            path: hdr_path.clone(),
            code: header.datatype,
            name,
        })?;
    let shape = check_shape(&hdr_path, &header)?;
    header
        .check_geometry()
        .map_err(|msg| NiftiError::BadHeader {
            path: hdr_path.clone(),
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
            path: hdr_path.clone(),
            msg: format!(
                "volume {index} of {} would start past byte 2^64 (dim = {:?})",
                shape.volumes, header.dim
            ),
        });
    };
    // The data: after the header in a single file, in the image file of a pair (the header
    // file's gzip trailer checked first).
    let mut src = if pair {
        src.finish(0)?;
        Source::open(&image_of(&hdr_path, path)?)?
    } else {
        src
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
    // The f32 copy (and one piece of raw data) must fit in memory: a small .nii.gz can claim
    // (and inflate to) 2^31 voxels, so the header's size is checked before anything is read.
    let need = (shape.voxels.saturating_mul(4)).saturating_add(CHUNK_BYTES.min(frame_bytes));
    if let Some(have) = e2enc_ir::files::available_memory() {
        if need > have {
            return Err(NiftiError::BadHeader {
                path: hdr_path.clone(),
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
    let scale = Scale::of(&header);
    let mut out = Out::new(shape.voxels as usize, src.plain_len.is_some(), &src.path)?;
    let short = |src: &Source, got: u64| {
        let what = format!("the data of volume {index} (from byte {start})");
        src.truncated(&what, frame_bytes, got)
    };
    match &v1 {
        Some(crate_header) => {
            let r = read_frame_v1(&mut src, crate_header, shape.dims, dt, &scale, &mut out);
            match r {
                Ok(()) => {}
                Err(V1Error::Ours(e)) => return Err(e),
                Err(V1Error::Crate(e)) => {
                    if let Some(f) = src.failed.take() {
                        return Err(src.err_io(f));
                    }
                    return Err(match e {
                        nifti::NiftiError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                            short(&src, src.pos - start)
                        }
                        e => NiftiError::BadHeader {
                            path: src.path.clone(),
                            msg: format!("the nifti crate could not read the data: {e}"),
                        },
                    });
                }
            }
        }
        None => {
            if let Err(got) = read_frame_v2(
                &mut src,
                shape.voxels,
                dt,
                header.big_endian,
                &scale,
                &mut out,
            )? {
                return Err(short(&src, got));
            }
        }
    }
    // The later frames, then the gzip trailers.
    src.finish((shape.volumes - index - 1).saturating_mul(frame_bytes))?;
    Ok(Volume {
        header,
        data: out.data,
        dims: shape.dims,
    })
}
