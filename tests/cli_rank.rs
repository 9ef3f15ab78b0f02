//! `acf-index rank`: ranking image files against a caption with a model directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::util::{Dir, TestCommand, example_images, parse_json};

/// A caption whose words are all in the example vocabulary.
const CAPTION: &str = "many airplanes at the airport";

/// `rank --device cpu --model MODEL --text TEXT IMAGES…`.
fn rank<'a>(dir: &'a Dir, model: &Path, text: &str, images: &[PathBuf]) -> TestCommand<'a> {
    let mut cmd = dir.command();
    cmd.args(["rank", "--device", "cpu", "--model"]).arg(model).args(["--text", text]).args(images);
    cmd
}

/// One result row: rank, S, sim_g, image.
#[derive(Debug)]
struct Row {
    rank: u64,
    score: f64,
    sim_g: f64,
    image: String,
}

/// Parses the table printed by `rank`, checking its header.
fn parse_table(run: &crate::util::Run) -> Vec<Row> {
    let lines = run.stdout_lines();
    let header: Vec<&str> = lines.first().map(|l| l.split_whitespace().collect()).unwrap_or_default();
    run.check(header == ["rank", "S", "sim_g", "image"], "the table should start with `rank S sim_g image`");
    lines[1..]
        .iter()
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            run.check(cols.len() == 4, &format!("table row {line:?} should have 4 columns"));
            let num =
                |s: &str| s.parse::<f64>().unwrap_or_else(|_| run.fail(&format!("not a number: {s:?}")));
            Row {
                rank: num(cols[0]) as u64,
                score: num(cols[1]),
                sim_g: num(cols[2]),
                image: cols[3].to_string(),
            }
        })
        .collect()
}

/// Parses `rank --json` output: one object per line with exactly rank, score, sim_g, image.
fn parse_json_lines(run: &crate::util::Run) -> Vec<Row> {
    run.stdout_lines()
        .iter()
        .map(|line| {
            let v = parse_json(line);
            let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            run.check(
                keys == BTreeSet::from(["rank", "score", "sim_g", "image"]),
                &format!("keys of {line}"),
            );
            Row {
                rank: v["rank"].as_u64().unwrap_or_else(|| run.fail("rank: no integer")),
                score: v["score"].as_f64().unwrap_or_else(|| run.fail("score: no number")),
                sim_g: v["sim_g"].as_f64().unwrap_or_else(|| run.fail("sim_g: no number")),
                image: v["image"].as_str().unwrap_or_else(|| run.fail("image: no string")).to_string(),
            }
        })
        .collect()
}

/// Ranks 1..=n, scores non-increasing, every input image exactly once, sim_g a cosine.
fn check_ranking(run: &crate::util::Run, rows: &[Row], images: &[PathBuf]) {
    run.check(rows.len() == images.len(), &format!("expected {} result rows", images.len()));
    for (i, row) in rows.iter().enumerate() {
        run.check(row.rank == i as u64 + 1, "ranks should count 1, 2, 3, …");
        run.check(row.score.is_finite() && row.sim_g.is_finite(), "scores should be finite");
        run.check((-1.0001..=1.0001).contains(&row.sim_g), "sim_g is a cosine similarity");
    }
    run.check(rows.windows(2).all(|w| w[0].score >= w[1].score), "scores should be sorted descending");
    let ranked: BTreeSet<&str> = rows.iter().map(|r| r.image.as_str()).collect();
    let given: BTreeSet<String> = images.iter().map(|p| p.display().to_string()).collect();
    run.check(
        ranked == given.iter().map(String::as_str).collect(),
        "every image should be ranked exactly once",
    );
}

#[test]
fn rank_orders_all_example_images_by_score() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let images = example_images();
    let run = rank(&dir, &model, CAPTION, &images).succeeds();
    let rows = parse_table(&run);
    check_ranking(&run, &rows, &images);
}

#[test]
fn rank_json_gives_one_object_per_image_agreeing_with_the_table() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let images = example_images();
    let run = rank(&dir, &model, CAPTION, &images).arg("--json").succeeds();
    let rows = parse_json_lines(&run);
    check_ranking(&run, &rows, &images);

    let table = rank(&dir, &model, CAPTION, &images).succeeds();
    for (j, t) in rows.iter().zip(parse_table(&table)) {
        table.check(
            j.image == t.image && (j.score - t.score).abs() < 1e-4 && (j.sim_g - t.sim_g).abs() < 1e-4,
            &format!("--json row {j:?} disagrees with the table row {t:?}"),
        );
    }
}

#[test]
fn scores_do_not_depend_on_the_other_images() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let images = example_images();
    // 20 files: more than one encoder batch (16), each image twice.
    let doubled: Vec<PathBuf> = images.iter().chain(&images).cloned().collect();
    let run = rank(&dir, &model, CAPTION, &doubled).arg("--json").succeeds();
    let rows = parse_json_lines(&run);
    run.check(rows.len() == 20, "expected 20 rows");
    let alone = rank(&dir, &model, CAPTION, &images[3..4]).arg("--json").succeeds();
    let alone = &parse_json_lines(&alone)[0];
    let same: Vec<&Row> = rows.iter().filter(|r| r.image == alone.image).collect();
    run.check(same.len() == 2, "the image should appear twice");
    for row in same {
        run.check(
            (row.score - alone.score).abs() < 1e-5 && (row.sim_g - alone.sim_g).abs() < 1e-5,
            &format!("{} scored {row:?} among others but {alone:?} alone", alone.image),
        );
    }
}

#[test]
fn caption_without_known_words_is_an_error() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    rank(&dir, &model, "xyzzy plugh", &example_images())
        .fails()
        .error_has("vocabulary")
        .error_has("xyzzy plugh");
}

#[test]
fn unknown_words_are_reported_and_the_known_ones_used() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let images = example_images();
    let run = rank(&dir, &model, "airport xyzzy", &images).succeeds();
    run.stderr_has("xyzzy");
    check_ranking(&run, &parse_table(&run), &images);
}

#[test]
fn unreadable_images_are_reported_and_the_others_ranked() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let good = example_images();
    let corrupt = dir.write("corrupt.jpg", b"\xff\xd8\xff\xe0 this is not a JPEG");
    let missing = dir.join("missing.png");
    let mut images = good.clone();
    images.insert(4, corrupt);
    images.push(missing);
    let run = rank(&dir, &model, CAPTION, &images).succeeds();
    run.stderr_has("corrupt.jpg").stderr_has("missing.png");
    check_ranking(&run, &parse_table(&run), &good);
}

#[test]
fn no_readable_image_is_an_error() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let corrupt = dir.write("corrupt.jpg", b"not an image");
    let run = rank(&dir, &model, CAPTION, &[corrupt, dir.join("missing.png")]).fails();
    run.error_has("2 image(s)").stderr_has("corrupt.jpg").stderr_has("missing.png");
}

#[test]
fn cuda_device_without_a_gpu_is_a_clear_error() {
    let dir = Dir::new();
    let doctor = parse_json(&dir.command().args(["doctor", "--json"]).succeeds().stdout);
    if doctor["cuda_available"] == true {
        eprintln!("skipped: this machine has CUDA");
        return;
    }
    let model = dir.init_model("m");
    let mut cmd = dir.command();
    cmd.args(["rank", "--device", "cuda", "--text", CAPTION, "--model"]).arg(&model).args(example_images());
    cmd.fails().error_has("cuda").error_has("not available");
    let mut info = dir.command();
    info.args(["model", "info", "--device", "cuda:1", "--model"]).arg(&model);
    info.fails().error_has("cuda:1");
}

#[test]
fn missing_model_directory_is_named() {
    let dir = Dir::new();
    let missing = dir.join("no-such-model");
    rank(&dir, &missing, CAPTION, &example_images()).fails().error_has(&missing.display().to_string());
}

#[test]
fn default_model_comes_from_acf_model_or_models_default() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let images = example_images();
    let mut cmd = dir.command();
    cmd.args(["rank", "--device", "cpu", "--text", CAPTION]).args(&images);
    // Neither --model nor ACF_MODEL, and no models/default here: the model shipped in the
    // checkout is used, or, where the checkout has none, the error says what to do.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/model.safetensors");
    if shipped.exists() {
        cmd.succeeds().stderr_has("models/default");
    } else {
        cmd.fails().error_has("models/default").error_has("--model").error_has("ACF_MODEL");
    }
    // ACF_MODEL names the model.
    let run = cmd.env("ACF_MODEL", &model).succeeds();
    check_ranking(&run, &parse_table(&run), &images);
    // models/default relative to the working directory.
    std::fs::create_dir(dir.join("models")).unwrap();
    std::fs::rename(&model, dir.join("models/default")).unwrap();
    let run = cmd.env_remove("ACF_MODEL").succeeds();
    check_ranking(&run, &parse_table(&run), &images);
}

#[test]
fn quiet_and_json_log_formats_control_stderr() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let images = example_images()[..2].to_vec();
    let corrupt = dir.write("corrupt.jpg", b"not an image");
    let mut with_problems = images.clone();
    with_problems.push(corrupt);

    // Default: human log lines (the model loaded, the unknown word, the bad file).
    let run = rank(&dir, &model, "airport xyzzy", &with_problems).succeeds();
    run.stderr_has("model loaded").stderr_has("xyzzy").stderr_has("corrupt.jpg");

    // -q: errors only.
    let run = rank(&dir, &model, "airport xyzzy", &with_problems).arg("-q").succeeds();
    run.check(
        !run.stderr.contains("model loaded") && !run.stderr.contains("xyzzy"),
        "-q hides info and warnings",
    );
    run.stderr_has("corrupt.jpg");
    let run = rank(&dir, &model, CAPTION, &images).arg("-q").succeeds();
    run.check(run.stderr.is_empty(), "-q with nothing wrong should leave stderr empty");

    // --log-format json: every stderr line is a JSON object with a level.
    let run = rank(&dir, &model, "airport xyzzy", &with_problems).args(["--log-format", "json"]).succeeds();
    let levels: Vec<String> = run
        .stderr
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|_| run.fail(&format!("stderr line is not JSON: {l:?}")));
            v["level"].as_str().unwrap_or_else(|| run.fail("JSON log line without level")).to_string()
        })
        .collect();
    for level in ["INFO", "WARN", "ERROR"] {
        run.check(levels.iter().any(|l| l == level), &format!("expected a {level} JSON log line"));
    }
    check_ranking(&run, &parse_table(&run), &images);
}

/// Bug: `init_logging` in `src/cli/mod.rs` never calls `with_ansi(...)`, so log lines carry
/// colour escape codes even when stderr is a file or pipe (cron logs, CI); only NO_COLOR helps.
#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let run = rank(&dir, &model, "airport xyzzy", &example_images()[..1]).env_remove("NO_COLOR").succeeds();
    run.stderr_has("model loaded");
    run.check(!run.stderr.contains('\u{1b}'), "stderr is a pipe here: no escape codes expected");
}
