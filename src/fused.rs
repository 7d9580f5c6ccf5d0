//! The fused ops a backend may run in fewer launches than their primitives, with their
//! arguments, and each one's default lowering: its primitives in turn.
//!
//! A backend that overrides none of them (the CPU reference) is correct as it is; the GPU
//! overrides each with kernels that read a BatchNorm's input through the normalisation, so
//! that BatchNorm's output and its gradient are never written. Tests hold every backend's
//! fused ops to this lowering.

use crate::backend::{Backend, Conv, Moments, Norm, NormGrads, ParamGrads, copy_refs};
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

copy_refs!(Fused, BatchNormConv2dBackward, Conv2dBatchNormConv2dBackward, PairContrastiveBackward);

impl<T> Fused<'_, T> {
    /// Runs the op as its primitives in turn. BatchNorm's output, where a fused op never kept
    /// it, is normalised again from the same statistics.
    pub fn lower<B: Backend<Tensor = T>>(self, b: &mut B) {
        match self {
            Fused::Conv2dMomentsForward { conv, x, y, moments } => {
                b.conv2d_forward(&conv.p, x, conv.w, conv.b, y);
                b.batchnorm_plane_moments(&moments.p, y, moments.out);
            }
            Fused::BatchNormMaxPoolForward { norm, pool, x, y } => {
                let normalised = normalised(b, &norm, x);
                b.maxpool_forward(&pool, &normalised, y);
            }
            Fused::BatchNormMaxPoolBackward { norm, pool, x, dy, grads } => {
                let normalised = normalised(b, &norm, x);
                let dnormalised = b.scratch(norm.p.len());
                b.maxpool_backward(&MaxPoolParams { accumulate: 0, ..pool }, &normalised, dy, &dnormalised);
                b.batchnorm_backward(&norm, x, &dnormalised, grads);
            }
            Fused::BatchNormConv2dForward { norm, conv, x, y, moments } => {
                let normalised = normalised(b, &norm, x);
                b.conv2d_forward(&conv.p, &normalised, conv.w, conv.b, y);
                if let Some(m) = moments {
                    b.batchnorm_plane_moments(&m.p, y, m.out);
                }
            }
            Fused::BatchNormConv2dBackward(op) => {
                let normalised = normalised(b, &op.norm, op.x);
                let dnormalised = b.scratch(op.norm.p.len());
                let input = Conv2dParams { accumulate: 0, ..op.conv.p };
                b.conv2d_backward_input(&input, op.dy, op.conv.w, &dnormalised);
                b.conv2d_backward_weight(&op.conv.p, &normalised, op.dy, op.conv_grads);
                b.batchnorm_backward(&op.norm, op.x, &dnormalised, op.grads);
            }
            Fused::Conv2dBatchNormConv2dBackward(op) => {
                let dz = b.scratch(op.norm.p.len());
                let p = BatchNormParams { accumulate: op.norm.p.accumulate & !ACCUMULATE_INPUT, ..op.norm.p };
                let norm = Norm { p, ..op.norm };
                let grads = NormGrads { dx: &dz, dgamma: op.dgamma, dbeta: op.dbeta };
                let (x, dy, conv, conv_grads) = (op.z, op.dy, op.conv, op.conv_grads);
                b.fused(Fused::BatchNormConv2dBackward(BatchNormConv2dBackward {
                    norm,
                    conv,
                    x,
                    dy,
                    grads,
                    conv_grads,
                }));
                if let Some(dx) = op.dx {
                    b.conv2d_backward_input(&op.first.p, &dz, op.first.w, dx);
                }
                b.conv2d_backward_weight(&op.first.p, op.x, &dz, op.first_grads);
            }
            Fused::PairContrastiveForward { pd, pc, x, t, d, loss } => {
                b.pair_distance_forward(&pd, x, d);
                b.contrastive_forward(&pc, d, t, loss);
            }
            Fused::PairContrastiveBackward(op) => {
                let dd = b.scratch(op.pd.n as usize);
                b.contrastive_backward(&ContrastiveParams { accumulate: 0, ..op.pc }, op.d, op.t, op.dloss, &dd);
                b.pair_distance_backward(&op.pd, op.x, op.d, &dd, op.dx);
            }
        }
    }
}

/// BatchNorm's output, into scratch.
fn normalised<B: Backend>(b: &mut B, norm: &Norm<B::Tensor>, x: &B::Tensor) -> B::Tensor {
    let y = b.scratch(norm.p.len());
    b.batchnorm_normalise(norm, x, &y);
    y
}
