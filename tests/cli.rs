//! The `siamese` binary end to end: a short training run on the bundled data writes every
//! output and lowers the loss; eval and embed read its model; bad input is refused with one
//! line, exit code 2 and nothing written.

use std::path::Path;

use siamese::checkpoint::HostModel;

use crate::util::{self, gpu_available, siamese, small_csv};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000)
}

#[test]
fn train_writes_every_output_and_the_loss_goes_down() {
    if !gpu_available("train end to end") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = siamese(&[
        "train",
        "--limit",
        "1500",
        "--test-limit",
        "400",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "train failed:\n{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).lines().last(), Some(out.to_str().unwrap()), "the output directory is printed last");
    let stderr = text(&o.stderr);
    assert!(stderr.contains("adapter: "), "the adapter is printed: {stderr}");
    assert_eq!(stderr.matches("first step done ").count(), 1, "the start-up time is printed once: {stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "driver noise reached stderr: {stderr}");

    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,train_loss,val_loss,val_pair_accuracy,mean_dist_same,mean_dist_diff,train_seconds,pairs_per_second"
    );
    assert_eq!(lines.len(), 4, "a row per epoch: {csv}");
    let train_loss: Vec<f64> = lines[1..].iter().map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    assert!(train_loss[2] < train_loss[0], "the training loss does not go down: {train_loss:?}");

    let json = std::fs::read_to_string(out.join("metrics.json")).unwrap();
    for key in
        ["knn_k1", "knn_k5", "precision_at_1", "map_at_r", "pair_auc", "pair_best_threshold", "pair_best_accuracy"]
    {
        assert!(json.contains(&format!("\"{key}\": ")), "metrics.json lacks {key}: {json}");
    }
    let knn1: f64 = json.split("\"knn_k1\": ").nth(1).unwrap().split(',').next().unwrap().trim().parse().unwrap();
    assert!(knn1 > 0.3, "kNN@1 {knn1} is no better than chance after 3 epochs");
    for png in ["pairs.png", "loss.png", "tsne.png"] {
        assert!(is_png(&out.join(png)), "{png} is not a PNG");
    }
    let tsne = std::fs::read_to_string(out.join("tsne.csv")).unwrap();
    assert_eq!(tsne.lines().next(), Some("x,y,label,class"));
    assert_eq!(tsne.lines().count(), 1 + 75, "one row per validation image (5% of 1500)");
    let (model, meta) = HostModel::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(model.batches_tracked, 3 * 2 * 23, "two BatchNorm updates per step, ⌈1425 / 64⌉ = 23 steps per epoch");
    assert_eq!(meta.get("epochs").map(String::as_str), Some("3"));

    // The trained model in the other commands.
    let model_path = out.join("model.safetensors");
    let small = small_csv(dir.path(), 200);
    let emb = dir.path().join("emb.csv");
    let o = siamese(&[
        "embed",
        "--model",
        model_path.to_str().unwrap(),
        "--data",
        small.to_str().unwrap(),
        "--out",
        emb.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "embed failed: {}", text(&o.stderr));
    let emb = std::fs::read_to_string(emb).unwrap();
    assert_eq!(emb.lines().next(), Some("label,e0,e1,e2,e3,e4,e5,e6,e7"));
    assert_eq!(emb.lines().count(), 201);
    let o = siamese(&[
        "eval",
        "--model",
        model_path.to_str().unwrap(),
        "--data",
        small.to_str().unwrap(),
        "--gallery",
        small.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "eval failed: {}", text(&o.stderr));
    assert!(text(&o.stdout).contains("\"knn_k1\": 1"), "a set is its own nearest neighbour: {}", text(&o.stdout));
}

/// `bench --launches` times each launch apart: one row per kernel and specialisation, the
/// shares adding up to the whole, every conv layer's shape among them. `--compile` times each
/// kernel's start-up: one row per kernel built, every launched one among them.
#[test]
fn bench_times_each_launch_and_compile() {
    if !gpu_available("bench --launches --compile") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = small_csv(dir.path(), 300);
    let args = ["bench", "--data", csv.to_str().unwrap(), "--steps", "2", "--warmup", "1", "--batch-size", "16"];
    let o = siamese(&[&args[..], &["--launches", "--compile"]].concat());
    assert!(o.status.success(), "bench failed:\n{}", text(&o.stderr));
    let report = text(&o.stdout);
    let (report, compiles) =
        report.split_once("  pipeline  first run  kernel (on a fresh device, seconds)\n").expect("a compile table");
    let compiles: Vec<(f64, f64, &str)> = compiles
        .lines()
        .map(|l| {
            let mut words = l.split_whitespace();
            let mut seconds = || words.next().expect("two times").parse::<f64>().expect("a number");
            let (built, run) = (seconds(), seconds());
            assert!(built >= 0.0 && run >= 0.0, "{l}");
            // Two 10-wide columns, a space between them, two before the label.
            (built, run, l.get(23..).expect("a label"))
        })
        .collect();
    let (total, kernels) = compiles.split_last().expect("rows and a total");
    assert_eq!(total.2, format!("total, {} kernels", kernels.len()), "{compiles:?}");
    // Translating thousands of lines of WGSL takes time anywhere: ~0 means it was not waited for.
    assert!(total.0 > 0.01, "pipelines built in {} s: {compiles:?}", total.0);
    let times: Vec<f64> = kernels.iter().map(|k| k.0 + k.1).collect();
    // Sorted before rounding to the printed milliseconds.
    assert!(times.windows(2).all(|w| w[0] >= w[1] - 0.002), "not slowest first: {compiles:?}");
    if report.contains("no timestamp queries") {
        return;
    }
    let table = report.split_once("  launch\n").expect("a launch table").1;
    let rows: Vec<(f64, &str)> = table
        .lines()
        .map(|l| {
            let share = l.split_whitespace().nth(2).expect("a share").trim_end_matches('%').parse().expect("a number");
            // After the share: the grid, "workgroups x invocations", then the label.
            let (grid, label) = l.split_once('%').expect("a share").1.trim_start().split_once("  ").expect("a label");
            let sizes: Vec<u32> = grid.split(" x ").map(|v| v.parse().expect("a grid of numbers")).collect();
            assert!(sizes.len() == 2 && sizes.iter().all(|&v| v > 0), "grid {grid:?} in {l}");
            (share, label)
        })
        .collect();
    assert!(rows.len() >= 25, "{} launches in {table}", rows.len());
    let total: f64 = rows.iter().map(|r| r.0).sum();
    assert!((total - 100.0).abs() < 1.0, "shares add up to {total}%: {table}");
    for shape in ["IC=1 OC=4 H=28 W=28", "IC=4 OC=4 H=28 W=28", "IC=4 OC=8 H=14 W=14", "IC=8 OC=8 H=14 W=14"] {
        assert!(rows.iter().any(|r| r.1.contains(shape)), "no launch of {shape}: {table}");
    }
    for (_, launch) in &rows {
        assert!(kernels.iter().any(|k| k.2 == *launch), "{launch} launched but not in the compile table: {kernels:?}");
    }
}

#[test]
fn pictures_without_training() {
    let dir = tempfile::tempdir().unwrap();
    let small = small_csv(dir.path(), 100);
    let png = dir.path().join("p.png");
    let o = siamese(&["pairs", "--data", small.to_str().unwrap(), "--out", png.to_str().unwrap()]);
    assert!(o.status.success(), "pairs failed: {}", text(&o.stderr));
    assert!(is_png(&png));
}

/// As `util::refused`, and that error line is all of stderr but the adapter line.
fn refused(args: &[&str], parts: &[&str]) {
    let o = util::refused(args, parts);
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("adapter: ")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {err}");
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let o = out.to_str().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "label,pixel1\n3,4\n").unwrap();
    let bad_s = bad.to_str().unwrap();
    refused(&["train", "--data", bad_s, "--out", o], &["bad.csv", "line 1", "expected 785"]);
    refused(&["train", "--data", "no/such/file.csv", "--out", o], &["no/such/file.csv"]);
    refused(&["train", "--batch-size", "0", "--out", o], &["--batch-size", "0"]);
    refused(&["train", "--lr", "-0.1", "--out", o], &["--lr", "-0.1"]);
    refused(&["train", "--z-dim", "0", "--out", o], &["--z-dim"]);
    refused(&["train", "--margin", "0", "--out", o], &["--margin"]);
    refused(&["train", "--val-fraction", "1.5", "--out", o], &["--val-fraction"]);
    refused(&["train", "--epochs", "1000000", "--out", o], &["--epochs"]);
    assert!(!out.exists(), "a refused run created its output directory");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a model at all").unwrap();
    refused(&["eval", "--model", junk.to_str().unwrap()], &["junk.safetensors", "not a safetensors model file"]);
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"x").unwrap();
    refused(&["train", "--limit", "100", "--out", full.to_str().unwrap()], &["--out", "already holds files"]);
}
