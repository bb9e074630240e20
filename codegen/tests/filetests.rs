//! Golden kernel text per target, Cranelift precise-output style: every
//! `tests/filetests/NAME.e2t` holds a header, directives and an input graph in the IR text form;
//! beside it, `NAME.c` holds the exact C text of the graph's kernels for the 8-lane targets
//! (`x86-avx2`, `aarch64-neon`, `portable`: one text by design), `NAME.x86-avx512.c` the text
//! with its 16-lane micro kernels, `NAME.cu` the CUDA text (one for `cuda-sm80` and
//! `cuda-sm90`: NVRTC's architecture differs, not the text), and `prelude.TARGET.c` (`.cu`) the
//! prelude every bundle of that target starts with. A renderer change shows as a diff of these
//! files.
//!
//! ```text
//! test kernels
//! ; Free comments say what the case is about.
//! ; weights seed=7
//! ; zero "conv.weight" d0=0..2 d1=4..8
//! graph "case" { ... }
//! ```
//!
//! The graph goes through the optimizer (`e2enc_passes::optimize`, every output kept), then the
//! planner and the C renderer (`codegen::compile::generate`) for each target. Weights come from
//! the optimizer tests' seeded generator (never zero, so only `; zero` makes a kernel dead and a
//! conv sparse). For every file and target the harness checks that the kernel text equals the
//! golden file (a mismatch prints a line diff) and that the whole source (prelude + kernels)
//! passes the C compiler's syntax check for that target: `cc` for the x86 and portable targets,
//! `aarch64-linux-gnu-gcc` for NEON (CI installs it; without it the NEON check fails, unless
//! `E2ENC_SKIP_AARCH64=1`), and for CUDA the host C++ compiler over the runtime's emulation shim
//! (NVRTC itself compiles the same text in the CUDA bundle tests). The numbers these kernels compute are checked elsewhere (kernel
//! proptests and bundles against the interpreter, the standalone build under qemu-aarch64).
//!
//! `BLESS=1 cargo test -p e2enc-codegen --test filetests` rewrites the golden files.
//! `FILETEST=substring` runs only the files whose name contains it.

#[path = "../../passes/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use e2enc_codegen::compile::generate_in;
use e2enc_codegen::precision::Precision;
use e2enc_codegen::target::Target;
use e2enc_ir::text::parse_named;
use e2enc_passes::{optimize, OptimizeOptions};

/// The prelude a bundle of `target` starts with.
fn prelude_for(target: Target) -> String {
    e2enc_codegen::render::for_target(target).prelude()
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests")
}

fn bless() -> bool {
    std::env::var_os("BLESS").is_some()
}

/// `a..b[,c..d]` ranges.
fn ranges(s: &str) -> Result<Vec<(usize, usize)>, String> {
    s.split(',')
        .map(|r| {
            let (a, b) = r.split_once("..").ok_or(format!("bad range `{r}`"))?;
            Ok((
                a.parse().map_err(|_| format!("bad range `{r}`"))?,
                b.parse().map_err(|_| format!("bad range `{r}`"))?,
            ))
        })
        .collect()
}

/// The kernel text of one case for `target` (kernels only, no prelude), and the whole source.
fn render(file: &Path, target: Target) -> Result<(String, String), String> {
    render_in(file, target, Precision::default_for(target))
}

/// [`render`] with the convolutions in `precision`.
fn render_in(
    file: &Path,
    target: Target,
    precision: Precision,
) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("test kernels") {
        return Err("the first line must be `test kernels`".into());
    }
    let mut seed = 0;
    let mut zeros = Vec::new();
    for l in lines {
        if let Some(v) = l.strip_prefix("; weights seed=") {
            seed = v.trim().parse().map_err(|_| format!("bad seed: {l}"))?;
        } else if let Some(rest) = l.strip_prefix("; zero \"") {
            let (name, rest) = rest.split_once('"').ok_or(format!("bad zero: {l}"))?;
            let (mut d0, mut d1) = (None, None);
            for part in rest.split_whitespace() {
                match part.split_once('=') {
                    Some(("d0", r)) => d0 = Some(ranges(r)?),
                    Some(("d1", r)) => d1 = Some(ranges(r)?),
                    _ => return Err(format!("bad zero: {l}")),
                }
            }
            zeros.push((name.to_string(), d0, d1));
        }
    }
    // The header line is blanked so parse errors keep their line numbers.
    let source = text.replacen("test kernels", "", 1);
    let g = parse_named(&source, &file.display().to_string()).map_err(|e| e.to_string())?;
    let mut w = common::seeded_weights(&g, seed)?;
    for (name, d0, d1) in &zeros {
        common::zero_kernels(&mut w, name, d0.as_deref(), d1.as_deref())?;
    }
    let opts = OptimizeOptions {
        keep_outputs: None,
        ..OptimizeOptions::default()
    };
    let o = optimize(&g, &w, &opts).map_err(|e| e.to_string())?;
    let gen = generate_in(&o.graph, &o.weights, target, precision).map_err(|e| e.to_string())?;
    let mut kernels = String::new();
    for k in &gen.kernels {
        kernels.push_str(&format!(
            "/* {}: {} tiles, {} flops */\n",
            k.what, k.tiles, k.flops
        ));
        kernels.push_str(&k.source);
        kernels.push('\n');
    }
    Ok((kernels, gen.source))
}

/// Compares `got` with the golden file `path` (or writes it under BLESS).
fn golden(path: &Path, got: &str) -> Result<(), String> {
    if bless() {
        std::fs::write(path, got).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let want = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (run with BLESS=1 to create it)", path.display()))?;
    if want == got {
        return Ok(());
    }
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut diff = String::new();
    let mut shown = 0;
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i), g.get(i));
        if a != b && shown < 20 {
            shown += 1;
            diff.push_str(&format!(
                "line {}:\n- {}\n+ {}\n",
                i + 1,
                a.unwrap_or(&""),
                b.unwrap_or(&"")
            ));
        }
    }
    Err(format!(
        "{} differs from the generated text ({} vs {} lines; first differences below; BLESS=1 rewrites it):\n{diff}",
        path.display(),
        w.len(),
        g.len()
    ))
}

/// The compiler and flags that syntax-check `target`'s C on this host, or why there is none.
fn checker(target: Target) -> Result<(String, Vec<&'static str>), String> {
    let cc = match target.cross_compiler() {
        Some(x) => x.to_string(),
        None => e2enc_codegen::compile::host_cc(),
    };
    let ok = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Err(format!(
            "no `{cc}` to check the {target} text (Debian: apt-get install gcc-aarch64-linux-gnu)"
        ));
    }
    let mut flags = vec![
        "-fsyntax-only",
        "-std=c11",
        "-Wall",
        "-Werror",
        "-Wno-unused-function",
        // Generic vectors wider than the baseline ABI warn, harmlessly, in static functions.
        "-Wno-psabi",
    ];
    flags.extend_from_slice(target.machine_flags());
    Ok((cc, flags))
}

/// CUDA text through the host C++ compiler with the emulation shim in front.
fn cuda_syntax_check(source: &str, what: &str) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let c = tmp.path().join("k.cpp");
    // The emulation's own text (shim, then the kernels), without launch wrappers.
    std::fs::write(&c, e2enc_runtime::emulate::source(source, &[])?).map_err(|e| e.to_string())?;
    let cxx = e2enc_runtime::emulate::compiler();
    let flags = [
        "-fsyntax-only",
        "-std=c++17",
        "-Wall",
        "-Werror",
        "-Wno-unused-function",
        "-Wno-unused-parameter",
        // `#pragma unroll` is for NVRTC.
        "-Wno-unknown-pragmas",
    ];
    let out = Command::new(&cxx)
        .args(flags)
        .arg(&c)
        .output()
        .map_err(|e| format!("{cxx}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let head: Vec<&str> = err.lines().take(30).collect();
        return Err(format!(
            "{what}: `{cxx} {}` failed:\n{}",
            flags.join(" "),
            head.join("\n")
        ));
    }
    Ok(())
}

fn syntax_check(target: Target, source: &str, what: &str) -> Result<(), String> {
    if target.is_cuda() {
        return cuda_syntax_check(source, what);
    }
    let (cc, flags) = match checker(target) {
        Ok(c) => c,
        Err(e)
            if target == Target::Aarch64Neon
                && std::env::var_os("E2ENC_SKIP_AARCH64").is_some() =>
        {
            eprintln!("note: skipped ({e})");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let c = tmp.path().join("k.c");
    std::fs::write(&c, source).map_err(|e| e.to_string())?;
    let out = Command::new(&cc)
        .args(&flags)
        .arg(&c)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let head: Vec<&str> = err.lines().take(30).collect();
        return Err(format!(
            "{what}: `{cc} {}` failed:\n{}",
            flags.join(" "),
            head.join("\n")
        ));
    }
    Ok(())
}

/// The golden file of a case for `target`: the 8-lane dialects (x86-avx2, aarch64-neon,
/// portable) share one kernel text by design, so they share `NAME.c`; a dialect with wider
/// vectors has its own `NAME.TARGET.c`.
fn golden_name(stem: &str, target: Target) -> String {
    if target.is_cuda() {
        format!("{stem}.cu")
    } else if target.lanes() == 8 {
        format!("{stem}.c")
    } else {
        format!("{stem}.{target}.c")
    }
}

#[test]
fn kernel_text_per_target() {
    let filter = std::env::var("FILETEST").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/filetests")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "e2t"))
        .filter(|p| {
            filter
                .as_deref()
                .is_none_or(|f| p.file_name().unwrap().to_string_lossy().contains(f))
        })
        .collect();
    files.sort();
    assert!(
        filter.is_some() || files.len() >= 5,
        "expected the kernel filetests"
    );
    let mut failures = Vec::new();
    for file in &files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        for target in Target::ALL {
            let what = format!("{stem} [{target}]");
            let r = render(file, target).and_then(|(kernels, source)| {
                golden(&dir().join(golden_name(&stem, target)), &kernels)?;
                syntax_check(target, &source, &what)
            });
            if let Err(e) = r {
                failures.push(format!("{what}: {e}"));
            }
        }
        // `--precision bf16` on x86-avx512 (`NAME.x86-avx512.bf16.c`), where it changes a kernel.
        let (t, p) = (Target::X86Avx512, Precision::Bf16);
        let what = format!("{stem} [{t}, {p}]");
        let r = render_in(file, t, p).and_then(|(kernels, source)| {
            let path = dir().join(format!("{stem}.{t}.{p}.c"));
            if kernels == render(file, t)?.0 {
                return match path.exists() {
                    true => Err(format!(
                        "{} is stale: bf16 changes no kernel",
                        path.display()
                    )),
                    false => Ok(()),
                };
            }
            golden(&path, &kernels)?;
            syntax_check(t, &source, &what)
        });
        if let Err(e) = r {
            failures.push(format!("{what}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn prelude_per_target() {
    let mut failures = Vec::new();
    for target in Target::ALL {
        if let Err(e) = golden(
            &dir().join(format!(
                "prelude.{target}.{}",
                if target.is_cuda() { "cu" } else { "c" }
            )),
            &prelude_for(target),
        ) {
            failures.push(e);
        }
    }
    let bf16 = e2enc_codegen::render::for_target_in(Target::X86Avx512, Precision::Bf16).prelude();
    if let Err(e) = golden(&dir().join("prelude.x86-avx512.bf16.c"), &bf16) {
        failures.push(e);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The golden files hold what they claim: each target's text differs where the dialects differ
/// (a renderer that ignored the target would make them equal), and every kernel text is written
/// in the shared vocabulary, never in a dialect's intrinsics.
#[test]
fn goldens_differ_by_dialect_only() {
    let file = dir().join("dense-norm.e2t");
    let avx2 = render(&file, Target::X86Avx2).unwrap().0;
    let avx512 = render(&file, Target::X86Avx512).unwrap().0;
    let neon = render(&file, Target::Aarch64Neon).unwrap().0;
    let portable = render(&file, Target::Portable).unwrap().0;
    assert_ne!(avx2, avx512, "16-lane micro kernels on AVX-512");
    assert!(avx512.contains("e2f16_fma"));
    assert_eq!(avx2, neon, "8-lane dialects share one kernel text");
    assert_eq!(avx2, portable, "8-lane dialects share one kernel text");
    for t in [&avx2, &avx512] {
        assert!(!t.contains("_mm256") && !t.contains("_mm512") && !t.contains("vld1q"));
    }
    for t in Target::CPU {
        let p = prelude_for(t);
        assert!(
            p.contains("e2f8_fma"),
            "{t}: the prelude defines the vocabulary"
        );
    }
    assert!(prelude_for(Target::Portable)
        .lines()
        .all(|l| !l.contains("#include <immintrin.h>") && !l.contains("arm_neon")));
}
