//! The GPU context: picks an adapter (hardware first, then software ones that run on the CPU,
//! honouring WGPU_BACKEND and WGPU_ADAPTER_NAME), opens the device with what the selected
//! kernel set needs, and catches its errors.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// What `siamese info` shows about an adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub max_storage_binding: u64,
    pub max_workgroups_per_dim: u32,
    pub timestamps: bool,
    /// The subgroup sizes it reports, fewest and most lanes (0 where it has no subgroups).
    pub subgroup_sizes: (u32, u32),
}

impl AdapterSummary {
    pub fn of(adapter: &wgpu::Adapter) -> Self {
        let (info, limits) = (adapter.get_info(), adapter.limits());
        Self {
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            timestamps: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            subgroup_sizes: if adapter.features().contains(wgpu::Features::SUBGROUP) {
                (info.subgroup_min_size, info.subgroup_max_size)
            } else {
                (0, 0)
            },
        }
    }

    /// "software" for adapters that run on the CPU, "hardware" otherwise.
    pub fn kind(&self) -> &'static str {
        if self.device_type == wgpu::DeviceType::Cpu { "software" } else { "hardware" }
    }

    pub fn describe(&self) -> String {
        format!("{} ({:?}, {}, {:?})", self.name, self.backend, self.kind(), self.device_type)
    }
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    /// Whether GPU timestamps can time each dispatch (for profiles and benchmarks).
    pub timestamps: bool,
    /// The driver's kernel set selected for this adapter, if any (src/gpu/kernel_set.rs).
    pub driver: Option<&'static dyn super::DriverKernels>,
    /// The first error the device reported; surfaced at the next synchronisation.
    errors: Arc<Mutex<Option<String>>>,
}

fn instance() -> wgpu::Instance {
    quiet_mesa();
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Mesa prints "XDG_RUNTIME_DIR is invalid or not set" when that variable is unset; it is
/// harmless for compute, so give it a private directory rather than let it reach the user.
fn quiet_mesa() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("siamese-runtime");
        if std::fs::create_dir_all(&dir).is_ok() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            // SAFETY: called before any other thread of ours exists (wgpu's instance is made
            // right after), so nothing reads the environment concurrently.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

/// Every adapter wgpu can see, best first: the order [`GpuContext::new`] chooses from.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let instance = instance();
    let mut all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    all.retain(|a| a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS));
    all.sort_by_key(|a| rank(&a.get_info()));
    all
}

/// Lower is better: real GPUs before software ones, native APIs before GL.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

impl GpuContext {
    /// Opens the best adapter, or the first whose name contains WGPU_ADAPTER_NAME, with the
    /// kernel set SIAMESE_KERNELS asks for.
    pub fn new() -> Result<Self> {
        Self::with_kernels(None)
    }

    /// [`GpuContext::new`] with the kernel set `kernels` (auto, portable or a driver's name).
    pub fn with_kernels(kernels: Option<&str>) -> Result<Self> {
        // wgpu ignores names it does not know: a typo would read as "no adapter".
        if let Ok(value) = std::env::var("WGPU_BACKEND")
            && wgpu::Backends::from_comma_list(&value).is_empty()
        {
            let message = format!("{value:?} names no backend (vulkan, metal, dx12, gl, or a comma list of them)");
            return Err(Error::config("WGPU_BACKEND", message));
        }
        let wanted = std::env::var("WGPU_ADAPTER_NAME").ok().map(|s| s.to_lowercase());
        let all = adapters();
        let tried = if all.is_empty() {
            "wgpu found no adapter with compute shaders".to_string()
        } else {
            let names: Vec<_> = all.iter().map(|a| AdapterSummary::of(a).describe()).collect();
            format!("none matched WGPU_ADAPTER_NAME among: {}", names.join(", "))
        };
        let adapter = all
            .into_iter()
            .find(|a| wanted.as_ref().is_none_or(|w| a.get_info().name.to_lowercase().contains(w)))
            .ok_or(Error::NoAdapter { tried })?;
        Self::open(adapter, kernels)
    }

    fn open(adapter: wgpu::Adapter, kernels: Option<&str>) -> Result<Self> {
        let summary = AdapterSummary::of(&adapter);
        let available = adapter.limits();
        // Timestamps at the ends of compute passes (one pass per dispatch when profiling) need
        // only TIMESTAMP_QUERY, which Apple GPUs have too.
        let timestamp_features = wgpu::Features::TIMESTAMP_QUERY;
        let timestamps = adapter.features().contains(timestamp_features);
        let driver = super::kernel_set::select(&adapter, kernels)?;
        let mut features = if timestamps { timestamp_features } else { wgpu::Features::empty() };
        if let Some(d) = driver {
            features |= d.features();
        }
        // Ask for what the adapter has where it matters to us (big storage bindings for the
        // resident training images, many workgroups), WebGPU's defaults elsewhere.
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: available.max_storage_buffer_binding_size,
            max_buffer_size: available.max_buffer_size,
            max_storage_buffers_per_shader_stage: available.max_storage_buffers_per_shader_stage.min(8),
            max_compute_workgroups_per_dimension: available.max_compute_workgroups_per_dimension,
            ..wgpu::Limits::downlevel_defaults()
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("siamese"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Device { adapter: summary.describe(), message: e.to_string() })?;
        let errors = Arc::new(Mutex::new(None));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().expect("error sink").get_or_insert_with(|| e.to_string());
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                sink.lock().expect("error sink").get_or_insert_with(|| format!("device lost: {message}"));
            }
        });
        Ok(Self { device, queue, adapter: summary, limits, timestamps, driver, errors })
    }

    /// The kernel set in use, in words ("portable kernels", or a driver's set in front of them).
    pub fn kernels(&self) -> String {
        super::kernel_set::describe(self.driver)
    }

    /// The adapter and the kernel set in use, in one line.
    pub fn adapter_line(&self) -> String {
        format!("adapter: {}; {}", self.adapter.describe(), self.kernels())
    }

    /// What a run says first: [`GpuContext::adapter_line`], and on a software adapter its
    /// [`GpuContext::software_notice`] on a second line.
    pub fn banner(&self) -> String {
        match self.software_notice() {
            Some(notice) => format!("{}\n{notice}", self.adapter_line()),
            None => self.adapter_line(),
        }
    }

    /// For a software adapter (one that runs on the CPU): what that means and how to get the
    /// GPU's own driver; None for a GPU.
    pub fn software_notice(&self) -> Option<String> {
        (self.adapter.device_type == wgpu::DeviceType::Cpu).then(|| {
            format!(
                "{} runs on the CPU. If this machine has a GPU, install its Vulkan driver (its ICD); \
                 in a container, NVIDIA_DRIVER_CAPABILITIES=all (not compute,utility) mounts NVIDIA's",
                self.adapter.name
            )
        })
    }

    /// Records an error found on our side of the device (a failed readback).
    pub fn record_error(&self, message: String) {
        self.errors.lock().expect("error sink").get_or_insert(message);
    }

    /// The first error the device reported since the last call, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.errors.lock().expect("error sink").take().map(Error::Gpu)
    }

    /// Blocks until the GPU has finished all submitted work.
    pub fn wait(&self) {
        // A poll error means the device is lost; the lost callback has recorded why.
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }
}
