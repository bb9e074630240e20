//! A loaded model: validated config, built graph, parameter specs, and the weights checked against
//! them (every expected tensor present with its exact shape, nothing unexpected, DSFF masks applied).

use std::path::{Path, PathBuf};

use crate::e2enet::build::{build, BuildOptions, E2ENet, ParamSpec};
use crate::e2enet::config::ModelConfig;
use crate::error::IrError;
use crate::tensor::Tensor;
use crate::weights::Weights;

/// A model.json with its network and (when the config names them) weights and masks.
#[derive(Clone, Debug)]
pub struct Model {
    pub path: PathBuf,
    pub config: ModelConfig,
    pub net: E2ENet,
    /// Present when the config names a weights file.
    pub weights: Option<Weights>,
    /// Present when the config names a masks file; already applied to `weights`.
    pub masks: Option<Weights>,
}

impl Model {
    /// Loads model.json and the files it names (paths relative to model.json's folder).
    pub fn load(path: &Path, opts: &BuildOptions) -> Result<Model, IrError> {
        let config = ModelConfig::load(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let net = build(&config, opts).map_err(|e| match e {
            IrError::Config { msg, .. } => IrError::Config {
                path: path.display().to_string(),
                msg,
            },
            other => other,
        })?;
        let masks = match &config.masks {
            Some(m) => {
                let mp = dir.join(m);
                let masks = Weights::load(&mp)?;
                check_masks(&net.params, &masks).map_err(|msg| IrError::File { path: mp, msg })?;
                Some(masks)
            }
            None => None,
        };
        let weights = match &config.weights {
            Some(wf) => {
                let wp = dir.join(wf);
                let mut w = Weights::load(&wp)?;
                check_weights(&net.params, &w).map_err(|msg| IrError::File { path: wp, msg })?;
                if let Some(m) = &masks {
                    apply_masks(&mut w, m);
                }
                Some(w)
            }
            None => None,
        };
        Ok(Model {
            path: path.to_path_buf(),
            config,
            net,
            weights,
            masks,
        })
    }

    /// The weights, or an error saying the config names none.
    pub fn require_weights(&self) -> Result<&Weights, IrError> {
        self.weights.as_ref().ok_or_else(|| IrError::Config {
            path: self.path.display().to_string(),
            msg: "this model names no `weights` file; add one (e.g. run `e2enc init`) to run it"
                .into(),
        })
    }
}

/// Checks that `w` holds exactly the tensors of `params` with their shapes and f32 dtype.
pub fn check_weights(params: &[ParamSpec], w: &Weights) -> Result<(), String> {
    let mut problems = Vec::new();
    for p in params {
        match w.get(&p.name) {
            None => problems.push(format!("missing tensor `{}` {:?}", p.name, p.shape)),
            Some(t) if t.shape() != p.shape.as_slice() => problems.push(format!(
                "tensor `{}` has shape {:?}, the config implies {:?}",
                p.name,
                t.shape(),
                p.shape
            )),
            Some(t) if t.as_f32().is_none() => {
                problems.push(format!("tensor `{}` must be a float tensor", p.name))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
    let extra: Vec<&String> = w.names().filter(|n| !known.contains(n.as_str())).collect();
    if !extra.is_empty() {
        let shown: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
        problems.push(format!(
            "{} unexpected tensor(s) the config does not use: {}{} (does model.json match this checkpoint?)",
            extra.len(),
            shown.join(", "),
            if extra.len() > 5 { ", ..." } else { "" }
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Checks DSFF masks: only maskable tensors, shape = the weight's first two dims, values 0/1.
pub fn check_masks(params: &[ParamSpec], m: &Weights) -> Result<(), String> {
    for (name, t) in m.iter() {
        let p = params
            .iter()
            .find(|p| &p.name == name)
            .ok_or_else(|| format!("mask `{name}` names no tensor of this model"))?;
        if !p.dsff {
            return Err(format!(
                "mask `{name}`: only DSFF fusion convs and transposed convs are masked"
            ));
        }
        if t.shape() != &p.shape[..2] {
            return Err(format!(
                "mask `{name}` has shape {:?}, expected {:?} (the weight's first two dimensions)",
                t.shape(),
                &p.shape[..2]
            ));
        }
        if !mask_values(t).all(|v| v == 0.0 || v == 1.0) {
            return Err(format!("mask `{name}` must hold only 0 and 1"));
        }
    }
    Ok(())
}

fn mask_values(t: &Tensor) -> Box<dyn Iterator<Item = f64> + '_> {
    match t.data() {
        crate::tensor::TensorData::F32(v) => Box::new(v.iter().map(|x| *x as f64)),
        crate::tensor::TensorData::I32(v) => Box::new(v.iter().map(|x| *x as f64)),
    }
}

/// Zeroes every kernel of `w` whose mask entry is 0. Masks must have passed [`check_masks`].
pub fn apply_masks(w: &mut Weights, masks: &Weights) {
    for (name, m) in masks.iter() {
        let Some(t) = w.get(name) else { continue };
        let mut t = (**t).clone();
        let kvol: usize = t.shape()[2..].iter().product();
        let data = t.as_f32_mut().expect("checked float");
        for (k, on) in mask_values(m).enumerate() {
            if on == 0.0 {
                data[k * kvol..(k + 1) * kvol].fill(0.0);
            }
        }
        w.insert(name.clone(), t);
    }
}
