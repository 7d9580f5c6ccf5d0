//! The element type of the ops: f32 on the GPU and in the CPU reference, f64 for gradient checks.

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// The arithmetic the reference ops need. Sums over many terms are carried in f64 whatever
/// the element type, so the f32 reference is as close to exact as one rounding allows and the
/// GPU, whose summation order differs, is compared against the truth rather than against
/// another rounding order.
pub trait Float:
    Copy
    + Default
    + PartialOrd
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    const ZERO: Self;
    const ONE: Self;
    const NAME: &'static str;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn is_nan(self) -> bool;
}

macro_rules! impl_float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NAME: &'static str = stringify!($t);
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
impl_float!(f32);
impl_float!(f64);

/// The decimal an f32 hyper-parameter was written as (0.1f32 → 0.1, not 0.100000001490116),
/// so that the f64 reference uses PyTorch's exact eps and momentum although the params struct
/// the GPU shares stores them as f32.
pub fn decimal(v: f32) -> f64 {
    v.to_string().parse().expect("an f32 prints as a decimal")
}

/// Writes `v` into `dst`, or adds it when the op was asked to accumulate.
#[inline]
pub fn store<F: Float>(dst: &mut F, v: F, accumulate: bool) {
    if accumulate {
        *dst += v;
    } else {
        *dst = v;
    }
}
