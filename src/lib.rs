//! siamese: the Siamese-network / contrastive-loss tutorial on Fashion-MNIST, trained by a small
//! from-scratch GPU engine: hand-written WGSL kernels run through wgpu, an autograd tape, and
//! a plain-Rust CPU reference of every op that the GPU is tested against.
//!
//! Data flows one way: `data` → `model` (records ops on the `tape`) → `tape::backward` →
//! `optim` → metrics. The ops run on a [`backend::Backend`]: [`cpu::CpuBackend`] (the
//! reference, f32 or f64) or [`gpu::GpuBackend`] (WGSL through wgpu).

pub mod args;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod error;
pub mod float;
pub mod fused;
pub mod fusion;
pub mod gpu;
pub mod graph;
pub mod inspect;
pub mod job;
mod lower;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod optim;
pub mod output;
pub mod plot;
pub mod run;
pub mod sweep;
pub mod tape;
pub mod train;
pub mod tsne;

pub use error::{Error, Result};
