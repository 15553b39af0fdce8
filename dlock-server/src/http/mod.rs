//! The HTTP listener (`--http-listen`): Prometheus metrics, health and readiness, a JSON
//! API and a live status page, all read-only but for a cluster's membership changes.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | counters, gauges and histograms in the Prometheus (OpenMetrics) text format |
//! | `/healthz` | 200 while the process serves HTTP at all |
//! | `/readyz` | 200 when locks are granted; 503 during the restart grace |
//! | `/api/status` | [`ServerStatus`](dlock_proto::status::ServerStatus); on a cluster member with its `role` and `membership` (`removed`: taken out of the cluster) |
//! | `/api/resources?prefix=&cursor=&limit=` | a page of [`ResourcesView`](dlock_proto::status::ResourcesView); `cursor` is the previous page's `next_cursor`, or `cursor_hex=` in its place the previous page's `next_cursor_hex` (the name's bytes, which `cursor` cannot give for a name that is not UTF-8); `prefix_hex=` likewise gives a prefix's bytes in hexadecimal |
//! | `/api/sessions?cursor=&limit=` | a page of [`SessionsView`](dlock_proto::status::SessionsView) |
//! | `/api/waits` | [`WaitsView`](dlock_proto::status::WaitsView): wait-for edges, recent deadlock cycles |
//! | `/api/cluster` | [`ClusterView`](dlock_proto::status::ClusterView); `404` on a server that runs alone; in a cluster, `POST` adds a member and `DELETE ?id=N` removes one (on the leader) |
//! | `/` | the status page (HTML, CSS and JS in the binary; it polls the JSON API) |
//!
//! Every error answer (4xx, 5xx) has a plain-text body of one line saying why, as
//! [`HttpError`] writes it: a bad parameter, an unknown path or method, a lock engine that
//! does not answer in time.
//!
//! On a server that authenticates clients (`--auth-file`), everything but `/healthz`,
//! `/readyz` and the page's script and style sheet asks for a token, as
//! `Authorization: Bearer TOKEN` (Prometheus' `authorization` setting) or as the password of
//! HTTP Basic authentication (what a browser asks for); with `--auth-rules`, only admins may
//! read. The listener speaks plain HTTP: keep it on loopback or behind a TLS proxy.
//!
//! At most [`Config::http_max_connections`](crate::Config::http_max_connections) connections
//! are open at once (further ones wait in the kernel's backlog until one closes), and a
//! connection is closed once it has sent nothing for 10 s, when a request head has not
//! arrived 2 s after it opened or after the previous answer, or once it has been open 60 s
//! (see [`limits`]).
//!
//! Every answer comes from the core task through its inbox, like a client's query: it waits
//! its turn behind lock requests, and each is bounded (pages, a cap on edges), so no scrape
//! or page holds the engine for long. What the connection layer counts is read from shared
//! atomics without asking the core task.

mod api;
mod limits;
mod members;
mod page;
mod prom;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Security;
use crate::core_task::run::CoreInbox;
use crate::metrics::NetMetrics;
use crate::msg::{CoreMsg, StatusAnswer, StatusQuery};
use crate::security::HttpAccess;

/// How long an HTTP request waits for the core task before it is answered 503.
const CORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct HttpState {
    /// The core task's inbox.
    pub(crate) core_tx: CoreInbox,
    /// The connection layer's counters.
    pub(crate) net: Arc<NetMetrics>,
    /// Who may read the pages.
    pub(crate) security: Arc<Security>,
    /// In a cluster: the node's sequencer (cluster view, membership changes).
    pub(crate) cluster: Option<dlock_raft::Sequencer>,
}

impl HttpState {
    /// Asks the core task `query`; 503 if it does not answer in time (or is gone).
    async fn ask(&self, query: StatusQuery) -> Result<StatusAnswer, HttpError> {
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
            _ => Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the lock engine did not answer in time (overloaded or shutting down); try again",
            )),
        }
    }
}

/// An error answer: a status and a plain-text body of one line, the format of every error
/// this listener gives, so that `curl` and a script's log show why a request failed.
#[derive(Debug)]
pub(crate) struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    /// An error answer with `status`, saying `message` (without the final newline).
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }

    /// A 400 saying `message`.
    pub(crate) fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 500: the core task answered a query with an answer to another (a bug).
    pub(crate) fn unexpected_answer() -> HttpError {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the lock engine gave an unexpected answer",
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

impl From<QueryRejection> for HttpError {
    fn from(e: QueryRejection) -> HttpError {
        // axum's text ("Failed to deserialize query string: limit: invalid digit ...") in the
        // words of this server's other answers.
        let text = e.body_text();
        let why = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        HttpError::new(e.status(), format!("bad query parameter: {why}"))
    }
}

impl From<JsonRejection> for HttpError {
    fn from(e: JsonRejection) -> HttpError {
        HttpError::new(e.status(), e.body_text())
    }
}

/// Any path the listener does not serve: 404, naming the paths it does.
async fn no_such_path(uri: Uri) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such path: {}; this listener serves /, /metrics, /healthz, /readyz, \
             /api/status, /api/resources, /api/sessions, /api/waits and /api/cluster",
            uri.path()
        ),
    )
}

/// A method a path does not take (`POST /api/status`): 405 (axum adds the `Allow` header).
async fn no_such_method(method: Method, uri: Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; the Allow header lists the methods it takes",
            uri.path()
        ),
    )
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
        .route(
            "/api/cluster",
            get(members::cluster)
                .post(members::add)
                .delete(members::remove),
        )
        // After the routes: it applies to those added before it.
        .method_not_allowed_fallback(no_such_method)
        .fallback(no_such_path)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// Paths anyone may read: the probes, and the page's script and style (which hold no data).
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/status.js" | "/status.css")
}

/// Lets a request through if [`Security::http_reader`] allows its token; 401 (asking for
/// Basic authentication, so that a browser prompts) or 403 otherwise.
async fn authorize(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token_of);
    match state.security.http_reader(token.as_deref()) {
        HttpAccess::Allowed => next.run(request).await,
        HttpAccess::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                r#"Basic realm="dlock", charset="UTF-8""#,
            )],
            "a token is needed: Authorization: Bearer TOKEN, or the token as the password\n",
        )
            .into_response(),
        HttpAccess::Forbidden => (
            StatusCode::FORBIDDEN,
            "only the admins of --auth-rules may read this\n",
        )
            .into_response(),
    }
}

/// The token in an `Authorization` header: `Bearer TOKEN`, or `Basic` with the token as the
/// password (any user name).
fn token_of(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_owned());
    }
    None
}

/// Serves HTTP on `listener`, at most `max_connections` at once, until `shutdown` is
/// cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    max_connections: usize,
    state: HttpState,
    shutdown: CancellationToken,
) {
    let app = router(Arc::new(state));
    let listener = limits::LimitedListener::new(listener, max_connections);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "HTTP listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_bearer_and_basic_headers() {
        assert_eq!(token_of("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token_of("bearer  abc ").as_deref(), Some("abc"));
        // "ops:s3cret:x" -> user "ops", password "s3cret:x".
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:s3cret:x");
        assert_eq!(
            token_of(&format!("Basic {basic}")).as_deref(),
            Some("s3cret:x")
        );
        assert_eq!(token_of("Basic !!!"), None);
        assert_eq!(token_of("Digest abc"), None);
        assert_eq!(token_of("Bearer"), None);
    }
}
