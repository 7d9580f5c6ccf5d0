//! MaxPool2d 2×2, stride 2: its params and CPU reference, forward and backward.

use bytemuck::{Pod, Zeroable};

use super::{ACCUMULATE_INPUT, BatchNormParams};
use crate::float::{Float, store};

/// MaxPool2d, 2×2 window, stride 2, floor mode (a trailing odd row or column is dropped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MaxPoolParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub accumulate: u32,
    /// Of the BatchNorm that a fused MaxPool(BatchNorm(x)) reads x through (else 1 and 0).
    pub towers: u32,
    pub relu_input: u32,
    pub _pad: u32,
}

impl MaxPoolParams {
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self { n: n as u32, c: c as u32, h: h as u32, w: w as u32, accumulate: 0, towers: 1, relu_input: 0, _pad: 0 }
    }
    /// This pool reading its input through the BatchNorm `bn` (MaxPool(BatchNorm(x))).
    pub fn through(self, bn: &BatchNormParams) -> Self {
        assert_eq!((bn.n, bn.c, bn.hw), (self.n, self.c, self.h * self.w), "MaxPool of BatchNorm: shapes differ");
        Self { towers: bn.towers, relu_input: bn.relu_input, ..self }
    }
    pub fn out_h(&self) -> usize {
        (self.h / 2) as usize
    }
    pub fn out_w(&self) -> usize {
        (self.w / 2) as usize
    }
    pub fn x_len(&self) -> usize {
        (self.n * self.c * self.h * self.w) as usize
    }
    pub fn y_len(&self) -> usize {
        (self.n * self.c) as usize * self.out_h() * self.out_w()
    }
}

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
