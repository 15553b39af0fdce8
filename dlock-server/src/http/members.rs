//! `/api/cluster`: the cluster as this node sees it, and membership changes on the leader.
//!
//! `GET /api/cluster` answers a [`ClusterView`] on a cluster member, and `404` with the
//! body `not a cluster: this server runs alone (started without --peers)` on a server that
//! runs alone, as `POST` and `DELETE` do there: a script tells the two apart by the status
//! alone (`curl -f` fails), and `/api/status` of a server that runs alone has no `role`.
//!
//! `POST /api/cluster` with `{"id": 4, "client_addr": "h:7420", "raft_addr": "h:7520"}` adds
//! node 4 (already started with `--node-id 4`): it catches up as a learner, then becomes a
//! voter. `DELETE /api/cluster?id=3` removes node 3 (a voter, or a learner being added).
//! Replacing a member is an add and then a remove. Both answer once the change is committed;
//! a follower answers `421` with the leader's client address (send it to that node's HTTP
//! listener), a server that runs alone `404`, a refused change (another in progress, a node
//! that is not a member, a voter's id with other addresses) `409`, and a change not finished
//! within 8 s `503` saying where it stands (a learner that has not caught up stays a
//! learner; a proposed change completes when a majority answers).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dlock_proto::status::ClusterView;
use dlock_raft::{Member, ProposeError};
use serde::Deserialize;

use super::{HttpError, HttpState};

/// `GET /api/cluster`: the cluster as this node sees it; 404 from a server that runs alone.
pub(super) async fn cluster(
    State(state): State<Arc<HttpState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ClusterView>, HttpError> {
    super::api::check_query("/api/cluster", raw.as_deref(), &[])?;
    match &state.cluster {
        Some(sequencer) => Ok(Json(crate::cluster::view(sequencer))),
        None => Err(alone()),
    }
}

/// The body of `POST /api/cluster`.
#[derive(Debug, Deserialize)]
pub(super) struct NewMember {
    id: u64,
    client_addr: String,
    raft_addr: String,
}

/// The parameters of `DELETE /api/cluster`.
#[derive(Debug, Deserialize)]
pub(super) struct Removed {
    id: u64,
}

/// `POST /api/cluster`: adds a member.
pub(super) async fn add(
    State(state): State<Arc<HttpState>>,
    new: Result<Json<NewMember>, JsonRejection>,
) -> Response {
    let Some(sequencer) = &state.cluster else {
        return alone().into_response();
    };
    let new = match new {
        Ok(Json(new)) => new,
        Err(e) => return HttpError::from(e).into_response(),
    };
    for addr in [&new.client_addr, &new.raft_addr] {
        if addr
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return HttpError::bad_request(format!("{addr:?} is not HOST:PORT")).into_response();
        }
    }
    let member = Member {
        client_addr: new.client_addr,
        raft_addr: new.raft_addr,
    };
    tracing::info!(id = new.id, %member, "adding a cluster member");
    answer(sequencer.add_member(new.id, member).await, sequencer)
}

/// `DELETE /api/cluster?id=N`: removes a member.
pub(super) async fn remove(
    State(state): State<Arc<HttpState>>,
    removed: Result<Query<Removed>, QueryRejection>,
) -> Response {
    let Some(sequencer) = &state.cluster else {
        return alone().into_response();
    };
    let removed = match removed {
        Ok(Query(removed)) => removed,
        Err(e) => return HttpError::from(e).into_response(),
    };
    tracing::info!(id = removed.id, "removing a cluster member");
    answer(sequencer.remove_member(removed.id).await, sequencer)
}

/// The answer of every `/api/cluster` request to a server that runs alone.
fn alone() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "not a cluster: this server runs alone (started without --peers)",
    )
}

/// The new cluster view, or why the change was not made.
fn answer(result: Result<(), ProposeError>, sequencer: &dlock_raft::Sequencer) -> Response {
    match result {
        Ok(()) => Json(crate::cluster::view(sequencer)).into_response(),
        Err(ProposeError::NotLeader { leader }) => {
            let to = leader.map_or_else(
                || "the leader is not known yet; try again\n".to_owned(),
                |m| {
                    format!(
                        "not the leader: send this to the leader's HTTP listener (its \
                         --http-listen; the leader's lock port is {})\n",
                        m.client_addr
                    )
                },
            );
            (StatusCode::MISDIRECTED_REQUEST, to).into_response()
        }
        Err(ProposeError::Membership(why)) => {
            (StatusCode::CONFLICT, format!("{why}\n")).into_response()
        }
        Err(ProposeError::Unfinished(why)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}
