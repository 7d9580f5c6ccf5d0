//! Model files: safetensors with PyTorch's state_dict names, layouts and dtypes, so that the
//! tutorial's `siamese` module loads ours with `load_state_dict` and we load its own.
//!
//! Every file is written to a temporary name beside the target and renamed into place, so a
//! crash leaves the previous file whole; reading validates every tensor before using any.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::model::{FEATURE_NET, FEATURES, Layer, SiameseNet};

/// A model file's contents: the model, the header's metadata, and the extra tensors asked for.
pub type Loaded = (HostModel, HashMap<String, String>, Vec<Vec<f32>>);

/// A model on the host: flat parameters and BatchNorm buffers in [`SiameseNet`]'s layouts.
#[derive(Clone, Debug, PartialEq)]
pub struct HostModel {
    pub net: SiameseNet,
    pub params: Vec<f32>,
    pub buffers: Vec<f32>,
    /// PyTorch's `num_batches_tracked`, the same for every BatchNorm layer.
    pub batches_tracked: u64,
}

/// The names of the BatchNorm counters, `feature_net.K.num_batches_tracked`.
fn counters() -> Vec<String> {
    FEATURE_NET
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l, Layer::BatchNorm { .. }))
        .map(|(k, _)| format!("feature_net.{k}.num_batches_tracked"))
        .collect()
}

impl HostModel {
    /// The tensors of the state_dict, in its order, as (name, dtype, shape, little-endian bytes).
    fn tensors(&self) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        let mut out = Vec::new();
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (pl, bl) = (self.net.params(), self.net.buffers());
        let counters = counters();
        for e in &pl.entries {
            out.push((e.name.clone(), Dtype::F32, e.shape.clone(), f32s(&self.params[e.offset..][..e.len()])));
            // PyTorch lists a BatchNorm's buffers right after its bias.
            let prefix = e.name.trim_end_matches(".bias");
            if e.name.ends_with(".bias") && bl.entries.iter().any(|b| b.name.starts_with(&format!("{prefix}."))) {
                for part in ["running_mean", "running_var"] {
                    let b = bl.get(&format!("{prefix}.{part}"));
                    out.push((b.name.clone(), Dtype::F32, b.shape.clone(), f32s(&self.buffers[b.offset..][..b.len()])));
                }
                let counter = format!("{prefix}.num_batches_tracked");
                debug_assert!(counters.contains(&counter));
                out.push((counter, Dtype::I64, vec![], (self.batches_tracked as i64).to_le_bytes().to_vec()));
            }
        }
        out
    }

    /// The safetensors bytes, with `metadata` in the header.
    pub fn to_bytes(&self, metadata: &HashMap<String, String>) -> Vec<u8> {
        self.to_bytes_with(&[], metadata)
    }

    /// The model's tensors plus flat f32 `extra` ones (a run's optimizer state).
    pub fn to_bytes_with(&self, extra: &[(&str, &[f32])], metadata: &HashMap<String, String>) -> Vec<u8> {
        let mut tensors = self.tensors();
        for (name, values) in extra {
            tensors.push((
                name.to_string(),
                Dtype::F32,
                vec![values.len()],
                values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
        let mut metadata = metadata.clone();
        metadata.remove(CHECKSUM);
        let sum = checksum(
            tensors.iter().map(|(n, d, shape, data)| (n.as_str(), *d, shape.as_slice(), data.as_slice())),
            &metadata,
        );
        metadata.insert(CHECKSUM.to_string(), sum);
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                (name.clone(), TensorView::new(*dtype, shape.clone(), data).expect("sizes match their shapes"))
            })
            .collect();
        let bytes = safetensors::serialize(views, Some(metadata)).expect("in-memory serialisation");
        with_sorted_header(bytes)
    }

    pub fn save(&self, path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
        crate::output::write(path, &self.to_bytes(metadata))
    }

    /// Reads and validates a model file: every tensor present with its shape and dtype, no
    /// extra ones, no NaN or infinity. The embedding width comes from `linear.weight`.
    pub fn load(path: &Path) -> Result<(Self, HashMap<String, String>)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<(Self, HashMap<String, String>)> {
        let (model, metadata, _) = Self::from_bytes_with(path, bytes, &[])?;
        Ok((model, metadata))
    }

    /// Like [`HostModel::from_bytes`], also reading the flat f32 tensors `extra` of
    /// `extra_len` elements each.
    pub fn from_bytes_with(path: &Path, bytes: &[u8], extra: &[(&str, usize)]) -> Result<Loaded> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::input(path, "header", format!("not a safetensors model file ({e})")))?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::input(path, "header", format!("not a safetensors model file ({e})")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if let Some(stored) = metadata.get(CHECKSUM) {
            let mut rest = metadata.clone();
            rest.remove(CHECKSUM);
            let tensors = st.tensors();
            let sum = checksum(tensors.iter().map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data())), &rest);
            if *stored != sum {
                let message =
                    format!("{stored} stored, {sum} read: the file changed after it was written (damaged or edited)");
                return Err(Error::input(path, "metadata checksum", message));
            }
        }
        let lw = st.tensor("linear.weight").map_err(|_| Error::input(path, "tensor linear.weight", "missing"))?;
        let z = match lw.shape() {
            [z, f] if *f == FEATURES && *z > 0 => *z,
            other => {
                return Err(Error::input(
                    path,
                    "tensor linear.weight",
                    format!("shape {other:?}, expected (z, {FEATURES})"),
                ));
            }
        };
        let net = SiameseNet::new(z);
        let (pl, bl) = (net.params(), net.buffers());
        let mut model = HostModel { net, params: vec![0.0; pl.len], buffers: vec![0.0; bl.len], batches_tracked: 0 };
        let mut expected: Vec<String> = Vec::new();
        for (layout, flat) in [(&pl, &mut model.params), (&bl, &mut model.buffers)] {
            for e in &layout.entries {
                expected.push(e.name.clone());
                let values = read_f32(path, &st, &e.name, &e.shape)?;
                flat[e.offset..][..e.len()].copy_from_slice(&values);
            }
        }
        let counters = counters();
        for (i, name) in counters.iter().enumerate() {
            expected.push(name.clone());
            let count = read_counter(path, &st, name)?;
            if i == 0 {
                model.batches_tracked = count;
            }
        }
        let mut extras = Vec::new();
        for &(name, len) in extra {
            expected.push(name.to_string());
            extras.push(read_f32(path, &st, name, &[len])?);
        }
        let mut unknown: Vec<&str> = st.names().into_iter().filter(|n| !expected.iter().any(|e| e == n)).collect();
        unknown.sort_unstable();
        if let Some(name) = unknown.first() {
            let message = "not part of the model (a model with another layout?)";
            return Err(Error::input(path, format!("tensor {name}"), message));
        }
        for e in bl.entries.iter().filter(|e| e.name.ends_with("running_var")) {
            if let Some(i) = model.buffers[e.offset..][..e.len()].iter().position(|&v| v < 0.0) {
                let message = format!("element {i} is {}; a variance is never negative", model.buffers[e.offset + i]);
                return Err(Error::input(path, format!("tensor {}", e.name), message));
            }
        }
        Ok((model, metadata, extras))
    }
}

fn read_f32(path: &Path, st: &safetensors::SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let place = format!("tensor {name}");
    let t = st.tensor(name).map_err(|_| Error::input(path, &place, "missing"))?;
    if t.shape() != shape {
        return Err(Error::input(path, &place, format!("shape {:?}, expected {shape:?}", t.shape())));
    }
    let values: Vec<f32> = match t.dtype() {
        Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => {
            t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
        }
        other => return Err(Error::input(path, &place, format!("dtype {other:?}, expected F32"))),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::input(path, &place, format!("element {i} is {}", values[i])));
    }
    Ok(values)
}

fn read_counter(path: &Path, st: &safetensors::SafeTensors, name: &str) -> Result<u64> {
    let place = format!("tensor {name}");
    let t = st.tensor(name).map_err(|_| Error::input(path, &place, "missing"))?;
    if !t.shape().is_empty() && t.shape() != [1] {
        return Err(Error::input(path, &place, format!("shape {:?}, expected a scalar", t.shape())));
    }
    let v = match t.dtype() {
        Dtype::I64 => i64::from_le_bytes(t.data()[..8].try_into().expect("8 bytes")),
        other => return Err(Error::input(path, &place, format!("dtype {other:?}, expected I64"))),
    };
    u64::try_from(v).map_err(|_| Error::input(path, &place, format!("negative count {v}")))
}

/// The metadata key of the checksum the tool writes into every model and checkpoint file, and
/// checks where a file has one (a PyTorch state_dict has none).
pub const CHECKSUM: &str = "checksum";

/// CRC-32 over every tensor (name, dtype, shape, bytes) and every metadata entry, each in name
/// order, as "crc32:xxxxxxxx".
fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: &HashMap<String, String>,
) -> String {
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_by_key(|t| t.0);
    let mut hasher = crc32fast::Hasher::new();
    for (name, dtype, shape, data) in tensors {
        hasher.update(format!("{name}\0{dtype:?}\0{shape:?}\0").as_bytes());
        hasher.update(data);
    }
    let mut entries: Vec<_> = metadata.iter().collect();
    entries.sort();
    for (k, v) in entries {
        hasher.update(format!("{k}\0{v}\0").as_bytes());
    }
    format!("crc32:{:08x}", hasher.finalize())
}

/// The same safetensors bytes with the header's keys in sorted order, so that equal contents
/// give equal files: the writer takes the metadata as a HashMap, whose order changes from run
/// to run. The header is padded with spaces to a multiple of 8 bytes, as the format asks.
fn with_sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes of header length")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("the writer's own header");
    // serde_json's map without `preserve_order` is a BTreeMap: serialising sorts every level.
    let mut sorted = serde_json::to_vec(&header).expect("a JSON value serialises");
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + sorted.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}
