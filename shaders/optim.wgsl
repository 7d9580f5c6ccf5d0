// optim.wgsl: one Adam step over the flat parameter buffer, in torch.optim.Adam's order of
// operations. The step's scalars (bias corrections) are computed on the host in f64 and
// written to `step` each step, beside a uniform that stays the same.
// Mirrors src/ops/optim.rs (params, reference) and src/gpu/optim.rs (launcher).
//
// entry point                   bindings 1.. (binding 0)
// adam_step                     partials, params, grads, m, v, step, packed (AdamLaunch)
//                                   one invocation per parameter
// conv2d_backward_weight_sums   partials, grads (WeightSumsParams)   one invocation per tap
//
// The conv layers' weight-gradient partials (src/gpu/weight_sums.rs) are summed, tap by tap,
// as conv2d_backward_weight_reduce (conv2d.wgsl) sums them, to the bit: by Adam, each
// parameter its own, where they wait for it, else in a launch of their own for every layer
// at once. Both use `tap_sum`. Adam also writes the conv weights it updates into their packs
// for conv2d_tile (weight_pack.wgsl), where they have one: no pack launch after it.

// src/ops/ AdamParams
struct AdamParams {
    len: u32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Written by src/gpu/optim.rs before each step.
struct AdamStep {
    // lr / (1 − β1ᵗ)
    step_size: f32,
    // √(1 − β2ᵗ)
    bias_correction2_sqrt: f32,
}

// src/gpu/weight_sums.rs WeightSumsParams: per layer, (partials at, taps, chunks per tower,
// towers), then (weights, dw at, db at, accumulate).
struct WeightSumsParams {
    layers: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    table: array<vec4<u32>, 16>,
}

// src/gpu/optim.rs AdamLaunch: Adam's params, the sums it does itself (dw and db at offsets
// within `grads`), and the packs it writes (their `src` counted from `params`' first element).
struct AdamLaunch {
    adam: AdamParams,
    sums: WeightSumsParams,
    packs: PackJobs,
}

@group(0) @binding(1) var<storage, read> partials: array<f32>;

// Tap `tap`'s gradient from the partials of the layer whose table row is `at`: each tower's
// chunks in order, then the towers' sums in order.
fn tap_sum(at: vec4<u32>, tap: u32) -> f32 {
    var acc = 0.0;
    for (var tower = 0u; tower < at.w; tower++) {
        var tower_sum = 0.0;
        for (var c = 0u; c < at.z; c++) {
            tower_sum += partials[at.x + (tower * at.z + c) * at.y + tap];
        }
        acc += tower_sum;
    }
    return acc;
}

@group(0) @binding(0) var<uniform> launch: AdamLaunch;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;
@group(0) @binding(6) var<storage, read> step: AdamStep;

@group(0) @binding(7) var<storage, read_write> packed: array<vec4<f32>>;

// 1: the launch sums partials (launch.sums); 0: it has none, and compiles to plain Adam.
override SUMS: u32 = 0u;
// 1: the launch writes packs (launch.packs); 0: none (a placeholder is bound).
override PACKS: u32 = 0u;

// Parameter i's new value into every pack that holds it. Each lane of a packed vec4 is one
// weight's, so no two invocations write one place.
fn write_packs(i: u32, value: f32) {
    for (var j = 0u; j < launch.packs.count; j++) {
        let job = launch.packs.jobs[j];
        if i >= job.src && i - job.src < pack_weights(job) {
            let slot = pack_slot(job, i - job.src);
            packed[slot.x][slot.y] = value;
        }
    }
}

// Parameter i's gradient: grads[i], or where i is a weight or bias of a conv whose partials
// wait, their sum, stored in grads as conv2d_backward_weight_sums stores it.
fn gradient(i: u32) -> f32 {
    if SUMS == 0u {
        return grads[i];
    }
    for (var l = 0u; l < launch.sums.layers; l++) {
        let at = launch.sums.table[2u * l];
        let to = launch.sums.table[2u * l + 1u];
        var tap = at.y;
        if i >= to.y && i < to.y + to.x {
            tap = i - to.y;
        } else if i >= to.z && i < to.z + at.y - to.x {
            tap = to.x + i - to.z;
        }
        if tap < at.y {
            var acc = tap_sum(at, tap);
            if to.w != 0u {
                acc = grads[i] + acc;
            }
            grads[i] = acc;
            return acc;
        }
    }
    return grads[i];
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = launch.adam;
    let i = flat_index(gid, nwg);
    if i >= p.len {
        return;
    }
    let g = gradient(i);
    let m1 = m[i] + (g - m[i]) * p.one_minus_beta1;
    let v1 = v[i] * p.beta2 + p.one_minus_beta2 * g * g;
    let denom = sqrt(v1) / step.bias_correction2_sqrt + p.eps;
    let updated = params[i] - step.step_size * (m1 / denom);
    params[i] = updated;
    m[i] = m1;
    v[i] = v1;
    if PACKS == 1u {
        write_packs(i, updated);
    }
}

@group(0) @binding(0) var<uniform> ws: WeightSumsParams;
@group(0) @binding(2) var<storage, read_write> ws_grads: array<f32>;

// One invocation per tap of all the layers, in table order. Workgroups of 64: a step's
// thousand-odd taps then split evenly between a CPU driver's threads.
@compute @workgroup_size(64)
fn conv2d_backward_weight_sums(@builtin(global_invocation_id) gid: vec3<u32>) {
    var tap = gid.x;
    for (var l = 0u; l < ws.layers; l++) {
        let at = ws.table[2u * l];
        let to = ws.table[2u * l + 1u];
        if tap < at.y {
            let acc = tap_sum(at, tap);
            let i = select(to.z + tap - to.x, to.y + tap, tap < to.x);
            if to.w != 0u {
                ws_grads[i] += acc;
            } else {
                ws_grads[i] = acc;
            }
            return;
        }
        tap -= at.y;
    }
}
