//! Launchers of shaders/maxpool.wgsl: 2×2 max pooling, forward and backward, also of a
//! BatchNorm's output that is never written (MaxPool(BatchNorm(x)), read through from x,
//! whose backward is BatchNorm's too).

use super::batchnorm::{
    batchnorm_backward, batchnorm_backward_sums, batchnorm_channel_sums, batchnorm_output,
    batchnorm_pooled_backward_input,
};
use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::{Backend, Norm, NormGrads};
use crate::ops::{ACCUMULATE_INPUT, MaxPoolParams};

/// Invocations per workgroup of the per-plane kernels.
const PLANE_WORKGROUP: u32 = 64;

fn plane_groups(p: &MaxPoolParams) -> u32 {
    (p.n * p.c).div_ceil(PLANE_WORKGROUP)
}

/// Whether the two-windows-per-vec4 kernels cover the shape: rows of whole vec4s, even H.
fn pairs(p: &MaxPoolParams) -> bool {
    p.w.is_multiple_of(4) && p.h.is_multiple_of(2)
}

/// Whether the row-pair kernels do: widths of 4m + 2, whose two rows of windows are whole
/// vec4s, even H.
fn rows(p: &MaxPoolParams) -> bool {
    p.w % 4 == 2 && p.h.is_multiple_of(2)
}

pub fn maxpool_forward(gpu: &mut GpuBackend, p: &MaxPoolParams, x: &GpuTensor, y: &GpuTensor) {
    assert_eq!((x.len, y.len), (p.x_len(), p.y_len()), "maxpool_forward: {p:?}");
    if !gpu.plane_at_a_time() {
        gpu.dispatch(Kernel::MaxPoolForward, p, &[x, x, y], GpuBackend::groups_for(p.y_len()));
    } else if pairs(p) {
        gpu.dispatch(Kernel::MaxPoolForwardPairs, p, &[x, y], plane_groups(p));
    } else if rows(p) {
        gpu.dispatch(Kernel::MaxPoolForwardRows, p, &[x, x, y], plane_groups(p));
    } else {
        gpu.dispatch(Kernel::MaxPoolForward, p, &[x, x, y], GpuBackend::groups_for(p.y_len()));
    }
}

pub fn maxpool_backward(gpu: &mut GpuBackend, p: &MaxPoolParams, x: &GpuTensor, dy: &GpuTensor, dx: &GpuTensor) {
    assert_eq!((x.len, dy.len, dx.len), (p.x_len(), p.y_len(), p.x_len()), "maxpool_backward: {p:?}");
    let accumulate = (p.accumulate & ACCUMULATE_INPUT != 0) as u32;
    if pairs(p) {
        gpu.dispatch_specialized(Kernel::MaxPoolBackwardPairs, &[accumulate], p, &[x, dy, dx], plane_groups(p));
    } else if rows(p) {
        gpu.dispatch_specialized(Kernel::MaxPoolBackwardRows, &[accumulate], p, &[x, dy, dx], plane_groups(p));
    } else if p.h.is_multiple_of(2) && p.w.is_multiple_of(2) {
        gpu.dispatch_specialized(Kernel::MaxPoolBackwardWindows, &[accumulate], p, &[x, dy, dx], plane_groups(p));
    } else {
        gpu.dispatch(Kernel::MaxPoolBackward, p, &[x, dy, dx], GpuBackend::groups_for(p.x_len()));
    }
}

/// MaxPool(BatchNorm(x)) with BatchNorm's statistics in `saved` (the batch's in training, the
/// running ones in eval mode): the pool reading x through the normalisation.
pub fn batchnorm_maxpool_forward(
    gpu: &mut GpuBackend,
    norm: &Norm<GpuTensor>,
    p: &MaxPoolParams,
    x: &GpuTensor,
    y: &GpuTensor,
) {
    let Norm { p: pb, gamma, beta, saved } = *norm;
    let p = p.through(&pb);
    assert_eq!((x.len, y.len, saved.len), (p.x_len(), p.y_len(), pb.saved_len()), "batchnorm_maxpool_forward: {p:?}");
    let groups = GpuBackend::groups_for(p.y_len());
    if !gpu.plane_at_a_time() {
        gpu.dispatch(Kernel::BatchNormMaxPoolForward, &p, &[x, x, y, gamma, beta, saved], groups);
    } else if pairs(&p) {
        gpu.dispatch(Kernel::BatchNormMaxPoolForwardPairs, &p, &[x, y, gamma, beta, saved], plane_groups(&p));
    } else if rows(&p) {
        gpu.dispatch(Kernel::BatchNormMaxPoolForwardRows, &p, &[x, x, y, gamma, beta, saved], plane_groups(&p));
    } else {
        gpu.dispatch(Kernel::BatchNormMaxPoolForward, &p, &[x, x, y, gamma, beta, saved], groups);
    }
}

/// The backward of MaxPool(BatchNorm(x)), BatchNorm's included, in passes that read x through
/// the normalisation (BatchNorm's output and its gradient are never written): BatchNorm's
/// sums of the gradient the pool passes back, then dx. Plane by plane where the kernel set
/// reduces that way (the planes' sums, their reduction over the towers, dx); otherwise each
/// element finds its share of the pool's gradient itself (shaders/batchnorm.wgsl POOL_W).
pub fn batchnorm_maxpool_backward(
    gpu: &mut GpuBackend,
    norm: &Norm<GpuTensor>,
    p: &MaxPoolParams,
    (x, dy): (&GpuTensor, &GpuTensor),
    grads: NormGrads<GpuTensor>,
) {
    let Norm { p: pb, gamma, beta, saved } = *norm;
    let NormGrads { dx, dgamma, dbeta } = grads;
    let p = MaxPoolParams { accumulate: 0, ..p.through(&pb) };
    assert_eq!((x.len, dy.len, dx.len), (p.x_len(), p.y_len(), p.x_len()), "batchnorm_maxpool_backward: {p:?}");
    if !gpu.plane_at_a_time() {
        let sums = batchnorm_channel_sums(gpu, norm, (x, dy, p.w), dgamma, dbeta);
        return batchnorm_pooled_backward_input(gpu, norm, (x, dy, p.w), &sums, dx);
    }
    let (sum, input) = if pairs(&p) {
        (Kernel::BatchNormMaxPoolBackwardSumsPairs, Kernel::BatchNormMaxPoolBackwardInputPairs)
    } else if rows(&p) {
        (Kernel::BatchNormMaxPoolBackwardSumsRows, Kernel::BatchNormMaxPoolBackwardInputRows)
    } else if p.h.is_multiple_of(2) && p.w.is_multiple_of(2) {
        (Kernel::BatchNormMaxPoolBackwardSumsWindows, Kernel::BatchNormMaxPoolBackwardInputWindows)
    } else {
        // Odd sizes: the per-element kernel has no BatchNorm reading; the two ops in turn.
        let (normalised, dnormalised) = (batchnorm_output(gpu, norm, x), gpu.scratch(p.x_len()));
        maxpool_backward(gpu, &p, &normalised, dy, &dnormalised);
        return batchnorm_backward(gpu, norm, x, &dnormalised, grads);
    };
    let plane_sums = gpu.scratch(2 * (p.n * p.c) as usize);
    gpu.dispatch(sum, &p, &[x, dy, dx, gamma, beta, saved, &plane_sums], plane_groups(&p));
    let sums = batchnorm_backward_sums(gpu, &pb, &plane_sums, dgamma, dbeta);
    let accumulate = (pb.accumulate & ACCUMULATE_INPUT != 0) as u32;
    gpu.dispatch_specialized(input, &[accumulate], &p, &[x, dy, dx, gamma, beta, saved, &sums], plane_groups(&p));
}
