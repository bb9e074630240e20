//! A plain GPU session for callers that manage their own device memory and launches (GPU
//! training, `e2enc_train::device`): one GPU's primary context, one non-blocking stream (and,
//! once asked for, a second one for work that runs beside the launches: [`GpuSession::fork`]), one
//! module of kernels with the CPU-style signature `NAME(float *A, const float *W, const int *I)`,
//! and the allocations it made, all released on drop. Copies are issued on the stream and waited
//! for, so they are ordered with the launches before and after them, and a host buffer is never
//! read after the call returns.
//!
//! The checks a user can fail (driver library, its symbols, a GPU with that number) come first
//! and end in a [`RuntimeError::Device`] naming the fix, as for bundles ([`super::CudaDevice`]).

use std::ffi::{c_uint, c_void, CString};
use std::ptr::null_mut;

use cudarc::driver::sys;

use super::driver::{check, describe, find_gpu, name_and_cc, require_symbols, timing_events};
use super::{device_error, version_text};
use crate::format::Launch;
use crate::RuntimeError;

type Res<T> = Result<T, RuntimeError>;

/// An open GPU (see the module doc).
pub struct GpuSession {
    ordinal: usize,
    name: String,
    cc: (u32, u32),
    driver: u32,
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    /// The side stream and its two events (fork, join), made by the first [`GpuSession::fork`].
    side: Option<(sys::CUstream, sys::CUevent, sys::CUevent)>,
    /// Launch timing ([`GpuSession::time_launches`]): the events made so far (two per timed
    /// launch, reused), and the kernels of the launches timed since the last
    /// [`GpuSession::launch_times`].
    timing: bool,
    events: Vec<sys::CUevent>,
    timed: Vec<usize>,
    module: sys::CUmodule,
    funcs: Vec<(sys::CUfunction, Launch, String)>,
    allocs: Vec<sys::CUdeviceptr>,
    /// Bytes of `allocs`.
    allocated: usize,
}

// SAFETY: the handles are the driver's, usable from any thread once the context is current,
// which every method makes it first; `&mut self` serializes their use.
unsafe impl Send for GpuSession {}

impl GpuSession {
    /// Opens GPU `ordinal`: checks the driver library and its symbols, that the GPU exists,
    /// then retains its primary context and makes a stream.
    pub fn open(ordinal: usize) -> Res<GpuSession> {
        let (dev, driver) = find_gpu(
            ordinal,
            "no CUDA driver found (libcuda.so.1): this host has no NVIDIA GPU driver; run on a \
             GPU machine, or on the CPU (`--device cpu`), or check the GPU path on this CPU's \
             host emulation (`--emulate`)",
        )?;
        require_symbols(driver)?;
        // SAFETY (this block): driver API calls with valid out-pointers, after cuInit
        // (`find_gpu`) and with every symbol present.
        unsafe {
            let (name, cc) = name_and_cc(dev, ordinal)?;
            let mut ctx: sys::CUcontext = null_mut();
            check(sys::cuDevicePrimaryCtxRetain(&mut ctx, dev), || {
                format!("cannot create a context on {name} (cuDevicePrimaryCtxRetain)")
            })?;
            // From here on, Drop releases what was made.
            let mut s = GpuSession {
                ordinal,
                name,
                cc,
                driver,
                dev,
                ctx,
                stream: null_mut(),
                side: None,
                timing: false,
                events: Vec::new(),
                timed: Vec::new(),
                module: null_mut(),
                funcs: Vec::new(),
                allocs: Vec::new(),
                allocated: 0,
            };
            check(sys::cuCtxSetCurrent(ctx), || {
                "cannot use the GPU's context".into()
            })?;
            check(
                sys::cuStreamCreate(
                    &mut s.stream,
                    sys::CUstream_flags::CU_STREAM_NON_BLOCKING as c_uint,
                ),
                || "cannot create a stream".into(),
            )?;
            Ok(s)
        }
    }

    /// The GPU's compute capability as an SM number (90 for 9.0).
    pub fn sm(&self) -> u32 {
        self.cc.0 * 10 + self.cc.1
    }

    /// One line: `cuda:0 NVIDIA H200 (sm_90, driver 13.0)`.
    pub fn describe(&self) -> String {
        format!(
            "cuda:{} {} (sm_{}, driver {})",
            self.ordinal,
            self.name,
            self.sm(),
            version_text(self.driver)
        )
    }

    /// Makes this session's context current on the calling thread and returns its stream
    /// (`CUstream` as an integer), for libraries that issue work on it (NCCL's collectives).
    pub fn current_stream(&self) -> Res<u64> {
        self.current()?;
        Ok(self.stream as usize as u64)
    }

    fn current(&self) -> Res<()> {
        // SAFETY: this session's context.
        check(unsafe { sys::cuCtxSetCurrent(self.ctx) }, || {
            "cannot use the GPU's context".into()
        })
    }

    /// Loads `cubin` (for this GPU's SM) and looks up `kernels` (name, launch), numbered in
    /// that order for [`GpuSession::launch`]. Replaces an earlier module.
    pub fn load(&mut self, cubin: &[u8], kernels: &[(String, Launch)]) -> Res<()> {
        self.current()?;
        // SAFETY: the old module's functions are dropped with it; the CUBIN is read up to its
        // own size (an ELF image NVRTC just made).
        unsafe {
            self.funcs.clear();
            if !self.module.is_null() {
                sys::cuModuleUnload(self.module);
                self.module = null_mut();
            }
            check(
                sys::cuModuleLoadDataEx(
                    &mut self.module,
                    cubin.as_ptr().cast(),
                    0,
                    null_mut(),
                    null_mut(),
                ),
                || format!("cannot load the training kernels on {}", self.describe()),
            )?;
            for (name, l) in kernels {
                let c = CString::new(name.as_str())
                    .map_err(|_| device_error(format!("kernel name {name:?} holds a NUL")))?;
                let mut f: sys::CUfunction = null_mut();
                check(
                    sys::cuModuleGetFunction(&mut f, self.module, c.as_ptr()),
                    || format!("the training kernels lack `{name}`"),
                )?;
                self.funcs.push((f, l.clone(), name.clone()));
            }
        }
        Ok(())
    }

    /// `bytes` of zeroed device memory, freed with the session.
    pub fn alloc(&mut self, bytes: usize, what: &str) -> Res<u64> {
        self.current()?;
        let mut p: sys::CUdeviceptr = 0;
        // SAFETY: a plain allocation and a memset of it on this session's stream.
        unsafe {
            check(sys::cuMemAlloc_v2(&mut p, bytes.max(4)), || {
                format!(
                    "cannot allocate {what} ({:.2} GiB) on {}: the GPU's memory is full (stop \
                     other programs on it, or train with --precision bf16, a smaller --patch or --batch)",
                    super::gib(bytes as u64),
                    self.describe()
                )
            })?;
            self.allocs.push(p);
            self.allocated += bytes.max(4);
            check(sys::cuMemsetD8_v2(p, 0, bytes.max(4)), || {
                format!("cannot zero {what}")
            })?;
            // The memset runs on the legacy stream, which the non-blocking stream does not
            // wait for: finish it before anything on the stream reads the memory.
            check(sys::cuCtxSynchronize(), || format!("cannot zero {what}"))?;
        }
        Ok(p)
    }

    /// Bytes of device memory [`GpuSession::alloc`] has given out (held until drop).
    pub fn allocated_bytes(&self) -> usize {
        self.allocated
    }

    /// Copies `src` to device address `dst`, ordered on the stream; returns once done.
    pub fn upload(&mut self, dst: u64, src: &[u8]) -> Res<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.current()?;
        // SAFETY: `src` stays borrowed until the stream has finished the copy (synchronized
        // before returning); `dst` is an address of this session's allocations.
        unsafe {
            check(
                sys::cuMemcpyHtoDAsync_v2(dst, src.as_ptr().cast(), src.len(), self.stream),
                || "copying to the GPU failed".into(),
            )?;
            check(sys::cuStreamSynchronize(self.stream), || {
                "copying to the GPU failed (or a kernel before it faulted)".into()
            })
        }
    }

    /// Copies device memory at `src` into `dst`, after everything issued before; returns once
    /// done.
    pub fn download(&mut self, src: u64, dst: &mut [u8]) -> Res<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.current()?;
        // SAFETY: as in `upload`, with the host buffer written.
        unsafe {
            check(
                sys::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr().cast(), src, dst.len(), self.stream),
                || "copying from the GPU failed".into(),
            )?;
            check(sys::cuStreamSynchronize(self.stream), || {
                "copying from the GPU failed (or a kernel before it faulted: find it with \
                 `compute-sanitizer`)"
                    .into()
            })
        }
    }

    /// Times every launch from here on with two events around it (`on`), or stops (the
    /// launches timed so far are kept for [`GpuSession::launch_times`]).
    pub fn time_launches(&mut self, on: bool) -> Res<()> {
        self.timing = on;
        Ok(())
    }

    /// Seconds of each launch timed since the last call, with its kernel index, in launch
    /// order: waits for the stream, then reads the events.
    pub fn launch_times(&mut self) -> Res<Vec<(usize, f64)>> {
        if self.timed.is_empty() {
            return Ok(Vec::new());
        }
        self.synchronize()?;
        let mut out = Vec::with_capacity(self.timed.len());
        for (i, &k) in self.timed.iter().enumerate() {
            let mut ms = 0f32;
            // SAFETY: both events were recorded on this session's stream, which has finished.
            check(
                unsafe {
                    sys::cuEventElapsedTime(&mut ms, self.events[2 * i], self.events[2 * i + 1])
                },
                || "cannot read a launch's time".into(),
            )?;
            out.push((k, f64::from(ms) * 1e-3));
        }
        self.timed.clear();
        Ok(out)
    }

    /// Records timing event `at` on the stream (made when the pool is short).
    fn record_timing_event(&mut self, at: usize) -> Res<()> {
        // SAFETY: events of this session's context (current: launches make it so), made here
        // and destroyed in Drop.
        unsafe {
            timing_events(&mut self.events, at + 1)?;
            check(sys::cuEventRecord(self.events[at], self.stream), || {
                "cannot record an event to time a launch".into()
            })
        }
    }

    /// Launches kernel `k` with `(A, W, I)` = `args` on the stream.
    pub fn launch(&mut self, k: usize, args: [u64; 3]) -> Res<()> {
        if k >= self.funcs.len() {
            return Err(device_error(format!("no kernel {k} is loaded")));
        }
        let timed_at = 2 * self.timed.len();
        if self.timing {
            self.record_timing_event(timed_at)?;
        }
        let (f, l, name) = &self.funcs[k];
        let mut a = args;
        let mut ptrs: [*mut c_void; 3] = [
            (&mut a[0] as *mut u64).cast(),
            (&mut a[1] as *mut u64).cast(),
            (&mut a[2] as *mut u64).cast(),
        ];
        // SAFETY: `ptrs` point at the three device pointers of the kernels' signature, alive
        // for the call (the driver copies them at launch).
        let r = unsafe {
            sys::cuLaunchKernel(
                *f,
                l.grid[0],
                l.grid[1],
                l.grid[2],
                l.block[0],
                l.block[1],
                l.block[2],
                l.shared_bytes,
                self.stream,
                ptrs.as_mut_ptr(),
                null_mut(),
            )
        };
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(device_error(format!(
                "launching `{name}` failed: {}",
                describe(r)
            )));
        }
        if self.timing {
            self.record_timing_event(timed_at + 1)?;
            self.timed.push(k);
        }
        Ok(())
    }

    /// A second stream whose work starts after everything issued on the stream so far and
    /// runs beside what is issued there later (an event recorded on the stream, waited for on
    /// the side stream), made current on this thread; for libraries that issue work on it
    /// (NCCL's sums of the gradients a backward pass has finished, while it goes on). Its
    /// work is ordered before the stream's again by [`GpuSession::join`].
    pub fn fork(&mut self) -> Res<u64> {
        self.current()?;
        // SAFETY (this block): driver calls on this session's context with valid out-pointers;
        // the handles made are kept in `self.side` and released in Drop.
        unsafe {
            if self.side.is_none() {
                let mut side: sys::CUstream = null_mut();
                check(
                    sys::cuStreamCreate(
                        &mut side,
                        sys::CUstream_flags::CU_STREAM_NON_BLOCKING as c_uint,
                    ),
                    || "cannot create a second stream".into(),
                )?;
                let mut ev = [null_mut(); 2];
                for e in &mut ev {
                    let r = sys::cuEventCreate(
                        e,
                        sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as c_uint,
                    );
                    if r != sys::CUresult::CUDA_SUCCESS {
                        for made in ev.iter().filter(|e| !e.is_null()) {
                            sys::cuEventDestroy_v2(*made);
                        }
                        sys::cuStreamDestroy_v2(side);
                        return Err(device_error(format!(
                            "cannot create an event: {}",
                            describe(r)
                        )));
                    }
                }
                self.side = Some((side, ev[0], ev[1]));
            }
            let (side, fork, _) = self.side.expect("made above");
            check(sys::cuEventRecord(fork, self.stream), || {
                "cannot record an event on the stream".into()
            })?;
            check(sys::cuStreamWaitEvent(side, fork, 0), || {
                "cannot order the second stream after the first".into()
            })?;
            Ok(side as usize as u64)
        }
    }

    /// Orders everything issued on the stream from here on after everything issued so far on
    /// the side stream of [`GpuSession::fork`] (nothing to do before the first fork).
    pub fn join(&mut self) -> Res<()> {
        let Some((side, _, join)) = self.side else {
            return Ok(());
        };
        self.current()?;
        // SAFETY: this session's streams and event.
        unsafe {
            check(sys::cuEventRecord(join, side), || {
                "cannot record an event on the second stream (or work on it failed)".into()
            })?;
            check(sys::cuStreamWaitEvent(self.stream, join, 0), || {
                "cannot order the stream after the second one".into()
            })
        }
    }

    /// Waits for everything issued on the stream.
    pub fn synchronize(&mut self) -> Res<()> {
        self.current()?;
        // SAFETY: this session's stream.
        check(unsafe { sys::cuStreamSynchronize(self.stream) }, || {
            "a training kernel failed on the GPU (find it with `compute-sanitizer`)".into()
        })
    }
}

impl Drop for GpuSession {
    fn drop(&mut self) {
        // SAFETY: every handle is this session's and released once; null ones were never
        // made. Errors are ignored: nothing can be done about them here.
        unsafe {
            if sys::cuCtxSetCurrent(self.ctx) == sys::CUresult::CUDA_SUCCESS {
                if !self.stream.is_null() {
                    sys::cuStreamSynchronize(self.stream);
                }
                for e in self.events.drain(..) {
                    sys::cuEventDestroy_v2(e);
                }
                if let Some((side, fork, join)) = self.side.take() {
                    sys::cuStreamSynchronize(side);
                    sys::cuEventDestroy_v2(fork);
                    sys::cuEventDestroy_v2(join);
                    sys::cuStreamDestroy_v2(side);
                }
                for p in self.allocs.drain(..) {
                    sys::cuMemFree_v2(p);
                }
                self.funcs.clear();
                if !self.module.is_null() {
                    sys::cuModuleUnload(self.module);
                }
                if !self.stream.is_null() {
                    sys::cuStreamDestroy_v2(self.stream);
                }
            }
            sys::cuDevicePrimaryCtxRelease_v2(self.dev);
        }
    }
}
