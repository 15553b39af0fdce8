//! What a client request asks of the core task: the translation of a wire request into an
//! engine command, a query or a ping.

use dlock_core::{Command, RequestId, SessionId};
use dlock_proto::{Query, Request};

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
