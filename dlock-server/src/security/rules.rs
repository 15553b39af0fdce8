//! Authorisation rules (`--auth-rules`, TOML): what each identity may do on resources by name
//! prefix, and who may inspect other sessions.
//!
//! ```toml
//! # Identities that may inspect any session (Query::Session of another session).
//! admins = ["ops"]
//!
//! # Per identity, resource-name prefix = access. The longest matching prefix decides;
//! # a name no prefix matches gets "none".
//! [identities.alice]
//! "orders/" = "write"       # every mode; may write value blocks
//! "" = "list"               # sees every resource in queries, may lock none
//!
//! [identities.bob]
//! "orders/" = "read"        # NL, CR, PR; may read value blocks
//!
//! # Identities not listed above (and unauthenticated clients, if the server takes them).
//! [identities."*"]
//! "public/" = "read"
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use dlock_core::Mode;
use serde::Deserialize;

use crate::ServerError;

/// What an identity may do with the resources under a prefix; each level includes the ones
/// before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Nothing: the resources are invisible.
    None,
    /// See them in queries (holders, modes, tokens), without their value blocks.
    List,
    /// Take read modes (NL, CR, PR) and read value blocks.
    Read,
    /// Take every mode and write value blocks.
    Write,
}

impl Access {
    /// The access a lock of `mode` needs.
    pub fn for_mode(mode: Mode) -> Access {
        match mode {
            Mode::NL | Mode::CR | Mode::PR => Access::Read,
            Mode::CW | Mode::PW | Mode::EX => Access::Write,
        }
    }
}

/// The identity whose rules apply to identities not listed (and to clients without one).
pub const ANY_IDENTITY: &str = "*";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    identities: HashMap<String, BTreeMap<String, Access>>,
}

/// The parsed rules.
#[derive(Debug, Default)]
pub struct Rules {
    admins: HashSet<String>,
    identities: HashMap<String, Vec<(Vec<u8>, Access)>>,
}

impl Rules {
    /// Reads a rules file.
    pub(crate) fn load(path: &Path) -> Result<Rules, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Rules(format!("{}: {e}", path.display())))?;
        Rules::parse(&text).map_err(|e| ServerError::Rules(format!("{}: {e}", path.display())))
    }

    /// Parses the text of a rules file (TOML, which skips a byte order mark at its start).
    pub fn parse(text: &str) -> Result<Rules, String> {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let identities = file
            .identities
            .into_iter()
            .map(|(id, prefixes)| {
                let list = prefixes
                    .into_iter()
                    .map(|(p, a)| (p.into_bytes(), a))
                    .collect();
                (id, list)
            })
            .collect();
        Ok(Rules {
            admins: file.admins.into_iter().collect(),
            identities,
        })
    }

    /// The prefixes of `identity` (or of [`ANY_IDENTITY`] if it is not listed), in name order.
    fn table(&self, identity: Option<&str>) -> &[(Vec<u8>, Access)] {
        identity
            .and_then(|id| self.identities.get(id))
            .or_else(|| self.identities.get(ANY_IDENTITY))
            .map_or(&[], Vec::as_slice)
    }

    /// What `identity` may do with the resource `name`: the access of the longest matching
    /// prefix, or `None`.
    pub fn access(&self, identity: Option<&str>, name: &[u8]) -> Access {
        self.table(identity)
            .iter()
            .filter(|(prefix, _)| name.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(Access::None, |(_, access)| *access)
    }

    /// Whether the rules give nobody any access (no prefix above `none` for any identity).
    pub(crate) fn grant_nothing(&self) -> bool {
        self.identities
            .values()
            .flatten()
            .all(|(_, access)| *access == Access::None)
    }

    /// Whether `identity` may inspect other sessions.
    pub fn is_admin(&self, identity: Option<&str>) -> bool {
        identity.is_some_and(|id| self.admins.contains(id))
    }

    /// The prefixes to scan for a query of `prefix` by `identity`: disjoint, in name order,
    /// each within `prefix`, together covering every resource under `prefix` that the
    /// identity may list (names under them may still be hidden by a longer prefix with less
    /// access; the caller filters).
    pub fn visible_ranges(&self, identity: Option<&str>, prefix: &[u8]) -> Vec<Vec<u8>> {
        let mut ranges: Vec<Vec<u8>> = self
            .table(identity)
            .iter()
            .filter(|(_, access)| *access >= Access::List)
            .filter_map(|(rule, _)| {
                if rule.starts_with(prefix) {
                    Some(rule.clone())
                } else if prefix.starts_with(rule) {
                    Some(prefix.to_vec())
                } else {
                    None
                }
            })
            .collect();
        ranges.sort();
        ranges.dedup();
        // Sorted, a range that another one contains comes after it: keep the containing one.
        let mut disjoint: Vec<Vec<u8>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            if !disjoint.last().is_some_and(|kept| range.starts_with(kept)) {
                disjoint.push(range);
            }
        }
        disjoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_file_that_cannot_be_read_is_named_as_such() {
        let e = Rules::load(Path::new("/nonexistent/rules.toml")).unwrap_err();
        let e = e.to_string();
        assert!(
            e.starts_with("rules file (--auth-rules): /nonexistent/rules.toml: "),
            "{e}"
        );
    }

    const RULES: &str = r#"
        admins = ["ops"]
        [identities.alice]
        "orders/" = "write"
        "orders/secret/" = "none"
        "" = "list"
        [identities.bob]
        "orders/" = "read"
        [identities."*"]
        "public/" = "read"
    "#;

    #[test]
    fn the_longest_prefix_decides() {
        let r = Rules::parse(RULES).unwrap();
        assert_eq!(r.access(Some("alice"), b"orders/1"), Access::Write);
        assert_eq!(r.access(Some("alice"), b"orders/secret/x"), Access::None);
        assert_eq!(r.access(Some("alice"), b"billing/1"), Access::List);
        assert_eq!(r.access(Some("bob"), b"orders/1"), Access::Read);
        assert_eq!(
            r.access(Some("bob"), b"public/1"),
            Access::None,
            "bob is listed"
        );
        assert_eq!(r.access(Some("carol"), b"public/1"), Access::Read);
        assert_eq!(r.access(None, b"public/1"), Access::Read);
        assert_eq!(r.access(None, b"orders/1"), Access::None);
        // The same file saved with a byte order mark reads the same.
        let marked = Rules::parse(&format!("\u{feff}{RULES}")).unwrap();
        assert_eq!(marked.access(Some("alice"), b"orders/1"), Access::Write);
        assert_eq!(marked.access(Some("carol"), b"public/1"), Access::Read);
    }

    #[test]
    fn modes_need_read_or_write() {
        for m in [Mode::NL, Mode::CR, Mode::PR] {
            assert_eq!(Access::for_mode(m), Access::Read);
        }
        for m in [Mode::CW, Mode::PW, Mode::EX] {
            assert_eq!(Access::for_mode(m), Access::Write);
        }
    }

    #[test]
    fn admins_are_listed_identities_only() {
        let r = Rules::parse(RULES).unwrap();
        assert!(r.is_admin(Some("ops")));
        assert!(!r.is_admin(Some("alice")));
        assert!(!r.is_admin(None));
    }

    #[test]
    fn ranges_are_disjoint_and_within_the_query() {
        let r = Rules::parse(RULES).unwrap();
        assert_eq!(r.visible_ranges(Some("alice"), b""), vec![b"".to_vec()]);
        assert_eq!(
            r.visible_ranges(Some("bob"), b""),
            vec![b"orders/".to_vec()]
        );
        assert_eq!(
            r.visible_ranges(Some("bob"), b"orders/4"),
            vec![b"orders/4".to_vec()]
        );
        assert!(r.visible_ranges(Some("bob"), b"billing/").is_empty());
    }

    #[test]
    fn unknown_access_levels_and_fields_are_errors() {
        assert!(Rules::parse("[identities.a]\n\"x\" = \"all\"\n").is_err());
        assert!(Rules::parse("admin = [\"a\"]\n").is_err());
    }
}
