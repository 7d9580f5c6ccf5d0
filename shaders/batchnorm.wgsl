// batchnorm.wgsl: BatchNorm2d with per-tower batch statistics (train), running statistics
// (eval), and the backward pass. Mirrors src/cpu/batchnorm.rs (reference) and
// src/gpu/batchnorm.rs (launchers).
//
// entry point                 bindings 1.. (binding 0: BatchNormParams)
// batchnorm_plane_stats       x, x4, planes              one invocation per (image, channel)
// batchnorm_stats             planes, saved, running_mean, running_var   one per channel
// batchnorm_forward           x, x4, gamma, beta, saved, y4
// batchnorm_forward_eval      x, x4, gamma, beta, running_mean, running_var, y4
// batchnorm_backward_plane    x, x4, dy, dy4, saved, planes
// batchnorm_backward_reduce   planes, sums, dgamma, dbeta                one per channel
// batchnorm_backward_input    x, x4, dy, dy4, gamma, saved, sums, dx4
//
// x, y, dy, dx are (N, C, H·W); x4 is the same buffer seen as vec4s. The batch is `towers`
// slices of N / towers images, each normalised with its own statistics.
// saved = mean (T, C) then 1/std (T, C); sums = Σdy (T, C) then Σdy·x̂ (T, C);
// planes = two numbers per (image, channel) plane.
//
// No workgroup barriers (llvmpipe runs each as a coroutine switch) and no atomics: reductions
// go plane by plane, then over a tower's planes in order, so every run gives the same bits.
// The statistics of a plane are its mean and Σ(x − mean)², combined across planes with Chan's
// formula: as accurate as two passes over the whole tower.

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

fn tower_n() -> u32 {
    return p.n / p.towers;
}

// Where the saved statistics of (tower, channel) are.
fn saved_mean(t: u32, c: u32) -> u32 {
    return t * p.c + c;
}

fn saved_invstd(t: u32, c: u32) -> u32 {
    return (p.towers + t) * p.c + c;
}

// The plane (image n, channel c) starts at element `plane · hw`; with hw a multiple of 4
// (every layer of the model) it is read as vec4s.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;

fn plane_sum(plane: u32) -> f32 {
    var s = 0.0;
    if p.hw % 4u == 0u {
        var s4 = vec4(0.0);
        for (var j = plane * p.hw / 4u; j < (plane + 1u) * p.hw / 4u; j++) {
            s4 += x4[j];
        }
        s = s4.x + s4.y + s4.z + s4.w;
    } else {
        for (var j = plane * p.hw; j < (plane + 1u) * p.hw; j++) {
            s += x[j];
        }
    }
    return s;
}

fn plane_sq_dev(plane: u32, mean: f32) -> f32 {
    var s = 0.0;
    if p.hw % 4u == 0u {
        var s4 = vec4(0.0);
        for (var j = plane * p.hw / 4u; j < (plane + 1u) * p.hw / 4u; j++) {
            let d = x4[j] - vec4(mean);
            s4 += d * d;
        }
        s = s4.x + s4.y + s4.z + s4.w;
    } else {
        for (var j = plane * p.hw; j < (plane + 1u) * p.hw; j++) {
            let d = x[j] - mean;
            s += d * d;
        }
    }
    return s;
}

@group(0) @binding(3) var<storage, read_write> ps_planes: array<vec2<f32>>;

// (mean, Σ(x − mean)²) of one (image, channel) plane.
@compute @workgroup_size(64)
fn batchnorm_plane_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let plane = gid.x;
    if plane >= p.n * p.c {
        return;
    }
    let mean = plane_sum(plane) / f32(p.hw);
    ps_planes[plane] = vec2(mean, plane_sq_dev(plane, mean));
}

@group(0) @binding(1) var<storage, read> st_planes: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> st_saved: array<f32>;
@group(0) @binding(3) var<storage, read_write> st_running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> st_running_var: array<f32>;

// Per channel: each tower's mean and biased variance from its planes, in order, then the
// running statistics' update, one tower after the other as separate calls would do it.
@compute @workgroup_size(64)
fn batchnorm_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= p.c {
        return;
    }
    let tn = tower_n();
    for (var t = 0u; t < p.towers; t++) {
        var count = 0.0;
        var mean = 0.0;
        var m2 = 0.0;
        for (var n = t * tn; n < (t + 1u) * tn; n++) {
            let s = st_planes[n * p.c + c];
            let b = f32(p.hw);
            let total = count + b;
            let delta = s.x - mean;
            mean += delta * b / total;
            m2 += s.y + delta * delta * count * b / total;
            count = total;
        }
        let variance = m2 / count;
        st_saved[saved_mean(t, c)] = mean;
        st_saved[saved_invstd(t, c)] = 1.0 / sqrt(variance + p.eps);
        let unbiased = m2 / max(count - 1.0, 1.0);
        st_running_mean[c] = (1.0 - p.momentum) * st_running_mean[c] + p.momentum * mean;
        st_running_var[c] = (1.0 - p.momentum) * st_running_var[c] + p.momentum * unbiased;
    }
}

// The (tower, channel) of each of the 4 elements of vec4 i.
fn tower_of(e: u32) -> u32 {
    return e / (p.c * p.hw) / tower_n();
}

fn channel_of(e: u32) -> u32 {
    return (e / p.hw) % p.c;
}

@group(0) @binding(3) var<storage, read> fw_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> fw_beta: array<f32>;
@group(0) @binding(5) var<storage, read> fw_saved: array<f32>;
@group(0) @binding(6) var<storage, read_write> fw_y4: array<vec4<f32>>;

// y = (x − mean)·invstd·γ + β, one vec4 per invocation. A vec4 lies in one plane when hw is a
// multiple of 4; otherwise each element finds its own channel.
@compute @workgroup_size(WG)
fn batchnorm_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i * 4u >= p.n * p.c * p.hw {
        return;
    }
    if p.hw % 4u == 0u {
        let c = channel_of(4u * i);
        let t = tower_of(4u * i);
        let scale = fw_saved[saved_invstd(t, c)] * fw_gamma[c];
        fw_y4[i] = (x4[i] - vec4(fw_saved[saved_mean(t, c)])) * scale + vec4(fw_beta[c]);
    } else {
        var y = vec4(0.0);
        for (var k = 0u; k < 4u; k++) {
            let e = min(4u * i + k, p.n * p.c * p.hw - 1u);
            let c = channel_of(e);
            let t = tower_of(e);
            y[k] = (x[e] - fw_saved[saved_mean(t, c)]) * fw_saved[saved_invstd(t, c)] * fw_gamma[c] + fw_beta[c];
        }
        fw_y4[i] = y;
    }
}

@group(0) @binding(3) var<storage, read> ev_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> ev_beta: array<f32>;
@group(0) @binding(5) var<storage, read> ev_running_mean: array<f32>;
@group(0) @binding(6) var<storage, read> ev_running_var: array<f32>;
@group(0) @binding(7) var<storage, read_write> ev_y4: array<vec4<f32>>;

fn eval_one(e: u32) -> f32 {
    let c = channel_of(e);
    let invstd = 1.0 / sqrt(ev_running_var[c] + p.eps);
    return (x[e] - ev_running_mean[c]) * invstd * ev_gamma[c] + ev_beta[c];
}

@compute @workgroup_size(WG)
fn batchnorm_forward_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i * 4u >= p.n * p.c * p.hw {
        return;
    }
    if p.hw % 4u == 0u {
        let c = channel_of(4u * i);
        let invstd = 1.0 / sqrt(ev_running_var[c] + p.eps);
        ev_y4[i] = (x4[i] - vec4(ev_running_mean[c])) * invstd * ev_gamma[c] + vec4(ev_beta[c]);
    } else {
        let last = p.n * p.c * p.hw - 1u;
        ev_y4[i] = vec4(eval_one(4u * i), eval_one(min(4u * i + 1u, last)), eval_one(min(4u * i + 2u, last)), eval_one(min(4u * i + 3u, last)));
    }
}

@group(0) @binding(3) var<storage, read> bp_dy: array<f32>;
@group(0) @binding(4) var<storage, read> bp_dy4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bp_saved: array<f32>;
@group(0) @binding(6) var<storage, read_write> bp_planes: array<vec2<f32>>;

// (Σdy, Σdy·x̂) of one (image, channel) plane, x̂ normalised with its tower's statistics.
@compute @workgroup_size(64)
fn batchnorm_backward_plane(@builtin(global_invocation_id) gid: vec3<u32>) {
    let plane = gid.x;
    if plane >= p.n * p.c {
        return;
    }
    let c = plane % p.c;
    let t = plane / p.c / tower_n();
    let mean = bp_saved[saved_mean(t, c)];
    let invstd = bp_saved[saved_invstd(t, c)];
    var s = 0.0;
    var sx = 0.0;
    if p.hw % 4u == 0u {
        var s4 = vec4(0.0);
        var sx4 = vec4(0.0);
        for (var j = plane * p.hw / 4u; j < (plane + 1u) * p.hw / 4u; j++) {
            let dy = bp_dy4[j];
            s4 += dy;
            sx4 += dy * (x4[j] - vec4(mean)) * invstd;
        }
        s = s4.x + s4.y + s4.z + s4.w;
        sx = sx4.x + sx4.y + sx4.z + sx4.w;
    } else {
        for (var j = plane * p.hw; j < (plane + 1u) * p.hw; j++) {
            s += bp_dy[j];
            sx += bp_dy[j] * (x[j] - mean) * invstd;
        }
    }
    bp_planes[plane] = vec2(s, sx);
}

@group(0) @binding(1) var<storage, read> br_planes: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> br_sums: array<f32>;
@group(0) @binding(3) var<storage, read_write> br_dgamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> br_dbeta: array<f32>;

// Per channel: Σdy and Σdy·x̂ of each tower, its planes in order; dγ and dβ are their sums
// over the towers.
@compute @workgroup_size(64)
fn batchnorm_backward_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= p.c {
        return;
    }
    let tn = tower_n();
    var dgamma = 0.0;
    var dbeta = 0.0;
    for (var t = 0u; t < p.towers; t++) {
        var s = vec2(0.0);
        for (var n = t * tn; n < (t + 1u) * tn; n++) {
            s += br_planes[n * p.c + c];
        }
        br_sums[saved_mean(t, c)] = s.x;
        br_sums[saved_invstd(t, c)] = s.y;
        dgamma += s.y;
        dbeta += s.x;
    }
    if (p.accumulate & ACCUMULATE_PARAMS) != 0u {
        br_dgamma[c] += dgamma;
        br_dbeta[c] += dbeta;
    } else {
        br_dgamma[c] = dgamma;
        br_dbeta[c] = dbeta;
    }
}

@group(0) @binding(3) var<storage, read> bi_dy: array<f32>;
@group(0) @binding(4) var<storage, read> bi_dy4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bi_gamma: array<f32>;
@group(0) @binding(6) var<storage, read> bi_saved: array<f32>;
@group(0) @binding(7) var<storage, read> bi_sums: array<f32>;
@group(0) @binding(8) var<storage, read_write> bi_dx4: array<vec4<f32>>;

fn input_grad_one(e: u32) -> f32 {
    let c = channel_of(e);
    let t = tower_of(e);
    let m = f32(tower_n() * p.hw);
    let invstd = bi_saved[saved_invstd(t, c)];
    let xhat = (x[e] - bi_saved[saved_mean(t, c)]) * invstd;
    return bi_gamma[c] * invstd * (bi_dy[e] - bi_sums[saved_mean(t, c)] / m - xhat * bi_sums[saved_invstd(t, c)] / m);
}

// dx = γ·invstd·(dy − Σdy/M − x̂·Σdy·x̂/M), per tower.
@compute @workgroup_size(WG)
fn batchnorm_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i * 4u >= p.n * p.c * p.hw {
        return;
    }
    var g: vec4<f32>;
    if p.hw % 4u == 0u {
        let c = channel_of(4u * i);
        let t = tower_of(4u * i);
        let m = f32(tower_n() * p.hw);
        let invstd = bi_saved[saved_invstd(t, c)];
        let xhat = (x4[i] - vec4(bi_saved[saved_mean(t, c)])) * invstd;
        let s = bi_sums[saved_mean(t, c)] / m;
        let sx = bi_sums[saved_invstd(t, c)] / m;
        g = bi_gamma[c] * invstd * (bi_dy4[i] - vec4(s) - xhat * sx);
    } else {
        let last = p.n * p.c * p.hw - 1u;
        g = vec4(input_grad_one(4u * i), input_grad_one(min(4u * i + 1u, last)), input_grad_one(min(4u * i + 2u, last)), input_grad_one(min(4u * i + 3u, last)));
    }
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        bi_dx4[i] += g;
    } else {
        bi_dx4[i] = g;
    }
}
