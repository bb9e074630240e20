//! Running a loaded bundle: one zeroed, 64-byte aligned arena reused across calls, inputs copied
//! into their padded views (whole planes, so the zero-padding invariant holds), every step run on
//! the [`Device`] over all its tiles, outputs read in place from their views. On a GPU
//! ([`Engine::cuda`]) the device holds the arena the kernels use; this host arena stages the
//! inputs (copied to the GPU before the run) and the outputs (copied back after it).
//!
//! The API is on slices: [`Engine::set_input`] for every input, [`Engine::execute`], then
//! [`Engine::output`] (row by row, or copied out). The memory plan reuses an input's memory once
//! it has been read, so inputs are set again before every `execute`.

use std::time::Instant;

use crate::bundle::{Bundle, Code};
use crate::device::Device;
use crate::format::Port;
use crate::layout::{View, PAD_LEFT};
use crate::RuntimeError;

/// A 64-byte aligned, zero-initialized buffer of `T`.
pub struct Aligned<T: Copy + Default> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    pub fn zeroed(len: usize) -> Aligned<T> {
        let extra = 64 / std::mem::size_of::<T>().max(1);
        let buf = vec![T::default(); len + extra];
        let addr = buf.as_ptr() as usize;
        let start = (addr.next_multiple_of(64) - addr) / std::mem::size_of::<T>().max(1);
        Aligned { buf, start, len }
    }

    /// [`Aligned::zeroed`], or `None` when the allocation fails (instead of aborting).
    pub fn try_zeroed(len: usize) -> Option<Aligned<T>> {
        let extra = 64 / std::mem::size_of::<T>().max(1);
        let mut buf = Vec::new();
        buf.try_reserve_exact(len.checked_add(extra)?).ok()?;
        buf.resize(len + extra, T::default());
        let addr = buf.as_ptr() as usize;
        let start = (addr.next_multiple_of(64) - addr) / std::mem::size_of::<T>().max(1);
        Some(Aligned { buf, start, len })
    }

    pub fn from_slice(v: &[T]) -> Aligned<T> {
        let mut a = Self::zeroed(v.len());
        a.as_mut_slice().copy_from_slice(v);
        a
    }

    pub fn as_slice(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Time spent in one step of a profiled run.
#[derive(Clone, Debug)]
pub struct StepTime {
    pub kernel: String,
    pub what: String,
    pub flops: u64,
    pub seconds: f64,
}

/// A bundle ready to run, with its arena and device.
pub struct Engine {
    pub bundle: Bundle,
    arena: Aligned<f32>,
    w: Aligned<f32>,
    i: Aligned<i32>,
    device: Device,
    /// Which inputs were set since the last run.
    set: Vec<bool>,
}

fn shape5(s: &[usize]) -> [usize; 5] {
    match s.len() {
        5 => [s[0], s[1], s[2], s[3], s[4]],
        4 => [s[0], 1, s[1], s[2], s[3]],
        _ => [1, 1, 1, 1, 1],
    }
}

/// Bytes of memory this machine can still give a process (`MemAvailable` of /proc/meminfo),
/// when known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

impl Engine {
    /// Prepares `bundle` to run on the CPU with `threads` threads (0: all available cores).
    /// Aborts when the arena cannot be allocated; [`Engine::try_new`] returns an error instead.
    pub fn new(bundle: Bundle, threads: usize) -> Engine {
        Engine::with_device(bundle, Device::cpu(threads))
    }

    /// [`Engine::new`], refusing (before allocating) an arena larger than the memory this machine
    /// has available, and an allocation that fails.
    pub fn try_new(bundle: Bundle, threads: usize) -> Result<Engine, RuntimeError> {
        if let Code::Cuda { .. } = bundle.code {
            return Err(cuda_on_cpu(&bundle));
        }
        let arena = host_arena(&bundle)?;
        Ok(Engine::with_device_arena(
            bundle,
            Device::cpu(threads),
            arena,
        ))
    }

    /// Prepares a CUDA bundle to run on GPU `ordinal` (cargo feature `cuda`; without it, an
    /// error saying so). The GPU is checked before anything is allocated (driver, device,
    /// driver version, architecture, free memory; see [`crate::cuda`]), then the bundle's
    /// kernels are loaded and its constants uploaded once. A CPU bundle is refused.
    pub fn cuda(bundle: Bundle, ordinal: usize) -> Result<Engine, RuntimeError> {
        if let Code::Cpu { .. } = bundle.code {
            return Err(crate::cuda::cpu_bundle_on_gpu(&bundle));
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ordinal;
            Err(RuntimeError::Device {
                msg: crate::cuda::NOT_BUILT.into(),
            })
        }
        #[cfg(feature = "cuda")]
        {
            let gpu = crate::cuda::CudaDevice::open(ordinal, &bundle)?;
            let arena = host_arena(&bundle)?;
            let mut bundle = bundle;
            // The blobs live on the GPU now: the host keeps none.
            bundle.w = Vec::new();
            bundle.i = Vec::new();
            Ok(Engine::with_device_arena(
                bundle,
                Device::Cuda(Box::new(gpu)),
                arena,
            ))
        }
    }

    /// Prepares `bundle` to run on `device`.
    pub fn with_device(bundle: Bundle, device: Device) -> Engine {
        let arena = Aligned::zeroed(bundle.manifest.arena_elems.max(1));
        Engine::with_device_arena(bundle, device, arena)
    }

    fn with_device_arena(mut bundle: Bundle, device: Device, arena: Aligned<f32>) -> Engine {
        // The blobs move into aligned storage (the bundle keeps empty vectors): one copy only.
        let w = Aligned::from_slice(&std::mem::take(&mut bundle.w));
        let i = Aligned::from_slice(&std::mem::take(&mut bundle.i));
        Engine {
            arena,
            w,
            i,
            device,
            set: vec![false; bundle.manifest.inputs.len()],
            bundle,
        }
    }

    pub fn threads(&self) -> usize {
        self.device.threads()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of the activation arena.
    pub fn arena_bytes(&self) -> usize {
        self.bundle.manifest.arena_elems * 4
    }

    /// The bundle's inputs (name, shape, dtype), in manifest order.
    pub fn inputs(&self) -> &[Port] {
        &self.bundle.manifest.inputs
    }

    /// The bundle's outputs, in manifest order.
    pub fn outputs(&self) -> &[Port] {
        &self.bundle.manifest.outputs
    }

    /// Copies input `name` (dense `[N, C, D, H, W]` f32, exactly its element count) into the
    /// arena for the next [`Engine::execute`].
    pub fn set_input(&mut self, name: &str, values: &[f32]) -> Result<(), RuntimeError> {
        let k = self
            .bundle
            .manifest
            .inputs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| RuntimeError::UnknownInput { name: name.into() })?;
        let p = &self.bundle.manifest.inputs[k];
        let want: usize = p.shape.iter().product();
        if values.len() != want {
            return Err(RuntimeError::LengthMismatch {
                name: name.into(),
                got: values.len(),
                want,
                shape: p.shape.clone(),
            });
        }
        write_view(self.arena.as_mut_slice(), &p.view, values);
        self.set[k] = true;
        Ok(())
    }

    /// Runs the bundle on the inputs set since the last run (all of them) and leaves the outputs
    /// in the arena, where [`Engine::output`] reads them (until the next run).
    pub fn execute(&mut self) -> Result<(), RuntimeError> {
        self.run_inner(None, None)
    }

    /// [`Engine::execute`], also timing every step.
    pub fn execute_profiled(&mut self) -> Result<Vec<StepTime>, RuntimeError> {
        let mut times = Vec::new();
        self.run_inner(Some(&mut times), None)?;
        Ok(times)
    }

    /// [`Engine::execute`] on the CPU, calling `observe(step, arena)` before each step runs
    /// (the arena as the earlier steps left it): how calibration reads what a kernel is about to
    /// read. Refused for a GPU device.
    pub fn execute_observed(&mut self, observe: &mut Observer<'_>) -> Result<(), RuntimeError> {
        if !matches!(self.device, Device::Cpu(_)) {
            return Err(RuntimeError::Device {
                msg: "observing the steps of a run needs the CPU device".into(),
            });
        }
        self.run_inner(None, Some(observe))
    }

    /// The output `name` of the last run, in place in the arena.
    pub fn output(&self, name: &str) -> Result<OutputRef<'_>, RuntimeError> {
        let port = self
            .bundle
            .manifest
            .outputs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| RuntimeError::UnknownOutput { name: name.into() })?;
        Ok(OutputRef {
            arena: self.arena.as_slice(),
            port,
        })
    }

    fn run_inner(
        &mut self,
        mut times: Option<&mut Vec<StepTime>>,
        mut observe: Option<&mut Observer<'_>>,
    ) -> Result<(), RuntimeError> {
        let m = &self.bundle.manifest;
        if let Some(k) = self.set.iter().position(|s| !s) {
            return Err(RuntimeError::MissingInput {
                name: m.inputs[k].name.clone(),
            });
        }
        // The plan may reuse input memory once read: every run needs its inputs set anew.
        self.set.fill(false);
        // One arm without the `cuda` feature.
        #[allow(clippy::infallible_destructuring_match)]
        let pool = match &mut self.device {
            Device::Cpu(pool) => pool,
            #[cfg(feature = "cuda")]
            Device::Cuda(gpu) => {
                // The device's kernels were loaded for its own bundle: this one must have its
                // plan (`with_device` could pair them otherwise).
                if gpu.arena_elems() != m.arena_elems || gpu.steps() != m.steps.len() {
                    return Err(RuntimeError::Device {
                        msg: format!(
                            "the GPU device was opened for another bundle than {}",
                            self.bundle.dir.display()
                        ),
                    });
                }
                let range = |p: &Port| p.view.offset..p.view.end();
                let ins: Vec<_> = m.inputs.iter().map(range).collect();
                let outs: Vec<_> = m.outputs.iter().map(range).collect();
                let mut secs = Vec::new();
                let profile = times.is_some().then_some(&mut secs);
                gpu.execute(self.arena.as_mut_slice(), &ins, &outs, profile)?;
                if let Some(ts) = times {
                    ts.extend(m.steps.iter().zip(secs).map(|(s, seconds)| StepTime {
                        kernel: s.kernel.clone(),
                        what: s.what.clone(),
                        flops: s.flops,
                        seconds,
                    }));
                }
                return Ok(());
            }
        };
        let (kernels, emulation) = match &self.bundle.code {
            Code::Cpu { kernels, .. } => (kernels, None),
            Code::Emulated(e) => (&e.kernels, Some(e)),
            Code::Cuda { .. } => return Err(cuda_on_cpu(&self.bundle)),
        };
        let (w, i) = (self.w.as_slice().as_ptr(), self.i.as_slice().as_ptr());
        for (k, (s, f)) in m.steps.iter().zip(kernels).enumerate() {
            if let Some(obs) = observe.as_deref_mut() {
                obs(k, self.arena.as_slice());
            }
            let a = self.arena.as_mut_slice().as_mut_ptr();
            let t0 = Instant::now();
            // SAFETY: the kernels were verified and compiled for exactly this arena size and these
            // blobs (checked at load); tiles write disjoint memory.
            unsafe { pool.run(*f, a, w, i, s.first_tile, s.tiles) };
            if let Some(msg) = emulation.and_then(|e| e.take_error()) {
                return Err(RuntimeError::Device {
                    msg: format!(
                        "bundle {}: the emulated step `{}` ({}) failed: {msg}",
                        self.bundle.dir.display(),
                        s.kernel,
                        s.what
                    ),
                });
            }
            if let Some(ts) = times.as_deref_mut() {
                ts.push(StepTime {
                    kernel: s.kernel.clone(),
                    what: s.what.clone(),
                    flops: s.flops,
                    seconds: t0.elapsed().as_secs_f64(),
                });
            }
        }
        Ok(())
    }
}

/// What [`Engine::execute_observed`] calls before each step: the step's index and the arena.
pub type Observer<'a> = dyn FnMut(usize, &[f32]) + 'a;

/// The zeroed host arena of `bundle`, refused (before allocating) when larger than the memory
/// this machine has available, and when the allocation fails.
fn host_arena(bundle: &Bundle) -> Result<Aligned<f32>, RuntimeError> {
    let elems = bundle.manifest.arena_elems.max(1);
    let need = (elems as u64).saturating_mul(4);
    let what = format!("bundle {}: the activation arena", bundle.dir.display());
    if let Some(have) = available_memory() {
        if need > have {
            return Err(RuntimeError::OutOfMemory {
                what,
                need,
                have: format!(
                    "this machine has {:.1} GiB available (recompile with a smaller --patch \
                     or --batch)",
                    have as f64 / (1u64 << 30) as f64
                ),
            });
        }
    }
    Aligned::try_zeroed(elems).ok_or_else(|| RuntimeError::OutOfMemory {
        what,
        need,
        have: "the allocation failed".into(),
    })
}

/// The refusal of a CUDA bundle by the CPU device.
fn cuda_on_cpu(b: &Bundle) -> RuntimeError {
    RuntimeError::Device {
        msg: format!(
            "bundle {} holds CUDA kernels (target {}), which the CPU cannot run: run it on a GPU, \
             or emulate its kernels on this CPU with `--emulate` (slow; for checking), or compile \
             the model for a CPU target (`--target native`)",
            b.dir.display(),
            b.manifest.target.as_deref().unwrap_or("?")
        ),
    }
}

/// One output of the last run, read in place from the engine's arena (the arena's padded
/// layout: one row of `W` values at a time).
pub struct OutputRef<'a> {
    arena: &'a [f32],
    port: &'a Port,
}

impl OutputRef<'_> {
    /// The output's name.
    pub fn name(&self) -> &str {
        &self.port.name
    }

    /// The output's shape (`[N, C, D, H, W]`, or `[N, D, H, W]` for labels).
    pub fn shape(&self) -> &[usize] {
        &self.port.shape
    }

    /// `f32`, or `i32` for labels (stored as the bits of the arena's floats).
    pub fn dtype(&self) -> &str {
        &self.port.dtype
    }

    /// Row `(n, c, z, y)` of an f32 output: its `W` values.
    pub fn row(&self, n: usize, c: usize, z: usize, y: usize) -> Result<&[f32], RuntimeError> {
        if self.port.dtype != "f32" {
            return Err(RuntimeError::NotF32 {
                name: self.port.name.clone(),
                dtype: self.port.dtype.clone(),
            });
        }
        let [pn, pc, pd, ph, pw] = shape5(&self.port.shape);
        if n >= pn || c >= pc || z >= pd || y >= ph {
            return Err(RuntimeError::RowOutside {
                name: self.port.name.clone(),
                row: [n, c, z, y],
                shape: self.port.shape.clone(),
            });
        }
        let at = self.port.view.at(n, c, z, y as isize, 0);
        Ok(&self.arena[at..at + pw])
    }

    /// Copies an f32 output, dense `[N, C, D, H, W]`, into `dst` (exactly its element count).
    pub fn copy_to(&self, dst: &mut [f32]) -> Result<(), RuntimeError> {
        let [n, c, d, h, w] = shape5(&self.port.shape);
        if dst.len() != n * c * d * h * w {
            return Err(RuntimeError::DestinationLength {
                name: self.port.name.clone(),
                want: n * c * d * h * w,
                got: dst.len(),
            });
        }
        let mut rows = dst.chunks_exact_mut(w.max(1));
        for ni in 0..n {
            for ci in 0..c {
                for z in 0..d {
                    for y in 0..h {
                        let src = self.row(ni, ci, z, y)?;
                        rows.next().expect("sized above").copy_from_slice(src);
                    }
                }
            }
        }
        Ok(())
    }

    /// The output's values, dense (a copy; an `i32` output's values are the bits of these
    /// floats: `x.to_bits() as i32`).
    pub fn to_vec(&self) -> Vec<f32> {
        let view = &self.port.view;
        let [n, c, d, h, w] = shape5(&self.port.shape);
        let mut v = Vec::with_capacity(n * c * d * h * w);
        for ni in 0..n {
            for ci in 0..c {
                for z in 0..d {
                    for y in 0..h {
                        let at = view.at(ni, ci, z, y as isize, 0);
                        v.extend_from_slice(&self.arena[at..at + w]);
                    }
                }
            }
        }
        v
    }
}

/// Writes `v` (dense `[n, c, d, h, w]`) into `view`, whole planes with zero padding.
fn write_view(arena: &mut [f32], view: &View, v: &[f32]) {
    let [n, c, d, h, w] = view.shape;
    for ni in 0..n {
        for ci in 0..c {
            for z in 0..d {
                let start = view.at(ni, ci, z, -1, -(PAD_LEFT as isize));
                let plane = &mut arena[start..start + view.d_stride];
                plane.fill(0.0);
                for y in 0..h {
                    let src = &v[(((ni * c + ci) * d + z) * h + y) * w..][..w];
                    let row = (y + 1) * view.row + PAD_LEFT;
                    plane[row..row + w].copy_from_slice(src);
                }
            }
        }
    }
}
