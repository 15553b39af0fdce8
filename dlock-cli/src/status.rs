//! `dlock status`.

use std::io::Write;

use std::time::Duration;

use dlock_client::{ResourcePage, ServerView};
use dlock_proto::status::ClusterView;

use crate::args::StatusArgs;
use crate::error::{CliError, exit};
use crate::format;
use crate::report::{StatusJson, table};
use crate::session::{self, Ctx};
use crate::stdout;

/// How long `status --cluster` waits for each member's answer: a member that answers at
/// all answers within milliseconds, and one that is stopped should not hold the others up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Queries the resources under the prefix and prints them as a table or JSON.
pub async fn run(ctx: &Ctx, args: StatusArgs) -> Result<u8, CliError> {
    if args.cluster {
        return cluster(ctx, args.json).await;
    }
    let client = session::connect(ctx, None).await?;
    let cluster = if args.json {
        Ok(None)
    } else {
        client.query_cluster().await
    };
    let prefix = args.prefix.as_ref().map_or(&b""[..], |p| p.0.as_slice());
    let after = args.cursor.as_ref().map(|c| c.0.clone());
    let view = client.view_prefix_after(prefix, after, args.limit).await;
    session::close(&client).await;
    if let Some(view) = cluster?.filter(|_| !args.json) {
        stdout::write(|out| writeln!(out, "{}", cluster_table(&view)))?;
    }
    // Ages are measured by the clock of this very reply, so they are the server's.
    let ServerView {
        now_ms,
        value: ResourcePage { resources, more },
    } = view?;
    let next_cursor = resources.last().filter(|_| more).map(|r| r.name.clone());
    if args.json {
        let doc = StatusJson::page(&resources, now_ms, more);
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| CliError::Io(std::io::Error::other(e)))?;
        stdout::write(|out| writeln!(out, "{text}"))?;
    } else if resources.is_empty() {
        eprintln!(
            "{}",
            nothing_listed(prefix, args.cursor.as_ref().map(|c| c.0.as_slice()))
        );
    } else {
        stdout::write(|out| out.write_all(table(&resources, now_ms).as_bytes()))?;
    }
    if let Some(last) = next_cursor {
        eprintln!("{}", more_follow(resources.len(), &last));
    }
    Ok(exit::OK)
}

/// What stderr says when no resource is listed: none at all, or none under the prefix (or
/// after the cursor) given.
fn nothing_listed(prefix: &[u8], cursor: Option<&[u8]>) -> String {
    let mut line = "dlock: no locks held or requested".to_owned();
    if !prefix.is_empty() {
        line.push_str(&format!(" under {}", format::quoted(prefix)));
    }
    if let Some(cursor) = cursor {
        line.push_str(&format!(" after {}", format::quoted(cursor)));
    }
    line
}

/// What stderr says when the listing was cut at `--limit` after `shown` resources, the
/// last of them named `last`: how to see the rest, with a cursor that `--cursor` takes back
/// as exactly `last` (`hex:HEX` for a name that is not plain text).
fn more_follow(shown: usize, last: &[u8]) -> String {
    format!(
        "dlock: more resources follow ({shown} shown): pass --cursor {} for the next page, or a larger --limit",
        format::cursor_arg(last)
    )
}

/// Beyond this, a member the leader has not heard from is shown as down or cut off (the
/// leader sends a heartbeat every 50 ms; an election follows 200-400 ms without one).
const SILENT_MS: u64 = 1_000;

/// When the leader last heard from a member, `ms` ago, for the ANSWERED column.
fn answered(ms: u64) -> String {
    if ms < SILENT_MS {
        format!("{ms}ms ago")
    } else {
        format!("{:.1}s ago: DOWN?", ms as f64 / 1000.0)
    }
}

/// `dlock status --cluster`: asks every member given, without a session, how it sees the
/// cluster, and prints the leader's view (the leader named by a member is asked too if it
/// was not given). Without a leader, which is when an operator looks, it prints every
/// member's own view and exits 69: no session could be opened then.
async fn cluster(ctx: &Ctx, json: bool) -> Result<u8, CliError> {
    let probe = |server: String| async move {
        let ctx = Ctx {
            server,
            ..ctx.clone()
        };
        session::builder(&ctx, None)?
            .connect_timeout(PROBE_TIMEOUT)
            .probe()
            .await
            .map_err(|e| session::client_error(&ctx, e))
    };
    let mut views = Vec::new();
    let mut failed = None;
    for probed in probe(ctx.server.clone()).await? {
        match probed.answer {
            Ok(Some(view)) => views.push(view),
            Ok(None) => return print_cluster(None, json).map(|()| exit::OK),
            Err(e) => {
                tracing::debug!(endpoint = %probed.endpoint, error = %e, "no view");
                failed = Some(e);
            }
        }
    }
    let leads = |v: &ClusterView| v.leader == Some(v.node_id) && v.serving;
    if !views.iter().any(leads) {
        // A member names a leader that was not asked: ask it.
        let named = views.iter().find_map(|v| {
            let leader = v.members.iter().find(|m| Some(m.id) == v.leader)?;
            let asked = views.iter().any(|w| w.node_id == leader.id);
            (!asked).then(|| leader.client_addr.clone())
        });
        if let Some(addr) = named {
            for probed in probe(addr).await? {
                if let Ok(Some(view)) = probed.answer {
                    views.push(view);
                }
            }
        }
    }
    if let Some(view) = views.iter().find(|v| leads(v)) {
        return print_cluster(Some(view), json).map(|()| exit::OK);
    }
    let Some(first) = views.first() else {
        let e = failed.unwrap_or(dlock_client::Error::Disconnected);
        return Err(session::client_error(ctx, e));
    };
    // No leader: every member's own view (as JSON, the one with the newest term).
    if json {
        let newest = views.iter().max_by_key(|v| (v.term, v.last_log_index));
        print_cluster(Some(newest.unwrap_or(first)), true)?;
    } else {
        for view in &views {
            print_cluster(Some(view), false)?;
        }
    }
    eprintln!(
        "dlock: no leader: {} of the members given answered, none leads (an election, or no \
         majority up)",
        views.len()
    );
    Ok(exit::UNAVAILABLE)
}

/// Prints `view` (`None`: a server alone) as a table or JSON.
fn print_cluster(view: Option<&ClusterView>, json: bool) -> Result<(), CliError> {
    if json {
        // Always an object, for `jq`: a server alone has no cluster and no members.
        let doc = match view {
            Some(view) => serde_json::to_value(view),
            None => Ok(serde_json::json!({"cluster": null, "members": []})),
        };
        let text = doc
            .and_then(|doc| serde_json::to_string_pretty(&doc))
            .map_err(|e| CliError::Io(std::io::Error::other(e)))?;
        stdout::write(|out| writeln!(out, "{text}"))
    } else {
        stdout::write(|out| match view {
            Some(view) => out.write_all(cluster_table(view).as_bytes()),
            None => writeln!(out, "not a cluster: this server runs alone"),
        })
    }
}

/// The cluster as a few lines: who answered, leader and term, then one row per member.
/// On the leader, ANSWERED says how long ago each other member last answered it: a member
/// that is down or cut off keeps the MATCHED it had.
pub fn cluster_table(view: &dlock_proto::status::ClusterView) -> String {
    let leader = match view.leader {
        None => "unknown".to_owned(),
        Some(l) if l == view.node_id && !view.serving => {
            format!("node {l} (not serving: no majority answers it)")
        }
        Some(l) => format!("node {l}"),
    };
    let mut s = format!(
        "cluster: answered by node {}, leader {leader}, term {}, log index {}, applied {}\n",
        view.node_id, view.term, view.last_log_index, view.applied_index
    );
    let rows: Vec<[String; 6]> = view
        .members
        .iter()
        .map(|m| {
            let role = if Some(m.id) == view.leader { "*" } else { "" };
            [
                format!("{}{role}", m.id),
                if m.voter { "voter" } else { "learner" }.to_owned(),
                m.client_addr.clone(),
                m.raft_addr.clone(),
                m.matched.map_or_else(|| "-".to_owned(), |i| i.to_string()),
                m.heard_ms.map_or_else(|| "-".to_owned(), answered),
            ]
        })
        .collect();
    let header = ["NODE", "VOTES", "CLIENT", "PEER", "MATCHED", "ANSWERED"].map(str::to_owned);
    let mut width = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(width)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        s.push_str("  ");
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use dlock_proto::status::{ClusterView, MemberView};

    use super::{cluster_table, more_follow, nothing_listed};
    use crate::args::{Cli, Command, Cursor};

    #[test]
    fn stderr_says_what_was_not_listed_and_how_to_go_on() {
        assert_eq!(
            nothing_listed(b"", None),
            "dlock: no locks held or requested"
        );
        assert_eq!(
            nothing_listed(b"jobs.", None),
            "dlock: no locks held or requested under \"jobs.\""
        );
        assert_eq!(
            nothing_listed(b"jobs.", Some(b"jobs.z")),
            "dlock: no locks held or requested under \"jobs.\" after \"jobs.z\""
        );
        assert_eq!(
            more_follow(1, b"pg.a"),
            "dlock: more resources follow (1 shown): pass --cursor \"pg.a\" for the next page, or a larger --limit"
        );
    }

    /// The cursor a hint tells to pass, as `dlock status` gets it back from a shell
    /// (which takes the double quotes away).
    fn hinted_cursor(hint: &str) -> Vec<u8> {
        let word = hint
            .split_once("pass --cursor ")
            .and_then(|(_, rest)| rest.split_once(" for the next page"))
            .map(|(word, _)| word)
            .unwrap_or_else(|| panic!("no cursor in {hint:?}"));
        let word = word
            .strip_prefix('"')
            .and_then(|w| w.strip_suffix('"'))
            .unwrap_or(word);
        let cli = Cli::parse_args(["dlock", "status", "--cursor", word]).unwrap();
        let Command::Status(st) = cli.command else {
            panic!("not status")
        };
        let Some(Cursor(bytes)) = st.cursor else {
            panic!("no cursor")
        };
        bytes
    }

    #[test]
    fn the_hinted_cursor_goes_on_after_exactly_the_last_name() {
        for name in [
            &b"pg.a"[..],
            b"a\xffb",
            b"a\0b",
            b"\xff",
            b"tab\there",
            b"esc\x1b[2J",
            b"caf\xc3\xa9 au lait",
            b"hex:61",
            b"say \"hi\"",
            b"$HOME",
            b"back\\slash",
            "\u{202e}RTL.txt".as_bytes(),
            "zero\u{200b}width".as_bytes(),
            b"",
        ] {
            let hint = more_follow(1, name);
            assert_eq!(hinted_cursor(&hint), name, "{hint}");
            assert!(!hint.contains('\u{fffd}'), "{hint}");
            // Nothing that a terminal would not show as it is.
            assert!(
                !hint
                    .chars()
                    .any(|c| c.escape_debug().nth(1).is_some() && c != '"'),
                "{hint:?}"
            );
        }
        assert!(more_follow(1, b"a\xffb").contains("--cursor hex:61ff62 for"));
        assert!(more_follow(1, b"caf\xc3\xa9").contains("--cursor \"caf\u{e9}\" for"));
    }

    #[test]
    fn the_cluster_table_marks_the_leader_and_unknown_indices() {
        let member = |id, matched| MemberView {
            id,
            client_addr: format!("127.0.0.1:743{id}"),
            raft_addr: format!("127.0.0.1:753{id}"),
            matched,
            heard_ms: match id {
                1 => Some(4_200),
                3 => Some(12),
                _ => None,
            },
            voter: id != 3,
        };
        let view = ClusterView {
            node_id: 2,
            leader: Some(2),
            term: 7,
            last_log_index: 120,
            applied_index: 119,
            members: vec![member(1, Some(118)), member(2, Some(120)), member(3, None)],
            serving: true,
        };
        let stalled = cluster_table(&ClusterView {
            serving: false,
            ..view.clone()
        });
        assert!(
            stalled.starts_with(
                "cluster: answered by node 2, leader node 2 (not serving: no majority answers \
                 it), term 7"
            ),
            "{stalled}"
        );
        let t = cluster_table(&view);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "cluster: answered by node 2, leader node 2, term 7, log index 120, applied 119"
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["NODE", "VOTES", "CLIENT", "PEER", "MATCHED", "ANSWERED"]
        );
        // A member silent for seconds is called out, whatever it matched.
        let cells = |i: usize| lines[i].split_whitespace().skip(4).collect::<Vec<_>>();
        assert_eq!(cells(2), ["118", "4.2s", "ago:", "DOWN?"], "{t}");
        assert_eq!(cells(3), ["120", "-"], "{t}");
        assert_eq!(cells(4), ["-", "12ms", "ago"], "{t}");
        // A learner being added says so.
        assert_eq!(lines[4].split_whitespace().nth(1), Some("learner"), "{t}");
        assert_eq!(lines[2].split_whitespace().nth(1), Some("voter"), "{t}");
        assert!(lines[2].starts_with("  1 "), "{t}");
        assert!(lines[3].starts_with("  2* "), "{t}");
    }
}
