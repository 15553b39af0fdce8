//! Client requests: what each one asks of the core task, the answers to queries, and replies
//! that fit in one frame.

use dlock_core::{Command, Core, RequestId, SessionId};
use dlock_proto::{Query, Reply, Request, RequestError, ServerMessage};

/// What a client request asks of the core task.
#[derive(Debug)]
pub(super) enum Action {
    /// Answer a query from the engine's state.
    Query(Query),
    /// Answer with `Pong`.
    Ping,
    /// Apply an engine command.
    Command(Command),
}

/// Translates a client request of `session` with id `id`.
pub(super) fn action(session: SessionId, id: RequestId, body: Request) -> Action {
    let request = id;
    let command = match body {
        Request::Query(query) => return Action::Query(query),
        Request::Ping => return Action::Ping,
        Request::Renew => Command::Renew { session, request },
        Request::Goodbye => Command::CloseSession { session, request },
        Request::Lock(args) => Command::Lock {
            session,
            request,
            args,
        },
        Request::Convert(args) => Command::Convert {
            session,
            request,
            args,
        },
        Request::Unlock(args) => Command::Unlock {
            session,
            request,
            args,
        },
        Request::Cancel { lock } => Command::Cancel {
            session,
            request,
            lock,
        },
    };
    Action::Command(command)
}

/// Answers a query from the engine's state; prefix queries return at most `max_resources`.
pub(super) fn query(core: &Core, query: Query, max_resources: usize) -> Reply {
    // The caller renewed the asking session just before, so the core clock is current.
    let now_ms = core.clock_ms();
    match query {
        Query::Resource(name) => Reply::Resources {
            now_ms,
            resources: core.resource(&name).into_iter().collect(),
        },
        Query::Prefix { prefix, limit } => {
            let limit = (limit as usize).min(max_resources);
            Reply::Resources {
                now_ms,
                resources: core.resources(&prefix, limit),
            }
        }
        Query::Session(session) => Reply::Session {
            now_ms,
            session: core.session(session),
        },
    }
}

/// The reply message for request `id`, shrinking a resource list that does not fit in a
/// frame of `max_frame_len` bytes, or `ReplyTooLarge` if nothing else fits.
pub(super) fn fitted_reply(id: RequestId, mut body: Reply, max_frame_len: usize) -> ServerMessage {
    loop {
        let msg = ServerMessage::Reply { id, body };
        let fits = dlock_proto::codec::encode_body(&msg).is_ok_and(|b| b.len() <= max_frame_len);
        if fits {
            return msg;
        }
        let ServerMessage::Reply { body: b, .. } = msg else {
            return ServerMessage::Reply {
                id,
                body: Reply::Error(RequestError::ReplyTooLarge),
            };
        };
        body = match b {
            Reply::Resources {
                now_ms,
                mut resources,
            } if resources.len() > 1 => {
                resources.truncate(resources.len() / 2);
                Reply::Resources { now_ms, resources }
            }
            _ => Reply::Error(RequestError::ReplyTooLarge),
        };
    }
}
