//! A slab: a `Vec` of slots with a free list, addressed by `u32` slot numbers.
//!
//! Locks and resources live in slabs rather than in ordered maps keyed by id because a map
//! node keeps each entry's whole value inline and B-tree nodes are on average only a little
//! more than half full; a dense vector of slots costs the value's size plus a tag. That is
//! what keeps a held lock on its own resource near the memory budget of the crate docs.
//! Slot numbers are internal and never appear in events or queries.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Entry<T> {
    Full(T),
    Free(Option<u32>),
}

/// Values addressed by slot numbers that stay valid until the value is removed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Option<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
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
    use super::Slab;

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
