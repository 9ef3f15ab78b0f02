//! SIGINT and SIGTERM (Ctrl-C; what Kubernetes, Slurm and systemd send) for the long-running
//! commands: the first signal sets a flag that the work checks at safe points (it stops
//! there, publishing nothing partial, and the command exits 130); a second signal exits at
//! once with 130.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use super::exit;

/// Installs the handler; `message` is printed on the first signal (what happens next).
pub fn install(message: &'static str) -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let seen = flag.clone();
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            // `_exit`, not `std::process::exit`: running exit handlers (libtorch's static
            // destructors) while the encoder thread still runs crashes the process.
            // SAFETY: `_exit` only ends the process.
            unsafe { libc::_exit(exit::INTERRUPTED) }
        }
        super::say(message);
    })
    .context("cannot install the signal handler")?;
    Ok(flag)
}
