//! Helpers shared by the CLI tests: a temporary working directory, a wrapper around the
//! built `acf-index` binary whose failures show everything needed to debug them (command
//! line, exit status, stdout, stderr and the temporary folder's listing), and a few
//! fixtures (the bundled example data, a freshly initialised model).

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_acf-index");

/// Exit codes promised by the README.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// `examples/images.json` (10 UCM images with 5 captions each).
pub fn examples_json() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images.json")
}

/// The 10 bundled example images, sorted by name.
pub fn example_images() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images");
    let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("jpg")))
        .collect();
    images.sort();
    assert_eq!(images.len(), 10, "expected 10 example images in {}", dir.display());
    images
}

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a string as JSON, panicking with the text when it is not.
pub fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not valid JSON ({e}):\n{text}"))
}

/// A temporary directory that is also the working directory of every command run from it,
/// so that relative paths (and the default `models/default`) resolve inside it.
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        let tmp =
            tempfile::Builder::new().prefix("acf-index-test-").tempdir().expect("cannot create temp dir");
        Dir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes `contents` to `rel` (creating parent folders) and returns its path.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// A command for the binary, run in this directory with an environment that does not
    /// leak the developer's settings (`ACF_MODEL`, `ACF_LOG`) and without colours.
    ///
    /// libtorch runs single-threaded (`OMP_NUM_THREADS=1`): the test harness already runs
    /// tests in parallel, and OpenMP workers spinning on an oversubscribed CPU make the
    /// suite several times slower.
    pub fn command(&self) -> TestCommand<'_> {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.path())
            .env_remove("ACF_MODEL")
            .env_remove("ACF_LOG")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("OMP_NUM_THREADS", "1")
            .stdin(Stdio::null());
        TestCommand { dir: self, cmd }
    }

    /// `find`-like listing of the directory with file sizes, for failure messages.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for entry in walkdir::WalkDir::new(self.path()).sort_by_file_name() {
            match entry {
                Ok(e) => {
                    let rel = e.path().strip_prefix(self.path()).unwrap_or(e.path());
                    let size = if e.file_type().is_file() {
                        e.metadata().map(|m| format!("  ({} bytes)", m.len())).unwrap_or_default()
                    } else {
                        "/".to_string()
                    };
                    out.push_str(&format!("  ./{}{size}\n", rel.display()));
                }
                Err(err) => out.push_str(&format!("  (error: {err})\n")),
            }
        }
        out
    }

    /// Creates a fresh, untrained pvig-nano model from the example captions in `rel`.
    pub fn init_model(&self, rel: &str) -> PathBuf {
        let out = self.join(rel);
        self.command()
            .args(["model", "init", "--config", "pvig-nano", "--vocab-from"])
            .arg(examples_json())
            .arg("--out")
            .arg(&out)
            .succeeds();
        out
    }
}

/// The binary with its arguments; running it yields a [`Run`].
pub struct TestCommand<'a> {
    dir: &'a Dir,
    cmd: Command,
}

impl TestCommand<'_> {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(&mut self, key: &str) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    /// Runs to completion, whatever the exit status.
    pub fn run(&mut self) -> Run {
        let output = self.cmd.output().unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        Run {
            command: self.describe(),
            code: output.status.code(),
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            listing: self.dir.listing(),
        }
    }

    /// Runs with stdout connected to a pipe whose reading end is closed before the
    /// program writes anything (like `acf-index … | head -0`). Returns the exit code and stderr.
    pub fn run_with_closed_stdout(&mut self) -> Run {
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        drop(child.stdout.take());
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let status = child.wait().unwrap();
        Run {
            command: self.describe() + " | (closed)",
            code: status.code(),
            status: status.to_string(),
            stdout: String::new(),
            stderr,
            listing: self.dir.listing(),
        }
    }

    /// Starts the command in the background with stdout and stderr discarded, for tests
    /// that act on a run in progress (kill it, race it).
    pub fn spawn_quiet(&mut self) -> std::process::Child {
        self.cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
    }

    /// Runs and requires exit code `code`.
    pub fn expect_code(&mut self, code: i32) -> Run {
        let run = self.run();
        if run.code != Some(code) {
            run.fail(&format!("expected exit code {code}"));
        }
        run
    }

    /// Runs and requires success (exit 0).
    pub fn succeeds(&mut self) -> Run {
        self.expect_code(EXIT_OK)
    }

    /// Runs and requires a command failure: exit 1, nothing on stdout and exactly one
    /// `error:` line, the last line on stderr (see [`Run::error_has`]).
    pub fn fails(&mut self) -> Run {
        let run = self.expect_code(EXIT_FAILED);
        run.check(run.stdout.is_empty(), "a failed command should print nothing on stdout");
        run.error_line();
        run
    }

    /// Runs and requires a usage error: exit 2, an explanation on stderr, nothing on stdout.
    pub fn usage_error(&mut self) -> Run {
        let run = self.expect_code(EXIT_USAGE);
        let explained = run.stderr.starts_with("error:") || run.stderr.contains("Usage: acf-index");
        run.check(explained, "a usage error should be explained on stderr");
        run.check(run.stdout.is_empty(), "a usage error should print nothing on stdout");
        run
    }

    fn describe(&self) -> String {
        let args: Vec<String> = self.cmd.get_args().map(|a| format!("'{}'", a.to_string_lossy())).collect();
        format!("acf-index {}", args.join(" "))
    }
}

/// What one run of the binary did.
pub struct Run {
    pub command: String,
    pub code: Option<i32>,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    listing: String,
}

impl Run {
    /// Panics with `why` and everything the run produced.
    #[track_caller]
    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}\n{self}");
    }

    /// Panics (with the full report) unless `ok`.
    #[track_caller]
    pub fn check(&self, ok: bool, why: &str) {
        if !ok {
            self.fail(why);
        }
    }

    /// Requires `needle` in stdout.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        self.check(self.stdout.contains(needle), &format!("stdout should contain {needle:?}"));
        self
    }

    /// Requires `needle` in stderr.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        self.check(self.stderr.contains(needle), &format!("stderr should contain {needle:?}"));
        self
    }

    /// Requires `needle` in the single `error:` line.
    #[track_caller]
    pub fn error_has(&self, needle: &str) -> &Self {
        let line = self.error_line();
        self.check(line.contains(needle), &format!("the error line should contain {needle:?}"));
        self
    }

    /// Non-empty stdout lines.
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    /// The single `error: …` line, which must be the last line on stderr.
    #[track_caller]
    pub fn error_line(&self) -> &str {
        let errors: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("error:")).collect();
        self.check(errors.len() == 1, "expected exactly one `error:` line on stderr");
        self.check(
            self.stderr.trim_end().lines().last() == Some(errors[0]),
            "the `error:` line should be the last line on stderr",
        );
        errors[0]
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- command: {}", self.command)?;
        writeln!(f, "--- status: {}", self.status)?;
        writeln!(f, "--- stdout:\n{}", self.stdout)?;
        writeln!(f, "--- stderr:\n{}", self.stderr)?;
        write!(f, "--- temp dir:\n{}", self.listing)
    }
}

/// How far the first values of a chip's `global` may move when the same chip is encoded
/// in another batch (a rerun after a kill batches the remaining chips differently): CPU
/// kernels at one thread, as the tests run them, round differently for other batch
/// compositions. Measured on the test scenes: up to 5e-4 per value (1 − cos ≈ 2e-6),
/// while two different chips' first eight values differ by 6.8e-3 or more
/// (docs/round19/README.md, "The flaky killed-run test").
pub const SAME_CHIP_TOLERANCE: f64 = 2e-3;

/// The test GeoTIFF scenes (`tests/fixtures/geotiff`, see its README).
pub fn geotiff(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geotiff").join(name)
}

/// The python of the project's venv (pyarrow, shapely, geopandas: installed by scripts/setup.sh).
pub fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// Reads an index with pyarrow + shapely (`tests/read_index.py`): `{"files": […], "rows": […]}`.
pub fn read_index_externally(index: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_index.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(index)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup.sh): {e}", python().display()));
    assert!(out.status.success(), "read_index.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    parse_json(&String::from_utf8_lossy(&out.stdout))
}
