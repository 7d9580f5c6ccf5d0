//! Launchers of shaders/maxpool.wgsl: 2×2 max pooling, forward and backward, also of a
//! BatchNorm's output that is never written (MaxPool(BatchNorm(x)), read through from x).

use super::batchnorm::{batchnorm_normalise, batchnorm_statistics};
use super::{GpuBackend, GpuTensor, Kernel, PlaneStats};
use crate::backend::Backend;
use crate::params::{ACCUMULATE_INPUT, BatchNormParams, MaxPoolParams};

/// Invocations per workgroup of the per-plane kernels.
const PLANE_WORKGROUP: u32 = 64;

fn plane_groups(p: &MaxPoolParams) -> u32 {
    (p.n * p.c).div_ceil(PLANE_WORKGROUP)
}

/// Whether the two-windows-per-vec4 kernels cover the shape: rows of whole vec4s, even H.
fn pairs(p: &MaxPoolParams) -> bool {
    p.w.is_multiple_of(4) && p.h.is_multiple_of(2)
}

pub fn maxpool_forward(gpu: &mut GpuBackend, p: &MaxPoolParams, x: &GpuTensor, y: &GpuTensor) {
    assert_eq!((x.len, y.len), (p.x_len(), p.y_len()), "maxpool_forward: {p:?}");
    if pairs(p) {
        gpu.dispatch(Kernel::MaxPoolForwardPairs, p, &[x, y], plane_groups(p));
    } else {
        gpu.dispatch(Kernel::MaxPoolForward, p, &[x, x, y], plane_groups(p));
    }
}

pub fn maxpool_backward(gpu: &mut GpuBackend, p: &MaxPoolParams, x: &GpuTensor, dy: &GpuTensor, dx: &GpuTensor) {
    assert_eq!((x.len, dy.len, dx.len), (p.x_len(), p.y_len(), p.x_len()), "maxpool_backward: {p:?}");
    let accumulate = (p.accumulate & ACCUMULATE_INPUT != 0) as u32;
    if pairs(p) {
        gpu.dispatch_specialized(Kernel::MaxPoolBackwardPairs, &[accumulate], p, &[x, dy, dx], plane_groups(p));
    } else if p.h.is_multiple_of(2) && p.w.is_multiple_of(2) {
        gpu.dispatch_specialized(Kernel::MaxPoolBackwardWindows, &[accumulate], p, &[x, dy, dx], plane_groups(p));
    } else {
        gpu.dispatch(Kernel::MaxPoolBackward, p, &[x, dy, dx], GpuBackend::groups_for(p.x_len()));
    }
}

/// MaxPool(BatchNorm(x)) in train mode: BatchNorm's statistics (into `saved`, with the running
/// statistics' update), then the pool reading x through the normalisation.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_maxpool_forward(
    gpu: &mut GpuBackend,
    pb: &BatchNormParams,
    p: &MaxPoolParams,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    saved: &GpuTensor,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
    y: &GpuTensor,
) {
    let p = p.through(pb);
    assert_eq!((x.len, y.len), (p.x_len(), p.y_len()), "batchnorm_maxpool_forward: {p:?}");
    batchnorm_statistics(gpu, pb, x, saved, running_mean, running_var);
    if pairs(&p) {
        gpu.dispatch(Kernel::BatchNormMaxPoolForwardPairs, &p, &[x, y, gamma, beta, saved], plane_groups(&p));
    } else {
        gpu.dispatch(Kernel::BatchNormMaxPoolForward, &p, &[x, x, y, gamma, beta, saved], plane_groups(&p));
    }
}

/// The gradient of MaxPool(BatchNorm(x)) with respect to BatchNorm's (unwritten) output, for
/// `batchnorm_backward` to take on from.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_maxpool_backward(
    gpu: &mut GpuBackend,
    pb: &BatchNormParams,
    p: &MaxPoolParams,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    saved: &GpuTensor,
    dy: &GpuTensor,
    dx: &GpuTensor,
) {
    let p = p.through(pb);
    assert_eq!((x.len, dy.len, dx.len), (p.x_len(), p.y_len(), p.x_len()), "batchnorm_maxpool_backward: {p:?}");
    let accumulate = (p.accumulate & ACCUMULATE_INPUT != 0) as u32;
    let kernel = if pairs(&p) {
        Kernel::BatchNormMaxPoolBackwardPairs
    } else if p.h.is_multiple_of(2) && p.w.is_multiple_of(2) {
        Kernel::BatchNormMaxPoolBackwardWindows
    } else {
        // Odd sizes: the per-element kernel has no BatchNorm reading; write the output after all.
        let normalised = gpu.scratch(p.x_len());
        batchnorm_normalise(gpu, pb, x, gamma, beta, saved, &normalised);
        return maxpool_backward(gpu, &p, &normalised, dy, dx);
    };
    let plane_sums = gpu.scratch(2 * (p.n * p.c) as usize);
    let bindings = [x, dy, dx, gamma, beta, saved, &plane_sums];
    gpu.dispatch_specialized(kernel, &[accumulate], &p, &bindings, plane_groups(&p));
    // Sums of what this call wrote: they are dx's own only where it was not added to.
    if accumulate == 0 {
        gpu.leave_stats(PlaneStats::GradientSums, dx, plane_sums);
    }
}
