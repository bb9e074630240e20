//! End to end through the `e2enc` binary: init → inspect → run, the embedded check, and the errors
//! a user gets for bad input (clear message, non-zero exit, no output file left behind).

mod common;
use common::{e2enc, e2enc_cmd, text};

use std::path::Path;

use e2enc_ir::{Tensor, Weights};

fn write_input(path: &Path, shape: [usize; 5]) {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut w = Weights::new();
    w.insert("input", Tensor::from_f32(shape.to_vec(), data).unwrap());
    w.save(path).unwrap();
}

fn init_tiny(dir: &Path, extra: &[&str]) {
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "init",
        "-o",
        d,
        "--preset",
        "tiny",
        "--patch",
        "32,32,32",
        "--max-width",
        "16",
    ];
    args.extend_from_slice(extra);
    let o = e2enc(&args);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn help_teaches_the_subcommands() {
    let o = e2enc(&["--help"]);
    assert!(o.status.success());
    let t = text(&o);
    for cmd in ["init", "inspect", "run", "check", "demo", "train"] {
        assert!(t.contains(cmd), "{t}");
    }
    let o = e2enc(&["run", "--help"]);
    assert!(text(&o).contains("--deep-supervision"));
}

#[test]
fn help_summaries_fit_one_line_at_80_columns() {
    let o = e2enc_cmd(&["--help"])
        .env("COLUMNS", "80")
        .output()
        .unwrap();
    assert!(o.status.success());
    let t = text(&o);
    let list = t
        .split("Commands:\n")
        .nth(1)
        .and_then(|r| r.split("\n\n").next())
        .unwrap_or_else(|| panic!("no command list in: {t}"));
    // Every line names a command: none is the wrapped rest of a summary.
    for line in list.lines() {
        assert!(line.starts_with("  ") && !line.starts_with("   "), "{t}");
        assert!(line.len() <= 80, "{t}");
    }
    assert!(list.lines().count() >= 12, "{t}");
}

#[test]
fn errors_show_an_os_error_or_a_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let out = tmp.path().join("x.safetensors");
    let once = |args: &[&str], needle: &str| {
        let o = e2enc(args);
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert_eq!(t.matches(needle).count(), 1, "`{needle}` not once in: {t}");
        assert!(!t.contains("panicked"), "{t}");
    };
    let o = out.to_str().unwrap();
    once(
        &["run", dir, "--input", dir, "--output", o],
        "is a folder, not a regular file",
    );
    once(&["inspect", dir], "(os error 2)");
    once(
        &["compile", dir, "-o", tmp.path().join("b").to_str().unwrap()],
        "(os error 2)",
    );
    // A context naming the path, over a cause that names it too.
    once(
        &["train", dir, "-o", tmp.path().join("run").to_str().unwrap()],
        "dataset.json",
    );
    assert!(!out.exists());
}

#[test]
fn init_inspect_run() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    init_tiny(&m, &["--density", "0.2", "--in-channels", "2"]);
    for f in ["model.json", "weights.safetensors", "masks.safetensors"] {
        assert!(m.join(f).exists(), "{f}");
    }

    let o = e2enc(&["inspect", m.to_str().unwrap(), "--layers"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("with pruned kernels removed"), "{t}");
    assert!(t.contains("x0_1.u0.conv"), "{t}");

    let input = tmp.path().join("x.safetensors");
    write_input(&input, [1, 2, 32, 32, 32]);
    let out = tmp.path().join("y.safetensors");
    let model = m.join("model.json");
    let o = e2enc(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--deep-supervision",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let y = Weights::load(&out).unwrap();
    let names: Vec<&String> = y.names().collect();
    assert_eq!(names, ["ds1", "ds2", "ds3", "logits"]);
    assert_eq!(y.get("logits").unwrap().shape(), [1, 2, 32, 32, 32]);
    assert_eq!(y.get("ds3").unwrap().shape(), [1, 2, 4, 4, 4]);

    // An existing output is replaced only with --overwrite, and never an input.
    let again = |target: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        e2enc(&args)
    };
    let o = again(&out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--overwrite"), "{}", text(&o));
    let o = again(&input, &["--overwrite"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is the input"), "{}", text(&o));
    assert!(Weights::load(&input).unwrap().get("input").is_some());

    // The outputs are their own reference; logits alone without --deep-supervision.
    let out2 = tmp.path().join("y2.safetensors");
    let o = e2enc(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out2.to_str().unwrap(),
        "--reference",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("relative error 0.00e0"), "{}", text(&o));
    assert_eq!(
        Weights::load(&out2).unwrap().names().collect::<Vec<_>>(),
        ["logits"]
    );
}

#[test]
fn inspect_writes_dot_and_text_that_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    init_tiny(&m, &[]);
    let dot = tmp.path().join("g.dot");
    let o = e2enc(&[
        "inspect",
        m.to_str().unwrap(),
        "--dot",
        dot.to_str().unwrap(),
        "--print-ir",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read_to_string(&dot)
        .unwrap()
        .starts_with("digraph"));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let start = stdout.find("graph \"").unwrap();
    let end = stdout.find("\n}\n").unwrap() + 3;
    let g = e2enc_ir::text::parse(&stdout[start..end]).unwrap();
    e2enc_ir::verify::verify(&g).unwrap();
    assert_eq!(g.outputs().len(), 4);
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    init_tiny(&m, &[]);
    let before = std::fs::read(m.join("weights.safetensors")).unwrap();
    let o = e2enc(&[
        "init",
        "-o",
        m.to_str().unwrap(),
        "--preset",
        "tiny",
        "--seed",
        "5",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--force"), "{}", text(&o));
    assert_eq!(
        std::fs::read(m.join("weights.safetensors")).unwrap(),
        before
    );
    init_tiny(&m, &["--seed", "5", "--force"]);
    assert_ne!(
        std::fs::read(m.join("weights.safetensors")).unwrap(),
        before
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    init_tiny(&m, &[]);
    let model = m.join("model.json");
    let out = tmp.path().join("y.safetensors");
    let run = |input: &Path| {
        e2enc(&[
            "run",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
    };

    let wrong_channels = tmp.path().join("c3.safetensors");
    write_input(&wrong_channels, [1, 3, 32, 32, 32]);
    let o = run(&wrong_channels);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("`input` has 3 channels, the model expects 1"),
        "{}",
        text(&o)
    );

    let indivisible = tmp.path().join("odd.safetensors");
    write_input(&indivisible, [1, 1, 32, 30, 32]);
    let o = run(&indivisible);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("patch_size"), "{}", text(&o));

    let o = run(&tmp.path().join("missing.safetensors"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("missing.safetensors"), "{}", text(&o));

    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a tensor file at all").unwrap();
    let o = run(&garbage);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a valid safetensors file"),
        "{}",
        text(&o)
    );

    // A checkpoint that does not fit the config names the tensor.
    let mut w = Weights::load(&m.join("weights.safetensors")).unwrap();
    w.insert(
        "up0.4.weight",
        Tensor::from_f32([8, 5, 2, 2, 2], vec![0.0; 320]).unwrap(),
    );
    w.save(&m.join("weights.safetensors")).unwrap();
    let good = tmp.path().join("x.safetensors");
    write_input(&good, [1, 1, 32, 32, 32]);
    let o = run(&good);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("`up0.4.weight` has shape [8, 5, 2, 2, 2]"),
        "{}",
        text(&o)
    );

    assert!(!out.exists(), "no output file after a failure");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn demo_reproduces_the_released_network() {
    let o = e2enc(&["check", "--skip-amos"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("ok: e2enc reproduces the released network"),
        "{t}"
    );
}

/// `compile --standalone` writes standalone/ with the build line of the target; `--help` teaches
/// it; a compile that fails (here: the C compiler) leaves neither a bundle nor a staging folder.
#[test]
fn compile_standalone_writes_the_c_program_or_nothing() {
    let o = e2enc(&["compile", "--help"]);
    let t = text(&o);
    assert!(
        t.contains("--standalone") && t.contains("weights.safetensors"),
        "{t}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    init_tiny(&m, &["--density", "0.5"]);
    let b = tmp.path().join("b");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = common::e2enc_cmd(&["compile", &s(&m), "-o", &s(&b), "--standalone"])
        .env("CC", "false")
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("C compiler"),
        "{}",
        text(&o)
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["m"], "a failed compile left files behind");

    let o = e2enc(&["compile", &s(&m), "-o", &s(&b), "--standalone"]);
    assert!(o.status.success(), "{}", text(&o));
    let target = e2enc_codegen::target::Target::native();
    let line = target.standalone_build_line();
    assert!(text(&o).contains(&line), "{}", text(&o));
    for f in ["model.c", "model.h", "main.c", "README.md"] {
        assert!(b.join("standalone").join(f).is_file(), "{f}");
    }
    let readme = std::fs::read_to_string(b.join("standalone/README.md")).unwrap();
    assert!(readme.contains(&line), "{readme}");
    // The bundle itself still loads (the manifest does not list standalone/).
    let o = e2enc(&["bench", &s(&b), "--runs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn sizes_from_input_are_bounded_and_non_regular_files_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    init_tiny(&m, &[]);
    let model = m.join("model.json");
    let out = tmp.path().join("y.safetensors");
    let fifo = tmp.path().join("fifo.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let mut inputs = vec![Path::new("/dev/zero").to_path_buf()];
    if made {
        inputs.push(fifo.clone());
    }
    for input in &inputs {
        let o = e2enc(&[
            "run",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("not a regular file"), "{}", text(&o));
    }
    // model.json itself.
    let o = e2enc(&["inspect", "/dev/zero"]);
    assert!(!o.status.success());
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
    // Absurd sizes: refused at once, naming the value and the limit, nothing written.
    let big = tmp.path().join("big");
    let o = e2enc(&[
        "init",
        "-o",
        big.to_str().unwrap(),
        "--preset",
        "amos-ct",
        "--base-width",
        "2000",
        "--max-width",
        "4000",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("parameters") && text(&o).contains("limit"),
        "{}",
        text(&o)
    );
    assert!(!big.exists());
    let b = tmp.path().join("b");
    let o = e2enc(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
        "--patch",
        "4096",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("limit"), "{}", text(&o));
    assert!(!b.exists());
    let o = e2enc(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        "x",
        "--output",
        "y",
        "--threads",
        "100000",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("limit of 1024"), "{}", text(&o));
    assert!(!out.exists());
}
