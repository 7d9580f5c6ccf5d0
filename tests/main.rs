//! The integration tests, one binary; each module is one concern.

/// Closeness checks, seeded data, the shared GPU, the PyTorch fixtures.
mod util;

/// Finite differences of every CPU op in f64, and of the whole network with its loss.
mod gradcheck;
/// The GPU against the CPU reference, every op, forward and each backward, at several shapes.
mod parity;
/// The CPU reference and the GPU against PyTorch's own outputs and gradients.
mod pytorch;
/// Every shader parses and validates with naga; every entry point the Rust side names exists.
mod shaders;
/// The tape: shared weights collect both gradients; eval mode records nothing.
mod tape;
