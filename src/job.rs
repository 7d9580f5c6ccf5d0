//! The `train` job from start to end: every input checked before anything is written (the GPU
//! compiling the run's kernels meanwhile), the epochs and what each writes, a resumed run's
//! checks, then the pictures and the test evaluation. The command line only parses flags and
//! shows progress (`Progress`).

use std::path::PathBuf;
use std::time::Instant;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::GpuBackend;
use crate::metrics::{self, TestMetrics};
use crate::output;
use crate::run::{self, RunDir, RunState};
use crate::train::{self, TrainConfig, Trainer};

/// What to train: a new run with `config`, or the run in `resume` continued.
pub struct TrainJob {
    /// A new run's settings; None with `resume`, whose checkpoint holds them.
    pub config: Option<TrainConfig>,
    pub resume: Option<PathBuf>,
    /// Epochs to train to, over the config's or the checkpoint's.
    pub epochs: Option<usize>,
    pub data: PathBuf,
    pub test: PathBuf,
    pub limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// The output folder of a new run (None: runs/<date-time>).
    pub out: Option<PathBuf>,
    /// Per-kernel GPU time of the training steps, reported at the end.
    pub profile: bool,
}

/// How a job shows what it does: lines for the user, and a training epoch's steps.
pub trait Progress {
    /// One line of news (stderr on the command line).
    fn line(&mut self, line: &str);
    /// An epoch of `steps` steps starts.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// Step `step` is recorded; `loss` reads its loss, which waits for the GPU.
    fn step(&mut self, _step: usize, _loss: &mut dyn FnMut() -> f64) {}
    /// The epoch's steps are done.
    fn epoch_end(&mut self) {}
}

/// What a finished job leaves: its folder and the test metrics (also in metrics.json).
pub struct TrainDone {
    pub out: PathBuf,
    pub metrics: TestMetrics,
    /// The classes' names (`Dataset::class_names`).
    pub names: Vec<String>,
}

impl TrainJob {
    pub fn run(self, progress: &mut dyn Progress) -> Result<TrainDone> {
        let started = Instant::now();
        let resumed = match &self.resume {
            Some(dir) => Some(RunState::load(&dir.join(run::CHECKPOINT))?),
            None => None,
        };
        let mut cfg = match (&resumed, &self.config) {
            (Some(state), _) => state.cfg.clone(),
            (None, Some(cfg)) => cfg.clone(),
            (None, None) => TrainConfig::default(),
        };
        if let Some(epochs) = self.epochs {
            cfg.epochs = epochs;
        }
        cfg.validate()?;
        if self.limit == Some(0) || self.test_limit == Some(0) {
            return Err(Error::config("--limit", "0 rows leaves nothing to train on"));
        }
        // Every input is read and checked before anything is written, while the GPU compiles
        // the run's kernels on a warm-up step (seconds on a first run through a CPU driver). A
        // missing file or a full output directory is reported at once, not after that.
        for path in [&self.data, &self.test] {
            std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        }
        let dir = match &self.resume {
            Some(dir) => RunDir::existing(dir, "--resume")?,
            None => RunDir::new_run(self.out.clone())?,
        };
        let inputs = Inputs::open(&cfg, (&self.data, self.limit), (&self.test, self.test_limit), progress)?;
        if let Some(state) = &resumed {
            state.check_continues(&inputs.data, &cfg)?;
        }
        let Inputs { data, test, mut gpu } = inputs;
        train_in(&mut gpu, (&data, &test), cfg, (dir, resumed), self.profile, progress, started)
    }
}

/// What a training run reads: the data and the test set, checked, and the GPU with the run's
/// kernels compiled.
pub struct Inputs {
    pub data: Dataset,
    pub test: Dataset,
    pub gpu: GpuBackend,
}

impl Inputs {
    /// Reads and checks both files while the GPU compiles the kernels of `cfg`'s run on a
    /// warm-up step (seconds on a first run through a CPU driver).
    pub fn open(
        cfg: &TrainConfig,
        (data, limit): (&std::path::Path, Option<usize>),
        (test, test_limit): (&std::path::Path, Option<usize>),
        progress: &mut dyn Progress,
    ) -> Result<Self> {
        let (loaded, test_set, gpu) = std::thread::scope(|s| {
            let gpu = s.spawn(|| {
                let mut gpu = GpuBackend::new()?;
                run::check_batch_fits(&gpu, cfg)?;
                train::warm_up(&mut gpu, cfg);
                // A kernel a new backend refuses fails here, not after an epoch.
                match gpu.take_error() {
                    Some(e) => Err(e),
                    None => Ok(gpu),
                }
            });
            let test_set = s.spawn(|| Dataset::load_first(test, test_limit));
            let loaded = Dataset::load_first(data, limit);
            let test_set = joined(test_set);
            if loaded.is_ok() && test_set.is_ok() && !gpu.is_finished() {
                progress.line(
                    "waiting for the GPU kernels to compile (slow only on a driver's first run: it caches them) ...",
                );
            }
            (loaded, test_set, joined(gpu))
        });
        let loaded = loaded?;
        if loaded.len() < 4 {
            let message = format!("{} images; training needs at least 4", loaded.len());
            return Err(Error::input(data, "whole file", message));
        }
        train::check_splits(cfg, &loaded)?;
        let test_set = test_set?;
        test_set.check_evaluation()?;
        let gpu: GpuBackend = gpu?;
        gpu.ctx.banner().lines().for_each(|line| progress.line(line));
        Ok(Self { data: loaded, test: test_set, gpu })
    }
}

/// A run in its claimed folder `dir` on inputs already read: a new one, or `resumed` continued
/// to `cfg.epochs`; its files, then the pictures and the test evaluation.
pub fn train_in(
    gpu: &mut GpuBackend,
    (data, test): (&Dataset, &Dataset),
    cfg: TrainConfig,
    (dir, resumed): (RunDir, Option<RunState>),
    profile: bool,
    progress: &mut dyn Progress,
    started: Instant,
) -> Result<TrainDone> {
    let out = dir.path.clone();
    let (mut trainer, mut reports) = match &resumed {
        Some(state) => (Trainer::resume(&mut *gpu, state, data), state.history.clone()),
        None => (Trainer::new(&mut *gpu, cfg.clone(), data), Vec::new()),
    };
    trainer.cfg.epochs = cfg.epochs;
    run::restore_timings(&out, &mut reports);
    progress.line(&format!(
        "data: {} ({} train, {} validation), test: {} ({} images); {} steps of {} pairs per epoch{}",
        data.source.display(),
        trainer.train_rows.len(),
        trainer.val_rows.len(),
        test.source.display(),
        test.len(),
        trainer.steps_per_epoch(),
        cfg.batch_size,
        resumed.as_ref().map_or(String::new(), |s| format!("; resuming after epoch {}", s.epochs_done))
    ));
    if resumed.is_none() {
        run::save_pairs_png(&out.join("pairs.png"), data, &trainer.train_rows, cfg.seed, 8)?;
    }
    if profile && !gpu.enable_profiling() {
        progress.line("this adapter has no timestamp queries: no profile");
    }
    let steps_before = gpu.dispatches;
    let mut first_step = true;
    for epoch in reports.len()..cfg.epochs {
        progress.epoch_start(epoch, cfg.epochs, trainer.steps_per_epoch());
        let report = trainer.epoch(&mut *gpu, epoch, &mut |t, g, step, _| {
            if std::mem::take(&mut first_step) {
                // Start-up, shader compilation included: waits for this one step only.
                g.sync();
                progress.line(&format!("first step done {:.1} s after launch", started.elapsed().as_secs_f64()));
            }
            progress.step(step, &mut || t.step_loss(g, step));
        });
        progress.epoch_end();
        if let Some(e) = gpu.take_error() {
            return Err(e);
        }
        let report = report.map_err(|e| stopped(e, &out, reports.len()))?;
        progress.line(&report.summary(cfg.epochs));
        reports.push(report);
        let state = trainer.run_state(&mut *gpu, &reports, data);
        run::save_epoch(&out, &cfg, &state).map_err(|e| stopped(e, &out, reports.len() - 1))?;
    }
    if reports.is_empty() {
        // No epoch to train (--epochs 0): the initial model and a checkpoint to resume from.
        run::save_epoch(&out, &cfg, &trainer.run_state(&mut *gpu, &reports, data))?;
    }
    if profile {
        let steps = (reports.len() - resumed.as_ref().map_or(0, |s| s.epochs_done)) * trainer.steps_per_epoch();
        let profile = gpu.take_profile();
        gpu.disable_profiling();
        let dispatches = (gpu.dispatches - steps_before) as f64 / steps.max(1) as f64;
        progress.line(&format!("{dispatches:.1} dispatches per step (validation's included)"));
        progress.line(crate::bench::profile_table(&profile, steps.max(1)).trim_end());
    }
    run::save_loss_png(&out, &format!("{}, {}", data.file_name(), run::setting(&cfg, reports.len())), &reports)?;

    progress.line(&format!("a map of the {} validation embeddings ...", trainer.val_rows.len()));
    let val = trainer.embed_rows(&mut *gpu, &trainer.val_rows.clone());
    let what = format!(
        "Validation embeddings of {} ({} images), {}",
        data.file_name(),
        val.len(),
        run::setting(&cfg, reports.len())
    );
    run::save_map(&out, &val, &what, &data.class_names())?;

    progress.line(&format!("evaluating on {} test images ...", test.len()));
    let gallery = trainer.embed_rows(&mut *gpu, &trainer.train_rows.clone());
    let model = trainer.host_model(&mut *gpu);
    let test_emb = train::embed(&mut *gpu, &model, test);
    if let Some(e) = gpu.take_error() {
        return Err(e);
    }
    let metrics = metrics::evaluate(&gallery, &test_emb, cfg.seed);
    let names = data.class_names();
    output::write(&out.join("metrics.json"), metrics.to_json(&names).as_bytes())?;
    let title =
        format!("kNN (k=1) of {} against the training rows; {}", test.describe(), run::setting(&cfg, reports.len()));
    crate::plot::confusion_png(&out.join("confusion.png"), &title, &metrics.confusion, &names)?;
    progress.line(&format!("wrote {} in {:.1} s", out.display(), started.elapsed().as_secs_f64()));
    dir.finish();
    Ok(TrainDone { out, metrics, names })
}

/// A run stopped by `cause` after `epochs` epochs whose checkpoint was written.
fn stopped(cause: Error, out: &std::path::Path, epochs: usize) -> Error {
    let kept = if epochs == 0 {
        "no checkpoint was written".to_string()
    } else {
        format!("{} keeps epoch {epochs}", out.join(run::CHECKPOINT).display())
    };
    Error::Stopped { cause: Box::new(cause), kept }
}

/// A scoped thread's result; its panic, if it panicked.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
