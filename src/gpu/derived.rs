//! Tensors derived from another and kept while it is unchanged (conv weights packed for
//! `conv2d_tile`): made once after each change, Adam's step, instead of at every launch. Any
//! write recorded to the source's buffer (a kernel's read-write binding, an upload, a copy)
//! marks what was derived from it stale; its storage is kept and refilled.

use std::collections::HashMap;

use super::{GpuBackend, GpuTensor};
use crate::backend::Backend;

#[derive(Hash, PartialEq, Eq)]
struct Key {
    buffer: wgpu::Buffer,
    offset: usize,
    len: usize,
    /// How it is derived (the deriving kernel's specialisation).
    how: Vec<u32>,
}

impl Key {
    fn new(source: &GpuTensor, how: &[u32]) -> Self {
        Key { buffer: source.buffer.clone(), offset: source.offset, len: source.len, how: how.to_vec() }
    }
}

#[derive(Default)]
pub(super) struct Derived {
    entries: HashMap<Key, (GpuTensor, bool)>,
}

impl GpuBackend {
    /// The tensor of `len` elements derived from `source` by `how`, and whether it is current;
    /// where it is not, the caller fills it and calls [`GpuBackend::derived_made`].
    pub(super) fn derived(&mut self, source: &GpuTensor, how: &[u32], len: usize) -> (GpuTensor, bool) {
        let key = Key::new(source, how);
        if let Some((t, current)) = self.derived.entries.get(&key) {
            return (t.clone(), *current);
        }
        let t = self.zeros(len);
        self.derived.entries.insert(key, (t.clone(), false));
        (t, false)
    }

    pub(super) fn derived_made(&mut self, source: &GpuTensor, how: &[u32]) {
        if let Some(entry) = self.derived.entries.get_mut(&Key::new(source, how)) {
            entry.1 = true;
        }
    }

    /// A write to `buffer` is recorded: what was derived from it is stale.
    pub(super) fn source_written(&mut self, buffer: &wgpu::Buffer) {
        for (key, entry) in &mut self.derived.entries {
            if key.buffer == *buffer {
                entry.1 = false;
            }
        }
    }
}
