// contrastive.wgsl: the contrastive loss, mean over the batch of
// (1 − t)·d² + t·max(margin − d, 0)² with t = 0 for a same-class pair; forward and backward.
// Mirrors src/ops/contrastive.rs (params, reference) and src/gpu/contrastive.rs (launchers).
//
// entry point            bindings 1.. (binding 0: ContrastiveParams)
// contrastive_forward    d, t, loss       one workgroup: a tree sum, the same bits every run
// contrastive_backward   d, t, dloss, dd  one invocation per pair
//
// With the pair distance in front (binding 0: PairContrastiveParams), one launch each way
// instead of two, the same bits as pair_distance_* (distance.wgsl) and the kernels above:
// pair_contrastive_forward    x, t, d, loss       one workgroup, as contrastive_forward
// pair_contrastive_backward   x, d, t, dloss, dx  one invocation per element of x
// And with the linear layer in front too (the loss head), forward only, the same bits as
// linear_forward_narrow (linear.wgsl), then pair_contrastive_forward:
// linear_pair_contrastive_forward   x, w, b, t, y, d, loss   one workgroup

// src/ops/ ContrastiveParams
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

// One pair's term of the loss; `label` is its target t (0: the same class).
fn loss_term(dist: f32, label: f32, margin: f32) -> f32 {
    let hinge = max(margin - dist, 0.0);
    return (1.0 - label) * dist * dist + label * hinge * hinge;
}

// The sum of every invocation's s, as a tree: the same bits every run.
fn workgroup_sum(lid: u32, s: f32) -> f32 {
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    return partial[0];
}

@compute @workgroup_size(WG)
fn contrastive_forward(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < p.n; i += WG) {
        s += loss_term(d[i], t[i], p.margin);
    }
    let total = workgroup_sum(lid.x, s);
    if lid.x == 0u {
        loss[0] = total / f32(p.n);
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

// src/ops/ PairContrastiveParams
struct PairContrastiveParams {
    n: u32,
    d: u32,
    eps: f32,
    margin: f32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> q: PairContrastiveParams;

@group(0) @binding(1) var<storage, read> pf_x: array<f32>;
@group(0) @binding(2) var<storage, read> pf_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> pf_d: array<f32>;
@group(0) @binding(4) var<storage, read_write> pf_loss: array<f32>;

@compute @workgroup_size(WG)
fn pair_contrastive_forward(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < q.n; i += WG) {
        // pair_distance_forward's sum.
        var sq = 0.0;
        for (var k = 0u; k < q.d; k++) {
            let v = pf_x[i * q.d + k] - pf_x[(q.n + i) * q.d + k] + q.eps;
            sq += v * v;
        }
        let dist = sqrt(sq);
        pf_d[i] = dist;
        s += loss_term(dist, pf_t[i], q.margin);
    }
    let total = workgroup_sum(lid.x, s);
    if lid.x == 0u {
        pf_loss[0] = total / f32(q.n);
    }
}

@group(0) @binding(1) var<storage, read> pb_x: array<f32>;
@group(0) @binding(2) var<storage, read> pb_d: array<f32>;
@group(0) @binding(3) var<storage, read> pb_t: array<f32>;
@group(0) @binding(4) var<storage, read> pb_dloss: array<f32>;
@group(0) @binding(5) var<storage, read_write> pb_dx: array<f32>;

// contrastive_backward's dd for the element's pair, then pair_distance_backward.
@compute @workgroup_size(WG)
fn pair_contrastive_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if j >= 2u * q.n * q.d {
        return;
    }
    let row = j / q.d;
    let k = j % q.d;
    let i = row % q.n;
    let dist = pb_d[i];
    let t = pb_t[i];
    let dd = pb_dloss[0] / f32(q.n) * (2.0 * (1.0 - t) * dist - 2.0 * t * max(q.margin - dist, 0.0));
    let scale = select(dd / dist, 0.0, dist == 0.0);
    let diff = pb_x[i * q.d + k] - pb_x[(q.n + i) * q.d + k] + q.eps;
    let g = select(-1.0, 1.0, row < q.n) * (scale * diff);
    if (q.accumulate & ACCUMULATE_INPUT) != 0u {
        pb_dx[j] += g;
    } else {
        pb_dx[j] = g;
    }
}

// The linear layer's shape (src/ops/ LinearParams: d_in, d_out ≤ 16, relu_input), as constants.
override HEAD_IN: u32 = 1u;
override HEAD_OUT: u32 = 1u;
override HEAD_RELU: u32 = 0u;

@group(0) @binding(1) var<storage, read> lh_x: array<f32>;
@group(0) @binding(2) var<storage, read> lh_w: array<f32>;
@group(0) @binding(3) var<storage, read> lh_b: array<f32>;
@group(0) @binding(4) var<storage, read> lh_t: array<f32>;
@group(0) @binding(5) var<storage, read_write> lh_y: array<f32>;
@group(0) @binding(6) var<storage, read_write> lh_d: array<f32>;
@group(0) @binding(7) var<storage, read_write> lh_loss: array<f32>;

// Row `row` of y = Linear(x), summed as linear_forward_narrow sums it; written, and returned.
fn embedding(row: u32) -> array<f32, 16> {
    var acc: array<f32, 16>;
    for (var o = 0u; o < HEAD_OUT; o++) {
        acc[o] = lh_b[o];
    }
    for (var k = 0u; k < HEAD_IN; k++) {
        let v = lh_x[row * HEAD_IN + k];
        let input = select(v, max(v, 0.0), HEAD_RELU != 0u);
        for (var o = 0u; o < HEAD_OUT; o++) {
            acc[o] += input * lh_w[o * HEAD_IN + k];
        }
    }
    for (var o = 0u; o < HEAD_OUT; o++) {
        lh_y[row * HEAD_OUT + o] = acc[o];
    }
    return acc;
}

// Each invocation takes the pairs pair_contrastive_forward's would, both embeddings of a pair
// in registers; the loss is the same tree.
@compute @workgroup_size(WG)
fn linear_pair_contrastive_forward(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < q.n; i += WG) {
        let a = embedding(i);
        let b = embedding(q.n + i);
        var sq = 0.0;
        for (var k = 0u; k < HEAD_OUT; k++) {
            let v = a[k] - b[k] + q.eps;
            sq += v * v;
        }
        let dist = sqrt(sq);
        lh_d[i] = dist;
        s += loss_term(dist, lh_t[i], q.margin);
    }
    let total = workgroup_sum(lid.x, s);
    if lid.x == 0u {
        lh_loss[0] = total / f32(q.n);
    }
}
