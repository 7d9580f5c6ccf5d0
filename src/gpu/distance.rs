//! Launchers of shaders/distance.wgsl: distance between the stacked towers, forward and backward.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::ops::PairDistanceParams;

pub fn pair_distance_forward(gpu: &mut GpuBackend, p: &PairDistanceParams, x: &GpuTensor, d: &GpuTensor) {
    assert_eq!((x.len, d.len), (2 * (p.n * p.d) as usize, p.n as usize), "pair_distance_forward: {p:?}");
    gpu.dispatch(Kernel::PairDistanceForward, p, &[x, d], GpuBackend::groups_for(p.n as usize));
}

pub fn pair_distance_backward(
    gpu: &mut GpuBackend,
    p: &PairDistanceParams,
    x: &GpuTensor,
    d: &GpuTensor,
    dd: &GpuTensor,
    dx: &GpuTensor,
) {
    assert_eq!((x.len, dx.len), (2 * (p.n * p.d) as usize, x.len), "pair_distance_backward: {p:?}");
    gpu.dispatch(Kernel::PairDistanceBackward, p, &[x, d, dd, dx], GpuBackend::groups_for(x.len));
}
