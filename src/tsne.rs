//! t-SNE of embeddings to 2-D (Barnes–Hut, perplexity 30, PCA initialisation as scikit-learn's
//! `init="pca"`), through the bhtsne crate.

/// 2-D coordinates of `values` (N rows of `z`). The same input gives the same bits: bhtsne sums
/// in parallel, in an order that varies from run to run with more than one thread, so it
/// runs on one.
pub fn tsne_2d(values: &[f32], z: usize, perplexity: f32) -> Vec<(f32, f32)> {
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(|| tsne_2d_here(values, z, perplexity)),
        Err(_) => tsne_2d_here(values, z, perplexity),
    }
}

fn tsne_2d_here(values: &[f32], z: usize, perplexity: f32) -> Vec<(f32, f32)> {
    let n = values.len() / z.max(1);
    if n < 4 {
        return (0..n).map(|i| (i as f32, 0.0)).collect();
    }
    let rows: Vec<&[f32]> = values.chunks_exact(z).collect();
    // Perplexity must leave 3·perplexity neighbours; shrink it for small sets.
    let perplexity = perplexity.min(((n - 1) as f32 / 3.0).floor().max(1.0));
    let mut tsne: bhtsne::tSNE<f32, &[f32], 2> = bhtsne::tSNE::new(&rows);
    tsne.perplexity(perplexity)
        .epochs(1000)
        .initial_embedding(pca_init(values, z))
        .barnes_hut(0.5, |a, b| a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt());
    tsne.embedding().chunks_exact(2).map(|p| (p[0], p[1])).collect()
}

/// The first two principal components, scaled to a standard deviation of 1e-4 along the first
/// (scikit-learn's PCA initialisation). Power iteration on the z×z covariance.
fn pca_init(values: &[f32], z: usize) -> Vec<f32> {
    let n = values.len() / z;
    let mean: Vec<f64> =
        (0..z).map(|j| values.iter().skip(j).step_by(z).map(|&v| v as f64).sum::<f64>() / n as f64).collect();
    let mut cov = vec![0.0f64; z * z];
    for row in values.chunks_exact(z) {
        for a in 0..z {
            for b in 0..z {
                cov[a * z + b] += (row[a] as f64 - mean[a]) * (row[b] as f64 - mean[b]);
            }
        }
    }
    let mut components: Vec<Vec<f64>> = Vec::new();
    for k in 0..2 {
        let mut v: Vec<f64> = (0..z).map(|j| 1.0 + (j + k) as f64 * 0.1).collect();
        for _ in 0..200 {
            let mut w: Vec<f64> = (0..z).map(|a| (0..z).map(|b| cov[a * z + b] * v[b]).sum()).collect();
            for c in &components {
                let d: f64 = w.iter().zip(c).map(|(x, y)| x * y).sum();
                w.iter_mut().zip(c).for_each(|(x, y)| *x -= d * y);
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            v = w.into_iter().map(|x| x / norm).collect();
        }
        components.push(v);
    }
    let project =
        |row: &[f32], c: &[f64]| row.iter().zip(&mean).zip(c).map(|((&x, m), w)| (x as f64 - m) * w).sum::<f64>();
    let first: Vec<f64> = values.chunks_exact(z).map(|r| project(r, &components[0])).collect();
    let std = (first.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt().max(1e-12);
    values
        .chunks_exact(z)
        .flat_map(|r| [project(r, &components[0]), project(r, &components[1])])
        .map(|x| (x / std * 1e-4) as f32)
        .collect()
}
