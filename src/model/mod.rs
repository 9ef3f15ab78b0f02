//! The ACF model (Yang et al., Remote Sensing 2025): image and text encoders,
//! scoring S(I,T), the training loss, and model directories on disk.

pub mod average;
pub mod config;
pub mod features;
pub mod identity;
pub mod image_encoder;
pub mod inference;
pub mod knn;
pub mod loss;
pub mod model_dir;
pub mod native;
pub mod prior;
pub mod scoring;
pub mod text_encoder;
pub mod views;
pub mod vig;
pub mod vocab;

use tch::{Device, Kind, Tensor, nn};

pub use config::Config;
pub use features::{ImageFeatures, TextFeatures};
pub use identity::ModelIdentity;
pub use image_encoder::ImageEncoder;
pub use inference::{InferenceImageEncoder, InferenceOptions, InferencePrecision};
pub use model_dir::ModelDir;
pub use text_encoder::TextEncoder;
pub use vocab::{Encoded, Vocab};

use crate::error::Result;

/// A complete ACF model: config, vocabulary and both encoders sharing one `VarStore`.
pub struct AcfModel {
    /// Every hyperparameter, as saved in `config.json`.
    pub config: Config,
    /// Word ↔ id mapping, as saved in `vocab.json`.
    pub vocab: Vocab,
    /// The hubness prior t̄ (`prior.safetensors`), when the model directory has one.
    pub prior: Option<prior::HubnessPrior>,
    vs: nn::VarStore,
    image: ImageEncoder,
    text: TextEncoder,
}

impl AcfModel {
    /// A freshly initialised (untrained) model on `device`.
    pub fn new(config: Config, vocab: Vocab, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let image = ImageEncoder::new(&(&root / "image"), &config);
        let text = TextEncoder::new(&(&root / "text"), &config, vocab.len() as i64);
        AcfModel { config, vocab, prior: None, vs, image, text }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The weights (for optimisers, saving and loading).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Mutable weights (for loading). An inference encoder made before from these weights
    /// ([`AcfModel::inference_image_encoder`]) no longer matches them after a change.
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Number of trainable scalars.
    pub fn trainable_parameters(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    /// The image encoder.
    pub fn image_encoder(&self) -> &ImageEncoder {
        &self.image
    }

    /// The text encoder.
    pub fn text_encoder(&self) -> &TextEncoder {
        &self.text
    }

    /// Encodes 8-bit chips (B, 3, S, S), values 0..=255, into region and global features.
    /// Outside training, each chip is encoded as `image.test_time_views` views and
    /// averaged (`views::encode_views`).
    pub fn encode_pixels(&self, pixels: &Tensor, train: bool) -> ImageFeatures {
        let forward = |px: &Tensor| self.image.forward_t(&self.image.preprocess(px), train);
        if train {
            return forward(pixels);
        }
        let im = &self.config.image;
        views::encode_views(pixels, im.test_time_views, im.region_grid, forward)
    }

    /// A new inference-only image encoder (BatchNorm folded, optionally bfloat16) from the
    /// current weights; `probe` chips decide `Auto` precision (see
    /// [`InferenceImageEncoder::build`]). It averages the config's `image.test_time_views`.
    pub fn inference_image_encoder(
        &self,
        opts: &InferenceOptions,
        probe: Option<&Tensor>,
    ) -> InferenceImageEncoder {
        InferenceImageEncoder::build(&self.image, opts, probe).with_views(self.config.image.test_time_views)
    }

    /// Encodes token ids (T, m) with their lengths (T).
    pub fn encode_ids(&self, ids: &Tensor, lengths: &Tensor, train: bool) -> TextFeatures {
        self.text.forward_t(&ids.to_device(self.device()), &lengths.to_device(self.device()), train)
    }

    /// Tokenises and encodes captions (inference). Fails when a caption has no known word.
    pub fn encode_captions(&self, captions: &[&str]) -> Result<(TextFeatures, Vec<Encoded>)> {
        let max = self.config.text.max_tokens as usize;
        let encoded = captions.iter().map(|c| self.vocab.encode_known(c, max)).collect::<Result<Vec<_>>>()?;
        let (ids, lengths) = text_encoder::batch(&encoded);
        let feats = tch::no_grad(|| self.encode_ids(&ids, &lengths, false));
        Ok((feats, encoded))
    }

    /// S(I,T) for every image × caption pair, (N, T), with this model's scoring config
    /// (and its hubness prior when the config weighs it).
    pub fn score(&self, images: &ImageFeatures, texts: &TextFeatures) -> Tensor {
        let s = scoring::score_matrix(images, texts, &self.config.scoring);
        match self.prior_offsets(images, &self.config.scoring) {
            Some(offsets) => s - offsets,
            None => s,
        }
    }

    /// What the hubness prior subtracts from each image's scores under `cfg`,
    /// `hubness_prior · (v_g · t̄)` (or its caption-bank form, see `prior`) as (N, 1); `None` when the weight is 0 or the model has
    /// no prior (loading refuses a model whose own config needs one it lacks).
    pub fn prior_offsets(&self, images: &ImageFeatures, cfg: &config::ScoringConfig) -> Option<Tensor> {
        let prior = self.prior.as_ref().filter(|_| cfg.hubness_prior > 0.0)?;
        let on_images = |t: Tensor| t.to_device(images.global.device()).to_kind(images.global.kind());
        let rows = prior.bank_rows() as i64;
        let offset = if cfg.hubness_sharpness > 0.0 && rows > 0 {
            // (1/β) log mean_k exp(β · v_g · t_k), as `HubnessPrior::offset`.
            let bank = on_images(Tensor::from_slice(&prior.text_bank).view([rows, -1]));
            // Written as `prior::soft_maximum` (max + log1p of the mean of expm1, in f64),
            // which stays exact as β → 0.
            let logits = (images.global.matmul(&bank.tr()) * cfg.hubness_sharpness).to_kind(Kind::Double);
            let max = logits.amax([1], true);
            let mean = (&logits - &max).expm1().mean_dim(&[1i64][..], false, Kind::Double);
            ((max.squeeze_dim(1) + mean.log1p()) / cfg.hubness_sharpness).to_kind(images.global.kind())
        } else {
            images.global.matmul(&on_images(Tensor::from_slice(&prior.text_mean)))
        };
        Some(offset.unsqueeze(1) * cfg.hubness_prior)
    }
}
