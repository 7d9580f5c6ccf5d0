//! The training loop: each epoch draws new pairs, runs both towers of every batch in one pass
//! (per-tower BatchNorm statistics), back-propagates the contrastive loss and steps Adam; then
//! validates in eval mode. Also embeds whole datasets in eval mode.
//!
//! A step uploads only the batch's image indices and targets: the images live on the device
//! as bytes. Losses go into a device-side log and are read once per epoch, so the host never
//! waits for the GPU inside an epoch.

use std::time::Instant;

use crate::backend::{Backend, DeviceTensor, VIEW_ALIGN};

use crate::checkpoint::HostModel;
use crate::cpu::Float;
use crate::data::pairs::{Pair, PairSampler};
use crate::data::{self, Dataset, Stream};
use crate::error::{Error, Result};
use crate::metrics::Embedded;
use crate::model::{IMAGE_PIXELS, IMAGE_SIDE, SiameseNet, Weights};
use crate::ops::AdamConfig;
use crate::optim::Adam;
use crate::tape::{Mode, Tape};

/// The tutorial's settings, all overridable from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub z: usize,
    pub margin: f32,
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    pub val_fraction: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { z: 8, margin: 2.0, lr: 1e-3, batch_size: 128, epochs: 10, seed: 0, val_fraction: 0.05 }
    }
}

impl TrainConfig {
    /// Refuses settings that cannot train, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |flag: &str, msg: String| Err(Error::config(flag, msg));
        if self.z == 0 || self.z > 4096 {
            return bad("--z-dim", format!("{} is not in 1..=4096", self.z));
        }
        // The loss squares (margin − d): far beyond 1e6 it leaves f32's range within a step.
        if !(self.margin > 0.0 && self.margin <= 1e6) {
            return bad("--margin", format!("{} is not in (0, 1e6]", self.margin));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr", format!("{} must be a positive number", self.lr));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 20 {
            return bad("--batch-size", format!("{} is not in 1..=1048576", self.batch_size));
        }
        if self.epochs > 100_000 {
            return bad("--epochs", format!("{} is beyond reason (at most 100000)", self.epochs));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return bad("--val-fraction", format!("{} is not strictly between 0 and 1", self.val_fraction));
        }
        Ok(())
    }
}

/// Refuses data whose split leaves the training or the validation rows one class: their
/// pairs need two.
pub fn check_splits(cfg: &TrainConfig, data: &Dataset) -> Result<()> {
    let (train_rows, val_rows) = data::split(data.len(), cfg.val_fraction, cfg.seed);
    data.check_pairs(Some(&train_rows), "the training rows", " (use more data or a larger --limit)")?;
    data.check_pairs(Some(&val_rows), "the validation rows", " (raise --val-fraction or --limit)")
}

/// One row of metrics.csv.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_pair_accuracy: f64,
    pub mean_dist_same: f64,
    pub mean_dist_diff: f64,
    pub train_seconds: f64,
    pub pairs_per_second: f64,
}

impl EpochReport {
    /// The line `train` prints after the epoch, of `epochs` in all.
    pub fn summary(&self, epochs: usize) -> String {
        format!(
            "epoch {:>2}/{}  train_loss {:.5}  val_loss {:.5}  val_pair_acc {:.4}  dist same {:.3} diff {:.3}  {:.1} s  {:.0} pairs/s",
            self.epoch,
            epochs,
            self.train_loss,
            self.val_loss,
            self.val_pair_accuracy,
            self.mean_dist_same,
            self.mean_dist_diff,
            self.train_seconds,
            self.pairs_per_second
        )
    }

    pub const CSV_HEADER: &str =
        "epoch,train_loss,val_loss,val_pair_accuracy,mean_dist_same,mean_dist_diff,train_seconds,pairs_per_second";

    /// A row of metrics.csv, or one of a checkpoint's history, which has no timing columns
    /// (they are 0 then).
    pub fn parse_csv_row(row: &str) -> Option<Self> {
        let v: Vec<&str> = row.split(',').collect();
        let f = |i: usize| v.get(i).map_or(Some(0.0), |s| s.parse::<f64>().ok());
        matches!(v.len(), 6 | 8).then_some(())?;
        Some(Self {
            epoch: v[0].parse().ok()?,
            train_loss: f(1)?,
            val_loss: f(2)?,
            val_pair_accuracy: f(3)?,
            mean_dist_same: f(4)?,
            mean_dist_diff: f(5)?,
            train_seconds: f(6)?,
            pairs_per_second: f(7)?,
        })
    }

    /// The row without its timing columns: what a checkpoint keeps, so that identical runs
    /// write identical checkpoints.
    pub fn csv_row_untimed(&self) -> String {
        let row = self.csv_row();
        row.split(',').take(6).collect::<Vec<_>>().join(",")
    }

    pub fn csv_row(&self) -> String {
        format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.3},{:.1}",
            self.epoch,
            self.train_loss,
            self.val_loss,
            self.val_pair_accuracy,
            self.mean_dist_same,
            self.mean_dist_diff,
            self.train_seconds,
            self.pairs_per_second
        )
    }
}

/// Loss, pair accuracy at distance ≤ margin/2 and mean distances over validation pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct Validation {
    pub loss: f64,
    pub pair_accuracy: f64,
    pub mean_dist_same: f64,
    pub mean_dist_diff: f64,
}

/// Pairs in the warm-up's batch: kernel choices and specialisations depend on the layer shapes,
/// not on the batch size, so a small batch compiles what any run uses.
pub const WARM_UP_PAIRS: usize = 4;

/// Runs one training step and one eval-mode forward of `cfg`'s network on a few blank images,
/// so that every kernel a run uses is compiled before the run needs it: `train` does this while
/// it reads the data (a first run on a CPU driver compiles for seconds, mostly at first dispatch).
/// Leaves nothing on `backend` but compiled pipelines and free scratch; a run's numbers do not
/// depend on it (tests/train.rs holds them bit for bit).
pub fn warm_up<B: Backend>(backend: &mut B, cfg: &TrainConfig) {
    const IMAGES: usize = 16;
    let blank = Dataset {
        images: vec![0; IMAGES * IMAGE_PIXELS],
        labels: (0..IMAGES).map(|i| (i % 2) as u8).collect(),
        source: "warm-up".into(),
    };
    let cfg = TrainConfig { batch_size: WARM_UP_PAIRS, val_fraction: 0.25, ..cfg.clone() };
    let mut trainer = Trainer::new(backend, cfg, &blank);
    let pairs = trainer.bench_pairs(1);
    trainer.step(backend, &pairs, 0);
    backend.compile_ahead();
    trainer.embed_rows(backend, &trainer.train_rows[..WARM_UP_PAIRS]);
    backend.stop_compiling_ahead();
    backend.reset_scratch();
}

/// A model being trained on one dataset, everything it needs resident on the backend.
pub struct Trainer<B: Backend> {
    pub cfg: TrainConfig,
    pub net: SiameseNet,
    pub weights: Weights<B>,
    pub adam: Adam<B>,
    images: B::Images,
    labels: Vec<u8>,
    /// Dataset rows of the training and validation splits.
    pub train_rows: Vec<u32>,
    pub val_rows: Vec<u32>,
    /// Each step's loss, one per VIEW_ALIGN slot (a view must start on that boundary).
    loss_log: B::Tensor,
}

impl<B: Backend> Trainer<B> {
    /// Splits `data`, puts its images on `backend` and initialises the model as PyTorch does,
    /// seeded by `cfg.seed`.
    pub fn new(backend: &mut B, cfg: TrainConfig, data: &Dataset) -> Self {
        let net = SiameseNet::new(cfg.z);
        let (params, buffers) = net.init(data::stream_seed(cfg.seed, 0, Stream::Init));
        let model = HostModel { net, params, buffers, batches_tracked: 0 };
        Self::with_model(backend, cfg, data, &model)
    }

    /// Like [`Trainer::new`], starting from `model`.
    pub fn with_model(backend: &mut B, cfg: TrainConfig, data: &Dataset, model: &HostModel) -> Self {
        let (train_rows, val_rows) = data::split(data.len(), cfg.val_fraction, cfg.seed);
        let net = model.net;
        let mut weights = Weights::new(backend, net, &model.params, &model.buffers);
        weights.batches_tracked = model.batches_tracked;
        let adam = Adam::new(backend, AdamConfig { lr: cfg.lr, ..AdamConfig::default() }, weights.layout.len);
        let images = backend.upload_images(&data.images, IMAGE_PIXELS);
        let steps = train_rows.len().div_ceil(cfg.batch_size);
        let loss_log = backend.zeros(steps.max(1) * VIEW_ALIGN);
        Self { cfg, net, weights, adam, images, labels: data.labels.clone(), train_rows, val_rows, loss_log }
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train_rows.len().div_ceil(self.cfg.batch_size)
    }

    /// The pairs of `rows` for `epoch`, drawn from `stream`, as dataset rows.
    fn pairs(&self, rows: &[u32], epoch: usize, stream: Stream) -> Vec<Pair> {
        let labels: Vec<u8> = rows.iter().map(|&r| self.labels[r as usize]).collect();
        let mut rng = data::rng(self.cfg.seed, epoch as u64, stream);
        let pairs = PairSampler::new(&labels).draw(&labels, &mut rng);
        pairs.into_iter().map(|p| Pair { a: rows[p.a as usize], b: rows[p.b as usize], ..p }).collect()
    }

    /// Training pairs for `steps` full batches (repeating the epoch's pairs if needed), for
    /// benchmarks.
    pub fn bench_pairs(&self, steps: usize) -> Vec<Pair> {
        let epoch = self.pairs(&self.train_rows.clone(), 0, Stream::TrainPairs);
        epoch.iter().cycle().take(steps * self.cfg.batch_size).copied().collect()
    }

    /// Both towers' images, stacked: all first images, then all second images.
    fn stacked_input(&self, tape: &mut Tape<B>, batch: &[Pair]) -> (crate::tape::Var, crate::tape::Var) {
        let n = batch.len();
        let rows: Vec<u32> = batch.iter().map(|p| p.a).chain(batch.iter().map(|p| p.b)).collect();
        // Uploads first: on the GPU each one submits what is recorded before it, so doing both
        // before any dispatch keeps a step to one submit.
        let targets: Vec<B::Elem> = batch.iter().map(|p| B::Elem::from_f64(p.target as f64)).collect();
        let t = tape.backend().scratch(n);
        tape.backend().write(&t, &targets);
        let x = tape.backend().scratch(2 * n * IMAGE_PIXELS);
        tape.backend().gather_images(&self.images, &rows, &x);
        (tape.input(x, &[2 * n, 1, IMAGE_SIDE, IMAGE_SIDE]), tape.input(t, &[n]))
    }

    /// One training step on `batch`; its loss goes to slot `slot` of the loss log.
    pub fn step(&mut self, backend: &mut B, batch: &[Pair], slot: usize) {
        backend.reset_scratch();
        let mut tape = Tape::new(backend, Mode::Train);
        let (x, t) = self.stacked_input(&mut tape, batch);
        let (loss, _) = self.net.loss(&mut tape, &self.weights, x, t, self.cfg.margin);
        tape.backward(loss);
        let loss = tape.data(loss).clone();
        drop(tape);
        self.weights.count_batches(2);
        self.adam.step(backend, &self.weights);
        backend.copy(&loss, &self.loss_log.view(slot * VIEW_ALIGN, 1));
    }

    /// The loss of step `slot` of the current epoch (waits for it).
    pub fn step_loss(&self, backend: &mut B, slot: usize) -> f64 {
        backend.read(&self.loss_log.view(slot * VIEW_ALIGN, 1))[0].to_f64()
    }

    /// Trains one epoch (0-based) on freshly drawn pairs; `on_step(step, steps)` after each
    /// step. Returns the mean of the batch losses, as the tutorial prints it, or an error at
    /// the first step whose loss is not finite (looked for every [`DIVERGENCE_CHECK`] steps,
    /// so that a diverged run stops soon without the host waiting on every step).
    pub fn train_epoch(
        &mut self,
        backend: &mut B,
        epoch: usize,
        on_step: &mut dyn FnMut(&mut Self, &mut B, usize, usize),
    ) -> Result<f64> {
        let pairs = self.pairs(&self.train_rows.clone(), epoch, Stream::TrainPairs);
        let steps = self.steps_per_epoch();
        for (slot, batch) in pairs.chunks(self.cfg.batch_size).enumerate() {
            self.step(backend, batch, slot);
            on_step(self, backend, slot, steps);
            if (slot + 1) % DIVERGENCE_CHECK == 0 || slot + 1 == steps {
                self.check_losses(backend, epoch, slot + 1)?;
            }
        }
        let log = backend.read(&self.loss_log);
        let mean = (0..steps).map(|s| log[s * VIEW_ALIGN].to_f64()).sum::<f64>() / steps.max(1) as f64;
        let params: Vec<B::Elem> = backend.read(&self.weights.params);
        let bad = self
            .weights
            .layout
            .entries
            .iter()
            .find(|e| params[e.offset..][..e.len()].iter().any(|v| !v.to_f64().is_finite()));
        if let Some(e) = bad {
            return Err(Error::Diverged {
                epoch: epoch + 1,
                step: steps,
                what: format!("parameter {} is not finite", e.name),
            });
        }
        Ok(mean)
    }

    /// The first of the epoch's first `done` steps whose loss is NaN or infinite, as an error.
    fn check_losses(&self, backend: &mut B, epoch: usize, done: usize) -> Result<()> {
        let log = backend.read(&self.loss_log);
        match (0..done).find(|&s| !log[s * VIEW_ALIGN].to_f64().is_finite()) {
            Some(s) => {
                let what = format!("the loss is {}", log[s * VIEW_ALIGN].to_f64());
                Err(Error::Diverged { epoch: epoch + 1, step: s + 1, what })
            }
            None => Ok(()),
        }
    }

    /// Eval-mode loss and distances over freshly drawn validation pairs (the tutorial's
    /// validation loader), batch by batch.
    pub fn validate(&mut self, backend: &mut B, epoch: usize) -> Validation {
        let pairs = self.pairs(&self.val_rows.clone(), epoch, Stream::ValPairs);
        let (mut losses, mut correct, mut same, mut diff) = (Vec::new(), 0usize, Vec::new(), Vec::new());
        for batch in pairs.chunks(self.cfg.batch_size) {
            backend.reset_scratch();
            let mut tape = Tape::new(backend, Mode::Eval);
            let (x, t) = self.stacked_input(&mut tape, batch);
            let (loss, d) = self.net.loss(&mut tape, &self.weights, x, t, self.cfg.margin);
            losses.push(tape.read(loss)[0].to_f64());
            for (dist, p) in tape.read(d).iter().zip(batch) {
                let dist = dist.to_f64();
                let is_same = p.target == 0.0;
                correct += usize::from((dist <= self.cfg.margin as f64 / 2.0) == is_same);
                if is_same { same.push(dist) } else { diff.push(dist) }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        Validation {
            loss: mean(&losses),
            pair_accuracy: correct as f64 / pairs.len().max(1) as f64,
            mean_dist_same: mean(&same),
            mean_dist_diff: mean(&diff),
        }
    }

    /// Trains epoch `epoch` and validates; the row of metrics.csv.
    pub fn epoch(
        &mut self,
        backend: &mut B,
        epoch: usize,
        on_step: &mut dyn FnMut(&mut Self, &mut B, usize, usize),
    ) -> Result<EpochReport> {
        let start = Instant::now();
        let train_loss = self.train_epoch(backend, epoch, on_step)?;
        let seconds = start.elapsed().as_secs_f64();
        let v = self.validate(backend, epoch);
        Ok(EpochReport {
            epoch: epoch + 1,
            train_loss,
            val_loss: v.loss,
            val_pair_accuracy: v.pair_accuracy,
            mean_dist_same: v.mean_dist_same,
            mean_dist_diff: v.mean_dist_diff,
            train_seconds: seconds,
            pairs_per_second: self.train_rows.len() as f64 / seconds.max(1e-9),
        })
    }

    /// The model as it stands, on the host.
    pub fn host_model(&self, backend: &mut B) -> HostModel {
        let to_f32 = |v: Vec<B::Elem>| v.into_iter().map(|x| x.to_f64() as f32).collect();
        HostModel {
            net: self.net,
            params: to_f32(backend.read(&self.weights.params)),
            buffers: to_f32(backend.read(&self.weights.buffers)),
            batches_tracked: self.weights.batches_tracked,
        }
    }

    /// Eval-mode embeddings of dataset rows `rows` (of the training file).
    pub fn embed_rows(&self, backend: &mut B, rows: &[u32]) -> Embedded {
        let values = embed_with(backend, &self.net, &self.weights, &self.images, rows);
        Embedded { z: self.net.z, values, labels: rows.iter().map(|&r| self.labels[r as usize]).collect() }
    }
}

/// Steps between looks at the loss log for a diverged run.
pub const DIVERGENCE_CHECK: usize = 64;

/// Images per eval-mode launch when embedding a dataset.
const EMBED_BATCH: usize = 1000;

fn embed_with<B: Backend>(
    backend: &mut B,
    net: &SiameseNet,
    weights: &Weights<B>,
    images: &B::Images,
    rows: &[u32],
) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * net.z);
    for chunk in rows.chunks(EMBED_BATCH) {
        backend.reset_scratch();
        let x = backend.scratch(chunk.len() * IMAGE_PIXELS);
        backend.gather_images(images, chunk, &x);
        let mut tape = Tape::new(backend, Mode::Eval);
        let x = tape.input(x, &[chunk.len(), 1, IMAGE_SIDE, IMAGE_SIDE]);
        let e = net.forward(&mut tape, weights, x, 1);
        out.extend(tape.read(e).into_iter().map(|v| v.to_f64() as f32));
    }
    out
}

/// Eval-mode embeddings of a whole dataset by `model`, in input order.
pub fn embed<B: Backend>(backend: &mut B, model: &HostModel, data: &Dataset) -> Embedded {
    let weights = Weights::new(backend, model.net, &model.params, &model.buffers);
    let images = backend.upload_images(&data.images, IMAGE_PIXELS);
    let rows: Vec<u32> = (0..data.len() as u32).collect();
    Embedded {
        z: model.net.z,
        values: embed_with(backend, &model.net, &weights, &images, &rows),
        labels: data.labels.clone(),
    }
}
