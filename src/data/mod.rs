//! Fashion-MNIST on the host: the readers (Kaggle CSV, official IDX), validation, the
//! train/validation split and the pair sampler. Every bad input is an error naming the file
//! and the place; nothing here panics on user data.

mod csv;
mod idx;
pub mod pairs;

use std::io::Read;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::model::IMAGE_PIXELS;

/// The ten classes, by label.
pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Labelled 28×28 grey images as bytes, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// (N, 784) pixels, row-major.
    pub images: Vec<u8>,
    /// (N) labels 0–9.
    pub labels: Vec<u8>,
    /// Where it was read from, for messages.
    pub source: PathBuf,
}

impl Dataset {
    /// Reads a Kaggle-layout CSV (`label,pixel1..pixel784`, header optional, `.csv` or gzip
    /// recognised by its magic bytes), an IDX images file (`*-images-idx3-ubyte[.gz]`, with its
    /// `*-labels-idx1-ubyte[.gz]` beside it), or a directory holding one IDX pair.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_first(path, None)
    }

    /// Like [`Dataset::load`], keeping only the first `limit` images: a CSV is read no further
    /// (quick runs start at once, and rows after the limit are not looked at), and the images
    /// kept must make a dataset on their own (two classes).
    pub fn load_first(path: &Path, limit: Option<usize>) -> Result<Self> {
        let limit = limit.unwrap_or(usize::MAX);
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let data = if meta.is_dir() {
            idx::load_dir(path)?.truncate(limit)
        } else if idx::is_images_file(path) {
            idx::load(path)?.truncate(limit)
        } else {
            csv::load(path, limit)?
        };
        data.check()?;
        Ok(data)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_PIXELS..][..IMAGE_PIXELS]
    }

    /// The first `n` images (all of them if there are fewer).
    fn truncate(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.images.truncate(n * IMAGE_PIXELS);
        self
    }

    /// At least one image; what else a use needs (classes for pairs) its caller checks.
    fn check(&self) -> Result<()> {
        if self.is_empty() {
            return Err(Error::input(&self.source, "whole file", "no images"));
        }
        Ok(())
    }

    /// The classes' names: from a `classes.txt` beside the file (one per line, label order),
    /// else Fashion-MNIST's where the path says "fashion", else the digits.
    pub fn class_names(&self) -> Vec<String> {
        let beside = self.source.parent().map(|d| d.join("classes.txt"));
        if let Some(text) = beside.and_then(|p| std::fs::read_to_string(p).ok()) {
            let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            if names.len() == 10 {
                return names;
            }
        }
        if self.source.to_string_lossy().to_lowercase().contains("fashion") {
            CLASS_NAMES.iter().map(|n| n.to_string()).collect()
        } else {
            (0..10).map(|d| d.to_string()).collect()
        }
    }

    /// The file's name (the folder's, for IDX files in one).
    pub fn file_name(&self) -> String {
        self.source.file_name().map_or_else(|| self.source.display().to_string(), |n| n.to_string_lossy().to_string())
    }

    /// What the data is, for pictures' titles: its file name and image count.
    pub fn describe(&self) -> String {
        format!("{} ({} images)", self.file_name(), self.len())
    }

    /// A fingerprint of the labels and pixels, "crc32:xxxxxxxx": a resumed run refuses data
    /// whose fingerprint differs from its checkpoint's.
    pub fn fingerprint(&self) -> String {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.labels);
        hasher.update(&self.images);
        format!("crc32:{:08x}", hasher.finalize())
    }

    /// Refuses `rows` (all the images where None) for drawing the tutorial's pairs, which needs
    /// two classes (a partner of another class); `what` names them in the message, `hint` says
    /// what to change.
    pub fn check_pairs(&self, rows: Option<&[u32]>, what: &str, hint: &str) -> Result<()> {
        let labels: Vec<u8> = match rows {
            Some(rows) => rows.iter().map(|&r| self.labels[r as usize]).collect(),
            None => self.labels.clone(),
        };
        let classes = classes(&labels);
        if classes.iter().filter(|&&n| n > 0).count() < 2 {
            let n = labels.len();
            let images = if n == 1 { "1 image".to_string() } else { format!("{n} images, all of one class") };
            let message = format!("{what} are {images}; pairs need two classes{hint}");
            return Err(Error::input(&self.source, "labels", message));
        }
        Ok(())
    }

    /// Refuses a test set the evaluation cannot draw its verification pairs from: a class with
    /// two images (a same-class pair) and two classes.
    pub fn check_evaluation(&self) -> Result<()> {
        let classes = classes(&self.labels);
        let message = if classes.iter().all(|&n| n < 2) {
            "no class has two images; the evaluation's same-class pairs need one"
        } else if classes.iter().filter(|&&n| n > 0).count() < 2 {
            "every image has the same label; the evaluation's pairs need two classes"
        } else {
            return Ok(());
        };
        Err(Error::input(&self.source, "labels", message))
    }
}

/// Images per class (0–9).
fn classes(labels: &[u8]) -> [usize; 10] {
    let mut count = [0; 10];
    labels.iter().for_each(|&l| count[l as usize] += 1);
    count
}

/// Opens `path` for reading, through gzip when it starts with gzip's magic bytes.
fn open(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic).map_err(|e| Error::io(path, e))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let stream = head.chain(file);
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(ReadAhead::new(flate2::read::MultiGzDecoder::new(stream)))
    } else {
        Box::new(stream)
    })
}

/// Reads `source` on its own thread, a few chunks ahead: inflating the training file takes
/// about half as long as parsing it, and each can have a core. The thread ends at the end of
/// the stream, at an error (handed to the reader in its place), or when the reader is dropped.
struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl ReadAhead {
    const CHUNK: usize = 1 << 20;

    fn new(mut source: impl Read + Send + 'static) -> Self {
        let (chunks, receiver) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            loop {
                let mut chunk = vec![0; Self::CHUNK];
                let sent = match read_up_to(&mut source, &mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        chunk.truncate(n);
                        chunks.send(Ok(chunk))
                    }
                    Err(e) => chunks.send(Err(e)),
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        Self { chunks: receiver, current: std::io::Cursor::new(Vec::new()) }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.chunks.recv() {
                Ok(chunk) => self.current = std::io::Cursor::new(chunk?),
                // The thread has finished: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// An I/O error while reading a (possibly gzip) stream, as an input error at `place`.
fn read_error(path: &Path, place: String, e: &std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
            Error::input(path, place, format!("corrupt data ({e})"))
        }
        std::io::ErrorKind::UnexpectedEof => Error::input(path, place, "the file ends early (truncated gzip?)"),
        _ => Error::input(path, place, e.to_string()),
    }
}

/// The seeded train/validation split of `n` items, as `train_test_split(test_size=f)` makes
/// it: ⌈f·n⌉ items go to validation, drawn by a shuffle. Returns (train, val) indices, each
/// in increasing order.
pub fn split(n: usize, val_fraction: f64, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(stream_seed(seed, 0, Stream::Split)));
    let (val, train) = order.split_at(split_sizes(n, val_fraction).1);
    let (mut train, mut val) = (train.to_vec(), val.to_vec());
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// The sizes of `split`'s training and validation rows of `n`.
pub fn split_sizes(n: usize, val_fraction: f64) -> (usize, usize) {
    let n_val = ((val_fraction * n as f64).ceil() as usize).clamp(1.min(n), n.saturating_sub(1));
    (n - n_val, n_val)
}

/// The random streams one `--seed` drives; each (stream, epoch) gets its own generator, so an
/// epoch's draws depend on nothing but the seed and the epoch (which makes resuming exact).
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Split = 1,
    Init = 2,
    TrainPairs = 3,
    ValPairs = 4,
    EvalPairs = 5,
    Picture = 6,
}

pub fn stream_seed(seed: u64, epoch: u64, stream: Stream) -> u64 {
    // SplitMix64's finaliser over the three, so nearby seeds give unrelated streams.
    let mut z = seed ^ (epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ ((stream as u64) << 56);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn rng(seed: u64, epoch: u64, stream: Stream) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(stream_seed(seed, epoch, stream))
}
