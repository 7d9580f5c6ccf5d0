//! The GPU backend's Backend impl: storage from the scratch pool, each op to its launcher, the
//! selected driver's kernels (src/gpu/kernel_set.rs) tried first where it has any.

use super::*;

impl GpuBackend {
    /// y = conv(x), with y's plane moments into `moments` where asked: the one entry of conv
    /// forwards, plain and fused alike.
    pub(super) fn conv2d_moments_forward(
        &mut self,
        conv: Conv<GpuTensor>,
        [x, y]: [&GpuTensor; 2],
        moments: Option<Moments<GpuTensor>>,
    ) {
        let p = conv.p;
        assert_eq!(
            (x.len, conv.w.len, conv.b.len, y.len),
            (p.x_len(), p.w_len(), p.c_out as usize, p.y_len()),
            "conv2d_forward: {p:?}"
        );
        if !self.driver.is_some_and(|d| d.conv2d_forward(self, conv, [x, y], moments)) {
            conv2d::conv2d_forward(self, conv, [x, y], moments)
        }
    }
}

impl Backend for GpuBackend {
    type Elem = f32;
    type Tensor = GpuTensor;
    type Images = GpuImages;

    fn name(&self) -> String {
        format!("gpu-{}", self.ctx.adapter.name)
    }
    fn convs_hand_moments(&self) -> bool {
        self.plane_at_a_time()
    }

    fn zeros(&mut self, len: usize) -> GpuTensor {
        // New buffers are zero-initialised by wgpu.
        GpuTensor { buffer: self.create_buffer((len * 4) as u64, "tensor"), offset: 0, len }
    }
    fn scratch(&mut self, len: usize) -> GpuTensor {
        let bytes = ((len * 4) as u64).max(16).next_multiple_of(256);
        let (buffers, in_use) = self.scratch.by_size.entry(bytes).or_default();
        if *in_use == buffers.len() {
            let buffer = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("scratch"),
                size: bytes,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            });
            buffers.push(buffer);
            self.allocations += 1;
        }
        *in_use += 1;
        GpuTensor { buffer: buffers[*in_use - 1].clone(), offset: 0, len }
    }
    /// Where the kernel set compiles ahead (a driver that compiles each kernel at its first
    /// dispatch), starts it on the recorded kernels, and submits them.
    fn compile_ahead(&mut self) {
        if let (Some(driver), None) = (self.ctx.driver, &self.compiling_ahead) {
            self.compiling_ahead = driver.compile_ahead(self.kernels_built().to_vec());
            if self.compiling_ahead.is_some() {
                self.flush();
            }
        }
    }
    fn stop_compiling_ahead(&mut self) {
        if let Some(ahead) = &self.compiling_ahead {
            ahead.stop();
        }
    }
    fn one(&mut self) -> GpuTensor {
        if self.one.is_none() {
            self.one = Some(self.upload(&[1.0]));
        }
        self.one.clone().expect("made above")
    }
    fn reset_scratch(&mut self) {
        self.reset_weight_partials();
        for (_, in_use) in self.scratch.by_size.values_mut() {
            *in_use = 0;
        }
    }
    fn write(&mut self, t: &GpuTensor, data: &[f32]) {
        self.write_words(t, data);
    }
    fn read(&mut self, t: &GpuTensor) -> Vec<f32> {
        self.read_words(t)
    }

    fn upload_images(&mut self, pixels: &[u8], per_image: usize) -> GpuImages {
        elementwise::upload_images(self, pixels, per_image)
    }
    fn gather_images(&mut self, images: &GpuImages, indices: &[u32], out: &GpuTensor) {
        elementwise::gather_images(self, images, indices, out)
    }

    fn fill(&mut self, t: &GpuTensor, value: f32) {
        elementwise::fill(self, t, value)
    }
    fn accumulate(&mut self, src: &GpuTensor, dst: &GpuTensor) {
        elementwise::accumulate(self, src, dst)
    }
    fn copy(&mut self, src: &GpuTensor, dst: &GpuTensor) {
        elementwise::copy(self, src, dst)
    }
    fn relu_forward(&mut self, x: &GpuTensor, y: &GpuTensor) {
        elementwise::relu_forward(self, x, y)
    }
    fn relu_backward(&mut self, y: &GpuTensor, dy: &GpuTensor, dx: &GpuTensor, accumulate: u32) {
        elementwise::relu_backward(self, y, dy, dx, accumulate)
    }

    fn conv2d_forward(&mut self, p: &Conv2dParams, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor, y: &GpuTensor) {
        self.conv2d_moments_forward(Conv { p: *p, w, b }, [x, y], None)
    }
    fn conv2d_backward_input(&mut self, p: &Conv2dParams, dy: &GpuTensor, w: &GpuTensor, dx: &GpuTensor) {
        self.conv2d_backward(p, dy, Some((w, dx)), None)
    }
    fn conv2d_backward_weight(&mut self, p: &Conv2dParams, x: &GpuTensor, dy: &GpuTensor, g: ParamGrads<GpuTensor>) {
        self.conv2d_backward(p, dy, None, Some((x, g)))
    }
    /// The driver's kernels take the parts they cover; the rest go to one launch where the
    /// shape allows (src/gpu/conv2d.rs).
    fn conv2d_backward(
        &mut self,
        p: &Conv2dParams,
        dy: &GpuTensor,
        input: Option<(&GpuTensor, &GpuTensor)>,
        weight: Option<(&GpuTensor, ParamGrads<GpuTensor>)>,
    ) {
        assert_eq!(dy.len, p.y_len(), "conv2d_backward: dy for {p:?}");
        let input_sizes = input.map(|(w, dx)| (w.len, dx.len));
        assert!(input_sizes.is_none_or(|s| s == (p.w_len(), p.x_len())), "conv2d_backward: w, dx for {p:?}");
        let weight_sizes = weight.map(|(x, g)| (x.len, g.dw.len, g.db.len));
        let expected = (p.x_len(), p.w_len(), p.c_out as usize);
        assert!(weight_sizes.is_none_or(|s| s == expected), "conv2d_backward: x, dw, db for {p:?}");
        let driver = self.driver;
        let input = input.filter(|(w, dx)| !driver.is_some_and(|d| d.conv2d_backward_input(self, p, dy, w, dx)));
        let weight = weight.filter(|(x, g)| !driver.is_some_and(|d| d.conv2d_backward_weight(self, p, [x, dy], *g)));
        conv2d::conv2d_backward(self, p, dy, input, weight)
    }

    fn batchnorm_plane_moments(&mut self, p: &BatchNormParams, x: &GpuTensor, moments: &GpuTensor) {
        batchnorm::batchnorm_plane_moments(self, p, x, moments)
    }
    fn batchnorm_statistics(
        &mut self,
        p: &BatchNormParams,
        x: &GpuTensor,
        moments: Option<&GpuTensor>,
        saved: &GpuTensor,
        running: Running<GpuTensor>,
    ) {
        batchnorm::batchnorm_statistics(self, p, x, moments, saved, running)
    }
    fn batchnorm_running_statistics(&mut self, p: &BatchNormParams, running: Running<GpuTensor>, saved: &GpuTensor) {
        batchnorm::batchnorm_running_statistics(self, p, running, saved)
    }
    fn batchnorm_normalise(&mut self, n: &Norm<GpuTensor>, x: &GpuTensor, y: &GpuTensor) {
        batchnorm::batchnorm_normalise(self, n, x, y)
    }
    fn batchnorm_backward(&mut self, n: &Norm<GpuTensor>, x: &GpuTensor, dy: &GpuTensor, g: NormGrads<GpuTensor>) {
        batchnorm::batchnorm_backward(self, n, x, dy, g)
    }

    fn maxpool_forward(&mut self, p: &MaxPoolParams, x: &GpuTensor, y: &GpuTensor) {
        maxpool::maxpool_forward(self, p, x, y)
    }
    fn maxpool_backward(&mut self, p: &MaxPoolParams, x: &GpuTensor, dy: &GpuTensor, dx: &GpuTensor) {
        maxpool::maxpool_backward(self, p, x, dy, dx)
    }

    fn linear_forward(&mut self, p: &LinearParams, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor, y: &GpuTensor) {
        linear::linear_forward(self, p, x, w, b, y)
    }
    fn linear_backward(
        &mut self,
        p: &LinearParams,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
        dx: Option<&GpuTensor>,
        g: ParamGrads<GpuTensor>,
    ) {
        linear::linear_backward(self, p, (x, w, dy), dx, g)
    }

    fn pair_distance_forward(&mut self, p: &PairDistanceParams, x: &GpuTensor, d: &GpuTensor) {
        distance::pair_distance_forward(self, p, x, d)
    }
    fn pair_distance_backward(
        &mut self,
        p: &PairDistanceParams,
        x: &GpuTensor,
        d: &GpuTensor,
        dd: &GpuTensor,
        dx: &GpuTensor,
    ) {
        distance::pair_distance_backward(self, p, x, d, dd, dx)
    }
    fn contrastive_forward(&mut self, p: &ContrastiveParams, d: &GpuTensor, t: &GpuTensor, loss: &GpuTensor) {
        contrastive::contrastive_forward(self, p, d, t, loss)
    }
    fn contrastive_backward(
        &mut self,
        p: &ContrastiveParams,
        d: &GpuTensor,
        t: &GpuTensor,
        dloss: &GpuTensor,
        dd: &GpuTensor,
    ) {
        contrastive::contrastive_backward(self, p, d, t, dloss, dd)
    }

    /// Every fused op has kernels of its own here; the driver's, where selected, go first.
    fn fused(&mut self, op: Fused<GpuTensor>) {
        if self.driver.is_some_and(|d| d.fused(self, &op)) {
            return;
        }
        match op {
            Fused::Conv2dMomentsForward { conv, x, y, moments } => {
                self.conv2d_moments_forward(conv, [x, y], Some(moments))
            }
            Fused::BatchNormMaxPoolForward { norm, pool, x, y } => {
                maxpool::batchnorm_maxpool_forward(self, &norm, &pool, x, y)
            }
            Fused::BatchNormMaxPoolBackward { norm, pool, x, dy, grads } => {
                maxpool::batchnorm_maxpool_backward(self, &norm, &pool, (x, dy), grads)
            }
            Fused::BatchNormConv2dForward { norm, conv, x, y, moments } => {
                conv2d::batchnorm_conv2d_forward(self, (norm, conv), x, y, moments)
            }
            Fused::BatchNormConv2dBackward(op) => conv2d::batchnorm_conv2d_backward(self, &op),
            Fused::Conv2dBatchNormConv2dBackward(op) => conv2d::conv2d_batchnorm_conv2d_backward(self, &op),
            Fused::PairContrastiveForward { pd, pc, x, t, d, loss } => {
                contrastive::pair_contrastive_forward(self, (&pd, &pc), (x, t), d, loss)
            }
            Fused::PairContrastiveBackward(op) => contrastive::pair_contrastive_backward(self, &op),
            Fused::LinearPairContrastiveForward(op) => contrastive::linear_pair_contrastive_forward(self, op),
        }
    }

    fn adam_step(
        &mut self,
        cfg: &AdamConfig,
        t: u64,
        params: &GpuTensor,
        grads: &GpuTensor,
        m: &GpuTensor,
        v: &GpuTensor,
    ) {
        optim::adam_step(self, cfg, t, params, grads, m, v)
    }
}
