//! MaxPool2d 2×2, stride 2: the CPU reference, forward and backward.

use crate::float::{Float, store};
use crate::params::{ACCUMULATE_INPUT, MaxPoolParams};

/// Flat input index of the maximum in the window of output (n·C + c, oh, ow); ties go to the
/// first in row-major order, NaN wins, as in PyTorch.
fn argmax<F: Float>(p: &MaxPoolParams, x: &[F], nc: usize, oh: usize, ow: usize) -> usize {
    let (h, w) = (p.h as usize, p.w as usize);
    let base = nc * h * w + 2 * oh * w + 2 * ow;
    let mut best = base;
    for j in [base + 1, base + w, base + w + 1] {
        if x[j] > x[best] || x[j].is_nan() {
            best = j;
        }
    }
    best
}

pub fn maxpool_forward<F: Float>(
    p: &MaxPoolParams,
    x: &[F],     // (N, C, H, W)
    y: &mut [F], // (N, C, H/2, W/2)
) {
    let (oh_n, ow_n) = (p.out_h(), p.out_w());
    for nc in 0..(p.n * p.c) as usize {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                y[(nc * oh_n + oh) * ow_n + ow] = x[argmax(p, x, nc, oh, ow)];
            }
        }
    }
}

/// The gradient of each window goes to its maximum; everything else (and a dropped odd
/// row or column) gets 0.
pub fn maxpool_backward<F: Float>(
    p: &MaxPoolParams,
    x: &[F],      // (N, C, H, W)
    dy: &[F],     // (N, C, H/2, W/2)
    dx: &mut [F], // (N, C, H, W)
) {
    let (oh_n, ow_n) = (p.out_h(), p.out_w());
    let mut g = vec![F::ZERO; dx.len()];
    for nc in 0..(p.n * p.c) as usize {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                g[argmax(p, x, nc, oh, ow)] = dy[(nc * oh_n + oh) * ow_n + ow];
            }
        }
    }
    for (d, v) in dx.iter_mut().zip(g) {
        store(d, v, p.accumulate & ACCUMULATE_INPUT != 0);
    }
}
