//! Launchers of shaders/batchnorm.wgsl: statistics, normalise, and backward (sums, then the
//! input gradient), in one of two shapes chosen by the kernel set (`plane_at_a_time`): a
//! workgroup per channel with a tree inside (portable), or plane by plane (a CPU driver's set,
//! whose convs hand over plane moments and whose fused backwards write plane sums). Every
//! BatchNorm of a run reduces the same way, so fused and unfused ops give the same bits.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::{Backend, Norm, NormGrads, Running};
use crate::ops::{ACCUMULATE_INPUT, BatchNormParams};

/// Invocations per workgroup of the per-plane and per-channel plane kernels: one lane-vector's
/// worth per workgroup would do, but planes are many (1,024 at the training shapes).
const SMALL_WORKGROUP: u32 = 64;

fn check(p: &BatchNormParams, what: &str, tensors: &[&GpuTensor]) {
    let len = p.len();
    assert!(tensors.iter().all(|t| t.len == len), "{what}: tensor sizes for {p:?}");
}

fn planes(p: &BatchNormParams) -> usize {
    (p.n * p.c) as usize
}

/// Workgroups of the elementwise passes: a vec4 per invocation where planes are whole vec4s,
/// else an element.
fn element_groups(p: &BatchNormParams) -> u32 {
    let per = if p.hw.is_multiple_of(4) { 4 } else { 1 };
    GpuBackend::groups_for(p.len() / per)
}

/// Workgroups of the one-invocation-per-plane kernels.
fn plane_groups(p: &BatchNormParams) -> u32 {
    (planes(p) as u32).div_ceil(SMALL_WORKGROUP)
}

/// Per-plane (mean, M2) of x as `p` reads it.
pub fn batchnorm_plane_moments(gpu: &mut GpuBackend, p: &BatchNormParams, x: &GpuTensor, moments: &GpuTensor) {
    check(p, "batchnorm_plane_moments", &[x]);
    assert_eq!(moments.len, 2 * planes(p), "batchnorm_plane_moments: moments");
    gpu.dispatch(Kernel::BatchNormPlaneStats, p, &[x, moments], plane_groups(p));
}

/// Train mode's statistics: each (tower, channel)'s mean and 1/std into `saved`, and the
/// running statistics' update. Plane by plane from x's plane moments (computed here where not
/// given); otherwise from x in one launch, whatever was given.
pub fn batchnorm_statistics(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    x: &GpuTensor,
    moments: Option<&GpuTensor>,
    saved: &GpuTensor,
    running: Running<GpuTensor>,
) {
    check(p, "batchnorm_statistics", &[x]);
    assert_eq!(saved.len, p.saved_len(), "batchnorm_statistics: saved");
    if !gpu.plane_at_a_time() {
        let bindings = [x, saved, running.mean, running.var];
        return gpu.dispatch(Kernel::BatchNormChannelStats, p, &bindings, p.c);
    }
    let plane_stats = match moments {
        Some(m) => m.clone(),
        None => {
            let m = gpu.scratch(2 * planes(p));
            batchnorm_plane_moments(gpu, p, x, &m);
            m
        }
    };
    let bindings = [&plane_stats, saved, running.mean, running.var];
    gpu.dispatch(Kernel::BatchNormStats, p, &bindings, p.c.div_ceil(SMALL_WORKGROUP));
}

/// Eval mode's statistics in `saved`'s layout, from the running ones.
pub fn batchnorm_running_statistics(
    gpu: &mut GpuBackend,
    p: &BatchNormParams,
    running: Running<GpuTensor>,
    saved: &GpuTensor,
) {
    assert_eq!(saved.len, p.saved_len(), "batchnorm_running_statistics: saved");
    let groups = p.c.div_ceil(SMALL_WORKGROUP);
    gpu.dispatch(Kernel::BatchNormRunningStats, p, &[running.mean, running.var, saved], groups);
}

/// BatchNorm's output written out into scratch: the fallback of the fused ops where no
/// kernel reads x through the normalisation.
pub fn batchnorm_output(gpu: &mut GpuBackend, norm: &Norm<GpuTensor>, x: &GpuTensor) -> GpuTensor {
    let y = gpu.scratch(norm.p.len());
    batchnorm_normalise(gpu, norm, x, &y);
    y
}

/// y = BatchNorm(x) with the statistics in `norm.saved`.
pub fn batchnorm_normalise(gpu: &mut GpuBackend, norm: &Norm<GpuTensor>, x: &GpuTensor, y: &GpuTensor) {
    let p = &norm.p;
    check(p, "batchnorm_normalise", &[x, y]);
    let groups = element_groups(p);
    gpu.dispatch(Kernel::BatchNormForward, p, &[x, norm.gamma, norm.beta, norm.saved, y], groups);
}

pub fn batchnorm_backward(
    gpu: &mut GpuBackend,
    norm: &Norm<GpuTensor>,
    x: &GpuTensor,
    dy: &GpuTensor,
    grads: NormGrads<GpuTensor>,
) {
    check(&norm.p, "batchnorm_backward", &[x, dy, grads.dx]);
    let sums = batchnorm_sums(gpu, norm, x, dy, grads.dgamma, grads.dbeta);
    batchnorm_backward_input(gpu, norm, x, dy, &sums, grads.dx);
}

/// The towers' (Σdy, Σdy·x̂) (laid out as `saved`), with dgamma and dbeta from them.
pub fn batchnorm_sums(
    gpu: &mut GpuBackend,
    norm: &Norm<GpuTensor>,
    x: &GpuTensor,
    dy: &GpuTensor,
    dgamma: &GpuTensor,
    dbeta: &GpuTensor,
) -> GpuTensor {
    if gpu.plane_at_a_time() {
        let plane_sums = batchnorm_backward_planes(gpu, norm, x, dy);
        batchnorm_backward_sums(gpu, &norm.p, &plane_sums, dgamma, dbeta)
    } else {
        batchnorm_channel_sums(gpu, norm, (x, dy, 0), dgamma, dbeta)
    }
}

/// The portable sums, of dy or (`pool_w` > 0, the pooled input's width) of the gradient
/// that MaxPool2d(2×2) of BatchNorm's output passes back from its own dy, followed by the
/// input gradient's coefficients (k, u, v) that they give (shaders/batchnorm.wgsl): what
/// the portable input gradient, and a conv reading its dy through this backward, take.
pub(super) fn batchnorm_channel_sums(
    gpu: &mut GpuBackend,
    norm: &Norm<GpuTensor>,
    (x, dy, pool_w): (&GpuTensor, &GpuTensor, u32),
    dgamma: &GpuTensor,
    dbeta: &GpuTensor,
) -> GpuTensor {
    let p = &norm.p;
    // (Σdy, Σdy·x̂), then (k, u, v): five numbers per (tower, channel).
    let sums = gpu.scratch(p.saved_len() / 2 * 5);
    let bindings = [x, dy, norm.gamma, norm.beta, norm.saved, &sums, dgamma, dbeta];
    gpu.dispatch_specialized(Kernel::BatchNormChannelSums, &[pool_w], p, &bindings, p.c);
    sums
}

/// The first pass of a plane by plane backward: each plane's (Σdy, Σdy·x̂).
pub fn batchnorm_backward_planes(
    gpu: &mut GpuBackend,
    norm: &Norm<GpuTensor>,
    x: &GpuTensor,
    dy: &GpuTensor,
) -> GpuTensor {
    let p = &norm.p;
    let plane_sums = gpu.scratch(2 * planes(p));
    gpu.dispatch(Kernel::BatchNormBackwardPlane, p, &[x, dy, norm.saved, &plane_sums], plane_groups(p));
    plane_sums
}

/// The last pass of a backward: dx from dy, x and the towers' sums.
pub fn batchnorm_backward_input(
    gpu: &mut GpuBackend,
    norm: &Norm<GpuTensor>,
    x: &GpuTensor,
    dy: &GpuTensor,
    sums: &GpuTensor,
    dx: &GpuTensor,
) {
    let p = &norm.p;
    let accumulate = (p.accumulate & ACCUMULATE_INPUT != 0) as u32;
    if gpu.plane_at_a_time() {
        let bindings = [x, dy, norm.gamma, norm.saved, sums, dx];
        gpu.dispatch_specialized(Kernel::BatchNormBackwardInputPlanes, &[accumulate], p, &bindings, plane_groups(p));
    } else {
        batchnorm_pooled_backward_input(gpu, norm, (x, dy, 0), sums, dx);
    }
}

/// The portable input gradient, of dy or (`pool_w` > 0) through a 2×2 max pool as in
/// [`batchnorm_channel_sums`].
pub(super) fn batchnorm_pooled_backward_input(
    gpu: &mut GpuBackend,
    norm: &Norm<GpuTensor>,
    (x, dy, pool_w): (&GpuTensor, &GpuTensor, u32),
    sums: &GpuTensor,
    dx: &GpuTensor,
) {
    let p = &norm.p;
    let accumulate = (p.accumulate & ACCUMULATE_INPUT != 0) as u32;
    let bindings = [x, dy, norm.gamma, norm.beta, norm.saved, sums, dx];
    let groups = element_groups(p);
    gpu.dispatch_specialized(Kernel::BatchNormBackwardInput, &[accumulate, pool_w], p, &bindings, groups);
}

/// The middle of a plane by plane backward: the towers' (Σdy, Σdy·x̂) from the planes' (laid
/// out as `saved`), and dgamma, dbeta from them.
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
