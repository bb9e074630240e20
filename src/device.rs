//! Where a compiled bundle runs: the CPU or a CUDA GPU ([`DeviceArg`], parsed from `cpu`,
//! `cuda`, `cuda:N` by [`parse_device`]), and an engine on it ([`engine_on`]). Shared by the
//! command line's `--device` and the Python package's `device=`.

use e2enc_runtime::bundle::Bundle;
use e2enc_runtime::exec::Engine;
use e2enc_runtime::RuntimeError;

/// Where a compiled bundle runs (`--device` of `run`, `bench` and `segment`; `device=` in Python).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceArg {
    /// The CPU, with `--threads` threads.
    #[default]
    Cpu,
    /// CUDA GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceArg::Cpu => f.write_str("cpu"),
            DeviceArg::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Parses `--device`: `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse_device(s: &str) -> Result<DeviceArg, String> {
    match s {
        "cpu" => Ok(DeviceArg::Cpu),
        "cuda" => Ok(DeviceArg::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceArg::Cuda)
            .ok_or_else(|| {
                format!("`{s}` is not a device: cpu, cuda or cuda:N (N: the GPU number)")
            }),
    }
}

/// An engine for `bundle` on `device` (`threads` for the CPU); for a GPU, says which on stderr.
pub fn engine_on(
    device: DeviceArg,
    bundle: Bundle,
    threads: usize,
) -> Result<Engine, RuntimeError> {
    Ok(match device {
        DeviceArg::Cpu => Engine::try_new(bundle, threads)?,
        DeviceArg::Cuda(n) => {
            let e = Engine::cuda(bundle, n)?;
            eprintln!("device: {}", e.device().describe());
            e
        }
    })
}

/// Most worker threads a command accepts (`--threads`; `threads=` in Python): far more than any machine e2enc runs on
/// has cores, far fewer than would exhaust the process's thread limit.
pub const MAX_THREADS: usize = 1024;
