//! The HTTP listener (`--http-listen`): Prometheus metrics, health and readiness, a JSON
//! API and a live status page, all read-only.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | counters, gauges and histograms in the Prometheus (OpenMetrics) text format |
//! | `/healthz` | 200 while the process serves HTTP at all |
//! | `/readyz` | 200 when locks are granted; 503 during the restart grace |
//! | `/api/status` | [`ServerStatus`](dlock_proto::status::ServerStatus) |
//! | `/api/resources?prefix=&cursor=&limit=` | a page of [`ResourcesView`](dlock_proto::status::ResourcesView) |
//! | `/api/sessions?cursor=&limit=` | a page of [`SessionsView`](dlock_proto::status::SessionsView) |
//! | `/api/waits` | [`WaitsView`](dlock_proto::status::WaitsView): wait-for edges, recent deadlock cycles |
//! | `/` | the status page (HTML, CSS and JS in the binary; it polls the JSON API) |
//!
//! Every answer comes from the core task through its inbox, like a client's query: it waits
//! its turn behind lock requests, and each is bounded (pages, a cap on edges), so no scrape
//! or page holds the engine for long. What the connection layer counts is read from shared
//! atomics without asking the core task.

mod api;
mod page;
mod prom;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::NetMetrics;
use crate::msg::{CoreMsg, StatusAnswer, StatusQuery};

/// How long an HTTP request waits for the core task before it is answered 503.
const CORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct HttpState {
    /// The core task's inbox.
    pub(crate) core_tx: mpsc::Sender<CoreMsg>,
    /// The connection layer's counters.
    pub(crate) net: Arc<NetMetrics>,
}

impl HttpState {
    /// Asks the core task `query`; 503 if it does not answer in time (or is gone).
    async fn ask(&self, query: StatusQuery) -> Result<StatusAnswer, StatusCode> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.core_tx
                .send(CoreMsg::Status { query, reply })
                .await
                .ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(CORE_TIMEOUT, asked).await {
            Ok(Some(a)) => Ok(a),
            _ => Err(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

/// The routes.
fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/status.js", get(page::script))
        .route("/status.css", get(page::style))
        .route("/metrics", get(prom::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(api::readyz))
        .route("/api/status", get(api::status))
        .route("/api/resources", get(api::resources))
        .route("/api/sessions", get(api::sessions))
        .route("/api/waits", get(api::waits))
        .with_state(state)
}

/// Serves HTTP on `listener` until `shutdown` is cancelled.
pub(crate) async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) {
    let app = router(Arc::new(state));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "HTTP listener failed");
    }
}
