// elementwise.wgsl: ReLU forward and backward, fill, accumulate, copy, and the image gather.
// Mirrors src/ops/elementwise.rs (params, reference) and src/gpu/elementwise.rs (launchers).
//
// One invocation per vec4 (the tensors' bindings cover whole vec4s, see src/gpu/mod.rs
// GpuTensor): a CPU driver loads a vec4 for about a third of the cost of four scalars.
//
// entry point     binding 0           bindings 1..
// fill            ElementwiseParams   out
// accumulate      ElementwiseParams   src, dst          (dst += src)
// copy            ElementwiseParams   src, dst
// relu_forward    ElementwiseParams   x, y
// relu_backward   ElementwiseParams   y, dy, dx
// gather_images   GatherParams        table (uniform), packed, indices, out    one per image
// gather_image_words  the same                                  one per vec4 out

// src/ops/ ElementwiseParams
struct ElementwiseParams {
    len: u32,
    value: f32,
    accumulate: u32,
    _pad: u32,
}

// src/ops/ GatherParams
struct GatherParams {
    n: u32,
    pixels: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: ElementwiseParams;

fn vec4s() -> u32 {
    return (p.len + 3u) / 4u;
}

@group(0) @binding(1) var<storage, read_write> fill_out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < vec4s() {
        fill_out[i] = vec4(p.value);
    }
}

@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < vec4s() {
        dst[i] += src[i];
    }
}

@compute @workgroup_size(WG)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < vec4s() {
        dst[i] = src[i];
    }
}

@group(0) @binding(1) var<storage, read> relu_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> relu_y: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < vec4s() {
        relu_y[i] = max(relu_x[i], vec4(0.0));
    }
}

@group(0) @binding(1) var<storage, read> relu_out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> relu_dy: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> relu_dx: array<vec4<f32>>;

// The gradient passes where the output is positive; at exactly 0 it is 0, as in PyTorch.
@compute @workgroup_size(WG)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < vec4s() {
        let g = select(vec4(0.0), relu_dy[i], relu_out[i] > vec4(0.0));
        if (p.accumulate & ACCUMULATE_INPUT) != 0u {
            relu_dx[i] += g;
        } else {
            relu_dx[i] = g;
        }
    }
}

@group(0) @binding(0) var<uniform> gp: GatherParams;

// float32(b) / 255 for every byte b, computed on the host so the GPU's division rounding
// cannot differ from PyTorch's; a uniform buffer, which a CPU driver reads with one vector gather.
struct PixelTable {
    v: array<vec4<f32>, 64>,
}

@group(0) @binding(1) var<uniform> table: PixelTable;
// The resident images, four u8 pixels to a u32, little-endian.
@group(0) @binding(2) var<storage, read> packed: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read_write> gathered: array<vec4<f32>>;

fn pixel(byte: u32) -> f32 {
    return table.v[byte / 4u][byte % 4u];
}

// One invocation per gathered image. Images of a multiple of 4 pixels are whole u32 words in
// and whole vec4s out; any other size goes byte by byte.
@compute @workgroup_size(8)
fn gather_images(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = gid.y * nwg.x * 8u + gid.x;
    if n >= gp.n {
        return;
    }
    let src = indices[n] * gp.pixels;
    let dst = n * gp.pixels;
    if gp.pixels % 4u == 0u {
        for (var k = 0u; k < gp.pixels / 4u; k++) {
            let w = packed[src / 4u + k];
            gathered[dst / 4u + k] = vec4(pixel(w & 0xffu), pixel((w >> 8u) & 0xffu), pixel((w >> 16u) & 0xffu), pixel(w >> 24u));
        }
    } else {
        for (var j = 0u; j < gp.pixels; j++) {
            let byte = src + j;
            let e = dst + j;
            gathered[e / 4u][e % 4u] = pixel((packed[byte / 4u] >> (8u * (byte % 4u))) & 0xffu);
        }
    }
}

// One invocation per output vec4, images of a multiple of 4 pixels (a GPU's shape:
// neighbouring invocations, neighbouring words); gather_images takes an image each.
@compute @workgroup_size(WG)
fn gather_image_words(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let words = gp.pixels / 4u;
    if i >= gp.n * words {
        return;
    }
    let w = packed[indices[i / words] * words + i % words];
    gathered[i] = vec4(pixel(w & 0xffu), pixel((w >> 8u) & 0xffu), pixel((w >> 16u) & 0xffu), pixel(w >> 24u));
}
