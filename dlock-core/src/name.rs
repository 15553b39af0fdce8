//! Resource names, stored by the name index and by the resource.
//!
//! Most names are short, so a name of up to [`INLINE`] bytes lives inside the value itself
//! (32 bytes) and costs no heap allocation: each of its two copies is cheaper than sharing
//! one heap block. A longer name is one reference-counted block shared by both copies, so
//! that it is not stored twice.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name stored inline.
const INLINE: usize = 30;

/// A resource name. Ordered, compared and looked up by its bytes.
#[derive(Clone)]
pub(crate) enum Name {
    /// `bytes[..len]` is the name.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A name longer than [`INLINE`] bytes.
    Heap(Arc<[u8]>),
}

impl Name {
    pub(crate) fn new(bytes: Vec<u8>) -> Name {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0; INLINE];
                inline[..bytes.len()].copy_from_slice(&bytes);
                Name::Inline { len, bytes: inline }
            }
            _ => Name::Heap(bytes.into()),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, bytes } => &bytes[..usize::from(*len).min(INLINE)],
            Name::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Name").field(&self.as_bytes()).finish()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_bytes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Name::new)
    }
}

#[cfg(test)]
mod tests {
    use super::{INLINE, Name};

    #[test]
    fn short_and_long_names_keep_their_bytes_and_order() {
        let short = Name::new(b"k-12345678".to_vec());
        let edge = Name::new(vec![b'a'; INLINE]);
        let long = Name::new(vec![b'a'; INLINE + 1]);
        assert!(matches!(short, Name::Inline { .. }));
        assert!(matches!(edge, Name::Inline { .. }));
        assert!(matches!(long, Name::Heap(_)));
        assert_eq!(short.as_bytes(), b"k-12345678");
        assert_eq!(edge.as_bytes(), &[b'a'; INLINE][..]);
        assert_eq!(long.as_bytes(), &[b'a'; INLINE + 1][..]);
        // Ordered by bytes, whatever the storage: a prefix sorts first.
        assert!(edge < long);
        assert!(Name::new(Vec::new()) < short);
        assert_eq!(std::mem::size_of::<Name>(), 32);
    }
}
