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

use crate::gpu::{GpuBackend, GpuContext, Kernel};

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
