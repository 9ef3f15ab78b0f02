//! A model is a directory: `config.json`, `vocab.json`, `model.safetensors` and
//! `MODEL_CARD.md`. Loading checks that the three machine-readable parts agree and
//! reports a fingerprint (sha256 of the weights file) that indexes record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use super::{AcfModel, Config, Vocab};
use crate::error::{AcfError, Result};

/// File names inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const VOCAB_FILE: &str = "vocab.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CARD_FILE: &str = "MODEL_CARD.md";

/// A model loaded from disk, with where it came from and its fingerprint.
pub struct ModelDir {
    pub model: AcfModel,
    pub dir: PathBuf,
    /// Hex sha256 of `model.safetensors`.
    pub fingerprint: String,
}

impl ModelDir {
    /// Loads and cross-checks a model directory onto `device`, with its hubness prior
    /// (refused when it belongs to other weights, or missing when the config weighs it).
    pub fn load(dir: &Path, device: Device) -> Result<ModelDir> {
        Self::load_inner(dir, device, true)
    }

    /// [`ModelDir::load`] without the hubness prior and its checks: for computing a new one,
    /// or for training from the weights (which replaces them, so the prior no longer fits).
    pub fn load_without_prior(dir: &Path, device: Device) -> Result<ModelDir> {
        Self::load_inner(dir, device, false)
    }

    fn load_inner(dir: &Path, device: Device, with_prior: bool) -> Result<ModelDir> {
        check_files(dir)?;
        let config = Config::load(&dir.join(CONFIG_FILE))?;
        let vocab = Vocab::load(&dir.join(VOCAB_FILE))?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path)
            .map_err(|e| AcfError::io(&weights_path, "cannot read weights", e))?;
        let fingerprint = sha256_hex(&bytes);
        let prior = if with_prior { super::prior::load(dir, &config, &fingerprint)? } else { None };
        let mut model = AcfModel::new(config, vocab, device);
        model.prior = prior;
        fill_weights(&mut model, &bytes, &weights_path)?;
        Ok(ModelDir { model, dir: dir.to_path_buf(), fingerprint })
    }

    /// The model's configuration (every hyperparameter, as in `config.json`).
    pub fn config(&self) -> &Config {
        &self.model.config
    }

    /// Short form of the fingerprint for display.
    pub fn short_fingerprint(&self) -> &str {
        crate::files::short_fingerprint(&self.fingerprint)
    }
}

/// Refuses a path that is not a directory holding `config.json`, `vocab.json` and
/// `model.safetensors`, naming what is missing.
pub fn check_files(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(AcfError::NotAModel { path: dir.to_path_buf(), reason: "no such directory".into() });
    }
    for file in [CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE] {
        if !dir.join(file).is_file() {
            return Err(AcfError::NotAModel {
                path: dir.to_path_buf(),
                reason: format!("{file} is missing"),
            });
        }
    }
    Ok(())
}

/// Writes `config.json`, `vocab.json`, `model.safetensors` and `MODEL_CARD.md` into `dir`
/// (created if needed), each through a temporary name and a rename so that no reader
/// ever sees a half-written file. Returns the weights' fingerprint.
pub fn save(model: &AcfModel, dir: &Path, card_markdown: &str) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(|e| AcfError::io(dir, "cannot create model directory", e))?;
    write_atomic(&dir.join(CONFIG_FILE), model.config.to_json_string().as_bytes())?;
    model.vocab.save(&dir.join(VOCAB_FILE))?;
    let weights = serialize_weights(model)?;
    write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
    let fingerprint = sha256_hex(&weights);
    write_atomic(&dir.join(CARD_FILE), card_markdown.replace("{fingerprint}", &fingerprint).as_bytes())?;
    Ok(fingerprint)
}

/// [`save`] into a new directory that appears whole ([`crate::files::publish_dir_whole`]):
/// a kill between the four files leaves the previous `dir` (or none), never a model whose
/// card or vocabulary belongs to other weights. For `model init` and `model average`.
pub fn save_whole(model: &AcfModel, dir: &Path, card_markdown: &str) -> Result<String> {
    let mut fingerprint = String::new();
    crate::files::publish_dir_whole(dir, |tmp| {
        fingerprint = save(model, tmp, card_markdown)?;
        Ok(())
    })?;
    Ok(fingerprint)
}

/// Whether a file name is one [`save`] writes (or the fingerprint cache kept beside the
/// weights): what a model directory may hold for `--force` to replace it as a whole.
pub fn is_model_file(name: &str) -> bool {
    [CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, CARD_FILE].contains(&name)
        || Path::new(name) == crate::files::fingerprint_cache_of(Path::new(WEIGHTS_FILE))
}

pub use crate::files::{sha256_hex, write_atomic};

/// All variables (trainable and buffers such as BatchNorm statistics) as float32 safetensors.
fn serialize_weights(model: &AcfModel) -> Result<Vec<u8>> {
    let vars: BTreeMap<String, Tensor> =
        model.var_store().variables().into_iter().filter(|(name, _)| !is_derived(name)).collect();
    let metadata = [
        ("format", "pt".to_string()),
        ("config", model.config.name.clone()),
        ("acf_index_version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    tensors_to_safetensors(&vars, &metadata)
}

/// Serialises named tensors as float32 safetensors with string metadata.
pub fn tensors_to_safetensors(
    tensors: &BTreeMap<String, Tensor>,
    metadata: &[(&str, String)],
) -> Result<Vec<u8>> {
    let st_err = |e: safetensors::SafeTensorError| AcfError::Safetensors {
        path: PathBuf::from(WEIGHTS_FILE),
        reason: e.to_string(),
    };
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let flat = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous().flatten(0, -1);
        let values = Vec::<f32>::try_from(&flat)?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.clone(), shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(st_err)
        })
        .collect::<Result<_>>()?;
    let metadata = Some(metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
    let bytes = safetensors::serialize(views, metadata).map_err(st_err)?;
    Ok(canonical_header(bytes))
}

/// Rewrites the JSON header with sorted keys: safetensors takes metadata as a `HashMap`,
/// whose order varies between runs, and the fingerprint must not.
fn canonical_header(bytes: Vec<u8>) -> Vec<u8> {
    let Some(len_bytes) = bytes.get(..8) else { return bytes };
    let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8])) as usize;
    let Some(header) = bytes.get(8..8 + len) else { return bytes };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else { return bytes };
    // serde_json's default Map is a BTreeMap: serialising sorts every object's keys.
    let Ok(mut sorted) = serde_json::to_vec(&value) else { return bytes };
    while sorted.len() < len {
        sorted.push(b' ');
    }
    if sorted.len() != len {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

/// Reads every float32 tensor of a safetensors file (CPU tensors, by name).
pub fn safetensors_to_tensors(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| AcfError::Safetensors { path: path.to_path_buf(), reason: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(AcfError::Safetensors {
                path: path.to_path_buf(),
                reason: format!("tensor '{name}' is {:?}, expected F32", view.dtype()),
            });
        }
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        out.insert(name, Tensor::f_from_data_size(view.data(), &shape, Kind::Float)?);
    }
    Ok(out)
}

/// Buffers computed from the config when the model is built (the ViG relative-position
/// terms, 3.8 MB for pvig-nano): not stored in `model.safetensors`, and taken from the file
/// when an older file has them.
pub fn is_derived(name: &str) -> bool {
    name.ends_with(".relative_pos")
}

/// Copies every tensor of a safetensors file into the model, refusing any difference
/// in names, shapes or dtype with a message that names it.
fn fill_weights(model: &mut AcfModel, bytes: &[u8], path: &Path) -> Result<()> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| AcfError::Safetensors { path: path.to_path_buf(), reason: e.to_string() })?;
    let mismatch = |reason: String| AcfError::ModelMismatch { path: path.to_path_buf(), reason };
    let vars = model.var_store().variables();
    let vocab_words = model.vocab.len();
    let mut missing: Vec<&String> = vars.keys().filter(|k| !is_derived(k) && st.tensor(k).is_err()).collect();
    missing.sort();
    if let Some(first) = missing.first() {
        return Err(mismatch(format!(
            "{} tensor(s) the config expects are not in {WEIGHTS_FILE}, e.g. '{first}' (was it trained with another config?)",
            missing.len()
        )));
    }
    let mut unexpected: Vec<String> =
        st.names().into_iter().filter(|n| !vars.contains_key(*n)).map(|n| n.to_string()).collect();
    unexpected.sort();
    if let Some(first) = unexpected.first() {
        return Err(mismatch(format!(
            "{WEIGHTS_FILE} has {} tensor(s) the config does not define, e.g. '{first}'",
            unexpected.len()
        )));
    }
    for (name, mut var) in vars {
        let view = match st.tensor(&name) {
            Ok(view) => view,
            Err(_) if is_derived(&name) => continue,
            Err(e) => return Err(mismatch(format!("{name}: {e}"))),
        };
        let expected: Vec<i64> = var.size();
        let found: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if expected != found {
            let hint = if name.ends_with("embed.weight") {
                format!(" (vocab.json has {vocab_words} words)")
            } else {
                String::new()
            };
            return Err(mismatch(format!(
                "tensor '{name}' has shape {found:?} in {WEIGHTS_FILE} but config/vocab expect {expected:?}{hint}"
            )));
        }
        if view.dtype() != Dtype::F32 {
            return Err(mismatch(format!("tensor '{name}' is {:?}, expected F32", view.dtype())));
        }
        let src = Tensor::f_from_data_size(view.data(), &found, Kind::Float)?;
        tch::no_grad(|| var.f_copy_(&src))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_vocab() -> Vocab {
        Vocab::build(["a tennis court near a road", "many planes at an airport"], 1)
    }

    #[test]
    fn round_trip_gives_identical_outputs_and_stable_fingerprint() {
        tch::manual_seed(1);
        let model = AcfModel::new(Config::pvig_nano(), tiny_vocab(), Device::Cpu);
        let dir = tempfile::tempdir().unwrap();
        let fp = save(&model, dir.path(), "# card\n{fingerprint}\n").unwrap();
        let loaded = ModelDir::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!(loaded.fingerprint, fp);
        let card = std::fs::read_to_string(dir.path().join(CARD_FILE)).unwrap();
        assert!(card.contains(&fp));
        // The relative-position buffers are recomputed from the config, not stored.
        let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let names = SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        assert!(!names.iter().any(|n| is_derived(n)), "derived buffers stored");
        assert!(model.var_store().variables().keys().any(|n| is_derived(n)), "the model has none to derive");

        let pixels = Tensor::randint(256, [2, 3, 224, 224], (Kind::Uint8, Device::Cpu));
        let a = tch::no_grad(|| model.encode_pixels(&pixels, false));
        let b = tch::no_grad(|| loaded.model.encode_pixels(&pixels, false));
        assert!(a.regions.equal(&b.regions) && a.global.equal(&b.global));
        let (ta, _) = model.encode_captions(&["tennis court near road"]).unwrap();
        let (tb, _) = loaded.model.encode_captions(&["tennis court near road"]).unwrap();
        assert!(ta.words.equal(&tb.words) && ta.global.equal(&tb.global));
        assert!(model.score(&a, &ta).equal(&loaded.model.score(&b, &tb)));
    }

    #[test]
    fn weights_from_another_vocab_are_refused_naming_the_tensor() {
        let model = AcfModel::new(Config::pvig_nano(), tiny_vocab(), Device::Cpu);
        let dir = tempfile::tempdir().unwrap();
        save(&model, dir.path(), "card").unwrap();
        Vocab::build(["just three words"], 1).save(&dir.path().join(VOCAB_FILE)).unwrap();
        let err = ModelDir::load(dir.path(), Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("text.embed.weight") && err.contains("vocab.json has"), "{err}");
    }

    #[test]
    fn weights_from_another_config_are_refused() {
        let model = AcfModel::new(Config::pvig_nano(), tiny_vocab(), Device::Cpu);
        let dir = tempfile::tempdir().unwrap();
        save(&model, dir.path(), "card").unwrap();
        let ti = Config::pvig_ti();
        std::fs::write(dir.path().join(CONFIG_FILE), ti.to_json_string()).unwrap();
        let err = ModelDir::load(dir.path(), Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("does not match") && err.contains(WEIGHTS_FILE), "{err}");
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelDir::load(dir.path(), Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("config.json is missing"), "{err}");
        let model = AcfModel::new(Config::pvig_nano(), tiny_vocab(), Device::Cpu);
        save(&model, dir.path(), "card").unwrap();
        std::fs::write(dir.path().join(WEIGHTS_FILE), b"not safetensors").unwrap();
        let err = ModelDir::load(dir.path(), Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("invalid safetensors"), "{err}");
    }
}
