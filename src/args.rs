//! The small structs an op's tensors travel in where it takes more than a few: a BatchNorm as
//! the ops that normalise with it see it, a conv's weights, the gradients an op writes.

use crate::ops::{BatchNormParams, Conv2dParams};

/// A BatchNorm layer as the ops that normalise with it see it: its params, γ, β and the
/// statistics it normalises with (mean (T, C) then 1/std (T, C), `saved`).
#[derive(Debug)]
pub struct Norm<'a, T> {
    pub p: BatchNormParams,
    pub gamma: &'a T,
    pub beta: &'a T,
    pub saved: &'a T,
}

/// BatchNorm's running statistics (C each), updated in place by a train-mode forward.
#[derive(Debug)]
pub struct Running<'a, T> {
    pub mean: &'a T,
    pub var: &'a T,
}

/// Where a BatchNorm backward writes (or adds, by `p.accumulate`) dx, dγ and dβ.
#[derive(Debug)]
pub struct NormGrads<'a, T> {
    pub dx: &'a T,
    pub dgamma: &'a T,
    pub dbeta: &'a T,
}

/// A convolution layer: its params, weights (Cout, Cin, K, K) and bias (Cout).
#[derive(Debug)]
pub struct Conv<'a, T> {
    pub p: Conv2dParams,
    pub w: &'a T,
    pub b: &'a T,
}

/// Where a weight-gradient op writes (or adds, by its params' accumulate bit) dw and db.
#[derive(Debug)]
pub struct ParamGrads<'a, T> {
    pub dw: &'a T,
    pub db: &'a T,
}

/// Per-plane (mean, M2) of a BatchNorm's input as its params read it (through a ReLU where
/// they say so): what the op that wrote that input hands the BatchNorm, so that its
/// statistics need not read the input again.
#[derive(Debug)]
pub struct Moments<'a, T> {
    pub p: BatchNormParams,
    pub out: &'a T,
}

/// Clone and Copy for structs of references, whatever the tensor type (a derive would ask
/// the tensor to be Copy).
macro_rules! copy_refs {
    ($($t:ident),*) => {$(
        impl<T> Clone for $t<'_, T> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<T> Copy for $t<'_, T> {}
    )*};
}
pub(crate) use copy_refs;
copy_refs!(Norm, Running, NormGrads, Conv, ParamGrads, Moments);
