//! The integration tests, one binary; each module is one concern.

/// Closeness checks, seeded data, the shared GPU, the PyTorch fixtures.
mod util;

/// Model files: round trip, bad files, PyTorch's own state_dict.
mod checkpoint;
/// The command line end to end: a short training run, and bad input refused cleanly.
mod cli;
/// The data readers on good and bad files, the split and the pair sampler.
mod data;
/// Property-based fuzzing of the CSV, IDX and model-file readers.
mod fuzz;
/// Finite differences of every CPU op in f64, and of the whole network with its loss.
mod gradcheck;
/// Other widths, the sweep, and the commands that look inside a model.
mod inspect;
/// The evaluation metrics against hand-computed cases.
mod metrics;
/// The GPU against the CPU reference, every op, forward and each backward, at several shapes.
mod parity;
/// The CPU reference and the GPU against PyTorch's own outputs and gradients.
mod pytorch;
/// Never lose work: exact resume after SIGKILL, divergence, device limits.
mod robust;
/// Every shader parses and validates with naga; every entry point the Rust side names exists.
mod shaders;
/// The tape: shared weights collect both gradients; eval mode records nothing.
mod tape;
/// The training loop on the GPU: warming up leaves no trace.
mod train;
