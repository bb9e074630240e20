//! The driver-API half of the CUDA device (cargo feature `cuda`): [`CudaDevice`] opens a GPU for
//! one bundle after the checks of the parent module, loads its module, owns its device memory,
//! stream and graph, and runs it. Kept apart from the decisions (`super`), which are plain
//! functions of numbers compiled and tested without the feature.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ops::Range;
use std::ptr::null_mut;

use cudarc::driver::sys;

use super::{check_driver, check_memory, choose_image, device_error, version_text, Image};
use crate::bundle::{Bundle, Code};
use crate::RuntimeError;

type Res<T> = Result<T, RuntimeError>;

/// Driver functions the device calls, checked present before the first call (cudarc panics
/// on a missing symbol). The first five exist in every driver.
pub(super) const BASIC_SYMBOLS: [&str; 5] = [
    "cuInit",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDriverGetVersion",
    "cuGetErrorString",
];
pub(super) const SYMBOLS: [&str; 35] = [
    "cuGetErrorName",
    "cuDeviceGetName",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxSetCurrent",
    "cuMemGetInfo_v2",
    "cuStreamCreate",
    "cuStreamDestroy_v2",
    "cuStreamSynchronize",
    "cuModuleLoadDataEx",
    "cuModuleGetFunction",
    "cuModuleUnload",
    "cuFuncSetAttribute",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemsetD8_v2",
    "cuMemcpyHtoD_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuLaunchKernel",
    "cuStreamBeginCapture_v2",
    "cuStreamEndCapture",
    "cuGraphInstantiateWithFlags",
    "cuGraphLaunch",
    "cuGraphDestroy",
    "cuGraphExecDestroy",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventSynchronize",
    "cuEventElapsedTime",
    "cuEventDestroy_v2",
    "cuStreamWaitEvent",
    "cuCtxSynchronize",
    "cuDeviceTotalMem_v2",
];

/// The first of `names` the loaded driver library lacks.
pub(super) fn missing_symbol(names: &[&'static str]) -> Option<&'static str> {
    // SAFETY: called only after `is_culib_present`, so `culib` finds the library (it panics
    // only when none loads); looking a symbol up runs no code.
    let lib = unsafe { sys::culib() };
    names.iter().copied().find(|n| {
        // SAFETY: only the address is taken, never called through this type.
        unsafe { lib.get::<*const c_void>(n.as_bytes()) }.is_err()
    })
}

/// `NAME (description)` of a driver result.
pub(super) fn describe(r: sys::CUresult) -> String {
    let mut name: *const c_char = std::ptr::null();
    let mut text: *const c_char = std::ptr::null();
    // SAFETY: both out-pointers are valid; the driver returns static strings.
    unsafe {
        let n = if sys::cuGetErrorName(r, &mut name) == sys::CUresult::CUDA_SUCCESS
            && !name.is_null()
        {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        } else {
            format!("{r:?}")
        };
        if sys::cuGetErrorString(r, &mut text) == sys::CUresult::CUDA_SUCCESS && !text.is_null() {
            format!("{n} ({})", CStr::from_ptr(text).to_string_lossy())
        } else {
            n
        }
    }
}

/// `Ok` for success, else an error `what: NAME (description)`.
/// Grows `pool` to at least `n` timing events (`CU_EVENT_DEFAULT`), for the timed launches of
/// bundles and of training sessions; the owner destroys them.
///
/// # Safety
/// The pool's context is current.
pub(super) unsafe fn timing_events(pool: &mut Vec<sys::CUevent>, n: usize) -> Res<()> {
    while pool.len() < n {
        let mut e: sys::CUevent = null_mut();
        // SAFETY: a plain event creation in the current context.
        check(
            unsafe { sys::cuEventCreate(&mut e, sys::CUevent_flags::CU_EVENT_DEFAULT as c_uint) },
            || "cannot create a timing event".into(),
        )?;
        pool.push(e);
    }
    Ok(())
}

pub(super) fn check(r: sys::CUresult, what: impl FnOnce() -> String) -> Res<()> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(device_error(format!("{}: {}", what(), describe(r))))
    }
}

/// Finds GPU `ordinal`: checks that the driver library loads (`no_driver` is the error when it
/// does not) and has the basic symbols, initializes the driver and looks the GPU up, each
/// failure a [`RuntimeError::Device`] naming the fix. Returns the device and the driver's
/// version (`cuDriverGetVersion` form).
pub(super) fn find_gpu(ordinal: usize, no_driver: &str) -> Res<(sys::CUdevice, u32)> {
    // SAFETY: only tries to load the library.
    if !unsafe { sys::is_culib_present() } {
        return Err(device_error(no_driver));
    }
    if let Some(s) = missing_symbol(&BASIC_SYMBOLS) {
        return Err(device_error(format!(
            "the CUDA driver library (libcuda.so.1) lacks `{s}`: it is not a working \
             NVIDIA driver; reinstall the driver"
        )));
    }
    // SAFETY: plain driver API calls with valid out-pointers, cuInit first; the symbols are
    // present (checked above).
    unsafe {
        check(sys::cuInit(0), || {
            "the CUDA driver failed to initialize (cuInit; is the GPU visible: \
             `nvidia-smi`, CUDA_VISIBLE_DEVICES?)"
                .into()
        })?;
        let mut count: c_int = 0;
        check(sys::cuDeviceGetCount(&mut count), || {
            "cannot count the CUDA devices (cuDeviceGetCount)".into()
        })?;
        if count <= 0 {
            return Err(device_error(
                "the CUDA driver found no GPU (zero CUDA devices; check `nvidia-smi` \
                 and CUDA_VISIBLE_DEVICES)",
            ));
        }
        if ordinal >= count as usize {
            return Err(device_error(format!(
                "there is no CUDA device {ordinal}: this host has {count} (`cuda:0`{}); \
                 check CUDA_VISIBLE_DEVICES",
                if count > 1 {
                    format!(" to `cuda:{}`", count - 1)
                } else {
                    String::new()
                }
            )));
        }
        let mut dev: sys::CUdevice = 0;
        check(sys::cuDeviceGet(&mut dev, ordinal as c_int), || {
            format!("cannot open CUDA device {ordinal} (cuDeviceGet)")
        })?;
        let mut v: c_int = 0;
        check(sys::cuDriverGetVersion(&mut v), || {
            "cannot read the CUDA driver version (cuDriverGetVersion)".into()
        })?;
        Ok((dev, v.max(0) as u32))
    }
}

/// Every driver function e2enc calls is there (`driver`: the driver's version, for the message).
pub(super) fn require_symbols(driver: u32) -> Res<()> {
    match missing_symbol(&SYMBOLS) {
        Some(s) => Err(device_error(format!(
            "the CUDA driver (version {}) lacks `{s}`, which e2enc needs: update the NVIDIA \
             driver",
            version_text(driver)
        ))),
        None => Ok(()),
    }
}

/// Attribute `a` of device `dev` (GPU `ordinal`, for the message).
///
/// # Safety
/// The driver is initialized (`find_gpu`).
pub(super) unsafe fn attribute(
    dev: sys::CUdevice,
    ordinal: usize,
    a: sys::CUdevice_attribute,
) -> Res<u32> {
    let mut x: c_int = 0;
    // SAFETY: a valid out-pointer; the caller's contract.
    check(unsafe { sys::cuDeviceGetAttribute(&mut x, a, dev) }, || {
        format!("cannot read {a:?} of CUDA device {ordinal}")
    })?;
    Ok(x.max(0) as u32)
}

/// The name and the compute capability (major, minor) of device `dev` (GPU `ordinal`).
///
/// # Safety
/// The driver is initialized and has every symbol of [`SYMBOLS`].
pub(super) unsafe fn name_and_cc(dev: sys::CUdevice, ordinal: usize) -> Res<(String, (u32, u32))> {
    let mut buf = [0 as c_char; 256];
    // SAFETY: the buffer outlives the call, which writes at most its length - 1 bytes and a NUL.
    check(
        unsafe { sys::cuDeviceGetName(buf.as_mut_ptr(), buf.len() as c_int - 1, dev) },
        || format!("cannot read the name of CUDA device {ordinal}"),
    )?;
    // SAFETY: NUL-terminated by the driver (and by the zeroed last byte).
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    use sys::CUdevice_attribute::*;
    // SAFETY: the caller's contract.
    let cc = unsafe {
        (
            attribute(dev, ordinal, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attribute(dev, ordinal, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        )
    };
    Ok((name, cc))
}

/// How the launches of a run are issued.
enum Graph {
    /// Not captured yet.
    Untried,
    /// Captured and instantiated: one `cuGraphLaunch` per run.
    Ready(sys::CUgraphExec),
    /// Capture failed or is turned off (`E2ENC_CUDA_GRAPH=0`): plain launches.
    Off,
}

/// A bundle loaded on one GPU: context, stream, module, arena and blobs (see the module doc).
pub struct CudaDevice {
    ordinal: usize,
    name: String,
    cc: (u32, u32),
    driver: u32,
    image: Image,
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    module: sys::CUmodule,
    /// Per step: its function, launch and names (for errors).
    steps: Vec<StepFn>,
    arena: sys::CUdeviceptr,
    arena_elems: usize,
    w: sys::CUdeviceptr,
    i: sys::CUdeviceptr,
    graph: Graph,
    /// `steps + 1` timing events (made on the first profiled run).
    events: Vec<sys::CUevent>,
}

struct StepFn {
    f: sys::CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    kernel: String,
    what: String,
}

// SAFETY: the handles are the driver's, usable from any thread once the context is made
// current, which every method that uses them does first; `&mut self` serializes their use.
unsafe impl Send for CudaDevice {}

impl CudaDevice {
    /// Opens GPU `ordinal` for `bundle`: checks the driver, the device, the driver version,
    /// the architecture and the free memory (in this order, each failure a
    /// [`RuntimeError::Device`] naming the fix), then loads the module, looks up every
    /// step's kernel, allocates the zeroed arena and uploads the constant blobs.
    pub fn open(ordinal: usize, bundle: &Bundle) -> Res<CudaDevice> {
        let m = &bundle.manifest;
        let (cubin, ptx) = match &bundle.code {
            Code::Cuda { cubin, ptx, .. } => (cubin, ptx),
            Code::Cpu { .. } => return Err(super::cpu_bundle_on_gpu(bundle)),
            Code::Emulated(_) => {
                return Err(device_error(
                    "this bundle was loaded for the host emulation (--emulate); load it \
                     without --emulate to run it on a GPU",
                ))
            }
        };
        let Some(info) = &m.cuda else {
            return Err(super::cpu_bundle_on_gpu(bundle));
        };
        let target = m.target.as_deref().unwrap_or("?");
        let (dev, driver) = find_gpu(ordinal, super::NO_DRIVER)?;
        check_driver(driver, info.min_driver, &info.nvrtc).map_err(device_error)?;
        require_symbols(driver)?;
        // SAFETY (this block and the driver calls below): plain driver API calls with valid
        // out-pointers, after cuInit (`find_gpu`).
        unsafe {
            let (name, cc) = name_and_cc(dev, ordinal)?;
            let gpu = format!("{name} (cuda:{ordinal})");
            let image = choose_image(&gpu, cc, target, info.sm).map_err(device_error)?;
            let optin = attribute(
                dev,
                ordinal,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?;

            let mut ctx: sys::CUcontext = null_mut();
            check(sys::cuDevicePrimaryCtxRetain(&mut ctx, dev), || {
                format!("cannot create a context on {gpu} (cuDevicePrimaryCtxRetain)")
            })?;
            // From here on, `d`'s Drop releases whatever was made.
            let mut d = CudaDevice {
                ordinal,
                name,
                cc,
                driver,
                image,
                dev,
                ctx,
                stream: null_mut(),
                module: null_mut(),
                steps: Vec::with_capacity(m.steps.len()),
                arena: 0,
                arena_elems: m.arena_elems,
                w: 0,
                i: 0,
                graph: if std::env::var_os("E2ENC_CUDA_GRAPH").is_some_and(|v| v == "0") {
                    Graph::Off
                } else {
                    Graph::Untried
                },
                events: Vec::new(),
            };
            check(sys::cuCtxSetCurrent(ctx), || {
                format!("cannot use the context of {gpu} (cuCtxSetCurrent)")
            })?;
            let (mut free, mut total) = (0usize, 0usize);
            check(sys::cuMemGetInfo_v2(&mut free, &mut total), || {
                format!("cannot read the free memory of {gpu} (cuMemGetInfo)")
            })?;
            let arena_bytes = (m.arena_elems.max(1) as u64).saturating_mul(4);
            let const_bytes = ((m.consts_f32 + m.consts_i32) as u64).saturating_mul(4);
            check_memory(&gpu, arena_bytes, const_bytes, free as u64, total as u64)
                .map_err(device_error)?;

            check(
                sys::cuStreamCreate(
                    &mut d.stream,
                    sys::CUstream_flags::CU_STREAM_NON_BLOCKING as c_uint,
                ),
                || format!("cannot create a stream on {gpu}"),
            )?;
            d.module = load_module(image, cubin, ptx, &gpu, info.sm)?;
            for s in &m.steps {
                let Some(l) = &s.launch else {
                    return Err(device_error(format!(
                        "step `{}` ({}) has no launch",
                        s.kernel, s.what
                    )));
                };
                let cname = CString::new(s.kernel.as_str()).map_err(|_| {
                    device_error(format!("the kernel name {:?} holds a NUL byte", s.kernel))
                })?;
                let mut f: sys::CUfunction = null_mut();
                let r = sys::cuModuleGetFunction(&mut f, d.module, cname.as_ptr());
                if r == sys::CUresult::CUDA_ERROR_NOT_FOUND {
                    return Err(device_error(format!(
                        "the bundle's GPU code lacks the kernel `{}` ({}) its manifest names",
                        s.kernel, s.what
                    )));
                }
                check(r, || format!("cannot look up the kernel `{}`", s.kernel))?;
                if l.shared_bytes > 48 << 10 {
                    if l.shared_bytes > optin {
                        return Err(device_error(format!(
                            "the kernel `{}` ({}) needs {} bytes of shared memory per \
                             block, {gpu} allows {optin}: recompile for this GPU's target",
                            s.kernel, s.what, l.shared_bytes
                        )));
                    }
                    check(
                        sys::cuFuncSetAttribute(
                        f,
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        l.shared_bytes as c_int,
                    ),
                        || {
                            format!(
                                "cannot give the kernel `{}` {} bytes of shared memory",
                                s.kernel, l.shared_bytes
                            )
                        },
                    )?;
                }
                d.steps.push(StepFn {
                    f,
                    grid: l.grid,
                    block: l.block,
                    shared: l.shared_bytes,
                    kernel: s.kernel.clone(),
                    what: s.what.clone(),
                });
            }
            let alloc = |bytes: u64, what: &str| -> Res<sys::CUdeviceptr> {
                let mut p: sys::CUdeviceptr = 0;
                check(sys::cuMemAlloc_v2(&mut p, bytes.max(4) as usize), || {
                    format!(
                        "cannot allocate {what} ({:.2} GiB) on {gpu}",
                        super::gib(bytes)
                    )
                })?;
                Ok(p)
            };
            d.arena = alloc(arena_bytes, "the activation arena")?;
            check(sys::cuMemsetD8_v2(d.arena, 0, arena_bytes as usize), || {
                "cannot zero the activation arena".into()
            })?;
            d.w = alloc(bundle.w.len() as u64 * 4, "the constants W")?;
            d.i = alloc(bundle.i.len() as u64 * 4, "the constants I")?;
            if !bundle.w.is_empty() {
                check(
                    sys::cuMemcpyHtoD_v2(d.w, bundle.w.as_ptr().cast(), bundle.w.len() * 4),
                    || "cannot upload the constants W".into(),
                )?;
            }
            if !bundle.i.is_empty() {
                check(
                    sys::cuMemcpyHtoD_v2(d.i, bundle.i.as_ptr().cast(), bundle.i.len() * 4),
                    || "cannot upload the constants I".into(),
                )?;
            }
            check(sys::cuCtxSynchronize(), || {
                format!("preparing the bundle on {gpu} failed")
            })?;
            Ok(d)
        }
    }

    /// The GPU's name (`NVIDIA H200`).
    pub fn gpu_name(&self) -> &str {
        &self.name
    }

    /// The GPU's compute capability (major, minor).
    pub fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    /// The driver's CUDA version (`cuDriverGetVersion` form).
    pub fn driver_version(&self) -> u32 {
        self.driver
    }

    /// Which kernel file was loaded.
    pub fn image(&self) -> Image {
        self.image
    }

    /// Elements of the device arena (the bundle's `arena_elems`).
    pub fn arena_elems(&self) -> usize {
        self.arena_elems
    }

    /// Steps (kernel launches) per run.
    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// One line for reports: `cuda:0 NVIDIA H200 (sm_90, driver 13.0, kernels.cubin)`.
    pub fn describe(&self) -> String {
        format!(
            "cuda:{} {} (sm_{}{}, driver {}, {})",
            self.ordinal,
            self.name,
            self.cc.0,
            self.cc.1,
            version_text(self.driver),
            match self.image {
                Image::Cubin => "kernels.cubin".to_string(),
                Image::Ptx =>
                    "kernels.ptx JIT-compiled by the driver for this newer GPU".to_string(),
            }
        )
    }

    /// Runs the bundle once: copies `inputs` (ranges of `host`, the engine's arena) to the
    /// device arena, launches every step in order on the stream (a captured CUDA graph after
    /// the first run; with `profile`, plain launches timed by events, one time in seconds
    /// per step pushed to it), copies `outputs` back into `host` and waits for the GPU.
    pub fn execute(
        &mut self,
        host: &mut [f32],
        inputs: &[Range<usize>],
        outputs: &[Range<usize>],
        profile: Option<&mut Vec<f64>>,
    ) -> Res<()> {
        for r in inputs.iter().chain(outputs) {
            if r.start > r.end || r.end > host.len() || r.end > self.arena_elems.max(1) {
                return Err(device_error(format!(
                    "the range {r:?} lies outside the arena ({} elements on the GPU, {} on \
                     the host)",
                    self.arena_elems,
                    host.len()
                )));
            }
        }
        // SAFETY: the context, stream and pointers are this device's own (made in `open`);
        // the ranges were checked inside both arenas; the host slice outlives the stream
        // synchronization at the end of this block.
        unsafe {
            check(sys::cuCtxSetCurrent(self.ctx), || {
                "cannot use the GPU's context".into()
            })?;
            for r in inputs {
                if r.is_empty() {
                    continue;
                }
                check(
                    sys::cuMemcpyHtoDAsync_v2(
                        self.arena + (r.start * 4) as u64,
                        host[r.clone()].as_ptr().cast(),
                        r.len() * 4,
                        self.stream,
                    ),
                    || "copying an input to the GPU failed".into(),
                )?;
            }
            match profile {
                Some(times) => self.launch_timed(times)?,
                None => self.launch_fast()?,
            }
            for r in outputs {
                if r.is_empty() {
                    continue;
                }
                check(
                    sys::cuMemcpyDtoHAsync_v2(
                        host[r.clone()].as_mut_ptr().cast(),
                        self.arena + (r.start * 4) as u64,
                        r.len() * 4,
                        self.stream,
                    ),
                    || "copying an output from the GPU failed".into(),
                )?;
            }
            check(sys::cuStreamSynchronize(self.stream), || {
                "running the bundle on the GPU failed (a kernel faulted; find it with \
                 `compute-sanitizer`, or `e2enc bench --profile`, which names the step)"
                    .into()
            })
        }
    }

    /// Launches step `k` on the stream.
    ///
    /// # Safety
    /// The context is current; `k` is a step of this device.
    unsafe fn launch(&self, k: usize) -> Res<()> {
        let s = &self.steps[k];
        let mut args: [*mut c_void; 3] = [
            (&self.arena as *const sys::CUdeviceptr).cast_mut().cast(),
            (&self.w as *const sys::CUdeviceptr).cast_mut().cast(),
            (&self.i as *const sys::CUdeviceptr).cast_mut().cast(),
        ];
        // SAFETY: `args` points at the three device pointers of the kernels' signature
        // `(float *A, const float *W, const int *I)`, alive for the call (the driver copies
        // them at launch).
        let r = unsafe {
            sys::cuLaunchKernel(
                s.f,
                s.grid[0],
                s.grid[1],
                s.grid[2],
                s.block[0],
                s.block[1],
                s.block[2],
                s.shared,
                self.stream,
                args.as_mut_ptr(),
                null_mut(),
            )
        };
        check(r, || {
            format!(
                "launching step {k}, kernel `{}` ({}), grid {:?} block {:?} shared {} bytes, \
                 failed",
                s.kernel, s.what, s.grid, s.block, s.shared
            )
        })
    }

    /// Every step's launch, from a CUDA graph when one could be captured.
    ///
    /// # Safety
    /// The context is current.
    unsafe fn launch_fast(&mut self) -> Res<()> {
        if let Graph::Untried = self.graph {
            // SAFETY: forwarded.
            self.graph = match unsafe { self.capture() } {
                Some(exec) => Graph::Ready(exec),
                None => Graph::Off,
            };
        }
        match self.graph {
            // SAFETY: `exec` was instantiated from this device's launches.
            Graph::Ready(exec) => check(unsafe { sys::cuGraphLaunch(exec, self.stream) }, || {
                "launching the CUDA graph of the bundle's kernels failed".into()
            }),
            _ => {
                for k in 0..self.steps.len() {
                    // SAFETY: forwarded; `k` is a step.
                    unsafe { self.launch(k)? };
                }
                Ok(())
            }
        }
    }

    /// Captures every step's launch into an instantiated graph; `None` (and the stream back
    /// to normal) when anything fails, so the caller falls back to plain launches (whose
    /// errors name the step).
    ///
    /// # Safety
    /// The context is current.
    unsafe fn capture(&mut self) -> Option<sys::CUgraphExec> {
        // SAFETY: the stream is this device's; the capture is ended on every path.
        unsafe {
            if sys::cuStreamBeginCapture_v2(
                self.stream,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            ) != sys::CUresult::CUDA_SUCCESS
            {
                return None;
            }
            let launched = (0..self.steps.len()).all(|k| self.launch(k).is_ok());
            let mut graph: sys::CUgraph = null_mut();
            let ended = sys::cuStreamEndCapture(self.stream, &mut graph);
            if !launched || ended != sys::CUresult::CUDA_SUCCESS || graph.is_null() {
                if !graph.is_null() {
                    sys::cuGraphDestroy(graph);
                }
                return None;
            }
            let mut exec: sys::CUgraphExec = null_mut();
            let r = sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0);
            sys::cuGraphDestroy(graph);
            (r == sys::CUresult::CUDA_SUCCESS && !exec.is_null()).then_some(exec)
        }
    }

    /// Every step's launch between two events; pushes each step's seconds to `times`. A
    /// kernel that faults is named (its end event is the first whose wait fails).
    ///
    /// # Safety
    /// The context is current.
    unsafe fn launch_timed(&mut self, times: &mut Vec<f64>) -> Res<()> {
        // SAFETY (block): events are this device's, recorded on its stream.
        unsafe {
            timing_events(&mut self.events, self.steps.len() + 1)?;
            check(sys::cuEventRecord(self.events[0], self.stream), || {
                "cannot record a timing event".into()
            })?;
            for k in 0..self.steps.len() {
                self.launch(k)?;
                check(sys::cuEventRecord(self.events[k + 1], self.stream), || {
                    "cannot record a timing event".into()
                })?;
            }
            for k in 0..self.steps.len() {
                let s = &self.steps[k];
                check(sys::cuEventSynchronize(self.events[k + 1]), || {
                    format!(
                        "step {k}, kernel `{}` ({}), failed on the GPU",
                        s.kernel, s.what
                    )
                })?;
                let mut ms = 0f32;
                check(
                    sys::cuEventElapsedTime(&mut ms, self.events[k], self.events[k + 1]),
                    || "cannot read a timing event".into(),
                )?;
                times.push(f64::from(ms) / 1e3);
            }
            Ok(())
        }
    }
}

/// Loads the module: the CUBIN when `image` says so (the PTX if the CUBIN is refused), else
/// the PTX, JIT-compiled by the driver (its log in the error when that fails).
///
/// # Safety
/// A context is current.
unsafe fn load_module(
    image: Image,
    cubin: &[u8],
    ptx: &str,
    gpu: &str,
    sm: u32,
) -> Res<sys::CUmodule> {
    let mut cubin_err = None;
    if image == Image::Cubin && !cubin.is_empty() {
        let mut module: sys::CUmodule = null_mut();
        // SAFETY: a CUBIN image is read up to its own size (an ELF file, verified against
        // the manifest's checksum).
        let r = unsafe {
            sys::cuModuleLoadDataEx(
                &mut module,
                cubin.as_ptr().cast(),
                0,
                null_mut(),
                null_mut(),
            )
        };
        if r == sys::CUresult::CUDA_SUCCESS {
            return Ok(module);
        }
        cubin_err = Some(describe(r));
    }
    let src = CString::new(ptx)
        .map_err(|_| device_error("kernels.ptx holds a NUL byte: not PTX text"))?;
    if ptx.trim().is_empty() {
        return Err(device_error(format!(
            "cannot load the bundle's kernels on {gpu}: {}",
            cubin_err.unwrap_or_else(|| "the bundle has no kernels.ptx".into())
        )));
    }
    let mut log = vec![0u8; 16 << 10];
    let mut opts = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    let mut vals: [*mut c_void; 2] = [log.as_mut_ptr().cast(), (log.len() - 1) as *mut c_void];
    let mut module: sys::CUmodule = null_mut();
    // SAFETY: NUL-terminated PTX text; the log buffer outlives the call, its size one less
    // than its length so the log stays terminated.
    let r = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            src.as_ptr().cast(),
            2,
            opts.as_mut_ptr(),
            vals.as_mut_ptr(),
        )
    };
    if r == sys::CUresult::CUDA_SUCCESS {
        return Ok(module);
    }
    let log = CStr::from_bytes_until_nul(&log)
        .map(|c| c.to_string_lossy().trim().to_string())
        .unwrap_or_default();
    Err(device_error(format!(
        "cannot load the bundle's kernels on {gpu}: {}the driver's JIT compilation of \
         kernels.ptx (sm_{sm}) failed: {}{}",
        cubin_err
            .map(|e| format!("kernels.cubin was refused ({e}), and "))
            .unwrap_or_default(),
        describe(r),
        if log.is_empty() {
            String::new()
        } else {
            format!("\n{log}")
        }
    )))
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // SAFETY: every handle is this device's and released once; null ones were never
        // made. Errors are ignored: nothing can be done about them here.
        unsafe {
            if sys::cuCtxSetCurrent(self.ctx) == sys::CUresult::CUDA_SUCCESS {
                if !self.stream.is_null() {
                    sys::cuStreamSynchronize(self.stream);
                }
                if let Graph::Ready(exec) = self.graph {
                    sys::cuGraphExecDestroy(exec);
                }
                for e in self.events.drain(..) {
                    sys::cuEventDestroy_v2(e);
                }
                for p in [self.arena, self.w, self.i] {
                    if p != 0 {
                        sys::cuMemFree_v2(p);
                    }
                }
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
