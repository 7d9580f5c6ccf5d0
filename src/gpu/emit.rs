//! Every WGSL module a kernel set has built, as its device received it with the `override`
//! constants resolved, so that any offline compiler can take it: `siamese kernels --emit`, and
//! the test that translates each through naga's SPIR-V, MSL, HLSL and GLSL back ends.

use std::fmt::Write as _;
use std::path::Path;

use super::{GpuBackend, Kernel};
use crate::error::{Error, Result};

/// One built pipeline's module.
pub struct Emitted {
    pub kernel: Kernel,
    pub spec: Vec<u32>,
    /// A file name: the entry point and its specialisation.
    pub file: String,
    /// The WGSL with the constants' values in place of the `override` declarations.
    pub wgsl: String,
}

/// naga's validation with every capability a kernel set may ask for.
pub fn validator() -> naga::valid::Validator {
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
}

/// `source` parsed, validated and with `constants` resolved: the module of `entry` alone as
/// the device compiles it. The error says which step failed.
pub fn resolve(source: &str, entry: &str, constants: &[(&str, f64)]) -> std::result::Result<naga::Module, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| format!("parse: {}", e.emit_to_string(source)))?;
    let info = validator().validate(&module).map_err(|e| format!("validate: {e:?}"))?;
    let constants: naga::back::PipelineConstants = constants.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let stage = Some((naga::ShaderStage::Compute, entry));
    let (resolved, _) = naga::back::pipeline_constants::process_overrides(&module, &info, stage, &constants)
        .map_err(|e| format!("overrides: {e:?}"))?;
    Ok(resolved.into_owned())
}

impl GpuBackend {
    /// The modules of every pipeline built so far, in the order first built.
    pub fn emitted(&self) -> std::result::Result<Vec<Emitted>, String> {
        let mut out = Vec::new();
        for (kernel, spec) in self.kernels_built() {
            let (source, constants) = self.pipelines.source(*kernel, spec);
            let module = resolve(&source, kernel.entry_point(), &constants)
                .map_err(|e| format!("{}: {e}", kernel.label(spec)))?;
            let info = validator().validate(&module).map_err(|e| format!("{}: validate: {e:?}", kernel.label(spec)))?;
            let wgsl = naga::back::wgsl::write_string(&module, &info, naga::back::wgsl::WriterFlags::EXPLICIT_TYPES)
                .map_err(|e| format!("{}: wgsl: {e}", kernel.label(spec)))?;
            let values: String = spec.iter().map(|v| format!("-{v}")).collect();
            let file = format!("{}{values}.wgsl", kernel.entry_point());
            out.push(Emitted { kernel: *kernel, spec: spec.clone(), file, wgsl });
        }
        Ok(out)
    }

    /// Writes [`GpuBackend::emitted`] into `dir`, with INDEX.md saying what each file is.
    pub fn emit(&self, dir: &Path) -> Result<usize> {
        let modules = self.emitted().map_err(Error::Gpu)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut index = format!(
            "# Kernels as {} receives them ({})\n\nOne file per pipeline, `override` constants resolved.\n\n\
             | file | entry point | shader | specialisation |\n|---|---|---|---|\n",
            self.ctx.adapter.describe(),
            self.ctx.kernels()
        );
        for m in &modules {
            crate::output::write(&dir.join(&m.file), m.wgsl.as_bytes())?;
            let _ = writeln!(
                index,
                "| {} | {} | {} | {} |",
                m.file,
                m.kernel.entry_point(),
                m.kernel.shader().file(),
                m.kernel.label(&m.spec)
            );
        }
        crate::output::write(&dir.join("INDEX.md"), index.as_bytes())?;
        Ok(modules.len())
    }
}
