//! Adam over flat parameter buffers: params and CPU reference of the optimizer step.

use bytemuck::{Pod, Zeroable};

use crate::float::Float;

/// Adam's hyper-parameters, exactly as `torch.optim.Adam` (no weight decay, bias-corrected).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

impl AdamConfig {
    /// The host-side scalars of step `t` (1-based), computed in f64 as PyTorch does in Python.
    pub fn step_scalars(&self, t: u64) -> (f64, f64) {
        let bias_correction1 = 1.0 - self.beta1.powi(t as i32);
        let bias_correction2 = 1.0 - self.beta2.powi(t as i32);
        (self.lr / bias_correction1, bias_correction2.sqrt())
    }
}

/// Adam over a flat parameter buffer, as the shader sees it: what stays the same from step to
/// step (the step's own scalars, [`AdamConfig::step_scalars`], go in a storage buffer, so that
/// this uniform and the launch's bind group are made once). `1 − β` is computed in f64 and
/// then rounded, as PyTorch does with its Python-float hyper-parameters; in f32 `1 − 0.999`
/// would be off by 1e-5 relative.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct AdamParams {
    pub len: u32,
    pub beta2: f32,
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    pub _pad: [u32; 3],
}

impl AdamParams {
    pub fn new(len: usize, cfg: &AdamConfig) -> Self {
        Self {
            len: len as u32,
            beta2: cfg.beta2 as f32,
            one_minus_beta1: (1.0 - cfg.beta1) as f32,
            one_minus_beta2: (1.0 - cfg.beta2) as f32,
            eps: cfg.eps as f32,
            _pad: [0; 3],
        }
    }
}

/// One step `t` (1-based) of `torch.optim.Adam`, in PyTorch's order of operations:
/// m ← m + (g − m)(1 − β1);  v ← β2·v + (1 − β2)·g²;
/// p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps).
pub fn adam_step<F: Float>(cfg: &AdamConfig, t: u64, params: &mut [F], grads: &[F], m: &mut [F], v: &mut [F]) {
    let (step_size, bc2_sqrt) = cfg.step_scalars(t);
    let (step_size, bc2_sqrt) = (F::from_f64(step_size), F::from_f64(bc2_sqrt));
    // 1 − β in f64, then rounded: PyTorch's hyper-parameters are Python floats.
    let (one_minus_b1, one_minus_b2) = (F::from_f64(1.0 - cfg.beta1), F::from_f64(1.0 - cfg.beta2));
    let (b2, eps) = (F::from_f64(cfg.beta2), F::from_f64(cfg.eps));
    for i in 0..params.len() {
        let g = grads[i];
        m[i] = m[i] + (g - m[i]) * one_minus_b1;
        v[i] = v[i] * b2 + one_minus_b2 * g * g;
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        params[i] = params[i] - step_size * (m[i] / denom);
    }
}
