//! Launchers of shaders/batchnorm.wgsl: train forward (plane statistics, tower statistics,
//! normalise), eval forward (the running statistics, normalise), and backward (plane sums,
//! tower sums, input gradient).

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::Backend;
use crate::params::{ACCUMULATE_INPUT, BatchNormParams};

/// Invocations per workgroup of the per-plane and per-channel kernels: one lane-vector's
/// worth per workgroup would do, but planes are many (1,024 at the training shapes).
const SMALL_WORKGROUP: u32 = 64;

fn check(p: &BatchNormParams, what: &str, tensors: &[&GpuTensor]) {
    let len = p.len();
    assert!(tensors.iter().all(|t| t.len == len), "{what}: tensor sizes for {p:?}");
}

fn planes(p: &BatchNormParams) -> usize {
    (p.n * p.c) as usize
}

/// Workgroups of the one-invocation-per-plane kernels.
fn plane_groups(p: &BatchNormParams) -> u32 {
    (planes(p) as u32).div_ceil(SMALL_WORKGROUP)
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
    batchnorm_statistics(gpu, p, x, saved, running_mean, running_var);
    batchnorm_normalise(gpu, p, x, gamma, beta, saved, y);
}

/// The first half of a train-mode forward: each (tower, channel)'s mean and 1/std into
/// `saved`, and the running statistics' update.
pub fn batchnorm_statistics(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    saved: &GpuTensor,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
) {
    check(p, "batchnorm_statistics", &[x]);
    assert_eq!(saved.len, p.saved_len(), "batchnorm_statistics: saved");
    // The conv that wrote x may have computed them already (GpuBackend::relu_moments).
    let plane_stats = match gpu.take_relu_moments(x).filter(|_| p.relu_input != 0) {
        Some(stats) => stats,
        None => {
            let stats = gpu.scratch(2 * planes(p));
            gpu.dispatch(Kernel::BatchNormPlaneStats, p, &[x, &stats], plane_groups(p));
            stats
        }
    };
    gpu.dispatch(
        Kernel::BatchNormStats,
        p,
        &[&plane_stats, saved, running_mean, running_var],
        p.c.div_ceil(SMALL_WORKGROUP),
    );
}

/// Eval mode's statistics in `saved`'s layout, from the running ones.
pub fn batchnorm_running_statistics(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
    saved: &GpuTensor,
) {
    assert_eq!(saved.len, p.saved_len(), "batchnorm_running_statistics: saved");
    let groups = p.c.div_ceil(SMALL_WORKGROUP);
    gpu.dispatch(Kernel::BatchNormRunningStats, p, &[running_mean, running_var, saved], groups);
}

/// BatchNorm's output written out into scratch, from the statistics in `saved`: the fallback
/// of the fused ops where no kernel reads x through the normalisation.
pub fn batchnorm_output(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    saved: &GpuTensor,
) -> GpuTensor {
    let y = gpu.scratch(p.len());
    batchnorm_normalise(gpu, p, x, gamma, beta, saved, &y);
    y
}

/// The second half: y = BatchNorm(x) with the statistics in `saved`.
pub fn batchnorm_normalise(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    saved: &GpuTensor,
    y: &GpuTensor,
) {
    check(p, "batchnorm_normalise", &[x, y]);
    gpu.dispatch(Kernel::BatchNormForward, p, &[x, gamma, beta, saved, y], plane_groups(p));
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
    let saved = gpu.scratch(p.saved_len());
    batchnorm_running_statistics(gpu, p, running_mean, running_var, &saved);
    batchnorm_normalise(gpu, p, x, gamma, beta, &saved, y);
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
    let plane_sums = batchnorm_backward_planes(gpu, p, x, dy, saved);
    let sums = batchnorm_backward_sums(gpu, p, &plane_sums, dgamma, dbeta);
    batchnorm_backward_input(gpu, p, x, dy, gamma, saved, &sums, dx);
}

/// The first pass of a backward: each plane's (Σdy, Σdy·x̂).
pub fn batchnorm_backward_planes(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    dy: &GpuTensor,
    saved: &GpuTensor,
) -> GpuTensor {
    let plane_sums = gpu.scratch(2 * planes(p));
    gpu.dispatch(Kernel::BatchNormBackwardPlane, p, &[x, dy, saved, &plane_sums], plane_groups(p));
    plane_sums
}

/// The last pass of a backward: dx from dy, x and the towers' sums.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_input(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    dy: &GpuTensor,
    gamma: &GpuTensor,
    saved: &GpuTensor,
    sums: &GpuTensor,
    dx: &GpuTensor,
) {
    let accumulate = (p.accumulate & ACCUMULATE_INPUT != 0) as u32;
    let bindings = [x, dy, gamma, saved, sums, dx];
    gpu.dispatch_specialized(Kernel::BatchNormBackwardInput, &[accumulate], p, &bindings, plane_groups(p));
}

/// The middle of a backward: the towers' (Σdy, Σdy·x̂) from the planes' (laid out as `saved`),
/// and dgamma, dbeta from them.
pub fn batchnorm_backward_sums(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    plane_sums: &GpuTensor,
    dgamma: &GpuTensor,
    dbeta: &GpuTensor,
) -> GpuTensor {
    let sums = gpu.scratch(p.saved_len());
    gpu.dispatch(
        Kernel::BatchNormBackwardReduce,
        p,
        &[plane_sums, &sums, dgamma, dbeta],
        p.c.div_ceil(SMALL_WORKGROUP),
    );
    sums
}
