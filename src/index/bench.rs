//! `acf-index bench index`: end-to-end indexing throughput and peak memory on one scene,
//! next to the encoder alone on chips of the same scene with the same model, precision and
//! batch size. A benchmark: it prints numbers and asserts nothing. Run it once per scene
//! (one process each) so that peak RSS belongs to that scene.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;
use tch::Tensor;

use super::pipeline::{IndexOptions, run};
use crate::device::peak_rss_mib;
use crate::error::Result;
use crate::model::model_dir::ModelDir;
use crate::model::{InferenceOptions, InferencePrecision};
use crate::raster::chip::to_model_chip;
use crate::raster::scene::Scene;
use crate::raster::tiling::chip_windows;

/// One benchmark row.
#[derive(Debug, Clone, Serialize)]
pub struct IndexBench {
    pub scene: String,
    pub width: usize,
    pub height: usize,
    pub chips: u64,
    pub end_to_end_s: f64,
    pub end_to_end_chips_per_s: f64,
    pub encoder_only_chips_per_s: f64,
    /// End-to-end over encoder-only throughput.
    pub ratio: f64,
    pub peak_rss_mib: Option<f64>,
    pub device: String,
    pub batch: usize,
}

/// Indexes `scene` into a temporary index with `opts` (its inputs replaced), then times the
/// encoder alone on up to `4 × batch` chips of the scene for at least `min_seconds`.
pub fn bench_index(
    model: &ModelDir,
    scene_path: &str,
    opts: &IndexOptions,
    min_seconds: f64,
) -> Result<IndexBench> {
    let tmp = tempdir()?;
    let mut opts = opts.clone();
    opts.inputs = super::Inputs { paths: vec![scene_path.into()], ..Default::default() };
    opts.out = tmp.join("index");
    opts.progress = false;
    let summary = run(model, &opts, Arc::new(AtomicBool::new(false)))?;
    let peak = peak_rss_mib();
    let _ = std::fs::remove_dir_all(&tmp);

    let chip = model.config().image.image_size as usize;
    let scene = Scene::open(scene_path, &opts.read)?;
    let windows = chip_windows(scene.width, scene.height, chip, opts.stride);
    let n = windows.len().min(4 * opts.batch).max(1);
    let mut pixels = Vec::with_capacity(n * 3 * chip * chip);
    for w in windows.iter().take(n) {
        let raw = scene.read(w)?;
        pixels.extend(to_model_chip(&raw, scene.stretch.as_ref(), chip));
    }
    let pixels = Tensor::from_slice(&pixels).reshape([n as i64, 3, chip as i64, chip as i64]);
    let encoder = model
        .model
        .inference_image_encoder(&InferenceOptions::with_precision(InferencePrecision::Float32), None);
    let batches: Vec<Tensor> = (0..n as i64)
        .step_by(opts.batch)
        .map(|s| pixels.narrow(0, s, (opts.batch as i64).min(n as i64 - s)))
        .collect();
    let _ = encoder.encode_pixels(&batches[0]);
    let start = Instant::now();
    let mut encoded = 0usize;
    while start.elapsed().as_secs_f64() < min_seconds || encoded < n {
        for b in &batches {
            let f = encoder.encode_pixels(b);
            let _ = f.global.to_device(tch::Device::Cpu);
            encoded += b.size()[0] as usize;
        }
    }
    let encoder_only = encoded as f64 / start.elapsed().as_secs_f64();
    Ok(IndexBench {
        scene: scene_path.to_string(),
        width: scene.width,
        height: scene.height,
        chips: summary.chips,
        end_to_end_s: summary.seconds,
        end_to_end_chips_per_s: summary.chips_per_s,
        encoder_only_chips_per_s: encoder_only,
        ratio: summary.chips_per_s / encoder_only,
        peak_rss_mib: peak,
        device: summary.device,
        batch: opts.batch,
    })
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("acf-index-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| crate::AcfError::io(&dir, "cannot create", e))?;
    Ok(dir)
}
