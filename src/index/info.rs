//! `acf-index info`: what an index holds (scenes, chips, model, bytes per chip, CRSs,
//! failures), from its records and part files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::storage::{IndexDir, SceneStatus};

/// Summary of an index directory.
#[derive(Debug, Clone, Serialize)]
pub struct IndexInfo {
    pub path: String,
    pub schema_version: u32,
    pub model_name: String,
    pub model_fingerprint: String,
    pub nodes_dtype: String,
    pub scenes_ok: usize,
    pub scenes_failed: usize,
    pub chips: u64,
    pub chips_low_valid: u64,
    pub part_files: usize,
    pub bytes: u64,
    pub bytes_per_chip: Option<f64>,
    /// Chips per scene CRS ("none" without georeferencing).
    pub crs: BTreeMap<String, u64>,
    /// (scene, reason) of failed scenes.
    pub failures: Vec<(String, String)>,
    /// (scene, reason) of indexed scenes whose part file is missing or damaged: queries skip
    /// them, a rerun of `index` indexes them again.
    pub damaged: Vec<(String, String)>,
    /// Indexed scenes whose local source file no longer exists (`index --prune` removes them).
    pub missing_sources: Vec<String>,
}

/// Reads the summary of the index at `root`.
pub fn index_info(root: &Path) -> Result<IndexInfo> {
    let (index, header) = IndexDir::open(root)?;
    let mut info = IndexInfo {
        path: root.display().to_string(),
        schema_version: header.schema_version,
        model_name: header.model_name,
        model_fingerprint: header.model_fingerprint,
        nodes_dtype: format!("{:?}", header.nodes_dtype).to_lowercase(),
        scenes_ok: 0,
        scenes_failed: 0,
        chips: 0,
        chips_low_valid: 0,
        part_files: 0,
        bytes: 0,
        bytes_per_chip: None,
        crs: BTreeMap::new(),
        failures: Vec::new(),
        damaged: Vec::new(),
        missing_sources: Vec::new(),
    };
    let mut seen_parts = std::collections::BTreeSet::new();
    for record in index.records()?.into_values() {
        match record.status {
            SceneStatus::Ok if let Some(reason) = index.part_problem(&record) => {
                info.damaged.push((record.path.clone(), reason));
            }
            SceneStatus::Ok => {
                if !record.path.starts_with("/vsi") && !Path::new(&record.path).exists() {
                    info.missing_sources.push(record.path.clone());
                }
                info.scenes_ok += 1;
                info.chips += record.chips;
                info.chips_low_valid += record.chips_low_valid;
                *info.crs.entry(record.crs.clone().unwrap_or_else(|| "none".into())).or_default() +=
                    record.chips;
                // A merged part (`compact`) holds several scenes: count it once.
                if let Some(part) = &record.part
                    && seen_parts.insert(part.clone())
                    && let Ok(meta) = std::fs::metadata(index.root.join(part))
                {
                    info.part_files += 1;
                    info.bytes += meta.len();
                }
            }
            SceneStatus::Failed => {
                info.scenes_failed += 1;
                info.failures.push((record.path.clone(), record.error.clone().unwrap_or_default()));
            }
        }
    }
    info.bytes_per_chip = (info.chips > 0).then(|| info.bytes as f64 / info.chips as f64);
    Ok(info)
}

impl std::fmt::Display for IndexInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "index        {}", self.path)?;
        writeln!(
            f,
            "model        {} ({})",
            self.model_name,
            crate::files::short_fingerprint(&self.model_fingerprint)
        )?;
        writeln!(f, "schema       {} (nodes {})", self.schema_version, self.nodes_dtype)?;
        writeln!(
            f,
            "scenes       {} indexed, {} failed, {} damaged",
            self.scenes_ok,
            self.scenes_failed,
            self.damaged.len()
        )?;
        writeln!(
            f,
            "chips        {} ({} windows under --min-valid not encoded)",
            self.chips, self.chips_low_valid
        )?;
        let per_chip = self.bytes_per_chip.map_or("-".to_string(), |b| format!("{:.1} KiB/chip", b / 1024.0));
        writeln!(
            f,
            "size         {:.1} MiB in {} part files, {per_chip}",
            self.bytes as f64 / 1048576.0,
            self.part_files
        )?;
        for (crs, chips) in &self.crs {
            writeln!(f, "crs          {crs}: {chips} chips")?;
        }
        for (scene, reason) in &self.failures {
            writeln!(f, "failed       {scene}: {reason}")?;
        }
        for scene in &self.missing_sources {
            writeln!(f, "source gone  {scene} (index --prune removes it)")?;
        }
        for (scene, reason) in &self.damaged {
            writeln!(f, "damaged      {scene}: {reason} (rerun acf-index index to repair)")?;
        }
        Ok(())
    }
}
