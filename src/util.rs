//! Small helpers shared by the subcommands: argument parsers, number formatting, tensor files,
//! error messages.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use e2enc_ir::{Tensor, Weights};

/// Parses `D,H,W` (or a single `N` for a cube).
pub fn parse_patch(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split([',', 'x']).map(str::trim).collect();
    let nums: Vec<usize> = parts
        .iter()
        .map(|p| {
            p.parse::<usize>()
                .map_err(|_| format!("`{p}` is not a whole number"))
        })
        .collect::<Result<_, _>>()?;
    match nums.as_slice() {
        [n] => Ok([*n; 3]),
        [d, h, w] => Ok([*d, *h, *w]),
        _ => Err(format!("expected D,H,W or N, got `{s}`")),
    }
}

/// `23899088` → `23,899,088`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// MACs as `1011.8 G` / `12.3 M`.
pub fn giga(n: u64) -> String {
    let g = n as f64 / 1e9;
    if g >= 0.1 {
        format!("{g:.1} G")
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

/// Reads a safetensors file of named tensors.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let w = Weights::load(path)?;
    Ok(w.iter().map(|(k, v)| (k.clone(), (**v).clone())).collect())
}

/// Writes named tensors atomically.
pub fn write_tensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let mut w = Weights::new();
    for (k, v) in tensors {
        w.insert(k.clone(), v.clone());
    }
    w.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Refuses to clobber `path` unless `force`.
pub fn check_overwrite(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", path.display());
    }
    Ok(())
}

/// The error and its causes joined by ": " without repeats ([`e2enc::error_text`], shared with
/// the Python package).
pub fn error_text(e: &anyhow::Error) -> String {
    e2enc::error_text(e.as_ref())
}
