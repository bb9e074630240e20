//! Running a loaded bundle: one zeroed, 64-byte aligned arena reused across calls, inputs copied
//! into their padded views (whole planes, so the zero-padding invariant holds), every step run on
//! the pool over all its tiles, outputs copied out of their views.

use std::collections::BTreeMap;
use std::time::Instant;

use e2enc_codegen::artifact::Port;
use e2enc_codegen::layout::View;
use e2enc_ir::Tensor;

use crate::bundle::Bundle;
use crate::pool::Pool;
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

/// A bundle ready to run, with its arena and threads.
pub struct Engine {
    pub bundle: Bundle,
    arena: Aligned<f32>,
    w: Aligned<f32>,
    i: Aligned<i32>,
    pool: Pool,
}

fn shape5(s: &[usize]) -> [usize; 5] {
    match s.len() {
        5 => [s[0], s[1], s[2], s[3], s[4]],
        4 => [s[0], 1, s[1], s[2], s[3]],
        _ => [1, 1, 1, 1, 1],
    }
}

impl Engine {
    /// Prepares `bundle` to run on `threads` threads (0: all available cores).
    pub fn new(mut bundle: Bundle, threads: usize) -> Engine {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        // The blobs move into aligned storage (the bundle keeps empty vectors): one copy only.
        let w = Aligned::from_slice(&std::mem::take(&mut bundle.w));
        let i = Aligned::from_slice(&std::mem::take(&mut bundle.i));
        Engine {
            arena: Aligned::zeroed(bundle.manifest.arena_elems.max(1)),
            w,
            i,
            pool: Pool::new(threads),
            bundle,
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Bytes of the activation arena.
    pub fn arena_bytes(&self) -> usize {
        self.bundle.manifest.arena_elems * 4
    }

    /// Runs the bundle on `inputs` (by port name) and returns every output (copied out of the
    /// arena; [`Engine::execute`] + [`Engine::output`] read them in place instead).
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        self.run_inner(inputs, None)?;
        self.read_outputs()
    }

    /// [`Engine::run`], also timing every step.
    pub fn run_profiled(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<(BTreeMap<String, Tensor>, Vec<StepTime>), RuntimeError> {
        let mut times = Vec::new();
        self.run_inner(inputs, Some(&mut times))?;
        Ok((self.read_outputs()?, times))
    }

    /// Runs the bundle on `inputs` and leaves the outputs in the arena, where
    /// [`Engine::output`] reads them without a copy (until the next run).
    pub fn execute(&mut self, inputs: &BTreeMap<String, Tensor>) -> Result<(), RuntimeError> {
        self.run_inner(inputs, None)
    }

    /// The output `name` of the last run, in place in the arena.
    pub fn output(&self, name: &str) -> Result<OutputRef<'_>, RuntimeError> {
        let port = self
            .bundle
            .manifest
            .outputs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| RuntimeError::Input(format!("the bundle has no output `{name}`")))?;
        Ok(OutputRef {
            arena: self.arena.as_slice(),
            port,
        })
    }

    fn read_outputs(&self) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        let mut out = BTreeMap::new();
        for p in &self.bundle.manifest.outputs {
            out.insert(p.name.clone(), read_port(self.arena.as_slice(), p)?);
        }
        Ok(out)
    }

    fn run_inner(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        mut times: Option<&mut Vec<StepTime>>,
    ) -> Result<(), RuntimeError> {
        let m = &self.bundle.manifest;
        for name in inputs.keys() {
            if !m.inputs.iter().any(|p| &p.name == name) {
                return Err(RuntimeError::Input(format!(
                    "the bundle has no input `{name}`"
                )));
            }
        }
        for p in &m.inputs {
            let t = inputs
                .get(&p.name)
                .ok_or_else(|| RuntimeError::Input(format!("input `{}` is missing", p.name)))?;
            if t.shape() != p.shape.as_slice() {
                return Err(RuntimeError::Input(format!(
                    "input `{}` has shape {:?}, the bundle was compiled for {:?}",
                    p.name,
                    t.shape(),
                    p.shape
                )));
            }
            let v = t
                .as_f32()
                .ok_or_else(|| RuntimeError::Input(format!("input `{}` must be f32", p.name)))?;
            write_view(self.arena.as_mut_slice(), &p.view, v);
        }
        let a = self.arena.as_mut_slice().as_mut_ptr();
        let (w, i) = (self.w.as_slice().as_ptr(), self.i.as_slice().as_ptr());
        for (s, f) in m.steps.iter().zip(&self.bundle.kernels) {
            let t0 = Instant::now();
            // SAFETY: the kernels were verified and compiled for exactly this arena size and these
            // blobs (checked at load); tiles write disjoint memory.
            unsafe { self.pool.run(*f, a, w, i, s.tiles) };
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

/// One output of the last run, read in place from the engine's arena (the arena's padded
/// layout: one row of `W` values at a time).
pub struct OutputRef<'a> {
    arena: &'a [f32],
    port: &'a Port,
}

impl OutputRef<'_> {
    /// The output's shape (`[N, C, D, H, W]`, or `[N, D, H, W]` for labels).
    pub fn shape(&self) -> &[usize] {
        &self.port.shape
    }

    /// Row `(n, c, z, y)` of an f32 output: its `W` values.
    pub fn row(&self, n: usize, c: usize, z: usize, y: usize) -> Result<&[f32], RuntimeError> {
        if self.port.dtype != "f32" {
            return Err(RuntimeError::Input(format!(
                "output `{}` holds {}, not f32",
                self.port.name, self.port.dtype
            )));
        }
        let [pn, pc, pd, ph, pw] = shape5(&self.port.shape);
        if n >= pn || c >= pc || z >= pd || y >= ph {
            return Err(RuntimeError::Input(format!(
                "row ({n}, {c}, {z}, {y}) is outside output `{}` of shape {:?}",
                self.port.name, self.port.shape
            )));
        }
        let at = self.port.view.at(n, c, z, y as isize, 0);
        Ok(&self.arena[at..at + pw])
    }

    /// Copies an f32 output, dense `[N, C, D, H, W]`, into `dst` (exactly its element count).
    pub fn copy_to(&self, dst: &mut [f32]) -> Result<(), RuntimeError> {
        let [n, c, d, h, w] = shape5(&self.port.shape);
        if dst.len() != n * c * d * h * w {
            return Err(RuntimeError::Input(format!(
                "output `{}` has {} values, the destination {}",
                self.port.name,
                n * c * d * h * w,
                dst.len()
            )));
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

    /// The output as a dense tensor (a copy).
    pub fn to_tensor(&self) -> Result<Tensor, RuntimeError> {
        read_port(self.arena, self.port)
    }
}

/// Writes `v` (dense `[n, c, d, h, w]`) into `view`, whole planes with zero padding.
fn write_view(arena: &mut [f32], view: &View, v: &[f32]) {
    let [n, c, d, h, w] = view.shape;
    for ni in 0..n {
        for ci in 0..c {
            for z in 0..d {
                let start = view.at(ni, ci, z, -1, -(e2enc_codegen::layout::PAD_LEFT as isize));
                let plane = &mut arena[start..start + view.d_stride];
                plane.fill(0.0);
                for y in 0..h {
                    let src = &v[(((ni * c + ci) * d + z) * h + y) * w..][..w];
                    let row = (y + 1) * view.row + e2enc_codegen::layout::PAD_LEFT;
                    plane[row..row + w].copy_from_slice(src);
                }
            }
        }
    }
}

fn read_port(arena: &[f32], p: &Port) -> Result<Tensor, RuntimeError> {
    let view = &p.view;
    let [n, c, d, h, w] = shape5(&p.shape);
    let mut v = Vec::with_capacity(n * c * d * h * w);
    for ni in 0..n {
        for ci in 0..c {
            for z in 0..d {
                for y in 0..h {
                    let at = view.at(ni, ci, z, y as isize, 0);
                    v.extend_from_slice(&arena[at..at + w]);
                }
            }
        }
    }
    let t = if p.dtype == "i32" {
        Tensor::from_i32(
            p.shape.clone(),
            v.iter().map(|x| x.to_bits() as i32).collect(),
        )
    } else {
        Tensor::from_f32(p.shape.clone(), v)
    };
    t.map_err(RuntimeError::Ir)
}
