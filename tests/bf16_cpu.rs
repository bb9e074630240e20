//! CPU bf16 bundles (`e2enc compile --target x86-avx512 --precision bf16`) end to end: on a host
//! with `avx512_bf16` the released (golden) network's bundle computes bf16's math, i.e. it is
//! close to the interpreter with the operands of its bf16 convs rounded to bf16 and far from
//! plain f32; on a host without it the bundle is refused before any kernel loads, naming
//! `--precision bf16` and the missing feature. (`E2ENC_REQUIRE_AVX512_BF16` turns the first
//! case's skip into a failure.) A bundle whose plan lags convs over bf16 activations (their
//! first planes through a bf16 stash) stays within bf16's error of the f32 bundle.

#[path = "common/mod.rs"]
mod cli_common;
#[path = "bundle_common/mod.rs"]
mod common;

use common::feed;
use e2enc::TensorEngine;
use e2enc_codegen::compile::{compile, CompileOptions};
use e2enc_codegen::precision::Precision;
use e2enc_codegen::target::{host_has, Target};
use e2enc_ir::e2enet::BuildOptions;
use e2enc_ir::tensor::relative_error_l2;
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::exec::Engine;

fn host_bf16() -> bool {
    Target::X86Avx512.host_supports()
        && host_has("avx512bw") == Some(true)
        && host_has("avx512bf16") == Some(true)
}

#[test]
fn golden_cpu_bf16_bundle_computes_bf16_or_is_refused() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("note: not an x86_64 host: x86-avx512 bf16 bundles not checked");
        return;
    }
    let golden = common::repo().join("tests/data/golden");
    let model = e2enc_ir::e2enet::Model::load(&golden.join("model.json"), &BuildOptions::default())
        .expect("golden model");
    let io = e2enc_ir::Weights::load(&golden.join("io.safetensors")).expect("golden io");
    let x = io.get("input").expect("io has `input`");
    let t = common::tempdir();
    let dir = t.path().join("golden-bf16");
    let opts = CompileOptions {
        isa: Target::X86Avx512,
        precision: Some(Precision::Bf16),
        ..CompileOptions::default()
    };
    let r = compile(&model, &dir, &opts).expect("compiling the golden network in bf16");
    assert_eq!(r.manifest.precision.as_deref(), Some("bf16"));
    assert!(r.manifest.cpu_features.iter().any(|f| f == "avx512bf16"));
    assert!(
        r.manifest.steps.iter().any(|s| s.what.ends_with(" bf16")),
        "no bf16 conv kernel in the bundle"
    );
    let loaded = Bundle::load(&dir, &LoadOptions::default());
    if !host_bf16() {
        let e = loaded
            .err()
            .expect("a bf16 bundle loaded on a host without avx512bf16")
            .to_string();
        if Target::X86Avx512.host_supports() {
            assert!(
                e.contains("--precision bf16") && e.contains("avx512b"),
                "{e}"
            );
        } else {
            // No AVX-512 at all: the target's own features are refused first.
            assert!(
                e.contains("--target x86-avx512") && e.contains("avx512f"),
                "{e}"
            );
        }
        assert!(
            std::env::var_os("E2ENC_REQUIRE_AVX512_BF16").is_none(),
            "E2ENC_REQUIRE_AVX512_BF16 is set but this host lacks avx512bf16 ({e})"
        );
        eprintln!("note: this host lacks avx512bf16: only the refusal was checked ({e})");
        return;
    }
    let mut e = Engine::try_new(loaded.expect("loading the bf16 bundle"), 2).expect("engine");
    let y = e.run(&feed(x)).expect("bf16 run");
    let got = &y["logits"];
    // The CPU's bf16 convs: 3x3 in H and W, stride 1, same padding (conv_bf16::applies).
    // (The bundle stores its activations as bf16 too.)
    let sim = common::simulated_bf16_with(
        &model,
        x,
        &|c| {
            let ([_, kh, kw], [_, sh, sw], [_, ph, pw]) = (c.kernel, c.stride, c.padding);
            kh == 3 && kw == 3 && sh == 1 && sw == 1 && ph == 1 && pw == 1
        },
        true,
    );
    let f32_ref = io.get("ds0").expect("io has `ds0`");
    let to_sim = relative_error_l2(got, &sim).unwrap();
    let to_f32 = relative_error_l2(got, f32_ref).unwrap();
    let sim_to_f32 = relative_error_l2(&sim, f32_ref).unwrap();
    let agree = common::argmax_agreement(got, f32_ref);
    eprintln!(
        "cpu bf16 bundle: {to_sim:.2e} from simulated bf16, {to_f32:.2e} from f32 (simulated: \
         {sim_to_f32:.2e}), argmax agreement with f32 {:.3}%",
        100.0 * agree
    );
    assert!(
        sim_to_f32 > 1e-3,
        "the simulation rounded nothing? {sim_to_f32:.2e}"
    );
    // The bundle stores activations as bf16, and stores the raw outputs of its normalized convs
    // less a per-tile shift, which the simulation cannot model: on this small, sensitive network
    // two such rounding patterns land a few 1e-2 apart (bundle and simulation each ~4e-2 from
    // f32), so the bundle is held to the simulation's distance from f32 instead; the kernels'
    // exactness is `codegen/tests/kernels.rs`'s (`bf16_convs_match_the_interpreter_on_bf16_exact_values`,
    // `bf16_storage_kernels_match_the_interpreter`). A wrong kernel or address moves the logits
    // by O(1) (a bf16 store of unshifted raw conv outputs: 9.5e-1).
    assert!(
        to_f32 < 1.5 * sim_to_f32 && agree > 0.97,
        "bf16 moved the logits {to_f32:.2e} from f32 (simulated bf16: {sim_to_f32:.2e}; argmax \
         agreement {agree:.4})"
    );
    let src = std::fs::read_to_string(dir.join("kernels.c")).expect("kernels.c");
    assert!(
        src.contains("((e2h *)A)"),
        "no activation is stored as bf16"
    );
}

/// `e2enc compile` of the golden network into a fresh folder with `extra` options, which must
/// refuse it and write nothing: the refusal's text.
fn refused_compile(extra: &[&str]) -> String {
    let t = common::tempdir();
    let out = t.path().join("b");
    let model = common::repo().join("tests/data/golden/model.json");
    let (m, o) = (model.to_string_lossy(), out.to_string_lossy());
    let mut args = vec!["compile", m.as_ref(), "-o", o.as_ref()];
    args.extend_from_slice(extra);
    let r = cli_common::e2enc(&args);
    let text = cli_common::text(&r);
    assert!(!r.status.success(), "{extra:?} compiled: {text}");
    assert!(!out.exists(), "{extra:?} left {}", out.display());
    text
}

#[test]
fn bf16_on_another_cpu_target_is_refused_naming_the_choices() {
    let t = refused_compile(&["--target", "x86-avx2", "--precision", "bf16"]);
    assert!(
        t.contains("--precision bf16 needs --target x86-avx512"),
        "{t}"
    );
}

#[test]
fn bf16_activations_need_a_precision_that_stores_them() {
    // f32 bundles have no kernels reading bf16 activations: asking for them is refused before
    // anything is written, naming the precisions that do.
    let t = refused_compile(&["--target", "x86-avx512", "--activations", "bf16"]);
    assert!(
        t.contains("--activations bf16: bf16 activations need precision bf16 or int8"),
        "{t}"
    );
}

#[test]
fn bf16_activations_in_lagged_convs_keep_their_planes() {
    if std::env::consts::ARCH != "x86_64" || !host_bf16() {
        eprintln!("note: no avx512_bf16 here: bf16 storage with lagged convs not run");
        return;
    }
    let t = common::tempdir();
    let (m, d32, d16) = (
        t.path().join("m"),
        t.path().join("f32"),
        t.path().join("bf16"),
    );
    let s = |p: &std::path::Path| p.to_string_lossy().to_string();
    let ok = |args: &[&str]| {
        let o = cli_common::e2enc(args);
        assert!(o.status.success(), "{args:?}: {}", cli_common::text(&o));
    };
    // A 32^3 patch with narrow levels: the bf16 plan lags (measured: 18 stash copies).
    ok(&[
        "init",
        "-o",
        &s(&m),
        "--base-width",
        "4",
        "--max-width",
        "32",
        "--patch",
        "32",
        "--classes",
        "2",
        "--density",
        "0.3",
    ]);
    let model = s(&m.join("model.json"));
    ok(&["compile", &model, "-o", &s(&d32), "--target", "x86-avx512"]);
    ok(&[
        "compile",
        &model,
        "-o",
        &s(&d16),
        "--target",
        "x86-avx512",
        "--precision",
        "bf16",
    ]);
    let src = std::fs::read_to_string(d16.join("kernels.c")).expect("kernels.c");
    assert!(
        src.contains("memcpy(((e2h *)A)"),
        "no lagged conv copies bf16 planes from its stash"
    );
    let v: Vec<f32> = (0..32 * 32 * 32u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let x = e2enc_ir::Tensor::from_f32(vec![1, 1, 32, 32, 32], v).expect("input");
    let mut w = e2enc_ir::Weights::new();
    w.insert("input".to_string(), x);
    let input = t.path().join("x.safetensors");
    w.save(&input).expect("input file");
    let (y32, y16) = (
        t.path().join("y32.safetensors"),
        t.path().join("y16.safetensors"),
    );
    ok(&["run", &s(&d32), "--input", &s(&input), "--output", &s(&y32)]);
    // A stash copied to the wrong place or width is O(1) (or NaN); bf16 is about 2e-2 here.
    ok(&[
        "run",
        &s(&d16),
        "--input",
        &s(&input),
        "--output",
        &s(&y16),
        "--reference",
        &s(&y32),
        "--tolerance",
        "0.1",
    ]);
}
