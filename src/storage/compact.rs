//! `acf-index compact`: merges small part files (one per scene, as `index` writes them)
//! into fewer large ones, so that the per-file costs of a query (footer, page index, one
//! open per file) stop growing with the number of scenes.
//!
//! Crash-safe by the same order as indexing: the merged part is published (renamed in)
//! first; then each scene's record is replaced, atomically, by one naming the merged part and
//! the scene's rows in it (`part_rows`); only then are the old parts removed. Every record
//! names a complete file at every moment, and readers take a scene's rows from the part its
//! record names, so a reader sees each chip once whichever records it read before or after
//! the change. A killed compaction leaves an index that is correct (some scenes moved,
//! others not); files no record names are removed when the next compaction starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::chip_reader::PartFile;
use super::index_dir::{IndexDir, PARTS_DIR, SceneRecord};
use super::part::PartWriter;
use super::schema::ChipSchema;
use crate::error::{AcfError, Result};

/// What to merge.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Merged files grow to about this size; parts of half of it or more stay as they are.
    pub target_bytes: u64,
    /// Only report what would be merged.
    pub dry_run: bool,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactReport {
    pub part_files_before: usize,
    pub part_files_after: usize,
    pub scenes_moved: usize,
    pub files_written: usize,
    pub bytes_written: u64,
    /// Files no record named any more (leftovers of a killed run or of scenes indexed again).
    pub unreferenced_removed: usize,
    pub seconds: f64,
}

struct SourceFile {
    path: PathBuf,
    bytes: u64,
    records: Vec<SceneRecord>,
}

impl IndexDir {
    /// Merges small part files (see the module documentation). Holds the writer lock: an
    /// `index` run cannot write meanwhile, and a compaction refuses to start during one.
    pub fn compact(&self, schema: ChipSchema, opts: &CompactOptions) -> Result<CompactReport> {
        let start = Instant::now();
        let _lock = self.lock_writer(None)?;
        let mut report = CompactReport::default();
        // A killed compaction's half-written file goes first: it may be as large as the
        // file this run is about to write.
        if !opts.dry_run {
            report.unreferenced_removed = self.remove_unreferenced()?;
        }
        let live = self.live_parts()?;
        for (record, why) in &live.damaged {
            tracing::warn!("{}: left as it is: {why}; rerun acf-index index to repair", record.path);
        }
        let mut by_file: BTreeMap<PathBuf, SourceFile> = BTreeMap::new();
        for (path, record) in live.parts {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            by_file
                .entry(path.clone())
                .or_insert_with(|| SourceFile { path, bytes, records: Vec::new() })
                .records
                .push(record);
        }
        report.part_files_before = by_file.len();
        // Small files only; a file across the antimeridian keeps its own (its statistics
        // must not be mixed with others': see `GlobalReader`).
        let mut small: Vec<(SourceFile, PartFile)> = Vec::new();
        for (_, f) in by_file {
            if f.bytes >= opts.target_bytes / 2 {
                continue;
            }
            let part = match PartFile::open(&f.path) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("{}: left as it is: {e}", f.path.display());
                    continue;
                }
            };
            if part.geo_bbox().is_some_and(|b| b[0] > b[2]) {
                continue;
            }
            small.push((f, part));
        }
        let mut groups: Vec<Vec<(SourceFile, PartFile)>> = Vec::new();
        let mut size = 0u64;
        for item in small {
            if groups.is_empty() || size + item.0.bytes > opts.target_bytes {
                groups.push(Vec::new());
                size = 0;
            }
            size += item.0.bytes;
            if let Some(g) = groups.last_mut() {
                g.push(item);
            }
        }
        groups.retain(|g| g.len() > 1);
        let merged_files: usize = groups.iter().map(Vec::len).sum();
        if opts.dry_run {
            report.files_written = groups.len();
            report.scenes_moved = groups.iter().flatten().map(|(f, _)| f.records.len()).sum();
            report.part_files_after = report.part_files_before - merged_files + groups.len();
            report.seconds = start.elapsed().as_secs_f64();
            return Ok(report);
        }
        for group in groups {
            let (written, moved) = self.merge(schema, &group)?;
            report.files_written += 1;
            report.bytes_written += written;
            report.scenes_moved += moved;
        }
        report.unreferenced_removed += self.remove_unreferenced()?;
        report.part_files_after =
            self.live_parts()?.parts.iter().map(|(p, _)| p).collect::<BTreeSet<_>>().len();
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Writes one merged part of `group`, points its scenes' records at it, removes the old
    /// parts; returns the bytes written and the scenes moved.
    fn merge(&self, schema: ChipSchema, group: &[(SourceFile, PartFile)]) -> Result<(u64, usize)> {
        let mut key = String::new();
        for (f, _) in group {
            for r in &f.records {
                key.push_str(&format!(
                    "{}|{}|{:?};",
                    r.scene_id,
                    r.part_sha256.as_deref().unwrap_or(""),
                    r.part_rows
                ));
            }
        }
        let name = format!("{PARTS_DIR}/merged-{}.parquet", &crate::files::sha256_hex(key.as_bytes())[..16]);
        let bbox = group
            .iter()
            .filter_map(|(_, p)| p.geo_bbox())
            .reduce(|a, b| [a[0].min(b[0]), a[1].min(b[1]), a[2].max(b[2]), a[3].max(b[3])]);
        let acf = group.first().and_then(|(_, p)| p.acf_metadata()).unwrap_or_else(|| "{}".into());
        let mut writer = PartWriter::create(&self.root.join(&name), schema, &acf, bbox)?;
        let mut moved: Vec<(SceneRecord, [u64; 2])> = Vec::new();
        for (f, part) in group {
            for record in &f.records {
                let first = writer.rows() as u64;
                part.read_batches(record.rows_in_part(), |batch| writer.push_batch(&batch))?;
                let count = writer.rows() as u64 - first;
                if count != record.chips {
                    return Err(AcfError::Index {
                        path: f.path.clone(),
                        reason: format!(
                            "holds {count} rows of scene {}, its record says {}: left as it is",
                            record.path, record.chips
                        ),
                    });
                }
                moved.push((record.clone(), [first, count]));
            }
        }
        crate::faults::crash_point("compact:before-publish");
        let published = writer.publish()?;
        crate::faults::crash_point("compact:before-records");
        for (i, (old, rows)) in moved.iter().enumerate() {
            let record = SceneRecord {
                part: Some(name.clone()),
                part_bytes: Some(published.bytes),
                part_sha256: Some(published.sha256.clone()),
                part_rows: Some(*rows),
                ..old.clone()
            };
            self.write_record(&record)?;
            if i == 0 {
                crate::faults::crash_point("compact:after-first-record");
            }
        }
        crate::faults::crash_point("compact:before-cleanup");
        for (f, _) in group {
            if let Err(e) = std::fs::remove_file(&f.path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("{}: cannot remove merged part file: {e}", f.path.display());
            }
        }
        crate::files::sync_dir_of(&self.root.join(&name));
        tracing::info!(file = %name, scenes = moved.len(), parts = group.len(), bytes = published.bytes, "merged");
        Ok((published.bytes, moved.len()))
    }

    /// Removes part files (and temporary files) that no record names. Only safe while
    /// holding the writer lock exclusively (no writer has a file in flight).
    fn remove_unreferenced(&self) -> Result<usize> {
        let named: BTreeSet<PathBuf> =
            self.records()?.values().filter_map(|r| r.part.as_ref().map(|p| self.root.join(p))).collect();
        let dir = self.root.join(PARTS_DIR);
        let entries = std::fs::read_dir(&dir).map_err(|e| AcfError::io(&dir, "cannot list part files", e))?;
        let mut removed = 0;
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.is_file() && !named.contains(&path) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
