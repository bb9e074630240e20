//! `e2enc compile`: model.json → kernel bundle (optimized graph, C kernels, shared library).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use e2enc_codegen::compile::{compile, CompileOptions, Target};
use e2enc_codegen::precision::Precision;
use e2enc_ir::e2enet::{BuildOptions, Model};

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
    /// about 2e-2 relative error; on CPUs the 3x3 stride-1 convs use vdpbf16ps, about 1.3-1.5x
    /// the f32 bundle's speed, and a host without avx512_bf16 refuses the bundle). Activations
    /// stay f32 in the arena either way. Check a bf16 bundle against its f32 one with
    /// `e2enc compare`. Choose f32 for results equal to the CPU's to rounding. int8 is not built
    /// yet.
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
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
    let opts = CompileOptions {
        deep_supervision: a.deep_supervision,
        force: a.force,
        isa: a.target,
        standalone: a.standalone,
        cc: a.cc.clone(),
        sign: a.sign.clone(),
        precision: a.precision,
        ..CompileOptions::default()
    };
    let r = compile(&m, &a.out, &opts)?;
    let man = &r.manifest;
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
