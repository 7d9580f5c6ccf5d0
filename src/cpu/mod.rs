//! `CpuBackend`: the tape run on the ops' CPU reference (src/ops/, plain loops, one file per
//! op family mirroring `shaders/`), in f32 or f64.
//!
//! The reference is written for clarity, not speed: it is what the GPU is held to and what
//! finite differences check, and every sum is carried in f64 (see [`Float`]).

pub use crate::float::{Float, decimal, store};
pub use crate::ops::*;

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::backend::{Backend, DeviceTensor, Norm, NormGrads, ParamGrads, Running, VIEW_ALIGN};

/// A view of `len` elements from `offset` into shared host storage.
#[derive(Clone, Debug)]
pub struct CpuTensor<F> {
    data: Rc<RefCell<Vec<F>>>,
    offset: usize,
    len: usize,
}

impl<F: Float> DeviceTensor for CpuTensor<F> {
    fn len(&self) -> usize {
        self.len
    }
    fn view(&self, offset: usize, len: usize) -> Self {
        assert!(
            offset.is_multiple_of(VIEW_ALIGN) && offset + len <= self.len,
            "cpu: bad view {offset}+{len} of {}",
            self.len
        );
        CpuTensor { data: self.data.clone(), offset: self.offset + offset, len }
    }
}

/// Runs every op through the reference functions in this module, in precision `F`.
#[derive(Default)]
pub struct CpuBackend<F> {
    _f: PhantomData<F>,
}

impl<F: Float> CpuBackend<F> {
    pub fn new() -> Self {
        Self { _f: PhantomData }
    }
}

/// A copy of the tensor's elements. Ops read their inputs into copies and write their outputs
/// back, so views of one buffer (the flat parameters and gradients) never alias a borrow.
fn get<F: Float>(t: &Tensor<F>) -> Vec<F> {
    t.data.borrow()[t.offset..t.offset + t.len].to_vec()
}

fn put<F: Float>(t: &Tensor<F>, v: &[F]) {
    assert_eq!(v.len(), t.len, "cpu: writing {} elements into a tensor of {}", v.len(), t.len);
    t.data.borrow_mut()[t.offset..t.offset + t.len].copy_from_slice(v);
}

/// Runs `f` on a copy of `out` and writes the result back.
fn update<F: Float>(out: &Tensor<F>, f: impl FnOnce(&mut [F])) {
    let mut v = get(out);
    f(&mut v);
    put(out, &v);
}

type Tensor<F> = CpuTensor<F>;

fn f32s<F: Float>(v: f32) -> F {
    F::from_f64(v as f64)
}

impl<F: Float> Backend for CpuBackend<F> {
    type Elem = F;
    type Tensor = Tensor<F>;
    type Images = (Vec<u8>, usize);

    fn name(&self) -> String {
        format!("cpu-{}", F::NAME)
    }

    fn zeros(&mut self, len: usize) -> Tensor<F> {
        CpuTensor { data: Rc::new(RefCell::new(vec![F::ZERO; len])), offset: 0, len }
    }
    fn scratch(&mut self, len: usize) -> Tensor<F> {
        self.zeros(len)
    }
    fn reset_scratch(&mut self) {}
    fn write(&mut self, t: &Tensor<F>, data: &[F]) {
        put(t, data);
    }
    fn read(&mut self, t: &Tensor<F>) -> Vec<F> {
        get(t)
    }

    fn upload_images(&mut self, pixels: &[u8], per_image: usize) -> (Vec<u8>, usize) {
        (pixels.to_vec(), per_image)
    }
    fn gather_images(&mut self, images: &(Vec<u8>, usize), indices: &[u32], out: &Tensor<F>) {
        update(out, |o| gather_images(&images.0, images.1, indices, o));
    }

    fn fill(&mut self, t: &Tensor<F>, value: f32) {
        update(t, |o| fill(o, f32s(value)));
    }
    fn accumulate(&mut self, src: &Tensor<F>, dst: &Tensor<F>) {
        let s = get(src);
        update(dst, |d| accumulate(&s, d));
    }
    fn copy(&mut self, src: &Tensor<F>, dst: &Tensor<F>) {
        put(dst, &get(src));
    }
    fn relu_forward(&mut self, x: &Tensor<F>, y: &Tensor<F>) {
        let x = get(x);
        update(y, |y| relu_forward(&x, y));
    }
    fn relu_backward(&mut self, y: &Tensor<F>, dy: &Tensor<F>, dx: &Tensor<F>, accumulate: u32) {
        let (y, dy) = (get(y), get(dy));
        update(dx, |dx| relu_backward(&y, &dy, dx, accumulate));
    }

    fn conv2d_forward(&mut self, p: &Conv2dParams, x: &Tensor<F>, w: &Tensor<F>, b: &Tensor<F>, y: &Tensor<F>) {
        let (x, w, b) = (get(x), get(w), get(b));
        update(y, |y| conv2d_forward(p, &x, &w, &b, y));
    }
    fn conv2d_backward_input(&mut self, p: &Conv2dParams, dy: &Tensor<F>, w: &Tensor<F>, dx: &Tensor<F>) {
        let (dy, w) = (get(dy), get(w));
        update(dx, |dx| conv2d_backward_input(p, &dy, &w, dx));
    }
    fn conv2d_backward_weight(&mut self, p: &Conv2dParams, x: &Tensor<F>, dy: &Tensor<F>, g: ParamGrads<Tensor<F>>) {
        let (x, dy, mut db) = (get(x), get(dy), get(g.db));
        update(g.dw, |dw| conv2d_backward_weight(p, &x, &dy, dw, &mut db));
        put(g.db, &db);
    }

    fn batchnorm_plane_moments(&mut self, p: &BatchNormParams, x: &Tensor<F>, moments: &Tensor<F>) {
        let x = get(x);
        update(moments, |m| batchnorm_plane_moments(p, &x, m));
    }
    /// Reads x whether or not moments are given: the reference takes no shortcuts.
    fn batchnorm_statistics(
        &mut self,
        p: &BatchNormParams,
        x: &Tensor<F>,
        _moments: Option<&Tensor<F>>,
        saved: &Tensor<F>,
        running: Running<Tensor<F>>,
    ) {
        let x = get(x);
        let (mut saved_v, mut rm, mut rv) = (get(saved), get(running.mean), get(running.var));
        batchnorm_statistics(p, &x, &mut saved_v, &mut rm, &mut rv);
        put(saved, &saved_v);
        put(running.mean, &rm);
        put(running.var, &rv);
    }
    fn batchnorm_running_statistics(&mut self, p: &BatchNormParams, running: Running<Tensor<F>>, saved: &Tensor<F>) {
        let (rm, rv) = (get(running.mean), get(running.var));
        update(saved, |saved| batchnorm_running_statistics(p, &rm, &rv, saved));
    }
    fn batchnorm_normalise(&mut self, n: &Norm<Tensor<F>>, x: &Tensor<F>, y: &Tensor<F>) {
        let (x, gamma, beta, saved) = (get(x), get(n.gamma), get(n.beta), get(n.saved));
        update(y, |y| batchnorm_normalise(&n.p, &x, &gamma, &beta, &saved, y));
    }
    fn batchnorm_backward(&mut self, n: &Norm<Tensor<F>>, x: &Tensor<F>, dy: &Tensor<F>, g: NormGrads<Tensor<F>>) {
        let (x, dy, gamma, saved) = (get(x), get(dy), get(n.gamma), get(n.saved));
        let (mut dx, mut dgamma, mut dbeta) = (get(g.dx), get(g.dgamma), get(g.dbeta));
        let grads = BatchNormGrads { dx: &mut dx, dgamma: &mut dgamma, dbeta: &mut dbeta };
        batchnorm_backward(&n.p, &x, &dy, &gamma, &saved, grads);
        put(g.dx, &dx);
        put(g.dgamma, &dgamma);
        put(g.dbeta, &dbeta);
    }

    fn maxpool_forward(&mut self, p: &MaxPoolParams, x: &Tensor<F>, y: &Tensor<F>) {
        let x = get(x);
        update(y, |y| maxpool_forward(p, &x, y));
    }
    fn maxpool_backward(&mut self, p: &MaxPoolParams, x: &Tensor<F>, dy: &Tensor<F>, dx: &Tensor<F>) {
        let (x, dy) = (get(x), get(dy));
        update(dx, |dx| maxpool_backward(p, &x, &dy, dx));
    }

    fn linear_forward(&mut self, p: &LinearParams, x: &Tensor<F>, w: &Tensor<F>, b: &Tensor<F>, y: &Tensor<F>) {
        let (x, w, b) = (get(x), get(w), get(b));
        update(y, |y| linear_forward(p, &x, &w, &b, y));
    }
    fn linear_backward(
        &mut self,
        p: &LinearParams,
        x: &Tensor<F>,
        w: &Tensor<F>,
        dy: &Tensor<F>,
        dx: Option<&Tensor<F>>,
        g: ParamGrads<Tensor<F>>,
    ) {
        let (x, w, dy, mut db) = (get(x), get(w), get(dy), get(g.db));
        if let Some(dx) = dx {
            update(dx, |dx| linear_backward_input(p, &x, &dy, &w, dx));
        }
        update(g.dw, |dw| linear_backward_weight(p, &x, &dy, dw, &mut db));
        put(g.db, &db);
    }

    fn pair_distance_forward(&mut self, p: &PairDistanceParams, x: &Tensor<F>, d: &Tensor<F>) {
        let x = get(x);
        update(d, |d| pair_distance_forward(p, &x, d));
    }
    fn pair_distance_backward(
        &mut self,
        p: &PairDistanceParams,
        x: &Tensor<F>,
        d: &Tensor<F>,
        dd: &Tensor<F>,
        dx: &Tensor<F>,
    ) {
        let (x, d, dd) = (get(x), get(d), get(dd));
        update(dx, |dx| pair_distance_backward(p, &x, &d, &dd, dx));
    }
    fn contrastive_forward(&mut self, p: &ContrastiveParams, d: &Tensor<F>, t: &Tensor<F>, loss: &Tensor<F>) {
        let (d, t) = (get(d), get(t));
        update(loss, |l| contrastive_forward(p, &d, &t, l));
    }
    fn contrastive_backward(
        &mut self,
        p: &ContrastiveParams,
        d: &Tensor<F>,
        t: &Tensor<F>,
        dloss: &Tensor<F>,
        dd: &Tensor<F>,
    ) {
        let (d, t, dl) = (get(d), get(t), get(dloss));
        update(dd, |dd| contrastive_backward(p, &d, &t, &dl, dd));
    }

    fn adam_step(
        &mut self,
        cfg: &AdamConfig,
        t: u64,
        params: &Tensor<F>,
        grads: &Tensor<F>,
        m: &Tensor<F>,
        v: &Tensor<F>,
    ) {
        let (mut p_v, g, mut m_v, mut v_v) = (get(params), get(grads), get(m), get(v));
        adam_step(cfg, t, &mut p_v, &g, &mut m_v, &mut v_v);
        put(params, &p_v);
        put(m, &m_v);
        put(v, &v_v);
    }
}
