//! Launcher of shaders/optim.wgsl: one Adam launch over the whole flat parameter buffer.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::params::{AdamConfig, AdamParams};

pub fn adam_step(
    gpu: &mut GpuBackend,
    cfg: &AdamConfig,
    t: u64,
    params: &GpuTensor,
    grads: &GpuTensor,
    m: &GpuTensor,
    v: &GpuTensor,
) {
    assert!(grads.len == params.len && m.len == params.len && v.len == params.len, "adam_step: buffer sizes");
    let p = AdamParams::new(params.len, cfg, t);
    gpu.dispatch(Kernel::AdamStep, &p, &[params, grads, m, v], GpuBackend::groups_for(params.len));
}
