// optim.wgsl: one Adam step over the flat parameter buffer, in torch.optim.Adam's order of
// operations. The step's scalars (bias corrections) are computed on the host in f64 and
// written to `step` each step, beside a uniform that stays the same.
// Mirrors src/ops/optim.rs (params, reference) and src/gpu/optim.rs (launcher).
//
// entry point   bindings 1.. (binding 0: AdamParams)
// adam_step     params, grads, m, v, step    one invocation per parameter

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

@group(0) @binding(0) var<uniform> p: AdamParams;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> step: AdamStep;

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.len {
        return;
    }
    let g = grads[i];
    let m1 = m[i] + (g - m[i]) * p.one_minus_beta1;
    let v1 = v[i] * p.beta2 + p.one_minus_beta2 * g * g;
    let denom = sqrt(v1) / step.bias_correction2_sqrt + p.eps;
    params[i] = params[i] - step.step_size * (m1 / denom);
    m[i] = m1;
    v[i] = v1;
}
