//! Launchers of shaders/contrastive.wgsl: the contrastive loss, forward and backward, alone
//! and with the pair distance in front.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::lower;
use crate::fused::{Fused, LinearPairContrastiveForward, PairContrastiveBackward};
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

/// Embedding sizes the loss head's kernel holds in registers (shaders/contrastive.wgsl
/// `embedding`).
const HEAD_OUT: u32 = 16;

/// The loss head's forward, the linear layer's output still written: on a GPU one workgroup
/// (the same bits as the linear layer's narrow kernel, then `pair_contrastive_forward`); on a
/// CPU driver's set, whose threads share the linear layer's rows better apart, and for wider
/// embeddings, the two launches.
pub fn linear_pair_contrastive_forward(gpu: &mut GpuBackend, op: LinearPairContrastiveForward<GpuTensor>) {
    let LinearPairContrastiveForward { linear: p, x, w, b, y, pd, pc, t, d, loss } = op;
    if gpu.plane_at_a_time() || p.d_out > HEAD_OUT {
        return lower(gpu, Fused::LinearPairContrastiveForward(op));
    }
    let q = PairContrastiveParams::new(&pd, &pc);
    let (rows, d_in, d_out) = (p.n as usize, p.d_in as usize, p.d_out as usize);
    assert_eq!((rows, d_out), (2 * q.n as usize, q.d as usize), "linear_pair_contrastive_forward: {p:?} {q:?}");
    let (n, y_len) = (q.n as usize, rows * d_out);
    assert_eq!(
        (x.len, w.len, b.len, t.len, y.len, d.len, loss.len),
        (rows * d_in, d_out * d_in, d_out, n, y_len, n, 1),
        "linear_pair_contrastive_forward: {p:?}"
    );
    let spec = [p.d_in, p.d_out, (p.relu_input != 0) as u32];
    gpu.dispatch_specialized(Kernel::LinearPairContrastiveForward, &spec, &q, &[x, w, b, t, y, d, loss], 1);
}
