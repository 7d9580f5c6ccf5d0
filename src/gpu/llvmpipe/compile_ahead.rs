//! Compiles kernels on a second device while the first runs them, for drivers that compile a
//! kernel at its first dispatch (llvmpipe).
//!
//! Why: llvmpipe turns each kernel into machine code on its queue's one thread when the kernel
//! first runs, so a first run's first training step waits for some forty kernels compiled one
//! after another (the largest conv kernels take about a second each) while the other core idles.
//! A second device has its own queue thread. It runs the step's kernels last first, each once
//! on placeholder buffers with zeroed parameters (no work), and Mesa's shader cache, which both
//! devices read, hands what it compiled to the first device when that one gets there. Without
//! the cache (MESA_SHADER_CACHE_DISABLE) nothing is shared and nothing changes but the second
//! core's load. Measured on 2 cores: a first run's first step 11.2–11.6 s → 6.8–7.2 s.
//!
//! What is left is compile time itself, 8.5–11 s of it for a step's kernels (Mesa 22.3,
//! LLVM 15; `siamese bench --compile` lists them), after 0.7 s of building their pipelines
//! (side by side: src/gpu/kernel.rs, `Pipeline`): it grows faster than a kernel's length (the 8→8 conv's fused backward
//! takes 2.7–4.3 s, its input and weight gradients as two kernels 3.0 s), and in a profile of
//! that kernel LLVM's coroutine splitting, which llvmpipe runs on every compute kernel, took 44%
//! of it (GALLIVM_PERF=nopt, which skips LLVM's optimisation passes, leaves the compile time as
//! it is and makes steps 3.7× slower). Where the two devices meet, both may compile one kernel
//! (seen: the 8→8 fused backward, 2.6 s on each); having helpers on every core compile longest
//! first while the first device waits did no better (that one kernel is most of the critical
//! path) and cost a warm run 0.4 s for the helpers' pipelines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::backend::Backend;
use crate::error::Result;
use crate::gpu::{Access, GpuBackend, GpuContext, GpuTensor, Kernel};

/// A second device compiling kernels in the background; `stop` ends it after the kernel at hand.
pub struct CompileAhead {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CompileAhead {
    /// Starts compiling `kernels`, last first, on a second device of the adapter
    /// `GpuContext::new` opens (the one the caller has).
    pub fn start(kernels: Vec<(Kernel, Vec<u32>)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let Ok(ctx) = GpuContext::new() else { return };
            let mut gpu = GpuBackend::with_context(ctx);
            for (kernel, spec) in kernels.iter().rev() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                // A placeholder the driver refuses only costs the first device the compile.
                if gpu.compile_kernel(*kernel, spec).is_err() {
                    break;
                }
            }
        });
        Self { stop, thread: Some(thread) }
    }

    /// Asks the thread to end after the kernel it is compiling.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for CompileAhead {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Elements of each placeholder buffer: the largest fixed-size binding (conv2d_tile's packed
/// weights, 6400 bytes, where the subgroup convs do not run) fits.
const PLACEHOLDER: usize = 2048;

/// Words of the placeholder params: the largest params struct (WeightSumsParams, 272 bytes)
/// fits.
const PLACEHOLDER_PARAMS: usize = 128;

impl GpuBackend {
    /// Builds `kernel`'s pipeline with the specialisation `spec` without running it: the WGSL
    /// translated and handed to the driver (which, like llvmpipe, may leave the machine code
    /// to the first dispatch).
    pub fn build_pipeline(&mut self, kernel: Kernel, spec: &[u32]) {
        self.pipelines.get(&self.ctx.device, kernel, spec).0.get();
    }

    /// Runs `kernel` once, one workgroup on placeholder buffers with zeroed parameters, which
    /// give it no images, rows or elements to touch, and waits: a driver that compiles at first
    /// dispatch has then compiled it. The device's error, if it refused.
    pub fn compile_kernel(&mut self, kernel: Kernel, spec: &[u32]) -> Result<()> {
        let (read, write) = (self.zeros(PLACEHOLDER), self.zeros(PLACEHOLDER));
        let buffers: Vec<&GpuTensor> =
            kernel.bindings().iter().map(|access| if *access == Access::ReadWrite { &write } else { &read }).collect();
        self.dispatch_specialized(kernel, spec, &[0u32; PLACEHOLDER_PARAMS], &buffers, 1);
        self.sync();
        self.ctx.take_error().map_or(Ok(()), Err)
    }
}
