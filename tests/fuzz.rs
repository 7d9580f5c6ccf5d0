//! Property-based fuzzing of the readers: whatever the bytes (random, or a valid file cut and
//! flipped), reading a CSV, an IDX pair or a model file returns a value or an error, never a
//! panic. `PROPTEST_CASES` sets the executions per property (default 256).

use std::path::Path;

use proptest::prelude::*;
use siamese::checkpoint::HostModel;
use siamese::data::Dataset;
use siamese::model::SiameseNet;

fn csv_row(label: u8, seed: u8) -> String {
    let px: Vec<String> = (0..784u32).map(|k| ((k + seed as u32) % 256).to_string()).collect();
    format!("{label},{}\n", px.join(","))
}

fn valid_csv() -> Vec<u8> {
    (0..3u8).map(|i| csv_row(i, i * 3)).collect::<String>().into_bytes()
}

fn valid_idx() -> (Vec<u8>, Vec<u8>) {
    let mut images = [2051u32, 2, 28, 28].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>();
    images.extend((0..2 * 784).map(|i| i as u8));
    let labels = [[2049u32, 2].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>(), vec![3, 7]].concat();
    (images, labels)
}

fn valid_model() -> Vec<u8> {
    let net = SiameseNet::new(8);
    let (params, buffers) = net.init(1);
    HostModel { net, params, buffers, batches_tracked: 4 }.to_bytes(&Default::default())
}

/// `base` cut at `cut` (a fraction) with the bytes at `flips` xor-ed.
fn mutate(base: &[u8], cut: f64, flips: &[(usize, u8)]) -> Vec<u8> {
    let mut b = base[..((base.len() as f64 * cut) as usize).min(base.len())].to_vec();
    for &(at, x) in flips {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] ^= x;
        }
    }
    b
}

fn load_file(name: &str, bytes: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    Dataset::load(&path).is_ok()
}

fn load_idx(images: &[u8], labels: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f-labels-idx1-ubyte"), labels).unwrap();
    let path = dir.path().join("f-images-idx3-ubyte");
    std::fs::write(&path, images).unwrap();
    Dataset::load(&path).is_ok()
}

proptest! {
    // 1,000 cases a property (proptest's default is 256): about 9,000 inputs in all.
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn csv_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        load_file("r.csv", &bytes);
    }

    #[test]
    fn csv_mutated(cut in 0.0f64..1.2, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let base = valid_csv();
        let bytes = mutate(&base, cut, &flips);
        let ok = load_file("m.csv", &bytes);
        if bytes == base { prop_assert!(ok); }
    }

    #[test]
    fn gzip_csv_mutated(cut in 0.0f64..1.2, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&valid_csv()).unwrap();
        load_file("m.csv.gz", &mutate(&e.finish().unwrap(), cut, &flips));
    }

    #[test]
    fn idx_mutated(cut_i in 0.0f64..1.2, cut_l in 0.0f64..1.2, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
        let (images, labels) = valid_idx();
        let (i, l) = (mutate(&images, cut_i, &flips[..flips.len() / 2]), mutate(&labels, cut_l, &flips[flips.len() / 2..]));
        let ok = load_idx(&i, &l);
        if i == images && l == labels { prop_assert!(ok); }
    }

    #[test]
    fn idx_random_headers(magic in 2040u32..2060, count in 0u32..5, rows in 0u32..40, cols in 0u32..40, extra in 0usize..3000) {
        let mut images = [magic, count, rows, cols].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>();
        images.extend(std::iter::repeat_n(7u8, extra));
        let labels = [[2049u32, count].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>(), vec![1; count as usize]].concat();
        load_idx(&images, &labels);
    }

    #[test]
    fn model_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(HostModel::from_bytes(Path::new("r.safetensors"), &bytes).is_err());
    }

    #[test]
    fn model_mutated(cut in 0.0f64..1.2, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let base = valid_model();
        let bytes = mutate(&base, cut, &flips);
        let ok = HostModel::from_bytes(Path::new("m.safetensors"), &bytes).is_ok();
        if bytes == base { prop_assert!(ok); }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let _ = siamese::run::RunState::load(&path);
    }
}
