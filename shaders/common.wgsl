// common.wgsl: prepended to every file in shaders/ by src/gpu/kernel.rs (WGSL has no includes).
//
// Launchers spread workgroups over a 2-D grid, because one grid dimension stops at 65,535
// workgroups; `flat_index` turns a global invocation id back into one element index.
// Workgroups are 256 wide: a CPU driver runs a workgroup as one loop on one thread, so wide
// workgroups amortise its per-workgroup cost, and 256 is a multiple of every GPU's SIMD width.

const WG: u32 = 256u;

// Bits of a params struct's `accumulate` field (src/ops/).
const ACCUMULATE_INPUT: u32 = 1u;
const ACCUMULATE_PARAMS: u32 = 2u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * WG + gid.x;
}

// BatchNorm's input gradient is dy·k + x·u + v in each (tower, channel), x its input, from
// k = γ·invstd and the tower's sums Σdy and Σdy·x̂ over its m elements. batchnorm.wgsl and
// maxpool.wgsl (which reads BatchNorm's dy straight from the pool's) both take them from here,
// so that the two compute every gradient to the same bits. Returns (k, u, v).
fn batchnorm_input_grad_coefficients(gamma: f32, mean: f32, invstd: f32, sum_dy: f32, sum_dy_xhat: f32, m: f32) -> vec3<f32> {
    let k = gamma * invstd;
    let u = -k * invstd * sum_dy_xhat / m;
    return vec3(k, u, -k * sum_dy / m - u * mean);
}

// A 2×2 max-pool window's rule, shared by maxpool.wgsl and batchnorm.wgsl (which finds each
// element's share of a pooled gradient itself).
// The first maximum of (top.x, top.y, bottom.x, bottom.y), NaN winning, and its position 0..3.
// Written as selects: an array indexed by `best` would be read lane by lane on a CPU driver.
fn first_max(top: vec2<f32>, bottom: vec2<f32>) -> vec2<f32> {
    var best = vec2(top.x, 0.0);
    best = take_if_greater(best, top.y, 1.0);
    best = take_if_greater(best, bottom.x, 2.0);
    return take_if_greater(best, bottom.y, 3.0);
}

// (value, position) of v at position t if it beats the best so far or is NaN.
fn take_if_greater(best: vec2<f32>, v: f32, t: f32) -> vec2<f32> {
    return select(best, vec2(v, t), v > best.x || is_nan(v));
}

// By the bits: compilers may fold `v != v` to false (Vulkan does not promise NaNs survive
// float comparisons; some compilers do fold it).
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}
