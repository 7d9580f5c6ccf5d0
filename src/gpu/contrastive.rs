//! Launchers of shaders/contrastive.wgsl: the contrastive loss, forward and backward.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::params::ContrastiveParams;

/// One workgroup sums the whole batch, so the mean is the same bits on every run.
pub fn contrastive_forward(
    gpu: &mut GpuBackend,
    p: &ContrastiveParams,
    d: &GpuTensor,
    t: &GpuTensor,
    loss: &GpuTensor,
) {
    assert_eq!((d.len, t.len, loss.len), (p.n as usize, p.n as usize, 1), "contrastive_forward: {p:?}");
    gpu.dispatch(Kernel::ContrastiveForward, p, &[d, t, loss], 1);
}

pub fn contrastive_backward(
    gpu: &mut GpuBackend,
    p: &ContrastiveParams,
    d: &GpuTensor,
    t: &GpuTensor,
    dloss: &GpuTensor,
    dd: &GpuTensor,
) {
    assert_eq!(
        (d.len, t.len, dloss.len, dd.len),
        (p.n as usize, p.n as usize, 1, p.n as usize),
        "contrastive_backward: {p:?}"
    );
    gpu.dispatch(Kernel::ContrastiveBackward, p, &[d, t, dloss, dd], GpuBackend::groups_for(p.n as usize));
}
