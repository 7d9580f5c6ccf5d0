//! One parameter struct per op, shared by the CPU reference, the launchers and the WGSL `var<uniform>`.
//!
//! Every struct is `#[repr(C)]`, `Pod` and a multiple of 16 bytes, because WGSL rounds a
//! uniform struct up to 16; each shader declares a struct with the same fields in the same
//! order and names this file. `accumulate` tells a backward op to add into its gradient
//! outputs instead of overwriting them (bit [`ACCUMULATE_INPUT`] for the gradient of the
//! op's input, bit [`ACCUMULATE_PARAMS`] for its weights), which is how a tensor used twice,
//! such as the weights the two towers share, collects both contributions.
//!
//! Dimension legend used throughout: N batch, C channels, H/W height/width, K kernel size,
//! D embedding width, T towers.
//!
//! `towers`: the batch holds T equal slices, one per tower of the Siamese network, stacked so
//! that both towers run in one launch. Every reduction over the batch keeps the towers apart,
//! as two separate calls would: BatchNorm's statistics are per tower, and a parameter's
//! gradient is the sum of the towers' gradients (so the linear bias, whose two tower
//! gradients are exact negatives, gets exactly 0, as in PyTorch).

use bytemuck::{Pod, Zeroable};

/// `accumulate` bit: add into the input's gradient rather than overwrite it.
pub const ACCUMULATE_INPUT: u32 = 1;
/// `accumulate` bit: add into the parameters' gradients rather than overwrite them.
pub const ACCUMULATE_PARAMS: u32 = 2;

/// 2-D convolution, stride 1, square odd kernel, zero padding `pad` on every side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Conv2dParams {
    pub n: u32,
    pub c_in: u32,
    pub h: u32,
    pub w: u32,
    pub c_out: u32,
    pub k: u32,
    pub pad: u32,
    pub accumulate: u32,
    pub towers: u32,
    /// Images per partial sum in the first stage of the weight gradient (set by the launcher).
    pub chunk: u32,
    pub _pad: [u32; 2],
}

impl Conv2dParams {
    /// A `k`×`k` convolution that keeps the spatial size (`pad = k / 2`), as the model uses.
    pub fn same(n: usize, c_in: usize, h: usize, w: usize, c_out: usize, k: usize) -> Self {
        assert!(k % 2 == 1, "conv2d: kernel size {k} must be odd");
        Self {
            towers: 1,
            chunk: 1,
            _pad: [0; 2],
            n: n as u32,
            c_in: c_in as u32,
            h: h as u32,
            w: w as u32,
            c_out: c_out as u32,
            k: k as u32,
            pad: (k / 2) as u32,
            accumulate: 0,
        }
    }
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad + 1 - self.k) as usize
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad + 1 - self.k) as usize
    }
    pub fn x_len(&self) -> usize {
        (self.n * self.c_in * self.h * self.w) as usize
    }
    pub fn w_len(&self) -> usize {
        (self.c_out * self.c_in * self.k * self.k) as usize
    }
    pub fn y_len(&self) -> usize {
        self.n as usize * self.c_out as usize * self.out_h() * self.out_w()
    }
    /// The batch split into `towers` slices (see the module docs).
    pub fn with_towers(self, towers: usize) -> Self {
        assert!(
            towers > 0 && (self.n as usize).is_multiple_of(towers),
            "conv2d: batch {} does not split into {towers} towers",
            self.n
        );
        Self { towers: towers as u32, ..self }
    }
    /// Multiply-adds of the forward pass (the backward passes each cost about the same).
    pub fn macs(&self) -> usize {
        self.y_len() * (self.c_in * self.k * self.k) as usize
    }
}

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

/// Most conv layers whose weight gradients one `conv2d_backward_weight_sums` launch sums.
pub const WEIGHT_SUMS_LAYERS: usize = 8;

/// The conv layers whose weight-gradient partials one launch sums (src/gpu/weight_sums.rs):
/// per layer, where its partials start in their buffer, its taps (weights, then biases), its
/// chunks per tower and towers, then its weights, where its dw and db start in theirs and
/// whether they are added to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WeightSumsParams {
    pub layers: u32,
    pub _pad: [u32; 3],
    pub table: [[u32; 8]; WEIGHT_SUMS_LAYERS],
}

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

/// A plain elementwise op over `len` elements (ReLU, fill, accumulate).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ElementwiseParams {
    pub len: u32,
    pub value: f32,
    pub accumulate: u32,
    pub _pad: u32,
}

impl ElementwiseParams {
    pub fn new(len: usize) -> Self {
        Self { len: len as u32, value: 0.0, accumulate: 0, _pad: 0 }
    }
}

/// Gather of `n` u8 images (packed four to a u32 on the GPU) into a normalised f32 batch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GatherParams {
    pub n: u32,
    /// Pixels per image.
    pub pixels: u32,
    pub _pad: [u32; 2],
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_structs_are_multiples_of_16_bytes() {
        for size in [
            size_of::<Conv2dParams>(),
            size_of::<BatchNormParams>(),
            size_of::<MaxPoolParams>(),
            size_of::<LinearParams>(),
            size_of::<PairDistanceParams>(),
            size_of::<ContrastiveParams>(),
            size_of::<ElementwiseParams>(),
            size_of::<GatherParams>(),
            size_of::<AdamParams>(),
        ] {
            assert_eq!(size % 16, 0, "a uniform struct of {size} bytes");
        }
    }

    #[test]
    fn same_conv_keeps_the_size() {
        let p = Conv2dParams::same(2, 3, 9, 7, 4, 5);
        assert_eq!((p.out_h(), p.out_w()), (9, 7));
    }
}
