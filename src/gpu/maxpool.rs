//! Launchers of shaders/maxpool.wgsl: 2×2 max pooling, forward and backward.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::params::{ACCUMULATE_INPUT, MaxPoolParams};

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
