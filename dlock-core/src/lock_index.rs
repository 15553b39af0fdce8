//! The index from lock id to lock slot.
//!
//! Lock ids only grow (each is the index of the input that created the lock), so the index
//! is two sorted vectors that new entries append to: 12 bytes an entry and a binary search
//! per lookup, where an ordered map costs about twice that in half-full nodes. A removal
//! leaves a hole; once holes outnumber live entries they are dropped in one pass, so each
//! removal costs O(1) amortised.

use serde::{Deserialize, Serialize};

use crate::LockId;
use crate::lock::LockRef;

/// The slot a hole holds.
const HOLE: LockRef = LockRef(u32::MAX);

/// Holes are never compacted below this many, so that small tables do not churn.
const MIN_HOLES: usize = 64;

/// Lock id to slot, for the ids of live locks.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct LockIndex {
    /// Strictly increasing.
    ids: Vec<LockId>,
    /// `slots[i]` is the slot of `ids[i]`, or [`HOLE`] once removed.
    slots: Vec<LockRef>,
    holes: usize,
}

impl LockIndex {
    /// Records that lock `id` lives in slot `r`.
    pub(crate) fn insert(&mut self, id: LockId, r: LockRef) {
        match self.ids.last() {
            // The normal case: a new lock's id is above every other.
            None => {
                self.ids.push(id);
                self.slots.push(r);
            }
            Some(&last) if last < id => {
                self.ids.push(id);
                self.slots.push(r);
            }
            // Kept correct for any order, at the cost of a shift.
            Some(_) => match self.ids.binary_search(&id) {
                Ok(i) => {
                    if self.slots[i] == HOLE {
                        self.holes -= 1;
                    }
                    self.slots[i] = r;
                }
                Err(i) => {
                    self.ids.insert(i, id);
                    self.slots.insert(i, r);
                }
            },
        }
    }

    /// The slot of lock `id`, if it is live.
    pub(crate) fn get(&self, id: &LockId) -> Option<&LockRef> {
        let i = self.ids.binary_search(id).ok()?;
        self.slots.get(i).filter(|&&r| r != HOLE)
    }

    /// Forgets lock `id`.
    pub(crate) fn remove(&mut self, id: &LockId) {
        let Ok(i) = self.ids.binary_search(id) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(i).filter(|r| **r != HOLE) else {
            return;
        };
        *slot = HOLE;
        self.holes += 1;
        if self.holes >= MIN_HOLES && self.holes * 2 > self.ids.len() {
            self.compact();
        }
    }

    /// Drops every hole, and most of the spare capacity once the table has shrunk a lot.
    fn compact(&mut self) {
        let mut keep = self.slots.iter().map(|&r| r != HOLE);
        self.ids.retain(|_| keep.next().unwrap_or(false));
        self.slots.retain(|&r| r != HOLE);
        self.holes = 0;
        if self.ids.len() < self.ids.capacity() / 4 {
            self.ids.shrink_to(self.ids.len() * 2);
            self.slots.shrink_to(self.slots.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LockIndex, MIN_HOLES};
    use crate::LockId;
    use crate::lock::LockRef;

    #[test]
    fn lookups_follow_inserts_and_removals_across_compactions() {
        let mut ix = LockIndex::default();
        let n = 10 * MIN_HOLES as u64;
        for i in 0..n {
            ix.insert(LockId(3 * i + 1), LockRef(i as u32));
        }
        // Remove three entries in four (twice each), forcing compactions on the way.
        for i in 0..n {
            if i % 4 != 0 {
                ix.remove(&LockId(3 * i + 1));
                ix.remove(&LockId(3 * i + 1));
            }
        }
        assert!(ix.holes < MIN_HOLES.max(ix.ids.len()));
        for i in 0..n {
            let want = (i % 4 == 0).then_some(LockRef(i as u32));
            assert_eq!(
                ix.get(&LockId(3 * i + 1)).copied(),
                want,
                "id {}",
                3 * i + 1
            );
            assert_eq!(ix.get(&LockId(3 * i + 2)), None);
        }
        // Out of order inserts (never made by the engine) still land in order.
        ix.insert(LockId(2), LockRef(7));
        ix.insert(LockId(4), LockRef(8));
        assert_eq!(ix.get(&LockId(2)), Some(&LockRef(7)));
        assert_eq!(ix.get(&LockId(4)), Some(&LockRef(8)));
        assert!(ix.ids.windows(2).all(|w| w[0] < w[1]));
        ix.insert(LockId(3 * n + 5), LockRef(9));
        assert_eq!(ix.get(&LockId(3 * n + 5)), Some(&LockRef(9)));
    }
}
