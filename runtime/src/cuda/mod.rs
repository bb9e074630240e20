//! The CUDA device: runs a CUDA bundle's kernels on an NVIDIA GPU through the driver API.
//!
//! [`CudaDevice`] (cargo feature `cuda`) owns everything the GPU holds for one bundle: a
//! retained primary context, one non-blocking stream, the loaded module (`kernels.cubin`, or
//! `kernels.ptx` JIT-compiled by the driver on a newer GPU) and its functions, the activation
//! arena and the constant blobs `W` and `I` in device memory (uploaded once), the CUDA graph the
//! launches are captured into, and the events that time them. The engine's host arena only
//! stages inputs and outputs: [`CudaDevice::execute`] copies the input ranges in, launches every
//! step in manifest order (each kernel `NAME(float *A, const float *W, const int *I)` with its
//! offsets baked in), and copies the output ranges back. It is shaped so for three reasons:
//! the driver library is loaded at run time (`cudarc`'s `dynamic-loading`), so a build with the
//! feature still runs on hosts without a GPU and nothing touches `libcuda` until a CUDA device
//! is asked for; every check a user can fail (driver present, device, driver version,
//! architecture, free memory) comes before any allocation and ends in a [`RuntimeError::Device`]
//! naming the fix, never a panic (cudarc panics when the library or a symbol is missing, so both
//! are checked first); and the decisions themselves are plain functions of numbers
//! ([`choose_image`], [`check_driver`], [`check_memory`]), compiled with or without the feature
//! and unit-tested on machines that have no GPU.

use crate::target::Target;
use crate::RuntimeError;

/// The message when no CUDA driver library can be loaded.
pub const NO_DRIVER: &str = "no CUDA driver found (libcuda.so.1): this host has no NVIDIA GPU \
    driver; run the bundle on a GPU machine, check it here with `--emulate`, or compile for a \
    CPU target (`--target native`)";

/// The message of a build without the `cuda` feature.
pub const NOT_BUILT: &str = "this build of e2enc has no CUDA support: rebuild it with \
    `--features cuda` (e.g. `cargo build --release --features cuda`), or run the bundle with \
    `--emulate`, or compile for a CPU target (`--target native`)";

/// Which kernel file of a bundle a GPU loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// `kernels.cubin`: the GPU has the bundle's major architecture and at least its minor.
    Cubin,
    /// `kernels.ptx`, JIT-compiled by the driver: the GPU is of a newer major architecture.
    Ptx,
}

/// A driver API version (`cuDriverGetVersion` form, 12090) as `12.9`.
pub fn version_text(v: u32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The kernel file a GPU `gpu` of compute capability `cc` (major, minor) loads for a bundle of
/// `target` built for `sm` (90: `sm_90`), or why it cannot run it: a CUBIN runs on its major
/// architecture from its minor version up, a GPU of a newer major compiles the PTX, an older
/// GPU cannot run the bundle.
pub fn choose_image(gpu: &str, cc: (u32, u32), target: &str, sm: u32) -> Result<Image, String> {
    let want = (sm / 10, sm % 10);
    if cc.0 > want.0 {
        return Ok(Image::Ptx);
    }
    if cc.0 == want.0 && cc.1 >= want.1 {
        return Ok(Image::Cubin);
    }
    let have = cc.0 * 10 + cc.1;
    let fix =
        match Target::CUDA
            .iter()
            .filter_map(|t| t.sm().map(|s| (s, *t)))
            .filter(|&(s, _)| s <= have)
            .max_by_key(|&(s, _)| s)
        {
            Some((_, t)) => format!("recompile the model for this GPU (`--target {t}`)"),
            None => format!(
            "e2enc's CUDA targets need sm_{} or newer: run on a newer GPU, or compile for a CPU \
             target (`--target native`)",
            Target::CUDA.iter().filter_map(|t| t.sm()).min().unwrap_or(80)
        ),
        };
    Err(format!(
        "the GPU {gpu} has compute capability {}.{} (sm_{have}), older than the bundle's target \
         {target} (sm_{sm}), whose kernels it cannot run: {fix}",
        cc.0, cc.1
    ))
}

/// Whether a driver of API version `have` loads kernels that need `need` (both in the
/// `cuDriverGetVersion` form); `nvrtc` is the NVRTC that compiled them.
pub fn check_driver(have: u32, need: u32, nvrtc: &str) -> Result<(), String> {
    if have >= need {
        return Ok(());
    }
    Err(format!(
        "the CUDA driver here supports CUDA {} (cuDriverGetVersion {have}); the bundle's kernels \
         (compiled by NVRTC {nvrtc}) need CUDA {} ({need}) or newer: update the NVIDIA driver, \
         or recompile the bundle with an older NVRTC",
        version_text(have),
        version_text(need)
    ))
}

/// Device memory kept free besides the arena and the blobs: the module's code, the launches'
/// local memory and the driver's own use.
pub const RESERVE_BYTES: u64 = 256 << 20;

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Whether `free` bytes of device memory (of `total`) hold an arena of `arena` bytes and
/// constants of `consts` bytes (plus [`RESERVE_BYTES`]).
pub fn check_memory(
    gpu: &str,
    arena: u64,
    consts: u64,
    free: u64,
    total: u64,
) -> Result<(), String> {
    let need = arena.saturating_add(consts).saturating_add(RESERVE_BYTES);
    if need <= free {
        return Ok(());
    }
    Err(format!(
        "the bundle does not fit on the GPU {gpu}: its activation arena needs {:.2} GiB and its \
         constants {:.2} GiB, but only {:.2} GiB of the GPU's {:.2} GiB are free: stop other \
         programs on the GPU (`nvidia-smi`), or recompile with a smaller --patch or --batch",
        gib(arena),
        gib(consts),
        gib(free),
        gib(total)
    ))
}

/// Errors of the CUDA device.
pub(crate) fn device_error(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Device { msg: msg.into() }
}

#[cfg(feature = "cuda")]
pub use driver::CudaDevice;
#[cfg(feature = "cuda")]
pub use session::GpuSession;

#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "cuda")]
mod session;

/// The refusal of a CPU bundle by the CUDA device.
pub(crate) fn cpu_bundle_on_gpu(b: &crate::bundle::Bundle) -> RuntimeError {
    device_error(format!(
        "bundle {} holds CPU kernels (target {}), which a GPU cannot run: run it on the CPU \
         (`--device cpu`), or compile the model for a CUDA target (`--target cuda-sm90`, \
         `--target cuda-sm80`)",
        b.dir.display(),
        b.manifest.target.as_deref().unwrap_or("?")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cubin_runs_on_its_major_from_its_minor_up_and_newer_majors_take_the_ptx() {
        let ok = |cc, sm| choose_image("GPU", cc, "cuda-sm90", sm);
        assert_eq!(ok((9, 0), 90), Ok(Image::Cubin));
        assert_eq!(ok((8, 0), 80), Ok(Image::Cubin));
        assert_eq!(ok((8, 6), 80), Ok(Image::Cubin));
        assert_eq!(ok((8, 9), 80), Ok(Image::Cubin));
        assert_eq!(ok((9, 0), 80), Ok(Image::Ptx));
        assert_eq!(ok((10, 0), 90), Ok(Image::Ptx));
        assert_eq!(ok((12, 0), 90), Ok(Image::Ptx));
        assert!(ok((8, 0), 86).is_err());
    }

    #[test]
    fn an_older_gpu_is_refused_naming_it_and_the_fix() {
        let e = choose_image("NVIDIA A100 (cuda:0)", (8, 0), "cuda-sm90", 90).unwrap_err();
        for s in [
            "NVIDIA A100",
            "8.0",
            "sm_80",
            "cuda-sm90",
            "sm_90",
            "--target cuda-sm80",
        ] {
            assert!(e.contains(s), "{s}: {e}");
        }
        let e = choose_image("Tesla V100 (cuda:0)", (7, 0), "cuda-sm80", 80).unwrap_err();
        assert!(e.contains("7.0") && e.contains("sm_80 or newer"), "{e}");
        assert!(
            e.contains("--target native") && !e.contains("--target cuda"),
            "{e}"
        );
    }

    #[test]
    fn the_driver_must_be_as_new_as_the_nvrtc_that_compiled_the_kernels() {
        assert_eq!(version_text(12090), "12.9");
        assert_eq!(version_text(13000), "13.0");
        assert_eq!(version_text(12040), "12.4");
        assert!(check_driver(12090, 12090, "12.9").is_ok());
        assert!(check_driver(13000, 12090, "12.9").is_ok());
        let e = check_driver(12040, 12090, "12.9").unwrap_err();
        for s in [
            "12.4",
            "12040",
            "12.9",
            "12090",
            "NVRTC 12.9",
            "update the NVIDIA driver",
        ] {
            assert!(e.contains(s), "{s}: {e}");
        }
        assert!(e.contains("older NVRTC"), "{e}");
    }

    #[test]
    fn the_memory_check_names_the_arena_and_what_is_free() {
        let gib = 1u64 << 30;
        assert!(check_memory("G", 10 * gib, gib, 140 * gib, 141 * gib).is_ok());
        let e = check_memory(
            "NVIDIA H200 (cuda:0)",
            150 * gib,
            gib / 2,
            139 * gib,
            141 * gib,
        )
        .unwrap_err();
        for s in [
            "NVIDIA H200",
            "150.00 GiB",
            "0.50 GiB",
            "139.00 GiB",
            "141.00 GiB",
            "--patch",
        ] {
            assert!(e.contains(s), "{s}: {e}");
        }
        // The reserve counts: exactly the free memory is not enough.
        assert!(check_memory("G", 10 * gib, 0, 10 * gib, 80 * gib).is_err());
        // Saturating, not overflowing, on absurd sizes.
        assert!(check_memory("G", u64::MAX, u64::MAX, 80 * gib, 80 * gib).is_err());
    }
}
