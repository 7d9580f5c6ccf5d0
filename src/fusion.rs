//! The fusion pass: named rules that rewrite runs of primitive nodes into fused nodes.
//!
//! Each rule looks at the nodes from one position on and either leaves them or replaces a
//! run of them; the pass applies the rules in order, each over the whole list. A value that
//! a rule makes disappear (ReLU's output inside a BatchNorm, BatchNorm's output inside a
//! pool or conv) must have no other reader and not be kept (`Tape::keep`). Rules are about
//! structure only: whether a backend runs a fused node in one kernel or lowers it to its
//! primitives (src/fused.rs) is the backend's business.
//!
//! Adding a rule: a function here from nodes to nodes, an entry in [`RULES`], and, if it
//! makes a new kind of node, that node in src/graph.rs and its lowering in src/lower.rs.

use std::collections::HashMap;

use crate::graph::{BatchNormNode, Handoff, LinearNode, Node, Var};

/// What a rule may ask of the values.
pub trait Values {
    /// A new value of this shape.
    fn fresh(&mut self, shape: &[usize]) -> Var;
    /// Whether the value must stay readable after the forward pass.
    fn kept(&self, v: Var) -> bool;
}

/// What a rule sees: the values, and how many nodes read each.
pub struct Ctx<'v> {
    values: &'v mut dyn Values,
    readers: HashMap<Var, usize>,
}

impl Ctx<'_> {
    /// Whether `v` can disappear into a fused node: read once, by that node, and not kept.
    fn internal(&self, v: Var) -> bool {
        self.readers.get(&v) == Some(&1) && !self.values.kept(v)
    }
}

/// A rewrite: from `nodes[0..]`, how many nodes it replaces and with what.
type Rewrite = fn(&[Node], &mut Ctx) -> Option<(usize, Vec<Node>)>;

#[derive(Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    /// Only in training (it prepares something only the backward or the statistics use).
    pub train_only: bool,
    /// It has a conv hand its output's plane moments to the BatchNorm after it: only for a
    /// backend whose convs make them cheaply (`Backend::convs_hand_moments`).
    pub hands_moments: bool,
    rewrite: Rewrite,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every rule, in the order the pass applies them.
pub const RULES: [Rule; 8] = [
    Rule { name: "relu_batchnorm", train_only: false, hands_moments: false, rewrite: relu_batchnorm },
    Rule { name: "relu_linear", train_only: false, hands_moments: false, rewrite: relu_linear },
    Rule { name: "batchnorm_maxpool", train_only: false, hands_moments: false, rewrite: batchnorm_maxpool },
    Rule { name: "batchnorm_conv2d", train_only: false, hands_moments: false, rewrite: batchnorm_conv2d },
    Rule { name: "conv2d_batchnorm_conv2d", train_only: true, hands_moments: false, rewrite: conv2d_batchnorm_conv2d },
    Rule { name: "moments_handoff", train_only: true, hands_moments: true, rewrite: moments_handoff },
    Rule { name: "pair_contrastive", train_only: false, hands_moments: false, rewrite: pair_contrastive },
    Rule { name: "linear_pair_contrastive", train_only: false, hands_moments: false, rewrite: linear_pair_contrastive },
];

/// Applies `rules` in order to `nodes`.
pub fn fuse(mut nodes: Vec<Node>, rules: &[Rule], values: &mut dyn Values) -> Vec<Node> {
    for rule in rules {
        let mut i = 0;
        let mut readers = readers(&nodes);
        while i < nodes.len() {
            let mut ctx = Ctx { readers, values: &mut *values };
            // The last node a rewrite leaves may start the next match (a conv that takes
            // moments may hand on its own).
            let rewrite = (rule.rewrite)(&nodes[i..], &mut ctx);
            readers = ctx.readers;
            if let Some((replaced, with)) = rewrite {
                nodes.splice(i..i + replaced, with);
                readers = self::readers(&nodes);
            }
            i += 1;
        }
    }
    nodes
}

fn readers(nodes: &[Node]) -> HashMap<Var, usize> {
    let mut readers = HashMap::new();
    for v in nodes.iter().flat_map(Node::inputs) {
        *readers.entry(v).or_default() += 1;
    }
    readers
}

/// ReLU → BatchNorm: BatchNorm reads x through the ReLU (its `relu_input`), and writes x's
/// gradient through the ReLU's mask, so ReLU(x) never exists.
fn relu_batchnorm(nodes: &[Node], ctx: &mut Ctx) -> Option<(usize, Vec<Node>)> {
    let [Node::Relu { x, y }, Node::BatchNorm(bn), ..] = nodes else { return None };
    (bn.x == *y && bn.p.relu_input == 0 && ctx.internal(*y)).then(|| {
        let p = bn.p.with_relu_input(true);
        (2, vec![Node::BatchNorm(BatchNormNode { x: *x, p, ..*bn })])
    })
}

/// ReLU → Linear, through any reshape between: the linear layer reads x through the ReLU.
fn relu_linear(nodes: &[Node], ctx: &mut Ctx) -> Option<(usize, Vec<Node>)> {
    let through_relu = |l: &LinearNode, x: Var| Node::Linear(LinearNode { x, p: l.p.with_relu_input(true), ..*l });
    match nodes {
        [Node::Relu { x, y }, Node::Linear(l), ..] if l.x == *y && ctx.internal(*y) => {
            Some((2, vec![through_relu(l, *x)]))
        }
        [Node::Relu { x, y }, Node::Reshape { x: rx, y: ry }, Node::Linear(l), ..]
            if rx == y && l.x == *ry && ctx.internal(*y) && ctx.internal(*ry) =>
        {
            Some((3, vec![Node::Reshape { x: *x, y: *ry }, through_relu(l, *ry)]))
        }
        _ => None,
    }
}

/// BatchNorm → MaxPool: the pool reads x through the normalisation.
fn batchnorm_maxpool(nodes: &[Node], ctx: &mut Ctx) -> Option<(usize, Vec<Node>)> {
    let [Node::BatchNorm(bn), Node::MaxPool { x, y, p }, ..] = nodes else { return None };
    (*x == bn.y && ctx.internal(bn.y))
        .then(|| (2, vec![Node::BatchNormMaxPool { bn: *bn, pool: *p, y: *y, moments: None }]))
}

/// BatchNorm → Conv2d: the conv reads x through the normalisation.
fn batchnorm_conv2d(nodes: &[Node], ctx: &mut Ctx) -> Option<(usize, Vec<Node>)> {
    let [Node::BatchNorm(bn), Node::Conv2d(conv), ..] = nodes else { return None };
    (conv.x == bn.y && ctx.internal(bn.y))
        .then(|| (2, vec![Node::BatchNormConv2d { bn: *bn, conv: *conv, moments: None, hands: None }]))
}

/// Conv2d → (BatchNorm → Conv2d): one backward for both convs, which reads the first conv's
/// output gradient through BatchNorm's backward instead of writing it.
fn conv2d_batchnorm_conv2d(nodes: &[Node], ctx: &mut Ctx) -> Option<(usize, Vec<Node>)> {
    let [Node::Conv2d(first), Node::BatchNormConv2d { bn, conv, moments: None, hands }, ..] = nodes else {
        return None;
    };
    let only_reader = ctx.readers.get(&first.y) == Some(&1);
    (bn.x == first.y && only_reader).then(|| {
        let node = Node::Conv2dBatchNormConv2d { first: *first, bn: *bn, conv: *conv, hands: *hands };
        (2, vec![node])
    })
}

/// A node ending in a conv → a node reading its output through a BatchNorm: the conv hands
/// the BatchNorm its output's plane moments, an explicit value between the two.
fn moments_handoff(nodes: &[Node], ctx: &mut Ctx) -> Option<(usize, Vec<Node>)> {
    let [producer, consumer, ..] = nodes else { return None };
    let (mut producer, mut consumer) = (producer.clone(), consumer.clone());
    let (Node::BatchNormConv2d { conv, hands: hands @ None, .. }
    | Node::Conv2dBatchNormConv2d { conv, hands: hands @ None, .. }) = &mut producer
    else {
        return None;
    };
    let (Node::BatchNormMaxPool { bn, moments: moments @ None, .. }
    | Node::BatchNormConv2d { bn, moments: moments @ None, .. }) = &mut consumer
    else {
        return None;
    };
    if bn.x != conv.y {
        return None;
    }
    let handoff = Handoff { moments: ctx.values.fresh(&[2 * (bn.p.n * bn.p.c) as usize]), p: bn.p };
    (*hands, *moments) = (Some(handoff), Some(handoff.moments));
    Some((2, vec![producer, consumer]))
}

/// PairDistance → Contrastive: one kernel each way; the distances are still written.
fn pair_contrastive(nodes: &[Node], ctx: &mut Ctx) -> Option<(usize, Vec<Node>)> {
    let [Node::PairDistance { x, d, p: pd }, Node::Contrastive { d: cd, t, loss, p: pc }, ..] = nodes else {
        return None;
    };
    let only_reader = ctx.readers.get(d) == Some(&1);
    (cd == d && only_reader)
        .then(|| (2, vec![Node::PairContrastive { x: *x, t: *t, d: *d, loss: *loss, pd: *pd, pc: *pc }]))
}

/// Linear → PairContrastive of its output: the loss head's forward as one op. The linear
/// layer's output is still written (the backward reads it), so it may have other readers.
fn linear_pair_contrastive(nodes: &[Node], _: &mut Ctx) -> Option<(usize, Vec<Node>)> {
    let [Node::Linear(linear), Node::PairContrastive { x, t, d, loss, pd, pc }, ..] = nodes else { return None };
    (linear.y == *x).then(|| {
        let node = Node::LinearPairContrastive { linear: *linear, t: *t, d: *d, loss: *loss, pd: *pd, pc: *pc };
        (2, vec![node])
    })
}
