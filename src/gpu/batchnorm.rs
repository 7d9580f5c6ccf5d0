//! Launchers of shaders/batchnorm.wgsl: train forward (statistics, then normalise), eval
//! forward, and backward (per-channel sums, then the input gradient).

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::Backend;
use crate::params::BatchNormParams;

fn check(p: &BatchNormParams, what: &str, tensors: &[&GpuTensor]) {
    let len = p.len();
    assert!(tensors.iter().all(|t| t.len == len), "{what}: tensor sizes for {p:?}");
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    y: &GpuTensor,
    saved: &GpuTensor,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
) {
    check(p, "batchnorm_forward_train", &[x, y]);
    assert_eq!(saved.len, p.saved_len(), "batchnorm_forward_train: saved");
    gpu.dispatch(Kernel::BatchNormStats, p, &[x, saved, running_mean, running_var], p.c);
    gpu.dispatch(Kernel::BatchNormForward, p, &[x, gamma, beta, saved, y], GpuBackend::groups_for(p.len()));
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
    y: &GpuTensor,
) {
    check(p, "batchnorm_forward_eval", &[x, y]);
    gpu.dispatch(
        Kernel::BatchNormForwardEval,
        p,
        &[x, gamma, beta, running_mean, running_var, y],
        GpuBackend::groups_for(p.len()),
    );
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    dy: &GpuTensor,
    gamma: &GpuTensor,
    saved: &GpuTensor,
    dx: &GpuTensor,
    dgamma: &GpuTensor,
    dbeta: &GpuTensor,
) {
    check(p, "batchnorm_backward", &[x, dy, dx]);
    let sums = gpu.scratch(p.saved_len());
    gpu.dispatch(Kernel::BatchNormBackwardReduce, p, &[x, dy, saved, &sums, dgamma, dbeta], p.c);
    gpu.dispatch(Kernel::BatchNormBackwardInput, p, &[x, dy, gamma, saved, &sums, dx], GpuBackend::groups_for(p.len()));
}
