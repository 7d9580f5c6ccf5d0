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

use super::kernel::{CONV2D_PARAMS, Kernel, prelude as common_prelude};

/// Appends a formatted line of WGSL.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        writeln!($out, $($arg)*).expect("writing to a String");
    }};
}

mod backward;
mod compile_ahead;
mod emit;
mod forward;
mod lane_per_input;
mod launch;

/// How a launch reads its input `src` (the forward's x, the weight gradient's x; its `THROUGH`
/// value), as the portable kernels do.
pub use crate::gpu::conv2d::Through;
use backward::*;
use emit::*;
use forward::*;
use lane_per_input::*;
pub use launch::Llvmpipe;

/// How this set holds runs of four floats in storage, every kernel's: as two u64s.
pub const STORAGE: &str = include_str!("../../../shaders/llvmpipe/packed_u64.wgsl");

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

    /// Whether pieces are held in memory as `Packed4`, two u64s (shaders/llvmpipe/packed_u64.wgsl).
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
