//! DAG-aware extraction. egg's greedy extractor sums tree costs, so a value used twice (every
//! U-Net skip connection) is paid twice and sharing is punished. Here each candidate carries the
//! *set* of classes it needs with their node costs; a node's cost is the sum over the union of its
//! children's sets plus its own, so shared subgraphs count once. A worklist re-evaluates the
//! parents of a class whenever its best choice improves; choices that would form a cycle are
//! skipped. Ties break on the node's position, so extraction is deterministic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use egg::{Id, Language};

use super::analysis::EG;
use super::cost::node_cost;
use super::lang::Lang;

/// The chosen node of every reachable class.
pub struct Choice {
    pub best: HashMap<Id, Lang>,
    /// The chosen classes, every class after its children.
    pub order: Vec<Id>,
    pub total: f64,
}

struct Cand {
    total: f64,
    set: Rc<BTreeMap<Id, f64>>,
    node: usize,
}

/// Extracts the cheapest DAG for `root`.
pub fn extract(eg: &EG, root: Id) -> Option<Choice> {
    // Parents of each class, for the worklist.
    let mut parents: HashMap<Id, Vec<(Id, usize)>> = HashMap::new();
    let mut queue: VecDeque<(Id, usize)> = VecDeque::new();
    for class in eg.classes() {
        for (i, n) in class.nodes.iter().enumerate() {
            if n.is_leaf() {
                queue.push_back((class.id, i));
            }
            for &c in n.children() {
                parents.entry(eg.find(c)).or_default().push((class.id, i));
            }
        }
    }
    let mut best: HashMap<Id, Cand> = HashMap::new();
    let mut own: HashMap<(Id, usize), f64> = HashMap::new();
    while let Some((cid, i)) = queue.pop_front() {
        let n = &eg[cid].nodes[i];
        let kids: Vec<Id> = n.children().iter().map(|&c| eg.find(c)).collect();
        if kids.iter().any(|c| !best.contains_key(c)) {
            continue;
        }
        if kids
            .iter()
            .any(|c| *c == cid || best[c].set.contains_key(&cid))
        {
            continue; // would be a cycle
        }
        let cost = *own.entry((cid, i)).or_insert_with(|| node_cost(eg, n));
        let set = union(kids.iter().map(|c| &best[c].set), cid, cost);
        let total: f64 = set.values().sum();
        // Strict improvement only (ties keep the first choice found), so this terminates.
        if best
            .get(&cid)
            .is_none_or(|c| total < c.total * (1.0 - 1e-12))
        {
            best.insert(
                cid,
                Cand {
                    total,
                    set: Rc::new(set),
                    node: i,
                },
            );
            if let Some(ps) = parents.get(&cid) {
                queue.extend(ps.iter().copied());
            }
        }
    }
    let root = eg.find(root);
    let total = best.get(&root)?.total;
    // Read the choices off the root's DAG, children before parents; a stale choice that closes
    // a cycle makes extraction fail rather than produce a cyclic graph.
    let mut chosen = HashMap::new();
    let mut order = Vec::new();
    let mut on_path = std::collections::HashSet::new();
    let mut stack = vec![(root, false)];
    while let Some((c, done)) = stack.pop() {
        if done {
            on_path.remove(&c);
            order.push(c);
            continue;
        }
        if chosen.contains_key(&c) {
            continue;
        }
        if !on_path.insert(c) {
            return None;
        }
        let n = eg[c].nodes[best.get(&c)?.node].clone();
        stack.push((c, true));
        for &k in n.children() {
            let k = eg.find(k);
            if on_path.contains(&k) {
                return None;
            }
            if !chosen.contains_key(&k) {
                stack.push((k, false));
            }
        }
        chosen.insert(c, n);
    }
    Some(Choice {
        best: chosen,
        order,
        total,
    })
}

fn union<'a>(
    sets: impl Iterator<Item = &'a Rc<BTreeMap<Id, f64>>>,
    me: Id,
    cost: f64,
) -> BTreeMap<Id, f64> {
    let sets: Vec<&Rc<BTreeMap<Id, f64>>> = sets.collect();
    let biggest = sets
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| s.len())
        .map(|(i, _)| i);
    let mut out = match biggest {
        Some(i) => (**sets[i]).clone(),
        None => BTreeMap::new(),
    };
    for (j, s) in sets.iter().enumerate() {
        if Some(j) != biggest {
            for (k, v) in s.iter() {
                out.insert(*k, *v);
            }
        }
    }
    out.insert(me, cost);
    out
}
