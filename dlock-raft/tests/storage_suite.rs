//! openraft's own storage test suite against dlock's log and state machine, each run on a
//! fresh directory.

use dlock_raft::openraft::StorageError;
use dlock_raft::openraft::testing::{StoreBuilder, Suite};
use dlock_raft::{LogStore, NodeId, StateMachine, TypeConfig};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path().join("log"), 4096).expect("open log");
        let sm = StateMachine::open(dir.path(), dlock_core::Config::default()).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite: {e}");
    }
}
