//! Finite-difference checks of every CPU backward in f64: central differences with
//! torch.autograd.gradcheck's tolerances (eps 1e-6, |analytic − numeric| ≤ 1e-5 + 1e-3·|numeric|),
//! on the scalar Σ gy·f(x) for a random upstream gradient gy. Then the whole network with its
//! loss, through the tape. Inputs keep away from kinks (ReLU at 0, max-pool ties, the margin).

use siamese::backend::Backend;
use siamese::cpu::{self, CpuBackend};
use siamese::model::{SiameseNet, Weights};
use siamese::ops::*;
use siamese::tape::{Mode, Tape};

use crate::util::*;

const EPS: f64 = 1e-6;
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-3;

/// Compares `analytic` with central differences of `f` at `x`, for the indices `which`.
fn check_at(what: &str, x: &[f64], analytic: &[f64], which: impl Iterator<Item = usize>, f: impl Fn(&[f64]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient size");
    let mut xp = x.to_vec();
    for j in which {
        xp[j] = x[j] + EPS;
        let up = f(&xp);
        xp[j] = x[j] - EPS;
        let down = f(&xp);
        xp[j] = x[j];
        let numeric = (up - down) / (2.0 * EPS);
        let a = analytic[j];
        assert!(
            (a - numeric).abs() <= ATOL + RTOL * numeric.abs(),
            "{what}: gradient at index {j}: analytic {a:.9e}, numeric {numeric:.9e}"
        );
    }
}

fn check(what: &str, x: &[f64], analytic: &[f64], f: impl Fn(&[f64]) -> f64) {
    check_at(what, x, analytic, 0..x.len(), f);
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn conv2d() {
    for (n, c_in, h, w, c_out, k, towers) in [(2, 2, 5, 4, 3, 3, 2), (1, 1, 4, 4, 2, 5, 1), (2, 3, 3, 3, 1, 1, 1)] {
        let mut r = rng(1);
        let p = Conv2dParams::same(n, c_in, h, w, c_out, k).with_towers(towers);
        let (x, wt, b, gy) = (
            uniform(&mut r, p.x_len(), -1.0, 1.0),
            uniform(&mut r, p.w_len(), -1.0, 1.0),
            uniform(&mut r, c_out, -1.0, 1.0),
            uniform(&mut r, p.y_len(), -1.0, 1.0),
        );
        let loss = |x: &[f64], wt: &[f64], b: &[f64]| {
            let mut y = vec![0.0; p.y_len()];
            cpu::conv2d_forward(&p, x, wt, b, &mut y);
            dot(&y, &gy)
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; p.x_len()], vec![0.0; p.w_len()], vec![0.0; c_out]);
        cpu::conv2d_backward_input(&p, &gy, &wt, &mut dx);
        cpu::conv2d_backward_weight(&p, &x, &gy, &mut dw, &mut db);
        let what = format!("conv2d {p:?}");
        check(&format!("{what} dx"), &x, &dx, |x| loss(x, &wt, &b));
        check(&format!("{what} dw"), &wt, &dw, |wt| loss(&x, wt, &b));
        check(&format!("{what} db"), &b, &db, |b| loss(&x, &wt, b));
    }
}

#[test]
fn batchnorm_train() {
    for (n, c, hw, groups, relu) in [(4, 3, 5, 1, false), (6, 2, 4, 2, false), (2, 2, 9, 2, false), (4, 3, 5, 2, true)]
    {
        let mut r = rng(2);
        let p = BatchNormParams::new(n, c, hw, groups).with_relu_input(relu);
        // Through a ReLU input, keep x away from its kink at 0.
        let x: Vec<f64> =
            uniform(&mut r, p.len(), -2.0, 3.0).iter().map(|&v| if relu && v.abs() < 0.01 { 0.5 } else { v }).collect();
        let (gamma, beta, gy) =
            (uniform(&mut r, c, 0.5, 1.5), uniform(&mut r, c, -1.0, 1.0), uniform(&mut r, p.len(), -1.0, 1.0));
        let forward = |x: &[f64], gamma: &[f64], beta: &[f64]| {
            let (mut y, mut saved, mut rm, mut rv) =
                (vec![0.0; p.len()], vec![0.0; p.saved_len()], vec![0.0; c], vec![1.0; c]);
            cpu_batchnorm_train(&p, x, (gamma, beta), (&mut y, &mut saved, &mut rm, &mut rv));
            (y, saved)
        };
        let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| dot(&forward(x, gamma, beta).0, &gy);
        let saved = forward(&x, &gamma, &beta).1;
        let (mut dx, mut dg, mut db) = (vec![0.0; p.len()], vec![0.0; c], vec![0.0; c]);
        let grads = cpu::BatchNormGrads { dx: &mut dx, dgamma: &mut dg, dbeta: &mut db };
        cpu::batchnorm_backward(&p, &x, &gy, &gamma, &saved, grads);
        let what = format!("batchnorm {p:?}");
        check(&format!("{what} dx"), &x, &dx, |x| loss(x, &gamma, &beta));
        check(&format!("{what} dgamma"), &gamma, &dg, |g| loss(&x, g, &beta));
        check(&format!("{what} dbeta"), &beta, &db, |b| loss(&x, &gamma, b));
    }
}

#[test]
fn maxpool() {
    let mut r = rng(3);
    let p = MaxPoolParams::new(2, 3, 5, 6);
    // Distinct values on a grid 1e-3 apart: no ties within a perturbation of 1e-6.
    let mut x: Vec<f64> = (0..p.x_len()).map(|i| i as f64 * 1e-3).collect();
    for i in (1..x.len()).rev() {
        x.swap(i, (uniform(&mut r, 1, 0.0, (i + 1) as f64)[0]) as usize);
    }
    let gy = uniform(&mut r, p.y_len(), -1.0, 1.0);
    let loss = |x: &[f64]| {
        let mut y = vec![0.0; p.y_len()];
        cpu::maxpool_forward(&p, x, &mut y);
        dot(&y, &gy)
    };
    let mut dx = vec![0.0; p.x_len()];
    cpu::maxpool_backward(&p, &x, &gy, &mut dx);
    check("maxpool dx", &x, &dx, loss);
}

#[test]
fn relu() {
    let mut r = rng(4);
    let x: Vec<f64> = uniform(&mut r, 200, -1.0, 1.0).iter().map(|v| if v.abs() < 0.01 { 0.5 } else { *v }).collect();
    let gy = uniform(&mut r, 200, -1.0, 1.0);
    let loss = |x: &[f64]| {
        let mut y = vec![0.0; x.len()];
        cpu::relu_forward(x, &mut y);
        dot(&y, &gy)
    };
    let mut y = vec![0.0; x.len()];
    cpu::relu_forward(&x, &mut y);
    let mut dx = vec![0.0; x.len()];
    cpu::relu_backward(&y, &gy, &mut dx, 0);
    check("relu dx", &x, &dx, loss);
}

#[test]
fn linear() {
    for relu in [false, true] {
        linear_with(relu);
    }
}

fn linear_with(relu: bool) {
    let mut r = rng(5);
    let p = LinearParams::new(6, 49, 8).with_towers(2).with_relu_input(relu);
    let (x, w, b, gy) = (
        uniform(&mut r, 6 * 49, -1.0, 1.0),
        uniform(&mut r, 8 * 49, -1.0, 1.0),
        uniform(&mut r, 8, -1.0, 1.0),
        uniform(&mut r, 48, -1.0, 1.0),
    );
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; 48];
        cpu::linear_forward(&p, x, w, b, &mut y);
        dot(&y, &gy)
    };
    let (mut dx, mut dw, mut db) = (vec![0.0; 6 * 49], vec![0.0; 8 * 49], vec![0.0; 8]);
    cpu::linear_backward_input(&p, &x, &gy, &w, &mut dx);
    cpu::linear_backward_weight(&p, &x, &gy, &mut dw, &mut db);
    check(&format!("linear dx relu={relu}"), &x, &dx, |x| loss(x, &w, &b));
    check(&format!("linear dw relu={relu}"), &w, &dw, |w| loss(&x, w, &b));
    check(&format!("linear db relu={relu}"), &b, &db, |b| loss(&x, &w, b));
}

#[test]
fn pair_distance() {
    let mut r = rng(6);
    let p = PairDistanceParams::new(6, 8);
    let x = uniform(&mut r, 2 * 6 * 8, -1.0, 1.0);
    let gd = uniform(&mut r, 6, -1.0, 1.0);
    let dist = |x: &[f64]| {
        let mut d = vec![0.0; 6];
        cpu::pair_distance_forward(&p, x, &mut d);
        d
    };
    let d = dist(&x);
    let mut dx = vec![0.0; x.len()];
    cpu::pair_distance_backward(&p, &x, &d, &gd, &mut dx);
    check("pair_distance dx", &x, &dx, |x| dot(&dist(x), &gd));
}

#[test]
fn contrastive() {
    let mut r = rng(7);
    let p = ContrastiveParams::new(8, 2.0);
    // Distances on both sides of the margin, none within 1e-3 of it.
    let d: Vec<f64> =
        uniform(&mut r, 8, 0.1, 3.0).iter().map(|v| if (v - 2.0).abs() < 1e-3 { 1.0 } else { *v }).collect();
    let t = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    let loss = |d: &[f64]| {
        let mut l = [0.0];
        cpu::contrastive_forward(&p, d, &t, &mut l);
        l[0]
    };
    let mut dd = vec![0.0; 8];
    cpu::contrastive_backward(&p, &d, &t, &[1.0], &mut dd);
    check("contrastive dd", &d, &dd, loss);
}

/// The whole network and its loss through the tape, in f64: every parameter tensor, a spread
/// of its entries.
#[test]
fn whole_network_and_loss() {
    let net = SiameseNet::new(8);
    let (params, buffers) = net.init(3);
    let params: Vec<f64> = f64s(&params);
    let mut r = rng(8);
    let pairs = 2;
    let images = uniform(&mut r, 2 * pairs * 784, 0.0, 1.0);
    let targets = [0.0, 1.0];

    let run = |params: &[f64], grads: bool| -> (f64, Vec<f64>) {
        let mut cpu = CpuBackend::<f64>::new();
        let weights = Weights::new(&mut cpu, net, params, &f64s(&buffers));
        let mut tape = Tape::new(&mut cpu, Mode::Train);
        let x = tape.backend().upload(&images);
        let x = tape.input(x, &[2 * pairs, 1, 28, 28]);
        let t = tape.backend().upload(&targets);
        let t = tape.input(t, &[pairs]);
        let (loss, _) = net.loss(&mut tape, &weights, x, t, 2.0);
        let value = tape.read(loss)[0];
        if !grads {
            return (value, vec![]);
        }
        tape.backward(loss);
        drop(tape);
        (value, cpu.read(&weights.grads))
    };
    let (_, grads) = run(&params, true);
    assert!(grads.iter().any(|g| g.abs() > 1e-3), "the loss should reach the parameters");
    for e in &net.params().entries {
        let step = (e.len() / 12).max(1);
        let which = (e.offset..e.offset + e.len()).step_by(step);
        check_at(&format!("network d loss / d {}", e.name), &params, &grads, which, |p| run(p, false).0);
    }
}
