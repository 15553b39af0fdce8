//! Queries in a cluster go through a linearizable read (rule 8 of `HA.md`).
//!
//! A leader that a partition has cut off from the majority still believes it leads until
//! its leader lease lapses, and meanwhile another leader may grant the locks it shows as
//! free. So before a query (`Query::Resource`, `Prefix`, `Session`) is answered from the
//! engine, a task beside the core task asks openraft for a read index
//! ([`Sequencer::read_index`]: a heartbeat round answered by a majority, then the engine
//! applied up to what was committed when the round started). The core task keeps serving
//! everything else meanwhile, and answers the queries from the engine, on its own, once the
//! read is confirmed.
//!
//! Reads are batched as etcd batches them: one round serves every query that arrived
//! before it started; the queries that arrive while it runs wait for the next round, which
//! starts when it ends. So a round trip to a majority costs one heartbeat round per batch,
//! not per query.
//!
//! A round that a majority does not answer is tried again (every [`RETRY`]); the leader's
//! lease check stops it from serving once it has heard from no majority for 400 ms, which
//! disconnects every client (see `cluster.rs`): the queries waiting here are dropped with
//! their connections, and each client re-sends its outstanding queries to the leader it
//! finds, as it re-sends its lock requests. Queries that still have no confirmed read after
//! [`GIVE_UP`] are answered `Overloaded`. The single server has no reads: it answers
//! queries at once.

use std::sync::Arc;
use std::time::Duration;

use dlock_core::{RequestId, SessionId};
use dlock_proto::{Query, Reply, RequestError};
use dlock_raft::{ReadError, Sequencer};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::CoreTask;
use crate::ServerError;
use crate::handle::ConnId;
use crate::security::Rules;

/// The pause between two read rounds that failed (no majority, not the leader yet).
const RETRY: Duration = Duration::from_millis(20);

/// How long a round may keep failing before its queries are answered `Overloaded`: well
/// above the leader's lease (a leader without a majority stops serving, and disconnects its
/// clients, once it has heard from none for 400 ms).
const GIVE_UP: Duration = Duration::from_secs(5);

/// A query waiting for a read index.
#[derive(Debug)]
pub(super) struct WaitingQuery {
    pub(super) session: SessionId,
    pub(super) conn: ConnId,
    pub(super) id: RequestId,
    pub(super) query: Query,
    /// The rules in force when it arrived, and the asking identity (the answer shows only
    /// what it may see).
    pub(super) rules: Option<Arc<Rules>>,
    pub(super) identity: Option<Arc<str>>,
    /// The connection's in-flight slot, held until the answer: a client waits for a read
    /// with at most its usual number of requests in flight.
    pub(super) _slot: OwnedSemaphorePermit,
}

/// How a read round ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Leadership confirmed; the engine has applied up to this log index.
    Confirmed(u64),
    /// No round was confirmed within [`GIVE_UP`].
    GaveUp(ReadError),
}

/// The queries of a cluster member waiting for a read index, and the round in flight.
#[derive(Debug)]
pub(super) struct Reads {
    sequencer: Sequencer,
    /// The queries the round in flight serves (they arrived before it started).
    batch: Vec<WaitingQuery>,
    /// The queries that arrived since: the next round serves them.
    next: Vec<WaitingQuery>,
    /// The round in flight: its number and its task.
    round: Option<(u64, JoinHandle<()>)>,
    /// Rounds started so far (the next one's number).
    started: u64,
    /// Where a round's task sends how it ended.
    ended: mpsc::UnboundedSender<(u64, Outcome)>,
}

/// How the rounds end, in the order they end: taken by the core task's run loop, which
/// waits on it without holding the task's state. One outcome at most per round, and a
/// round starts only once the one before has ended or was given up on ([`Reads::clear`]),
/// whose outcome, if it was already sent, is recognised by its number and ignored.
#[derive(Debug)]
pub(super) struct Ended(mpsc::UnboundedReceiver<(u64, Outcome)>);

impl Reads {
    /// No query waiting, on the node run by `sequencer`; and where its rounds' outcomes
    /// arrive.
    pub(super) fn new(sequencer: Sequencer) -> (Reads, Ended) {
        let (ended, rx) = mpsc::unbounded_channel();
        let reads = Reads {
            sequencer,
            batch: Vec::new(),
            next: Vec::new(),
            round: None,
            started: 0,
            ended,
        };
        (reads, Ended(rx))
    }

    /// Queues `query` for a read round: the round in flight started before it arrived, so
    /// it waits for the next (started at once if none is in flight).
    pub(super) fn push(&mut self, query: WaitingQuery) {
        self.next.push(query);
        if self.round.is_none() {
            self.start();
        }
    }

    /// Starts a round for the queries that wait for the next one.
    fn start(&mut self) {
        debug_assert!(self.round.is_none() && self.batch.is_empty());
        if self.next.is_empty() {
            return;
        }
        self.batch = std::mem::take(&mut self.next);
        let sequencer = self.sequencer.clone();
        let (number, ended) = (self.started, self.ended.clone());
        self.started += 1;
        let task = tokio::spawn(async move {
            let since = Instant::now();
            let outcome = loop {
                match sequencer.read_index().await {
                    Ok(index) => break Outcome::Confirmed(index),
                    Err(e @ ReadError::Fatal(_)) => break Outcome::GaveUp(e),
                    Err(e) if since.elapsed() >= GIVE_UP => break Outcome::GaveUp(e),
                    Err(e) => {
                        debug!(error = %e, "read index not confirmed; trying again");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            };
            // The run loop is gone only when the server stops.
            let _ = ended.send((number, outcome));
        });
        self.round = Some((number, task));
    }

    /// Drops every waiting query and the round in flight (this node stopped leading: the
    /// connections are closed, and each client re-sends its queries to the new leader).
    pub(super) fn clear(&mut self) {
        if let Some((_, task)) = self.round.take() {
            task.abort();
        }
        let dropped = self.batch.len() + self.next.len();
        self.batch.clear();
        self.next.clear();
        if dropped > 0 {
            debug!(
                dropped,
                "no longer leading: waiting queries dropped with their connections"
            );
        }
    }
}

/// The number of the next round that ended, and how; never, on a single server.
pub(super) async fn next_outcome(ended: &mut Option<Ended>) -> (u64, Outcome) {
    let Some(Ended(rx)) = ended else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Some(ended) => ended,
        // Never while `Reads` lives (it holds a sender), and it lives as long as the task.
        None => std::future::pending().await,
    }
}

impl CoreTask {
    /// Answers the queries of the round that ended with `outcome`, and starts the next
    /// round for the queries that arrived meanwhile.
    pub(super) fn on_read(&mut self, number: u64, outcome: Outcome) -> Result<(), ServerError> {
        let Some(reads) = &mut self.reads else {
            return Ok(());
        };
        if reads.round.as_ref().is_none_or(|(n, _)| *n != number) {
            // A round given up on (this node stopped leading meanwhile).
            return Ok(());
        }
        reads.round = None;
        let batch = std::mem::take(&mut reads.batch);
        match outcome {
            Outcome::Confirmed(index) if reads.sequencer.replica().last_applied_index() < index => {
                // openraft reports the read only once it is applied; should the replica
                // still be behind, the queries wait for another round.
                let mut again = batch;
                again.append(&mut reads.next);
                reads.next = again;
            }
            Outcome::Confirmed(_) => {
                let now_ms = self.engine.now_ms();
                for q in batch {
                    let view = q.rules.as_deref().map(|r| (r, q.identity.as_deref()));
                    let reply = super::requests::query(
                        &self.engine.core(),
                        q.query,
                        now_ms,
                        &self.config,
                        view,
                    );
                    self.reply(q.session, q.conn, q.id, reply);
                }
            }
            Outcome::GaveUp(e) => {
                debug!(error = %e, queries = batch.len(), "no read index confirmed; queries refused");
                for q in batch {
                    self.sessions.monitor.rejected("overloaded");
                    self.reply(
                        q.session,
                        q.conn,
                        q.id,
                        Reply::Error(RequestError::Overloaded),
                    );
                }
            }
        }
        if let Some(reads) = &mut self.reads {
            reads.start();
        }
        Ok(())
    }
}
