//! Read time and peak memory of `nifti::read` on a big volume, and files to measure it on.
//!
//! ```sh
//! cargo run --release -p e2enc-segment --example nifti_bench -- gen DIR   # CT-sized test files
//! cargo run --release -p e2enc-segment --example nifti_bench -- read FILE [RUNS]
//! cargo run --release -p e2enc-segment --example nifti_bench -- write FILE OUT_DIR
//! ```
//!
//! `gen` writes a 512x512x300 volume (a CT's size) as float32 and int16, plain and gzipped.
//! `read` reads FILE RUNS times (default 3) and prints each time and the process's peak resident
//! memory (VmHWM); run it once per file, since the peak is the process's. `write` reads FILE and
//! times writing it back with `write_f32` as `.nii` and as `.nii.gz` into OUT_DIR.

use std::path::Path;
use std::time::Instant;

use e2enc_segment::nifti;

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn gen(dir: &Path) {
    let dims = [512, 512, 300];
    let n = dims[0] * dims[1] * dims[2];
    // A smooth field with noise-like detail, so gzip has real work to do.
    let data: Vec<f32> = (0..n)
        .map(|i| {
            let (x, y, z) = (i % 512, (i / 512) % 512, i / (512 * 512));
            let h = (i as u32).wrapping_mul(2654435761) >> 22;
            ((x as f32 * 0.05).sin() + (y as f32 * 0.03).cos()) * 400.0 + z as f32 + h as f32
                - 1000.0
        })
        .collect();
    let mut h = nifti::Header::new(dims, [0.7, 0.7, 1.25]);
    h.qform_code = 1;
    for name in ["ct_f32.nii", "ct_f32.nii.gz"] {
        nifti::write_f32(&dir.join(name), &h, dims, &data).expect("write");
    }
    // int16: the f32 file's header with datatype 4 and bitpix 16, then the values rounded.
    let head = std::fs::read(dir.join("ct_f32.nii")).expect("read back")[..352].to_vec();
    let mut bytes = head;
    bytes[70..72].copy_from_slice(&4i16.to_le_bytes());
    bytes[72..74].copy_from_slice(&16i16.to_le_bytes());
    bytes.extend(data.iter().flat_map(|&v| (v.round() as i16).to_le_bytes()));
    std::fs::write(dir.join("ct_i16.nii"), &bytes).expect("write");
    println!("wrote {} (512x512x300)", dir.display());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") if args.len() == 2 => gen(Path::new(&args[1])),
        Some("read") if args.len() >= 2 => {
            let runs: usize = args.get(2).map_or(3, |r| r.parse().expect("RUNS"));
            let p = Path::new(&args[1]);
            for _ in 0..runs {
                let t = Instant::now();
                let v = nifti::read(p).unwrap_or_else(|e| panic!("{e}"));
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let sum: f64 = v.data.iter().map(|&x| x as f64).sum();
                println!(
                    "{}: {:?} read in {ms:.0} ms (sum {sum:.6e}), peak RSS {:.0} MiB",
                    p.display(),
                    v.dims,
                    peak_rss_mib()
                );
            }
        }
        Some("write") if args.len() == 3 => {
            let v = nifti::read(Path::new(&args[1])).unwrap_or_else(|e| panic!("{e}"));
            for name in ["out.nii", "out.nii.gz"] {
                let p = Path::new(&args[2]).join(name);
                let t = Instant::now();
                nifti::write_f32(&p, &v.header, v.dims, &v.data).unwrap_or_else(|e| panic!("{e}"));
                let ms = t.elapsed().as_secs_f64() * 1e3;
                println!("{}: written in {ms:.0} ms", p.display());
            }
        }
        _ => {
            eprintln!(
                "usage: nifti_bench gen DIR | nifti_bench read FILE [RUNS] | nifti_bench write FILE OUT_DIR"
            );
            std::process::exit(2);
        }
    }
}
