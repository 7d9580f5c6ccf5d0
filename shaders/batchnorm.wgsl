// batchnorm.wgsl: BatchNorm2d with per-tower batch statistics (train), running statistics
// (eval), and the backward pass. Reductions are tree sums in workgroup memory, one
// workgroup per channel, in a fixed order: the same bits on every run.
// Mirrors src/cpu/batchnorm.rs (reference) and src/gpu/batchnorm.rs (launchers).
//
// entry point                 bindings 1.. (binding 0: BatchNormParams)
// batchnorm_stats             x, saved, running_mean, running_var   one workgroup per channel
// batchnorm_forward           x, gamma, beta, saved, y
// batchnorm_forward_eval      x, gamma, beta, running_mean, running_var, y
// batchnorm_backward_reduce   x, dy, saved, sums, dgamma, dbeta     one workgroup per channel
// batchnorm_backward_input    x, dy, gamma, saved, sums, dx
//
// x, y, dy, dx are (N, C, H·W); the batch is `towers` slices of N / towers images, each
// normalised with its own statistics. saved = mean (T, C) then 1/std (T, C);
// sums = Σdy (T, C) then Σdy·x̂ (T, C).

// src/params.rs BatchNormParams
struct BatchNormParams {
    n: u32,
    c: u32,
    hw: u32,
    towers: u32,
    eps: f32,
    momentum: f32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: BatchNormParams;

var<workgroup> partial: array<f32, WG>;

// The sum of every invocation's `v`; call from uniform control flow.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Everyone reads the total before the next call overwrites it.
    workgroupBarrier();
    return total;
}

fn tower_n() -> u32 {
    return p.n / p.towers;
}

// Flat index of the j-th element of channel c in tower g.
fn element(g: u32, c: u32, j: u32) -> u32 {
    let n = g * tower_n() + j / p.hw;
    return (n * p.c + c) * p.hw + j % p.hw;
}

// Tower of the flat element index i, and its channel.
fn tower_of(i: u32) -> u32 {
    return i / (p.c * p.hw) / tower_n();
}

fn channel_of(i: u32) -> u32 {
    return (i / p.hw) % p.c;
}

@group(0) @binding(1) var<storage, read> st_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_saved: array<f32>;
@group(0) @binding(3) var<storage, read_write> st_running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> st_running_var: array<f32>;

// Mean and biased variance (two passes, for accuracy) of each tower, then the running
// statistics' update, one tower after the other as separate calls would do it.
@compute @workgroup_size(WG)
fn batchnorm_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x;
    let m = tower_n() * p.hw;
    for (var g = 0u; g < p.towers; g++) {
        var s = 0.0;
        for (var j = lid.x; j < m; j += WG) {
            s += st_x[element(g, c, j)];
        }
        let mean = workgroup_sum(s, lid.x) / f32(m);
        var q = 0.0;
        for (var j = lid.x; j < m; j += WG) {
            let d = st_x[element(g, c, j)] - mean;
            q += d * d;
        }
        let variance = workgroup_sum(q, lid.x) / f32(m);
        if lid.x == 0u {
            st_saved[g * p.c + c] = mean;
            st_saved[(p.towers + g) * p.c + c] = 1.0 / sqrt(variance + p.eps);
            let unbiased = variance * f32(m) / f32(max(m, 2u) - 1u);
            st_running_mean[c] = (1.0 - p.momentum) * st_running_mean[c] + p.momentum * mean;
            st_running_var[c] = (1.0 - p.momentum) * st_running_var[c] + p.momentum * unbiased;
        }
    }
}

@group(0) @binding(1) var<storage, read> fw_x: array<f32>;
@group(0) @binding(2) var<storage, read> fw_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> fw_beta: array<f32>;
@group(0) @binding(4) var<storage, read> fw_saved: array<f32>;
@group(0) @binding(5) var<storage, read_write> fw_y: array<f32>;

@compute @workgroup_size(WG)
fn batchnorm_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n * p.c * p.hw {
        return;
    }
    let c = channel_of(i);
    let gc = tower_of(i) * p.c + c;
    let mean = fw_saved[gc];
    let invstd = fw_saved[p.towers * p.c + gc];
    fw_y[i] = (fw_x[i] - mean) * invstd * fw_gamma[c] + fw_beta[c];
}

@group(0) @binding(1) var<storage, read> ev_x: array<f32>;
@group(0) @binding(2) var<storage, read> ev_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> ev_beta: array<f32>;
@group(0) @binding(4) var<storage, read> ev_running_mean: array<f32>;
@group(0) @binding(5) var<storage, read> ev_running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> ev_y: array<f32>;

@compute @workgroup_size(WG)
fn batchnorm_forward_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n * p.c * p.hw {
        return;
    }
    let c = channel_of(i);
    let invstd = 1.0 / sqrt(ev_running_var[c] + p.eps);
    ev_y[i] = (ev_x[i] - ev_running_mean[c]) * invstd * ev_gamma[c] + ev_beta[c];
}

@group(0) @binding(1) var<storage, read> br_x: array<f32>;
@group(0) @binding(2) var<storage, read> br_dy: array<f32>;
@group(0) @binding(3) var<storage, read> br_saved: array<f32>;
@group(0) @binding(4) var<storage, read_write> br_sums: array<f32>;
@group(0) @binding(5) var<storage, read_write> br_dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> br_dbeta: array<f32>;

// Σdy and Σdy·x̂ of each tower; dγ and dβ are their sums over the towers.
@compute @workgroup_size(WG)
fn batchnorm_backward_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x;
    let m = tower_n() * p.hw;
    var dgamma = 0.0;
    var dbeta = 0.0;
    for (var g = 0u; g < p.towers; g++) {
        let mean = br_saved[g * p.c + c];
        let invstd = br_saved[(p.towers + g) * p.c + c];
        var s = 0.0;
        var sx = 0.0;
        for (var j = lid.x; j < m; j += WG) {
            let e = element(g, c, j);
            let dy = br_dy[e];
            s += dy;
            sx += dy * (br_x[e] - mean) * invstd;
        }
        let sum_dy = workgroup_sum(s, lid.x);
        let sum_dy_xhat = workgroup_sum(sx, lid.x);
        if lid.x == 0u {
            br_sums[g * p.c + c] = sum_dy;
            br_sums[(p.towers + g) * p.c + c] = sum_dy_xhat;
        }
        dgamma += sum_dy_xhat;
        dbeta += sum_dy;
    }
    if lid.x == 0u {
        if (p.accumulate & ACCUMULATE_PARAMS) != 0u {
            br_dgamma[c] += dgamma;
            br_dbeta[c] += dbeta;
        } else {
            br_dgamma[c] = dgamma;
            br_dbeta[c] = dbeta;
        }
    }
}

@group(0) @binding(1) var<storage, read> bi_x: array<f32>;
@group(0) @binding(2) var<storage, read> bi_dy: array<f32>;
@group(0) @binding(3) var<storage, read> bi_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> bi_saved: array<f32>;
@group(0) @binding(5) var<storage, read> bi_sums: array<f32>;
@group(0) @binding(6) var<storage, read_write> bi_dx: array<f32>;

// dx = γ·invstd·(dy − Σdy/M − x̂·Σdy·x̂/M), per tower.
@compute @workgroup_size(WG)
fn batchnorm_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n * p.c * p.hw {
        return;
    }
    let c = channel_of(i);
    let gc = tower_of(i) * p.c + c;
    let gc2 = p.towers * p.c + gc;
    let m = f32(tower_n() * p.hw);
    let invstd = bi_saved[gc2];
    let xhat = (bi_x[i] - bi_saved[gc]) * invstd;
    let g = bi_gamma[c] * invstd * (bi_dy[i] - bi_sums[gc] / m - xhat * bi_sums[gc2] / m);
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        bi_dx[i] += g;
    } else {
        bi_dx[i] = g;
    }
}
