//! `dlock status` against a three-member cluster (in-process servers on 127.0.0.1): given
//! every member, it finds the leader and shows the current holder, read through the
//! leader's linearizable read. And a cluster between leaders (scripted followers that name a
//! leader that is gone): dlock waits for the new leader, and says when there is none.

mod common;

use anyhow::{Context, Result, ensure};
use common::fake::FakeFollower;
use common::*;
use dlock_client::{Client, Mode};
use dlock_server::cluster::{ClusterConfig, DEFAULT_FAILOVER_GRACE, parse_peers};
use dlock_server::{Config, Server, ServerHandle};
use serde_json::Value;

/// Three members on reserved loopback ports, the first forming the cluster; returns them
/// with the comma-separated client endpoints.
async fn three() -> Result<(Vec<ServerHandle>, Vec<tempfile::TempDir>, String)> {
    let ports = dlock_tests::ports::reserve(6)?;
    let peers: Vec<String> = (0..3)
        .map(|i| format!("{}={}/{}", i + 1, ports[i], ports[i + 3]))
        .collect();
    let members = parse_peers(&peers.join(",")).map_err(anyhow::Error::msg)?;
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for (i, listen) in ports.iter().take(3).enumerate() {
        let dir = tempfile::tempdir()?;
        let config = Config {
            listen: *listen,
            data_dir: dir.path().to_path_buf(),
            cluster: Some(ClusterConfig {
                node_id: i as u64 + 1,
                members: members.clone(),
                init: i == 0,
                failover_grace: DEFAULT_FAILOVER_GRACE,
                raft_bind: None,
                snapshot_every: None,
                secret_file: None,
            }),
            ..Config::default()
        };
        servers.push(Server::with_config(config).spawn().await?);
        dirs.push(dir);
    }
    let endpoints = ports[..3]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    Ok((servers, dirs, endpoints))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_cluster_shows_the_current_holder() -> Result<()> {
    let (servers, _dirs, endpoints) = three().await?;
    // Once a leader is elected, a client given every member finds it.
    let holder = eventually("a client to reach the leader", || async {
        Client::builder(endpoints.clone())
            .name("cli-holder")
            .connect()
            .await
            .ok()
    })
    .await?;
    let g = holder.lock("cli.db", Mode::PW).await?;

    let out = output(dlock_at(&endpoints, &["status", "--json", "cli."])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).context("status --json is JSON")?;
    let r = &doc["resources"][0];
    ensure!(r["name"] == "cli.db", "{doc}");
    let h = &r["holders"][0];
    ensure!(h["session_name"] == "cli-holder", "{doc}");
    ensure!(h["mode"] == "PW" && h["token"] == g.token().0, "{doc}");

    // Released, the next status shows nothing held.
    g.unlock().await?;
    let out = output(dlock_at(&endpoints, &["status", "--json", "cli."])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        doc["resources"].as_array().is_some_and(Vec::is_empty),
        "{doc}"
    );
    holder.close().await?;
    for s in servers {
        s.shutdown().await?;
    }
    Ok(())
}

/// An address nothing listens on: a connection to it is refused, as to a SIGKILLed leader.
async fn dead_address() -> Result<String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.to_string())
}

#[tokio::test]
async fn ping_right_after_the_leader_died_finds_the_new_leader() -> Result<()> {
    // The leader was SIGKILLed: its port refuses connections and the follower still names
    // it. On the next connection the follower names the new leader (a real server).
    let dead = dead_address().await?;
    let leader = TestServer::start().await?;
    let follower =
        FakeFollower::start(vec![Some(dead.clone()), Some(leader.addr().to_string())]).await?;
    let list = format!("{dead},{}", follower.addr());
    let out = output(dlock_at(&list, &["ping"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let answered = format!("server {}, version", leader.addr());
    assert!(stdout(&out).starts_with(&answered), "{}", stdout(&out));
    Ok(())
}

#[tokio::test]
async fn a_cluster_without_a_leader_is_unavailable_and_dlock_says_why() -> Result<()> {
    // Members answer, but none leads for the whole connect timeout: exit 69, and the message
    // names the NotLeader answers, not the refused connection to the dead leader.
    let dead = dead_address().await?;
    let follower = FakeFollower::start(vec![Some(dead.clone()), None]).await?;
    let list = format!("{dead},{}", follower.addr());
    let out = output(dlock_at(&list, &["ping"])).await?;
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "dlock: server {list} unavailable: no leader: members answered NotLeader"
        )),
        "{err}"
    );
    assert!(!err.contains("refused"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_the_cluster_shows_every_member_when_none_leads() -> Result<()> {
    let (mut servers, _dirs, endpoints) = three().await?;
    // With a leader: its view, as JSON, with the leader serving.
    let doc = eventually("a serving leader", || async {
        let out = output(dlock_at(&endpoints, &["status", "--cluster", "--json"]))
            .await
            .ok()?;
        let doc: Value = serde_json::from_slice(&out.stdout).ok()?;
        (code(&out) == 0 && doc["serving"] == true).then_some(doc)
    })
    .await?;
    ensure!(doc["leader"] == doc["node_id"], "{doc}");
    ensure!(doc["members"].as_array().map(Vec::len) == Some(3), "{doc}");

    // Two members stopped: no session can be opened, and the one left still answers, each
    // view shown as it is, and dlock exits 69 saying none leads.
    let last = servers.pop().expect("three");
    for s in servers {
        s.shutdown().await?;
    }
    let out = eventually("the member left to say it does not lead", || async {
        let out = output(dlock_at(&endpoints, &["status", "--cluster"]))
            .await
            .ok()?;
        (code(&out) == 69).then_some(out)
    })
    .await?;
    let (text, err) = (stdout(&out), stderr(&out));
    ensure!(
        text.starts_with("cluster: answered by node 3, leader "),
        "{text}"
    );
    ensure!(
        text.lines().count() == 5,
        "one view of three members: {text}"
    );
    ensure!(
        err.starts_with("dlock: no leader: 1 of the members given answered"),
        "{err}"
    );
    last.shutdown().await?;
    Ok(())
}
