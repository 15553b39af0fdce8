//! The engine as openraft's state machine, and its snapshots.
//!
//! Applying an application entry applies its [`Proposal`](crate::Proposal) to the engine as the input
//! `(entry index, proposal.now_ms, proposal.command)`, so ids and fencing tokens, which the
//! engine derives from the input index, are the same on every replica. A snapshot is the
//! engine's [`Snapshot`](dlock_core::Snapshot) with the last applied log id and membership,
//! written as one checksummed record to a temporary file that is synced and renamed over
//! `snapshot.bin`.

use std::fs;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dlock_core::{Config, Core, Event, Input, SessionId};
use futures_util::{Stream, TryStreamExt};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::RaftStoreError;
use crate::codec::{self, RecordAt};
use crate::log_store::sync_dir;
use crate::private_fs;
use crate::types::{Applied, LogId, SnapshotData, TypeConfig, input_index};

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.bin.tmp";

/// The replicated state: the engine and what openraft needs to know about it.
#[derive(Debug)]
struct SmState {
    core: Core,
    last_applied: Option<LogId>,
    membership: StoredMembershipOf<TypeConfig>,
}

/// What a snapshot's data holds.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembershipOf<TypeConfig>,
    core: dlock_core::Snapshot,
}

/// What a snapshot's data of format 1 or 2 holds: an engine from before sessions ended in
/// steps.
#[derive(Deserialize)]
struct SnapshotBodyV2 {
    last_applied: Option<LogId>,
    membership: StoredMembershipOf<TypeConfig>,
    core: dlock_core::SnapshotV2,
}

/// Decodes a snapshot's data of any format this build reads.
fn decode_body(data: &[u8]) -> Result<SnapshotBody, RaftStoreError> {
    let (format, body) = codec::snapshot_body(data)?;
    if format >= 3 {
        return codec::decode(body);
    }
    let old: SnapshotBodyV2 = codec::decode(body)?;
    Ok(SnapshotBody {
        last_applied: old.last_applied,
        membership: old.membership,
        core: dlock_core::Snapshot::from_v2(old.core),
    })
}

/// What `snapshot.bin` holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
}

/// A read-only view of a node's replicated state, shared with the state machine: what the
/// server reads for queries and session checks.
#[derive(Clone, Debug)]
pub struct Replica {
    state: Arc<Mutex<SmState>>,
    /// Whether applied entries go to the feed (see [`Replica::set_feeding`]).
    feeding: Arc<AtomicBool>,
}

impl Replica {
    fn lock(&self) -> MutexGuard<'_, SmState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the engine as of the last applied entry.
    pub fn read<T>(&self, f: impl FnOnce(&Core) -> T) -> T {
        f(&self.lock().core)
    }

    /// The last applied log index (0 before any).
    pub fn last_applied_index(&self) -> u64 {
        self.lock().last_applied.map_or(0, |id| id.index)
    }

    /// Whether what entries produce goes to the node's feed from now on (it does until
    /// told otherwise). The server feeds only while it leads: a follower has no client to
    /// route events to, and a feed it does not read would only wake it once per entry. Set
    /// it before reading the state a leadership starts from, so that every entry applied
    /// after that read reaches the feed.
    pub fn set_feeding(&self, feeding: bool) {
        self.feeding.store(feeding, Ordering::SeqCst);
    }

    /// Whether applied entries go to the feed (see [`set_feeding`](Self::set_feeding)).
    pub fn feeding(&self) -> bool {
        self.feeding.load(Ordering::SeqCst)
    }

    /// The engine as of the last applied entry, held until the guard is dropped: applying
    /// waits meanwhile, so hold it only for a synchronous read, never across an `await`.
    pub fn core(&self) -> CoreGuard<'_> {
        CoreGuard(self.lock())
    }
}

/// The engine of a [`Replica`], locked for reading (see [`Replica::core`]).
pub struct CoreGuard<'a>(MutexGuard<'a, SmState>);

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.0.core
    }
}

impl std::fmt::Debug for CoreGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreGuard").finish_non_exhaustive()
    }
}

/// Where a node sends what it applies, in log order: the server routes the events of every
/// entry to its sessions' connections. Applying waits while the feed is full.
pub type Feed = tokio::sync::mpsc::Sender<Applied>;

/// Where a node records what it applies, in log order (the server's audit log): every
/// member calls it for every application entry it applies, so any member's record is the
/// committed history.
///
/// A node that restarts applies again the entries after its last snapshot, and one that
/// installs a snapshot skips the entries it covers: [`opened`](Auditor::opened) and
/// [`installed`](Auditor::installed) say so, so that the record can skip inputs it already
/// holds and mark the ones it will never see.
pub trait Auditor: Send + Sync + std::fmt::Debug + 'static {
    /// The state machine opened with every input up to `applied` (0: none) already in its
    /// state (from its snapshot).
    fn opened(&mut self, applied: u64);
    /// `input` (one command of an entry; an entry of several commands makes several calls,
    /// in order) was applied and produced `events` (called before the events are sent to
    /// the feed or to the proposer, and without the engine's lock held, so that a slow disk
    /// holds up no reader of the engine). Called again for an input applied again after a restart. Indices here are
    /// engine input indices (see [`input_index`]).
    fn applied(&mut self, input: &Input, events: &[Event]);
    /// A snapshot covering every input up to `upto` replaced the state: the inputs after
    /// the last one applied up to `upto` are never applied here.
    fn installed(&mut self, upto: u64);
}

/// An [`Auditor`] shared with the state machine.
pub type SharedAuditor = Arc<Mutex<dyn Auditor>>;

fn audit_with(auditor: &Option<SharedAuditor>, f: impl FnOnce(&mut dyn Auditor)) {
    if let Some(a) = auditor {
        f(&mut *a.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The engine as openraft's state machine.
#[derive(Debug)]
pub struct StateMachine {
    replica: Replica,
    dir: PathBuf,
    feed: Option<Feed>,
    /// Entries up to this index are applied without going to the feed (see
    /// [`feed_after`](Self::feed_after)).
    unfed_upto: u64,
    auditor: Option<SharedAuditor>,
}

impl StateMachine {
    /// Opens the state machine kept in `dir`: the engine of the snapshot there, or an empty
    /// one with `config`.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<StateMachine, RaftStoreError> {
        let dir = dir.as_ref().to_path_buf();
        private_fs::create_dir_all(&dir).map_err(|e| RaftStoreError::io(&dir, e))?;
        let state = match read_snapshot_file(&dir)? {
            Some(file) => {
                let body = decode_body(&file.data)?;
                SmState {
                    core: Core::restore(body.core),
                    last_applied: body.last_applied,
                    membership: body.membership,
                }
            }
            None => SmState {
                core: Core::new(config),
                last_applied: None,
                membership: StoredMembershipOf::<TypeConfig>::default(),
            },
        };
        Ok(StateMachine {
            replica: Replica {
                state: Arc::new(Mutex::new(state)),
                feeding: Arc::new(AtomicBool::new(true)),
            },
            dir,
            feed: None,
            unfed_upto: 0,
            auditor: None,
        })
    }

    /// A shared read-only view of the state.
    pub fn replica(&self) -> Replica {
        self.replica.clone()
    }

    /// Records every input applied from now on with `auditor` (which is told first what the
    /// opened state already covers).
    pub fn with_auditor(mut self, auditor: SharedAuditor) -> StateMachine {
        // The audit log counts engine inputs, not log entries.
        let applied = self.replica.read(Core::last_index);
        self.auditor = Some(auditor);
        audit_with(&self.auditor, |a| a.opened(applied));
        self
    }

    /// Sends what every entry produces to `feed` as it is applied, in log order (the
    /// answer to the proposer then carries no events).
    pub fn with_feed(mut self, feed: Feed) -> StateMachine {
        self.feed = Some(feed);
        self
    }

    /// Applies the entries up to `index` without sending them to the feed.
    ///
    /// A node that opens from disk applies again, inside openraft's `Raft::new`, every entry
    /// committed before it stopped and not yet in its snapshot: up to
    /// [`LogStore::committed_index`](crate::LogStore::committed_index), which
    /// [`open_node`](crate::open_node) passes here. What those entries produced was for the
    /// clients of the process that stopped, and nobody can read the feed before `Raft::new`
    /// returns: fed, thousands of them would fill it and the node would never open.
    pub fn feed_after(mut self, index: u64) -> StateMachine {
        self.unfed_upto = index;
        self
    }
}

fn read_snapshot_file(dir: &Path) -> Result<Option<SnapshotFile>, RaftStoreError> {
    let path = dir.join(SNAPSHOT_FILE);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RaftStoreError::io(&path, e)),
    };
    match codec::next_record(&data, 0) {
        RecordAt::Whole(body, end) if end == data.len() => Ok(Some(codec::decode(body)?)),
        RecordAt::Whole(..) => Err(RaftStoreError::Corrupt {
            path,
            offset: 0,
            reason: "trailing bytes after the snapshot".to_owned(),
        }),
        RecordAt::End => Err(RaftStoreError::Corrupt {
            path,
            offset: 0,
            reason: "empty snapshot file".to_owned(),
        }),
        RecordAt::Damaged(reason) => Err(RaftStoreError::Corrupt {
            path,
            offset: 0,
            reason,
        }),
    }
}

/// Writes `file` to a temporary file, syncs it and renames it over the snapshot.
fn write_snapshot_file(dir: &Path, file: &SnapshotFile) -> Result<(), RaftStoreError> {
    let mut bytes = Vec::new();
    codec::put_record(&mut bytes, file)?;
    let tmp = dir.join(SNAPSHOT_TMP);
    // Private (0600), as is the file it is renamed to: it holds sessions' resume secrets.
    let mut f = private_fs::create_temp(&tmp).map_err(|e| RaftStoreError::io(&tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| RaftStoreError::io(&tmp, e))?;
    drop(f);
    let path = dir.join(SNAPSHOT_FILE);
    fs::rename(&tmp, &path).map_err(|e| RaftStoreError::io(&path, e))?;
    sync_dir(dir)
}

/// Runs `f` on the blocking pool; its failure, or the task's, as the error openraft is given.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RaftStoreError> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RaftStoreError::Codec(e.to_string()))
        .and_then(|r| r)
        .map_err(io::Error::from)
}

/// Builds snapshots of a [`StateMachine`].
#[derive(Debug)]
pub struct SnapshotBuilder {
    replica: Replica,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let body = {
            let state = self.replica.lock();
            SnapshotBody {
                last_applied: state.last_applied,
                membership: state.membership.clone(),
                core: state.core.snapshot(),
            }
        };
        let dir = self.dir.clone();
        let file = blocking(move || {
            let data = codec::encode_snapshot(&body)?;
            let file = SnapshotFile {
                meta: SnapshotMetaOf::<TypeConfig> {
                    last_log_id: body.last_applied,
                    last_membership: body.membership,
                },
                data,
            };
            write_snapshot_file(&dir, &file)?;
            Ok(file)
        })
        .await?;
        Ok(SnapshotOf::<TypeConfig, SnapshotData> {
            meta: file.meta,
            snapshot: Cursor::new(file.data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembershipOf<TypeConfig>), io::Error> {
        let state = self.replica.lock();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Taken whole first, so that the engine's lock is taken once for all of them.
        let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut out = Vec::with_capacity(entries.len());
        // What the audit log gets: each input with the entry (in `out`) and the range of its
        // events there. Written once the engine's lock is released, so that a disk slow to
        // take the lines holds up no reader of the engine (the leader's ticks among them).
        let mut audited: Vec<(Input, usize, std::ops::Range<usize>)> = Vec::new();
        {
            let mut state = self.replica.lock();
            for (entry, responder) in entries {
                let index = entry.log_id.index;
                state.last_applied = Some(entry.log_id);
                let mut opened = Vec::new();
                let mut events = Vec::new();
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(p) => {
                        for command in p.commands {
                            // Consecutive inputs, each above the last (`input_index`).
                            let input = Input {
                                index: input_index(index, state.core.last_index()),
                                now_ms: p.now_ms,
                                command,
                            };
                            if let dlock_core::Command::OpenSession { secret, .. } = &input.command
                            {
                                opened.push((*secret, SessionId(input.index)));
                            }
                            match &self.auditor {
                                None => state.core.apply_into(input, &mut events),
                                Some(_) => {
                                    let from = events.len();
                                    state.core.apply_into(input.clone(), &mut events);
                                    audited.push((input, out.len(), from..events.len()));
                                }
                            }
                        }
                    }
                    EntryPayload::Membership(m) => {
                        state.membership =
                            StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), m);
                    }
                }
                let applied = Applied {
                    index,
                    input: state.core.last_index(),
                    events,
                    opened,
                };
                out.push((applied, responder));
            }
        }
        // Before any event goes out (to the feed or a proposer), as the audit log promises.
        for (input, entry, range) in audited {
            audit_with(&self.auditor, |a| {
                a.applied(&input, &out[entry].0.events[range]);
            });
        }
        let feeding = self.replica.feeding();
        for (applied, responder) in out {
            // Without a feed the answer carries the events; with one, they go to the feed
            // (after the state's lock is released: the reader takes it too) and the
            // proposer's answer keeps the index.
            let answer = match &self.feed {
                None => applied,
                Some(feed) => {
                    let answer = Applied {
                        index: applied.index,
                        input: applied.input,
                        events: Vec::new(),
                        opened: applied.opened.clone(),
                    };
                    if feeding
                        && applied.index > self.unfed_upto
                        && (!applied.events.is_empty() || !applied.opened.is_empty())
                    {
                        // A closed feed means the server is stopping: nothing is left to
                        // route to.
                        let _ = feed.send(applied).await;
                    }
                    answer
                }
            };
            if let Some(responder) = responder {
                responder.send(answer);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            replica: self.replica.clone(),
            dir: self.dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let body = decode_body(&data).map_err(io::Error::from)?;
        let file = SnapshotFile {
            meta: meta.clone(),
            data,
        };
        let dir = self.dir.clone();
        blocking(move || write_snapshot_file(&dir, &file)).await?;
        let mut state = self.replica.lock();
        state.core = Core::restore(body.core);
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        drop(state);
        // What the snapshot covers, in engine inputs (the audit log's unit).
        let upto = self.replica.read(Core::last_index);
        audit_with(&self.auditor, |a| a.installed(upto));
        // What an operator (and the cluster tests) look for to tell a catch-up by snapshot
        // from one through the log.
        tracing::info!(last_log_id = ?meta.last_log_id, "installed a snapshot sent by the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotData>>, io::Error> {
        let dir = self.dir.clone();
        let file = blocking(move || read_snapshot_file(&dir)).await?;
        Ok(file.map(|f| SnapshotOf::<TypeConfig, SnapshotData> {
            meta: f.meta,
            snapshot: Cursor::new(f.data),
        }))
    }
}

#[cfg(test)]
mod tests {
    use dlock_core::{Command, Config, Core, Input};

    use super::{SnapshotBody, decode_body};
    use crate::codec;

    #[test]
    fn a_snapshot_of_format_2_is_read_into_todays_engine() {
        let mut core = Core::new(Config::default());
        let open = Command::OpenSession {
            name: "s".into(),
            ttl_ms: 10_000,
            secret: 7,
        };
        core.apply(Input {
            index: 1,
            now_ms: 0,
            command: open,
        });
        let body = SnapshotBody {
            last_applied: None,
            membership: Default::default(),
            core: core.snapshot(),
        };
        let today = codec::encode_snapshot(&body).unwrap();
        // Format 2 wrote the same body without the engine's last field, the sessions still
        // ending: an empty map, one byte.
        let mut old = today[..today.len() - 1].to_vec();
        assert_eq!(today.last(), Some(&0));
        old[4..8].copy_from_slice(&2u32.to_be_bytes());
        let read = Core::restore(decode_body(&old).unwrap().core);
        assert_eq!(read.session_count(), 1);
        assert_eq!(read.last_index(), 1);
        // Today's format is read as it is written; the short body is not.
        assert_eq!(
            Core::restore(decode_body(&today).unwrap().core).session_count(),
            1
        );
        let mut short = old.clone();
        short[4..8].copy_from_slice(&codec::SNAPSHOT_FORMAT.to_be_bytes());
        assert!(decode_body(&short).is_err());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_directory_and_the_snapshot_are_private() {
        use std::fs;
        use std::os::unix::fs::PermissionsExt;

        use openraft::RaftSnapshotBuilder;
        use openraft::storage::RaftStateMachine;

        use super::{SNAPSHOT_FILE, SNAPSHOT_TMP, StateMachine};

        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("raft");
        let mut sm = StateMachine::open(&dir, Config::default()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700);
        // A temporary file left by a run that created it readable by others.
        fs::write(dir.join(SNAPSHOT_TMP), "").unwrap();
        fs::set_permissions(dir.join(SNAPSHOT_TMP), fs::Permissions::from_mode(0o644)).unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(mode(&dir.join(SNAPSHOT_FILE)), 0o600);
        assert!(!dir.join(SNAPSHOT_TMP).exists());
        drop(sm);
        StateMachine::open(&dir, Config::default()).unwrap();
    }
}
