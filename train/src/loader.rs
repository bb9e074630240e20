//! Background data loading: batches made by worker threads ahead of the step that needs them,
//! through bounded queues, handed over in order.
//!
//! A batch is a pure function of its index (the global iteration; see `dist::sample_rng`), so
//! which worker makes it and when changes nothing: worker `k` of `n` makes the batches `start + k`,
//! `start + k + n`, ... into its own queue of `depth` batches, and [`Prefetch::next`] takes batch
//! `i` from worker `(i - start) mod n`. With no workers, `next` makes the batch itself. Dropping a `Prefetch` stops its workers (their next send fails) and joins them.

use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::TrainError;

/// What makes batch `i`.
pub type MakeBatch<T> = Arc<dyn Fn(u64) -> Result<T, TrainError> + Send + Sync>;

/// Batches `range` in order, made ahead by worker threads.
pub struct Prefetch<T: Send + 'static> {
    make: MakeBatch<T>,
    queues: Vec<Receiver<Result<T, TrainError>>>,
    workers: Vec<JoinHandle<()>>,
    range: Range<u64>,
    next: u64,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Starts `workers` threads (0: batches are made on demand in `next`), each holding at most
    /// `depth` (at least 1) finished batches.
    pub fn start(
        range: Range<u64>,
        workers: usize,
        depth: usize,
        make: MakeBatch<T>,
    ) -> Result<Prefetch<T>, TrainError> {
        let n = workers.min(range.end.saturating_sub(range.start) as usize);
        let mut queues = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for k in 0..n {
            let (tx, rx) = sync_channel(depth.max(1));
            let make = make.clone();
            let range = range.clone();
            let h = std::thread::Builder::new()
                .name(format!("e2enc-data-{k}"))
                .spawn(move || {
                    let mut i = range.start + k as u64;
                    while i < range.end {
                        let b = make(i);
                        let failed = b.is_err();
                        if tx.send(b).is_err() || failed {
                            return;
                        }
                        i += n as u64;
                    }
                })
                .map_err(|e| {
                    TrainError::Data(format!("cannot start a data-loading thread: {e}"))
                })?;
            queues.push(rx);
            handles.push(h);
        }
        Ok(Prefetch {
            make,
            queues,
            workers: handles,
            next: range.start,
            range,
        })
    }
}

impl<T: Send + 'static> Iterator for Prefetch<T> {
    type Item = (u64, Result<T, TrainError>);

    /// Batch `i` (the next in order) with its index; `None` past the range.
    fn next(&mut self) -> Option<(u64, Result<T, TrainError>)> {
        let i = self.next;
        if i >= self.range.end {
            return None;
        }
        self.next += 1;
        let b = if self.queues.is_empty() {
            (self.make)(i)
        } else {
            let k = ((i - self.range.start) % self.queues.len() as u64) as usize;
            self.queues[k].recv().unwrap_or_else(|_| {
                Err(TrainError::Data(
                    "a data-loading thread stopped without a batch (it panicked)".into(),
                ))
            })
        };
        Some((i, b))
    }
}

impl<T: Send + 'static> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Receivers first: a worker blocked on a full queue then fails its send and returns.
        self.queues.clear();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn squares(workers: usize, range: Range<u64>) -> Vec<u64> {
        let make: MakeBatch<u64> = Arc::new(|i| Ok(i * i));
        let p = Prefetch::start(range, workers, 2, make).unwrap();
        let mut out = Vec::new();
        for (i, b) in p {
            let b = b.unwrap();
            assert_eq!(b, i * i);
            out.push(b);
        }
        out
    }

    #[test]
    fn any_worker_count_gives_the_same_batches_in_order() {
        let want: Vec<u64> = (5..40).map(|i| i * i).collect();
        for w in [0, 1, 2, 3, 7, 64] {
            assert_eq!(squares(w, 5..40), want, "{w} workers");
        }
        assert!(squares(3, 4..4).is_empty());
    }

    #[test]
    fn an_error_reaches_the_consumer_and_stops_that_worker() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let make: MakeBatch<u64> = Arc::new(move |i| {
            m.fetch_add(1, Ordering::SeqCst);
            if i == 3 {
                Err(TrainError::Data("bad case".into()))
            } else {
                Ok(i)
            }
        });
        let mut p = Prefetch::start(0..1000, 2, 1, make).unwrap();
        for want in 0..3 {
            assert_eq!(p.next().unwrap().1.unwrap(), want);
        }
        let e = p.next().unwrap().1.unwrap_err().to_string();
        assert!(e.contains("bad case"), "{e}");
        drop(p);
        // Bounded queues: the workers stopped long before the end of the range.
        assert!(
            made.load(Ordering::SeqCst) < 20,
            "{}",
            made.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn dropping_early_stops_blocked_workers() {
        let make: MakeBatch<Vec<u8>> = Arc::new(|_| Ok(vec![0u8; 1024]));
        let mut p = Prefetch::start(0..u64::MAX, 3, 2, make).unwrap();
        p.next().unwrap().1.unwrap();
        drop(p); // joins: the test would hang if a worker kept going
    }
}
