//! The cost model of extraction: FLOPs + bytes moved (at a machine balance of
//! [`FLOPS_PER_BYTE`]) + a per-kernel penalty, computed per e-node from the analysis types.
//! Constants (weights and their transforms) cost nothing at run time; a concat costs almost
//! nothing because its producers write into slices of one buffer; a standalone shift, select,
//! norm or activation costs a full pass over memory, which is what fusing saves.

use e2enc_ir::Op;

use super::analysis::{ir_op, EG};
use super::lang::Lang;

/// How many FLOPs one byte of memory traffic is worth (2 cores: ~80 GFLOP/s vs ~10 GB/s).
pub const FLOPS_PER_BYTE: f64 = 8.0;
/// The fixed cost of launching one kernel (thread-pool round trip, loop setup), in FLOPs.
pub const KERNEL_PENALTY: f64 = 2.0e5;
/// Sparse kernels index their weights: a live MAC costs a little more than a dense one.
pub const SPARSE_OVERHEAD: f64 = 1.05;

/// Multiply-accumulates of a convolution node (dense, or live kernels only when sparse).
pub fn conv_macs(eg: &EG, n: &Lang) -> Option<f64> {
    let (op, args) = ir_op(eg, n)?;
    let x = eg[args[0]].data.ty.as_ref()?;
    let w = eg[args[1]].data.ty.as_ref()?;
    let (transposed, sparse) = match &op {
        Op::Conv3d(_) => (false, false),
        Op::ConvTranspose3d(_) => (true, false),
        Op::FusedConv3d(a) => (a.transposed, a.sparse_out.is_some()),
        _ => return None,
    };
    let out = eg.lookup(n.clone()).and_then(|id| eg[id].data.ty.clone())?;
    let vox = |s: &[usize]| (s[0] * s[2..].iter().product::<usize>()) as f64;
    let spatial = if transposed {
        vox(&x.shape)
    } else {
        vox(&out.shape)
    };
    let kernels = if sparse {
        w.shape[0] as f64
    } else {
        (w.shape[0] * w.shape[1]) as f64
    };
    let kvol: usize = w.shape[if sparse { 1 } else { 2 }..].iter().product();
    Some(spatial * kernels * kvol as f64)
}

/// The cost of one e-node (its children excluded).
pub fn node_cost(eg: &EG, n: &Lang) -> f64 {
    let bytes = |id| {
        eg[id]
            .data
            .ty
            .as_ref()
            .map_or(0.0, |t| t.size_bytes() as f64)
    };
    let out_bytes = eg.lookup(n.clone()).map_or(0.0, bytes);
    let pass = |inputs: &[egg::Id]| -> f64 {
        let moved: f64 = inputs.iter().map(|&i| bytes(i)).sum::<f64>() + out_bytes;
        moved * FLOPS_PER_BYTE + KERNEL_PENALTY
    };
    match n {
        Lang::None
        | Lang::Num(_)
        | Lang::Sym(_)
        | Lang::Input(_)
        | Lang::Weight(_)
        | Lang::Outputs(_) => 0.0,
        Lang::Pack(_) | Lang::KIdx(_) => 0.0,
        Lang::Select([_, x]) if eg[*x].data.konst => 0.0,
        Lang::Concat(_) => 1.0,
        Lang::Conv([_, x, w, _]) | Lang::ConvT([_, x, w, _]) => {
            2.0 * conv_macs(eg, n).unwrap_or(f64::INFINITY) + pass(&[*x, *w])
        }
        Lang::FConv([a, x, w, k, ..]) => {
            let sparse = !matches!(eg[*k].nodes.first(), Some(Lang::None));
            let flops = 2.0
                * conv_macs(eg, n).unwrap_or(f64::INFINITY)
                * if sparse { SPARSE_OVERHEAD } else { 1.0 };
            let attrs = eg[*a]
                .data
                .sym
                .and_then(|s| super::lang::dec_fused(s.as_str()));
            // A fused norm re-reads the output once for its statistics; the apply pass (norm and
            // activation) rewrites it in place.
            let epilogue = match attrs {
                Some(f) if f.norm_eps.is_some() => 3.0 * out_bytes * FLOPS_PER_BYTE,
                Some(f) if f.slope.is_some() => 2.0 * out_bytes * FLOPS_PER_BYTE,
                _ => 0.0,
            };
            flops + pass(&[*x, *w]) + epilogue
        }
        Lang::INorm([_, x, ..]) => pass(&[*x, *x]),
        Lang::Shift([_, x])
        | Lang::LRelu([_, x])
        | Lang::MaxPool([_, x])
        | Lang::Select([_, x])
        | Lang::Softmax([x])
        | Lang::Argmax([x]) => pass(&[*x]),
        Lang::Add([a, b]) => pass(&[*a, *b]),
    }
}
