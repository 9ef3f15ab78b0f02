//! The training loop (Sec. 4.2): AdamW with the config's schedule (step or cosine) and
//! loss (hinge triplet or InfoNCE), validation mR after each epoch, the best model kept
//! (optionally every epoch's), and checkpoints (weights, optimiser state, position) that
//! `--resume` continues from exactly, also after a kill.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::adam::Adam;
use super::evaluate::{EvalSet, evaluate};
use super::loader::{Batch, BatchOptions, TrainImage, epoch_plan, load_split, make_batch};
use super::metrics::Recall;
use crate::data::dataset::Dataset;
use crate::error::{AcfError, Result};
use crate::model::config::{Negatives, SameClassMask};
use crate::model::model_dir::{self, ModelDir, safetensors_to_tensors, tensors_to_safetensors, write_atomic};
use crate::model::{AcfModel, Config, Vocab, loss, scoring};
use crate::storage::WriterLock;

/// Everything `acf-index train` needs.
pub struct TrainOptions {
    pub datasets: Vec<PathBuf>,
    pub images_dir: Option<PathBuf>,
    /// Config with command-line overrides applied (ignored on resume: the checkpoint's wins).
    pub config: Config,
    pub out: PathBuf,
    pub resume: bool,
    pub skip_bad: bool,
    pub device: Device,
    /// Validation images per dataset (the first N of each val split); None = all.
    pub val_images: Option<usize>,
    /// Minutes between mid-epoch checkpoints.
    pub checkpoint_minutes: f64,
    /// Stop after this many epochs in this run (the schedule still follows `config`).
    pub stop_after_epochs: Option<i64>,
    /// Start a new run from this trained model's weights and vocabulary (a fresh
    /// optimiser and schedule from `config`, whose architecture must match the model's).
    pub init_from: Option<PathBuf>,
    /// Also save each epoch's model as `out/epochs/epoch-NNN/`, so that a model can be
    /// chosen afterwards by a rule other than the trainer's (e.g. on all val images with
    /// `eval`, or requiring every dataset to gain).
    pub keep_epochs: bool,
}

/// Where training stands; saved as `checkpoint/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epoch in progress (0-based).
    pub epoch: i64,
    /// Next batch of that epoch.
    pub next_batch: usize,
    pub step: i64,
    pub best_val_mr: f64,
    pub best_epoch: i64,
    /// Training seconds so far, over all runs.
    pub elapsed_s: f64,
    pub images_seen: u64,
    pub datasets: Vec<String>,
}

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub state: TrainState,
    pub last_val: Option<Recall>,
    pub interrupted: bool,
    pub skipped: Vec<String>,
}

const CHECKPOINT: &str = "checkpoint";
const METRICS: &str = "metrics.jsonl";
const EPOCHS: &str = "epochs";

/// Trains (or resumes) a model into `opts.out`. Setting `interrupt` makes the loop
/// save a checkpoint at the next batch boundary and return.
pub fn train(opts: &TrainOptions, interrupt: Arc<AtomicBool>) -> Result<TrainSummary> {
    let datasets: Vec<Dataset> =
        opts.datasets.iter().map(|p| Dataset::load(p, opts.images_dir.as_deref())).collect::<Result<_>>()?;
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| AcfError::io(&opts.out, "cannot create output directory", e))?;
    // Held to the end of the run; the kernel releases it when the process dies.
    let _lock = WriterLock::acquire_training(&opts.out)?;
    let ckpt_dir = opts.out.join(CHECKPOINT);
    let (model, mut adam, mut state) = if opts.resume {
        resume_from(&ckpt_dir, opts.device)?
    } else {
        if ckpt_dir.exists() {
            return Err(AcfError::InvalidArgument(format!(
                "{} already holds a checkpoint: pass --resume to continue it, or choose another --out",
                opts.out.display()
            )));
        }
        let epochs_dir = opts.out.join(EPOCHS);
        if opts.keep_epochs && std::fs::read_dir(&epochs_dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(AcfError::InvalidArgument(format!(
                "{} holds epoch models of an earlier run: remove it or choose another --out",
                epochs_dir.display()
            )));
        }
        let config = without_prior(&opts.config);
        tch::manual_seed(config.training.seed as i64);
        let model = match &opts.init_from {
            Some(dir) => warm_start(dir, &config, opts.device)?,
            None => {
                let captions = datasets.iter().flat_map(|d| d.split("train")).flat_map(|s| s.captions.iter());
                let vocab = Vocab::build(captions.map(String::as_str), config.text.vocab_min_count);
                AcfModel::new(config.clone(), vocab, opts.device)
            }
        };
        let adam = Adam::new(model.var_store(), &model.config.training);
        let state =
            TrainState { datasets: datasets.iter().map(|d| d.name.clone()).collect(), ..Default::default() };
        (model, adam, state)
    };
    let cfg = model.config.clone();
    if let SameClassMask::Datasets(names) = &cfg.loss.mask_same_class {
        let known: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
        if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(AcfError::InvalidArgument(format!(
                "loss.mask_same_class names dataset '{unknown}', which is not one of the training datasets ({})",
                known.join(", ")
            )));
        }
    }
    let tc = &cfg.training;
    let max_tokens = cfg.text.max_tokens as usize;
    let size = cfg.image.image_size as u32;
    tracing::info!("decoding training images");
    let (mut train_images, train_skips) =
        load_split(&datasets, "train", &model.vocab, max_tokens, opts.skip_bad)?;
    let mut val_sets = Vec::new();
    let mut skipped = train_skips.skipped;
    for d in &datasets {
        let (imgs, skips) =
            load_split(std::slice::from_ref(d), "val", &model.vocab, max_tokens, opts.skip_bad)?;
        skipped.extend(skips.skipped);
        val_sets.push((d.name.clone(), EvalSet::new(&imgs, size, opts.val_images)));
    }
    let same_class = &cfg.loss.mask_same_class;
    for img in train_images.iter_mut().filter(|img| !same_class.covers(&datasets[img.dataset].name)) {
        img.class = None;
    }
    if !same_class.is_off() && train_images.iter().all(|img| img.class.is_none()) {
        tracing::warn!(
            "loss.mask_same_class is on but no training image's dataset entry names a class \
             (images[].class): it changes nothing"
        );
    }
    tracing::info!(
        train_images = train_images.len(),
        parameters = model.trainable_parameters(),
        "training {} from epoch {} batch {}",
        cfg.name,
        state.epoch + 1,
        state.next_batch
    );
    let mut metrics = MetricsLog::open(&opts.out.join(METRICS), state.step, state.epoch)?;
    let batch_size = tc.batch_size as usize;
    let pairs_per_epoch =
        epoch_plan(&train_images, tc.seed, 0, tc.captions_per_epoch, tc.dataset_sampling_exponent).len();
    let batches = pairs_per_epoch.div_ceil(batch_size);
    let total_steps = batches as i64 * tc.epochs;
    let mut last_val = None;
    let run_start_epoch = state.epoch;
    let mut last_ckpt = Instant::now();
    while state.epoch < tc.epochs {
        if opts.stop_after_epochs.is_some_and(|n| state.epoch - run_start_epoch >= n) {
            break;
        }
        let epoch = state.epoch;
        let mut lr =
            tc.learning_rate_at(epoch, epoch * batches as i64 + state.next_batch as i64, total_steps);
        let mut loss_cfg = cfg.loss.clone();
        if epoch < tc.warmup_sum_epochs {
            loss_cfg.negatives = Negatives::Sum;
        }
        let plan =
            epoch_plan(&train_images, tc.seed, epoch, tc.captions_per_epoch, tc.dataset_sampling_exponent);
        let batch_opts = BatchOptions {
            batch_size,
            size,
            seed: tc.seed,
            epoch,
            word_dropout: tc.word_dropout,
            augment: tc.augment,
        };
        let bar = progress_bar(batches as u64, epoch, tc.epochs);
        bar.set_position(state.next_batch as u64);
        let epoch_start = Instant::now();
        let mut epoch_images = 0usize;
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Batch)>(2);
        let first = state.next_batch;
        let images_ref: &[TrainImage] = &train_images;
        let mut interrupted = false;
        std::thread::scope(|scope| -> Result<()> {
            scope.spawn(|| {
                for b in first..batches {
                    let batch = make_batch(images_ref, &plan, b, batch_opts);
                    if tx.send((b, batch)).is_err() {
                        break;
                    }
                }
                drop(tx);
            });
            for (b, batch) in rx.iter() {
                if batch.image_ids.len() < 2 {
                    state.next_batch = b + 1;
                    continue; // a one-image tail batch has no negatives
                }
                lr = tc.learning_rate_at(epoch, epoch * batches as i64 + b as i64, total_steps);
                let t0 = Instant::now();
                let (loss_value, grad_norm) =
                    train_step(&model, &mut adam, &batch, &loss_cfg, lr, size as i64);
                let dt = t0.elapsed().as_secs_f64();
                state.step += 1;
                state.next_batch = b + 1;
                state.images_seen += batch.image_ids.len() as u64;
                state.elapsed_s += dt;
                epoch_images += batch.image_ids.len();
                let ips = epoch_images as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("loss {loss_value:.3} · {ips:.1} img/s"));
                bar.inc(1);
                metrics.write(&serde_json::json!({
                    "kind": "batch", "epoch": epoch + 1, "batch": b + 1, "step": state.step,
                    "loss": loss_value, "lr": lr, "images_per_s": ips,
                    "grad_norm": grad_norm, "clipped": tc.grad_clip > 0.0 && grad_norm > tc.grad_clip,
                }))?;
                if interrupt.load(Ordering::SeqCst) {
                    interrupted = true;
                    break;
                }
                if last_ckpt.elapsed().as_secs_f64() > opts.checkpoint_minutes * 60.0
                    && state.next_batch < batches
                {
                    save_checkpoint(&opts.out, &model, &adam, &state)?;
                    last_ckpt = Instant::now();
                }
            }
            drop(rx);
            Ok(())
        })?;
        bar.finish_and_clear();
        if interrupted {
            save_checkpoint(&opts.out, &model, &adam, &state)?;
            tracing::warn!("interrupted: checkpoint saved at epoch {} batch {}", epoch + 1, state.next_batch);
            return Ok(TrainSummary { state, last_val, interrupted: true, skipped });
        }
        // Validation mR (mean over datasets), best model kept.
        let mut per_dataset = Vec::new();
        for (name, set) in &val_sets {
            let r = evaluate(&model, set);
            per_dataset.push((name.clone(), r));
        }
        let mean_mr = per_dataset.iter().map(|(_, r)| r.mr).sum::<f64>() / per_dataset.len().max(1) as f64;
        tracing::info!(
            "epoch {}/{}: val mR {:.2} ({}), {:.1} img/s",
            epoch + 1,
            tc.epochs,
            mean_mr,
            per_dataset.iter().map(|(n, r)| format!("{n} {:.2}", r.mr)).collect::<Vec<_>>().join(", "),
            epoch_images as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9)
        );
        metrics.write(&serde_json::json!({
            "kind": "epoch", "epoch": epoch + 1, "val_mr": mean_mr, "lr": lr,
            "val": per_dataset.iter().map(|(n, r)| serde_json::json!({"dataset": n, "recall": r})).collect::<Vec<_>>(),
            "elapsed_s": state.elapsed_s,
        }))?;
        last_val = per_dataset.first().map(|(_, r)| *r);
        state.epoch += 1;
        state.next_batch = 0;
        let is_best = mean_mr > state.best_val_mr || state.best_epoch == 0;
        if is_best {
            state.best_val_mr = mean_mr;
            state.best_epoch = epoch + 1;
        }
        let card = training_card(&model, &state, epoch + 1, &per_dataset, train_images.len());
        if opts.keep_epochs {
            let dir = save_epoch_model(&opts.out, epoch + 1, &model, &card)?;
            tracing::info!("epoch {} model saved to {}", epoch + 1, dir.display());
        }
        if is_best {
            model_dir::save(&model, &opts.out, &card)?;
            tracing::info!("best model so far saved to {}", opts.out.display());
        }
        save_checkpoint(&opts.out, &model, &adam, &state)?;
        last_ckpt = Instant::now();
    }
    Ok(TrainSummary { state, last_val, interrupted: false, skipped })
}

/// One optimiser step on a batch; returns the loss and the gradient norm before clipping.
pub fn train_step(
    model: &AcfModel,
    adam: &mut Adam,
    batch: &Batch,
    loss_cfg: &crate::model::config::LossConfig,
    lr: f64,
    size: i64,
) -> (f64, f64) {
    let n = batch.image_ids.len() as i64;
    let device = model.device();
    let pixels = Tensor::from_slice(&batch.pixels).reshape([n, 3, size, size]).to_device(device);
    let (ids, lengths) = crate::model::text_encoder::batch_ids(batch.captions.iter().map(Vec::as_slice));
    let images = model.encode_pixels(&pixels, true);
    let texts = model.encode_ids(&ids, &lengths, true);
    let s = scoring::score_matrix(&images, &texts, &model.config.scoring);
    let g = scoring::global_similarity(&images, &texts);
    let image_ids = Tensor::from_slice(&batch.image_ids).to_device(device);
    let groups = Tensor::from_slice(&batch.caption_groups);
    let classes = Tensor::from_slice(&batch.class_groups);
    let not_negative = loss::excluded_pairs(
        &image_ids,
        loss_cfg.mask_duplicate_captions.then_some(&groups),
        (!loss_cfg.mask_same_class.is_off()).then_some(&classes),
    );
    let same_class = (loss_cfg.class_pull > 0.0).then(|| loss::equal_key_pairs(&classes));
    let loss = loss::acf_loss(&s, &g, &not_negative, same_class.as_ref(), loss_cfg);
    adam.zero_grad();
    loss.backward();
    let grad_norm = adam.step(lr);
    (loss.double_value(&[]), grad_norm)
}

fn progress_bar(len: u64, epoch: i64, epochs: i64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches · {msg} · ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar
}

/// Saves one epoch's model as `out/epochs/epoch-NNN/` (built beside it, then renamed in,
/// so a reader never sees half a model; a run resumed after a kill replaces it).
fn save_epoch_model(out: &Path, epoch: i64, model: &AcfModel, card: &str) -> Result<PathBuf> {
    let dir = out.join(EPOCHS).join(format!("epoch-{epoch:03}"));
    build_and_publish(&dir, |tmp| model_dir::save(model, tmp, card).map(|_| ()))?;
    Ok(dir)
}

/// Builds a directory as `dst.tmp` with `build`, then swaps it in as `dst` (`publish_dir`).
/// A build that fails (a full disk) removes its half-written `dst.tmp`, giving the space
/// back; a killed run's is removed before the next build.
fn build_and_publish(dst: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = dst.with_extension("tmp");
    remove_stale_dir(&tmp)?;
    if let Err(e) = build(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    publish_dir(&tmp, dst)
}

/// Removes a directory a killed run may have left half-written.
fn remove_stale_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| AcfError::io(dir, "cannot remove stale directory", e))?;
    }
    Ok(())
}

/// Swaps the finished directory `tmp` in as `dst`: an existing `dst` is moved aside to
/// `dst.old` first and removed last, so a kill at any point leaves the old or the new one.
fn publish_dir(tmp: &Path, dst: &Path) -> Result<()> {
    let old = dst.with_extension("old");
    if dst.exists() {
        remove_stale_dir(&old)?;
    }
    crate::files::swap_dir_in(tmp, dst, &old)?;
    remove_stale_dir(&old)
}

/// Writes `out/checkpoint` atomically: build `checkpoint.tmp`, then swap it in.
fn save_checkpoint(out: &Path, model: &AcfModel, adam: &Adam, state: &TrainState) -> Result<()> {
    let dst = out.join(CHECKPOINT);
    build_and_publish(&dst, |tmp| {
        model_dir::save(
            model,
            tmp,
            "# Training checkpoint\n\nNot a released model: see the parent directory.\n",
        )?;
        let mut tensors = std::collections::BTreeMap::new();
        for (k, t) in &adam.m {
            tensors.insert(format!("m.{k}"), t.shallow_clone());
        }
        for (k, t) in &adam.v {
            tensors.insert(format!("v.{k}"), t.shallow_clone());
        }
        let bytes = tensors_to_safetensors(&tensors, &[("adam_step", adam.step.to_string())])?;
        write_atomic(&tmp.join("optimizer.safetensors"), &bytes)?;
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| AcfError::Serialize { what: "training state".into(), reason: e.to_string() })?;
        write_atomic(&tmp.join("state.json"), &json)
    })
    .inspect_err(|_| {
        if dst.exists() {
            tracing::error!(
                "the last complete checkpoint in {} is intact: fix the cause and rerun with --resume",
                dst.display()
            );
        }
    })
}

/// `config` with the hubness prior off: a prior belongs to the weights it was computed with
/// (`model::prior`), which training replaces, so checkpoints and the trained model must not
/// ask for one. Said once when the config had it on.
fn without_prior(config: &Config) -> Config {
    let mut config = config.clone();
    crate::model::prior::drop_weight(&mut config, "training");
    config
}

/// A trained model with `config`'s training, loss and scoring settings, for a new run
/// that starts from its weights. The architecture (image, text, embedding size) must
/// be the model's own: the weights would not fit another.
fn warm_start(dir: &Path, config: &Config, device: Device) -> Result<AcfModel> {
    // Without its prior: that belongs to the weights this run is about to change.
    let mut model = ModelDir::load_without_prior(dir, device)?.model;
    let same = model.config.image == config.image
        && model.config.embed_dim == config.embed_dim
        && model.config.text.word_dim == config.text.word_dim
        && model.config.text.gat_heads == config.text.gat_heads
        && model.config.text.use_gat == config.text.use_gat;
    if !same {
        return Err(AcfError::ModelMismatch {
            path: dir.to_path_buf(),
            reason: format!(
                "--init-from: the model's architecture ({}) differs from the training config's ({})",
                model.config.name, config.name
            ),
        });
    }
    model.config = config.clone();
    Ok(model)
}

/// Loads model, optimiser and state from a checkpoint (or the `.old` one left by a
/// kill in the middle of a swap).
fn resume_from(dir: &Path, device: Device) -> Result<(AcfModel, Adam, TrainState)> {
    // `publish_dir` moves the previous checkpoint aside to this name during a swap.
    let dir = if dir.exists() { dir.to_path_buf() } else { dir.with_extension("old") };
    if !dir.exists() {
        return Err(AcfError::InvalidArgument(format!(
            "--resume: no checkpoint in {}",
            dir.parent().unwrap_or(Path::new(".")).display()
        )));
    }
    let loaded = ModelDir::load(&dir, device)?;
    let model = loaded.model;
    let mut adam = Adam::new(model.var_store(), &model.config.training);
    let opt_path = dir.join("optimizer.safetensors");
    let bytes =
        std::fs::read(&opt_path).map_err(|e| AcfError::io(&opt_path, "cannot read optimiser state", e))?;
    let tensors = safetensors_to_tensors(&bytes, &opt_path)?;
    for (prefix, map) in [("m.", &mut adam.m), ("v.", &mut adam.v)] {
        for (name, t) in map.iter_mut() {
            let saved = tensors.get(&format!("{prefix}{name}")).ok_or_else(|| AcfError::ModelMismatch {
                path: opt_path.clone(),
                reason: format!("optimiser state lacks '{prefix}{name}'"),
            })?;
            *t = saved.to_device(device);
        }
    }
    let state_path = dir.join("state.json");
    let text =
        std::fs::read_to_string(&state_path).map_err(|e| AcfError::io(&state_path, "cannot read", e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| AcfError::Dataset {
        path: state_path.clone(),
        reason: format!("invalid training state: {e}"),
    })?;
    adam.step = state.step;
    Ok((model, adam, state))
}

/// The card written beside a trained model's weights. `weights_epoch` is the epoch these
/// weights come from: an epoch model (`--keep-epochs`) need not be the run's best so far, so
/// the card names both.
fn training_card(
    model: &AcfModel,
    state: &TrainState,
    weights_epoch: i64,
    val: &[(String, Recall)],
    train_images: usize,
) -> String {
    let val_lines: Vec<String> = val.iter().map(|(n, r)| format!("| {n} (val) | {:.2} |", r.mr)).collect();
    format!(
        "# Model card: {name}\n\n\
         Trained by `acf-index train` (acf-index {version}).\n\n\
         - Config: `{name}` (config.json), {params} trainable parameters\n\
         - Data: train splits of {datasets} ({train_images} images)\n\
         - Weights of epoch {weights_epoch} of {epochs} configured (the run's best so far by mean validation mR: epoch {best}); \
         {seen} training images seen; {hours:.2} h of training compute\n\
         - Weights fingerprint (sha256 of model.safetensors): `{{fingerprint}}`\n\n\
         | split | mR |\n|---|---|\n{val_table}\n",
        name = model.config.name,
        version = env!("CARGO_PKG_VERSION"),
        params = model.trainable_parameters(),
        datasets = state.datasets.join(", "),
        best = state.best_epoch,
        epochs = model.config.training.epochs,
        seen = state.images_seen,
        hours = state.elapsed_s / 3600.0,
        val_table = val_lines.join("\n"),
    )
}

/// Append-only JSON-lines log, flushed per line so a kill loses nothing written.
struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens the log for a run that stands at `steps_done` steps and `epochs_done` epochs
    /// (its checkpoint's). Lines from beyond that point (written after the last checkpoint
    /// by a run that was then killed, or a torn last line) are dropped first, so that the
    /// resumed run's repeat of those steps appears once in the log.
    fn open(path: &Path, steps_done: i64, epochs_done: i64) -> Result<MetricsLog> {
        if path.exists() {
            Self::truncate_to(path, steps_done, epochs_done)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| AcfError::io(path, "cannot open metrics log", e))?;
        Ok(MetricsLog { file, path: path.to_path_buf() })
    }

    fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}").map_err(|e| AcfError::io(&self.path, "cannot write metrics", e))
    }

    /// Rewrites the log (atomically) without the lines that lie past `steps_done` /
    /// `epochs_done`.
    fn truncate_to(path: &Path, steps_done: i64, epochs_done: i64) -> Result<()> {
        let text =
            std::fs::read_to_string(path).map_err(|e| AcfError::io(path, "cannot read metrics log", e))?;
        let keep = |line: &str| match serde_json::from_str::<serde_json::Value>(line) {
            Err(_) => false,
            Ok(v) => match v["kind"].as_str() {
                Some("batch") => v["step"].as_i64().is_some_and(|s| s <= steps_done),
                Some("epoch") => v["epoch"].as_i64().is_some_and(|e| e <= epochs_done),
                _ => true,
            },
        };
        let kept: String = text.lines().filter(|l| keep(l)).map(|l| format!("{l}\n")).collect();
        if kept.len() == text.len() {
            return Ok(());
        }
        write_atomic(path, kept.as_bytes())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::train::evaluate::{EvalSet, evaluate};

    /// Training draws from libtorch's global random generator: tests that train run one at a
    /// time, or their draws interleave and runs stop being reproducible.
    static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        TRAINING.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ucm-mini/dataset.json")
    }

    /// Same structure as pvig-nano, small enough to train in seconds on a CPU.
    pub(crate) fn micro_config() -> Config {
        let mut c = Config::pvig_nano();
        c.name = "test-micro".into();
        c.embed_dim = 64;
        c.image.image_size = 96;
        c.image.blocks = vec![1, 1, 1, 1];
        c.image.channels = vec![16, 32, 64, 128];
        c.image.knn_min = 4;
        c.image.knn_max = 6;
        c.image.max_dilation = 1;
        c.image.region_grid = 3;
        c.text.word_dim = 32;
        c.training.batch_size = 20;
        c.training.learning_rate = 3e-3;
        c.training.warmup_sum_epochs = 1000; // summed negatives throughout: 40 images
        c
    }

    fn options(out: &Path, epochs: i64) -> TrainOptions {
        let mut config = micro_config();
        config.training.epochs = epochs;
        TrainOptions {
            datasets: vec![fixture()],
            images_dir: None,
            config,
            out: out.to_path_buf(),
            resume: false,
            skip_bad: false,
            device: Device::Cpu,
            val_images: None,
            checkpoint_minutes: 1e9,
            stop_after_epochs: None,
            init_from: None,
            keep_epochs: false,
        }
    }

    fn epoch_losses(out: &Path) -> Vec<f64> {
        let text = std::fs::read_to_string(out.join(METRICS)).unwrap();
        let mut per_epoch: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["kind"] == "batch" {
                per_epoch.entry(v["epoch"].as_i64().unwrap()).or_default().push(v["loss"].as_f64().unwrap());
            }
        }
        per_epoch.values().map(|l| l.iter().sum::<f64>() / l.len() as f64).collect()
    }

    #[test]
    fn short_training_run_learns_the_training_subset() {
        let _serial = serial();
        tch::set_num_threads(2);
        let dir = tempfile::tempdir().unwrap();
        let summary = train(&options(dir.path(), 20), Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(summary.state.epoch, 20);
        let losses = epoch_losses(dir.path());
        assert!(losses.last().unwrap() < &(0.6 * losses[1]), "loss did not go down: {losses:?}");
        // Retrieval on the (unaugmented) training images: chance R@1 is 2.5 % both ways;
        // this run measured 14.5 % (i2t 5.0, t2i 24.0).
        let ckpt = ModelDir::load(&dir.path().join(CHECKPOINT), Device::Cpu).unwrap();
        let ds = Dataset::load(&fixture(), None).unwrap();
        let (imgs, _) = load_split(&[ds], "train", &ckpt.model.vocab, 32, false).unwrap();
        let r = evaluate(&ckpt.model, &EvalSet::new(&imgs, 96, None));
        let r1 = (r.i2t[0] + r.t2i[0]) / 2.0;
        assert!(r1 > 10.0, "train-subset R@1 {r1:.1} % (i2t {:?}, t2i {:?})", r.i2t, r.t2i);
        // The best model directory is a loadable model.
        assert!(ModelDir::load(dir.path(), Device::Cpu).is_ok());
    }

    #[test]
    fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
        let _serial = serial();
        tch::set_num_threads(2);
        let straight = tempfile::tempdir().unwrap();
        train(&options(straight.path(), 2), Arc::new(AtomicBool::new(false))).unwrap();
        let split = tempfile::tempdir().unwrap();
        let mut first = options(split.path(), 2);
        first.stop_after_epochs = Some(1);
        let s1 = train(&first, Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(s1.state.epoch, 1);
        // What a kill after the checkpoint leaves behind: a logged step and epoch that the
        // checkpoint does not hold, and a torn line.
        let log = split.path().join(METRICS);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(
            f,
            "{}",
            serde_json::json!({"kind": "batch", "epoch": 2, "batch": 1, "step": s1.state.step + 1})
        )
        .unwrap();
        writeln!(f, "{}", serde_json::json!({"kind": "epoch", "epoch": 2, "val_mr": 99.0})).unwrap();
        write!(f, "{{\"kind\":\"bat").unwrap();
        drop(f);
        let mut second = options(split.path(), 2);
        second.resume = true;
        let s2 = train(&second, Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(s2.state.epoch, 2);
        // The log holds each step and each epoch once, as if the run had never stopped.
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let steps: Vec<i64> =
            lines.iter().filter(|v| v["kind"] == "batch").map(|v| v["step"].as_i64().unwrap()).collect();
        assert_eq!(steps, (1..=s2.state.step).collect::<Vec<_>>());
        let epochs: Vec<i64> =
            lines.iter().filter(|v| v["kind"] == "epoch").map(|v| v["epoch"].as_i64().unwrap()).collect();
        assert_eq!(epochs, [1, 2]);
        assert!(lines.iter().all(|v| v["val_mr"] != 99.0), "the killed run's epoch line is gone");
        let a = ModelDir::load(&straight.path().join(CHECKPOINT), Device::Cpu).unwrap();
        let b = ModelDir::load(&split.path().join(CHECKPOINT), Device::Cpu).unwrap();
        let va = a.model.var_store().variables();
        let vb = b.model.var_store().variables();
        for (name, ta) in &va {
            let diff = (ta - &vb[name]).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "{name} differs by {diff}");
        }
    }

    #[test]
    fn keep_epochs_saves_every_epochs_model_also_across_a_resume() {
        let _serial = serial();
        tch::set_num_threads(2);
        let out = tempfile::tempdir().unwrap();
        let mut first = options(out.path(), 2);
        first.keep_epochs = true;
        first.stop_after_epochs = Some(1);
        train(&first, Arc::new(AtomicBool::new(false))).unwrap();
        let mut second = options(out.path(), 2);
        second.keep_epochs = true;
        second.resume = true;
        train(&second, Arc::new(AtomicBool::new(false))).unwrap();
        let epochs = out.path().join(EPOCHS);
        let mut names: Vec<String> = std::fs::read_dir(&epochs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["epoch-001", "epoch-002"],
            "one loadable directory per epoch, nothing half-written"
        );
        let weights = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
        let one = ModelDir::load(&epochs.join("epoch-001"), Device::Cpu).unwrap();
        let two = ModelDir::load(&epochs.join("epoch-002"), Device::Cpu).unwrap();
        assert_ne!(one.fingerprint, two.fingerprint, "epochs 1 and 2 have different weights");
        // Each card names the epoch its weights are from, whichever epoch is the run's best.
        for (name, epoch) in [("epoch-001", 1), ("epoch-002", 2)] {
            let card = std::fs::read_to_string(epochs.join(name).join("MODEL_CARD.md")).unwrap();
            assert!(card.contains(&format!("Weights of epoch {epoch} of ")), "{card}");
        }
        // The last epoch's model is the run's final state.
        assert_eq!(weights(&epochs.join("epoch-002")), weights(&out.path().join(CHECKPOINT)));
        // A new run into the same folder (checkpoint gone) would mix its epochs with these.
        std::fs::remove_dir_all(out.path().join(CHECKPOINT)).unwrap();
        let err = train(&first, Arc::new(AtomicBool::new(false))).unwrap_err().to_string();
        assert!(err.contains("epoch models of an earlier run"), "{err}");
    }

    #[test]
    fn a_failed_build_leaves_the_published_directory_and_no_temporary() {
        let out = tempfile::tempdir().unwrap();
        let dst = out.path().join("checkpoint");
        build_and_publish(&dst, |tmp| {
            std::fs::create_dir_all(tmp).unwrap();
            std::fs::write(tmp.join("state.json"), "1").map_err(|e| AcfError::io(tmp, "write", e))
        })
        .unwrap();
        // A second save that fails half-way, as on a full disk.
        let err = build_and_publish(&dst, |tmp| {
            std::fs::create_dir_all(tmp).unwrap();
            std::fs::write(tmp.join("model.safetensors"), vec![0u8; 1 << 20]).unwrap();
            Err(AcfError::InvalidArgument("No space left on device".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(!dst.with_extension("tmp").exists(), "the half-written copy is removed");
        assert_eq!(std::fs::read_to_string(dst.join("state.json")).unwrap(), "1", "the old one is intact");
    }

    #[test]
    fn a_second_trainer_on_the_same_out_is_refused() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        // Stop at once: a checkpoint exists, as a run in progress would have.
        train(&options(dir.path(), 1), Arc::new(AtomicBool::new(true))).unwrap();
        let before = std::fs::read(dir.path().join("checkpoint/state.json")).unwrap();
        // What the first run holds while it trains.
        let running = WriterLock::acquire_training(dir.path()).unwrap();
        let mut again = options(dir.path(), 1);
        again.resume = true;
        let err = train(&again, Arc::new(AtomicBool::new(false))).unwrap_err().to_string();
        assert!(err.contains("another acf-index train"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("checkpoint/state.json")).unwrap(), before);
        drop(running);
        let s = train(&again, Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(s.state.epoch, 1, "resumes once the first run is gone");
    }

    #[test]
    fn the_trainers_validation_equals_eval_on_the_saved_weights() {
        let _serial = serial();
        tch::set_num_threads(2);
        let out = tempfile::tempdir().unwrap();
        let summary = train(&options(out.path(), 1), Arc::new(AtomicBool::new(false))).unwrap();
        let logged = summary.last_val.unwrap();
        // What `acf-index eval --split val` computes from the saved model directory.
        let saved = ModelDir::load(out.path(), Device::Cpu).unwrap();
        let ds = Dataset::load(&fixture(), None).unwrap();
        let (imgs, _) = load_split(std::slice::from_ref(&ds), "val", &saved.model.vocab, 32, false).unwrap();
        let set = EvalSet::new(&imgs, saved.config().image.image_size as u32, None);
        let again = evaluate(&saved.model, &set);
        assert!((again.mr - logged.mr).abs() < 1e-6, "trainer {} vs eval {}", logged.mr, again.mr);
    }

    #[test]
    fn identical_captions_tie_even_when_their_scores_differ_by_float_noise() {
        // Two images; image 0 has captions [a] and image 1 has [a'] where a' == a word for word.
        let set = EvalSet {
            pixels: vec![vec![], vec![]],
            captions: vec![vec![5, 6], vec![5, 6]],
            caption_image: vec![0, 1],
        };
        // Scores differ only by noise: without the tie, image 0 would rank its caption first.
        let scores = [0.5, 0.5 - 1e-7, 0.5 + 1e-7, 0.5];
        let r = set.recall(&scores);
        assert!((r.i2t[0] - 50.0).abs() < 1e-9, "a tie of two: R@1 = 50 %, got {}", r.i2t[0]);
    }

    #[test]
    fn interrupt_saves_a_checkpoint_that_resumes() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let s = train(&options(dir.path(), 1), Arc::new(AtomicBool::new(true))).unwrap();
        assert!(s.interrupted);
        assert_eq!(s.state.next_batch, 1);
        assert!(dir.path().join("checkpoint/optimizer.safetensors").exists());
        assert!(train(&options(dir.path(), 1), Arc::new(AtomicBool::new(false))).is_err(), "needs --resume");
        let mut again = options(dir.path(), 1);
        again.resume = true;
        let s = train(&again, Arc::new(AtomicBool::new(false))).unwrap();
        assert!(!s.interrupted && s.state.epoch == 1);
    }

    #[test]
    fn training_from_a_calibrated_model_drops_its_prior() {
        // A model directory whose config weighs a prior it has: loadable as it is.
        let dir = tempfile::tempdir().unwrap();
        let mut config = micro_config();
        config.scoring.hubness_prior = 1.5;
        let model = AcfModel::new(config.clone(), Vocab::build(["a red roof"], 1), Device::Cpu);
        let fingerprint = model_dir::save(&model, dir.path(), "# card\n").unwrap();
        let prior = crate::model::prior::HubnessPrior {
            text_mean: vec![0.01; config.embed_dim as usize],
            weights_sha256: fingerprint,
            captions: 1,
            text_bank: Vec::new(),
        };
        std::fs::write(dir.path().join(crate::model::prior::PRIOR_FILE), prior.to_bytes().unwrap()).unwrap();
        assert!(ModelDir::load(dir.path(), Device::Cpu).unwrap().model.prior.is_some());
        // Training from it (same config) neither scores with the old weights' prior nor
        // writes checkpoints that would ask for one.
        let started = warm_start(dir.path(), &without_prior(&config), Device::Cpu).unwrap();
        assert!(started.prior.is_none());
        assert_eq!(started.config.scoring.hubness_prior, 0.0);
    }
}
