//! A slab: a `Vec` of slots with a free list, addressed by `u32` slot numbers.
//!
//! Locks and resources live in slabs rather than in ordered maps keyed by id because a map
//! node keeps each entry's whole value inline and B-tree nodes are on average only a little
//! more than half full; a dense vector of slots costs the value's size plus a tag. That is
//! what keeps a held lock on its own resource near the memory budget of the crate docs.
//! Slot numbers are internal and never appear in events or queries.
//!
//! The slots live in chunks of [`CHUNK`] that never move once full: a table that grows adds
//! a chunk, where one vector doubling its storage copied the whole table at once (at a
//! quarter of a million locks, some 40 MB of locks and resources, in one step of the engine
//! that every client waited for). Serialised, the chunks are one sequence, as a vector is.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Entry<T> {
    Full(T),
    Free(Option<u32>),
}

/// Slots per chunk.
const CHUNK: usize = 4096;

/// A growable sequence in chunks of [`CHUNK`]: pushing never moves what is stored (a chunk
/// made by `clone` may move once, when it fills up to `CHUNK`).
#[derive(Clone, Debug)]
struct Chunks<E> {
    chunks: Vec<Vec<E>>,
    len: usize,
}

impl<E> Chunks<E> {
    fn new() -> Chunks<E> {
        Chunks {
            chunks: Vec::new(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, e: E) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(e),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(e);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn get(&self, i: usize) -> Option<&E> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut E> {
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }
}

impl<E: Serialize> Serialize for Chunks<E> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for e in self.chunks.iter().flatten() {
            seq.serialize_element(e)?;
        }
        seq.end()
    }
}

impl<'de, E: Deserialize<'de>> Deserialize<'de> for Chunks<E> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seq<E>(PhantomData<E>);
        impl<'de, E: Deserialize<'de>> Visitor<'de> for Seq<E> {
            type Value = Chunks<E>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of slab entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Chunks<E>, A::Error> {
                let mut chunks = Chunks::new();
                while let Some(e) = seq.next_element()? {
                    chunks.push(e);
                }
                Ok(chunks)
            }
        }
        deserializer.deserialize_seq(Seq(PhantomData))
    }
}

/// Values addressed by slot numbers that stay valid until the value is removed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Slab<T> {
    entries: Chunks<Entry<T>>,
    free: Option<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Chunks::new(),
            free: None,
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value` and returns its slot, or `None` when `u32` slots are exhausted.
    pub(crate) fn insert(&mut self, value: T) -> Option<u32> {
        if let Some(slot) = self.free {
            let entry = self.entries.get_mut(slot as usize)?;
            let Entry::Free(next) = *entry else {
                return None;
            };
            *entry = Entry::Full(value);
            self.free = next;
            self.len += 1;
            return Some(slot);
        }
        // u32::MAX stays free: queue links use it as "none".
        let slot = u32::try_from(self.entries.len())
            .ok()
            .filter(|&s| s != u32::MAX)?;
        self.entries.push(Entry::Full(value));
        self.len += 1;
        Some(slot)
    }

    /// Removes and returns the value in `slot`.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<T> {
        let entry = self.entries.get_mut(slot as usize)?;
        if matches!(entry, Entry::Free(_)) {
            return None;
        }
        let old = std::mem::replace(entry, Entry::Free(self.free));
        self.free = Some(slot);
        self.len -= 1;
        match old {
            Entry::Full(v) => Some(v),
            Entry::Free(_) => None,
        }
    }

    pub(crate) fn get(&self, slot: u32) -> Option<&T> {
        match self.entries.get(slot as usize)? {
            Entry::Full(v) => Some(v),
            Entry::Free(_) => None,
        }
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        match self.entries.get_mut(slot as usize)? {
            Entry::Full(v) => Some(v),
            Entry::Free(_) => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::{CHUNK, Entry, Slab};

    /// The layout a slab had as one vector.
    #[derive(Serialize)]
    struct VecSlab<T> {
        entries: Vec<Entry<T>>,
        free: Option<u32>,
        len: usize,
    }

    fn bincode<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    fn three_chunks() -> Slab<u64> {
        let mut s = Slab::default();
        for i in 0..3 * CHUNK as u64 + 5 {
            s.insert(i * 7).unwrap();
        }
        for slot in [0, 1, CHUNK as u32, 2 * CHUNK as u32 + 3] {
            s.remove(slot).unwrap();
        }
        s
    }

    #[test]
    fn a_growing_slab_never_moves_what_it_holds() {
        let mut s = Slab::default();
        s.insert(1u64).unwrap();
        let first: *const u64 = s.get(0).unwrap();
        for i in 0..4 * CHUNK as u64 {
            s.insert(i).unwrap();
        }
        assert!(std::ptr::eq(first, s.get(0).unwrap()));
    }

    #[test]
    fn a_slab_serialises_as_the_one_vector_it_was_and_reads_back() {
        let s = three_chunks();
        let flat = VecSlab {
            entries: s.entries.chunks.iter().flatten().cloned().collect(),
            free: s.free,
            len: s.len,
        };
        assert_eq!(flat.entries.len(), 3 * CHUNK + 5);
        let bytes = bincode(&s);
        assert_eq!(bytes, bincode(&flat));
        let (back, _): (Slab<u64>, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back.len(), s.len());
        for slot in 0..(3 * CHUNK + 6) as u32 {
            assert_eq!(back.get(slot), s.get(slot), "slot {slot}");
        }
        // The free list survives: the next insert reuses the last removed slot.
        let mut back = back;
        assert_eq!(back.insert(0), Some(2 * CHUNK as u32 + 3));
    }

    #[test]
    fn slots_are_reused_after_removal() {
        let mut s = Slab::default();
        let a = s.insert("a").unwrap();
        let b = s.insert("b").unwrap();
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(a), None);
        let c = s.insert("c").unwrap();
        assert_eq!(c, a);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 2);
    }
}
