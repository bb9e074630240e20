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

/// The error and its causes joined by ": ", as anyhow's `{:#}` does, without repeats: many
/// errors print their source in their own message (`"{path}: {source}"`) and also return it as
/// `source()`, which `{:#}` would print twice ("Is a directory (os error 21): Is a directory (os
/// error 21)"). A cause whose text the one before it already shows is left out, and a context
/// that its cause's text begins with (`"{path}"` over `"{path}: ..."`) gives way to the cause.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let t = cause.to_string();
        match parts.last_mut() {
            Some(prev) if prev.contains(&t) => {}
            Some(prev) if !prev.is_empty() && t.starts_with(prev.as_str()) => *prev = t,
            _ => parts.push(t),
        }
    }
    parts.join(": ")
}
