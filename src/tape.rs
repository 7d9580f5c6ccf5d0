//! The autograd tape: the forward pass records each op, `backward` walks them in reverse.
//!
//! Values live on a [`Backend`]; the tape only keeps handles, shapes and one [`Op`] per
//! recorded call. Because ops are recorded in the order they run, the tape is already in
//! topological order, and the backward pass is a plain reverse loop. Gradients accumulate:
//! the first contribution to a value's gradient is written, later ones are added
//! (the backends' `accumulate` bits), so weights shared by both towers get the sum.
//!
//! Parameters are values whose gradient lives at a fixed place (a view of the model's flat
//! gradient buffer); every other gradient is scratch. In [`Mode::Eval`] nothing is recorded
//! and BatchNorm uses its running statistics.
//!
//! Ops that reduce over the batch take `towers`: the batch is that many stacked towers, kept
//! apart in every reduction as separate calls would keep them (see `params.rs`).

use crate::backend::{Backend, DeviceTensor};
use crate::params::*;

/// A handle to a value on the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Record ops for `backward`; BatchNorm normalises with batch statistics and updates the
    /// running ones.
    Train,
    /// Record nothing; BatchNorm normalises with the running statistics.
    Eval,
}

/// BatchNorm's running statistics, updated in place by a train-mode forward.
pub struct RunningStats<'a, T> {
    pub mean: &'a T,
    pub var: &'a T,
}

struct Value<T> {
    data: T,
    shape: Vec<usize>,
    requires_grad: bool,
    /// Where the gradient goes, once there is one.
    grad: Option<T>,
    /// Whether `grad` holds a contribution yet; the next one is added only if it does.
    grad_written: bool,
    is_param: bool,
}

/// The conv whose output x a fused BatchNorm normalises (`Tape::conv2d_relu_batchnorm_conv2d`),
/// whose backward the op runs too.
#[derive(Clone, Copy, Debug)]
struct Producer {
    x: Var,
    w: Var,
    b: Var,
    p: Conv2dParams,
}

/// One recorded op: the values it read and wrote, and its shape parameters. BatchNormMaxPool
/// is MaxPool(BatchNorm(x)) and BatchNormConv2d Conv2d(BatchNorm(x)) with BatchNorm's output
/// never kept.
#[derive(Debug)]
enum Op {
    Conv2d {
        x: Var,
        w: Var,
        b: Var,
        y: Var,
        p: Conv2dParams,
    },
    Relu {
        x: Var,
        y: Var,
    },
    BatchNorm {
        x: Var,
        gamma: Var,
        beta: Var,
        y: Var,
        saved: Var,
        p: BatchNormParams,
    },
    MaxPool {
        x: Var,
        y: Var,
        p: MaxPoolParams,
    },
    BatchNormMaxPool {
        x: Var,
        gamma: Var,
        beta: Var,
        y: Var,
        saved: Var,
        pb: BatchNormParams,
        pp: MaxPoolParams,
    },
    BatchNormConv2d {
        producer: Option<Producer>,
        x: Var,
        gamma: Var,
        beta: Var,
        saved: Var,
        w: Var,
        b: Var,
        y: Var,
        pb: BatchNormParams,
        pc: Conv2dParams,
    },
    Reshape {
        x: Var,
        y: Var,
    },
    Linear {
        x: Var,
        w: Var,
        b: Var,
        y: Var,
        p: LinearParams,
    },
    PairDistance {
        x: Var,
        d: Var,
        p: PairDistanceParams,
    },
    PairContrastive {
        x: Var,
        t: Var,
        d: Var,
        loss: Var,
        pd: PairDistanceParams,
        pc: ContrastiveParams,
    },
    Contrastive {
        d: Var,
        t: Var,
        loss: Var,
        p: ContrastiveParams,
    },
}

/// The values on a tape, kept apart from the backend so that an op can read them while the
/// backend runs it.
struct Values<T>(Vec<Value<T>>);

impl<T> Values<T> {
    fn data(&self, v: Var) -> &T {
        &self.0[v.0].data
    }
}

impl<T> std::ops::Index<Var> for Values<T> {
    type Output = Value<T>;
    fn index(&self, v: Var) -> &Value<T> {
        &self.0[v.0]
    }
}

impl<T> std::ops::IndexMut<Var> for Values<T> {
    fn index_mut(&mut self, v: Var) -> &mut Value<T> {
        &mut self.0[v.0]
    }
}

pub struct Tape<'b, B: Backend> {
    backend: &'b mut B,
    mode: Mode,
    values: Values<B::Tensor>,
    ops: Vec<Op>,
}

impl<'b, B: Backend> Tape<'b, B> {
    pub fn new(backend: &'b mut B, mode: Mode) -> Self {
        Self { backend, mode, values: Values(Vec::new()), ops: Vec::new() }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn backend(&mut self) -> &mut B {
        self.backend
    }
    /// Number of recorded ops (0 in eval mode).
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn data(&self, v: Var) -> &B::Tensor {
        self.values.data(v)
    }
    pub fn shape(&self, v: Var) -> &[usize] {
        &self.values[v].shape
    }
    /// Copies a value to the host (waiting for the backend to compute it).
    pub fn read(&mut self, v: Var) -> Vec<B::Elem> {
        self.backend.read(self.values.data(v))
    }

    /// The gradient of `v` after [`Tape::backward`], if any reached it.
    pub fn grad(&self, v: Var) -> Option<&B::Tensor> {
        let v = &self.values[v];
        v.grad.as_ref().filter(|_| v.grad_written)
    }

    /// A value that needs no gradient (images, targets).
    pub fn input(&mut self, data: B::Tensor, shape: &[usize]) -> Var {
        self.push(data, shape, false)
    }

    /// A trainable value whose gradient is written (or added) into `grad`.
    pub fn param(&mut self, data: B::Tensor, grad: B::Tensor, shape: &[usize]) -> Var {
        let v = self.push(data, shape, true);
        let value = &mut self.values[v];
        value.grad = Some(grad);
        value.is_param = true;
        v
    }

    fn push(&mut self, data: B::Tensor, shape: &[usize], requires_grad: bool) -> Var {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "tape: tensor of {} elements given shape {shape:?}",
            data.len()
        );
        let requires_grad = requires_grad && self.mode == Mode::Train;
        self.values.0.push(Value {
            data,
            shape: shape.to_vec(),
            requires_grad,
            grad: None,
            grad_written: false,
            is_param: false,
        });
        Var(self.values.0.len() - 1)
    }

    /// A fresh scratch output of `shape` that needs a gradient if any of `inputs` does.
    fn output(&mut self, shape: &[usize], inputs: &[Var]) -> Var {
        let data = self.backend.scratch(shape.iter().product());
        let requires_grad = inputs.iter().any(|&v| self.values[v].requires_grad);
        self.push(data, shape, requires_grad)
    }

    fn record(&mut self, op: Op) {
        if self.mode == Mode::Train {
            self.ops.push(op);
        }
    }

    /// The statistics a BatchNorm of x normalises with, for the fused ops that read through
    /// it: the batch's per tower in training (the running ones take their update), the running
    /// ones in eval mode.
    fn batchnorm_statistics(&mut self, p: &BatchNormParams, x: Var, running: RunningStats<B::Tensor>) -> Var {
        let saved = self.output(&[p.saved_len()], &[]);
        let (xd, sd) = (self.values.data(x), self.values.data(saved));
        match self.mode {
            Mode::Train => self.backend.batchnorm_statistics(p, xd, sd, running.mean, running.var),
            Mode::Eval => self.backend.batchnorm_running_statistics(p, running.mean, running.var, sd),
        }
        saved
    }

    // --- ops -------------------------------------------------------------------------------

    /// 2-D convolution keeping the size: x (N, Cin, H, W), w (Cout, Cin, K, K), b (Cout).
    pub fn conv2d(&mut self, x: Var, w: Var, b: Var, towers: usize) -> Var {
        let (y, p) = self.conv2d_value(x, w, b, towers);
        self.record(Op::Conv2d { x, w, b, y, p });
        y
    }

    /// The conv's output, computed but not recorded.
    fn conv2d_value(&mut self, x: Var, w: Var, b: Var, towers: usize) -> (Var, Conv2dParams) {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        assert!(xs.len() == 4 && ws.len() == 4 && xs[1] == ws[1] && ws[2] == ws[3], "conv2d: x {xs:?}, w {ws:?}");
        let p = Conv2dParams::same(xs[0], xs[1], xs[2], xs[3], ws[0], ws[2]).with_towers(towers);
        let y = self.output(&[xs[0], ws[0], p.out_h(), p.out_w()], &[x, w, b]);
        self.backend.conv2d_forward(
            &p,
            self.values.data(x),
            self.values.data(w),
            self.values.data(b),
            self.values.data(y),
        );
        (y, p)
    }

    pub fn relu(&mut self, x: Var) -> Var {
        let shape = self.shape(x).to_vec();
        let y = self.output(&shape, &[x]);
        self.backend.relu_forward(self.values.data(x), self.values.data(y));
        self.record(Op::Relu { x, y });
        y
    }

    /// BatchNorm2d of x (N, C, H, W), with separate statistics per tower.
    pub fn batchnorm(&mut self, x: Var, gamma: Var, beta: Var, running: RunningStats<B::Tensor>, towers: usize) -> Var {
        self.batchnorm_op(x, gamma, beta, running, towers, false)
    }

    /// BatchNorm2d(ReLU(x)) as one op: the ReLU is applied as BatchNorm reads x, and its mask
    /// as BatchNorm writes x's gradient, so ReLU(x) never exists as a tensor.
    pub fn relu_batchnorm(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        running: RunningStats<B::Tensor>,
        towers: usize,
    ) -> Var {
        self.batchnorm_op(x, gamma, beta, running, towers, true)
    }

    fn batchnorm_op(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        running: RunningStats<B::Tensor>,
        towers: usize,
        relu_input: bool,
    ) -> Var {
        let s = self.shape(x).to_vec();
        let p = BatchNormParams::new(s[0], s[1], s[2] * s[3], towers).with_relu_input(relu_input);
        let y = self.output(&s, &[x, gamma, beta]);
        match self.mode {
            Mode::Train => {
                let saved = self.output(&[p.saved_len()], &[]);
                self.backend.batchnorm_forward_train(
                    &p,
                    self.values.data(x),
                    self.values.data(gamma),
                    self.values.data(beta),
                    self.values.data(y),
                    self.values.data(saved),
                    running.mean,
                    running.var,
                );
                self.record(Op::BatchNorm { x, gamma, beta, y, saved, p });
            }
            Mode::Eval => self.backend.batchnorm_forward_eval(
                &p,
                self.values.data(x),
                self.values.data(gamma),
                self.values.data(beta),
                running.mean,
                running.var,
                self.values.data(y),
            ),
        }
        y
    }

    /// MaxPool2d(BatchNorm2d(ReLU(x))) as one op: the pool reads x through the ReLU and the
    /// normalisation, so neither ReLU(x) nor BatchNorm's output exists as a tensor. Returns the
    /// pooled output and BatchNorm's statistics (mean (T, C), then 1/std (T, C): the batch's
    /// in training, the running ones in eval mode), with which its output can be recomputed
    /// (tests compare it to PyTorch's).
    pub fn relu_batchnorm_maxpool(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        running: RunningStats<B::Tensor>,
        towers: usize,
    ) -> (Var, Var) {
        let s = self.shape(x).to_vec();
        let pb = BatchNormParams::new(s[0], s[1], s[2] * s[3], towers).with_relu_input(true);
        let pp = MaxPoolParams::new(s[0], s[1], s[2], s[3]);
        let y = self.output(&[s[0], s[1], pp.out_h(), pp.out_w()], &[x, gamma, beta]);
        let saved = self.batchnorm_statistics(&pb, x, running);
        self.backend.batchnorm_maxpool_forward(
            &pb,
            &pp,
            self.values.data(x),
            self.values.data(gamma),
            self.values.data(beta),
            self.values.data(saved),
            self.values.data(y),
        );
        self.record(Op::BatchNormMaxPool { x, gamma, beta, y, saved, pb, pp });
        (y, saved)
    }

    /// Conv2d(BatchNorm2d(ReLU(x))) as one op: the conv reads x through the ReLU and the
    /// normalisation, so neither ReLU(x) nor BatchNorm's output exists as a tensor. Returns the
    /// conv's output and BatchNorm's statistics, as `relu_batchnorm_maxpool`.
    #[allow(clippy::too_many_arguments)]
    pub fn relu_batchnorm_conv2d(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        running: RunningStats<B::Tensor>,
        w: Var,
        b: Var,
        towers: usize,
    ) -> (Var, Var) {
        self.batchnorm_conv2d_op(None, x, gamma, beta, running, w, b, towers)
    }

    /// conv_b(BatchNorm2d(ReLU(conv_a(x)))) as one op, conv_a's weights wa, ba
    /// and conv_b's w, b: as `relu_batchnorm_conv2d` of conv_a's output z, whose backward also
    /// runs conv_a's, so that where x needs no gradient z's gradient is never written either
    /// (conv_a's weight gradient reads it through BatchNorm's backward). Returns z, conv_b's
    /// output and BatchNorm's saved statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_relu_batchnorm_conv2d(
        &mut self,
        x: Var,
        wa: Var,
        ba: Var,
        gamma: Var,
        beta: Var,
        running: RunningStats<B::Tensor>,
        w: Var,
        b: Var,
        towers: usize,
    ) -> (Var, Var, Var) {
        let (z, p) = self.conv2d_value(x, wa, ba, towers);
        let producer = Producer { x, w: wa, b: ba, p };
        let (y, saved) = self.batchnorm_conv2d_op(Some(producer), z, gamma, beta, running, w, b, towers);
        (z, y, saved)
    }

    #[allow(clippy::too_many_arguments)]
    fn batchnorm_conv2d_op(
        &mut self,
        producer: Option<Producer>,
        x: Var,
        gamma: Var,
        beta: Var,
        running: RunningStats<B::Tensor>,
        w: Var,
        b: Var,
        towers: usize,
    ) -> (Var, Var) {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        assert!(xs.len() == 4 && ws.len() == 4 && xs[1] == ws[1] && ws[2] == ws[3], "conv2d: x {xs:?}, w {ws:?}");
        let pb = BatchNormParams::new(xs[0], xs[1], xs[2] * xs[3], towers).with_relu_input(true);
        let pc = Conv2dParams::same(xs[0], xs[1], xs[2], xs[3], ws[0], ws[2]).with_towers(towers);
        let y = self.output(&[xs[0], ws[0], pc.out_h(), pc.out_w()], &[x, gamma, beta, w, b]);
        let saved = self.batchnorm_statistics(&pb, x, running);
        let data = |v| self.values.data(v);
        self.backend.batchnorm_conv2d_forward(
            &pb,
            &pc,
            data(x),
            data(gamma),
            data(beta),
            data(saved),
            data(w),
            data(b),
            data(y),
        );
        self.record(Op::BatchNormConv2d { producer, x, gamma, beta, saved, w, b, y, pb, pc });
        (y, saved)
    }

    /// 2×2 max pooling, stride 2.
    pub fn maxpool2d(&mut self, x: Var) -> Var {
        let s = self.shape(x).to_vec();
        let p = MaxPoolParams::new(s[0], s[1], s[2], s[3]);
        let y = self.output(&[s[0], s[1], p.out_h(), p.out_w()], &[x]);
        self.backend.maxpool_forward(&p, self.values.data(x), self.values.data(y));
        self.record(Op::MaxPool { x, y, p });
        y
    }

    /// The same data seen with another shape (PyTorch's `view`); no copy.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let data = self.data(x).clone();
        let requires_grad = self.values[x].requires_grad;
        let y = self.push(data, shape, requires_grad);
        self.record(Op::Reshape { x, y });
        y
    }

    /// y = x·Wᵀ + b: x (N, In), w (Out, In), b (Out).
    pub fn linear(&mut self, x: Var, w: Var, b: Var, towers: usize) -> Var {
        self.linear_op(x, w, b, towers, false)
    }

    /// Linear(ReLU(x)) as one op: the ReLU is applied as the layer reads x, and its mask as
    /// it writes x's gradient, so ReLU(x) never exists as a tensor.
    pub fn relu_linear(&mut self, x: Var, w: Var, b: Var, towers: usize) -> Var {
        self.linear_op(x, w, b, towers, true)
    }

    fn linear_op(&mut self, x: Var, w: Var, b: Var, towers: usize, relu: bool) -> Var {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        assert!(xs.len() == 2 && ws.len() == 2 && xs[1] == ws[1], "linear: x {xs:?}, w {ws:?}");
        let p = LinearParams::new(xs[0], xs[1], ws[0]).with_towers(towers).with_relu_input(relu);
        let y = self.output(&[xs[0], ws[0]], &[x, w, b]);
        self.backend.linear_forward(
            &p,
            self.values.data(x),
            self.values.data(w),
            self.values.data(b),
            self.values.data(y),
        );
        self.record(Op::Linear { x, w, b, y, p });
        y
    }

    /// Distances (N) between the two towers stacked in x (2N, D): pair i is rows i and N + i.
    pub fn pair_distance(&mut self, x: Var) -> Var {
        let s = self.shape(x).to_vec();
        assert!(s.len() == 2 && s[0].is_multiple_of(2), "pair_distance: x {s:?} is not two stacked towers");
        let p = PairDistanceParams::new(s[0] / 2, s[1]);
        let d = self.output(&[s[0] / 2], &[x]);
        self.backend.pair_distance_forward(&p, self.values.data(x), self.values.data(d));
        self.record(Op::PairDistance { x, d, p });
        d
    }

    /// Mean contrastive loss (a 1-element value) of distances d (N) and targets t (N), 0 = same.
    pub fn contrastive_loss(&mut self, d: Var, t: Var, margin: f32) -> Var {
        let n = self.shape(d)[0];
        assert_eq!(self.shape(t), [n], "contrastive_loss: targets");
        let p = ContrastiveParams::new(n, margin);
        let loss = self.output(&[1], &[d]);
        self.backend.contrastive_forward(&p, self.values.data(d), self.values.data(t), self.values.data(loss));
        self.record(Op::Contrastive { d, t, loss, p });
        loss
    }

    /// The mean contrastive loss of the pairs stacked in x (2N, D) against targets t (N), as
    /// `pair_distance` then `contrastive_loss` in one op: returns (loss, distances). The
    /// distances are a result only: no gradient flows back through them.
    pub fn pair_contrastive_loss(&mut self, x: Var, t: Var, margin: f32) -> (Var, Var) {
        let s = self.shape(x).to_vec();
        assert!(s.len() == 2 && s[0].is_multiple_of(2), "pair_contrastive_loss: x {s:?} is not two stacked towers");
        let n = s[0] / 2;
        assert_eq!(self.shape(t), [n], "pair_contrastive_loss: targets");
        let (pd, pc) = (PairDistanceParams::new(n, s[1]), ContrastiveParams::new(n, margin));
        let d = self.output(&[n], &[]);
        let loss = self.output(&[1], &[x]);
        let data = |v| self.values.data(v);
        self.backend.pair_contrastive_forward(&pd, &pc, data(x), data(t), data(d), data(loss));
        self.record(Op::PairContrastive { x, t, d, loss, pd, pc });
        (loss, d)
    }

    // --- backward --------------------------------------------------------------------------

    /// Where the next gradient contribution to `v` goes and whether it adds (bit `bit`) or
    /// writes; None if `v` needs no gradient.
    fn grad_slot(&mut self, v: Var, bit: u32) -> Option<(B::Tensor, u32)> {
        if !self.values[v].requires_grad {
            return None;
        }
        if self.values[v].grad.is_none() {
            let len = self.values[v].shape.iter().product();
            self.values[v].grad = Some(self.backend.scratch(len));
        }
        let value = &mut self.values[v];
        let accumulate = if value.grad_written { bit } else { 0 };
        value.grad_written = true;
        Some((value.grad.clone().expect("set above"), accumulate))
    }

    /// The gradient reaching the output of an op, or None if none did.
    fn out_grad(&self, v: Var) -> Option<B::Tensor> {
        self.grad(v).cloned()
    }

    /// Back-propagates from `loss` (a 1-element value): every value that needs a gradient and
    /// that `loss` depends on receives d loss / d value. Parameters that the loss does not
    /// reach get a zero gradient, so the optimizer never sees a stale one.
    pub fn backward(&mut self, loss: Var) {
        assert_eq!(self.mode, Mode::Train, "backward: the tape is in eval mode and recorded nothing");
        assert_eq!(self.shape(loss), [1], "backward: the loss must be a single value");
        let value = &self.values[loss];
        assert!(value.requires_grad, "backward: the loss does not depend on any parameter");
        if value.is_param {
            let (seed, _) = self.grad_slot(loss, 0).expect("a param has a gradient slot");
            self.backend.fill(&seed, 1.0);
        } else {
            // The backend's shared 1: no op writes the loss's gradient, as none recorded after
            // the loss is reached from it.
            let seed = self.backend.one();
            let value = &mut self.values[loss];
            (value.grad, value.grad_written) = (Some(seed), true);
        }
        let ops = std::mem::take(&mut self.ops);
        for op in ops.iter().rev() {
            self.backward_op(op);
        }
        self.ops = ops;
        for value in self.values.0.iter_mut().filter(|v| v.is_param && !v.grad_written) {
            let g = value.grad.as_ref().expect("params always have a gradient slot");
            self.backend.fill(g, 0.0);
            value.grad_written = true;
        }
    }

    fn backward_op(&mut self, op: &Op) {
        match *op {
            Op::Conv2d { x, w, b, y, p } => {
                let Some(dy) = self.out_grad(y) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    let p = Conv2dParams { accumulate: acc, ..p };
                    self.backend.conv2d_backward_input(&p, &dy, self.values.data(w), &dx);
                }
                if let Some(((dw, acc), (db, _))) = self.param_pair(w, b) {
                    let p = Conv2dParams { accumulate: acc, ..p };
                    self.backend.conv2d_backward_weight(&p, self.values.data(x), &dy, &dw, &db);
                }
            }
            Op::Relu { x, y } => {
                let Some(dy) = self.out_grad(y) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    self.backend.relu_backward(self.values.data(y), &dy, &dx, acc);
                }
            }
            Op::BatchNorm { x, gamma, beta, y, saved, p } => {
                let Some(dy) = self.out_grad(y) else { return };
                self.batchnorm_backward(x, gamma, beta, saved, p, &dy);
            }
            Op::MaxPool { x, y, p } => {
                let Some(dy) = self.out_grad(y) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    let p = MaxPoolParams { accumulate: acc, ..p };
                    self.backend.maxpool_backward(&p, self.values.data(x), &dy, &dx);
                }
            }
            Op::BatchNormMaxPool { x, gamma, beta, y, saved, pb, pp } => {
                let Some(dy) = self.out_grad(y) else { return };
                let (pb, dx, dg, db) = self.batchnorm_grads(x, gamma, beta, pb);
                let data = |v| self.values.data(v);
                let (x, gamma, beta, saved) = (data(x), data(gamma), data(beta), data(saved));
                self.backend.batchnorm_maxpool_backward(&pb, &pp, x, gamma, beta, saved, &dy, &dx, &dg, &db);
            }
            Op::BatchNormConv2d { producer: None, x, gamma, beta, saved, w, b, y, pb, pc } => {
                let Some(dy) = self.out_grad(y) else { return };
                let (pb, dx, dg, dbeta) = self.batchnorm_grads(x, gamma, beta, pb);
                let (pc, dw, db) = self.conv_param_grads(w, b, pc);
                let data = |v| self.values.data(v);
                let (x, gamma, beta, saved, w) = (data(x), data(gamma), data(beta), data(saved), data(w));
                self.backend
                    .batchnorm_conv2d_backward(&pb, &pc, x, gamma, beta, saved, w, &dy, &dx, &dg, &dbeta, &dw, &db);
            }
            Op::BatchNormConv2d { producer: Some(a), x: z, gamma, beta, saved, w, b, y, pb, pc } => {
                let Some(dy) = self.out_grad(y) else { return };
                let dxa = self.grad_slot(a.x, ACCUMULATE_INPUT);
                let (pa, dwa, dba) = self.conv_param_grads(a.w, a.b, a.p);
                let pa = Conv2dParams { accumulate: pa.accumulate | dxa.as_ref().map_or(0, |d| d.1), ..pa };
                let (pc, dw, db) = self.conv_param_grads(w, b, pc);
                let (acc, dg, dbeta) = self.param_grads(gamma, beta, (pb.c as usize, pb.c as usize));
                let pb = BatchNormParams { accumulate: acc, ..pb };
                let data = |v| self.values.data(v);
                let (xa, wa, z, gamma, beta, saved, w) =
                    (data(a.x), data(a.w), data(z), data(gamma), data(beta), data(saved), data(w));
                let dxa = dxa.as_ref().map(|d| &d.0);
                self.backend.conv2d_batchnorm_conv2d_backward(
                    &pa, xa, wa, dxa, &dwa, &dba, &pb, z, gamma, beta, saved, &pc, w, &dy, &dg, &dbeta, &dw, &db,
                );
            }
            Op::Reshape { x, y } => {
                let Some(dy) = self.out_grad(y) else { return };
                let value = &mut self.values[x];
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
                    // Same elements, other shape: x can share y's gradient storage.
                    (None, _) => {
                        value.grad = Some(dy);
                        value.grad_written = true;
                    }
                }
            }
            Op::Linear { x, w, b, y, p } => {
                let Some(dy) = self.out_grad(y) else { return };
                let dx = self.grad_slot(x, ACCUMULATE_INPUT);
                let (acc, dw, db) = self.param_grads(w, b, (p.d_out as usize * p.d_in as usize, p.d_out as usize));
                let p = LinearParams { accumulate: acc | dx.as_ref().map_or(0, |d| d.1), ..p };
                let (x, w) = (self.values.data(x), self.values.data(w));
                self.backend.linear_backward(&p, x, w, &dy, dx.as_ref().map(|d| &d.0), &dw, &db);
            }
            Op::PairDistance { x, d, p } => {
                let Some(dd) = self.out_grad(d) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    let p = PairDistanceParams { accumulate: acc, ..p };
                    self.backend.pair_distance_backward(&p, self.values.data(x), self.values.data(d), &dd, &dx);
                }
            }
            Op::PairContrastive { x, t, d, loss, pd, pc } => {
                let Some(dloss) = self.out_grad(loss) else { return };
                if let Some((dx, acc)) = self.grad_slot(x, ACCUMULATE_INPUT) {
                    let pd = PairDistanceParams { accumulate: acc, ..pd };
                    let data = |v| self.values.data(v);
                    self.backend.pair_contrastive_backward(&pd, &pc, data(x), data(d), data(t), &dloss, &dx);
                }
            }
            Op::Contrastive { d, t, loss, p } => {
                let Some(dloss) = self.out_grad(loss) else {
                    return;
                };
                if let Some((dd, acc)) = self.grad_slot(d, ACCUMULATE_INPUT) {
                    let p = ContrastiveParams { accumulate: acc, ..p };
                    self.backend.contrastive_backward(&p, self.values.data(d), self.values.data(t), &dloss, &dd);
                }
            }
        }
    }

    /// BatchNorm's backward from dy, the gradient of its output: dx, dγ and dβ come from one
    /// kernel family together; a side that needs no gradient writes into scratch nobody reads.
    fn batchnorm_backward(&mut self, x: Var, gamma: Var, beta: Var, saved: Var, p: BatchNormParams, dy: &B::Tensor) {
        let (p, dx, dg, db) = self.batchnorm_grads(x, gamma, beta, p);
        let data = |v| self.values.data(v);
        self.backend.batchnorm_backward(&p, data(x), dy, data(gamma), data(saved), &dx, &dg, &db);
    }

    /// Where a BatchNorm's backward writes dx, dgamma and dbeta (scratch for those that need
    /// no gradient), and its params with the accumulate bits they take.
    fn batchnorm_grads(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        p: BatchNormParams,
    ) -> (BatchNormParams, B::Tensor, B::Tensor, B::Tensor) {
        let (dx, acc_x) = self.grad_slot(x, ACCUMULATE_INPUT).unwrap_or_else(|| (self.backend.scratch(p.len()), 0));
        let (acc_p, dg, db) = self.param_grads(gamma, beta, (p.c as usize, p.c as usize));
        (BatchNormParams { accumulate: acc_x | acc_p, ..p }, dx, dg, db)
    }

    /// A conv's weight and bias gradient slots, and its params with the accumulate bit they
    /// take.
    fn conv_param_grads(&mut self, w: Var, b: Var, p: Conv2dParams) -> (Conv2dParams, B::Tensor, B::Tensor) {
        let (acc, dw, db) = self.param_grads(w, b, (p.w_len(), p.c_out as usize));
        (Conv2dParams { accumulate: acc, ..p }, dw, db)
    }

    /// The accumulate bit and gradient slots of a weight and its bias, as `param_pair`, or
    /// scratch of these lengths where they need no gradient.
    fn param_grads(&mut self, w: Var, b: Var, (w_len, b_len): (usize, usize)) -> (u32, B::Tensor, B::Tensor) {
        match self.param_pair(w, b) {
            Some(((dw, acc), (db, _))) => (acc, dw, db),
            None => (0, self.backend.scratch(w_len), self.backend.scratch(b_len)),
        }
    }

    /// Gradient slots of a weight and its bias, which one kernel writes together, so they
    /// must agree on writing or adding.
    #[allow(clippy::type_complexity)]
    fn param_pair(&mut self, w: Var, b: Var) -> Option<((B::Tensor, u32), (B::Tensor, u32))> {
        let gw = self.grad_slot(w, ACCUMULATE_PARAMS);
        let gb = self.grad_slot(b, ACCUMULATE_PARAMS);
        match (gw, gb) {
            (Some(gw), Some(gb)) => {
                assert_eq!(gw.1, gb.1, "tape: a weight and its bias disagree on accumulating");
                Some((gw, gb))
            }
            (None, None) => None,
            _ => panic!("tape: a weight needs a gradient but its bias does not (or the reverse)"),
        }
    }
}
