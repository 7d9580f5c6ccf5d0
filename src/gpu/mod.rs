//! The GPU backend: tensors in wgpu buffers, ops recorded as dispatches of the WGSL kernels
//! in `shaders/` and submitted together, so a training step is one submit.
//!
//! Nothing is allocated per step once the first step has run: scratch tensors come from a
//! pool that `reset_scratch` hands back, params uniforms are cached by content, and bind
//! groups by the buffers they bind. Launchers, one file per op family, only fill a params
//! struct and call [`GpuBackend::dispatch`].

mod backend;
mod batchnorm;
mod context;
mod contrastive;
mod conv2d;
mod distance;
mod driver;
mod elementwise;
pub mod emit;
pub mod kernel;
mod kernel_set;
mod linear;
pub mod llvmpipe; // driver: see kernel_set.rs
mod maxpool;
mod optim;
mod profile;
mod weight_packs;
mod weight_sums;

pub use context::{AdapterSummary, GpuContext, adapters};
pub use conv2d::WEIGHT_GRAD_CHUNK;
/// Whether the portable tiled conv kernels cover a shape (those read a BatchNorm through).
pub use conv2d::tiled as conv2d_tiled;
pub use driver::DriverKernels;
pub use kernel::{Access, Kernel, Shader};
pub use kernel_set::choices as kernel_set_choices;
use profile::Profiler;
pub use profile::{KernelTime, LaunchTime, Profile};

use std::collections::HashMap;

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::backend::{Backend, Conv, DeviceTensor, Moments, Norm, NormGrads, ParamGrads, Running, VIEW_ALIGN};
use crate::error::Result;
use crate::fused::Fused;
use crate::ops::*;
use kernel::Pipelines;

/// Threads per workgroup of the one-thread-per-element kernels (see shaders/common.wgsl).
pub const WORKGROUP: u32 = 256;

/// A view of `len` f32 (or u32) elements from element `offset` of a wgpu buffer.
///
/// Bindings cover the length rounded up to a whole vec4, so that kernels can work in vec4s
/// throughout: every buffer is a multiple of 256 bytes and every view starts on a 64-element
/// boundary with its padding after it, so the rounded range is always the tensor's own.
/// Elementwise kernels may write that padding; nothing reads it as data.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    pub offset: usize,
    pub len: usize,
}

impl DeviceTensor for GpuTensor {
    fn len(&self) -> usize {
        self.len
    }
    fn view(&self, offset: usize, len: usize) -> Self {
        assert!(
            offset.is_multiple_of(VIEW_ALIGN) && offset + len <= self.len,
            "gpu: bad view {offset}+{len} of {}",
            self.len
        );
        GpuTensor { buffer: self.buffer.clone(), offset: self.offset + offset, len }
    }
}

impl GpuTensor {
    fn binding(&self) -> wgpu::BufferBinding<'_> {
        let (offset, size) = ((self.offset * 4) as u64, (self.len.next_multiple_of(4) * 4) as u64);
        assert!(offset + size <= self.buffer.size(), "gpu: tensor {}+{} overruns its buffer", self.offset, self.len);
        wgpu::BufferBinding { buffer: &self.buffer, offset, size: wgpu::BufferSize::new(size) }
    }
}

/// Images resident on the GPU: bytes packed four to a u32, plus the pixel lookup table.
pub struct GpuImages {
    packed: GpuTensor,
    table: GpuTensor,
    per_image: usize,
    count: usize,
}

/// A recorded command, waiting for the next submit.
enum Command {
    Dispatch(Dispatch),
    /// A transfer between two buffers: a copy command, not a launch.
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    },
}

struct Dispatch {
    kernel: Kernel,
    spec: Vec<u32>,
    pipeline: kernel::Pipeline,
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
    work: Work,
}

impl Command {
    fn dispatch(&self) -> Option<&Dispatch> {
        match self {
            Command::Dispatch(d) => Some(d),
            Command::Copy { .. } => None,
        }
    }
}

impl Dispatch {
    fn record(&self, pass: &mut wgpu::ComputePass) {
        pass.set_pipeline(self.pipeline.get());
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
    }
}

/// What a dispatch does, for the profile's rates: arithmetic for compute-bound kernels, else
/// the bytes of its bindings (an upper bound on the memory it touches).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
}

#[derive(Hash, PartialEq, Eq)]
struct BindKey {
    kernel: Kernel,
    spec: Vec<u32>,
    uniform: wgpu::Buffer,
    buffers: Vec<(wgpu::Buffer, usize, usize)>,
}

/// Scratch buffers by size; `in_use` of each size are handed out since the last reset.
#[derive(Default)]
struct ScratchPool {
    by_size: HashMap<u64, (Vec<wgpu::Buffer>, usize)>,
}

/// Every tensor's buffer: storage for the kernels, uniform for small tensors every lane reads
/// alike (packed conv weights), copies for transfers.
const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::UNIFORM)
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Bind groups kept before the cache starts over.
const BIND_GROUP_CACHE: usize = 1024;

/// Most dispatches one submit can time (two queries each).
pub(crate) const PROFILE_CAPACITY: u32 = 2048;

pub struct GpuBackend {
    pub ctx: GpuContext,
    pipelines: Pipelines,
    scratch: ScratchPool,
    uniforms: HashMap<Vec<u8>, wgpu::Buffer>,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    pending: Vec<Command>,
    staging: Option<wgpu::Buffer>,
    profiler: Option<Profiler>,
    /// The driver's kernels tried before the portable ones: the context's selection
    /// (src/gpu/kernel_set.rs). Tests set it to None to hold the portable kernels to the
    /// reference too (the storage layout stays the selection's).
    pub driver: Option<&'static dyn DriverKernels>,
    /// Adam's per-step scalars, rewritten before each of its launches (src/gpu/optim.rs), and
    /// whether a launch reading them is recorded but not yet submitted.
    adam_scalars: Option<GpuTensor>,
    adam_recorded: bool,
    /// `Backend::one`'s tensor, made at its first call.
    one: Option<GpuTensor>,
    /// Dispatches recorded since creation.
    pub dispatches: u64,
    /// Buffers and bind groups made since creation: a training step after the first makes none.
    pub allocations: u64,
    /// Submits since creation.
    pub submits: u64,
    /// The second device compiling kernels during warm-up, if any (`Backend::compile_ahead`).
    compiling_ahead: Option<Box<dyn driver::Background>>,
    /// Conv weight-gradient partials and the sums waiting on them (src/gpu/weight_sums.rs).
    weight_sums: weight_sums::WeightSums,
    /// Conv weights packed for `conv2d_tile` while they are unchanged (src/gpu/weight_packs.rs).
    weight_packs: weight_packs::WeightPacks,
}

impl GpuBackend {
    /// Opens the best adapter (see [`GpuContext::new`]).
    pub fn new() -> Result<Self> {
        Ok(Self::with_context(GpuContext::new()?))
    }

    pub fn with_context(ctx: GpuContext) -> Self {
        Self {
            driver: ctx.driver,
            pipelines: driver::pipelines(ctx.driver),
            adam_scalars: None,
            one: None,
            adam_recorded: false,
            ctx,
            scratch: ScratchPool::default(),
            uniforms: HashMap::new(),
            bind_groups: HashMap::new(),
            pending: Vec::new(),
            staging: None,
            profiler: None,
            dispatches: 0,
            allocations: 0,
            submits: 0,
            compiling_ahead: None,
            weight_sums: Default::default(),
            weight_packs: Default::default(),
        }
    }

    /// Records `kernel` over `workgroups` workgroups with `params` at binding 0 and `buffers`
    /// at bindings 1.., in the order of the kernel's signature.
    pub fn dispatch<P: Pod>(&mut self, kernel: Kernel, params: &P, buffers: &[&GpuTensor], workgroups: u32) {
        self.dispatch_specialized(kernel, &[], params, buffers, workgroups)
    }

    /// [`GpuBackend::dispatch`] of a kernel specialised with values for its `override`
    /// constants (see [`Kernel::overrides`]).
    pub fn dispatch_specialized<P: Pod>(
        &mut self,
        kernel: Kernel,
        spec: &[u32],
        params: &P,
        buffers: &[&GpuTensor],
        workgroups: u32,
    ) {
        self.dispatch_work(kernel, spec, params, buffers, workgroups, None)
    }

    /// The one dispatch path: [`GpuBackend::dispatch_specialized`] with the work it does, for
    /// profiles (None: the bytes of its bindings).
    pub fn dispatch_work<P: Pod>(
        &mut self,
        kernel: Kernel,
        spec: &[u32],
        params: &P,
        buffers: &[&GpuTensor],
        workgroups: u32,
        work: Option<Work>,
    ) {
        assert_eq!(buffers.len(), kernel.bindings().len(), "{kernel:?}: wrong number of buffers");
        self.flush_weight_sums_into(buffers.iter().copied());
        let written = buffers.iter().zip(kernel.bindings()).filter(|(_, a)| **a == Access::ReadWrite);
        written.for_each(|(t, _)| self.source_written(&t.buffer));
        assert!(workgroups > 0, "{kernel:?}: no work");
        let uniform = self.uniform(bytemuck::bytes_of(params));
        let key = BindKey {
            kernel,
            spec: spec.to_vec(),
            uniform: uniform.clone(),
            buffers: buffers.iter().map(|t| (t.buffer.clone(), t.offset, t.len)).collect(),
        };
        let (pipeline, layout) = self.pipelines.get(&self.ctx.device, kernel, spec).clone();
        // A training step binds about a hundred distinct sets; far more means one-off tensors
        // (tests, sweeps) are being bound, and the cache would keep their buffers alive.
        if self.bind_groups.len() >= BIND_GROUP_CACHE {
            self.bind_groups.clear();
        }
        let device = &self.ctx.device;
        let allocations = &mut self.allocations;
        let bind_group = self
            .bind_groups
            .entry(key)
            .or_insert_with(|| {
                *allocations += 1;
                let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
                for (i, t) in buffers.iter().enumerate() {
                    assert!(t.len > 0, "{kernel:?}: empty tensor at binding {}", i + 1);
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: wgpu::BindingResource::Buffer(t.binding()),
                    });
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(kernel.entry_point()),
                    layout: &layout,
                    entries: &entries,
                })
            })
            .clone();
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        let grid = if workgroups <= max { (workgroups, 1) } else { (max, workgroups.div_ceil(max)) };
        let work = work.unwrap_or_else(|| Work::Bytes(buffers.iter().map(|t| (t.len * 4) as f64).sum()));
        self.pending.push(Command::Dispatch(Dispatch {
            kernel,
            spec: spec.to_vec(),
            pipeline,
            bind_group,
            grid,
            work,
        }));
        self.dispatches += 1;
        if self.profiler.is_some() && self.pending.len() as u32 >= PROFILE_CAPACITY {
            self.flush();
        }
    }

    /// Workgroups for one thread per element over `len` elements.
    pub fn groups_for(len: usize) -> u32 {
        (len as u32).div_ceil(WORKGROUP)
    }

    /// Workgroups for one thread per vec4 over `len` elements.
    pub fn groups_for_vec4s(len: usize) -> u32 {
        Self::groups_for(len.div_ceil(4))
    }

    fn uniform(&mut self, bytes: &[u8]) -> wgpu::Buffer {
        let device = &self.ctx.device;
        let allocations = &mut self.allocations;
        self.uniforms
            .entry(bytes.to_vec())
            .or_insert_with(|| {
                *allocations += 1;
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("params"),
                    contents: bytes,
                    usage: wgpu::BufferUsages::UNIFORM,
                })
            })
            .clone()
    }

    fn create_buffer(&mut self, bytes: u64, label: &str) -> wgpu::Buffer {
        self.allocations += 1;
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(256),
            usage: TENSOR_USAGE,
            mapped_at_creation: false,
        })
    }

    /// Records a copy of `src` into `dst`, two different buffers (WebGPU copies only between
    /// distinct ones).
    pub fn record_copy(&mut self, src: &GpuTensor, dst: &GpuTensor) {
        assert!(src.len == dst.len && src.buffer != dst.buffer, "record_copy: {src:?} into {dst:?}");
        self.flush_weight_sums_into([src, dst].into_iter());
        self.source_written(&dst.buffer);
        self.pending.push(Command::Copy {
            src: src.buffer.clone(),
            src_offset: (src.offset * 4) as u64,
            dst: dst.buffer.clone(),
            dst_offset: (dst.offset * 4) as u64,
            bytes: (src.len * 4) as u64,
        });
    }

    /// Submits every recorded command in one command buffer: each run of dispatches in one
    /// compute pass (with profiling, one pass per dispatch between timestamps), copies between.
    pub fn flush(&mut self) {
        self.flush_weight_sums();
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        self.adam_recorded = false;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        let mut timed = 0;
        let mut rest = pending.as_slice();
        while let Some(first) = rest.first() {
            if let Command::Copy { src, src_offset, dst, dst_offset, bytes } = first {
                encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *bytes);
                rest = &rest[1..];
                continue;
            }
            let run = rest.iter().take_while(|c| matches!(c, Command::Dispatch(_))).count();
            let dispatches = rest[..run].iter().filter_map(Command::dispatch);
            match &self.profiler {
                None => {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    dispatches.for_each(|d| d.record(&mut pass));
                }
                Some(prof) => {
                    for d in dispatches {
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some(d.kernel.entry_point()),
                            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                                query_set: &prof.queries,
                                beginning_of_pass_write_index: Some(2 * timed),
                                end_of_pass_write_index: Some(2 * timed + 1),
                            }),
                        });
                        d.record(&mut pass);
                        timed += 1;
                    }
                }
            }
            rest = &rest[run..];
        }
        if let Some(prof) = &self.profiler {
            encoder.resolve_query_set(&prof.queries, 0..2 * timed, &prof.resolve, 0);
            encoder.copy_buffer_to_buffer(&prof.resolve, 0, &prof.readback, 0, 2 * timed as u64 * 8);
        }
        self.ctx.queue.submit(Some(encoder.finish()));
        self.submits += 1;
        if self.profiler.is_some() && timed > 0 {
            let dispatches: Vec<&Dispatch> = pending.iter().filter_map(Command::dispatch).collect();
            self.collect_timestamps(&dispatches);
        }
    }

    /// Submits what is recorded and waits for the GPU to finish it.
    pub fn sync(&mut self) {
        self.flush();
        self.ctx.wait();
    }

    /// The first error the device reported, if any (validation, out of memory, device lost).
    pub fn take_error(&self) -> Option<crate::Error> {
        self.ctx.take_error()
    }

    /// Reads raw 32-bit words of a tensor back to the host.
    pub fn read_words<T: Pod>(&mut self, t: &GpuTensor) -> Vec<T> {
        self.flush();
        let bytes = (t.len * 4) as u64;
        if self.staging.as_ref().is_none_or(|s| s.size() < bytes) {
            self.allocations += 1;
            self.staging = Some(self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: bytes.next_multiple_of(256),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = self.staging.clone().expect("made above");
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&t.buffer, (t.offset * 4) as u64, &staging, 0, bytes);
        self.ctx.queue.submit(Some(encoder.finish()));
        self.submits += 1;
        // A lost device leaves zeros here and its error for `take_error`: callers check that
        // at their synchronisation points rather than every read panicking.
        map_read(&self.ctx, &staging, bytes, |b| bytemuck::cast_slice(b).to_vec())
            .unwrap_or_else(|| vec![T::zeroed(); t.len])
    }

    /// Compute pipelines built so far, one per kernel and specialisation (on a CPU driver each
    /// is compiled at its first dispatch).
    pub fn pipelines_built(&self) -> usize {
        self.pipelines.len()
    }

    /// The kernels and specialisations of those pipelines, in the order first used.
    pub fn kernels_built(&self) -> &[(Kernel, Vec<u32>)] {
        self.pipelines.built()
    }

    /// Writes raw 32-bit words into a tensor, after everything recorded so far.
    pub fn write_words<T: Pod>(&mut self, t: &GpuTensor, data: &[T]) {
        assert_eq!(data.len(), t.len, "gpu: writing {} words into a tensor of {}", data.len(), t.len);
        // queue.write_buffer lands before the next submit's commands: submit the recorded
        // ones first so that they still see the old contents.
        self.flush();
        self.source_written(&t.buffer);
        self.ctx.queue.write_buffer(&t.buffer, (t.offset * 4) as u64, bytemuck::cast_slice(data));
    }
}

/// Maps the first `bytes` of `buffer` (after all submitted work) and hands them to `f`; None
/// (with the reason recorded for `take_error`) if the device could not map it.
pub(crate) fn map_read<R>(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    bytes: u64,
    f: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    let slice = buffer.slice(..bytes);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    ctx.wait();
    let out = match slice.get_mapped_range() {
        Ok(view) => f(&view),
        Err(e) => {
            ctx.record_error(format!("reading a buffer back: {e}"));
            return None;
        }
    };
    buffer.unmap();
    Some(out)
}
