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
