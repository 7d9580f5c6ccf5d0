//! Conv weights packed for `conv2d_tile`, kept while the weights are unchanged: every pack of
//! one weights buffer (the model's flat parameters) lives in one arena, remade in one launch
//! at its first use after a write to that buffer, not once per conv. Adam's step, the write
//! of every training step, writes the packs itself as it updates the weights
//! (shaders/optim.wgsl), so that a step has no pack launch.

use std::collections::HashMap;

use bytemuck::{Pod, Zeroable};

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::{Backend, DeviceTensor};

/// Vec4s of one pack (shaders/conv2d.wgsl PACK_LEN: IC = OC = 8 and K = 5).
pub(super) const PACK_LEN: usize = 400;
/// Packs per arena and launch (shaders/conv2d.wgsl PackJobs).
const ARENA_SLOTS: usize = 16;
/// Invocations per workgroup of `conv2d_pack_weights`.
const PACK_WORKGROUP: usize = 64;

/// How one conv's weights are packed: the launch's input and output channels (swapped from
/// the conv's for its input gradient), kernel size, and whether transposed and flipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(C)]
pub(super) struct PackHow {
    pub ic: u32,
    pub oc: u32,
    pub k: u32,
    pub transpose: u32,
}

/// shaders/weight_pack.wgsl PackJob.
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
#[repr(C)]
struct PackJob {
    src: u32,
    how: PackHow,
    dst: u32,
    _pad: [u32; 2],
}

/// shaders/weight_pack.wgsl PackJobs: the pack launch's params, and part of Adam's.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub(super) struct PackJobs {
    count: u32,
    _pad: [u32; 3],
    jobs: [PackJob; ARENA_SLOTS],
}

impl PackJobs {
    fn of(jobs: &[PackJob]) -> Self {
        let mut params = PackJobs { count: jobs.len() as u32, _pad: [0; 3], jobs: [PackJob::default(); ARENA_SLOTS] };
        params.jobs[..jobs.len()].copy_from_slice(jobs);
        params
    }

    pub(super) fn none() -> Self {
        Self::of(&[])
    }
}

/// Packs that one Adam launch writes (see `GpuBackend::packs_within`).
pub(super) struct AdamPacks {
    pub jobs: PackJobs,
    pub packed: GpuTensor,
    arena: usize,
}

/// The packs of one weights buffer (up to ARENA_SLOTS of them), and whether they are current.
struct Arena {
    source: GpuTensor,
    packed: GpuTensor,
    slots: HashMap<(usize, usize, PackHow), usize>,
    jobs: Vec<PackJob>,
    current: bool,
}

#[derive(Default)]
pub(super) struct WeightPacks {
    arenas: Vec<Arena>,
}

impl GpuBackend {
    /// `w` packed as `how` says, for `conv2d_tile`'s uniform binding: packed now, with every
    /// other pack of its buffer, where the buffer was written since they were last made.
    pub(super) fn packed_weights(&mut self, w: &GpuTensor, how: PackHow) -> GpuTensor {
        let key = (w.offset, w.len, how);
        let found =
            self.weight_packs.arenas.iter().position(|a| a.source.buffer == w.buffer && a.slots.contains_key(&key));
        let index = match found {
            Some(i) => i,
            None => self.add_pack(w, how),
        };
        if !self.weight_packs.arenas[index].current {
            self.make_packs(index);
        }
        let arena = &self.weight_packs.arenas[index];
        arena.packed.view(arena.slots[&key] * 4 * PACK_LEN, 4 * PACK_LEN)
    }

    /// A new slot for (w, how) in an arena of w's buffer with room, or in a new one.
    fn add_pack(&mut self, w: &GpuTensor, how: PackHow) -> usize {
        let room = |a: &Arena| a.source.buffer == w.buffer && a.jobs.len() < ARENA_SLOTS;
        let index = match self.weight_packs.arenas.iter().position(room) {
            Some(i) => i,
            None => {
                let words = (w.buffer.size() / 4) as usize;
                let source = GpuTensor { buffer: w.buffer.clone(), offset: 0, len: words };
                let packed = self.zeros(ARENA_SLOTS * 4 * PACK_LEN);
                let arena = Arena { source, packed, slots: HashMap::new(), jobs: Vec::new(), current: false };
                self.weight_packs.arenas.push(arena);
                self.weight_packs.arenas.len() - 1
            }
        };
        let arena = &mut self.weight_packs.arenas[index];
        let slot = arena.jobs.len();
        arena.slots.insert((w.offset, w.len, how), slot);
        arena.jobs.push(PackJob { src: w.offset as u32, how, dst: (slot * PACK_LEN) as u32, _pad: [0; 2] });
        arena.current = false;
        index
    }

    /// Every pack of arena `index`, in one launch.
    fn make_packs(&mut self, index: usize) {
        let arena = &self.weight_packs.arenas[index];
        let params = PackJobs::of(&arena.jobs);
        let (source, packed) = (arena.source.clone(), arena.packed.clone());
        let groups = (arena.jobs.len() * PACK_LEN).div_ceil(PACK_WORKGROUP) as u32;
        self.dispatch(Kernel::Conv2dPackWeights, &params, &[&source, &packed], groups);
        self.weight_packs.arenas[index].current = true;
    }

    /// The packs an Adam launch over `params` can write as it updates them: those of the first
    /// arena of its buffer whose every pack's weights lie within `params` (so that Adam writes
    /// all of them), their `src` counted from `params`' first element.
    pub(super) fn packs_within(&self, params: &GpuTensor) -> Option<AdamPacks> {
        let inside = |job: &PackJob| {
            let (start, len) = (job.src as usize, (job.how.ic * job.how.oc * job.how.k * job.how.k) as usize);
            start >= params.offset && start + len <= params.offset + params.len
        };
        let arena = self
            .weight_packs
            .arenas
            .iter()
            .position(|a| a.source.buffer == params.buffer && a.jobs.iter().all(inside))?;
        let relative = self.weight_packs.arenas[arena]
            .jobs
            .iter()
            .map(|job| PackJob { src: job.src - params.offset as u32, ..*job });
        let jobs = PackJobs::of(&relative.collect::<Vec<_>>());
        Some(AdamPacks { jobs, packed: self.weight_packs.arenas[arena].packed.clone(), arena })
    }

    /// An Adam launch that writes `packs` is recorded: they are current again.
    pub(super) fn packs_written(&mut self, packs: &AdamPacks) {
        self.weight_packs.arenas[packs.arena].current = true;
    }

    /// A write to `buffer` is recorded: the packs made from it are stale.
    pub(super) fn source_written(&mut self, buffer: &wgpu::Buffer) {
        for arena in &mut self.weight_packs.arenas {
            if arena.source.buffer == *buffer {
                arena.current = false;
            }
        }
    }
}
