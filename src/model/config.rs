//! `config.json`: every hyperparameter of an ACF model (architecture, scoring, loss,
//! training schedule, input normalisation, ablation switches). Nothing here is a
//! constant in code; presets only fill in a [`Config`] that is then saved with the model.
//!
//! The file is validated against `schemas/config.schema.json` on load, so a typo or a
//! missing field is reported by name instead of surfacing later as a shape error.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{AcfError, Result};

/// JSON Schema that every `config.json` must satisfy (embedded at build time).
pub const CONFIG_SCHEMA: &str = include_str!("../../schemas/config.schema.json");

/// Version of the config layout; bumped when a field changes meaning.
pub const CONFIG_FORMAT_VERSION: u32 = 1;

/// A complete model configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Layout version of this file ([`CONFIG_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Preset or user-given name, e.g. `pvig-nano`.
    pub name: String,
    /// Dimension D of region, word and global features.
    pub embed_dim: i64,
    pub image: ImageConfig,
    pub text: TextConfig,
    pub scoring: ScoringConfig,
    pub loss: LossConfig,
    pub training: TrainingConfig,
    /// Ground sample distance range (metres per pixel, `[finest, coarsest]`) of the imagery
    /// the model was trained on: `index` warns for scenes far outside it (`--gsd` resamples).
    /// `None` for a model whose training data is not described.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_gsd_m: Option<[f64; 2]>,
}

/// Pyramid ViG backbone and multi-level node fusion (Sec. 3.1.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Input side in pixels (chips are square).
    pub image_size: i64,
    /// Blocks (Grapher + FFN) per stage.
    pub blocks: Vec<i64>,
    /// Channels per stage.
    pub channels: Vec<i64>,
    /// Key average-pool ratio per stage for the dynamic graph.
    pub reduce_ratios: Vec<i64>,
    /// Neighbours of the first block; grows linearly to `knn_max` over all blocks.
    pub knn_min: i64,
    /// Neighbours of the last block.
    pub knn_max: i64,
    /// Blocks (counted over all stages) that use dilation 1; later ones use `max_dilation`.
    pub dilation_after: i64,
    /// Dilation of the later blocks.
    pub max_dilation: i64,
    /// Groups of the grouped 1×1 conv after max-relative aggregation.
    pub graph_conv_groups: i64,
    /// FFN hidden width as a multiple of the stage channels.
    pub ffn_ratio: i64,
    /// Side of the region grid (k = side², 7 → 49 regions).
    pub region_grid: i64,
    /// M2: fuse stage 2 and stage 3 into regions (Eq. 1); off = regions from stage 4 only.
    pub multi_level_fusion: bool,
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    pub mean: [f64; 3],
    /// Per-channel standard deviation divided after subtracting `mean`.
    pub std: [f64; 3],
    /// Views of each chip averaged at inference (`model::views`): 1 (the chip as it is,
    /// the default for configs without the field), 2, 4 or 8 (rotations × mirror). It
    /// changes stored features, so an index records it with its chip options.
    #[serde(default = "one_view")]
    pub test_time_views: u32,
}

/// `image.test_time_views` where a file has none (also an index's recorded count).
pub(crate) fn one_view() -> u32 {
    1
}

/// Word embeddings, BiGRU and GAT (Sec. 3.1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Word embedding size.
    pub word_dim: i64,
    /// Heads of the GAT (each `embed_dim / gat_heads` wide).
    pub gat_heads: i64,
    /// Negative slope of the GAT's LeakyReLU.
    pub gat_leaky_slope: f64,
    /// M1: the GAT over the caption's words; off = BiGRU features only.
    pub use_gat: bool,
    /// Words seen fewer times in the training captions map to `<unk>`.
    pub vocab_min_count: u32,
    /// Captions are cut to this many tokens.
    pub max_tokens: i64,
}

/// How the global similarity corrects the attention (Eq. 7–9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    /// `softmax(λ · c · s̄)` with `c = sim_g − p`.
    Logits,
    /// `softmax(λ · (1 + c) · s̄)`: the printed λ where `sim_g = p`, sharper attention above
    /// it, flatter below (it flips only below `sim_g = p − 1`). A form measured against
    /// `logits` because `logits` flattens every pair's attention (λ·c ≪ λ for `sim_g < 1`).
    Scaled,
    /// The printed form, which cancels: plain `softmax(λ · s̄)` (ablation M3).
    Off,
}

/// ACF scoring S(I, T) (Sec. 3.2, Eq. 5–14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// Softmax temperature λ (Eq. 6).
    pub lambda: f64,
    /// Correction offset p (Eq. 7).
    pub p: f64,
    /// Filtering threshold q (Eq. 10).
    pub q: f64,
    /// ε in the normalisation of s (Eq. 6).
    pub epsilon: f64,
    /// M3: attention correction.
    pub correction: Correction,
    /// M4: attention filtering.
    pub filtering: bool,
    /// M5: add `sim_g` to the local score.
    pub global_component: bool,
    /// Weight w of the global component: `S = R + w · sim_g` (the paper's w = 1, the
    /// default for configs without the field). An inference-time setting chosen by
    /// validation (`eval --sweep global_weight=…`); training uses it too.
    #[serde(default = "one")]
    pub global_weight: f64,
    /// Weight h of the hubness prior: `S' = S − h · (v_g · t̄)`, with t̄ the mean unit
    /// global vector of a set of captions (`prior.safetensors`, written by `acf-index model
    /// calibrate`). Some images sit close to what captions say in general and score high
    /// against every query ("hubs"); the prior ranks an image by how much better the query
    /// fits it than an average caption does. A constant per image, so it reorders images for
    /// a query (text → image, what `query` does) and leaves sentence retrieval as it is.
    /// 0 (the default for configs without the field) turns it off; chosen by validation
    /// (`eval --sweep hubness_prior=…`).
    #[serde(default)]
    pub hubness_prior: f64,
    /// Sharpness β of the hubness prior. 0 (the default for configs without the field)
    /// subtracts `h · (v_g · t̄)`; β > 0 subtracts `h · (1/β) log mean_k exp(β · v_g · t_k)`
    /// over the caption bank of `prior.safetensors` (the inverted softmax of Smith et al.
    /// 2017): a soft maximum over the captions near the image, so a bank drawn from caption
    /// sets that point different ways still finds each image's hubness. Chosen by validation
    /// (`eval --sweep hubness_sharpness=…`).
    #[serde(default)]
    pub hubness_sharpness: f64,
}

fn one() -> f64 {
    1.0
}

/// How in-batch negatives enter the hinge loss (Eq. 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Negatives {
    /// Hardest negative in the batch (VSE++).
    Hardest,
    /// Sum over all negatives.
    Sum,
    /// Not a hinge: InfoNCE (softmax cross-entropy over the batch, scores divided by
    /// `loss.temperature`), both directions. Every negative pulls in proportion to how
    /// close it scores, instead of only those inside the margin. Measured against the
    /// spec's hinge in the model card.
    Softmax,
}

/// Hinge triplet loss (Eq. 15).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Margin δ.
    pub margin: f64,
    pub negatives: Negatives,
    /// Add the same hinge on `sim_g` (L_g).
    pub global_loss: bool,
    /// Never treat another image's caption with the same token ids as the positive's
    /// as a negative (see `loss::excluded_pairs`). Off in configs that predate it.
    #[serde(default)]
    pub mask_duplicate_captions: bool,
    /// Never treat a caption of another image of the same scene class (same dataset,
    /// `images[].class` in its JSON) as a negative, in every dataset (`true`) or in the
    /// datasets named: captions within a class are often near-identical (see
    /// `loss::excluded_pairs`). Images without a class are unaffected. Off by default.
    #[serde(default, skip_serializing_if = "SameClassMask::is_off")]
    pub mask_same_class: SameClassMask,
    /// Weight of a class-placement term (`loss::class_pull`) beside InfoNCE: each caption
    /// (image) is pulled towards the batch's images (captions) of its own scene class as a
    /// group, over the other classes. Uses the classes `mask_same_class` keeps, so it needs
    /// that on and `negatives: "softmax"`. 0 (the default, not written) leaves it out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub class_pull: f64,
    /// Temperature τ of `negatives: "softmax"` (scores are divided by it); unused by
    /// the hinge. Default 0.1 for configs without the field.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

/// Where `loss.mask_same_class` applies: `true` / `false` (every dataset / none) or a
/// list of dataset names (the dataset JSON's `dataset` field, else its file stem).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SameClassMask {
    All(bool),
    Datasets(Vec<String>),
}

impl Default for SameClassMask {
    fn default() -> Self {
        SameClassMask::All(false)
    }
}

impl SameClassMask {
    /// True when no dataset's same-class pairs are masked.
    pub fn is_off(&self) -> bool {
        match self {
            SameClassMask::All(on) => !on,
            SameClassMask::Datasets(names) => names.is_empty(),
        }
    }

    /// Whether the dataset called `name` has its same-class pairs masked.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            SameClassMask::All(on) => *on,
            SameClassMask::Datasets(names) => names.iter().any(|n| n == name),
        }
    }
}

fn default_temperature() -> f64 {
    0.1
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Optimiser and schedule (Sec. 4.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    pub learning_rate: f64,
    /// The learning rate is multiplied by `lr_decay` every `lr_decay_every` epochs.
    pub lr_decay_every: i64,
    pub lr_decay: f64,
    pub epochs: i64,
    pub batch_size: i64,
    /// Gradient-norm clip (0 = none).
    pub grad_clip: f64,
    /// Adam's β1 and β2.
    pub adam_betas: [f64; 2],
    /// Adam's ε.
    pub adam_eps: f64,
    /// Epochs at the start that use summed negatives before `loss.negatives` applies
    /// (hardest negatives from a random start tend to collapse, VSE++ Sec. 4).
    pub warmup_sum_epochs: i64,
    pub seed: u64,
    /// What one epoch visits: one random caption per image, or every caption.
    #[serde(default)]
    pub captions_per_epoch: CaptionsPerEpoch,
    /// How the learning rate changes over the run.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Final learning rate of the cosine schedule.
    #[serde(default)]
    pub lr_min: f64,
    /// Probability that a training caption's word becomes `<unk>` (word dropout), so the
    /// `<unk>` embedding is trained into a neutral token instead of staying random.
    #[serde(default)]
    pub word_dropout: f64,
    /// How an epoch shares its draws between datasets of sizes n_d: in proportion to
    /// n_d^exponent. 1 = as loaded (a big dataset dominates), 0 = equal shares, between =
    /// temperature sampling; a small dataset's images then repeat within an epoch.
    #[serde(default = "default_dataset_sampling_exponent")]
    pub dataset_sampling_exponent: f64,
    /// Decoupled weight decay (AdamW): each step multiplies every weight matrix and
    /// embedding (tensors of two or more dimensions; not biases or norm scales) by
    /// `1 − lr · weight_decay`. 0 = plain Adam, as configs without the field trained.
    #[serde(default)]
    pub weight_decay: f64,
    /// Stochastic depth: while training, each graph and FFN block's residual branch is
    /// skipped for a sample with this probability (kept branches scaled by 1/(1 − rate)),
    /// as Vision GNN trains its backbones. Inference never drops; 0 = off, as configs
    /// without the field trained.
    #[serde(default)]
    pub drop_path: f64,
    /// Pixel augmentation of training images.
    #[serde(default)]
    pub augment: AugmentConfig,
}

/// How a training image is perturbed before encoding (evaluation never augments).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Smallest random square crop, as a fraction of the image's shorter side (1 = no crop).
    #[serde(default = "default_crop_min")]
    pub crop_min: f64,
    /// Colour jitter strength j: brightness, contrast and saturation each scaled by a
    /// random factor in [1 − j, 1 + j]. 0 = none.
    #[serde(default)]
    pub color_jitter: f64,
}

impl Default for AugmentConfig {
    /// The augmentation every model before the field trained with: crops of 80–100 %,
    /// no colour jitter.
    fn default() -> Self {
        AugmentConfig { crop_min: default_crop_min(), color_jitter: 0.0 }
    }
}

fn default_crop_min() -> f64 {
    0.8
}

fn default_dataset_sampling_exponent() -> f64 {
    1.0
}

/// What one training epoch visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionsPerEpoch {
    /// One random caption per image (an epoch = one pass over the images).
    #[default]
    One,
    /// Every (image, caption) pair once (an epoch = one pass over the captions).
    All,
}

/// The learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// `learning_rate · lr_decay^(epoch / lr_decay_every)` (Sec. 4.2).
    #[default]
    Step,
    /// Half a cosine from `learning_rate` to `lr_min` over all steps of the run.
    Cosine,
}

impl TrainingConfig {
    /// The learning rate at `step` of `total_steps` (the step schedule needs only the epoch).
    pub fn learning_rate_at(&self, epoch: i64, step: i64, total_steps: i64) -> f64 {
        match self.lr_schedule {
            LrSchedule::Step => {
                self.learning_rate * self.lr_decay.powi((epoch / self.lr_decay_every.max(1)) as i32)
            }
            LrSchedule::Cosine => {
                let t = (step as f64 / total_steps.max(1) as f64).clamp(0.0, 1.0);
                self.lr_min
                    + 0.5 * (self.learning_rate - self.lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

impl Config {
    /// Names accepted by [`Config::preset`].
    pub const PRESETS: [&'static str; 2] = ["pvig-ti", "pvig-nano"];

    /// The paper's configuration: Pyramid ViG-Ti, blocks [2,2,6,2], channels [48,96,240,384].
    pub fn pvig_ti() -> Self {
        Self::with_backbone("pvig-ti", vec![2, 2, 6, 2], vec![48, 96, 240, 384])
    }

    /// Same structure as `pvig-ti`, about 2 M backbone parameters, trainable on a CPU.
    /// Batch 64 instead of the paper's 150: scoring a batch costs B², and on a 2-core
    /// CPU batch 150 spends more time scoring than encoding.
    pub fn pvig_nano() -> Self {
        let mut cfg = Self::with_backbone("pvig-nano", vec![1, 1, 2, 1], vec![32, 64, 128, 256]);
        cfg.training.batch_size = 64;
        cfg
    }

    fn with_backbone(name: &str, blocks: Vec<i64>, channels: Vec<i64>) -> Self {
        Config {
            format_version: CONFIG_FORMAT_VERSION,
            name: name.to_string(),
            embed_dim: 512,
            image: ImageConfig {
                image_size: 224,
                blocks,
                channels,
                reduce_ratios: vec![4, 2, 1, 1],
                knn_min: 9,
                knn_max: 18,
                dilation_after: 4,
                max_dilation: 2,
                graph_conv_groups: 4,
                ffn_ratio: 4,
                region_grid: 7,
                multi_level_fusion: true,
                mean: [0.5, 0.5, 0.5],
                std: [0.5, 0.5, 0.5],
                test_time_views: 1,
            },
            text: TextConfig {
                word_dim: 300,
                gat_heads: 8,
                gat_leaky_slope: 0.2,
                use_gat: true,
                vocab_min_count: 1,
                max_tokens: 32,
            },
            scoring: ScoringConfig {
                lambda: 9.0,
                p: 0.3,
                q: 0.1,
                epsilon: 1e-8,
                correction: Correction::Logits,
                filtering: true,
                global_component: true,
                global_weight: 1.0,
                hubness_prior: 0.0,
                hubness_sharpness: 0.0,
            },
            loss: LossConfig {
                margin: 0.2,
                negatives: Negatives::Hardest,
                global_loss: true,
                mask_duplicate_captions: true,
                mask_same_class: SameClassMask::All(false),
                class_pull: 0.0,
                temperature: default_temperature(),
            },
            training: TrainingConfig {
                learning_rate: 1e-3,
                lr_decay_every: 20,
                lr_decay: 0.5,
                epochs: 60,
                batch_size: 150,
                grad_clip: 2.0,
                adam_betas: [0.9, 0.999],
                adam_eps: 1e-8,
                warmup_sum_epochs: 1,
                seed: 42,
                captions_per_epoch: CaptionsPerEpoch::One,
                lr_schedule: LrSchedule::Step,
                lr_min: 0.0,
                word_dropout: 0.0,
                dataset_sampling_exponent: 1.0,
                weight_decay: 0.0,
                drop_path: 0.0,
                augment: AugmentConfig::default(),
            },
            training_gsd_m: None,
        }
    }

    /// A named preset (`pvig-ti`, `pvig-nano`).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "pvig-ti" => Ok(Self::pvig_ti()),
            "pvig-nano" => Ok(Self::pvig_nano()),
            other => {
                Err(AcfError::UnknownPreset { name: other.to_string(), known: Self::PRESETS.join(", ") })
            }
        }
    }

    /// A preset name, or else a path to a `config.json`.
    pub fn preset_or_file(name_or_path: &str) -> Result<Self> {
        if Self::PRESETS.contains(&name_or_path) {
            return Self::preset(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.exists() || name_or_path.contains('/') || name_or_path.ends_with(".json") {
            return Self::load(path);
        }
        Self::preset(name_or_path)
    }

    /// Reads, schema-validates and checks a `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AcfError::io(path, "cannot read config", source))?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates config text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| AcfError::Config {
            path: origin.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        validate_against_schema(&value, origin)?;
        let config: Config = serde_json::from_value(value)
            .map_err(|e| AcfError::Config { path: origin.to_path_buf(), reason: e.to_string() })?;
        config.check().map_err(|reason| AcfError::Config { path: origin.to_path_buf(), reason })?;
        Ok(config)
    }

    /// Pretty JSON as written to a model directory.
    pub fn to_json_string(&self) -> String {
        // Serialising plain structs of numbers, strings and bools cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Cross-field rules the schema cannot express.
    fn check(&self) -> std::result::Result<(), String> {
        let im = &self.image;
        if self.format_version != CONFIG_FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (this acf-index reads {})",
                self.format_version, CONFIG_FORMAT_VERSION
            ));
        }
        if im.blocks.len() != 4 || im.channels.len() != 4 || im.reduce_ratios.len() != 4 {
            return Err("image.blocks, image.channels and image.reduce_ratios need 4 stages".into());
        }
        if im.image_size % 32 != 0 {
            return Err(format!("image.image_size {} is not a multiple of 32", im.image_size));
        }
        let top = im.image_size / 32;
        if top % im.region_grid != 0 && im.region_grid > top {
            return Err(format!("image.region_grid {} exceeds the top-stage grid {top}", im.region_grid));
        }
        for (stage, (&c, &r)) in im.channels.iter().zip(&im.reduce_ratios).enumerate() {
            if c % im.graph_conv_groups != 0 {
                return Err(format!(
                    "image.channels[{stage}] = {c} is not divisible by graph_conv_groups {}",
                    im.graph_conv_groups
                ));
            }
            let side = im.image_size / (4 << stage);
            if r < 1 || side % r != 0 {
                return Err(format!(
                    "image.reduce_ratios[{stage}] = {r} does not divide the {side}×{side} grid"
                ));
            }
            let keys = (side / r) * (side / r);
            if im.knn_max * im.max_dilation > keys {
                return Err(format!(
                    "stage {stage} has {keys} graph keys, fewer than knn_max × max_dilation = {}",
                    im.knn_max * im.max_dilation
                ));
            }
        }
        if self.embed_dim % self.text.gat_heads != 0 {
            return Err(format!(
                "embed_dim {} is not divisible by text.gat_heads {}",
                self.embed_dim, self.text.gat_heads
            ));
        }
        let loss = &self.loss;
        if loss.class_pull != 0.0 && (loss.mask_same_class.is_off() || loss.negatives != Negatives::Softmax) {
            return Err(format!(
                "loss.class_pull {} needs loss.mask_same_class on (it names the classes) and \
                 loss.negatives \"softmax\"",
                loss.class_pull
            ));
        }
        Ok(())
    }

    /// Number of regions k (49 for a 7×7 grid).
    pub fn regions(&self) -> i64 {
        self.image.region_grid * self.image.region_grid
    }

    /// Total number of Grapher+FFN blocks.
    pub fn total_blocks(&self) -> i64 {
        self.image.blocks.iter().sum()
    }
}

fn validate_against_schema(value: &serde_json::Value, origin: &Path) -> Result<()> {
    let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).map_err(|e| AcfError::Config {
        path: origin.to_path_buf(),
        reason: format!("built-in schema is not valid JSON: {e}"),
    })?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| AcfError::Config {
        path: origin.to_path_buf(),
        reason: format!("built-in schema is invalid: {e}"),
    })?;
    let problems: Vec<String> = validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AcfError::Config { path: origin.to_path_buf(), reason: problems.join("; ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_pass_schema_and_checks() {
        for name in Config::PRESETS {
            let cfg = Config::preset(name).unwrap();
            let back = Config::from_json_str(&cfg.to_json_string(), Path::new("preset")).unwrap();
            assert_eq!(back, cfg);
        }
    }

    #[test]
    fn schema_errors_name_the_field() {
        let mut v: serde_json::Value = serde_json::from_str(&Config::pvig_nano().to_json_string()).unwrap();
        v["scoring"]["correction"] = "sideways".into();
        let err = Config::from_json_str(&v.to_string(), Path::new("x/config.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/scoring/correction"), "{msg}");
        assert!(msg.contains("x/config.json"), "{msg}");

        let mut v: serde_json::Value = serde_json::from_str(&Config::pvig_nano().to_json_string()).unwrap();
        v["text"].as_object_mut().unwrap().remove("word_dim");
        let msg = Config::from_json_str(&v.to_string(), Path::new("c.json")).unwrap_err().to_string();
        assert!(msg.contains("word_dim"), "{msg}");
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let mut cfg = Config::pvig_nano();
        cfg.embed_dim = 500; // not divisible by 8 heads
        let msg = Config::from_json_str(&cfg.to_json_string(), Path::new("c.json")).unwrap_err().to_string();
        assert!(msg.contains("gat_heads"), "{msg}");
    }

    #[test]
    fn class_pull_needs_the_class_mask_and_softmax_negatives() {
        let with = |loss: serde_json::Value| {
            let mut v: serde_json::Value =
                serde_json::from_str(&Config::pvig_nano().to_json_string()).unwrap();
            for (key, value) in loss.as_object().unwrap() {
                v["loss"][key] = value.clone();
            }
            Config::from_json_str(&v.to_string(), Path::new("c.json"))
        };
        let ok = with(serde_json::json!({"class_pull": 0.5, "mask_same_class": ["ucm-captions"], "negatives": "softmax"}))
            .unwrap();
        assert_eq!(ok.loss.class_pull, 0.5);
        assert!(ok.to_json_string().contains("class_pull"));
        assert!(!Config::pvig_nano().to_json_string().contains("class_pull"));
        for bad in [
            serde_json::json!({"class_pull": 0.5, "negatives": "softmax"}),
            serde_json::json!({"class_pull": 0.5, "mask_same_class": true}),
            serde_json::json!({"class_pull": -1.0, "mask_same_class": true, "negatives": "softmax"}),
        ] {
            let msg = with(bad.clone()).unwrap_err().to_string();
            assert!(msg.contains("class_pull"), "{bad}: {msg}");
        }
    }

    #[test]
    fn mask_same_class_is_a_switch_or_a_list_of_datasets() {
        let with = |value: serde_json::Value| {
            let mut v: serde_json::Value =
                serde_json::from_str(&Config::pvig_nano().to_json_string()).unwrap();
            v["loss"]["mask_same_class"] = value;
            Config::from_json_str(&v.to_string(), Path::new("c.json"))
        };
        let all = with(serde_json::json!(true)).unwrap().loss.mask_same_class;
        assert!(all.covers("ucm-captions") && all.covers("anything") && !all.is_off());
        let some = with(serde_json::json!(["ucm-captions"])).unwrap().loss.mask_same_class;
        assert!(some.covers("ucm-captions") && !some.covers("rsicd-aid") && !some.is_off());
        // Round trip: the list is written back as a list; off is not written at all.
        let cfg = with(serde_json::json!(["ucm-captions"])).unwrap();
        assert_eq!(Config::from_json_str(&cfg.to_json_string(), Path::new("c.json")).unwrap(), cfg);
        assert!(!Config::pvig_nano().to_json_string().contains("mask_same_class"));
        for bad in [serde_json::json!([]), serde_json::json!("ucm-captions"), serde_json::json!([""])] {
            let msg = with(bad.clone()).unwrap_err().to_string();
            assert!(msg.contains("mask_same_class"), "{bad}: {msg}");
        }
    }

    #[test]
    fn unknown_preset_lists_known_ones() {
        let msg = Config::preset("pvig-huge").unwrap_err().to_string();
        assert!(msg.contains("pvig-huge") && msg.contains("pvig-nano"), "{msg}");
    }
}
