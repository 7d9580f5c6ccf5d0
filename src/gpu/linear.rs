//! Launchers of shaders/linear.wgsl: the fully connected layer, forward and backward.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::{Backend, ParamGrads};
use crate::ops::LinearParams;

/// Outputs the `_narrow` kernels take (shaders/linear.wgsl, NARROW): their sums in registers.
const NARROW: u32 = 16;

/// Invocations per workgroup of the `_narrow` kernels (shaders/linear.wgsl NARROW_WG) on a CPU
/// driver, which runs a workgroup on one thread: small ones let its threads share even the
/// weight gradient's D_IN + 1 invocations (0.52 → 0.36 ms from 64 at the model's shape).
const CPU_NARROW_WORKGROUP: u32 = 16;
/// And on a GPU: whole SIMD groups.
const GPU_NARROW_WORKGROUP: u32 = 64;

/// The `_narrow` kernels' shape, where they cover the op.
struct Narrow {
    d_in: u32,
    d_out: u32,
    /// Invocations per workgroup.
    group: u32,
    /// One invocation per element of dx rather than per row (a GPU's shape).
    dx_elements: bool,
}

impl Narrow {
    fn of(gpu: &GpuBackend, p: &LinearParams) -> Option<Self> {
        let cpu = gpu.plane_at_a_time();
        let group = if cpu { CPU_NARROW_WORKGROUP } else { GPU_NARROW_WORKGROUP };
        (p.d_out <= NARROW).then_some(Narrow { d_in: p.d_in, d_out: p.d_out, group, dx_elements: !cpu })
    }

    /// Workgroups of one invocation per row of the batch (one grid dimension: a batch of at
    /// most 4 million rows).
    fn row_groups(&self, p: &LinearParams) -> u32 {
        let groups = p.n.div_ceil(self.group);
        assert!(groups <= 65_535, "linear: a batch of {} rows", p.n);
        groups
    }
}

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
    match Narrow::of(gpu, p) {
        Some(n) => {
            let spec = [n.d_in, n.d_out, n.group];
            gpu.dispatch_specialized(Kernel::LinearForwardNarrow, &spec, p, &[x, w, b, y], n.row_groups(p))
        }
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
    match Narrow::of(gpu, p) {
        Some(n) => {
            // The rows of dx are part of the launch: without a dx they go to scratch.
            let scratch;
            let dx = match dx {
                Some(dx) => dx,
                None => {
                    scratch = gpu.scratch(x_len);
                    &scratch
                }
            };
            let dx_groups = if n.dx_elements { (x_len as u32).div_ceil(n.group) } else { n.row_groups(p) };
            let groups = (p.d_in + 1).div_ceil(n.group) + dx_groups;
            let spec = [n.d_in, n.d_out, n.group, n.dx_elements as u32];
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
