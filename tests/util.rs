//! Test helpers: closeness checks that report where they fail, seeded random data, the shared
//! GPU, and the PyTorch fixtures.

use std::sync::{Mutex, OnceLock};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use siamese::backend::{Backend, Norm, Running};
use siamese::gpu::GpuBackend;
use siamese::ops::BatchNormParams;

/// ‖got − want‖₂ / ‖want‖₂ (or the plain norm of the difference when want is all zeros).
pub fn rel_l2(want: &[f64], got: &[f64]) -> f64 {
    assert_eq!(want.len(), got.len(), "rel_l2: lengths differ");
    let diff: f64 = want.iter().zip(got).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|a| a * a).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}

/// Fails with the op, the relative error, the largest difference and where, unless the
/// relative L2 error is at most `tol`. Returns the relative error.
pub fn assert_close(what: &str, want: &[f64], got: &[f64], tol: f64) -> f64 {
    assert_eq!(want.len(), got.len(), "{what}: {} values, expected {}", got.len(), want.len());
    assert!(
        got.iter().all(|v| v.is_finite()) || want.iter().zip(got).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{what}: non-finite output"
    );
    let err = rel_l2(want, got);
    // Written so that a NaN error fails too.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(err <= tol) {
        let (i, d) = want
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .enumerate()
            .fold((0, 0.0), |best, (i, d)| if d > best.1 { (i, d) } else { best });
        panic!(
            "{what}: relative L2 error {err:.3e} > {tol:.1e}; largest difference {d:.3e} at index {i} \
             (expected {}, got {}) of {}",
            want[i],
            got[i],
            want.len()
        );
    }
    err
}

pub fn f64s<T: Copy + Into<f64>>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| x.into()).collect()
}

/// A seeded generator, so that every failure can be replayed.
pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// `len` values uniform in [lo, hi).
pub fn uniform(rng: &mut Xoshiro256PlusPlus, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The GPU shared by all tests (pipelines compile once). Without an adapter a GPU test fails
/// with one line saying how to get one, unless SIAMESE_SKIP_GPU_TESTS is set: then it skips on
/// purpose, says so past the test harness's capture, and counts.
pub fn with_gpu<R>(test: &str, f: impl FnOnce(&mut GpuBackend) -> R) -> Option<R> {
    static GPU: OnceLock<Result<Mutex<GpuBackend>, String>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| GpuBackend::new().map(Mutex::new).map_err(|e| e.to_string()));
    match gpu {
        Ok(gpu) => {
            // A failed test may have poisoned the lock; the backend itself is still usable.
            let mut gpu = gpu.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut gpu);
            if let Some(e) = gpu.take_error() {
                panic!("{test}: {e}");
            }
            Some(result)
        }
        Err(e) => {
            skip_on_purpose(test, e);
            None
        }
    }
}

/// The one line a GPU test without an adapter fails with, or its skip on purpose.
fn skip_on_purpose(test: &str, why: &str) {
    static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if std::env::var_os("SIAMESE_SKIP_GPU_TESTS").is_none() || std::env::var_os("CI").is_some() {
        panic!("{test}: {why}; or set SIAMESE_SKIP_GPU_TESTS=1 to skip the GPU tests on purpose (not under CI)");
    }
    let n = SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    // Straight to stderr: the harness captures only the print macros.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED on purpose (SIAMESE_SKIP_GPU_TESTS), {n} so far: {test}");
}

/// How far a fused kernel may be from its primitives run apart (relative L2). On a CPU adapter
/// (llvmpipe) one compiler rounds both alike: exactly. A GPU's compiler contracts a·b + c into
/// one fused multiply-add its own way in each kernel (and Metal compiles with fast-math): each
/// term of a sum may move by an ulp, so sums of up to a few thousand terms stay well within
/// 1e-5. The same kernel twice still gives the same bits everywhere (tests assert that apart).
pub fn fused_tolerance(gpu: &GpuBackend) -> f64 {
    if gpu.ctx.adapter.device_type == wgpu::DeviceType::Cpu { 0.0 } else { 1e-5 }
}

/// A PyTorch fixture file from tests/fixtures.
pub struct Fixture {
    bytes: Vec<u8>,
    name: &'static str,
}

impl Fixture {
    pub fn load(name: &'static str) -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { bytes, name }
    }

    /// Tensor `key` as f64, whatever its dtype.
    pub fn get(&self, key: &str) -> Vec<f64> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("fixture parses");
        let t = st.tensor(key).unwrap_or_else(|e| panic!("{}: {key}: {e}", self.name));
        let data = t.data();
        match t.dtype() {
            safetensors::Dtype::F32 => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
            }
            safetensors::Dtype::F64 => {
                data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
            }
            safetensors::Dtype::I64 => {
                data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect()
            }
            other => panic!("{}: {key}: dtype {other:?}", self.name),
        }
    }
}

/// Runs the `siamese` binary from the crate root.
pub fn siamese(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_siamese"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the siamese binary runs")
}

/// A path as the binary's argument.
pub fn arg(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// A refused command: exit code 2 within a minute, one error line on stderr (clap's flag
/// errors add a usage hint after theirs) saying every `parts` and its cause at most once,
/// nothing on stdout. Its output, for checks of the caller's own.
pub fn refused(args: &[&str], parts: &[&str]) -> std::process::Output {
    let start = std::time::Instant::now();
    let o = siamese(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: not one error line: {err}");
    for part in parts {
        assert!(errors[0].contains(part), "{args:?}: {:?} does not say {part:?}", errors[0]);
    }
    assert!(errors[0].matches("(os error").count() <= 1, "{args:?}: says its cause twice: {}", errors[0]);
    assert!(o.stdout.is_empty(), "{args:?} printed {}", String::from_utf8_lossy(&o.stdout));
    assert!(start.elapsed() < std::time::Duration::from_secs(60), "{args:?} took {:?}", start.elapsed());
    o
}

/// A headerless CSV of the bundled test set's first `n` images, as `dir`/small-`n`.csv.
pub fn small_csv(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let test = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist/test.csv.gz"));
    let data = siamese::data::Dataset::load(test).unwrap();
    let mut csv = String::new();
    for i in 0..n {
        let px: Vec<String> = data.image(i).iter().map(|p| p.to_string()).collect();
        csv.push_str(&format!("{},{}\n", data.labels[i], px.join(",")));
    }
    let path = dir.join(format!("small-{n}.csv"));
    std::fs::write(&path, csv).unwrap();
    path
}

/// Whether a GPU adapter exists for tests that run the binary; without one, as [`with_gpu`].
pub fn gpu_available(test: &str) -> bool {
    if !siamese::gpu::adapters().is_empty() {
        return true;
    }
    skip_on_purpose(
        test,
        "no GPU adapter (install a Vulkan driver: `apt-get install mesa-vulkan-drivers` gives a software one)",
    );
    false
}

/// The tensors of one BatchNorm call in train mode: input, γ, β, output, saved statistics,
/// running mean and variance.
pub struct BatchNormTrain<'a, T> {
    pub x: &'a T,
    pub gamma: &'a T,
    pub beta: &'a T,
    pub y: &'a T,
    pub saved: &'a T,
    pub mean: &'a T,
    pub var: &'a T,
}

/// A train-mode BatchNorm forward on any backend: its statistics, then the normalisation.
pub fn batchnorm_train<B: Backend>(b: &mut B, p: &BatchNormParams, t: BatchNormTrain<B::Tensor>) {
    b.batchnorm_statistics(p, t.x, None, t.saved, Running { mean: t.mean, var: t.var });
    b.batchnorm_normalise(&Norm { p: *p, gamma: t.gamma, beta: t.beta, saved: t.saved }, t.x, t.y);
}

/// The same on the CPU reference's slices.
#[allow(clippy::type_complexity)]
pub fn cpu_batchnorm_train<F: siamese::float::Float>(
    p: &BatchNormParams,
    x: &[F],
    gb: (&[F], &[F]),
    t: (&mut [F], &mut [F], &mut [F], &mut [F]),
) {
    let (y, saved, mean, var) = t;
    siamese::cpu::batchnorm_statistics(p, x, saved, mean, var);
    siamese::cpu::batchnorm_normalise(p, x, gb.0, gb.1, saved, y);
}

/// An eval-mode BatchNorm forward on any backend: the running statistics, then the
/// normalisation.
pub fn batchnorm_eval<B: Backend>(
    b: &mut B,
    p: &BatchNormParams,
    (x, gamma, beta): (&B::Tensor, &B::Tensor, &B::Tensor),
    running: Running<B::Tensor>,
    y: &B::Tensor,
) {
    let saved = b.scratch(p.saved_len());
    b.batchnorm_running_statistics(p, running, &saved);
    b.batchnorm_normalise(&Norm { p: *p, gamma, beta, saved: &saved }, x, y);
}
