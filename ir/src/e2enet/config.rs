//! `model.json`: the versioned, documented description of one E2ENet (schema version 1).
//!
//! The schema is strict: unknown fields and wrong types are errors with line and column, and
//! `validate` rejects impossible configurations (patch not divisible by the pooling, even kernels,
//! too many deep-supervision heads, ...) with a message naming the field. See `docs/model-json.md`
//! for the user-facing reference; the field docs below are the same text.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::IrError;

/// The value of the `format` field.
pub const FORMAT: &str = "e2enc-model";
/// The schema version this build reads and writes.
pub const VERSION: u32 = 1;

/// Most conv units per stage `validate` accepts (the released network has 2).
pub const MAX_CONVS_PER_STAGE: usize = 64;

/// One E2ENet, as written in model.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Always `"e2enc-model"`.
    pub format: String,
    /// Schema version; this build reads version 1.
    pub version: u32,
    /// Free-form model name (used for the graph name).
    #[serde(default)]
    pub name: String,
    /// Image channels (modalities): 1 for CT, 4 for BraTS.
    pub in_channels: usize,
    /// Segmentation classes including background.
    pub num_classes: usize,
    /// Channels at full resolution; doubled at each level (released code: 48).
    #[serde(default = "defaults::base_width")]
    pub base_width: usize,
    /// Cap on the channels of any level (nnU-Net's 320).
    #[serde(default = "defaults::max_width")]
    pub max_width: usize,
    /// Number of resolution levels: `pool_kernels.len() + 1` (released code: 6). Optional; when
    /// given it must agree with `pool_kernels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<usize>,
    /// Down-sampling factor (D, H, W) of each level transition, from the nnU-Net plans.
    pub pool_kernels: Vec<[usize; 3]>,
    /// Kernel of every backbone and fusion convolution (released code: 1x3x3). Odd extents;
    /// padding is (k-1)/2 per axis.
    #[serde(default = "defaults::conv_kernel")]
    pub conv_kernel: [usize; 3],
    /// Depth-shift channel groups before each convolution (released code: 5, paper: 3); 1 turns
    /// the shift off.
    #[serde(default = "defaults::shift_groups")]
    pub shift_groups: usize,
    /// Conv units per backbone level and per last-diagonal fusion node (released: 2).
    #[serde(default = "defaults::convs_per_stage")]
    pub convs_per_stage: usize,
    /// Auxiliary deep-supervision heads `ds1..` on x(1,L-2), x(2,L-3), ... (released: 3).
    #[serde(default = "defaults::deep_supervision_heads")]
    pub deep_supervision_heads: usize,
    /// Patch (D, H, W) the network is built for; divisible by the product of the pool kernels.
    pub patch_size: [usize; 3],
    /// Instance-norm epsilon.
    #[serde(default = "defaults::norm_eps")]
    pub norm_eps: f32,
    /// Leaky-ReLU negative slope.
    #[serde(default = "defaults::negative_slope")]
    pub negative_slope: f32,
    /// Weights file (safetensors, official checkpoint names), relative to model.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Kernel-level DSFF masks (safetensors, same names as the weights, shape = the weight's
    /// first two dimensions, 0/1), relative to model.json. Applied to the weights on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<String>,
    /// Dynamic sparse feature fusion settings (used by `init` and training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsff: Option<DsffConfig>,
    /// nnU-Net preprocessing for `e2enc segment` (axis order, target spacing, normalization);
    /// its schema belongs to `e2enc-segment` (`e2enc_segment::preprocess`), which validates
    /// it; the IR carries it opaquely into bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<serde_json::Value>,
}

/// DSFF densities: the fraction of [out, in] kernels kept in each fusion conv and transposed conv.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsffConfig {
    /// Density of every maskable layer (released README: 0.2; paper: 0.3/0.2/0.1).
    pub density: f64,
    /// Density of the level-0 fusion convs (the released code hard-codes 0.2).
    #[serde(default = "defaults::level0_density")]
    pub level0_density: f64,
}

mod defaults {
    pub fn base_width() -> usize {
        48
    }
    pub fn max_width() -> usize {
        320
    }
    pub fn conv_kernel() -> [usize; 3] {
        [1, 3, 3]
    }
    pub fn shift_groups() -> usize {
        5
    }
    pub fn convs_per_stage() -> usize {
        2
    }
    pub fn deep_supervision_heads() -> usize {
        3
    }
    pub fn norm_eps() -> f32 {
        1e-5
    }
    pub fn negative_slope() -> f32 {
        0.01
    }
    pub fn level0_density() -> f64 {
        0.2
    }
}

impl ModelConfig {
    /// A small E2ENet for tests, examples and benchmarks: one input channel, three classes,
    /// widths `width` doubling up to `2 * width`, `levels - 1` pools of (2,2,2) (`iso`) or
    /// (1,2,2), `groups` shift groups, as many deep-supervision heads as the levels allow, and
    /// the smallest patch the pools divide (set `patch_size` for another).
    pub fn small(levels: usize, width: usize, groups: usize, iso: bool) -> ModelConfig {
        let mut c = ModelConfig::amos_ct();
        c.name = "small".into();
        c.in_channels = 1;
        c.num_classes = 3;
        c.base_width = width;
        c.max_width = 2 * width;
        c.pool_kernels = vec![if iso { [2, 2, 2] } else { [1, 2, 2] }; levels.max(2) - 1];
        c.shift_groups = groups;
        c.deep_supervision_heads = c.deep_supervision_heads.min(levels.saturating_sub(2));
        let f = 1 << (levels.max(2) - 1);
        c.patch_size = [if iso { f } else { 1 }, f, f];
        c
    }

    /// The released AMOS-CT configuration: 1 channel, 16 classes, five (2,2,2) pools, 128^3.
    pub fn amos_ct() -> ModelConfig {
        ModelConfig {
            format: FORMAT.into(),
            version: VERSION,
            name: "e2enet-amos-ct".into(),
            in_channels: 1,
            num_classes: 16,
            base_width: defaults::base_width(),
            max_width: defaults::max_width(),
            levels: None,
            pool_kernels: vec![[2, 2, 2]; 5],
            conv_kernel: defaults::conv_kernel(),
            shift_groups: defaults::shift_groups(),
            convs_per_stage: defaults::convs_per_stage(),
            deep_supervision_heads: defaults::deep_supervision_heads(),
            patch_size: [128, 128, 128],
            norm_eps: defaults::norm_eps(),
            negative_slope: defaults::negative_slope(),
            weights: None,
            masks: None,
            dsff: None,
            preprocessing: None,
        }
    }

    /// Parses and validates model.json text; `path` names the file in errors.
    pub fn from_json(text: &str, path: &str) -> Result<ModelConfig, IrError> {
        let cfg: ModelConfig = serde_json::from_str(text).map_err(|e| IrError::Config {
            path: path.to_string(),
            msg: e.to_string(),
        })?;
        cfg.validate().map_err(|msg| IrError::Config {
            path: path.to_string(),
            msg,
        })?;
        Ok(cfg)
    }

    /// Reads and validates a model.json file.
    pub fn load(path: &Path) -> Result<ModelConfig, IrError> {
        let text = crate::files::read_text(path)?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("config serializes");
        s.push('\n');
        s
    }

    /// Number of resolution levels L.
    pub fn num_levels(&self) -> usize {
        self.pool_kernels.len() + 1
    }

    /// Channels of level `i`: `min(base_width * 2^i, max_width)`.
    pub fn width(&self, level: usize) -> usize {
        let w = self
            .base_width
            .saturating_mul(1usize.checked_shl(level as u32).unwrap_or(usize::MAX));
        w.min(self.max_width)
    }

    /// Spatial extent (D, H, W) of level `i` for the configured patch.
    pub fn level_extent(&self, level: usize) -> [usize; 3] {
        let mut e = self.patch_size;
        for pk in &self.pool_kernels[..level] {
            for ax in 0..3 {
                e[ax] /= pk[ax];
            }
        }
        e
    }

    /// Checks every rule of the schema; the message names the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "`format` must be \"{FORMAT}\", got \"{}\"",
                self.format
            ));
        }
        if self.version != VERSION {
            return Err(format!(
                "`version` {} is not supported by this build (it reads version {VERSION})",
                self.version
            ));
        }
        if self.in_channels == 0 {
            return Err("`in_channels` must be at least 1".into());
        }
        if self.num_classes == 0 {
            return Err("`num_classes` must be at least 1".into());
        }
        if self.base_width == 0 {
            return Err("`base_width` must be at least 1".into());
        }
        if self.max_width < self.base_width {
            return Err(format!(
                "`max_width` ({}) must be at least `base_width` ({})",
                self.max_width, self.base_width
            ));
        }
        if self.pool_kernels.is_empty() {
            return Err("`pool_kernels` must list at least one down-sampling step".into());
        }
        if self.pool_kernels.len() > 8 {
            return Err(format!(
                "`pool_kernels` has {} steps; at most 8 are supported",
                self.pool_kernels.len()
            ));
        }
        if let Some(l) = self.levels {
            if l != self.num_levels() {
                return Err(format!(
                    "`levels` is {l} but `pool_kernels` has {} steps (levels = steps + 1)",
                    self.pool_kernels.len()
                ));
            }
        }
        for (i, pk) in self.pool_kernels.iter().enumerate() {
            if pk.contains(&0) {
                return Err(format!("`pool_kernels[{i}]` {pk:?} has a zero factor"));
            }
        }
        if self.conv_kernel.iter().any(|&k| k == 0 || k % 2 == 0) {
            return Err(format!(
                "`conv_kernel` {:?} must have odd, positive extents",
                self.conv_kernel
            ));
        }
        if self.shift_groups == 0 {
            return Err("`shift_groups` must be at least 1 (1 turns the shift off)".into());
        }
        if self.convs_per_stage == 0 {
            return Err("`convs_per_stage` must be at least 1".into());
        }
        // Every unit is a handful of graph nodes built before any size check: an absurd count
        // would build for hours (found by fuzzing: 2^32).
        if self.convs_per_stage > MAX_CONVS_PER_STAGE {
            return Err(format!(
                "`convs_per_stage` is {}; at most {MAX_CONVS_PER_STAGE} are supported (released: 2)",
                self.convs_per_stage
            ));
        }
        let max_heads = self.num_levels() - 2;
        if self.deep_supervision_heads > max_heads {
            return Err(format!(
                "`deep_supervision_heads` is {} but a {}-level network has room for at most {max_heads}",
                self.deep_supervision_heads,
                self.num_levels()
            ));
        }
        for ax in 0..3 {
            // Checked: the factors come from the file (found by fuzzing: 2 * (2^64 - 1)).
            let Some(f) = self
                .pool_kernels
                .iter()
                .try_fold(1usize, |a, pk| a.checked_mul(pk[ax]))
            else {
                return Err(format!(
                    "`pool_kernels` {:?}: the factors on axis {ax} multiply past {}",
                    self.pool_kernels,
                    usize::MAX
                ));
            };
            let p = self.patch_size[ax];
            if p == 0 || !p.is_multiple_of(f) {
                return Err(format!(
                    "`patch_size` {:?}: axis {ax} ({p}) must be a positive multiple of {f}, the product of the pool kernels on that axis",
                    self.patch_size
                ));
            }
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(format!("`norm_eps` {} must be positive", self.norm_eps));
        }
        if !self.negative_slope.is_finite() {
            return Err("`negative_slope` must be finite".into());
        }
        if let Some(d) = &self.dsff {
            for (what, v) in [
                ("dsff.density", d.density),
                ("dsff.level0_density", d.level0_density),
            ] {
                if !(v > 0.0 && v <= 1.0) {
                    return Err(format!("`{what}` {v} must be in (0, 1]"));
                }
            }
        }
        Ok(())
    }
}
