//! The `acf-index` front binary: searches (`query`, `embed`, `rerank`) run here, in plain
//! Rust without libtorch, so a one-shot query starts in milliseconds; every other command is
//! handed to `acf-index-engine` (the same command line, through `exec`: same process id,
//! signals and exit code), which links libtorch and GDAL.

use std::ffi::OsString;
use std::path::PathBuf;

use super::args::{Cli, Command};
use super::{finish, init_logging};

/// File name of the binary that runs the commands needing libtorch or GDAL.
pub const ENGINE: &str = "acf-index-engine";

/// What the front binary did with a command line.
#[derive(Debug)]
pub enum Launch {
    /// The command ran here; the process exit code.
    Ran(i32),
    /// The command needs the engine.
    Engine,
}

/// Runs `cli` here when it needs neither libtorch nor GDAL.
pub fn run_here(cli: Cli) -> Launch {
    let here = match &cli.command {
        // Thumbnails and the HTML page cut chips out of scenes with GDAL.
        Command::Query(args) => args.thumbnails.is_none() && args.html.is_none(),
        Command::Embed { .. } | Command::Rerank { .. } => true,
        _ => false,
    };
    if !here {
        return Launch::Engine;
    }
    init_logging(cli.log_format, cli.verbose, cli.quiet);
    use super::exit::OK;
    let result = match cli.command {
        Command::Query(args) => super::query_cmd::search_and_print(&args).map(|_| OK),
        Command::Embed { text, format, model } => super::commands::embed(&text, format, &model).map(|_| OK),
        Command::Rerank { text, index, chips, top_k, strict, format, model } => {
            super::query_cmd::rerank(&text, &index, &chips, top_k as usize, strict, format, &model)
                .map(|_| OK)
        }
        _ => return Launch::Engine,
    };
    Launch::Ran(finish(result))
}

/// Replaces this process with `acf-index-engine` (beside this binary) on the same
/// arguments; returns only when that fails, with the exit code to use.
pub fn exec_engine() -> i32 {
    let engine = engine_path();
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("acf-index"));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(&engine).arg0(arg0).args(args).exec();
        eprintln!(
            "error: cannot start {}: {err} (it is built and installed beside acf-index: cargo build --release, cargo install --path .)",
            engine.display()
        );
        super::exit::FAILED
    }
    #[cfg(not(unix))]
    {
        let _ = arg0;
        match std::process::Command::new(&engine).args(args).status() {
            Ok(status) => status.code().unwrap_or(super::exit::FAILED),
            Err(err) => {
                eprintln!("error: cannot start {}: {err}", engine.display());
                super::exit::FAILED
            }
        }
    }
}

/// `acf-index-engine` in the directory of the running binary (symlinks resolved).
fn engine_path() -> PathBuf {
    let exe = std::env::current_exe().and_then(std::fs::canonicalize).unwrap_or_default();
    exe.with_file_name(format!("{ENGINE}{}", std::env::consts::EXE_SUFFIX))
}
