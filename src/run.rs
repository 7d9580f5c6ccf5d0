//! A training run on disk: the folder it writes, what goes in it after each epoch and at the
//! end, and the checkpoint (`RunState`) that `train --resume` continues from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::checkpoint::HostModel;
use crate::data::{self, Dataset, Stream};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::gpu::GpuBackend;
use crate::metrics::Embedded;
use crate::model::SiameseNet;
use crate::output;
use crate::train::{EpochReport, TrainConfig, Trainer};
use crate::{plot, tsne};

/// The model in a run's directory.
pub const MODEL: &str = "model.safetensors";

/// A run's folder, claimed by this process: made (or found empty), or for a resumed run found;
/// locked through `.siamese.lock` (an OS lock, which a process that died does not hold), so
/// that two runs never write one folder; temporary files that killed runs left, removed.
/// Dropped before [`RunDir::finish`] (an error), it takes back what the claim made: the lock
/// file, and the folder if the claim made it and nothing else was written.
pub struct RunDir {
    pub path: PathBuf,
    lock: Option<std::fs::File>,
    made: bool,
}

const LOCK: &str = ".siamese.lock";

impl RunDir {
    /// The folder of a new run: `out`, which must be empty or absent, or runs/<date-time>
    /// (with -2, -3, … where a run started in the same second took that).
    pub fn new_run(out: Option<PathBuf>) -> Result<Self> {
        let (path, made) = match out {
            Some(out) => {
                let made = make_dir(&out).map_err(|e| Error::io(&out, e))?;
                (out, made)
            }
            None => {
                let stamp = chrono::Local::now().format("%Y-%m-%d_%H-%M-%S").to_string();
                let runs = PathBuf::from("runs");
                let mut n = 1;
                loop {
                    let name = if n == 1 { stamp.clone() } else { format!("{stamp}-{n}") };
                    let path = runs.join(name);
                    match make_dir(&path) {
                        Ok(true) => break (path, true),
                        Ok(false) if n < 1000 => n += 1,
                        Ok(false) => {
                            return Err(Error::config("--out", format!("{} and 999 more are taken", path.display())));
                        }
                        Err(e) => return Err(Error::io(&path, e)),
                    }
                }
            }
        };
        let dir = Self::lock(path, made, "--out")?;
        let taken =
            std::fs::read_dir(&dir.path).map_err(|e| Error::io(&dir.path, e))?.flatten().any(|e| e.file_name() != LOCK);
        if taken {
            let message = format!("{} already holds files; choose another folder", dir.path.display());
            return Err(Error::config("--out", message));
        }
        Ok(dir)
    }

    /// A folder that exists (a run to resume), claimed; `flag` is what errors name.
    pub fn existing(path: &Path, flag: &str) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::config(flag, format!("{} is not a run's folder", path.display())));
        }
        Self::lock(path.to_path_buf(), false, flag)
    }

    /// A folder made if it is absent, kept as it is if not (a sweep's, which holds runs).
    pub fn existing_or_new(path: &Path, flag: &str) -> Result<Self> {
        let made = make_dir(path).map_err(|e| Error::io(path, e))?;
        Self::lock(path.to_path_buf(), made, flag)
    }

    fn lock(path: PathBuf, made: bool, flag: &str) -> Result<Self> {
        let lock_path = path.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&path, e));
        // From here on, dropping the RunDir takes back what the claim made.
        let mut dir = Self { path, lock: None, made };
        let file = file?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let message = format!("another siamese run is writing {}", dir.path.display());
                // Its lock file is the other run's: leave it.
                dir.made = false;
                return Err(Error::config(flag, message));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        dir.lock = Some(file);
        crate::output::remove_on_signal(&lock_path);
        crate::output::remove_stale_temp_files(&dir.path);
        Ok(dir)
    }

    /// The run is over: its files stay, the lock goes.
    pub fn finish(mut self) {
        self.made = false;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.lock.take().is_some() {
            let lock = self.path.join(LOCK);
            let _ = std::fs::remove_file(&lock);
            crate::output::forget(&lock);
        }
        if self.made {
            // Fails, as it should, where the run wrote anything.
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Makes `dir` (and its parents): true if this call made it, false if it was there.
fn make_dir(dir: &Path) -> std::io::Result<bool> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(std::io::Error::other("exists and is not a folder"))
        }
        Err(e) => Err(e),
    }
}

/// The training checkpoint in a run's directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// Refuses a batch whose largest activation (a feature map, or the embeddings at a wide
/// --z-dim) would not fit one storage binding of the adapter.
pub fn check_batch_fits(gpu: &GpuBackend, cfg: &TrainConfig) -> Result<()> {
    let n = 2 * cfg.batch_size;
    let maps = crate::model::largest_activation(n) as u64 * 4;
    let embeddings = (n * cfg.z) as u64 * 4;
    let limit = gpu.ctx.limits.max_storage_buffer_binding_size;
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    let binds = format!("{} binds at most {:.2} MiB per buffer", gpu.ctx.adapter.name, mib(limit));
    if maps > limit {
        let message = format!("{} pairs need {:.2} MiB feature maps; {binds}", cfg.batch_size, mib(maps));
        return Err(Error::config("--batch-size", message));
    }
    if embeddings > limit {
        let message = format!(
            "{} pairs of {}-wide embeddings need {:.2} MiB; {binds} (lower --z-dim or --batch-size)",
            cfg.batch_size,
            cfg.z,
            mib(embeddings)
        );
        return Err(Error::config("--z-dim", message));
    }
    Ok(())
}

/// The metadata of a run's model.safetensors.
/// What a model file says of its run: enough to name its setting and rebuild its split.
pub fn model_metadata(cfg: &TrainConfig, epochs_done: usize, data_rows: usize) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "siamese state_dict (PyTorch names and layouts)".to_string()),
        ("z_dimensions".to_string(), cfg.z.to_string()),
        ("margin".to_string(), cfg.margin.to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
        ("epochs".to_string(), epochs_done.to_string()),
        ("lr".to_string(), cfg.lr.to_string()),
        ("batch_size".to_string(), cfg.batch_size.to_string()),
        ("val_fraction".to_string(), format!("{:?}", cfg.val_fraction)),
        ("data_rows".to_string(), data_rows.to_string()),
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
    plot::pairs_png(path, &data.file_name(), &shown, None)
}

/// Embeddings drawn in 2-D: as they are where z = 2 (unless t-SNE is asked for), else by
/// t-SNE; `name` is the files' stem, "embedding" or "tsne".
pub struct Map {
    pub points: Vec<(f32, f32)>,
    pub axes: (String, String),
    pub method: &'static str,
    pub name: &'static str,
}

pub fn map_2d(emb: &Embedded, tsne: bool) -> Map {
    if emb.z == 2 && !tsne {
        let points = emb.values.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        Map { points, axes: ("e0".into(), "e1".into()), method: "as they are", name: "embedding" }
    } else {
        let points = tsne::tsne_2d(&emb.values, emb.z, 30.0);
        Map { points, axes: ("t-SNE 1".into(), "t-SNE 2".into()), method: "by t-SNE", name: "tsne" }
    }
}

/// A setting in words, for pictures' titles: "z=8, margin 2, 10 epochs".
pub fn setting(cfg: &TrainConfig, epochs: usize) -> String {
    format!("z={}, margin {}, {epochs} epoch{}", cfg.z, cfg.margin, if epochs == 1 { "" } else { "s" })
}

/// `<map.name>.png` and `.csv` (x, y, label, class) of `emb` in `out`, titled with `what` and
/// how it is drawn.
pub fn save_map(out: &Path, emb: &Embedded, what: &str, names: &[String]) -> Result<Map> {
    let map = map_2d(emb, false);
    let title = format!("{what}, {}", map.method);
    write_map(&out.join(format!("{}.png", map.name)), &title, (&map, &emb.labels), names)?;
    Ok(map)
}

/// `map` of points labelled `labels` as the picture `png`, titled `title`, and as a CSV beside
/// it (x, y, label, class).
pub fn write_map(png: &Path, title: &str, (map, labels): (&Map, &[u8]), names: &[String]) -> Result<()> {
    let axes = (map.axes.0.as_str(), map.axes.1.as_str());
    plot::embedding_png(png, title, axes, (&map.points, labels), names)?;
    let mut csv = String::from("x,y,label,class\n");
    for (p, l) in map.points.iter().zip(labels) {
        let class = names.get(*l as usize).map_or("", String::as_str);
        csv.push_str(&format!("{},{},{},{}\n", p.0, p.1, l, class));
    }
    output::write(&png.with_extension("csv"), csv.as_bytes())
}

/// After each epoch: metrics.csv with every epoch so far, the model and the checkpoint; none
/// of them where the state holds a NaN or an infinity (the last good ones stay).
pub fn save_epoch(out: &Path, cfg: &TrainConfig, state: &RunState) -> Result<()> {
    state.check_finite()?;
    let rows =
        std::iter::once(EpochReport::CSV_HEADER.to_string()).chain(state.history.iter().map(EpochReport::csv_row));
    output::write(&out.join("metrics.csv"), (rows.collect::<Vec<_>>().join("\n") + "\n").as_bytes())?;
    state.model.save(&out.join(MODEL), &model_metadata(cfg, state.history.len(), state.data_rows))?;
    state.save(&out.join(CHECKPOINT))
}

/// The timing columns of `history` (read from a checkpoint, which has none) from the run
/// folder's metrics.csv, where it has the epoch; 0 where not.
pub fn restore_timings(out: &Path, history: &mut [EpochReport]) {
    let Ok(csv) = std::fs::read_to_string(out.join("metrics.csv")) else { return };
    for row in csv.lines().skip(1).filter_map(EpochReport::parse_csv_row) {
        if let Some(r) = history.iter_mut().find(|r| r.epoch == row.epoch && r.train_loss == row.train_loss) {
            (r.train_seconds, r.pairs_per_second) = (row.train_seconds, row.pairs_per_second);
        }
    }
}

/// loss.png: train and validation loss per epoch.
pub fn save_loss_png(out: &Path, what: &str, reports: &[EpochReport]) -> Result<()> {
    let train: Vec<f64> = reports.iter().map(|r| r.train_loss).collect();
    let val: Vec<f64> = reports.iter().map(|r| r.val_loss).collect();
    plot::loss_png(&out.join("loss.png"), what, &train, &val)
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
    /// Rows of the training data, and their fingerprint (`Dataset::fingerprint`; None in a
    /// checkpoint from before it was kept), to refuse resuming on other data.
    pub data_rows: usize,
    pub data_fingerprint: Option<String>,
}

const ADAM_M: &str = "optimizer.exp_avg";
const ADAM_V: &str = "optimizer.exp_avg_sq";

impl RunState {
    /// Writes the checkpoint atomically: a crash leaves the previous one whole.
    pub fn save(&self, path: &Path) -> Result<()> {
        let c = &self.cfg;
        let history: Vec<String> = self.history.iter().map(EpochReport::csv_row_untimed).collect();
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
        .chain(self.data_fingerprint.clone().map(|f| ("data_fingerprint", f)))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let extra = [(ADAM_M, self.adam_m.as_slice()), (ADAM_V, self.adam_v.as_slice())];
        crate::output::write(path, &self.model.to_bytes_with(&extra, &meta))
    }

    /// Refuses a state with a NaN or an infinity anywhere, naming the first tensor that has
    /// one: such a checkpoint could not be resumed, so the last good one stays.
    pub fn check_finite(&self) -> Result<()> {
        let (params, buffers) = (self.model.net.params(), self.model.net.buffers());
        let tensors = params.entries.iter().map(|e| (e.name.as_str(), &self.model.params[e.offset..][..e.len()]));
        let tensors = tensors
            .chain(buffers.entries.iter().map(|e| (e.name.as_str(), &self.model.buffers[e.offset..][..e.len()])));
        let mut tensors = tensors.chain([(ADAM_M, self.adam_m.as_slice()), (ADAM_V, self.adam_v.as_slice())]);
        match tensors.find_map(|(name, v)| v.iter().position(|x| !x.is_finite()).map(|i| (name, i, v[i]))) {
            Some((name, i, v)) => Err(Error::Diverged {
                epoch: self.epochs_done,
                // The epoch's last step (each epoch takes as many).
                step: (self.adam_step as usize).checked_div(self.epochs_done).unwrap_or(0),
                what: format!("{name} element {i} is {v} at the epoch's end"),
            }),
            None => Ok(()),
        }
    }

    /// Refuses to continue on data other than the checkpoint's (by its fingerprint, or its row
    /// count where it has none), or to an epoch count below the epochs done.
    pub fn check_continues(&self, data: &Dataset, cfg: &TrainConfig) -> Result<()> {
        if self.data_rows != data.len() {
            let message = format!("{} rows, the checkpoint was trained on {}", data.len(), self.data_rows);
            return Err(Error::input(&data.source, "whole file", message));
        }
        if let Some(trained) = &self.data_fingerprint {
            let fingerprint = data.fingerprint();
            if *trained != fingerprint {
                let message = format!("fingerprint {fingerprint}; the checkpoint was trained on data of {trained}");
                return Err(Error::input(&data.source, "whole file", message));
            }
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
        let data_rows: usize = num(path, "data_rows", field("data_rows")?)?;
        let adam_step: u64 = num(path, "adam_step", field("adam_step")?)?;
        // Adam takes one step per batch: any other count is an edit (and a huge one overflows
        // its bias correction).
        let steps = data::split_sizes(data_rows, cfg.val_fraction).0.div_ceil(cfg.batch_size);
        if adam_step != (epochs_done * steps) as u64 {
            let message =
                format!("{adam_step}, expected {} for {epochs_done} epochs of {steps} steps", epochs_done * steps);
            return Err(Error::input(path, "metadata adam_step", message));
        }
        let mut extras = extras.into_iter();
        Ok(RunState {
            model,
            adam_m: extras.next().expect("asked for two"),
            adam_v: extras.next().expect("asked for two"),
            adam_step,
            epochs_done,
            cfg,
            history,
            data_rows,
            data_fingerprint: meta.get("data_fingerprint").cloned(),
        })
    }
}

/// A trainer's side of a checkpoint: here, so that the training loop knows nothing of files.
impl<B: Backend> Trainer<B> {
    /// Continues the run of `state` on `data` (the same rows it started on).
    pub fn resume(backend: &mut B, state: &RunState, data: &Dataset) -> Self {
        let mut trainer = Self::with_model(backend, state.cfg.clone(), data, &state.model);
        let to_elem = |v: &[f32]| v.iter().map(|&x| B::Elem::from_f64(x as f64)).collect::<Vec<_>>();
        backend.write(&trainer.adam.m, &to_elem(&state.adam_m));
        backend.write(&trainer.adam.v, &to_elem(&state.adam_v));
        trainer.adam.t = state.adam_step;
        trainer
    }

    /// The run's state after `history.len()` epochs, for a checkpoint.
    pub fn run_state(&self, backend: &mut B, history: &[EpochReport], data: &Dataset) -> RunState {
        let to_f32 = |v: Vec<B::Elem>| v.into_iter().map(|x| x.to_f64() as f32).collect();
        RunState {
            model: self.host_model(backend),
            adam_m: to_f32(backend.read(&self.adam.m)),
            adam_v: to_f32(backend.read(&self.adam.v)),
            adam_step: self.adam.t,
            epochs_done: history.len(),
            cfg: self.cfg.clone(),
            history: history.to_vec(),
            data_rows: data.len(),
            data_fingerprint: Some(data.fingerprint()),
        }
    }
}
