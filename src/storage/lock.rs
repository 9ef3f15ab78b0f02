//! Advisory writer locks (`flock`): the kernel releases them when the holder dies, so a
//! killed run never blocks the next one.
//!
//! A plain writer holds `.lock` exclusively. A shard worker (`--shard I/N`) holds `.lock`
//! shared, `.lock-layout-N` shared and `.lock-shard-I-of-N` exclusively: N workers run side
//! by side, while a second worker for the same shard, a plain writer, or a worker of
//! another layout (`--shard J/M`, M ≠ N: its shards would overlap these) is refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{AcfError, Result};

/// Held locks; dropping releases them.
#[derive(Debug)]
pub struct WriterLock {
    _files: Vec<File>,
}

impl WriterLock {
    /// Takes the writer lock(s) of the index in `dir` without waiting.
    pub fn acquire(dir: &Path, shard: Option<(usize, usize)>) -> Result<WriterLock> {
        let main = dir.join(".lock");
        match shard {
            None => Ok(WriterLock { _files: vec![lock(&main, libc::LOCK_EX, dir, INDEX_HOLDER)?] }),
            Some((i, n)) => {
                let shared = lock(&main, libc::LOCK_SH, dir, INDEX_HOLDER)?;
                let layout = lock_layout(dir, n)?;
                let own =
                    lock(&dir.join(format!(".lock-shard-{i}-of-{n}")), libc::LOCK_EX, dir, INDEX_HOLDER)?;
                Ok(WriterLock { _files: vec![shared, layout, own] })
            }
        }
    }

    /// Takes the lock of a training output folder without waiting: two `train` runs into one
    /// `--out` would overwrite each other's checkpoints and interleave their metrics log.
    /// `dir` must exist.
    pub fn acquire_training(dir: &Path) -> Result<WriterLock> {
        Ok(WriterLock { _files: vec![lock(&dir.join(".lock"), libc::LOCK_EX, dir, TRAINING_HOLDER)?] })
    }
}

/// Who holds a lock, and what to do about it, for the refusal message.
struct Holder {
    doing: &'static str,
    advice: &'static str,
}

const INDEX_HOLDER: Holder =
    Holder { doing: "another acf-index process is writing this index", advice: "wait for it to finish" };
const TRAINING_HOLDER: Holder = Holder {
    doing: "another acf-index train is writing this folder",
    advice: "wait for it to finish or choose another --out",
};

/// Joins the shard layout N (shared lock on `.lock-layout-N`) after checking that no worker
/// of another layout holds its own: a layout whose file can be locked exclusively has no
/// live worker.
fn lock_layout(dir: &Path, n: usize) -> Result<File> {
    let path = dir.join(format!(".lock-layout-{n}"));
    let file = open_lock_file(&path)?;
    if !try_flock(&file, libc::LOCK_SH) {
        return Err(layout_conflict(dir, n, None));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| AcfError::io(dir, "cannot list the index", e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(m) = name.strip_prefix(".lock-layout-").and_then(|m| m.parse::<usize>().ok()) else {
            continue;
        };
        if m == n {
            continue;
        }
        let other = open_lock_file(&entry.path())?;
        if !try_flock(&other, libc::LOCK_EX) {
            return Err(layout_conflict(dir, n, Some(m)));
        }
    }
    Ok(file)
}

fn layout_conflict(dir: &Path, n: usize, other: Option<usize>) -> AcfError {
    let running =
        other.map_or("another shard layout".to_string(), |m| format!("shard workers of --shard I/{m}"));
    AcfError::LockConflict {
        path: dir.to_path_buf(),
        reason: format!(
            "{running} are writing this index; this worker uses --shard I/{n}: every worker of one run must use the same N"
        ),
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| AcfError::io(path, "cannot open lock file", e))
}

/// `flock(mode | LOCK_NB)`; true when taken.
fn try_flock(file: &File, mode: i32) -> bool {
    // SAFETY: flock on a valid, owned file descriptor.
    unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) == 0 }
}

/// True when a process with this pid exists.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

fn lock(path: &Path, mode: i32, dir: &Path, who: Holder) -> Result<File> {
    let mut file = open_lock_file(path)?;
    if !try_flock(&file, mode) {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        // Only an exclusive holder writes its pid; a stale one (a dead writer, while shard
        // workers hold the lock shared) is not named.
        let by = match holder.trim().parse::<i32>() {
            Ok(pid) if alive(pid) => format!(" (pid {pid})"),
            _ => String::new(),
        };
        return Err(AcfError::LockConflict {
            path: dir.to_path_buf(),
            reason: format!("{}{by}; {}", who.doing, who.advice),
        });
    }
    if mode == libc::LOCK_EX {
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path(), None).unwrap();
        let err = WriterLock::acquire(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("another acf-index process"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert!(WriterLock::acquire(dir.path(), Some((0, 2))).is_err(), "a shard beside a plain writer");
        drop(first);
        WriterLock::acquire(dir.path(), None).unwrap();
    }

    #[test]
    fn workers_of_another_shard_layout_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = WriterLock::acquire(dir.path(), Some((0, 2))).unwrap();
        let err = WriterLock::acquire(dir.path(), Some((0, 3))).unwrap_err().to_string();
        assert!(err.contains("--shard I/2") && err.contains("same N"), "{err}");
        assert!(WriterLock::acquire(dir.path(), Some((0, 1))).is_err());
        let _b = WriterLock::acquire(dir.path(), Some((1, 2))).unwrap();
        drop(a);
        drop(_b);
        WriterLock::acquire(dir.path(), Some((2, 3))).unwrap();
    }

    #[test]
    fn a_dead_holder_is_not_named() {
        let dir = tempfile::tempdir().unwrap();
        // A pid file left by a dead exclusive writer, while a shard worker holds the lock.
        std::fs::write(dir.path().join(".lock"), "999999999").unwrap();
        let _shard = WriterLock::acquire(dir.path(), Some((0, 2))).unwrap();
        let err = WriterLock::acquire(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("another acf-index process") && !err.contains("999999999"), "{err}");
    }

    #[test]
    fn a_second_trainer_is_refused_with_its_own_message() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire_training(dir.path()).unwrap();
        let err = WriterLock::acquire_training(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another acf-index train") && err.contains("--out"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        WriterLock::acquire_training(dir.path()).unwrap();
    }

    #[test]
    fn shards_run_side_by_side_but_not_twice() {
        let dir = tempfile::tempdir().unwrap();
        let _a = WriterLock::acquire(dir.path(), Some((0, 2))).unwrap();
        let _b = WriterLock::acquire(dir.path(), Some((1, 2))).unwrap();
        assert!(WriterLock::acquire(dir.path(), Some((1, 2))).is_err());
        assert!(WriterLock::acquire(dir.path(), None).is_err());
    }
}
