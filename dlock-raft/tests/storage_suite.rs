//! openraft's own storage test suite against dlock's log and state machine, each run on a
//! fresh directory.

use dlock_raft::openraft::StorageError;
use dlock_raft::openraft::testing::log::{StoreBuilder, Suite};
use dlock_raft::{LogStore, StateMachine, TypeConfig};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path().join("log"), 4096).expect("open log");
        let sm = StateMachine::open(dir.path(), dlock_core::Config::default()).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[tokio::test]
async fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder).await {
        panic!("storage suite: {e}");
    }
}
