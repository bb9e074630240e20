//! The graph: a petgraph `StableDiGraph` of [`Node`]s with typed ids, operand order on the edges,
//! named inputs/weights as leaf nodes and an ordered list of named outputs.
//!
//! Edges point from operand to user and carry the operand slot, so `operands(n)` is the user's
//! ordered argument list. A stable graph keeps ids valid when passes delete nodes. `add` runs shape
//! inference (the single source of truth lives in `shape.rs`); `add_typed` stores a declared type
//! unchecked, for the parser and for tests of the verifier, which re-checks everything.

use std::collections::HashMap;
use std::fmt;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::error::IrError;
use crate::op::Op;
use crate::shape;
use crate::types::TensorType;

/// Identifies a node (and its single result value) within one graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub NodeIndex<u32>);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// One operation and the type of its result. `label` is a human-readable provenance such as
/// `x0_5.u1.conv`; it has no semantics but survives printing and parsing.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub ty: TensorType,
    pub label: Option<String>,
}

/// A tensor-program graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    g: StableDiGraph<Node, u32>,
    outputs: Vec<(String, NodeId)>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            g: StableDiGraph::default(),
            outputs: Vec::new(),
        }
    }

    /// Adds a graph input with a declared type.
    pub fn input(&mut self, name: impl Into<String>, ty: TensorType) -> NodeId {
        self.add_typed(Op::Input { name: name.into() }, &[], ty, None)
    }

    /// Adds a reference to a named weight with a declared type.
    pub fn weight(&mut self, name: impl Into<String>, ty: TensorType) -> NodeId {
        let name = name.into();
        let label = Some(name.clone());
        self.add_typed(Op::Weight { name }, &[], ty, label)
    }

    /// Adds an op node, inferring its result type from its operands' types.
    pub fn add(
        &mut self,
        op: Op,
        operands: &[NodeId],
        label: Option<String>,
    ) -> Result<NodeId, IrError> {
        let tys: Vec<&TensorType> = operands.iter().map(|&o| &self.node(o).ty).collect();
        let ty = shape::infer(&op, &tys).map_err(|msg| IrError::Shape {
            node: label.clone().unwrap_or_else(|| op.mnemonic().to_string()),
            msg,
        })?;
        Ok(self.add_typed(op, operands, ty, label))
    }

    /// Adds an op node with a declared result type, without checking it (the verifier does).
    pub fn add_typed(
        &mut self,
        op: Op,
        operands: &[NodeId],
        ty: TensorType,
        label: Option<String>,
    ) -> NodeId {
        let id = NodeId(self.g.add_node(Node { op, ty, label }));
        for (slot, &o) in operands.iter().enumerate() {
            self.g.add_edge(o.0, id.0, slot as u32);
        }
        id
    }

    /// Marks `id` as the graph output `name` (outputs keep their insertion order).
    pub fn set_output(&mut self, name: impl Into<String>, id: NodeId) {
        let name = name.into();
        if let Some(slot) = self.outputs.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = id;
        } else {
            self.outputs.push((name, id));
        }
    }

    /// Adds one raw operand edge `operand -> user` at `slot`, unchecked: it may duplicate a slot,
    /// leave a gap or close a cycle. For readers that report such faults themselves and for tests
    /// of the verifier, which reports them all. Adds nothing and returns `false` when either id is
    /// not a node of this graph.
    pub fn add_operand_edge(&mut self, operand: NodeId, user: NodeId, slot: u32) -> bool {
        if !(self.contains(operand) && self.contains(user)) {
            return false;
        }
        self.g.add_edge(operand.0, user.0, slot);
        true
    }

    /// Appends an output entry unchecked: unlike `set_output` it keeps an existing output of the
    /// same name, and `id` need not be a node. For readers that report such faults themselves and
    /// for tests of the verifier (`duplicate-output`, `dangling-output`).
    pub fn push_output_unchecked(&mut self, name: impl Into<String>, id: NodeId) {
        self.outputs.push((name.into(), id));
    }

    /// Drops every output not named in `keep` (in their existing order).
    pub fn retain_outputs(&mut self, keep: &[&str]) {
        self.outputs.retain(|(n, _)| keep.contains(&n.as_str()));
    }

    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    pub fn output(&self, name: &str) -> Option<NodeId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, id)| id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.0)
    }

    /// The node behind `id`. Panics on an id from another graph or a removed node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.0]
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// All node ids in index order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices().map(NodeId)
    }

    /// The raw operand edges of `id` as `(slot, operand)`, in slot order (duplicates possible in a
    /// malformed graph; the verifier reports them).
    pub fn operand_slots(&self, id: NodeId) -> Vec<(u32, NodeId)> {
        let mut v: Vec<(u32, NodeId)> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (*e.weight(), NodeId(e.source())))
            .collect();
        v.sort();
        v
    }

    /// The ordered operands of `id`.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        self.operand_slots(id).into_iter().map(|(_, o)| o).collect()
    }

    /// The users of `id` as `(user, slot)`, sorted.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, u32)> {
        let mut v: Vec<(NodeId, u32)> = self
            .g
            .edges_directed(id.0, Direction::Outgoing)
            .map(|e| (NodeId(e.target()), *e.weight()))
            .collect();
        v.sort();
        v
    }

    /// Redirects every use of `old` (as an operand and as an output) to `new`.
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) {
        for (user, slot) in self.users(old) {
            if let Some(e) = self.g.find_edge(old.0, user.0) {
                self.g.remove_edge(e);
            }
            self.g.add_edge(new.0, user.0, slot);
        }
        for o in &mut self.outputs {
            if o.1 == old {
                o.1 = new;
            }
        }
    }

    /// Removes a node and its edges. Outputs naming it are dropped as well.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.outputs.retain(|(_, o)| *o != id);
        self.g.remove_node(id.0)
    }

    /// Graph inputs as `(name, id)` in index order.
    pub fn inputs(&self) -> Vec<(String, NodeId)> {
        self.leaves(|op| match op {
            Op::Input { name } => Some(name),
            _ => None,
        })
    }

    /// Weight references as `(name, id)` in index order.
    pub fn weights(&self) -> Vec<(String, NodeId)> {
        self.leaves(|op| match op {
            Op::Weight { name } => Some(name),
            _ => None,
        })
    }

    fn leaves(&self, pick: impl Fn(&Op) -> Option<&String>) -> Vec<(String, NodeId)> {
        self.node_ids()
            .filter_map(|id| pick(&self.node(id).op).map(|n| (n.clone(), id)))
            .collect()
    }

    /// A topological order (operands before users), stable: among ready nodes the lowest id goes
    /// first, so equal graphs give equal orders. Errors with the nodes on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, IrError> {
        let mut indeg: HashMap<NodeId, usize> = self
            .node_ids()
            .map(|id| {
                let d = self.g.edges_directed(id.0, Direction::Incoming).count();
                (id, d)
            })
            .collect();
        let mut ready: std::collections::BTreeSet<NodeId> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&id, _)| id)
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for e in self.g.edges_directed(id.0, Direction::Outgoing) {
                let t = NodeId(e.target());
                let d = indeg.get_mut(&t).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(t);
                }
            }
        }
        if order.len() != self.len() {
            let mut stuck: Vec<NodeId> = indeg
                .into_iter()
                .filter(|(_, d)| *d > 0)
                .map(|(id, _)| id)
                .collect();
            stuck.sort();
            return Err(IrError::Cycle {
                nodes: stuck.iter().map(|id| self.describe(*id)).collect(),
            });
        }
        Ok(order)
    }

    /// The nodes that `roots` depend on (including the roots), as a membership mask by index.
    pub fn ancestors(&self, roots: &[NodeId]) -> std::collections::HashSet<NodeId> {
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<NodeId> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(self.operands(id));
            }
        }
        seen
    }

    /// `%12 (conv3d "x0_1.u0.conv")`: how errors name a node.
    pub fn describe(&self, id: NodeId) -> String {
        if !self.contains(id) {
            return format!("{id} (removed)");
        }
        let n = self.node(id);
        match &n.label {
            Some(l) => format!("{id} ({} \"{l}\")", n.op.mnemonic()),
            None => format!("{id} ({})", n.op.mnemonic()),
        }
    }

    /// Read-only access to the underlying petgraph (for visitors and Graphviz output).
    pub fn petgraph(&self) -> &StableDiGraph<Node, u32> {
        &self.g
    }
}
