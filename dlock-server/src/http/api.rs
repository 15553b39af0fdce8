//! The JSON API and `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
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

/// `/api/status`.
pub(super) async fn status(
    State(state): State<Arc<HttpState>>,
) -> Result<Json<ServerStatus>, HttpError> {
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
    #[serde(default)]
    prefix: String,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Most resources (capped by the server).
    limit: Option<usize>,
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
    query: Result<Query<ResourcesParams>, QueryRejection>,
) -> Result<Json<ResourcesView>, HttpError> {
    let Query(p) = query?;
    let query = StatusQuery::Resources {
        prefix: p.prefix.into_bytes(),
        after: p.cursor.map(String::into_bytes),
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
    query: Result<Query<SessionsParams>, QueryRejection>,
) -> Result<Json<SessionsView>, HttpError> {
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
) -> Result<Json<WaitsView>, HttpError> {
    match state.ask(StatusQuery::Waits).await? {
        StatusAnswer::Waits(v) => Ok(Json(v)),
        _ => Err(HttpError::unexpected_answer()),
    }
}
