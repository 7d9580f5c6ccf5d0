//! Adam over the model's flat parameter buffer: one launch updates every parameter.

use crate::backend::Backend;
use crate::model::Weights;
use crate::ops::AdamConfig;

/// `torch.optim.Adam` state: the moments, shaped like the flat parameter buffer, and the step.
pub struct Adam<B: Backend> {
    pub cfg: AdamConfig,
    pub m: B::Tensor,
    pub v: B::Tensor,
    /// Steps taken so far.
    pub t: u64,
}

impl<B: Backend> Adam<B> {
    pub fn new(backend: &mut B, cfg: AdamConfig, len: usize) -> Self {
        Self { cfg, m: backend.zeros(len), v: backend.zeros(len), t: 0 }
    }

    /// Applies the gradients in `weights.grads`. The padding between tensors in the flat
    /// buffer has zero gradient and stays zero.
    pub fn step(&mut self, backend: &mut B, weights: &Weights<B>) {
        self.t += 1;
        backend.adam_step(&self.cfg, self.t, &weights.params, &weights.grads, &self.m, &self.v);
    }
}
