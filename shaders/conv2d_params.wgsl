// conv2d_params.wgsl: the params of every conv kernel, shaders/conv2d.wgsl's and those written
// per shape; prepended to both by src/gpu/kernel.rs. Mirrors src/ops/ Conv2dParams.
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
    chunk: u32,
    _pad0: u32,
    _pad1: u32,
}
