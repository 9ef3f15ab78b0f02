//! libtorch-free inference for queries: the text encoder and the score S of one query
//! against stored chips, in plain Rust. `acf-index query` runs on this alone, so its binary
//! does not load libtorch (0.25 s of dynamic linking and operator registration before
//! `main`); `serve` and `rerank` use it too, so every search path scores the same way.
//! The tests below hold it to the libtorch model (`model::text_encoder`, `model::scoring`).

pub mod linalg;
pub mod score;
pub mod text;
pub mod weights;

use std::path::{Path, PathBuf};

pub use score::{ScoringQuery, Scratch};
pub use text::{EncodedText, TextEncoder};

use super::config::Config;
use super::model_dir::{CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE};
use super::vocab::Vocab;
use crate::error::{AcfError, Result};

/// What a query needs of a model directory: config, vocabulary, text encoder weights and
/// the fingerprint (sha256 of `model.safetensors`) that indexes record.
#[derive(Debug, Clone)]
pub struct QueryModel {
    pub config: Config,
    pub vocab: Vocab,
    pub dir: PathBuf,
    /// Hex sha256 of `model.safetensors`, as `ModelDir` reports it.
    pub fingerprint: String,
    /// The hubness prior t̄ (`prior.safetensors`), when the model directory has one.
    pub prior: Option<super::prior::HubnessPrior>,
    text: TextEncoder,
}

impl QueryModel {
    /// Loads and checks a model directory's query half (errors as `ModelDir::load`'s).
    pub fn load(dir: &Path) -> Result<QueryModel> {
        super::model_dir::check_files(dir)?;
        let config = Config::load(&dir.join(CONFIG_FILE))?;
        let vocab = Vocab::load(&dir.join(VOCAB_FILE))?;
        let path = dir.join(WEIGHTS_FILE);
        let weights = weights::Weights::open(&path)?;
        let fingerprint = crate::files::cached_fingerprint(&path, weights.bytes());
        if !weights.has("text.embed.weight") {
            return Err(AcfError::ModelMismatch {
                path: path.clone(),
                reason: format!("{WEIGHTS_FILE} has no text encoder (tensor 'text.embed.weight')"),
            });
        }
        let text = TextEncoder::load(&weights, &config, vocab.len())?;
        let prior = super::prior::load(dir, &config, &fingerprint)?;
        Ok(QueryModel { config, vocab, dir: dir.to_path_buf(), fingerprint, prior, text })
    }

    /// The model with its weights copied into memory, independent of the file from then on
    /// (for `serve`, which runs for days while files may be replaced).
    pub fn resident(self) -> QueryModel {
        QueryModel { text: self.text.resident(), ..self }
    }

    /// Encodes a caption of known words (`ReadQuery::text`), ready for scoring; refuses a
    /// caption without any known word.
    pub fn encode(&self, caption: &str) -> Result<ScoringQuery> {
        let encoded = self.vocab.encode_known(caption, self.config.text.max_tokens as usize)?;
        Ok(ScoringQuery::new(self.text.encode(&encoded.ids)))
    }

    /// S(I, T) of `query` against one chip (`regions` k × D with unit rows, `sim_g`).
    pub fn score(&self, query: &ScoringQuery, regions: &[f32], sim_g: f32, scratch: &mut Scratch) -> f32 {
        score::score(&self.config.scoring, query, regions, sim_g, scratch)
    }

    /// Whether this model scores with a hubness prior (weight > 0 and a prior loaded).
    pub fn has_prior(&self) -> bool {
        self.prior.is_some() && self.config.scoring.hubness_prior > 0.0
    }

    /// What the hubness prior subtracts from every score of each of n chips (`globals`,
    /// row-major n × D global vectors as stored; normalised here): `hubness_prior · (v_g ·
    /// t̄)`, or its caption-bank form when `hubness_sharpness` > 0 (see `model::prior`), all
    /// chips computed together; `None` when the prior is off.
    pub fn prior_offsets(&self, globals: &[f32]) -> Option<Vec<f32>> {
        let p = self.prior.as_ref().filter(|_| self.has_prior())?;
        let mut unit = globals.to_vec();
        unit.chunks_exact_mut(self.config.embed_dim as usize).for_each(linalg::normalize);
        let h = self.config.scoring.hubness_prior as f32;
        let mut offsets = p.offsets(&unit, self.config.scoring.hubness_sharpness);
        offsets.iter_mut().for_each(|o| *o *= h);
        Some(offsets)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::model::config::Correction;
    use crate::model::{AcfModel, ImageFeatures, model_dir};

    fn vocab() -> Vocab {
        Vocab::build(
            ["a tennis court near a road", "many planes at an airport", "green trees around a pond"],
            1,
        )
    }

    /// A random pvig-nano model saved to a directory, loaded both ways.
    fn both(cfg: Config) -> (tempfile::TempDir, AcfModel, QueryModel) {
        tch::manual_seed(3);
        let model = AcfModel::new(cfg, vocab(), Device::Cpu);
        // Untrained GAT/GRU weights are small; scale them so that the test sees real dynamics.
        tch::no_grad(|| {
            for (name, mut var) in model.var_store().variables() {
                if name.starts_with("text.") {
                    let _ = var.f_mul_scalar_(3.0);
                }
            }
        });
        let dir = tempfile::tempdir().unwrap();
        model_dir::save(&model, dir.path(), "# card\n").unwrap();
        let native = QueryModel::load(dir.path()).unwrap();
        (dir, model, native)
    }

    fn to_vec(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn text_encoder_matches_libtorch() {
        for use_gat in [true, false] {
            let mut cfg = Config::pvig_nano();
            cfg.text.use_gat = use_gat;
            let (_dir, model, native) = both(cfg);
            for caption in ["tennis court near road", "planes", "green trees around a pond near an airport"] {
                let (t, _) = model.encode_captions(&[caption]).unwrap();
                let q = native.encode(caption).unwrap();
                let m = t.words.size()[1] as usize;
                assert_eq!(q.text.m, m, "{caption}");
                assert!(
                    max_diff(&q.text.words, &to_vec(&t.words)) < 2e-5,
                    "{caption}: words (gat {use_gat})"
                );
                assert!(
                    max_diff(&q.text.global, &to_vec(&t.global)) < 2e-5,
                    "{caption}: global (gat {use_gat})"
                );
            }
        }
    }

    #[test]
    fn scores_match_libtorch_in_every_scoring_mode() {
        let (_dir, model, mut native) = both(Config::pvig_nano());
        let (n, k, d) = (12, 49, 512);
        let unit = |x: Tensor| {
            let norm = x.square().sum_dim_intlist(-1, true, None::<Kind>).sqrt();
            x / norm
        };
        let regions = unit(Tensor::randn([n, k, d], (Kind::Float, Device::Cpu)));
        let base = unit(Tensor::randn([n, d], (Kind::Float, Device::Cpu)));
        let caption = "tennis court near a road";
        let (t, _) = model.encode_captions(&[caption]).unwrap();
        // Images correlated with the query, so that sim_g spans both sides of p.
        let mix = Tensor::linspace(-0.9, 0.9, n, (Kind::Float, Device::Cpu)).view([n, 1]);
        let global = unit(&base * (1.0 - mix.abs()) + t.global.expand([n, d], false) * &mix);
        let images = ImageFeatures { regions, global };
        let flat = to_vec(&images.regions);
        for correction in [Correction::Logits, Correction::Scaled, Correction::Off] {
            for filtering in [true, false] {
                for (global_component, global_weight) in [(true, 1.0), (true, 2.5), (false, 1.0)] {
                    let mut cfg = model.config.scoring.clone();
                    cfg.correction = correction;
                    cfg.filtering = filtering;
                    cfg.global_component = global_component;
                    cfg.global_weight = global_weight;
                    let want = to_vec(&crate::model::scoring::score_matrix(&images, &t, &cfg));
                    let sim = to_vec(&crate::model::scoring::global_similarity(&images, &t));
                    native.config.scoring = cfg.clone();
                    let q = native.encode(caption).unwrap();
                    let mut scratch = Scratch::default();
                    let chip = (k * d) as usize;
                    let got: Vec<f32> = (0..n as usize)
                        .map(|i| native.score(&q, &flat[i * chip..(i + 1) * chip], sim[i], &mut scratch))
                        .collect();
                    assert!(
                        max_diff(&got, &want) < 1e-4,
                        "{correction:?} filtering {filtering} global {global_component} ×{global_weight}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_hubness_prior_subtracts_the_same_offset_in_both_paths() {
        let (_dir, mut model, mut native) = both(Config::pvig_nano());
        let d = 512;
        let mean: Vec<f32> = (0..d).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        let bank = Tensor::randn([5, d as i64], (Kind::Float, Device::Cpu));
        let bank = &bank / bank.square().sum_dim_intlist(-1, true, None::<Kind>).sqrt();
        let prior = crate::model::prior::HubnessPrior {
            text_mean: mean.clone(),
            weights_sha256: native.fingerprint.clone(),
            captions: 3,
            text_bank: to_vec(&bank),
        };
        model.prior = Some(prior.clone());
        native.prior = Some(prior);
        let images = ImageFeatures {
            regions: Tensor::randn([3, 49, d as i64], (Kind::Float, Device::Cpu)),
            global: Tensor::randn([3, d as i64], (Kind::Float, Device::Cpu)),
        };
        let images = ImageFeatures {
            regions: &images.regions / images.regions.square().sum_dim_intlist(-1, true, None::<Kind>).sqrt(),
            global: &images.global / images.global.square().sum_dim_intlist(-1, true, None::<Kind>).sqrt(),
        };
        let (t, _) = model.encode_captions(&["tennis court near a road"]).unwrap();
        let plain = to_vec(&model.score(&images, &t));
        let globals = to_vec(&images.global);
        for h in [1.0, 2.5] {
            model.config.scoring.hubness_prior = h;
            native.config.scoring.hubness_prior = h;
            let with = to_vec(&model.score(&images, &t));
            for i in 0..3 {
                let g = &globals[i * d..(i + 1) * d];
                let want = h as f32 * g.iter().zip(&mean).map(|(a, b)| a * b).sum::<f32>();
                assert!((plain[i] - with[i] - want).abs() < 1e-5, "libtorch, image {i}, h {h}");
                assert!(
                    (native.prior_offsets(g).unwrap()[0] - want).abs() < 1e-5,
                    "native, image {i}, h {h}"
                );
            }
        }
        // The bank form: both paths subtract h · (1/β) log mean_k exp(β · v_g · t_k).
        let sims = to_vec(&images.global.matmul(&bank.tr()));
        for beta in [5.0f32, 20.0] {
            model.config.scoring.hubness_sharpness = beta as f64;
            native.config.scoring.hubness_sharpness = beta as f64;
            let with = to_vec(&model.score(&images, &t));
            for i in 0..3 {
                let mean_exp = sims[i * 5..(i + 1) * 5].iter().map(|s| (beta * s).exp()).sum::<f32>() / 5.0;
                let want = 2.5 * mean_exp.ln() / beta;
                assert!((plain[i] - with[i] - want).abs() < 1e-4, "libtorch, image {i}, β {beta}");
                let g = &globals[i * d..(i + 1) * d];
                assert!(
                    (native.prior_offsets(g).unwrap()[0] - want).abs() < 1e-4,
                    "native, image {i}, β {beta}"
                );
            }
        }
        // As β → 0 both tend to h · mean_k (v_g · t_k), however small β is.
        model.config.scoring.hubness_sharpness = 1e-7;
        native.config.scoring.hubness_sharpness = 1e-7;
        let with = to_vec(&model.score(&images, &t));
        for i in 0..3 {
            let want = 2.5 * sims[i * 5..(i + 1) * 5].iter().sum::<f32>() / 5.0;
            assert!((plain[i] - with[i] - want).abs() < 1e-4, "libtorch, image {i}, β 1e-7");
            let g = &globals[i * d..(i + 1) * d];
            assert!((native.prior_offsets(g).unwrap()[0] - want).abs() < 1e-4, "native, image {i}, β 1e-7");
        }
        model.config.scoring.hubness_prior = 0.0;
        native.config.scoring.hubness_prior = 0.0;
        assert_eq!(to_vec(&model.score(&images, &t)), plain, "weight 0 is off");
        assert_eq!(native.prior_offsets(&globals[..d]), None);
    }

    #[test]
    fn a_resident_model_ignores_its_file_being_overwritten_in_place() {
        let (dir, _model, native) = both(Config::pvig_nano());
        let before = native.encode("tennis court near a road").unwrap();
        let resident = native.resident();
        let path = dir.path().join(WEIGHTS_FILE);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        // What `cp other.safetensors model.safetensors` does: the same inode, rewritten.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all(&vec![0u8; len]).unwrap();
        let after = resident.encode("tennis court near a road").unwrap();
        assert_eq!(before.text.words, after.text.words);
        assert_eq!(before.text.global, after.text.global);
    }

    #[test]
    fn a_model_without_text_weights_or_with_another_vocab_is_refused() {
        let (dir, _model, _native) = both(Config::pvig_nano());
        let other = Vocab::build(["only three words"], 1);
        other.save(&dir.path().join(VOCAB_FILE)).unwrap();
        let err = QueryModel::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("text.embed.weight") && err.contains("vocab.json has"), "{err}");
        std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
        let err = QueryModel::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors is missing"), "{err}");
    }
}
