// packed_u64.wgsl: llvmpipe's `Packed4`, the same four floats as two u64s. llvmpipe loads and
// stores a storage buffer lane by lane and component by component, so two 64-bit components
// move four floats in about 20% less time than four 32-bit ones (measured on a plain copy; the
// kernels that move whole vec4s run 10–30% faster for it). Prepended instead of
// packed_f32.wgsl by src/gpu/kernel.rs where the adapter runs the rows kernels (8-lane
// subgroups and 64-bit integers: llvmpipe). Little-endian: u64 k holds floats 2k (low half)
// and 2k + 1.

alias Packed4 = vec2<u64>;

fn unpack4(v: Packed4) -> vec4<f32> {
    let low = vec2<u32>(v & vec2(0xfffffffflu));
    let high = vec2<u32>(v >> vec2(32u));
    return bitcast<vec4<f32>>(vec4(low.x, high.x, low.y, high.y));
}

fn pack4(v: vec4<f32>) -> Packed4 {
    let u = vec4<u64>(bitcast<vec4<u32>>(v));
    return u.xz | (u.yw << vec2(32u));
}
