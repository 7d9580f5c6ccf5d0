//! The tape: a value used twice receives the sum of both gradients; eval mode uses the running
//! statistics, records nothing and leaves the running statistics alone; every fusion rule gives
//! what the primitives it replaces give.

use siamese::backend::{Backend, DeviceTensor};
use siamese::cpu::{self, CpuBackend};
use siamese::fusion::{RULES, Rule};
use siamese::gpu::GpuBackend;
use siamese::graph::Node;
use siamese::model::{SiameseNet, Weights};
use siamese::ops::BatchNormParams;
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
    // Layer 2 is BatchNorm over layer 1, the ReLU of layer 0: kept, so that fusion leaves it.
    let (h0, bn) = (tape.keep(layers[0]), tape.keep(layers[2]));
    let (h0, bn) = (tape.data(h0).clone(), tape.data(bn).clone());
    assert_eq!(tape.len(), 0, "eval mode kept nodes");
    let emb_all = tape.data(emb).clone();
    drop(tape);
    let p = BatchNormParams::new(3, 4, 784, 1).with_relu_input(true);
    let e = weights.layout.get("feature_net.2.weight");
    let pv = cpu.read(&weights.params);
    let (gamma, beta) = (&pv[e.offset..][..4], &pv[weights.layout.get("feature_net.2.bias").offset..][..4]);
    let mut want = vec![0.0f32; p.len()];
    cpu::batchnorm_forward_eval(&p, &cpu.read(&h0), gamma, beta, &[0.3; 4], &[2.0; 4], &mut want);
    assert_close("eval BatchNorm output", &f64s(&want), &f64s(&cpu.read(&bn)), 1e-6);
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

/// One training step of the tutorial's network (16 pairs) on backend `b` with `rules`:
/// the loss, the distances, every gradient, the running statistics after it, and the nodes run.
fn step_with<B: Backend>(b: &mut B, rules: &[Rule]) -> (Vec<Vec<f64>>, Vec<Node>) {
    let net = SiameseNet::new(8);
    let (params, buffers) = net.init(5);
    let weights = Weights::new(b, net, &params, &buffers);
    let mut r = rng(23);
    let to = |v: &[f64]| v.iter().map(|&x| <B::Elem as cpu::Float>::from_f64(x)).collect::<Vec<_>>();
    let back = |v: Vec<B::Elem>| v.iter().map(|x| cpu::Float::to_f64(*x)).collect::<Vec<f64>>();
    let images = to(&uniform(&mut r, 32 * 784, 0.0, 1.0));
    let targets = to(&(0..16).map(|i| (i % 2) as f64).collect::<Vec<_>>());
    let mut tape = Tape::with_rules(b, Mode::Train, rules);
    let x = tape.backend().upload(&images);
    let x = tape.input(x, &[32, 1, 28, 28]);
    let t = tape.backend().upload(&targets);
    let t = tape.input(t, &[16]);
    let (loss, d) = net.loss(&mut tape, &weights, x, t, 2.0);
    tape.backward(loss);
    let (loss, d) = (tape.read(loss), tape.read(d));
    let nodes = tape.nodes().to_vec();
    drop(tape);
    let out = vec![back(loss), back(d), back(b.read(&weights.grads)), back(b.read(&weights.buffers))];
    (out, nodes)
}

/// Each fusion rule alone, and all of them, against no fusion: the same loss, distances,
/// gradients and running statistics, on the CPU reference (exactly: its fused ops are its
/// primitives) and on the GPU (within what its kernels' other summation orders allow). Each
/// rule must fire on the tutorial's network.
#[test]
fn every_fusion_rule_matches_its_primitives() {
    fn check<B: Backend>(b: &mut B, tol: f64) {
        let (want, plain) = step_with(b, &[]);
        let mut cases: Vec<(String, Vec<Rule>)> = RULES.iter().map(|r| (r.name.to_string(), vec![*r])).collect();
        cases.push(("all".into(), RULES.to_vec()));
        for (name, rules) in cases {
            // A rule may need the ones before it to make what it matches.
            let upto = RULES.iter().position(|r| r.name == name).map_or(RULES.len(), |k| k + 1);
            let rules = if rules.len() == 1 { RULES[..upto].to_vec() } else { rules };
            let (got, nodes) = step_with(b, &rules);
            let before = if upto > 1 && name != "all" { step_with(b, &RULES[..upto - 1]).1 } else { plain.clone() };
            assert_ne!(nodes, before, "rule {name} did not fire on the tutorial's network");
            for (k, what) in ["loss", "distances", "gradients", "running statistics"].iter().enumerate() {
                assert_close(&format!("{} rules up to {name}: {what}", b.name()), &want[k], &got[k], tol);
            }
        }
    }
    check(&mut CpuBackend::<f64>::new(), 0.0);
    with_gpu("fusion rules", |gpu: &mut GpuBackend| check(gpu, 1e-5));
}

/// The tutorial's network on the GPU with weights from `seed`.
fn gpu_weights(gpu: &mut GpuBackend, seed: u64) -> Weights<GpuBackend> {
    let net = SiameseNet::new(8);
    let (params, buffers) = net.init(seed);
    Weights::new(gpu, net, &params, &buffers)
}

/// One training step's forward and backward of `weights`' network on 16 pairs of random
/// images (from `seed`), the gradients left in `weights.grads`.
fn gradients(gpu: &mut GpuBackend, weights: &Weights<GpuBackend>, seed: u64) {
    let mut r = rng(seed);
    let images = to_f32(&uniform(&mut r, 32 * 784, 0.0, 1.0));
    let targets: Vec<f32> = (0..16).map(|i| (i % 2) as f32).collect();
    let mut tape = Tape::new(gpu, Mode::Train);
    let x = tape.backend().upload(&images);
    let x = tape.input(x, &[32, 1, 28, 28]);
    let t = tape.backend().upload(&targets);
    let t = tape.input(t, &[16]);
    let (loss, _) = weights.net.loss(&mut tape, weights, x, t, 2.0);
    tape.backward(loss);
}

/// On the portable kernels Adam sums the conv weight-gradient partials that wait for it
/// (src/gpu/weight_sums.rs): the parameters it writes, and the gradients it stores, are the
/// same bits as when the sums run in their own launch first (a read of the gradients makes
/// them).
#[test]
fn adam_sums_the_waiting_weight_gradients_to_the_same_bits() {
    use siamese::ops::AdamConfig;
    with_gpu("adam with the weight sums", |gpu: &mut GpuBackend| {
        gpu.driver = None;
        let mut results = Vec::new();
        for sums_first in [true, false] {
            let weights = gpu_weights(gpu, 7);
            gradients(gpu, &weights, 29);
            let dispatches = gpu.dispatches;
            if sums_first {
                gpu.read(&weights.grads);
            }
            let len = weights.layout.len;
            let (m, v) = (gpu.zeros(len), gpu.zeros(len));
            gpu.adam_step(&AdamConfig::default(), 1, &weights.params, &weights.grads, &m, &v);
            let after = gpu.read(&weights.params);
            let launches = gpu.dispatches - dispatches;
            let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            results.push((bits(after), bits(gpu.read(&weights.grads)), launches));
        }
        gpu.driver = gpu.ctx.driver;
        let [(params_apart, grads_apart, apart), (params_in, grads_in, within)] = &results[..] else { unreachable!() };
        assert_eq!(grads_in, grads_apart, "gradients stored by Adam");
        assert_eq!(params_in, params_apart, "parameters after Adam");
        assert_eq!(*within + 1, *apart, "the sums' own launch");
    });
}

/// On the portable kernels Adam writes the conv weights it updates into their packs for
/// `conv2d_tile` (src/gpu/weight_packs.rs), plain and transposed: the training step after it
/// makes no packs, and gives the same bits as after packs made afresh from the same weights by
/// the pack launch.
#[test]
fn adam_writes_the_weight_packs_to_the_same_bits() {
    use siamese::ops::AdamConfig;
    with_gpu("adam with the weight packs", |gpu: &mut GpuBackend| {
        gpu.driver = None;
        let weights = gpu_weights(gpu, 11);
        let step = |gpu: &mut GpuBackend| {
            let before = gpu.dispatches;
            gradients(gpu, &weights, 31);
            let launches = gpu.dispatches - before;
            (gpu.read(&weights.grads).iter().map(|v| v.to_bits()).collect::<Vec<_>>(), launches)
        };
        step(gpu);
        let len = weights.layout.len;
        let (m, v) = (gpu.zeros(len), gpu.zeros(len));
        gpu.adam_step(&AdamConfig::default(), 1, &weights.params, &weights.grads, &m, &v);
        let (after_adam, launches) = step(gpu);
        // The same weights written back: the packs go stale and are made again.
        let updated = gpu.read(&weights.params);
        gpu.write(&weights.params, &updated);
        let (repacked, with_pack_launch) = step(gpu);
        gpu.driver = gpu.ctx.driver;
        assert_eq!(after_adam, repacked, "the gradients after Adam's packs");
        assert_eq!(launches + 1, with_pack_launch, "the pack launch");
    });
}
