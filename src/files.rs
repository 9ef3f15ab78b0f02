//! Durable file writes and content hashes, shared by the model, vocabulary, training
//! checkpoints and the index.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{AcfError, Result};

/// Writes `bytes` to `path` so that a reader (or a crash) sees the old content or the new,
/// never a mix: a temporary file beside it (named by process and a counter, so concurrent
/// writers of the same path never share one), fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_beside(path);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(AcfError::io(&tmp, "cannot write", e));
    }
    crate::faults::crash_point("atomic:before-rename");
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(AcfError::io(path, "cannot publish (rename)", e));
    }
    sync_dir_of(path);
    Ok(())
}

/// A hidden temporary name beside `path`, unique to this process and call.
pub fn temp_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Builds a new directory with `build` in a hidden temporary beside `dst` ([`temp_beside`]),
/// then renames it into place, so a reader (or a kill at any point) sees the old `dst` or
/// none, or the whole new one, never a part. An existing `dst` is moved aside first and
/// removed last. Temporaries left by processes that no longer run are removed first; a
/// failed build removes its own (a full disk gets its space back).
pub fn publish_dir_whole(dst: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    remove_dead_temporaries(dst);
    let tmp = temp_beside(dst);
    if let Err(e) = build(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    crate::faults::crash_point("publish-dir:before-rename");
    let aside = temp_beside(dst);
    if let Err(e) = swap_dir_in(&tmp, dst, &aside) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(aside);
    Ok(())
}

/// Renames the finished directory `tmp` to `dst`, an existing `dst` moved to `aside` first
/// (put back if the second rename fails); the caller removes `aside`. Each step is one
/// rename, so a kill at any point leaves the old directory or the new one in place, or the
/// old one at `aside`.
pub fn swap_dir_in(tmp: &Path, dst: &Path, aside: &Path) -> Result<()> {
    let moved_aside = dst.exists();
    if moved_aside {
        std::fs::rename(dst, aside)
            .map_err(|e| AcfError::io(dst, "cannot move the old directory aside", e))?;
    }
    if let Err(e) = std::fs::rename(tmp, dst) {
        if moved_aside {
            let _ = std::fs::rename(aside, dst);
        }
        return Err(AcfError::io(dst, "cannot publish (rename)", e));
    }
    sync_dir_of(dst);
    Ok(())
}

/// Removes the directories [`temp_beside`] named for `path` whose process is gone (a
/// killed `model average`, say). Best effort: what cannot be removed stays hidden.
fn remove_dead_temporaries(path: &Path) {
    let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else { return };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if !process_is_running(pid) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process with this id exists (Unix; elsewhere assumed to, keeping its files).
fn process_is_running(pid: u32) -> bool {
    #[cfg(unix)]
    {
        if pid == std::process::id() {
            return true;
        }
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Makes a rename in `path`'s directory durable (best effort: not every file system
/// allows opening a directory).
pub fn sync_dir_of(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// [`sha256_hex`] of `bytes`, the content of `path`, remembered beside it in
/// `.<name>.sha256` with the file's identity (device, inode, size, mtime and ctime in ns):
/// while all of them match, the stored hash is returned without hashing (12 ms for the
/// 21 MB pvig-nano weights, a tenth of a query). ctime cannot be set back by a user, so a
/// replaced or rewritten file is always hashed again. When the directory is not writable,
/// the hash is simply computed every time.
pub fn cached_fingerprint(path: &Path, bytes: &[u8]) -> String {
    let identity = file_identity(path);
    let cache = fingerprint_cache_of(path);
    if let Some(identity) = &identity
        && let Ok(text) = std::fs::read_to_string(&cache)
        && let Some((stamp, hash)) = text.trim().rsplit_once(' ')
        && stamp == identity
        && hash.len() == 64
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return hash.to_string();
    }
    let hash = sha256_hex(bytes);
    // Only when the file did not change while it was hashed.
    if let Some(identity) = identity
        && file_identity(path).as_ref() == Some(&identity)
    {
        let _ = write_atomic(&cache, format!("{identity} {hash}\n").as_bytes());
    }
    hash
}

/// Where [`cached_fingerprint`] remembers the hash of `path`: `.<name>.sha256` beside it.
pub fn fingerprint_cache_of(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.sha256"))
}

/// `dev:ino:size:mtime_ns:ctime_ns` of a file (Unix), or `None`.
fn file_identity(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(format!(
            "{}:{}:{}:{}:{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The first 12 hex digits of a fingerprint: how fingerprints are shown to people.
pub fn short_fingerprint(fingerprint: &str) -> &str {
    &fingerprint[..12.min(fingerprint.len())]
}

/// A set of path globs (`None` when there are none). A bare pattern such as `*.tif`
/// matches the file name anywhere in the tree; matching ignores case, since archives mix
/// `.tif` and `.TIF`.
pub fn glob_set(patterns: &[String]) -> Result<Option<globset::GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        let full = if p.contains('/') { p.clone() } else { format!("**/{p}") };
        let glob = globset::GlobBuilder::new(&full)
            .case_insensitive(true)
            .build()
            .map_err(|e| AcfError::Glob { pattern: p.clone(), reason: e.kind().to_string() })?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| AcfError::Glob { pattern: patterns.join(" "), reason: e.kind().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_fingerprint_is_reused_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, b"first weights").unwrap();
        let first = cached_fingerprint(&path, b"first weights");
        assert_eq!(first, sha256_hex(b"first weights"));
        let cache = dir.path().join(".model.safetensors.sha256");
        assert!(cache.exists(), "the hash is remembered");
        // Unchanged file: the remembered hash is returned without hashing these bytes.
        assert_eq!(cached_fingerprint(&path, b"not what was hashed"), first);
        // Rewritten in place with the same size: hashed again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"other weights").unwrap();
        assert_eq!(cached_fingerprint(&path, b"other weights"), sha256_hex(b"other weights"));
        // Replaced by rename (how models are saved): hashed again.
        write_atomic(&path, b"third weights").unwrap();
        assert_eq!(cached_fingerprint(&path, b"third weights"), sha256_hex(b"third weights"));
        // A damaged cache file is ignored.
        std::fs::write(&cache, "garbage").unwrap();
        assert_eq!(cached_fingerprint(&path, b"third weights"), sha256_hex(b"third weights"));
    }

    #[test]
    fn a_published_directory_is_whole_and_replaces_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("model");
        let write = |content: &'static str| {
            move |tmp: &Path| -> Result<()> {
                std::fs::create_dir_all(tmp).map_err(|e| AcfError::io(tmp, "mkdir", e))?;
                write_atomic(&tmp.join("a"), content.as_bytes())?;
                write_atomic(&tmp.join("b"), content.as_bytes())
            }
        };
        publish_dir_whole(&dst, write("one")).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("b")).unwrap(), "one");
        // A killed earlier run's temporary (pid 0x7fffffff: no such process) is removed;
        // a running process's (ours) is left alone.
        let dead = root.path().join(format!(".model.{}-0.tmp", i32::MAX));
        let live = temp_beside(&dst);
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        publish_dir_whole(&dst, write("two")).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("a")).unwrap(), "two");
        assert!(!dead.exists() && live.exists());
        std::fs::remove_dir_all(&live).unwrap();
        // A failed build leaves the old directory and nothing beside it.
        let failed = publish_dir_whole(&dst, |tmp: &Path| {
            std::fs::create_dir_all(tmp).unwrap();
            std::fs::write(tmp.join("a"), "half").unwrap();
            Err(AcfError::io(tmp, "disk full", std::io::Error::other("no space")))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(dst.join("a")).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model")]);
    }

    #[test]
    fn globs_match_names_anywhere_ignoring_case() {
        let set = glob_set(&["*.tif".to_string()]).unwrap().unwrap();
        assert!(set.is_match("/data/a/LC08.TIF") && set.is_match("x.tif") && !set.is_match("x.tiff"));
        assert!(glob_set(&[]).unwrap().is_none());
        let err = glob_set(&["[".to_string()]).unwrap_err().to_string();
        assert!(err.contains("bad glob '['"), "{err}");
    }

    #[test]
    fn hex_and_sha256_match_known_values() {
        assert_eq!(hex(&[0, 15, 16, 255]), "000f10ff");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(short_fingerprint("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_fingerprint("01"), "01");
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_ne!(temp_beside(&path), temp_beside(&path), "every call gets its own temporary");
    }

    #[test]
    fn concurrent_writers_of_one_path_never_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..50 {
                        write_atomic(path, format!("{t}-{i}").as_bytes()).unwrap();
                    }
                });
            }
        });
        assert!(std::fs::read_to_string(&path).unwrap().contains('-'));
    }
}
