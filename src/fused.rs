//! The fused ops a backend may run in fewer launches than their primitives, with their
//! arguments; each one's default lowering, its primitives in turn, is `Backend::fused`'s.
//!
//! A backend that overrides none of them (the CPU reference) is correct as it is; the GPU
//! overrides each with kernels that read a BatchNorm's input through the normalisation, so
//! that BatchNorm's output and its gradient are never written. Tests hold every backend's
//! fused ops to this lowering.

use crate::args::{Conv, Moments, Norm, NormGrads, ParamGrads, copy_refs};
use crate::ops::*;

#[derive(Debug)]
pub enum Fused<'a, T> {
    /// y = conv(x), and y's plane moments as `moments.p` reads them.
    Conv2dMomentsForward { conv: Conv<'a, T>, x: &'a T, y: &'a T, moments: Moments<'a, T> },
    /// y = MaxPool(BatchNorm(x)).
    BatchNormMaxPoolForward { norm: Norm<'a, T>, pool: MaxPoolParams, x: &'a T, y: &'a T },
    /// Its backward, BatchNorm's included: dy is the pooled output's gradient (`pool.accumulate`
    /// is not read).
    BatchNormMaxPoolBackward { norm: Norm<'a, T>, pool: MaxPoolParams, x: &'a T, dy: &'a T, grads: NormGrads<'a, T> },
    /// y = conv(BatchNorm(x)), and y's plane moments where asked.
    BatchNormConv2dForward { norm: Norm<'a, T>, conv: Conv<'a, T>, x: &'a T, y: &'a T, moments: Option<Moments<'a, T>> },
    /// Its backward: dy is the conv output's gradient; the conv's gradients go by
    /// `conv.p.accumulate`, BatchNorm's by `norm.p.accumulate`.
    BatchNormConv2dBackward(BatchNormConv2dBackward<'a, T>),
    /// The backward of conv(BatchNorm(first(x))) (forward: `Conv2dMomentsForward` of first,
    /// the statistics, `BatchNormConv2dForward`).
    Conv2dBatchNormConv2dBackward(Conv2dBatchNormConv2dBackward<'a, T>),
    /// The contrastive loss of the pairs stacked in x (2N, D): distances into d (N), the mean
    /// loss into `loss`.
    PairContrastiveForward { pd: PairDistanceParams, pc: ContrastiveParams, x: &'a T, t: &'a T, d: &'a T, loss: &'a T },
    /// Its backward from the loss's gradient to x's (written or added by `pd.accumulate`).
    PairContrastiveBackward(PairContrastiveBackward<'a, T>),
    /// y = Linear(x), then `PairContrastiveForward` of y.
    LinearPairContrastiveForward(LinearPairContrastiveForward<'a, T>),
}

#[derive(Debug)]
pub struct BatchNormConv2dBackward<'a, T> {
    pub norm: Norm<'a, T>,
    pub conv: Conv<'a, T>,
    pub x: &'a T,
    pub dy: &'a T,
    pub grads: NormGrads<'a, T>,
    pub conv_grads: ParamGrads<'a, T>,
}

/// `first`'s input gradient `dx` only where given (by `first.p.accumulate`'s input bit, as
/// its weight gradient by the params bit); `z` is first's output, whose gradient is the
/// op's own.
#[derive(Debug)]
pub struct Conv2dBatchNormConv2dBackward<'a, T> {
    pub first: Conv<'a, T>,
    pub x: &'a T,
    pub dx: Option<&'a T>,
    pub first_grads: ParamGrads<'a, T>,
    pub norm: Norm<'a, T>,
    pub z: &'a T,
    pub dgamma: &'a T,
    pub dbeta: &'a T,
    pub conv: Conv<'a, T>,
    pub dy: &'a T,
    pub conv_grads: ParamGrads<'a, T>,
}

#[derive(Debug)]
pub struct PairContrastiveBackward<'a, T> {
    pub pd: PairDistanceParams,
    pub pc: ContrastiveParams,
    pub x: &'a T,
    pub d: &'a T,
    pub t: &'a T,
    pub dloss: &'a T,
    pub dx: &'a T,
}

/// The loss head's forward: the embeddings y = Linear(x) of the pairs stacked in x, their
/// distances d and the mean loss against targets t.
#[derive(Debug)]
pub struct LinearPairContrastiveForward<'a, T> {
    pub linear: LinearParams,
    pub x: &'a T,
    pub w: &'a T,
    pub b: &'a T,
    pub y: &'a T,
    pub pd: PairDistanceParams,
    pub pc: ContrastiveParams,
    pub t: &'a T,
    pub d: &'a T,
    pub loss: &'a T,
}

copy_refs!(
    Fused,
    BatchNormConv2dBackward,
    Conv2dBatchNormConv2dBackward,
    PairContrastiveBackward,
    LinearPairContrastiveForward
);
