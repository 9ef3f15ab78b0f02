//! `acf-index serve`: a long-running search server over one index. It holds the model, the
//! part files' metadata and every chip's `global` vector in memory ([`live::LiveIndex`]),
//! picks up scenes that `index` publishes (it looks every `refresh` interval and swaps the
//! whole snapshot), answers a JSON/GeoJSON API and serves the search page. Read-only: it
//! never writes into the index. Binds 127.0.0.1 unless told otherwise.

pub mod api;
pub mod live;
pub mod page;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{AcfError, Result};
use crate::model::model_dir::ModelDir;

pub use api::Limits;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub index: PathBuf,
    pub addr: SocketAddr,
    /// How often to look for newly published scenes.
    pub refresh: Duration,
    pub limits: Limits,
}

/// Serves until SIGINT or SIGTERM; `ready` is called with the bound address once the
/// index is loaded and the socket listens.
pub fn serve(model: ModelDir, opts: &ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let index = live::LiveIndex::open(&opts.index, &model)?;
    let models = ModelPool::new(model, opts.limits.concurrent_searches)?;
    let state = Arc::new(api::AppState::new(models, index, opts.limits.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("acf-serve")
        .build()
        .map_err(|e| AcfError::Thread(format!("cannot start the server runtime: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(opts.addr).await.map_err(|e| AcfError::Io {
            path: PathBuf::from(opts.addr.to_string()),
            what: "cannot listen (is another server on this address?)",
            source: e,
        })?;
        let bound =
            listener.local_addr().map_err(|e| AcfError::io(opts.addr.to_string(), "cannot listen on", e))?;
        let refresher = {
            let state = state.clone();
            let every = opts.refresh;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let s = state.clone();
                    match tokio::task::spawn_blocking(move || s.index.refresh()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::error!("cannot refresh the index (still serving the last one): {e}")
                        }
                        Err(e) => tracing::error!("index refresh failed: {e}"),
                    }
                }
            })
        };
        ready(bound);
        let app = api::router(state);
        let served = axum::serve(listener, app).with_graceful_shutdown(stop_signal()).await;
        refresher.abort();
        served.map_err(|e| AcfError::io(bound.to_string(), "server failed", e))
    })
}

/// One copy of the model per concurrent search: libtorch tensors may move between threads
/// but not be shared, so each search borrows a copy for its run.
pub struct ModelPool {
    models: Vec<Mutex<ModelDir>>,
    /// The model's name and fingerprint (for `/api/info`).
    pub name: String,
    pub fingerprint: String,
}

impl ModelPool {
    /// `model` and `copies - 1` more loaded from its directory (which must not change).
    pub fn new(model: ModelDir, copies: usize) -> Result<ModelPool> {
        let (name, fingerprint) = (model.config().name.clone(), model.fingerprint.clone());
        let mut models = Vec::with_capacity(copies.max(1));
        for _ in 1..copies.max(1) {
            let copy = ModelDir::load(&model.dir, model.model.device())?;
            if copy.fingerprint != fingerprint {
                return Err(AcfError::ModelMismatch {
                    path: model.dir.clone(),
                    reason: "model.safetensors changed while the server was loading it".into(),
                });
            }
            models.push(Mutex::new(copy));
        }
        models.push(Mutex::new(model));
        Ok(ModelPool { models, name, fingerprint })
    }

    /// Runs `f` with a free copy (waits for one when all are busy).
    pub fn with<R>(&self, f: impl FnOnce(&ModelDir) -> R) -> R {
        for m in &self.models {
            if let Ok(model) = m.try_lock() {
                return f(&model);
            }
        }
        let model = self.models[0].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&model)
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stopping: finishing the requests in flight");
}
