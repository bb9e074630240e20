//! The bundle format: `manifest.json` and the files it names, with checksums.
//!
//! A bundle is a folder holding `manifest.json`, `weights.safetensors` (the constant blobs the
//! kernels read: tensors `W` f32 and `I` i32), and its kernels: `kernels.c` and `kernels.so` for
//! a CPU target ([`FILES`]), or for a CUDA target `kernels.cu`, the NVRTC-compiled
//! `kernels.cubin` for the target's SM version and `kernels.ptx`, a fallback for newer GPUs
//! ([`CUDA_FILES`]; the manifest's [`CudaInfo`] and every step's [`Launch`] describe them). The manifest records
//! the format version, the model config, the optimized graph (IR text), input and output shapes
//! and views, the arena plan, the kernel steps, the compiler and flags, the CPU features the code
//! needs, and the sha256 of every file. `manifest.sig` signs the exact bytes of the manifest, so
//! the whole bundle ([`crate::sign`]). Loaders verify the signature and every checksum before
//! loading any code.
//!
//! The format is defined here, on the side that reads it ([`crate::bundle`]); codegen writes it
//! (`e2enc_codegen::artifact` re-exports this module, and its memory plan's [`Buffer`]s are the
//! manifest's).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layout::View;

pub const FORMAT: &str = "e2enc-bundle";
pub const VERSION: u32 = 1;
/// The files of a CPU bundle besides the manifest.
pub const FILES: [&str; 3] = ["kernels.c", "kernels.so", "weights.safetensors"];

/// The files of a CUDA bundle besides the manifest.
pub const CUDA_FILES: [&str; 4] = [
    "kernels.cu",
    "kernels.cubin",
    "kernels.ptx",
    "weights.safetensors",
];

/// The files a bundle with (`cuda`) or without CUDA kernels has besides the manifest.
pub fn files_of(cuda: bool) -> &'static [&'static str] {
    if cuda {
        &CUDA_FILES
    } else {
        &FILES
    }
}

/// The kernel source file, which carries the plan digest ([`plan_digest`]).
pub fn source_file(cuda: bool) -> &'static str {
    if cuda {
        "kernels.cu"
    } else {
        "kernels.c"
    }
}

/// A named tensor at the bundle's interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    pub shape: Vec<usize>,
    /// `f32` or `i32`.
    pub dtype: String,
    pub view: View,
}

/// One kernel call over all its tiles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub kernel: String,
    pub tiles: usize,
    /// The first tile this step runs (it runs `first_tile .. first_tile + tiles`): a kernel run
    /// in several steps, a group of tiles each (the lagged convs of the memory plan, whose
    /// output overwrites their input plane by plane, need the barrier between groups).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_tile: usize,
    pub flops: u64,
    pub what: String,
    /// How a CUDA kernel is launched; absent for C kernels (the thread pool runs their tiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// The launch of one CUDA kernel: `grid` blocks of `block` threads (x, y, z), with
/// `shared_bytes` of dynamic shared memory. `sync`: the kernel uses `__syncthreads` or
/// warp-collective operations, so its host emulation must run a block's threads phase by phase
/// (a kernel without runs each thread to its end in turn).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Launch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub sync: bool,
}

impl Launch {
    /// Threads per block.
    pub fn threads(&self) -> u64 {
        self.block.iter().map(|&b| u64::from(b)).product()
    }

    /// Blocks in the grid.
    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&b| u64::from(b)).product()
    }
}

/// What a CUDA bundle's kernels were built for and with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CudaInfo {
    /// Streaming-multiprocessor version of `kernels.cubin` (80: `sm_80`).
    pub sm: u32,
    /// The NVRTC that compiled the CUBIN and PTX (`12.9`).
    pub nvrtc: String,
    /// Oldest CUDA driver API version (`cuDriverGetVersion`, e.g. 12090 for 12.9) that loads the
    /// CUBIN and PTX.
    pub min_driver: u32,
    /// Arithmetic of the kernels (`f32`).
    pub precision: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compiler {
    pub command: String,
    pub version: String,
    pub flags: Vec<String>,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The model.json configuration the bundle was compiled from.
    pub model: serde_json::Value,
    /// The optimized graph in the IR text form.
    pub graph: String,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub arena_elems: usize,
    pub buffers: Vec<Buffer>,
    pub steps: Vec<Step>,
    /// Lengths of the constant blobs (`W` f32, `I` i32).
    pub consts_f32: usize,
    pub consts_i32: usize,
    pub compiler: Compiler,
    /// The target the kernels were generated for (`x86-avx2`, `x86-avx512`, `aarch64-neon`,
    /// `portable`; absent in bundles from before targets, which were x86).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// CPU features the kernels need (`std::arch` names, e.g. `avx2`, `fma`).
    pub cpu_features: Vec<String>,
    /// The convolutions' arithmetic of a CPU bundle compiled with `--precision` other than f32
    /// (`bf16`); absent for f32 (CUDA bundles name theirs in `cuda`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// The GPU build of a CUDA bundle (absent for CPU targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda: Option<CudaInfo>,
    /// Dense and executed MACs of the compiled graph, for reports.
    pub dense_macs: u64,
    pub executed_macs: u64,
    /// sha256 (hex) of every file of the bundle but the manifest.
    pub files: BTreeMap<String, String>,
}

/// One region of the arena.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    /// What it holds (a node's label, `scratch`, ...).
    pub what: String,
    pub offset: usize,
    pub elems: usize,
    /// First and last step (inclusive) it is alive in; step `usize::MAX` means the end.
    pub first: usize,
    pub last: usize,
    /// Sub-regions with their own lifetimes (the channel slices of a concat written in place,
    /// each alive from its producer on), relative to `offset`; empty means the whole buffer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<Piece>,
}

/// A part of a buffer alive for fewer steps than the whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub offset: usize,
    pub elems: usize,
    pub first: usize,
    pub last: usize,
}

impl Buffer {
    /// The pieces of this buffer in absolute arena offsets (saturating at `usize::MAX`: a
    /// manifest's numbers can be anything, and fuzzing found the overflow).
    pub fn abs_pieces(&self) -> Vec<Piece> {
        if self.pieces.is_empty() {
            return vec![Piece {
                offset: self.offset,
                elems: self.elems,
                first: self.first,
                last: self.last,
            }];
        }
        self.pieces
            .iter()
            .map(|p| Piece {
                offset: self.offset.saturating_add(p.offset),
                ..p.clone()
            })
            .collect()
    }
}

/// sha256 of a byte string, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Most bytes of `manifest.json` (its graph text is the largest part: well under 1 MiB for the
/// released network).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Most bytes of `manifest.sig` and of key files (a few lines each).
pub const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// The bytes of the regular file `path`, at most `limit` of them: a FIFO would block and
/// `/dev/zero` never ends, so anything but a regular file (after symlinks) is refused before it
/// is opened, and so is a file over `limit`. A missing file is an error of kind `NotFound`.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let file = std::fs::File::open(path)?;
    let too_big = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("more than {limit} bytes, far larger than such a file can be"),
        )
    };
    if file.metadata()?.len() > limit {
        return Err(too_big());
    }
    let mut out = Vec::new();
    file.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(out)
}

/// sha256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(sha256_hex(&std::fs::read(path)?))
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// A manifest file name must be a plain name inside the bundle.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.')
}

/// The digest of everything in a manifest the runtime trusts when it runs the kernels (arena
/// size, kernel names and tile counts, port views, blob sizes, CPU features; for CUDA bundles
/// also the launches and the GPU build). The kernel source (`kernels.c`, `kernels.cu`) ends with
/// `/* e2enc-plan: DIGEST */`, so a manifest edited apart from its kernels is refused.
pub fn plan_digest(m: &Manifest) -> String {
    let plan = serde_json::json!({
        "arena_elems": m.arena_elems,
        "steps": m.steps.iter().map(|s| match s.first_tile {
            0 => serde_json::json!([s.kernel, s.tiles]),
            f => serde_json::json!([s.kernel, s.tiles, f]),
        }).collect::<Vec<_>>(),
        "inputs": m.inputs,
        "outputs": m.outputs,
        "consts": [m.consts_f32, m.consts_i32],
        "cpu_features": m.cpu_features,
    });
    // Bundles from before targets hash exactly as they did.
    let mut plan = match &m.target {
        Some(t) => {
            let mut p = plan;
            p["target"] = serde_json::json!(t);
            p
        }
        None => plan,
    };
    if let Some(c) = &m.cuda {
        plan["cuda"] = serde_json::json!(c);
        plan["launches"] = serde_json::json!(m.steps.iter().map(|s| &s.launch).collect::<Vec<_>>());
    }
    sha256_hex(plan.to_string().as_bytes())
}
