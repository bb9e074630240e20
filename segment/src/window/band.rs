//! The sliding window's accumulators: per padded plane under the current tiles, `classes` maps of
//! weighted probabilities, cut into square blocks of the plane that live in the slots of one
//! slab. With a memory budget the slab has that many slots, and the blocks no tile needs right
//! now go to an unnamed scratch file (least recently used first) and come back when a tile or
//! the finished plane needs them: the bytes are stored as they are, so every voxel sums the same
//! terms in the same order as when everything stays in memory. One slab (not a heap of small
//! buffers) gives its memory back to the system when the window ends.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::path::PathBuf;

use crate::SegmentError;

/// One plane's blocks: in a slot of the slab, in a slot of the scratch file, or never touched
/// (zeros).
struct Plane {
    mem: Vec<Option<usize>>,
    disk: Vec<Option<u64>>,
    /// When each block was last needed (for the least-recently-used order).
    used: Vec<u64>,
}

/// The scratch file and its free slots (one block each).
struct Scratch {
    file: File,
    free: Vec<u64>,
    slots: u64,
}

pub(super) struct Band {
    classes: usize,
    ps: [usize; 3],
    /// Blocks are `1 << shift` voxels square.
    shift: u32,
    /// Blocks along the plane's two axes.
    nb: [usize; 2],
    /// Padded index of `planes[0]`.
    pub(super) first: usize,
    planes: VecDeque<Plane>,
    /// The blocks' memory, `block_len` floats a slot; its pages are touched as slots are used.
    slab: Vec<f32>,
    /// Free slots, the lowest on top (so the slots in use stay packed at the start).
    free: Vec<usize>,
    /// Whether a slot was used before (and must be zeroed when used again).
    dirty: Vec<bool>,
    /// The most planes held at once (checked against [`super::band_planes`] by the tests).
    pub(super) peak: usize,
    /// Whether blocks may leave memory (a budget was given).
    spill: bool,
    /// Slots in use now, and the most at once.
    held: usize,
    peak_held: usize,
    tick: u64,
    /// `(last use, padded plane, block)` of every block in memory, when spilling.
    lru: BTreeSet<(u64, usize, usize)>,
    scratch: Option<Scratch>,
    scratch_dir: PathBuf,
    /// Blocks written to and read from the scratch file.
    pub(super) spilled: u64,
}

/// The block side for a patch: a quarter of its smaller in-plane side, a power of two from 1 to 32
/// (small enough that a tile's blocks hold little beyond the tile, large enough for few
/// reads and writes).
pub(super) fn block_shift(patch: [usize; 3]) -> u32 {
    let q = (patch[1].min(patch[2]) / 4).clamp(1, 32);
    usize::BITS - 1 - q.leading_zeros()
}

/// Blocks one tile needs at most: each plane of the tile, the blocks its rows and columns can
/// straddle.
fn tile_blocks(patch: [usize; 3]) -> usize {
    let side = 1usize << block_shift(patch);
    let across = |p: usize| p.div_ceil(side) + 1;
    patch[0] * across(patch[1]) * across(patch[2])
}

/// Bytes of the blocks one tile needs at most: what a budget below it is raised to.
pub fn tile_blocks_bytes(classes: usize, patch: [usize; 3]) -> u64 {
    let side = 1u64 << block_shift(patch);
    tile_blocks(patch) as u64 * classes as u64 * side * side * 4
}

impl Band {
    /// Accumulators for `classes` maps of padded `ps` planes under tiles of `patch`, at most
    /// `planes` planes at once ([`super::band_planes`]); `budget` bytes of them in memory.
    pub(super) fn new(
        classes: usize,
        ps: [usize; 3],
        patch: [usize; 3],
        planes: usize,
        budget: Option<u64>,
        scratch_dir: Option<PathBuf>,
    ) -> Band {
        let shift = block_shift(patch);
        let side = 1usize << shift;
        let nb = [ps[1].div_ceil(side), ps[2].div_ceil(side)];
        let block_bytes = (classes << (2 * shift)) * 4;
        let all = planes.saturating_mul(nb[0] * nb[1]);
        let slots = match budget {
            Some(b) => {
                let b = usize::try_from(b / block_bytes as u64).unwrap_or(usize::MAX);
                all.min(b.max(tile_blocks(patch)))
            }
            None => all,
        };
        Band {
            classes,
            ps,
            shift,
            nb,
            first: 0,
            planes: VecDeque::new(),
            slab: Vec::new(),
            free: (0..slots).rev().collect(),
            dirty: vec![false; slots],
            peak: 0,
            spill: budget.is_some(),
            held: 0,
            peak_held: 0,
            tick: 0,
            lru: BTreeSet::new(),
            scratch: None,
            scratch_dir: scratch_dir.unwrap_or_else(std::env::temp_dir),
            spilled: 0,
        }
    }

    fn block_len(&self) -> usize {
        self.classes << (2 * self.shift)
    }

    pub(super) fn block_bytes(&self) -> usize {
        self.block_len() * 4
    }

    /// The most bytes of blocks in memory at once.
    pub(super) fn peak_bytes(&self) -> u64 {
        (self.peak_held * self.block_bytes()) as u64
    }

    /// Makes sure planes up to `end` (exclusive) exist.
    pub(super) fn reach(&mut self, end: usize) {
        let n = self.nb[0] * self.nb[1];
        while self.first + self.planes.len() < end {
            self.planes.push_back(Plane {
                mem: vec![None; n],
                disk: vec![None; n],
                used: vec![0; n],
            });
        }
        self.peak = self.peak.max(self.planes.len());
    }

    fn scratch_error(&self, what: &str, e: std::io::Error) -> SegmentError {
        SegmentError::Scratch(format!(
            "{what} the accumulators' scratch file in {}: {e} (give another folder, or more \
             accumulator memory)",
            self.scratch_dir.display()
        ))
    }

    fn block(&mut self, slot: usize) -> &mut [f32] {
        let len = self.block_len();
        &mut self.slab[slot * len..][..len]
    }

    /// A zeroed slot: a free one, else that of the least recently used block no tile needs now
    /// (which goes to the scratch file), else (a tile needing more than the budget, which
    /// [`tile_blocks`] rules out) a new one.
    fn slot(&mut self) -> Result<usize, SegmentError> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => match self.evict()? {
                Some(s) => s,
                None => {
                    self.dirty.push(false);
                    self.dirty.len() - 1
                }
            },
        };
        let len = self.block_len();
        if self.slab.len() < (slot + 1) * len {
            // The slab is allocated zeroed (untouched pages cost nothing) at its first use.
            let slots = self.dirty.len().max(slot + 1);
            if self.slab.is_empty() {
                self.slab = vec![0f32; slots * len];
            } else {
                self.slab.resize(slots * len, 0.0);
            }
        }
        if self.dirty[slot] {
            self.block(slot).fill(0.0);
        }
        self.dirty[slot] = true;
        self.held += 1;
        self.peak_held = self.peak_held.max(self.held);
        Ok(slot)
    }

    /// Writes the least recently used block that no tile needs now to the scratch file and
    /// frees its slot; `None` if every block in memory is needed now.
    fn evict(&mut self) -> Result<Option<usize>, SegmentError> {
        if !self.spill {
            return Ok(None);
        }
        // The order puts the blocks of this tick last: if the first is one, all are.
        let Some(&(used, z, b)) = self.lru.first() else {
            return Ok(None);
        };
        if used == self.tick {
            return Ok(None);
        }
        self.lru.remove(&(used, z, b));
        let rel = z - self.first;
        let Some(slot) = self.planes[rel].mem[b].take() else {
            return Ok(None);
        };
        let at = self.write(slot)?;
        self.planes[rel].disk[b] = Some(at);
        self.held -= 1;
        Ok(Some(slot))
    }

    fn write(&mut self, slot: usize) -> Result<u64, SegmentError> {
        if self.scratch.is_none() {
            let file = tempfile::tempfile_in(&self.scratch_dir)
                .map_err(|e| self.scratch_error("creating", e))?;
            self.scratch = Some(Scratch {
                file,
                free: Vec::new(),
                slots: 0,
            });
        }
        let len = self.block_len();
        let raw: Vec<u8> = self.slab[slot * len..][..len]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let Some(s) = self.scratch.as_mut() else {
            return Err(SegmentError::Scratch("no scratch file".into()));
        };
        let at = s.free.pop().unwrap_or_else(|| {
            s.slots += 1;
            s.slots - 1
        });
        let r = write_at(&s.file, &raw, at * raw.len() as u64);
        r.map_err(|e| self.scratch_error("writing", e))?;
        self.spilled += 1;
        Ok(at)
    }

    /// Reads file slot `at` into `data` and frees it.
    fn read(&mut self, at: u64, data: &mut [f32]) -> Result<(), SegmentError> {
        let bytes = data.len() * 4;
        let Some(s) = self.scratch.as_mut() else {
            return Err(SegmentError::Scratch("no scratch file".into()));
        };
        let mut raw = vec![0u8; bytes];
        let r = read_at(&s.file, &mut raw, at * bytes as u64);
        s.free.push(at);
        r.map_err(|e| self.scratch_error("reading", e))?;
        for (v, b) in data.iter_mut().zip(raw.chunks_exact(4)) {
            *v = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        self.spilled += 1;
        Ok(())
    }

    /// Brings block `b` of padded plane `z` into memory for the current tick.
    fn need(&mut self, z: usize, b: usize) -> Result<(), SegmentError> {
        let rel = z - self.first;
        let old = self.planes[rel].used[b];
        self.planes[rel].used[b] = self.tick;
        if self.planes[rel].mem[b].is_some() {
            if self.spill {
                self.lru.remove(&(old, z, b));
                self.lru.insert((self.tick, z, b));
            }
            return Ok(());
        }
        let slot = self.slot()?;
        if let Some(at) = self.planes[rel].disk[b].take() {
            let mut data = vec![0f32; self.block_len()];
            self.read(at, &mut data)?;
            self.block(slot).copy_from_slice(&data);
        }
        self.planes[rel].mem[b] = Some(slot);
        if self.spill {
            self.lru.insert((self.tick, z, b));
        }
        Ok(())
    }

    /// Adds `scale * softmax(logits) * gaussian` of one (mirrored) tile at padded start `s` to
    /// the accumulators, the tile's planes spread over the machine's cores (each voxel is touched
    /// once per tile, so the sums are the same whatever the split).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn accumulate(
        &mut self,
        logits: &[f32],
        patch: [usize; 3],
        s: [usize; 3],
        f: [bool; 3],
        g: &[f32],
        scale: f32,
    ) -> Result<(), SegmentError> {
        self.reach(s[0] + patch[0]);
        self.tick += 1;
        let sh = self.shift;
        let rows = (s[1] >> sh)..=((s[1] + patch[1] - 1) >> sh);
        let cols = (s[2] >> sh)..=((s[2] + patch[2] - 1) >> sh);
        for z in s[0]..s[0] + patch[0] {
            for by in rows.clone() {
                for bx in cols.clone() {
                    self.need(z, by * self.nb[1] + bx)?;
                }
            }
        }
        // Every slot belongs to one block: hand each plane its blocks' slices.
        let len = self.block_len();
        let mut slots: Vec<Option<&mut [f32]>> =
            self.slab.chunks_exact_mut(len).map(Some).collect();
        let first = s[0] - self.first;
        let mut planes: Vec<Vec<&mut [f32]>> = self
            .planes
            .range(first..first + patch[0])
            .map(|p| {
                p.mem
                    .iter()
                    .map(|m| m.and_then(|s| slots[s].take()).unwrap_or_default())
                    .collect()
            })
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(patch[0]);
        let per = patch[0].div_ceil(threads.max(1));
        let (classes, nbx) = (self.classes, self.nb[1]);
        std::thread::scope(|scope| {
            for (k, chunk) in planes.chunks_mut(per).enumerate() {
                let mut work = move || {
                    for (j, blocks) in chunk.iter_mut().enumerate() {
                        // Plane `oz` of the volume holds tile row `z` (mirrored on input).
                        let oz = k * per + j;
                        let z = if f[0] { patch[0] - 1 - oz } else { oz };
                        let at = Blocks { shift: sh, nbx };
                        tile_row(blocks, at, logits, classes, patch, s, f, g, scale, z);
                    }
                };
                if k + 1 == threads {
                    work();
                } else {
                    scope.spawn(work);
                }
            }
        });
        Ok(())
    }

    /// Takes the first plane out whole, `[classes, ps[1], ps[2]]`, into `out` (zeros where no
    /// tile touched it, which tiling never leaves).
    pub(super) fn pop(&mut self, out: &mut Vec<f32>) -> Result<(), SegmentError> {
        self.reach(self.first + 1);
        let (classes, [_, h, w]) = (self.classes, self.ps);
        out.clear();
        out.resize(classes * h * w, 0.0);
        let Some(mut plane) = self.planes.pop_front() else {
            return Ok(());
        };
        let z = self.first;
        self.first += 1;
        let side = 1usize << self.shift;
        let len = self.block_len();
        let mut tmp = vec![0f32; len];
        for b in 0..plane.mem.len() {
            let data: &[f32] = match (plane.mem[b].take(), plane.disk[b].take()) {
                (Some(slot), _) => {
                    if self.spill {
                        self.lru.remove(&(plane.used[b], z, b));
                    }
                    self.free.push(slot);
                    self.held -= 1;
                    &self.slab[slot * len..][..len]
                }
                (None, Some(at)) => {
                    self.read(at, &mut tmp)?;
                    &tmp
                }
                (None, None) => continue,
            };
            let (y0, x0) = ((b / self.nb[1]) * side, (b % self.nb[1]) * side);
            let (bh, bw) = (side.min(h - y0), side.min(w - x0));
            for c in 0..classes {
                for y in 0..bh {
                    let src = &data[(c * side + y) * side..][..bw];
                    out[(c * h + y0 + y) * w + x0..][..bw].copy_from_slice(src);
                }
            }
        }
        // The lowest free slots on top, so the slots in use stay packed.
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        Ok(())
    }
}

/// How a plane's blocks are laid out: `1 << shift` square, `nbx` to a row of blocks.
#[derive(Clone, Copy)]
struct Blocks {
    shift: u32,
    nbx: usize,
}

/// One depth row `z` of a tile added to its plane's blocks (see [`Band::accumulate`]).
#[allow(clippy::too_many_arguments)]
fn tile_row(
    blocks: &mut [&mut [f32]],
    at: Blocks,
    logits: &[f32],
    classes: usize,
    patch: [usize; 3],
    s: [usize; 3],
    f: [bool; 3],
    g: &[f32],
    scale: f32,
    z: usize,
) {
    let tvox: usize = patch.iter().product();
    let (sh, mask) = (at.shift, (1usize << at.shift) - 1);
    let bvox = 1usize << (2 * sh);
    let mut prob = vec![0f32; classes];
    for y in 0..patch[1] {
        for x in 0..patch[2] {
            let t = (z * patch[1] + y) * patch[2] + x;
            let m = (0..classes)
                .map(|c| logits[c * tvox + t])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for (c, p) in prob.iter_mut().enumerate() {
                *p = (logits[c * tvox + t] - m).exp();
                sum += *p;
            }
            let oy = s[1] + if f[1] { patch[1] - 1 - y } else { y };
            let ox = s[2] + if f[2] { patch[2] - 1 - x } else { x };
            let acc = &mut blocks[(oy >> sh) * at.nbx + (ox >> sh)];
            let o = ((oy & mask) << sh) + (ox & mask);
            let w = g[(if f[0] { patch[0] - 1 - z } else { z } * patch[1]
                + if f[1] { patch[1] - 1 - y } else { y })
                * patch[2]
                + if f[2] { patch[2] - 1 - x } else { x }];
            for (c, p) in prob.iter().enumerate() {
                acc[c * bvox + o] += scale * w * p / sum;
            }
        }
    }
}

#[cfg(unix)]
fn write_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(unix)]
fn read_at(file: &File, data: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, data, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, data: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(data)
}
