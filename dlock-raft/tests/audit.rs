//! The audit log is written without the engine's lock held: a disk slow to take a line
//! holds up no reader of the engine (the leader's tick loop, status, linearizable reads).

mod common;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, Event, Input};
use dlock_raft::state_machine::Auditor;

/// An auditor that stalls on the input that opens the session named "stall", as a write to
/// a slow disk does, until told to go on.
#[derive(Debug)]
struct Stalling {
    entered: Sender<()>,
    release: Mutex<Receiver<()>>,
    seen: Vec<u64>,
}

impl Auditor for Stalling {
    fn opened(&mut self, _applied: u64) {}

    fn applied(&mut self, input: &Input, _events: &[Event]) {
        self.seen.push(input.index);
        if matches!(&input.command, Command::OpenSession { name, .. } if name == "stall") {
            let _ = self.entered.send(());
            let release = self.release.lock().unwrap_or_else(|p| p.into_inner());
            let _ = release.recv_timeout(DEADLINE);
        }
    }

    fn installed(&mut self, _upto: u64) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audit_write_holds_up_no_reader_of_the_engine() -> Result<()> {
    let (entered_tx, entered) = channel();
    let (release, release_rx) = channel();
    let auditor = Arc::new(Mutex::new(Stalling {
        entered: entered_tx,
        release: Mutex::new(release_rx),
        seen: Vec::new(),
    }));
    let shared: dlock_raft::state_machine::SharedAuditor = auditor.clone();
    let mut c = cluster(1).await?;
    let nodes = c
        .start_all(move |c, id| {
            let mut o = c.defaults(id);
            o.auditor = Some(shared.clone());
            o
        })
        .await?;
    leader_among(&nodes.iter().collect::<Vec<_>>()).await?;
    let node = &nodes[0];

    let raft = node.raft.clone();
    let open = tokio::spawn(async move {
        let stall = Command::OpenSession {
            name: "stall".into(),
            ttl_ms: 10_000,
            secret: 1,
        };
        write(&raft, 5, stall).await
    });
    tokio::task::spawn_blocking(move || entered.recv_timeout(DEADLINE))
        .await?
        .context("the auditor never saw the session opened")?;

    // The audit write stalls: the engine, with the session applied, can still be read.
    let replica = node.replica.clone();
    let read = tokio::task::spawn_blocking(move || replica.read(|core| core.session_count()));
    let sessions = tokio::time::timeout(DEADLINE / 2, read)
        .await
        .context("reading the engine waited for the audit write")??;
    assert_eq!(sessions, 1);
    // The proposer's answer waits for the audit line (written before any event goes out).
    assert!(!open.is_finished());

    release.send(())?;
    let applied = open.await??;
    assert!(auditor.lock().unwrap().seen.contains(&applied.input));
    node.stop.cancel();
    node.raft.shutdown().await.ok();
    Ok(())
}
