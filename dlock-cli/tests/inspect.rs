//! `dlock status`, `ping`, `completions` and the help texts, end to end.

mod common;

use std::process::Stdio;

use anyhow::{Context, Result};
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_holders_and_waiters() -> Result<()> {
    let server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let mut holder = dlock(
        &server,
        &["--name", "holder-1", "acquire", "-m", "PW", "app.db"],
    )
    .stdin(Stdio::piped())
    .spawn()?;
    let mut line = String::new();
    let out = holder.stdout.take().context("stdout")?;
    tokio::time::timeout(DEADLINE, BufReader::new(out).read_line(&mut line)).await??;
    let token: u64 = line.trim().parse()?;
    let waiter = dlock(
        &server,
        &["--name", "waiter-1", "acquire", "app.db", "--", "true"],
    )
    .spawn()?;
    queues(&obs, "app.db", 1, 1).await?;

    let out = output(dlock(&server, &["status", "--json"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).context("status --json is JSON")?;
    // The very type the server's /api/resources answers with, every page in one.
    let typed: dlock_proto::status::ResourcesView = serde_json::from_slice(&out.stdout)?;
    assert_eq!((typed.resources.len(), typed.next_cursor), (1, None));
    assert!(doc["now_ms"].is_u64(), "{doc}");
    let resources = doc["resources"].as_array().context("resources array")?;
    assert_eq!(resources.len(), 1, "{doc}");
    let r = &resources[0];
    assert_eq!(r["name"], "app.db");
    assert_eq!(r["value_valid"], true);
    assert_eq!(r["converting"].as_array().map(Vec::len), Some(0));
    let h = &r["holders"][0];
    assert_eq!(h["session_name"], "holder-1");
    assert_eq!(h["mode"], "PW");
    assert_eq!(h["requested_mode"], Value::Null);
    assert_eq!(h["token"], token);
    assert!(h["for_ms"].is_u64() && h["since_ms"].is_u64() && h["session"].is_u64());
    let w = &r["waiting"][0];
    assert_eq!(w["session_name"], "waiter-1");
    assert_eq!(w["mode"], Value::Null);
    assert_eq!(w["requested_mode"], "EX");
    assert_eq!(w["token"], Value::Null);

    // A prefix that matches nothing gives an empty list; the table shows both locks.
    let out = output(dlock(&server, &["status", "--json", "other."])).await?;
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(doc["resources"].as_array().map(Vec::len), Some(0));
    let out = output(dlock(&server, &["status", "app."])).await?;
    assert_eq!(code(&out), 0);
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("RESOURCE"));
    assert!(rows[1].contains("granted") && rows[1].contains("PW") && rows[1].contains("holder-1"));
    assert!(rows[2].contains("waiting") && rows[2].contains("EX") && rows[2].contains("waiter-1"));
    assert!(rows[1].contains(&token.to_string()));

    drop(holder.stdin.take());
    let out = finish(waiter).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    tokio::time::timeout(DEADLINE, holder.wait()).await??;
    Ok(())
}

#[tokio::test]
async fn ping_reports_version_and_round_trip() -> Result<()> {
    let server = TestServer::start().await?;
    let out = output(dlock(&server, &["ping"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&server.addr().to_string()), "{text}");
    assert!(
        text.contains("version") && text.contains("round trip"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn dlock_logs_follow_dlock_log_not_the_commands_rust_log() -> Result<()> {
    let server = TestServer::start().await?;
    // RUST_LOG is for the command dlock runs: dlock's own stderr stays quiet.
    let mut cmd = dlock(&server, &["ping"]);
    cmd.env("RUST_LOG", "trace");
    let out = output(cmd).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "RUST_LOG turned on dlock's logs");
    let mut cmd = dlock(&server, &["ping"]);
    cmd.env("DLOCK_LOG", "debug");
    let out = output(cmd).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("DEBUG"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn ping_tries_each_endpoint_of_a_list() -> Result<()> {
    let server = TestServer::start().await?;
    // Port 1 refuses at once: the real server, second in the list, answers.
    let list = format!("127.0.0.1:1,{}", server.addr());
    let out = output(dlock_at("127.0.0.1:9", &["--server", &list, "ping"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // It names the server that answered, not the list.
    let answered = format!("server {}, version", server.addr());
    assert!(stdout(&out).starts_with(&answered), "{}", stdout(&out));
    assert!(stdout(&out).contains("round trip"), "{}", stdout(&out));
    // The same list from DLOCK_SERVER.
    let out = output(dlock_at(&list, &["ping"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Every endpoint closed: unreachable (69), as with one address.
    let out = output(dlock_at("127.0.0.1:1,127.0.0.1:9", &["ping"])).await?;
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn a_malformed_server_address_is_a_usage_error() -> Result<()> {
    let server = TestServer::start().await?;
    // From --server or DLOCK_SERVER: exit 2 ("fix the command"), not 69 ("try again later").
    for bad in [
        "nonsense",
        "127.0.0.1:99999",
        "",
        ":7420",
        "::1:7420",
        "a:1,b",
    ] {
        let out = output(dlock_at("127.0.0.1:9", &["--server", bad, "ping"])).await?;
        assert_eq!(code(&out), 2, "--server {bad:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--server"), "{}", stderr(&out));
        // An empty DLOCK_SERVER counts as unset (see an_empty_dlock_variable_counts_as_unset).
        if !bad.is_empty() {
            let out = output(dlock_at(bad, &["ping"])).await?;
            assert_eq!(code(&out), 2, "DLOCK_SERVER={bad:?}: {}", stderr(&out));
        }
    }
    // A host name (not resolved until dlock connects), blanks and a trailing comma still
    // reach the server.
    let list = format!(" localhost:{} ,", server.addr().port());
    let out = output(dlock_at(&list, &["ping"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A name that does not resolve is unreachable, as before.
    let out = output(dlock_at("no-such-host.invalid:7420", &["ping"])).await?;
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn help_completions_and_usage_errors() -> Result<()> {
    let addr = "127.0.0.1:9"; // never contacted
    let out = output(dlock_at(addr, &["--help"])).await?;
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    for needle in ["Exit codes", "69", "75", "128+N", "Examples"] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    let out = output(dlock_at(addr, &["acquire", "--help"])).await?;
    assert!(stdout(&out).contains("DLOCK_TOKEN"));
    for shell in ["bash", "zsh", "fish"] {
        let out = output(dlock_at(addr, &["completions", shell])).await?;
        assert_eq!(code(&out), 0);
        assert!(stdout(&out).contains("acquire"), "{shell}");
        // The six modes are offered for --mode.
        assert!(stdout(&out).contains("PW"), "{shell}: no modes to complete");
    }
    let out = output(dlock_at(addr, &["acquire", "--mode", "XX", "db"])).await?;
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("expected one of NL, CR, CW, PR, PW, EX"),
        "{}",
        stderr(&out)
    );
    let out = output(dlock_at(addr, &["frobnicate"])).await?;
    assert_eq!(code(&out), 2);
    Ok(())
}

#[tokio::test]
async fn arguments_the_server_rejects_are_usage_errors() -> Result<()> {
    let server = TestServer::start().await?;
    let out = output(dlock(&server, &["acquire", "", "--", "true"])).await?;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    let out = output(dlock(
        &server,
        &["acquire", "--ttl", "1ms", "x", "--", "true"],
    ))
    .await?;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_conversions() -> Result<()> {
    use dlock_client::{Client, Mode};
    let server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let connect = |name: &'static str| {
        Client::builder(server.addr().to_string())
            .name(name)
            .connect()
    };
    let (a, b) = (connect("reader-a").await?, connect("reader-b").await?);
    let held = a.lock("cfg", Mode::PR).await?;
    let mut converting = b.lock("cfg", Mode::PR).await?;
    // B's PR -> EX conversion waits for A's PR (R15).
    let conversion = tokio::spawn(async move {
        let r = converting.convert(Mode::EX).await;
        (r, converting)
    });
    eventually("a conversion on the convert queue", || async {
        let r = obs.query_resource("cfg").await.ok().flatten()?;
        (r.converting.len() == 1).then_some(())
    })
    .await?;

    let out = output(dlock(&server, &["status", "--json", "cfg"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    let r = &doc["resources"][0];
    assert_eq!(r["holders"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["holders"][0]["session_name"], "reader-a");
    let c = &r["converting"][0];
    assert_eq!(c["session_name"], "reader-b");
    assert_eq!(c["mode"], "PR");
    assert_eq!(c["requested_mode"], "EX");
    assert!(
        c["token"].is_u64(),
        "a converter still holds its grant: {c}"
    );
    let out = output(dlock(&server, &["status", "cfg"])).await?;
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.contains("converting") && l.contains("PR->EX") && l.contains("reader-b")),
        "{table}"
    );

    drop(held);
    let (r, guard) = tokio::time::timeout(DEADLINE, conversion).await??;
    r?;
    assert_eq!(guard.mode(), Mode::EX);
    Ok(())
}

/// Ages are measured by the clock of the reply that listed the locks: against a server whose
/// clocks are all chosen, `for_ms` is exactly that reply's `now_ms - since_ms`, and no other
/// clock (the handshake's, a session reply's, the local one) gives that number.
#[tokio::test]
async fn status_ages_are_by_the_clock_of_the_reply() -> Result<()> {
    let script = common::fake::Script::clocked_table();
    let (now, held_since, waiting_since) = (
        script.resources_now_ms,
        script.resources[0].granted[0].since_ms,
        script.resources[0].waiting[0].since_ms,
    );
    let fake = common::fake::FakeServer::start(script).await?;

    let out = output(dlock_at(&fake.addr(), &["status", "--json"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    let r = &doc["resources"][0];
    assert_eq!(r["holders"][0]["session_name"], "holder-1");
    assert_eq!(r["holders"][0]["since_ms"], held_since);
    assert_eq!(r["holders"][0]["for_ms"], now - held_since);
    assert_eq!(r["holders"][0]["for_ms"], 60_000);
    assert_eq!(r["waiting"][0]["since_ms"], waiting_since);
    assert_eq!(r["waiting"][0]["for_ms"], 2_500);

    let out = output(dlock_at(&fake.addr(), &["status"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let table = stdout(&out);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let col = rows[0]
        .iter()
        .position(|c| *c == "FOR")
        .context("FOR column")?;
    assert_eq!(rows.len(), 3, "{table}");
    assert_eq!(rows[1][col], "1m00s", "{table}");
    assert_eq!(rows[2][col], "2s", "{table}");
    assert_eq!(fake.session_queries(), 0, "no clock probe");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cut_at_the_limit_says_where_to_go_on() -> Result<()> {
    use dlock_client::{Client, Mode};
    let server = TestServer::start().await?;
    let c = Client::connect(server.addr().to_string()).await?;
    let mut held = Vec::new();
    for name in ["pg.a", "pg.b", "pg.c"] {
        held.push(c.lock(name, Mode::NL).await?);
    }
    let names = |out: &std::process::Output| -> Result<(Vec<String>, Option<String>)> {
        let doc: dlock_proto::status::ResourcesView = serde_json::from_slice(&out.stdout)?;
        let names = doc.resources.into_iter().map(|r| r.name).collect();
        Ok((names, doc.next_cursor))
    };

    // Cut at two: the JSON names the cursor and stderr says how to go on.
    let out = output(dlock(&server, &["status", "--json", "--limit", "2", "pg."])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        names(&out)?,
        (
            vec!["pg.a".to_owned(), "pg.b".to_owned()],
            Some("pg.b".to_owned())
        )
    );
    assert!(
        stderr(&out).contains("--cursor \"pg.b\""),
        "{}",
        stderr(&out)
    );
    // The next page starts after the cursor and is the last.
    let args = [
        "status", "--json", "--limit", "2", "--cursor", "pg.b", "pg.",
    ];
    let out = output(dlock(&server, &args)).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(names(&out)?, (vec!["pg.c".to_owned()], None));
    assert!(!stderr(&out).contains("--cursor"), "{}", stderr(&out));
    // Exactly as many as the limit: nothing more to see, nothing said.
    let out = output(dlock(&server, &["status", "--json", "--limit", "3", "pg."])).await?;
    assert_eq!(names(&out)?.1, None);
    assert!(!stderr(&out).contains("more resources"), "{}", stderr(&out));
    // The table says the same on stderr.
    let out = output(dlock(&server, &["status", "--limit", "1", "pg."])).await?;
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("more resources follow (1 shown): pass --cursor \"pg.a\""),
        "{}",
        stderr(&out)
    );
    // Nothing under a prefix: stderr names it.
    let out = output(dlock(&server, &["status", "none."])).await?;
    assert_eq!((code(&out), stdout(&out)), (0, String::new()));
    assert_eq!(
        stderr(&out),
        "dlock: no locks held or requested under \"none.\"\n"
    );
    // A limit of none is a usage error.
    let out = output(dlock(&server, &["status", "--limit", "0"])).await?;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    drop(held);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pages_go_on_past_names_that_are_not_text() -> Result<()> {
    use dlock_client::{Client, Mode};
    let server = TestServer::start().await?;
    let c = Client::connect(server.addr().to_string()).await?;
    let all: [&[u8]; 5] = [b"np.a", b"np.b\xff", b"np.b\xff\0c", b"np.hex:61", b"np.z"];
    let mut held = Vec::new();
    for name in all {
        held.push(c.lock(name, Mode::NL).await?);
    }
    // By the JSON: `hex:` and next_cursor_hex.
    let seen = page_through(&server, all.len(), |doc, _| {
        assert_eq!(doc.next_cursor.is_some(), doc.next_cursor_hex.is_some());
        Ok(doc.next_cursor_hex.as_ref().map(|hex| format!("hex:{hex}")))
    })
    .await?;
    assert_eq!(seen, all);

    // By the hint on stderr, as a shell would pass it on (without the double quotes).
    let seen = page_through(&server, all.len(), |doc, err| {
        assert!(!err.contains('\u{fffd}'), "{err}");
        let Some((_, rest)) = err.split_once("pass --cursor ") else {
            assert!(doc.next_cursor.is_none(), "{err}");
            return Ok(None);
        };
        let word = rest.split_once(' ').context("the cursor's end")?.0;
        Ok(Some(word.trim_matches('"').to_owned()))
    })
    .await?;
    assert_eq!(seen, all);
    drop(held);
    Ok(())
}

/// The names `dlock status --json --limit 1 np.` lists page by page, each next page asked
/// with the cursor `next` makes of a page and its stderr (`None`: the last page); at most
/// `count` + 1 pages, in case a cursor does not move on.
async fn page_through(
    server: &TestServer,
    count: usize,
    next: impl Fn(&dlock_proto::status::ResourcesView, &str) -> Result<Option<String>>,
) -> Result<Vec<Vec<u8>>> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..=count {
        let mut args = vec!["status", "--json", "--limit", "1"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c]);
        }
        args.push("np.");
        let out = output(dlock(server, &args)).await?;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let doc: dlock_proto::status::ResourcesView = serde_json::from_slice(&out.stdout)?;
        seen.extend(doc.resources.iter().map(|r| match &r.name_hex {
            Some(hex) => dlock_proto::from_hex(hex).expect("name_hex is hexadecimal"),
            None => r.name.clone().into_bytes(),
        }));
        cursor = next(&doc, &stderr(&out))?;
        if cursor.is_none() {
            break;
        }
    }
    Ok(seen)
}

#[tokio::test]
async fn an_empty_dlock_variable_counts_as_unset() -> Result<()> {
    let server = TestServer::start().await?;
    let mut cmd = dlock(&server, &["--server", &server.addr().to_string(), "ping"]);
    for var in [
        "DLOCK_TLS_CA",
        "DLOCK_TLS_SYSTEM_ROOTS",
        "DLOCK_TLS_SERVER_NAME",
        "DLOCK_TOKEN_FILE",
    ] {
        cmd.env(var, "");
    }
    let out = output(cmd).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // An empty DLOCK_SERVER falls back to the default address.
    let out = output(dlock_at("", &["ping"])).await?;
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("127.0.0.1:7420"), "{said}");
    Ok(())
}

#[tokio::test]
async fn cluster_json_of_a_server_alone_is_an_object() -> Result<()> {
    let server = TestServer::start().await?;
    let out = output(dlock(&server, &["status", "--cluster", "--json"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out))?;
    assert!(doc.is_object(), "{doc}");
    assert_eq!(doc["cluster"], serde_json::Value::Null);
    assert_eq!(doc["members"], serde_json::json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_session_name_has_a_user_even_without_user_in_the_environment() -> Result<()> {
    let server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let mut cmd = dlock(&server, &["acquire", "who.am.i"]);
    cmd.env_remove("USER")
        .env_remove("LOGNAME")
        .stdin(Stdio::piped());
    let mut holder = cmd.spawn()?;
    let mut line = String::new();
    let out = holder.stdout.take().context("stdout")?;
    tokio::time::timeout(DEADLINE, BufReader::new(out).read_line(&mut line)).await??;
    queues(&obs, "who.am.i", 1, 0).await?;
    let out = output(dlock(&server, &["status", "--json", "who.am.i"])).await?;
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    let name = doc["resources"][0]["holders"][0]["session_name"]
        .as_str()
        .context("session_name")?
        .to_owned();
    // The user database's name of this process's user, as `id -un` prints it.
    let id = std::process::Command::new("id").arg("-un").output()?;
    let user = String::from_utf8(id.stdout)?.trim().to_owned();
    assert!(
        name.starts_with(&format!("{user}@")),
        "{name:?} does not start with {user:?}@"
    );
    drop(holder.stdin.take());
    holder.wait().await?;
    Ok(())
}
