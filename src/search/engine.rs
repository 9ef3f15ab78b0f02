//! Query orchestration: check the index against the model, encode the queries, run stage 1
//! and stage 2 (or the exhaustive scan), and rank by S.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use tch::{Kind, Tensor};

use super::filters::Filters;
use super::scan::{Candidate, RowRef, TopN, scan};
use super::words::{Mapping, QueryReader, ReadQuery};
use crate::error::{AcfError, Result};
use crate::model::features::l2_normalize;
use crate::model::features::{ImageFeatures, TextFeatures};
use crate::model::model_dir::ModelDir;
use crate::storage::{IndexDir, NodesDtype, SceneStatus, StoredChip, read_features, read_rows};

/// How to search.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Results per query.
    pub top_k: usize,
    /// Stage-1 candidates per query (N).
    pub candidates: usize,
    pub filters: Filters,
    /// Score every chip with S instead of two stages.
    pub exhaustive: bool,
    /// Refuse a query with any word outside the vocabulary instead of mapping it.
    pub strict: bool,
}

/// One result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub rank: usize,
    /// Full ACF score S.
    pub score: f32,
    /// Global cosine similarity (stage 1).
    pub sim_g: f32,
    pub chip_id: String,
    pub scene: String,
    /// Pixel window: col, row, width, height.
    pub window: [i32; 4],
    /// Centre of the footprint's bbox (lon, lat), when georeferenced.
    pub center: Option<[f64; 2]>,
    pub bbox: Option<[f64; 4]>,
    #[serde(skip)]
    pub geometry: Option<Vec<u8>>,
    pub valid_fraction: f32,
    pub acquired_us: Option<i64>,
}

/// Results of one query.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub query: String,
    /// Query words the model does not know and could not map (ignored).
    pub unknown_words: Vec<String>,
    /// The words actually encoded, in order (known words and the readings of mapped ones).
    pub tokens: Vec<String>,
    /// Unknown words read as known ones, and how.
    pub mappings: Vec<Mapping>,
    pub hits: Vec<Hit>,
    /// Chips that passed the filters and were compared in stage 1 (all queries together).
    pub chips_scanned: u64,
    /// Chips scored with S for this query.
    pub scored: usize,
    pub stage1_ms: f64,
    pub stage2_ms: f64,
}

impl QueryResult {
    /// A result with no hits yet for `query`, read as `read`.
    pub fn new(query: &str, read: &ReadQuery) -> QueryResult {
        QueryResult {
            query: query.to_string(),
            unknown_words: read.unknown.clone(),
            tokens: read.tokens.clone(),
            mappings: read.mappings.clone(),
            hits: Vec::new(),
            chips_scanned: 0,
            scored: 0,
            stage1_ms: 0.0,
            stage2_ms: 0.0,
        }
    }
}

/// Opens the index at `root` for searching with `model`, which must be the index's.
pub(crate) fn open_for(root: &Path, model: &ModelDir) -> Result<IndexDir> {
    let (index, header) = IndexDir::open(root)?;
    if header.model_fingerprint != model.fingerprint {
        return Err(header.model_mismatch(
            root,
            model,
            "the query model is",
            "pass --model with the index's model",
        ));
    }
    Ok(index)
}

/// Runs `queries` against the index at `root`.
pub fn search(
    model: &ModelDir,
    root: &Path,
    queries: &[String],
    opts: &QueryOptions,
) -> Result<Vec<QueryResult>> {
    let index = open_for(root, model)?;
    let records = index.records()?;
    let live = index.live_parts()?;
    for (record, reason) in &live.damaged {
        tracing::warn!(
            "{}: skipped: {reason}; rerun acf-index index to repair (the other scenes are searched)",
            record.path
        );
    }
    let damaged = live.damaged.len();
    let live = live.parts;
    if live.is_empty() {
        let failed = records.values().filter(|r| r.status == SceneStatus::Failed).count();
        return Err(AcfError::Index {
            path: root.to_path_buf(),
            reason: format!(
                "the index holds no chips ({} scene records, {failed} failed, {damaged} damaged): run acf-index index first",
                records.len()
            ),
        });
    }
    let (files, ranges): (Vec<PathBuf>, Vec<crate::storage::PartRows>) = crate::storage::part_files(
        live.iter()
            .filter(|(_, r)| {
                opts.filters.scene_ok(&r.path) && opts.filters.collection_ok(r.stac_collection.as_deref())
            })
            .map(|(p, r)| (p, r)),
    )
    .into_iter()
    .unzip();
    let reader = QueryReader::new(&model.model.vocab);
    let reads: Vec<ReadQuery> = queries.iter().map(|q| reader.read(q, opts.strict)).collect::<Result<_>>()?;
    let texts: Vec<String> = reads.iter().map(ReadQuery::text).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (text_feats, _) = model.model.encode_captions(&texts)?;
    let dim = model.config().embed_dim as usize;
    let query_globals: Vec<f32> = Vec::<f32>::try_from(
        text_feats.global.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]),
    )?;
    let file_refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let _guard = tch::no_grad_guard();

    let mut results: Vec<QueryResult> =
        queries.iter().zip(&reads).map(|(q, r)| QueryResult::new(q, r)).collect();
    if opts.exhaustive {
        let start = Instant::now();
        let ranked = exhaustive(model, &file_refs, &ranges, &text_feats, &opts.filters, opts.top_k)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        for (r, (hits, scored)) in results.iter_mut().zip(ranked) {
            r.hits = hits;
            r.scored = scored;
            r.chips_scanned = scored as u64;
            r.stage2_ms = ms;
        }
        return Ok(results);
    }

    let start = Instant::now();
    let (tops, stats) =
        scan(&file_refs, &ranges, &query_globals, dim, &opts.filters, opts.candidates.max(1))?;
    let stage1_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let candidates: Vec<Vec<Candidate>> = tops.into_iter().map(TopN::into_sorted).collect();
    let mut wanted: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for c in candidates.iter().flatten() {
        wanted.entry(c.at.file).or_default().insert(c.at.row);
    }
    // Files are read in parallel; each read touches only the pages of its selected rows.
    // Scoring needs only `global` and `nodes`; the other columns are read for the top k.
    let chips = fetch(&file_refs, wanted, true)?;
    tracing::debug!(ms = start.elapsed().as_secs_f64() * 1e3, rows = chips.len(), "stage 2: features read");
    let mut ranked: Vec<Vec<(RowRef, (f32, f32))>> = Vec::with_capacity(results.len());
    for (qi, (result, cands)) in results.iter_mut().zip(&candidates).enumerate() {
        let kept: Vec<(RowRef, &StoredChip)> =
            cands.iter().filter_map(|c| chips.get(&c.at).map(|s| (c.at, s))).collect();
        let stored: Vec<&StoredChip> = kept.iter().map(|(_, s)| *s).collect();
        let scores = score_chips(model, &stored, &narrow_text(&text_feats, qi))?;
        ranked.push(rank(&scores, opts.top_k).into_iter().map(|i| (kept[i].0, scores[i])).collect());
        result.scored = stored.len();
        result.chips_scanned = stats.chips_scanned;
        result.stage1_ms = stage1_ms;
    }
    let mut top: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (at, _) in ranked.iter().flatten() {
        top.entry(at.file).or_default().insert(at.row);
    }
    let full = fetch(&file_refs, top, false)?;
    for (result, list) in results.iter_mut().zip(ranked) {
        result.hits = list
            .into_iter()
            .filter_map(|(at, sc)| full.get(&at).map(|c| (c, sc)))
            .enumerate()
            .map(|(r, (c, sc))| hit(r + 1, c, sc))
            .collect();
    }
    let stage2_ms = start.elapsed().as_secs_f64() * 1e3;
    for r in &mut results {
        r.stage2_ms = stage2_ms;
    }
    Ok(results)
}

/// Query `i` of a batch of text features.
pub(crate) fn narrow_text(t: &TextFeatures, i: usize) -> TextFeatures {
    let i = i as i64;
    TextFeatures {
        words: t.words.narrow(0, i, 1),
        mask: t.mask.narrow(0, i, 1),
        global: t.global.narrow(0, i, 1),
    }
}

/// Stored chips as image features on the model's device (rows renormalised: Float16
/// storage leaves them within about 1e-3 of unit length).
pub fn chip_features(model: &ModelDir, chips: &[&StoredChip]) -> Result<ImageFeatures> {
    let d = model.config().embed_dim;
    let k = model.config().image.region_grid.pow(2);
    let n = chips.len() as i64;
    let dtype = chips.first().map_or(NodesDtype::F32, |c| c.nodes_dtype);
    for c in chips {
        if c.nodes_dtype != dtype
            || c.nodes.len() as i64 != k * d * dtype.bytes() as i64
            || c.global.len() as i64 != d
        {
            return Err(AcfError::InvalidArgument(format!(
                "chip {}: stored features do not have the model's shape ({k}x{d})",
                c.chip_id
            )));
        }
    }
    // Decoded and renormalised row by row in one pass, chips in parallel (libtorch's
    // convert-then-normalise made three passes over the block and took most of stage 2).
    let per_chip = (k * d) as usize;
    let mut values = vec![0f32; chips.len() * per_chip];
    values.par_chunks_mut(per_chip).zip(chips.par_iter()).for_each(|(out, c)| {
        match dtype {
            NodesDtype::F16 => {
                use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
                // Bytes → bits (the byte buffer need not be 2-aligned), then a slice
                // conversion that uses the CPU's F16C instructions when it has them.
                let bits: Vec<u16> =
                    c.nodes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
                bits.reinterpret_cast::<half::f16>().convert_to_f32_slice(out);
            }
            NodesDtype::F32 => {
                for (o, b) in out.iter_mut().zip(c.nodes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        for row in out.chunks_exact_mut(d as usize) {
            let norm = super::scan::dot(row, row).sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
    });
    let nodes = Tensor::from_slice(&values).view([n, k, d]);
    let global: Vec<f32> = chips.iter().flat_map(|c| c.global.iter().copied()).collect();
    let device = model.model.device();
    Ok(ImageFeatures {
        regions: nodes.to_device(device),
        global: l2_normalize(&Tensor::from_slice(&global).view([n, d]).to_device(device), -1),
    })
}

/// S and sim_g of `chips` against one query, in slices of 256 chips.
pub(crate) fn score_chips(
    model: &ModelDir,
    chips: &[&StoredChip],
    text: &TextFeatures,
) -> Result<Vec<(f32, f32)>> {
    let mut out = Vec::with_capacity(chips.len());
    for slice in chips.chunks(256) {
        let feats = chip_features(model, slice)?;
        let s = model.model.score(&feats, text).to_device(tch::Device::Cpu).to_kind(Kind::Float).view([-1]);
        let g = crate::model::scoring::global_similarity(&feats, text)
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .view([-1]);
        let (s, g) = (Vec::<f32>::try_from(&s)?, Vec::<f32>::try_from(&g)?);
        out.extend(s.into_iter().zip(g));
    }
    Ok(out)
}

/// The best `k` by S (ties: higher sim_g, then stage-1 order).
pub(crate) fn rank(scores: &[(f32, f32)], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        scores[b].0.total_cmp(&scores[a].0).then(scores[b].1.total_cmp(&scores[a].1)).then(a.cmp(&b))
    });
    order.truncate(k);
    order
}

/// Reads the given rows of each file (in parallel over files): features only, or whole rows.
fn fetch(
    files: &[&Path],
    wanted: BTreeMap<usize, BTreeSet<usize>>,
    features_only: bool,
) -> Result<HashMap<RowRef, StoredChip>> {
    let wanted: Vec<(usize, Vec<usize>)> =
        wanted.into_iter().map(|(f, rows)| (f, rows.into_iter().collect())).collect();
    let per_file: Vec<Result<Vec<(RowRef, StoredChip)>>> = wanted
        .par_iter()
        .map(|(file, rows)| {
            let mut out = Vec::with_capacity(rows.len());
            let mut keep = |batch: Vec<StoredChip>| {
                out.extend(batch.into_iter().map(|chip| (RowRef { file: *file, row: chip.row }, chip)));
                Ok(())
            };
            if features_only {
                read_features(files[*file], rows, &mut keep)?;
            } else {
                read_rows(files[*file], Some(rows), 1024, &mut keep)?;
            }
            Ok(out)
        })
        .collect();
    let mut chips = HashMap::new();
    for ((file, _), part) in wanted.iter().zip(per_file) {
        match part {
            Ok(rows) => chips.extend(rows),
            // Pages damaged past the footer: that part's candidates drop out, the rest rank.
            Err(e) => tracing::warn!(
                "{}: skipped: {e}; rerun acf-index index --verify to repair",
                files[*file].display()
            ),
        }
    }
    Ok(chips)
}

pub(crate) fn hit(rank: usize, c: &StoredChip, (score, sim_g): (f32, f32)) -> Hit {
    Hit {
        rank,
        score,
        sim_g,
        chip_id: c.chip_id.clone(),
        scene: c.scene.clone(),
        window: c.window,
        center: c.bbox.map(crate::raster::footprint::bbox_center),
        bbox: c.bbox,
        geometry: c.geometry.clone(),
        valid_fraction: c.valid_fraction,
        acquired_us: c.acquired_us,
    }
}

/// A chip with its (S, sim_g) and place, while the exhaustive scan keeps the best.
type Scored = (StoredChip, (f32, f32), RowRef);

/// Every chip passing the filters, scored with S against every query; the top `k` per query
/// and how many were scored.
fn exhaustive(
    model: &ModelDir,
    files: &[&Path],
    ranges: &[crate::storage::PartRows],
    texts: &TextFeatures,
    filters: &Filters,
    k: usize,
) -> Result<Vec<(Vec<Hit>, usize)>> {
    let q = texts.len() as usize;
    // Keep the best k per query by S; a hit list re-sorted per batch stays small.
    let mut best: Vec<Vec<Scored>> = (0..q).map(|_| Vec::new()).collect();
    let mut scored = 0usize;
    for (fi, path) in files.iter().enumerate() {
        read_rows(path, None, 256, |batch| {
            let batch: Vec<StoredChip> = batch
                .into_iter()
                .filter(|c| {
                    crate::storage::row_wanted(ranges[fi].as_deref(), c.row)
                        && filters.bbox_ok(c.bbox)
                        && filters.time_ok(c.acquired_us)
                })
                .collect();
            if batch.is_empty() {
                return Ok(());
            }
            scored += batch.len();
            let refs: Vec<&StoredChip> = batch.iter().collect();
            let feats = chip_features(model, &refs)?;
            let s = model
                .model
                .score(&feats, texts)
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            let g = crate::model::scoring::global_similarity(&feats, texts)
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            let (s, g) = (Vec::<f32>::try_from(s.view([-1]))?, Vec::<f32>::try_from(g.view([-1]))?);
            for (qi, list) in best.iter_mut().enumerate() {
                for (i, chip) in batch.iter().enumerate() {
                    list.push((
                        chip.clone(),
                        (s[i * q + qi], g[i * q + qi]),
                        RowRef { file: fi, row: chip.row },
                    ));
                }
                list.sort_by(|a, b| {
                    b.1.0.total_cmp(&a.1.0).then(b.1.1.total_cmp(&a.1.1)).then(a.2.cmp(&b.2))
                });
                list.truncate(k);
            }
            Ok(())
        })?;
    }
    Ok(best
        .into_iter()
        .map(|list| (list.iter().enumerate().map(|(r, (c, sc, _))| hit(r + 1, c, *sc)).collect(), scored))
        .collect())
}
