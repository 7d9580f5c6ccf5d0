//! Pairwise distance between the two towers: its params and CPU reference, forward and backward.
//!
//! The towers are stacked along the batch: rows 0..N are the first images of the pairs,
//! rows N..2N the second ones, so x is (2N, D) and pair i is rows i and N + i.

use bytemuck::{Pod, Zeroable};

use super::ACCUMULATE_INPUT;
use crate::float::{Float, decimal, store};

/// Euclidean distance ‖a − b + eps‖₂ between row i of the first tower and row i of the
/// second; the towers are stacked along the batch, so the input is (2N, D).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct PairDistanceParams {
    /// Pairs (half the stacked batch).
    pub n: u32,
    pub d: u32,
    pub eps: f32,
    pub accumulate: u32,
}

impl PairDistanceParams {
    pub fn new(n: usize, d: usize) -> Self {
        Self { n: n as u32, d: d as u32, eps: 1e-6, accumulate: 0 }
    }
}

/// d[i] = ‖x[i] − x[N + i] + eps‖₂, as `torch.nn.functional.pairwise_distance`.
pub fn pair_distance_forward<F: Float>(
    p: &PairDistanceParams,
    x: &[F],     // (2N, D)
    d: &mut [F], // (N)
) {
    let (n, dim) = (p.n as usize, p.d as usize);
    for (i, d) in d.iter_mut().enumerate().take(n) {
        let s: f64 = (0..dim).map(|k| diff(p, x, i, k).powi(2)).sum();
        *d = F::from_f64(s.sqrt());
    }
}

/// dx[i] = dd[i] · (x[i] − x[N + i] + eps) / d[i], dx[N + i] = −dx[i]; 0 where d is 0.
pub fn pair_distance_backward<F: Float>(
    p: &PairDistanceParams,
    x: &[F],      // (2N, D)
    d: &[F],      // (N)
    dd: &[F],     // (N)
    dx: &mut [F], // (2N, D)
) {
    let (n, dim) = (p.n as usize, p.d as usize);
    let acc = p.accumulate & ACCUMULATE_INPUT != 0;
    for i in 0..n {
        let dist = d[i].to_f64();
        let scale = if dist == 0.0 { 0.0 } else { dd[i].to_f64() / dist };
        for k in 0..dim {
            let g = scale * diff(p, x, i, k);
            store(&mut dx[i * dim + k], F::from_f64(g), acc);
            store(&mut dx[(n + i) * dim + k], F::from_f64(-g), acc);
        }
    }
}

#[inline]
fn diff<F: Float>(p: &PairDistanceParams, x: &[F], i: usize, k: usize) -> f64 {
    let (n, dim) = (p.n as usize, p.d as usize);
    // Rounded to F like PyTorch's `x1 - x2 + eps`, so the f32 reference matches f32 PyTorch.
    (x[i * dim + k] - x[(n + i) * dim + k] + F::from_f64(decimal(p.eps))).to_f64()
}
