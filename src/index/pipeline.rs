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
use super::prepare::{check_model, fingerprint, prune_missing, up_to_date};
use super::stac::StacScene;
use crate::error::{AcfError, Result};
use crate::model::model_dir::ModelDir;
use crate::model::{InferenceOptions, InferencePrecision};
use crate::raster::Footprint;
use crate::raster::chip::to_model_chip;
use crate::raster::resolution::{self, ChipGrid};
use crate::raster::scene::{RawChip, ReadOptions, Scene};
use crate::raster::stretch::Stretch;
use crate::storage::{
    ChipOptions, ChipRow, ChipSchema, IndexDir, IndexHeader, PartWriter, SceneFingerprint, SceneMeta,
    SceneRecord, scene_id,
};

/// Everything `acf-index index` takes besides the model.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub inputs: Inputs,
    pub out: std::path::PathBuf,
    pub read: ReadOptions,
    /// Pixels between chip origins (224 = no overlap), at the `gsd` resolution when set.
    pub stride: usize,
    /// Ground sample distance of chips in metres (`--gsd`): windows of `224 · gsd / native`
    /// scene pixels resampled to 224 × 224. `None`: scenes are chipped at native resolution.
    pub gsd: Option<f64>,
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
    /// Remove scenes under the given paths whose source no longer exists.
    pub prune: bool,
    /// STAC Catalogs, Collections, ItemCollections or Items to index (`--stac`).
    pub stac: Vec<String>,
    /// Draw a progress bar.
    pub progress: bool,
}

impl IndexOptions {
    /// The command line's defaults for an index at `out` of `chip`-pixel chips (no overlap),
    /// with no inputs: callers fill in what they set.
    pub fn defaults(out: std::path::PathBuf, chip: usize) -> IndexOptions {
        IndexOptions {
            inputs: Inputs::default(),
            out,
            read: ReadOptions::default(),
            stride: chip,
            gsd: None,
            min_valid: 0.5,
            batch: 32,
            readers: 2,
            nodes_dtype: None,
            verify: false,
            new_model: false,
            prune: false,
            stac: Vec::new(),
            progress: false,
        }
    }
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
    /// Scenes neither indexed, skipped nor failed (left by an interrupt): a rerun does them.
    pub not_done: usize,
    /// Scenes removed by `--prune` (their source is gone).
    pub pruned: usize,
    /// (scene, reason) of each failed scene.
    pub failures: Vec<(String, String)>,
}

struct SceneJob {
    path: String,
    scene_id: String,
    fingerprint: SceneFingerprint,
    /// Set for a scene from `--stac`.
    stac: Option<StacScene>,
}

impl SceneJob {
    /// The scene as the catalog records it, with what a reader learned (if it got that far).
    fn meta(&self, info: Option<&SceneInfo>) -> SceneMeta {
        SceneMeta {
            path: self.path.clone(),
            scene_id: self.scene_id.clone(),
            fingerprint: self.fingerprint.clone(),
            size: info.map(|i| i.size),
            crs: info.and_then(|i| i.crs.clone()),
            stac_item: self.stac.as_ref().map(|s| s.item.clone()),
            stac_collection: self.stac.as_ref().and_then(|s| s.collection.clone()),
        }
    }
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
    let (mut scenes, mut warnings) = discover(&opts.inputs)?;
    let mut stac_of: HashMap<String, StacScene> = HashMap::new();
    if !opts.stac.is_empty() {
        let (items, w) = super::stac::scenes(&opts.stac, &opts.out.join("stac"))?;
        warnings.extend(w);
        for item in items {
            if opts.inputs.shard.is_none_or(|(i, n)| super::discover::shard_of(&item.path, n) == i) {
                scenes.push(item.path.clone());
                stac_of.insert(item.path.clone(), item);
            }
        }
        scenes.sort();
        scenes.dedup();
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let index = IndexDir::create(&opts.out)?;
    if opts.new_model && opts.inputs.shard.is_some() {
        return Err(AcfError::InvalidArgument("--new-model cannot be combined with --shard".into()));
    }
    let _lock = index.lock_writer(opts.inputs.shard)?;
    let chip_options = ChipOptions {
        stride: opts.stride,
        bands: opts.read.bands.clone(),
        scale: opts.read.scale,
        min_valid: opts.min_valid,
        gsd: opts.gsd,
        views: model.config().image.test_time_views,
    };
    let header = check_model(&index, model, opts.nodes_dtype, opts.new_model, &chip_options)?;
    if let (Some(gsd), Some(range)) = (opts.gsd, model.config().training_gsd_m)
        && let Some(w) = resolution::out_of_range_warning(gsd, range, "--gsd")
    {
        tracing::warn!("{w}");
    }
    let mut summary = IndexSummary {
        scenes: scenes.len(),
        device: crate::device::device_name(model.model.device()),
        ..Default::default()
    };

    if opts.prune {
        summary.pruned = prune_missing(&index, &opts.inputs.paths)?;
    }
    let mut jobs = Vec::new();
    for path in scenes {
        let id = scene_id(&path);
        match fingerprint(&path, opts.verify) {
            Ok(fp) => {
                let record = index.record(&id);
                if let Some(r) = record.as_ref().filter(|r| up_to_date(&index, r, &fp, opts.verify)) {
                    index.remove_stale(&id, r.part.as_deref());
                    summary.skipped += 1;
                    continue;
                }
                let stac = stac_of.remove(&path);
                jobs.push(SceneJob { path, scene_id: id, fingerprint: fp, stac });
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
    summary.not_done = summary.scenes.saturating_sub(summary.indexed + summary.skipped + summary.failed);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.chips_per_s = summary.chips as f64 / summary.seconds.max(1e-9);
    summary.peak_rss_mib = crate::device::peak_rss_mib();
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
    let chip = model.config().image.image_size as usize;
    let training_gsd = model.config().training_gsd_m;
    let schema = ChipSchema {
        embed_dim: model.config().embed_dim as usize,
        regions: (model.config().image.region_grid * model.config().image.region_grid) as usize,
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
            scope.spawn(move || reader(&jobs, &job_rx, &chip_tx, opts, chip, training_gsd, interrupt));
        }
        drop(chip_tx);
        let writer = {
            let (jobs, progress) = (jobs.clone(), progress.clone());
            let acf_metadata = acf_metadata.clone();
            let model_fp = header.model_fingerprint.as_str();
            scope.spawn(move || writer(index, &jobs, row_rx, schema, &acf_metadata, model_fp, &progress))
        };
        let encoded = encoder(model, &jobs, chip_rx, &row_tx, opts.batch.max(1), chip, interrupt);
        drop(row_tx);
        let outcome =
            writer.join().map_err(|_| AcfError::Thread("the index writer thread panicked".into()))?;
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
    training_gsd: Option<[f64; 2]>,
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
        let grid = match opts.gsd {
            None => ChipGrid::native(chip, opts.stride),
            Some(target) => match ChipGrid::at_gsd(chip, opts.stride, scene.pixel_size_m, target) {
                Ok(g) => g,
                Err(reason) => {
                    let _ = tx.send(FromReader::Failed { job, reason });
                    continue;
                }
            },
        };
        if let (None, Some(native), Some(range)) = (opts.gsd, scene.pixel_size_m, training_gsd)
            && let Some(w) = resolution::out_of_range_warning(native, range, "ground sample distance")
        {
            tracing::warn!("{path}: {w}");
        }
        let windows = grid.windows(scene.width, scene.height);
        let bbox = match &scene.georef {
            Some(g) => match g.grid_bbox(&windows, scene.width, scene.height) {
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
            // A STAC item's datetime is the acquisition; TIFF tags often hold processing time.
            acquired_us: jobs[job].stac.as_ref().and_then(|s| s.acquired_us).or(scene.acquired_us),
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
            let raw = match scene.read_resampled(&window, grid.buffer(&window)) {
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
    interrupt: &AtomicBool,
) -> Result<()> {
    let mut encoder = None;
    let mut pending: Vec<FromReader> = Vec::new();
    let mut chips_pending = 0;
    let mut infos: HashMap<usize, (Option<String>, Option<i64>)> = HashMap::new();
    // Scenes the writer has started and not yet ended: what an interrupt abandons.
    let mut flush = |pending: &mut Vec<FromReader>,
                     infos: &mut HashMap<usize, (Option<String>, Option<i64>)>|
     -> Result<()> {
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
                        stac_item: scene.stac.as_ref().map(|s| s.item.clone()),
                        stac_collection: scene.stac.as_ref().and_then(|s| s.collection.clone()),
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
                FromReader::Failed { job, reason } => {
                    infos.remove(&job);
                    ToWriter::Failed { job, reason }
                }
                FromReader::Abandoned { job } => {
                    infos.remove(&job);
                    ToWriter::Abandoned { job }
                }
            };
            if tx.send(out).is_err() {
                return Err(AcfError::Thread("the index writer stopped before the encoder".into()));
            }
        }
        Ok(())
    };
    for msg in rx.iter() {
        if interrupt.load(Ordering::SeqCst) {
            // Stop promptly: nothing more is encoded, every scene the writer has open is
            // dropped (its temporary part deleted), and the readers' last messages drained.
            for job in infos.keys() {
                let _ = tx.send(ToWriter::Abandoned { job: *job });
            }
            for _ in rx.iter() {}
            return Ok(());
        }
        if matches!(msg, FromReader::Chip { .. }) {
            chips_pending += 1;
        }
        pending.push(msg);
        if chips_pending >= batch {
            flush(&mut pending, &mut infos)?;
            chips_pending = 0;
        }
    }
    flush(&mut pending, &mut infos)
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
        if let Err(e) = index.record_failure(&scene.meta(info.as_ref()), &reason) {
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
                if f.part.as_ref().is_some_and(|p| p.rows() == 2) {
                    crate::faults::crash_point("writer:mid-scene");
                }
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
                match publish(index, &jobs[job], f, low_valid) {
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

/// Commits a finished scene ([`IndexDir::commit_scene`]); on failure returns the reason
/// and what was known of the scene, for its failure record.
fn publish(
    index: &IndexDir,
    scene: &SceneJob,
    mut f: InFlight,
    low_valid: u64,
) -> std::result::Result<SceneRecord, (String, Option<SceneInfo>)> {
    let info = f.info.take();
    let meta = scene.meta(info.as_ref());
    index
        .commit_scene(&meta, f.part.take(), low_valid, f.started.elapsed().as_secs_f64())
        .map_err(|e| (e.to_string(), info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::NodesDtype;

    const FIXTURE: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/geotiff/naip-4band-150x200.tif");

    fn job(path: &str) -> SceneJob {
        SceneJob {
            path: path.to_string(),
            scene_id: scene_id(path),
            fingerprint: SceneFingerprint { size: 1, mtime_ns: 2, sha256: None },
            stac: None,
        }
    }

    fn options(stride: usize) -> IndexOptions {
        IndexOptions {
            min_valid: 0.0,
            batch: 4,
            readers: 1,
            ..IndexOptions::defaults(std::path::PathBuf::new(), stride)
        }
    }

    /// What one reader sends for `jobs`, as a list of event names.
    fn read_events(jobs: &[SceneJob], chip: usize, stride: usize, interrupt: bool) -> Vec<String> {
        let (job_tx, job_rx) = unbounded();
        for j in 0..jobs.len() {
            job_tx.send(j).unwrap();
        }
        drop(job_tx);
        let (tx, rx) = unbounded();
        reader(jobs, &job_rx, &tx, &options(stride), chip, None, &AtomicBool::new(interrupt));
        drop(tx);
        rx.iter()
            .map(|m| match m {
                FromReader::Start { job, info } => format!("start {job} {}x{}", info.size.0, info.size.1),
                FromReader::Chip { job, raw, footprint, .. } => {
                    format!("chip {job} {},{} geo={}", raw.window.col, raw.window.row, footprint.is_some())
                }
                FromReader::End { job, .. } => format!("end {job}"),
                FromReader::Failed { job, .. } => format!("failed {job}"),
                FromReader::Abandoned { job } => format!("abandoned {job}"),
            })
            .collect()
    }

    #[test]
    fn a_reader_sends_start_every_window_in_order_then_end() {
        let events = read_events(&[job(FIXTURE)], 100, 100, false);
        // 150 × 200 pixels with 100-pixel chips: columns 0, 50 and rows 0, 100.
        assert_eq!(
            events,
            vec![
                "start 0 150x200",
                "chip 0 0,0 geo=true",
                "chip 0 50,0 geo=true",
                "chip 0 0,100 geo=true",
                "chip 0 50,100 geo=true",
                "end 0"
            ]
        );
    }

    #[test]
    fn a_reader_reports_an_unreadable_scene_and_goes_on() {
        let events = read_events(&[job("/nonexistent/scene.tif"), job(FIXTURE)], 224, 224, false);
        assert_eq!(events.first().map(String::as_str), Some("failed 0"));
        assert_eq!(events.last().map(String::as_str), Some("end 1"));
    }

    #[test]
    fn an_interrupted_reader_starts_nothing() {
        assert!(read_events(&[job(FIXTURE)], 224, 224, true).is_empty());
    }

    fn row(scene: &SceneJob, col: i32, schema: ChipSchema) -> Box<ChipRow> {
        Box::new(ChipRow {
            chip_id: format!("{}_{col}_0", scene.scene_id),
            scene: scene.path.clone(),
            scene_fingerprint: scene.fingerprint.key(),
            window: [col, 0, 4, 4],
            padded: false,
            crs: None,
            footprint: None,
            valid_fraction: 1.0,
            acquired_us: None,
            stac_item: None,
            stac_collection: None,
            global: vec![0.5; schema.embed_dim],
            nodes: vec![0.25; schema.embed_dim * schema.regions],
        })
    }

    fn info() -> SceneInfo {
        SceneInfo { size: (8, 4), bbox: None, crs: None, acquired_us: None }
    }

    #[test]
    fn the_writer_commits_finished_scenes_and_records_failed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let index = IndexDir::create(dir.path()).unwrap();
        let jobs = vec![job("/a.tif"), job("/b.tif"), job("/c.tif")];
        let schema = ChipSchema { embed_dim: 4, regions: 2, nodes_dtype: NodesDtype::F32 };
        let (tx, rx) = unbounded();
        for m in [
            ToWriter::Start { job: 0, info: info() },
            ToWriter::Start { job: 1, info: info() },
            ToWriter::Row { job: 0, row: row(&jobs[0], 0, schema) },
            ToWriter::Row { job: 1, row: row(&jobs[1], 0, schema) },
            ToWriter::Row { job: 0, row: row(&jobs[0], 4, schema) },
            ToWriter::Failed { job: 1, reason: "bad block".into() },
            ToWriter::End { job: 0, low_valid: 3 },
            ToWriter::Start { job: 2, info: info() },
            ToWriter::Row { job: 2, row: row(&jobs[2], 0, schema) },
            ToWriter::Abandoned { job: 2 },
        ] {
            tx.send(m).unwrap();
        }
        drop(tx);
        let out = writer(&index, &jobs, rx, schema, "{}", "model", &ProgressBar::hidden());
        assert_eq!((out.indexed, out.chips, out.low_valid), (1, 2, 3));
        assert_eq!(out.failures, vec![("/b.tif".to_string(), "bad block".to_string())]);
        let a = index.record(&jobs[0].scene_id).unwrap();
        assert_eq!((a.status, a.chips, a.chips_low_valid), (crate::storage::SceneStatus::Ok, 2, 3));
        assert!(dir.path().join(a.part.unwrap()).is_file());
        let b = index.record(&jobs[1].scene_id).unwrap();
        assert_eq!((b.status, b.error.as_deref()), (crate::storage::SceneStatus::Failed, Some("bad block")));
        assert!(index.record(&jobs[2].scene_id).is_none(), "an abandoned scene leaves no record");
        let parts: Vec<_> = std::fs::read_dir(dir.path().join("parts")).unwrap().collect();
        assert_eq!(parts.len(), 1, "nothing of the failed or abandoned scenes is left");
    }
}
