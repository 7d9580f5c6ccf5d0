// packed_f32.wgsl: how kernels hold runs of four floats in storage (`Packed4`): as vec4<f32>,
// so pack4 and unpack4 compile to nothing. Prepended after common.wgsl by src/gpu/kernel.rs,
// unless the selected kernel set brings its own (`DriverKernels::storage`).

alias Packed4 = vec4<f32>;

fn unpack4(v: Packed4) -> vec4<f32> {
    return v;
}

fn pack4(v: vec4<f32>) -> Packed4 {
    return v;
}
