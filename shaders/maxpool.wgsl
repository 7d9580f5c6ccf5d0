// maxpool.wgsl: MaxPool2d 2×2, stride 2 (floor mode), forward and backward.
// Mirrors src/ops/maxpool.rs (params, reference) and src/gpu/maxpool.rs (launchers).
//
// entry point               bindings 1.. (binding 0: MaxPoolParams)
// maxpool_forward           x, x2, y         one invocation per output (any size)
// maxpool_backward          x, dy, dx        one invocation per input element (any size)
// maxpool_backward_windows  x2, dy, dx2      one invocation per plane (even H and W)
// maxpool_forward_pairs     x4, y2           one invocation per plane (W a multiple of 4)
// maxpool_backward_pairs    x4, dy2, dx4     one invocation per plane (even H, W % 4 = 0)
// maxpool_forward_rows      x4, x4, y        one invocation per plane (even H, W % 4 = 2)
// maxpool_backward_rows     x4, dy, dx4      one invocation per plane (even H, W % 4 = 2)
// batchnorm_maxpool_forward[_pairs,_rows]       the same, then gamma, beta, saved:
//                                               MaxPool(BatchNorm(x)) from x (below)
// batchnorm_maxpool_backward_sums_{windows,pairs,rows}   x, dy, dx (unused), gamma, beta,
//                                               saved, planes: BatchNorm's backward plane sums
// batchnorm_maxpool_backward_input_{windows,pairs,rows}  x, dy, dx, gamma, beta, saved, sums:
//                                               the gradient of BatchNorm's input
//
// The per-plane kernels are a CPU driver's shape (src/gpu/maxpool.rs runs them only where the
// selected set asks for it, `plane_at_a_time`); a GPU runs maxpool_forward and
// batchnorm_maxpool_forward, a window per invocation, and MaxPool(BatchNorm(x))'s backward is
// batchnorm.wgsl's channel kernels with POOL_W, which find each element's share themselves.
//
// The backward pass recomputes each window's argmax from x instead of saving it: the
// windows do not overlap, so each decides alone. With an even width a window row is one
// aligned vec2 (x2 is x seen as vec2s), half the loads of two scalars on a CPU driver; with a
// width of a multiple of 4 the `pairs` kernels take two windows per vec4, halving them again;
// with a width of 4m + 2 the `rows` kernels take two rows of windows as whole vec4s. Those
// vec4s are `Packed4` in storage (as the prelude holds them).

// src/ops/ MaxPoolParams
struct MaxPoolParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    accumulate: u32,
    // Of the BatchNorm that the batchnorm_maxpool_* kernels read x through.
    towers: u32,
    relu_input: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: MaxPoolParams;

// How a kernel reads x: as it is (PLAIN), or through a train-mode BatchNorm, ReLU(x)·a + b or
// x·a + b with the plane's a and b. The batchnorm_maxpool_* kernels compute
// MaxPool(BatchNorm(ReLU(x))) that way (src/tape.rs, relu_batchnorm_maxpool), so BatchNorm's
// output is never written or read back; `on` is a constant in every caller, and the plain
// kernels compile to what they were.
struct Through {
    on: bool,
    a: f32,
    b: f32,
    mean: f32,
    invstd: f32,
}

const PLAIN = Through(false, 1.0, 0.0, 0.0, 1.0);

// BatchNorm's input: ReLU(x) when it reads through a ReLU.
fn relu_in2(v: vec2<f32>) -> vec2<f32> {
    return select(v, max(v, vec2(0.0)), p.relu_input != 0u);
}

fn relu_in4(v: vec4<f32>) -> vec4<f32> {
    return select(v, max(v, vec4(0.0)), p.relu_input != 0u);
}

fn through2(v: vec2<f32>, t: Through) -> vec2<f32> {
    if !t.on {
        return v;
    }
    return relu_in2(v) * t.a + vec2(t.b);
}

fn through4(v: vec4<f32>, t: Through) -> vec4<f32> {
    if !t.on {
        return v;
    }
    return relu_in4(v) * t.a + vec4(t.b);
}

// Plane nc's a = invstd·γ and b = β − mean·a, exactly as batchnorm_forward computes them;
// `saved` holds the means (T, C), then the 1/std (T, C).
fn through_batchnorm(gamma: f32, beta: f32, mean: f32, invstd: f32) -> Through {
    let a = invstd * gamma;
    return Through(true, a, beta - mean * a, mean, invstd);
}

// (channel, its mean's slot, its 1/std's slot) of plane nc.
fn saved_slots(nc: u32) -> vec3<u32> {
    let c = nc % p.c;
    let t = nc / p.c / (p.n / p.towers);
    return vec3(c, t * p.c + c, (p.towers + t) * p.c + c);
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x2: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// What a backward loop does with each window's gradient (`window_grad`); a constant in every
// caller, so each kernel compiles to its own loop.
const WRITE_GRAD = 0u;      // write (or add) it: the pool's dx
const SUM_GRAD = 1u;        // only sum it, Σg and Σg·x̂ over the plane: a BatchNorm's dy's sums
const BATCHNORM_GRAD = 2u;  // write (or add) g·k + x·u + v: the BatchNorm's dx (common.wgsl)

// The gradients of window (top, bottom) whose dy is g: g at the first maximum, 0 elsewhere,
// as (top row, bottom row).
fn window_grad(top: vec2<f32>, bottom: vec2<f32>, g: f32) -> vec4<f32> {
    let best = u32(first_max(top, bottom).y);
    return select(vec4(0.0), vec4(g), vec4(best) == vec4(0u, 1u, 2u, 3u));
}

// Window (nc, oh, ow)'s two rows, as vec2s when the width is even, read through `t`.
fn window_rows(nc: u32, oh: u32, ow: u32, t: Through) -> array<vec2<f32>, 2> {
    let top = (nc * p.h + 2u * oh) * p.w + 2u * ow;
    if p.w % 2u == 0u {
        return array(through2(x2[top / 2u], t), through2(x2[(top + p.w) / 2u], t));
    }
    return array(
        through2(vec2(x[top], x[top + 1u]), t),
        through2(vec2(x[top + p.w], x[top + p.w + 1u]), t),
    );
}

// Flat input index of the maximum of window (nc, oh, ow), by `first_max`'s rule. Scalar
// loads: the entry point that needs it binds dy where `window_rows` reads x2.
fn window_argmax(nc: u32, oh: u32, ow: u32) -> u32 {
    let base = (nc * p.h + 2u * oh) * p.w + 2u * ow;
    let top = vec2(x[base], x[base + 1u]);
    let bottom = vec2(x[base + p.w], x[base + p.w + 1u]);
    let t = u32(first_max(top, bottom).y);
    return base + (t / 2u) * p.w + t % 2u;
}

// One invocation per output, any size: neighbouring invocations, neighbouring windows (the
// `pairs` and `rows` kernels below take a plane each, a CPU driver's shape).
@compute @workgroup_size(WG)
fn maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < pooled_len() {
        forward_window(i, PLAIN);
    }
}

fn pooled_len() -> u32 {
    return p.n * p.c * (p.h / 2u) * (p.w / 2u);
}

// Output i (< pooled_len()) of the plane it is in, read through `t`.
fn forward_window(i: u32, t: Through) {
    let ow_n = p.w / 2u;
    let per_plane = (p.h / 2u) * ow_n;
    let o = i % per_plane;
    let rows = window_rows(i / per_plane, o / ow_n, o % ow_n, t);
    y[i] = first_max(rows[0], rows[1]).x;
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

@group(0) @binding(1) var<storage, read> bw_x2: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_dx2: array<vec2<f32>>;

// p.accumulate's ACCUMULATE_INPUT bit, as a constant (see batchnorm_backward_input).
override ACCUMULATE: u32 = 0u;

// Even H and W: every input element is in exactly one window, so one invocation per plane
// writes each window's four gradients (its dy at the first maximum, 0 elsewhere).
@compute @workgroup_size(64)
fn maxpool_backward_windows(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        _ = backward_windows(gid.x, PLAIN, WRITE_GRAD, vec3(0.0));
    }
}

// BatchNorm's input gradient where its output's is g, as batchnorm_backward_input computes it
// (through a ReLU input, 0 where x ≤ 0); kuv from batchnorm_input_grad_coefficients.
fn batchnorm_grad2(g: vec2<f32>, x: vec2<f32>, kuv: vec3<f32>) -> vec2<f32> {
    return select(vec2(0.0), g * kuv.x + relu_in2(x) * kuv.y + vec2(kuv.z), x > vec2(0.0) | vec2(p.relu_input == 0u));
}

fn batchnorm_grad4(g: vec4<f32>, x: vec4<f32>, kuv: vec3<f32>) -> vec4<f32> {
    return select(vec4(0.0), g * kuv.x + relu_in4(x) * kuv.y + vec4(kuv.z), x > vec4(0.0) | vec4(p.relu_input == 0u));
}

// Window (xt, xb)'s gradients (top row, bottom row) where its dy is g, x read through `t`:
// for BATCHNORM_GRAD those of BatchNorm's input; for SUM_GRAD none, added instead into the
// plane's sums (Σg, Σg·x̂) in component x (left column) and y (right column).
fn window_backward(
    xt: vec2<f32>,
    xb: vec2<f32>,
    g: f32,
    t: Through,
    what: u32,
    kuv: vec3<f32>,
    s2: ptr<function, vec2<f32>>,
    sx2: ptr<function, vec2<f32>>,
) -> vec4<f32> {
    let grad = window_grad(through2(xt, t), through2(xb, t), g);
    if what == SUM_GRAD {
        *s2 += grad.xy + grad.zw;
        *sx2 += grad.xy * (relu_in2(xt) - vec2(t.mean)) * t.invstd;
        *sx2 += grad.zw * (relu_in2(xb) - vec2(t.mean)) * t.invstd;
        return vec4(0.0);
    }
    if what == BATCHNORM_GRAD {
        return vec4(batchnorm_grad2(grad.xy, xt, kuv), batchnorm_grad2(grad.zw, xb, kuv));
    }
    return grad;
}

// Does `what` with the plane's window gradients; SUM_GRAD returns their (Σg, Σg·x̂), x̂ as
// batchnorm_backward_plane computes it (the other modes return zeros).
fn backward_windows(nc: u32, t: Through, what: u32, kuv: vec3<f32>) -> vec2<f32> {
    let oh_n = p.h / 2u;
    let ow_n = p.w / 2u;
    let add = ACCUMULATE == 1u;
    var s2 = vec2(0.0);
    var sx2 = vec2(0.0);
    for (var oh = 0u; oh < oh_n; oh++) {
        for (var ow = 0u; ow < ow_n; ow++) {
            let top = ((nc * p.h + 2u * oh) * p.w + 2u * ow) / 2u;
            let bottom = top + p.w / 2u;
            let g = bw_dy[(nc * oh_n + oh) * ow_n + ow];
            let grad = window_backward(bw_x2[top], bw_x2[bottom], g, t, what, kuv, &s2, &sx2);
            if what == SUM_GRAD {
                continue;
            }
            let gt = grad.xy;
            let gb = grad.zw;
            if add {
                bw_dx2[top] += gt;
                bw_dx2[bottom] += gb;
            } else {
                bw_dx2[top] = gt;
                bw_dx2[bottom] = gb;
            }
        }
    }
    return vec2(s2.x + s2.y, sx2.x + sx2.y);
}

@group(0) @binding(1) var<storage, read> pf_x4: array<Packed4>;
@group(0) @binding(2) var<storage, read_write> pf_y2: array<vec2<f32>>;

// Two windows at a time: a vec4 of each of their rows in, a vec2 of maxima out.
@compute @workgroup_size(64)
fn maxpool_forward_pairs(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        forward_pairs(gid.x, PLAIN);
    }
}

fn forward_pairs(nc: u32, through: Through) {
    let oh_n = p.h / 2u;
    let quads = p.w / 4u;
    for (var oh = 0u; oh < oh_n; oh++) {
        let top = (nc * p.h + 2u * oh) * quads;
        let out = (nc * oh_n + oh) * quads;
        for (var q = 0u; q < quads; q++) {
            let t = through4(unpack4(pf_x4[top + q]), through);
            let b = through4(unpack4(pf_x4[top + quads + q]), through);
            pf_y2[out + q] = vec2(first_max(t.xy, b.xy).x, first_max(t.zw, b.zw).x);
        }
    }
}

@group(0) @binding(1) var<storage, read> pb_x4: array<Packed4>;
@group(0) @binding(2) var<storage, read> pb_dy2: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> pb_dx4: array<Packed4>;

// Writes, or with ACCUMULATE adds, four gradients of dx.
fn store_dx4(i: u32, g: vec4<f32>) {
    if ACCUMULATE == 1u {
        pb_dx4[i] = pack4(unpack4(pb_dx4[i]) + g);
    } else {
        pb_dx4[i] = pack4(g);
    }
}

// Two windows at a time, as maxpool_forward_pairs.
@compute @workgroup_size(64)
fn maxpool_backward_pairs(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        _ = backward_pairs(gid.x, PLAIN, WRITE_GRAD, vec3(0.0));
    }
}

// As backward_windows, two windows at a time.
fn backward_pairs(nc: u32, through: Through, what: u32, kuv: vec3<f32>) -> vec2<f32> {
    let oh_n = p.h / 2u;
    let quads = p.w / 4u;
    var s4 = vec4(0.0);
    var sx4 = vec4(0.0);
    for (var oh = 0u; oh < oh_n; oh++) {
        let top = (nc * p.h + 2u * oh) * quads;
        let out = (nc * oh_n + oh) * quads;
        for (var q = 0u; q < quads; q++) {
            let xt = unpack4(pb_x4[top + q]);
            let xb = unpack4(pb_x4[top + quads + q]);
            let t = through4(xt, through);
            let b = through4(xb, through);
            let g = pb_dy2[out + q];
            let left = window_grad(t.xy, b.xy, g.x);
            let right = window_grad(t.zw, b.zw, g.y);
            var gt = vec4(left.xy, right.xy);
            var gb = vec4(left.zw, right.zw);
            if what == SUM_GRAD {
                s4 += gt + gb;
                sx4 += gt * (relu_in4(xt) - vec4(through.mean)) * through.invstd;
                sx4 += gb * (relu_in4(xb) - vec4(through.mean)) * through.invstd;
                continue;
            }
            if what == BATCHNORM_GRAD {
                gt = batchnorm_grad4(gt, xt, kuv);
                gb = batchnorm_grad4(gb, xb, kuv);
            }
            store_dx4(top + q, gt);
            store_dx4(top + quads + q, gb);
        }
    }
    return vec2(s4.x + s4.y + s4.z + s4.w, sx4.x + sx4.y + sx4.z + sx4.w);
}

// Widths of 4m + 2 (the 14-wide planes), even H: a window row's two rows are 2m + 1 aligned
// vec4s, the top row's m and a half, then the bottom row's half and m. Window 2q takes vec4 q's
// .xy and vec4 m + q's .zw, window 2q + 1 vec4 q's .zw and vec4 m + q + 1's .xy, window 2m
// vec4 m's .xy and vec4 2m's .zw: every vec4 is loaded once, half the loads of the windows
// kernel (measured: 40% less time). The backward takes the same layout (backward_rows).
@compute @workgroup_size(64)
fn maxpool_forward_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        forward_rows(gid.x, PLAIN);
    }
}

fn forward_rows(nc: u32, through: Through) {
    let oh_n = p.h / 2u;
    let m = p.w / 4u;
    for (var oh = 0u; oh < oh_n; oh++) {
        let base = (nc * p.h + 2u * oh) * p.w / 4u;
        let out = (nc * oh_n + oh) * (2u * m + 1u);
        let middle = through4(unpack4(pf_x4[base + m]), through);
        var bottom = middle;
        for (var q = 0u; q < m; q++) {
            let top = through4(unpack4(pf_x4[base + q]), through);
            let next = through4(unpack4(pf_x4[base + m + q + 1u]), through);
            y[out + 2u * q] = first_max(top.xy, bottom.zw).x;
            y[out + 2u * q + 1u] = first_max(top.zw, next.xy).x;
            bottom = next;
        }
        y[out + 2u * m] = first_max(middle.xy, bottom.zw).x;
    }
}

@compute @workgroup_size(64)
fn maxpool_backward_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        _ = backward_rows(gid.x, PLAIN, WRITE_GRAD, vec3(0.0));
    }
}

// As backward_windows, a row of windows at a time in forward_rows' layout: x read and dx
// written as whole `Packed4`s (fewer components on a CPU driver, against a vec2 per window row
// in backward_windows: about half the components moved). The windows go in the same order
// through the same window_backward, so the sums are backward_windows' to the bit. A vec4 of
// the bottom row holds two windows' gradients, one from the iteration before (`pending`);
// vec4 m holds window 2m's top and window 0's bottom, so it is written last. Measured on the
// 14-wide planes, side by side: 13% less time than backward_windows (the windows' arithmetic
// stays).
fn backward_rows(nc: u32, t: Through, what: u32, kuv: vec3<f32>) -> vec2<f32> {
    let oh_n = p.h / 2u;
    let m = p.w / 4u;
    var s2 = vec2(0.0);
    var sx2 = vec2(0.0);
    for (var oh = 0u; oh < oh_n; oh++) {
        let base = (nc * p.h + 2u * oh) * p.w / 4u;
        let dy_row = (nc * oh_n + oh) * (2u * m + 1u);
        let middle = unpack4(pb_x4[base + m]);
        var bottom = middle;
        var first_bottom = vec2(0.0);
        var pending = vec2(0.0);
        for (var q = 0u; q < m; q++) {
            let top = unpack4(pb_x4[base + q]);
            let next = unpack4(pb_x4[base + m + q + 1u]);
            let left = window_backward(top.xy, bottom.zw, bw_dy[dy_row + 2u * q], t, what, kuv, &s2, &sx2);
            let right = window_backward(top.zw, next.xy, bw_dy[dy_row + 2u * q + 1u], t, what, kuv, &s2, &sx2);
            if what != SUM_GRAD {
                store_dx4(base + q, vec4(left.xy, right.xy));
                if q == 0u {
                    first_bottom = left.zw;
                } else {
                    store_dx4(base + m + q, vec4(pending, left.zw));
                }
            }
            pending = right.zw;
            bottom = next;
        }
        let last = window_backward(middle.xy, bottom.zw, bw_dy[dy_row + 2u * m], t, what, kuv, &s2, &sx2);
        if what != SUM_GRAD {
            if m == 0u {
                store_dx4(base, last);
            } else {
                store_dx4(base + m, vec4(last.xy, first_bottom));
                store_dx4(base + 2u * m, vec4(pending, last.zw));
            }
        }
    }
    return vec2(s2.x + s2.y, sx2.x + sx2.y);
}

// --- MaxPool(BatchNorm(x)): the kernels above, reading x through the BatchNorm. Its gamma,
// beta and saved follow the pool's own bindings: three for most, two for the pairs forward,
// which therefore has declarations of its own.

@group(0) @binding(4) var<storage, read> bn_gamma: array<f32>;
@group(0) @binding(5) var<storage, read> bn_beta: array<f32>;
@group(0) @binding(6) var<storage, read> bn_saved: array<f32>;

fn plane_batchnorm(nc: u32) -> Through {
    let s = saved_slots(nc);
    return through_batchnorm(bn_gamma[s.x], bn_beta[s.x], bn_saved[s.y], bn_saved[s.z]);
}

@compute @workgroup_size(WG)
fn batchnorm_maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < pooled_len() {
        forward_window(i, plane_batchnorm(i / ((p.h / 2u) * (p.w / 2u))));
    }
}

// The backward is BatchNorm's, in two passes over x and the pool's dy, BatchNorm's dy never
// written: first each plane's (Σdy, Σdy·x̂) of it, as batchnorm_backward_plane would sum the
// written one (batchnorm_backward_reduce then sums the towers' planes), then BatchNorm's dx.
// The loops bind dx in both (the first does not write it): WGSL sees every variable a
// function names, taken branch or not.
@group(0) @binding(7) var<storage, read_write> bn_planes: array<vec2<f32>>;

@compute @workgroup_size(64)
fn batchnorm_maxpool_backward_sums_windows(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        bn_planes[gid.x] = backward_windows(gid.x, plane_batchnorm(gid.x), SUM_GRAD, vec3(0.0));
    }
}

@compute @workgroup_size(64)
fn batchnorm_maxpool_backward_sums_pairs(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        bn_planes[gid.x] = backward_pairs(gid.x, plane_batchnorm(gid.x), SUM_GRAD, vec3(0.0));
    }
}

@compute @workgroup_size(64)
fn batchnorm_maxpool_backward_sums_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        bn_planes[gid.x] = backward_rows(gid.x, plane_batchnorm(gid.x), SUM_GRAD, vec3(0.0));
    }
}

// The towers' sums, laid out as `saved`: Σdy (T, C), then Σdy·x̂ (T, C).
@group(0) @binding(7) var<storage, read> bn_sums: array<f32>;

fn plane_grad_coefficients(nc: u32, t: Through) -> vec3<f32> {
    let s = saved_slots(nc);
    let m = f32(p.n / p.towers * p.h * p.w);
    return batchnorm_input_grad_coefficients(bn_gamma[s.x], t.mean, t.invstd, bn_sums[s.y], bn_sums[s.z], m);
}

@compute @workgroup_size(64)
fn batchnorm_maxpool_backward_input_windows(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        let t = plane_batchnorm(gid.x);
        _ = backward_windows(gid.x, t, BATCHNORM_GRAD, plane_grad_coefficients(gid.x, t));
    }
}

@compute @workgroup_size(64)
fn batchnorm_maxpool_backward_input_pairs(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        let t = plane_batchnorm(gid.x);
        _ = backward_pairs(gid.x, t, BATCHNORM_GRAD, plane_grad_coefficients(gid.x, t));
    }
}

@compute @workgroup_size(64)
fn batchnorm_maxpool_backward_input_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        let t = plane_batchnorm(gid.x);
        _ = backward_rows(gid.x, t, BATCHNORM_GRAD, plane_grad_coefficients(gid.x, t));
    }
}

@group(0) @binding(3) var<storage, read> bnf_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> bnf_beta: array<f32>;
@group(0) @binding(5) var<storage, read> bnf_saved: array<f32>;

@compute @workgroup_size(64)
fn batchnorm_maxpool_forward_pairs(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        let s = saved_slots(gid.x);
        forward_pairs(gid.x, through_batchnorm(bnf_gamma[s.x], bnf_beta[s.x], bnf_saved[s.y], bnf_saved[s.z]));
    }
}

@compute @workgroup_size(64)
fn batchnorm_maxpool_forward_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n * p.c {
        forward_rows(gid.x, plane_batchnorm(gid.x));
    }
}

