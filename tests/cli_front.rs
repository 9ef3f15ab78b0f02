//! The front binary `acf-index`: searches run in it without libtorch or GDAL (so a one-shot
//! query starts in milliseconds), every other command is handed to `acf-index-engine`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Dir, parse_json};

const FRONT: &str = env!("CARGO_BIN_EXE_acf-index");
const ENGINE: &str = env!("CARGO_BIN_EXE_acf-index-engine");

/// The shared libraries a binary asks the loader for (`readelf -d` NEEDED entries).
fn needed(binary: &str) -> Vec<String> {
    let out = Command::new("readelf").args(["-d", binary]).output().expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {binary} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).map(|s| s.trim_end_matches(']').to_string()))
        .collect()
}

/// Release builds only: an unoptimised build keeps dead code whose references make the linker
/// keep libtorch. CI runs it with `cargo test --release --test tests cli_front`.
#[test]
#[cfg_attr(debug_assertions, ignore = "debug builds keep dead references to libtorch; run with --release")]
fn the_front_binary_loads_neither_libtorch_nor_gdal() {
    let front = needed(FRONT);
    assert!(!front.is_empty(), "no NEEDED entries parsed from readelf");
    assert!(
        !front.iter().any(|l| l.contains("torch") || l.contains("gdal") || l.contains("c10")),
        "acf-index links {front:?}: queries would pay libtorch's start-up"
    );
    let engine = needed(ENGINE);
    assert!(engine.iter().any(|l| l.contains("torch_cpu")), "the engine links libtorch: {engine:?}");
}

fn index_fixture(dir: &Dir) -> PathBuf {
    let out = dir.join("index");
    dir.command()
        .args(["index", "--device", "cpu", "--out"])
        .arg(&out)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geotiff"))
        .succeeds();
    out
}

#[test]
fn a_lone_front_binary_searches_and_names_the_missing_engine() {
    let dir = Dir::new();
    let index = index_fixture(&dir);
    let args = ["query", "--format", "json", "--top-k", "5", "many buildings and green trees", "--index"];
    let first = dir.command().args(args).arg(&index).succeeds();
    let want: Vec<String> = first.stdout_lines().into_iter().map(String::from).collect();
    assert_eq!(want.len(), 5);
    // The front binary alone in a directory: searching needs nothing beside it.
    let lone = dir.join("bin/acf-index");
    std::fs::create_dir_all(lone.parent().unwrap()).unwrap();
    std::fs::copy(FRONT, &lone).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    let run = |extra: &[&str]| {
        Command::new(&lone)
            .current_dir(dir.path())
            .env_remove("ACF_LOG")
            .args(extra)
            .arg("--model")
            .arg(&model)
            .output()
            .unwrap()
    };
    let out = run(&[&args[..], &[index.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    let score = |l: &String| parse_json(l)["score"].as_f64().unwrap();
    let id = |l: &String| parse_json(l)["chip_id"].as_str().unwrap().to_string();
    assert_eq!(got.iter().map(id).collect::<Vec<_>>(), want.iter().map(id).collect::<Vec<_>>());
    assert!(got.iter().zip(&want).all(|(a, b)| (score(a) - score(b)).abs() < 1e-6));
    // A command that needs the engine says which file is missing, on one line, exit 1.
    let out = run(&["model", "info"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start") && err.contains("acf-index-engine"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn handed_over_commands_keep_the_name_and_the_exit_code() {
    let dir = Dir::new();
    // The whole command line is parsed before it is handed over: usage errors name acf-index.
    let run = dir.command().args(["train", "--no-such-flag"]).usage_error();
    run.check(run.stderr.contains("Usage: acf-index train"), "usage names acf-index");
    // `--version` and help are answered by the front binary itself.
    dir.command().arg("--version").succeeds().stdout_has("acf-index");
    // An engine command's failure keeps its exit code and one-line error.
    let run = dir.command().args(["model", "info", "--model", "no-such-model"]).fails();
    run.check(
        run.stderr.contains("no-such-model") && run.stderr.contains("no such directory"),
        "names the model",
    );
}
