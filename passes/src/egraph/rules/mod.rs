//! Rewrite rules, one named table per group: [`fuse`] (lift convolutions to the fused form,
//! fuse the depth shift, instance norm and leaky ReLU into them) and [`dsff`] (drop dead DSFF
//! edges and channels, narrow the producers that fed them, make kernel-sparse convolutions).
//! Every rule is directional and guarded by the analysis; each applier adds the rewritten term
//! and unions it with the matched class, so extraction can still choose the original.

pub mod dsff;
pub mod fuse;

use e2enc_ir::FusedConvAttrs;
use egg::{Applier, Id, PatternAst, Rewrite, Subst, Symbol, Var};

use super::analysis::{Ctx, EG};
use super::lang::{dec_fused, enc_fused, enc_select, sym, Lang};

/// All rules, in a stable order.
pub fn all() -> Vec<Rewrite<Lang, Ctx>> {
    let mut v = fuse::rules();
    v.extend(dsff::rules());
    v
}

/// Rules by name (for tests and `--rules`); unknown names are reported.
pub fn by_name(names: &[&str]) -> Result<Vec<Rewrite<Lang, Ctx>>, String> {
    let all = all();
    let known: Vec<String> = all.iter().map(|r| r.name.to_string()).collect();
    for n in names {
        if !known.iter().any(|k| k == n) {
            return Err(format!("unknown rule `{n}` (rules: {})", known.join(", ")));
        }
    }
    Ok(all
        .into_iter()
        .filter(|r| names.contains(&r.name.as_str()))
        .collect())
}

/// An applier written as a function that returns the rewritten class (or `None` to decline).
pub struct FnApplier<F>(pub F);

impl<F> Applier<Lang, Ctx> for FnApplier<F>
where
    F: Fn(&mut EG, Id, &Subst) -> Option<Id> + Send + Sync,
{
    fn apply_one(
        &self,
        eg: &mut EG,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<Lang>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        match (self.0)(eg, eclass, subst) {
            Some(new) if eg.union(eclass, new) => vec![new],
            _ => vec![],
        }
    }
}

/// A rule from a pattern and an applier function.
pub fn rule<F>(name: &str, pattern: &str, f: F) -> Rewrite<Lang, Ctx>
where
    F: Fn(&mut EG, Id, &Subst) -> Option<Id> + Send + Sync + 'static,
{
    let searcher: egg::Pattern<Lang> = pattern.parse().expect("rule pattern parses");
    Rewrite::new(name, searcher, FnApplier(f)).expect("rule is well formed")
}

pub fn var(s: &str) -> Var {
    s.parse().expect("variable")
}

pub fn is_none(eg: &EG, id: Id) -> bool {
    eg[id].nodes.iter().any(|n| matches!(n, Lang::None))
}

pub fn sym_str(eg: &EG, id: Id) -> Option<&'static str> {
    eg[id].data.sym.map(|s| s.as_str())
}

pub fn fused(eg: &EG, id: Id) -> Option<FusedConvAttrs> {
    dec_fused(sym_str(eg, id)?)
}

pub fn none(eg: &mut EG) -> Id {
    eg.add(Lang::None)
}

/// Adds `(fconv attrs x w k b g be)`.
pub fn add_fconv(eg: &mut EG, a: &FusedConvAttrs, ch: [Id; 6]) -> Id {
    let attrs = eg.add(sym(enc_fused(a)));
    eg.add(Lang::FConv([
        attrs, ch[0], ch[1], ch[2], ch[3], ch[4], ch[5],
    ]))
}

/// Adds `(select spec x)`, or returns `x` when `ranges` keeps everything of `extent`.
pub fn add_select(eg: &mut EG, axis: usize, ranges: &[(usize, usize)], extent: usize, x: Id) -> Id {
    if ranges == [(0, extent)] {
        return x;
    }
    let s = eg.add(sym(enc_select(axis, ranges)));
    eg.add(Lang::Select([s, x]))
}

/// Run-length ranges of the indices `0..n` for which `keep` holds.
pub fn ranges_where(n: usize, keep: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for c in (0..n).filter(|&c| keep(c)) {
        match out.last_mut() {
            Some(last) if last.1 == c => last.1 = c + 1,
            _ => out.push((c, c + 1)),
        }
    }
    out
}

/// The channel count (axis 1) of a class's value.
pub fn channels(eg: &EG, id: Id) -> Option<usize> {
    eg[id]
        .data
        .ty
        .as_ref()
        .filter(|t| t.rank() >= 2)
        .map(|t| t.shape[1])
}
