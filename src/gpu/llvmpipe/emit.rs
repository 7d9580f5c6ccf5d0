//! The pieces every generated kernel is made of: lane groups, image chunks, row blocks and
//! their loads, the BatchNorm read through, the prelude.

use std::fmt::Write;

use super::*;

/// The K rows of a lane's own input channel around output row 0: x{r}_{j} holds piece j of
/// input row y - pad + r (zero for lanes past the last channel).
pub(super) fn own_rows(out: &mut String, s: Shape) {
    for r in 0..s.k {
        for j in 0..s.pieces() {
            let row = r as i32 - (s.k / 2) as i32;
            w!(out, "        var x{r}_{j} = load_row_piece(img, ok && live, {row}, ci * {}u + {j}u);", s.pieces());
        }
    }
}

pub(super) fn roll_own_rows(out: &mut String, s: Shape) {
    for j in 0..s.pieces() {
        for r in 0..s.k - 1 {
            w!(out, "            x{r}_{j} = x{}_{j};", r + 1);
        }
        w!(
            out,
            "            x{}_{j} = load_row_piece(img, ok && live, i32(y) + {}, ci * {}u + {j}u);",
            s.k - 1,
            s.k / 2 + 1,
            s.pieces()
        );
    }
}

/// The bias `b` (of output channel `channel`, WGSL; none for the input gradient) and the
/// opening of the loop over the images of the group's chunk.
pub(super) fn forward_images(out: &mut String, mode: Mode, channel: &str) {
    match mode {
        Mode::Forward => w!(out, "    let b = bias[{channel}];"),
        Mode::InputGrad | Mode::InputGradSums => w!(out, "    let b = 0.0;"),
    }
    chunk_images(out);
}

/// Bindings of `conv2d_rows`: input, weights, bias, output (and, where the forward leaves
/// them, the plane statistics at 5).
pub(super) fn forward_bindings(out: &mut String, s: Shape) {
    w!(out, "@group(0) @binding(1) var<storage, read> src: array<{}>;", s.storage_type());
    w!(out, "@group(0) @binding(2) var<storage, read> weights: array<f32>;");
    w!(out, "@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    w!(out, "@group(0) @binding(4) var<storage, read_write> dst: array<{}>;", s.storage_type());
}

/// Bindings of `conv2d_backward_weight_rows`: input, output gradient, partial sums.
pub(super) fn weight_bindings(out: &mut String, s: Shape) {
    w!(out, "@group(0) @binding(1) var<storage, read> src: array<{}>;", s.storage_type());
    w!(out, "@group(0) @binding(2) var<storage, read> dy: array<{}>;", s.storage_type());
    w!(out, "@group(0) @binding(3) var<storage, read_write> partial: array<f32>;");
}

/// Opens entry point `name` of a kernel of lane groups: lane `oc` of group `group` (its first
/// lane `group_lane`), and the group's chunk of images (`image_chunk`).
pub(super) fn open_lane_groups(out: &mut String, s: Shape, name: &str) {
    let indent = " ".repeat(name.len() + 4);
    w!(out, "@compute @workgroup_size({LANES})");
    w!(out, "fn {name}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,");
    w!(out, "{indent}@builtin(subgroup_invocation_id) lane: u32) {{");
    w!(out, "    let oc = lane % {}u;", s.oc);
    w!(out, "    let group = lane / {}u;", s.oc);
    w!(out, "    let group_lane = group * {}u;", s.oc);
    image_chunk(out, &format!("(wg.y * nwg.x + wg.x) * {}u + group", s.groups()));
}

/// A lane group's chunk (`chunk`, WGSL): [`IMAGES`] consecutive images of one tower, numbered
/// tower by tower (as `conv2d_backward_weight_reduce` reads the weight gradient's), so that a
/// group reads through one tower's BatchNorm whatever the towers' size (`chunks`).
pub(super) fn image_chunk(out: &mut String, chunk: &str) {
    w!(out, "    let tower_n = p.n / p.towers;");
    w!(out, "    let per_tower = (tower_n + {IMAGES}u - 1u) / {IMAGES}u;");
    w!(out, "    let chunk = {chunk};");
    w!(out, "    let tower = chunk / per_tower;");
    w!(out, "    let in_range = chunk < p.towers * per_tower;");
}

/// Opens the loop over the chunk's images: `img`, and `ok` unless it is past its tower.
pub(super) fn chunk_images(out: &mut String) {
    w!(out, "    for (var t = 0u; t < {IMAGES}u; t++) {{");
    w!(out, "        let local = (chunk % per_tower) * {IMAGES}u + t;");
    w!(out, "        let img = tower * tower_n + local;");
    w!(out, "        let ok = in_range && local < tower_n;");
}

/// Block `block` of output rows of the gradient of channel `channel` (WGSL) as d{o}_{col},
/// added to `gb` in order; through a BatchNorm's backward (`backward_weight_source`) from dn
/// and z.
pub(super) fn dy_block(out: &mut String, s: Shape, channel: &str, through: Through) {
    let ty = s.vec_type();
    for j in 0..s.pieces() {
        let piece = format!("load_dy_piece(img, ok, i32(block), {channel} * {}u + {j}u)", s.pieces());
        if through == Through::Plain {
            w!(out, "            let dy{j} = {piece};");
        } else {
            w!(out, "            let dn{j} = {piece};");
            let bz =
                format!("bn_x[((img * {}u + {channel}) * {}u + block) * {}u + {j}u]", s.oc, s.blocks(), s.pieces());
            w!(out, "            let bz{j} = {};", s.unpack(&bz));
            let (z, live) = match through {
                Through::BatchNormOfRelu => {
                    (format!("max(bz{j}, {ty}(0.0))"), format!("(bz{j} > {ty}(0.0)) & {}(ok)", bool_type(s)))
                }
                _ => (format!("bz{j}"), format!("{}(ok)", bool_type(s))),
            };
            let grad = format!("dn{j} * kuv.x + {z} * kuv.y + {ty}(kuv.z)");
            w!(out, "            let dy{j} = select({ty}(0.0), {grad}, {live});");
        }
        dy_elements(out, s, j, &format!("dy{j}"));
    }
}

/// The elements of piece j of a block of dy held in `piece` as d{o}_{col}, added to `gb`.
pub(super) fn dy_elements(out: &mut String, s: Shape, j: u32, piece: &str) {
    for e in 0..s.piece() {
        let (o, col) = s.element(j * s.piece() + e);
        w!(out, "            let d{o}_{col} = {};", component(s, piece, e));
        w!(out, "            gb += d{o}_{col};");
    }
}

/// A header naming the kernel, its pass and its shape, then the common prelude with this set's
/// storage and the params struct the conv kernels share.
pub(super) fn prelude(s: Shape, entry: &str, pass: &str) -> String {
    let block = if s.rows() == 2 { "two rows" } else { "one row" };
    let held = if s.packed() { "Packed4 (two u64s)" } else { "f32 vectors" };
    let mut out = format!(
        "// {entry}: {pass}.\n\
         // Shape: {} -> {} channels, {k}x{k} kernel, {}x{} planes; blocks of {block} in pieces of {} floats,\n\
         // held as {held}. Written for 8-lane subgroups by src/gpu/llvmpipe/ (see its module docs).\n{}\n{CONV2D_PARAMS}",
        s.ic,
        s.oc,
        s.h,
        s.w,
        s.piece(),
        common_prelude(STORAGE),
        k = s.k,
    );
    w!(out, "@group(0) @binding(0) var<uniform> p: Conv2dParams;");
    out
}

/// A loader of row pieces of `buffer` (`channels` planes per image): piece `piece` (channel
/// piece / P, piece piece % P of the block) of block `block` of rows of image `img`, zero
/// outside the image or past the batch. Through a BatchNorm it takes the piece's channel's
/// (a, b) too: the padding stays zero, as around BatchNorm's output.
pub(super) fn row_loader(s: Shape, buffer: &str, name: &str, channels: u32, through: Through) -> String {
    let ty = s.vec_type();
    let (ic, blocks, pieces) = (channels, s.blocks(), s.pieces());
    let mut out = String::new();
    let index = format!("((img * {ic}u + piece / {pieces}u) * {blocks}u + u32(block)) * {pieces}u + piece % {pieces}u");
    let load = s.unpack(&format!("{buffer}[{index}]"));
    w!(out, "");
    match through {
        Through::Plain => {
            w!(out, "fn {name}(img: u32, ok: bool, block: i32, piece: u32) -> {ty} {{");
            w!(out, "    if ok && block >= 0 && block < {blocks} {{");
            w!(out, "        return {load};");
        }
        Through::BatchNorm | Through::BatchNormOfRelu => {
            let v = if through == Through::BatchNormOfRelu { format!("max({load}, {ty}(0.0))") } else { load };
            w!(out, "fn {name}(img: u32, ok: bool, block: i32, piece: u32, a: f32, b: f32) -> {ty} {{");
            w!(out, "    if ok && block >= 0 && block < {blocks} {{");
            w!(out, "        return {v} * a + {ty}(b);");
        }
    }
    w!(out, "    }}");
    w!(out, "    return {ty}(0.0);");
    w!(out, "}}");
    out
}

/// The blocks of input rows around output block 0 (`Shape::window`): x{b}_{slot} holds block
/// first + b, slot by slot; lane `oc` of a group loads pieces oc, oc + OC, oc + 2·OC, … (the
/// last piece again where the pieces run out).
pub(super) fn declare_rows(out: &mut String, s: Shape, through: Through) {
    let (first, count) = s.window();
    for b in 0..count {
        for slot in 0..s.slots() {
            let block = first + b as i32;
            w!(out, "        var x{b}_{slot} = {};", slot_load(s, through, slot, &block.to_string()));
        }
    }
}

/// Moves the blocks up one and loads the new bottom block.
pub(super) fn roll_rows(out: &mut String, s: Shape, through: Through) {
    let (first, count) = s.window();
    for slot in 0..s.slots() {
        for b in 0..count - 1 {
            w!(out, "            x{b}_{slot} = x{}_{slot};", b + 1);
        }
        let block = format!("i32(block) + {}", first + count as i32);
        w!(out, "            x{}_{slot} = {};", count - 1, slot_load(s, through, slot, &block));
    }
}

/// The piece of block `block` (WGSL) that a lane holds in `slot`.
pub(super) fn slot_load(s: Shape, through: Through, slot: u32, block: &str) -> String {
    let piece = format!("min({}u + oc, {}u)", slot * s.oc, s.ic * s.pieces() - 1);
    match through {
        Through::Plain => format!("load_row_piece(img, ok, {block}, {piece})"),
        _ => format!("load_row_piece(img, ok, {block}, {piece}, bn_a{slot}, bn_b{slot})"),
    }
}

/// The bindings of the BatchNorm a kernel reads its input through, from `first` on: γ, β and
/// its saved statistics (mean (T, C), then 1/std (T, C)).
pub(super) fn batchnorm_bindings(out: &mut String, through: Through, first: u32) {
    if through == Through::Plain {
        return;
    }
    w!(out, "@group(0) @binding({first}) var<storage, read> bn_gamma: array<f32>;");
    w!(out, "@group(0) @binding({}) var<storage, read> bn_beta: array<f32>;", first + 1);
    w!(out, "@group(0) @binding({}) var<storage, read> bn_saved: array<f32>;", first + 2);
}

/// bn_a{slot} and bn_b{slot}: the BatchNorm's a and b for the channel of the pieces a lane
/// holds in each slot, in tower `tower` (WGSL), as batchnorm_forward computes them.
pub(super) fn batchnorm_of_slots(out: &mut String, s: Shape, through: Through, tower: &str) {
    if through == Through::Plain {
        return;
    }
    w!(out, "    let bn_tower = min({tower}, p.towers - 1u);");
    for slot in 0..s.slots() {
        let c = format!("bn_c{slot}");
        w!(out, "    let {c} = min({}u + oc, {}u) / {}u;", slot * s.oc, s.ic * s.pieces() - 1, s.pieces());
        w!(out, "    let bn_a{slot} = bn_saved[(p.towers + bn_tower) * {}u + {c}] * bn_gamma[{c}];", s.ic);
        w!(out, "    let bn_b{slot} = bn_beta[{c}] - bn_saved[bn_tower * {}u + {c}] * bn_a{slot};", s.ic);
    }
}

/// For every piece of every held block that some tap reads: broadcast it from the lane that
/// loaded it (two lane groups each take their own in one shuffle), then
/// `tap(ci, o, kr, kc, col, value)` for each of its elements (at column `col`), each output
/// row `o` of the block it reaches (through kernel row `kr`) and each kernel column `kc`.
pub(super) fn broadcast_taps(out: &mut String, s: Shape, tap: impl FnMut(&mut String, u32, u32, u32, u32, u32, &str)) {
    broadcast_held(out, s, "x", false, tap)
}

/// `broadcast_taps` of the blocks held in {name}{b}_{slot}: by slot (piece slot · OC + lane,
/// as `declare_rows` loads them), or where `own`, lane by lane (lane c holds its channel's
/// pieces, piece j in slot j: square convs, `backward_source`).
pub(super) fn broadcast_held(
    out: &mut String,
    s: Shape,
    name: &str,
    own: bool,
    mut tap: impl FnMut(&mut String, u32, u32, u32, u32, u32, &str),
) {
    let (first, count) = s.window();
    let pad = (s.k / 2) as i32;
    for b in 0..count {
        for q in 0..s.ic * s.pieces() {
            let (slot, source) = if own { (q % s.pieces(), q / s.pieces()) } else { (q / s.oc, q % s.oc) };
            let (ci, j) = (q / s.pieces(), q % s.pieces());
            // (element, output row, kernel row) for each element's input row in reach.
            let mut reach = Vec::new();
            for e in 0..s.piece() {
                let (r, col) = s.element(j * s.piece() + e);
                let row = (first + b as i32) * s.rows() as i32 + r as i32;
                for o in 0..s.rows() {
                    let kr = row - o as i32 + pad;
                    if (0..s.k as i32).contains(&kr) {
                        reach.push((e, col, o, kr as u32));
                    }
                }
            }
            if reach.is_empty() {
                continue;
            }
            let value = match s.groups() {
                1 => format!("subgroupBroadcast({name}{b}_{slot}, {source}u)"),
                2 => format!("subgroupShuffle({name}{b}_{slot}, {source}u + group_lane)"),
                g => unreachable!("{g} lane groups"),
            };
            w!(out, "            {{");
            w!(out, "                let v = {value};");
            for (e, col, o, kr) in reach {
                for kc in 0..s.k {
                    tap(out, ci, o, kr, kc, col, &component(s, "v", e));
                }
            }
            w!(out, "            }}");
        }
    }
}

/// The boolean vector type of a piece's comparisons.
pub(super) fn bool_type(s: Shape) -> String {
    match s.piece() {
        1 => "bool".into(),
        n => format!("vec{n}<bool>"),
    }
}

/// Element `e` of a piece held in variable `v`.
pub(super) fn component(s: Shape, v: &str, e: u32) -> String {
    if s.piece() == 1 { v.to_string() } else { format!("{v}.{}", ["x", "y", "z", "w"][e as usize]) }
}

/// A piece built from its elements.
pub(super) fn pack(s: Shape, element: impl Fn(u32) -> String) -> String {
    let parts: Vec<String> = (0..s.piece()).map(element).collect();
    format!("{}({})", s.vec_type(), parts.join(", "))
}

/// How a kernel reads its input, in words for its header.
pub(super) fn through_words(through: Through) -> &'static str {
    match through {
        Through::Plain => "",
        Through::BatchNorm => "; x read through BatchNorm(x)",
        Through::BatchNormOfRelu => "; x read through BatchNorm(ReLU(x))",
    }
}

/// How a weight gradient reads dy, in words for its header.
pub(super) fn dy_through_words(through: Through) -> &'static str {
    match through {
        Through::Plain => "",
        _ => "; dy read through the backward of the BatchNorm before it",
    }
}
