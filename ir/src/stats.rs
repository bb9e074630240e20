//! Parameter and MAC counts: dense, and with pruned (all-zero) [out, in] kernels skipped.
//!
//! MACs are multiply-accumulates of the convolutions, transposed convolutions and heads (the
//! work that dominates; norms, activations, pools and shifts are not counted). A conv computes
//! `out_voxels * out_ch * in_ch * kernel_volume` MACs dense; a transposed conv
//! `in_voxels * in_ch * out_ch * kernel_volume`. Skipping pruned kernels multiplies by the fraction
//! of live kernels. Live kernels are read from the weights when they are known; the parameter
//! count with pruned kernels removed (`live_params`) is what the paper reports as the sparse
//! model's size (biases that happen to be zero still count: they are not pruned).

use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::weights::Weights;

/// One convolution's counts.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerStats {
    pub node: NodeId,
    /// The node's label (or the weight name).
    pub label: String,
    pub weight: String,
    pub op: &'static str,
    /// Output shape.
    pub out_shape: Vec<usize>,
    /// [d0, d1] kernels in the weight.
    pub kernels: usize,
    /// Kernels with at least one non-zero value (`kernels` when weights are unknown).
    pub live_kernels: usize,
    pub dense_macs: u64,
    pub sparse_macs: u64,
}

/// Whole-graph counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphStats {
    pub layers: Vec<LayerStats>,
    pub params: u64,
    /// Parameters left when pruned (all-zero) [d0, d1] kernels are removed: what a sparse
    /// format stores (`None` when weights are unknown).
    pub live_params: Option<u64>,
    pub dense_macs: u64,
    pub sparse_macs: u64,
    pub weight_tensors: usize,
}

/// Number of [d0, d1] kernels of `t` that are not all zero.
pub fn live_kernels(t: &Tensor) -> usize {
    let s = t.shape();
    if s.len() < 2 {
        return 0;
    }
    let kvol: usize = s[2..].iter().product();
    match t.as_f32() {
        Some(v) if kvol > 0 => v
            .chunks(kvol)
            .filter(|k| k.iter().any(|x| *x != 0.0))
            .count(),
        _ => 0,
    }
}

/// Counts for `g`; `weights` (if any) give non-zero counts and live kernels.
pub fn graph_stats(g: &Graph, weights: Option<&Weights>) -> GraphStats {
    let mut st = GraphStats::default();
    let mut live = 0u64;
    for (name, id) in g.weights() {
        let ty = &g.node(id).ty;
        st.weight_tensors += 1;
        if ty.dtype == crate::types::DType::I32 {
            continue; // kernel indices of sparse convs are bookkeeping, not parameters
        }
        st.params += ty.numel() as u64;
        live += match weights.and_then(|w| w.get(&name)) {
            Some(t) if ty.rank() == 5 => {
                (live_kernels(t) * ty.shape[2..].iter().product::<usize>()) as u64
            }
            _ => ty.numel() as u64,
        };
    }
    st.live_params = weights.map(|_| live);
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids().collect());
    for id in order {
        let node = g.node(id);
        let (transposed, sparse_out) = match &node.op {
            Op::Conv3d(_) => (false, None),
            Op::ConvTranspose3d(_) => (true, None),
            Op::FusedConv3d(a) => (a.transposed, a.sparse_out),
            _ => continue,
        };
        let ops = g.operands(id);
        let (Some(&x), Some(&wid)) = (ops.first(), ops.get(1)) else {
            continue;
        };
        let wty = &g.node(wid).ty;
        let xty = &g.node(x).ty;
        if xty.rank() != 5 || wty.rank() != 5 - usize::from(sparse_out.is_some()) {
            continue;
        }
        let wname = match &g.node(wid).op {
            Op::Weight { name } => name.clone(),
            _ => String::new(),
        };
        // Dense-equivalent kernels, live kernels and kernel volume.
        let (kernels, kvol, live) = match sparse_out {
            Some(o) => (
                o * xty.shape[1],
                wty.shape[1..].iter().product::<usize>(),
                wty.shape[0],
            ),
            None => {
                let k = wty.shape[0] * wty.shape[1];
                let live = weights
                    .and_then(|w| w.get(&wname))
                    .map(|t| live_kernels(t))
                    .unwrap_or(k);
                (k, wty.shape[2..].iter().product::<usize>(), live)
            }
        };
        let kvol = kvol as u64;
        let voxels = |s: &[usize]| -> u64 { (s[0] * s[2..].iter().product::<usize>()) as u64 };
        let vox = if transposed {
            voxels(&xty.shape)
        } else {
            voxels(&node.ty.shape)
        };
        let dense = vox * kernels as u64 * kvol;
        let sparse = vox * live as u64 * kvol;
        st.dense_macs += dense;
        st.sparse_macs += sparse;
        st.layers.push(LayerStats {
            node: id,
            label: node.label.clone().unwrap_or_else(|| wname.clone()),
            weight: wname,
            op: node.op.mnemonic(),
            out_shape: node.ty.shape.clone(),
            kernels,
            live_kernels: live,
            dense_macs: dense,
            sparse_macs: sparse,
        });
    }
    st
}
