//! The emitters for one output channel: a lane per input channel, summed by `subgroupAdd`.

use std::fmt::Write;

use super::*;

/// Elements of the alignment of `conv2d_backward_rows`' plane sums in its output buffer, so
/// that they are a view of it (crate::backend::VIEW_ALIGN).
pub(super) const VIEW: u32 = crate::backend::VIEW_ALIGN as u32;

/// `conv2d_rows` for one output channel: lane `ci` convolves input channel `ci`, the lanes'
/// rows are summed by `subgroupAdd`, lane 0 writes.
pub(super) fn forward_source_lane_per_input(s: Shape, mode: Mode, accumulate: bool) -> String {
    let mut out = prelude(
        s,
        "conv2d_rows",
        &format!(
            "{mode:?} of one output channel, a lane per input channel{}",
            if accumulate { ", added to the output" } else { "" }
        ),
    );
    let (ic, k) = (s.ic, s.k);
    let pad = k / 2;
    forward_bindings(&mut out, s);
    out.push_str(&row_loader(s, "src", "load_row_piece", ic, Through::Plain));
    w!(out, "");
    w!(out, "@compute @workgroup_size({LANES})");
    w!(out, "fn conv2d_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,");
    w!(out, "               @builtin(subgroup_invocation_id) lane: u32) {{");
    w!(out, "    let live = lane < {ic}u;");
    w!(out, "    let ci = min(lane, {}u);", ic - 1);
    image_chunk(&mut out, "wg.y * nwg.x + wg.x");
    for kr in 0..k {
        for kc in 0..k {
            // For the input gradient the forward conv had one input channel and `ic` outputs.
            let (r, c) = if mode == Mode::InputGrad { (k - 1 - kr, k - 1 - kc) } else { (kr, kc) };
            w!(out, "    let w_{kr}_{kc} = select(0.0, weights[(ci * {k}u + {r}u) * {k}u + {c}u], live);");
        }
    }
    forward_images(&mut out, mode, "0");
    own_rows(&mut out, s);
    w!(out, "        for (var y = 0u; y < {}u; y++) {{", s.h);
    for ox in 0..s.w {
        w!(out, "            var a{ox} = 0.0;");
    }
    for kr in 0..k {
        for col in 0..s.w {
            let v = component(s, &format!("x{kr}_{}", col / s.piece()), col % s.piece());
            for kc in 0..k {
                let ox = col as i32 + pad as i32 - kc as i32;
                if (0..s.w as i32).contains(&ox) {
                    w!(out, "            a{ox} = fma(w_{kr}_{kc}, {v}, a{ox});");
                }
            }
        }
    }
    for ox in 0..s.w {
        w!(out, "            let s{ox} = subgroupAdd(a{ox}) + b;");
    }
    w!(out, "            if ok && lane == 0u {{");
    for j in 0..s.pieces() {
        let value = pack(s, |e| format!("s{}", j * s.piece() + e));
        w!(out, "                let o{j} = (img * {}u + y) * {}u + {j}u;", s.h, s.pieces());
        let value = if accumulate { format!("{} + {value}", s.unpack(&format!("dst[o{j}]"))) } else { value };
        w!(out, "                dst[o{j}] = {};", s.pack(&value));
    }
    w!(out, "            }}");
    roll_own_rows(&mut out, s);
    w!(out, "        }}");
    w!(out, "    }}");
    w!(out, "}}");
    out
}

/// `conv2d_backward_weight_rows` for one output channel: lane `ci` accumulates the taps of
/// input channel `ci`; every lane reads the output gradient itself.
pub(super) fn backward_weight_source_lane_per_input(s: Shape) -> String {
    let mut out = prelude(
        s,
        "conv2d_backward_weight_rows",
        "partial weight and bias gradients of one output channel, a lane per input channel",
    );
    let (ic, k) = (s.ic, s.k);
    let pad = k / 2;
    weight_bindings(&mut out, s);
    out.push_str(&row_loader(s, "src", "load_row_piece", ic, Through::Plain));
    out.push_str(&row_loader(s, "dy", "load_dy_piece", 1, Through::Plain));
    w!(out, "");
    w!(out, "@compute @workgroup_size({LANES})");
    w!(
        out,
        "fn conv2d_backward_weight_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,"
    );
    w!(out, "                               @builtin(subgroup_invocation_id) lane: u32) {{");
    w!(out, "    let live = lane < {ic}u;");
    w!(out, "    let ci = min(lane, {}u);", ic - 1);
    image_chunk(&mut out, "wg.y * nwg.x + wg.x");
    for kr in 0..k {
        for kc in 0..k {
            w!(out, "    var g_{kr}_{kc} = 0.0;");
        }
    }
    w!(out, "    var gb = 0.0;");
    chunk_images(&mut out);
    own_rows(&mut out, s);
    open_blocks(&mut out, s);
    dy_block(&mut out, s, "0u", Through::Plain);
    for kr in 0..k {
        for col in 0..s.w {
            let v = component(s, &format!("x{kr}_{}", col / s.piece()), col % s.piece());
            for kc in 0..k {
                let ox = col as i32 + pad as i32 - kc as i32;
                if (0..s.w as i32).contains(&ox) {
                    w!(out, "            g_{kr}_{kc} = fma(d0_{ox}, {v}, g_{kr}_{kc});");
                }
            }
        }
    }
    roll_own_rows(&mut out, s);
    w!(out, "        }}");
    w!(out, "    }}");
    w!(out, "    if in_range && live {{");
    w!(out, "        let base = chunk * {}u;", ic * k * k + 1);
    for kr in 0..k {
        for kc in 0..k {
            w!(out, "        partial[base + (ci * {k}u + {kr}u) * {k}u + {kc}u] = g_{kr}_{kc};");
        }
    }
    w!(out, "        if lane == 0u {{");
    w!(out, "            partial[base + {}u] = gb;", ic * k * k);
    w!(out, "        }}");
    w!(out, "    }}");
    w!(out, "}}");
    out
}
