//! Adam over flat parameter buffers: the CPU reference of the optimizer step.

use crate::float::Float;
use crate::params::AdamConfig;

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
