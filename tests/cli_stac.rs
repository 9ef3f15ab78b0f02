//! `index --stac`: a small STAC catalog made here from the repository's scenes — a Collection
//! with an item whose `visual` asset is a GeoTIFF, and one with per-band COGs (red, green,
//! blue by `eo:bands` common names, STAC 1.0 and 1.1 forms) combined by a VRT.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::util::{Dir, geotiff, parse_json, python};

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn item(id: &str, datetime: &str, assets: Value) -> Value {
    json!({"type": "Feature", "stac_version": "1.0.0", "id": id, "geometry": null,
           "properties": {"datetime": datetime}, "links": [], "assets": assets})
}

/// catalog.json → naip (visual asset) and landsat (per-band COGs).
pub(crate) fn catalog(dir: &Dir) -> std::path::PathBuf {
    let root = dir.join("stac");
    let rgb = root.join("naip/item-rgb/rgb.tif");
    std::fs::create_dir_all(rgb.parent().unwrap()).unwrap();
    std::fs::copy(geotiff("rmnp-rgb.tif"), &rgb).unwrap();
    let bands = root.join("landsat/item-bands");
    std::fs::create_dir_all(&bands).unwrap();
    for (b, name) in [(1, "red"), (2, "green"), (3, "blue")] {
        let ok = Command::new("gdal_translate")
            .args(["-q", "-of", "COG", "-b", &b.to_string()])
            .arg(geotiff("RGB.byte.tif"))
            .arg(bands.join(format!("{name}.tif")))
            .status()
            .unwrap()
            .success();
        assert!(ok, "gdal_translate");
    }
    write_json(
        &root.join("catalog.json"),
        &json!({"type": "Catalog", "stac_version": "1.0.0", "id": "root", "description": "test",
                "links": [{"rel": "child", "href": "./naip/collection.json"},
                          {"rel": "child", "href": "./landsat/collection.json"},
                          {"rel": "self", "href": "./catalog.json"}]}),
    );
    for (c, i) in [("naip", "item-rgb"), ("landsat", "item-bands")] {
        write_json(
            &root.join(format!("{c}/collection.json")),
            &json!({"type": "Collection", "stac_version": "1.0.0", "id": c, "description": c,
                    "links": [{"rel": "item", "href": format!("./{i}/item.json")}, {"rel": "parent", "href": "../catalog.json"}]}),
        );
    }
    write_json(
        &root.join("naip/item-rgb/item.json"),
        &item(
            "item-rgb",
            "2021-06-01T10:00:00Z",
            json!({"visual": {"href": "./rgb.tif", "roles": ["visual"]},
                                                           "thumbnail": {"href": "./thumb.png", "roles": ["thumbnail"]}}),
        ),
    );
    write_json(
        &root.join("landsat/item-bands/item.json"),
        &item(
            "item-bands",
            "2019-03-04T00:00:00Z",
            json!({
            "B4": {"href": "./red.tif", "eo:bands": [{"name": "B4", "common_name": "red"}]},
            "B3": {"href": "./green.tif", "eo:bands": [{"name": "B3", "common_name": "green"}]},
            "B2": {"href": "./blue.tif", "bands": [{"name": "B2", "eo:common_name": "blue"}]}}),
        ),
    );
    root.join("catalog.json")
}

/// (stac_item, stac_collection, acquired ISO, scene) of every chip, read with pyarrow.
fn stac_columns(index: &Path) -> Vec<(String, String, String, String)> {
    let script = "import glob, json, sys\nimport pyarrow.parquet as pq\nrows = []\n\
        for p in sorted(glob.glob(sys.argv[1] + '/parts/*.parquet')):\n\
        \x20   t = pq.read_table(p, columns=['stac_item', 'stac_collection', 'acquired', 'scene'])\n\
        \x20   for r in t.to_pylist():\n\
        \x20       rows.append([r['stac_item'], r['stac_collection'], r['acquired'].isoformat(), r['scene']])\n\
        print(json.dumps(rows))\n";
    let out = Command::new(python()).args(["-c", script]).arg(index).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_stac_catalog_is_walked_and_its_items_indexed_with_id_collection_and_datetime() {
    let dir = Dir::new();
    let cat = catalog(&dir);
    let idx = dir.join("idx");
    let run = dir
        .command()
        .args(["index", "--device", "cpu", "--json", "--out"])
        .arg(&idx)
        .arg("--stac")
        .arg(&cat)
        .succeeds();
    let s = parse_json(&run.stdout);
    assert_eq!((s["scenes"].as_u64(), s["indexed"].as_u64()), (Some(2), Some(2)), "{}", run.stdout);
    let rows = stac_columns(&idx);
    assert!(!rows.is_empty());
    for (item, collection, acquired, scene) in &rows {
        match item.as_str() {
            "item-rgb" => {
                assert_eq!((collection.as_str(), acquired.as_str()), ("naip", "2021-06-01T10:00:00+00:00"));
                assert!(scene.ends_with("rgb.tif"));
            }
            "item-bands" => {
                assert_eq!(
                    (collection.as_str(), acquired.as_str()),
                    ("landsat", "2019-03-04T00:00:00+00:00")
                );
                assert!(scene.ends_with(".vrt"), "per-band assets combined by a VRT: {scene}");
            }
            other => panic!("unexpected item {other}"),
        }
    }
    // The VRT references the COGs, it does not copy them.
    let vrt = std::fs::read_to_string(&rows.iter().find(|r| r.0 == "item-bands").unwrap().3).unwrap();
    assert!(
        vrt.contains("red.tif")
            && vrt.contains("green.tif")
            && vrt.contains("blue.tif")
            && vrt.len() < 20_000
    );
    // A rerun skips both (the VRT is not rewritten); --collection filters queries.
    let run = dir
        .command()
        .args(["index", "--device", "cpu", "--json", "--out"])
        .arg(&idx)
        .arg("--stac")
        .arg(&cat)
        .succeeds();
    assert_eq!(parse_json(&run.stdout)["skipped"].as_u64(), Some(2), "{}", run.stdout);
    let hits = dir
        .command()
        .args([
            "query",
            "--device",
            "cpu",
            "--format",
            "json",
            "--top-k",
            "100",
            "--collection",
            "landsat",
            "--index",
        ])
        .arg(&idx)
        .arg("buildings and trees")
        .succeeds();
    let scenes: Vec<String> =
        hits.stdout_lines().iter().map(|l| parse_json(l)["scene"].as_str().unwrap().to_string()).collect();
    assert!(!scenes.is_empty() && scenes.iter().all(|s| s.ends_with(".vrt")), "{scenes:?}");
}

#[test]
fn an_item_collection_and_a_single_item_are_read_too() {
    let dir = Dir::new();
    let cat = catalog(&dir);
    let item_path = cat.parent().unwrap().join("naip/item-rgb/item.json");
    let mut item: Value = serde_json::from_str(&std::fs::read_to_string(&item_path).unwrap()).unwrap();
    item["assets"]["visual"]["href"] =
        json!(item_path.parent().unwrap().join("rgb.tif").display().to_string());
    let fc = dir.join("items.json");
    write_json(&fc, &json!({"type": "FeatureCollection", "features": [item]}));
    for (name, source) in [("fc", fc.clone()), ("one", item_path.clone())] {
        let idx = dir.join(name);
        let run = dir
            .command()
            .args(["index", "--device", "cpu", "--json", "--out"])
            .arg(&idx)
            .arg("--stac")
            .arg(&source)
            .succeeds();
        assert_eq!(parse_json(&run.stdout)["indexed"].as_u64(), Some(1), "{name}: {}", run.stdout);
    }
    let bad = dir.write("bad.json", b"{\"type\": \"Nonsense\"}");
    dir.command()
        .args(["index", "--device", "cpu", "--out"])
        .arg(dir.join("x"))
        .arg("--stac")
        .arg(&bad)
        .fails()
        .error_has("not a STAC");
}
