//! Where a bundle's kernels run: the seam between the [`Engine`](crate::exec::Engine) and the
//! hardware. Today there is one device, the CPU, whose kernels are the bundle's `kernels.so`
//! functions run over their tiles by the thread pool of [`crate::pool`].
//!
//! **A CUDA device goes here**, as a second variant of [`Device`]: it would hold a context and
//! a stream, own the arena and the constant blobs in device memory (the engine's host arena then
//! only stages inputs and outputs), and launch the bundle's GPU kernels (PTX or cubin named by
//! the manifest's steps) with one block per tile in [`Device::launch`]. The bundle format,
//! verification and the C ABI stay as they are; only a target naming the GPU and a loader for
//! its kernel file are new.

use crate::pool::{KernelFn, Pool};

/// A device that runs a bundle's kernels.
pub enum Device {
    /// The host CPU: kernels from `kernels.so`, tiles spread over a thread pool.
    Cpu(Pool),
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

    /// The device's name in reports (`cpu`).
    pub fn name(&self) -> &'static str {
        match self {
            Device::Cpu(_) => "cpu",
        }
    }

    /// Threads (CPU) that run the tiles of one kernel call.
    pub fn threads(&self) -> usize {
        match self {
            Device::Cpu(pool) => pool.threads(),
        }
    }

    /// Runs kernel `f` over tiles `0..tiles` on arena `a` and blobs `w`, `i`, and returns when
    /// all tiles are done.
    ///
    /// # Safety
    /// `f` must be a kernel compiled for exactly this arena and these blobs (see
    /// [`Pool::run`]).
    pub(crate) unsafe fn launch(
        &mut self,
        f: KernelFn,
        a: *mut f32,
        w: *const f32,
        i: *const i32,
        tiles: usize,
    ) {
        match self {
            // SAFETY: forwarded from the caller.
            Device::Cpu(pool) => unsafe { pool.run(f, a, w, i, tiles) },
        }
    }
}
