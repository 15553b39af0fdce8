//! Turns between client addresses: the core task takes what its inbox holds into one queue per
//! address and handles them in turns, one message per address per turn.
//!
//! The inbox is one FIFO shared by every connection. An address that floods it (a thousand
//! sessions each saying goodbye to a thousand locks at once, say) would otherwise put all
//! of that ahead of a request from another address that arrives a moment later; in turns,
//! that request waits for one message of each other busy address. Within one address the
//! order of arrival is kept, so a connection's messages are still handled in the order it
//! sent them. Messages that belong to no address (the HTTP listener's questions) have a
//! turn of their own.

use std::collections::VecDeque;
use std::net::IpAddr;

/// Who a message's turn belongs to: a client address, or `None` for the server's own.
pub(super) type Turn = Option<IpAddr>;

/// Queued messages by address, and the order in which the addresses take turns.
#[derive(Debug)]
pub(super) struct Turns<T> {
    /// Each address's queue, by its index in `queues`.
    index: std::collections::HashMap<Turn, usize, foldhash::quality::RandomState>,
    /// The queues; a queue that empties is given back to `free`.
    queues: Vec<(Turn, VecDeque<T>)>,
    free: Vec<usize>,
    /// Addresses with a queued message, next turn first; each appears once.
    ring: VecDeque<usize>,
    len: usize,
}

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Turns {
            index: Default::default(),
            queues: Vec::new(),
            free: Vec::new(),
            ring: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Turns<T> {
    /// Messages queued.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `msg` behind the other messages of `turn`.
    pub(super) fn push(&mut self, turn: Turn, msg: T) {
        let i = match self.index.get(&turn) {
            Some(&i) => i,
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.queues[i].0 = turn;
                        i
                    }
                    None => {
                        self.queues.push((turn, VecDeque::new()));
                        self.queues.len() - 1
                    }
                };
                self.index.insert(turn, i);
                self.ring.push_back(i);
                i
            }
        };
        self.queues[i].1.push_back(msg);
        self.len += 1;
    }

    /// The next message: the oldest of the address whose turn it is, which then goes to the
    /// back of the line if it has more.
    pub(super) fn pop(&mut self) -> Option<T> {
        let i = self.ring.pop_front()?;
        let (turn, queue) = &mut self.queues[i];
        let msg = queue.pop_front();
        if queue.is_empty() {
            let turn = *turn;
            self.index.remove(&turn);
            // An empty queue keeps its allocation for the next address (a few, not one per
            // address ever seen: at most as many as had messages at once).
            self.free.push(i);
        } else {
            self.ring.push_back(i);
        }
        self.len -= usize::from(msg.is_some());
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Turn {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn addresses_take_turns_and_each_keeps_its_order() {
        let mut turns = Turns::default();
        for n in 0..5 {
            turns.push(ip(1), ("flood", n));
        }
        turns.push(ip(2), ("bystander", 0));
        turns.push(None, ("status", 0));
        turns.push(ip(2), ("bystander", 1));
        assert_eq!(turns.len(), 8);
        let order: Vec<_> = std::iter::from_fn(|| turns.pop()).collect();
        assert_eq!(
            order,
            vec![
                ("flood", 0),
                ("bystander", 0),
                ("status", 0),
                ("flood", 1),
                ("bystander", 1),
                ("flood", 2),
                ("flood", 3),
                ("flood", 4),
            ]
        );
        assert!(turns.is_empty());
    }

    #[test]
    fn one_address_is_served_in_arrival_order() {
        let mut turns = Turns::default();
        let mut next = 0;
        for n in 0..100 {
            turns.push(ip(1), n);
            if n % 3 == 0 {
                assert_eq!(turns.pop(), Some(next));
                next += 1;
            }
        }
        while let Some(n) = turns.pop() {
            assert_eq!(n, next);
            next += 1;
        }
        assert_eq!(next, 100);
    }

    #[test]
    fn queues_are_reused_and_an_emptied_address_starts_a_new_turn() {
        let mut turns = Turns::default();
        turns.push(ip(1), 1);
        assert_eq!(turns.pop(), Some(1));
        assert_eq!(turns.pop(), None);
        turns.push(ip(2), 2);
        turns.push(ip(1), 3);
        assert_eq!(
            turns.queues.len(),
            2,
            "the emptied queue is given to the next address"
        );
        assert_eq!(turns.pop(), Some(2));
        assert_eq!(turns.pop(), Some(3));
        assert!(turns.is_empty());
        assert!(turns.ring.is_empty() && turns.index.is_empty());
    }
}
