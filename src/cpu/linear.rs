//! Linear layer y = x·Wᵀ + b: the CPU reference, forward and backward.

use super::float::{Float, store};
use crate::params::{ACCUMULATE_INPUT, ACCUMULATE_PARAMS, LinearParams};

pub fn linear_forward<F: Float>(
    p: &LinearParams,
    x: &[F],     // (N, In)
    w: &[F],     // (Out, In)
    b: &[F],     // (Out)
    y: &mut [F], // (N, Out)
) {
    let (d_in, d_out) = (p.d_in as usize, p.d_out as usize);
    for n in 0..p.n as usize {
        for o in 0..d_out {
            let mut acc = b[o].to_f64();
            for i in 0..d_in {
                acc += x[n * d_in + i].to_f64() * w[o * d_in + i].to_f64();
            }
            y[n * d_out + o] = F::from_f64(acc);
        }
    }
}

/// dx[n, i] = Σ_o dy[n, o] · w[o, i]
pub fn linear_backward_input<F: Float>(
    p: &LinearParams,
    dy: &[F],     // (N, Out)
    w: &[F],      // (Out, In)
    dx: &mut [F], // (N, In)
) {
    let (d_in, d_out) = (p.d_in as usize, p.d_out as usize);
    for n in 0..p.n as usize {
        for i in 0..d_in {
            let acc: f64 = (0..d_out).map(|o| dy[n * d_out + o].to_f64() * w[o * d_in + i].to_f64()).sum();
            store(&mut dx[n * d_in + i], F::from_f64(acc), p.accumulate & ACCUMULATE_INPUT != 0);
        }
    }
}

/// dw[o, i] = Σ_n dy[n, o] · x[n, i];  db[o] = Σ_n dy[n, o]; each summed per tower, then the
/// towers added (so the bias, whose towers' gradients are exact negatives, gets exactly 0).
pub fn linear_backward_weight<F: Float>(
    p: &LinearParams,
    x: &[F],      // (N, In)
    dy: &[F],     // (N, Out)
    dw: &mut [F], // (Out, In)
    db: &mut [F], // (Out)
) {
    let (d_in, d_out) = (p.d_in as usize, p.d_out as usize);
    let tower_n = (p.n / p.towers) as usize;
    let acc = p.accumulate & ACCUMULATE_PARAMS != 0;
    let per_tower = |f: &dyn Fn(usize) -> f64| -> f64 {
        (0..p.towers as usize).map(|t| (t * tower_n..(t + 1) * tower_n).map(f).sum::<f64>()).sum()
    };
    for o in 0..d_out {
        for i in 0..d_in {
            let s = per_tower(&|n| dy[n * d_out + o].to_f64() * x[n * d_in + i].to_f64());
            store(&mut dw[o * d_in + i], F::from_f64(s), acc);
        }
        let s = per_tower(&|n| dy[n * d_out + o].to_f64());
        store(&mut db[o], F::from_f64(s), acc);
    }
}
