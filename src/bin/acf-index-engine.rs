//! `acf-index-engine`: runs any `acf-index` command line (the front binary `acf-index` hands
//! it every command that needs libtorch or GDAL).

fn main() {
    reset_sigpipe();
    let cli = acf_index::cli::parse();
    std::process::exit(acf_index::cli::run(cli));
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
