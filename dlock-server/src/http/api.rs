//! The JSON API and `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dlock_core::SessionId;
use dlock_proto::status::{ResourcesView, ServerStatus, SessionsView, WaitsView};
use serde::Deserialize;

use super::{HttpError, HttpState};
use crate::metrics::NetMetrics;
use crate::msg::{StatusAnswer, StatusQuery};

/// Resources per page when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// `/readyz`: 200 when locks are granted, 503 during the restart grace and on a cluster
/// member that does not lead, saying which.
pub(super) async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    match state.ask(StatusQuery::Metrics).await {
        Ok(StatusAnswer::Metrics(s)) => match s.unready {
            None => (StatusCode::OK, "ready\n").into_response(),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            )
                .into_response(),
        },
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: unexpected answer\n",
        )
            .into_response(),
        Err(e) => (e.status, "not ready: lock engine not answering\n").into_response(),
    }
}

/// The parameters `/api/resources` takes.
const RESOURCES_PARAMS: &[&str] = &["prefix", "prefix_hex", "cursor", "cursor_hex", "limit"];

/// The parameters `/api/sessions` takes.
const SESSIONS_PARAMS: &[&str] = &["cursor", "limit"];

/// The parameters that are text, each with its `_hex` form for bytes that are not UTF-8.
const TEXT_PARAMS: &[&str] = &["prefix", "cursor"];

/// Checks the query string `raw` of a request for `path` before it is read: a parameter
/// that `path` does not take (`takes`), or a text parameter whose percent-decoded bytes are
/// not UTF-8 (which the query extractor would read lossily), is a bad request naming it.
pub(super) fn check_query(path: &str, raw: Option<&str>, takes: &[&str]) -> Result<(), HttpError> {
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = String::from_utf8_lossy(&percent_decode(key)).into_owned();
        if !takes.contains(&key.as_str()) {
            let known = match takes {
                [] => "no parameters".to_owned(),
                [one] => one.to_string(),
                [first @ .., last] => format!("{} and {last}", first.join(", ")),
            };
            return Err(HttpError::bad_request(format!(
                "unknown query parameter {key:?}: {path} takes {known}"
            )));
        }
        if TEXT_PARAMS.contains(&key.as_str())
            && std::str::from_utf8(&percent_decode(value)).is_err()
        {
            return Err(HttpError::bad_request(format!(
                "{key} is not UTF-8 once percent-decoded: give its bytes in hexadecimal as {key}_hex="
            )));
        }
    }
    Ok(())
}

/// The bytes of a query string's key or value: `+` is a space and `%XX` a byte, as the query
/// extractor reads them (a `%` not followed by two hexadecimal digits stays as it is).
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let digit = |i: usize| bytes.get(i).and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], digit(i + 1), digit(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hexadecimal digits: at most 255.
                out.push(u8::try_from(high * 16 + low).unwrap_or(u8::MAX));
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// `/api/status`.
pub(super) async fn status(
    State(state): State<Arc<HttpState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ServerStatus>, HttpError> {
    check_query("/api/status", raw.as_deref(), &[])?;
    match state.ask(StatusQuery::Status).await? {
        StatusAnswer::Status(mut s) => {
            s.connections = NetMetrics::get(&state.net.open);
            if let Some(cluster) = state.cluster.as_ref().map(dlock_raft::Sequencer::status) {
                s.role = Some(cluster.role);
                s.membership = Some(cluster.standing);
            }
            Ok(Json(*s))
        }
        _ => Err(HttpError::unexpected_answer()),
    }
}

/// The parameters of `/api/resources`.
#[derive(Debug, Deserialize)]
pub(super) struct ResourcesParams {
    /// Names starting with this (all by default).
    prefix: Option<String>,
    /// The prefix as bytes in hexadecimal, for one that `prefix` (text) cannot give.
    prefix_hex: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// The `next_cursor_hex` of the previous page: the name's bytes in hexadecimal, for a
    /// name that `cursor` (text) cannot give.
    cursor_hex: Option<String>,
    /// Most resources (capped by the server).
    limit: Option<usize>,
}

/// The bytes a parameter gives as text (`name`) or in hexadecimal (`name_hex`, for bytes
/// that are not UTF-8): giving both, or hex that is not pairs of hexadecimal digits, is a bad
/// request.
fn text_or_hex(
    name: &str,
    text: Option<String>,
    hex: Option<String>,
) -> Result<Option<Vec<u8>>, HttpError> {
    match (text, hex) {
        (Some(_), Some(_)) => Err(HttpError::bad_request(format!(
            "give {name} or {name}_hex, not both"
        ))),
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(hex)) => dlock_proto::from_hex(&hex).map(Some).ok_or_else(|| {
            HttpError::bad_request(format!(
                "{name}_hex must be pairs of hexadecimal digits (the bytes of the {name})"
            ))
        }),
        (None, None) => Ok(None),
    }
}

/// A page's `limit` parameter: the default when absent; 0 (a page of nothing) is a bad
/// request.
fn page_limit(limit: Option<usize>) -> Result<usize, HttpError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(HttpError::bad_request(
            "limit must be at least 1 (leave it out for pages of 100)",
        )),
        Some(n) => Ok(n),
    }
}

/// `/api/resources`.
pub(super) async fn resources(
    State(state): State<Arc<HttpState>>,
    RawQuery(raw): RawQuery,
    query: Result<Query<ResourcesParams>, QueryRejection>,
) -> Result<Json<ResourcesView>, HttpError> {
    check_query("/api/resources", raw.as_deref(), RESOURCES_PARAMS)?;
    let Query(p) = query?;
    let query = StatusQuery::Resources {
        after: text_or_hex("cursor", p.cursor, p.cursor_hex)?,
        prefix: text_or_hex("prefix", p.prefix, p.prefix_hex)?.unwrap_or_default(),
        limit: page_limit(p.limit)?,
    };
    match state.ask(query).await? {
        StatusAnswer::Resources(v) => Ok(Json(v)),
        _ => Err(HttpError::unexpected_answer()),
    }
}

/// The parameters of `/api/sessions`.
#[derive(Debug, Deserialize)]
pub(super) struct SessionsParams {
    /// The `next_cursor` of the previous page.
    cursor: Option<u64>,
    /// Most sessions (capped by the server).
    limit: Option<usize>,
}

/// `/api/sessions`.
pub(super) async fn sessions(
    State(state): State<Arc<HttpState>>,
    RawQuery(raw): RawQuery,
    query: Result<Query<SessionsParams>, QueryRejection>,
) -> Result<Json<SessionsView>, HttpError> {
    check_query("/api/sessions", raw.as_deref(), SESSIONS_PARAMS)?;
    let Query(p) = query?;
    let query = StatusQuery::Sessions {
        after: p.cursor.map(SessionId),
        limit: page_limit(p.limit)?,
    };
    match state.ask(query).await? {
        StatusAnswer::Sessions(v) => Ok(Json(v)),
        _ => Err(HttpError::unexpected_answer()),
    }
}

/// `/api/waits`.
pub(super) async fn waits(
    State(state): State<Arc<HttpState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<WaitsView>, HttpError> {
    check_query("/api/waits", raw.as_deref(), &[])?;
    match state.ask(StatusQuery::Waits).await? {
        StatusAnswer::Waits(v) => Ok(Json(v)),
        _ => Err(HttpError::unexpected_answer()),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Uri;
    use dlock_proto::{EventKind, LockRequest, Mode, Request, RequestId, ServerMessage};
    use tokio::sync::Semaphore;
    use tokio::time::Instant;

    use super::*;
    use crate::Config;
    use crate::core_task::run::test_support;
    use crate::msg::CoreMsg;
    use crate::security::Security;

    /// The HTTP state of a single server in `dir` (its run loop spawned) where one session
    /// holds a PR lock on each of `names`.
    async fn server_holding(dir: &std::path::Path, names: &[&[u8]]) -> Arc<HttpState> {
        let (inbox, run, conn) = test_support::single_server(dir);
        tokio::spawn(run);
        let security = Security::load(&Config::default()).unwrap();
        let (hello, welcome) = test_support::hello(&conn, "pages");
        inbox.send(hello).await.unwrap();
        let (session, done) = test_support::welcomed(&conn, welcome.await);
        inbox.send(done).await.unwrap();
        let slots = Arc::new(Semaphore::new(names.len()));
        for (id, name) in (1..).zip(names) {
            let lock = CoreMsg::Request {
                session,
                conn: conn.id,
                id: RequestId(id),
                body: Request::Lock(LockRequest::new(name.to_vec(), Mode::PR)),
                slot: slots.clone().try_acquire_owned().unwrap(),
                received: Instant::now(),
            };
            inbox.send(lock).await.unwrap();
        }
        // Every lock granted (the engine may apply them after this task sent them).
        let mut granted = 0;
        while granted < names.len() {
            for msg in conn.outbox.take().await {
                if let ServerMessage::Event { event, .. } = msg {
                    assert!(matches!(event.kind, EventKind::Granted { .. }), "{event:?}");
                    granted += 1;
                }
            }
        }
        Arc::new(HttpState {
            core_tx: inbox,
            net: Arc::default(),
            security,
            cluster: None,
            allowed_hosts: crate::http::AllowedHosts::default(),
        })
    }

    /// `GET path` (`/api/resources?...`) as the router hands it to the handler.
    async fn get(state: &Arc<HttpState>, path: &str) -> Result<ResourcesView, HttpError> {
        let uri: Uri = path.parse().unwrap();
        let query = Query::<ResourcesParams>::try_from_uri(&uri);
        let raw = RawQuery(uri.query().map(str::to_owned));
        resources(State(state.clone()), raw, query)
            .await
            .map(|j| j.0)
    }

    /// The bytes of a resource as a page shows it.
    fn name_of(r: &dlock_proto::status::ResourceView) -> Vec<u8> {
        match &r.name_hex {
            Some(hex) => dlock_proto::from_hex(hex).unwrap(),
            None => r.name.clone().into_bytes(),
        }
    }

    #[tokio::test]
    async fn pages_by_cursor_hex_go_on_after_a_name_that_is_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let names: [&[u8]; 4] = [b"a", b"b\xff", b"b\xff\x00c", b"c"];
        let state = server_holding(dir.path(), &names).await;
        let mut path = "/api/resources?limit=1".to_owned();
        let mut seen = Vec::new();
        // One page per resource, and a bound in case a cursor does not advance.
        for _ in 0..=names.len() {
            let page = get(&state, &path).await.unwrap();
            seen.extend(page.resources.iter().map(name_of));
            let Some(hex) = page.next_cursor_hex else {
                assert_eq!(page.next_cursor, None);
                break;
            };
            assert!(page.next_cursor.is_some());
            path = format!("/api/resources?limit=1&cursor_hex={hex}");
        }
        assert_eq!(seen, names);

        // Upper case digits too.
        let page = get(&state, "/api/resources?limit=1&cursor_hex=62FF").await;
        assert_eq!(name_of(&page.unwrap().resources[0]), b"b\xff\x00c");
    }

    #[tokio::test]
    async fn a_page_stays_under_a_mebibyte_of_json_whatever_the_names() {
        let dir = tempfile::tempdir().unwrap();
        // Names of control characters, each six bytes in JSON.
        let names: Vec<Vec<u8>> = (0..400u32)
            .map(|i| {
                let mut n = format!("{i:04}").into_bytes();
                n.resize(1_000, 1);
                n
            })
            .collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let state = server_holding(dir.path(), &refs).await;
        let page = get(&state, "/api/resources?limit=500").await.unwrap();
        let json = serde_json::to_vec(&page).unwrap();
        assert!(json.len() <= 1 << 20, "{} bytes", json.len());
        assert!(
            page.next_cursor.is_some(),
            "cut short, with a cursor to go on"
        );
        assert!(!page.resources.is_empty());
    }

    #[tokio::test]
    async fn a_bad_cursor_hex_is_a_bad_request() {
        let dir = tempfile::tempdir().unwrap();
        let state = server_holding(dir.path(), &[b"a"]).await;
        for (query, says) in [
            ("cursor_hex=6", "hexadecimal"),
            ("cursor_hex=zz", "hexadecimal"),
            ("cursor_hex=%C3%A9", "hexadecimal"),
            ("cursor=a&cursor_hex=61", "not both"),
        ] {
            let e = get(&state, &format!("/api/resources?{query}"))
                .await
                .expect_err(query);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{query}");
            assert!(e.message.contains(says), "{query}: {}", e.message);
        }
        // An empty cursor_hex is the empty name, before every other.
        let page = get(&state, "/api/resources?cursor_hex=").await.unwrap();
        assert_eq!(page.resources.len(), 1);
        for (query, says) in [
            (
                "prefix_hex=f",
                "prefix_hex must be pairs of hexadecimal digits",
            ),
            (
                "prefix=a&prefix_hex=61",
                "give prefix or prefix_hex, not both",
            ),
        ] {
            let e = get(&state, &format!("/api/resources?{query}"))
                .await
                .expect_err(query);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{query}");
            assert!(e.message.contains(says), "{query}: {}", e.message);
        }
    }

    #[tokio::test]
    async fn a_prefix_that_is_not_utf8_is_asked_for_in_hex() {
        let dir = tempfile::tempdir().unwrap();
        let names: [&[u8]; 3] = [b"b\xff", b"b\xff\x00c", b"b\xfe"];
        let state = server_holding(dir.path(), &names).await;
        let page = get(&state, "/api/resources?prefix_hex=62ff").await.unwrap();
        let seen: Vec<Vec<u8>> = page.resources.iter().map(name_of).collect();
        assert_eq!(seen, [&b"b\xff"[..], b"b\xff\x00c"]);
        // The text form still works, and no prefix lists them all.
        let page = get(&state, "/api/resources?prefix=b").await.unwrap();
        assert_eq!(page.resources.len(), 3);
        let page = get(&state, "/api/resources").await.unwrap();
        assert_eq!(page.resources.len(), 3);
    }

    #[tokio::test]
    async fn a_text_parameter_that_is_not_utf8_is_refused_pointing_to_its_hex_form() {
        let dir = tempfile::tempdir().unwrap();
        let state = server_holding(dir.path(), &[b"\xffa"]).await;
        for (query, param) in [("prefix=%FF", "prefix"), ("cursor=a%C3", "cursor")] {
            let e = get(&state, &format!("/api/resources?{query}"))
                .await
                .expect_err(query);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{query}");
            let says = format!(
                "{param} is not UTF-8 once percent-decoded: give its bytes in hexadecimal as \
                 {param}_hex="
            );
            assert_eq!(e.message, says, "{query}");
        }
        // The hex form finds the name; UTF-8 text, '+' and a stray '%' pass.
        let page = get(&state, "/api/resources?prefix_hex=ff").await.unwrap();
        assert_eq!(page.resources.len(), 1);
        for query in ["prefix=%C3%A9", "prefix=a+b", "prefix=%zz", "prefix=%"] {
            let page = get(&state, &format!("/api/resources?{query}")).await;
            assert!(page.unwrap().resources.is_empty(), "{query}");
        }
        let page = get(&state, "/api/resources?&&limit=2&").await.unwrap();
        assert_eq!(page.resources.len(), 1);
    }

    #[tokio::test]
    async fn an_unknown_query_parameter_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = server_holding(dir.path(), &[b"a"]).await;
        for (query, param) in [
            ("cursorhex=00", "cursorhex"),
            ("limit=1&Prefix=a", "Prefix"),
            ("prefix%5Fhe%78", "prefix_hex"),
            ("prefix_he%78=61", "prefix_hex"),
        ] {
            let result = get(&state, &format!("/api/resources?{query}")).await;
            if param == "prefix_hex" {
                // Percent-encoded, a known name is still known.
                result.unwrap();
                continue;
            }
            let e = result.expect_err(query);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(
                e.message,
                format!(
                    "unknown query parameter {param:?}: /api/resources takes prefix, \
                     prefix_hex, cursor, cursor_hex and limit"
                ),
                "{query}"
            );
        }
        // The parameters the status page sends are taken.
        get(&state, "/api/resources?limit=200&prefix=")
            .await
            .unwrap();
        let params = || {
            Ok(Query(SessionsParams {
                cursor: None,
                limit: Some(500),
            }))
        };
        let raw = RawQuery(Some("limit=500".into()));
        let page = sessions(State(state.clone()), raw, params()).await.unwrap();
        assert_eq!(page.0.sessions.len(), 1);
        let raw = RawQuery(Some("limit=500&page=2".into()));
        let e = sessions(State(state.clone()), raw, params())
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "unknown query parameter \"page\": /api/sessions takes cursor and limit"
        );
        let raw = || RawQuery(Some("verbose=1".into()));
        let e = status(State(state.clone()), raw()).await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "unknown query parameter \"verbose\": /api/status takes no parameters"
        );
        let e = waits(State(state.clone()), raw()).await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let st = status(State(state.clone()), RawQuery(None)).await.unwrap();
        assert_eq!(st.0.sessions, 1);
        let g = waits(State(state.clone()), RawQuery(Some(String::new())))
            .await
            .unwrap();
        assert!(g.0.edges.is_empty());
    }

    #[test]
    fn query_text_is_percent_decoded_as_the_extractor_does() {
        assert_eq!(percent_decode("a%FFb"), b"a\xffb");
        assert_eq!(percent_decode("%c3%A9+x"), "\u{e9} x".as_bytes());
        assert_eq!(percent_decode("%zz%4%"), b"%zz%4%");
    }
}
