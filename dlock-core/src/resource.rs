//! A resource (R1, R3): its name, value block, the counts of held modes and three queues.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::lock::{Link, Lock, LockRef};
use crate::name::Name;
use crate::slab::Slab;
use crate::{LockId, Mode};

/// Which pair of links of a [`Lock`] a [`List`] runs through.
pub(crate) trait Chain {
    /// `(prev, next)`.
    fn links(l: &Lock) -> (Link, Link);
    fn links_mut(l: &mut Lock) -> (&mut Link, &mut Link);
}

/// The resource queues: [`Lock::prev`]/[`Lock::next`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InQueue;

impl Chain for InQueue {
    fn links(l: &Lock) -> (Link, Link) {
        (l.prev, l.next)
    }
    fn links_mut(l: &mut Lock) -> (&mut Link, &mut Link) {
        (&mut l.prev, &mut l.next)
    }
}

/// A session's locks: [`Lock::sprev`]/[`Lock::snext`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InSession;

impl Chain for InSession {
    fn links(l: &Lock) -> (Link, Link) {
        (l.sprev, l.snext)
    }
    fn links_mut(l: &mut Lock) -> (&mut Link, &mut Link) {
        (&mut l.sprev, &mut l.snext)
    }
}

/// An intrusive doubly linked list through one pair of a lock's links (`C`). New entries
/// go to the tail (R3); removal anywhere is O(1).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct List<C: Chain = InQueue> {
    pub(crate) head: Link,
    pub(crate) tail: Link,
    pub(crate) len: u32,
    #[serde(skip)]
    chain: PhantomData<C>,
}

impl<C: Chain> Default for List<C> {
    fn default() -> Self {
        List {
            head: Link::NONE,
            tail: Link::NONE,
            len: 0,
            chain: PhantomData,
        }
    }
}

impl<C: Chain> List<C> {
    pub(crate) fn push_back(&mut self, locks: &mut Slab<Lock>, r: LockRef) {
        if let Some(l) = locks.get_mut(r.0) {
            let (prev, next) = C::links_mut(l);
            *prev = self.tail;
            *next = Link::NONE;
        }
        match self.tail.get().and_then(|t| locks.get_mut(t.0)) {
            Some(t) => *C::links_mut(t).1 = Some(r).into(),
            None => self.head = Some(r).into(),
        }
        self.tail = Some(r).into();
        self.len += 1;
    }

    /// Unlinks `r`, which must be on this list.
    pub(crate) fn unlink(&mut self, locks: &mut Slab<Lock>, r: LockRef) {
        let Some(l) = locks.get_mut(r.0) else { return };
        let (lp, ln) = C::links_mut(l);
        let (prev, next) = (*lp, *ln);
        (*lp, *ln) = (Link::NONE, Link::NONE);
        match prev.get().and_then(|p| locks.get_mut(p.0)) {
            Some(p) => *C::links_mut(p).1 = next,
            None => self.head = next,
        }
        match next.get().and_then(|n| locks.get_mut(n.0)) {
            Some(n) => *C::links_mut(n).0 = prev,
            None => self.tail = prev,
        }
        self.len = self.len.saturating_sub(1);
    }

    /// The entries, head first.
    pub(crate) fn iter<'a>(&self, locks: &'a Slab<Lock>) -> ListIter<'a, C> {
        ListIter {
            locks,
            next: self.head.get(),
            chain: PhantomData,
        }
    }
}

/// Iterator over a [`List`].
pub(crate) struct ListIter<'a, C: Chain = InQueue> {
    locks: &'a Slab<Lock>,
    next: Option<LockRef>,
    chain: PhantomData<C>,
}

impl<'a, C: Chain> Iterator for ListIter<'a, C> {
    type Item = (LockRef, &'a Lock);

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.next?;
        let l = self.locks.get(r.0)?;
        self.next = C::links(l).1.get();
        Some((r, l))
    }
}

/// The convert and wait queues, allocated only while something is queued: most resources
/// have only holders, and they should not pay for this.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Queues {
    pub(crate) convert: List,
    pub(crate) wait: List,
    /// Number of queued requests (both queues) per requested mode, for R35 in O(1).
    pub(crate) modes: [u32; 6],
}

impl Queues {
    pub(crate) fn is_empty(&self) -> bool {
        self.convert.len == 0 && self.wait.len == 0
    }

    /// Linux's `high` and `cw` of `grant_pending_locks`: the numerically strongest queued
    /// mode, and whether CW is queued (R35).
    pub(crate) fn strongest(&self) -> (Option<Mode>, bool) {
        let high = Mode::ALL
            .into_iter()
            .rev()
            .find(|m| self.modes[m.index()] > 0);
        (high, self.modes[Mode::CW.index()] > 0)
    }
}

/// One resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Resource {
    pub(crate) name: Name,
    /// R24: `None` is an all-zero value block, allocated on the first non-zero write.
    /// Boxed twice so that the field is one thin pointer on the many resources without one.
    pub(crate) lvb: Option<Box<Box<[u8]>>>,
    /// R29/R30: `false` while the value block is marked not valid.
    pub(crate) lvb_valid: bool,
    /// R9: how many locks on the grant and convert queues hold each mode (the VMS "group
    /// mode" idea), so a compatibility check costs six comparisons, never a scan.
    pub(crate) held: [u32; 6],
    pub(crate) granted: List,
    pub(crate) queues: Option<Box<Queues>>,
    /// R32, bit `m` of [`Mode::index`]: set once every lock on the grant queue whose
    /// granted mode is incompatible with mode `m` has been told `m`, except those in
    /// `joined`, so that queuing another request for `m` walks nobody (each would be a
    /// repeat, R37) and tells only those. Not kept in snapshots: clear is always safe.
    #[serde(skip)]
    pub(crate) told: u8,
    /// Locks that joined the grant queue, or changed their granted mode, since marks of
    /// `told` that their mode conflicts with were set: each with those marks, the modes it
    /// has not been told ([`holder_joined`](Resource::holder_joined)). At most
    /// [`JOINED_MAX`]; past it, a joining lock clears its marks instead (the next request
    /// of those modes walks every holder again). Entries of locks gone since are dropped
    /// when their modes are next asked for. Boxed so that the field is one thin pointer on
    /// the many resources without any (as the value block is).
    #[serde(skip)]
    #[allow(clippy::box_collection)]
    pub(crate) joined: Option<Box<Vec<(LockId, u8)>>>,
}

/// Most locks [`Resource::joined`] remembers.
pub(crate) const JOINED_MAX: usize = 1024;

impl Resource {
    pub(crate) fn new(name: Name) -> Resource {
        Resource {
            name,
            lvb: None,
            lvb_valid: true,
            held: [0; 6],
            granted: List::default(),
            queues: None,
            told: 0,
            joined: None,
        }
    }

    /// Lock `id` holds `mode` on the grant queue now, told nothing yet: it is remembered
    /// for the marks of `told` that its mode conflicts with (an NL holder for none).
    pub(crate) fn holder_joined(&mut self, id: LockId, mode: Mode) {
        // Nothing marked (nearly always: only a request that waited marks): one branch on
        // the path of every grant.
        if self.told == 0 {
            return;
        }
        let conflicts = Mode::ALL
            .into_iter()
            .filter(|m| !mode.is_compatible(*m))
            .fold(0u8, |mask, m| mask | 1 << m.index());
        let untold = conflicts & self.told;
        if untold == 0 {
            return;
        }
        let joined = self.joined.get_or_insert_with(Default::default);
        if joined.len() < JOINED_MAX {
            joined.push((id, untold));
        } else {
            self.told &= !untold;
        }
    }

    /// The remembered locks that have not been told `mode` (see `joined`), forgotten for
    /// it: each is to be told it now.
    pub(crate) fn take_joined(&mut self, mode: Mode) -> Vec<LockId> {
        let bit = 1u8 << mode.index();
        let Some(joined) = self.joined.as_mut() else {
            return Vec::new();
        };
        let mut untold = Vec::new();
        joined.retain_mut(|(id, marks)| {
            if *marks & bit != 0 {
                untold.push(*id);
                *marks &= !bit;
            }
            *marks != 0
        });
        if joined.is_empty() {
            self.joined = None;
        }
        untold
    }

    /// Every holder was walked for `mode` and is told it: its mark is set, and nobody
    /// remembered needs telling for it any more.
    pub(crate) fn told_all(&mut self, mode: Mode) {
        self.take_joined(mode);
        self.told |= 1u8 << mode.index();
    }

    /// R9: whether `mode` is compatible with every holder, leaving out one holder of
    /// `exclude` (the converting lock itself).
    pub(crate) fn allows(&self, mode: Mode, exclude: Option<Mode>) -> bool {
        Mode::ALL.into_iter().all(|m| {
            let mut n = self.held[m.index()];
            if exclude == Some(m) {
                n = n.saturating_sub(1);
            }
            n == 0 || mode.is_compatible(m)
        })
    }

    pub(crate) fn has_queued(&self) -> bool {
        self.queues.as_ref().is_some_and(|q| !q.is_empty())
    }

    pub(crate) fn convert_len(&self) -> u32 {
        self.queues.as_ref().map_or(0, |q| q.convert.len)
    }

    pub(crate) fn queued_len(&self) -> u32 {
        self.queues
            .as_ref()
            .map_or(0, |q| q.convert.len + q.wait.len)
    }

    pub(crate) fn is_unused(&self) -> bool {
        self.granted.len == 0 && !self.has_queued()
    }

    pub(crate) fn queues_mut(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Box::default)
    }

    /// Frees the queue block once both queues are empty.
    pub(crate) fn shrink(&mut self) {
        if self.queues.as_ref().is_some_and(|q| q.is_empty()) {
            self.queues = None;
        }
    }
}
