//! The input side of `dlock session`: one command per line, parsed into a [`Command`] without
//! touching the network, so that every rule of the grammar is tested here.
//!
//! ```text
//! lock TAG NAME MODE [nowait | timeout=DURATION] [notify] [value]
//! convert TAG MODE [nowait | timeout=DURATION] [quecvt] [value | value=HEX | invalidate]
//! unlock TAG [value=HEX | invalidate]
//! cancel TAG
//! query TAG NAME
//! ping TAG
//! quit
//! ```
//!
//! Words are separated by blanks. NAME is printable ASCII without blanks, or `hex:` followed by
//! the bytes of any name in hexadecimal. Blank lines and lines whose first non-blank character
//! is `#` are ignored.

use std::fmt;
use std::time::Duration;

use dlock_client::Mode;
pub use dlock_proto::{from_hex, to_hex};

/// The longest tag accepted.
pub const MAX_TAG_LEN: usize = 64;

use crate::format::{HEX_PREFIX, duration, hex_name};

/// A caller-chosen label: 1 to [`MAX_TAG_LEN`] ASCII letters, digits, `_` or `-`. It names a
/// lock for as long as the lock lives and labels every answer about it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a lock or conversion request may wait in its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// As long as it takes.
    Queue,
    /// Not at all: granted at once or refused with `not_queued` (NOQUEUE, R22, R19).
    NoQueue,
    /// At most this long, then refused with `timed_out` (R65).
    Timeout(Duration),
}

/// What a command does with the resource's value block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueOp {
    /// Nothing (R25).
    Keep,
    /// Read it when granted (`value`).
    Read,
    /// Write these bytes (`value=HEX`): on unlock or on a conversion down from PW/EX.
    Write(Vec<u8>),
    /// Mark it not valid (`invalidate`), from PW/EX (R29a).
    Invalidate,
}

/// A new lock request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockCmd {
    /// The resource name.
    pub resource: Vec<u8>,
    /// The mode asked for.
    pub mode: Mode,
    /// How long it may wait.
    pub wait: Wait,
    /// Whether blocking notifications are reported (`notify`).
    pub notify: bool,
    /// Whether the value block is read on grant (`value`).
    pub read_value: bool,
}

/// A conversion of a held lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertCmd {
    /// The mode asked for.
    pub mode: Mode,
    /// How long it may wait.
    pub wait: Wait,
    /// QUECVT (R21).
    pub quecvt: bool,
    /// The value block.
    pub value: ValueOp,
}

/// One command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `lock TAG NAME MODE ...`
    Lock(Tag, LockCmd),
    /// `convert TAG MODE ...`
    Convert(Tag, ConvertCmd),
    /// `unlock TAG [value=HEX | invalidate]`: [`ValueOp::Keep`], `Write` or `Invalidate`.
    Unlock(Tag, ValueOp),
    /// `cancel TAG`
    Cancel(Tag),
    /// `query TAG NAME`
    Query(Tag, Vec<u8>),
    /// `ping TAG`
    Ping(Tag),
    /// `quit`
    Quit,
}

/// Why a line is not a command; the tag, when the line got that far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// The tag of the line, if it had a valid one.
    pub tag: Option<Tag>,
    /// What is wrong, for the `error` answer.
    pub message: String,
}

impl BadLine {
    fn new(tag: Option<&Tag>, message: impl Into<String>) -> BadLine {
        BadLine {
            tag: tag.cloned(),
            message: message.into(),
        }
    }
}

/// Parses one line (without its line break). `Ok(None)` for a blank line or a comment.
pub fn parse(line: &[u8]) -> Result<Option<Command>, BadLine> {
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let Some(verb) = words.next() else {
        return Ok(None);
    };
    if verb.starts_with(b"#") {
        return Ok(None);
    }
    let verb = text(verb).ok_or_else(|| BadLine::new(None, "a command is a word of ASCII"))?;
    if verb == "quit" {
        return match words.next() {
            None => Ok(Some(Command::Quit)),
            Some(_) => Err(BadLine::new(None, "quit takes nothing after it")),
        };
    }
    if !matches!(
        verb,
        "lock" | "convert" | "unlock" | "cancel" | "query" | "ping"
    ) {
        return Err(BadLine::new(
            None,
            format!(
                "unknown command {verb:?}: expected lock, convert, unlock, cancel, query, ping \
                 or quit"
            ),
        ));
    }
    let tag = tag(words.next()).map_err(|m| BadLine::new(None, m))?;
    let t = Some(&tag);
    let mut need = |what: &str| {
        words
            .next()
            .ok_or_else(|| BadLine::new(t, format!("{verb} {tag}: {what} is missing")))
    };
    let command = match verb {
        "lock" => {
            let resource = resource(need("the resource name")?).map_err(|m| BadLine::new(t, m))?;
            let mode = mode(need("the mode")?).map_err(|m| BadLine::new(t, m))?;
            let o = Options::parse(words, &["nowait", "timeout", "notify", "value"])
                .map_err(|m| BadLine::new(t, m))?;
            let wait = o.wait().map_err(|m| BadLine::new(t, m))?;
            if o.value.as_ref().is_some_and(|v| v.is_some()) {
                return Err(BadLine::new(
                    t,
                    "lock reads the value block ('value'); it is written on unlock or convert",
                ));
            }
            Command::Lock(
                tag.clone(),
                LockCmd {
                    resource,
                    mode,
                    wait,
                    notify: o.notify,
                    read_value: o.value.is_some(),
                },
            )
        }
        "convert" => {
            let mode = mode(need("the mode")?).map_err(|m| BadLine::new(t, m))?;
            let o = Options::parse(
                words,
                &["nowait", "timeout", "quecvt", "value", "invalidate"],
            )
            .map_err(|m| BadLine::new(t, m))?;
            let wait = o.wait().map_err(|m| BadLine::new(t, m))?;
            let value = o.value_op(true).map_err(|m| BadLine::new(t, m))?;
            Command::Convert(
                tag.clone(),
                ConvertCmd {
                    mode,
                    wait,
                    quecvt: o.quecvt,
                    value,
                },
            )
        }
        "unlock" => {
            let o =
                Options::parse(words, &["value", "invalidate"]).map_err(|m| BadLine::new(t, m))?;
            let value = o.value_op(false).map_err(|m| BadLine::new(t, m))?;
            Command::Unlock(tag.clone(), value)
        }
        "query" => {
            let resource = resource(need("the resource name")?).map_err(|m| BadLine::new(t, m))?;
            no_more(words).map_err(|m| BadLine::new(t, m))?;
            Command::Query(tag.clone(), resource)
        }
        "cancel" => {
            no_more(words).map_err(|m| BadLine::new(t, m))?;
            Command::Cancel(tag.clone())
        }
        _ => {
            no_more(words).map_err(|m| BadLine::new(t, m))?;
            Command::Ping(tag.clone())
        }
    };
    Ok(Some(command))
}

/// The options after the fixed words of a command, each given at most once.
#[derive(Default)]
struct Options {
    nowait: bool,
    timeout: Option<Duration>,
    notify: bool,
    quecvt: bool,
    /// `value` (`Some(None)`) or `value=HEX` (`Some(Some(bytes))`).
    value: Option<Option<Vec<u8>>>,
    invalidate: bool,
}

impl Options {
    /// Parses `words`, accepting the options named in `allowed`.
    fn parse<'a>(
        words: impl Iterator<Item = &'a [u8]>,
        allowed: &[&str],
    ) -> Result<Options, String> {
        let mut o = Options::default();
        let mut seen: Vec<&str> = Vec::new();
        for word in words {
            let word = text(word).ok_or("options are ASCII words")?;
            let (key, arg) = match word.split_once('=') {
                Some((k, a)) => (k, Some(a)),
                None => (word, None),
            };
            let Some(&key) = allowed.iter().find(|a| **a == key) else {
                return Err(format!(
                    "unknown option {word:?}: expected {}",
                    allowed.join(", ")
                ));
            };
            if seen.contains(&key) {
                return Err(format!("option {key} given twice"));
            }
            seen.push(key);
            let flag = |o: &mut bool| match arg {
                None => {
                    *o = true;
                    Ok(())
                }
                Some(_) => Err(format!("option {key} takes no value")),
            };
            match key {
                "nowait" => flag(&mut o.nowait)?,
                "notify" => flag(&mut o.notify)?,
                "quecvt" => flag(&mut o.quecvt)?,
                "invalidate" => flag(&mut o.invalidate)?,
                "timeout" => {
                    let arg = arg.ok_or("timeout needs a duration: timeout=2s")?;
                    let d = duration(arg).map_err(|e| format!("timeout={arg}: {e}"))?;
                    if d.is_zero() {
                        return Err("timeout=0 never waits: use nowait".to_owned());
                    }
                    o.timeout = Some(d);
                }
                _ => {
                    o.value = Some(match arg {
                        None => None,
                        Some(hex) => Some(value_bytes(hex)?),
                    });
                }
            }
        }
        Ok(o)
    }

    fn wait(&self) -> Result<Wait, String> {
        match (self.nowait, self.timeout) {
            (true, Some(_)) => Err("nowait and timeout exclude each other".to_owned()),
            (true, None) => Ok(Wait::NoQueue),
            (false, Some(d)) => Ok(Wait::Timeout(d)),
            (false, None) => Ok(Wait::Queue),
        }
    }

    /// The value block operation; `value` alone (a read) only where `may_read`.
    fn value_op(&self, may_read: bool) -> Result<ValueOp, String> {
        match (&self.value, self.invalidate) {
            (Some(_), true) => Err("value and invalidate exclude each other".to_owned()),
            (None, true) => Ok(ValueOp::Invalidate),
            (None, false) => Ok(ValueOp::Keep),
            (Some(Some(bytes)), false) => Ok(ValueOp::Write(bytes.clone())),
            (Some(None), false) if may_read => Ok(ValueOp::Read),
            (Some(None), false) => Err("unlock writes the value block: value=HEX".to_owned()),
        }
    }
}

fn text(word: &[u8]) -> Option<&str> {
    std::str::from_utf8(word).ok().filter(|s| s.is_ascii())
}

fn tag(word: Option<&[u8]>) -> Result<Tag, String> {
    let word = word.ok_or("the tag is missing")?;
    let ok = word.len() <= MAX_TAG_LEN
        && word
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    match text(word) {
        Some(t) if ok => Ok(Tag(t.to_owned())),
        _ => Err(format!(
            "bad tag {:?}: 1 to {MAX_TAG_LEN} letters, digits, '_' or '-'",
            String::from_utf8_lossy(word)
        )),
    }
}

fn mode(word: &[u8]) -> Result<Mode, String> {
    let word = text(word).ok_or("a mode is one of NL, CR, CW, PR, PW, EX")?;
    word.parse::<Mode>().map_err(|e| e.to_string())
}

/// The bytes of `value=HEX`. An empty value is refused rather than taken as zero bytes
/// (which the server would write as a value block of zeroes): in a script it is more likely
/// an empty variable than a wish to clear the block.
fn value_bytes(hex: &str) -> Result<Vec<u8>, String> {
    if hex.is_empty() {
        return Err(
            "value= needs the bytes to write, in hexadecimal (value=00 for a zero byte)".to_owned(),
        );
    }
    from_hex(hex).ok_or_else(|| {
        if hex.chars().all(|c| c.is_ascii_hexdigit()) {
            format!("value={hex}: an odd number of hexadecimal digits (two make a byte)")
        } else {
            format!("value={hex}: not hexadecimal")
        }
    })
}

fn resource(word: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(bytes) = hex_name(word) {
        return bytes;
    }
    if !word.iter().all(|b| b.is_ascii_graphic()) {
        return Err("a resource name with bytes outside printable ASCII is written hex:HEX".into());
    }
    Ok(word.to_vec())
}

fn no_more<'a>(mut words: impl Iterator<Item = &'a [u8]>) -> Result<(), String> {
    match words.next() {
        None => Ok(()),
        Some(w) => Err(format!(
            "unexpected {:?} at the end",
            String::from_utf8_lossy(w)
        )),
    }
}

/// A resource name as answers show it, in the form a command line accepts: as it is when it
/// is printable ASCII (and does not itself start with `hex:`), else `hex:` and its bytes.
pub fn show_name(name: &[u8]) -> String {
    let plain = !name.is_empty()
        && name.iter().all(u8::is_ascii_graphic)
        && !name.starts_with(HEX_PREFIX.as_bytes());
    match std::str::from_utf8(name) {
        Ok(s) if plain => s.to_owned(),
        _ => format!("{HEX_PREFIX}{}", to_hex(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line.as_bytes())
            .unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
            .unwrap_or_else(|| panic!("{line:?}: ignored"))
    }

    fn bad(line: &str) -> BadLine {
        parse(line.as_bytes()).expect_err(line)
    }

    fn t(s: &str) -> Tag {
        Tag(s.to_owned())
    }

    #[test]
    fn lock_lines() {
        assert_eq!(
            ok("lock a deploy EX"),
            Command::Lock(
                t("a"),
                LockCmd {
                    resource: b"deploy".to_vec(),
                    mode: Mode::EX,
                    wait: Wait::Queue,
                    notify: false,
                    read_value: false,
                }
            )
        );
        assert_eq!(
            ok("  lock\tc-1 cfg pr timeout=2s notify value  "),
            Command::Lock(
                t("c-1"),
                LockCmd {
                    resource: b"cfg".to_vec(),
                    mode: Mode::PR,
                    wait: Wait::Timeout(Duration::from_secs(2)),
                    notify: true,
                    read_value: true,
                }
            )
        );
        let Command::Lock(_, l) = ok("lock b hex:ff00 NL nowait") else {
            panic!("not a lock")
        };
        assert_eq!(l.resource, [0xff, 0x00]);
        assert_eq!(l.wait, Wait::NoQueue);
    }

    #[test]
    fn convert_unlock_cancel_query_ping_quit() {
        assert_eq!(
            ok("convert a PR"),
            Command::Convert(
                t("a"),
                ConvertCmd {
                    mode: Mode::PR,
                    wait: Wait::Queue,
                    quecvt: false,
                    value: ValueOp::Keep,
                }
            )
        );
        assert_eq!(
            ok("convert a EX nowait quecvt value"),
            Command::Convert(
                t("a"),
                ConvertCmd {
                    mode: Mode::EX,
                    wait: Wait::NoQueue,
                    quecvt: true,
                    value: ValueOp::Read,
                }
            )
        );
        let Command::Convert(_, c) = ok("convert a NL value=0A0b") else {
            panic!("not a convert")
        };
        assert_eq!(c.value, ValueOp::Write(vec![0x0a, 0x0b]));
        assert_eq!(
            ok("unlock a value=68656c6c6f"),
            Command::Unlock(t("a"), ValueOp::Write(b"hello".to_vec()))
        );
        assert_eq!(
            ok("unlock a invalidate"),
            Command::Unlock(t("a"), ValueOp::Invalidate)
        );
        assert_eq!(ok("unlock a"), Command::Unlock(t("a"), ValueOp::Keep));
        assert_eq!(ok("cancel c"), Command::Cancel(t("c")));
        assert_eq!(ok("query q hex:20"), Command::Query(t("q"), b" ".to_vec()));
        assert_eq!(ok("ping p"), Command::Ping(t("p")));
        assert_eq!(ok("quit"), Command::Quit);
    }

    #[test]
    fn blank_lines_and_comments_are_ignored() {
        for line in ["", "   ", "\t", "# lock a b EX", "  #x"] {
            assert_eq!(parse(line.as_bytes()), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn bad_lines_say_why_and_keep_the_tag() {
        for (line, want) in [
            ("grab a x EX", "unknown command \"grab\""),
            ("lock", "the tag is missing"),
            ("lock a.b x EX", "bad tag \"a.b\""),
            ("lock a", "lock a: the resource name is missing"),
            ("lock a x", "lock a: the mode is missing"),
            ("lock a x XX", "unknown lock mode \"XX\""),
            ("lock a x EX nowait timeout=1s", "exclude each other"),
            ("lock a x EX timeout=soon", "timeout=soon"),
            ("lock a x EX timeout=0s", "use nowait"),
            ("lock a x EX notify notify", "given twice"),
            ("lock a x EX quecvt", "unknown option \"quecvt\""),
            ("lock a x EX value=00", "written on unlock or convert"),
            ("lock a hex:f x EX", "hexadecimal"),
            ("lock a hex:zz EX", "hexadecimal"),
            ("unlock a value", "value=HEX"),
            ("unlock a value=", "value= needs the bytes"),
            ("unlock a value=abc", "odd number of hexadecimal digits"),
            ("unlock a value=0g", "value=0g: not hexadecimal"),
            ("unlock a value=00 invalidate", "exclude each other"),
            ("convert a EX notify=1", "unknown option"),
            ("convert a EX nowait=1", "takes no value"),
            ("cancel a now", "unexpected \"now\""),
            ("quit now", "quit takes nothing"),
        ] {
            let e = bad(line);
            assert!(e.message.contains(want), "{line:?}: {}", e.message);
        }
        assert_eq!(bad("lock a x XX").tag, Some(t("a")));
        assert_eq!(bad("lock a.b x EX").tag, None);
        assert!(bad("lock a \u{e9}t\u{e9} EX").message.contains("hex:HEX"));
        let long = format!("ping {}", "t".repeat(MAX_TAG_LEN + 1));
        assert!(bad(&long).message.contains("bad tag"));
        let longest = format!("ping {}", "t".repeat(MAX_TAG_LEN));
        assert!(parse(longest.as_bytes()).unwrap().is_some());
        assert!(parse(b"lock a \xff EX").is_err());
    }

    #[test]
    fn names_show_in_the_form_a_line_accepts() {
        for name in [
            &b"deploy"[..],
            b"a b",
            b"\xff\x00",
            b"",
            b"hex:41",
            b"caf\xc3\xa9",
        ] {
            let shown = show_name(name);
            let line = format!("query q {shown}");
            assert_eq!(
                ok(&line),
                Command::Query(t("q"), name.to_vec()),
                "{name:?} shown as {shown}"
            );
        }
        assert_eq!(show_name(b"deploy"), "deploy");
        assert_eq!(show_name(b"a b"), "hex:612062");
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(from_hex("00AB10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("+1"), None);
    }
}
