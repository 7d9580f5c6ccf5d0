//! The library's error type: failures that come from outside (no adapter, a bad file, a bad
//! flag), each naming what failed and where. Broken internal invariants are panics instead.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No wgpu adapter could run our kernels.
    #[error(
        "no GPU adapter found ({tried}); install a Vulkan driver (on Debian/Ubuntu without a GPU: \
         `apt-get install mesa-vulkan-drivers` gives a software adapter), or choose one \
         with WGPU_BACKEND=vulkan|metal|dx12|gl and WGPU_ADAPTER_NAME=<part of its name>"
    )]
    NoAdapter { tried: String },

    /// The adapter was found but refused to give us a device.
    #[error("adapter {adapter}: {message}")]
    Device { adapter: String, message: String },

    /// The GPU reported an error while running (validation, out of memory, device lost).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A malformed input file: `place` says where (line, field, byte or tensor).
    #[error("{}: {place}: {message}", path.display())]
    Input { path: PathBuf, place: String, message: String },

    /// A flag or setting out of its range.
    #[error("{flag}: {message}")]
    Config { flag: String, message: String },

    /// A file that could not be opened, read or written. The I/O error is part of the message,
    /// not a `source`: the CLI prints the whole chain, which would say it twice.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    /// A run stopped by `cause`; `kept` says what it leaves to resume from.
    #[error("{cause}; {kept}")]
    Stopped { cause: Box<Error>, kept: String },

    /// Training produced a NaN or infinity.
    #[error("training diverged at epoch {epoch}, step {step}: {what}")]
    Diverged { epoch: usize, step: usize, what: String },
}

impl Error {
    pub fn input(path: impl Into<PathBuf>, place: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Input { path: path.into(), place: place.into(), message: message.into() }
    }
    pub fn config(flag: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { flag: flag.into(), message: message.into() }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), cause: source }
    }
}
