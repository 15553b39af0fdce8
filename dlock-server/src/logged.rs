//! Client-chosen text (session names, identities from certificates) as it goes into the
//! server's log: escaped, so that a name cannot end a log line and forge the next one, move
//! the terminal's cursor or reverse the text after it.

use std::fmt;

/// `text` written with its control characters, its bidirectional controls and its
/// backslashes escaped (`\n`, `\u{1b}`, `\u{202e}`, `\\`); everything else as it is.
pub(crate) struct Logged<'a>(pub(crate) &'a str);

impl fmt::Display for Logged<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            if c == '\\' || c.is_control() || is_bidi_control(c) {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The characters that change the direction of the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_cannot_forge_a_log_line() {
        let name = "x\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J \u{202e}txt.exe a\\b";
        let shown = Logged(name).to_string();
        assert_eq!(
            shown,
            "x\\n2026-01-01T00:00:00Z ERROR forged\\u{1b}[2J \\u{202e}txt.exe a\\\\b"
        );
        assert!(!shown.chars().any(|c| c.is_control() || is_bidi_control(c)));
        assert_eq!(Logged("release-7 ünïcode").to_string(), "release-7 ünïcode");
    }
}
