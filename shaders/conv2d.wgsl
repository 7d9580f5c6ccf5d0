// conv2d.wgsl: 2-D convolution, stride 1, odd square kernel, zero padding; forward, the input
// gradient, and the weight and bias gradients as a two-stage reduction (no atomics, so the
// result is the same bits on every run).
// Mirrors src/ops/conv2d.rs (params, reference) and src/gpu/conv2d.rs (launchers). A driver's own
// kernel set, where one is selected (src/gpu/kernel_set.rs), takes the shapes it covers first.
//
// entry point                       bindings 1.. (binding 0: Conv2dParams)
// conv2d_forward                    x, w, b, y
// conv2d_backward                   x, w, dy, dx, partial   the input gradient and/or one
//                                   partial sum of the weight gradient per (tower, image chunk,
//                                   tap), in one launch (INPUT_GRAD, WEIGHT_GRAD)
// conv2d_backward_weight_reduce     partial, dw, db   chunks summed per tower, towers added
// (conv2d_backward_weight_sums, the same for several layers at once, is in optim.wgsl beside
// Adam, which can do those sums itself.)
// conv2d_pack_weights               w, packed (binding 0: PackJobs)  the fast path's weight
//                                                               layout, every conv of one buffer
// conv2d_tile                       x, x2, x4, b, y, packed, bn0, bn1, bn2   fast path,
// conv2d_backward_weight_tile       x, x2, x4, dy, partial, bn0, bn1, bn2    see below
//                                   (bn0..2: of the BatchNorm read through: γ, β and its
//                                   statistics for x (THROUGH); its input z and sums with
//                                   coefficients for dy (DY_THROUGH), bn2 then unused)
//
// Layouts: x (N, Cin, H, W), w (Cout, Cin, K, K), b (Cout), y (N, Cout, OH, OW).
// A "tap" is one weight (Cout·Cin·K·K of them) or one bias (Cout more, after the weights).
// Chunks never straddle two towers, so each tower's gradient is summed on its own and the
// towers' sums are added last, as two separate calls would (src/ops/, `towers`).

// Conv2dParams: shaders/conv2d_params.wgsl, prepended (kernels generated per shape share it).

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
    return (tower_n() + p.chunk - 1u) / p.chunk;
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

@group(0) @binding(1) var<storage, read> bk_x: array<f32>;
@group(0) @binding(2) var<storage, read> bk_w: array<f32>;
@group(0) @binding(3) var<storage, read> bk_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> bk_dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> bk_partial: array<f32>;

// Which parts of a conv's backward a launch of conv2d_backward computes: the input gradient
// (its first p.n·Cin·H·W invocations), the weight partials (the rest), or both in one launch.
// The part not computed has a placeholder bound.
override INPUT_GRAD: u32 = 1u;
override WEIGHT_GRAD: u32 = 1u;

@compute @workgroup_size(WG)
fn conv2d_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var i = flat_index(gid, nwg);
    if INPUT_GRAD == 1u {
        let dx_len = p.n * p.c_in * p.h * p.w;
        if i < dx_len {
            input_grad_element(i);
            return;
        }
        i -= dx_len;
    }
    if WEIGHT_GRAD == 1u {
        weight_partial(i);
    }
}

// dx[i]: a gather over the outputs it touched, so no two invocations write the same place.
fn input_grad_element(i: u32) {
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
                acc += bk_dy[((n * p.c_out + co) * oh_n + u32(oh)) * ow_n + u32(ow)]
                    * bk_w[((co * p.c_in + ci) * p.k + kh) * p.k + kw];
            }
        }
    }
    if (p.accumulate & ACCUMULATE_INPUT) != 0u {
        bk_dx[i] += acc;
    } else {
        bk_dx[i] = acc;
    }
}

// Partial i of the weight gradient, one per (chunk of up to p.chunk images of one tower, tap):
// partial[(tower · chunks_per_tower + chunk) · taps + tap].
fn weight_partial(i: u32) {
    let t_n = taps();
    let cpt = chunks_per_tower();
    if i >= p.towers * cpt * t_n {
        return;
    }
    let tap = i % t_n;
    let chunk = i / t_n;
    let tower = chunk / cpt;
    let n0 = tower * tower_n() + (chunk % cpt) * p.chunk;
    let n1 = min(n0 + p.chunk, (tower + 1u) * tower_n());
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
                    acc += bk_dy[dy_row + ow] * bk_x[x_row + ow];
                }
            }
        }
    } else {
        let co = tap - weights;
        for (var n = n0; n < n1; n++) {
            let base = (n * p.c_out + co) * oh_n * ow_n;
            for (var j = 0u; j < oh_n * ow_n; j++) {
                acc += bk_dy[base + j];
            }
        }
    }
    bk_partial[i] = acc;
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

// ---------------------------------------------------------------------------------------------
// The fast path: planes of a multiple of 4 pixels, at most 8 channels in and out, K ≤ 5.
//
// A CPU driver runs 8 invocations as the lanes of one vector but loads from a storage buffer one
// lane at a time (about 9 cycles per lane and component of a vec4, 20 for a scalar), so the
// number of components loaded, not arithmetic, sets the speed. These kernels therefore
// compute 4 adjacent outputs of every output channel per invocation (one vec4 each); load
// each input element they need once, with the widest aligned loads (x, x2 and x4 are one
// buffer seen as f32, vec2 and vec4); read weights from a uniform buffer, which such a
// driver loads once for all lanes; and are specialised per shape by `override` constants, which
// turns the loops below into straight-line code.

override IC: u32 = 1u;
override OC: u32 = 1u;
override H: u32 = 4u;
override W: u32 = 4u;
override K: u32 = 3u;
// 1: compute the input gradient, a convolution of dy with the flipped, transposed weights.
override TRANSPOSE: u32 = 0u;
// How x is read (src/gpu/conv2d.rs Through): as it is (0), or as the output of a train-mode
// BatchNorm of it (1) or of ReLU(x) (2), x·a + b with its plane's a = invstd·γ and
// b = β − mean·a, as batchnorm_forward computes them, so BatchNorm's output is never written.
override THROUGH: u32 = 0u;
// How dy is read (the input of a TRANSPOSE launch; dy of the weight gradient): as it is (0),
// or as the gradient of the input z of the BatchNorm (1) or BatchNorm-of-ReLU (2) whose
// output's gradient is bound: dn·k + z·u + v (0 where z ≤ 0 through a ReLU) with the (tower,
// channel)'s coefficients from batchnorm_channel_sums, as batchnorm_backward_input computes
// it, so that gradient is never written. Never together with THROUGH.
override DY_THROUGH: u32 = 0u;

// A plane's (a, b) from its BatchNorm's γ, β, mean and 1/std.
fn through_coefficients(gamma: f32, beta: f32, mean: f32, invstd: f32) -> vec2<f32> {
    let a = invstd * gamma;
    return vec2(a, beta - mean * a);
}

// Where the saved statistics of image n's tower and channel ic are: (mean, 1/std).
fn saved_slots(n: u32, ic: u32) -> vec2<u32> {
    let t = n / tower_n();
    return vec2(t * IC + ic, (p.towers + t) * IC + ic);
}

fn through4(v: vec4<f32>, ab: vec2<f32>) -> vec4<f32> {
    if THROUGH == 0u {
        return v;
    }
    return select(v, max(v, vec4(0.0)), THROUGH == 2u) * ab.x + vec4(ab.y);
}

// Where coefficient j (k, u, v) of image n's tower and channel c of `channels` is in the
// sums batchnorm_channel_sums wrote (batchnorm.wgsl coefficient_slot).
fn coefficient_slot(j: u32, n: u32, c: u32, channels: u32) -> u32 {
    return ((2u + j) * p.towers + n / tower_n()) * channels + c;
}

// z's gradient from dn, BatchNorm's output gradient, and z, as batchnorm_backward_input.
fn grad_through4(dn: vec4<f32>, z: vec4<f32>, kuv: vec3<f32>) -> vec4<f32> {
    let relu = DY_THROUGH == 2u;
    let input = select(z, max(z, vec4(0.0)), relu);
    return select(vec4(0.0), dn * kuv.x + input * kuv.y + vec4(kuv.z), z > vec4(0.0) | vec4(!relu));
}

fn tile_pad() -> u32 {
    return K / 2u;
}

// Output channels in groups of 4, one vec4 of weights per group and tap.
fn oc_groups() -> u32 {
    return (OC + 3u) / 4u;
}

// 8 input elements starting at s, where s ≡ phase (mod 4): the K + 3 taps of 4 adjacent
// outputs in one kernel row (the rest is never read). Only the branch of the phase is
// compiled, and loads past K + 3 elements are skipped.
struct Window {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

@group(0) @binding(1) var<storage, read> tile_x: array<f32>;
@group(0) @binding(2) var<storage, read> tile_x2: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> tile_x4: array<vec4<f32>>;

fn load_window(s: u32, phase: u32) -> Window {
    let len = K + 3u;
    var w: Window;
    if phase == 0u {
        w.lo = tile_x4[s / 4u];
        if len > 6u {
            w.hi = tile_x4[s / 4u + 1u];
        } else if len > 4u {
            w.hi = vec4(tile_x2[s / 2u + 2u], 0.0, 0.0);
        }
    } else if phase == 1u {
        let a = tile_x2[(s + 1u) / 2u];
        let b = tile_x4[(s + 3u) / 4u];
        w.lo = vec4(tile_x[s], a.x, a.y, b.x);
        w.hi = vec4(b.y, b.z, select(0.0, b.w, len > 6u), select(0.0, tile_x[s + 7u], len > 7u));
    } else if phase == 2u {
        let a = tile_x2[s / 2u];
        let b = tile_x4[(s + 2u) / 4u];
        w.lo = vec4(a.x, a.y, b.x, b.y);
        w.hi = vec4(b.z, b.w, 0.0, 0.0);
        if len > 6u {
            let c = tile_x2[(s + 6u) / 2u];
            w.hi = vec4(b.z, b.w, c.x, c.y);
        }
    } else {
        let b = tile_x4[(s + 1u) / 4u];
        w.lo = vec4(tile_x[s], b.x, b.y, b.z);
        w.hi = vec4(b.w, 0.0, 0.0, 0.0);
        if len > 5u {
            w.hi.y = tile_x[s + 5u];
        }
        if len > 6u {
            let c = tile_x2[(s + 6u) / 2u];
            w.hi = vec4(b.w, tile_x[s + 5u], c.x, c.y);
        }
    }
    return w;
}

fn element(w: Window, j: u32) -> f32 {
    if j < 4u {
        return w.lo[j];
    }
    return w.hi[j - 4u];
}

// The 4 taps of column c: window elements c .. c + 3.
fn column_taps(w: Window, c: u32) -> vec4<f32> {
    return vec4(element(w, c), element(w, c + 1u), element(w, c + 2u), element(w, c + 3u));
}

// Kernel row r's window, relative to output position f: its offset and that offset mod 4,
// a compile-time constant since planes and f are multiples of 4.
fn window_offset(r: u32) -> i32 {
    return (i32(r) - i32(tile_pad())) * i32(W) - i32(tile_pad());
}

fn window_phase(r: u32) -> u32 {
    return u32(((window_offset(r) % 4) + 4) % 4);
}

// Near the edges of the tensor a window may start outside it (even below 0, wrapping): such
// elements only feed masked taps, and as every tensor is a whole number of vec4s a load is
// either all inside or all outside. The phase stays the constant one.
fn window_start(plane: u32, f: u32, r: u32) -> u32 {
    return u32(i32(plane * H * W + f) + window_offset(r));
}

// Whether kernel row r of the 4 outputs at f lies inside the image; used when W is a multiple
// of 4, where the 4 outputs share a row (the kernels skip the row's work when it does not).
fn row_inside(f: u32, r: u32) -> bool {
    let ih = i32(f / W + r) - i32(tile_pad());
    return ih >= 0 && ih < i32(H);
}

// Kernel row r's window for the 4 outputs at f, read through `ab` (THROUGH), edges masked.
fn masked_window(plane: u32, f: u32, r: u32, ab: vec2<f32>) -> Window {
    var w = load_window(window_start(plane, f, r), window_phase(r));
    w.lo = through4(w.lo, ab);
    w.hi = through4(w.hi, ab);
    return edge_masked(w, f);
}

// When W is a multiple of 4 only the first and last `pad` elements of a window can fall
// outside the row (left of column 0 when the outputs start the row, right of the last column
// when they end it): those are zeroed here, and `tap_mask` has nothing left to do. Otherwise
// `tap_mask` masks tap by tap.
fn edge_masked(window: Window, f: u32) -> Window {
    var w = window;
    if W % 4u == 0u {
        let pad = tile_pad();
        let col = f % W;
        let k = vec4(0u, 1u, 2u, 3u);
        let zero = vec4(0.0);
        w.lo = select(w.lo, zero, (k < vec4(pad)) & vec4(col == 0u));
        w.hi = select(w.hi, zero, (k >= vec4(pad)) & (k < vec4(2u * pad)) & vec4(col + 4u == W));
    }
    return w;
}

// Which of the 4 outputs at f have tap (r, c) inside the image; all, when masked_window has
// already zeroed the outside.
fn tap_mask(f: u32, r: u32, c: u32) -> vec4<bool> {
    if W % 4u == 0u {
        return vec4(true);
    }
    let fe = vec4(f) + vec4(0u, 1u, 2u, 3u);
    let ih = vec4<i32>(fe / W) + vec4(i32(r) - i32(tile_pad()));
    let iw = vec4<i32>(fe % W) + vec4(i32(c) - i32(tile_pad()));
    return (ih >= vec4(0)) & (ih < vec4(i32(H))) & (iw >= vec4(0)) & (iw < vec4(i32(W)));
}

// PackJob, PackJobs: shaders/weight_pack.wgsl, prepended.

@group(0) @binding(0) var<uniform> packs: PackJobs;
@group(0) @binding(1) var<storage, read> pack_w: array<f32>;
@group(0) @binding(2) var<storage, read_write> pack_out: array<vec4<f32>>;

// packed[(ic·K + r)·K + c][group] = the weights of output channels 4·group .. 4·group + 3
// for launch input channel ic and tap (r, c); flipped and transposed for `transpose`. One
// invocation per packed vec4, PACK_LEN of them per job (those past a job's own are idle).
const PACK_LEN = 400u;

@compute @workgroup_size(64)
fn conv2d_pack_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 64u + gid.x;
    let job_index = i / PACK_LEN;
    if job_index >= packs.count {
        return;
    }
    let job = packs.jobs[job_index];
    let groups = (job.oc + 3u) / 4u;
    let j = i % PACK_LEN;
    if j >= job.ic * job.k * job.k * groups {
        return;
    }
    let k = job.k;
    let group = j % groups;
    let tap = j / groups;
    let c = tap % k;
    let r = (tap / k) % k;
    let ic = tap / (k * k);
    var v = vec4(0.0);
    for (var l = 0u; l < 4u; l++) {
        let oc = 4u * group + l;
        if oc < job.oc {
            if job.transpose == 1u {
                // The forward conv had Cout = ic's count (this launch's input) and Cin = oc's.
                v[l] = pack_w[job.src + ((ic * job.oc + oc) * k + (k - 1u - r)) * k + (k - 1u - c)];
            } else {
                v[l] = pack_w[job.src + ((oc * job.ic + ic) * k + r) * k + c];
            }
        }
    }
    pack_out[job.dst + j] = v;
}

// Enough for IC = OC = 8 (two groups) and K = 5.
struct PackedWeights {
    v: array<vec4<f32>, 400>,
}

@group(0) @binding(4) var<storage, read> tile_b: array<f32>;
@group(0) @binding(5) var<storage, read_write> tile_y4: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> tile_w: PackedWeights;
@group(0) @binding(7) var<storage, read> tile_bn0: array<f32>;
@group(0) @binding(8) var<storage, read> tile_bn1: array<f32>;
@group(0) @binding(9) var<storage, read> tile_bn2: array<f32>;

// The same window of z (conv2d_tile's bn0, an element at a time), for DY_THROUGH.
fn z_window(s: u32) -> Window {
    var w: Window;
    for (var j = 0u; j < K + 3u; j++) {
        if j < 4u {
            w.lo[j] = tile_bn0[s + j];
        } else {
            w.hi[j - 4u] = tile_bn0[s + j];
        }
    }
    return w;
}

// Kernel row r's window of z's gradient, from dn's (x, x2, x4) and z's, edges masked.
fn grad_window(plane: u32, f: u32, r: u32, kuv: vec3<f32>) -> Window {
    let s = window_start(plane, f, r);
    var w = load_window(s, window_phase(r));
    let z = z_window(s);
    w.lo = grad_through4(w.lo, z.lo, kuv);
    w.hi = grad_through4(w.hi, z.hi, kuv);
    return edge_masked(w, f);
}

// One invocation per 4 adjacent outputs of one image, every output channel:
// y[n, oc, f .. f + 3] = b[oc] + Σ_{ic, r, c} w · x[n, ic, taps]. With TRANSPOSE, the input
// gradient instead (no bias; written or added by p.accumulate).
@compute @workgroup_size(64)
fn conv2d_tile(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let strips = H * W / 4u;
    let i = gid.y * nwg.x * 64u + gid.x;
    if i >= p.n * strips {
        return;
    }
    let n = i / strips;
    let f = (i % strips) * 4u;
    var acc: array<vec4<f32>, 8>;
    for (var oc = 0u; oc < OC; oc++) {
        acc[oc] = vec4(select(tile_b[oc], 0.0, TRANSPOSE == 1u));
    }
    for (var ic = 0u; ic < IC; ic++) {
        var ab = vec2(1.0, 0.0);
        if THROUGH != 0u {
            let s = saved_slots(n, ic);
            ab = through_coefficients(tile_bn0[ic], tile_bn1[ic], tile_bn2[s.x], tile_bn2[s.y]);
        }
        var kuv = vec3(0.0);
        if DY_THROUGH != 0u {
            let k = tile_bn1[coefficient_slot(0u, n, ic, IC)];
            kuv = vec3(k, tile_bn1[coefficient_slot(1u, n, ic, IC)], tile_bn1[coefficient_slot(2u, n, ic, IC)]);
        }
        for (var r = 0u; r < K; r++) {
            if W % 4u == 0u && !row_inside(f, r) {
                continue;
            }
            var win: Window;
            if DY_THROUGH != 0u {
                win = grad_window(n * IC + ic, f, r, kuv);
            } else {
                win = masked_window(n * IC + ic, f, r, ab);
            }
            for (var c = 0u; c < K; c++) {
                let t = select(vec4(0.0), column_taps(win, c), tap_mask(f, r, c));
                let tap = (ic * K + r) * K + c;
                for (var g = 0u; g < oc_groups(); g++) {
                    let wv = tile_w.v[tap * oc_groups() + g];
                    acc[4u * g] += t * wv.x;
                    acc[4u * g + 1u] += t * wv.y;
                    acc[4u * g + 2u] += t * wv.z;
                    acc[4u * g + 3u] += t * wv.w;
                }
            }
        }
    }
    let add = TRANSPOSE == 1u && (p.accumulate & ACCUMULATE_INPUT) != 0u;
    for (var oc = 0u; oc < OC; oc++) {
        let o = ((n * OC + oc) * H * W + f) / 4u;
        if add {
            tile_y4[o] += acc[oc];
        } else {
            tile_y4[o] = acc[oc];
        }
    }
}

@group(0) @binding(4) var<storage, read> wt_dy4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> wt_partial: array<f32>;
@group(0) @binding(6) var<storage, read> wt_bn0: array<f32>;
@group(0) @binding(7) var<storage, read> wt_bn1: array<f32>;
@group(0) @binding(8) var<storage, read> wt_bn2: array<f32>;

// Row bands of a plane that conv2d_backward_weight_tile's invocations split (W a multiple of
// 4): 1, or more where (image, input, output channel) alone would be too few invocations.
override BANDS: u32 = 1u;

// One invocation per (image, row band, input channel, output channel): its K·K taps of the
// weight gradient (and, for input channel 0, its output channel's bias), over the band 4
// outputs at a time, written as one partial per tap and band (then reduced per tower by
// conv2d_backward_weight_reduce with p.chunk = 1, a band counting as an image). Each tap sums
// in the same order as when one invocation took every output channel; spread this way a batch
// of 256 runs 4,096 to 16,384 invocations in workgroups of 64, each with 25 accumulators.
@compute @workgroup_size(64)
fn conv2d_backward_weight_tile(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 64u + gid.x;
    if i >= p.n * BANDS * IC * OC {
        return;
    }
    let chunk = i / (IC * OC);
    let n = chunk / BANDS;
    let band = chunk % BANDS;
    let ic = (i / OC) % IC;
    let oc = i % OC;
    var ab = vec2(1.0, 0.0);
    if THROUGH != 0u {
        let s = saved_slots(n, ic);
        ab = through_coefficients(wt_bn0[ic], wt_bn1[ic], wt_bn2[s.x], wt_bn2[s.y]);
    }
    var kuv = vec3(0.0);
    if DY_THROUGH != 0u {
        let k = wt_bn1[coefficient_slot(0u, n, oc, OC)];
        kuv = vec3(k, wt_bn1[coefficient_slot(1u, n, oc, OC)], wt_bn1[coefficient_slot(2u, n, oc, OC)]);
    }
    var acc: array<f32, 25>;
    var bias = 0.0;
    for (var t = 0u; t < K * K; t++) {
        acc[t] = 0.0;
    }
    let band_rows = (H + BANDS - 1u) / BANDS;
    let end = min((band + 1u) * band_rows, H) * W;
    for (var f = band * band_rows * W; f < end; f += 4u) {
        let at = ((n * OC + oc) * H * W + f) / 4u;
        var dy = wt_dy4[at];
        if DY_THROUGH != 0u {
            let e = 4u * at;
            dy = grad_through4(dy, vec4(wt_bn0[e], wt_bn0[e + 1u], wt_bn0[e + 2u], wt_bn0[e + 3u]), kuv);
        }
        bias += dot(dy, vec4(1.0));
        for (var r = 0u; r < K; r++) {
            if W % 4u == 0u && !row_inside(f, r) {
                continue;
            }
            let win = masked_window(n * IC + ic, f, r, ab);
            for (var c = 0u; c < K; c++) {
                let t = select(vec4(0.0), column_taps(win, c), tap_mask(f, r, c));
                acc[r * K + c] += dot(dy, t);
            }
        }
    }
    let taps = OC * IC * K * K + OC;
    for (var rc = 0u; rc < K * K; rc++) {
        wt_partial[chunk * taps + (oc * IC + ic) * K * K + rc] = acc[rc];
    }
    if ic == 0u {
        wt_partial[chunk * taps + OC * IC * K * K + oc] = bias;
    }
}
