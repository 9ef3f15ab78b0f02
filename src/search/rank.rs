//! `acf-index rank`: image files (not an index) ranked against one caption by the full
//! ACF score S, for trying a model on a handful of pictures.

use std::path::PathBuf;

use tch::Device;

use crate::data::image_file::{Chip, load_chip};
use crate::error::{AcfError, Result};
use crate::model::{AcfModel, InferenceOptions, scoring};

/// One ranked image.
#[derive(Debug, Clone)]
pub struct RankedImage {
    pub image: String,
    /// The full score S(I, T).
    pub score: f32,
    /// The global similarity sim_g.
    pub sim_g: f32,
}

/// What [`rank_images`] found.
#[derive(Debug)]
pub struct Ranking {
    /// Best first.
    pub ranked: Vec<RankedImage>,
    /// Caption words outside the model's vocabulary (ignored).
    pub unknown_words: Vec<String>,
    /// Images that could not be read, each error naming the file.
    pub unreadable: Vec<AcfError>,
}

/// Encodes every readable image of `images` and ranks them against `text` by S.
/// Fails when the caption has no known word or no image can be read.
pub fn rank_images(model: &AcfModel, text: &str, images: &[PathBuf]) -> Result<Ranking> {
    let (caption, encoded) = model.encode_captions(&[text])?;
    let size = model.config.image.image_size as u32;
    let mut chips = Vec::new();
    let mut names = Vec::new();
    let mut unreadable = Vec::new();
    for path in images {
        match load_chip(path, size) {
            Ok(chip) => {
                chips.push(chip);
                names.push(path.display().to_string());
            }
            Err(e) => unreadable.push(e),
        }
    }
    if chips.is_empty() {
        let reasons: Vec<String> = unreadable.iter().map(|e| e.to_string()).collect();
        return Err(AcfError::InvalidArgument(format!(
            "none of the {} image(s) could be read: {}",
            images.len(),
            reasons.join("; ")
        )));
    }
    let _guard = tch::no_grad_guard();
    let probe = Chip::batch(&chips[..chips.len().min(4)]);
    let encoder = model.inference_image_encoder(&InferenceOptions::default(), Some(&probe));
    tracing::debug!(precision = encoder.precision().name(), "image encoder for inference");
    let (mut scores, mut sims) = (Vec::with_capacity(chips.len()), Vec::with_capacity(chips.len()));
    for batch in chips.chunks(16) {
        let feats = encoder.encode_pixels(&Chip::batch(batch));
        let s = model.score(&feats, &caption).reshape([-1]);
        let g = scoring::global_similarity(&feats, &caption).reshape([-1]);
        scores.extend(Vec::<f32>::try_from(&s.to_device(Device::Cpu))?);
        sims.extend(Vec::<f32>::try_from(&g.to_device(Device::Cpu))?);
    }
    let mut ranked: Vec<RankedImage> = names
        .into_iter()
        .zip(scores.into_iter().zip(sims))
        .map(|(image, (score, sim_g))| RankedImage { image, score, sim_g })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(Ranking { ranked, unknown_words: encoded[0].unknown.clone(), unreadable })
}
