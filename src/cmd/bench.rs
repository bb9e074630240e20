//! `e2enc bench`: times a bundle (warm-up, median of N), with a per-kernel profile and
//! effective GFLOP/s against dense and executed MAC counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use e2enc_runtime::bundle::Bundle;
use e2enc_runtime::bundle::LoadOptions;

use crate::util::giga;
use e2enc::device::DeviceArg;

/// Time a compiled bundle on a random input of its shape
///
/// Prints the median time of --runs runs after --warmup runs, the effective GFLOP/s counted on
/// the dense network's MACs and on the MACs actually executed, peak memory, and (--profile) the
/// time, GFLOP/s and share of every kernel. On a CPU it also measures this machine's f32 FMA peak
/// (all threads, the bundle's vector width; a quarter of a second) and prints every GFLOP/s
/// figure as a percentage of it. Machines are noisy: compare numbers from one run.
///
/// Example: e2enc bench amos-bundle --runs 3 --profile
#[derive(clap::Args)]
pub struct Args {
    /// The bundle folder (from `e2enc compile`).
    bundle: PathBuf,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Threads (0: all cores).
    #[arg(long, value_parser = crate::cmd::parse_threads, default_value_t = 0)]
    threads: usize,
    /// Print the per-kernel profile (of one extra run).
    #[arg(long)]
    profile: bool,
    /// Recompile kernels.c on this host instead of loading kernels.so.
    #[arg(long)]
    rebuild: bool,
    /// For a CUDA bundle (`--target cuda-sm80|cuda-sm90`): run its kernels on this CPU through
    /// the host emulation (kernels.cu compiled as C++ with a CUDA shim; slow, for checking
    /// results without a GPU).
    #[arg(long)]
    emulate: bool,
    /// Where the bundle runs: cpu, or cuda / cuda:N (NVIDIA GPU N; a bundle compiled for a
    /// CUDA target, on a build with CUDA support). --profile times GPU kernels with CUDA events.
    #[arg(long, value_name = "cpu|cuda|cuda:N", value_parser = super::parse_device, default_value = "cpu")]
    device: super::DeviceArg,
    #[command(flatten)]
    trust: super::TrustArgs,
    /// Also time another engine on the same dense network in the same run: `onnxruntime`
    /// (needs python3 with `pip install onnx onnxruntime numpy`; see tools/README.md).
    #[arg(long, value_parser = ["onnxruntime"], requires = "model")]
    against: Option<String>,
    /// The model.json the bundle was compiled from (for --against).
    #[arg(long)]
    model: Option<PathBuf>,
}

const ORT_BENCH: &str = include_str!("../../tools/ort_bench.py");
const NUMPY_REF: &str = include_str!("../../tools/numpy_ref/e2enet_ref.py");

/// Runs tools/ort_bench.py (embedded) and returns its JSON report.
fn time_onnxruntime(
    model: &std::path::Path,
    patch: &[usize],
    runs: usize,
    warmup: usize,
    threads: usize,
) -> Result<serde_json::Value> {
    // Removed when `dir` goes, on every path out of here.
    let dir = tempfile::Builder::new().prefix("e2enc-ort-").tempdir()?;
    std::fs::create_dir_all(dir.path().join("numpy_ref"))?;
    std::fs::write(dir.path().join("ort_bench.py"), ORT_BENCH)?;
    std::fs::write(dir.path().join("numpy_ref/e2enet_ref.py"), NUMPY_REF)?;
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(dir.path().join("ort_bench.py"))
        .arg(model)
        .arg("--patch")
        .arg(format!("{},{},{}", patch[0], patch[1], patch[2]))
        .arg("--runs")
        .arg(runs.to_string())
        .arg("--warmup")
        .arg(warmup.max(1).to_string());
    if threads > 0 {
        cmd.arg("--threads").arg(threads.to_string());
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output();
    drop(dir);
    let out = out.map_err(|e| anyhow::anyhow!("cannot run python3 ({e}); --against onnxruntime needs python3 with onnx and onnxruntime"))?;
    if !out.status.success() {
        bail!("the ONNX Runtime benchmark failed (pip install onnx onnxruntime numpy?)");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("no report from the ONNX Runtime benchmark"))?;
    Ok(serde_json::from_str(line)?)
}

/// Peak resident memory of this process in bytes (Linux), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn main(a: Args) -> Result<ExitCode> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let b = Bundle::load(
        &a.bundle,
        &LoadOptions {
            emulate: a.emulate,
            ..a.trust.load_options(a.rebuild)
        },
    )?;
    let mut e = super::engine_on(a.device, b, a.threads)?;
    if a.emulate {
        eprintln!(
            "note: --emulate runs the CUDA kernels on this CPU, thread by thread: its times say \
             nothing about a GPU's (use it to check results; time on a GPU with --device cuda)"
        );
    }
    let m = e.bundle.manifest.clone();
    let port = m
        .inputs
        .first()
        .ok_or_else(|| anyhow::anyhow!("the bundle has no input"))?;
    let n: usize = port.shape.iter().product();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    eprintln!(
        "bundle {}: input {:?}, {} kernels, {} threads, arena {:.0} MiB",
        a.bundle.display(),
        port.shape,
        m.steps.len(),
        e.threads(),
        e.arena_bytes() as f64 / 1048576.0
    );
    // `execute` leaves the outputs in the arena (readable in place with `Engine::output`), so the
    // timing and the peak memory hold the network alone, not a copy of its logits.
    for _ in 0..a.warmup {
        e.set_input(&port.name, &data)?;
        e.execute()?;
    }
    let mut times = Vec::new();
    for i in 0..a.runs {
        let t0 = Instant::now();
        e.set_input(&port.name, &data)?;
        e.execute()?;
        let s = t0.elapsed().as_secs_f64();
        eprintln!("  run {}: {s:.3} s", i + 1);
        times.push(s);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let gf = |macs: u64| 2.0 * macs as f64 / median / 1e9;
    println!("median        {median:.3} s per batch ({} runs)", a.runs);
    println!(
        "dense MACs    {} -> {:.1} effective GFLOP/s",
        giga(m.dense_macs),
        gf(m.dense_macs)
    );
    // The host's own f32 FMA peak at the bundle's vector width, measured now (CPU only).
    let peak = match (a.device, a.emulate, m.target.as_deref()) {
        (DeviceArg::Cpu, false, Some(t)) => crate::peak::fma_peak_gflops(t, e.threads()),
        _ => None,
    };
    // A bundle's bf16 (int8) convs are held to the host's vdpbf16ps (vpdpbusd) peak, the rest to
    // f32's (an int8 bundle that stores bf16 activations has bf16 convs too).
    let narrow = m
        .precision
        .as_deref()
        .filter(|p| matches!(*p, "bf16" | "int8"));
    let has = |suffix: &str| m.steps.iter().any(|s| s.what.ends_with(suffix));
    let peak_bf16 = peak
        .and_then(|_| has(" bf16").then(|| crate::peak::bf16_peak_gflops(e.threads())))
        .flatten();
    let peak_int8 = peak
        .and_then(|_| has(" int8").then(|| crate::peak::int8_peak_gops(e.threads())))
        .flatten();
    let of_peak = |gflops: f64| match peak {
        Some(p) if narrow.is_some() => {
            format!(" ({:.0}% of the f32 FMA peak)", 100.0 * gflops / p)
        }
        Some(p) => format!(" ({:.0}% of peak)", 100.0 * gflops / p),
        None => String::new(),
    };
    println!(
        "executed MACs {} -> {:.1} GFLOP/s{}",
        giga(m.executed_macs),
        gf(m.executed_macs),
        of_peak(gf(m.executed_macs))
    );
    if let Some(p) = peak {
        println!(
            "machine peak  {p:.1} GFLOP/s (f32 FMA at the bundle's vector width, {} threads, measured now)",
            e.threads()
        );
    }
    if let Some(p) = peak_bf16 {
        println!(
            "bf16 peak     {p:.1} GFLOP/s (vdpbf16ps, {} threads, measured now: the `bf16` rows of --profile are held to it)",
            e.threads()
        );
    }
    if let Some(p) = peak_int8 {
        println!(
            "int8 peak     {p:.1} GOP/s (vpdpbusd, {} threads, measured now: the `int8` rows of --profile are held to it)",
            e.threads()
        );
    }
    if let Some(rss) = peak_rss_bytes() {
        println!(
            "peak memory   {:.0} MiB (process, including the constants)",
            rss as f64 / 1048576.0
        );
    }
    if let (Some(engine), Some(model)) = (&a.against, &a.model) {
        let patch = &port.shape[2..];
        eprintln!(
            "timing {engine} on the dense network ({} runs after warm-up) ...",
            a.runs
        );
        let r = time_onnxruntime(model, patch, a.runs, a.warmup, a.threads)?;
        let ort = r["median_s"]
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("bad report: {r}"))?;
        println!(
            "{engine} {}  {ort:.3} s per batch (dense, {} threads, peak {:.0} MiB) -> e2enc is {:.2}x faster",
            r["version"].as_str().unwrap_or("?"),
            r["threads"],
            r["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            ort / median
        );
    }
    if a.profile {
        e.set_input(&port.name, &data)?;
        let steps = e.execute_profiled()?;
        let total: f64 = steps.iter().map(|s| s.seconds).sum();
        let mut by_what: BTreeMap<String, (f64, u64, usize)> = BTreeMap::new();
        for s in &steps {
            let kind = s
                .what
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ");
            let e = by_what.entry(kind).or_default();
            e.0 += s.seconds;
            e.1 += s.flops;
            e.2 += 1;
        }
        println!("\nprofile by kernel kind ({total:.3} s in kernels):");
        println!(
            "{:<34} {:>6} {:>9} {:>9} {:>7} {:>7}",
            "kind", "calls", "seconds", "GFLOP/s", "share", "peak"
        );
        let mut rows: Vec<_> = by_what.into_iter().collect();
        rows.sort_by(|x, y| y.1 .0.total_cmp(&x.1 .0));
        for (k, (s, f, c)) in rows {
            let gflops = f as f64 / s.max(1e-12) / 1e9;
            let row_peak = match (peak_bf16, peak_int8) {
                (Some(p), _) if k.ends_with(" bf16") => Some(p),
                (_, Some(p)) if k.ends_with(" int8") => Some(p),
                _ => peak,
            };
            let pct = match row_peak {
                Some(p) if f > 0 => format!("{:>6.0}%", 100.0 * gflops / p),
                _ => format!("{:>7}", "-"),
            };
            println!(
                "{k:<34} {c:>6} {s:>9.3} {gflops:>9.1} {:>6.1}% {pct}",
                100.0 * s / total.max(1e-12)
            );
        }
        println!("\nslowest kernels:");
        let mut st = steps.clone();
        st.sort_by(|x, y| y.seconds.total_cmp(&x.seconds));
        for s in st.iter().take(12) {
            println!(
                "  {:<10} {:<40} {:>8.3} s {:>7.1} GFLOP/s",
                s.kernel,
                s.what,
                s.seconds,
                s.flops as f64 / s.seconds.max(1e-12) / 1e9
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
