// batchnorm.wgsl: BatchNorm2d with per-tower batch statistics (train), running statistics
// (eval), and the backward pass. Mirrors src/ops/batchnorm.rs (params, reference) and
// src/gpu/batchnorm.rs (launchers).
//
// entry point                 bindings 1.. (binding 0: BatchNormParams)
// batchnorm_channel_stats     x, saved, running_mean, running_var  one workgroup per channel
// batchnorm_channel_sums      x, dy, gamma, beta, saved, sums, dgamma, dbeta   the same
// batchnorm_forward           x, gamma, beta, saved, y             one invocation per vec4
// batchnorm_backward_input    x, dy, gamma, beta, saved, sums, dx  one invocation per vec4
//                             (per element where planes are not whole vec4s)
// batchnorm_running_stats     running_mean, running_var, saved     one per channel
//                             (eval mode: its statistics, then batchnorm_forward or a
//                             kernel that normalises as it reads)
//
// The plane at a time kernels of a CPU driver's set, whose convs hand BatchNorm their output's
// plane moments and whose fused backwards write plane sums (src/gpu/batchnorm.rs says which
// set reduces which way):
// batchnorm_plane_stats       x, planes                            one invocation per plane
// batchnorm_stats             planes, saved, running_mean, running_var   one per channel
// batchnorm_backward_plane    x, dy, saved, planes                 one invocation per plane
// batchnorm_backward_reduce   planes, sums, dgamma, dbeta          one per channel
// batchnorm_backward_input_planes  x, dy, gamma, saved, sums, dx   one invocation per plane
//
// x, y, dy, dx are (N, C, H·W) (a plane = an (image, channel) pair). The batch is `towers`
// slices of N / towers images, each normalised with its own statistics.
// saved = mean (T, C) then 1/std (T, C); sums = Σdy (T, C) then Σdy·x̂ (T, C), and from
// batchnorm_channel_sums the input gradient's coefficients k, u, v (T, C) each after them
// (common.wgsl batchnorm_input_grad_coefficients), which the portable input gradient and the
// convs reading their dy through this backward (conv2d.wgsl DY_THROUGH) take;
// planes = two numbers per (image, channel) plane.
//
// No atomics: every reduction adds in an order fixed by the shape, so every run gives the
// same bits. The channel kernels sum each tower in a workgroup of 256: strided over the
// tower's elements (neighbouring invocations read neighbouring addresses), then a tree; the
// mean first, then Σ(x − mean)², as accurate as the reference's two passes. The plane kernels
// use no workgroup barriers (a CPU driver runs each as a coroutine switch): planes one
// invocation each, then a tower's planes in order, combined with Chan's formula.

// src/ops/ BatchNormParams
struct BatchNormParams {
    n: u32,
    c: u32,
    hw: u32,
    towers: u32,
    eps: f32,
    momentum: f32,
    accumulate: u32,
    relu_input: u32,
}

@group(0) @binding(0) var<uniform> p: BatchNormParams;

// The op's input: x, or ReLU(x) when it reads through a ReLU (BatchNorm(ReLU(x)) in one op,
// so the ReLU's output is never written; src/ops/ BatchNormParams::relu_input).
fn bn_in(v: f32) -> f32 {
    return select(v, max(v, 0.0), p.relu_input != 0u);
}

fn bn_in4(v: vec4<f32>) -> vec4<f32> {
    return select(v, max(v, vec4(0.0)), p.relu_input != 0u);
}

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
// (every layer of the model) it is a run of whole vec4s, otherwise it is read element by
// element through the vec4 view.
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;

// Planes that are not whole vec4s, element by element through the vec4 view.
fn plane_sum(plane: u32) -> f32 {
    var s = 0.0;
    for (var j = plane * p.hw; j < (plane + 1u) * p.hw; j++) {
        s += bn_in(x4[j / 4u][j % 4u]);
    }
    return s;
}

fn plane_sq_dev(plane: u32, mean: f32) -> f32 {
    var s = 0.0;
    for (var j = plane * p.hw; j < (plane + 1u) * p.hw; j++) {
        let d = bn_in(x4[j / 4u][j % 4u]) - mean;
        s += d * d;
    }
    return s;
}

@group(0) @binding(2) var<storage, read_write> ps_planes: array<vec2<f32>>;

// (mean, Σ(x − mean)²) of one (image, channel) plane. Planes of whole vec4s are read once:
// each vec4's own mean and squared deviations, merged into the running ones with Chan's
// formula (loads cost a CPU driver far more than the arithmetic); others in two passes.
@compute @workgroup_size(64)
fn batchnorm_plane_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let plane = gid.x;
    if plane >= p.n * p.c {
        return;
    }
    if p.hw % 4u == 0u {
        var mean = 0.0;
        var m2 = 0.0;
        var count = 0.0;
        for (var j = plane * p.hw / 4u; j < (plane + 1u) * p.hw / 4u; j++) {
            let v = bn_in4(x4[j]);
            let m4 = (v.x + v.y + v.z + v.w) * 0.25;
            let d = v - vec4(m4);
            let delta = m4 - mean;
            let total = count + 4.0;
            mean += delta * (4.0 / total);
            m2 += dot(d, d) + delta * delta * (count * 4.0 / total);
            count = total;
        }
        ps_planes[plane] = vec2(mean, m2);
    } else {
        let mean = plane_sum(plane) / f32(p.hw);
        ps_planes[plane] = vec2(mean, plane_sq_dev(plane, mean));
    }
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

@group(0) @binding(1) var<storage, read> rs_running_mean: array<f32>;
@group(0) @binding(2) var<storage, read> rs_running_var: array<f32>;
@group(0) @binding(3) var<storage, read_write> rs_saved: array<f32>;

// Eval mode's statistics in the layout batchnorm_stats writes, for the kernels that normalise
// as they read: every tower's are the running ones.
@compute @workgroup_size(64)
fn batchnorm_running_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= p.c {
        return;
    }
    let invstd = 1.0 / sqrt(rs_running_var[c] + p.eps);
    for (var t = 0u; t < p.towers; t++) {
        rs_saved[saved_mean(t, c)] = rs_running_mean[c];
        rs_saved[saved_invstd(t, c)] = invstd;
    }
}

// The elementwise passes run one invocation per (image, channel) plane, looping over it: the
// plane's channel and tower, and with them the coefficients, are found once, not per element
// (a CPU driver divides integers lane by lane, which would cost more than the arithmetic).
// A plane of a multiple of 4 pixels is a run of whole vec4s; any other goes element by element
// through the scalar view.

fn plane_channel(plane: u32) -> u32 {
    return plane % p.c;
}

fn plane_tower(plane: u32) -> u32 {
    return plane / p.c / tower_n();
}

// Element i of x, through the vec4 view.
fn x_at(i: u32) -> f32 {
    return x4[i / 4u][i % 4u];
}

@group(0) @binding(2) var<storage, read> fw_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> fw_beta: array<f32>;
@group(0) @binding(4) var<storage, read> fw_saved: array<f32>;
@group(0) @binding(5) var<storage, read_write> fw_y4: array<vec4<f32>>;

// Where element or vec4 `i` of a one-per-element pass is: planes of a multiple of 4 pixels
// go a vec4 per invocation (runs of whole vec4s), others an element.
fn elements_per_invocation() -> u32 {
    return select(1u, 4u, p.hw % 4u == 0u);
}

// y = x·a + b with a = invstd·γ and b = β − mean·a of the element's (tower, channel).
@compute @workgroup_size(256)
fn batchnorm_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let per = elements_per_invocation();
    if i * per >= p.n * p.c * p.hw {
        return;
    }
    let plane = i * per / p.hw;
    let c = plane_channel(plane);
    let t = plane_tower(plane);
    let a = fw_saved[saved_invstd(t, c)] * fw_gamma[c];
    let b = fw_beta[c] - fw_saved[saved_mean(t, c)] * a;
    if per == 4u {
        fw_y4[i] = bn_in4(x4[i]) * a + vec4(b);
    } else {
        fw_y4[i / 4u][i % 4u] = bn_in(x_at(i)) * a + b;
    }
}

@group(0) @binding(2) var<storage, read> bp_dy4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bp_saved: array<f32>;
@group(0) @binding(4) var<storage, read_write> bp_planes: array<vec2<f32>>;

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
            sx4 += dy * (bn_in4(x4[j]) - vec4(mean)) * invstd;
        }
        s = s4.x + s4.y + s4.z + s4.w;
        sx = sx4.x + sx4.y + sx4.z + sx4.w;
    } else {
        for (var j = plane * p.hw; j < (plane + 1u) * p.hw; j++) {
            let dy = bp_dy4[j / 4u][j % 4u];
            s += dy;
            sx += dy * (bn_in(x4[j / 4u][j % 4u]) - mean) * invstd;
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

@group(0) @binding(2) var<storage, read> bi_dy4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bi_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> bi_saved: array<f32>;
@group(0) @binding(5) var<storage, read> bi_sums: array<f32>;
@group(0) @binding(6) var<storage, read_write> bi_dx4: array<vec4<f32>>;

// dx = γ·invstd·(dy − Σdy/M − x̂·Σdy·x̂/M) per tower, which is dy·k + x·u + v with the
// plane's constants k = γ·invstd, u = −k·invstd·Σdy·x̂/M, v = −k·Σdy/M − u·mean; through a
// ReLU input, 0 where x ≤ 0.
// p.accumulate's ACCUMULATE_INPUT bit, as a constant: a CPU driver runs both sides of a branch
// on a runtime value, so a runtime `add` would cost a masked load and store per element.
override ACCUMULATE: u32 = 0u;

@compute @workgroup_size(64)
fn batchnorm_backward_input_planes(@builtin(global_invocation_id) gid: vec3<u32>) {
    let plane = gid.x;
    if plane >= p.n * p.c {
        return;
    }
    let c = plane_channel(plane);
    let t = plane_tower(plane);
    let m = f32(tower_n() * p.hw);
    let kuv = batchnorm_input_grad_coefficients(
        bi_gamma[c],
        bi_saved[saved_mean(t, c)],
        bi_saved[saved_invstd(t, c)],
        bi_sums[saved_mean(t, c)],
        bi_sums[saved_invstd(t, c)],
        m,
    );
    let k = kuv.x;
    let u = kuv.y;
    let v = kuv.z;
    let add = ACCUMULATE == 1u;
    if p.hw % 4u == 0u {
        for (var j = plane * p.hw / 4u; j < (plane + 1u) * p.hw / 4u; j++) {
            let xv = x4[j];
            let g = select(vec4(0.0), bi_dy4[j] * k + bn_in4(xv) * u + vec4(v), xv > vec4(0.0) | vec4(p.relu_input == 0u));
            if add {
                bi_dx4[j] += g;
            } else {
                bi_dx4[j] = g;
            }
        }
    } else {
        for (var j = plane * p.hw; j < (plane + 1u) * p.hw; j++) {
            let xv = x4[j / 4u][j % 4u];
            let g = select(0.0, bi_dy4[j / 4u][j % 4u] * k + bn_in(xv) * u + v, xv > 0.0 || p.relu_input == 0u);
            if add {
                bi_dx4[j / 4u][j % 4u] += g;
            } else {
                bi_dx4[j / 4u][j % 4u] = g;
            }
        }
    }
}

// The portable set's reductions and input gradient (see the top of the file).

// Invocations of a channel kernel's workgroup.
const TREE = 256u;

var<workgroup> tree: array<vec2<f32>, 256>;

// The sum of every invocation's `v`, the same in all of them: a tree of halving strides, an
// order fixed by the workgroup size alone.
fn workgroup_sum(lid: u32, v: vec2<f32>) -> vec2<f32> {
    tree[lid] = v;
    workgroupBarrier();
    for (var stride = TREE / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            tree[lid] += tree[lid + stride];
        }
        workgroupBarrier();
    }
    let total = tree[0];
    workgroupBarrier();
    return total;
}

// Element e (of tower_n() · hw) of tower t's channel c.
fn tower_element(t: u32, c: u32, e: u32) -> u32 {
    let n = t * tower_n() + e / p.hw;
    return (n * p.c + c) * p.hw + e % p.hw;
}

// Vec4 e (of tower_n() · hw / 4, planes of a multiple of 4) of tower t's channel c: planes
// are runs of whole vec4s, which the channel kernels read at once.
fn tower_vec4(t: u32, c: u32, e: u32) -> u32 {
    let q = p.hw / 4u;
    let n = t * tower_n() + e / q;
    return (n * p.c + c) * q + e % q;
}

fn sum4(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The channel of one workgroup of a channel kernel (a 2-D grid past 65,535 channels).
fn workgroup_channel(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

@group(0) @binding(2) var<storage, read_write> cs_saved: array<f32>;
@group(0) @binding(3) var<storage, read_write> cs_running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> cs_running_var: array<f32>;

// Per channel: each tower's mean and biased variance, then the running statistics' update,
// one tower after the other as separate calls would do it.
@compute @workgroup_size(256)
fn batchnorm_channel_stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = workgroup_channel(wid, nwg);
    if c >= p.c {
        return;
    }
    let m = tower_n() * p.hw;
    let whole = p.hw % 4u == 0u;
    for (var t = 0u; t < p.towers; t++) {
        var s = 0.0;
        if whole {
            var s4 = vec4(0.0);
            for (var e = lid; e < m / 4u; e += TREE) {
                s4 += bn_in4(x4[tower_vec4(t, c, e)]);
            }
            s = sum4(s4);
        } else {
            for (var e = lid; e < m; e += TREE) {
                s += bn_in(x_at(tower_element(t, c, e)));
            }
        }
        let mean = workgroup_sum(lid, vec2(s, 0.0)).x / f32(m);
        var q = 0.0;
        if whole {
            var q4 = vec4(0.0);
            for (var e = lid; e < m / 4u; e += TREE) {
                let d = bn_in4(x4[tower_vec4(t, c, e)]) - vec4(mean);
                q4 += d * d;
            }
            q = sum4(q4);
        } else {
            for (var e = lid; e < m; e += TREE) {
                let d = bn_in(x_at(tower_element(t, c, e))) - mean;
                q += d * d;
            }
        }
        let m2 = workgroup_sum(lid, vec2(q, 0.0)).x;
        if lid == 0u {
            cs_saved[saved_mean(t, c)] = mean;
            cs_saved[saved_invstd(t, c)] = 1.0 / sqrt(m2 / f32(m) + p.eps);
            let unbiased = m2 / max(f32(m) - 1.0, 1.0);
            cs_running_mean[c] = (1.0 - p.momentum) * cs_running_mean[c] + p.momentum * mean;
            cs_running_var[c] = (1.0 - p.momentum) * cs_running_var[c] + p.momentum * unbiased;
        }
    }
}

// 0: dy is BatchNorm's output gradient. Otherwise dy is that of MaxPool2d(2×2) of BatchNorm's
// output, whose input rows are POOL_W wide: each element's gradient is its window's where it
// is the window's first maximum (maxpool.wgsl's rule), else 0, found here from x, so that
// MaxPool(BatchNorm(x))'s backward writes neither the pool's dx nor BatchNorm's output.
override POOL_W: u32 = 0u;

@group(0) @binding(2) var<storage, read> g_dy4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> g_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> g_beta: array<f32>;
@group(0) @binding(5) var<storage, read> g_saved: array<f32>;

// The gradient reaching BatchNorm's output element i, of tower t and channel c.
fn output_grad(i: u32, t: u32, c: u32) -> f32 {
    if POOL_W == 0u {
        return g_dy4[i / 4u][i % 4u];
    }
    // Never 0 here, but a compiler may fold the divisions of the branch not taken.
    let pool_w = max(POOL_W, 1u);
    let plane = i / p.hw;
    let j = i % p.hw;
    let h = j / pool_w;
    let w = j % pool_w;
    let oh = p.hw / pool_w / 2u;
    let ow = pool_w / 2u;
    if h / 2u >= oh || w / 2u >= ow {
        return 0.0;
    }
    let a = g_saved[saved_invstd(t, c)] * g_gamma[c];
    let b = g_beta[c] - g_saved[saved_mean(t, c)] * a;
    let base = plane * p.hw + (h - h % 2u) * pool_w + (w - w % 2u);
    let top = vec2(bn_in(x_at(base)), bn_in(x_at(base + 1u))) * a + vec2(b);
    let bottom = vec2(bn_in(x_at(base + pool_w)), bn_in(x_at(base + pool_w + 1u))) * a + vec2(b);
    let best = u32(first_max(top, bottom).y);
    let o = (plane * oh + h / 2u) * ow + w / 2u;
    return select(0.0, g_dy4[o / 4u][o % 4u], best == (h % 2u) * 2u + w % 2u);
}

// The same for the 4 elements of vec4 i4. Where rows are whole vec4s (POOL_W a multiple of 4)
// they are one row of two windows, each decided once from the vec4s of its two rows, with the
// same arithmetic as output_grad; otherwise element by element.
fn output_grad4(i4: u32, t: u32, c: u32) -> vec4<f32> {
    if POOL_W == 0u {
        return g_dy4[i4];
    }
    let i = 4u * i4;
    if POOL_W % 4u != 0u {
        return vec4(output_grad(i, t, c), output_grad(i + 1u, t, c), output_grad(i + 2u, t, c), output_grad(i + 3u, t, c));
    }
    let pool_w = max(POOL_W, 1u);
    let plane = i / p.hw;
    let h = (i % p.hw) / pool_w;
    let oh = p.hw / pool_w / 2u;
    if h / 2u >= oh {
        return vec4(0.0);
    }
    let a = g_saved[saved_invstd(t, c)] * g_gamma[c];
    let b = g_beta[c] - g_saved[saved_mean(t, c)] * a;
    let top = i4 - select(0u, pool_w / 4u, h % 2u == 1u);
    let upper = bn_in4(x4[top]) * a + vec4(b);
    let lower = bn_in4(x4[top + pool_w / 4u]) * a + vec4(b);
    let left = u32(first_max(upper.xy, lower.xy).y);
    let right = u32(first_max(upper.zw, lower.zw).y);
    let o = (plane * oh + h / 2u) * (pool_w / 2u) + (i % pool_w) / 2u;
    let dy = vec2(g_dy4[o / 4u][o % 4u], g_dy4[(o + 1u) / 4u][(o + 1u) % 4u]);
    let row = 2u * (h % 2u);
    let mine = vec4(row, row + 1u, row, row + 1u);
    return select(vec4(0.0), dy.xxyy, vec4(left, left, right, right) == mine);
}

// Where batchnorm_channel_sums puts coefficient j (k, u, v) of tower t and channel c.
fn coefficient_slot(j: u32, t: u32, c: u32) -> u32 {
    return ((2u + j) * p.towers + t) * p.c + c;
}

@group(0) @binding(6) var<storage, read_write> cg_sums: array<f32>;
@group(0) @binding(7) var<storage, read_write> cg_dgamma: array<f32>;
@group(0) @binding(8) var<storage, read_write> cg_dbeta: array<f32>;

// Per channel: Σdy and Σdy·x̂ of each tower; dγ and dβ are their sums over the towers.
@compute @workgroup_size(256)
fn batchnorm_channel_sums(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = workgroup_channel(wid, nwg);
    if c >= p.c {
        return;
    }
    let m = tower_n() * p.hw;
    var dgamma = 0.0;
    var dbeta = 0.0;
    for (var t = 0u; t < p.towers; t++) {
        let mean = g_saved[saved_mean(t, c)];
        let invstd = g_saved[saved_invstd(t, c)];
        var s = vec2(0.0);
        if p.hw % 4u == 0u {
            var s4 = vec4(0.0);
            var sx4 = vec4(0.0);
            for (var e = lid; e < m / 4u; e += TREE) {
                let i4 = tower_vec4(t, c, e);
                let dy = output_grad4(i4, t, c);
                s4 += dy;
                sx4 += dy * (bn_in4(x4[i4]) - vec4(mean)) * invstd;
            }
            s = vec2(sum4(s4), sum4(sx4));
        } else {
            for (var e = lid; e < m; e += TREE) {
                let i = tower_element(t, c, e);
                let dy = output_grad(i, t, c);
                s += vec2(dy, dy * (bn_in(x_at(i)) - mean) * invstd);
            }
        }
        let total = workgroup_sum(lid, s);
        if lid == 0u {
            cg_sums[saved_mean(t, c)] = total.x;
            cg_sums[saved_invstd(t, c)] = total.y;
            let kuv = batchnorm_input_grad_coefficients(g_gamma[c], mean, invstd, total.x, total.y, f32(m));
            for (var j = 0u; j < 3u; j++) {
                cg_sums[coefficient_slot(j, t, c)] = kuv[j];
            }
        }
        dgamma += total.y;
        dbeta += total.x;
    }
    if lid == 0u {
        if (p.accumulate & ACCUMULATE_PARAMS) != 0u {
            cg_dgamma[c] += dgamma;
            cg_dbeta[c] += dbeta;
        } else {
            cg_dgamma[c] = dgamma;
            cg_dbeta[c] = dbeta;
        }
    }
}

@group(0) @binding(6) var<storage, read> gi_sums: array<f32>;
@group(0) @binding(7) var<storage, read_write> gi_dx4: array<vec4<f32>>;

// dx = dy·k + x·u + v with the element's (tower, channel) constants (batchnorm_backward_input_planes
// says which), as batchnorm_channel_sums wrote them; through a ReLU input, 0 where x ≤ 0. A vec4
// or an element per invocation.
@compute @workgroup_size(256)
fn batchnorm_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let per = elements_per_invocation();
    if i * per >= p.n * p.c * p.hw {
        return;
    }
    let plane = i * per / p.hw;
    let c = plane_channel(plane);
    let t = plane_tower(plane);
    let kuv = vec3(gi_sums[coefficient_slot(0u, t, c)], gi_sums[coefficient_slot(1u, t, c)], gi_sums[coefficient_slot(2u, t, c)]);
    let relu = p.relu_input != 0u;
    if per == 4u {
        let xv = x4[i];
        let g = select(vec4(0.0), output_grad4(i, t, c) * kuv.x + bn_in4(xv) * kuv.y + vec4(kuv.z), xv > vec4(0.0) | vec4(!relu));
        if ACCUMULATE == 1u {
            gi_dx4[i] += g;
        } else {
            gi_dx4[i] = g;
        }
    } else {
        let xv = x_at(i);
        let g = select(0.0, output_grad(i, t, c) * kuv.x + bn_in(xv) * kuv.y + kuv.z, xv > 0.0 || !relu);
        if ACCUMULATE == 1u {
            gi_dx4[i / 4u][i % 4u] += g;
        } else {
            gi_dx4[i / 4u][i % 4u] = g;
        }
    }
}
