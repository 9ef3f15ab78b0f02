//! Command-line interface: argument definitions (clap) and dispatch to the library.
//! `main.rs` parses [`Cli`] and hands it to [`run`], which returns the exit code.

mod args;
mod commands;
mod index_cmd;
mod interrupt;
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
    match commands::dispatch(cli.command) {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {err}\n\nFor more information, try '--help'.");
            exit::USAGE
        }
        Err(err) => {
            tracing::debug!("{err:?}");
            eprintln!("error: {}", one_line(&err));
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

fn init_logging(format: LogFormat, verbose: u8, quiet: bool) {
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
