//! Which output channels a tensor-core conv computes together. A warp's MMA computes 16 output
//! channels over one K list: the union of their live input channels (`super::mma`), so a group
//! whose outputs share live inputs skips the inputs none of them reads. This file orders a
//! DSFF-sparse conv's outputs into such groups at compile time (greedy: seed a group with the
//! output of most live inputs left, then add the output that widens the union least), and keeps
//! the plain order `0..16, 16..32, ...` unless the reordering needs fewer K entries.
//!
//! What it buys depends on the masks. Random masks at density 0.2 leave a 16-output union of
//! `1 - 0.8^16` = 97% of the inputs whatever the order: on AMOS-CT at density 0.2 the MMAs issue
//! 6.2% fewer MACs than in channel order, on the released network's trained masks 0.1%. Masks
//! with structure (outputs that share inputs) gain up to their density.

/// Output channels per group (the MMA's M).
pub const GROUP: usize = 16;

/// The plain groups of `n` outputs: `0..16`, `16..32`, ..., the last padded with `None`.
pub fn plain(n: usize) -> Vec<[Option<usize>; GROUP]> {
    (0..n.div_ceil(GROUP))
        .map(|g| std::array::from_fn(|r| Some(g * GROUP + r).filter(|&o| o < n)))
        .collect()
}

/// The groups of a conv with `cin` inputs whose output `o` reads the input channels `live[o]`:
/// `GROUP` slots each (`None` past the last output), every output in exactly one slot. `None`
/// when the plain order is as good.
pub fn reorder(live: &[Vec<usize>], cin: usize) -> Option<Vec<[Option<usize>; GROUP]>> {
    let words = cin.div_ceil(64).max(1);
    let sets: Vec<Vec<u64>> = live
        .iter()
        .map(|cs| {
            let mut s = vec![0u64; words];
            for &c in cs {
                s[c / 64] |= 1 << (c % 64);
            }
            s
        })
        .collect();
    let count = |s: &[u64]| s.iter().map(|w| w.count_ones() as usize).sum::<usize>();
    let widened = |u: &[u64], s: &[u64]| {
        u.iter()
            .zip(s)
            .map(|(a, b)| (b & !a).count_ones() as usize)
            .sum::<usize>()
    };
    let plain = plain(live.len());
    // The outputs left, most live inputs first (ties: lower index).
    let mut left: Vec<usize> = (0..live.len()).collect();
    left.sort_by_key(|&o| (std::cmp::Reverse(count(&sets[o])), o));
    let mut groups = Vec::with_capacity(plain.len());
    while !left.is_empty() {
        let seed = left.remove(0);
        let mut union = sets[seed].clone();
        let mut grp = [None; GROUP];
        grp[0] = Some(seed);
        for slot in grp.iter_mut().skip(1) {
            // The first best in `left`'s order: the fewest new inputs.
            let Some((i, _)) = left
                .iter()
                .enumerate()
                .min_by_key(|&(i, &o)| (widened(&union, &sets[o]), i))
            else {
                break;
            };
            let o = left.remove(i);
            for (u, s) in union.iter_mut().zip(&sets[o]) {
                *u |= s;
            }
            *slot = Some(o);
        }
        groups.push(grp);
    }
    (entries(&groups, &sets) < entries(&plain, &sets)).then_some(groups)
}

/// Input channels read by all groups together (the sum of their unions).
fn entries(groups: &[[Option<usize>; GROUP]], sets: &[Vec<u64>]) -> usize {
    groups
        .iter()
        .map(|g| {
            let mut u = vec![0u64; sets.first().map_or(0, Vec::len)];
            for o in g.iter().flatten() {
                for (a, b) in u.iter_mut().zip(&sets[*o]) {
                    *a |= b;
                }
            }
            u.iter().map(|w| w.count_ones() as usize).sum::<usize>()
        })
        .sum()
}

/// The number of input channels the groups read (each group its union), for reports and tests.
pub fn union_inputs(groups: &[[Option<usize>; GROUP]], live: &[Vec<usize>]) -> usize {
    groups
        .iter()
        .map(|g| {
            let mut u: Vec<usize> = g.iter().flatten().flat_map(|&o| live[o].clone()).collect();
            u.sort_unstable();
            u.dedup();
            u.len()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_blocks_are_grouped_by_their_inputs() {
        // 32 outputs: even ones read inputs 0..4, odd ones 4..8. Plain groups read all 8 inputs
        // each; the reordering puts the evens together and the odds together.
        let live: Vec<Vec<usize>> = (0..32)
            .map(|o| {
                if o % 2 == 0 {
                    vec![0, 1, 2, 3]
                } else {
                    vec![4, 5, 6, 7]
                }
            })
            .collect();
        assert_eq!(union_inputs(&plain(32), &live), 16);
        let g = reorder(&live, 8).expect("a better order exists");
        assert_eq!(union_inputs(&g, &live), 8);
        let mut all: Vec<usize> = g.iter().flatten().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..32).collect::<Vec<_>>(),
            "every output exactly once"
        );
    }

    #[test]
    fn no_gain_keeps_the_plain_order_and_partial_groups_pad_with_none() {
        let dense: Vec<Vec<usize>> = (0..20).map(|_| (0..5).collect()).collect();
        assert!(reorder(&dense, 5).is_none());
        // 20 outputs in two groups of different inputs, last group partial.
        let live: Vec<Vec<usize>> = (0..20)
            .map(|o| if o % 4 == 0 { vec![70] } else { vec![o % 4] })
            .collect();
        let g = reorder(&live, 71).expect("better");
        assert_eq!(g.len(), 2);
        assert_eq!(g.iter().flatten().filter(|s| s.is_none()).count(), 12);
        assert!(union_inputs(&g, &live) < union_inputs(&plain(20), &live));
    }
}
