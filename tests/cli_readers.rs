//! The data tools' view of an index: the reader examples in `examples/readers/` run against an
//! index built here and print what they promise, and an independent validator
//! (`geoparquet-validator`, PyPI) checks every part file against GeoParquet 1.1.

use std::path::Path;
use std::process::Command;

use crate::util::{Dir, geotiff, parse_json, python};

fn built_index(dir: &Dir) -> std::path::PathBuf {
    let out = dir.join("idx");
    dir.command()
        .args(["index", "--device", "cpu", "--out"])
        .arg(&out)
        .args([geotiff("rmnp-rgb.tif"), geotiff("naip-4band-150x200.tif")])
        .succeeds();
    out
}

fn example(dir: &Dir, name: &str, index: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/readers").join(name);
    let out = Command::new(python()).arg(&script).arg(index).current_dir(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn the_reader_examples_run_and_print_what_they_promise() {
    let dir = Dir::new();
    let index = built_index(&dir);
    let chips: u64 = parse_json(&String::from_utf8_lossy(
        &Command::new(crate::util::BIN).args(["info", "--json"]).arg(&index).output().unwrap().stdout,
    ))["chips"]
        .as_u64()
        .unwrap();

    let pa = example(&dir, "pyarrow_read.py", &index);
    assert!(pa.contains("chips with >= 90 % valid pixels"), "{pa}");
    let norm: f64 = pa.rsplit("norm ").next().unwrap().trim().parse().unwrap();
    assert!((norm - 1.0).abs() < 1e-3, "global vectors are unit length: {pa}");

    let gp = example(&dir, "geopandas_read.py", &index);
    assert!(gp.contains("OGC:CRS84") || gp.contains("EPSG:4326"), "{gp}");
    assert!(gp.contains(&format!("{chips} chips")), "{gp}");
    assert!(dir.join("chips.geojson").is_file());

    let duck = example(&dir, "duckdb_read.py", &index);
    // Chips per scene, the bbox filter, and stage 1 in SQL: the query chip first, sim_g 1.
    assert!(duck.contains("rmnp-rgb.tif") && duck.contains("naip-4band"), "{duck}");
    assert!(duck.contains(", 1.0)"), "the chip most like itself is itself: {duck}");

    let pl = example(&dir, "polars_read.py", &index);
    assert!(pl.contains("chip_id") && pl.contains("array[f32, 512]"), "{pl}");
}

#[test]
fn every_part_file_passes_an_independent_geoparquet_validator() {
    let dir = Dir::new();
    let index = built_index(&dir);
    let validator = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/geoparquet-validator");
    let out = Command::new(&validator)
        .args(["check", "--json"])
        .arg(index.join("parts"))
        .output()
        .unwrap_or_else(|e| panic!("{} (run scripts/setup.sh): {e}", validator.display()));
    let report = parse_json(&String::from_utf8_lossy(&out.stdout));
    let files = report.as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        for o in f["outcomes"].as_array().unwrap() {
            assert_ne!(o["status"], "fail", "{}: {} {}", f["file"], o["id"], o["message"]);
        }
        let status = |id: &str| {
            f["outcomes"].as_array().unwrap().iter().find(|o| o["id"] == id).map(|o| o["status"].clone())
        };
        assert_eq!(status("/conf/covering/bbox-paths"), Some("pass".into()), "bbox covering");
        assert_eq!(status("/conf/core/orientation-rings"), Some("pass".into()), "counter-clockwise rings");
    }
}

#[test]
fn duckdb_stage_1_then_rerank_equals_exhaustive_query() {
    let dir = Dir::new();
    let index = dir.join("all");
    dir.command()
        .args(["index", "--device", "cpu", "--out"])
        .arg(&index)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geotiff"))
        .succeeds();
    let query = "buildings and green trees";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/readers/duckdb_two_stage.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&index)
        .arg(query)
        .args(["1000", "10"])
        .env("ACF_INDEX_BIN", crate::util::BIN)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let two_stage: Vec<(String, f64)> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2].to_string(), f[1].parse().unwrap())
        })
        .collect();
    let exhaustive = Command::new(crate::util::BIN)
        .args(["query", "--device", "cpu", "--exhaustive", "--top-k", "10", "--format", "json", "--index"])
        .arg(&index)
        .arg(query)
        .output()
        .unwrap();
    let exhaustive: Vec<(String, f64)> = String::from_utf8_lossy(&exhaustive.stdout)
        .lines()
        .map(|l| {
            let v = parse_json(l);
            (v["chip_id"].as_str().unwrap().to_string(), v["score"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(two_stage.len(), 10);
    assert_eq!(
        two_stage.iter().map(|h| &h.0).collect::<Vec<_>>(),
        exhaustive.iter().map(|h| &h.0).collect::<Vec<_>>(),
        "DuckDB + rerank gives the exhaustive top 10"
    );
    for (a, b) in two_stage.iter().zip(&exhaustive) {
        assert!((a.1 - b.1).abs() < 1e-3, "{a:?} vs {b:?}");
    }
}
