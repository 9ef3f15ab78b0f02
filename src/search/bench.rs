//! `acf-index bench query`: stage-1 and stage-2 times and peak memory on synthetic indexes
//! of the real schema (random unit global vectors, Float16 nodes), cold (page cache of the
//! part files dropped with `posix_fadvise`) and warm. A benchmark: it asserts nothing.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::engine::{QueryOptions, search};
use super::served::search_snapshot;
use crate::error::{AcfError, Result};
use crate::model::ModelIdentity;
use crate::model::native::QueryModel;
use crate::storage::snapshot::Snapshot;
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
    /// `cli`: one `query` (the index opened and read for it) inside this process;
    /// `process`: a whole `acf-index query` process, start to exit (total only);
    /// `served`: a search over the index held in memory as `serve` holds it.
    pub mode: &'static str,
    pub chips: usize,
    pub candidates: usize,
    pub cache: &'static str,
    pub stage1_ms: f64,
    pub stage2_ms: f64,
    pub total_ms: f64,
    /// 99th percentile of the total over the warm runs (served rows).
    pub p99_ms: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

/// Builds (or reuses) a synthetic index of `chips` chips under `dir` for `model`.
pub fn synthetic_index(model: &QueryModel, dir: &Path, chips: usize) -> Result<()> {
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
    model: &QueryModel,
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
            mode: "cli",
            chips,
            candidates,
            cache: if run == 0 { "cold" } else { "warm" },
            stage1_ms: r.stage1_ms,
            stage2_ms: r.stage2_ms,
            total_ms: total,
            p99_ms: None,
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
    rows.extend(bench_one_shot(model, dir, chips, query, candidates, warm_runs)?);
    rows.extend(bench_served(model, dir, chips, query, &opts, (warm_runs * 4).max(20))?);
    Ok(rows)
}

/// Wall time of whole `acf-index query` processes (start, model load, search, output to
/// /dev/null), the front binary beside this one: once cold, then `warm_runs` warm (median,
/// 99th percentile). Stage times are not seen from outside: only the total is reported.
fn bench_one_shot(
    model: &QueryModel,
    dir: &Path,
    chips: usize,
    query: &str,
    candidates: usize,
    warm_runs: usize,
) -> Result<Vec<QueryBench>> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| AcfError::io("acf-index", "cannot find the running binary", e))?
        .with_file_name(format!("acf-index{}", std::env::consts::EXE_SUFFIX));
    let run = || -> Result<f64> {
        let start = Instant::now();
        let status = std::process::Command::new(&exe)
            .arg("-q")
            .arg("query")
            .arg(query)
            .arg("--index")
            .arg(dir)
            .arg("--model")
            .arg(&model.dir)
            .args(["--top-k", "10", "--format", "json", "--candidates", &candidates.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| AcfError::io(&exe, "cannot run", e))?;
        if !status.success() {
            return Err(AcfError::InvalidArgument(format!("{} query failed: {status}", exe.display())));
        }
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    let row = |cache: &'static str, total_ms: f64, p99_ms: Option<f64>| QueryBench {
        mode: "process",
        chips,
        candidates,
        cache,
        stage1_ms: f64::NAN,
        stage2_ms: f64::NAN,
        total_ms,
        p99_ms,
        peak_rss_mib: None,
    };
    drop_page_cache(dir)?;
    let cold = run()?;
    let mut warm: Vec<f64> = (0..(warm_runs * 4).max(20)).map(|_| run()).collect::<Result<_>>()?;
    warm.sort_by(f64::total_cmp);
    let p99 = warm[p99_index(warm.len())];
    Ok(vec![row("cold", cold, None), row("warm", warm[warm.len() / 2], Some(p99))])
}

/// The served search ([`search_snapshot`] over a [`Snapshot`], as `serve` runs it): once
/// with the part files' page cache dropped (stage 1 is in memory either way), then `runs`
/// warm runs (median and 99th percentile of the totals).
fn bench_served(
    model: &QueryModel,
    dir: &Path,
    chips: usize,
    query: &str,
    opts: &QueryOptions,
    runs: usize,
) -> Result<Vec<QueryBench>> {
    let (index, _) = IndexDir::open(dir)?;
    let start = Instant::now();
    let snap = Snapshot::load(&index, model.config().embed_dim as usize, None)?;
    super::served::prepare_prior(model, &snap);
    tracing::info!(
        "served snapshot of {} chips loaded in {:.0} ms",
        snap.chips(),
        start.elapsed().as_secs_f64() * 1e3
    );
    let one = |cache: &'static str| -> Result<QueryBench> {
        let start = Instant::now();
        let r = search_snapshot(model, &snap, query, opts)?;
        Ok(QueryBench {
            mode: "served",
            chips,
            candidates: opts.candidates,
            cache,
            stage1_ms: r.stage1_ms,
            stage2_ms: r.stage2_ms,
            total_ms: start.elapsed().as_secs_f64() * 1e3,
            p99_ms: None,
            peak_rss_mib: crate::device::peak_rss_mib(),
        })
    };
    drop_page_cache(dir)?;
    let cold = one("cold")?;
    let mut warm: Vec<QueryBench> = (0..runs).map(|_| one("warm")).collect::<Result<_>>()?;
    warm.sort_by(|a, b| a.total_ms.total_cmp(&b.total_ms));
    let p99 = warm[p99_index(warm.len())].total_ms;
    let mut median = warm[warm.len() / 2].clone();
    median.p99_ms = Some(p99);
    Ok(vec![cold, median])
}

/// Index of the 99th percentile in `n` sorted values (nearest rank).
fn p99_index(n: usize) -> usize {
    (n * 99).div_ceil(100).saturating_sub(1)
}

/// Stage 1 as `serve` runs it (inner products with every in-memory global vector, the
/// best N kept, blocks of 2,000 chips in parallel) over `chips` synthetic random vectors
/// held in memory only: the stage-1 cost at a size whose part files would not fit this disk.
/// Returns the median of `runs` runs in ms.
pub fn bench_stage1_in_memory(chips: usize, dim: usize, n: usize, runs: usize) -> f64 {
    use rayon::prelude::*;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let globals: Vec<f32> = (0..chips).flat_map(|_| unit(&mut rng, dim)).collect();
    let q = unit(&mut rng, dim);
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            let top = globals
                .par_chunks(CHIPS_PER_PART * dim)
                .enumerate()
                .map(|(b, block)| {
                    let mut top = super::scan::TopN::new(n);
                    for (i, g) in block.chunks_exact(dim).enumerate() {
                        top.push(super::scan::Candidate {
                            at: super::scan::RowRef { file: b, row: i },
                            sim_g: super::scan::dot(g, &q),
                        });
                    }
                    top
                })
                .reduce(
                    || super::scan::TopN::new(n),
                    |mut a, b| {
                        a.merge(b);
                        a
                    },
                );
            std::hint::black_box(top.into_sorted());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
