//! Bearer tokens: the `--auth-file` (one `IDENTITY SHA256HEX` line per token; the server
//! keeps only hashes) and the check of a `Hello`'s token against it, in constant time.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use dlock_proto::to_hex as hex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ServerError;

/// The hashes of the valid tokens, each with the identity it proves.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    entries: Vec<([u8; 32], Arc<str>)>,
}

impl Tokens {
    /// Whether the file named no token at all (every client is then refused).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The SHA-256 of `token`, as the 64 lowercase hex digits of an `--auth-file` line.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The hash `dlock-server hash-token` prints for `line`, the line it read: the token is the
/// line without its surrounding whitespace, as a client reads it from its token file. A line
/// with no token (empty input, or blanks) is refused: its hash would be the empty string's.
pub fn hash_token_line(line: &str) -> Result<String, String> {
    match line.trim() {
        "" => Err(
            "no token on standard input (hash-token reads the token from its first \
                   line, e.g. `dlock-server hash-token < alice.token`)"
                .into(),
        ),
        token => Ok(hash_token(token)),
    }
}

/// The longest identity: it leads the name of every session it opens (`[identity] name`).
pub const MAX_IDENTITY_LEN: usize = 64;

/// Checks an identity for an `--auth-file` line (or a client certificate's common name): one
/// word of at most [`MAX_IDENTITY_LEN`] bytes, not `*` (the rules' name for every identity
/// not listed) and not starting with `#` (the line would be a comment).
pub fn check_identity(identity: &str) -> Result<(), String> {
    if identity.is_empty() || identity.contains(char::is_whitespace) {
        Err("an identity is one word".into())
    } else if identity.len() > MAX_IDENTITY_LEN {
        Err(format!(
            "an identity is at most {MAX_IDENTITY_LEN} bytes (it leads every session name, \
             which is held to 256 bytes by default)"
        ))
    } else if identity == crate::security::rules::ANY_IDENTITY {
        Err("`*` is the rules' name for every identity not listed, not an identity".into())
    } else if identity.starts_with('#') {
        Err("an identity cannot start with `#` (its auth-file line would be a comment)".into())
    } else {
        Ok(())
    }
}

/// A fresh random token (256 bits, as 64 hex digits).
pub fn new_token() -> String {
    hex(&rand::random::<[u8; 32]>())
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Reads an auth file: `IDENTITY SHA256HEX` per line; blank lines and lines starting with
    /// `#` are ignored. An identity may have several tokens; a hash may appear only once.
    pub(crate) fn load(path: &Path) -> Result<Tokens, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Auth(format!("{}: {e}", path.display())))?;
        Tokens::parse(&text).map_err(|e| ServerError::Auth(format!("{}: {e}", path.display())))
    }

    /// Parses the text of an auth file. A byte order mark at its start (some editors write
    /// one) is not part of the first identity.
    pub(crate) fn parse(text: &str) -> Result<Tokens, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(identity), Some(hash), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("line {}: expected `IDENTITY SHA256HEX`", n + 1));
            };
            check_identity(identity).map_err(|e| format!("line {}: {e}", n + 1))?;
            let Some(hash) = unhex(&hash.to_ascii_lowercase()) else {
                return Err(format!("line {}: the hash must be 64 hex digits", n + 1));
            };
            if !seen.insert(hash) {
                return Err(format!("line {}: the same token hash appears twice", n + 1));
            }
            entries.push((hash, Arc::from(identity)));
        }
        Ok(Tokens { entries })
    }

    /// The identity `token` proves, if any. Every entry is compared, in constant time, so the
    /// time taken says nothing about which hash (or how much of one) matched.
    pub(crate) fn authenticate(&self, token: &str) -> Option<Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, identity) in &self.entries {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(identity.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_token_trims_its_line_and_refuses_one_without_a_token() {
        assert_eq!(hash_token_line(" abc \n").unwrap(), hash_token("abc"));
        for blank in ["", "\n", " \t\r\n"] {
            let e = hash_token_line(blank).unwrap_err();
            assert!(
                e.starts_with("no token on standard input"),
                "{blank:?}: {e}"
            );
        }
    }

    #[test]
    fn a_token_proves_the_identity_of_its_hash_and_nothing_else() {
        let token = new_token();
        let text = format!(
            "# ops team\n\nalice {}\nbob {}\n",
            hash_token(&token),
            hash_token("bobs")
        );
        let tokens = Tokens::parse(&text).unwrap();
        assert_eq!(tokens.authenticate(&token).as_deref(), Some("alice"));
        assert_eq!(tokens.authenticate("bobs").as_deref(), Some("bob"));
        assert_eq!(tokens.authenticate("bob"), None);
        assert_eq!(tokens.authenticate(""), None);
        // Saved by an editor that starts the file with a byte order mark: the same.
        let tokens = Tokens::parse(&format!("\u{feff}{text}")).unwrap();
        assert_eq!(tokens.authenticate(&token).as_deref(), Some("alice"));
        let first = format!("\u{feff}alice {}\n", hash_token(&token));
        let tokens = Tokens::parse(&first).unwrap();
        assert_eq!(tokens.authenticate(&token).as_deref(), Some("alice"));
    }

    #[test]
    fn an_identity_is_one_word_that_is_neither_the_wildcard_nor_a_comment() {
        assert_eq!(check_identity("alice"), Ok(()));
        assert_eq!(check_identity("svc-1@prod"), Ok(()));
        for bad in ["", "a b", "*", "#ops"] {
            assert!(check_identity(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_identity(&"a".repeat(MAX_IDENTITY_LEN)), Ok(()));
        let long = check_identity(&"a".repeat(MAX_IDENTITY_LEN + 1)).unwrap_err();
        assert!(
            long.starts_with("an identity is at most 64 bytes"),
            "{long}"
        );
        let star = format!("* {}\n", hash_token("t"));
        let e = Tokens::parse(&star).unwrap_err();
        assert!(e.starts_with("line 1: `*` is the rules' name"), "{e}");
    }

    #[test]
    fn a_token_file_that_cannot_be_read_is_named_as_such() {
        let t = Tokens::load(std::path::Path::new("/nonexistent/tokens"))
            .unwrap_err()
            .to_string();
        assert!(
            t.starts_with("token file (--auth-file): /nonexistent/tokens: "),
            "{t}"
        );
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(new_token().len(), 64);
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let bad = Tokens::parse("alice\n").unwrap_err();
        assert!(bad.contains("line 1"), "{bad}");
        let bad = Tokens::parse(&format!("a {}\nb zz\n", hash_token("x"))).unwrap_err();
        assert!(bad.contains("line 2"), "{bad}");
        let h = hash_token("x");
        let bad = Tokens::parse(&format!("a {h}\nb {h}\n")).unwrap_err();
        assert!(bad.contains("twice"), "{bad}");
    }
}
