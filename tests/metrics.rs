//! The evaluation metrics on cases small enough to compute by hand.

use siamese::metrics::{Embedded, eval_pairs, knn_accuracy, retrieval, verification_of};

fn emb(points: &[f32], labels: &[u8]) -> Embedded {
    Embedded { z: 1, values: points.to_vec(), labels: labels.to_vec() }
}

#[test]
fn verification_auc_threshold_and_accuracy() {
    // Perfectly separated: same pairs at 0.1, 0.2; different at 1.0, 2.0.
    let v = verification_of(&[(0.1, true), (1.0, false), (0.2, true), (2.0, false)]);
    assert_eq!(v.auc, 1.0);
    assert_eq!(v.best_accuracy, 1.0);
    assert!((v.best_threshold - 0.6).abs() < 1e-12, "midway between 0.2 and 1.0: {}", v.best_threshold);
    assert!((v.mean_dist_same - 0.15).abs() < 1e-12 && (v.mean_dist_diff - 1.5).abs() < 1e-12);
    // Exactly reversed.
    assert_eq!(verification_of(&[(2.0, true), (1.0, false)]).auc, 0.0);
    // A tie counts one half: AUC = (1 + 0.5) / 2.
    let v = verification_of(&[(0.5, true), (1.0, true), (1.0, false), (1.5, false)]);
    assert!((v.auc - 0.875).abs() < 1e-12, "{}", v.auc);
    // The tie cannot be cut: the best is predicting the first one "same" (3 of 4 right).
    assert_eq!(v.best_accuracy, 0.75);
}

#[test]
fn knn_majority_vote() {
    // Gallery on a line: class 0 at 0, 1, 2; class 1 at 10, 11.
    let gallery = emb(&[0.0, 1.0, 2.0, 10.0, 11.0], &[0, 0, 0, 1, 1]);
    // 5.5 is nearest 2 (class 0) but its 5 neighbours are 3 of class 0 and 2 of class 1.
    let queries = emb(&[0.4, 9.0, 7.0], &[0, 1, 1]);
    let acc = knn_accuracy(&gallery, &queries, &[1, 3, 5]);
    // k=1: 0.4→0 ✓, 9→10 (1) ✓, 7→10 (1) ✓. k=3: 7 → {10, 11, 2} → 1 ✓. k=5: all → class 0: only the first right.
    assert_eq!(acc, vec![1.0, 1.0, 1.0 / 3.0]);
}

#[test]
fn retrieval_precision_and_map_at_r() {
    // Items: a0=0.0, a1=0.1 (class 0); b0=1.0, b1=5.0 (class 1).
    let set = emb(&[0.0, 0.1, 1.0, 5.0], &[0, 0, 1, 1]);
    let (p1, map) = retrieval(&set);
    // Nearest others: a0→a1 ✓, a1→a0 ✓, b0→a1 ✗, b1→b0 ✓.
    assert_eq!(p1, 0.75);
    // R = 1 for everyone: AP@1 is precision@1 here.
    assert_eq!(map, 0.75);
    // R = 2: class 0 = {0, 0.1, 0.2}; class 1 = {0.15, 3, 4}.
    let set = emb(&[0.0, 0.1, 0.2, 0.15, 3.0, 4.0], &[0, 0, 0, 1, 1, 1]);
    let (_, map) = retrieval(&set);
    // q=0.0: ranked 0.1 ✓, 0.15 ✗ → AP = (1/1)/2 = 0.5
    // q=0.1: 0.15 ✗, (0.0 | 0.2 tie, both ✓) → AP = (1/2)/2 = 0.25
    // q=0.2: 0.15 ✗, 0.1 ✓ → 0.25
    // q=0.15: 0.1 ✗, 0.2 ✗ → 0
    // q=3: 4 ✓, 0.2 ✗ → 0.5;  q=4: 3 ✓, 0.2 ✗ → 0.5
    assert!((map - (0.5 + 0.25 + 0.25 + 0.0 + 0.5 + 0.5) / 6.0).abs() < 1e-12, "{map}");
}

#[test]
fn eval_pairs_are_half_same_and_fixed() {
    let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
    let pairs = eval_pairs(&labels, 1000, 0);
    assert_eq!(pairs.len(), 1000);
    for (k, &(a, b, same)) in pairs.iter().enumerate() {
        assert_eq!(same, k < 500, "the first half is same-class");
        assert_eq!(labels[a as usize] == labels[b as usize], same, "pair {k}");
        assert_ne!(a, b, "pair {k} pairs an image with itself");
    }
    assert_eq!(eval_pairs(&labels, 1000, 0), pairs, "fixed by the seed");
}
