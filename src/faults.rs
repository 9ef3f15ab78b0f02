//! Named crash points for the fault-injection tests (`tests/cli_faults.rs`): with
//! `ACF_CRASH_AT=NAME` a debug build dies at that point at once, as `kill -9` would (no
//! destructors, no clean-up, exit status 99). Release builds compile them out.

/// Exit status of a process stopped at a crash point.
pub const CRASH_EXIT: i32 = 99;

/// Dies here when `ACF_CRASH_AT` names this point (debug builds only).
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("ACF_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("crash point {name}");
        // SAFETY: `_exit` only ends the process.
        unsafe { libc::_exit(CRASH_EXIT) }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
