//! Structure-aware mutation fuzzing of every loader of hostile input files: NIfTI (`.nii`,
//! `.nii.gz`, and each plain case again as a `.hdr`/`.img` pair), model.json (and the network it builds), safetensors, the bundle manifest (parsed
//! directly and through `bundle::verify_with` on a signed folder), the signature and key files,
//! and the IR text. The engine, its limits and what "behaviour-guided" means are described in
//! `tests/fuzz_common/mod.rs`; the corpus lives in `tests/data/fuzz/<target>/`, the inputs of
//! bugs found in `tests/data/fuzz/regressions/` (replayed by `regressions`).
//!
//! CI runs 3000 to 9000 cases per target (about 15 s on 2 cores); `scripts/fuzz.sh` runs long
//! sessions with random seeds. `cargo test --test fuzz generate_seeds -- --ignored` rewrites the
//! seed files from the project's own writers.

mod fuzz_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use e2enc_ir::e2enet::{build, BuildOptions, Model, ModelConfig};
use e2enc_ir::Weights;
use e2enc_runtime::bundle::{verify_with, LoadOptions};
use e2enc_runtime::format::{plan_digest, Manifest};
use e2enc_runtime::sign::{self, PublicKey, SecretKey};
use e2enc_segment::nifti;
use fuzz_common::{
    corpus_dir, fnv, gzip_stored, mutate_bytes, mutate_json, mutate_number_token, put_int,
    run_target, stacked, Outcome, Rng,
};

// ---------------------------------------------------------------------------------------------
// A capped allocator: one allocation over 1 GiB, or more than 6 GiB live, fails (and the process
// aborts with "memory allocation of N bytes failed") instead of taking the machine's memory. No
// seed or mutated input here is over 1 MiB, so a loader that asks for that much trusted a size
// field it should not have.

struct Capped;

static LIVE: AtomicUsize = AtomicUsize::new(0);
const MAX_ONE: usize = 1 << 30;
const MAX_LIVE: usize = 6 << 30;

fn refuse(size: usize) -> bool {
    if size > MAX_ONE || LIVE.load(Ordering::Relaxed).saturating_add(size) > MAX_LIVE {
        let msg = b"fuzz: an allocation over the test's cap (1 GiB at once, 6 GiB live): a loader trusted a size it should not have\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
        }
        return true;
    }
    false
}

// SAFETY: every call forwards to `System` with the same layout; only the byte count is tracked.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if refuse(l.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if refuse(l.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() && refuse(new - l.size()) {
            return std::ptr::null_mut();
        }
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            LIVE.fetch_add(new, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

/// Cases per target in CI (`E2ENC_FUZZ_CASES` overrides).
const CI_CASES: usize = 3000;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Joins outcomes of several calls on one input into one outcome kind.
fn join(parts: &[Outcome]) -> Outcome {
    let text: Vec<String> = parts
        .iter()
        .map(|p| match p {
            Ok(s) => format!("ok {s}"),
            Err(e) => format!("err {e}"),
        })
        .collect();
    if parts.iter().all(|p| p.is_ok()) {
        Ok(text.join(" | "))
    } else {
        Err(text.join(" | "))
    }
}

// ---------------------------------------------------------------------------------------------
// NIfTI.

#[derive(Clone, Copy)]
enum Field {
    I16,
    I32,
    I64,
    F32,
    F64,
}

/// The numeric header fields of NIfTI-1 (`v2 == false`) or NIfTI-2, with their offsets.
fn nifti_fields(v2: bool) -> Vec<(usize, Field)> {
    use Field::*;
    let mut f = vec![(0, I32)];
    if !v2 {
        f.extend((0..8).map(|i| (40 + 2 * i, I16)));
        f.extend([
            (56, F32),
            (60, F32),
            (64, F32),
            (68, I16),
            (70, I16),
            (72, I16),
        ]);
        f.extend((0..8).map(|i| (76 + 4 * i, F32)));
        f.extend([(108, F32), (112, F32), (116, F32), (124, F32), (128, F32)]);
        f.extend([(252, I16), (254, I16)]);
        f.extend((0..6).map(|i| (256 + 4 * i, F32)));
        f.extend((0..12).map(|i| (280 + 4 * i, F32)));
    } else {
        f.extend([(12, I16), (14, I16)]);
        f.extend((0..8).map(|i| (16 + 8 * i, I64)));
        f.extend((0..3).map(|i| (80 + 8 * i, F64)));
        f.extend((0..8).map(|i| (104 + 8 * i, F64)));
        f.extend([(168, I64), (176, F64), (184, F64), (192, F64), (200, F64)]);
        f.extend([(344, I32), (348, I32)]);
        f.extend((0..6).map(|i| (352 + 8 * i, F64)));
        f.extend((0..12).map(|i| (400 + 8 * i, F64)));
        f.extend([(500, I32), (504, I32)]);
    }
    f
}

const NIFTI_INTS: [i64; 30] = [
    0,
    1,
    -1,
    2,
    3,
    4,
    5,
    7,
    8,
    16,
    64,
    256,
    512,
    768,
    1024,
    1280,
    348,
    352,
    540,
    544,
    i16::MAX as i64,
    i16::MIN as i64,
    i32::MAX as i64,
    i32::MIN as i64,
    u32::MAX as i64,
    i64::MAX,
    i64::MIN,
    1 << 31,
    1 << 40,
    65536,
];

const NIFTI_FLOATS: [f64; 17] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    2.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e-45,
    f32::MAX as f64,
    -(f32::MAX as f64),
    1e15,
    1e16,
    352.0,
    352.5,
    1e30,
];

/// Sets one header field of a NIfTI file (plain bytes) to an extreme, mostly in the file's byte
/// order.
fn mutate_nifti_field(rng: &mut Rng, b: &mut [u8]) {
    if b.len() < 4 {
        return;
    }
    let head = [b[0], b[1], b[2], b[3]];
    let (v2, big) = match (i32::from_le_bytes(head), i32::from_be_bytes(head)) {
        (540, _) => (true, false),
        (_, 540) => (true, true),
        (_, 348) => (false, true),
        _ => (false, false),
    };
    let big = big ^ rng.one_in(4);
    let fields = nifti_fields(v2);
    let (off, kind) = *rng.pick(&fields);
    let int = *rng.pick(&NIFTI_INTS);
    let float = *rng.pick(&NIFTI_FLOATS);
    let mut put = |bytes: &[u8]| {
        for (k, &x) in bytes.iter().enumerate() {
            let pos = if big {
                off + bytes.len() - 1 - k
            } else {
                off + k
            };
            if pos < b.len() {
                b[pos] = x;
            }
        }
    };
    match kind {
        Field::I16 => put(&(int as i16).to_le_bytes()),
        Field::I32 => put(&(int as i32).to_le_bytes()),
        Field::I64 => put(&int.to_le_bytes()),
        Field::F32 => put(&(float as f32).to_le_bytes()),
        Field::F64 => put(&float.to_le_bytes()),
    }
}

/// Rewrites the whole `dim` array of a NIfTI file: a dimension count and extents, mostly small,
/// sometimes extreme (fields that only matter together, such as `dim[0]` and `dim[4]`).
fn mutate_nifti_dims(rng: &mut Rng, b: &mut [u8]) {
    if b.len() < 4 {
        return;
    }
    let head = [b[0], b[1], b[2], b[3]];
    let (v2, big) = match (i32::from_le_bytes(head), i32::from_be_bytes(head)) {
        (540, _) => (true, false),
        (_, 540) => (true, true),
        (_, 348) => (false, true),
        _ => (false, false),
    };
    let nd = *rng.pick(&[1i64, 2, 3, 3, 4, 4, 5, 7, 8, 0]);
    for i in 0..8 {
        let v: i64 = if i == 0 {
            nd
        } else if rng.one_in(4) {
            *rng.pick(&[0, -1, 32767, i32::MAX as i64, 1 << 40, i64::MAX])
        } else {
            1 + rng.below(5) as i64
        };
        let (off, width) = if v2 { (16 + 8 * i, 8) } else { (40 + 2 * i, 2) };
        put_int(b, off, width, v, big);
    }
}

fn mutate_nifti(rng: &mut Rng, corpus: &[(String, Vec<u8>)]) -> Vec<u8> {
    let (_, seed) = rng.pick(corpus);
    let gz = seed.starts_with(&[0x1f, 0x8b]);
    if gz {
        // The compressed bytes themselves (CRC and ISIZE now mostly wrong).
        let mut b = seed.clone();
        for _ in 0..1 + rng.below(3) {
            mutate_bytes(rng, &mut b, corpus);
        }
        return b;
    }
    let mut b = seed.clone();
    for _ in 0..1 + rng.below(4) {
        if rng.one_in(6) {
            mutate_nifti_dims(rng, &mut b);
        } else if rng.one_in(2) {
            mutate_nifti_field(rng, &mut b);
        } else {
            mutate_bytes(rng, &mut b, corpus);
        }
    }
    b.truncate(1 << 20);
    match rng.below(4) {
        // Re-compressed with a valid CRC, in one or two gzip members.
        0 => gzip_stored(&b),
        1 if rng.one_in(2) => {
            let cut = rng.below(b.len() + 1);
            let mut g = gzip_stored(&b[..cut]);
            g.extend(gzip_stored(&b[cut..]));
            g
        }
        _ => b,
    }
}

/// Checks a volume `read` returned: data as long as the dims say, dims as the header says.
fn sane_volume(v: &nifti::Volume) -> Result<String, String> {
    let h = &v.header;
    let n: usize = v.dims.iter().product();
    assert_eq!(v.data.len(), n, "data length vs dims {:?}", v.dims);
    let nd = h.dim[0];
    assert!((1..=7).contains(&nd), "dim[0] {nd} accepted");
    for i in 0..3 {
        let want = if (i as i64) < nd { h.dim[i + 1] } else { 1 };
        assert_eq!(
            v.dims[i] as i64, want,
            "dims {:?} vs header {:?}",
            v.dims, h.dim
        );
    }
    assert!(n as u64 <= nifti::MAX_VOXELS);
    h.check_geometry()
        .expect("a header read passes check_geometry");
    assert!(v.nan_count() <= n);
    Ok(format!(
        "v{} {} dt{} nd{}",
        h.version,
        if h.big_endian { "be" } else { "le" },
        h.datatype,
        nd
    ))
}

/// `dim[4] - 1` of a plain NIfTI file's header as its bytes say (0 when there is none): the last
/// frame, whatever the size.
fn last_frame(bytes: &[u8]) -> u64 {
    if bytes.len() < 80 {
        return 0;
    }
    let head: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
    let big = i32::from_le_bytes(head) != 348 && i32::from_le_bytes(head) != 540;
    let v2 = i32::from_le_bytes(head) == 540 || i32::from_be_bytes(head) == 540;
    let (off, width) = if v2 { (48, 8) } else { (48, 2) };
    let mut raw = bytes[off..off + width].to_vec();
    if big {
        raw.reverse();
    }
    raw.resize(8, if raw[width - 1] & 0x80 != 0 { 0xff } else { 0 });
    (i64::from_le_bytes(raw.try_into().expect("8 bytes")) as u64).wrapping_sub(1)
}

fn check_nifti(bytes: &[u8], dir: &Path) -> Outcome {
    let gz = bytes.starts_with(&[0x1f, 0x8b]);
    let path = dir.join(if gz { "v.nii.gz" } else { "v.nii" });
    std::fs::write(&path, bytes).expect("write case file");
    let read = nifti::read(&path)
        .map_err(err)
        .and_then(|v| sane_volume(&v));
    let frame = match fnv(bytes) % 7 {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => 1 << 62,
        4 => i64::MAX as u64 - 1,
        5 => last_frame(bytes),
        _ => fnv(bytes) >> 40,
    };
    let framed = nifti::read_frame(&path, frame)
        .map_err(err)
        .and_then(|v| sane_volume(&v));
    // Always the last frame too, so a regression input does not depend on the hash above.
    let last = nifti::read_frame(&path, last_frame(bytes))
        .map_err(err)
        .and_then(|v| sane_volume(&v));
    let mut parts = vec![read, framed, last];
    if let Some(pair) = as_pair(bytes, dir) {
        parts.push(
            nifti::read(&pair)
                .map_err(err)
                .and_then(|v| sane_volume(&v)),
        );
    }
    join(&parts)
}

/// The same bytes as a `.hdr`/`.img` pair (a plain file with a whole header only): the header
/// with the pair magic (and, one time in two, `vox_offset` 0, where a pair's data usually
/// starts), everything after it as the image. Returns the half to read (either, by the hash).
fn as_pair(bytes: &[u8], dir: &Path) -> Option<std::path::PathBuf> {
    let head: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let (le, be) = (i32::from_le_bytes(head), i32::from_be_bytes(head));
    let v2 = le == 540 || be == 540;
    let size = if v2 { 540 } else { 348 };
    if bytes.len() < size + 4 || !(v2 || le == 348 || be == 348) {
        return None;
    }
    let mut hdr = bytes[..size].to_vec();
    if v2 {
        hdr[4..8].copy_from_slice(b"ni2\0");
    } else {
        hdr[344..348].copy_from_slice(b"ni1\0");
    }
    let h = fnv(bytes);
    if h & 1 == 0 {
        let (off, width) = if v2 { (168, 8) } else { (108, 4) };
        hdr[off..off + width].fill(0);
    }
    std::fs::write(dir.join("p.hdr"), &hdr).expect("write case header");
    std::fs::write(dir.join("p.img"), &bytes[size + 4..]).expect("write case image");
    Some(dir.join(if h & 2 == 0 { "p.hdr" } else { "p.img" }))
}

#[test]
fn fuzz_nifti() {
    run_target("nifti", CI_CASES * 3, mutate_nifti, check_nifti);
}

// ---------------------------------------------------------------------------------------------
// model.json and the network it builds.

fn check_model_json(bytes: &[u8], dir: &Path) -> Outcome {
    let text = String::from_utf8_lossy(bytes);
    let cfg = match ModelConfig::from_json(&text, "model.json") {
        Ok(c) => c,
        Err(e) => return Err(e.to_string()),
    };
    cfg.validate()
        .expect("from_json returned a config that validates");
    let again = ModelConfig::from_json(&cfg.to_json(), "again").expect("to_json reads back");
    assert_eq!(again, cfg, "to_json round trip");
    let built = build(&cfg, &BuildOptions::default()).map(|net| {
        e2enc_ir::verify::verify(&net.graph).expect("a built network verifies");
        let params: u64 = net.params.iter().map(|p| p.numel() as u64).sum();
        assert!(params <= e2enc_ir::e2enet::build::MAX_PARAMS);
        format!("built, {} outputs", net.graph.outputs().len())
    });
    let built = built.map_err(err);
    // Model::load: the config in a folder with the seed weights and masks beside it.
    let files = corpus_dir("model_json").join("files");
    for f in ["weights.safetensors", "masks.safetensors"] {
        let _ = std::fs::copy(files.join(f), dir.join(f));
    }
    std::fs::write(dir.join("model.json"), bytes).expect("write model.json");
    let loaded = Model::load(&dir.join("model.json"), &BuildOptions::default())
        .map(|m| {
            if let Some(w) = &m.weights {
                e2enc_ir::e2enet::model::check_weights(&m.net.params, w)
                    .expect("loaded weights match the network");
            }
            format!("loaded, weights {}", m.weights.is_some())
        })
        .map_err(err);
    join(&[built, loaded])
}

#[test]
fn fuzz_model_json() {
    run_target(
        "model_json",
        CI_CASES,
        |rng, c| stacked(rng, c, mutate_json),
        check_model_json,
    );
}

// ---------------------------------------------------------------------------------------------
// safetensors.

/// One mutation of a safetensors file: its JSON header (with the length prefix fixed up or not),
/// the length prefix, or bytes.
fn mutate_safetensors(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[(String, Vec<u8>)]) {
    let n = if b.len() >= 8 {
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize
    } else {
        usize::MAX
    };
    match rng.below(4) {
        0 | 1 if b.len() >= 8 && n <= b.len() - 8 => {
            let mut header = b[8..8 + n].to_vec();
            mutate_json(rng, &mut header, &[]);
            let len = if rng.one_in(4) { n } else { header.len() };
            let mut out = (len as u64).to_le_bytes().to_vec();
            out.extend(header);
            out.extend_from_slice(&b[8 + n..]);
            *b = out;
        }
        2 if b.len() >= 8 => {
            let v = *rng.pick(&[
                0i64,
                1,
                2,
                -1,
                i64::MAX,
                100_000_000,
                (n as i64).wrapping_add(1),
            ]);
            put_int(b, 0, 8, v, false);
        }
        _ => mutate_bytes(rng, b, corpus),
    }
}

fn check_safetensors(bytes: &[u8], dir: &Path) -> Outcome {
    let from_bytes = Weights::from_bytes(bytes).map(|w| {
        for (name, t) in w.iter() {
            let n = t
                .shape()
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .expect("shape product fits");
            assert_eq!(t.numel(), n, "{name}");
            let len = match t.data() {
                e2enc_ir::TensorData::F32(v) => v.len(),
                e2enc_ir::TensorData::I32(v) => v.len(),
            };
            assert_eq!(len, n, "{name}: data length vs shape");
        }
        let again = w.to_bytes(None).expect("loaded weights serialize");
        let back = Weights::from_bytes(&again).expect("serialized weights read back");
        assert_eq!(back.len(), w.len());
        format!("{} tensors", w.len().min(3))
    });
    let path = dir.join("w.safetensors");
    std::fs::write(&path, bytes).expect("write case file");
    let loaded = Weights::load(&path).map(|w| w.len());
    assert_eq!(
        from_bytes.is_ok(),
        loaded.is_ok(),
        "load and from_bytes agree"
    );
    from_bytes
}

#[test]
fn fuzz_safetensors() {
    run_target(
        "safetensors",
        CI_CASES * 2,
        |rng, c| stacked(rng, c, mutate_safetensors),
        check_safetensors,
    );
}

// ---------------------------------------------------------------------------------------------
// Bundles: manifest.json parsed directly, and whole folders through `verify_with`.

/// The key the fuzz bundles are signed with (a fixed test key, trusted only in these folders).
fn test_key() -> SecretKey {
    SecretKey::from_seed([7; 32])
}

/// A config folder of our own, so the signing checks never read the user's keys.
fn private_config() {
    let d = fuzz_common::scratch("fuzz-config");
    let used = sign::set_config_dir(&d);
    assert_eq!(used, d.as_path());
}

/// Whatever the manifest format exposes, on a parsed manifest (no panic is the check).
fn manifest_functions(m: &Manifest) -> String {
    let digest = plan_digest(m);
    assert_eq!(digest.len(), 64);
    for b in &m.buffers {
        let _ = b.abs_pieces();
    }
    let plain = m
        .files
        .keys()
        .all(|k| e2enc_runtime::format::is_plain_file_name(k));
    let target = e2enc_runtime::target::Target::from_manifest(m.target.as_deref(), &m.cpu_features)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "bad target".into());
    format!("plain names {plain}, {}", target.len().min(1))
}

fn check_bundle(bytes: &[u8], dir: &Path) -> Outcome {
    private_config();
    let parsed = serde_json::from_slice::<Manifest>(bytes)
        .map_err(|e| format!("manifest: {e}"))
        .map(|m| (manifest_functions(&m), m));
    // The bundle folder: the seed's files, the manifest as mutated or (mode 0, when it parses)
    // fixed up so that kernels.c carries its digest and the checksums match, signed by the test
    // key unless mode 3.
    let files = corpus_dir("bundle_manifest").join("files");
    for f in e2enc_runtime::format::FILES {
        std::fs::copy(files.join(f), dir.join(f)).expect("copy a bundle file");
    }
    let mode = fnv(bytes) % 4;
    let manifest = match &parsed {
        Ok((_, m)) if mode < 2 => {
            let mut m = m.clone();
            let kernels = format!("/* generated */\n/* e2enc-plan: {} */\n", plan_digest(&m));
            std::fs::write(dir.join("kernels.c"), &kernels).expect("write kernels.c");
            for f in e2enc_runtime::format::FILES {
                let b = std::fs::read(dir.join(f)).expect("read a bundle file");
                m.files
                    .insert(f.into(), e2enc_runtime::format::sha256_hex(&b));
            }
            serde_json::to_vec_pretty(&m).expect("manifest serializes")
        }
        _ => bytes.to_vec(),
    };
    std::fs::write(dir.join("manifest.json"), &manifest).expect("write manifest.json");
    let key = test_key();
    if mode != 3 {
        std::fs::write(dir.join("manifest.sig"), key.sign_manifest(&manifest)).expect("sig");
    }
    let trusted = dir.join("trusted");
    std::fs::write(&trusted, key.public().line()).expect("trusted keys");
    let opts = LoadOptions {
        trusted_keys: Some(trusted),
        ..Default::default()
    };
    let verified = verify_with(dir, &opts).map(|(m, f, by)| {
        assert_eq!(by, Some(key.public()), "signed by the test key");
        assert_eq!(f.len(), 3);
        for p in m.inputs.iter().chain(&m.outputs) {
            assert!(p.view.end() <= m.arena_elems);
        }
        "verified".to_string()
    });
    join(&[parsed.map(|p| p.0), verified.map_err(err)])
}

#[test]
fn fuzz_bundle_manifest() {
    run_target(
        "bundle_manifest",
        CI_CASES,
        |rng, c| stacked(rng, c, mutate_json),
        check_bundle,
    );
}

/// Line-level mutations of text: delete, duplicate, swap lines, or insert a line of another
/// corpus file.
fn mutate_lines(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[(String, Vec<u8>)]) {
    let text = String::from_utf8_lossy(b).into_owned();
    let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
    let n = lines.len();
    match rng.below(5) {
        0 if n > 1 => {
            lines.remove(rng.below(n));
        }
        1 => {
            let l = lines[rng.below(n)].clone();
            lines.insert(rng.below(n + 1), l);
        }
        2 if n > 1 => {
            let (i, j) = (rng.below(n), rng.below(n));
            lines.swap(i, j);
        }
        3 => {
            let other = String::from_utf8_lossy(&rng.pick(corpus).1).into_owned();
            let ol: Vec<&str> = other.split('\n').collect();
            let l = ol[rng.below(ol.len())].to_string();
            lines.insert(rng.below(n + 1), l);
        }
        _ => {
            let i = rng.below(n);
            let extra = *rng.pick(&["\r", " ", "\t", " #", "\u{feff}", "\0"]);
            lines[i].push_str(extra);
        }
    }
    *b = lines.join("\n").into_bytes();
}

/// One mutation of a signature or key file: a hex digit changed, lines, or bytes.
fn mutate_sig(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[(String, Vec<u8>)]) {
    match rng.below(3) {
        0 => {
            let hex: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_hexdigit()).collect();
            if !hex.is_empty() {
                let i = *rng.pick(&hex);
                b[i] = *rng.pick(b"0123456789abcdefABCDEFgz \xc3");
            }
        }
        1 => mutate_lines(rng, b, corpus),
        _ => mutate_bytes(rng, b, corpus),
    }
}

fn check_sig(bytes: &[u8], dir: &Path) -> Outcome {
    private_config();
    let manifest = b"{\"fuzz\": \"a manifest whose signature is fuzzed\"}\n";
    std::fs::write(dir.join("manifest.json"), manifest).expect("write manifest");
    std::fs::write(dir.join(sign::SIG_FILE), bytes).expect("write sig");
    let key = test_key();
    let trusted = dir.join("trusted");
    std::fs::write(&trusted, key.public().line()).expect("trusted keys");
    let checked = sign::check(dir, manifest, Some(&trusted), false).map(|k| {
        assert_eq!(k, Some(key.public()), "only the trusted key is accepted");
        "trusted".to_string()
    });
    let unsigned_ok = sign::check(dir, manifest, Some(&trusted), true).map(|_| "accepted".into());
    // The same bytes as key files.
    let text = String::from_utf8_lossy(bytes);
    let secret = SecretKey::parse(&text).map(|k| format!("secret {}", k.public() == key.public()));
    let keys_file = dir.join("keys");
    std::fs::write(&keys_file, bytes).expect("write keys");
    let keys = sign::read_trusted_keys(&keys_file).map(|k| format!("{} keys", k.len().min(2)));
    let lines = text.lines().filter(|l| PublicKey::parse(l).is_ok()).count();
    join(&[
        checked,
        unsigned_ok,
        secret,
        keys,
        Ok(format!("{} key lines", lines.min(2))),
    ])
}

#[test]
fn fuzz_bundle_sig() {
    run_target(
        "bundle_sig",
        CI_CASES,
        |rng, c| stacked(rng, c, mutate_sig),
        check_sig,
    );
}

// ---------------------------------------------------------------------------------------------
// IR text.

fn mutate_ir(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[(String, Vec<u8>)]) {
    match rng.below(4) {
        0 => mutate_number_token(
            rng,
            b,
            &[
                "0",
                "-1",
                "4294967296",
                "18446744073709551615",
                "18446744073709551616",
                "9223372036854775807",
                "1e400",
                "NaN",
                "inf",
                "-0.0",
                "99999999999999999999999",
                "2147483648",
            ],
        ),
        1 => mutate_lines(rng, b, corpus),
        2 => {
            // A word replaced by another word of the text.
            let text = String::from_utf8_lossy(b).into_owned();
            let words: Vec<&str> = text
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '%'))
                .filter(|w| !w.is_empty())
                .collect();
            if words.len() > 1 {
                let from = *rng.pick(&words);
                let to = *rng.pick(&words);
                *b = text.replacen(from, to, 1).into_bytes();
            }
        }
        _ => mutate_bytes(rng, b, corpus),
    }
}

fn check_ir(bytes: &[u8], _dir: &Path) -> Outcome {
    let text = String::from_utf8_lossy(bytes);
    let g = e2enc_ir::text::parse(&text).map_err(err)?;
    let printed = e2enc_ir::text::print(&g);
    let again = e2enc_ir::text::parse(&printed)
        .unwrap_or_else(|e| panic!("a parsed graph prints as text that parses: {e}\n{printed}"));
    assert!(
        e2enc_ir::text::structurally_equal(&g, &again),
        "print/parse round trip"
    );
    let verified = e2enc_ir::verify::verify(&g).is_ok();
    Ok(format!("verifies {verified}"))
}

#[test]
fn fuzz_ir_text() {
    run_target(
        "ir_text",
        CI_CASES,
        |rng, c| stacked(rng, c, mutate_ir),
        check_ir,
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions: the exact inputs of bugs found, replayed through their target's check.

#[test]
fn regressions() {
    let dir = fuzz_common::repo().join("tests/data/fuzz/regressions");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("regressions folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "README.md")
        .collect();
    names.sort();
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).expect("read regression input");
        let target = name.split("--").next().expect("a target prefix");
        let check: fn(&[u8], &Path) -> Outcome = match target {
            "nifti" => check_nifti,
            "model_json" => check_model_json,
            "safetensors" => check_safetensors,
            "bundle_manifest" => check_bundle,
            "bundle_sig" => check_sig,
            "ir_text" => check_ir,
            other => panic!("{name}: unknown target {other}"),
        };
        let outcome = fuzz_common::run_one(target, &name, &bytes, check);
        eprintln!("regression {name}: {outcome:?}");
        // What each input gives now that its bug is fixed.
        let expected = match name.as_str() {
            "bundle_manifest--buffer-piece-offset-overflow.json" => "ok plain names true",
            "bundle_manifest--port-shape-product-overflow.json" => "is empty or too large",
            "model_json--conv-kernel-param-count-overflow.json" => {
                "parameters, more than the limit"
            }
            "model_json--convs-per-stage-2pow32.json" => "at most 64 are supported",
            "model_json--huge-widths.json" => "channels, more than the limit",
            "model_json--num-classes-2pow64.json" => "channels, more than the limit",
            "model_json--pool-kernel-product-overflow.json" => "multiply past",
            "nifti--v2-frame-offset-overflow.nii" => "would start past byte 2^64",
            "nifti--frame-offset-overflow-fuzzed.nii" => "would start past byte 2^64",
            "nifti--crate-bitpix-vs-datatype.nii" => "v1 le dt16",
            "nifti--crate-byte-order-guess.nii" => "not a number of dimensions",
            _ => "",
        };
        let text = match &outcome {
            Ok(s) | Err(s) => s,
        };
        assert!(text.contains(expected), "{name}: {outcome:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The seed corpus, written by the project's own writers.

/// NIfTI-1 little-endian bytes in big-endian byte order (header fields and f32 data).
fn to_big_endian_v1(b: &[u8]) -> Vec<u8> {
    let mut out = b.to_vec();
    let mut swap = |off: usize, w: usize| out[off..off + w].reverse();
    for (off, kind) in nifti_fields(false) {
        match kind {
            Field::I16 => swap(off, 2),
            Field::I32 | Field::F32 => swap(off, 4),
            Field::I64 | Field::F64 => swap(off, 8),
        }
    }
    for off in (352..b.len()).step_by(4) {
        swap(off, 4);
    }
    out
}

/// A NIfTI-2 file of int16 voxels, written field by field.
fn nifti2(dims: [i64; 3], data: &[i16]) -> Vec<u8> {
    let mut h = vec![0u8; 544];
    h[..4].copy_from_slice(&540i32.to_le_bytes());
    h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    h[12..14].copy_from_slice(&4i16.to_le_bytes());
    h[14..16].copy_from_slice(&16i16.to_le_bytes());
    let dim = [3, dims[0], dims[1], dims[2], 1, 1, 1, 1];
    for (i, d) in dim.iter().enumerate() {
        h[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.to_le_bytes());
    }
    let pixdim = [1.0f64, 2.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0];
    for (i, p) in pixdim.iter().enumerate() {
        h[104 + 8 * i..112 + 8 * i].copy_from_slice(&p.to_le_bytes());
    }
    h[168..176].copy_from_slice(&544i64.to_le_bytes());
    h[176..184].copy_from_slice(&0.5f64.to_le_bytes());
    h[184..192].copy_from_slice(&(-10.0f64).to_le_bytes());
    h[348..352].copy_from_slice(&1i32.to_le_bytes());
    let srow = [
        [2.0f64, 0.0, 0.0, -5.0],
        [0.0, 2.0, 0.0, 4.0],
        [0.0, 0.0, 3.0, 1.0],
    ];
    for (r, row) in srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let o = 400 + 32 * r + 8 * c;
            h[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    for v in data {
        h.extend(v.to_le_bytes());
    }
    h
}

/// A safetensors file written by hand: f16, bf16, f64 and i32 tensors and metadata.
fn safetensors_by_hand() -> Vec<u8> {
    let header = r#"{"__metadata__":{"by":"fuzz"},"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[4,8]},"d":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},"i":{"dtype":"I32","shape":[2,1],"data_offsets":[16,24]}}"#;
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend([0x00, 0x3c, 0x00, 0xc0]); // f16 1, -2
    out.extend([0x80, 0x3f, 0x40, 0x40]); // bf16 1, 3
    out.extend(2.5f64.to_le_bytes());
    out.extend(7i32.to_le_bytes());
    out.extend((-1i32).to_le_bytes());
    out
}

/// Zero weights (ones for the norm scales) for a network's parameters.
fn weights_for(cfg: &ModelConfig) -> Weights {
    let net = build(cfg, &BuildOptions::default()).expect("seed config builds");
    let mut w = Weights::new();
    for p in &net.params {
        let t = e2enc_ir::Tensor::from_f32(p.shape.clone(), vec![0.5; p.numel()]).expect("tensor");
        w.insert(p.name.clone(), t);
    }
    w
}

/// Writes the seed corpus (run with `--ignored` after a format change, then commit the files).
#[test]
#[ignore]
fn generate_seeds() {
    use e2enc_runtime::format::{Buffer, Compiler, Piece, Port, Step, FORMAT, VERSION};
    use e2enc_runtime::layout::View;
    let root = fuzz_common::repo().join("tests/data/fuzz");
    let dir = |t: &str| {
        let d = root.join(t);
        std::fs::create_dir_all(d.join("files")).expect("create corpus folder");
        d
    };

    // NIfTI.
    let d = dir("nifti");
    let _ = std::fs::remove_dir(d.join("files"));
    let mut h = nifti::Header::new([4, 3, 2], [1.0, 1.5, 2.0]);
    h.qform_code = 1;
    let data: Vec<f32> = (0..24)
        .map(|i| {
            if i == 5 {
                f32::NAN
            } else {
                i as f32 * 0.25 - 1.0
            }
        })
        .collect();
    nifti::write_f32(&d.join("f32-3d.nii"), &h, [4, 3, 2], &data).expect("write");
    nifti::write_f32(&d.join("f32-3d.nii.gz"), &h, [4, 3, 2], &data).expect("write");
    let labels: Vec<u16> = (0..24).map(|i| (i % 3) as u16).collect();
    nifti::write_labels(&d.join("labels-3d.nii.gz"), &h, [4, 3, 2], &labels).expect("write");
    let wide: Vec<u16> = (0..24).map(|i| i * 1000).collect();
    nifti::write_labels(&d.join("labels16-3d.nii"), &h, [4, 3, 2], &wide).expect("write");
    let frames: Vec<f32> = (0..36).map(|i| i as f32).collect();
    nifti::write_f32_frames(&d.join("f32-4d.nii"), &h, [3, 2, 2], 3, &frames).expect("write");
    let plain = std::fs::read(d.join("f32-3d.nii")).expect("read");
    std::fs::write(d.join("f32-3d-be.nii"), to_big_endian_v1(&plain)).expect("write");
    let v2: Vec<i16> = (0..12).map(|i| i * 100 - 300).collect();
    std::fs::write(d.join("i16-3d-v2.nii"), nifti2([3, 2, 2], &v2)).expect("write");

    // model.json, with the weights of the first seed beside it.
    let d = dir("model_json");
    let mut small = ModelConfig::small(3, 2, 1, true);
    small.weights = Some("weights.safetensors".into());
    std::fs::write(d.join("small-weights.json"), small.to_json()).expect("write");
    weights_for(&small)
        .save(&d.join("files/weights.safetensors"))
        .expect("save weights");
    let mut shifted = ModelConfig::small(3, 4, 3, false);
    shifted.dsff = Some(e2enc_ir::e2enet::DsffConfig {
        density: 0.5,
        level0_density: 0.2,
    });
    std::fs::write(d.join("small-shift-dsff.json"), shifted.to_json()).expect("write");
    let mut tiny = ModelConfig::amos_ct();
    tiny.name = "e2enet-tiny".into();
    tiny.num_classes = 2;
    tiny.base_width = 4;
    tiny.patch_size = [32, 32, 64];
    std::fs::write(d.join("tiny-preset.json"), tiny.to_json()).expect("write");

    // safetensors.
    let d = dir("safetensors");
    let _ = std::fs::remove_dir(d.join("files"));
    let small2 = ModelConfig::small(2, 2, 1, false);
    std::fs::write(
        d.join("small.safetensors"),
        weights_for(&small2).to_bytes(None).expect("bytes"),
    )
    .expect("write");
    std::fs::write(d.join("dtypes.safetensors"), safetensors_by_hand()).expect("write");

    // IR text: a built network and the same after the inference passes (fused ops).
    let d = dir("ir_text");
    let _ = std::fs::remove_dir(d.join("files"));
    let mut g = build(&small2, &BuildOptions::default())
        .expect("build")
        .graph;
    std::fs::write(d.join("small.ir"), e2enc_ir::text::print(&g)).expect("write");
    let _ = std::fs::remove_file(d.join("small-optimized.ir"));
    let shifted = ModelConfig::small(3, 2, 3, true);
    g = build(&shifted, &BuildOptions::default())
        .expect("build")
        .graph;
    e2enc_passes::pipeline::run(&mut g, &e2enc_passes::pipeline::inference()).expect("passes");
    std::fs::write(d.join("shift-passes.ir"), e2enc_ir::text::print(&g)).expect("write");

    // A bundle manifest (portable target, so it verifies on any host) and its files.
    let d = dir("bundle_manifest");
    let input = View::padded(0, [1, 1, 2, 4, 4]);
    let output = View::padded(input.end(), [1, 3, 2, 4, 4]);
    let mut m = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        model: serde_json::from_str(&small2.to_json()).expect("json"),
        graph: "graph g {\n}\n".into(),
        inputs: vec![Port {
            name: "input".into(),
            shape: vec![1, 1, 2, 4, 4],
            dtype: "f32".into(),
            view: input.clone(),
        }],
        outputs: vec![Port {
            name: "logits".into(),
            shape: vec![1, 3, 2, 4, 4],
            dtype: "f32".into(),
            view: output.clone(),
        }],
        arena_elems: output.end() + 64,
        buffers: vec![
            Buffer {
                what: "input".into(),
                offset: 0,
                elems: input.end(),
                first: 0,
                last: 1,
                pieces: vec![],
            },
            Buffer {
                what: "cat".into(),
                offset: input.end(),
                elems: output.end() - input.end(),
                first: 1,
                last: usize::MAX,
                pieces: vec![Piece {
                    offset: 8,
                    elems: 16,
                    first: 1,
                    last: 2,
                }],
            },
        ],
        steps: vec![Step {
            kernel: "k0_conv".into(),
            tiles: 4,
            first_tile: 0,
            flops: 1000,
            what: "x0_0.u0.conv".into(),
            launch: None,
        }],
        consts_f32: 10,
        consts_i32: 2,
        compiler: Compiler {
            command: "cc".into(),
            version: "cc 13".into(),
            flags: vec!["-O2".into()],
        },
        target: Some("portable".into()),
        cpu_features: vec![],
        precision: None,
        cuda: None,
        dense_macs: 1000,
        executed_macs: 800,
        files: Default::default(),
    };
    let f = d.join("files");
    std::fs::write(
        f.join("kernels.c"),
        format!("/* generated */\n/* e2enc-plan: {} */\n", plan_digest(&m)),
    )
    .expect("write");
    std::fs::write(f.join("kernels.so"), b"\x7fELF not really a library").expect("write");
    std::fs::write(f.join("weights.safetensors"), safetensors_by_hand()).expect("write");
    for name in e2enc_runtime::format::FILES {
        let b = std::fs::read(f.join(name)).expect("read");
        m.files
            .insert(name.into(), e2enc_runtime::format::sha256_hex(&b));
    }
    std::fs::write(
        d.join("manifest.json"),
        serde_json::to_vec_pretty(&m).expect("json"),
    )
    .expect("write");
    let mut legacy = m.clone();
    legacy.target = None;
    legacy.cpu_features = vec!["avx2".into(), "fma".into()];
    std::fs::write(
        d.join("manifest-x86.json"),
        serde_json::to_vec(&legacy).expect("json"),
    )
    .expect("write");

    // Signature and key files.
    let d = dir("bundle_sig");
    let _ = std::fs::remove_dir(d.join("files"));
    let key = test_key();
    let manifest = b"{\"fuzz\": \"a manifest whose signature is fuzzed\"}\n";
    std::fs::write(d.join("manifest.sig"), key.sign_manifest(manifest)).expect("write");
    std::fs::write(d.join("signing_key"), key.file_text("fuzz test key")).expect("write");
    std::fs::write(
        d.join("trusted_keys"),
        format!(
            "# trusted\n{}\n\n{} other\n",
            key.public().line(),
            SecretKey::from_seed([9; 32]).public().line()
        ),
    )
    .expect("write");
}

// ---------------------------------------------------------------------------------------------
// Special files in place of input files: a FIFO (opening it blocks until a writer comes) and a
// symlink to /dev/zero (never ends). Every loader must refuse them at once.

/// Runs `f` on a thread and fails if it has not returned within 10 s.
fn within_time<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{what}: no result within 10 s ({e:?})"))
}

fn make_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

#[test]
fn special_files_are_refused() {
    private_config();
    let root = fuzz_common::scratch(&format!("fuzz-special-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let bundle_files = corpus_dir("bundle_manifest").join("files");
    let manifest =
        std::fs::read(corpus_dir("bundle_manifest").join("manifest.json")).expect("seed");
    for special in ["fifo", "zero"] {
        let place = |path: &Path| {
            if special == "fifo" {
                make_fifo(path);
            } else {
                std::os::unix::fs::symlink("/dev/zero", path).expect("symlink");
            }
        };
        // The single-file loaders.
        let d = root.join(special);
        std::fs::create_dir_all(&d).expect("folder");
        for name in ["v.nii", "model.json", "w.safetensors", "g.ir", "keys"] {
            place(&d.join(name));
        }
        let p = d.clone();
        let results = within_time(special, move || {
            [
                nifti::read(&p.join("v.nii")).is_err(),
                ModelConfig::load(&p.join("model.json")).is_err(),
                Model::load(&p.join("model.json"), &BuildOptions::default()).is_err(),
                Weights::load(&p.join("w.safetensors")).is_err(),
                e2enc_ir::text::parse_file(&p.join("g.ir")).is_err(),
                sign::read_trusted_keys(&p.join("keys")).is_err(),
                SecretKey::load(&p.join("keys")).is_err(),
            ]
        });
        assert!(results.iter().all(|&e| e), "{special}: {results:?}");
        // A bundle whose manifest.json, then manifest.sig, then trusted-keys file is special.
        for which in ["manifest.json", "manifest.sig", "trusted"] {
            let b = root.join(format!("{special}-bundle-{which}"));
            std::fs::create_dir_all(&b).expect("bundle folder");
            for f in e2enc_runtime::format::FILES {
                std::fs::copy(bundle_files.join(f), b.join(f)).expect("copy");
            }
            let key = test_key();
            for (name, bytes) in [
                ("manifest.json", manifest.clone()),
                ("manifest.sig", key.sign_manifest(&manifest).into_bytes()),
                ("trusted", key.public().line().into_bytes()),
            ] {
                if name == which {
                    place(&b.join(name));
                } else {
                    std::fs::write(b.join(name), bytes).expect("write");
                }
            }
            let opts = LoadOptions {
                trusted_keys: Some(b.join("trusted")),
                ..Default::default()
            };
            let bb = b.clone();
            let r = within_time(which, move || verify_with(&bb, &opts).map(|_| ()));
            let e = r.expect_err("a special file in a bundle is refused");
            assert!(
                e.to_string().contains("regular file"),
                "{special} {which}: {e}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
