//! Help, version and exit codes: what scripts and people rely on before any command runs.

use crate::util::{Dir, EXIT_OK};

/// Subcommand names listed in the `Commands:` section of a `--help` page (without `help`).
fn listed_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // Entries are indented by two spaces; wrapped descriptions by more.
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

#[test]
fn help_lists_the_subcommands_and_every_help_page_works() {
    let dir = Dir::new();
    // Walk the command tree through the help pages themselves, so new commands are covered.
    let mut pending: Vec<Vec<String>> = vec![vec![]];
    let mut visited: Vec<String> = Vec::new();
    while let Some(path) = pending.pop() {
        let run = dir.command().args(&path).arg("--help").run();
        let name = path.join(" ");
        run.check(run.code == Some(EXIT_OK), &format!("`acf-index {name} --help` should exit 0"));
        run.check(run.stderr.is_empty(), "--help should print nothing on stderr");
        let usage =
            if name.is_empty() { "Usage: acf-index".to_string() } else { format!("Usage: acf-index {name}") };
        run.stdout_has(&usage).stdout_has("-h, --help");
        if path.is_empty() {
            run.stdout_has("--log-format").stdout_has("--quiet").stdout_has("--verbose");
        }
        for sub in listed_subcommands(&run.stdout) {
            let mut child = path.clone();
            child.push(sub);
            pending.push(child);
        }
        visited.push(name);
    }
    for expected in ["doctor", "model", "model init", "model info", "rank", "bench", "bench model"] {
        assert!(visited.iter().any(|v| v == expected), "no help page for `{expected}`; visited {visited:?}");
    }
}

#[test]
fn version_flag_prints_the_package_version() {
    let dir = Dir::new();
    let version = env!("CARGO_PKG_VERSION");
    let run = dir.command().arg("--version").succeeds();
    run.check(run.stdout.trim() == format!("acf-index {version}"), "expected `acf-index VERSION`");
}

#[test]
fn bad_command_lines_exit_2_naming_the_problem() {
    let dir = Dir::new();
    let cases: &[(&[&str], &str)] = &[
        (&[], "Usage:"),
        (&["--no-such-flag"], "--no-such-flag"),
        (&["frobnicate"], "frobnicate"),
        (&["rank", "x.jpg"], "--text"),
        (&["rank", "--device", "tpu", "--text", "airport", "x.jpg"], "tpu"),
        (&["model", "init", "--vocab-from", "d.json", "--out", "m", "--seed", "many"], "many"),
    ];
    for (args, needle) in cases {
        dir.command().args(*args).usage_error().stderr_has(needle);
    }
    assert!(!dir.join("m").exists(), "a usage error must not create anything");
}

#[test]
fn failures_exit_1_with_one_error_line() {
    let dir = Dir::new();
    dir.command()
        .args(["model", "info", "--device", "cpu", "--model", "no-such-model"])
        .fails()
        .error_has("no-such-model");
}

#[test]
fn json_logs_are_one_object_per_stderr_line_even_for_errors() {
    let dir = Dir::new();
    let out = dir.join("idx");
    // A run with warnings, a failed scene and the summary; then a usage error and a failure.
    let bad = dir.write("bad.tif", b"not a raster");
    let runs = [
        dir.command()
            .args(["--log-format", "json", "index", "--device", "cpu", "--out"])
            .arg(&out)
            .arg(crate::util::geotiff("naip-4band-150x200.tif"))
            .arg(&bad)
            .run(),
        dir.command().args(["--log-format", "json", "query", "--top-k", "0", "--index", "x", "q"]).run(),
        dir.command().args(["--log-format", "json", "info"]).arg(dir.join("nope")).run(),
    ];
    for run in &runs {
        assert!(!run.stderr.trim().is_empty(), "{run}");
        for line in run.stderr.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{run}"));
            assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
        }
    }
    assert_eq!(runs[1].code, Some(2), "usage error: {}", runs[1]);
    assert_eq!(runs[2].code, Some(1), "{}", runs[2]);
}

#[test]
fn completions_and_a_man_page_are_generated() {
    let dir = Dir::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = dir.command().args(["completions", shell]).succeeds();
        assert!(run.stdout.contains("acf-index") && run.stdout.contains("query"), "{shell}");
    }
    let man = dir.command().arg("man").succeeds();
    assert!(man.stdout.starts_with(".ie") || man.stdout.contains(".TH"), "roff output");
    assert!(man.stdout.contains("acf-index") && man.stdout.contains("index"), "names the commands");
}
