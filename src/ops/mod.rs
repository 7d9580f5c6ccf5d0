//! The ops, one file per family: each op's parameter struct, shared by the CPU reference, the
//! launchers and the WGSL `var<uniform>`, and its CPU reference in plain loops, forward and
//! backward: the one place that says what an op means. `CpuBackend` (src/cpu/) runs the tape
//! on them; the GPU is held to them.
//!
//! Every struct is `#[repr(C)]`, `Pod` and a multiple of 16 bytes, because WGSL rounds a
//! uniform struct up to 16; each shader declares a struct with the same fields in the same
//! order and names this file. `accumulate` tells a backward op to add into its gradient
//! outputs instead of overwriting them (bit [`ACCUMULATE_INPUT`] for the gradient of the
//! op's input, bit [`ACCUMULATE_PARAMS`] for its weights), which is how a tensor used twice,
//! such as the weights the two towers share, collects both contributions.
//!
//! Dimension legend used throughout: N batch, C channels, H/W height/width, K kernel size,
//! D embedding width, T towers.
//!
//! `towers`: the batch holds T equal slices, one per tower of the Siamese network, stacked so
//! that both towers run in one launch. Every reduction over the batch keeps the towers apart,
//! as two separate calls would: BatchNorm's statistics are per tower, and a parameter's
//! gradient is the sum of the towers' gradients (so the linear bias, whose two tower
//! gradients are exact negatives, gets exactly 0, as in PyTorch).

/// `accumulate` bit: add into the input's gradient rather than overwrite it.
pub const ACCUMULATE_INPUT: u32 = 1;
/// `accumulate` bit: add into the parameters' gradients rather than overwrite them.
pub const ACCUMULATE_PARAMS: u32 = 2;

mod batchnorm;
mod contrastive;
mod conv2d;
mod distance;
mod elementwise;
mod linear;
mod maxpool;
mod optim;

pub use batchnorm::*;
pub use contrastive::*;
pub use conv2d::*;
pub use distance::*;
pub use elementwise::*;
pub use linear::*;
pub use maxpool::*;
pub use optim::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_structs_are_multiples_of_16_bytes() {
        for size in [
            size_of::<Conv2dParams>(),
            size_of::<BatchNormParams>(),
            size_of::<MaxPoolParams>(),
            size_of::<LinearParams>(),
            size_of::<PairDistanceParams>(),
            size_of::<ContrastiveParams>(),
            size_of::<ElementwiseParams>(),
            size_of::<GatherParams>(),
            size_of::<AdamParams>(),
        ] {
            assert_eq!(size % 16, 0, "a uniform struct of {size} bytes");
        }
    }

    #[test]
    fn same_conv_keeps_the_size() {
        let p = Conv2dParams::same(2, 3, 9, 7, 4, 5);
        assert_eq!((p.out_h(), p.out_w()), (9, 7));
    }
}
