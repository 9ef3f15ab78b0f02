//! Before the pipeline: check or record the index's model and chip options, fingerprint the
//! scenes and sort them into "already indexed" and "to do", and prune scenes whose source
//! is gone. (The writer lock is taken by `pipeline::run` through `IndexDir::lock_writer`.)

use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::{AcfError, Result};
use crate::files::short_fingerprint;
use crate::model::model_dir::ModelDir;
use crate::storage::{
    ChipOptions, IndexDir, IndexHeader, NodesDtype, SceneFingerprint, SceneRecord, SceneStatus, now_s,
};

/// Checks that the index was built with `model` (or starts a new one with `new_model`) and
/// returns its header.
pub fn check_model(
    index: &IndexDir,
    model: &ModelDir,
    nodes_dtype: Option<NodesDtype>,
    new_model: bool,
    chip_options: &ChipOptions,
) -> Result<IndexHeader> {
    let header = check_model_only(index, model, nodes_dtype, new_model, chip_options)?;
    match &header.chip_options {
        Some(recorded) => {
            if let Some((given, kept)) = recorded.first_difference(chip_options) {
                return Err(AcfError::Index {
                    path: index.root.clone(),
                    reason: format!(
                        "{given} differs from this index's {kept}: every scene of an index is chipped alike; use the index's options, or another --out for a new index"
                    ),
                });
            }
            Ok(header)
        }
        None => {
            // An index from before options were recorded: this run's options are its own.
            let header = IndexHeader { chip_options: Some(chip_options.clone()), ..header };
            index.write_header(&header)?;
            Ok(header)
        }
    }
}

fn check_model_only(
    index: &IndexDir,
    model: &ModelDir,
    nodes_dtype: Option<NodesDtype>,
    new_model: bool,
    chip_options: &ChipOptions,
) -> Result<IndexHeader> {
    let fresh = || {
        let created_by = format!("acf-index {}", env!("CARGO_PKG_VERSION"));
        IndexHeader::for_model(
            model,
            nodes_dtype.unwrap_or(NodesDtype::F16),
            created_by,
            now_s(),
            Some(chip_options.clone()),
        )
    };
    match index.header()? {
        None => {
            let header = fresh();
            index.write_header(&header)?;
            Ok(header)
        }
        Some(h) if h.model_fingerprint == model.fingerprint => {
            if let Some(d) = nodes_dtype.filter(|&d| d != h.nodes_dtype) {
                return Err(AcfError::Index {
                    path: index.root.clone(),
                    reason: format!(
                        "the index stores nodes as {:?}, not {d:?}: drop --nodes-dtype or use another --out",
                        h.nodes_dtype
                    ),
                });
            }
            Ok(h)
        }
        Some(h) if new_model => {
            tracing::warn!(
                "{}: --new-model: removing the index of model {} ({}) to start one for {} ({})",
                index.root.display(),
                h.model_name,
                short_fingerprint(&h.model_fingerprint),
                model.config().name,
                model.short_fingerprint()
            );
            for record in index.records()?.into_values() {
                for f in index.stale_files(&record.scene_id, None) {
                    remove(&f)?;
                }
                remove(&index.record_path(&record.scene_id))?;
            }
            let header = fresh();
            index.write_header(&header)?;
            Ok(header)
        }
        Some(h) => Err(h.model_mismatch(
            &index.root,
            model,
            "this run uses",
            "pass --model with the index's model, or --new-model to start a new index here",
        )),
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AcfError::io(path, "cannot remove", e)),
        _ => Ok(()),
    }
}

/// The scene's fingerprint: size and mtime (local files through the OS, GDAL paths such as
/// `/vsis3/…` through GDAL's VSI layer), plus a content hash with `verify`.
pub fn fingerprint(path: &str, verify: bool) -> std::result::Result<SceneFingerprint, String> {
    let (size, mtime_ns) = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            let mtime =
                m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            (m.len(), mtime as i128)
        }
        Ok(_) => return Err("not a file".into()),
        Err(e) if path.starts_with("/vsi") => match crate::raster::vsi::stat(path) {
            Some(s) if s.is_file => (s.size, s.mtime_ns),
            Some(_) => return Err("not a file".into()),
            None => return Err(format!("no such object (GDAL cannot stat it: {e})")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no such file".into()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err("permission denied".into()),
        Err(e) => return Err(e.to_string()),
    };
    let sha256 = match (verify, path.starts_with("/vsi")) {
        (false, _) => None,
        (true, true) => Some(crate::raster::vsi::sha256(path)?),
        (true, false) => Some(hash_file(path)?),
    };
    Ok(SceneFingerprint { size, mtime_ns, sha256 })
}

fn hash_file(path: &str) -> std::result::Result<String, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("--verify: cannot read ({e})"))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| format!("--verify: cannot read ({e})"))?;
    Ok(crate::files::hex(&hasher.finalize()))
}

/// True when `record` says the scene is indexed with this content and its part is whole
/// (present, of the recorded size, and with `verify` of the recorded checksum): a scene
/// whose part is missing or damaged is indexed again.
pub fn up_to_date(index: &IndexDir, record: &SceneRecord, fp: &SceneFingerprint, verify: bool) -> bool {
    record.status == SceneStatus::Ok
        && record.fingerprint.same_as(fp, verify)
        && index.part_problem(record).is_none()
        && (!verify || index.part_checksum_ok(record))
}

/// Removes the scenes recorded under `roots` (folders or files given to `index`) whose source
/// file no longer exists; returns how many. GDAL paths are left alone.
pub fn prune_missing(index: &IndexDir, roots: &[std::path::PathBuf]) -> Result<usize> {
    let roots: Vec<std::path::PathBuf> = roots
        .iter()
        .map(|r| std::fs::canonicalize(r).or_else(|_| std::path::absolute(r)))
        .filter_map(|r| r.ok())
        .collect();
    let mut pruned = 0;
    for record in index.records()?.into_values() {
        let path = std::path::Path::new(&record.path);
        if record.path.starts_with("/vsi") || !roots.iter().any(|r| path.starts_with(r)) || path.exists() {
            continue;
        }
        index.remove_scene(&record.scene_id)?;
        tracing::info!("{}: source gone, removed from the index (--prune)", record.path);
        pruned += 1;
    }
    Ok(pruned)
}
