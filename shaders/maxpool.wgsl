// maxpool.wgsl: MaxPool2d 2×2, stride 2 (floor mode), forward and backward.
// Mirrors src/cpu/maxpool.rs (reference) and src/gpu/maxpool.rs (launchers).
//
// entry point        bindings 1.. (binding 0: MaxPoolParams)
// maxpool_forward    x, y
// maxpool_backward   x, dy, dx    one invocation per input element
//
// The backward pass recomputes each window's argmax from x instead of saving it: the
// windows do not overlap, so every input element finds its one window and decides alone.

// src/params.rs MaxPoolParams
struct MaxPoolParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: MaxPoolParams;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// Flat input index of the maximum of window (nc, oh, ow): the first in row-major order
// on ties, and NaN wins, as in PyTorch.
fn window_argmax(nc: u32, oh: u32, ow: u32) -> u32 {
    let base = (nc * p.h + 2u * oh) * p.w + 2u * ow;
    var best = base;
    var best_v = x[base];
    for (var t = 1u; t < 4u; t++) {
        let j = base + (t / 2u) * p.w + t % 2u;
        let v = x[j];
        if v > best_v || v != v {
            best = j;
            best_v = v;
        }
    }
    return best;
}

@compute @workgroup_size(WG)
fn maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let oh_n = p.h / 2u;
    let ow_n = p.w / 2u;
    if i >= p.n * p.c * oh_n * ow_n {
        return;
    }
    let ow = i % ow_n;
    let oh = (i / ow_n) % oh_n;
    let nc = i / (ow_n * oh_n);
    y[i] = x[window_argmax(nc, oh, ow)];
}

@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn maxpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n * p.c * p.h * p.w {
        return;
    }
    let oh_n = p.h / 2u;
    let ow_n = p.w / 2u;
    let oh = (i / p.w) % p.h / 2u;
    let ow = i % p.w / 2u;
    let nc = i / (p.w * p.h);
    var g = 0.0;
    if oh < oh_n && ow < ow_n && window_argmax(nc, oh, ow) == i {
        g = dy[(nc * oh_n + oh) * ow_n + ow];
    }
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        dx[i] += g;
    } else {
        dx[i] = g;
    }
}
