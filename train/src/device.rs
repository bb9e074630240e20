//! The device seam of GPU training: what [`super::device_exec::DeviceExecutor`] needs from a
//! device that holds a step's values and runs the CUDA training kernels
//! (`e2enc_codegen::cuda::train`) on them — load the kernels, allocate zeroed device memory,
//! copy in and out, launch kernel `k` with its three pointer arguments, wait — as the
//! [`Device`] trait, in stream order: every call is ordered after the previous ones, as on one
//! CUDA stream.
//!
//! [`Emulated`] is the implementation every machine has: device memory is host memory, a
//! launch runs the kernel's thread blocks through the host emulation
//! (`e2enc_runtime::emulate`) on the thread pool. It is how the executor's device side (the
//! arena, the operand tables, the live-kernel lists, the order of copies and launches) is tested
//! without a GPU; a driver-API implementation for NVIDIA GPUs is the other side of this seam.
//!
//! Device addresses are `u64` ([`DevPtr`]); [`Emulated`] checks every copy against its
//! allocations, so a wrong address is an error, not a stray write.

use std::path::Path;

use e2enc_codegen::train::TrainKernel;
use e2enc_runtime::emulate::Emulation;
use e2enc_runtime::format::Step;
use e2enc_runtime::pool::{KernelFn, Pool};

use crate::TrainError;

/// A device address.
pub type DevPtr = u64;

/// A device that runs training kernels (see the module doc).
pub trait Device {
    /// One line for logs and errors.
    fn describe(&self) -> String;

    /// Loads the kernels of a training graph: `source` (CUDA text) and their descriptions, in
    /// the order [`Device::launch`] numbers them.
    fn load(&mut self, source: &str, kernels: &[TrainKernel]) -> Result<(), TrainError>;

    /// `bytes` of zeroed device memory (at least 8-byte aligned; CUDA's are 256), held until
    /// the device is dropped.
    fn alloc(&mut self, bytes: usize, what: &str) -> Result<DevPtr, TrainError>;

    /// Bytes of device memory [`Device::alloc`] has given out so far (all of it held).
    fn allocated_bytes(&self) -> usize;

    /// Copies `src` to device address `dst`.
    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), TrainError>;

    /// Copies device memory at `src` into `dst` (complete when this returns).
    fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<(), TrainError>;

    /// Launches kernel `k` with `(A, W, I)` = `args`.
    fn launch(&mut self, k: usize, args: [DevPtr; 3]) -> Result<(), TrainError>;

    /// Waits for everything issued so far.
    fn synchronize(&mut self) -> Result<(), TrainError>;

    /// For collectives issued on the device's own stream (NCCL): makes its CUDA context current
    /// on the calling thread and returns the stream (`CUstream` as an integer). `None` for a
    /// device that is not a CUDA GPU (the host emulation).
    fn cuda_stream(&mut self) -> Result<Option<u64>, TrainError> {
        Ok(None)
    }

    /// For collectives that run beside the launches that follow (NCCL's sums of the gradients
    /// a backward pass has finished, while it goes on): a second CUDA stream whose work starts
    /// after everything issued so far, its context current on the calling thread. `None` for a
    /// device that is not a CUDA GPU.
    fn side_stream(&mut self) -> Result<Option<u64>, TrainError> {
        Ok(None)
    }

    /// Orders everything issued from here on after everything issued so far on
    /// [`Device::side_stream`] (nothing to do when it was never asked for).
    fn join_side(&mut self) -> Result<(), TrainError> {
        Ok(())
    }

    /// Times every launch from here on (`on`), or stops: each launch's device time is kept
    /// until [`Device::launch_times`] (on a GPU two CUDA events around it, on the emulation
    /// the wall time of the synchronous launch). By default a device does not time launches.
    fn time_launches(&mut self, on: bool) -> Result<(), TrainError> {
        let _ = on;
        Ok(())
    }

    /// Seconds of each launch timed since the last call, with its kernel index, in launch
    /// order (waits for them to finish).
    fn launch_times(&mut self) -> Result<Vec<(usize, f64)>, TrainError> {
        Ok(Vec::new())
    }
}

fn err(msg: impl Into<String>) -> TrainError {
    TrainError::Device(msg.into())
}

/// The host emulation of training kernels (CUDA `source`, `kernels` with their launches), the
/// threads of every block ordered by `seed`.
pub(crate) fn emulation(
    source: &str,
    kernels: &[TrainKernel],
    seed: u64,
) -> Result<Emulation, e2enc_runtime::RuntimeError> {
    let steps: Vec<Step> = kernels
        .iter()
        .map(|k| Step {
            kernel: k.name.clone(),
            tiles: k.tiles,
            first_tile: 0,
            flops: k.work,
            what: String::new(),
            launch: k.launch.clone(),
        })
        .collect();
    let emu = Emulation::build(Path::new("(training kernels)"), source, &steps)?;
    emu.set_seed(seed);
    Ok(emu)
}

/// The host emulation as a device (see the module doc).
pub struct Emulated {
    // Field order: the pool and the kernel pointers go before the emulation library.
    pool: Pool,
    kernels: Vec<(KernelFn, usize, String)>,
    emu: Option<Emulation>,
    seed: u64,
    /// TF32 without its rounding ([`Emulated::exact_tf32`]).
    exact_mma: bool,
    /// Allocations, in 256-byte blocks of `u64` (8-byte aligned).
    mem: Vec<Box<[[u64; 32]]>>,
    /// The launches timed since [`Device::launch_times`], when timing.
    times: Option<Vec<(usize, f64)>>,
}

impl Emulated {
    /// An emulated device running blocks on `threads` threads; `seed` orders the emulated
    /// threads of every block (results must not depend on it).
    pub fn new(threads: usize, seed: u64) -> Emulated {
        Emulated {
            pool: Pool::new(threads.max(1)),
            kernels: Vec::new(),
            emu: None,
            seed,
            exact_mma: false,
            mem: Vec::new(),
            times: None,
        }
    }

    /// For tests: TF32 tensor-core kernels compute with unrounded operands
    /// (`e2enc_runtime::emulate::Emulation::set_exact_mma`), so they equal the f32 kernels up
    /// to the order of their sums.
    pub fn exact_tf32(mut self) -> Emulated {
        self.exact_mma = true;
        self
    }

    /// The allocation holding `[p, p + len)`, as (block, byte offset), or an error.
    fn find(&self, p: DevPtr, len: usize, what: &str) -> Result<(usize, usize), TrainError> {
        for (k, b) in self.mem.iter().enumerate() {
            let start = b.as_ptr() as u64;
            let bytes = (b.len() * 256) as u64;
            if p >= start && p - start <= bytes && (len as u64) <= bytes - (p - start) {
                return Ok((k, (p - start) as usize));
            }
        }
        Err(err(format!(
            "{what} of {len} bytes at device address {p:#x}: outside every allocation"
        )))
    }
}

impl Device for Emulated {
    fn describe(&self) -> String {
        "the host emulation of a CUDA GPU (e2enc_runtime::emulate)".into()
    }

    fn allocated_bytes(&self) -> usize {
        self.mem.iter().map(|b| b.len() * 256).sum()
    }

    fn load(&mut self, source: &str, kernels: &[TrainKernel]) -> Result<(), TrainError> {
        // Drop the old kernels before the library they live in.
        self.kernels.clear();
        let emu = emulation(source, kernels, self.seed).map_err(|e| err(e.to_string()))?;
        self.kernels = emu
            .kernels
            .iter()
            .zip(kernels)
            .map(|(&f, k)| (f, k.tiles, k.name.clone()))
            .collect();
        self.emu = Some(emu);
        Ok(())
    }

    fn alloc(&mut self, bytes: usize, what: &str) -> Result<DevPtr, TrainError> {
        let blocks = bytes.div_ceil(256).max(1);
        let mut v = Vec::new();
        v.try_reserve_exact(blocks).map_err(|_| {
            err(format!(
                "cannot allocate {what} ({:.2} GiB) on the emulated device",
                bytes as f64 / (1u64 << 30) as f64
            ))
        })?;
        v.resize(blocks, [0u64; 32]);
        let b = v.into_boxed_slice();
        let p = b.as_ptr() as u64;
        self.mem.push(b);
        Ok(p)
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), TrainError> {
        let (k, off) = self.find(dst, src.len(), "a copy to the device")?;
        let block = &mut self.mem[k];
        // SAFETY: `[off, off + len)` lies inside this allocation (checked by `find`), which is
        // plain memory of u64 blocks that any bytes may fill.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                block.as_mut_ptr().cast::<u8>().add(off),
                src.len(),
            )
        };
        Ok(())
    }

    fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<(), TrainError> {
        let (k, off) = self.find(src, dst.len(), "a copy from the device")?;
        let block = &self.mem[k];
        // SAFETY: as in `upload`, the range lies inside the allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(
                block.as_ptr().cast::<u8>().add(off),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    fn launch(&mut self, k: usize, args: [DevPtr; 3]) -> Result<(), TrainError> {
        let (f, tiles, name) = self
            .kernels
            .get(k)
            .ok_or_else(|| err(format!("no kernel {k} is loaded")))?;
        // Per launch: another device in this process may share the library (and its flag).
        if let Some(e) = &self.emu {
            e.set_exact_mma(self.exact_mma);
        }
        let t0 = std::time::Instant::now();
        // SAFETY: the executor passes addresses inside this device's allocations laid out as
        // the kernel was generated for (its output, its operand table, its live list); the
        // emulated blocks write only the output.
        unsafe {
            self.pool.run(
                *f,
                args[0] as usize as *mut f32,
                args[1] as usize as *const f32,
                args[2] as usize as *const i32,
                0,
                *tiles,
            )
        };
        if let Some(e) = self.emu.as_ref().and_then(Emulation::take_error) {
            return Err(err(format!("kernel {name} on the host emulation: {e}")));
        }
        if let Some(t) = &mut self.times {
            t.push((k, t0.elapsed().as_secs_f64()));
        }
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), TrainError> {
        Ok(())
    }

    fn time_launches(&mut self, on: bool) -> Result<(), TrainError> {
        self.times = on.then(|| self.times.take().unwrap_or_default());
        Ok(())
    }

    fn launch_times(&mut self) -> Result<Vec<(usize, f64)>, TrainError> {
        Ok(self.times.as_mut().map(std::mem::take).unwrap_or_default())
    }
}

/// The NVIDIA GPU `ordinal` as a training device for `target`'s kernels.
#[cfg(not(feature = "cuda"))]
pub fn gpu(
    ordinal: usize,
    target: e2enc_codegen::target::Target,
) -> Result<Box<dyn Device>, TrainError> {
    let _ = (ordinal, target);
    Err(err(
        "this build of e2enc has no CUDA support: rebuild it with `--features cuda` (the \
         default), or train on the CPU, or check the GPU path with --emulate",
    ))
}

/// The NVIDIA GPU `ordinal` as a training device for `target`'s kernels: opened through the
/// driver API (`e2enc_runtime::cuda::GpuSession`), the kernels compiled by NVRTC for the GPU's
/// own SM when they are loaded, and their ptxas report checked (no spills, resources within
/// the SM's limits) before anything runs.
#[cfg(feature = "cuda")]
pub fn gpu(
    ordinal: usize,
    target: e2enc_codegen::target::Target,
) -> Result<Box<dyn Device>, TrainError> {
    let s = e2enc_runtime::cuda::GpuSession::open(ordinal).map_err(|e| err(e.to_string()))?;
    let want = target.sm().unwrap_or(0);
    if s.sm() / 10 < want / 10 {
        return Err(err(format!(
            "{} is older than the kernels' target {target}: pass --target cuda-sm80 for an \
             Ampere GPU",
            s.describe()
        )));
    }
    Ok(Box::new(Gpu { s }))
}

/// An NVIDIA GPU (see [`gpu`]).
#[cfg(feature = "cuda")]
struct Gpu {
    s: e2enc_runtime::cuda::GpuSession,
}

#[cfg(feature = "cuda")]
impl Device for Gpu {
    fn describe(&self) -> String {
        self.s.describe()
    }

    fn load(&mut self, source: &str, kernels: &[TrainKernel]) -> Result<(), TrainError> {
        use e2enc_codegen::cuda::nvrtc;
        let nv = nvrtc::load().map_err(|e| err(format!("GPU training needs NVRTC: {e}")))?;
        let sm = self.s.sm();
        let c = nv
            .compile_cached(source, sm, None)
            .map_err(|e| err(format!("NVRTC (sm_{sm}): {e}")))?;
        let launches: Vec<(String, e2enc_runtime::format::Launch)> = kernels
            .iter()
            .map(|k| {
                k.launch
                    .clone()
                    .map(|l| (k.name.clone(), l))
                    .ok_or_else(|| err(format!("kernel `{}` has no launch", k.name)))
            })
            .collect::<Result<_, _>>()?;
        nvrtc::check_resources(&c.resources, &launches, sm).map_err(|e| {
            err(format!(
                "the training kernels do not fit {}: {e}",
                self.s.describe()
            ))
        })?;
        self.s
            .load(&c.cubin, &launches)
            .map_err(|e| err(e.to_string()))
    }

    fn alloc(&mut self, bytes: usize, what: &str) -> Result<DevPtr, TrainError> {
        self.s.alloc(bytes, what).map_err(|e| err(e.to_string()))
    }

    fn allocated_bytes(&self) -> usize {
        self.s.allocated_bytes()
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), TrainError> {
        self.s.upload(dst, src).map_err(|e| err(e.to_string()))
    }

    fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<(), TrainError> {
        self.s.download(src, dst).map_err(|e| err(e.to_string()))
    }

    fn launch(&mut self, k: usize, args: [DevPtr; 3]) -> Result<(), TrainError> {
        self.s.launch(k, args).map_err(|e| err(e.to_string()))
    }

    fn synchronize(&mut self) -> Result<(), TrainError> {
        self.s.synchronize().map_err(|e| err(e.to_string()))
    }

    fn cuda_stream(&mut self) -> Result<Option<u64>, TrainError> {
        self.s
            .current_stream()
            .map(Some)
            .map_err(|e| err(e.to_string()))
    }

    fn side_stream(&mut self) -> Result<Option<u64>, TrainError> {
        self.s.fork().map(Some).map_err(|e| err(e.to_string()))
    }

    fn join_side(&mut self) -> Result<(), TrainError> {
        self.s.join().map_err(|e| err(e.to_string()))
    }

    fn time_launches(&mut self, on: bool) -> Result<(), TrainError> {
        self.s.time_launches(on).map_err(|e| err(e.to_string()))
    }

    fn launch_times(&mut self) -> Result<Vec<(usize, f64)>, TrainError> {
        self.s.launch_times().map_err(|e| err(e.to_string()))
    }
}
