//! Stage 1: `sim_g` of every chip against every query, reading only the `global` column
//! (and `bbox` / `acquired` when filtering) through [`GlobalReader`], row groups skipped by
//! their statistics, files scanned in parallel; the top N per query are kept.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;

use super::filters::{Filters, intersects};
use crate::error::Result;
use crate::storage::{GlobalReader, RowGroupSummary};

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
    /// Part files that could not be read (each reported).
    pub files_skipped: usize,
}

/// One empty top-N per query (`queries` holds Q vectors of `dim` floats).
fn empty_tops(queries: &[f32], dim: usize, n: usize) -> Vec<TopN> {
    (0..queries.len() / dim.max(1)).map(|_| TopN::new(n)).collect()
}

pub use crate::model::native::linalg::dot;

/// Offers the chip at `at`, global vector `global`, to every query's top-N.
#[inline]
fn offer(tops: &mut [TopN], queries: &[f32], global: &[f32], at: RowRef) {
    for (top, query) in tops.iter_mut().zip(queries.chunks_exact(global.len())) {
        let sim_g = dot(global, query);
        top.push(Candidate { at, sim_g });
    }
}

/// Scans `files` for every query (`queries`: Q global text vectors of D floats, flattened)
/// and returns the best `n` chips per query.
pub fn scan(
    files: &[&Path],
    ranges: &[crate::storage::PartRows],
    queries: &[f32],
    dim: usize,
    filters: &Filters,
    n: usize,
) -> Result<(Vec<TopN>, ScanStats)> {
    let per_file: Vec<Result<(Vec<TopN>, ScanStats)>> = files
        .par_iter()
        .enumerate()
        .map(|(i, path)| {
            scan_file(i, path, ranges.get(i).and_then(Option::as_deref), queries, dim, filters, n)
        })
        .collect();
    let mut tops = empty_tops(queries, dim, n);
    let mut stats = ScanStats::default();
    let mut first_error = None;
    for (r, path) in per_file.into_iter().zip(files) {
        // A damaged part (unreadable footer or pages) costs its own chips only.
        let (file_tops, s) = match r {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("{}: skipped: {e}; rerun acf-index index --verify to repair", path.display());
                stats.files_skipped += 1;
                first_error.get_or_insert(e);
                continue;
            }
        };
        for (t, f) in tops.iter_mut().zip(file_tops) {
            t.merge(f);
        }
        stats.chips_scanned += s.chips_scanned;
        stats.row_groups_read += s.row_groups_read;
        stats.row_groups_skipped += s.row_groups_skipped;
    }
    match first_error {
        Some(e) if stats.files_skipped == files.len() => Err(e),
        _ => Ok((tops, stats)),
    }
}

fn scan_file(
    file_index: usize,
    path: &Path,
    rows: Option<&[Range<usize>]>,
    queries: &[f32],
    dim: usize,
    filters: &Filters,
    n: usize,
) -> Result<(Vec<TopN>, ScanStats)> {
    let mut tops = empty_tops(queries, dim, n);
    let mut stats = ScanStats::default();
    let reader = GlobalReader::open(path)?;
    let (groups, skipped): (Vec<RowGroupSummary>, Vec<RowGroupSummary>) =
        reader.row_groups().into_iter().partition(|g| {
            row_group_may_match(g, filters)
                && rows
                    .is_none_or(|rs| rs.iter().any(|r| r.start < g.first_row + g.rows && g.first_row < r.end))
        });
    stats.row_groups_read = groups.len();
    stats.row_groups_skipped = skipped.len();
    let filtered = filters.needs_columns();
    reader.for_each(&groups, dim, filtered, |chip| {
        if filtered && !(filters.bbox_ok(chip.bbox) && filters.time_ok(chip.acquired_us)) {
            return;
        }
        if !crate::storage::row_wanted(rows, chip.row) {
            return;
        }
        stats.chips_scanned += 1;
        offer(&mut tops, queries, chip.global, RowRef { file: file_index, row: chip.row });
    })?;
    Ok((tops, stats))
}

/// False when the row group's statistics prove no chip in it can pass the filters.
fn row_group_may_match(group: &RowGroupSummary, filters: &Filters) -> bool {
    let Some(q) = filters.bbox else { return true };
    match group.bbox_extent {
        Some(extent) => intersects(q, extent),
        // No statistics: either every bbox is null (nothing can match) or unknown.
        None => !group.no_footprints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..515).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..515).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-4);
        assert_eq!(dot(&[], &[]), 0.0);
    }

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
