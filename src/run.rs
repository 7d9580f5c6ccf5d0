//! A training run on disk: the folder it writes, what goes in it after each epoch and at the
//! end, and the checkpoint (`RunState`) that `train --resume` continues from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::{HostModel, write_atomically};
use crate::data::{self, Dataset, Stream};
use crate::error::{Error, Result};
use crate::gpu::GpuBackend;
use crate::metrics::Embedded;
use crate::model::SiameseNet;
use crate::train::{EpochReport, TrainConfig};
use crate::{plot, tsne};

/// The model in a run's directory.
pub const MODEL: &str = "model.safetensors";

/// The output directory, refused if it already holds files (checked before any work).
pub fn check_out(out: Option<PathBuf>) -> Result<PathBuf> {
    let stamp = chrono::Local::now().format("%Y-%m-%d_%H-%M-%S").to_string();
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(stamp));
    if out.exists() {
        let mut entries = std::fs::read_dir(&out).map_err(|e| Error::io(&out, e))?;
        if entries.next().is_some() {
            let message = format!("{} already holds files; choose another directory", out.display());
            return Err(Error::config("--out", message));
        }
    }
    Ok(out)
}

/// Creates the output directory and checks that it can be written.
pub fn create_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let probe = out.join(".write-test");
    std::fs::write(&probe, b"").map_err(|e| Error::io(out, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
    Ok(())
}

/// The training checkpoint in a run's directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// Refuses a batch whose largest activation would not fit one storage binding of the adapter.
pub fn check_batch_fits(gpu: &GpuBackend, cfg: &TrainConfig) -> Result<()> {
    let largest = crate::model::largest_activation(2 * cfg.batch_size) as u64 * 4;
    let limit = gpu.ctx.limits.max_storage_buffer_binding_size;
    if largest > limit {
        let message = format!(
            "{} pairs need {} MiB activations, {} binds at most {} MiB per buffer",
            cfg.batch_size,
            largest >> 20,
            gpu.ctx.adapter.name,
            limit >> 20
        );
        return Err(Error::config("--batch-size", message));
    }
    Ok(())
}

/// The metadata of a run's model.safetensors.
pub fn model_metadata(cfg: &TrainConfig, epochs_done: usize) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "siamese state_dict (PyTorch names and layouts)".to_string()),
        ("z_dimensions".to_string(), cfg.z.to_string()),
        ("margin".to_string(), cfg.margin.to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
        ("epochs".to_string(), epochs_done.to_string()),
        ("lr".to_string(), cfg.lr.to_string()),
        ("batch_size".to_string(), cfg.batch_size.to_string()),
    ])
}

/// A picture of `count` sample pairs drawn from `rows` of `data`, as the tutorial shows them.
pub fn save_pairs_png(path: &Path, data: &Dataset, rows: &[u32], seed: u64, count: usize) -> Result<()> {
    let labels: Vec<u8> = rows.iter().map(|&r| data.labels[r as usize]).collect();
    let mut rng = data::rng(seed, 0, Stream::Picture);
    let pairs = data::pairs::PairSampler::new(&labels).draw(&labels, &mut rng);
    let shown: Vec<(&[u8], &[u8], f32)> = pairs
        .iter()
        .take(count)
        .map(|p| (data.image(rows[p.a as usize] as usize), data.image(rows[p.b as usize] as usize), p.target))
        .collect();
    plot::pairs_png(path, &shown)
}

/// tsne.png and tsne.csv (x, y, label) of `emb`.
pub fn save_tsne(out: &Path, emb: &Embedded, title: &str) -> Result<()> {
    let points = tsne::tsne_2d(&emb.values, emb.z, 30.0);
    plot::tsne_png(&out.join("tsne.png"), title, &points, &emb.labels)?;
    let mut csv = String::from("x,y,label,class\n");
    for (p, l) in points.iter().zip(&emb.labels) {
        csv.push_str(&format!("{},{},{},{}\n", p.0, p.1, l, data::CLASS_NAMES[*l as usize]));
    }
    write_atomically(&out.join("tsne.csv"), csv.as_bytes())?;
    Ok(())
}

/// After each epoch: metrics.csv with every epoch so far, the model and the checkpoint.
pub fn save_epoch(out: &Path, cfg: &TrainConfig, state: &RunState) -> Result<()> {
    let rows =
        std::iter::once(EpochReport::CSV_HEADER.to_string()).chain(state.history.iter().map(EpochReport::csv_row));
    write_atomically(&out.join("metrics.csv"), (rows.collect::<Vec<_>>().join("\n") + "\n").as_bytes())?;
    state.model.save(&out.join(MODEL), &model_metadata(cfg, state.history.len()))?;
    state.save(&out.join(CHECKPOINT))
}

/// loss.png: train and validation loss per epoch.
pub fn save_loss_png(out: &Path, reports: &[EpochReport]) -> Result<()> {
    let train: Vec<f64> = reports.iter().map(|r| r.train_loss).collect();
    let val: Vec<f64> = reports.iter().map(|r| r.val_loss).collect();
    plot::loss_png(&out.join("loss.png"), &train, &val)
}

/// Everything a run needs to continue exactly where it stopped: the model, Adam's moments and
/// step, how many epochs are done (every random draw of an epoch derives from the seed and the
/// epoch, so that and the seed are the whole random state), the settings and the metrics so far.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    pub model: HostModel,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_step: u64,
    pub epochs_done: usize,
    pub cfg: TrainConfig,
    pub history: Vec<EpochReport>,
    /// Rows of the training data, to refuse resuming on other data.
    pub data_rows: usize,
}

const ADAM_M: &str = "optimizer.exp_avg";
const ADAM_V: &str = "optimizer.exp_avg_sq";

impl RunState {
    /// Writes the checkpoint atomically: a crash leaves the previous one whole.
    pub fn save(&self, path: &Path) -> Result<()> {
        let c = &self.cfg;
        let history: Vec<String> = self.history.iter().map(EpochReport::csv_row).collect();
        let meta: HashMap<String, String> = [
            ("format", "siamese training checkpoint".to_string()),
            ("epochs_done", self.epochs_done.to_string()),
            ("adam_step", self.adam_step.to_string()),
            ("z_dimensions", c.z.to_string()),
            ("margin", format!("{:?}", c.margin)),
            ("lr", format!("{:?}", c.lr)),
            ("batch_size", c.batch_size.to_string()),
            ("epochs", c.epochs.to_string()),
            ("seed", c.seed.to_string()),
            ("val_fraction", format!("{:?}", c.val_fraction)),
            ("data_rows", self.data_rows.to_string()),
            ("history", history.join(";")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let extra = [(ADAM_M, self.adam_m.as_slice()), (ADAM_V, self.adam_v.as_slice())];
        crate::checkpoint::write_atomically(path, &self.model.to_bytes_with(&extra, &meta))
    }

    /// Refuses to continue on data other than the checkpoint's (by its row count), or to an
    /// epoch count below the epochs done.
    pub fn check_continues(&self, data: &Dataset, cfg: &TrainConfig) -> Result<()> {
        if self.data_rows != data.len() {
            let message = format!("{} rows, the checkpoint was trained on {}", data.len(), self.data_rows);
            return Err(Error::input(&data.source, "whole file", message));
        }
        if self.epochs_done > cfg.epochs {
            let message = format!("{} is below the {} epochs already done", cfg.epochs, self.epochs_done);
            return Err(Error::config("--epochs", message));
        }
        Ok(())
    }

    /// Reads and checks a checkpoint written by [`RunState::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        // The moments have the flat parameter buffer's length, known once z is; a missing or
        // malformed linear.weight is reported by the model's own checks below.
        let z = safetensors::SafeTensors::deserialize(&bytes)
            .ok()
            .and_then(|st| st.tensor("linear.weight").ok().and_then(|t| t.shape().first().copied()))
            .unwrap_or(1);
        let len = SiameseNet::new(z.max(1)).params().len;
        let (model, meta, extras) = HostModel::from_bytes_with(path, &bytes, &[(ADAM_M, len), (ADAM_V, len)])?;
        let field = |key: &str| -> Result<String> {
            meta.get(key)
                .cloned()
                .ok_or_else(|| Error::input(path, format!("metadata {key}"), "missing (not a training checkpoint?)"))
        };
        fn num<T: std::str::FromStr>(path: &Path, key: &str, v: String) -> Result<T> {
            v.parse().map_err(|_| Error::input(path, format!("metadata {key}"), format!("{v:?} is not a number")))
        }
        let cfg = TrainConfig {
            z: model.net.z,
            margin: num(path, "margin", field("margin")?)?,
            lr: num(path, "lr", field("lr")?)?,
            batch_size: num(path, "batch_size", field("batch_size")?)?,
            epochs: num(path, "epochs", field("epochs")?)?,
            seed: num(path, "seed", field("seed")?)?,
            val_fraction: num(path, "val_fraction", field("val_fraction")?)?,
        };
        cfg.validate().map_err(|e| Error::input(path, "metadata", e.to_string()))?;
        let history = field("history")?
            .split(';')
            .filter(|r| !r.is_empty())
            .map(|r| {
                EpochReport::parse_csv_row(r)
                    .ok_or_else(|| Error::input(path, "metadata history", format!("bad row {r:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let epochs_done: usize = num(path, "epochs_done", field("epochs_done")?)?;
        if history.len() != epochs_done {
            return Err(Error::input(
                path,
                "metadata history",
                format!("{} rows for {epochs_done} epochs", history.len()),
            ));
        }
        let mut extras = extras.into_iter();
        Ok(RunState {
            model,
            adam_m: extras.next().expect("asked for two"),
            adam_v: extras.next().expect("asked for two"),
            adam_step: num(path, "adam_step", field("adam_step")?)?,
            epochs_done,
            cfg,
            history,
            data_rows: num(path, "data_rows", field("data_rows")?)?,
        })
    }
}
