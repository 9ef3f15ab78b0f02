//! Checkpoint averaging: the uniform mean of every weight and BatchNorm statistic of
//! several models of one architecture and vocabulary (e.g. the last epochs of one training
//! run, as in SWA or a "model soup"). The mean of nearby points of one run often sits in a
//! flatter, better-generalising spot than any of them; whether it does is for validation
//! to say (`eval --split val`).

use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use super::{AcfModel, ModelDir, model_dir};
use crate::error::{AcfError, Result};

/// The averaged model, with the sources' fingerprints (in the order given).
pub struct Averaged {
    /// Config, vocabulary and weights: the first source's config (scoring included, the
    /// hubness prior's weight set to 0) with the mean of all sources' tensors.
    pub model: AcfModel,
    /// `(directory, fingerprint)` of every source.
    pub sources: Vec<(PathBuf, String)>,
}

/// Loads every model directory in `dirs` (at least two) and averages them. Refuses, naming
/// the directory, one whose architecture (`embed_dim`, `image`, `text` config blocks) or
/// vocabulary differs from the first's: their tensors would not mean the same thing even
/// where shapes agree.
pub fn average_models(dirs: &[PathBuf]) -> Result<Averaged> {
    let Some((first_dir, rest)) = dirs.split_first() else {
        return Err(too_few());
    };
    if rest.is_empty() {
        return Err(too_few());
    }
    let first = ModelDir::load_without_prior(first_dir, Device::Cpu)?;
    let mut sources = vec![(first.dir.clone(), first.fingerprint.clone())];
    let mut model = first.model;
    super::prior::drop_weight(&mut model.config, "the averaged model");
    // Derived buffers (recomputed from the config, equal in every source) are not averaged.
    let mut sums: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(name, _)| !model_dir::is_derived(name))
        .map(|(name, t)| (name, t.detach().to_kind(tch::Kind::Double)))
        .collect();
    for dir in rest {
        let other = ModelDir::load_without_prior(dir, Device::Cpu)?;
        check_same_architecture(&model, &other.model, dir)?;
        let vars = other.model.var_store().variables();
        for (name, sum) in sums.iter_mut() {
            let t = vars.get(name).ok_or_else(|| AcfError::ModelMismatch {
                path: dir.clone(),
                reason: format!("tensor '{name}' is missing"),
            })?;
            *sum += t.detach().to_kind(tch::Kind::Double);
        }
        sources.push((other.dir, other.fingerprint));
    }
    let n = dirs.len() as f64;
    let mut vars = model.var_store_mut().variables();
    for (name, sum) in sums {
        if let Some(var) = vars.get_mut(&name) {
            let mean = (sum / n).to_kind(tch::Kind::Float);
            tch::no_grad(|| var.f_copy_(&mean))?;
        }
    }
    Ok(Averaged { model, sources })
}

fn too_few() -> AcfError {
    AcfError::InvalidArgument("averaging needs at least two model directories".into())
}

/// Same `embed_dim`, `image` and `text` blocks and the same vocabulary as `first`.
fn check_same_architecture(first: &AcfModel, other: &AcfModel, dir: &Path) -> Result<()> {
    let (a, b) = (&first.config, &other.config);
    let differs = if a.embed_dim != b.embed_dim {
        Some("embed_dim")
    } else if a.image != b.image {
        Some("the image block of config.json")
    } else if a.text != b.text {
        Some("the text block of config.json")
    } else if first.vocab.words() != other.vocab.words() {
        Some("vocab.json")
    } else {
        None
    };
    match differs {
        Some(what) => Err(AcfError::InvalidArgument(format!(
            "{}: {what} differs from the first model's: only models of one architecture and vocabulary can be averaged",
            dir.display()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Config, Vocab};

    fn vocab() -> Vocab {
        Vocab::build(["a tennis court near a road", "many planes at an airport"], 1)
    }

    fn saved(seed: i64, config: Config, vocab: Vocab, dir: &Path) -> AcfModel {
        tch::manual_seed(seed);
        let model = AcfModel::new(config, vocab, Device::Cpu);
        model_dir::save(&model, dir, "card").unwrap();
        model
    }

    #[test]
    fn every_tensor_is_the_mean_of_the_sources() {
        let (a, b, c) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // The first source weighs a hubness prior: the mean of the weights does not.
        let mut with_prior = Config::pvig_nano();
        with_prior.scoring.hubness_prior = 3.0;
        let ma = saved(1, with_prior, vocab(), a.path());
        let mb = saved(2, Config::pvig_nano(), vocab(), b.path());
        let mc = saved(3, Config::pvig_nano(), vocab(), c.path());
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf(), c.path().to_path_buf()];
        let avg = average_models(&dirs).unwrap();
        assert_eq!(avg.sources.len(), 3);
        assert_eq!(avg.model.config.scoring.hubness_prior, 0.0);
        let (va, vb, vc) =
            (ma.var_store().variables(), mb.var_store().variables(), mc.var_store().variables());
        let out = avg.model.var_store().variables();
        let mut checked = 0;
        for (name, t) in &out {
            let expected = (&va[name] + &vb[name] + &vc[name]) / 3.0;
            let diff = (t - expected).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name}: off by {diff}");
            checked += 1;
        }
        assert!(checked > 50, "only {checked} tensors");
        // The sources differ, so the mean is not one of them.
        let name = out.keys().find(|n| n.ends_with("weight")).unwrap();
        assert!(!out[name].equal(&va[name]));
    }

    #[test]
    fn another_vocabulary_or_architecture_is_refused_naming_the_directory() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        saved(1, Config::pvig_nano(), vocab(), a.path());
        saved(
            2,
            Config::pvig_nano(),
            Vocab::build(["a tennis court near a lake", "many planes at an airport"], 1),
            b.path(),
        );
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        let err = average_models(&dirs).err().unwrap().to_string();
        assert!(err.contains("vocab.json differs") && err.contains(&b.path().display().to_string()), "{err}");

        let mut knn = Config::pvig_nano();
        knn.image.knn_max += 1;
        saved(2, knn, vocab(), b.path());
        let err = average_models(&dirs).err().unwrap().to_string();
        assert!(err.contains("image block"), "{err}");

        let err = average_models(&dirs[..1]).err().unwrap().to_string();
        assert!(err.contains("at least two"), "{err}");
    }
}
