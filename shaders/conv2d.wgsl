// conv2d.wgsl: 2-D convolution, stride 1, odd square kernel, zero padding; forward, the input
// gradient, and the weight and bias gradients as a two-stage reduction (no atomics, so the
// result is the same bits on every run).
// Mirrors src/cpu/conv2d.rs (reference) and src/gpu/conv2d.rs (launchers).
//
// entry point                       bindings 1.. (binding 0: Conv2dParams)
// conv2d_forward                    x, w, b, y
// conv2d_backward_input             dy, w, dx
// conv2d_backward_weight_partial    x, dy, partial    one sum per (tower, image chunk, tap)
// conv2d_backward_weight_reduce     partial, dw, db   chunks summed per tower, towers added
//
// Layouts: x (N, Cin, H, W), w (Cout, Cin, K, K), b (Cout), y (N, Cout, OH, OW).
// A "tap" is one weight (Cout·Cin·K·K of them) or one bias (Cout more, after the weights).
// Chunks never straddle two towers, so each tower's gradient is summed on its own and the
// towers' sums are added last, as two separate calls would (src/params.rs, `towers`).

// src/params.rs Conv2dParams
struct Conv2dParams {
    n: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    k: u32,
    pad: u32,
    accumulate: u32,
    towers: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Images per chunk of the weight-gradient reduction (src/gpu/conv2d.rs WEIGHT_GRAD_CHUNK).
const CHUNK: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Conv2dParams;

fn out_h() -> u32 {
    return p.h + 2u * p.pad + 1u - p.k;
}

fn out_w() -> u32 {
    return p.w + 2u * p.pad + 1u - p.k;
}

fn taps() -> u32 {
    return p.c_out * p.c_in * p.k * p.k + p.c_out;
}

fn tower_n() -> u32 {
    return p.n / p.towers;
}

fn chunks_per_tower() -> u32 {
    return (tower_n() + CHUNK - 1u) / CHUNK;
}

@group(0) @binding(1) var<storage, read> fwd_x: array<f32>;
@group(0) @binding(2) var<storage, read> fwd_w: array<f32>;
@group(0) @binding(3) var<storage, read> fwd_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> fwd_y: array<f32>;

// One invocation per output element.
@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let oh_n = out_h();
    let ow_n = out_w();
    if i >= p.n * p.c_out * oh_n * ow_n {
        return;
    }
    let ow = i % ow_n;
    let oh = (i / ow_n) % oh_n;
    let co = (i / (ow_n * oh_n)) % p.c_out;
    let n = i / (ow_n * oh_n * p.c_out);
    var acc = fwd_b[co];
    for (var ci = 0u; ci < p.c_in; ci++) {
        for (var kh = 0u; kh < p.k; kh++) {
            let ih = i32(oh + kh) - i32(p.pad);
            if ih < 0 || ih >= i32(p.h) {
                continue;
            }
            for (var kw = 0u; kw < p.k; kw++) {
                let iw = i32(ow + kw) - i32(p.pad);
                if iw < 0 || iw >= i32(p.w) {
                    continue;
                }
                acc += fwd_w[((co * p.c_in + ci) * p.k + kh) * p.k + kw]
                    * fwd_x[((n * p.c_in + ci) * p.h + u32(ih)) * p.w + u32(iw)];
            }
        }
    }
    fwd_y[i] = acc;
}

@group(0) @binding(1) var<storage, read> bin_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bin_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> bin_dx: array<f32>;

// One invocation per input element: a gather over the outputs it touched, so no two
// invocations write the same place.
@compute @workgroup_size(WG)
fn conv2d_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n * p.c_in * p.h * p.w {
        return;
    }
    let oh_n = out_h();
    let ow_n = out_w();
    let iw = i % p.w;
    let ih = (i / p.w) % p.h;
    let ci = (i / (p.w * p.h)) % p.c_in;
    let n = i / (p.w * p.h * p.c_in);
    var acc = 0.0;
    for (var co = 0u; co < p.c_out; co++) {
        for (var kh = 0u; kh < p.k; kh++) {
            let oh = i32(ih + p.pad) - i32(kh);
            if oh < 0 || oh >= i32(oh_n) {
                continue;
            }
            for (var kw = 0u; kw < p.k; kw++) {
                let ow = i32(iw + p.pad) - i32(kw);
                if ow < 0 || ow >= i32(ow_n) {
                    continue;
                }
                acc += bin_dy[((n * p.c_out + co) * oh_n + u32(oh)) * ow_n + u32(ow)]
                    * bin_w[((co * p.c_in + ci) * p.k + kh) * p.k + kw];
            }
        }
    }
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        bin_dx[i] += acc;
    } else {
        bin_dx[i] = acc;
    }
}

@group(0) @binding(1) var<storage, read> bw_x: array<f32>;
@group(0) @binding(2) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_partial: array<f32>;

// One invocation per (chunk of up to CHUNK images of one tower, tap):
// partial[(tower · chunks_per_tower + chunk) · taps + tap].
@compute @workgroup_size(WG)
fn conv2d_backward_weight_partial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let t_n = taps();
    let cpt = chunks_per_tower();
    if i >= p.towers * cpt * t_n {
        return;
    }
    let tap = i % t_n;
    let chunk = i / t_n;
    let tower = chunk / cpt;
    let n0 = tower * tower_n() + (chunk % cpt) * CHUNK;
    let n1 = min(n0 + CHUNK, (tower + 1u) * tower_n());
    let oh_n = out_h();
    let ow_n = out_w();
    let weights = p.c_out * p.c_in * p.k * p.k;
    var acc = 0.0;
    if tap < weights {
        let kw = tap % p.k;
        let kh = (tap / p.k) % p.k;
        let ci = (tap / (p.k * p.k)) % p.c_in;
        let co = tap / (p.k * p.k * p.c_in);
        // Outputs whose tap (kh, kw) lands inside the input.
        let oh0 = u32(max(i32(p.pad) - i32(kh), 0));
        let oh1 = u32(min(i32(oh_n), i32(p.h + p.pad) - i32(kh)));
        let ow0 = u32(max(i32(p.pad) - i32(kw), 0));
        let ow1 = u32(min(i32(ow_n), i32(p.w + p.pad) - i32(kw)));
        for (var n = n0; n < n1; n++) {
            for (var oh = oh0; oh < oh1; oh++) {
                let dy_row = ((n * p.c_out + co) * oh_n + oh) * ow_n;
                let x_row = ((n * p.c_in + ci) * p.h + oh + kh - p.pad) * p.w + kw - p.pad;
                for (var ow = ow0; ow < ow1; ow++) {
                    acc += bw_dy[dy_row + ow] * bw_x[x_row + ow];
                }
            }
        }
    } else {
        let co = tap - weights;
        for (var n = n0; n < n1; n++) {
            let base = (n * p.c_out + co) * oh_n * ow_n;
            for (var j = 0u; j < oh_n * ow_n; j++) {
                acc += bw_dy[base + j];
            }
        }
    }
    bw_partial[i] = acc;
}

@group(0) @binding(1) var<storage, read> red_partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> red_dw: array<f32>;
@group(0) @binding(3) var<storage, read_write> red_db: array<f32>;

// One invocation per tap: each tower's chunks in order, then the towers' sums in order.
@compute @workgroup_size(WG)
fn conv2d_backward_weight_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let tap = flat_index(gid, nwg);
    let t_n = taps();
    if tap >= t_n {
        return;
    }
    let cpt = chunks_per_tower();
    var acc = 0.0;
    for (var tower = 0u; tower < p.towers; tower++) {
        var tower_sum = 0.0;
        for (var c = 0u; c < cpt; c++) {
            tower_sum += red_partial[(tower * cpt + c) * t_n + tap];
        }
        acc += tower_sum;
    }
    let weights = p.c_out * p.c_in * p.k * p.k;
    let add = (p.accumulate & ACCUMULATE_PARAMS) != 0u;
    if tap < weights {
        if add {
            red_dw[tap] += acc;
        } else {
            red_dw[tap] = acc;
        }
    } else {
        if add {
            red_db[tap - weights] += acc;
        } else {
            red_db[tap - weights] = acc;
        }
    }
}
