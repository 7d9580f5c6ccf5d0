//! The CPU reference (f32 and f64) and the GPU against PyTorch's own outputs and gradients
//! (tests/fixtures, made by scripts/make_fixtures.py): every op of ops_fixture,
//! and one whole training step plus two Adam steps of parity_fixture.
//!
//! f32 runs are compared with PyTorch's f32 results; the f64 reference with PyTorch's f64
//! results, which are the exact answers for the same inputs. Each test prints the error it
//! reached per tensor group, for the notes.

use std::collections::BTreeMap;

use siamese::backend::{Backend, DeviceTensor, Norm, NormGrads, ParamGrads, Running};
use siamese::cpu::{CpuBackend, Float};
use siamese::gpu::GpuBackend;
use siamese::model::{FEATURE_NET, SiameseNet, Weights};
use siamese::ops::*;
use siamese::optim::Adam;
use siamese::tape::{Mode, Tape};

use crate::util::*;

/// f32 against PyTorch f32: two roundings of different summation orders, through up to 16
/// layers (BatchNorm's backward subtracts nearly equal sums).
const TOL_F32: f64 = 2e-5;
/// f64 against PyTorch f64: only summation order differs.
const TOL_F64: f64 = 1e-10;

/// Largest relative error seen per group of tensors, printed at the end of a test.
#[derive(Default)]
struct Report(BTreeMap<String, f64>);

impl Report {
    fn check(&mut self, group: &str, what: &str, want: &[f64], got: &[f64], tol: f64) {
        let err = assert_close(what, want, got, tol);
        let e = self.0.entry(group.to_string()).or_insert(0.0);
        *e = e.max(err);
    }
    fn print(&self, title: &str) {
        eprintln!("{title}: largest relative L2 error per group");
        for (group, err) in &self.0 {
            eprintln!("  {group:<28} {err:.2e}");
        }
    }
}

fn read<B: Backend>(b: &mut B, t: &B::Tensor) -> Vec<f64> {
    b.read(t).iter().map(|v| v.to_f64()).collect()
}

fn upload<B: Backend>(b: &mut B, v: &[f64]) -> B::Tensor {
    let e: Vec<B::Elem> = v.iter().map(|&x| B::Elem::from_f64(x)).collect();
    b.upload(&e)
}

/// Every op of ops_fixture on backend `b`.
fn ops_fixture_on<B: Backend>(b: &mut B, fx: &Fixture, tol: f64, report: &mut Report) {
    let name = b.name();
    let mut t = |key: &str| upload(b, &fx.get(key));
    // conv2d
    let (x, w, bias, gy) = (t("conv2d.x"), t("conv2d.w"), t("conv2d.b"), t("conv2d.gy"));
    let p = Conv2dParams::same(2, 3, 9, 9, 4, 3);
    let (y, gx, gw, gb) = (b.zeros(p.y_len()), b.zeros(p.x_len()), b.zeros(p.w_len()), b.zeros(4));
    b.conv2d_forward(&p, &x, &w, &bias, &y);
    b.conv2d_backward_input(&p, &gy, &w, &gx);
    b.conv2d_backward_weight(&p, &x, &gy, ParamGrads { dw: &gw, db: &gb });
    for (key, t) in [("y", &y), ("gx", &gx), ("gw", &gw), ("gb", &gb)] {
        report.check("conv2d", &format!("{name} conv2d.{key}"), &fx.get(&format!("conv2d.{key}")), &read(b, t), tol);
    }
    // batchnorm, train mode from running stats 0/1, then eval with the updated ones
    let mut t = |key: &str| upload(b, &fx.get(key));
    let (x, gamma, beta, gy) = (t("bn.x"), t("bn.gamma"), t("bn.beta"), t("bn.gy"));
    let p = BatchNormParams::new(4, 3, 36, 1);
    let (y, saved, rm, rv) = (b.zeros(p.len()), b.zeros(p.saved_len()), b.zeros(3), b.upload(&[B::Elem::ONE; 3]));
    batchnorm_train(
        b,
        &p,
        BatchNormTrain { x: &x, gamma: &gamma, beta: &beta, y: &y, saved: &saved, mean: &rm, var: &rv },
    );
    let (gx, gg, gbeta, ye) = (b.zeros(p.len()), b.zeros(3), b.zeros(3), b.zeros(p.len()));
    let norm = Norm { p, gamma: &gamma, beta: &beta, saved: &saved };
    b.batchnorm_backward(&norm, &x, &gy, NormGrads { dx: &gx, dgamma: &gg, dbeta: &gbeta });
    batchnorm_eval(b, &p, (&x, &gamma, &beta), Running { mean: &rm, var: &rv }, &ye);
    for (key, t) in [
        ("y", &y),
        ("gx", &gx),
        ("ggamma", &gg),
        ("gbeta", &gbeta),
        ("running_mean_after", &rm),
        ("running_var_after", &rv),
        ("y_eval_with_running", &ye),
    ] {
        report.check("batchnorm", &format!("{name} bn.{key}"), &fx.get(&format!("bn.{key}")), &read(b, t), tol);
    }
    // maxpool and relu: exact
    let mut t = |key: &str| upload(b, &fx.get(key));
    let (x, gy) = (t("maxpool.x"), t("maxpool.gy"));
    let p = MaxPoolParams::new(2, 3, 8, 8);
    let (y, gx) = (b.zeros(p.y_len()), b.zeros(p.x_len()));
    b.maxpool_forward(&p, &x, &y);
    b.maxpool_backward(&p, &x, &gy, &gx);
    report.check("maxpool", &format!("{name} maxpool.y"), &fx.get("maxpool.y"), &read(b, &y), 0.0);
    report.check("maxpool", &format!("{name} maxpool.gx"), &fx.get("maxpool.gx"), &read(b, &gx), 0.0);
    let mut t = |key: &str| upload(b, &fx.get(key));
    let (x, gy) = (t("relu.x"), t("relu.gy"));
    let (y, gx) = (b.zeros(200), b.zeros(200));
    b.relu_forward(&x, &y);
    b.relu_backward(&y, &gy, &gx, 0);
    report.check("relu", &format!("{name} relu.y"), &fx.get("relu.y"), &read(b, &y), 0.0);
    report.check("relu", &format!("{name} relu.gx"), &fx.get("relu.gx"), &read(b, &gx), 0.0);
    // linear
    let mut t = |key: &str| upload(b, &fx.get(key));
    let (x, w, bias, gy) = (t("linear.x"), t("linear.w"), t("linear.b"), t("linear.gy"));
    let p = LinearParams::new(5, 49, 8);
    let (y, gx, gw, gb) = (b.zeros(40), b.zeros(5 * 49), b.zeros(8 * 49), b.zeros(8));
    b.linear_forward(&p, &x, &w, &bias, &y);
    b.linear_backward(&p, &x, &w, &gy, Some(&gx), ParamGrads { dw: &gw, db: &gb });
    for (key, t) in [("y", &y), ("gx", &gx), ("gw", &gw), ("gb", &gb)] {
        report.check("linear", &format!("{name} linear.{key}"), &fx.get(&format!("linear.{key}")), &read(b, t), tol);
    }
    // pairwise distance: our op takes the towers stacked
    let stacked = [fx.get("pdist.x1"), fx.get("pdist.x2")].concat();
    let x = upload(b, &stacked);
    let gd = upload(b, &fx.get("pdist.gd"));
    let p = PairDistanceParams::new(6, 8);
    let (d, gx) = (b.zeros(6), b.zeros(96));
    b.pair_distance_forward(&p, &x, &d);
    b.pair_distance_backward(&p, &x, &d, &gd, &gx);
    report.check("pair_distance", &format!("{name} pdist.d"), &fx.get("pdist.d"), &read(b, &d), tol);
    let want = [fx.get("pdist.gx1"), fx.get("pdist.gx2")].concat();
    report.check("pair_distance", &format!("{name} pdist.gx1|gx2"), &want, &read(b, &gx), tol);
    // contrastive loss, through the distance as PyTorch differentiates it
    let x = upload(b, &[fx.get("closs.p1"), fx.get("closs.p2")].concat());
    let tgt = upload(b, &fx.get("closs.t"));
    let (d, loss, one, dd, gx) = (b.zeros(8), b.zeros(1), b.upload(&[B::Elem::ONE]), b.zeros(8), b.zeros(128));
    let (pd, pc) = (PairDistanceParams::new(8, 8), ContrastiveParams::new(8, 2.0));
    b.pair_distance_forward(&pd, &x, &d);
    b.contrastive_forward(&pc, &d, &tgt, &loss);
    b.contrastive_backward(&pc, &d, &tgt, &one, &dd);
    b.pair_distance_backward(&pd, &x, &d, &dd, &gx);
    report.check("contrastive", &format!("{name} closs.d"), &fx.get("closs.d"), &read(b, &d), tol);
    report.check("contrastive", &format!("{name} closs.loss"), &fx.get("closs.loss"), &read(b, &loss), tol);
    let want = [fx.get("closs.gp1"), fx.get("closs.gp2")].concat();
    report.check("contrastive", &format!("{name} closs.gp1|gp2"), &want, &read(b, &gx), tol);
}

#[test]
fn ops_cpu_f32() {
    let mut report = Report::default();
    ops_fixture_on(&mut CpuBackend::<f32>::new(), &Fixture::load("ops_fixture.safetensors"), TOL_F32, &mut report);
    report.print("ops_fixture, CPU reference f32 vs PyTorch f32");
}

#[test]
fn ops_cpu_f64() {
    let mut report = Report::default();
    ops_fixture_on(&mut CpuBackend::<f64>::new(), &Fixture::load("ops_fixture_f64.safetensors"), TOL_F64, &mut report);
    report.print("ops_fixture, CPU reference f64 vs PyTorch f64");
}

#[test]
fn ops_gpu() {
    with_gpu("ops_gpu", |gpu| {
        let mut report = Report::default();
        ops_fixture_on(gpu, &Fixture::load("ops_fixture.safetensors"), TOL_F32, &mut report);
        report.print("ops_fixture, GPU vs PyTorch f32");
    });
}

/// Flat buffers of `layout` filled from fixture keys `prefix.<name>`.
fn flat(fx: &Fixture, layout: &siamese::model::Layout, prefix: &str) -> Vec<f64> {
    let mut v = vec![0.0; layout.len];
    for e in &layout.entries {
        v[e.offset..][..e.len()].copy_from_slice(&fx.get(&format!("{prefix}.{}", e.name)));
    }
    v
}

/// The state after an Adam step against fixture keys `prefix.<name>`.
fn check_state<B: Backend>(b: &mut B, weights: &Weights<B>, fx: &Fixture, prefix: &str, tol: f64, report: &mut Report) {
    let (params, buffers) = (read(b, &weights.params), read(b, &weights.buffers));
    for e in &weights.layout.entries {
        let want = fx.get(&format!("{prefix}.{}", e.name));
        report.check(
            &format!("{prefix} params"),
            &format!("{} {prefix}.{}", b.name(), e.name),
            &want,
            &params[e.offset..][..e.len()],
            tol,
        );
    }
    for e in &weights.buffer_layout.entries {
        let want = fx.get(&format!("{prefix}.{}", e.name));
        report.check(
            &format!("{prefix} bn buffers"),
            &format!("{} {prefix}.{}", b.name(), e.name),
            &want,
            &buffers[e.offset..][..e.len()],
            tol,
        );
    }
    for k in [2, 5, 9, 12] {
        let want = fx.get(&format!("{prefix}.feature_net.{k}.num_batches_tracked"))[0];
        assert_eq!(weights.batches_tracked as f64, want, "{prefix}.feature_net.{k}.num_batches_tracked");
    }
}

/// One forward and backward of the 16 fixture pairs (both towers in one stacked batch, with
/// per-tower BatchNorm statistics), then an Adam step. Step 1 runs every layer as the model
/// writes it and checks every activation too; step 2 runs fused, as training does.
#[allow(clippy::too_many_arguments)]
fn train_step<B: Backend>(
    b: &mut B,
    net: &SiameseNet,
    weights: &mut Weights<B>,
    adam: &mut Adam<B>,
    fx: &Fixture,
    step: u32,
    tol: f64,
    report: &mut Report,
) {
    let name = b.name();
    b.reset_scratch();
    let images = [fx.get("input.img1"), fx.get("input.img2")].concat();
    let mut tape = if step == 1 { Tape::with_rules(b, Mode::Train, &[]) } else { Tape::new(b, Mode::Train) };
    let x = upload(tape.backend(), &images);
    let x = tape.input(x, &[32, 1, 28, 28]);
    let t = upload(tape.backend(), &fx.get("input.target"));
    let t = tape.input(t, &[16]);
    let (emb, layers) = net.forward_layers(&mut tape, weights, x, 2);
    let d = tape.pair_distance(emb);
    let loss = tape.contrastive_loss(d, t, 2.0);
    weights.count_batches(2);
    tape.backward(loss);
    let out = |tape: &mut Tape<B>, v| tape.read(v).iter().map(|x| x.to_f64()).collect::<Vec<_>>();
    let prefix = if step == 1 { String::new() } else { format!("step{step}.") };
    report.check(
        &format!("{prefix}loss"),
        &format!("{name} {prefix}loss"),
        &fx.get(&format!("{}loss", if step == 1 { "output." } else { &prefix })),
        &out(&mut tape, loss),
        tol,
    );
    if step == 1 {
        for (k, &v) in layers.iter().enumerate() {
            let a = out(&mut tape, v);
            let half = a.len() / 2;
            let group = format!("activations ({:?})", FEATURE_NET[k]).replace(" { ", "(").replace(" }", ")");
            report.check(&group, &format!("{name} act1.{k}"), &fx.get(&format!("act1.{k}")), &a[..half], tol);
            report.check(&group, &format!("{name} act2.{k}"), &fx.get(&format!("act2.{k}")), &a[half..], tol);
        }
        let e = out(&mut tape, emb);
        report.check("embeddings", &format!("{name} output.p1"), &fx.get("output.p1"), &e[..128], tol);
        report.check("embeddings", &format!("{name} output.p2"), &fx.get("output.p2"), &e[128..], tol);
        report.check("distances", &format!("{name} output.d"), &fx.get("output.d"), &out(&mut tape, d), tol);
    }
    drop(tape);
    let grads = read(b, &weights.grads);
    for e in &weights.layout.entries {
        let key = format!("{prefix}grad.{}", e.name);
        report.check(
            &format!("{prefix}gradients"),
            &format!("{name} {key}"),
            &fx.get(&key),
            &grads[e.offset..][..e.len()],
            tol,
        );
    }
    if step == 1 {
        let buffers = read(b, &weights.buffers);
        for e in &weights.buffer_layout.entries {
            let key = format!("after_fwd.{}", e.name);
            report.check(
                "bn running stats (both towers)",
                &format!("{name} {key}"),
                &fx.get(&key),
                &buffers[e.offset..][..e.len()],
                tol,
            );
        }
        assert_eq!(weights.batches_tracked, 2, "num_batches_tracked after both towers");
    }
    adam.step(b, weights);
    check_state(b, weights, fx, &format!("step{step}"), tol, report);
}

fn parity_fixture_on<B: Backend>(b: &mut B, fx: &Fixture, tol: f64) -> Report {
    let net = SiameseNet::new(8);
    let (params, buffers) = (flat(fx, &net.params(), "init"), flat(fx, &net.buffers(), "init"));
    let mut weights = Weights::new(b, net, &params, &buffers);
    let mut adam = Adam::new(b, AdamConfig::default(), weights.layout.len);
    let mut report = Report::default();
    for step in [1, 2] {
        train_step(b, &net, &mut weights, &mut adam, fx, step, tol, &mut report);
    }
    assert!(weights.params.len() == net.params().len);
    report
}

#[test]
fn training_step_cpu_f32() {
    parity_fixture_on(&mut CpuBackend::<f32>::new(), &Fixture::load("parity_fixture.safetensors"), TOL_F32)
        .print("parity_fixture, CPU reference f32 vs PyTorch f32");
}

#[test]
fn training_step_cpu_f64() {
    parity_fixture_on(&mut CpuBackend::<f64>::new(), &Fixture::load("parity_fixture_f64.safetensors"), TOL_F64)
        .print("parity_fixture, CPU reference f64 vs PyTorch f64");
}

#[test]
fn training_step_gpu() {
    with_gpu("training_step_gpu", |gpu: &mut GpuBackend| {
        parity_fixture_on(gpu, &Fixture::load("parity_fixture.safetensors"), TOL_F32)
            .print("parity_fixture, GPU vs PyTorch f32");
    });
}
