//! Authorisation of client requests against the `--auth-rules`: which requests a session's
//! identity may make, and what its queries may show.
//!
//! Releasing is always allowed (unlock, cancel, goodbye), and so are renewals and pings.
//! Taking or converting to a mode needs the access the mode needs on the resource
//! ([`Access::for_mode`]); writing a value block, on unlock or on a conversion (down ones
//! included), needs write access. A query of one
//! resource needs list access; a prefix query shows only the resources the identity may
//! list, and value blocks only where it may read; another session may be inspected only by
//! an admin.

use dlock_core::{Command, Core, LockFlags, LockId, ResourceInfo, SessionId};
use dlock_proto::Query;

use super::action::Action;
use crate::security::{Access, Rules};

/// The resource of `session`'s lock `lock`, if the session has it.
fn lock_resource(core: &Core, session: SessionId, lock: LockId) -> Option<Vec<u8>> {
    let after = lock.0.checked_sub(1).map(LockId);
    let (info, _) = core.session_page(session, after, 1, usize::MAX)?;
    let first = info.locks.into_iter().next()?;
    (first.lock == lock).then_some(first.resource)
}

/// Whether an unlock or a conversion with `flags` (and a value, `valued`) writes the value
/// block: it carries a value to write, or asks to invalidate it (IVVALBLK, R29a).
fn writes_value(valued: bool, flags: LockFlags) -> bool {
    (valued && flags.contains(LockFlags::VALBLK)) || flags.contains(LockFlags::IVVALBLK)
}

/// Whether `identity` (the identity of `session`) may make the request that asks for
/// `action`.
pub(super) fn allowed(
    rules: &Rules,
    core: &Core,
    session: SessionId,
    identity: Option<&str>,
    action: &Action,
) -> bool {
    let may = |name: &[u8], need: Access| rules.access(identity, name) >= need;
    match action {
        Action::Command(Command::Lock { args, .. }) => {
            may(&args.resource, Access::for_mode(args.mode))
        }
        Action::Command(Command::Convert { args, .. }) => {
            // A conversion that carries a value writes it (a down-conversion from PW or EX
            // included), and one that invalidates the value block changes it for every
            // reader: either needs write access whatever the mode asked for.
            let need = if writes_value(args.value.is_some(), args.flags) {
                Access::Write
            } else {
                Access::for_mode(args.mode)
            };
            match lock_resource(core, session, args.lock) {
                Some(name) => may(&name, need),
                // Not this session's lock: the engine answers that.
                None => true,
            }
        }
        Action::Command(Command::Unlock { args, .. })
            if writes_value(args.value.is_some(), args.flags) =>
        {
            match lock_resource(core, session, args.lock) {
                Some(name) => may(&name, Access::Write),
                None => true,
            }
        }
        Action::Query(Query::Resource(name)) => may(name, Access::List),
        Action::Query(Query::Session { session: other, .. }) => {
            *other == session || rules.is_admin(identity)
        }
        // Releasing, renewing, pinging and the rest.
        Action::Query(Query::Prefix { .. } | Query::Cluster)
        | Action::Command(_)
        | Action::Ping => true,
    }
}

/// Blanks the value block of a resource `identity` may not read.
pub(super) fn redact(rules: &Rules, identity: Option<&str>, info: &mut ResourceInfo) {
    if rules.access(identity, &info.name) < Access::Read {
        info.value.iter_mut().for_each(|b| *b = 0);
        info.value_valid = false;
    }
}

/// Most resources a prefix query looks at, per resource it may return, before it gives up
/// on finding visible ones (names hidden by a longer prefix with less access are skipped,
/// and skipping costs the core task time).
const SCAN_FACTOR: usize = 8;

/// A page of a prefix query as `identity` may see it: the resources under `prefix` after
/// `after` that it may list, in name order, value blocks blanked where it may not read.
pub(super) fn prefix_page(
    rules: &Rules,
    identity: Option<&str>,
    core: &Core,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
    budget: usize,
) -> (Vec<ResourceInfo>, bool) {
    let mut page: Vec<ResourceInfo> = Vec::new();
    let mut scanned = 0usize;
    let max_scan = limit.saturating_mul(SCAN_FACTOR).max(limit);
    let mut used = 0usize;
    for range in rules.visible_ranges(identity, prefix) {
        // Ranges are disjoint and in name order: skip those wholly at or before `after`.
        let start = match after {
            Some(a) if a.starts_with(&range) => Some(a.to_vec()),
            Some(a) if a >= range.as_slice() => continue,
            _ => None,
        };
        let mut cursor = start;
        loop {
            let want = limit - page.len();
            let (batch, more) =
                core.resources_page(&range, cursor.as_deref(), want, budget.saturating_sub(used));
            scanned += batch.len();
            cursor = batch.last().map(|r| r.name.clone());
            for mut info in batch {
                if rules.access(identity, &info.name) < Access::List {
                    continue;
                }
                redact(rules, identity, &mut info);
                used += info.approx_size();
                page.push(info);
            }
            if page.len() >= limit || used >= budget {
                return (page, true);
            }
            if !more || cursor.is_none() {
                break;
            }
            if scanned >= max_scan {
                // Mostly hidden names: answer what was found; the client asks again after
                // the last one.
                let more = !page.is_empty();
                return (page, more);
            }
        }
    }
    (page, false)
}
