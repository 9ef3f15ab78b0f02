//! The hubness prior of a model directory (`prior.safetensors`): t̄, the mean unit global
//! vector of the training captions, a bank of those captions' vectors, and the fingerprint of
//! the weights they were computed with.
//!
//! With `scoring.hubness_prior = h > 0`, S'(I, T) = S(I, T) − h · o(v_g), where the offset
//! o(v_g) is `v_g · t̄` (`scoring.hubness_sharpness` β = 0), or with β > 0 the inverted softmax
//! of Smith et al. (2017) over the bank t_1 … t_K, `(1/β) · log (1/K) Σ_k exp(β · v_g · t_k)`:
//! a soft maximum that measures how close the image sits to the captions *near it* rather
//! than to their overall mean (which, over two caption sets pointing different ways,
//! describes neither). As β → 0 it tends to `v_g · t̄` over the bank. An image whose
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

use super::config::{Config, ScoringConfig};
use crate::error::{AcfError, Result};

/// File name inside a model directory.
pub const PRIOR_FILE: &str = "prior.safetensors";
/// Tensor holding t̄ (`embed_dim` float32).
const TEXT_MEAN: &str = "text_mean";
/// Metadata key: hex sha256 of the `model.safetensors` t̄ was computed with.
const WEIGHTS_KEY: &str = "weights_sha256";
/// Tensor holding the caption bank (K × `embed_dim` float32, unit rows); optional.
const TEXT_BANK: &str = "text_bank";
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
    /// The caption bank, row-major K × `embed_dim` unit global vectors drawn at random from
    /// the captions averaged (empty when the prior was written without one); what the
    /// offset's soft maximum runs over when `scoring.hubness_sharpness` > 0.
    pub text_bank: Vec<f32>,
}

impl HubnessPrior {
    /// Captions in the bank (K).
    pub fn bank_rows(&self) -> usize {
        if self.text_mean.is_empty() { 0 } else { self.text_bank.len() / self.text_mean.len() }
    }

    /// What the prior subtracts from the scores of an image with unit global vector
    /// `global`, before its weight: `v_g · t̄` at `sharpness` 0, else
    /// `(1/β) · log mean_k exp(β · v_g · t_k)` over the bank (computed with the maximum
    /// taken out, so it neither overflows nor underflows). A sharpness without a bank falls
    /// back to t̄ (`require` refuses that combination before scoring).
    pub fn offset(&self, global: &[f32], sharpness: f64) -> f32 {
        let dim = self.text_mean.len();
        if sharpness <= 0.0 || self.text_bank.is_empty() || dim == 0 {
            return super::native::linalg::dot(global, &self.text_mean);
        }
        let beta = sharpness as f32;
        let mut logits = vec![0f32; self.bank_rows()];
        super::native::linalg::row_dots(global, &self.text_bank, &mut logits, dim);
        logits.iter_mut().for_each(|l| *l *= beta);
        soft_maximum(&logits, beta)
    }

    /// [`offset`](Self::offset) of many unit global vectors at once (`globals`, row-major
    /// n × D), equal to it within float rounding. Each block of images is multiplied with the
    /// whole bank in one matrix product (`matrixmultiply`'s cache-blocked SIMD sgemm, not a
    /// hand-written one), then each row's log-sum-exp is taken; blocks run in parallel. Stage
    /// 2 of a search computes the offsets of all its candidates this way.
    pub fn offsets(&self, globals: &[f32], sharpness: f64) -> Vec<f32> {
        use rayon::prelude::*;
        let dim = self.text_mean.len();
        if dim == 0 {
            return Vec::new();
        }
        if sharpness <= 0.0 || self.text_bank.is_empty() {
            return globals.chunks_exact(dim).map(|g| self.offset(g, sharpness)).collect();
        }
        /// Images per block: 64 rows of K logits (512 KiB at K = 2048) per thread.
        const BLOCK: usize = 64;
        let beta = sharpness as f32;
        let k = self.bank_rows();
        globals
            .par_chunks(BLOCK * dim)
            .flat_map_iter(|block| {
                let n = block.len() / dim;
                let mut logits = vec![0f32; n * k];
                // logits (n × K) = β · block (n × D) · bankᵀ (D × K); the bank is K × D
                // row-major, so its transpose has row stride 1 and column stride D.
                // SAFETY: the pointers and strides describe `block` (n × dim), the bank
                // (k × dim) read transposed and `logits` (n × k), all in bounds and
                // `logits` not aliased by the inputs.
                unsafe {
                    matrixmultiply::sgemm(
                        n,
                        dim,
                        k,
                        beta,
                        block.as_ptr(),
                        dim as isize,
                        1,
                        self.text_bank.as_ptr(),
                        1,
                        dim as isize,
                        0.0,
                        logits.as_mut_ptr(),
                        k as isize,
                        1,
                    );
                }
                logits.chunks_exact(k).map(|row| soft_maximum(row, beta)).collect::<Vec<f32>>()
            })
            .collect()
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
        let bank_bytes: Vec<u8> = self.text_bank.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut tensors = vec![(TEXT_MEAN, view)];
        if !self.text_bank.is_empty() {
            let shape = vec![self.bank_rows(), self.text_mean.len()];
            tensors.push((
                TEXT_BANK,
                safetensors::tensor::TensorView::new(Dtype::F32, shape, &bank_bytes).map_err(st_err)?,
            ));
        }
        safetensors::serialize(tensors, Some(metadata)).map_err(st_err)
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
        let floats = |data: &[u8]| -> Vec<f32> {
            data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        let text_mean = floats(view.data());
        if text_mean.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("'{TEXT_MEAN}' has a value that is not finite")));
        }
        let text_bank = match st.tensor(TEXT_BANK) {
            Err(_) => Vec::new(),
            Ok(bank) => {
                if bank.dtype() != Dtype::F32
                    || bank.shape().len() != 2
                    || bank.shape()[1] != dim
                    || bank.shape()[0] == 0
                {
                    return Err(bad(format!(
                        "'{TEXT_BANK}' is {:?} {:?}, the model needs F32 [K, {dim}] with K ≥ 1",
                        bank.dtype(),
                        bank.shape()
                    )));
                }
                let rows = floats(bank.data());
                if rows.iter().any(|v| !v.is_finite()) {
                    return Err(bad(format!("'{TEXT_BANK}' has a value that is not finite")));
                }
                rows
            }
        };
        Ok(HubnessPrior { text_mean, weights_sha256, captions, text_bank })
    }
}

/// `(1/β) · log mean_k exp(l_k)` of `logits` l_k = β · v_g · t_k, written as
/// `(l_max + log1p(mean_k expm1(l_k − l_max))) / β` with the mean taken in f64: exact to
/// float rounding for any β > 0, where the plain log-sum-exp, whose log is taken of a sum
/// near K and then divided by β, loses every digit as β → 0 (at β = 1e-6 it was off by
/// more than 1; the limit is the mean of v_g · t_k).
fn soft_maximum(logits: &[f32], beta: f32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = logits.iter().map(|&l| f64::from((l - max).exp_m1())).sum::<f64>() / logits.len() as f64;
    ((f64::from(max) + mean.ln_1p()) / f64::from(beta)) as f32
}

/// Sets `config`'s prior weight to 0 for new weights (`what`: "training", "the averaged
/// model", "the new model"), said once when it was on: a prior belongs to the weights it was
/// computed with, so a model whose weights are new must not ask for one it does not have.
pub fn drop_weight(config: &mut Config, what: &str) {
    if config.scoring.hubness_prior > 0.0 {
        tracing::warn!(
            "scoring.hubness_prior {} set to 0 for {what}: a prior belongs to the weights it was computed with; run acf-index model calibrate on the new weights and set it again",
            config.scoring.hubness_prior
        );
        config.scoring.hubness_prior = 0.0;
    }
}

/// The prior of the model directory `dir`, whose weights have fingerprint `fingerprint`:
/// `None` when the directory has no prior file, an error when the file cannot be read, is
/// damaged, belongs to other weights, or is missing while `config` weighs it.
pub fn load(dir: &Path, config: &Config, fingerprint: &str) -> Result<Option<HubnessPrior>> {
    let prior = read(dir, config, fingerprint)?;
    require(dir, &config.scoring, prior.as_ref())?;
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

/// Refuses scoring with `hubness_prior > 0` when the model has no prior, or with
/// `hubness_sharpness > 0` when its prior has no caption bank, naming the fix.
pub fn require(dir: &Path, scoring: &ScoringConfig, prior: Option<&HubnessPrior>) -> Result<()> {
    let weight = scoring.hubness_prior;
    if weight <= 0.0 {
        return Ok(());
    }
    let reason = match prior {
        None => format!(
            "scoring.hubness_prior is {weight} but the model has no {PRIOR_FILE}; run acf-index model calibrate, or set it to 0"
        ),
        Some(p) if scoring.hubness_sharpness > 0.0 && p.text_bank.is_empty() => format!(
            "scoring.hubness_sharpness is {} but {PRIOR_FILE} has no caption bank; rerun acf-index model calibrate (with --bank > 0), or set it to 0",
            scoring.hubness_sharpness
        ),
        Some(_) => return Ok(()),
    };
    Err(AcfError::ModelMismatch { path: dir.join(PRIOR_FILE), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior() -> HubnessPrior {
        HubnessPrior {
            text_mean: vec![0.5, -0.25, 0.0, 0.125],
            weights_sha256: "ab".repeat(32),
            captions: 7,
            text_bank: Vec::new(),
        }
    }

    /// A prior whose bank holds two captions, [1, 0, 0, 0] and [0, 1, 0, 0].
    fn banked() -> HubnessPrior {
        HubnessPrior {
            text_mean: vec![0.5, 0.5, 0.0, 0.0],
            text_bank: vec![1., 0., 0., 0., 0., 1., 0., 0.],
            ..prior()
        }
    }

    fn scoring(h: f64, beta: f64) -> ScoringConfig {
        ScoringConfig { hubness_prior: h, hubness_sharpness: beta, ..Config::pvig_nano().scoring }
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
        assert!((prior().offset(&[1.0, 1.0, 1.0, 1.0], 0.0) - 0.375).abs() < 1e-6);
        assert!(require(Path::new("m"), &scoring(0.0, 0.0), None).is_ok());
        assert!(require(Path::new("m"), &scoring(1.0, 0.0), Some(&prior())).is_ok());
        let e = require(Path::new("m"), &scoring(1.5, 0.0), None).unwrap_err().to_string();
        assert!(e.contains("hubness_prior is 1.5") && e.contains("calibrate"), "{e}");
        let e = require(Path::new("m"), &scoring(1.0, 10.0), Some(&prior())).unwrap_err().to_string();
        assert!(e.contains("hubness_sharpness is 10") && e.contains("no caption bank"), "{e}");
        assert!(require(Path::new("m"), &scoring(1.0, 10.0), Some(&banked())).is_ok());
        assert!(require(Path::new("m"), &scoring(0.0, 10.0), Some(&prior())).is_ok(), "weight 0: unused");
    }

    #[test]
    fn the_banked_offset_is_a_soft_maximum_between_the_mean_and_the_nearest_caption() {
        let p = banked();
        let near_first = [1.0, 0.0, 0.0, 0.0];
        // β → 0: the mean of the dot products, v · t̄ over the bank (0.5).
        assert!((p.offset(&near_first, 1e-4) - 0.5).abs() < 1e-3, "{}", p.offset(&near_first, 1e-4));
        // However small β is (the plain log-sum-exp lost every digit here).
        for beta in [1e-6, 1e-8, 1e-12] {
            let got = p.offset(&near_first, beta);
            assert!((got - 0.5).abs() < 1e-5, "β {beta}: {got}");
            assert!((p.offsets(&near_first, beta)[0] - 0.5).abs() < 1e-5, "β {beta}, batched");
        }
        // Exactly: (1/β) log((e^β + 1) / 2).
        let beta = 10.0f32;
        let exact = (((beta).exp() + 1.0) / 2.0).ln() / beta;
        assert!((p.offset(&near_first, 10.0) - exact).abs() < 1e-5);
        // β large: the nearest caption's similarity (1), finite however large β is.
        assert!((p.offset(&near_first, 1e4) - 1.0).abs() < 1e-3);
        // Sharpness 0 keeps the mean form.
        assert_eq!(p.offset(&near_first, 0.0), 0.5);
    }

    #[test]
    fn offsets_of_many_images_equal_the_offset_of_each() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let dim = 16;
        let mut unit = |n: usize| -> Vec<f32> {
            let mut v: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            v.chunks_exact_mut(dim).for_each(crate::model::native::linalg::normalize);
            v
        };
        // 150 bank rows, 130 images (two full blocks of 64 and a part).
        let p = HubnessPrior { text_mean: vec![0.01; dim], text_bank: unit(150), ..prior() };
        let globals = unit(130);
        for beta in [0.0, 5.0, 40.0, 100.0] {
            let batch = p.offsets(&globals, beta);
            assert_eq!(batch.len(), 130);
            for (g, got) in globals.chunks_exact(dim).zip(&batch) {
                let want = p.offset(g, beta);
                assert!((got - want).abs() < 1e-5, "β {beta}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn the_bank_round_trips_and_a_damaged_bank_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PRIOR_FILE), banked().to_bytes().unwrap()).unwrap();
        let back = load(dir.path(), &config(4), &"ab".repeat(32)).unwrap().unwrap();
        assert_eq!((back.bank_rows(), &back.text_bank), (2, &banked().text_bank));
        let bad = HubnessPrior { text_bank: vec![f32::NAN; 8], ..banked() };
        std::fs::write(dir.path().join(PRIOR_FILE), bad.to_bytes().unwrap()).unwrap();
        let e = load(dir.path(), &config(4), &"ab".repeat(32)).unwrap_err().to_string();
        assert!(e.contains("text_bank") && e.contains("not finite"), "{e}");
    }
}
