//! `e2enc compile`: model.json → kernel bundle (optimized graph, C kernels, shared library).

use std::path::PathBuf;
use std::process::ExitCode;

use std::path::Path;

use anyhow::{bail, Context, Result};
use e2enc::calibrate::{calibrate_folder, Check, Sources};
use e2enc::segmenting::Net;
use e2enc_codegen::artifact::Manifest;
use e2enc_codegen::compile::{compile, CompileOptions, Target};
use e2enc_codegen::precision::Precision;
use e2enc_codegen::quant::Calibration;
use e2enc_ir::e2enet::{BuildOptions, Model};
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::exec::Engine;

use crate::util::{giga, parse_patch};

/// Compile a model into a kernel bundle for the runtime
///
/// The model is optimized (dead DSFF edges and channels dropped, kernel-sparse and fused
/// convolutions), then every kernel is generated as shape-specialized C for a CPU --target and
/// compiled with the system C compiler ($CC, default cc) into the bundle folder:
/// manifest.json, weights.safetensors, kernels.c, kernels.so. For --target cuda-sm80 or
/// cuda-sm90 the kernels are CUDA C, compiled by NVRTC (get it with `bash
/// scripts/fetch-nvrtc.sh`, or point $E2ENC_NVRTC at libnvrtc.so) into kernels.cu,
/// kernels.cubin and kernels.ptx (the fallback newer GPUs compile at load), every kernel's
/// registers and shared memory checked against the GPU's limits, CUBINs cached by sha256. The
/// bundle is built for one batch size and patch; it is written to a temporary folder and renamed
/// into place at the end.
///
/// The bundle is signed: manifest.sig holds an ed25519 signature of manifest.json (which holds
/// every file's sha256) and the public key. Without --sign, the key is your local key
/// (~/.config/e2enc/signing_key, or in $E2ENC_HOME; created on first use), which e2enc trusts on
/// this machine. To run the bundle elsewhere, sign it with a shared key (e2enc keygen -o KEYFILE,
/// then --sign KEYFILE) and list KEYFILE.pub in the trusted keys there (--trusted-keys FILE,
/// $E2ENC_TRUSTED_KEYS, or ~/.config/e2enc/trusted_keys). Other bundles are refused before any
/// of their code is loaded.
///
/// Example: e2enc compile amos/model.json -o amos-bundle && e2enc bench amos-bundle
#[derive(clap::Args)]
pub struct Args {
    /// model.json (or a folder holding one); it must name a weights file.
    model: PathBuf,
    /// The bundle folder to write.
    #[arg(short, long)]
    out: PathBuf,
    /// Patch size D,H,W (or N); default: the model's patch_size.
    #[arg(long, value_parser = parse_patch)]
    patch: Option<[usize; 3]>,
    /// Batch size the bundle runs.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Keep the deep-supervision outputs ds1..ds3 (default: logits only).
    #[arg(long)]
    deep_supervision: bool,
    /// Replace an existing bundle folder.
    #[arg(long)]
    force: bool,
    /// What the kernels are generated for: native (this host's widest: x86-avx512, x86-avx2 or
    /// aarch64-neon), x86-avx2 (any AVX2 + FMA host), x86-avx512 (needs avx512f where the bundle
    /// runs), aarch64-neon (64-bit Arm), or portable (plain C99, no intrinsics: any host). The
    /// manifest names the target and its CPU features; a host without them refuses the bundle.
    /// cuda-sm80 (A100 and newer, Ampere and Ada GPUs) or cuda-sm90 (H100/H200): CUDA kernels
    /// for a GPU; on a machine without one, `e2enc run|bench|segment --emulate` runs them
    /// through the host emulation.
    #[arg(long, visible_alias = "isa", default_value = "native", value_parser = parse_target)]
    target: Target,
    /// Also write standalone/ inside the bundle: a C program that runs the model without e2enc.
    /// model.c (the same kernels as kernels.c plus a single-threaded driver), model.h (its C API:
    /// workspace size, loading the weights, shapes, running one patch), main.c (./model [WEIGHTS]
    /// input.bin logits.bin over raw little-endian float32 NCDHW files; WEIGHTS defaults to
    /// ../weights.safetensors) and README.md with the one-line build command for the target, e.g.
    /// `cc -O2 -mavx2 -mfma -std=c11 -fno-math-errno model.c main.c -o model -lm`. The weights
    /// are not compiled in: the program reads the bundle's weights.safetensors, checking its size
    /// and header.
    #[arg(long)]
    standalone: bool,
    /// The C compiler that builds kernels.so (default: $CC or cc for this host's architecture;
    /// aarch64-linux-gnu-gcc for `--target aarch64-neon` on another host).
    #[arg(long, value_name = "CMD")]
    cc: Option<String>,
    /// Sign the bundle with this secret key file (from `e2enc keygen -o KEYFILE`) instead of
    /// your local key.
    #[arg(long, value_name = "KEYFILE")]
    sign: Option<PathBuf>,
    /// The convolutions' arithmetic: f32 (every target; the CPU default); tf32 (CUDA only, the
    /// CUDA default: tensor cores multiply inputs rounded to 10 mantissa bits and add in f32,
    /// about 1e-3 relative error on the outputs); bf16 (CUDA, and x86-avx512 for CPUs with
    /// avx512_bf16: inputs and weights rounded to 8 significant bits, products added in f32,
    /// about 2e-2 relative error; on CPUs the 3x3 convs (stride 1, and dense stride 2) use
    /// vdpbf16ps and activations are stored as bf16: about 1.6-1.8x the f32 bundle's speed and
    /// about half its memory on AMOS-CT, and a host without avx512_bf16 refuses the bundle; on CUDA activations stay
    /// f32). Check a bf16 bundle against its f32 one with
    /// `e2enc compare`. Choose f32 for results equal to the CPU's to rounding. int8
    /// (x86-avx512 for CPUs with avx512_vnni, avx512_bf16 and avx512_vbmi; needs --calibrate): the 3x3
    /// stride-1 convs multiply 8-bit activations (per input channel, scale and zero point from
    /// calibration) by 8-bit weights (per output channel, symmetric) with vpdpbusd and add in
    /// 32-bit integers; bias and norm stay f32, activations are stored as bf16 and the dense
    /// stride-2 convs use bf16 as in bf16 bundles. About 1.5-2.5x the f32 bundle's speed on
    /// AMOS-CT and 1e-1 relative error on the released network's logits (the MNI demo's Dice
    /// moved by under 0.001): check an int8 bundle against its f32 one with `e2enc compare` on
    /// cases with labels. For CPUs with avx512_vnni but not avx512_bf16 (Intel Ice Lake,
    /// Cascade Lake) add --activations f32.
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
    /// How bf16 and int8 bundles store activations between kernels: bf16 (their default on
    /// x86-avx512: half the memory and bytes moved) or f32 (more memory and time; with
    /// --precision int8 the bundle then needs avx512_vnni alone, every non-int8 conv
    /// multiplies in f32, and its int8 convs compute exactly the scheme of `e2enc_codegen::quant`
    /// without bf16 rounding in between). f32 and tf32 bundles always store f32.
    #[arg(long, value_name = "bf16|f32", value_parser = ["bf16", "f32"])]
    activations: Option<String>,
    /// With --precision int8: a folder of cases (nnU-Net naming, CASE_0000.nii.gz, ...) whose
    /// values set the activation ranges. An f32 bundle of the same graph runs tiles of each case
    /// (the model's preprocessing, the sliding window's tiles); each conv input channel's range
    /// is cut at the 0.001th and 99.999th percentiles of what it read. Use cases like those the
    /// bundle will segment (same modality and protocol).
    #[arg(long, value_name = "DIR")]
    calibrate: Option<PathBuf>,
    /// With --precision int8: activation ranges saved by an earlier `--save-calibration`
    /// instead of calibrating again (the same model and options: the ranges belong to one
    /// optimized graph, and another is refused).
    #[arg(long, value_name = "FILE.json", conflicts_with = "calibrate")]
    calibration: Option<PathBuf>,
    /// With --calibrate: also write the measured ranges (JSON: the graph's digest, the
    /// percentiles, the cases and tiles run, each conv's ranges per input channel) to this file,
    /// for a later --calibration or for the record.
    #[arg(long, value_name = "FILE.json", requires = "calibrate")]
    save_calibration: Option<PathBuf>,
    /// Tiles per calibration case, spread evenly over its sliding-window tiles (all of them when
    /// a case has fewer). Each costs about two f32 runs of the network; more tiles, better
    /// ranges (the MNI demo: 4 of its 6 tiles lost 0.004 Dice, all 6 0.0006).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    calibration_tiles: u32,
    /// With --calibrate: the preprocessing config (a JSON object, or a model.json-like object
    /// holding `preprocessing`) when model.json carries none, as `e2enc segment --preprocessing`.
    #[arg(long, value_name = "FILE", requires = "calibrate")]
    preprocessing: Option<PathBuf>,
    /// With --calibrate: run each calibration image on its own grid with per-image z-score
    /// when model.json carries no preprocessing (as `e2enc segment --spacing-as-is`).
    #[arg(long, requires = "calibrate")]
    spacing_as_is: bool,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
}

pub fn main(a: Args) -> Result<ExitCode> {
    let path = if a.model.is_dir() {
        a.model.join("model.json")
    } else {
        a.model.clone()
    };
    let m = Model::load(
        &path,
        &BuildOptions {
            batch: a.batch,
            patch: a.patch,
        },
    )?;
    let mut opts = CompileOptions {
        deep_supervision: a.deep_supervision,
        force: a.force,
        isa: a.target,
        standalone: a.standalone,
        cc: a.cc.clone(),
        sign: a.sign.clone(),
        precision: a.precision,
        f32_activations: Precision::f32_activations(
            a.precision,
            a.target,
            a.activations.as_deref(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "--activations {}: {e}",
                a.activations.as_deref().unwrap_or("")
            )
        })?,
        ..CompileOptions::default()
    };
    let mut check = None;
    let int8 = a.precision == Some(Precision::Int8);
    if !int8 && (a.calibrate.is_some() || a.calibration.is_some()) {
        bail!(
            "--calibrate and --calibration set activation ranges for --precision int8; the {} \
             bundle has no use for them",
            a.precision
                .unwrap_or_else(|| Precision::default_for(a.target))
        );
    }
    if int8 {
        Precision::Int8
            .check(a.target)
            .map_err(|e| anyhow::anyhow!(e))?;
        refuse_existing(&a)?;
        if let Some(save) = &a.save_calibration {
            let inputs: Vec<&Path> = [Some(a.model.as_path()), a.calibration.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            super::check_output("--save-calibration", save, true, &inputs)?;
            if save.exists() && !a.force {
                bail!("{} exists; pass --force to replace it", save.display());
            }
        }
        match (&a.calibrate, &a.calibration) {
            (Some(dir), _) => {
                let c = calibrate_folder(
                    &m,
                    &opts,
                    &Sources {
                        dir,
                        tiles: a.calibration_tiles as usize,
                        preprocessing: a.preprocessing.as_deref(),
                        spacing_as_is: a.spacing_as_is,
                    },
                    &mut |line| eprintln!("{line}"),
                )?;
                if let Some(save) = &a.save_calibration {
                    let text = serde_json::to_string_pretty(&c.calibration)? + "\n";
                    e2enc_ir::weights::write_atomic(save, text.as_bytes())
                        .with_context(|| format!("writing {}", save.display()))?;
                    eprintln!("calibration saved to {}", save.display());
                }
                opts.calibration = Some(c.calibration);
                check = Some(c.check);
            }
            (None, Some(file)) => {
                let text = e2enc_ir::files::read_text(file)?;
                let c: Calibration = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{}: not a calibration (write one with --calibrate DIR \
                         --save-calibration FILE)",
                        file.display()
                    )
                })?;
                opts.calibration = Some(c);
            }
            (None, None) => bail!(
                "--precision int8 needs --calibrate DIR: a folder of cases (CASE_0000.nii.gz, \
                 ...) like those the bundle will segment, whose values set the activation ranges \
                 (or --calibration FILE, ranges saved by --save-calibration)"
            ),
        }
    }
    let r = compile(&m, &a.out, &opts)?;
    let man = &r.manifest;
    if int8 {
        int8_report(&a, man, check)?;
    }
    eprintln!(
        "wrote {} ({}): {} kernels, arena {:.1} MiB, constants {:.1} MiB, {} executed MACs ({} dense)",
        a.out.display(),
        a.target,
        r.kernels,
        man.arena_elems as f64 * 4.0 / 1048576.0,
        (man.consts_f32 + man.consts_i32) as f64 * 4.0 / 1048576.0,
        giga(man.executed_macs),
        giga(man.dense_macs)
    );
    if let Some(tc) = r.tensor_cores {
        eprintln!("{}", tensor_core_line(&tc));
    }
    eprintln!(
        "optimize {:.2} s, codegen {:.2} s, {} {:.2} s",
        r.optimize.seconds,
        r.codegen_seconds - r.optimize.seconds,
        if a.target.is_cuda() {
            "NVRTC"
        } else {
            "C compiler"
        },
        r.cc_seconds
    );
    let arena = man.arena_elems as u64 * 4;
    if let Some(have) = e2enc_runtime::exec::available_memory() {
        if arena > have {
            eprintln!(
                "warning: the arena ({:.1} GiB) is more than this machine's available memory \
                 ({:.1} GiB): the bundle will not run here",
                arena as f64 / (1u64 << 30) as f64,
                have as f64 / (1u64 << 30) as f64
            );
        }
    }
    eprintln!(
        "signed with key {} ({})",
        r.signed_by.fingerprint(),
        r.key_file.display()
    );
    if a.standalone {
        eprintln!(
            "standalone C program in {} (build: {})",
            a.out.join(e2enc_codegen::standalone::DIR).display(),
            a.target.standalone_build_line()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses an existing output before the (long) calibration, as `compile` would after it.
fn refuse_existing(a: &Args) -> Result<()> {
    if a.out.exists() && !a.force {
        bail!("{} exists; pass --force to replace it", a.out.display());
    }
    Ok(())
}

/// Prints which convs compute in int8 and, with a calibration tile, how far the int8 bundle's
/// logits move from f32's on it.
fn int8_report(a: &Args, man: &Manifest, check: Option<Check>) -> Result<()> {
    // Conv and upsampling (transposed conv) steps, by the arithmetic they multiply in.
    let convs: Vec<&str> = man
        .steps
        .iter()
        .map(|s| s.what.as_str())
        .filter(|w| w.contains(" conv") || w.contains(" up"))
        .collect();
    let int8 = convs.iter().filter(|w| w.ends_with(" int8")).count();
    let bf16 = convs.iter().filter(|w| w.ends_with(" bf16")).count();
    let n = convs.len();
    match bf16 {
        0 => eprintln!("int8: {int8} of {n} conv kernels (the others f32)"),
        _ => eprintln!(
            "int8: {int8} of {n} conv kernels, bf16: {bf16} (the others f32); activations \
             stored as bf16"
        ),
    }
    let ups_bf16 = convs
        .iter()
        .filter(|w| w.contains(" up") && w.ends_with(" bf16"))
        .count();
    if ups_bf16 > 0 {
        eprintln!(
            "note: {ups_bf16} upsampling kernels multiply in bf16: int8 ones need their inputs' \
             calibrated ranges, which calibrations saved before 2026-12-05 lack for dense \
             upsamplings (--calibrate again to quantize them)"
        );
    }
    let Some(check) = check else {
        return Ok(());
    };
    let b = Bundle::load(&a.out, &LoadOptions::default())?;
    if !b
        .manifest
        .target
        .as_deref()
        .is_some_and(|t| t.parse::<Target>().is_ok_and(|t| t.host_supports()))
    {
        return Ok(());
    }
    let net = Net::of(&b)?;
    let mut e = match Engine::try_new(b, 0) {
        Ok(e) => e,
        Err(err) => {
            eprintln!("note: the int8 bundle does not run here ({err}): no accuracy check");
            return Ok(());
        }
    };
    e.set_input(&net.input, &check.input)?;
    e.execute()?;
    let y = e.output(&net.output)?;
    let mut got = vec![0f32; y.shape().iter().product()];
    y.copy_to(&mut got)?;
    let shape = [
        net.batch,
        net.classes,
        net.patch[0],
        net.patch[1],
        net.patch[2],
    ];
    let d = e2enc::gates::tensor_diff(&got, &check.logits, &shape)
        .map_err(|m| anyhow::anyhow!("the int8 accuracy check: {m}"))?;
    eprintln!(
        "int8 vs f32 on a calibration tile: logits rel. L2 {:.2e}, argmax agreement {:.3}% \
         (check a whole folder with `e2enc compare`)",
        d.rel_l2,
        100.0 * d.argmax_agreement()
    );
    if let Some(w) = int8_warning(d.rel_l2, d.argmax_agreement()) {
        eprintln!("{w}");
    }
    Ok(())
}

/// A warning when int8 moved a calibration tile's result much further from f32 than the scheme
/// does on the released network (rel. L2 1.0e-1, argmax agreement 96.5%): past rel. L2 0.25 or
/// under 90% agreement. Small or very sparse networks (a few live kernels per output) can land
/// there; the int8 kernels still compute the scheme exactly (`tests/int8_cpu.rs`).
fn int8_warning(rel_l2: f64, agreement: f64) -> Option<String> {
    (!(rel_l2 <= 0.25 && agreement >= 0.90)).then(|| {
        format!(
            "warning: int8 moved this tile's logits {rel_l2:.2e} (rel. L2) from f32 and changed \
             the class of {:.1}% of its voxels, far more than on the released network (1.0e-1, \
             3.5%): compare the two bundles on whole cases (`e2enc compare`) before using it, \
             or compile with --precision bf16",
            100.0 * (1.0 - agreement)
        )
    })
}

/// What the tensor-core convs issue against what their live kernels need, and what regrouping
/// their outputs saved (`e2enc_codegen::cuda::groups`).
fn tensor_core_line(tc: &e2enc_codegen::emit::MmaWork) -> String {
    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
    let mut s = format!(
        "tensor-core convs: their MMAs issue {} MACs for {} live ({:.0}% useful: a 16-output \
         group multiplies the union of its outputs' live inputs)",
        giga(tc.macs),
        giga(tc.live_macs),
        pct(tc.live_macs, tc.macs)
    );
    if tc.plain_macs > tc.macs {
        s.push_str(&format!(
            "; outputs regrouped to share inputs: {:.1}% fewer than {} in channel order",
            100.0 - pct(tc.macs, tc.plain_macs),
            giga(tc.plain_macs)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::int8_warning;

    #[test]
    fn the_tensor_core_line_names_the_useful_share_and_the_regrouping() {
        use e2enc_codegen::emit::MmaWork;
        let w = MmaWork {
            macs: 900_000_000,
            plain_macs: 1_000_000_000,
            live_macs: 200_000_000,
        };
        let l = super::tensor_core_line(&w);
        assert!(l.contains("0.9 G MACs for 0.2 G live (22% useful"), "{l}");
        assert!(l.contains("10.0% fewer than 1.0 G"), "{l}");
        let l = super::tensor_core_line(&MmaWork {
            plain_macs: 900_000_000,
            ..w
        });
        assert!(!l.contains("regrouped"), "{l}");
    }

    #[test]
    fn int8_warns_only_past_the_released_networks_error() {
        assert!(int8_warning(0.102, 0.965).is_none());
        let w = int8_warning(0.36, 0.95).unwrap();
        assert!(
            w.contains("3.60e-1") && w.contains("5.0%") && w.contains("bf16"),
            "{w}"
        );
        assert!(int8_warning(0.1, 0.85).is_some());
        assert!(int8_warning(f64::NAN, 1.0).is_some());
    }
}
