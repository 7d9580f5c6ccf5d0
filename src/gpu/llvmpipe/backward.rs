//! The emitters of the weight gradient (`conv2d_backward_weight_rows`) and of the square
//! convs' whole backward through BatchNorm (`conv2d_backward_rows`).

use std::fmt::Write;

use super::*;

/// The WGSL of `conv2d_backward_weight_rows` for `shape` (`ic` = the conv's input channels,
/// `oc` its output channels): partial[chunk · taps + tap] as `conv2d_backward_weight_reduce`
/// reads it, with p.chunk = [`IMAGES`]. A chunk is of one tower, so any BatchNorm it reads x
/// through has one (a, b) per channel in it.
///
/// `dy_through` reads dy as the gradient of a BatchNorm's input (z) from that of its output:
/// dy = dn·k + z·u + v with the (tower, channel)'s coefficients, as batchnorm_backward_input
/// writes it (0 where z ≤ 0 through a ReLU), so that gradient is never written; dy's binding
/// then holds dn, and 4… hold z, γ, the saved statistics and the towers' (Σdn, Σdn·x̂).
pub fn backward_weight_source(shape: Shape, through: Through, dy_through: Through) -> String {
    if shape.oc == 1 {
        let plain = through == Through::Plain && dy_through == Through::Plain;
        assert!(plain, "conv2d_backward_weight_rows: one output channel reads x and dy as they are");
        return backward_weight_source_lane_per_input(shape);
    }
    assert!(through == Through::Plain || dy_through == Through::Plain, "conv2d_backward_weight_rows: x or dy through");
    let s = shape;
    let mut out = prelude(
        s,
        "conv2d_backward_weight_rows",
        &format!(
            "partial weight and bias gradients per chunk of images{}{}",
            through_words(through),
            dy_through_words(dy_through)
        ),
    );
    let (ic, oc, k) = (s.ic, s.oc, s.k);
    let pad = k / 2;
    weight_bindings(&mut out, s);
    batchnorm_bindings(&mut out, through, 4);
    if dy_through != Through::Plain {
        w!(out, "@group(0) @binding(4) var<storage, read> bn_x: array<{}>;", s.storage_type());
        w!(out, "@group(0) @binding(5) var<storage, read> bn_gamma: array<f32>;");
        w!(out, "@group(0) @binding(6) var<storage, read> bn_saved: array<f32>;");
        w!(out, "@group(0) @binding(7) var<storage, read> bn_sums: array<f32>;");
    }
    out.push_str(&row_loader(s, "src", "load_row_piece", s.ic, through));
    out.push_str(&row_loader(s, "dy", "load_dy_piece", s.oc, Through::Plain));
    w!(out, "");
    open_lane_groups(&mut out, s, "conv2d_backward_weight_rows");
    batchnorm_of_slots(&mut out, s, through, "tower");
    if dy_through != Through::Plain {
        w!(out, "    let bn_t = min(tower, p.towers - 1u);");
        w!(out, "    let bn_mean = bn_saved[bn_t * {oc}u + oc];");
        w!(out, "    let bn_invstd = bn_saved[(p.towers + bn_t) * {oc}u + oc];");
        w!(out, "    let bn_m = f32(tower_n * {}u);", s.h * s.w);
        let sums = format!("bn_sums[bn_t * {oc}u + oc], bn_sums[(p.towers + bn_t) * {oc}u + oc]");
        w!(out, "    let kuv = batchnorm_input_grad_coefficients(bn_gamma[oc], bn_mean, bn_invstd, {sums}, bn_m);");
    }
    for ci in 0..ic {
        for kr in 0..k {
            for kc in 0..k {
                w!(out, "    var g_{ci}_{kr}_{kc} = 0.0;");
            }
        }
    }
    w!(out, "    var gb = 0.0;");
    chunk_images(&mut out);
    declare_rows(&mut out, s, through);
    open_blocks(&mut out, s);
    dy_block(&mut out, s, "oc", dy_through);
    broadcast_taps(&mut out, s, |out, ci, o, kr, kc, col, v| {
        let ox = col as i32 + pad as i32 - kc as i32;
        if (0..s.w as i32).contains(&ox) {
            w!(out, "                g_{ci}_{kr}_{kc} = fma(d{o}_{ox}, {v}, g_{ci}_{kr}_{kc});");
        }
    });
    roll_rows(&mut out, s, through);
    w!(out, "        }}");
    w!(out, "    }}");
    store_weight_partials(&mut out, s);
    w!(out, "}}");
    out
}

/// Writes the lane's weight taps g_{ci}_{kr}_{kc} and bias tap gb into its chunk's partials,
/// as `conv2d_backward_weight_reduce` reads them.
pub(super) fn store_weight_partials(out: &mut String, s: Shape) {
    let (ic, oc, k) = (s.ic, s.oc, s.k);
    w!(out, "    if in_range {{");
    w!(out, "        let base = chunk * {}u;", oc * ic * k * k + oc);
    for ci in 0..ic {
        for kr in 0..k {
            for kc in 0..k {
                let tap = format!("((oc * {ic}u + {ci}u) * {k}u + {kr}u) * {k}u + {kc}u");
                w!(out, "        partial[base + {tap}] = g_{ci}_{kr}_{kc};");
            }
        }
    }
    w!(out, "        partial[base + {}u + oc] = gb;", oc * ic * k * k);
    w!(out, "    }}");
}

/// The WGSL of `conv2d_backward_rows`: the whole backward of a square conv (IC = OC = C) that
/// reads its input x through a train-mode BatchNorm (of ReLU(x) where `through` says so), in
/// one pass. It does what `conv2d_rows` in InputGradSums mode and `conv2d_backward_weight_rows`
/// reading x through do apart, with the same sums in the same order (so to the same bits), but
/// loads dy and x once: lane c holds channel c's pieces of the dy and x blocks around the
/// output block, broadcasts them to the group for the input gradient (dy) and the weight
/// gradient (x through BatchNorm), and reads its own channel's middle blocks as the weight
/// gradient's dy and the plane sums' x. Bindings: dy, weights, dx, x, γ, β, saved, and `out`:
/// the weight partials, chunk by chunk as `conv2d_backward_weight_reduce` reads them, then
/// from `planes_offset` on the (Σdx, Σdx·x̂) of each (image, channel) plane.
pub fn backward_source(shape: Shape, through: Through) -> String {
    let s = shape;
    assert!(s.ic == s.oc && s.oc != 1 && through != Through::Plain, "conv2d_backward_rows: {s:?} {through:?}");
    assert!(s.w.is_multiple_of(2) && (s.h * s.w).is_multiple_of(4), "conv2d_backward_rows: sums of {s:?}");
    let (c, k) = (s.oc, s.k);
    let pad = k / 2;
    let ty = s.vec_type();
    let mut out = prelude(
        s,
        "conv2d_backward_rows",
        &format!("the whole backward (dx, partial dw and db, BatchNorm's plane sums){}", through_words(through)),
    );
    w!(out, "@group(0) @binding(1) var<storage, read> src: array<{}>;", s.storage_type());
    w!(out, "@group(0) @binding(2) var<storage, read> weights: array<f32>;");
    w!(out, "@group(0) @binding(3) var<storage, read_write> dst: array<{}>;", s.storage_type());
    w!(out, "@group(0) @binding(4) var<storage, read> bn_x: array<{}>;", s.storage_type());
    batchnorm_bindings(&mut out, Through::BatchNorm, 5);
    w!(out, "@group(0) @binding(8) var<storage, read_write> partial: array<f32>;");
    out.push_str(&row_loader(s, "src", "load_dy_piece", c, Through::Plain));
    out.push_str(&row_loader(s, "bn_x", "load_x_piece", c, Through::Plain));
    w!(out, "");
    open_lane_groups(&mut out, s, "conv2d_backward_rows");
    w!(out, "    let taps = {}u;", c * c * k * k + c);
    w!(out, "    let planes_offset = (p.towers * per_tower * taps + {}u) / {VIEW}u * {VIEW}u;", VIEW - 1);
    // BatchNorm of the lane's channel in its tower, as batchnorm_of_slots and the sums take it.
    w!(out, "    let bn_tower = min(tower, p.towers - 1u);");
    w!(out, "    let bn_mean = bn_saved[bn_tower * {c}u + oc];");
    w!(out, "    let bn_invstd = bn_saved[(p.towers + bn_tower) * {c}u + oc];");
    w!(out, "    let bn_a = bn_saved[(p.towers + bn_tower) * {c}u + oc] * bn_gamma[oc];");
    w!(out, "    let bn_b = bn_beta[oc] - bn_saved[bn_tower * {c}u + oc] * bn_a;");
    for ci in 0..c {
        for kr in 0..k {
            for kc in 0..k {
                // The input gradient convolves dy with the flipped, transposed weights.
                let index = format!("(({ci}u * {c}u + oc) * {k}u + {}u) * {k}u + {}u", k - 1 - kr, k - 1 - kc);
                w!(out, "    let w_{ci}_{kr}_{kc} = weights[{index}];");
                w!(out, "    var g_{ci}_{kr}_{kc} = 0.0;");
            }
        }
    }
    w!(out, "    var gb = 0.0;");
    chunk_images(&mut out);
    let (first, count) = s.window();
    let relu = through == Through::BatchNormOfRelu;
    // x through BatchNorm as the weight kernel's loader gives it: zero outside the image.
    let normalised = |raw: &str, block: &str| {
        let v = if relu { format!("max({raw}, {ty}(0.0))") } else { raw.to_string() };
        format!("select({ty}(0.0), {v} * bn_a + {ty}(bn_b), ok && {block} >= 0 && {block} < {})", s.blocks())
    };
    // Block `block` (WGSL) of the lane's channel into dy{b}, xr{b} (raw) and xn{b}, at
    // `indent`, each line starting `decl`.
    let load = |out: &mut String, b: u32, block: &str, indent: &str, decl: &str| {
        for j in 0..s.pieces() {
            let piece = format!("oc * {}u + {j}u", s.pieces());
            w!(out, "{indent}{decl}dy{b}_{j} = load_dy_piece(img, ok, {block}, {piece});");
            w!(out, "{indent}{decl}xr{b}_{j} = load_x_piece(img, ok, {block}, {piece});");
            w!(out, "{indent}{decl}xn{b}_{j} = {};", normalised(&format!("xr{b}_{j}"), block));
        }
    };
    for b in 0..count {
        load(&mut out, b, &(first + b as i32).to_string(), "        ", "var ");
    }
    w!(out, "        var sum_dx = vec4(0.0);");
    w!(out, "        var sum_dx_xhat = vec4(0.0);");
    open_blocks(&mut out, s);
    for o in 0..s.rows() {
        for ox in 0..s.w {
            w!(out, "            var a{o}_{ox} = 0.0;");
        }
    }
    broadcast_held(&mut out, s, "dy", true, |out, ci, o, kr, kc, col, v| {
        let ox = col as i32 + pad as i32 - kc as i32;
        if (0..s.w as i32).contains(&ox) {
            w!(out, "                a{o}_{ox} = fma(w_{ci}_{kr}_{kc}, {v}, a{o}_{ox});");
        }
    });
    // The sums, from the held x of the output block (plane_sums_of_block loads it).
    let mid = (-first) as u32;
    add_plane_sums(&mut out, s, through, |j| format!("xr{mid}_{j}"));
    w!(out, "            if ok {{");
    for j in 0..s.pieces() {
        let value = pack(s, |e| accumulator(s, j * s.piece() + e));
        w!(
            out,
            "                dst[((img * {c}u + oc) * {}u + block) * {}u + {j}u] = {};",
            s.blocks(),
            s.pieces(),
            s.pack(&value)
        );
    }
    w!(out, "            }}");
    // The weight gradient: the lane's own dy block, x through BatchNorm broadcast.
    for j in 0..s.pieces() {
        dy_elements(&mut out, s, j, &format!("dy{mid}_{j}"));
    }
    broadcast_held(&mut out, s, "xn", true, |out, ci, o, kr, kc, col, v| {
        let ox = col as i32 + pad as i32 - kc as i32;
        if (0..s.w as i32).contains(&ox) {
            w!(out, "                g_{ci}_{kr}_{kc} = fma(d{o}_{ox}, {v}, g_{ci}_{kr}_{kc});");
        }
    });
    for j in 0..s.pieces() {
        for b in 0..count - 1 {
            for v in ["dy", "xr", "xn"] {
                w!(out, "            {v}{b}_{j} = {v}{}_{j};", b + 1);
            }
        }
    }
    let block = format!("(i32(block) + {})", first + count as i32);
    load(&mut out, count - 1, &block, "            ", "");
    w!(out, "        }}");
    w!(out, "        if ok {{");
    w!(out, "            let plane = planes_offset + 2u * (img * {c}u + oc);");
    w!(out, "            partial[plane] = sum_dx.x + sum_dx.y + sum_dx.z + sum_dx.w;");
    w!(out, "            partial[plane + 1u] = sum_dx_xhat.x + sum_dx_xhat.y + sum_dx_xhat.z + sum_dx_xhat.w;");
    w!(out, "        }}");
    w!(out, "    }}");
    store_weight_partials(&mut out, s);
    w!(out, "}}");
    out
}
