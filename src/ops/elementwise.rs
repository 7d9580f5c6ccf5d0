//! Elementwise ops: params and CPU reference of ReLU, fill, accumulate and the image gather.

use bytemuck::{Pod, Zeroable};

use super::ACCUMULATE_INPUT;
use crate::float::{Float, store};

/// A plain elementwise op over `len` elements (ReLU, fill, accumulate).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ElementwiseParams {
    pub len: u32,
    pub value: f32,
    pub accumulate: u32,
    pub _pad: u32,
}

impl ElementwiseParams {
    pub fn new(len: usize) -> Self {
        Self { len: len as u32, value: 0.0, accumulate: 0, _pad: 0 }
    }
}

/// Gather of `n` u8 images (packed four to a u32 on the GPU) into a normalised f32 batch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GatherParams {
    pub n: u32,
    /// Pixels per image.
    pub pixels: u32,
    pub _pad: [u32; 2],
}

/// y = max(x, 0).
pub fn relu_forward<F: Float>(x: &[F], y: &mut [F]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = if x > F::ZERO { x } else { F::ZERO };
    }
}

/// dx = dy where y > 0, else 0 (PyTorch's convention: the gradient at exactly 0 is 0).
pub fn relu_backward<F: Float>(y: &[F], dy: &[F], dx: &mut [F], accumulate: u32) {
    for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
        store(dx, if y > F::ZERO { dy } else { F::ZERO }, accumulate & ACCUMULATE_INPUT != 0);
    }
}

pub fn fill<F: Float>(x: &mut [F], value: F) {
    x.fill(value);
}

/// dst += src.
pub fn accumulate<F: Float>(src: &[F], dst: &mut [F]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// The 256 values a pixel byte can take, as PyTorch computes them: float32(p) / float32(255).
/// The GPU reads the same table, so both sides see bit-identical inputs.
pub fn pixel_table() -> [f32; 256] {
    std::array::from_fn(|p| p as f32 / 255.0)
}

/// out[i, :] = pixels of image indices[i], each byte mapped through [`pixel_table`].
pub fn gather_images<F: Float>(
    images: &[u8],   // (M, P)
    pixels: usize,   // P
    indices: &[u32], // (N)
    out: &mut [F],   // (N, P)
) {
    let table = pixel_table();
    for (row, &i) in out.chunks_exact_mut(pixels).zip(indices) {
        let src = &images[i as usize * pixels..][..pixels];
        for (o, &b) in row.iter_mut().zip(src) {
            *o = F::from_f64(table[b as usize] as f64);
        }
    }
}
