//! Ranks as threads of this process: a test stand-in for MPI with the same contract (every rank
//! gets rank-ordered sums, rank 0's bytes), so the data-parallel logic is checked without an MPI
//! (the MPI path itself is checked with `mpirun` in tests/train_mpi.rs of the e2enc crate).

use std::sync::{Arc, Barrier, Mutex};

use e2enc_train::dist::Collective;
use e2enc_train::TrainError;

pub struct Shared {
    slots: Mutex<Vec<Vec<f64>>>,
    bytes: Mutex<Vec<u8>>,
    barrier: Barrier,
    size: usize,
}

pub struct Rank {
    pub rank: usize,
    pub shared: Arc<Shared>,
}

pub fn world(size: usize) -> Vec<Rank> {
    let shared = Arc::new(Shared {
        slots: Mutex::new(vec![Vec::new(); size]),
        bytes: Mutex::new(Vec::new()),
        barrier: Barrier::new(size),
        size,
    });
    (0..size)
        .map(|rank| Rank {
            rank,
            shared: shared.clone(),
        })
        .collect()
}

impl Rank {
    fn exchange(&self, mine: Vec<f64>) -> Vec<Vec<f64>> {
        self.shared.slots.lock().unwrap()[self.rank] = mine;
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().unwrap().clone();
        self.shared.barrier.wait();
        all
    }
}

impl Collective for Rank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<(), TrainError> {
        let all = self.exchange(buf.iter().map(|&v| v as f64).collect());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = all.iter().map(|s| s[i] as f32).fold(0.0f32, |a, v| a + v);
        }
        Ok(())
    }
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<(), TrainError> {
        let all = self.exchange(buf.to_vec());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = all.iter().map(|s| s[i]).fold(0.0, |a, v| a + v);
        }
        Ok(())
    }
    fn broadcast(&self, buf: &mut Vec<u8>) -> Result<(), TrainError> {
        if self.rank == 0 {
            *self.shared.bytes.lock().unwrap() = buf.clone();
        }
        self.shared.barrier.wait();
        if self.rank != 0 {
            *buf = self.shared.bytes.lock().unwrap().clone();
        }
        self.shared.barrier.wait();
        Ok(())
    }
    fn engine(&self) -> String {
        format!("{} threads as ranks", self.shared.size)
    }
    fn abort(&self, code: i32) -> ! {
        panic!("rank {} aborted with {code}", self.rank)
    }
}
