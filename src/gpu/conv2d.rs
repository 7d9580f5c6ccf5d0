//! Launchers of shaders/conv2d.wgsl and of the generated subgroup kernels: forward, input
//! gradient, weight and bias gradients.
//!
//! Three tiers, the first that covers the shape wins: the subgroup kernels of
//! src/gpu/llvmpipe/ (8-lane subgroups and 64-bit integers, 4 or 8 output channels, "same" padding); the
//! tiled kernels, specialised per shape (planes of a multiple of 4 pixels, at most 8
//! channels in and out, K ≤ 5); the plain one-output-per-invocation kernels.
//!
//! Also Conv2d(BatchNorm(x)) in training, whose subgroup kernels read x through the
//! normalisation, so that BatchNorm's output is never written (other tiers write it).

use super::batchnorm::{
    batchnorm_backward_input, batchnorm_backward_planes, batchnorm_backward_sums, batchnorm_output,
    batchnorm_plane_moments,
};
use super::llvmpipe::{IMAGES, Mode, Shape, Through, chunks};
use super::{GpuBackend, GpuTensor, Kernel, Work};
use crate::backend::{Backend, Conv, DeviceTensor, Moments, Norm, NormGrads, ParamGrads, VIEW_ALIGN};
use crate::fused::{BatchNormConv2dBackward, Conv2dBatchNormConv2dBackward};
use crate::params::{ACCUMULATE_INPUT, BatchNormParams, Conv2dParams};

/// Images per partial sum in the plain weight-gradient kernel: small enough for many
/// parallel partial sums, large enough to keep the second stage short. Chunks stay within
/// one tower.
pub const WEIGHT_GRAD_CHUNK: usize = 4;

/// Invocations per workgroup of `conv2d_tile` and `conv2d_backward_weight_tile`.
const TILE_WORKGROUP: u32 = 64;
const WEIGHT_TILE_WORKGROUP: u32 = 8;

/// Whether the tiled kernels handle this shape.
pub fn tiled(p: &Conv2dParams) -> bool {
    (p.h * p.w).is_multiple_of(4) && p.c_in <= 8 && p.c_out <= 8 && p.k <= 5 && p.pad == p.k / 2
}

/// Vec4s in `conv2d_tile`'s packed weights (shaders/conv2d.wgsl PackedWeights).
const PACKED_WEIGHTS: usize = 400;

/// The override constants of `conv2d_tile`: IC, OC, H, W, K, TRANSPOSE.
fn tile_spec(p: &Conv2dParams, transpose: bool) -> [u32; 6] {
    let (ic, oc) = if transpose { (p.c_out, p.c_in) } else { (p.c_in, p.c_out) };
    [ic, oc, p.h, p.w, p.k, transpose as u32]
}

/// Runs `conv2d_tile` over `x`: packs the weights for it (a uniform buffer of vec4s over
/// output channels), then convolves.
fn conv2d_tile(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    transpose: bool,
    x: &GpuTensor,
    w: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
) {
    let [ic, oc, h, wd, k, t] = tile_spec(p, transpose);
    let packed = gpu.scratch(4 * PACKED_WEIGHTS);
    let groups = (ic * k * k * oc.div_ceil(4)).div_ceil(TILE_WORKGROUP);
    gpu.dispatch_specialized(Kernel::Conv2dPackWeights, &[ic, oc, k, t], p, &[w, &packed], groups);
    let flops = Some(Work::Flops(2.0 * p.macs() as f64));
    let buffers = [x, x, x, b, y, &packed];
    gpu.dispatch_work(Kernel::Conv2dTile, &[ic, oc, h, wd, k, t], p, &buffers, tile_groups(p), flops);
}

fn tile_groups(p: &Conv2dParams) -> u32 {
    (p.n * p.h * p.w / 4).div_ceil(TILE_WORKGROUP)
}

/// The subgroup kernels' shape for this conv, if they cover it (`transpose`: the input
/// gradient, which reads the conv's outputs and writes its inputs).
fn rows_shape(gpu: &GpuBackend, p: &Conv2dParams, transpose: bool) -> Option<Shape> {
    let (ic, oc) = if transpose { (p.c_out, p.c_in) } else { (p.c_in, p.c_out) };
    let shape = Shape { ic, oc, h: p.h, w: p.w, k: p.k };
    (gpu.subgroup_convs && p.pad == p.k / 2 && shape.supported()).then_some(shape)
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
/// through a BatchNorm's backward (on the subgroup kernels only, `through_shape`).
enum WeightThrough<'a> {
    Plain,
    Input(Norm<'a, GpuTensor>),
    Grad(GradThrough<'a>),
}

/// The subgroup kernels' shape for a conv that reads its input through a BatchNorm, or whose
/// weight gradient reads dy through a BatchNorm's backward, if they cover it: several output
/// channels (each lane group's images are of one tower, whose normalisation it takes).
fn through_shape(gpu: &GpuBackend, p: &Conv2dParams) -> Option<Shape> {
    rows_shape(gpu, p, false).filter(|s| s.oc != 1)
}

/// `conv2d_rows`: one subgroup per `8 / OC` groups of [`IMAGES`] images, reading x through
/// `through` (its tensors at bindings 6…, see src/gpu/llvmpipe/). A forward of 4 or 8 output
/// channels writes the plane moments of ReLU(y) beside y, into `stats` where given;
/// `InputGradSums` writes BatchNorm's backward plane sums there. Returns the stats tensor.
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

/// A forward on the subgroup kernels, with y's plane moments into `moments` where asked:
/// from the kernel where it computes them (of ReLU(y), 4 or 8 output channels), else after.
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

/// The input gradient dx of a conv that reads BatchNorm(x) (so dx is BatchNorm's dy), written,
/// with the per-plane sums BatchNorm's backward takes from it, where the subgroup kernels
/// cover the shape (`InputGradSums`); None where they do not (dx is not written then).
fn conv2d_backward_input_sums(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    (dy, w, dx): (&GpuTensor, &GpuTensor, &GpuTensor),
    x: &GpuTensor,
    norm: &Norm<GpuTensor>,
) -> Option<GpuTensor> {
    let s = rows_shape(gpu, p, true)?;
    let covered = s.oc != 1 && s.w.is_multiple_of(2) && (s.h * s.w).is_multiple_of(4);
    if !covered {
        return None;
    }
    // The bias binding and BatchNorm's second are unused.
    let through = (Through::batchnorm(norm.p.relu_input != 0), [x, w, norm.saved]);
    Some(conv2d_rows(gpu, p, s, Mode::InputGradSums, [dy, w, w, dx], through, None))
}

/// The whole backward of a square conv reading x through BatchNorm in one pass
/// (`conv2d_backward_rows`, where the subgroup kernels cover the shape): the input gradient
/// into `dn`, the weight and bias gradients (then reduced into dw and db as usual), and
/// returned, BatchNorm's backward plane sums, all as the two kernels it replaces would give
/// them. dn is written, never added.
fn conv2d_backward_rows(
    gpu: &mut GpuBackend,
    op: &BatchNormConv2dBackward<GpuTensor>,
    dn: &GpuTensor,
) -> Option<GpuTensor> {
    let p = &op.conv.p;
    let s = through_shape(gpu, p)?;
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

pub fn conv2d_forward(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    x: &GpuTensor,
    w: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
) {
    conv2d_moments_forward(gpu, Conv { p: *p, w, b }, x, y, None)
}

/// y = conv(x), with y's plane moments into `moments` where asked.
pub fn conv2d_moments_forward(
    gpu: &mut GpuBackend,
    conv: Conv<GpuTensor>,
    x: &GpuTensor,
    y: &GpuTensor,
    moments: Option<Moments<GpuTensor>>,
) {
    let Conv { p, w, b } = conv;
    assert_eq!(
        (x.len, w.len, b.len, y.len),
        (p.x_len(), p.w_len(), p.c_out as usize, p.y_len()),
        "conv2d_forward: {p:?}"
    );
    if let Some(shape) = rows_shape(gpu, &p, false) {
        // Without a BatchNorm its three bindings hold anything: the kernel declares none.
        return rows_forward(gpu, &p, shape, [x, w, b, y], (Through::Plain, [w; 3]), moments);
    } else if tiled(&p) {
        conv2d_tile(gpu, &p, false, x, w, b, y);
    } else {
        let flops = Some(Work::Flops(2.0 * p.macs() as f64));
        gpu.dispatch_work(Kernel::Conv2dForward, &[], &p, &[x, w, b, y], GpuBackend::groups_for(p.y_len()), flops);
    }
    if let Some(m) = moments {
        batchnorm_plane_moments(gpu, &m.p, y, m.out);
    }
}

pub fn conv2d_backward_input(gpu: &mut GpuBackend, p: &Conv2dParams, dy: &GpuTensor, w: &GpuTensor, dx: &GpuTensor) {
    assert_eq!((dy.len, w.len, dx.len), (p.y_len(), p.w_len(), p.x_len()), "conv2d_backward_input: {p:?}");
    if let Some(shape) = rows_shape(gpu, p, true) {
        // No bias in the input gradient; `w` fills the unused bias binding.
        conv2d_rows(gpu, p, shape, Mode::InputGrad, [dy, w, w, dx], (Through::Plain, [w; 3]), None);
    } else if tiled(p) {
        conv2d_tile(gpu, p, true, dy, w, w, dx);
    } else {
        let flops = Some(Work::Flops(2.0 * p.macs() as f64));
        gpu.dispatch_work(Kernel::Conv2dBackwardInput, &[], p, &[dy, w, dx], GpuBackend::groups_for(p.x_len()), flops);
    }
}

/// Two stages, no atomics: partial sums per chunk of images, then per tower in order.
pub fn conv2d_backward_weight(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    x: &GpuTensor,
    dy: &GpuTensor,
    grads: ParamGrads<GpuTensor>,
) {
    conv2d_backward_weight_of(gpu, p, x, WeightThrough::Plain, dy, grads)
}

/// The weight gradient of a conv of x, or of BatchNorm(x) read through, or with its dy read
/// through a BatchNorm's backward.
fn conv2d_backward_weight_of(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    x: &GpuTensor,
    through: WeightThrough,
    dy: &GpuTensor,
    grads: ParamGrads<GpuTensor>,
) {
    assert_eq!(
        (x.len, dy.len, grads.dw.len, grads.db.len),
        (p.x_len(), p.y_len(), p.w_len(), p.c_out as usize),
        "conv2d_backward_weight: {p:?}"
    );
    assert!(
        matches!(through, WeightThrough::Plain) || through_shape(gpu, p).is_some(),
        "conv2d_backward_weight: no BatchNorm reading for {p:?}"
    );
    let taps = p.w_len() + p.c_out as usize;
    let (p, partial) = if let Some(shape) = rows_shape(gpu, p, false) {
        let p = Conv2dParams { chunk: IMAGES, ..*p };
        let chunks = chunks(p.n, p.towers);
        let partial = gpu.weight_partials(chunks as usize * taps);
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
        (p, partial)
    } else if tiled(p) {
        let p = Conv2dParams { chunk: 1, ..*p };
        let partial = gpu.weight_partials(p.n as usize * taps);
        let spec = [p.c_in, p.c_out, p.h, p.w, p.k];
        let groups = (p.n * p.c_in).div_ceil(WEIGHT_TILE_WORKGROUP);
        let flops = Some(Work::Flops(2.0 * p.macs() as f64));
        gpu.dispatch_work(Kernel::Conv2dBackwardWeightTile, &spec, &p, &[x, x, x, dy, &partial], groups, flops);
        (p, partial)
    } else {
        let p = Conv2dParams { chunk: WEIGHT_GRAD_CHUNK as u32, ..*p };
        let chunks = p.towers as usize * ((p.n / p.towers) as usize).div_ceil(WEIGHT_GRAD_CHUNK);
        let partial = gpu.weight_partials(chunks * taps);
        let groups = GpuBackend::groups_for(chunks * taps);
        let flops = Some(Work::Flops(2.0 * p.macs() as f64));
        gpu.dispatch_work(Kernel::Conv2dBackwardWeightPartial, &[], &p, &[x, dy, &partial], groups, flops);
        (p, partial)
    };
    gpu.sum_weight_partials(&p, &partial, grads);
}

/// Conv2d(BatchNorm(x)) with BatchNorm's statistics in `norm.saved` (the batch's in training,
/// the running ones in eval mode): the conv reading x through the normalisation where the
/// subgroup kernels take the shape, else of BatchNorm's output written out.
pub fn batchnorm_conv2d_forward(
    gpu: &mut GpuBackend,
    (norm, conv): (Norm<GpuTensor>, Conv<GpuTensor>),
    x: &GpuTensor,
    y: &GpuTensor,
    moments: Option<Moments<GpuTensor>>,
) {
    assert_eq!(norm.saved.len, norm.p.saved_len(), "batchnorm_conv2d_forward: saved");
    match through_shape(gpu, &conv.p) {
        Some(shape) => {
            let through = (Through::batchnorm(norm.p.relu_input != 0), [norm.gamma, norm.beta, norm.saved]);
            rows_forward(gpu, &conv.p, shape, [x, conv.w, conv.b, y], through, moments);
        }
        None => {
            let normalised = batchnorm_output(gpu, &norm, x);
            conv2d_moments_forward(gpu, conv, &normalised, y, moments);
        }
    }
}

/// Its backward: the conv's input gradient (BatchNorm's dy), its weight gradient reading x
/// through the normalisation again (or BatchNorm's output written out again), then
/// BatchNorm's backward.
pub fn batchnorm_conv2d_backward(gpu: &mut GpuBackend, op: &BatchNormConv2dBackward<GpuTensor>) {
    let dn = gpu.scratch(op.norm.p.len());
    let sums = batchnorm_conv2d_backward_head(gpu, op, &dn);
    batchnorm_backward_input(gpu, &op.norm, op.x, &dn, &sums, op.grads.dx);
}

/// All of that backward but BatchNorm's dx: the conv's input gradient (BatchNorm's dy) into
/// `dn`, the conv's dw and db, BatchNorm's dgamma and dbeta; returns the towers' (Σdn, Σdn·x̂)
/// that BatchNorm's dx takes.
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
        None => {
            conv2d_backward_input(gpu, &pi, op.dy, op.conv.w, dn);
            batchnorm_backward_planes(gpu, norm, x, dn)
        }
    };
    if through_shape(gpu, p).is_some() {
        conv2d_backward_weight_of(gpu, p, x, WeightThrough::Input(*norm), op.dy, op.conv_grads);
    } else {
        let normalised = batchnorm_output(gpu, norm, x);
        conv2d_backward_weight(gpu, p, &normalised, op.dy, op.conv_grads);
    }
    batchnorm_backward_sums(gpu, &norm.p, &planes, dgamma, dbeta)
}

/// The backward of conv(BatchNorm(first(x))) in training: conv's gradients and BatchNorm's as
/// in `batchnorm_conv2d_backward`, then first's. Where first's input needs no gradient and the
/// subgroup kernels cover first, its weight gradient reads its dy through BatchNorm's
/// backward, so that the gradient of z = first(x) is never written.
pub fn conv2d_batchnorm_conv2d_backward(gpu: &mut GpuBackend, op: &Conv2dBatchNormConv2dBackward<GpuTensor>) {
    // z's gradient is this op's own: written, never added.
    let p = BatchNormParams { accumulate: op.norm.p.accumulate & !ACCUMULATE_INPUT, ..op.norm.p };
    let norm = Norm { p, ..op.norm };
    let dn = gpu.scratch(p.len());
    // The head writes no dx: `dn` stands in for it.
    let grads = NormGrads { dx: &dn, dgamma: op.dgamma, dbeta: op.dbeta };
    let inner = BatchNormConv2dBackward { norm, conv: op.conv, x: op.z, dy: op.dy, grads, conv_grads: op.conv_grads };
    let sums = batchnorm_conv2d_backward_head(gpu, &inner, &dn);
    let first = &op.first.p;
    if op.dx.is_none() && through_shape(gpu, first).is_some() {
        let through = WeightThrough::Grad(GradThrough { x: op.z, norm, sums: &sums });
        return conv2d_backward_weight_of(gpu, first, op.x, through, &dn, op.first_grads);
    }
    let dz = gpu.scratch(p.len());
    batchnorm_backward_input(gpu, &norm, op.z, &dn, &sums, &dz);
    if let Some(dx) = op.dx {
        conv2d_backward_input(gpu, first, &dz, op.first.w, dx);
    }
    conv2d_backward_weight(gpu, first, op.x, &dz, op.first_grads);
}
