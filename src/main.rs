//! `acf-index`: parses the command line, runs searches itself (no libtorch: they start in
//! milliseconds) and hands every other command to `acf-index-engine` (`cli::launch`).

use acf_index::cli::launch::{Launch, exec_engine, run_here};

fn main() {
    reset_sigpipe();
    let cli = acf_index::cli::parse();
    let code = match run_here(cli) {
        Launch::Ran(code) => code,
        Launch::Engine => exec_engine(),
    };
    std::process::exit(code);
}

/// Restores the default SIGPIPE action so that `acf-index … | head` ends quietly
/// instead of panicking on a closed pipe (Rust ignores SIGPIPE by default).
fn reset_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to SIG_DFL at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
