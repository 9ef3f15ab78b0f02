//! `index --stac`: scenes described by STAC (SpatioTemporal Asset Catalog). A Catalog or
//! Collection is walked through its `child` and `item` links, an ItemCollection through its
//! features, an Item is one scene. Of an item, the `visual` asset is chipped (or an asset with
//! the `visual` role); otherwise its red, green and blue assets, chosen by `eo:bands` common
//! names (STAC 1.0) or `bands[].eo:common_name` (1.1), are combined by a GDAL VRT that
//! references them without copying pixels (written under `INDEX/stac/`, rewritten only when
//! it changes, so fingerprints stay stable). JSON is read locally or through GDAL's VSI layer
//! (`s3://`, `/vsis3/`, `/vsicurl/`). Parsed with serde_json: five fields of the spec are
//! used, in both its 1.0 and 1.1 forms, which the typed `stac` crate would not shorten.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{AcfError, Result};

/// What a scene from STAC carries into the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct StacScene {
    /// The GDAL path that is chipped (the visual asset, or the VRT of the RGB assets).
    pub path: String,
    pub item: String,
    pub collection: Option<String>,
    /// The item's `datetime` (or `start_datetime`), µs since the epoch.
    pub acquired_us: Option<i64>,
}

/// Reads every STAC source and returns its scenes; problems with single items are warnings.
pub fn scenes(sources: &[String], vrt_dir: &Path) -> Result<(Vec<StacScene>, Vec<String>)> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = HashSet::new();
    for source in sources {
        let location = crate::raster::vsi::to_vsi(source)
            .unwrap_or_else(|| super::discover::absolute(Path::new(source)));
        walk(&location, None, vrt_dir, &mut seen, &mut out, &mut warnings)?;
    }
    Ok((out, warnings))
}

fn walk(
    location: &str,
    collection: Option<&str>,
    vrt_dir: &Path,
    seen: &mut HashSet<String>,
    out: &mut Vec<StacScene>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if !seen.insert(location.to_string()) {
        return Ok(());
    }
    let doc = read_json(location)?;
    match doc["type"].as_str() {
        Some("Feature") => match item_scene(&doc, location, collection, vrt_dir) {
            Ok(s) => out.push(s),
            Err(e) => warnings.push(format!("{location}: {e}")),
        },
        Some("FeatureCollection") => {
            for f in doc["features"].as_array().into_iter().flatten() {
                match item_scene(f, location, collection, vrt_dir) {
                    Ok(s) => out.push(s),
                    Err(e) => warnings.push(format!("{location}: {e}")),
                }
            }
        }
        Some("Catalog") | Some("Collection") => {
            let id = doc["id"].as_str();
            let collection = if doc["type"] == "Collection" { id } else { collection };
            for link in doc["links"].as_array().into_iter().flatten() {
                let rel = link["rel"].as_str().unwrap_or_default();
                if rel != "child" && rel != "item" {
                    continue;
                }
                let Some(href) = link["href"].as_str() else { continue };
                let target = resolve(location, href);
                if let Err(e) = walk(&target, collection, vrt_dir, seen, out, warnings) {
                    warnings.push(e.to_string());
                }
            }
        }
        other => {
            return Err(AcfError::InvalidArgument(format!(
                "{location}: not a STAC Catalog, Collection, ItemCollection or Item (type {other:?})"
            )));
        }
    }
    Ok(())
}

/// The scene of one item.
fn item_scene(
    item: &Value,
    location: &str,
    collection: Option<&str>,
    vrt_dir: &Path,
) -> std::result::Result<StacScene, String> {
    let id = item["id"].as_str().ok_or("an item without an id")?.to_string();
    let collection = item["collection"].as_str().or(collection).map(String::from);
    let props = &item["properties"];
    let acquired_us = props["datetime"]
        .as_str()
        .or(props["start_datetime"].as_str())
        .and_then(crate::raster::timestamp::parse_time);
    let assets = item["assets"].as_object().ok_or_else(|| format!("item {id} has no assets"))?;
    let href = |a: &Value| a["href"].as_str().map(|h| to_gdal(&resolve(location, h)));
    let visual = assets.get("visual").or_else(|| {
        assets.values().find(|a| a["roles"].as_array().is_some_and(|r| r.iter().any(|x| x == "visual")))
    });
    let path = match visual.and_then(href) {
        Some(p) => p,
        None => {
            let band = |name: &str| -> Option<String> {
                assets
                    .iter()
                    .find(|(key, a)| common_names(a).iter().any(|c| c == name) || key.as_str() == name)
                    .and_then(|(_, a)| href(a))
            };
            let (Some(r), Some(g), Some(b)) = (band("red"), band("green"), band("blue")) else {
                return Err(format!("item {id}: no visual asset and no red/green/blue assets"));
            };
            rgb_vrt(
                &[r, g, b],
                &vrt_dir.join(format!("{}-{id}.vrt", collection.as_deref().unwrap_or("items"))),
            )?
        }
    };
    Ok(StacScene { path, item: id, collection, acquired_us })
}

/// `eo:common_name`s of an asset, in STAC 1.0 (`eo:bands[].common_name`) and 1.1
/// (`bands[].eo:common_name`) form.
fn common_names(asset: &Value) -> Vec<String> {
    let from = |list: &Value, key: &str| -> Vec<String> {
        list.as_array().into_iter().flatten().filter_map(|b| b[key].as_str().map(String::from)).collect()
    };
    let mut names = from(&asset["eo:bands"], "common_name");
    names.extend(from(&asset["bands"], "eo:common_name"));
    names
}

/// A VRT stacking the first band of each of `sources` as bands 1–3, written at `path` only
/// when its content changes.
fn rgb_vrt(sources: &[String], path: &Path) -> std::result::Result<String, String> {
    use gdal::programs::raster::{BuildVRTOptions, build_vrt};
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let datasets: Vec<gdal::Dataset> = sources
        .iter()
        .map(|s| gdal::Dataset::open(s).map_err(|e| format!("band asset {s}: {e}")))
        .collect::<std::result::Result<_, _>>()?;
    let tmp = crate::files::temp_beside(path);
    let options = BuildVRTOptions::new(["-separate"]).map_err(|e| e.to_string())?;
    drop(
        build_vrt(Some(&tmp), &datasets, Some(options))
            .map_err(|e| format!("cannot build the RGB VRT: {e}"))?,
    );
    let new = std::fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    if std::fs::read(path).is_ok_and(|old| old == new) {
        let _ = std::fs::remove_file(&tmp);
    } else {
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(path.display().to_string())
}

/// `href` relative to the document at `base` (absolute URLs and paths as they are).
fn resolve(base: &str, href: &str) -> String {
    if href.contains("://") || href.starts_with('/') {
        return href.to_string();
    }
    let dir = base.rsplit_once('/').map_or("", |(d, _)| d);
    let mut parts: Vec<&str> = dir.split('/').collect();
    for piece in href.split('/') {
        match piece {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// An href as GDAL opens it: `s3://` → `/vsis3/`, `http(s)://` → `/vsicurl/`.
fn to_gdal(href: &str) -> String {
    if href.starts_with("http://") || href.starts_with("https://") {
        return format!("/vsicurl/{href}");
    }
    crate::raster::vsi::to_vsi(href).unwrap_or_else(|| href.to_string())
}

fn read_json(location: &str) -> Result<Value> {
    let bad = |reason: String| AcfError::Dataset { path: PathBuf::from(location), reason };
    let text = if location.starts_with("/vsi") {
        crate::raster::vsi::read_to_string(location).map_err(bad)?
    } else {
        std::fs::read_to_string(location).map_err(|e| bad(format!("cannot read STAC JSON: {e}")))?
    };
    serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_resolve_against_their_document() {
        assert_eq!(resolve("/a/b/catalog.json", "./c/item.json"), "/a/b/c/item.json");
        assert_eq!(resolve("/a/b/c/item.json", "../d.tif"), "/a/b/d.tif");
        assert_eq!(resolve("/vsis3/bk/stac/item.json", "x.tif"), "/vsis3/bk/stac/x.tif");
        assert_eq!(resolve("/a/item.json", "s3://b/k.tif"), "s3://b/k.tif");
        assert_eq!(to_gdal("s3://b/k.tif"), "/vsis3/b/k.tif");
        assert_eq!(to_gdal("https://h/k.tif"), "/vsicurl/https://h/k.tif");
    }

    #[test]
    fn band_names_are_read_in_both_stac_versions() {
        let v10 = serde_json::json!({"eo:bands": [{"name": "B4", "common_name": "red"}]});
        let v11 = serde_json::json!({"bands": [{"name": "B4", "eo:common_name": "red"}]});
        assert_eq!(common_names(&v10), vec!["red"]);
        assert_eq!(common_names(&v11), vec!["red"]);
    }
}
