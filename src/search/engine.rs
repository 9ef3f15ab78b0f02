//! Query orchestration: check the index against the model, encode the queries, run stage 1
//! and stage 2 (or the exhaustive scan), and rank by S.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::filters::Filters;
use super::scan::{Candidate, RowRef, TopN, scan};
use super::words::{Mapping, QueryReader, ReadQuery};
use crate::error::{AcfError, Result};
use crate::model::native::{QueryModel, ScoringQuery, Scratch};
use crate::storage::{IndexDir, NodesDtype, PartFile, SceneStatus, StoredChip, read_rows};

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
pub(crate) fn open_for(root: &Path, model: &QueryModel) -> Result<IndexDir> {
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
    model: &QueryModel,
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
    let reader = QueryReader::new(&model.vocab);
    let reads: Vec<ReadQuery> = queries.iter().map(|q| reader.read(q, opts.strict)).collect::<Result<_>>()?;
    let encoded: Vec<ScoringQuery> = reads.iter().map(|r| model.encode(&r.text())).collect::<Result<_>>()?;
    let dim = model.config.embed_dim as usize;
    let query_globals: Vec<f32> = encoded.iter().flat_map(|q| q.text.global.iter().copied()).collect();
    let file_refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();

    let mut results: Vec<QueryResult> =
        queries.iter().zip(&reads).map(|(q, r)| QueryResult::new(q, r)).collect();
    if opts.exhaustive {
        let start = Instant::now();
        let ranked = exhaustive(model, &file_refs, &ranges, &encoded, &opts.filters, opts.top_k)?;
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
    // Files are opened once and read in parallel; each read touches only its rows' bytes.
    // Files laid out for direct reads give their candidates' `global` (2 KB a chip) and the
    // places of their `nodes`, which the scoring threads read into their own buffers; other
    // files go through the Arrow reader. The other columns are read for the top k only.
    let parts = open_parts(&file_refs, wanted.keys().copied());
    tracing::debug!(
        ms = start.elapsed().as_secs_f64() * 1e3,
        files = parts.len(),
        "stage 2: part files opened"
    );
    let direct: HashMap<usize, DirectRows> = wanted
        .par_iter()
        .filter_map(|(f, rows)| {
            let rows: Vec<usize> = rows.iter().copied().collect();
            Some((*f, DirectRows::read(parts.get(f)?, rows, dim)?))
        })
        .collect();
    let rest: BTreeMap<usize, BTreeSet<usize>> =
        wanted.into_iter().filter(|(f, _)| !direct.contains_key(f)).collect();
    let chips = fetch(&file_refs, &parts, rest, |p, rows| p.read_features(rows, dim, None));
    tracing::debug!(
        ms = start.elapsed().as_secs_f64() * 1e3,
        direct = direct.len(),
        "stage 2: features located"
    );
    let mut ranked: Vec<Vec<(RowRef, (f32, f32))>> = Vec::with_capacity(results.len());
    for (qi, (result, cands)) in results.iter_mut().zip(&candidates).enumerate() {
        let scoring = Instant::now();
        let located = |at: RowRef| {
            let d = direct.get(&at.file)?;
            let i = d.rows.binary_search(&at.row).ok()?;
            let (offset, len) = d.places[i];
            Some(Located {
                part: parts.get(&at.file)?,
                at: offset,
                len,
                dtype: d.dtype,
                global: &d.globals[i],
            })
        };
        let kept = score_candidates(model, &encoded[qi], cands, located, |at| chips.get(&at), None)?;
        tracing::debug!(ms = scoring.elapsed().as_secs_f64() * 1e3, chips = kept.len(), "stage 2: scored");
        let scores: Vec<(f32, f32)> = kept.iter().map(|(_, s)| *s).collect();
        ranked.push(rank(&scores, opts.top_k).into_iter().map(|i| kept[i]).collect());
        result.scored = kept.len();
        result.chips_scanned = stats.chips_scanned;
        result.stage1_ms = stage1_ms;
    }
    let mut top: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (at, _) in ranked.iter().flatten() {
        top.entry(at.file).or_default().insert(at.row);
    }
    let full = fetch(&file_refs, &parts, top, PartFile::read_catalog);
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
/// (S, sim_g) of `query` against every chip, chips in parallel. Each chip's nodes are
/// decoded (float16 via the CPU's F16C instructions when it has them) and renormalised row
/// by row into a per-thread buffer that stays in cache, then scored there.
pub(crate) fn score_chips(
    model: &QueryModel,
    chips: &[&StoredChip],
    query: &ScoringQuery,
) -> Result<Vec<(f32, f32)>> {
    score_chips_with(model, chips, query, true)
}

/// [`score_chips`], with the hubness prior subtracted only when `with_prior` (the caller
/// that knows the chips' offsets already subtracts them itself).
fn score_chips_with(
    model: &QueryModel,
    chips: &[&StoredChip],
    query: &ScoringQuery,
    with_prior: bool,
) -> Result<Vec<(f32, f32)>> {
    let d = model.config.embed_dim as usize;
    let k = model.config.image.region_grid.pow(2) as usize;
    for c in chips {
        if c.nodes.len() != k * d * c.nodes_dtype.bytes() || c.global.len() != d {
            return Err(AcfError::InvalidArgument(format!(
                "chip {}: stored features do not have the model's shape ({k}x{d})",
                c.chip_id
            )));
        }
    }
    let mut scores: Vec<(f32, f32)> = chips
        .par_iter()
        .map_init(
            || ChipBuffers::new(k, d),
            |buf, c| buf.score(model, query, &c.nodes, c.nodes_dtype, &c.global),
        )
        .collect();
    if with_prior && let Some(offsets) = prior_offsets_of(model, chips.iter().map(|c| c.global.as_slice())) {
        scores.iter_mut().zip(offsets).for_each(|((s, _), o)| *s -= o);
    }
    Ok(scores)
}

/// The hubness prior's offsets of chips with these (stored) `globals`, all computed
/// together (`QueryModel::prior_offsets`); `None`, without gathering anything, when the
/// model's prior is off.
fn prior_offsets_of<'a>(model: &QueryModel, globals: impl Iterator<Item = &'a [f32]>) -> Option<Vec<f32>> {
    if !model.has_prior() {
        return None;
    }
    let all: Vec<f32> = globals.flatten().copied().collect();
    model.prior_offsets(&all)
}

/// One scoring thread's buffers: a chip's nodes (as read), decoded regions, its global vector.
struct ChipBuffers {
    bytes: Vec<u8>,
    regions: Vec<f32>,
    global: Vec<f32>,
    scratch: Scratch,
}

impl ChipBuffers {
    fn new(k: usize, d: usize) -> ChipBuffers {
        ChipBuffers {
            bytes: Vec::new(),
            regions: vec![0f32; k * d],
            global: vec![0f32; d],
            scratch: Scratch::default(),
        }
    }

    /// (S, sim_g) of one chip from its stored `nodes` bytes and `global` vector, before the
    /// hubness prior (whose offsets [`prior_offsets_of`] computes for all chips together).
    fn score(
        &mut self,
        model: &QueryModel,
        query: &ScoringQuery,
        nodes: &[u8],
        dtype: NodesDtype,
        global: &[f32],
    ) -> (f32, f32) {
        let d = self.global.len();
        decode_nodes(nodes, dtype, &mut self.regions, d);
        self.global.copy_from_slice(global);
        crate::model::native::linalg::normalize(&mut self.global);
        let sim_g = crate::model::native::linalg::dot(&self.global, &query.text.global);
        (model.score(query, &self.regions, sim_g, &mut self.scratch), sim_g)
    }
}

/// A candidate whose `nodes` are read straight from its data page into the scoring thread's
/// buffer (no per-chip allocation): what `serve` scores.
pub(crate) struct Located<'a> {
    pub part: &'a PartFile,
    /// Byte offset and length of the chip's `nodes` value in the file.
    pub at: u64,
    pub len: usize,
    pub dtype: NodesDtype,
    pub global: &'a [f32],
}

/// (S, sim_g) of `query` against every located chip, chips in parallel; `None` for a chip
/// whose bytes cannot be read (each distinct error is logged once). The hubness prior is
/// subtracted only when `with_prior` (see [`score_candidates`]).
pub(crate) fn score_located(
    model: &QueryModel,
    chips: &[Located<'_>],
    query: &ScoringQuery,
    with_prior: bool,
) -> Vec<Option<(f32, f32)>> {
    let d = model.config.embed_dim as usize;
    let k = model.config.image.region_grid.pow(2) as usize;
    let scored: Vec<std::result::Result<(f32, f32), String>> = chips
        .par_iter()
        .map_init(
            || ChipBuffers::new(k, d),
            |buf, c| {
                if c.len != k * d * c.dtype.bytes() || c.global.len() != d {
                    return Err(format!(
                        "{}: stored features do not have the model's shape ({k}x{d})",
                        c.part.path().display()
                    ));
                }
                let mut bytes = std::mem::take(&mut buf.bytes);
                bytes.resize(c.len, 0);
                let read = c.part.read_at(&mut bytes, c.at).map_err(|e| e.to_string());
                let scored = read.map(|()| buf.score(model, query, &bytes, c.dtype, c.global));
                buf.bytes = bytes;
                scored
            },
        )
        .collect();
    let errors: BTreeSet<&String> = scored.iter().filter_map(|r| r.as_ref().err()).collect();
    for e in errors {
        tracing::warn!("{e}: those candidates are skipped; rerun acf-index index --verify to repair");
    }
    let mut out: Vec<Option<(f32, f32)>> = scored.into_iter().map(std::result::Result::ok).collect();
    if with_prior && let Some(offsets) = prior_offsets_of(model, chips.iter().map(|c| c.global)) {
        out.iter_mut().zip(offsets).for_each(|(s, o)| {
            if let Some((s, _)) = s {
                *s -= o;
            }
        });
    }
    out
}

/// A chip's stored nodes (`bytes` of `dtype`) as unit-row float32 (k × D) in `out`.
fn decode_nodes(bytes: &[u8], dtype: NodesDtype, out: &mut [f32], d: usize) {
    match dtype {
        NodesDtype::F16 => {
            use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
            // A slice conversion that uses F16C when the CPU has it, straight from the bytes
            // when they are 2-aligned (they are as allocated), else through a copy.
            match bytemuck::try_cast_slice::<u8, half::f16>(bytes) {
                Ok(halves) => halves.convert_to_f32_slice(out),
                Err(_) => {
                    let bits: Vec<u16> =
                        bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
                    bits.reinterpret_cast::<half::f16>().convert_to_f32_slice(out);
                }
            }
        }
        NodesDtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
    out.chunks_exact_mut(d).for_each(crate::model::native::linalg::normalize);
}

pub(crate) fn rank(scores: &[(f32, f32)], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        scores[b].0.total_cmp(&scores[a].0).then(scores[b].1.total_cmp(&scores[a].1)).then(a.cmp(&b))
    });
    order.truncate(k);
    order
}

/// The candidates of one part file laid out for direct reads: their rows (sorted), `global`
/// vectors and where their `nodes` are.
struct DirectRows {
    rows: Vec<usize>,
    globals: Vec<Vec<f32>>,
    places: Vec<(u64, usize)>,
    dtype: NodesDtype,
}

impl DirectRows {
    fn read(part: &PartFile, rows: Vec<usize>, dim: usize) -> Option<DirectRows> {
        let dtype = part.nodes_dtype()?;
        let places = part.locate_nodes(&rows)?;
        let globals = part.read_global_direct(&rows, dim).ok()??;
        Some(DirectRows { rows, globals, places, dtype })
    }
}

/// (S, sim_g) of `query` for each candidate, in the candidates' (stage 1) order: located ones
/// read and scored by [`score_located`], the others from their read rows by [`score_chips`];
/// candidates that are neither, or whose bytes cannot be read, drop out. The hubness
/// prior's offsets are computed from the candidates' global vectors, or taken from
/// `known_offset` where the caller keeps every chip's (`serve`: computed once per part).
pub(crate) fn score_candidates<'a>(
    model: &QueryModel,
    query: &ScoringQuery,
    candidates: &[Candidate],
    mut located: impl FnMut(RowRef) -> Option<Located<'a>>,
    stored: impl Fn(RowRef) -> Option<&'a StoredChip>,
    known_offset: Option<&dyn Fn(RowRef) -> f32>,
) -> Result<Vec<(RowRef, (f32, f32))>> {
    let with_prior = known_offset.is_none();
    let (mut placed_at, mut placed) = (Vec::new(), Vec::new());
    let (mut rows_at, mut rows) = (Vec::new(), Vec::new());
    for (i, c) in candidates.iter().enumerate() {
        if let Some(l) = located(c.at) {
            placed_at.push(i);
            placed.push(l);
        } else if let Some(s) = stored(c.at) {
            rows_at.push(i);
            rows.push(s);
        }
    }
    let mut scored: Vec<(usize, (f32, f32))> = placed_at
        .into_iter()
        .zip(score_located(model, &placed, query, with_prior))
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .collect();
    scored.extend(rows_at.into_iter().zip(score_chips_with(model, &rows, query, with_prior)?));
    scored.sort_unstable_by_key(|(i, _)| *i);
    Ok(scored
        .into_iter()
        .map(|(i, (s, sim_g))| {
            let at = candidates[i].at;
            (at, (s - known_offset.map_or(0.0, |f| f(at)), sim_g))
        })
        .collect())
}

/// The part files `wanted` (indexes into `files`), opened (footer and page index parsed) in
/// parallel; a file that cannot be opened is reported and its candidates drop out.
fn open_parts(files: &[&Path], wanted: impl Iterator<Item = usize>) -> HashMap<usize, PartFile> {
    let wanted: Vec<usize> = wanted.collect();
    wanted
        .into_par_iter()
        .filter_map(|f| match PartFile::open(files[f]) {
            Ok(part) => Some((f, part)),
            Err(e) => {
                tracing::warn!(
                    "{}: skipped: {e}; rerun acf-index index --verify to repair",
                    files[f].display()
                );
                None
            }
        })
        .collect()
}

/// `read(part, rows)` for the given rows of each open part, in parallel over files.
fn fetch(
    files: &[&Path],
    parts: &HashMap<usize, PartFile>,
    wanted: BTreeMap<usize, BTreeSet<usize>>,
    read: impl Fn(&PartFile, &[usize]) -> Result<Vec<StoredChip>> + Sync,
) -> HashMap<RowRef, StoredChip> {
    let wanted: Vec<(usize, Vec<usize>)> =
        wanted.into_iter().map(|(f, rows)| (f, rows.into_iter().collect())).collect();
    let per_file: Vec<Vec<(RowRef, StoredChip)>> = wanted
        .par_iter()
        .filter_map(|(file, rows)| {
            let part = parts.get(file)?;
            match read(part, rows) {
                Ok(chips) => {
                    Some(chips.into_iter().map(|c| (RowRef { file: *file, row: c.row }, c)).collect())
                }
                // Pages damaged past the footer: that part's candidates drop out, the rest rank.
                Err(e) => {
                    tracing::warn!(
                        "{}: skipped: {e}; rerun acf-index index --verify to repair",
                        files[*file].display()
                    );
                    None
                }
            }
        })
        .collect();
    per_file.into_iter().flatten().collect()
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
    model: &QueryModel,
    files: &[&Path],
    ranges: &[crate::storage::PartRows],
    queries: &[ScoringQuery],
    filters: &Filters,
    k: usize,
) -> Result<Vec<(Vec<Hit>, usize)>> {
    // Keep the best k per query by S; a hit list re-sorted per batch stays small.
    let mut best: Vec<Vec<Scored>> = (0..queries.len()).map(|_| Vec::new()).collect();
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
            for (query, list) in queries.iter().zip(best.iter_mut()) {
                let scores = score_chips(model, &refs, query)?;
                for (chip, sc) in batch.iter().zip(scores) {
                    list.push((chip.clone(), sc, RowRef { file: fi, row: chip.row }));
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
