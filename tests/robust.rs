//! Never lose work: a run killed with SIGKILL mid-epoch and resumed ends bit for bit where the
//! uninterrupted run does; a diverging run stops naming the epoch and step; a batch too big for
//! the adapter is refused naming the limit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use siamese::run::RunState;

use crate::util::{arg, gpu_available, refused, siamese, small_csv};

const BIN: &str = env!("CARGO_BIN_EXE_siamese");

/// A small run: 760 training pairs in 12 steps of 64 per epoch.
const SMALL: [&str; 8] = ["--limit", "800", "--test-limit", "200", "--batch-size", "64", "--epochs", "3"];

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut t: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(n, v)| (n, v.data().to_vec())).collect();
    t.sort();
    t
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_bits() {
    if !gpu_available("resume after SIGKILL") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    let o = siamese(&[&["train", "--out", whole.to_str().unwrap()][..], &SMALL].concat());
    assert!(o.status.success(), "uninterrupted run failed: {}", String::from_utf8_lossy(&o.stderr));

    let mut child = Command::new(BIN)
        .args([&["train", "--out", cut.to_str().unwrap()][..], &SMALL].concat())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = cut.join("checkpoint.safetensors");
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Into epoch 2, then SIGKILL: no chance to clean up. Briefly: on a calm machine an epoch of
    // this size takes well under half a second (a 400 ms wait let the run finish).
    std::thread::sleep(Duration::from_millis(40));
    child.kill().unwrap();
    child.wait().unwrap();
    let state = RunState::load(&checkpoint).expect("the checkpoint survives the kill whole");
    assert!(state.epochs_done < 3, "the run finished before it was killed");
    eprintln!("killed after {} finished epochs", state.epochs_done);

    // The data and the epochs again; the settings come from the checkpoint.
    let o = siamese(&[
        "train",
        "--resume",
        cut.to_str().unwrap(),
        "--limit",
        "800",
        "--test-limit",
        "200",
        "--epochs",
        "3",
    ]);
    assert!(o.status.success(), "resume failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming after epoch"));
    for file in ["model.safetensors", "checkpoint.safetensors"] {
        let (a, b) = (tensors(&whole.join(file)), tensors(&cut.join(file)));
        assert_eq!(a.len(), b.len(), "{file}: tensor count");
        for ((na, da), (nb, db)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(da == db, "{file}: {na} differs after the resume");
        }
    }
    let losses = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').take(6).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(losses(&whole), losses(&cut), "the metrics (timings aside) differ after the resume");
}

#[test]
fn a_diverging_run_stops_naming_epoch_and_step() {
    if !gpu_available("divergence") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nan");
    let o = siamese(&[
        "train",
        "--limit",
        "400",
        "--test-limit",
        "100",
        "--lr",
        "1e30",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("training diverged at epoch 1, step "), "{err}");
    assert!(err.contains("no checkpoint was written"), "{err}");
    assert!(!out.join("model.safetensors").exists() && !out.join("checkpoint.safetensors").exists());
}

#[test]
fn a_batch_too_big_for_the_adapter_is_refused() {
    if !gpu_available("batch limit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big");
    let o = siamese(&["train", "--limit", "400", "--batch-size", "100000", "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--batch-size") && err.contains("MiB per buffer"), "{err}");
    assert!(!out.exists(), "a refused run created its output directory");
}

#[test]
fn resume_refuses_changed_settings_and_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let o = siamese(&["train", "--resume", dir.path().to_str().unwrap(), "--lr", "0.1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--lr: a resumed run keeps its checkpoint's settings"));
    let o = siamese(&["train", "--resume", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("checkpoint.safetensors"), "a missing checkpoint is named");
}

/// Temporary files of ours anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.path().is_dir() {
            found.extend(leftovers(&entry.path()));
        } else if name.contains(".tmp") || name.starts_with(".siamese") {
            found.push(entry.path().display().to_string());
        }
    }
    found
}

/// A small model to embed with, trained once per test that needs one.
fn small_model(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("model-run");
    let o = siamese(&["train", "--limit", "300", "--test-limit", "100", "--epochs", "1", "--out", arg(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("model.safetensors")
}

#[test]
fn outputs_reach_a_symlinks_target_and_leave_devices_alone() {
    if !gpu_available("outputs through links and devices") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let data = small_csv(dir.path(), 5);
    let (real, link) = (dir.path().join("real.csv"), dir.path().join("link.csv"));
    std::fs::write(&real, "old").unwrap();
    std::os::unix::fs::symlink("real.csv", &link).unwrap();
    let o = siamese(&["embed", "--model", arg(&model), "--data", arg(&data), "--out", arg(&link)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert_eq!(std::fs::read_to_string(&real).unwrap().lines().count(), 6, "the target holds the header and 5 rows");
    // A device is written in place, never replaced by a file.
    let o = siamese(&["embed", "--model", arg(&model), "--data", arg(&data), "--out", "/dev/null"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    // Through /dev/stdout into a pipe: the rows arrive on stdout.
    let o = siamese(&["embed", "--model", arg(&model), "--data", arg(&data), "--out", "/dev/stdout"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("label,e0,"));
    // Single-class data embeds (only pairs need two classes).
    let data = small_csv(dir.path(), 1);
    let o = siamese(&["embed", "--model", arg(&model), "--data", arg(&data), "--out", arg(&real)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A folder, a full device, a name of 250 characters.
    refused(&["embed", "--model", arg(&model), "--data", arg(&data), "--out", arg(dir.path())], &["is a directory"]);
    refused(&["embed", "--model", arg(&model), "--data", arg(&data), "--out", "/dev/full"], &["/dev/full"]);
    let long = dir.path().join("e".repeat(250));
    let o = siamese(&["embed", "--model", arg(&model), "--data", arg(&data), "--out", arg(&long)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

#[test]
fn data_that_cannot_make_pairs_is_refused_before_any_work() {
    if !gpu_available("unpairable data") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // The first two test rows are of two classes: no same-class evaluation pair.
    refused(&["train", "--test-limit", "2", "--limit", "300", "--out", arg(&out)], &["no class has two images"]);
    refused(&["train", "--limit", "4", "--out", arg(&out)], &["validation rows", "two classes"]);
    refused(&["train", "--limit", "6000", "--val-fraction", "0.0001", "--out", arg(&out)], &["--val-fraction"]);
    refused(&["eval", "--model", "x.safetensors", "--data", "data/fashion-mnist/test.csv.gz"], &["x.safetensors"]);
    assert!(!out.exists(), "a refused run left its folder");
    refused(&["train", "--z-dim", "4096", "--batch-size", "4200", "--out", arg(&out)], &["--z-dim", "MiB"]);
    refused(&["train", "--margin", "1e30", "--out", arg(&out)], &["--margin"]);
    refused(&["bench", "--steps", "0"], &["--steps"]);
    refused(&["tsne", "--model", "m", "--data", "d", "--out", "o.png", "--limit", "0"], &["--limit"]);
    assert!(!out.exists(), "a refused run left its folder");
    // A small file still benchmarks (its steps cycle through its pairs).
    let small = small_csv(dir.path(), 40);
    let o = siamese(&["bench", "--data", arg(&small), "--steps", "2", "--warmup", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_closed_or_full_stdout_is_one_line_and_exit_2() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let o = Command::new(BIN).arg("info").stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.trim().lines().count() == 1 && err.contains("standard output"), "{err}");
    // WGPU_BACKEND with a typo is named, not read as "no adapter".
    let o = Command::new(BIN).arg("info").env("WGPU_BACKEND", "vulkn").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("WGPU_BACKEND") && err.contains("vulkn"), "{err}");
}

#[test]
fn runs_claim_their_folder_and_keep_the_last_good_checkpoint() {
    if !gpu_available("run folders") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Two runs started together with the default name get two folders.
    let start = |d: &Path| {
        Command::new(BIN)
            .args(["train", "--limit", "300", "--test-limit", "100", "--epochs", "1"])
            .args(["--data", concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist/train.csv.gz")])
            .args(["--test", concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist/test.csv.gz")])
            .current_dir(d)
            .stderr(Stdio::null())
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start(dir.path()));
        let b = s.spawn(|| start(dir.path()));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success() && b.status.success());
    let (a, b) = (String::from_utf8_lossy(&a.stdout).to_string(), String::from_utf8_lossy(&b.stdout).to_string());
    let folder = |o: &str| dir.path().join(o.lines().last().unwrap());
    assert_ne!(folder(&a), folder(&b), "two runs wrote one folder");
    assert!(folder(&a).join("model.safetensors").exists() && folder(&b).join("model.safetensors").exists());

    // A folder another run holds is refused, for --resume as for --out.
    let held = folder(&a);
    let lock = std::fs::File::create(held.join(".siamese.lock")).unwrap();
    lock.lock().unwrap();
    refused(
        &["train", "--resume", arg(&held), "--epochs", "2", "--limit", "300", "--test-limit", "100"],
        &["another siamese run"],
    );
    drop(lock);
    // A run killed while writing left a temporary file: the next claim removes it.
    let stale = held.join(".siamese-999999999-0.tmp");
    std::fs::write(&stale, "half").unwrap();
    let o = siamese(&["train", "--resume", arg(&held), "--epochs", "2", "--limit", "300", "--test-limit", "100"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stale.exists(), "a dead run's temporary file stayed");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());

    // A run that diverges keeps the checkpoint of its last finite epoch, which resumes.
    let out = dir.path().join("lr");
    let args = ["train", "--lr", "1e3", "--epochs", "4", "--limit", "2000", "--test-limit", "200"];
    let o = siamese(&[&args[..], &["--out", arg(&out)]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("training diverged"), "{err}");
    if err.contains("keeps epoch") {
        let state = RunState::load(&out.join("checkpoint.safetensors")).expect("the kept checkpoint loads");
        assert!(state.check_finite().is_ok());
    }

    // --epochs 0 writes a checkpoint that a later run resumes from.
    let zero = dir.path().join("zero");
    let o = siamese(&["train", "--epochs", "0", "--limit", "300", "--test-limit", "100", "--out", arg(&zero)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = siamese(&["train", "--resume", arg(&zero), "--epochs", "1", "--limit", "300", "--test-limit", "100"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Other data of the same row count: refused by its fingerprint.
    let other = small_csv(dir.path(), 300);
    let o = siamese(&["train", "--resume", arg(&zero), "--epochs", "2", "--data", arg(&other), "--test-limit", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fingerprint"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn damaged_checkpoints_and_models_are_refused() {
    if !gpu_available("damaged checkpoints") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = siamese(&["train", "--epochs", "1", "--limit", "300", "--test-limit", "100", "--out", arg(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let checkpoint = out.join("checkpoint.safetensors");
    let good = std::fs::read(&checkpoint).unwrap();
    // One byte of a tensor flipped: the last byte of the file is tensor data.
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    std::fs::write(&checkpoint, &bad).unwrap();
    refused(&["train", "--resume", arg(&out), "--epochs", "2", "--limit", "300", "--test-limit", "100"], &["checksum"]);
    std::fs::write(&checkpoint, &good).unwrap();
    let model = out.join("model.safetensors");
    let mut bad = std::fs::read(&model).unwrap();
    *bad.last_mut().unwrap() ^= 0x40;
    std::fs::write(&model, &bad).unwrap();
    refused(&["eval", "--model", arg(&model)], &["model.safetensors", "checksum"]);
    refused(
        &["embed", "--model", arg(&model), "--data", "data/fashion-mnist/test.csv.gz", "--out", "/dev/null"],
        &["checksum"],
    );
    // Values the format allows but a run cannot have, written with a valid checksum.
    let mut state = RunState::load(&checkpoint).unwrap();
    state.adam_step += 1_000_000_000_000;
    state.save(&checkpoint).unwrap();
    assert!(RunState::load(&checkpoint).unwrap_err().to_string().contains("adam_step"));
    std::fs::write(&checkpoint, &good).unwrap();
    let mut state = RunState::load(&checkpoint).unwrap();
    let buffers = state.model.net.buffers();
    let var = buffers.entries.iter().find(|e| e.name.ends_with("running_var")).unwrap();
    state.model.buffers[var.offset + 1] = -0.5;
    state.save(&checkpoint).unwrap();
    let e = RunState::load(&checkpoint).unwrap_err().to_string();
    assert!(e.contains(&var.name) && e.contains("never negative"), "{e}");
}

#[test]
fn identical_runs_write_identical_files() {
    if !gpu_available("reproducible outputs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        let o = siamese(&["train", "--epochs", "2", "--limit", "1000", "--test-limit", "200", "--out", arg(&out)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (a, b) = (run("a"), run("b"));
    for file in ["model.safetensors", "checkpoint.safetensors", "tsne.csv", "metrics.json"] {
        assert!(std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(), "{file} differs");
    }
    let untimed = |p: &Path| -> Vec<String> {
        let csv = std::fs::read_to_string(p.join("metrics.csv")).unwrap();
        csv.lines().map(|l| l.split(',').take(6).collect::<Vec<_>>().join(",")).collect()
    };
    assert_eq!(untimed(&a), untimed(&b));
}

#[test]
fn an_interrupted_run_leaves_no_temporary_file() {
    if !gpu_available("SIGINT") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = Command::new(BIN)
        .args(["train", "--epochs", "50", "--limit", "2000", "--test-limit", "100", "--out", arg(&out)])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = out.join("checkpoint.safetensors");
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 5 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Signals at moments spread over an epoch, some inside a checkpoint's write.
    std::thread::sleep(Duration::from_millis(150));
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    RunState::load(&checkpoint).expect("the checkpoint is whole");
}
