//! `acf-index model init|info|average`: creating model directories and refusing inconsistent ones.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{Dir, examples_json, parse_json, sha256_file};

const MODEL_FILES: [&str; 4] = ["config.json", "vocab.json", "model.safetensors", "MODEL_CARD.md"];

fn read_json(path: &Path) -> Value {
    parse_json(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
    )
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

/// `model info --json` of a model directory.
fn info_json(dir: &Dir, model: &Path) -> Value {
    let run =
        dir.command().args(["model", "info", "--device", "cpu", "--json", "--model"]).arg(model).succeeds();
    parse_json(&run.stdout)
}

/// `model init` arguments up to (not including) `--out`.
fn init_args<'a>(dir: &'a Dir, config: &str) -> crate::util::TestCommand<'a> {
    let mut cmd = dir.command();
    cmd.args(["model", "init", "--config", config, "--vocab-from"]).arg(examples_json());
    cmd
}

/// Two untrained models that differ (seeds 42 and 7): `dir/a` and `dir/b`.
fn two_models(dir: &Dir) -> (PathBuf, PathBuf) {
    let a = dir.init_model("a");
    init_args(dir, "pvig-nano").args(["--seed", "7", "--out", "b"]).succeeds();
    (a, dir.join("b"))
}

/// The names in a directory, sorted.
fn names_in(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn init_creates_a_complete_model_directory() {
    let dir = Dir::new();
    let out = dir.join("m");
    let run = init_args(&dir, "pvig-nano").arg("--out").arg(&out).succeeds();
    for file in MODEL_FILES {
        run.check(out.join(file).is_file(), &format!("{file} should be created"));
    }
    let fingerprint = sha256_file(&out.join("model.safetensors"));
    run.stdout_has("pvig-nano").stdout_has(&fingerprint[..12]);

    let card = std::fs::read_to_string(out.join("MODEL_CARD.md")).unwrap();
    run.check(card.contains(&fingerprint), "MODEL_CARD.md should give the full fingerprint");
    run.check(card.contains("untrained"), "MODEL_CARD.md should say the model is untrained");

    let vocab = read_json(&out.join("vocab.json"));
    let words: Vec<&str> = vocab["words"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    run.check(words.starts_with(&["<pad>", "<unk>"]), "vocab.json should start with <pad>, <unk>");
    for word in ["airplanes", "airport", "tennis", "harbor"] {
        run.check(
            words.contains(&word),
            &format!("vocabulary from the example captions should hold {word:?}"),
        );
    }
    run.stdout_has(&format!("{} words", words.len()));

    // Nothing half-written is left behind.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    run.check(names.len() == MODEL_FILES.len(), "the model directory should hold exactly the four files");
}

#[test]
fn init_from_a_config_that_weighs_a_prior_makes_a_loadable_model_without_one() {
    // The shipped model's config weighs its hubness prior; new weights have none.
    let dir = Dir::new();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/config.json");
    let mut config = read_json(&shipped);
    config["scoring"]["hubness_prior"] = serde_json::json!(3.0);
    write_json(&dir.join("c.json"), &config);
    let run = init_args(&dir, dir.join("c.json").to_str().unwrap()).args(["--out", "m"]).succeeds();
    run.stderr_has("hubness_prior 3 set to 0");
    assert_eq!(read_json(&dir.join("m/config.json"))["scoring"]["hubness_prior"], 0.0);
    dir.command().args(["model", "info", "--model"]).arg(dir.join("m")).succeeds();
}

#[test]
fn info_reloads_the_model_and_reports_its_fingerprint() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let info = info_json(&dir, &model);
    let fingerprint = sha256_file(&model.join("model.safetensors"));
    assert_eq!(
        info["fingerprint"],
        fingerprint.as_str(),
        "fingerprint = sha256 of model.safetensors\n{info:#}"
    );
    assert_eq!(
        info["config"],
        read_json(&model.join("config.json")),
        "info --json should report config.json"
    );
    let words = read_json(&model.join("vocab.json"))["words"].as_array().unwrap().len();
    assert_eq!(info["vocabulary_words"], words, "{info:#}");
    assert!(info["trainable_parameters"].as_u64().is_some_and(|n| n > 100_000), "{info:#}");

    let run = dir.command().args(["model", "info", "--device", "cpu", "--model"]).arg(&model).succeeds();
    run.stdout_has(&fingerprint).stdout_has("pvig-nano").stdout_has(&format!("{words} words"));
}

#[test]
fn init_refuses_a_non_empty_out_without_force() {
    let dir = Dir::new();
    let out = dir.write("m/notes.txt", "keep me");
    let out = out.parent().unwrap();
    let run = init_args(&dir, "pvig-nano").arg("--out").arg(out).fails();
    run.error_has(&out.display().to_string()).error_has("--force");
    run.check(!out.join("model.safetensors").exists(), "a refused init must not write a model");
    run.check(
        std::fs::read_to_string(out.join("notes.txt")).unwrap() == "keep me",
        "existing files are kept",
    );

    // --force replaces a model directory as a whole, so it refuses one with other files.
    let run = init_args(&dir, "pvig-nano").arg("--out").arg(out).arg("--force").fails();
    run.error_has("notes.txt").error_has("as a whole");
    run.check(!out.join("model.safetensors").exists(), "a refused init must not write a model");
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    init_args(&dir, "pvig-nano").arg("--out").arg(out).succeeds();
    let first = sha256_file(&out.join("model.safetensors"));
    init_args(&dir, "pvig-nano").args(["--seed", "9", "--out"]).arg(out).arg("--force").succeeds();
    assert_ne!(sha256_file(&out.join("model.safetensors")), first, "--force replaces the weights");
    info_json(&dir, out);
    // An existing empty directory needs no --force.
    std::fs::create_dir(dir.join("empty")).unwrap();
    init_args(&dir, "pvig-nano").args(["--out", "empty"]).succeeds();
    assert!(dir.join("empty/model.safetensors").is_file());
}

#[test]
fn init_with_an_unknown_preset_names_it() {
    let dir = Dir::new();
    let run = init_args(&dir, "pvig-huge").args(["--out", "m"]).fails();
    run.error_has("pvig-huge").error_has("pvig-nano");
    run.check(!dir.join("m").exists(), "a failed init must not create the output directory");
}

#[test]
fn init_names_a_missing_vocabulary_dataset() {
    let dir = Dir::new();
    let run = dir.command().args(["model", "init", "--vocab-from", "no-such.json", "--out", "m"]).fails();
    run.error_has("no-such.json");
    run.check(!dir.join("m").exists(), "a failed init must not create the output directory");
}

#[test]
fn init_accepts_a_custom_config_file() {
    let dir = Dir::new();
    let reference = dir.init_model("reference");
    let mut config = read_json(&reference.join("config.json"));
    assert_eq!(config["scoring"]["correction"], "logits", "pvig-nano's default correction");
    config["scoring"]["correction"] = "off".into();
    let custom = dir.join("custom.json");
    write_json(&custom, &config);

    init_args(&dir, custom.to_str().unwrap()).args(["--out", "m"]).succeeds();
    let info = info_json(&dir, &dir.join("m"));
    assert_eq!(info["config"]["scoring"]["correction"], "off", "{info:#}");
    assert_eq!(info["config"], config, "the model should carry the custom config unchanged");
}

#[test]
fn info_refuses_a_config_with_a_bad_value_naming_the_field() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let path = model.join("config.json");
    let mut config = read_json(&path);
    config["scoring"]["correction"] = "sideways".into();
    write_json(&path, &config);
    dir.command()
        .args(["model", "info", "--device", "cpu", "--model"])
        .arg(&model)
        .fails()
        .error_has("/scoring/correction")
        .error_has("sideways")
        .error_has("config.json");
}

#[test]
fn out_of_range_config_values_are_refused_naming_the_field() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let path = model.join("config.json");
    let good = read_json(&path);
    for (block, field, value, shown) in [
        ("image", "test_time_views", serde_json::json!(3), "3"),
        ("loss", "temperature", serde_json::json!(0), "0"),
        ("scoring", "global_weight", serde_json::json!(-1), "-1"),
        ("training", "weight_decay", serde_json::json!(-0.5), "-0.5"),
        ("training", "augment", serde_json::json!({"crop_min": 0}), "/training/augment/crop_min"),
        ("training", "augment", serde_json::json!({"color_jitter": 2}), "/training/augment/color_jitter"),
    ] {
        let mut config = good.clone();
        config[block][field] = value;
        write_json(&path, &config);
        dir.command()
            .args(["model", "info", "--device", "cpu", "--model"])
            .arg(&model)
            .fails()
            .error_has(&format!("/{block}/{field}"))
            .error_has(shown);
    }
    // A valid count is taken, and eval's --views accepts only the counts there are.
    let mut config = good.clone();
    config["image"]["test_time_views"] = 2.into();
    write_json(&path, &config);
    dir.command().args(["model", "info", "--device", "cpu", "--model"]).arg(&model).succeeds();
    let run = dir
        .command()
        .args(["eval", "--views", "3", "--dataset", "d.json", "--model"])
        .arg(&model)
        .usage_error();
    run.check(run.stderr.contains("1, 2, 4 or 8 views"), "the usage error names the counts there are");
}

#[test]
fn info_refuses_a_vocabulary_of_another_size_naming_the_tensor() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let path = model.join("vocab.json");
    let mut vocab = read_json(&path);
    let words = vocab["words"].as_array_mut().unwrap();
    words.truncate(words.len() - 3);
    let remaining = words.len();
    write_json(&path, &vocab);
    dir.command()
        .args(["model", "info", "--device", "cpu", "--model"])
        .arg(&model)
        .fails()
        .error_has("text.embed.weight")
        .error_has(&format!("{remaining} words"));
}

#[test]
fn info_names_a_missing_weights_file() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    dir.command()
        .args(["model", "info", "--device", "cpu", "--model"])
        .arg(&model)
        .fails()
        .error_has("model.safetensors is missing")
        .error_has(&model.display().to_string());
}

/// Bug: `serialize_weights` in `src/model/model_dir.rs` passes the safetensors metadata as a
/// `HashMap`, whose random iteration order reorders the header, so the same weights get a
/// different fingerprint on each run.
#[test]
fn init_with_the_same_seed_gives_the_same_fingerprint() {
    let dir = Dir::new();
    let fingerprints: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|out| {
            init_args(&dir, "pvig-nano").args(["--seed", "7", "--out", out]).succeeds();
            sha256_file(&dir.join(out).join("model.safetensors"))
        })
        .collect();
    assert!(
        fingerprints.iter().all(|f| *f == fingerprints[0]),
        "same seed, different files: {fingerprints:?}"
    );
    init_args(&dir, "pvig-nano").args(["--seed", "8", "--out", "d"]).succeeds();
    assert_ne!(sha256_file(&dir.join("d/model.safetensors")), fingerprints[0], "another seed, same weights");
}

/// Bug: `AcfError::Io` prints its `source` in its message and also returns it from
/// `source()`, and `cli::one_line` joins the whole chain, so the OS error appears twice:
/// `no-such.json: cannot read dataset: No such file or directory (os error 2): No such file or directory (os error 2)`.
#[test]
fn error_messages_do_not_repeat_the_cause() {
    let dir = Dir::new();
    let run = dir.command().args(["model", "init", "--vocab-from", "no-such.json", "--out", "m"]).fails();
    let line = run.error_line();
    let os = "No such file or directory";
    run.check(line.matches(os).count() == 1, "the OS error should appear once");
}

#[test]
fn eval_sample_spreads_the_subset_over_the_split_and_refuses_nonsense() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    // The examples list 10 test images class by class; 4 spread over them are images
    // 0, 2, 5, 7 (airplane91, baseballdiamond91, forest91, harbor92), where --max-images 4
    // would take two airplanes and two baseball diamonds.
    let run = dir
        .command()
        .args(["eval", "--json", "--device", "cpu", "--sample", "4", "--figure", "page.html", "--dataset"])
        .arg(examples_json())
        .arg("--model")
        .arg(&model)
        .succeeds();
    let result = parse_json(&run.stdout);
    assert_eq!((result["images"].as_u64(), result["captions"].as_u64()), (Some(4), Some(20)), "{result}");
    let page = std::fs::read_to_string(dir.join("page.html")).unwrap();
    for name in ["airplane91", "baseballdiamond91", "forest91", "harbor92"] {
        assert!(page.contains(name), "{name} is not on the page");
    }
    for name in ["airplane92", "baseballdiamond92", "beach91", "tenniscourt91"] {
        assert!(!page.contains(name), "{name} should not be in the sample");
    }
    for bad in [&["--sample", "0"][..], &["--sample", "4", "--max-images", "4"][..]] {
        dir.command().args(["eval", "--dataset", "d.json"]).args(bad).usage_error();
    }
}

#[test]
fn calibrate_writes_a_prior_that_eval_uses_and_other_weights_refuse() {
    let dir = Dir::new();
    let model = dir.init_model("m");
    let fingerprint = info_json(&dir, &model)["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(info_json(&dir, &model)["prior_captions"], Value::Null);
    let eval = |model: &Path| {
        let mut cmd = dir.command();
        cmd.args([
            "eval",
            "--json",
            "--device",
            "cpu",
            "--split",
            "test",
            "--sweep",
            "hubness_prior=1",
            "--dataset",
        ])
        .arg(examples_json())
        .arg("--model")
        .arg(model);
        cmd
    };
    // Weighing a prior the model does not have is refused, naming the file and the fix.
    let run = eval(&model).fails();
    let line = run.error_line();
    assert!(line.contains("prior.safetensors") && line.contains("calibrate"), "{line}");

    let run = dir
        .command()
        .args(["model", "calibrate", "--device", "cpu", "--split", "test", "--dataset"])
        .arg(examples_json())
        .arg("--model")
        .arg(&model)
        .succeeds();
    assert!(run.stdout.contains("mean of 50 'test' captions"), "{}", run.stdout);
    assert!(model.join("prior.safetensors").is_file());
    // The weights, and so every index's record of them, are unchanged.
    let info = info_json(&dir, &model);
    assert_eq!(info["fingerprint"].as_str(), Some(fingerprint.as_str()));
    assert_eq!(info["prior_captions"].as_u64(), Some(50));

    // The prior is a constant per image: it may reorder images for a caption, never the
    // captions for an image, so sentence retrieval is the same with and without it.
    let result = parse_json(&eval(&model).succeeds().stdout);
    let rows = result["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{result}");
    assert_eq!(rows[0]["recall"]["i2t"], rows[1]["recall"]["i2t"], "{result}");

    // A prior computed with other weights is refused, wherever the model is loaded.
    let other = dir.join("other");
    init_args(&dir, "pvig-nano").args(["--seed", "7", "--out"]).arg(&other).succeeds();
    let mut config = read_json(&other.join("config.json"));
    config["scoring"]["hubness_prior"] = serde_json::json!(1.0);
    write_json(&other.join("config.json"), &config);
    let missing = dir.command().args(["model", "info", "--model"]).arg(&other).fails();
    assert!(missing.error_line().contains("hubness_prior is 1"), "{missing}");
    std::fs::copy(model.join("prior.safetensors"), other.join("prior.safetensors")).unwrap();
    let run = dir.command().args(["model", "info", "--model"]).arg(&other).fails();
    let line = run.error_line();
    assert!(line.contains("prior.safetensors") && line.contains("computed with weights"), "{line}");
    // Calibrating the model again mends it.
    dir.command()
        .args(["model", "calibrate", "--split", "test", "--dataset"])
        .arg(examples_json())
        .arg("--model")
        .arg(&other)
        .succeeds();
    let info = dir.command().args(["model", "info", "--model"]).arg(&other).succeeds();
    assert!(
        info.stdout.contains("hubness prior 1 (t̄ of 50 captions, bank of 50, sharpness 0)"),
        "{}",
        info.stdout
    );

    // The bank form (hubness_sharpness > 0) needs a prior written with a bank, and says so:
    // a prior without one, whose config is then set to the bank form, is refused on load...
    let calibrate = |bank: &str| {
        let mut cmd = dir.command();
        cmd.args(["model", "calibrate", "--split", "test", "--bank", bank, "--dataset"])
            .arg(examples_json())
            .arg("--model")
            .arg(&other);
        cmd
    };
    assert!(calibrate("0").succeeds().stdout.contains("bank of 0"));
    config["scoring"]["hubness_sharpness"] = serde_json::json!(10.0);
    write_json(&other.join("config.json"), &config);
    let run = dir.command().args(["model", "info", "--model"]).arg(&other).fails();
    let line = run.error_line();
    assert!(line.contains("hubness_sharpness is 10") && line.contains("--bank"), "{line}");
    // ...and calibrate will not write one for such a config.
    let run = calibrate("0").fails();
    let line = run.error_line();
    assert!(line.contains("--bank 0") && line.contains("hubness_sharpness 10"), "{line}");
    assert!(calibrate("20").succeeds().stdout.contains("bank of 20"));
    let info = info_json(&dir, &other);
    assert_eq!(info["prior_bank"].as_u64(), Some(20), "{info}");
}

#[test]
fn a_second_trainer_into_the_same_out_is_refused_while_the_first_runs() {
    use std::time::{Duration, Instant};

    let dir = Dir::new();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ucm-mini/dataset.json");
    let out = dir.join("run");
    let train = |extra: &[&str]| {
        let mut cmd = dir.command();
        cmd.args(["train", "--quiet", "--epochs", "50", "--dataset"]).arg(&data).arg("--out").arg(&out);
        cmd.args(extra);
        cmd
    };
    let mut first = train(&[]).spawn_quiet();
    // The running trainer writes its pid into the lock file once it holds it.
    let pid = first.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(out.join(".lock")).map_or(true, |s| s.trim() != pid) {
        assert!(first.try_wait().unwrap().is_none(), "the first trainer stopped early");
        assert!(Instant::now() < deadline, "the first trainer never took its lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    for extra in [&[][..], &["--resume"][..]] {
        train(extra).fails().error_has("another acf-index train is writing this folder").error_has(&pid);
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // The kernel released the killed run's lock: the next command gets past it.
    let after = train(&["--resume", "--stop-after", "1"]).run();
    after.check(!after.stderr.contains("another acf-index train"), "a dead trainer's lock must not block");
}

#[test]
fn average_writes_the_mean_of_its_sources_as_a_usable_model() {
    let dir = Dir::new();
    let (a, b) = two_models(&dir);

    let run = dir.command().args(["model", "average", "--out", "avg"]).arg(&a).arg(&b).succeeds();
    let avg = dir.join("avg");
    for file in MODEL_FILES {
        run.check(avg.join(file).is_file(), &format!("{file} should be created"));
    }
    let fingerprint = sha256_file(&avg.join("model.safetensors"));
    run.stdout_has("averaged 2 models").stdout_has(&fingerprint[..12]);
    let card = std::fs::read_to_string(avg.join("MODEL_CARD.md")).unwrap();
    for source in [&a, &b] {
        let source_fp = sha256_file(&source.join("model.safetensors"));
        run.check(card.contains(&source_fp[..12]), "the card should name every source's fingerprint");
        run.check(fingerprint != source_fp, "the mean of two different models is neither");
    }
    run.check(card.contains(&fingerprint), "the card should give the new fingerprint");
    // A model like any other: it loads, and keeps the first source's config.
    let info = info_json(&dir, &avg);
    assert_eq!(info["config"], read_json(&a.join("config.json")), "{info:#}");

    // The mean of a model with itself is that model, to the bit.
    dir.command().args(["model", "average", "--out", "self"]).arg(&a).arg(&a).succeeds();
    assert_eq!(sha256_file(&dir.join("self/model.safetensors")), sha256_file(&a.join("model.safetensors")));
}

#[test]
fn average_refuses_what_cannot_be_averaged() {
    let dir = Dir::new();
    let a = dir.init_model("a");
    let b = dir.init_model("b");
    // Another vocabulary: tensors of the same shape would mean other words.
    let mut vocab = read_json(&b.join("vocab.json"));
    let words = vocab["words"].as_array_mut().unwrap();
    let last = words.len() - 1;
    words[last] = "zzzunseen".into();
    write_json(&b.join("vocab.json"), &vocab);
    let run = dir.command().args(["model", "average", "--out", "avg"]).arg(&a).arg(&b).fails();
    run.error_has(&b.display().to_string()).error_has("vocab.json");
    run.check(!dir.join("avg").exists(), "a refused average must not create the output directory");

    // One model is not an average; the output may not overwrite a source or a non-empty folder.
    dir.command()
        .args(["model", "average", "--out", "avg"])
        .arg(&a)
        .usage_error()
        .stderr_has("2 values required");
    let run =
        dir.command().args(["model", "average", "--out"]).arg(&a).arg(&a).arg(&a).arg("--force").fails();
    run.error_has("one of the models being averaged");
    let run = dir.command().args(["model", "average", "--out"]).arg(&b).arg(&a).arg(&a).fails();
    run.error_has("--force");
    let run = dir.command().args(["model", "average", "--out", "avg"]).arg(&a).arg("no-such-model").fails();
    run.error_has("no-such-model");
}

#[test]
fn a_model_directory_appears_whole_or_not_at_all() {
    let dir = Dir::new();
    let (a, b) = two_models(&dir);
    let listing = |d: &Dir| names_in(d.path());
    // Killed just before the finished directory is renamed into place (a crash point: debug
    // builds, which `scripts/test.sh` and CI run): the old model is untouched, and the next
    // run removes the dead process's hidden temporary.
    if cfg!(debug_assertions) {
        let before = sha256_file(&a.join("model.safetensors"));
        let run = dir
            .command()
            .env("ACF_CRASH_AT", "publish-dir:before-rename")
            .args(["model", "average", "--force", "--out"])
            .arg(&a)
            .arg(&b)
            .arg(&b)
            .expect_code(crate::cli_faults::CRASH_EXIT);
        run.stderr_has("crash point publish-dir:before-rename");
        assert_eq!(sha256_file(&a.join("model.safetensors")), before, "the old model is untouched");
        info_json(&dir, &a);
        let again =
            dir.command().args(["model", "average", "--force", "--out"]).arg(&a).arg(&b).arg(&b).succeeds();
        again.check(listing(&dir) == ["a", "b"], &format!("leftovers: {:?}", listing(&dir)));
        assert_eq!(sha256_file(&a.join("model.safetensors")), sha256_file(&b.join("model.safetensors")));
    }
    // Every run leaves the four files and nothing beside them.
    dir.command().args(["model", "average", "--force", "--out", "avg"]).arg(&a).arg(&b).succeeds();
    assert!(listing(&dir).iter().all(|n| !n.starts_with('.')), "{:?}", listing(&dir));
    let files: Vec<String> = names_in(&dir.join("avg")).into_iter().filter(|n| !n.starts_with('.')).collect();
    let mut want: Vec<String> = MODEL_FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(files, want);
}

#[test]
fn train_records_mask_same_class_and_warns_when_no_image_has_a_class() {
    let dir = Dir::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ucm-mini");
    let model = dir.init_model("m");
    let mut config = read_json(&model.join("config.json"));
    config["loss"]["mask_same_class"] = Value::Bool(true);
    let config_path = dir.join("masked.json");
    write_json(&config_path, &config);
    // The fixture names each image's class; a copy without them cannot use the mask.
    let mut unclassed = read_json(&fixture.join("dataset.json"));
    for image in unclassed["images"].as_array_mut().unwrap() {
        image.as_object_mut().unwrap().remove("class");
    }
    write_json(&dir.join("unclassed.json"), &unclassed);
    // `train` with the config as written now, on `dataset` in batches of `batch`.
    let train = |dataset: &Path, out: &str, batch: &str| {
        let mut cmd = dir.command();
        cmd.args(["train", "--epochs", "1", "--batch-size", batch, "--val-images", "4", "--config"])
            .arg(&config_path)
            .arg("--dataset")
            .arg(dataset)
            .arg("--images")
            .arg(fixture.join("images"))
            .args(["--out", out]);
        cmd
    };
    let classes = fixture.join("dataset.json");
    let classed = train(&classes, "classed", "8").succeeds();
    classed.check(!classed.stderr.contains("mask_same_class"), "classes present: no warning");
    assert_eq!(read_json(&dir.join("classed/config.json"))["loss"]["mask_same_class"], Value::Bool(true));
    train(&dir.join("unclassed.json"), "unclassed", "8")
        .succeeds()
        .stderr_has("loss.mask_same_class is on but no training image");
    // A list names datasets; a name that is not being trained on is refused before any work.
    config["loss"]["mask_same_class"] = serde_json::json!(["ucm-mini", "ucm-captoins"]);
    write_json(&config_path, &config);
    train(&classes, "typo", "8")
        .fails()
        .error_has("loss.mask_same_class names dataset 'ucm-captoins'")
        .error_has("(ucm-mini)");
    // The class-placement term trains on the classes the mask keeps: one batch of all 40
    // training images (5 of each class) costs more with it than without, from the same start.
    config["loss"]["mask_same_class"] = serde_json::json!(["ucm-mini"]);
    config["loss"]["negatives"] = Value::from("softmax");
    let mut first_loss = |pull: f64, out: &str| {
        config["loss"]["class_pull"] = Value::from(pull);
        write_json(&config_path, &config);
        train(&classes, out, "40").succeeds();
        let metrics = std::fs::read_to_string(dir.join(out).join("metrics.jsonl")).unwrap();
        let first = metrics
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["kind"] == "batch")
            .unwrap();
        first["loss"].as_f64().unwrap()
    };
    let plain = first_loss(0.0, "plain");
    let pulled = first_loss(1.0, "pulled");
    assert!(plain.is_finite() && pulled.is_finite() && pulled > plain + 1.0, "{pulled} vs {plain}");
    assert_eq!(read_json(&dir.join("pulled/config.json"))["loss"]["class_pull"], Value::from(1.0));
    // Without the mask there are no classes to pull: refused, naming the field.
    config["loss"]["mask_same_class"] = Value::Bool(false);
    write_json(&config_path, &config);
    train(&classes, "unmasked", "8").fails().error_has("loss.class_pull");
}
