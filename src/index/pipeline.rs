//! The indexing pipeline. Bounded channels connect three kinds of stages, so GDAL reads, the
//! model and Parquet writes overlap and memory stays bounded whatever the scene size:
//!
//! ```text
//! scene readers (--readers threads, GDAL windowed reads, footprints)
//!     → encoder (this thread: rayon converts a batch to 8-bit chips, the model encodes it)
//!     → writer (one thread: streams rows into a part file per scene, publishes it, records it)
//! ```
//!
//! A scene's rows become visible only when its part file is complete (rename), and a failed
//! or interrupted scene leaves nothing behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::discover::{Inputs, discover};
use super::prepare::{check_model, fingerprint, now_s, up_to_date};
use crate::error::{AcfError, Result};
use crate::model::model_dir::ModelDir;
use crate::model::{InferenceOptions, InferencePrecision};
use crate::raster::scene::{RawChip, ReadOptions, Scene, WindowData};
use crate::raster::stretch::Stretch;
use crate::raster::tiling::chip_windows;
use crate::storage::{
    ChipRow, ChipSchema, Footprint, IndexDir, IndexHeader, PartWriter, SceneFingerprint, SceneRecord,
    SceneStatus, WriterLock, scene_id,
};

/// Everything `acf-index index` takes besides the model.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub inputs: Inputs,
    pub out: std::path::PathBuf,
    pub read: ReadOptions,
    /// Pixels between chip origins (224 = no overlap).
    pub stride: usize,
    /// Chips with a smaller valid fraction are counted, not encoded.
    pub min_valid: f32,
    /// Chips per encoder batch.
    pub batch: usize,
    /// Scenes read at once.
    pub readers: usize,
    /// Storage type of `nodes` (`None`: the index's, f16 for a new index).
    pub nodes_dtype: Option<crate::storage::NodesDtype>,
    /// Compare content hashes too.
    pub verify: bool,
    /// Replace an index built with another model.
    pub new_model: bool,
    /// Draw a progress bar.
    pub progress: bool,
}

/// What a run did (printed at the end, also as JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexSummary {
    pub scenes: usize,
    pub indexed: usize,
    pub skipped: usize,
    pub failed: usize,
    pub chips: u64,
    pub chips_low_valid: u64,
    pub seconds: f64,
    pub chips_per_s: f64,
    pub peak_rss_mib: Option<f64>,
    pub device: String,
    pub interrupted: bool,
    /// (scene, reason) of each failed scene.
    pub failures: Vec<(String, String)>,
}

struct SceneJob {
    path: String,
    scene_id: String,
    fingerprint: SceneFingerprint,
}

/// What a reader learned when opening a scene.
struct SceneInfo {
    size: (u64, u64),
    /// Extent (CRS84) of the scene's chip grid: the union of the border windows' footprints.
    bbox: Option<[f64; 4]>,
    crs: Option<String>,
    acquired_us: Option<i64>,
}

enum FromReader {
    Start { job: usize, info: SceneInfo },
    Chip { job: usize, raw: RawChip, footprint: Option<Footprint>, stretch: Option<[Stretch; 3]> },
    End { job: usize, low_valid: u64 },
    Failed { job: usize, reason: String },
    Abandoned { job: usize },
}

enum ToWriter {
    Start { job: usize, info: SceneInfo },
    Row { job: usize, row: Box<ChipRow> },
    End { job: usize, low_valid: u64 },
    Failed { job: usize, reason: String },
    Abandoned { job: usize },
}

/// Indexes the scenes of `opts` with `model` into `opts.out`. Per-scene problems are logged,
/// recorded and counted in the summary; an `Err` means nothing could run (lock, model,
/// unwritable index). Setting `interrupt` stops after the chips in flight, publishing nothing
/// partial.
pub fn run(model: &ModelDir, opts: &IndexOptions, interrupt: Arc<AtomicBool>) -> Result<IndexSummary> {
    let started = Instant::now();
    crate::raster::scene::route_gdal_errors_to_log();
    crate::raster::scene::bound_gdal_cache();
    let (scenes, warnings) = discover(&opts.inputs)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let index = IndexDir::create(&opts.out)?;
    let _lock = WriterLock::acquire(&opts.out, opts.inputs.shard)?;
    if opts.new_model && opts.inputs.shard.is_some() {
        return Err(AcfError::InvalidArgument("--new-model cannot be combined with --shard".into()));
    }
    let header = check_model(&index, model, opts.nodes_dtype, opts.new_model)?;
    let mut summary = IndexSummary {
        scenes: scenes.len(),
        device: crate::device::device_name(model.model.device()),
        ..Default::default()
    };

    let mut jobs = Vec::new();
    for path in scenes {
        let id = scene_id(&path);
        match fingerprint(&path, opts.verify) {
            Ok(fp) => {
                let record = index.record(&id);
                if let Some(r) = record.as_ref().filter(|r| up_to_date(&index, r, &fp, opts.verify)) {
                    for stale in index.stale_files(&id, r.part.as_deref()) {
                        let _ = std::fs::remove_file(stale);
                    }
                    summary.skipped += 1;
                    continue;
                }
                jobs.push(SceneJob { path, scene_id: id, fingerprint: fp });
            }
            Err(reason) => {
                tracing::error!("{path}: {reason}");
                summary.failed += 1;
                summary.failures.push((path, reason));
            }
        }
    }
    tracing::info!(
        "{} scene(s): {} to index, {} already indexed, index {}",
        summary.scenes,
        jobs.len(),
        summary.skipped,
        opts.out.display()
    );
    if !jobs.is_empty() {
        run_pipeline(model, &index, &header, opts, jobs, &interrupt, &mut summary)?;
    }
    summary.interrupted = interrupt.load(Ordering::SeqCst);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.chips_per_s = summary.chips as f64 / summary.seconds.max(1e-9);
    summary.peak_rss_mib = super::info::peak_rss_mib();
    Ok(summary)
}

fn run_pipeline(
    model: &ModelDir,
    index: &IndexDir,
    header: &IndexHeader,
    opts: &IndexOptions,
    jobs: Vec<SceneJob>,
    interrupt: &AtomicBool,
    summary: &mut IndexSummary,
) -> Result<()> {
    let chip = model.model.config.image.image_size as usize;
    let schema = ChipSchema {
        embed_dim: model.model.config.embed_dim as usize,
        regions: (model.model.config.image.region_grid * model.model.config.image.region_grid) as usize,
        nodes_dtype: header.nodes_dtype,
    };
    let acf_metadata = serde_json::json!({
        "acf_index_version": env!("CARGO_PKG_VERSION"),
        "model_fingerprint": model.fingerprint,
        "model_config": header.model_config,
        "nodes_shape": [schema.regions, schema.embed_dim],
    })
    .to_string();
    let jobs = Arc::new(jobs);
    let progress = progress_bar(jobs.len() as u64, opts.progress);
    let (job_tx, job_rx) = unbounded::<usize>();
    for j in 0..jobs.len() {
        let _ = job_tx.send(j);
    }
    drop(job_tx);
    let (chip_tx, chip_rx) = bounded::<FromReader>(opts.batch.max(1) * 2);
    let (row_tx, row_rx) = bounded::<ToWriter>(opts.batch.max(1) * 2);

    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..opts.readers.max(1) {
            let (job_rx, chip_tx, jobs) = (job_rx.clone(), chip_tx.clone(), jobs.clone());
            scope.spawn(move || reader(&jobs, &job_rx, &chip_tx, opts, chip, interrupt));
        }
        drop(chip_tx);
        let writer = {
            let (jobs, progress) = (jobs.clone(), progress.clone());
            let acf_metadata = acf_metadata.clone();
            let model_fp = header.model_fingerprint.as_str();
            scope.spawn(move || writer(index, &jobs, row_rx, schema, &acf_metadata, model_fp, &progress))
        };
        let encoded = encoder(model, &jobs, chip_rx, &row_tx, opts.batch.max(1), chip);
        drop(row_tx);
        let outcome =
            writer.join().map_err(|_| AcfError::InvalidArgument("the writer thread panicked".into()))?;
        encoded?;
        summary.indexed += outcome.indexed;
        summary.failed += outcome.failures.len();
        summary.failures.extend(outcome.failures);
        summary.chips += outcome.chips;
        summary.chips_low_valid += outcome.low_valid;
        Ok(())
    })?;
    progress.finish_and_clear();
    Ok(())
}

fn progress_bar(len: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} scenes {pos}/{len} {wide_bar} {msg} [{elapsed_precise}, ETA {eta}]",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Reads scenes from `job_rx` until none are left: every window of a scene, in order.
fn reader(
    jobs: &[SceneJob],
    job_rx: &Receiver<usize>,
    tx: &Sender<FromReader>,
    opts: &IndexOptions,
    chip: usize,
    interrupt: &AtomicBool,
) {
    while let Ok(job) = job_rx.recv() {
        if interrupt.load(Ordering::SeqCst) {
            return;
        }
        let path = &jobs[job].path;
        let scene = match Scene::open(path, &opts.read) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(FromReader::Failed { job, reason: reason_of(&e) });
                continue;
            }
        };
        for w in &scene.warnings {
            tracing::warn!("{path}: {w}");
        }
        let windows = chip_windows(scene.width, scene.height, chip, opts.stride);
        let bbox = match &scene.georef {
            Some(g) => match grid_bbox(g, &windows, scene.width, scene.height) {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(FromReader::Failed {
                        job,
                        reason: format!("cannot transform footprint to CRS84: {e}"),
                    });
                    continue;
                }
            },
            None => None,
        };
        let info = SceneInfo {
            size: (scene.width as u64, scene.height as u64),
            bbox,
            crs: scene.crs.clone(),
            acquired_us: scene.acquired_us,
        };
        if tx.send(FromReader::Start { job, info }).is_err() {
            return;
        }
        let mut low_valid = 0;
        let mut outcome = None;
        for window in windows {
            if interrupt.load(Ordering::SeqCst) {
                outcome = Some(FromReader::Abandoned { job });
                break;
            }
            let raw = match scene.read(&window, chip) {
                Ok(raw) => raw,
                Err(e) => {
                    outcome = Some(FromReader::Failed { job, reason: reason_of(&e) });
                    break;
                }
            };
            if raw.valid_fraction < opts.min_valid {
                low_valid += 1;
                continue;
            }
            let footprint = match &scene.georef {
                Some(g) => match g.footprint(&window) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        outcome = Some(FromReader::Failed {
                            job,
                            reason: format!("cannot transform footprint to CRS84: {e}"),
                        });
                        break;
                    }
                },
                None => None,
            };
            if tx.send(FromReader::Chip { job, raw, footprint, stretch: scene.stretch }).is_err() {
                return;
            }
        }
        let _ = tx.send(outcome.unwrap_or(FromReader::End { job, low_valid }));
    }
}

/// The CRS84 extent of a chip grid: a projection maps the scene's interior inside the image
/// of its border, so the border windows' footprints (sampled at the same points as every
/// chip's) bound all chips.
fn grid_bbox(
    georef: &crate::raster::footprint::Georef,
    windows: &[crate::raster::Window],
    width: usize,
    height: usize,
) -> gdal::errors::Result<Option<[f64; 4]>> {
    let mut bbox: Option<[f64; 4]> = None;
    for w in windows
        .iter()
        .filter(|w| w.col == 0 || w.row == 0 || w.col + w.width == width || w.row + w.height == height)
    {
        let f = georef.footprint(w)?.bbox;
        let b = bbox.get_or_insert(f);
        *b = [b[0].min(f[0]), b[1].min(f[1]), b[2].max(f[2]), b[3].max(f[3])];
    }
    Ok(bbox)
}

/// The reason part of a raster error (the path is printed by whoever reports it).
fn reason_of(e: &AcfError) -> String {
    match e {
        AcfError::Raster { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Batches chips, converts them to 8-bit model input with rayon, encodes them and passes
/// rows and scene events on to the writer in arrival order.
fn encoder(
    model: &ModelDir,
    jobs: &[SceneJob],
    rx: Receiver<FromReader>,
    tx: &Sender<ToWriter>,
    batch: usize,
    chip: usize,
) -> Result<()> {
    let mut encoder = None;
    let mut pending: Vec<FromReader> = Vec::new();
    let mut chips_pending = 0;
    let mut infos: HashMap<usize, (Option<String>, Option<i64>)> = HashMap::new();
    let mut flush = |pending: &mut Vec<FromReader>| -> Result<()> {
        let raws: Vec<(&RawChip, Option<&[Stretch; 3]>)> = pending
            .iter()
            .filter_map(|m| match m {
                FromReader::Chip { raw, stretch, .. } => Some((raw, stretch.as_ref())),
                _ => None,
            })
            .collect();
        let features = if raws.is_empty() {
            None
        } else {
            let pixels: Vec<u8> =
                raws.par_iter().flat_map_iter(|(raw, stretch)| to_model_chip(raw, *stretch, chip)).collect();
            let pixels =
                Tensor::from_slice(&pixels).reshape([raws.len() as i64, 3, chip as i64, chip as i64]);
            let enc = encoder.get_or_insert_with(|| {
                // Float32 always (BN folded): an index's features must not depend on which
                // chips happened to form the first batch, as an automatic bf16 probe would.
                model.model.inference_image_encoder(
                    &InferenceOptions::with_precision(InferencePrecision::Float32),
                    None,
                )
            });
            let feats = enc.encode_pixels(&pixels);
            let to_vec = |t: &Tensor| -> Result<Vec<f32>> {
                Ok(Vec::<f32>::try_from(
                    t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]),
                )?)
            };
            Some((to_vec(&feats.global)?, to_vec(&feats.regions)?))
        };
        let (globals, nodes) = features.unwrap_or_default();
        let (d, kd) = (globals.len() / raws.len().max(1), nodes.len() / raws.len().max(1));
        let mut i = 0;
        for msg in pending.drain(..) {
            let out = match msg {
                FromReader::Start { job, info } => {
                    infos.insert(job, (info.crs.clone(), info.acquired_us));
                    ToWriter::Start { job, info }
                }
                FromReader::Chip { job, raw, footprint, .. } => {
                    let scene = &jobs[job];
                    let (crs, acquired_us) = infos.get(&job).cloned().unwrap_or_default();
                    let w = raw.window;
                    let row = ChipRow {
                        chip_id: format!("{}_{}_{}", scene.scene_id, w.col, w.row),
                        scene: scene.path.clone(),
                        scene_fingerprint: scene.fingerprint.key(),
                        window: [w.col as i32, w.row as i32, w.width as i32, w.height as i32],
                        padded: w.padded(chip),
                        crs,
                        footprint,
                        valid_fraction: raw.valid_fraction,
                        acquired_us,
                        global: globals[i * d..(i + 1) * d].to_vec(),
                        nodes: nodes[i * kd..(i + 1) * kd].to_vec(),
                    };
                    i += 1;
                    ToWriter::Row { job, row: Box::new(row) }
                }
                FromReader::End { job, low_valid } => {
                    infos.remove(&job);
                    ToWriter::End { job, low_valid }
                }
                FromReader::Failed { job, reason } => ToWriter::Failed { job, reason },
                FromReader::Abandoned { job } => ToWriter::Abandoned { job },
            };
            if tx.send(out).is_err() {
                return Err(AcfError::InvalidArgument("the writer stopped".into()));
            }
        }
        Ok(())
    };
    for msg in rx {
        if matches!(msg, FromReader::Chip { .. }) {
            chips_pending += 1;
        }
        pending.push(msg);
        if chips_pending >= batch {
            flush(&mut pending)?;
            chips_pending = 0;
        }
    }
    flush(&mut pending)
}

/// A raw window as the model's (3, chip, chip) 8-bit input: stretched when not 8-bit,
/// invalid pixels black, padded at the right and bottom.
pub(crate) fn to_model_chip(raw: &RawChip, stretch: Option<&[Stretch; 3]>, chip: usize) -> Vec<u8> {
    let (w, h) = (raw.window.width, raw.window.height);
    let n = w * h;
    let mut out = vec![0u8; 3 * chip * chip];
    for k in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if raw.valid.as_ref().is_some_and(|v| !v[i]) {
                    continue;
                }
                out[k * chip * chip + y * chip + x] = match (&raw.data, stretch) {
                    (WindowData::Byte(b), _) => b[k * n + i],
                    (WindowData::Float(f), Some(s)) => s[k].apply(f[k * n + i]),
                    (WindowData::Float(f), None) => f[k * n + i].clamp(0.0, 255.0) as u8,
                };
            }
        }
    }
    out
}

struct WriterOutcome {
    indexed: usize,
    chips: u64,
    low_valid: u64,
    failures: Vec<(String, String)>,
}

struct InFlight {
    part: Option<PartWriter>,
    info: Option<SceneInfo>,
    started: Instant,
}

/// Streams rows into one part file per scene and publishes each scene when it ends.
fn writer(
    index: &IndexDir,
    jobs: &[SceneJob],
    rx: Receiver<ToWriter>,
    schema: ChipSchema,
    acf_metadata: &str,
    model_fp: &str,
    progress: &ProgressBar,
) -> WriterOutcome {
    let mut out = WriterOutcome { indexed: 0, chips: 0, low_valid: 0, failures: Vec::new() };
    let mut flight: HashMap<usize, InFlight> = HashMap::new();
    let mut failed_mid_scene: HashMap<usize, String> = HashMap::new();
    let started = Instant::now();
    let fail = |out: &mut WriterOutcome, job: usize, reason: String, info: Option<SceneInfo>| {
        let scene = &jobs[job];
        tracing::error!("{}: {reason}", scene.path);
        for stale in index.stale_files(&scene.scene_id, None) {
            let _ = std::fs::remove_file(stale);
        }
        let record = SceneRecord {
            path: scene.path.clone(),
            scene_id: scene.scene_id.clone(),
            fingerprint: scene.fingerprint.clone(),
            status: SceneStatus::Failed,
            part: None,
            chips: 0,
            chips_low_valid: 0,
            size: info.as_ref().map(|i| i.size),
            crs: info.and_then(|i| i.crs),
            error: Some(reason.clone()),
            indexed_at: now_s(),
            seconds: 0.0,
        };
        if let Err(e) = index.write_record(&record) {
            tracing::error!("{e}");
        }
        out.failures.push((scene.path.clone(), reason));
        progress.inc(1);
    };
    for msg in rx {
        match msg {
            ToWriter::Start { job, info } => {
                flight.insert(job, InFlight { part: None, info: Some(info), started: Instant::now() });
            }
            ToWriter::Row { job, row } => {
                if failed_mid_scene.contains_key(&job) {
                    continue;
                }
                let Some(f) = flight.get_mut(&job) else { continue };
                let scene = &jobs[job];
                let result = match &mut f.part {
                    Some(p) => p.push(*row),
                    None => {
                        let name = IndexDir::part_name(&scene.scene_id, &scene.fingerprint, model_fp);
                        let bbox = f.info.as_ref().and_then(|i| i.bbox);
                        PartWriter::create(&index.root.join(name), schema, acf_metadata, bbox).and_then(
                            |mut p| {
                                p.push(*row)?;
                                f.part = Some(p);
                                Ok(())
                            },
                        )
                    }
                };
                if let Err(e) = result {
                    if let Some(p) = f.part.take() {
                        p.abandon();
                    }
                    failed_mid_scene.insert(job, e.to_string());
                }
            }
            ToWriter::End { job, low_valid } => {
                let f = flight.remove(&job);
                if let Some(reason) = failed_mid_scene.remove(&job) {
                    fail(&mut out, job, reason, f.and_then(|f| f.info));
                    continue;
                }
                let Some(f) = f else { continue };
                match publish(index, &jobs[job], f, low_valid, model_fp) {
                    Ok(record) => {
                        out.indexed += 1;
                        out.chips += record.chips;
                        out.low_valid += low_valid;
                        progress.inc(1);
                        let rate = out.chips as f64 / started.elapsed().as_secs_f64().max(1e-9);
                        progress.set_message(format!("{} chips, {rate:.1} chips/s", out.chips));
                        tracing::debug!("{}: {} chips", jobs[job].path, record.chips);
                    }
                    Err((reason, info)) => fail(&mut out, job, reason, info),
                }
            }
            ToWriter::Failed { job, reason } => {
                let info = flight.remove(&job).and_then(|mut f| {
                    if let Some(p) = f.part.take() {
                        p.abandon();
                    }
                    f.info
                });
                failed_mid_scene.remove(&job);
                fail(&mut out, job, reason, info);
            }
            ToWriter::Abandoned { job } => {
                if let Some(p) = flight.remove(&job).and_then(|mut f| f.part.take()) {
                    p.abandon();
                }
            }
        }
    }
    out
}

/// Replaces the scene's rows: old part files go first (so no reader ever sees the scene
/// twice), then the new part appears by rename, then the record names it.
fn publish(
    index: &IndexDir,
    scene: &SceneJob,
    mut f: InFlight,
    low_valid: u64,
    model_fp: &str,
) -> std::result::Result<SceneRecord, (String, Option<SceneInfo>)> {
    let name = IndexDir::part_name(&scene.scene_id, &scene.fingerprint, model_fp);
    let chips = f.part.as_ref().map_or(0, |p| p.rows()) as u64;
    for stale in index.stale_files(&scene.scene_id, None) {
        if f.part.as_ref().is_some_and(|p| stale == p.tmp_path() || stale == p.final_path()) {
            continue;
        }
        if let Err(e) = std::fs::remove_file(&stale) {
            return Err((format!("cannot remove old part {}: {e}", stale.display()), f.info.take()));
        }
    }
    let part = match f.part.take() {
        Some(p) => match p.publish() {
            Ok(_) => Some(name),
            Err(e) => return Err((e.to_string(), f.info.take())),
        },
        None => None,
    };
    let info = f.info.take();
    let record = SceneRecord {
        path: scene.path.clone(),
        scene_id: scene.scene_id.clone(),
        fingerprint: scene.fingerprint.clone(),
        status: SceneStatus::Ok,
        part,
        chips,
        chips_low_valid: low_valid,
        size: info.as_ref().map(|i| i.size),
        crs: info.as_ref().and_then(|i| i.crs.clone()),
        error: None,
        indexed_at: now_s(),
        seconds: f.started.elapsed().as_secs_f64(),
    };
    index.write_record(&record).map_err(|e| (e.to_string(), info))?;
    Ok(record)
}
