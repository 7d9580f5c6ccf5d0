//! Which kernels run: the portable set (shaders/, every adapter) alone, or with a driver's own
//! kernels in front where the adapter is one they were written for. The one place that selects
//! them; `SIAMESE_KERNELS=portable|llvmpipe|auto` overrides the choice (default auto).
//!
//! Deleting src/gpu/llvmpipe/, shaders/llvmpipe/ and the lines marked `driver` (below, and the
//! module's declaration in gpu/mod.rs) leaves the portable set on every adapter: a correct
//! trainer, the driver's speed aside.

use super::driver::DriverKernels;
use crate::error::{Error, Result};

/// What `SIAMESE_KERNELS` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wanted {
    Auto,
    Portable,
    Driver(&'static str),
}

const VARIABLE: &str = "SIAMESE_KERNELS";

/// Every driver's kernel set this build has.
fn drivers() -> Vec<&'static dyn DriverKernels> {
    vec![
        &super::llvmpipe::Llvmpipe, // driver
    ]
}

/// What `value` (SIAMESE_KERNELS's where None) asks for.
fn wanted(value: Option<&str>) -> Result<Wanted> {
    let value = match value {
        Some(v) => v.to_string(),
        None => match std::env::var(VARIABLE) {
            Ok(v) => v,
            Err(_) => return Ok(Wanted::Auto),
        },
    };
    let names: Vec<_> = drivers().iter().map(|d| d.name()).collect();
    match value.trim() {
        "" | "auto" => Ok(Wanted::Auto),
        "portable" => Ok(Wanted::Portable),
        v => match names.iter().find(|n| **n == v) {
            Some(name) => Ok(Wanted::Driver(name)),
            None => Err(Error::config(VARIABLE, format!("'{v}' is none of auto, portable, {}", names.join(", ")))),
        },
    }
}

/// The driver kernels to run on `adapter` (None: the portable set alone), as `value` asks
/// (auto, portable or a driver's name; SIAMESE_KERNELS's where None); an error where it names
/// a set the adapter cannot run.
pub fn select(adapter: &wgpu::Adapter, value: Option<&str>) -> Result<Option<&'static dyn DriverKernels>> {
    let wanted = wanted(value)?;
    let fits = drivers().into_iter().find(|d| d.runs_on(adapter));
    match wanted {
        Wanted::Portable => Ok(None),
        Wanted::Auto => Ok(fits),
        Wanted::Driver(name) => match fits.filter(|d| d.name() == name) {
            Some(d) => Ok(Some(d)),
            None => Err(Error::config(
                VARIABLE,
                format!("the {name} kernels do not run on adapter {} (use auto or portable)", adapter.get_info().name),
            )),
        },
    }
}

/// What `SIAMESE_KERNELS` takes: "auto|portable|…".
pub fn choices() -> String {
    let drivers: Vec<_> = drivers().iter().map(|d| d.name()).collect();
    format!("auto|portable|{}", drivers.join("|"))
}

/// The name of a selection, as the adapter line, `info` and `bench` show it.
pub fn describe(driver: Option<&'static dyn DriverKernels>) -> String {
    match driver {
        Some(d) => format!("{} + portable kernels", d.name()),
        None => "portable kernels".to_string(),
    }
}
