//! `e2enc init`: writes a model.json and He-initialized weights (and DSFF masks with --density).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use e2enc_ir::e2enet::{build, BuildOptions, DsffConfig, ModelConfig};
use e2enc_ir::init::{init_masks, init_weights};
use e2enc_ir::weights::write_atomic;

use crate::util::{check_overwrite, parse_patch, thousands};

/// Create a new model: model.json and weights.safetensors
///
/// The weights are He-initialized as in the released code (kaiming normal, a=0.01; biases 0;
/// norms 1/0). With --density D every DSFF fusion conv and transposed conv keeps a random D of
/// its [out, in] kernels (level-0 fusion convs: --level0-density, 0.2 as released); the masks go
/// to masks.safetensors and the masked kernels are zero in the weights.
///
/// Example: e2enc init -o amos --preset amos-ct --density 0.2
#[derive(clap::Args)]
pub struct Args {
    /// Output folder (created if missing).
    #[arg(short, long)]
    out: PathBuf,
    /// Starting configuration: amos-ct (1 ch, 16 classes, 128^3), brats (4 ch, 4 classes, 128^3),
    /// tiny (1 ch, 2 classes, width 4, 32x32x64: the golden test's shape).
    #[arg(long, default_value = "amos-ct", value_parser = ["amos-ct", "brats", "tiny"])]
    preset: String,
    /// Input channels (modalities).
    #[arg(long)]
    in_channels: Option<usize>,
    /// Classes including background.
    #[arg(long)]
    classes: Option<usize>,
    /// Channels at full resolution (doubled per level up to --max-width).
    #[arg(long)]
    base_width: Option<usize>,
    #[arg(long)]
    max_width: Option<usize>,
    /// Patch size D,H,W (or N for a cube).
    #[arg(long, value_parser = parse_patch)]
    patch: Option<[usize; 3]>,
    /// Depth-shift groups: 5 as released, 3 as in the paper, 1 for none.
    #[arg(long)]
    shift_groups: Option<usize>,
    /// DSFF density in (0, 1]: fraction of fusion kernels kept (writes masks).
    #[arg(long)]
    density: Option<f64>,
    /// Density of the level-0 fusion convs (released code: 0.2).
    #[arg(long, default_value_t = 0.2)]
    level0_density: f64,
    /// Random seed (same seed, same files).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let mut cfg = ModelConfig::amos_ct();
    match a.preset.as_str() {
        "brats" => {
            cfg.name = "e2enet-brats".into();
            cfg.in_channels = 4;
            cfg.num_classes = 4;
        }
        "tiny" => {
            cfg.name = "e2enet-tiny".into();
            cfg.num_classes = 2;
            cfg.base_width = 4;
            cfg.patch_size = [32, 32, 64];
        }
        _ => {}
    }
    if let Some(v) = a.in_channels {
        cfg.in_channels = v;
    }
    if let Some(v) = a.classes {
        cfg.num_classes = v;
    }
    if let Some(v) = a.base_width {
        cfg.base_width = v;
    }
    if let Some(v) = a.max_width {
        cfg.max_width = v;
    }
    if let Some(v) = a.patch {
        cfg.patch_size = v;
    }
    if let Some(v) = a.shift_groups {
        cfg.shift_groups = v;
    }
    cfg.weights = Some("weights.safetensors".into());
    if let Some(d) = a.density {
        cfg.dsff = Some(DsffConfig {
            density: d,
            level0_density: a.level0_density,
        });
        cfg.masks = Some("masks.safetensors".into());
    }
    cfg.validate()
        .map_err(|m| anyhow::anyhow!("invalid configuration: {m}"))?;
    let net = build(&cfg, &BuildOptions::default())?;

    let model_path = a.out.join("model.json");
    let weights_path = a.out.join("weights.safetensors");
    let masks_path = a.out.join("masks.safetensors");
    for p in [&model_path, &weights_path, &masks_path] {
        check_overwrite(p, a.force)?;
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;

    let mut weights = init_weights(&net.params, a.seed);
    if let Some(d) = &cfg.dsff {
        let masks = init_masks(&net.params, d, a.seed);
        e2enc_ir::e2enet::model::apply_masks(&mut weights, &masks);
        masks.save(&masks_path)?;
    }
    weights.save(&weights_path)?;
    // model.json last: a folder with a model.json is complete.
    write_atomic(&model_path, cfg.to_json().as_bytes())?;
    let st = e2enc_ir::stats::graph_stats(&net.graph, Some(&weights));
    println!(
        "wrote {} ({} tensors, {} parameters, {} with pruned kernels removed)",
        model_path.display(),
        st.weight_tensors,
        thousands(st.params),
        thousands(st.live_params.unwrap_or(st.params))
    );
    Ok(ExitCode::SUCCESS)
}
