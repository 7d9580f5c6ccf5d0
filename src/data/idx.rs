//! The official IDX files: `*-images-idx3-ubyte[.gz]` (big-endian magic 2051, count, rows,
//! cols, then bytes) with `*-labels-idx1-ubyte[.gz]` (magic 2049, count, then bytes) beside it.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, open, read_error};
use crate::error::{Error, Result};
use crate::model::IMAGE_SIDE;

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;

pub fn is_images_file(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("images-idx3-ubyte"))
}

/// The labels file beside an images file: `images-idx3` → `labels-idx1`, gzip or not.
fn labels_for(images: &Path) -> Result<PathBuf> {
    let name = images.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let base = name.replace("images-idx3-ubyte", "labels-idx1-ubyte");
    let stem = base.trim_end_matches(".gz");
    let candidates = [stem.to_string(), format!("{stem}.gz")];
    candidates
        .iter()
        .map(|c| images.with_file_name(c))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::input(images, "labels", format!("no labels file {stem}[.gz] beside it")))
}

/// A directory holding exactly one IDX images file (and its labels).
pub fn load_dir(dir: &Path) -> Result<Dataset> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_images_file(p)).collect();
    found.sort();
    match found.as_slice() {
        [one] => load(one),
        [] => Err(Error::input(dir, "directory", "no *-images-idx3-ubyte[.gz] file in it")),
        many => {
            let names: Vec<_> = many.iter().filter_map(|p| p.file_name()?.to_str()).collect();
            Err(Error::input(dir, "directory", format!("several IDX image files ({}); name one", names.join(", "))))
        }
    }
}

pub fn load(images_path: &Path) -> Result<Dataset> {
    let labels_path = labels_for(images_path)?;
    let images = read_all(images_path)?;
    let labels = read_all(&labels_path)?;
    let count = header(images_path, &images, IMAGES_MAGIC, 16)?;
    let rows = be32(&images, 8);
    let cols = be32(&images, 12);
    if (rows, cols) != (IMAGE_SIDE as u32, IMAGE_SIDE as u32) {
        return Err(Error::input(
            images_path,
            "bytes 8–15",
            format!("images are {rows}×{cols}, the model needs 28×28"),
        ));
    }
    let want = 16 + count as usize * IMAGE_SIDE * IMAGE_SIDE;
    if images.len() != want {
        return Err(Error::input(
            images_path,
            format!("byte {}", images.len().min(want)),
            format!("{} bytes, the header's {count} images need {want}", images.len()),
        ));
    }
    let n_labels = header(&labels_path, &labels, LABELS_MAGIC, 8)?;
    if n_labels != count {
        return Err(Error::input(&labels_path, "bytes 4–7", format!("{n_labels} labels for {count} images")));
    }
    if labels.len() != 8 + count as usize {
        return Err(Error::input(
            &labels_path,
            format!("byte {}", labels.len().min(8 + count as usize)),
            format!("{} bytes, the header's {count} labels need {}", labels.len(), 8 + count as usize),
        ));
    }
    if let Some(k) = labels[8..].iter().position(|&l| l > 9) {
        return Err(Error::input(
            &labels_path,
            format!("byte {}", 8 + k),
            format!("label {} is not 0–9", labels[8 + k]),
        ));
    }
    Ok(Dataset { images: images[16..].to_vec(), labels: labels[8..].to_vec(), source: images_path.to_path_buf() })
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes).map_err(|e| read_error(path, format!("byte {}", bytes.len()), &e))?;
    Ok(bytes)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks the magic number and header length; returns the item count.
fn header(path: &Path, bytes: &[u8], magic: u32, header_len: usize) -> Result<u32> {
    if bytes.len() < header_len {
        return Err(Error::input(
            path,
            format!("byte {}", bytes.len()),
            format!("{} bytes, shorter than the {header_len}-byte IDX header", bytes.len()),
        ));
    }
    let found = be32(bytes, 0);
    if found != magic {
        return Err(Error::input(path, "bytes 0–3", format!("magic number {found}, expected {magic}")));
    }
    Ok(be32(bytes, 4))
}
