//! Search over an index held in memory ([`Snapshot`]): what `acf-index serve` runs per
//! request. Stage 1 compares the query's global vector with every chip's (in memory, no
//! file read); stage 2 reads `global` and `nodes` of the N candidates from the part files,
//! whose footers are already parsed, and ranks them by S exactly like `query`.

use std::collections::BTreeMap;
use std::time::Instant;

use rayon::prelude::*;

use super::engine::{Hit, Located, QueryOptions, QueryResult, rank, score_candidates};
use super::scan::{Candidate, RowRef, TopN, dot};
use super::words::QueryReader;
use crate::error::{AcfError, Result};
use crate::model::native::QueryModel;
use crate::storage::StoredChip;
use crate::storage::snapshot::{SceneSlice, Snapshot};

/// Runs one query against `snap` (exhaustive search is not offered here: it reads every
/// chip's nodes).
pub fn search_snapshot(
    model: &QueryModel,
    snap: &Snapshot,
    query: &str,
    opts: &QueryOptions,
) -> Result<QueryResult> {
    let reader = QueryReader::new(&model.vocab);
    let read = reader.read(query, opts.strict)?;
    let encoded = model.encode(&read.text())?;
    let q = &encoded.text.global;
    let mut result = QueryResult::new(query, &read);
    let f = &opts.filters;
    let start = Instant::now();
    let per_row = f.needs_columns();
    let n = opts.candidates.max(opts.top_k).max(1);
    let (top, scanned) = snap
        .slices
        .par_iter()
        .enumerate()
        .filter(|(_, s)| f.scene_ok(&s.record.path) && f.collection_ok(s.record.stac_collection.as_deref()))
        .map(|(si, s)| {
            let mut top = TopN::new(n);
            let mut scanned = 0u64;
            for row in s.rows.clone() {
                let c = &s.part.chips[row];
                if per_row && !(f.bbox_ok(c.bbox) && f.time_ok(c.acquired_us)) {
                    continue;
                }
                scanned += 1;
                top.push(Candidate { at: RowRef { file: si, row }, sim_g: dot(s.part.global(row), q) });
            }
            (top, scanned)
        })
        .reduce(
            || (TopN::new(n), 0),
            |(mut a, sa), (b, sb)| {
                a.merge(b);
                (a, sa + sb)
            },
        );
    result.chips_scanned = scanned;
    result.stage1_ms = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let candidates = top.into_sorted();
    let mut wanted: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for c in &candidates {
        wanted.entry(c.at.file).or_default().push(c.at.row);
    }
    // Candidates of files laid out for direct reads are read into the scoring threads' own
    // buffers (see `score_located`); any other file goes through the Arrow reader.
    let mut places: std::collections::HashMap<RowRef, Located<'_>> = Default::default();
    let mut other: Vec<(usize, Vec<usize>)> = Vec::new();
    for (si, mut rows) in wanted {
        rows.sort_unstable();
        let part = &snap.slices[si].part;
        match (part.file.locate_nodes(&rows), part.file.nodes_dtype()) {
            (Some(found), Some(dtype)) => places.extend(rows.iter().zip(found).map(|(&row, (at, len))| {
                let chip = Located { part: &part.file, at, len, dtype, global: part.global(row) };
                (RowRef { file: si, row }, chip)
            })),
            _ => other.push((si, rows)),
        }
    }
    let read: Vec<Vec<(RowRef, StoredChip)>> = other
        .into_par_iter()
        .map(|(si, rows)| {
            let slice = &snap.slices[si];
            match read_candidates(slice, &rows) {
                Ok(chips) => chips.into_iter().map(|c| (RowRef { file: si, row: c.row }, c)).collect(),
                Err(e) => {
                    // Pages damaged past the footer: that scene's candidates drop out.
                    tracing::warn!(
                        "{}: skipped: {e}; rerun acf-index index --verify to repair",
                        slice.record.path
                    );
                    Vec::new()
                }
            }
        })
        .collect();
    let read: std::collections::HashMap<RowRef, StoredChip> = read.into_iter().flatten().collect();
    // The hubness prior is a constant per chip: taken from each part's offsets, computed
    // once (see `prepare_prior`), instead of from the bank on every search.
    let known = |at: RowRef| snap.slices[at.file].part.row_offsets(|g| prior_offsets(model, g))[at.row];
    let known: Option<&dyn Fn(RowRef) -> f32> = if model.has_prior() { Some(&known) } else { None };
    let kept =
        score_candidates(model, &encoded, &candidates, |at| places.remove(&at), |at| read.get(&at), known)?;
    let scores: Vec<(f32, f32)> = kept.iter().map(|(_, s)| *s).collect();
    result.scored = kept.len();
    tracing::debug!(ms = start.elapsed().as_secs_f64() * 1e3, "stage 2: read and scored");
    result.hits = rank(&scores, opts.top_k)
        .into_iter()
        .enumerate()
        .map(|(r, i)| {
            let at = kept[i].0;
            let slice = &snap.slices[at.file];
            let c = &slice.part.chips[at.row];
            let (score, sim_g) = scores[i];
            Hit {
                rank: r + 1,
                score,
                sim_g,
                chip_id: c.chip_id.clone(),
                scene: slice.part.scene(at.row).to_string(),
                window: c.window,
                center: c.bbox.map(crate::raster::footprint::bbox_center),
                bbox: c.bbox,
                geometry: c.geometry.as_ref().map(|g| g.to_vec()),
                valid_fraction: c.valid_fraction,
                acquired_us: c.acquired_us,
            }
        })
        .collect();
    result.stage2_ms = start.elapsed().as_secs_f64() * 1e3;
    if snap.slices.is_empty() {
        return Err(AcfError::InvalidArgument("the index holds no chips yet".into()));
    }
    Ok(result)
}

/// Computes the hubness prior's offset of every chip of `snap` that has none yet (the parts
/// a refresh loaded), parts in parallel, so that searches only look them up: `serve` calls
/// it after each load. Nothing to do when the model's prior is off.
pub fn prepare_prior(model: &QueryModel, snap: &Snapshot) {
    if !model.has_prior() {
        return;
    }
    let start = Instant::now();
    let parts: Vec<_> = snap.parts().collect();
    parts.par_iter().for_each(|p| {
        p.row_offsets(|g| prior_offsets(model, g));
    });
    tracing::debug!(ms = start.elapsed().as_secs_f64() * 1e3, "hubness prior offsets ready");
}

/// The prior's offsets of a part's row-major `globals` (zeros when it is off).
fn prior_offsets(model: &QueryModel, globals: &[f32]) -> Vec<f32> {
    let d = model.config.embed_dim as usize;
    model.prior_offsets(globals).unwrap_or_else(|| vec![0.0; globals.len() / d])
}

/// The candidates' features, their `global` from memory (see [`PartFile::read_features`]).
///
/// [`PartFile::read_features`]: crate::storage::PartFile::read_features
fn read_candidates(slice: &SceneSlice, rows: &[usize]) -> Result<Vec<StoredChip>> {
    let part = &slice.part;
    part.file.read_features(rows, part.dim, Some(&|row| part.global(row).to_vec()))
}
