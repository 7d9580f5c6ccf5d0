//! Launchers of shaders/contrastive.wgsl: the contrastive loss, forward and backward, alone
//! and with the pair distance in front.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::fused::PairContrastiveBackward;
use crate::ops::{ContrastiveParams, PairContrastiveParams, PairDistanceParams};

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

/// Distance and loss in one workgroup (the same bits as pair_distance_forward, then
/// contrastive_forward).
pub fn pair_contrastive_forward(
    gpu: &mut GpuBackend,
    (pd, pc): (&PairDistanceParams, &ContrastiveParams),
    (x, t): (&GpuTensor, &GpuTensor),
    d: &GpuTensor,
    loss: &GpuTensor,
) {
    let q = PairContrastiveParams::new(pd, pc);
    let (n, x_len) = (q.n as usize, 2 * (q.n * q.d) as usize);
    assert_eq!((x.len, t.len, d.len, loss.len), (x_len, n, n, 1), "pair_contrastive_forward: {q:?}");
    gpu.dispatch(Kernel::PairContrastiveForward, &q, &[x, t, d, loss], 1);
}

/// x's gradient from the loss's, the distances' never written.
pub fn pair_contrastive_backward(gpu: &mut GpuBackend, op: &PairContrastiveBackward<GpuTensor>) {
    let PairContrastiveBackward { pd, pc, x, d, t, dloss, dx } = *op;
    let (pd, pc) = (&pd, &pc);
    let q = PairContrastiveParams::new(pd, pc);
    let (n, x_len) = (q.n as usize, 2 * (q.n * q.d) as usize);
    assert_eq!((x.len, d.len, t.len, dloss.len, dx.len), (x_len, n, n, 1, x_len), "pair_contrastive_backward: {q:?}");
    gpu.dispatch(Kernel::PairContrastiveBackward, &q, &[x, d, t, dloss, dx], GpuBackend::groups_for(x_len));
}
