//! The generated-C backend of the training executor: at construction the training graph's
//! kernels are generated (`e2enc_codegen::train`), compiled with the bundles' driver and flags
//! into a private temporary folder, and loaded; each call then runs one node's kernel over its
//! tiles on the persistent thread pool of [`e2enc_runtime::pool`].
//!
//! Operands are passed as an array of pointers to the values' dense f32 buffers, the live-kernel
//! CSR of a DSFF conv is rebuilt from the step's masks at every call (a few microseconds), and
//! every buffer is checked against the node's static shape before the call, so a kernel never
//! reads or writes out of bounds. Setting `E2ENC_KEEP_TRAIN_C=<file>` keeps the generated C
//! source for inspection. The pool hands out tiles dynamically, but a tile's result
//! does not depend on which thread runs it, so steps are bit-identical for any thread count.
//!
//! A CUDA target's kernels (`e2enc_codegen::cuda::train`) run the same way on the host
//! emulation ([`CKernels::build_emulated`]: the CUDA text compiled as C++ against
//! `e2enc_runtime::emulate`'s shim, thread blocks as tiles): slow, and how GPU training kernels
//! are checked against the C kernels and the interpreter on machines without a GPU.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use e2enc_codegen::compile::{run_cc, CodegenError};
use e2enc_codegen::precision::Precision;
use e2enc_codegen::target::Target;
use e2enc_codegen::train::TrainKernel;
use e2enc_ir::autodiff::TrainGraph;
use e2enc_ir::{NodeId, Tensor};

use crate::TrainError;
use e2enc_runtime::pool::{KernelFn, Pool};

/// The compiled kernels of one training graph.
pub struct CKernels {
    // Field order: the pool and the function pointers go before the library is unloaded.
    pool: Pool,
    target: Target,
    kernels: HashMap<NodeId, (TrainKernel, KernelFn, &'static str)>,
    /// Buffers of values dropped in earlier steps, by length: reused for outputs of the same
    /// length, so a step does not page-fault fresh memory for every value.
    spare: HashMap<usize, Vec<Vec<f32>>>,
    /// How many kernel outputs have each length: the most spare buffers of that length a step
    /// can use. Buffers the kernels did not allocate (the step's inputs, the loss gradients)
    /// are recycled too, so without this bound the pool would grow every step.
    spare_cap: HashMap<usize, usize>,
    /// Bytes in `spare`.
    spare_total: usize,
    /// The most bytes the spare buffers and the caller's live values may hold together (the
    /// executor's planned peak; unbounded until set).
    budget: usize,
    lib: Loaded,
}

/// What holds the kernels' code: a C library, or the host emulation of CUDA kernels.
enum Loaded {
    C(#[allow(dead_code)] libloading::Library),
    Emulated(e2enc_runtime::emulate::Emulation, u64),
}

/// The C compiler the backend uses: `$CC`, else `cc`.
pub fn c_compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

impl CKernels {
    /// Generates, compiles and loads the kernels of `tg` (prepared by
    /// `e2enc_codegen::train::prepare`) for `target`, which must run on this host; `threads`
    /// sizes the pool. Only the weights in `maskable` (all when `None`) may get live-kernel
    /// masks at run time.
    pub fn build(
        tg: &TrainGraph,
        threads: usize,
        maskable: Option<&HashSet<String>>,
        target: Target,
    ) -> Result<CKernels, TrainError> {
        if !target.host_supports() {
            return Err(TrainError::CKernels(format!(
                "training runs its kernels on this machine, which cannot run target `{target}` \
                 (it needs {} {}); pass --target native or --target portable",
                target.arch().unwrap_or("any architecture"),
                target.cpu_features().join("+")
            )));
        }
        let isa = target;
        let gen = Self::generate(tg, maskable, target)?;
        let cc = c_compiler();
        let dir = e2enc_runtime::cc::private_dir()
            .map_err(|e| TrainError::CKernels(format!("cannot create a private folder: {e}")))?;
        let loaded = (|| {
            let (c, so) = (dir.path().join("train.c"), dir.path().join("train.so"));
            std::fs::write(&c, &gen.c_source)
                .map_err(|e| TrainError::CKernels(format!("{}: {e}", c.display())))?;
            run_cc(&cc, &c, &so, isa).map_err(|e| match e {
                CodegenError::Cc { command, stderr } => TrainError::CKernels(format!(
                    "cannot compile the generated training kernels with the C compiler `{cc}` \
                     ($CC, default cc): {command}: {stderr}\n(training always runs generated kernels: install a C \
                     compiler, e.g. Debian's gcc, or point $CC at one)"
                )),
                e => TrainError::CKernels(e.to_string()),
            })?;
            // SAFETY: the library was just compiled here from generated C; its initializers
            // are the C compiler's own.
            unsafe { e2enc_runtime::cc::load_library(&so) }
                .map_err(|e| TrainError::CKernels(format!("cannot load {}: {e}", so.display())))
        })();
        drop(dir);
        let lib = loaded?;
        let mut fns = Vec::with_capacity(gen.kernels.len());
        for k in &gen.kernels {
            let sym = format!("{}\0", k.name);
            // SAFETY: every training kernel has the `KernelFn` signature (codegen::train).
            let f: libloading::Symbol<'_, KernelFn> = unsafe { lib.get(sym.as_bytes()) }
                .map_err(|_| TrainError::CKernels(format!("train.so lacks `{}`", k.name)))?;
            fns.push(*f);
        }
        Ok(Self::assemble(
            tg,
            gen.kernels,
            fns,
            threads,
            target,
            Loaded::C(lib),
        ))
    }

    /// The kernels of `tg` for `target` (C, or CUDA text for a CUDA target), kept where
    /// `E2ENC_KEEP_TRAIN_C` says.
    fn generate(
        tg: &TrainGraph,
        maskable: Option<&HashSet<String>>,
        target: Target,
    ) -> Result<e2enc_codegen::train::TrainGenerated, TrainError> {
        // f32 kernels (a CUDA target's default precision, TF32, is for the device executor
        // to ask for: `ConvMath`).
        let gen = e2enc_codegen::render::for_target_in(target, Precision::F32)
            .training(tg, maskable)
            .map_err(|e| TrainError::CKernels(e.to_string()))?;
        // These kernels get their operands and nothing else: none may need scratch (only the
        // device executor's tensor-core weight gradients do).
        if let Some(k) = gen.kernels.iter().find(|k| k.scratch > 0) {
            return Err(TrainError::CKernels(format!(
                "kernel `{}` needs {} bytes of scratch, which the host executor does not give",
                k.name, k.scratch
            )));
        }
        if let Some(keep) = std::env::var_os("E2ENC_KEEP_TRAIN_C") {
            // For inspection: the generated source, kept where the variable says.
            std::fs::write(&keep, &gen.c_source).map_err(|e| {
                TrainError::CKernels(format!(
                    "E2ENC_KEEP_TRAIN_C={}: {e}",
                    keep.to_string_lossy()
                ))
            })?;
        }
        Ok(gen)
    }

    /// Generates the CUDA kernels of `tg` for the CUDA `target` and builds their host
    /// emulation (`e2enc_runtime::emulate`, with this host's C++ compiler), run by a pool of
    /// `threads`; `seed` orders the threads of every block (results must not depend on it).
    pub fn build_emulated(
        tg: &TrainGraph,
        threads: usize,
        maskable: Option<&HashSet<String>>,
        target: Target,
        seed: u64,
    ) -> Result<CKernels, TrainError> {
        if !target.is_cuda() {
            return Err(TrainError::CKernels(format!(
                "the host emulation runs CUDA kernels; {target} is not a CUDA target"
            )));
        }
        let gen = Self::generate(tg, maskable, target)?;
        let emu = crate::device::emulation(&gen.c_source, &gen.kernels, seed)
            .map_err(|e| TrainError::CKernels(e.to_string()))?;
        let fns = emu.kernels.clone();
        Ok(Self::assemble(
            tg,
            gen.kernels,
            fns,
            threads,
            target,
            Loaded::Emulated(emu, seed),
        ))
    }

    fn assemble(
        tg: &TrainGraph,
        list: Vec<TrainKernel>,
        fns: Vec<KernelFn>,
        threads: usize,
        target: Target,
        lib: Loaded,
    ) -> CKernels {
        let g = &tg.graph;
        let mut kernels = HashMap::new();
        let mut spare_cap: HashMap<usize, usize> = HashMap::new();
        for (k, f) in list.into_iter().zip(fns) {
            *spare_cap.entry(g.node(k.node).ty.numel()).or_default() += 1;
            let op = g.node(k.node).op.mnemonic();
            kernels.insert(k.node, (k, f, op));
        }
        CKernels {
            pool: Pool::new(threads.max(1)),
            target,
            kernels,
            spare: HashMap::new(),
            spare_cap,
            spare_total: 0,
            budget: usize::MAX,
            lib,
        }
    }

    /// The seed of the emulated thread orders, for kernels on the host emulation.
    pub fn emulation_seed(&self) -> Option<u64> {
        match &self.lib {
            Loaded::Emulated(_, seed) => Some(*seed),
            Loaded::C(_) => None,
        }
    }

    /// The target the kernels were generated for.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Bounds the pool: spare buffers and the `live` bytes the caller passes to
    /// [`CKernels::recycle`] and [`CKernels::run`] never exceed `bytes` together (the pool
    /// frees buffers to stay below it).
    pub fn set_budget(&mut self, bytes: usize) {
        self.budget = bytes;
        self.evict(0, 0);
    }

    /// Keeps `t`'s buffer for reuse when this was its last reference, the pool of its length
    /// is not full and the buffer fits the budget next to `live` bytes of values (else it is
    /// freed).
    pub fn recycle(&mut self, t: Arc<Tensor>, live: usize) {
        if let Ok(t) = Arc::try_unwrap(t) {
            if let e2enc_ir::TensorData::F32(v) = t.into_data() {
                let bytes = v.len() * 4;
                let cap = self.spare_cap.get(&v.len()).copied().unwrap_or(0);
                let fits =
                    live.saturating_add(self.spare_total).saturating_add(bytes) <= self.budget;
                let pool = self.spare.entry(v.len()).or_default();
                if pool.len() < cap && fits {
                    pool.push(v);
                    self.spare_total += bytes;
                }
            }
        }
    }

    /// Frees spare buffers, largest first, until `live + need` more bytes fit the budget.
    fn evict(&mut self, live: usize, need: usize) {
        while live.saturating_add(need).saturating_add(self.spare_total) > self.budget {
            let Some(len) = self
                .spare
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(&len, _)| len)
                .max()
            else {
                return;
            };
            if let Some(v) = self.spare.get_mut(&len).and_then(Vec::pop) {
                self.spare_total -= v.len() * 4;
            }
        }
    }

    /// A buffer of `numel` values for the caller to overwrite whole (it may hold an earlier
    /// value's data): a spare one of that length, else a new one, made after freeing the spare
    /// buffers the budget needs next to `live` bytes of values.
    pub fn buffer(&mut self, numel: usize, live: usize) -> Vec<f32> {
        match self.spare.get_mut(&numel).and_then(Vec::pop) {
            Some(v) => {
                self.spare_total -= numel * 4;
                v
            }
            None => {
                self.evict(live, numel * 4);
                vec![0f32; numel]
            }
        }
    }

    /// Frees spare buffers until `bytes` more fit the budget next to `live` bytes of values
    /// (before the caller allocates them outside the pool).
    pub fn make_room(&mut self, live: usize, bytes: usize) {
        self.evict(live, bytes);
    }

    /// Bytes held in the pool of spare buffers.
    pub fn spare_bytes(&self) -> usize {
        self.spare_total
    }

    /// The mnemonic the profile books node `id`'s time under.
    pub fn mnemonic(&self, id: NodeId) -> Option<&'static str> {
        self.kernels.get(&id).map(|k| k.2)
    }

    /// Runs node `id`'s kernel on `vals` (which hold its operands), giving a tensor of `shape`;
    /// `live_bytes` are the caller's live values (for the pool's budget).
    pub fn run(
        &mut self,
        id: NodeId,
        shape: &[usize],
        vals: &HashMap<NodeId, Arc<Tensor>>,
        masks: &super::exec::LiveMasks,
        live_bytes: usize,
        operand_shape: impl Fn(NodeId) -> Vec<usize>,
    ) -> Result<Tensor, TrainError> {
        if !self.kernels.contains_key(&id) {
            return Err(TrainError::CKernels("no generated kernel".into()));
        }
        let numel: usize = shape.iter().product();
        // Every kernel writes its whole output, so a spare buffer's old values never show.
        let mut out = self.buffer(numel, live_bytes);
        let (k, f, _) = self
            .kernels
            .get(&id)
            .ok_or_else(|| TrainError::CKernels("no generated kernel".into()))?;
        let mut ptrs: Vec<*const f32> = Vec::with_capacity(k.operands.len());
        for &o in &k.operands {
            let t = vals
                .get(&o)
                .ok_or_else(|| TrainError::CKernels("an operand was not computed".into()))?;
            let want = operand_shape(o);
            if t.shape() != want.as_slice() {
                return Err(TrainError::CKernels(format!(
                    "operand has shape {:?}, the kernel was generated for {want:?}",
                    t.shape()
                )));
            }
            let data = t
                .as_f32()
                .ok_or_else(|| TrainError::CKernels("operand is not f32".into()))?;
            ptrs.push(data.as_ptr());
        }
        if let (None, Some(w)) = (&k.mask, &k.weight) {
            if masks.contains_key(w) {
                return Err(TrainError::CKernels(format!(
                    "weight `{w}` has a live-kernel mask, but its kernels were generated dense \
                     (it was not declared maskable)"
                )));
            }
        }
        let mask = k.mask.as_ref().and_then(|w| masks.get(w));
        let live = k.live.build(mask.map(Vec::as_slice)).ok_or_else(|| {
            TrainError::CKernels(format!(
                "live mask of `{}` has the wrong length for {:?}",
                k.mask.as_deref().unwrap_or("?"),
                k.live.dims()
            ))
        })?;
        // SAFETY: the operand buffers have exactly the shapes the kernel was generated for
        // (checked above), `out` has the node's element count, `live` is a CSR of the right
        // size, and tiles write disjoint parts of `out`.
        unsafe {
            self.pool.run(
                *f,
                out.as_mut_ptr(),
                ptrs.as_ptr() as *const f32,
                live.as_ptr(),
                0,
                k.tiles,
            )
        };
        if let Loaded::Emulated(emu, _) = &self.lib {
            if let Some(e) = emu.take_error() {
                return Err(TrainError::CKernels(format!("host emulation: {e}")));
            }
        }
        Tensor::from_f32(shape.to_vec(), out).map_err(TrainError::from)
    }
}
