// contrastive.wgsl: the contrastive loss, mean over the batch of
// (1 − t)·d² + t·max(margin − d, 0)² with t = 0 for a same-class pair; forward and backward.
// Mirrors src/cpu/contrastive.rs (reference) and src/gpu/contrastive.rs (launchers).
//
// entry point            bindings 1.. (binding 0: ContrastiveParams)
// contrastive_forward    d, t, loss       one workgroup: a tree sum, the same bits every run
// contrastive_backward   d, t, dloss, dd  one invocation per pair

// src/params.rs ContrastiveParams
struct ContrastiveParams {
    n: u32,
    margin: f32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: ContrastiveParams;

@group(0) @binding(1) var<storage, read> d: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn contrastive_forward(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < p.n; i += WG) {
        let hinge = max(p.margin - d[i], 0.0);
        s += (1.0 - t[i]) * d[i] * d[i] + t[i] * hinge * hinge;
    }
    partial[lid.x] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if lid.x < stride {
            partial[lid.x] += partial[lid.x + stride];
        }
        workgroupBarrier();
    }
    if lid.x == 0u {
        loss[0] = partial[0] / f32(p.n);
    }
}

@group(0) @binding(3) var<storage, read> dloss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dd: array<f32>;

@compute @workgroup_size(WG)
fn contrastive_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n {
        return;
    }
    let scale = dloss[0] / f32(p.n);
    let g = scale * (2.0 * (1.0 - t[i]) * d[i] - 2.0 * t[i] * max(p.margin - d[i], 0.0));
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        dd[i] += g;
    } else {
        dd[i] = g;
    }
}
