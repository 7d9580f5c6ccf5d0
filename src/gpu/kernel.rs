//! The kernel registry: the only place that knows each kernel's shader file, entry point and
//! binding signature, and that builds (once, on a thread of its own) its pipeline.
//!
//! Binding convention, shared by every entry point in `shaders/`: binding 0 is the op's params
//! struct (`var<uniform>`), bindings 1.. are storage buffers in the order the signature lists.
//! Some kernels are specialised per shape through WGSL `override` constants: their loops then
//! have constant trip counts, which a CPU driver's compiler unrolls into straight-line code with
//! constant weight offsets (loaded once and broadcast instead of lane by lane).
//! Layouts are explicit, not derived from the shader, because a derived layout holds only the
//! bindings an entry point uses and would differ between entry points of one file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

/// One WGSL file in `shaders/`, holding the entry points of one op family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Elementwise,
    Conv2d,
    BatchNorm,
    MaxPool,
    Linear,
    Distance,
    Contrastive,
    Optim,
    /// Not a file: written per shape by a driver's kernel set (`DriverKernels::source`).
    Conv2dRows,
}

/// Prepended to every shader file: WGSL has no includes.
pub const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// `Conv2dParams`, shared by shaders/conv2d.wgsl and the kernels a driver writes per shape.
pub const CONV2D_PARAMS: &str = include_str!("../../shaders/conv2d_params.wgsl");

/// Where conv weights go in `conv2d_tile`'s packed layout, shared by the pack kernel and Adam.
const WEIGHT_PACK: &str = include_str!("../../shaders/weight_pack.wgsl");

/// How the portable set holds runs of four floats in storage (`Packed4`): as vec4<f32>.
pub const PACKED_F32: &str = include_str!("../../shaders/packed_f32.wgsl");

/// The common prelude, then how runs of four floats are held in storage: `storage`, the
/// selected kernel set's (see `DriverKernels::storage`), or [`PACKED_F32`].
pub fn prelude(storage: &str) -> String {
    format!("{COMMON}\n{storage}")
}

impl Shader {
    /// The files in shaders/.
    pub const ALL: [Shader; 8] = [
        Shader::Elementwise,
        Shader::Conv2d,
        Shader::BatchNorm,
        Shader::MaxPool,
        Shader::Linear,
        Shader::Distance,
        Shader::Contrastive,
        Shader::Optim,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Conv2d => "conv2d.wgsl",
            Shader::BatchNorm => "batchnorm.wgsl",
            Shader::MaxPool => "maxpool.wgsl",
            Shader::Linear => "linear.wgsl",
            Shader::Distance => "distance.wgsl",
            Shader::Contrastive => "contrastive.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Conv2dRows => "conv2d_rows (generated)",
        }
    }

    /// Whether the source is generated per specialisation rather than read from a file.
    pub fn generated(self) -> bool {
        self == Shader::Conv2dRows
    }

    fn body(self) -> &'static str {
        match self {
            Shader::Elementwise => include_str!("../../shaders/elementwise.wgsl"),
            Shader::Conv2d => include_str!("../../shaders/conv2d.wgsl"),
            Shader::BatchNorm => include_str!("../../shaders/batchnorm.wgsl"),
            Shader::MaxPool => include_str!("../../shaders/maxpool.wgsl"),
            Shader::Linear => include_str!("../../shaders/linear.wgsl"),
            Shader::Distance => include_str!("../../shaders/distance.wgsl"),
            Shader::Contrastive => include_str!("../../shaders/contrastive.wgsl"),
            Shader::Optim => include_str!("../../shaders/optim.wgsl"),
            Shader::Conv2dRows => panic!("conv2d_rows is generated per shape: DriverKernels::source"),
        }
    }

    /// The WGSL the device compiles: the prelude (see [`prelude`]), then the file.
    pub fn source(self, storage: &str) -> String {
        let shared = match self {
            Shader::Conv2d => format!("{CONV2D_PARAMS}\n{WEIGHT_PACK}"),
            Shader::Optim => WEIGHT_PACK.to_string(),
            _ => String::new(),
        };
        format!("{}\n{shared}\n{}", prelude(storage), self.body())
    }
}

/// How a kernel uses a buffer binding after the params uniform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<uniform>`: small read-only data every lane reads alike (a CPU driver loads it once).
    Uniform,
}

macro_rules! kernels {
    ($($kernel:ident => $shader:ident :: $entry:literal ($($access:ident),*) $([$($constant:ident),*])?;)*) => {
        /// Every entry point the Rust side launches.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel { $($kernel),* }

        impl Kernel {
            pub const ALL: &'static [Kernel] = &[$(Kernel::$kernel),*];

            pub fn shader(self) -> Shader {
                match self { $(Kernel::$kernel => Shader::$shader),* }
            }

            /// The WGSL entry point, named after the op as in the CPU reference.
            pub fn entry_point(self) -> &'static str {
                match self { $(Kernel::$kernel => $entry),* }
            }

            /// The storage bindings after the params uniform, in binding order.
            pub fn bindings(self) -> &'static [Access] {
                use Access::*;
                match self { $(Kernel::$kernel => &[$($access),*]),* }
            }

            /// The `override` constants a launch must give values for, in order.
            pub fn overrides(self) -> &'static [&'static str] {
                match self { $(Kernel::$kernel => &[$($(stringify!($constant)),*)?]),* }
            }

            /// The entry point with the specialisation `spec`, as NAME=value pairs.
            pub fn label(self, spec: &[u32]) -> String {
                let values = self.overrides().iter().zip(spec).map(|(name, v)| format!(" {name}={v}"));
                format!("{}{}", self.entry_point(), values.collect::<String>())
            }
        }
    };
}

kernels! {
    Fill => Elementwise::"fill"(ReadWrite);
    Accumulate => Elementwise::"accumulate"(Read, ReadWrite);
    Copy => Elementwise::"copy"(Read, ReadWrite);
    ReluForward => Elementwise::"relu_forward"(Read, ReadWrite);
    ReluBackward => Elementwise::"relu_backward"(Read, Read, ReadWrite);
    GatherImages => Elementwise::"gather_images"(Uniform, Read, Read, ReadWrite);
    GatherImageWords => Elementwise::"gather_image_words"(Uniform, Read, Read, ReadWrite);
    Conv2dForward => Conv2d::"conv2d_forward"(Read, Read, Read, ReadWrite);
    Conv2dBackward => Conv2d::"conv2d_backward"(Read, Read, Read, ReadWrite, ReadWrite) [INPUT_GRAD, WEIGHT_GRAD];
    Conv2dBackwardWeightReduce => Conv2d::"conv2d_backward_weight_reduce"(Read, ReadWrite, ReadWrite);
    Conv2dPackWeights => Conv2d::"conv2d_pack_weights"(Read, ReadWrite);
    Conv2dTile =>
        Conv2d::"conv2d_tile"(Read, Read, Read, Read, ReadWrite, Uniform, Read, Read, Read) [IC, OC, H, W, K, TRANSPOSE, THROUGH, DY_THROUGH];
    Conv2dBackwardWeightTile =>
        Conv2d::"conv2d_backward_weight_tile"(Read, Read, Read, Read, ReadWrite, Read, Read, Read) [IC, OC, H, W, K, THROUGH, BANDS, DY_THROUGH];
    Conv2dRows =>
        Conv2dRows::"conv2d_rows"(Read, Read, Read, ReadWrite, ReadWrite, Read, Read, Read) [IC, OC, H, W, K, MODE, ACCUMULATE, THROUGH];
    Conv2dBackwardWeightRows =>
        Conv2dRows::"conv2d_backward_weight_rows"(Read, Read, ReadWrite, Read, Read, Read, Read) [IC, OC, H, W, K, THROUGH, DY_THROUGH];
    Conv2dBackwardRows =>
        Conv2dRows::"conv2d_backward_rows"(Read, Read, ReadWrite, Read, Read, Read, Read, ReadWrite) [IC, OC, H, W, K, THROUGH];
    BatchNormPlaneStats => BatchNorm::"batchnorm_plane_stats"(Read, ReadWrite);
    BatchNormStats => BatchNorm::"batchnorm_stats"(Read, ReadWrite, ReadWrite, ReadWrite);
    BatchNormRunningStats => BatchNorm::"batchnorm_running_stats"(Read, Read, ReadWrite);
    BatchNormForward => BatchNorm::"batchnorm_forward"(Read, Read, Read, Read, ReadWrite);
    BatchNormBackwardPlane => BatchNorm::"batchnorm_backward_plane"(Read, Read, Read, ReadWrite);
    BatchNormBackwardReduce => BatchNorm::"batchnorm_backward_reduce"(Read, ReadWrite, ReadWrite, ReadWrite);
    BatchNormBackwardInputPlanes =>
        BatchNorm::"batchnorm_backward_input_planes"(Read, Read, Read, Read, Read, ReadWrite) [ACCUMULATE];
    BatchNormChannelStats => BatchNorm::"batchnorm_channel_stats"(Read, ReadWrite, ReadWrite, ReadWrite);
    BatchNormChannelSums =>
        BatchNorm::"batchnorm_channel_sums"(Read, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite) [POOL_W];
    BatchNormBackwardInput =>
        BatchNorm::"batchnorm_backward_input"(Read, Read, Read, Read, Read, Read, ReadWrite) [ACCUMULATE, POOL_W];
    MaxPoolForward => MaxPool::"maxpool_forward"(Read, Read, ReadWrite);
    MaxPoolBackward => MaxPool::"maxpool_backward"(Read, Read, ReadWrite);
    MaxPoolBackwardWindows => MaxPool::"maxpool_backward_windows"(Read, Read, ReadWrite) [ACCUMULATE];
    MaxPoolForwardPairs => MaxPool::"maxpool_forward_pairs"(Read, ReadWrite);
    MaxPoolBackwardPairs => MaxPool::"maxpool_backward_pairs"(Read, Read, ReadWrite) [ACCUMULATE];
    MaxPoolForwardRows => MaxPool::"maxpool_forward_rows"(Read, Read, ReadWrite);
    MaxPoolBackwardRows => MaxPool::"maxpool_backward_rows"(Read, Read, ReadWrite) [ACCUMULATE];
    BatchNormMaxPoolForward => MaxPool::"batchnorm_maxpool_forward"(Read, Read, ReadWrite, Read, Read, Read);
    BatchNormMaxPoolForwardPairs => MaxPool::"batchnorm_maxpool_forward_pairs"(Read, ReadWrite, Read, Read, Read);
    BatchNormMaxPoolBackwardSumsWindows =>
        MaxPool::"batchnorm_maxpool_backward_sums_windows"(Read, Read, ReadWrite, Read, Read, Read, ReadWrite);
    BatchNormMaxPoolBackwardSumsPairs =>
        MaxPool::"batchnorm_maxpool_backward_sums_pairs"(Read, Read, ReadWrite, Read, Read, Read, ReadWrite);
    BatchNormMaxPoolBackwardSumsRows =>
        MaxPool::"batchnorm_maxpool_backward_sums_rows"(Read, Read, ReadWrite, Read, Read, Read, ReadWrite);
    BatchNormMaxPoolBackwardInputWindows =>
        MaxPool::"batchnorm_maxpool_backward_input_windows"(Read, Read, ReadWrite, Read, Read, Read, Read) [ACCUMULATE];
    BatchNormMaxPoolBackwardInputPairs =>
        MaxPool::"batchnorm_maxpool_backward_input_pairs"(Read, Read, ReadWrite, Read, Read, Read, Read) [ACCUMULATE];
    BatchNormMaxPoolBackwardInputRows =>
        MaxPool::"batchnorm_maxpool_backward_input_rows"(Read, Read, ReadWrite, Read, Read, Read, Read) [ACCUMULATE];
    BatchNormMaxPoolForwardRows => MaxPool::"batchnorm_maxpool_forward_rows"(Read, Read, ReadWrite, Read, Read, Read);
    LinearForward => Linear::"linear_forward"(Read, Read, Read, ReadWrite);
    LinearBackwardInput => Linear::"linear_backward_input"(Read, Read, Read, ReadWrite);
    LinearBackwardWeight => Linear::"linear_backward_weight"(Read, Read, ReadWrite, ReadWrite);
    LinearForwardNarrow => Linear::"linear_forward_narrow"(Read, Read, Read, ReadWrite) [D_IN, D_OUT, NARROW_WG];
    LinearBackwardNarrow =>
        Linear::"linear_backward_narrow"(Read, Read, Read, ReadWrite, ReadWrite, ReadWrite) [D_IN, D_OUT, NARROW_WG, DX_ELEMENTS];
    PairDistanceForward => Distance::"pair_distance_forward"(Read, ReadWrite);
    PairDistanceBackward => Distance::"pair_distance_backward"(Read, Read, Read, ReadWrite);
    ContrastiveForward => Contrastive::"contrastive_forward"(Read, Read, ReadWrite);
    ContrastiveBackward => Contrastive::"contrastive_backward"(Read, Read, Read, ReadWrite);
    PairContrastiveForward => Contrastive::"pair_contrastive_forward"(Read, Read, ReadWrite, ReadWrite);
    PairContrastiveBackward => Contrastive::"pair_contrastive_backward"(Read, Read, Read, Read, ReadWrite);
    LinearPairContrastiveForward =>
        Contrastive::"linear_pair_contrastive_forward"(Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite) [HEAD_IN, HEAD_OUT, HEAD_RELU];
    AdamStep => Optim::"adam_step"(Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite, Read, ReadWrite) [SUMS, PACKS];
    Conv2dBackwardWeightSums => Optim::"conv2d_backward_weight_sums"(Read, ReadWrite);
}

/// Writes a generated kernel's WGSL for its specialisation (a driver's kernel set's).
pub type Generator = std::sync::Arc<dyn Fn(Kernel, &[u32]) -> String + Send + Sync>;

/// Compiled shader modules and pipelines (one per kernel and specialisation), made on first
/// use and kept. A generated shader has one module per specialisation, whose values shape the
/// code itself instead of setting `override` constants.
pub struct Pipelines {
    /// How runs of four floats are held in storage (see [`prelude`]): the selected kernel set's.
    storage: &'static str,
    /// The selected driver's writer of generated kernels, if any.
    generate: Option<Generator>,
    /// Each shader file's module, made by the first pipeline of the file to need it.
    modules: HashMap<Shader, Arc<OnceLock<wgpu::ShaderModule>>>,
    pipelines: HashMap<(Kernel, Vec<u32>), (Pipeline, wgpu::BindGroupLayout)>,
    /// The pipelines' keys in the order they were made.
    order: Vec<(Kernel, Vec<u32>)>,
}

/// A compute pipeline, built on a thread of its own; [`Pipeline::get`] waits for it. Why: a
/// kernel's WGSL takes the shader translator (naga) and the driver 10–170 ms to turn into a
/// pipeline on a 2-core machine with a CPU driver, and a run's first step records some thirty new kernels
/// before it submits them: built side by side they take half the time on two cores
/// (measured: 0.71–0.73 s → 0.36–0.42 s for the six largest).
#[derive(Clone)]
pub struct Pipeline(Arc<Building>);

struct Building {
    built: OnceLock<wgpu::ComputePipeline>,
    thread: Mutex<Option<JoinHandle<wgpu::ComputePipeline>>>,
}

impl Pipeline {
    fn build(make: impl FnOnce() -> wgpu::ComputePipeline + Send + 'static) -> Self {
        let thread = std::thread::spawn(make);
        Self(Arc::new(Building { built: OnceLock::new(), thread: Mutex::new(Some(thread)) }))
    }

    /// The pipeline, once its thread has built it.
    pub fn get(&self) -> &wgpu::ComputePipeline {
        self.0.built.get_or_init(|| {
            let thread = self.0.thread.lock().expect("a pipeline's thread handle").take();
            match thread.expect("joined once: get_or_init runs this once").join() {
                Ok(pipeline) => pipeline,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Pipelines {
    pub fn new(storage: &'static str, generate: Option<Generator>) -> Self {
        Self { storage, generate, modules: HashMap::new(), pipelines: HashMap::new(), order: Vec::new() }
    }

    /// Pipelines built so far (each compiled once).
    pub fn len(&self) -> usize {
        self.pipelines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    /// The kernels and specialisations built so far, in the order they were first used.
    pub fn built(&self) -> &[(Kernel, Vec<u32>)] {
        &self.order
    }

    /// The WGSL the device is given for `kernel` with `spec`, and the `override` constants
    /// set beside it (none for a generated kernel: its values are in the code).
    pub fn source(&self, kernel: Kernel, spec: &[u32]) -> (String, Vec<(&'static str, f64)>) {
        let shader = kernel.shader();
        if shader.generated() {
            let generate =
                self.generate.as_ref().unwrap_or_else(|| panic!("{kernel:?} is generated by a driver's kernel set"));
            (generate(kernel, spec), Vec::new())
        } else {
            (shader.source(self.storage), kernel.overrides().iter().zip(spec).map(|(&n, &v)| (n, v as f64)).collect())
        }
    }

    /// The pipeline of `kernel` with its `override` constants set to `spec` (being built, the
    /// first time), and its bind group layout.
    pub fn get(&mut self, device: &wgpu::Device, kernel: Kernel, spec: &[u32]) -> &(Pipeline, wgpu::BindGroupLayout) {
        assert_eq!(spec.len(), kernel.overrides().len(), "{kernel:?}: values for {:?}", kernel.overrides());
        let key = (kernel, spec.to_vec());
        if !self.pipelines.contains_key(&key) {
            let (layout, pipeline_layout) = layouts(device, kernel);
            let shader = kernel.shader();
            let compile = move |device: &wgpu::Device, source: String| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.file()),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
            };
            let (device, spec) = (device.clone(), spec.to_vec());
            let pipeline = if shader.generated() {
                let (source, _) = self.source(kernel, &spec);
                Pipeline::build(move || {
                    let module = compile(&device, source);
                    // The values are in the generated code already.
                    create_pipeline(&device, &module, &pipeline_layout, kernel, &[])
                })
            } else {
                // The file's module is made once, by the first of its pipelines to need it.
                let (module, storage) = (self.modules.entry(shader).or_default().clone(), self.storage);
                Pipeline::build(move || {
                    let module = module.get_or_init(|| compile(&device, shader.source(storage)));
                    create_pipeline(&device, module, &pipeline_layout, kernel, &spec)
                })
            };
            self.pipelines.insert(key.clone(), (pipeline, layout));
            self.order.push(key.clone());
        }
        &self.pipelines[&key]
    }
}

/// `kernel`'s bind group layout (params, then its bindings) and the pipeline layout of it.
fn layouts(device: &wgpu::Device, kernel: Kernel) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let buffer = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    };
    let mut entries = vec![buffer(0, wgpu::BufferBindingType::Uniform)];
    for (i, access) in kernel.bindings().iter().enumerate() {
        let ty = match access {
            Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
            Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
            Access::Uniform => wgpu::BufferBindingType::Uniform,
        };
        entries.push(buffer(i as u32 + 1, ty));
    }
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(kernel.entry_point()),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(kernel.entry_point()),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    (layout, pipeline_layout)
}

fn create_pipeline(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    layout: &wgpu::PipelineLayout,
    kernel: Kernel,
    spec: &[u32],
) -> wgpu::ComputePipeline {
    let constants: Vec<(&str, f64)> = kernel.overrides().iter().zip(spec).map(|(&name, &v)| (name, v as f64)).collect();
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(kernel.entry_point()),
        layout: Some(layout),
        module,
        entry_point: Some(kernel.entry_point()),
        compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
        cache: None,
    })
}
