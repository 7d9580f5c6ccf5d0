//! Launcher of shaders/optim.wgsl: one Adam launch over the whole flat parameter buffer, which
//! also sums the conv weight-gradient partials waiting for it (src/gpu/weight_sums.rs) and
//! writes the conv weights it updates into their packs (src/gpu/weight_packs.rs).

use bytemuck::{Pod, Zeroable};

use super::weight_packs::PackJobs;
use super::weight_sums::WeightSumsParams;
use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::Backend;
use crate::ops::{AdamConfig, AdamParams};

/// shaders/optim.wgsl AdamLaunch: `adam_step`'s binding 0.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdamLaunch {
    adam: AdamParams,
    sums: WeightSumsParams,
    packs: PackJobs,
}

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
    // The sums waiting on `grads` are Adam's to do on a GPU: one launch fewer. A CPU driver's
    // set keeps them in their own launch, spread evenly over its threads (on llvmpipe 0.15 +
    // 0.08 ms, against 0.21-0.30 ms for Adam with them: no gain to measure). Where Adam has
    // none (SUMS = 0), the scalars (read only, as partials are) stand in for the partials.
    let taken = if gpu.plane_at_a_time() { None } else { gpu.take_weight_sums_in(grads) };
    // The packs made from `params` are remade as Adam writes the weights, instead of by a
    // launch of their own before the next conv (where PACKS = 0, a placeholder is bound).
    let packs = gpu.packs_within(params);
    let spec = [taken.is_some() as u32, packs.is_some() as u32];
    let (sums, partials) = taken.unwrap_or_else(|| (Default::default(), step.clone()));
    let (jobs, packed) = match &packs {
        Some(p) => (p.jobs, p.packed.clone()),
        None => (PackJobs::none(), gpu.scratch(4)),
    };
    let launch = AdamLaunch { adam: AdamParams::new(params.len, cfg), sums, packs: jobs };
    let bindings = [&partials, params, grads, m, v, &step, &packed];
    gpu.dispatch_specialized(Kernel::AdamStep, &spec, &launch, &bindings, GpuBackend::groups_for(params.len));
    if let Some(p) = &packs {
        gpu.packs_written(p);
    }
    gpu.adam_recorded = true;
}
