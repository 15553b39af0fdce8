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
//! read (and change the membership). The listener speaks plain HTTP: keep it on loopback or
//! behind a TLS proxy.
//!
//! Against DNS rebinding, every path but `/healthz`, `/readyz` and `/metrics` is answered
//! only for a `Host` that is an IP address, `localhost` or a name of `--http-allowed-host`
//! ([`host`]); a request for another name gets `421`, before any token is looked at.
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
mod host;
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

pub(crate) use host::{AllowedHosts, parse_host_name};

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
    /// The host names answered for besides IP addresses and `localhost`.
    pub(crate) allowed_hosts: AllowedHosts,
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
        // After `authorize`: it runs first, so a page reached by DNS rebinding learns
        // nothing, not even whether a token is asked for.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .with_state(state)
}

/// Paths answered whatever host a request names. The probes: a load balancer or kubelet
/// often asks by DNS name, and they show no lock data and change nothing. `/metrics` too:
/// Prometheus scrapes a target by the name it was given (`static_configs`, DNS names), and
/// it shows only counts and gauges (no resource, session or client names, no addresses, only
/// node ids) and changes nothing; with `--auth-file` it still asks for a token.
fn answers_any_host(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Lets a request through if every host it names (its `Host` headers, and its URI's
/// authority in HTTP/2 or an absolute request target) is one
/// [`AllowedHosts::allows`]; 421 otherwise (see [`host`]). A request that names none
/// (HTTP/1.0 without `Host`) passes.
async fn check_host(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    if answers_any_host(request.uri().path()) {
        return next.run(request).await;
    }
    let headers = request
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(|v| v.to_str().ok());
    let authority = request.uri().authority().map(|a| Some(a.host()));
    for named in headers.chain(authority) {
        match named {
            Some(host) if state.allowed_hosts.allows(host) => {}
            _ => return misdirected(named).into_response(),
        }
    }
    next.run(request).await
}

/// The answer to a request for a host this listener does not answer for (`None`: a `Host`
/// header that is not text).
fn misdirected(host: Option<&str>) -> HttpError {
    let named = host.map_or_else(
        || "a Host header that is not text".to_owned(),
        |h| format!("the host {h:?}"),
    );
    HttpError::new(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "{named} is not one this listener answers for: against DNS rebinding it answers \
             only for IP addresses, localhost and the names given with --http-allowed-host NAME"
        ),
    )
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
        HttpAccess::Forbidden => HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "only the admins of --auth-rules may {}",
                forbidden_action(request.method(), request.uri().path())
            ),
        )
        .into_response(),
    }
}

/// What a request that only admins may make does, in the words of its 403: a membership
/// change for `POST` and `DELETE` on `/api/cluster`, a read for `GET` and `HEAD`.
fn forbidden_action(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (&Method::GET | &Method::HEAD, _) => "read this",
        (&Method::POST | &Method::DELETE, "/api/cluster") => "change the cluster's membership",
        _ => "send this request",
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
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::Config;
    use crate::core_task::run::test_support;

    /// The name a page reached through DNS rebinding sends as its `Host`.
    const REBOUND: &str = "rebind.attacker.example";

    /// The router of a single server in `dir` (its run loop spawned) that runs alone and
    /// answers for `allowed` too, served on loopback.
    async fn served(dir: &std::path::Path, allowed: &[&str]) -> SocketAddr {
        let (inbox, run, conn) = test_support::single_server(dir);
        tokio::spawn(run);
        let allowed: Vec<String> = allowed.iter().map(|&n| n.to_owned()).collect();
        let state = HttpState {
            core_tx: inbox,
            net: Arc::default(),
            security: Security::load(&Config::default()).unwrap(),
            cluster: None,
            allowed_hosts: AllowedHosts::new(&allowed),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _conn = conn;
            axum::serve(listener, router(Arc::new(state))).await
        });
        addr
    }

    /// Sends `method path` with `Host: host` (HTTP/1.1), or without a `Host` header (HTTP/1.0)
    /// when `host` is `None`; the status and the body.
    async fn ask(addr: SocketAddr, method: &str, path: &str, host: Option<&str>) -> (u16, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (version, host) = match host {
            Some(h) => ("1.1", format!("Host: {h}\r\n")),
            None => ("1.0", String::new()),
        };
        let head = format!(
            "{method} {path} HTTP/{version}\r\n{host}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok());
        let (_, body) = raw.split_once("\r\n\r\n").unwrap_or_default();
        (status.unwrap_or(0), body.to_owned())
    }

    /// Asserts that `method path` for `host` is refused as DNS rebinding: 421, one line
    /// naming the host and the option that allows a name.
    async fn assert_refused(addr: SocketAddr, method: &str, path: &str, host: &str) {
        let (status, body) = ask(addr, method, path, Some(host)).await;
        assert_eq!(status, 421, "{method} {path} for {host}: {body:?}");
        assert!(
            body.contains(&format!("{host:?}"))
                && body.contains("--http-allowed-host NAME")
                && body.ends_with('\n')
                && body.lines().count() == 1,
            "{method} {path} for {host}: {body:?}"
        );
    }

    #[tokio::test]
    async fn a_foreign_host_is_refused_on_the_api_the_page_and_cluster_changes() {
        let dir = tempfile::tempdir().unwrap();
        let addr = served(dir.path(), &["dlock.internal"]).await;
        let port = addr.port();
        for host in [
            REBOUND.to_owned(),
            format!("{REBOUND}:{port}"),
            format!("dlock.internal.{REBOUND}:{port}"),
            format!("127.0.0.1.{REBOUND}"),
        ] {
            for (method, path) in [
                ("GET", "/api/status"),
                ("GET", "/api/resources"),
                ("GET", "/api/sessions"),
                ("GET", "/api/cluster"),
                ("DELETE", "/api/cluster?id=3"),
                ("POST", "/api/cluster"),
                ("GET", "/"),
                ("GET", "/status.js"),
                ("GET", "/nowhere"),
            ] {
                assert_refused(addr, method, path, &host).await;
            }
        }
    }

    #[tokio::test]
    async fn ip_addresses_localhost_and_allowed_names_are_answered() {
        let dir = tempfile::tempdir().unwrap();
        let addr = served(dir.path(), &["dlock.internal"]).await;
        let port = addr.port();
        for host in [
            Some(format!("127.0.0.1:{port}")),
            Some("127.0.0.1".to_owned()),
            Some(format!("localhost:{port}")),
            Some("LOCALHOST".to_owned()),
            Some(format!("[::1]:{port}")),
            Some(format!("dlock.internal:{port}")),
            Some("Dlock.Internal".to_owned()),
            None,
        ] {
            let (status, body) = ask(addr, "GET", "/api/status", host.as_deref()).await;
            assert_eq!(status, 200, "{host:?}: {body:?}");
            // A membership change reaches its handler (a server that runs alone: 404).
            let (status, body) = ask(addr, "DELETE", "/api/cluster?id=3", host.as_deref()).await;
            assert_eq!(status, 404, "{host:?}: {body:?}");
            assert!(body.starts_with("not a cluster"), "{host:?}: {body:?}");
        }
        // The same server refuses a name it was not given.
        assert_refused(
            addr,
            "GET",
            "/api/status",
            &format!("other.internal:{port}"),
        )
        .await;
    }

    #[tokio::test]
    async fn the_probes_and_metrics_answer_for_any_host() {
        let dir = tempfile::tempdir().unwrap();
        let addr = served(dir.path(), &[]).await;
        for host in [REBOUND, "dlock-1.internal:7421"] {
            for path in ["/healthz", "/readyz", "/metrics"] {
                let (status, body) = ask(addr, "GET", path, Some(host)).await;
                assert_eq!(status, 200, "{path} for {host}: {body:?}");
            }
            // What they leave out is still refused.
            assert_refused(addr, "GET", "/api/status", host).await;
        }
    }

    #[test]
    fn a_403_names_what_was_refused() {
        let cluster = "/api/cluster";
        assert_eq!(forbidden_action(&Method::GET, cluster), "read this");
        assert_eq!(forbidden_action(&Method::HEAD, "/api/status"), "read this");
        for method in [Method::POST, Method::DELETE] {
            assert_eq!(
                forbidden_action(&method, cluster),
                "change the cluster's membership"
            );
        }
        assert_eq!(forbidden_action(&Method::PUT, cluster), "send this request");
    }

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
