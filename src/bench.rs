//! `siamese bench` and `train --profile`: where a training step's time goes, kernel by kernel,
//! from GPU timestamps around every dispatch; `bench --compile`: where a first run's start-up
//! goes, kernel by kernel.

use std::fmt::Write;
use std::time::Instant;

use crate::gpu::{GpuBackend, Profile, kernel::Kernel};
use crate::train::Trainer;

/// Times `steps` training steps after `warmup` untimed ones: wall time per step without
/// profiling, then one more pass with timestamps for the per-kernel table.
pub fn bench_steps(
    gpu: &mut GpuBackend,
    trainer: &mut Trainer<GpuBackend>,
    warmup: usize,
    steps: usize,
    launches: bool,
) -> String {
    let batch = trainer.cfg.batch_size;
    let pairs = trainer.bench_pairs(warmup + steps);
    let mut out = String::new();
    for (i, chunk) in pairs.chunks(batch).take(warmup).enumerate() {
        trainer.step(gpu, chunk, i % trainer.steps_per_epoch());
    }
    gpu.sync();
    let (dispatches0, submits0) = (gpu.dispatches, gpu.submits);
    let start = Instant::now();
    for (i, chunk) in pairs.chunks(batch).skip(warmup).take(steps).enumerate() {
        trainer.step(gpu, chunk, i % trainer.steps_per_epoch());
    }
    gpu.sync();
    let wall = start.elapsed().as_secs_f64() / steps.max(1) as f64;
    let per_step = |v: u64| v as f64 / steps.max(1) as f64;
    writeln!(out, "kernels: {}", gpu.ctx.kernels()).ok();
    writeln!(
        out,
        "{steps} steps of {batch} pairs: {:.2} ms/step, {:.0} pairs/s, {:.0} dispatches and {:.1} submits per step",
        wall * 1e3,
        batch as f64 / wall,
        per_step(gpu.dispatches - dispatches0),
        per_step(gpu.submits - submits0),
    )
    .ok();
    if gpu.enable_profiling() {
        let start = Instant::now();
        for (i, chunk) in pairs.chunks(batch).skip(warmup).take(steps).enumerate() {
            trainer.step(gpu, chunk, i % trainer.steps_per_epoch());
        }
        let profile = gpu.take_profile();
        let wall = start.elapsed().as_secs_f64() / steps.max(1) as f64;
        gpu.disable_profiling();
        out.push_str(&profile_table(&profile, steps));
        writeln!(out, "{:<34} {:>10} {:>10.3}", "wall time, profiled steps", "", wall * 1e3).ok();
        if launches {
            out.push_str(&launch_table(gpu, &profile, steps));
        }
    } else {
        writeln!(out, "(this adapter has no timestamp queries: no per-kernel table)").ok();
    }
    out
}

/// The per-kernel table: calls and GPU time per step, share of the GPU time.
pub fn profile_table(profile: &Profile, steps: usize) -> String {
    let total = profile.total_ns().max(1.0);
    let mut rows = profile.kernels.clone();
    rows.sort_by(|a, b| b.ns.total_cmp(&a.ns));
    let mut out = String::new();
    writeln!(out, "{:<34} {:>10} {:>10} {:>7} {:>16}", "kernel", "calls/step", "ms/step", "share", "rate").ok();
    for k in rows {
        let (rate, unit) = k.rate();
        writeln!(
            out,
            "{:<34} {:>10.1} {:>10.3} {:>6.1}% {:>8.2} {unit}",
            k.kernel.entry_point(),
            k.calls as f64 / steps as f64,
            k.ns / steps as f64 / 1e6,
            100.0 * k.ns / total,
            rate
        )
        .ok();
    }
    writeln!(out, "{:<34} {:>10} {:>10.3}", "total GPU time", "", total / steps as f64 / 1e6).ok();
    out
}

/// The same time by launch: each kernel with its specialisation (for the generated conv
/// kernels, the layer's shape and the pass: src/gpu/llvmpipe/), slowest first.
pub fn launch_table(gpu: &GpuBackend, profile: &Profile, steps: usize) -> String {
    let total = profile.total_ns().max(1.0);
    let mut rows = profile.launches.clone();
    rows.sort_by(|a, b| b.ns.total_cmp(&a.ns));
    let mut out = String::new();
    writeln!(out, "{:>10} {:>10} {:>7} {:>18}  launch", "calls/step", "ms/step", "share", "grid").ok();
    for l in rows {
        let (calls, ms) = (l.calls as f64 / steps as f64, l.ns / steps as f64 / 1e6);
        let size = gpu.workgroup_size(l.kernel, &l.spec).map_or("?".to_string(), |s| s.to_string());
        let grid = format!("{} x {size}", l.workgroups);
        writeln!(
            out,
            "{calls:>10.1} {ms:>10.3} {:>6.1}% {grid:>18}  {}",
            100.0 * l.ns / total,
            l.kernel.label(&l.spec)
        )
        .ok();
    }
    out
}

/// How long each of `kernels` takes to get ready on a device of its own, slowest first: its
/// pipeline built (WGSL translated, handed to the driver), then one run on placeholders (a
/// driver that compiles at first dispatch, as a CPU driver does, compiles it then). Mesa's shader
/// cache answers for the kernels it holds; MESA_SHADER_CACHE_DISABLE=true times the compiler.
pub fn compile_table(kernels: &[(Kernel, Vec<u32>)]) -> crate::Result<String> {
    let mut fresh = GpuBackend::new()?;
    let mut rows = Vec::new();
    for (kernel, spec) in kernels {
        let start = Instant::now();
        fresh.build_pipeline(*kernel, spec);
        let built = start.elapsed().as_secs_f64();
        fresh.compile_kernel(*kernel, spec)?;
        rows.push((built, start.elapsed().as_secs_f64() - built, kernel.label(spec)));
    }
    rows.sort_by(|a, b| (b.0 + b.1).total_cmp(&(a.0 + a.1)));
    let mut out = String::new();
    writeln!(out, "{:>10} {:>10}  kernel (on a fresh device, seconds)", "pipeline", "first run").ok();
    for (built, run, label) in &rows {
        writeln!(out, "{built:>10.3} {run:>10.3}  {label}").ok();
    }
    let total = |f: fn(&(f64, f64, String)) -> f64| rows.iter().map(f).sum::<f64>();
    writeln!(out, "{:>10.3} {:>10.3}  total, {} kernels", total(|r| r.0), total(|r| r.1), rows.len()).ok();
    Ok(out)
}
