//! The index directory: `index.json` (which model, which schema), one JSON record per
//! scene under `scenes/`, and the part files under `parts/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::schema::{NodesDtype, SCHEMA_VERSION};
use crate::error::{AcfError, Result};
use crate::files::{sha256_hex, write_atomic};

/// File and folder names inside an index directory.
pub const INDEX_FILE: &str = "index.json";
pub const SCENES_DIR: &str = "scenes";
pub const PARTS_DIR: &str = "parts";

/// `index.json`: fixed when the index is created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexHeader {
    /// Chip-row schema version ([`SCHEMA_VERSION`] of the writer).
    pub schema_version: u32,
    /// sha256 of the model's weights; queries must use the same model.
    pub model_fingerprint: String,
    /// The model's config name (e.g. pvig-nano).
    pub model_name: String,
    /// The model's full config.json.
    pub model_config: serde_json::Value,
    pub nodes_dtype: NodesDtype,
    /// acf-index version that created the index.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The indexing options that change chips, fixed for the index (indexes written before
    /// 0.1.1 lack them until their next run records them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chip_options: Option<ChipOptions>,
}

/// The `index` options that decide which chips exist and what they hold: every scene of an
/// index is chipped with the same ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChipOptions {
    /// `--stride`.
    pub stride: usize,
    /// `--bands` (None: the colour-interpretation default).
    pub bands: Option<Vec<usize>>,
    /// `--scale` (None: the per-scene 2–98 % stretch).
    pub scale: Option<(f64, f64)>,
    /// `--min-valid`.
    pub min_valid: f32,
    /// `--gsd` in metres (None: native resolution; indexes before 0.2 have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsd: Option<f64>,
    /// The model's `image.test_time_views`: views averaged per chip (1 in indexes before 0.3).
    #[serde(default = "crate::model::config::one_view")]
    pub views: u32,
}

impl ChipOptions {
    /// The first option that differs from `other`, as "--flag OTHER" and "THIS", for a message.
    pub fn first_difference(&self, other: &ChipOptions) -> Option<(String, String)> {
        let show = |v: &dyn std::fmt::Debug| format!("{v:?}");
        if self.stride != other.stride {
            return Some((format!("--stride {}", other.stride), self.stride.to_string()));
        }
        if self.bands != other.bands {
            let b = |b: &Option<Vec<usize>>| {
                b.as_ref().map_or("the default".to_string(), |v| {
                    v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
                })
            };
            return Some((format!("--bands {}", b(&other.bands)), b(&self.bands)));
        }
        if self.scale != other.scale {
            let s = |s: &Option<(f64, f64)>| {
                s.map_or("the per-scene stretch".to_string(), |(a, b)| format!("{a},{b}"))
            };
            return Some((format!("--scale {}", s(&other.scale)), s(&self.scale)));
        }
        if self.min_valid != other.min_valid {
            return Some((format!("--min-valid {}", other.min_valid), show(&self.min_valid)));
        }
        if self.gsd != other.gsd {
            let g = |g: &Option<f64>| {
                g.map_or("native resolution (no --gsd)".to_string(), |m| format!("--gsd {m}"))
            };
            return Some((g(&other.gsd), g(&self.gsd)));
        }
        if self.views != other.views {
            let v = |n: u32| format!("image.test_time_views {n} (the model's config.json)");
            return Some((v(other.views), v(self.views)));
        }
        None
    }
}

impl IndexHeader {
    /// The error for a run whose model is not the index's: both models named (`this` says
    /// whose the second is, e.g. "the query model is"), and `hint` (what the user can do).
    /// One message for `index` and `query`.
    pub fn model_mismatch(
        &self,
        root: &Path,
        model: &impl crate::model::ModelIdentity,
        this: &str,
        hint: &str,
    ) -> AcfError {
        AcfError::Index {
            path: root.to_path_buf(),
            reason: format!(
                "built with model {} ({}), {this} {} ({}) from {}: {hint}",
                self.model_name,
                crate::files::short_fingerprint(&self.model_fingerprint),
                model.config().name,
                model.short_fingerprint(),
                model.dir().display()
            ),
        }
    }

    /// The header of a new index of `model`'s features.
    pub fn for_model(
        model: &impl crate::model::ModelIdentity,
        nodes_dtype: NodesDtype,
        created_by: String,
        created_at: u64,
        chip_options: Option<ChipOptions>,
    ) -> Self {
        IndexHeader {
            schema_version: SCHEMA_VERSION,
            model_fingerprint: model.fingerprint().to_string(),
            model_name: model.config().name.clone(),
            model_config: serde_json::to_value(model.config()).unwrap_or_default(),
            nodes_dtype,
            created_by,
            created_at,
            chip_options,
        }
    }
}

/// What identifies a scene's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SceneFingerprint {
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// sha256 of the content (with `--verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl SceneFingerprint {
    /// Short text form stored in every chip row.
    pub fn key(&self) -> String {
        match &self.sha256 {
            Some(h) => format!("{}:{}:{}", self.size, self.mtime_ns, &h[..16.min(h.len())]),
            None => format!("{}:{}", self.size, self.mtime_ns),
        }
    }

    /// Same scene content? Hashes are compared only when both sides have one.
    pub fn same_as(&self, other: &SceneFingerprint, verify: bool) -> bool {
        let stat_same = self.size == other.size && self.mtime_ns == other.mtime_ns;
        match (verify, &self.sha256, &other.sha256) {
            (true, Some(a), Some(b)) => a == b && self.size == other.size,
            (true, _, _) => false,
            (false, _, _) => stat_same,
        }
    }
}

/// Outcome of a scene's last indexing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SceneStatus {
    Ok,
    Failed,
}

/// `scenes/<scene_id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SceneRecord {
    /// The scene as given (absolute local path or GDAL path).
    pub path: String,
    pub scene_id: String,
    pub fingerprint: SceneFingerprint,
    pub status: SceneStatus,
    /// The part file (relative to the index), when chips were written.
    pub part: Option<String>,
    /// Size of the part file in bytes (records written before 0.1.1 lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_bytes: Option<u64>,
    /// sha256 of the part file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_sha256: Option<String>,
    /// This scene's rows of the part file (first row, count) when the part holds several
    /// scenes (written by `compact`); absent: every row of the file is this scene's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_rows: Option<[u64; 2]>,
    /// Chips written.
    pub chips: u64,
    /// Windows not encoded because their valid fraction was under `--min-valid`.
    pub chips_low_valid: u64,
    /// Scene size in pixels (width, height).
    pub size: Option<(u64, u64)>,
    pub crs: Option<String>,
    /// Why the scene failed.
    pub error: Option<String>,
    /// The STAC item and collection, for a scene from `--stac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stac_item: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stac_collection: Option<String>,
    /// Unix seconds.
    pub indexed_at: u64,
    pub seconds: f64,
}

/// The usable part files of an index and the scenes whose part is missing or damaged.
#[derive(Debug, Clone, Default)]
pub struct LiveParts {
    pub parts: Vec<(PathBuf, SceneRecord)>,
    pub damaged: Vec<(SceneRecord, String)>,
}

impl SceneRecord {
    /// This scene's rows of its part file: `None` when the whole file is the scene's.
    pub fn rows_in_part(&self) -> Option<std::ops::Range<usize>> {
        self.part_rows.map(|[first, count]| first as usize..(first + count) as usize)
    }
}

/// Rows of a part file a reader may read (`None`: all), sorted by start.
pub type PartRows = Option<Vec<std::ops::Range<usize>>>;

/// Part files of a set of scene records, each once, with the rows to read (`None`: all):
/// a part written by `compact` holds several scenes, and possibly rows no record names any
/// more (a scene indexed again since), which readers must not see.
pub fn part_files<'a>(
    parts: impl IntoIterator<Item = (&'a PathBuf, &'a SceneRecord)>,
) -> Vec<(PathBuf, PartRows)> {
    let mut files: BTreeMap<PathBuf, PartRows> = BTreeMap::new();
    for (path, record) in parts {
        let entry = files.entry(path.clone()).or_insert_with(|| Some(Vec::new()));
        match (entry.as_mut(), record.rows_in_part()) {
            (Some(ranges), Some(r)) => ranges.push(r),
            _ => *entry = None,
        }
    }
    files
        .into_iter()
        .map(|(p, r)| {
            (
                p,
                r.map(|mut v| {
                    v.sort_by_key(|r| r.start);
                    v
                }),
            )
        })
        .collect()
}

/// Whether `row` is in one of `ranges` (sorted by start; `None` = every row).
pub fn row_wanted(ranges: Option<&[std::ops::Range<usize>]>, row: usize) -> bool {
    ranges.is_none_or(|rs| {
        let i = rs.partition_point(|r| r.start <= row);
        i > 0 && rs[i - 1].contains(&row)
    })
}

/// A scene's stable id: the first 16 hex digits of sha256 of its path.
pub fn scene_id(path: &str) -> String {
    sha256_hex(path.as_bytes())[..16].to_string()
}

/// An index directory on disk.
#[derive(Debug, Clone)]
pub struct IndexDir {
    pub root: PathBuf,
}

impl IndexDir {
    /// Creates the folders (not `index.json`).
    pub fn create(root: &Path) -> Result<IndexDir> {
        for sub in [SCENES_DIR, PARTS_DIR] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| AcfError::io(&d, "cannot create index folder", e))?;
        }
        Ok(IndexDir { root: root.to_path_buf() })
    }

    /// Opens an existing index for reading: it must have an `index.json` of a known schema.
    pub fn open(root: &Path) -> Result<(IndexDir, IndexHeader)> {
        if !root.is_dir() {
            return Err(AcfError::Index {
                path: root.to_path_buf(),
                reason: "no such index directory".into(),
            });
        }
        let dir = IndexDir { root: root.to_path_buf() };
        let header = dir.header()?.ok_or_else(|| AcfError::Index {
            path: root.to_path_buf(),
            reason: format!("not an acf-index index ({INDEX_FILE} is missing)"),
        })?;
        Ok((dir, header))
    }

    /// `index.json`, if the index has one; refuses a newer schema.
    pub fn header(&self) -> Result<Option<IndexHeader>> {
        let path = self.root.join(INDEX_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AcfError::io(&path, "cannot read", e)),
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| AcfError::Index { path: path.clone(), reason: format!("invalid JSON: {e}") })?;
        let version = value.get("schema_version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version > SCHEMA_VERSION as u64 {
            return Err(AcfError::Index {
                path,
                reason: format!(
                    "written by a newer acf-index (schema {version}; this build reads up to {SCHEMA_VERSION}): upgrade acf-index"
                ),
            });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| AcfError::Index { path, reason: format!("invalid index header: {e}") })
    }

    /// Writes `index.json` atomically.
    pub fn write_header(&self, header: &IndexHeader) -> Result<()> {
        let text = serde_json::to_string_pretty(header)
            .map_err(|e| AcfError::Serialize { what: "index header".into(), reason: e.to_string() })?;
        write_atomic(&self.root.join(INDEX_FILE), text.as_bytes())
    }

    /// Path of a scene's record.
    pub fn record_path(&self, scene_id: &str) -> PathBuf {
        self.root.join(SCENES_DIR).join(format!("{scene_id}.json"))
    }

    /// A scene's record, if any (an unreadable record counts as none: the scene is redone).
    pub fn record(&self, scene_id: &str) -> Option<SceneRecord> {
        let text = std::fs::read_to_string(self.record_path(scene_id)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Replaces a scene's record atomically.
    pub fn write_record(&self, record: &SceneRecord) -> Result<()> {
        let text = serde_json::to_string_pretty(record)
            .map_err(|e| AcfError::Serialize { what: "scene record".into(), reason: e.to_string() })?;
        write_atomic(&self.record_path(&record.scene_id), text.as_bytes())
    }

    /// All scene records, by scene id.
    pub fn records(&self) -> Result<BTreeMap<String, SceneRecord>> {
        let dir = self.root.join(SCENES_DIR);
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(AcfError::io(&dir, "cannot list scene records", e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| AcfError::io(&dir, "cannot list scene records", e))?.path();
            if path.extension().is_some_and(|x| x == "json") {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| AcfError::io(&path, "cannot read", e))?;
                let record: SceneRecord = serde_json::from_str(&text).map_err(|e| AcfError::Index {
                    path: path.clone(),
                    reason: format!("invalid scene record: {e}"),
                })?;
                out.insert(record.scene_id.clone(), record);
            }
        }
        Ok(out)
    }

    /// Live part files (named by an ok record, present and of the recorded size), with
    /// their records; and the ok scenes whose part is missing or damaged, with the reason.
    pub fn live_parts(&self) -> Result<LiveParts> {
        let mut live = LiveParts::default();
        for record in self.records()?.into_values() {
            if let (SceneStatus::Ok, Some(part)) = (record.status, &record.part) {
                match self.part_problem(&record) {
                    None => live.parts.push((self.root.join(part), record)),
                    Some(reason) => live.damaged.push((record, reason)),
                }
            }
        }
        Ok(live)
    }

    /// Why an ok scene's part file cannot be used (missing, or not the size its record
    /// says), or `None` when it looks whole. A cheap check (one `stat`); the checksum is
    /// compared by [`IndexDir::part_checksum_ok`].
    pub fn part_problem(&self, record: &SceneRecord) -> Option<String> {
        let part = record.part.as_ref()?;
        let path = self.root.join(part);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(format!("its part file {part} is missing"))
            }
            Err(e) => Some(format!("its part file {part} cannot be read: {e}")),
            Ok(m) if !m.is_file() => Some(format!("its part file {part} is not a file")),
            Ok(m) => match record.part_bytes {
                Some(expected) if expected != m.len() => Some(format!(
                    "its part file {part} is {} bytes, {expected} when written: damaged",
                    m.len()
                )),
                _ => None,
            },
        }
    }

    /// True when the scene's part file has the sha256 of its record (or the record has none).
    pub fn part_checksum_ok(&self, record: &SceneRecord) -> bool {
        let (Some(part), Some(expected)) = (&record.part, &record.part_sha256) else { return true };
        let Ok(mut file) = std::fs::File::open(self.root.join(part)) else { return false };
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher).is_ok() && &crate::files::hex(&hasher.finalize()) == expected
    }

    /// Relative path of the part file for a scene content + model; deterministic so that a
    /// rerun after a crash rewrites the same name instead of adding a duplicate.
    pub fn part_name(scene_id: &str, fingerprint: &SceneFingerprint, model_fingerprint: &str) -> String {
        let key = sha256_hex(format!("{}|{model_fingerprint}", fingerprint.key()).as_bytes());
        format!("{PARTS_DIR}/{scene_id}-{}.parquet", &key[..12])
    }

    /// Part files (and temporary files) of `scene_id` other than `keep`: leftovers of a run
    /// that died between publishing a part and recording it, or of an older version.
    pub fn stale_files(&self, scene_id: &str, keep: Option<&str>) -> Vec<PathBuf> {
        let dir = self.root.join(PARTS_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let keep = keep.map(|k| self.root.join(k));
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let name = name.strip_prefix('.').unwrap_or(&name);
                name.starts_with(&format!("{scene_id}-")) && Some(p) != keep.as_ref()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(size: u64, sha: Option<&str>) -> SceneFingerprint {
        SceneFingerprint { size, mtime_ns: 7, sha256: sha.map(String::from) }
    }

    #[test]
    fn fingerprints_compare_stat_or_hash() {
        assert!(fp(1, None).same_as(&fp(1, None), false));
        assert!(!fp(1, None).same_as(&fp(2, None), false));
        assert!(!fp(1, None).same_as(&fp(1, Some("ab")), true), "--verify needs a stored hash");
        assert!(fp(1, Some("ab")).same_as(&fp(1, Some("ab")), true));
        assert!(!fp(1, Some("ab")).same_as(&fp(1, Some("cd")), true));
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INDEX_FILE), r#"{"schema_version": 99}"#).unwrap();
        let err = IndexDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("newer acf-index"), "{err}");
        let err = IndexDir::open(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("no such index directory"), "{err}");
    }

    #[test]
    fn test_time_views_are_a_chip_option() {
        // Headers written before views were recorded read as one view.
        let old: ChipOptions =
            serde_json::from_str(r#"{"stride": 224, "bands": null, "scale": null, "min_valid": 0.5}"#)
                .unwrap();
        assert_eq!(old.views, 1);
        let eight = ChipOptions { views: 8, ..old.clone() };
        let (given, kept) = old.first_difference(&eight).unwrap();
        assert!(
            given.contains("test_time_views 8") && kept.contains("test_time_views 1"),
            "{given} / {kept}"
        );
        assert!(old.first_difference(&old.clone()).is_none());
    }

    #[test]
    fn stale_files_are_those_of_the_scene_except_the_live_part() {
        let dir = tempfile::tempdir().unwrap();
        let index = IndexDir::create(dir.path()).unwrap();
        for name in ["aaaa-1.parquet", "aaaa-2.parquet", ".aaaa-3.parquet.tmp", "bbbb-1.parquet"] {
            std::fs::write(dir.path().join(PARTS_DIR).join(name), b"x").unwrap();
        }
        let mut stale = index.stale_files("aaaa", Some("parts/aaaa-1.parquet"));
        stale.sort();
        let names: Vec<_> =
            stale.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec![".aaaa-3.parquet.tmp", "aaaa-2.parquet"]);
    }
}
