//! The GPU against the CPU reference: every op, forward and each backward, on seeded random
//! inputs at a tiny shape, shapes that are no multiple of the workgroup size, batch 1, and the
//! training shapes (256 images: both towers of a 128-pair batch). Relative L2 error ≤ 1e-5.
//! Each backward is run once writing and once accumulating into a random gradient.

use siamese::backend::{Backend, Conv, Moments, Norm, NormGrads, ParamGrads, Running};
use siamese::cpu;
use siamese::fused::{
    BatchNormConv2dBackward, Conv2dBatchNormConv2dBackward, Fused, LinearPairContrastiveForward,
    PairContrastiveBackward,
};
use siamese::gpu::llvmpipe::Shape;
use siamese::gpu::{GpuBackend, GpuTensor, conv2d_tiled};
use siamese::ops::*;

use crate::util::*;

const TOL: f64 = 1e-5;

/// Uploads `inputs` and `outputs` (their initial contents), runs `f` on the GPU and reads the
/// outputs back.
fn gpu_run(
    gpu: &mut GpuBackend,
    inputs: &[&[f32]],
    outputs: &[&[f32]],
    f: impl FnOnce(&mut GpuBackend, &[GpuTensor], &[GpuTensor]),
) -> Vec<Vec<f64>> {
    let i: Vec<_> = inputs.iter().map(|v| gpu.upload(v)).collect();
    let o: Vec<_> = outputs.iter().map(|v| gpu.upload(v)).collect();
    f(gpu, &i, &o);
    o.iter().map(|t| f64s(&gpu.read(t))).collect()
}

/// A train-mode BatchNorm forward of i = [x, γ, β] into o = [y, saved, mean, var].
fn bn_train(g: &mut GpuBackend, p: &BatchNormParams, i: &[GpuTensor], o: &[GpuTensor]) {
    let t = BatchNormTrain { x: &i[0], gamma: &i[1], beta: &i[2], y: &o[0], saved: &o[1], mean: &o[2], var: &o[3] };
    batchnorm_train(g, p, t);
}

fn grads<'a>(dx: &'a mut [f32], dgamma: &'a mut [f32], dbeta: &'a mut [f32]) -> cpu::BatchNormGrads<'a, f32> {
    cpu::BatchNormGrads { dx, dgamma, dbeta }
}

fn randn(r: &mut rand::rngs::Xoshiro256PlusPlus, len: usize) -> Vec<f32> {
    to_f32(&uniform(r, len, -1.0, 1.0))
}

/// Both accumulate modes: (bits, initial gradient contents).
fn grad_modes(r: &mut rand::rngs::Xoshiro256PlusPlus, len: usize, bit: u32) -> [(u32, Vec<f32>); 2] {
    [(0, vec![f32::NAN; len]), (bit, randn(r, len))]
}

/// Each conv case runs on the subgroup kernels (where the adapter has them and they cover the
/// shape) and again with them turned off, on the kernels other GPUs use.
fn conv2d_case(name: &str, n: usize, c_in: usize, hw: (usize, usize), c_out: usize, k: usize, towers: usize) {
    for subgroups in [true, false] {
        let name = format!("{name} subgroups={subgroups}");
        with_gpu(&format!("conv2d {name}"), |gpu| {
            gpu.driver = gpu.ctx.driver.filter(|_| subgroups);
            conv2d_case_on(gpu, &name, n, c_in, hw, c_out, k, towers);
            gpu.driver = gpu.ctx.driver;
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn conv2d_case_on(
    gpu: &mut GpuBackend,
    name: &str,
    n: usize,
    c_in: usize,
    hw: (usize, usize),
    c_out: usize,
    k: usize,
    towers: usize,
) {
    {
        let mut r = rng(n as u64 * 1000 + c_in as u64 * 100 + k as u64);
        let p = Conv2dParams::same(n, c_in, hw.0, hw.1, c_out, k).with_towers(towers);
        let (x, w, b, dy) =
            (randn(&mut r, p.x_len()), randn(&mut r, p.w_len()), randn(&mut r, c_out), randn(&mut r, p.y_len()));

        let mut y = vec![0.0f32; p.y_len()];
        cpu::conv2d_forward(&p, &x, &w, &b, &mut y);
        let got = gpu_run(gpu, &[&x, &w, &b], &[&vec![f32::NAN; p.y_len()]], |g, i, o| {
            g.conv2d_forward(&p, &i[0], &i[1], &i[2], &o[0])
        });
        assert_close(&format!("conv2d_forward {name}"), &f64s(&y), &got[0], TOL);

        for (acc, dx0) in grad_modes(&mut r, p.x_len(), ACCUMULATE_INPUT) {
            let p = Conv2dParams { accumulate: acc, ..p };
            let mut dx = dx0.clone();
            cpu::conv2d_backward_input(&p, &dy, &w, &mut dx);
            let got = gpu_run(gpu, &[&dy, &w], &[&dx0], |g, i, o| g.conv2d_backward_input(&p, &i[0], &i[1], &o[0]));
            assert_close(&format!("conv2d_backward_input {name} accumulate={acc}"), &f64s(&dx), &got[0], TOL);
        }

        let [(_, dw_nan), (acc, dw0)] = grad_modes(&mut r, p.w_len(), ACCUMULATE_PARAMS);
        let db0 = randn(&mut r, c_out);
        for (acc, dw0, db0) in [(0, dw_nan, vec![f32::NAN; c_out]), (acc, dw0, db0)] {
            let p = Conv2dParams { accumulate: acc, ..p };
            let (mut dw, mut db) = (dw0.clone(), db0.clone());
            cpu::conv2d_backward_weight(&p, &x, &dy, &mut dw, &mut db);
            let got = gpu_run(gpu, &[&x, &dy], &[&dw0, &db0], |g, i, o| {
                g.conv2d_backward_weight(&p, &i[0], &i[1], ParamGrads { dw: &o[0], db: &o[1] })
            });
            assert_close(&format!("conv2d_backward_weight dw {name} accumulate={acc}"), &f64s(&dw), &got[0], TOL);
            assert_close(&format!("conv2d_backward_weight db {name} accumulate={acc}"), &f64s(&db), &got[1], TOL);
        }
    }
}

#[test]
fn conv2d_tiny() {
    conv2d_case("tiny", 1, 1, (3, 3), 1, 3, 1);
}
#[test]
fn conv2d_odd_sizes() {
    conv2d_case("odd", 3, 3, (7, 5), 5, 3, 1);
    conv2d_case("odd-towers", 6, 3, (7, 5), 5, 3, 2);
}
#[test]
fn conv2d_kernel_5_and_1() {
    conv2d_case("k5", 2, 2, (9, 6), 3, 5, 1);
    conv2d_case("k1", 2, 3, (5, 5), 2, 1, 2);
}
#[test]
fn conv2d_batch_1() {
    conv2d_case("batch1", 1, 4, (28, 28), 8, 3, 1);
}

/// Shapes the subgroup kernels take in every variant: 8 and 4 output channels (one and two
/// lane groups), one output channel (a lane per input channel), pieces of 4, 2 and 1 floats,
/// K of 1, 3 and 5, batches that leave lanes and weight-gradient chunks part empty, towers
/// whose size is no multiple of the chunk.
#[test]
fn conv2d_subgroup_variants() {
    conv2d_case("sg-8x8-odd-batch", 5, 8, (6, 10), 8, 5, 1);
    conv2d_case("sg-4-towers", 6, 3, (5, 9), 4, 3, 2);
    conv2d_case("sg-k1", 3, 2, (7, 3), 8, 1, 1);
    conv2d_case("sg-wide", 10, 1, (4, 12), 4, 3, 2);
    conv2d_case("sg-one-output", 5, 3, (6, 10), 1, 5, 1);
    conv2d_case("sg-one-output-towers", 10, 8, (7, 7), 1, 3, 2);
}

/// Where an adapter reports 8-lane subgroups and the kernel set is left to choose, the subgroup
/// kernels must be in use: a silent fallback would lose their speed.
#[test]
fn eight_lane_subgroups_run_the_subgroup_convs() {
    with_gpu("8-lane subgroup convs", |gpu| {
        let auto = matches!(std::env::var("SIAMESE_KERNELS").as_deref(), Err(_) | Ok("" | "auto"));
        if auto && gpu.ctx.adapter.subgroup_sizes == (8, 8) {
            assert_eq!(gpu.ctx.driver.map(|d| d.name()), Some("llvmpipe"), "8-lane subgroups without their kernels");
        }
    });
}

#[test]
fn conv2d_training_shapes() {
    conv2d_case("train0", 256, 1, (28, 28), 4, 3, 2);
    conv2d_case("train3", 256, 4, (28, 28), 4, 3, 2);
    conv2d_case("train7", 256, 4, (14, 14), 8, 3, 2);
    conv2d_case("train10", 256, 8, (14, 14), 8, 3, 2);
    conv2d_case("train14", 256, 8, (7, 7), 1, 3, 2);
}

fn batchnorm_case(name: &str, n: usize, c: usize, hw: usize, groups: usize) {
    batchnorm_case_with(name, n, c, hw, groups, false);
    batchnorm_case_with(&format!("{name} relu-input"), n, c, hw, groups, true);
}

fn batchnorm_case_with(name: &str, n: usize, c: usize, hw: usize, groups: usize, relu: bool) {
    with_gpu(&format!("batchnorm {name}"), |gpu| {
        let mut r = rng((n * 31 + c * 7 + hw) as u64);
        let p = BatchNormParams::new(n, c, hw, groups).with_relu_input(relu);
        // Shifted and scaled so the statistics are not trivially 0 and 1.
        let x: Vec<f32> = randn(&mut r, p.len()).iter().map(|v| 3.0 * v + 0.5).collect();
        let (gamma, beta, dy) = (randn(&mut r, c), randn(&mut r, c), randn(&mut r, p.len()));
        let (rm0, rv0) = (randn(&mut r, c), to_f32(&uniform(&mut r, c, 0.5, 2.0)));

        let (mut y, mut saved, mut rm, mut rv) =
            (vec![0.0f32; p.len()], vec![0.0f32; p.saved_len()], rm0.clone(), rv0.clone());
        cpu_batchnorm_train(&p, &x, (&gamma, &beta), (&mut y, &mut saved, &mut rm, &mut rv));
        let got = gpu_run(
            gpu,
            &[&x, &gamma, &beta],
            &[&vec![0.0; p.len()], &vec![0.0; p.saved_len()], &rm0, &rv0],
            |g, i, o| bn_train(g, &p, i, o),
        );
        assert_close(&format!("batchnorm_forward_train y {name}"), &f64s(&y), &got[0], TOL);
        assert_close(&format!("batchnorm_forward_train saved {name}"), &f64s(&saved), &got[1], TOL);
        assert_close(&format!("batchnorm_forward_train running_mean {name}"), &f64s(&rm), &got[2], TOL);
        assert_close(&format!("batchnorm_forward_train running_var {name}"), &f64s(&rv), &got[3], TOL);

        let mut ye = vec![0.0f32; p.len()];
        cpu::batchnorm_forward_eval(&p, &x, &gamma, &beta, &rm0, &rv0, &mut ye);
        let got = gpu_run(gpu, &[&x, &gamma, &beta, &rm0, &rv0], &[&vec![0.0; p.len()]], |g, i, o| {
            batchnorm_eval(g, &p, (&i[0], &i[1], &i[2]), Running { mean: &i[3], var: &i[4] }, &o[0])
        });
        assert_close(&format!("batchnorm_forward_eval {name}"), &f64s(&ye), &got[0], TOL);

        for acc in [0, ACCUMULATE_INPUT | ACCUMULATE_PARAMS] {
            let p = BatchNormParams { accumulate: acc, ..p };
            let (dx0, dg0, db0) = (randn(&mut r, p.len()), randn(&mut r, c), randn(&mut r, c));
            let (mut dx, mut dg, mut db) = (dx0.clone(), dg0.clone(), db0.clone());
            cpu::batchnorm_backward(&p, &x, &dy, &gamma, &saved, grads(&mut dx, &mut dg, &mut db));
            let got = gpu_run(gpu, &[&x, &dy, &gamma, &saved], &[&dx0, &dg0, &db0], |g, i, o| {
                let norm = Norm { p, gamma: &i[2], beta: &i[2], saved: &i[3] };
                g.batchnorm_backward(&norm, &i[0], &i[1], NormGrads { dx: &o[0], dgamma: &o[1], dbeta: &o[2] })
            });
            assert_close(&format!("batchnorm_backward dx {name} accumulate={acc}"), &f64s(&dx), &got[0], TOL);
            assert_close(&format!("batchnorm_backward dgamma {name} accumulate={acc}"), &f64s(&dg), &got[1], TOL);
            assert_close(&format!("batchnorm_backward dbeta {name} accumulate={acc}"), &f64s(&db), &got[2], TOL);
        }
    });
}

#[test]
fn batchnorm_tiny() {
    batchnorm_case("tiny", 2, 1, 4, 1);
}
#[test]
fn batchnorm_odd_sizes_and_groups() {
    batchnorm_case("odd", 5, 3, 7 * 7, 1);
    batchnorm_case("odd-groups", 6, 3, 3 * 5, 3);
}
#[test]
fn batchnorm_batch_1() {
    batchnorm_case("batch1", 1, 4, 28 * 28, 1);
}
#[test]
fn batchnorm_training_shapes() {
    batchnorm_case("train2", 256, 4, 28 * 28, 2);
    batchnorm_case("train9", 256, 8, 14 * 14, 2);
}

fn maxpool_case(name: &str, n: usize, c: usize, h: usize, w: usize, ties: bool) {
    with_gpu(&format!("maxpool {name}"), |gpu| {
        let mut r = rng((n * 13 + c * 5 + h * w) as u64);
        let p = MaxPoolParams::new(n, c, h, w);
        let mut x = randn(&mut r, p.x_len());
        if ties {
            // ReLU outputs: many exact zeros, so windows tie and the first must win.
            x.iter_mut().for_each(|v| *v = v.max(0.0).round());
        }
        let dy = randn(&mut r, p.y_len());
        let mut y = vec![0.0f32; p.y_len()];
        cpu::maxpool_forward(&p, &x, &mut y);
        let got = gpu_run(gpu, &[&x], &[&vec![f32::NAN; p.y_len()]], |g, i, o| g.maxpool_forward(&p, &i[0], &o[0]));
        assert_close(&format!("maxpool_forward {name}"), &f64s(&y), &got[0], 0.0);
        for (acc, dx0) in grad_modes(&mut r, p.x_len(), ACCUMULATE_INPUT) {
            let p = MaxPoolParams { accumulate: acc, ..p };
            let mut dx = dx0.clone();
            cpu::maxpool_backward(&p, &x, &dy, &mut dx);
            let got = gpu_run(gpu, &[&x, &dy], &[&dx0], |g, i, o| g.maxpool_backward(&p, &i[0], &i[1], &o[0]));
            assert_close(&format!("maxpool_backward {name} accumulate={acc}"), &f64s(&dx), &got[0], 0.0);
        }
    });
}

#[test]
fn maxpool_shapes() {
    maxpool_case("tiny", 1, 1, 2, 2, false);
    maxpool_case("odd", 3, 5, 7, 9, false);
    // Widths of 4m + 2 (row pairs of whole vec4s), m = 0 and 1.
    maxpool_case("rows-narrow", 2, 3, 4, 2, true);
    maxpool_case("rows", 3, 2, 6, 6, false);
    maxpool_case("ties", 2, 3, 8, 8, true);
    maxpool_case("batch1", 1, 4, 28, 28, false);
    maxpool_case("train6", 256, 4, 28, 28, true);
    maxpool_case("train13", 256, 8, 14, 14, false);
}

/// MaxPool(BatchNorm(x)) fused, against the two ops in turn: the CPU reference, and for the
/// forward the GPU's own unfused kernels bit for bit (the fused kernels must compute
/// BatchNorm's output exactly as batchnorm_forward writes it).
fn batchnorm_maxpool_case(name: &str, n: usize, c: usize, h: usize, w: usize, towers: usize) {
    for relu in [false, true] {
        let name = format!("{name} relu={relu}");
        with_gpu(&format!("batchnorm_maxpool {name}"), |gpu| {
            let mut r = rng((n * 17 + c * 3 + h * w) as u64);
            let pb = BatchNormParams::new(n, c, h * w, towers).with_relu_input(relu);
            let pp = MaxPoolParams::new(n, c, h, w);
            let x: Vec<f32> = randn(&mut r, pb.len()).iter().map(|v| 3.0 * v + 0.5).collect();
            let (gamma, beta, dy) = (randn(&mut r, c), randn(&mut r, c), randn(&mut r, pp.y_len()));
            let (rm0, rv0) = (randn(&mut r, c), to_f32(&uniform(&mut r, c, 0.5, 2.0)));
            let outputs = [vec![f32::NAN; pp.y_len()], vec![0.0; pb.saved_len()], rm0.clone(), rv0.clone()];
            let outputs: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
            let fused = gpu_run(gpu, &[&x, &gamma, &beta], &outputs, |g, i, o| {
                g.batchnorm_statistics(&pb, &i[0], None, &o[1], Running { mean: &o[2], var: &o[3] });
                let norm = Norm { p: pb, gamma: &i[1], beta: &i[2], saved: &o[1] };
                g.fused(Fused::BatchNormMaxPoolForward { norm, pool: pp, x: &i[0], y: &o[0] })
            });
            let apart = gpu_run(gpu, &[&x, &gamma, &beta], &outputs, |g, i, o| {
                let normalised = g.zeros(pb.len());
                bn_train(g, &pb, i, &[normalised.clone(), o[1].clone(), o[2].clone(), o[3].clone()]);
                g.maxpool_forward(&pp, &normalised, &o[0]);
            });
            for (k, what) in ["y", "saved", "running_mean", "running_var"].iter().enumerate() {
                assert_close(
                    &format!("batchnorm_maxpool_forward {what} {name}"),
                    &apart[k],
                    &fused[k],
                    fused_tolerance(gpu),
                );
            }
            let (mut normalised, mut saved, mut rm, mut rv) =
                (vec![0.0f32; pb.len()], vec![0.0f32; pb.saved_len()], rm0.clone(), rv0.clone());
            cpu_batchnorm_train(&pb, &x, (&gamma, &beta), (&mut normalised, &mut saved, &mut rm, &mut rv));
            let mut y = vec![0.0f32; pp.y_len()];
            cpu::maxpool_forward(&pp, &normalised, &mut y);
            assert_close(&format!("batchnorm_maxpool_forward y {name} (CPU)"), &f64s(&y), &fused[0], TOL);

            // Eval mode: the running statistics, read through the same way.
            let eval_outputs = [vec![f32::NAN; pp.y_len()], vec![f32::NAN; pb.saved_len()]];
            let eval_outputs: Vec<&[f32]> = eval_outputs.iter().map(Vec::as_slice).collect();
            let eval = gpu_run(gpu, &[&x, &gamma, &beta, &rm0, &rv0], &eval_outputs, |g, i, o| {
                g.batchnorm_running_statistics(&pb, Running { mean: &i[3], var: &i[4] }, &o[1]);
                let norm = Norm { p: pb, gamma: &i[1], beta: &i[2], saved: &o[1] };
                g.fused(Fused::BatchNormMaxPoolForward { norm, pool: pp, x: &i[0], y: &o[0] })
            });
            let mut normalised_eval = vec![0.0f32; pb.len()];
            cpu::batchnorm_forward_eval(&pb, &x, &gamma, &beta, &rm0, &rv0, &mut normalised_eval);
            cpu::maxpool_forward(&pp, &normalised_eval, &mut y);
            assert_close(&format!("batchnorm_maxpool_forward eval y {name} (CPU)"), &f64s(&y), &eval[0], TOL);

            // The backward, BatchNorm's included, against the CPU's two ops in turn, writing and
            // adding. The portable kernels take two dispatches (sums, dx), each element finding
            // its share of the pool's gradient; the plane kernels three (plane sums, tower sums,
            // dx) where the pool reads through BatchNorm, five where it writes BatchNorm's output.
            let saved = to_f32(&fused[1]);
            let mut dnormalised = vec![0.0f32; pb.len()];
            cpu::maxpool_backward(&pp, &normalised, &dy, &mut dnormalised);
            for acc in [0, ACCUMULATE_INPUT, ACCUMULATE_INPUT | ACCUMULATE_PARAMS] {
                let pb = BatchNormParams { accumulate: acc, ..pb };
                let start = |r: &mut _, len, bit| if acc & bit != 0 { randn(r, len) } else { vec![f32::NAN; len] };
                let dx0 = start(&mut r, pb.len(), ACCUMULATE_INPUT);
                let (dg0, db0) = (start(&mut r, c, ACCUMULATE_PARAMS), start(&mut r, c, ACCUMULATE_PARAMS));
                let (mut dx, mut dg, mut db) = (dx0.clone(), dg0.clone(), db0.clone());
                cpu::batchnorm_backward(&pb, &x, &dnormalised, &gamma, &saved, grads(&mut dx, &mut dg, &mut db));
                let mut dispatches = 0;
                let got = gpu_run(gpu, &[&x, &gamma, &beta, &saved, &dy], &[&dx0, &dg0, &db0], |g, i, o| {
                    let before = g.dispatches;
                    let norm = Norm { p: pb, gamma: &i[1], beta: &i[2], saved: &i[3] };
                    let grads = NormGrads { dx: &o[0], dgamma: &o[1], dbeta: &o[2] };
                    g.fused(Fused::BatchNormMaxPoolBackward { norm, pool: pp, x: &i[0], dy: &i[4], grads });
                    dispatches = g.dispatches - before;
                });
                for (k, (what, want)) in [("dx", &dx), ("dgamma", &dg), ("dbeta", &db)].into_iter().enumerate() {
                    let what = format!("batchnorm_maxpool_backward {what} {name} accumulate={acc}");
                    assert_close(&what, &f64s(want), &got[k], TOL);
                }
                let expected = match (gpu.plane_at_a_time(), h.is_multiple_of(2) && w.is_multiple_of(2)) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 5,
                };
                assert_eq!(dispatches, expected, "dispatches {name}");
            }
        });
    }
}

#[test]
fn batchnorm_maxpool_shapes() {
    batchnorm_maxpool_case("tiny", 2, 1, 2, 4, 1);
    batchnorm_maxpool_case("odd", 3, 5, 7, 9, 1);
    batchnorm_maxpool_case("even-windows", 4, 3, 6, 10, 2);
    batchnorm_maxpool_case("rows-narrow", 4, 3, 4, 2, 2);
    // Rows of whole vec4s over an odd number of rows: the last row is in no window.
    batchnorm_maxpool_case("odd-rows", 4, 3, 5, 8, 2);
    batchnorm_maxpool_case("train6", 256, 4, 28, 28, 2);
    batchnorm_maxpool_case("train13", 256, 8, 14, 14, 2);
}

/// Conv2d(BatchNorm(x)) fused, against the two ops in turn: the GPU's own unfused kernels bit
/// for bit (the conv must load exactly what batchnorm_forward writes), and the CPU reference;
/// on the subgroup kernels and on the portable ones (one dispatch fewer each way where they
/// read x through the normalisation, else BatchNorm's output written out).
fn batchnorm_conv2d_case(name: &str, n: usize, c_in: usize, hw: (usize, usize), c_out: usize, towers: usize) {
    for (subgroups, relu) in [(true, true), (true, false), (false, true)] {
        let name = format!("{name} subgroups={subgroups} relu={relu}");
        with_gpu(&format!("batchnorm_conv2d {name}"), |gpu| {
            gpu.driver = gpu.ctx.driver.filter(|_| subgroups);
            let shape = Shape { ic: c_in as u32, oc: c_out as u32, h: hw.0 as u32, w: hw.1 as u32, k: 3 };
            // Where the driver's kernels do not take it, the portable tiled ones read through.
            let pc = Conv2dParams::same(n, c_in, hw.0, hw.1, c_out, 3);
            let through = (gpu.driver.is_some() && c_out != 1 && shape.supported()) || conv2d_tiled(&pc);
            // The input gradient's kernel sums BatchNorm's planes where it covers the shape.
            let back = Shape { ic: shape.oc, oc: shape.ic, ..shape };
            let even = hw.1.is_multiple_of(2) && (hw.0 * hw.1).is_multiple_of(4);
            let sums = gpu.driver.is_some() && c_in != 1 && even && back.supported();
            batchnorm_conv2d_case_on(gpu, &name, n, c_in, hw, c_out, towers, relu, (through, sums));
            gpu.driver = gpu.ctx.driver;
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn batchnorm_conv2d_case_on(
    gpu: &mut GpuBackend,
    name: &str,
    n: usize,
    c_in: usize,
    (h, w): (usize, usize),
    c_out: usize,
    towers: usize,
    relu: bool,
    (through, sums): (bool, bool),
) {
    let mut r = rng((n * 31 + c_in * 7 + c_out + h * w) as u64);
    let pb = BatchNormParams::new(n, c_in, h * w, towers).with_relu_input(relu);
    let pc = Conv2dParams::same(n, c_in, h, w, c_out, 3).with_towers(towers);
    let x: Vec<f32> = randn(&mut r, pb.len()).iter().map(|v| 2.0 * v + 0.3).collect();
    let (gamma, beta) = (randn(&mut r, c_in), randn(&mut r, c_in));
    let (wt, bias, dy) = (randn(&mut r, pc.w_len()), randn(&mut r, c_out), randn(&mut r, pc.y_len()));
    let (rm0, rv0) = (randn(&mut r, c_in), to_f32(&uniform(&mut r, c_in, 0.5, 2.0)));
    let inputs = [&x, &gamma, &beta, &wt, &bias].map(Vec::as_slice);
    let outputs = [vec![f32::NAN; pc.y_len()], vec![0.0; pb.saved_len()], rm0.clone(), rv0.clone()];
    let outputs: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
    let (mut fused_dispatches, mut apart_dispatches) = (0, 0);
    let fused = gpu_run(gpu, &inputs, &outputs, |g, i, o| {
        let before = g.dispatches;
        g.batchnorm_statistics(&pb, &i[0], None, &o[1], Running { mean: &o[2], var: &o[3] });
        let (norm, conv) =
            (Norm { p: pb, gamma: &i[1], beta: &i[2], saved: &o[1] }, Conv { p: pc, w: &i[3], b: &i[4] });
        g.fused(Fused::BatchNormConv2dForward { norm, conv, x: &i[0], y: &o[0], moments: None });
        fused_dispatches = g.dispatches - before;
    });
    let apart = gpu_run(gpu, &inputs, &outputs, |g, i, o| {
        let before = g.dispatches;
        let normalised = g.zeros(pb.len());
        bn_train(g, &pb, i, &[normalised.clone(), o[1].clone(), o[2].clone(), o[3].clone()]);
        g.conv2d_forward(&pc, &normalised, &i[3], &i[4], &o[0]);
        apart_dispatches = g.dispatches - before;
    });
    for (k, what) in ["y", "saved", "running_mean", "running_var"].iter().enumerate() {
        assert_close(&format!("batchnorm_conv2d_forward {what} {name}"), &apart[k], &fused[k], fused_tolerance(gpu));
    }
    assert_eq!(fused_dispatches + through as u64, apart_dispatches, "batchnorm_conv2d_forward dispatches {name}");
    let (mut normalised, mut saved, mut rm, mut rv) =
        (vec![0.0f32; pb.len()], vec![0.0f32; pb.saved_len()], rm0.clone(), rv0.clone());
    cpu_batchnorm_train(&pb, &x, (&gamma, &beta), (&mut normalised, &mut saved, &mut rm, &mut rv));
    let mut y = vec![0.0f32; pc.y_len()];
    cpu::conv2d_forward(&pc, &normalised, &wt, &bias, &mut y);
    assert_close(&format!("batchnorm_conv2d_forward y {name} (CPU)"), &f64s(&y), &fused[0], TOL);

    // Eval mode: the running statistics, read through the same way.
    let eval_inputs = [&x, &gamma, &beta, &wt, &bias, &rm0, &rv0].map(Vec::as_slice);
    let eval_outputs = [vec![f32::NAN; pc.y_len()], vec![f32::NAN; pb.saved_len()]];
    let eval_outputs: Vec<&[f32]> = eval_outputs.iter().map(Vec::as_slice).collect();
    let eval = gpu_run(gpu, &eval_inputs, &eval_outputs, |g, i, o| {
        g.batchnorm_running_statistics(&pb, Running { mean: &i[5], var: &i[6] }, &o[1]);
        let (norm, conv) =
            (Norm { p: pb, gamma: &i[1], beta: &i[2], saved: &o[1] }, Conv { p: pc, w: &i[3], b: &i[4] });
        g.fused(Fused::BatchNormConv2dForward { norm, conv, x: &i[0], y: &o[0], moments: None });
    });
    let mut normalised_eval = vec![0.0f32; pb.len()];
    cpu::batchnorm_forward_eval(&pb, &x, &gamma, &beta, &rm0, &rv0, &mut normalised_eval);
    cpu::conv2d_forward(&pc, &normalised_eval, &wt, &bias, &mut y);
    assert_close(&format!("batchnorm_conv2d_forward eval y {name} (CPU)"), &f64s(&y), &eval[0], TOL);

    // The backward, writing and adding: BatchNorm's gradients by pb.accumulate, the conv's by
    // pc.accumulate.
    let saved = to_f32(&fused[1]);
    let mut dnormalised = vec![0.0f32; pb.len()];
    cpu::conv2d_backward_input(&pc, &dy, &wt, &mut dnormalised);
    for acc in [0, ACCUMULATE_INPUT | ACCUMULATE_PARAMS] {
        let (pb, pc) =
            (BatchNormParams { accumulate: acc, ..pb }, Conv2dParams { accumulate: acc & ACCUMULATE_PARAMS, ..pc });
        let start = |r: &mut _, len| if acc != 0 { randn(r, len) } else { vec![f32::NAN; len] };
        let starts = [pb.len(), c_in, c_in, pc.w_len(), c_out].map(|len| start(&mut r, len));
        let mut want = starts.clone();
        let [dx, dg, db, dw, dbias] = &mut want;
        cpu::conv2d_backward_weight(&pc, &normalised, &dy, dw, dbias);
        cpu::batchnorm_backward(&pb, &x, &dnormalised, &gamma, &saved, grads(dx, dg, db));
        let inputs = [&x, &gamma, &beta, &saved, &wt, &dy].map(Vec::as_slice);
        let outputs: Vec<&[f32]> = starts.iter().map(Vec::as_slice).collect();
        let fused = gpu_run(gpu, &inputs, &outputs, |g, i, o| {
            let before = g.dispatches;
            g.fused(Fused::BatchNormConv2dBackward(BatchNormConv2dBackward {
                norm: Norm { p: pb, gamma: &i[1], beta: &i[2], saved: &i[3] },
                conv: Conv { p: pc, w: &i[4], b: &i[4] },
                x: &i[0],
                dy: &i[5],
                grads: NormGrads { dx: &o[0], dgamma: &o[1], dbeta: &o[2] },
                conv_grads: ParamGrads { dw: &o[3], db: &o[4] },
            }));
            fused_dispatches = g.dispatches - before;
        });
        let apart = gpu_run(gpu, &inputs, &outputs, |g, i, o| {
            let normalised = g.zeros(pb.len());
            let norm = Norm { p: pb, gamma: &i[1], beta: &i[2], saved: &i[3] };
            g.batchnorm_normalise(&norm, &i[0], &normalised);
            let before = g.dispatches;
            let dnormalised = g.zeros(pb.len());
            g.conv2d_backward_input(&Conv2dParams { accumulate: 0, ..pc }, &i[5], &i[4], &dnormalised);
            g.conv2d_backward_weight(&pc, &normalised, &i[5], ParamGrads { dw: &o[3], db: &o[4] });
            g.batchnorm_backward(&norm, &i[0], &dnormalised, NormGrads { dx: &o[0], dgamma: &o[1], dbeta: &o[2] });
            apart_dispatches = g.dispatches - before;
        });
        for (k, what) in ["dx", "dgamma", "dbeta", "dw", "db"].iter().enumerate() {
            let what = format!("batchnorm_conv2d_backward {what} {name} accumulate={acc}");
            assert_close(&what, &apart[k], &fused[k], fused_tolerance(gpu));
            assert_close(&format!("{what} (CPU)"), &f64s(&want[k]), &fused[k], TOL);
        }
        // Without reading through, BatchNorm's output is written again; with the sums, their
        // own pass over memory is not needed; a square conv's input and weight gradients are
        // one launch (conv2d_backward_rows).
        let whole = through && sums && c_in == c_out;
        let expected = apart_dispatches + !through as u64 - sums as u64 - whole as u64;
        assert_eq!(fused_dispatches, expected, "batchnorm_conv2d_backward dispatches {name}");
    }
}

#[test]
fn batchnorm_conv2d_shapes() {
    batchnorm_conv2d_case("train2", 256, 4, (28, 28), 4, 2);
    batchnorm_conv2d_case("train4", 256, 8, (14, 14), 8, 2);
    batchnorm_conv2d_case("pieces-of-2", 16, 3, (6, 10), 4, 2);
    batchnorm_conv2d_case("square-pairs", 16, 4, (6, 10), 4, 2);
    // Towers of 12 and 13 images (lane groups take 8: each tower's last group is partly
    // empty), one tower of 11; one output channel: BatchNorm written out.
    batchnorm_conv2d_case("odd-towers", 24, 4, (14, 14), 8, 2);
    batchnorm_conv2d_case("odd-towers-2", 26, 8, (14, 14), 4, 2);
    batchnorm_conv2d_case("odd-tower", 11, 4, (28, 28), 4, 1);
    batchnorm_conv2d_case("one-out", 8, 8, (7, 7), 1, 2);
}

/// The backward of conv_b(BatchNorm(ReLU(conv_a(xa)))) fused, against the GPU's own ops in
/// turn (z's gradient written, then conv_a's backward) bit for bit on a CPU adapter: conv_a's
/// kernels read z's gradient through BatchNorm's backward, one pass fewer, where they cover
/// conv_a (the subgroup kernels: only its weight gradient, where xa needs none).
fn conv2d_batchnorm_conv2d_case(
    name: &str,
    n: usize,
    (ca, cb, cc): (usize, usize, usize),
    hw: usize,
    (input_grad, relu): (bool, bool),
) {
    for subgroups in [true, false] {
        let name = format!("{name} subgroups={subgroups}");
        with_gpu(&format!("conv2d_batchnorm_conv2d {name}"), |gpu| {
            gpu.driver = gpu.ctx.driver.filter(|_| subgroups);
            let shape = Shape { ic: ca as u32, oc: cb as u32, h: hw as u32, w: hw as u32, k: 3 };
            let pa = Conv2dParams::same(n, ca, hw, hw, cb, 3).with_towers(2);
            let fold = match gpu.driver {
                Some(_) => !input_grad && cb != 1 && shape.supported(),
                None => conv2d_tiled(&pa),
            };
            let mut r = rng((n * 7 + ca * 5 + cb * 3 + cc + hw) as u64);
            let pb = BatchNormParams::new(n, cb, hw * hw, 2).with_relu_input(relu);
            let pc = Conv2dParams::same(n, cb, hw, hw, cc, 3).with_towers(2);
            let (xa, wa) = (randn(&mut r, pa.x_len()), randn(&mut r, pa.w_len()));
            let z: Vec<f32> = randn(&mut r, pb.len()).iter().map(|v| v + 0.2).collect();
            let (gamma, beta, w, dy) =
                (randn(&mut r, cb), randn(&mut r, cb), randn(&mut r, pc.w_len()), randn(&mut r, pc.y_len()));
            let (mut normalised, mut saved, mut rm, mut rv) =
                (vec![0.0; pb.len()], vec![0.0; pb.saved_len()], vec![0.0; cb], vec![1.0; cb]);
            cpu_batchnorm_train(&pb, &z, (&gamma, &beta), (&mut normalised, &mut saved, &mut rm, &mut rv));
            for acc in [0, ACCUMULATE_INPUT | ACCUMULATE_PARAMS] {
                let start = |r: &mut _, len| if acc != 0 { randn(r, len) } else { vec![f32::NAN; len] };
                let lens = [pa.x_len(), pa.w_len(), cb, cb, cb, pc.w_len(), cc];
                let starts = lens.map(|len| start(&mut r, len));
                let (pa, pc) = (
                    Conv2dParams { accumulate: acc, ..pa },
                    Conv2dParams { accumulate: acc & ACCUMULATE_PARAMS, ..pc },
                );
                let pb = BatchNormParams { accumulate: acc & ACCUMULATE_PARAMS, ..pb };
                let inputs = [&xa, &wa, &z, &gamma, &beta, &saved, &w, &dy].map(Vec::as_slice);
                let outputs: Vec<&[f32]> = starts.iter().map(Vec::as_slice).collect();
                let mut dispatches = [0; 2];
                let mut run = |g: &mut GpuBackend, i: &[GpuTensor], o: &[GpuTensor], fused: bool| {
                    let before = g.dispatches;
                    let dxa = input_grad.then_some(&o[0]);
                    let [xa, wa, z, gamma, beta, saved, w, dy] = [0, 1, 2, 3, 4, 5, 6, 7].map(|k| &i[k]);
                    let [dwa, dba, dg, dbeta, dw, db] = [1, 2, 3, 4, 5, 6].map(|k| &o[k]);
                    let norm = Norm { p: pb, gamma, beta, saved };
                    let (conv, conv_grads) = (Conv { p: pc, w, b: w }, ParamGrads { dw, db });
                    if fused {
                        g.fused(Fused::Conv2dBatchNormConv2dBackward(Conv2dBatchNormConv2dBackward {
                            first: Conv { p: pa, w: wa, b: wa },
                            x: xa,
                            dx: dxa,
                            first_grads: ParamGrads { dw: dwa, db: dba },
                            norm,
                            z,
                            dgamma: dg,
                            dbeta,
                            conv,
                            dy,
                            conv_grads,
                        }));
                    } else {
                        let dz = g.zeros(pb.len());
                        let grads = NormGrads { dx: &dz, dgamma: dg, dbeta };
                        let op = BatchNormConv2dBackward { norm, conv, x: z, dy, grads, conv_grads };
                        g.fused(Fused::BatchNormConv2dBackward(op));
                        let input = dxa.map(|dxa| (wa, dxa));
                        g.conv2d_backward(&pa, &dz, input, Some((xa, ParamGrads { dw: dwa, db: dba })));
                    }
                    dispatches[fused as usize] = g.dispatches - before;
                };
                let fused = gpu_run(gpu, &inputs, &outputs, |g, i, o| run(g, i, o, true));
                let apart = gpu_run(gpu, &inputs, &outputs, |g, i, o| run(g, i, o, false));
                let names = ["dxa", "dwa", "dba", "dgamma", "dbeta", "dw", "db"];
                for (k, what) in names.iter().enumerate().filter(|&(k, _)| k != 0 || input_grad) {
                    let what = format!("conv2d_batchnorm_conv2d_backward {what} {name} accumulate={acc}");
                    assert_close(&what, &apart[k], &fused[k], fused_tolerance(gpu));
                }
                assert_eq!(
                    dispatches[1] + fold as u64,
                    dispatches[0],
                    "conv2d_batchnorm_conv2d_backward dispatches {name}"
                );
            }
            gpu.driver = gpu.ctx.driver;
        });
    }
}

#[test]
fn conv2d_batchnorm_conv2d_shapes() {
    conv2d_batchnorm_conv2d_case("first", 32, (1, 4, 4), 28, (false, true));
    conv2d_batchnorm_conv2d_case("third", 32, (4, 8, 8), 14, (true, true));
    conv2d_batchnorm_conv2d_case("third-no-relu", 16, (4, 8, 8), 14, (true, false));
    conv2d_batchnorm_conv2d_case("pieces-of-2", 16, (3, 4, 4), 10, (false, true));
    conv2d_batchnorm_conv2d_case("odd-towers", 22, (1, 4, 4), 28, (false, true));
    // Planes the tiled kernels do not cover: z's gradient written.
    conv2d_batchnorm_conv2d_case("untiled", 8, (2, 4, 3), 7, (true, true));
}

fn relu_case(name: &str, len: usize) {
    with_gpu(&format!("relu {name}"), |gpu| {
        let mut r = rng(len as u64);
        let mut x = randn(&mut r, len);
        x.iter_mut().step_by(7).for_each(|v| *v = 0.0);
        let dy = randn(&mut r, len);
        let mut y = vec![0.0f32; len];
        cpu::relu_forward(&x, &mut y);
        let got = gpu_run(gpu, &[&x], &[&vec![f32::NAN; len]], |g, i, o| g.relu_forward(&i[0], &o[0]));
        assert_close(&format!("relu_forward {name}"), &f64s(&y), &got[0], 0.0);
        for (acc, dx0) in grad_modes(&mut r, len, ACCUMULATE_INPUT) {
            let mut dx = dx0.clone();
            cpu::relu_backward(&y, &dy, &mut dx, acc);
            let got = gpu_run(gpu, &[&y, &dy], &[&dx0], |g, i, o| g.relu_backward(&i[0], &i[1], &o[0], acc));
            assert_close(&format!("relu_backward {name} accumulate={acc}"), &f64s(&dx), &got[0], 0.0);
        }
    });
}

#[test]
fn relu_shapes() {
    relu_case("tiny", 1);
    relu_case("odd", 1000);
    relu_case("train", 256 * 4 * 28 * 28);
}

fn linear_case(name: &str, n: usize, d_in: usize, d_out: usize, towers: usize) {
    for relu in [false, true] {
        linear_case_with(&format!("{name} relu={relu}"), n, d_in, d_out, towers, relu);
    }
}

fn linear_case_with(name: &str, n: usize, d_in: usize, d_out: usize, towers: usize, relu: bool) {
    with_gpu(&format!("linear {name}"), |gpu| {
        let mut r = rng((n * 3 + d_in + d_out) as u64);
        let p = LinearParams::new(n, d_in, d_out).with_towers(towers).with_relu_input(relu);
        let (x, w, b, dy) =
            (randn(&mut r, n * d_in), randn(&mut r, d_out * d_in), randn(&mut r, d_out), randn(&mut r, n * d_out));
        let mut y = vec![0.0f32; n * d_out];
        cpu::linear_forward(&p, &x, &w, &b, &mut y);
        let got = gpu_run(gpu, &[&x, &w, &b], &[&vec![f32::NAN; n * d_out]], |g, i, o| {
            g.linear_forward(&p, &i[0], &i[1], &i[2], &o[0])
        });
        assert_close(&format!("linear_forward {name}"), &f64s(&y), &got[0], TOL);
        // Through a ReLU: the same bits as a ReLU op, then the plain layer.
        if relu {
            let plain = LinearParams { relu_input: 0, ..p };
            let apart = gpu_run(gpu, &[&x, &w, &b], &[&vec![f32::NAN; n * d_out]], |g, i, o| {
                let relu = g.zeros(n * d_in);
                g.relu_forward(&i[0], &relu);
                g.linear_forward(&plain, &relu, &i[1], &i[2], &o[0])
            });
            assert_close(&format!("linear_forward {name} (ReLU apart)"), &apart[0], &got[0], fused_tolerance(gpu));
        }
        for acc in [0, ACCUMULATE_INPUT | ACCUMULATE_PARAMS] {
            let p = LinearParams { accumulate: acc, ..p };
            let starts = [n * d_in, d_out * d_in, d_out]
                .map(|len| if acc != 0 { randn(&mut r, len) } else { vec![f32::NAN; len] });
            let mut want = starts.clone();
            let [dx, dw, db] = &mut want;
            cpu::linear_backward_input(&p, &x, &dy, &w, dx);
            cpu::linear_backward_weight(&p, &x, &dy, dw, db);
            let outputs: Vec<&[f32]> = starts.iter().map(Vec::as_slice).collect();
            let got = gpu_run(gpu, &[&x, &w, &dy], &outputs, |g, i, o| {
                g.linear_backward(&p, &i[0], &i[1], &i[2], Some(&o[0]), ParamGrads { dw: &o[1], db: &o[2] })
            });
            for (k, what) in ["dx", "dw", "db"].iter().enumerate() {
                let what = format!("linear_backward {what} {name} accumulate={acc}");
                assert_close(&what, &f64s(&want[k]), &got[k], TOL);
            }
            // Without dx: the same dw and db.
            let weights_only = gpu_run(gpu, &[&x, &w, &dy], &outputs[1..], |g, i, o| {
                g.linear_backward(&p, &i[0], &i[1], &i[2], None, ParamGrads { dw: &o[0], db: &o[1] })
            });
            assert_close(
                &format!("linear_backward dw {name} accumulate={acc}, no dx"),
                &got[1],
                &weights_only[0],
                fused_tolerance(gpu),
            );
            if relu {
                // The same bits as the plain layer's backward and a ReLU op's.
                let plain = LinearParams { relu_input: 0, accumulate: acc & ACCUMULATE_PARAMS, ..p };
                let apart = gpu_run(gpu, &[&x, &w, &dy], &outputs, |g, i, o| {
                    let (relu, drelu) = (g.zeros(n * d_in), g.zeros(n * d_in));
                    g.relu_forward(&i[0], &relu);
                    g.linear_backward(&plain, &relu, &i[1], &i[2], Some(&drelu), ParamGrads { dw: &o[1], db: &o[2] });
                    g.relu_backward(&relu, &drelu, &o[0], acc & ACCUMULATE_INPUT);
                });
                for (k, what) in ["dx", "dw", "db"].iter().enumerate() {
                    let what = format!("linear_backward {what} {name} accumulate={acc} (ReLU apart)");
                    assert_close(&what, &apart[k], &got[k], fused_tolerance(gpu));
                }
            }
        }
    });
}

#[test]
fn linear_shapes() {
    linear_case("tiny", 1, 1, 1, 1);
    linear_case("odd", 7, 49, 3, 1);
    linear_case("odd-towers", 9, 49, 3, 3);
    linear_case("batch1", 1, 49, 8, 1);
    linear_case("train", 256, 49, 8, 2);
    // Rows of dx and columns of dw sharing no workgroup, and more rows than one workgroup.
    linear_case("rows", 40, 20, 8, 2);
    // More outputs than the narrow kernels hold: the general ones.
    linear_case("wide", 6, 5, 17, 2);
}

fn distance_and_loss_case(name: &str, n: usize, d: usize) {
    with_gpu(&format!("distance {name}"), |gpu| {
        let mut r = rng((n * 17 + d) as u64);
        let pd = PairDistanceParams::new(n, d);
        let mut x = randn(&mut r, 2 * n * d);
        // The last pair identical: the distance is √D·eps, not 0.
        let (a, b) = x.split_at_mut(n * d);
        a[(n - 1) * d..].copy_from_slice(&b[(n - 1) * d..]);
        let dd = randn(&mut r, n);
        let mut dist = vec![0.0f32; n];
        cpu::pair_distance_forward(&pd, &x, &mut dist);
        let got = gpu_run(gpu, &[&x], &[&vec![f32::NAN; n]], |g, i, o| g.pair_distance_forward(&pd, &i[0], &o[0]));
        assert_close(&format!("pair_distance_forward {name}"), &f64s(&dist), &got[0], TOL);
        for (acc, dx0) in grad_modes(&mut r, 2 * n * d, ACCUMULATE_INPUT) {
            let pd = PairDistanceParams { accumulate: acc, ..pd };
            let mut dx = dx0.clone();
            cpu::pair_distance_backward(&pd, &x, &dist, &dd, &mut dx);
            let got = gpu_run(gpu, &[&x, &dist, &dd], &[&dx0], |g, i, o| {
                g.pair_distance_backward(&pd, &i[0], &i[1], &i[2], &o[0])
            });
            assert_close(&format!("pair_distance_backward {name} accumulate={acc}"), &f64s(&dx), &got[0], TOL);
        }

        let pc = ContrastiveParams::new(n, 2.0);
        let t: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let dists: Vec<f32> = to_f32(&uniform(&mut r, n, 0.0, 3.0));
        let mut loss = [0.0f32];
        cpu::contrastive_forward(&pc, &dists, &t, &mut loss);
        let got =
            gpu_run(gpu, &[&dists, &t], &[&[f32::NAN]], |g, i, o| g.contrastive_forward(&pc, &i[0], &i[1], &o[0]));
        assert_close(&format!("contrastive_forward {name}"), &f64s(&loss), &got[0], TOL);
        let dloss = [0.75f32];
        for (acc, dd0) in grad_modes(&mut r, n, ACCUMULATE_INPUT) {
            let pc = ContrastiveParams { accumulate: acc, ..pc };
            let mut ddist = dd0.clone();
            cpu::contrastive_backward(&pc, &dists, &t, &dloss, &mut ddist);
            let got = gpu_run(gpu, &[&dists, &t, &dloss], &[&dd0], |g, i, o| {
                g.contrastive_backward(&pc, &i[0], &i[1], &i[2], &o[0])
            });
            assert_close(&format!("contrastive_backward {name} accumulate={acc}"), &f64s(&ddist), &got[0], TOL);
        }

        // Distance and loss as one op: the same bits as the two, one launch each way.
        let outputs = [vec![f32::NAN; n], vec![f32::NAN]];
        let outputs: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
        let mut launches = 0;
        let fused = gpu_run(gpu, &[&x, &t], &outputs, |g, i, o| {
            let before = g.dispatches;
            g.fused(Fused::PairContrastiveForward { pd, pc, x: &i[0], t: &i[1], d: &o[0], loss: &o[1] });
            launches = g.dispatches - before;
        });
        let apart = gpu_run(gpu, &[&x, &t], &outputs, |g, i, o| {
            g.pair_distance_forward(&pd, &i[0], &o[0]);
            g.contrastive_forward(&pc, &o[0], &i[1], &o[1]);
        });
        assert_eq!(launches, 1, "pair_contrastive_forward {name}: launches");
        for (k, what) in ["d", "loss"].iter().enumerate() {
            assert_close(
                &format!("pair_contrastive_forward {what} {name}"),
                &apart[k],
                &fused[k],
                fused_tolerance(gpu),
            );
        }
        let mut loss = [0.0f32];
        cpu::contrastive_forward(&pc, &dist, &t, &mut loss);
        assert_close(&format!("pair_contrastive_forward loss {name} (CPU)"), &f64s(&loss), &fused[1], TOL);
        let dist = to_f32(&fused[0]);
        for (acc, dx0) in grad_modes(&mut r, 2 * n * d, ACCUMULATE_INPUT) {
            let pd = PairDistanceParams { accumulate: acc, ..pd };
            let fused = gpu_run(gpu, &[&x, &dist, &t, &dloss], &[&dx0], |g, i, o| {
                let before = g.dispatches;
                let op = PairContrastiveBackward { pd, pc, x: &i[0], d: &i[1], t: &i[2], dloss: &i[3], dx: &o[0] };
                g.fused(Fused::PairContrastiveBackward(op));
                launches = g.dispatches - before;
            });
            let apart = gpu_run(gpu, &[&x, &dist, &t, &dloss], &[&dx0], |g, i, o| {
                let dd = g.zeros(n);
                g.contrastive_backward(&pc, &i[1], &i[2], &i[3], &dd);
                g.pair_distance_backward(&pd, &i[0], &i[1], &dd, &o[0]);
            });
            assert_eq!(launches, 1, "pair_contrastive_backward {name}: launches");
            let what = format!("pair_contrastive_backward {name} accumulate={acc}");
            assert_close(&what, &apart[0], &fused[0], fused_tolerance(gpu));
            let (mut dd, mut dx) = (vec![0.0f32; n], dx0.clone());
            cpu::contrastive_backward(&pc, &dist, &t, &dloss, &mut dd);
            cpu::pair_distance_backward(&pd, &x, &dist, &dd, &mut dx);
            assert_close(&format!("{what} (CPU)"), &f64s(&dx), &fused[0], TOL);
        }
    });
}

#[test]
fn distance_and_loss_shapes() {
    distance_and_loss_case("tiny", 1, 1);
    distance_and_loss_case("odd", 37, 3);
    distance_and_loss_case("train", 128, 8);
    distance_and_loss_case("big", 1000, 8);
}

/// The loss head's forward (Linear, distance, loss) as one op against its three ops apart:
/// one launch on a GPU's kernel set, the same bits on a CPU adapter.
fn loss_head_case(name: &str, pairs: usize, d_in: usize, d_out: usize) {
    for relu in [false, true] {
        with_gpu(&format!("loss head {name}"), |gpu| {
            let mut r = rng((pairs + d_in * d_out) as u64);
            let linear = LinearParams::new(2 * pairs, d_in, d_out).with_towers(2).with_relu_input(relu);
            let pd = PairDistanceParams::new(pairs, d_out);
            let pc = ContrastiveParams::new(pairs, 2.0);
            let (x, w, b) = (randn(&mut r, 2 * pairs * d_in), randn(&mut r, d_out * d_in), randn(&mut r, d_out));
            let t: Vec<f32> = (0..pairs).map(|i| (i % 3 == 0) as u8 as f32).collect();
            let outputs = [vec![f32::NAN; 2 * pairs * d_out], vec![f32::NAN; pairs], vec![f32::NAN]];
            let outputs: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
            let mut launches = 0;
            let fused = gpu_run(gpu, &[&x, &w, &b, &t], &outputs, |g, i, o| {
                let before = g.dispatches;
                let (x, w, b, t, y, d, loss) = (&i[0], &i[1], &i[2], &i[3], &o[0], &o[1], &o[2]);
                let op = LinearPairContrastiveForward { linear, x, w, b, y, pd, pc, t, d, loss };
                g.fused(Fused::LinearPairContrastiveForward(op));
                launches = g.dispatches - before;
            });
            let apart = gpu_run(gpu, &[&x, &w, &b, &t], &outputs, |g, i, o| {
                g.linear_forward(&linear, &i[0], &i[1], &i[2], &o[0]);
                g.pair_distance_forward(&pd, &o[0], &o[1]);
                g.contrastive_forward(&pc, &o[1], &i[3], &o[2]);
            });
            let name = format!("linear_pair_contrastive_forward {name} relu={relu}");
            let head_kernel = !gpu.plane_at_a_time() && d_out <= 16;
            assert_eq!(launches, if head_kernel { 1 } else { 2 }, "{name}: launches");
            for (k, what) in ["y", "d", "loss"].iter().enumerate() {
                assert_close(&format!("{name} {what}"), &apart[k], &fused[k], fused_tolerance(gpu));
            }
            let mut y = vec![0.0f32; 2 * pairs * d_out];
            cpu::linear_forward(&linear, &x, &w, &b, &mut y);
            let mut d = vec![0.0f32; pairs];
            cpu::pair_distance_forward(&pd, &y, &mut d);
            let mut loss = [0.0f32];
            cpu::contrastive_forward(&pc, &d, &t, &mut loss);
            assert_close(&format!("{name} loss (CPU)"), &f64s(&loss), &fused[2], TOL);
        });
    }
}

#[test]
fn loss_head_shapes() {
    loss_head_case("tiny", 1, 1, 1);
    loss_head_case("odd", 37, 5, 3);
    loss_head_case("train", 128, 49, 8);
    // More pairs than the workgroup's invocations, and embeddings wider than it holds.
    loss_head_case("big", 300, 49, 8);
    loss_head_case("wide", 5, 7, 17);
}

#[test]
fn adam_matches_the_reference() {
    with_gpu("adam", |gpu| {
        let mut r = rng(5);
        let cfg = AdamConfig::default();
        for len in [1, 1000, 1664] {
            let (p0, g, m0, v0) =
                (randn(&mut r, len), randn(&mut r, len), randn(&mut r, len), to_f32(&uniform(&mut r, len, 0.0, 1.0)));
            for t in [1, 2, 100] {
                let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                cpu::adam_step(&cfg, t, &mut p, &g, &mut m, &mut v);
                let got =
                    gpu_run(gpu, &[&g], &[&p0, &m0, &v0], |gg, i, o| gg.adam_step(&cfg, t, &o[0], &i[0], &o[1], &o[2]));
                assert_close(&format!("adam_step params len={len} t={t}"), &f64s(&p), &got[0], TOL);
                assert_close(&format!("adam_step m len={len} t={t}"), &f64s(&m), &got[1], TOL);
                assert_close(&format!("adam_step v len={len} t={t}"), &f64s(&v), &got[2], TOL);
            }
        }
    });
}

#[test]
fn gather_and_fill_match_the_reference() {
    with_gpu("gather", |gpu| {
        let mut r = rng(9);
        // 5 images of 7 pixels: the image size is no multiple of the 4-byte packing.
        let pixels: Vec<u8> = uniform(&mut r, 35, 0.0, 256.0).iter().map(|&v| v as u8).collect();
        let indices = [4u32, 0, 2, 2, 1, 3];
        let mut want = vec![0.0f32; indices.len() * 7];
        cpu::gather_images(&pixels, 7, &indices, &mut want);
        let images = gpu.upload_images(&pixels, 7);
        let out = gpu.zeros(want.len());
        gpu.gather_images(&images, &indices, &out);
        assert_close("gather_images", &f64s(&want), &f64s(&gpu.read(&out)), 0.0);
        assert!(
            want.iter().zip(gpu.read(&out)).all(|(a, b)| a.to_bits() == b.to_bits()),
            "gather_images: not bit-identical"
        );

        let t = gpu.zeros(1001);
        gpu.fill(&t, 2.5);
        assert!(gpu.read(&t).iter().all(|&v| v == 2.5), "fill");
        let (a, b) = (gpu.upload(&randn(&mut r, 1001)), gpu.upload(&randn(&mut r, 1001)));
        let (av, bv) = (gpu.read(&a), gpu.read(&b));
        gpu.accumulate(&a, &b);
        let sum: Vec<f64> = av.iter().zip(&bv).map(|(x, y)| (x + y) as f64).collect();
        assert_close("accumulate", &sum, &f64s(&gpu.read(&b)), 0.0);
        gpu.copy(&a, &b);
        assert_close("copy", &f64s(&av), &f64s(&gpu.read(&b)), 0.0);
    });
}

/// Determinism: the same inputs give the same bits, run after run (no atomics anywhere).
#[test]
fn reductions_are_bit_identical_run_to_run() {
    with_gpu("determinism", |gpu| {
        let mut r = rng(11);
        let p = Conv2dParams::same(256, 4, 28, 28, 4, 3);
        let (x, dy) = (randn(&mut r, p.x_len()), randn(&mut r, p.y_len()));
        let bn = BatchNormParams::new(256, 4, 784, 2);
        let run = |gpu: &mut GpuBackend| {
            let (dw, db) = (gpu.zeros(p.w_len()), gpu.zeros(4));
            let (xt, dyt) = (gpu.upload(&x), gpu.upload(&dy));
            gpu.conv2d_backward_weight(&p, &xt, &dyt, ParamGrads { dw: &dw, db: &db });
            let (g, b, y, saved, rm, rv) = (
                gpu.upload(&[1.0; 4]),
                gpu.zeros(4),
                gpu.zeros(bn.len()),
                gpu.zeros(bn.saved_len()),
                gpu.zeros(4),
                gpu.zeros(4),
            );
            let t = BatchNormTrain { x: &xt, gamma: &g, beta: &b, y: &y, saved: &saved, mean: &rm, var: &rv };
            batchnorm_train(gpu, &bn, t);
            let (dx, dg, dbeta) = (gpu.zeros(bn.len()), gpu.zeros(4), gpu.zeros(4));
            let norm = Norm { p: bn, gamma: &g, beta: &b, saved: &saved };
            gpu.batchnorm_backward(&norm, &xt, &xt, NormGrads { dx: &dx, dgamma: &dg, dbeta: &dbeta });
            [gpu.read(&dw), gpu.read(&db), gpu.read(&saved), gpu.read(&dx), gpu.read(&dg)]
                .concat()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        let first = run(gpu);
        for _ in 0..3 {
            assert!(run(gpu) == first, "a reduction gave different bits on a rerun");
        }
    });
}

/// NaN wins a window, the last NaN of several: the same rule on the CPU and every GPU kernel
/// (widths of a multiple of 4 take the window-pair kernels, other even ones the per-window
/// backward, odd ones the per-element one).
#[test]
fn maxpool_nan_windows() {
    const N: f32 = f32::NAN;
    for (w, x) in [
        (8, vec![N, 1., 2., N, 0., 0., 5., N, 3., 4., 1., 1., N, 0., N, 2.]),
        (5, vec![1., N, 0., 2., 9., N, 3., N, N, 9.]),
        (6, vec![N, 1., 2., N, 0., 0., 3., 4., 1., 1., N, 0.]),
    ] {
        with_gpu("maxpool nan", |gpu| {
            let p = MaxPoolParams::new(1, 1, 2, w);
            let dy: Vec<f32> = (1..=p.y_len()).map(|v| v as f32).collect();
            let mut y = vec![0.0f32; p.y_len()];
            cpu::maxpool_forward(&p, &x, &mut y);
            let got = gpu_run(gpu, &[&x], &[&vec![0.0; p.y_len()]], |g, i, o| g.maxpool_forward(&p, &i[0], &o[0]));
            let same = |a: f32, b: f64| (a.is_nan() && b.is_nan()) || a as f64 == b;
            assert!(y.iter().zip(&got[0]).all(|(&a, &b)| same(a, b)), "forward w={w}: {y:?} vs {:?}", got[0]);
            assert!(y.iter().any(|v| v.is_nan()), "the case has NaN windows");
            let mut dx = vec![0.0f32; p.x_len()];
            cpu::maxpool_backward(&p, &x, &dy, &mut dx);
            let got = gpu_run(gpu, &[&x, &dy], &[&vec![0.0; p.x_len()]], |g, i, o| {
                g.maxpool_backward(&p, &i[0], &i[1], &o[0])
            });
            assert_eq!(f64s(&dx), got[0], "backward w={w}");
        });
    }
}

/// A conv that hands its output's plane moments to the BatchNorm(ReLU) after it: the moments
/// match the CPU reference's, and statistics taken from them match statistics taken from
/// the output itself (on the subgroup kernels, which compute them in the conv's own launch,
/// and on the others).
#[test]
fn conv2d_moments_forward_hands_plane_moments() {
    for (c_in, side, c_out) in [(4, 14, 8), (1, 28, 4), (8, 7, 1)] {
        for subgroups in [true, false] {
            with_gpu("conv2d_moments_forward", |gpu| {
                gpu.driver = gpu.ctx.driver.filter(|_| subgroups);
                let mut r = rng(side as u64 * 7 + c_out as u64);
                let n = 18;
                let pc = Conv2dParams::same(n, c_in, side, side, c_out, 3).with_towers(2);
                let pb = BatchNormParams::new(n, c_out, side * side, 2).with_relu_input(true);
                let (x, w, b) = (randn(&mut r, pc.x_len()), randn(&mut r, pc.w_len()), randn(&mut r, c_out));
                let mut conv = vec![0.0f32; pc.y_len()];
                cpu::conv2d_forward(&pc, &x, &w, &b, &mut conv);
                let mut moments = vec![0.0f32; 2 * n * c_out];
                cpu::batchnorm_plane_moments(&pb, &conv, &mut moments);
                let (mut saved, mut rm, mut rv) = (vec![0.0f32; pb.saved_len()], vec![0.0; c_out], vec![1.0; c_out]);
                cpu::batchnorm_statistics(&pb, &conv, &mut saved, &mut rm, &mut rv);
                let outputs = [vec![f32::NAN; pc.y_len()], vec![f32::NAN; moments.len()], vec![0.0; pb.saved_len()]];
                let outputs: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
                let name = format!("{c_in}->{c_out} at {side}, subgroups={subgroups}");
                let got = gpu_run(gpu, &[&x, &w, &b, &vec![0.0; c_out], &vec![1.0; c_out]], &outputs, |g, i, o| {
                    let moments = Moments { p: pb, out: &o[1] };
                    let conv = Conv { p: pc, w: &i[1], b: &i[2] };
                    g.fused(Fused::Conv2dMomentsForward { conv, x: &i[0], y: &o[0], moments });
                    g.batchnorm_statistics(&pb, &o[0], Some(&o[1]), &o[2], Running { mean: &i[3], var: &i[4] });
                });
                assert_close(&format!("y {name}"), &f64s(&conv), &got[0], TOL);
                assert_close(&format!("moments {name}"), &f64s(&moments), &got[1], TOL);
                assert_close(&format!("saved {name}"), &f64s(&saved), &got[2], TOL);
                gpu.driver = gpu.ctx.driver;
            });
        }
    }
}

/// Weight gradients going to views of one flat buffer (the model's gradients) wait and are
/// summed in one launch for all the layers (src/gpu/weight_sums.rs): the same bits as each
/// layer's summed at once into buffers of its own, a second gradient added into weights whose
/// sum still waits launching the waiting ones first, and one launch for the rest.
#[test]
fn weight_sums_wait_and_match() {
    use siamese::backend::{DeviceTensor, VIEW_ALIGN};
    with_gpu("weight sums", |gpu| {
        let mut r = rng(11);
        let shapes = [(1, (28, 28), 4), (4, (14, 14), 8), (8, (7, 7), 1)];
        let layers: Vec<_> = shapes
            .iter()
            .map(|&(c_in, (h, w), c_out)| {
                let p = Conv2dParams::same(16, c_in, h, w, c_out, 3).with_towers(2);
                (p, randn(&mut r, p.x_len()), randn(&mut r, p.y_len()))
            })
            .collect();
        // Layer 0 again at the end, added to its first gradient.
        let calls = [0, 1, 2, 0];
        let accumulate = |call: usize| if call == 3 { ACCUMULATE_PARAMS } else { 0 };

        let mut apart = Vec::new();
        for (i, &l) in calls.iter().enumerate() {
            let (p, x, dy) = &layers[l];
            let p = Conv2dParams { accumulate: accumulate(i), ..*p };
            let start =
                if i == 3 { apart[0..2].to_vec() } else { vec![vec![0.0; p.w_len()], vec![0.0; p.c_out as usize]] };
            let start: Vec<Vec<f32>> = start.iter().map(|v: &Vec<f64>| to_f32(v)).collect();
            let got = gpu_run(gpu, &[x, dy], &[&start[0], &start[1]], |g, i, o| {
                g.conv2d_backward_weight(&p, &i[0], &i[1], ParamGrads { dw: &o[0], db: &o[1] })
            });
            if i == 3 {
                apart.splice(0..2, got);
            } else {
                apart.extend(got);
            }
        }

        let places: Vec<usize> = layers.iter().flat_map(|(p, ..)| [p.w_len(), p.c_out as usize]).collect();
        let offsets: Vec<usize> = places
            .iter()
            .scan(0, |at, len| Some(std::mem::replace(at, *at + len.next_multiple_of(VIEW_ALIGN))))
            .collect();
        let flat = gpu.zeros(offsets.last().unwrap() + VIEW_ALIGN);
        let views: Vec<GpuTensor> = offsets.iter().zip(&places).map(|(&at, &len)| flat.view(at, len)).collect();
        let inputs: Vec<(GpuTensor, GpuTensor)> =
            layers.iter().map(|(_, x, dy)| (gpu.upload(x), gpu.upload(dy))).collect();
        gpu.sync();
        let before = gpu.dispatches;
        for (i, &l) in calls.iter().enumerate() {
            let p = Conv2dParams { accumulate: accumulate(i), ..layers[l].0 };
            gpu.conv2d_backward_weight(
                &p,
                &inputs[l].0,
                &inputs[l].1,
                ParamGrads { dw: &views[2 * l], db: &views[2 * l + 1] },
            );
        }
        gpu.sync();
        // Four weight-gradient launches; the three first sums in one launch, before the fourth
        // gradient's sum adds to one of them; that one alone.
        assert_eq!(gpu.dispatches - before, 4 + 2, "weight sums launches");
        for (k, view) in views.iter().enumerate() {
            let got = f64s(&gpu.read(view));
            assert_close(
                &format!("weight sums, layer {} {}", k / 2, ["dw", "db"][k % 2]),
                &apart[k],
                &got,
                fused_tolerance(gpu),
            );
        }
    });
}

/// The tiled convs' packed weights are packed once per change of the weights: a second
/// forward launches only the conv, and every kind of write to the weights (an upload, a
/// kernel's, a copy) is seen by the next forward.
#[test]
fn packed_weights_follow_every_write() {
    with_gpu("packed weights", |gpu| {
        gpu.driver = None;
        let p = Conv2dParams::same(3, 4, 28, 28, 4, 3);
        let mut r = rng(41);
        let (x, b) = (randn(&mut r, p.x_len()), randn(&mut r, 4));
        let (xt, bt, yt) = (gpu.upload(&x), gpu.upload(&b), gpu.zeros(p.y_len()));
        let w = gpu.zeros(p.w_len());
        let check = |gpu: &mut GpuBackend, w_host: &[f32], what: &str, launches: u64| {
            let before = gpu.dispatches;
            gpu.conv2d_forward(&p, &xt, &w, &bt, &yt);
            assert_eq!(gpu.dispatches - before, launches, "{what}: launches");
            let mut want = vec![0.0f32; p.y_len()];
            cpu::conv2d_forward(&p, &x, w_host, &b, &mut want);
            assert_close(what, &f64s(&want), &f64s(&gpu.read(&yt)), 1e-6);
        };
        let w1 = randn(&mut r, p.w_len());
        gpu.write(&w, &w1);
        check(gpu, &w1, "after an upload", 2);
        check(gpu, &w1, "unchanged", 1);
        gpu.fill(&w, 0.25);
        check(gpu, &vec![0.25; p.w_len()], "after a kernel's write", 2);
        let w2 = randn(&mut r, p.w_len());
        let src = gpu.upload(&w2);
        gpu.record_copy(&src, &w);
        check(gpu, &w2, "after a copy", 2);
        gpu.driver = gpu.ctx.driver;
    });
}
