//! The `siamese` command line: parses flags and calls the library. Any error is one line on
//! stderr naming the file and place (or the flag) and exit code 2; inputs are checked before
//! anything is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

mod terminal;
use terminal::{Terminal, out, out_path};

use siamese::checkpoint::HostModel;
use siamese::data::Dataset;
use siamese::error::Error;
use siamese::gpu::{self, GpuBackend, GpuContext};
use siamese::inspect::{self, Trained};
use siamese::job::TrainJob;
use siamese::output;
use siamese::train::{TrainConfig, Trainer};
use siamese::{run, train};

const DEFAULT_TRAIN: &str = "data/fashion-mnist/train.csv.gz";
const DEFAULT_TEST: &str = "data/fashion-mnist/test.csv.gz";

#[derive(Parser)]
#[command(
    name = "siamese",
    version,
    about = "Train a Siamese CNN with the contrastive loss on Fashion-MNIST, on any GPU through WGSL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the tutorial's network and write the model, metrics and pictures to --out.
    Train(TrainArgs),
    /// Evaluate a model on a test set: kNN, retrieval and pair verification metrics.
    Eval(EvalArgs),
    /// Write the embedding of every image: a CSV with `label,e0,…`.
    Embed(EmbedArgs),
    /// Draw sample pairs of a dataset as the tutorial does; with --model, each pair's distance
    /// and the model's verdict.
    Pairs(PairsArgs),
    /// Draw a 2-D map of a model's embeddings of a dataset: by t-SNE, or as they are for a
    /// 2-D model.
    Tsne(TsneArgs),
    /// Draw each query image beside its nearest gallery images, with their distances (and a CSV).
    Neighbours(NeighboursArgs),
    /// Train a grid of settings (--z, --margin) one after another and compare them.
    Sweep(SweepArgs),
    /// Time training steps of the default configuration: ms/step, pairs/s, dispatches per
    /// step and a per-kernel table from GPU timestamps.
    Bench(BenchArgs),
    /// List the GPU adapters, the one that would be used, and the limits that matter.
    Info,
    /// Write every kernel a training run builds, as the device receives it (override
    /// constants resolved), for offline compilers; INDEX.md says what each file is.
    Kernels(KernelsArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = DEFAULT_TRAIN)]
    data: PathBuf,
    /// Timed steps (after the warm-up).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    steps: u32,
    /// Untimed steps first (pipeline compilation, first allocations; on a CPU driver the
    /// first 20 or so steps still ran up to 1.5× slower than later ones).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    warmup: u32,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Also time each launch apart: every kernel with its specialisation (`override` values,
    /// or a generated conv kernel's IC, OC, H, W, K and pass).
    #[arg(long)]
    launches: bool,
    /// Also time the compilation of each kernel a step uses, on a device of its own (with
    /// MESA_SHADER_CACHE_DISABLE=true on Mesa's drivers, or its cache answers instead).
    #[arg(long)]
    compile: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Training data: Kaggle CSV (.csv or .csv.gz) or IDX images file or directory.
    #[arg(long, default_value = DEFAULT_TRAIN)]
    data: PathBuf,
    /// Test data for the final evaluation (same formats).
    #[arg(long, default_value = DEFAULT_TEST)]
    test: PathBuf,
    /// Output directory [default: runs/<date-time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory (from its checkpoint.safetensors) up to --epochs.
    #[arg(long, conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Epochs to train [default: 10; when resuming, the checkpoint's].
    #[arg(long)]
    epochs: Option<usize>,
    /// Pairs per batch [default: 128].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Adam's learning rate [default: 0.001].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Embedding width [default: 8].
    #[arg(long)]
    z_dim: Option<usize>,
    /// Contrastive-loss margin [default: 2].
    #[arg(long, allow_negative_numbers = true)]
    margin: Option<f32>,
    /// Drives the split, the pairs and the initialisation [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Share of the training data held out for validation [default: 0.05].
    #[arg(long, allow_negative_numbers = true)]
    val_fraction: Option<f64>,
    /// Train on the first N rows only (quick runs).
    #[arg(long)]
    limit: Option<usize>,
    /// Also cut the test set to its first N rows (quick runs).
    #[arg(long)]
    test_limit: Option<usize>,
    /// Print a per-kernel GPU profile of the training steps at the end.
    #[arg(long)]
    profile: bool,
}

impl TrainArgs {
    /// The settings of a new run: the flags over the tutorial's defaults.
    fn config(&self) -> TrainConfig {
        let d = TrainConfig::default();
        TrainConfig {
            z: self.z_dim.unwrap_or(d.z),
            margin: self.margin.unwrap_or(d.margin),
            lr: self.lr.unwrap_or(d.lr),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            epochs: self.epochs.unwrap_or(d.epochs),
            seed: self.seed.unwrap_or(d.seed),
            val_fraction: self.val_fraction.unwrap_or(d.val_fraction),
        }
    }

    /// A resumed run keeps its checkpoint's settings; only --epochs may extend it.
    fn refuse_changes(&self) -> anyhow::Result<()> {
        let given = [
            ("--batch-size", self.batch_size.is_some()),
            ("--lr", self.lr.is_some()),
            ("--z-dim", self.z_dim.is_some()),
            ("--margin", self.margin.is_some()),
            ("--seed", self.seed.is_some()),
            ("--val-fraction", self.val_fraction.is_some()),
        ];
        match given.iter().find(|g| g.1) {
            Some((flag, _)) => Err(Error::config(*flag, "a resumed run keeps its checkpoint's settings").into()),
            None => Ok(()),
        }
    }
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// The test set (queries and verification pairs).
    #[arg(long, default_value = DEFAULT_TEST)]
    data: PathBuf,
    /// The gallery for kNN [default: the training split of the training data, as train's
    /// evaluation].
    #[arg(long)]
    gallery: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Seed of the verification pairs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct EmbedArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct PairsArgs {
    #[arg(long, default_value = DEFAULT_TRAIN)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// How many pairs to draw.
    #[arg(long, default_value_t = 8)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A trained model: show its distance for each pair and its verdict.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The verdict's threshold: "same" below it [default: the run's best, from metrics.json].
    #[arg(long, requires = "model", allow_negative_numbers = true)]
    threshold: Option<f32>,
}

#[derive(Args)]
struct NeighboursArgs {
    #[arg(long)]
    model: PathBuf,
    /// Where the queries come from.
    #[arg(long, default_value = DEFAULT_TEST)]
    data: PathBuf,
    /// Where the neighbours come from [default: --data itself, each query left out].
    #[arg(long)]
    gallery: Option<PathBuf>,
    /// Rows of --data, as 0,17,230, or random:N to draw N with --seed.
    #[arg(long, default_value = "random:8")]
    query: siamese::inspect::Queries,
    /// Neighbours per query.
    #[arg(long, default_value_t = 8)]
    k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The picture; the CSV goes beside it (.csv).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct KernelsArgs {
    /// The folder to write the modules into.
    #[arg(long)]
    emit: PathBuf,
    /// The kernel set (auto, portable or a driver's) [default: SIAMESE_KERNELS, else auto].
    #[arg(long)]
    set: Option<String>,
}

#[derive(Args)]
struct SweepArgs {
    /// Embedding widths, as 2,4,8,16.
    #[arg(long, value_delimiter = ',', default_value = "2,8")]
    z: Vec<usize>,
    /// Contrastive margins, as 1,2,4.
    #[arg(long, value_delimiter = ',', default_value = "2", allow_negative_numbers = true)]
    margin: Vec<f32>,
    /// fixed: each margin as given; sqrt: each margin is the one at z = 8, scaled by √(z/8).
    #[arg(long, value_enum, default_value = "fixed")]
    margin_scale: siamese::sweep::MarginScale,
    /// The sweep's folder (each setting in a subfolder); run again to finish a stopped sweep.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value = DEFAULT_TRAIN)]
    data: PathBuf,
    #[arg(long, default_value = DEFAULT_TEST)]
    test: PathBuf,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    test_limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct TsneArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Use the first N images only (t-SNE grows faster than linearly).
    #[arg(long, default_value_t = 3000)]
    limit: usize,
    /// t-SNE even for a 2-D model (whose embedding is otherwise drawn as it is).
    #[arg(long)]
    tsne: bool,
}

fn main() -> ExitCode {
    // SIGINT and SIGTERM: no temporary file left behind, the usual exit code of a signal.
    let _ = ctrlc::set_handler(|| {
        siamese::output::remove_temp_files();
        std::process::exit(130);
    });
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Embed(a) => run_embed(a),
        Command::Pairs(a) => run_pairs(a),
        Command::Tsne(a) => run_tsne(a),
        Command::Neighbours(a) => run_neighbours(a),
        Command::Sweep(a) => run_sweep(a),
        Command::Bench(a) => run_bench(a),
        Command::Info => info(),
        Command::Kernels(a) => run_kernels(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(path: &Path, limit: Option<usize>) -> anyhow::Result<Dataset> {
    Ok(Dataset::load_first(path, limit)?)
}

fn gpu_backend() -> anyhow::Result<GpuBackend> {
    let gpu = GpuBackend::new()?;
    eprintln!("{}", gpu.ctx.banner());
    Ok(gpu)
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    if a.resume.is_some() {
        a.refuse_changes()?;
    }
    let job = TrainJob {
        config: a.resume.is_none().then(|| a.config()),
        resume: a.resume,
        epochs: a.epochs,
        data: a.data,
        test: a.test,
        limit: a.limit,
        test_limit: a.test_limit,
        out: a.out,
        profile: a.profile,
    };
    let done = job.run(&mut Terminal::default())?;
    out(&(done.metrics.table() + &done.metrics.per_class_table(&done.names)))?;
    out_path(&done.out)
}

fn run_eval(a: EvalArgs) -> anyhow::Result<()> {
    let trained = Trained::load(&a.model)?;
    let test = load(&a.data, None)?;
    let gallery = load(a.gallery.as_deref().unwrap_or(Path::new(DEFAULT_TRAIN)), None)?;
    let mut gpu = gpu_backend()?;
    let (m, words) = inspect::evaluate(&mut gpu, &trained, &test, (&gallery, a.gallery.is_some()), a.seed)?;
    eprintln!("gallery: {words}");
    let names = test.class_names();
    out(&if a.json { m.to_json(&names) } else { m.table() + &m.per_class_table(&names) })
}

fn run_embed(a: EmbedArgs) -> anyhow::Result<()> {
    let (model, _) = HostModel::load(&a.model)?;
    let data = load(&a.data, None)?;
    let mut gpu = gpu_backend()?;
    let emb = train::embed(&mut gpu, &model, &data);
    let header: Vec<String> = std::iter::once("label".to_string()).chain((0..emb.z).map(|k| format!("e{k}"))).collect();
    let mut csv = header.join(",") + "\n";
    for i in 0..emb.len() {
        let row: Vec<String> = emb.row(i).iter().map(|v| v.to_string()).collect();
        csv.push_str(&format!("{},{}\n", emb.labels[i], row.join(",")));
    }
    output::write(&a.out, csv.as_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("wrote {} embeddings of width {} to {}", emb.len(), emb.z, a.out.display());
    Ok(())
}

fn run_pairs(a: PairsArgs) -> anyhow::Result<()> {
    if a.count == 0 || a.count > 64 {
        return Err(Error::config("--count", format!("{} is not in 1..=64", a.count)).into());
    }
    let trained = a.model.as_deref().map(Trained::load).transpose()?;
    let data = load(&a.data, None)?;
    data.check_pairs(None, "the images", "")?;
    match trained {
        Some(trained) => {
            let mut gpu = gpu_backend()?;
            inspect::pairs(&mut gpu, &trained, &data, (a.count, a.seed, a.threshold), &a.out)?;
        }
        None => {
            let rows: Vec<u32> = (0..data.len() as u32).collect();
            run::save_pairs_png(&a.out, &data, &rows, a.seed, a.count)?;
        }
    }
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn run_tsne(a: TsneArgs) -> anyhow::Result<()> {
    if a.limit == 0 {
        return Err(Error::config("--limit", "0 images leave nothing to plot").into());
    }
    let trained = Trained::load(&a.model)?;
    let data = load(&a.data, Some(a.limit))?;
    let mut gpu = gpu_backend()?;
    inspect::map(&mut gpu, &trained, &data, &a.out, a.tsne)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn run_sweep(a: SweepArgs) -> anyhow::Result<()> {
    if a.limit == Some(0) || a.test_limit == Some(0) {
        return Err(Error::config("--limit", "0 rows leaves nothing to train on").into());
    }
    let sweep = siamese::sweep::Sweep {
        base: TrainConfig { epochs: a.epochs, seed: a.seed, ..TrainConfig::default() },
        zs: a.z,
        margins: a.margin,
        scale: a.margin_scale,
        data: (a.data, a.limit),
        test: (a.test, a.test_limit),
        out: a.out,
    };
    let out_dir = sweep.run(&mut Terminal::default())?;
    out(&std::fs::read_to_string(out_dir.join("sweep.md")).unwrap_or_default())?;
    out_path(&out_dir)
}

fn run_kernels(a: KernelsArgs) -> anyhow::Result<()> {
    let mut gpu = GpuBackend::with_context(GpuContext::with_kernels(a.set.as_deref())?);
    eprintln!("{}", gpu.ctx.adapter_line());
    train::warm_up(&mut gpu, &TrainConfig::default());
    let n = gpu.emit(&a.emit)?;
    eprintln!("wrote {n} modules and INDEX.md to {}", a.emit.display());
    Ok(())
}

fn run_neighbours(a: NeighboursArgs) -> anyhow::Result<()> {
    let trained = Trained::load(&a.model)?;
    let data = load(&a.data, None)?;
    let gallery = a.gallery.as_deref().map(|g| load(g, None)).transpose()?;
    let mut gpu = gpu_backend()?;
    let job = inspect::Neighbours { data: &data, gallery: gallery.as_ref(), queries: a.query, k: a.k, seed: a.seed };
    inspect::neighbours(&mut gpu, &trained, &job, &a.out)?;
    eprintln!("wrote {} and {}", a.out.display(), a.out.with_extension("csv").display());
    Ok(())
}

fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    let cfg = TrainConfig { batch_size: a.batch_size, ..TrainConfig::default() };
    cfg.validate()?;
    let (warmup, steps) = (a.warmup as usize, a.steps as usize);
    let rows_needed = (warmup + steps + 1).saturating_mul(a.batch_size).saturating_mul(2);
    let data = load(&a.data, Some(rows_needed))?;
    train::check_splits(&cfg, &data)?;
    let mut gpu = gpu_backend()?;
    let mut trainer = Trainer::new(&mut gpu, cfg, &data);
    let report = siamese::bench::bench_steps(&mut gpu, &mut trainer, warmup, steps, a.launches);
    out(&report)?;
    if a.compile {
        out(&siamese::bench::compile_table(gpu.kernels_built())?)?;
    }
    Ok(())
}

fn info() -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::new();
    let all = gpu::adapters();
    writeln!(text, "adapters (best first):")?;
    if all.is_empty() {
        writeln!(text, "  none")?;
    }
    for a in &all {
        let s = gpu::AdapterSummary::of(a);
        writeln!(text, "  {}  driver: {}", s.describe(), s.driver)?;
    }
    let ctx = GpuContext::new()?;
    let a = &ctx.adapter;
    writeln!(text, "chosen: {}", a.describe())?;
    writeln!(text, "  max storage buffer binding: {} MiB", a.max_storage_binding >> 20)?;
    writeln!(text, "  max workgroups per dimension: {}", a.max_workgroups_per_dim)?;
    writeln!(text, "  timestamp queries: {}", if ctx.timestamps { "yes (per-kernel profiles)" } else { "no" })?;
    let (fewest, most) = a.subgroup_sizes;
    writeln!(text, "  subgroup lanes: {}", if most == 0 { "none".to_string() } else { format!("{fewest}–{most}") })?;
    writeln!(text, "  kernels: {} (SIAMESE_KERNELS={} chooses)", ctx.kernels(), gpu::kernel_set_choices())?;
    writeln!(text, "  choose another with WGPU_BACKEND=vulkan|metal|dx12|gl and WGPU_ADAPTER_NAME=<part of its name>")?;
    out(&text)
}
