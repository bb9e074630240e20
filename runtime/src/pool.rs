//! The thread pool that runs kernels: persistent workers plus the calling thread, two barriers
//! per kernel call, tiles handed out one at a time from an atomic counter. Generated code never
//! creates threads (see shared/machine-notes.md on OpenMP and dlclose); this pool is the only
//! place parallelism happens, so results cannot depend on thread count (tiles write disjoint
//! memory and the order of work inside a tile is fixed).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

/// Stack of each pool thread: generated kernels keep a tile's working set on their thread's
/// stack (bf16 packing: at most 640 KiB, `codegen::c::conv_bf16::BUDGET`), so the workers
/// do not depend on `RUST_MIN_STACK`. The calling thread runs tiles too: it needs 1 MiB or
/// more (glibc's default thread stack is 8 MiB; see `e2enc.h`).
pub const KERNEL_STACK: usize = 4 << 20;

/// The generated kernels' signature.
pub type KernelFn = unsafe extern "C" fn(*mut f32, *const f32, *const i32, i64, i64);

#[derive(Clone, Copy)]
struct Job {
    f: Option<KernelFn>,
    a: *mut f32,
    w: *const f32,
    i: *const i32,
    first: i64,
    tiles: i64,
}

struct Shared {
    job: UnsafeCell<Job>,
    next: AtomicI64,
    quit: AtomicBool,
    start: Barrier,
    done: Barrier,
}

// SAFETY: `job` is written only by the owner thread between a `done` and the next `start`
// barrier, and read by workers only between `start` and `done`; the barriers order the accesses.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed set of threads that run kernel calls together.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads in all (the caller included); at least 1.
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(Job {
                f: None,
                a: std::ptr::null_mut(),
                w: std::ptr::null(),
                i: std::ptr::null(),
                first: 0,
                tiles: 0,
            }),
            next: AtomicI64::new(0),
            quit: AtomicBool::new(false),
            start: Barrier::new(threads),
            done: Barrier::new(threads),
        });
        let workers = (1..threads)
            .map(|_| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name("e2enc-pool".into())
                    .stack_size(KERNEL_STACK)
                    .spawn(move || loop {
                        s.start.wait();
                        if s.quit.load(Ordering::Acquire) {
                            break;
                        }
                        // SAFETY: see `Shared`.
                        let job = unsafe { *s.job.get() };
                        work(&s, job);
                        s.done.wait();
                    })
                    .expect("cannot start a kernel thread")
            })
            .collect();
        Pool { shared, workers }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f` over tiles `first..first + tiles` on every thread of the pool and returns when
    /// all are done.
    ///
    /// # Safety
    /// `f` must be a kernel that is safe to call on disjoint tile ranges concurrently with these
    /// pointers (the generated kernels are, for the arena and blobs they were compiled for).
    pub unsafe fn run(
        &mut self,
        f: KernelFn,
        a: *mut f32,
        w: *const f32,
        i: *const i32,
        first: usize,
        tiles: usize,
    ) {
        let job = Job {
            f: Some(f),
            a,
            w,
            i,
            first: first as i64,
            tiles: tiles as i64,
        };
        // SAFETY: no worker reads `job` until the `start` barrier below.
        unsafe { *self.shared.job.get() = job };
        self.shared.next.store(0, Ordering::Relaxed);
        if self.workers.is_empty() {
            work(&self.shared, job);
            return;
        }
        self.shared.start.wait();
        work(&self.shared, job);
        self.shared.done.wait();
    }
}

fn work(s: &Shared, job: Job) {
    let Some(f) = job.f else { return };
    loop {
        let k = s.next.fetch_add(1, Ordering::Relaxed);
        if k >= job.tiles {
            break;
        }
        let t = job.first + k;
        // SAFETY: the pool's caller vouched for `f` and the pointers (see `Pool::run`).
        unsafe { f(job.a, job.w, job.i, t, t + 1) };
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        self.shared.quit.store(true, Ordering::Release);
        self.shared.start.wait();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}
