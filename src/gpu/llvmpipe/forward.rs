//! The forward kernel's emitter (`conv2d_rows`: forward and input gradient), and the plane
//! statistics it writes from registers.

use std::fmt::Write;

use super::*;

/// The WGSL of `conv2d_rows` for `shape` and `mode`; `accumulate` adds to the output
/// instead of writing it (a separate kernel, so that plain writes load nothing).
/// Reading through a BatchNorm takes 4 or 8 output channels.
pub fn forward_source(shape: Shape, mode: Mode, accumulate: bool, through: Through) -> String {
    if shape.oc == 1 {
        assert_eq!(through, Through::Plain, "conv2d_rows: one output channel reads its input as it is");
        return forward_source_lane_per_input(shape, mode, accumulate);
    }
    let s = shape;
    let pass = match mode {
        Mode::Forward => "y = conv(x) + b, with the plane moments of ReLU(y) beside it",
        Mode::InputGrad => "dx = the input gradient, from dy",
        Mode::InputGradSums => "dx = the input gradient, with BatchNorm's backward plane sums beside it",
    };
    let through_words = through_words(through);
    let mut out = prelude(
        s,
        "conv2d_rows",
        &format!("{pass}{through_words}{}", if accumulate { ", added to the output" } else { "" }),
    );
    let (ic, oc, k) = (s.ic, s.oc, s.k);
    let pad = k / 2;
    forward_bindings(&mut out, s);
    let stats = mode == Mode::Forward;
    let sums = mode == Mode::InputGradSums;
    // With sums, `through` is the BatchNorm whose gradient this is: dy is read as it is.
    let (through, bn_relu) = if sums { (Through::Plain, through) } else { (through, Through::Plain) };
    if stats || sums {
        w!(out, "@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;");
    }
    if sums {
        assert!(!accumulate && bn_relu != Through::Plain, "conv2d_rows: sums of a written BatchNorm gradient");
        assert!(s.w.is_multiple_of(2) && (s.h * s.w).is_multiple_of(4), "conv2d_rows: sums of {s:?}");
        w!(out, "@group(0) @binding(6) var<storage, read> bn_x: array<{}>;", s.storage_type());
        w!(out, "@group(0) @binding(8) var<storage, read> bn_saved: array<f32>;");
    } else {
        batchnorm_bindings(&mut out, through, 6);
    }
    out.push_str(&row_loader(s, "src", "load_row_piece", s.ic, through));
    w!(out, "");
    open_lane_groups(&mut out, s, "conv2d_rows");
    if sums {
        w!(out, "    let bn_tower = min(tower, p.towers - 1u);");
        w!(out, "    let bn_mean = bn_saved[bn_tower * {oc}u + oc];");
        w!(out, "    let bn_invstd = bn_saved[(p.towers + bn_tower) * {oc}u + oc];");
    } else {
        batchnorm_of_slots(&mut out, s, through, "tower");
    }
    for ci in 0..ic {
        for kr in 0..k {
            for kc in 0..k {
                let index = match mode {
                    Mode::Forward => format!("((oc * {ic}u + {ci}u) * {k}u + {kr}u) * {k}u + {kc}u"),
                    // The forward conv read `oc` channels and wrote `ic`: transpose, flip.
                    Mode::InputGrad | Mode::InputGradSums => {
                        format!("(({ci}u * {oc}u + oc) * {k}u + {}u) * {k}u + {}u", k - 1 - kr, k - 1 - kc)
                    }
                };
                w!(out, "    let w_{ci}_{kr}_{kc} = weights[{index}];");
            }
        }
    }
    forward_images(&mut out, mode, "oc");
    declare_rows(&mut out, s, through);
    if stats {
        w!(out, "        var plane_mean = 0.0;");
        w!(out, "        var plane_m2 = 0.0;");
    }
    if sums {
        w!(out, "        var sum_dx = vec4(0.0);");
        w!(out, "        var sum_dx_xhat = vec4(0.0);");
    }
    open_blocks(&mut out, s);
    for o in 0..s.rows() {
        for ox in 0..s.w {
            w!(out, "            var a{o}_{ox} = b;");
        }
    }
    broadcast_taps(&mut out, s, |out, ci, o, kr, kc, col, v| {
        let ox = col as i32 + pad as i32 - kc as i32;
        if (0..s.w as i32).contains(&ox) {
            w!(out, "                a{o}_{ox} = fma(w_{ci}_{kr}_{kc}, {v}, a{o}_{ox});");
        }
    });
    if stats {
        plane_stats_of_block(&mut out, s);
    }
    if sums {
        plane_sums_of_block(&mut out, s, bn_relu);
    }
    w!(out, "            if ok {{");
    for j in 0..s.pieces() {
        let value = pack(s, |e| accumulator(s, j * s.piece() + e));
        w!(out, "                let o{j} = ((img * {oc}u + oc) * {}u + block) * {}u + {j}u;", s.blocks(), s.pieces());
        let value = if accumulate { format!("{} + {value}", s.unpack(&format!("dst[o{j}]"))) } else { value };
        w!(out, "                dst[o{j}] = {};", s.pack(&value));
    }
    w!(out, "            }}");
    roll_rows(&mut out, s, through);
    w!(out, "        }}");
    if stats {
        w!(out, "        if ok {{");
        w!(out, "            stats[img * {oc}u + oc] = vec2(plane_mean, plane_m2);");
        w!(out, "        }}");
    }
    if sums {
        w!(out, "        if ok {{");
        w!(out, "            let s = sum_dx.x + sum_dx.y + sum_dx.z + sum_dx.w;");
        w!(
            out,
            "            stats[img * {oc}u + oc] = vec2(s, sum_dx_xhat.x + sum_dx_xhat.y + sum_dx_xhat.z + sum_dx_xhat.w);"
        );
        w!(out, "        }}");
    }
    w!(out, "    }}");
    w!(out, "}}");
    out
}

/// The forward's by-product for a BatchNorm(ReLU(·)) that reads its output: the mean and
/// Σ(v − mean)² of ReLU(output) over the lane's plane, each row's own (two passes over
/// registers) merged into the running ones with Chan's formula, row by row, as
/// batchnorm_plane_stats computes them from memory (src/gpu/batchnorm.rs takes these instead
/// when they match).
pub(super) fn plane_stats_of_block(out: &mut String, s: Shape) {
    let w = s.w;
    for o in 0..s.rows() {
        let relu: Vec<String> = (0..w).map(|ox| format!("max(a{o}_{ox}, 0.0)")).collect();
        w!(out, "            {{");
        w!(out, "                let row_mean = ({}) / {w}.0;", relu.join(" + "));
        let dev: Vec<String> = relu.iter().map(|v| format!("({v} - row_mean) * ({v} - row_mean)")).collect();
        w!(out, "                let row_m2 = {};", dev.join(" + "));
        w!(out, "                let seen = f32((y + {o}u) * {w}u);");
        w!(out, "                let delta = row_mean - plane_mean;");
        w!(out, "                plane_mean += delta * ({w}.0 / (seen + {w}.0));");
        w!(out, "                plane_m2 += row_m2 + delta * delta * (seen * {w}.0 / (seen + {w}.0));");
        w!(out, "            }}");
    }
}

/// The input gradient's by-product for the BatchNorm whose output's gradient it is: the
/// block's (dx, dx·x̂) added into the plane's vec4 sums where batchnorm_backward_plane adds
/// them, element f of the plane into component f % 4. A block of two rows starts on a
/// multiple of 4; one row of a width of 2 mod 4 starts at component 2 when odd: the sums turn
/// by two around it.
pub(super) fn plane_sums_of_block(out: &mut String, s: Shape, through: Through) {
    for j in 0..s.pieces() {
        let bx = format!("bn_x[((img * {}u + oc) * {}u + block) * {}u + {j}u]", s.oc, s.blocks(), s.pieces());
        w!(out, "            let bx{j} = {};", s.unpack(&bx));
    }
    add_plane_sums(out, s, through, |j| format!("bx{j}"));
}

/// The sums of `plane_sums_of_block` with piece j of the block's x held in `x(j)`.
pub(super) fn add_plane_sums(out: &mut String, s: Shape, through: Through, x: impl Fn(u32) -> String) {
    let turn = s.rows() == 1 && s.w % 4 == 2;
    if turn {
        w!(out, "            if y % 2u == 1u {{");
        w!(out, "                sum_dx = sum_dx.zwxy;");
        w!(out, "                sum_dx_xhat = sum_dx_xhat.zwxy;");
        w!(out, "            }}");
    }
    for j in 0..s.pieces() {
        for e in 0..s.piece() {
            let f = j * s.piece() + e;
            let c = ["x", "y", "z", "w"][(f % 4) as usize];
            let v = component(s, &x(j), e);
            let v = if through == Through::BatchNormOfRelu { format!("max({v}, 0.0)") } else { v };
            let a = accumulator(s, f);
            w!(out, "            sum_dx.{c} += {a};");
            w!(out, "            sum_dx_xhat.{c} += {a} * ({v} - bn_mean) * bn_invstd;");
        }
    }
    if turn {
        w!(out, "            if y % 2u == 1u {{");
        w!(out, "                sum_dx = sum_dx.zwxy;");
        w!(out, "                sum_dx_xhat = sum_dx_xhat.zwxy;");
        w!(out, "            }}");
    }
}

/// The accumulator of element `f` of a block of output rows.
pub(super) fn accumulator(s: Shape, f: u32) -> String {
    let (o, col) = s.element(f);
    format!("a{o}_{col}")
}

/// Opens the loop over the blocks of output rows: `block`, and `y`, its first row.
pub(super) fn open_blocks(out: &mut String, s: Shape) {
    w!(out, "        for (var block = 0u; block < {}u; block++) {{", s.blocks());
    w!(out, "            let y = block * {}u;", s.rows());
}
