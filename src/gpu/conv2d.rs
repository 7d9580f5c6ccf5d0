//! Launchers of shaders/conv2d.wgsl: forward, input gradient, weight and bias gradients.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::Backend;
use crate::params::Conv2dParams;

/// Images per chunk in the first stage of the weight gradient (shaders/conv2d.wgsl CHUNK):
/// small enough for many parallel partial sums, large enough to keep the second stage short.
/// Chunks stay within one tower.
pub const WEIGHT_GRAD_CHUNK: usize = 4;

pub fn conv2d_forward(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    x: &GpuTensor,
    w: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
) {
    assert_eq!(
        (x.len, w.len, b.len, y.len),
        (p.x_len(), p.w_len(), p.c_out as usize, p.y_len()),
        "conv2d_forward: {p:?}"
    );
    gpu.dispatch(Kernel::Conv2dForward, p, &[x, w, b, y], GpuBackend::groups_for(p.y_len()));
}

pub fn conv2d_backward_input(gpu: &mut GpuBackend, p: &Conv2dParams, dy: &GpuTensor, w: &GpuTensor, dx: &GpuTensor) {
    assert_eq!((dy.len, w.len, dx.len), (p.y_len(), p.w_len(), p.x_len()), "conv2d_backward_input: {p:?}");
    gpu.dispatch(Kernel::Conv2dBackwardInput, p, &[dy, w, dx], GpuBackend::groups_for(p.x_len()));
}

/// Two stages, no atomics: partial sums per chunk of images, then the chunks in order.
pub fn conv2d_backward_weight(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    x: &GpuTensor,
    dy: &GpuTensor,
    dw: &GpuTensor,
    db: &GpuTensor,
) {
    assert_eq!(
        (x.len, dy.len, dw.len, db.len),
        (p.x_len(), p.y_len(), p.w_len(), p.c_out as usize),
        "conv2d_backward_weight: {p:?}"
    );
    let taps = p.w_len() + p.c_out as usize;
    let chunks = p.towers as usize * ((p.n / p.towers) as usize).div_ceil(WEIGHT_GRAD_CHUNK);
    let partial = gpu.scratch(chunks * taps);
    gpu.dispatch(Kernel::Conv2dBackwardWeightPartial, p, &[x, dy, &partial], GpuBackend::groups_for(chunks * taps));
    gpu.dispatch(Kernel::Conv2dBackwardWeightReduce, p, &[&partial, dw, db], GpuBackend::groups_for(taps));
}
