//! The E2ENet graph builder: model.json → backbone, DSFF fusion grid, transposed convs, max pools
//! and deep-supervision heads, with every weight under its official checkpoint name.
//!
//! Topology (see shared/e2enet.md §1): L levels; backbone nodes x(i,0) with `convs_per_stage` conv
//! units each (the first strided by the previous pool kernel); fusion nodes x(i,j) for j ≥ 1 and
//! i + j ≤ L-1, each the concat [forward x(i,j-1), up ConvT(x(i+1,j-1)), down MaxPool(x(i-1,j-1))]
//! followed by one conv unit (`convs_per_stage` units on the last diagonal), built in UNet++
//! order (each backbone level, then the diagonal it completes); 1x1x1 heads on the
//! last diagonal. A conv unit is depth shift → conv (bias) → instance norm → leaky ReLU. Alongside
//! the graph the builder returns a [`ParamSpec`] per tensor (role, part, level, DSFF-maskable), so
//! initialisation, masks and statistics never re-derive the naming scheme.

use crate::e2enet::config::ModelConfig;
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::{ConvAttrs, Op, PoolAttrs, ShiftAttrs};
use crate::types::TensorType;

/// What a parameter tensor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamRole {
    ConvWeight,
    ConvBias,
    NormWeight,
    NormBias,
    /// Transposed-conv weight `[in, out, kd, kh, kw]`.
    UpWeight,
    HeadWeight,
}

/// Which part of the network a parameter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Backbone,
    Fusion,
    Head,
}

/// One parameter tensor of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Official checkpoint name, e.g. `loc0.4.1.blocks.0.conv.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub role: ParamRole,
    pub part: Part,
    /// Resolution level of the node that owns it.
    pub level: usize,
    /// True for the DSFF-masked tensors: fusion conv weights and transposed-conv weights.
    pub dsff: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Options of one build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub batch: usize,
    /// Overrides the config's patch size (must obey the same divisibility rule).
    pub patch: Option<[usize; 3]>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            batch: 1,
            patch: None,
        }
    }
}

/// A built network: the graph (outputs `logits`, then `ds1..`) and its parameters.
#[derive(Clone, Debug)]
pub struct E2ENet {
    pub graph: Graph,
    pub params: Vec<ParamSpec>,
}

/// Name of graph output `s`: `logits` for the full-resolution head, `ds{s}` for the others.
pub fn output_name(s: usize) -> String {
    if s == 0 {
        "logits".into()
    } else {
        format!("ds{s}")
    }
}

/// Most parameters a built network may have (2^30, 4 GiB as f32; the AMOS-CT preset has 24 M).
pub const MAX_PARAMS: u64 = 1 << 30;

/// Most values one activation may hold (2^34, 64 GiB as f32).
pub const MAX_TENSOR_ELEMS: u64 = 1 << 34;

/// Most channels of the input, the output or any level (2^20).
pub const MAX_CHANNELS: usize = 1 << 20;

/// The product of extents in `u64`, saturating (extents from a file can be anything).
fn saturating_product(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

/// Builds the E2ENet graph of `cfg` (validated first).
pub fn build(cfg: &ModelConfig, opts: &BuildOptions) -> Result<E2ENet, IrError> {
    let mut cfg = cfg.clone();
    if let Some(p) = opts.patch {
        cfg.patch_size = p;
    }
    cfg.validate().map_err(|msg| IrError::Config {
        path: "model config".into(),
        msg,
    })?;
    if opts.batch == 0 {
        return Err(IrError::Config {
            path: "build options".into(),
            msg: "batch must be at least 1".into(),
        });
    }
    // Channel counts enter sums (a concat's channels) before the sizes are checked: bound them
    // first. No network under MAX_PARAMS has a conv with this many channels on both sides.
    let l = cfg.num_levels();
    for (what, c) in [
        ("`in_channels`", cfg.in_channels),
        ("`num_classes`", cfg.num_classes),
        (
            "the widest level (`base_width` doubled per level, up to `max_width`)",
            cfg.width(l - 1),
        ),
    ] {
        if c > MAX_CHANNELS {
            return Err(IrError::Config {
                path: "model config".into(),
                msg: format!("{what} is {c} channels, more than the limit of {MAX_CHANNELS}"),
            });
        }
    }
    let mut b = Builder {
        cfg: &cfg,
        g: Graph::new(if cfg.name.is_empty() {
            "e2enet"
        } else {
            &cfg.name
        }),
        params: Vec::new(),
    };
    let [d, h, w] = cfg.patch_size;
    let x = b.g.input(
        "input",
        TensorType::f32([opts.batch, cfg.in_channels, d, h, w]),
    );

    // x[i][j]: node of level i, column j.
    let mut xs: Vec<Vec<NodeId>> = vec![Vec::new(); l];
    let mut cur = x;
    let mut cin = cfg.in_channels;
    // UNet++ order: backbone level i, then the diagonal of fusion nodes that level completes
    // (x(i-1,1), x(i-2,2), ..., x(0,i)). The graph's node order is its default schedule, and this
    // one keeps few full-resolution values alive at once.
    for i in 0..l {
        let cout = cfg.width(i);
        let n = cfg.convs_per_stage;
        // nnU-Net's bottleneck is two stacks: max(n-1, 1) convs, then one conv.
        let units = if i + 1 == l { n.max(2) } else { n };
        for u in 0..units {
            let prefix = if i + 1 < l {
                format!("conv_blocks_context.{i}.blocks.{u}")
            } else if u + 1 < units {
                format!("conv_blocks_context.{i}.0.blocks.{u}")
            } else {
                format!("conv_blocks_context.{i}.1.blocks.0")
            };
            let stride = if i > 0 && u == 0 {
                cfg.pool_kernels[i - 1]
            } else {
                [1, 1, 1]
            };
            let tag = format!("x{i}_0.u{u}");
            cur = b.conv_unit(cur, cin, cout, stride, &prefix, &tag, Part::Backbone, i)?;
            cin = cout;
        }
        xs[i].push(cur);
        for j in 1..=i {
            let i = i - j;
            let z = l - 1 - (i + j);
            let k = l - 2 - i - z;
            let tag = format!("x{i}_{j}");
            let ci = cfg.width(i);
            let pk = cfg.pool_kernels[i];
            let up_name = format!("up{z}.{k}.weight");
            let up_w = b.param(
                &up_name,
                vec![cfg.width(i + 1), ci, pk[0], pk[1], pk[2]],
                ParamRole::UpWeight,
                Part::Fusion,
                i,
                true,
            );
            let up = b.g.add(
                Op::ConvTranspose3d(ConvAttrs {
                    kernel: pk,
                    stride: pk,
                    padding: [0; 3],
                }),
                &[xs[i + 1][j - 1], up_w],
                Some(format!("{tag}.up")),
            )?;
            let mut parts = vec![xs[i][j - 1], up];
            let mut cat_c = 2 * ci;
            if i > 0 {
                let ppk = cfg.pool_kernels[i - 1];
                let down = b.g.add(
                    Op::MaxPool3d(PoolAttrs {
                        kernel: ppk,
                        stride: ppk,
                    }),
                    &[xs[i - 1][j - 1]],
                    Some(format!("{tag}.down")),
                )?;
                parts.push(down);
                cat_c += cfg.width(i - 1);
            }
            let mut cur = b.g.add(Op::Concat, &parts, Some(format!("{tag}.cat")))?;
            let units = if z == 0 { cfg.convs_per_stage } else { 1 };
            let mut cin = cat_c;
            for u in 0..units {
                let prefix = format!("loc{z}.{k}.{u}.blocks.0");
                let t = format!("{tag}.u{u}");
                cur = b.conv_unit(cur, cin, ci, [1, 1, 1], &prefix, &t, Part::Fusion, i)?;
                cin = ci;
            }
            xs[i].push(cur);
        }
    }

    // Heads on the last diagonal: seg_outputs.s on x(s, L-1-s).
    for s in 0..=cfg.deep_supervision_heads {
        let name = format!("seg_outputs.{s}.weight");
        let wt = b.param(
            &name,
            vec![cfg.num_classes, cfg.width(s), 1, 1, 1],
            ParamRole::HeadWeight,
            Part::Head,
            s,
            false,
        );
        let head = b.g.add(
            Op::Conv3d(ConvAttrs {
                kernel: [1; 3],
                stride: [1; 3],
                padding: [0; 3],
            }),
            &[xs[s][l - 1 - s], wt],
            Some(format!("head{s}")),
        )?;
        b.g.set_output(output_name(s), head);
    }
    // Sizes derived from the config, checked before anything is allocated for them.
    // Saturating: the extents come from the file (found by fuzzing: a conv kernel of 2^53 + 1
    // overflowed the sum).
    let params: u64 = b
        .params
        .iter()
        .map(|p| saturating_product(&p.shape))
        .fold(0, u64::saturating_add);
    if params > MAX_PARAMS {
        return Err(IrError::Config {
            path: "model config".into(),
            msg: format!(
                "the network would have {params} parameters, more than the limit of {MAX_PARAMS} \
                 (base_width {}, max_width {}): far beyond any E2ENet",
                cfg.base_width, cfg.max_width
            ),
        });
    }
    for id in b.g.node_ids() {
        let n = b.g.node(id);
        let elems = saturating_product(&n.ty.shape);
        if elems > MAX_TENSOR_ELEMS {
            return Err(IrError::Config {
                path: "model config".into(),
                msg: format!(
                    "{} would hold {elems} values ({:?}), more than the limit of \
                     {MAX_TENSOR_ELEMS}: the patch {:?} (batch {}) or the widths are far too \
                     large",
                    b.g.describe(id),
                    n.ty.shape,
                    cfg.patch_size,
                    opts.batch
                ),
            });
        }
    }
    Ok(E2ENet {
        graph: b.g,
        params: b.params,
    })
}

struct Builder<'a> {
    cfg: &'a ModelConfig,
    g: Graph,
    params: Vec<ParamSpec>,
}

impl Builder<'_> {
    fn param(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        role: ParamRole,
        part: Part,
        level: usize,
        dsff: bool,
    ) -> NodeId {
        self.params.push(ParamSpec {
            name: name.to_string(),
            shape: shape.clone(),
            role,
            part,
            level,
            dsff,
        });
        self.g.weight(name, TensorType::f32(shape))
    }

    /// shift → conv(+bias) → instance norm → leaky ReLU, weights under `prefix`.
    #[allow(clippy::too_many_arguments)]
    fn conv_unit(
        &mut self,
        x: NodeId,
        cin: usize,
        cout: usize,
        stride: [usize; 3],
        prefix: &str,
        tag: &str,
        part: Part,
        level: usize,
    ) -> Result<NodeId, IrError> {
        let cfg = self.cfg;
        let k = cfg.conv_kernel;
        let dsff = part == Part::Fusion;
        let w = self.param(
            &format!("{prefix}.conv.weight"),
            vec![cout, cin, k[0], k[1], k[2]],
            ParamRole::ConvWeight,
            part,
            level,
            dsff,
        );
        let b = self.param(
            &format!("{prefix}.conv.bias"),
            vec![cout],
            ParamRole::ConvBias,
            part,
            level,
            false,
        );
        let gamma = self.param(
            &format!("{prefix}.instnorm.weight"),
            vec![cout],
            ParamRole::NormWeight,
            part,
            level,
            false,
        );
        let beta = self.param(
            &format!("{prefix}.instnorm.bias"),
            vec![cout],
            ParamRole::NormBias,
            part,
            level,
            false,
        );
        let mut x = x;
        if cfg.shift_groups > 1 {
            // A shift that moves every channel by the level's whole depth or more (more groups
            // than channels does that) leaves the conv's input all zero: a network that computes
            // nothing, refused here rather than trained or run.
            let shape = self.g.node(x).ty.shape.clone();
            if let [_, c, d, _, _] = shape[..] {
                let runs = crate::op::shift_runs(cfg.shift_groups, c);
                if runs.iter().all(|&(s, _)| s.unsigned_abs() as usize >= d) {
                    return Err(IrError::Config {
                        path: "model config".into(),
                        msg: format!(
                            "`shift_groups` {} is too large for `{tag}` ({c} channels, depth \
                             {d}): every channel is shifted by {} slices or more, out of the \
                             volume, so the layer sees only zeros; use at most {} groups",
                            cfg.shift_groups,
                            runs.iter().map(|r| r.0.unsigned_abs()).min().unwrap_or(0),
                            c.min(2 * d.saturating_sub(1) + 1).max(1)
                        ),
                    });
                }
            }
            x = self.g.add(
                Op::DepthShift(ShiftAttrs {
                    groups: cfg.shift_groups,
                }),
                &[x],
                Some(format!("{tag}.shift")),
            )?;
        }
        let conv = self.g.add(
            Op::Conv3d(ConvAttrs {
                kernel: k,
                stride,
                padding: [(k[0] - 1) / 2, (k[1] - 1) / 2, (k[2] - 1) / 2],
            }),
            &[x, w, b],
            Some(format!("{tag}.conv")),
        )?;
        let norm = self.g.add(
            Op::InstanceNorm { eps: cfg.norm_eps },
            &[conv, gamma, beta],
            Some(format!("{tag}.norm")),
        )?;
        self.g.add(
            Op::LeakyRelu {
                slope: cfg.negative_slope,
            },
            &[norm],
            Some(format!("{tag}.act")),
        )
    }
}
