//! Kernel benchmarks: one criterion group per op at the training shapes (256 images: both towers
//! of a 128-pair batch), forward and backward, GPU beside the CPU reference.
//!
//! GPU time comes from timestamp queries around each dispatch where the adapter has them (it
//! excludes the submit and the wait), wall time otherwise. Throughput is FLOPs for compute-bound
//! kernels (criterion's "elem/s" then reads as FLOP/s) and bytes moved for the others.
//!
//! `cargo bench --bench kernels`; one op: `cargo bench --bench kernels -- conv2d`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use siamese::backend::{Backend, Conv, Norm, NormGrads, ParamGrads, Running};
use siamese::cpu;
use siamese::fused::{BatchNormConv2dBackward, Fused};
use siamese::gpu::{GpuBackend, GpuTensor};
use siamese::ops::*;

/// Both towers of a 128-pair batch.
const N: usize = 256;

/// A train-mode BatchNorm forward on the GPU: statistics, then the normalisation.
fn bn_train(
    g: &mut GpuBackend,
    p: &BatchNormParams,
    (x, gamma, beta): (&T, &T, &T),
    (y, saved): (&T, &T),
    (mean, var): (&T, &T),
) {
    g.batchnorm_statistics(p, x, None, saved, Running { mean, var });
    g.batchnorm_normalise(&Norm { p: *p, gamma, beta, saved }, x, y);
}

/// The same on the CPU reference.
#[allow(clippy::type_complexity)]
fn cpu_bn_train(
    p: &BatchNormParams,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    (y, saved): (&mut [f32], &mut [f32]),
    (mean, var): (&mut [f32], &mut [f32]),
) {
    cpu::batchnorm_statistics(p, x, saved, mean, var);
    cpu::batchnorm_normalise(p, x, gamma, beta, saved, y);
}

fn grads<'a>(dx: &'a mut [f32], dgamma: &'a mut [f32], dbeta: &'a mut [f32]) -> cpu::BatchNormGrads<'a, f32> {
    cpu::BatchNormGrads { dx, dgamma, dbeta }
}

type T = GpuTensor;

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..len).map(|_| r.random_range(-1.0..1.0)).collect()
}

/// Times `iters` runs of `op` on the GPU: GPU timestamps where available, else wall time.
fn time_gpu(gpu: &mut GpuBackend, iters: u64, mut op: impl FnMut(&mut GpuBackend)) -> Duration {
    gpu.sync();
    if gpu.ctx.timestamps {
        gpu.take_profile();
        for _ in 0..iters {
            op(gpu);
        }
        Duration::from_nanos(gpu.take_profile().total_ns() as u64)
    } else {
        let start = Instant::now();
        for _ in 0..iters {
            op(gpu);
        }
        gpu.sync();
        start.elapsed()
    }
}

fn time_cpu(iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    start.elapsed()
}

/// One group: `<name>/gpu` and `<name>/cpu` with the same throughput.
fn bench_pair(
    c: &mut Criterion,
    gpu: &mut GpuBackend,
    name: &str,
    throughput: Throughput,
    mut on_gpu: impl FnMut(&mut GpuBackend),
    mut on_cpu: impl FnMut(),
) {
    let mut group = c.benchmark_group(name);
    group.throughput(throughput);
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("gpu", |b| b.iter_custom(|iters| time_gpu(gpu, iters, &mut on_gpu)));
    group.bench_function("cpu", |b| b.iter_custom(|iters| time_cpu(iters, &mut on_cpu)));
    group.finish();
}

fn up(gpu: &mut GpuBackend, v: &[f32]) -> GpuTensor {
    gpu.upload(v)
}

fn conv2d(c: &mut Criterion, gpu: &mut GpuBackend, c_in: usize, hw: usize, c_out: usize) {
    let p = Conv2dParams::same(N, c_in, hw, hw, c_out, 3).with_towers(2);
    let (x, w, b, dy) = (data(p.x_len(), 1), data(p.w_len(), 2), data(c_out, 3), data(p.y_len(), 4));
    let (gx, gw, gb, gdy) = (up(gpu, &x), up(gpu, &w), up(gpu, &b), up(gpu, &dy));
    let (gy, gdx, gdw, gdb) = (gpu.zeros(p.y_len()), gpu.zeros(p.x_len()), gpu.zeros(p.w_len()), gpu.zeros(c_out));
    let flops = Throughput::Elements(2 * p.macs() as u64);
    let shape = format!("{N}x{c_in}x{hw}x{hw}_to_{c_out}");
    let (mut y, mut dx, mut dw, mut db) =
        (vec![0.0; p.y_len()], vec![0.0; p.x_len()], vec![0.0; p.w_len()], vec![0.0; c_out]);
    bench_pair(
        c,
        gpu,
        &format!("conv2d_forward/{shape}"),
        flops.clone(),
        |g| g.conv2d_forward(&p, &gx, &gw, &gb, &gy),
        || cpu::conv2d_forward(&p, &x, &w, &b, &mut y),
    );
    bench_pair(
        c,
        gpu,
        &format!("conv2d_backward_input/{shape}"),
        flops.clone(),
        |g| g.conv2d_backward_input(&p, &gdy, &gw, &gdx),
        || cpu::conv2d_backward_input(&p, &dy, &w, &mut dx),
    );
    bench_pair(
        c,
        gpu,
        &format!("conv2d_backward_weight/{shape}"),
        flops,
        |g| g.conv2d_backward_weight(&p, &gx, &gdy, ParamGrads { dw: &gdw, db: &gdb }),
        || cpu::conv2d_backward_weight(&p, &x, &dy, &mut dw, &mut db),
    );
}

fn batchnorm(c: &mut Criterion, gpu: &mut GpuBackend) {
    let p = BatchNormParams::new(N, 4, 28 * 28, 2);
    let (x, dy, gamma, beta) = (data(p.len(), 5), data(p.len(), 6), vec![1.0f32; 4], vec![0.0f32; 4]);
    let (gx, gdy, gg, gb) = (up(gpu, &x), up(gpu, &dy), up(gpu, &gamma), up(gpu, &beta));
    let (gy, gsaved, grm, grv) = (gpu.zeros(p.len()), gpu.zeros(p.saved_len()), gpu.zeros(4), gpu.zeros(4));
    let (gdx, gdg, gdb) = (gpu.zeros(p.len()), gpu.zeros(4), gpu.zeros(4));
    let (mut y, mut saved, mut rm, mut rv) = (vec![0.0; p.len()], vec![0.0; p.saved_len()], vec![0.0; 4], vec![1.0; 4]);
    let (mut dx, mut dg, mut db) = (vec![0.0; p.len()], vec![0.0; 4], vec![0.0; 4]);
    let shape = format!("{N}x4x28x28");
    // Statistics read x twice, the normalisation reads it again and writes y.
    let bytes = Throughput::Bytes(4 * 4 * p.len() as u64);
    bench_pair(
        c,
        gpu,
        &format!("batchnorm_forward_train/{shape}"),
        bytes.clone(),
        |g| bn_train(g, &p, (&gx, &gg, &gb), (&gy, &gsaved), (&grm, &grv)),
        || cpu_bn_train(&p, &x, (&gamma, &beta), (&mut y, &mut saved), (&mut rm, &mut rv)),
    );
    // The reduction reads x and dy; the input gradient reads them again and writes dx.
    bench_pair(
        c,
        gpu,
        &format!("batchnorm_backward/{shape}"),
        Throughput::Bytes(4 * 5 * p.len() as u64),
        |g| {
            let norm = Norm { p, gamma: &gg, beta: &gb, saved: &gsaved };
            g.batchnorm_backward(&norm, &gx, &gdy, NormGrads { dx: &gdx, dgamma: &gdg, dbeta: &gdb })
        },
        || cpu::batchnorm_backward(&p, &x, &dy, &gamma, &saved, grads(&mut dx, &mut dg, &mut db)),
    );
}

fn elementwise(c: &mut Criterion, gpu: &mut GpuBackend) {
    let len = N * 4 * 28 * 28;
    let (x, dy) = (data(len, 7), data(len, 8));
    let (gx, gdy, gy, gdx) = (up(gpu, &x), up(gpu, &dy), gpu.zeros(len), gpu.zeros(len));
    let (mut y, mut dx) = (vec![0.0; len], vec![0.0; len]);
    let shape = format!("{N}x4x28x28");
    bench_pair(
        c,
        gpu,
        &format!("relu_forward/{shape}"),
        Throughput::Bytes(8 * len as u64),
        |g| g.relu_forward(&gx, &gy),
        || cpu::relu_forward(&x, &mut y),
    );
    bench_pair(
        c,
        gpu,
        &format!("relu_backward/{shape}"),
        Throughput::Bytes(12 * len as u64),
        |g| g.relu_backward(&gx, &gdy, &gdx, 0),
        || cpu::relu_backward(&x, &dy, &mut dx, 0),
    );

    let pixels: Vec<u8> = data(60_000 * 784, 9).iter().map(|v| ((v + 1.0) * 127.0) as u8).collect();
    let indices: Vec<u32> = (0..N as u32).map(|i| i * 199 % 60_000).collect();
    let images = gpu.upload_images(&pixels, 784);
    let gout = gpu.zeros(N * 784);
    let mut out = vec![0.0f32; N * 784];
    bench_pair(
        c,
        gpu,
        &format!("gather_images/{N}x784_from_60000"),
        Throughput::Bytes(5 * (N * 784) as u64),
        |g| g.gather_images(&images, &indices, &gout),
        || cpu::gather_images(&pixels, 784, &indices, &mut out),
    );
}

fn maxpool(c: &mut Criterion, gpu: &mut GpuBackend) {
    let p = MaxPoolParams::new(N, 4, 28, 28);
    let (x, dy) = (data(p.x_len(), 10), data(p.y_len(), 11));
    let (gx, gdy, gy, gdx) = (up(gpu, &x), up(gpu, &dy), gpu.zeros(p.y_len()), gpu.zeros(p.x_len()));
    let (mut y, mut dx) = (vec![0.0; p.y_len()], vec![0.0; p.x_len()]);
    let shape = format!("{N}x4x28x28");
    bench_pair(
        c,
        gpu,
        &format!("maxpool_forward/{shape}"),
        Throughput::Bytes(4 * (p.x_len() + p.y_len()) as u64),
        |g| g.maxpool_forward(&p, &gx, &gy),
        || cpu::maxpool_forward(&p, &x, &mut y),
    );
    bench_pair(
        c,
        gpu,
        &format!("maxpool_backward/{shape}"),
        Throughput::Bytes(4 * (2 * p.x_len() + p.y_len()) as u64),
        |g| g.maxpool_backward(&p, &gx, &gdy, &gdx),
        || cpu::maxpool_backward(&p, &x, &dy, &mut dx),
    );
}

/// MaxPool(BatchNorm(ReLU(x))) in training, fused (the pool reads x through the normalisation)
/// beside the two ops in turn on the same GPU, and the CPU reference (the two in turn).
fn batchnorm_maxpool(c: &mut Criterion, gpu: &mut GpuBackend) {
    let pb = BatchNormParams::new(N, 4, 28 * 28, 2).with_relu_input(true);
    let pp = MaxPoolParams::new(N, 4, 28, 28);
    let (x, dy, gamma, beta) = (data(pb.len(), 12), data(pp.y_len(), 13), vec![1.0f32; 4], vec![0.0f32; 4]);
    let (gx, gdy, gg, gb) = (up(gpu, &x), up(gpu, &dy), up(gpu, &gamma), up(gpu, &beta));
    let (gsaved, grm, grv) = (gpu.zeros(pb.saved_len()), gpu.zeros(4), gpu.zeros(4));
    let (gnormalised, gy) = (gpu.zeros(pb.len()), gpu.zeros(pp.y_len()));
    let (mut normalised, mut saved, mut rm, mut rv) =
        (vec![0.0; pb.len()], vec![0.0; pb.saved_len()], vec![0.0; 4], vec![1.0; 4]);
    let (mut y, mut dx) = (vec![0.0; pp.y_len()], vec![0.0; pb.len()]);
    let mut group = c.benchmark_group(format!("batchnorm_maxpool_forward/{N}x4x28x28"));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("gpu fused", |b| {
        b.iter_custom(|iters| {
            time_gpu(gpu, iters, |g| {
                g.batchnorm_statistics(&pb, &gx, None, &gsaved, Running { mean: &grm, var: &grv });
                let norm = Norm { p: pb, gamma: &gg, beta: &gb, saved: &gsaved };
                g.fused(Fused::BatchNormMaxPoolForward { norm, pool: pp, x: &gx, y: &gy })
            })
        })
    });
    group.bench_function("gpu apart", |b| {
        b.iter_custom(|iters| {
            time_gpu(gpu, iters, |g| {
                bn_train(g, &pb, (&gx, &gg, &gb), (&gnormalised, &gsaved), (&grm, &grv));
                g.maxpool_forward(&pp, &gnormalised, &gy);
            })
        })
    });
    group.bench_function("cpu", |b| {
        b.iter_custom(|iters| {
            time_cpu(iters, || {
                cpu_bn_train(&pb, &x, (&gamma, &beta), (&mut normalised, &mut saved), (&mut rm, &mut rv));
                cpu::maxpool_forward(&pp, &normalised, &mut y);
            })
        })
    });
    group.finish();
    // Backward through both ops, BatchNorm's included: the fused one never writes BatchNorm's
    // dy; the two ops in turn keep BatchNorm's output from the forward pass.
    let (gdn, gdxb, gdg, gdb) = (gpu.zeros(pb.len()), gpu.zeros(pb.len()), gpu.zeros(4), gpu.zeros(4));
    let (mut dxb, mut dg, mut db) = (vec![0.0; pb.len()], vec![0.0; 4], vec![0.0; 4]);
    let mut group = c.benchmark_group(format!("batchnorm_maxpool_backward/{N}x4x28x28"));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("gpu fused", |b| {
        b.iter_custom(|iters| {
            time_gpu(gpu, iters, |g| {
                let norm = Norm { p: pb, gamma: &gg, beta: &gb, saved: &gsaved };
                let grads = NormGrads { dx: &gdxb, dgamma: &gdg, dbeta: &gdb };
                g.fused(Fused::BatchNormMaxPoolBackward { norm, pool: pp, x: &gx, dy: &gdy, grads })
            })
        })
    });
    group.bench_function("gpu apart", |b| {
        b.iter_custom(|iters| {
            time_gpu(gpu, iters, |g| {
                g.maxpool_backward(&pp, &gnormalised, &gdy, &gdn);
                let norm = Norm { p: pb, gamma: &gg, beta: &gb, saved: &gsaved };
                g.batchnorm_backward(&norm, &gx, &gdn, NormGrads { dx: &gdxb, dgamma: &gdg, dbeta: &gdb });
            })
        })
    });
    group.bench_function("cpu", |b| {
        b.iter_custom(|iters| {
            time_cpu(iters, || {
                cpu::maxpool_backward(&pp, &normalised, &dy, &mut dx);
                cpu::batchnorm_backward(&pb, &x, &dx, &gamma, &saved, grads(&mut dxb, &mut dg, &mut db));
            })
        })
    });
    group.finish();
}

/// Conv2d(BatchNorm(ReLU(x))) in training, fused (the conv reads x through the normalisation)
/// beside the two ops in turn on the same GPU, at the model's second conv (4 → 4 on 28×28).
fn batchnorm_conv2d(c: &mut Criterion, gpu: &mut GpuBackend) {
    let pb = BatchNormParams::new(N, 4, 28 * 28, 2).with_relu_input(true);
    let pc = Conv2dParams::same(N, 4, 28, 28, 4, 3).with_towers(2);
    let (gx, gdy) = (up(gpu, &data(pb.len(), 16)), up(gpu, &data(pc.y_len(), 17)));
    let (gg, gb) = (up(gpu, &[1.0f32; 4]), up(gpu, &[0.0f32; 4]));
    let (gw, gbias) = (up(gpu, &data(pc.w_len(), 18)), up(gpu, &data(4, 19)));
    let (gsaved, grm, grv) = (gpu.zeros(pb.saved_len()), gpu.zeros(4), gpu.zeros(4));
    let (gnormalised, gy) = (gpu.zeros(pb.len()), gpu.zeros(pc.y_len()));
    let mut group = c.benchmark_group(format!("batchnorm_conv2d_forward/{N}x4x28x28"));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("gpu fused", |b| {
        b.iter_custom(|iters| {
            time_gpu(gpu, iters, |g| {
                g.batchnorm_statistics(&pb, &gx, None, &gsaved, Running { mean: &grm, var: &grv });
                let norm = Norm { p: pb, gamma: &gg, beta: &gb, saved: &gsaved };
                let conv = Conv { p: pc, w: &gw, b: &gbias };
                g.fused(Fused::BatchNormConv2dForward { norm, conv, x: &gx, y: &gy, moments: None })
            })
        })
    });
    group.bench_function("gpu apart", |b| {
        b.iter_custom(|iters| {
            time_gpu(gpu, iters, |g| {
                bn_train(g, &pb, (&gx, &gg, &gb), (&gnormalised, &gsaved), (&grm, &grv));
                g.conv2d_forward(&pc, &gnormalised, &gw, &gbias, &gy);
            })
        })
    });
    group.finish();
    // Backward through both ops; the two ops in turn keep BatchNorm's output from the forward.
    let (gdn, gdx, gdg, gdb) = (gpu.zeros(pb.len()), gpu.zeros(pb.len()), gpu.zeros(4), gpu.zeros(4));
    let (gdw, gdbias) = (gpu.zeros(pc.w_len()), gpu.zeros(4));
    let mut group = c.benchmark_group(format!("batchnorm_conv2d_backward/{N}x4x28x28"));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("gpu fused", |b| {
        b.iter_custom(|iters| {
            time_gpu(gpu, iters, |g| {
                g.fused(Fused::BatchNormConv2dBackward(BatchNormConv2dBackward {
                    norm: Norm { p: pb, gamma: &gg, beta: &gb, saved: &gsaved },
                    conv: Conv { p: pc, w: &gw, b: &gbias },
                    x: &gx,
                    dy: &gdy,
                    grads: NormGrads { dx: &gdx, dgamma: &gdg, dbeta: &gdb },
                    conv_grads: ParamGrads { dw: &gdw, db: &gdbias },
                }))
            })
        })
    });
    group.bench_function("gpu apart", |b| {
        b.iter_custom(|iters| {
            time_gpu(gpu, iters, |g| {
                g.conv2d_backward_input(&pc, &gdy, &gw, &gdn);
                g.conv2d_backward_weight(&pc, &gnormalised, &gdy, ParamGrads { dw: &gdw, db: &gdbias });
                let norm = Norm { p: pb, gamma: &gg, beta: &gb, saved: &gsaved };
                g.batchnorm_backward(&norm, &gx, &gdn, NormGrads { dx: &gdx, dgamma: &gdg, dbeta: &gdb });
            })
        })
    });
    group.finish();
}

fn linear_and_loss(c: &mut Criterion, gpu: &mut GpuBackend) {
    let p = LinearParams::new(N, 49, 8).with_towers(2);
    let (x, w, b, dy) = (data(N * 49, 12), data(8 * 49, 13), data(8, 14), data(N * 8, 15));
    let (gx, gw, gb, gdy) = (up(gpu, &x), up(gpu, &w), up(gpu, &b), up(gpu, &dy));
    let (gy, gdx, gdw, gdb) = (gpu.zeros(N * 8), gpu.zeros(N * 49), gpu.zeros(8 * 49), gpu.zeros(8));
    let (mut y, mut dx, mut dw, mut db) = (vec![0.0; N * 8], vec![0.0; N * 49], vec![0.0; 8 * 49], vec![0.0; 8]);
    let flops = Throughput::Elements(2 * (N * 49 * 8) as u64);
    bench_pair(
        c,
        gpu,
        "linear_forward/256x49_to_8",
        flops.clone(),
        |g| g.linear_forward(&p, &gx, &gw, &gb, &gy),
        || cpu::linear_forward(&p, &x, &w, &b, &mut y),
    );
    bench_pair(
        c,
        gpu,
        "linear_backward/256x49_to_8",
        Throughput::Elements(4 * (N * 49 * 8) as u64),
        |g| {
            g.linear_backward(&p, &gx, &gw, &gdy, Some(&gdx), ParamGrads { dw: &gdw, db: &gdb });
        },
        || {
            cpu::linear_backward_input(&p, &x, &dy, &w, &mut dx);
            cpu::linear_backward_weight(&p, &x, &dy, &mut dw, &mut db);
        },
    );

    let (pd, pc) = (PairDistanceParams::new(N / 2, 8), ContrastiveParams::new(N / 2, 2.0));
    let t: Vec<f32> = (0..N / 2).map(|i| (i % 2) as f32).collect();
    let (ge, gt, gd, gl, gone, gdd, gde) =
        (up(gpu, &y), up(gpu, &t), gpu.zeros(N / 2), gpu.zeros(1), up(gpu, &[1.0]), gpu.zeros(N / 2), gpu.zeros(N * 8));
    let (mut d, mut l, mut dd, mut de) = (vec![0.0; N / 2], [0.0f32], vec![0.0; N / 2], vec![0.0; N * 8]);
    bench_pair(
        c,
        gpu,
        "distance_and_loss_forward_backward/128x8",
        Throughput::Bytes(4 * 3 * (N * 8) as u64),
        |g| {
            g.pair_distance_forward(&pd, &ge, &gd);
            g.contrastive_forward(&pc, &gd, &gt, &gl);
            g.contrastive_backward(&pc, &gd, &gt, &gone, &gdd);
            g.pair_distance_backward(&pd, &ge, &gd, &gdd, &gde);
        },
        || {
            cpu::pair_distance_forward(&pd, &y, &mut d);
            cpu::contrastive_forward(&pc, &d, &t, &mut l);
            cpu::contrastive_backward(&pc, &d, &t, &[1.0], &mut dd);
            cpu::pair_distance_backward(&pd, &y, &d, &dd, &mut de);
        },
    );
}

fn adam(c: &mut Criterion, gpu: &mut GpuBackend) {
    // The model's flat parameter buffer: 1,589 parameters padded to 1,664.
    let len = 1664;
    let (p0, g) = (data(len, 16), data(len, 17));
    let (gp, gg, gm, gv) = (up(gpu, &p0), up(gpu, &g), gpu.zeros(len), gpu.zeros(len));
    let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; len], vec![0.0; len]);
    let cfg = AdamConfig::default();
    bench_pair(
        c,
        gpu,
        "adam_step/1664",
        Throughput::Bytes(4 * 7 * len as u64),
        |gpu| gpu.adam_step(&cfg, 1, &gp, &gg, &gm, &gv),
        || cpu::adam_step(&cfg, 1, &mut p, &g, &mut m, &mut v),
    );
}

fn kernels(c: &mut Criterion) {
    let mut gpu = match GpuBackend::new() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("no GPU adapter, no benchmarks: {e}");
            return;
        }
    };
    let timing = if gpu.enable_profiling() { "GPU timestamps" } else { "wall time" };
    eprintln!("adapter: {}; GPU times from {timing}", gpu.ctx.adapter.describe());
    for (c_in, hw, c_out) in [(1, 28, 4), (4, 28, 4), (4, 14, 8), (8, 14, 8), (8, 7, 1)] {
        conv2d(c, &mut gpu, c_in, hw, c_out);
    }
    batchnorm(c, &mut gpu);
    elementwise(c, &mut gpu);
    maxpool(c, &mut gpu);
    batchnorm_maxpool(c, &mut gpu);
    batchnorm_conv2d(c, &mut gpu);
    linear_and_loss(c, &mut gpu);
    adam(c, &mut gpu);
}

criterion_group! {
    name = benches;
    // The tables are the point; criterion's plots would need system fonts (our plotters build
    // bundles its own instead).
    config = Criterion::default().without_plots();
    targets = kernels
}
criterion_main!(benches);
