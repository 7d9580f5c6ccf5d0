//! Model files: a round trip, every way a file can be bad, and PyTorch's own state_dict (the
//! parity fixture's `init.*`) loaded as a model.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use siamese::checkpoint::HostModel;
use siamese::model::SiameseNet;

use crate::util::Fixture;

fn model() -> HostModel {
    let net = SiameseNet::new(8);
    let (params, buffers) = net.init(7);
    HostModel { net, params, buffers, batches_tracked: 890 }
}

fn meta() -> HashMap<String, String> {
    HashMap::from([("z_dimensions".to_string(), "8".to_string())])
}

#[test]
fn round_trip_keeps_every_value_and_the_metadata() {
    let m = model();
    let bytes = m.to_bytes(&meta());
    let (back, metadata) = HostModel::from_bytes(Path::new("m.safetensors"), &bytes).unwrap();
    assert_eq!(back, m);
    assert_eq!(metadata.get("z_dimensions").map(String::as_str), Some("8"));
    // PyTorch's names, shapes and dtypes.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("feature_net.0.weight").unwrap().shape(), [4, 1, 3, 3]);
    assert_eq!(st.tensor("linear.weight").unwrap().shape(), [8, 49]);
    let counter = st.tensor("feature_net.12.num_batches_tracked").unwrap();
    assert_eq!((counter.dtype(), counter.shape()), (Dtype::I64, &[][..]));
    assert_eq!(st.len(), 5 * 2 + 4 * 5 + 2, "10 conv tensors, 4 BatchNorms of 5, the linear layer");
    let z16 = HostModel {
        net: SiameseNet::new(16),
        params: SiameseNet::new(16).init(1).0,
        buffers: SiameseNet::new(16).init(1).1,
        batches_tracked: 0,
    };
    let (back, _) = HostModel::from_bytes(Path::new("z16"), &z16.to_bytes(&meta())).unwrap();
    assert_eq!(back.net.z, 16, "the width comes from linear.weight");
}

/// Rebuilds a model file with `edit` applied to its tensors (name, dtype, shape, bytes).
/// Equal contents give equal bytes: the metadata's order is fixed, not a HashMap's of the day
/// (each map below iterates in an order of its own).
#[test]
fn equal_models_give_equal_bytes() {
    let model = model();
    let meta = |keys: &mut dyn Iterator<Item = usize>| -> HashMap<String, String> {
        keys.map(|i| (format!("key{i}"), format!("value {i}"))).collect()
    };
    let first = model.to_bytes(&meta(&mut (0..32)));
    for _ in 0..4 {
        assert!(first == model.to_bytes(&meta(&mut (0..32).rev())), "the header's order changed");
    }
    let (loaded, back) = HostModel::from_bytes(Path::new("m"), &first).unwrap();
    assert_eq!((loaded.params, back.len()), (model.params.clone(), 32 + 1), "the metadata and its checksum");
}

/// Every single-bit flip in any tensor's bytes is caught by the checksum (NaNs and other
/// values a flip can make included), and so is an edit of the metadata.
#[test]
fn a_flipped_bit_anywhere_in_the_tensors_is_refused() {
    let bytes = model().to_bytes(&meta());
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for at in header..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 1 << (at % 8);
        let e = HostModel::from_bytes(Path::new("m"), &bad).expect_err("a flipped bit").to_string();
        assert!(e.contains("checksum"), "byte {at}: {e}");
    }
    let key = b"\"z_dimensions\":\"8\"";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("the metadata is in the header");
    let mut edited = bytes.clone();
    edited[at + key.len() - 2] = b'9';
    let e = HostModel::from_bytes(Path::new("m"), &edited).expect_err("an edited header").to_string();
    assert!(e.contains("checksum"), "{e}");
}

fn edited(edit: impl Fn(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) -> Vec<u8> {
    let bytes = model().to_bytes(&meta());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize(views, None).unwrap()
}

fn rejects(bytes: &[u8], parts: &[&str]) {
    let e = HostModel::from_bytes(Path::new("bad.safetensors"), bytes).expect_err("a bad model file").to_string();
    assert!(e.starts_with("bad.safetensors: "), "{e:?} does not name the file");
    for part in parts {
        assert!(e.contains(part), "{e:?} does not say {part:?}");
    }
}

#[test]
fn bad_model_files_name_the_tensor() {
    let good = model().to_bytes(&meta());
    rejects(b"definitely not a model", &["header", "not a safetensors model file"]);
    rejects(&good[..good.len() / 2], &["header"]);
    rejects(&good[..6], &["header"]);
    let mut lying = good.clone();
    // The header length claims more bytes than the file has.
    lying[..8].copy_from_slice(&(good.len() as u64 * 2).to_le_bytes());
    rejects(&lying, &["header"]);
    rejects(&edited(|t| t.retain(|x| x.0 != "feature_net.7.bias")), &["tensor feature_net.7.bias", "missing"]);
    rejects(
        &edited(|t| t.push(("extra.weight".into(), Dtype::F32, vec![1], vec![0; 4]))),
        &["tensor extra.weight", "not part of the model"],
    );
    rejects(
        &edited(|t| {
            let w = t.iter_mut().find(|x| x.0 == "feature_net.3.weight").unwrap();
            w.2 = vec![4, 4, 9];
        }),
        &["tensor feature_net.3.weight", "shape [4, 4, 9]"],
    );
    rejects(
        &edited(|t| {
            let w = t.iter_mut().find(|x| x.0 == "feature_net.2.weight").unwrap();
            (w.1, w.3) = (Dtype::I32, vec![0; 16]);
        }),
        &["tensor feature_net.2.weight", "dtype I32"],
    );
    rejects(
        &edited(|t| {
            let w = t.iter_mut().find(|x| x.0 == "linear.bias").unwrap();
            w.3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        }),
        &["tensor linear.bias", "element 2 is NaN"],
    );
    rejects(
        &edited(|t| {
            let w = t.iter_mut().find(|x| x.0 == "feature_net.5.running_var").unwrap();
            w.3[0..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        }),
        &["tensor feature_net.5.running_var", "inf"],
    );
    rejects(
        &edited(|t| {
            let w = t.iter_mut().find(|x| x.0 == "feature_net.9.num_batches_tracked").unwrap();
            (w.1, w.3) = (Dtype::F32, vec![0; 4]);
        }),
        &["tensor feature_net.9.num_batches_tracked", "dtype F32, expected I64"],
    );
}

/// PyTorch's own state_dict (the parity fixture's initial model, saved by torch itself) loads
/// as our model, value for value.
#[test]
fn pytorch_state_dict_loads() {
    let fx = Fixture::load("parity_fixture.safetensors");
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity_fixture.safetensors"),
    )
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let init: Vec<(String, TensorView)> =
        st.tensors().into_iter().filter_map(|(n, t)| n.strip_prefix("init.").map(|s| (s.to_string(), t))).collect();
    let file = safetensors::serialize(init, None).unwrap();
    let (m, _) = HostModel::from_bytes(Path::new("torch_init.safetensors"), &file).unwrap();
    assert_eq!(m.net.z, 8);
    for e in &m.net.params().entries {
        let want = fx.get(&format!("init.{}", e.name));
        let got: Vec<f64> = m.params[e.offset..][..e.len()].iter().map(|&v| v as f64).collect();
        assert_eq!(got, want, "{}", e.name);
    }
    for e in &m.net.buffers().entries {
        let want = fx.get(&format!("init.{}", e.name));
        let got: Vec<f64> = m.buffers[e.offset..][..e.len()].iter().map(|&v| v as f64).collect();
        assert_eq!(got, want, "{}", e.name);
    }
}
