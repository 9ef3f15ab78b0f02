//! Stage 1: `sim_g` of every chip against every query, reading only the `global` column
//! (and `bbox` / `acquired` when filtering), row groups skipped by their statistics, files
//! scanned in parallel; the top N per query are kept.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, FixedSizeListArray, Float32Array, Float64Array, StructArray};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::statistics::Statistics;
use rayon::prelude::*;

use super::filters::{Filters, intersects};
use crate::error::{AcfError, Result};

/// A chip's place: part file (index into the query's file list) and row in that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowRef {
    pub file: usize,
    pub row: usize,
}

/// A stage-1 candidate.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub at: RowRef,
    pub sim_g: f32,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Higher `sim_g` first; ties by position, so results are deterministic.
    fn cmp(&self, other: &Self) -> Ordering {
        other.sim_g.total_cmp(&self.sim_g).then(self.at.cmp(&other.at))
    }
}

/// The best `n` candidates seen so far (a heap whose top is the worst kept).
#[derive(Debug, Clone)]
pub struct TopN {
    n: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopN {
    pub fn new(n: usize) -> TopN {
        TopN { n, heap: BinaryHeap::with_capacity(n.min(1 << 16) + 1) }
    }

    /// Offers a candidate.
    #[inline]
    pub fn push(&mut self, c: Candidate) {
        if self.heap.len() < self.n {
            self.heap.push(c);
        } else if let Some(worst) = self.heap.peek()
            && c < *worst
        {
            self.heap.pop();
            self.heap.push(c);
        }
    }

    /// Merges another top-N into this one.
    pub fn merge(&mut self, other: TopN) {
        for c in other.heap {
            self.push(c);
        }
    }

    /// The kept candidates, best first.
    pub fn into_sorted(self) -> Vec<Candidate> {
        let mut v = self.heap.into_vec();
        v.sort();
        v
    }
}

/// Stage-1 statistics.
#[derive(Debug, Clone, Default)]
pub struct ScanStats {
    pub chips_scanned: u64,
    pub row_groups_read: usize,
    pub row_groups_skipped: usize,
}

/// One empty top-N per query (`queries` holds Q vectors of `dim` floats).
fn empty_tops(queries: &[f32], dim: usize, n: usize) -> Vec<TopN> {
    (0..queries.len() / dim.max(1)).map(|_| TopN::new(n)).collect()
}

/// Offers the chip at `at`, global vector `global`, to every query's top-N.
#[inline]
fn offer(tops: &mut [TopN], queries: &[f32], global: &[f32], at: RowRef) {
    for (top, query) in tops.iter_mut().zip(queries.chunks_exact(global.len())) {
        let sim_g: f32 = global.iter().zip(query).map(|(a, b)| a * b).sum();
        top.push(Candidate { at, sim_g });
    }
}

/// Scans `files` for every query (`queries`: Q global text vectors of D floats, flattened)
/// and returns the best `n` chips per query.
pub fn scan(
    files: &[&Path],
    queries: &[f32],
    dim: usize,
    filters: &Filters,
    n: usize,
) -> Result<(Vec<TopN>, ScanStats)> {
    let per_file: Vec<Result<(Vec<TopN>, ScanStats)>> =
        files.par_iter().enumerate().map(|(i, path)| scan_file(i, path, queries, dim, filters, n)).collect();
    let mut tops = empty_tops(queries, dim, n);
    let mut stats = ScanStats::default();
    for r in per_file {
        let (file_tops, s) = r?;
        for (t, f) in tops.iter_mut().zip(file_tops) {
            t.merge(f);
        }
        stats.chips_scanned += s.chips_scanned;
        stats.row_groups_read += s.row_groups_read;
        stats.row_groups_skipped += s.row_groups_skipped;
    }
    Ok((tops, stats))
}

/// Opens a part file's Parquet metadata (and the reader builder).
pub fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| AcfError::io(path, "cannot open part file", e))?;
    open_file(path, file)
}

fn open_file(path: &Path, file: File) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| AcfError::Index {
        path: path.to_path_buf(),
        reason: format!("not a readable Parquet file: {e}"),
    })
}

/// Index of a top-level column by name.
pub fn root_index(builder_meta: &ParquetMetaData, name: &str, path: &Path) -> Result<usize> {
    let schema = builder_meta.file_metadata().schema_descr();
    schema.root_schema().get_fields().iter().position(|f| f.name() == name).ok_or_else(|| AcfError::Index {
        path: path.to_path_buf(),
        reason: format!("no '{name}' column: not an acf-index part file"),
    })
}

fn scan_file(
    file_index: usize,
    path: &Path,
    queries: &[f32],
    dim: usize,
    filters: &Filters,
    n: usize,
) -> Result<(Vec<TopN>, ScanStats)> {
    let mut tops = empty_tops(queries, dim, n);
    let mut stats = ScanStats::default();
    // One open and one footer parse serve both the page fast path and the Arrow reader.
    let file = File::open(path).map_err(|e| AcfError::io(path, "cannot open part file", e))?;
    let builder =
        open_file(path, file.try_clone().map_err(|e| AcfError::io(path, "cannot open part file", e))?)?;
    let meta = builder.metadata().clone();
    let mut columns = vec![root_index(&meta, "global", path)?];
    if filters.needs_columns() {
        columns.push(root_index(&meta, "bbox", path)?);
        columns.push(root_index(&meta, "acquired", path)?);
    }
    // Row groups that can hold a match, with the file row number each one starts at.
    let mut groups = Vec::new();
    let mut starts = Vec::new();
    let mut start = 0usize;
    for (i, rg) in meta.row_groups().iter().enumerate() {
        if row_group_may_match(rg, filters) {
            groups.push(i);
            starts.push(start);
        } else {
            stats.row_groups_skipped += 1;
        }
        start += rg.num_rows() as usize;
    }
    stats.row_groups_read = groups.len();
    if groups.is_empty() {
        return Ok((tops, stats));
    }
    if !filters.needs_columns()
        && let Some(fast) = scan_pages(file_index, Arc::new(file), &meta, &groups, &starts, queries, dim, n)
    {
        stats.chips_scanned = groups.iter().map(|&g| meta.row_group(g).num_rows() as u64).sum();
        return Ok((fast, stats));
    }
    let mask = ProjectionMask::roots(meta.file_metadata().schema_descr(), columns);
    let reader = builder
        .with_projection(mask)
        .with_row_groups(groups.clone())
        .with_batch_size(4096)
        .build()
        .map_err(|e| bad(path, e))?;
    // Batches never span row groups of different starts? They may: track rows per group.
    let mut group = 0usize;
    let mut in_group = 0usize;
    let group_rows: Vec<usize> = groups.iter().map(|&g| meta.row_group(g).num_rows() as usize).collect();
    for batch in reader {
        let batch = batch
            .map_err(|e| AcfError::Index { path: path.to_path_buf(), reason: format!("cannot read: {e}") })?;
        // A projection keeps the file's column order, whatever order it was asked in.
        let global = batch
            .column_by_name("global")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
            .ok_or_else(|| not_global(path))?;
        let values =
            global.values().as_any().downcast_ref::<Float32Array>().ok_or_else(|| not_global(path))?;
        if global.value_length() as usize != dim {
            return Err(AcfError::Index {
                path: path.to_path_buf(),
                reason: format!("global vectors of {} floats, the model makes {dim}", global.value_length()),
            });
        }
        let values = &values.values()[global.offset() * dim..];
        let (bbox, acquired) = if filters.needs_columns() {
            (
                batch.column_by_name("bbox").and_then(|c| c.as_struct_opt().cloned()),
                batch
                    .column_by_name("acquired")
                    .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>().cloned()),
            )
        } else {
            (None, None)
        };
        for i in 0..batch.num_rows() {
            while in_group >= group_rows[group] {
                group += 1;
                in_group = 0;
            }
            let row = starts[group] + in_group;
            in_group += 1;
            if let Some(b) = &bbox
                && !filters.bbox_ok(bbox_at(b, i))
            {
                continue;
            }
            if let Some(a) = &acquired
                && !filters.time_ok(a.is_valid(i).then(|| a.value(i)))
            {
                continue;
            }
            stats.chips_scanned += 1;
            offer(&mut tops, queries, &values[i * dim..(i + 1) * dim], RowRef { file: file_index, row });
        }
    }
    Ok((tops, stats))
}

/// Unfiltered scan through [`global_column`](super::global_column); `None` when the file
/// does not allow it (then the Arrow reader does the scan).
#[allow(clippy::too_many_arguments)]
fn scan_pages(
    file_index: usize,
    file: Arc<File>,
    meta: &ParquetMetaData,
    groups: &[usize],
    starts: &[usize],
    queries: &[f32],
    dim: usize,
    n: usize,
) -> Option<Vec<TopN>> {
    let column = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == "global.list.item")?;
    let mut tops = empty_tops(queries, dim, n);
    for (&g, &start) in groups.iter().zip(starts) {
        let values = super::global_column::read_row_group(&file, meta.row_group(g), column, dim)?;
        for (i, v) in values.chunks_exact(dim).enumerate() {
            offer(&mut tops, queries, v, RowRef { file: file_index, row: start + i });
        }
    }
    Some(tops)
}

/// The `[xmin, ymin, xmax, ymax]` of row `i` of a `bbox` struct column (None when null).
pub fn bbox_at(b: &StructArray, i: usize) -> Option<[f64; 4]> {
    if b.is_null(i) {
        return None;
    }
    let f = |k: usize| b.column(k).as_any().downcast_ref::<Float64Array>().map(|a| a.value(i));
    Some([f(0)?, f(1)?, f(2)?, f(3)?])
}

/// False when the row group's statistics prove no chip in it can pass the filters.
fn row_group_may_match(rg: &RowGroupMetaData, filters: &Filters) -> bool {
    if let Some(q) = filters.bbox {
        let stat = |name: &str, max: bool| -> Option<f64> {
            let col = rg.columns().iter().find(|c| c.column_path().string() == name)?;
            match col.statistics()? {
                Statistics::Double(s) => {
                    if max {
                        s.max_opt().copied()
                    } else {
                        s.min_opt().copied()
                    }
                }
                _ => None,
            }
        };
        // The smallest xmin / ymin and largest xmax / ymax of the group bound all its boxes.
        match (
            stat("bbox.xmin", false),
            stat("bbox.ymin", false),
            stat("bbox.xmax", true),
            stat("bbox.ymax", true),
        ) {
            (Some(a), Some(b), Some(c), Some(d)) => {
                if !intersects(q, [a, b, c, d]) {
                    return false;
                }
            }
            _ => {
                // No statistics: either every bbox is null (nothing can match) or unknown.
                let all_null = rg
                    .columns()
                    .iter()
                    .find(|c| c.column_path().string() == "bbox.xmin")
                    .and_then(|c| c.statistics())
                    .and_then(|s| s.null_count_opt())
                    .is_some_and(|nulls| nulls as i64 == rg.num_rows());
                if all_null {
                    return false;
                }
            }
        }
    }
    true
}

fn not_global(path: &Path) -> AcfError {
    AcfError::Index {
        path: path.to_path_buf(),
        reason: "the 'global' column is not a list of float32".into(),
    }
}

fn bad(path: &Path, e: parquet::errors::ParquetError) -> AcfError {
    AcfError::Index { path: path.to_path_buf(), reason: format!("cannot read Parquet: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_keeps_the_best_in_order_with_deterministic_ties() {
        let mut t = TopN::new(3);
        for (i, s) in [0.1f32, 0.9, 0.5, 0.9, 0.2, 0.7].iter().enumerate() {
            t.push(Candidate { at: RowRef { file: 0, row: i }, sim_g: *s });
        }
        let v: Vec<(usize, f32)> = t.into_sorted().iter().map(|c| (c.at.row, c.sim_g)).collect();
        assert_eq!(v, vec![(1, 0.9), (3, 0.9), (5, 0.7)]);
    }
}
