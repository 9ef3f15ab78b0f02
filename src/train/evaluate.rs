//! Evaluation on a split: every image against every caption with the full S (Sec. 4.1).

use tch::{Device, Kind, Tensor};

use super::loader::{TrainImage, plain};
use super::metrics::{Recall, recall};
use crate::model::config::{Correction, ScoringConfig};
use crate::model::{AcfModel, ImageFeatures, scoring};

/// Images (resized, not augmented) and all their captions.
pub struct EvalSet {
    pub pixels: Vec<Vec<u8>>,
    pub captions: Vec<Vec<i64>>,
    /// Image index of each caption.
    pub caption_image: Vec<usize>,
}

impl EvalSet {
    /// The first `max_images` images (all when `None`) with every caption.
    pub fn new(images: &[TrainImage], size: u32, max_images: Option<usize>) -> EvalSet {
        let n = max_images.unwrap_or(images.len()).min(images.len());
        let mut set =
            EvalSet { pixels: Vec::with_capacity(n), captions: Vec::new(), caption_image: Vec::new() };
        for (i, img) in images[..n].iter().enumerate() {
            set.pixels.push(plain(&img.pixels, size));
            for c in &img.captions {
                set.captions.push(c.clone());
                set.caption_image.push(i);
            }
        }
        set
    }

    /// R@K and mR of an (images × captions) score matrix of this set. Captions with the same
    /// token ids (many are word-for-word identical across images) get the same score first:
    /// padded to different lengths in different chunks they can differ by float noise, which
    /// would hide their tie from [`recall`].
    pub fn recall(&self, scores: &[f32]) -> Recall {
        let n_cap = self.captions.len();
        let mut first: std::collections::HashMap<&[i64], usize> = std::collections::HashMap::new();
        let rep: Vec<usize> = self
            .captions
            .iter()
            .enumerate()
            .map(|(c, ids)| *first.entry(ids.as_slice()).or_insert(c))
            .collect();
        let mut canonical = scores.to_vec();
        for row in canonical.chunks_mut(n_cap.max(1)) {
            for c in 0..row.len() {
                row[c] = row[rep[c]];
            }
        }
        recall(&canonical, self.images(), &self.caption_image)
    }

    /// Number of images.
    pub fn images(&self) -> usize {
        self.pixels.len()
    }
}

/// Encodes every image of the set (no augmentation, eval mode).
pub fn encode_images(model: &AcfModel, set: &EvalSet, batch: usize) -> ImageFeatures {
    let _guard = tch::no_grad_guard();
    let size = model.config.image.image_size;
    let mut regions = Vec::new();
    let mut globals = Vec::new();
    for chunk in set.pixels.chunks(batch.max(1)) {
        let flat: Vec<u8> = chunk.concat();
        let px = Tensor::from_slice(&flat).reshape([chunk.len() as i64, 3, size, size]);
        let f = model.encode_pixels(&px, false);
        regions.push(f.regions);
        globals.push(f.global);
    }
    ImageFeatures { regions: Tensor::cat(&regions, 0), global: Tensor::cat(&globals, 0) }
}

/// The full score matrix (images × captions, row-major) under `scoring_cfg`.
pub fn score_all(
    model: &AcfModel,
    set: &EvalSet,
    images: &ImageFeatures,
    scoring_cfg: &ScoringConfig,
) -> Vec<f32> {
    let _guard = tch::no_grad_guard();
    let n = set.images();
    let t = set.captions.len();
    let mut columns: Vec<Tensor> = Vec::new();
    for chunk in set.captions.chunks(128) {
        let (ids, lengths) = crate::model::text_encoder::batch_ids(chunk.iter().map(Vec::as_slice));
        let text = model.encode_ids(&ids, &lengths, false);
        columns.push(scoring::score_matrix_chunked(images, &text, scoring_cfg, 64));
    }
    let mut all = Tensor::cat(&columns, 1);
    if let Some(offsets) = model.prior_offsets(images, scoring_cfg) {
        all -= offsets;
    }
    let all = all.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    debug_assert_eq!(all.size(), vec![n as i64, t as i64]);
    Vec::<f32>::try_from(&all.flatten(0, -1)).unwrap_or_default()
}

/// R@K and mR of `model` on the set with its own scoring config.
pub fn evaluate(model: &AcfModel, set: &EvalSet) -> Recall {
    let feats = encode_images(model, set, 32);
    let scores = score_all(model, set, &feats, &model.config.scoring);
    set.recall(&scores)
}

/// One scoring setting evaluated at several values (`eval --sweep p=0.1,0.2`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub name: String,
    pub values: Vec<String>,
}

/// Parses `NAME=V1,V2,…` for a sweepable setting: p, q, lambda, correction, filtering.
pub fn parse_sweep(text: &str) -> std::result::Result<Sweep, String> {
    let (name, values) = text.split_once('=').ok_or_else(|| format!("'{text}' is not NAME=V1,V2,…"))?;
    let values: Vec<String> =
        values.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    let base = crate::model::Config::pvig_nano().scoring;
    let sweep = Sweep { name: name.trim().to_string(), values };
    if sweep.values.is_empty() {
        return Err(format!("'{text}': no values"));
    }
    for v in &sweep.values {
        sweep.apply(&base, v)?;
    }
    Ok(sweep)
}

impl Sweep {
    /// `base` with this setting at `value`.
    fn apply(&self, base: &ScoringConfig, value: &str) -> std::result::Result<ScoringConfig, String> {
        let mut s = base.clone();
        let num = || value.parse::<f64>().map_err(|_| format!("{}={value}: not a number", self.name));
        match self.name.as_str() {
            "p" => s.p = num()?,
            "q" => s.q = num()?,
            "lambda" => s.lambda = num()?,
            "global_weight" => s.global_weight = num()?,
            "hubness_prior" => {
                s.hubness_prior = num()?;
                if !(0.0..=10.0).contains(&s.hubness_prior) {
                    return Err(format!("hubness_prior={value}: from 0 to 10, as in config.json"));
                }
            }
            "hubness_sharpness" => {
                s.hubness_sharpness = num()?;
                if !(0.0..=100.0).contains(&s.hubness_sharpness) {
                    return Err(format!("hubness_sharpness={value}: from 0 to 100, as in config.json"));
                }
            }
            "correction" => {
                s.correction = match value {
                    "logits" => Correction::Logits,
                    "scaled" => Correction::Scaled,
                    "off" => Correction::Off,
                    _ => return Err(format!("correction={value}: logits, scaled or off")),
                }
            }
            "filtering" => {
                s.filtering = value.parse().map_err(|_| format!("filtering={value}: true or false"))?
            }
            other => {
                return Err(format!(
                    "cannot sweep '{other}' (p, q, lambda, global_weight, hubness_prior, hubness_sharpness, correction, filtering)"
                ));
            }
        }
        Ok(s)
    }

    /// The named variants of `base`, one per value.
    pub fn variants(&self, base: &ScoringConfig) -> Vec<(String, ScoringConfig)> {
        self.values
            .iter()
            .filter_map(|v| self.apply(base, v).ok().map(|s| (format!("{} = {v}", self.name), s)))
            .collect()
    }
}

/// The scoring settings `eval` reports: the model's own ("ACF (full)"), and with `ablate`
/// the paper's inference-time ablations M3 (no correction), M4 (no filtering) and M5 (no
/// global component). M1 and M2 change the architecture and need their own training.
pub fn scoring_variants(base: &ScoringConfig, ablate: bool) -> Vec<(String, ScoringConfig)> {
    let mut variants = vec![("ACF (full)".to_string(), base.clone())];
    if ablate {
        let m3 = ScoringConfig { correction: Correction::Off, ..base.clone() };
        let m4 = ScoringConfig { filtering: false, ..base.clone() };
        let m5 = ScoringConfig { global_component: false, ..base.clone() };
        variants.push(("M3: without correction".into(), m3));
        variants.push(("M4: without filtering".into(), m4));
        variants.push(("M5: without global component".into(), m5));
    }
    variants
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn sweeps_parse_and_set_one_field() {
        let s = parse_sweep("p=0.1, 0.5").unwrap();
        let base = crate::model::Config::pvig_nano().scoring;
        let v = s.variants(&base);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].0.as_str(), v[0].1.p, v[1].1.p), ("p = 0.1", 0.1, 0.5));
        assert_eq!(v[0].1.q, base.q, "only p changes");
        assert!(parse_sweep("delta=1").unwrap_err().contains("cannot sweep"));
        assert!(parse_sweep("q=x").unwrap_err().contains("not a number"));
        assert!(parse_sweep("p").is_err());
        let h = parse_sweep("hubness_prior=0,1.5").unwrap().variants(&base);
        assert_eq!((h[0].1.hubness_prior, h[1].1.hubness_prior), (0.0, 1.5));
        assert!(parse_sweep("hubness_prior=-1").unwrap_err().contains("from 0 to 10"));
        let b = parse_sweep("hubness_sharpness=0,10").unwrap().variants(&base);
        assert_eq!((b[0].1.hubness_sharpness, b[1].1.hubness_sharpness), (0.0, 10.0));
        assert!(parse_sweep("hubness_sharpness=101").unwrap_err().contains("from 0 to 100"));
    }
}
