//! Linear layer y = x·Wᵀ + b (or Linear(ReLU(x)), `relu_input`): its params and CPU reference, forward and
//! backward.

use bytemuck::{Pod, Zeroable};

use super::{ACCUMULATE_INPUT, ACCUMULATE_PARAMS};
use crate::float::{Float, store};

/// Fully connected layer y = x·Wᵀ + b, W of shape (out, in) as in PyTorch. With
/// `relu_input` the op is Linear(ReLU(x)): it reads x through the ReLU and masks x's gradient
/// with it, so ReLU(x) is never a tensor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LinearParams {
    pub n: u32,
    pub d_in: u32,
    pub d_out: u32,
    pub accumulate: u32,
    pub towers: u32,
    pub relu_input: u32,
    pub _pad: [u32; 2],
}

impl LinearParams {
    pub fn new(n: usize, d_in: usize, d_out: usize) -> Self {
        let (n, d_in, d_out) = (n as u32, d_in as u32, d_out as u32);
        Self { n, d_in, d_out, accumulate: 0, towers: 1, relu_input: 0, _pad: [0; 2] }
    }
    pub fn with_relu_input(self, relu: bool) -> Self {
        Self { relu_input: relu as u32, ..self }
    }
    /// The batch split into `towers` slices (see the module docs).
    pub fn with_towers(self, towers: usize) -> Self {
        assert!(
            towers > 0 && (self.n as usize).is_multiple_of(towers),
            "linear: batch {} does not split into {towers} towers",
            self.n
        );
        Self { towers: towers as u32, ..self }
    }
}

/// The layer's input at i: x, or ReLU(x) when the params say it reads through a ReLU.
#[inline]
fn input<F: Float>(p: &LinearParams, x: &[F], i: usize) -> f64 {
    let v = x[i].to_f64();
    if p.relu_input != 0 { v.max(0.0) } else { v }
}

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
                acc += input(p, x, n * d_in + i) * w[o * d_in + i].to_f64();
            }
            y[n * d_out + o] = F::from_f64(acc);
        }
    }
}

/// dx[n, i] = Σ_o dy[n, o] · w[o, i], and 0 where a ReLU in front (`relu_input`) passed 0
/// (x ≤ 0: PyTorch's convention for the gradient at exactly 0).
pub fn linear_backward_input<F: Float>(
    p: &LinearParams,
    x: &[F],      // (N, In)
    dy: &[F],     // (N, Out)
    w: &[F],      // (Out, In)
    dx: &mut [F], // (N, In)
) {
    let (d_in, d_out) = (p.d_in as usize, p.d_out as usize);
    for n in 0..p.n as usize {
        for i in 0..d_in {
            let acc: f64 = (0..d_out).map(|o| dy[n * d_out + o].to_f64() * w[o * d_in + i].to_f64()).sum();
            let passed = p.relu_input == 0 || x[n * d_in + i] > F::ZERO;
            store(
                &mut dx[n * d_in + i],
                F::from_f64(if passed { acc } else { 0.0 }),
                p.accumulate & ACCUMULATE_INPUT != 0,
            );
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
            let s = per_tower(&|n| dy[n * d_out + o].to_f64() * input(p, x, n * d_in + i));
            store(&mut dw[o * d_in + i], F::from_f64(s), acc);
        }
        let s = per_tower(&|n| dy[n * d_out + o].to_f64());
        store(&mut db[o], F::from_f64(s), acc);
    }
}
