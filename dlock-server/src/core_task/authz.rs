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
    let ranges = rules.visible_ranges(identity, prefix);
    for (i, range) in ranges.iter().enumerate() {
        // Ranges are disjoint and in name order: skip those wholly at or before `after`.
        let start = match after {
            Some(a) if a.starts_with(range) => Some(a.to_vec()),
            Some(a) if a >= range.as_slice() => continue,
            _ => None,
        };
        let mut cursor = start;
        loop {
            let want = limit - page.len();
            let (batch, more) =
                core.resources_page(range, cursor.as_deref(), want, budget.saturating_sub(used));
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
                // Full: more follow only if a name it may list does, within what is left
                // of the scan (past it, undecided: say more, as below).
                let after = if more { cursor } else { None };
                let rest = if more { &ranges[i..] } else { &ranges[i + 1..] };
                let left = max_scan.saturating_sub(scanned);
                let follows = listed_name_follows(rules, identity, core, rest, after, left);
                return (page, follows);
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

/// Whether a name `identity` may list comes after `after` in the first of `ranges` (or,
/// without `after`, anywhere in it) or in the ranges after it, looking at `left` names at
/// most: `true` also when the look ends before it knows.
fn listed_name_follows(
    rules: &Rules,
    identity: Option<&str>,
    core: &Core,
    ranges: &[Vec<u8>],
    mut after: Option<Vec<u8>>,
    mut left: usize,
) -> bool {
    for range in ranges {
        loop {
            if left == 0 {
                return true;
            }
            // One name at a time, with no room for its holders: only the name is read.
            let (batch, more) = core.resources_page(range, after.as_deref(), 1, 0);
            let Some(info) = batch.into_iter().next() else {
                break;
            };
            left -= 1;
            if rules.access(identity, &info.name) >= Access::List {
                return true;
            }
            if !more {
                break;
            }
            after = Some(info.name);
        }
        after = None;
    }
    false
}

#[cfg(test)]
mod tests {
    use dlock_core::{Config, Input, LockRequest, Mode, RequestId};

    use super::*;

    const RULES: &str = r#"
        [identities.ci]
        "" = "list"
        "h/" = "none"
        [identities.two]
        "x/" = "list"
        "y/" = "list"
    "#;

    /// A core with one session holding an EX lock on each of `names`.
    fn core_with(names: &[&str]) -> Core {
        let mut core = Core::new(Config::default());
        let open = Command::OpenSession {
            name: "a".into(),
            ttl_ms: 60_000,
            secret: 1,
        };
        core.apply(Input {
            index: 1,
            now_ms: 0,
            command: open,
        });
        for (index, name) in (2..).zip(names) {
            let lock = Command::Lock {
                session: SessionId(1),
                request: RequestId(index),
                args: LockRequest::new(*name, Mode::EX),
            };
            core.apply(Input {
                index,
                now_ms: 0,
                command: lock,
            });
        }
        core
    }

    /// The page `identity` gets after `after`, by name, and whether more follow.
    fn page(
        rules: &Rules,
        identity: &str,
        core: &Core,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let (page, more) = prefix_page(
            rules,
            Some(identity),
            core,
            b"",
            after.map(str::as_bytes),
            limit,
            usize::MAX,
        );
        let names = page
            .iter()
            .map(|r| String::from_utf8_lossy(&r.name).into_owned())
            .collect();
        (names, more)
    }

    #[test]
    fn a_full_page_says_more_only_when_a_name_it_may_list_follows() {
        let rules = Rules::parse(RULES).unwrap();
        // Nothing after the page; then only hidden names after it.
        let core = core_with(&["a", "b"]);
        assert_eq!(
            page(&rules, "ci", &core, None, 2),
            (vec!["a".into(), "b".into()], false)
        );
        let core = core_with(&["a", "b", "h/1", "h/2"]);
        assert_eq!(
            page(&rules, "ci", &core, None, 2),
            (vec!["a".into(), "b".into()], false)
        );
        assert_eq!(page(&rules, "ci", &core, None, 1), (vec!["a".into()], true));
        // A name it may list behind hidden ones.
        let core = core_with(&["a", "b", "h/1", "z"]);
        assert_eq!(
            page(&rules, "ci", &core, None, 2),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            page(&rules, "ci", &core, Some("b"), 2),
            (vec!["z".into()], false)
        );
        // Across the ranges of the prefixes it may list.
        let core = core_with(&["w", "x/1", "y/1"]);
        assert_eq!(
            page(&rules, "two", &core, None, 1),
            (vec!["x/1".into()], true)
        );
        let core = core_with(&["w", "x/1", "z"]);
        assert_eq!(
            page(&rules, "two", &core, None, 1),
            (vec!["x/1".into()], false)
        );
    }

    #[test]
    fn the_look_past_a_full_page_stays_within_the_scan_bound() {
        let rules = Rules::parse(RULES).unwrap();
        // Eight names scanned at most for a page of one: "a" and seven hidden ones leave it
        // undecided, and the next page, which finds nothing in its scan, ends the query.
        let mut names = vec!["a".to_owned()];
        names.extend((10..30).map(|i| format!("h/{i}")));
        names.push("z".into());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let core = core_with(&names);
        assert_eq!(page(&rules, "ci", &core, None, 1), (vec!["a".into()], true));
        assert_eq!(page(&rules, "ci", &core, Some("a"), 1), (Vec::new(), false));
        // Within the bound, the hidden names at the end are looked past.
        let core = core_with(&["a", "h/1", "h/2", "h/3", "h/4", "h/5", "h/6", "h/7"]);
        assert_eq!(
            page(&rules, "ci", &core, None, 1),
            (vec!["a".into()], false)
        );
    }
}
