//! Launchers of shaders/elementwise.wgsl: ReLU, fill, accumulate, copy, the image gather.

use super::{GpuBackend, GpuImages, GpuTensor, Kernel};
use crate::backend::Backend;
use crate::cpu::pixel_table;
use crate::ops::{ElementwiseParams, GatherParams};

/// One invocation per vec4 (the bindings cover whole vec4s).
fn launch(gpu: &mut GpuBackend, kernel: Kernel, p: ElementwiseParams, buffers: &[&GpuTensor]) {
    gpu.dispatch(kernel, &p, buffers, GpuBackend::groups_for_vec4s(p.len as usize));
}

pub fn fill(gpu: &mut GpuBackend, t: &GpuTensor, value: f32) {
    launch(gpu, Kernel::Fill, ElementwiseParams { value, ..ElementwiseParams::new(t.len) }, &[t]);
}

pub fn accumulate(gpu: &mut GpuBackend, src: &GpuTensor, dst: &GpuTensor) {
    assert_eq!(src.len, dst.len, "accumulate: lengths");
    launch(gpu, Kernel::Accumulate, ElementwiseParams::new(dst.len), &[src, dst]);
}

/// A copy command between two buffers, the kernel within one.
pub fn copy(gpu: &mut GpuBackend, src: &GpuTensor, dst: &GpuTensor) {
    assert_eq!(src.len, dst.len, "copy: lengths");
    if src.buffer != dst.buffer {
        gpu.record_copy(src, dst);
    } else {
        launch(gpu, Kernel::Copy, ElementwiseParams::new(dst.len), &[src, dst]);
    }
}

pub fn relu_forward(gpu: &mut GpuBackend, x: &GpuTensor, y: &GpuTensor) {
    launch(gpu, Kernel::ReluForward, ElementwiseParams::new(x.len), &[x, y]);
}

pub fn relu_backward(gpu: &mut GpuBackend, y: &GpuTensor, dy: &GpuTensor, dx: &GpuTensor, accumulate: u32) {
    launch(gpu, Kernel::ReluBackward, ElementwiseParams { accumulate, ..ElementwiseParams::new(y.len) }, &[y, dy, dx]);
}

/// Packs the bytes four to a u32 (WGSL has no u8) and uploads them with the pixel table.
pub fn upload_images(gpu: &mut GpuBackend, pixels: &[u8], per_image: usize) -> GpuImages {
    assert!(
        per_image > 0 && pixels.len().is_multiple_of(per_image),
        "upload_images: {} bytes of {per_image}-pixel images",
        pixels.len()
    );
    let words: Vec<u32> = pixels.chunks(4).map(|c| c.iter().rev().fold(0u32, |w, &b| (w << 8) | b as u32)).collect();
    let packed = gpu.zeros(words.len().max(1));
    if !words.is_empty() {
        gpu.write_words(&packed, &words);
    }
    let table = gpu.upload(&pixel_table());
    GpuImages { packed, table, per_image, count: pixels.len() / per_image }
}

/// Invocations (images) per workgroup of `gather_images`.
const GATHER_WORKGROUP: u32 = 8;

/// Uploads the indices and gathers those images into `out` (N, P).
pub fn gather_images(gpu: &mut GpuBackend, images: &GpuImages, indices: &[u32], out: &GpuTensor) {
    assert_eq!(out.len, indices.len() * images.per_image, "gather_images: output size");
    assert!(indices.iter().all(|&i| (i as usize) < images.count), "gather_images: index out of range");
    let idx = gpu.scratch(indices.len());
    gpu.write_words(&idx, indices);
    let p = GatherParams { n: indices.len() as u32, pixels: images.per_image as u32, _pad: [0; 2] };
    let bindings = [&images.table, &images.packed, &idx, out];
    if images.per_image.is_multiple_of(4) && !gpu.plane_at_a_time() {
        gpu.dispatch(Kernel::GatherImageWords, &p, &bindings, GpuBackend::groups_for(out.len / 4));
    } else {
        gpu.dispatch(Kernel::GatherImages, &p, &bindings, (indices.len() as u32).div_ceil(GATHER_WORKGROUP));
    }
}
