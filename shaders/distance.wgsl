// distance.wgsl: the pairwise distance ‖a − b + eps‖₂ between the two towers, forward and
// backward. The towers are stacked along the batch: x is (2N, D), pair i is rows i and N + i.
// Mirrors src/ops/distance.rs (params, reference) and src/gpu/distance.rs (launchers).
//
// entry point              bindings 1.. (binding 0: PairDistanceParams)
// pair_distance_forward    x, d          one invocation per pair
// pair_distance_backward   x, d, dd, dx  one invocation per element of x

// src/ops/ PairDistanceParams
struct PairDistanceParams {
    n: u32,
    d: u32,
    eps: f32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: PairDistanceParams;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> fwd_d: array<f32>;

// a − b + eps for pair i, component k, as PyTorch computes it (the eps is added to the
// difference, so identical embeddings are still √D·eps apart).
fn diff(i: u32, k: u32) -> f32 {
    return x[i * p.d + k] - x[(p.n + i) * p.d + k] + p.eps;
}

@compute @workgroup_size(WG)
fn pair_distance_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.d; k++) {
        let v = diff(i, k);
        s += v * v;
    }
    fwd_d[i] = sqrt(s);
}

@group(0) @binding(2) var<storage, read> bwd_d: array<f32>;
@group(0) @binding(3) var<storage, read> bwd_dd: array<f32>;
@group(0) @binding(4) var<storage, read_write> bwd_dx: array<f32>;

// d/da = dd·(a − b + eps)/d and d/db = −d/da; 0 where d is 0, as PyTorch's norm backward.
@compute @workgroup_size(WG)
fn pair_distance_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if j >= 2u * p.n * p.d {
        return;
    }
    let row = j / p.d;
    let k = j % p.d;
    let i = row % p.n;
    let dist = bwd_d[i];
    let scale = select(bwd_dd[i] / dist, 0.0, dist == 0.0);
    let g = select(-1.0, 1.0, row < p.n) * (scale * diff(i, k));
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        bwd_dx[j] += g;
    } else {
        bwd_dx[j] = g;
    }
}
