//! `acf-index query` end to end: two-stage versus exhaustive, Float16 versus Float32 nodes,
//! filters, output formats, the HTML page, errors, and a semantic check on a mosaic of
//! UCM-Captions test images.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{Dir, parse_json};

/// Indexes the test GeoTIFF scenes into `dir/name` (extra args appended).
fn geotiff_index(dir: &Dir, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    dir.command()
        .args(["index", "--device", "cpu", "--out"])
        .arg(&out)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geotiff"))
        .args(extra)
        .succeeds();
    out
}

/// `query --format json` → hits (one JSON object per line).
fn query(dir: &Dir, index: &Path, text: &str, extra: &[&str]) -> Vec<Value> {
    let run = dir
        .command()
        .args(["query", "--device", "cpu", "--format", "json", "--index"])
        .arg(index)
        .arg(text)
        .args(extra)
        .succeeds();
    run.stdout_lines().iter().map(|l| parse_json(l)).collect()
}

fn ids(hits: &[Value]) -> Vec<String> {
    hits.iter().map(|h| h["chip_id"].as_str().unwrap().to_string()).collect()
}

const QUERY: &str = "many buildings and green trees";

#[test]
fn two_stage_equals_exhaustive_and_f16_nodes_rank_like_f32() {
    let dir = Dir::new();
    let f16 = geotiff_index(&dir, "f16", &[]);
    let all = query(&dir, &f16, QUERY, &["--top-k", "1000", "--exhaustive"]);
    assert_eq!(all.len(), 62, "every chip of the 8 test scenes is scored");
    // N >= number of chips: two stages = exhaustive, exactly.
    let two = query(&dir, &f16, QUERY, &["--top-k", "1000", "--candidates", "62"]);
    assert_eq!(ids(&two), ids(&all));
    for (a, b) in two.iter().zip(&all) {
        assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-5, "{a} vs {b}");
    }
    // Default N: top 10 agree.
    let top = query(&dir, &f16, QUERY, &[]);
    assert_eq!(ids(&top), ids(&all)[..10].to_vec());
    // A small N still returns the best of what stage 1 kept, ranked by S.
    let few = query(&dir, &f16, QUERY, &["--candidates", "5", "--top-k", "5"]);
    assert_eq!(few.len(), 5);
    let scores: Vec<f64> = few.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "not ranked by S: {scores:?}");

    // Float32 nodes (what the encoder produced) rank the same top 10 as stored Float16.
    let f32_index = geotiff_index(&dir, "f32", &["--nodes-dtype", "f32"]);
    let exact = query(&dir, &f32_index, QUERY, &["--exhaustive"]);
    assert_eq!(ids(&exact), ids(&all)[..10].to_vec(), "Float16 storage changed the top 10");
}

#[test]
fn filters_return_only_matching_chips() {
    let dir = Dir::new();
    let index = geotiff_index(&dir, "idx", &[]);
    // The EPSG:4326 scene lies around -105.9..-105.5 lon, 40.1..40.5 lat.
    let bbox = [-105.8, 40.2, -105.6, 40.4];
    let arg = format!("{},{},{},{}", bbox[0], bbox[1], bbox[2], bbox[3]);
    let hits = query(&dir, &index, QUERY, &["--bbox", &arg, "--top-k", "100"]);
    assert!(!hits.is_empty());
    for h in &hits {
        let b: Vec<f64> = h["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(b[0] <= bbox[2] && bbox[0] <= b[2] && b[1] <= bbox[3] && bbox[1] <= b[3], "{h}");
    }
    let exhaustive = query(&dir, &index, QUERY, &["--bbox", &arg, "--top-k", "100", "--exhaustive"]);
    assert_eq!(ids(&hits), ids(&exhaustive));
    let scene = query(&dir, &index, QUERY, &["--scene", "cogeo*", "--top-k", "100"]);
    assert_eq!(scene.len(), 25);
    assert!(scene.iter().all(|h| h["scene"].as_str().unwrap().ends_with("cogeo.tif")));
    let none = query(&dir, &index, QUERY, &["--bbox", "0,0,1,1"]);
    assert!(none.is_empty());
    let none = query(&dir, &index, QUERY, &["--since", "2030-01-01"]);
    assert!(none.is_empty(), "no test scene has an acquisition time");
}

#[test]
fn geojson_html_and_thumbnails_are_well_formed() {
    let dir = Dir::new();
    let index = geotiff_index(&dir, "idx", &[]);
    let run = dir
        .command()
        .args([
            "query",
            "--device",
            "cpu",
            "--format",
            "geojson",
            "--top-k",
            "3",
            "--html",
            "page.html",
            "--thumbnails",
            "thumbs",
            "--index",
        ])
        .arg(&index)
        .arg(QUERY)
        .succeeds();
    let fc = parse_json(&run.stdout);
    assert_eq!(fc["type"], "FeatureCollection");
    let features = fc["features"].as_array().unwrap();
    assert_eq!(features.len(), 3);
    for f in features {
        assert_eq!(f["type"], "Feature");
        assert!(f["properties"].is_object());
        assert_eq!(f["geometry"]["type"], "Polygon");
        for ring in f["geometry"]["coordinates"].as_array().unwrap() {
            let ring = ring.as_array().unwrap();
            assert!(ring.len() >= 4 && ring.first() == ring.last(), "a linear ring is closed, 4+ positions");
            let pts: Vec<(f64, f64)> =
                ring.iter().map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap())).collect();
            let area: f64 = pts.windows(2).map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1).sum();
            assert!(area > 0.0, "RFC 7946 right-hand rule: exterior ring counter-clockwise");
            for p in ring {
                let p = p.as_array().unwrap();
                assert_eq!(p.len(), 2);
                let (lon, lat) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                assert!((-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat));
            }
        }
    }
    let html = std::fs::read_to_string(dir.join("page.html")).unwrap();
    let refs: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("data:") || s.contains(".png") || s.starts_with("http"))
        .collect();
    assert_eq!(
        refs.iter().filter(|r| r.starts_with("data:image/png;base64,")).count(),
        3,
        "3 embedded thumbnails"
    );
    assert!(
        refs.iter().all(|r| r.starts_with("data:")),
        "the page references a file it does not embed: {refs:?}"
    );
    let pngs = std::fs::read_dir(dir.join("thumbs")).unwrap().count();
    assert_eq!(pngs, 3);
}

#[test]
fn mismatched_models_missing_indexes_and_unknown_words_are_clear_errors() {
    let dir = Dir::new();
    let index = geotiff_index(&dir, "idx", &[]);
    let other = dir.init_model("other");
    dir.command()
        .args(["query", "--device", "cpu", "--model"])
        .arg(&other)
        .arg("--index")
        .arg(&index)
        .arg("tennis court")
        .fails()
        .error_has(&format!("built with model pvig-nano ({}", &default_fingerprint()[..12]))
        .error_has("the query model is pvig-nano");
    dir.command()
        .args(["query", "--device", "cpu", "--index", "nope", "a river"])
        .fails()
        .error_has("no such index directory");
    dir.command()
        .args(["query", "--device", "cpu", "--index"])
        .arg(&index)
        .arg("qwzx blorp")
        .fails()
        .error_has("no word of \"qwzx blorp\" is in the model's vocabulary");
    let run = dir
        .command()
        .args(["query", "--device", "cpu", "--index"])
        .arg(&index)
        .arg("a river qwzx")
        .succeeds();
    run.stderr_has("qwzx");
    // An index written by a newer acf-index.
    let newer = dir.join("newer");
    std::fs::create_dir(&newer).unwrap();
    std::fs::write(newer.join("index.json"), r#"{"schema_version": 999}"#).unwrap();
    dir.command()
        .args(["query", "--device", "cpu", "--index"])
        .arg(&newer)
        .arg("a river")
        .fails()
        .error_has("newer acf-index");
    // An empty index: a run where every scene failed.
    let empty = dir.join("empty");
    std::fs::write(dir.join("bad.tif"), "not a raster").unwrap();
    dir.command()
        .args(["index", "--device", "cpu", "--out"])
        .arg(&empty)
        .arg(dir.join("bad.tif"))
        .expect_code(3);
    dir.command()
        .args(["query", "--device", "cpu", "--index"])
        .arg(&empty)
        .arg("a river")
        .fails()
        .error_has("holds no chips");
}

#[test]
fn many_queries_share_one_run() {
    let dir = Dir::new();
    let index = geotiff_index(&dir, "idx", &[]);
    std::fs::write(dir.join("q.txt"), "# two queries\na river\n\nmany buildings and green trees\n").unwrap();
    let run = dir
        .command()
        .args([
            "query",
            "--device",
            "cpu",
            "--format",
            "csv",
            "--top-k",
            "2",
            "--queries",
            "q.txt",
            "--index",
        ])
        .arg(&index)
        .succeeds();
    let lines = run.stdout_lines();
    assert_eq!(lines.len(), 1 + 4);
    assert!(lines[1].starts_with("a river,1,") && lines[3].starts_with("many buildings and green trees,1,"));
    let single = query(&dir, &index, "a river", &["--top-k", "2"]);
    assert!(lines[1].contains(single[0]["chip_id"].as_str().unwrap()), "batch and single query disagree");
}

/// sha256 of the default model's weights.
fn default_fingerprint() -> String {
    crate::util::sha256_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/model.safetensors"))
}

/// Classes of the mosaic, one column each, rotated by one per row (5 of each).
pub(crate) const CLASSES: [&str; 6] =
    ["tenniscourt", "baseballdiamond", "airplane", "harbor", "forest", "beach"];

/// How many hits are cells of `class` in the mosaic of [`build_mosaic`].
pub(crate) fn in_class(hits: &[Value], class: &str) -> usize {
    hits.iter()
        .filter(|h| {
            let w: Vec<usize> =
                h["window"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            CLASSES[(w[0] / 224 + w[1] / 224) % 6] == class
        })
        .count()
}

/// Builds a 6×5 grid of 224×224 UCM test images as a GeoTIFF in EPSG:32617 (0.3 m pixels).
pub(crate) fn build_mosaic(path: &Path) {
    let (cols, rows, cell) = (6usize, 5usize, 224usize);
    let (w, h) = (cols * cell, rows * cell);
    let mut planes = vec![vec![0u8; w * h]; 3];
    for r in 0..rows {
        for c in 0..cols {
            let class = CLASSES[(c + r) % cols];
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/fixtures/ucm-mosaic/{class}{}.jpg", 91 + r));
            let img = image::open(&file).unwrap().to_rgb8();
            let img = image::imageops::resize(
                &img,
                cell as u32,
                cell as u32,
                image::imageops::FilterType::Triangle,
            );
            for (x, y, p) in img.enumerate_pixels() {
                for k in 0..3 {
                    planes[k][(r * cell + y as usize) * w + c * cell + x as usize] = p[k];
                }
            }
        }
    }
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = driver.create_with_band_type::<u8, _>(path, w, h, 3).unwrap();
    ds.set_geo_transform(&[500_000.0, 0.3, 0.0, 3_300_000.0, 0.0, -0.3]).unwrap();
    ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32617).unwrap()).unwrap();
    for (k, plane) in planes.iter().enumerate() {
        let mut band = ds.rasterband(k + 1).unwrap();
        let mut buf = gdal::raster::Buffer::new((w, h), plane.clone());
        band.write((0, 0), (w, h), &mut buf).unwrap();
    }
}

#[test]
fn the_default_model_finds_classes_in_a_mosaic_of_ucm_test_images() {
    let dir = Dir::new();
    let mosaic = dir.join("mosaic.tif");
    build_mosaic(&mosaic);
    let index = dir.join("idx");
    dir.command().args(["index", "--device", "cpu", "--out"]).arg(&index).arg(&mosaic).succeeds();
    let queries = [
        ("tennis court", "tenniscourt"),
        ("baseball field", "baseballdiamond"),
        ("airplanes", "airplane"),
        ("a harbor with boats", "harbor"),
    ];
    let mut report = Vec::new();
    let mut total = 0.0;
    for (text, class) in queries {
        let hits = query(&dir, &index, text, &["--top-k", "5"]);
        let right = in_class(&hits, class);
        let p5 = right as f64 / 5.0;
        total += p5;
        report.push(format!("{text}: P@5 {p5:.1}"));
    }
    let mean = total / queries.len() as f64;
    eprintln!("mosaic precision@5: {} (mean {mean:.2}, chance 5/30 = 0.17)", report.join(", "));
    // Chance: 5 of the 30 cells are of each class.
    assert!(mean >= 0.4, "mean P@5 {mean:.2} not clearly above chance 0.17: {report:?}");
}

#[test]
fn embed_gives_the_vector_that_ranks_stage_1_in_duckdb_as_acf_index_does() {
    let dir = Dir::new();
    let index = geotiff_index(&dir, "idx", &[]);
    let run = dir.command().args(["embed", "--device", "cpu", QUERY]).succeeds();
    let e = parse_json(&run.stdout);
    let global: Vec<f64> = e["global"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(global.len(), 512);
    assert!((global.iter().map(|v| v * v).sum::<f64>().sqrt() - 1.0).abs() < 1e-4, "unit length");
    assert!(!e["tokens"].as_array().unwrap().is_empty());
    // acf-index's own sim_g of every chip (all candidates kept), best first.
    let hits = query(&dir, &index, QUERY, &["--top-k", "100000", "--candidates", "100000"]);
    let mut ours: Vec<(f64, String)> = hits
        .iter()
        .map(|h| (h["sim_g"].as_f64().unwrap(), h["chip_id"].as_str().unwrap().to_string()))
        .collect();
    ours.sort_by(|a, b| b.0.total_cmp(&a.0));
    // DuckDB, given the `embed --format sql` literal.
    let literal =
        dir.command().args(["embed", "--device", "cpu", "--format", "sql", QUERY]).succeeds().stdout;
    let sql = format!(
        "SELECT chip_id, array_inner_product(global::FLOAT[512], {}) AS s FROM read_parquet('{}/parts/*.parquet') ORDER BY s DESC LIMIT 10",
        literal.trim(),
        index.display()
    );
    let out = std::process::Command::new(crate::util::python())
        .args(["-c", "import duckdb, json, sys; print(json.dumps(duckdb.sql(sys.argv[1]).fetchall()))", &sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let duck: Vec<(String, f64)> = serde_json::from_slice::<Vec<(String, f64)>>(&out.stdout).unwrap();
    for (i, (id, s)) in duck.iter().enumerate() {
        assert!((s - ours[i].0).abs() < 1e-4, "rank {i}: DuckDB {s} vs acf-index {}", ours[i].0);
        assert!(ours[..10].iter().any(|(_, o)| o == id), "{id} is in acf-index's stage-1 top 10");
    }
}

#[test]
fn unknown_words_are_read_as_known_ones_shown_and_refused_when_nothing_is_left() {
    let dir = Dir::new();
    let mosaic = dir.join("mosaic.tif");
    build_mosaic(&mosaic);
    let index = dir.join("idx");
    dir.command().args(["index", "--device", "cpu", "--out"]).arg(&index).arg(&mosaic).succeeds();
    // Words no training caption uses must still find the right cells.
    let queries = [("woodland", "forest"), ("marina with sailboats", "harbor"), ("seashore", "beach")];
    let mut total = 0.0;
    let mut report = Vec::new();
    for (text, class) in queries {
        let hits = query(&dir, &index, text, &["--top-k", "5"]);
        let mappings = hits[0]["mappings"].as_array().unwrap();
        assert!(!mappings.is_empty(), "{text}: no mapping reported");
        assert!(!hits[0]["tokens"].as_array().unwrap().is_empty());
        let right = in_class(&hits, class);
        total += right as f64 / 5.0;
        report.push(format!("{text} ({}): P@5 {:.1}", hits[0]["tokens"], right as f64 / 5.0));
    }
    let mean = total / queries.len() as f64;
    eprintln!("out-of-vocabulary mosaic precision@5: {} (mean {mean:.2}, chance 0.17)", report.join(", "));
    assert!(mean >= 0.4, "mean P@5 {mean:.2}: {report:?}");
    // The table names each mapping.
    let table = dir
        .command()
        .args(["query", "--device", "cpu", "--index"])
        .arg(&index)
        .arg("marina with sailboats")
        .succeeds();
    table.stdout_has("marina → ").stdout_has("sailboats → ");
    // --strict refuses, naming the words; a query of stop words (or nothing known) is refused.
    dir.command()
        .args(["query", "--device", "cpu", "--strict", "--index"])
        .arg(&index)
        .arg("marina with sailboats")
        .fails()
        .error_has("--strict")
        .error_has("marina, sailboats");
    dir.command()
        .args(["query", "--device", "cpu", "--index"])
        .arg(&index)
        .arg("with the")
        .fails()
        .error_has("only stop words");
    dir.command()
        .args(["query", "--device", "cpu", "--index"])
        .arg(&index)
        .arg("with qwzx")
        .fails()
        .error_has("not understood: qwzx");
}

#[test]
fn the_hubness_prior_moves_each_chip_by_its_own_offset_and_keeps_the_index_valid() {
    let dir = Dir::new();
    let model = dir.join("m");
    std::fs::create_dir(&model).unwrap();
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    for file in ["config.json", "vocab.json", "model.safetensors"] {
        std::fs::copy(default.join(file), model.join(file)).unwrap();
    }
    // The default model's own prior (if it ships one) is not copied: scoring starts without.
    let config_path = model.join("config.json");
    let mut config: Value = parse_json(&std::fs::read_to_string(&config_path).unwrap());
    config["scoring"]["hubness_prior"] = serde_json::json!(0.0);
    config["scoring"]["hubness_sharpness"] = serde_json::json!(0.0);
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let model_arg = model.to_str().unwrap();
    let index = geotiff_index(&dir, "idx", &["--model", model_arg]);
    let by_id = |hits: Vec<Value>| -> std::collections::BTreeMap<String, (f64, f64)> {
        hits.iter()
            .map(|h| {
                let id = h["chip_id"].as_str().unwrap().to_string();
                (id, (h["score"].as_f64().unwrap(), h["sim_g"].as_f64().unwrap()))
            })
            .collect()
    };
    let args = ["--top-k", "1000", "--exhaustive", "--model", model_arg];
    let before = by_id(query(&dir, &index, QUERY, &args));
    dir.command()
        .args(["model", "calibrate", "--split", "test", "--model", model_arg, "--dataset"])
        .arg(crate::util::examples_json())
        .succeeds();
    let mut config: Value = parse_json(&std::fs::read_to_string(&config_path).unwrap());
    config["scoring"]["hubness_prior"] = serde_json::json!(2.0);
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    // Same weights, so the index built before calibration still opens; every chip's score
    // moves by its own offset 2 · (v_g · t̄), and its global similarity does not.
    let after = by_id(query(&dir, &index, QUERY, &args));
    assert_eq!(before.len(), 62);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    let shifts: Vec<f64> = before
        .iter()
        .map(|(id, (s, g))| {
            let (s2, g2) = after[id];
            assert!((g - g2).abs() < 1e-6, "{id}: sim_g changed");
            s - s2
        })
        .collect();
    let (lo, hi) = shifts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(hi - lo > 1e-3, "the prior should move chips by different amounts: {lo}..{hi}");
    assert!(shifts.iter().all(|x| x.abs() < 2.0 + 1e-6), "|offset| is at most h · |t̄|: {lo}..{hi}");

    // The caption-bank form: each chip moves by 2 · (1/β) log mean_k exp(β · v_g · t_k), a
    // soft maximum over the bank, so by at most 2 and by at least its linear offset (the
    // log of a mean of exponentials is at least the mean of the exponents, Jensen; the bank
    // here holds all 50 captions, so its mean is t̄).
    config["scoring"]["hubness_sharpness"] = serde_json::json!(10.0);
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let banked = by_id(query(&dir, &index, QUERY, &args));
    for ((id, (s, _)), linear) in before.iter().zip(&shifts) {
        let shift = s - banked[id].0;
        assert!(shift.abs() <= 2.0 + 1e-4, "{id}: {shift}");
        assert!(shift >= linear - 1e-4, "{id}: the bank's offset {shift} is below the mean's {linear}");
    }

    // Without its prior file the model refuses to score with h > 0, naming the file.
    std::fs::remove_file(model.join("prior.safetensors")).unwrap();
    let run =
        dir.command().args(["query", "--index"]).arg(&index).args(["--model", model_arg, QUERY]).fails();
    assert!(run.error_line().contains("prior.safetensors"), "{run}");
}
