//! The commit protocol of a scene: how its chips become visible to readers, and how a
//! failure is recorded. Readers list a scene's rows only through its record
//! (`scenes/<scene_id>.json` → `parts/<name>.parquet`), so the order below keeps every
//! crash point on either the old or the new version of the scene, whole:
//!
//! 1. the new part file is complete and fsynced under a temporary name, then renamed to its
//!    final name (deterministic from scene content + model, so a rerun after a crash
//!    rewrites the same name instead of adding another);
//! 2. the scene record is replaced atomically (temp + fsync + rename) to name the new part:
//!    this is the commit point;
//! 3. the scene's other part files (the previous version, leftovers of a crash) are removed.
//!
//! A crash before 2 leaves the old record naming the old part (the new one is an orphan
//! that the next run removes); after 2, the new record names the new part (the old one is
//! an orphan). Tools that glob `parts/*.parquet` directly can see an orphan until the next
//! run cleans it up; `acf-index` itself never does.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::index_dir::{IndexDir, SceneFingerprint, SceneRecord, SceneStatus};
use super::lock::WriterLock;
use super::part::PartWriter;
use crate::error::Result;

/// What the writer knows of a scene when it commits or fails it.
#[derive(Debug, Clone)]
pub struct SceneMeta {
    /// The scene as given (absolute local path or GDAL path).
    pub path: String,
    pub scene_id: String,
    pub fingerprint: SceneFingerprint,
    /// Scene size in pixels, when it could be opened.
    pub size: Option<(u64, u64)>,
    pub crs: Option<String>,
    /// STAC item and collection, for a scene from `--stac`.
    pub stac_item: Option<String>,
    pub stac_collection: Option<String>,
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl IndexDir {
    /// Takes the writer lock(s) of this index (see [`WriterLock`]).
    pub fn lock_writer(&self, shard: Option<(usize, usize)>) -> Result<WriterLock> {
        WriterLock::acquire(&self.root, shard)
    }

    /// Publishes a scene's new part (or none, for a scene without chips), records it, then
    /// removes the scene's older part files, in the order of the module documentation.
    pub fn commit_scene(
        &self,
        scene: &SceneMeta,
        part: Option<PartWriter>,
        chips_low_valid: u64,
        seconds: f64,
    ) -> Result<SceneRecord> {
        let chips = part.as_ref().map_or(0, |p| p.rows()) as u64;
        let published = part.map(PartWriter::publish).transpose()?;
        let part = published.as_ref().map(|p| self.relative(&p.path));
        crate::faults::crash_point("commit:before-record");
        let record = SceneRecord {
            path: scene.path.clone(),
            scene_id: scene.scene_id.clone(),
            fingerprint: scene.fingerprint.clone(),
            status: SceneStatus::Ok,
            part: part.clone(),
            part_bytes: published.as_ref().map(|p| p.bytes),
            part_sha256: published.map(|p| p.sha256),
            chips,
            chips_low_valid,
            size: scene.size,
            crs: scene.crs.clone(),
            error: None,
            stac_item: scene.stac_item.clone(),
            stac_collection: scene.stac_collection.clone(),
            part_rows: None,
            indexed_at: now_s(),
            seconds,
        };
        self.write_record(&record)?;
        crate::faults::crash_point("commit:before-cleanup");
        self.remove_stale(&scene.scene_id, part.as_deref());
        Ok(record)
    }

    /// Records that a scene failed (its reason in the record) and removes its part files:
    /// a failed scene has no rows.
    pub fn record_failure(&self, scene: &SceneMeta, reason: &str) -> Result<()> {
        let record = SceneRecord {
            path: scene.path.clone(),
            scene_id: scene.scene_id.clone(),
            fingerprint: scene.fingerprint.clone(),
            status: SceneStatus::Failed,
            part: None,
            part_bytes: None,
            part_sha256: None,
            chips: 0,
            chips_low_valid: 0,
            size: scene.size,
            crs: scene.crs.clone(),
            error: Some(reason.to_string()),
            stac_item: scene.stac_item.clone(),
            stac_collection: scene.stac_collection.clone(),
            part_rows: None,
            indexed_at: now_s(),
            seconds: 0.0,
        };
        self.write_record(&record)?;
        self.remove_stale(&scene.scene_id, None);
        Ok(())
    }

    /// Removes a scene from the index: its record first (from then on no reader sees it),
    /// then its part files.
    pub fn remove_scene(&self, scene_id: &str) -> Result<()> {
        let record = self.record_path(scene_id);
        match std::fs::remove_file(&record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(crate::error::AcfError::io(&record, "cannot remove scene record", e));
            }
            _ => crate::files::sync_dir_of(&record),
        }
        self.remove_stale(scene_id, None);
        Ok(())
    }

    /// Removes the scene's part and temporary files other than `keep` (best effort: a file
    /// left behind is not named by any record, and the next run tries again).
    pub fn remove_stale(&self, scene_id: &str, keep: Option<&str>) {
        for stale in self.stale_files(scene_id, keep) {
            if let Err(e) = std::fs::remove_file(&stale)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("{}: cannot remove old part file: {e}", stale.display());
            }
        }
    }

    /// `path` relative to the index root (as records store it).
    fn relative(&self, path: &std::path::Path) -> String {
        path.strip_prefix(&self.root)
            .map(PathBuf::from)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string()
    }
}
