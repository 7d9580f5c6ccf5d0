//! Prints the WGSL of one generated conv kernel (src/gpu/llvmpipe/), as `bench --launches`
//! and `bench --compile` name it:
//!
//!     cargo run --release --example generated_kernel -- conv2d_backward_rows 8 8 14 14 3 2
//!
//! takes the entry point and its values in the order of the labels (IC OC H W K, then the
//! pass's own: MODE ACCUMULATE THROUGH, THROUGH DY_THROUGH, or THROUGH).

use std::io::Write;

use siamese::gpu::kernel::{Kernel, Shader};
use siamese::gpu::llvmpipe as conv2d_rows;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match source(&args) {
        // A closed pipe (`| head`) is not an error worth a message.
        Ok(wgsl) => drop(std::io::stdout().write_all(wgsl.as_bytes())),
        Err(message) => {
            eprintln!("generated_kernel: {message}");
            std::process::exit(2);
        }
    }
}

fn source(args: &[String]) -> Result<String, String> {
    let generated = || Kernel::ALL.iter().filter(|k| k.shader() == Shader::Conv2dRows);
    let names = || generated().map(|k| k.entry_point()).collect::<Vec<_>>().join(", ");
    let (name, values) =
        args.split_first().ok_or_else(|| format!("usage: ENTRY_POINT VALUES...; entry points: {}", names()))?;
    let kernel =
        generated().find(|k| k.entry_point() == name).ok_or_else(|| format!("{name:?} is none of {}", names()))?;
    let spec = values
        .iter()
        .map(|v| v.parse::<u32>().map_err(|_| format!("{v:?} is not a whole number")))
        .collect::<Result<Vec<u32>, String>>()?;
    if spec.len() != kernel.overrides().len() {
        return Err(format!(
            "{name} takes {} values ({}), not {}",
            kernel.overrides().len(),
            kernel.overrides().join(" "),
            spec.len()
        ));
    }
    let shape = conv2d_rows::Shape { ic: spec[0], oc: spec[1], h: spec[2], w: spec[3], k: spec[4] };
    if !shape.supported() {
        return Err(format!("{shape:?} is not a shape these kernels cover"));
    }
    // The generator asserts what a launcher never asks of it (e.g. sums of a written gradient):
    // its message is for developers, this one for the command line.
    std::panic::set_hook(Box::new(|_| {}));
    std::panic::catch_unwind(|| conv2d_rows::source(*kernel, &spec))
        .map_err(|_| format!("no {} for these values", kernel.label(&spec)))
}
