//! The tutorial's network, `siamese(z_dimensions)`, its parameter layout and initialisation.
//!
//! `feature_net` is written as the table [`FEATURE_NET`], index for index with PyTorch's
//! `nn.Sequential`, so state_dict names (`feature_net.3.weight`) and the fixtures' per-layer
//! activations (`act1.3`) line up with it. Parameters live in one flat buffer, BatchNorm's
//! running statistics in another, each tensor at an offset from [`Layout`].

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::backend::{Backend, DeviceTensor, VIEW_ALIGN};
use crate::float::Float;
use crate::tape::{BatchNormVars, Tape, Var};

/// Image side and flattened size after the feature net (1 channel of 7×7).
pub const IMAGE_SIDE: usize = 28;
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
pub const FEATURES: usize = 49;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Conv2d(c_in → c_out, 3×3, padding 1).
    Conv {
        c_in: usize,
        c_out: usize,
    },
    Relu,
    BatchNorm {
        c: usize,
    },
    MaxPool,
}

use Layer::*;

/// `feature_net` of the tutorial, in order. BatchNorm comes after ReLU, as there.
pub const FEATURE_NET: [Layer; 16] = [
    Conv { c_in: 1, c_out: 4 },
    Relu,
    BatchNorm { c: 4 },
    Conv { c_in: 4, c_out: 4 },
    Relu,
    BatchNorm { c: 4 },
    MaxPool,
    Conv { c_in: 4, c_out: 8 },
    Relu,
    BatchNorm { c: 8 },
    Conv { c_in: 8, c_out: 8 },
    Relu,
    BatchNorm { c: 8 },
    MaxPool,
    Conv { c_in: 8, c_out: 1 },
    Relu,
];

/// Elements of the largest activation for a batch of `n` images (a storage binding must hold it).
pub fn largest_activation(n: usize) -> usize {
    let (mut c, mut side, mut largest) = (1, IMAGE_SIDE, n * IMAGE_PIXELS);
    for layer in FEATURE_NET {
        match layer {
            Conv { c_out, .. } => c = c_out,
            MaxPool => side /= 2,
            Relu | BatchNorm { .. } => {}
        }
        largest = largest.max(n * c * side * side);
    }
    largest
}

/// Named tensors packed into one flat buffer, each starting at a multiple of [`VIEW_ALIGN`]
/// so that it can be bound on its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub entries: Vec<Entry>,
    /// Elements in the flat buffer, padding included.
    pub len: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl Entry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Layout {
    fn new(tensors: Vec<(String, Vec<usize>)>) -> Self {
        let mut len = 0;
        let entries = tensors
            .into_iter()
            .map(|(name, shape)| {
                let offset = len;
                len += shape.iter().product::<usize>().next_multiple_of(VIEW_ALIGN);
                Entry { name, shape, offset }
            })
            .collect();
        Self { entries, len }
    }
    pub fn get(&self, name: &str) -> &Entry {
        self.entries.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("layout: no tensor {name}"))
    }
    /// Elements that are not padding.
    pub fn count(&self) -> usize {
        self.entries.iter().map(Entry::len).sum()
    }
}

/// The network's configuration; the weights live in [`Weights`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiameseNet {
    /// Embedding width (the tutorial's `z_dimensions`).
    pub z: usize,
}

impl SiameseNet {
    pub fn new(z: usize) -> Self {
        Self { z }
    }

    /// Trainable parameters, in state_dict order.
    pub fn params(&self) -> Layout {
        let mut t = Vec::new();
        for (k, layer) in FEATURE_NET.iter().enumerate() {
            match *layer {
                Conv { c_in, c_out } => {
                    t.push((format!("feature_net.{k}.weight"), vec![c_out, c_in, 3, 3]));
                    t.push((format!("feature_net.{k}.bias"), vec![c_out]));
                }
                BatchNorm { c } => {
                    t.push((format!("feature_net.{k}.weight"), vec![c]));
                    t.push((format!("feature_net.{k}.bias"), vec![c]));
                }
                Relu | MaxPool => {}
            }
        }
        t.push(("linear.weight".into(), vec![self.z, FEATURES]));
        t.push(("linear.bias".into(), vec![self.z]));
        Layout::new(t)
    }

    /// BatchNorm running statistics (the state_dict's float buffers).
    pub fn buffers(&self) -> Layout {
        let mut t = Vec::new();
        for (k, layer) in FEATURE_NET.iter().enumerate() {
            if let BatchNorm { c } = *layer {
                t.push((format!("feature_net.{k}.running_mean"), vec![c]));
                t.push((format!("feature_net.{k}.running_var"), vec![c]));
            }
        }
        Layout::new(t)
    }

    /// PyTorch's default initialisation: conv and linear weights and biases uniform in
    /// ±1/√fan_in (kaiming_uniform with a = √5), BatchNorm γ = 1, β = 0; running mean 0,
    /// running var 1. Returns (params, buffers) as flat buffers.
    pub fn init(&self, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5151_a3e5_1417);
        let layout = self.params();
        let mut params = vec![0.0f32; layout.len];
        for (k, layer) in FEATURE_NET.iter().enumerate() {
            let entry = |part: &str| layout.get(&format!("feature_net.{k}.{part}")).clone();
            match *layer {
                Conv { c_in, .. } => {
                    let bound = 1.0 / ((c_in * 9) as f32).sqrt();
                    for e in [entry("weight"), entry("bias")] {
                        fill_uniform(&mut rng, &mut params[e.offset..][..e.len()], bound);
                    }
                }
                BatchNorm { .. } => {
                    let e = entry("weight");
                    params[e.offset..][..e.len()].fill(1.0);
                }
                Relu | MaxPool => {}
            }
        }
        let bound = 1.0 / (FEATURES as f32).sqrt();
        for name in ["linear.weight", "linear.bias"] {
            let e = layout.get(name);
            fill_uniform(&mut rng, &mut params[e.offset..][..e.len()], bound);
        }
        let bl = self.buffers();
        let mut buffers = vec![0.0f32; bl.len];
        for e in bl.entries.iter().filter(|e| e.name.ends_with("running_var")) {
            buffers[e.offset..][..e.len()].fill(1.0);
        }
        (params, buffers)
    }

    /// Embeds x (N, 1, 28, 28) into (N, z). The batch holds `towers` equal slices whose
    /// BatchNorm statistics are kept apart, as separate calls would; also returns the output
    /// of every `feature_net` layer, which the fusion pass may make disappear unless kept
    /// (`Tape::keep`).
    pub fn forward_layers<B: Backend>(
        &self,
        tape: &mut Tape<B>,
        weights: &Weights<B>,
        x: Var,
        towers: usize,
    ) -> (Var, Vec<Var>) {
        let mut h = x;
        let mut outputs = Vec::with_capacity(FEATURE_NET.len());
        for (k, layer) in FEATURE_NET.iter().enumerate() {
            let name = format!("feature_net.{k}");
            h = match layer {
                Conv { .. } => {
                    let (w, b) = weights.param_pair(tape, &name);
                    tape.conv2d(h, w, b, towers)
                }
                Relu => tape.relu(h),
                BatchNorm { .. } => {
                    let bn = weights.batchnorm(tape, &name);
                    tape.batchnorm(h, bn, towers)
                }
                MaxPool => tape.maxpool2d(h),
            };
            outputs.push(h);
        }
        let flat = tape.reshape(h, &[tape.shape(x)[0], FEATURES]);
        let (w, b) = weights.param_pair(tape, "linear");
        (tape.linear(flat, w, b, towers), outputs)
    }

    pub fn forward<B: Backend>(&self, tape: &mut Tape<B>, weights: &Weights<B>, x: Var, towers: usize) -> Var {
        self.forward_layers(tape, weights, x, towers).0
    }

    /// The training objective: both towers stacked in `images` (2N, 1, 28, 28) go through the
    /// net in one pass with per-tower BatchNorm statistics, then distance and contrastive loss
    /// against `targets` (N). Returns (loss, distances).
    pub fn loss<B: Backend>(
        &self,
        tape: &mut Tape<B>,
        weights: &Weights<B>,
        images: Var,
        targets: Var,
        margin: f32,
    ) -> (Var, Var) {
        let emb = self.forward(tape, weights, images, 2);
        let d = tape.pair_distance(emb);
        (tape.contrastive_loss(d, targets, margin), d)
    }
}

fn fill_uniform(rng: &mut Xoshiro256PlusPlus, out: &mut [f32], bound: f32) {
    for v in out {
        *v = rng.random_range(-bound..bound);
    }
}

/// A model's state on a backend: flat parameters, their gradients, the BatchNorm running
/// statistics, and how many train-mode BatchNorm updates each layer has seen.
pub struct Weights<B: Backend> {
    pub net: SiameseNet,
    pub layout: Layout,
    pub buffer_layout: Layout,
    pub params: B::Tensor,
    pub grads: B::Tensor,
    pub buffers: B::Tensor,
    /// PyTorch's `num_batches_tracked`, the same for every BatchNorm layer.
    pub batches_tracked: u64,
}

impl<B: Backend> Weights<B> {
    /// Puts flat `params` and `buffers` (as from [`SiameseNet::init`]) on `backend`.
    pub fn new<T: Copy + Into<f64>>(backend: &mut B, net: SiameseNet, params: &[T], buffers: &[T]) -> Self {
        let (layout, buffer_layout) = (net.params(), net.buffers());
        assert_eq!((params.len(), buffers.len()), (layout.len, buffer_layout.len), "weights: flat buffer sizes");
        let to_elem = |v: &[T]| v.iter().map(|&x| B::Elem::from_f64(x.into())).collect::<Vec<_>>();
        let params = backend.upload(&to_elem(params));
        let grads = backend.zeros(layout.len);
        let buffers = backend.upload(&to_elem(buffers));
        Self { net, layout, buffer_layout, params, grads, buffers, batches_tracked: 0 }
    }

    /// Registers parameter `name` on the tape, its gradient going to the flat gradient buffer.
    pub fn param<'b>(&self, tape: &mut Tape<'b, B>, name: &str) -> Var {
        let e = self.layout.get(name);
        let (data, grad) = (self.params.view(e.offset, e.len()), self.grads.view(e.offset, e.len()));
        tape.param(data, grad, &e.shape)
    }

    fn param_pair(&self, tape: &mut Tape<B>, prefix: &str) -> (Var, Var) {
        (self.param(tape, &format!("{prefix}.weight")), self.param(tape, &format!("{prefix}.bias")))
    }

    /// Registers BatchNorm layer `prefix`'s γ, β and running statistics on the tape.
    fn batchnorm(&self, tape: &mut Tape<B>, prefix: &str) -> BatchNormVars {
        let (gamma, beta) = self.param_pair(tape, prefix);
        let mut running = |part: &str| {
            let e = self.buffer_layout.get(&format!("{prefix}.{part}"));
            tape.input(self.buffers.view(e.offset, e.len()), &e.shape)
        };
        BatchNormVars { gamma, beta, mean: running("running_mean"), var: running("running_var") }
    }

    /// Counts a train-mode forward of `towers` towers: PyTorch's `num_batches_tracked` goes
    /// up once per BatchNorm call.
    pub fn count_batches(&mut self, towers: usize) {
        self.batches_tracked += towers as u64;
    }
}
