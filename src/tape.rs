//! The autograd tape: record, reverse walk, accumulate.
//!
//! The model calls the op methods below, which record primitive nodes (src/graph.rs) and
//! compute only shapes. When a value is first needed (`read`, `data`, `backward`), the
//! nodes recorded since are fused (src/fusion.rs) and run in order (src/lower.rs), so the
//! tape is already in topological order and the backward pass is a plain reverse loop.
//! Gradients accumulate: the first contribution to a value's gradient is written, later
//! ones are added (the backends' `accumulate` bits).
//!
//! Parameters are values whose gradient lives at a fixed place (a view of the model's flat
//! gradient buffer); every other gradient is scratch. In [`Mode::Eval`] nothing is kept for
//! a backward pass and BatchNorm uses its running statistics.
//!
//! Ops that reduce over the batch take `towers`: the batch is that many stacked towers, kept
//! apart in every reduction as separate calls would keep them (see src/ops/mod.rs).

use crate::backend::{Backend, DeviceTensor};
use crate::fusion::{self, RULES, Rule};
pub use crate::graph::Var;
use crate::graph::{BatchNormNode, ConvNode, LinearNode, Node};
use crate::ops::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keep the nodes for `backward`; BatchNorm normalises with batch statistics and updates
    /// the running ones.
    Train,
    /// Keep nothing; BatchNorm normalises with the running statistics.
    Eval,
}

/// A BatchNorm layer's tensors on the tape: γ, β and the running statistics.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormVars {
    pub gamma: Var,
    pub beta: Var,
    pub mean: Var,
    pub var: Var,
}

pub(crate) struct Value<T> {
    pub shape: Vec<usize>,
    /// None until the node that writes it has run, and for good if a fused node never does.
    pub data: Option<T>,
    pub requires_grad: bool,
    /// Where the gradient goes, once there is one.
    pub grad: Option<T>,
    /// Whether `grad` holds a contribution yet; the next one is added only if it does.
    pub grad_written: bool,
    pub is_param: bool,
    /// Read after the forward pass: no fusion may make it disappear.
    pub kept: bool,
}

impl<T> Value<T> {
    fn new(shape: &[usize], data: Option<T>, requires_grad: bool) -> Self {
        let shape = shape.to_vec();
        Self { shape, data, requires_grad, grad: None, grad_written: false, is_param: false, kept: false }
    }
}

pub struct Tape<'b, B: Backend> {
    pub(crate) backend: &'b mut B,
    pub(crate) mode: Mode,
    pub(crate) values: Vec<Value<B::Tensor>>,
    /// Recorded, not yet run.
    pending: Vec<Node>,
    /// Run, in order, for the backward pass (none in eval mode).
    nodes: Vec<Node>,
    rules: Vec<Rule>,
}

impl<'b, B: Backend> Tape<'b, B> {
    /// A tape that fuses with every rule that applies in `mode` and pays on `backend`.
    pub fn new(backend: &'b mut B, mode: Mode) -> Self {
        let moments = backend.convs_hand_moments();
        let rules: Vec<Rule> = RULES.iter().filter(|r| moments || !r.hands_moments).copied().collect();
        Self::with_rules(backend, mode, &rules)
    }

    /// A tape that fuses with these rules only (none: every op runs as the model wrote it).
    pub fn with_rules(backend: &'b mut B, mode: Mode, rules: &[Rule]) -> Self {
        let rules = rules.iter().filter(|r| mode == Mode::Train || !r.train_only).copied().collect();
        Self { backend, mode, values: Vec::new(), pending: Vec::new(), nodes: Vec::new(), rules }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn backend(&mut self) -> &mut B {
        self.backend
    }
    /// The nodes run so far, fused (none in eval mode).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// Number of nodes kept for the backward pass (0 in eval mode).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn shape(&self, v: Var) -> &[usize] {
        &self.values[v.0].shape
    }
    /// The value's tensor, running what it depends on first.
    pub fn data(&mut self, v: Var) -> &B::Tensor {
        self.run();
        self.values[v.0].data.as_ref().unwrap_or_else(|| panic!("tape: {v:?} was fused away; keep it to read it"))
    }
    /// Copies a value to the host (waiting for the backend to compute it).
    pub fn read(&mut self, v: Var) -> Vec<B::Elem> {
        let t = self.data(v).clone();
        self.backend.read(&t)
    }
    /// Marks a value as read later, so that no fused node makes it disappear.
    pub fn keep(&mut self, v: Var) -> Var {
        self.values[v.0].kept = true;
        v
    }

    /// The gradient of `v` after [`Tape::backward`], if any reached it.
    pub fn grad(&self, v: Var) -> Option<&B::Tensor> {
        let v = &self.values[v.0];
        v.grad.as_ref().filter(|_| v.grad_written)
    }

    /// A value that needs no gradient (images, targets, running statistics).
    pub fn input(&mut self, data: B::Tensor, shape: &[usize]) -> Var {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "tape: {} elements given shape {shape:?}", data.len());
        self.push(Some(data), shape, false)
    }

    /// A trainable value whose gradient is written (or added) into `grad`.
    pub fn param(&mut self, data: B::Tensor, grad: B::Tensor, shape: &[usize]) -> Var {
        let v = self.input(data, shape);
        let value = &mut self.values[v.0];
        value.requires_grad = self.mode == Mode::Train;
        (value.grad, value.is_param) = (Some(grad), true);
        v
    }

    fn push(&mut self, data: Option<B::Tensor>, shape: &[usize], requires_grad: bool) -> Var {
        let requires_grad = requires_grad && self.mode == Mode::Train;
        self.values.push(Value::new(shape, data, requires_grad));
        Var(self.values.len() - 1)
    }

    /// A value a node will write, needing a gradient if any of `inputs` does.
    fn output(&mut self, shape: &[usize], inputs: &[Var]) -> Var {
        let requires_grad = inputs.iter().any(|&v| self.values[v.0].requires_grad);
        self.push(None, shape, requires_grad)
    }

    /// Fuses the nodes recorded since the last run and runs them.
    fn run(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let rules = std::mem::take(&mut self.rules);
        let nodes = fusion::fuse(pending, &rules, &mut ValuesOf(&mut self.values));
        self.rules = rules;
        for node in nodes {
            self.forward(&node);
            if self.mode == Mode::Train {
                self.nodes.push(node);
            }
        }
    }

    // --- ops -------------------------------------------------------------------------------

    /// 2-D convolution keeping the size: x (N, Cin, H, W), w (Cout, Cin, K, K), b (Cout).
    pub fn conv2d(&mut self, x: Var, w: Var, b: Var, towers: usize) -> Var {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        assert!(xs.len() == 4 && ws.len() == 4 && xs[1] == ws[1] && ws[2] == ws[3], "conv2d: x {xs:?}, w {ws:?}");
        let p = Conv2dParams::same(xs[0], xs[1], xs[2], xs[3], ws[0], ws[2]).with_towers(towers);
        let y = self.output(&[xs[0], ws[0], p.out_h(), p.out_w()], &[x, w, b]);
        self.pending.push(Node::Conv2d(ConvNode { x, w, b, y, p }));
        y
    }

    pub fn relu(&mut self, x: Var) -> Var {
        let shape = self.shape(x).to_vec();
        let y = self.output(&shape, &[x]);
        self.pending.push(Node::Relu { x, y });
        y
    }

    /// BatchNorm2d of x (N, C, H, W), with separate statistics per tower.
    pub fn batchnorm(&mut self, x: Var, bn: BatchNormVars, towers: usize) -> Var {
        let s = self.shape(x).to_vec();
        assert_eq!(s.len(), 4, "batchnorm: x {s:?}");
        let p = BatchNormParams::new(s[0], s[1], s[2] * s[3], towers);
        let y = self.output(&s, &[x, bn.gamma, bn.beta]);
        let saved = self.output(&[p.saved_len()], &[]);
        let BatchNormVars { gamma, beta, mean, var } = bn;
        self.pending.push(Node::BatchNorm(BatchNormNode { x, gamma, beta, mean, var, y, saved, p }));
        y
    }

    /// 2×2 max pooling, stride 2.
    pub fn maxpool2d(&mut self, x: Var) -> Var {
        let s = self.shape(x).to_vec();
        let p = MaxPoolParams::new(s[0], s[1], s[2], s[3]);
        let y = self.output(&[s[0], s[1], p.out_h(), p.out_w()], &[x]);
        self.pending.push(Node::MaxPool { x, y, p });
        y
    }

    /// The same data seen with another shape (PyTorch's `view`); no copy.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        assert_eq!(self.shape(x).iter().product::<usize>(), shape.iter().product::<usize>(), "reshape: {shape:?}");
        let y = self.output(shape, &[x]);
        self.pending.push(Node::Reshape { x, y });
        y
    }

    /// y = x·Wᵀ + b: x (N, In), w (Out, In), b (Out).
    pub fn linear(&mut self, x: Var, w: Var, b: Var, towers: usize) -> Var {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        assert!(xs.len() == 2 && ws.len() == 2 && xs[1] == ws[1], "linear: x {xs:?}, w {ws:?}");
        let p = LinearParams::new(xs[0], xs[1], ws[0]).with_towers(towers);
        let y = self.output(&[xs[0], ws[0]], &[x, w, b]);
        self.pending.push(Node::Linear(LinearNode { x, w, b, y, p }));
        y
    }

    /// Distances (N) between the two towers stacked in x (2N, D): pair i is rows i and N + i.
    pub fn pair_distance(&mut self, x: Var) -> Var {
        let s = self.shape(x).to_vec();
        assert!(s.len() == 2 && s[0].is_multiple_of(2), "pair_distance: x {s:?} is not two stacked towers");
        let p = PairDistanceParams::new(s[0] / 2, s[1]);
        let d = self.output(&[s[0] / 2], &[x]);
        self.pending.push(Node::PairDistance { x, d, p });
        d
    }

    /// Mean contrastive loss (a 1-element value) of distances d (N) and targets t (N), 0 = same.
    pub fn contrastive_loss(&mut self, d: Var, t: Var, margin: f32) -> Var {
        let n = self.shape(d)[0];
        assert_eq!(self.shape(t), [n], "contrastive_loss: targets");
        let p = ContrastiveParams::new(n, margin);
        let loss = self.output(&[1], &[d]);
        self.pending.push(Node::Contrastive { d, t, loss, p });
        loss
    }

    // --- backward --------------------------------------------------------------------------

    /// Back-propagates from `loss` (a 1-element value): every value that needs a gradient and
    /// that `loss` depends on receives d loss / d value. Parameters that the loss does not
    /// reach get a zero gradient, so the optimizer never sees a stale one.
    pub fn backward(&mut self, loss: Var) {
        assert_eq!(self.mode, Mode::Train, "backward: the tape is in eval mode and kept nothing");
        assert_eq!(self.shape(loss), [1], "backward: the loss must be a single value");
        self.run();
        let value = &self.values[loss.0];
        assert!(value.requires_grad, "backward: the loss does not depend on any parameter");
        if value.is_param {
            let (seed, _) = self.grad_slot(loss, 0).expect("a param has a gradient slot");
            self.backend.fill(&seed, 1.0);
        } else {
            // The backend's shared 1: no node writes the loss's gradient, as none run after
            // the loss is reached from it.
            let seed = self.backend.one();
            let value = &mut self.values[loss.0];
            (value.grad, value.grad_written) = (Some(seed), true);
        }
        let nodes = std::mem::take(&mut self.nodes);
        for node in nodes.iter().rev() {
            self.backward_node(node);
        }
        self.nodes = nodes;
        for value in self.values.iter_mut().filter(|v| v.is_param && !v.grad_written) {
            let g = value.grad.as_ref().expect("params always have a gradient slot");
            self.backend.fill(g, 0.0);
            value.grad_written = true;
        }
    }

    /// Where the next gradient contribution to `v` goes and whether it adds (bit `bit`) or
    /// writes; None if `v` needs no gradient.
    pub(crate) fn grad_slot(&mut self, v: Var, bit: u32) -> Option<(B::Tensor, u32)> {
        if !self.values[v.0].requires_grad {
            return None;
        }
        if self.values[v.0].grad.is_none() {
            let len = self.values[v.0].shape.iter().product();
            self.values[v.0].grad = Some(self.backend.scratch(len));
        }
        let value = &mut self.values[v.0];
        let accumulate = if value.grad_written { bit } else { 0 };
        value.grad_written = true;
        Some((value.grad.clone().expect("set above"), accumulate))
    }

    /// The gradient reaching a node's output, or None if none did.
    pub(crate) fn out_grad(&self, v: Var) -> Option<B::Tensor> {
        self.grad(v).cloned()
    }

    /// A value's tensor, which must have been written.
    pub(crate) fn tensor(&self, v: Var) -> &B::Tensor {
        self.values[v.0].data.as_ref().unwrap_or_else(|| panic!("tape: {v:?} was never written"))
    }

    /// The accumulate bit and gradient slots of a weight and its bias, which one kernel writes
    /// together (so they must agree on writing or adding), or scratch of these lengths where
    /// they need no gradient.
    pub(crate) fn param_grads(&mut self, w: Var, b: Var) -> (u32, B::Tensor, B::Tensor) {
        let gw = self.grad_slot(w, ACCUMULATE_PARAMS);
        let gb = self.grad_slot(b, ACCUMULATE_PARAMS);
        match (gw, gb) {
            (Some((dw, acc)), Some((db, acc_b))) => {
                assert_eq!(acc, acc_b, "tape: a weight and its bias disagree on accumulating");
                (acc, dw, db)
            }
            (None, None) => {
                let len = |v: Var| self.values[v.0].shape.iter().product();
                let (w_len, b_len) = (len(w), len(b));
                (0, self.backend.scratch(w_len), self.backend.scratch(b_len))
            }
            _ => panic!("tape: a weight needs a gradient but its bias does not (or the reverse)"),
        }
    }

    /// Whether a value needs a gradient.
    pub(crate) fn requires_grad(&self, v: Var) -> bool {
        self.values[v.0].requires_grad
    }

    /// Gives x the gradient storage of y, as a reshape does where x has none yet, or adds
    /// y's gradient into x's.
    pub(crate) fn pass_grad(&mut self, x: Var, dy: B::Tensor) {
        let value = &mut self.values[x.0];
        if !value.requires_grad {
            return;
        }
        match (&value.grad, value.grad_written) {
            (Some(dx), true) => {
                let dx = dx.clone();
                self.backend.accumulate(&dy, &dx);
            }
            (Some(dx), false) => {
                let dx = dx.clone();
                value.grad_written = true;
                self.backend.copy(&dy, &dx);
            }
            (None, _) => (value.grad, value.grad_written) = (Some(dy), true),
        }
    }
}

/// The tape's values as the fusion pass sees them.
struct ValuesOf<'a, T>(&'a mut Vec<Value<T>>);

impl<T> fusion::Values for ValuesOf<'_, T> {
    fn fresh(&mut self, shape: &[usize]) -> Var {
        self.0.push(Value::new(shape, None, false));
        Var(self.0.len() - 1)
    }
    fn kept(&self, v: Var) -> bool {
        self.0[v.0].kept
    }
}
