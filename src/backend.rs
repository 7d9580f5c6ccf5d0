//! The interface the tape drives: tensors, transfers and one method per op, implemented by
//! the CPU reference (`cpu::CpuBackend`) and the GPU (`gpu::GpuBackend`).
//!
//! Op methods mirror the CPU reference functions in `cpu/<family>.rs` and the WGSL entry
//! points in `shaders/<family>.wgsl`: same names, same argument order. Shapes travel in the
//! op's params struct (`params.rs`); tensors are flat, row-major, NCHW.

use crate::cpu::Float;
use crate::params::*;

/// Parameter views handed out by [`Backend::view`] start at a multiple of this many elements,
/// the 256-byte storage-binding alignment every wgpu adapter accepts.
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

    // --- storage ---------------------------------------------------------------------------
    /// A persistent tensor of zeros.
    fn zeros(&mut self, len: usize) -> Self::Tensor;
    /// A scratch tensor with unspecified contents, valid until the next [`Backend::reset_scratch`].
    /// Every op writes its whole output, so scratch never needs clearing.
    fn scratch(&mut self, len: usize) -> Self::Tensor;
    /// Hands all scratch back: the next step reuses the same storage, allocating nothing.
    fn reset_scratch(&mut self);
    /// Where kernels compile at their first run, starts compiling the ones recorded so far
    /// elsewhere, in parallel (src/gpu/compile_ahead.rs); warm-up only. Nothing by default.
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
        dw: &Self::Tensor,
        db: &Self::Tensor,
    );

    // --- batchnorm -------------------------------------------------------------------------
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_train(
        &mut self,
        p: &BatchNormParams,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        y: &Self::Tensor,
        saved: &Self::Tensor,
        running_mean: &Self::Tensor,
        running_var: &Self::Tensor,
    );
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_eval(
        &mut self,
        p: &BatchNormParams,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        running_mean: &Self::Tensor,
        running_var: &Self::Tensor,
        y: &Self::Tensor,
    );
    /// Train mode's statistics alone, into `saved` and the running statistics as
    /// `batchnorm_forward_train` leaves them, for the fused ops that normalise as they read.
    fn batchnorm_statistics(
        &mut self,
        p: &BatchNormParams,
        x: &Self::Tensor,
        saved: &Self::Tensor,
        running_mean: &Self::Tensor,
        running_var: &Self::Tensor,
    );
    /// Eval mode's, in `saved`'s layout: every tower's are the running mean and
    /// 1/√(running var + eps).
    fn batchnorm_running_statistics(
        &mut self,
        p: &BatchNormParams,
        running_mean: &Self::Tensor,
        running_var: &Self::Tensor,
        saved: &Self::Tensor,
    );
    /// y = BatchNorm(x) with the statistics in `saved`.
    fn batchnorm_normalise(
        &mut self,
        p: &BatchNormParams,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        saved: &Self::Tensor,
        y: &Self::Tensor,
    );
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &mut self,
        p: &BatchNormParams,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        gamma: &Self::Tensor,
        saved: &Self::Tensor,
        dx: &Self::Tensor,
        dgamma: &Self::Tensor,
        dbeta: &Self::Tensor,
    );

    // --- maxpool ---------------------------------------------------------------------------
    fn maxpool_forward(&mut self, p: &MaxPoolParams, x: &Self::Tensor, y: &Self::Tensor);
    fn maxpool_backward(&mut self, p: &MaxPoolParams, x: &Self::Tensor, dy: &Self::Tensor, dx: &Self::Tensor);

    /// A train-mode BatchNorm's output computed again from x, into scratch, for the default
    /// backwards of the fused ops that never kept it: the statistics come out the same as the
    /// forward's (deterministic kernels) and are not counted in the running ones.
    fn batchnorm_output_again(
        &mut self,
        pb: &BatchNormParams,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
    ) -> Self::Tensor {
        let c = pb.c as usize;
        let (normalised, again) = (self.scratch(pb.len()), self.scratch(pb.saved_len()));
        let (mean, var) = (self.scratch(c), self.scratch(c));
        self.batchnorm_forward_train(pb, x, gamma, beta, &normalised, &again, &mean, &var);
        normalised
    }

    // --- batchnorm then maxpool, fused ----------------------------------------------------------
    /// MaxPool2d(BatchNorm2d(x)) with the statistics in `saved` (`batchnorm_statistics` or
    /// `batchnorm_running_statistics`), BatchNorm's output never kept. By default the two ops
    /// in turn; the GPU pools straight from x, normalising as it reads.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_maxpool_forward(
        &mut self,
        pb: &BatchNormParams,
        pp: &MaxPoolParams,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        saved: &Self::Tensor,
        y: &Self::Tensor,
    ) {
        let normalised = self.scratch(pb.len());
        self.batchnorm_normalise(pb, x, gamma, beta, saved, &normalised);
        self.maxpool_forward(pp, &normalised, y);
    }
    /// Its backward, BatchNorm's included: dy is the pooled output's gradient, and dx, dgamma
    /// and dbeta are BatchNorm's, written or added as `pb.accumulate` says (as in
    /// `batchnorm_backward`; `pp.accumulate` is not read). By default BatchNorm's output is
    /// computed again (the same statistics, not counted in the running ones), pooled backward,
    /// and BatchNorm's backward goes on from its gradient; the GPU writes neither, reading x
    /// through the normalisation in both of its passes.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_maxpool_backward(
        &mut self,
        pb: &BatchNormParams,
        pp: &MaxPoolParams,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        saved: &Self::Tensor,
        dy: &Self::Tensor,
        dx: &Self::Tensor,
        dgamma: &Self::Tensor,
        dbeta: &Self::Tensor,
    ) {
        let normalised = self.batchnorm_output_again(pb, x, gamma, beta);
        let dnormalised = self.scratch(pb.len());
        self.maxpool_backward(&MaxPoolParams { accumulate: 0, ..*pp }, &normalised, dy, &dnormalised);
        self.batchnorm_backward(pb, x, &dnormalised, gamma, saved, dx, dgamma, dbeta);
    }

    // --- batchnorm then conv, fused -------------------------------------------------------------
    /// Conv2d(BatchNorm2d(x)) with the statistics in `saved`, as `batchnorm_maxpool_forward`.
    /// By default the two ops in turn; the GPU's subgroup kernels convolve straight from x,
    /// normalising as they load it.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_conv2d_forward(
        &mut self,
        pb: &BatchNormParams,
        pc: &Conv2dParams,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        saved: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        y: &Self::Tensor,
    ) {
        let normalised = self.scratch(pb.len());
        self.batchnorm_normalise(pb, x, gamma, beta, saved, &normalised);
        self.conv2d_forward(pc, &normalised, w, b, y);
    }
    /// Its backward, BatchNorm's included: dy is the conv output's gradient; dw and db are
    /// written or added as `pc.accumulate` says, dx, dgamma and dbeta as `pb.accumulate` says.
    /// By default BatchNorm's output is computed again (the same statistics, not counted in
    /// the running ones) for the conv's weight gradient; the GPU's subgroup kernels read x
    /// through the normalisation again instead.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_conv2d_backward(
        &mut self,
        pb: &BatchNormParams,
        pc: &Conv2dParams,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        saved: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        dx: &Self::Tensor,
        dgamma: &Self::Tensor,
        dbeta: &Self::Tensor,
        dw: &Self::Tensor,
        db: &Self::Tensor,
    ) {
        let normalised = self.batchnorm_output_again(pb, x, gamma, beta);
        let dnormalised = self.scratch(pb.len());
        self.conv2d_backward_input(&Conv2dParams { accumulate: 0, ..*pc }, dy, w, &dnormalised);
        self.conv2d_backward_weight(pc, &normalised, dy, dw, db);
        self.batchnorm_backward(pb, x, &dnormalised, gamma, saved, dx, dgamma, dbeta);
    }

    /// The backward of conv_b(BatchNorm2d(conv_a(xa))) in train mode (the forward being
    /// `conv2d_forward` of conv_a into z, then `batchnorm_conv2d_forward` of z): conv_b's and
    /// BatchNorm's gradients as in `batchnorm_conv2d_backward`, then conv_a's, dxa only where
    /// given. `pa.accumulate` applies to dxa, dwa and dba, `pb.accumulate`'s params bit to
    /// dgamma and dbeta. By default z's gradient goes to scratch and conv_a's backward reads
    /// it; the GPU's subgroup kernels read it through BatchNorm's backward instead where no
    /// dxa is wanted, so it is never written.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_batchnorm_conv2d_backward(
        &mut self,
        pa: &Conv2dParams,
        xa: &Self::Tensor,
        wa: &Self::Tensor,
        dxa: Option<&Self::Tensor>,
        dwa: &Self::Tensor,
        dba: &Self::Tensor,
        pb: &BatchNormParams,
        z: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        saved: &Self::Tensor,
        pc: &Conv2dParams,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        dgamma: &Self::Tensor,
        dbeta: &Self::Tensor,
        dw: &Self::Tensor,
        db: &Self::Tensor,
    ) {
        let dz = self.scratch(pb.len());
        let pb = BatchNormParams { accumulate: pb.accumulate & !ACCUMULATE_INPUT, ..*pb };
        self.batchnorm_conv2d_backward(&pb, pc, z, gamma, beta, saved, w, dy, &dz, dgamma, dbeta, dw, db);
        if let Some(dxa) = dxa {
            self.conv2d_backward_input(pa, &dz, wa, dxa);
        }
        self.conv2d_backward_weight(pa, xa, &dz, dwa, dba);
    }

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
    /// params bit), in one pass where the backend can (the GPU's narrow layers).
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &mut self,
        p: &LinearParams,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        dx: Option<&Self::Tensor>,
        dw: &Self::Tensor,
        db: &Self::Tensor,
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

    /// The contrastive loss of the pairs stacked in x (2N, D), distance and loss as one op:
    /// the distances into d (N) and the mean loss into `loss`. By default the two ops in turn;
    /// the GPU runs both in one workgroup.
    #[allow(clippy::too_many_arguments)]
    fn pair_contrastive_forward(
        &mut self,
        pd: &PairDistanceParams,
        pc: &ContrastiveParams,
        x: &Self::Tensor,
        t: &Self::Tensor,
        d: &Self::Tensor,
        loss: &Self::Tensor,
    ) {
        self.pair_distance_forward(pd, x, d);
        self.contrastive_forward(pc, d, t, loss);
    }
    /// Its backward, from the loss's gradient to x's (written or added as `pd.accumulate`
    /// says). By default the distances' gradient goes to scratch; the GPU never writes it.
    #[allow(clippy::too_many_arguments)]
    fn pair_contrastive_backward(
        &mut self,
        pd: &PairDistanceParams,
        pc: &ContrastiveParams,
        x: &Self::Tensor,
        d: &Self::Tensor,
        t: &Self::Tensor,
        dloss: &Self::Tensor,
        dx: &Self::Tensor,
    ) {
        let dd = self.scratch(pd.n as usize);
        self.contrastive_backward(&ContrastiveParams { accumulate: 0, ..*pc }, d, t, dloss, &dd);
        self.pair_distance_backward(pd, x, d, &dd, dx);
    }

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
}
