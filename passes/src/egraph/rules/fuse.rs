//! Fusion rules: every convolution is lifted to `fconv`, then the depth shift before it, and the
//! instance norm and leaky ReLU after it, move into its attributes.
//!
//! - `lift-conv`, `lift-conv-transpose`: `(conv g x w b)` → `(fconv plain x w none b none none)`.
//! - `fuse-shift`: `(fconv a (shift n x) ...)` → `(fconv a+shifts x ...)`: the conv reads each
//!   input-channel group at its own depth offset, for any stride and for sparse weights.
//! - `fuse-norm`: `(inorm eps (fconv a ...) gamma beta)` → `(fconv a+norm ... gamma beta)`.
//! - `fuse-act`: `(lrelu s (fconv a ...))` → `(fconv a+slope ...)`.

use e2enc_ir::{shift_runs, FusedConvAttrs};
use egg::Rewrite;

use super::{add_fconv, channels, fused, is_none, rule, sym_str, var};
use crate::egraph::analysis::Ctx;
use crate::egraph::lang::{dec_f32, dec_geom, Lang};

pub fn rules() -> Vec<Rewrite<Lang, Ctx>> {
    vec![
        lift("lift-conv", "(conv ?g ?x ?w ?b)", false),
        lift("lift-conv-transpose", "(convT ?g ?x ?w ?b)", true),
        fuse_shift(),
        fuse_norm(),
        fuse_act(),
    ]
}

fn lift(name: &str, pattern: &str, transposed: bool) -> Rewrite<Lang, Ctx> {
    let (g, x, w, b) = (var("?g"), var("?x"), var("?w"), var("?b"));
    rule(name, pattern, move |eg, _, s| {
        let geom = dec_geom(sym_str(eg, s[g])?)?;
        let a = FusedConvAttrs::plain(geom, transposed, !is_none(eg, s[b]));
        let n = super::none(eg);
        Some(add_fconv(eg, &a, [s[x], s[w], n, s[b], n, n]))
    })
}

fn fuse_shift() -> Rewrite<Lang, Ctx> {
    let (a, n, x, w, k, b, g, be) = (
        var("?a"),
        var("?n"),
        var("?x"),
        var("?w"),
        var("?k"),
        var("?b"),
        var("?g"),
        var("?be"),
    );
    rule(
        "fuse-shift",
        "(fconv ?a (shift ?n ?x) ?w ?k ?b ?g ?be)",
        move |eg, _, s| {
            let mut at = fused(eg, s[a])?;
            if at.transposed || !at.shifts.is_empty() {
                return None;
            }
            let groups = usize::try_from(eg[s[n]].data.num?).ok()?;
            at.shifts = shift_runs(groups, channels(eg, s[x])?);
            Some(add_fconv(eg, &at, [s[x], s[w], s[k], s[b], s[g], s[be]]))
        },
    )
}

fn fuse_norm() -> Rewrite<Lang, Ctx> {
    let (e, a, x, w, k, b, n1, g, be) = (
        var("?e"),
        var("?a"),
        var("?x"),
        var("?w"),
        var("?k"),
        var("?b"),
        var("?n1"),
        var("?g"),
        var("?be"),
    );
    rule(
        "fuse-norm",
        "(inorm ?e (fconv ?a ?x ?w ?k ?b ?n1 ?n2) ?g ?be)",
        move |eg, _, s| {
            let mut at = fused(eg, s[a])?;
            if at.norm_eps.is_some() || at.slope.is_some() || !is_none(eg, s[n1]) {
                return None;
            }
            at.norm_eps = Some(dec_f32(sym_str(eg, s[e])?)?);
            Some(add_fconv(eg, &at, [s[x], s[w], s[k], s[b], s[g], s[be]]))
        },
    )
}

fn fuse_act() -> Rewrite<Lang, Ctx> {
    let (r, a, x, w, k, b, g, be) = (
        var("?r"),
        var("?a"),
        var("?x"),
        var("?w"),
        var("?k"),
        var("?b"),
        var("?g"),
        var("?be"),
    );
    rule(
        "fuse-act",
        "(lrelu ?r (fconv ?a ?x ?w ?k ?b ?g ?be))",
        move |eg, _, s| {
            let mut at = fused(eg, s[a])?;
            if at.slope.is_some() {
                return None;
            }
            at.slope = Some(dec_f32(sym_str(eg, s[r])?)?);
            Some(add_fconv(eg, &at, [s[x], s[w], s[k], s[b], s[g], s[be]]))
        },
    )
}
