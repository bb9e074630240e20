//! The e-class analysis: the type of every value (through `e2enc_ir::shape::infer`, the single
//! source of shape truth), whether it is a constant (built only from weights), and for constant
//! weights the kernel-level liveness mask: which `[d0, d1]` kernels hold a non-zero value. From
//! that mask the rules read edge-level facts (all kernels reading one concatenated input are dead)
//! and channel-level facts (an input channel no kernel reads).

use std::collections::HashMap;
use std::sync::Arc;

use e2enc_ir::{shape, DType, Op, TensorType, Weights};
use egg::{Analysis, DidMerge, EGraph, Id, Symbol};

use super::lang::{dec_f32, dec_fused, dec_geom, dec_pool, dec_select, Lang};

/// Which `[d0, d1]` kernels of a constant are live (hold a non-zero value), row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KMask {
    pub d0: usize,
    pub d1: usize,
    pub live: Vec<bool>,
}

impl KMask {
    /// The mask of a dense tensor of rank >= 3 (`[d0, d1, kernel...]`).
    pub fn of_tensor(shape: &[usize], data: &[f32]) -> Option<KMask> {
        if shape.len() < 3 {
            return None;
        }
        let kvol: usize = shape[2..].iter().product();
        let live = if kvol == 0 {
            vec![false; shape[0] * shape[1]]
        } else {
            data.chunks(kvol)
                .map(|k| k.iter().any(|v| *v != 0.0))
                .collect()
        };
        Some(KMask {
            d0: shape[0],
            d1: shape[1],
            live,
        })
    }

    pub fn n_live(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }

    pub fn at(&self, i: usize, j: usize) -> bool {
        self.live[i * self.d1 + j]
    }

    /// The mask after selecting `ranges` along `axis` (0 or 1).
    pub fn select(&self, axis: usize, ranges: &[(usize, usize)]) -> Option<KMask> {
        let idx: Vec<usize> = ranges.iter().flat_map(|&(a, b)| a..b).collect();
        match axis {
            0 => Some(KMask {
                d0: idx.len(),
                d1: self.d1,
                live: idx
                    .iter()
                    .flat_map(|&i| (0..self.d1).map(move |j| (i, j)))
                    .map(|(i, j)| self.at(i, j))
                    .collect(),
            }),
            1 => Some(KMask {
                d0: self.d0,
                d1: idx.len(),
                live: (0..self.d0)
                    .flat_map(|i| idx.iter().map(move |&j| (i, j)))
                    .map(|(i, j)| self.at(i, j))
                    .collect(),
            }),
            _ => None,
        }
    }

    /// Whether index `c` of `axis` (0 or 1) has no live kernel.
    pub fn dead_along(&self, axis: usize, c: usize) -> bool {
        if axis == 0 {
            (0..self.d1).all(|j| !self.at(c, j))
        } else {
            (0..self.d0).all(|i| !self.at(i, c))
        }
    }
}

/// What the analysis knows about one e-class.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// The value's type (`None` for attribute leaves and `none`).
    pub ty: Option<TensorType>,
    /// Built only from weights: computable at compile time.
    pub konst: bool,
    /// Kernel liveness of a constant of rank >= 3.
    pub kmask: Option<Arc<KMask>>,
    pub num: Option<i64>,
    pub sym: Option<Symbol>,
}

/// The analysis context: the weight store (for masks and weight types) and the input types.
#[derive(Clone, Default)]
pub struct Ctx {
    pub weights: Arc<Weights>,
    pub inputs: HashMap<Symbol, TensorType>,
}

pub type EG = EGraph<Lang, Ctx>;

/// The IR op an e-node stands for and its operand classes (attributes and `none` removed), or
/// `None` for leaves, weight transforms and the root.
pub fn ir_op(eg: &EG, n: &Lang) -> Option<(Op, Vec<Id>)> {
    let sym = |id: Id| eg[id].data.sym.map(|s| s.as_str().to_owned());
    let present = |ids: &[Id]| -> Vec<Id> {
        ids.iter()
            .copied()
            .filter(|&i| !matches!(eg[i].nodes.first(), Some(Lang::None)))
            .collect()
    };
    Some(match n {
        Lang::Conv([g, x, w, b]) => (Op::Conv3d(dec_geom(&sym(*g)?)?), present(&[*x, *w, *b])),
        Lang::ConvT([g, x, w, b]) => (
            Op::ConvTranspose3d(dec_geom(&sym(*g)?)?),
            present(&[*x, *w, *b]),
        ),
        Lang::Shift([g, x]) => (
            Op::DepthShift(e2enc_ir::ShiftAttrs {
                groups: usize::try_from(eg[*g].data.num?).ok()?,
            }),
            vec![*x],
        ),
        Lang::INorm([e, x, g, b]) => (
            Op::InstanceNorm {
                eps: dec_f32(&sym(*e)?)?,
            },
            vec![*x, *g, *b],
        ),
        Lang::LRelu([s, x]) => (
            Op::LeakyRelu {
                slope: dec_f32(&sym(*s)?)?,
            },
            vec![*x],
        ),
        Lang::MaxPool([p, x]) => (Op::MaxPool3d(dec_pool(&sym(*p)?)?), vec![*x]),
        Lang::Concat(xs) => (Op::Concat, xs.to_vec()),
        Lang::Add([a, b]) => (Op::Add, vec![*a, *b]),
        Lang::Softmax([x]) => (Op::Softmax, vec![*x]),
        Lang::Argmax([x]) => (Op::Argmax, vec![*x]),
        Lang::Select([s, x]) => {
            let (axis, ranges) = dec_select(&sym(*s)?)?;
            (Op::SelectChannels { axis, ranges }, vec![*x])
        }
        Lang::FConv([a, rest @ ..]) => (Op::FusedConv3d(dec_fused(&sym(*a)?)?), present(rest)),
        _ => return None,
    })
}

impl Analysis<Lang> for Ctx {
    type Data = Data;

    fn make(eg: &mut EG, n: &Lang, _id: Id) -> Data {
        let mut d = Data::default();
        match n {
            Lang::Num(v) => d.num = Some(*v),
            Lang::Sym(s) => d.sym = Some(*s),
            Lang::None | Lang::Outputs(_) => {}
            Lang::Input([name]) => {
                d.ty = eg[*name]
                    .data
                    .sym
                    .and_then(|s| eg.analysis.inputs.get(&s).cloned());
            }
            Lang::Weight([name]) => {
                if let Some(t) = eg[*name]
                    .data
                    .sym
                    .and_then(|s| eg.analysis.weights.get(s.as_str()))
                {
                    d.ty = Some(t.ty());
                    d.konst = true;
                    d.kmask = t
                        .as_f32()
                        .and_then(|v| KMask::of_tensor(t.shape(), v))
                        .map(Arc::new);
                }
            }
            Lang::Pack([_, w]) | Lang::KIdx([_, w]) => {
                let wd = &eg[*w].data;
                if let (Some(m), Some(t)) = (&wd.kmask, &wd.ty) {
                    let n_live = m.n_live();
                    d.ty = Some(if matches!(n, Lang::Pack(_)) {
                        let mut s = vec![n_live];
                        s.extend_from_slice(&t.shape[2..]);
                        TensorType::f32(s)
                    } else {
                        TensorType::new(DType::I32, vec![n_live, 2])
                    });
                    d.konst = true;
                }
            }
            _ => {
                if let Some((op, args)) = ir_op(eg, n) {
                    let tys: Option<Vec<&TensorType>> =
                        args.iter().map(|&a| eg[a].data.ty.as_ref()).collect();
                    d.ty = tys.and_then(|t| shape::infer(&op, &t).ok());
                    d.konst = d.ty.is_some() && args.iter().all(|&a| eg[a].data.konst);
                    if let (Op::SelectChannels { axis, ranges }, true) = (&op, d.konst) {
                        d.kmask = eg[args[0]]
                            .data
                            .kmask
                            .as_ref()
                            .and_then(|m| m.select(*axis, ranges))
                            .map(Arc::new);
                    }
                }
            }
        }
        d
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        let mut changed_b = false;
        macro_rules! take {
            ($f:ident) => {
                match (&a.$f, &b.$f) {
                    (None, Some(_)) => {
                        a.$f = b.$f.clone();
                        changed_a = true;
                    }
                    (Some(_), None) => changed_b = true,
                    _ => {}
                }
            };
        }
        take!(ty);
        take!(kmask);
        take!(num);
        take!(sym);
        if a.konst != b.konst {
            if b.konst {
                changed_a = true;
            } else {
                changed_b = true;
            }
            a.konst = true;
        }
        DidMerge(changed_a, changed_b)
    }
}
