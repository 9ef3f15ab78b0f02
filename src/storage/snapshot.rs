//! An index held in memory for a long-running reader (`acf-index serve`): every live chip's
//! metadata and `global` vector, and each part file open with its footer and page index
//! parsed, so a search reads only the `nodes` pages of its candidates.
//!
//! A [`Snapshot`] is immutable and consistent at the scene level: built from one reading of
//! the scene records, each scene's rows come from the part file its record named. A new
//! snapshot reuses the loaded parts that did not change, so picking up a nightly run's
//! scenes costs only the new parts. Open handles keep a replaced part readable, so a search
//! that started on the old snapshot finishes on it.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use super::chip_reader::{CATALOG_COLUMNS, PartFile};
use super::index_dir::{IndexDir, SceneRecord};
use crate::error::{AcfError, Result};

/// What a search needs of one chip besides its vectors.
#[derive(Debug, Clone)]
pub struct ChipMeta {
    pub chip_id: String,
    /// Pixel window: col, row, width, height.
    pub window: [i32; 4],
    pub bbox: Option<[f64; 4]>,
    /// WKB footprint.
    pub geometry: Option<Box<[u8]>>,
    pub valid_fraction: f32,
    pub acquired_us: Option<i64>,
}

/// One part file, loaded.
pub struct LoadedPart {
    pub file: PartFile,
    /// The `scene` column's value (one scene per part as written by `index`; see
    /// [`SceneSlice`] for shared parts).
    pub scenes: Vec<Arc<str>>,
    /// Per row: index into `scenes`.
    pub scene_of_row: Vec<u32>,
    pub chips: Vec<ChipMeta>,
    /// Row-major `rows × dim` global vectors.
    pub globals: Vec<f32>,
    pub dim: usize,
    /// A per-row constant that the searcher derives from `globals` (the hubness prior's
    /// offsets), computed once and kept with the part, so across refreshes too.
    row_offsets: std::sync::OnceLock<Vec<f32>>,
}

impl LoadedPart {
    /// Reads every chip's metadata and global vector of the part at `path`.
    pub fn load(path: &Path, dim: usize) -> Result<LoadedPart> {
        let file = PartFile::open(path)?;
        let rows = file.num_rows();
        let mut part = LoadedPart {
            file: file.clone(),
            scenes: Vec::new(),
            scene_of_row: Vec::with_capacity(rows),
            chips: Vec::with_capacity(rows),
            globals: Vec::with_capacity(rows * dim),
            dim,
            row_offsets: std::sync::OnceLock::new(),
        };
        let mut scene_ids: HashMap<String, u32> = HashMap::new();
        file.read(None, 4096, CATALOG_COLUMNS, |batch| {
            for c in batch {
                if c.global.len() != dim {
                    return Err(AcfError::Index {
                        path: path.to_path_buf(),
                        reason: format!("global vectors of {} floats, the model makes {dim}", c.global.len()),
                    });
                }
                let next = part.scenes.len() as u32;
                let id = *scene_ids.entry(c.scene.clone()).or_insert_with(|| {
                    part.scenes.push(Arc::from(c.scene.as_str()));
                    next
                });
                part.scene_of_row.push(id);
                part.globals.extend_from_slice(&c.global);
                part.chips.push(ChipMeta {
                    chip_id: c.chip_id,
                    window: c.window,
                    bbox: c.bbox,
                    geometry: c.geometry.map(Vec::into_boxed_slice),
                    valid_fraction: c.valid_fraction,
                    acquired_us: c.acquired_us,
                });
            }
            Ok(())
        })?;
        Ok(part)
    }

    /// The global vector of row `row`.
    pub fn global(&self, row: usize) -> &[f32] {
        &self.globals[row * self.dim..(row + 1) * self.dim]
    }

    /// Every row's offset, from `compute(globals)` the first time it is asked for (one
    /// searcher, so one model, per loaded part: `serve` and `bench query`).
    pub fn row_offsets(&self, compute: impl FnOnce(&[f32]) -> Vec<f32>) -> &[f32] {
        self.row_offsets.get_or_init(|| compute(&self.globals))
    }

    /// The scene path of row `row`.
    pub fn scene(&self, row: usize) -> &str {
        &self.scenes[self.scene_of_row[row] as usize]
    }

    /// Bytes held in memory (roughly).
    pub fn memory_bytes(&self) -> usize {
        self.globals.len() * 4
            + self
                .chips
                .iter()
                .map(|c| {
                    std::mem::size_of::<ChipMeta>()
                        + c.chip_id.len()
                        + c.geometry.as_ref().map_or(0, |g| g.len())
                })
                .sum::<usize>()
    }
}

/// One scene's rows of a loaded part.
#[derive(Clone)]
pub struct SceneSlice {
    pub record: Arc<SceneRecord>,
    pub part: Arc<LoadedPart>,
    pub rows: Range<usize>,
}

/// The identity of a part as its record describes it: a changed file is loaded again.
type PartKey = (String, Option<u64>, Option<String>);

fn key(record: &SceneRecord) -> Option<PartKey> {
    Some((record.part.clone()?, record.part_bytes, record.part_sha256.clone()))
}

/// The live scenes of an index, in memory.
#[derive(Default)]
pub struct Snapshot {
    pub slices: Vec<SceneSlice>,
    /// Scenes whose part is missing or damaged, with the reason (reported, not searched).
    pub damaged: Vec<(String, String)>,
    /// Chip id → (slice, row), for thumbnails.
    by_chip: HashMap<String, (usize, usize)>,
    parts: HashMap<PartKey, Arc<LoadedPart>>,
}

impl Snapshot {
    /// Reads the records of `index` and loads every live part, reusing the parts of
    /// `previous` that did not change. A part removed between reading the records and
    /// opening it (a writer replaced it) makes the records be read again.
    pub fn load(index: &IndexDir, dim: usize, previous: Option<&Snapshot>) -> Result<Snapshot> {
        let mut attempt = 0;
        loop {
            match Self::load_once(index, dim, previous) {
                Err(AcfError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempt < 5 =>
                {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
                }
                other => return other,
            }
        }
    }

    fn load_once(index: &IndexDir, dim: usize, previous: Option<&Snapshot>) -> Result<Snapshot> {
        let live = index.live_parts()?;
        let wanted: HashMap<PartKey, std::path::PathBuf> =
            live.parts.iter().filter_map(|(path, record)| Some((key(record)?, path.clone()))).collect();
        let loaded: Vec<(PartKey, Result<Arc<LoadedPart>>)> = wanted
            .into_par_iter()
            .map(|(k, path)| {
                let part = match previous.and_then(|p| p.parts.get(&k)) {
                    Some(part) => Ok(part.clone()),
                    None => LoadedPart::load(&path, dim).map(Arc::new),
                };
                (k, part)
            })
            .collect();
        let mut parts = HashMap::new();
        let mut damaged: Vec<(String, String)> =
            live.damaged.iter().map(|(r, why)| (r.path.clone(), why.clone())).collect();
        for (k, r) in loaded {
            match r {
                Ok(p) => {
                    parts.insert(k, p);
                }
                Err(e) if is_not_found(&e) => return Err(e),
                // A damaged part costs its own scenes only.
                Err(e) => {
                    for (_, record) in live.parts.iter().filter(|(_, r)| key(r).as_ref() == Some(&k)) {
                        damaged.push((record.path.clone(), e.to_string()));
                    }
                }
            }
        }
        let mut snap = Snapshot { damaged, parts, ..Snapshot::default() };
        for (_, record) in live.parts {
            let Some(part) = key(&record).and_then(|k| snap.parts.get(&k)).cloned() else { continue };
            let n = part.chips.len();
            let rows = match record.part_rows {
                Some([first, count]) => (first as usize).min(n)..((first + count) as usize).min(n),
                None => 0..n,
            };
            let at = snap.slices.len();
            for row in rows.clone() {
                snap.by_chip.insert(part.chips[row].chip_id.clone(), (at, row));
            }
            snap.slices.push(SceneSlice { record: Arc::new(record), part, rows });
        }
        Ok(snap)
    }

    /// Chips searched.
    pub fn chips(&self) -> usize {
        self.slices.iter().map(|s| s.rows.len()).sum()
    }

    /// The loaded parts (each once).
    pub fn parts(&self) -> impl Iterator<Item = &Arc<LoadedPart>> {
        self.parts.values()
    }

    /// Part files held open.
    pub fn part_files(&self) -> usize {
        self.parts.len()
    }

    /// Bytes held in memory (roughly).
    pub fn memory_bytes(&self) -> usize {
        self.parts.values().map(|p| p.memory_bytes()).sum()
    }

    /// The slice and row of a chip id.
    pub fn find(&self, chip_id: &str) -> Option<(&SceneSlice, usize)> {
        self.by_chip.get(chip_id).map(|&(s, row)| (&self.slices[s], row))
    }
}

fn is_not_found(e: &AcfError) -> bool {
    matches!(e, AcfError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}
