//! Tests of `e2enc_segment::nifti`: synthetic files built byte by byte (every datatype, both byte
//! orders, gzip or not, NIfTI-1 and -2, scaling, 4-D, and broken headers), write→read round
//! trips, and real files from the nibabel and nilearn wheels checked against values derived once
//! with nibabel 5.4.2. The real files live in `target/testdata`, put there by
//! `scripts/fetch-test-data.sh`; the tests that need them fail (not skip) when it is missing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

mod common;
use common::testdata;

use e2enc_segment::nifti::{self, Header, NiftiError};
use flate2::write::GzEncoder;
use flate2::Compression;

// ---------------------------------------------------------------------------------------------
// A byte-by-byte NIfTI builder.

#[derive(Clone)]
struct Spec {
    version: u8,
    big: bool,
    dim: [i64; 8],
    datatype: i16,
    bitpix: i16,
    slope: f64,
    inter: f64,
    /// `None`: the minimum (352 or 544).
    vox_offset: Option<f64>,
    magic: Option<Vec<u8>>,
    sizeof_hdr: Option<i32>,
    pixdim: [f64; 8],
    qform_code: i16,
    sform_code: i16,
    quat: [f64; 6],
    srow: [[f64; 4]; 3],
    xyzt_units: u8,
    descrip: &'static str,
    data: Vec<u8>,
}

impl Spec {
    fn new(version: u8, big: bool, dims: [i64; 3], datatype: i16, bitpix: i16) -> Spec {
        Spec {
            version,
            big,
            dim: [3, dims[0], dims[1], dims[2], 1, 1, 1, 1],
            datatype,
            bitpix,
            slope: 0.0,
            inter: 0.0,
            vox_offset: None,
            magic: None,
            sizeof_hdr: None,
            pixdim: [-1.0, 1.5, 2.0, 2.5, 1.0, 0.0, 0.0, 0.0],
            qform_code: 1,
            sform_code: 2,
            quat: [0.0, 1.0, 0.0, 10.0, -20.0, 30.0],
            srow: [
                [-1.5, 0.0, 0.0, 10.0],
                [0.0, 2.0, 0.0, -20.0],
                [0.0, 0.0, 2.5, 30.0],
            ],
            xyzt_units: 10,
            descrip: "synthetic",
            data: Vec::new(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let size = if self.version == 1 { 348 } else { 540 };
        let off = self.vox_offset.unwrap_or(size as f64 + 4.0);
        let mut b = vec![0u8; size + 4];
        let big = self.big;
        let mut put = |off: usize, le: &[u8]| {
            let mut v = le.to_vec();
            if big {
                v.reverse();
            }
            b[off..off + v.len()].copy_from_slice(&v);
        };
        let sizeof = self.sizeof_hdr.unwrap_or(size as i32);
        put(0, &sizeof.to_le_bytes());
        if self.version == 1 {
            for i in 0..8 {
                put(40 + 2 * i, &(self.dim[i] as i16).to_le_bytes());
                put(76 + 4 * i, &(self.pixdim[i] as f32).to_le_bytes());
            }
            put(70, &self.datatype.to_le_bytes());
            put(72, &self.bitpix.to_le_bytes());
            put(108, &(off as f32).to_le_bytes());
            put(112, &(self.slope as f32).to_le_bytes());
            put(116, &(self.inter as f32).to_le_bytes());
            put(252, &self.qform_code.to_le_bytes());
            put(254, &self.sform_code.to_le_bytes());
            for (i, q) in self.quat.iter().enumerate() {
                put(256 + 4 * i, &(*q as f32).to_le_bytes());
            }
            for (r, row) in self.srow.iter().enumerate() {
                for (i, v) in row.iter().enumerate() {
                    put(280 + 16 * r + 4 * i, &(*v as f32).to_le_bytes());
                }
            }
        } else {
            for i in 0..8 {
                put(16 + 8 * i, &self.dim[i].to_le_bytes());
                put(104 + 8 * i, &self.pixdim[i].to_le_bytes());
            }
            put(12, &self.datatype.to_le_bytes());
            put(14, &self.bitpix.to_le_bytes());
            put(168, &(off as i64).to_le_bytes());
            put(176, &self.slope.to_le_bytes());
            put(184, &self.inter.to_le_bytes());
            put(344, &(self.qform_code as i32).to_le_bytes());
            put(348, &(self.sform_code as i32).to_le_bytes());
            for (i, q) in self.quat.iter().enumerate() {
                put(352 + 8 * i, &q.to_le_bytes());
            }
            for (r, row) in self.srow.iter().enumerate() {
                for (i, v) in row.iter().enumerate() {
                    put(400 + 32 * r + 8 * i, &v.to_le_bytes());
                }
            }
            put(500, &(self.xyzt_units as i32).to_le_bytes());
        }
        // Byte fields: no byte order.
        if self.version == 1 {
            b[123] = self.xyzt_units;
            b[148..148 + self.descrip.len()].copy_from_slice(self.descrip.as_bytes());
            let magic = self.magic.clone().unwrap_or(b"n+1\0".to_vec());
            b[344..348].copy_from_slice(&magic);
        } else {
            b[240..240 + self.descrip.len()].copy_from_slice(self.descrip.as_bytes());
            let magic = self.magic.clone().unwrap_or(b"n+2\0\r\n\x1a\n".to_vec());
            b[4..4 + magic.len()].copy_from_slice(&magic);
        }
        // Extension bytes up to vox_offset (junk, to check they are skipped).
        let off = off.max(0.0) as usize;
        while b.len() < off {
            b.push(0xAB);
        }
        b.extend_from_slice(&self.data);
        b
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn put_file(dir: &Path, name: &str, bytes: &[u8], gz: bool) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, if gz { gzip(bytes) } else { bytes.to_vec() }).unwrap();
    p
}

/// One supported datatype: code, bitpix, and an encoder of test values (little-endian).
struct Dt {
    code: i16,
    bits: i16,
    values: Vec<f64>,
    enc: fn(f64) -> Vec<u8>,
}

fn datatypes() -> Vec<Dt> {
    vec![
        Dt {
            code: 2,
            bits: 8,
            values: vec![0.0, 1.0, 127.0, 128.0, 255.0, 7.0],
            enc: |v| vec![v as u8],
        },
        Dt {
            code: 256,
            bits: 8,
            values: vec![0.0, -1.0, 127.0, -128.0, 5.0, -7.0],
            enc: |v| vec![v as i8 as u8],
        },
        Dt {
            code: 4,
            bits: 16,
            values: vec![0.0, -1.0, 32767.0, -32768.0, 300.0, -7.0],
            enc: |v| (v as i16).to_le_bytes().to_vec(),
        },
        Dt {
            code: 512,
            bits: 16,
            values: vec![0.0, 1.0, 65535.0, 256.0, 300.0, 7.0],
            enc: |v| (v as u16).to_le_bytes().to_vec(),
        },
        Dt {
            code: 8,
            bits: 32,
            values: vec![0.0, -1.0, 2_000_000.0, -2_000_000.0, 65536.0, -7.0],
            enc: |v| (v as i32).to_le_bytes().to_vec(),
        },
        Dt {
            code: 768,
            bits: 32,
            values: vec![0.0, 1.0, 4_000_000.0, 65536.0, 300.0, 7.0],
            enc: |v| (v as u32).to_le_bytes().to_vec(),
        },
        Dt {
            code: 1024,
            bits: 64,
            values: vec![0.0, -1.0, 1e9, -1e9, 65536.0, -7.0],
            enc: |v| (v as i64).to_le_bytes().to_vec(),
        },
        Dt {
            code: 1280,
            bits: 64,
            values: vec![0.0, 1.0, 1e9, 65536.0, 300.0, 7.0],
            enc: |v| (v as u64).to_le_bytes().to_vec(),
        },
        Dt {
            code: 16,
            bits: 32,
            values: vec![0.0, -1.5, 3.25e7, -0.125, 1e-3, 7.0],
            enc: |v| (v as f32).to_le_bytes().to_vec(),
        },
        Dt {
            code: 64,
            bits: 64,
            values: vec![0.0, -1.5, 3.25e7, -0.125, 1e-3, 7.0],
            enc: |v| v.to_le_bytes().to_vec(),
        },
    ]
}

/// Encodes `values` in the datatype and byte order (each value's bytes reversed when big).
fn encode(dt: &Dt, values: &[f64], big: bool) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| {
            let mut b = (dt.enc)(v);
            if big {
                b.reverse();
            }
            b
        })
        .collect()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Synthetic files: what must read.

#[test]
fn every_datatype_in_both_byte_orders_versions_and_compressions() {
    let dir = tmp();
    let mut n = 0;
    for dt in datatypes() {
        for version in [1u8, 2] {
            for big in [false, true] {
                for gz in [false, true] {
                    let mut s = Spec::new(version, big, [3, 2, 1], dt.code, dt.bits);
                    s.data = encode(&dt, &dt.values, big);
                    let name = format!(
                        "t{}_{}_{}_{}.nii{}",
                        dt.code,
                        version,
                        big,
                        gz,
                        if gz { ".gz" } else { "" }
                    );
                    let p = put_file(dir.path(), &name, &s.bytes(), gz);
                    let v = nifti::read(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
                    let want: Vec<f32> = dt.values.iter().map(|&x| x as f32).collect();
                    assert_eq!(v.data, want, "{name}");
                    assert_eq!(v.dims, [3, 2, 1], "{name}");
                    assert_eq!(v.header.version, version);
                    assert_eq!(v.header.big_endian, big);
                    assert_eq!(v.header.datatype, dt.code);
                    assert_eq!(v.header.descrip, "synthetic");
                    assert_eq!(v.header.xyzt_units, 10);
                    assert_eq!(v.header.affine()[1], [0.0, 2.0, 0.0, -20.0], "{name}");
                    assert_eq!(v.header.spacing(), [1.5, 2.0, 2.5]);
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 80);
}

#[test]
fn scaling_follows_nibabel() {
    let dir = tmp();
    let dt = &datatypes()[2]; // int16
    let raw = [0.0, -1.0, 100.0, 7.0];
    for (slope, inter, want) in [
        (2.0, -3.0, vec![-3.0, -5.0, 197.0, 11.0]),
        (0.0, 5.0, raw.to_vec()), // slope 0: no scaling, intercept ignored
        (f64::NAN, 5.0, raw.to_vec()), // slope NaN: no scaling
        (0.5, f64::NAN, vec![0.0, -0.5, 50.0, 3.5]), // intercept NaN counts as 0
        (1.0, 0.0, raw.to_vec()),
    ] {
        for version in [1, 2] {
            let mut s = Spec::new(version, true, [2, 2, 1], dt.code, dt.bits);
            s.slope = slope;
            s.inter = inter;
            s.data = encode(dt, &raw, true);
            let p = put_file(dir.path(), "s.nii", &s.bytes(), false);
            let v = nifti::read(&p).unwrap();
            let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
            assert_eq!(v.data, want, "slope {slope} inter {inter} v{version}");
        }
    }
}

#[test]
fn vox_offset_is_honoured_and_zero_means_minimum() {
    let dir = tmp();
    let dt = &datatypes()[0];
    for version in [1, 2] {
        for gz in [false, true] {
            let mut s = Spec::new(version, false, [2, 3, 1], dt.code, dt.bits);
            s.data = encode(dt, &dt.values, false);
            s.vox_offset = Some(if version == 1 { 480.0 } else { 640.0 });
            let p = put_file(dir.path(), "o.nii", &s.bytes(), gz);
            let v = nifti::read(&p).unwrap();
            assert_eq!(v.data, vec![0.0, 1.0, 127.0, 128.0, 255.0, 7.0]);
            assert_eq!(v.header.vox_offset, if version == 1 { 480 } else { 640 });
            // An offset of 0 in a single file means "right after the header".
            s.vox_offset = None;
            let mut bytes = s.bytes();
            let (at, width) = if version == 1 { (108, 4) } else { (168, 8) };
            bytes[at..at + width].fill(0);
            let p = put_file(dir.path(), "z.nii", &bytes, gz);
            let v = nifti::read(&p).unwrap();
            assert_eq!(v.data[4], 255.0);
            assert_eq!(v.header.vox_offset, if version == 1 { 352 } else { 544 });
        }
    }
    // A fractional or negative offset is a bad header.
    let mut s = Spec::new(1, false, [2, 3, 1], dt.code, dt.bits);
    s.data = encode(dt, &dt.values, false);
    s.vox_offset = Some(352.5);
    let p = put_file(dir.path(), "f.nii", &s.bytes(), false);
    assert!(matches!(nifti::read(&p), Err(NiftiError::BadHeader { .. })));
}

#[test]
fn gzip_is_detected_by_magic_not_extension() {
    let dir = tmp();
    let dt = &datatypes()[8];
    let mut s = Spec::new(1, false, [3, 2, 1], dt.code, dt.bits);
    s.data = encode(dt, &dt.values, false);
    let a = put_file(dir.path(), "really_gz.nii", &s.bytes(), true);
    let b = put_file(dir.path(), "really_plain.nii.gz", &s.bytes(), false);
    let c = put_file(dir.path(), "no_extension", &s.bytes(), true);
    for p in [a, b, c] {
        assert_eq!(nifti::read(&p).unwrap().data[2], 3.25e7);
    }
}

#[test]
fn trailing_unit_dimensions_and_single_volume_4d_are_3d() {
    let dir = tmp();
    let dt = &datatypes()[0];
    for (dim, dims) in [
        ([4, 3, 2, 1, 1, 1, 1, 1], [3, 2, 1]),
        ([5, 3, 1, 2, 1, 1, 1, 1], [3, 1, 2]),
        ([7, 1, 2, 3, 1, 1, 1, 1], [1, 2, 3]),
        ([2, 3, 2, 9, 9, 9, 9, 9], [3, 2, 1]), // beyond dim[0]: ignored
        ([3, 6, 1, 1, 0, 0, 0, 0], [6, 1, 1]),
    ] {
        for version in [1, 2] {
            let mut s = Spec::new(version, false, [1, 1, 1], dt.code, dt.bits);
            s.dim = dim;
            s.data = encode(dt, &dt.values, false);
            let p = put_file(dir.path(), "d.nii", &s.bytes(), false);
            let v = nifti::read(&p).unwrap_or_else(|e| panic!("{dim:?}: {e}"));
            assert_eq!(v.dims, dims, "{dim:?}");
            assert_eq!(v.data.len(), 6);
            assert_eq!(v.get(0, 0, 0), Some(0.0));
            assert_eq!(v.get(dims[0], 0, 0), None);
        }
    }
}

#[test]
fn several_volumes_are_refused_by_read_and_served_by_read_frame() {
    let dir = tmp();
    let dt = &datatypes()[2];
    let vals: Vec<f64> = (0..12).map(|i| i as f64 * 10.0).collect();
    for version in [1, 2] {
        for gz in [false, true] {
            let mut s = Spec::new(version, true, [3, 2, 1], dt.code, dt.bits);
            s.dim = [4, 3, 2, 1, 2, 1, 1, 1];
            s.data = encode(dt, &vals, true);
            let p = put_file(dir.path(), "4d.nii", &s.bytes(), gz);
            match nifti::read(&p) {
                Err(e @ NiftiError::MultiVolume { volumes: 2, .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("4d.nii") && msg.contains("read_frame"),
                        "{msg}"
                    );
                }
                other => panic!("expected MultiVolume, got {other:?}"),
            }
            let f0 = nifti::read_frame(&p, 0).unwrap();
            let f1 = nifti::read_frame(&p, 1).unwrap();
            assert_eq!(f0.data, vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
            assert_eq!(f1.data, vec![60.0, 70.0, 80.0, 90.0, 100.0, 110.0]);
            assert!(matches!(
                nifti::read_frame(&p, 2),
                Err(NiftiError::NoSuchFrame {
                    volumes: 2,
                    frame: 2,
                    ..
                })
            ));
        }
    }
    // Dimensions 5..7 above 1 (vector data) are refused.
    let mut s = Spec::new(1, false, [3, 2, 1], dt.code, dt.bits);
    s.dim = [5, 3, 2, 1, 1, 3, 1, 1];
    s.data = encode(dt, &[0.0; 18], false);
    let p = put_file(dir.path(), "5d.nii", &s.bytes(), false);
    let e = nifti::read(&p).unwrap_err();
    assert!(matches!(e, NiftiError::BadHeader { .. }), "{e}");
}

#[test]
fn nans_are_kept_and_counted() {
    let dir = tmp();
    let dt = &datatypes()[8];
    let mut s = Spec::new(1, true, [2, 2, 1], dt.code, dt.bits);
    s.data = encode(dt, &[1.0, f64::NAN, f64::NAN, f64::INFINITY], true);
    let p = put_file(dir.path(), "nan.nii", &s.bytes(), false);
    let v = nifti::read(&p).unwrap();
    assert_eq!(v.nan_count(), 2);
    assert_eq!(v.data[0], 1.0);
    assert!(v.data[1].is_nan());
    assert_eq!(v.data[3], f32::INFINITY);
}

// ---------------------------------------------------------------------------------------------
// Synthetic files: what must be refused, clearly.

fn err_of(dir: &Path, name: &str, bytes: &[u8], gz: bool) -> NiftiError {
    let p = put_file(dir, name, bytes, gz);
    let e = nifti::read(&p).expect_err(name);
    assert!(
        e.to_string().contains(name),
        "error does not name the file: {e}"
    );
    e
}

#[test]
fn missing_file_names_the_path() {
    let e = nifti::read(Path::new("/no/such/dir/brain.nii.gz")).unwrap_err();
    assert!(matches!(e, NiftiError::Io { .. }));
    assert!(e.to_string().contains("/no/such/dir/brain.nii.gz"), "{e}");
}

#[test]
fn truncated_files_are_errors() {
    let dir = tmp();
    let dt = &datatypes()[9];
    for version in [1, 2] {
        let mut s = Spec::new(version, false, [3, 2, 1], dt.code, dt.bits);
        s.data = encode(dt, &dt.values, false);
        let full = s.bytes();
        for gz in [false, true] {
            let cut = &full[..full.len() - 5];
            let e = err_of(dir.path(), "cut_data.nii", cut, gz);
            assert!(matches!(e, NiftiError::Truncated { .. }), "{e}");
            let e = err_of(dir.path(), "cut_header.nii", &full[..200], gz);
            assert!(matches!(e, NiftiError::Truncated { .. }), "{e}");
            let e = err_of(dir.path(), "empty.nii", &[], gz);
            assert!(matches!(e, NiftiError::Truncated { .. }), "{e}");
        }
        // A gzip stream cut in the middle: an error (truncated or bad gzip), never a panic.
        let z = gzip(&full);
        let e = err_of(dir.path(), "cut_stream.nii.gz", &z[..z.len() / 2], false);
        assert!(
            matches!(e, NiftiError::Truncated { .. } | NiftiError::Gzip { .. }),
            "{e}"
        );
    }
}

#[test]
fn absurd_dimensions_are_refused_before_reading_data() {
    let dir = tmp();
    let dt = &datatypes()[9];
    let cases: Vec<(u8, [i64; 8])> = vec![
        (1, [3, -4, 2, 2, 1, 1, 1, 1]),
        (1, [3, 4, 0, 2, 1, 1, 1, 1]),
        (1, [0, 4, 2, 2, 1, 1, 1, 1]),
        (1, [8, 4, 2, 2, 1, 1, 1, 1]),
        (1, [-3, 4, 2, 2, 1, 1, 1, 1]),
        (1, [3, 32767, 32767, 32767, 1, 1, 1, 1]), // 3.5e13 voxels
        (2, [3, i64::MAX, i64::MAX, 2, 1, 1, 1, 1]), // overflows u64
        (2, [3, 1 << 20, 1 << 20, 1, 1, 1, 1, 1]), // 2^40 voxels
        (2, [3, 4, 2, -1, 1, 1, 1, 1]),
        (2, [4, 4, 2, 2, -5, 1, 1, 1]),
    ];
    for (version, dim) in cases {
        let mut s = Spec::new(version, false, [1, 1, 1], dt.code, dt.bits);
        s.dim = dim;
        s.data = vec![0; 64];
        for gz in [false, true] {
            let e = err_of(dir.path(), "absurd.nii", &s.bytes(), gz);
            assert!(matches!(e, NiftiError::BadHeader { .. }), "{dim:?}: {e}");
        }
    }
    // Plausible but larger than the file: 1000^3 float64 (8 GB) in a file of a few bytes. Refused
    // from the file length (plain) or when the stream ends (gzip), never allocated.
    let mut s = Spec::new(2, false, [1000, 1000, 1000], dt.code, dt.bits);
    s.data = vec![0; 64];
    for gz in [false, true] {
        let e = err_of(dir.path(), "huge.nii", &s.bytes(), gz);
        assert!(matches!(e, NiftiError::Truncated { .. }), "{e}");
    }
}

#[test]
fn not_nifti_files_are_refused() {
    let dir = tmp();
    let dt = &datatypes()[0];
    let mut s = Spec::new(1, false, [3, 2, 1], dt.code, dt.bits);
    s.data = encode(dt, &dt.values, false);

    let mut bad = s.clone();
    bad.magic = Some(b"xyz\0".to_vec());
    let e = err_of(dir.path(), "magic.nii", &bad.bytes(), false);
    assert!(matches!(e, NiftiError::NotNifti { .. }), "{e}");

    bad.magic = Some(b"ni1\0".to_vec());
    let e = err_of(dir.path(), "pair.hdr", &bad.bytes(), false);
    assert!(e.to_string().contains("pair"), "{e}");

    let mut bad = Spec::new(2, true, [3, 2, 1], dt.code, dt.bits);
    bad.data = s.data.clone();
    bad.magic = Some(b"n+1\0".to_vec());
    let e = err_of(dir.path(), "magic2.nii", &bad.bytes(), true);
    assert!(matches!(e, NiftiError::NotNifti { .. }), "{e}");

    let mut bad = s.clone();
    bad.sizeof_hdr = Some(123);
    let e = err_of(dir.path(), "sizeof.nii", &bad.bytes(), false);
    assert!(matches!(e, NiftiError::NotNifti { .. }), "{e}");

    let e = err_of(
        dir.path(),
        "text.nii",
        b"hello, this is not an image at all",
        false,
    );
    assert!(matches!(e, NiftiError::NotNifti { .. }), "{e}");
}

#[test]
fn unsupported_datatypes_are_named() {
    let dir = tmp();
    for (code, name) in [
        (32, "complex64"),
        (128, "rgb24"),
        (1, "binary"),
        (0, "unknown"),
        (999, "not a NIfTI datatype"),
    ] {
        let mut s = Spec::new(1, false, [2, 2, 1], code, 8);
        s.data = vec![0; 64];
        let e = err_of(dir.path(), "dt.nii", &s.bytes(), false);
        assert!(matches!(e, NiftiError::UnsupportedDatatype { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry.

fn assert_affine_close(a: [[f64; 4]; 4], b: [[f64; 4]; 4], tol: f64, what: &str) {
    for i in 0..4 {
        for j in 0..4 {
            assert!(
                (a[i][j] - b[i][j]).abs() <= tol,
                "{what}: [{i}][{j}] {} vs {}\n{a:?}\n{b:?}",
                a[i][j],
                b[i][j]
            );
        }
    }
}

#[test]
fn affine_prefers_sform_then_qform_then_pixdim() {
    let mut h = Header::new([4, 4, 4], [2.0, 3.0, 4.0]);
    h.srow_x = [0.0, -3.0, 0.0, 5.0];
    h.srow_y = [2.0, 0.0, 0.0, 6.0];
    h.srow_z = [0.0, 0.0, 4.0, 7.0];
    // A 90° rotation about z: quaternion (cos 45°, 0, 0, sin 45°).
    let s = std::f64::consts::FRAC_1_SQRT_2;
    h.quatern_d = s;
    h.qoffset_x = 1.0;
    h.qoffset_y = 2.0;
    h.qoffset_z = 3.0;
    h.qform_code = 1;
    h.sform_code = 1;
    let sform = [
        [0.0, -3.0, 0.0, 5.0],
        [2.0, 0.0, 0.0, 6.0],
        [0.0, 0.0, 4.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(h.affine(), sform);
    h.sform_code = 0;
    let qform = [
        [0.0, -3.0, 0.0, 1.0],
        [2.0, 0.0, 0.0, 2.0],
        [0.0, 0.0, 4.0, 3.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_affine_close(h.affine(), qform, 1e-12, "qform");
    h.pixdim[0] = -1.0; // qfac flips z
    assert_affine_close(
        h.affine(),
        [qform[0], qform[1], [0.0, 0.0, -4.0, 3.0], qform[3]],
        1e-12,
        "qfac",
    );
    h.qform_code = 0;
    assert_eq!(
        h.affine(),
        [
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 4.0, 0.0],
            [0.0, 0.0, 0.0, 1.0]
        ]
    );
    h.pixdim[1] = -2.0;
    h.pixdim[2] = 0.0;
    h.pixdim[3] = f64::NAN;
    assert_eq!(h.spacing(), [2.0, 1.0, 1.0]);
}

// ---------------------------------------------------------------------------------------------
// Write → read.

fn geometry_eq(a: &Header, b: &Header) {
    assert_eq!(a.qform_code, b.qform_code);
    assert_eq!(a.sform_code, b.sform_code);
    assert_eq!(a.xyzt_units, b.xyzt_units);
    for (x, y) in a.spacing().iter().zip(b.spacing()) {
        assert!(
            (x - y).abs() < 1e-6,
            "spacing {:?} vs {:?}",
            a.spacing(),
            b.spacing()
        );
    }
    assert_eq!(a.pixdim[0].signum(), b.pixdim[0].signum());
    assert_affine_close(a.affine(), b.affine(), 1e-5, "affine");
    assert_affine_close(a.qform_affine(), b.qform_affine(), 1e-5, "qform");
    assert_affine_close(a.sform_affine(), b.sform_affine(), 1e-5, "sform");
}

#[test]
fn labels_round_trip_as_uint8_or_uint16() {
    let dir = tmp();
    // A big-endian NIfTI-2 source, to check the geometry crosses versions and byte orders.
    let dt = &datatypes()[8];
    let mut s = Spec::new(2, true, [3, 2, 1], dt.code, dt.bits);
    s.quat = [0.1, 0.2, 0.3, 4.0, 5.0, 6.0];
    s.data = encode(dt, &dt.values, true);
    let src = nifti::read(&put_file(dir.path(), "src.nii", &s.bytes(), false)).unwrap();
    let dims = [5, 4, 3];
    for (max, want_dt) in [(3u16, 2i16), (255, 2), (256, 512), (65535, 512)] {
        let labels: Vec<u16> = (0..60u16)
            .map(|i| if i == 17 { max } else { i % 4 })
            .collect();
        for name in ["l.nii", "l.nii.gz"] {
            let p = dir.path().join(name);
            nifti::write_labels(&p, &src.header, dims, &labels).unwrap();
            let v = nifti::read(&p).unwrap();
            assert_eq!(v.dims, dims);
            assert_eq!(v.header.version, 1);
            assert!(!v.header.big_endian);
            assert_eq!(v.header.datatype, want_dt, "max {max}");
            assert_eq!(v.header.bitpix, if want_dt == 2 { 8 } else { 16 });
            assert_eq!(v.header.vox_offset, 352);
            assert_eq!((v.header.scl_slope, v.header.scl_inter), (1.0, 0.0));
            assert_eq!(v.header.intent_code, 1002);
            assert_eq!(v.header.dim, [3, 5, 4, 3, 1, 1, 1, 1]);
            let want: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            assert_eq!(v.data, want);
            geometry_eq(&v.header, &src.header);
            let raw = fs::read(&p).unwrap();
            assert_eq!(raw[..2] == [0x1f, 0x8b], name.ends_with(".gz"), "{name}");
            if !name.ends_with(".gz") {
                assert_eq!(raw.len(), 352 + 60 * if want_dt == 2 { 1 } else { 2 });
                assert_eq!(&raw[344..348], b"n+1\0");
            }
        }
    }
}

#[test]
fn f32_round_trips_with_nans() {
    let dir = tmp();
    let mut like = Header::new([2, 2, 2], [0.8, 0.8, 3.0]);
    like.qform_code = 1;
    like.quatern_c = 1.0;
    like.pixdim[0] = -1.0;
    like.srow_x = [-0.8, 0.0, 0.0, 90.0];
    let data = vec![0.0, 0.25, f32::NAN, -1e30, 1e-30, 0.5, 1.0, 0.75];
    for name in ["p.nii", "p.nii.gz"] {
        let p = dir.path().join(name);
        nifti::write_f32(&p, &like, [2, 2, 2], &data).unwrap();
        let v = nifti::read(&p).unwrap();
        assert_eq!(v.header.datatype, 16);
        assert_eq!(v.nan_count(), 1);
        for (a, b) in v.data.iter().zip(&data) {
            assert!(a == b || (a.is_nan() && b.is_nan()));
        }
        geometry_eq(&v.header, &like);
    }
}

/// Names of the files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tmp();
    let like = Header::new([2, 2, 2], [1.0; 3]);
    let p = dir.path().join("out.nii.gz");
    // Wrong length, zero or too large dims: refused, no file.
    for (dims, n) in [([2, 2, 2], 7), ([0, 2, 2], 0), ([40000, 1, 1], 40000)] {
        let e = nifti::write_labels(&p, &like, dims, &vec![0u16; n]).unwrap_err();
        assert!(e.to_string().contains("out.nii.gz"), "{e}");
        assert!(nifti::write_f32(&p, &like, dims, &vec![0.0; n]).is_err());
    }
    assert!(listing(dir.path()).is_empty());
    // Target is a directory: the rename fails, the temporary file goes away.
    fs::create_dir(dir.path().join("taken.nii")).unwrap();
    let e =
        nifti::write_labels(&dir.path().join("taken.nii"), &like, [2, 2, 2], &[1; 8]).unwrap_err();
    assert!(e.to_string().contains("taken.nii"), "{e}");
    assert_eq!(listing(dir.path()), vec!["taken.nii"]);
    // Folder missing: a clear error naming the path.
    let e =
        nifti::write_f32(&dir.path().join("no/such.nii"), &like, [2, 2, 2], &[0.0; 8]).unwrap_err();
    assert!(e.to_string().contains("such.nii"), "{e}");
    // An existing file is replaced whole.
    let q = dir.path().join("ok.nii");
    nifti::write_labels(&q, &like, [2, 2, 2], &[1; 8]).unwrap();
    nifti::write_labels(&q, &like, [2, 2, 2], &[300; 8]).unwrap();
    assert_eq!(nifti::read(&q).unwrap().data, vec![300.0; 8]);
    assert_eq!(listing(dir.path()), vec!["ok.nii", "taken.nii"]);
}

// ---------------------------------------------------------------------------------------------
// Real files (nibabel's test data and nilearn's MNI templates). Expected values come from
// nibabel 5.4.2 (`np.asanyarray(img.dataobj)`, `img.affine`, `img.header.get_qform()`).

fn sum(v: &[f32]) -> f64 {
    v.iter().filter(|x| !x.is_nan()).map(|&x| x as f64).sum()
}

fn at(v: &nifti::Volume, x: usize, y: usize, z: usize) -> f64 {
    v.get(x, y, z).unwrap() as f64
}

#[test]
fn real_anatomical_big_endian_int16() {
    let v = nifti::read(&testdata("anatomical.nii")).unwrap();
    assert_eq!(v.dims, [33, 41, 25]);
    assert!(v.header.big_endian);
    assert_eq!(v.header.datatype, 4);
    assert_eq!(sum(&v.data), 284166082.0);
    assert_eq!(at(&v, 0, 0, 0), 10712.0);
    assert_eq!(at(&v, 16, 20, 12), 11881.0);
    assert_eq!(at(&v, 32, 40, 24), 2971.0);
    assert_eq!(at(&v, 5, 7, 2), 7085.0);
    assert_eq!(v.header.descrip, "spm - 3D normalized");
    assert_eq!(v.header.pixdim[..4], [-1.0, 2.0, 2.0, 2.0]);
    let a = [
        [-2.0, 0.0, 0.0, 32.0],
        [0.0, 2.0, 0.0, -40.0],
        [0.0, 0.0, 2.0, -16.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(v.header.affine(), a);
    assert_affine_close(v.header.qform_affine(), a, 1e-12, "qform");
}

#[test]
fn real_nan_file_big_endian_float32() {
    let v = nifti::read(&testdata("resampled_anat_moved.nii")).unwrap();
    assert_eq!(v.dims, [17, 21, 3]);
    assert_eq!(v.header.datatype, 16);
    assert!(v.header.big_endian);
    assert_eq!(v.nan_count(), 153);
    assert!((sum(&v.data) - 7749957.09866333).abs() < 1e-3);
    assert!(at(&v, 0, 0, 0).is_nan());
    assert_eq!(at(&v, 8, 10, 1), 10849.904296875);
    assert_eq!(at(&v, 5, 7, 2), 7736.2646484375);
    let a = [
        [-4.0, 0.0, 0.0, 32.0],
        [0.0, 4.0, 0.0, -40.0],
        [0.0, 0.0, 8.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(v.header.affine(), a);

    let v = nifti::read(&testdata("reoriented_anat_moved.nii")).unwrap();
    assert_eq!(v.dims, [21, 26, 22]);
    assert_eq!(v.nan_count(), 0);
    assert!((sum(&v.data) - 32739769.449157715).abs() < 1e-2);
    assert_eq!(at(&v, 10, 13, 11), 8117.22021484375);
    assert_eq!(v.header.affine()[0], [4.0, 0.0, 0.0, -35.29789733886719]);
}

#[test]
fn real_scaled_4d_functional() {
    let p = testdata("functional.nii");
    assert!(matches!(
        nifti::read(&p),
        Err(NiftiError::MultiVolume { volumes: 20, .. })
    ));
    let v0 = nifti::read_frame(&p, 0).unwrap();
    assert_eq!(v0.dims, [17, 21, 3]);
    assert!((v0.header.scl_slope - 0.07540696859359741).abs() < 1e-12);
    assert!((v0.header.scl_inter - 3100.76171875).abs() < 1e-9);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();
    assert!(close(sum(&v0.data), 3883746.552329719), "{}", sum(&v0.data));
    assert!(close(at(&v0, 0, 0, 0), 4004.137202501297));
    assert!(close(at(&v0, 8, 10, 1), 3865.7654151320457));
    assert!(close(at(&v0, 16, 20, 2), 3142.8388072252274));
    let v19 = nifti::read_frame(&p, 19).unwrap();
    assert!(close(sum(&v19.data), 3888072.273083091));
    assert!(close(at(&v19, 3, 4, 1), 3827.307861149311));
    assert_eq!(v0.header.affine()[2], [0.0, 0.0, 8.0, 0.0]);
}

// nibabel: the affine (sform) of example4d.nii.gz and example_nifti2.nii.gz.
const EXAMPLE4D_AFFINE: [[f64; 4]; 4] = [
    [
        -2.0,
        6.714715653593746e-19,
        9.081024511081715e-18,
        117.8551025390625,
    ],
    [
        -6.714715653593746e-19,
        1.9737114906311035,
        -0.35552823543548584,
        -35.72294235229492,
    ],
    [
        8.25548088896093e-18,
        0.3232076168060303,
        2.171081781387329,
        -7.248798370361328,
    ],
    [0.0, 0.0, 0.0, 1.0],
];

#[test]
fn real_example4d_with_extensions() {
    let p = testdata("example4d.nii.gz");
    assert!(matches!(
        nifti::read(&p),
        Err(NiftiError::MultiVolume { volumes: 2, .. })
    ));
    let v0 = nifti::read_frame(&p, 0).unwrap();
    let v1 = nifti::read_frame(&p, 1).unwrap();
    assert_eq!(v0.dims, [128, 96, 24]);
    assert_eq!(v0.header.vox_offset, 416); // a header extension sits before the data
    assert_eq!(v0.header.dim[..5], [4, 128, 96, 24, 2]);
    assert_eq!(sum(&v0.data), 50994397.0);
    assert_eq!(sum(&v1.data), 101985356.0 - 50994397.0);
    assert_eq!(at(&v0, 64, 48, 12), 265.0);
    assert_eq!(
        v0.header.descrip,
        "FSL3.3\0 v2.25 NIfTI-1 Single file format"
            .split('\0')
            .next()
            .unwrap()
    );
    assert_eq!(v0.header.xyzt_units, 10);
    assert_eq!(v0.header.pixdim[4], 2000.0);
    assert_affine_close(v0.header.affine(), EXAMPLE4D_AFFINE, 1e-12, "sform");
    // nibabel's get_qform() of the same file.
    let q = [
        [
            -2.0,
            7.754818083349146e-26,
            -6.938240866840628e-27,
            117.8551025390625,
        ],
        [
            7.754818083349146e-26,
            1.9737114380100416,
            -0.3555282251099068,
            -35.72294235229492,
        ],
        [
            6.307494294641728e-27,
            0.3232076104740321,
            2.1710816877290404,
            -7.248798370361328,
        ],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_affine_close(v0.header.qform_affine(), q, 1e-6, "qform");
}

#[test]
fn real_nifti2() {
    let p = testdata("example_nifti2.nii.gz");
    assert!(matches!(
        nifti::read(&p),
        Err(NiftiError::MultiVolume { volumes: 2, .. })
    ));
    let v0 = nifti::read_frame(&p, 0).unwrap();
    let v1 = nifti::read_frame(&p, 1).unwrap();
    assert_eq!(v0.header.version, 2);
    assert_eq!(v0.header.vox_offset, 608);
    assert_eq!(v0.dims, [32, 20, 12]);
    assert_eq!(v0.header.datatype, 4);
    assert_eq!(sum(&v0.data), 3461748.0);
    assert_eq!(sum(&v1.data), 6926802.0 - 3461748.0);
    assert_eq!(at(&v0, 0, 0, 0), 424.0);
    assert_eq!(at(&v0, 16, 10, 6), 265.0);
    assert_eq!(at(&v0, 31, 19, 11), 484.0);
    assert_eq!(at(&v0, 5, 7, 2), 405.0);
    assert_affine_close(v0.header.affine(), EXAMPLE4D_AFFINE, 1e-12, "sform");
    // The qform: nibabel keeps a tiny quaternion `a` here (1e-5 off); the NIfTI C library rule
    // used here rounds it to 0, which agrees with the sform.
    assert_affine_close(v0.header.qform_affine(), EXAMPLE4D_AFFINE, 1e-6, "qform");
    assert!((v0.header.pixdim[3] - 2.1999990940093994).abs() < 1e-12);
}

#[test]
fn real_small_and_cifti() {
    let v = nifti::read(&testdata("standard.nii.gz")).unwrap();
    assert_eq!(v.dims, [4, 5, 7]);
    assert_eq!(sum(&v.data), 7650.0);
    assert_eq!(at(&v, 3, 4, 6), 255.0);
    assert_eq!(v.header.spacing(), [1.0, 3.0, 2.0]);
    assert_eq!(v.header.affine()[1], [0.0, 3.0, 0.0, 0.0]);
    // A CIFTI-2 matrix (NIfTI-2, dim = [6, 1, 1, 1, 1, 10, 10, 1]) is not a volume.
    let e = nifti::read(&testdata("row_major.dconn.nii")).unwrap_err();
    assert!(matches!(e, NiftiError::BadHeader { .. }), "{e}");
}

#[test]
fn real_mni_templates_and_a_label_map_round_trip() {
    let mni = |kind: &str| {
        nifti::read(&testdata(&format!(
            "mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
        )))
        .unwrap()
    };
    let (t1, gm, wm) = (mni("t1"), mni("gm"), mni("wm"));
    let affine = [
        [1.0, 0.0, 0.0, -98.0],
        [0.0, 1.0, 0.0, -134.0],
        [0.0, 0.0, 1.0, -72.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for (v, total, centre) in [
        (&t1, 333468829.0, 198.0),
        (&gm, 257090788.0, 126.0),
        (&wm, 170935158.0, 124.0),
    ] {
        assert_eq!(v.dims, [197, 233, 189]);
        assert_eq!(v.header.datatype, 2);
        assert_eq!(v.header.sform_code, 2);
        assert_eq!(v.header.qform_code, 0);
        assert_eq!(v.header.affine(), affine);
        assert_eq!(v.header.spacing(), [1.0; 3]);
        assert_eq!(sum(&v.data), total);
        assert_eq!(at(v, 98, 116, 94), centre);
        assert_eq!(at(v, 196, 232, 188), 0.0);
    }
    assert_eq!(at(&t1, 100, 120, 80), 175.0);
    assert_eq!(at(&t1, 60, 150, 100), 162.0);
    assert!((sum(&t1.data) / t1.data.len() as f64 - 38.438930276559084).abs() < 1e-9);

    // argmax(background, GM, WM) as a label map, written on the T1's grid and read back.
    let labels: Vec<u16> = gm
        .data
        .iter()
        .zip(&wm.data)
        .map(|(&g, &w)| {
            let bg = 255.0 - g - w;
            if g > bg && g >= w {
                1
            } else if w > bg && w > g {
                2
            } else {
                0
            }
        })
        .collect();
    let dir = tmp();
    let p = dir.path().join("labels.nii.gz");
    nifti::write_labels(&p, &t1.header, t1.dims, &labels).unwrap();
    let back = nifti::read(&p).unwrap();
    assert_eq!(back.dims, t1.dims);
    assert_eq!(back.header.datatype, 2);
    assert_eq!(back.header.affine(), affine);
    assert!(back.data.iter().zip(&labels).all(|(&a, &b)| a == b as f32));
    let counts = (0..3)
        .map(|k| labels.iter().filter(|&&l| l == k).count())
        .collect::<Vec<_>>();
    assert!(counts.iter().all(|&c| c > 100_000), "{counts:?}");
}

// ---------------------------------------------------------------------------------------------
// Hostile input: geometry, gzip integrity, non-regular files.

/// A valid little-endian NIfTI-1 uint8 3x2x1 image.
fn small_spec() -> Spec {
    let mut s = Spec::new(1, false, [3, 2, 1], 2, 8);
    s.data = vec![1, 2, 3, 4, 5, 6];
    s
}

fn bad_header_msg(r: Result<nifti::Volume, NiftiError>) -> String {
    match r {
        Err(e @ NiftiError::BadHeader { .. }) => e.to_string(),
        Err(e) => panic!("expected a bad header, got {e}"),
        Ok(_) => panic!("expected a bad header, got a volume"),
    }
}

#[test]
fn untrustworthy_geometry_is_refused_naming_the_field() {
    let dir = tmp();
    let ok = put_file(dir.path(), "ok.nii", &small_spec().bytes(), false);
    assert!(nifti::read(&ok).is_ok());
    for (i, v) in [(1, f64::NAN), (2, 0.0), (3, f64::INFINITY), (1, -1.5)] {
        let mut s = small_spec();
        s.pixdim[i] = v;
        // A valid sform saying otherwise does not make the pixdim usable.
        let p = put_file(dir.path(), "p.nii.gz", &s.bytes(), true);
        let m = bad_header_msg(nifti::read(&p));
        assert!(
            m.contains(&format!("pixdim[{i}]")) && m.contains("p.nii.gz"),
            "{m}"
        );
    }
    let mut s = small_spec();
    s.srow[1][3] = f64::NAN;
    let m = bad_header_msg(nifti::read(&put_file(
        dir.path(),
        "s.nii",
        &s.bytes(),
        false,
    )));
    assert!(m.contains("srow_y"), "{m}");
    let mut s = small_spec();
    s.srow[2] = [0.0, 0.0, 0.0, 1.0];
    let m = bad_header_msg(nifti::read(&put_file(
        dir.path(),
        "z.nii",
        &s.bytes(),
        false,
    )));
    assert!(m.contains("singular"), "{m}");
    // The sform says 3 mm along y, pixdim 2 mm: the header contradicts itself.
    let mut s = small_spec();
    s.srow[1][1] = 3.0;
    let m = bad_header_msg(nifti::read(&put_file(
        dir.path(),
        "c.nii",
        &s.bytes(),
        false,
    )));
    assert!(m.contains("pixdim[2]") && m.contains("contradicts"), "{m}");
    // Ignored forms may hold anything.
    let mut s = small_spec();
    s.sform_code = 0;
    s.srow[0] = [f64::NAN; 4];
    assert!(nifti::read(&put_file(dir.path(), "i.nii", &s.bytes(), false)).is_ok());
    let mut s = small_spec();
    s.qform_code = 1;
    s.quat[3] = f64::INFINITY;
    let m = bad_header_msg(nifti::read(&put_file(
        dir.path(),
        "q.nii",
        &s.bytes(),
        false,
    )));
    assert!(m.contains("qoffset_x"), "{m}");
}

#[test]
fn same_grid_never_matches_a_nan_and_compares_voxel_sizes() {
    let dir = tmp();
    let a = nifti::read(&put_file(dir.path(), "a.nii", &small_spec().bytes(), false)).unwrap();
    assert!(nifti::same_grid(&a, &a.clone()).is_ok());
    let mut b = a.clone();
    b.header.srow_x[3] = f64::NAN;
    assert!(nifti::same_grid(&a, &b).is_err());
    assert!(nifti::same_grid(&b, &a).is_err());
    let mut b = a.clone();
    b.header.pixdim[3] = 5.0;
    let m = nifti::same_grid(&a, &b).unwrap_err();
    assert!(m.contains("voxel sizes"), "{m}");
}

#[test]
fn corrupted_gzip_trailers_are_refused() {
    let dir = tmp();
    let gz = gzip(&small_spec().bytes());
    let ok = dir.path().join("ok.nii.gz");
    fs::write(&ok, &gz).unwrap();
    assert!(nifti::read(&ok).is_ok());
    // CRC32 (the trailer's first 4 bytes) and ISIZE (the last 4): the data inflates fine.
    for at in [gz.len() - 8, gz.len() - 1] {
        let mut bad = gz.clone();
        bad[at] ^= 0x10;
        let p = dir.path().join("bad.nii.gz");
        fs::write(&p, &bad).unwrap();
        match nifti::read(&p) {
            Err(e @ NiftiError::Gzip { .. }) => assert!(e.to_string().contains("bad.nii.gz")),
            Err(e) => panic!("byte {at}: expected a gzip error, got {e}"),
            Ok(_) => panic!("byte {at}: a corrupted gzip trailer was accepted"),
        }
    }
    // A truncated trailer too.
    let p = dir.path().join("cut.nii.gz");
    fs::write(&p, &gz[..gz.len() - 3]).unwrap();
    assert!(nifti::read(&p).is_err());
}

#[test]
fn fifos_devices_and_folders_are_refused_at_once() {
    let dir = tmp();
    let fifo = dir.path().join("pipe.nii");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mut cases = vec![PathBuf::from("/dev/zero"), dir.path().to_path_buf()];
    if made {
        cases.push(fifo);
    }
    for p in cases {
        match nifti::read(&p) {
            Err(e @ NiftiError::NotAFile { .. }) => {
                assert!(e.to_string().contains(&*p.to_string_lossy()), "{e}")
            }
            Err(e) => panic!("{}: expected NotAFile, got {e}", p.display()),
            Ok(_) => panic!("{}: read", p.display()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Header/image pairs (.hdr + .img), written by nibabel 5.4.2: `tests/data/make_pairs.py`.

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// nibabel's `img.affine` of the pair fixtures (the sform, a rotation of 0.3 rad about z).
const PAIR_AFFINE: [[f64; 4]; 4] = [
    [0.7642691731452942, -0.44328030943870544, 0.0, -20.0],
    [0.23641616106033325, 1.4330047369003296, 0.0, 31.5],
    [0.0, 0.0, 3.0, -7.25],
    [0.0, 0.0, 0.0, 1.0],
];

#[test]
fn nifti1_pairs_written_by_nibabel_read_from_either_half() {
    let single = nifti::read(&fixture("pair_i16_single.nii")).unwrap();
    for name in [
        "pair_i16.hdr",
        "pair_i16.img",
        "pair_i16_be.hdr.gz",
        "pair_i16_be.img.gz",
    ] {
        let v = nifti::read(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.dims, [5, 4, 3], "{name}");
        assert_eq!(v.header.big_endian, name.contains("_be"), "{name}");
        assert_eq!(
            v.header.vox_offset, 0,
            "{name}: a pair's data starts the .img"
        );
        assert_eq!((v.header.scl_slope, v.header.scl_inter), (2.0, -3.0));
        // The int16 values x + 10y + 100z - 50, scaled by 2 and -3 (nibabel: data[0,0,0] =
        // -103, data[4,3,2] = 365, sum 7860).
        for z in 0..3 {
            for y in 0..4 {
                for x in 0..5 {
                    let raw = (x + 10 * y + 100 * z) as f32 - 50.0;
                    assert_eq!(
                        v.get(x, y, z),
                        Some(2.0 * raw - 3.0),
                        "{name} ({x},{y},{z})"
                    );
                }
            }
        }
        assert_eq!(sum(&v.data), 7860.0);
        assert_eq!(v.data, single.data, "{name} vs the single file");
        geometry_eq(&v.header, &single.header);
        assert_affine_close(v.header.affine(), PAIR_AFFINE, 1e-7, name);
        assert_eq!(v.header.sform_code, 2);
        assert_eq!(v.header.qform_code, 1);
    }
}

#[test]
fn broken_pairs_are_refused_naming_the_file_at_fault() {
    let dir = tmp();
    let hdr = fs::read(fixture("pair_i16.hdr")).unwrap();
    let img = fs::read(fixture("pair_i16.img")).unwrap();

    // The image is missing: the error names the header and where the image was looked for.
    let p = put_file(dir.path(), "lonely.hdr", &hdr, false);
    let e = nifti::read(&p).unwrap_err();
    assert!(matches!(e, NiftiError::MissingImage { .. }), "{e}");
    let m = e.to_string();
    assert!(m.contains("lonely.hdr") && m.contains("lonely.img"), "{m}");

    // The image is short: truncated, naming the image.
    put_file(dir.path(), "short.hdr", &hdr, false);
    let p = put_file(dir.path(), "short.img", &img[..100], false);
    for q in [dir.path().join("short.hdr"), p] {
        let e = nifti::read(&q).unwrap_err();
        assert!(matches!(e, NiftiError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("short.img"), "{e}");
    }
    // The same, gzipped: the stream ends early.
    put_file(dir.path(), "shortz.hdr", &hdr, false);
    put_file(dir.path(), "shortz.img.gz", &img[..100], true);
    let e = nifti::read(&dir.path().join("shortz.hdr")).unwrap_err();
    assert!(matches!(e, NiftiError::Truncated { .. }), "{e}");

    // vox_offset is an offset into the image: 8 junk bytes, then the data.
    let mut moved = hdr.clone();
    moved[108..112].copy_from_slice(&8f32.to_le_bytes());
    put_file(dir.path(), "moved.hdr", &moved, false);
    let mut junk = vec![0x5a; 8];
    junk.extend_from_slice(&img);
    put_file(dir.path(), "moved.img", &junk, false);
    let v = nifti::read(&dir.path().join("moved.hdr")).unwrap();
    assert_eq!(v.header.vox_offset, 8);
    assert_eq!(v.data, nifti::read(&fixture("pair_i16.hdr")).unwrap().data);

    // A corrupted gzip trailer on the header file is caught too.
    let mut z = gzip(&hdr);
    let at = z.len() - 8;
    z[at] ^= 0x10;
    put_file(dir.path(), "crc.hdr.gz", &z, false);
    put_file(dir.path(), "crc.img", &img, false);
    let e = nifti::read(&dir.path().join("crc.hdr.gz")).unwrap_err();
    assert!(matches!(e, NiftiError::Gzip { .. }), "{e}");

    // An .img whose .hdr is a single file (magic n+1) is not a pair.
    let single = fs::read(fixture("pair_i16_single.nii")).unwrap();
    put_file(dir.path(), "odd.hdr", &single, false);
    let p = put_file(dir.path(), "odd.img", &img, false);
    let e = nifti::read(&p).unwrap_err();
    assert!(matches!(e, NiftiError::NotNifti { .. }), "{e}");

    // Analyze 7.5 (a pair header with no NIfTI magic) is refused, naming the magic.
    let mut analyze = hdr.clone();
    analyze[344..348].fill(0);
    put_file(dir.path(), "analyze.img", &img, false);
    let e = err_of(dir.path(), "analyze.hdr", &analyze, false);
    assert!(matches!(e, NiftiError::NotNifti { .. }), "{e}");
    assert!(e.to_string().contains("Analyze"), "{e}");
}

/// The nifti crate guesses the byte order from `dim[0]` (swapping when it reads above 7); here
/// `sizeof_hdr` decides, so a bad `dim[0]` is reported as the file holds it, in either order.
#[test]
fn bad_dim0_is_named_as_stored_in_either_byte_order() {
    let dir = tmp();
    for big in [false, true] {
        for dim0 in [0i64, 8, -3, 256, 3 << 8, i16::MAX as i64] {
            let mut s = Spec::new(1, big, [3, 2, 1], 2, 8);
            s.dim[0] = dim0;
            s.data = vec![1, 2, 3, 4, 5, 6];
            let e = err_of(dir.path(), "d0.nii", &s.bytes(), false);
            let m = e.to_string();
            assert!(matches!(e, NiftiError::BadHeader { .. }), "{m}");
            assert!(
                m.contains(&format!("dim[0] is {dim0},")),
                "big {big}, dim[0] {dim0}: {m}"
            );
        }
        // A valid header in the same byte order still reads: the order is not guessed.
        let mut s = Spec::new(1, big, [3, 2, 1], 2, 8);
        s.data = vec![1, 2, 3, 4, 5, 6];
        let v = nifti::read(&put_file(dir.path(), "ok.nii", &s.bytes(), false)).unwrap();
        assert_eq!(v.header.big_endian, big);
        assert_eq!(v.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }
}

/// `bitpix` is not checked against the datatype (nibabel does not either): the datatype decides.
/// (The nifti crate sizes its reads by `bitpix` and panics in `into_ndarray` when they disagree;
/// it is given a header whose `bitpix` comes from the datatype.)
#[test]
fn a_bitpix_that_disagrees_with_the_datatype_is_ignored() {
    let dir = tmp();
    for dt in datatypes() {
        for bitpix in [8i16, 64, 0, -16] {
            for version in [1u8, 2] {
                let mut s = Spec::new(version, false, [3, 2, 1], dt.code, bitpix);
                s.data = encode(&dt, &dt.values, false);
                let p = put_file(dir.path(), "bp.nii", &s.bytes(), false);
                let v = nifti::read(&p).unwrap_or_else(|e| panic!("{} {bitpix}: {e}", dt.code));
                let want: Vec<f32> = dt.values.iter().map(|&x| x as f32).collect();
                assert_eq!(v.data, want, "datatype {} bitpix {bitpix}", dt.code);
                assert_eq!(v.header.bitpix, bitpix);
            }
        }
    }
}
