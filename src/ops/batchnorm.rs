//! BatchNorm2d with per-tower batch statistics: its params and CPU reference, train and eval forward, backward.
//!
//! The batch is split into `towers` equal slices; each is normalised with its own statistics
//! exactly as a separate PyTorch call would, and the running statistics take one momentum
//! update per tower, in order.

use bytemuck::{Pod, Zeroable};

use super::{ACCUMULATE_INPUT, ACCUMULATE_PARAMS};
use crate::float::{Float, decimal, store};

/// BatchNorm2d over a batch of `towers` slices, each with its own batch statistics (train
/// mode), as if each were a separate call; the running statistics are updated once per
/// tower, in order. With `relu_input` the op is BatchNorm(ReLU(x)): it reads its input through
/// a ReLU (and masks its input gradient by it), so the ReLU's output is never stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BatchNormParams {
    pub n: u32,
    pub c: u32,
    /// H·W.
    pub hw: u32,
    pub towers: u32,
    pub eps: f32,
    pub momentum: f32,
    pub accumulate: u32,
    pub relu_input: u32,
}

impl BatchNormParams {
    pub fn new(n: usize, c: usize, hw: usize, towers: usize) -> Self {
        assert!(towers > 0 && n.is_multiple_of(towers), "batchnorm: batch {n} does not split into {towers} towers");
        Self {
            n: n as u32,
            c: c as u32,
            hw: hw as u32,
            towers: towers as u32,
            eps: 1e-5,
            momentum: 0.1,
            accumulate: 0,
            relu_input: 0,
        }
    }
    /// The same op reading its input through a ReLU.
    pub fn with_relu_input(self, relu: bool) -> Self {
        Self { relu_input: relu as u32, ..self }
    }
    pub fn len(&self) -> usize {
        (self.n * self.c * self.hw) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Images in one tower.
    pub fn tower_n(&self) -> usize {
        (self.n / self.towers) as usize
    }
    /// Elements behind one (tower, channel) statistic.
    pub fn count(&self) -> usize {
        self.tower_n() * self.hw as usize
    }
    /// Length of the saved per-(tower, channel) statistics: mean then 1/std, each (T, C).
    pub fn saved_len(&self) -> usize {
        2 * (self.towers * self.c) as usize
    }
}

/// Index of element (n, c, i) in an (N, C, H·W) tensor.
#[inline]
fn at(p: &BatchNormParams, n: usize, c: usize, i: usize) -> usize {
    (n * p.c as usize + c) * p.hw as usize + i
}

/// The op's input at i: x, or ReLU(x) when the params say the op reads through a ReLU.
#[inline]
fn input<F: Float>(p: &BatchNormParams, x: &[F], i: usize) -> f64 {
    let v = x[i].to_f64();
    if p.relu_input != 0 { v.max(0.0) } else { v }
}

/// Calls `f(flat index)` for every element of channel `c` in tower `g`.
fn for_each_in<F: FnMut(usize)>(p: &BatchNormParams, g: usize, c: usize, mut f: F) {
    let gn = p.tower_n();
    for n in g * gn..(g + 1) * gn {
        for i in 0..p.hw as usize {
            f(at(p, n, c, i));
        }
    }
}

/// Per plane (n, c): the (mean, M2) of x as `p` reads it, laid out (N, C) pairs: what a
/// node that wrote x hands the BatchNorm that reads it (`Backend::batchnorm_plane_moments`).
pub fn batchnorm_plane_moments<F: Float>(
    p: &BatchNormParams,
    x: &[F],           // (N, C, H, W)
    moments: &mut [F], // (N, C, 2)
) {
    let hw = p.hw as usize;
    for plane in 0..(p.n * p.c) as usize {
        let values = (0..hw).map(|i| input(p, x, plane * hw + i));
        let mean = values.clone().sum::<f64>() / hw as f64;
        moments[2 * plane] = F::from_f64(mean);
        moments[2 * plane + 1] = F::from_f64(values.map(|v| (v - mean) * (v - mean)).sum());
    }
}

/// Tower `g`'s mean and 1/std of channel `c`, with the running statistics' update.
fn tower_statistics<F: Float>(
    p: &BatchNormParams,
    x: &[F],
    g: usize,
    c: usize,
    running_mean: &mut [F],
    running_var: &mut [F],
) -> (f64, f64) {
    let m = p.count() as f64;
    let mut sum = 0.0;
    for_each_in(p, g, c, |i| sum += input(p, x, i));
    let mean = sum / m;
    let mut sq = 0.0;
    for_each_in(p, g, c, |i| sq += (input(p, x, i) - mean).powi(2));
    let var = sq / m;
    let momentum = F::from_f64(decimal(p.momentum));
    let unbiased = F::from_f64(var * m / (m - 1.0).max(1.0));
    running_mean[c] = (F::ONE - momentum) * running_mean[c] + momentum * F::from_f64(mean);
    running_var[c] = (F::ONE - momentum) * running_var[c] + momentum * unbiased;
    (mean, 1.0 / (var + decimal(p.eps)).sqrt())
}

/// Train mode's statistics: each tower's mean and 1/std per channel into `saved`, and the
/// running statistics' momentum update, one per tower in order.
pub fn batchnorm_statistics<F: Float>(
    p: &BatchNormParams,
    x: &[F],                // (N, C, H, W)
    saved: &mut [F],        // mean (T, C) then invstd (T, C)
    running_mean: &mut [F], // (C)
    running_var: &mut [F],  // (C)
) {
    let (c_n, g_n) = (p.c as usize, p.towers as usize);
    for c in 0..c_n {
        for g in 0..g_n {
            let (mean, invstd) = tower_statistics(p, x, g, c, running_mean, running_var);
            saved[g * c_n + c] = F::from_f64(mean);
            saved[(g_n + g) * c_n + c] = F::from_f64(invstd);
        }
    }
}

/// Eval mode's statistics in `saved`'s layout: every tower's are the running mean and
/// 1/√(running var + eps).
pub fn batchnorm_running_statistics<F: Float>(
    p: &BatchNormParams,
    running_mean: &[F], // (C)
    running_var: &[F],  // (C)
    saved: &mut [F],    // mean (T, C) then invstd (T, C)
) {
    let (c_n, g_n) = (p.c as usize, p.towers as usize);
    for g in 0..g_n {
        for c in 0..c_n {
            saved[g * c_n + c] = running_mean[c];
            saved[(g_n + g) * c_n + c] = F::from_f64(1.0 / (running_var[c].to_f64() + decimal(p.eps)).sqrt());
        }
    }
}

/// y = (x − mean)·invstd·γ + β with each (tower, channel)'s statistics from `saved`.
pub fn batchnorm_normalise<F: Float>(
    p: &BatchNormParams,
    x: &[F],     // (N, C, H, W)
    gamma: &[F], // (C)
    beta: &[F],  // (C)
    saved: &[F], // mean (T, C) then invstd (T, C)
    y: &mut [F], // (N, C, H, W)
) {
    let (c_n, g_n) = (p.c as usize, p.towers as usize);
    for c in 0..c_n {
        for g in 0..g_n {
            let (mean, invstd) = (saved[g * c_n + c].to_f64(), saved[(g_n + g) * c_n + c].to_f64());
            let (g_, b_) = (gamma[c].to_f64(), beta[c].to_f64());
            for_each_in(p, g, c, |i| y[i] = F::from_f64((input(p, x, i) - mean) * invstd * g_ + b_));
        }
    }
}

/// Eval mode: normalise with the running statistics.
pub fn batchnorm_forward_eval<F: Float>(
    p: &BatchNormParams,
    x: &[F],            // (N, C, H, W)
    gamma: &[F],        // (C)
    beta: &[F],         // (C)
    running_mean: &[F], // (C)
    running_var: &[F],  // (C)
    y: &mut [F],        // (N, C, H, W)
) {
    for n in 0..p.n as usize {
        for c in 0..p.c as usize {
            let invstd = 1.0 / (running_var[c].to_f64() + decimal(p.eps)).sqrt();
            let (mean, g_, b_) = (running_mean[c].to_f64(), gamma[c].to_f64(), beta[c].to_f64());
            for i in 0..p.hw as usize {
                let j = at(p, n, c, i);
                y[j] = F::from_f64((input(p, x, j) - mean) * invstd * g_ + b_);
            }
        }
    }
}

/// Where `batchnorm_backward` writes (or adds): dx (N, C, H, W), dγ and dβ (C).
pub struct BatchNormGrads<'a, F> {
    pub dx: &'a mut [F],
    pub dgamma: &'a mut [F],
    pub dbeta: &'a mut [F],
}

/// Backward of train mode, per tower with x̂ = (x − mean)·invstd and M elements per tower:
/// dx = γ·invstd·(dy − Σdy/M − x̂·Σ(dy·x̂)/M), dγ = Σ_towers Σ dy·x̂, dβ = Σ_towers Σ dy;
/// through a ReLU input (x read as ReLU(x)), dx is 0 where x ≤ 0.
pub fn batchnorm_backward<F: Float>(
    p: &BatchNormParams,
    x: &[F],     // (N, C, H, W)
    dy: &[F],    // (N, C, H, W)
    gamma: &[F], // (C)
    saved: &[F], // mean (T, C) then invstd (T, C)
    grads: BatchNormGrads<F>,
) {
    let BatchNormGrads { dx, dgamma, dbeta } = grads;
    let (c_n, g_n) = (p.c as usize, p.towers as usize);
    let m = p.count() as f64;
    let (acc_in, acc_params) = (p.accumulate & ACCUMULATE_INPUT != 0, p.accumulate & ACCUMULATE_PARAMS != 0);
    for c in 0..c_n {
        let (mut dg, mut db) = (0.0, 0.0);
        for g in 0..g_n {
            let mean = saved[g * c_n + c].to_f64();
            let invstd = saved[(g_n + g) * c_n + c].to_f64();
            let (mut sum_dy, mut sum_dy_xhat) = (0.0, 0.0);
            for_each_in(p, g, c, |i| {
                sum_dy += dy[i].to_f64();
                sum_dy_xhat += dy[i].to_f64() * (input(p, x, i) - mean) * invstd;
            });
            let k = gamma[c].to_f64() * invstd;
            for_each_in(p, g, c, |i| {
                let xhat = (input(p, x, i) - mean) * invstd;
                let mut v = k * (dy[i].to_f64() - sum_dy / m - xhat * sum_dy_xhat / m);
                if p.relu_input != 0 && x[i] <= F::ZERO {
                    v = 0.0;
                }
                store(&mut dx[i], F::from_f64(v), acc_in);
            });
            dg += sum_dy_xhat;
            db += sum_dy;
        }
        store(&mut dgamma[c], F::from_f64(dg), acc_params);
        store(&mut dbeta[c], F::from_f64(db), acc_params);
    }
}
