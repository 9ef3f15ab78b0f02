//! `acf-index compact`: merging part files keeps every chip exactly once for readers, through
//! a crash at every step, a server reading meanwhile, and scenes indexed again afterwards.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cli_faults::{CRASH_EXIT, index_cmd, query_all, run, scenes, touch_later};
use crate::cli_serve::Server;
use crate::util::{BIN, Dir, parse_json};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn compact(dir: &Dir, index: &Path, crash_at: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["compact", "--json"]).arg(index).current_dir(dir.path());
    if let Some(point) = crash_at {
        cmd.env("ACF_CRASH_AT", point);
    }
    run(cmd)
}

/// Part files (visible ones) and temporary files in the index.
fn part_files(index: &Path) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(index.join("parts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    (
        names.iter().filter(|n| !n.starts_with('.')).count(),
        names.iter().filter(|n| n.starts_with('.')).count(),
    )
}

fn sorted_chips(dir: &Dir, index: &Path) -> Vec<(String, String)> {
    let (code, mut hits, err) = query_all(dir, index);
    assert_eq!(code, 0, "{err}");
    hits.sort();
    hits
}

#[test]
fn compaction_keeps_every_chip_once_through_a_crash_at_every_step_and_later_reindexing() {
    let dir = Dir::new();
    let src = scenes(&dir);
    let base = dir.join("base");
    let (code, err) = run(index_cmd(&dir, &base, &src));
    assert_eq!(code, 0, "{err}");
    let all = sorted_chips(&dir, &base);
    assert!(all.len() > 10);
    let unique: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len());
    assert_eq!(part_files(&base), (3, 0));

    for point in [
        "compact:before-publish",
        "compact:before-records",
        "compact:after-first-record",
        "compact:before-cleanup",
    ] {
        let out = dir.join(format!("crash-{}", point.replace(':', "-")));
        copy_dir(&base, &out);
        let (code, err) = compact(&dir, &out, Some(point));
        assert_eq!(code, CRASH_EXIT, "{point}: expected the crash point to fire\n{err}");
        // Whatever step it died at, readers see every chip exactly once.
        assert_eq!(sorted_chips(&dir, &out), all, "{point}: chips after the crash");
        let info = Command::new(BIN).arg("info").arg(&out).output().unwrap();
        assert!(info.status.success(), "{point}: info fails after a crash");
        // The next compaction finishes the work and removes the leftovers.
        let (code, err) = compact(&dir, &out, None);
        assert_eq!(code, 0, "{point}: {err}");
        assert_eq!(sorted_chips(&dir, &out), all, "{point}: chips after the rerun");
        assert_eq!(part_files(&out), (1, 0), "{point}: one merged file, no temporary files");
        // `index` sees nothing to do on a compacted index.
        let (code, err) = run(index_cmd(&dir, &out, &src));
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("indexed=0"), "{point}: {err}");
    }

    // After compaction a scene changes and is indexed again: readers see its new rows only
    // (the merged file still holds the old ones, which no record names), and the next
    // compaction drops the old rows.
    let out = dir.join("crash-compact-before-cleanup");
    touch_later(&src[0]);
    let (code, err) = run(index_cmd(&dir, &out, &src));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("indexed=1"), "{err}");
    assert_eq!(sorted_chips(&dir, &out), all);
    assert_eq!(part_files(&out), (2, 0));
    let (code, err) = compact(&dir, &out, None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sorted_chips(&dir, &out), all);
    assert_eq!(part_files(&out), (1, 0));
}

#[test]
fn a_server_sees_the_same_chips_while_the_index_is_compacted_and_compact_refuses_beside_a_writer() {
    let dir = Dir::new();
    let src = scenes(&dir);
    let index = dir.join("index");
    let (code, err) = run(index_cmd(&dir, &index, &src));
    assert_eq!(code, 0, "{err}");
    let server = Server::start(&dir, &index, &[]);
    let (_, before) = server.json("/api/search?q=buildings+and+green+trees&k=5");
    let total = server.json("/api/info").1["chips"].as_u64().unwrap();
    let mut job = Command::new(BIN).args(["compact"]).arg(&index).current_dir(dir.path()).spawn().unwrap();
    loop {
        let (_, info) = server.json("/api/info");
        assert_eq!(
            info["chips"].as_u64().unwrap(),
            total,
            "a search would have seen chips twice or not at all"
        );
        if let Ok(Some(status)) = job.try_wait() {
            assert!(status.success());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(600));
    let (_, info) = server.json("/api/info");
    assert_eq!((info["chips"].as_u64().unwrap(), info["part_files"].as_u64().unwrap()), (total, 1));
    let (_, after) = server.json("/api/search?q=buildings+and+green+trees&k=5");
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["hits"].as_array().unwrap().iter().map(|h| h["chip_id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(&before), ids(&after));

    // While a writer holds the index's writer lock (as `index` does for its whole run),
    // compact refuses at once, naming the lock.
    {
        use std::os::fd::AsRawFd;
        let lock = std::fs::OpenOptions::new().create(true).append(true).open(index.join(".lock")).unwrap();
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        let out = Command::new(BIN).args(["compact"]).arg(&index).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("lock") || err.contains("another"), "{err}");
    }
    touch_later(&src[1]);
    let (code, err) = run(index_cmd(&dir, &index, &src));
    assert_eq!(code, 0, "{err}");
    let report = Command::new(BIN).args(["compact", "--json"]).arg(&index).output().unwrap();
    assert!(report.status.success());
    let report = parse_json(&String::from_utf8_lossy(&report.stdout));
    assert_eq!(report["part_files_after"], 1);
}
