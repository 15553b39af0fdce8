//! Small text helpers: ages, resource names, one-line descriptions of locks.
//!
//! A lock's age is `now_ms - since_ms` where both come from the same query reply: `since_ms`
//! is on the server's lock-table clock and `now_ms` is that clock when the server answered.

use std::time::Duration;

use dlock_client::{LockInfo, LockState, Mode, ResourceInfo};

/// How long before the reply stamped `now_ms` the server clock read `since_ms` (zero if
/// `since_ms` is later, which a well-behaved server never sends).
pub fn since(now_ms: u64, since_ms: u64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(since_ms))
}

/// Parses a human duration (`500ms`, `30s`, `2m`, `1h 30m`, `1.5s`). A bare number gets an error
/// that shows it with units, since the unit it meant cannot be guessed.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        let t = s.trim();
        if !t.is_empty() && t.parse::<f64>().is_ok() {
            format!("a unit is needed: {t}s or {t}ms, say (also m and h)")
        } else {
            format!("{e} (expected e.g. 500ms, 30s, 2m)")
        }
    })
}

/// A short human age: `350ms`, `12s`, `3m04s`, `2h05m`, `3d04h`.
pub fn age(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// A resource name for display: UTF-8, with invalid bytes replaced.
pub fn name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The prefix of a resource name given in hexadecimal (`hex:HEX`), wherever the command line
/// takes a name.
pub const HEX_PREFIX: &str = "hex:";

/// The bytes of a name written `hex:HEX`: `None` when `word` does not start with `hex:`, an
/// error when what follows is not pairs of hexadecimal digits.
pub fn hex_name(word: &[u8]) -> Option<Result<Vec<u8>, String>> {
    let hex = word.strip_prefix(HEX_PREFIX.as_bytes())?;
    Some(
        std::str::from_utf8(hex)
            .ok()
            .and_then(dlock_proto::from_hex)
            .ok_or_else(|| "after hex: come pairs of hexadecimal digits".to_owned()),
    )
}

/// A resource name as `dlock status --cursor` takes it back, ready to paste into a shell:
/// the name in double quotes when it is UTF-8 text without control characters and without
/// anything a shell interprets between double quotes (`"`, `\`, `$`, `` ` ``, `!`), and does
/// not itself start with `hex:`; else `hex:` and its bytes in hexadecimal (which any name
/// can be written as).
pub fn cursor_arg(bytes: &[u8]) -> String {
    let hex = HEX_PREFIX;
    match std::str::from_utf8(bytes) {
        Ok(text)
            // Not a character the shell expands, nor one that `escape_debug` writes
            // otherwise: control characters, quotes, and the invisible ones that change the
            // text around them (U+202E turns the rest of the line around).
            if !text.starts_with(hex)
                && !text.chars().any(|c| {
                    c.escape_debug().nth(1).is_some() || matches!(c, '$' | '`' | '!')
                }) =>
        {
            format!("\"{text}\"")
        }
        _ => format!("{hex}{}", dlock_proto::to_hex(bytes)),
    }
}

/// A resource name written out unambiguously, as the inside of a Rust string literal: UTF-8
/// text with `\`, quotes and control characters escaped (`\\`, `\"`, `\n`), and every byte
/// that is not UTF-8 as `\xNN`. Two different names never look the same, and nothing in a
/// name can drive the terminal.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().escape_debug());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The most bytes of a name [`quoted`] shows.
pub const SHOWN_NAME_BYTES: usize = 64;

/// A name quoted for a message, cut after [`SHOWN_NAME_BYTES`] bytes (at a character
/// boundary) with its length: `"aaaa…"… (70000 bytes)`, so that a huge name cannot flood
/// stderr.
pub fn quoted(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_NAME_BYTES {
        return format!("\"{}\"", escaped(bytes));
    }
    // Cut at a character boundary: back off over UTF-8 continuation bytes.
    let mut cut = SHOWN_NAME_BYTES;
    while cut > 0 && bytes[cut] & 0b1100_0000 == 0b1000_0000 {
        cut -= 1;
    }
    format!("\"{}\"… ({} bytes)", escaped(&bytes[..cut]), bytes.len())
}

/// `text` safe to print on a terminal: control characters (escape sequences, newlines,
/// carriage returns) are shown escaped (`\u{1b}`, `\n`), so a name a client chose can
/// neither move the cursor nor forge a row of output; everything else is unchanged.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The mode column of a lock: `EX` when granted or waiting (the section says which),
/// `PR->EX` while converting.
pub fn mode_column(state: &LockState) -> String {
    match *state {
        LockState::Granted { mode } => mode.to_string(),
        LockState::Converting { from, to } => format!("{from}->{to}"),
        LockState::Waiting { mode } => mode.to_string(),
    }
}

/// `alice@host:42 (s3) in EX for 12s`, for a lock of a reply stamped `now_ms`.
pub fn lock_line(lock: &LockInfo, now_ms: u64) -> String {
    format!(
        "{} ({}) in {} for {}",
        printable(&lock.session_name),
        lock.session,
        mode_column(&lock.state),
        age(since(now_ms, lock.since_ms))
    )
}

/// Who holds a resource, in one line: `held by a (s1) in PR for 3s, b (s2) in PR for 1s`, or
/// `not held by anyone now`. Conversions in progress count as holders of their old mode.
/// `now_ms` is the server clock of the reply that carried `info`.
pub fn holders_line(info: Option<&ResourceInfo>, now_ms: u64) -> String {
    let holders: Vec<String> = info
        .map(|r| {
            r.granted
                .iter()
                .chain(r.converting.iter())
                .map(|l| lock_line(l, now_ms))
                .collect()
        })
        .unwrap_or_default();
    if holders.is_empty() {
        "not held by anyone now".to_owned()
    } else {
        format!("held by {}", holders.join(", "))
    }
}

/// Why a request in `wanted` was not granted: [`holders_line`], and when every holder's mode
/// is compatible with `wanted`, the request waited for those queued before it (first come,
/// first served: R10), so the first of them is named: `...; queued ahead: bob (s13) in EX
/// for 1s (and 2 more)`. `info` is the resource after the request left the queue.
pub fn refusal_line(info: Option<&ResourceInfo>, wanted: Mode, now_ms: u64) -> String {
    let mut line = holders_line(info, now_ms);
    let Some(r) = info else {
        return line;
    };
    let compatible = r
        .granted
        .iter()
        .chain(r.converting.iter())
        .all(|l| match l.state {
            LockState::Granted { mode } | LockState::Converting { from: mode, .. } => {
                mode.is_compatible(wanted)
            }
            LockState::Waiting { .. } => true,
        });
    if compatible && let Some(first) = r.converting.iter().chain(r.waiting.iter()).next() {
        line.push_str(&format!("; queued ahead: {}", lock_line(first, now_ms)));
        let more = r.converting.len() + r.waiting.len() - 1;
        if more > 0 {
            line.push_str(&format!(" (and {more} more)"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlock_client::{FencingToken, LockId, Mode, SessionId};

    #[test]
    fn ages() {
        assert_eq!(age(Duration::from_millis(350)), "350ms");
        assert_eq!(age(Duration::from_millis(12_900)), "12s");
        assert_eq!(age(Duration::from_secs(184)), "3m04s");
        assert_eq!(age(Duration::from_secs(7500)), "2h05m");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5)), "3d04h");
    }

    #[test]
    fn durations_need_their_unit() {
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            duration("0.5").unwrap_err(),
            "a unit is needed: 0.5s or 0.5ms, say (also m and h)"
        );
        let other = duration("5x").unwrap_err();
        assert!(other.contains("unknown time unit"), "{other}");
        assert!(other.ends_with("(expected e.g. 500ms, 30s, 2m)"), "{other}");
    }

    #[test]
    fn age_is_reply_clock_minus_since() {
        assert_eq!(since(10_000, 7_000), Duration::from_millis(3_000));
        assert_eq!(since(10_000, 10_000), Duration::ZERO);
        assert_eq!(since(1_000, 5_000), Duration::ZERO, "saturates");
    }

    #[test]
    fn names_are_lossy() {
        assert_eq!(name(b"db"), "db");
        assert_eq!(name(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn escaped_names_tell_every_name_apart() {
        assert_eq!(escaped(b"db"), "db");
        assert_eq!(escaped("名前".as_bytes()), "名前");
        // A byte that is not UTF-8, the replacement character, and the text `\xff` are three
        // different names, and look different.
        let shown = [
            escaped(b"bin\xff"),
            escaped("bin\u{fffd}".as_bytes()),
            escaped(b"bin\\xff"),
        ];
        assert_eq!(shown[0], "bin\\xff");
        assert_eq!(shown[1], "bin\u{fffd}");
        assert_eq!(shown[2], "bin\\\\xff");
        assert_eq!(escaped(b"a\nb\"c\x1b[2J"), "a\\nb\\\"c\\u{1b}[2J");
        assert_eq!(quoted(b"x\xfe"), "\"x\\xfe\"");
    }

    #[test]
    fn long_names_are_cut_in_messages() {
        assert_eq!(quoted(b"db"), "\"db\"");
        let exact = "a".repeat(SHOWN_NAME_BYTES);
        assert_eq!(quoted(exact.as_bytes()), format!("{exact:?}"));
        let long = "a".repeat(70_000);
        assert_eq!(
            quoted(long.as_bytes()),
            format!("{:?}… (70000 bytes)", "a".repeat(SHOWN_NAME_BYTES))
        );
        // Never inside a character: 63 ASCII bytes, then a 3-byte one across the cut.
        let straddling = format!("{}€€", "a".repeat(SHOWN_NAME_BYTES - 1));
        assert_eq!(
            quoted(straddling.as_bytes()),
            format!("{:?}… (69 bytes)", "a".repeat(SHOWN_NAME_BYTES - 1))
        );
    }

    fn lock(state: LockState, since_ms: u64) -> LockInfo {
        LockInfo {
            lock: LockId(7),
            session: SessionId(3),
            session_name: "alice@h:42".into(),
            state,
            token: Some(FencingToken(9)),
            since_ms,
        }
    }

    #[test]
    fn holder_lines() {
        let info = ResourceInfo {
            name: b"db".to_vec(),
            value: vec![],
            value_valid: true,
            granted: vec![lock(LockState::Granted { mode: Mode::PR }, 7_000)],
            converting: vec![lock(
                LockState::Converting {
                    from: Mode::PR,
                    to: Mode::EX,
                },
                9_500,
            )],
            waiting: vec![lock(LockState::Waiting { mode: Mode::EX }, 9_900)],
            omitted: 0,
        };
        assert_eq!(
            holders_line(Some(&info), 10_000),
            "held by alice@h:42 (s3) in PR for 3s, alice@h:42 (s3) in PR->EX for 500ms"
        );
        // The same locks in a reply stamped a minute later are a minute older.
        assert_eq!(
            holders_line(Some(&info), 70_000),
            "held by alice@h:42 (s3) in PR for 1m03s, alice@h:42 (s3) in PR->EX for 1m00s"
        );
        assert_eq!(holders_line(None, 10_000), "not held by anyone now");
    }

    #[test]
    fn a_compatible_request_is_told_what_is_queued_ahead() {
        let pw = lock(LockState::Granted { mode: Mode::PW }, 7_000);
        let ex = lock(LockState::Waiting { mode: Mode::EX }, 9_000);
        let info = ResourceInfo {
            name: b"db".to_vec(),
            value: vec![],
            value_valid: true,
            granted: vec![pw],
            converting: vec![],
            waiting: vec![ex.clone(), ex],
            omitted: 0,
        };
        let held = "held by alice@h:42 (s3) in PW for 3s";
        // CR is compatible with PW: what holds it up is the EX queued first (R10).
        assert_eq!(
            refusal_line(Some(&info), Mode::CR, 10_000),
            format!("{held}; queued ahead: alice@h:42 (s3) in EX for 1s (and 1 more)")
        );
        // PR is not: the holder says it all.
        assert_eq!(refusal_line(Some(&info), Mode::PR, 10_000), held);
        assert_eq!(
            refusal_line(None, Mode::CR, 10_000),
            "not held by anyone now"
        );
    }

    #[test]
    fn names_from_clients_cannot_drive_the_terminal() {
        assert_eq!(printable("alice@h:42"), "alice@h:42");
        assert_eq!(printable("é ü 漢"), "é ü 漢");
        assert_eq!(
            printable("\u{1b}[2J\nforged\trow\r"),
            "\\u{1b}[2J\\nforged\\trow\\r"
        );
    }
}
