// weight_pack.wgsl: where conv weights go in conv2d_tile's packed layout; prepended by
// src/gpu/kernel.rs to conv2d.wgsl (conv2d_pack_weights makes packs) and optim.wgsl (Adam
// writes them as it updates the weights). Mirrors src/gpu/weight_packs.rs.

// Where one conv's packed weights come from and go: the weights at element `src` of the
// bound buffer, of a conv with IC inputs and OC outputs (the launch's view: transposed for the
// input gradient), K×K taps; packed into vec4s from `dst`.
struct PackJob {
    src: u32,
    ic: u32,
    oc: u32,
    k: u32,
    transpose: u32,
    dst: u32,
    _pad0: u32,
    _pad1: u32,
}

// Every pack of one weights buffer.
struct PackJobs {
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    jobs: array<PackJob, 16>,
}

// Where weight e of `job` (counted from job.src, in the conv's (Cout, Cin, K, K) order) goes:
// (its vec4 in the packed buffer, its lane), as conv2d_pack_weights places it.
fn pack_slot(job: PackJob, e: u32) -> vec2<u32> {
    let k = job.k;
    let pair = e / (k * k);
    var r = (e / k) % k;
    var c = e % k;
    var ic = pair % job.ic;
    var oc = pair / job.ic;
    if job.transpose == 1u {
        // The conv's Cout is the launch's input channels, its Cin the outputs; taps flipped.
        ic = pair / job.oc;
        oc = pair % job.oc;
        r = k - 1u - r;
        c = k - 1u - c;
    }
    let groups = (job.oc + 3u) / 4u;
    return vec2(job.dst + ((ic * k + r) * k + c) * groups + oc / 4u, oc % 4u);
}

// The weights in a job.
fn pack_weights(job: PackJob) -> u32 {
    return job.ic * job.oc * job.k * job.k;
}
