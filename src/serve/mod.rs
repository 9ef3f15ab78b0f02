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
use std::sync::Arc;
use std::time::Duration;

use crate::error::{AcfError, Result};
use crate::model::native::QueryModel;

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
pub fn serve(model: QueryModel, opts: &ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let model = Arc::new(model);
    let index = live::LiveIndex::open(&opts.index, model.clone())?;
    let state = Arc::new(api::AppState::new(model, index, opts.limits.clone()));
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
