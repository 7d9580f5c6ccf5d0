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
