// linear.wgsl: the fully connected layer y = x·Wᵀ + b, forward and backward; with
// `relu_input`, Linear(ReLU(x)), reading x through the ReLU and masking x's gradient with it.
// Mirrors src/ops/linear.rs (params, reference) and src/gpu/linear.rs (launchers).
//
// entry point             bindings 1.. (binding 0: LinearParams)
// linear_forward          x, w, b, y     one invocation per output
// linear_backward_input   x, w, dy, dx   one invocation per input element
// linear_backward_weight  x, dy, dw, db  one invocation per weight or bias, summing the batch
//
// Layouts: x (N, In), w (Out, In), b (Out), y (N, Out). Weight gradients are summed per tower
// and the towers' sums added last, as two separate calls would (src/ops/, `towers`):
// the bias, whose two towers' gradients are exact negatives, gets exactly 0.

// src/ops/ LinearParams
struct LinearParams {
    n: u32,
    d_in: u32,
    d_out: u32,
    accumulate: u32,
    towers: u32,
    relu_input: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: LinearParams;

// The layer's input from x's element v: v, or ReLU(v) (as relu_forward computes it).
fn input(v: f32) -> f32 {
    return select(v, max(v, 0.0), p.relu_input != 0u);
}

// x's gradient from ReLU(x)'s, g: 0 where the ReLU passed 0 (as relu_backward).
fn input_grad(v: f32, g: f32) -> f32 {
    return select(g, select(0.0, g, v > 0.0), p.relu_input != 0u);
}

@group(0) @binding(1) var<storage, read> fx: array<f32>;
@group(0) @binding(2) var<storage, read> fw: array<f32>;
@group(0) @binding(3) var<storage, read> fb: array<f32>;
@group(0) @binding(4) var<storage, read_write> fy: array<f32>;

@compute @workgroup_size(WG)
fn linear_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n * p.d_out {
        return;
    }
    let o = i % p.d_out;
    let n = i / p.d_out;
    var acc = fb[o];
    for (var k = 0u; k < p.d_in; k++) {
        acc += input(fx[n * p.d_in + k]) * fw[o * p.d_in + k];
    }
    fy[i] = acc;
}

@group(0) @binding(1) var<storage, read> bi_x: array<f32>;
@group(0) @binding(2) var<storage, read> bi_w: array<f32>;
@group(0) @binding(3) var<storage, read> bi_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> bi_dx: array<f32>;

@compute @workgroup_size(WG)
fn linear_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n * p.d_in {
        return;
    }
    let k = i % p.d_in;
    let n = i / p.d_in;
    var acc = 0.0;
    for (var o = 0u; o < p.d_out; o++) {
        acc += bi_dy[n * p.d_out + o] * bi_w[o * p.d_in + k];
    }
    let g = input_grad(bi_x[i], acc);
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        bi_dx[i] += g;
    } else {
        bi_dx[i] = g;
    }
}

@group(0) @binding(1) var<storage, read> bw_x: array<f32>;
@group(0) @binding(2) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_dw: array<f32>;
@group(0) @binding(4) var<storage, read_write> bw_db: array<f32>;

// Invocations 0..Out·In are weights, the next Out are biases; each sums over the batch in
// order, so no two invocations write one place.
fn batch_sum(i: u32, o: u32, weight: bool) -> f32 {
    let k = i % p.d_in;
    let tower_n = p.n / p.towers;
    var acc = 0.0;
    for (var t = 0u; t < p.towers; t++) {
        var s = 0.0;
        for (var n = t * tower_n; n < (t + 1u) * tower_n; n++) {
            s += bw_dy[n * p.d_out + o] * select(1.0, input(bw_x[n * p.d_in + k]), weight);
        }
        acc += s;
    }
    return acc;
}

@compute @workgroup_size(WG)
fn linear_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let weights = p.d_out * p.d_in;
    if i >= weights + p.d_out {
        return;
    }
    let add = (p.accumulate & ACCUMULATE_PARAMS) != 0u;
    if i < weights {
        let acc = batch_sum(i, i / p.d_in, true);
        if add {
            bw_dw[i] += acc;
        } else {
            bw_dw[i] = acc;
        }
    } else {
        let o = i - weights;
        let acc = batch_sum(0u, o, false);
        if add {
            bw_db[o] += acc;
        } else {
            bw_db[o] = acc;
        }
    }
}

// --- Narrow layers (D_OUT ≤ NARROW, the model's 49 → z): the same sums in the same order
// (so the same bits), arranged for a CPU driver. The shape is in `override` constants, so the
// loops over the outputs unroll, their sums stay in registers, and every weight load has the
// same address in all lanes, which such a driver loads once instead of lane by lane: each
// invocation loads one row of x or dy (one column of x for the weights). The kernels above
// load a row of x and one of w per output, a lane at a time. Workgroups of 16: a CPU driver runs
// each on one thread, and the weight gradient has only D_IN + 1 invocations to share out.
// The backward is one launch: its first workgroups take the columns of dw (and db), each a
// sum over the whole batch, so that they start first, and the rest the rows of dx.
//
// linear_forward_narrow    x, w, b, y                one invocation per row of the batch
// linear_backward_narrow   x, w, dy, dx, dw, db      one per input column and one for the
//                                                    bias, then one per row of the batch
//                                                    (or per element of dx: DX_ELEMENTS)

override D_IN: u32 = 1u;
override D_OUT: u32 = 1u;
const NARROW = 16u;
// Invocations per workgroup: 16 for a CPU driver (above), 64 for a GPU.
override NARROW_WG: u32 = 16u;
// 1: one invocation per element of dx rather than per row (a GPU's shape: 12,544 invocations
// instead of 256 at the model's shape).
override DX_ELEMENTS: u32 = 0u;

@compute @workgroup_size(NARROW_WG)
fn linear_forward_narrow(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= p.n {
        return;
    }
    var acc: array<f32, NARROW>;
    for (var o = 0u; o < D_OUT; o++) {
        acc[o] = fb[o];
    }
    for (var k = 0u; k < D_IN; k++) {
        let v = input(fx[n * D_IN + k]);
        for (var o = 0u; o < D_OUT; o++) {
            acc[o] += v * fw[o * D_IN + k];
        }
    }
    for (var o = 0u; o < D_OUT; o++) {
        fy[n * D_OUT + o] = acc[o];
    }
}

@group(0) @binding(1) var<storage, read> nb_x: array<f32>;
@group(0) @binding(2) var<storage, read> nb_w: array<f32>;
@group(0) @binding(3) var<storage, read> nb_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> nb_dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> nb_dw: array<f32>;
@group(0) @binding(6) var<storage, read_write> nb_db: array<f32>;

@compute @workgroup_size(NARROW_WG)
fn linear_backward_narrow(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let column_groups = (D_IN + NARROW_WG) / NARROW_WG;
    if wg.x < column_groups {
        weight_grad_column(wg.x * NARROW_WG + lid.x);
    } else if DX_ELEMENTS == 1u {
        input_grad_element((wg.x - column_groups) * NARROW_WG + lid.x);
    } else {
        input_grad_row((wg.x - column_groups) * NARROW_WG + lid.x);
    }
}

// Element i of dx, summed as input_grad_row sums it.
fn input_grad_element(i: u32) {
    if i >= p.n * D_IN {
        return;
    }
    let n = i / D_IN;
    let k = i % D_IN;
    var acc = 0.0;
    for (var o = 0u; o < D_OUT; o++) {
        acc += nb_dy[n * D_OUT + o] * nb_w[o * D_IN + k];
    }
    let g = input_grad(nb_x[i], acc);
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        nb_dx[i] += g;
    } else {
        nb_dx[i] = g;
    }
}

// Row n of dx.
fn input_grad_row(n: u32) {
    if n >= p.n {
        return;
    }
    var dy: array<f32, NARROW>;
    for (var o = 0u; o < D_OUT; o++) {
        dy[o] = nb_dy[n * D_OUT + o];
    }
    for (var k = 0u; k < D_IN; k++) {
        var acc = 0.0;
        for (var o = 0u; o < D_OUT; o++) {
            acc += dy[o] * nb_w[o * D_IN + k];
        }
        let i = n * D_IN + k;
        let g = input_grad(nb_x[i], acc);
        if (p.accumulate & ACCUMULATE_INPUT) != 0u {
            nb_dx[i] += g;
        } else {
            nb_dx[i] = g;
        }
    }
}

// Column k < D_IN of x against dy for dw[·, k]; k = D_IN sums dy alone for db. Per tower,
// then the towers' sums, as batch_sum.
fn weight_grad_column(k: u32) {
    if k > D_IN {
        return;
    }
    let weight = k < D_IN;
    let tower_n = p.n / p.towers;
    var acc: array<f32, NARROW>;
    for (var o = 0u; o < D_OUT; o++) {
        acc[o] = 0.0;
    }
    for (var t = 0u; t < p.towers; t++) {
        var s: array<f32, NARROW>;
        for (var o = 0u; o < D_OUT; o++) {
            s[o] = 0.0;
        }
        for (var n = t * tower_n; n < (t + 1u) * tower_n; n++) {
            let v = select(1.0, input(nb_x[n * D_IN + min(k, D_IN - 1u)]), weight);
            for (var o = 0u; o < D_OUT; o++) {
                s[o] += nb_dy[n * D_OUT + o] * v;
            }
        }
        for (var o = 0u; o < D_OUT; o++) {
            acc[o] += s[o];
        }
    }
    let add = (p.accumulate & ACCUMULATE_PARAMS) != 0u;
    for (var o = 0u; o < D_OUT; o++) {
        if weight && add {
            nb_dw[o * D_IN + k] += acc[o];
        } else if weight {
            nb_dw[o * D_IN + k] = acc[o];
        } else if add {
            nb_db[o] += acc[o];
        } else {
            nb_db[o] = acc[o];
        }
    }
}
