//! Never lose work: a run killed with SIGKILL mid-epoch and resumed ends bit for bit where the
//! uninterrupted run does; a diverging run stops naming the epoch and step; a batch too big for
//! the adapter is refused naming the limit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use siamese::train::RunState;

use crate::util::{gpu_available, siamese};

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
