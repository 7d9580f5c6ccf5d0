//! Launchers of shaders/conv2d.wgsl: forward, input gradient, weight and bias gradients, and
//! Conv2d(BatchNorm(x)) in training, the tiled kernels reading x through the normalisation
//! (elsewhere BatchNorm's output written out, then the conv).
//!
//! Two tiers, the first that covers the shape wins: the tiled kernels, specialised per shape
//! (planes of a multiple of 4 pixels, at most 8 channels in and out, K ≤ 5); the plain
//! one-output-per-invocation kernels. A driver's own kernels, where one is selected
//! (src/gpu/kernel_set.rs), are tried before these: the composite ops below reach the convs
//! through the backend's entries, which try them.

use super::batchnorm::{batchnorm_backward_input, batchnorm_output, batchnorm_plane_moments, batchnorm_sums};
use super::weight_packs::PackHow;
use super::{GpuBackend, GpuTensor, Kernel, Work};
use crate::backend::{Backend, Conv, Moments, Norm, NormGrads, ParamGrads};
use crate::fused::{BatchNormConv2dBackward, Conv2dBatchNormConv2dBackward};
use crate::ops::{ACCUMULATE_INPUT, BatchNormParams, Conv2dParams};

/// Images per partial sum in the plain weight-gradient kernel: small enough for many
/// parallel partial sums, large enough to keep the second stage short. Chunks stay within
/// one tower.
pub const WEIGHT_GRAD_CHUNK: usize = 4;

/// Invocations per workgroup of `conv2d_tile` and `conv2d_backward_weight_tile`.
const TILE_WORKGROUP: u32 = 64;
const WEIGHT_TILE_WORKGROUP: u32 = 64;

/// Invocations of the tiled weight gradient per image it should at least run: with the 256
/// images of a training batch, 4,096, as many as the partials it writes. From the layer's
/// shape alone, so that the warm-up's small batch builds the pipelines a run uses.
const WEIGHT_TILE_PER_IMAGE: u32 = 16;

/// At most this many bands: each multiplies the partials to sum.
const WEIGHT_TILE_BANDS: u32 = 4;

/// Row bands each (image, input, output channel) of the tiled weight gradient is split into:
/// enough for WEIGHT_TILE_PER_IMAGE where rows are whole strips of 4 (W a multiple of 4).
fn weight_tile_bands(p: &Conv2dParams) -> u32 {
    if !p.w.is_multiple_of(4) {
        return 1;
    }
    WEIGHT_TILE_PER_IMAGE.div_ceil(p.c_in * p.c_out).clamp(1, WEIGHT_TILE_BANDS.min(p.h))
}

/// Whether the tiled kernels handle this shape.
pub fn tiled(p: &Conv2dParams) -> bool {
    (p.h * p.w).is_multiple_of(4) && p.c_in <= 8 && p.c_out <= 8 && p.k <= 5 && p.pad == p.k / 2
}

/// How a conv kernel reads its input x (its `THROUGH` constant): as it is, or as the output
/// of a train-mode BatchNorm of it, ReLU(x)·a + b or x·a + b with its (tower, channel)'s
/// a = γ·invstd and b = β − mean·a, computed as batchnorm_forward computes them. That
/// BatchNorm's output is then never written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Through {
    Plain = 0,
    BatchNorm = 1,
    BatchNormOfRelu = 2,
}

impl Through {
    /// Through a BatchNorm, of ReLU(x) or of x.
    pub fn batchnorm(relu: bool) -> Self {
        if relu { Through::BatchNormOfRelu } else { Through::BatchNorm }
    }

    /// How `norm`, where given, is read through.
    fn of(norm: Option<&Norm<GpuTensor>>) -> Self {
        norm.map_or(Through::Plain, |n| Through::batchnorm(n.p.relu_input != 0))
    }

    pub fn from_spec(v: u32) -> Self {
        match v {
            0 => Through::Plain,
            1 => Through::BatchNorm,
            2 => Through::BatchNormOfRelu,
            _ => panic!("THROUGH = {v}"),
        }
    }
}

/// A conv's input as a kernel reads it: x, through `norm` where given.
#[derive(Clone, Copy)]
struct Input<'a> {
    x: &'a GpuTensor,
    norm: Option<&'a Norm<'a, GpuTensor>>,
}

impl<'a> Input<'a> {
    fn plain(x: &'a GpuTensor) -> Self {
        Input { x, norm: None }
    }
}

/// A BatchNorm's backward that a tiled kernel reads its dy through (`DY_THROUGH`): the dy
/// bound is the gradient of BatchNorm's output, and the kernel makes that of its input `z`
/// from the coefficients at the end of `sums` (batchnorm::batchnorm_channel_sums), as
/// batchnorm_backward_input would, so that gradient is never written.
#[derive(Clone, Copy)]
struct DyThrough<'a> {
    z: &'a GpuTensor,
    sums: &'a GpuTensor,
    relu: bool,
}

/// A tiled kernel's THROUGH and DY_THROUGH, and its bindings bn0..bn2: the BatchNorm x is
/// read through (γ, β, statistics), or the one dy is read through the backward of (z, sums),
/// or neither (any buffers, never read).
fn through_bindings<'a>(input: &Input<'a>, dy: Option<DyThrough<'a>>) -> ([u32; 2], [&'a GpuTensor; 3]) {
    match (input.norm, dy) {
        (Some(n), None) => ([Through::of(input.norm) as u32, 0], [n.gamma, n.beta, n.saved]),
        (None, Some(d)) => ([0, Through::batchnorm(d.relu) as u32], [d.z, d.sums, d.z]),
        (None, None) => ([0, 0], [input.x; 3]),
        (Some(_), Some(_)) => panic!("a tiled conv reads x or dy through a BatchNorm, not both"),
    }
}

/// Runs `conv2d_tile` over `input` (dy through `dy` for the input gradient), the weights
/// packed for it (a uniform buffer of vec4s over output channels, made once per change of the
/// weights: src/gpu/weight_packs.rs). Overrides IC, OC, H, W, K, TRANSPOSE, THROUGH, DY_THROUGH.
fn conv2d_tile(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    (input, dy): (Input, Option<DyThrough>),
    transpose: bool,
    [w, b, y]: [&GpuTensor; 3],
) {
    let (ic, oc) = if transpose { (p.c_out, p.c_in) } else { (p.c_in, p.c_out) };
    let ([through, dy_through], [bn0, bn1, bn2]) = through_bindings(&input, dy);
    let spec = [ic, oc, p.h, p.w, p.k, transpose as u32, through, dy_through];
    let packed = gpu.packed_weights(w, PackHow { ic, oc, k: p.k, transpose: transpose as u32 });
    let flops = Some(Work::Flops(2.0 * p.macs() as f64));
    let x = input.x;
    let buffers = [x, x, x, b, y, &packed, bn0, bn1, bn2];
    gpu.dispatch_work(Kernel::Conv2dTile, &spec, p, &buffers, tile_groups(p), flops);
}

fn tile_groups(p: &Conv2dParams) -> u32 {
    (p.n * p.h * p.w / 4).div_ceil(TILE_WORKGROUP)
}

/// y = conv(x), with y's plane moments into `moments` where asked.
pub fn conv2d_forward(
    gpu: &mut GpuBackend,
    conv: Conv<GpuTensor>,
    [x, y]: [&GpuTensor; 2],
    moments: Option<Moments<GpuTensor>>,
) {
    let Conv { p, w, b } = conv;
    if tiled(&p) {
        conv2d_tile(gpu, &p, (Input::plain(x), None), false, [w, b, y]);
    } else {
        let flops = Some(Work::Flops(2.0 * p.macs() as f64));
        gpu.dispatch_work(Kernel::Conv2dForward, &[], &p, &[x, w, b, y], GpuBackend::groups_for(p.y_len()), flops);
    }
    if let Some(m) = moments {
        batchnorm_plane_moments(gpu, &m.p, y, m.out);
    }
}

/// A conv's backward from dy, `input`'s dx (from w) and `weight`'s gradients (from x) each
/// where given: on the tiled path a launch for each, on the plain one a single launch for both
/// (the weight gradient's sums still a second stage).
pub fn conv2d_backward(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    dy: &GpuTensor,
    input: Option<(&GpuTensor, &GpuTensor)>,
    weight: Option<(&GpuTensor, ParamGrads<GpuTensor>)>,
) {
    if tiled(p) {
        if let Some((w, dx)) = input {
            conv2d_tile(gpu, p, (Input::plain(dy), None), true, [w, w, dx]);
        }
        if let Some((x, g)) = weight {
            backward_weight(gpu, p, Input::plain(x), (dy, None), g);
        }
        return;
    }
    if input.is_none() && weight.is_none() {
        return;
    }
    let p = &Conv2dParams { chunk: WEIGHT_GRAD_CHUNK as u32, ..*p };
    let chunks = p.towers as usize * ((p.n / p.towers) as usize).div_ceil(WEIGHT_GRAD_CHUNK);
    let partial = weight.map(|_| gpu.weight_partials(chunks * (p.w_len() + p.c_out as usize)));
    // A part not computed gets placeholders, never read or written (two buffers: one bound
    // read-only, one read-write); with both parts computed none is needed.
    let spare = (input.is_none() || weight.is_none()).then(|| (gpu.scratch(1), gpu.scratch(1)));
    let (read, write) = spare.as_ref().map_or((dy, dy), |(r, w)| (r, w));
    let (w, dx) = input.unwrap_or((read, write));
    let x = weight.map_or(read, |(x, _)| x);
    let spec = [input.is_some() as u32, weight.is_some() as u32];
    let invocations = input.map_or(0, |_| p.x_len()) + partial.as_ref().map_or(0, |t| t.len);
    let bindings = [x, w, dy, dx, partial.as_ref().unwrap_or(write)];
    let flops = Some(Work::Flops(2.0 * p.macs() as f64 * (spec[0] + spec[1]) as f64));
    let groups = GpuBackend::groups_for(invocations);
    gpu.dispatch_work(Kernel::Conv2dBackward, &spec, p, &bindings, groups, flops);
    if let (Some((_, g)), Some(partial)) = (weight, partial) {
        gpu.sum_weight_partials(p, &partial, g);
    }
}

/// The tiled weight gradient of `input`, dy through `dy.1` where given, two stages, no
/// atomics: partial sums per image (and row band), then per tower in order.
fn backward_weight(
    gpu: &mut GpuBackend,
    p: &Conv2dParams,
    input: Input,
    (dy, dy_through): (&GpuTensor, Option<DyThrough>),
    grads: ParamGrads<GpuTensor>,
) {
    let taps = p.w_len() + p.c_out as usize;
    let flops = Some(Work::Flops(2.0 * p.macs() as f64));
    let p = Conv2dParams { chunk: 1, ..*p };
    let bands = weight_tile_bands(&p);
    let partial = gpu.weight_partials((p.n * bands) as usize * taps);
    let ([through, dy_through], [bn0, bn1, bn2]) = through_bindings(&input, dy_through);
    let spec = [p.c_in, p.c_out, p.h, p.w, p.k, through, bands, dy_through];
    let groups = (p.n * bands * p.c_in * p.c_out).div_ceil(WEIGHT_TILE_WORKGROUP);
    let x = input.x;
    let buffers = [x, x, x, dy, &partial, bn0, bn1, bn2];
    gpu.dispatch_work(Kernel::Conv2dBackwardWeightTile, &spec, &p, &buffers, groups, flops);
    // Each band's partials count as an image's.
    gpu.sum_weight_partials(&Conv2dParams { n: p.n * bands, ..p }, &partial, grads);
}

/// Conv2d(BatchNorm(x)) with BatchNorm's statistics in `norm.saved` (the batch's in training,
/// the running ones in eval mode): the tiled conv reading x through the normalisation, or
/// BatchNorm's output written out, then the conv of it.
pub fn batchnorm_conv2d_forward(
    gpu: &mut GpuBackend,
    (norm, conv): (Norm<GpuTensor>, Conv<GpuTensor>),
    x: &GpuTensor,
    y: &GpuTensor,
    moments: Option<Moments<GpuTensor>>,
) {
    if !tiled(&conv.p) {
        let normalised = batchnorm_output(gpu, &norm, x);
        return gpu.conv2d_moments_forward(conv, [&normalised, y], moments);
    }
    conv2d_tile(gpu, &conv.p, (Input { x, norm: Some(&norm) }, None), false, [conv.w, conv.b, y]);
    if let Some(m) = moments {
        batchnorm_plane_moments(gpu, &m.p, y, m.out);
    }
}

/// Its backward: the conv's input gradient (BatchNorm's dy), its weight gradient of
/// BatchNorm's output written out again, then BatchNorm's backward.
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
    let pi = Conv2dParams { accumulate: 0, ..op.conv.p };
    gpu.conv2d_backward_input(&pi, op.dy, op.conv.w, dn);
    weight_grad_of_normalised(gpu, op);
    batchnorm_sums(gpu, &op.norm, op.x, dn, op.grads.dgamma, op.grads.dbeta)
}

/// The conv's weight and bias gradients, of x read through the normalisation by the tiled
/// kernel, or of BatchNorm's output written out again.
pub(super) fn weight_grad_of_normalised(gpu: &mut GpuBackend, op: &BatchNormConv2dBackward<GpuTensor>) {
    if tiled(&op.conv.p) {
        let input = Input { x: op.x, norm: Some(&op.norm) };
        return backward_weight(gpu, &op.conv.p, input, (op.dy, None), op.conv_grads);
    }
    let normalised = batchnorm_output(gpu, &op.norm, op.x);
    gpu.conv2d_backward_weight(&op.conv.p, &normalised, op.dy, op.conv_grads);
}

/// The BatchNormConv2dBackward inside a Conv2dBatchNormConv2dBackward: the gradient of z =
/// first(x) is the op's own (written, never added), and `dn`, the conv's input gradient,
/// stands in for BatchNorm's dx, which the head does not write.
pub(super) fn inner_backward<'a>(
    op: &Conv2dBatchNormConv2dBackward<'a, GpuTensor>,
    dn: &'a GpuTensor,
) -> BatchNormConv2dBackward<'a, GpuTensor> {
    let p = BatchNormParams { accumulate: op.norm.p.accumulate & !ACCUMULATE_INPUT, ..op.norm.p };
    let norm = Norm { p, ..op.norm };
    let grads = NormGrads { dx: dn, dgamma: op.dgamma, dbeta: op.dbeta };
    BatchNormConv2dBackward { norm, conv: op.conv, x: op.z, dy: op.dy, grads, conv_grads: op.conv_grads }
}

/// first's gradients from BatchNorm's backward (`inner`, its dy in `dn`, its towers' `sums`):
/// z's gradient written out, then first's input and weight gradients.
pub(super) fn first_backward(
    gpu: &mut GpuBackend,
    op: &Conv2dBatchNormConv2dBackward<GpuTensor>,
    inner: &BatchNormConv2dBackward<GpuTensor>,
    (dn, sums): (&GpuTensor, &GpuTensor),
) {
    let dz = gpu.scratch(inner.norm.p.len());
    batchnorm_backward_input(gpu, &inner.norm, op.z, dn, sums, &dz);
    let input = op.dx.map(|dx| (op.first.w, dx));
    gpu.conv2d_backward(&op.first.p, &dz, input, Some((op.x, op.first_grads)));
}

/// The backward of conv(BatchNorm(first(x))) in training: conv's gradients and BatchNorm's as
/// in `batchnorm_conv2d_backward`, then first's. Where the tiled kernels cover first, they
/// read their dy through BatchNorm's backward, so that z = first(x)'s gradient is never
/// written; otherwise it is, then first's backward reads it.
pub fn conv2d_batchnorm_conv2d_backward(gpu: &mut GpuBackend, op: &Conv2dBatchNormConv2dBackward<GpuTensor>) {
    let dn = gpu.scratch(op.norm.p.len());
    let inner = inner_backward(op, &dn);
    let sums = batchnorm_conv2d_backward_head(gpu, &inner, &dn);
    // A CPU driver's set sums plane by plane, without the coefficients.
    if !tiled(&op.first.p) || gpu.plane_at_a_time() {
        return first_backward(gpu, op, &inner, (&dn, &sums));
    }
    let through = DyThrough { z: op.z, sums: &sums, relu: op.norm.p.relu_input != 0 };
    if let Some(dx) = op.dx {
        conv2d_tile(gpu, &op.first.p, (Input::plain(&dn), Some(through)), true, [op.first.w, op.first.w, dx]);
    }
    backward_weight(gpu, &op.first.p, Input::plain(op.x), (&dn, Some(through)), op.first_grads);
}
