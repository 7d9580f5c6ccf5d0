//! Shader validation without a GPU: every file in shaders/ (with the common prelude) and every
//! generated kernel at every layer shape of the model parses and validates with naga, and every
//! kernel the Rust side launches names an entry point that exists.

use siamese::gpu::llvmpipe::{self, Mode, Shape, Through};
use siamese::gpu::{Access, Kernel, Shader};

/// The files in shaders/ run on any adapter with subgroups; on llvmpipe they and the generated
/// kernels hold runs of four floats as 64-bit integers (shaders/llvmpipe/packed_u64.wgsl).
fn validator(int64: bool) -> naga::valid::Validator {
    let mut caps = naga::valid::Capabilities::SUBGROUP;
    if int64 {
        caps |= naga::valid::Capabilities::SHADER_INT64;
    }
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
    v.subgroup_stages(naga::valid::ShaderStages::COMPUTE).subgroup_operations(naga::valid::SubgroupOperationSet::all());
    v
}

fn parse(label: &str, source: &str, int64: bool) -> naga::Module {
    let module =
        naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(source)));
    validator(int64).validate(&module).unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(source)));
    module
}

/// A shader file as most adapters compile it (vec4<f32> storage, no 64-bit integers).
fn module(shader: Shader) -> naga::Module {
    parse(shader.file(), &shader.source(siamese::gpu::kernel::PACKED_F32), false)
}

/// The model's convolutions: (c_in, c_out, side).
const MODEL_CONVS: [(u32, u32, u32); 5] = [(1, 4, 28), (4, 4, 28), (4, 8, 14), (8, 8, 14), (8, 1, 7)];

/// Every specialisation of a generated kernel that training the model compiles, plus odd ones.
fn generated_specs(kernel: Kernel) -> Vec<Vec<u32>> {
    let mut convs: Vec<(u32, u32, u32, u32, u32)> = MODEL_CONVS.iter().map(|&(i, o, s)| (i, o, s, s, 3)).collect();
    convs.extend([(3, 4, 5, 9, 3), (8, 8, 6, 10, 5), (2, 8, 7, 3, 1), (3, 1, 6, 10, 5)]);
    let mut specs = Vec::new();
    for (c_in, c_out, h, w, k) in convs {
        let fwd = Shape { ic: c_in, oc: c_out, h, w, k };
        let bwd = Shape { ic: c_out, oc: c_in, ..fwd };
        match kernel {
            Kernel::Conv2dRows => {
                if fwd.supported() {
                    specs.push(vec![c_in, c_out, h, w, k, 0, 0, 0]);
                    if c_out != 1 {
                        specs.push(vec![c_in, c_out, h, w, k, 0, 0, Through::BatchNorm as u32]);
                        specs.push(vec![c_in, c_out, h, w, k, 0, 0, Through::BatchNormOfRelu as u32]);
                    }
                }
                if bwd.supported() {
                    specs.push(vec![c_out, c_in, h, w, k, 1, 0, 0]);
                    specs.push(vec![c_out, c_in, h, w, k, 1, 1, 0]);
                    if c_in != 1 && w.is_multiple_of(2) && (h * w).is_multiple_of(4) {
                        for through in [Through::BatchNorm, Through::BatchNormOfRelu] {
                            specs.push(vec![c_out, c_in, h, w, k, Mode::InputGradSums as u32, 0, through as u32]);
                        }
                    }
                }
            }
            Kernel::Conv2dBackwardWeightRows if fwd.supported() => {
                specs.push(vec![c_in, c_out, h, w, k, 0, 0]);
                if c_out != 1 {
                    for through in [Through::BatchNorm, Through::BatchNormOfRelu] {
                        specs.push(vec![c_in, c_out, h, w, k, through as u32, 0]);
                        specs.push(vec![c_in, c_out, h, w, k, 0, through as u32]);
                    }
                }
            }
            Kernel::Conv2dBackwardRows
                if fwd.supported()
                    && c_in == c_out
                    && c_out != 1
                    && w.is_multiple_of(2)
                    && (h * w).is_multiple_of(4) =>
            {
                for through in [Through::BatchNorm, Through::BatchNormOfRelu] {
                    specs.push(vec![c_in, c_out, h, w, k, through as u32]);
                }
            }
            _ => {}
        }
    }
    specs
}

/// Every module a kernel runs: its file's, or one per generated specialisation.
fn kernel_modules(kernel: Kernel) -> Vec<naga::Module> {
    if !kernel.shader().generated() {
        return vec![module(kernel.shader())];
    }
    let specs = generated_specs(kernel);
    assert!(!specs.is_empty(), "{kernel:?}: no shapes to check");
    specs.iter().map(|spec| parse(&format!("{kernel:?} {spec:?}"), &llvmpipe::source(kernel, spec), true)).collect()
}

#[test]
fn every_shader_file_validates() {
    for shader in Shader::ALL {
        module(shader);
        parse(&format!("{} (packed)", shader.file()), &shader.source(llvmpipe::STORAGE), true);
    }
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let prelude =
            ["common.wgsl", "packed_f32.wgsl", "conv2d_params.wgsl", "weight_pack.wgsl"].contains(&name.as_str());
        if name.ends_with(".wgsl") && !prelude {
            assert!(Shader::ALL.iter().any(|s| s.file() == name), "shaders/{name} is not in the Shader registry");
        }
    }
}

#[test]
fn every_kernel_names_an_existing_entry_point() {
    for &kernel in Kernel::ALL {
        for module in kernel_modules(kernel) {
            entry_point_exists(kernel, &module);
        }
    }
}

fn entry_point_exists(kernel: Kernel, module: &naga::Module) {
    let entry = module.entry_points.iter().find(|e| e.name == kernel.entry_point());
    let entry = entry
        .unwrap_or_else(|| panic!("{kernel:?}: no entry point {} in {}", kernel.entry_point(), kernel.shader().file()));
    assert_eq!(entry.stage, naga::ShaderStage::Compute, "{kernel:?}");
}

#[test]
fn every_entry_point_is_launched() {
    for shader in Shader::ALL {
        for entry in module(shader).entry_points {
            assert!(
                Kernel::ALL.iter().any(|k| k.shader() == shader && k.entry_point() == entry.name),
                "{}: entry point {} has no Kernel",
                shader.file(),
                entry.name
            );
        }
    }
}

/// The bindings an entry point uses must match its Kernel's signature: binding 0 a uniform,
/// then storage buffers with the declared access. A mismatch would fail at pipeline creation.
#[test]
fn kernel_signatures_match_the_shaders() {
    for &kernel in Kernel::ALL {
        for module in kernel_modules(kernel) {
            signature_matches(kernel, &module);
        }
    }
}

fn signature_matches(kernel: Kernel, module: &naga::Module) {
    let index = module.entry_points.iter().position(|e| e.name == kernel.entry_point()).unwrap();
    let info = validator(kernel.shader().generated()).validate(module).unwrap();
    let used = info.get_entry_point(index);
    for (handle, var) in module.global_variables.iter() {
        if used[handle].is_empty() {
            continue;
        }
        let Some(binding) = &var.binding else {
            continue;
        };
        assert_eq!(binding.group, 0, "{kernel:?}: group {}", binding.group);
        let slot = binding.binding as usize;
        let declared = |slot: usize| {
            *kernel.bindings().get(slot.wrapping_sub(1)).unwrap_or_else(|| {
                panic!("{kernel:?}: uses binding {slot}, its signature has {}", kernel.bindings().len())
            })
        };
        match var.space {
            naga::AddressSpace::Uniform if slot == 0 => {}
            naga::AddressSpace::Uniform => {
                assert_eq!(declared(slot), Access::Uniform, "{kernel:?}: binding {slot}")
            }
            naga::AddressSpace::Storage { access } => {
                let writes = access.contains(naga::StorageAccess::STORE);
                let want = if writes { Access::ReadWrite } else { Access::Read };
                assert_eq!(declared(slot), want, "{kernel:?}: access of binding {slot}");
            }
            _ => {}
        }
    }
}

/// Every module each kernel set builds for a training run, resolved as its device receives it,
/// translates through naga's SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL) back ends;
/// a failure names the module and the back end.
#[test]
fn every_module_translates_through_every_back_end() {
    use siamese::gpu::{GpuBackend, GpuContext};
    use siamese::train::{TrainConfig, warm_up};
    if !crate::util::gpu_available("back ends") {
        return;
    }
    let mut failures = Vec::new();
    let mut translated = 0;
    for set in ["portable", "auto"] {
        let mut gpu = GpuBackend::with_context(GpuContext::with_kernels(Some(set)).unwrap());
        if set == "auto" && gpu.ctx.driver.is_none() {
            continue;
        }
        warm_up(&mut gpu, &TrainConfig::default());
        let modules = gpu.emitted().unwrap_or_else(|e| panic!("{set}: {e}"));
        assert!(modules.len() > 20, "{set}: only {} modules", modules.len());
        for m in &modules {
            let module = naga::front::wgsl::parse_str(&m.wgsl)
                .unwrap_or_else(|e| panic!("{}: {}", m.file, e.emit_to_string(&m.wgsl)));
            let info =
                siamese::gpu::emit::validator().validate(&module).unwrap_or_else(|e| panic!("{}: {e:?}", m.file));
            for (back_end, result) in back_ends(&module, &info, m.kernel.entry_point()) {
                // The driver set holds rows as u64 pairs, which GLSL lacks: it runs only where
                // the adapter has 64-bit integers, never on wgpu's GL backend.
                if set == "auto" && back_end == "GLSL" {
                    assert!(
                        result.as_ref().is_err_and(|e| e.contains("width: 8")) || result.is_ok(),
                        "{}: {result:?}",
                        m.file
                    );
                    continue;
                }
                match result {
                    Ok(()) => translated += 1,
                    Err(e) => failures.push(format!("{set} {} through {back_end}: {e}", m.file)),
                }
            }
        }
    }
    eprintln!("{translated} translations");
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
}

/// The module through each back end: (its name, whether it translated).
fn back_ends(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
) -> Vec<(&'static str, Result<(), String>)> {
    use naga::back::{glsl, hlsl, msl, spv};
    let stage = naga::ShaderStage::Compute;
    let spirv = spv::write_vec(
        module,
        info,
        &spv::Options::default(),
        Some(&spv::PipelineOptions { shader_stage: stage, entry_point: entry.to_string() }),
    )
    .map(|_| ())
    .map_err(|e| e.to_string());
    let metal = msl::write_string(
        module,
        info,
        &msl::Options { lang_version: (2, 4), ..Default::default() },
        &msl::PipelineOptions { entry_point: Some((stage, entry.to_string())), ..Default::default() },
    )
    .map(|_| ())
    .map_err(|e| e.to_string());
    let mut text = String::new();
    let options = hlsl::Options { shader_model: hlsl::ShaderModel::V6_0, ..Default::default() };
    let pipeline = hlsl::PipelineOptions { entry_point: Some((stage, entry.to_string())) };
    let dx12 = hlsl::Writer::new(&mut text, &options, &pipeline)
        .write(module, info, None)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let mut text = String::new();
    let options = glsl::Options { version: glsl::Version::Desktop(450), ..Default::default() };
    let pipeline = glsl::PipelineOptions { shader_stage: stage, entry_point: entry.to_string(), multiview: None };
    let gl =
        glsl::Writer::new(&mut text, module, info, &options, &pipeline, naga::proc::BoundsCheckPolicies::default())
            .and_then(|mut w| w.write())
            .map(|_| ())
            .map_err(|e| e.to_string());
    vec![("SPIR-V", spirv), ("MSL", metal), ("HLSL", dx12), ("GLSL", gl)]
}
