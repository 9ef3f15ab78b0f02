//! The HTTP API: `GET /api/search` (JSON or GeoJSON), `GET /api/chips/{id}/thumbnail.png`,
//! `GET /api/info`, and the search page at `/`. Every parameter is checked and bounded; a
//! bad request gets a 4xx with a JSON `{"error": "..."}` naming the problem. No request
//! names a file: thumbnails are looked up by chip id in the index.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::live::LiveIndex;
use crate::error::AcfError;
use crate::search::engine::QueryResult;
use crate::search::{Filters, QueryOptions};

/// Bounds on what one request may ask.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest query text, in characters.
    pub max_query_chars: usize,
    /// Largest `k`.
    pub max_k: usize,
    /// Largest `candidates`.
    pub max_candidates: usize,
    /// Searches run at once (the others wait for a slot).
    pub concurrent_searches: usize,
    /// Thumbnails kept in memory.
    pub thumbnail_cache: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_query_chars: 500,
            max_k: 100,
            max_candidates: 10_000,
            concurrent_searches: 4,
            thumbnail_cache: 512,
        }
    }
}

/// Everything a request handler shares.
pub struct AppState {
    /// The query model (plain Rust, shared by every search).
    pub model: std::sync::Arc<crate::model::native::QueryModel>,
    pub index: LiveIndex,
    pub limits: Limits,
    searches: Semaphore,
    thumbnails: Mutex<ThumbnailCache>,
}

impl AppState {
    pub fn new(
        model: std::sync::Arc<crate::model::native::QueryModel>,
        index: LiveIndex,
        limits: Limits,
    ) -> AppState {
        AppState {
            model,
            index,
            searches: Semaphore::new(limits.concurrent_searches.max(1)),
            thumbnails: Mutex::new(ThumbnailCache::default()),
            limits,
        }
    }
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/search", get(search))
        .route("/api/info", get(info))
        .route("/api/chips/{id}/thumbnail.png", get(thumbnail))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page (see / and /api/search)") })
        .with_state(state)
}

/// A 4xx/5xx answer with a JSON body naming the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<AcfError> for ApiError {
    fn from(e: AcfError) -> ApiError {
        match e {
            // The query itself cannot be searched (only stop words, unknown words with
            // --strict, …): the client's to fix.
            e @ (AcfError::InvalidArgument(_) | AcfError::NoKnownWords { .. }) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            other => {
                tracing::error!("{other}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
                ),
            ),
        ],
        super::page::PAGE,
    )
}

/// `/api/search` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The query text.
    pub q: Option<String>,
    pub k: Option<usize>,
    pub candidates: Option<usize>,
    /// MINX,MINY,MAXX,MAXY in CRS84.
    pub bbox: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// A scene path glob.
    pub scene: Option<String>,
    /// A STAC collection.
    pub collection: Option<String>,
    pub strict: Option<bool>,
    /// `json` (default) or `geojson`.
    pub format: Option<String>,
}

/// Checks and bounds the parameters; the search options and whether GeoJSON was asked.
pub fn options(p: &SearchParams, limits: &Limits) -> Result<(String, QueryOptions, bool), ApiError> {
    let q = p.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::bad("q: give a query text, e.g. ?q=tennis+court+near+football+field"));
    }
    let chars = q.chars().count();
    if chars > limits.max_query_chars {
        return Err(ApiError::bad(format!(
            "q: {chars} characters, at most {} allowed",
            limits.max_query_chars
        )));
    }
    let k = p.k.unwrap_or(10);
    if k == 0 || k > limits.max_k {
        return Err(ApiError::bad(format!("k: {k} is outside 1..={}", limits.max_k)));
    }
    let candidates = p.candidates.unwrap_or(1000);
    if candidates == 0 || candidates > limits.max_candidates {
        return Err(ApiError::bad(format!(
            "candidates: {candidates} is outside 1..={}",
            limits.max_candidates
        )));
    }
    let bbox = p
        .bbox
        .as_deref()
        .map(crate::search::filters::parse_bbox)
        .transpose()
        .map_err(|e| ApiError::bad(format!("bbox: {e}")))?;
    let time = |name: &str, v: &Option<String>, parse: fn(&str) -> Result<i64, String>| {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(parse)
            .transpose()
            .map_err(|e| ApiError::bad(format!("{name}: {e}")))
    };
    let since = time("since", &p.since, crate::raster::timestamp::parse_since)?;
    let until = time("until", &p.until, crate::raster::timestamp::parse_until)?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::bad("since is later than until: no chip can match"));
    }
    let short = |name: &str, v: &Option<String>| -> Result<Vec<String>, ApiError> {
        match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(Vec::new()),
            Some(s) if s.chars().count() > 200 => {
                Err(ApiError::bad(format!("{name}: at most 200 characters")))
            }
            Some(s) => Ok(vec![s.to_string()]),
        }
    };
    let scenes =
        Filters::scene_globs(&short("scene", &p.scene)?).map_err(|e| ApiError::bad(format!("scene: {e}")))?;
    let geojson = match p.format.as_deref().unwrap_or("json") {
        "json" => false,
        "geojson" => true,
        other => return Err(ApiError::bad(format!("format: '{other}' is not json or geojson"))),
    };
    let opts = QueryOptions {
        top_k: k,
        candidates: candidates.max(k),
        filters: Filters {
            bbox,
            scenes,
            since_us: since,
            until_us: until,
            collections: short("collection", &p.collection)?,
        },
        exhaustive: false,
        strict: p.strict.unwrap_or(false),
    };
    Ok((q.to_string(), opts, geojson))
}

async fn search(
    State(state): State<Arc<AppState>>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad(e.body_text()))?;
    let (q, opts, geojson) = options(&params, &state.limits)?;
    let _slot = state
        .searches
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"))?;
    let worker = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let snap = worker.index.snapshot();
        crate::search::served::search_snapshot(&worker.model, &snap, &q, &opts)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("search failed: {e}")))??;
    let body = if geojson {
        crate::search::output::geojson(std::slice::from_ref(&result))?
    } else {
        result_json(&result)?
    };
    let content_type = if geojson { "application/geo+json" } else { "application/json" };
    Ok(([(header::CONTENT_TYPE, content_type)], body.to_string()).into_response())
}

/// The JSON answer: the query as read, timings, and each hit with the fields of
/// `query --format json`, its footprint as GeoJSON and its thumbnail URL.
fn result_json(r: &QueryResult) -> Result<Value, AcfError> {
    let mut hits = Vec::with_capacity(r.hits.len());
    for h in &r.hits {
        let mut v = serde_json::to_value(h)
            .map_err(|e| AcfError::Serialize { what: format!("hit {}", h.chip_id), reason: e.to_string() })?;
        v["geometry"] = crate::search::output::geometry(h).unwrap_or(Value::Null);
        v["thumbnail"] = json!(format!("/api/chips/{}/thumbnail.png", h.chip_id));
        hits.push(v);
    }
    Ok(json!({
        "query": r.query,
        "tokens": r.tokens,
        "mappings": r.mappings,
        "unknown_words": r.unknown_words,
        "chips_scanned": r.chips_scanned,
        "scored": r.scored,
        "stage1_ms": r.stage1_ms,
        "stage2_ms": r.stage2_ms,
        "hits": hits,
    }))
}

async fn info(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let snap = state.index.snapshot();
    let loaded = state.index.loaded_at().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    axum::Json(json!({
        "chips": snap.chips(),
        "scenes": snap.slices.len(),
        "damaged_scenes": snap.damaged.len(),
        "part_files": snap.part_files(),
        "model": state.model.config.name,
        "model_fingerprint": state.model.fingerprint,
        "loaded_at": loaded,
        "limits": {
            "max_query_chars": state.limits.max_query_chars,
            "max_k": state.limits.max_k,
            "max_candidates": state.limits.max_candidates,
        },
    }))
}

/// A chip id as the index writes them (`<scene id>_<col>_<row>`): anything else is refused
/// before any lookup.
fn valid_chip_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

async fn thumbnail(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    if !valid_chip_id(&id) {
        return Err(ApiError::bad("chip id: letters, digits, '_' and '-' only, at most 128"));
    }
    let cached = state.thumbnails.lock().ok().and_then(|c| c.get(&id));
    let png = match cached {
        Some(png) => png,
        None => {
            let snap = state.index.snapshot();
            let (slice, row) = snap
                .find(&id)
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no chip {id} in the index")))?;
            let scene = slice.part.scene(row).to_string();
            let window = slice.part.chips[row].window;
            let png = tokio::task::spawn_blocking(move || render(&scene, window)).await.map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("thumbnail failed: {e}"))
            })??;
            let png: Arc<[u8]> = Arc::from(png);
            if let Ok(mut c) = state.thumbnails.lock() {
                c.put(id, png.clone(), state.limits.thumbnail_cache);
            }
            png
        }
    };
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "max-age=3600")], png.to_vec())
        .into_response())
}

#[cfg(feature = "gdal")]
fn render(scene: &str, window: [i32; 4]) -> Result<Vec<u8>, ApiError> {
    crate::search::thumbnails::chip_png(scene, window, 224).map_err(|e| {
        tracing::warn!("{e}");
        ApiError::new(StatusCode::NOT_FOUND, format!("the chip's scene cannot be read: {e}"))
    })
}

#[cfg(not(feature = "gdal"))]
fn render(_scene: &str, _window: [i32; 4]) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "thumbnails need GDAL (cargo feature `gdal`)"))
}

/// The last thumbnails made, oldest evicted first.
#[derive(Default)]
struct ThumbnailCache {
    map: HashMap<String, Arc<[u8]>>,
    order: VecDeque<String>,
}

impl ThumbnailCache {
    fn get(&self, id: &str) -> Option<Arc<[u8]>> {
        self.map.get(id).cloned()
    }

    fn put(&mut self, id: String, png: Arc<[u8]>, capacity: usize) {
        if self.map.insert(id.clone(), png).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> SearchParams {
        SearchParams {
            q: Some(q.into()),
            k: None,
            candidates: None,
            bbox: None,
            since: None,
            until: None,
            scene: None,
            collection: None,
            strict: None,
            format: None,
        }
    }

    #[test]
    fn requests_are_bounded_and_errors_name_the_parameter() {
        let l = Limits::default();
        assert!(options(&params("tennis court"), &l).is_ok());
        let err = |p: SearchParams| options(&p, &l).err().map(|e| e.message).unwrap_or_default();
        assert!(err(params("  ")).starts_with("q:"));
        assert!(err(params(&"a".repeat(501))).contains("501 characters"));
        assert!(err(SearchParams { k: Some(0), ..params("x") }).starts_with("k:"));
        assert!(err(SearchParams { k: Some(101), ..params("x") }).starts_with("k:"));
        assert!(err(SearchParams { candidates: Some(1_000_000), ..params("x") }).starts_with("candidates:"));
        assert!(err(SearchParams { bbox: Some("1,2,3".into()), ..params("x") }).starts_with("bbox:"));
        assert!(err(SearchParams { bbox: Some("0,0,1,NaN".into()), ..params("x") }).starts_with("bbox:"));
        assert!(err(SearchParams { since: Some("yesterday".into()), ..params("x") }).starts_with("since:"));
        let late = SearchParams {
            since: Some("2021-01-01".into()),
            until: Some("2020-01-01".into()),
            ..params("x")
        };
        assert!(err(late).contains("later"));
        assert!(err(SearchParams { format: Some("xml".into()), ..params("x") }).starts_with("format:"));
        // k above the candidates raises the candidates, like the CLI.
        let (_, o, _) =
            options(&SearchParams { k: Some(50), candidates: Some(10), ..params("x") }, &l).unwrap();
        assert_eq!(o.candidates, 50);
    }

    #[test]
    fn chip_ids_that_could_name_a_file_are_refused() {
        assert!(valid_chip_id("6cd714bdc916c739_224_448"));
        for bad in ["", "../etc/passwd", "a/b", "a.png", "%2e%2e", &"x".repeat(129)] {
            assert!(!valid_chip_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_thumbnail_cache_is_bounded() {
        let mut c = ThumbnailCache::default();
        for i in 0..5 {
            c.put(format!("c{i}"), Arc::from(vec![i as u8]), 3);
        }
        assert!(c.get("c0").is_none() && c.get("c1").is_none());
        assert_eq!(c.get("c4").as_deref(), Some(&[4u8][..]));
    }
}
