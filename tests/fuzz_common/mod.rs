//! A small structure-aware mutation fuzzer on the stable toolchain, for the loaders of hostile
//! input files (NIfTI, model.json, safetensors, bundle manifests and signatures, IR text).
//!
//! How it works: each target has a seed corpus in `tests/data/fuzz/<target>/` (small real files
//! written by the project's own writers, see `generate_seeds` in `tests/fuzz.rs`). Each case picks
//! a corpus file and applies one to four mutations drawn from a deterministic generator
//! ([`Rng`], seeded from the run's seed, the target's name and the case number, so one case can be
//! replayed alone): generic byte mutations (bit flips, random and "interesting" bytes, inserted,
//! deleted, duplicated and swapped chunks, truncation, extension, splicing with another corpus
//! file, integer extremes written at random offsets in either byte order) and the target's own
//! structure-aware mutations (NIfTI header fields set to extremes at their fixed offsets, JSON
//! values replaced by huge, negative, fractional or NaN-like numbers, keys deleted or added,
//! types changed, deep nesting; see each target).
//!
//! Each case runs on its own thread under a time bound ([`Config::case_limit`]): a panic, or a
//! case that does not finish in time (a hang, or an allocation so large that it takes seconds),
//! fails the test, with the input saved under `target/tmp/fuzz-failures/` and the command that
//! replays it. The test binary also installs a capped allocator (see `tests/fuzz.rs`), because an
//! allocation failure aborts the process, which `catch_unwind` cannot catch. A case passes when
//! the loader returns `Ok` with a sane result (checked by the target) or a clean `Err`.
//!
//! Guidance is by *behaviour*, not by edge coverage: stable Rust has no cheap coverage
//! instrumentation, so the fuzzer cannot see which branches an input reached. What it sees is the
//! outcome: the kind of error (its message with quoted text and paths stripped and every word
//! with a digit in it, numbers, hex digests, fingerprints, replaced by `#`) or the shape of an
//! `Ok` result. With `E2ENC_FUZZ_GROW=1` (`scripts/fuzz.sh` sets it), an input whose outcome kind
//! was not seen before is written to the corpus folder as `grown-<hash>.bin`, so the corpus grows
//! with inputs that reach distinct behaviours, and later runs mutate those too. This finds new
//! error paths well, and deep branch conditions that share an error message poorly: fields that
//! only matter together (two widths, `dim[0]` with `dim[4]`) are reached because some mutations
//! set several of them at once, and combinations no mutation aims at may never be reached (two of
//! the bugs in `tests/data/fuzz/regressions/` were found by reading the code first).
//!
//! Environment: `E2ENC_FUZZ_CASES` (cases per target, default: each target's CI count),
//! `E2ENC_FUZZ_SEED` (default 0 in CI; `scripts/fuzz.sh` picks a random one and prints it),
//! `E2ENC_FUZZ_CASE` (replay one case), `E2ENC_FUZZ_GROW`, `E2ENC_FUZZ_GROW_MAX` (new corpus
//! files per target per run, default 10, each at most 8 KiB), `E2ENC_FUZZ_CASE_SECS` (time bound
//! per case, default 10).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// splitmix64: small, fast, and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// FNV-1a, for file names and per-target seeds.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The run's settings, from the environment.
pub struct Config {
    pub cases: usize,
    pub seed: u64,
    pub only_case: Option<usize>,
    pub grow: bool,
    pub grow_max: usize,
    pub case_limit: Duration,
}

impl Config {
    pub fn from_env(default_cases: usize) -> Config {
        Config {
            cases: env_u64("E2ENC_FUZZ_CASES").map_or(default_cases, |v| v as usize),
            seed: env_u64("E2ENC_FUZZ_SEED").unwrap_or(0),
            only_case: env_u64("E2ENC_FUZZ_CASE").map(|v| v as usize),
            grow: std::env::var("E2ENC_FUZZ_GROW").is_ok_and(|v| v == "1"),
            grow_max: env_u64("E2ENC_FUZZ_GROW_MAX").map_or(10, |v| v as usize),
            case_limit: Duration::from_secs(env_u64("E2ENC_FUZZ_CASE_SECS").unwrap_or(10)),
        }
    }
}

/// The workspace root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/data/fuzz/<target>`.
pub fn corpus_dir(target: &str) -> PathBuf {
    repo().join("tests/data/fuzz").join(target)
}

/// The corpus files of a target (the plain files directly in its folder), sorted by name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let e = e.expect("corpus entry");
        if e.file_type().expect("file type").is_file() {
            let name = e.file_name().to_string_lossy().into_owned();
            out.push((name, std::fs::read(e.path()).expect("read corpus file")));
        }
    }
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

/// A scratch folder under cargo's target tmp dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&d).expect("create scratch folder");
    d
}

/// What a case did: `Ok(shape)` or `Err(message)`.
pub type Outcome = Result<String, String>;

/// The behaviour kind of an outcome: the message with quoted text and paths stripped, and every
/// word with a digit in it (numbers, hex digests, key fingerprints) replaced by `#`.
pub fn kind(o: &Outcome, scratch: &Path) -> String {
    let (tag, s) = match o {
        Ok(s) => ("ok", s.as_str()),
        Err(s) => ("err", s.as_str()),
    };
    let s = s.replace(&scratch.display().to_string(), "<dir>");
    let mut out = String::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push('Q');
            }
            Some(_) => {}
            None if c.is_alphanumeric() || c == '_' => word.push(c),
            None => {
                flush(&mut word, &mut out);
                if c == '`' || c == '"' {
                    quote = Some(c);
                } else {
                    out.push(c);
                }
            }
        }
    }
    flush(&mut word, &mut out);
    let out: String = out.chars().take(160).collect();
    format!("{tag}: {out}")
}

/// Runs `cfg.cases` mutated cases of a target (or the one `E2ENC_FUZZ_CASE`), after the corpus
/// itself. `check` runs the loader on the input with a private scratch folder and returns the
/// outcome; it panics (an assertion) on an `Ok` result that is not sane.
pub fn run_target<M, C>(target: &str, default_cases: usize, mutate: M, check: C)
where
    M: Fn(&mut Rng, &[(String, Vec<u8>)]) -> Vec<u8>,
    C: Fn(&[u8], &Path) -> Outcome + Send + Sync + 'static,
{
    let cfg = Config::from_env(default_cases);
    let corpus = corpus(target);
    let check = Arc::new(check);
    let work = scratch(&format!("fuzz-work/{target}-{}", std::process::id()));
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    let mut grown = 0;
    let run = |input: Vec<u8>, label: &str, seen: &mut BTreeSet<String>| {
        let dir = work.join(label);
        std::fs::create_dir_all(&dir).expect("case folder");
        let outcome = run_case(target, &cfg, &input, label, &dir, check.clone());
        let k = kind(&outcome, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        let new = seen.insert(k);
        (new, input)
    };
    for (name, bytes) in &corpus {
        run(bytes.clone(), &format!("corpus-{name}"), &mut seen);
    }
    let from_corpus = seen.len();
    let cases: Vec<usize> = match cfg.only_case {
        Some(c) => vec![c],
        None => (0..cfg.cases).collect(),
    };
    for &i in &cases {
        let mut rng = Rng::new(
            cfg.seed ^ fnv(target.as_bytes()) ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
        );
        let input = mutate(&mut rng, &corpus);
        let (new, input) = run(input, &format!("case-{i}"), &mut seen);
        if new && cfg.grow && grown < cfg.grow_max && input.len() <= 8 << 10 {
            let path = corpus_dir(target).join(format!("grown-{:016x}.bin", fnv(&input)));
            std::fs::write(&path, &input).expect("write grown corpus file");
            grown += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    eprintln!(
        "fuzz {target}: seed {} cases {} in {:.1?}; {} behaviour kinds ({} from the corpus of {} files); {grown} inputs added to the corpus",
        cfg.seed,
        cases.len(),
        started.elapsed(),
        seen.len(),
        from_corpus,
        corpus.len()
    );
}

fn run_case<C>(
    target: &str,
    cfg: &Config,
    input: &[u8],
    label: &str,
    dir: &Path,
    check: Arc<C>,
) -> Outcome
where
    C: Fn(&[u8], &Path) -> Outcome + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel();
    let owned = input.to_vec();
    let d = dir.to_path_buf();
    let handle = std::thread::Builder::new()
        .name(format!("fuzz-{target}-{label}"))
        .spawn(move || {
            let r = check(&owned, &d);
            let _ = tx.send(r);
        })
        .expect("spawn case thread");
    match rx.recv_timeout(cfg.case_limit) {
        Ok(outcome) => {
            let _ = handle.join();
            outcome
        }
        Err(mpsc::RecvTimeoutError::Timeout) => fail(
            target,
            cfg,
            input,
            label,
            &format!(
                "no result within {:?} (a hang or a huge allocation)",
                cfg.case_limit
            ),
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let msg = match handle.join() {
                Err(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Ok(()) => String::new(),
            };
            fail(target, cfg, input, label, &format!("panic ({msg})"))
        }
    }
}

/// Saves a failing input and fails the test with the command that replays it.
fn fail(target: &str, cfg: &Config, input: &[u8], label: &str, what: &str) -> ! {
    let dir = scratch("fuzz-failures");
    let file = dir.join(format!("{target}-seed{}-{label}.bin", cfg.seed));
    std::fs::write(&file, input).expect("save failing input");
    let case = label.strip_prefix("case-").unwrap_or("(a corpus file)");
    panic!(
        "fuzz {target}: {what} on {label}; input saved to {}; replay: E2ENC_FUZZ_SEED={} E2ENC_FUZZ_CASE={case} cargo test --test fuzz {target}",
        file.display(),
        cfg.seed
    );
}

// ---------------------------------------------------------------------------------------------
// Generic byte mutations.

const INTERESTING_U8: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];

/// Integer extremes, written in 1, 2, 4 or 8 bytes.
const INTERESTING_INT: [i64; 14] = [
    0,
    1,
    -1,
    2,
    i8::MAX as i64,
    i16::MAX as i64,
    i16::MIN as i64,
    u16::MAX as i64,
    i32::MAX as i64,
    i32::MIN as i64,
    u32::MAX as i64,
    i64::MAX,
    i64::MIN,
    1 << 31,
];

/// One random byte-level mutation of `b`; `others` is the corpus, for splicing.
pub fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>, others: &[(String, Vec<u8>)]) {
    let len = b.len();
    match rng.below(12) {
        0 if len > 0 => {
            let i = rng.below(len);
            b[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            b[i] = rng.next_u64() as u8;
        }
        2 if len > 0 => {
            let i = rng.below(len);
            b[i] = *rng.pick(&INTERESTING_U8);
        }
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let ins = rng.bytes(n);
            b.splice(at..at, ins);
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            b.drain(at..at + n);
        }
        5 => {
            let keep = rng.below(len + 1);
            b.truncate(keep);
        }
        6 => {
            let n = 1 + rng.below(256);
            if rng.one_in(2) {
                b.extend(rng.bytes(n));
            } else {
                b.extend(std::iter::repeat_n(0u8, n));
            }
        }
        7 if len > 0 => {
            // Duplicate a chunk in place.
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            let chunk = b[at..at + n].to_vec();
            let to = rng.below(len + 1);
            b.splice(to..to, chunk);
        }
        8 if !others.is_empty() => {
            // Splice: a prefix of this input and a suffix of another corpus file.
            let other = &rng.pick(others).1;
            let cut_a = rng.below(len + 1);
            let cut_b = rng.below(other.len() + 1);
            b.truncate(cut_a);
            b.extend_from_slice(&other[cut_b..]);
        }
        9 if len >= 8 => {
            let v = *rng.pick(&INTERESTING_INT);
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let at = rng.below(len - width + 1);
            put_int(b, at, width, v, rng.one_in(2));
        }
        10 if len > 2 => {
            // Swap two chunks of equal length.
            let n = 1 + rng.below((len / 2).min(32));
            let i = rng.below(len - n + 1);
            let j = rng.below(len - n + 1);
            if i + n <= j || j + n <= i {
                for k in 0..n {
                    b.swap(i + k, j + k);
                }
            }
        }
        _ => {
            if len > 0 {
                let i = rng.below(len);
                b[i] = b[i].wrapping_add(1 + rng.below(3) as u8);
            } else {
                b.push(rng.next_u64() as u8);
            }
        }
    }
}

/// Writes the low `width` bytes of `v` at `at`, little- or big-endian.
pub fn put_int(b: &mut [u8], at: usize, width: usize, v: i64, big: bool) {
    let le = v.to_le_bytes();
    for (k, &byte) in le.iter().enumerate().take(width) {
        let pos = if big { at + width - 1 - k } else { at + k };
        if pos < b.len() {
            b[pos] = byte;
        }
    }
}

/// Picks a corpus file and applies 1 to 4 mutations with `one`.
pub fn stacked<F>(rng: &mut Rng, corpus: &[(String, Vec<u8>)], mut one: F) -> Vec<u8>
where
    F: FnMut(&mut Rng, &mut Vec<u8>, &[(String, Vec<u8>)]),
{
    let mut b = rng.pick(corpus).1.clone();
    for _ in 0..1 + rng.below(4) {
        one(rng, &mut b, corpus);
    }
    // Keep inputs bounded (the seeds are small; growth is never the point).
    b.truncate(1 << 20);
    b
}

// ---------------------------------------------------------------------------------------------
// JSON-aware mutations.

const INTERESTING_NUMBERS: [&str; 18] = [
    "0",
    "-1",
    "1",
    "2",
    "3",
    "-0.0",
    "0.5",
    "2147483647",
    "2147483648",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "-9223372036854775808",
    "1e300",
    "-1e300",
    "1e-300",
    "1099511627776",
    "65536",
];

/// Text that is not valid JSON in a number's place, or numbers JSON parsers treat specially.
const NUMBER_TOKENS: [&str; 10] = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "18446744073709551616",
    "-0",
    "0x10",
    "1.0",
    "123456789012345678901234567890",
];

fn pointers(v: &Value, here: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{here}/{}", k.replace('~', "~0").replace('/', "~1"));
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

/// Sets two to five numbers of `v` at once to extremes (limits that only matter together, such
/// as two widths).
pub fn mutate_numbers(rng: &mut Rng, v: &mut Value) {
    let mut ps = Vec::new();
    pointers(v, String::new(), &mut ps);
    ps.retain(|p| v.pointer(p).is_some_and(Value::is_number));
    if ps.is_empty() {
        return;
    }
    for _ in 0..2 + rng.below(4) {
        let p = rng.pick(&ps).clone();
        let tok: &str = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
        *v.pointer_mut(&p).expect("a walked pointer") = serde_json::from_str(tok).expect("number");
    }
}

/// One JSON-aware mutation of the value at a random place in `v`.
pub fn mutate_value(rng: &mut Rng, v: &mut Value) {
    if rng.one_in(8) {
        return mutate_numbers(rng, v);
    }
    let mut ps = Vec::new();
    pointers(v, String::new(), &mut ps);
    let p = rng.pick(&ps).clone();
    let node = v.pointer_mut(&p).expect("pointer of a walked node");
    match rng.below(8) {
        0 | 1 => {
            let tok: &str = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
            let n: Value = serde_json::from_str(tok).expect("number");
            *node = n;
        }
        2 => {
            *node = rng
                .pick(&[
                    Value::Null,
                    Value::Bool(true),
                    Value::String("x".into()),
                    Value::Array(vec![]),
                    serde_json::json!({}),
                    serde_json::json!(7),
                ])
                .clone();
        }
        3 => match node {
            Value::Object(m) if !m.is_empty() => {
                let k = m.keys().nth(rng.below(m.len())).expect("a key").clone();
                m.remove(&k);
            }
            Value::Object(m) => {
                m.insert("unexpected".into(), serde_json::json!(1));
            }
            Value::Array(a) if !a.is_empty() => {
                a.remove(rng.below(a.len()));
            }
            _ => *node = Value::Null,
        },
        4 => match node {
            Value::Array(a) if !a.is_empty() => {
                let x = a[rng.below(a.len())].clone();
                let most = if rng.one_in(4) { 200 } else { 3 };
                for _ in 0..1 + rng.below(most) {
                    a.push(x.clone());
                }
            }
            Value::Object(m) => {
                m.insert(
                    rng.pick(&["zz", "", "../x", "format", "a/b"]).to_string(),
                    serde_json::json!([1, 2]),
                );
            }
            _ => *node = serde_json::json!([node.clone(), node.clone()]),
        },
        5 => {
            *node = Value::String(
                rng.pick(&[
                    String::new(),
                    "../../etc/passwd".to_string(),
                    "a/b".to_string(),
                    ".hidden".to_string(),
                    "x".repeat(5000),
                    "\u{0}\u{7f}é🙂".to_string(),
                    "1e400".to_string(),
                ])
                .clone(),
            );
        }
        6 => {
            let depth = if rng.one_in(2) { 20 } else { 130 };
            let mut x = node.clone();
            for _ in 0..depth {
                x = Value::Array(vec![x]);
            }
            *node = x;
        }
        _ => {
            if let Value::Number(n) = node {
                let f = n.as_f64().unwrap_or(0.0);
                let g = match rng.below(4) {
                    0 => f + 1.0,
                    1 => f - 1.0,
                    2 => f * 2.0,
                    _ => -f,
                };
                if let Some(m) = serde_json::Number::from_f64(g) {
                    *node = Value::Number(m);
                }
            } else {
                *node = serde_json::json!(0);
            }
        }
    }
}

/// Replaces one number token of JSON (or IR) text with a special token.
pub fn mutate_number_token(rng: &mut Rng, text: &mut Vec<u8>, tokens: &[&str]) {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let start = i;
            while i < text.len() && (text[i].is_ascii_digit() || text[i] == b'.') {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return;
    }
    let (a, b) = *rng.pick(&runs);
    let t = rng.pick(tokens).as_bytes().to_vec();
    text.splice(a..b, t);
}

/// One mutation of JSON text: on the parsed value when it parses (then pretty or compact), at the
/// text level, or byte-level.
pub fn mutate_json(rng: &mut Rng, b: &mut Vec<u8>, others: &[(String, Vec<u8>)]) {
    match rng.below(10) {
        0..=5 => {
            if let Ok(mut v) = serde_json::from_slice::<Value>(b) {
                mutate_value(rng, &mut v);
                *b = if rng.one_in(2) {
                    serde_json::to_vec_pretty(&v).expect("serialize")
                } else {
                    serde_json::to_vec(&v).expect("serialize")
                };
            } else {
                mutate_bytes(rng, b, others);
            }
        }
        6 => {
            let mut all: Vec<&str> = NUMBER_TOKENS.to_vec();
            all.extend(INTERESTING_NUMBERS);
            mutate_number_token(rng, b, &all);
        }
        7 if rng.one_in(4) => {
            let n = 1000 + rng.below(20000);
            let mut x = vec![b'['; n];
            x.extend(std::mem::take(b));
            x.extend(vec![b']'; n]);
            *b = x;
        }
        _ => mutate_bytes(rng, b, others),
    }
}

// ---------------------------------------------------------------------------------------------
// gzip, written here (stored blocks, real CRC32) so mutated plain bytes can be re-compressed.

pub fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// One gzip member holding `data` in stored (uncompressed) deflate blocks.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65535).collect()
    };
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let n = c.len() as u16;
        out.extend(n.to_le_bytes());
        out.extend((!n).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// Runs one input through a target's check under the same time bound (for regressions).
pub fn run_one<C>(target: &str, label: &str, input: &[u8], check: C) -> Outcome
where
    C: Fn(&[u8], &Path) -> Outcome + Send + Sync + 'static,
{
    let cfg = Config::from_env(0);
    let dir = scratch(&format!(
        "fuzz-work/{target}-{}-{label}",
        std::process::id()
    ));
    let o = run_case(target, &cfg, input, label, &dir, Arc::new(check));
    let _ = std::fs::remove_dir_all(&dir);
    o
}
