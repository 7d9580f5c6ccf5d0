//! Launcher of shaders/optim.wgsl: one Adam launch over the whole flat parameter buffer.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::Backend;
use crate::ops::{AdamConfig, AdamParams};

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
    // The step's scalars go to one small buffer, written in place, so that no step makes a
    // buffer or a bind group. The write lands before the next submit's commands: an Adam
    // launch recorded but not yet submitted would see it, so that one is submitted first (a
    // training step's uploads have already submitted the step before).
    if gpu.adam_recorded {
        gpu.flush();
    }
    let step = match &gpu.adam_scalars {
        Some(step) => step.clone(),
        None => {
            let step = gpu.zeros(4);
            gpu.adam_scalars = Some(step.clone());
            step
        }
    };
    let (step_size, bc2_sqrt) = cfg.step_scalars(t);
    let scalars = [step_size as f32, bc2_sqrt as f32, 0.0, 0.0];
    gpu.ctx.queue.write_buffer(&step.buffer, (step.offset * 4) as u64, bytemuck::cast_slice(&scalars));
    let p = AdamParams::new(params.len, cfg);
    gpu.dispatch(Kernel::AdamStep, &p, &[params, grads, m, v, &step], GpuBackend::groups_for(params.len));
    gpu.adam_recorded = true;
}
