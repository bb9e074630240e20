//! Helpers shared by the optimizer's integration tests: deterministic pseudo-random weights and
//! inputs, kernel zeroing, and the oracle check (the interpreter gives the same outputs before and
//! after optimization, relative 1e-4).
//!
//! Values come from a counter-based hash (splitmix64 of seed, tensor name and element index), so a
//! tensor's values depend only on those three things: adding a weight to a graph or reordering
//! its nodes leaves every other tensor unchanged, which keeps golden files stable. Weights are
//! never zero (|v| >= 0.1 before scaling) so that only explicit zeroing makes kernels dead; their
//! role decides their scale: instance-norm gammas lie in [0.75, 1.25], betas and biases in
//! ±[0.05, 0.5], rank >= 3 kernels are scaled by 1/sqrt(fan-in) like He initialization.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use e2enc_ir::tensor::relative_error;
use e2enc_ir::{interp, DType, Graph, Op, Tensor, Weights};

/// The stated tolerance of every before/after comparison (fp32 reassociation).
pub const TOL: f64 = 1e-4;

/// The splitmix64 finalizer.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of a name.
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Uniform in [0, 1) for element `i` of the tensor `name` under `seed`.
pub fn unit(seed: u64, name: &str, i: usize) -> f64 {
    let h = mix(mix(seed ^ fnv(name)) ^ i as u64);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// In ±[0.1, 1]: never zero.
pub fn nonzero(seed: u64, name: &str, i: usize) -> f32 {
    let u = unit(seed, name, i);
    let (sign, mag) = if u < 0.5 {
        (-1.0, u * 2.0)
    } else {
        (1.0, (u - 0.5) * 2.0)
    };
    (sign * (0.1 + 0.9 * mag)) as f32
}

/// What a weight is used for, which decides its scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Gamma,
    Beta,
    Kernel,
    Other,
}

/// The role of every weight of `g`, from how its users read it.
pub fn roles(g: &Graph) -> HashMap<String, Role> {
    let mut out = HashMap::new();
    for (name, id) in g.weights() {
        let mut role = if g.node(id).ty.rank() >= 3 {
            Role::Kernel
        } else {
            Role::Other
        };
        for (user, slot) in g.users(id) {
            let gamma_slot = match &g.node(user).op {
                Op::InstanceNorm { .. } => Some(1),
                Op::FusedConv3d(a) => a.operand_slots().2,
                _ => None,
            };
            if let Some(s) = gamma_slot {
                if slot as usize == s {
                    role = Role::Gamma;
                } else if slot as usize == s + 1 {
                    role = Role::Beta;
                }
            }
        }
        out.insert(name, role);
    }
    out
}

/// Deterministic non-zero values for every weight `g` references (f32 only).
pub fn seeded_weights(g: &Graph, seed: u64) -> Result<Weights, String> {
    let roles = roles(g);
    let mut w = Weights::new();
    for (name, id) in g.weights() {
        let ty = &g.node(id).ty;
        if ty.dtype != DType::F32 {
            return Err(format!(
                "weight `{name}` is {ty}: only f32 weights can be generated"
            ));
        }
        let n = ty.numel();
        let scale = match roles[&name] {
            Role::Kernel => {
                let fan: usize = ty.shape[1..].iter().product();
                1.0 / (fan.max(1) as f32).sqrt()
            }
            _ => 1.0,
        };
        let data = (0..n)
            .map(|i| {
                let v = nonzero(seed, &name, i);
                match roles[&name] {
                    Role::Gamma => 1.0 + 0.25 * v,
                    Role::Beta | Role::Other => 0.5 * v,
                    Role::Kernel => scale * v,
                }
            })
            .collect();
        w.insert(
            name.clone(),
            Tensor::from_f32(ty.shape.clone(), data).map_err(|e| e.to_string())?,
        );
    }
    Ok(w)
}

/// Uniform values in [-1, 1) for every input of `g`.
pub fn seeded_inputs(g: &Graph, seed: u64) -> BTreeMap<String, Tensor> {
    g.inputs()
        .into_iter()
        .map(|(name, id)| {
            let ty = &g.node(id).ty;
            let data = (0..ty.numel())
                .map(|i| (2.0 * unit(seed, &name, i) - 1.0) as f32)
                .collect();
            let t = Tensor::from_f32(ty.shape.clone(), data).expect("input shape");
            (name, t)
        })
        .collect()
}

/// Zeroes the `[i, j]` kernels of weight `name` with `i` in `d0` and `j` in `d1` (all indices of
/// an axis when its ranges are `None`). A rank-1 tensor has no `d1`.
pub fn zero_kernels(
    w: &mut Weights,
    name: &str,
    d0: Option<&[(usize, usize)]>,
    d1: Option<&[(usize, usize)]>,
) -> Result<(), String> {
    let t = w
        .get(name)
        .ok_or_else(|| format!("no weight named `{name}`"))?;
    let mut t = (**t).clone();
    let shape = t.shape().to_vec();
    let dim = |k: usize| shape.get(k).copied().unwrap_or(1);
    let (n0, n1) = (dim(0), dim(1));
    let inner: usize = shape.iter().skip(2).product();
    let within =
        |r: Option<&[(usize, usize)]>, n: usize, what: &str| -> Result<Vec<bool>, String> {
            let mut v = vec![r.is_none(); n];
            for &(a, b) in r.unwrap_or(&[]) {
                if a >= b || b > n {
                    return Err(format!("`{name}`: {what}={a}..{b} is not within 0..{n}"));
                }
                v[a..b].iter_mut().for_each(|x| *x = true);
            }
            Ok(v)
        };
    let (r0, r1) = (within(d0, n0, "d0")?, within(d1, n1, "d1")?);
    let data = t
        .as_f32_mut()
        .ok_or_else(|| format!("`{name}` is not f32"))?;
    for (i, &in0) in r0.iter().enumerate() {
        for (j, &in1) in r1.iter().enumerate() {
            if in0 && in1 {
                let k = (i * n1 + j) * inner;
                data[k..k + inner].fill(0.0);
            }
        }
    }
    w.insert(name, t);
    Ok(())
}

/// Runs both graphs on `inputs` and compares every output of `after` with the same-named
/// output of `before` (relative error, [`TOL`]).
pub fn same_outputs(
    before: &Graph,
    bw: &Weights,
    after: &Graph,
    aw: &Weights,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(), String> {
    let names: Vec<&str> = after.outputs().iter().map(|(n, _)| n.as_str()).collect();
    if names.is_empty() {
        return Err("the optimized graph has no outputs".into());
    }
    // The optimized graph may have lost inputs that nothing reads any more.
    let ins_after: BTreeMap<String, Tensor> = inputs
        .iter()
        .filter(|(n, _)| after.inputs().iter().any(|(m, _)| m == *n))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let want = interp::run(before, bw, inputs, &names).map_err(|e| format!("before: {e}"))?;
    let got = interp::run(after, aw, &ins_after, &names).map_err(|e| format!("after: {e}"))?;
    for n in names {
        let e = relative_error(&got[n], &want[n])
            .ok_or_else(|| format!("output `{n}`: type changed"))?;
        if e.is_nan() || e > TOL {
            return Err(format!(
                "output `{n}`: relative error {e:e} exceeds {TOL:e}"
            ));
        }
    }
    Ok(())
}

/// How many nodes of `g` have this mnemonic.
pub fn count_ops(g: &Graph, mnemonic: &str) -> usize {
    g.node_ids()
        .filter(|&id| g.node(id).op.mnemonic() == mnemonic)
        .count()
}

/// A kernel-liveness mask for weight `name` (`[d0, d1]` row-major): each kernel lives with
/// probability `density` (exactly: 0 kills all, 1 keeps all).
pub fn random_mask(seed: u64, name: &str, d0: usize, d1: usize, density: f64) -> Vec<bool> {
    (0..d0 * d1)
        .map(|k| unit(seed ^ 0x6d61_736b, name, k) < density)
        .collect()
}

/// Zeroes the kernels of weight `name` whose mask entry is false.
pub fn apply_mask(w: &mut Weights, name: &str, live: &[bool]) {
    let mut t = (**w.get(name).expect("masked weight exists")).clone();
    let s = t.shape().to_vec();
    assert_eq!(s[0] * s[1], live.len(), "mask of `{name}`");
    let kvol: usize = s[2..].iter().product();
    let data = t.as_f32_mut().expect("f32 weight");
    for (k, &on) in live.iter().enumerate() {
        if !on {
            data[k * kvol..(k + 1) * kvol].fill(0.0);
        }
    }
    w.insert(name, t);
}

/// Half-open runs of the indices whose flag is set.
pub fn runs_of(flags: &[bool]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
        match out.last_mut() {
            Some(last) if last.1 == i => last.1 = i + 1,
            _ => out.push((i, i + 1)),
        }
    }
    out
}
