//! Advisory writer locks (`flock`): the kernel releases them when the holder dies, so a
//! killed run never blocks the next one.
//!
//! A plain writer holds `.lock` exclusively. A shard worker (`--shard I/N`) holds `.lock`
//! shared plus `.lock-shard-I-of-N` exclusively: N workers run side by side, while a second
//! worker for the same shard, or a plain writer, is refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

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
            None => Ok(WriterLock { _files: vec![lock(&main, libc::LOCK_EX, dir)?] }),
            Some((i, n)) => {
                let shared = lock(&main, libc::LOCK_SH, dir)?;
                let own = lock(&dir.join(format!(".lock-shard-{i}-of-{n}")), libc::LOCK_EX, dir)?;
                Ok(WriterLock { _files: vec![shared, own] })
            }
        }
    }
}

fn lock(path: &PathBuf, mode: i32, dir: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| AcfError::io(path, "cannot open lock file", e))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let by = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
        return Err(AcfError::Index {
            path: dir.to_path_buf(),
            reason: format!("another acf-index process is writing this index{by}; wait for it to finish"),
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
    fn shards_run_side_by_side_but_not_twice() {
        let dir = tempfile::tempdir().unwrap();
        let _a = WriterLock::acquire(dir.path(), Some((0, 2))).unwrap();
        let _b = WriterLock::acquire(dir.path(), Some((1, 2))).unwrap();
        assert!(WriterLock::acquire(dir.path(), Some((1, 2))).is_err());
        assert!(WriterLock::acquire(dir.path(), None).is_err());
    }
}
