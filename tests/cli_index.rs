//! `acf-index index` and `info` end to end on real GeoTIFF scenes, read back with pyarrow
//! and shapely, footprints checked against GDAL's own `gdaltransform`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::{Dir, SAME_CHIP_TOLERANCE, TestCommand, geotiff, parse_json, read_index_externally};

/// Exit code of `index` when some scenes failed (README).
const EXIT_SOME_FAILED: i32 = 3;

/// `index --device cpu --out OUT SCENES…` with the default model.
fn index<'a>(dir: &'a Dir, out: &Path, scenes: &[PathBuf]) -> TestCommand<'a> {
    let mut cmd = dir.command();
    cmd.args(["index", "--device", "cpu", "--out"]).arg(out).args(scenes);
    cmd
}

/// Scene records of an index, by scene path.
fn records(index: &Path) -> BTreeMap<String, Value> {
    std::fs::read_dir(index.join("scenes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = parse_json(&std::fs::read_to_string(&p).unwrap());
            (v["path"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn file_name(path: &str) -> String {
    Path::new(path).file_name().unwrap().to_string_lossy().into_owned()
}

/// Files under `dir/parts`, sorted.
fn parts(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("parts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Windows along one dimension (README: every 224 px, the last shifted inside).
fn offsets(len: u64) -> Vec<u64> {
    if len <= 224 {
        return vec![0];
    }
    let mut v: Vec<u64> = (0..).map(|i| i * 224).take_while(|o| o + 224 < len).collect();
    v.push(len - 224);
    v
}

/// (width, height) of a scene according to gdalinfo.
fn gdal_size(scene: &Path) -> (u64, u64) {
    let out =
        Command::new("gdalinfo").arg("-json").arg(scene).output().expect("gdalinfo (gdal-bin) is needed");
    let v = parse_json(&String::from_utf8_lossy(&out.stdout));
    (v["size"][0].as_u64().unwrap(), v["size"][1].as_u64().unwrap())
}

/// GDAL's own transformation of pixel positions to CRS84 (gdaltransform).
fn gdaltransform(scene: &Path, pixels: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut child = Command::new("gdaltransform")
        .args(["-t_srs", "OGC:CRS84"])
        .arg(scene)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gdaltransform (gdal-bin) is needed");
    let input: String = pixels.iter().map(|(x, y)| format!("{x} {y}\n")).collect();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Vec<f64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0], v[1])
        })
        .collect()
}

const SCENES: [&str; 8] = [
    "RGB.byte.tif",
    "cogeo.tif",
    "m_3607824_se_17_1_20160620_sub.tif",
    "rgbn.tif",
    "OSBS_029.tif",
    "rmnp-rgb.tif",
    "l8-uint16-300x260.tif",
    "naip-4band-150x200.tif",
];

#[test]
fn real_scenes_give_the_chip_grid_and_footprints_gdal_gives() {
    let dir = Dir::new();
    let out = dir.join("idx");
    let scenes: Vec<PathBuf> = SCENES.iter().map(|s| geotiff(s)).collect();
    let run = index(&dir, &out, &scenes).succeeds();
    run.stdout_has("8 scenes: 8 indexed, 0 already indexed, 0 failed");

    // Windows: every scene's chips + windows under --min-valid = the grid of its size.
    let recs = records(&out);
    for scene in &scenes {
        let rec = &recs[&scene.canonicalize().unwrap().display().to_string()];
        let (w, h) = gdal_size(scene);
        let windows = (offsets(w).len() * offsets(h).len()) as u64;
        let chips = rec["chips"].as_u64().unwrap() + rec["chips_low_valid"].as_u64().unwrap();
        run.check(
            chips == windows,
            &format!("{}: {chips} windows, the {w}x{h} grid has {windows}", scene.display()),
        );
    }
    // RGB.byte.tif has nodata borders: some of its windows are mostly nodata.
    let rgb = &recs[&geotiff("RGB.byte.tif").canonicalize().unwrap().display().to_string()];
    run.check(rgb["chips_low_valid"].as_u64().unwrap() > 0, "RGB.byte.tif: no window under --min-valid");

    let data = read_index_externally(&out);
    let rows = data["rows"].as_array().unwrap();
    let by_scene: BTreeMap<String, Vec<&Value>> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(file_name(r["scene"].as_str().unwrap())).or_default().push(r);
        m
    });
    for scene in &scenes {
        let name = file_name(&scene.display().to_string());
        let (w, h) = gdal_size(scene);
        let rows = &by_scene[&name];
        for r in rows {
            let win: Vec<u64> = r["window"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert!(offsets(w).contains(&win[0]) && offsets(h).contains(&win[1]), "{name}: window {win:?}");
            assert_eq!((win[2], win[3]), (w.min(224), h.min(224)), "{name}: window size");
            assert_eq!(r["padded"].as_bool().unwrap(), w < 224 || h < 224, "{name}: padded flag");
            assert!((r["global_norm"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{name}: global not unit norm");
            assert_eq!(r["nodes_len"].as_u64().unwrap(), 49 * 512);
            assert!((r["node0_norm"].as_f64().unwrap() - 1.0).abs() < 1e-2, "{name}: f16 node not unit norm");
            assert!(r["valid_fraction"].as_f64().unwrap() >= 0.5);
        }
        // Footprint corners = GDAL's transformation of the window corners.
        let corners: Vec<(f64, f64)> = rows
            .iter()
            .flat_map(|r| {
                let v: Vec<f64> =
                    r["window"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                // Counter-clockwise on the map for these north-up scenes: top-left, bottom-left,
                // bottom-right, top-right.
                [(v[0], v[1]), (v[0], v[1] + v[3]), (v[0] + v[2], v[1] + v[3]), (v[0] + v[2], v[1])]
            })
            .collect();
        let expected = gdaltransform(scene, &corners);
        for (i, r) in rows.iter().enumerate() {
            let ring: Vec<(f64, f64)> = r["ring"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no geometry"))
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
                .collect();
            assert_eq!(ring.len(), 33, "{name}: 8 points per edge, closed");
            let area: f64 = ring.windows(2).map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1).sum();
            assert!(area > 0.0, "{name}: exterior ring not counter-clockwise (RFC 7946)");
            for (k, &(ex, ey)) in expected[4 * i..4 * i + 4].iter().enumerate() {
                let (x, y) = ring[k * 8];
                assert!(
                    (x - ex).abs() < 1e-7 && (y - ey).abs() < 1e-7,
                    "{name} corner {k}: ({x}, {y}) vs GDAL ({ex}, {ey})"
                );
            }
            let b = &r["bbox"];
            let (xs, ys): (Vec<f64>, Vec<f64>) = ring.iter().copied().unzip();
            assert_eq!(b["xmin"].as_f64().unwrap(), xs.iter().copied().fold(f64::INFINITY, f64::min));
            assert_eq!(b["ymax"].as_f64().unwrap(), ys.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
    }
    // EPSG:4326 scene: footprints are the geotransform's own degrees.
    let rmnp = &by_scene["rmnp-rgb.tif"][0];
    assert_eq!(rmnp["crs"], "EPSG:4326");
    // Every file declares GeoParquet 1.1 with a bbox covering every chip in it.
    for f in data["files"].as_array().unwrap() {
        let geo = &f["geo"];
        assert_eq!(geo["version"], "1.1.0");
        assert_eq!(geo["columns"]["geometry"]["encoding"], "WKB");
        assert_eq!(f["nodes_type"], "fixed_size_binary[50176]");
        assert_eq!(f["nodes_dtype"], "<f2");
        assert_eq!(f["nodes_shape"], serde_json::json!([49, 512]));
        let fb: Vec<f64> = geo["columns"]["geometry"]["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(fb[0] <= fb[2] && fb[1] <= fb[3]);
    }
    for r in rows {
        let part_bbox = data["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["part"].as_str().unwrap().starts_with(&r["chip_id"].as_str().unwrap()[..16]))
            .map(|f| f["geo"]["columns"]["geometry"]["bbox"].clone())
            .unwrap();
        let b = &r["bbox"];
        assert!(b["xmin"].as_f64().unwrap() >= part_bbox[0].as_f64().unwrap() - 1e-12);
        assert!(b["xmax"].as_f64().unwrap() <= part_bbox[2].as_f64().unwrap() + 1e-12);
    }

    // `info` sums it up.
    let info = dir.command().args(["info", "--json"]).arg(&out).succeeds();
    let info = parse_json(&info.stdout);
    assert_eq!(info["scenes_ok"], 8);
    assert_eq!(info["chips"].as_u64().unwrap(), rows.len() as u64);
    assert!(info["crs"]["EPSG:4326"].as_u64().unwrap() > 0);
}

#[test]
fn a_rerun_skips_everything_and_a_changed_scene_is_replaced() {
    let dir = Dir::new();
    let archive = dir.join("archive");
    std::fs::create_dir(&archive).unwrap();
    std::fs::copy(geotiff("OSBS_029.tif"), archive.join("a.tif")).unwrap();
    std::fs::copy(geotiff("rmnp-rgb.tif"), archive.join("b.tif")).unwrap();
    let out = dir.join("idx");
    index(&dir, &out, std::slice::from_ref(&archive))
        .succeeds()
        .stdout_has("2 scenes: 2 indexed, 0 already indexed");
    let before = parts(&out);
    index(&dir, &out, std::slice::from_ref(&archive))
        .succeeds()
        .stdout_has("2 scenes: 0 indexed, 2 already indexed");
    assert_eq!(parts(&out), before, "a rerun rewrote part files");

    // b.tif now holds another scene: its old rows disappear, the new ones appear.
    std::fs::copy(geotiff("cogeo.tif"), archive.join("b.tif")).unwrap();
    index(&dir, &out, std::slice::from_ref(&archive))
        .succeeds()
        .stdout_has("2 scenes: 1 indexed, 1 already indexed");
    assert_eq!(parts(&out).len(), 2, "old part of b.tif left behind: {:?}", parts(&out));
    let rows = read_index_externally(&out)["rows"].as_array().unwrap().clone();
    let b_rows = rows.iter().filter(|r| r["scene"].as_str().unwrap().ends_with("b.tif")).count();
    assert_eq!(b_rows, 25, "cogeo.tif (1024x1024) has 25 chips");
    assert_eq!(rows.len(), 25 + 4);
}

#[test]
fn bad_files_get_one_line_each_and_the_rest_is_indexed() {
    let dir = Dir::new();
    let archive = dir.join("archive");
    std::fs::create_dir(&archive).unwrap();
    std::fs::copy(geotiff("OSBS_029.tif"), archive.join("good.tif")).unwrap();
    let cog = std::fs::read(geotiff("cogeo.tif")).unwrap();
    std::fs::write(archive.join("truncated.tif"), &cog[..cog.len() / 3]).unwrap();
    std::fs::write(archive.join("notes.tif"), "this is not a raster\n").unwrap();
    let out = dir.join("idx");
    let missing = dir.join("missing.tif");
    let run = index(&dir, &out, &[archive.clone(), missing]).expect_code(EXIT_SOME_FAILED);
    for bad in ["truncated.tif", "notes.tif", "missing.tif"] {
        let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains(bad)).collect();
        run.check(lines.len() == 1, &format!("expected one stderr line naming {bad}"));
    }
    run.stdout_has("4 scenes: 1 indexed, 0 already indexed, 3 failed");
    assert_eq!(parts(&out).len(), 1, "something was written for a bad scene: {:?}", parts(&out));
    let rows = read_index_externally(&out)["rows"].as_array().unwrap().len();
    assert_eq!(rows, 4);
    let info = dir.command().args(["info"]).arg(&out).succeeds();
    info.stdout_has("1 indexed, 2 failed").stdout_has("truncated.tif");
}

#[test]
fn a_killed_run_then_a_rerun_equals_an_uninterrupted_run() {
    let dir = Dir::new();
    let scenes: Vec<PathBuf> =
        ["cogeo.tif", "RGB.byte.tif", "OSBS_029.tif", "rmnp-rgb.tif"].iter().map(|s| geotiff(s)).collect();
    let whole = dir.join("whole");
    index(&dir, &whole, &scenes).succeeds();

    let killed = dir.join("killed");
    let mut child = dir
        .command()
        .args(["index", "--device", "cpu", "--batch", "4", "--readers", "1", "--out"])
        .arg(&killed)
        .args(&scenes)
        .spawn_quiet();
    // Kill it in the middle of the first scene's part file (cogeo.tif, 25 chips).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let tmp = std::fs::read_dir(killed.join("parts")).map(|d| d.count()).unwrap_or(0);
        if tmp > 0 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever readers see now is whole scenes only.
    let partial = read_index_externally(&killed);
    let mut per_scene: BTreeMap<String, usize> = BTreeMap::new();
    for r in partial["rows"].as_array().unwrap() {
        *per_scene.entry(file_name(r["scene"].as_str().unwrap())).or_default() += 1;
    }
    let complete = read_index_externally(&whole);
    let mut whole_per_scene: BTreeMap<String, usize> = BTreeMap::new();
    for r in complete["rows"].as_array().unwrap() {
        *whole_per_scene.entry(file_name(r["scene"].as_str().unwrap())).or_default() += 1;
    }
    for (scene, n) in &per_scene {
        assert_eq!(Some(n), whole_per_scene.get(scene), "{scene}: partial rows visible after a kill");
    }

    index(&dir, &killed, &scenes).succeeds();
    let again = read_index_externally(&killed);
    let ids = |v: &Value| -> BTreeSet<String> {
        v["rows"].as_array().unwrap().iter().map(|r| r["chip_id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(
        again["rows"].as_array().unwrap().len(),
        complete["rows"].as_array().unwrap().len(),
        "duplicated or missing rows"
    );
    assert_eq!(ids(&again), ids(&complete));
    let heads: BTreeMap<String, Vec<f64>> = complete["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["chip_id"].as_str().unwrap().to_string(),
                serde_json::from_value(r["global_head"].clone()).unwrap(),
            )
        })
        .collect();
    for r in again["rows"].as_array().unwrap() {
        let head: Vec<f64> = serde_json::from_value(r["global_head"].clone()).unwrap();
        let want = &heads[r["chip_id"].as_str().unwrap()];
        assert!(
            head.iter().zip(want).all(|(a, b)| (a - b).abs() < SAME_CHIP_TOLERANCE),
            "{}: features differ",
            r["chip_id"]
        );
    }
    let leftovers: Vec<String> = parts(&killed).into_iter().filter(|p| p.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_second_writer_is_refused_and_another_model_needs_new_model() {
    let dir = Dir::new();
    let out = dir.join("idx");
    index(&dir, &out, &[geotiff("OSBS_029.tif")]).succeeds();

    // Hold the lock the way a running writer does.
    let lock = std::fs::OpenOptions::new().write(true).open(out.join(".lock")).unwrap();
    // SAFETY: flock on an open file descriptor.
    assert_eq!(unsafe { libc_flock(std::os::fd::AsRawFd::as_raw_fd(&lock)) }, 0);
    index(&dir, &out, &[geotiff("rmnp-rgb.tif")])
        .fails()
        .error_has("another acf-index process is writing this index");
    drop(lock);

    let other = dir.init_model("other-model");
    let run = dir
        .command()
        .args(["index", "--device", "cpu", "--model"])
        .arg(&other)
        .arg("--out")
        .arg(&out)
        .arg(geotiff("rmnp-rgb.tif"))
        .fails();
    run.error_has("--new-model");
    dir.command()
        .args(["index", "--device", "cpu", "--new-model", "--model"])
        .arg(&other)
        .arg("--out")
        .arg(&out)
        .arg(geotiff("rmnp-rgb.tif"))
        .succeeds();
    let rows = read_index_externally(&out)["rows"].as_array().unwrap().clone();
    assert!(
        rows.iter().all(|r| r["scene"].as_str().unwrap().ends_with("rmnp-rgb.tif")),
        "rows of the old model remain"
    );
}

unsafe extern "C" {
    fn flock(fd: i32, operation: i32) -> i32;
}

/// LOCK_EX | LOCK_NB.
unsafe fn libc_flock(fd: i32) -> i32 {
    unsafe { flock(fd, 2 | 4) }
}

#[test]
fn shards_write_disjoint_shares_of_one_index() {
    let dir = Dir::new();
    let scenes: Vec<PathBuf> = SCENES.iter().map(|s| geotiff(s)).collect();
    let out = dir.join("idx");
    let mut counts = 0;
    for shard in ["0/2", "1/2"] {
        let run = index(&dir, &out, &scenes).args(["--shard", shard]).succeeds();
        let n: usize = run.stdout.split(" scenes").next().unwrap().trim().parse().unwrap();
        counts += n;
    }
    assert_eq!(counts, 8, "the two shares should cover all scenes exactly once");
    index(&dir, &out, &scenes).succeeds().stdout_has("8 scenes: 0 indexed, 8 already indexed");
}

#[test]
fn scenes_without_georeferencing_are_indexed_with_null_geometry() {
    let dir = Dir::new();
    let out = dir.join("idx");
    let jpg = crate::util::example_images()[0].clone();
    let run = index(&dir, &out, &[jpg]).succeeds();
    run.stderr_has("no georeferencing");
    let rows = read_index_externally(&out)["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 4, "a 256x256 image has 4 windows");
    assert!(rows.iter().all(|r| r["ring"].is_null() && r["bbox"].is_null() && r["crs"].is_null()));
}

#[test]
fn bad_arguments_are_explained() {
    let dir = Dir::new();
    dir.command().args(["index", "--out", "x"]).fails().error_has("nothing to index");
    dir.command().args(["index", "--out", "x", "--shard", "2/2", "a.tif"]).usage_error();
    dir.command().args(["index", "--out", "x", "--scale", "5,1", "a.tif"]).usage_error();
    dir.command().args(["info", "nope"]).fails().error_has("no such index directory");
    let run = index(&dir, &dir.join("idx"), &[geotiff("rgbn.tif")])
        .args(["--bands", "4,3,9"])
        .expect_code(EXIT_SOME_FAILED);
    run.stderr_has("--bands asks for band 9, the scene has 4");
}

#[test]
fn a_one_band_scene_is_replicated_to_rgb_with_a_warning() {
    let dir = Dir::new();
    let out = dir.join("idx");
    let scene = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geotiff-1band/osbs-gray-1band-240x200.tif");
    let run = index(&dir, &out, &[scene]).succeeds();
    run.stderr_has("1 band(s): band 1 replicated to R, G and B");
    let rows = read_index_externally(&out)["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "240x200: two windows, padded in height");
    assert!(rows.iter().all(|r| r["padded"].as_bool().unwrap()));
}

#[test]
fn a_scene_list_is_read_and_verify_compares_content() {
    let dir = Dir::new();
    let scene = dir.join("a.tif");
    // Uncompressed, so that flipping a byte in the middle changes a pixel, not the format.
    let ok = Command::new("gdal_translate")
        .args(["-q", "-co", "COMPRESS=NONE"])
        .arg(geotiff("OSBS_029.tif"))
        .arg(&scene)
        .status()
        .expect("gdal_translate (gdal-bin) is needed");
    assert!(ok.success());
    std::fs::write(dir.join("list.txt"), format!("# nightly list\n{}\n\n", scene.display())).unwrap();
    let out = dir.join("idx");
    let list = |extra: &[&str]| {
        let mut cmd = dir.command();
        cmd.args(["index", "--device", "cpu", "--from-list", "list.txt", "--out"]).arg(&out).args(extra);
        cmd
    };
    list(&["--verify"]).succeeds().stdout_has("1 scenes: 1 indexed");
    list(&["--verify"]).succeeds().stdout_has("1 scenes: 0 indexed, 1 already indexed");
    // Same size and mtime, other content: only --verify notices.
    let meta = std::fs::metadata(&scene).unwrap();
    let mut bytes = std::fs::read(&scene).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&scene, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&scene)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    list(&[]).succeeds().stdout_has("0 indexed, 1 already indexed");
    list(&["--verify"]).succeeds().stdout_has("1 scenes: 1 indexed");
}

#[test]
fn gsd_resamples_chips_to_one_ground_size_and_is_fixed_for_the_index() {
    // The 1 m NAIP scene (300×300 px) at 0.5 m: 112-px windows every 112 px (3 × 3); at 2 m
    // one 448-px window, wider than the scene, so one padded window of all 300 px.
    let dir = Dir::new();
    let naip = geotiff("m_3607824_se_17_1_20160620_sub.tif");
    for (gsd, side, grid) in [("0.5", 112u64, vec![0u64, 112, 188]), ("2", 300, vec![0])] {
        let out = dir.join(format!("idx-{gsd}"));
        index(&dir, &out, std::slice::from_ref(&naip)).args(["--gsd", gsd]).succeeds();
        let rows = read_index_externally(&out)["rows"].as_array().unwrap().clone();
        assert_eq!(rows.len(), grid.len() * grid.len(), "--gsd {gsd}: chips");
        let windows: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r["window"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
            .collect();
        for w in &windows {
            assert!(grid.contains(&(w[0] as u64)) && grid.contains(&(w[1] as u64)), "--gsd {gsd}: {w:?}");
            assert_eq!((w[2] as u64, w[3] as u64), (side, side), "--gsd {gsd}: window size");
        }
        // Footprints are the windows' true ground (GDAL's own transformation of the corners).
        let corners: Vec<(f64, f64)> = windows
            .iter()
            .flat_map(|v| [(v[0], v[1]), (v[0], v[1] + v[3]), (v[0] + v[2], v[1] + v[3])])
            .collect();
        let expected = gdaltransform(&naip, &corners);
        for (i, r) in rows.iter().enumerate() {
            let ring = r["ring"].as_array().unwrap();
            for (k, &(ex, ey)) in expected[3 * i..3 * i + 3].iter().enumerate() {
                let (x, y) = (ring[k * 8][0].as_f64().unwrap(), ring[k * 8][1].as_f64().unwrap());
                assert!((x - ex).abs() < 1e-7 && (y - ey).abs() < 1e-7, "--gsd {gsd} corner {k}");
            }
        }
        let header = parse_json(&std::fs::read_to_string(out.join("index.json")).unwrap());
        assert_eq!(header["chip_options"]["gsd"].as_f64(), Some(gsd.parse().unwrap()));
    }
    // The option is fixed for the index, and named when a run differs.
    index(&dir, &dir.join("idx-2"), std::slice::from_ref(&naip))
        .fails()
        .error_has("native resolution (no --gsd) differs from this index's --gsd 2");
    // Absurd factors and scenes without a pixel size fail one by one, with the reason.
    let jpg = crate::util::example_images()[0].clone();
    let run = index(&dir, &dir.join("idx-bad"), &[naip.clone(), jpg])
        .args(["--gsd", "0.05"])
        .expect_code(EXIT_SOME_FAILED);
    run.stderr_has("--gsd 0.05 would upsample this 1 m scene 20× (at most 8×)");
    run.stderr_has("has no georeferencing, so its pixel size is unknown");
    dir.command().args(["index", "--out", "x", "--gsd", "0", "a.tif"]).usage_error();
    dir.command().args(["index", "--out", "x", "--gsd", "nan", "a.tif"]).usage_error();
}

#[test]
fn scenes_far_outside_the_training_resolution_are_named_in_a_warning() {
    let dir = Dir::new();
    let out = dir.join("idx");
    // A 30 m Landsat subset and a 10 cm aerial plot, against the default model's 0.3–8 m.
    let run = index(&dir, &out, &[geotiff("l8-uint16-300x260.tif"), geotiff("OSBS_029.tif")]).succeeds();
    run.stderr_has("l8-uint16-300x260.tif: ground sample distance 30");
    run.stderr_has("m per pixel is far coarser than the model's training imagery (0.3–8 m)");
    run.stderr_has("OSBS_029.tif: ground sample distance 0.1 m per pixel is far finer");
    run.stderr_has("index with --gsd 1 to resample");
    // The NAIP scene (1 m) is inside the range: no warning.
    let run = index(&dir, &dir.join("idx2"), &[geotiff("m_3607824_se_17_1_20160620_sub.tif")]).succeeds();
    assert!(!run.stderr.contains("ground sample distance"), "{}", run.stderr);
}

#[test]
fn test_time_views_are_averaged_into_the_features_and_fixed_for_the_index() {
    let dir = Dir::new();
    let one = dir.init_model("one-view");
    // The same weights (same fingerprint) with two views in config.json.
    let two = dir.join("two-views");
    std::fs::create_dir(&two).unwrap();
    for f in ["vocab.json", "model.safetensors"] {
        std::fs::copy(one.join(f), two.join(f)).unwrap();
    }
    let mut config = parse_json(&std::fs::read_to_string(one.join("config.json")).unwrap());
    config["image"]["test_time_views"] = 2.into();
    std::fs::write(two.join("config.json"), config.to_string()).unwrap();
    let scene = geotiff("OSBS_029.tif");
    let run = |model: &Path, out: &str| {
        let mut cmd = dir.command();
        cmd.args(["index", "--device", "cpu", "--model"])
            .arg(model)
            .arg("--out")
            .arg(dir.join(out))
            .arg(&scene);
        cmd
    };
    run(&one, "a").succeeds();
    run(&two, "b").succeeds();
    let header = parse_json(&std::fs::read_to_string(dir.join("b/index.json")).unwrap());
    assert_eq!(header["chip_options"]["views"].as_u64(), Some(2));
    let heads = |out: &str| -> Vec<Value> {
        read_index_externally(&dir.join(out))["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["global_head"].clone())
            .collect()
    };
    let (a, b) = (heads("a"), heads("b"));
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b, "two views should change the stored features");
    // An index holds one kind of features: the other view count is refused, naming both.
    run(&two, "a").fails().error_has(
        "image.test_time_views 2 (the model's config.json) differs from this index's image.test_time_views 1",
    );
}
