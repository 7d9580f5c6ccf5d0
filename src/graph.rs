//! The nodes the tape records: the primitive ops the model writes, and the fused ops that
//! the fusion pass (src/fusion.rs) makes of them. Nodes name values by [`Var`]; the tape
//! holds the values.

use crate::ops::*;

/// A handle to a value on the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(pub(crate) usize);

/// A convolution as a node holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvNode {
    pub x: Var,
    pub w: Var,
    pub b: Var,
    pub y: Var,
    pub p: Conv2dParams,
}

/// A fully connected layer as a node holds it; `p.relu_input` set: Linear(ReLU(x)), the ReLU
/// folded in by the fusion pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearNode {
    pub x: Var,
    pub w: Var,
    pub b: Var,
    pub y: Var,
    pub p: LinearParams,
}

/// A BatchNorm2d: its input, γ, β, running statistics (`mean`, `var`), output, and the
/// statistics it normalised with (`saved`: mean (T, C) then 1/std (T, C), the batch's in
/// training, the running ones in eval mode), which the backward and the fused ops read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormNode {
    pub x: Var,
    pub gamma: Var,
    pub beta: Var,
    pub mean: Var,
    pub var: Var,
    pub y: Var,
    pub saved: Var,
    pub p: BatchNormParams,
}

/// Plane moments that a node computes beside its output for the BatchNorm that reads that
/// output next (`p` is that BatchNorm's), so that its statistics need not read it again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Handoff {
    pub moments: Var,
    pub p: BatchNormParams,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    // --- primitives: what the model writes -------------------------------------------------
    Conv2d(ConvNode),
    Relu {
        x: Var,
        y: Var,
    },
    /// `p.relu_input` set: BatchNorm(ReLU(x)), the ReLU folded in by the fusion pass.
    BatchNorm(BatchNormNode),
    MaxPool {
        x: Var,
        y: Var,
        p: MaxPoolParams,
    },
    /// The same elements seen with another shape (PyTorch's `view`).
    Reshape {
        x: Var,
        y: Var,
    },
    Linear(LinearNode),
    /// Distances (N) between the two towers stacked in x (2N, D).
    PairDistance {
        x: Var,
        d: Var,
        p: PairDistanceParams,
    },
    /// Mean contrastive loss of distances d against targets t (0 = same).
    Contrastive {
        d: Var,
        t: Var,
        loss: Var,
        p: ContrastiveParams,
    },

    // --- fused: what the fusion pass makes -------------------------------------------------
    /// MaxPool(BatchNorm(x)) into `y`; BatchNorm's output `bn.y` is never written.
    BatchNormMaxPool {
        bn: BatchNormNode,
        pool: MaxPoolParams,
        y: Var,
        moments: Option<Var>,
    },
    /// Conv2d(BatchNorm(x)); BatchNorm's output (`bn.y`, the conv's `x`) is never written.
    BatchNormConv2d {
        bn: BatchNormNode,
        conv: ConvNode,
        moments: Option<Var>,
        hands: Option<Handoff>,
    },
    /// conv(BatchNorm(first(x))): as `BatchNormConv2d` of first's output, whose backward runs
    /// first's too, so that first's output gradient need not be written.
    Conv2dBatchNormConv2d {
        first: ConvNode,
        bn: BatchNormNode,
        conv: ConvNode,
        hands: Option<Handoff>,
    },
    /// `PairDistance` then `Contrastive`; the distances are written as a result, but no
    /// gradient flows back through them.
    PairContrastive {
        x: Var,
        t: Var,
        d: Var,
        loss: Var,
        pd: PairDistanceParams,
        pc: ContrastiveParams,
    },
    /// `Linear` then `PairContrastive` of its output: forward in one kernel where a backend
    /// has one; the linear layer's output (the embeddings) is still written.
    LinearPairContrastive {
        linear: LinearNode,
        t: Var,
        d: Var,
        loss: Var,
        pd: PairDistanceParams,
        pc: ContrastiveParams,
    },
}

impl Node {
    /// The values the node reads.
    pub fn inputs(&self) -> Vec<Var> {
        let bn_in = |bn: &BatchNormNode| [bn.x, bn.gamma, bn.beta, bn.mean, bn.var];
        match self {
            Node::Conv2d(c) => vec![c.x, c.w, c.b],
            Node::Relu { x, .. } | Node::MaxPool { x, .. } | Node::Reshape { x, .. } => vec![*x],
            Node::BatchNorm(bn) => bn_in(bn).to_vec(),
            Node::Linear(l) => vec![l.x, l.w, l.b],
            Node::PairDistance { x, .. } => vec![*x],
            Node::Contrastive { d, t, .. } => vec![*d, *t],
            Node::BatchNormMaxPool { bn, moments, .. } => [&bn_in(bn)[..], moments.as_slice()].concat(),
            Node::BatchNormConv2d { bn, conv, moments, .. } => {
                [&bn_in(bn)[..], &[conv.w, conv.b], moments.as_slice()].concat()
            }
            Node::Conv2dBatchNormConv2d { first, bn, conv, .. } => {
                [&[first.x, first.w, first.b][..], &bn_in(bn)[1..], &[conv.w, conv.b]].concat()
            }
            Node::PairContrastive { x, t, .. } => vec![*x, *t],
            Node::LinearPairContrastive { linear: l, t, .. } => vec![l.x, l.w, l.b, *t],
        }
    }

    /// The values the node writes.
    pub fn outputs(&self) -> Vec<Var> {
        let hands = |h: &Option<Handoff>| h.map(|h| h.moments);
        match self {
            Node::Conv2d(c) => vec![c.y],
            Node::Relu { y, .. } | Node::MaxPool { y, .. } | Node::Reshape { y, .. } => vec![*y],
            Node::Linear(l) => vec![l.y],
            Node::BatchNorm(bn) => vec![bn.y, bn.saved],
            Node::PairDistance { d, .. } => vec![*d],
            Node::Contrastive { loss, .. } => vec![*loss],
            Node::BatchNormMaxPool { bn, y, .. } => vec![bn.saved, *y],
            Node::BatchNormConv2d { bn, conv, hands: h, .. } => [&[bn.saved, conv.y][..], hands(h).as_slice()].concat(),
            Node::Conv2dBatchNormConv2d { first, bn, conv, hands: h } => {
                [&[first.y, bn.saved, conv.y][..], hands(h).as_slice()].concat()
            }
            Node::PairContrastive { d, loss, .. } => vec![*d, *loss],
            Node::LinearPairContrastive { linear, d, loss, .. } => vec![linear.y, *d, *loss],
        }
    }
}
