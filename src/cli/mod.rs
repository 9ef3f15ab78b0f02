//! Command-line interface: argument definitions (clap) and dispatch to the library.
//! `main.rs` (`acf-index`) parses [`Cli`] and runs searches itself ([`launch`]);
//! `acf-index-engine` hands any command to [`run`], which returns the exit code.

mod args;
mod commands;
mod index_cmd;
mod interrupt;
pub mod launch;
mod model_arg;
mod query_cmd;
mod train_cmd;

pub use args::{Cli, Command, LogFormat};

/// Exit codes (also listed in the README).
pub mod exit {
    /// Everything succeeded.
    pub const OK: i32 = 0;
    /// The command failed (message on stderr).
    pub const FAILED: i32 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: i32 = 2;
    /// `index`: some scenes failed (each reported), the others were indexed.
    pub const SOME_FAILED: i32 = 3;
    /// Stopped by Ctrl-C / SIGTERM (nothing partial was published).
    pub const INTERRUPTED: i32 = 130;
}

/// Options that make no sense together, found after parsing: exit 2 like clap's own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    init_logging(cli.log_format, cli.verbose, cli.quiet);
    finish(commands::dispatch(cli.command))
}

/// Reports a command's error on stderr; returns the exit code.
fn finish(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<UsageError>().is_some() => {
            say_error(&format!("{err}"), "For more information, try '--help'.");
            exit::USAGE
        }
        Err(err) => {
            tracing::debug!("{err:?}");
            say_error(&one_line(&err), "");
            exit::FAILED
        }
    }
}

/// `context: cause: cause` on one line, skipping causes whose text is already there.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain().map(|e| e.to_string()) {
        if line.contains(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

/// Whether stderr carries JSON lines (`--log-format json`): then every line is one object.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A message for the person (or cron log) watching stderr: plain text, or with
/// `--log-format json` a JSON object like every other stderr line.
pub fn say(message: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{}", serde_json::json!({"level": "WARN", "fields": {"message": message}}));
    } else {
        eprintln!("{message}");
    }
}

/// The final `error:` line (and a hint for people, left out of JSON).
fn say_error(message: &str, hint: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{}", serde_json::json!({"level": "ERROR", "fields": {"message": message}}));
    } else if hint.is_empty() {
        eprintln!("error: {message}");
    } else {
        eprintln!("error: {message}\n\n{hint}");
    }
}

/// Parses the command line; a usage error is printed by clap, or as one JSON line when the
/// arguments ask for `--log-format json`.
pub fn parse() -> Cli {
    use clap::Parser;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let args: Vec<String> = std::env::args().collect();
            let json = args.windows(2).any(|w| w[0] == "--log-format" && w[1] == "json")
                || args.iter().any(|a| a == "--log-format=json");
            if json && e.use_stderr() {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
                eprintln!("{}", serde_json::json!({"level": "ERROR", "fields": {"message": first}}));
                std::process::exit(exit::USAGE);
            }
            e.exit()
        }
    }
}

fn init_logging(format: LogFormat, verbose: u8, quiet: bool) {
    JSON_LOGS.store(matches!(format, LogFormat::Json), std::sync::atomic::Ordering::Relaxed);
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("ACF_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.without_time().with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
