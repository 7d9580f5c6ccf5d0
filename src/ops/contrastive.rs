//! Contrastive loss over pair distances: its params and CPU reference, forward and backward.

use bytemuck::{Pod, Zeroable};

use super::{ACCUMULATE_INPUT, PairDistanceParams};
use crate::float::{Float, decimal, store};

/// Contrastive loss, mean over the batch of (1 − t)·d² + t·max(margin − d, 0)².
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ContrastiveParams {
    pub n: u32,
    pub margin: f32,
    pub accumulate: u32,
    pub _pad: u32,
}

impl ContrastiveParams {
    pub fn new(n: usize, margin: f32) -> Self {
        Self { n: n as u32, margin, accumulate: 0, _pad: 0 }
    }
}

/// The contrastive loss of the pairs stacked in one (2N, D) tensor: the pair distance and the
/// loss as one op (the GPU's `pair_contrastive_*` kernels), their params side by side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct PairContrastiveParams {
    pub n: u32,
    pub d: u32,
    pub eps: f32,
    pub margin: f32,
    /// x's gradient, written or added (the distance's `accumulate`).
    pub accumulate: u32,
    pub _pad: [u32; 3],
}

impl PairContrastiveParams {
    pub fn new(pd: &PairDistanceParams, pc: &ContrastiveParams) -> Self {
        assert_eq!(pd.n, pc.n, "pair_contrastive: {pd:?} and {pc:?} disagree on the pairs");
        Self { n: pd.n, d: pd.d, eps: pd.eps, margin: pc.margin, accumulate: pd.accumulate, _pad: [0; 3] }
    }
}

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
