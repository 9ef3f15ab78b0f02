//! `acf-index rerank`: stage 2 for candidates chosen elsewhere. An engine that scales (DuckDB,
//! Spark, DataFusion over `parts/*.parquet`) runs stage 1 with the vector of `acf-index
//! embed`; the chip ids it keeps are ranked here by the full ACF score S.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::engine::{QueryResult, hit, open_for, rank, score_chips};
use super::words::QueryReader;
use crate::error::{AcfError, Result};
use crate::model::native::QueryModel;
use crate::storage::{StoredChip, read_rows};

/// Ranks the chips `chip_ids` of the index at `root` against `text` by S; the best `top_k`.
/// Ids that are not in the index are reported (a warning) and left out.
pub fn rerank(
    model: &QueryModel,
    root: &Path,
    text: &str,
    chip_ids: &[String],
    top_k: usize,
    strict: bool,
) -> Result<QueryResult> {
    let index = open_for(root, model)?;
    let read = QueryReader::new(&model.vocab).read(text, strict)?;
    let encoded = model.encode(&read.text())?;
    // chip_id = <scene_id>_<col>_<row>: the scene's record names its part file.
    let live = index.live_parts()?;
    // A part written by `compact` holds several scenes: only this scene's rows are its.
    type Rows = Option<(usize, usize)>;
    let parts: BTreeMap<String, (PathBuf, Rows)> = live
        .parts
        .into_iter()
        .map(|(p, r)| (r.scene_id.clone(), (p, r.rows_in_part().map(|r| (r.start, r.end)))))
        .collect();
    let mut wanted: BTreeMap<&(PathBuf, Rows), HashSet<&str>> = BTreeMap::new();
    let mut missing = Vec::new();
    for id in chip_ids {
        let scene = id.split('_').next().unwrap_or_default();
        match parts.get(scene) {
            Some(part) => {
                wanted.entry(part).or_default().insert(id.as_str());
            }
            None => missing.push(id.as_str()),
        }
    }
    let start = Instant::now();
    let mut chips: Vec<StoredChip> = Vec::new();
    for ((part, range), ids) in &wanted {
        let rows: Option<Vec<usize>> = range.map(|(a, b)| (a..b).collect());
        read_rows(part, rows.as_deref(), 1024, |batch| {
            chips.extend(batch.into_iter().filter(|c| ids.contains(c.chip_id.as_str())));
            Ok(())
        })?;
    }
    let found: HashSet<&str> = chips.iter().map(|c| c.chip_id.as_str()).collect();
    missing.extend(wanted.values().flatten().filter(|id| !found.contains(*id)));
    if !missing.is_empty() {
        tracing::warn!(
            "{} chip id(s) not in the index (left out), e.g. {}",
            missing.len(),
            missing.iter().take(3).copied().collect::<Vec<_>>().join(", ")
        );
    }
    if chips.is_empty() {
        return Err(AcfError::InvalidArgument(format!(
            "none of the {} chip id(s) is in the index {}",
            chip_ids.len(),
            root.display()
        )));
    }
    let refs: Vec<&StoredChip> = chips.iter().collect();
    let scores = score_chips(model, &refs, &encoded)?;
    let hits =
        rank(&scores, top_k).into_iter().enumerate().map(|(r, i)| hit(r + 1, refs[i], scores[i])).collect();
    Ok(QueryResult {
        hits,
        scored: chips.len(),
        stage2_ms: start.elapsed().as_secs_f64() * 1e3,
        ..QueryResult::new(text, &read)
    })
}
