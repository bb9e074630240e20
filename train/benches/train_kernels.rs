//! Throughput of the training convolution kernels on E2ENet's hot shapes (`cargo bench -p
//! e2enc-train --bench train_kernels`): GFLOP/s (2 flops per multiply-add) of the forward,
//! backward-data and backward-weight kernels at 1 and 2 threads, dense and at density 0.2.
//! A plain `Instant` loop (best of several runs); nothing here asserts a time.

use std::time::Instant;

use e2enc_ir::ConvAttrs;
use e2enc_train::kernels as k;

use k::noise;

/// Best wall time of `reps` runs of `f`, in seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn case(name: &str, xs: [usize; 5], co: usize, a: ConvAttrs, transposed: bool, density: f64) {
    let ws = if transposed {
        [xs[1], co, a.kernel[0], a.kernel[1], a.kernel[2]]
    } else {
        [co, xs[1], a.kernel[0], a.kernel[1], a.kernel[2]]
    };
    let ys = if transposed {
        k::conv_transpose3d_output_shape(xs, ws, &a).unwrap()
    } else {
        k::conv3d_output_shape(xs, ws, &a).unwrap()
    };
    let x = noise(xs.iter().product(), 1);
    let w = noise(ws.iter().product(), 2);
    let dy = noise(ys.iter().product(), 3);
    let pairs = ws[0] * ws[1];
    let live: Vec<bool> = (0..pairs)
        .map(|i| ((i * 7919) % 1000) as f64 / 1000.0 < density)
        .collect();
    let mask = (density < 1.0).then_some(&live[..]);
    let nlive = mask.map_or(pairs, |m| m.iter().filter(|&&b| b).count());
    let narrow = if transposed { &xs } else { &ys };
    let macs =
        narrow[0] * narrow[2] * narrow[3] * narrow[4] * nlive * a.kernel.iter().product::<usize>();
    let gf = |t: f64| 2.0 * macs as f64 / t / 1e9;
    let mut y = vec![0f32; ys.iter().product()];
    let mut dx = vec![0f32; x.len()];
    let mut dw = vec![0f32; w.len()];
    let input = [xs[2], xs[3], xs[4]];
    for threads in [1, 2] {
        let tf = best(5, || {
            if transposed {
                k::conv_transpose3d(&x, xs, &w, ws, None, &a, mask, &mut y, threads).unwrap()
            } else {
                k::conv3d(&x, xs, &w, ws, None, &a, mask, &mut y, threads).unwrap()
            }
        });
        let td = best(5, || {
            k::conv_backward_data(
                &dy, ys, &w, ws, &a, transposed, input, mask, &mut dx, threads,
            )
            .unwrap()
        });
        let tw = best(5, || {
            k::conv_backward_weight(&x, xs, &dy, ys, &a, transposed, mask, &mut dw, threads)
                .unwrap()
        });
        println!(
            "{name:<44} density {density:.1} threads {threads}: fwd {:6.2} ms {:5.1} GF/s | data {:6.2} ms {:5.1} GF/s | weight {:6.2} ms {:5.1} GF/s",
            tf * 1e3, gf(tf), td * 1e3, gf(td), tw * 1e3, gf(tw)
        );
    }
}

fn main() {
    let c133 = |s: usize| ConvAttrs {
        kernel: [1, 3, 3],
        stride: [s, s, s],
        padding: [0, 1, 1],
    };
    case(
        "conv 1x3x3 16->16 32^3",
        [1, 16, 32, 32, 32],
        16,
        c133(1),
        false,
        1.0,
    );
    case(
        "conv 1x3x3 16->16 32^3",
        [1, 16, 32, 32, 32],
        16,
        c133(1),
        false,
        0.2,
    );
    case(
        "conv 1x3x3 32->32 16^3 batch 2",
        [2, 32, 16, 16, 16],
        32,
        c133(1),
        false,
        1.0,
    );
    case(
        "conv 1x3x3 s2 16->32 32^3",
        [1, 16, 32, 32, 32],
        32,
        c133(2),
        false,
        1.0,
    );
    case(
        "conv 1x3x3 4->16 64^3",
        [1, 4, 64, 64, 64],
        16,
        c133(1),
        false,
        1.0,
    );
    let t2 = ConvAttrs {
        kernel: [2, 2, 2],
        stride: [2, 2, 2],
        padding: [0, 0, 0],
    };
    case(
        "conv_transpose 2x2x2 s2 32->16 16^3",
        [1, 32, 16, 16, 16],
        16,
        t2,
        true,
        1.0,
    );
    let h1 = ConvAttrs {
        kernel: [1, 1, 1],
        stride: [1, 1, 1],
        padding: [0, 0, 0],
    };
    case(
        "head 1x1x1 16->4 32^3",
        [1, 16, 32, 32, 32],
        4,
        h1,
        false,
        1.0,
    );
}
