//! The tape: a value used twice receives the sum of both gradients; eval mode uses the running
//! statistics, records nothing and leaves the running statistics alone.

use siamese::backend::{Backend, DeviceTensor};
use siamese::cpu::{self, CpuBackend};
use siamese::gpu::GpuBackend;
use siamese::model::{SiameseNet, Traced, Weights};
use siamese::params::BatchNormParams;
use siamese::tape::{Mode, Tape};

use crate::util::*;

/// conv(w) → relu → conv(the same w) → distance → loss: w and b each feed two ops.
/// Returns (loss, dw, db) on backend `b`.
fn shared_weight_graph<B: Backend>(b: &mut B, x: &[f64], w: &[f64], bias: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
    let to = |v: &[f64]| v.iter().map(|&x| <B::Elem as cpu::Float>::from_f64(x)).collect::<Vec<_>>();
    let back = |v: Vec<B::Elem>| v.iter().map(|x| cpu::Float::to_f64(*x)).collect::<Vec<f64>>();
    let (wt, bt) = (b.upload(&to(w)), b.upload(&to(bias)));
    let (dw, db) = (b.zeros(9), b.zeros(1));
    let mut tape = Tape::new(b, Mode::Train);
    let xt = tape.backend().upload(&to(x));
    let x = tape.input(xt, &[4, 1, 3, 3]);
    let w = tape.param(wt, dw.clone(), &[1, 1, 3, 3]);
    let bb = tape.param(bt, db.clone(), &[1]);
    let h = tape.conv2d(x, w, bb, 2);
    let h = tape.relu(h);
    let h = tape.conv2d(h, w, bb, 2);
    let h = tape.reshape(h, &[4, 9]);
    let d = tape.pair_distance(h);
    let t = tape.backend().upload(&to(&[0.0, 1.0]));
    let t = tape.input(t, &[2]);
    let loss = tape.contrastive_loss(d, t, 2.0);
    tape.backward(loss);
    let l = tape.data(loss).clone();
    drop(tape);
    (back(b.read(&l))[0], back(b.read(&dw)), back(b.read(&db)))
}

#[test]
fn a_weight_used_twice_gets_the_sum_of_both_gradients() {
    let mut r = rng(21);
    let (x, w, bias) = (uniform(&mut r, 36, -1.0, 1.0), uniform(&mut r, 9, -0.5, 0.5), vec![0.1]);
    let (_, dw, db) = shared_weight_graph(&mut CpuBackend::<f64>::new(), &x, &w, &bias);
    let eps = 1e-6;
    let loss = |w: &[f64], b: &[f64]| shared_weight_graph(&mut CpuBackend::<f64>::new(), &x, w, b).0;
    for j in 0..9 {
        let (mut up, mut down) = (w.clone(), w.clone());
        up[j] += eps;
        down[j] -= eps;
        let numeric = (loss(&up, &bias) - loss(&down, &bias)) / (2.0 * eps);
        assert!((dw[j] - numeric).abs() <= 1e-5 + 1e-3 * numeric.abs(), "dw[{j}]: tape {} vs numeric {numeric}", dw[j]);
    }
    let numeric = (loss(&w, &[bias[0] + eps]) - loss(&w, &[bias[0] - eps])) / (2.0 * eps);
    assert!((db[0] - numeric).abs() <= 1e-5 + 1e-3 * numeric.abs(), "db: tape {} vs numeric {numeric}", db[0]);

    // The GPU takes the accumulate path of its kernels for the second use.
    with_gpu("shared weights on the GPU", |gpu: &mut GpuBackend| {
        let (_, gw, gb) = shared_weight_graph(gpu, &x, &w, &bias);
        assert_close("shared-weight dw, GPU vs CPU", &dw, &gw, 1e-5);
        assert_close("shared-weight db, GPU vs CPU", &db, &gb, 1e-5);
    });
}

#[test]
fn eval_mode_uses_running_statistics_and_records_nothing() {
    let net = SiameseNet::new(8);
    let (params, mut buffers) = net.init(1);
    // Running statistics far from any batch's, so using the wrong ones shows.
    let bl = net.buffers();
    for e in &bl.entries {
        let v = if e.name.ends_with("mean") { 0.3 } else { 2.0 };
        buffers[e.offset..][..e.len()].fill(v);
    }
    let mut r = rng(22);
    let images = to_f32(&uniform(&mut r, 3 * 784, 0.0, 1.0));
    let mut cpu = CpuBackend::<f32>::new();
    let weights = Weights::new(&mut cpu, net, &params, &buffers);
    let before = cpu.read(&weights.buffers);

    let mut tape = Tape::new(&mut cpu, Mode::Eval);
    let x = tape.backend().upload(&images);
    let x = tape.input(x, &[3, 1, 28, 28]);
    let (emb, layers) = net.forward_layers(&mut tape, &weights, x, 1);
    assert_eq!(tape.len(), 0, "eval mode recorded ops");
    // Layer 2 is BatchNorm over layer 1, the ReLU of layer 0 (folded into the BatchNorm), both
    // read through by the conv after them: it must use the running statistics.
    let (Traced::ReluOf(h0), Traced::BatchNormOf { saved, .. }) = (layers[1], layers[2]) else {
        panic!("the model's first ReLU and BatchNorm run inside the conv after them: {:?}", &layers[..3]);
    };
    let (h0, saved) = (tape.data(h0).clone(), tape.data(saved).clone());
    let emb_all = tape.data(emb).clone();
    drop(tape);
    let p = BatchNormParams::new(3, 4, 784, 1);
    let e = weights.layout.get("feature_net.2.weight");
    let pv = cpu.read(&weights.params);
    let (gamma, beta) = (&pv[e.offset..][..4], &pv[weights.layout.get("feature_net.2.bias").offset..][..4]);
    let invstd = (1.0 / (2.0f64 + 1e-5).sqrt()) as f32;
    assert_eq!(cpu.read(&saved), [[0.3; 4], [invstd; 4]].concat(), "eval BatchNorm statistics");
    let (h0, saved) = (cpu.read(&h0), cpu.read(&saved));
    let (mut want, mut got) = (vec![0.0f32; p.len()], vec![0.0f32; p.len()]);
    let p = p.with_relu_input(true);
    cpu::batchnorm_forward_eval(&p, &h0, gamma, beta, &[0.3; 4], &[2.0; 4], &mut want);
    cpu::batchnorm_normalise(&p, &h0, gamma, beta, &saved, &mut got);
    assert_close("eval BatchNorm output", &f64s(&want), &f64s(&got), 1e-6);
    assert_eq!(cpu.read(&weights.buffers), before, "eval mode changed the running statistics");

    // Without batch statistics an image's embedding does not depend on its batch.
    let emb_all = cpu.read(&emb_all);
    let mut tape = Tape::new(&mut cpu, Mode::Eval);
    let x1 = tape.backend().upload(&images[784..1568]);
    let x1 = tape.input(x1, &[1, 1, 28, 28]);
    let e1 = net.forward(&mut tape, &weights, x1, 1);
    let e1 = tape.data(e1).clone();
    drop(tape);
    assert_close("eval embedding alone vs in a batch", &f64s(&emb_all[8..16]), &f64s(&cpu.read(&e1)), 0.0);
    assert!(weights.grads.len() == weights.layout.len);
}
