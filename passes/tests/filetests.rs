//! Golden text tests of the optimizer, Cranelift-filetests style: every `tests/filetests/*.e2t`
//! file holds a command, weight directives, an input graph in the IR text form and, in comments,
//! the graph the optimizer must turn it into.
//!
//! ```text
//! test optimize rules=lift-conv,fuse-shift keep=all
//! ; Free comments say what the case is about.
//! ; weights seed=7
//! ; zero "conv.weight" d0=0..2 d1=4..8
//! graph "case" {
//!   ...                                  ; the input graph (e2enc_ir::text)
//! }
//! ; expect:
//! ; graph "case" {
//! ;   ...                                ; e2enc_ir::text::print of the optimized graph
//! ; }
//! ```
//!
//! - The header is the first line: `test optimize`, then optional `rules=a,b,c` (run only these
//!   rules; default all) and `keep=NAME,NAME` or `keep=all` (the outputs to keep first; default
//!   `all`, i.e. `keep_outputs: None`).
//! - `; weights seed=N` (default 0): every weight the graph references gets deterministic,
//!   never-zero pseudo-random values (see `common/mod.rs`: instance-norm gammas near 1, betas
//!   and biases in ±[0.05, 0.5], kernels scaled by 1/sqrt(fan-in)). Only f32 weights can be made.
//! - `; zero "NAME" [d0=A..B[,C..D]] [d1=A..B[,...]]`: zero the `[i, j]` kernels of that weight
//!   with `i` in the `d0` ranges and `j` in the `d1` ranges (half-open, like the text form's
//!   ranges; an omitted axis means all of it). Applied in file order after the seeded fill.
//! - `; input seed=N` (default: the weights seed + 1): the seed of the uniform [-1, 1) inputs.
//! - Any other `;` line before `; expect:` is a free comment (the IR parser skips it too); a
//!   directive is recognized by its first two words (`weights seed=`, `input seed=`, `zero "`).
//! - After the `; expect:` line every line is `; ` + one line of the expected printout (`;` alone
//!   for an empty line).
//!
//! For every file the harness checks: the printout equals the expectation (a mismatch shows a
//! line diff); the printout parses back to a structurally equal graph that verifies against the
//! optimized weights; the interpreter gives the same outputs before and after (relative 1e-4) on
//! the seeded input; and every rule named in `rules=` fired at least once.
//!
//! `BLESS=1 cargo test -p e2enc-passes --test filetests` rewrites the expectations (everything
//! from `; expect:` on) instead of comparing them; the other checks still run.
//! `FILETEST=substring` runs only the files whose name contains it.

mod common;

use std::path::{Path, PathBuf};

use e2enc_ir::text::{parse_named, print, structurally_equal};
use e2enc_ir::verify::verify_with_weights;
use e2enc_ir::Weights;
use e2enc_passes::{optimize, OptimizeOptions};

const MARKER: &str = "; expect:";

/// One `; zero` directive.
struct Zero {
    name: String,
    d0: Option<Vec<(usize, usize)>>,
    d1: Option<Vec<(usize, usize)>>,
}

/// A parsed test file.
struct Case {
    rules: Option<Vec<String>>,
    keep: Option<Vec<String>>,
    weights_seed: u64,
    input_seed: Option<u64>,
    zeros: Vec<Zero>,
    /// The text before the marker, header line blanked (so parse errors keep their line).
    source: String,
    /// The text before the marker, verbatim (what blessing keeps).
    prefix: String,
    /// The expected printout, or `None` when the file has no `; expect:` yet.
    expect: Option<Vec<String>>,
}

fn parse_ranges(s: &str) -> Result<Vec<(usize, usize)>, String> {
    s.split(',')
        .map(|r| {
            let (a, b) = r
                .split_once("..")
                .ok_or_else(|| format!("`{r}` is not a range A..B"))?;
            let a = a.parse().map_err(|_| format!("bad range start in `{r}`"))?;
            let b = b.parse().map_err(|_| format!("bad range end in `{r}`"))?;
            Ok((a, b))
        })
        .collect()
}

fn parse_seed(word: Option<&str>, what: &str) -> Result<u64, String> {
    word.and_then(|w| w.strip_prefix("seed="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("`; {what}` takes `seed=N`"))
}

fn parse_case(text: &str) -> Result<Case, String> {
    let (before, expect) = match text.find(&format!("\n{MARKER}")) {
        Some(at) => (&text[..at + 1], Some(&text[at + 1 + MARKER.len()..])),
        None => (text, None),
    };
    let header = before.lines().next().unwrap_or("");
    let mut words = header.split_whitespace();
    if words.next() != Some("test") || words.next() != Some("optimize") {
        return Err(format!(
            "line 1: expected the header `test optimize ...`, got `{header}`"
        ));
    }
    let mut case = Case {
        rules: None,
        keep: None,
        weights_seed: 0,
        input_seed: None,
        zeros: Vec::new(),
        // Keep the line numbers of the graph text: blank the header line only.
        source: before.replacen(header, "", 1),
        prefix: before.to_string(),
        expect: None,
    };
    let list = |v: &str| v.split(',').map(str::to_string).collect::<Vec<_>>();
    for w in words {
        match w.split_once('=') {
            Some(("rules", v)) => case.rules = Some(list(v)),
            Some(("keep", "all")) => case.keep = None,
            Some(("keep", v)) => case.keep = Some(list(v)),
            _ => return Err(format!("line 1: unknown header option `{w}`")),
        }
    }
    for (i, line) in before.lines().enumerate().skip(1) {
        let Some(c) = line.trim().strip_prefix(';') else {
            continue;
        };
        let mut ws = c.split_whitespace();
        let at = |m: String| format!("line {}: {m}", i + 1);
        let (first, second) = (ws.next(), ws.clone().next().unwrap_or(""));
        match first {
            Some("weights") if second.starts_with("seed=") => {
                case.weights_seed = parse_seed(ws.next(), "weights").map_err(at)?
            }
            Some("input") if second.starts_with("seed=") => {
                case.input_seed = Some(parse_seed(ws.next(), "input").map_err(at)?)
            }
            Some("zero") if second.starts_with('"') => {
                let name = ws
                    .next()
                    .and_then(|n| n.strip_prefix('"')?.strip_suffix('"'))
                    .ok_or_else(|| at("`; zero` takes a quoted weight name".into()))?;
                let mut z = Zero {
                    name: name.to_string(),
                    d0: None,
                    d1: None,
                };
                for w in ws {
                    match w.split_once('=') {
                        Some(("d0", r)) => z.d0 = Some(parse_ranges(r).map_err(at)?),
                        Some(("d1", r)) => z.d1 = Some(parse_ranges(r).map_err(at)?),
                        _ => return Err(at(format!("unknown `; zero` option `{w}`"))),
                    }
                }
                case.zeros.push(z);
            }
            _ => {}
        }
    }
    if let Some(e) = expect {
        let mut lines = Vec::new();
        for (i, l) in e.lines().skip(1).enumerate() {
            let l = l.trim_end();
            if l.is_empty() {
                continue;
            }
            match l.strip_prefix("; ") {
                Some(rest) => lines.push(rest.to_string()),
                None if l == ";" => lines.push(String::new()),
                None => {
                    return Err(format!(
                        "line {} of the expectation: every line after `{MARKER}` starts with `; `",
                        i + 1
                    ))
                }
            }
        }
        case.expect = Some(lines);
    }
    Ok(case)
}

/// A unified-style line diff (longest common subsequence; the files are small).
fn diff(want: &[String], got: &[String]) -> String {
    let (n, m) = (want.len(), got.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if want[i] == got[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::from("--- expected\n+++ actual\n");
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && want[i] == got[j] {
            out.push_str(&format!("  {}\n", want[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", want[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", got[j]));
            j += 1;
        }
    }
    out
}

/// Runs one file; `Ok(Some(text))` is the blessed file content when it differs.
fn run_file(path: &Path, bless: bool) -> Result<Option<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case = parse_case(&text)?;
    let g = parse_named(&case.source, &path.display().to_string()).map_err(|e| e.to_string())?;
    let mut w = common::seeded_weights(&g, case.weights_seed)?;
    for z in &case.zeros {
        common::zero_kernels(&mut w, &z.name, z.d0.as_deref(), z.d1.as_deref())?;
    }
    let opts = OptimizeOptions {
        keep_outputs: case.keep.clone(),
        rules: case.rules.clone(),
        ..OptimizeOptions::default()
    };
    let opt = optimize(&g, &w, &opts).map_err(|e| format!("optimize: {e}"))?;
    let printed = print(&opt.graph);
    let got: Vec<String> = printed.lines().map(str::to_string).collect();

    let mut problems = Vec::new();
    match parse_named(&printed, "<optimized>") {
        Ok(back) if structurally_equal(&back, &opt.graph) => {
            if let Err(e) = verify_with_weights(&back, &opt.weights) {
                problems.push(format!("the reparsed printout does not verify: {e}"));
            }
        }
        Ok(_) => problems.push("the printout does not parse back to an equal graph".into()),
        Err(e) => problems.push(format!("the printout does not parse: {e}")),
    }
    let inputs = common::seeded_inputs(&g, case.input_seed.unwrap_or(case.weights_seed + 1));
    if let Err(e) = common::same_outputs(&g, &w, &opt.graph, &opt.weights, &inputs) {
        problems.push(format!("the optimized graph computes something else: {e}"));
    }
    for r in case.rules.iter().flatten() {
        if opt.report.applied.get(r).copied().unwrap_or(0) == 0 {
            problems.push(format!(
                "rule `{r}` never fired (fired: {:?})",
                opt.report.applied
            ));
        }
    }
    let mut blessed = None;
    if bless {
        if case.expect.as_deref() != Some(&got[..]) {
            let mut out = case.prefix.clone();
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(MARKER);
            out.push('\n');
            for l in &got {
                out.push_str(if l.is_empty() { ";" } else { "; " });
                out.push_str(l);
                out.push('\n');
            }
            blessed = Some(out);
        }
    } else {
        match &case.expect {
            None => problems.push(format!("no `{MARKER}` section (run with BLESS=1)")),
            Some(want) if *want != got => problems.push(format!(
                "the optimized graph differs from the expectation (BLESS=1 rewrites it):\n{}",
                diff(want, &got)
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(blessed)
    } else {
        Err(problems.join("\n"))
    }
}

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let filter = std::env::var("FILETEST").unwrap_or_default();
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/filetests exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "e2t"))
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(&filter))
        .collect();
    v.sort();
    v
}

#[test]
fn filetests() {
    let bless = std::env::var("BLESS").is_ok_and(|v| v == "1");
    let files = files();
    assert!(!files.is_empty(), "no .e2t files found");
    let mut failed = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match run_file(path, bless) {
            Ok(Some(text)) => {
                std::fs::write(path, text).expect("write blessed file");
                eprintln!("filetest {name}: blessed");
            }
            Ok(None) => eprintln!("filetest {name}: ok"),
            Err(e) => {
                eprintln!("filetest {name}: FAILED");
                failed.push(format!("{name}:\n{e}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} filetests failed:\n\n{}",
        failed.len(),
        files.len(),
        failed.join("\n\n")
    );
}

#[test]
fn harness_reads_its_directives() {
    let c = parse_case(
        "test optimize rules=a,b keep=logits\n; weights seed=7\n; input seed=3\n\
         ; zero \"w\" d0=0..2 d1=1..2,3..4\ngraph \"g\" {\n}\n; expect:\n; x\n;\n; y\n",
    )
    .unwrap();
    assert_eq!(c.rules, Some(vec!["a".to_string(), "b".to_string()]));
    assert_eq!(c.keep, Some(vec!["logits".to_string()]));
    assert_eq!((c.weights_seed, c.input_seed), (7, Some(3)));
    assert_eq!(c.zeros[0].d0, Some(vec![(0, 2)]));
    assert_eq!(c.zeros[0].d1, Some(vec![(1, 2), (3, 4)]));
    assert_eq!(c.expect, Some(vec!["x".into(), String::new(), "y".into()]));
    assert!(c.source.starts_with('\n'));
    assert!(parse_case("test compile\n").is_err());
    assert!(parse_case("test optimize frob=1\n").is_err());
    let d = diff(&["a".into(), "b".into()], &["a".into(), "c".into()]);
    assert!(d.contains("- b\n+ c\n"), "{d}");
    let mut w = Weights::new();
    w.insert(
        "k",
        e2enc_ir::Tensor::from_f32([2, 2, 1], vec![1.0; 4]).unwrap(),
    );
    common::zero_kernels(&mut w, "k", Some(&[(1, 2)]), None).unwrap();
    assert_eq!(w.get("k").unwrap().as_f32().unwrap(), &[1.0, 1.0, 0.0, 0.0]);
}
