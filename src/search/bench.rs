//! `acf-index bench query`: stage-1 and stage-2 times and peak memory on synthetic indexes
//! of the real schema (random unit global vectors, Float16 nodes), cold (page cache of the
//! part files dropped with `posix_fadvise`) and warm. A benchmark: it asserts nothing.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::engine::{QueryOptions, search};
use crate::error::{AcfError, Result};
use crate::model::model_dir::ModelDir;
use crate::storage::{
    ChipRow, ChipSchema, IndexDir, IndexHeader, NodesDtype, PartWriter, SceneFingerprint, SceneMeta, scene_id,
};

/// Chips per synthetic part file (one "scene" each).
const CHIPS_PER_PART: usize = 2000;
/// Distinct random node blocks, reused round-robin (generation time, not realism, is the
/// limit; stage 2 reads the bytes whatever they hold).
const NODE_BLOCKS: usize = 256;

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct QueryBench {
    pub chips: usize,
    pub candidates: usize,
    pub cache: &'static str,
    pub stage1_ms: f64,
    pub stage2_ms: f64,
    pub total_ms: f64,
    pub peak_rss_mib: Option<f64>,
}

/// Builds (or reuses) a synthetic index of `chips` chips under `dir` for `model`.
pub fn synthetic_index(model: &ModelDir, dir: &Path, chips: usize) -> Result<()> {
    let (index, header) = match IndexDir::open(dir) {
        Ok((index, header)) if header.model_fingerprint == model.fingerprint => (index, header),
        _ => {
            let _ = std::fs::remove_dir_all(dir);
            let index = IndexDir::create(dir)?;
            let header = IndexHeader::for_model(
                model,
                NodesDtype::F16,
                "acf-index bench query (synthetic)".into(),
                0,
                None,
            );
            index.write_header(&header)?;
            (index, header)
        }
    };
    if index.live_parts()?.parts.iter().map(|(_, r)| r.chips as usize).sum::<usize>() == chips {
        return Ok(());
    }
    let d = model.config().embed_dim as usize;
    let k = model.config().image.region_grid.pow(2) as usize;
    let schema = ChipSchema { embed_dim: d, regions: k, nodes_dtype: header.nodes_dtype };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let blocks: Vec<Vec<f32>> =
        (0..NODE_BLOCKS).map(|_| (0..k).flat_map(|_| unit(&mut rng, d)).collect()).collect();
    let mut written = 0usize;
    let mut part_no = 0usize;
    while written < chips {
        let n = CHIPS_PER_PART.min(chips - written);
        let path = format!("synthetic://scene-{part_no:05}");
        let id = scene_id(&path);
        let fingerprint = SceneFingerprint { size: n as u64, mtime_ns: 0, sha256: None };
        let name = IndexDir::part_name(&id, &fingerprint, &model.fingerprint);
        let mut w = PartWriter::create(&index.root.join(&name), schema, "{}", None)?;
        for i in 0..n {
            w.push(ChipRow {
                chip_id: format!("{id}_{i}"),
                scene: path.clone(),
                scene_fingerprint: fingerprint.key(),
                window: [(i % 50) as i32 * 224, (i / 50) as i32 * 224, 224, 224],
                padded: false,
                crs: Some("EPSG:4326".into()),
                footprint: None,
                valid_fraction: 1.0,
                acquired_us: None,
                stac_item: None,
                stac_collection: None,
                global: unit(&mut rng, d),
                nodes: blocks[(written + i) % NODE_BLOCKS].clone(),
            })?;
        }
        let meta = SceneMeta {
            path,
            scene_id: id,
            fingerprint,
            size: None,
            crs: Some("EPSG:4326".into()),
            stac_item: None,
            stac_collection: None,
        };
        index.commit_scene(&meta, Some(w), 0, 0.0)?;
        written += n;
        part_no += 1;
    }
    Ok(())
}

fn unit(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / norm).collect()
}

/// Drops the page cache of every file under `dir` (clean pages only; ours are fsynced).
pub fn drop_page_cache(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    for entry in
        walkdir::WalkDir::new(dir).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file())
    {
        let file =
            std::fs::File::open(entry.path()).map_err(|e| AcfError::io(entry.path(), "cannot open", e))?;
        // SAFETY: advisory call on an open descriptor.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    Ok(())
}

/// Measures one query (cold, then `warm_runs` warm, reporting the median warm run).
pub fn bench_query(
    model: &ModelDir,
    dir: &Path,
    chips: usize,
    query: &str,
    candidates: usize,
    warm_runs: usize,
) -> Result<Vec<QueryBench>> {
    let opts =
        QueryOptions { top_k: 10, candidates, filters: Default::default(), exhaustive: false, strict: false };
    let mut rows = Vec::new();
    drop_page_cache(dir)?;
    let mut runs = Vec::new();
    for run in 0..=warm_runs.max(1) {
        let start = Instant::now();
        let r = search(model, dir, &[query.to_string()], &opts)?;
        let total = start.elapsed().as_secs_f64() * 1e3;
        let r = &r[0];
        let row = QueryBench {
            chips,
            candidates,
            cache: if run == 0 { "cold" } else { "warm" },
            stage1_ms: r.stage1_ms,
            stage2_ms: r.stage2_ms,
            total_ms: total,
            peak_rss_mib: crate::device::peak_rss_mib(),
        };
        if run == 0 {
            rows.push(row);
        } else {
            runs.push(row);
        }
    }
    runs.sort_by(|a, b| a.total_ms.total_cmp(&b.total_ms));
    rows.push(runs[runs.len() / 2].clone());
    Ok(rows)
}
