//! The readers on good and bad files (CSV, gzip, IDX), the split and the pair sampler.

use std::io::Write;
use std::path::{Path, PathBuf};

use siamese::data::pairs::PairSampler;
use siamese::data::{self, Dataset, Stream};

/// A CSV row: label then 784 pixels, pixel k = (seed + k) mod 256.
fn row(label: u8, seed: usize) -> String {
    let pixels: Vec<String> = (0..784).map(|k| ((seed + k) % 256).to_string()).collect();
    format!("{label},{}", pixels.join(","))
}

fn header() -> String {
    let names: Vec<String> = (1..=784).map(|k| format!("pixel{k}")).collect();
    format!("label,{}", names.join(","))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn good_csv(with_header: bool) -> String {
    let mut lines: Vec<String> = if with_header { vec![header()] } else { vec![] };
    lines.extend((0..6).map(|i| row((i % 3) as u8, i * 7)));
    lines.join("\n") + "\n"
}

#[test]
fn csv_with_and_without_header_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let want = Dataset::load(&write(dir.path(), "a.csv", good_csv(true).as_bytes())).unwrap();
    assert_eq!(want.len(), 6);
    assert_eq!(want.labels, vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(want.image(1)[..3], [7, 8, 9]);
    assert_eq!(want.image(5)[783], ((35 + 783) % 256) as u8);
    for (name, bytes) in [
        ("b.csv", good_csv(false).into_bytes()),
        ("c.csv.gz", gzip(good_csv(true).as_bytes())),
        // gzip is recognised by its magic bytes, not its name
        ("d.data", gzip(good_csv(false).as_bytes())),
        ("e.csv", good_csv(true).replace('\n', "\r\n").into_bytes()),
        // spaces around a number and leading zeros: the general path beside the 1–3 digit one
        ("f.csv", good_csv(true).replace(",7,8,9,", ", 7,008 ,0009,").into_bytes()),
        // a byte-order mark, before a header or before the first image
        ("g.csv", [b"\xef\xbb\xbf".as_slice(), good_csv(true).as_bytes()].concat()),
        ("h.csv", [b"\xef\xbb\xbf".as_slice(), good_csv(false).as_bytes()].concat()),
    ] {
        let got = Dataset::load(&write(dir.path(), name, &bytes)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((got.images, got.labels), (want.images.clone(), want.labels.clone()), "{name}");
    }
}

/// The error of loading `bytes` as `name`: it must name the file and contain every `parts`.
fn bad(name: &str, bytes: &[u8], parts: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, bytes);
    let e = Dataset::load(&path).expect_err(name).to_string();
    assert!(e.contains(&path.display().to_string()), "{name}: {e:?} does not name the file");
    for part in parts {
        assert!(e.contains(part), "{name}: {e:?} does not say {part:?}");
    }
    assert!(!e.contains('\n'), "{name}: {e:?} is more than one line");
}

#[test]
fn bad_csv_files_name_the_file_and_place() {
    let good = good_csv(true);
    let lines: Vec<&str> = good.lines().collect();
    bad("empty.csv", b"", &["no images"]);
    bad("header.csv", (header() + "\n").as_bytes(), &["no images"]);
    let few = format!("{}\n{}\n", lines[0], &lines[1][..lines[1].rfind(',').unwrap()]);
    bad("few.csv", few.as_bytes(), &["line 2", "784 fields, expected 785"]);
    let many = format!("{}\n{},0\n", lines[0], lines[1]);
    bad("many.csv", many.as_bytes(), &["line 2", "786 fields"]);
    let word = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2].replacen(",8,", ",x8,", 1));
    bad("word.csv", word.as_bytes(), &["line 3", "field", "\"x8\"", "not an integer pixel"]);
    let big = format!("{}\n{}\n", lines[0], row(1, 0).replacen(",0,", ",256,", 1));
    bad("big.csv", big.as_bytes(), &["line 2", "field 2 (pixel1)", "\"256\""]);
    let neg = format!("{}\n{}\n", lines[0], row(1, 0).replacen(",0,", ",-1,", 1));
    bad("neg.csv", neg.as_bytes(), &["line 2", "pixel1"]);
    let label = format!("{}\n{}\n", lines[0], row(10, 0));
    bad("label.csv", label.as_bytes(), &["line 2", "field 1 (label)", "a label 0–9"]);
    // The header rule: only a first line whose fields are not all numbers is a header.
    let typo = format!("{}\n{}\n", lines[1].replacen("0,", "x,", 1), lines[2]);
    bad("typo.csv", typo.as_bytes(), &["line 1", "field 1 (label)", "\"x\""]);
    let float = format!("{}\n{}\n", lines[1].replacen("0,", "0.0,", 1), lines[2]);
    bad("float.csv", float.as_bytes(), &["line 1", "\"0.0\" is not a label"]);
    let second = format!("{}\n{}\n{}\n", lines[0], lines[0], lines[1]);
    bad("second_header.csv", second.as_bytes(), &["line 2", "field 1 (label)", "\"label\""]);
    let gz = gzip(good.as_bytes());
    bad("cut.csv.gz", &gz[..gz.len() / 2], &["ends early"]);
    let mut corrupt = gz.clone();
    for b in &mut corrupt[20..60] {
        *b ^= 0x5a;
    }
    bad("corrupt.csv.gz", &corrupt, &["line"]);
    let garbage: Vec<u8> = (0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    bad("garbage.bin", &garbage, &["line 1"]);
}

fn be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// IDX images and labels for `labels`, image i filled with byte i.
fn idx_files(labels: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut images = [be(2051), be(labels.len() as u32), be(28), be(28)].concat();
    for i in 0..labels.len() {
        images.extend(std::iter::repeat_n(i as u8, 784));
    }
    let labels_file = [be(2049).as_slice(), &be(labels.len() as u32), labels].concat();
    (images, labels_file)
}

#[test]
fn idx_files_plain_gzip_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = idx_files(&[5, 0, 9, 5]);
    let path = write(dir.path(), "train-images-idx3-ubyte", &images);
    write(dir.path(), "train-labels-idx1-ubyte", &labels);
    let d = Dataset::load(&path).unwrap();
    assert_eq!(d.labels, vec![5, 0, 9, 5]);
    assert!(d.image(2).iter().all(|&p| p == 2));
    let gz = tempfile::tempdir().unwrap();
    write(gz.path(), "t10k-images-idx3-ubyte.gz", &gzip(&images));
    write(gz.path(), "t10k-labels-idx1-ubyte.gz", &gzip(&labels));
    assert_eq!(Dataset::load(gz.path()).unwrap().images, d.images, "a directory with one gzip pair");
}

#[test]
fn bad_idx_files_name_the_file_and_place() {
    let (images, labels) = idx_files(&[1, 2, 3]);
    let case = |images: &[u8], labels: Option<&[u8]>, parts: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "x-images-idx3-ubyte", images);
        if let Some(l) = labels {
            write(dir.path(), "x-labels-idx1-ubyte", l);
        }
        let e = Dataset::load(&path).expect_err("bad IDX").to_string();
        for part in parts {
            assert!(e.contains(part), "{e:?} does not say {part:?}");
        }
    };
    let mut magic = images.clone();
    magic[3] = 1;
    case(&magic, Some(&labels), &["bytes 0–3", "magic number 2049, expected 2051"]);
    let (_, four) = idx_files(&[1, 2, 3, 4]);
    case(&images, Some(&four), &["x-labels-idx1-ubyte", "4 labels for 3 images"]);
    case(&images[..images.len() - 100], Some(&labels), &["byte", "the header's 3 images need"]);
    case(&images[..10], Some(&labels), &["shorter than the 16-byte IDX header"]);
    let mut label = labels.clone();
    label[9] = 12;
    case(&images, Some(&label), &["byte 9", "label 12 is not 0–9"]);
    case(&images, None, &["no labels file"]);
    let mut small = images.clone();
    small[11] = 14;
    case(&small, Some(&labels), &["14×28", "needs 28×28"]);
}

#[test]
fn split_is_seeded_disjoint_and_sized_like_scikit_learn() {
    let (train, val) = data::split(60_000, 0.05, 0);
    assert_eq!((train.len(), val.len()), (57_000, 3_000));
    let mut all: Vec<u32> = train.iter().chain(&val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..60_000).collect::<Vec<u32>>(), "every row in exactly one split");
    assert_eq!(data::split(60_000, 0.05, 0), (train.clone(), val.clone()), "same seed, same split");
    assert_ne!(data::split(60_000, 0.05, 1).1, val, "another seed, another split");
    assert_eq!(data::split(101, 0.05, 0).1.len(), 6, "⌈0.05 × 101⌉");
}

#[test]
fn pairs_are_balanced_correct_and_seeded() {
    let labels: Vec<u8> = (0..5000).map(|i| (i * 7 % 10) as u8).collect();
    let sampler = PairSampler::new(&labels);
    let draw = |epoch| sampler.draw(&labels, &mut data::rng(0, epoch, Stream::TrainPairs));
    let pairs = draw(0);
    assert_eq!(pairs.len(), labels.len());
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(p.a as usize, i, "one pair per item, in order");
        let same = labels[p.a as usize] == labels[p.b as usize];
        assert_eq!(
            same,
            p.target == 0.0,
            "pair {i}: target {} for labels {} and {}",
            p.target,
            labels[p.a as usize],
            labels[p.b as usize]
        );
    }
    let same = pairs.iter().filter(|p| p.target == 0.0).count() as f64 / pairs.len() as f64;
    assert!((same - 0.5).abs() < 0.03, "{same} of the pairs are same-class");
    assert_eq!(draw(0), pairs, "the same seed and epoch draw the same pairs");
    assert_ne!(draw(1), pairs, "every epoch draws new pairs");
}

#[test]
fn a_limit_reads_no_further_and_pairs_need_two_classes() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_csv(true);
    let broken = format!("{good}not,a,row\n");
    for (name, bytes) in [("broken.csv", broken.as_bytes().to_vec()), ("broken.csv.gz", gzip(broken.as_bytes()))] {
        let path = write(dir.path(), name, &bytes);
        let first = Dataset::load_first(&path, Some(4)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(first.labels, vec![0, 1, 2, 0], "{name}");
        assert_eq!(first.image(3)[..2], [21, 22], "{name}");
        assert!(Dataset::load_first(&path, None).is_err(), "{name}: the bad last row was not read");
    }
    let path = write(dir.path(), "good.csv", good.as_bytes());
    let one = Dataset::load_first(&path, Some(1)).expect("one image is a dataset, e.g. to embed");
    let e = one.check_pairs(None, "the images", "").expect_err("one image, one class").to_string();
    assert!(e.contains("two classes") && e.contains("good.csv"), "{e}");
    let all = Dataset::load_first(&path, None).unwrap();
    assert!(all.check_pairs(None, "the images", "").is_ok());
    assert!(all.check_pairs(Some(&[0, 3]), "rows", "").is_err(), "rows 0 and 3 are both of class 0");
    assert!(all.check_evaluation().is_ok());
    let e = Dataset::load_first(&path, Some(3)).unwrap().check_evaluation().expect_err("three classes of one image");
    assert!(e.to_string().contains("no class has two images"), "{e}");
}
