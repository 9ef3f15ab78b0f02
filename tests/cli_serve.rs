//! `acf-index serve` end to end: the served search equals `query`, scenes published while it
//! runs appear whole, bad requests get a 4xx naming the problem and never take it down, and
//! the search page works in a real browser (headless Chromium through chromedriver).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli_query::{build_mosaic, in_class};
use crate::util::{BIN, Dir, parse_json};

/// A running `acf-index serve`, stopped with SIGTERM when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(dir: &Dir, index: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .current_dir(dir.path())
            .args(["serve", "--device", "cpu", "--addr", "127.0.0.1:0", "--refresh", "0.2", "--index"])
            .arg(index)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start acf-index serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("serve did not say where it listens");
        let base = line.trim().trim_start_matches("listening on ").trim_end_matches('/').to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "unexpected first line: {line:?}");
        Server { child, base }
    }

    fn get(&self, path_and_query: &str) -> (u16, String, Vec<u8>) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut resp = agent
            .get(format!("{}{path_and_query}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let status = resp.status().as_u16();
        let kind =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body = resp.body_mut().with_config().limit(64 << 20).read_to_vec().expect("body");
        (status, kind, body)
    }

    pub(crate) fn json(&self, path_and_query: &str) -> (u16, Value) {
        let (status, _, body) = self.get(path_and_query);
        (status, parse_json(&String::from_utf8_lossy(&body)))
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosaic_index(dir: &Dir) -> PathBuf {
    let mosaic = dir.join("mosaic.tif");
    build_mosaic(&mosaic);
    let index = dir.join("index");
    dir.command().args(["index", "--device", "cpu", "--out"]).arg(&index).arg(&mosaic).succeeds();
    index
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

const MISSION: &str = "tennis court near football field";

#[test]
fn served_search_equals_query_and_scenes_published_while_serving_appear_whole() {
    let dir = Dir::new();
    let index = mosaic_index(&dir);
    let server = Server::start(&dir, &index, &[]);

    let (status, body) = server.json(&format!("/api/search?q={}&k=10", MISSION.replace(' ', "+")));
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 10);
    let run = dir
        .command()
        .args(["query", "--device", "cpu", "--format", "json", "--top-k", "10", "--index"])
        .arg(&index)
        .arg(MISSION)
        .succeeds();
    let cli: Vec<Value> = run.stdout_lines().iter().map(|l| parse_json(l)).collect();
    for (s, c) in hits.iter().zip(&cli) {
        assert_eq!(s["chip_id"], c["chip_id"]);
        let (a, b) = (s["score"].as_f64().unwrap(), c["score"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-4, "served {a} vs query {b}");
    }
    // The mosaic's tennis courts and baseball diamonds lead (as with `query`).
    assert!(in_class(&hits[..5], "tenniscourt") + in_class(&hits[..5], "baseballdiamond") >= 3, "{hits:?}");
    assert_eq!(hits[0]["geometry"]["type"], "Polygon");
    assert!(hits[0]["center"][0].as_f64().unwrap() < -80.0, "a UTM 17N mosaic is near -81°");

    // GeoJSON of the same hits, and a thumbnail of the top hit: a 224×224 PNG.
    let (status, kind, body) =
        server.get(&format!("/api/search?q={}&k=10&format=geojson", MISSION.replace(' ', "+")));
    assert_eq!((status, kind.as_str()), (200, "application/geo+json"));
    let fc = parse_json(&String::from_utf8_lossy(&body));
    assert_eq!(fc["type"], "FeatureCollection");
    assert_eq!(fc["features"].as_array().unwrap().len(), 10);
    let (status, kind, png) = server.get(hits[0]["thumbnail"].as_str().unwrap());
    assert_eq!((status, kind.as_str()), (200, "image/png"));
    let img = image::load_from_memory(&png).expect("a PNG");
    assert_eq!((img.width(), img.height()), (224, 224));

    // A nightly run publishes 8 more scenes while the server answers: every count the server
    // reports is the mosaic plus whole scenes, and at the end it has them all.
    let (_, info) = server.json("/api/info");
    let before = info["chips"].as_u64().unwrap();
    assert_eq!(before, 30);
    let mut writer = Command::new(BIN)
        .current_dir(dir.path())
        .args(["index", "--device", "cpu", "-q", "--out"])
        .arg(&index)
        .arg(fixture("tests/fixtures/geotiff"))
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let (_, info) = server.json("/api/info");
        seen.push(info["chips"].as_u64().unwrap());
        if let Ok(Some(status)) = writer.try_wait() {
            assert!(status.success());
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let records: Vec<u64> = std::fs::read_dir(index.join("scenes"))
        .unwrap()
        .map(|e| parse_json(&std::fs::read_to_string(e.unwrap().path()).unwrap()))
        .filter(|r| !r["path"].as_str().unwrap().ends_with("mosaic.tif"))
        .map(|r| r["chips"].as_u64().unwrap())
        .collect();
    let total: u64 = before + records.iter().sum::<u64>();
    let sums: std::collections::BTreeSet<u64> = (0..1u32 << records.len())
        .map(|m| {
            before + records.iter().enumerate().filter(|(i, _)| m >> i & 1 == 1).map(|(_, c)| c).sum::<u64>()
        })
        .collect();
    for c in &seen {
        assert!(sums.contains(c), "the server reported {c} chips: not a sum of whole scenes ({records:?})");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.json("/api/info").1["chips"].as_u64().unwrap() != total {
        assert!(Instant::now() < deadline, "the server did not pick up the new scenes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = server.json("/api/search?q=buildings&k=5&scene=*RGB.byte*");
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| h["scene"].as_str().unwrap().ends_with("RGB.byte.tif")));
    // Chips of parts loaded by a refresh score as `query` scores them too (the default
    // model's hubness prior included: served from offsets computed once per part).
    let run = dir
        .command()
        .args(["query", "--device", "cpu", "--format", "json", "--top-k", "5", "--scene", "*RGB.byte*"])
        .arg("--index")
        .arg(&index)
        .arg("buildings")
        .succeeds();
    let cli: Vec<Value> = run.stdout_lines().iter().map(|l| parse_json(l)).collect();
    assert_eq!(cli.len(), hits.len());
    for (s, c) in hits.iter().zip(&cli) {
        assert_eq!(s["chip_id"], c["chip_id"]);
        let (a, b) = (s["score"].as_f64().unwrap(), c["score"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-4, "served {a} vs query {b}");
    }
}

#[test]
fn bad_requests_get_a_4xx_naming_the_problem_and_never_take_the_server_down() {
    let dir = Dir::new();
    let index = dir.join("index");
    dir.command()
        .args(["index", "--device", "cpu", "--out"])
        .arg(&index)
        .arg(fixture("tests/fixtures/geotiff/RGB.byte.tif"))
        .succeeds();
    let mut server = Server::start(&dir, &index, &[]);
    let long = "a".repeat(5000);
    let cases: Vec<(String, u16, &str)> = vec![
        ("/api/search".into(), 400, "q:"),
        ("/api/search?q=".into(), 400, "q:"),
        (format!("/api/search?q={long}"), 400, "characters"),
        ("/api/search?q=river&k=0".into(), 400, "k:"),
        ("/api/search?q=river&k=1000000".into(), 400, "k:"),
        ("/api/search?q=river&k=ten".into(), 400, "k"),
        ("/api/search?q=river&candidates=-5".into(), 400, "candidates"),
        ("/api/search?q=river&bbox=1,2,3".into(), 400, "bbox:"),
        ("/api/search?q=river&bbox=0,0,NaN,1".into(), 400, "bbox:"),
        ("/api/search?q=river&bbox=0,0,500,1".into(), 400, "bbox:"),
        ("/api/search?q=river&since=yesterday".into(), 400, "since:"),
        ("/api/search?q=river&since=2021-01-01&until=2020-01-01".into(), 400, "later"),
        ("/api/search?q=river&format=xml".into(), 400, "format:"),
        ("/api/search?q=river&path=/etc/passwd".into(), 400, "unknown field"),
        ("/api/search?q=the+of+and".into(), 422, "nothing to search for"),
        ("/api/search?q=river&strict=true&q2=x".into(), 400, "unknown field"),
        ("/api/chips/..%2F..%2Fetc%2Fpasswd/thumbnail.png".into(), 400, "chip id"),
        ("/api/chips/%2e%2e/thumbnail.png".into(), 400, "chip id"),
        ("/api/chips/0000000000000000_0_0/thumbnail.png".into(), 404, "no chip"),
        ("/../../etc/passwd".into(), 404, "no such page"),
        ("/api/search?q=%FF%FE".into(), 422, "nothing to search for"),
    ];
    for (path, want, says) in &cases {
        let (status, _, body) = server.get(path);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, *want, "{path}: {text}");
        if !says.is_empty() {
            let v = parse_json(&text);
            assert!(v["error"].as_str().unwrap().contains(says), "{path}: {text}");
        }
    }
    // Raw garbage, a header flood and a half-sent request on the socket.
    let addr = server.base.trim_start_matches("http://").to_string();
    for junk in [
        b"GARBAGE\r\n\r\n".to_vec(),
        format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: b\r\n".repeat(20_000)).into_bytes(),
        b"GET /api/search?q=river HTTP/1.1\r\nHost:".to_vec(),
    ] {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(&junk);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
    // A burst from 8 clients at once, bad and good mixed.
    let base = server.base.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let base = base.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut codes = Vec::new();
                for i in 0..20 {
                    let path = match (t + i) % 4 {
                        0 => "/api/search?q=river&k=3".to_string(),
                        1 => "/api/search?q=river&k=-1".to_string(),
                        2 => "/api/chips/../thumbnail.png".to_string(),
                        _ => format!("/api/search?q={}", "x".repeat(600)),
                    };
                    let r = agent.get(format!("{base}{path}")).call().expect("the server answers");
                    codes.push(r.status().as_u16());
                }
                codes
            })
        })
        .collect();
    for t in threads {
        let codes = t.join().unwrap();
        assert!(codes.iter().all(|c| [200, 400, 404].contains(c)), "{codes:?}");
    }
    assert!(server.alive(), "the server died");
    let (status, body) = server.json("/api/search?q=river&k=3");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"].as_array().unwrap().len(), 3);
}

#[test]
fn serve_listens_on_loopback_by_default_and_refuses_an_index_of_another_model() {
    let dir = Dir::new();
    let help = dir.command().args(["serve", "--help"]).succeeds();
    help.stdout_has("127.0.0.1:8080");
    let other = dir.init_model("other-model");
    let index = dir.join("index");
    dir.command()
        .args(["index", "--device", "cpu", "--model"])
        .arg(&other)
        .arg("--out")
        .arg(&index)
        .arg(fixture("tests/fixtures/geotiff/RGB.byte.tif"))
        .succeeds();
    dir.command()
        .args(["serve", "--device", "cpu", "--addr", "127.0.0.1:0", "--index"])
        .arg(&index)
        .fails()
        .error_has("model");
    dir.command().args(["serve", "--index"]).arg(&index).args(["--refresh", "0"]).usage_error();
}

/// A WebDriver session on chromedriver (W3C protocol over HTTP).
struct Browser {
    driver: Child,
    url: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver, installed by scripts/setup.sh)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(format!("{url}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut b = Browser { driver, url, session: String::new() };
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"]
        }}}});
        let v = b.post("/session", &caps);
        b.session = v["value"]["sessionId"].as_str().expect("a session").to_string();
        b
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let mut r = ureq::post(format!("{}{path}", self.url))
            .send_json(body)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        r.body_mut().read_json().unwrap()
    }

    fn cmd(&self, path: &str, body: Value) -> Value {
        self.post(&format!("/session/{}{path}", self.session), &body)["value"].clone()
    }

    fn script(&self, js: &str) -> Value {
        self.cmd("/execute/sync", json!({"script": js, "args": []}))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(format!("{}/session/{}", self.url, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_search_page_finds_the_mission_query_in_headless_chromium() {
    let dir = Dir::new();
    let index = mosaic_index(&dir);
    let server = Server::start(&dir, &index, &[]);
    let browser = Browser::start();
    browser.cmd("/url", json!({"url": format!("{}/", server.base)}));
    let field = browser.cmd("/element", json!({"using": "css selector", "value": "#q"}));
    let field =
        field.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap().to_string();
    browser.cmd(&format!("/element/{field}/value"), json!({"text": MISSION}));
    let go = browser.cmd("/element", json!({"using": "css selector", "value": "#go"}));
    let go = go.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap().to_string();
    browser.cmd(&format!("/element/{go}/click"), json!({}));
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let s = browser.script(
            "const imgs = [...document.querySelectorAll('.hit img')];
             return {state: document.body.dataset.state || '', hits: imgs.length,
                     loaded: imgs.filter(i => i.dataset.loaded === 'yes' && i.naturalWidth === 224).length,
                     failed: imgs.filter(i => i.dataset.loaded === 'failed').length,
                     footprints: document.querySelectorAll('#map polygon').length,
                     status: document.getElementById('status').textContent,
                     first: (document.querySelector('.hit img') || {}).alt || '',
                     geojson: document.getElementById('geojson').getAttribute('href')};",
        );
        if s["state"] == "done" && s["hits"].as_u64() > Some(0) && s["loaded"] == s["hits"] {
            break s;
        }
        assert!(s["failed"].as_u64() == Some(0) && s["state"] != "error", "{s}");
        assert!(Instant::now() < deadline, "the page did not show loaded results: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(state["hits"], 20, "{state}");
    assert_eq!(state["footprints"], 20, "{state}");
    assert!(state["status"].as_str().unwrap().contains("20 hits of 30 chips"), "{state}");
    // The page shows what the API ranks first, and links the GeoJSON of the same search.
    let (_, api) = server.json(&format!("/api/search?q={}&k=20", MISSION.replace(' ', "+")));
    assert_eq!(
        state["first"].as_str().unwrap(),
        format!("chip {}", api["hits"][0]["chip_id"].as_str().unwrap())
    );
    assert!(state["geojson"].as_str().unwrap().contains("format=geojson"));
    let png = ureq::get(format!("{}/session/{}/screenshot", browser.url, browser.session))
        .call()
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(png["value"].as_str().unwrap()).unwrap();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    std::fs::write(&out, &bytes).unwrap();
    eprintln!("screenshot of the search page: {}", out.display());
    assert!(image::load_from_memory(&bytes).is_ok());
}
