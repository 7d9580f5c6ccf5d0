//! Looking inside a trained model: its test evaluation against the gallery train's evaluation
//! used, a 2-D map of its embeddings, each query's nearest neighbours, and sample pairs with
//! the model's distance and verdict.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::HostModel;
use crate::data::{self, Dataset, Stream};
use crate::error::{Error, Result};
use crate::gpu::GpuBackend;
use crate::metrics::{self, Embedded, TestMetrics};
use crate::train::{self, TrainConfig};
use crate::{output, plot, run};

/// A model file and what its metadata says of the run that made it.
pub struct Trained {
    pub model: HostModel,
    pub meta: HashMap<String, String>,
    pub path: PathBuf,
}

impl Trained {
    pub fn load(path: &Path) -> Result<Self> {
        let (model, meta) = HostModel::load(path)?;
        Ok(Self { model, meta, path: path.to_path_buf() })
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.meta.get(key).and_then(|v| v.parse().ok())
    }

    /// "z=8, margin 2, 10 epochs" (what the metadata says; a PyTorch file says only z).
    pub fn setting(&self) -> String {
        let mut parts = vec![format!("z={}", self.model.net.z)];
        if let Some(m) = self.meta.get("margin") {
            parts.push(format!("margin {m}"));
        }
        if let Some(e) = self.meta.get("epochs") {
            parts.push(format!("{e} epochs"));
        }
        parts.join(", ")
    }

    /// The best pair threshold of the run's own evaluation (metrics.json beside the model).
    pub fn best_threshold(&self) -> Option<f32> {
        let json = std::fs::read_to_string(self.path.with_file_name("metrics.json")).ok()?;
        let value: serde_json::Value = serde_json::from_str(&json).ok()?;
        value.get("pair_best_threshold")?.as_f64().map(|v| v as f32)
    }

    /// The rows of `data` that train's evaluation took as its gallery: the training split of
    /// the first `data_rows` rows by the run's seed and validation share (the tutorial's
    /// defaults where the metadata has none), and those words.
    pub fn training_rows(&self, data: &Dataset) -> (Vec<u32>, String) {
        let d = TrainConfig::default();
        let seed = self.number("seed").unwrap_or(d.seed);
        let val_fraction = self.number("val_fraction").unwrap_or(d.val_fraction);
        let rows = self.number::<usize>("data_rows").unwrap_or(data.len()).min(data.len());
        let (train_rows, _) = data::split(rows, val_fraction, seed);
        let words = format!(
            "{}: the training split of its first {rows} rows (seed {seed}, validation share {val_fraction}), as train's evaluation",
            data.file_name()
        );
        (train_rows, words)
    }
}

fn embed_rows(gpu: &mut GpuBackend, model: &HostModel, data: &Dataset, rows: &[u32]) -> Embedded {
    let subset = Dataset {
        images: rows.iter().flat_map(|&r| data.image(r as usize).iter().copied()).collect(),
        labels: rows.iter().map(|&r| data.labels[r as usize]).collect(),
        source: data.source.clone(),
    };
    train::embed(gpu, model, &subset)
}

/// `eval`: the test metrics of `trained` on `test`, kNN against `gallery`'s images, or by
/// default against the gallery train's evaluation used; and which gallery it was, in words.
pub fn evaluate(
    gpu: &mut GpuBackend,
    trained: &Trained,
    test: &Dataset,
    (gallery, whole): (&Dataset, bool),
    seed: u64,
) -> Result<(TestMetrics, String)> {
    test.check_evaluation()?;
    let (rows, words) = if whole {
        ((0..gallery.len() as u32).collect(), format!("{}: all {} images", gallery.file_name(), gallery.len()))
    } else {
        trained.training_rows(gallery)
    };
    let test_emb = train::embed(gpu, &trained.model, test);
    let gallery_emb = embed_rows(gpu, &trained.model, gallery, &rows);
    if let Some(e) = gpu.take_error() {
        return Err(e);
    }
    Ok((metrics::evaluate(&gallery_emb, &test_emb, seed), words))
}

/// `tsne`: a 2-D map of `data`'s embeddings, the embedding itself for a 2-D model unless
/// `tsne` asks for t-SNE; the points also as a CSV beside the picture.
pub fn map(gpu: &mut GpuBackend, trained: &Trained, data: &Dataset, out: &Path, tsne: bool) -> Result<()> {
    let emb = train::embed(gpu, &trained.model, data);
    if let Some(e) = gpu.take_error() {
        return Err(e);
    }
    let map = run::map_2d(&emb, tsne);
    let title = format!("Embeddings of {}, {}; {}", data.describe(), trained.setting(), map.method);
    run::write_map(out, &title, (&map, &emb.labels), &data.class_names())
}

/// Which images `neighbours` takes as queries.
#[derive(Clone, Debug, PartialEq)]
pub enum Queries {
    Rows(Vec<usize>),
    /// N rows drawn with the seed.
    Random(usize),
}

impl std::str::FromStr for Queries {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(n) = s.strip_prefix("random:") {
            let n: usize = n.parse().map_err(|_| format!("{n:?} after random: is not a count"))?;
            return if (1..=64).contains(&n) {
                Ok(Queries::Random(n))
            } else {
                Err(format!("random:{n} is not in 1..=64"))
            };
        }
        let rows: Vec<usize> = s
            .split(',')
            .map(|r| r.trim().parse().map_err(|_| format!("{r:?} is not a row number")))
            .collect::<Result<_, _>>()?;
        if rows.is_empty() || rows.len() > 64 {
            return Err(format!("{} rows; give 1 to 64", rows.len()));
        }
        Ok(Queries::Rows(rows))
    }
}

/// `neighbours`: what to look up, and where.
pub struct Neighbours<'a> {
    pub data: &'a Dataset,
    /// The gallery; None: `data` itself, each query leaving itself out.
    pub gallery: Option<&'a Dataset>,
    pub queries: Queries,
    pub k: usize,
    pub seed: u64,
}

/// Each query's `k` nearest gallery images: the picture at `out` and the CSV beside it
/// (`out` with .csv), one row per (query, rank).
pub fn neighbours(gpu: &mut GpuBackend, trained: &Trained, job: &Neighbours, out: &Path) -> Result<()> {
    let data = job.data;
    let gallery = job.gallery.unwrap_or(data);
    let queries = match &job.queries {
        Queries::Rows(rows) => {
            if let Some(&r) = rows.iter().find(|&&r| r >= data.len()) {
                let message = format!("row {r} is past the {} images of {}", data.len(), data.file_name());
                return Err(Error::config("--query", message));
            }
            rows.clone()
        }
        Queries::Random(n) => {
            use rand::seq::SliceRandom;
            let mut order: Vec<usize> = (0..data.len()).collect();
            order.shuffle(&mut data::rng(job.seed, 0, Stream::Picture));
            order.truncate(*n);
            order
        }
    };
    let available = gallery.len() - usize::from(job.gallery.is_none());
    if job.k == 0 || job.k > 32 || job.k > available {
        let message = format!("{} is not in 1..={}", job.k, available.min(32));
        return Err(Error::config("--k", message));
    }
    let emb = train::embed(gpu, &trained.model, data);
    let own;
    let gallery_emb = match job.gallery {
        Some(g) => {
            own = train::embed(gpu, &trained.model, g);
            &own
        }
        None => &emb,
    };
    if let Some(e) = gpu.take_error() {
        return Err(e);
    }
    let names = data.class_names();
    let mut csv = String::from("query,query_label,rank,gallery_row,gallery_label,distance,same_class\n");
    let mut rows = Vec::new();
    for &q in &queries {
        let mut near: Vec<(f32, usize)> = (0..gallery_emb.len())
            .filter(|&g| job.gallery.is_some() || g != q)
            .map(|g| (metrics::pair_distance(emb.row(q), gallery_emb.row(g)), g))
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        near.truncate(job.k);
        let label = data.labels[q];
        let mut shown = Vec::new();
        for (rank, &(d, g)) in near.iter().enumerate() {
            let (gl, same) = (gallery.labels[g], gallery.labels[g] == label);
            csv.push_str(&format!("{q},{label},{},{g},{gl},{d},{}\n", rank + 1, u8::from(same)));
            let caption = format!("{} {d:.2}", names[gl as usize].chars().take(8).collect::<String>());
            shown.push((gallery.image(g), caption, same));
        }
        let caption = format!("#{q} {}", names[label as usize]);
        rows.push(plot::NeighbourRow { query: data.image(q), caption, neighbours: shown });
    }
    let title = format!(
        "Nearest of {} in {} by {}",
        data.file_name(),
        if job.gallery.is_some() { gallery.describe() } else { "itself".to_string() },
        trained.setting()
    );
    plot::neighbours_png(out, &title, &rows)?;
    output::write(&out.with_extension("csv"), csv.as_bytes())
}

/// `pairs --model`: the sample pairs of `pairs`, each with the model's distance and its verdict
/// at `threshold` (default: the run's best, from its metrics.json).
pub fn pairs(
    gpu: &mut GpuBackend,
    trained: &Trained,
    data: &Dataset,
    (count, seed, threshold): (usize, u64, Option<f32>),
    out: &Path,
) -> Result<()> {
    let threshold = match threshold.or_else(|| trained.best_threshold()) {
        Some(t) if t.is_finite() && t > 0.0 => t,
        Some(t) => return Err(Error::config("--threshold", format!("{t} must be a positive number"))),
        None => {
            let message =
                format!("{} has no metrics.json beside it with a best threshold; give one", trained.path.display());
            return Err(Error::config("--threshold", message));
        }
    };
    data.check_pairs(None, "the images", "")?;
    let mut rng = data::rng(seed, 0, Stream::Picture);
    let drawn = data::pairs::PairSampler::new(&data.labels).draw(&data.labels, &mut rng);
    let drawn: Vec<_> = drawn.into_iter().take(count).collect();
    let rows: Vec<u32> = drawn.iter().flat_map(|p| [p.a, p.b]).collect();
    let emb = embed_rows(gpu, &trained.model, data, &rows);
    if let Some(e) = gpu.take_error() {
        return Err(e);
    }
    let distances: Vec<f32> =
        (0..drawn.len()).map(|i| metrics::pair_distance(emb.row(2 * i), emb.row(2 * i + 1))).collect();
    let shown: Vec<(&[u8], &[u8], f32)> =
        drawn.iter().map(|p| (data.image(p.a as usize), data.image(p.b as usize), p.target)).collect();
    plot::pairs_png(out, &data.file_name(), &shown, Some((&distances, threshold)))
}
