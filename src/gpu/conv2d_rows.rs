//! Writes the WGSL of the subgroup convolution kernels (`conv2d_rows`,
//! `conv2d_backward_weight_rows`), one straight-line kernel per layer shape, for devices whose
//! subgroups are exactly 8 lanes wide (llvmpipe on AVX2/AVX-512).
//!
//! Why generated rather than written out in shaders/: llvmpipe runs 8 invocations as the lanes
//! of one vector and loads from a storage buffer one lane at a time (about 20 cycles per lane
//! and load), so the other conv kernels spend their time loading inputs that every lane needs
//! alike. Here each lane loads a different piece of the input rows, once, and the lanes share
//! the pieces with `subgroupBroadcast` (one vector instruction). WGSL wants the broadcast's
//! lane as a constant, and llvmpipe's compiler unrolls only small loops (a loop it keeps turns
//! every per-lane array into memory traffic), so the code must be straight-line: this file
//! spells it out for the shape at hand. Measured on llvmpipe, 2 cores: the 8→8 conv on 14×14
//! images, 3.1 ms for 256 images against 12–16 ms for `conv2d_tile`.
//!
//! Layout of the work: a subgroup is `8 / OC` groups of `OC` lanes, lane `oc` of a group
//! computing output channel `oc` of one image, a block of whole output rows at a time, while
//! the blocks of input rows it reads roll down the image. A block is one row, or two where a
//! row is 2 floats past a multiple of 4 (14 wide), so that blocks are whole vec4 pieces: those
//! move through memory as pairs of u64s, half the components of four f32s, which is what
//! llvmpipe's lane-by-lane loads and stores cost by (`Shape::packed`, `Shape::rows`; measured
//! side by side, 10–20% faster for the 28-wide kernels, 12–30% for the 14-wide ones, whose
//! two-row blocks also skip the broadcasts of pieces no tap reads). A group takes a chunk of
//! [`IMAGES`] images of one tower one after another (a tower's last chunk may be partly
//! empty). With two groups each takes its own image's piece in one `subgroupShuffle` from a
//! per-lane source (one permute per component on llvmpipe; measured side by side, 25–35%
//! faster than two broadcasts and a select).
//! The weight gradient runs the same loops with the roles swapped: each lane loads its own
//! output-gradient row and accumulates the weight taps of its output channel, per
//! [`IMAGES`]-image chunk of one tower (the chunks are then summed in order by
//! `conv2d_backward_weight_reduce`, as for the other kernels).
//! A single output channel (the model's last conv) is split the other way: lane `ci` holds
//! input channel `ci` of one image, loads its rows itself and convolves them with its slice
//! of the weights, and `subgroupAdd` sums the lanes' outputs.
//! The forward also leaves, from registers, the plane statistics of ReLU(output) that the
//! BatchNorm reading it next would otherwise make another pass over memory for.
//! A square conv reading its input through a BatchNorm (the model's second and fourth) runs
//! its whole backward in one kernel, `conv2d_backward_rows`: each lane holds its own channel's
//! dy and x blocks, broadcasts them for the input and weight gradients, and reads its own as
//! the weight gradient's dy and the BatchNorm sums' x, so dy and x are loaded once instead of
//! twice each (measured: 4.6 ms for 6.4 on the 28-wide layer, 3.8 for 5.5 on the 14-wide one).

use std::fmt::Write;

use super::kernel::{Kernel, prelude as packed_prelude};

/// Appends a formatted line of WGSL.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        writeln!($out, $($arg)*).expect("writing to a String");
    }};
}

/// Lanes of the subgroup these kernels are written for.
pub const LANES: u32 = 8;

/// Images a lane group convolves one after another (amortising its weight loads: 8 measured
/// faster than 2 or 4), and so the weight gradient's chunk.
pub const IMAGES: u32 = 8;

/// Lane-group chunks of [`IMAGES`] images for `n` images in `towers` towers, each tower's
/// last chunk partly empty where its size is not a multiple.
pub fn chunks(n: u32, towers: u32) -> u32 {
    towers * (n / towers).div_ceil(IMAGES)
}

/// What a `conv2d_rows` launch computes (its `MODE` value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// y = conv(x, w) + b.
    Forward = 0,
    /// dx = conv(dy, flipped and transposed w), written or added by `p.accumulate`.
    InputGrad = 1,
    /// dx written as by InputGrad, and beside it, from registers, the plane sums (Σdx, Σdx·x̂)
    /// that the backward of a BatchNorm whose output's gradient dx is takes (x̂ of its input,
    /// read by the kernel; `THROUGH` says whether through a ReLU), summed in the order of
    /// batchnorm_backward_plane, so to the same bits. Planes of a multiple of 4 elements and
    /// an even width.
    InputGradSums = 2,
}

impl Mode {
    fn from_spec(v: u32) -> Self {
        match v {
            0 => Mode::Forward,
            1 => Mode::InputGrad,
            2 => Mode::InputGradSums,
            _ => panic!("conv2d_rows: MODE = {v}"),
        }
    }
}

/// How a launch reads its input `src` (the forward's x, the weight gradient's x; its `THROUGH`
/// value): as it is, or as the output of a train-mode BatchNorm of it, ReLU(x)·a + b or
/// x·a + b with its (tower, channel)'s a = γ·invstd and b = β − mean·a, computed as
/// batchnorm_forward computes them. That BatchNorm's output is then never written
/// (src/gpu/conv2d.rs, batchnorm_conv2d_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Through {
    Plain = 0,
    BatchNorm = 1,
    BatchNormOfRelu = 2,
}

impl Through {
    /// Through a BatchNorm, of ReLU(x) or of x.
    pub fn batchnorm(relu: bool) -> Self {
        if relu { Through::BatchNormOfRelu } else { Through::BatchNorm }
    }

    fn from_spec(v: u32) -> Self {
        match v {
            0 => Through::Plain,
            1 => Through::BatchNorm,
            2 => Through::BatchNormOfRelu,
            _ => panic!("conv2d_rows: THROUGH = {v}"),
        }
    }
}

/// The shape of one launch: `ic` channels are read and broadcast, `oc` (one per lane of a
/// group) are produced. For the input gradient, `ic` is the conv's output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub ic: u32,
    pub oc: u32,
    pub h: u32,
    pub w: u32,
    pub k: u32,
}

impl Shape {
    /// Lane groups per subgroup: each broadcast is taken once per group, so few groups. One
    /// output channel: one group, a lane per input channel.
    pub fn groups(&self) -> u32 {
        if self.oc == 1 { 1 } else { LANES / self.oc }
    }

    /// Whether these kernels cover the shape: 4 or 8 output channels, at most 8 inputs, an
    /// odd kernel of at most 5, and code of a bounded size.
    pub fn supported(&self) -> bool {
        matches!(self.oc, 1 | 4 | 8)
            && (1..=8).contains(&self.ic)
            && !self.k.is_multiple_of(2)
            && self.k <= 5
            && self.h >= 1
            && self.w >= 1
            && self.ic * self.k * self.k * self.w <= 8 * 9 * 28
    }

    /// Rows a kernel takes at a time (a block): two where a row is 2 floats past a multiple of
    /// 4 (the 14-wide layers), so that a block is whole vec4 pieces, moved as packed pairs of
    /// u64s (`packed`); one otherwise, and always for one output channel.
    fn rows(&self) -> u32 {
        let pairs = self.w % 4 == 2 && self.h.is_multiple_of(2) && self.oc != 1;
        if pairs { 2 } else { 1 }
    }

    /// Blocks of rows in a plane.
    fn blocks(&self) -> u32 {
        self.h / self.rows()
    }

    /// Floats per load: the widest vector that tiles a block.
    fn piece(&self) -> u32 {
        let width = self.rows() * self.w;
        if width.is_multiple_of(4) {
            4
        } else if width.is_multiple_of(2) {
            2
        } else {
            1
        }
    }

    /// Pieces per block of input rows.
    fn pieces(&self) -> u32 {
        self.rows() * self.w / self.piece()
    }

    /// The blocks a block of output rows reads, relative to its own: (first, count).
    fn window(&self) -> (i32, u32) {
        let (pad, rows) = ((self.k / 2) as i32, self.rows() as i32);
        let (first, last) = (-((pad + rows - 1) / rows), (rows - 1 + pad) / rows);
        (first, (last - first + 1) as u32)
    }

    /// Element `f` of a block: (row in the block, column).
    fn element(&self, f: u32) -> (u32, u32) {
        (f / self.w, f % self.w)
    }

    /// Pieces of one block of every input channel, and how many each lane of a group holds.
    fn slots(&self) -> u32 {
        (self.ic * self.pieces()).div_ceil(self.oc)
    }

    fn vec_type(&self) -> String {
        match self.piece() {
            1 => "f32".into(),
            n => format!("vec{n}<f32>"),
        }
    }

    /// Whether pieces are held in memory as `Packed4`, two u64s (shaders/packed_u64.wgsl).
    /// Only vec4 pieces gain (one u64 for a vec2<f32> measured no faster), and not one output
    /// channel's kernels, whose lanes each load their own rows (measured slower).
    fn packed(&self) -> bool {
        self.piece() == 4 && self.oc != 1
    }

    /// The element type of the arrays that hold rows.
    fn storage_type(&self) -> String {
        if self.packed() { "Packed4".into() } else { self.vec_type() }
    }

    /// A piece read from memory (`stored`, WGSL, of `storage_type`).
    fn unpack(&self, stored: &str) -> String {
        if self.packed() { format!("unpack4({stored})") } else { stored.to_string() }
    }

    /// A piece as it is written to memory.
    fn pack(&self, piece: &str) -> String {
        if self.packed() { format!("pack4({piece})") } else { piece.to_string() }
    }
}

/// The WGSL of a generated kernel, from its specialisation values (see `Kernel::overrides`).
pub fn source(kernel: Kernel, spec: &[u32]) -> String {
    let shape = |s: &[u32]| Shape { ic: s[0], oc: s[1], h: s[2], w: s[3], k: s[4] };
    match (kernel, spec) {
        (Kernel::Conv2dRows, [.., mode, accumulate, through]) => {
            forward_source(shape(spec), Mode::from_spec(*mode), *accumulate != 0, Through::from_spec(*through))
        }
        (Kernel::Conv2dBackwardWeightRows, [.., through, dy_through]) => {
            backward_weight_source(shape(spec), Through::from_spec(*through), Through::from_spec(*dy_through))
        }
        (Kernel::Conv2dBackwardRows, [.., through]) => backward_source(shape(spec), Through::from_spec(*through)),
        _ => panic!("{kernel:?} is not a generated kernel"),
    }
}

/// The WGSL of `conv2d_rows` for `shape` and `mode`; `accumulate` adds to the output
/// instead of writing it (a separate kernel, so that plain writes load nothing).
/// Reading through a BatchNorm takes 4 or 8 output channels.
pub fn forward_source(shape: Shape, mode: Mode, accumulate: bool, through: Through) -> String {
    if shape.oc == 1 {
        assert_eq!(through, Through::Plain, "conv2d_rows: one output channel reads its input as it is");
        return forward_source_lane_per_input(shape, mode, accumulate);
    }
    let s = shape;
    let mut out = prelude(s);
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
fn plane_stats_of_block(out: &mut String, s: Shape) {
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
fn plane_sums_of_block(out: &mut String, s: Shape, through: Through) {
    for j in 0..s.pieces() {
        let bx = format!("bn_x[((img * {}u + oc) * {}u + block) * {}u + {j}u]", s.oc, s.blocks(), s.pieces());
        w!(out, "            let bx{j} = {};", s.unpack(&bx));
    }
    add_plane_sums(out, s, through, |j| format!("bx{j}"));
}

/// The sums of `plane_sums_of_block` with piece j of the block's x held in `x(j)`.
fn add_plane_sums(out: &mut String, s: Shape, through: Through, x: impl Fn(u32) -> String) {
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
fn accumulator(s: Shape, f: u32) -> String {
    let (o, col) = s.element(f);
    format!("a{o}_{col}")
}

/// Opens the loop over the blocks of output rows: `block`, and `y`, its first row.
fn open_blocks(out: &mut String, s: Shape) {
    w!(out, "        for (var block = 0u; block < {}u; block++) {{", s.blocks());
    w!(out, "            let y = block * {}u;", s.rows());
}

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
    let mut out = prelude(s);
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
fn store_weight_partials(out: &mut String, s: Shape) {
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
    let mut out = prelude(s);
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

/// Elements of the alignment of `conv2d_backward_rows`' plane sums in its output buffer, so
/// that they are a view of it (crate::backend::VIEW_ALIGN).
const VIEW: u32 = crate::backend::VIEW_ALIGN as u32;

/// `conv2d_rows` for one output channel: lane `ci` convolves input channel `ci`, the lanes'
/// rows are summed by `subgroupAdd`, lane 0 writes.
fn forward_source_lane_per_input(s: Shape, mode: Mode, accumulate: bool) -> String {
    let mut out = prelude(s);
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
fn backward_weight_source_lane_per_input(s: Shape) -> String {
    let mut out = prelude(s);
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

/// The K rows of a lane's own input channel around output row 0: x{r}_{j} holds piece j of
/// input row y - pad + r (zero for lanes past the last channel).
fn own_rows(out: &mut String, s: Shape) {
    for r in 0..s.k {
        for j in 0..s.pieces() {
            let row = r as i32 - (s.k / 2) as i32;
            w!(out, "        var x{r}_{j} = load_row_piece(img, ok && live, {row}, ci * {}u + {j}u);", s.pieces());
        }
    }
}

fn roll_own_rows(out: &mut String, s: Shape) {
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
fn forward_images(out: &mut String, mode: Mode, channel: &str) {
    match mode {
        Mode::Forward => w!(out, "    let b = bias[{channel}];"),
        Mode::InputGrad | Mode::InputGradSums => w!(out, "    let b = 0.0;"),
    }
    chunk_images(out);
}

/// Bindings of `conv2d_rows`: input, weights, bias, output (and, where the forward leaves
/// them, the plane statistics at 5).
fn forward_bindings(out: &mut String, s: Shape) {
    w!(out, "@group(0) @binding(1) var<storage, read> src: array<{}>;", s.storage_type());
    w!(out, "@group(0) @binding(2) var<storage, read> weights: array<f32>;");
    w!(out, "@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    w!(out, "@group(0) @binding(4) var<storage, read_write> dst: array<{}>;", s.storage_type());
}

/// Bindings of `conv2d_backward_weight_rows`: input, output gradient, partial sums.
fn weight_bindings(out: &mut String, s: Shape) {
    w!(out, "@group(0) @binding(1) var<storage, read> src: array<{}>;", s.storage_type());
    w!(out, "@group(0) @binding(2) var<storage, read> dy: array<{}>;", s.storage_type());
    w!(out, "@group(0) @binding(3) var<storage, read_write> partial: array<f32>;");
}

/// Opens entry point `name` of a kernel of lane groups: lane `oc` of group `group` (its first
/// lane `group_lane`), and the group's chunk of images (`image_chunk`).
fn open_lane_groups(out: &mut String, s: Shape, name: &str) {
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
fn image_chunk(out: &mut String, chunk: &str) {
    w!(out, "    let tower_n = p.n / p.towers;");
    w!(out, "    let per_tower = (tower_n + {IMAGES}u - 1u) / {IMAGES}u;");
    w!(out, "    let chunk = {chunk};");
    w!(out, "    let tower = chunk / per_tower;");
    w!(out, "    let in_range = chunk < p.towers * per_tower;");
}

/// Opens the loop over the chunk's images: `img`, and `ok` unless it is past its tower.
fn chunk_images(out: &mut String) {
    w!(out, "    for (var t = 0u; t < {IMAGES}u; t++) {{");
    w!(out, "        let local = (chunk % per_tower) * {IMAGES}u + t;");
    w!(out, "        let img = tower * tower_n + local;");
    w!(out, "        let ok = in_range && local < tower_n;");
}

/// Block `block` of output rows of the gradient of channel `channel` (WGSL) as d{o}_{col},
/// added to `gb` in order; through a BatchNorm's backward (`backward_weight_source`) from dn
/// and z.
fn dy_block(out: &mut String, s: Shape, channel: &str, through: Through) {
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
fn dy_elements(out: &mut String, s: Shape, j: u32, piece: &str) {
    for e in 0..s.piece() {
        let (o, col) = s.element(j * s.piece() + e);
        w!(out, "            let d{o}_{col} = {};", component(s, piece, e));
        w!(out, "            gb += d{o}_{col};");
    }
}

/// The common prelude and the params struct, taken from shaders/conv2d.wgsl so there is one
/// definition of it.
fn prelude(s: Shape) -> String {
    const CONV2D: &str = include_str!("../../shaders/conv2d.wgsl");
    let start = CONV2D.find("struct Conv2dParams {").expect("conv2d.wgsl defines Conv2dParams");
    let end = start + CONV2D[start..].find("\n}\n").expect("end of Conv2dParams") + 3;
    // These kernels run where the shader files hold rows as u64 pairs (GpuContext::rows_kernels).
    let mut out =
        format!("// Generated by src/gpu/conv2d_rows.rs for {s:?}.\n{}\n{}", packed_prelude(true), &CONV2D[start..end]);
    w!(out, "@group(0) @binding(0) var<uniform> p: Conv2dParams;");
    out
}

/// A loader of row pieces of `buffer` (`channels` planes per image): piece `piece` (channel
/// piece / P, piece piece % P of the block) of block `block` of rows of image `img`, zero
/// outside the image or past the batch. Through a BatchNorm it takes the piece's channel's
/// (a, b) too: the padding stays zero, as around BatchNorm's output.
fn row_loader(s: Shape, buffer: &str, name: &str, channels: u32, through: Through) -> String {
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
fn declare_rows(out: &mut String, s: Shape, through: Through) {
    let (first, count) = s.window();
    for b in 0..count {
        for slot in 0..s.slots() {
            let block = first + b as i32;
            w!(out, "        var x{b}_{slot} = {};", slot_load(s, through, slot, &block.to_string()));
        }
    }
}

/// Moves the blocks up one and loads the new bottom block.
fn roll_rows(out: &mut String, s: Shape, through: Through) {
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
fn slot_load(s: Shape, through: Through, slot: u32, block: &str) -> String {
    let piece = format!("min({}u + oc, {}u)", slot * s.oc, s.ic * s.pieces() - 1);
    match through {
        Through::Plain => format!("load_row_piece(img, ok, {block}, {piece})"),
        _ => format!("load_row_piece(img, ok, {block}, {piece}, bn_a{slot}, bn_b{slot})"),
    }
}

/// The bindings of the BatchNorm a kernel reads its input through, from `first` on: γ, β and
/// its saved statistics (mean (T, C), then 1/std (T, C)).
fn batchnorm_bindings(out: &mut String, through: Through, first: u32) {
    if through == Through::Plain {
        return;
    }
    w!(out, "@group(0) @binding({first}) var<storage, read> bn_gamma: array<f32>;");
    w!(out, "@group(0) @binding({}) var<storage, read> bn_beta: array<f32>;", first + 1);
    w!(out, "@group(0) @binding({}) var<storage, read> bn_saved: array<f32>;", first + 2);
}

/// bn_a{slot} and bn_b{slot}: the BatchNorm's a and b for the channel of the pieces a lane
/// holds in each slot, in tower `tower` (WGSL), as batchnorm_forward computes them.
fn batchnorm_of_slots(out: &mut String, s: Shape, through: Through, tower: &str) {
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
fn broadcast_taps(out: &mut String, s: Shape, tap: impl FnMut(&mut String, u32, u32, u32, u32, u32, &str)) {
    broadcast_held(out, s, "x", false, tap)
}

/// `broadcast_taps` of the blocks held in {name}{b}_{slot}: by slot (piece slot · OC + lane,
/// as `declare_rows` loads them), or where `own`, lane by lane (lane c holds its channel's
/// pieces, piece j in slot j: square convs, `backward_source`).
fn broadcast_held(
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
fn bool_type(s: Shape) -> String {
    match s.piece() {
        1 => "bool".into(),
        n => format!("vec{n}<bool>"),
    }
}

/// Element `e` of a piece held in variable `v`.
fn component(s: Shape, v: &str, e: u32) -> String {
    if s.piece() == 1 { v.to_string() } else { format!("{v}.{}", ["x", "y", "z", "w"][e as usize]) }
}

/// A piece built from its elements.
fn pack(s: Shape, element: impl Fn(u32) -> String) -> String {
    let parts: Vec<String> = (0..s.piece()).map(element).collect();
    format!("{}({})", s.vec_type(), parts.join(", "))
}
