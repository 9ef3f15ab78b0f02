//! `acf-index model calibrate`: the hubness prior t̄ of a trained model (see `model::prior`), the
//! mean unit global vector of a split's captions, encoded by the model.

use tch::{Device, Kind, Tensor};

use crate::data::dataset::Dataset;
use crate::error::{AcfError, Result};
use crate::model::AcfModel;
use crate::model::prior::HubnessPrior;

/// Captions encoded per batch.
const BATCH: usize = 256;

/// t̄ over every caption of `split` in `datasets` (each occurrence counts, as queries repeat
/// common phrasings too), encoded by `model`, whose weights have fingerprint `fingerprint`.
/// Captions without a known word are left out; a split without any caption is an error.
pub fn hubness_prior(
    model: &AcfModel,
    fingerprint: &str,
    datasets: &[Dataset],
    split: &str,
) -> Result<HubnessPrior> {
    let max_tokens = model.config.text.max_tokens as usize;
    let captions: Vec<Vec<i64>> = datasets
        .iter()
        .flat_map(|d| d.split(split))
        .flat_map(|s| s.captions.iter())
        .map(|c| model.vocab.encode(c, max_tokens).ids)
        .filter(|ids| !ids.is_empty())
        .collect();
    if captions.is_empty() {
        return Err(AcfError::InvalidArgument(format!(
            "no caption with a known word in split '{split}' of {}",
            datasets.iter().map(|d| d.source.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    let _guard = tch::no_grad_guard();
    let dim = model.config.embed_dim;
    let mut sum = Tensor::zeros([dim], (Kind::Double, Device::Cpu));
    // Drawn on a terminal only (indicatif hides itself otherwise).
    let bar = indicatif::ProgressBar::new(captions.len() as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("captions {pos}/{len} [{bar:30}] ETA {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    for chunk in captions.chunks(BATCH) {
        bar.inc(chunk.len() as u64);
        let (ids, lengths) = crate::model::text_encoder::batch_ids(chunk.iter().map(Vec::as_slice));
        let text = model.encode_ids(&ids, &lengths, false);
        sum += text.global.to_device(Device::Cpu).to_kind(Kind::Double).sum_dim_intlist(0, false, None);
    }
    bar.finish_and_clear();
    let mean = (sum / captions.len() as f64).to_kind(Kind::Float);
    Ok(HubnessPrior {
        text_mean: Vec::<f32>::try_from(&mean)?,
        weights_sha256: fingerprint.to_string(),
        captions: captions.len(),
    })
}
