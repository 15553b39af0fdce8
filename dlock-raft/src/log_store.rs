//! The durable Raft log: a directory of segment files of checksummed records.
//!
//! About 1,000 lines on purpose, 300 of them its tests: the record format, the writer thread
//! that owns the files and openraft's `RaftLogStorage` over them make one unit whose
//! invariants (what is flushed when, what a reopen cuts) are checked together.
//!
//! Every change to the log is a record appended to the current segment: an entry, a
//! truncation (`Truncate { since }`), a purge, the vote and the committed log id. Reopening
//! replays the records in order; a record cut short or damaged at the end of the last
//! segment (a crash in the middle of a write) is cut off, one anywhere else is an error.
//! Zeros after the last segment's last record are the end of the log: its space allocated
//! ahead, or a crash that kept a write's new file length but not its data.
//!
//! - **Group commit.** One writer thread does all file IO in submission order. When it wakes
//!   up it takes every request waiting, writes them with one `write` and, if any needs it,
//!   one `fsync`, and only then tells openraft the appended entries are flushed. Under load
//!   many appends share one `fsync`.
//! - **Vote.** `save_vote` returns once the vote record is synced.
//! - **Committed id.** `save_committed` only notes the id: the writer adds a record of the
//!   latest one to the next group it writes anyway (after that group's entries), and to the
//!   end of the log when it closes. It never wakes the writer on its own, which it would
//!   otherwise do once per committed entry on the leader; one lost to a crash is re-learned
//!   from the leader, as it would be if the unsynced record were lost.
//! - **Segments.** A segment is closed once it passes [`LogStore::open`]'s size, cut to its
//!   last record; every new segment starts with the vote, the purge point and the committed
//!   id, so older segments can be deleted as soon as a purge covers every entry they hold
//!   (log compaction after a snapshot). A new segment's space is allocated at once
//!   (`preallocate`), and records are written over it; a reopen reads a segment only up to
//!   the hole the file system reports for its unwritten space (`read_written`).
//! - **Reads** are served from memory: the entries not yet purged are kept there too, which
//!   openraft's snapshot policy bounds. That includes entries still queued for the writer, so
//!   a leader replicates entries its own disk may lose in a crash (which is why a restarted
//!   leader stands for election, see [`raft_config`](crate::raft_config)).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::RaftStoreError;
use crate::codec::{self, RecordAt};
use crate::private_fs;
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// The default size at which a segment is closed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// At most this many requests are written by one wake-up of the writer.
const MAX_GROUP: usize = 4096;

/// One change to the log, as stored.
#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    /// An entry; it replaces every entry at or after its index.
    Entry(Entry),
    /// Every entry at or after `since` is gone.
    Truncate { since: u64 },
    /// Every entry up to and including this id is gone (it is in a snapshot).
    Purge(LogId),
    /// The vote.
    Vote(Vote),
    /// The committed log id.
    Committed(Option<LogId>),
    /// The format of the records after it: first in every segment since formats are
    /// recorded (a segment without it is of format 1). Last among the variants, so that the
    /// others keep their encoding.
    Format(u32),
}

/// The log format this build writes and the newest it reads (every segment starts with a
/// record of it; a segment without one is of format 1).
pub const LOG_FORMAT: u32 = 1;

/// [`LogRecord::Entry`] by reference: the same encoding (the same variant, first of its
/// enum), without a copy of the entry.
#[derive(Serialize)]
enum EntryRecord<'a> {
    Entry(&'a Entry),
}

/// What the log holds, in memory.
#[derive(Debug, Default)]
struct LogMem {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
    /// Whether `committed` changed since its last record was handed to the writer, which
    /// writes it with the next group (see [`LogStore::save_committed`]).
    committed_unwritten: bool,
}

impl LogMem {
    fn replay(&mut self, record: LogRecord) {
        match record {
            LogRecord::Entry(entry) => {
                let index = entry.log_id().index;
                if self.last_purged.is_some_and(|p| index <= p.index) {
                    return;
                }
                drop(self.entries.split_off(&index));
                self.entries.insert(index, entry);
            }
            LogRecord::Truncate { since } => drop(self.entries.split_off(&since)),
            LogRecord::Purge(id) => self.purge(id),
            LogRecord::Vote(vote) => self.vote = Some(vote),
            LogRecord::Committed(id) => self.committed = id,
            // Checked as it is read (`LogStore::open`).
            LogRecord::Format(_) => {}
        }
    }

    /// After a reopen: the committed id cut back to the last entry the log holds (or its
    /// purge point). The id is written with whatever group the writer writes next, which may
    /// be before the entries it names reach the disk (they can still be queued, a commit
    /// needing only a majority of the other members' flushes), so a crash can keep the id
    /// and lose them. The entries kept up to it are committed all the same, and openraft
    /// re-applies up to the committed id at start, from entries that must be there.
    fn clamp_committed(&mut self) {
        let Some(committed) = self.committed else {
            return;
        };
        let last = self
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id())
            .or(self.last_purged);
        if last.is_none_or(|l| l.index < committed.index) {
            self.committed = last;
        }
    }

    fn purge(&mut self, id: LogId) {
        if self.last_purged.is_none_or(|p| p.index < id.index) {
            self.last_purged = Some(id);
        }
        self.entries = self.entries.split_off(&(id.index + 1));
    }

    /// The records a new segment starts with.
    fn header(&self) -> Result<Vec<u8>, RaftStoreError> {
        let mut out = Vec::new();
        codec::put_record(&mut out, &LogRecord::Format(LOG_FORMAT))?;
        if let Some(vote) = self.vote {
            codec::put_record(&mut out, &LogRecord::Vote(vote))?;
        }
        if let Some(id) = self.last_purged {
            codec::put_record(&mut out, &LogRecord::Purge(id))?;
        }
        if self.committed.is_some() {
            codec::put_record(&mut out, &LogRecord::Committed(self.committed))?;
        }
        Ok(out)
    }
}

/// What is done once a write is on disk.
enum Done {
    /// openraft's callback for appended entries.
    Flushed(IOFlushed<TypeConfig>),
    /// A waiting caller.
    Reply(oneshot::Sender<io::Result<()>>),
}

/// One request to the writer thread.
struct WriteOp {
    bytes: Vec<u8>,
    /// The highest entry index in `bytes`, if any.
    max_index: Option<u64>,
    /// Whether `bytes` must be synced before `done`.
    sync: bool,
    /// Segments whose every entry is at or below this index may go once this is synced.
    purge_upto: Option<u64>,
    done: Done,
}

/// The durable Raft log of one node. Cheap to clone: clones share the log (a clone is what
/// [`RaftLogStorage::get_log_reader`] hands out).
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    writer: mpsc::Sender<WriteOp>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

/// A segment file and the highest entry index it holds.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    max_index: Option<u64>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("segment-{seq:020}.log"))
}

fn parse_segment(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Syncs a directory, so that files created, renamed or removed in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), RaftStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RaftStoreError::io(dir, e))
}

/// Creates the segment file `path` in `dir` holding `header` (the log's header records),
/// allocated up to `size` bytes ([`preallocate`]), synced with its directory entry.
fn create_segment(
    dir: &Path,
    path: &Path,
    header: &[u8],
    size: u64,
) -> Result<File, RaftStoreError> {
    // Private (0600): entries carry sessions' resume secrets.
    let mut file = private_fs::create_new(path).map_err(|e| RaftStoreError::io(path, e))?;
    file.write_all(header)
        .map_err(|e| RaftStoreError::io(path, e))?;
    preallocate(&file, path, size);
    file.sync_data().map_err(|e| RaftStoreError::io(path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Allocates the segment file's blocks up to `size` bytes (zeros, counted in its length):
/// records are then written over allocated space, so that the `fsync` after each group
/// flushes their data alone, without a journal commit for a grown file (measured on ext4:
/// a 600-byte write and `fdatasync` took a median 98 µs there against 159 µs appending).
/// Reopening reads the zeros after the last record as the end of the log. A file system
/// that cannot allocate ahead is left to grow the file as it is written.
fn preallocate(file: &File, path: &Path, size: u64) {
    if let Err(e) = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        tracing::debug!(path = %path.display(), error = %e, "raft log segment not allocated ahead");
    }
}

/// A segment's bytes up to where only zeros follow, as far as the file system tells: the
/// space allocated ahead and never written is a hole to `SEEK_HOLE` (ext4 and XFS report
/// allocated, unwritten space so), and a hole reads as zeros, so it is not read (the current
/// segment's 64 MiB otherwise, at every start). If data follows the first hole (a torn write
/// can leave some), or the file system tells no holes apart (or the space was read since,
/// and sits in the page cache), the whole file is read.
fn read_written(path: &Path) -> io::Result<Vec<u8>> {
    use rustix::fs::{SeekFrom, seek};

    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let upto = match seek(&file, SeekFrom::Hole(0)) {
        Ok(hole) if hole < len => match seek(&file, SeekFrom::Data(hole)) {
            Err(rustix::io::Errno::NXIO) => hole,
            _ => len,
        },
        _ => len,
    };
    let upto = usize::try_from(upto).map_err(io::Error::other)?;
    let mut data = vec![0; upto];
    file.read_exact_at(&mut data, 0)?;
    Ok(data)
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying its segments and cutting a torn tail,
    /// and starts its writer thread. Segments are closed at `segment_bytes`.
    pub fn open(dir: impl AsRef<Path>, segment_bytes: u64) -> Result<LogStore, RaftStoreError> {
        let dir = dir.as_ref().to_path_buf();
        private_fs::create_dir_all(&dir).map_err(|e| RaftStoreError::io(&dir, e))?;
        let mut seqs = Vec::new();
        for item in fs::read_dir(&dir).map_err(|e| RaftStoreError::io(&dir, e))? {
            let item = item.map_err(|e| RaftStoreError::io(&dir, e))?;
            if let Some(seq) = item.file_name().to_str().and_then(parse_segment) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut mem = LogMem::default();
        let mut segments = Vec::new();
        // Where the last segment's records end: the next record goes there.
        let mut end = 0;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(&dir, seq);
            let data = read_written(&path).map_err(|e| RaftStoreError::io(&path, e))?;
            let mut offset = 0;
            let mut max_index = None;
            loop {
                match codec::next_record(&data, offset) {
                    RecordAt::Whole(body, next) => {
                        let record: LogRecord = codec::decode(body)?;
                        if let LogRecord::Format(found) = record
                            && found > LOG_FORMAT
                        {
                            return Err(RaftStoreError::Format {
                                what: path.display().to_string(),
                                found,
                                supported: LOG_FORMAT,
                            });
                        }
                        if let LogRecord::Entry(e) = &record {
                            max_index = max_index.max(Some(e.log_id().index));
                        }
                        mem.replay(record);
                        offset = next;
                    }
                    RecordAt::End => break,
                    // The last segment's space allocated ahead and not yet written.
                    RecordAt::Damaged(_)
                        if i + 1 == seqs.len() && data[offset..].iter().all(|&b| b == 0) =>
                    {
                        break;
                    }
                    RecordAt::Damaged(reason) if i + 1 == seqs.len() => {
                        tracing::warn!(
                            path = %path.display(),
                            offset,
                            reason,
                            "cutting a torn tail off the raft log"
                        );
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| RaftStoreError::io(&path, e))?;
                        file.set_len(offset as u64)
                            .and_then(|()| file.sync_all())
                            .map_err(|e| RaftStoreError::io(&path, e))?;
                        break;
                    }
                    RecordAt::Damaged(reason) => {
                        return Err(RaftStoreError::Corrupt {
                            path,
                            offset: offset as u64,
                            reason,
                        });
                    }
                }
            }
            end = offset as u64;
            segments.push(Segment {
                seq,
                path,
                max_index,
            });
        }
        mem.clamp_committed();
        let segment_bytes = segment_bytes.max(1);
        let (current, file, size) = match segments.pop() {
            Some(current) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&current.path)
                    .map_err(|e| RaftStoreError::io(&current.path, e))?;
                // Allocated ahead again if a cut tail took the space.
                preallocate(&file, &current.path, segment_bytes);
                (current, file, end)
            }
            None => {
                let path = segment_path(&dir, 1);
                let header = mem.header()?;
                let file = create_segment(&dir, &path, &header, segment_bytes)?;
                let current = Segment {
                    seq: 1,
                    path,
                    max_index: None,
                };
                (current, file, header.len() as u64)
            }
        };
        let mem = Arc::new(Mutex::new(mem));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir,
            mem: mem.clone(),
            closed: segments,
            current,
            file,
            size,
            segment_bytes,
            failed: None,
        };
        std::thread::Builder::new()
            .name("dlock-raft-log".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| RaftStoreError::io("dlock-raft-log thread", e))?;
        Ok(LogStore { mem, writer: tx })
    }

    fn mem(&self) -> MutexGuard<'_, LogMem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of the last entry this log knows to be committed (0: none): on opening,
    /// what openraft applies again up to before the node starts (see
    /// [`StateMachine::feed_after`](crate::StateMachine::feed_after)).
    pub fn committed_index(&self) -> u64 {
        self.mem().committed.map_or(0, |id| id.index)
    }

    fn submit(&self, op: WriteOp) -> Result<(), io::Error> {
        self.writer
            .send(op)
            .map_err(|_| io::Error::other("the log writer has stopped"))
    }

    /// Submits a record and waits until it is synced.
    async fn write_synced(&self, bytes: Vec<u8>, purge_upto: Option<u64>) -> Result<(), io::Error> {
        let (tx, rx) = oneshot::channel();
        self.submit(WriteOp {
            bytes,
            max_index: None,
            sync: true,
            purge_upto,
            done: Done::Reply(tx),
        })?;
        rx.await
            .map_err(|_| io::Error::other("the log writer has stopped"))?
    }
}

impl LogStore {
    /// Keeps `entries` in memory and has the writer append them, then `done`.
    fn submit_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        done: Done,
    ) -> Result<(), io::Error> {
        let mut bytes = Vec::new();
        let mut max_index = None;
        {
            let mut mem = self.mem();
            for entry in entries {
                let index = entry.log_id().index;
                codec::put_record(&mut bytes, &EntryRecord::Entry(&entry))
                    .map_err(io::Error::from)?;
                max_index = max_index.max(Some(index));
                mem.entries.insert(index, entry);
            }
        }
        self.submit(WriteOp {
            bytes,
            max_index,
            sync: true,
            purge_upto: None,
            done,
        })
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    mem: Arc<Mutex<LogMem>>,
    closed: Vec<Segment>,
    current: Segment,
    file: File,
    size: u64,
    segment_bytes: u64,
    /// Once a write failed, every later one fails too (openraft stops the node).
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriteOp>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let result = self.write_group(&ops);
            for op in ops {
                let r = result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string()));
                match op.done {
                    Done::Flushed(cb) => cb.io_completed(r),
                    Done::Reply(tx) => drop(tx.send(r)),
                }
            }
            if let Err(e) = result {
                tracing::error!(error = %e, "raft log write failed");
                self.failed.get_or_insert_with(|| e.to_string());
            }
        }
        // The log is closing: the last committed id goes to disk with nothing else.
        if self.failed.is_none() {
            let mut buf = Vec::new();
            let written = self.put_committed(&mut buf).and_then(|()| {
                if buf.is_empty() {
                    return Ok(());
                }
                self.write(&buf)?;
                self.file.sync_data()
            });
            if let Err(e) = written {
                tracing::warn!(error = %e, "the raft log's last committed id was not written");
            }
        }
    }

    /// Appends a record of the committed id to `buf` if it changed since the last one.
    fn put_committed(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        if !std::mem::take(&mut mem.committed_unwritten) {
            return Ok(());
        }
        codec::put_record(buf, &LogRecord::Committed(mem.committed)).map_err(io::Error::from)
    }

    fn write_group(&mut self, ops: &[WriteOp]) -> io::Result<()> {
        if let Some(f) = &self.failed {
            return Err(io::Error::other(format!("an earlier write failed: {f}")));
        }
        let mut buf = Vec::with_capacity(ops.iter().map(|o| o.bytes.len()).sum());
        let mut sync = false;
        let mut purge_upto = None;
        for op in ops {
            buf.extend_from_slice(&op.bytes);
            sync |= op.sync;
            self.current.max_index = self.current.max_index.max(op.max_index);
            purge_upto = purge_upto.max(op.purge_upto);
        }
        self.put_committed(&mut buf)?;
        self.write(&buf)?;
        if sync {
            self.file.sync_data()?;
        }
        if let Some(upto) = purge_upto {
            self.drop_purged(upto)?;
        }
        if self.size >= self.segment_bytes {
            self.roll()?;
        }
        Ok(())
    }

    /// Writes `buf` after the records of the current segment.
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, self.size)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    /// Deletes the oldest closed segments while every entry they hold is purged.
    fn drop_purged(&mut self, upto: u64) -> io::Result<()> {
        let n = self
            .closed
            .iter()
            .take_while(|s| s.max_index.is_none_or(|m| m <= upto))
            .count();
        if n == 0 {
            return Ok(());
        }
        for s in self.closed.drain(..n) {
            fs::remove_file(&s.path)?;
        }
        sync_dir(&self.dir).map_err(io::Error::from)
    }

    /// Closes the current segment and starts the next, beginning with the log's header.
    fn roll(&mut self) -> io::Result<()> {
        let seq = self.current.seq + 1;
        let path = segment_path(&self.dir, seq);
        let header = self
            .mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .header()
            .map_err(io::Error::from)?;
        // The closed segment ends with its last record: zeros allocated ahead and never
        // written would read as damage in a segment that is not the last.
        self.file.set_len(self.size)?;
        self.file.sync_all()?;
        let file = create_segment(&self.dir, &path, &header, self.segment_bytes)?;
        let old = std::mem::replace(
            &mut self.current,
            Segment {
                seq,
                path,
                max_index: None,
            },
        );
        self.closed.push(old);
        self.file = file;
        self.size = header.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .mem()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.mem().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let mem = self.mem();
        let last = mem
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id())
            .or(mem.last_purged);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut bytes = Vec::new();
        codec::put_record(&mut bytes, &LogRecord::Vote(*vote)).map_err(io::Error::from)?;
        self.mem().vote = Some(*vote);
        self.write_synced(bytes, None).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not a write of its own: the writer adds the latest committed id to the next group
        // it writes (after that group's entries), and when the log closes. A committed id
        // lost to a crash is only re-learned from the leader, so it need not wake the writer
        // (once per committed entry on the leader, a thread switch and a `write` each).
        let mut mem = self.mem();
        mem.committed = committed;
        mem.committed_unwritten = true;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.mem().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.submit_entries(entries, Done::Flushed(callback))
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let since = last.map_or(0, |id| id.index + 1);
        let mut bytes = Vec::new();
        codec::put_record(&mut bytes, &LogRecord::Truncate { since }).map_err(io::Error::from)?;
        drop(self.mem().entries.split_off(&since));
        self.write_synced(bytes, None).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut bytes = Vec::new();
        codec::put_record(&mut bytes, &LogRecord::Purge(log_id)).map_err(io::Error::from)?;
        self.mem().purge(log_id);
        self.write_synced(bytes, Some(log_id.index)).await?;
        tracing::debug!(upto = log_id.index, "purged the log up to a snapshot");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{blank_ent, log_id};

    use super::*;

    /// The log id of the entry at `index` in term 1 of node 1.
    fn id(index: u64) -> LogId {
        log_id::<TypeConfig>(1, 1, index)
    }

    /// Appends the entries in batches of five, each synced before the next.
    async fn append(log: &LogStore, range: std::ops::RangeInclusive<u64>) {
        let all: Vec<u64> = range.collect();
        for batch in all.chunks(5) {
            let (tx, rx) = oneshot::channel();
            let entries = batch.iter().map(|&i| blank_ent::<TypeConfig>(1, 1, i));
            log.submit_entries(entries, Done::Reply(tx)).unwrap();
            rx.await.unwrap().unwrap();
        }
    }

    async fn indices(log: &mut LogStore) -> Vec<u64> {
        let entries = log.try_get_log_entries(0..).await.unwrap();
        entries.iter().map(|e| e.log_id().index).collect()
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_segment)
                    .is_some()
            })
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn reopen_replays_cuts_a_torn_tail_and_purge_drops_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = LogStore::open(&dir, 128).unwrap();
        append(&log, 1..=30).await;
        let vote = Vote::new(3, 2);
        log.save_vote(&vote).await.unwrap();
        log.truncate_after(Some(id(25))).await.unwrap();
        append(&log, 26..=50).await;
        drop(log);

        let mut log = LogStore::open(&dir, 128).unwrap();
        assert_eq!(indices(&mut log).await, (1..=50).collect::<Vec<_>>());
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        let many = segments(&dir);
        assert!(many.len() > 3, "small segments roll: {many:?}");
        drop(log);

        // A crash in the middle of a write: a record header promising more than is there,
        // where the next record goes.
        let last = many.last().unwrap().clone();
        let good_len = written_len(&last);
        write_at(&last, good_len, &[0, 0, 0, 100, 1, 2, 3, 4, 5, 6]);
        let mut log = LogStore::open(&dir, 128).unwrap();
        assert_eq!(written_len(&last), good_len, "torn tail cut");
        assert_eq!(indices(&mut log).await, (1..=50).collect::<Vec<_>>());
        drop(log);

        // A crash that kept a write's new file size but not its data (zeros where the
        // records were, after the space allocated ahead): the log ends before them, and the
        // next records go there.
        write_at(&last, fs::metadata(&last).unwrap().len(), &[0; 40]);
        let mut log = LogStore::open(&dir, 128).unwrap();
        assert_eq!(written_len(&last), good_len, "zeros are no records");
        assert_eq!(indices(&mut log).await, (1..=50).collect::<Vec<_>>());
        append(&log, 51..=52).await;

        // Purging drops the segments whose entries are all purged; the vote survives.
        log.purge(id(40)).await.unwrap();
        let after = segments(&dir);
        assert!(after.len() < many.len(), "{after:?} vs {many:?}");
        drop(log);
        let mut log = LogStore::open(&dir, 128).unwrap();
        assert_eq!(indices(&mut log).await, (41..=52).collect::<Vec<_>>());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(id(40)));
        assert_eq!(state.last_log_id, Some(id(52)));
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));

        // Damage in a closed segment is not a torn tail: opening refuses.
        drop(log);
        let first = segments(&dir)[0].clone();
        let mut data = fs::read(&first).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        fs::write(&first, data).unwrap();
        assert!(segments(&dir).len() > 1);
        assert!(matches!(
            LogStore::open(&dir, 128),
            Err(RaftStoreError::Corrupt { .. })
        ));
    }

    /// The records of a segment file, in order, and where they end: only zeros (space
    /// allocated ahead) may follow them.
    fn records_and_end(path: &Path) -> (Vec<LogRecord>, u64) {
        let data = fs::read(path).unwrap();
        let (mut offset, mut out) = (0, Vec::new());
        while let RecordAt::Whole(body, next) = codec::next_record(&data, offset) {
            out.push(codec::decode(body).unwrap());
            offset = next;
        }
        assert!(
            data[offset..].iter().all(|&b| b == 0),
            "{}: whole records, then zeros only",
            path.display()
        );
        (out, offset as u64)
    }

    fn records(path: &Path) -> Vec<LogRecord> {
        records_and_end(path).0
    }

    /// Where the records of a segment file end.
    fn written_len(path: &Path) -> u64 {
        records_and_end(path).1
    }

    fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(bytes, offset).unwrap();
    }

    #[tokio::test]
    async fn segments_are_allocated_ahead_and_closed_at_their_last_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let log = LogStore::open(&dir, 4096).unwrap();
        append(&log, 1..=3).await;
        let first = segments(&dir)[0].clone();
        // Written over space allocated ahead: the file is already as long as a segment.
        assert_eq!(fs::metadata(&first).unwrap().len(), 4096);
        assert!(written_len(&first) < 1024);
        drop(log);
        // Reopened with smaller segments: the first closes long before its space ends.
        let segment_bytes = 1024;
        let log = LogStore::open(&dir, segment_bytes).unwrap();
        append(&log, 4..=200).await;
        drop(log);
        let all = segments(&dir);
        assert!(all.len() > 2, "segments roll: {all:?}");
        for closed in &all[..all.len() - 1] {
            assert_eq!(
                fs::metadata(closed).unwrap().len(),
                written_len(closed),
                "{} ends with its last record",
                closed.display()
            );
        }
        let mut log = LogStore::open(&dir, segment_bytes).unwrap();
        assert_eq!(indices(&mut log).await, (1..=200).collect::<Vec<_>>());
        // Reopened, the log writes after its last record, not after the zeros.
        append(&log, 201..=201).await;
        drop(log);
        let mut log = LogStore::open(&dir, segment_bytes).unwrap();
        assert_eq!(indices(&mut log).await, (1..=201).collect::<Vec<_>>());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_log_directory_and_its_segments_are_private() {
        use std::os::unix::fs::PermissionsExt;

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft").join("log");
        let log = LogStore::open(&dir, 256).unwrap();
        append(&log, 1..=30).await;
        drop(log);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700, "a parent created too");
        let all = segments(&dir);
        assert!(all.len() > 1, "segments roll: {all:?}");
        for segment in &all {
            assert_eq!(mode(segment), 0o600, "{}", segment.display());
        }
    }

    #[test]
    fn a_segment_is_read_up_to_its_space_allocated_ahead() {
        use rustix::fs::{SeekFrom, seek};

        const SIZE: u64 = 1 << 20;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("segment");
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        preallocate(&file, &path, SIZE);
        write_at(&path, 0, b"records");
        file.sync_all().unwrap();
        // A file system that tells allocated, unwritten space for a hole (ext4, XFS): the
        // hole is not read. One that does not: the whole file is. (Asked first: space read
        // once sits in the page cache, and counts as data from then on.)
        let hole = seek(&file, SeekFrom::Hole(0)).unwrap();
        let data = read_written(&path).unwrap();
        assert!(data.starts_with(b"records"));
        assert!(data[7..].iter().all(|&b| b == 0));
        assert_eq!(data.len() as u64, hole);
        if hole < SIZE {
            assert!(data.len() <= 64 << 10, "{} bytes read", data.len());
        }
        // Data after the hole (a torn write can leave a later block): the whole file is read,
        // so that a reopen sees it and cuts it off.
        write_at(&path, SIZE / 2, b"later");
        file.sync_all().unwrap();
        let data = read_written(&path).unwrap();
        assert_eq!(data.len() as u64, SIZE);
        assert_eq!(&data[SIZE as usize / 2..][..5], b"later");
    }

    #[tokio::test]
    async fn the_committed_id_goes_to_disk_with_the_next_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = LogStore::open(&dir, 1 << 20).unwrap();
        append(&log, 1..=5).await;
        log.save_committed(Some(id(4))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(id(4)));
        // Noted, not written on its own: the next append carries it.
        append(&log, 6..=6).await;
        drop(log);
        let mut log = LogStore::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(id(4)));
        assert_eq!(log.committed_index(), 4);
        // A later id, then a synced vote: the vote's group carries it too.
        log.save_committed(Some(id(6))).await.unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        drop(log);
        let mut log = LogStore::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(id(6)));
        assert_eq!(indices(&mut log).await, (1..=6).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_committed_id_ahead_of_the_entries_on_disk_is_cut_back_on_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = LogStore::open(&dir, 1 << 20).unwrap();
        append(&log, 1..=4).await;
        // Committed by the other members while entries 5 and 6 still wait for this log's
        // writer: the id goes out with entry 5's group, and the crash loses entry 6.
        log.save_committed(Some(id(6))).await.unwrap();
        append(&log, 5..=5).await;
        drop(log);
        let mut log = LogStore::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(id(5)));
        assert_eq!(log.committed_index(), 5);
        assert_eq!(indices(&mut log).await, (1..=5).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn every_segment_starts_with_the_format_and_a_newer_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let log = LogStore::open(&dir, 128).unwrap();
        append(&log, 1..=30).await;
        drop(log);
        let all = segments(&dir);
        assert!(all.len() > 2, "small segments roll: {all:?}");
        for path in &all {
            assert!(
                matches!(records(path).first(), Some(LogRecord::Format(LOG_FORMAT))),
                "{} starts with its format",
                path.display()
            );
        }

        // A segment written by a later build, in a format this one does not know.
        let last = all.last().unwrap();
        let mut newer = Vec::new();
        codec::put_record(&mut newer, &LogRecord::Format(LOG_FORMAT + 1)).unwrap();
        fs::write(last, newer).unwrap();
        match LogStore::open(&dir, 128) {
            Err(
                e @ RaftStoreError::Format {
                    found, supported, ..
                },
            ) => {
                assert_eq!((found, supported), (LOG_FORMAT + 1, LOG_FORMAT));
                let message = e.to_string();
                assert!(message.contains(&last.display().to_string()), "{message}");
            }
            other => panic!("a newer format must be refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_segment_from_before_formats_were_recorded_is_read_as_format_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        fs::create_dir_all(&dir).unwrap();
        let vote = Vote::new(4, 1);
        let mut old = Vec::new();
        codec::put_record(&mut old, &LogRecord::Vote(vote)).unwrap();
        for i in 1..=3 {
            let entry = blank_ent::<TypeConfig>(4, 1, i);
            codec::put_record(&mut old, &EntryRecord::Entry(&entry)).unwrap();
        }
        fs::write(segment_path(&dir, 1), &old).unwrap();

        let mut log = LogStore::open(&dir, 1 << 20).unwrap();
        assert_eq!(indices(&mut log).await, vec![1, 2, 3]);
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        append(&log, 4..=5).await;
        drop(log);
        let mut log = LogStore::open(&dir, 1 << 20).unwrap();
        assert_eq!(indices(&mut log).await, vec![1, 2, 3, 4, 5]);
    }
}
