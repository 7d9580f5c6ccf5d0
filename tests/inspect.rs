//! Training at other widths, the sweep, and the commands that look inside a model: each writes
//! what it says, at the size asked, and refuses bad input as the others do.

use std::path::{Path, PathBuf};

use crate::util::{self, arg, gpu_available, siamese};

/// Trains a small model of width `z` into `dir/name`; its folder.
fn train(dir: &Path, name: &str, z: &str) -> PathBuf {
    let out = dir.join(name);
    let o = siamese(&[
        "train",
        "--z-dim",
        z,
        "--epochs",
        "2",
        "--limit",
        "1500",
        "--test-limit",
        "300",
        "--out",
        arg(&out),
    ]);
    assert!(o.status.success(), "z={z}: {}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[1..4], b"PNG", "{}", path.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// As `util::refused`, and nothing written at `must_not_exist`.
fn refused(args: &[&str], part: &str, must_not_exist: &Path) {
    util::refused(args, &[part]);
    assert!(!must_not_exist.exists(), "{args:?} wrote {}", must_not_exist.display());
}

#[test]
fn two_and_sixteen_wide_models_train_evaluate_and_map() {
    if !gpu_available("z=2 and z=16") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let two = train(dir.path(), "z2", "2");
    let sixteen = train(dir.path(), "z16", "16");
    // A 2-D run's map is its embedding; a 16-D run's is t-SNE.
    assert!(two.join("embedding.png").exists() && !two.join("tsne.png").exists());
    assert!(sixteen.join("tsne.png").exists() && !sixteen.join("embedding.png").exists());
    for run in [&two, &sixteen] {
        let json = std::fs::read_to_string(run.join("metrics.json")).unwrap();
        let m: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(m["knn_k1"].as_f64().unwrap() > 0.15, "{json}");
        assert_eq!(m["knn_k1_per_class"].as_object().unwrap().len(), 10, "{json}");
        let confusion = m["confusion_knn_k1"].as_object().unwrap();
        let total: u64 = confusion.values().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(total, 300, "every test image once in the confusion matrix");
        assert!(run.join("confusion.png").exists());
    }
    // tsne on the 2-D model draws the raw coordinates: the CSV beside it is embed's.
    let (map, emb) = (dir.path().join("map.png"), dir.path().join("emb.csv"));
    let model = two.join("model.safetensors");
    let data = ["--data", "data/fashion-mnist/test.csv.gz"];
    let o = siamese(&[&["tsne", "--model", arg(&model), "--out", arg(&map), "--limit", "200"][..], &data].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = siamese(&[&["embed", "--model", arg(&model), "--out", arg(&emb)][..], &data].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let drawn: Vec<(String, String)> = std::fs::read_to_string(map.with_extension("csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (format!("{},{}", f[0], f[1]), f[2].to_string())
        })
        .collect();
    let embedded: Vec<(String, String)> = std::fs::read_to_string(&emb)
        .unwrap()
        .lines()
        .skip(1)
        .take(200)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (format!("{},{}", f[1], f[2]), f[0].to_string())
        })
        .collect();
    assert_eq!(drawn.len(), 200);
    assert_eq!(drawn, embedded, "the 2-D map is not the embedding itself");
    // eval says which gallery it used: train's by default.
    let o = siamese(&["eval", "--model", arg(&model), "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("gallery: train.csv.gz: the training split of its first 1500 rows"), "{err}");
}

#[test]
fn a_sweep_writes_every_file_with_a_row_per_setting_and_resumes() {
    if !gpu_available("sweep") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let args = ["sweep", "--z", "2,4", "--margin", "1,2", "--epochs", "1", "--limit", "800", "--test-limit", "200"];
    let o = siamese(&[&args[..], &["--out", arg(&out)]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for (row, (z, m)) in rows.iter().zip([(2, 1), (2, 2), (4, 1), (4, 2)]) {
        assert!(row.starts_with(&format!("{z},{m},{m},1,")), "{row}");
        assert!(out.join(format!("z{z}-m{m}")).join("model.safetensors").exists());
    }
    assert_eq!(std::fs::read_to_string(out.join("sweep.md")).unwrap().lines().count(), 2 + 4);
    assert_eq!(png_size(&out.join("sweep.png")), (2 * 560 + 240, 2 * 500 + 70), "a 2 x 2 grid of panels");
    // Run again: every setting is done and kept, the files are written again alike.
    let o = siamese(&[&args[..], &["--out", arg(&out)]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("done before, kept").count(), 4, "{err}");
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap(), csv);
    // √z margins: z = 2 gets half the margin given (the one at z = 8).
    let scaled = dir.path().join("scaled");
    let o = siamese(&[
        "sweep",
        "--z",
        "2",
        "--margin",
        "2",
        "--margin-scale",
        "sqrt",
        "--epochs",
        "1",
        "--limit",
        "800",
        "--test-limit",
        "200",
        "--out",
        arg(&scaled),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(scaled.join("sweep.csv")).unwrap().lines().nth(1).unwrap().starts_with("2,1,2,"));
    let bad = dir.path().join("bad");
    refused(&["sweep", "--z", "0", "--out", arg(&bad)], "--z-dim", &bad);
    refused(&["sweep", "--margin", "-1", "--out", arg(&bad)], "--margin", &bad);
    refused(&["sweep", "--margin", "2,2", "--out", arg(&bad)], "--margin", &bad);
}

#[test]
fn neighbours_and_pairs_draw_what_was_asked() {
    if !gpu_available("neighbours and pairs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "run", "8");
    let model = run.join("model.safetensors");
    let nn = dir.path().join("nn.png");
    let o = siamese(&["neighbours", "--model", arg(&model), "--query", "0,17,230", "--k", "5", "--out", arg(&nn)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(nn.with_extension("csv")).unwrap();
    let rows: Vec<Vec<String>> = csv.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows.len(), 3 * 5, "{csv}");
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<std::collections::BTreeSet<_>>(),
        ["0", "17", "230"].into()
    );
    for r in &rows {
        assert_ne!(r[0], r[3], "a query is not its own neighbour");
        assert_eq!(r[6] == "1", r[1] == r[4], "same_class says whether the labels agree");
    }
    for q in rows.chunks(5) {
        let d: Vec<f32> = q.iter().map(|r| r[5].parse().unwrap()).collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "nearest first: {d:?}");
    }
    let side = 28 * 3;
    assert_eq!(png_size(&nn), ((20 + (side + 40) + 40 + 5 * (side + 40)) as u32, (50 + 3 * (side + 48) + 10) as u32));
    let o = siamese(&["neighbours", "--model", arg(&model), "--query", "random:4", "--k", "3", "--out", arg(&nn)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(nn.with_extension("csv")).unwrap().lines().count(), 1 + 4 * 3);
    let pairs = dir.path().join("pairs.png");
    let o = siamese(&["pairs", "--model", arg(&model), "--count", "6", "--out", arg(&pairs)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (w, h) = png_size(&pairs);
    let cell = 28 * 5;
    assert_eq!((w, h), (6 * (cell + 12) + 12, 2 * (cell + 26 + 12) + 12 + 30 + 50));
    let bad = dir.path().join("bad.png");
    refused(&["neighbours", "--model", arg(&model), "--query", "99999999", "--out", arg(&bad)], "--query", &bad);
    refused(&["neighbours", "--model", arg(&model), "--k", "0", "--out", arg(&bad)], "--k", &bad);
    refused(&["neighbours", "--model", arg(&model), "--query", "random:x", "--out", arg(&bad)], "--query", &bad);
    refused(&["pairs", "--model", arg(&model), "--threshold", "-1", "--out", arg(&bad)], "--threshold", &bad);
    refused(&["pairs", "--model", "missing.safetensors", "--out", arg(&bad)], "missing.safetensors", &bad);
}
