//! R66 queries in pages: a page is bounded in items and in approximate encoded bytes, the work
//! is proportional to the page, and reading page after page gives exactly the whole answer.

mod common;

use common::*;
use dlock_core::{LockId, Mode, ResourceInfo, SessionLockInfo};

/// A session "s" holding `n` locks on `r000`, `r001`, ... with names padded to `len` bytes.
fn table(n: usize, len: usize) -> (H, dlock_core::SessionId) {
    let mut h = H::new();
    let s = h.open("s");
    for i in 0..n {
        let name = format!("r{i:03}{}", "x".repeat(len.saturating_sub(4)));
        let (_, ev) = h.lock(s, i as u64 + 1, &name, Mode::PR);
        assert_eq!(ev.len(), 1, "lock {i} granted");
    }
    (h, s)
}

fn session_pages(h: &H, s: dlock_core::SessionId, limit: usize, budget: usize) -> Vec<Vec<LockId>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let (info, more) = h.core.session_page(s, after, limit, budget).unwrap();
        assert!(!info.locks.is_empty(), "every page holds at least one lock");
        after = info.locks.last().map(|l| l.lock);
        pages.push(info.locks.iter().map(|l| l.lock).collect());
        if !more {
            return pages;
        }
    }
}

#[test]
fn session_pages_by_count_concatenate_to_the_whole_session() {
    let (h, s) = table(10, 4);
    let pages = session_pages(&h, s, 3, usize::MAX);
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    let all: Vec<LockId> = h
        .core
        .session(s)
        .unwrap()
        .locks
        .iter()
        .map(|l| l.lock)
        .collect();
    assert_eq!(pages.concat(), all);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "lock id order");
}

#[test]
fn session_pages_stay_within_the_byte_budget() {
    let (h, s) = table(20, 200);
    let one = h.core.session_page(s, None, 1, usize::MAX).unwrap().0;
    let item = one.locks[0].approx_size();
    let head = one.approx_size() - item;
    // Room for three locks and the session's own fields.
    let budget = head + 3 * item;
    let pages = session_pages(&h, s, usize::MAX, budget);
    assert_eq!(pages.len(), 7, "20 locks, three a page");
    assert!(pages.iter().all(|p| p.len() <= 3));
    let (info, _) = h.core.session_page(s, None, usize::MAX, budget).unwrap();
    assert!(info.approx_size() <= budget);
}

#[test]
fn a_lock_larger_than_the_budget_still_makes_progress() {
    let (h, s) = table(3, 300);
    let pages = session_pages(&h, s, usize::MAX, 1);
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
}

#[test]
fn session_page_after_the_last_lock_is_empty_and_unknown_session_is_none() {
    let (h, s) = table(2, 4);
    let last = h.core.session(s).unwrap().locks[1].lock;
    let (info, more) = h.core.session_page(s, Some(last), 10, usize::MAX).unwrap();
    assert!(info.locks.is_empty() && !more);
    assert_eq!(info.name, "s");
    assert!(
        h.core
            .session_page(dlock_core::SessionId(999), None, 10, 100)
            .is_none()
    );
}

fn names(v: &[ResourceInfo]) -> Vec<String> {
    v.iter()
        .map(|r| String::from_utf8_lossy(&r.name).into_owned())
        .collect()
}

#[test]
fn resource_pages_by_prefix_concatenate_to_the_whole_answer() {
    let (mut h, s) = table(7, 4);
    // Names outside the prefix, before and after it.
    h.lock(s, 100, "a", Mode::NL);
    h.lock(s, 101, "z", Mode::NL);
    let whole = names(&h.core.resources(b"r", usize::MAX));
    assert_eq!(whole.len(), 7);
    let mut got = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, more) = h.core.resources_page(b"r", after.as_deref(), 2, usize::MAX);
        assert!(page.len() <= 2);
        got.extend(names(&page));
        after = page.last().map(|r| r.name.clone());
        if !more {
            break;
        }
    }
    assert_eq!(got, whole);
    // A cursor that sorts before the prefix starts at the prefix.
    let (page, _) = h.core.resources_page(b"r", Some(b"a"), 1, usize::MAX);
    assert_eq!(names(&page), vec!["r000".to_string()]);
}

#[test]
fn resource_pages_stay_within_the_byte_budget() {
    let (h, _) = table(10, 100);
    let one = h.core.resources_page(b"", None, 1, usize::MAX).0;
    let budget = 2 * one[0].approx_size();
    let (page, more) = h.core.resources_page(b"", None, usize::MAX, budget);
    assert_eq!(page.len(), 2);
    assert!(more);
    let total: usize = page.iter().map(ResourceInfo::approx_size).sum();
    assert!(total <= budget);
}

#[test]
fn approx_sizes_grow_with_names() {
    let short = SessionLockInfo {
        lock: LockId(1),
        resource: b"a".to_vec(),
        state: dlock_core::LockState::Granted { mode: Mode::EX },
        token: None,
    };
    let long = SessionLockInfo {
        resource: vec![b'a'; 101],
        ..short.clone()
    };
    assert_eq!(long.approx_size() - short.approx_size(), 100);
}

/// A resource "crowd": `n` NL holders (sessions `h0`, `h1`, ...), then a PW holder, a
/// conversion to EX and two waiters; the holders' ids, the converter's and the waiters'.
fn crowd(n: usize) -> (H, Vec<LockId>, LockId, [LockId; 2]) {
    let mut h = H::new();
    let mut holders = Vec::new();
    for i in 0..n {
        let s = h.open(&format!("h{i}"));
        holders.push(h.lock(s, 1, "crowd", Mode::NL).0);
    }
    let (pw, c) = (h.open("pw"), h.open("c"));
    let (wa, wb) = (h.open("wa"), h.open("wb"));
    h.lock(pw, 1, "crowd", Mode::PW);
    let (lc, _) = h.lock(c, 1, "crowd", Mode::NL);
    h.convert(c, 2, lc, Mode::EX);
    let (w1, _) = h.lock(wa, 1, "crowd", Mode::EX);
    let (w2, _) = h.lock(wb, 1, "crowd", Mode::PR);
    (h, holders, lc, [w1, w2])
}

#[test]
fn a_resource_lists_the_locks_that_fit_and_counts_the_others() {
    let (h, holders, converting, waiting) = crowd(50);
    let whole = h.core.resource(b"crowd").unwrap();
    assert_eq!(whole.omitted, 0);
    assert_eq!(whole.granted.len(), 51);
    assert_eq!(whole.converting.len(), 1);
    assert_eq!(whole.waiting.len(), 2);
    let head = ResourceInfo {
        granted: Vec::new(),
        converting: Vec::new(),
        waiting: Vec::new(),
        ..whole.clone()
    }
    .approx_size();
    let item = whole.granted[0].approx_size();
    // Room for ten holders: the first ten granted, the 44 others counted.
    let cut = h.core.resource_within(b"crowd", head + 10 * item).unwrap();
    let ids = |v: &[dlock_core::LockInfo]| v.iter().map(|l| l.lock).collect::<Vec<_>>();
    assert_eq!(ids(&cut.granted), holders[..10]);
    assert!(cut.converting.is_empty() && cut.waiting.is_empty());
    assert_eq!(cut.omitted, 44);
    assert!(cut.approx_size() <= head + 10 * item);
    assert_eq!((&cut.name, &cut.value), (&whole.name, &whole.value));
    // Room for every holder and the converter: the waiters are counted.
    let room = head
        + whole.granted.iter().map(|l| l.approx_size()).sum::<usize>()
        + whole.converting[0].approx_size();
    let cut = h.core.resource_within(b"crowd", room).unwrap();
    assert_eq!(ids(&cut.granted), ids(&whole.granted));
    assert_eq!(ids(&cut.converting), [converting]);
    assert_eq!((cut.waiting.len(), cut.omitted), (0, 2));
    // Room for all of it: the whole resource.
    let room = room + whole.waiting.iter().map(|l| l.approx_size()).sum::<usize>();
    assert_eq!(h.core.resource_within(b"crowd", room).unwrap(), whole);
    assert_eq!(ids(&whole.waiting), waiting);
    // Room for nothing but its name and value block: every lock counted.
    let cut = h.core.resource_within(b"crowd", head).unwrap();
    assert_eq!((cut.granted.len(), cut.omitted), (0, 54));
}

#[test]
fn a_crowded_resource_is_cut_only_first_in_a_page_and_starts_the_next_otherwise() {
    let (mut h, _, _, _) = crowd(50);
    let s = h.open("small");
    h.lock(s, 1, "a-small", Mode::EX);
    let whole = h.core.resource(b"crowd").unwrap();
    let small = h.core.resource(b"a-small").unwrap();
    let budget = small.approx_size() + whole.approx_size() / 2;
    // The small one fits, the crowded one would not whole: the page ends before it.
    let (page, more) = h.core.resources_page(b"", None, 10, budget);
    assert_eq!(page, vec![small]);
    assert!(more);
    // The next page starts with it: it lists what fits, and counts the others.
    let (page, more) = h.core.resources_page(b"", Some(b"a-small"), 10, budget);
    let [cut] = &page[..] else { panic!("{page:?}") };
    assert!(!more);
    assert!(cut.omitted > 0 && cut.approx_size() <= budget);
    let listed = cut.granted.len() + cut.converting.len() + cut.waiting.len();
    assert_eq!(listed as u64 + cut.omitted, 54);
}
