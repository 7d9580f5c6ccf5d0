use siamese::backend::Backend;
use siamese::data::Dataset;
use siamese::gpu::GpuBackend;
use siamese::model::IMAGE_PIXELS;
use siamese::train::{TrainConfig, Trainer, WARM_UP_PAIRS, warm_up};

use crate::util::{gpu_available, rng, uniform};

/// The parameters and Adam moments, as bits, after one epoch of `cfg` on `data` on a new GPU
/// backend, warmed up first or not.
fn trained_bits(data: &Dataset, cfg: &TrainConfig, warm: bool) -> Vec<u32> {
    let mut gpu = GpuBackend::new().expect("an adapter");
    if warm {
        warm_up(&mut gpu, cfg);
    }
    let mut trainer = Trainer::new(&mut gpu, cfg.clone(), data);
    trainer.train_epoch(&mut gpu, 0, &mut |_, _, _, _| {}).expect("training runs");
    if let Some(e) = gpu.take_error() {
        panic!("{e}");
    }
    [&trainer.weights.params, &trainer.adam.m, &trainer.adam.v]
        .into_iter()
        .flat_map(|t| gpu.read(t))
        .map(f32::to_bits)
        .collect()
}

/// `n` images of random pixels, labels cycling through the ten classes.
fn random_data(n: usize, seed: u64) -> Dataset {
    let mut r = rng(seed);
    Dataset {
        images: uniform(&mut r, n * IMAGE_PIXELS, 0.0, 256.0).into_iter().map(|v| v as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        source: "random".into(),
    }
}

/// `train` compiles its kernels on the side by running a step on blank images first; the run
/// that follows must not be able to tell (same scratch buffers, same backend).
#[test]
fn warm_up_leaves_no_trace() {
    if !gpu_available("warm_up_leaves_no_trace") {
        return;
    }
    let data = random_data(96, 7);
    // The warm-up's own batch size: the run then reuses the very scratch buffers it left.
    let cfg = TrainConfig { batch_size: WARM_UP_PAIRS, ..TrainConfig::default() };
    let cold = trained_bits(&data, &cfg, false);
    let warm = trained_bits(&data, &cfg, true);
    let differ = cold.iter().zip(&warm).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {} values differ after a warm-up", cold.len());
}

/// The "no allocation per step": once a first step has made its scratch, uniforms and
/// bind groups, later steps (each writing its loss to its own slot, Adam with its own step's
/// scalars) reuse them all.
#[test]
fn training_steps_after_the_first_make_no_buffers_or_bind_groups() {
    if !gpu_available("training_steps_after_the_first_make_no_buffers_or_bind_groups") {
        return;
    }
    let data = random_data(600, 12);
    let cfg = TrainConfig { batch_size: 32, ..TrainConfig::default() };
    let mut gpu = GpuBackend::new().expect("an adapter");
    let mut trainer = Trainer::new(&mut gpu, cfg, &data);
    let pairs = trainer.bench_pairs(8);
    let mut batches = pairs.chunks(32).enumerate();
    for (slot, batch) in batches.by_ref().take(2) {
        trainer.step(&mut gpu, batch, slot);
    }
    trainer.step_loss(&mut gpu, 1);
    let (made, dispatches) = (gpu.allocations, gpu.dispatches);
    for (slot, batch) in batches {
        trainer.step(&mut gpu, batch, slot);
    }
    assert!(trainer.step_loss(&mut gpu, 7).is_finite());
    assert!(gpu.dispatches >= dispatches + 6 * 20, "the steps ran");
    assert_eq!(gpu.allocations, made, "buffers and bind groups made by steps 3 to 8");
}

/// The warm-up must build every pipeline a run uses, whatever its batch size (kernels are
/// chosen by layer shape; towers of any size, 37 images say, fill lane groups of 8 with a
/// partly empty last one), or the first real step compiles the rest: training steps and an
/// eval-mode pass build none after it.
#[test]
fn warm_up_builds_every_pipeline_a_run_uses() {
    if !gpu_available("warm_up_builds_every_pipeline_a_run_uses") {
        return;
    }
    let data = random_data(600, 11);
    for batch_size in [128, 100, 37] {
        let cfg = TrainConfig { batch_size, ..TrainConfig::default() };
        let mut gpu = GpuBackend::new().expect("an adapter");
        warm_up(&mut gpu, &cfg);
        let built = gpu.pipelines_built();
        let mut trainer = Trainer::new(&mut gpu, cfg, &data);
        let pairs = trainer.bench_pairs(2);
        for (slot, batch) in pairs.chunks(batch_size).enumerate() {
            trainer.step(&mut gpu, batch, slot);
        }
        let rows = trainer.train_rows[..2 * batch_size].to_vec();
        trainer.embed_rows(&mut gpu, &rows);
        if let Some(e) = gpu.take_error() {
            panic!("{e}");
        }
        assert_eq!(gpu.pipelines_built(), built, "pipelines built after the warm-up, batches of {batch_size}");
    }
}

/// The warm-up has a second device compile the step's kernels ahead (src/gpu/llvmpipe/compile_ahead.rs)
/// by running each once on placeholder buffers with zeroed parameters: every kernel of a
/// training step and of evaluation must accept that, or the first device compiles alone.
#[test]
fn every_kernel_of_a_run_runs_on_placeholders() {
    if !gpu_available("every_kernel_of_a_run_runs_on_placeholders") {
        return;
    }
    // With the subgroup convs and without them (the kernels of adapters that lack them).
    for subgroups in [true, false] {
        let mut gpu = GpuBackend::new().expect("an adapter");
        gpu.driver = gpu.driver.filter(|_| subgroups);
        warm_up(&mut gpu, &TrainConfig::default());
        let kernels = gpu.kernels_built().to_vec();
        assert!(kernels.len() >= 25, "the warm-up built {} pipelines", kernels.len());
        let mut second = GpuBackend::new().expect("an adapter");
        for (kernel, spec) in &kernels {
            if let Err(e) = second.compile_kernel(*kernel, spec) {
                panic!("{kernel:?} {spec:?} on placeholders (subgroup convs: {subgroups}): {e}");
            }
        }
        assert_eq!(second.kernels_built(), kernels, "the same pipelines, in the same order");
    }
}
