//! How each node runs on a backend, forward and backward: primitives as the backend's
//! primitive methods, fused nodes through `Backend::fused`.

use crate::backend::{Backend, Conv, Moments, Norm, NormGrads, ParamGrads, Running};
use crate::fused::{self, Fused};
use crate::graph::{BatchNormNode, ConvNode, Handoff, Node, Var};
use crate::ops::*;
use crate::tape::{Mode, Tape, Value};

/// A node's view of the tape's tensors.
struct Tensors<'v, T>(&'v [Value<T>]);

impl<'v, T> Tensors<'v, T> {
    fn get(&self, v: Var) -> &'v T {
        self.0[v.0].data.as_ref().unwrap_or_else(|| panic!("tape: {v:?} read before it was written"))
    }
    fn conv(&self, c: &ConvNode) -> Conv<'v, T> {
        Conv { p: c.p, w: self.get(c.w), b: self.get(c.b) }
    }
    fn norm(&self, bn: &BatchNormNode, p: BatchNormParams) -> Norm<'v, T> {
        Norm { p, gamma: self.get(bn.gamma), beta: self.get(bn.beta), saved: self.get(bn.saved) }
    }
}

impl<B: Backend> Tape<'_, B> {
    /// Gives the node's outputs storage and runs it.
    pub(crate) fn forward(&mut self, node: &Node) {
        if let Node::Reshape { x, y } = *node {
            self.values[y.0].data = Some(self.tensor(x).clone());
            return;
        }
        for v in node.outputs() {
            let len = self.values[v.0].shape.iter().product();
            self.values[v.0].data = Some(self.backend.scratch(len));
        }
        let (b, t, mode) = (&mut *self.backend, Tensors(&self.values), self.mode);
        match node {
            Node::Conv2d(c) => b.conv2d_forward(&c.p, t.get(c.x), t.get(c.w), t.get(c.b), t.get(c.y)),
            Node::Relu { x, y } => b.relu_forward(t.get(*x), t.get(*y)),
            Node::BatchNorm(bn) => {
                statistics(b, &t, mode, bn, None);
                b.batchnorm_normalise(&t.norm(bn, bn.p), t.get(bn.x), t.get(bn.y));
            }
            Node::MaxPool { x, y, p } => b.maxpool_forward(p, t.get(*x), t.get(*y)),
            Node::Reshape { .. } => unreachable!("handled above"),
            Node::Linear(l) => b.linear_forward(&l.p, t.get(l.x), t.get(l.w), t.get(l.b), t.get(l.y)),
            Node::PairDistance { x, d, p } => b.pair_distance_forward(p, t.get(*x), t.get(*d)),
            Node::Contrastive { d, t: target, loss, p } => {
                b.contrastive_forward(p, t.get(*d), t.get(*target), t.get(*loss))
            }
            Node::BatchNormMaxPool { bn, pool, y, moments } => {
                statistics(b, &t, mode, bn, moments.map(|m| t.get(m)));
                let (norm, x, y) = (t.norm(bn, bn.p), t.get(bn.x), t.get(*y));
                b.fused(Fused::BatchNormMaxPoolForward { norm, pool: *pool, x, y });
            }
            Node::BatchNormConv2d { bn, conv, moments, hands } => {
                statistics(b, &t, mode, bn, moments.map(|m| t.get(m)));
                batchnorm_conv2d_forward(b, &t, (bn, conv), hands);
            }
            Node::Conv2dBatchNormConv2d { first, bn, conv, hands } => {
                let (x, y) = (t.get(first.x), t.get(first.y));
                if b.convs_hand_moments() {
                    let m = b.scratch(2 * (bn.p.n * bn.p.c) as usize);
                    let moments = Moments { p: bn.p, out: &m };
                    b.fused(Fused::Conv2dMomentsForward { conv: t.conv(first), x, y, moments });
                    statistics(b, &t, mode, bn, Some(&m));
                } else {
                    b.conv2d_forward(&first.p, x, t.get(first.w), t.get(first.b), y);
                    statistics(b, &t, mode, bn, None);
                }
                batchnorm_conv2d_forward(b, &t, (bn, conv), hands);
            }
            Node::PairContrastive { x, t: target, d, loss, pd, pc } => {
                let (x, target, d, loss) = (t.get(*x), t.get(*target), t.get(*d), t.get(*loss));
                b.fused(Fused::PairContrastiveForward { pd: *pd, pc: *pc, x, t: target, d, loss });
            }
            Node::LinearPairContrastive { linear: l, t: target, d, loss, pd, pc } => {
                b.fused(Fused::LinearPairContrastiveForward(fused::LinearPairContrastiveForward {
                    linear: l.p,
                    x: t.get(l.x),
                    w: t.get(l.w),
                    b: t.get(l.b),
                    y: t.get(l.y),
                    pd: *pd,
                    pc: *pc,
                    t: t.get(*target),
                    d: t.get(*d),
                    loss: t.get(*loss),
                }));
            }
        }
    }

    /// Runs the node's backward from its outputs' gradients, if any reached them.
    pub(crate) fn backward_node(&mut self, node: &Node) {
        match *node {
            Node::Conv2d(c) => {
                let Some(dy) = self.out_grad(c.y) else { return };
                let dx = self.grad_slot(c.x, ACCUMULATE_INPUT);
                let params = (self.requires_grad(c.w) || self.requires_grad(c.b)).then(|| self.param_grads(c.w, c.b));
                let acc = dx.as_ref().map_or(0, |d| d.1) | params.as_ref().map_or(0, |g| g.0);
                let p = Conv2dParams { accumulate: acc, ..c.p };
                let grads = params.as_ref().map(|(_, dw, db)| ParamGrads { dw, db });
                let t = Tensors(&self.values);
                let input = dx.as_ref().map(|(dx, _)| (t.get(c.w), dx));
                self.backend.conv2d_backward(&p, &dy, input, grads.map(|g| (t.get(c.x), g)));
            }
            Node::Relu { x, y } => {
                let Some(dy) = self.out_grad(y) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    let y = self.tensor(y).clone();
                    self.backend.relu_backward(&y, &dy, &dx, acc);
                }
            }
            Node::BatchNorm(bn) => {
                let Some(dy) = self.out_grad(bn.y) else { return };
                let (p, dx, dgamma, dbeta) = self.batchnorm_grads(&bn);
                let t = Tensors(&self.values);
                let grads = NormGrads { dx: &dx, dgamma: &dgamma, dbeta: &dbeta };
                self.backend.batchnorm_backward(&t.norm(&bn, p), t.get(bn.x), &dy, grads);
            }
            Node::MaxPool { x, y, p } => {
                let Some(dy) = self.out_grad(y) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    let x = self.tensor(x).clone();
                    self.backend.maxpool_backward(&MaxPoolParams { accumulate: acc, ..p }, &x, &dy, &dx);
                }
            }
            Node::Reshape { x, y } => {
                let Some(dy) = self.out_grad(y) else { return };
                self.pass_grad(x, dy);
            }
            Node::Linear(l) => {
                let Some(dy) = self.out_grad(l.y) else { return };
                let dx = self.grad_slot(l.x, ACCUMULATE_INPUT);
                let (acc, dw, db) = self.param_grads(l.w, l.b);
                let p = LinearParams { accumulate: acc | dx.as_ref().map_or(0, |d| d.1), ..l.p };
                let t = Tensors(&self.values);
                let grads = ParamGrads { dw: &dw, db: &db };
                self.backend.linear_backward(&p, t.get(l.x), t.get(l.w), &dy, dx.as_ref().map(|d| &d.0), grads);
            }
            Node::PairDistance { x, d, p } => {
                let Some(dd) = self.out_grad(d) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    let p = PairDistanceParams { accumulate: acc, ..p };
                    let t = Tensors(&self.values);
                    self.backend.pair_distance_backward(&p, t.get(x), t.get(d), &dd, &dx);
                }
            }
            Node::Contrastive { d, t: target, loss, p } => {
                let Some(dloss) = self.out_grad(loss) else { return };
                if let Some((dd, acc)) = self.grad_slot(d, ACCUMULATE_INPUT) {
                    let p = ContrastiveParams { accumulate: acc, ..p };
                    let t = Tensors(&self.values);
                    self.backend.contrastive_backward(&p, t.get(d), t.get(target), &dloss, &dd);
                }
            }
            Node::BatchNormMaxPool { bn, pool, y, .. } => {
                let Some(dy) = self.out_grad(y) else { return };
                let (p, dx, dgamma, dbeta) = self.batchnorm_grads(&bn);
                let t = Tensors(&self.values);
                let grads = NormGrads { dx: &dx, dgamma: &dgamma, dbeta: &dbeta };
                let op = Fused::BatchNormMaxPoolBackward { norm: t.norm(&bn, p), pool, x: t.get(bn.x), dy: &dy, grads };
                self.backend.fused(op);
            }
            Node::BatchNormConv2d { bn, conv, .. } => {
                let Some(dy) = self.out_grad(conv.y) else { return };
                let (p, dx, dgamma, dbeta) = self.batchnorm_grads(&bn);
                let (acc, dw, db) = self.param_grads(conv.w, conv.b);
                let t = Tensors(&self.values);
                let conv = Conv { p: Conv2dParams { accumulate: acc, ..conv.p }, ..t.conv(&conv) };
                self.backend.fused(Fused::BatchNormConv2dBackward(fused::BatchNormConv2dBackward {
                    norm: t.norm(&bn, p),
                    conv,
                    x: t.get(bn.x),
                    dy: &dy,
                    grads: NormGrads { dx: &dx, dgamma: &dgamma, dbeta: &dbeta },
                    conv_grads: ParamGrads { dw: &dw, db: &db },
                }));
            }
            Node::Conv2dBatchNormConv2d { first, bn, conv, .. } => {
                let Some(dy) = self.out_grad(conv.y) else { return };
                let dx = self.grad_slot(first.x, ACCUMULATE_INPUT);
                let (acc_first, dwa, dba) = self.param_grads(first.w, first.b);
                let (acc_conv, dw, db) = self.param_grads(conv.w, conv.b);
                let (acc_bn, dgamma, dbeta) = self.param_grads(bn.gamma, bn.beta);
                let t = Tensors(&self.values);
                let first_acc = acc_first | dx.as_ref().map_or(0, |d| d.1);
                let first_conv = Conv { p: Conv2dParams { accumulate: first_acc, ..first.p }, ..t.conv(&first) };
                let conv_b = Conv { p: Conv2dParams { accumulate: acc_conv, ..conv.p }, ..t.conv(&conv) };
                let norm = t.norm(&bn, BatchNormParams { accumulate: acc_bn, ..bn.p });
                self.backend.fused(Fused::Conv2dBatchNormConv2dBackward(fused::Conv2dBatchNormConv2dBackward {
                    first: first_conv,
                    x: t.get(first.x),
                    dx: dx.as_ref().map(|d| &d.0),
                    first_grads: ParamGrads { dw: &dwa, db: &dba },
                    norm,
                    z: t.get(bn.x),
                    dgamma: &dgamma,
                    dbeta: &dbeta,
                    conv: conv_b,
                    dy: &dy,
                    conv_grads: ParamGrads { dw: &dw, db: &db },
                }));
            }
            Node::PairContrastive { x, t: target, d, loss, pd, pc } => {
                let Some(dloss) = self.out_grad(loss) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    let pd = PairDistanceParams { accumulate: acc, ..pd };
                    let t = Tensors(&self.values);
                    let (x, target, d) = (t.get(x), t.get(target), t.get(d));
                    let op = fused::PairContrastiveBackward { pd, pc, x, d, t: target, dloss: &dloss, dx: &dx };
                    self.backend.fused(Fused::PairContrastiveBackward(op));
                }
            }
            Node::LinearPairContrastive { linear, t, d, loss, pd, pc } => {
                // The two nodes' backwards in turn.
                self.backward_node(&Node::PairContrastive { x: linear.y, t, d, loss, pd, pc });
                self.backward_node(&Node::Linear(linear));
            }
        }
    }

    /// Where a BatchNorm's backward writes dx, dγ and dβ (scratch for those that need no
    /// gradient), and its params with the accumulate bits they take.
    fn batchnorm_grads(&mut self, bn: &BatchNormNode) -> (BatchNormParams, B::Tensor, B::Tensor, B::Tensor) {
        let (dx, acc_x) = match self.grad_slot(bn.x, ACCUMULATE_INPUT) {
            Some(slot) => slot,
            None => (self.backend.scratch(bn.p.len()), 0),
        };
        let (acc_p, dgamma, dbeta) = self.param_grads(bn.gamma, bn.beta);
        (BatchNormParams { accumulate: acc_x | acc_p, ..bn.p }, dx, dgamma, dbeta)
    }
}

/// conv(BatchNorm(x)) with the statistics in `bn.saved`, handing y's plane moments on where
/// the node says.
fn batchnorm_conv2d_forward<B: Backend>(
    b: &mut B,
    t: &Tensors<B::Tensor>,
    (bn, conv): (&BatchNormNode, &ConvNode),
    hands: &Option<Handoff>,
) {
    let moments = hands.map(|h| Moments { p: h.p, out: t.get(h.moments) });
    let (norm, x, y) = (t.norm(bn, bn.p), t.get(bn.x), t.get(conv.y));
    b.fused(Fused::BatchNormConv2dForward { norm, conv: t.conv(conv), x, y, moments });
}

/// A BatchNorm's statistics into `bn.saved`: the batch's in training (with the running
/// ones' update; from x's plane moments where a node handed them over), the running ones in
/// eval mode.
fn statistics<B: Backend>(
    b: &mut B,
    t: &Tensors<B::Tensor>,
    mode: Mode,
    bn: &BatchNormNode,
    moments: Option<&B::Tensor>,
) {
    let running = Running { mean: t.get(bn.mean), var: t.get(bn.var) };
    match mode {
        Mode::Train => b.batchnorm_statistics(&bn.p, t.get(bn.x), moments, t.get(bn.saved), running),
        Mode::Eval => b.batchnorm_running_statistics(&bn.p, running, t.get(bn.saved)),
    }
}
