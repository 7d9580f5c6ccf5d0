//! The interface the tape drives: storage, transfers, one method per primitive op, and one
//! entry for fused ops (`fused`), implemented by the CPU reference and the GPU.
//!
//! Primitive methods mirror the CPU reference functions in `cpu/<family>.rs` and the WGSL
//! entry points in `shaders/<family>.wgsl`: same names, same argument order. Shapes travel
//! in the op's params struct (src/ops/); tensors are flat, row-major, NCHW. Where an op
//! takes more than a few tensors they travel in the small structs below.

use crate::float::Float;
use crate::fused::Fused;
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

/// A BatchNorm layer as the ops that normalise with it see it: its params, γ, β and the
/// statistics it normalises with (mean (T, C) then 1/std (T, C), `saved`).
#[derive(Debug)]
pub struct Norm<'a, T> {
    pub p: BatchNormParams,
    pub gamma: &'a T,
    pub beta: &'a T,
    pub saved: &'a T,
}

/// BatchNorm's running statistics (C each), updated in place by a train-mode forward.
#[derive(Debug)]
pub struct Running<'a, T> {
    pub mean: &'a T,
    pub var: &'a T,
}

/// Where a BatchNorm backward writes (or adds, by `p.accumulate`) dx, dγ and dβ.
#[derive(Debug)]
pub struct NormGrads<'a, T> {
    pub dx: &'a T,
    pub dgamma: &'a T,
    pub dbeta: &'a T,
}

/// A convolution layer: its params, weights (Cout, Cin, K, K) and bias (Cout).
#[derive(Debug)]
pub struct Conv<'a, T> {
    pub p: Conv2dParams,
    pub w: &'a T,
    pub b: &'a T,
}

/// Where a weight-gradient op writes (or adds, by its params' accumulate bit) dw and db.
#[derive(Debug)]
pub struct ParamGrads<'a, T> {
    pub dw: &'a T,
    pub db: &'a T,
}

/// Per-plane (mean, M2) of a BatchNorm's input as its params read it (through a ReLU where
/// they say so): what the op that wrote that input hands the BatchNorm, so that its
/// statistics need not read the input again.
#[derive(Debug)]
pub struct Moments<'a, T> {
    pub p: BatchNormParams,
    pub out: &'a T,
}

/// Clone and Copy for structs of references, whatever the tensor type (a derive would ask
/// the tensor to be Copy).
macro_rules! copy_refs {
    ($($t:ident),*) => {$(
        impl<T> Clone for $t<'_, T> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<T> Copy for $t<'_, T> {}
    )*};
}
pub(crate) use copy_refs;
copy_refs!(Norm, Running, NormGrads, Conv, ParamGrads, Moments);

pub trait Backend {
    /// Host-side element type: f32 on the GPU, f32 or f64 on the CPU reference.
    type Elem: Float;
    type Tensor: DeviceTensor;
    /// A set of u8 images resident on the device.
    type Images;

    /// What runs the ops, for messages and benchmark names.
    fn name(&self) -> String;

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
        op.lower(self)
    }
}
