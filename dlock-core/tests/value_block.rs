//! R24..R30: the lock value block.

mod common;

use common::*;
use dlock_core::{Config, Invalid, LockFlags, Mode};

const V: LockFlags = LockFlags::VALBLK;
const IV: LockFlags = LockFlags::IVVALBLK;

fn value_of(h: &H, name: &str) -> (Vec<u8>, bool) {
    let r = h.core.resource(name.as_bytes()).unwrap();
    (r.value, r.value_valid)
}

fn padded(v: &[u8]) -> Vec<u8> {
    let mut v = v.to_vec();
    v.resize(64, 0);
    v
}

#[test]
fn r24_new_resource_reads_zeros_valid_and_values_are_padded() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, ev) = h.lock_with(a, 1, "r", Mode::EX, V, None, None); // idx 2
    assert_eq!(ev, vec![granted_v(a, 1, l, Mode::EX, 2, &[], true)]);
    let ev = h.convert_with(a, 2, l, Mode::NL, V, Some(b"abc"), None);
    assert_eq!(ev, vec![granted(a, 2, l, Mode::NL, 3)]);
    assert_eq!(value_of(&h, "r"), (padded(b"abc"), true));
    assert_eq!(h.core.resource(b"r").unwrap().value.len(), 64);
}

/// R26, every row of the table, through conversions granted on arrival.
#[test]
fn r26_every_row_of_the_table() {
    let rows = [
        (Mode::NL, "rrrrrr"),
        (Mode::CR, "-rrrrr"),
        (Mode::CW, "--rrrr"),
        (Mode::PR, "---rrr"),
        (Mode::PW, "wwwwwr"),
        (Mode::EX, "wwwwww"),
    ];
    for (gr, row) in rows {
        for (rq, op) in Mode::ALL.into_iter().zip(row.chars()) {
            let mut h = H::new();
            let a = h.open("a");
            let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 2
            h.convert_with(a, 2, l, Mode::NL, V, Some(b"old"), None); // idx 3: write
            h.convert(a, 3, l, gr); // idx 4
            let ev = h.convert_with(a, 4, l, rq, V, Some(b"new"), None); // idx 5
            let ctx = format!("{gr}->{rq}");
            match op {
                'r' => {
                    let want = granted_v(a, 4, l, rq, 5, b"old", true);
                    assert_eq!(ev, vec![want], "{ctx}");
                    assert_eq!(value_of(&h, "r").0, padded(b"old"), "{ctx}");
                }
                'w' => {
                    assert_eq!(ev, vec![granted(a, 4, l, rq, 5)], "{ctx}");
                    assert_eq!(value_of(&h, "r"), (padded(b"new"), true), "{ctx}");
                }
                _ => {
                    assert_eq!(ev, vec![granted(a, 4, l, rq, 5)], "{ctx}");
                    assert_eq!(value_of(&h, "r").0, padded(b"old"), "{ctx}");
                }
            }
        }
    }
    // The first row: a new lock of any mode reads.
    for rq in Mode::ALL {
        let mut h = H::new();
        let a = h.open("a");
        let (l, _) = h.lock(a, 1, "keep", Mode::EX); // idx 2
        h.convert_with(a, 2, l, Mode::NL, V, Some(b"old"), None); // idx 3
        let (l2, ev) = h.lock_with(a, 3, "keep", rq, V, Some(b"ignored"), None); // idx 4
        assert_eq!(
            ev,
            vec![granted_v(a, 3, l2, rq, 4, b"old", true)],
            "new {rq}"
        );
    }
}

#[test]
fn r25_without_valblk_nothing_is_read_or_written() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 2
    let ev = h.convert_with(a, 2, l, Mode::NL, LockFlags::empty(), Some(b"x"), None);
    assert_eq!(ev, vec![granted(a, 2, l, Mode::NL, 3)]);
    assert_eq!(value_of(&h, "r"), (padded(&[]), true));
    let ev = h.convert(a, 3, l, Mode::EX);
    assert_eq!(ev, vec![granted(a, 3, l, Mode::EX, 4)]);
}

#[test]
fn r27_queued_request_reads_the_value_written_by_the_release() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock_with(b, 1, "r", Mode::PR, V, None, None); // idx 4
    let ev = h.unlock_with(a, 2, la, V, Some(b"fresh")); // idx 5
    assert_eq!(
        ev,
        vec![
            unlocked(a, 2, la),
            granted_v(b, 1, lb, Mode::PR, 5, b"fresh", true)
        ]
    );
}

#[test]
fn r28_unlock_writes_only_from_pw_or_ex_with_valblk() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (keep, _) = h.lock(b, 1, "r", Mode::NL); // idx 3: keeps the resource alive
    let (l, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    h.unlock_with(a, 2, l, V, Some(b"pr")); // idx 5: from PR: no write
    assert_eq!(value_of(&h, "r"), (padded(&[]), true));
    let (l, _) = h.lock(a, 3, "r", Mode::EX); // idx 6
    h.unlock(a, 4, l); // idx 7: no VALBLK: unchanged
    assert_eq!(value_of(&h, "r"), (padded(&[]), true));
    let (l, _) = h.lock(a, 5, "r", Mode::PW); // idx 8
    // VALBLK on a write path without a value is INVALID.
    assert_eq!(
        h.unlock_with(a, 6, l, V, None),
        vec![rejected(a, 6, Some(l), Invalid::MissingValue)]
    );
    assert_eq!(
        h.unlock_with(a, 7, l, V, Some(b"pw")),
        vec![unlocked(a, 7, l)]
    );
    assert_eq!(value_of(&h, "r"), (padded(b"pw"), true));
    let _ = keep;
}

#[test]
fn r29a_ivvalblk_invalidates_from_pw_or_ex_and_r30_a_write_revalidates() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (keep, _) = h.lock(b, 1, "r", Mode::NL); // idx 3
    let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 4
    h.convert_with(a, 2, l, Mode::EX, V, Some(b"kept"), None); // idx 5: write
    // IVVALBLK from PR: no effect.
    h.convert(a, 3, l, Mode::PR); // idx 6: down, no VALBLK
    h.unlock_with(a, 4, l, IV, None); // idx 7
    assert_eq!(value_of(&h, "r"), (padded(b"kept"), true));
    // IVVALBLK on a down-conversion from EX: invalid, contents kept.
    let (l, _) = h.lock(a, 5, "r", Mode::EX); // idx 8
    h.convert_with(a, 6, l, Mode::NL, IV, None, None); // idx 9
    assert_eq!(value_of(&h, "r"), (padded(b"kept"), false));
    // R30: every read reports VALNOTVALID with the kept contents.
    let ev = h.convert_with(a, 7, l, Mode::PR, V, None, None); // idx 10
    assert_eq!(ev, vec![granted_v(a, 7, l, Mode::PR, 10, b"kept", false)]);
    h.unlock(a, 8, l); // idx 11
    // IVVALBLK on a same-mode conversion (R26's write path) invalidates too, as Linux's
    // `set_lvb_lock` does, and nothing is written; a write then makes it valid again.
    let (l, _) = h.lock(a, 13, "r", Mode::EX); // idx 12
    h.convert_with(a, 14, l, Mode::EX, V, Some(b"same"), None); // idx 13: valid
    assert_eq!(value_of(&h, "r"), (padded(b"same"), true));
    let ev = h.convert_with(a, 15, l, Mode::EX, IV | V, Some(b"lost"), None); // idx 14
    assert_eq!(ev, vec![granted(a, 15, l, Mode::EX, 14)]);
    assert_eq!(value_of(&h, "r"), (padded(b"same"), false));
    h.unlock(a, 16, l); // idx 15
    // IVVALBLK on unlock from EX, then a write makes it valid again.
    let (l, ev) = h.lock_with(a, 9, "r", Mode::EX, V, None, None); // idx 16
    assert_eq!(ev, vec![granted_v(a, 9, l, Mode::EX, 16, b"same", false)]);
    h.convert_with(a, 10, l, Mode::EX, V, Some(b"new"), None); // idx 17
    assert_eq!(value_of(&h, "r"), (padded(b"new"), true));
    h.unlock_with(a, 11, l, IV | V, Some(b"ignored")); // idx 18
    assert_eq!(value_of(&h, "r"), (padded(b"new"), false));
    // R30: destroying the resource resets it.
    h.unlock(b, 2, keep); // idx 19
    let (l, ev) = h.lock_with(a, 12, "r", Mode::PR, V, None, None); // idx 20
    assert_eq!(ev, vec![granted_v(a, 12, l, Mode::PR, 20, &[], true)]);
}

#[test]
fn r29b_session_end_with_pw_or_ex_invalidates() {
    let mut h = H::new();
    let (a, b) = (h.open_ttl("a", 1_000), h.open_ttl("b", 60_000));
    let (_keep, _) = h.lock(b, 1, "r", Mode::NL); // idx 3
    let (_l, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    h.close(a, 2); // idx 5: PR: stays valid
    assert_eq!(value_of(&h, "r"), (padded(&[]), true));
    let a = h.open_ttl("a2", 1_000); // idx 6
    let (l, _) = h.lock(a, 1, "r", Mode::PW); // idx 7
    h.convert_with(a, 2, l, Mode::PW, V, Some(b"w"), None); // idx 8
    // Converting PW->EX behind nothing: granted. Instead queue it behind a CR holder of b.
    let (_cr, _) = h.lock(b, 2, "r", Mode::CR); // idx 9
    let ev = h.convert(a, 3, l, Mode::EX); // idx 10: queued (b's CR)
    assert_eq!(ev[0], queued(a, 3, l));
    // The lease runs out: the converting lock's granted PW invalidates (R29b).
    let ev = h.tick_after(1_000);
    assert_eq!(ev, vec![expired(a)]);
    assert_eq!(value_of(&h, "r"), (padded(b"w"), false));
}

#[test]
fn lvb_length_is_configurable_and_longer_values_are_invalid() {
    let mut h = H::with(Config {
        lvb_len: 32,
        ..Config::default()
    });
    let a = h.open("a");
    let (_, ev) = h.lock_with(a, 1, "r", Mode::EX, V, Some(&[1; 33]), None);
    let reason = Invalid::ValueTooLong { len: 33, max: 32 };
    assert_eq!(ev, vec![rejected(a, 1, None, reason)]);
    let (l, _) = h.lock(a, 2, "r", Mode::EX);
    h.unlock_with(a, 3, l, V, Some(&[7; 32]));
    assert!(h.core.resource(b"r").is_none());
}

#[test]
fn r24_a_new_lock_of_every_mode_reads_the_fresh_block() {
    for mode in Mode::ALL {
        let mut h = H::new();
        let a = h.open("a");
        let (l, ev) = h.lock_with(a, 1, "r", mode, V, None, None); // idx 2
        assert_eq!(ev, vec![granted_v(a, 1, l, mode, 2, &[], true)], "{mode}");
        assert_eq!(value_of(&h, "r"), (padded(&[]), true), "{mode}");
    }
}

#[test]
fn r25_without_valblk_an_invalid_block_is_neither_read_nor_reported() {
    let mut h = H::new();
    let (a, k) = (h.open("a"), h.open("k"));
    h.lock(k, 1, "r", Mode::NL); // idx 3: keeps the resource
    let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 4
    h.unlock_with(a, 2, l, V, Some(b"kept")); // idx 5
    let (l, _) = h.lock(a, 3, "r", Mode::EX); // idx 6
    h.unlock_with(a, 4, l, IV, None); // idx 7
    // No VALBLK: no value and no VALNOTVALID (the plain constructor says value_valid).
    let (l, ev) = h.lock(a, 5, "r", Mode::EX); // idx 8
    assert_eq!(ev, vec![granted(a, 5, l, Mode::EX, 8)]);
    assert_eq!(
        h.convert(a, 6, l, Mode::PR),
        vec![granted(a, 6, l, Mode::PR, 9)]
    );
    h.unlock(a, 7, l); // idx 10
    let (l, _) = h.lock(a, 8, "r", Mode::EX); // idx 11
    assert_eq!(h.unlock(a, 9, l), vec![unlocked(a, 9, l)]);
    assert_eq!(value_of(&h, "r"), (padded(b"kept"), false));
}

#[test]
fn r28_unlock_with_a_value_from_every_mode() {
    for mode in Mode::ALL {
        let mut h = H::new();
        let (a, k) = (h.open("a"), h.open("k"));
        h.lock(k, 1, "r", Mode::NL); // idx 3
        let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 4
        h.unlock_with(a, 2, l, V, Some(b"before")); // idx 5
        let (l, _) = h.lock(a, 3, "r", mode); // idx 6
        let ev = h.unlock_with(a, 4, l, V, Some(b"after"));
        assert_eq!(ev, vec![unlocked(a, 4, l)], "{mode}");
        let want: &[u8] = if mode >= Mode::PW {
            b"after"
        } else {
            b"before"
        };
        assert_eq!(value_of(&h, "r"), (padded(want), true), "{mode}");
    }
}

#[test]
fn r29a_ivvalblk_below_pw_does_nothing_and_from_pw_down_conversion_invalidates() {
    let mut h = H::new();
    let (a, k) = (h.open("a"), h.open("k"));
    h.lock(k, 1, "r", Mode::NL); // idx 3
    let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 4
    h.unlock_with(a, 2, l, V, Some(b"v1")); // idx 5
    for mode in [Mode::NL, Mode::CR, Mode::CW, Mode::PR] {
        let (l, _) = h.lock(a, 3, "r", mode);
        assert_eq!(h.unlock_with(a, 4, l, IV, None), vec![unlocked(a, 4, l)]);
        assert_eq!(value_of(&h, "r"), (padded(b"v1"), true), "{mode}");
    }
    // PW->NL with IVVALBLK: not valid, contents kept; a read says so.
    let (l, _) = h.lock(a, 5, "r", Mode::PW); // idx 14
    h.convert_with(a, 6, l, Mode::NL, IV, None, None); // idx 15
    assert_eq!(value_of(&h, "r"), (padded(b"v1"), false));
    let (lr, ev) = h.lock_with(a, 7, "r", Mode::PR, V, None, None); // idx 16
    assert_eq!(ev, vec![granted_v(a, 7, lr, Mode::PR, 16, b"v1", false)]);
    h.unlock(a, 8, lr); // idx 17
    // NL->EX, then EX->EX with a value: valid again.
    h.convert(a, 9, l, Mode::EX); // idx 18
    h.convert_with(a, 10, l, Mode::EX, V, Some(b"v3"), None); // idx 19
    assert_eq!(value_of(&h, "r"), (padded(b"v3"), true));
}

#[test]
fn r29b_closing_a_pw_or_ex_holder_or_a_converting_pw_lock_invalidates() {
    for mode in [Mode::PW, Mode::EX] {
        let mut h = H::new();
        let (a, k) = (h.open("a"), h.open("k"));
        h.lock(k, 1, "r", Mode::NL); // idx 3
        let (l, _) = h.lock(a, 1, "r", mode); // idx 4
        h.convert_with(a, 2, l, mode, V, Some(b"alive"), None); // idx 5
        assert_eq!(h.close(a, 3), vec![closed(a, 3)]);
        assert_eq!(value_of(&h, "r"), (padded(b"alive"), false), "{mode}");
    }
    // A converting lock whose granted mode is PW (PW->EX, blocked by a CR holder).
    let mut h = H::new();
    let (a, k) = (h.open("a"), h.open("k"));
    h.lock(k, 1, "r", Mode::CR); // idx 3
    let (l, _) = h.lock(a, 1, "r", Mode::PW); // idx 4
    h.convert_with(a, 2, l, Mode::PW, V, Some(b"alive"), None); // idx 5
    assert_eq!(h.convert(a, 3, l, Mode::EX)[0], queued(a, 3, l)); // idx 6
    // The pending conversion gets no completion (R50).
    assert_eq!(h.close(a, 4), vec![closed(a, 4)]);
    assert_eq!(value_of(&h, "r"), (padded(b"alive"), false));
    assert_eq!(h.queues("r").1, vec![]);
}
