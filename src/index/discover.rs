//! Which scenes a run covers: files and folders walked recursively in a deterministic order
//! (symlink loops reported, not followed forever), `--from-list` lines taken as GDAL paths,
//! `--include`/`--exclude` globs, and the `--shard I/N` share.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{AcfError, Result};

/// Files next to rasters that GDAL would open or that are not scenes: skipped in folders.
const SIDECAR_SUFFIXES: &[&str] = &[
    ".aux.xml", ".ovr", ".msk", ".tfw", ".tifw", ".wld", ".prj", ".xml", ".txt", ".md", ".json", ".parquet",
    ".csv", ".html", ".log", ".lock", ".tmp", ".imd", ".rpb", ".til", ".hdr",
];

/// Inputs of a run.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub paths: Vec<PathBuf>,
    pub from_list: Option<PathBuf>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub shard: Option<(usize, usize)>,
}

/// The scene list: sorted, without duplicates, this shard's share only. Problems with
/// single entries (unreadable folder, symlink loop) are returned as warnings.
pub fn discover(inputs: &Inputs) -> Result<(Vec<String>, Vec<String>)> {
    let include = crate::files::glob_set(&inputs.include)?;
    let exclude = crate::files::glob_set(&inputs.exclude)?;
    let mut warnings = Vec::new();
    let mut scenes = Vec::new();
    for input in &inputs.paths {
        let text = input.to_string_lossy();
        if let Some(vsi) = vsi_path(&text) {
            match list_vsi(&vsi) {
                Ok(found) if found.is_empty() => warnings.push(format!("{text}: no scene found there")),
                Ok(found) => scenes.extend(found.into_iter().filter(|p| {
                    is_candidate(Path::new(p)) && include.as_ref().is_none_or(|g| g.is_match(p))
                })),
                // GDAL says only "NULL pointer" for a missing prefix or a denied listing.
                Err(_) => {
                    warnings.push(format!("{text}: no scene found there (nothing to list, or no access)"))
                }
            }
            continue;
        }
        if input.is_dir() {
            let walk = walkdir::WalkDir::new(input).follow_links(true).sort_by_file_name();
            for entry in walk {
                match entry {
                    Ok(e) if e.file_type().is_file() => {
                        let path = e.path();
                        if is_candidate(path) && include.as_ref().is_none_or(|g| g.is_match(path)) {
                            scenes.push(absolute(path));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warnings.push(format!("skipped while walking {}: {e}", input.display())),
                }
            }
        } else {
            scenes.push(absolute(input));
        }
    }
    if let Some(list) = &inputs.from_list {
        let text =
            std::fs::read_to_string(list).map_err(|e| AcfError::io(list, "cannot read scene list", e))?;
        scenes.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(
            |l| {
                if l.starts_with("/vsi") || l.contains("://") {
                    l.to_string()
                } else {
                    absolute(Path::new(l))
                }
            },
        ));
    }
    if let Some(ex) = &exclude {
        scenes.retain(|s| !ex.is_match(s));
    }
    scenes.sort();
    scenes.dedup();
    if let Some((i, n)) = inputs.shard {
        scenes.retain(|s| shard_of(s, n) == i);
    }
    Ok((scenes, warnings))
}

/// `s3://…`, `gs://…` and `/vsi…` inputs as GDAL paths (object storage, archives).
fn vsi_path(text: &str) -> Option<String> {
    #[cfg(feature = "gdal")]
    return crate::raster::vsi::to_vsi(text);
    #[cfg(not(feature = "gdal"))]
    return text.starts_with("/vsi").then(|| text.to_string());
}

/// The scenes of a GDAL path: the object itself, or every object under the prefix.
fn list_vsi(path: &str) -> std::result::Result<Vec<String>, String> {
    #[cfg(feature = "gdal")]
    {
        use crate::raster::vsi;
        if vsi::stat(path).is_some_and(|s| s.is_file) {
            return Ok(vec![path.to_string()]);
        }
        vsi::list_files(path)
    }
    #[cfg(not(feature = "gdal"))]
    Ok(vec![path.to_string()])
}

/// The shard (0..n) a scene belongs to: a hash of its path, so that shares stay stable as
/// the archive grows.
pub fn shard_of(scene: &str, n: usize) -> usize {
    let digest = Sha256::digest(scene.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % n.max(1) as u64) as usize
}

fn is_candidate(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    !name.starts_with('.') && !SIDECAR_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// `path` absolute (symlinks resolved when it exists), as the catalog records scenes.
pub(crate) fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// Parses `I/N` (0 ≤ I < N).
pub fn parse_shard(text: &str) -> std::result::Result<(usize, usize), String> {
    let (i, n) = text.split_once('/').ok_or_else(|| format!("'{text}' is not I/N"))?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| format!("'{i}' is not a shard number"))?,
        n.trim().parse().map_err(|_| format!("'{n}' is not a shard count"))?,
    );
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 <= I < N"));
    }
    Ok((i, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, rel: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn folders_are_walked_in_order_without_sidecars_and_with_globs() {
        let d = tempfile::tempdir().unwrap();
        for f in ["b/2.tif", "a/1.tif", "a/1.tif.aux.xml", "a/.hidden.tif", "c/3.jp2", "c/readme.md"] {
            touch(d.path(), f);
        }
        let names = |inputs: &Inputs| -> Vec<String> {
            let (scenes, _) = discover(inputs).unwrap();
            scenes
                .iter()
                .map(|s| {
                    Path::new(s).strip_prefix(d.path().canonicalize().unwrap()).unwrap().display().to_string()
                })
                .collect()
        };
        let mut inputs = Inputs { paths: vec![d.path().to_path_buf()], ..Default::default() };
        assert_eq!(names(&inputs), ["a/1.tif", "b/2.tif", "c/3.jp2"]);
        inputs.include = vec!["*.tif".into()];
        assert_eq!(names(&inputs), ["a/1.tif", "b/2.tif"]);
        inputs.exclude = vec!["**/b/**".into()];
        assert_eq!(names(&inputs), ["a/1.tif"]);
    }

    #[test]
    fn a_symlink_loop_is_reported_not_followed() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "a/1.tif");
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("a/loop")).unwrap();
        let (scenes, warnings) =
            discover(&Inputs { paths: vec![d.path().to_path_buf()], ..Default::default() }).unwrap();
        assert_eq!(scenes.len(), 1);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn shards_partition_the_scenes() {
        let scenes: Vec<String> = (0..200).map(|i| format!("/data/scene-{i}.tif")).collect();
        let mut counts = [0; 3];
        for s in &scenes {
            counts[shard_of(s, 3)] += 1;
        }
        assert_eq!(counts.iter().sum::<i32>(), 200);
        assert!(counts.iter().all(|&c| c > 40), "{counts:?}");
        assert_eq!(parse_shard("1/3"), Ok((1, 3)));
        assert!(parse_shard("3/3").is_err());
        assert!(parse_shard("x").is_err());
    }
}
