//! Launchers of shaders/linear.wgsl: the fully connected layer, forward and backward.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::{Backend, ParamGrads};
use crate::ops::LinearParams;

/// Outputs the `_narrow` kernels take (shaders/linear.wgsl, NARROW): their sums in registers.
const NARROW: u32 = 16;

/// Invocations per workgroup of the `_narrow` kernels (as in shaders/linear.wgsl): a CPU
/// driver runs a workgroup on one thread, so small ones let its threads share even the weight
/// gradient's D_IN + 1 invocations (0.52 → 0.36 ms from 64 at the model's shape).
const NARROW_WORKGROUP: u32 = 16;

/// The `_narrow` kernels' constants (D_IN, D_OUT), where they cover the shape.
fn narrow(p: &LinearParams) -> Option<[u32; 2]> {
    (p.d_out <= NARROW).then_some([p.d_in, p.d_out])
}

fn sizes(p: &LinearParams) -> (usize, usize, usize) {
    let (n, i, o) = (p.n as usize, p.d_in as usize, p.d_out as usize);
    (n * i, o * i, n * o)
}

/// Workgroups of the one-invocation-per-row kernels (one grid dimension: a batch of at most
/// 4 million rows).
fn row_groups(p: &LinearParams) -> u32 {
    let groups = p.n.div_ceil(NARROW_WORKGROUP);
    assert!(groups <= 65_535, "linear: a batch of {} rows", p.n);
    groups
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
    match narrow(p) {
        Some(spec) => gpu.dispatch_specialized(Kernel::LinearForwardNarrow, &spec, p, &[x, w, b, y], row_groups(p)),
        None => gpu.dispatch(Kernel::LinearForward, p, &[x, w, b, y], GpuBackend::groups_for(y_len)),
    }
}

/// dx (where given), dw and db: at the narrow shapes one launch, columns of dw then rows of dx.
pub fn linear_backward(
    gpu: &mut GpuBackend,
    p: &LinearParams,
    (x, w, dy): (&GpuTensor, &GpuTensor, &GpuTensor),
    dx: Option<&GpuTensor>,
    grads: ParamGrads<GpuTensor>,
) {
    let ParamGrads { dw, db } = grads;
    let (x_len, w_len, y_len) = sizes(p);
    assert_eq!(
        (x.len, w.len, dy.len, dx.map_or(x_len, |t| t.len), dw.len, db.len),
        (x_len, w_len, y_len, x_len, w_len, p.d_out as usize),
        "linear_backward: {p:?}"
    );
    match narrow(p) {
        Some(spec) => {
            // The rows of dx are part of the launch: without a dx they go to scratch.
            let scratch;
            let dx = match dx {
                Some(dx) => dx,
                None => {
                    scratch = gpu.scratch(x_len);
                    &scratch
                }
            };
            let groups = (p.d_in + 1).div_ceil(NARROW_WORKGROUP) + row_groups(p);
            gpu.dispatch_specialized(Kernel::LinearBackwardNarrow, &spec, p, &[x, w, dy, dx, dw, db], groups)
        }
        None => {
            if let Some(dx) = dx {
                gpu.dispatch(Kernel::LinearBackwardInput, p, &[x, w, dy, dx], GpuBackend::groups_for(x_len));
            }
            let groups = GpuBackend::groups_for(w_len + p.d_out as usize);
            gpu.dispatch(Kernel::LinearBackwardWeight, p, &[x, dy, dw, db], groups)
        }
    }
}
