use siamese::backend::Backend;
use siamese::data::Dataset;
use siamese::gpu::GpuBackend;
use siamese::model::IMAGE_PIXELS;
use siamese::train::{TrainConfig, Trainer, WARM_UP_BATCH, warm_up};

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

/// `train` compiles its kernels on the side by running a step on blank images first; the run
/// that follows must not be able to tell (same scratch buffers, same backend).
#[test]
fn warm_up_leaves_no_trace() {
    if !gpu_available("warm_up_leaves_no_trace") {
        return;
    }
    let n = 96;
    let mut r = rng(7);
    let data = Dataset {
        images: uniform(&mut r, n * IMAGE_PIXELS, 0.0, 256.0).into_iter().map(|v| v as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        source: "random".into(),
    };
    // The warm-up's own batch size: the run then reuses the very scratch buffers it left.
    let cfg = TrainConfig { batch_size: WARM_UP_BATCH, ..TrainConfig::default() };
    let cold = trained_bits(&data, &cfg, false);
    let warm = trained_bits(&data, &cfg, true);
    let differ = cold.iter().zip(&warm).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {} values differ after a warm-up", cold.len());
}
