//! How good the embeddings are: kNN classification against a gallery, retrieval within a set
//! (precision@1, MAP@R), and verification of fixed pairs (ROC AUC, best threshold).
//!
//! Plain Rust over host embeddings (N, z), written for clarity and split over the cores.

use rand::RngExt;

use crate::data::{self, Stream};

/// Embeddings with their labels.
#[derive(Clone, Debug)]
pub struct Embedded {
    pub z: usize,
    /// (N, z)
    pub values: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Embedded {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.z..][..self.z]
    }
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// PyTorch's `pairwise_distance`: ‖a − b + 1e-6‖₂.
pub fn pair_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y + 1e-6) * (x - y + 1e-6)).sum::<f32>().sqrt()
}

/// Runs `f` on each query index, spread over the available cores; results in query order.
fn per_query<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(n.max(1));
    let chunk = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let f = &f;
                s.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Vec<T>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a metrics thread panicked")).collect()
    })
}

/// The labels of the `k` nearest gallery items, nearest first.
fn nearest_labels(gallery: &Embedded, q: &[f32], k: usize) -> Vec<u8> {
    let mut best: Vec<(f32, u8)> = Vec::with_capacity(k + 1);
    for i in 0..gallery.len() {
        let d = squared_distance(gallery.row(i), q);
        if best.len() < k || d < best[best.len() - 1].0 {
            let at = best.partition_point(|b| b.0 <= d);
            best.insert(at, (d, gallery.labels[i]));
            best.truncate(k);
        }
    }
    best.into_iter().map(|b| b.1).collect()
}

/// Accuracy of k-nearest-neighbour classification of `queries` against `gallery` (Euclidean,
/// majority vote, ties to the smaller label as scikit-learn's), for each k in `ks`.
pub fn knn_accuracy(gallery: &Embedded, queries: &Embedded, ks: &[usize]) -> Vec<f64> {
    let neighbours = knn_neighbours(gallery, queries, ks.iter().copied().max().unwrap_or(1));
    ks.iter().map(|&k| accuracy(&knn_predictions(&neighbours, k), &queries.labels)).collect()
}

/// The share of `predicted` equal to `labels`.
fn accuracy(predicted: &[u8], labels: &[u8]) -> f64 {
    predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64
}

/// Each query's `k` nearest gallery labels, nearest first.
fn knn_neighbours(gallery: &Embedded, queries: &Embedded, k: usize) -> Vec<Vec<u8>> {
    per_query(queries.len(), |i| nearest_labels(gallery, queries.row(i), k))
}

/// The kNN vote of each query's first `k` neighbours.
fn knn_predictions(neighbours: &[Vec<u8>], k: usize) -> Vec<u8> {
    neighbours
        .iter()
        .map(|nb| {
            let mut votes = [0usize; 256];
            nb.iter().take(k).for_each(|&l| votes[l as usize] += 1);
            (0..256).max_by_key(|&l| (votes[l], std::cmp::Reverse(l))).unwrap_or(0) as u8
        })
        .collect()
}

/// The confusion matrix of predictions: `m[true][predicted]`, over the 10 classes.
pub fn confusion(labels: &[u8], predicted: &[u8]) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; 10]; 10];
    for (&t, &p) in labels.iter().zip(predicted) {
        m[t as usize % 10][p as usize % 10] += 1;
    }
    m
}

/// Retrieval within one set, each item the query against all the others: precision@1 (the
/// nearest other item shares the label) and MAP@R (mean average precision over the R nearest,
/// R = how many other items share the label; Musgrave et al., "A Metric Learning Reality
/// Check").
pub fn retrieval(set: &Embedded) -> (f64, f64) {
    let mut per_class = [0usize; 256];
    set.labels.iter().for_each(|&l| per_class[l as usize] += 1);
    let scores = per_query(set.len(), |q| {
        let mut d: Vec<(f32, bool)> = (0..set.len())
            .filter(|&i| i != q)
            .map(|i| (squared_distance(set.row(i), set.row(q)), set.labels[i] == set.labels[q]))
            .collect();
        let r = per_class[set.labels[q] as usize] - 1;
        if r == 0 || d.is_empty() {
            return (0.0, 0.0);
        }
        d.select_nth_unstable_by(r - 1, |a, b| a.0.total_cmp(&b.0));
        d.truncate(r);
        d.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut hits, mut ap) = (0usize, 0.0f64);
        for (i, &(_, relevant)) in d.iter().enumerate() {
            if relevant {
                hits += 1;
                ap += hits as f64 / (i + 1) as f64;
            }
        }
        (f64::from(u8::from(d[0].1)), ap / r as f64)
    });
    let n = scores.len().max(1) as f64;
    (scores.iter().map(|s| s.0).sum::<f64>() / n, scores.iter().map(|s| s.1).sum::<f64>() / n)
}

/// `n` fixed evaluation pairs: the first half of the same class (two different items), the
/// second half of different classes; (a, b, same).
///
/// The draws end because both kinds exist: some class has two items and there are two classes
/// (`Dataset::check_evaluation` refuses other test sets before any work).
pub fn eval_pairs(labels: &[u8], n: usize, seed: u64) -> Vec<(u32, u32, bool)> {
    let mut rng = data::rng(seed, 0, Stream::EvalPairs);
    let mut by_class = vec![Vec::new(); 256];
    labels.iter().enumerate().for_each(|(i, &l)| by_class[l as usize].push(i as u32));
    let classes = by_class.iter().filter(|c| !c.is_empty()).count();
    assert!(
        n == 0 || (by_class.iter().any(|c| c.len() >= 2) && classes >= 2),
        "eval_pairs: no same-class or no different-class pair to draw (check_evaluation lets none through)"
    );
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want_same = out.len() < n / 2;
        let i = rng.random_range(0..labels.len());
        let class = &by_class[labels[i] as usize];
        if want_same {
            if class.len() < 2 {
                continue;
            }
            let j = loop {
                let j = class[rng.random_range(0..class.len())];
                if j as usize != i {
                    break j;
                }
            };
            out.push((i as u32, j, true));
        } else {
            let j = rng.random_range(0..labels.len());
            if labels[j] != labels[i] {
                out.push((i as u32, j as u32, false));
            }
        }
    }
    out
}

/// Verification of pairs by distance.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// ROC AUC of "same" scored by −distance.
    pub auc: f64,
    /// The distance cut (predict "same" at or below it) with the best accuracy.
    pub best_threshold: f64,
    pub best_accuracy: f64,
    pub mean_dist_same: f64,
    pub mean_dist_diff: f64,
}

/// Verification metrics of `pairs` (a, b, same) over `emb`.
pub fn verification(emb: &Embedded, pairs: &[(u32, u32, bool)]) -> Verification {
    let scored: Vec<(f64, bool)> = pairs
        .iter()
        .map(|&(a, b, same)| (pair_distance(emb.row(a as usize), emb.row(b as usize)) as f64, same))
        .collect();
    verification_of(&scored)
}

/// Verification metrics of (distance, same) pairs.
pub fn verification_of(scored: &[(f64, bool)]) -> Verification {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = sorted.len();
    let n_same = sorted.iter().filter(|s| s.1).count();
    let n_diff = n - n_same;
    // AUC as the Mann–Whitney statistic with tied distances sharing their average rank:
    // the chance that a same pair is closer than a different one.
    let mut rank_sum_diff = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0;
        rank_sum_diff += avg_rank * sorted[i..j].iter().filter(|s| !s.1).count() as f64;
        i = j;
    }
    let auc = if n_same == 0 || n_diff == 0 {
        f64::NAN
    } else {
        (rank_sum_diff - (n_diff * (n_diff + 1)) as f64 / 2.0) / (n_same * n_diff) as f64
    };
    // Predict "same" for the k nearest, cutting only between distinct distances.
    let (mut best_k, mut best_correct, mut same_before, mut diff_before) = (0, n_diff, 0, 0);
    for k in 1..=n {
        if sorted[k - 1].1 {
            same_before += 1;
        } else {
            diff_before += 1;
        }
        let cut_ok = k == n || sorted[k].0 != sorted[k - 1].0;
        let correct = same_before + (n_diff - diff_before);
        if cut_ok && correct > best_correct {
            (best_k, best_correct) = (k, correct);
        }
    }
    let best_threshold = match best_k {
        0 => sorted.first().map_or(0.0, |s| s.0 - 1e-6),
        k if k == n => sorted[n - 1].0,
        k => (sorted[k - 1].0 + sorted[k].0) / 2.0,
    };
    let mean = |same: bool| {
        let v: Vec<f64> = scored.iter().filter(|s| s.1 == same).map(|s| s.0).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    Verification {
        auc,
        best_threshold,
        best_accuracy: best_correct as f64 / n.max(1) as f64,
        mean_dist_same: mean(true),
        mean_dist_diff: mean(false),
    }
}

/// The final evaluation the `train` and `eval` commands report.
#[derive(Clone, Debug, PartialEq)]
pub struct TestMetrics {
    pub knn_k1: f64,
    pub knn_k5: f64,
    pub precision_at_1: f64,
    pub map_at_r: f64,
    pub pair: Verification,
    /// kNN (k = 1) predictions against the truth: `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// Evaluation pairs drawn over the test set.
pub const EVAL_PAIRS: usize = 10_000;

pub fn evaluate(gallery: &Embedded, test: &Embedded, seed: u64) -> TestMetrics {
    let neighbours = knn_neighbours(gallery, test, 5);
    let (nearest, five) = (knn_predictions(&neighbours, 1), knn_predictions(&neighbours, 5));
    let (knn_k1, knn_k5) = (accuracy(&nearest, &test.labels), accuracy(&five, &test.labels));
    let confusion = confusion(&test.labels, &nearest);
    let (precision_at_1, map_at_r) = retrieval(test);
    let pair = verification(test, &eval_pairs(&test.labels, EVAL_PAIRS, seed));
    TestMetrics { knn_k1, knn_k5, precision_at_1, map_at_r, pair, confusion }
}

impl TestMetrics {
    /// kNN (k = 1) accuracy of each class, None for a class with no test image.
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n = row.iter().sum::<u64>();
                (n > 0).then(|| row[c] as f64 / n as f64)
            })
            .collect()
    }

    /// As JSON; `names` name the classes of the per-class accuracies and the matrix's rows.
    pub fn to_json(&self, names: &[String]) -> String {
        let fields = [
            ("knn_k1", self.knn_k1),
            ("knn_k5", self.knn_k5),
            ("precision_at_1", self.precision_at_1),
            ("map_at_r", self.map_at_r),
            ("pair_auc", self.pair.auc),
            ("pair_best_threshold", self.pair.best_threshold),
            ("pair_best_accuracy", self.pair.best_accuracy),
            ("mean_dist_same", self.pair.mean_dist_same),
            ("mean_dist_diff", self.pair.mean_dist_diff),
        ];
        let mut body: Vec<String> = fields.iter().map(|(k, v)| format!("  \"{k}\": {}", json_number(*v))).collect();
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string()).replace('"', "'");
        let per_class: Vec<String> = (self.per_class().iter().enumerate())
            .map(|(c, v)| format!("\"{}\": {}", name(c), v.map_or("null".to_string(), json_number)))
            .collect();
        body.push(format!("  \"knn_k1_per_class\": {{{}}}", per_class.join(", ")));
        let rows: Vec<String> =
            (self.confusion.iter().enumerate()).map(|(c, row)| format!("\"{}\": {:?}", name(c), row)).collect();
        body.push(format!("  \"confusion_knn_k1\": {{\n    {}\n  }}", rows.join(",\n    ")));
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }

    /// The per-class lines of the table: each class's kNN (k = 1) accuracy and what it is most
    /// often taken for.
    pub fn per_class_table(&self, names: &[String]) -> String {
        let mut out = String::from("  kNN accuracy (k=1) per class, and the class each is most often taken for\n");
        for (c, accuracy) in self.per_class().iter().enumerate() {
            let Some(accuracy) = accuracy else { continue };
            let row = &self.confusion[c];
            let other = (0..row.len()).filter(|&o| o != c).max_by_key(|&o| (row[o], std::cmp::Reverse(o)));
            let taken = other.filter(|&o| row[o] > 0).map_or(String::new(), |o| {
                format!(
                    "{} ({:.0}%)",
                    names.get(o).map_or("?", String::as_str),
                    100.0 * row[o] as f64 / row.iter().sum::<u64>() as f64
                )
            });
            out.push_str(&format!("    {:<14}{accuracy:.4}   {taken}\n", names.get(c).map_or("?", String::as_str)));
        }
        out
    }

    pub fn table(&self) -> String {
        format!(
            "test evaluation\n  kNN accuracy (k=1, train gallery)   {:.4}\n  kNN accuracy (k=5, train gallery)   {:.4}\n  \
             precision@1 (within test)           {:.4}\n  MAP@R (within test)                 {:.4}\n  \
             pair ROC AUC ({EVAL_PAIRS} pairs)         {:.4}\n  pair best threshold                 {:.4}\n  \
             pair accuracy at best threshold     {:.4}\n  mean distance same / different      {:.3} / {:.3}\n",
            self.knn_k1,
            self.knn_k5,
            self.precision_at_1,
            self.map_at_r,
            self.pair.auc,
            self.pair.best_threshold,
            self.pair.best_accuracy,
            self.pair.mean_dist_same,
            self.pair.mean_dist_diff
        )
    }
}

fn json_number(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { "null".to_string() }
}
