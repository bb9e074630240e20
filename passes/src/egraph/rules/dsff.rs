//! DSFF rules: drop dead fusion edges and channels, narrow the producers that fed them, and turn
//! kernel-sparse convolutions into sparse ones that carry only their live kernels.
//!
//! - `dead-inputs`: `(fconv a x w ...)` whose dense constant weight has input channels no live
//!   kernel reads. When `x` is a concat, a part whose channels are all dead is dropped from the
//!   concat; a part with some dead channels is narrowed with `select` if it is a transposed conv,
//!   a max pool or a select (single-purpose DSFF producers), in a second variant (extraction
//!   picks); the weight (and the fused shifts) lose the same input channels.
//! - `narrow-conv`: `(select c (fconv a x w none b g be))` with a transposed conv → the conv
//!   computes only the selected output channels (weight rows, bias, norm parameters selected);
//!   other convs are not narrowed, since their full output is usually needed elsewhere too.
//! - `narrow-maxpool`: `(select c (maxpool p x))` → `(maxpool p (select c x))`.
//! - `select-select`: nested selects on one axis compose into one.
//! - `concat-one`: a concat of one operand is that operand.
//! - `sparsify`: `(fconv a x w none ...)` with dead kernels → `(fconv a+sparse x (pack w)
//!   (kidx w) ...)`.

use e2enc_ir::FusedConvAttrs;
use egg::{rewrite, Id, Rewrite};

use super::{add_fconv, add_select, channels, fused, is_none, ranges_where, rule, sym_str, var};
use crate::egraph::analysis::{Ctx, EG};
use crate::egraph::lang::{dec_select, Lang};

pub fn rules() -> Vec<Rewrite<Lang, Ctx>> {
    vec![
        dead_inputs(),
        narrow_conv(),
        narrow_maxpool(),
        select_select(),
        rewrite!("concat-one"; "(concat ?x)" => "?x"),
        sparsify(),
    ]
}

/// A class whose value can be narrowed to fewer channels without computing anything twice.
fn narrowable(eg: &EG, id: Id) -> bool {
    eg[id].nodes.iter().any(|n| match n {
        Lang::ConvT(_) | Lang::MaxPool(_) | Lang::Select(_) => true,
        Lang::FConv([a, ..]) => fused(eg, *a).is_some_and(|f| f.transposed),
        _ => false,
    })
}

fn dead_inputs() -> Rewrite<Lang, Ctx> {
    let (a, x, w, b, g, be) = (
        var("?a"),
        var("?x"),
        var("?w"),
        var("?b"),
        var("?g"),
        var("?be"),
    );
    rule(
        "dead-inputs",
        "(fconv ?a ?x ?w none ?b ?g ?be)",
        move |eg, matched, s| {
            let at = fused(eg, s[a])?;
            if at.sparse_out.is_some() {
                return None;
            }
            let mask = eg[s[w]].data.kmask.clone()?;
            let in_axis = usize::from(!at.transposed);
            let cin = channels(eg, s[x])?;
            if !(0..cin).any(|c| mask.dead_along(in_axis, c)) {
                return None;
            }
            let parts: Vec<Id> = eg[s[x]]
                .nodes
                .iter()
                .find_map(|n| match n {
                    Lang::Concat(ps) => Some(ps.to_vec()),
                    _ => None,
                })
                .unwrap_or_else(|| vec![s[x]]);
            // Two variants: dead edges dropped only, and also partly dead parts narrowed;
            // extraction picks (narrowing may need a copy that costs more than it saves).
            let mut made = Vec::new();
            for narrow in [false, true] {
                let mut new_parts = Vec::new();
                let mut keep_abs: Vec<(usize, usize)> = Vec::new();
                let mut offset = 0;
                for &p in &parts {
                    let c = channels(eg, p)?;
                    let keep = ranges_where(c, |i| !mask.dead_along(in_axis, offset + i));
                    if keep.is_empty() {
                        // A dead edge: nothing reads this part.
                    } else if keep == [(0, c)] || !narrow || !narrowable(eg, p) {
                        new_parts.push(p);
                        keep_abs.push((offset, offset + c));
                    } else {
                        new_parts.push(add_select(eg, 1, &keep, c, p));
                        keep_abs.extend(keep.iter().map(|&(s0, e0)| (offset + s0, offset + e0)));
                    }
                    offset += c;
                }
                let keep_abs = merge_ranges(keep_abs);
                if keep_abs == [(0, cin)] || keep_abs.is_empty() {
                    continue;
                }
                let mut at2 = at.clone();
                if let Some(per_channel) = at.channel_shifts() {
                    let kept: Vec<i64> = keep_abs
                        .iter()
                        .flat_map(|&(s0, e0)| per_channel[s0..e0].to_vec())
                        .collect();
                    at2.shifts = runs(&kept);
                }
                let new_x = if new_parts.len() == 1 {
                    new_parts[0]
                } else {
                    eg.add(Lang::Concat(new_parts.into()))
                };
                let wd = eg[s[w]].data.ty.as_ref()?.shape[in_axis];
                let new_w = add_select(eg, in_axis, &keep_abs, wd, s[w]);
                let k = super::none(eg);
                made.push(add_fconv(eg, &at2, [new_x, new_w, k, s[b], s[g], s[be]]));
            }
            made.dedup();
            let last = made.pop()?;
            for other in made {
                eg.union(matched, other);
            }
            Some(last)
        },
    )
}

fn merge_ranges(mut r: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    r.sort();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

fn runs(v: &[i64]) -> Vec<(i64, usize)> {
    let mut out: Vec<(i64, usize)> = Vec::new();
    for &s in v {
        match out.last_mut() {
            Some(last) if last.0 == s => last.1 += 1,
            _ => out.push((s, 1)),
        }
    }
    out
}

fn narrow_conv() -> Rewrite<Lang, Ctx> {
    let (sp, a, x, w, b, g, be) = (
        var("?s"),
        var("?a"),
        var("?x"),
        var("?w"),
        var("?b"),
        var("?g"),
        var("?be"),
    );
    rule(
        "narrow-conv",
        "(select ?s (fconv ?a ?x ?w none ?b ?g ?be))",
        move |eg, _, s| {
            let (axis, ranges) = dec_select(sym_str(eg, s[sp])?)?;
            let at: FusedConvAttrs = fused(eg, s[a])?;
            // Only transposed convs (the single-use DSFF upsampling) are narrowed: narrowing any
            // other conv would compute a value twice when its full output is needed elsewhere
            // too (extraction cannot see that the full conv runs anyway).
            if axis != 1 || at.sparse_out.is_some() || !at.transposed {
                return None;
            }
            let out_axis = usize::from(at.transposed);
            let wt = eg[s[w]].data.ty.clone()?;
            let cout = wt.shape[out_axis];
            let new_w = add_select(eg, out_axis, &ranges, cout, s[w]);
            let mut pick = |id: Id| {
                if is_none(eg, id) {
                    id
                } else {
                    add_select(eg, 0, &ranges, cout, id)
                }
            };
            let (nb, ng, nbe) = (pick(s[b]), pick(s[g]), pick(s[be]));
            let k = super::none(eg);
            Some(add_fconv(eg, &at, [s[x], new_w, k, nb, ng, nbe]))
        },
    )
}

fn narrow_maxpool() -> Rewrite<Lang, Ctx> {
    let (sp, p, x) = (var("?s"), var("?p"), var("?x"));
    rule(
        "narrow-maxpool",
        "(select ?s (maxpool ?p ?x))",
        move |eg, _, s| {
            let (axis, ranges) = dec_select(sym_str(eg, s[sp])?)?;
            if axis != 1 {
                return None;
            }
            let c = channels(eg, s[x])?;
            let inner = add_select(eg, 1, &ranges, c, s[x]);
            Some(eg.add(Lang::MaxPool([s[p], inner])))
        },
    )
}

fn select_select() -> Rewrite<Lang, Ctx> {
    let (s1, s2, x) = (var("?s1"), var("?s2"), var("?x"));
    rule(
        "select-select",
        "(select ?s1 (select ?s2 ?x))",
        move |eg, _, s| {
            let (a1, r1) = dec_select(sym_str(eg, s[s1])?)?;
            let (a2, r2) = dec_select(sym_str(eg, s[s2])?)?;
            if a1 != a2 {
                return None;
            }
            let inner: Vec<usize> = r2.iter().flat_map(|&(a, b)| a..b).collect();
            let picked: Vec<usize> = r1
                .iter()
                .flat_map(|&(a, b)| a..b)
                .map(|i| inner[i])
                .collect();
            let extent = eg[s[x]].data.ty.as_ref()?.shape[a1];
            let set: std::collections::HashSet<usize> = picked.iter().copied().collect();
            let ranges = ranges_where(extent, |i| set.contains(&i));
            Some(add_select(eg, a1, &ranges, extent, s[x]))
        },
    )
}

fn sparsify() -> Rewrite<Lang, Ctx> {
    let (a, x, w, b, g, be) = (
        var("?a"),
        var("?x"),
        var("?w"),
        var("?b"),
        var("?g"),
        var("?be"),
    );
    rule(
        "sparsify",
        "(fconv ?a ?x ?w none ?b ?g ?be)",
        move |eg, _, s| {
            let mut at = fused(eg, s[a])?;
            let mask = eg[s[w]].data.kmask.clone()?;
            let live = mask.n_live();
            if at.sparse_out.is_some() || live == 0 || live == mask.d0 * mask.d1 {
                return None;
            }
            at.sparse_out = Some(if at.transposed { mask.d1 } else { mask.d0 });
            let t = eg.add(Lang::Num(i64::from(at.transposed)));
            let packed = eg.add(Lang::Pack([t, s[w]]));
            let kidx = eg.add(Lang::KIdx([t, s[w]]));
            Some(add_fconv(eg, &at, [s[x], packed, kidx, s[b], s[g], s[be]]))
        },
    )
}
