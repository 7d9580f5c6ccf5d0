//! Launchers of the subgroup conv kernels, and llvmpipe's `DriverKernels`: which convs they take
//! (4 or 8 output channels, or 1; "same" padding; see `Shape::supported`), the rest going to the
//! portable kernels through the backend's own entries.
//!
//! They also run Conv2d(BatchNorm(x)) in training reading x through the normalisation, so that
//! BatchNorm's output is never written (the portable kernels write it), and its backward with
//! BatchNorm's plane sums from registers.

use super::{IMAGES, Mode, Shape, Through, chunks};
use crate::backend::{Backend, Conv, DeviceTensor, Moments, Norm, ParamGrads, VIEW_ALIGN};
use crate::fused::{BatchNormConv2dBackward, Conv2dBatchNormConv2dBackward, Fused};
use crate::gpu::batchnorm::{
    batchnorm_backward_input, batchnorm_backward_planes, batchnorm_backward_sums, batchnorm_plane_moments,
};
use crate::gpu::conv2d::{first_backward, inner_backward, weight_grad_of_normalised};
use crate::gpu::driver::{Background, DriverKernels};
use crate::gpu::{GpuBackend, GpuTensor, Kernel, Work};
use crate::ops::{ACCUMULATE_INPUT, Conv2dParams};

/// The kernels of Mesa's llvmpipe (8-lane subgroups): see the module docs of src/gpu/llvmpipe/.
pub struct Llvmpipe;

const FEATURES: wgpu::Features = wgpu::Features::SUBGROUP.union(wgpu::Features::SHADER_INT64);

impl Background for super::compile_ahead::CompileAhead {
    fn stop(&self) {
        super::compile_ahead::CompileAhead::stop(self)
    }
}

impl DriverKernels for Llvmpipe {
    fn name(&self) -> &'static str {
        "llvmpipe"
    }
    /// Subgroups of exactly [`super::LANES`] lanes, and 64-bit integers (rows held as u64 pairs),
    /// which GLSL lacks: never through the GL backend.
    fn runs_on(&self, adapter: &wgpu::Adapter) -> bool {
        let info = adapter.get_info();
        info.backend != wgpu::Backend::Gl
            && adapter.features().contains(FEATURES)
            && info.subgroup_min_size == super::LANES
            && info.subgroup_max_size == super::LANES
    }
    fn features(&self) -> wgpu::Features {
        FEATURES
    }
    fn storage(&self) -> &'static str {
        super::STORAGE
    }
    fn source(&self, kernel: Kernel, spec: &[u32]) -> String {
        super::source(kernel, spec)
    }
    /// llvmpipe compiles each kernel at its first dispatch: see compile_ahead.rs.
    fn plane_at_a_time(&self) -> bool {
        true
    }
    fn compile_ahead(&self, kernels: Vec<(Kernel, Vec<u32>)>) -> Option<Box<dyn Background>> {
        Some(Box::new(super::compile_ahead::CompileAhead::start(kernels)))
    }

    fn conv2d_forward(
        &self,
        gpu: &mut GpuBackend,
        conv: Conv<GpuTensor>,
        [x, y]: [&GpuTensor; 2],
        moments: Option<Moments<GpuTensor>>,
    ) -> bool {
        let Some(shape) = rows_shape(&conv.p, false) else { return false };
        // Without a BatchNorm its three bindings hold anything: the kernel declares none.
        let w = conv.w;
        rows_forward(gpu, &conv.p, shape, [x, w, conv.b, y], (Through::Plain, [w; 3]), moments);
        true
    }
    fn conv2d_backward_input(
        &self,
        gpu: &mut GpuBackend,
        p: &Conv2dParams,
        dy: &GpuTensor,
        w: &GpuTensor,
        dx: &GpuTensor,
    ) -> bool {
        let Some(shape) = rows_shape(p, true) else { return false };
        // No bias in the input gradient; `w` fills the unused bias binding.
        conv2d_rows(gpu, p, shape, Mode::InputGrad, [dy, w, w, dx], (Through::Plain, [w; 3]), None);
        true
    }
    fn conv2d_backward_weight(
        &self,
        gpu: &mut GpuBackend,
        p: &Conv2dParams,
        [x, dy]: [&GpuTensor; 2],
        grads: ParamGrads<GpuTensor>,
    ) -> bool {
        rows_shape(p, false).is_some_and(|shape| {
            conv2d_backward_weight_rows(gpu, p, shape, (x, WeightThrough::Plain, dy), grads);
            true
        })
    }

    fn fused(&self, gpu: &mut GpuBackend, op: &Fused<GpuTensor>) -> bool {
        match op {
            Fused::BatchNormConv2dForward { norm, conv, x, y, moments } => {
                let Some(shape) = through_shape(&conv.p) else { return false };
                let through = (Through::batchnorm(norm.p.relu_input != 0), [norm.gamma, norm.beta, norm.saved]);
                rows_forward(gpu, &conv.p, shape, [x, conv.w, conv.b, y], through, *moments);
                true
            }
            Fused::BatchNormConv2dBackward(op) => {
                let dn = gpu.scratch(op.norm.p.len());
                let sums = batchnorm_conv2d_backward_head(gpu, op, &dn);
                batchnorm_backward_input(gpu, &op.norm, op.x, &dn, &sums, op.grads.dx);
                true
            }
            Fused::Conv2dBatchNormConv2dBackward(op) => {
                conv2d_batchnorm_conv2d_backward(gpu, op);
                true
            }
            // Conv2dMomentsForward reaches `conv2d_forward`; the others have no conv.
            _ => false,
        }
    }
}

/// The subgroup kernels' shape for this conv, if they cover it (`transpose`: the input
/// gradient, which reads the conv's outputs and writes its inputs).
fn rows_shape(p: &Conv2dParams, transpose: bool) -> Option<Shape> {
    let (ic, oc) = if transpose { (p.c_out, p.c_in) } else { (p.c_in, p.c_out) };
    let shape = Shape { ic, oc, h: p.h, w: p.w, k: p.k };
    (p.pad == p.k / 2 && shape.supported()).then_some(shape)
}

/// The shape for a conv that reads its input through a BatchNorm, or whose weight gradient
/// reads dy through a BatchNorm's backward, if covered: several output channels (each lane
/// group's images are of one tower, whose normalisation it takes).
fn through_shape(p: &Conv2dParams) -> Option<Shape> {
    rows_shape(p, false).filter(|s| s.oc != 1)
}

/// A BatchNorm's backward that a conv's weight gradient reads its dy through: dy is the
/// gradient of BatchNorm's input `x`, from that of its output (the binding of dy) and the
/// towers' `sums` (Σdy, Σdy·x̂ of the output's gradient).
struct GradThrough<'a> {
    x: &'a GpuTensor,
    norm: Norm<'a, GpuTensor>,
    sums: &'a GpuTensor,
}

/// What a conv's weight gradient reads through: its input x through a BatchNorm, or its dy
/// through a BatchNorm's backward.
enum WeightThrough<'a> {
    Plain,
    Input(Norm<'a, GpuTensor>),
    Grad(GradThrough<'a>),
}

/// `conv2d_rows`: one subgroup per `8 / OC` groups of [`IMAGES`] images, reading x through
/// `through` (its tensors at bindings 6…). A forward of 4 or 8 output channels writes the
/// plane moments of ReLU(y) beside y, into `stats` where given; `InputGradSums` writes
/// BatchNorm's backward plane sums there. Returns the stats tensor.
fn conv2d_rows(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    s: Shape,
    mode: Mode,
    bufs: [&GpuTensor; 4],
    (through, bn): (Through, [&GpuTensor; 3]),
    stats: Option<&GpuTensor>,
) -> GpuTensor {
    let accumulate = mode != Mode::Forward && (p.accumulate & ACCUMULATE_INPUT) != 0;
    let spec = [s.ic, s.oc, s.h, s.w, s.k, mode as u32, accumulate as u32, through as u32];
    let groups = chunks(p.n, p.towers).div_ceil(s.groups());
    let flops = Some(Work::Flops(2.0 * p.macs() as f64));
    let with_stats = (mode == Mode::Forward && s.oc != 1) || mode == Mode::InputGradSums;
    let stats = match stats {
        Some(t) => t.clone(),
        None => gpu.scratch(if with_stats { 2 * (p.n * s.oc) as usize } else { 1 }),
    };
    let [x, w, b, y] = bufs;
    gpu.dispatch_work(Kernel::Conv2dRows, &spec, p, &[x, w, b, y, &stats, bn[0], bn[1], bn[2]], groups, flops);
    stats
}

/// A forward, with y's plane moments into `moments` where asked: from the kernel where it
/// computes them (of ReLU(y), 4 or 8 output channels), else after.
fn rows_forward(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    s: Shape,
    bufs: [&GpuTensor; 4],
    through: (Through, [&GpuTensor; 3]),
    moments: Option<Moments<GpuTensor>>,
) {
    let from_kernel = moments.filter(|m| s.oc != 1 && m.p.relu_input != 0);
    conv2d_rows(gpu, p, s, Mode::Forward, bufs, through, from_kernel.map(|m| m.out));
    if let (Some(m), None) = (moments, from_kernel) {
        batchnorm_plane_moments(gpu, &m.p, bufs[3], m.out);
    }
}

/// The weight gradient, reading x or dy as `through` says; two stages, no atomics.
fn conv2d_backward_weight_rows(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    shape: Shape,
    (x, through, dy): (&GpuTensor, WeightThrough, &GpuTensor),
    grads: ParamGrads<GpuTensor>,
) {
    let p = Conv2dParams { chunk: IMAGES, ..*p };
    let chunks = chunks(p.n, p.towers);
    let partial = gpu.weight_partials(chunks as usize * (p.w_len() + p.c_out as usize));
    let spec = |relu: Option<bool>| relu.map_or(Through::Plain, Through::batchnorm) as u32;
    // Bindings 4… hold the BatchNorm that x or dy is read through, if any.
    let (x_relu, dy_relu, bn) = match through {
        WeightThrough::Input(n) => (Some(n.p.relu_input != 0), None, [n.gamma, n.beta, n.saved, dy]),
        WeightThrough::Grad(t) => (None, Some(t.norm.p.relu_input != 0), [t.x, t.norm.gamma, t.norm.saved, t.sums]),
        WeightThrough::Plain => (None, None, [dy; 4]),
    };
    let spec = [shape.ic, shape.oc, shape.h, shape.w, shape.k, spec(x_relu), spec(dy_relu)];
    let flops = Some(Work::Flops(2.0 * p.macs() as f64));
    let groups = chunks.div_ceil(shape.groups());
    let bindings = [x, dy, &partial, bn[0], bn[1], bn[2], bn[3]];
    gpu.dispatch_work(Kernel::Conv2dBackwardWeightRows, &spec, &p, &bindings, groups, flops);
    gpu.sum_weight_partials(&p, &partial, grads);
}

/// The input gradient dx of a conv that reads BatchNorm(x) (so dx is BatchNorm's dy), written,
/// with the per-plane sums BatchNorm's backward takes from it (`InputGradSums`), where covered;
/// None where not (dx is not written then).
fn conv2d_backward_input_sums(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    (dy, w, dx): (&GpuTensor, &GpuTensor, &GpuTensor),
    x: &GpuTensor,
    norm: &Norm<GpuTensor>,
) -> Option<GpuTensor> {
    let s = rows_shape(p, true)?;
    let covered = s.oc != 1 && s.w.is_multiple_of(2) && (s.h * s.w).is_multiple_of(4);
    if !covered {
        return None;
    }
    // The bias binding and BatchNorm's second are unused.
    let through = (Through::batchnorm(norm.p.relu_input != 0), [x, w, norm.saved]);
    Some(conv2d_rows(gpu, p, s, Mode::InputGradSums, [dy, w, w, dx], through, None))
}

/// The whole backward of a square conv reading x through BatchNorm in one pass
/// (`conv2d_backward_rows`, where covered): the input gradient into `dn`, the weight and bias
/// gradients (then reduced into dw and db as usual), and returned, BatchNorm's backward plane
/// sums, all as the two kernels it replaces would give them. dn is written, never added.
fn conv2d_backward_rows(
    gpu: &mut GpuBackend,
    op: &BatchNormConv2dBackward<GpuTensor>,
    dn: &GpuTensor,
) -> Option<GpuTensor> {
    let p = &op.conv.p;
    let s = through_shape(p)?;
    if s.ic != s.oc || !s.w.is_multiple_of(2) || !(s.h * s.w).is_multiple_of(4) {
        return None;
    }
    let p = Conv2dParams { chunk: IMAGES, ..*p };
    let (chunks, taps) = (chunks(p.n, p.towers), p.w_len() + p.c_out as usize);
    // The kernel's one output buffer: the weight partials, then the plane sums on a view boundary.
    let planes_offset = (chunks as usize * taps).next_multiple_of(VIEW_ALIGN);
    let planes_len = 2 * (p.n * p.c_in) as usize;
    let out = gpu.weight_partials(planes_offset + planes_len);
    let spec = [s.ic, s.oc, s.h, s.w, s.k, Through::batchnorm(op.norm.p.relu_input != 0) as u32];
    let flops = Some(Work::Flops(4.0 * p.macs() as f64));
    let n = &op.norm;
    let bindings = [op.dy, op.conv.w, dn, op.x, n.gamma, n.beta, n.saved, &out];
    gpu.dispatch_work(Kernel::Conv2dBackwardRows, &spec, &p, &bindings, chunks.div_ceil(s.groups()), flops);
    gpu.sum_weight_partials(&p, &out.view(0, chunks as usize * taps), op.conv_grads);
    Some(out.view(planes_offset, planes_len))
}

/// All of BatchNormConv2dBackward but BatchNorm's dx, as the portable head (src/gpu/conv2d.rs)
/// but on these kernels where they cover a piece: the conv's input gradient (BatchNorm's dy)
/// into `dn`, the conv's dw and db, BatchNorm's dgamma and dbeta; returns the towers'
/// (Σdn, Σdn·x̂) that BatchNorm's dx takes.
fn batchnorm_conv2d_backward_head(
    gpu: &mut GpuBackend,
    op: &BatchNormConv2dBackward<GpuTensor>,
    dn: &GpuTensor,
) -> GpuTensor {
    let (norm, p, x) = (&op.norm, &op.conv.p, op.x);
    let (dgamma, dbeta) = (op.grads.dgamma, op.grads.dbeta);
    if let Some(planes) = conv2d_backward_rows(gpu, op, dn) {
        return batchnorm_backward_sums(gpu, &norm.p, &planes, dgamma, dbeta);
    }
    let pi = Conv2dParams { accumulate: 0, ..*p };
    let planes = match conv2d_backward_input_sums(gpu, &pi, (op.dy, op.conv.w, dn), x, norm) {
        Some(planes) => planes,
        None => input_grad_planes(gpu, op, dn),
    };
    match through_shape(p) {
        Some(shape) => {
            conv2d_backward_weight_rows(gpu, p, shape, (x, WeightThrough::Input(*norm), op.dy), op.conv_grads)
        }
        None => weight_grad_of_normalised(gpu, op),
    }
    batchnorm_backward_sums(gpu, &norm.p, &planes, dgamma, dbeta)
}

/// The backward of conv(BatchNorm(first(x))) in training: conv's gradients and BatchNorm's as
/// in the head above, then first's. Where first's input needs no gradient and these kernels
/// cover first, its weight gradient reads its dy through BatchNorm's backward, so that the
/// gradient of z = first(x) is never written.
fn conv2d_batchnorm_conv2d_backward(gpu: &mut GpuBackend, op: &Conv2dBatchNormConv2dBackward<GpuTensor>) {
    let dn = gpu.scratch(op.norm.p.len());
    let inner = inner_backward(op, &dn);
    let sums = batchnorm_conv2d_backward_head(gpu, &inner, &dn);
    match through_shape(&op.first.p).filter(|_| op.dx.is_none()) {
        Some(shape) => {
            let through = WeightThrough::Grad(GradThrough { x: op.z, norm: inner.norm, sums: &sums });
            conv2d_backward_weight_rows(gpu, &op.first.p, shape, (op.x, through, &dn), op.first_grads);
        }
        None => first_backward(gpu, op, &inner, (&dn, &sums)),
    }
}

/// The conv's input gradient into `dn` (BatchNorm's dy, written), and BatchNorm's backward
/// plane sums of it: the fallback of the fused input-gradient kernels.
fn input_grad_planes(gpu: &mut GpuBackend, op: &BatchNormConv2dBackward<GpuTensor>, dn: &GpuTensor) -> GpuTensor {
    let pi = Conv2dParams { accumulate: 0, ..op.conv.p };
    gpu.conv2d_backward_input(&pi, op.dy, op.conv.w, dn);
    batchnorm_backward_planes(gpu, &op.norm, op.x, dn)
}
