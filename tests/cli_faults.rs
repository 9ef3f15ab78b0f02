//! Faults, races and bad input (the reliability issue): a crash at every step of the commit
//! protocol, signals, shard workers started together, damaged and missing part files,
//! changed options, and the smaller defects an adversarial nightly user found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{BIN, Dir, SAME_CHIP_TOLERANCE, geotiff, parse_json, read_index_externally};

/// Exit status of a process stopped at a crash point (`src/faults.rs`).
pub(crate) const CRASH_EXIT: i32 = 99;
const QUERY: &str = "buildings and green trees";

/// Three small real scenes copied under `dir/src` as a.tif, b.tif, c.tif.
pub(crate) fn scenes(dir: &Dir) -> Vec<PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    [("a.tif", "cogeo.tif"), ("b.tif", "naip-4band-150x200.tif"), ("c.tif", "l8-uint16-300x260.tif")]
        .iter()
        .map(|(name, fixture)| {
            let to = src.join(name);
            std::fs::copy(geotiff(fixture), &to).unwrap();
            to
        })
        .collect()
}

pub(crate) fn index_cmd(dir: &Dir, out: &Path, scenes: &[PathBuf]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["index", "--device", "cpu", "--readers", "1", "--batch", "4", "--out"])
        .arg(out)
        .args(scenes)
        .current_dir(dir.path())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub(crate) fn run(mut cmd: Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every chip a query sees (exhaustive, JSON), as (scene, chip_id).
pub(crate) fn query_all(dir: &Dir, index: &Path) -> (i32, Vec<(String, String)>, String) {
    let out = Command::new(BIN)
        .args([
            "query",
            "--device",
            "cpu",
            "--exhaustive",
            "--top-k",
            "100000",
            "--format",
            "json",
            "--index",
        ])
        .arg(index)
        .arg(QUERY)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let hits = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v = parse_json(l);
            (v["scene"].as_str().unwrap().to_string(), v["chip_id"].as_str().unwrap().to_string())
        })
        .collect();
    (out.status.code().unwrap_or(-1), hits, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Chip counts per scene path in the scene records with status ok.
fn recorded_chips(index: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(index.join("scenes"))
        .unwrap()
        .map(|e| parse_json(&std::fs::read_to_string(e.unwrap().path()).unwrap()))
        .filter(|r| r["status"] == "ok")
        .map(|r| (r["path"].as_str().unwrap().to_string(), r["chips"].as_u64().unwrap()))
        .collect()
}

/// chip_id → first 8 values of `global`, read with pyarrow.
fn features(index: &Path) -> BTreeMap<String, Vec<f64>> {
    let v = read_index_externally(index);
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let head = r["global_head"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            (r["chip_id"].as_str().unwrap().to_string(), head)
        })
        .collect()
}

fn assert_same_index(a: &Path, b: &Path) {
    let (fa, fb) = (features(a), features(b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>(), "same chip ids");
    for (id, x) in &fa {
        let d = x.iter().zip(&fb[id]).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        assert!(d < SAME_CHIP_TOLERANCE, "{id}: features differ by {d}");
    }
}

/// Waits (up to 2 minutes) until a running `index` into `out` has started a part file.
fn wait_for_first_part(out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(out.join("parts")).map(|d| d.count()).unwrap_or(0) == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sets a file's modification time a minute later: the scene counts as changed.
pub(crate) fn touch_later(path: &Path) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let now = std::fs::metadata(path).unwrap().modified().unwrap();
    file.set_modified(now + Duration::from_secs(60)).unwrap();
}

#[test]
fn a_crash_at_every_commit_step_leaves_whole_scenes_and_a_rerun_equals_a_clean_index() {
    let dir = Dir::new();
    let all = scenes(&dir);
    for point in [
        "writer:mid-scene",
        "part:before-rename",
        "commit:before-record",
        "atomic:before-rename",
        "commit:before-cleanup",
    ] {
        let out = dir.join(format!("crash-{}", point.replace(':', "-")));
        // Night 1: a and b. Night 2: a changed, c new, and a crash at `point`.
        let (code, err) = run(index_cmd(&dir, &out, &all[..2]));
        assert_eq!(code, 0, "{err}");
        touch_later(&all[0]);
        let mut cmd = index_cmd(&dir, &out, &all);
        cmd.env("ACF_CRASH_AT", point);
        let (code, err) = run(cmd);
        assert_eq!(code, CRASH_EXIT, "{point}: expected the crash point to fire\n{err}");

        // What a reader sees at that moment: whole scenes only, never a chip twice.
        let info = Command::new(BIN).args(["info", "--json"]).arg(&out).output().unwrap();
        assert!(info.status.success(), "{point}: info fails after a crash");
        let (code, hits, err) = query_all(&dir, &out);
        assert_eq!(code, 0, "{point}: query fails after a crash: {err}");
        let ids: BTreeSet<&String> = hits.iter().map(|(_, id)| id).collect();
        assert_eq!(ids.len(), hits.len(), "{point}: a chip seen twice");
        let mut per_scene: BTreeMap<String, u64> = BTreeMap::new();
        for (scene, _) in &hits {
            *per_scene.entry(scene.clone()).or_default() += 1;
        }
        let recorded: BTreeMap<String, u64> =
            recorded_chips(&out).into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(per_scene, recorded, "{point}: a scene is seen in part");
        assert!(
            per_scene.contains_key(&all[0].display().to_string()),
            "{point}: the old version of a.tif was lost"
        );

        // The rerun completes it, equal to an index built without the crash.
        let (code, err) = run(index_cmd(&dir, &out, &all));
        assert_eq!(code, 0, "{point}: rerun: {err}");
        let clean = dir.join(format!("clean-{}", point.replace(':', "-")));
        let (code, err) = run(index_cmd(&dir, &clean, &all));
        assert_eq!(code, 0, "{err}");
        assert_same_index(&out, &clean);
        let leftovers: Vec<String> = std::fs::read_dir(out.join("parts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{point}: temporary files left after the rerun: {leftovers:?}");
    }
}

#[test]
fn sigterm_stops_with_130_publishing_nothing_partial_and_a_rerun_completes() {
    let dir = Dir::new();
    let all = scenes(&dir);
    let out = dir.join("term");
    let child = index_cmd(&dir, &out, &all).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Signal in the middle of the first scene's part file.
    wait_for_first_part(&out);
    // SAFETY: kill on the child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    let temps: Vec<String> = std::fs::read_dir(out.join("parts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(temps.is_empty(), "temporary part files left: {temps:?}");
    assert!(err.contains("rerun") || err.contains("complete"), "{err}");
    let (code, err) = run(index_cmd(&dir, &out, &all));
    assert_eq!(code, 0, "{err}");
    assert_eq!(recorded_chips(&out).len(), 3);
}

#[test]
fn shard_workers_started_together_index_every_scene_exactly_once() {
    let dir = Dir::new();
    let all = scenes(&dir);
    for trial in 0..3 {
        let out = dir.join(format!("shards-{trial}"));
        let children: Vec<_> = (0..3)
            .map(|i| {
                let mut cmd = index_cmd(&dir, &out, &all);
                cmd.arg("--shard").arg(format!("{i}/3")).stdout(Stdio::null()).stderr(Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert_eq!(o.status.code(), Some(0), "trial {trial}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let (code, hits, err) = query_all(&dir, &out);
        assert_eq!(code, 0, "{err}");
        let ids: BTreeSet<&String> = hits.iter().map(|(_, id)| id).collect();
        assert_eq!(ids.len(), hits.len(), "trial {trial}: a chip indexed twice");
        assert_eq!(recorded_chips(&out).len(), 3, "trial {trial}: every scene once");
    }
}

#[test]
fn a_damaged_or_missing_part_is_reported_skipped_by_queries_and_repaired_by_a_rerun() {
    let dir = Dir::new();
    let all = scenes(&dir);
    let out = dir.join("idx");
    assert_eq!(run(index_cmd(&dir, &out, &all)).0, 0);
    let (_, before, _) = query_all(&dir, &out);
    let record = |name: &str| -> Value {
        std::fs::read_dir(out.join("scenes"))
            .unwrap()
            .map(|e| parse_json(&std::fs::read_to_string(e.unwrap().path()).unwrap()))
            .find(|r| r["path"].as_str().unwrap().ends_with(name))
            .unwrap()
    };
    // Truncate a.tif's part to half; delete c.tif's.
    let a_part = out.join(record("a.tif")["part"].as_str().unwrap());
    let len = std::fs::metadata(&a_part).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&a_part).unwrap().set_len(len / 2).unwrap();
    std::fs::remove_file(out.join(record("c.tif")["part"].as_str().unwrap())).unwrap();

    let info = Command::new(BIN).arg("info").arg(&out).output().unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("2 damaged") && text.contains("a.tif") && text.contains("c.tif"), "{text}");
    let (code, hits, err) = query_all(&dir, &out);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("a.tif") && err.contains("c.tif") && err.contains("skipped"), "{err}");
    assert!(!hits.is_empty() && hits.iter().all(|(s, _)| s.ends_with("b.tif")), "answers from the rest");

    let (code, err) = run(index_cmd(&dir, &out, &all));
    assert_eq!(code, 0, "{err}");
    let (_, after, _) = query_all(&dir, &out);
    assert_eq!(after.len(), before.len(), "the rerun repaired both scenes");
}

#[test]
fn changed_chip_options_are_refused_naming_the_option() {
    let dir = Dir::new();
    let all = scenes(&dir);
    let out = dir.join("idx");
    assert_eq!(run(index_cmd(&dir, &out, &all[..1])).0, 0);
    for (flag, value) in [("--stride", "112"), ("--bands", "3,2,1"), ("--min-valid", "0.9")] {
        let mut cmd = index_cmd(&dir, &out, &all);
        cmd.args([flag, value]);
        let (code, err) = run(cmd);
        assert_eq!(code, 1, "{flag}: {err}");
        assert!(err.contains(&format!("{flag} {value}")), "{flag}: {err}");
    }
}

#[test]
fn globs_ignore_case_and_small_scenes_become_padded_chips() {
    let dir = Dir::new();
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(geotiff("naip-4band-150x200.tif"), src.join("SMALL.TIF")).unwrap();
    let out = dir.join("idx");
    let mut cmd = index_cmd(&dir, &out, std::slice::from_ref(&src));
    cmd.args(["--include", "*.tif"]);
    let (code, err) = run(cmd);
    assert_eq!(code, 0, "{err}");
    let chips = recorded_chips(&out);
    assert_eq!(chips.values().copied().collect::<Vec<_>>(), vec![1], "one padded chip: {chips:?}");
}

#[test]
fn unreadable_files_say_why() {
    let dir = Dir::new();
    let empty = dir.write("empty.tif", b"");
    let missing = dir.join("missing.tif");
    let out = dir.join("idx");
    let (code, err) = run(index_cmd(&dir, &out, &[empty, missing]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("empty file (0 bytes)"), "{err}");
    assert!(err.contains("missing.tif") && err.contains("no such file"), "{err}");
}

#[test]
fn contradictory_query_filters_are_usage_errors() {
    let dir = Dir::new();
    let all = scenes(&dir);
    let out = dir.join("idx");
    assert_eq!(run(index_cmd(&dir, &out, &all[..1])).0, 0);
    for args in [
        vec!["--since", "2021-01-01", "--until", "2020-01-01"],
        vec!["--bbox", "10,91,11,92"],
        vec!["--bbox", "NaN,0,1,1"],
    ] {
        let o = Command::new(BIN)
            .args(["query", "--device", "cpu", "--index"])
            .arg(&out)
            .arg(QUERY)
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // More results than candidates: the candidates are raised to --top-k, and it says so.
    let o = Command::new(BIN)
        .args([
            "query",
            "--device",
            "cpu",
            "--format",
            "json",
            "--top-k",
            "10",
            "--candidates",
            "5",
            "--index",
        ])
        .arg(&out)
        .arg(QUERY)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 10, "--top-k 10 gives 10 hits");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--candidates 5"), "and says why");
    let o = Command::new(BIN)
        .args(["index", "--min-valid", "1.5", "--out"])
        .arg(&out)
        .arg(&all[0])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "--min-valid 1.5");
}

#[test]
fn a_paletted_scene_is_indexed_in_its_colours() {
    use gdal::raster::{ColorEntry, ColorInterpretation, ColorTable, PaletteInterpretation};
    let dir = Dir::new();
    let path = dir.join("paletted.tif");
    {
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut ds = driver.create_with_band_type::<u8, _>(&path, 224, 224, 1).unwrap();
        ds.set_geo_transform(&[500_000.0, 1.0, 0.0, 3_300_000.0, 0.0, -1.0]).unwrap();
        ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32617).unwrap()).unwrap();
        let mut band = ds.rasterband(1).unwrap();
        // Left half index 1 (red), right half index 2 (blue).
        let pixels: Vec<u8> = (0..224 * 224).map(|i| if i % 224 < 112 { 1 } else { 2 }).collect();
        band.write((0, 0), (224, 224), &mut gdal::raster::Buffer::new((224, 224), pixels)).unwrap();
        let mut table = ColorTable::new(PaletteInterpretation::Rgba);
        table.set_color_entry(1, &ColorEntry::rgba(200, 10, 10, 255));
        table.set_color_entry(2, &ColorEntry::rgba(10, 10, 200, 255));
        band.set_color_table(&table);
        band.set_color_interpretation(ColorInterpretation::PaletteIndex).unwrap();
    }
    let out = dir.join("idx");
    let (code, err) = run(index_cmd(&dir, &out, std::slice::from_ref(&path)));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("replicated"), "a palette is not a grey band: {err}");
    let o = Command::new(BIN)
        .args(["query", "--device", "cpu", "--thumbnails", "thumbs", "--index"])
        .arg(&out)
        .arg(QUERY)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let thumb = std::fs::read_dir(dir.join("thumbs")).unwrap().next().unwrap().unwrap().path();
    let img = image::open(&thumb).unwrap().to_rgb8();
    let (left, right) = (img.get_pixel(10, 100), img.get_pixel(img.width() - 10, 100));
    assert_eq!((left[0], left[2]), (200, 10), "left half red, got {left:?}");
    assert_eq!((right[0], right[2]), (10, 200), "right half blue, got {right:?}");
}

#[test]
fn prune_removes_scenes_whose_source_is_gone_and_info_lists_them_before() {
    let dir = Dir::new();
    let all = scenes(&dir);
    let src = dir.join("src");
    let out = dir.join("idx");
    assert_eq!(run(index_cmd(&dir, &out, std::slice::from_ref(&src))).0, 0);
    std::fs::remove_file(&all[2]).unwrap();
    let info = Command::new(BIN).arg("info").arg(&out).output().unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("source gone") && text.contains("c.tif"), "{text}");
    // Without --prune the deleted scene stays; with it, it goes.
    assert_eq!(run(index_cmd(&dir, &out, std::slice::from_ref(&src))).0, 0);
    assert_eq!(recorded_chips(&out).len(), 3);
    let mut cmd = index_cmd(&dir, &out, std::slice::from_ref(&src));
    cmd.arg("--prune");
    let (code, err) = run(cmd);
    assert_eq!(code, 0, "{err}");
    let left = recorded_chips(&out);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.keys().any(|p| p.ends_with("c.tif")));
    let (_, hits, _) = query_all(&dir, &out);
    assert!(hits.iter().all(|(s, _)| !s.ends_with("c.tif")), "its chips are gone too");
}

/// A 672 × 224 scene in UTM 60S (Fiji) from 179.91°E to 179.90°W: its middle chip crosses
/// the antimeridian.
fn antimeridian_scene(path: &Path) {
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = driver.create_with_band_type::<u8, _>(path, 672, 224, 3).unwrap();
    ds.set_geo_transform(&[810_000.0, 30.0, 0.0, 8_120_000.0, 0.0, -30.0]).unwrap();
    ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32760).unwrap()).unwrap();
    for b in 1..=3 {
        let pixels: Vec<u8> = (0..672 * 224).map(|i| ((i * 7 + b * 31) % 251) as u8).collect();
        let mut band = ds.rasterband(b).unwrap();
        band.write((0, 0), (672, 224), &mut gdal::raster::Buffer::new((672, 224), pixels)).unwrap();
    }
}

fn bbox_hits(dir: &Dir, index: &Path, bbox: &str) -> Vec<Value> {
    let o = Command::new(BIN)
        .args(["query", "--device", "cpu", "--format", "json", "--top-k", "10", "--bbox", bbox, "--index"])
        .arg(index)
        .arg(QUERY)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{bbox}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(parse_json).collect()
}

#[test]
fn footprints_across_the_antimeridian_are_split_and_filtered_right() {
    let dir = Dir::new();
    let scene = dir.join("fiji.tif");
    antimeridian_scene(&scene);
    let out = dir.join("idx");
    let (code, err) = run(index_cmd(&dir, &out, std::slice::from_ref(&scene)));
    assert_eq!(code, 0, "{err}");
    let rows = read_index_externally(&out);
    let rows = rows["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        let b = &r["bbox"];
        let (xmin, xmax) = (b["xmin"].as_f64().unwrap(), b["xmax"].as_f64().unwrap());
        assert!((-180.0..=180.0).contains(&xmin) && (-180.0..=180.0).contains(&xmax), "{r}");
        let col = r["window"][0].as_u64().unwrap();
        if col == 224 {
            assert_eq!(r["geom_type"], "MultiPolygon", "the crossing chip is cut in two");
            assert!(xmin > xmax, "its bbox wraps: {b}");
        } else {
            assert_eq!(r["geom_type"], "Polygon");
            assert!(xmin <= xmax);
        }
    }
    let geo = &read_index_externally(&out)["files"][0]["geo"]["columns"]["geometry"];
    assert!(
        geo["bbox"][0].as_f64().unwrap() > geo["bbox"][2].as_f64().unwrap(),
        "the file bbox wraps: {geo}"
    );
    assert!(geo["geometry_types"].as_array().unwrap().iter().any(|t| t == "MultiPolygon"), "{geo}");
    // A box in Africa finds nothing; one on either side of the line finds that side.
    assert!(bbox_hits(&dir, &out, "10,9.5,11,10.5").is_empty(), "no Pacific chip in Africa");
    let cols = |hits: Vec<Value>| -> BTreeSet<u64> {
        hits.iter().map(|h| h["window"][0].as_u64().unwrap()).collect()
    };
    assert_eq!(cols(bbox_hits(&dir, &out, "179.99,-17.1,180,-16.9")), BTreeSet::from([224]));
    assert_eq!(cols(bbox_hits(&dir, &out, "179.9,-17.1,179.95,-16.9")), BTreeSet::from([0]));
    assert_eq!(cols(bbox_hits(&dir, &out, "-180,-17.1,-179.95,-16.9")), BTreeSet::from([224, 448]));
    for h in bbox_hits(&dir, &out, "-180,-17.1,-179.99,-16.9") {
        let lon = h["center"][0].as_f64().unwrap();
        assert!(lon.abs() > 179.9, "the crossing chip's centre is on the line, not at 0: {lon}");
    }
}

#[test]
fn a_second_signal_exits_at_once_without_a_crash() {
    let dir = Dir::new();
    let all = scenes(&dir);
    for trial in 0..3 {
        let out = dir.join(format!("twice-{trial}"));
        let child = index_cmd(&dir, &out, &all).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        wait_for_first_part(&out);
        // SAFETY: kill on the child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(200));
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "trial {trial}: {}", String::from_utf8_lossy(&o.stderr));
    }
}
