//! Sums the conv layers' weight-gradient partials in one launch per backward pass (or inside
//! Adam's launch), instead of one per layer.
//!
//! Why: a conv's weight gradient is computed per chunk of images and the chunks are then
//! summed in order (`conv2d_backward_weight_reduce`): tiny launches, each mostly the fixed cost
//! of a launch, five per training step. Here the partials go to one arena buffer that
//! `reset_scratch` empties, and where a layer's dw and db share a buffer (the model's flat
//! gradient buffer) their sums wait. On a GPU, Adam's launch takes those waiting in the
//! gradient buffer it steps (`take_weight_sums_in`, shaders/optim.wgsl); otherwise one
//! `conv2d_backward_weight_sums` launch takes all that are waiting when a dispatch or copy
//! next binds a range they write, at a submit, or at a scratch reset. Both sum as
//! `conv2d_backward_weight_reduce` does, tap for tap, so the bits do not change; anything else
//! runs at once through that kernel.

use super::{GpuBackend, GpuTensor, Kernel};
use crate::backend::{ParamGrads, VIEW_ALIGN};
use crate::ops::{ACCUMULATE_PARAMS, Conv2dParams};
use bytemuck::{Pod, Zeroable};

/// Most conv layers whose weight gradients one `conv2d_backward_weight_sums` launch sums.
pub const WEIGHT_SUMS_LAYERS: usize = 8;

/// The conv layers whose weight-gradient partials one launch sums (src/gpu/weight_sums.rs):
/// per layer, where its partials start in their buffer, its taps (weights, then biases), its
/// chunks per tower and towers, then its weights, where its dw and db start in theirs and
/// whether they are added to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WeightSumsParams {
    pub layers: u32,
    pub _pad: [u32; 3],
    pub table: [[u32; 8]; WEIGHT_SUMS_LAYERS],
}

/// Invocations per workgroup of `conv2d_backward_weight_sums` (as in shaders/optim.wgsl).
const SUMS_WORKGROUP: usize = 64;

/// Elements of the first arena: room for a training step at the default batch (about 310,000
/// partials for the portable kernels at 128 pairs), so that its steps never grow it (growing
/// launches the waiting sums on their own instead of in Adam's launch); it doubles when a
/// step needs more.
const FIRST_ARENA: usize = 1 << 19;

/// The partials' arena and the layers whose sums wait.
#[derive(Default)]
pub(super) struct WeightSums {
    arena: Option<wgpu::Buffer>,
    /// Elements of the arena handed out since the last reset.
    used: usize,
    waiting: Vec<Waiting>,
}

/// One layer's sums, waiting: its partials (in the arena) and where dw and db go.
struct Waiting {
    p: Conv2dParams,
    partials: GpuTensor,
    dw: GpuTensor,
    db: GpuTensor,
}

impl Waiting {
    /// This layer's row of `WeightSumsParams::table`, dw and db at their offsets in the buffer
    /// less `base`.
    fn row(&self, base: usize) -> [u32; 8] {
        let taps = self.p.w_len() + self.p.c_out as usize;
        let chunks_per_tower = (self.p.n / self.p.towers).div_ceil(self.p.chunk);
        let add = (self.p.accumulate & ACCUMULATE_PARAMS != 0) as u32;
        [
            self.partials.offset as u32,
            taps as u32,
            chunks_per_tower,
            self.p.towers,
            self.p.w_len() as u32,
            (self.dw.offset - base) as u32,
            (self.db.offset - base) as u32,
            add,
        ]
    }
}

/// The launch's table of `waiting`, dw and db at offsets less `base`.
fn table(waiting: &[Waiting], base: usize) -> WeightSumsParams {
    let mut params = WeightSumsParams { layers: waiting.len() as u32, ..Default::default() };
    for (row, w) in params.table.iter_mut().zip(waiting) {
        *row = w.row(base);
    }
    params
}

/// The whole buffer that `t` views.
fn whole(t: &GpuTensor) -> GpuTensor {
    GpuTensor { buffer: t.buffer.clone(), offset: 0, len: (t.buffer.size() / 4) as usize }
}

/// Whether two views overlap.
fn overlap(a: &GpuTensor, b: &GpuTensor) -> bool {
    a.buffer == b.buffer && a.offset < b.offset + b.len && b.offset < a.offset + a.len
}

impl GpuBackend {
    /// Scratch for `len` elements of weight-gradient partials, in the arena.
    pub(super) fn weight_partials(&mut self, len: usize) -> GpuTensor {
        let capacity = self.weight_sums.arena.as_ref().map_or(0, |a| (a.size() / 4) as usize);
        if self.weight_sums.used + len > capacity {
            // The waiting sums read the old arena: they go first.
            self.flush_weight_sums();
            let size = (2 * capacity).max(FIRST_ARENA).max(len.next_multiple_of(VIEW_ALIGN));
            self.weight_sums.arena = Some(self.create_buffer((size * 4) as u64, "weight partials"));
            self.weight_sums.used = 0;
        }
        let buffer = self.weight_sums.arena.clone().expect("made above");
        let at = self.weight_sums.used;
        self.weight_sums.used += len.next_multiple_of(VIEW_ALIGN);
        GpuTensor { buffer, offset: at, len }
    }

    /// dw and db from the partials of one conv's weight gradient (`p.chunk` images a chunk):
    /// later, with other layers', where they can wait (see the module docs), else now.
    pub(super) fn sum_weight_partials(&mut self, p: &Conv2dParams, partials: &GpuTensor, grads: ParamGrads<GpuTensor>) {
        let ParamGrads { dw, db } = grads;
        let in_arena = self.weight_sums.arena.as_ref() == Some(&partials.buffer);
        if !in_arena || dw.buffer != db.buffer {
            let taps = p.w_len() + p.c_out as usize;
            self.dispatch(Kernel::Conv2dBackwardWeightReduce, p, &[partials, dw, db], GpuBackend::groups_for(taps));
            return;
        }
        let sums = &self.weight_sums.waiting;
        let clash = sums.first().is_some_and(|w| w.dw.buffer != dw.buffer)
            || sums.len() == WEIGHT_SUMS_LAYERS
            || sums.iter().any(|w| [&w.dw, &w.db].iter().any(|t| overlap(t, dw) || overlap(t, db)));
        if clash {
            self.flush_weight_sums();
        }
        let waiting = Waiting { p: *p, partials: partials.clone(), dw: dw.clone(), db: db.clone() };
        self.weight_sums.waiting.push(waiting);
    }

    /// Launches the waiting sums if `tensors`, the bindings of a dispatch or copy about to be
    /// recorded, include a range they write.
    pub(super) fn flush_weight_sums_into<'t>(&mut self, mut tensors: impl Iterator<Item = &'t GpuTensor>) {
        let waiting = &self.weight_sums.waiting;
        if !waiting.is_empty() && tensors.any(|t| waiting.iter().any(|w| overlap(t, &w.dw) || overlap(t, &w.db))) {
            self.flush_weight_sums();
        }
    }

    /// The waiting sums, taken by a kernel that does them itself, where every one writes
    /// inside `grads` (Adam's, which binds the whole gradient buffer): their table, dw and db
    /// at offsets within `grads`, and their partials' whole buffer. None where none wait, or
    /// one writes elsewhere (then they run in their own launch, as ever).
    pub(super) fn take_weight_sums_in(&mut self, grads: &GpuTensor) -> Option<(WeightSumsParams, GpuTensor)> {
        let waiting = &self.weight_sums.waiting;
        let inside = |t: &GpuTensor| {
            t.buffer == grads.buffer && t.offset >= grads.offset && t.offset + t.len <= grads.offset + grads.len
        };
        if waiting.is_empty() || !waiting.iter().all(|w| inside(&w.dw) && inside(&w.db)) {
            return None;
        }
        let waiting = std::mem::take(&mut self.weight_sums.waiting);
        Some((table(&waiting, grads.offset), whole(&waiting[0].partials)))
    }

    /// Launches the waiting sums, all in one.
    pub(super) fn flush_weight_sums(&mut self) {
        let waiting = std::mem::take(&mut self.weight_sums.waiting);
        let Some(first) = waiting.first() else { return };
        let params = table(&waiting, 0);
        let (partials, grads) = (whole(&first.partials), whole(&first.dw));
        let taps: usize = waiting.iter().map(|w| w.p.w_len() + w.p.c_out as usize).sum();
        let groups = taps.div_ceil(SUMS_WORKGROUP) as u32;
        assert!(groups <= 65_535, "conv2d_backward_weight_sums: {taps} taps");
        self.dispatch(Kernel::Conv2dBackwardWeightSums, &params, &[&partials, &grads], groups);
    }

    /// Empties the arena (the waiting sums run first): `reset_scratch`.
    pub(super) fn reset_weight_partials(&mut self) {
        self.flush_weight_sums();
        self.weight_sums.used = 0;
    }
}
