//! Scenes on object storage, against a real S3 API on 127.0.0.1 (moto's server, started here),
//! and scenes inside a zip, both through GDAL's VSI layer.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{BIN, Dir, geotiff, parse_json, python};

/// A moto S3 server on a free loopback port, stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} (run scripts/setup.sh): {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server { child, port }
    }

    /// Creates `bucket` (if needed) and uploads `file` as `key`, with boto3.
    fn put(&self, bucket: &str, key: &str, file: &Path) {
        let script = "import boto3, sys\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='x', aws_secret_access_key='x', region_name='us-east-1')\n\
            names = [b['Name'] for b in s3.list_buckets().get('Buckets', [])]\n\
            if sys.argv[2] not in names: s3.create_bucket(Bucket=sys.argv[2])\n\
            s3.upload_file(sys.argv[4], sys.argv[2], sys.argv[3])\n";
        let out = Command::new(python())
            .args(["-c", script, &format!("http://127.0.0.1:{}", self.port), bucket, key])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "upload: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `acf-index ARGS` with GDAL pointed at this server.
    fn acf(&self, dir: &Dir, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .env("AWS_S3_ENDPOINT", format!("127.0.0.1:{}", self.port))
            .env("AWS_HTTPS", "NO")
            .env("AWS_VIRTUAL_HOSTING", "FALSE")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn summary(stdout: &str) -> serde_json::Value {
    parse_json(stdout)
}

#[test]
fn scenes_in_a_bucket_are_listed_indexed_skipped_verified_and_replaced() {
    let dir = Dir::new();
    let s3 = S3Server::start();
    s3.put("archive", "scenes/a.tif", &geotiff("cogeo.tif"));
    s3.put("archive", "scenes/sub/b.TIF", &geotiff("naip-4band-150x200.tif"));
    let out = dir.join("idx");
    let out_s = out.to_str().unwrap();
    let index = |extra: &[&str]| {
        let mut args = vec![
            "index",
            "--device",
            "cpu",
            "--json",
            "--include",
            "*.tif",
            "--out",
            out_s,
            "s3://archive/scenes/",
        ];
        args.extend_from_slice(extra);
        s3.acf(&dir, &args)
    };
    let (code, stdout, err) = index(&[]);
    assert_eq!(code, 0, "{err}");
    let s = summary(&stdout);
    assert_eq!((s["scenes"].as_u64(), s["indexed"].as_u64()), (Some(2), Some(2)), "{stdout}");
    let records: Vec<serde_json::Value> = std::fs::read_dir(out.join("scenes"))
        .unwrap()
        .map(|e| parse_json(&std::fs::read_to_string(e.unwrap().path()).unwrap()))
        .collect();
    assert!(records.iter().all(|r| r["path"].as_str().unwrap().starts_with("/vsis3/archive/scenes/")));

    // A rerun skips both; --verify hashes the objects through GDAL (first run records them).
    let (_, stdout, _) = index(&[]);
    assert_eq!(summary(&stdout)["skipped"].as_u64(), Some(2), "{stdout}");
    let (code, _, err) = index(&["--verify"]);
    assert_eq!(code, 0, "--verify through /vsis3: {err}");
    let (_, stdout, _) = index(&["--verify"]);
    assert_eq!(summary(&stdout)["skipped"].as_u64(), Some(2), "{stdout}");

    // A changed object is indexed again (Last-Modified has one-second resolution).
    std::thread::sleep(Duration::from_millis(1100));
    s3.put("archive", "scenes/a.tif", &geotiff("l8-uint16-300x260.tif"));
    let (code, stdout, err) = index(&[]);
    assert_eq!(code, 0, "{err}");
    let s = summary(&stdout);
    assert_eq!((s["indexed"].as_u64(), s["skipped"].as_u64()), (Some(1), Some(1)), "{stdout}");
    let (code, stdout, _) = s3.acf(
        &dir,
        &["query", "--device", "cpu", "--format", "json", "--index", out_s, "buildings and trees"],
    );
    assert_eq!(code, 0);
    assert!(stdout.lines().count() > 0);

    // A prefix with nothing under it is said, naming it.
    let (_, _, err) = s3.acf(&dir, &["index", "--device", "cpu", "--out", out_s, "s3://archive/nothing/"]);
    assert!(err.contains("s3://archive/nothing/") && err.contains("no scene found"), "{err}");
}

#[test]
fn scenes_inside_a_zip_are_indexed_through_vsizip() {
    let dir = Dir::new();
    let zip = dir.join("scenes.zip");
    let script = "import sys, zipfile\n\
        with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
        \x20   z.write(sys.argv[2], 'x/one.tif')\n\
        \x20   z.write(sys.argv[3], 'two.tif')\n";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&zip)
        .arg(geotiff("cogeo.tif"))
        .arg(geotiff("naip-4band-150x200.tif"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let idx = dir.join("idx");
    let run = dir
        .command()
        .args(["index", "--device", "cpu", "--json", "--out"])
        .arg(&idx)
        .arg(format!("/vsizip/{}", zip.display()))
        .succeeds();
    let s = parse_json(&run.stdout);
    assert_eq!((s["scenes"].as_u64(), s["indexed"].as_u64()), (Some(2), Some(2)), "{}", run.stdout);
}

#[test]
fn a_stac_catalog_in_a_bucket_is_indexed_and_searched_both_ways() {
    let dir = Dir::new();
    let s3 = S3Server::start();
    let cat = crate::cli_stac::catalog(&dir);
    let root = cat.parent().unwrap();
    for entry in
        walkdir::WalkDir::new(root).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file())
    {
        let key = format!("stac/{}", entry.path().strip_prefix(root).unwrap().display());
        s3.put("catalogs", &key, entry.path());
    }
    let idx = dir.join("idx");
    let idx_s = idx.to_str().unwrap();
    let (code, stdout, err) = s3.acf(
        &dir,
        &["index", "--device", "cpu", "--json", "--out", idx_s, "--stac", "s3://catalogs/stac/catalog.json"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&stdout)["indexed"].as_u64(), Some(2), "{stdout}");
    let records: Vec<serde_json::Value> = std::fs::read_dir(idx.join("scenes"))
        .unwrap()
        .map(|e| parse_json(&std::fs::read_to_string(e.unwrap().path()).unwrap()))
        .collect();
    assert!(
        records.iter().any(|r| r["path"].as_str().unwrap().starts_with("/vsis3/catalogs/stac/naip/")),
        "{records:?}"
    );
    // Searched by the CLI, and by DuckDB's stage 1 + rerank (the example), with the same top hit.
    let (code, stdout, err) = s3.acf(
        &dir,
        &[
            "query",
            "--device",
            "cpu",
            "--format",
            "json",
            "--top-k",
            "3",
            "--index",
            idx_s,
            "buildings and trees",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let cli_top = parse_json(stdout.lines().next().unwrap())["chip_id"].as_str().unwrap().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/readers/duckdb_two_stage.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&idx)
        .arg("buildings and trees")
        .args(["1000", "3"])
        .env("ACF_INDEX_BIN", BIN)
        .env("AWS_S3_ENDPOINT", format!("127.0.0.1:{}", s3.port))
        .env("AWS_HTTPS", "NO")
        .env("AWS_VIRTUAL_HOSTING", "FALSE")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .output()
        .unwrap();
    let two_stage = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{two_stage}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(two_stage.lines().next().unwrap().contains(&cli_top), "{two_stage} vs {cli_top}");
    eprintln!("CLI top hit {cli_top}; DuckDB + rerank:\n{two_stage}");
}
