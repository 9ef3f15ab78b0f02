//! The hubness prior of a model directory (`prior.safetensors`): t̄, the mean unit global
//! vector of the training captions, and the fingerprint of the weights it was computed with.
//!
//! With `scoring.hubness_prior = h > 0`, S'(I, T) = S(I, T) − h · (v_g · t̄). An image whose
//! global vector points where captions point in general scores high against every query (a
//! "hub", a known failure of cross-modal retrieval); subtracting its similarity to the
//! average caption ranks images by how much better the query fits them. The term is constant
//! per image, so it reorders images for a query and leaves each image's ranking of captions
//! unchanged.
//!
//! The statistic lives beside the weights, not in them: computing or replacing it does not
//! change the weights' fingerprint, so indexes built with the model stay valid. It is tied to
//! the weights it was computed with, and refused with any other.
//!
//! Read without libtorch (the query path has none).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::config::Config;
use crate::error::{AcfError, Result};

/// File name inside a model directory.
pub const PRIOR_FILE: &str = "prior.safetensors";
/// Tensor holding t̄ (`embed_dim` float32).
const TEXT_MEAN: &str = "text_mean";
/// Metadata key: hex sha256 of the `model.safetensors` t̄ was computed with.
const WEIGHTS_KEY: &str = "weights_sha256";
/// Metadata key: how many captions t̄ averages.
const CAPTIONS_KEY: &str = "captions";

/// t̄ and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct HubnessPrior {
    /// Mean of the unit global caption vectors (not renormalised: its length says how much
    /// the captions agree).
    pub text_mean: Vec<f32>,
    /// Hex sha256 of the weights it was computed with.
    pub weights_sha256: String,
    /// Number of captions averaged.
    pub captions: usize,
}

impl HubnessPrior {
    /// `v_g · t̄` for a unit image global vector: what the prior subtracts, before its weight.
    pub fn offset(&self, global: &[f32]) -> f32 {
        super::native::linalg::dot(global, &self.text_mean)
    }

    /// The safetensors bytes of this prior.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes: Vec<u8> = self.text_mean.iter().flat_map(|v| v.to_le_bytes()).collect();
        let st_err = |e: safetensors::SafeTensorError| AcfError::Safetensors {
            path: PathBuf::from(PRIOR_FILE),
            reason: e.to_string(),
        };
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![self.text_mean.len()], &bytes)
            .map_err(st_err)?;
        let metadata: HashMap<String, String> = [
            (WEIGHTS_KEY.to_string(), self.weights_sha256.clone()),
            (CAPTIONS_KEY.to_string(), self.captions.to_string()),
        ]
        .into();
        safetensors::serialize([(TEXT_MEAN, view)], Some(metadata)).map_err(st_err)
    }

    /// Parses `bytes` read from `path`, checking t̄'s shape against `dim`.
    pub fn from_bytes(bytes: &[u8], path: &Path, dim: usize) -> Result<HubnessPrior> {
        let bad = |reason: String| AcfError::Safetensors { path: path.to_path_buf(), reason };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let weights_sha256 = meta
            .get(WEIGHTS_KEY)
            .cloned()
            .ok_or_else(|| bad(format!("no '{WEIGHTS_KEY}' in its metadata")))?;
        let captions = meta.get(CAPTIONS_KEY).and_then(|c| c.parse().ok()).unwrap_or(0);
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let view = st.tensor(TEXT_MEAN).map_err(|_| bad(format!("no tensor '{TEXT_MEAN}'")))?;
        if view.dtype() != Dtype::F32 || view.shape() != [dim] {
            return Err(bad(format!(
                "'{TEXT_MEAN}' is {:?} {:?}, the model needs F32 [{dim}]",
                view.dtype(),
                view.shape()
            )));
        }
        let text_mean: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if text_mean.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("'{TEXT_MEAN}' has a value that is not finite")));
        }
        Ok(HubnessPrior { text_mean, weights_sha256, captions })
    }
}

/// The prior of the model directory `dir`, whose weights have fingerprint `fingerprint`:
/// `None` when the directory has no prior file, an error when the file cannot be read, is
/// damaged, belongs to other weights, or is missing while `config` weighs it.
pub fn load(dir: &Path, config: &Config, fingerprint: &str) -> Result<Option<HubnessPrior>> {
    let prior = read(dir, config, fingerprint)?;
    require(dir, config.scoring.hubness_prior, prior.as_ref())?;
    Ok(prior)
}

fn read(dir: &Path, config: &Config, fingerprint: &str) -> Result<Option<HubnessPrior>> {
    let path = dir.join(PRIOR_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AcfError::io(&path, "cannot read the hubness prior", e)),
    };
    let prior = HubnessPrior::from_bytes(&bytes, &path, config.embed_dim as usize)?;
    if prior.weights_sha256 != fingerprint {
        return Err(AcfError::ModelMismatch {
            path,
            reason: format!(
                "the hubness prior was computed with weights {}, this model's are {}; rerun acf-index model calibrate",
                crate::files::short_fingerprint(&prior.weights_sha256),
                crate::files::short_fingerprint(fingerprint)
            ),
        });
    }
    Ok(Some(prior))
}

/// Refuses scoring with `hubness_prior > 0` when the model has no prior, naming the fix.
pub fn require(dir: &Path, weight: f64, prior: Option<&HubnessPrior>) -> Result<()> {
    if weight > 0.0 && prior.is_none() {
        return Err(AcfError::ModelMismatch {
            path: dir.join(PRIOR_FILE),
            reason: format!(
                "scoring.hubness_prior is {weight} but the model has no {PRIOR_FILE}; run acf-index model calibrate, or set it to 0"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior() -> HubnessPrior {
        HubnessPrior { text_mean: vec![0.5, -0.25, 0.0, 0.125], weights_sha256: "ab".repeat(32), captions: 7 }
    }

    fn config(dim: i64) -> Config {
        let mut c = Config::pvig_nano();
        c.embed_dim = dim;
        c
    }

    #[test]
    fn round_trips_and_is_refused_with_other_weights_or_shape() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), &config(4), "ab").unwrap(), None, "no file, no prior");
        std::fs::write(dir.path().join(PRIOR_FILE), prior().to_bytes().unwrap()).unwrap();
        assert_eq!(load(dir.path(), &config(4), &"ab".repeat(32)).unwrap(), Some(prior()));
        let other = load(dir.path(), &config(4), &"cd".repeat(32)).unwrap_err().to_string();
        assert!(other.contains("prior.safetensors") && other.contains("calibrate"), "{other}");
        let shape = load(dir.path(), &config(8), &"ab".repeat(32)).unwrap_err().to_string();
        assert!(shape.contains("[8]"), "{shape}");
        std::fs::write(dir.path().join(PRIOR_FILE), b"not a safetensors file").unwrap();
        let damaged = load(dir.path(), &config(4), &"ab".repeat(32)).unwrap_err().to_string();
        assert!(damaged.contains("prior.safetensors"), "{damaged}");
    }

    #[test]
    fn offset_is_the_dot_product_and_a_weight_without_prior_is_refused() {
        assert!((prior().offset(&[1.0, 1.0, 1.0, 1.0]) - 0.375).abs() < 1e-6);
        assert!(require(Path::new("m"), 0.0, None).is_ok());
        assert!(require(Path::new("m"), 1.0, Some(&prior())).is_ok());
        let e = require(Path::new("m"), 1.5, None).unwrap_err().to_string();
        assert!(e.contains("hubness_prior is 1.5") && e.contains("calibrate"), "{e}");
    }
}
