//! The index a server searches: a [`Snapshot`] swapped whole when the index changes, so a
//! search sees the index before or after a scene was published, never half of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use crate::error::{AcfError, Result};
use crate::model::native::QueryModel;
use crate::storage::snapshot::Snapshot;
use crate::storage::{INDEX_FILE, IndexDir, PARTS_DIR, SCENES_DIR};

/// What changes when a writer publishes: the scene records' and part files' directories
/// (a rename into or out of a directory updates its mtime) and the header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<SystemTime>>);

impl Stamp {
    fn of(root: &Path) -> Stamp {
        let mtime = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Stamp(vec![mtime(root.join(SCENES_DIR)), mtime(root.join(PARTS_DIR)), mtime(root.join(INDEX_FILE))])
    }
}

/// How often the whole index is checked even when no directory changed.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// The served index and how fresh it is.
pub struct LiveIndex {
    pub root: PathBuf,
    index: IndexDir,
    model_fingerprint: String,
    dim: usize,
    /// The model searches score with: each new snapshot gets its hubness-prior offsets from
    /// it before it is swapped in, so no search pays for them.
    model: Arc<QueryModel>,
    current: RwLock<Arc<Snapshot>>,
    /// The stamp of the last load and when it was taken.
    stamp: std::sync::Mutex<Option<(Stamp, Instant)>>,
    /// When the snapshot was last rebuilt (for `/api/info`).
    loaded_at: RwLock<SystemTime>,
}

impl LiveIndex {
    /// Opens the index for `model` (which must be the index's) and loads it.
    pub fn open(root: &Path, model: Arc<QueryModel>) -> Result<LiveIndex> {
        let index = crate::search::engine::open_for(root, &model)?;
        let live = LiveIndex {
            root: root.to_path_buf(),
            index,
            model_fingerprint: model.fingerprint.clone(),
            dim: model.config.embed_dim as usize,
            model,
            current: RwLock::new(Arc::new(Snapshot::default())),
            stamp: std::sync::Mutex::new(None),
            loaded_at: RwLock::new(SystemTime::now()),
        };
        live.refresh()?;
        Ok(live)
    }

    /// The snapshot to search now (a search keeps it for its whole run).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().map_or_else(|p| p.into_inner().clone(), |s| s.clone())
    }

    /// When the current snapshot was built.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at.read().map_or_else(|p| *p.into_inner(), |t| *t)
    }

    /// Rebuilds the snapshot when the index changed since the last look (or a minute has
    /// passed: damage done in place, which no directory mtime shows, is found then); returns
    /// whether it did. A failed rebuild keeps the old snapshot.
    pub fn refresh(&self) -> Result<bool> {
        let stamp = Stamp::of(&self.root);
        let mut last =
            self.stamp.lock().map_err(|_| AcfError::Thread("index refresh lock poisoned".into()))?;
        if let Some((s, at)) = last.as_ref()
            && *s == stamp
            && at.elapsed() < RECHECK
        {
            return Ok(false);
        }
        let header = self.index.header()?.ok_or_else(|| AcfError::Index {
            path: self.root.clone(),
            reason: "index.json is gone: not an index any more".into(),
        })?;
        if header.model_fingerprint != self.model_fingerprint {
            return Err(AcfError::Index {
                path: self.root.clone(),
                reason: "the index was rebuilt with another model: restart serve with that model".into(),
            });
        }
        let start = Instant::now();
        let previous = self.snapshot();
        let next = Snapshot::load(&self.index, self.dim, Some(&previous))?;
        crate::search::served::prepare_prior(&self.model, &next);
        for (scene, why) in &next.damaged {
            if !previous.damaged.iter().any(|(s, _)| s == scene) {
                tracing::warn!("{scene}: not searched: {why}; rerun acf-index index to repair");
            }
        }
        let changed = (next.chips(), next.slices.len(), next.part_files())
            != (previous.chips(), previous.slices.len(), previous.part_files());
        let ms = format!("{:.0}", start.elapsed().as_secs_f64() * 1e3);
        let (chips, scenes, part_files) = (next.chips(), next.slices.len(), next.part_files());
        let memory_mib = next.memory_bytes() / (1 << 20);
        if changed {
            tracing::info!(chips, scenes, part_files, memory_mib, ms, "index loaded");
        } else {
            tracing::debug!(chips, scenes, part_files, memory_mib, ms, "index checked");
        }
        *self.current.write().map_err(|_| AcfError::Thread("snapshot lock poisoned".into()))? =
            Arc::new(next);
        if let Ok(mut t) = self.loaded_at.write() {
            *t = SystemTime::now();
        }
        *last = Some((stamp, Instant::now()));
        Ok(true)
    }
}
