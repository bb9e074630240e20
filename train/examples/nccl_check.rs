//! NCCL on a GPU, as GPU training uses it (the device check, `scripts/gpu-check.sh` section
//! 2b): opens GPU `N` as a training device, loads NCCL ([`e2enc_train::nccl`]), joins a
//! one-rank communicator on the device's context and stream (`NcclReducer::join`, as the
//! trainer does for rank 0), sums three device buffers of known values through the reducer, on
//! the device's stream and then each started on a second stream and joined as a backward pass
//! does (with one rank the sum
//! is the value itself: this checks the wiring — library, communicator, stream, addresses — not
//! arithmetic across GPUs, which needs two), and compares them bit for bit after the stream has
//! run. It also times the reducer on a buffer of the AMOS-CT network's gradient size.
//!
//! Usage: `nccl_check [GPU] [FLOATS]` (default GPU 0, 25,000,000 floats). Prints one line per
//! check and `PASS`; exit status 1 on any failure.

use e2enc_train::device::gpu;
use e2enc_train::dist::{GradientReducer, NcclReducer, Single};

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn run(ordinal: usize, big: usize) -> Result<(), String> {
    let mut dev =
        gpu(ordinal, e2enc_codegen::target::Target::CudaSm80).map_err(|e| e.to_string())?;
    println!("device: {}", dev.describe());
    let stream = dev
        .cuda_stream()
        .map_err(|e| e.to_string())?
        .ok_or("not a CUDA GPU")?;
    println!("stream: {stream:#x}");
    let t = std::time::Instant::now();
    let mut r = NcclReducer::join(&Single).map_err(|e| e.to_string())?;
    println!(
        "joined: {} in {:.3} s",
        r.engine(),
        t.elapsed().as_secs_f64()
    );
    let lens = [1usize, 1000, 257 * 1024 + 3];
    let mut bufs = Vec::new();
    let mut want = Vec::new();
    for (i, &n) in lens.iter().enumerate() {
        let v: Vec<f32> = (0..n).map(|k| (k as f32 * 0.25 - i as f32).sin()).collect();
        let p = dev
            .alloc(n * 4, "a test buffer")
            .map_err(|e| e.to_string())?;
        dev.upload(p, &bytes(&v)).map_err(|e| e.to_string())?;
        bufs.push((p, n));
        want.push(v);
    }
    // In order on the device's stream, then as a backward pass does: each buffer started on
    // the second stream (after the work issued so far), the device's stream joined after them.
    for how in ["on the stream", "on a second stream, joined"] {
        if how == "on the stream" {
            r.all_reduce(dev.as_mut(), &bufs)
                .map_err(|e| e.to_string())?;
        } else {
            for b in &bufs {
                r.start(dev.as_mut(), std::slice::from_ref(b))
                    .map_err(|e| e.to_string())?;
            }
            r.finish(dev.as_mut()).map_err(|e| e.to_string())?;
        }
        dev.synchronize().map_err(|e| e.to_string())?;
        for ((p, n), w) in bufs.iter().zip(&want) {
            let mut b = vec![0u8; n * 4];
            dev.download(*p, &mut b).map_err(|e| e.to_string())?;
            if b != bytes(w) {
                return Err(format!(
                    "a buffer of {n} floats changed in a one-rank sum ({how})"
                ));
            }
        }
        println!("one-rank sums of {lens:?} floats {how}: unchanged, bit for bit");
    }
    let p = dev
        .alloc(big * 4, "a gradient-sized buffer")
        .map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        r.all_reduce(dev.as_mut(), &[(p, big)])
            .map_err(|e| e.to_string())?;
        dev.synchronize().map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "one-rank all-reduce of {big} floats ({:.1} MB): median {:.3} ms",
        big as f64 * 4e-6,
        times[2] * 1e3
    );
    Ok(())
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let ordinal = a.first().and_then(|s| s.parse().ok()).unwrap_or(0);
    let big = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(25_000_000);
    match run(ordinal, big) {
        Ok(()) => println!("PASS"),
        Err(e) => {
            println!("FAIL: {e}");
            std::process::exit(1);
        }
    }
}
