//! `sweep`: a grid of settings (embedding width z × contrastive margin) trained one after
//! another on one device, on the same split and pairs, each in a subfolder of its own; then
//! compared in sweep.csv, sweep.md and sweep.png. A stopped sweep, run again with the same
//! --out, skips the settings it finished and resumes the one it was training.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::job::{Inputs, Progress, train_in};
use crate::run::{self, RunDir, RunState};
use crate::train::TrainConfig;
use crate::{output, plot};

/// How each setting's margin follows from a --margin value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MarginScale {
    /// The value itself, at every z.
    Fixed,
    /// The value at z = 8 (the tutorial's), times √(z / 8) elsewhere.
    Sqrt,
}

/// The z at which a `Sqrt` margin is the value given.
const SQRT_REFERENCE_Z: f32 = 8.0;

pub struct Sweep {
    /// The settings every run shares (epochs, seed, learning rate, batch, validation share).
    pub base: TrainConfig,
    pub zs: Vec<usize>,
    pub margins: Vec<f32>,
    pub scale: MarginScale,
    pub data: (PathBuf, Option<usize>),
    pub test: (PathBuf, Option<usize>),
    pub out: PathBuf,
}

/// One setting's results, as sweep.csv has them.
struct Row {
    z: usize,
    margin: f32,
    base_margin: f32,
    epochs: usize,
    train_loss: f64,
    val_loss: f64,
    knn_k1: f64,
    auc: f64,
    dist_same: f64,
    dist_diff: f64,
    seconds: f64,
}

impl Sweep {
    /// The settings in order: z major, then margin; each with its --margin value.
    fn settings(&self) -> Vec<(TrainConfig, f32)> {
        let mut all = Vec::new();
        for &z in &self.zs {
            for &m in &self.margins {
                let margin = match self.scale {
                    MarginScale::Fixed => m,
                    MarginScale::Sqrt => m * (z as f32 / SQRT_REFERENCE_Z).sqrt(),
                };
                all.push((TrainConfig { z, margin, ..self.base.clone() }, m));
            }
        }
        all
    }

    fn folder(&self, cfg: &TrainConfig) -> PathBuf {
        self.out.join(format!("z{}-m{}", cfg.z, cfg.margin))
    }

    pub fn run(&self, progress: &mut dyn Progress) -> Result<PathBuf> {
        let settings = self.settings();
        if settings.is_empty() || settings.len() > 64 {
            return Err(Error::config("--z", format!("{} settings; a sweep takes 1 to 64", settings.len())));
        }
        for (cfg, _) in &settings {
            cfg.validate()?;
        }
        let mut folders: Vec<PathBuf> = settings.iter().map(|(c, _)| self.folder(c)).collect();
        folders.dedup();
        if folders.len() != settings.len() {
            return Err(Error::config("--margin", "two settings give the same z and margin"));
        }
        let _claim = RunDir::existing_or_new(&self.out, "--out")?;
        let (first, _) = &settings[0];
        let widest = settings.iter().map(|(c, _)| c.clone()).max_by_key(|c| c.z).expect("one setting at least");
        let Inputs { data, test, mut gpu } =
            Inputs::open(first, (&self.data.0, self.data.1), (&self.test.0, self.test.1), progress)?;
        run::check_batch_fits(&gpu, &widest)?;
        let started = Instant::now();
        for (i, (cfg, _)) in settings.iter().enumerate() {
            let folder = self.folder(cfg);
            let head = format!("sweep {}/{}: {}", i + 1, settings.len(), run::setting(cfg, cfg.epochs));
            if folder.join("metrics.json").exists() {
                progress.line(&format!("{head}: done before, kept"));
                continue;
            }
            let resumed = match folder.join(run::CHECKPOINT).exists() {
                true => Some(RunState::load(&folder.join(run::CHECKPOINT))?),
                false => None,
            };
            if let Some(state) = &resumed {
                state.check_continues(&data, cfg)?;
            }
            let dir = match &resumed {
                Some(_) => RunDir::existing(&folder, "--out")?,
                None => RunDir::new_run(Some(folder.clone()))?,
            };
            progress.line(&format!("{head} ..."));
            let done =
                train_in(&mut gpu, (&data, &test), cfg.clone(), (dir, resumed), false, progress, Instant::now())?;
            progress.line(&format!(
                "{head}: kNN@1 {:.4}, pair AUC {:.4} ({:.0} s into the sweep)",
                done.metrics.knn_k1,
                done.metrics.pair.auc,
                started.elapsed().as_secs_f64()
            ));
        }
        let rows: Vec<Row> = settings.iter().map(|(cfg, m)| self.read_row(cfg, *m)).collect::<Result<_>>()?;
        output::write(&self.out.join("sweep.csv"), csv(&rows).as_bytes())?;
        output::write(&self.out.join("sweep.md"), markdown(&rows, self.scale).as_bytes())?;
        self.picture(&settings, &rows, &data.class_names(), &data.file_name())?;
        Ok(self.out.clone())
    }

    /// A finished setting's results, from the files of its folder.
    fn read_row(&self, cfg: &TrainConfig, base_margin: f32) -> Result<Row> {
        let folder = self.folder(cfg);
        let path = folder.join("metrics.json");
        let json = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| Error::input(&path, "whole file", e.to_string()))?;
        let get = |key: &str| value.get(key).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
        let path = folder.join("metrics.csv");
        let history = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let epochs: Vec<_> = history.lines().skip(1).filter_map(crate::train::EpochReport::parse_csv_row).collect();
        let last = epochs.last();
        Ok(Row {
            z: cfg.z,
            margin: cfg.margin,
            base_margin,
            epochs: epochs.len(),
            train_loss: last.map_or(f64::NAN, |r| r.train_loss),
            val_loss: last.map_or(f64::NAN, |r| r.val_loss),
            knn_k1: get("knn_k1"),
            auc: get("pair_auc"),
            dist_same: get("mean_dist_same"),
            dist_diff: get("mean_dist_diff"),
            seconds: epochs.iter().map(|r| r.train_seconds).sum(),
        })
    }

    /// sweep.png: each setting's validation embeddings (as they are for z = 2, by t-SNE
    /// otherwise), z down the rows and margins across (z across, for one margin).
    fn picture(&self, settings: &[(TrainConfig, f32)], rows: &[Row], names: &[String], data: &str) -> Result<()> {
        let mut panels = Vec::new();
        for ((cfg, _), row) in settings.iter().zip(rows) {
            let folder = self.folder(cfg);
            let (stem, axes) = if folder.join("embedding.csv").exists() {
                ("embedding", ("e0", "e1"))
            } else {
                ("tsne", ("t-SNE 1", "t-SNE 2"))
            };
            let path = folder.join(format!("{stem}.csv"));
            let (points, labels) = read_map(&path)?;
            let title = format!("{}: kNN@1 {:.3}", run::setting(cfg, row.epochs), row.knn_k1);
            panels.push(plot::Panel { title, axes: (axes.0.into(), axes.1.into()), points, labels });
        }
        let scale = match self.scale {
            MarginScale::Fixed => "margins as given",
            MarginScale::Sqrt => "margins scaled by √(z/8)",
        };
        let title = format!("Validation embeddings of {data} by setting; {scale}; z=2 as it is, others by t-SNE");
        let columns = if self.margins.len() > 1 { self.margins.len() } else { self.zs.len() };
        plot::panels_png(&self.out.join("sweep.png"), &title, &panels, columns, names)
    }
}

/// The points and labels of a map CSV (x, y, label, class) the runs write.
type Points = (Vec<(f32, f32)>, Vec<u8>);

fn read_map(path: &Path) -> Result<Points> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut points = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let parsed = (
            f.first().and_then(|v| v.parse().ok()),
            f.get(1).and_then(|v| v.parse().ok()),
            f.get(2).and_then(|v| v.parse().ok()),
        );
        let (Some(x), Some(y), Some(l)) = parsed else {
            return Err(Error::input(path, format!("line {}", i + 1), "not x,y,label,class"));
        };
        points.push((x, y));
        labels.push(l);
    }
    Ok((points, labels))
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "z,margin,margin_given,epochs,train_loss,val_loss,knn_k1,pair_auc,mean_dist_same,mean_dist_diff,train_seconds\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{:.4},{:.4},{:.4},{:.4},{:.1}\n",
            r.z,
            r.margin,
            r.base_margin,
            r.epochs,
            r.train_loss,
            r.val_loss,
            r.knn_k1,
            r.auc,
            r.dist_same,
            r.dist_diff,
            r.seconds
        ));
    }
    out
}

fn markdown(rows: &[Row], scale: MarginScale) -> String {
    let mut out = String::from(
        "| z | margin | epochs | train loss | val loss | kNN@1 | pair AUC | mean dist same / diff | training s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let margin = match scale {
            MarginScale::Fixed => format!("{}", r.margin),
            MarginScale::Sqrt => format!("{:.3} ({} × √(z/8))", r.margin, r.base_margin),
        };
        out.push_str(&format!(
            "| {} | {margin} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} / {:.3} | {:.0} |\n",
            r.z, r.epochs, r.train_loss, r.val_loss, r.knn_k1, r.auc, r.dist_same, r.dist_diff, r.seconds
        ));
    }
    out
}
