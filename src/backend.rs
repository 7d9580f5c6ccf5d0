//! The interface the tape drives: storage, transfers, one method per primitive op, and one
//! entry for fused ops (`fused`), implemented by the CPU reference and the GPU.
//!
//! Primitive methods mirror the CPU reference functions in `cpu/<family>.rs` and the WGSL
//! entry points in `shaders/<family>.wgsl`: same names, same argument order. Shapes travel
//! in the op's params struct (src/ops/); tensors are flat, row-major, NCHW. Where an op
//! takes more than a few tensors they travel in the small structs below.

pub use crate::args::{Conv, Moments, Norm, NormGrads, ParamGrads, Running};
use crate::float::Float;
use crate::fused::{BatchNormConv2dBackward, Fused};
use crate::ops::*;

/// Parameter views handed out by [`DeviceTensor::view`] start at a multiple of this many
/// elements, the 256-byte storage-binding alignment every wgpu adapter accepts.
pub const VIEW_ALIGN: usize = 64;

/// A handle to device storage: `len` elements, cheap to clone (clones share storage).
pub trait DeviceTensor: Clone + std::fmt::Debug {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `len` elements from element `offset`, which must be a multiple of [`VIEW_ALIGN`].
    fn view(&self, offset: usize, len: usize) -> Self;
}

pub trait Backend {
    /// Host-side element type: f32 on the GPU, f32 or f64 on the CPU reference.
    type Elem: Float;
    type Tensor: DeviceTensor;
    /// A set of u8 images resident on the device.
    type Images;

    /// What runs the ops, for messages and benchmark names.
    fn name(&self) -> String;
    /// Whether its convs compute their output's plane moments for little more than the conv,
    /// so that a BatchNorm after one is better handed them than reading its input again: where
    /// they do not, the tape runs no rule that hands moments on (`Rule::hands_moments`).
    fn convs_hand_moments(&self) -> bool {
        false
    }

    // --- storage ---------------------------------------------------------------------------
    /// A persistent tensor of zeros.
    fn zeros(&mut self, len: usize) -> Self::Tensor;
    /// A scratch tensor with unspecified contents, valid until the next [`Backend::reset_scratch`].
    /// Every op writes its whole output, so scratch never needs clearing.
    fn scratch(&mut self, len: usize) -> Self::Tensor;
    /// Hands all scratch back: the next step reuses the same storage, allocating nothing.
    fn reset_scratch(&mut self);
    /// Where kernels compile at their first run, starts compiling the ones recorded so far
    /// elsewhere, in parallel; warm-up only. Nothing by default.
    fn compile_ahead(&mut self) {}
    /// Ends what `compile_ahead` started, once the kernels it was for have run.
    fn stop_compiling_ahead(&mut self) {}
    fn write(&mut self, t: &Self::Tensor, data: &[Self::Elem]);
    /// Copies a tensor to the host, waiting for every op recorded before.
    fn read(&mut self, t: &Self::Tensor) -> Vec<Self::Elem>;
    fn upload(&mut self, data: &[Self::Elem]) -> Self::Tensor {
        let t = self.zeros(data.len());
        self.write(&t, data);
        t
    }

    // --- data ------------------------------------------------------------------------------
    /// Makes `pixels` ((M, P) bytes) resident for [`Backend::gather_images`].
    fn upload_images(&mut self, pixels: &[u8], per_image: usize) -> Self::Images;
    /// out (N, P) = the images at `indices`, each pixel p as float32(p) / 255.
    fn gather_images(&mut self, images: &Self::Images, indices: &[u32], out: &Self::Tensor);

    // --- elementwise -----------------------------------------------------------------------
    fn fill(&mut self, t: &Self::Tensor, value: f32);
    /// One element holding 1, the seed of a backward pass, which nothing writes. By default
    /// scratch filled with it; the GPU keeps one, so that a training step launches no fill.
    fn one(&mut self) -> Self::Tensor {
        let t = self.scratch(1);
        self.fill(&t, 1.0);
        t
    }
    /// dst += src
    fn accumulate(&mut self, src: &Self::Tensor, dst: &Self::Tensor);
    fn copy(&mut self, src: &Self::Tensor, dst: &Self::Tensor);
    fn relu_forward(&mut self, x: &Self::Tensor, y: &Self::Tensor);
    fn relu_backward(&mut self, y: &Self::Tensor, dy: &Self::Tensor, dx: &Self::Tensor, accumulate: u32);

    // --- conv2d ----------------------------------------------------------------------------
    fn conv2d_forward(
        &mut self,
        p: &Conv2dParams,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        y: &Self::Tensor,
    );
    fn conv2d_backward_input(&mut self, p: &Conv2dParams, dy: &Self::Tensor, w: &Self::Tensor, dx: &Self::Tensor);
    fn conv2d_backward_weight(
        &mut self,
        p: &Conv2dParams,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        g: ParamGrads<Self::Tensor>,
    );
    /// A conv's whole backward from dy: `input`'s dx from the weights w, and `weight`'s
    /// gradients from the input x, each where given (written or added by `p.accumulate`'s
    /// bits). A backend may run both at once.
    fn conv2d_backward(
        &mut self,
        p: &Conv2dParams,
        dy: &Self::Tensor,
        input: Option<(&Self::Tensor, &Self::Tensor)>,
        weight: Option<(&Self::Tensor, ParamGrads<Self::Tensor>)>,
    ) {
        if let Some((w, dx)) = input {
            self.conv2d_backward_input(p, dy, w, dx);
        }
        if let Some((x, g)) = weight {
            self.conv2d_backward_weight(p, x, dy, g);
        }
    }

    // --- batchnorm -------------------------------------------------------------------------
    /// Per-plane (mean, M2) of x as `p` reads it, laid out (N, C) pairs.
    fn batchnorm_plane_moments(&mut self, p: &BatchNormParams, x: &Self::Tensor, moments: &Self::Tensor);
    /// Train mode's statistics: each tower's mean and 1/std per channel into `saved`, and the
    /// running statistics' momentum update. `moments`, where given, are x's plane moments
    /// (`batchnorm_plane_moments`), which a backend may use instead of reading x again.
    fn batchnorm_statistics(
        &mut self,
        p: &BatchNormParams,
        x: &Self::Tensor,
        moments: Option<&Self::Tensor>,
        saved: &Self::Tensor,
        running: Running<Self::Tensor>,
    );
    /// Eval mode's, in `saved`'s layout: every tower's are the running mean and
    /// 1/√(running var + eps).
    fn batchnorm_running_statistics(
        &mut self,
        p: &BatchNormParams,
        running: Running<Self::Tensor>,
        saved: &Self::Tensor,
    );
    /// y = BatchNorm(x) with the statistics in `n.saved`.
    fn batchnorm_normalise(&mut self, n: &Norm<Self::Tensor>, x: &Self::Tensor, y: &Self::Tensor);
    /// The backward of train mode from dy, the output's gradient (`n.beta` is not read).
    fn batchnorm_backward(
        &mut self,
        n: &Norm<Self::Tensor>,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        g: NormGrads<Self::Tensor>,
    );

    // --- maxpool ---------------------------------------------------------------------------
    fn maxpool_forward(&mut self, p: &MaxPoolParams, x: &Self::Tensor, y: &Self::Tensor);
    fn maxpool_backward(&mut self, p: &MaxPoolParams, x: &Self::Tensor, dy: &Self::Tensor, dx: &Self::Tensor);

    // --- linear ----------------------------------------------------------------------------
    /// y = x·Wᵀ + b, or Linear(ReLU(x)) where `p.relu_input` says so.
    fn linear_forward(
        &mut self,
        p: &LinearParams,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        y: &Self::Tensor,
    );
    /// The gradients from dy: dx where given (by `p.accumulate`'s input bit), dw and db (by its
    /// params bit), in one pass where the backend can.
    fn linear_backward(
        &mut self,
        p: &LinearParams,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        dx: Option<&Self::Tensor>,
        g: ParamGrads<Self::Tensor>,
    );

    // --- distance and loss -----------------------------------------------------------------
    fn pair_distance_forward(&mut self, p: &PairDistanceParams, x: &Self::Tensor, d: &Self::Tensor);
    fn pair_distance_backward(
        &mut self,
        p: &PairDistanceParams,
        x: &Self::Tensor,
        d: &Self::Tensor,
        dd: &Self::Tensor,
        dx: &Self::Tensor,
    );
    fn contrastive_forward(&mut self, p: &ContrastiveParams, d: &Self::Tensor, t: &Self::Tensor, loss: &Self::Tensor);
    fn contrastive_backward(
        &mut self,
        p: &ContrastiveParams,
        d: &Self::Tensor,
        t: &Self::Tensor,
        dloss: &Self::Tensor,
        dd: &Self::Tensor,
    );

    // --- optimizer -------------------------------------------------------------------------
    /// Adam step `t` (1-based) over flat buffers of equal length.
    fn adam_step(
        &mut self,
        cfg: &AdamConfig,
        t: u64,
        params: &Self::Tensor,
        grads: &Self::Tensor,
        m: &Self::Tensor,
        v: &Self::Tensor,
    );

    // --- fused ops -------------------------------------------------------------------------
    /// Runs a fused op (src/fused.rs), made by the fusion pass (src/fusion.rs). By default its
    /// primitives in turn; a backend overrides the ones it has kernels for.
    fn fused(&mut self, op: Fused<Self::Tensor>)
    where
        Self: Sized,
    {
        lower(self, op)
    }
}

/// Runs a fused op as its primitives in turn: `Backend::fused`'s default. BatchNorm's output,
/// where a fused op never kept it, is normalised again from the same statistics.
pub fn lower<B: Backend>(b: &mut B, op: Fused<B::Tensor>) {
    match op {
        Fused::Conv2dMomentsForward { conv, x, y, moments } => {
            b.conv2d_forward(&conv.p, x, conv.w, conv.b, y);
            b.batchnorm_plane_moments(&moments.p, y, moments.out);
        }
        Fused::BatchNormMaxPoolForward { norm, pool, x, y } => {
            let normalised = normalised(b, &norm, x);
            b.maxpool_forward(&pool, &normalised, y);
        }
        Fused::BatchNormMaxPoolBackward { norm, pool, x, dy, grads } => {
            let normalised = normalised(b, &norm, x);
            let dnormalised = b.scratch(norm.p.len());
            b.maxpool_backward(&MaxPoolParams { accumulate: 0, ..pool }, &normalised, dy, &dnormalised);
            b.batchnorm_backward(&norm, x, &dnormalised, grads);
        }
        Fused::BatchNormConv2dForward { norm, conv, x, y, moments } => {
            let normalised = normalised(b, &norm, x);
            b.conv2d_forward(&conv.p, &normalised, conv.w, conv.b, y);
            if let Some(m) = moments {
                b.batchnorm_plane_moments(&m.p, y, m.out);
            }
        }
        Fused::BatchNormConv2dBackward(op) => {
            let normalised = normalised(b, &op.norm, op.x);
            let dnormalised = b.scratch(op.norm.p.len());
            let input = Conv2dParams { accumulate: 0, ..op.conv.p };
            b.conv2d_backward_input(&input, op.dy, op.conv.w, &dnormalised);
            b.conv2d_backward_weight(&op.conv.p, &normalised, op.dy, op.conv_grads);
            b.batchnorm_backward(&op.norm, op.x, &dnormalised, op.grads);
        }
        Fused::Conv2dBatchNormConv2dBackward(op) => {
            let dz = b.scratch(op.norm.p.len());
            let p = BatchNormParams { accumulate: op.norm.p.accumulate & !ACCUMULATE_INPUT, ..op.norm.p };
            let norm = Norm { p, ..op.norm };
            let grads = NormGrads { dx: &dz, dgamma: op.dgamma, dbeta: op.dbeta };
            let (x, dy, conv, conv_grads) = (op.z, op.dy, op.conv, op.conv_grads);
            b.fused(Fused::BatchNormConv2dBackward(BatchNormConv2dBackward { norm, conv, x, dy, grads, conv_grads }));
            if let Some(dx) = op.dx {
                b.conv2d_backward_input(&op.first.p, &dz, op.first.w, dx);
            }
            b.conv2d_backward_weight(&op.first.p, op.x, &dz, op.first_grads);
        }
        Fused::PairContrastiveForward { pd, pc, x, t, d, loss } => {
            b.pair_distance_forward(&pd, x, d);
            b.contrastive_forward(&pc, d, t, loss);
        }
        Fused::LinearPairContrastiveForward(op) => {
            b.linear_forward(&op.linear, op.x, op.w, op.b, op.y);
            let (pd, pc, x, t, d, loss) = (op.pd, op.pc, op.y, op.t, op.d, op.loss);
            b.fused(Fused::PairContrastiveForward { pd, pc, x, t, d, loss });
        }
        Fused::PairContrastiveBackward(op) => {
            let dd = b.scratch(op.pd.n as usize);
            b.contrastive_backward(&ContrastiveParams { accumulate: 0, ..op.pc }, op.d, op.t, op.dloss, &dd);
            b.pair_distance_backward(&op.pd, op.x, op.d, &dd, op.dx);
        }
    }
}

/// BatchNorm's output, into scratch.
fn normalised<B: Backend>(b: &mut B, norm: &Norm<B::Tensor>, x: &B::Tensor) -> B::Tensor {
    let y = b.scratch(norm.p.len());
    b.batchnorm_normalise(norm, x, &y);
    y
}
