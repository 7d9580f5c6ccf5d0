//! What a driver's own kernel set provides (`DriverKernels`); src/gpu/kernel_set.rs selects
//! one, and the backend tries it before the portable kernels.

use super::kernel::{Generator, PACKED_F32, Pipelines};
use super::{GpuBackend, GpuTensor, Kernel};
use crate::args::{Conv, Moments, ParamGrads};
use crate::fused::Fused;
use crate::ops::Conv2dParams;

/// The kernels of one driver, tried before the portable ones: each launcher returns whether it
/// took the op (false: the shape is not one it covers, and the portable kernels run it).
pub trait DriverKernels: Sync {
    /// Its name, as `SIAMESE_KERNELS` takes it and `info` shows it.
    fn name(&self) -> &'static str;
    /// Whether its kernels run on `adapter`.
    fn runs_on(&self, adapter: &wgpu::Adapter) -> bool;
    /// Device features its kernels need.
    fn features(&self) -> wgpu::Features;
    /// How every kernel, portable ones included, holds runs of four floats in storage
    /// (`Packed4`, `pack4`, `unpack4`), in place of shaders/packed_f32.wgsl.
    fn storage(&self) -> &'static str;
    /// The WGSL of one of its generated kernels (see `Shader::generated`) for `spec`.
    fn source(&self, kernel: Kernel, spec: &[u32]) -> String;
    /// Whether the shared kernels should take a CPU driver's shape: a plane or an image per
    /// invocation, looping over it (no index arithmetic per element, no barriers), and
    /// BatchNorm reduced plane by plane, its convs handing over plane moments and its fused
    /// backwards writing plane sums. Then every op of a run does (src/gpu/batchnorm.rs), so
    /// that fused and unfused ops give the same bits.
    fn plane_at_a_time(&self) -> bool;
    /// Starts compiling `kernels` in the background, where that shortens a first step.
    fn compile_ahead(&self, kernels: Vec<(Kernel, Vec<u32>)>) -> Option<Box<dyn Background>>;

    /// y = conv(x), with y's plane moments into `moments` where asked.
    fn conv2d_forward(
        &self,
        gpu: &mut GpuBackend,
        conv: Conv<GpuTensor>,
        xy: [&GpuTensor; 2],
        moments: Option<Moments<GpuTensor>>,
    ) -> bool;
    fn conv2d_backward_input(
        &self,
        gpu: &mut GpuBackend,
        p: &Conv2dParams,
        dy: &GpuTensor,
        w: &GpuTensor,
        dx: &GpuTensor,
    ) -> bool;
    fn conv2d_backward_weight(
        &self,
        gpu: &mut GpuBackend,
        p: &Conv2dParams,
        xdy: [&GpuTensor; 2],
        grads: ParamGrads<GpuTensor>,
    ) -> bool;
    /// A fused op, where it has kernels of its own for it.
    fn fused(&self, gpu: &mut GpuBackend, op: &Fused<GpuTensor>) -> bool;
}

impl GpuBackend {
    /// Whether the shared kernels run a CPU driver's shape, a plane or an image per invocation
    /// and BatchNorm reduced plane by plane (`DriverKernels::plane_at_a_time`), rather than a
    /// GPU's: an element (or window) per invocation, a workgroup per channel.
    pub fn plane_at_a_time(&self) -> bool {
        self.driver.is_some_and(|d| d.plane_at_a_time())
    }
}

/// Work a kernel set left running in the background; dropping it waits for it to end.
pub trait Background: Send {
    /// Asks it to end soon.
    fn stop(&self);
}

/// The pipeline registry of a selection: the driver's storage prelude and generated kernels,
/// or the portable set's.
pub(super) fn pipelines(driver: Option<&'static dyn DriverKernels>) -> Pipelines {
    let generate = driver.map(|d| std::sync::Arc::new(move |k: Kernel, s: &[u32]| d.source(k, s)) as Generator);
    Pipelines::new(driver.map_or(PACKED_F32, |d| d.storage()), generate)
}
