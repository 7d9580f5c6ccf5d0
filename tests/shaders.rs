//! Shader validation without a GPU: every file in shaders/ (with the common prelude) parses and
//! validates with naga, and every kernel the Rust side launches names an entry point that exists.

use siamese::gpu::{Access, Kernel, Shader};

fn module(shader: Shader) -> naga::Module {
    let source = shader.source();
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file(), e.emit_to_string(&source)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file(), e.emit_to_string(&source)));
    module
}

#[test]
fn every_shader_file_validates() {
    for shader in Shader::ALL {
        module(shader);
    }
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wgsl") && name != "common.wgsl" {
            assert!(Shader::ALL.iter().any(|s| s.file() == name), "shaders/{name} is not in the Shader registry");
        }
    }
}

#[test]
fn every_kernel_names_an_existing_entry_point() {
    for &kernel in Kernel::ALL {
        let module = module(kernel.shader());
        let entry = module.entry_points.iter().find(|e| e.name == kernel.entry_point());
        let entry = entry.unwrap_or_else(|| {
            panic!("{kernel:?}: no entry point {} in {}", kernel.entry_point(), kernel.shader().file())
        });
        assert_eq!(entry.stage, naga::ShaderStage::Compute, "{kernel:?}");
    }
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
        let module = module(kernel.shader());
        let index = module.entry_points.iter().position(|e| e.name == kernel.entry_point()).unwrap();
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&module)
            .unwrap();
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
}
