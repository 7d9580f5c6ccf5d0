//! Contrastive loss over pair distances: the CPU reference, forward and backward.

use crate::float::{Float, decimal, store};
use crate::params::{ACCUMULATE_INPUT, ContrastiveParams};

/// loss = mean_i (1 − t_i)·d_i² + t_i·max(margin − d_i, 0)², with t = 0 for a same-class pair.
pub fn contrastive_forward<F: Float>(
    p: &ContrastiveParams,
    d: &[F],        // (N)
    t: &[F],        // (N)
    loss: &mut [F], // (1)
) {
    let m = decimal(p.margin);
    let s: f64 = d
        .iter()
        .zip(t)
        .map(|(&d, &t)| {
            let (d, t) = (d.to_f64(), t.to_f64());
            (1.0 - t) * d * d + t * (m - d).max(0.0).powi(2)
        })
        .sum();
    loss[0] = F::from_f64(s / p.n as f64);
}

/// dd_i = dloss · (2(1 − t_i)·d_i − 2t_i·max(margin − d_i, 0)) / N
pub fn contrastive_backward<F: Float>(
    p: &ContrastiveParams,
    d: &[F],      // (N)
    t: &[F],      // (N)
    dloss: &[F],  // (1)
    dd: &mut [F], // (N)
) {
    let (m, g) = (decimal(p.margin), dloss[0].to_f64() / p.n as f64);
    for ((dd, &d), &t) in dd.iter_mut().zip(d).zip(t) {
        let (d, t) = (d.to_f64(), t.to_f64());
        let v = g * (2.0 * (1.0 - t) * d - 2.0 * t * (m - d).max(0.0));
        store(dd, F::from_f64(v), p.accumulate & ACCUMULATE_INPUT != 0);
    }
}
