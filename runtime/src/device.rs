//! Where a bundle's kernels run: the seam between the [`Engine`](crate::exec::Engine) and the
//! hardware. Two devices:
//!
//! - the CPU ([`Device::Cpu`]), whose kernels are the bundle's `kernels.so` functions run over
//!   their tiles by the thread pool of [`crate::pool`], on the engine's host arena;
//! - with the cargo feature `cuda`, an NVIDIA GPU ([`Device::Cuda`], [`crate::cuda`]), which
//!   holds a context and a stream, owns the arena and the constant blobs in device memory (the
//!   engine's host arena then only stages inputs and outputs) and launches the bundle's CUDA
//!   kernels (`kernels.cubin`, or `kernels.ptx` on a newer GPU) with each step's grid and block.
//!
//! The bundle format, verification and the C ABI are the same for both; the engine hands the
//! CPU one kernel call at a time ([`Pool::run`]) and the GPU the whole run
//! (`CudaDevice::execute`).

use crate::pool::Pool;

/// A device that runs a bundle's kernels.
pub enum Device {
    /// The host CPU: kernels from `kernels.so`, tiles spread over a thread pool.
    Cpu(Pool),
    /// An NVIDIA GPU (cargo feature `cuda`): kernels from `kernels.cubin` / `kernels.ptx`.
    #[cfg(feature = "cuda")]
    Cuda(Box<crate::cuda::CudaDevice>),
}

impl Device {
    /// The CPU with `threads` threads (0: all available cores).
    pub fn cpu(threads: usize) -> Device {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Device::Cpu(Pool::new(threads))
    }

    /// The device's name in reports (`cpu`, `cuda`).
    pub fn name(&self) -> &'static str {
        match self {
            Device::Cpu(_) => "cpu",
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => "cuda",
        }
    }

    /// One line for reports: `cpu (8 threads)`, `cuda:0 NVIDIA H200 (sm_90, ...)`.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu(pool) => format!("cpu ({} threads)", pool.threads()),
            #[cfg(feature = "cuda")]
            Device::Cuda(gpu) => gpu.describe(),
        }
    }

    /// Threads (CPU) that run the tiles of one kernel call; 1 for a GPU (one host thread
    /// issues its launches).
    pub fn threads(&self) -> usize {
        match self {
            Device::Cpu(pool) => pool.threads(),
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => 1,
        }
    }
}
