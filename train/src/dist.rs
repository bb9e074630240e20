//! Data-parallel training across processes: the few collectives a run needs, behind one small
//! trait ([`Collective`]), with two implementations: [`Single`] (one process, every call a no-op)
//! and, with the `mpi` cargo feature, `Mpi` (Open MPI or any MPI through the `mpi` crate), for
//! ranks started the way MPI users start them: `mpirun -n 4 e2enc train ...`, or `srun` under
//! Slurm with an MPI built for it. A step kept on devices sums its gradients through a
//! [`GradientReducer`]: NCCL in the GPUs' memory ([`NcclReducer`], see [`crate::nccl`]), or
//! through the host and a [`Collective`] ([`HostStaged`], for the host emulation).
//!
//! What a run does with them (see `trainer`): `--batch` is the global batch, split evenly over
//! the ranks; every rank draws its own share of the global batch's patches from the per-sample
//! seed rule ([`sample_rng`]), so the patches of a step do not depend on the number of ranks; the
//! loss's batch sums (Dice's tp/fp/fn, the CE sum and the voxel count) are all-reduced before the
//! gradient of the logits is formed, so the loss is defined over the global batch; the weight
//! gradients are all-reduced (summed) in buckets; every rank then takes the same optimizer step.
//! DSFF masks are decided on rank 0 and broadcast. Only rank 0 writes checkpoints, logs and
//! plots. A rank that fails aborts the whole job (`MPI_Abort`), and a rank killed from outside
//! makes `mpirun` stop the others; the last checkpoint (written atomically every epoch) resumes
//! with any number of ranks that divides the batch.

use crate::device::{DevPtr, Device};
use crate::device_exec::{bytes, bytes_mut};
use crate::TrainError;

/// The collectives of a data-parallel run. Every rank must make the same calls in the same order
/// (that is what MPI requires); an error from any of them ends the run.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Element-wise sum over all ranks, in place; every rank gets the same values.
    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<(), TrainError>;
    /// [`Collective::all_reduce_f32`] for f64.
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<(), TrainError>;
    /// Rank 0's bytes to every rank (`buf` is replaced on the others; any length).
    fn broadcast(&self, buf: &mut Vec<u8>) -> Result<(), TrainError>;
    /// What carries the collectives, for logs (`one process`, `Open MPI v4.1.4, 2 ranks`).
    fn engine(&self) -> String;
    /// Ends every rank of the job now, with exit status `code` (after this rank has printed why).
    fn abort(&self, code: i32) -> !;
}

/// One process: nothing to exchange.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&self, _: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<(), TrainError> {
        Ok(())
    }
    fn broadcast(&self, _: &mut Vec<u8>) -> Result<(), TrainError> {
        Ok(())
    }
    fn engine(&self) -> String {
        "one process".into()
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The world size a process launcher announced in the environment, and the variable that said
/// so: Open MPI's `mpirun` (`OMPI_COMM_WORLD_SIZE`), PMI/PMIx launchers such as MPICH's
/// `mpiexec` and Slurm's `srun --mpi=...` (`PMI_SIZE`, `PMIX_SIZE`), or a Slurm job step
/// (`SLURM_STEP_NUM_TASKS`). `None` when none is set (a plain start).
pub fn launcher_world_size() -> Option<(usize, &'static str)> {
    for var in [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "SLURM_STEP_NUM_TASKS",
        // torchrun and torch.distributed's launchers (refused in `connect`: not MPI).
        "WORLD_SIZE",
    ] {
        if let Some(n) = std::env::var(var).ok().and_then(|v| v.trim().parse().ok()) {
            return Some((n, var));
        }
    }
    None
}

/// This process's rank among the ranks of its machine, as the launcher announced it (Open MPI,
/// MPICH's Hydra, Slurm, PMIx): with several GPU ranks on one machine, local rank `r` of a run
/// on `--device cuda:N` uses GPU `N + r`. `None` when no launcher said.
pub fn launcher_local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMIX_LOCAL_RANK",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().and_then(|x| x.trim().parse().ok()))
}

/// How many ranks the launcher started on this machine (Open MPI, MPICH's Hydra); 1 when it did
/// not say. They share its cores and its memory.
pub fn launcher_local_size() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// The GPU a rank of a data-parallel run uses when `--device cuda:N` named GPU `named` (see
/// [`gpu_of_rank`]), from the launcher's local rank and `CUDA_VISIBLE_DEVICES`.
pub fn rank_gpu(named: usize, ranks: usize) -> usize {
    gpu_of_rank(
        named,
        ranks,
        launcher_local_rank(),
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
    )
}

/// GPU `named` plus the local rank, so that the ranks of one machine each get their own; but
/// `named` itself for one rank, or when `CUDA_VISIBLE_DEVICES` shows this process a single GPU
/// (Slurm's `--gpus-per-task=1` and per-rank wrapper scripts set it so).
pub fn gpu_of_rank(
    named: usize,
    ranks: usize,
    local_rank: Option<usize>,
    visible: Option<&str>,
) -> usize {
    let one_visible = visible.is_some_and(|v| {
        let v = v.trim();
        !v.is_empty() && !v.contains(',')
    });
    if ranks <= 1 || one_visible {
        named
    } else {
        named + local_rank.unwrap_or(0)
    }
}

/// Whether this build can join MPI jobs (the `mpi` cargo feature).
pub const HAS_MPI: bool = cfg!(feature = "mpi");

/// The collectives for this process: MPI when a launcher started several ranks, otherwise
/// [`Single`]. A launcher with several ranks and a build without MPI is an error that says how to
/// build one (each rank would otherwise train alone, and all would write the same folder).
pub fn from_environment() -> Result<std::sync::Arc<dyn Collective>, TrainError> {
    connect(launcher_world_size(), HAS_MPI)
}

/// [`from_environment`] for a launcher's announcement `launched` and a build that has MPI
/// (`use_mpi`, only honoured with the `mpi` feature) or not.
fn connect(
    launched: Option<(usize, &'static str)>,
    use_mpi: bool,
) -> Result<std::sync::Arc<dyn Collective>, TrainError> {
    let Some((n, var)) = launched.filter(|&(n, _)| n > 1) else {
        return Ok(std::sync::Arc::new(Single));
    };
    if var == "WORLD_SIZE" {
        return Err(TrainError::Distributed(format!(
            "{var}={n}: this looks like torchrun or another torch.distributed launcher, which \
             e2enc cannot join; start its ranks with MPI's launcher instead, `mpirun -n {n} \
             e2enc train ...` (or Slurm's `srun --mpi=pmix`), with an e2enc built with \
             `--features mpi` (GPU ranks then sum their gradients with NCCL)"
        )));
    }
    if use_mpi {
        #[cfg(feature = "mpi")]
        {
            let m = mpi_impl::Mpi::init()?;
            if n != m.size() {
                return Err(TrainError::Distributed(format!(
                    "the launcher set {var}={n} but MPI reports {} rank(s): was e2enc started by \
                     another MPI's launcher? (this e2enc uses {})",
                    m.size(),
                    m.engine()
                )));
            }
            return Ok(std::sync::Arc::new(m));
        }
    }
    Err(TrainError::Distributed(format!(
        "a launcher started {n} ranks ({var}={n}), but this e2enc was built without MPI: rebuild \
         it with `cargo build --release --features mpi` (that needs an MPI's development files \
         and libclang: on Debian or Ubuntu `apt install libopenmpi-dev openmpi-bin \
         libclang-dev`), or start one process without mpirun"
    )))
}

/// Sums the weight gradients a device holds over the ranks of a data-parallel run, for a step
/// whose weights and optimizer stay on the device (`DeviceExecutor::step_resident`).
pub trait GradientReducer: Send {
    /// Sums the f32 buffers `bufs` (device address, number of floats) of `dev` over the ranks,
    /// in place, ordered after the work already issued on `dev` and before what follows. Every
    /// rank passes the same lengths in the same order.
    fn all_reduce(
        &mut self,
        dev: &mut dyn Device,
        bufs: &[(DevPtr, usize)],
    ) -> Result<(), TrainError>;

    /// Starts summing `bufs` as [`GradientReducer::all_reduce`] does, after the work already
    /// issued on `dev`, but where the device can, beside the work issued after it (a second
    /// CUDA stream): a backward pass goes on while the gradients it has finished are summed.
    /// Nothing may write `bufs` until [`GradientReducer::finish`]. By default the sum is done
    /// in order, as `all_reduce`.
    fn start(&mut self, dev: &mut dyn Device, bufs: &[(DevPtr, usize)]) -> Result<(), TrainError> {
        self.all_reduce(dev, bufs)
    }

    /// Orders the work issued on `dev` from here on after every sum started.
    fn finish(&mut self, dev: &mut dyn Device) -> Result<(), TrainError> {
        let _ = dev;
        Ok(())
    }

    /// What carries the sums, for logs and `--profile`.
    fn engine(&self) -> String;

    /// Collective calls one [`GradientReducer::all_reduce`] of `floats` in one buffer makes.
    fn calls(&self, floats: usize) -> usize {
        usize::from(floats > 0)
    }
}

/// Gradients summed through the host: copied down in buckets of `bucket` floats, summed by a
/// [`Collective`], copied back. For devices that are not CUDA GPUs (the host emulation, on
/// which GPU ranks are tested without GPUs).
pub struct HostStaged {
    pub comm: std::sync::Arc<dyn Collective>,
    pub bucket: usize,
}

impl GradientReducer for HostStaged {
    fn all_reduce(
        &mut self,
        dev: &mut dyn Device,
        bufs: &[(DevPtr, usize)],
    ) -> Result<(), TrainError> {
        let cap = self.bucket.max(1);
        let mut stage: Vec<f32> = Vec::with_capacity(cap);
        // (device address, first float in `stage`, floats) of the pieces in `stage`.
        let mut parts: Vec<(DevPtr, usize, usize)> = Vec::new();
        let flush = |stage: &mut Vec<f32>,
                     parts: &mut Vec<(DevPtr, usize, usize)>,
                     dev: &mut dyn Device|
         -> Result<(), TrainError> {
            if stage.is_empty() {
                return Ok(());
            }
            self.comm.all_reduce_f32(stage)?;
            for &(p, at, n) in parts.iter() {
                dev.upload(p, bytes(&stage[at..at + n]))?;
            }
            stage.clear();
            parts.clear();
            Ok(())
        };
        for &(p, n) in bufs {
            let mut done = 0;
            while done < n {
                let take = (n - done).min(cap - stage.len());
                let at = stage.len();
                stage.resize(at + take, 0.0);
                let addr = p + (done * 4) as u64;
                dev.download(addr, bytes_mut(&mut stage[at..]))?;
                parts.push((addr, at, take));
                done += take;
                if stage.len() == cap {
                    flush(&mut stage, &mut parts, dev)?;
                }
            }
        }
        flush(&mut stage, &mut parts, dev)
    }

    fn engine(&self) -> String {
        format!("{} (through the host)", self.comm.engine())
    }

    fn calls(&self, floats: usize) -> usize {
        floats.div_ceil(self.bucket.max(1))
    }
}

/// Gradients summed by NCCL in the GPUs' memory (see [`crate::nccl`]): in order on the step's
/// stream ([`GradientReducer::all_reduce`]), or started on the device's second stream beside
/// the work that follows and joined by [`GradientReducer::finish`].
pub struct NcclReducer {
    comm: crate::nccl::Comm,
}

impl NcclReducer {
    /// Joins every rank of `comm` in an NCCL communicator: each rank loads NCCL (all learn
    /// whether every rank could), rank 0 makes the communicator's id and `comm` carries it to
    /// the others, and each joins on its GPU, whose CUDA context the caller has made current on
    /// this thread (`Device::cuda_stream`).
    pub fn join(comm: &dyn Collective) -> Result<NcclReducer, TrainError> {
        NcclReducer::join_with(comm, crate::nccl::Nccl::load)
    }

    /// [`NcclReducer::join`] with NCCL loaded by `load`.
    pub fn join_with(
        comm: &dyn Collective,
        load: impl FnOnce() -> Result<std::sync::Arc<crate::nccl::Nccl>, TrainError>,
    ) -> Result<NcclReducer, TrainError> {
        let mine = load();
        let mut failed = [f64::from(u8::from(mine.is_err()))];
        comm.all_reduce_f64(&mut failed)?;
        let nccl = mine?;
        if failed[0] > 0.0 {
            return Err(TrainError::Distributed(format!(
                "{} other rank(s) could not load NCCL (their messages say why); this rank has \
                 NCCL {} from {}",
                failed[0],
                nccl.version(),
                nccl.found()
            )));
        }
        let mut id = Vec::new();
        if comm.rank() == 0 {
            id = nccl.unique_id()?.to_bytes();
        }
        comm.broadcast(&mut id)?;
        let id = crate::nccl::UniqueId::from_bytes(&id)?;
        // SAFETY: the caller made this rank's GPU context current; each rank has its own GPU
        // (`rank_gpu`), and NCCL refuses two ranks on one GPU.
        let c = unsafe { crate::nccl::Comm::init(nccl, &id, comm.size(), comm.rank())? };
        Ok(NcclReducer { comm: c })
    }
}

/// The CUDA stream `stream` of `dev` for NCCL, or the error for a device that has none.
fn on_gpu(dev: &dyn Device, stream: Option<u64>) -> Result<u64, TrainError> {
    stream.ok_or_else(|| {
        TrainError::Distributed(format!(
            "NCCL sums GPU memory, and {} is not a CUDA GPU",
            dev.describe()
        ))
    })
}

impl GradientReducer for NcclReducer {
    fn all_reduce(
        &mut self,
        dev: &mut dyn Device,
        bufs: &[(DevPtr, usize)],
    ) -> Result<(), TrainError> {
        let stream = dev.cuda_stream()?;
        let stream = on_gpu(dev, stream)?;
        // SAFETY: the buffers are the device's gradients (f32, alive as long as the
        // executor), `stream` its stream with its context current (cuda_stream), and every
        // rank's graph lists the same gradients in the same order.
        unsafe { self.comm.all_reduce_sum_f32(bufs, stream) }
    }

    fn start(&mut self, dev: &mut dyn Device, bufs: &[(DevPtr, usize)]) -> Result<(), TrainError> {
        let side = dev.side_stream()?;
        let side = on_gpu(dev, side)?;
        // SAFETY: as in `all_reduce`, on the side stream, which starts after the work issued so
        // far (the packing of these gradients); the device's stream waits for it in `finish`
        // before anything reads or writes these buffers again.
        unsafe { self.comm.all_reduce_sum_f32(bufs, side) }
    }

    fn finish(&mut self, dev: &mut dyn Device) -> Result<(), TrainError> {
        dev.join_side()
    }

    fn engine(&self) -> String {
        let (_, size) = self.comm.rank();
        format!(
            "NCCL {}, {size} ranks ({})",
            self.comm.nccl().version(),
            self.comm.nccl().found()
        )
    }
}

/// The random stream of one sample: sample `index` of step `step` of stream `kind` (see
/// [`SampleStream`]) in a run seeded `seed`. A ChaCha8 generator seeded with four SplitMix64
/// outputs of (seed, kind, step, index), so any rank can draw any sample of the global batch
/// without drawing the others, and the same patches come out for any number of ranks.
pub fn sample_rng(seed: u64, kind: SampleStream, step: u64, index: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    let mut state = seed ^ 0x6532_656e_635f_6470; // "e2enc_dp"
    let mut mix = |v: u64| {
        state = state.wrapping_add(v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let words = [mix(kind as u64), mix(step), mix(index), mix(0)];
    let mut key = [0u8; 32];
    for (k, w) in key.chunks_exact_mut(8).zip(words) {
        k.copy_from_slice(&w.to_le_bytes());
    }
    rand_chacha::ChaCha8Rng::from_seed(key)
}

/// Which draws a [`sample_rng`] stream serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum SampleStream {
    /// Training patches; `step` is the global iteration (epoch × iterations + iteration).
    Train = 1,
    /// Validation patches; `step` is epoch × 2^32 + validation batch.
    Validation = 2,
}

#[cfg(feature = "mpi")]
mod mpi_impl {
    use super::Collective;
    use crate::TrainError;
    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;

    /// Most elements one MPI call moves (MPI counts are C ints); longer buffers go in pieces.
    const CHUNK: usize = 1 << 26;

    pub struct Mpi {
        // Dropped last: finalizes MPI.
        world: SimpleCommunicator,
        _universe: Universe,
        rank: usize,
        size: usize,
        version: String,
    }

    // SAFETY: MPI was initialised with MPI_THREAD_MULTIPLE (checked in `init`), under which any
    // thread may call MPI on the world communicator; `Mpi` holds only its handle.
    unsafe impl Send for Mpi {}
    unsafe impl Sync for Mpi {}

    impl Mpi {
        pub fn init() -> Result<Mpi, TrainError> {
            let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Multiple)
                .ok_or_else(|| {
                    TrainError::Distributed("MPI was already initialised in this process".into())
                })?;
            if level != mpi::Threading::Multiple {
                return Err(TrainError::Distributed(format!(
                    "this MPI offers thread level {level:?}; e2enc needs MPI_THREAD_MULTIPLE \
                     (Open MPI 4 and later have it)"
                )));
            }
            let world = universe.world();
            let version = mpi::environment::library_version()
                .ok()
                .and_then(|v| {
                    v.lines()
                        .next()
                        // "Open MPI v4.1.4, package: ..., ident: ...": the name and version.
                        .and_then(|l| l.split(',').next())
                        .map(|l| l.trim().to_string())
                })
                .unwrap_or_else(|| "MPI".into());
            Ok(Mpi {
                rank: world.rank() as usize,
                size: world.size() as usize,
                world,
                _universe: universe,
                version,
            })
        }
    }

    /// Sums `buf` over the ranks in pieces of at most [`CHUNK`] elements (through a scratch
    /// copy: the `mpi` crate offers no safe in-place all-reduce).
    fn sum<T>(world: &SimpleCommunicator, buf: &mut [T]) -> Result<(), TrainError>
    where
        T: Copy + Default + mpi::datatype::Equivalence,
    {
        let mut scratch = vec![T::default(); buf.len().min(CHUNK)];
        for piece in buf.chunks_mut(CHUNK) {
            let s = &mut scratch[..piece.len()];
            s.copy_from_slice(piece);
            world.all_reduce_into(&s[..], piece, SystemOperation::sum());
        }
        Ok(())
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<(), TrainError> {
            sum(&self.world, buf)
        }
        fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<(), TrainError> {
            sum(&self.world, buf)
        }
        fn broadcast(&self, buf: &mut Vec<u8>) -> Result<(), TrainError> {
            let root = self.world.process_at_rank(0);
            let mut len = [buf.len() as u64];
            root.broadcast_into(&mut len[..]);
            buf.resize(len[0] as usize, 0);
            for piece in buf.chunks_mut(CHUNK) {
                root.broadcast_into(piece);
            }
            Ok(())
        }
        fn engine(&self) -> String {
            format!("{}, {} ranks", self.version, self.size)
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn one_process_unless_a_launcher_started_several() {
        for launched in [None, Some((1, "OMPI_COMM_WORLD_SIZE"))] {
            let c = connect(launched, false).unwrap();
            assert_eq!((c.rank(), c.size()), (0, 1));
        }
    }

    #[test]
    fn several_ranks_without_mpi_are_refused_with_the_way_to_build_it() {
        let e = connect(Some((2, "PMI_SIZE")), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("PMI_SIZE=2"), "{e}");
        assert!(
            e.contains("--features mpi") && e.contains("libopenmpi-dev"),
            "{e}"
        );
    }

    #[test]
    fn each_local_rank_gets_its_own_gpu_unless_it_sees_only_one() {
        assert_eq!(gpu_of_rank(0, 1, Some(3), None), 0);
        assert_eq!(gpu_of_rank(0, 4, Some(3), None), 3);
        assert_eq!(gpu_of_rank(2, 4, Some(1), Some("0,1,2,3")), 3);
        assert_eq!(gpu_of_rank(0, 4, Some(3), Some("5")), 0);
        assert_eq!(gpu_of_rank(0, 4, None, None), 0);
        assert_eq!(gpu_of_rank(1, 4, Some(2), Some("")), 3);
    }

    #[test]
    fn torchrun_is_refused_with_the_mpi_launch_that_replaces_it() {
        for mpi in [false, true] {
            let e = connect(Some((4, "WORLD_SIZE")), mpi)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("torchrun") && e.contains("mpirun -n 4"), "{e}");
        }
        // One process under torchrun is one process.
        assert_eq!(connect(Some((1, "WORLD_SIZE")), false).unwrap().size(), 1);
    }

    #[test]
    fn each_sample_has_its_own_stream() {
        let first = |kind, step, index| sample_rng(3, kind, step, index).next_u64();
        let a = first(SampleStream::Train, 5, 1);
        assert_eq!(a, first(SampleStream::Train, 5, 1));
        for b in [
            first(SampleStream::Train, 5, 0),
            first(SampleStream::Train, 6, 1),
            first(SampleStream::Validation, 5, 1),
            sample_rng(4, SampleStream::Train, 5, 1).next_u64(),
        ] {
            assert_ne!(a, b);
        }
    }
}
