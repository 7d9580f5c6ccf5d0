//! Launchers of shaders/linear.wgsl: the fully connected layer, forward and backward.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::params::LinearParams;

fn sizes(p: &LinearParams) -> (usize, usize, usize) {
    let (n, i, o) = (p.n as usize, p.d_in as usize, p.d_out as usize);
    (n * i, o * i, n * o)
}

pub fn linear_forward(
    gpu: &mut GpuBackend,
    p: &LinearParams,
    x: &GpuTensor,
    w: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
) {
    let (x_len, w_len, y_len) = sizes(p);
    assert_eq!((x.len, w.len, b.len, y.len), (x_len, w_len, p.d_out as usize, y_len), "linear_forward: {p:?}");
    gpu.dispatch(Kernel::LinearForward, p, &[x, w, b, y], GpuBackend::groups_for(y_len));
}

pub fn linear_backward_input(gpu: &mut GpuBackend, p: &LinearParams, dy: &GpuTensor, w: &GpuTensor, dx: &GpuTensor) {
    let (x_len, w_len, y_len) = sizes(p);
    assert_eq!((dy.len, w.len, dx.len), (y_len, w_len, x_len), "linear_backward_input: {p:?}");
    gpu.dispatch(Kernel::LinearBackwardInput, p, &[dy, w, dx], GpuBackend::groups_for(x_len));
}

pub fn linear_backward_weight(
    gpu: &mut GpuBackend,
    p: &LinearParams,
    x: &GpuTensor,
    dy: &GpuTensor,
    dw: &GpuTensor,
    db: &GpuTensor,
) {
    let (x_len, w_len, y_len) = sizes(p);
    assert_eq!(
        (x.len, dy.len, dw.len, db.len),
        (x_len, y_len, w_len, p.d_out as usize),
        "linear_backward_weight: {p:?}"
    );
    gpu.dispatch(Kernel::LinearBackwardWeight, p, &[x, dy, dw, db], GpuBackend::groups_for(w_len + p.d_out as usize));
}
