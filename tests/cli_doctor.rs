//! `acf-index doctor`: the facts people paste into bug reports and check after set-up.

use crate::util::{Dir, parse_json};

/// The value after a `label` at the start of a line of the text report.
fn field<'a>(report: &'a str, label: &str) -> Option<&'a str> {
    report.lines().find_map(|l| l.strip_prefix(label)).map(str::trim)
}

fn looks_like_version(v: &str) -> bool {
    let mut parts = v.split(['.', '+', '-']);
    let numeric = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next())
}

#[test]
fn doctor_reports_libtorch_cuda_threads_and_gdal() {
    let dir = Dir::new();
    let run = dir.command().arg("doctor").succeeds();
    let report = &run.stdout;

    let libtorch = field(report, "libtorch ").unwrap_or_else(|| run.fail("no `libtorch` line"));
    run.check(looks_like_version(libtorch), "the libtorch line should start with a version like 2.11.0");

    let cuda = field(report, "CUDA linked").unwrap_or_else(|| run.fail("no `CUDA linked` line"));
    run.check(cuda == "yes" || cuda == "no", "`CUDA linked` should be yes or no");

    let threads = field(report, "CPU threads").unwrap_or_else(|| run.fail("no `CPU threads` line"));
    run.check(threads.parse::<u32>().is_ok_and(|n| n >= 1), "`CPU threads` should be a positive number");

    let gdal = field(report, "GDAL").unwrap_or_else(|| run.fail("no `GDAL` line"));
    if cfg!(feature = "gdal") {
        run.check(looks_like_version(gdal), "the GDAL line should give GDAL's version");
        run.stdout_has("driver GTiff");
    } else {
        run.check(gdal.contains("not built in"), "without the gdal feature doctor should say so");
    }
}

#[test]
fn doctor_json_has_the_same_facts_as_the_text_report() {
    let dir = Dir::new();
    let run = dir.command().args(["doctor", "--json"]).succeeds();
    let json = parse_json(&run.stdout);

    let libtorch =
        json["libtorch_version"].as_str().unwrap_or_else(|| run.fail("libtorch_version: no string"));
    run.check(looks_like_version(libtorch), "libtorch_version should be a version");
    let cuda_linked = json["cuda_linked"].as_bool().unwrap_or_else(|| run.fail("cuda_linked: no bool"));
    let threads = json["cpu_threads"].as_u64().unwrap_or_else(|| run.fail("cpu_threads: no integer"));
    run.check(threads >= 1, "cpu_threads should be positive");
    run.check(json["cuda_available"].is_boolean(), "cuda_available: no bool");
    run.check(json["cuda_devices"].is_i64(), "cuda_devices: no integer");
    run.check(json["acf_index_version"] == env!("CARGO_PKG_VERSION"), "acf_index_version");
    if cfg!(feature = "gdal") {
        let gdal = json["gdal"]["version"].as_str().unwrap_or_else(|| run.fail("gdal.version: no string"));
        run.check(looks_like_version(gdal), "gdal.version should be a version");
    } else {
        run.check(json["gdal"].is_null(), "gdal should be null without the gdal feature");
    }

    // The text report tells the same story.
    let text = dir.command().arg("doctor").succeeds();
    text.check(
        field(&text.stdout, "libtorch ").is_some_and(|l| l.starts_with(libtorch)),
        "libtorch version differs",
    );
    let yes = if cuda_linked { "yes" } else { "no" };
    text.check(field(&text.stdout, "CUDA linked") == Some(yes), "CUDA linked differs from --json");
    text.check(field(&text.stdout, "CPU threads") == Some(&threads.to_string()), "CPU threads differs");
}

/// Bug: `src/doctor.rs` formats driver lines with `{name:<10}`, so an 11-character name
/// runs into its state: `driver JP2OpenJPEGyes`.
#[test]
fn doctor_driver_lines_separate_name_and_state() {
    if !cfg!(feature = "gdal") {
        return;
    }
    let dir = Dir::new();
    let run = dir.command().arg("doctor").succeeds();
    for line in run.stdout.lines().filter(|l| l.trim_start().starts_with("driver ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        run.check(
            words.len() == 3 && (words[2] == "yes" || words[2] == "no"),
            &format!("driver line {line:?} should read `driver NAME yes|no`"),
        );
    }
}

/// Bug: every command prints with `println!`, which panics (exit 101, backtrace on stderr)
/// when stdout is a closed pipe, e.g. `acf-index doctor --json | head -1`.
#[test]
fn closed_stdout_pipe_does_not_panic() {
    let dir = Dir::new();
    let run = dir.command().args(["doctor", "--json"]).run_with_closed_stdout();
    run.check(!run.stderr.contains("panicked"), "a closed stdout pipe should not make acf-index panic");
    run.check(run.code != Some(101), "a closed stdout pipe should not exit with the panic code 101");
}
