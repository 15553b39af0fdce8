//! The answers to queries, and replies that fit in one frame.

use dlock_core::{Core, RequestId};
use dlock_proto::{Query, Reply, RequestError, ServerMessage};

use crate::Config;
use crate::security::Rules;

/// Bytes of a reply frame around its list: message and reply tags, the request id, `now_ms`,
/// the list length, the option tag and `more` (each integer at most 10 bytes).
const REPLY_ENVELOPE: usize = 64;

/// Answers a query from the engine's state, one page of at most a frame (prefix queries at
/// most `max_query_resources` resources). Pages are built within a frame, so no query holds
/// the core task for longer than building one frame's worth of answer, however large the
/// table.
///
/// With `view` (the rules in force and the asking identity), the answer shows only what the
/// identity may see (see [`super::authz`]).
pub(super) fn query(
    core: &Core,
    query: Query,
    now_ms: u64,
    config: &Config,
    view: Option<(&Rules, Option<&str>)>,
) -> Reply {
    // The engine's clock only moves with inputs; the answer carries the server's clock now
    // (never behind the engine's), so that ages computed from it are current.
    let now_ms = now_ms.max(core.clock_ms());
    let budget = config.max_frame_len.saturating_sub(REPLY_ENVELOPE);
    match query {
        // A cluster member answers this itself (`CoreTask::request`); alone, there is none.
        Query::Cluster => Reply::Cluster(None),
        Query::Resource(name) => {
            // At most a frame's worth of its locks, however many it has.
            let mut resources: Vec<_> = core.resource_within(&name, budget).into_iter().collect();
            if let Some((rules, identity)) = view {
                for info in &mut resources {
                    super::authz::redact(rules, identity, info);
                }
            }
            Reply::Resources {
                now_ms,
                resources,
                more: false,
            }
        }
        Query::Prefix {
            prefix,
            limit,
            after,
        } => {
            // 0 asks for as many as the server gives (a page of none would say "more" forever).
            let limit = match limit {
                0 => config.max_query_resources,
                n => (n as usize).min(config.max_query_resources),
            };
            let (resources, more) = match view {
                None => core.resources_page(&prefix, after.as_deref(), limit, budget),
                Some((rules, identity)) => super::authz::prefix_page(
                    rules,
                    identity,
                    core,
                    &prefix,
                    after.as_deref(),
                    limit,
                    budget,
                ),
            };
            Reply::Resources {
                now_ms,
                resources,
                more,
            }
        }
        Query::Session { session, after } => {
            let page = core.session_page(session, after, usize::MAX, budget);
            let more = page.as_ref().is_some_and(|(_, more)| *more);
            Reply::Session {
                now_ms,
                session: page.map(|(info, _)| info),
                more,
            }
        }
    }
}

/// Whether `body` fits in a frame of `max` bytes by the views' upper size bounds, without
/// encoding it (false means "encode and see").
fn surely_fits(body: &Reply, max: usize) -> bool {
    crate::outbox::reply_payload(body) + REPLY_ENVELOPE <= max
}

/// The reply message for request `id`, shrinking a resource list that does not fit in a
/// frame of `max_frame_len` bytes, or `ReplyTooLarge` if nothing else fits. A safety net:
/// pages are built within a frame by the answers' size bounds, and a resource lists only as
/// many of its locks as fit.
pub(super) fn fitted_reply(id: RequestId, mut body: Reply, max_frame_len: usize) -> ServerMessage {
    loop {
        if surely_fits(&body, max_frame_len) {
            return ServerMessage::Reply { id, body };
        }
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
                ..
            } if resources.len() > 1 => {
                resources.truncate(resources.len() / 2);
                Reply::Resources {
                    now_ms,
                    resources,
                    more: true,
                }
            }
            _ => Reply::Error(RequestError::ReplyTooLarge),
        };
    }
}
