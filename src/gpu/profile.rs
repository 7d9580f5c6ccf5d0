//! GPU time per kernel and per launch, from timestamp queries around each dispatch; kernels
//! built or run alone, for compile timings and compile-ahead.

use super::{Access, Dispatch, GpuBackend, GpuTensor, Kernel, PROFILE_CAPACITY, Work, map_read};
use crate::backend::Backend;
use crate::error::Result;

/// GPU time per kernel, from timestamp queries around each dispatch.
#[derive(Clone, Default)]
pub struct Profile {
    /// Per kernel, in first-seen order.
    pub kernels: Vec<KernelTime>,
    /// Per kernel and specialisation (a launch site, mostly), in first-seen order.
    pub launches: Vec<LaunchTime>,
}

#[derive(Clone, Debug)]
pub struct LaunchTime {
    pub kernel: Kernel,
    /// The values of the kernel's `override` constants (`Kernel::overrides`).
    pub spec: Vec<u32>,
    pub calls: u64,
    pub ns: f64,
    /// Workgroups of its last launch (a launch site's are the same each step).
    pub workgroups: u32,
}

#[derive(Clone, Debug)]
pub struct KernelTime {
    pub kernel: Kernel,
    pub calls: u64,
    pub ns: f64,
    /// Summed work: FLOPs if `flops`, else bytes.
    pub work: f64,
    pub flops: bool,
}

impl KernelTime {
    /// GFLOP/s or GB/s, and which.
    pub fn rate(&self) -> (f64, &'static str) {
        (self.work / self.ns.max(1.0), if self.flops { "GFLOP/s" } else { "GB/s" })
    }
}

impl Profile {
    fn add(&mut self, kernel: Kernel, spec: &[u32], ns: f64, (work, workgroups): (Work, u32)) {
        match self.launches.iter_mut().find(|l| l.kernel == kernel && l.spec == spec) {
            Some(l) => {
                l.calls += 1;
                l.ns += ns;
                l.workgroups = workgroups;
            }
            None => self.launches.push(LaunchTime { kernel, spec: spec.to_vec(), calls: 1, ns, workgroups }),
        }
        let (amount, flops) = match work {
            Work::Flops(f) => (f, true),
            Work::Bytes(b) => (b, false),
        };
        match self.kernels.iter_mut().find(|k| k.kernel == kernel) {
            Some(k) => {
                k.calls += 1;
                k.ns += ns;
                k.work += amount;
            }
            None => self.kernels.push(KernelTime { kernel, calls: 1, ns, work: amount, flops }),
        }
    }
    pub fn total_ns(&self) -> f64 {
        self.kernels.iter().map(|k| k.ns).sum()
    }
}

pub(super) struct Profiler {
    pub queries: wgpu::QuerySet,
    pub resolve: wgpu::Buffer,
    pub readback: wgpu::Buffer,
    pub period_ns: f64,
    pub profile: Profile,
}

impl GpuBackend {
    pub(super) fn collect_timestamps(&mut self, dispatches: &[&Dispatch]) {
        let prof = self.profiler.as_mut().expect("profiling");
        let n = 2 * dispatches.len() as u64;
        let Some(ticks) = map_read(&self.ctx, &prof.readback, n * 8, |b| bytemuck::cast_slice::<u8, u64>(b).to_vec())
        else {
            return;
        };
        for (i, d) in dispatches.iter().enumerate() {
            let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * prof.period_ns;
            prof.profile.add(d.kernel, &d.spec, ns, (d.work, d.grid.0 * d.grid.1));
        }
    }

    /// Invocations per workgroup of `kernel` with `spec`, from its module (naga's reading of
    /// `@workgroup_size`, constants resolved); None where it cannot tell.
    pub fn workgroup_size(&self, kernel: Kernel, spec: &[u32]) -> Option<u32> {
        let (source, constants) = self.pipelines.source(kernel, spec);
        let module = super::emit::resolve(&source, kernel.entry_point(), &constants).ok()?;
        let entry = module.entry_points.iter().find(|e| e.name == kernel.entry_point())?;
        Some(entry.workgroup_size.iter().product())
    }

    /// Times every dispatch from now on with GPU timestamps (one submit waits per flush).
    /// Returns false if the adapter cannot.
    pub fn enable_profiling(&mut self) -> bool {
        if !self.ctx.timestamps {
            return false;
        }
        self.flush();
        let device = &self.ctx.device;
        let bytes = 2 * PROFILE_CAPACITY as u64 * 8;
        self.profiler = Some(Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PROFILE_CAPACITY,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            period_ns: self.ctx.queue.get_timestamp_period() as f64,
            profile: Profile::default(),
        });
        true
    }

    /// Stops timing dispatches.
    pub fn disable_profiling(&mut self) {
        self.flush();
        self.profiler = None;
    }

    /// The per-kernel times gathered since profiling was enabled or last taken.
    pub fn take_profile(&mut self) -> Profile {
        self.flush();
        self.profiler.as_mut().map(|p| std::mem::take(&mut p.profile)).unwrap_or_default()
    }
}

/// Elements of each placeholder buffer: the largest fixed-size binding (conv2d_tile's packed
/// weights, 6400 bytes, where the subgroup convs do not run) fits.
const PLACEHOLDER: usize = 2048;

/// Words of the placeholder params: the largest params struct (PackJobs, 528 bytes) fits.
const PLACEHOLDER_PARAMS: usize = 256;

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
